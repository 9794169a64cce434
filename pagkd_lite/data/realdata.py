"""Real WLI/NBI data: a folder tree or a CSV manifest -> two ImageSets and a load report.

Two layouts are read, and both give ``{"WLI": ImageSet, "NBI": ImageSet}`` (see
:mod:`pagkd_lite.data.imageset`) plus a :class:`LoadReport` that says what was loaded, skipped,
ignored and merged. Nothing is dropped silently: every file the loader saw and did not
use appears in the report with its reason.

Folder layout ``<root>/<modality>/<class>/<image>``::

    root/
      White_light/            # any of RealDataConfig.wli_names, case-insensitive
        adenoma/  001.png 002.png ...
        hyperplastic/  ...
      NBI/                    # any of RealDataConfig.nbi_names, case-insensitive
        adenoma/  ...
        hyperplastic/  ...

Images sit directly in the class folders; subfolders (their files counted), hidden files,
hidden and system folders (``.*``, ``__MACOSX``) and files with other extensions are
recorded as ignored. The folder layout has no patient or lesion ids, so
the file stem is used as both the lesion id and the patient id (``001.png`` -> lesion
``"001"``, patient ``"001"``). The same stem under WLI and NBI in the same class is
therefore the same lesion (right for paired sets such as CPC-Paired, whose WL and NBI
files share names). A lesion has one class: a stem reused across classes (``001.jpg`` in
every class folder) is one lesion per class, ``adenoma/001``, ``serrated/001``, recorded
in ``report.lesion_splits``, or an error with ``stem_reuse="error"`` (see
:mod:`pagkd_lite.data.lesion_ids`). When file names encode the ids, pass ``id_regex`` with
named groups ``lesion`` and/or ``patient``, e.g. ``r"(?P<lesion>\\d+)-\\d+"`` for
``01-1.png, 01-2.png`` (lesion ``"01"``).

Manifest layout: a CSV with columns ``path,modality,label,patient_id,lesion_id`` and an
optional ``fold``; paths relative to ``root``, or absolute. A path that lies outside the
root (``../../x.png``, or an absolute path elsewhere) is refused unless
``allow_outside_root=True``. The ``lesion_id`` column is used as written; a lesion id
that carries two classes is an error naming the lines. Modality values accept the same
spellings as folder names. A ``fold`` column is kept per image in
``ImageSet.meta["fold"]`` and used by :func:`pagkd_lite.data.splits.lesion_folds`.

Label space: the sorted union of class names (or ``class_names`` in the config, to fix
the order, e.g. to make adenoma the positive class). PaGKD trains a WLI student from an NBI
teacher over the same classes, so every class must have images in both modalities; a
class in one modality only is an error unless ``allow_missing_classes=True`` (then it is
kept and a warning is recorded). Class names that differ only in case (``Adenoma`` vs
``adenoma``) are an error naming both folders: the loader does not guess.

Images: see :func:`load_image` (any mode -> RGB uint8, EXIF rotation honoured, plain
resize to ``image_size x image_size``). Decoding policy (``LoadReport.policy``): only
regular files are opened (no FIFOs or devices); an image over ``max_pixels`` is refused
before it is decoded; an image whose decoder warns (a JPEG with corrupt data, bad
EXIF, ...) is skipped with the warning as its reason (``decode_warnings="keep"``: loaded,
and the warning recorded). Names that are not valid UTF-8 are shown as ``\\xNN`` in the
report and in class names (:func:`pagkd_lite.files.readable`).
Identical bytes (sha256) met more than once are
listed in ``report.duplicates`` and their lesions are merged into one lesion id (so any
lesion- or patient-grouped split keeps them in one fold); each merge is recorded in
``report.lesion_merges``.

Where the decoded images live: in RAM (the default in Python), in a memory-mapped store on
disk that every run, fold and rank reads (``cache_dir``, :mod:`pagkd_lite.data.decode_cache`;
the ``cv`` default), or nowhere: with ``decode_per_step`` the images stay files
(ImageFolder style), every file is checked once at load, and the ImageSets hold
:class:`FileImages`, which decode each training or prediction batch when it is used,
through a DataLoader with ``loader_workers`` worker processes (:class:`FileImageDataset`).
The three give the same pixels.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import dataclasses
import hashlib
import io
import json
import os
import posixpath
import re
import stat
import sys
import tempfile
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from pagkd_lite.data.decode_cache import DecodeStore, Record
from pagkd_lite.data.imageset import MODALITIES, ImageSet
from pagkd_lite.data.lesion_ids import STEM_REUSE, check_one_class, scope_by_class
from pagkd_lite.data.splits import UnionFind
from pagkd_lite.errors import ConfigError, DataLayoutError, ImageLoadError, KitError
from pagkd_lite.files import atomic_write_text, is_within, readable

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MANIFEST_COLUMNS = ("path", "modality", "label", "patient_id", "lesion_id")
#: folders never scanned: hidden (``.*``) and made by operating systems or tools
SYSTEM_FOLDERS = ("__MACOSX", "$RECYCLE.BIN", "System Volume Information")

__all__ = ["DataLayoutError", "ImageLoadError", "LoadReport", "RealDataConfig",
           "load_dataset", "load_image"]


@dataclass
class RealDataConfig:
    """Where the data is and how to read it.

    Attributes:
        root: data root (folder layout) or the folder the manifest paths are relative to.
        image_size: side of the square images the loader returns.
        wli_names / nbi_names: accepted modality folder names (and manifest modality
            values), compared case-insensitively.
        manifest: CSV path (absolute, relative to the working directory, or relative to
            ``root``); when set, the folder tree is not scanned.
        on_bad_image: ``"skip"`` (record in the report and go on) or ``"error"`` (raise
            :class:`ImageLoadError` naming the file).
        extensions: file extensions treated as images in the folder layout.
        allow_missing_classes: keep a class that has images in one modality only
            (recorded as a warning) instead of raising.
        id_regex: optional regex searched in each file stem (folder layout) with named
            groups ``lesion`` and/or ``patient``; a missing group falls back to the stem
            (lesion) or to the lesion id (patient).
        max_pixels: refuse (skip, recorded) images with more than this many pixels
            (width x height), before decoding them.
        decode_warnings: ``"skip"`` (an image whose decoder warns is skipped, the warning
            is its reason) or ``"keep"`` (loaded; the warning goes to the report).
        class_names: optional label order (index = label), e.g. ``("hyperplastic",
            "adenoma")`` to make adenoma the positive class of a binary AUC; it must name
            exactly the classes found. Default: the sorted union of class names.
        progress: show a tqdm progress bar while decoding.
        stem_reuse: a lesion id derived from file names (stem or ``id_regex``) that
            appears under several classes: ``"split"`` (one lesion per class,
            ``<class>/<id>``, recorded) or ``"error"`` (see :mod:`pagkd_lite.data.lesion_ids`).
        allow_outside_root: read manifest paths that lie outside ``root`` (``../x.png``,
            absolute paths elsewhere) instead of refusing them.
        cache_dir: keep the decoded images in a memory-mapped store under this folder
            (:mod:`pagkd_lite.data.decode_cache`): each image is decoded once, later loads
            read the store, and the ImageSets' ``images`` are views of it. None (the
            default in Python): decode into RAM at every load.
        decode_per_step: keep the images as files (ImageFolder style): the load checks
            every file once and keeps no pixels; the ImageSets' ``images`` are
            :class:`FileImages`, decoded batch by batch when training or prediction uses
            them (``--decode-per-step``). No decode cache is used.
        loader_workers: DataLoader worker processes that decode those batches (0: in the
            training process; ``--loader-workers``).
    """

    root: str
    image_size: int = 96
    wli_names: tuple[str, ...] = ("WLI", "WL", "White_light", "white_light", "white-light")
    nbi_names: tuple[str, ...] = ("NBI",)
    manifest: str | None = None
    on_bad_image: str = "skip"
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    allow_missing_classes: bool = False
    id_regex: str | None = None
    class_names: tuple[str, ...] | None = None
    progress: bool = False
    max_pixels: int = 40_000_000
    decode_warnings: str = "skip"
    stem_reuse: str = "split"
    allow_outside_root: bool = False
    cache_dir: str | None = None
    decode_per_step: bool = False
    loader_workers: int = 2

    def __post_init__(self) -> None:
        if not str(self.root).strip():
            raise ConfigError("RealDataConfig.root is empty (--data-root ''); give the data "
                              "folder, or '.' for the current folder")
        if self.stem_reuse not in STEM_REUSE:
            raise ConfigError(f"--stem-reuse {self.stem_reuse} (stem_reuse): must be one of "
                              f"{', '.join(STEM_REUSE)}, e.g. --stem-reuse split")
        if self.class_names is not None:
            self.class_names = tuple(self.class_names)
            check_names(self.class_names, "RealDataConfig.class_names")
        if self.on_bad_image not in ("skip", "error"):
            raise ConfigError(f"RealDataConfig.on_bad_image must be 'skip' or 'error', "
                              f"got {self.on_bad_image!r}")
        if self.decode_warnings not in ("skip", "keep"):
            raise ConfigError(f"RealDataConfig.decode_warnings must be 'skip' or 'keep', "
                              f"got {self.decode_warnings!r} (on the command line: "
                              f"--keep-decode-warnings for 'keep', nothing for 'skip')")
        if int(self.image_size) < 1:
            raise ConfigError(f"--set data.image_size={self.image_size} (image_size): must be "
                              f">= 1, e.g. --set data.image_size=64")
        if int(self.max_pixels) < 1:
            raise ConfigError(f"--max-pixels {self.max_pixels} (max_pixels): must be >= 1")
        if int(self.loader_workers) < 0:
            raise ConfigError(f"--loader-workers {self.loader_workers} (loader_workers): must "
                              f"be >= 0 (0 decodes in the training process), e.g. "
                              f"--loader-workers 2")
        if self.decode_per_step and self.cache_dir is not None:
            raise ConfigError("--decode-per-step and --cache-dir (decode_per_step, cache_dir): "
                              "images kept as files are decoded at every step, never cached; "
                              "give one of the two")
        if self.id_regex is not None:
            try:
                groups = set(re.compile(self.id_regex).groupindex)
            except re.error as err:
                raise ConfigError(f"--id-regex {self.id_regex!r} is not a valid regular "
                                  f"expression: {err}") from None
            if not groups & {"lesion", "patient"}:
                raise ConfigError(f"--id-regex {self.id_regex!r} has no named group 'lesion' "
                                  f"or 'patient', e.g. (?P<lesion>\\d+)")
        clash = {n.lower() for n in self.wli_names} & {n.lower() for n in self.nbi_names}
        if clash:
            raise ConfigError(f"--wli-names and --nbi-names: {sorted(clash)} given to both "
                              f"(in both wli_names and nbi_names); a folder is one modality, "
                              f"so give each name to one of the two options")
        self.extensions = tuple(e.lower() if e.startswith(".") else "." + e.lower()
                                for e in self.extensions)

    def modality_of(self, name: str) -> str | None:
        """``"WLI"``/``"NBI"`` for an accepted spelling (case-insensitive), else None."""
        low = name.strip().lower()
        if low in {n.lower() for n in self.wli_names}:
            return "WLI"
        if low in {n.lower() for n in self.nbi_names}:
            return "NBI"
        return None


def check_names(names: tuple[str, ...], what: str) -> None:
    """Raise :class:`ConfigError` (naming ``what``, e.g. ``--class-names``) if a name in a
    list of class or folder names is empty or given more than once."""
    shown = ",".join(names)
    empty = [i + 1 for i, n in enumerate(names) if not n.strip()]
    if empty:
        raise ConfigError(f"{what} {shown}: name number {empty[0]} is empty; give each "
                          f"name once, separated by commas")
    twice = [n for n in dict.fromkeys(names) if names.count(n) > 1]
    if twice:
        raise ConfigError(f"{what} {shown}: {twice[0]!r} is given {names.count(twice[0])} "
                          f"times; give each name once"
                          + (" (every class of the data exactly once, in label order)"
                             if "class" in what else ""))


@dataclass
class LoadReport:
    """What :func:`load_dataset` did, file by file where it did not load one.

    Attributes:
        root: the data root.
        layout: ``"folder"`` or ``"manifest"``.
        image_size: output side length.
        sources: modality -> folder name (folder layout) or manifest path.
        class_names: the label space.
        counts: modality -> class -> number of images loaded.
        skipped: one dict per file that was meant to load and did not
            (``path``, ``modality``, ``class``, ``reason``).
        ignored: one dict per entry that was not meant to load (``path``, ``reason``):
            non-image extensions, hidden files, folders that are not modalities or classes.
        duplicates: groups of paths whose bytes are identical (sha256).
        lesion_merges: one dict per merge of lesion ids caused by duplicates
            (``new_lesion_id``, ``old_lesion_ids``, ``paths``).
        lesion_splits: one dict per lesion id derived from file names that appeared under
            several classes and became one lesion per class (``lesion_id``, ``classes``,
            ``new_lesion_ids``, ``n_images``, ``note``); see :mod:`pagkd_lite.data.lesion_ids`.
        warnings: anything else the user should read.
        source_images: modality -> ``{"modes": {mode: n}, "min_size": [w, h],
            "max_size": [w, h]}`` of the files before conversion.
        policy: the rules applied (file types, pixel limit, decoder warnings, folders,
            manifest paths), so the report says how it was made.
        normalised: one dict per manifest path rewritten (``line``, ``given``, ``used``).
        decoded: how many images were decoded in this load (0 when every image came from
            a warm decode cache).
        cache: the decode cache: ``{"dir", "status", "reused", "decoded", "bytes"}``
            (``status`` ``"off"`` without one); see :mod:`pagkd_lite.data.decode_cache`.
    """

    root: str
    layout: str
    image_size: int
    sources: dict[str, str] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)
    ignored: list[dict] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)
    lesion_merges: list[dict] = field(default_factory=list)
    lesion_splits: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    source_images: dict[str, dict] = field(default_factory=dict)
    policy: dict[str, str] = field(default_factory=dict)
    normalised: list[dict] = field(default_factory=list)
    decoded: int = 0
    cache: dict = field(default_factory=lambda: {"status": "off"})

    @property
    def num_loaded(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    def to_dict(self) -> dict:
        return asdict(self)

    def to_text(self) -> str:
        """A human-readable summary: counts table, then every skip, ignore, merge, warning."""
        if self.layout == "manifest":
            src = f"manifest={next(iter(self.sources.values()), '?')}"
        else:
            src = ", ".join(f"{m}={s}" for m, s in self.sources.items())
        lines = [f"Load report: {self.root} ({self.layout} layout; {src}; "
                 f"images resized to {self.image_size}x{self.image_size})"]
        lines.append(f"Classes ({len(self.class_names)}): {', '.join(self.class_names)}")
        width = max([len(c) for c in self.class_names] + [5])
        lines.append("  " + "modality".ljust(9) + "".join(c.rjust(width + 2)
                                                          for c in [*self.class_names, "total"]))
        for mod, per_class in self.counts.items():
            row = [per_class.get(c, 0) for c in self.class_names]
            lines.append("  " + mod.ljust(9) + "".join(str(v).rjust(width + 2)
                                                       for v in [*row, sum(row)]))
        for mod, info in self.source_images.items():
            modes = ", ".join(f"{k}: {v}" for k, v in sorted(info.get("modes", {}).items()))
            lines.append(f"  {mod} source images: sizes {info.get('min_size')} to "
                         f"{info.get('max_size')} (w, h); modes {modes}")
        inside = sum(i.get("files_inside", 0) for i in self.ignored)
        lines.append(f"Loaded {self.num_loaded} image(s); skipped {len(self.skipped)}; "
                     f"ignored {len(self.ignored)} (+{inside} file(s) inside ignored folders); "
                     f"duplicate groups {len(self.duplicates)}.")
        if self.cache.get("status", "off") == "off":
            lines.append(f"Decoded {self.decoded} image(s) (no decode cache).")
        elif self.cache.get("status") == "files":
            lines.append(f"Decoded {self.decoded} image(s) to check them; kept as files, "
                         f"decoded per step by {self.cache.get('workers')} DataLoader "
                         f"worker(s) (--decode-per-step).")
        else:
            lines.append(f"Decoded {self.decoded} image(s); {self.cache.get('reused', 0)} "
                         f"from the decode cache {self.cache.get('dir')} "
                         f"({self.cache.get('status')}; {self.cache.get('bytes', 0)} bytes).")
        if self.skipped:
            lines.append(f"Skipped ({len(self.skipped)}):")
            lines += [f"  {s['path']}: {s['reason']}" for s in self.skipped]
        if self.ignored:
            lines.append(f"Ignored ({len(self.ignored)}):")
            lines += [f"  {s['path']}: {s['reason']}" + (
                f" ({s['files_inside']} file(s) inside, not scanned)" if "files_inside" in s
                else "") for s in self.ignored]
        if self.duplicates:
            lines.append(f"Duplicates (identical bytes; kept, and grouped as one lesion) "
                         f"({len(self.duplicates)}):")
            lines += ["  " + " == ".join(g) for g in self.duplicates]
        if self.lesion_splits:
            lines.append(f"Lesion ids split by class (a lesion has one class) "
                         f"({len(self.lesion_splits)}):")
            lines += [f"  {s['note']}" for s in self.lesion_splits]
        if self.lesion_merges:
            lines.append(f"Lesion merges ({len(self.lesion_merges)}):")
            lines += [f"  {m['old_lesion_ids']} -> {m['new_lesion_id']!r}"
                      for m in self.lesion_merges]
        if self.normalised:
            lines.append(f"Manifest paths normalised ({len(self.normalised)}):")
            lines += [f"  line {n['line']}: {n['given']!r} -> {n['used']!r}"
                      for n in self.normalised]
        if self.warnings:
            lines.append(f"Warnings ({len(self.warnings)}):")
            lines += [f"  {w}" for w in self.warnings]
        if self.policy:
            lines.append("Policy:")
            lines += [f"  {k}: {v}" for k, v in self.policy.items()]
        return "\n".join(lines)

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<path>.json`` and ``<path>.txt`` (a ``.json``/``.txt`` suffix is dropped
        first); returns both paths."""
        base = Path(path)
        if base.suffix in (".json", ".txt"):
            base = base.with_suffix("")
        jpath, tpath = base.with_name(base.name + ".json"), base.with_name(base.name + ".txt")
        atomic_write_text(jpath, json.dumps(self.to_dict(), indent=2))
        atomic_write_text(tpath, readable(self.to_text()) + "\n")
        return jpath, tpath


