"""SynthEndo's settings: :class:`SynthEndoConfig` and the split names it sizes.

The base of the generator's modules: :mod:`pagkd_lite.data.synth_latents` draws the scenes and
:mod:`pagkd_lite.data.synth_render` renders them from a config defined here, and
:mod:`pagkd_lite.data.synthendo` (which re-exports both names) builds the splits. What each
knob means is described there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SPLITS", "SynthEndoConfig"]

SPLITS = ("wli_train", "nbi_train", "wli_val", "nbi_val", "wli_test", "nbi_test")


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
