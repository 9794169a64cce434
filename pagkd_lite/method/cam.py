"""Activation maps for GKD-Den: Grad-CAM, PAR refinement and token labels.

GKD-Den (Hu et al., AAAI 2026, arXiv 2601.09209) needs, for every image, a label per
token: foreground (lesion), background or uncertain. They come from the ground-truth
class's Grad-CAM (Selvaraju et al., ICCV 2017) on the last feature map, refined over the
image by pixel-adaptive refinement (PAR; Ru et al., "Learning Affinity from Attention:
End-to-End Weakly-Supervised Semantic Segmentation with Transformers", CVPR 2022), then
thresholded at token resolution.

Choices that differ from the authors' research code (see ``docs/method.md``):

* Grad-CAM uses ``create_graph=False`` (authors: ``True``). The maps only feed discrete
  labels, so a second-order graph is wasted memory and time. The output is detached.
* PAR keeps the colour (pixel-adaptive) kernel only, as the authors' ``utils/PAR.py`` does
  (it builds the positional term of Ru et al. but never uses it). It upsamples the map to
  its working resolution with ``align_corners=False`` by default; the authors'
  ``PAR.forward`` uses ``True`` (``labels.par_align_corners=true``: about 11 % of token labels
  differ on smooth random CAMs, docs/fidelity.md).

:func:`cam_token_labels` is the ONE chain from a CAM to token labels: training
(:mod:`pagkd_lite.method.distill`), :mod:`pagkd_lite.apps.diagnose`, the notebooks and the
site all call it, configured by :class:`TokenLabelConfig` (a run's ``labels`` section). Two
rules (``labels.rule``): the kit's (PAR on the CAM, average-pooled to the token grid, cut at
``high`` / ``low``) and the authors' (``utils/camutils.py``, ``refine_cams_with_bkg_v3``:
PAR on the two-channel softmax of [background score, CAM], bilinear to the token grid,
argmax; see :func:`authors_token_labels`). ``par_iters = 0`` means no refinement at all: the
CAM is already at the token grid, so nothing is resampled and no neighbour is visited.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.accel import at_least_float32, float32_region

LABEL_RULES = ("kit", "authors")
#: where GKD-Den's token labels come from: the Grad-CAM chain (the method), or SynthEndo's
#: true lesion masks (a reference: ``oracle_masks``, and the label dose-response)
LABEL_SOURCES = ("cam", "mask")


@dataclass
class TokenLabelConfig:
    """How a Grad-CAM becomes GKD-Den's token labels (:func:`cam_token_labels`); the
    ``labels`` section of a run's config.

    Attributes:
        high, low: thresholds on the (refined) CAM, ``0 <= low < high <= 1``: a token is
            foreground above ``high``, background below ``low``, uncertain between
            (:func:`token_labels`).
        par_scale: PAR's working resolution is the image size / ``par_scale`` (2 = half
            resolution, the paper's PAR; 4 is about 4x cheaper).
        par_iters: PAR propagation steps (paper: 10). 0 = no refinement at all: the raw
            CAM, which is already at the token grid, is cut at the thresholds (no
            resampling, no neighbour work).
        par_dilations: PAR's neighbour distances in pixels of its working resolution
            (paper: ``1, 2, 4, 8``, made for 448-px images, 14 x 14 tokens of 16 px at half
            resolution). ``1, 2, 4`` keeps the same reach per token at 64 px and 4 x 4 tokens
            (8 px each); see docs/results.md, "The diagnostic chain".
        rule: ``"kit"`` (refined CAM average-pooled to the token grid, then ``> high`` /
            ``< low``) or ``"authors"`` (PAR on the two-channel softmax of [background
            score, CAM], bilinear to the token grid, argmax; once with ``high`` and once with
            ``low`` as the background score: :func:`authors_token_labels`).
        source: ``"cam"`` (the chain above, the method) or ``"mask"`` (the true lesion masks
            under the batch's augmentation, average-pooled to the token grid and cut at
            ``high`` / ``low`` like a refined CAM; SynthEndo only: a reference, never a
            pairing-free method).
        flip_rate: rho, the share of CERTAIN token labels flipped (foreground <->
            background), each independently with probability rho, drawn from the step's
            own generator (``Distiller.generator``); uncertain labels stay uncertain. 0 (the
            default): none. With ``source="mask"`` it sets the labels' accuracy to about
            ``1 - rho``: the label dose-response (docs/results.md).
        par_align_corners: how PAR upsamples the CAM to its working resolution (bilinear):
            ``False`` (the kit's default) or ``True`` (the authors' ``utils/PAR.py``,
            ``PAR.forward``). Both rules; unused when ``par_iters == 0``.
    """

    high: float = 0.7
    low: float = 0.3
    par_scale: int = 2
    par_iters: int = 10
    par_dilations: tuple[int, ...] = (1, 2, 4, 8)
    rule: str = "kit"
    source: str = "cam"
    flip_rate: float = 0.0
    par_align_corners: bool = False

    def __post_init__(self) -> None:
        if self.rule not in LABEL_RULES:
            raise ValueError(f"TokenLabelConfig.rule must be one of {LABEL_RULES}, "
                             f"got {self.rule!r}")
        if self.source not in LABEL_SOURCES:
            raise ValueError(f"TokenLabelConfig.source must be one of {LABEL_SOURCES}, "
                             f"got {self.source!r}")
        if not isinstance(self.par_align_corners, bool):
            raise ValueError(f"TokenLabelConfig.par_align_corners must be a bool, "
                             f"got {self.par_align_corners!r}")
        if not 0.0 <= self.flip_rate <= 1.0:
            raise ValueError(f"TokenLabelConfig.flip_rate must be in [0, 1], "
                             f"got {self.flip_rate!r}")
        if self.par_scale < 1 or self.par_iters < 0:
            raise ValueError(f"TokenLabelConfig: need par_scale >= 1 and par_iters >= 0, got "
                             f"par_scale={self.par_scale}, par_iters={self.par_iters}")
        dil = tuple(self.par_dilations)
        if not dil or not all(isinstance(d, int) and d >= 1 for d in dil):
            raise ValueError(f"TokenLabelConfig: par_dilations must be positive ints, e.g. "
                             f"1,2,4,8; got {self.par_dilations!r}")
        self.par_dilations = dil
        if not (0.0 <= self.low < self.high <= 1.0):
            raise ValueError(f"TokenLabelConfig: need 0 <= low < high <= 1, got "
                             f"low={self.low}, high={self.high}")


# the 8 neighbours of a 3 x 3 window, as (dy, dx) in units of the dilation
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def minmax_normalise(maps: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-map min-max normalisation of ``(B, h, w)`` to ``[0, 1]``; a constant map -> 0."""
    flat = maps.flatten(1)
    lo = flat.min(dim=1).values[:, None, None]
    hi = flat.max(dim=1).values[:, None, None]
    rng = hi - lo
    return torch.where(rng > eps, (maps - lo) / rng.clamp_min(eps), torch.zeros_like(maps))


