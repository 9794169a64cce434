"""Static fallbacks for the notebooks' widgets: one plotly figure with a dropdown.

A widget needs a live kernel; a rendered page (``make site``) has none. ``choices_figure``
calls the widget's own plotting function once per choice and stacks the resulting figures
in one figure whose dropdown shows one at a time (plotly's ``updatemenus``: the buttons
switch trace visibility and the layout items that differ, all in the browser).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import plotly.graph_objects as go

# layout items that differ between the figures of a widget and must switch with the choice
_SWITCHED = ("title", "annotations", "images", "shapes")


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
        dropdown over the choices.
    """
    if not choices:
        raise ValueError("choices_figure: no choices given; pass at least one dict of "
                         "keyword arguments for the plotting function")
    label = label or (lambda c: ", ".join(f"{k}={v}" for k, v in c.items()))
    figs = [make(**c) for c in choices]
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
    out.update_layout(updatemenus=[{"buttons": buttons, "direction": "down", "x": 0,
                                    "xanchor": "left", "y": 1.12, "yanchor": "bottom"}],
                      margin={"t": 110})
    return out
