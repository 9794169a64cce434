"""SynthEndo: a procedural generator of unpaired WLI / NBI lesion crops.

Real WLI/NBI data sets cannot be redistributed, so the kit ships this generator. It is built
around the one physical fact that makes NBI useful for diagnosis: narrow-band light (415 nm and
540 nm, both absorbed by haemoglobin) shows the superficial microvessels and the mucosal surface
(pit) pattern at high contrast, while white light shows the same structures faintly under glare.

Scene model (one *latent instance* per image; see :class:`SynthLatents`)
-----------------------------------------------------------------------
- **Patient**: mucosa colour (3 log-gains), fold orientation / frequency / height. Shared by all
  images of a patient, independent of class.
- **Lesion**: class, size (radius), outline (radius modulated by random Fourier harmonics
  m = 2..6), height of the gently raised dome, colour tint, and the surface / vessel pattern:
  pattern period, orientation, elongation, warp, the fraction of lesion pixels covered by dark
  structures (vessels, crypt openings) and by white structures (pits / epithelium), and a stack
  of smooth random fields in lesion coordinates. Shared by all views of the lesion.
- **View**: where the lesion sits in the crop, its rotation and zoom, the light direction, the
  fold phase and the background fields (background vessels, mottle). A lesion imaged twice gives
  two views of the same pattern from different positions.

The class lives ONLY in the spatial pattern, after the NICE classification (Hewett et al.,
Gastroenterology 2012) that endoscopists apply to NBI:

- type 1, ``hyperplastic``: a regular hexagonal lattice of round, uniform dark spots (crypt
  openings) set in white epithelium, and only a few isolated thin lacy vessels;
- type 2, ``adenoma``: a dense, regular network of brown vessels around oval / tubular white
  structures (a staggered, brick-like mesh of elongated cells);
- type 3, ``adenocarcinoma``: thick, tortuous, interrupted vessels of varying calibre and an
  amorphous surface (irregular white patches, no lattice).

NICE also uses colour ("browner than the background" for types 2 and 3). SynthEndo deliberately
drops that cue: every non-spatial attribute (lesion tint, size, height, position, the dark and
white pixel fractions, patient colour) is drawn from the same distribution for every class, and
the dark / white fractions are enforced per image by a quantile threshold. A classifier on global
colour histograms is therefore near chance (checked by the tests); a model must read the pattern.
The background mucosa (folds, mottle, its own vessels) carries no class.

Rendering (:func:`render`, one renderer per modality from the same latents)
---------------------------------------------------------------------------
- **NBI**: teal-green mucosa, brown superficial vessels, cyan deeper background vessels, white
  pits, all at contrast ``nbi_contrast``; mild blur, some specular highlights, mild vignetting,
  sensor noise.
- **WLI**: pink-orange glossy mucosa, red vessels and whitish pits at contrast ``wli_contrast``
  (the same structures, faint), and nuisances scaled by ``nuisance``: many small white specular
  highlights, Gaussian blur (defocus), vignetting (darker corners) and per-image colour variation
  (white balance, exposure, gamma).
Both share Lambertian shading of the same height field (folds + lesion dome + micro-relief) and a
Blinn-Phong highlight on the dome.

Knobs (:class:`SynthEndoConfig`): ``wli_contrast`` and ``nbi_contrast`` in [0, 1] scale how much
of the pattern each modality shows (colour and relief; at 0 the image no longer depends on the
class at all); ``nuisance`` in [0, 1] scales the WLI nuisances. The defaults, ``wli_contrast =
0.35``, ``nbi_contrast = 0.9``, ``nuisance = 0.6``, were fixed once from the premise "NBI easy,
WLI hard but learnable" (a small CNN: NBI AUC about 1.0, WLI about 0.6-0.85 depending on seed,
size and model; see ``data_cards/synthendo.md``) before any distillation method was measured on
this data, and are frozen. Change the generator only for realism, and say so in the card.
``views_per_lesion`` (images of each lesion) and ``images_per_patient`` set the id structure.

Splits: ``wli_train``, ``nbi_train``, ``wli_val``, ``nbi_val``, ``wli_test``, ``nbi_test`` have
disjoint lesions and disjoint patients (unpaired by construction). ``paired_nbi`` is the NBI
rendering of exactly the ``wli_train`` latents, index by index (a pixel-aligned pair), for the
paired-oracle comparison only.

Determinism: every split draws its latents from a ``torch.Generator`` seeded by
``crc32(f"{seed}/{split}")`` and its acquisition noise from another seeded by
``crc32(f"{seed}/{split}/render")``. Latent fields are stored at a fixed resolution, so the same
seed gives the same scenes at any ``image_size``. Everything is vectorised over the batch (torch
on CPU); the only Python loops run over chunks of images and over classes.
"""

