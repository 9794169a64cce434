"""Subsets as views (:mod:`pagkd_lite.data.image_rows`): a fold, a split or an unpaired
fold of real data is an index array over the decode store, never a copy of its pixels.

The memory test loads 1,000 JPEGs into a 64 px store (12 MB of pixels), builds every
fold's six subsets (and the unpaired folds'), keeps them all, and measures the private
memory that took: the process's ``RssAnon`` (Linux; the C heap trimmed first, so a copy
has to fault new pages) and the Python-level allocations (``tracemalloc``). One fold's
copy would be about 12 MB; the views take a few index arrays.
"""

from __future__ import annotations

import pickle
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from test_decode_cache import write_jpegs

from pagkd_lite.apps.cv import fold_sets, unpaired_folds
from pagkd_lite.data.decode import _release_freed_memory
from pagkd_lite.data.decode_cache import IMAGES
from pagkd_lite.data.image_rows import ArrayImages, ImageRows, in_chunks
from pagkd_lite.data.imageset import ImageSet
from pagkd_lite.data.realdata import RealDataConfig, load_dataset
from pagkd_lite.data.splits import FOLD_KEYS, lesion_folds

MB = 2**20


def _rss_anon() -> int | None:
    """This process's private resident memory in bytes (``RssAnon``), None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@pytest.fixture(scope="module")
def store_sets(tmp_path_factory):
    """1,000 JPEGs (2 classes x 2 modalities x 250) decoded into a 64 px store."""
    root = tmp_path_factory.mktemp("rows")
    data = write_jpegs(root / "data", per_class=250, px=24)
    sets, report = load_dataset(RealDataConfig(root=str(data), image_size=64,
                                               cache_dir=str(root / "cache"),
                                               progress=False))
    assert len(sets["WLI"]) + len(sets["NBI"]) == 1000
    return sets, Path(report.cache["dir"]) / IMAGES


def _all_fold_subsets(sets: dict[str, ImageSet]) -> list[dict[str, ImageSet]]:
    folds = lesion_folds(sets, 5, seed=0, group_by="lesion")
    folds += unpaired_folds(sets, folds, seed=0, group_by="lesion")
    return [fold_sets(sets, f) for f in folds]


def test_all_folds_of_a_1000_image_store_allocate_a_few_kb(store_sets):
    sets, _ = store_sets
    _all_fold_subsets(sets)  # warm-up: imports, caches, first-call allocations
    _release_freed_memory()
    before = _rss_anon()
    tracemalloc.start()
    try:
        kept = _all_fold_subsets(sets)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    grown = None if before is None else _rss_anon() - before
    assert len(kept) == 10 and all(len(fs) == len(FOLD_KEYS) for fs in kept)
    assert peak < 4 * MB, f"tracemalloc peak {peak / MB:.1f} MB building the folds"
    if grown is not None:
        assert grown < 4 * MB, f"RssAnon grew {grown / MB:.1f} MB building the folds"
        # the meter sees a copy: one fold's WLI training images read into a tensor
        _release_freed_memory()
        before = _rss_anon()
        copy = kept[0]["wli_train"].images.tensor()
        assert _rss_anon() - before > 0.8 * copy.numel()


def test_a_subset_reads_the_stores_pixels(store_sets):
    sets, images_npy = store_sets
    store = sets["WLI"].images
    assert isinstance(store, ArrayImages) and isinstance(store.array, np.memmap)
    assert Path(store.array.filename) == images_npy.resolve()
    assert sets["NBI"].images.array is store.array  # one map: WLI rows, then NBI rows
    on_disk = np.load(images_npy, mmap_mode="r")
    for fs in _all_fold_subsets(sets)[:2]:
        for key, s in fs.items():
            assert isinstance(s.images, ArrayImages), key
            assert s.images.array is store.array and np.shares_memory(s.images.array, store.array)
            k = len(s) // 2
            assert torch.equal(s.images[k], torch.from_numpy(on_disk[s.images.rows[k]].copy()))
            # a batch is a tensor of its own: changing it leaves the store as it was
            batch = s.images[[0, k]]
            batch.zero_()
            assert on_disk[s.images.rows[0]].any()


def test_views_index_like_tensors():
    full = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    rows = ArrayImages(full.numpy())
    view = rows.select([7, 2, 5, 0])
    want = full[[7, 2, 5, 0]]
    assert view.shape == (4, 3, 4, 4) and len(view) == 4 and view.dtype == torch.uint8
    assert torch.equal(view[1], want[1]) and torch.equal(view[-1], want[-1])
    assert torch.equal(view[torch.tensor(2)], want[2]) and torch.equal(view[np.int64(3)],
                                                                       want[3])
    assert torch.equal(view[1:3], want[1:3]) and torch.equal(view[torch.tensor([3, 0])],
                                                             want[[3, 0]])
    assert torch.equal(view[torch.tensor([True, False, True, False])], want[[0, 2]])
    assert torch.equal(view[:, 0], want[:, 0]) and torch.equal(view[2, 1], want[2, 1])
    assert torch.equal(view.to("cpu"), want) and torch.equal(torch.cat([view, view]),
                                                             torch.cat([want, want]))
    assert np.array_equal(np.asarray(view), want.numpy())
    assert torch.equal(view.select(slice(1, None)).select([1]).tensor(), want[[2]])
    assert list(view.select([]).shape) == [0, 3, 4, 4]
    with pytest.raises(IndexError, match="out of range for 4 images"):
        view[4]
    with pytest.raises(IndexError, match="out of range for 4 images"):
        view.select([0, 9])
    with pytest.raises(IndexError, match="1-D integer or boolean"):
        view[torch.zeros(2, 2, dtype=torch.long)]
    with pytest.raises(ValueError, match="uint8"):
        ArrayImages(np.zeros((2, 3, 4, 4), dtype=np.float32))
    # an ImageSet over a view: subset stays a view, and the checks see its shape
    s = ImageSet(images=rows, labels=torch.arange(10) % 2, patient_ids=list("abcdefghij"),
                 lesion_ids=list("abcdefghij"), class_names=["a", "b"], modality="WLI")
    sub = s.subset(torch.tensor([9, 1]))
    assert isinstance(sub.images, ImageRows) and sub.images.array is rows.array
    assert torch.equal(sub.images[0], full[9]) and sub.lesion_ids == ["j", "b"]


def test_a_pickled_view_maps_the_file_again(store_sets):
    sets, _ = store_sets
    view = sets["NBI"].images.select([3, 1])
    blob = pickle.dumps(view)
    assert len(blob) < 4096  # the file's name, not its pixels
    back = pickle.loads(blob)
    assert isinstance(back.array, np.memmap) and torch.equal(back.tensor(), view.tensor())


@pytest.mark.skipif(sys.platform != "linux", reason="RssAnon is Linux's")
def test_rss_anon_is_readable():
    assert _rss_anon() > 0


def test_in_chunks_reads_every_image_in_order_within_the_budget():
    full = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)  # 48 bytes an image
    view = ArrayImages(full.numpy()).select([9, 0, 3, 3, 5, 1, 2])
    for images in (full, view):
        parts = list(in_chunks(images, max_bytes=100))  # 2 images a chunk
        assert [len(p) for p in parts] == [2] * (len(images) // 2) + [1] * (len(images) % 2)
        assert all(p.is_contiguous() and p.dtype == torch.uint8 for p in parts)
        assert torch.equal(torch.cat(parts), images if isinstance(images, torch.Tensor)
                           else full[[9, 0, 3, 3, 5, 1, 2]])
    assert [len(p) for p in in_chunks(full, max_bytes=10)] == [1] * 10  # one image at least
    assert list(in_chunks(full[:0])) == []


def test_predict_batches_shrink_with_the_image_size(monkeypatch):
    """Prediction reads at most PREDICT_PIXELS pixels a batch (its activations grow with
    batch x pixels), and the probabilities are those of one image at a time."""
    from pagkd_lite.config import build_config
    from pagkd_lite.models import accel
    from pagkd_lite.models.classifier import Classifier
    from pagkd_lite.training import train

    assert [train.predict_batch_size(s, s) for s in (32, 64, 112, 224, 448, 2000)] == \
        [128, 128, 128, 32, 8, 1]
    torch.manual_seed(0)
    model = Classifier(build_config("smoke").model, num_classes=2)
    images = ImageSet(images=torch.randint(0, 256, (11, 3, 224, 224), dtype=torch.uint8),
                      labels=torch.arange(11) % 2, patient_ids=list("abcdefghijk"),
                      lesion_ids=list("abcdefghijk"), class_names=["a", "b"], modality="WLI")
    seen, real = [], accel.host_to_device
    monkeypatch.setattr(accel, "host_to_device",
                        lambda imgs, idx, *a, **k: seen.append(len(idx)) or real(imgs, idx, *a,
                                                                                **k))
    monkeypatch.setattr(train, "PREDICT_PIXELS", 4 * 224 * 224)
    probs = train.predict(model, images, torch.device("cpu"))
    assert seen == [4, 4, 3]
    one = train.predict(model, images, torch.device("cpu"), batch_size=1)
    assert np.abs(probs - one).max() < 1e-5