def grad_cam(logits: Tensor, feature_map: Tensor, labels: Tensor) -> Tensor:
    """Grad-CAM of the ground-truth class (Selvaraju et al., ICCV 2017).

    ``alpha_{b,c} = mean_{ij} d y_{b, label_b} / d F_{b,c,i,j}``,
    ``CAM_b = ReLU(sum_c alpha_{b,c} F_{b,c})``, then min-max normalised per image
    (a constant map becomes zeros).

    Gradients come from ``torch.autograd.grad(..., retain_graph=True,
    create_graph=False)`` so the caller can still back-propagate its losses through
    ``logits``; nothing is accumulated in ``.grad``. For a frozen teacher, run its head on
    ``F.detach().requires_grad_()`` so that ``feature_map`` is part of the graph.

    Args:
        logits: ``(B, K)``, computed from ``feature_map``.
        feature_map: ``(B, C, h, w)``, part of the autograd graph of ``logits``.
        labels: ``(B,)`` long, the class whose map is taken.

    Returns:
        Detached ``(B, h, w)`` maps in ``[0, 1]``.
    """
    if logits.ndim != 2 or feature_map.ndim != 4 or logits.shape[0] != feature_map.shape[0]:
        raise ValueError(
            f"grad_cam: logits must be (B, K) and feature_map (B, C, h, w) with the same B, "
            f"got {tuple(logits.shape)} and {tuple(feature_map.shape)}"
        )
    if labels.shape != (logits.shape[0],):
        raise ValueError(
            f"grad_cam: labels must be ({logits.shape[0]},), got {tuple(labels.shape)}"
        )
    if not (feature_map.requires_grad and logits.requires_grad):
        raise ValueError(
            "grad_cam: feature_map must be part of the autograd graph of logits "
            "(requires_grad); for a frozen network use F.detach().requires_grad_() "
            "before the head and do not run it under torch.no_grad()"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
        raise ValueError(f"grad_cam: labels must lie in [0, {logits.shape[1]})")
    score = logits.gather(1, labels.long()[:, None]).sum()
    (grads,) = torch.autograd.grad(
        score, feature_map, retain_graph=True, create_graph=False, allow_unused=True
    )
    if grads is None:
        raise ValueError("grad_cam: logits do not depend on feature_map")
    with torch.no_grad(), float32_region(grads):  # float32 maps, also under bf16 autocast
        weights = at_least_float32(grads).mean(dim=(2, 3))  # (B, C)
        fmap = at_least_float32(feature_map.detach())
        cam = torch.relu(torch.einsum("bc,bchw->bhw", weights, fmap))
        return minmax_normalise(cam)


def _offsets(dilations: tuple[int, ...]) -> list[tuple[int, int]]:
    """(dy, dx) of the 8 neighbours at each dilation, in :data:`NEIGHBOURS` order."""
    return [(dy * d, dx * d) for d in dilations for dy, dx in NEIGHBOURS]


def _all_neighbours(x: Tensor, dilations: tuple[int, ...]) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, C, 8 * len(dilations), H, W)``, replicate padding.

    One padding by the largest dilation, then one shifted view per neighbour, stacked:
    a single copy, cheaper than ``unfold`` per dilation.
    """
    h, w = x.shape[-2:]
    p = max(dilations)
    padded = F.pad(x, (p, p, p, p), mode="replicate")
    return torch.stack(
        [padded[..., p + dy : p + dy + h, p + dx : p + dx + w] for dy, dx in _offsets(dilations)],
        dim=2,
    )


def par_refine(
    image: Tensor, cam: Tensor, dilations: tuple[int, ...] = (1, 2, 4, 8), num_iter: int = 10,
    w_colour: float = 0.3, eps: float = 1e-8, scale: int = 2, align_corners: bool = False,
) -> Tensor:
    """Pixel-adaptive refinement of activation maps (PAR, Ru et al., CVPR 2022).

    At 1/``scale`` of the image resolution (default half, ``H/2 x W/2``, bilinear), for
    pixel ``i`` and its neighbours ``j`` (8 per dilation, replicate padding at the border)::

        kappa_ij = - mean_channels( |I_i - I_j| / (w_colour * sigma_i) )^2
        a_ij     = softmax_j(kappa_ij)
        M_{t+1}(i) = sum_j a_ij M_t(j)          (num_iter times)

    with ``sigma_i`` the standard deviation (per channel, unbiased) of the colours of
    ``i``'s neighbours. ``M_0`` is ``cam`` upsampled bilinearly to the working resolution
    (``align_corners`` as given: the kit's ``False``, the authors' ``True``). Each
    step is a convex combination, so values stay in the range of ``cam``. The positional
    kernel of Ru et al. is omitted. No gradient flows (the result only feeds labels).

    Args:
        image: ``(B, 3, H, W)`` float (any scale; uint8 is converted); ``H, W >= 2``.
        cam: ``(B, h, w)`` maps (e.g. from :func:`grad_cam`), or ``(B, C, h, w)``: C maps
            per image, each propagated with the same affinities.
        dilations: neighbour distances.
        num_iter: propagation steps.
        w_colour: colour-kernel width (Ru et al.: 0.3).
        eps: added to ``sigma``.
        scale: downsampling factor of the working resolution (2 = half resolution, the
            paper's; 4 = quarter, about 4x cheaper).
        align_corners: of the CAM's bilinear upsampling (the image is always resampled with
            ``False``, as in the authors' ``refine_cams_with_bkg_v3``).

    Returns:
        ``(B, H // scale, W // scale)`` refined maps (``(B, C, ...)`` for a ``(B, C, h, w)``
        input).
    """
    if image.ndim != 4 or cam.ndim not in (3, 4) or image.shape[0] != cam.shape[0]:
        raise ValueError(
            f"par_refine: image must be (B, C, H, W) and cam (B, h, w) with the same B, "
            f"got {tuple(image.shape)} and {tuple(cam.shape)}"
        )
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"par_refine: scale must be an int >= 1, got {scale!r}")
    if image.shape[-2] < 2 * scale or image.shape[-1] < 2 * scale:
        raise ValueError(f"par_refine: image {tuple(image.shape)} too small for scale {scale}")
    if num_iter < 0 or not dilations or min(dilations) < 1:
        raise ValueError("par_refine: need num_iter >= 0 and dilations of positive ints")
    with torch.no_grad():
        size = (image.shape[-2] // scale, image.shape[-1] // scale)
        img = image.float() if not image.is_floating_point() else image
        img = F.interpolate(img.detach(), size=size, mode="bilinear", align_corners=False)
        maps = cam.detach()[:, None] if cam.ndim == 3 else cam.detach()
        m = F.interpolate(maps.to(img.dtype), size=size, mode="bilinear",
                          align_corners=align_corners)
        nb = _all_neighbours(img, dilations)  # (B, C, N, h, w)
        n = nb.shape[2]  # unbiased std over the neighbours, from two means (faster)
        mean = nb.mean(dim=2, keepdim=True)
        var = (nb.square().mean(dim=2, keepdim=True) - mean.square()) * (n / (n - 1))
        sigma = var.clamp_min(0).sqrt()
        # kappa = -mean_c (|I_i - I_j| / (w sigma_i))^2, computed in place: no abs needed
        inv = (w_colour * (sigma + eps)).square_().reciprocal_()
        kappa = (nb - img[:, :, None]).square_().mul_(inv).mean(dim=1, keepdim=True).neg_()
        aff = torch.softmax(kappa, dim=2)  # (B, 1, N, h, w)
        for _ in range(num_iter):
            m = (_all_neighbours(m, dilations) * aff).sum(dim=2)
        return m[:, 0] if cam.ndim == 3 else m


def flip_labels(labels: Tensor, rate: float, generator: torch.Generator | None) -> Tensor:
    """Token labels with each CERTAIN one (0 or 1) flipped with probability ``rate``.

    ``labels (B, hw)`` long in ``{-1, 0, 1}``; the draws are ``torch.rand`` on the CPU from
    ``generator`` (None: torch's global stream), one per token, so the result does not
    depend on the device. Uncertain labels (-1) are returned as they are. ``rate = 0``
    returns ``labels`` itself and draws nothing."""
    if rate == 0.0:
        return labels
    draw = torch.rand(labels.shape, generator=generator).to(labels.device)
    flip = (draw < rate) & (labels >= 0)
    return torch.where(flip, 1 - labels, labels)


def token_labels(
    refined_cam: Tensor, token_hw: tuple[int, int], high: float = 0.7, low: float = 0.3,
) -> Tensor:
    """Foreground / background / uncertain label per token.

    The map is average-pooled (adaptive) to the token grid ``h x w`` (a map already at
    ``h x w`` is used as it is), then ``1`` (foreground) where ``cam > high``, ``0``
    (background) where ``cam < low``, ``-1`` (uncertain) otherwise.

    Args:
        refined_cam: ``(B, H', W')`` maps in ``[0, 1]``.
        token_hw: ``(h, w)`` of the token grid.
        high, low: thresholds, ``0 <= low < high <= 1``.

    Returns:
        ``(B, h * w)`` long in ``{-1, 0, 1}``, row-major like ``F.flatten(2)``.
    """
    if not (0.0 <= low < high <= 1.0):
        raise ValueError(f"token_labels: need 0 <= low < high <= 1, got low={low}, high={high}")
    if refined_cam.ndim != 3:
        raise ValueError(
            f"token_labels: refined_cam must be (B, H, W), got {tuple(refined_cam.shape)}"
        )
    h, w = token_hw
    cam = refined_cam.detach()
    cam = cam if cam.is_floating_point() else cam.float()
    if tuple(cam.shape[-2:]) == (h, w):
        pooled = cam
    else:
        pooled = F.adaptive_avg_pool2d(cam[:, None], (h, w))[:, 0]
    lab = torch.full(pooled.shape, -1, dtype=torch.long, device=pooled.device)
    lab[pooled > high] = 1
    lab[pooled < low] = 0
    return lab.flatten(1)


def authors_token_labels(image: Tensor, cam: Tensor, token_hw: tuple[int, int],
                         cfg: TokenLabelConfig) -> tuple[Tensor, Tensor]:
    """Token labels by the authors' rule (``utils/camutils.py``, ``refine_cams_with_bkg_v3``).

    For each background score ``t`` in (``high``, ``low``)::

        P_t = softmax over channels of [t, CAM]              (B, 2, h, w)
        P_t <- PAR(image, P_t)                               (if par_iters > 0)
        P_t <- bilinear resize of P_t to the token grid
        win_t = P_t[:, 1] > P_t[:, 0]                        (the CAM beats the score; a tie
                                                              goes to the background, as argmax)

    label = 1 where ``win_high``; 0 where neither wins; -1 (uncertain) otherwise.

    Args:
        image: ``(B, 3, H, W)`` in [0, 1]; cam: ``(B, h, w)`` in [0, 1];
        token_hw: ``(h, w)``; cfg: ``high``, ``low`` and the ``par_*`` fields.

    Returns:
        ``(labels (B, h*w) long, P_high[:, 1] (B, H', W'): the refined foreground
        probability against the high score, the map the labels were read from)``.
    """
    # both scores' two-channel maps as 4 channels [t_high, CAM | t_low, CAM]: one PAR call,
    # so the affinities and neighbour shifts are computed once (channels stay independent)
    probs = torch.cat([torch.softmax(torch.stack([torch.full_like(cam, t), cam], dim=1), dim=1)
                       for t in (cfg.high, cfg.low)], dim=1)
    if cfg.par_iters > 0:
        probs = par_refine(image, probs, cfg.par_dilations, num_iter=cfg.par_iters,
                           scale=cfg.par_scale, align_corners=cfg.par_align_corners)
    shown = probs[:, 1]
    if tuple(probs.shape[-2:]) != tuple(token_hw):
        probs = F.interpolate(probs, size=token_hw, mode="bilinear", align_corners=False)
    win_high, win_low = probs[:, 1] > probs[:, 0], probs[:, 3] > probs[:, 2]
    lab = torch.full(win_high.shape, -1, dtype=torch.long, device=cam.device)
    lab[~win_high & ~win_low] = 0
    lab[win_high] = 1
    return lab.flatten(1), shown


def cam_token_labels(image: Tensor, cam: Tensor, token_hw: tuple[int, int],
                     cfg: TokenLabelConfig) -> tuple[Tensor, Tensor]:
    """The one CAM -> token-label chain of the kit (training, diagnose, notebooks).

    ``cfg.rule == "kit"``: ``M = PAR(image, CAM)`` (or ``M = CAM`` when
    ``cfg.par_iters == 0``: no resampling, no neighbour work), then
    :func:`token_labels` at ``cfg.high`` / ``cfg.low``. ``"authors"``:
    :func:`authors_token_labels`.

    Args:
        image: ``(B, 3, H, W)`` in [0, 1], the augmented images the CAM was taken on.
        cam: ``(B, h, w)`` Grad-CAMs in [0, 1] at the token grid.
        token_hw: ``(h, w)``.
        cfg: a :class:`TokenLabelConfig` (thresholds, PAR, rule).

    Returns:
        ``(labels (B, h*w) long in {1, 0, -1}, map (B, H', W'))``: the map the labels were
        read from (the raw CAM when nothing is refined).
    """
    with torch.no_grad():
        if cfg.rule == "authors":
            return authors_token_labels(image, cam, token_hw, cfg)
        refined = cam if cfg.par_iters == 0 else par_refine(
            image, cam, cfg.par_dilations, num_iter=cfg.par_iters, scale=cfg.par_scale,
            align_corners=cfg.par_align_corners)
        return token_labels(refined, token_hw, high=cfg.high, low=cfg.low), refined
