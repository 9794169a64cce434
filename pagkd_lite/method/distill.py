"""The method registry: every training method by name, and how to build its distiller.

Methods: ``wli_only``; ``pagkd`` (the kit's default, :data:`PAGKD_SETTINGS`: the frozen
target, the warm start and the ``logit_kd`` term); ``pagkd_paper`` (the paper's form) and its
ablations ``pagkd_no_pro``, ``pagkd_no_den``, ``pagkd_no_mask`` (plain cross-attention),
``pagkd_one_way`` (WLI queries NBI only); the
image-level baselines ``pseudo_pair`` (random same-class pairs, dense loss per pair) and
``logit_kd`` (each WLI image toward the teacher's mean softened prediction over the
same-class NBI images of the step); ``paired_oracle`` (dense loss on TRUE pairs); the
references ``paired_hint`` (a token hint on true pairs), ``class_hint`` (the same hint on
same-class pairs of different lesions) and ``oracle_masks``; ``pagkd_authors`` (PaGKD with
:data:`AUTHORS_SETTINGS`); the pre-registered variants (:data:`VARIANTS`). The list lives
once, in :data:`METHODS`: a new method is one class and one entry there.

The distiller classes live in :mod:`pagkd_lite.method.distiller` (the contract, the teacher side,
PaGKD) and :mod:`pagkd_lite.method.baselines`; the ones the notebooks and tests import by this
module's name are listed in ``__all__``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..models.classifier import Classifier
from .baselines import (
    ClassHint,
    LogitKD,
    OracleMasks,
    PaGKDLogit,
    PairedHint,
    PairedOracle,
    PseudoPair,
    same_class_partners,
    unpaired_logit_kd,
)
from .distiller import Distiller, PaGKD, StepBatch, TeacherPass, TeacherSide, WLIOnly

__all__ = [
    "AUTHORS_SETTINGS", "FROZEN_CANDIDATES", "KINDS", "METHODS", "PAGKD_SETTINGS", "VARIANTS",
    "ClassHint", "Distiller", "LogitKD", "Method", "OracleMasks", "PaGKD", "PaGKDLogit",
    "PairedHint", "PairedOracle", "PseudoPair", "StepBatch", "TeacherPass", "TeacherSide",
    "WLIOnly", "build_distiller", "get_method", "method_help", "same_class_partners",
    "unpaired_logit_kd",
]


#: What a registry entry is, in the order ``--help`` lists them, with each kind's heading:
#: the method the kit teaches, the authors' form of it, baselines that need neither pairs nor
#: ground truth, ablations and pre-registered variants of PaGKD, and references, which need
#: true pairs or SynthEndo's ground truth and say what is possible, not what real data gives.
KINDS: dict[str, str] = {
    "method": "the method (the kit's default, and the paper's form)",
    "authors": "the authors' form",
    "baseline": "baselines (no pairs, no ground truth)",
    "ablation": "ablations of PaGKD (of its paper form, pagkd_paper)",
    "variant": "pre-registered variants (benchmarks/PREREGISTERED.md)",
    "reference": "references (true pairs or SynthEndo's ground truth: not methods)",
}


@dataclass(frozen=True)
class Method:
    """One entry of :data:`METHODS`: a distiller class, its keyword options, one line of help,
    the settings it runs with and its kind (:data:`KINDS`).

    ``Method(...)(student, teacher, cfg, num_classes)`` builds the distiller; every
    distiller class takes ``(student, teacher, cfg, num_classes, **options)``.
    """

    cls: type[Distiller]
    help: str
    options: dict = field(default_factory=dict)
    config: tuple[str, ...] = ()  # ``section.field=value`` settings the method runs with
    kind: str = "variant"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Method.kind must be one of {list(KINDS)}, got {self.kind!r}")

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


#: The authors' settings (``docs/fidelity.md``), every field that ``pagkd_authors`` depends on
#: pinned to the value of their released code (``train.py``, ``utils/``, ``models/``): their
#: classifier head, bias-free token maps with the kaiming fan-out init, [0, 1] inputs,
#: rotations that zoom out, their group pool, the raw ``wli_only`` student as the start;
#: GKD-Pro's channel similarity summed over anchors; GKD-Den two-way, relation-masked, on the
#: adapted teacher tokens, summed per class with uniform rows; their CAM -> label rule with
#: the paper's PAR (upsampling with ``align_corners=True``); lambda_den = 1, lambda_pro =
#: 0.001, no ramp; rotations up to 180 degrees and flips. The scale (backbone, image size,
#: epochs, warm-up, lr) is the preset's: ``--preset paper`` for the paper's.
#: The ``authors`` preset and the ``pagkd_authors`` method apply them; the command line
#: refuses a ``--set`` that would change one under ``pagkd_authors``
#: (``config.check_method_overrides``).
AUTHORS_SETTINGS: tuple[str, ...] = (
    "model.head_input=backbone", "model.token_bias=false", "model.embed_init=kaiming_fan_out",
    "model.init=scratch", "model.student_init=wli_only", "model.input_norm=none",
    "model.input_rotate=expand", "groups.pool=authors",
    "pro.similarity=channel", "pro.channel_scale=20", "pro.tau=1", "pro.con_reduction=sum",
    "pro.plus_one=true",
    "den.scale=false", "den.use_mask=true", "den.two_way=true", "den.masked_rows=uniform",
    "den.reduction=per_class_sum", "den.target=adapted", "den.center=false", "den.cosine=map",
    "den.relation=multiply", "den.wli_gate=false",
    "labels.source=cam", "labels.flip_rate=0", "labels.rule=authors", "labels.par_iters=10",
    "labels.par_scale=2", "labels.par_dilations=1,2,4,8", "labels.par_align_corners=true",
    "labels.high=0.7", "labels.low=0.3",
    "train.lambda_den=1", "train.lambda_pro=0.001", "train.lambda_ramp_epochs=0",
    "train.augment=true", "train.rotation_degrees=180",
)

#: The settings ``pagkd`` runs with, the kit's finding (not the paper's): the frozen-target
#: candidate that won the pre-registered rule on validation seeds and held on the test seeds
#: (``benchmarks/studies/2026-12-07-frozen-target``; ``pagkd_frozen_warm_logit``, the same
#: settings under its candidate name). GKD-Den aligns the WLI tokens with the frozen
#: teacher's own tokens (``den.target=teacher``) and the student starts from the trained
#: ``wli_only`` student (``model.student_init=wli_only``, its training counted in the
#: method's time); the distiller (:class:`PaGKDLogit`) adds the ``logit_kd`` term. The
#: paper's form, as the kit ran it before, is ``pagkd_paper``; the authors' code is
#: ``pagkd_authors``.
PAGKD_SETTINGS: tuple[str, ...] = ("den.target=teacher", "model.student_init=wli_only")

#: The method registry: name -> :class:`Method`. The CLI, ``config``, ``cv`` and ``bench``
#: take their choices and help text from here; a new method is one class and one entry.
METHODS: dict[str, Method] = {
    "wli_only": Method(WLIOnly, "cross-entropy on WLI only, no teacher (the baseline)",
                       kind="baseline"),
    "pagkd": Method(PaGKDLogit, "PaGKD as the kit runs it (its finding, not the paper's): CE + "
                                "GKD-Den toward the frozen teacher's tokens + GKD-Pro + the "
                                "logit_kd term, from the trained wli_only student",
                    config=PAGKD_SETTINGS, kind="method"),
    "pagkd_paper": Method(PaGKD, "PaGKD as the paper describes it: CE + GKD-Den + GKD-Pro on "
                                 "unpaired same-class groups, from scratch (`pagkd` until "
                                 "2026-12-07)", kind="method"),
    "pagkd_authors": Method(PaGKD, "PaGKD with every authors' setting of docs/fidelity.md "
                                   "(head, init, inputs, groups, losses, label rule, PAR; "
                                   "starts from the wli_only student)",
                            config=AUTHORS_SETTINGS, kind="authors"),
    "pagkd_no_pro": Method(PaGKD, "pagkd_paper without GKD-Pro", {"use_pro": False},
                           kind="ablation"),
    "pagkd_no_den": Method(PaGKD, "pagkd_paper without GKD-Den", {"use_den": False},
                           kind="ablation"),
    "pagkd_no_mask": Method(PaGKD, "pagkd_paper with plain cross-attention in GKD-Den (no "
                                   "relation mask)", {"use_mask": False}, kind="ablation"),
    "pagkd_one_way": Method(PaGKD, "pagkd_paper with GKD-Den one way: WLI queries NBI only",
                            {"two_way": False}, kind="ablation"),
    "wli_only_warm": Method(WLIOnly, "control for the warm start: the trained wli_only student "
                                     "trained again as long, WLI cross-entropy alone",
                            config=("model.student_init=wli_only",), kind="baseline"),
    "logit_kd_warm": Method(LogitKD, "control for what the group losses add: logit_kd from the "
                                     "trained wli_only student (pagkd's start), no group loss",
                            config=("model.student_init=wli_only",), kind="baseline"),
    "pseudo_pair": Method(PseudoPair, "dense loss on random same-class WLI/NBI pairs "
                                      "(image-level baseline)", kind="baseline"),
    "logit_kd": Method(LogitKD, "each WLI image toward the teacher's mean soft prediction of "
                                "its class (unpaired logit KD)", kind="baseline"),
    "class_hint": Method(ClassHint, "the paired_hint loss on random same-class, different-lesion "
                                    "WLI/NBI pairs (control: pairing vs class-level hint)",
                         kind="baseline"),
    "paired_oracle": Method(PairedOracle, "dense loss on TRUE WLI/NBI pairs (SynthEndo only; "
                                          "the upper reference)", kind="reference"),
    "paired_hint": Method(PairedHint, "FitNets hint on TRUE pixel-aligned pairs: student token "
                                      "-> teacher token at the same place (SynthEndo only)",
                          kind="reference"),
    "oracle_masks": Method(OracleMasks, "pagkd_paper with token labels from the TRUE lesion "
                                        "masks instead of CAM + PAR (SynthEndo only)",
                           kind="reference"),
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
    "pagkd_logit": Method(PaGKDLogit, "variant (f): pagkd_paper + the logit_kd term"),
    # the frozen-target candidates of benchmarks/PREREGISTERED.md (amendment of 2026-12-07)
    "pagkd_frozen_logit": Method(PaGKDLogit, "frozen target + the logit_kd term",
                                 config=("den.target=teacher",)),
    "pagkd_frozen_warm": Method(PaGKD, "frozen target, the student starting from the trained "
                                       "wli_only student (its training counted)",
                                config=("den.target=teacher", "model.student_init=wli_only")),
    "pagkd_frozen_embed": Method(PaGKD, "frozen target with the authors' token-embedding init "
                                        "(kaiming fan-out; teacher and student)",
                                 config=("den.target=teacher",
                                         "model.embed_init=kaiming_fan_out")),
    "pagkd_frozen_warm_logit": Method(PaGKDLogit, "frozen target, warm start from the wli_only "
                                                  "student, + the logit_kd term",
                                      config=("den.target=teacher",
                                              "model.student_init=wli_only")),
}

#: The pre-registered variants (``benchmarks/PREREGISTERED.md``), in the order of its table.
VARIANTS: tuple[str, ...] = ("pagkd_frozen_target", "pagkd_centred", "pagkd_token_cos",
                             "pagkd_log_prior", "pagkd_scheduled", "pagkd_logit")
#: The frozen-target candidates (its amendment of 2026-12-07), in the order of its table.
FROZEN_CANDIDATES: tuple[str, ...] = ("pagkd_frozen_target", "pagkd_frozen_logit",
                                      "pagkd_frozen_warm", "pagkd_frozen_embed",
                                      "pagkd_frozen_warm_logit")


def method_help(names=None) -> str:
    """The methods for ``--help`` texts, grouped by kind (:data:`KINDS`, in its order): a
    heading per kind, then one line per method, ``name  help``."""
    names = list(METHODS) if names is None else names
    width = max(len(n) for n in names)
    lines = []
    for kind, heading in KINDS.items():
        mine = [n for n in names if METHODS[n].kind == kind]
        if mine:
            lines += [f" {heading}:", *(f"  {n:{width}s}  {METHODS[n].help}" for n in mine)]
    return "\n".join(lines)


def get_method(method: str) -> Method:
    """The registry entry of ``method``; an unknown name raises ``ValueError``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    return METHODS[method]


def build_distiller(method: str, student: Classifier, teacher: Classifier | None, cfg,
                    num_classes: int) -> Distiller:
    """The distiller for a method name (see :data:`METHODS`), with its ``group_pool`` set
    from ``cfg.groups.pool`` (the training loop's sampler reads it)."""
    entry = get_method(method)
    if entry.needs_teacher and teacher is None:
        raise ValueError(f"method {method!r} needs a trained teacher")
    distiller = entry(student, teacher if entry.needs_teacher else None, cfg, num_classes)
    distiller.group_pool = cfg.groups.pool
    return distiller
