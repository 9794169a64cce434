"""``pagkd-lite bench``: does pairing-free distillation pay on SynthEndo, and how close does
it come to distilling from true pairs?

For each seed (data AND training seed), the NBI teacher is trained once (cached), then every
method trains a WLI student from the same initialisation and the same WLI batches, is
selected on wli_val and scored on wli_test. Rows are appended to a CSV as they finish, so an
interrupted bench resumes where it stopped. The summary gives each method's mean over seeds
with a t-interval, and the seed-paired difference to ``wli_only`` with its interval.

``--sweep FIELD=v1,v2,...`` repeats the bench for each value of a config field (e.g.
``data.wli_contrast``) and adds a column with the value.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

from .config import Config, override
from .distill import METHODS
from .metrics import mean_interval
from .runinfo import CSV_FIELDS, csv_fields, run_info

BENCH_METHODS = ("wli_only", "logit_kd", "pseudo_pair", "pagkd_no_pro", "pagkd_no_den", "pagkd",
                 "pagkd_logit", "paired_oracle", "paired_hint", "oracle_masks")
COLUMNS = ("method", "seed", "auc", "accuracy", "f1", "sensitivity", "specificity",
           "train_seconds")


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def history_path(csv_path: Path | str) -> Path:
    """Where :func:`run_bench` keeps the per-epoch logs of a results CSV."""
    csv_path = Path(csv_path)
    return csv_path.with_name(csv_path.stem + ".history.jsonl")


def _append_history(csv_path: Path, record: dict) -> None:
    path = history_path(csv_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record, default=float) + "\n")


def read_histories(csv_path: Path | str) -> list[dict]:
    """The records of :func:`history_path` (an empty list when there are none)."""
    path = history_path(csv_path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_bench(cfg: Config, seeds: list[int], methods=BENCH_METHODS, csv_path: Path | str = "",
              cache_dir: Path | str = "runs/bench", progress: bool = False,
              extra: dict | None = None, log=print) -> list[dict]:
    """Train and score every (seed, method); append rows to ``csv_path``; return all rows.

    ``extra`` adds fixed columns (the sweep value). Rows already in the CSV with the same
    method, seed and extra values are not recomputed. A new CSV also records what each row
    ran on (:data:`pagkd_lite.runinfo.CSV_FIELDS`: torch, threads, device, determinism);
    rows appended to an older CSV keep its columns.
    Each student's per-epoch log (losses, validation AUC and, for the methods with a dense
    loss (PaGKD and its variants, ``pseudo_pair``, ``paired_oracle``), the mechanism numbers
    of :mod:`pagkd_lite.mechanism`) is appended to
    ``<csv stem>.history.jsonl``, one JSON line ``{"method", "seed", **extra, "history":
    [...]}`` per run (:func:`read_histories`).
    """
    from .metrics import compute_metrics
    from .pipeline import make_data, teacher_for, train_student, train_teacher
    from .train import pick_device, predict

    csv_path = Path(csv_path)
    extra = extra or {}
    old = read_rows(csv_path)
    columns = (list(old[0]) if old else
               [*COLUMNS, *extra, *(k for k in CSV_FIELDS if k not in extra)])
    done = {(r["method"], str(r["seed"]), *(str(r.get(k)) for k in extra))
            for r in old}
    device = pick_device(cfg.device)
    ran_on = csv_fields(run_info(cfg.device))
    for seed in seeds:
        c = override(cfg, [f"seed={seed}", f"data.seed={seed}"])
        todo = [m for m in ("teacher_nbi", *methods)
                if (m, str(seed), *(str(v) for v in extra.values())) not in done]
        if not todo:
            continue
        sets = make_data(c)
        teacher, info = train_teacher(c, sets, out_dir=cache_dir, progress=progress)
        for method in todo:
            t0 = time.perf_counter()
            if method == "teacher_nbi":
                model, test, secs = teacher, sets["nbi_test"], info["seconds"]
            else:
                t = teacher_for(c, method, teacher, sets, out_dir=cache_dir, progress=progress)
                model, result = train_student(c, sets, method, t, progress=progress,
                                              ssl_dir=cache_dir)
                test, secs = sets["wli_test"], result.seconds
                _append_history(csv_path, {"method": method, "seed": seed, **extra,
                                           "history": result.history})
            probs = predict(model, test, device, runtime=c.runtime)
            m = compute_metrics(test.labels.numpy(), probs)
            row = {"method": method, "seed": seed, **{k: f"{m[k]:.4f}" for k in
                   ("auc", "accuracy", "f1", "sensitivity", "specificity")},
                   "train_seconds": f"{secs:.1f}", **ran_on, **extra}
            new = not csv_path.exists()
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            with csv_path.open("a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
                if new:
                    w.writeheader()
                w.writerow(row)
            log(f"seed {seed} {method:14s} AUC {m['auc']:.3f} "
                f"({secs:.0f} s train, {time.perf_counter() - t0:.0f} s total) {extra or ''}")
    return read_rows(csv_path)


def sweep_fields(row: dict) -> list[str]:
    """The sweep fields of a results row: every column that is neither a result
    (:data:`COLUMNS`) nor a record of what the run ran on (``runinfo.CSV_FIELDS``)."""
    return [k for k in row if k not in COLUMNS and k not in CSV_FIELDS]


def _fields(by) -> list[str]:
    return [] if by is None else [by] if isinstance(by, str) else list(by)


def _cell(row: dict, fields: list[str]) -> tuple:
    return tuple(str(row.get(f)) for f in fields)


def _sort_key(cell: tuple) -> tuple:
    return tuple((0, float(v), "") if _is_number(v) else (1, 0.0, v) for v in cell)


def sweep_values(rows: list[dict], by: str) -> list[str]:
    """The distinct values of the sweep field ``by`` as written in the rows: numbers in
    numeric order first, then any other value (``model.init=ssl``) in text order."""
    return sorted({r[by] for r in rows}, key=lambda v: _sort_key((v,)))


def _is_number(v: str) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def paired_gains(rows: list[dict], method: str, baseline: str = "wli_only") -> list[float]:
    """Seed-paired AUC differences ``method - baseline`` over the rows of one cell."""
    base = {r["seed"]: float(r["auc"]) for r in rows if r["method"] == baseline}
    return [float(r["auc"]) - base[r["seed"]] for r in rows
            if r["method"] == method and r["seed"] in base]


def summarize(rows: list[dict], baseline: str = "wli_only", by=None) -> str:
    """Markdown: mean [95% CI] per method, and the seed-paired difference to ``baseline``;
    one table per cell of the ``by`` field(s) (a name or a list of names)."""
    fields = _fields(by)
    cells = sorted({_cell(r, fields) for r in rows}, key=_sort_key)
    out = []
    for cell in cells:
        sub = [r for r in rows if _cell(r, fields) == cell]
        methods = list(dict.fromkeys(r["method"] for r in sub))
        if fields:
            named = ", ".join(f"{f} = {v}" for f, v in zip(fields, cell, strict=True))
            out.append(f"\n**{named}**\n")
        out.append("| method | seeds | AUC mean [95% CI] | accuracy | F1 | "
                   f"AUC - {baseline}, seed-paired [95% CI] | train s |")
        out.append("|---|---|---|---|---|---|---|")
        for m in methods:
            rs = [r for r in sub if r["method"] == m]
            auc = mean_interval([float(r["auc"]) for r in rs])
            acc = mean_interval([float(r["accuracy"]) for r in rs])
            f1 = mean_interval([float(r["f1"]) for r in rs])
            secs = np.mean([float(r["train_seconds"]) for r in rs])
            diffs = paired_gains(sub, m, baseline)
            if m == baseline or m == "teacher_nbi" or len(diffs) < 2:
                dtxt = "(reference)" if m == baseline else "n/a (NBI test set)" \
                    if m == "teacher_nbi" else "n/a"
            else:
                d = mean_interval(diffs)
                mark = " **excludes 0**" if d.low > 0 or d.high < 0 else " (not shown)"
                dtxt = f"{d.signed()}{mark}"
            out.append(f"| {m} | {len(rs)} | {auc} | {acc.value:.3f} | {f1.value:.3f} | {dtxt} "
                       f"| {secs:.0f} |")
    return "\n".join(out)


def gain_grid(rows: list[dict], rows_field: str, cols_field: str, method: str,
              baseline: str = "wli_only"):
    """(row values, column values, mean gain matrix, low, high) of ``method - baseline``
    over a two-field grid; NaN where a cell has fewer than 2 paired seeds."""
    rv = sorted({str(r[rows_field]) for r in rows}, key=lambda v: _sort_key((v,)))
    cv = sorted({str(r[cols_field]) for r in rows}, key=lambda v: _sort_key((v,)))
    mean, low, high = (np.full((len(rv), len(cv)), np.nan) for _ in range(3))
    for i, a in enumerate(rv):
        for j, b in enumerate(cv):
            sub = [r for r in rows if str(r[rows_field]) == a and str(r[cols_field]) == b]
            d = paired_gains(sub, method, baseline)
            if len(d) >= 2:
                e = mean_interval(d)
                mean[i, j], low[i, j], high[i, j] = e.value, e.low, e.high
    return rv, cv, mean, low, high


def heatmap_figure(rows: list[dict], rows_field: str, cols_field: str, methods: list[str],
                   baseline: str = "wli_only"):
    """Plotly regime map: one heat map per method, the seed-paired AUC gain over
    ``baseline`` per cell (text: mean and 95% CI; * where the interval excludes 0)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(methods), subplot_titles=methods,
                        shared_yaxes=True, horizontal_spacing=0.03)
    for k, m in enumerate(methods):
        rv, cv, mean, low, high = gain_grid(rows, rows_field, cols_field, m, baseline)
        text = [[("" if np.isnan(mean[i, j]) else
                  f"{mean[i, j]:+.3f}{'*' if low[i, j] > 0 or high[i, j] < 0 else ''}<br>"
                  f"[{low[i, j]:+.2f}, {high[i, j]:+.2f}]")
                 for j in range(len(cv))] for i in range(len(rv))]
        fig.add_heatmap(z=mean, x=[str(v) for v in cv], y=[str(v) for v in rv], text=text,
                        texttemplate="%{text}", zmid=0, zmin=-0.15, zmax=0.15,
                        colorscale="RdBu", showscale=k == len(methods) - 1,
                        row=1, col=k + 1)
        fig.update_xaxes(title_text=cols_field, type="category", row=1, col=k + 1)
    fig.update_yaxes(title_text=rows_field, type="category", row=1, col=1)
    fig.update_layout(title=f"AUC gain over {baseline} (seed-paired mean, 95% CI; "
                            "* interval excludes 0)", height=360,
                      width=max(600, 260 * len(methods)))
    return fig


