"""Diagnosis against SynthEndo's ground truth: how good are GKD-Den's token labels?

GKD-Den never sees where the lesion is: it estimates it, token by token, from a Grad-CAM
refined by PAR and cut at two thresholds (:mod:`pagkd_lite.method.cam`). SynthEndo knows the true
lesion mask of every image (:func:`pagkd_lite.data.synthendo.lesion_masks`), so here the kit
measures what the method can only estimate. Nothing in this module is used for training.

Truth at the token grid: a token is *lesion* when at least half of its cell lies inside the
true mask (the mask average-pooled to ``h x w``, ``>= 0.5``).

Label quality of tri-state token labels ``L`` in {1 (fg), 0 (bg), -1 (uncertain)}::

    fg precision = P(lesion | L = 1)        fg recall = P(L = 1 | lesion)
    bg precision = P(not lesion | L = 0)    uncertain = P(L = -1)

Relation-map quality: over every same-class WLI x NBI pair, the share of ``R = 1`` entries
(token p of m and token q of n certain with the same label) whose tokens are truly the same
kind (both lesion or both background).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.imageset import ImageSet
from ..data.transforms import prepare
from ..files import atomic_write_text
from ..method.cam import TokenLabelConfig, cam_token_labels, grad_cam
from ..method.distiller import TeacherSide
from ..models.classifier import input_settings


def true_token_labels(masks: Tensor, token_hw: tuple[int, int]) -> Tensor:
    """``(B, 1, H, W)`` masks in [0, 1] (or uint8 0..255) -> ``(B, h*w)`` bool: lesion tokens."""
    m = masks.float() / 255.0 if masks.dtype == torch.uint8 else masks.float()
    return (F.adaptive_avg_pool2d(m, token_hw) >= 0.5).flatten(1)


def label_quality(labels: Tensor, truth: Tensor) -> dict[str, float]:
    """Quality of token labels ``(B, hw)`` in {1, 0, -1} against truth ``(B, hw)`` bool.

    Returns fg_precision, fg_recall, bg_precision, uncertain (shares in [0, 1]; NaN where the
    denominator is empty) and the counts they come from.
    """
    if labels.shape != truth.shape:
        raise ValueError(f"label_quality: labels {tuple(labels.shape)} and truth "
                         f"{tuple(truth.shape)} differ")
    fg, bg, truth = labels == 1, labels == 0, truth.bool()

    def share(num: Tensor, den: Tensor) -> float:
        d = int(den.sum())
        return float((num & den).sum()) / d if d else float("nan")

    return {"fg_precision": share(truth, fg), "fg_recall": share(fg, truth),
            "bg_precision": share(~truth, bg), "uncertain": float((labels == -1).float().mean()),
            "n_tokens": labels.numel(), "n_fg": int(fg.sum()), "n_lesion": int(truth.sum())}


def relation_quality(lab_w: Tensor, lab_n: Tensor, truth_w: Tensor, truth_n: Tensor,
                     y_w: Tensor, y_n: Tensor) -> dict[str, float]:
    """Share of ``R = 1`` entries that are right, over every same-class WLI x NBI pair.

    lab_* ``(B_*, hw)`` token labels, truth_* ``(B_*, hw)`` bool, y_* ``(B_*,)`` classes.
    Returns ``r1_correct`` (NaN when no entry is 1), ``r1_share`` (share of entries that are 1)
    and ``n_pairs``.
    """
    same = y_w[:, None] == y_n[None, :]
    iw, in_ = same.nonzero(as_tuple=True)
    if iw.numel() == 0:
        return {"r1_correct": float("nan"), "r1_share": float("nan"), "n_pairs": 0}
    a, b = lab_w[iw][:, :, None], lab_n[in_][:, None, :]
    r1 = (a >= 0) & (a == b)
    right = truth_w[iw][:, :, None] == truth_n[in_][:, None, :]
    n1 = int(r1.sum())
    return {"r1_correct": float((r1 & right).sum()) / n1 if n1 else float("nan"),
            "r1_share": n1 / r1.numel(), "n_pairs": int(iw.numel())}


def common_share(tokens: Tensor) -> float:
    """How much of a token map is one vector repeated: ``||mean_p t_p||^2 / mean_p ||t_p||^2``
    averaged over images, for tokens ``(B, hw, d)``. 1 = every token of an image is the same
    vector (a constant map: GKD-Den's cosine of flattened maps is then met by any other
    constant map pointing the same way), near 1/hw for unrelated tokens."""
    mean_sq = tokens.mean(dim=1).square().sum(-1)          # (B,)
    sq_mean = tokens.square().sum(-1).mean(dim=1)          # (B,)
    return float((mean_sq / sq_mean.clamp_min(1e-12)).mean())


@dataclass
class Refinement:
    """One way of turning a CAM into token labels, as :class:`TokenLabelConfig` fields for
    :func:`pagkd_lite.method.cam.cam_token_labels` (the chain training uses): ``par_iters = 0``
    means no PAR (the raw CAM, already at the token grid, is cut at the thresholds)."""

    name: str
    par_scale: int = 2
    par_iters: int = 10
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    rule: str = "kit"

    def label_config(self, base: TokenLabelConfig) -> TokenLabelConfig:
        """``base`` (thresholds) with this refinement's PAR settings and label rule."""
        return dataclasses.replace(base, par_scale=self.par_scale, par_iters=self.par_iters,
                                   par_dilations=self.dilations, rule=self.rule)


