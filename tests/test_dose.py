"""The label dose-response (:mod:`pagkd_lite.apps.dose`): measured accuracy, paired gain, the
points as data, and their views."""

from __future__ import annotations

import math

import pytest

from pagkd_lite.apps.dose import (
    FLIP,
    DosePoint,
    dose_figure,
    dose_point,
    read_points,
    run_label_accuracy,
    svg_dose,
    table,
    write_points,
)


def _history(acc_w, acc_n, warmup=2, epochs=4):
    return [{"epoch": e, "label_acc_w": acc_w + (0.5 if e < warmup else 0.0),
             "label_acc_n": acc_n} for e in range(epochs)]


def test_run_accuracy_averages_the_epochs_with_the_group_losses_on():
    assert run_label_accuracy(_history(0.6, 0.8), warmup_epochs=2) == (0.6, 0.8)
    assert all(math.isnan(v) for v in run_label_accuracy([{"epoch": 0}], 0))


def test_dose_point_pairs_seeds_with_the_baseline_and_reads_its_own_cell():
    base = [{"method": "wli_only", "seed": str(s), "auc": "0.6"} for s in (1, 2, 3)]
    rows = [{"method": "m", "seed": str(s), "auc": str(0.6 + g), FLIP: rho}
            for rho, gains in (("0", (0.1, 0.2, 0.3)), ("0.2", (0.0, 0.0, 0.3)))
            for s, g in zip((1, 2, 3), gains, strict=True)]
    hist = [{"method": "m", "seed": s, FLIP: "0", "history": _history(1.0, 1.0)}
            for s in (1, 2, 3)]
    hist += [{"method": "m", "seed": s, FLIP: "0.2", "history": _history(0.7, 0.9)}
             for s in (1, 2, 3)]
    p = dose_point(rows, hist, "m", "line", series="line", cell={FLIP: "0"},
                   baseline_rows=base, warmup_epochs=2)
    assert p.gain == pytest.approx(0.2) and p.seeds == 3 and p.rho == 0.0
    assert p.acc == pytest.approx(1.0) and p.low < 0.2 < p.high
    q = dose_point(rows, hist, "m", "line", series="line", cell={FLIP: "0.2"},
                   baseline_rows=base, warmup_epochs=2)
    assert q.gain == pytest.approx(0.1) and q.acc == pytest.approx(0.8)
    assert q.acc_w == pytest.approx(0.7) and q.acc_n == pytest.approx(0.9)
    assert dose_point(rows[:1], hist, "m", "x", cell={FLIP: "0"}, baseline_rows=base) is None


def test_points_round_trip_and_draw(tmp_path):
    pts = [DosePoint("true masks", "true masks", 0.0, 1.0, 1.0, 1.0, 0.13, 0.1, 0.16, 5),
           DosePoint("true masks", "true masks", 0.2, 0.8, 0.8, 0.8, 0.05, 0.0, 0.1, 5),
           DosePoint("student CAM", None, None, 0.7, 0.6, 0.8, 0.02, -0.01, 0.05, 10)]
    write_points(pts, tmp_path / "p.csv")
    assert read_points(tmp_path / "p.csv") == pts
    svg = svg_dose(pts)
    assert svg.startswith("<svg") and "student CAM" in svg and "polygon" in svg
    assert len(dose_figure(pts).data) == 2
    assert "+0.130 [+0.100, +0.160]" in table(pts)