def svg_heatmap(rows: list[dict], rows_field: str, cols_field: str, methods: list[str],
                baseline: str = "wli_only", cell: int = 62) -> str:
    """A dependency-free SVG of :func:`heatmap_figure` (for the README)."""
    def colour(v: float) -> str:
        if np.isnan(v):
            return "#eeeeee"
        t = max(-1.0, min(1.0, v / 0.15))
        a, b = (np.array([178, 24, 43]), np.array([33, 102, 172]))
        c = np.array([247, 247, 247]) + (b - 247 if t > 0 else a - 247) * abs(t)
        return "#" + "".join(f"{int(x):02x}" for x in c)

    grids = [gain_grid(rows, rows_field, cols_field, m, baseline) for m in methods]
    rv, cv = grids[0][0], grids[0][1]
    left, top, gap = 70, 40, 18
    panel = cell * len(cv)
    width = left + len(methods) * (panel + gap) + 10
    height = top + cell * len(rv) + 45
    el = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
          'font-family="sans-serif" font-size="10">',
          f'<rect width="{width}" height="{height}" fill="white"/>',
          f'<text x="{left}" y="14" font-size="12">AUC gain over {baseline} per cell '
          '(seed-paired mean; * = 95% interval excludes 0)</text>']
    for i, v in enumerate(rv):
        el.append(f'<text x="{left - 6}" y="{top + i * cell + cell / 2 + 4}" '
                  f'text-anchor="end">{v}</text>')
    el.append(f'<text x="12" y="{top + cell * len(rv) / 2}" text-anchor="middle" '
              f'transform="rotate(-90 12 {top + cell * len(rv) / 2})">{rows_field}</text>')
    for k, (m, (_, _, mean, low, high)) in enumerate(zip(methods, grids, strict=True)):
        x0 = left + k * (panel + gap)
        el.append(f'<text x="{x0 + panel / 2}" y="{top - 6}" text-anchor="middle" '
                  f'font-weight="bold">{m}</text>')
        for i in range(len(rv)):
            for j in range(len(cv)):
                x, y = x0 + j * cell, top + i * cell
                el.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" '
                          f'fill="{colour(mean[i, j])}" stroke="white"/>')
                if not np.isnan(mean[i, j]):
                    star = "*" if low[i, j] > 0 or high[i, j] < 0 else ""
                    el.append(f'<text x="{x + cell / 2}" y="{y + cell / 2 + 4}" '
                              f'text-anchor="middle">{mean[i, j]:+.3f}{star}</text>')
        for j, v in enumerate(cv):
            el.append(f'<text x="{x0 + j * cell + cell / 2}" y="{top + cell * len(rv) + 14}" '
                      f'text-anchor="middle">{v}</text>')
        el.append(f'<text x="{x0 + panel / 2}" y="{top + cell * len(rv) + 30}" '
                  f'text-anchor="middle">{cols_field}</text>')
    el.append("</svg>")
    return "\n".join(el)


