"""Views of benchmark rows: the Markdown table, plotly figures (HTML) and SVG for the docs.

Everything here is rendered from rows (:func:`pagkd_lite.apps.bench.read_rows`) and the
statistics of :mod:`pagkd_lite.apps.gains`; nothing is computed that the CSV does not hold. No
method is named here (a reference is marked by its registry kind): the baseline is a
parameter (default :data:`~pagkd_lite.apps.gains.BASELINE`), and the teacher's row
(:data:`~pagkd_lite.apps.gains.TEACHER_ROW`) is left out of every gain. The SVG files (read on
GitHub and in the course site without JavaScript) are drawn by one small helper,
:class:`Svg`; the interactive views are plotly's.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import numpy as np

from ..method.distill import METHODS
from ..training.metrics import mean_interval
from .gains import (
    BASELINE,
    TEACHER_ROW,
    as_fields,
    cell_key,
    cell_order,
    gain_grid,
    is_number,
    paired_gains,
    sweep_values,
)

#: line colours of the gain plots, one per method in order (plotly's default cycle)
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def summarize(rows: list[dict], baseline: str = BASELINE, by=None) -> str:
    """Markdown: mean [95% CI] per method, and the seed-paired difference to ``baseline``;
    one table per cell of the ``by`` field(s) (a name or a list of names)."""
    fields = as_fields(by)
    cells = sorted({cell_key(r, fields) for r in rows}, key=cell_order)
    out = []
    for cell in cells:
        sub = [r for r in rows if cell_key(r, fields) == cell]
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
            if m == baseline:
                dtxt = "(reference)"
            elif m == TEACHER_ROW:
                dtxt = "n/a (NBI test set)"
            elif len(diffs) < 2:
                dtxt = "n/a"
            else:
                d = mean_interval(diffs)
                mark = " **excludes 0**" if d.low > 0 or d.high < 0 else " (not shown)"
                dtxt = f"{d.signed()}{mark}"
            out.append(f"| {m}{REFERENCE_MARK if is_reference(m) else ''} | {len(rs)} | {auc} | "
                       f"{acc.value:.3f} | {f1.value:.3f} | {dtxt} | {secs:.0f} |")
    if any(is_reference(r["method"]) for r in rows):
        out.append(f"\n{REFERENCE_MARK.strip()} a reference, not a method: it uses true pairs or "
                   "SynthEndo's ground truth, which real data does not give.")
    return "\n".join(out)


#: how the tables mark a reference (``Method.kind == "reference"``)
REFERENCE_MARK = " (ref.)"


def is_reference(method: str) -> bool:
    """Whether ``method`` is a registry entry of kind ``reference`` (teacher row: no)."""
    entry = METHODS.get(method)
    return entry is not None and entry.kind == "reference"


def compared_methods(rows: list[dict], baseline: str = BASELINE) -> list[str]:
    """The methods of ``rows`` that a gain plot shows: all but the baseline and the teacher,
    in the order they first appear."""
    return [m for m in dict.fromkeys(r["method"] for r in rows)
            if m not in (baseline, TEACHER_ROW)]


def heatmap_figure(rows: list[dict], rows_field: str, cols_field: str, methods: list[str],
                   baseline: str = BASELINE):
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


def figure(rows: list[dict], by: str | None = None, baseline: str = BASELINE):
    """Plotly figure: AUC per method (dots = seeds, box = spread), or, with ``by``, each
    method's seed-paired gain over ``baseline`` against the sweep field ``by``."""
    import plotly.graph_objects as go

    fig = go.Figure()
    if by is None:
        for m in dict.fromkeys(r["method"] for r in rows):
            vals = [float(r["auc"]) for r in rows if r["method"] == m]
            fig.add_box(y=vals, name=m, boxpoints="all", jitter=0.3)
        fig.update_layout(yaxis_title=f"test AUC ({TEACHER_ROW}: NBI test; others: WLI test)")
        return fig
    for m in compared_methods(rows, baseline):
        pts = gain_points(rows, by, m, baseline)
        fig.add_scatter(x=[p[0] if is_number(p[4]) else p[4] for p in pts],
                        y=[p[1] for p in pts], name=f"{m} - {baseline}",
                        error_y={"type": "data", "array": [p[3] - p[1] for p in pts],
                                 "arrayminus": [p[1] - p[2] for p in pts]})
    fig.add_hline(y=0, line_dash="dash", line_color="grey")
    fig.update_layout(xaxis_title=by,
                      yaxis_title=f"AUC gain over {baseline} (seed-paired, 95% CI)")
    return fig


