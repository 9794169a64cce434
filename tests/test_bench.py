"""A seconds-long bench so that the command cannot rot; numbers are not checked here."""

import csv

from pagkd_lite.bench import summarize
from pagkd_lite.cli import main


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
    assert "+0.100" in table and "excludes 0" in table
