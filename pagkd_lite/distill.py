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
same-class NBI images of the step); ``paired_oracle`` (dense loss on TRUE pairs); the
references ``paired_hint`` (a token hint on true pairs), ``class_hint`` (the same hint on
same-class pairs of different lesions) and ``oracle_masks``; ``pagkd_authors`` (PaGKD with
:data:`AUTHORS_SETTINGS`). The list
lives once, in :data:`METHODS` at the end of this module: a new method is one class and one
entry there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .accel import at_least_float32, float32_region
from .cam import cam_token_labels, grad_cam, token_labels
from .gkd_den import GKDDen, GKDDenConfig, pair_loss
from .gkd_pro import GKDPro
from .models import Classifier, freeze


@dataclass
class StepBatch:
    """One training step's tensors (already on the device and augmented).

    x_w (B, 3, H, W) normalised WLI input, img_w the same in [0, 1] (for PAR), y_w (B,).
    x_n, img_n, y_n: the NBI batch (same class composition, no pairing), or for
    ``paired_oracle`` the NBI twins of the WLI images, aligned index by index.
    mask_w, mask_n (B, 1, H, W): ground-truth lesion masks in [0, 1] under the same
    augmentation, only for distillers with ``needs_masks`` (the ``oracle_masks`` reference).
    """

    x_w: torch.Tensor
    img_w: torch.Tensor
    y_w: torch.Tensor
    x_n: torch.Tensor | None = None
    img_n: torch.Tensor | None = None
    y_n: torch.Tensor | None = None
    mask_w: torch.Tensor | None = None
    mask_n: torch.Tensor | None = None


class Distiller(nn.Module):
    """Cross-entropy only: the ``wli_only`` baseline, and the teacher's own training.

    The base class declares every capability the training loop asks about: ``needs_nbi``,
    ``paired``, ``needs_masks`` (what a step's batch must hold), ``warmup_epochs`` and
    ``ramp_epochs``, and :attr:`generator`. Distillers that use the frozen teacher are
    :class:`TeacherSide` subclasses.
    """

    needs_nbi = False
    paired = False
    needs_masks = False  # ground-truth lesion masks in the batch (references only)
    warmup_epochs = 0  # distillation terms join the loss from this epoch on
    ramp_epochs = 0  # ... and ramp up linearly over this many epochs (0: at once)
    #: the stream of the distiller's own random draws (pseudo pairs): :func:`~pagkd_lite.train.fit`
    #: seeds it every epoch; None (outside ``fit``): torch's global stream
    generator: torch.Generator | None = None

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
        """Called by :func:`pagkd_lite.train.fit` after each epoch's steps with a fixed
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
    Grad-CAM), :meth:`teacher_tokens`, :meth:`cam_labels` and :meth:`token_labels`, and
    ``den_cfg``. ``pagkd`` and its ablations and variants, ``oracle_masks``, ``pseudo_pair``
    and ``paired_oracle`` are TeacherSide; the tools that need these parts (explore, embedding,
    diagnose) test ``isinstance(distiller, TeacherSide)``."""

    needs_nbi = True

    def __init__(self, student: Classifier, teacher: Classifier, den: GKDDenConfig) -> None:
        super().__init__(student, teacher)
        self.den_cfg = den
        # Trainable 1x1 adapter on the detached teacher map -> the student's token space.
        self.adapter = nn.Conv2d(teacher.feature_channels, student.cfg.dim, kernel_size=1,
                                 bias=student.cfg.token_bias)

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
        :func:`pagkd_lite.cam.cam_token_labels` (one batched call), with every
        intermediate: ``cam_w (B_w, h, w)``, ``refined (B_w + B_n, H', W')`` (WLI rows first;
        the map the labels were read from: the PAR-refined map, or the raw CAM when
        ``den.par_iters == 0``), ``lab_w (B_w, h*w)``, ``lab_n (B_n, h*w)`` in {1, 0, -1}."""
        cam_w = grad_cam(out.logits, out.features, batch.y_w)
        hw = tuple(out.features.shape[-2:])
        labels, refined = cam_token_labels(torch.cat([batch.img_w, batch.img_n]),
                                           torch.cat([cam_w, cam_n]), hw, self.den_cfg)
        b = len(cam_w)
        return {"cam_w": cam_w, "refined": refined, "lab_w": labels[:b], "lab_n": labels[b:]}

    def token_labels(self, batch: StepBatch, out, cam_n: torch.Tensor):
        """Token labels (B, h*w) of the WLI and the NBI images (see :meth:`cam_labels`)."""
        parts = self.cam_labels(batch, out, cam_n)
        return parts["lab_w"], parts["lab_n"]


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
        super().__init__(student, teacher, den)
        self.use_pro, self.use_den = use_pro, use_den
        self.lambda_den, self.lambda_pro = cfg.train.lambda_den, cfg.train.lambda_pro
        self.warmup_epochs = cfg.train.warmup_epochs
        self.ramp_epochs = cfg.train.lambda_ramp_epochs
        self.pro = GKDPro(cfg.pro, num_classes) if use_pro else None
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
        """The mechanism in view (:func:`pagkd_lite.mechanism.mechanism_metrics`) on the
        probe, and, with ``den.wli_gate``, the gate: it opens (for good) once the student's
        accuracy on the probe's WLI images beats chance by two binomial standard errors."""
        if probe is None or not self.use_den:
            return {}
        from .mechanism import beats_chance, mechanism_metrics

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


