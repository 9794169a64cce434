"""Reading a layout: a folder tree or a CSV manifest -> one entry per image file (path,
modality, class, patient and lesion ids, fold); what is not used goes to the load report.

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

Nothing is dropped silently: every file seen and not used is recorded in
``report.ignored`` with its reason. Names that are not valid UTF-8 are shown as ``\\xNN``
in the report and in class names (:func:`pagkd_lite.files.readable`). The entries go to
:func:`pagkd_lite.data.realdata.load_dataset`, which decodes them.
"""

from __future__ import annotations

import csv
import os
import posixpath
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pagkd_lite.data.imageset import MODALITIES
from pagkd_lite.data.load_report import LoadReport
from pagkd_lite.data.loader_config import RealDataConfig
from pagkd_lite.errors import DataLayoutError
from pagkd_lite.files import is_within, readable

MANIFEST_COLUMNS = ("path", "modality", "label", "patient_id", "lesion_id")
#: folders never scanned: hidden (``.*``) and made by operating systems or tools
SYSTEM_FOLDERS = ("__MACOSX", "$RECYCLE.BIN", "System Volume Information")

__all__ = ["MANIFEST_COLUMNS", "SYSTEM_FOLDERS"]


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

