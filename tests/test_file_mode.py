"""Images kept as files (``--decode-per-step``, ``RealDataConfig.decode_per_step``): the load
checks every file and keeps no pixels; batches are decoded when they are used, by DataLoader
workers; the pixels, the folds and the predictions are those of the in-RAM and cached modes.

The data is a tiny real-layout folder of JPEGs (2 classes x 2 modalities x 4 files).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from test_decode_cache import write_jpegs

from pagkd_lite.apps.cli import main
from pagkd_lite.data.realdata import FileImages, RealDataConfig, load_dataset
from pagkd_lite.errors import ConfigError, ImageLoadError

SIZE = 16


def _load(data: Path, **kw):
    return load_dataset(RealDataConfig(root=str(data), image_size=SIZE, **kw))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_jpegs(tmp_path / "data")


@pytest.mark.parametrize("workers", [0, 2])
def test_file_mode_gives_the_pixels_of_the_ram_and_cached_modes(data, tmp_path, workers):
    ram, _ = _load(data)
    cached, _ = _load(data, cache_dir=str(tmp_path / "cache"))
    files, report = _load(data, decode_per_step=True, loader_workers=workers)
    for m in ("WLI", "NBI"):
        images = files[m].images
        assert isinstance(images, FileImages) and images.shape == ram[m].images.shape
        assert len(files[m]) == len(ram[m]) == 8
        assert torch.equal(images.to("cpu"), ram[m].images)
        assert torch.equal(images.decode(), cached[m].images)
        assert torch.equal(images[3], ram[m].images[3])
        for field in ("paths", "lesion_ids", "patient_ids"):
            assert getattr(files[m], field) == getattr(ram[m], field)
        assert torch.equal(files[m].labels, ram[m].labels)
        # a subset (a fold) stays files; a batch of it decodes to the same rows
        idx = torch.tensor([6, 1, 4])
        sub = files[m].subset(idx)
        assert isinstance(sub.images, FileImages)
        assert torch.equal(sub.images[torch.tensor([2, 0])].to("cpu"),
                           ram[m].images[torch.tensor([4, 6])])
        assert torch.equal(sub.images[1:].contiguous(), ram[m].images[torch.tensor([1, 4])])
    # the load checked every file once; the report says the images stay files
    assert report.decoded == 16 and report.cache == {"status": "files", "workers": workers}
    assert "decoded per step" in report.to_text() and "kept as files" in report.policy["images"]


def test_torch_functions_and_numpy_see_decoded_pixels(data):
    ram, _ = _load(data)
    files, _ = _load(data, decode_per_step=True, loader_workers=0)
    images = files["WLI"].images
    assert torch.equal(torch.cat([images[:2], images[2:]]), ram["WLI"].images)
    assert (images.numpy() == ram["WLI"].images.numpy()).all()
    assert torch.equal(images[torch.tensor([True, False] * 4)].float(),
                       ram["WLI"].images[::2].float())


def test_a_file_changed_after_the_load_is_an_error_naming_it(data):
    files, _ = _load(data, decode_per_step=True, loader_workers=0)
    path = Path(files["NBI"].paths[0])
    st = path.stat()
    path.write_bytes(path.read_bytes() + b"\0")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(ImageLoadError, match="changed since the data was loaded") as info:
        files["NBI"].images[:1].to("cpu")
    assert info.value.path == str(path)
    assert files["NBI"].images[1:2].to("cpu").shape == (1, 3, SIZE, SIZE)  # others still load


def test_file_mode_settings_are_checked_and_named(data, tmp_path, capsys):
    with pytest.raises(ConfigError, match="--loader-workers -1"):
        RealDataConfig(root=str(data), decode_per_step=True, loader_workers=-1)
    with pytest.raises(ConfigError, match="--decode-per-step and --cache-dir"):
        RealDataConfig(root=str(data), decode_per_step=True, cache_dir=str(tmp_path))
    argv = ["cv", "--data-root", str(data), "--preset", "smoke", "--device", "cpu", "--quiet",
            "--out", str(tmp_path / "o")]
    assert main([*argv, "--decode-per-step", "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--decode-per-step and --cache-dir" in err and len(err.splitlines()) == 1
    assert main([*argv, "--decode-per-step", "--loader-workers", "-1"]) == 2
    assert "--loader-workers -1 (loader_workers): must be >= 0" in capsys.readouterr().err


@pytest.mark.slow
def test_cv_in_file_mode_predicts_what_the_cached_mode_predicts(tmp_path, capsys):
    data = write_jpegs(tmp_path / "data", per_class=10, px=48)
    argv = ["cv", "--data-root", str(data), "--folds", "2", "--method", "wli_only",
            "--preset", "smoke", "--set", "data.image_size=32", "--set", "train.epochs=2",
            "--set", "bootstrap=20", "--val-fraction", "0.3", "--device", "cpu",
            "--threads", "1", "--seed", "0", "--quiet"]
    cached, files = tmp_path / "cached", tmp_path / "files"
    assert main([*argv, "--cache-dir", str(tmp_path / "cache"), "--out", str(cached)]) == 0
    assert main([*argv, "--decode-per-step", "--loader-workers", "2", "--out",
                 str(files)]) == 0
    capsys.readouterr()
    assert (files / "predictions.csv").read_text() == (cached / "predictions.csv").read_text()
    assert "decoded per step by 2 DataLoader worker(s)" in (
        files / "load_report.txt").read_text()
