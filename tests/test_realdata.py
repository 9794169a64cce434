"""Real-data loader: layouts, image modes, bad input, the load report.

Every fixture is written here into ``tmp_path``: tiny images of mixed sizes and modes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pagkd_lite.data.realdata import (
    DataLayoutError,
    ImageLoadError,
    LoadReport,
    RealDataConfig,
    load_dataset,
    load_image,
)

SIZE = 8


def _rgb(path: Path, w: int = 12, h: int = 10, seed: int = 0, fmt: str | None = None) -> Path:
    """A small random RGB image (random content: distinct seeds give distinct bytes)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, format=fmt)
    return path


def make_tree(root: Path, wli: str = "WLI", nbi: str = "NBI",
              classes: dict[str, int] | None = None) -> Path:
    """``root/<wli|nbi>/<class>/<stem>.png`` with mixed sizes; stems are unique per file."""
    classes = classes or {"adenoma": 3, "hyperplastic": 2}
    seed = 0
    for mod in (wli, nbi):
        for cls, n in classes.items():
            for j in range(n):
                seed += 1
                _rgb(root / mod / cls / f"{mod}_{cls}_{j}.png", w=8 + j * 3, h=6 + j, seed=seed)
    return root


def _mode_image(mode: str) -> Image.Image:
    rng = np.random.default_rng(1)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (9, 13), dtype=np.uint16))
    rgb = Image.fromarray(rng.integers(0, 256, (9, 13, 3), dtype=np.uint8))
    if mode == "P":
        return rgb.quantize(8)
    return rgb.convert(mode)


# ----------------------------------------------------------------------------- images

@pytest.mark.parametrize("mode,ext", [("L", ".png"), ("RGB", ".jpg"), ("RGBA", ".png"),
                                      ("P", ".png"), ("I;16", ".png"), ("LA", ".png"),
                                      ("1", ".bmp"), ("CMYK", ".tif")])
def test_every_mode_becomes_rgb_uint8(tmp_path, mode, ext):
    p = tmp_path / f"img{ext}"
    _mode_image(mode).save(p)
    with Image.open(p) as im:
        assert im.mode == mode or (mode == "I;16" and im.mode.startswith("I"))
    x = load_image(p, SIZE)
    assert x.dtype == torch.uint8 and tuple(x.shape) == (3, SIZE, SIZE)


def test_16bit_is_scaled_to_8bit(tmp_path):
    p = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 6), 65535, dtype=np.uint16)).save(p)
    assert int(load_image(p, 4).min()) == 255
    Image.fromarray(np.full((4, 6), 257 * 100, dtype=np.uint16)).save(p)
    assert torch.all(load_image(p, 4) == 100)


def test_alpha_composited_on_black(tmp_path):
    p = tmp_path / "a.png"
    arr = np.zeros((4, 4, 4), dtype=np.uint8)
    arr[..., :3] = 200
    arr[:, :2, 3] = 255   # left half opaque, right half transparent
    Image.fromarray(arr, "RGBA").save(p)
    x = load_image(p, 4)
    assert torch.all(x[:, :, 0] == 200) and torch.all(x[:, :, 3] == 0)


def test_palette_with_transparency(tmp_path):
    p = tmp_path / "p.png"
    im = Image.new("P", (5, 3), 1)
    im.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    im.info["transparency"] = 1
    im.save(p, transparency=1)
    assert int(load_image(p, 4).max()) == 0   # the only colour is transparent -> black


