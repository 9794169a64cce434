"""A full disk (``ENOSPC``) while ``cv`` writes a checkpoint, the decode store or a results
CSV: the previous complete file stays in place, no temporary file is left, and the run ends
with one line naming the file (exit status 2).

The full disk is injected: the write that would fill it raises ``OSError(ENOSPC)`` after
writing part of its bytes (no tmpfs mount is needed, so this runs anywhere). The data is a
tiny real-layout folder of JPEGs; cv runs the smoke preset at 32 px on 2 folds.

Where the machine lets the test mount a small tmpfs (Linux, as root), two more tests fill a
real one: a rewrite of the decode store that does not fit, and a cv run whose output folder
has no room for its first checkpoint. Elsewhere they are skipped, saying why.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_decode_cache import write_jpegs

import pagkd_lite.data.decode_cache as decode_cache
import pagkd_lite.files as files
from pagkd_lite.apps.cli import main
from pagkd_lite.data.decode_cache import IMAGES, MARKER
from pagkd_lite.data.realdata import RealDataConfig, load_dataset
from pagkd_lite.errors import OutputError
from pagkd_lite.training.checkpoint import load_checkpoint, save_checkpoint

ARGS = ["cv", "--folds", "2", "--method", "wli_only", "--preset", "smoke",
        "--set", "data.image_size=32", "--set", "train.epochs=2", "--set", "bootstrap=20",
        "--val-fraction", "0.3", "--device", "cpu", "--threads", "1", "--seed", "0", "--quiet"]
FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _no_tmp_left(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def _last_line(err: str) -> str:
    """The run's last line on stderr, and the check that it is its only error line."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert sum(ln.startswith("pagkd-lite cv:") for ln in lines) == 1, err
    return lines[-1]


@pytest.fixture
def argv(tmp_path: Path) -> list[str]:
    data = write_jpegs(tmp_path / "data", per_class=10, px=48)
    return [*ARGS, "--data-root", str(data), "--cache-dir", str(tmp_path / "cache")]


def test_full_disk_on_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "run" / "last.pt"
    save_checkpoint(path, {"epoch": 0, "w": torch.ones(3)})
    before = path.read_bytes()
    real = torch.save

    def full(obj, f, *a, **kw):
        real(obj, f, *a, **kw)
        f.flush()
        with open(f.name, "r+b") as fh:  # the disk filled part-way through the file
            fh.truncate(10)
        raise FULL

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OutputError, match="no space left on the device") as info:
        save_checkpoint(path, {"epoch": 1, "w": torch.zeros(3)})
    assert str(path) in str(info.value) and "previous file (if any) is unchanged" in str(
        info.value)
    assert path.read_bytes() == before and load_checkpoint(path)["epoch"] == 0
    _no_tmp_left(path.parent)


def test_a_full_disk_behind_another_error_is_still_a_full_disk(tmp_path, monkeypatch):
    """torch's zip writer, closing after the OSError, raises a RuntimeError during its
    handling (as on a real full tmpfs): the full disk in the context is what is reported."""
    def full_then_close_fails(obj, f, *a, **kw):
        try:
            raise FULL
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")  # noqa: B904

    monkeypatch.setattr(torch, "save", full_then_close_fails)
    path = tmp_path / "last.pt"
    with pytest.raises(OutputError, match="no space left on the device"):
        save_checkpoint(path, {"epoch": 0})
    assert not path.exists()
    _no_tmp_left(tmp_path)
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("something else")))
    with pytest.raises(RuntimeError, match="something else"):  # not a full disk: passes
        save_checkpoint(path, {"epoch": 0})


