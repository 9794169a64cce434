"""Plain functions behind the GKD-Den explorer of notebook 04 (and their widget).

GKD-Den (docs/method.md) turns one group step into, for every WLI image ``m`` and NBI image ``n``
of the same class, a relation map ``R_mn`` and a relation-guided cross-attention. This module
computes everything for one step once (:func:`den_step`, a :class:`DenStep`) with the library
functions the distiller uses in training, then draws it:

* :func:`cam_figure`: image, Grad-CAM, PAR-refined CAM and token labels, WLI and NBI;
* :func:`token_label_figure`: the tri-state token labels over both images;
* :func:`relation_figure`: the ``hw x hw`` relation map of one pair;
* :func:`token_attention`: where one WLI token attends in the NBI image, and where that
  attention comes back to in the WLI image (the round trip ``A_{m<-n} A_{n<-m}``);
* :func:`attention_explorer`: an ipywidgets front end over :func:`token_attention`.

Every figure function returns a ``plotly.graph_objects.Figure`` and needs no widget front end,
so notebooks and tests call them directly. Images are shown as ``go.Image`` panels (pixel
coordinates, y pointing down); maps are blended into the image as RGB, so no second axis
system is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from ..data.imageset import ImageSet
from ..data.transforms import prepare
from ..method.cam import TokenLabelConfig
from ..method.distiller import StepBatch, TeacherSide
from ..method.gkd_den import GKDDenConfig, relation_attention, relation_maps
from ..models.classifier import eval_mode, input_settings
from .viz import _TURBO, LABEL_RGB, heat_overlay, label_overlay  # noqa: F401 (re-exported)
from .viz import as_hwc as to_rgb

LABEL_NAMES = {1: "foreground", 0: "background", -1: "uncertain"}


@dataclass
class DenStep:
    """What GKD-Den computes for one group step, detached and on the CPU.

    Attributes:
        img_w: ``(B_w, 3, H, W)`` WLI images in ``[0, 1]``; img_n: the NBI images ``(B_n, ...)``.
        y_w, y_n: ``(B_w,)``, ``(B_n,)`` class labels.
        cam_w, cam_n: ``(B, h, w)`` Grad-CAM of the true class (student on WLI, teacher on NBI).
        refined_w, refined_n: the maps the token labels were read from
            (:func:`pagkd_lite.method.cam.cam_token_labels`): ``(B, H/2, W/2)`` PAR-refined CAMs, or
            the raw ``(B, h, w)`` CAMs when ``labels.par_iters == 0``.
        lab_w, lab_n: ``(B, h*w)`` token labels in ``{1, 0, -1}`` (fg, bg, uncertain).
        tokens_w: ``(B_w, h*w, d)`` student tokens; tokens_n: ``(B_n, h*w, d)`` teacher tokens
            through the trainable adapter.
        token_hw: ``(h, w)``.
        cfg: the :class:`GKDDenConfig` (mask, scaling); labels: the
            :class:`~pagkd_lite.method.cam.TokenLabelConfig` (thresholds, PAR).
        class_names: label names.
    """

    img_w: Tensor
    img_n: Tensor
    y_w: Tensor
    y_n: Tensor
    cam_w: Tensor
    cam_n: Tensor
    refined_w: Tensor
    refined_n: Tensor
    lab_w: Tensor
    lab_n: Tensor
    tokens_w: Tensor
    tokens_n: Tensor
    token_hw: tuple[int, int]
    cfg: GKDDenConfig
    labels: TokenLabelConfig
    class_names: list[str]

    def same_group(self, wli_index: int) -> list[int]:
        """Indices of the NBI images of WLI image ``wli_index``'s class (its partners)."""
        return torch.nonzero(self.y_n == self.y_w[wli_index]).flatten().tolist()

    def describe(self, modality: str, index: int) -> str:
        """A short label such as ``'WLI 2 (adenoma)'``."""
        y = (self.y_w if modality == "WLI" else self.y_n)[index]
        return f"{modality} {index} ({self.class_names[int(y)]})"


