"""Merge the CSV parts of one benchmark into one table, later parts replacing earlier rows.

On two cores the 5-seed benchmark runs as several processes, one CSV each (``pagkd-lite
bench --first-seed S --seeds N --csv PART``). This script joins the parts in the order given:
a row of a later part replaces the row of an earlier part with the same method, seed (and
sweep fields), which is how methods are re-run after a change of the preset (the replaced
rows are listed, so nothing is dropped silently). Writes ``<out>.csv``, ``.md``, ``.html``.

    S=benchmarks/studies/2026-12-01-bench-chosen-setting
    python benchmarks/merge_bench.py $S/synthendo_bench_part_{a,b,c,d,e}.csv \\
        --out $S/synthendo_bench
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from pagkd_lite.apps.bench import read_rows, sweep_fields
from pagkd_lite.apps.figures import summarize, write_outputs


def merge(parts: list[list[dict]]) -> tuple[list[dict], list[tuple[dict, dict]]]:
    """(merged rows in first-seen order, [(replaced row, replacing row), ...])."""
    merged: dict[tuple, dict] = {}
    replaced = []
    for rows in parts:
        for r in rows:
            key = (r["method"], r["seed"], *((k, r[k]) for k in sweep_fields(r)))
            if key in merged:
                replaced.append((merged[key], r))
            merged[key] = r
    return list(merged.values()), replaced


def merge_files(paths: list[Path], prepare=lambda rows: rows) -> list[dict]:
    """The rows of the CSV files ``paths`` (each through ``prepare``), merged by
    :func:`merge`; every replaced row is printed, and no row at all is an error."""
    rows, replaced = merge([prepare(read_rows(p)) for p in paths])
    if not rows:
        raise SystemExit("no rows in " + ", ".join(map(str, paths)))
    for old, new in replaced:
        print(f"replaced: {old['method']} seed {old['seed']} AUC {old['auc']} -> {new['auc']}")
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    """All ``rows`` to ``path``, columns in the first row's order."""
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="+", type=Path)
    ap.add_argument("--out", type=Path,
                    default=Path("benchmarks/studies/2026-12-01-bench-chosen-setting/synthendo_bench"))
    args = ap.parse_args()
    rows = merge_files(args.parts)
    csv_path = args.out.with_suffix(".csv")
    write_csv(rows, csv_path)
    write_outputs(rows, csv_path)
    print(summarize(rows))
    print(f"\nwritten: {csv_path} and its .md / .html ({len(rows)} rows)")


if __name__ == "__main__":
    main()