REFINEMENTS = (
    Refinement("raw CAM (no PAR)", 2, 0),
    Refinement("authors' rule, no PAR", 2, 0, rule="authors"),
    Refinement("authors' rule, PAR half res, 10 it", 2, 10, rule="authors"),
    Refinement("PAR, half res, 10 it (paper)", 2, 10),
    Refinement("PAR, half res, 3 it", 2, 3),
    Refinement("PAR, quarter res, 10 it", 4, 10),
    Refinement("PAR, quarter res, 3 it", 4, 3),
    Refinement("PAR, half res, 10 it, dilations 1,2,4", 2, 10, (1, 2, 4)),
    Refinement("PAR, half res, 10 it, dilations 1,2", 2, 10, (1, 2)),
    Refinement("PAR, half res, 10 it, dilation 1", 2, 10, (1,)),
)


def _cam(model, x: Tensor, y: Tensor) -> Tensor:
    """Grad-CAM ``(B, h, w)`` of class ``y`` for network inputs ``x``, as in training: the
    backbone map, then the head on it (no gradient reaches the model's weights' ``.grad``)."""
    with torch.enable_grad():
        feats = model.backbone(x)[-1].detach().requires_grad_(True)
        logits, _ = model.head(feats)
        return grad_cam(logits, feats, y)


def _cams(model, images: ImageSet, index: Tensor, device) -> tuple[Tensor, Tensor, Tensor]:
    """Grad-CAM of the true class for ``images[index]`` (no augmentation): (cam (B, h, w),
    [0, 1] image (B, 3, H, W), masks (B, 1, H, W) in [0, 1]); ``model``'s input setting."""
    x, img, masks = prepare(images.images[index], device, masks=images.masks[index],
                            norm=input_settings(model)[0])
    return _cam(model, x, images.labels[index].to(device)), img, masks


def diagnose_token_labels(teacher, student, nbi: ImageSet, wli: ImageSet,
                          labels: TokenLabelConfig, n_images: int = 96,
                          device="cpu") -> dict[str, Tensor]:
    """``{"NBI": (B, h*w), "WLI": (B, h*w)}``: the token labels of the teacher's CAM on the
    first ``n_images`` NBI images and the student's on the WLI ones (no augmentation), by
    the chain training uses (:func:`pagkd_lite.method.cam.cam_token_labels` with ``labels``)."""
    device = torch.device(device)
    out = {}
    for name, model, s in (("NBI", teacher, nbi), ("WLI", student, wli)):
        idx = torch.arange(min(n_images, len(s)))
        x, img = prepare(s.images[idx], device, norm=input_settings(model)[0])
        cam = _cam(model, x, s.labels[idx].to(device))
        out[name], _ = cam_token_labels(img, cam, tuple(cam.shape[-2:]), labels)
    return out