def den_step(distiller, wli: ImageSet, nbi: ImageSet, wli_idx, nbi_idx,
             device: torch.device | str = "cpu") -> DenStep:
    """Run GKD-Den's front half (CAM -> PAR -> token labels, tokens) on chosen images.

    The distiller's own calls, as in training but in eval mode and without augmentation:
    ``distiller.teacher_forward`` (adapted teacher tokens and teacher Grad-CAM on the NBI
    images) and ``distiller.cam_labels`` (student Grad-CAM, one batched PAR refinement,
    token labels with the distiller's thresholds).

    Args:
        distiller: a distiller with a teacher and an adapter (``pagkd`` and its ablations,
            ``pseudo_pair``, ``paired_oracle``).
        wli, nbi: image sets; wli_idx, nbi_idx: indices (lists or 1-D tensors) into them.
        device: where to compute.

    Returns:
        A :class:`DenStep` (CPU tensors).
    """
    if not isinstance(distiller, TeacherSide):
        raise ValueError(f"den_step: {type(distiller).__name__} has no teacher and adapter; "
                         "use a PaGKD distiller (e.g. method 'pagkd')")
    device = torch.device(device)
    wli_idx = torch.as_tensor(wli_idx, dtype=torch.long)
    nbi_idx = torch.as_tensor(nbi_idx, dtype=torch.long)
    distiller.to(device)
    with eval_mode(distiller):
        norm = input_settings(distiller)[0]
        x_w, img_w = prepare(wli.images[wli_idx], device, norm=norm)
        x_n, img_n = prepare(nbi.images[nbi_idx], device, norm=norm)
        y_w, y_n = wli.labels[wli_idx].to(device), nbi.labels[nbi_idx].to(device)
        batch = StepBatch(x_w=x_w, img_w=img_w, y_w=y_w, x_n=x_n, img_n=img_n, y_n=y_n)
        with torch.enable_grad():
            out = distiller.student(x_w)
            tokens_n, _, cam_n = distiller.teacher_forward(x_n, y_n, want_cam=True)
            parts = distiller.cam_labels(batch, out, cam_n)
    cfg = distiller.den_cfg
    hw = tuple(out.features.shape[-2:])
    cam_w, refined = parts["cam_w"], parts["refined"]
    b = len(wli_idx)

    def cpu(t: Tensor) -> Tensor:
        return t.detach().cpu()

    return DenStep(
        img_w=cpu(img_w), img_n=cpu(img_n), y_w=cpu(y_w), y_n=cpu(y_n),
        cam_w=cpu(cam_w), cam_n=cpu(cam_n), refined_w=cpu(refined[:b]),
        refined_n=cpu(refined[b:]), lab_w=cpu(parts["lab_w"]), lab_n=cpu(parts["lab_n"]),
        tokens_w=cpu(out.tokens), tokens_n=cpu(tokens_n), token_hw=hw, cfg=cfg,
        labels=distiller.label_cfg, class_names=list(wli.class_names),
    )


def pair_attention(step: DenStep, wli_index: int, nbi_index: int) -> dict[str, Tensor]:
    """Relation map and both attention maps of one (WLI m, NBI n) pair.

    Returns:
        ``R (hw_w, hw_n)``; ``attn_w (hw_w, hw_n)``: WLI tokens querying NBI tokens
        (``A_{m<-n}``); ``attn_n (hw_n, hw_w)``: NBI querying WLI with ``R^T``
        (``A_{n<-m}``); ``valid_w (hw_w,)``, ``valid_n (hw_n,)``: rows with something to
        attend to; ``round_trip (hw_w, hw_w) = A_{m<-n} A_{n<-m}``.
    """
    _check_pair(step, wli_index, nbi_index)
    R = relation_maps(step.lab_w[[wli_index]], step.lab_n[[nbi_index]])
    t_w, t_n = step.tokens_w[[wli_index]], step.tokens_n[[nbi_index]]
    _, a_w, v_w = relation_attention(t_w, t_n, R, step.cfg)
    _, a_n, v_n = relation_attention(t_n, t_w, R.transpose(1, 2), step.cfg)
    return {"R": R[0], "attn_w": a_w[0], "attn_n": a_n[0], "valid_w": v_w[0],
            "valid_n": v_n[0], "round_trip": a_w[0] @ a_n[0]}


def _check_pair(step: DenStep, wli_index: int, nbi_index: int) -> None:
    bw, bn = len(step.y_w), len(step.y_n)
    if not (0 <= wli_index < bw and 0 <= nbi_index < bn):
        raise IndexError(f"pair ({wli_index}, {nbi_index}) outside the step: "
                         f"{bw} WLI and {bn} NBI images")
    if int(step.y_w[wli_index]) != int(step.y_n[nbi_index]):
        raise ValueError(f"{step.describe('WLI', wli_index)} and "
                         f"{step.describe('NBI', nbi_index)} are not in the same group: "
                         "GKD-Den only pairs images of the same class")


# ------------------------------------------------------------------------------ drawing
def _token_box(fig: go.Figure, token: int, token_hw: tuple[int, int], size: tuple[int, int],
               row: int, col: int, colour: str = "white") -> None:
    """Outline token ``token`` (row-major on the ``h x w`` grid) on an image panel."""
    th, tw = token_hw
    ch, cw = size[0] / th, size[1] / tw
    r, c = divmod(token, tw)
    fig.add_shape(type="rect", x0=c * cw - 0.5, x1=(c + 1) * cw - 0.5, y0=r * ch - 0.5,
                  y1=(r + 1) * ch - 0.5, line={"color": colour, "width": 3}, row=row, col=col)


