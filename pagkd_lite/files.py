"""Files: printable names, atomic writes, an early check of ``--out``, containment in a root.

File names on Linux are bytes; Python gives the ones that are not valid UTF-8 back as
``str`` with lone surrogates (``surrogateescape``), which cannot be written as UTF-8
text. :func:`readable` turns such a name into a printable, unambiguous form
(``caf\\xe9.png``) for reports and CSVs; the real path is kept for opening the file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import OutputError


def readable(name: str) -> str:
    """``name`` with undecodable bytes shown as ``\\xNN`` (identity for valid UTF-8)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_within(path: str | Path, root: str | Path) -> bool:
    """True if ``path`` lies inside the folder ``root``: as written (``..`` resolved
    lexically, links not followed), or once both are resolved (a root given through a
    symbolic link, absolute paths to its real location)."""
    def inside(p: str, r: str) -> bool:
        try:
            return os.path.commonpath([p, r]) == r
        except ValueError:  # one relative, one absolute, or different drives
            return False

    return (inside(os.path.abspath(path), os.path.abspath(root))
            or inside(os.path.realpath(path), os.path.realpath(root)))


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a folder's) data to the disk (``os.fsync``); folders are
    skipped where the platform cannot open them (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if Path(path).is_dir():
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[str], None], durable: bool = False) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``
    (``os.replace``): a failure part-way never leaves a half-written file. ``durable``:
    also ``fsync`` the file before the rename and the folder after it, so the new file
    survives a power cut as well as a killed process."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        if durable:
            fsync_path(tmp)
        os.replace(tmp, path)
        if durable:
            fsync_path(path.parent)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_write_text(path: str | Path, text: str, durable: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"),
                        durable=durable)


def check_out_dir(path: str | Path, what: str = "--out") -> Path:
    """Raise :class:`OutputError` unless ``path`` is, or can be made as, a writable folder.

    Nothing is created: the nearest existing ancestor must be a writable folder and no
    part of the path may be a file.
    """
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            raise OutputError(f"{what} {readable(str(path))}: {readable(str(probe))} is a "
                              f"broken symbolic link")
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is a file" if probe == path else f"lies under the file {readable(str(probe))}"
        raise OutputError(f"{what} {readable(str(path))} {where}; give a folder")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {readable(str(path))}: cannot write in "
                          f"{readable(str(probe))} (permission denied)")
    return path