# ----------------------------------------------------------------------------- images

def _regular_stat(path: str | Path) -> os.stat_result:
    """The file's ``stat`` (links followed), or :class:`ImageLoadError` unless it is a
    regular file."""
    p = Path(path)
    if not p.exists():
        raise ImageLoadError(p, "broken symbolic link" if p.is_symlink() else "file not found")
    if p.is_dir():
        raise ImageLoadError(p, "is a directory, not an image file")
    st = p.stat()
    if not stat.S_ISREG(st.st_mode):
        mode = st.st_mode
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
                "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise ImageLoadError(p, f"{kind}, not a regular file: not opened")
    return st


def _read_bytes(path: str | Path) -> bytes:
    """The file's bytes, or :class:`ImageLoadError` saying why they cannot be had."""
    p = Path(path)
    _regular_stat(p)
    try:
        data = p.read_bytes()
    except PermissionError:
        raise ImageLoadError(p, "permission denied") from None
    except OSError as e:
        raise ImageLoadError(p, f"cannot read file ({e.strerror or e})") from None
    if not data:
        raise ImageLoadError(p, "empty file (0 bytes)")
    return data


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB.

    16-bit ('I;16*') is scaled to 8 bit by v * 255 / 65535 (full range, no stretching);
    32-bit 'I' and float 'F' are read as 8-bit if their maximum is <= 255 (<= 1.0 for
    'F': scaled by 255), else as 16-bit. Alpha (RGBA, LA, palette with transparency) is
    composited on black: RGB * alpha / 255.
    """
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im).astype(np.float64)
        top = float(arr.max()) if arr.size else 0.0
        if mode == "F" and top <= 1.0:
            arr = arr * 255.0
        elif mode.startswith("I;16") or top > 255.0:
            arr = np.clip(arr, 0, 65535) * (255.0 / 65535.0)
        im = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
        mode = im.mode
    if mode == "P" and "transparency" in im.info:
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, (0, 0, 0))
        out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return out
    return im if mode == "RGB" else im.convert("RGB")


def _libjpeg_warnings(data: bytes) -> list[str]:
    """libjpeg's warnings for a JPEG (e.g. ``Corrupt JPEG data: 214 extraneous bytes``).

    Pillow decodes a JPEG with a corrupted body without a word; torchvision's libjpeg
    decoder prints its warnings on file descriptor 2, which is captured here. Pillow has
    already decoded the image, so a second decoder that cannot (a JPEG flavour it lacks,
    or no torchvision image decoding at all) adds no warning.
    """
    try:
        from torchvision.io import decode_jpeg
    except ImportError:
        return []
    with tempfile.TemporaryFile() as cap, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(cap.fileno(), 2)
        try:
            decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        except RuntimeError:
            return []
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        cap.seek(0)
        text = cap.read().decode("utf-8", "replace")
    return [f"libjpeg: {ln.strip()}" for ln in text.splitlines() if "JPEG" in ln]


def _decode(data: bytes, path: str | Path, size: int, max_pixels: int = 40_000_000,
            keep_warnings: bool = False,
            probe: bool = True) -> tuple[torch.Tensor, str, tuple, list[str]]:
    """Bytes -> (uint8 (3, size, size), source mode, source (w, h) after EXIF rotation,
    decoder warnings). Images over ``max_pixels`` are refused before decoding; decoder
    warnings raise :class:`ImageLoadError` unless ``keep_warnings``. ``probe=False`` skips
    the second (libjpeg) decode that only looks for warnings: the pixels are the same."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageLoadError(path, f"image too large: {w} x {h} = {w * h} pixels "
                                               f"> max_pixels={max_pixels} (refused, not "
                                               f"decoded; raise --max-pixels to load it)")
                src_mode, fmt = im.mode, im.format
                im.draft(None, (size, size))   # JPEG only: decode at reduced scale, >= size
                im.load()
                im = ImageOps.exif_transpose(im)
                src_size = im.size
                rgb = _to_rgb(im)
        notes = [f"{c.category.__name__}: {c.message}" for c in caught
                 if not issubclass(c.category, Image.DecompressionBombWarning)]
        if fmt == "JPEG" and probe:
            notes += _libjpeg_warnings(data)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not an image (Pillow cannot identify the format)") from None
    except Image.DecompressionBombError as e:
        raise ImageLoadError(path, f"image too large ({e})") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure means a bad file
        raise ImageLoadError(path, f"corrupt or truncated image data "
                                   f"({type(e).__name__}: {e})") from None
    if notes and not keep_warnings:
        raise ImageLoadError(path, f"decoder warning ({'; '.join(notes)}); skipped by the "
                                   f"decoding policy (--keep-decode-warnings, or "
                                   f"decode_warnings='keep' in Python, loads it)")
    rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(rgb, dtype=np.uint8)
    tensor = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
    return tensor, src_mode, src_size, notes


