"""Lesion identity: one lesion id, one class.

A lesion has one histology, so a lesion id that carries two classes is wrong wherever it
came from, and lesion- or patient-grouped folds built on it would be wrong too. The
real-data loader (:mod:`pagkd_lite.data.realdata`) takes lesion ids from two places:

* **Derived from a file name**: the folder layout's file stem (``001.jpg`` -> ``"001"``),
  the ``lesion`` group of ``id_regex``, or the stem of a manifest row whose ``lesion_id``
  is empty. A common layout numbers the files ``001.jpg, 002.jpg, ...`` inside *every*
  class folder, so the same stem names different lesions in different classes. A derived
  id seen under several classes is therefore scoped by its class: it becomes one lesion
  per class, ``<class>/<id>`` (policy ``"split"``, the default; each split is recorded in
  the load report), or the load stops with an error naming the files (policy ``"error"``,
  ``--stem-reuse error``). A patient id that fell back to the lesion id follows it; a
  patient id given explicitly (``id_regex`` group ``patient``, the manifest's
  ``patient_id``) is kept, since one patient can have lesions of several classes.
* **Written** in a manifest's ``lesion_id`` column: used as written. One that carries two
  classes is an error naming the manifest, the lesion id, its classes and its lines.

The same derived id under WLI and NBI *of the same class* stays one lesion (paired sets
such as CPC-Paired name both modalities' files alike).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

from ..errors import DataLayoutError

#: what to do with a lesion id derived from file names that appears under several classes
STEM_REUSE = ("split", "error")
#: where a lesion id came from (``_Ids.lesion_source``); only ``"manifest"`` is written
SOURCES = ("stem", "id_regex", "manifest")

__all__ = ["SOURCES", "STEM_REUSE", "check_one_class", "scope_by_class"]


class _Ids(Protocol):
    """What these functions read and rewrite on one listed image."""

    rel: str
    label: str
    lesion_id: str
    patient_id: str
    lesion_source: str
    patient_from_lesion: bool
    line: int | None


def _kind(source: str) -> str:
    return "stem" if source == "stem" else "lesion id"


def scope_by_class(entries: Sequence[_Ids], policy: str, where: str) -> list[dict]:
    """Give each derived lesion id seen under several classes one lesion per class.

    Args:
        entries: every listed image (loaded or not yet loaded); rewritten in place.
        policy: ``"split"`` (rename to ``<class>/<id>``) or ``"error"`` (raise).
        where: the data root or manifest, for messages.

    Returns:
        One dict per split id: ``lesion_id``, ``classes``, ``new_lesion_ids``,
        ``n_images`` and ``note`` (e.g. ``stem '001' appears under 3 classes (adenoma,
        hyperplastic, serrated): treated as 3 lesions``), sorted by id.

    Raises:
        DataLayoutError: policy ``"error"`` and at least one such id.
    """
    if policy not in STEM_REUSE:
        raise ValueError(f"stem_reuse must be one of {STEM_REUSE}, got {policy!r}")
    derived = [e for e in entries if e.lesion_source != "manifest"]
    classes: dict[str, set[str]] = defaultdict(set)
    for e in derived:
        classes[e.lesion_id].add(e.label)
    shared = {lid: sorted(c) for lid, c in classes.items() if len(c) > 1}
    if not shared:
        return []
    first = sorted(shared)[0]
    if policy == "error":
        per_class: dict[str, str] = {}   # the first file of each class, as examples
        for e in derived:
            if e.lesion_id == first:
                per_class.setdefault(e.label, e.rel)
        examples = list(per_class.values())[:3]
        raise DataLayoutError(
            f"{where}: {_kind(_source_of(derived, first))} {first!r} appears under "
            f"{len(shared[first])} classes ({', '.join(shared[first])}), e.g. "
            f"{', '.join(examples)} ({len(shared)} such id(s) in all); a lesion has one "
            f"class, so one id cannot name them all. Name the files uniquely, give lesion "
            f"ids in a manifest (--manifest), or treat each class's file as its own lesion "
            f"(--stem-reuse split; stem_reuse='split' in Python).")
    notes = []
    for lid, cls in sorted(shared.items()):
        n = len(cls)
        new = [f"{c}/{lid}" for c in cls]
        notes.append({
            "lesion_id": lid, "classes": cls, "new_lesion_ids": new,
            "n_images": sum(1 for e in derived if e.lesion_id == lid),
            "note": f"{_kind(_source_of(derived, lid))} {lid!r} appears under {n} classes "
                    f"({', '.join(cls)}): treated as {n} lesions ({', '.join(new)})"})
    for e in derived:
        if e.lesion_id in shared:
            e.lesion_id = f"{e.label}/{e.lesion_id}"
            if e.patient_from_lesion:
                e.patient_id = e.lesion_id
    return notes


def _source_of(entries: Sequence[_Ids], lesion_id: str) -> str:
    return next(e.lesion_source for e in entries if e.lesion_id == lesion_id)


def check_one_class(entries: Sequence[_Ids], where: str) -> None:
    """Raise :class:`DataLayoutError` if any lesion id carries two classes (after
    :func:`scope_by_class`, only a manifest's written ids can), naming the id, its
    classes and the lines that give them."""
    by_id: dict[str, dict[str, list[int | None]]] = defaultdict(lambda: defaultdict(list))
    for e in entries:
        by_id[e.lesion_id][e.label].append(e.line)
    bad = {lid: per for lid, per in by_id.items() if len(per) > 1}
    if not bad:
        return
    lid = sorted(bad)[0]
    per = bad[lid]
    places = "; ".join(f"{c!r} on line(s) {_lines(per[c])}" for c in sorted(per))
    raise DataLayoutError(
        f"{where}: lesion_id {lid!r} carries {len(per)} classes ({places}); "
        f"{len(bad)} lesion id(s) do in all. A lesion has one class: fix the label or "
        f"give the lesions different lesion_id values.")


def _lines(lines: list[int | None]) -> str:
    shown = [str(n) for n in lines[:5] if n is not None]
    more = f" and {len(lines) - 5} more" if len(lines) > 5 else ""
    return ", ".join(shown) + more if shown else "?"
