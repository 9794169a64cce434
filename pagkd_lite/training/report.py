"""A self-contained HTML report of a run: the table, learning curves, ROC curves (plotly)."""

from __future__ import annotations

import dataclasses
import html
import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from sklearn.metrics import roc_curve


def learning_curves(curves: dict[str, list[dict]]) -> go.Figure:
    """Validation AUC and training loss terms per epoch, one line per model."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("validation AUC", "training loss terms"))
    for name, hist in curves.items():
        epochs = [h["epoch"] + 1 for h in hist]
        fig.add_scatter(x=epochs, y=[h.get("val_auc") for h in hist], name=name, row=1, col=1)
        for term in ("ce", "den", "con", "pcls", "kd"):
            if any(term in h for h in hist):
                fig.add_scatter(x=epochs, y=[h.get(term) for h in hist], name=f"{name}: {term}",
                                line={"dash": "dot"}, row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=380, margin={"t": 40, "b": 40})
    return fig


#: The mechanism numbers of :mod:`pagkd_lite.method.mechanism_log`, with their plot titles.
MECHANISM_CURVES = {
    "label_acc_w": "WLI token-label accuracy",
    "relation_agree": "relation-map agreement",
    "common_share": "common component's share",
    "attn_entropy": "attention entropy (1 = uniform)",
    "cam_auc_w": "student CAM AUC (0.5 = chance)",
    "adapter_drift": "teacher-side adapter drift",
    "val_auc": "validation AUC",
}


def mechanism_means(records: list[dict], methods=None) -> dict[str, dict[str, list]]:
    """``{method: {metric: per-epoch mean over the runs (seeds)}}`` from run records
    ``{"method", "seed", "history"}`` (:func:`pagkd_lite.apps.bench.read_histories`); an epoch
    where a run lacks a metric (warm-up) is left out of that epoch's mean (None if none)."""
    out: dict[str, dict[str, list]] = {}
    for rec in records:
        if methods is not None and rec["method"] not in methods:
            continue
        out.setdefault(rec["method"], {"runs": []})["runs"].append(rec["history"])
    for per in out.values():
        runs = per.pop("runs")
        n_epochs = max(len(h) for h in runs)
        for key in MECHANISM_CURVES:
            vals = []
            for e in range(n_epochs):
                xs = [h[e][key] for h in runs if e < len(h) and h[e].get(key) is not None]
                vals.append(sum(xs) / len(xs) if xs else None)
            per[key] = vals
    return out


def mechanism_figure(records: list[dict], methods=None) -> go.Figure:
    """One panel per mechanism number, one line per method (mean over seeds per epoch)."""
    means = mechanism_means(records, methods)
    titles = list(MECHANISM_CURVES.values())
    n_rows = -(-len(MECHANISM_CURVES) // 3)
    fig = make_subplots(rows=n_rows, cols=3, subplot_titles=titles)
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
               "#7f7f7f", "#17becf"]
    for i, (method, per) in enumerate(means.items()):
        colour = palette[i % len(palette)]
        for j, key in enumerate(MECHANISM_CURVES):
            ys = per[key]
            fig.add_scatter(x=list(range(1, len(ys) + 1)), y=ys, name=method,
                            legendgroup=method, showlegend=j == 0, line={"color": colour},
                            row=j // 3 + 1, col=j % 3 + 1)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=310 * n_rows, margin={"t": 40, "b": 40})
    return fig


def roc_figure(rows: list[dict], class_names: list[str]) -> go.Figure:
    """One-vs-rest ROC curve of each class, per model."""
    fig = go.Figure()
    for r in rows:
        ev = r["eval"]
        for c, cname in enumerate(class_names):
            if ev.probs.shape[1] == 2 and c == 0:
                continue
            fpr, tpr, _ = roc_curve(ev.labels == c, ev.probs[:, c])
            fig.add_scatter(x=fpr, y=tpr, name=f"{r['name']} ({r['split']}): {cname}")
    fig.add_scatter(x=[0, 1], y=[0, 1], name="chance", line={"dash": "dash", "color": "grey"})
    fig.update_layout(xaxis_title="false positive rate", yaxis_title="true positive rate",
                      height=420, margin={"t": 30})
    return fig


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {torch.get_num_threads()} threads, {dev}, torch {torch.__version__}"


def write_report(path: Path, cfg, rows, curves, table: str, wall_seconds: float,
                 class_names: list[str]) -> Path:
    """Write the report; plotly.js is embedded once so the file works offline."""
    figs = [learning_curves(curves), roc_figure(rows, class_names)]
    parts = [f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figs)]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = f"""<!doctype html><html><head><meta charset="utf-8">
<title>pagkd_lite report: {html.escape(cfg.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
pre{{background:#f4f4f4;padding:1em;overflow-x:auto}}</style></head><body>
<h1>pagkd_lite: {html.escape(cfg.name)} preset</h1>
<p>{stamp} &middot; {html.escape(machine())} &middot; wall time {wall_seconds:.0f} s</p>
<h2>Results (95% bootstrap intervals)</h2><pre>{html.escape(table)}</pre>
<h2>Learning curves</h2>{parts[0]}<h2>ROC curves (test)</h2>{parts[1]}
<h2>Configuration</h2><pre>{html.escape(json.dumps(dataclasses.asdict(cfg), indent=1))}</pre>
</body></html>"""
    path.write_text(body)
    return path
