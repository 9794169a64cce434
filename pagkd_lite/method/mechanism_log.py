"""The mechanism log's numbers: what GKD-Den sees and does on a probe, a fixed held-out batch.

After every epoch :func:`pagkd_lite.training.train.fit` hands the probe
(:func:`pagkd_lite.training.mechanism.make_probe`) to ``distiller.after_epoch``: PaGKD and its
variants report :func:`mechanism_metrics` (GKD-Den over all same-class pairs), the image-level
dense baselines ``pseudo_pair`` and ``paired_oracle`` :func:`pair_mechanism_metrics`
(``pair_loss`` on the pairs they use: fixed pseudo pairs, or the twins); both go through ONE
implementation of the numbers, :func:`probe_metrics`. The numbers join the epoch's log
(``history``), so a learner can plot, epoch by epoch, why a method transfers or does not:

* ``label_acc_w``, ``label_acc_n``: token-label accuracy against the labels that the TRUE
  masks give (the same pooling and thresholds, :func:`pagkd_lite.method.cam.token_labels`),
  over the tokens whose true label is certain; an uncertain prediction counts as wrong.
* ``relation_agree``: ``1 - mean |R - R*|`` over the pairs the loss compares (PaGKD: the
  probe's same-class pairs), ``R`` from the labels the loss uses, ``R*`` from the true ones
  (1 = the relation maps are the true ones).
* ``common_share``: the share of the L_Den cosine's numerator carried by the common component.
  Per pair (WLI queries NBI) and over its valid rows ``V``, with ``H`` the attended map and
  ``T`` the WLI tokens the loss compares (centred if ``den.center``)::

      sum_{i in V} <H_i, T_i> = |V| <mean_V H, mean_V T>                      (common)
                              + sum_{i in V} <H_i - mean_V H, T_i - mean_V T>  (spatial)

  ``common_share = sum_pairs common / sum_pairs (common + spatial)``: near 1, the loss cannot
  tell where things are; it only asks the maps to share a mean token.
* ``attn_entropy``: mean over valid rows of ``-sum_j A_ij log A_ij / log hw_n`` (1 = uniform
  attention, 0 = one key per query).
* ``cam_auc_w``: AUC of the student's raw Grad-CAM at the token grid against the true lesion
  tokens (pooled mask >= 0.5): 0.5 is chance.
* ``adapter_drift``: how far the teacher-side adapter has moved from its start,
  ``||W - W_0|| / ||W_0||`` (Frobenius norms of the 1x1 weight): with the default target
  L_Den trains it, so the target itself moves; with ``den.target=teacher`` only GKD-Pro does.

Without masks only ``common_share``, ``attn_entropy`` and ``adapter_drift`` are reported.
Nothing here changes a weight: the distiller runs in eval mode and the CAM's gradients never
reach ``.grad``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..models.classifier import eval_mode
from .batch import StepBatch
from .cam import grad_cam, token_labels
from .gkd_den import center_tokens, pair_loss, relation_maps


def rank_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties (equals ``roc_auc_score``); also the AUC
    of :mod:`pagkd_lite.training.metrics`."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def beats_chance(distiller, probe: StepBatch, num_classes: int) -> bool:
    """The student's accuracy on the probe's WLI images exceeds chance ``1/K`` by two binomial
    standard errors, ``2 sqrt(p (1 - p) / n)`` with ``p = 1/K``."""
    with eval_mode(distiller), torch.no_grad():
        pred = distiller.student(probe.x_w).logits.argmax(1)
    n, p = len(pred), 1.0 / num_classes
    acc = float((pred == probe.y_w).float().mean())
    return acc > p + 2 * math.sqrt(p * (1 - p) / n)


def _label_accuracy(pred: torch.Tensor, true: torch.Tensor) -> float:
    certain = true >= 0
    if not bool(certain.any()):
        return float("nan")
    return float((pred[certain] == true[certain]).float().mean())


def _common_share(h: torch.Tensor, t: torch.Tensor, valid: torch.Tensor) -> float:
    """``sum common / sum (common + spatial)`` of the docstring above; ``h, t (P, hw, d)``."""
    v = valid[..., None].to(h.dtype)
    n = v.sum(1).clamp_min(1)                                         # (P, 1)
    h_mean, t_mean = (h * v).sum(1) / n, (t * v).sum(1) / n           # (P, d)
    common = n[:, 0] * (h_mean * t_mean).sum(-1)
    total = (h * t * v).sum((1, 2))
    return float(common.sum() / total.sum()) if float(total.sum()) != 0 else float("nan")


def probe_metrics(cfg, labels, probe: StepBatch, tok_w: torch.Tensor, lab_w: torch.Tensor,
                  tok_n: torch.Tensor, lab_n: torch.Tensor, iw: torch.Tensor, inb: torch.Tensor,
                  attn: torch.Tensor, valid: torch.Tensor,
                  cam_w: torch.Tensor) -> dict[str, float]:
    """The numbers of the module docstring from what one L_Den computation saw on ``probe``,
    the one implementation for every method: the tokens as handed to the loss (before
    ``den.center``) ``tok_w (B_w, hw, d)``, ``tok_n (B_n, hw, d)``, their token labels
    ``lab_w (B_w, hw)``, ``lab_n (B_n, hw)``, the loss's pairs (WLI positions ``iw (P,)``,
    NBI positions ``inb (P,)``), the attention of each pair's WLI queries over its NBI
    tokens ``attn (P, hw_w, hw_n)`` with its valid rows ``valid (P, hw_w)``, and the student's
    raw Grad-CAM ``cam_w (B_w, h, w)`` at the token grid. ``cfg``: the ``den`` settings;
    ``labels``: the token-label settings (the thresholds the true masks are cut at)."""
    tok_w, tok_n = tok_w.detach().float(), tok_n.detach().float()
    attn = attn.detach().float()
    if cfg.center:
        tok_w, tok_n = center_tokens(tok_w), center_tokens(tok_n)
    h = attn @ tok_n[inb]
    a = attn.clamp_min(1e-30)
    ent = -(attn * a.log()).sum(-1) / math.log(attn.shape[-1])
    record = {"common_share": _common_share(h, tok_w[iw], valid),
              "attn_entropy": float(ent[valid].mean())}
    if probe.mask_w is None or probe.mask_n is None:
        return record
    hw = tuple(cam_w.shape[-2:])
    true_w = token_labels(probe.mask_w[:, 0], hw, high=labels.high, low=labels.low)
    true_n = token_labels(probe.mask_n[:, 0], hw, high=labels.high, low=labels.low)
    r_used = relation_maps(lab_w[iw], lab_n[inb])
    r_true = relation_maps(true_w[iw], true_n[inb])
    lesion = F.adaptive_avg_pool2d(probe.mask_w, hw)[:, 0].flatten() >= 0.5
    cams = cam_w.flatten().cpu().numpy()
    positive = lesion.cpu().numpy()
    cam_auc = rank_auc(cams, positive) if 0 < positive.sum() < len(positive) else np.nan
    record.update(label_acc_w=_label_accuracy(lab_w, true_w),
                  label_acc_n=_label_accuracy(lab_n, true_n),
                  relation_agree=float(1 - (r_used - r_true).abs().mean()),
                  cam_auc_w=float(cam_auc))
    return record


def adapter_drift(distiller) -> float:
    """``||W - W_0|| / ||W_0||`` of the distiller's teacher-side adapter (module docstring)."""
    start = distiller.adapter_start
    now = distiller.adapter.weight.detach().to(start.device, start.dtype)
    return float((now - start).norm() / start.norm())