def diagnose_labels(teacher, student, nbi: ImageSet, wli: ImageSet, high: float = 0.7,
                    low: float = 0.3, n_images: int = 96, device="cpu",
                    refinements=REFINEMENTS) -> list[dict]:
    """Token-label and relation-map quality of the teacher's CAM on NBI images and the
    student's CAM on WLI images, for each refinement, against the true masks.

    ``teacher``, ``student``: :class:`~pagkd_lite.models.classifier.Classifier` (eval mode is
    set and restored by the caller; no gradient reaches them). ``nbi``, ``wli``: ImageSets
    WITH masks (SynthEndo). The first ``n_images`` of each are used. Returns one row per
    (refinement, modality) with :func:`label_quality`'s keys, plus ``r1_correct`` /
    ``r1_share`` (the same for both rows of a refinement: R is built from both modalities'
    labels).
    """
    for s in (nbi, wli):
        if s.masks is None:
            raise ValueError(f"diagnose_labels: the {s.modality} set has no ground-truth masks "
                             "(SynthEndo has them; real data does not)")
    rows = []
    device = torch.device(device)
    cams = {}
    for name, model, s in (("NBI", teacher, nbi), ("WLI", student, wli)):
        idx = torch.arange(min(n_images, len(s)))
        cams[name] = (*_cams(model, s, idx, device), s.labels[idx].to(device))
    hw = None
    base = TokenLabelConfig(high=high, low=low)
    for ref in refinements:
        labs, truths = {}, {}
        for name, (cam, img, masks, _) in cams.items():
            hw = tuple(cam.shape[-2:])
            labs[name], _ = cam_token_labels(img, cam, hw, ref.label_config(base))
            truths[name] = true_token_labels(masks, hw)
        rel = relation_quality(labs["WLI"], labs["NBI"], truths["WLI"], truths["NBI"],
                               cams["WLI"][3], cams["NBI"][3])
        for name, who in (("NBI", "teacher"), ("WLI", "student")):
            rows.append({"refinement": ref.name, "cam_of": f"{who} on {name}",
                         **label_quality(labs[name], truths[name]),
                         "r1_correct": rel["r1_correct"], "r1_share": rel["r1_share"],
                         "token_grid": f"{hw[0]}x{hw[1]}"})
    return rows


#: the numbers of a label row, in the order of the Markdown table
ROW_NUMBERS = ("fg_precision", "fg_recall", "bg_precision", "uncertain", "r1_correct",
               "r1_share")
#: what identifies a label row (the same row across seeds)
ROW_KEY = ("refinement", "cam_of", "token_grid")
LABEL_TABLE_HEADER = ("| token labels from | CAM of | grid | fg precision | fg recall | "
                      "bg precision | uncertain | R=1 entries right | R=1 share |")


def _cell(row: dict, name: str) -> str:
    """One number of a row, with ``(n)`` when only ``n`` of the row's seeds defined it."""
    text = f"{row[name]:.3f}"
    defined = row.get("defined", {}).get(name)
    return text if defined is None or defined == row.get("seeds") else f"{text} ({defined})"


def format_label_table(rows: list[dict]) -> str:
    """Markdown view of label rows (:func:`diagnose_labels`'s, or the per-row means of
    :func:`mean_rows`, which add a ``seeds`` column)."""
    seeds = any("seeds" in r for r in rows)
    header = LABEL_TABLE_HEADER.replace(" | grid |", " | grid | seeds |") if seeds \
        else LABEL_TABLE_HEADER
    out = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for r in rows:
        cells = [r[k] for k in ROW_KEY] + ([str(r["seeds"])] if seeds else [])
        cells += [_cell(r, name) for name in ROW_NUMBERS]
        out.append(f"| {' | '.join(cells)} |")
    return "\n".join(out)


def mean_rows(tables: list[list[dict]]) -> list[dict]:
    """Per-row means of one table over several seeds' records (rows matched by
    :data:`ROW_KEY`, in the first record's order). A NaN (e.g. a precision with no
    foreground token) is left out of its mean; ``defined`` counts the seeds with a number."""
    out = []
    for first in tables[0]:
        key = tuple(first[k] for k in ROW_KEY)
        rows = [r for table in tables for r in table if tuple(r[k] for k in ROW_KEY) == key]
        mean = {**{k: first[k] for k in ROW_KEY}, "seeds": len(rows), "defined": {}}
        for name in ROW_NUMBERS:
            nums = [r[name] for r in rows if not math.isnan(r[name])]
            mean[name] = sum(nums) / len(nums) if nums else float("nan")
            mean["defined"][name] = len(nums)
        out.append(mean)
    return out


