"""Run configuration: plain dataclasses, four presets, overrides from the command line.

A :class:`Config` bundles the data, model, loss and training settings. Presets are
functions returning a Config; ``override(cfg, ["train.epochs=3", "model.backbone=resnet18"])``
changes any field by its dotted name, parsing the value by the field's type.

Presets:
    smoke  seconds on a laptop CPU: tiny timm test model, tiny data, one epoch.
    demo   the CPU demo and benchmark setting (minutes on 2 cores).
    authors  demo with every authors' setting of docs/fidelity.md that the kit offers
             (:data:`~pagkd_lite.method.distill.AUTHORS_SETTINGS`), still at 64 px and 4 x 4
             tokens with ResNet-10t; ``--preset paper --method pagkd_authors`` is the full
             combination (the authors' settings at the paper's scale).
    paper  the paper's setting (docs/method.md): ResNet-50 ImageNet-pretrained at 448 px, d = 128,
           12 queries, 16 heads, batch 24, Adam 1e-4, weight decay 1e-8, 200 epochs,
           warm-up 5 epochs, lambda_den = 1, lambda_pro = 0.001. A GPU job.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

from .data.sampler import GroupConfig
from .data.synthendo import SynthEndoConfig
from .errors import ConfigError
from .method.cam import TokenLabelConfig
from .method.distill import AUTHORS_SETTINGS, METHODS, get_method
from .method.gkd_den import GKDDenConfig
from .method.gkd_pro import GKDProConfig, check_heads
from .models.accel import RuntimeConfig
from .models.classifier import ModelConfig
from .models.pretrain import PretrainConfig


@dataclass
class TrainConfig:
    """Optimisation settings for one training run (teacher or student).

    The distillation weights follow the paper (lambda_den = 1, lambda_pro = 0.001, group
    losses on after ``warmup_epochs``); presets scale the warm-up to the run length.
    """

    epochs: int = 10
    batch_size: int = 24
    lr: float = 1e-3
    weight_decay: float = 1e-8
    warmup_epochs: int = 2
    lambda_den: float = 1.0
    lambda_pro: float = 0.001
    lambda_kd: float = 1.0
    lambda_hint: float = 1.0
    kd_temperature: float = 4.0
    augment: bool = True
    rotation_degrees: float = 180.0
    eval_every: int = 1
    steps_per_epoch: int = 0  # 0 = one pass over the WLI (or NBI, for the teacher) train set
    lambda_ramp_epochs: int = 0  # distillation weights ramp up over this many epochs (0: none)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "kd_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "warmup_epochs", "lambda_den", "lambda_pro", "lambda_kd",
                     "lambda_hint", "steps_per_epoch", "rotation_degrees",
                     "lambda_ramp_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class Config:
    """Everything a run needs. ``teacher`` trains the NBI teacher, ``train`` the student;
    ``pretrain`` the SimCLR backbone both start from when ``model.init = "ssl"``; ``groups``
    which training images the unpaired groups are drawn from."""

    name: str = "custom"
    data: SynthEndoConfig = field(default_factory=SynthEndoConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    teacher: TrainConfig = field(default_factory=TrainConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pro: GKDProConfig = field(default_factory=GKDProConfig)
    den: GKDDenConfig = field(default_factory=GKDDenConfig)
    labels: TokenLabelConfig = field(default_factory=TokenLabelConfig)
    groups: GroupConfig = field(default_factory=GroupConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    seed: int = 0
    device: str = "auto"  # auto = cuda, then mps, then cpu
    out_dir: str = "runs"
    bootstrap: int = 1000  # resamples for the 95% intervals

    def __post_init__(self) -> None:
        """Constraints across sections (each section checks its own fields)."""
        check_heads(self.model.dim, self.pro.num_heads)


def smoke() -> Config:
    """Seconds: timm's tiny ``test_resnet``, 64 px, a few dozen images, one epoch."""
    return Config(
        name="smoke",
        data=SynthEndoConfig(image_size=64, n_wli_train=48, n_nbi_train=48, n_wli_val=24,
                             n_nbi_val=24, n_wli_test=36, n_nbi_test=36),
        model=ModelConfig(backbone="test_resnet", dim=32, feature_index=-2),
        teacher=TrainConfig(epochs=1, batch_size=12, warmup_epochs=0),
        train=TrainConfig(epochs=2, batch_size=12, warmup_epochs=1),
        pro=GKDProConfig(num_queries=4, num_heads=4),
        pretrain=PretrainConfig(epochs=1, batch_size=16, steps_per_epoch=2),
        bootstrap=200,
    )


