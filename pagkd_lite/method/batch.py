"""One training step's tensors, :class:`StepBatch`: what the training loop hands a distiller,
and what the mechanism log's probe is (:mod:`pagkd_lite.method.mechanism_log`).
Re-exported by :mod:`pagkd_lite.method.distiller`, the Distiller contract that takes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class StepBatch:
    """One training step's tensors (already on the device and augmented).

    x_w (B, 3, H, W) normalised WLI input, img_w the same in [0, 1] (for PAR), y_w (B,).
    x_n, img_n, y_n: the NBI batch (same class composition, no pairing), or for
    ``paired_oracle`` the NBI twins of the WLI images, aligned index by index.
    mask_w, mask_n (B, 1, H, W): ground-truth lesion masks in [0, 1] under the same
    augmentation, only for distillers with ``needs_masks`` (the ``oracle_masks`` reference).
    """

    x_w: torch.Tensor
    img_w: torch.Tensor
    y_w: torch.Tensor
    x_n: torch.Tensor | None = None
    img_n: torch.Tensor | None = None
    y_n: torch.Tensor | None = None
    mask_w: torch.Tensor | None = None
    mask_n: torch.Tensor | None = None