def mechanism_metrics(distiller, probe: StepBatch) -> dict[str, float]:
    """The numbers of the module docstring for a distiller with GKD-Den (``distiller.den``)
    on ``probe``, over all its same-class pairs; only the mask-free ones when the probe has no
    masks."""
    with eval_mode(distiller), torch.enable_grad():
        out = distiller.student(probe.x_w)
        t = distiller.teacher_pass(probe.x_n, probe.y_n, want_cam=not distiller.needs_masks)
        tok_w, lab_w, tok_d, lab_n = distiller.den_inputs(probe, out, t)
        cam_w = grad_cam(out.logits, out.features, probe.y_w)
    with torch.no_grad():
        tok_w, tok_d = tok_w.detach().float(), tok_d.detach().float()
        det = distiller.den(tok_w, probe.y_w, lab_w, tok_d, probe.y_n, lab_n,
                            return_details=True)
        record = probe_metrics(distiller.den_cfg, distiller.label_cfg, probe, tok_w, lab_w,
                               tok_d, lab_n, det["pairs"][:, 0], det["pairs"][:, 1],
                               det["attn_w"], det["valid_rows_w"], cam_w)
    return {**record, "adapter_drift": adapter_drift(distiller)}


def pair_mechanism_metrics(distiller, probe: StepBatch) -> dict[str, float]:
    """The same numbers for the image-level dense baselines (``pseudo_pair``,
    ``paired_oracle``): :func:`~pagkd_lite.method.gkd_den.pair_loss` on the pairs
    ``distiller.probe_pairs(probe)`` gives (fixed pseudo pairs; the twins, for which the probe
    must be paired: ``make_probe(..., paired=True)``)."""
    with eval_mode(distiller), torch.enable_grad():
        out = distiller.student(probe.x_w)
        t = distiller.teacher_pass(probe.x_n, probe.y_n, want_cam=True)
        lab_w, lab_n = distiller.token_labels(probe, out, t.cam)
        cam_w = grad_cam(out.logits, out.features, probe.y_w)
    with torch.no_grad():
        tok_w, tok_n = out.tokens.detach().float(), t.tokens.detach().float()
        iw, inb = distiller.probe_pairs(probe)
        if len(iw) == 0:
            return {}
        det = pair_loss(tok_w[iw], lab_w[iw], tok_n[inb], lab_n[inb], distiller.den_cfg,
                        return_details=True)
        return probe_metrics(distiller.den_cfg, distiller.label_cfg, probe, tok_w, lab_w, tok_n,
                             lab_n, iw, inb, det["attn_w"], det["valid_rows_w"], cam_w)