def render_diagnosis(record: dict) -> str:
    """The Markdown view of one diagnosis record (:func:`run_diagnosis`'s data)."""
    return (f"Token labels against SynthEndo's true lesion masks (preset {record['preset']}, "
            f"seed {record['seed']}, test images; student: {record['method']}, val AUC "
            f"{record['student_val_auc']:.3f}).\n\n"
            f"{format_label_table(record['labels'])}\n\nThresholds (paper's PAR):\n\n"
            f"{format_label_table(record['thresholds'])}\n\n"
            "Share of each token map that is one repeated vector (1 = constant map):\n\n"
            + "".join(f"- {k}: {v:.3f}\n" for k, v in record["common_share"].items()))


def write_diagnosis(record: dict, path: str | Path) -> tuple[Path, Path]:
    """The record as data, ``<path>.json`` (what ``benchmarks/diagnose_summary.py`` reads),
    and its Markdown view, ``<path>.md``. Returns both paths."""
    path = Path(path)
    data, view = path.with_suffix(".json"), path.with_suffix(".md")
    atomic_write_text(data, json.dumps(record, indent=1, allow_nan=True) + "\n")
    atomic_write_text(view, render_diagnosis(record))
    return data, view


THRESHOLDS = ((0.7, 0.3), (0.6, 0.4), (0.55, 0.45))


def run_diagnosis(cfg, method: str = "pagkd", out_dir=None, progress: bool = False,
                  n_images: int = 96) -> dict:
    """The label chain of one setting, measured on the TEST splits of ``cfg``'s seed.

    Trains (or loads from ``out_dir``'s cache) the NBI teacher, trains a ``method`` student,
    and measures token labels of both CAMs for every refinement in :data:`REFINEMENTS` at
    ``cfg.labels``' thresholds, and the paper's PAR at every pair in :data:`THRESHOLDS`.
    Also the :func:`common_share` of the student's tokens and of the adapted teacher tokens.
    Returns the diagnosis as data (a record: :func:`write_diagnosis` stores it as JSON,
    :func:`render_diagnosis` shows it as Markdown): ``{"preset", "seed", "method",
    "student_val_auc": float, "labels": rows, "thresholds": rows, "common_share": {name:
    share}}``.
    """
    from ..training.pipeline import make_data, train_student, train_teacher
    from ..training.train import pick_device

    device = pick_device(cfg.device)
    sets = make_data(cfg)
    teacher, _ = train_teacher(cfg, sets, out_dir=out_dir, progress=progress)
    distiller, result = train_student(cfg, sets, method, teacher, progress=progress,
                                      ssl_dir=out_dir)
    student = distiller.student.eval()  # a throwaway student: no mode to restore
    common = {}
    with torch.no_grad():
        norm = input_settings(student)[0]
        x_w = prepare(sets["wli_test"].images[:n_images], device, norm=norm)[0]
        common["student tokens (WLI)"] = common_share(student(x_w).tokens)
        if isinstance(distiller, TeacherSide):
            x_n = prepare(sets["nbi_test"].images[:n_images], device, norm=norm)[0]
            common["adapted teacher tokens (NBI)"] = common_share(distiller.teacher_tokens(x_n))
    labels = diagnose_labels(teacher, student, sets["nbi_test"], sets["wli_test"],
                             cfg.labels.high, cfg.labels.low, n_images, device)
    paper = [r for r in REFINEMENTS if "paper" in r.name]
    thresholds = []
    for high, low in THRESHOLDS:
        for row in diagnose_labels(teacher, student, sets["nbi_test"], sets["wli_test"],
                                   high, low, n_images, device, refinements=paper):
            thresholds.append({**row, "refinement": f"{row['refinement']}, "
                                                    f"high {high} / low {low}"})
    return {"preset": cfg.name, "seed": cfg.seed, "method": method,
            "student_val_auc": result.best_val_auc, "labels": labels,
            "thresholds": thresholds, "common_share": common}
