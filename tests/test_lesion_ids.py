"""Lesion identity: a lesion id never carries two classes (``pagkd_lite.data.lesion_ids``).

The layout under test is the common real one that numbers the files ``001.jpg, 002.jpg,
...`` inside every class folder, in both the WLI and the NBI folder.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pagkd_lite.apps.cli import main
from pagkd_lite.data.realdata import RealDataConfig, load_dataset
from pagkd_lite.data.splits import lesion_folds
from pagkd_lite.errors import DataLayoutError

CLASSES = ("adenoma", "hyperplastic", "serrated")
STEMS = ("001", "002", "003", "004")


def numbered_tree(root: Path, stems=STEMS) -> Path:
    """``root/{WLI,NBI}/<class>/001.jpg ...``: the same stems in every class folder, every
    file's pixels distinct (no byte duplicates)."""
    seed = 0
    for mod in ("WLI", "NBI"):
        for cls in CLASSES:
            for stem in stems:
                seed += 1
                rng = np.random.default_rng(seed)
                path = root / mod / cls / f"{stem}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)).save(path)
    return root


def classes_per_id(sets, ids: str = "lesion_ids") -> dict[str, set[str]]:
    """Every id of either modality -> the classes it carries."""
    out: dict[str, set[str]] = defaultdict(set)
    for s in sets.values():
        for i, label in zip(getattr(s, ids), s.labels.tolist(), strict=True):
            out[i].add(s.class_names[label])
    return out


def load(root: Path, **kw):
    return load_dataset(RealDataConfig(root=str(root), image_size=8, **kw))


def test_stem_in_every_class_becomes_one_lesion_per_class(tmp_path):
    sets, report = load(numbered_tree(tmp_path / "d"))
    per = classes_per_id(sets)
    assert all(len(c) == 1 for c in per.values())              # one class per lesion
    assert len(per) == len(STEMS) * len(CLASSES)               # 12 lesions, not 4
    assert set(per) == {f"{c}/{s}" for c in CLASSES for s in STEMS}
    assert all(len(c) == 1 for c in classes_per_id(sets, "patient_ids").values())
    # WLI and NBI files of the same class and stem stay one lesion (paired naming)
    assert set(sets["WLI"].lesion_ids) == set(sets["NBI"].lesion_ids)
    assert [s["lesion_id"] for s in report.lesion_splits] == list(STEMS)
    first = report.lesion_splits[0]
    assert first["note"] == ("stem '001' appears under 3 classes (adenoma, hyperplastic, "
                             "serrated): treated as 3 lesions (adenoma/001, hyperplastic/001, "
                             "serrated/001)")
    assert first["n_images"] == 6
    text = report.to_text()
    assert "Lesion ids split by class (a lesion has one class) (4):" in text
    assert "stem '004' appears under 3 classes" in text
    assert "lesion_ids" in report.policy


def test_folds_never_split_a_scoped_lesion_and_never_merge_classes(tmp_path):
    sets, _ = load(numbered_tree(tmp_path / "d"))
    for fold in lesion_folds(sets, 2, 0, group_by="lesion", val_fraction=0.25):
        where: dict[str, set[str]] = defaultdict(set)
        for key, idx in fold.items():
            s = sets[key.split("_")[0].upper()]
            for j in idx.tolist():
                where[s.lesion_ids[j]].add(key.split("_")[1])
        assert all(len(parts) == 1 for parts in where.values()), where


def test_unique_stems_are_left_alone(tmp_path):
    root = numbered_tree(tmp_path / "d")
    for mod in ("WLI", "NBI"):
        for cls in CLASSES:
            for p in (root / mod / cls).glob("*.jpg"):
                p.rename(p.with_name(f"{cls[:3]}{p.name}"))
    sets, report = load(root)
    assert report.lesion_splits == [] and "split by class" not in report.to_text()
    assert "ade001" in sets["WLI"].lesion_ids