def demo() -> Config:
    """The CPU demo and the SynthEndo benchmark setting (see README for timings).

    Chosen by the premise check, not by PaGKD's result (docs/results.md, "The premise
    check"): among the cells of the regime map (WLI training budget x token grid) measured
    on validation seeds 100-102, the one where distilling from TRUE pairs helps most clearly
    (largest lower bound of the best pair oracle's seed-paired gain over ``wli_only``). That
    cell: 72 WLI training images (24 per class), tokens from the stride-16 stage (4 x 4 tokens).

    64 px images, ResNet-10t from scratch, d = 64. Adam at 1e-3 (random init; the paper's
    1e-4 is for ImageNet-pretrained weights), 20 student epochs of 10 steps (fixed, whatever
    the budget) with the group losses on after 3 (the paper: 5 of 200), lambda_den = 1 and
    lambda_pro = 0.001 as in the paper. The NBI teacher trains on 240 NBI images.

    GKD-Den's token labels come from the raw Grad-CAM (``labels.par_iters = 0``: the CAM, which
    sits on the token grid, is cut at the thresholds; nothing is resampled or propagated).
    Chosen on validation seeds 100-102 against SynthEndo's true lesion masks
    (``pagkd-lite diagnose``; docs/results.md, "the diagnostic chain"), by the teacher's
    foreground-token recall at foreground precision >= 0.9: at 4 x 4 tokens the paper's PAR
    leaves almost no foreground token (mean recall 0.001), the raw CAM about half of them
    (0.512) at precision 0.962. Those raw-CAM figures were measured at the token grid, which
    is what training reads since 2026-12-02 (before, training upsampled the CAM and pooled
    it back, which blurred isolated peaks below 0.7; one chain,
    :func:`pagkd_lite.method.cam.cam_token_labels`, now serves both). The ``paper`` preset keeps
    PAR.

    ``pretrain`` (used only with ``model.init=ssl``; ``pagkd-lite pretrain``): SimCLR for 8
    epochs of 9 steps, batch 32 (64 views), on the 72 + 240 unlabelled training images.
    Measured 2026-12-02 on the shared 2-core x86_64 machine (no GPU, one torch thread, another
    engineer's jobs beside it, 89% of a core): 153 s of training, 178 s wall for the whole
    command; NT-Xent 3.55 after the first epoch, 3.01 after the last (chance: ln 63 = 4.14).
    """
    return Config(
        name="demo",
        data=SynthEndoConfig(image_size=64, n_wli_train=72),
        model=ModelConfig(backbone="resnet10t", dim=64, feature_index=-2),
        teacher=TrainConfig(epochs=15, batch_size=24, warmup_epochs=0),
        train=TrainConfig(epochs=20, batch_size=24, warmup_epochs=3, steps_per_epoch=10),
        pro=GKDProConfig(num_queries=12, num_heads=8),
        labels=TokenLabelConfig(par_iters=0),
        pretrain=PretrainConfig(epochs=8, batch_size=32),
    )


def paper() -> Config:
    """The paper's setting (docs/method.md, "Paper setting"); needs a GPU and the weights hub."""
    return Config(
        name="paper",
        data=SynthEndoConfig(image_size=448),
        model=ModelConfig(backbone="resnet50", dim=128, feature_index=-1, pretrained=True),
        teacher=TrainConfig(epochs=200, batch_size=24, lr=1e-4, weight_decay=1e-8,
                            warmup_epochs=0),
        train=TrainConfig(epochs=200, batch_size=24, lr=1e-4, weight_decay=1e-8,
                          warmup_epochs=5, lambda_den=1.0, lambda_pro=0.001),
        pro=GKDProConfig(num_queries=12, num_heads=16),
    )


def authors() -> Config:
    """The ``demo`` setting with every authors' setting of ``docs/fidelity.md`` that the kit
    offers (:data:`pagkd_lite.method.distill.AUTHORS_SETTINGS`): the classifier reads the pooled
    backbone map, bias-free token maps with the authors' init, [0, 1] inputs, rotations that
    zoom out, the authors' group pool, the raw student as the start, GKD-Pro's channel
    similarity / 20 summed over anchors, GKD-Den summed over classes with uniform attention
    for fully masked rows, and the authors' CAM -> label rule after the paper's PAR (with its
    ``align_corners=True``). ``--method pagkd`` on this preset is ``pagkd_authors`` on
    ``demo``, with every field free to ``--set``.

    Still the demo's scale: ResNet-10t from scratch, 64 px, 4 x 4 tokens, 20 epochs. There the
    paper's PAR leaves almost no foreground token (docs/results.md, "The diagnostic chain").
    The paper's scale with every authors' setting: ``--preset paper --method pagkd_authors``."""
    cfg = override(demo(), list(AUTHORS_SETTINGS))
    cfg.name = "authors"
    return cfg


