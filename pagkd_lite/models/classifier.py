"""Teacher and student classifiers: any timm backbone + 1x1 embed + pool + linear.

The architecture of docs/method.md, Stage 1::

    x (B, 3, H, W) --backbone--> F (B, C, h, w) --embed 1x1--> E (B, d, h, w)
      tokens T = E flattened to (B, h*w, d)
      logits   = Linear(GAP(E))  (B, K)     head_input = "tokens" (the kit's default)
      logits   = Linear(GAP(F))  (B, K)     head_input = "backbone" (the authors')

With ``head_input="backbone"`` the tokens are a side branch, as in the authors' student
(``models/resnet50.py``, ``_forward_impl``: ``fc`` reads the pooled backbone feature, a
bias-free 1x1 ``conv_embedd`` makes the tokens): the distillation losses then reach the
classifier only through the backbone. ``token_bias=False`` drops the embedding's bias (and
the teacher adapter's, :mod:`pagkd_lite.method.distiller`), as theirs. See ``docs/fidelity.md``.

The backbone is ``timm.create_model(name, features_only=True, out_indices=(i,))`` so any
timm name works and ``feature_info`` sizes everything downstream (C and the stride).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import timm
import torch
from torch import nn

from ..data.transforms import INPUT_NORMS, ROTATES

HEAD_INPUTS = ("tokens", "backbone")
#: where a trained model's backbone starts: random weights, or the SSL backbone of the data
INITS = ("scratch", "ssl")
#: how the 1x1 token embedding's weight is drawn: PyTorch's default for ``nn.Conv2d``, or the
#: authors' (``models/resnet50.py``, ``ResNet.__init__``: every conv ``kaiming_normal_``,
#: ``mode="fan_out"``, ``nonlinearity="relu"``, so ``conv_embedd`` too)
EMBED_INITS = ("default", "kaiming_fan_out")
#: where a distilled student starts: as the teacher does (``init``), or from the trained
#: ``wli_only`` student of the same seed and data (the authors' "raw student")
STUDENT_INITS = ("scratch", "wli_only")


@dataclass
class ModelConfig:
    """Backbone and head settings shared by teacher and student.

    Attributes:
        backbone: any timm model name that supports ``features_only``.
        dim: d, channels of the 1x1 embedding = token dimension (paper: 128).
        feature_index: which feature stage feeds the head (-1 = last stage, as in the paper).
        pretrained: load ImageNet weights through timm (needs the hub; off by default).
        head_input: what the linear classifier reads: ``"tokens"`` (the pooled embedded map,
            the kit's default) or ``"backbone"`` (the pooled backbone map, the authors').
        token_bias: the 1x1 token embedding (and the teacher adapter) has a bias (kit's
            default ``True``; the authors' have none).
        init: how the teacher and the student start (``pipeline.build_classifier``):
            ``"scratch"`` (the default: random weights, or ImageNet's with ``pretrained``) or
            ``"ssl"`` (both from the SimCLR backbone of the current data's unlabelled WLI and
            NBI training images, :mod:`pagkd_lite.models.pretrain`;
            ``pipeline.pretrained_backbone``).
        embed_init: how the token embedding's weight is drawn (:data:`EMBED_INITS`):
            ``"default"`` (PyTorch's ``nn.Conv2d`` init, the kit's) or ``"kaiming_fan_out"``
            (the authors': normal with std ``sqrt(2 / (d * 1 * 1))``, about 5x the default's
            at d = 64 on a 256-channel map; bigger tokens, sharper unscaled attention).
            Teacher and student alike, as the authors' one ResNet class does.
        student_init: where a distilled student starts (:data:`STUDENT_INITS`; the teacher
            ignores it): ``"scratch"`` (as ``init`` says) or ``"wli_only"`` (the weights of
            the trained ``wli_only`` student of the same seed and data, trained once and
            cached: ``pipeline.raw_student``; the authors' ``raw_stu_path`` in
            ``train.py``, ``try_get_pretrained``). The other trainable modules (adapter,
            queries, projector) start as drawn.
        input_norm: what the network reads (:data:`~pagkd_lite.data.transforms.INPUT_NORMS`):
            ``"imagenet"`` (the kit's: ImageNet mean / std) or ``"none"`` (the [0, 1] image,
            as the authors' ``utils/loader.py`` feeds their ImageNet-pretrained ResNet-50).
            Training, prediction and the course tools read it from the model they feed.
            ``"none"`` with ``init = "ssl"`` is refused (the SimCLR backbone is pretrained on
            normalised views).
        input_rotate: how a training rotation is framed
            (:data:`~pagkd_lite.data.transforms.ROTATES`): ``"crop"`` (the kit's: corners cut)
            or ``"expand"`` (the authors': the whole rotated image, zoomed out by ``1 / (|cos
            a| + |sin a|)``; :func:`pagkd_lite.data.transforms.rotate_flip`).

    ``input_norm`` and ``input_rotate`` concern the input pipeline, not the network, but
    they live here because they must reach the teacher: a cached teacher's key hashes this
    section (``pipeline.train_teacher``), and ``pipeline.teacher_for`` trains a method its own
    teacher when the method changes this section. Teacher and student alike.
    """

    backbone: str = "resnet10t"
    dim: int = 128
    feature_index: int = -1
    pretrained: bool = False
    head_input: str = "tokens"
    token_bias: bool = True
    init: str = "scratch"
    embed_init: str = "default"
    student_init: str = "scratch"
    input_norm: str = "imagenet"
    input_rotate: str = "crop"

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"ModelConfig.dim must be >= 1, got {self.dim}")
        if self.head_input not in HEAD_INPUTS:
            raise ValueError(f"ModelConfig.head_input must be one of {HEAD_INPUTS}, "
                             f"got {self.head_input!r}")
        if self.init not in INITS:
            raise ValueError(f"ModelConfig.init must be one of {INITS}, got {self.init!r}")
        if self.embed_init not in EMBED_INITS:
            raise ValueError(f"ModelConfig.embed_init must be one of {EMBED_INITS}, "
                             f"got {self.embed_init!r}")
        if self.student_init not in STUDENT_INITS:
            raise ValueError(f"ModelConfig.student_init must be one of {STUDENT_INITS}, "
                             f"got {self.student_init!r}")
        for name, allowed in (("input_norm", INPUT_NORMS), ("input_rotate", ROTATES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"ModelConfig.{name} must be one of {allowed}, "
                                 f"got {getattr(self, name)!r}")
        if self.input_norm == "none" and self.init == "ssl":
            raise ValueError("ModelConfig.input_norm='none' with init='ssl' is not offered: the "
                             "SSL backbone is pretrained on ImageNet-normalised views")
        if not isinstance(self.token_bias, bool):
            raise ValueError(f"ModelConfig.token_bias must be a bool, got {self.token_bias!r}")
        if self.backbone not in timm.list_models() and not timm.is_model(self.backbone):
            raise ValueError(f"ModelConfig.backbone: timm has no model named {self.backbone!r}")


@dataclass
class ClassifierOutput:
    """What a forward pass returns.

    logits (B, K); features F (B, C, h, w), the backbone's map before the embedding;
    tokens T (B, h*w, d), the embedded map flattened.
    """

    logits: torch.Tensor
    features: torch.Tensor
    tokens: torch.Tensor


def create_backbone(cfg: ModelConfig) -> nn.Module:
    """timm backbone returning one feature map; a clear error when weights can't be fetched."""
    try:
        return timm.create_model(
            cfg.backbone,
            pretrained=cfg.pretrained,
            features_only=True,
            out_indices=(cfg.feature_index,),
        )
    except Exception as err:  # network, hub or missing-weights errors all land here
        if not cfg.pretrained:
            raise
        raise RuntimeError(
            f"Could not load pretrained weights for {cfg.backbone!r} "
            f"({type(err).__name__}: {err}). "
            "The weights come from the Hugging Face hub; where it is not reachable, "
            "use pretrained=False (the default) or pre-populate the hub cache."
        ) from err


class Classifier(nn.Module):
    """Backbone + 1x1 embed to d + global average pool + linear head (docs/method.md, Stage 1)."""

    def __init__(self, cfg: ModelConfig, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"Classifier: num_classes must be >= 2, got {num_classes}")
        self.cfg = cfg
        self.num_classes = num_classes
        self.backbone = create_backbone(cfg)
        info = self.backbone.feature_info
        self.feature_channels: int = info.channels()[-1]
        self.reduction: int = info.reduction()[-1]
        self.embed = nn.Conv2d(self.feature_channels, cfg.dim, kernel_size=1,
                               bias=cfg.token_bias)
        if cfg.embed_init == "kaiming_fan_out":
            nn.init.kaiming_normal_(self.embed.weight, mode="fan_out", nonlinearity="relu")
        width = cfg.dim if cfg.head_input == "tokens" else self.feature_channels
        self.fc = nn.Linear(width, num_classes)

    def head(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """F (B, C, h, w) -> (logits (B, K), tokens (B, h*w, d)). Used again by Grad-CAM.

        logits = fc(GAP(E)) with ``head_input="tokens"``, fc(GAP(F)) with ``"backbone"``."""
        embedded = self.embed(features)
        pooled = embedded if self.cfg.head_input == "tokens" else features
        logits = self.fc(pooled.mean(dim=(2, 3)))
        return logits, embedded.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        features = self.backbone(x)[-1]
        logits, tokens = self.head(features)
        return ClassifierOutput(logits=logits, features=features, tokens=tokens)


def freeze(model: nn.Module) -> nn.Module:
    """Freeze a trained teacher: eval mode, no gradients; returns the model for chaining.

    Keep calling ``model.eval()`` after any ``.train()`` of a parent module: the distillers
    do this in their ``train()`` override.
    """
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
        p.grad = None  # gradients left from the teacher's own training are dead weight
    return model


def input_settings(model: nn.Module) -> tuple[str, str]:
    """``(input_norm, input_rotate)`` of the model config of a :class:`Classifier` or of a
    distiller's student: what the network is fed (:class:`ModelConfig`); the kit's
    ``("imagenet", "crop")`` for a module without one."""
    cfg = getattr(model, "cfg", None) or getattr(getattr(model, "student", None), "cfg", None)
    return getattr(cfg, "input_norm", "imagenet"), getattr(cfg, "input_rotate", "crop")


@contextmanager
def eval_mode(model: nn.Module):
    """``with eval_mode(model) as m:`` the model in eval mode; its train/eval mode is restored
    on exit, also after an error. (It does not move the model: callers do that.)"""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
