"""The regime map and the premise check, from the rows of one or more bench CSV files.

The regime map is ``pagkd-lite bench`` over a grid (two ``--sweep`` fields) on VALIDATION
seeds. On two cores it was run as several processes, one CSV each (one WLI budget, or one
token grid, per process); this script merges them (``merge_bench.merge``: a later part's row
replaces an earlier one with the same method, seed and cell, and is listed) and writes,
beside ``--out``:

- ``<out>.csv``  every row;
- ``<out>.md``   the per-cell tables, then the premise check (which cell's true-pair oracle
                 gains most clearly over wli_only: the criterion of ``bench.premise_check``);
- ``<out>.html`` the plotly heat maps; ``<out>.svg`` the same for docs/results.md.

A third, optional axis is ``model.init``, how teacher and student start (``scratch``, or
``ssl``: from the SimCLR backbone of the data's unlabelled training images,
``pagkd-lite pretrain``). Run its parts with ``--sweep model.init=ssl`` (rows without the
column are ``scratch``: every result from before the axis existed). ``--init`` picks the
values to map, default ``scratch`` only, which reads and writes exactly what it did before
the axis. Every other value gets its own files, ``<out>_<init>.*``, and its ``.md`` ends
with the seed-paired AUC change of every method from ``scratch`` to that start, per cell.

    python benchmarks/regime_map.py benchmarks/studies/2026-12-01-regime-map/regime_map_*.csv \\
        --out benchmarks/studies/2026-12-01-regime-map/regime_map
    python benchmarks/regime_map.py benchmarks/studies/2026-12-01-regime-map/regime_map_*.csv \\
        --init scratch ssl --out benchmarks/studies/2026-12-01-regime-map/regime_map
"""

from __future__ import annotations

import argparse
from pathlib import Path

from merge_bench import merge_files, write_csv  # same folder: run as benchmarks/regime_map.py

from pagkd_lite.apps.figures import write_outputs
from pagkd_lite.apps.gains import premise_check
from pagkd_lite.models.classifier import INITS
from pagkd_lite.training.metrics import mean_interval

ROWS, COLS = "data.n_wli_train", "model.feature_index"
INIT = "model.init"  # the optional third axis; a row without it is "scratch"
METHODS = ["paired_hint", "paired_oracle", "oracle_masks", "pagkd", "logit_kd"]


def with_init(rows: list[dict]) -> list[dict]:
    """Every row with its ``model.init`` (``scratch`` where the column is missing or empty),
    so that a scratch row from before the axis and one from a ``--sweep model.init=scratch``
    part are the same row for ``merge``."""
    return [{**r, INIT: r.get(INIT) or "scratch"} for r in rows]


def init_table(rows: list[dict], init: str, base: str = "scratch") -> str:
    """Markdown: per cell and method, the seed-paired AUC change from ``base`` to ``init``
    (mean and 95% t-interval over the seeds that have both)."""
    out = [f"| WLI budget | feature stage | method | AUC {init} - {base} [95% CI] | seeds |",
           "|---|---|---|---|---|"]
    auc: dict[tuple, dict[str, float]] = {}
    for r in rows:
        auc.setdefault((r[ROWS], r[COLS], r["method"], r[INIT]), {})[r["seed"]] = \
            float(r["auc"])
    for (rv, cv, method, i) in sorted(auc, key=lambda k: (float(k[0]), float(k[1]), k[2])):
        if i != init or (rv, cv, method, base) not in auc:
            continue
        old = auc[(rv, cv, method, base)]
        d = [a - old[seed] for seed, a in auc[(rv, cv, method, init)].items() if seed in old]
        if d:
            e = mean_interval(d)
            out.append(f"| {rv} | {cv} | {method} | {e.signed()} | {len(d)} |")
    return "\n".join(out)


def premise_table(rows: list[dict]) -> str:
    """Markdown of :func:`pagkd_lite.apps.bench.premise_check`, best cell first."""
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
    ap.add_argument("--out", type=Path,
                    default=Path("benchmarks/studies/2026-12-01-regime-map/regime_map"))
    ap.add_argument("--init", nargs="+", default=["scratch"], choices=INITS,
                    help="model.init values to map (default: scratch only); each value but "
                         "scratch writes <out>_<init>.* with its change from scratch")
    args = ap.parse_args()
    rows = merge_files(args.parts, with_init)
    for init in args.init:
        # one map per start, in the columns it had before the axis existed
        part = [{k: v for k, v in r.items() if k != INIT} for r in rows if r[INIT] == init]
        if not part:
            raise SystemExit(f"no rows with {INIT}={init} in " + ", ".join(map(str, args.parts)))
        out = args.out if init == "scratch" else args.out.with_name(f"{args.out.name}_{init}")
        csv_path = out.with_suffix(".csv")
        write_csv(part, csv_path)
        md = write_outputs(part, csv_path, [ROWS, COLS], methods=METHODS)
        premise = premise_table(part)
        text = md.read_text() + "\n\n## Premise check (validation seeds)\n\n" + premise + "\n"
        if init != "scratch":
            text += (f"\n\n## {INIT}={init} against scratch (seed-paired AUC change)\n\n"
                     + init_table(rows, init) + "\n")
        md.write_text(text)
        print(f"{INIT}={init}:\n{premise}" if len(args.init) > 1 else premise)
        print(f"\nwritten: {csv_path}, {md}, {csv_path.with_suffix('.html')}, "
              f"{csv_path.with_suffix('.svg')}")


if __name__ == "__main__":
    main()
