"""SynthEndo's latent scenes: every random draw of a split, before any pixel is rendered.

:func:`sample_latents` draws, for ``n`` instances, the lesion's class, identity, pose and
shape, the smooth random fields its surface and vessels are made of, the background and the
glints, into a :class:`SynthLatents`. Fields are stored at a fixed resolution in texels, so
the same seed gives the same scene at any image size; :mod:`pagkd_lite.data.synth_render` turns a
latent into a WLI or an NBI image. The world itself is described in
:mod:`pagkd_lite.data.synthendo`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .synth_config import SynthEndoConfig

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


