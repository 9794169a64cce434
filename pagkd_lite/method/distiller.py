"""The Distiller contract (mdistiller's), the teacher side, and PaGKD itself.

A distiller wraps the student (and, where used, the frozen teacher and the extra trainable
modules). ``forward_train(batch, epoch)`` returns ``(logits, losses)`` where ``losses``
names every term (``ce``, ``den``, ``con``, ``pcls``, ``kd``) and ``total`` is what is
back-propagated; ``learnable_parameters()`` is what the optimiser gets; ``train()`` keeps
the teacher in eval mode.

PaGKD step (docs/method.md, Stage 2)::

    L = CE(f_S(x), y) + lambda_den * L_Den + lambda_pro * (L_con + L_pcls)

with the group terms switched on after ``warmup_epochs``. Teacher tokens come from a
trainable 1x1 adapter on the DETACHED teacher feature map. The references and baselines
PaGKD is measured against are in :mod:`pagkd_lite.method.baselines`; the registry of methods by
name in :mod:`pagkd_lite.method.distill`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models.accel import at_least_float32
from ..models.classifier import Classifier, freeze
from .batch import StepBatch
from .cam import TokenLabelConfig, cam_token_labels, flip_labels, grad_cam, token_labels
from .gkd_den import GKDDen, GKDDenConfig
from .gkd_pro import GKDPro
from .mechanism_log import beats_chance, mechanism_metrics


class Distiller(nn.Module):
    """Cross-entropy only: the ``wli_only`` baseline, and the teacher's own training.

    The base class declares every capability the training loop asks about: ``needs_nbi``,
    ``paired``, ``needs_masks`` (what a step's batch must hold), ``warmup_epochs`` and
    ``ramp_epochs``, :attr:`generator` and :attr:`group_pool`. Distillers that use the frozen
    teacher are :class:`TeacherSide` subclasses.
    """

    needs_nbi = False
    paired = False
    needs_masks = False  # ground-truth lesion masks in the batch (references only)
    warmup_epochs = 0  # distillation terms join the loss from this epoch on
    ramp_epochs = 0  # ... and ramp up linearly over this many epochs (0: at once)
    #: the stream of the distiller's own random draws (pseudo pairs):
    #: :func:`~pagkd_lite.training.train.fit` seeds it every epoch; None (outside ``fit``):
    #: torch's global stream
    generator: torch.Generator | None = None
    #: which images the unpaired groups are drawn from (``groups.pool``: ``"all"`` or
    #: ``"authors"``, :class:`pagkd_lite.data.sampler.GroupConfig`); set from the run's config
    #: by :func:`pagkd_lite.method.distill.build_distiller`
    group_pool: str = "all"

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
            ramp = self.ramp(epoch)
            for term in terms:
                total = total + (term if ramp == 1.0 else ramp * term)
        losses["total"] = total
        return out.logits, losses

    def ramp(self, epoch: int) -> float:
        """Factor on the distillation terms at ``epoch``: ``min(1, (epoch - warmup + 1) / R)``
        with ``R = train.lambda_ramp_epochs`` (0: no ramp, always 1)."""
        r = self.ramp_epochs
        return 1.0 if r == 0 else min(1.0, (epoch - self.warmup_epochs + 1) / r)

    def after_epoch(self, epoch: int, probe: StepBatch | None) -> dict[str, float]:
        """Called by :func:`pagkd_lite.training.train.fit` after each epoch's steps with a fixed
        held-out ``probe`` batch (validation images; None when the run has none). Returns
        numbers for the epoch's log; never changes a weight. Default: nothing."""
        return {}

    def distill_losses(self, batch: StepBatch, out) -> tuple[dict, list]:
        """The method's own losses: ``(named terms for the log, weighted terms to add)``.
        Cross-entropy only: none."""
        return {}, []


class WLIOnly(Distiller):
    """``wli_only``: the student on WLI with cross-entropy alone; the teacher is not used."""

    def __init__(self, student: Classifier, teacher: Classifier | None = None, cfg=None,
                 num_classes: int = 0) -> None:
        super().__init__(student)


@dataclass
class TeacherPass:
    """One pass of the frozen teacher over NBI inputs x_n (:meth:`TeacherSide.teacher_pass`).

    tokens (B, hw, d): the teacher map through the trainable adapter (the gradient reaches the
    adapter only); logits (B, K), detached; cam (B, h, w): the teacher's Grad-CAM of the true
    class, or None when not asked for; own_tokens (B, hw, d_T): the teacher's own tokens,
    ``teacher(x_n).tokens`` (its embedding on the same backbone map), detached.
    """

    tokens: torch.Tensor
    logits: torch.Tensor
    cam: torch.Tensor | None
    own_tokens: torch.Tensor


class TeacherSide(Distiller):
    """The distillers that use the frozen teacher's feature map and the trainable 1x1
    ``adapter``: :meth:`teacher_pass` / :meth:`teacher_forward` (teacher tokens, logits,
    Grad-CAM), :meth:`teacher_tokens`, :meth:`cam_labels` and :meth:`token_labels`, the loss
    settings ``den_cfg`` and the token-label settings ``label_cfg``. ``pagkd`` and its
    ablations and variants, ``oracle_masks``, ``pseudo_pair`` and ``paired_oracle`` are
    TeacherSide; the tools that need these parts (explore, embedding, diagnose) test
    ``isinstance(distiller, TeacherSide)``."""

    needs_nbi = True

    def __init__(self, student: Classifier, teacher: Classifier, den: GKDDenConfig,
                 labels: TokenLabelConfig) -> None:
        super().__init__(student, teacher)
        self.den_cfg, self.label_cfg = den, labels
        # labels.source="mask" (references only): every step's batch carries the true masks
        self.needs_masks = labels.source == "mask"
        # Trainable 1x1 adapter on the detached teacher map -> the student's token space.
        self.adapter = nn.Conv2d(teacher.feature_channels, student.cfg.dim, kernel_size=1,
                                 bias=student.cfg.token_bias)
        # the adapter as drawn (not state: a rebuilt distiller draws the same), for the
        # mechanism log's adapter_drift
        self.adapter_start = self.adapter.weight.detach().clone()

    def adapt(self, feats: torch.Tensor) -> torch.Tensor:
        """Teacher feature map (B, C_T, h, w) -> teacher tokens (B, h*w, d) through the
        trainable 1x1 adapter; the map is detached, so no gradient reaches the teacher."""
        return self.adapter(feats.detach()).flatten(2).transpose(1, 2)

    def teacher_tokens(self, x_n: torch.Tensor) -> torch.Tensor:
        """Adapted teacher tokens (B, h*w, d) of NBI inputs, without the CAM."""
        with torch.no_grad():
            feats = self.teacher.backbone(x_n)[-1]
        return self.adapt(feats)

    def teacher_pass(self, x_n: torch.Tensor, y_n: torch.Tensor, want_cam: bool) -> TeacherPass:
        """Everything the distillers take from the frozen teacher on NBI inputs, from ONE
        pass of its backbone (:class:`TeacherPass`). No gradient reaches the teacher."""
        with torch.no_grad():
            feats = self.teacher.backbone(x_n)[-1]
        cam = None
        with torch.enable_grad():
            leaf = feats.detach().requires_grad_(want_cam)
            logits, own = self.teacher.head(leaf)
            if want_cam:
                cam = grad_cam(logits, leaf, y_n)
        return TeacherPass(tokens=self.adapt(feats), logits=logits.detach(), cam=cam,
                           own_tokens=own.detach())

    def teacher_forward(self, x_n: torch.Tensor, y_n: torch.Tensor, want_cam: bool):
        """Teacher tokens through the adapter (B, hw, d), teacher logits, and the teacher's
        Grad-CAM of the true class (B, h, w) or None (:meth:`teacher_pass`, as a tuple)."""
        t = self.teacher_pass(x_n, y_n, want_cam)
        return t.tokens, t.logits, t.cam

    def cam_labels(self, batch: StepBatch, out, cam_n: torch.Tensor) -> dict[str, torch.Tensor]:
        """Student Grad-CAM, then both CAMs -> tri-state token labels by the one chain
        :func:`pagkd_lite.method.cam.cam_token_labels` (one batched call), with every
        intermediate: ``cam_w (B_w, h, w)``, ``refined (B_w + B_n, H', W')`` (WLI rows first;
        the map the labels were read from: the PAR-refined map, or the raw CAM when
        ``labels.par_iters == 0``), ``lab_w (B_w, h*w)``, ``lab_n (B_n, h*w)`` in {1, 0, -1}."""
        cam_w = grad_cam(out.logits, out.features, batch.y_w)
        hw = tuple(out.features.shape[-2:])
        labels, refined = cam_token_labels(torch.cat([batch.img_w, batch.img_n]),
                                           torch.cat([cam_w, cam_n]), hw, self.label_cfg)
        b = len(cam_w)
        return {"cam_w": cam_w, "refined": refined, "lab_w": labels[:b], "lab_n": labels[b:]}

    def token_labels(self, batch: StepBatch, out, cam_n: torch.Tensor | None):
        """Token labels (B, h*w) of the WLI and the NBI images: from the CAMs
        (:meth:`cam_labels`), or with ``labels.source = "mask"`` from the batch's true masks
        (average-pooled to the token grid, cut at ``labels.high`` / ``labels.low``; ``cam_n``
        is then unused); then, with ``labels.flip_rate`` > 0, a share of the certain ones
        flipped (:func:`~pagkd_lite.method.cam.flip_labels`, WLI draws first)."""
        cfg = self.label_cfg
        if cfg.source == "mask":
            hw = tuple(out.features.shape[-2:])
            lab_w, lab_n = (token_labels(m[:, 0], hw, high=cfg.high, low=cfg.low)
                            for m in (batch.mask_w, batch.mask_n))
        else:
            parts = self.cam_labels(batch, out, cam_n)
            lab_w, lab_n = parts["lab_w"], parts["lab_n"]
        return (flip_labels(lab_w, cfg.flip_rate, self.generator),
                flip_labels(lab_n, cfg.flip_rate, self.generator))


class PaGKD(TeacherSide):
    """PaGKD: cross-entropy + GKD-Den + GKD-Pro over unpaired same-class groups.

    ``use_pro`` / ``use_den`` switch the modules (ablations ``pagkd_no_pro`` and
    ``pagkd_no_den``); ``use_mask`` / ``two_way`` (None: as in ``cfg.den``) replace those
    GKD-Den settings (ablations ``pagkd_no_mask`` and ``pagkd_one_way``).
    """

    def __init__(self, student, teacher, cfg, num_classes: int, use_pro: bool = True,
                 use_den: bool = True, use_mask: bool | None = None,
                 two_way: bool | None = None) -> None:
        den = cfg.den
        if use_mask is not None:
            den = dataclasses.replace(den, use_mask=use_mask)
        if two_way is not None:
            den = dataclasses.replace(den, two_way=two_way)
        super().__init__(student, teacher, den, cfg.labels)
        self.use_pro, self.use_den = use_pro, use_den
        self.lambda_den, self.lambda_pro = cfg.train.lambda_den, cfg.train.lambda_pro
        self.warmup_epochs = cfg.train.warmup_epochs
        self.ramp_epochs = cfg.train.lambda_ramp_epochs
        self.pro = GKDPro(cfg.pro, num_classes, cfg.model.dim) if use_pro else None
        self.den = GKDDen(den) if use_den else None
        self.num_classes = num_classes
        if use_den and den.target == "teacher":
            # variant (a): a fixed target; the trainable map sits on the student side
            self.projector = nn.Linear(student.cfg.dim, teacher.cfg.dim, bias=False)
        if use_den and den.wli_gate:
            # variant (e): saved with the weights, so a resumed run keeps the gate's state
            self.register_buffer("gate_open", torch.zeros((), dtype=torch.bool))

    def den_inputs(self, batch: StepBatch, out, t: TeacherPass):
        """What L_Den is computed on, from the student's output ``out`` and the step's
        :class:`TeacherPass` ``t``: ``(tokens_w (B_w, hw, d'), lab_w (B_w, hw), tokens_n
        (B_n, hw, d'), lab_n (B_n, hw))``. By default the student's tokens and the adapted
        teacher tokens ``t.tokens``; with ``den.target="teacher"`` the projected student tokens
        and the frozen teacher's own tokens ``t.own_tokens`` (no gradient); with
        ``den.wli_gate`` and the gate closed, every WLI token label is uncertain (-1)."""
        lab_w, lab_n = self.token_labels(batch, out, t.cam)
        if self.den_cfg.wli_gate and not bool(self.gate_open):
            lab_w = torch.full_like(lab_w, -1)
        tok_w, tok_n = out.tokens, t.tokens
        if self.den_cfg.target == "teacher":
            tok_n = at_least_float32(t.own_tokens)
            tok_w = self.projector(at_least_float32(tok_w))
        return tok_w, lab_w, tok_n, lab_n

    def after_epoch(self, epoch: int, probe: StepBatch | None) -> dict[str, float]:
        """The mechanism in view (:func:`pagkd_lite.method.mechanism_log.mechanism_metrics`) on
        the probe, and, with ``den.wli_gate``, the gate: it opens (for good) once the student's
        accuracy on the probe's WLI images beats chance by two binomial standard errors."""
        if probe is None or not self.use_den:
            return {}
        record = mechanism_metrics(self, probe)
        if self.den_cfg.wli_gate:
            if not bool(self.gate_open) and beats_chance(self, probe, self.num_classes):
                self.gate_open.fill_(True)
            record["wli_gate"] = float(self.gate_open)
        return record

    def distill_losses(self, batch: StepBatch, out):
        losses, terms = {}, []
        t = self.teacher_pass(batch.x_n, batch.y_n,
                              want_cam=self.use_den and not self.needs_masks)
        tok_n = t.tokens
        if self.use_den:
            tok_w, lab_w, tok_d, lab_n = self.den_inputs(batch, out, t)
            den = self.den(tok_w, batch.y_w, lab_w, tok_d, batch.y_n, lab_n)
            losses["den"] = den["den"]
            terms.append(self.lambda_den * den["den"])
        if self.use_pro:
            pro = self.pro(out.tokens, batch.y_w, tok_n, batch.y_n)
            losses["con"], losses["pcls"] = pro["con"], pro["pcls"]
            terms.append(self.lambda_pro * (pro["con"] + pro["pcls"]))
        return losses, terms