PRESETS: dict[str, typing.Callable[[], Config]] = {"smoke": smoke, "demo": demo, "paper": paper,
                                                   "authors": authors}


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


#: fields that moved (2026-12-03): the ``den.*`` token-label settings to the ``labels``
#: section; ``pro.dim`` is ``model.dim`` (GKD-Pro reads the student's tokens)
MOVED = {"pro.dim": "model.dim", "den.high": "labels.high", "den.low": "labels.low",
         "den.par_scale": "labels.par_scale", "den.par_iters": "labels.par_iters",
         "den.par_dilations": "labels.par_dilations", "den.label_rule": "labels.rule"}
#: :data:`MOVED` as ((section, field) before, (section, field) now)
_MOVED_PATHS = [(tuple(old.split(".")), tuple(new.split("."))) for old, new in MOVED.items()]


def _parse(value: str, kind, where: str):
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value.lower() in ("none", "null", ""):
            return None
        kind = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{where}: expected a boolean (true/false), got {value!r}")
    if origin is tuple:
        inner = args[0] if args else str
        return tuple(_parse(v.strip(), inner, where) for v in value.split(",") if v.strip())
    try:
        return kind(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: expected {getattr(kind, '__name__', kind)}, "
                         f"got {value!r}") from err


def override(cfg: Config, assignments: list[str]) -> Config:
    """Apply ``section.field=value`` (or top-level ``field=value``) assignments.

    Returns a new Config; every dataclass is rebuilt so its validation runs again.
    Unknown names raise ValueError listing the valid ones.
    """
    cfg = dataclasses.replace(cfg)
    for item in assignments:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected NAME=VALUE, e.g. train.epochs=3")
        key, value = item.split("=", 1)
        if key.strip() in MOVED:
            why = ("GKD-Pro's width is the student's token width" if key.startswith("pro.")
                   else "token-label settings have their own section")
            raise ValueError(f"override {item!r}: {why}; write "
                             f"{MOVED[key.strip()]}={value.strip()}")
        parts = key.strip().split(".")
        target = cfg
        for p in parts[:-1]:
            sub = getattr(target, p, None)
            if not dataclasses.is_dataclass(sub):
                sections = [f.name for f in dataclasses.fields(Config)
                            if dataclasses.is_dataclass(getattr(cfg, f.name))]
                raise ValueError(f"override {item!r}: {p!r} is not a section; "
                                 f"sections: {sections}")
            target = sub
        hints = typing.get_type_hints(type(target))
        name = parts[-1]
        if name not in hints:
            raise ValueError(f"override {item!r}: {type(target).__name__} has no field {name!r}; "
                             f"fields: {sorted(f.name for f in dataclasses.fields(target))}")
        value = _parse(value.strip(), hints[name], key)
        if len(parts) == 1:
            setattr(cfg, name, value)  # cfg is our copy; checked as a whole at the end
        else:
            new = dataclasses.replace(target, **{name: value})
            parent = cfg
            for p in parts[:-2]:
                parent = getattr(parent, p)
            setattr(parent, parts[-2], new)
    return dataclasses.replace(cfg)  # rebuilt: the cross-section checks run on the result


def build_config(base: str | Config = "demo", overrides=(), seed: int | None = None,
                 device: str | None = None) -> Config:
    """A preset (by name) or a Config, with ``--set`` style ``overrides``, a ``seed`` (training
    AND data) and a ``device`` applied: what every ``pagkd-lite`` command starts from."""
    extra = list(overrides)
    if seed is not None:
        extra += [f"seed={seed}", f"data.seed={seed}"]
    if device is not None:
        extra.append(f"device={device}")
    return override(get_preset(base) if isinstance(base, str) else base, extra)


def method_config(cfg: Config, method: str) -> Config:
    """``cfg`` with the settings that ``method`` runs with applied (``Method.config``;
    e.g. ``pagkd_authors``); ``cfg`` itself for every other method. A method that changes
    ``model`` needs a teacher built with the result (``pipeline.train_teacher``).

    The method's settings are applied OVER ``cfg``: a value ``cfg`` holds for one of those
    fields is replaced. The command line therefore refuses such a ``--set`` or ``--sweep``
    before anything runs (:func:`check_method_overrides`)."""
    settings = get_method(method).config
    return override(cfg, list(settings)) if settings else cfg


def method_pins(method: str) -> dict[str, str]:
    """The fields ``method`` fixes (``Method.config``), ``{"section.field": "value"}``."""
    return dict(item.split("=", 1) for item in get_method(method).config)


def _field_value(key: str, value: str):
    """``value`` parsed by the type of the field ``key`` (``section.field``)."""
    section, name = key.split(".", 1)
    return _parse(value.strip(), typing.get_type_hints(
        typing.get_type_hints(Config)[section])[name], key)