def test_exif_rotation_honoured(tmp_path):
    """Stored 16x8, left half red, right half blue, EXIF orientation 6 (display = rotate
    90 degrees clockwise): displayed 8x16 with red on top."""
    arr = np.zeros((8, 16, 3), dtype=np.uint8)
    arr[:, :8, 0] = 255
    arr[:, 8:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "rot.jpg"
    Image.fromarray(arr).save(p, exif=exif, quality=95)
    x = load_image(p, 8).float()
    top, bottom = x[:, :3, :], x[:, 5:, :]
    assert top[0].mean() > 200 and top[2].mean() < 60      # red on top
    assert bottom[2].mean() > 200 and bottom[0].mean() < 60  # blue at the bottom
    # without the EXIF tag, red is on the left
    p2 = tmp_path / "plain.jpg"
    Image.fromarray(arr).save(p2, quality=95)
    y = load_image(p2, 8).float()
    assert y[0, :, :3].mean() > 200 and y[2, :, 5:].mean() > 200


@pytest.mark.parametrize("kind,reason", [
    ("truncated", "corrupt or truncated"),
    ("zero", "empty file (0 bytes)"),
    ("notimage", "not an image"),
    ("directory", "is a directory"),
    ("missing", "file not found"),
])
def test_load_image_bad_input_names_file(tmp_path, kind, reason):
    p = tmp_path / "bad.png"
    if kind == "truncated":
        full = _rgb(tmp_path / "full.png", 40, 40).read_bytes()
        p.write_bytes(full[: len(full) // 2])
    elif kind == "zero":
        p.write_bytes(b"")
    elif kind == "notimage":
        p.write_text("this is a text file, not a PNG\n")
    elif kind == "directory":
        p.mkdir()
    with pytest.raises(ImageLoadError) as ei:
        load_image(p, SIZE)
    assert reason in ei.value.reason and str(p) in str(ei.value)


# ----------------------------------------------------------------------------- folder layout

def test_folder_layout_sets_and_report(tmp_path):
    root = make_tree(tmp_path / "data")
    sets, report = load_dataset(RealDataConfig(root=str(root), image_size=SIZE))
    assert set(sets) == {"WLI", "NBI"}
    for mod, s in sets.items():
        assert s.modality == mod and s.class_names == ["adenoma", "hyperplastic"]
        assert s.images.dtype == torch.uint8 and tuple(s.images.shape) == (5, 3, SIZE, SIZE)
        assert s.class_counts() == [3, 2]
        # folder layout: the file stem is both the lesion id and the patient id
        assert s.lesion_ids == [Path(p).stem for p in s.paths]
        assert s.patient_ids == s.lesion_ids
    assert report.counts == {"WLI": {"adenoma": 3, "hyperplastic": 2},
                             "NBI": {"adenoma": 3, "hyperplastic": 2}}
    assert report.sources == {"WLI": "WLI", "NBI": "NBI"} and not report.skipped
    text = report.to_text()
    assert "adenoma" in text and "hyperplastic" in text and "Loaded 10 image(s)" in text
    jpath, tpath = report.save(tmp_path / "out" / "load_report")
    assert json.loads(jpath.read_text())["counts"]["NBI"]["adenoma"] == 3
    assert tpath.read_text().startswith("Load report")


@pytest.mark.parametrize("spelling", ["WL", "White_light", "white_light", "white-light", "wli"])
def test_modality_spelling_detection(tmp_path, spelling):
    root = make_tree(tmp_path / "d", wli=spelling, nbi="nbi")
    sets, report = load_dataset(RealDataConfig(root=str(root), image_size=SIZE))
    assert report.sources == {"WLI": spelling, "NBI": "nbi"} and len(sets["WLI"]) == 5


def test_modality_given_and_ambiguous(tmp_path):
    root = make_tree(tmp_path / "d", wli="WL", nbi="NBI")
    _rgb(root / "White_light" / "adenoma" / "x.png")
    with pytest.raises(DataLayoutError, match="several folders .* look like WLI"):
        load_dataset(RealDataConfig(root=str(root)))
    sets, report = load_dataset(RealDataConfig(root=str(root), image_size=SIZE,
                                               wli_names=("WL",)))
    assert report.sources["WLI"] == "WL"
    assert {"path": "White_light", "reason": "folder is not a modality folder",
            "files_inside": 1} in report.ignored
    with pytest.raises(DataLayoutError, match="no NBI folder"):
        load_dataset(RealDataConfig(root=str(root), wli_names=("WL",), nbi_names=("narrow_band",)))


@pytest.mark.parametrize("kind,reason", [
    ("truncated", "corrupt or truncated"),
    ("zero", "empty file (0 bytes)"),
    ("notimage", "not an image"),
    ("directory", "is a directory"),
])
def test_bad_files_skipped_or_raised(tmp_path, kind, reason):
    root = make_tree(tmp_path / "d")
    bad = root / "WLI" / "adenoma" / "bad.png"
    if kind == "truncated":
        full = _rgb(tmp_path / "full.png", 40, 40, seed=99).read_bytes()
        bad.write_bytes(full[: len(full) // 2])
    elif kind == "zero":
        bad.write_bytes(b"")
    elif kind == "notimage":
        bad.write_bytes(b"<html>not an image</html>")
    else:
        bad.mkdir()
    sets, report = load_dataset(RealDataConfig(root=str(root), image_size=SIZE))
    assert len(sets["WLI"]) == 5
    assert report.skipped == [{"path": "WLI/adenoma/bad.png", "modality": "WLI",
                               "class": "adenoma", "reason": report.skipped[0]["reason"]}]
    assert reason in report.skipped[0]["reason"]
    assert "WLI/adenoma/bad.png" in report.to_text()
    with pytest.raises(ImageLoadError, match="bad.png"):
        load_dataset(RealDataConfig(root=str(root), image_size=SIZE, on_bad_image="error"))


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True,
                    reason="running as root (or not POSIX): chmod 000 does not block reads; "
                           "unreadable paths are covered by the missing-file manifest test and "
                           "the directory-named-like-an-image test")
def test_unreadable_file_chmod(tmp_path):
    root = make_tree(tmp_path / "d")
    locked = _rgb(root / "NBI" / "adenoma" / "locked.png", seed=77)
    locked.chmod(0)
    try:
        _, report = load_dataset(RealDataConfig(root=str(root), image_size=SIZE))
        assert report.skipped[0]["reason"] == "permission denied"
        with pytest.raises(ImageLoadError, match="locked.png"):
            load_dataset(RealDataConfig(root=str(root), image_size=SIZE, on_bad_image="error"))
    finally:
        locked.chmod(0o644)


def test_permission_denied_simulated(tmp_path, monkeypatch):
    """Runs everywhere (also as root): a PermissionError on read is a recorded skip."""
    root = make_tree(tmp_path / "d")
    locked = _rgb(root / "NBI" / "adenoma" / "locked.png", seed=77)
    real = Path.read_bytes

    def read_bytes(self):
        if self.name == "locked.png":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    _, report = load_dataset(RealDataConfig(root=str(root), image_size=SIZE))
    assert report.skipped == [{"path": "NBI/adenoma/locked.png", "modality": "NBI",
                               "class": "adenoma", "reason": "permission denied"}]
    with pytest.raises(ImageLoadError, match="locked.png: permission denied"):
        load_image(locked, SIZE)


def test_non_image_files_ignored_and_recorded(tmp_path):
    root = make_tree(tmp_path / "d")
    (root / "WLI" / "adenoma" / "notes.txt").write_text("hello")
    (root / "NBI" / "hyperplastic" / ".DS_Store").write_bytes(b"\0\1")
    (root / "README.md").write_text("readme")
    sets, report = load_dataset(RealDataConfig(root=str(root), image_size=SIZE))
    ignored = {i["path"]: i["reason"] for i in report.ignored}
    assert "not an image extension" in ignored["WLI/adenoma/notes.txt"]
    assert ignored["NBI/hyperplastic/.DS_Store"] == "hidden file"
    assert "README.md" in ignored and not report.skipped
    assert "notes.txt" in report.to_text()


def test_class_in_one_modality_only(tmp_path):
    root = make_tree(tmp_path / "d")
    _rgb(root / "WLI" / "serrated" / "s1.png", seed=50)
    with pytest.raises(DataLayoutError) as ei:
        load_dataset(RealDataConfig(root=str(root), image_size=SIZE))
    msg = str(ei.value)
    assert "serrated" in msg and "missing from NBI" in msg and str(root / "WLI" / "serrated") in msg
    sets, report = load_dataset(RealDataConfig(root=str(root), image_size=SIZE,
                                               allow_missing_classes=True))
    assert sets["NBI"].class_names == ["adenoma", "hyperplastic", "serrated"]
    assert report.counts["NBI"]["serrated"] == 0 and report.counts["WLI"]["serrated"] == 1
    assert any("serrated" in w for w in report.warnings)


def test_empty_class_folder(tmp_path):
    root = make_tree(tmp_path / "d")
    (root / "NBI" / "hyperplastic" / "empty_extra").mkdir()
    (root / "WLI" / "serrated").mkdir()
    (root / "WLI" / "serrated" / "notes.txt").write_text("x")
    with pytest.raises(DataLayoutError, match=r"class folder .*serrated' is empty"):
        load_dataset(RealDataConfig(root=str(root), image_size=SIZE))


@pytest.mark.parametrize("where", ["across", "within"])
def test_class_names_differing_only_in_case(tmp_path, where):
    root = make_tree(tmp_path / "d")
    if where == "across":
        (root / "NBI" / "adenoma").rename(root / "NBI" / "Adenoma")
        a, b = root / "WLI" / "adenoma", root / "NBI" / "Adenoma"
    else:
        _rgb(root / "WLI" / "Adenoma" / "x.png", seed=60)
        a, b = root / "WLI" / "Adenoma", root / "WLI" / "adenoma"
    with pytest.raises(DataLayoutError, match="differ only in case") as ei:
        load_dataset(RealDataConfig(root=str(root), image_size=SIZE))
    assert str(a) in str(ei.value) and str(b) in str(ei.value)


def test_duplicate_bytes_recorded_and_lesions_merged(tmp_path):
    root = make_tree(tmp_path / "d")
    src = root / "WLI" / "adenoma" / "WLI_adenoma_0.png"
    (root / "WLI" / "adenoma" / "copy_of_0.png").write_bytes(src.read_bytes())
    sets, report = load_dataset(RealDataConfig(root=str(root), image_size=SIZE))
    assert report.duplicates == [["WLI/adenoma/WLI_adenoma_0.png", "WLI/adenoma/copy_of_0.png"]]
    s = sets["WLI"]
    ids = {Path(p).name: lid for p, lid in zip(s.paths, s.lesion_ids, strict=True)}
    assert ids["copy_of_0.png"] == ids["WLI_adenoma_0.png"] == "WLI_adenoma_0+copy_of_0"
    assert report.lesion_merges[0]["old_lesion_ids"] == ["WLI_adenoma_0", "copy_of_0"]
    assert "Duplicates" in report.to_text()


def test_id_regex(tmp_path):
    root = tmp_path / "d"
    for mod, seed in (("White_light", 0), ("NBI", 100)):
        for cls in ("adenomas", "hyperplastic_lesions"):
            for les in ("01", "02"):
                for shot in ("1", "2"):
                    seed += 1
                    _rgb(root / mod / cls / f"{cls[0]}{les}-{shot}.png", seed=seed)
    sets, _ = load_dataset(RealDataConfig(root=str(root), image_size=SIZE,
                                          id_regex=r"^(?P<lesion>[a-z]\d+)-\d+$"))
    assert sorted(set(sets["WLI"].lesion_ids)) == ["a01", "a02", "h01", "h02"]
    assert sets["WLI"].patient_ids == sets["WLI"].lesion_ids
    with pytest.raises(DataLayoutError, match="does not match --id-regex"):
        load_dataset(RealDataConfig(root=str(root), id_regex=r"^(?P<lesion>\d+)_x$"))


# ----------------------------------------------------------------------------- manifest

def _write_manifest(path: Path, rows: list[dict], fold: bool = False) -> Path:
    cols = ["path", "modality", "label", "patient_id", "lesion_id"] + (["fold"] if fold else [])
    lines = [",".join(cols)] + [",".join(str(r.get(c, "")) for c in cols) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _manifest_rows(root: Path) -> list[dict]:
    rows, seed = [], 0
    for mod, spelled in (("wli", "white_light"), ("nbi", "NBI")):
        for cls in ("adenoma", "hyperplastic"):
            for pat in ("p1", "p2"):
                seed += 1
                rel = f"img/{mod}_{cls}_{pat}.jpg"
                _rgb(root / rel, 10 + seed, 7, seed=seed)
                rows.append({"path": rel, "modality": spelled, "label": cls,
                             "patient_id": f"{cls}-{pat}", "lesion_id": f"{cls}-{pat}-L1",
                             "fold": seed % 2})
    return rows


def test_manifest_layout(tmp_path):
    root = tmp_path / "d"
    rows = _manifest_rows(root)
    m = _write_manifest(root / "manifest.csv", rows, fold=True)
    for manifest in (str(m), "manifest.csv"):   # absolute, or relative to root
        sets, report = load_dataset(RealDataConfig(root=str(root), image_size=SIZE,
                                                   manifest=manifest))
        assert report.layout == "manifest"
        assert report.counts["WLI"] == {"adenoma": 2, "hyperplastic": 2}
        assert sets["NBI"].patient_ids == ["adenoma-p1", "adenoma-p2",
                                           "hyperplastic-p1", "hyperplastic-p2"]
        assert sets["WLI"].lesion_ids[0] == "adenoma-p1-L1"
        assert sets["WLI"].meta["fold"] == [1, 0, 1, 0]


def test_manifest_missing_file_skipped_or_raised(tmp_path):
    root = tmp_path / "d"
    rows = _manifest_rows(root)
    rows.append({"path": "img/gone.png", "modality": "WLI", "label": "adenoma",
                 "patient_id": "p9", "lesion_id": "l9"})
    m = _write_manifest(root / "m.csv", rows)
    sets, report = load_dataset(RealDataConfig(root=str(root), image_size=SIZE, manifest=str(m)))
    assert len(sets["WLI"]) == 4
    assert report.skipped[0]["path"] == "img/gone.png"
    assert report.skipped[0]["reason"] == "file not found"
    with pytest.raises(ImageLoadError, match="gone.png"):
        load_dataset(RealDataConfig(root=str(root), manifest=str(m), on_bad_image="error"))


@pytest.mark.parametrize("problem,match", [
    ("columns", r"missing column\(s\) \['lesion_id'\]"),
    ("modality", "unknown modality 'xray'"),
    ("case", "differ only in case"),
    ("one_modality", "missing from NBI"),
    ("extra_fields", "line 10: more fields than the header"),
    ("not_utf8", "not UTF-8 text"),
])
def test_manifest_errors(tmp_path, problem, match):
    root = tmp_path / "d"
    rows = _manifest_rows(root)
    m = root / "m.csv"
    if problem == "columns":
        m.write_text("path,modality,label,patient_id\nimg/a.png,WLI,adenoma,p1\n")
    elif problem == "extra_fields":
        _write_manifest(m, rows)
        m.write_text(m.read_text() + "img/x.png,WLI,adenoma,p1,l1,surplus\n")
    elif problem == "not_utf8":
        m.write_bytes(b"path,modality,label,patient_id,lesion_id\n"
                      + "img/\u00e9.png,WLI,adenoma,p1,l1\n".encode("latin-1"))
    else:
        if problem == "modality":
            rows[0]["modality"] = "xray"
        elif problem == "case":
            rows[-1]["label"] = "Hyperplastic"
        else:
            rows = [r for r in rows if not (r["modality"] == "NBI" and r["label"] == "adenoma")]
        _write_manifest(m, rows)
    with pytest.raises(DataLayoutError, match=match):
        load_dataset(RealDataConfig(root=str(root), image_size=SIZE, manifest=str(m)))


def test_report_lists_every_skip_with_reason(tmp_path):
    root = make_tree(tmp_path / "d")
    (root / "WLI" / "adenoma" / "zero.png").write_bytes(b"")
    (root / "NBI" / "hyperplastic" / "junk.jpg").write_bytes(b"junk")
    _, report = load_dataset(RealDataConfig(root=str(root), image_size=SIZE))
    assert isinstance(report, LoadReport)
    reasons = {s["path"]: s["reason"] for s in report.skipped}
    assert reasons == {"WLI/adenoma/zero.png": "empty file (0 bytes)",
                       "NBI/hyperplastic/junk.jpg": reasons["NBI/hyperplastic/junk.jpg"]}
    assert "not an image" in reasons["NBI/hyperplastic/junk.jpg"]
    text = report.to_text()
    for path, reason in reasons.items():
        assert f"{path}: {reason}" in text
    d = report.to_dict()
    assert d["counts"]["WLI"] == {"adenoma": 3, "hyperplastic": 2} and len(d["skipped"]) == 2


def test_class_order_given(tmp_path):
    root = make_tree(tmp_path / "d")
    order = ("hyperplastic", "adenoma")
    sets, report = load_dataset(RealDataConfig(root=str(root), image_size=SIZE,
                                               class_names=order))
    assert sets["WLI"].class_names == list(order) and report.class_names == list(order)
    assert sets["WLI"].class_counts() == [2, 3]
    with pytest.raises(DataLayoutError, match=r"not found in the data: \['serrated'\]"):
        load_dataset(RealDataConfig(root=str(root), class_names=("adenoma", "serrated")))


def test_config_validation():
    with pytest.raises(ValueError, match="on_bad_image"):
        RealDataConfig(root=".", on_bad_image="ignore")
    with pytest.raises(ValueError, match="both wli_names and nbi_names"):
        RealDataConfig(root=".", wli_names=("X",), nbi_names=("x",))