def figure(rows: list[dict], by: str | None = None):
    """Plotly figure: AUC per method (dots = seeds, bar = mean), or gain against ``by``."""
    import plotly.graph_objects as go

    fig = go.Figure()
    if by is None:
        methods = list(dict.fromkeys(r["method"] for r in rows))
        for m in methods:
            vals = [float(r["auc"]) for r in rows if r["method"] == m]
            fig.add_box(y=vals, name=m, boxpoints="all", jitter=0.3)
        fig.update_layout(yaxis_title="test AUC (teacher: NBI test; others: WLI test)")
        return fig
    for m in sorted({r["method"] for r in rows} - {"wli_only", "teacher_nbi"}):
        xs, ys, lo, hi = [], [], [], []
        for v in sweep_values(rows, by):
            d = paired_gains([r for r in rows if r[by] == v], m)
            if len(d) >= 2:
                e = mean_interval(d)
                xs.append(float(v) if _is_number(v) else v)
                ys.append(e.value)
                lo.append(e.value - e.low)
                hi.append(e.high - e.value)
        fig.add_scatter(x=xs, y=ys, name=f"{m} - wli_only",
                        error_y={"type": "data", "array": hi, "arrayminus": lo})
    fig.add_hline(y=0, line_dash="dash", line_color="grey")
    fig.update_layout(xaxis_title=by, yaxis_title="AUC gain over wli_only (seed-paired, 95% CI)")
    return fig


