"""Leakage-free cross-validation folds and unpairing for WLI/NBI data.

The paper's protocol is 5-fold cross-validation with predictions pooled over folds. In
PaGKD the WLI student is trained with an NBI teacher, so a fold must keep a test
patient (or lesion) out of *every* training image, WLI and NBI alike. The folds here are
computed on the union of both modalities:

* Groups. Images are linked when they share a lesion id (always) or a patient id
  (``group_by="patient"``), across modalities; a group is a connected component of that
  graph. With ``group_by="patient"`` a lesion seen under two patient ids (e.g. after the
  loader merged identical images) joins the two patients, so no shortcut leaks.
* Stratification. ``sklearn.model_selection.StratifiedGroupKFold`` on the union, with
  the stratum ``modality x class`` so that every fold gets a similar share of each class
  in each modality.
* Validation. Carved from each fold's training part by a second group split
  (``val_fraction`` of the groups, stratified the same way).
* Manifest folds. If every ImageSet has ``meta["fold"]`` (a ``fold`` column in the
  manifest), those folds are used as test folds instead of computed ones, and checked.

Every fold is checked by :func:`check_disjoint` before it is returned.

:func:`unpair` turns a *paired* data set (the same lesions imaged in WLI and NBI) into
an unpaired one for training: each lesion group goes either to WLI training or to NBI
training, never both, balanced per class. This is the "paired set used unpaired"
protocol: it halves the training images per modality, which is the price of a clean
pairing-free comparison (training on both views of each lesion is the paired oracle).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold

from pagkd_lite.data.imageset import MODALITIES, ImageSet

FOLD_KEYS = ("wli_train", "wli_val", "wli_test", "nbi_train", "nbi_val", "nbi_test")
GROUP_BY = ("patient", "lesion")


class LeakageError(ValueError):
    """A test (or validation) patient/lesion also appears in training."""


def _check_sets(sets: dict[str, ImageSet]) -> list[str]:
    mods = [m for m in MODALITIES if m in sets]
    extra = set(sets) - set(MODALITIES)
    if extra or not mods:
        raise ValueError(f"sets must map some of {MODALITIES} to ImageSets, got keys "
                         f"{sorted(sets)}")
    names = {m: list(sets[m].class_names) for m in mods}
    if len({tuple(v) for v in names.values()}) > 1:
        raise ValueError(f"WLI and NBI ImageSets have different label spaces: {names}")
    return mods


class UnionFind:
    """Disjoint sets of hashable, orderable ids; the smallest id of a set is its root.

    ``find(x)`` adds ``x`` as its own set on first sight (path halving); ``union(a, b)``
    joins two sets. Used for patient/lesion groups here and duplicate merges in
    :mod:`pagkd_lite.data.realdata`.
    """

    def __init__(self) -> None:
        self.parent: dict = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def group_ids(sets: dict[str, ImageSet], group_by: str = "patient") -> dict[str, np.ndarray]:
    """Per modality, an int array giving each image's group (shared across modalities).

    Images share a group when linked by a common lesion id, or (``group_by="patient"``)
    a common patient id, transitively, across both modalities.
    """
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {GROUP_BY}, got {group_by!r}")
    mods = _check_sets(sets)
    uf = UnionFind()
    for m in mods:
        for pat, les in zip(sets[m].patient_ids, sets[m].lesion_ids, strict=True):
            uf.find(("L", str(les)))
            if group_by == "patient":
                uf.union(("L", str(les)), ("P", str(pat)))
    index: dict[tuple[str, str], int] = {}
    out = {}
    for m in mods:
        g = []
        for les in sets[m].lesion_ids:
            g.append(index.setdefault(uf.find(("L", str(les))), len(index)))
        out[m] = np.asarray(g, dtype=np.int64)
    return out


def _union(sets: dict[str, ImageSet], mods: list[str], group_by: str):
    """Flattened (modality index, local index, stratum, group) over both modalities."""
    groups = group_ids(sets, group_by)
    n_cls = sets[mods[0]].num_classes
    mod_i, local, strata, grp = [], [], [], []
    for mi, m in enumerate(mods):
        n = len(sets[m])
        mod_i.append(np.full(n, mi))
        local.append(np.arange(n))
        strata.append(mi * n_cls + sets[m].labels.numpy())
        grp.append(groups[m])
    return (np.concatenate(mod_i), np.concatenate(local), np.concatenate(strata),
            np.concatenate(grp))


def _group_split(positions: np.ndarray, strata: np.ndarray, groups: np.ndarray,
                 n_splits: int, seed: int) -> list[np.ndarray]:
    """Test positions of each split of ``positions`` (StratifiedGroupKFold)."""
    y = strata[positions]
    if np.bincount(y).max() < n_splits:
        # sklearn refuses when every stratum is smaller than n_splits; stratifying is
        # meaningless then, so fall back to a shuffled group split (one stratum).
        y = np.zeros_like(y)
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        return [positions[test] for _, test in
                sgkf.split(np.zeros(len(positions)), y, groups[positions])]


def _carve_val(train: np.ndarray, strata: np.ndarray, groups: np.ndarray,
               val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if val_fraction <= 0 or len(train) == 0:
        return train, train[:0]
    n_groups = len(np.unique(groups[train]))
    n_splits = min(max(2, round(1.0 / val_fraction)), n_groups)
    if n_splits < 2:
        warnings.warn("a fold's training part has a single group: no validation split",
                      stacklevel=3)
        return train, train[:0]
    val = _group_split(train, strata, groups, n_splits, seed)[0]
    return np.setdiff1d(train, val), val


def _fold_dict(mods, mod_i, local, parts: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    fold = {}
    for m in MODALITIES:
        for part in ("train", "val", "test"):
            sel = np.zeros(0, dtype=np.int64)
            if m in mods:
                pos = parts[part]
                sel = np.sort(local[pos[mod_i[pos] == mods.index(m)]])
            fold[f"{m.lower()}_{part}"] = torch.as_tensor(sel, dtype=torch.long)
    return fold


def lesion_folds(sets: dict[str, ImageSet], k: int, seed: int, group_by: str = "patient",
                 val_fraction: float = 0.2) -> list[dict[str, torch.Tensor]]:
    """K leakage-free folds over WLI and NBI together.

    Args:
        sets: ``{"WLI": ImageSet, "NBI": ImageSet}`` with one label space.
        k: number of folds (ignored, with a warning if different, when the ImageSets
            carry manifest folds in ``meta["fold"]``).
        seed: shuffling seed (folds are deterministic given it).
        group_by: ``"patient"`` (default; also keeps lesions together) or ``"lesion"``.
        val_fraction: share of each fold's training groups moved to validation (0: none).

    Returns:
        A list of k dicts with index tensors into each modality's ImageSet:
        ``wli_train, wli_val, wli_test, nbi_train, nbi_val, nbi_test``. The test parts
        partition each modality; no test group appears in train or val of either
        modality (checked).
    """
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {GROUP_BY}, got {group_by!r}")
    if not 0 <= val_fraction < 1:  # also refuses nan
        raise ValueError(f"val_fraction must be >= 0 and < 1, got {val_fraction}")
    mods = _check_sets(sets)
    mod_i, local, strata, groups = _union(sets, mods, group_by)
    everything = np.arange(len(mod_i))

    has_fold = [m for m in mods if "fold" in sets[m].meta]
    if has_fold and len(has_fold) != len(mods):
        raise ValueError(f"manifest folds present for {has_fold} only; give a fold for "
                         f"every image of every modality, or none")
    if has_fold:
        fold_of = np.concatenate([np.asarray(sets[m].meta["fold"]) for m in mods])
        fold_values = sorted(set(fold_of.tolist()))
        if len(fold_values) < 2:
            raise ValueError(f"the manifest's fold column has one value only {fold_values}: "
                             f"cross-validation needs at least 2 folds (or drop the column "
                             f"to let the kit make k={k} folds)")
        if len(fold_values) != k:
            warnings.warn(f"manifest defines {len(fold_values)} folds {fold_values}; "
                          f"k={k} ignored", stacklevel=2)
        tests = [everything[fold_of == f] for f in fold_values]
    else:
        n_groups = len(np.unique(groups))
        if k < 2 or n_groups < k:
            fix = (f"--folds {n_groups} or fewer" if n_groups >= 2 else "more data")
            if group_by != "lesion":
                fix += ", or --group-by lesion"
            raise ValueError(f"cannot make k={k} folds from {n_groups} {group_by} group(s); "
                             f"need 2 <= k <= number of groups ({fix})")
        names = sets[mods[0]].class_names
        for s in np.unique(strata):
            n_g = len(np.unique(groups[strata == s]))
            if n_g < k:
                m, c = mods[s // len(names)], names[s % len(names)]
                warnings.warn(f"{m} class {c!r} spans only {n_g} {group_by} group(s) for "
                              f"k={k} folds: some test folds will have no {m} {c!r} images",
                              stacklevel=2)
        tests = _group_split(everything, strata, groups, k, seed)

    folds = []
    for i, test in enumerate(tests):
        rest = np.setdiff1d(everything, test)
        train, val = _carve_val(rest, strata, groups, val_fraction, seed + 1000 + i)
        fold = _fold_dict(mods, mod_i, local, {"train": train, "val": val, "test": test})
        try:
            check_disjoint(fold, sets, group_by=group_by)
        except LeakageError as e:
            if has_fold:
                raise LeakageError(f"manifest fold {i}: {e}") from None
            raise
        folds.append(fold)
    return folds


def _ids(fold, sets, part: str, kind: str) -> set[str]:
    out: set[str] = set()
    for m in sets:
        ids = sets[m].patient_ids if kind == "patient" else sets[m].lesion_ids
        out.update(str(ids[i]) for i in fold[f"{m.lower()}_{part}"].tolist())
    return out


def check_disjoint(fold: dict, sets: dict[str, ImageSet], group_by: str = "patient") -> None:
    """Raise :class:`LeakageError` naming the offending ids if a test patient/lesion
    appears in training or validation, or a validation one in training (any modality).

    ``group_by="patient"`` checks patient and lesion ids; ``"lesion"`` checks lesion ids
    only (patients may then legitimately span folds).
    """
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {GROUP_BY}, got {group_by!r}")
    _check_sets(sets)
    missing = [k for k in FOLD_KEYS if k not in fold]
    if missing:
        raise ValueError(f"fold is missing keys {missing}")
    kinds = ("patient", "lesion") if group_by == "patient" else ("lesion",)
    problems = []
    for kind in kinds:
        ids = {p: _ids(fold, sets, p, kind) for p in ("train", "val", "test")}
        for a, b in (("test", "train"), ("test", "val"), ("val", "train")):
            both = sorted(ids[a] & ids[b])
            if both:
                shown = ", ".join(both[:10]) + (" ..." if len(both) > 10 else "")
                problems.append(f"{len(both)} {kind} id(s) in both {a} and {b}: {shown}")
    if problems:
        raise LeakageError("fold leaks across splits (WLI and NBI pooled): "
                           + "; ".join(problems))


def unpair(sets: dict[str, ImageSet], seed: int, fold: dict | None = None,
           group_by: str = "lesion") -> dict:
    """Use a paired data set unpaired: each lesion trains one modality only.

    Lesion groups (see :func:`group_ids`; ``group_by="patient"`` keeps a patient's
    lesions on one side) that have images in both modalities are shuffled with ``seed``
    and dealt alternately to WLI and NBI within each class (the majority label of the
    group), so each class is split about evenly and the totals stay balanced; a group
    imaged in one modality only stays with that modality. The other modality's images
    of a dealt group are dropped from training.

    Args:
        sets: ``{"WLI": ImageSet, "NBI": ImageSet}``.
        seed: shuffling seed.
        fold: if given, only its ``wli_train``/``nbi_train`` indices are considered
            (test and val are untouched; use ``{**fold, "wli_train": out["wli_train"],
            "nbi_train": out["nbi_train"]}``).
        group_by: ``"lesion"`` (default) or ``"patient"``.

    Returns:
        ``{"wli_train": idx, "nbi_train": idx, "wli_lesions": [...], "nbi_lesions": [...],
        "dropped": {"WLI": n, "NBI": n}}`` (index tensors into each ImageSet; lesion ids
        sorted; the two lesion lists are disjoint).
    """
    mods = _check_sets(sets)
    if set(mods) != set(MODALITIES):
        raise ValueError("unpair needs both WLI and NBI ImageSets")
    groups = group_ids(sets, group_by)
    cand = {m: (fold[f"{m.lower()}_train"].tolist() if fold is not None
                else list(range(len(sets[m])))) for m in MODALITIES}
    members: dict[int, dict[str, list[int]]] = {}
    for m in MODALITIES:
        for i in cand[m]:
            members.setdefault(int(groups[m][i]), {"WLI": [], "NBI": []})[m].append(i)
    side: dict[int, str] = {}
    paired_by_class: dict[int, list[int]] = {}
    for g, mem in members.items():
        if mem["WLI"] and mem["NBI"]:
            labels = torch.cat([sets[m].labels[mem[m]] for m in MODALITIES])
            label = int(torch.bincount(labels).argmax())
            paired_by_class.setdefault(label, []).append(g)
        else:
            side[g] = "WLI" if mem["WLI"] else "NBI"
    rng = np.random.default_rng(seed)
    offset = 0
    for label in sorted(paired_by_class):
        gs = sorted(paired_by_class[label])
        order = rng.permutation(len(gs))
        for j, pos in enumerate(order):
            side[gs[pos]] = MODALITIES[(j + offset) % 2]
        offset = (offset + len(gs)) % 2
    out: dict = {"dropped": {}}
    for m in MODALITIES:
        keep = sorted(i for g, mem in members.items() if side[g] == m for i in mem[m])
        out[f"{m.lower()}_train"] = torch.as_tensor(keep, dtype=torch.long)
        out[f"{m.lower()}_lesions"] = sorted({sets[m].lesion_ids[i] for i in keep})
        out["dropped"][m] = len(cand[m]) - len(keep)
    return out
