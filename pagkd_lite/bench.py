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
import time
from pathlib import Path

import numpy as np

from .config import Config, override
from .metrics import mean_interval

BENCH_METHODS = ("wli_only", "logit_kd", "pseudo_pair", "pagkd_no_pro", "pagkd_no_den", "pagkd",
                 "paired_oracle")
COLUMNS = ("method", "seed", "auc", "accuracy", "f1", "sensitivity", "specificity",
           "train_seconds")


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def run_bench(cfg: Config, seeds: list[int], methods=BENCH_METHODS, csv_path: Path | str = "",
              cache_dir: Path | str = "runs/bench", progress: bool = False,
              extra: dict | None = None, log=print) -> list[dict]:
    """Train and score every (seed, method); append rows to ``csv_path``; return all rows.

    ``extra`` adds fixed columns (the sweep value). Rows already in the CSV with the same
    method, seed and extra values are not recomputed.
    """
    from .metrics import compute_metrics
    from .pipeline import make_data, train_student, train_teacher
    from .train import pick_device, predict

    csv_path = Path(csv_path)
    extra = extra or {}
    columns = list(COLUMNS) + list(extra)
    done = {(r["method"], str(r["seed"]), *(str(r.get(k)) for k in extra))
            for r in read_rows(csv_path)}
    device = pick_device(cfg.device)
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
                model, result = train_student(c, sets, method, teacher, progress=progress)
                test, secs = sets["wli_test"], result.seconds
            probs = predict(model, test, device, runtime=c.runtime)
            m = compute_metrics(test.labels.numpy(), probs)
            row = {"method": method, "seed": seed, **{k: f"{m[k]:.4f}" for k in
                   ("auc", "accuracy", "f1", "sensitivity", "specificity")},
                   "train_seconds": f"{secs:.1f}", **extra}
            new = not csv_path.exists()
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            with csv_path.open("a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=columns)
                if new:
                    w.writeheader()
                w.writerow(row)
            log(f"seed {seed} {method:14s} AUC {m['auc']:.3f} "
                f"({secs:.0f} s train, {time.perf_counter() - t0:.0f} s total) {extra or ''}")
    return read_rows(csv_path)


def summarize(rows: list[dict], baseline: str = "wli_only", by: str | None = None) -> str:
    """Markdown: mean [95% CI] per method, and the seed-paired difference to ``baseline``."""
    groups = sorted({r.get(by) for r in rows}) if by else [None]
    out = []
    for g in groups:
        sub = [r for r in rows if by is None or r.get(by) == g]
        methods = list(dict.fromkeys(r["method"] for r in sub))
        base = {r["seed"]: float(r["auc"]) for r in sub if r["method"] == baseline}
        if by:
            out.append(f"\n**{by} = {g}**\n")
        out.append("| method | seeds | AUC mean [95% CI] | accuracy | F1 | "
                   f"AUC - {baseline}, seed-paired [95% CI] | train s |")
        out.append("|---|---|---|---|---|---|---|")
        for m in methods:
            rs = [r for r in sub if r["method"] == m]
            auc = mean_interval([float(r["auc"]) for r in rs])
            acc = mean_interval([float(r["accuracy"]) for r in rs])
            f1 = mean_interval([float(r["f1"]) for r in rs])
            secs = np.mean([float(r["train_seconds"]) for r in rs])
            diffs = [float(r["auc"]) - base[r["seed"]] for r in rs if r["seed"] in base]
            if m == baseline or m == "teacher_nbi" or len(diffs) < 2:
                dtxt = "(reference)" if m == baseline else "n/a (NBI test set)" \
                    if m == "teacher_nbi" else "n/a"
            else:
                d = mean_interval(diffs)
                mark = " **excludes 0**" if d.low > 0 or d.high < 0 else ""
                dtxt = f"{d.value:+.3f} [{d.low:+.3f}, {d.high:+.3f}]{mark}"
            out.append(f"| {m} | {len(rs)} | {auc} | {acc.value:.3f} | {f1.value:.3f} | {dtxt} "
                       f"| {secs:.0f} |")
    return "\n".join(out)


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
        for v in sorted({float(r[by]) for r in rows}):
            base = {r["seed"]: float(r["auc"]) for r in rows
                    if r["method"] == "wli_only" and float(r[by]) == v}
            d = [float(r["auc"]) - base[r["seed"]] for r in rows
                 if r["method"] == m and float(r[by]) == v and r["seed"] in base]
            if len(d) >= 2:
                e = mean_interval(d)
                xs.append(v)
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
    for v in sorted({float(r[by]) for r in rows}):
        base = {r["seed"]: float(r["auc"]) for r in rows
                if r["method"] == "wli_only" and float(r[by]) == v}
        d = [float(r["auc"]) - base[r["seed"]] for r in rows
             if r["method"] == method and float(r[by]) == v and r["seed"] in base]
        if len(d) >= 2:
            e = mean_interval(d)
            pts.append((v, e.value, e.low, e.high))
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
    for v, m, lo, hi in pts:
        el.append(f'<line x1="{sx(v):.1f}" x2="{sx(v):.1f}" y1="{sy(lo):.1f}" y2="{sy(hi):.1f}" '
                  'stroke="#1f77b4"/>')
        el.append(f'<circle cx="{sx(v):.1f}" cy="{sy(m):.1f}" r="4" fill="#1f77b4"/>')
        el.append(f'<text x="{sx(v):.1f}" y="{height - pad + 15}" '
                  f'text-anchor="middle">{v:g}</text>')
    path = " ".join(f"{sx(v):.1f},{sy(m):.1f}" for v, m, _, _ in pts)
    el.append(f'<polyline points="{path}" fill="none" stroke="#1f77b4"/>')
    for y in np.linspace(y0, y1, 5):
        el.append(f'<text x="{pad - 5}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:+.2f}</text>')
    el.append(f'<text x="{width / 2}" y="{height - 10}" text-anchor="middle">{by}</text>')
    el.append(f'<text x="{width / 2}" y="18" text-anchor="middle">AUC gain of {method} over '
              'wli_only (seed-paired mean, 95% CI)</text>')
    el.append("</svg>")
    return "\n".join(el)


def write_outputs(rows: list[dict], csv_path: Path, by: str | None = None) -> Path:
    """Beside ``csv_path``: the summary table (``.md``), the figure (``.html``) and, for a
    sweep, the gain plot (``.svg``). Returns the table's path."""
    md = csv_path.with_suffix(".md")
    md.write_text(summarize(rows, by=by) + "\n")
    figure(rows, by).write_html(csv_path.with_suffix(".html"), include_plotlyjs="cdn")
    if by:
        csv_path.with_suffix(".svg").write_text(svg_gain_plot(rows, by))
    return md
