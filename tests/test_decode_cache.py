"""The decoded-image cache (:mod:`pagkd_lite.data.decode_cache`): warm loads decode nothing and
give the same arrays, a changed file is decoded again, a cut-off or truncated store is
detected and rebuilt (never read), and the store is shared, not copied.

Each test writes a tiny real-layout folder of JPEGs (2 classes x 2 modalities x 4 files).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pagkd_lite.data.decode_cache as decode_cache
from pagkd_lite.data.decode_cache import IMAGES, MARKER, store_bytes
from pagkd_lite.data.realdata import RealDataConfig, load_dataset

SIZE = 16


def write_jpegs(root: Path, per_class: int = 4, classes=("adenoma", "hyperplastic"),
                px: int = 40, seed: int = 0) -> Path:
    """``root/<WLI|NBI>/<class>/NNN.jpg``: random JPEGs of ``px`` x ``px`` pixels."""
    rng = np.random.default_rng(seed)
    for mod in ("WLI", "NBI"):
        for c in classes:
            d = root / mod / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (px, px, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(d / f"{i:03d}.jpg", quality=90)
    return root


def _cfg(tmp_path: Path, **kw) -> RealDataConfig:
    return RealDataConfig(root=str(tmp_path / "data"), image_size=SIZE,
                          cache_dir=str(tmp_path / "cache"), **kw)


def _store(report) -> Path:
    return Path(report.cache["dir"])


def _same(a: dict, b: dict) -> None:
    for m in ("WLI", "NBI"):
        assert torch.equal(a[m].images, b[m].images)
        assert torch.equal(a[m].labels, b[m].labels)
        assert (a[m].paths, a[m].lesion_ids, a[m].meta["sha256"]) == (
            b[m].paths, b[m].lesion_ids, b[m].meta["sha256"])


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_jpegs(tmp_path / "data")


def test_warm_load_decodes_nothing_and_gives_identical_arrays(tmp_path, data):
    plain, r0 = load_dataset(RealDataConfig(root=str(data), image_size=SIZE))
    assert r0.decoded == 16 and r0.cache == {"status": "off"}
    cold, r1 = load_dataset(_cfg(tmp_path))
    assert r1.decoded == 16 and r1.cache["status"].startswith("cold")
    warm, r2 = load_dataset(_cfg(tmp_path))
    assert r2.decoded == 0 and r2.cache["reused"] == 16 and r2.cache["status"] == "warm"
    assert "Decoded 0 image(s); 16 from the decode cache" in r2.to_text()
    _same(plain, cold)
    _same(plain, warm)
    # the size stated in the docs: N x 3 x S x S bytes plus the .npy header
    assert 0 <= r2.cache["bytes"] - store_bytes(16, SIZE) <= 128
    # WLI then NBI in one store: each ImageSet is a slice of one memory map, not a copy
    store = np.load(_store(r2) / IMAGES, mmap_mode="r")
    assert np.array_equal(store[:8], warm["WLI"].images.numpy())
    assert np.array_equal(store[8:], warm["NBI"].images.numpy())


def test_in_place_change_stays_in_its_process(tmp_path, data):
    sets, report = load_dataset(_cfg(tmp_path))
    before = np.load(_store(report) / IMAGES).copy()
    sets["WLI"].images[0].zero_()  # copy-on-write pages: the file is never written
    assert np.array_equal(np.load(_store(report) / IMAGES), before)


def test_a_changed_file_is_decoded_again(tmp_path, data):
    load_dataset(_cfg(tmp_path))
    target = data / "NBI" / "hyperplastic" / "002.jpg"
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(target)
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # coarse clocks
    sets, report = load_dataset(_cfg(tmp_path))
    assert report.decoded == 1 and report.cache["reused"] == 15
    assert report.cache["status"].startswith("updated")
    plain, _ = load_dataset(RealDataConfig(root=str(data), image_size=SIZE))
    _same(plain, sets)
    i = sets["NBI"].paths.index(str(target))
    assert int(sets["NBI"].images[i].float().mean().round()) == 200
    # touching a file (same bytes, new mtime) is a change too
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    assert load_dataset(_cfg(tmp_path))[1].decoded == 1
    assert load_dataset(_cfg(tmp_path))[1].decoded == 0


def test_another_image_size_is_another_store(tmp_path, data):
    _, r16 = load_dataset(_cfg(tmp_path))
    cfg = _cfg(tmp_path)
    cfg.image_size = 24
    sets, r24 = load_dataset(cfg)
    assert r24.decoded == 16 and _store(r24) != _store(r16)
    assert sets["WLI"].images.shape[-1] == 24
    assert load_dataset(_cfg(tmp_path))[1].decoded == 0  # the 16 px store is still there


@pytest.mark.parametrize("damage", ["truncate", "no_marker", "index_edited"])
def test_a_damaged_store_is_rebuilt_never_read(tmp_path, data, damage):
    plain, _ = load_dataset(RealDataConfig(root=str(data), image_size=SIZE))
    _, report = load_dataset(_cfg(tmp_path))
    store = _store(report)
    if damage == "truncate":
        with open(store / IMAGES, "r+b") as f:
            f.truncate((store / IMAGES).stat().st_size // 2)
    elif damage == "no_marker":
        (store / MARKER).unlink()
    else:
        with open(store / "index.json", "a") as f:
            f.write(" ")
    sets, again = load_dataset(_cfg(tmp_path))
    assert again.decoded == 16 and again.cache["status"].startswith("incomplete store")
    _same(plain, sets)
    assert load_dataset(_cfg(tmp_path))[1].decoded == 0


def test_a_write_cut_off_before_the_marker_is_not_read(tmp_path, data, monkeypatch):
    """A run killed after images.npy and index.json, before COMPLETE: the next run sees no
    marker, rebuilds, and removes the temporary files the killed writer left."""
    real = decode_cache.atomic_write_text

    def killed(path, text, durable=False):
        if Path(path).name == MARKER:
            Path(path).with_name("COMPLETE.123.tmp").write_text("{")  # a half-written tmp
            raise KeyboardInterrupt("killed")
        return real(path, text, durable=durable)

    monkeypatch.setattr(decode_cache, "atomic_write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        load_dataset(_cfg(tmp_path))
    store = next((tmp_path / "cache").iterdir())
    assert (store / IMAGES).exists() and not (store / MARKER).exists()
    monkeypatch.setattr(decode_cache, "atomic_write_text", real)
    sets, report = load_dataset(_cfg(tmp_path))
    assert report.decoded == 16 and "no COMPLETE marker" in report.cache["status"]
    assert not list(store.glob("*.tmp")) and not list(store.glob("staging-*"))
    plain, _ = load_dataset(RealDataConfig(root=str(data), image_size=SIZE))
    _same(plain, sets)


def test_bad_images_are_remembered_and_replayed(tmp_path, data):
    bad = data / "WLI" / "adenoma" / "001.jpg"
    bad.write_bytes(b"not a jpeg at all")
    _, r1 = load_dataset(_cfg(tmp_path))
    _, r2 = load_dataset(_cfg(tmp_path))
    assert (r1.decoded, r2.decoded) == (16, 0)
    assert r1.skipped == r2.skipped and len(r2.skipped) == 1
    assert "not an image" in r2.skipped[0]["reason"]


def test_cache_dir_that_is_a_file_is_refused(tmp_path, data):
    (tmp_path / "cache").write_text("x")
    with pytest.raises(ValueError, match="--cache-dir .* is a file"):
        load_dataset(_cfg(tmp_path))


# A process that loads the data set once its "go" file appears, then writes what it got.
_FILLER = """
import hashlib, json, sys, time
from pathlib import Path
from pagkd_lite.data.realdata import RealDataConfig, load_dataset
data, cache, go, out = sys.argv[1:5]
Path(out + ".ready").write_text("1")
while not Path(go).exists():
    time.sleep(0.002)
