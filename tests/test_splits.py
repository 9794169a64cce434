"""Leakage-free folds across modalities, manifest folds, duplicates, unpairing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pagkd_lite.data.imageset import ImageSet
from pagkd_lite.data.realdata import RealDataConfig, load_dataset
from pagkd_lite.data.splits import (
    FOLD_KEYS,
    LeakageError,
    check_disjoint,
    group_ids,
    lesion_folds,
    unpair,
)

CLASSES = ["adenoma", "hyperplastic", "serrated"]


def _set(modality: str, rows: list[tuple[int, str, str]], meta: dict | None = None) -> ImageSet:
    """An ImageSet of tiny blank images from (label, patient, lesion) rows."""
    return ImageSet(images=torch.zeros(len(rows), 3, 2, 2, dtype=torch.uint8),
                    labels=torch.tensor([r[0] for r in rows]),
                    patient_ids=[r[1] for r in rows], lesion_ids=[r[2] for r in rows],
                    class_names=list(CLASSES), modality=modality, meta=meta or {})


def cohort(n_patients: int = 24, seed: int = 0, paired: bool = False) -> dict[str, ImageSet]:
    """Patients with 1-2 lesions each, 1-3 images per lesion and modality; unpaired
    cohorts still share some patients between WLI and NBI (the hard case for leakage)."""
    rng = np.random.default_rng(seed)
    rows = {"WLI": [], "NBI": []}
    for p in range(n_patients):
        for les in range(int(rng.integers(1, 3))):
            label = int(rng.integers(0, 3))
            lesion = f"P{p}-L{les}"
            mods = ("WLI", "NBI") if paired or rng.random() < 0.5 else (("WLI",), ("NBI",))[
                int(rng.integers(0, 2))]
            for m in mods:
                rows[m] += [(label, f"P{p}", lesion)] * int(rng.integers(1, 4))
    return {m: _set(m, r) for m, r in rows.items()}


def _ids(sets, fold, part, kind):
    attr = "patient_ids" if kind == "patient" else "lesion_ids"
    return {getattr(sets[m], attr)[i] for m in sets for i in fold[f"{m.lower()}_{part}"].tolist()}


@pytest.mark.parametrize("group_by", ["patient", "lesion"])
def test_folds_disjoint_across_modalities(group_by):
    sets = cohort()
    folds = lesion_folds(sets, k=4, seed=0, group_by=group_by)
    assert len(folds) == 4
    kinds = ("patient", "lesion") if group_by == "patient" else ("lesion",)
    for fold in folds:
        assert set(fold) == set(FOLD_KEYS)
        check_disjoint(fold, sets, group_by=group_by)
        for kind in kinds:   # independent check: WLI test vs ANY training/val image
            wli_test = {getattr(sets["WLI"], f"{kind}_ids")[i] for i in fold["wli_test"].tolist()}
            assert not wli_test & (_ids(sets, fold, "train", kind) | _ids(sets, fold, "val", kind))
        for m in sets:   # train/val/test partition each modality
            parts = torch.cat([fold[f"{m.lower()}_{p}"] for p in ("train", "val", "test")])
            assert sorted(parts.tolist()) == list(range(len(sets[m])))
        assert len(fold["wli_val"]) > 0
    for m in sets:       # the test folds partition each modality
        tests = torch.cat([f[f"{m.lower()}_test"] for f in folds])
        assert sorted(tests.tolist()) == list(range(len(sets[m])))


def test_folds_deterministic_and_seed_dependent():
    sets = cohort()
    a, b = lesion_folds(sets, 3, seed=1), lesion_folds(sets, 3, seed=1)
    c = lesion_folds(sets, 3, seed=2)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in FOLD_KEYS)
    assert any(not torch.equal(x["wli_test"], y["wli_test"])
               for x, y in zip(a, c, strict=True))


def test_folds_stratified():
    rows = {m: [(c, f"P{m}{c}{i}", f"L{m}{c}{i}") for c in range(3) for i in range(10)]
            for m in ("WLI", "NBI")}
    sets = {m: _set(m, r) for m, r in rows.items()}
    for fold in lesion_folds(sets, k=5, seed=0):
        for m in sets:
            counts = torch.bincount(sets[m].labels[fold[f"{m.lower()}_test"]], minlength=3)
            assert counts.tolist() == [2, 2, 2], counts


def test_group_ids_link_patients_through_shared_lesion():
    sets = {"WLI": _set("WLI", [(0, "A", "x"), (0, "B", "y")]),
            "NBI": _set("NBI", [(0, "C", "x"), (0, "B", "z")])}
    g = group_ids(sets, "patient")
    assert g["WLI"][0] == g["NBI"][0] and g["WLI"][1] == g["NBI"][1]
    g = group_ids(sets, "lesion")
    assert g["WLI"][0] == g["NBI"][0] and g["WLI"][1] != g["NBI"][1]


def test_check_disjoint_names_offending_ids():
    sets = {"WLI": _set("WLI", [(0, "P1", "L1"), (1, "P2", "L2")]),
            "NBI": _set("NBI", [(0, "P1", "L9"), (1, "P3", "L3")])}
    t = torch.tensor
    fold = {"wli_train": t([1]), "wli_val": t([], dtype=torch.long), "wli_test": t([0]),
            "nbi_train": t([0, 1]), "nbi_val": t([], dtype=torch.long),
            "nbi_test": t([], dtype=torch.long)}
    with pytest.raises(LeakageError, match="patient id.* in both test and train: P1"):
        check_disjoint(fold, sets)
    check_disjoint(fold, sets, group_by="lesion")   # lesions differ: fine by lesion


def test_too_few_groups():
    sets = {m: _set(m, [(0, "P1", "L1"), (1, "P2", "L2")]) for m in ("WLI", "NBI")}
    with pytest.raises(ValueError, match="cannot make k=5 folds from 2 patient"):
        lesion_folds(sets, 5, seed=0)


def test_manifest_fold_column_used_and_checked():
    rows = [(c, f"P{i}", f"L{i}") for i, c in enumerate([0, 1, 2, 0, 1, 2])]
    sets = {m: _set(m, rows, meta={"fold": [0, 0, 1, 1, 2, 2]}) for m in ("WLI", "NBI")}
    with pytest.warns(UserWarning, match="manifest defines 3 folds"):
        folds = lesion_folds(sets, 5, seed=0, val_fraction=0)
    assert [f["wli_test"].tolist() for f in folds] == [[0, 1], [2, 3], [4, 5]]
    leaky = {"WLI": sets["WLI"],
             "NBI": _set("NBI", rows, meta={"fold": [1, 0, 1, 1, 2, 2]})}
    with pytest.raises(LeakageError, match="manifest fold 0"):
        lesion_folds(leaky, 3, seed=0)


def test_identical_bytes_land_in_one_fold(tmp_path):
    """Same bytes under two names (and modalities): the loader merges their lesions, so
    the folds keep them together (sha256 checked on the loaded sets)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "d"
    for m in ("WLI", "NBI"):
        for cls in ("adenoma", "hyperplastic"):
            for j in range(4):
                p = root / m / cls / f"{m}{cls}{j}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)).save(p)
    src = root / "WLI" / "adenoma" / "WLIadenoma0.png"
    (root / "WLI" / "adenoma" / "dup_a.png").write_bytes(src.read_bytes())
    (root / "NBI" / "adenoma" / "dup_b.png").write_bytes(src.read_bytes())
    sets, report = load_dataset(RealDataConfig(root=str(root), image_size=4))
    assert len(report.duplicates) == 1 and len(report.duplicates[0]) == 3
    sha = {m: sets[m].meta["sha256"] for m in sets}
    target = sha["WLI"][[Path(p).name for p in sets["WLI"].paths].index("dup_a.png")]
    for seed in range(4):
        for fold in lesion_folds(sets, k=4, seed=seed, group_by="lesion"):
            where = {part for m in sets for part in ("train", "val", "test")
                     for i in fold[f"{m.lower()}_{part}"].tolist() if sha[m][i] == target}
            assert len(where) == 1, where


