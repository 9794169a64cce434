"""Files: printable names, atomic writes, an early check of ``--out``, containment in a root.

Every file the kit writes goes to a temporary name beside its target and is renamed over it
(:func:`atomic_write`), so a kill or a full disk never leaves a half-written file: the
previous complete file stays in place. A full disk (``ENOSPC``, or a quota: ``EDQUOT``) is
an :class:`~pagkd_lite.errors.OutputError` naming the file (:func:`full_disk_is_an_error`),
which the command line prints as one line. A file that is filled through a memory map is
given its disk space first (:func:`reserve`), so a full disk is that error, never a
``SIGBUS`` when a page of the map is written.

File names on Linux are bytes; Python gives the ones that are not valid UTF-8 back as
``str`` with lone surrogates (``surrogateescape``), which cannot be written as UTF-8
text. :func:`readable` turns such a name into a printable, unambiguous form
(``caf\\xe9.png``) for reports and CSVs; the real path is kept for opening the file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
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


#: the errno values of a full disk or a full quota
FULL_DISK = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


@contextlib.contextmanager
def full_disk_is_an_error(path: str | Path, kept: str = "the previous file (if any) is "
                          "unchanged") -> Iterator[None]:
    """Inside: an ``OSError`` of a full disk (:data:`FULL_DISK`) becomes an
    :class:`OutputError` that names ``path`` and says what was ``kept``; other errors pass.

    The full disk may also be the context of another error: ``torch.save`` writing through a
    file object meets the ``OSError``, and then its zip writer, closing, raises a
    ``RuntimeError`` ("unexpected pos") during the handling of it."""
    try:
        yield
    except Exception as exc:
        err = _full_disk_error(exc)
        if err is None:
            raise
        raise OutputError(f"cannot write {readable(str(path))}: no space left on the device "
                          f"({err.strerror or 'ENOSPC'}); {kept}. Free some space, or write "
                          f"to another disk (--out, --cache-dir)") from None


def _full_disk_error(exc: BaseException) -> OSError | None:
    """The full-disk ``OSError`` that is ``exc`` or caused it (its ``__cause__`` or
    ``__context__`` chain), else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno in FULL_DISK:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def reserve(path: str | Path, nbytes: int) -> None:
    """Give ``path`` its first ``nbytes`` bytes of disk now (``posix_fallocate``): a full
    disk is then an ``OSError`` (ENOSPC) here, not a ``SIGBUS`` later when a memory map of
    the file is written. A no-op where the platform or the file system cannot."""
    fallocate = getattr(os, "posix_fallocate", None)  # POSIX only
    if fallocate is None or nbytes <= 0:
        return
    fd = os.open(path, os.O_RDWR)
    try:
        fallocate(fd, 0, int(nbytes))
    except OSError as err:
        if err.errno in FULL_DISK:
            raise
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[str], None], durable: bool = False) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``
    (``os.replace``): a failure part-way never leaves a half-written file, and the previous
    ``path`` stays as it was. ``durable``: also ``fsync`` the file before the rename and the
    folder after it, so the new file survives a power cut as well as a killed process.

    Raises:
        OutputError: the disk (or quota) is full; it names ``path``.
    """
    path = Path(path)
    with full_disk_is_an_error(path):
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
