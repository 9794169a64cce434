"""Static widget fallbacks: one figure, one dropdown entry per choice, one choice visible."""

import plotly.graph_objects as go
import pytest

from pagkd_lite.course.static import choices_figure


def _fig(n: int, title: str = "") -> go.Figure:
    fig = go.Figure([go.Scatter(y=[i, n]) for i in range(n)])
    return fig.update_layout(title=title or f"{n} traces")


def test_dropdown_switches_traces_and_title():
    fig = choices_figure(_fig, [{"n": 1}, {"n": 2}, {"n": 3}])
    assert len(fig.data) == 6
    assert [t.visible for t in fig.data] == [True] + [False] * 5
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["n=1", "n=2", "n=3"]
    assert buttons[1].args[0]["visible"] == [False, True, True, False, False, False]
    assert buttons[2].args[1]["title"].text == "3 traces"


def test_no_choices_is_a_clear_error():
    with pytest.raises(ValueError, match="no choices given"):
        choices_figure(_fig, [])


def _subplots(n: int) -> go.Figure:
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=[f"panel {n}<br>second line", "b"])
    fig.add_scatter(y=[0, n], row=1, col=1)
    return fig.update_layout(title=f"figure {n}", height=300, margin={"t": 40, "b": 10})


def test_dropdown_sits_between_the_title_and_the_subplot_titles():
    """In pixels, whatever the width: title, then the dropdown, then the panel titles (issue 35:
    the dropdown was placed in fractions of the plot's height and covered the title)."""
    fig = choices_figure(_subplots, [{"n": 1}, {"n": 2}])
    height, t, b = fig.layout.height, fig.layout.margin.t, fig.layout.margin.b
    assert height - t - b == 300 - 40 - 10  # the plot keeps its size: the figure grows
    menu = fig.layout.updatemenus[0]
    assert menu.yanchor == "top"
    menu_top = t - (menu.y - 1) * (height - t - b)  # px from the figure's top
    title = fig.layout.title
    assert (title.yref, title.yanchor) == ("container", "top")
    title_bottom = (1 - title.y) * height + 17 * 1.3
    assert menu_top >= title_bottom + 4
    panel_titles_top = t - 2 * 16 * 1.3  # two lines of make_subplots' 16 px
    assert menu_top + 34 <= panel_titles_top
    # every button sets its figure's title with the same placement
    for button in menu.buttons:
        switched = button.args[1]["title"]
        assert (switched.y, switched.yref, switched.yanchor) == (title.y, "container", "top")
    assert menu.buttons[1].args[1]["title"].text == "figure 2"
