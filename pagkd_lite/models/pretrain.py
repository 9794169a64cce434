"""A self-supervised start: SimCLR (Chen et al., ICML 2020) on the unlabelled training images.

The paper starts teacher and student from the same ImageNet weights. Where those are not
wanted (no hub, or a backbone without them), ``model.init = "ssl"`` starts both from one
backbone pretrained here, on the images the run may train on: the WLI and NBI TRAINING
images of the current data, without their labels. Validation and test images never enter
(:func:`pretrain` takes two image tensors, nothing else; ``pipeline.pretrained_backbone``
passes ``sets["wli_train"].images`` and ``sets["nbi_train"].images``).

One step, for a batch of ``B`` uint8 images ``x`` (B, 3, H, W) drawn from both modalities
mixed::

    v1, v2 = aug(x), aug(x)                 two random views     (B, 3, H, W) each
    h      = GAP(backbone(v))               pooled feature map   (2B, C)
    z      = W2 relu(W1 h + b1) + b2        projection head      (2B, p)   p = proj_dim
    loss   = NT-Xent(z[:B], z[B:], tau)     scalar

NT-Xent (normalised temperature-scaled cross entropy) over the 2B projections ``z_i``,
with ``s(a, b) = a.b / (|a| |b|)`` and ``p(i)`` the other view of image i
(``p(i) = i + B mod 2B``)::

    l_i  = -log( exp(s(z_i, z_p(i)) / tau) / sum_{k != i} exp(s(z_i, z_k) / tau) )
    loss = (1 / 2B) sum_i l_i

Every other image of the batch, in either view and either modality, is a negative. The
projection head is thrown away after pretraining; only the backbone is kept (its BatchNorm
running statistics included).

The views (:func:`augment`, in torch on the device, one ``grid_sample`` per batch):

* random resized crop: a rectangle of ``crop_scale`` to 1 of the image's area, aspect ratio
  3/4 to 4/3 (narrowed where the rectangle would not fit), anywhere inside the image,
  resampled to the full size (bilinear);
* one of the four 90-degree rotations and a horizontal flip with probability 1/2 (with the
  rotations this covers the vertical flip; endoscopy has no canonical orientation);
* colour jitter: brightness, contrast and saturation each scaled by a factor drawn from
  ``[1 - color_jitter, 1 + color_jitter]``, in that order, clipped to [0, 1].

Choices kept simple for teaching: Adam instead of SimCLR's LARS (the batches here are tens of
images, not thousands), no blur, no hue jitter, a fixed jitter order, the loss in fp32 (the
run's ``runtime`` settings are not applied).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data.transforms import normalize, to_float
from .classifier import ModelConfig, create_backbone

#: Rec. 601 luma weights: the grey image used by the contrast and saturation jitter
LUMA = (0.299, 0.587, 0.114)


@dataclass
class PretrainConfig:
    """SimCLR settings (the ``pretrain`` section of :class:`~pagkd_lite.config.Config`).

    Attributes:
        epochs: passes of ``steps_per_epoch`` steps.
        batch_size: B images per step (2B views); capped at the number of images.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        temperature: tau of NT-Xent (SimCLR's CIFAR-10 runs with small batches: 0.5).
        proj_dim: p, the projection head's output width (its hidden width is C, the
            backbone's channel count).
        steps_per_epoch: steps per epoch; 0 = one pass over the pooled WLI + NBI training
            images (``N // batch_size``, at least 1).
        crop_scale: smallest share of the image's area a random crop keeps (0 < s <= 1).
        color_jitter: strength j of the brightness, contrast and saturation jitter
            (factors in ``[1 - j, 1 + j]``; 0 <= j < 1).
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-6
    temperature: float = 0.5
    proj_dim: int = 64
    steps_per_epoch: int = 0
    crop_scale: float = 0.3
    color_jitter: float = 0.4

    def __post_init__(self) -> None:
        for name, low in (("epochs", 1), ("batch_size", 2), ("proj_dim", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"PretrainConfig.{name} must be >= {low}, "
                                 f"got {getattr(self, name)}")
        for name in ("lr", "temperature"):
            if not getattr(self, name) > 0:  # also refuses nan
                raise ValueError(f"PretrainConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "steps_per_epoch"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"PretrainConfig.{name} must be >= 0, "
                                 f"got {getattr(self, name)}")
        if not 0 < self.crop_scale <= 1:
            raise ValueError(f"PretrainConfig.crop_scale must be > 0 and <= 1, "
                             f"got {self.crop_scale}")
        if not 0 <= self.color_jitter < 1:
            raise ValueError(f"PretrainConfig.color_jitter must be >= 0 and < 1, "
                             f"got {self.color_jitter}")


# ------------------------------------------------------------------------------- the loss
def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """NT-Xent of two views (module docstring): ``z1``, ``z2`` (B, p), row i of each the two
    views of image i. Returns the mean over the 2B anchors (a scalar).

    Batched: ``S = Zn Zn^T / tau`` (2B, 2B) of the L2-normalised rows ``Zn``, the diagonal
    (an anchor with itself) set to -inf, then a cross entropy whose target for row i is
    ``i + B mod 2B``. The loop version is :func:`pagkd_lite.method.reference.nt_xent_loop`.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"nt_xent: z1 and z2 must both be (B, p), got {tuple(z1.shape)} "
                         f"and {tuple(z2.shape)}")
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    self_pair = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_pair, float("-inf"))
    target = (torch.arange(2 * b, device=z.device) + b) % (2 * b)
    return F.cross_entropy(sim, target)


# ------------------------------------------------------------------------------- the views
def augment(x: Tensor, cfg: PretrainConfig, generator: torch.Generator | None = None) -> Tensor:
    """One random view of each image (module docstring): crop, 90-degree rotation, flip,
    colour jitter. ``x`` (B, 3, H, W) float in [0, 1] on any device; the random draws come
    from ``generator`` on the CPU (so a seed gives the same views on every device).
    Returns (B, 3, H, W) in [0, 1]."""
    b = x.shape[0]

    def uniform(low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(b, generator=generator)

    # crop: half-widths (sw, sh) in normalised coordinates ([-1, 1] is the whole image)
    # aspect ratio r within [3/4, 4/3] AND [area, 1/area], so the crop fits (sw, sh <= 1)
    # and keeps its drawn area exactly; crop_scale = 1 is no crop at all
    area = uniform(cfg.crop_scale, 1.0)
    low = area.log().clamp(min=math.log(3 / 4))
    ratio = torch.exp(low + (-low - low) * torch.rand(b, generator=generator))
    sw, sh = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)
    cx, cy = uniform(-1, 1) * (1 - sw), uniform(-1, 1) * (1 - sh)
    quarter = torch.randint(0, 4, (b,), generator=generator).float() * (math.pi / 2)
    flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(quarter).round(), torch.sin(quarter).round()  # exact 0, +-1
    # input point = diag(sw, sh) @ R(quarter) @ diag(flip, 1) @ output point + (cx, cy)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = sw * cos * flip, -sw * sin, cx
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sh * sin * flip, sh * cos, cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    j = cfg.color_jitter
    bright, contrast, sat = (uniform(1 - j, 1 + j).to(x.device, x.dtype).view(b, 1, 1, 1)
                             for _ in range(3))
    luma = x.new_tensor(LUMA).view(1, 3, 1, 1)
    x = (x * bright).clamp(0, 1)
    mean = (x * luma).sum(1, keepdim=True).mean(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1)
    x = ((x - mean) * contrast + mean).clamp(0, 1)
    grey = (x * luma).sum(1, keepdim=True)  # (B, 1, H, W)
    return ((x - grey) * sat + grey).clamp(0, 1)


# ------------------------------------------------------------------------------- the model
class SimCLR(nn.Module):
    """The backbone of ``model_cfg`` (:func:`pagkd_lite.models.classifier.create_backbone`,
    the same module a :class:`~pagkd_lite.models.classifier.Classifier` holds, so its state
    dict loads there) and a 2-layer projection head: x (B, 3, H, W) -> z (B, proj_dim)."""

    def __init__(self, model_cfg: ModelConfig, proj_dim: int) -> None:
        super().__init__()
        self.backbone = create_backbone(model_cfg)
        c = self.backbone.feature_info.channels()[-1]
        self.projector = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True),
                                       nn.Linear(c, proj_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.projector(self.backbone(x)[-1].mean(dim=(2, 3)))


@dataclass
class PretrainResult:
    """What :func:`pretrain` returns: the backbone's weights (CPU tensors), one record per
    epoch (``{"epoch", "loss"}``, the mean NT-Xent of its steps) and the training time."""

    backbone: dict[str, Tensor]
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    n_images: dict[str, int] = field(default_factory=dict)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless batches of ``batch_size`` indices: one random permutation of ``range(n)``
    after another (a batch never holds an image twice when ``batch_size <= n``)."""
    pool = torch.empty(0, dtype=torch.long)
    while True:
        while len(pool) < batch_size:
            pool = torch.cat([pool, torch.randperm(n, generator=generator)])
        yield pool[:batch_size]
        pool = pool[batch_size:]


def pretrain(model_cfg: ModelConfig, wli_train: Tensor, nbi_train: Tensor, cfg: PretrainConfig,
             device: torch.device | str = "cpu", seed: int = 0, progress: bool = True,
             desc: str = "ssl") -> PretrainResult:
    """SimCLR on the pooled, unlabelled WLI and NBI training images; returns the backbone.

    Args:
        model_cfg: the backbone to pretrain (``backbone``, ``feature_index``, ``pretrained``).
        wli_train, nbi_train: uint8 images (N_w, 3, H, W) and (N_n, 3, H, W): the two
            TRAINING sets' ``images``, nothing else (no labels, no other split).
        cfg: the schedule and augmentation (:class:`PretrainConfig`).
        device: where to train.
        seed: initial weights (drawn inside ``torch.random.fork_rng``, so the caller's
            global random state is left as it was), batches and views.
        progress: a tqdm bar per epoch, as in ``train.fit``.
        desc: the bar's label.
    """
    for name, t in (("wli_train", wli_train), ("nbi_train", nbi_train)):
        if not isinstance(t, Tensor) or t.dtype != torch.uint8 or t.ndim != 4 or t.shape[1] != 3:
            raise ValueError(f"pretrain: {name} must be uint8 images (N, 3, H, W), got "
                             f"{getattr(t, 'dtype', type(t).__name__)} "
                             f"{tuple(getattr(t, 'shape', ()))}")
    if wli_train.shape[2:] != nbi_train.shape[2:]:
        raise ValueError(f"pretrain: WLI images are {tuple(wli_train.shape[2:])}, NBI images "
                         f"{tuple(nbi_train.shape[2:])}; both must have one size")
    images = torch.cat([wli_train, nbi_train])
    n = len(images)
    if n < 2:
        raise ValueError(f"pretrain: needs at least 2 training images, got {n}")
    device = torch.device(device)
    batch_size = min(cfg.batch_size, n)
    steps = cfg.steps_per_epoch or max(1, n // batch_size)
    history: list[dict] = []
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SimCLR(model_cfg, cfg.proj_dim).to(device).train()
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        order = torch.Generator().manual_seed(seed * 10_007 + 11)
        views = torch.Generator().manual_seed(seed * 10_007 + 13)
        batches = _batches(n, batch_size, order)
        for epoch in range(cfg.epochs):
            total = 0.0
            bar = tqdm(range(steps), desc=f"{desc} {epoch + 1}/{cfg.epochs}", leave=False,
                       disable=not progress)
            for _ in bar:
                x = to_float(images[next(batches)].to(device, non_blocking=True))
                v = torch.cat([augment(x, cfg, views), augment(x, cfg, views)])
                z = model(normalize(v))
                loss = nt_xent(z[:batch_size], z[batch_size:], cfg.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
            history.append({"epoch": epoch, "loss": total / steps})
    state = {k: v.detach().cpu().clone() for k, v in model.backbone.state_dict().items()}
    return PretrainResult(backbone=state, history=history, seconds=time.perf_counter() - t0,
                          n_images={"wli_train": len(wli_train), "nbi_train": len(nbi_train)})