def svg_gain_plot(rows: list[dict], by: str, method: str = "pagkd", width: int = 520,
                  height: int = 300) -> str:
    """A dependency-free SVG of the seed-paired gain against ``by`` (for the README)."""
    pts = []
    values = sweep_values(rows, by)
    numeric = all(_is_number(v) for v in values)
    for i, v in enumerate(values):
        d = paired_gains([r for r in rows if r[by] == v], method)
        if len(d) >= 2:
            e = mean_interval(d)
            pts.append((float(v) if numeric else float(i), e.value, e.low, e.high, v))
    if not pts:
        return ""
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0 = min(min(p[2] for p in pts), 0.0) - 0.01
    y1 = max(max(p[3] for p in pts), 0.0) + 0.01
    pad = 50

    def sx(x):
        return pad + (x - x0) / ((x1 - x0) or 1) * (width - 2 * pad)

    def sy(y):
        return height - pad - (y - y0) / ((y1 - y0) or 1) * (height - 2 * pad)

    el = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
          'font-family="sans-serif" font-size="11">',
          f'<rect width="{width}" height="{height}" fill="white"/>',
          f'<line x1="{pad}" x2="{width - pad}" y1="{sy(0):.1f}" y2="{sy(0):.1f}" '
          'stroke="grey" stroke-dasharray="4"/>']
    for v, m, lo, hi, label in pts:
        el.append(f'<line x1="{sx(v):.1f}" x2="{sx(v):.1f}" y1="{sy(lo):.1f}" y2="{sy(hi):.1f}" '
                  'stroke="#1f77b4"/>')
        el.append(f'<circle cx="{sx(v):.1f}" cy="{sy(m):.1f}" r="4" fill="#1f77b4"/>')
        el.append(f'<text x="{sx(v):.1f}" y="{height - pad + 15}" '
                  f'text-anchor="middle">{label}</text>')
    path = " ".join(f"{sx(v):.1f},{sy(m):.1f}" for v, m, *_ in pts)
    el.append(f'<polyline points="{path}" fill="none" stroke="#1f77b4"/>')
    for y in np.linspace(y0, y1, 5):
        el.append(f'<text x="{pad - 5}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:+.2f}</text>')
    el.append(f'<text x="{width / 2}" y="{height - 10}" text-anchor="middle">{by}</text>')
    el.append(f'<text x="{width / 2}" y="18" text-anchor="middle">AUC gain of {method} over '
              'wli_only (seed-paired mean, 95% CI)</text>')
    el.append("</svg>")
    return "\n".join(el)