def _release_freed_memory() -> None:
    """Hand the C heap's freed pages back to the OS (glibc ``malloc_trim``; elsewhere a
    no-op). Decoding thousands of images leaves the heap fragmented: each libjpeg probe
    frees a full-size frame (0.6 MB at 448 px) between small allocations that stay, and
    without a trim the process's private memory grows by about that much per image."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):   # not glibc (macOS, musl, Windows)
        return None


_LIBC = _glibc()


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """Read one image file as a uint8 tensor ``(3, size, size)``.

    Any size and mode: grayscale, palette, RGBA/LA (alpha composited on black), 16-bit
    (scaled to 8 bit), CMYK; the EXIF orientation is applied first
    (``PIL.ImageOps.exif_transpose``). Resizing is a plain bilinear resize of the whole
    frame to ``size x size`` (no crop): endoscopy crops are usually lesion crops, and a
    centre crop could cut lesion margins, so the kit accepts the aspect-ratio change.

    Raises:
        ImageLoadError: the path is missing, a directory, not a regular file, unreadable,
            empty, not an image, over 40 million pixels, corrupt/truncated, or its decoder
            warns; the message names the file and the reason.
    """
    return _decode(_read_bytes(path), path, int(size))[0]


# ----------------------------------------------------------------------------- images kept as files

class FileImageDataset(torch.utils.data.Dataset):
    """Image files decoded when asked for (ImageFolder style).

    ``dataset[i]`` is ``paths[i]`` decoded now, uint8 ``(3, size, size)``: the pixels that
    :func:`load_dataset` keeps in RAM or in the decode cache (one decoder, the libjpeg
    warning probe left out: the loader ran it when it checked the file).
    ``dataset[[i, j, ...]]`` is their stack ``(k, 3, size, size)``, one DataLoader item.

    Args:
        paths: the image files (``list[str | Path]``).
        size: the output side (``int``).
        max_pixels: the loader's pixel limit (``int``).
        stats: optional ``(byte size, st_mtime_ns)`` per file as the loader saw it
            (``list[tuple[int, int]]``); a file changed since then is an
            :class:`ImageLoadError` naming it, never different pixels.
    """

    def __init__(self, paths: list, size: int, max_pixels: int = 40_000_000,
                 stats: list[tuple[int, int]] | None = None) -> None:
        self.paths = [str(p) for p in paths]
        self.size = int(size)
        self.max_pixels = int(max_pixels)
        self.stats = stats
        if stats is not None and len(stats) != len(self.paths):
            raise ValueError(f"FileImageDataset: {len(stats)} stats for {len(self.paths)} "
                             f"paths")

    def __len__(self) -> int:
        return len(self.paths)

    def _one(self, i: int) -> torch.Tensor:
        path = self.paths[i]
        if self.stats is not None:
            st = _regular_stat(path)
            if (st.st_size, st.st_mtime_ns) != tuple(self.stats[i]):
                raise ImageLoadError(path, "changed since the data was loaded (size or "
                                           "modification time); start the run again")
        return _decode(_read_bytes(path), path, self.size, self.max_pixels,
                       keep_warnings=True, probe=False)[0]

    def __getitem__(self, index: int | list[int]) -> torch.Tensor:
        if isinstance(index, int | np.integer):
            return self._one(int(index))
        return torch.stack([self._one(int(i)) for i in index]) if len(index) else \
            torch.empty((0, 3, self.size, self.size), dtype=torch.uint8)


class _Chunks(torch.utils.data.Sampler):
    """The DataLoader's sampler: the chunks of the batch being decoded (set per batch)."""

    def __init__(self) -> None:
        self.chunks: list[list[int]] = []

    def __iter__(self):
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)