def test_strict_policy_refuses_a_shared_stem(tmp_path):
    root = numbered_tree(tmp_path / "d")
    with pytest.raises(DataLayoutError) as info:
        load(root, stem_reuse="error")
    msg = str(info.value)
    assert "stem '001' appears under 3 classes (adenoma, hyperplastic, serrated)" in msg
    assert "e.g. WLI/adenoma/001.jpg, WLI/hyperplastic/001.jpg, WLI/serrated/001.jpg" in msg
    assert "(4 such id(s) in all)" in msg
    assert "--stem-reuse split" in msg and "--manifest" in msg
    assert info.value.report is not None      # the load report is still there to save


def test_strict_policy_from_the_command_line(tmp_path, capsys):
    root = numbered_tree(tmp_path / "d")
    rc = main(["cv", "--data-root", str(root), "--stem-reuse", "error", "--out",
               str(tmp_path / "o"), "--preset", "smoke", "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "stem '001' appears under 3 classes" in err
    assert (tmp_path / "o" / "load_report.txt").exists()   # written on failure too


def test_id_regex_lesion_shared_across_classes_is_split_and_patient_kept(tmp_path):
    root = tmp_path / "d"
    seed = 0
    for mod in ("WLI", "NBI"):
        for cls in ("adenoma", "hyperplastic"):
            for shot in ("1", "2"):
                seed += 1
                rng = np.random.default_rng(seed)
                p = root / mod / cls / f"P7_L1_{shot}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)).save(p)
    sets, report = load(root, id_regex=r"^(?P<patient>P\d+)_(?P<lesion>L\d+)_\d+$")
    assert set(sets["WLI"].lesion_ids) == {"adenoma/L1", "hyperplastic/L1"}
    assert set(sets["WLI"].patient_ids) == {"P7"}    # a patient may have several classes
    assert report.lesion_splits[0]["note"].startswith("lesion id 'L1' appears under 2 classes")


# ----------------------------------------------------------------------------- manifest

def write_manifest(path: Path, rows: list[list]) -> str:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "modality", "label", "patient_id", "lesion_id"])
        w.writerows(rows)
    return str(path)


def tree_rows(root: Path, lesion=lambda p: f"{p.parent.name}-{p.stem}") -> list[list]:
    return [[p.relative_to(root).as_posix(), p.parent.parent.name, p.parent.name, "",
             lesion(p)] for p in sorted(root.glob("*/*/*.jpg"))]


def test_manifest_lesion_ids_are_used_as_written(tmp_path):
    root = numbered_tree(tmp_path / "d")
    m = write_manifest(root / "m.csv", tree_rows(root))
    sets, report = load(root, manifest=m)
    assert "adenoma-001" in sets["WLI"].lesion_ids and report.lesion_splits == []
    assert set(sets["WLI"].lesion_ids) == set(sets["NBI"].lesion_ids)


def test_manifest_lesion_id_with_two_classes_is_an_error(tmp_path):
    root = numbered_tree(tmp_path / "d")
    m = write_manifest(root / "m.csv", tree_rows(root, lesion=lambda p: p.stem))
    with pytest.raises(DataLayoutError) as info:
        load(root, manifest=m)
    msg = str(info.value)
    assert msg.startswith(f"manifest {m}: lesion_id '001' carries 3 classes")
    assert ("'adenoma' on line(s) 2, 14; 'hyperplastic' on line(s) 6, 18; 'serrated' on "
            "line(s) 10, 22)") in msg
    assert "4 lesion id(s) do in all" in msg
    # the strict stem policy does not matter here: written ids are never split
    with pytest.raises(DataLayoutError, match="lesion_id '001' carries 3 classes"):
        load(root, manifest=m, stem_reuse="split")


def test_manifest_without_lesion_ids_follows_the_stem_rule(tmp_path):
    root = numbered_tree(tmp_path / "d")
    m = write_manifest(root / "m.csv", tree_rows(root, lesion=lambda p: ""))
    sets, report = load(root, manifest=m)
    assert all(len(c) == 1 for c in classes_per_id(sets).values())
    assert len(report.lesion_splits) == len(STEMS)
    with pytest.raises(DataLayoutError, match="stem '001' appears under 3 classes"):
        load(root, manifest=m, stem_reuse="error")
