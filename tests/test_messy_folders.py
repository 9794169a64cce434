"""A messy real folder never costs a run: damaged copies of one SynthEndo export.

One small SynthEndo export (``test_cv.export_tree``: 48 WLI + 48 NBI PNGs, 2 classes) is
made once per session; each case copies it, damages the copy in one way, and asserts
the outcome: the error text, a recorded skip, or the counts in the load report. The
last test runs a whole ``cv`` (smoke settings) on a folder with many kinds of damage.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_cv import ID_REGEX, TINY, export_tree

from pagkd_lite.apps.cli import main
from pagkd_lite.config import TrainConfig, override, smoke, to_dict
from pagkd_lite.data.realdata import RealDataConfig, load_dataset
from pagkd_lite.data.splits import lesion_folds
from pagkd_lite.errors import ConfigError, DataLayoutError, KitError
from pagkd_lite.files import atomic_write, check_out_dir, readable
from pagkd_lite.training.checkpoint import (
    CheckpointError,
    check_provenance,
    load_checkpoint,
    save_checkpoint,
)

E_ACUTE = b"\xe9"  # Latin-1 'é': not valid UTF-8 on its own (zips made on Windows)


@pytest.fixture(scope="session")
def clean(tmp_path_factory) -> Path:
    return export_tree(tmp_path_factory.mktemp("messy"))


@pytest.fixture
def tree(clean: Path, tmp_path: Path) -> Path:
    """A fresh copy of the clean export to damage."""
    return Path(shutil.copytree(clean, tmp_path / "tree"))


def load(root: Path, **kw):
    return load_dataset(RealDataConfig(root=str(root), image_size=32, **kw))


def n_clean(root: Path) -> int:
    return len(list(root.glob("*/*/*.png")))


def a_png(tree: Path, modality: str = "WLI") -> Path:
    return sorted((tree / modality).glob("*/*.png"))[0]


def skip_reasons(report) -> dict[str, str]:
    return {s["path"]: s["reason"] for s in report.skipped}


def jpeg_bytes(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype("uint8")).save(buf, "JPEG")
    return buf.getvalue()


def corrupt_jpeg_body(data: bytes) -> bytes:
    """Flip bits inside the entropy-coded scan (no new markers): Pillow decodes it silently."""
    out = bytearray(data)
    for i in range(len(out) // 2, len(out) // 2 + 30):
        if out[i] != 0xFF and out[i] ^ 0x11 != 0xFF:
            out[i] ^= 0x11
    return bytes(out)


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width x height`` (CRC fixed): large on paper only."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 4  # signature, then the IHDR chunk's length field
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    return bytes(data)


def manifest(tree: Path, rows: list[list[str]], header=("path", "modality", "label",
                                                         "patient_id", "lesion_id")) -> str:
    m = tree / "m.csv"
    with m.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(m)


def rows_of(tree: Path) -> list[list[str]]:
    return [[p.relative_to(tree).as_posix(), p.parent.parent.name, p.parent.name, p.stem,
             p.stem] for p in sorted(tree.glob("*/*/*.png"))]


# ----------------------------------------------------------------------------- names

def test_non_utf8_file_name_loads_and_is_reported_readably(tree):
    src = a_png(tree)
    os.rename(src, os.path.join(os.fsencode(src.parent), b"caf" + E_ACUTE + b".png"))
    (tree / "WLI" / "adenoma" / "x.txt").write_text("not an image")
    sets, report = load(tree)
    assert report.num_loaded == 96 and not report.skipped
    assert {"path": "WLI/adenoma/x.txt", "reason": "not an image extension (.txt)"} in \
        report.ignored
    jpath, tpath = report.save(tree.parent / "lr")
    tpath.read_text(encoding="utf-8")
    json.loads(jpath.read_text(encoding="utf-8"))
    assert any(os.fsencode(p).endswith(b"caf\xe9.png") for p in sets["WLI"].paths)


def test_non_utf8_class_folder_name_becomes_a_readable_class(tree):
    for mod in ("WLI", "NBI"):
        new = os.path.join(os.fsencode(tree / mod), b"serr" + E_ACUTE)
        os.mkdir(new)
        for i, p in enumerate(sorted((tree / mod / "adenoma").glob("*.png"))[:4]):
            shutil.copy(p, os.path.join(new, f"s{i}.png".encode()))
    sets, report = load(tree)
    assert "serr\\xe9" in sets["WLI"].class_names
    assert report.counts["WLI"]["serr\\xe9"] == 4
    _, tpath = report.save(tree.parent / "lr")
    assert "serr\\xe9" in tpath.read_text(encoding="utf-8")


def test_readable_is_identity_for_utf8_and_escapes_bytes():
    assert readable("adénome ü") == "adénome ü"
    assert readable(os.fsdecode(b"a" + E_ACUTE)) == "a\\xe9"


# ----------------------------------------------------------------------------- bad files

@pytest.mark.parametrize("damage, reason", [
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_bytes(p.read_bytes()[:60]), "corrupt or truncated"),
    (lambda p: p.write_text("hello"), "not an image"),
    (lambda p: p.write_bytes(corrupt_jpeg_body(jpeg_bytes())), "Corrupt JPEG data"),
    (lambda p: p.write_bytes(png_claiming(10000, 10000)), "image too large: 10000 x 10000"),
    (lambda p: (p.unlink(), os.mkfifo(p)), "FIFO"),
    (lambda p: (p.unlink(), os.symlink("/dev/zero", p)), "a device"),
    (lambda p: (p.unlink(), os.symlink(p.parent / "gone.png", p)), "broken symbolic link"),
    (lambda p: (p.unlink(), p.mkdir()), "is a directory"),
], ids=["empty", "truncated", "text", "jpeg-body", "10000x10000", "fifo", "dev-zero",
        "broken-link", "directory"])
def test_bad_file_is_a_recorded_skip(tree, damage, reason):
    victim = a_png(tree)
    damage(victim)
    sets, report = load(tree)
    rel = victim.relative_to(tree).as_posix()
    assert reason in skip_reasons(report)[rel]
    assert len(sets["WLI"]) + len(sets["NBI"]) == 95
    assert len(report.skipped) == 1


def test_corrupt_jpeg_kept_with_a_warning_when_asked(tree):
    (tree / "WLI" / "adenoma" / "bad.jpg").write_bytes(corrupt_jpeg_body(jpeg_bytes()))
    sets, report = load(tree, decode_warnings="keep")
    assert not report.skipped and len(sets["WLI"]) == 49
    assert any("bad.jpg" in w and "Corrupt JPEG data" in w for w in report.warnings)


def test_good_jpeg_loads_without_warning(tree):
    (tree / "WLI" / "adenoma" / "good.jpg").write_bytes(jpeg_bytes())
    sets, report = load(tree)
    assert not report.skipped and not report.warnings and len(sets["WLI"]) == 49


def test_pixel_limit_applies_and_is_stated(tree):
    Image.new("RGB", (40, 40)).save(tree / "WLI" / "adenoma" / "big.png")
    _, report = load(tree, max_pixels=39 * 40)
    assert "1600 pixels > max_pixels=1560" in skip_reasons(report)["WLI/adenoma/big.png"]
    assert "1560" in report.policy["max_pixels"] and "Policy:" in report.to_text()
    _, report = load(tree, max_pixels=40 * 40)
    assert not report.skipped


def test_every_image_of_a_class_corrupt_fails_with_the_report_attached(tree):
    for p in (tree / "NBI" / "adenoma").glob("*.png"):
        p.write_bytes(b"junk")
    with pytest.raises(DataLayoutError, match="no loadable NBI images") as info:
        load(tree)
    rep = info.value.report
    assert rep is not None and len(rep.skipped) == len(list((tree / "NBI" / "adenoma")
                                                             .glob("*.png")))
    assert all("not an image" in s["reason"] for s in rep.skipped)


# ----------------------------------------------------------------------------- folders

@pytest.mark.parametrize("name", [".ipynb_checkpoints", "__MACOSX", ".git"])
def test_hidden_and_system_folders_in_a_modality_are_ignored_and_counted(tree, name):
    junk = tree / "WLI" / name
    junk.mkdir()
    for i in range(3):
        shutil.copy(a_png(tree), junk / f"{i}.png")
    sets, report = load(tree)
    assert sets["WLI"].class_names == ["adenoma", "hyperplastic"]
    assert report.num_loaded == 96
    entry = next(i for i in report.ignored if i["path"] == f"WLI/{name}")
    assert entry["files_inside"] == 3 and "folder" in entry["reason"]


def test_macosx_at_root_is_ignored_with_its_files_counted(tree):
    (tree / "__MACOSX" / "WLI").mkdir(parents=True)
    (tree / "__MACOSX" / "WLI" / "._a.png").write_bytes(b"\0" * 10)
    _, report = load(tree)
    assert {"path": "__MACOSX", "reason": "system folder", "files_inside": 1} in report.ignored


def test_nested_subfolder_contents_are_counted(tree):
    sub = tree / "WLI" / "adenoma" / "more" / "deeper"
    sub.mkdir(parents=True)
    for i in range(3):
        (sub / f"{i}.png").write_bytes(b"x")
    _, report = load(tree)
    assert report.ignored[0]["files_inside"] == 3
    assert "(+3 file(s) inside ignored folders)" in report.to_text()


@pytest.mark.parametrize("name, reason", [(".DS_Store", "hidden file"),
                                          ("notes.txt", "not an image extension")])
def test_stray_files_are_ignored(tree, name, reason):
    (tree / "NBI" / "adenoma" / name).write_text("x")
    _, report = load(tree)
    assert any(i["path"] == f"NBI/adenoma/{name}" and reason in i["reason"]
               for i in report.ignored)
    assert report.num_loaded == 96


def test_single_class_overall_is_a_data_error(tree):
    for mod in ("WLI", "NBI"):
        shutil.rmtree(tree / mod / "hyperplastic")
    with pytest.raises(DataLayoutError, match=r"only one class found \(\['adenoma'\]\)"):
        load(tree)


def test_class_in_one_modality_only(tree):
    shutil.rmtree(tree / "NBI" / "hyperplastic")
    with pytest.raises(DataLayoutError, match="'hyperplastic' is missing from NBI"):
        load(tree)


def test_trailing_space_in_a_class_folder_is_shown(tree):
    os.rename(tree / "WLI" / "adenoma", tree / "WLI" / "adenoma ")
    with pytest.raises(DataLayoutError, match="surrounding spaces.*/WLI/adenoma ' vs"):
        load(tree)


def test_names_differing_in_case(tree):
    os.rename(tree / "WLI" / "adenoma", tree / "WLI" / "Adenoma")
    with pytest.raises(DataLayoutError, match="differ only in case"):
        load(tree)


def test_data_root_that_is_a_file(tree):
    with pytest.raises(DataLayoutError, match="is not a folder"):
        load(a_png(tree))


@pytest.mark.parametrize("regex, match", [("(", "not a valid regular expression"),
                                          (r"\d+", "no named group")])
def test_bad_id_regex_is_refused_before_loading(tree, regex, match):
    with pytest.raises(ConfigError, match=match):
        RealDataConfig(root=str(tree), id_regex=regex)


def test_id_regex_not_matching_names_the_file(tree):
    shutil.copy(a_png(tree), tree / "WLI" / "adenoma" / "odd.png")
    with pytest.raises(DataLayoutError, match="'odd' does not match --id-regex"):
        load(tree, id_regex=ID_REGEX)


# ----------------------------------------------------------------------------- manifest

def test_manifest_with_a_duplicated_column(tree):
    m = manifest(tree, [r + ["x"] for r in rows_of(tree)],
                 header=("path", "modality", "label", "patient_id", "lesion_id", "label"))
    with pytest.raises(DataLayoutError, match=r"line 1: column\(s\) \['label'\] appear"):
        load(tree, manifest=m)


def test_manifest_dot_slash_duplicate_is_caught(tree):
    rows = rows_of(tree)
    m = manifest(tree, rows + [["./" + rows[0][0], *rows[0][1:]]])
    with pytest.raises(DataLayoutError, match=f"line {len(rows) + 2}.*already listed on line 2"):
        load(tree, manifest=m)


@pytest.mark.parametrize("spell", [lambda p: p.replace("/", "\\"), lambda p: "./" + p],
                         ids=["backslash", "dot-slash"])
def test_manifest_path_spellings_are_normalised_and_recorded(tree, spell):
    rows = [[spell(r[0]), *r[1:]] for r in rows_of(tree)]
    sets, report = load(tree, manifest=manifest(tree, rows))
    assert report.num_loaded == 96 and not report.skipped
    assert len(report.normalised) == 96
    assert "Manifest paths normalised (96)" in report.to_text()


def test_manifest_listing_a_device_is_skipped_not_read(tree):
    m = manifest(tree, rows_of(tree) + [["/dev/zero", "WLI", "adenoma", "z", "z"]])
    _, report = load(tree, manifest=m, allow_outside_root=True)   # outside: opt in
    assert "a device" in skip_reasons(report)["/dev/zero"]


def test_manifest_missing_file_is_a_skip(tree):
    m = manifest(tree, rows_of(tree) + [["WLI/adenoma/nope.png", "WLI", "adenoma", "n", "n"]])
    _, report = load(tree, manifest=m)
    assert skip_reasons(report)["WLI/adenoma/nope.png"] == "file not found"


def test_manifest_missing_column_and_unknown_modality(tree):
    with pytest.raises(DataLayoutError, match=r"missing column\(s\) \['lesion_id'\]"):
        load(tree, manifest=manifest(tree, [r[:4] for r in rows_of(tree)],
                                     header=("path", "modality", "label", "patient_id")))
    rows = rows_of(tree)
    rows[3][1] = "xray"
    with pytest.raises(DataLayoutError, match="line 5: unknown modality 'xray'"):
        load(tree, manifest=manifest(tree, rows))


def test_manifest_not_utf8(tree):
    (tree / "m.csv").write_bytes(b"path,modality,label,patient_id,lesion_id\n" + E_ACUTE +
                                 b".png,WLI,a,1,1\n")
    with pytest.raises(DataLayoutError, match="not UTF-8"):
        load(tree, manifest=str(tree / "m.csv"))


def test_manifest_with_one_fold(tree):
    m = manifest(tree, [r + ["0"] for r in rows_of(tree)],
                 header=("path", "modality", "label", "patient_id", "lesion_id", "fold"))
    sets, _ = load(tree, manifest=m)
    with pytest.raises(ValueError, match=r"one value only \[0\]"):
        lesion_folds(sets, 5, 0)


@pytest.mark.parametrize("fraction", [math.nan, 1.0, -0.1])
def test_val_fraction_out_of_range(tree, fraction):
    sets, _ = load(tree)
    with pytest.raises(ValueError, match="val_fraction must be >= 0 and < 1"):
        lesion_folds(sets, 2, 0, val_fraction=fraction)


# ----------------------------------------------------------------------------- files

def test_out_checks(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(KitError, match="is a file"):
        check_out_dir(f)
    with pytest.raises(KitError, match="lies under the file"):
        check_out_dir(f / "a" / "b")
    assert check_out_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    def fail(tmp):
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(tmp_path / "x.csv", fail)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- CLI

@pytest.mark.parametrize("extra, match", [
    (["--val-fraction", "0"], "--val-fraction 0.0: must be > 0 and < 1"),
    (["--val-fraction", "nan"], "--val-fraction nan"),
    (["--val-fraction", "1.0"], "--val-fraction 1.0"),
    (["--folds", "1"], "at least 2 folds"),
    (["--id-regex", "("], "not a valid regular expression"),
    (["--device", "gpu0"], "'gpu0' is not a device name"),
])
def test_cv_argument_errors_come_before_loading(clean, tmp_path, capsys, extra, match):
    rc = main(["cv", "--data-root", str(clean), "--out", str(tmp_path / "o"), *TINY, *extra])
    err = capsys.readouterr().err
    assert rc == 2 and match in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["cv", "train-teacher"])
def test_out_that_is_a_file_fails_before_training(clean, tmp_path, capsys, command):
    f = tmp_path / "f"
    f.write_text("x")
    for out, match in ((f, "is a file"), (f / "sub", "lies under the file")):
        args = ["--data-root", str(clean)] if command == "cv" else []
        rc = main([command, *args, "--out", str(out), *TINY])
        err = capsys.readouterr().err
        assert rc == 2 and match in err and "Traceback" not in err


def test_cv_load_failure_writes_and_prints_the_load_report(tree, tmp_path, capsys):
    for p in (tree / "WLI" / "hyperplastic").glob("*.png"):
        p.write_bytes(b"")
    rc = main(["cv", "--data-root", str(tree), "--out", str(tmp_path / "o"), *TINY])
    printed = capsys.readouterr()
    assert rc == 2 and "no loadable WLI images" in printed.err
    text = (tmp_path / "o" / "load_report.txt").read_text()
    assert f"load report: {tmp_path / 'o' / 'load_report.txt'}" in printed.out
    assert text.count("empty file (0 bytes)") == 24


def test_internal_error_keeps_its_traceback_and_asks_for_a_report(monkeypatch, tmp_path,
                                                                   capsys):
    import pagkd_lite.training.pipeline as pipeline

    def boom(cfg):
        raise ZeroDivisionError("kit bug")

    monkeypatch.setattr(pipeline, "make_data", boom)
    rc = main(["make-data", "--preset", "smoke", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" in err and "please report it" in err


def test_warnings_print_as_one_line(monkeypatch, tmp_path, capsys):
    import warnings

    import pagkd_lite.training.pipeline as pipeline

    def warn(cfg):
        warnings.warn("something odd", UserWarning, stacklevel=1)
        raise ConfigError("stop here")

    monkeypatch.setattr(pipeline, "make_data", warn)
    assert main(["make-data", "--preset", "smoke", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["pagkd-lite: warning: something odd", "pagkd-lite make-data: error: stop here"]


# ----------------------------------------------------------------------------- checkpoints

def tiny_cfg():
    """Smoke settings with a SynthEndo small enough to generate in a moment."""
    return override(smoke(), ["data.image_size=32", "data.n_wli_train=6", "data.n_nbi_train=6",
                              "data.n_wli_val=6", "data.n_nbi_val=6", "data.n_wli_test=6",
                              "data.n_nbi_test=6", "data.images_per_patient=1"])


def _ck(tmp_path, **changes) -> Path:
    cfg = tiny_cfg()
    payload = {"distiller": {}, "method": "wli_only", "config": to_dict(cfg),
               "provenance": {"data": {"source": "synthendo", "config": to_dict(cfg)["data"]},
                              "model": {"backbone": cfg.model.backbone, "num_classes":
                                        cfg.data.num_classes}}}
    payload.update(changes)
    return save_checkpoint(tmp_path / "ck.pt", payload)


@pytest.mark.parametrize("change, match", [
    ({"data": {"source": "real", "root": "/data/polyps", "class_names": ["a", "b"]}},
     "trained on real data '/data/polyps'"),
    ({"model": {"backbone": "resnet50"}}, "backbone 'resnet50'"),
    ({"model": {"num_classes": 7}}, "num_classes 7"),
])
def test_evaluate_refuses_a_checkpoint_of_other_data_or_model(tmp_path, capsys, change,
                                                               match):
    cfg = tiny_cfg()
    base = {"data": {"source": "synthendo", "config": to_dict(cfg)["data"]},
            "model": {"backbone": cfg.model.backbone, "num_classes": cfg.data.num_classes}}
    prov = {"data": {**base["data"], **change.get("data", {})},
            "model": {**base["model"], **change.get("model", {})}}
    if "data" in change:
        prov["data"] = change["data"]
    path = _ck(tmp_path, provenance=prov)
    rc = main(["evaluate", "--preset", "smoke", "--checkpoint", str(path)])
    err = capsys.readouterr().err
    assert rc == 2 and match in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("change, match", [
    ({"distiller": {"nonsense": torch.zeros(3)}}, "weights do not fit this model"),
    ({"config": "hand-edited"}, "config cannot be read"),
    ({"provenance": "hand-edited"}, "provenance is not a dict"),
    ({"method": "made_up"}, "unknown method 'made_up'"),
])
def test_evaluate_hand_edited_checkpoints(tmp_path, capsys, change, match):
    rc = main(["evaluate", "--preset", "smoke", "--checkpoint", str(_ck(tmp_path, **change))])
    err = capsys.readouterr().err
    assert rc == 2 and match in err and "Traceback" not in err


def test_resume_refuses_last_pt_of_other_data(tmp_path):
    path = _ck(tmp_path)
    ck = load_checkpoint(path)
    with pytest.raises(CheckpointError, match="trained on synthendo data, this run uses "
                                              "real data"):
        check_provenance(path, ck, {"source": "real", "root": "r", "class_names": ["a"]},
                         ck["provenance"]["model"])


def test_pickled_checkpoint_refusal_has_no_escape_codes(tmp_path):
    import pickle

    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"x": Path("p")}, f)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "\x1b" not in str(info.value) and "weights_only" in str(info.value)


# ----------------------------------------------------------------------------- whole run

def test_cv_on_a_folder_with_many_kinds_of_damage(tree, tmp_path, capsys):
    good_wli = n_clean(tree) // 2
    bad = {  # rel path -> the reason expected in the load report
        "WLI/adenoma/empty-l0_0.png": "empty file",
        "WLI/hyperplastic/trunc-l0_0.png": "corrupt or truncated",
        "NBI/adenoma/body-l0_0.jpg": "Corrupt JPEG data",
        "NBI/hyperplastic/pipe-l0_0.jpg": "FIFO",
        "WLI/adenoma/huge-l0_0.png": "image too large",
    }
    # a good image under a name that is not UTF-8, matching the id regex
    src = a_png(tree)
    os.rename(src, os.path.join(os.fsencode(src.parent), b"p" + E_ACUTE + b"-l0_0.png"))
    (tree / "WLI/adenoma/empty-l0_0.png").write_bytes(b"")
    (tree / "WLI/hyperplastic/trunc-l0_0.png").write_bytes(a_png(tree, "NBI").read_bytes()[:70])
    (tree / "NBI/adenoma/body-l0_0.jpg").write_bytes(corrupt_jpeg_body(jpeg_bytes()))
    os.mkfifo(tree / "NBI/hyperplastic/pipe-l0_0.jpg")
    (tree / "WLI/adenoma/huge-l0_0.png").write_bytes(png_claiming(10000, 10000))
    (tree / "WLI" / ".ipynb_checkpoints").mkdir()
    (tree / "WLI" / ".ipynb_checkpoints" / "a.png").write_bytes(b"x")
    (tree / "__MACOSX").mkdir()
    (tree / "NBI" / "adenoma" / ".DS_Store").write_bytes(b"x")
    (tree / "NBI" / "adenoma" / "old").mkdir()
    out = tmp_path / "out"
    rc = main(["cv", "--data-root", str(tree), "--folds", "2", "--id-regex", ID_REGEX,
               "--out", str(out), *TINY])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "Traceback" not in printed.err
    with (out / "predictions.csv").open(encoding="utf-8") as f:
        preds = list(csv.DictReader(f))
    assert len(preds) == good_wli  # every good WLI image predicted once
    assert any(r["path"].endswith("p\\xe9-l0_0.png") for r in preds)
    report = json.loads((out / "load_report.json").read_text(encoding="utf-8"))
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == set(bad)
    for rel, why in bad.items():
        assert why in reasons[rel]
    ignored = {i["path"] for i in report["ignored"]}
    assert {"WLI/.ipynb_checkpoints", "__MACOSX", "NBI/adenoma/.DS_Store",
            "NBI/adenoma/old"} <= ignored
    assert sum(sum(c.values()) for c in report["counts"].values()) == 96  # all good ones
    assert (out / "report.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("with_provenance, match", [
    (True, "trained with num_classes 3, this run has 2"),
    (False, "weights do not fit this model"),
])
def test_resume_with_another_class_count_is_refused(tiny_sets, tmp_path, with_provenance,
                                                    match):
    from pagkd_lite.method.distill import Distiller
    from pagkd_lite.models.classifier import Classifier, ModelConfig
    from pagkd_lite.training.train import fit

    cfg = TrainConfig(epochs=1, batch_size=6, lr=1e-3, warmup_epochs=0)
    model = ModelConfig(backbone="test_resnet", dim=8, feature_index=-2)

    def prov(k):
        return {"data": {"source": "real", "root": "r", "class_names": ["a", "b", "c"][:k]},
                "model": {"backbone": "test_resnet", "num_classes": k}}

    fit(Distiller(Classifier(model, 3)), tiny_sets["wli_train"], tiny_sets["wli_val"], cfg,
        torch.device("cpu"), out_dir=tmp_path, progress=False,
        provenance=prov(3) if with_provenance else None)
    with pytest.raises(CheckpointError, match=match):
        fit(Distiller(Classifier(model, 2)), tiny_sets["wli_train"], tiny_sets["wli_val"],
            cfg, torch.device("cpu"), out_dir=tmp_path, resume=True, progress=False,
            provenance={"data": prov(3)["data"], "model": prov(2)["model"]}
            if with_provenance else None)