def gain_points(rows: list[dict], by: str, method: str,
                baseline: str = BASELINE) -> list[tuple[float, float, float, float, str]]:
    """Per value of the sweep field ``by`` with at least 2 paired seeds: ``(x, mean, low,
    high, value)`` of ``method - baseline``; ``x`` is the value if every value is a number,
    else its position."""
    values = sweep_values(rows, by)
    numeric = all(is_number(v) for v in values)
    pts = []
    for i, v in enumerate(values):
        d = paired_gains([r for r in rows if r[by] == v], method, baseline)
        if len(d) >= 2:
            e = mean_interval(d)
            pts.append((float(v) if numeric else float(i), e.value, e.low, e.high, v))
    return pts


class Svg:
    """A small SVG canvas: shapes and text in pixel coordinates on a white page, rendered to
    one string by :meth:`render`. Text is escaped."""

    def __init__(self, width: float, height: float, font_size: int = 10) -> None:
        self.width, self.height = width, height
        self.el = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
                   f'height="{height:.0f}" font-family="sans-serif" font-size="{font_size}">',
                   f'<rect width="{width:.0f}" height="{height:.0f}" fill="white"/>']

    def rect(self, x: float, y: float, w: float, h: float, fill: str,
             stroke: str = "none") -> None:
        self.el.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
                       f'fill="{fill}" stroke="{stroke}"/>')

    def text(self, x: float, y: float, s: str, anchor: str = "start", size: int | None = None,
             bold: bool = False, rotate: float | None = None) -> None:
        attrs = f'x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"'
        if size:
            attrs += f' font-size="{size}"'
        if bold:
            attrs += ' font-weight="bold"'
        if rotate is not None:
            attrs += f' transform="rotate({rotate:g} {x:.1f} {y:.1f})"'
        self.el.append(f"<text {attrs}>{escape(str(s))}</text>")

    def line(self, x1: float, y1: float, x2: float, y2: float, stroke: str = "black",
             dashed: bool = False) -> None:
        dash = ' stroke-dasharray="4"' if dashed else ""
        self.el.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                       f'stroke="{stroke}"{dash}/>')

    def circle(self, cx: float, cy: float, r: float, fill: str) -> None:
        self.el.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r:g}" fill="{fill}"/>')

    def polyline(self, points: list[tuple[float, float]], stroke: str) -> None:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        self.el.append(f'<polyline points="{path}" fill="none" stroke="{stroke}"/>')

    def render(self) -> str:
        return "\n".join([*self.el, "</svg>"])


def _diverging(v: float, span: float = 0.15) -> str:
    """Colour of a gain ``v`` on a red (< 0) - white - blue (> 0) scale saturating at
    ``+-span``; grey for NaN (no paired seeds)."""
    if np.isnan(v):
        return "#eeeeee"
    t = max(-1.0, min(1.0, v / span))
    end = np.array([33, 102, 172]) if t > 0 else np.array([178, 24, 43])
    c = np.array([247, 247, 247]) + (end - 247) * abs(t)
    return "#" + "".join(f"{int(x):02x}" for x in c)


def svg_heatmap(rows: list[dict], rows_field: str, cols_field: str, methods: list[str],
                baseline: str = BASELINE, cell: int = 62) -> str:
    """The SVG of :func:`heatmap_figure` (for docs/results.md)."""
    grids = [gain_grid(rows, rows_field, cols_field, m, baseline) for m in methods]
    rv, cv = grids[0][0], grids[0][1]
    left, top, gap = 70, 40, 18
    panel = cell * len(cv)
    svg = Svg(left + len(methods) * (panel + gap) + 10, top + cell * len(rv) + 45)
    svg.text(left, 14, f"AUC gain over {baseline} per cell (seed-paired mean; * = 95% "
                       "interval excludes 0)", size=12)
    for i, v in enumerate(rv):
        svg.text(left - 6, top + i * cell + cell / 2 + 4, v, anchor="end")
    mid = top + cell * len(rv) / 2
    svg.text(12, mid, rows_field, anchor="middle", rotate=-90)
    for k, (m, (_, _, mean, low, high)) in enumerate(zip(methods, grids, strict=True)):
        x0 = left + k * (panel + gap)
        svg.text(x0 + panel / 2, top - 6, m, anchor="middle", bold=True)
        for i in range(len(rv)):
            for j in range(len(cv)):
                x, y = x0 + j * cell, top + i * cell
                svg.rect(x, y, cell, cell, _diverging(mean[i, j]), stroke="white")
                if not np.isnan(mean[i, j]):
                    star = "*" if low[i, j] > 0 or high[i, j] < 0 else ""
                    svg.text(x + cell / 2, y + cell / 2 + 4, f"{mean[i, j]:+.3f}{star}",
                             anchor="middle")
        for j, v in enumerate(cv):
            svg.text(x0 + j * cell + cell / 2, top + cell * len(rv) + 14, v, anchor="middle")
        svg.text(x0 + panel / 2, top + cell * len(rv) + 30, cols_field, anchor="middle")
    return svg.render()


