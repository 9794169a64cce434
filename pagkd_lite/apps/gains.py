"""Seed-paired statistics of benchmark rows: gains over a baseline per cell, and the premise
check.

A row is one ``(method, seed, cell)`` result of :func:`pagkd_lite.apps.bench.run_bench` (a dict of
strings, as read from the CSV). Every gain is seed-paired: ``AUC(method, seed) - AUC(baseline,
seed)`` over the seeds both have, with a 95% t-interval over seeds
(:func:`pagkd_lite.training.metrics.mean_interval`).
"""

from __future__ import annotations

import numpy as np

from ..method.distill import METHODS
from ..training.metrics import mean_interval

#: the reference every gain is taken against, and the row of the NBI teacher (scored on the
#: NBI test set, so never compared with a WLI student)
BASELINE = "wli_only"
TEACHER_ROW = "teacher_nbi"


def as_fields(by) -> list[str]:
    """``by`` (None, one field name or several) as a list of field names."""
    return [] if by is None else [by] if isinstance(by, str) else list(by)


def cell_key(row: dict, fields: list[str]) -> tuple:
    """The values of ``fields`` in ``row``, as text: the cell the row belongs to."""
    return tuple(str(row.get(f)) for f in fields)


def cell_order(cell: tuple) -> tuple:
    """Sort key of a cell: numbers in numeric order, then text."""
    return tuple((0, float(v), "") if is_number(v) else (1, 0.0, v) for v in cell)


def sweep_values(rows: list[dict], by: str) -> list[str]:
    """The distinct values of the sweep field ``by`` as written in the rows: numbers in
    numeric order first, then any other value (``model.init=ssl``) in text order."""
    return sorted({r[by] for r in rows}, key=lambda v: cell_order((v,)))


def is_number(v: str) -> bool:
    """Whether the text ``v`` reads as a number."""
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def paired_gains(rows: list[dict], method: str, baseline: str = BASELINE) -> list[float]:
    """Seed-paired AUC differences ``method - baseline`` over the rows of one cell."""
    base = {r["seed"]: float(r["auc"]) for r in rows if r["method"] == baseline}
    return [float(r["auc"]) - base[r["seed"]] for r in rows
            if r["method"] == method and r["seed"] in base]


def gain_grid(rows: list[dict], rows_field: str, cols_field: str, method: str,
              baseline: str = BASELINE):
    """(row values, column values, mean gain matrix, low, high) of ``method - baseline``
    over a two-field grid; NaN where a cell has fewer than 2 paired seeds."""
    rv = sorted({str(r[rows_field]) for r in rows}, key=lambda v: cell_order((v,)))
    cv = sorted({str(r[cols_field]) for r in rows}, key=lambda v: cell_order((v,)))
    mean, low, high = (np.full((len(rv), len(cv)), np.nan) for _ in range(3))
    for i, a in enumerate(rv):
        for j, b in enumerate(cv):
            sub = [r for r in rows if str(r[rows_field]) == a and str(r[cols_field]) == b]
            d = paired_gains(sub, method, baseline)
            if len(d) >= 2:
                e = mean_interval(d)
                mean[i, j], low[i, j], high[i, j] = e.value, e.low, e.high
    return rv, cv, mean, low, high


#: the references that distil from TRUE pairs: every method whose distiller is ``paired``
PAIR_ORACLES = tuple(name for name, m in METHODS.items() if m.cls.paired)


def premise_check(rows: list[dict], fields: list[str], baseline: str = BASELINE,
                  oracles=PAIR_ORACLES) -> list[dict]:
    """The premise check of each cell: can distillation from TRUE pairs help here?

    For every cell of ``fields``, the seed-paired gain of each pair oracle over ``baseline``
    (mean and 95% t-interval). The criterion was fixed before any PaGKD result was looked
    at: a cell is a valid testbed when the best pair oracle's interval lies above 0, and the
    demo / benchmark cell is the one whose best pair oracle has the largest LOWER bound (the
    clearest gain, not the largest mean). Only the oracles' and the baseline's rows are
    read; every other method's rows are ignored. Returns one dict per cell, best first.
    """
    out = []
    for cell in sorted({cell_key(r, fields) for r in rows}, key=cell_order):
        sub = [r for r in rows if cell_key(r, fields) == cell and r["method"] in (baseline,
                                                                              *oracles)]
        best = None
        for m in oracles:
            d = paired_gains(sub, m, baseline)
            if len(d) >= 2:
                e = mean_interval(d)
                if best is None or e.low > best[1].low:
                    best = (m, e, len(d))
        if best is None:
            continue
        m, e, n = best
        out.append({**dict(zip(fields, cell, strict=True)), "oracle": m, "gain": e.value,
                    "low": e.low, "high": e.high, "seeds": n, "valid": e.low > 0})
    return sorted(out, key=lambda r: -r["low"])