TITLE_FONT = 13  # panel titles of the explorer's figures, px


def _image_grid(panels: list[list[np.ndarray]], titles: list[str], height: int,
                title: str = "") -> go.Figure:
    rows, cols = len(panels), len(panels[0])
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles,
                        horizontal_spacing=0.02, vertical_spacing=0.08)
    for r, row in enumerate(panels, start=1):
        for c, img in enumerate(row, start=1):
            fig.add_trace(go.Image(z=img, hoverinfo="skip"), row=r, col=c)
    fig.update_xaxes(showticklabels=False, showgrid=False)
    fig.update_yaxes(showticklabels=False, showgrid=False)
    # panel titles at 13 px (two or three panels share a ~900 px output area in JupyterLab
    # with the file browser open); the title at the top, the panel titles below it
    fig.update_annotations(font_size=TITLE_FONT)
    lines = max((t.count("<br>") + 1 for t in titles), default=1)
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "b": 10,
                                             "t": 40 + round(lines * TITLE_FONT * 1.3)},
                      title={"text": title, "y": 1 - 10 / height, "yref": "container",
                             "yanchor": "top"} if title else None)
    return fig


def cam_figure(step: DenStep, wli_index: int, nbi_index: int) -> go.Figure:
    """2 x 4 panels, WLI (top) and NBI (bottom): image, Grad-CAM, PAR-refined CAM, tokens.

    Grad-CAM lives on the token grid (coarse, blocky once upsampled); PAR spreads it over
    regions of similar colour at half resolution; the token labels are the refined map
    pooled back to the grid and thresholded at ``labels.high`` / ``labels.low``.
    """
    panels, titles = [], []
    for mod, idx, img, cam, ref, lab in (
        ("WLI", wli_index, step.img_w, step.cam_w, step.refined_w, step.lab_w),
        ("NBI", nbi_index, step.img_n, step.cam_n, step.refined_n, step.lab_n),
    ):
        rgb = to_rgb(img[idx])
        panels.append([rgb, heat_overlay(rgb, cam[idx]), heat_overlay(rgb, ref[idx]),
                       label_overlay(rgb, lab[idx], step.token_hw)])
        name = step.describe(mod, idx)
        refined = ("PAR-refined" if step.labels.par_iters
                   else "raw CAM (no PAR: labels.par_iters=0)")
        titles += [name, "Grad-CAM", refined,
                   f"tokens (yellow > {step.labels.high}, blue < {step.labels.low})"]
    return _image_grid(panels, titles, height=520,
                       title="Activation maps: student on WLI, teacher on NBI")


def token_label_figure(step: DenStep, wli_index: int, nbi_index: int) -> go.Figure:
    """The tri-state token labels of a WLI and an NBI image, with their counts."""
    panels, titles = [[]], []
    for mod, idx, img, lab in (("WLI", wli_index, step.img_w, step.lab_w),
                               ("NBI", nbi_index, step.img_n, step.lab_n)):
        panels[0].append(label_overlay(to_rgb(img[idx]), lab[idx], step.token_hw))
        counts = ", ".join(f"{int((lab[idx] == v).sum())} {LABEL_NAMES[v]}" for v in (1, 0, -1))
        titles.append(f"{step.describe(mod, idx)}: {counts}")
    return _image_grid(panels, titles, height=360,
                       title="Token labels: yellow = foreground, blue = background, "
                             "grey = uncertain")


def relation_figure(step: DenStep, wli_index: int, nbi_index: int) -> go.Figure:
    """Heatmap of ``R_mn`` (rows: WLI tokens p, columns: NBI tokens q).

    ``1``: same certain label, ``0``: different certain labels (masked in the attention),
    ``0.5``: either token uncertain (attention allowed, score halved).
    """
    R = pair_attention(step, wli_index, nbi_index)["R"].numpy()
    lw = [LABEL_NAMES[int(v)] for v in step.lab_w[wli_index]]
    ln = [LABEL_NAMES[int(v)] for v in step.lab_n[nbi_index]]
    hover = [[f"WLI token {p} ({lw[p]})<br>NBI token {q} ({ln[q]})<br>R = {R[p, q]:g}"
              for q in range(R.shape[1])] for p in range(R.shape[0])]
    scale = [[0.0, "#222222"], [0.33, "#222222"], [0.34, "#9e9e9e"], [0.66, "#9e9e9e"],
             [0.67, "#f2c12e"], [1.0, "#f2c12e"]]
    fig = go.Figure(go.Heatmap(z=R, zmin=0, zmax=1, colorscale=scale, text=hover,
                               hoverinfo="text",
                               colorbar={"tickvals": [0, 0.5, 1],
                                         "ticktext": ["0 (masked)", "0.5", "1"]}))
    n1, nh, n0 = (int((R == v).sum()) for v in (1.0, 0.5, 0.0))
    fig.update_layout(
        title=f"R for {step.describe('WLI', wli_index)} x {step.describe('NBI', nbi_index)}: "
              f"{n1} ones, {nh} halves, {n0} zeros",
        xaxis_title="NBI token q", yaxis_title="WLI token p", height=460,
        yaxis={"autorange": "reversed", "scaleanchor": "x"},
    )
    return fig


