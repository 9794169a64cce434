"""Batched image transforms on tensors: uint8 -> network input, rotation and flips.

The paper augments with rotations up to 180 degrees and flips. Endoscopy has no canonical
orientation, so both are label-preserving. Everything is done on the whole batch at once
on the training device (one ``affine_grid`` + ``grid_sample``), no per-image Python.

Two settings of the model section say what the network is fed (``docs/fidelity.md``):
``model.input_norm`` (:data:`INPUT_NORMS`): ``"imagenet"`` (the kit's: ImageNet mean and
std) or ``"none"`` (the [0, 1] image itself, as the authors' ``utils/loader.py`` feeds
it); ``model.input_rotate`` (:data:`ROTATES`): ``"crop"`` (the kit's: the image turns inside
its canvas, its corners are cut) or ``"expand"`` (the authors': ``scipy.ndimage.rotate`` with
its default ``reshape=True`` grows the canvas to hold the whole rotated image, which is then
resized back, so a rotation by ``a`` is also a zoom-out by ``1 / (|cos a| + |sin a|)``, 0.71
to 1, with black corners).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: what the network reads: ImageNet-normalised images, or the [0, 1] images themselves
INPUT_NORMS = ("imagenet", "none")
#: how a rotation is framed: inside the canvas (corners cut), or zoomed out to keep all of it
ROTATES = ("crop", "expand")


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float in [0, 1]."""
    return images.float().div_(255.0)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> ImageNet-normalised (what timm backbones expect)."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def model_input(x: torch.Tensor, norm: str = "imagenet") -> torch.Tensor:
    """[0, 1] images (B, 3, H, W) -> what the network reads (same shape): :func:`normalize`d
    for ``norm = "imagenet"``, a copy of ``x`` for ``"none"`` (:data:`INPUT_NORMS`)."""
    if norm == "imagenet":
        return normalize(x)
    if norm == "none":
        return x.clone()
    raise ValueError(f"model_input: norm must be one of {INPUT_NORMS}, got {norm!r}")


def draw_rotate_flip(b: int, max_degrees: float, generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """One geometric draw per image: ``(angles (B,) in radians, uniform in
    [-max_degrees, max_degrees]; flips (B,) of +1 or -1, -1 with probability 1/2)``."""
    angles = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(max_degrees)
    flips = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    return angles, flips


def rotate_flip(x: torch.Tensor, angles: torch.Tensor, flips: torch.Tensor,
                rotate: str = "crop") -> torch.Tensor:
    """Rotate image i by ``angles[i]`` after flipping it horizontally where ``flips[i] = -1``
    (a vertical flip is a horizontal flip plus a 180 degree rotation, so it is covered).
    Corners outside the rotated image become 0.

    ``rotate`` (:data:`ROTATES`): ``"crop"`` samples output point p at ``R p`` (the image
    turns inside its canvas; what leaves it is cut). ``"expand"`` samples it at ``s R p`` with
    ``s = |cos a| + |sin a|``: the bounding square of the rotated image, resized to the canvas
    (the authors' ``scipy.ndimage.rotate(reshape=True)`` then resize, for square images), so
    nothing of the image is cut and it shrinks by ``1 / s`` (0.71 at 45 degrees, 1 at
    multiples of 90).

    x: (B, C, H, W) float; angles, flips: (B,). Returns the same shape as x.
    """
    if rotate not in ROTATES:
        raise ValueError(f"rotate_flip: rotate must be one of {ROTATES}, got {rotate!r}")
    b = x.shape[0]
    cos, sin = torch.cos(angles), torch.sin(angles)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = cos * flips
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * flips
    theta[:, 1, 1] = cos
    if rotate == "expand":
        theta[:, :, :2] *= (cos.abs() + sin.abs())[:, None, None]
    theta = theta.to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_rotate_flip(
    x: torch.Tensor, max_degrees: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """:func:`rotate_flip` with a fresh :func:`draw_rotate_flip` from ``generator``."""
    return rotate_flip(x, *draw_rotate_flip(x.shape[0], max_degrees, generator))


def prepare(
    images: torch.Tensor,
    device: torch.device,
    augment: bool = False,
    max_degrees: float = 180.0,
    generator: torch.Generator | None = None,
    masks: torch.Tensor | None = None,
    geometry: tuple[torch.Tensor, torch.Tensor] | None = None,
    norm: str = "imagenet",
    rotate: str = "crop",
):
    """uint8 batch -> (input for the network, [0, 1] image for PAR).

    ``geometry`` ``(angles, flips)`` (:func:`draw_rotate_flip`) replaces the fresh draw
    from ``generator``: the NBI twins of a paired batch take the WLI batch's draw.
    ``norm`` (``model.input_norm``): the network input is :func:`model_input` of the [0, 1]
    image; ``rotate`` (``model.input_rotate``): how :func:`rotate_flip` frames the rotation.

    Both outputs see the same augmentation, so a CAM refined on the [0, 1] image lines up
    with the network input. With ``masks`` (uint8 ``(B, 1, H, W)``, e.g. SynthEndo's lesion
    masks) a third output is the masks in ``[0, 1]`` under the SAME rotation and flip: they
    travel as a fourth channel through one ``grid_sample``, and the random draws depend only
    on the batch size, so the images are the same with or without masks.
    """
    x = to_float(images.to(device, non_blocking=True))
    if masks is not None:
        x = torch.cat([x, to_float(masks.to(device, non_blocking=True))], dim=1)
    if augment:
        if geometry is None:
            geometry = draw_rotate_flip(x.shape[0], max_degrees, generator)
        x = rotate_flip(x, *geometry, rotate=rotate)
    if masks is None:
        return model_input(x, norm), x
    return model_input(x[:, :3], norm), x[:, :3], x[:, 3:]
