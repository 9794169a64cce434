"""The decoded-image cache: each image decoded once, into a memory-mapped store on disk.

Decoding thousands of JPEGs at every run, fold and method is slow, and holding every
decoded image in every process's RAM does not scale (0.6 MB an image at 448 px). With a
cache folder (``pagkd-lite cv --cache-dir DIR``, ``PAGKD_CACHE_DIR``, or
``RealDataConfig.cache_dir`` in Python) the loader keeps the decoded images in a store::

    <cache_dir>/<data-root name>-<S>px-<key>/
        images.npy     uint8 (N, 3, S, S), a plain NumPy .npy file, memory-mapped
        index.json     one record per source file: size, mtime_ns, row, sha256, ...
        COMPLETE       written last: N, the byte size of images.npy, the sha256 of index.json

``<key>`` hashes the data root, the manifest and the decode settings (image size, resize
rule, pixel limit, decoder-warning policy, Pillow version, :data:`CACHE_VERSION`), so a
changed setting gets its own store. Inside a store a file's record is reused only while its
path, byte size and modification time (``st_mtime_ns``) are unchanged; a changed file is
decoded again and the store rewritten. A file rewritten within the file system's time
resolution with the same size is not noticed: delete the store to force a full decode.

Writes are atomic and durable: the new ``images.npy`` and ``index.json`` are written in
full to temporary names (their disk space reserved first) and flushed (``fsync``) while the
previous store is still complete; only then is ``COMPLETE`` removed, the two renamed into
place (``os.replace``, which needs no space) and ``COMPLETE`` written last. A full disk
while writing is an :class:`~pagkd_lite.errors.OutputError` naming the file, and leaves the
previous store complete and in use. A store without a matching ``COMPLETE`` (a run killed
mid-write, a truncated ``images.npy``) is never read: it is rebuilt, and the load report
says so. A lock file
(``fcntl.flock`` where available) keeps two processes from writing one store at once.

The images are opened with ``numpy.load(..., mmap_mode="c")`` (copy-on-write: the pages
are shared by every process that reads the store, through the OS page cache, and an
in-place change stays private to its process, never reaching the file) and handed to
:class:`~pagkd_lite.data.imageset.ImageSet` as rows of it
(:class:`~pagkd_lite.data.image_rows.ArrayImages`): the store holds the WLI images, then the
NBI images, each modality is a range of rows, and every subset, fold and split is another
index array over the same map, never a copy.

Size: N x 3 x S x S bytes (+ a 128-byte header), e.g. 5,000 images at 64 px are 61 MB and
at 448 px 3.0 GB. Clearing: delete the folder (``rm -rf runs/decode-cache``); nothing else
refers to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import PIL

from ..errors import ConfigError
from ..files import atomic_write_text, fsync_path, full_disk_is_an_error, readable, reserve

try:  # POSIX; elsewhere two processes must not build one store at once
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

#: bump when the decoding code changes what an image decodes to: every store is rebuilt
CACHE_VERSION = 1
#: environment variable naming the cache folder (``--cache-dir`` wins over it)
ENV_VAR = "PAGKD_CACHE_DIR"
#: how the loader turns a file into pixels (part of the store key)
RESIZE_RULE = ("EXIF orientation applied, any mode to RGB, JPEG draft >= size, bilinear "
               "resize of the whole frame to size x size (no crop)")
IMAGES, INDEX, MARKER, LOCK = "images.npy", "index.json", "COMPLETE", ".lock"

__all__ = ["CACHE_VERSION", "ENV_VAR", "DecodeStore", "Record", "default_cache_dir",
           "store_bytes"]


def default_cache_dir(runs_dir: str | Path = "runs") -> Path:
    """``$PAGKD_CACHE_DIR`` if set, else ``<runs_dir>/decode-cache`` (the kit's run folder,
    shared by every ``cv`` run, fold and method)."""
    env = os.environ.get(ENV_VAR, "").strip()
    return Path(env) if env else Path(runs_dir) / "decode-cache"


def store_bytes(n: int, size: int) -> int:
    """Bytes of the pixel data of ``n`` images at ``size`` px: ``n * 3 * size * size``."""
    return int(n) * 3 * int(size) * int(size)


@dataclass
class Record:
    """What the cache remembers about one source file.

    Attributes:
        size / mtime_ns: the file's byte size and modification time when it was decoded.
        row: its row in ``images.npy``; -1 when it failed to decode (``error`` says why)
            or was not kept.
        sha256: of the file's bytes (the loader's duplicate check).
        mode / src_size: the source's Pillow mode and (w, h) after EXIF rotation.
        notes: decoder warnings recorded under ``decode_warnings="keep"``.
        error: the reason it was refused (replayed without decoding it again).
    """

    size: int
    mtime_ns: int
    row: int = -1
    sha256: str = ""
    mode: str = ""
    src_size: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def _key(path: str | Path) -> str:
    """A source path as an index key (absolute; undecodable bytes survive ``json``)."""
    return os.path.abspath(path)


class DecodeStore:
    """One store folder: find it, check it, read its records, write a new version.

    Args:
        cache_dir: the cache folder (created when missing).
        root: the data root; manifest: the manifest path or None.
        settings: the decode settings that change pixels or refusals (``image_size``,
            ``max_pixels``, ``decode_warnings``).
    """

    def __init__(self, cache_dir: str | Path, root: str | Path, manifest: str | Path | None,
                 settings: dict) -> None:
        self.cache_dir = Path(cache_dir)
        if self.cache_dir.exists() and not self.cache_dir.is_dir():
            raise ConfigError(f"--cache-dir {readable(str(cache_dir))} is a file; give a folder "
                              f"(or --no-decode-cache)")
        self.size = int(settings["image_size"])
        self.settings = {"version": CACHE_VERSION, "resize": RESIZE_RULE,
                         "pillow": PIL.__version__, **settings,
                         "root": os.path.abspath(root),
                         "manifest": None if manifest is None else os.path.abspath(manifest)}
        blob = json.dumps(self.settings, sort_keys=True, ensure_ascii=True)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(os.path.abspath(root)).name)[:40] or "data"
        self.dir = self.cache_dir / f"{name}-{self.size}px-{digest}"
        self.note = ""      # what happened to the store, for the load report
        self._lock_fd: int | None = None

    # -------------------------------------------------------------- lock and cleanup
    @contextlib.contextmanager
    def locked(self) -> Iterator[DecodeStore]:
        """Hold the store's lock (exclusive) and remove what killed writers left behind."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"--cache-dir {readable(str(self.cache_dir))}: cannot create "
                              f"{readable(str(self.dir))} ({e.strerror or e}); give a "
                              f"writable folder or pass --no-decode-cache") from None
        fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            for stale in [*self.dir.glob("*.tmp"), *self.dir.glob("staging-*.npy")]:
                stale.unlink(missing_ok=True)   # only a writer holding the lock makes these
            yield self
        finally:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -------------------------------------------------------------- reading
    def check(self) -> str | None:
        """None if the store is complete and consistent, else why it is not."""
        marker, images, index = self.dir / MARKER, self.dir / IMAGES, self.dir / INDEX
        if not images.exists() and not index.exists() and not marker.exists():
            return "empty"
        if not marker.exists():
            return "no COMPLETE marker (a write was cut off)"
        try:
            done = json.loads(marker.read_text(encoding="utf-8"))
            index_sha = hashlib.sha256(index.read_bytes()).hexdigest()
            have = images.stat().st_size
        except (OSError, ValueError) as e:
            return f"unreadable ({type(e).__name__}: {e})"
        if done.get("index_sha256") != index_sha:
            return "index.json does not match the COMPLETE marker"
        if done.get("images_bytes") != have:
            return (f"images.npy is {have} bytes, the COMPLETE marker says "
                    f"{done.get('images_bytes')} (truncated or overwritten)")
        try:
            arr = np.load(images, mmap_mode="r")
        except (OSError, ValueError) as e:
            return f"images.npy unreadable ({e})"
        if arr.dtype != np.uint8 or arr.shape != (done.get("n"), 3, self.size, self.size):
            return f"images.npy holds {arr.dtype} {arr.shape}, not {done.get('n')} images"
        return None

    def open(self) -> tuple[np.ndarray | None, dict[str, Record]]:
        """The complete store's images (read-only memmap) and records; ``(None, {})`` when
        there is none or it is incomplete (``self.note`` says which)."""
        why = self.check()
        if why == "empty":
            self.note = "cold: a new store"
            return None, {}
        if why is not None:
            self.note = f"incomplete store ({why}): rebuilt, nothing read from it"
            return None, {}
        index = json.loads((self.dir / INDEX).read_text(encoding="utf-8"))
        records = {k: Record(**r) for k, r in index["records"].items()}
        self.note = "warm"
        return np.load(self.dir / IMAGES, mmap_mode="r"), records

    def lookup(self, records: dict[str, Record], path: str | Path,
               st: os.stat_result) -> Record | None:
        """``path``'s record if its size and mtime are unchanged, else None."""
        rec = records.get(_key(path))
        if rec is None or rec.size != st.st_size or rec.mtime_ns != st.st_mtime_ns:
            return None
        return rec

    @staticmethod
    def record(path: str | Path, st: os.stat_result, **fields) -> tuple[str, Record]:
        """A new ``(key, record)`` for ``path`` as it is now."""
        return _key(path), Record(size=st.st_size, mtime_ns=st.st_mtime_ns, **fields)

    # -------------------------------------------------------------- writing
    def _mapped(self, path: Path, n: int) -> np.ndarray:
        """A new ``.npy`` file of ``n`` images at ``path``, its disk space reserved, mapped
        for writing."""
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8,
                                       shape=(n, 3, self.size, self.size))
        reserve(path, path.stat().st_size)
        return mm

    def staging(self, n: int) -> np.ndarray:
        """A scratch memmap for ``n`` newly decoded images (removed by the next writer)."""
        path = self.dir / f"staging-{os.getpid()}.npy"
        with full_disk_is_an_error(path, "the previous store (if any) is unchanged; nothing "
                                         "was decoded"):
            return self._mapped(path, max(n, 1))

    def drop_staging(self) -> None:
        (self.dir / f"staging-{os.getpid()}.npy").unlink(missing_ok=True)

    def write(self, rows: list[np.ndarray], records: dict[str, Record]) -> None:
        """Write a new version: ``rows[i]`` (a (3, S, S) uint8 array) becomes row ``i``.

        Both files are written in full under temporary names first; a failure there (a
        full disk: :class:`~pagkd_lite.errors.OutputError` naming the file) leaves the
        previous store complete. Then ``COMPLETE`` goes, the files are renamed into place,
        and ``COMPLETE`` comes back last, so a cut-off write is never read."""
        tmp = {name: self.dir / f"{name}.{os.getpid()}.tmp" for name in (IMAGES, INDEX)}
        index = json.dumps({"settings": self.settings,
                            "records": {k: asdict(r) for k, r in records.items()}},
                           ensure_ascii=True, indent=1)
        kept = "the previous store (if any) is unchanged and still used"
        try:
            with full_disk_is_an_error(self.dir / IMAGES, kept):
                mm = self._mapped(tmp[IMAGES], len(rows))
                for i, row in enumerate(rows):
                    mm[i] = row
                mm.flush()
                del mm
                fsync_path(tmp[IMAGES])
            with full_disk_is_an_error(self.dir / INDEX, kept):
                tmp[INDEX].write_text(index, encoding="utf-8")
                fsync_path(tmp[INDEX])
        except BaseException:
            for t in tmp.values():
                t.unlink(missing_ok=True)
            raise
        (self.dir / MARKER).unlink(missing_ok=True)
        fsync_path(self.dir)
        os.replace(tmp[IMAGES], self.dir / IMAGES)
        os.replace(tmp[INDEX], self.dir / INDEX)
        fsync_path(self.dir)
        done = {"version": CACHE_VERSION, "n": len(rows),
                "images_bytes": (self.dir / IMAGES).stat().st_size,
                "index_sha256": hashlib.sha256(index.encode()).hexdigest()}
        atomic_write_text(self.dir / MARKER, json.dumps(done, indent=1), durable=True)

    def images(self) -> np.ndarray:
        """The complete store's images, copy-on-write mapped (shared pages, private writes)."""
        return np.load(self.dir / IMAGES, mmap_mode="c")

    def nbytes(self) -> int:
        """Bytes of ``images.npy`` on disk."""
        return (self.dir / IMAGES).stat().st_size