class _BatchDecoder:
    """Decodes rows of a :class:`FileImageDataset` through one DataLoader whose ``workers``
    processes persist for the run (started at the first batch); ``workers=0`` decodes in
    this process. A batch is split into one chunk per worker; chunks come back in order."""

    def __init__(self, dataset: FileImageDataset, workers: int) -> None:
        self.dataset, self.workers = dataset, int(workers)
        self._sampler = _Chunks()
        self._loader: torch.utils.data.DataLoader | None = None

    def __call__(self, rows: list[int]) -> torch.Tensor:
        if self.workers == 0 or len(rows) < 2:
            return self.dataset[rows]
        if self._loader is None:
            self._loader = torch.utils.data.DataLoader(
                self.dataset, batch_size=None, sampler=self._sampler,
                num_workers=self.workers, persistent_workers=True)
        k = min(self.workers, len(rows))
        self._sampler.chunks = [c.tolist() for c in np.array_split(np.asarray(rows), k)]
        try:
            return torch.cat(list(self._loader))
        except Exception:  # noqa: BLE001 - decode here again: the loader's own error, whole
            return self.dataset[rows]

    def __getstate__(self) -> dict:  # a copy or a pickle starts its own workers
        return {**self.__dict__, "_loader": None, "_sampler": _Chunks()}


