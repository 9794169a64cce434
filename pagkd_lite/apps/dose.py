"""The label dose-response: GKD-Den's gain against the measured accuracy of its token labels.

GKD-Den reads a tri-state label per token (lesion, background, uncertain) to build its
relation maps. How good must those labels be before the loss pays? The bench measures it on
SynthEndo, whose true masks give perfect labels (``labels.source=mask``), with a known share
rho of the certain labels flipped (``labels.flip_rate``). Each run's label accuracy is
MEASURED, not assumed ``1 - rho``: on the mechanism probe (:mod:`pagkd_lite.training.mechanism`,
``label_acc_w`` and ``label_acc_n``: the share of certain true token labels that the labels
the loss used get right) averaged over the epochs in which the group losses are on::

    acc(run) = mean_{e >= warm-up} ( label_acc_w[e] + label_acc_n[e] ) / 2

and its gain is seed-paired against ``wli_only``. The pairing-free label sources (the
student's Grad-CAM under each start) are placed on the same axes by the same two numbers.

Everything here reads bench rows (:func:`pagkd_lite.apps.bench.read_rows`) and histories
(:func:`pagkd_lite.apps.bench.read_histories`); the views are drawn by
:mod:`pagkd_lite.apps.figures`'s :class:`~pagkd_lite.apps.figures.Svg` and plotly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..training.metrics import mean_interval
from .figures import COLOURS, Svg
from .gains import BASELINE, paired_gains

#: the sweep column of the dose-response bench
FLIP = "labels.flip_rate"


@dataclass
class DosePoint:
    """One (method, cell) of the dose-response: ``label`` names it in the views, ``series``
    groups the points drawn as one line (None: a single point, a label source), ``rho`` the
    flip rate (None for a CAM source); ``acc`` / ``acc_w`` / ``acc_n`` the measured label
    accuracies (both sides, WLI, NBI; mean over seeds); ``gain``, ``low``, ``high`` the
    seed-paired AUC gain over the baseline and its 95 % interval, over ``seeds`` seeds."""

    label: str
    series: str | None
    rho: float | None
    acc: float
    acc_w: float
    acc_n: float
    gain: float
    low: float
    high: float
    seeds: int


def run_label_accuracy(history: list[dict], warmup_epochs: int) -> tuple[float, float]:
    """``(label_acc_w, label_acc_n)`` of one run: the mean over its epochs ``>= warmup_epochs``
    that logged them (NaN when none did)."""
    recs = [h for h in history if h.get("epoch", 0) >= warmup_epochs and "label_acc_w" in h]
    if not recs:
        return math.nan, math.nan
    return (float(np.nanmean([h["label_acc_w"] for h in recs])),
            float(np.nanmean([h["label_acc_n"] for h in recs])))


def _accuracies(histories: list[dict], method: str, cell: dict, warmup_epochs: int):
    pairs = [run_label_accuracy(h["history"], warmup_epochs) for h in histories
             if h["method"] == method and all(str(h.get(k)) == str(v) for k, v in cell.items())]
    if not pairs:
        return math.nan, math.nan
    w, n = np.array(pairs).T
    return float(np.nanmean(w)), float(np.nanmean(n))


def dose_point(rows: list[dict], histories: list[dict], method: str, label: str,
               series: str | None = None, cell: dict | None = None,
               baseline_rows: list[dict] = (), warmup_epochs: int = 0,
               baseline: str = BASELINE) -> DosePoint | None:
    """The :class:`DosePoint` of ``method`` in the rows of ``cell`` (sweep values, e.g.
    ``{FLIP: "0.2"}``), its gain taken against ``baseline`` in ``baseline_rows`` (the
    baseline's own bench) on the seeds both have; None with fewer than 2 paired seeds."""
    cell = cell or {}
    mine = [r for r in rows if r["method"] == method
            and all(str(r.get(k)) == str(v) for k, v in cell.items())]
    gains = paired_gains([*mine, *(r for r in baseline_rows if r["method"] == baseline)],
                         method, baseline)
    if len(gains) < 2:
        return None
    est = mean_interval(gains)
    acc_w, acc_n = _accuracies(histories, method, cell, warmup_epochs)
    rho = float(cell[FLIP]) if FLIP in cell else None
    return DosePoint(label=label, series=series, rho=rho, acc=(acc_w + acc_n) / 2,
                     acc_w=acc_w, acc_n=acc_n, gain=est.value, low=est.low, high=est.high,
                     seeds=len(gains))


def write_points(points: list[DosePoint], path) -> None:
    """The points as a CSV, one row each (the data the views are drawn from)."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[fl.name for fl in dataclasses.fields(DosePoint)])
        w.writeheader()
        w.writerows(dataclasses.asdict(p) for p in points)


def read_points(path) -> list[DosePoint]:
    """The points of :func:`write_points` (empty cells: None)."""
    import csv

    kinds = {fl.name: fl.type for fl in dataclasses.fields(DosePoint)}
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            vals = {}
            for k, v in row.items():
                if v == "":
                    vals[k] = None
                elif "float" in str(kinds[k]):
                    vals[k] = float(v)
                elif kinds[k] in (int, "int"):
                    vals[k] = int(v)
                else:
                    vals[k] = v
            out.append(DosePoint(**vals))
    return out


def table(points: list[DosePoint], baseline: str = BASELINE) -> str:
    """The points as a Markdown table."""
    lines = [f"| labels | rho | measured label accuracy (both / WLI / NBI) | seeds | AUC gain "
             f"over {baseline} [95% CI] |", "|---|---|---|---|---|"]
    for p in points:
        rho = "-" if p.rho is None else f"{p.rho:g}"
        lines.append(f"| {p.label} | {rho} | {p.acc:.3f} / {p.acc_w:.3f} / {p.acc_n:.3f} | "
                     f"{p.seeds} | {p.gain:+.3f} [{p.low:+.3f}, {p.high:+.3f}] |")
    return "\n".join(lines)


def svg_dose(points: list[DosePoint], baseline: str = BASELINE, width: int = 700,
             height: int = 360) -> str:
    """Gain over ``baseline`` (y, 95 % CI) against measured label accuracy (x): one line per
    series (the flip-rate sweeps), one diamond per single source (a pairing-free label
    source), each labelled."""
    if not points:
        return ""
    x0 = min(0.5, min(p.acc for p in points) - 0.02)
    x1 = 1.0
    y0 = min(min(p.low for p in points), 0.0) - 0.01
    y1 = max(max(p.high for p in points), 0.0) + 0.01
    pad, legend = 55, 235

    def sx(x):
        return pad + (x - x0) / (x1 - x0) * (width - legend - 2 * pad)

    def sy(y):
        return height - pad - (y - y0) / ((y1 - y0) or 1) * (height - 2 * pad)

    svg = Svg(width, height, font_size=11)
    svg.line(pad, sy(0), width - legend - pad, sy(0), stroke="grey", dashed=True)
    groups = list(dict.fromkeys(p.series or p.label for p in points))
    for k, g in enumerate(groups):
        colour = COLOURS[k % len(COLOURS)]
        pts = [p for p in points if (p.series or p.label) == g]
        for p in pts:
            svg.line(sx(p.acc), sy(p.low), sx(p.acc), sy(p.high), stroke=colour)
            if p.series is None:
                r = 5
                svg.el.append(f'<polygon points="{sx(p.acc):.1f},{sy(p.gain) - r:.1f} '
                              f'{sx(p.acc) + r:.1f},{sy(p.gain):.1f} {sx(p.acc):.1f},'
                              f'{sy(p.gain) + r:.1f} {sx(p.acc) - r:.1f},{sy(p.gain):.1f}" '
                              f'fill="{colour}"/>')
            else:
                svg.circle(sx(p.acc), sy(p.gain), 4, colour)
                svg.text(sx(p.acc) + 5, sy(p.gain) - 6, f"{p.rho:g}", size=9)
        if pts[0].series is not None:
            svg.polyline([(sx(p.acc), sy(p.gain)) for p in sorted(pts, key=lambda p: p.acc)],
                         stroke=colour)
        svg.text(width - legend + 5, 40 + 16 * k, g, size=11)
        svg.line(width - legend - 12, 36 + 16 * k, width - legend, 36 + 16 * k, stroke=colour)
    for x in np.arange(math.ceil(x0 * 10) / 10, x1 + 1e-9, 0.1):
        svg.text(sx(x), height - pad + 15, f"{x:.1f}", anchor="middle")
    for y in np.linspace(y0, y1, 5):
        svg.text(pad - 5, sy(y) + 4, f"{y:+.2f}", anchor="end")
    svg.text((width - legend) / 2, height - 12,
             "measured token-label accuracy (certain true tokens, WLI and NBI)",
             anchor="middle")
    svg.text(width / 2, 18, f"AUC gain over {baseline} (seed-paired mean, 95% CI); "
                            "numbers on the lines: flip rate rho", anchor="middle")
    return svg.render()


def dose_figure(points: list[DosePoint], baseline: str = BASELINE):
    """The plotly view of :func:`svg_dose` (for the course)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for g in dict.fromkeys(p.series or p.label for p in points):
        pts = sorted((p for p in points if (p.series or p.label) == g), key=lambda p: p.acc)
        single = pts[0].series is None
        fig.add_scatter(
            x=[p.acc for p in pts], y=[p.gain for p in pts], name=g,
            mode="markers" if single else "lines+markers+text",
            text=None if single else [f"rho {p.rho:g}" for p in pts],
            textposition="top center",
            marker={"symbol": "diamond" if single else "circle", "size": 10 if single else 7},
            error_y={"type": "data", "array": [p.high - p.gain for p in pts],
                     "arrayminus": [p.gain - p.low for p in pts]})
    fig.add_hline(y=0, line_dash="dash", line_color="grey")
    fig.update_layout(xaxis_title="measured token-label accuracy (WLI and NBI)",
                      yaxis_title=f"AUC gain over {baseline} (seed-paired, 95% CI)")
    return fig
