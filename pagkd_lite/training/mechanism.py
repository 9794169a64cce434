"""The mechanism log's probe: a fixed held-out batch on which, once per epoch, the log measures
what GKD-Den sees and does.

A probe (:func:`make_probe`) holds validation WLI and NBI images, no augmentation, with
SynthEndo's lesion masks where the data has them; for a paired distiller the NBI half is the NBI
twins of the WLI half (:func:`nbi_twins`), so its pairs are true ones. After every epoch
:func:`pagkd_lite.training.train.fit` hands it to ``distiller.after_epoch``, which measures the
numbers of :mod:`pagkd_lite.method.mechanism_log` (their definitions are there; the method layer
computes them, so it never imports this training-layer module). Those functions are re-exported
here.
"""

from __future__ import annotations

import torch

from ..data.imageset import ImageSet
from ..data.transforms import prepare
from ..method.batch import StepBatch
from ..method.mechanism_log import (
    adapter_drift,
    beats_chance,
    mechanism_metrics,
    pair_mechanism_metrics,
    probe_metrics,
)

__all__ = [
    "PROBE_PER_CLASS",
    "adapter_drift",
    "beats_chance",
    "make_probe",
    "mechanism_metrics",
    "nbi_twins",
    "pair_mechanism_metrics",
    "probe_index",
    "probe_metrics",
]

#: probe images per class and modality
PROBE_PER_CLASS = 8


def probe_index(labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """The first ``per_class`` images of every class, in order of appearance: ``(n,)``."""
    picks = [(labels == c).nonzero().flatten()[:per_class] for c in labels.unique().tolist()]
    return torch.cat(picks).sort().values


def make_probe(wli: ImageSet, nbi: ImageSet, device: torch.device,
               per_class: int = PROBE_PER_CLASS, paired: bool = False) -> StepBatch:
    """A fixed, unaugmented held-out batch: the first ``per_class`` images of every class of
    ``wli`` and ``nbi`` (validation sets), with their masks when both sets have them.

    ``paired``: ``nbi`` is aligned with ``wli`` (image i of one is the other modality's
    rendering of image i: :func:`nbi_twins`, or ``wli_train`` and ``paired_nbi``), and the
    probe's NBI half is the twins of its WLI half, index by index (true pairs)."""
    if paired and (len(nbi) != len(wli) or nbi.lesion_ids != wli.lesion_ids):
        raise ValueError("make_probe(paired=True): nbi must hold the NBI twins of wli, in order")
    with_masks = wli.masks is not None and nbi.masks is not None
    idx_w = probe_index(wli.labels, per_class)
    parts = {}
    for key, images, idx in (("w", wli, idx_w),
                             ("n", nbi, idx_w if paired else probe_index(nbi.labels, per_class))):
        out = prepare(images.images[idx], device,
                      masks=images.masks[idx] if with_masks else None)
        parts[key] = (out[0], out[1], images.labels[idx].to(device),
                      out[2] if with_masks else None)
    (x_w, img_w, y_w, m_w), (x_n, img_n, y_n, m_n) = parts["w"], parts["n"]
    return StepBatch(x_w=x_w, img_w=img_w, y_w=y_w, x_n=x_n, img_n=img_n, y_n=y_n,
                     mask_w=m_w, mask_n=m_n)


def nbi_twins(wli: ImageSet) -> ImageSet:
    """The NBI twins of a SynthEndo WLI split (``wli_val`` for a paired distiller's probe):
    the same scenes (lesion, pattern, position, folds) rendered as NBI, aligned index by index,
    with their lesion masks. SynthEndo has twins only for ``wli_train`` (``paired_nbi``); the
    held-out splits are unpaired, so these are rendered here from the split's latents, which
    ``wli.meta`` (config and split) determines. The acquisition noise has its own seed; no
    global random state is used. Raises ``ValueError`` for any other image set.

    (Here rather than in :mod:`pagkd_lite.data.synthendo`: that file's source hash keys every cached
    teacher, ``pipeline.GENERATOR_VERSION``, and these images are for the probe only.)"""
    from ..data.synthendo import (
        SynthEndoConfig,
        lesion_masks,
        make_generator,
        render,
        sample_latents,
    )

    meta = wli.meta or {}
    if meta.get("source") != "SynthEndo" or wli.modality != "WLI":
        raise ValueError("nbi_twins: only SynthEndo's WLI splits have NBI twins")
    cfg, split = SynthEndoConfig(**meta["config"]), meta["split"]
    lat = sample_latents(cfg.split_size(split), cfg, make_generator(cfg.seed, split),
                         prefix=split)
    if lat.lesion_ids != wli.lesion_ids or not torch.equal(lat.labels, wli.labels):
        raise ValueError(f"nbi_twins: the images are not SynthEndo's {split!r} of their config")
    images = render(lat, "NBI", cfg, make_generator(cfg.seed, split, "nbi_twins", "render"))
    return ImageSet(images=images, masks=lesion_masks(lat, cfg), labels=lat.labels.clone(),
                    patient_ids=list(lat.patient_ids), lesion_ids=list(lat.lesion_ids),
                    class_names=list(wli.class_names), modality="NBI",
                    meta={**meta, "split": f"{split} (NBI twins)"})
