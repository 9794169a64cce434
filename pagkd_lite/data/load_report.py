"""The load report: what the real-data loader loaded, skipped, ignored and merged, file
by file, saved as JSON and as text.

:func:`pagkd_lite.data.realdata.load_dataset` fills a :class:`LoadReport`; a
:class:`~pagkd_lite.errors.KitError` it raises carries the report up to the failure
(``err.report``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pagkd_lite.files import atomic_write_text, readable

__all__ = ["LoadReport"]


@dataclass
class LoadReport:
    """What :func:`~pagkd_lite.data.realdata.load_dataset` did, file by file where it did not
    load one.

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

