"""The references and baselines PaGKD is measured against, and its variant with logit KD.

References (not methods: they use what real data does not have): ``paired_hint`` (a FitNets
token hint on TRUE, pixel-aligned pairs), ``class_hint`` (the same hint on same-class pairs of
different lesions) and ``paired_oracle`` (GKD-Den's loss on true pairs); ``oracle_masks`` is
PaGKD with ``labels.source=mask`` (:class:`OracleMasks`). Image-level baselines:
``pseudo_pair`` (GKD-Den's loss on random same-class pairs) and ``logit_kd`` (each WLI image
toward the teacher's mean soft prediction of its class). ``pagkd_logit``: PaGKD plus the
``logit_kd`` term (variant (f) of ``benchmarks/PREREGISTERED.md``). Every class follows the
:class:`~pagkd_lite.method.distiller.Distiller` contract.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from ..models.accel import at_least_float32, float32_region
from ..models.classifier import Classifier
from .distiller import Distiller, PaGKD, StepBatch, TeacherSide
from .gkd_den import pair_loss
from .mechanism_log import pair_mechanism_metrics


class OracleMasks(PaGKD):
    """Reference, not a method: PaGKD with ``labels.source = "mask"``, token labels from
    SynthEndo's ground-truth lesion masks instead of Grad-CAM + PAR
    (:meth:`~pagkd_lite.method.distiller.TeacherSide.token_labels`: the mask, under the
    batch's augmentation, average-pooled to the token grid and cut at ``labels.high`` /
    ``labels.low`` like a refined CAM). Everything else is ``pagkd``'s, so
    ``oracle_masks - pagkd`` measures what perfect token labels would add;
    ``labels.flip_rate`` still applies (the label dose-response corrupts these labels)."""

    needs_masks = True

    def __init__(self, student, teacher, cfg, num_classes: int, **options) -> None:
        cfg = dataclasses.replace(cfg, labels=dataclasses.replace(cfg.labels, source="mask"))
        super().__init__(student, teacher, cfg, num_classes, **options)


def same_class_partners(y_w: torch.Tensor, y_n: torch.Tensor,
                        generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """For each WLI image with a same-class NBI image in the step, one such image drawn
    uniformly: ``(wli positions (P,), nbi positions (P,))``."""
    same = (y_w[:, None] == y_n[None, :]).float()
    has = same.sum(1) > 0
    pick = torch.multinomial(same[has].cpu(), 1, generator=generator).flatten()
    return has.nonzero().flatten(), pick.to(y_w.device)


class PairedHint(Distiller):
    """Reference, not a method: a FitNets-style hint (Romero et al., ICLR 2015) on TRUE,
    pixel-aligned pairs, the strongest dense signal pairs can give. x_n[i] is the NBI
    rendering of x_w[i] under the SAME rotation and flip
    (:func:`pagkd_lite.training.train.fit` gives the twins one geometric draw), so token p of
    one is token p of the other::

        L_hint = mean_{i, p} ( 1 - cos( r(T^S_i[p]), T^T_i[p] ) )

    with T^S (B, hw, d) the student's tokens, T^T (B, hw, d_T) the frozen teacher's own
    tokens on the twin, and r a trainable 1x1 regressor on the STUDENT side. The trainable
    map sits on the student side (as in FitNets), not on the teacher side as PaGKD's
    adapter does: with a fixed target the loss cannot be met by both sides collapsing to a
    common constant vector. Weight: ``train.lambda_hint``.
    """

    needs_nbi = True
    paired = True

    def __init__(self, student, teacher, cfg, num_classes: int) -> None:
        super().__init__(student, teacher)
        self.regressor = nn.Linear(student.cfg.dim, teacher.cfg.dim)
        self.lambda_hint = cfg.train.lambda_hint
        self.warmup_epochs = cfg.train.warmup_epochs
        self.ramp_epochs = cfg.train.lambda_ramp_epochs

    def partners(self, batch: StepBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(WLI positions, NBI positions) of the hint's pairs: the twins, index by index."""
        idx = torch.arange(batch.y_w.shape[0], device=batch.y_w.device)
        return idx, idx

    def distill_losses(self, batch: StepBatch, out):
        iw, in_ = self.partners(batch)
        with torch.no_grad():
            target = at_least_float32(self.teacher(batch.x_n[in_]).tokens)   # (P, hw, d_T)
        with float32_region(target):
            pred = self.regressor(at_least_float32(out.tokens[iw]))          # (P, hw, d_T)
            hint = (1.0 - F.cosine_similarity(pred, target, dim=-1)).mean()
        return {"hint": hint}, [self.lambda_hint * hint]