class OracleMasks(PaGKD):
    """Reference, not a method: PaGKD with token labels from SynthEndo's ground-truth lesion
    masks instead of Grad-CAM + PAR. The mask, under the batch's augmentation, is
    average-pooled to the token grid and thresholded exactly like a refined CAM
    (``den.high`` / ``den.low``). Everything else is ``pagkd``'s, so ``oracle_masks - pagkd``
    measures what perfect token labels would add."""

    needs_masks = True

    def token_labels(self, batch: StepBatch, out, cam_n: torch.Tensor | None):
        hw = tuple(out.features.shape[-2:])
        lab = [token_labels(m[:, 0], hw, high=self.den_cfg.high, low=self.den_cfg.low)
               for m in (batch.mask_w, batch.mask_n)]
        return lab[0], lab[1]


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
    rendering of x_w[i] under the SAME rotation and flip (:func:`pagkd_lite.train.fit` gives
    the twins one geometric draw), so token p of one is token p of the other::

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
    pairs of :meth:`probe_pairs` (:func:`pagkd_lite.mechanism.pair_mechanism_metrics`)."""

    #: seed of the probe's pseudo pairs: the same pairs every epoch, the training draws untouched
    probe_seed = 0

    def __init__(self, student, teacher, cfg, num_classes: int) -> None:
        super().__init__(student, teacher, cfg.den)
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
        """The mechanism numbers (:mod:`pagkd_lite.mechanism`) of the dense loss on the probe's
        :meth:`probe_pairs`; nothing without a probe. Changes no weight."""
        if probe is None:
            return {}
        from .mechanism import pair_mechanism_metrics

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
    the teacher's softened predictions over the step's NBI images of its class."""
    with torch.no_grad():
        logits_t = at_least_float32(teacher(batch.x_n).logits)
    with torch.no_grad(), float32_region(logits_t):
        p_t = F.softmax(logits_t / t, dim=1)                             # (Bn, K)
        onehot = F.one_hot(batch.y_n, num_classes).float().T             # (K, Bn)
        counts = onehot.sum(1, keepdim=True)
        class_mean = (onehot @ p_t) / counts.clamp_min(1)                # (K, K)
        keep = counts.flatten()[batch.y_w] > 0
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


@dataclass(frozen=True)
class Method:
    """One entry of :data:`METHODS`: a distiller class, its keyword options, one line of help.

    ``Method(...)(student, teacher, cfg, num_classes)`` builds the distiller; every
    distiller class takes ``(student, teacher, cfg, num_classes, **options)``.
    """

    cls: type[Distiller]
    help: str
    options: dict = field(default_factory=dict)
    config: tuple[str, ...] = ()  # ``section.field=value`` settings the method runs with

    @property
    def needs_teacher(self) -> bool:
        return self.cls.needs_nbi

    @property
    def paired(self) -> bool:
        """Needs the NBI twin of every WLI training image (true pairs)."""
        return self.cls.paired

    @property
    def needs_masks(self) -> bool:
        """Needs ground-truth lesion masks (SynthEndo's; real data has none)."""
        return self.cls.needs_masks

    def __call__(self, student: Classifier, teacher: Classifier | None, cfg,
                 num_classes: int) -> Distiller:
        return self.cls(student, teacher, cfg, num_classes, **self.options)


#: The authors' behaviour where the kit's default differs (``docs/fidelity.md``): their
#: classifier head and bias-free token maps, GKD-Pro's channel similarity summed over anchors,
#: GKD-Den's per-class sum and uniform rows, their CAM -> label rule with the paper's PAR.
#: The ``authors`` preset and the ``pagkd_authors`` method apply them.
AUTHORS_SETTINGS: tuple[str, ...] = (
    "model.head_input=backbone", "model.token_bias=false",
    "pro.similarity=channel", "pro.channel_scale=20", "pro.tau=1", "pro.con_reduction=sum",
    "pro.plus_one=true", "den.reduction=per_class_sum", "den.masked_rows=uniform",
    "den.scale=false", "den.label_rule=authors", "den.par_iters=10", "den.par_scale=2",
    "den.par_dilations=1,2,4,8", "den.high=0.7", "den.low=0.3",
)

