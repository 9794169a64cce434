"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (no pickled
code), tagged with ``format = "pagkd_lite/1"`` so a file from elsewhere is refused with a
message that says what it is and where it came from.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..files import atomic_write

FORMAT = "pagkd_lite/1"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: how files written by ``torch.save`` begin: a zip archive, or (legacy) a pickle
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")

__all__ = ["FORMAT", "CheckpointError", "check_provenance", "load_checkpoint", "load_weights",
           "save_checkpoint"]


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` (plus the format tag) to ``path`` atomically: a temporary file in
    the same folder, then ``os.replace``, so a crash never leaves a half-written file.

    ``torch.save`` writes through a Python file object: a full disk is then the
    ``OSError`` (ENOSPC) that :func:`~pagkd_lite.files.atomic_write` turns into one line
    naming ``path``; given a file name, torch's own writer reports it as a ``RuntimeError``
    ("unexpected pos"), found on a full tmpfs (``tests/test_full_disk.py``)."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save({**payload, "format": FORMAT}, f)

    return atomic_write(path, write)


def load_checkpoint(path: str | Path, required: tuple[str, ...] = (), map_location="cpu",
                    what: str = "checkpoint") -> dict:
    """Load a pagkd_lite checkpoint safely (``weights_only=True``).

    ``what`` names the file in messages (``--checkpoint`` when the user gave it).

    Raises:
        CheckpointError: the file is missing, a folder, empty, not a file ``torch.save``
            writes (a text file, say), holds pickled objects (not loadable with
            weights_only), is not a pagkd_lite checkpoint, or lacks a ``required`` key.
    """
    path = Path(path)
    problem = _not_a_checkpoint(path, what)
    if problem:
        raise CheckpointError(f"{what} {path}: {problem}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        first = _ANSI.sub("", str(err)).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(
            f"{what} {path}: cannot be loaded with weights_only=True ({type(err).__name__}: "
            f"{first}). pagkd_lite only reads its own "
            "checkpoints, which hold tensors and plain values, never pickled code."
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{what} {path}: not a pagkd_lite checkpoint (format {found!r}, expected "
            f"{FORMAT!r}); to start from weights trained elsewhere, load them into the model's "
            "state_dict yourself"
        )
    missing = [k for k in required if k not in payload]
    if missing:
        raise CheckpointError(f"{what} {path}: missing {missing}; has {sorted(payload)}")
    return payload


def _not_a_checkpoint(path: Path, what: str) -> str | None:
    """Why ``path`` plainly cannot be a checkpoint, found before ``torch.load`` sees it
    (whose own messages, e.g. ``EOFError`` for an empty file, say little), or None."""
    if path.is_dir():
        inside = sorted(path.glob("*/best.pt"))[:1] or sorted(path.glob("*.pt"))[:1]
        hint = f"e.g. {what} {inside[0]}" if inside else "e.g. <out>/<method>/best.pt"
        return f"is a folder, not a checkpoint file; give the .pt file ({hint})"
    if not path.exists():
        return "no such file" + (" (a broken symbolic link)" if path.is_symlink() else "")
    if not path.is_file():
        return "not a regular file, not a checkpoint"
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if not head:
        return "empty file (0 bytes), not a checkpoint"
    if head.startswith(_TORCH_MAGIC):
        return None
    try:  # incremental: a character cut at byte 512 is not an error
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        kind = "a text file" if b"\0" not in head else "not a file torch.save writes"
    except UnicodeDecodeError:
        kind = "not a file torch.save writes"
    return (f"not a checkpoint ({kind}); a pagkd_lite checkpoint is the .pt file that "
            f"train-student writes, e.g. <out>/<method>/best.pt")


def check_provenance(path: str | Path, ck: dict, data: dict | None = None,
                     model: dict | None = None) -> None:
    """Refuse a checkpoint trained for other data or another model, in one line.

    ``ck["provenance"]`` (written by ``pipeline.train_student``) holds ``data`` (``source``:
    ``"synthendo"`` with its config, or ``"real"`` with ``root`` and ``class_names``) and
    ``model`` (backbone, class count). ``data``/``model`` describe the run at hand; each
    is compared when given. A checkpoint from before provenance was recorded passes.
    """
    prov = ck.get("provenance")
    if prov is None:
        return
    if (not isinstance(prov, dict) or not {"data", "model"} <= set(prov)
            or not all(isinstance(prov[k], dict) for k in ("data", "model"))):
        raise CheckpointError(f"checkpoint {path}: provenance is not a dict with 'data' and "
                              f"'model' dicts (hand-edited?)")
    old = prov["data"]
    if data is not None and old.get("source") != data.get("source"):
        raise CheckpointError(
            f"checkpoint {path}: trained on {_describe(old)}, this run uses {_describe(data)}")
    for key in ("class_names", "config") if data is not None else ():
        if old.get(key) != data.get(key):
            raise CheckpointError(f"checkpoint {path}: trained on {_describe(old)} with data "
                                  f"{key} {old.get(key)!r}; this run has {data.get(key)!r}")
    for key in ("num_classes", "backbone") if model is not None else ():
        if prov["model"].get(key) != model.get(key):
            raise CheckpointError(
                f"checkpoint {path}: trained with {key} {prov['model'].get(key)!r}, this run "
                f"has {model.get(key)!r}")


def _describe(data: dict) -> str:
    if data.get("source") == "real":
        return f"real data {data.get('root')!r} (classes {data.get('class_names')})"
    return f"{data.get('source')} data"


def load_weights(path: str | Path, module: torch.nn.Module, state) -> None:
    """``module.load_trainable_state_dict(state)``, with a :class:`CheckpointError` naming
    ``path`` when the weights do not fit (other class count or backbone, edited keys)."""
    try:
        module.load_trainable_state_dict(state)
    except (KeyError, RuntimeError, TypeError, AttributeError, ValueError) as err:
        first = _ANSI.sub("", str(err)).strip().splitlines()
        raise CheckpointError(
            f"checkpoint {path}: its weights do not fit this model ({type(err).__name__}: "
            f"{first[0][:300] if first else ''})") from None
