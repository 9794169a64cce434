"""SynthEndo's renderer: a latent scene (:mod:`pagkd_lite.data.synth_latents`) -> a WLI or an NBI
image, and the lesion mask.

Stages, in order (:func:`render_stages` returns each): geometry, class pattern, background,
shading, acquisition, colour, blur, gamma, noise, uint8. The class patterns, contrasts and
nuisances are described in :mod:`pagkd_lite.data.synthendo`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .synth_latents import _GLINT_TEX, _LESION_EXTENT, SynthLatents, _uniform

if TYPE_CHECKING:
    from .synth_config import SynthEndoConfig

_CHUNK_PIXELS = 64 * 128 * 128  # pixels rendered at once (64 images at 128 px)

# Palettes (sRGB in [0, 1]): mucosa, vessel, pit (white structure), background vessel, and the
# tint a lesion can take (drawn with weight U(0, 1) for every class).
_PALETTE = {
    "WLI": {
        "mucosa": (0.86, 0.50, 0.42),
        "vessel": (0.55, 0.13, 0.15),
        "pit": (0.97, 0.80, 0.74),
        "bg_vessel": (0.62, 0.22, 0.30),
        "tint": (0.80, 0.36, 0.30),
    },
    "NBI": {
        "mucosa": (0.45, 0.56, 0.50),
        "vessel": (0.30, 0.16, 0.09),
        "pit": (0.86, 0.88, 0.82),
        "bg_vessel": (0.12, 0.36, 0.42),
        "tint": (0.52, 0.42, 0.30),
    },
}


def _quantile_mask(score: torch.Tensor, frac: torch.Tensor, tau: float) -> torch.Tensor:
    """Soft mask of the top ``frac`` (per image) of ``score`` ``(B, S, S)``."""
    b = score.shape[0]
    step = max(1, score.shape[-1] // 48)  # about 48 x 48 samples are enough for a quantile
    sub = score[:, ::step, ::step].reshape(b, -1)
    srt = sub.sort(dim=1).values
    k = ((1.0 - frac) * (srt.shape[1] - 1)).round().long().clamp(0, srt.shape[1] - 1)
    t = srt.gather(1, k[:, None]).view(b, 1, 1)
    return torch.sigmoid((score - t) / tau) * (frac > 0).view(b, 1, 1)


def _pattern_frame(qx, qy, fields, p):
    """Warped, rotated pattern coordinates (elongation applied along v)."""
    wa = p["warp_amp"].view(-1, 1, 1)
    wx = qx + wa * fields[:, 0]
    wy = qy + wa * fields[:, 1]
    c = torch.cos(p["pat_theta"]).view(-1, 1, 1)
    s = torch.sin(p["pat_theta"]).view(-1, 1, 1)
    u = c * wx + s * wy + p["pat_offset"][:, 0].view(-1, 1, 1)
    v = (-s * wx + c * wy) / p["elong"].view(-1, 1, 1) + p["pat_offset"][:, 1].view(-1, 1, 1)
    return u, v


def _scores_hyperplastic(qx, qy, fields, p):
    """NICE 1: hexagonal lattice of round, uniform dark spots (crypt openings) in a white
    honeycomb, and a few isolated thin lacy vessels. Returns (dark score, white score)."""
    u, v = _pattern_frame(qx, qy, fields, p)
    k = (4 * math.pi / (math.sqrt(3) * p["pat_period"])).view(-1, 1, 1)
    h = (torch.cos(k * u) + torch.cos(k * (-0.5 * u + 0.8660254 * v))
         + torch.cos(k * (-0.5 * u - 0.8660254 * v)))
    hn = (h + 1.5) / 4.5
    lacy = torch.exp(-(fields[:, 2] / 0.16) ** 2) * torch.sigmoid((fields[:, 3] - 0.5) / 0.15)
    dark = torch.maximum(hn, 0.9 * lacy)
    return dark, 1.0 - hn


def _scores_adenoma(qx, qy, fields, p):
    """NICE 2: dense regular mesh of vessels around oval / tubular pits (staggered cells)."""
    u, v = _pattern_frame(qx, qy, fields, p)
    per = p["pat_period"].view(-1, 1, 1)
    a = math.pi * u / per
    b = math.pi * v / per
    b = b + 0.5 * math.pi * torch.floor(a / math.pi + 0.5)
    ca = torch.cos(a).abs()
    cb = torch.cos(b).abs()
    e = p["elong"].view(-1, 1, 1)
    dark = 1.0 - torch.minimum(ca, (e * cb).clamp(max=1.0))
    light = ca * cb
    return dark, light


def _scores_carcinoma(qx, qy, fields, p):
    """NICE 3: thick, tortuous, interrupted vessels; amorphous surface."""
    line = fields[:, 4] + 0.35 * fields[:, 5]
    gate = torch.sigmoid((fields[:, 3] + 0.35) / 0.12)
    dark = torch.exp(-(line / 0.35) ** 2) * gate
    light = fields[:, 6] + 0.3 * fields[:, 5]
    return dark, light


_SCORES = (_scores_hyperplastic, _scores_adenoma, _scores_carcinoma)


@functools.lru_cache(maxsize=32)
def _bspline_matrix(t_in: int, n_out: int) -> torch.Tensor:
    """``(n_out, t_in)`` matrix that resamples a periodic 1-D signal of ``t_in`` texels at
    ``n_out`` evenly spaced points with the uniform cubic B-spline.

    The B-spline is C2, so fields, and the gradients that shading takes of them, are free of the
    texel-rate ripple that PyTorch's bicubic kernel (a = -0.75) leaves in derivatives.
    """
    u = (torch.arange(n_out, dtype=torch.float64) + 0.5) * t_in / n_out - 0.5
    i0 = torch.floor(u)
    f = u - i0
    w = torch.stack([(1 - f) ** 3, 3 * f ** 3 - 6 * f ** 2 + 4,
                     -3 * f ** 3 + 3 * f ** 2 + 3 * f + 1, f ** 3], 1) / 6.0
    idx = (i0.long()[:, None] + torch.arange(-1, 3)[None, :]) % t_in
    m = torch.zeros(n_out, t_in, dtype=torch.float64)
    m.scatter_add_(1, idx, w)
    return m.float()


def _resample(fields: torch.Tensor, size: int) -> torch.Tensor:
    """Smoothly resample periodic fields ``(B, C, T, T)`` to ``(B, C, size, size)``."""
    m = _bspline_matrix(fields.shape[-1], size)
    return m @ fields @ m.T


def _pixel_grid(s: int) -> tuple[torch.Tensor, torch.Tensor]:
    lin = (torch.arange(s, dtype=torch.float32) + 0.5) / s * 2 - 1
    y, x = torch.meshgrid(lin, lin, indexing="ij")
    return x, y


def _blur(img: torch.Tensor, sigma_px: torch.Tensor) -> torch.Tensor:
    """Per-image separable Gaussian blur of ``(B, C, S, S)``; ``sigma_px`` ``(B,)``."""
    b, c, h, w = img.shape
    r = max(1, math.ceil(3 * float(sigma_px.max())))
    t = torch.arange(-r, r + 1, dtype=torch.float32).view(1, -1)
    k = torch.exp(-0.5 * (t / sigma_px.clamp_min(0.05).view(-1, 1)) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, 2r+1)
    x = img.reshape(1, b * c, h, w)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(b * c, 1, 1, -1),
                 groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(b * c, 1, -1, 1),
                 groups=b * c)
    return x.view(b, c, h, w)


@dataclass
class _Geometry:
    """Where the lesion is in each crop, all ``(B, S, S)``: lesion coordinates ``qx, qy``
    (rotated, zoomed, centred), the outline-normalised radius ``tn`` (1 on the outline), the
    lesion mask and the dome profile (both soft, in [0, 1])."""

    qx: torch.Tensor
    qy: torch.Tensor
    tn: torch.Tensor
    mask: torch.Tensor
    dome: torch.Tensor


def _geometry(p: dict, s: int) -> _Geometry:
    """Stage 1, lesion geometry. The outline is
    ``r(theta) = radius (1 + sum_m a_m cos m theta + b_m sin m theta)``, m = 2..6, with cos/sin
    of m theta by the angle-addition recurrence."""
    x, y = _pixel_grid(s)
    b = p["zoom"].shape[0]
    dx = x - p["center"][:, 0].view(b, 1, 1)
    dy = y - p["center"][:, 1].view(b, 1, 1)
    cr, sr = torch.cos(p["rotation"]).view(b, 1, 1), torch.sin(p["rotation"]).view(b, 1, 1)
    z = p["zoom"].view(b, 1, 1)
    qx = (cr * dx + sr * dy) / z
    qy = (-sr * dx + cr * dy) / z
    rho = torch.sqrt(qx * qx + qy * qy + 1e-8)
    c1, s1 = qx / rho, qy / rho
    cm, sm = c1, s1
    mod = torch.zeros_like(rho)
    for i in range(5):
        cm, sm = cm * c1 - sm * s1, sm * c1 + cm * s1
        mod = mod + p["harm"][:, i, 0].view(b, 1, 1) * cm + p["harm"][:, i, 1].view(b, 1, 1) * sm
    r_theta = p["radius"].view(b, 1, 1) * (1.0 + mod)
    tn = rho / r_theta
    return _Geometry(qx, qy, tn, mask=torch.sigmoid((1.0 - tn) / 0.035),
                     dome=torch.sigmoid((1.0 - tn) / 0.16))


def _class_pattern(labels: torch.Tensor, p: dict, geo: _Geometry, s: int,
                   num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2, the class pattern: soft masks ``(B, S, S)`` of the dark structures (vessels,
    crypts) and the white structures (pits), faded at the lesion rim."""
    b = labels.shape[0]
    grid = torch.stack((geo.qx, geo.qy), -1) / _LESION_EXTENT
    # lesion fields: B-spline upsampled to about 1.5 texels per pixel, then bilinear lookup
    tex = _resample(p["fields"], min(384, max(96, 3 * s // 2)))
    fields = F.grid_sample(tex, grid, mode="bilinear", padding_mode="reflection",
                           align_corners=False)
    dark_s = torch.empty(b, s, s)
    light_s = torch.empty(b, s, s)
    for c in range(num_classes):
        idx = (labels == c).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        pc = {k: t[idx] for k, t in p.items()}
        d, li = _SCORES[c](geo.qx[idx], geo.qy[idx], fields[idx], pc)
        dark_s[idx] = d
        light_s[idx] = li
    dark = _quantile_mask(dark_s, p["dark_frac"], 0.025)
    # white structures: top light_frac of the light score among pixels that are not dark
    light_rank = light_s - 4.0 * dark * (light_s.amax(dim=(1, 2), keepdim=True)
                                         - light_s.amin(dim=(1, 2), keepdim=True))
    lscale = light_s.flatten(1).std(1).view(b, 1, 1).clamp_min(1e-6)
    light = _quantile_mask(light_rank / lscale, p["light_frac"], 0.08) * (1.0 - dark)
    pmask = geo.mask * torch.sigmoid((1.0 - geo.tn) / 0.06)  # pattern fades at the rim
    return dark * pmask, light * pmask


def _background(p: dict, s: int, lesion_mask: torch.Tensor):
    """Stage 3, the background (no class): smooth fields ``bg (B, 4, S, S)``, the fold
    height ``(B, S, S)`` and the background vessels ``(B, S, S)``."""
    b = lesion_mask.shape[0]
    x, y = _pixel_grid(s)
    bg = _resample(p["bg_fields"], s)
    ft = p["fold_theta"].view(b, 1, 1)
    fc = x * torch.cos(ft) + y * torch.sin(ft) + 0.12 * bg[:, 3]
    fold = p["fold_amp"].view(b, 1, 1) * (0.5 + 0.5 * torch.cos(
        2 * math.pi * p["fold_freq"].view(b, 1, 1) * fc + p["fold_phase"].view(b, 1, 1))) ** 2
    # background vessels: zero crossings of a smooth field, drawn at a constant width (distance
    # to the crossing ~ |f| / |grad f|, in half-widths) and gated into separate segments
    fy, fx = torch.gradient(bg[:, 1], spacing=2.0 / s, dim=(1, 2))
    dist = bg[:, 1].abs() * torch.rsqrt(fx * fx + fy * fy + 1e-4)
    bgv = torch.exp(-(dist / 0.018) ** 2) * torch.sigmoid((bg[:, 2] - 0.1) / 0.2)
    bgv = bgv * p["bg_vessel_amt"].view(b, 1, 1) * (1.0 - 0.8 * lesion_mask)
    return bg, fold, bgv


def _shading(p: dict, height: torch.Tensor, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 4, Lambertian diffuse term and Blinn-Phong specular term ``(B, S, S)`` of the
    height field, light direction from the latents, viewer on the axis."""
    b = height.shape[0]
    hy, hx = torch.gradient(height, spacing=2.0 / s, dim=(1, 2))
    nz = torch.rsqrt(1.0 + hx * hx + hy * hy)
    lx = p["light"][:, 0].view(b, 1, 1)
    ly = p["light"][:, 1].view(b, 1, 1)
    ln = torch.rsqrt(1.0 + lx * lx + ly * ly)
    diffuse = ((-hx * lx - hy * ly + 1.0) * nz * ln).clamp(0.0, 1.0)
    # Blinn-Phong with the viewer on the axis: half vector = normalise(l + (0, 0, 1))
    hxv, hyv, hzv = lx * ln, ly * ln, ln + 1.0
    hn = torch.rsqrt(hxv * hxv + hyv * hyv + hzv * hzv)
    ndh = ((-hx * hxv - hy * hyv + hzv) * nz * hn).clamp(0.0, 1.0)
    return diffuse, ndh ** 120


def _acquisition(modality: str, cfg: SynthEndoConfig, b: int, g: torch.Generator) -> dict:
    """Stage 5, the modality's acquisition draws (the only randomness of rendering, in this
    order from ``g``): pattern contrast, glint fraction, blur, vignetting, white balance,
    exposure, gamma; plus the fixed highlight amplitude and sensor-noise level."""
    s = cfg.image_size
    if modality == "WLI":
        a = {"contrast": cfg.wli_contrast * _uniform(b, 0.7, 1.3, g).view(b, 1, 1, 1),
             "glint_frac": cfg.nuisance * _uniform(b, 0.010, 0.035, g),
             "blur_px": (0.35 + cfg.nuisance * _uniform(b, 0.0, 1.6, g)) * s / 96,
             "vign": 0.15 + cfg.nuisance * _uniform(b, 0.1, 0.6, g),
             "gains": torch.exp(cfg.nuisance * 0.07 * torch.randn(b, 3, generator=g)),
             "expo": torch.exp(cfg.nuisance * 0.15 * torch.randn(b, generator=g)),
             "gamma": torch.exp(cfg.nuisance * 0.12 * torch.randn(b, generator=g)),
             "spec_amp": 0.3 + cfg.nuisance * 0.4, "noise_sd": 0.010}
    else:
        a = {"contrast": cfg.nbi_contrast * _uniform(b, 0.7, 1.1, g).view(b, 1, 1, 1),
             "glint_frac": _uniform(b, 0.002, 0.010, g),
             "blur_px": _uniform(b, 0.3, 0.6, g) * s / 96,
             "vign": _uniform(b, 0.2, 0.45, g),
             "gains": torch.exp(0.03 * torch.randn(b, 3, generator=g)),
             "expo": torch.exp(0.08 * torch.randn(b, generator=g)),
             "gamma": torch.exp(0.05 * torch.randn(b, generator=g)),
             "spec_amp": 0.25, "noise_sd": 0.018}
    a["contrast"] = a["contrast"].clamp(0.0, 1.0).view(b, 1, 1)
    return a


def _render_chunk(lat: SynthLatents, modality: str, cfg: SynthEndoConfig,
                  g: torch.Generator, trace: dict[str, torch.Tensor] | None = None
                  ) -> torch.Tensor:
    """Render one chunk: geometry -> class pattern -> background -> shading -> acquisition
    draws -> colour, highlights, blur, gamma, noise. uint8 ``(B, 3, S, S)``.

    ``trace``, if given, receives every stage's output by name (:func:`render_stages`)."""
    trace = {} if trace is None else trace
    p = lat.params
    b = len(lat)
    s = cfg.image_size
    pal = _PALETTE[modality]
    x, y = _pixel_grid(s)
    geo = _geometry(p, s)
    dark, light = _class_pattern(lat.labels, p, geo, s, cfg.num_classes)
    bg, fold, bgv = _background(p, s, geo.mask)
    # pits are slightly raised and vessels sunk; the relief scales with the modality's contrast
    # knob, so that contrast 0 removes every trace of the pattern
    knob = cfg.wli_contrast if modality == "WLI" else cfg.nbi_contrast
    height = fold + p["elevation"].view(b, 1, 1) * geo.dome + 0.005 * knob * (light - dark)
    diffuse, spec = _shading(p, height, s)
    acq = _acquisition(modality, cfg, b, g)
    contrast = acq["contrast"]
    trace.update({"1_geometry.mask": geo.mask, "1_geometry.dome": geo.dome,
                  "2_pattern.dark": dark, "2_pattern.light": light, "3_background.bg": bg,
                  "3_background.fold": fold, "3_background.vessels": bgv,
                  "4_shading.diffuse": diffuse, "4_shading.specular": spec})
    trace.update({f"5_acquisition.{k}": v for k, v in acq.items() if torch.is_tensor(v)})

    # ---- colour ----
    # The colour is a chain of "lerp towards colour c_k with weight a_k" (lesion tint, background
    # vessels, lesion vessels, pits), then shading, vignetting and a lerp to white (highlights).
    # Expanded, it is sum_k w_k c_k with single-channel weights w_k: one batched matmul.
    a_les = geo.mask
    a_bgv = 0.5 * contrast.sqrt() * bgv
    a_ves = contrast * dark
    a_pit = contrast * light
    gl = torch.randn(b, 1, _GLINT_TEX, _GLINT_TEX, generator=g)
    gl = _resample(gl, s)[:, 0]
    glints = _quantile_mask(gl, acq["glint_frac"], 0.12) * (0.4 + 0.6 * diffuse)
    hl = (acq["spec_amp"] * spec + glints).clamp(max=1.0)  # broad dome highlight + glints
    r2 = (x * x + y * y) / 2.0
    light_mul = (0.45 + 0.55 * diffuse) * (1.0 - acq["vign"].view(b, 1, 1) * r2 ** 1.5) \
        * (1.0 - hl)
    keep_pit = 1.0 - a_pit
    w_ves = a_ves * keep_pit
    keep = keep_pit * (1.0 - a_ves)
    w_bgv = a_bgv * keep
    keep = keep * (1.0 - a_bgv)
    w_les = a_les * keep
    w_muc = (1.0 - a_les) * keep * (1.0 + 0.05 * bg[:, 0])
    weights = torch.stack([w_muc, w_les, w_bgv, w_ves, a_pit], 1) * light_mul[:, None]
    weights = torch.cat([weights, hl[:, None]], 1).view(b, 6, s * s)
    base = torch.tensor(pal["mucosa"]) * torch.exp(0.07 * p["mucosa"])  # (b, 3)
    lesion_col = base + (torch.tensor(pal["tint"]) - base) * (0.55 * p["tint"].view(b, 1))
    fixed = torch.tensor([pal["bg_vessel"], pal["vessel"], pal["pit"], (1.0, 1.0, 1.0)])
    colours = torch.cat([base[:, None], lesion_col[:, None], fixed.expand(b, 4, 3)], 1)
    colours = colours * (acq["gains"] * acq["expo"].view(b, 1))[:, None]  # white balance, exposure
    img = trace["6_colour"] = torch.bmm(colours.transpose(1, 2), weights).view(b, 3, s, s)
    trace["6_colour.glints"] = glints
    img = trace["7_blur"] = _blur(img, acq["blur_px"])
    img = trace["8_gamma"] = img.clamp(0.0, 1.0) ** acq["gamma"].view(b, 1, 1, 1)
    img = trace["9_noise"] = img + acq["noise_sd"] * torch.randn(b, 3, s, s, generator=g)
    out = trace["10_uint8"] = (img.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)
    return out


def render(latents: SynthLatents, modality: str, cfg: SynthEndoConfig,
           generator: torch.Generator) -> torch.Tensor:
    """Render latent instances in one modality: uint8 ``(N, 3, S, S)``, S = ``cfg.image_size``.

    The same ``latents`` rendered as ``"WLI"`` and ``"NBI"`` show the same scene (same lesion,
    pattern, position, folds); only the modality physics and its acquisition noise differ.
    ``generator`` supplies the acquisition noise only (highlights, blur, colour, sensor noise).
    """
    if modality not in ("WLI", "NBI"):
        raise ValueError(f"render: modality must be 'WLI' or 'NBI', got {modality!r}")
    n = len(latents)
    s = cfg.image_size
    if n == 0:
        return torch.zeros(0, 3, s, s, dtype=torch.uint8)
    if int(latents.labels.max()) >= cfg.num_classes:
        raise ValueError(f"render: latents hold labels up to {int(latents.labels.max())} but "
                         f"cfg.num_classes = {cfg.num_classes}")
    chunk = max(1, _CHUNK_PIXELS // (s * s))
    out = [_render_chunk(latents.subset(range(i, min(i + chunk, n))), modality, cfg, generator)
           for i in range(0, n, chunk)]
    return torch.cat(out, 0)


def render_stages(latents: SynthLatents, modality: str, cfg: SynthEndoConfig,
                  generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Every stage's output when :func:`render` draws ``latents`` (one chunk, at most
    ``_CHUNK_PIXELS`` pixels): name -> tensor, from ``"1_geometry.mask"`` to ``"10_uint8"``
    (the images :func:`render` returns for the same generator state).

    For diagnosis: when two machines render different pixels, the first stage whose
    statistics differ says where (``tests/fixtures/synthendo_stages.json``)."""
    if len(latents) * cfg.image_size ** 2 > _CHUNK_PIXELS:
        raise ValueError(f"render_stages: {len(latents)} images of {cfg.image_size} px are "
                         f"more than one chunk; pass at most "
                         f"{_CHUNK_PIXELS // cfg.image_size ** 2}")
    trace: dict[str, torch.Tensor] = {}
    _render_chunk(latents, modality, cfg, generator, trace)
    return trace


def lesion_masks(latents: SynthLatents, cfg: SynthEndoConfig) -> torch.Tensor:
    """Ground-truth lesion masks: uint8 ``(N, 1, S, S)``, 255 inside the outline, 0 outside,
    smooth over about one pixel at the edge.

    They come from the same geometry stage as :func:`render` (no randomness), so they line up
    with the images of either modality pixel for pixel. For DIAGNOSIS only: training never
    sees them, except the ``oracle_masks`` reference method that exists to bound what perfect
    token labels would give.
    """
    n, s = len(latents), cfg.image_size
    chunk = max(1, _CHUNK_PIXELS // (s * s))
    out = [_geometry(latents.subset(range(i, min(i + chunk, n))).params, s).mask
           for i in range(0, n, chunk)]
    if not out:
        return torch.zeros(0, 1, s, s, dtype=torch.uint8)
    return (torch.cat(out)[:, None] * 255.0 + 0.5).to(torch.uint8)

