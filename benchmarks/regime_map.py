"""The regime map and the premise check, from the rows of one or more bench CSV files.

The regime map is ``pagkd-lite bench`` over a grid (two ``--sweep`` fields) on VALIDATION
seeds. On two cores it was run as several processes, one CSV each (one WLI budget, or one
token grid, per process); this script merges them (``merge_bench.merge``: a later part's row
replaces an earlier one with the same method, seed and cell, and is listed) and writes,
beside ``--out``:

- ``<out>.csv``  every row;
- ``<out>.md``   the per-cell tables, then the premise check (which cell's true-pair oracle
                 gains most clearly over wli_only: the criterion of ``bench.premise_check``);
- ``<out>.html`` the plotly heat maps; ``<out>.svg`` the same for the README.

    python benchmarks/regime_map.py benchmarks/results/regime_map_*.csv \\
        --out benchmarks/results/regime_map
"""

from __future__ import annotations

import argparse
from pathlib import Path

from merge_bench import merge, write_csv  # same folder: run as benchmarks/regime_map.py

from pagkd_lite.bench import premise_check, read_rows, write_outputs

ROWS, COLS = "data.n_wli_train", "model.feature_index"
METHODS = ["paired_hint", "paired_oracle", "oracle_masks", "pagkd", "logit_kd"]


def premise_table(rows: list[dict]) -> str:
    """Markdown of :func:`pagkd_lite.bench.premise_check`, best cell first."""
    out = ["| WLI budget | feature stage | best pair oracle | gain over wli_only [95% CI] | "
           "seeds | valid testbed |", "|---|---|---|---|---|---|"]
    for r in premise_check(rows, [ROWS, COLS]):
        out.append(f"| {r[ROWS]} | {r[COLS]} | {r['oracle']} | {r['gain']:+.3f} "
                   f"[{r['low']:+.3f}, {r['high']:+.3f}] | {r['seeds']} | "
                   f"{'yes' if r['valid'] else 'no'} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="+", type=Path, help="bench CSV files of the grid")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/regime_map"))
    args = ap.parse_args()
    rows, replaced = merge([read_rows(p) for p in args.parts])
    if not rows:
        raise SystemExit("no rows in " + ", ".join(map(str, args.parts)))
    for old, new in replaced:
        print(f"replaced: {old['method']} seed {old['seed']} AUC {old['auc']} -> {new['auc']}")
    csv_path = args.out.with_suffix(".csv")
    write_csv(rows, csv_path)
    md = write_outputs(rows, csv_path, [ROWS, COLS], methods=METHODS)
    premise = premise_table(rows)
    md.write_text(md.read_text() + "\n\n## Premise check (validation seeds)\n\n" + premise + "\n")
    print(premise)
    print(f"\nwritten: {csv_path}, {md}, {csv_path.with_suffix('.html')}, "
          f"{csv_path.with_suffix('.svg')}")


if __name__ == "__main__":
    main()
