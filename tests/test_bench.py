"""A seconds-long bench so that the command cannot rot; numbers are not checked here."""

import csv
from pathlib import Path

import pytest

from pagkd_lite.apps.cli import main
from pagkd_lite.apps.figures import summarize


def test_bench_smoke(tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["bench", "--preset", "smoke", "--seeds", "2", "--quiet", "--out", str(out),
            "--methods", "wli_only", "pagkd", "paired_oracle", "--set", "train.epochs=1",
            "--set", "teacher.epochs=1"]
    assert main(args) == 0
    rows = list(csv.DictReader((out / "synthendo_bench.csv").open()))
    assert {(r["method"], r["seed"]) for r in rows} == {
        (m, s) for m in ("teacher_nbi", "wli_only", "pagkd", "paired_oracle") for s in "01"}
    assert set(rows[0]) >= {"method", "seed", "auc", "accuracy", "f1", "sensitivity",
                            "specificity", "train_seconds"}
    # what each row ran on (pagkd_lite.training.runinfo)
    assert rows[0]["deterministic_algorithms"] in ("False", "True")
    assert rows[0]["threads"].isdigit() and rows[0]["torch"] and rows[0]["device"]
    assert "| pagkd | 2 |" in (out / "synthendo_bench.md").read_text()
    # rerun: nothing recomputed, rows not duplicated
    assert main(args) == 0
    assert len(list(csv.DictReader((out / "synthendo_bench.csv").open()))) == len(rows)


def test_summary_paired_difference():
    rows = [{"method": m, "seed": str(s), "auc": str(a), "accuracy": "0.5", "f1": "0.5",
             "train_seconds": "1"}
            for m, vals in (("wli_only", (0.60, 0.62, 0.64)), ("pagkd", (0.70, 0.71, 0.75)))
            for s, a in enumerate(vals)]
    table = summarize(rows)
    # differences 0.10, 0.09, 0.11: mean +0.100, interval excludes zero
    assert "+0.100" in table and "excludes 0" in table and "not shown" not in table
    noisy = [dict(r, auc=str(float(r["auc"]) + (0.2 if r["seed"] == "0" and
                                                 r["method"] == "wli_only" else 0)))
             for r in rows]  # differences -0.10, 0.09, 0.11: the interval includes zero
    assert "(not shown)" in summarize(noisy)


def test_grid_smoke_writes_every_cell_and_a_regime_map(tmp_path):
    from pagkd_lite.apps.bench import parse_grid
    from pagkd_lite.apps.gains import gain_grid

    out = tmp_path / "grid"
    # the teacher's cache key ignores the WLI budget and the student's training settings,
    # so the four cells share one teacher per seed
    args = ["bench", "--preset", "smoke", "--seeds", "2", "--first-seed", "100", "--quiet",
            "--out", str(out), "--methods", "wli_only", "paired_hint",
            "--set", "train.epochs=1", "--set", "teacher.epochs=1",
            "--sweep", "data.n_wli_train=24,48", "--sweep", "train.lambda_hint=0.5,1"]
    assert main(args) == 0
    rows = list(csv.DictReader((out / "synthendo_sweep.csv").open()))
    cells = {(r["data.n_wli_train"], r["train.lambda_hint"]) for r in rows}
    assert cells == {(n, w) for n in ("24", "48") for w in ("0.5", "1")}
    assert {r["seed"] for r in rows} == {"100", "101"}
    assert len(rows) == 4 * 2 * 3  # cells x seeds x (teacher + 2 methods)
    svg = (out / "synthendo_sweep.svg").read_text()
    assert svg.startswith("<svg") and "paired_hint" in svg
    assert "plotly" in (out / "synthendo_sweep.html").read_text()
    rv, cv, mean, _, _ = gain_grid(rows, "data.n_wli_train", "train.lambda_hint", "paired_hint")
    assert rv == ["24", "48"] and cv == ["0.5", "1"] and mean.shape == (2, 2)
    assert parse_grid(["a=1,2", "b=x"]) == [{"a": "1", "b": "x"}, {"a": "2", "b": "x"}]


def test_gain_grid_is_the_seed_paired_mean():
    from pagkd_lite.apps.gains import gain_grid

    rows = [{"method": m, "seed": str(s), "auc": str(a), "n": n, "g": "4"}
            for n, shift in (("8", 0.05), ("80", -0.02))
            for s in range(3)
            for m, a in (("wli_only", 0.6 + 0.01 * s), ("pagkd", 0.6 + 0.01 * s + shift))]
    rv, cv, mean, low, high = gain_grid(rows, "n", "g", "pagkd")
    assert rv == ["8", "80"] and cv == ["4"]
    assert mean[0, 0] == pytest.approx(0.05) and mean[1, 0] == pytest.approx(-0.02)


def test_premise_check_reads_only_the_references():
    from pagkd_lite.apps.gains import premise_check

    rows = []
    for cell, hint_shift, oracle_shift in (("a", 0.05, 0.0), ("b", 0.01, 0.02)):
        for s in range(3):
            base = 0.6 + 0.02 * s
            for m, a in (("wli_only", base), ("paired_hint", base + hint_shift + 0.001 * s),
                         ("paired_oracle", base + oracle_shift + 0.001 * s),
                         ("pagkd", base + 0.5)):  # pagkd must not influence the choice
                rows.append({"method": m, "seed": str(s), "auc": str(a), "cell": cell})
    out = premise_check(rows, ["cell"])
    assert [r["cell"] for r in out] == ["a", "b"]
    assert out[0]["oracle"] == "paired_hint" and out[0]["valid"]
    assert out[1]["oracle"] == "paired_oracle" and out[0]["gain"] == pytest.approx(0.051)
    rows = [r for r in rows if r["method"] != "pagkd"]
    assert premise_check(rows, ["cell"]) == out


def test_merge_bench_later_parts_replace_rows_and_say_so(tmp_path):
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "merge_bench.py"
    spec = importlib.util.spec_from_file_location("merge_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    a = [{"method": "wli_only", "seed": "0", "auc": "0.6"},
         {"method": "pagkd", "seed": "0", "auc": "0.5"},
         {"method": "pagkd", "seed": "1", "auc": "0.7"}]
    b = [{"method": "pagkd", "seed": "0", "auc": "0.65"}]
    rows, replaced = mod.merge([a, b])
    assert [(r["method"], r["seed"], r["auc"]) for r in rows] == [
        ("wli_only", "0", "0.6"), ("pagkd", "0", "0.65"), ("pagkd", "1", "0.7")]
    assert replaced == [(a[1], b[0])]
    # a sweep field is part of the key: another cell is another row
    c = [{"method": "pagkd", "seed": "0", "auc": "0.9", "data.n_wli_train": "24"}]
    rows, replaced = mod.merge([[{**r, "data.n_wli_train": "72"} for r in a], c])
    assert len(rows) == 4 and not replaced


def test_regime_map_script_merges_parts_and_writes_the_premise(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    cols = ["method", "seed", "auc", "accuracy", "f1", "sensitivity", "specificity",
            "train_seconds", "data.n_wli_train", "model.feature_index"]
    for part, budget in (("a", "24"), ("b", "72")):
        with (tmp_path / f"part_{part}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            for s in range(3):
                for m, a in (("wli_only", 0.6), ("paired_hint", 0.65 if budget == "72" else 0.6),
                             ("paired_oracle", 0.6), ("pagkd", 0.6)):
                    w.writerow([m, s, a + 0.01 * s, 0.5, 0.5, 0.5, 0.5, 1, budget, -2])
    res = subprocess.run([sys.executable, str(root / "benchmarks" / "regime_map.py"),
                          str(tmp_path / "part_a.csv"), str(tmp_path / "part_b.csv"),
                          "--out", str(tmp_path / "map")], capture_output=True, text=True,
                         timeout=300, cwd=root)
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(list(csv.DictReader((tmp_path / "map.csv").open()))) == 2 * 3 * 4
    md = (tmp_path / "map.md").read_text()
    # the 72 cell is the one valid testbed: the hint gains +0.05 in every seed
    assert "| 72 | -2 | paired_hint | +0.050 [+0.050, +0.050] | 3 | yes |" in md
    assert (tmp_path / "map.svg").read_text().startswith("<svg")


def test_regime_map_init_axis_is_opt_in(tmp_path):
    """Rows without ``model.init`` are scratch; ``--init`` defaults to scratch only, so an
    ssl part changes nothing there; ``--init scratch ssl`` adds ``<out>_ssl.*`` with the
    seed-paired change from scratch."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    cols = ["method", "seed", "auc", "accuracy", "f1", "sensitivity", "specificity",
            "train_seconds", "data.n_wli_train", "model.feature_index"]
    for part, init in (("old", None), ("ssl", "ssl")):
        with (tmp_path / f"part_{part}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols + ([] if init is None else ["model.init"]))
            for s in range(3):
                for m, a in (("wli_only", 0.6), ("paired_hint", 0.65)):
                    a += 0.02 if init else 0.0
                    w.writerow([m, s, a + 0.01 * s, 0.5, 0.5, 0.5, 0.5, 1, 72, -2]
                               + ([] if init is None else [init]))
    parts = [str(tmp_path / "part_old.csv"), str(tmp_path / "part_ssl.csv")]

    def run(*extra):
        res = subprocess.run([sys.executable, str(root / "benchmarks" / "regime_map.py"),
                              *parts, *extra], capture_output=True, text=True, timeout=300,
                             cwd=root)
        assert res.returncode == 0, res.stderr[-2000:]

    run("--out", str(tmp_path / "map"))
    rows = list(csv.DictReader((tmp_path / "map.csv").open()))
    assert len(rows) == 6 and "model.init" not in rows[0]
    assert not (tmp_path / "map_ssl.md").exists()
    run("--out", str(tmp_path / "both"), "--init", "scratch", "ssl")
    assert (tmp_path / "both.csv").read_text() == (tmp_path / "map.csv").read_text()
    md = (tmp_path / "both_ssl.md").read_text()
    assert "| 72 | -2 | paired_hint | +0.020 [+0.020, +0.020] | 3 |" in md


def test_a_sweep_over_a_word_writes_its_outputs(tmp_path):
    """A sweep field whose values are words (``model.init=scratch,ssl``) gets the same table,
    figure and SVG as a numeric one; it once failed with 'could not convert string to float'."""
    from pagkd_lite.apps.figures import write_outputs
    from pagkd_lite.apps.gains import sweep_values

    rows = [{"method": m, "seed": str(s), "auc": str(0.6 + gain + 0.01 * s * (m == "pagkd")),
             "accuracy": "0.5", "f1": "0.5", "sensitivity": "0.5", "specificity": "0.7",
             "train_seconds": "1", "model.init": init}
            for init, gain in (("ssl", 0.05), ("scratch", 0.0)) for s in range(3)
            for m in ("wli_only", "pagkd")]
    assert sweep_values(rows, "model.init") == ["scratch", "ssl"]
    assert sweep_values([{"x": v} for v in ("10", "2", "ssl")], "x") == ["2", "10", "ssl"]
    md = write_outputs(rows, tmp_path / "s.csv", ["model.init"])
    assert "**model.init = ssl**" in md.read_text()
    svg = (tmp_path / "s.svg").read_text()
    assert ">scratch</text>" in svg and ">ssl</text>" in svg