from __future__ import annotations

import csv
import functools
import math
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .data import ImageSet

__all__ = [
    "CLASS_NAMES",
    "SPLITS",
    "SynthEndoConfig",
    "SynthLatents",
    "class_names_for",
    "export_folder",
    "generate",
    "lesion_masks",
    "make_generator",
    "preview_grid",
    "render",
    "render_stages",
    "sample_latents",
]

CLASS_NAMES = ("hyperplastic", "adenoma", "adenocarcinoma")
SPLITS = ("wli_train", "nbi_train", "wli_val", "nbi_val", "wli_test", "nbi_test")
_SPLIT_MODALITY = {s: s.split("_")[0].upper() for s in SPLITS}

_LESION_TEX = 48  # lesion fields: 48 x 48 texels over lesion coordinates [-1, 1]^2 (mirrored
_LESION_EXTENT = 1.0  # beyond, where the lesion mask is ~0 anyway)
_BG_TEX = 32  # background fields: 32 x 32 texels over the crop
_GLINT_TEX = 28  # specular glints: blobs of about one texel
_CHUNK_PIXELS = 64 * 128 * 128  # pixels rendered at once (64 images at 128 px)

# Smoothing (in texels) of each lesion field: warp x, warp y, fine line field (type 1 lacy
# vessels), gate (vessel interruptions), coarse line field (type 3 vessels), roughness
# (calibre variation), amorphous field (type 3 surface).
# (The B-spline resampling adds a smoothing of about 0.58 texel.)
_LESION_SIGMAS = (5.0, 5.0, 1.3, 1.9, 1.5, 0.3, 1.05)
# Background fields: mottle, vessel line field, vessel gate, fold warp.
_BG_SIGMAS = (1.05, 1.5, 1.9, 3.0)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass
class SynthEndoConfig:
    """Configuration of the generator. All fields are validated on construction.

    Attributes:
        image_size: side of the square crops in pixels (>= 32).
        num_classes: 2 (hyperplastic, adenoma) or 3 (+ adenocarcinoma).
        n_wli_train, n_nbi_train, n_wli_val, n_nbi_val, n_wli_test, n_nbi_test: images per split
            (>= 0). Classes are balanced exactly up to remainders.
        wli_contrast: fraction of the vessel / pit pattern that white light shows (0..1).
        nbi_contrast: the same for NBI (0..1).
        nuisance: strength of the WLI nuisances (highlights, blur, vignetting, colour) (0..1).
        images_per_patient: images per patient (>= 1); a patient holds
            ``max(1, images_per_patient // views_per_lesion)`` lesions.
        views_per_lesion: images of each lesion (>= 1): a lesion is imaged this many times from
            different positions, rotations and zooms (the last lesion of a class may have fewer).
        seed: master seed.
    """

    image_size: int = 96
    num_classes: int = 3
    n_wli_train: int = 240
    n_nbi_train: int = 240
    n_wli_val: int = 120
    n_wli_test: int = 240
    n_nbi_val: int = 120
    n_nbi_test: int = 240
    wli_contrast: float = 0.35
    nbi_contrast: float = 0.9
    nuisance: float = 0.6
    images_per_patient: int = 4
    views_per_lesion: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        if not _is_int(self.image_size) or self.image_size < 32:
            raise ValueError(f"SynthEndoConfig.image_size must be an int >= 32, "
                             f"got {self.image_size!r}")
        if self.num_classes not in (2, 3):
            raise ValueError(f"SynthEndoConfig.num_classes must be 2 or 3, "
                             f"got {self.num_classes!r}")
        for name in ("n_wli_train", "n_nbi_train", "n_wli_val", "n_nbi_val", "n_wli_test",
                     "n_nbi_test"):
            v = getattr(self, name)
            if not _is_int(v) or v < 0:
                raise ValueError(f"SynthEndoConfig.{name} must be an int >= 0, got {v!r}")
        for name in ("wli_contrast", "nbi_contrast", "nuisance"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) \
                    or not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"SynthEndoConfig.{name} must be in [0, 1], got {v!r}")
        for name in ("images_per_patient", "views_per_lesion"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ValueError(f"SynthEndoConfig.{name} must be an int >= 1, got {v!r}")
        if not _is_int(self.seed):
            raise ValueError(f"SynthEndoConfig.seed must be an int, got {self.seed!r}")

    def split_size(self, split: str) -> int:
        """Number of images of ``split`` (one of :data:`SPLITS`)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return int(getattr(self, f"n_{split}"))


def class_names_for(num_classes: int) -> list[str]:
    """The label space: index = label."""
    if num_classes not in (2, 3):
        raise ValueError(f"num_classes must be 2 or 3, got {num_classes!r}")
    return list(CLASS_NAMES[:num_classes])


def make_generator(seed: int, *names: str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded by a stable hash of ``seed`` and ``names``."""
    key = "/".join([str(seed), *names]).encode()
    g = torch.Generator()
    g.manual_seed(zlib.crc32(key))
    return g


# --------------------------------------------------------------------------------------------
# Latents
# --------------------------------------------------------------------------------------------


@dataclass
class SynthLatents:
    """Latent instances, one row per image (lesion and patient attributes repeated over views).

    Attributes:
        labels: int64 ``(N,)``.
        patient_ids, lesion_ids: N strings.
        params: name -> tensor with first dimension N (see :func:`sample_latents`).
    """

    labels: torch.Tensor
    patient_ids: list[str]
    lesion_ids: list[str]
    params: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx) -> SynthLatents:
        """The rows at ``idx`` (a list or 1-D tensor of indices)."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        pick = idx.tolist()
        return SynthLatents(
            labels=self.labels[idx],
            patient_ids=[self.patient_ids[i] for i in pick],
            lesion_ids=[self.lesion_ids[i] for i in pick],
            params={k: v[idx] for k, v in self.params.items()},
        )


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, *shape: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, *shape, generator=g)


def _gauss_kernel1d(sigma: float) -> torch.Tensor:
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _smooth_fields(n: int, sigmas: tuple[float, ...], size: int,
                   g: torch.Generator) -> torch.Tensor:
    """``n`` stacks of smooth random fields ``(n, C, size, size)``, zero mean, unit std each."""
    noise = torch.randn(n, len(sigmas), size, size, generator=g)
    if n == 0:
        return noise
    out = []
    for c, s in enumerate(sigmas):
        k = _gauss_kernel1d(s)
        r = (k.numel() - 1) // 2
        f = noise[:, c:c + 1]
        f = F.conv2d(F.pad(f, (r, r, 0, 0), mode="circular"), k.view(1, 1, 1, -1))
        f = F.conv2d(F.pad(f, (0, 0, r, r), mode="circular"), k.view(1, 1, -1, 1))
        out.append(f)
    f = torch.cat(out, 1)
    # The renderer resamples these with the cubic B-spline (:func:`_resample`), which smooths by
    # [1, 4, 1] / 6 at the texels: normalise the fields as they will be seen.
    k = torch.tensor([1.0, 4.0, 1.0]) / 6.0
    c = f.shape[1]
    seen = F.conv2d(F.pad(f, (1, 1, 0, 0), mode="circular"), k.view(1, 1, 1, 3).repeat(c, 1, 1, 1),
                    groups=c)
    seen = F.conv2d(F.pad(seen, (0, 0, 1, 1), mode="circular"),
                    k.view(1, 1, 3, 1).repeat(c, 1, 1, 1), groups=c)
    f = f - seen.mean(dim=(2, 3), keepdim=True)
    return f / seen.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)


def sample_latents(n: int, cfg: SynthEndoConfig, generator: torch.Generator,
                   prefix: str = "synth") -> SynthLatents:
    """Draw ``n`` latent instances (images), class-balanced, grouped into lesions and patients.

    Classes get ``n // K`` images each (the first ``n % K`` classes one more); each lesion gets
    ``cfg.views_per_lesion`` images (the last lesion of a class may get fewer); lesions are
    shuffled and dealt to patients, ``max(1, images_per_patient // views_per_lesion)`` each, so
    a patient may hold lesions of different classes. Ids: patient ``f"{prefix}-p{i:04d}"``,
    lesion ``f"{prefix}-p{i:04d}-l{j}"``. Images are ordered lesion by lesion.

    ``params`` (lengths in image half-widths at zoom 1; one row per image):
      patient: ``mucosa`` (3 log-gains), ``fold_theta``, ``fold_freq``, ``fold_amp``;
      lesion: ``radius``, ``harm`` (5 x 2 Fourier coefficients of the outline), ``elevation``,
      ``tint``, ``dark_frac`` / ``light_frac`` (pixel fractions of dark and white structures),
      ``pat_theta``, ``pat_period``, ``pat_offset``, ``elong``, ``warp_amp``, ``fields``
      (7 smooth random fields on a 48 x 48 grid over lesion coordinates);
      view: ``center``, ``rotation``, ``zoom``, ``light`` (direction), ``fold_phase``,
      ``bg_fields`` (4 background fields), ``bg_vessel_amt``.
    Only ``pat_period``, ``elong`` and ``warp_amp`` have class-dependent distributions (they are
    part of the spatial pattern); every other draw is the same for every class.
    """
    g = generator
    K = cfg.num_classes
    v = cfg.views_per_lesion
    counts = [n // K + (1 if c < n % K else 0) for c in range(K)]
    lesion_cls: list[int] = []
    lesion_views: list[int] = []
    for c, nc in enumerate(counts):
        full, rem = divmod(nc, v)
        lesion_cls += [c] * (full + (1 if rem else 0))
        lesion_views += [v] * full + ([rem] if rem else [])
    nl = len(lesion_cls)
    perm = torch.randperm(nl, generator=g).tolist()
    lesion_cls = [lesion_cls[i] for i in perm]
    lesion_views = [lesion_views[i] for i in perm]
    lpp = max(1, cfg.images_per_patient // v)
    lesion_patient = [i // lpp for i in range(nl)]
    npat = (nl + lpp - 1) // lpp if nl else 0

    # per-patient attributes (class-independent)
    pat = {
        "mucosa": torch.randn(npat, 3, generator=g),
        "fold_theta": _uniform(npat, 0.0, math.pi, g),
        "fold_freq": _uniform(npat, 0.5, 1.1, g),
        "fold_amp": _uniform(npat, 0.02, 0.06, g),
    }
    # per-lesion attributes
    lc = torch.tensor(lesion_cls, dtype=torch.long)
    m = torch.arange(2, 7, dtype=torch.float32)
    les = {
        "radius": _uniform(nl, 0.45, 0.72, g),
        "harm": torch.randn(nl, 5, 2, generator=g) * (0.09 / m ** 1.1).view(1, 5, 1),
        "elevation": _uniform(nl, 0.10, 0.25, g),
        "tint": torch.rand(nl, generator=g),
        "dark_frac": _uniform(nl, 0.12, 0.30, g),
        "light_frac": _uniform(nl, 0.10, 0.26, g),
        "pat_theta": _uniform(nl, 0.0, math.pi, g),
        "pat_period": _uniform(nl, 0.15, 0.21, g),
        "pat_offset": _uniform(nl, 0.0, 10.0, g, 2),
        "fields": _smooth_fields(nl, _LESION_SIGMAS, _LESION_TEX, g),
    }
    # type-specific pattern parameters (these are "spatial pattern", so they may differ)
    elong_hp = _uniform(nl, 1.0, 1.15, g)
    elong_ad = _uniform(nl, 1.7, 2.6, g)
    les["elong"] = torch.where(lc == 1, elong_ad, elong_hp)
    # hyperplastic crypts sit on a coarser lattice than adenoma cells, so that the structures of
    # every class have a similar size (otherwise blur would turn fine dots into a colour cue)
    les["pat_period"] = torch.where(lc == 0, 1.35 * les["pat_period"], les["pat_period"])
    les["warp_amp"] = torch.where(lc == 2, torch.zeros(nl), _uniform(nl, 0.02, 0.045, g))

    img_lesion = torch.repeat_interleave(torch.arange(nl), torch.tensor(lesion_views,
                                                                         dtype=torch.long))
    ni = int(img_lesion.numel())
    img_patient = torch.tensor(lesion_patient, dtype=torch.long)[img_lesion] if ni else \
        torch.zeros(0, dtype=torch.long)
    params = {k: t[img_patient] for k, t in pat.items()}
    params.update({k: t[img_lesion] for k, t in les.items()})
    # per-view attributes
    params.update({
        "center": _uniform(ni, -0.22, 0.22, g, 2),
        "rotation": _uniform(ni, 0.0, 2 * math.pi, g),
        "zoom": _uniform(ni, 0.85, 1.15, g),
        "light": _uniform(ni, -0.45, 0.45, g, 2),
        "fold_phase": _uniform(ni, 0.0, 2 * math.pi, g),
        "bg_fields": _smooth_fields(ni, _BG_SIGMAS, _BG_TEX, g),
        "bg_vessel_amt": _uniform(ni, 0.3, 1.0, g),
    })
    per_patient: dict[int, int] = {}
    lesion_name = []
    for pi in lesion_patient:
        j = per_patient.get(pi, 0)
        per_patient[pi] = j + 1
        lesion_name.append(f"{prefix}-p{pi:04d}-l{j}")
    lesion_ids = [lesion_name[li] for li in img_lesion.tolist()]
    patient_ids = [f"{prefix}-p{lesion_patient[li]:04d}" for li in img_lesion.tolist()]
    return SynthLatents(labels=lc[img_lesion], patient_ids=patient_ids, lesion_ids=lesion_ids,
                        params=params)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

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


def _to_imageset(latents: SynthLatents, images: torch.Tensor, modality: str, split: str,
                 cfg: SynthEndoConfig) -> ImageSet:
    return ImageSet(
        images=images,
        masks=lesion_masks(latents, cfg),
        labels=latents.labels.clone(),
        patient_ids=list(latents.patient_ids),
        lesion_ids=list(latents.lesion_ids),
        class_names=class_names_for(cfg.num_classes),
        modality=modality,
        meta={"source": "SynthEndo", "split": split, "config": asdict(cfg)},
    )


def generate(cfg: SynthEndoConfig | None = None) -> dict[str, ImageSet]:
    """Build every split of SynthEndo.

    Returns a dict with keys ``wli_train``, ``nbi_train``, ``wli_val``, ``nbi_val``,
    ``wli_test``, ``nbi_test`` (disjoint lesions and patients) and ``paired_nbi``: the NBI
    rendering of exactly the ``wli_train`` instances, aligned index by index (same lesion ids,
    same order), for the paired-oracle comparison only.

    Every set also carries ``masks``, the ground-truth lesion masks (:func:`lesion_masks`),
    for diagnosis.
    """
    cfg = SynthEndoConfig() if cfg is None else cfg
    cfg.validate()
    sets: dict[str, ImageSet] = {}
    wli_train_latents = None
    for split in SPLITS:
        modality = _SPLIT_MODALITY[split]
        lat = sample_latents(cfg.split_size(split), cfg, make_generator(cfg.seed, split),
                             prefix=split)
        imgs = render(lat, modality, cfg, make_generator(cfg.seed, split, "render"))
        sets[split] = _to_imageset(lat, imgs, modality, split, cfg)
        if split == "wli_train":
            wli_train_latents = lat
    assert wli_train_latents is not None
    imgs = render(wli_train_latents, "NBI", cfg, make_generator(cfg.seed, "paired_nbi", "render"))
    sets["paired_nbi"] = _to_imageset(wli_train_latents, imgs, "NBI", "paired_nbi", cfg)
    return sets


def export_folder(sets: dict[str, ImageSet], root: str | Path) -> Path:
    """Write image sets as PNG files plus a manifest; return ``root``.

    Layout: ``root/<split>/<modality>/<class>/<lesion_id>_<k>.png`` (``k`` counts the images of
    that lesion within the split), so each ``root/<split>`` folder is itself the real-data folder
    layout ``<root>/<modality>/<class>/<image>``; and ``root/manifest.csv`` with columns
    ``path, modality, label, patient_id, lesion_id, split`` (``path`` relative to ``root``,
    ``label`` = class name), the real-data CSV manifest plus a ``split`` column. Note that
    ``paired_nbi`` repeats the lesion ids of ``wli_train`` by design: leave it out of ``sets``
    to export an unpaired data set only.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for split, ims in sets.items():
        seen: dict[str, int] = {}
        arr = ims.images.permute(0, 2, 3, 1).contiguous().numpy()
        for i in range(len(ims)):
            lesion = ims.lesion_ids[i]
            k = seen.get(lesion, 0)
            seen[lesion] = k + 1
            cls = ims.class_names[int(ims.labels[i])]
            rel = Path(split) / ims.modality / cls / f"{lesion}_{k}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(arr[i])).save(root / rel)
            rows.append({"path": rel.as_posix(), "modality": ims.modality, "label": cls,
                         "patient_id": ims.patient_ids[i], "lesion_id": lesion, "split": split})
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "modality", "label", "patient_id",
                                           "lesion_id", "split"])
        w.writeheader()
        w.writerows(rows)
    return root


