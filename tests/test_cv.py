"""``pagkd-lite cv`` end to end on a SynthEndo export treated as real data.

One tiny data set (2 classes, 32 px, 48 WLI + 48 NBI images, two views per lesion) is
exported once per module into the real-data folder layout; the smoke preset, shrunk with
``--set``, trains one teacher and one student per fold in a few seconds.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from pagkd_lite.apps.cli import main
from pagkd_lite.apps.cv import CV_METHODS, check_method, fold_sets, run_cv, unpaired_folds
from pagkd_lite.config import override, smoke
from pagkd_lite.data.imageset import ImageSet
from pagkd_lite.data.realdata import RealDataConfig, load_dataset
from pagkd_lite.data.splits import FOLD_KEYS, check_disjoint, lesion_folds
from pagkd_lite.data.synthendo import SynthEndoConfig, export_folder, generate
from pagkd_lite.training.checkpoint import load_checkpoint

# SynthEndo names files <lesion>_<k>.png and lesions <patient>-l<j>: recover both ids.
ID_REGEX = r"^(?P<lesion>(?P<patient>.+)-l\d+)_\d+$"
TINY = ["--preset", "smoke", "--set", "data.image_size=32", "--set", "train.epochs=1",
        "--set", "bootstrap=50", "--device", "cpu", "--quiet", "--seed", "0"]


def export_tree(root: Path) -> Path:
    """SynthEndo exported, then merged into one ``<root>/tree/<modality>/<class>/`` tree."""
    cfg = SynthEndoConfig(image_size=32, num_classes=2, n_wli_train=32, n_nbi_train=48,
                          n_wli_val=0, n_nbi_val=0, n_wli_test=16, n_nbi_test=0,
                          images_per_patient=2, views_per_lesion=2, seed=3)
    sets = {k: v for k, v in generate(cfg).items() if k != "paired_nbi" and len(v)}
    export_folder(sets, root / "export")
    tree = root / "tree"
    for f in sorted((root / "export").glob("*/*/*/*.png")):  # <split>/<modality>/<class>/
        dest = tree / f.parent.parent.name / f.parent.name / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        f.rename(dest)
    return tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return export_tree(tmp_path_factory.mktemp("cv"))


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_cv_end_to_end(tree: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    rc = main(["cv", "--data-root", str(tree), "--folds", "2", "--method", "pagkd",
               "--id-regex", ID_REGEX, "--out", str(out), *TINY, "--threads", "1"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "Load report" in printed.out and "pooled" in printed.out

    wli_files = sorted(str(p) for p in (tree / "WLI").glob("*/*.png"))
    results = _rows(out / "cv_results.csv")
    assert [r["fold"] for r in results] == ["0", "1", "pooled"]
    pooled = results[-1]
    assert int(pooled["n_test"]) == len(wli_files) == 48
    assert sum(int(r["n_test"]) for r in results[:-1]) == len(wli_files)
    for m in ("auc", "accuracy", "f1"):
        assert float(pooled[f"{m}_low"]) <= float(pooled[m]) <= float(pooled[f"{m}_high"])
        assert 0.0 <= float(pooled[m]) <= 1.0

    preds = _rows(out / "predictions.csv")
    assert sorted(r["path"] for r in preds) == wli_files  # each test image exactly once
    for r in preds:
        p = [float(r["prob_adenoma"]), float(r["prob_hyperplastic"])]
        assert abs(sum(p) - 1.0) < 1e-4 and r["fold"] in ("0", "1")

    # The folds the run used (deterministic from the seed) are leakage-free, and they are
    # the ones behind predictions.csv.
    sets, _ = load_dataset(RealDataConfig(root=str(tree), image_size=32, id_regex=ID_REGEX))
    folds = lesion_folds(sets, 2, 0, group_by="patient")
    fold_of = {r["path"]: int(r["fold"]) for r in preds}
    for i, fold in enumerate(folds):
        check_disjoint(fold, sets, group_by="patient")
        tested = {sets["WLI"].paths[j] for j in fold["wli_test"].tolist()}
        assert tested == {p for p, f in fold_of.items() if f == i}
        test_patients = {sets["WLI"].patient_ids[j] for j in fold["wli_test"].tolist()}
        train_patients = {s.patient_ids[j] for key, s in fold_sets(sets, fold).items()
                          if not key.endswith("test") for j in range(len(s))}
        assert not test_patients & train_patients
    # one lesion's two views always share a fold
    by_lesion: dict[str, set[str]] = {}
    for r in preds:
        by_lesion.setdefault(r["lesion_id"], set()).add(r["fold"])
    assert all(len(f) == 1 for f in by_lesion.values())
    assert max(len([r for r in preds if r["lesion_id"] == k]) for k in by_lesion) == 2

    report = json.loads((out / "load_report.json").read_text())
    assert report["counts"]["WLI"] == {"adenoma": 24, "hyperplastic": 24}
    assert (out / "load_report.txt").read_text().startswith("Load report")
    assert "pooled" in (out / "report.md").read_text()
    assert (out / "fold0" / "pagkd" / "best.pt").is_file()
    assert (out / "fold1" / "pagkd" / "best.pt").is_file()

    # what it ran on, in the CSV, the report and each checkpoint (--threads 1 applied)
    ran_on = {"torch": torch.__version__, "threads": "1", "device": "cpu"}
    assert all({k: r[k] for k in ran_on} == ran_on for r in results)
    assert "Ran on: torch " in (out / "report.md").read_text()
    runtime = load_checkpoint(out / "fold0" / "pagkd" / "best.pt")["provenance"]["runtime"]
    assert (runtime["threads"], runtime["device"], runtime["torch"]) == (1, "cpu",
                                                                         torch.__version__)


@pytest.mark.parametrize("method, words", [("paired_oracle", ["paired_oracle", "unpaired",
                                                             "bench"]),
                                           ("no_such_method", ["unknown method", "pagkd"])])
def test_cv_refuses_bad_method(tmp_path: Path, capsys, method: str, words: list[str]) -> None:
    rc = main(["cv", "--data-root", str(tmp_path), "--method", method, *TINY])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("pagkd-lite cv: error:")
    for w in words:
        assert w in err
    with pytest.raises(ValueError, match="unpaired"):
        check_method("paired_oracle")
    assert "paired_oracle" not in CV_METHODS and "pagkd" in CV_METHODS


def test_cv_data_root_errors(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["cv", "--folds", "2", *TINY])
    assert exc.value.code == 2
    assert "--data-root" in capsys.readouterr().err

    missing = tmp_path / "nowhere"
    rc = main(["cv", "--data-root", str(missing), "--folds", "2", *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and str(missing) in err and "not a folder" in err


def _toy_sets(n: int = 24) -> dict:
    """WLI and NBI sets of blank 32 px images, one lesion per patient, 2 classes."""
    out = {}
    for m in ("WLI", "NBI"):
        out[m] = ImageSet(images=torch.zeros(n, 3, 32, 32, dtype=torch.uint8),
                          labels=torch.arange(n) % 2,
                          patient_ids=[f"{m}-p{i}" for i in range(n)],
                          lesion_ids=[f"{m}-l{i}" for i in range(n)],
                          class_names=["a", "b"], modality=m)
    return out


def test_run_cv_checks_folds_before_training() -> None:
    sets = _toy_sets()
    cfg = override(smoke(), ["data.image_size=32", "device=cpu"])
    folds = lesion_folds(sets, 2, 0)
    with pytest.raises(ValueError, match="exactly once"):
        run_cv(cfg, sets, folds[:1], "wli_only", log=None)
    bad = [dict(f) for f in folds]
    val = bad[1]["wli_val"]
    keep = val[sets["WLI"].labels[val] == 0]          # validation without class "b"
    bad[1]["wli_train"] = torch.sort(torch.cat([bad[1]["wli_train"],
                                                val[sets["WLI"].labels[val] == 1]]))[0]
    bad[1]["wli_val"] = keep
    with pytest.raises(ValueError, match=r"fold 1: wli_val has no images of class\(es\) \['b'\]"):
        run_cv(cfg, sets, bad, "wli_only", log=None)
    with pytest.raises(ValueError, match="paired"):
        run_cv(cfg, sets, folds, "paired_oracle", log=None)
    assert set(fold_sets(sets, folds[0])) == set(FOLD_KEYS)
    assert sum(len(f["wli_test"]) for f in folds) == len(sets["WLI"])


def test_unpaired_folds_keep_training_lesions_apart() -> None:
    paired = _toy_sets(32)
    for m in ("WLI", "NBI"):                                    # the same lesions in both
        paired[m].lesion_ids = [f"L{i}" for i in range(32)]
    folds = lesion_folds(paired, 2, 0, group_by="lesion")
    for fold, new in zip(folds, unpaired_folds(paired, folds, 0, group_by="lesion"),
                         strict=True):
        w = {paired["WLI"].lesion_ids[i] for i in new["wli_train"].tolist()}
        n = {paired["NBI"].lesion_ids[i] for i in new["nbi_train"].tolist()}
        before = {paired["WLI"].lesion_ids[i] for i in fold["wli_train"].tolist()}
        assert before and not w & n and w | n == before
        for key in ("wli_val", "wli_test", "nbi_val", "nbi_test"):
            assert torch.equal(new[key], fold[key])
        check_disjoint(new, paired, group_by="lesion")