def test_unpair_gives_disjoint_lesions_stratified():
    sets = cohort(n_patients=40, seed=3, paired=True)
    out = unpair(sets, seed=0)
    wl, nl = set(out["wli_lesions"]), set(out["nbi_lesions"])
    assert wl and nl and not wl & nl
    assert wl | nl == set(sets["WLI"].lesion_ids) | set(sets["NBI"].lesion_ids)
    assert {sets["WLI"].lesion_ids[i] for i in out["wli_train"].tolist()} == wl
    assert {sets["NBI"].lesion_ids[i] for i in out["nbi_train"].tolist()} == nl
    lesion_label = {les: int(lab) for s in sets.values()
                    for les, lab in zip(s.lesion_ids, s.labels, strict=True)}
    for c in range(3):   # each class dealt about evenly
        nw = sum(lesion_label[x] == c for x in wl)
        nn = sum(lesion_label[x] == c for x in nl)
        assert abs(nw - nn) <= 1, (c, nw, nn)
    again = unpair(sets, seed=0)
    assert torch.equal(again["wli_train"], out["wli_train"])


def test_unpair_within_a_fold():
    sets = cohort(n_patients=30, seed=4, paired=True)
    fold = lesion_folds(sets, k=3, seed=0)[0]
    out = unpair(sets, seed=1, fold=fold)
    assert set(out["wli_train"].tolist()) <= set(fold["wli_train"].tolist())
    assert set(out["nbi_train"].tolist()) <= set(fold["nbi_train"].tolist())
    assert not set(out["wli_lesions"]) & set(out["nbi_lesions"])
    new = {**fold, "wli_train": out["wli_train"], "nbi_train": out["nbi_train"]}
    check_disjoint(new, sets)
    assert out["dropped"]["WLI"] + len(out["wli_train"]) == len(fold["wli_train"])