def parse_grid(sweeps: list[str] | None) -> list[dict[str, str]]:
    """``["a.x=1,2", "b.y=3,4"]`` -> the cross product as dicts of field -> value, in order
    (``[{}]`` for no sweep)."""
    cells: list[dict[str, str]] = [{}]
    for item in sweeps or []:
        field, _, values = item.partition("=")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not field.strip() or not vals:
            raise ValueError(f"--sweep {item!r}: expected FIELD=V1,V2,...")
        cells = [{**c, field.strip(): v} for c in cells for v in vals]
    return cells


#: the references that distil from TRUE pairs: every method whose distiller is ``paired``
PAIR_ORACLES = tuple(name for name, m in METHODS.items() if m.cls.paired)


def premise_check(rows: list[dict], fields: list[str], baseline: str = "wli_only",
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
    for cell in sorted({_cell(r, fields) for r in rows}, key=_sort_key):
        sub = [r for r in rows if _cell(r, fields) == cell and r["method"] in (baseline,
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


def write_outputs(rows: list[dict], csv_path: Path, by=None,
                  methods: list[str] | None = None) -> Path:
    """Beside ``csv_path``: the summary table (``.md``), the figure (``.html``) and an SVG.

    ``by``: None, one sweep field (gain plot against it) or two fields (the regime map: a
    heat map per method of ``methods``, default every method but ``wli_only``). Returns the
    table's path.
    """
    fields = _fields(by)
    md = csv_path.with_suffix(".md")
    md.write_text(summarize(rows, by=fields or None) + "\n")
    html, svg = csv_path.with_suffix(".html"), csv_path.with_suffix(".svg")
    if len(fields) == 2:
        shown = [m for m in (methods or dict.fromkeys(r["method"] for r in rows))
                 if m not in ("wli_only", "teacher_nbi")]
        heatmap_figure(rows, *fields, shown).write_html(html, include_plotlyjs="cdn")
        svg.write_text(svg_heatmap(rows, *fields, shown))
    else:
        by1 = fields[0] if fields else None
        figure(rows, by1).write_html(html, include_plotlyjs="cdn")
        if by1:
            svg.write_text(svg_gain_plot(rows, by1))
    return md
