"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (no pickled
code), tagged with ``format = "pagkd_lite/1"`` so a file from elsewhere is refused with a
message that says what it is and where it came from.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

FORMAT = "pagkd_lite/1"


class CheckpointError(RuntimeError):
    """A checkpoint that can't be used here: missing, unsafe, foreign or incomplete."""


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` (plus the format tag) to ``path`` atomically: a temporary file in
    the same folder, then ``os.replace``, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save({**payload, "format": FORMAT}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_checkpoint(path: str | Path, required: tuple[str, ...] = (), map_location="cpu") -> dict:
    """Load a pagkd_lite checkpoint safely (``weights_only=True``).

    Raises:
        CheckpointError: the file is missing, holds pickled objects (not loadable with
            weights_only), is not a pagkd_lite checkpoint, or lacks a ``required`` key.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {path}: cannot be loaded with weights_only=True ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). pagkd_lite only reads its own "
            "checkpoints, which hold tensors and plain values, never pickled code."
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"checkpoint {path}: not a pagkd_lite checkpoint (format {found!r}, expected "
            f"{FORMAT!r}); to start from weights trained elsewhere, load them into the model's "
            "state_dict yourself"
        )
    missing = [k for k in required if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path}: missing {missing}; has {sorted(payload)}")
    return payload
