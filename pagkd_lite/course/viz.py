"""Plotly figures for the course notebooks, and the plain functions behind their widgets.

Every interactive part of a notebook is ``ipywidgets.interact`` over one of these functions:
each takes data in, returns a ``plotly.graph_objects.Figure`` and shows nothing, so the same
call runs in a notebook without a widget front end, in ``tests/test_viz.py`` and in a report.

Image conventions: an image is ``(3, H, W)`` (uint8 in [0, 255], or float in [0, 1]) as an
:class:`~pagkd_lite.data.imageset.ImageSet` holds it, a batch is ``(N, 3, H, W)``; maps (Grad-CAM,
attention) are ``(h, w)`` at token resolution and are upsampled bilinearly to ``H x W`` to be
drawn over their image. Images are drawn with ``go.Image`` (pixel coordinates, y down), maps
with a semi-transparent ``go.Heatmap`` on the same axes.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import torch
import torch.nn.functional as F
from plotly.colors import sample_colorscale, unlabel_rgb
from plotly.io.base_renderers import PlotlyRenderer
from plotly.subplots import make_subplots

from ..data.imageset import ImageSet
from ..data.sampler import GroupStep
from ..training.metrics import Estimate
from ..training.report import learning_curves

__all__ = [
    "LabRenderer",
    "as_hwc",
    "cam_grid",
    "cam_overlay",
    "card_table",
    "class_examples",
    "group_attention",
    "group_explorer",
    "heat_overlay",
    "image_grid",
    "label_overlay",
    "learning_curves",
    "metric_bars",
    "query_image_mass",
    "similarity_matrix",
    "upsample_map",
    "use_lab_renderer",
]

MAP_COLORSCALE = "Jet"


# ---------------------------------------------------------------------------------- helpers
def as_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """One image ``(3, H, W)`` (uint8, or float in [0, 1]) -> uint8 array ``(H, W, 3)``."""
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"as_hwc: expected an image (3, H, W), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.asarray(arr, dtype=np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr.transpose(1, 2, 0))


def upsample_map(m: torch.Tensor | np.ndarray, size: tuple[int, int],
                 mode: str = "bilinear") -> np.ndarray:
    """A map ``(h, w)`` -> float array ``(H, W)``: ``"bilinear"`` (no corner align; CAMs) or
    ``"nearest"`` (token grids)."""
    t = torch.as_tensor(np.asarray(m, dtype=np.float32) if not isinstance(m, torch.Tensor)
                        else m.detach().cpu().float())
    if t.ndim != 2:
        raise ValueError(f"upsample_map: expected a map (h, w), got shape {tuple(t.shape)}")
    kw = {"align_corners": False} if mode == "bilinear" else {}
    up = F.interpolate(t[None, None], size=tuple(size), mode=mode, **kw)
    return up[0, 0].numpy()


def _grid_shape(n: int, cols: int | None) -> tuple[int, int]:
    cols = max(1, min(n, cols if cols else math.ceil(math.sqrt(n))))
    return max(1, math.ceil(n / cols)), cols


def _bare_axes(fig: go.Figure) -> go.Figure:
    """No ticks or grid; y grows downwards (image rows) on every subplot."""
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed")
    return fig


def _vspace(rows: int, wanted: float) -> float:
    """Vertical spacing that make_subplots accepts for ``rows`` rows."""
    return wanted if rows < 2 else min(wanted, 0.5 / (rows - 1))


def _map_trace(m: np.ndarray, opacity: float, showscale: bool, name: str = "map") -> go.Heatmap:
    return go.Heatmap(z=m, zmin=0.0, zmax=1.0, colorscale=MAP_COLORSCALE, opacity=opacity,
                      showscale=showscale, name=name, hovertemplate="x %{x}, y %{y}: %{z:.2f}"
                      "<extra></extra>", colorbar={"len": 0.8, "thickness": 12})


def _size(n_rows: int, n_cols: int, tile: int = 150) -> dict:
    return {"height": 60 + tile * n_rows, "width": max(320, 40 + tile * n_cols)}


# ------------------------------------------------------------------------ RGB overlays
# Maps blended INTO the image's pixels (one go.Image per panel, no second trace): the
# GKD-Den explorer (:mod:`pagkd_lite.course.explore`) draws with these.

# token-label colours (RGB): foreground yellow, background blue, uncertain grey (a red
# foreground tint would vanish on pink WLI mucosa)
LABEL_RGB = {1: (255, 205, 0), 0: (40, 90, 230), -1: (150, 150, 150)}


def _lut(colorscale: str = "Turbo") -> np.ndarray:
    """(256, 3) uint8 colour table of a plotly colour scale."""
    cols = sample_colorscale(colorscale, list(np.linspace(0.0, 1.0, 256)))
    return np.array([unlabel_rgb(c) for c in cols], dtype=np.float64).round().astype(np.uint8)


_TURBO = _lut("Turbo")


def heat_overlay(rgb: np.ndarray, heat: torch.Tensor, alpha: float = 0.55,
                 mode: str = "bilinear", normalise: bool = False) -> np.ndarray:
    """Blend a map ``(h, w)`` with values in ``[0, 1]`` into an ``(H, W, 3)`` uint8 image.

    The map is resized to the image (:func:`upsample_map`, ``mode``), coloured with the Turbo
    scale and mixed: ``(1-alpha) * image + alpha * map``. ``normalise=True`` divides by the
    map's maximum first (attention rows sum to 1).
    """
    h, w = rgb.shape[:2]
    m = heat.detach().float()
    if normalise and float(m.max()) > 0:
        m = m / m.max()
    m = torch.from_numpy(upsample_map(m, (h, w), mode)).clamp(0, 1)
    colours = _TURBO[(m * 255).round().long().numpy()]
    return ((1 - alpha) * rgb + alpha * colours).round().astype(np.uint8)


def label_overlay(rgb: np.ndarray, labels: torch.Tensor, token_hw: tuple[int, int],
                  alpha: float = 0.45) -> np.ndarray:
    """Tint each token cell by its label: foreground yellow, background blue, uncertain grey."""
    h, w = rgb.shape[:2]
    per_pixel = upsample_map(labels.reshape(token_hw).float(), (h, w), "nearest")
    per_pixel = per_pixel.astype(np.int64)
    out = rgb.astype(np.float64)
    for lab, colour in LABEL_RGB.items():
        sel = per_pixel == lab
        out[sel] = (1 - alpha) * out[sel] + alpha * np.array(colour)
    return out.round().astype(np.uint8)


# ---------------------------------------------------------------------------------- images
def image_grid(images: torch.Tensor | np.ndarray | Sequence, titles: Sequence[str] | None = None,
               cols: int | None = None, tile: int = 150) -> go.Figure:
    """A grid of images, one ``go.Image`` trace each.

    Args:
        images: ``(N, 3, H, W)`` batch (or a sequence of ``(3, H, W)`` images).
        titles: ``N`` subplot titles (optional).
        cols: images per row (default: about ``sqrt(N)``).
        tile: pixels per grid cell on screen.

    Returns:
        A figure with ``N`` Image traces in a ``ceil(N / cols) x cols`` grid.
    """
    n = len(images)
    if n == 0:
        raise ValueError("image_grid: no images to show")
    if titles is not None and len(titles) != n:
        raise ValueError(f"image_grid: {n} images but {len(titles)} titles")
    rows, cols = _grid_shape(n, cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(titles) if titles else None,
                        horizontal_spacing=0.01,
                        vertical_spacing=_vspace(rows, 0.06 if titles else 0.01))
    for i in range(n):
        fig.add_trace(go.Image(z=as_hwc(images[i]), name=titles[i] if titles else f"image {i}"),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(margin={"l": 10, "r": 10, "t": 40, "b": 10}, **_size(rows, cols, tile))
    fig.update_annotations(font_size=10)
    return _bare_axes(fig)


def class_examples(wli: ImageSet, nbi: ImageSet, per_class: int = 4,
                   tile: int = 120) -> go.Figure:
    """SynthEndo (or real data) at a glance: one row per (class, modality), ``per_class``
    images each, in the order of the sets (rows: class 0 WLI, class 0 NBI, class 1 WLI, ...).

    Args:
        wli, nbi: ImageSets of the two modalities with the same ``class_names``.
        per_class: images per row (fewer where a class has fewer images).

    Returns:
        A figure with one Image trace per image shown (at most ``2 * K * per_class``).
    """
    if wli.class_names != nbi.class_names:
        raise ValueError(f"class_examples: label spaces differ: WLI {wli.class_names}, "
                         f"NBI {nbi.class_names}")
    k = wli.num_classes
    rows = [(c, s) for c in range(k) for s in (wli, nbi)]
    fig = make_subplots(rows=2 * k, cols=per_class, horizontal_spacing=0.01,
                        vertical_spacing=_vspace(2 * k, 0.01),
                        row_titles=[f"{wli.class_names[c]}<br>{s.modality}" for c, s in rows])
    for r, (c, s) in enumerate(rows):
        idx = (s.labels == c).nonzero().flatten()[:per_class].tolist()
        for j, i in enumerate(idx):
            fig.add_trace(go.Image(z=as_hwc(s.images[i]),
                                   name=f"{s.modality} {s.class_names[c]} {s.lesion_ids[i]}"),
                          row=r + 1, col=j + 1)
    fig.update_layout(margin={"l": 10, "r": 110, "t": 10, "b": 10},
                      **_size(2 * k, per_class, tile))
    fig.update_annotations(font_size=11)
    return _bare_axes(fig)


def group_explorer(sets: Mapping[str, ImageSet], sampler_step: GroupStep, class_index: int,
                   wli_key: str = "wli_train", nbi_key: str = "nbi_train",
                   tile: int = 130) -> go.Figure:
    """The two groups of one class in one sampler step: ``G_c^W`` (top row), ``G_c^N`` (bottom).

    Each image is titled with its lesion and patient id, so one can see that the two groups
    share a class and nothing else (no lesion, no patient, no position-by-position pairing).

    Args:
        sets: ImageSets by split name; ``sets[wli_key]`` and ``sets[nbi_key]`` are the
            training sets the step indexes.
        sampler_step: a :class:`~pagkd_lite.data.sampler.GroupStep` (``wli``, ``nbi``, ``labels``).
        class_index: the class ``c``.

    Returns:
        A ``2 x L`` figure, ``L`` = largest group size; one Image trace per image
        (``|G_c^W| + |G_c^N|`` traces).
    """
    wli, nbi = sets[wli_key], sets[nbi_key]
    if not 0 <= class_index < wli.num_classes:
        raise ValueError(f"group_explorer: class_index {class_index} outside "
                         f"[0, {wli.num_classes})")
    in_class = sampler_step.labels == class_index
    groups = [(wli, sampler_step.wli[in_class].tolist()),
              (nbi, sampler_step.nbi[in_class].tolist())]
    width = max(1, max(len(g) for _, g in groups))
    titles = []
    for s, idx in groups:
        titles += [f"{s.lesion_ids[i]}<br>{s.patient_ids[i]}" for i in idx]
        titles += [""] * (width - len(idx))
    name = wli.class_names[class_index]
    fig = make_subplots(rows=2, cols=width, subplot_titles=titles, horizontal_spacing=0.01,
                        vertical_spacing=0.12,
                        row_titles=[f"G<sub>{name}</sub><sup>WLI</sup>",
                                    f"G<sub>{name}</sub><sup>NBI</sup>"])
    for r, (s, idx) in enumerate(groups):
        for j, i in enumerate(idx):
            fig.add_trace(go.Image(z=as_hwc(s.images[i]), name=f"{s.modality} #{i}"),
                          row=r + 1, col=j + 1)
    fig.update_layout(title=f"class {name!r}: {len(groups[0][1])} WLI and "
                            f"{len(groups[1][1])} NBI images, no pairing",
                      margin={"l": 10, "r": 70, "t": 70, "b": 10}, **_size(2, width, tile))
    fig.update_annotations(font_size=9)
    return _bare_axes(fig)


def card_table(card: Mapping) -> go.Figure:
    """A data card's front matter (``pagkd_lite.data.cards.load_card``) as a two-column table.

    Nested values (lists, mappings) are shown as compact JSON. One ``go.Table`` trace whose
    rows follow the card's field order.
    """
    def text(v) -> str:
        if isinstance(v, str):
            return v
        return json.dumps(v, ensure_ascii=False, default=str)

    fields = list(card)
    values = [text(card[f]) for f in fields]
    fig = go.Figure(go.Table(
        columnwidth=[1, 4],
        header={"values": ["<b>field</b>", "<b>value</b>"], "align": "left"},
        cells={"values": [fields, values], "align": "left", "height": 24},
    ))
    fig.update_layout(margin={"l": 5, "r": 5, "t": 5, "b": 5},
                      height=min(900, 60 + 40 * len(fields)))
    return fig


# ---------------------------------------------------------------------------------- maps
def cam_overlay(image: torch.Tensor | np.ndarray, cam: torch.Tensor | np.ndarray,
                title: str | None = None, opacity: float = 0.45) -> go.Figure:
    """One image with an activation map drawn over it.

    Args:
        image: ``(3, H, W)``.
        cam: ``(h, w)`` map in [0, 1] (e.g. one row of ``pagkd_lite.method.cam.grad_cam``),
            upsampled bilinearly to ``H x W``.
        opacity: of the map.

    Returns:
        A figure with two traces: the ``go.Image`` and the ``go.Heatmap`` ``(H, W)``.
    """
    img = as_hwc(image)
    fig = go.Figure([go.Image(z=img, name="image"),
                     _map_trace(upsample_map(cam, img.shape[:2]), opacity, True)])
    fig.update_layout(title=title, width=380, height=360,
                      margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
                      yaxis={"scaleanchor": "x"})
    return _bare_axes(fig)


def cam_grid(images: torch.Tensor | np.ndarray | Sequence, cams: torch.Tensor | np.ndarray
             | Sequence, titles: Sequence[str] | None = None, cols: int | None = None,
             opacity: float = 0.45, tile: int = 150) -> go.Figure:
    """Several images, each with its map on top.

    Args:
        images: ``(N, 3, H, W)``.
        cams: ``(N, h, w)`` maps in [0, 1].
        titles: ``N`` titles (optional).

    Returns:
        A grid figure with ``2 N`` traces (Image, Heatmap per image; one colour bar).
    """
    n = len(images)
    if len(cams) != n:
        raise ValueError(f"cam_grid: {n} images but {len(cams)} maps")
    fig = image_grid(images, titles, cols, tile)
    cols = _grid_shape(n, cols)[1]
    for i in range(n):
        size = as_hwc(images[i]).shape[:2]
        fig.add_trace(_map_trace(upsample_map(cams[i], size), opacity, i == 0, f"map {i}"),
                      row=i // cols + 1, col=i % cols + 1)
    return fig


def group_attention(images: torch.Tensor | np.ndarray | Sequence,
                    attn: torch.Tensor | np.ndarray, token_hw: tuple[int, int],
                    query: int | None = None, titles: Sequence[str] | None = None,
                    cols: int | None = None, opacity: float = 0.5) -> go.Figure:
    """Where one query of GKD-Pro looks inside a group: its attention over every image.

    The attention row of a query covers the group's whole token sequence (``L`` images x
    ``h w`` tokens, image by image); it is cut into ``L`` maps ``(h, w)``. Each map is divided
    by the largest weight in the group (one scale for the whole group), so the figure shows
    both where in an image and on which image the query spends its attention.

    Args:
        images: the group's ``L`` images ``(L, 3, H, W)``, in sequence order.
        attn: ``(N_q, L * h * w)`` head-averaged attention weights of ONE group with the
            padding removed (e.g. ``details["attn"][g, :, :L * h * w]`` from
            ``GKDPro.forward(..., return_details=True)``).
        token_hw: ``(h, w)`` of the token grid.
        query: which query ``k``; ``None`` averages over the queries.

    Returns:
        A grid figure with ``2 L`` traces; each image's subplot title gives its share of the
        query's attention.
    """
    a = torch.as_tensor(np.asarray(attn) if not isinstance(attn, torch.Tensor) else attn)
    a = a.detach().cpu().float()
    n_img, (h, w) = len(images), token_hw
    if a.ndim != 2 or a.shape[1] != n_img * h * w:
        raise ValueError(f"group_attention: attn must be (N_q, L*h*w) = (N_q, {n_img * h * w}) "
                         f"for {n_img} images of {h}x{w} tokens, got {tuple(a.shape)}")
    if query is not None and not 0 <= query < a.shape[0]:
        raise ValueError(f"group_attention: query {query} outside [0, {a.shape[0]})")
    row = a.mean(0) if query is None else a[query]
    maps = row.reshape(n_img, h, w)
    share = maps.sum(dim=(1, 2)) / row.sum().clamp_min(1e-12)
    scaled = maps / maps.max().clamp_min(1e-12)
    names = list(titles) if titles is not None else [f"image {i}" for i in range(n_img)]
    if len(names) != n_img:
        raise ValueError(f"group_attention: {n_img} images but {len(names)} titles")
    names = [f"{t}<br>{100 * float(s):.0f}% of attention"
             for t, s in zip(names, share, strict=True)]
    fig = cam_grid(images, scaled, names, cols or n_img, opacity)
    label = "mean over queries" if query is None else f"query {query}"
    fig.update_layout(title=f"GKD-Pro attention, {label}", margin={"t": 80})
    return fig


def query_image_mass(attn: torch.Tensor | np.ndarray, num_images: int,
                     image_labels: Sequence[str] | None = None) -> go.Figure:
    """How each query splits its attention over the images of a group: a ``N_q x L`` heat map.

    Args:
        attn: ``(N_q, L * hw)`` attention of one group, padding removed.
        num_images: ``L``.

    Returns:
        One ``go.Heatmap`` trace, ``z`` of shape ``(N_q, L)``; rows sum to 1.
    """
    a = torch.as_tensor(np.asarray(attn) if not isinstance(attn, torch.Tensor) else attn)
    a = a.detach().cpu().float()
    if a.ndim != 2 or a.shape[1] % num_images:
        raise ValueError(f"query_image_mass: attn (N_q, L*hw) with L={num_images}, "
                         f"got {tuple(a.shape)}")
    mass = a.reshape(a.shape[0], num_images, -1).sum(-1)
    mass = mass / mass.sum(1, keepdim=True).clamp_min(1e-12)
    x = list(image_labels) if image_labels is not None else [f"image {i}" for i in
                                                              range(num_images)]
    fig = go.Figure(go.Heatmap(z=mass.numpy(), x=x, y=[f"q{k}" for k in range(a.shape[0])],
                               colorscale="Viridis", zmin=0,
                               colorbar={"title": "share"}))
    fig.update_layout(xaxis_title="image of the group", yaxis_title="query",
                      yaxis={"autorange": "reversed"}, height=120 + 22 * a.shape[0],
                      width=max(360, 120 + 60 * num_images), margin={"t": 30})
    return fig


def similarity_matrix(sim: torch.Tensor | np.ndarray, labels: Sequence[str],
                      title: str = "s(A, B) / tau between prototype sets") -> go.Figure:
    """A ``G x G`` matrix of prototype-set similarities (``details["sim"]`` of GKD-Pro).

    Returns one ``go.Heatmap`` trace with ``z`` of shape ``(G, G)`` and the values printed.
    """
    s = sim.detach().cpu().float().numpy() if isinstance(sim, torch.Tensor) else np.asarray(sim)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or s.shape[0] != len(labels):
        raise ValueError(f"similarity_matrix: need a square (G, G) matrix and G labels, got "
                         f"{s.shape} and {len(labels)} labels")
    fig = go.Figure(go.Heatmap(z=s, x=list(labels), y=list(labels), colorscale="RdBu",
                               zmid=0, text=np.round(s, 2), texttemplate="%{text}"))
    fig.update_layout(title=title, yaxis={"autorange": "reversed"}, height=420, width=520)
    return fig


# ---------------------------------------------------------------------------------- metrics
def metric_bars(results: Mapping[str, Mapping[str, Estimate]],
                metrics: Sequence[str] = ("auc", "accuracy", "f1")) -> go.Figure:
    """Point estimates with their 95% intervals as error bars: one bar trace per model.

    Args:
        results: ``{model name: {metric: Estimate}}``, e.g. ``evaluate(...).metrics``.
        metrics: which metrics to show (x axis).

    Returns:
        A grouped bar chart with ``len(results)`` traces.
    """
    fig = go.Figure()
    for name, ms in results.items():
        missing = [m for m in metrics if m not in ms]
        if missing:
            raise ValueError(f"metric_bars: {name!r} has no {missing}")
        vals = [ms[m].value for m in metrics]
        fig.add_bar(name=name, x=list(metrics), y=vals,
                    error_y={"type": "data", "symmetric": False,
                             "array": [ms[m].high - ms[m].value for m in metrics],
                             "arrayminus": [ms[m].value - ms[m].low for m in metrics]})
    fig.update_layout(barmode="group", yaxis={"range": [0, 1.05], "title": "value [95% CI]"},
                      height=360, margin={"t": 30})
    return fig


# ------------------------------------------------------------------- showing in JupyterLab
LAB_RENDERER = "pagkd_lab"


class LabRenderer(PlotlyRenderer):
    """plotly's JupyterLab renderer (mime type ``application/vnd.plotly.v1+json``) for figures
    that fill the output area's width: the one place where the kit decides how a notebook
    shows a figure.

    JupyterLab's plotly extension (``jupyterlab-plotly``, in the plotly package) draws a figure
    from its JSON, then stores a PNG snapshot of it in the output (``image/png``), taken at the
    output area's size; a saved notebook opens with those snapshots and draws the live figure
    when the mouse enters one (plotly.py PR 1623). A figure with a fixed ``layout.width``
    is drawn narrower than the output area, so its snapshot is laid out again at the area's
    width: the figure comes back stretched. Here the width is left to the output area
    (``autosize``, plotly's default, and ``config.responsive``: plotly's documented way to
    have a figure follow its container, plotly.com/python/configuration-options), so the
    snapshot is the figure as drawn; the height stays fixed (image panels keep their aspect
    and titles their place). The rendered course (``scripts/build_site.py``) does the same.
    """

    def __init__(self, config: dict | None = None):
        super().__init__(config={"responsive": True, "displaylogo": False, **(config or {})})

    def to_mimebundle(self, fig_dict: dict) -> dict:
        layout = {k: v for k, v in (fig_dict.get("layout") or {}).items() if k != "width"}
        return super().to_mimebundle({**fig_dict, "layout": layout})


def use_lab_renderer() -> bool:
    """Show figures with :class:`LabRenderer` where plotly picked its JupyterLab renderer
    (``plotly_mimetype``: a Jupyter kernel) and ``PLOTLY_RENDERER`` chose nothing; returns
    whether it did. ``pagkd_lite.course`` calls it when imported in a kernel."""
    pio.renderers[LAB_RENDERER] = LabRenderer()
    if os.environ.get("PLOTLY_RENDERER") or pio.renderers.default != "plotly_mimetype":
        return False
    pio.renderers.default = LAB_RENDERER
    return True
