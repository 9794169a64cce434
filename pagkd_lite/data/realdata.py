"""Real WLI/NBI data: a folder tree or a CSV manifest -> two ImageSets and a load report.

Two layouts are read (the folder tree ``<root>/<modality>/<class>/<image>`` or a CSV
manifest with columns ``path,modality,label,patient_id,lesion_id[,fold]``; details in
:mod:`pagkd_lite.data.layouts`), and both give ``{"WLI": ImageSet, "NBI": ImageSet}`` (see
:mod:`pagkd_lite.data.imageset`) plus a :class:`~pagkd_lite.data.load_report.LoadReport`
that says what was loaded, skipped, ignored and merged. Nothing is dropped silently: every
file the loader saw and did not use appears in the report with its reason.

This module is the entry point, :func:`load_dataset`, and the steps after the layout is read:
one class per lesion id (:mod:`pagkd_lite.data.lesion_ids`), decoding every image
(:mod:`pagkd_lite.data.decode`) or taking it from the decode cache, the label space, the
duplicates, the two ImageSets. The settings are a
:class:`~pagkd_lite.data.loader_config.RealDataConfig`. The names callers use
(``RealDataConfig``, ``check_names``, ``LoadReport``, ``load_image``, ``FileImages``,
``FileImageDataset``, ``IMAGE_EXTENSIONS``, ``MANIFEST_COLUMNS``, ``SYSTEM_FOLDERS``) stay
importable from here.

Label space: the sorted union of class names (or ``class_names`` in the config, to fix
the order, e.g. to make adenoma the positive class). PaGKD trains a WLI student from an NBI
teacher over the same classes, so every class must have images in both modalities; a
class in one modality only is an error unless ``allow_missing_classes=True`` (then it is
kept and a warning is recorded). Class names that differ only in case (``Adenoma`` vs
``adenoma``) are an error naming both folders: the loader does not guess.

Identical bytes (sha256) met more than once are listed in ``report.duplicates`` and their
lesions are merged into one lesion id (so any lesion- or patient-grouped split keeps them in
one fold); each merge is recorded in ``report.lesion_merges``.

Where the decoded images live: in RAM (the default in Python), in a memory-mapped store on
disk that every run, fold and rank reads (``cache_dir``, :mod:`pagkd_lite.data.decode_cache`;
the ``cv`` default), or nowhere: with ``decode_per_step`` the images stay files
(ImageFolder style), every file is checked once at load, and the ImageSets hold
:class:`~pagkd_lite.data.file_images.FileImages`, which decode each training or prediction
batch when it is used, through a DataLoader with ``loader_workers`` worker processes
(:class:`~pagkd_lite.data.file_images.FileImageDataset`). The three give the same pixels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pagkd_lite.data.decode import (
    _decode,
    _read_bytes,
    _regular_stat,
    _release_freed_memory,
    load_image,
)
from pagkd_lite.data.decode_cache import DecodeStore, Record
from pagkd_lite.data.file_images import FileImageDataset, FileImages, _BatchDecoder
from pagkd_lite.data.image_rows import ArrayImages, ImageRows
from pagkd_lite.data.imageset import MODALITIES, ImageSet
from pagkd_lite.data.layouts import (
    MANIFEST_COLUMNS,
    SYSTEM_FOLDERS,
    _Entry,
    _read_manifest,
    _scan_folders,
)
from pagkd_lite.data.lesion_ids import check_one_class, scope_by_class
from pagkd_lite.data.load_report import LoadReport
from pagkd_lite.data.loader_config import IMAGE_EXTENSIONS, RealDataConfig, check_names
from pagkd_lite.data.splits import UnionFind
from pagkd_lite.errors import DataLayoutError, ImageLoadError, KitError
from pagkd_lite.files import readable

__all__ = ["IMAGE_EXTENSIONS", "MANIFEST_COLUMNS", "SYSTEM_FOLDERS", "DataLayoutError",
           "FileImageDataset", "FileImages", "ImageLoadError", "LoadReport", "RealDataConfig",
           "check_names", "load_dataset", "load_image"]


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
    each in entry order (rows of the memory-mapped store, or of an array in RAM), or None
    when the images stay files (``decode_per_step``); ``stats``: each kept file's (byte
    size, ``st_mtime_ns``)."""

    kept: list[_Entry]
    hashes: list[str]
    skipped_per: Counter
    modes: dict[str, Counter]
    sizes: dict[str, list[tuple[int, int]]]
    pixels: ImageRows | None
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
    out = _Decoded([], [], Counter(), defaultdict(Counter), defaultdict(list), None)
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
        out.pixels = ArrayImages(np.stack(rows) if rows else
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
    out.pixels = ArrayImages(store.images() if rows else
                             np.empty((0, 3, size, size), dtype=np.uint8))
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
        # the pixels hold WLI then NBI (decode order): each modality is a view of its rows
        images = pixels.select(slice(start, start + len(idx)))
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