def token_attention(step: DenStep, wli_index: int, nbi_index: int, token: int) -> go.Figure:
    """Where WLI token ``token`` of image ``m`` attends in NBI image ``n``, and back.

    Three panels: (1) the WLI image with its token labels and the chosen token outlined;
    (2) the NBI image with the attention row ``A_{m<-n}[token, :]`` (relation-guided, masked
    where ``R = 0``); (3) the WLI image with the round trip ``(A_{m<-n} A_{n<-m})[token, :]``:
    follow the token to the NBI tokens it reads, then let those NBI tokens read the WLI image
    back. Attention maps are scaled by their maximum for display; the titles give the raw
    maximum. A fully masked token (certain, and every NBI token certain with the other label)
    attends to every NBI token alike with ``masked_rows="uniform"`` (the default, the
    authors'), and nowhere with ``"drop"`` (its attention panels are uniformly dark).
    """
    hw = step.token_hw[0] * step.token_hw[1]
    if not 0 <= token < hw:
        raise IndexError(f"token {token} outside the {step.token_hw[0]} x {step.token_hw[1]} grid")
    att = pair_attention(step, wli_index, nbi_index)
    row = att["attn_w"][token]
    back = att["round_trip"][token]
    rgb_w, rgb_n = to_rgb(step.img_w[wli_index]), to_rgb(step.img_n[nbi_index])
    lab = LABEL_NAMES[int(step.lab_w[wli_index, token])]
    panels = [[label_overlay(rgb_w, step.lab_w[wli_index], step.token_hw),
               heat_overlay(rgb_n, row.reshape(step.token_hw), mode="nearest", normalise=True),
               heat_overlay(rgb_w, back.reshape(step.token_hw), mode="nearest",
                            normalise=True)]]
    masked = ""
    if bool((att["R"][token] == 0).all()):
        masked = (" - fully masked: attends nowhere" if not bool(att["valid_w"][token]) else
                  " - fully masked: attends to every token alike (masked_rows='uniform')")
    # two lines each: three one-line titles run together in a narrow output area
    titles = [f"{step.describe('WLI', wli_index)}<br>token {token} ({lab})",
              f"{step.describe('NBI', nbi_index)}<br>A[m<-n] (max {float(row.max()):.2f})",
              f"back on WLI<br>A[m<-n] A[n<-m] (max {float(back.max()):.2f})"]
    fig = _image_grid(panels, titles, height=380,
                      title=f"Relation-guided attention of one WLI token{masked}")
    size = rgb_w.shape[:2]
    _token_box(fig, token, step.token_hw, size, 1, 1)
    _token_box(fig, token, step.token_hw, size, 1, 3)
    return fig


def attention_explorer(step: DenStep, show: bool = True):
    """ipywidgets front end over :func:`token_attention`.

    A WLI dropdown, an NBI dropdown that only offers the WLI image's group (same class), a
    token slider and an output area. ``explorer.render()`` redraws; the last figure is kept
    in ``explorer.figure`` (tests use ``show=False`` and read it).
    """
    import ipywidgets as widgets
    from IPython.display import display

    hw = step.token_hw[0] * step.token_hw[1]
    wli = widgets.Dropdown(options=[(step.describe("WLI", i), i) for i in range(len(step.y_w))],
                           description="WLI image")
    nbi = widgets.Dropdown(description="NBI image")
    token = widgets.IntSlider(min=0, max=hw - 1, value=hw // 2, description="token")
    out = widgets.Output()
    box = widgets.VBox([widgets.HBox([wli, nbi, token]), out])
    box.figure = None

    busy = {"partners": False}

    def partners(*_):
        """Offer only the WLI image's group; pick its first NBI image."""
        group = step.same_group(wli.value)
        busy["partners"] = True
        nbi.options = [(step.describe("NBI", j), j) for j in group]
        nbi.value = group[0] if group else None
        busy["partners"] = False

    def render(*_):
        if nbi.value is None or busy["partners"]:
            return
        box.figure = token_attention(step, wli.value, nbi.value, token.value)
        if show:
            with out:
                out.clear_output(wait=True)
                display(box.figure)

    def new_wli(*_):
        partners()
        render()

    partners()
    wli.observe(new_wli, names="value")
    nbi.observe(render, names="value")
    token.observe(render, names="value")
    box.render = render
    box.controls = {"wli": wli, "nbi": nbi, "token": token}
    render()
    return box