class FileImages:
    """An ImageSet's ``images`` when they stay files: looks like a uint8 ``(N, 3, S, S)``
    tensor and decodes only the rows that are used, when they are used.

    Indexing with a slice, a list or an index tensor gives another ``FileImages`` (nothing
    decoded), so ``ImageSet.subset`` and the cross-validation folds cost nothing; an ``int``
    gives that image. ``.to(device)``, ``.pin_memory()``, ``.contiguous()``, ``.numpy()``,
    ``.float()`` and any torch function decode the rows, through the shared
    :class:`_BatchDecoder` (a DataLoader with worker processes). Training moves each step's
    batch with ``images[index].to(device)`` (:func:`pagkd_lite.models.accel.host_to_device`), so
    it decodes that batch at that step and holds no other image.

    Args:
        decoder: the shared decoder over every file (``_BatchDecoder``).
        rows: which of its files, in order (``list[int]``; default all).
    """

    dtype = torch.uint8
    ndim = 4

    def __init__(self, decoder: _BatchDecoder, rows: list[int] | None = None) -> None:
        self.decoder = decoder
        self.rows = list(range(len(decoder.dataset))) if rows is None else list(rows)

    @property
    def shape(self) -> torch.Size:
        s = self.decoder.dataset.size
        return torch.Size((len(self.rows), 3, s, s))

    def size(self, dim: int | None = None) -> torch.Size | int:
        return self.shape if dim is None else self.shape[dim]

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return (f"FileImages({len(self.rows)} files, decoded per use at "
                f"{self.decoder.dataset.size} px, {self.decoder.workers} worker(s))")

    def __getitem__(self, index) -> FileImages | torch.Tensor:
        if isinstance(index, int | np.integer):
            return self.decoder.dataset[self.rows[int(index)]]
        if isinstance(index, slice):
            return FileImages(self.decoder, self.rows[index])
        idx = torch.as_tensor(index)
        if idx.dtype == torch.bool:
            idx = idx.nonzero().flatten()
        if idx.ndim != 1:
            raise IndexError(f"FileImages: index must be an int, a slice or 1-D, got shape "
                             f"{tuple(idx.shape)}")
        return FileImages(self.decoder, [self.rows[i] for i in idx.tolist()])

    def decode(self) -> torch.Tensor:
        """These rows decoded now: uint8 ``(len(self), 3, S, S)``."""
        return self.decoder(self.rows)

    def to(self, *args, **kwargs) -> torch.Tensor:
        return self.decode().to(*args, **kwargs)

    def pin_memory(self) -> torch.Tensor:
        return self.decode().pin_memory()

    def contiguous(self, *args, **kwargs) -> torch.Tensor:
        return self.decode().contiguous(*args, **kwargs)

    def numpy(self) -> np.ndarray:
        return self.decode().numpy()

    def float(self) -> torch.Tensor:
        return self.decode().float()

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        arr = self.numpy()
        return arr if dtype is None else arr.astype(dtype)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        def real(x):
            if isinstance(x, FileImages):
                return x.decode()
            if isinstance(x, list | tuple):
                return type(x)(real(v) for v in x)
            return x
        return func(*real(tuple(args)), **{k: real(v) for k, v in (kwargs or {}).items()})


# ----------------------------------------------------------------------------- layouts

@dataclass
class _Entry:
    path: Path
    rel: str
    modality: str
    label: str
    patient_id: str
    lesion_id: str
    fold: int | None = None
    lesion_source: str = "stem"        # "stem", "id_regex" or "manifest" (lesion_ids)
    patient_from_lesion: bool = True   # the patient id fell back to the lesion id
    line: int | None = None            # manifest line


def _rel(p: Path, root: Path) -> str:
    """``p`` relative to ``root``, printable (:func:`pagkd_lite.files.readable`)."""
    try:
        return readable(p.relative_to(root).as_posix())
    except ValueError:
        return readable(str(p))


def _skipped_folder(p: Path) -> str | None:
    """Why a folder is never scanned (hidden or system), or None."""
    if p.name.startswith("."):
        return "hidden folder"
    if p.name in SYSTEM_FOLDERS:
        return "system folder"
    return None


def _ignored_dir(p: Path, root: Path, reason: str) -> dict:
    """An ignored folder's report entry, with the number of files inside it."""
    n = sum(len(files) for _, _, files in os.walk(p))
    return {"path": _rel(p, root), "reason": reason, "files_inside": n}


def _entry_from_stem(p: Path, rel: str, mod: str, cls: str,
                     pattern: re.Pattern | None) -> _Entry:
    """A folder-layout file's entry, with its ids from the stem (or ``id_regex``)."""
    stem = p.stem
    if pattern is None:
        return _Entry(p, rel, mod, cls, stem, stem)
    m = pattern.search(stem)
    if m is None:
        raise DataLayoutError(f"{p}: file stem {stem!r} does not match --id-regex "
                              f"{pattern.pattern!r}; fix the pattern or rename the file")
    groups = m.groupdict()
    lesion = groups.get("lesion") or stem
    patient = groups.get("patient")
    return _Entry(p, rel, mod, cls, patient or lesion, lesion,
                  lesion_source="id_regex" if groups.get("lesion") else "stem",
                  patient_from_lesion=not patient)


def _find_modality_dirs(root: Path, cfg: RealDataConfig, report: LoadReport) -> dict[str, Path]:
    if not root.is_dir():
        raise DataLayoutError(f"--data-root {readable(str(root))} is not a folder (or does "
                              f"not exist); give the folder that holds <modality>/<class>/<image>, "
                              f"or a CSV with --manifest")
    found: dict[str, list[Path]] = {m: [] for m in MODALITIES}
    for p in sorted(root.iterdir()):
        mod = cfg.modality_of(p.name) if p.is_dir() else None
        if mod is not None:
            found[mod].append(p)
        elif p.is_dir():
            report.ignored.append(_ignored_dir(p, root, _skipped_folder(p) or
                                               "folder is not a modality folder"))
        else:
            report.ignored.append({"path": _rel(p, root),
                                   "reason": "file at the root (not inside <modality>/<class>/)"})
    spellings = {"WLI": cfg.wli_names, "NBI": cfg.nbi_names}
    out = {}
    for mod, dirs in found.items():
        if not dirs:
            have = sorted(p.name for p in root.iterdir() if p.is_dir())
            other = [n for n in have if cfg.modality_of(n) is None and not n.startswith(".")]
            name = other[0] if other else "NAME"
            raise DataLayoutError(
                f"no {mod} folder under {root}: expected one of {list(spellings[mod])} "
                f"(case-insensitive); folders found: {have}. Rename the folder to "
                f"{spellings[mod][0]}, or name it with --{mod.lower()}-names {name} "
                f"({mod.lower()}_names=({name!r},) in Python).")
        if len(dirs) > 1:
            raise DataLayoutError(
                f"several folders under {root} look like {mod}: {[d.name for d in dirs]}; "
                f"keep one (move or rename the others), or name the one to use with "
                f"--{mod.lower()}-names {dirs[0].name} "
                f"({mod.lower()}_names=({dirs[0].name!r},) in Python).")
        out[mod] = dirs[0]
    return out


def _check_case(names_by_mod: dict[str, dict[str, str]], where: str) -> None:
    """Error if class names differ only in case, within or across modalities.

    ``names_by_mod``: modality -> class name -> its folder (or manifest) for messages.
    """
    for mod, names in names_by_mod.items():
        by_low: dict[str, list[str]] = defaultdict(list)
        for n in names:
            by_low[n.strip().lower()].append(n)
        for group in by_low.values():
            if len(group) > 1:
                places = " and ".join(f"{names[n]!r}" for n in sorted(group))
                raise DataLayoutError(
                    f"{where}: class names differ only in case or surrounding spaces within "
                    f"{mod}: {places}. Class names are exact; merge or rename them.")
    wli, nbi = names_by_mod.get("WLI", {}), names_by_mod.get("NBI", {})
    nbi_low = {n.strip().lower(): n for n in nbi}
    for n in sorted(wli):
        other = nbi_low.get(n.strip().lower())
        if other is not None and other != n:
            raise DataLayoutError(
                f"{where}: class names differ only in case or surrounding spaces across "
                f"modalities: {wli[n]!r} vs {nbi[other]!r}. The loader does not guess; "
                f"rename one so they match exactly.")


