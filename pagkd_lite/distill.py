"""Distillers: one object per training method, with the mdistiller contract.

A distiller wraps the student (and, where used, the frozen teacher and the extra trainable
modules). ``forward_train(batch, epoch)`` returns ``(logits, losses)`` where ``losses``
names every term (``ce``, ``den``, ``con``, ``pcls``, ``kd``) and ``total`` is what is
back-propagated; ``learnable_parameters()`` is what the optimiser gets; ``train()`` keeps
the teacher in eval mode.

PaGKD step (docs/method.md, Stage 2)::

    L = CE(f_S(x), y) + lambda_den * L_Den + lambda_pro * (L_con + L_pcls)

with the group terms switched on after ``warmup_epochs``. Teacher tokens come from a
trainable 1x1 adapter on the DETACHED teacher feature map.

Methods: ``wli_only``; ``pagkd`` and its ablations ``pagkd_no_pro``, ``pagkd_no_den``,
``pagkd_no_mask`` (plain cross-attention), ``pagkd_one_way`` (WLI queries NBI only); the
image-level baselines ``pseudo_pair`` (random same-class pairs, dense loss per pair) and
``logit_kd`` (each WLI image toward the teacher's mean softened prediction over the
same-class NBI images of the step); ``paired_oracle`` (dense loss on TRUE pairs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .accel import at_least_float32, float32_region
from .cam import grad_cam, par_refine, token_labels
from .gkd_den import GKDDen, GKDDenConfig, pair_loss
from .gkd_pro import GKDPro
from .models import Classifier, freeze


@dataclass
class StepBatch:
    """One training step's tensors (already on the device and augmented).

    x_w (B, 3, H, W) normalised WLI input, img_w the same in [0, 1] (for PAR), y_w (B,).
    x_n, img_n, y_n: the NBI batch (same class composition, no pairing), or for
    ``paired_oracle`` the NBI twins of the WLI images, aligned index by index.
    """

    x_w: torch.Tensor
    img_w: torch.Tensor
    y_w: torch.Tensor
    x_n: torch.Tensor | None = None
    img_n: torch.Tensor | None = None
    y_n: torch.Tensor | None = None


class Distiller(nn.Module):
    """Cross-entropy only: the ``wli_only`` baseline, and the teacher's own training."""

    needs_nbi = False
    paired = False
    warmup_epochs = 0  # distillation terms join the loss from this epoch on

    def __init__(self, student: Classifier, teacher: Classifier | None = None) -> None:
        super().__init__()
        self.student = student
        self.teacher = freeze(teacher) if teacher is not None else None

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def learnable_parameters(self) -> list[nn.Parameter]:
        """Everything but the teacher."""
        return [p for n, p in self.named_parameters() if not n.startswith("teacher.")]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The state that a checkpoint needs (the teacher is saved once, separately)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`trainable_state_dict`; any other missing or extra key raises."""
        result = self.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("teacher.")]
        if missing or result.unexpected_keys:
            raise KeyError(f"{type(self).__name__}: state does not match (missing {missing}, "
                           f"unexpected {result.unexpected_keys})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x).logits

    def forward_train(self, batch: StepBatch, epoch: int):
        """``total = CE + sum of the method's weighted terms`` (after the warm-up), added in
        the order :meth:`distill_losses` gives them."""
        out = self.student(batch.x_w)
        ce = F.cross_entropy(out.logits, batch.y_w)
        losses, total = {"ce": ce}, ce
        if epoch >= self.warmup_epochs:
            named, terms = self.distill_losses(batch, out)
            losses.update(named)
            for term in terms:
                total = total + term
        losses["total"] = total
        return out.logits, losses

    def distill_losses(self, batch: StepBatch, out) -> tuple[dict, list]:
        """The method's own losses: ``(named terms for the log, weighted terms to add)``.
        Cross-entropy only: none."""
        return {}, []


class _TeacherSide(Distiller):
    """Shared parts of the distillers that use the teacher: adapter, CAM, token labels."""

    needs_nbi = True

    def __init__(self, student: Classifier, teacher: Classifier, den: GKDDenConfig) -> None:
        super().__init__(student, teacher)
        self.den_cfg = den
        # Trainable 1x1 adapter on the detached teacher map -> the student's token space.
        self.adapter = nn.Conv2d(teacher.feature_channels, student.cfg.dim, kernel_size=1)

    def teacher_forward(self, x_n: torch.Tensor, y_n: torch.Tensor, want_cam: bool):
        """Teacher tokens through the adapter (B, hw, d), teacher logits, and the teacher's
        Grad-CAM of the true class (B, h, w) or None. No gradient reaches the teacher."""
        with torch.no_grad():
            feats = self.teacher.backbone(x_n)[-1]
        cam = None
        with torch.enable_grad():
            leaf = feats.detach().requires_grad_(want_cam)
            logits, _ = self.teacher.head(leaf)
            if want_cam:
                cam = grad_cam(logits, leaf, y_n)
        tokens = self.adapter(feats.detach()).flatten(2).transpose(1, 2)
        return tokens, logits.detach(), cam

    def token_labels(self, batch: StepBatch, out, cam_n: torch.Tensor):
        """Student Grad-CAM, then both CAMs -> PAR refinement -> tri-state token labels
        (B, h*w) in {1, 0, -1} for the WLI and the NBI images (one batched PAR call)."""
        cam_w = grad_cam(out.logits, out.features, batch.y_w)
        refined = par_refine(torch.cat([batch.img_w, batch.img_n]), torch.cat([cam_w, cam_n]))
        hw = tuple(out.features.shape[-2:])
        labels = token_labels(refined, hw, high=self.den_cfg.high, low=self.den_cfg.low)
        return labels[: len(cam_w)], labels[len(cam_w) :]


class PaGKD(_TeacherSide):
    """PaGKD: cross-entropy + GKD-Den + GKD-Pro over unpaired same-class groups.

    ``use_pro`` / ``use_den`` switch the modules (ablations ``pagkd_no_pro`` and
    ``pagkd_no_den``); the GKD-Den settings (mask, one-way) come from ``den``.
    """

    def __init__(self, student, teacher, cfg, num_classes: int, use_pro=True, use_den=True):
        super().__init__(student, teacher, cfg.den)
        self.use_pro, self.use_den = use_pro, use_den
        self.lambda_den, self.lambda_pro = cfg.train.lambda_den, cfg.train.lambda_pro
        self.warmup_epochs = cfg.train.warmup_epochs
        self.pro = GKDPro(cfg.pro, num_classes) if use_pro else None
        self.den = GKDDen(cfg.den) if use_den else None

    def distill_losses(self, batch: StepBatch, out):
        losses, terms = {}, []
        tok_n, _, cam_n = self.teacher_forward(batch.x_n, batch.y_n, want_cam=self.use_den)
        if self.use_den:
            lab_w, lab_n = self.token_labels(batch, out, cam_n)
            den = self.den(out.tokens, batch.y_w, lab_w, tok_n, batch.y_n, lab_n)
            losses["den"] = den["den"]
            terms.append(self.lambda_den * den["den"])
        if self.use_pro:
            pro = self.pro(out.tokens, batch.y_w, tok_n, batch.y_n)
            losses["con"], losses["pcls"] = pro["con"], pro["pcls"]
            terms.append(self.lambda_pro * (pro["con"] + pro["pcls"]))
        return losses, terms


class PseudoPair(_TeacherSide):
    """Image-level baseline: each WLI image gets ONE random NBI image of its class in the
    step as a pseudo partner, and the dense loss is applied per pair."""

    def __init__(self, student, teacher, cfg, num_classes: int) -> None:
        super().__init__(student, teacher, cfg.den)
        self.lambda_den = cfg.train.lambda_den
        self.warmup_epochs = cfg.train.warmup_epochs
        self.generator: torch.Generator | None = None

    def partners(self, y_w: torch.Tensor, y_n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For each WLI image with a same-class NBI image in the step, one such image at
        random: returns (wli positions, nbi positions)."""
        same = (y_w[:, None] == y_n[None, :]).float()
        has = same.sum(1) > 0
        pick = torch.multinomial(same[has].cpu(), 1, generator=self.generator).flatten()
        return has.nonzero().flatten(), pick.to(y_w.device)

    def pairs(self, batch: StepBatch):
        return self.partners(batch.y_w, batch.y_n)

    def distill_losses(self, batch: StepBatch, out):
        tok_n, _, cam_n = self.teacher_forward(batch.x_n, batch.y_n, want_cam=True)
        lab_w, lab_n = self.token_labels(batch, out, cam_n)
        iw, in_ = self.pairs(batch)
        den = pair_loss(out.tokens[iw], lab_w[iw], tok_n[in_], lab_n[in_], self.den_cfg)
        return {"den": den["den"]}, [self.lambda_den * den["den"]]


