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
import hashlib
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .imageset import ImageSet
from .synth_config import SPLITS, SynthEndoConfig
from .synth_latents import SynthLatents, sample_latents
from .synth_render import lesion_masks, render, render_stages

__all__ = [
    "CLASS_NAMES",
    "GENERATOR_MODULES",
    "SPLITS",
    "SynthEndoConfig",
    "SynthLatents",
    "class_names_for",
    "export_folder",
    "generate",
    "generator_version",
    "lesion_masks",
    "make_generator",
    "preview_grid",
    "render",
    "render_stages",
    "sample_latents",
]

CLASS_NAMES = ("hyperplastic", "adenoma", "adenocarcinoma")
_SPLIT_MODALITY = {s: s.split("_")[0].upper() for s in SPLITS}
#: the modules (of ``pagkd_lite.data``) whose code makes SynthEndo's images: this one, its
#: settings, the latent draws and the renderer
GENERATOR_MODULES = ("synthendo", "synth_config", "synth_latents", "synth_render")


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



def generator_version() -> str:
    """sha256 (12 hex digits) of the source of every module in :data:`GENERATOR_MODULES`: a
    changed generator draws other images from the same config, so a cache key that depends on
    the data can include this."""
    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in GENERATOR_MODULES:
        h.update((here / f"{name}.py").read_bytes())
    return h.hexdigest()[:12]


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