def _scan_folders(root: Path, cfg: RealDataConfig, report: LoadReport) -> list[_Entry]:
    mod_dirs = _find_modality_dirs(root, cfg, report)
    report.sources = {m: readable(d.name) for m, d in mod_dirs.items()}
    pattern = re.compile(cfg.id_regex) if cfg.id_regex else None
    class_dirs: dict[str, dict[str, Path]] = {}
    for mod, mdir in mod_dirs.items():
        class_dirs[mod] = {}
        try:
            children = sorted(mdir.iterdir())
        except PermissionError:
            raise DataLayoutError(f"cannot list {mdir}: permission denied") from None
        for p in children:
            if p.is_dir() and _skipped_folder(p):
                report.ignored.append(_ignored_dir(p, root, _skipped_folder(p)))
            elif p.is_dir():
                class_dirs[mod][readable(p.name)] = p
            else:
                report.ignored.append({"path": _rel(p, root), "reason":
                                       "file directly in a modality folder (not in a class)"})
        if not class_dirs[mod]:
            raise DataLayoutError(f"modality folder {mdir} has no class folders "
                                  f"(expected {mdir}/<class>/<image>)")
    _check_case({m: {n: readable(str(p)) for n, p in d.items()}
                 for m, d in class_dirs.items()}, readable(str(root)))
    entries: list[_Entry] = []
    for mod, classes in class_dirs.items():
        for cls, cdir in classes.items():
            try:
                children = sorted(cdir.iterdir())
            except PermissionError:
                raise DataLayoutError(f"cannot list class folder {cdir}: permission "
                                      f"denied") from None
            n_candidates, ignored_here = 0, []
            for p in children:
                rel = _rel(p, root)
                if p.name.startswith("."):
                    ignored_here.append({"path": rel, "reason": "hidden file"})
                elif p.suffix.lower() in cfg.extensions:
                    entries.append(_entry_from_stem(p, rel, mod, cls, pattern))
                    n_candidates += 1
                elif p.is_dir():
                    ignored_here.append(_ignored_dir(p, root, "subfolder (images must sit "
                                                     "directly in the class folder)"))
                else:
                    ignored_here.append({"path": rel, "reason": f"not an image extension "
                                         f"({p.suffix or 'no extension'})"})
            report.ignored += ignored_here
            if n_candidates == 0:
                extra = (f"; ignored: {[i['path'] for i in ignored_here]}"
                         if ignored_here else "")
                raise DataLayoutError(
                    f"class folder {readable(str(cdir))!r} is empty: no files with extensions "
                    f"{list(cfg.extensions)}{extra}. Remove the folder or add its images.")
    return entries


def _manifest_path(cfg: RealDataConfig, root: Path) -> Path:
    m = Path(cfg.manifest)  # type: ignore[arg-type]
    if not m.is_absolute() and not m.exists() and (root / m).exists():
        m = root / m
    if m.is_dir():
        raise DataLayoutError(f"--manifest {cfg.manifest} is a folder; give the CSV file")
    if not m.is_file():
        raise DataLayoutError(f"--manifest {cfg.manifest} not found (looked in the working "
                              f"directory and under {root})")
    return m


def _normalise(path: str) -> str:
    """A manifest path in one spelling: ``\\`` -> ``/`` (Windows separators), ``./`` and
    ``a/../`` resolved lexically (``posixpath.normpath``); ``C:/...`` stays as given."""
    return posixpath.normpath(path.replace("\\", "/"))


def _read_manifest(root: Path, cfg: RealDataConfig, report: LoadReport) -> list[_Entry]:
    mpath = _manifest_path(cfg, root)
    report.sources = {m: str(mpath) for m in MODALITIES}
    try:
        with mpath.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            if not header:
                raise DataLayoutError(
                    f"manifest {mpath} is empty: no header and no rows; the first line must "
                    f"be the header {','.join(MANIFEST_COLUMNS)}[,fold], then one row per "
                    f"image")
            twice = sorted({h for h in header if header.count(h) > 1})
            if twice:
                raise DataLayoutError(f"manifest {mpath}, line 1: column(s) {twice} appear "
                                      f"more than once in the header {header}; keep one each")
            missing = [c for c in MANIFEST_COLUMNS if c not in header]
            if missing:
                raise DataLayoutError(
                    f"manifest {mpath}: missing column(s) {missing}; found {header}; "
                    f"required {list(MANIFEST_COLUMNS)} (+ optional fold)")
            has_fold = "fold" in header
            rows = []
            for row in reader:
                if None in row:
                    raise DataLayoutError(f"manifest {mpath}, line {reader.line_num}: more "
                                          f"fields than the header has columns")
                rows.append({k.strip(): (v or "").strip() for k, v in row.items()})
    except UnicodeDecodeError as e:
        raise DataLayoutError(f"manifest {mpath} is not UTF-8 text ({e})") from None
    if not rows:
        raise DataLayoutError(f"manifest {mpath} has a header but no rows: it lists no "
                              f"images; add one row per image ({','.join(header)})")
    entries: list[_Entry] = []
    outside: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    fallback_ids = 0
    for line, row in enumerate(rows, start=2):
        where = f"manifest {mpath}, line {line}"
        if not row["path"]:
            raise DataLayoutError(f"{where}: empty path")
        mod = cfg.modality_of(row["modality"])
        if mod is None:
            raise DataLayoutError(f"{where}: unknown modality {row['modality']!r}; accepted "
                                  f"{list(cfg.wli_names)} (WLI) or {list(cfg.nbi_names)} (NBI)"
                                  f"; fix the value, or accept it with --wli-names "
                                  f"WLI,{row['modality']} or --nbi-names NBI,{row['modality']}")
        if not row["label"]:
            raise DataLayoutError(f"{where}: empty label")
        given = row["path"]
        used = _normalise(given)
        if used != given:
            report.normalised.append({"line": line, "given": given, "used": used})
        if used in seen:
            raise DataLayoutError(f"{where}: path {given!r} (as {used!r}) already listed on "
                                  f"line {seen[used]}")
        seen[used] = line
        p = Path(used)
        p = p if p.is_absolute() else root / p
        if not is_within(p, root):
            outside.append((line, given))
        lesion = row["lesion_id"] or p.stem
        patient = row["patient_id"] or lesion
        fallback_ids += (not row["lesion_id"]) + (not row["patient_id"])
        fold = None
        if has_fold:
            try:
                fold = int(row["fold"])
            except ValueError:
                raise DataLayoutError(f"{where}: fold {row['fold']!r} is not an integer "
                                      f"(every row needs one when the fold column is present)"
                                      ) from None
        entries.append(_Entry(p, used, mod, row["label"], patient, lesion, fold,
                              lesion_source="manifest" if row["lesion_id"] else "stem",
                              patient_from_lesion=not row["patient_id"], line=line))
    if outside and not cfg.allow_outside_root:
        line, given = outside[0]
        how = ("is an absolute path" if Path(_normalise(given)).is_absolute() else
               "climbs out with '..'")
        raise DataLayoutError(
            f"manifest {mpath}, line {line}: path {given!r} lies outside the data root "
            f"{root} (it {how}); {len(outside)} row(s) do. The kit reads only files under "
            f"--data-root unless told: move the files under it, or pass "
            f"--allow-outside-root (allow_outside_root=True in Python) to read them.")
    if outside:
        report.warnings.append(
            f"manifest: {len(outside)} path(s) outside the data root read "
            f"(--allow-outside-root), e.g. line {outside[0][0]}: {outside[0][1]!r}")
    if fallback_ids:
        report.warnings.append(f"manifest: {fallback_ids} empty patient_id/lesion_id value(s) "
                               f"filled from the file stem (lesion) and the lesion id (patient)")
    names = {m: {e.label: f"label {e.label!r} ({m}, manifest)" for e in entries
                 if e.modality == m} for m in MODALITIES}
    _check_case(names, f"manifest {mpath}")
    return entries


# ----------------------------------------------------------------------------- loading

