"""Static fallbacks for the notebooks' widgets: one plotly figure with a dropdown.

A widget needs a live kernel; a rendered page (``make site``) has none. ``choices_figure``
calls the widget's own plotting function once per choice and stacks the resulting figures
in one figure whose dropdown shows one at a time (plotly's ``updatemenus``: the buttons
switch trace visibility and the layout items that differ, all in the browser).

The top margin is laid out in pixels, from the top down: the title, the dropdown, the
subplot titles, then the plot. Plotly places a dropdown in fractions of the plot's height,
so a fixed fraction lands on the title in some figures and not in others; here the
fraction is computed from the figure's height, which the figures fix (their width follows
the page or JupyterLab's output area and does not move anything vertically).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import plotly.graph_objects as go

# layout items that differ between the figures of a widget and must switch with the choice
_SWITCHED = ("title", "annotations", "images", "shapes")
# pixels: above the title, between the rows of the top margin, the dropdown's closed height
_PAD, _GAP, _MENU = 10, 8, 34
# plotly.js defaults: figure height, top and bottom margins, title and annotation font sizes
_HEIGHT, _TOP, _BOTTOM, _TITLE_FONT, _TEXT_FONT = 450, 100, 80, 17, 12
_LINE = 1.3  # a text line's height, in font sizes


def _lines(text: str | None) -> int:
    return text.count("<br>") + 1 if text else 0


def top_margin(figs: Sequence[go.Figure]) -> dict:
    """Where the title, the dropdown and the subplot titles of ``figs`` go (one layout for all
    of them: the dropdown switches between them).

    Returns ``{"t": top margin px, "title_y": title top (container fraction), "menu_px":
    dropdown top (px from the figure's top), "height": figure height px}``; the height grows
    by what the margin grows, so the plot keeps its size.
    """
    lay = figs[0].layout
    title_px = max(_lines(f.layout.title.text) * (f.layout.title.font.size or _TITLE_FONT)
                   for f in figs) * _LINE
    # subplot titles of the top row sit on the plot's top edge (paper y = 1, anchored below)
    top_notes = [a for f in figs for a in (f.layout.annotations or ())
                 if a.yref in (None, "paper") and (a.y or 0) >= 0.99 and a.yanchor == "bottom"]
    notes_px = max((_lines(a.text) * (a.font.size or _TEXT_FONT) * _LINE for a in top_notes),
                   default=0.0)
    menu_px = _PAD + (title_px + _GAP if title_px else 0)
    t = round(menu_px + _MENU + _GAP + notes_px + (4 if notes_px else 0))
    old_t = lay.margin.t if lay.margin.t is not None else _TOP
    height = (lay.height or _HEIGHT) + max(0, t - old_t)
    return {"t": t, "title_y": 1 - _PAD / height, "menu_px": menu_px, "height": height}


def choices_figure(make: Callable[..., go.Figure], choices: Sequence[dict],
                   label: Callable[[dict], str] | None = None) -> go.Figure:
    """One figure holding ``make(**c)`` for every ``c`` in ``choices``, with a dropdown.

    Args:
        make: the widget's plotting function; returns a ``go.Figure``.
        choices: keyword arguments for each state (at least one; keep it small: every
            state's traces are in the page).
        label: the dropdown text of a choice (default ``"k=v, ..."``).

    Returns:
        The first choice's figure with every other choice's traces added (hidden) and a
        dropdown over the choices, between the title and the plot (:func:`top_margin`).
    """
    if not choices:
        raise ValueError("choices_figure: no choices given; pass at least one dict of "
                         "keyword arguments for the plotting function")
    label = label or (lambda c: ", ".join(f"{k}={v}" for k, v in c.items()))
    figs = [make(**c) for c in choices]
    top = top_margin(figs)
    place = {"y": top["title_y"], "yref": "container", "yanchor": "top"}
    for fig in figs:  # each button sets its figure's title: it must carry the placement
        if fig.layout.title.text:
            fig.layout.title.update(place)
    out = go.Figure(layout=figs[0].layout)
    spans = []
    for fig in figs:
        start = len(out.data)
        out.add_traces(list(fig.data))
        spans.append(range(start, len(out.data)))
    n = len(out.data)
    buttons = []
    for c, fig, span in zip(choices, figs, spans, strict=True):
        visible = [i in span for i in range(n)]
        layout = {k: fig.layout[k] for k in _SWITCHED}
        buttons.append({"label": label(c), "method": "update", "args": [{"visible": visible},
                                                                        layout]})
    for i, trace in enumerate(out.data):
        trace.visible = i in spans[0]
    bottom = out.layout.margin.b if out.layout.margin.b is not None else _BOTTOM
    plot_px = top["height"] - top["t"] - bottom
    out.update_layout(updatemenus=[{"buttons": buttons, "direction": "down", "x": 0,
                                    "xanchor": "left", "yanchor": "top",
                                    "y": 1 + (top["t"] - top["menu_px"]) / plot_px}],
                      margin={"t": top["t"]}, height=top["height"])
    return out