#: The method registry: name -> :class:`Method`. The CLI, ``config``, ``cv`` and ``bench``
#: take their choices and help text from here; a new method is one class and one entry.
METHODS: dict[str, Method] = {
    "wli_only": Method(WLIOnly, "cross-entropy on WLI only, no teacher (the baseline)"),
    "pagkd": Method(PaGKD, "PaGKD: CE + GKD-Den + GKD-Pro on unpaired same-class groups"),
    "pagkd_authors": Method(PaGKD, "PaGKD with every authors' setting of docs/fidelity.md "
                                   "(their head, similarity, reductions, label rule, PAR)",
                            config=AUTHORS_SETTINGS),
    "pagkd_no_pro": Method(PaGKD, "PaGKD without GKD-Pro (ablation)", {"use_pro": False}),
    "pagkd_no_den": Method(PaGKD, "PaGKD without GKD-Den (ablation)", {"use_den": False}),
    "pagkd_no_mask": Method(PaGKD, "PaGKD with plain cross-attention in GKD-Den (no relation "
                                   "mask)", {"use_mask": False}),
    "pagkd_one_way": Method(PaGKD, "PaGKD with GKD-Den one way: WLI queries NBI only",
                            {"two_way": False}),
    "pseudo_pair": Method(PseudoPair, "dense loss on random same-class WLI/NBI pairs "
                                      "(image-level baseline)"),
    "logit_kd": Method(LogitKD, "each WLI image toward the teacher's mean soft prediction of "
                                "its class (unpaired logit KD)"),
    "paired_oracle": Method(PairedOracle, "dense loss on TRUE WLI/NBI pairs (SynthEndo only; "
                                          "the upper reference)"),
    "paired_hint": Method(PairedHint, "FitNets hint on TRUE pixel-aligned pairs: student token "
                                      "-> teacher token at the same place (SynthEndo only)"),
    "class_hint": Method(ClassHint, "the paired_hint loss on random same-class, different-lesion "
                                    "WLI/NBI pairs (control: pairing vs class-level hint)"),
    "oracle_masks": Method(OracleMasks, "PaGKD with token labels from the TRUE lesion masks "
                                        "instead of CAM + PAR (SynthEndo only)"),
    # the pre-registered variants of benchmarks/PREREGISTERED.md
    "pagkd_frozen_target": Method(PaGKD, "variant (a): GKD-Den toward the frozen teacher's own "
                                         "tokens, bias-free student projector",
                                  config=("den.target=teacher",)),
    "pagkd_centred": Method(PaGKD, "variant (b): GKD-Den on tokens centred per image",
                            config=("den.center=true",)),
    "pagkd_token_cos": Method(PaGKD, "variant (c): GKD-Den with a per-token cosine on centred "
                                     "tokens", config=("den.center=true", "den.cosine=token")),
    "pagkd_log_prior": Method(PaGKD, "variant (d): GKD-Den scores S / sqrt(d) + log R",
                              config=("den.scale=true", "den.relation=log_prior")),
    "pagkd_scheduled": Method(PaGKD, "variant (e): WLI token labels once the student beats "
                                     "chance; group losses ramped over 5 epochs",
                              config=("den.wli_gate=true", "train.lambda_ramp_epochs=5")),
    "pagkd_logit": Method(PaGKDLogit, "variant (f): pagkd + the logit_kd term"),
}

#: The pre-registered variants (``benchmarks/PREREGISTERED.md``), in the order of its table.
VARIANTS: tuple[str, ...] = ("pagkd_frozen_target", "pagkd_centred", "pagkd_token_cos",
                             "pagkd_log_prior", "pagkd_scheduled", "pagkd_logit")


def method_help(names=None) -> str:
    """One line per method, ``name: help``, for ``--help`` texts."""
    names = list(METHODS) if names is None else names
    width = max(len(n) for n in names)
    return "\n".join(f"  {n:{width}s}  {METHODS[n].help}" for n in names)


def get_method(method: str) -> Method:
    """The registry entry of ``method``; an unknown name raises ``ValueError``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    return METHODS[method]


def build_distiller(method: str, student: Classifier, teacher: Classifier | None, cfg,
                    num_classes: int) -> Distiller:
    """The distiller for a method name (see :data:`METHODS`)."""
    entry = get_method(method)
    if entry.needs_teacher and teacher is None:
        raise ValueError(f"method {method!r} needs a trained teacher")
    return entry(student, teacher if entry.needs_teacher else None, cfg, num_classes)
