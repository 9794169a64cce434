"""The kit's user-facing errors: each says what went wrong and where (file, field, value).

``pagkd-lite`` prints a :class:`KitError` in one or two lines and exits with status 2;
any other exception is an internal error and keeps its traceback (``cli.main``).
The classes also derive from the built-in they refine (``ValueError``, ``RuntimeError``),
so code written against the built-ins keeps working.
"""

from __future__ import annotations

from pathlib import Path


class KitError(Exception):
    """Base of every error caused by the user's input: data, arguments, files, checkpoints."""


class ConfigError(KitError, ValueError):
    """A setting or command-line argument has a value the kit cannot use."""


class OutputError(KitError, ValueError):
    """The output location cannot be written (a file, under a file, or read-only)."""


class DataLayoutError(KitError, ValueError):
    """The folder tree or the manifest does not describe a usable WLI/NBI data set.

    ``report`` is the :class:`~pagkd_lite.data.realdata.LoadReport` built up to the failure
    (None when the error came before loading started), so the caller can save it.
    """

    report = None


class ImageLoadError(KitError):
    """An image file could not be read or decoded. ``path`` and ``reason`` say which and why."""

    report = None

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class CheckpointError(KitError, RuntimeError):
    """A checkpoint that can't be used here: missing, unsafe, foreign, incomplete, or
    trained for other data or another model."""


class RunStopped(KitError):
    """A torchrun job stopped because one of its ranks failed or was killed. Its message is
    the one line that names the rank and what it was doing, on the one rank that says it,
    and empty on the others (which then end without a word)."""