def svg_gain_plot(rows: list[dict], by: str, baseline: str = BASELINE, width: int = 560,
                  height: int = 320) -> str:
    """The SVG of :func:`figure` with ``by``: every compared method's seed-paired gain over
    ``baseline`` against the sweep field (mean and 95% CI), one colour per method; "" when
    no value has two paired seeds."""
    series = [(m, gain_points(rows, by, m, baseline)) for m in compared_methods(rows, baseline)]
    series = [(m, pts) for m, pts in series if pts]
    if not series:
        return ""
    pts_all = [p for _, pts in series for p in pts]
    x0, x1 = min(p[0] for p in pts_all), max(p[0] for p in pts_all)
    y0 = min(min(p[2] for p in pts_all), 0.0) - 0.01
    y1 = max(max(p[3] for p in pts_all), 0.0) + 0.01
    pad, legend = 50, 130

    def sx(x):
        return pad + (x - x0) / ((x1 - x0) or 1) * (width - legend - 2 * pad)

    def sy(y):
        return height - pad - (y - y0) / ((y1 - y0) or 1) * (height - 2 * pad)

    svg = Svg(width, height, font_size=11)
    svg.line(pad, sy(0), width - legend - pad, sy(0), stroke="grey", dashed=True)
    for k, (m, pts) in enumerate(series):
        colour = COLOURS[k % len(COLOURS)]
        for x, mean, lo, hi, _ in pts:
            svg.line(sx(x), sy(lo), sx(x), sy(hi), stroke=colour)
            svg.circle(sx(x), sy(mean), 4, colour)
        svg.polyline([(sx(x), sy(mean)) for x, mean, *_ in pts], stroke=colour)
        svg.text(width - legend + 5, 40 + 16 * k, m, size=11)
        svg.line(width - legend - 12, 36 + 16 * k, width - legend, 36 + 16 * k, stroke=colour)
    for x, *_, label in pts_all:
        svg.text(sx(x), height - pad + 15, label, anchor="middle")
    for y in np.linspace(y0, y1, 5):
        svg.text(pad - 5, sy(y) + 4, f"{y:+.2f}", anchor="end")
    svg.text((width - legend) / 2, height - 10, by, anchor="middle")
    svg.text(width / 2, 18, f"AUC gain over {baseline} (seed-paired mean, 95% CI)",
             anchor="middle")
    return svg.render()


def write_outputs(rows: list[dict], csv_path: Path, by=None,
                  methods: list[str] | None = None, baseline: str = BASELINE) -> Path:
    """Beside ``csv_path``: the summary table (``.md``), the figure (``.html``) and an SVG.

    ``by``: None, one sweep field (gain plot against it) or two fields (the regime map: a
    heat map per method of ``methods``, default every method but the baseline and the
    teacher). Returns the table's path.
    """
    fields = as_fields(by)
    md = csv_path.with_suffix(".md")
    md.write_text(summarize(rows, baseline, by=fields or None) + "\n")
    html, svg = csv_path.with_suffix(".html"), csv_path.with_suffix(".svg")
    if len(fields) == 2:
        shown = [m for m in (methods or compared_methods(rows, baseline))
                 if m not in (baseline, TEACHER_ROW)]
        heatmap_figure(rows, *fields, shown, baseline).write_html(html, include_plotlyjs="cdn")
        svg.write_text(svg_heatmap(rows, *fields, shown, baseline))
    else:
        by1 = fields[0] if fields else None
        figure(rows, by1, baseline).write_html(html, include_plotlyjs="cdn")
        if by1:
            svg.write_text(svg_gain_plot(rows, by1, baseline))
    return md
