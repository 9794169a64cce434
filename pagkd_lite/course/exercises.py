"""Checked exercises: ``exercises.check("03.2", answer, **context)``.

Each notebook's exercise has a check cell: the learner sets ``answer`` and runs it. The
check recomputes the expected answer from the library (or from the committed benchmark
CSV) and prints either ``correct`` or a hint that says what is wrong, without giving the
answer away; ``answer = None`` prints what is asked. It returns True only for a right
answer, so the folded solution cells can ``assert`` it (the notebook tests run them).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

# id -> (what is asked, checker(answer, **context) -> None if right, else a hint)
_EXERCISES: dict[str, tuple[str, Callable[..., str | None]]] = {}


def _register(eid: str, asked: str):
    def wrap(fn):
        _EXERCISES[eid] = (asked, fn)
        return fn
    return wrap


def exercise_ids() -> list[str]:
    """The ids of every checked exercise, e.g. ``["00.1", "01.2", ...]``."""
    return sorted(_EXERCISES)


def check(eid: str, answer, **context) -> bool:
    """Check ``answer`` to exercise ``eid``; print the verdict; True only if it is right."""
    if eid not in _EXERCISES:
        raise KeyError(f"exercises.check: no exercise {eid!r}; "
                       f"the checked ones are {exercise_ids()}")
    asked, checker = _EXERCISES[eid]
    if answer is None:
        print(f"{eid}: not answered yet. Expected: {asked}")
        return False
    hint = checker(answer, **context)
    print(f"{eid}: correct" if hint is None else f"{eid}: not yet. {hint}")
    return hint is None


def _close(a, b, tol=1e-6) -> bool:
    return a is not None and b is not None and math.isclose(float(a), float(b), abs_tol=tol)


@_register("00.1", "a tuple (tokens per image, tokens in a group of 8) for the paper preset")
def _paper_tokens(answer, **_) -> str | None:
    import timm

    from ..config import paper

    p = paper()
    net = timm.create_model(p.model.backbone, pretrained=False, features_only=True,
                            out_indices=(p.model.feature_index,))
    side = p.data.image_size // net.feature_info.reduction()[-1]
    if tuple(answer) == (side * side, 8 * side * side):
        return None
    return ("one token per position of the last feature map: (image size / stride)^2, and a "
            "group concatenates the tokens of its images. Read the stride from timm's "
            "feature_info.reduction().")


@_register("01.2", "a list of 6 class indices: the class with the extra image in steps 0-5")
def _remainders(answer, wli_labels, nbi_labels, seed: int, **_) -> str | None:
    import torch

    from ..data.sampler import GroupSampler

    k = int(wli_labels.max()) + 1
    sampler = GroupSampler(wli_labels, nbi_labels, batch_size=10, num_classes=k, seed=seed)
    expected = [int(torch.bincount(wli_labels[sampler.step().wli], minlength=k).argmax())
                for _ in range(6)]
    if [int(a) for a in answer] == expected:
        return None
    return ("build GroupSampler(wli.labels, nbi.labels, batch_size=10, num_classes=K, "
            "seed=SEED), call .step() six times and, per step, take the class whose "
            "bincount is largest.")


@_register("02.2", "the NBI teacher's AUC (a float) on the WLI test set")
def _teacher_on_wli(answer, teacher, wli_test, device, **_) -> str | None:
    from ..training.pipeline import evaluate

    auc = evaluate(teacher, wli_test, device, n_boot=10).metrics["auc"].value
    if _close(answer, auc, 1e-6):
        return None
    return ("score the teacher with pipeline.evaluate on wli_test (not nbi_test) and take "
            "metrics['auc'].value, the point estimate.")


@_register("03.2", "a tuple (n_pairs_skipped, n_con_classes) with the last class's NBI dropped")
def _missing_class(answer, num_classes: int, **_) -> str | None:
    if tuple(int(a) for a in answer) == (1, num_classes - 1):
        return None
    return ("a class present in one modality only cannot be an anchor of L_con: count the "
            "classes present in WLI but not NBI (skipped) and those present in both (used).")


@_register("03.3", "a tuple (lowest, highest) value of the slot similarity s_slot(A, B) / tau")
def _similarity_range(answer, tau: float, **_) -> str | None:
    lo, hi = answer
    if _close(lo, -1 / tau) and _close(hi, 1 / tau):
        return None
    return ("s(A, B) is the MEAN over the N_q slots of a cosine; what range does a mean of "
            "numbers in [-1, 1] have, and what does dividing by tau do to it?")


@_register("04.2", "the attention row (a tensor) of the WLI token whose every NBI match is masked")
def _masked_row(answer, **_) -> str | None:
    import torch

    row = torch.as_tensor(answer, dtype=torch.float64)
    if row.numel() > 0 and bool((row == 0).all()):
        return None
    if row.numel() > 0 and math.isclose(float(row.sum()), 1.0, abs_tol=1e-5):
        return ("this row sums to 1: it is a softmax over unmasked scores. Take the row of a "
                "token where R is 0 for every partner: relation_attention zeroes it.")
    return "take att row 0 of the pair whose WLI token 0 is certain foreground."


def _auc_by(rows: list[dict]) -> dict[tuple[str, str], float]:
    return {(r["method"], r["seed"]): float(r["auc"]) for r in rows}


def _mean_gain(auc: dict, method: str, base: str = "wli_only") -> float | None:
    seeds = [s for (m, s) in auc if m == method and (base, s) in auc]
    return float(np.mean([auc[method, s] - auc[base, s] for s in seeds])) if seeds else None


def oracle_share(rows: list[dict], method: str = "pagkd", oracle: str = "paired_oracle"):
    """Share of the oracle's mean seed-paired AUC gain over ``wli_only`` that ``method``
    recovers, or None where it is undefined: the oracle does not gain (gain <= 0; a ratio
    of two losses, or of anything to a loss, is not a share) or a method is missing."""
    auc = _auc_by(rows)
    g_o, g_m = _mean_gain(auc, oracle), _mean_gain(auc, method)
    if g_o is None or g_m is None or g_o <= 0:
        return None
    return g_m / g_o


@_register("05.1", "the share (a float, 0.5 = half) of the oracle's gain PaGKD recovers, "
                   "or the string 'undefined' where it is not defined")
def _share(answer, rows: list[dict], **_) -> str | None:
    expected = oracle_share(rows)
    if expected is None:
        if answer == "undefined":
            return None
        return ("look at the sign of the oracle's gain first: a share of a gain is only defined "
                "when there is a gain. Where there is none, answer 'undefined'.")
    if isinstance(answer, int | float) and _close(answer, expected, 1e-6):
        return None
    return ("use the seed-paired gains: mean over seeds of AUC(method) - AUC(wli_only), for "
            "pagkd and for paired_oracle, then their ratio.")


@_register("05.3", "the mean over seeds of AUC(pagkd) - AUC(pagkd_no_den), seed by seed")
def _paired_diff(answer, rows: list[dict], **_) -> str | None:
    auc = _auc_by(rows)
    seeds = [s for (m, s) in auc if m == "pagkd" and ("pagkd_no_den", s) in auc]
    expected = np.mean([auc["pagkd", s] - auc["pagkd_no_den", s] for s in seeds])
    value = getattr(answer, "value", answer)
    if _close(value, expected, 1e-9):
        return None
    return "difference within each seed first, then the mean over the seeds both methods have."


@_register("06.1", "a dict {k: mixing of the 'teacher' view} for k = 3, 10 and 30")
def _mixing(answer, x, modality, **_) -> str | None:
    from .embedding import modality_mixing

    if sorted(answer) != [3, 10, 30]:
        return "give one number per k in (3, 10, 30)."
    if all(_close(answer[k], modality_mixing(x, modality, k), 1e-9) for k in (3, 10, 30)):
        return None
    return "use embedding.modality_mixing on the unit-length teacher view X['teacher']."


@_register("07.1", "a dict {'lesion': number of lesion groups, 'patient': number of patients}")
def _groups(answer, sets, **_) -> str | None:
    from ..data import splits

    expected = {}
    for by in ("lesion", "patient"):
        g = splits.group_ids(sets, by)
        expected[by] = len(np.unique(np.concatenate([g["WLI"], g["NBI"]])))
    if dict(answer) == expected:
        return None
    return ("count the distinct group ids over BOTH modalities (a lesion seen in WLI and NBI "
            "is one group).")
