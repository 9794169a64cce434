"""Mean of several ``pagkd-lite diagnose --write`` tables (one per seed), per row.

    python benchmarks/diagnose_summary.py benchmarks/results/diagnose_validation_seed10[0-2]_*.md \\
        --out benchmarks/results/diagnose_validation_mean.md

Each input is the Markdown that ``pagkd-lite diagnose --write FILE`` wrote for one seed; the
rows are matched by their first three cells (refinement, whose CAM, grid) and every numeric
cell is averaged over the files (``nan``, e.g. a precision with no foreground token, is left
out of its mean and the count of files that had a number is shown). The label table and the
threshold table are kept apart, as in the inputs.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from pagkd_lite.diagnose import LABEL_TABLE_HEADER as HEADER  # the table diagnose writes


def read_tables(path: Path) -> list[list[list[str]]]:
    """The tables of one diagnose file: a list of tables, each a list of rows of cells."""
    tables, rows = [], None
    for line in path.read_text().splitlines():
        if line.startswith(HEADER):
            rows = []
            tables.append(rows)
        elif rows is not None and line.startswith("|") and not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif not line.startswith("|"):
            rows = None
    return tables


def mean_table(per_file: list[list[list[str]]]) -> str:
    """Markdown of the per-row means of one table over files (rows in the first file's order)."""
    keys = [tuple(r[:3]) for r in per_file[0]]
    values: dict[tuple, list[list[float]]] = {k: [] for k in keys}
    for rows in per_file:
        for r in rows:
            if tuple(r[:3]) in values:
                values[tuple(r[:3])].append([float(c) for c in r[3:]])
    out = [HEADER.replace(" | grid |", " | grid | seeds |"),
           "|---|---|---|---|---|---|---|---|---|---|"]
    for k in keys:
        cols = list(zip(*values[k], strict=True))
        cells = []
        for col in cols:
            nums = [v for v in col if not math.isnan(v)]
            mean = sum(nums) / len(nums) if nums else float("nan")
            cells.append(f"{mean:.3f}" + ("" if len(nums) == len(col) else f" ({len(nums)})"))
        out.append(f"| {' | '.join(k)} | {len(values[k])} | {' | '.join(cells)} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    tables = [read_tables(p) for p in args.files]
    if any(len(t) != len(tables[0]) for t in tables):
        raise SystemExit("the files do not hold the same tables")
    seeds = ", ".join(re.sub(r".*seed(\d+).*", r"\1", p.name) for p in args.files)
    text = (f"Mean over {len(args.files)} diagnose files (seeds {seeds}); a number in "
            "brackets counts the files with a defined value.\n\nToken labels:\n\n"
            + mean_table([t[0] for t in tables]) + "\n\nThresholds (paper's PAR):\n\n"
            + mean_table([t[1] for t in tables]) + "\n")
    print(text)
    if args.out:
        args.out.write_text(text)
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
