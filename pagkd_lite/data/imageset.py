"""In-memory image sets shared by SynthEndo and the real-data loaders.

An :class:`ImageSet` is one modality's images at one fixed size, a uint8 ``(N, 3, H, W)``
tensor or a view that behaves like one, with per-image labels and ids. Everything
downstream (the group sampler, training, evaluation, cross-validation) works on ImageSets,
so generated and real data take exactly the same path.

Real data's images are an :class:`~pagkd_lite.data.image_rows.ImageRows`: rows of the
memory-mapped decode store (or of an array in RAM, or of the image files), chosen by an
index array. :meth:`ImageSet.subset` of such a set is another index array over the same
pixels, never a copy, so the folds, splits and unpaired folds of a large data set cost a
few index arrays; ``images[index]`` reads one batch as a tensor of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .image_rows import ImageRows

MODALITIES = ("WLI", "NBI")


@dataclass
class ImageSet:
    """Images of one modality with labels and provenance.

    Attributes:
        images: uint8 ``(N, 3, H, W)``: a tensor (SynthEndo, sets built in Python) or an
            :class:`~pagkd_lite.data.image_rows.ImageRows` view (real data: the decode
            store, RAM, or files), which indexes like a tensor: ``images[index]`` is a
            uint8 tensor of those rows.
        labels: int64 tensor ``(N,)`` with values in ``[0, len(class_names))``.
        patient_ids: list of N strings (patient of each image).
        lesion_ids: list of N strings (lesion / instance of each image).
        class_names: the label space, index = label.
        modality: ``"WLI"`` or ``"NBI"``.
        paths: optional list of N source paths (real data) for error messages and reports.
        masks: optional uint8 ``(N, 1, H, W)`` ground-truth lesion masks (0..255), aligned
            with ``images``. SynthEndo has them; real data does not. For diagnosis and the
            ``oracle_masks`` reference only, never for training a method.
    """

    images: torch.Tensor | ImageRows
    labels: torch.Tensor
    patient_ids: list[str]
    lesion_ids: list[str]
    class_names: list[str]
    modality: str
    paths: list[str] | None = None
    meta: dict = field(default_factory=dict)
    masks: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"ImageSet({self.modality}): images must be uint8 (N, 3, H, W), "
                f"got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.modality not in MODALITIES:
            raise ValueError(
                f"ImageSet: modality must be one of {MODALITIES}, got {self.modality!r}"
            )
        for name, seq in (("labels", self.labels), ("patient_ids", self.patient_ids),
                          ("lesion_ids", self.lesion_ids)):
            if len(seq) != n:
                raise ValueError(f"ImageSet({self.modality}): {name} has {len(seq)} entries, "
                                 f"images has {n}")
        if self.paths is not None and len(self.paths) != n:
            raise ValueError(f"ImageSet({self.modality}): paths has {len(self.paths)} entries, "
                             f"images has {n}")
        if self.masks is not None and (
                self.masks.dtype != torch.uint8
                or tuple(self.masks.shape) != (n, 1, *self.images.shape[2:])):
            raise ValueError(f"ImageSet({self.modality}): masks must be uint8 "
                             f"{(n, 1, *self.images.shape[2:])}, got {self.masks.dtype} "
                             f"{tuple(self.masks.shape)}")
        self.labels = torch.as_tensor(self.labels, dtype=torch.long)
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)):
            raise ValueError(
                f"ImageSet({self.modality}): labels outside [0, {len(self.class_names)})"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> list[int]:
        """Number of images per class, index = label."""
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def subset(self, idx) -> ImageSet:
        """A new ImageSet holding the images at ``idx`` (a list or 1-D tensor of indices).

        Images that are an :class:`~pagkd_lite.data.image_rows.ImageRows` (real data) stay
        a view of the same pixels (``images.select(idx)``: a new index array, no pixel
        copied); a plain tensor is indexed (a copy, as ``tensor[idx]`` is)."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        pick = idx.tolist()
        return ImageSet(
            images=(self.images.select(idx) if isinstance(self.images, ImageRows)
                    else self.images[idx]),
            labels=self.labels[idx],
            patient_ids=[self.patient_ids[i] for i in pick],
            lesion_ids=[self.lesion_ids[i] for i in pick],
            class_names=list(self.class_names),
            modality=self.modality,
            paths=None if self.paths is None else [self.paths[i] for i in pick],
            meta=dict(self.meta),
            masks=None if self.masks is None else self.masks[idx],
        )
