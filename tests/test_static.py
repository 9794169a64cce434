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