def preview_grid(cfg: SynthEndoConfig | None = None, per_class: int = 3,
                 path: str | Path | None = None) -> Image.Image:
    """A PIL image: one row per class, ``per_class`` lesions per row, each shown as the WLI and
    the NBI rendering of the same latent instance side by side.

    If ``path`` is given the grid is also saved there as a 256-colour PNG (small enough to
    commit; ``docs/synthendo_grid.png`` is made this way with the default config)."""
    from PIL import ImageDraw, ImageFont

    cfg = SynthEndoConfig() if cfg is None else cfg
    k = cfg.num_classes
    lat = sample_latents(per_class * k * cfg.views_per_lesion, cfg,
                         make_generator(cfg.seed, "preview"), prefix="preview")
    first = [i for i in range(len(lat)) if i == 0 or lat.lesion_ids[i] != lat.lesion_ids[i - 1]]
    lat = lat.subset(first)
    wli = render(lat, "WLI", cfg, make_generator(cfg.seed, "preview", "wli"))
    nbi = render(lat, "NBI", cfg, make_generator(cfg.seed, "preview", "nbi"))
    s = cfg.image_size
    left, top, gap = 104, 18, 4
    width = left + per_class * (2 * s + gap) - gap
    canvas = Image.new("RGB", (width, top + k * (s + gap) - gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for j in range(per_class):
        x0 = left + j * (2 * s + gap)
        draw.text((x0 + 2, 3), "WLI", fill=(0, 0, 0), font=font)
        draw.text((x0 + s + 2, 3), "NBI", fill=(0, 0, 0), font=font)
    names = class_names_for(k)
    for c in range(k):
        idx = (lat.labels == c).nonzero().squeeze(1).tolist()[:per_class]
        y0 = top + c * (s + gap)
        draw.text((4, y0 + s // 2 - 12), names[c], fill=(0, 0, 0), font=font)
        draw.text((4, y0 + s // 2 + 2), f"NICE type {c + 1}", fill=(90, 90, 90), font=font)
        for j, i in enumerate(idx):
            x0 = left + j * (2 * s + gap)
            for dx, imgs in ((0, wli), (s, nbi)):
                tile = Image.fromarray(imgs[i].permute(1, 2, 0).contiguous().numpy())
                canvas.paste(tile, (x0 + dx, y0))
    if path is not None:
        canvas.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return canvas
