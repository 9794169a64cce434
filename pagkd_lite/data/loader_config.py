"""The real-data loader's settings: :class:`RealDataConfig`, checked when it is made.

Every setting is checked in ``__post_init__``, and a bad one is a
:class:`~pagkd_lite.errors.ConfigError` that names its command-line flag; the loader itself
is :func:`pagkd_lite.data.realdata.load_dataset`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pagkd_lite.data.lesion_ids import STEM_REUSE
from pagkd_lite.errors import ConfigError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

__all__ = ["IMAGE_EXTENSIONS", "RealDataConfig", "check_names"]


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
            :class:`~pagkd_lite.errors.ImageLoadError` naming the file).
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
            :class:`~pagkd_lite.data.file_images.FileImages`, decoded batch by batch when
            training or prediction uses them (``--decode-per-step``). No decode cache is used.
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