def check_method_overrides(methods, assignments, flag: str = "--set") -> None:
    """Refuse an assignment that gives a field one of ``methods`` fixes another value.

    :func:`method_config` applies a method's settings over the user's, so such a value would
    be replaced without a word; this raises a :class:`~pagkd_lite.errors.ConfigError` in one
    line naming the field, the method and the value it runs with. The same value (parsed by
    the field's type: ``true`` = ``1``, ``1e-3`` = ``0.001``) passes, and so does any field
    the methods do not fix. Names that are not methods are left to the caller's checks.

    Args:
        methods: method names, e.g. ``["wli_only", "pagkd_authors"]`` (a bench's list).
        assignments: ``"section.field=value"`` strings (``--set``; a sweep's cells).
        flag: the option the assignments came from, for the message.
    """
    for item in assignments:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or "." not in key:
            continue  # malformed or top-level: override() reports it; no method fixes those
        for method in methods:
            pinned = method_pins(method).get(key) if method in METHODS else None
            if pinned is None or _field_value(key, value) == _field_value(key, pinned):
                continue
            hint = " --preset authors" if method == "pagkd_authors" else ""
            raise ConfigError(f"{flag} {key}={value.strip()}: method {method!r} runs with "
                              f"{key}={pinned} and would replace your value; drop it (or give "
                              f"{pinned}), or use a method that leaves it free, e.g. "
                              f"--method pagkd_paper{hint}")


def to_dict(cfg: Config) -> dict:
    """Plain nested dict (JSON- and ``weights_only``-safe)."""
    return dataclasses.asdict(cfg)


#: fields added after runs were cached, as (section, field, default): a run at the default
#: keeps the key it had before the field existed (the first two 2026-12-07, the others with
#: the fidelity switches of docs/fidelity.md)
KEY_DEFAULTS = (("model", "embed_init", "default"), ("model", "student_init", "scratch"),
                ("model", "input_norm", "imagenet"), ("model", "input_rotate", "crop"),
                ("labels", "source", "cam"), ("labels", "flip_rate", 0.0),
                ("labels", "par_align_corners", False))
#: sections added after runs were cached: hashed only when one of their fields is set
KEY_SECTIONS = (("groups", GroupConfig),)


def key_dict(cfg: Config) -> dict:
    """:func:`to_dict` as the cache keys hash it: with ``model.init = "scratch"`` the SSL
    settings (``model.init`` and the ``pretrain`` section) change nothing about a run, so
    they are left out, and a scratch run keeps the cache key it had before they existed.
    The ``labels`` section is hashed inside ``den`` under its earlier names, and ``model.dim``
    once more as ``pro.dim`` (:data:`MOVED`), as they were stored until 2026-12-03, so the
    move changed no run's key. The fields of :data:`KEY_DEFAULTS` are hashed only when they
    differ from their default (the ``labels`` ones inside ``den`` as ``label_<field>``), and
    the sections of :data:`KEY_SECTIONS` only when they differ from theirs, for the same
    reason.
    """
    d = to_dict(cfg)
    if cfg.model.init == "scratch":
        d.pop("pretrain")
        d["model"].pop("init")
    for name, cls in KEY_SECTIONS:  # sections added later: keyed only when set
        if d[name] == dataclasses.asdict(cls()):
            d.pop(name)
    later = {}
    for section, name, default in KEY_DEFAULTS:  # settings added later: keyed only when set
        value = d[section].pop(name)
        if value != default:
            later[(section, name)] = value
    now = {**d, "labels": d.pop("labels")}
    for (section, name), (new_section, new_name) in _MOVED_PATHS:
        d[section][name] = now[new_section][new_name]
    for (section, name), value in later.items():
        d[section if section != "labels" else "den"][
            name if section != "labels" else f"label_{name}"] = value
    return d


def from_dict(d: dict) -> Config:
    """Inverse of :func:`to_dict` (tuples restored from lists). A dict written before the
    ``labels`` section existed (its fields inside ``den``, and ``pro.dim``: :data:`MOVED`) is
    read as well."""
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    d.get("pro", {}).pop("dim", None)  # always model.dim (checked equal when it was stored)
    if "labels" not in d:
        den = d.get("den", {})
        d["labels"] = {new_name: den.pop(name) for (section, name), (_, new_name) in _MOVED_PATHS
                       if section == "den" and name in den}

    def build(cls, values):
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in values:
                continue
            v = values[f.name]
            if dataclasses.is_dataclass(hints[f.name]):
                v = build(hints[f.name], v)
            elif isinstance(v, list):
                v = tuple(v)
            kwargs[f.name] = v
        return cls(**kwargs)
    return build(Config, d)