def test_cv_stops_on_a_full_disk_at_a_checkpoint_in_one_line(argv, tmp_path, monkeypatch,
                                                              capsys):
    """The second epoch's last.pt of fold 0 does not fit: last.pt stays the first epoch's."""
    out = tmp_path / "out"
    real, calls = torch.save, []

    def full_at_second_last(obj, f, *a, **kw):
        if Path(f.name).name.startswith("last.pt."):
            calls.append(f.name)
            if len(calls) == 2:
                f.write(b"PK\x03\x04 half")
                raise FULL
        return real(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", full_at_second_last)
    assert main([*argv, "--out", str(out)]) == 2
    last = out / "fold0" / "wli_only" / "last.pt"
    line = _last_line(capsys.readouterr().err)
    assert line.startswith(f"pagkd-lite cv: error: cannot write {last}: no space left")
    assert load_checkpoint(last, required=("epoch",))["epoch"] == 0
    assert not (out / "fold0" / "result.json").exists()
    _no_tmp_left(out)


def test_cv_stops_on_a_full_disk_at_a_results_csv_keeping_the_previous(argv, tmp_path,
                                                                        monkeypatch, capsys):
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 0
    before = {n: (out / n).read_bytes() for n in ("cv_results.csv", "predictions.csv")}
    real = files.fsync_path

    def full_at_the_csv(path):
        if Path(path).name.startswith("cv_results.csv."):
            raise FULL  # the delayed allocation fails at fsync
        return real(path)

    monkeypatch.setattr(files, "fsync_path", full_at_the_csv)
    capsys.readouterr()
    assert main([*argv, "--out", str(out)]) == 2  # both folds read, then the write fails
    line = _last_line(capsys.readouterr().err)
    assert line.startswith(f"pagkd-lite cv: error: cannot write {out / 'cv_results.csv'}: "
                           f"no space left")
    assert {n: (out / n).read_bytes() for n in before} == before
    _no_tmp_left(out)


def test_a_full_disk_while_rewriting_the_store_keeps_the_previous_store(tmp_path,
                                                                         monkeypatch):
    data = write_jpegs(tmp_path / "data", per_class=4)
    cfg = RealDataConfig(root=str(data), image_size=16, cache_dir=str(tmp_path / "cache"))
    _, first = load_dataset(cfg)
    store = Path(first.cache["dir"])
    before = (store / IMAGES).read_bytes()
    changed = data / "WLI" / "adenoma" / "001.jpg"  # a changed file: the store is rewritten
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(changed)
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    real = decode_cache.reserve

    def full_for_the_new_images(path, nbytes):
        if Path(path).name.startswith(IMAGES + "."):
            raise FULL
        return real(path, nbytes)

    monkeypatch.setattr(decode_cache, "reserve", full_for_the_new_images)
    with pytest.raises(OutputError) as info:
        load_dataset(cfg)
    msg = str(info.value)
    assert msg.startswith(f"cannot write {store / IMAGES}: no space left on the device")
    assert "previous store (if any) is unchanged and still used" in msg
    assert (store / IMAGES).read_bytes() == before and (store / MARKER).exists()
    assert decode_cache.DecodeStore(cfg.cache_dir, data, None, {
        "image_size": 16, "max_pixels": cfg.max_pixels,
        "decode_warnings": cfg.decode_warnings}).check() is None
    assert not list(store.glob("*.tmp")) and not list(store.glob("staging-*"))
    monkeypatch.setattr(decode_cache, "reserve", real)  # space again: the update goes through
    sets, again = load_dataset(cfg)
    assert again.decoded == 1 and again.cache["status"].startswith("updated")



@contextlib.contextmanager
def _tmpfs(folder: Path, size: int):
    """A tmpfs of ``size`` bytes mounted at ``folder`` for the block; skips the test where
    no mount is allowed (not Linux, not root, no ``mount``)."""
    folder.mkdir(parents=True)
    mount = shutil.which("mount")
    if mount is None or os.name != "posix" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs Linux and root; the injected-ENOSPC tests above "
                    "cover the same writes")
    done = subprocess.run([mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"no tmpfs mount here ({done.stderr.strip() or done.returncode}); the "
                    f"injected-ENOSPC tests above cover the same writes")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _resize(folder: Path, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True,
                   capture_output=True)


def _used(folder: Path) -> int:
    st = os.statvfs(folder)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_a_real_full_tmpfs_while_rewriting_the_store_keeps_the_previous_store(tmp_path):
    """The first store fits; the disk is then shrunk to the space it uses plus half a store,
    a changed file asks for a rewrite (a whole new images.npy beside the old one): ENOSPC
    from the file system itself, the previous store complete and read again."""
    data = write_jpegs(tmp_path / "data", per_class=8)
    with _tmpfs(tmp_path / "disk", 8 << 20) as disk:
        cfg = RealDataConfig(root=str(data), image_size=64, cache_dir=str(disk / "cache"),
                             progress=False)
        sets, first = load_dataset(cfg)
        store = Path(first.cache["dir"])
        before = (store / IMAGES).read_bytes()
        _resize(disk, _used(disk) + len(before) // 2)
        changed = data / "WLI" / "adenoma" / "001.jpg"
        Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(changed)
        st = changed.stat()
        os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        with pytest.raises(OutputError) as info:
            load_dataset(cfg)
        msg = str(info.value)
        assert msg.startswith(f"cannot write {store / IMAGES}: no space left on the device"), msg
        assert (store / IMAGES).read_bytes() == before and (store / MARKER).exists()
        assert not list(store.glob("*.tmp")) and not list(store.glob("staging-*"))
        _resize(disk, 8 << 20)  # room again: the update goes through
        _, again = load_dataset(cfg)
        assert again.decoded == 1 and again.cache["status"].startswith("updated")


def test_cv_on_a_real_full_tmpfs_stops_in_one_line_naming_the_checkpoint(argv, tmp_path,
                                                                        capsys):
    """cv's output folder on a 64 KiB tmpfs: the first fold's first last.pt does not fit."""
    with _tmpfs(tmp_path / "disk", 64 << 10) as disk:
        out = disk / "out"
        assert main([*argv, "--out", str(out)]) == 2
        line = _last_line(capsys.readouterr().err)
        last = out / "fold0" / "wli_only" / "last.pt"
        assert line.startswith(f"pagkd-lite cv: error: cannot write {last}: no space left"), \
            line
        assert not last.exists() and not (out / "fold0" / "result.json").exists()
        _no_tmp_left(out)