class PairedOracle(PseudoPair):
    """Dense distillation on TRUE pairs: x_n[i] is the NBI rendering of x_w[i]."""

    paired = True

    def pairs(self, batch: StepBatch):
        idx = torch.arange(batch.y_w.shape[0], device=batch.y_w.device)
        return idx, idx


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
        self.num_classes = num_classes

    def distill_losses(self, batch: StepBatch, out):
        with torch.no_grad():
            logits_t = at_least_float32(self.teacher(batch.x_n).logits)
        with torch.no_grad(), float32_region(logits_t):
            p_t = F.softmax(logits_t / self.t, dim=1)                        # (Bn, K)
            onehot = F.one_hot(batch.y_n, self.num_classes).float().T        # (K, Bn)
            counts = onehot.sum(1, keepdim=True)
            class_mean = (onehot @ p_t) / counts.clamp_min(1)                # (K, K)
            keep = counts.flatten()[batch.y_w] > 0
        with float32_region(logits_t):
            log_p_s = F.log_softmax(at_least_float32(out.logits[keep]) / self.t, dim=1)
            target = class_mean[batch.y_w[keep]]
            kd = F.kl_div(log_p_s, target, reduction="batchmean") * self.t**2
        return {"kd": kd}, [self.lambda_kd * kd]


def build_distiller(method: str, student: Classifier, teacher: Classifier | None, cfg,
                    num_classes: int) -> Distiller:
    """The distiller for a method name (see ``config.METHODS``)."""
    if method == "wli_only":
        return Distiller(student)
    if teacher is None:
        raise ValueError(f"method {method!r} needs a trained teacher")
    if method in ("pagkd", "pagkd_no_pro", "pagkd_no_den", "pagkd_no_mask", "pagkd_one_way"):
        den = cfg.den
        if method == "pagkd_no_mask":
            den = dataclasses.replace(den, use_mask=False)
        if method == "pagkd_one_way":
            den = dataclasses.replace(den, two_way=False)
        cfg = dataclasses.replace(cfg, den=den)
        return PaGKD(student, teacher, cfg, num_classes,
                     use_pro=method != "pagkd_no_pro", use_den=method != "pagkd_no_den")
    if method == "pseudo_pair":
        return PseudoPair(student, teacher, cfg, num_classes)
    if method == "paired_oracle":
        return PairedOracle(student, teacher, cfg, num_classes)
    if method == "logit_kd":
        return LogitKD(student, teacher, cfg, num_classes)
    from .config import METHODS

    raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
