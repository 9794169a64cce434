"""The views of benchmark rows (pagkd_lite.apps.figures): valid SVG, no method named in the code."""

import xml.etree.ElementTree as ET

from pagkd_lite.apps.figures import (
    Svg,
    figure,
    summarize,
    svg_gain_plot,
    svg_heatmap,
    write_outputs,
)

NS = "{http://www.w3.org/2000/svg}"


def _rows(baseline="base", methods=("m1", "m2"), field="x", values=("1", "2")):
    """Three seeds per value; method k gains 0.01 * (k + 1) * value over the baseline."""
    rows = []
    for v in values:
        for s in range(3):
            auc = 0.6 + 0.01 * s
            rows.append({"method": baseline, "seed": str(s), "auc": f"{auc}", "accuracy": "0.5",
                         "f1": "0.5", "train_seconds": "1", field: v})
            for k, m in enumerate(methods):
                gain = 0.01 * (k + 1) * float(v) + 0.002 * s
                rows.append({"method": m, "seed": str(s), "auc": f"{auc + gain}",
                             "accuracy": "0.5", "f1": "0.5", "train_seconds": "1", field: v})
    return rows


def test_svg_helper_escapes_text_and_is_valid_xml():
    svg = Svg(100, 50)
    svg.text(10, 10, "a < b & c")
    svg.rect(0, 0, 5, 5, "#ff0000")
    root = ET.fromstring(svg.render())
    assert [t.text for t in root.iter(NS + "text")] == ["a < b & c"]
    assert len(list(root.iter(NS + "rect"))) == 2  # the white page and the rectangle


def test_gain_plot_draws_every_compared_method_against_the_given_baseline():
    rows = _rows()
    root = ET.fromstring(svg_gain_plot(rows, "x", baseline="base"))
    texts = [t.text for t in root.iter(NS + "text")]
    assert "m1" in texts and "m2" in texts and "base" not in texts
    assert any("over base" in t for t in texts)
    assert len(list(root.iter(NS + "polyline"))) == 2  # one line per compared method
    assert svg_gain_plot(rows[:2], "x", baseline="base") == ""  # no value with 2 paired seeds


def test_heatmap_has_one_cell_per_method_and_grid_point():
    rows = [{**r, "y": "a"} for r in _rows()] + [{**r, "y": "b"} for r in _rows()]
    root = ET.fromstring(svg_heatmap(rows, "y", "x", ["m1", "m2"], baseline="base"))
    assert len(list(root.iter(NS + "rect"))) == 1 + 2 * 2 * 2  # page + methods x rows x cols
    texts = [t.text for t in root.iter(NS + "text")]
    # mean gain 0.01 (k + 1) x + 0.002 (the mean of 0.002 s over seeds 0, 1, 2)
    assert "+0.012*" in texts and "+0.042*" in texts  # m1 at x = 1, m2 at x = 2


def test_views_take_the_baseline_and_the_table_names_it(tmp_path):
    rows = _rows()
    table = summarize(rows, baseline="base", by="x")
    assert "AUC - base, seed-paired" in table and "(reference)" in table
    assert [d.name for d in figure(rows, "x", baseline="base").data] == ["m1 - base", "m2 - base"]
    md = write_outputs(rows, tmp_path / "r.csv", "x", baseline="base")
    assert md.read_text().strip() == table.strip()
    assert "m2" in (tmp_path / "r.svg").read_text()