class ClassHint(PairedHint):
    """Control for ``paired_hint``: the SAME hint loss, but each WLI image is paired with a
    random NBI image of its class from the unpaired NBI batch (a different lesion, another
    patient, its own augmentation). ``paired_hint - class_hint`` is what pixel-aligned pairing
    adds over class-level guidance through the same loss; ``class_hint - wli_only`` is what
    a class-level token hint gives on its own."""

    paired = False

    def partners(self, batch: StepBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return same_class_partners(batch.y_w, batch.y_n, self.generator)


class PseudoPair(TeacherSide):
    """Image-level baseline: each WLI image gets ONE random NBI image of its class in the
    step as a pseudo partner, and the dense loss is applied per pair.

    After each epoch, :meth:`after_epoch` logs the mechanism numbers on the probe for the
    pairs of :meth:`probe_pairs`
    (:func:`pagkd_lite.method.mechanism_log.pair_mechanism_metrics`)."""

    #: seed of the probe's pseudo pairs: the same pairs every epoch, the training draws untouched
    probe_seed = 0

    def __init__(self, student, teacher, cfg, num_classes: int) -> None:
        super().__init__(student, teacher, cfg.den, cfg.labels)
        self.lambda_den = cfg.train.lambda_den
        self.warmup_epochs = cfg.train.warmup_epochs
        self.ramp_epochs = cfg.train.lambda_ramp_epochs

    def pairs(self, batch: StepBatch):
        return same_class_partners(batch.y_w, batch.y_n, self.generator)

    def probe_pairs(self, probe: StepBatch):
        """The pairs the mechanism numbers are measured on: pseudo pairs drawn with
        :attr:`probe_seed` (not from the training generator)."""
        return same_class_partners(probe.y_w, probe.y_n,
                                   torch.Generator().manual_seed(self.probe_seed))

    def after_epoch(self, epoch: int, probe: StepBatch | None) -> dict[str, float]:
        """The mechanism numbers (:mod:`pagkd_lite.method.mechanism_log`) of the dense loss on
        the probe's :meth:`probe_pairs`; nothing without a probe. Changes no weight."""
        if probe is None:
            return {}
        return pair_mechanism_metrics(self, probe)

    def distill_losses(self, batch: StepBatch, out):
        tok_n, _, cam_n = self.teacher_forward(batch.x_n, batch.y_n, want_cam=True)
        lab_w, lab_n = self.token_labels(batch, out, cam_n)
        iw, in_ = self.pairs(batch)
        den = pair_loss(out.tokens[iw], lab_w[iw], tok_n[in_], lab_n[in_], self.den_cfg)
        return {"den": den["den"]}, [self.lambda_den * den["den"]]


class PairedOracle(PseudoPair):
    """Dense distillation on TRUE pairs: x_n[i] is the NBI rendering of x_w[i]. Its probe
    must hold true pairs too (``make_probe(..., paired=True)``: the NBI twins of the probe's
    WLI images)."""

    paired = True

    def pairs(self, batch: StepBatch):
        idx = torch.arange(batch.y_w.shape[0], device=batch.y_w.device)
        return idx, idx

    def probe_pairs(self, probe: StepBatch):
        return self.pairs(probe)


class LogitKD(Distiller):
    """Image-level logit distillation without pairs (Hinton et al., 2015, made unpaired):

        L_kd = T^2 * KL( mean_{n in G_c^N} softmax(z_T(n) / T)  ||  softmax(z_S(m) / T) )

    for every WLI image m of class c; WLI images whose class has no NBI image in the step
    are left out of L_kd.
    """

    needs_nbi = True

    def __init__(self, student, teacher, cfg, num_classes: int) -> None:
        super().__init__(student, teacher)
        self.t = cfg.train.kd_temperature
        self.lambda_kd = cfg.train.lambda_kd
        self.warmup_epochs = cfg.train.warmup_epochs
        self.ramp_epochs = cfg.train.lambda_ramp_epochs
        self.num_classes = num_classes

    def distill_losses(self, batch: StepBatch, out):
        kd = unpaired_logit_kd(self.teacher, batch, out.logits, self.t, self.num_classes)
        return {"kd": kd}, [self.lambda_kd * kd]


def unpaired_logit_kd(teacher: Classifier, batch: StepBatch, logits_s: torch.Tensor, t: float,
                      num_classes: int) -> torch.Tensor:
    """``L_kd`` of :class:`LogitKD`: every WLI image (logits ``(B_w, K)``) toward the mean of
    the teacher's softened predictions over the step's NBI images of its class; 0 (with a
    gradient, finite) when no WLI image's class has an NBI image in the step."""
    with torch.no_grad():
        logits_t = at_least_float32(teacher(batch.x_n).logits)
    with torch.no_grad(), float32_region(logits_t):
        p_t = F.softmax(logits_t / t, dim=1)                             # (Bn, K)
        onehot = F.one_hot(batch.y_n, num_classes).float().T             # (K, Bn)
        counts = onehot.sum(1, keepdim=True)
        class_mean = (onehot @ p_t) / counts.clamp_min(1)                # (K, K)
        keep = counts.flatten()[batch.y_w] > 0
    if not bool(keep.any()):  # no WLI class of the step has an NBI image: nothing to match
        return logits_s.sum() * 0.0  # (a batchmean over no row would be 0 / 0 = NaN)
    with float32_region(logits_t):
        log_p_s = F.log_softmax(at_least_float32(logits_s[keep]) / t, dim=1)
        target = class_mean[batch.y_w[keep]]
        return F.kl_div(log_p_s, target, reduction="batchmean") * t**2


class PaGKDLogit(PaGKD):
    """Variant (f) of ``benchmarks/PREREGISTERED.md``: ``pagkd``'s loss plus ``logit_kd``'s,
    ``L = CE + lambda_den L_Den + lambda_pro (L_con + L_pcls) + lambda_kd L_kd``, to ask whether
    the group losses add anything to class-level logit distillation."""

    def __init__(self, student, teacher, cfg, num_classes: int) -> None:
        super().__init__(student, teacher, cfg, num_classes)
        self.t, self.lambda_kd = cfg.train.kd_temperature, cfg.train.lambda_kd

    def distill_losses(self, batch: StepBatch, out):
        losses, terms = super().distill_losses(batch, out)
        kd = unpaired_logit_kd(self.teacher, batch, out.logits, self.t, self.num_classes)
        losses["kd"] = kd
        return losses, [*terms, self.lambda_kd * kd]