def _merge_duplicates(entries: list[_Entry], hashes: list[str], report: LoadReport) -> None:
    """Record identical-byte groups and merge their lesions into one lesion id."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(hashes):
        by_hash[h].append(i)
    groups = [g for g in by_hash.values() if len(g) > 1]
    uf = UnionFind()
    for g in groups:
        report.duplicates.append(sorted(entries[i].rel for i in g))
        labels = {(entries[i].modality, entries[i].label) for i in g}
        if len({lab for _, lab in labels}) > 1:
            report.warnings.append(f"identical bytes under different labels: "
                                   f"{[entries[i].rel for i in g]} (kept, and merged into "
                                   f"one lesion so they share a fold; check the labels)")
        if len({m for m, _ in labels}) > 1:
            report.warnings.append(f"identical bytes under both WLI and NBI: "
                                   f"{[entries[i].rel for i in g]}")
        for i in g[1:]:
            uf.union(entries[g[0]].lesion_id, entries[i].lesion_id)
    components: dict[str, set[str]] = defaultdict(set)
    for lesion in list(uf.parent):
        components[uf.find(lesion)].add(lesion)
    rename = {}
    for ids in components.values():
        if len(ids) > 1:
            new = "+".join(sorted(ids))
            rename.update({old: new for old in ids})
            report.lesion_merges.append({
                "new_lesion_id": new, "old_lesion_ids": sorted(ids),
                "paths": sorted(e.rel for e in entries if e.lesion_id in ids)})
    for e in entries:
        e.lesion_id = rename.get(e.lesion_id, e.lesion_id)
    report.duplicates.sort()


def load_dataset(cfg: RealDataConfig) -> tuple[dict[str, ImageSet], LoadReport]:
    """Load a WLI/NBI data set (folder or manifest layout; see the module docstring).

    Returns:
        ``({"WLI": ImageSet, "NBI": ImageSet}, LoadReport)``; both ImageSets share the
        label space (sorted union of class names) and carry ``paths`` and
        ``meta = {"source", "root", "image_size", "sha256"[, "fold"]}``.

    Raises:
        DataLayoutError: layout problems (missing modality folder, empty class folder,
            class in one modality only, class names differing only in case, bad manifest).
        ImageLoadError: a bad image when ``on_bad_image="error"``.
        Both carry ``err.report``: the load report up to the failure, to be saved.
    """
    report = LoadReport(root=readable(str(cfg.root)),
                        layout="manifest" if cfg.manifest else "folder",
                        image_size=int(cfg.image_size), policy=_policy(cfg))
    try:
        return _load(cfg, report), report
    except KitError as err:
        err.report = report
        raise


def _policy(cfg: RealDataConfig) -> dict[str, str]:
    """The rules the loader applies, for the report."""
    return {
        "files": "only regular files are opened (FIFOs, devices, sockets are skipped); "
                 f"image extensions {list(cfg.extensions)}; hidden files ignored",
        "folders": f"hidden (.*) and system folders {list(SYSTEM_FOLDERS)} ignored; "
                   "subfolders of class folders ignored, their files counted",
        "max_pixels": f"images over {cfg.max_pixels} pixels (w x h) are skipped before "
                      "decoding",
        "decode_warnings": ("an image whose decoder warns is skipped" if
                            cfg.decode_warnings == "skip" else
                            "an image whose decoder warns is loaded; the warning recorded"),
        "bad_images": ("skipped and listed" if cfg.on_bad_image == "skip" else
                       "the first one stops the load"),
        "manifest_paths": "'\\' read as '/', './' and 'a/../' resolved; a path listed "
                          "twice is an error; paths outside the data root are "
                          + ("read (allow_outside_root)" if cfg.allow_outside_root
                             else "refused"),
        "lesion_ids": "a lesion has one class: a lesion id from file names seen under "
                      "several classes is "
                      + ("one lesion per class (<class>/<id>)" if cfg.stem_reuse == "split"
                         else "an error (stem_reuse='error')")
                      + "; a manifest lesion_id with two classes is an error",
        "names": "names that are not valid UTF-8 are shown with \\xNN escapes",
        "images": (f"kept as files, decoded per step by {cfg.loader_workers} DataLoader "
                   f"worker(s)" if cfg.decode_per_step else
                   "decoded once into a memory-mapped store (decode cache)"
                   if cfg.cache_dir is not None else "decoded into RAM"),
    }


@dataclass
class _Decoded:
    """What :func:`_decode_all` returns: the kept entries (in entry order), their sha256,
    per-(modality, class) skip counts, source modes and sizes per modality, and
    ``pixels``: uint8 ``(len(kept), 3, S, S)``, the WLI images first, then the NBI images,
    each in entry order (a memory-mapped store, or an array in RAM), or None when the
    images stay files (``decode_per_step``); ``stats``: each kept file's (byte size,
    ``st_mtime_ns``)."""

    kept: list[_Entry]
    hashes: list[str]
    skipped_per: Counter
    modes: dict[str, Counter]
    sizes: dict[str, list[tuple[int, int]]]
    pixels: torch.Tensor | None
    stats: list[tuple[int, int]] = field(default_factory=list)


def _decode_all(entries: list[_Entry], cfg: RealDataConfig, report: LoadReport,
                store: DecodeStore | None) -> _Decoded:
    """Decode every entry, or take it from the decode cache ``store`` (held locked) when the
    file's size and mtime are unchanged; skips and decoder notes go to ``report``. A store
    that changed is written again (see :mod:`pagkd_lite.data.decode_cache`)."""
    size = int(cfg.image_size)
    old, records = store.open() if store is not None else (None, {})
    n_new = 0  # to size the scratch space: files the cache cannot answer for
    for e in entries:
        try:
            st = _regular_stat(e.path)
        except ImageLoadError:
            continue
        n_new += store is None or store.lookup(records, e.path, st) is None
    scratch = (store.staging(n_new) if store is not None
               else None if cfg.decode_per_step  # files mode: checked, not kept
               else np.empty((n_new, 3, size, size), dtype=np.uint8))
    new_records: dict[str, Record] = {}
    sources: list[np.ndarray] = []  # one (3, S, S) array per kept entry
    keys: list[str] = []
    out = _Decoded([], [], Counter(), defaultdict(Counter), defaultdict(list), torch.empty(0))
    for e in tqdm(entries, desc="loading images", unit="img", disable=not cfg.progress):
        try:
            st = _regular_stat(e.path)
            rec = store.lookup(records, e.path, st) if store is not None else None
            if rec is not None:
                if rec.error is not None:
                    raise ImageLoadError(e.path, rec.error)
                key = DecodeStore.record(e.path, st)[0]
                new_records[key] = rec
                pixels, digest = old[rec.row], rec.sha256
                mode, src_size, notes = rec.mode, tuple(rec.src_size), list(rec.notes)
            else:
                data = _read_bytes(e.path)
                report.decoded += 1
                if report.decoded % 64 == 0:
                    _release_freed_memory()
                try:
                    img, mode, src_size, notes = _decode(
                        data, e.path, size, cfg.max_pixels,
                        keep_warnings=cfg.decode_warnings == "keep")
                except ImageLoadError as err:
                    if store is not None:
                        key, rec = DecodeStore.record(e.path, st, error=err.reason)
                        new_records[key] = rec
                    raise
                digest = hashlib.sha256(data).hexdigest()
                if scratch is None:
                    pixels = None
                elif report.decoded <= n_new:
                    scratch[report.decoded - 1] = img.numpy()
                    pixels = scratch[report.decoded - 1]
                else:  # the file changed between the count and now: hold it in RAM
                    pixels = img.numpy()
                key, rec = DecodeStore.record(e.path, st, sha256=digest, mode=mode,
                                              src_size=list(src_size), notes=list(notes))
                if store is not None:
                    new_records[key] = rec
        except ImageLoadError as err:
            if cfg.on_bad_image == "error":
                raise
            report.skipped.append({"path": e.rel, "modality": e.modality, "class": e.label,
                                   "reason": err.reason})
            out.skipped_per[(e.modality, e.label)] += 1
            continue
        report.warnings += [f"{e.rel}: {n} (loaded: decode_warnings='keep')" for n in notes]
        out.kept.append(e)
        out.hashes.append(digest)
        out.modes[e.modality][mode] += 1
        out.sizes[e.modality].append(src_size)
        out.stats.append((st.st_size, st.st_mtime_ns))
        sources.append(pixels)
        keys.append(key)
    order = [i for m in MODALITIES for i, e in enumerate(out.kept) if e.modality == m]
    rows = [sources[i] for i in order]
    if cfg.decode_per_step:
        out.pixels = None
        report.cache = {"status": "files", "workers": int(cfg.loader_workers)}
        return out
    if store is None:
        out.pixels = torch.from_numpy(np.stack(rows) if rows else
                                      np.empty((0, 3, size, size), dtype=np.uint8))
        return out
    reused = sum(1 for k in keys if records.get(k) is new_records[k])
    same = (old is not None and report.decoded == 0 and len(old) == len(rows)
            and all(new_records[keys[i]].row == r for r, i in enumerate(order)))
    if rows and not same:
        for r, i in enumerate(order):
            new_records[keys[i]] = dataclasses.replace(new_records[keys[i]], row=r)
        store.write(rows, new_records)
        status = store.note if old is None else "updated: a changed store written again"
    else:
        status = store.note
    out.pixels = (torch.from_numpy(store.images()) if rows else
                  torch.empty((0, 3, size, size), dtype=torch.uint8))
    report.cache = {"dir": readable(str(store.dir)), "status": status,
                    "reused": reused, "decoded": report.decoded,
                    "bytes": store.nbytes() if rows else 0}
    return out


def _load(cfg: RealDataConfig, report: LoadReport) -> dict[str, ImageSet]:
    root = Path(cfg.root)
    size = int(cfg.image_size)
    entries = (_read_manifest(root, cfg, report) if cfg.manifest
               else _scan_folders(root, cfg, report))
    where = (f"manifest {report.sources['WLI']}" if report.layout == "manifest"
             else report.root)
    report.lesion_splits = scope_by_class(entries, cfg.stem_reuse, where)
    check_one_class(entries, where)

    store = None
    if cfg.cache_dir is not None:
        store = DecodeStore(cfg.cache_dir, root, report.sources["WLI"] if cfg.manifest else None,
                            {"image_size": size, "max_pixels": int(cfg.max_pixels),
                             "decode_warnings": cfg.decode_warnings})
    with store.locked() if store is not None else contextlib.nullcontext():
        try:
            d = _decode_all(entries, cfg, report, store)
        finally:
            if store is not None:
                store.drop_staging()
    kept, hashes, skipped_per, modes, sizes = d.kept, d.hashes, d.skipped_per, d.modes, d.sizes

    # Label space and the every-class-in-both-modalities rule (on what actually loaded).
    listed = {m: {e.label for e in entries if e.modality == m} for m in MODALITIES}
    present = {m: {e.label for e in kept if e.modality == m} for m in MODALITIES}
    class_names = sorted(listed["WLI"] | listed["NBI"])
    if cfg.class_names is not None:
        given = list(cfg.class_names)
        if sorted(given) != class_names:
            raise DataLayoutError(
                f"--class-names {','.join(given)} (class_names) does not match the classes "
                f"found in {where}: {class_names} (missing from --class-names: "
                f"{sorted(set(class_names) - set(given))}; not found in the data: "
                f"{sorted(set(given) - set(class_names))})")
        class_names = given
    if len(class_names) < 2:
        raise DataLayoutError(
            f"{where}: only one class found ({class_names}); a classifier needs at "
            f"least two classes (one folder per class under each modality, or two labels in "
            f"the manifest)")
    for mod in MODALITIES:
        other = "NBI" if mod == "WLI" else "WLI"
        for cls in class_names:
            if cls in present[mod]:
                continue
            if cls not in listed[mod]:
                where = (f"class folder {readable(str(root / report.sources[other] / cls))!r} "
                         f"has no counterpart "
                         f"{readable(str(root / report.sources[mod] / cls))!r}"
                         if report.layout == "folder" else
                         f"manifest class {cls!r} has {other} images but none for {mod}")
                msg = f"{where}: class {cls!r} is missing from {mod}"
            else:
                msg = (f"class {cls!r} has no loadable {mod} images "
                       f"({skipped_per[(mod, cls)]} skipped; see the load report)")
            if not cfg.allow_missing_classes:
                raise DataLayoutError(
                    f"{msg}. PaGKD needs every class in both modalities (the NBI teacher and "
                    f"the WLI student share one label space); add the images, remove the "
                    f"class, or pass --allow-missing-classes (allow_missing_classes=True in "
                    f"Python) to keep going.")
            report.warnings.append(msg + " (kept: --allow-missing-classes)")

    _merge_duplicates(kept, hashes, report)
    report.class_names = class_names
    label_of = {c: i for i, c in enumerate(class_names)}
    sets: dict[str, ImageSet] = {}
    pixels = d.pixels
    if pixels is None:  # decode_per_step: one decoder (one worker pool) over every file
        order = [i for m in MODALITIES for i, e in enumerate(kept) if e.modality == m]
        files = FileImageDataset([kept[i].path for i in order], size, cfg.max_pixels,
                                 [d.stats[i] for i in order])
        pixels = FileImages(_BatchDecoder(files, cfg.loader_workers))
    start = 0
    for mod in MODALITIES:
        idx = [i for i, e in enumerate(kept) if e.modality == mod]
        # the pixels hold WLI then NBI (decode order): each modality is one slice, a view
        images = pixels[start:start + len(idx)]
        start += len(idx)
        if not idx:
            raise DataLayoutError(f"no {mod} images could be loaded from {report.root} "
                                  f"({sum(1 for s in report.skipped if s['modality'] == mod)} "
                                  f"skipped; see the load report)")
        sub = [kept[i] for i in idx]
        meta = {"source": report.layout, "root": str(root), "image_size": size,
                "sha256": [hashes[i] for i in idx]}
        folds = [e.fold for e in sub]
        if any(f is not None for f in folds):
            meta["fold"] = folds
        sets[mod] = ImageSet(
            images=images,
            labels=torch.tensor([label_of[e.label] for e in sub], dtype=torch.long),
            patient_ids=[e.patient_id for e in sub],
            lesion_ids=[e.lesion_id for e in sub],
            class_names=list(class_names),
            modality=mod,
            paths=[str(e.path) for e in sub],
            meta=meta,
        )
        report.counts[mod] = {c: n for c, n in zip(class_names, sets[mod].class_counts(),
                                                    strict=True)}
        ws = [s[0] for s in sizes[mod]]
        hs = [s[1] for s in sizes[mod]]
        report.source_images[mod] = {"modes": dict(modes[mod]), "min_size": [min(ws), min(hs)],
                                     "max_size": [max(ws), max(hs)]}
    return sets