t0 = time.time()
sets, report = load_dataset(RealDataConfig(root=data, image_size=32, cache_dir=cache,
                                           progress=False))
digest = {m: hashlib.sha256(sets[m].images.numpy().tobytes()).hexdigest() for m in sets}
Path(out).write_text(json.dumps({"decoded": report.decoded, "status": report.cache["status"],
                                 "start": t0, "end": time.time(), "pixels": digest}))
"""


def test_two_processes_filling_one_store_decode_each_image_once(tmp_path):
    """Two processes start filling the same (empty) store at the same moment, as ranks
    sharing --cache-dir do: the one that takes the store's lock decodes, the other waits,
    then reads the complete store; no image is decoded twice, and both see the pixels of
    a plain decode (nothing torn)."""
    data = write_jpegs(tmp_path / "data", per_class=40, px=64)  # 160 images
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo),
                                                       os.environ.get("PYTHONPATH", "")])}
    go, outs = tmp_path / "go", [tmp_path / "a.json", tmp_path / "b.json"]
    procs = [subprocess.Popen([sys.executable, "-c", _FILLER, str(data), str(tmp_path / "cache"),
                               str(go), str(o)], env=env) for o in outs]
    deadline = time.monotonic() + 120
    while not all(Path(f"{o}.ready").exists() for o in outs):  # both imported, waiting
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    go.write_text("go")
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    a, b = sorted((json.loads(o.read_text()) for o in outs), key=lambda r: -r["decoded"])
    assert (a["decoded"], b["decoded"]) == (160, 0)
    assert a["status"].startswith("cold") and b["status"] == "warm"
    assert b["start"] < a["end"]  # the reader started while the other was decoding
    plain, _ = load_dataset(RealDataConfig(root=str(data), image_size=32))
    want = {m: hashlib.sha256(plain[m].images.numpy().tobytes()).hexdigest() for m in plain}
    assert a["pixels"] == b["pixels"] == want
