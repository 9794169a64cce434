"""Mean of several ``pagkd-lite diagnose --write`` records (one per seed), per row.

    S=benchmarks/studies/<date>-<question>       # the study's folder
    pagkd-lite diagnose --preset demo --seed 100 --write $S/diag_seed100  # ... 101, 102
    python benchmarks/diagnose_summary.py $S/diag_seed10[0-2].json --out $S/diag_mean.md

Each input is the JSON record that ``pagkd-lite diagnose --write FILE`` wrote for one seed
(``FILE.json``; the ``.md`` beside it is only its view). Rows are matched by refinement,
whose CAM and token grid, and every number is averaged over the records
(:func:`pagkd_lite.apps.diagnose.mean_rows`: a NaN, e.g. a precision with no foreground token, is
left out of its mean, and the count of records that had a number is shown). The label table
and the threshold table are kept apart, as in the inputs; the common shares are averaged too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pagkd_lite.apps.diagnose import format_label_table, mean_rows


def read_records(paths: list[Path]) -> list[dict]:
    """The diagnosis records; a Markdown view given by mistake is refused with its JSON name."""
    records = []
    for path in paths:
        if path.suffix != ".json":
            raise SystemExit(f"{path}: give the data file {path.with_suffix('.json')}, not its "
                             "view (diagnose --write writes both)")
        records.append(json.loads(path.read_text()))
    return records


def summary(records: list[dict]) -> str:
    """Markdown: the per-row means of the label and threshold tables, and the common shares."""
    seeds = ", ".join(str(r["seed"]) for r in records)
    shares = {k: [r["common_share"][k] for r in records if k in r["common_share"]]
              for k in records[0]["common_share"]}
    return (f"Mean over {len(records)} diagnose records (seeds {seeds}; methods "
            f"{sorted({r['method'] for r in records})}); a number in brackets counts the "
            "records with a defined value.\n\nToken labels:\n\n"
            + format_label_table(mean_rows([r["labels"] for r in records]))
            + "\n\nThresholds (paper's PAR):\n\n"
            + format_label_table(mean_rows([r["thresholds"] for r in records]))
            + "\n\nShare of each token map that is one repeated vector (mean):\n\n"
            + "".join(f"- {k}: {sum(v) / len(v):.3f}\n" for k, v in shares.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    text = summary(read_records(args.files))
    print(text)
    if args.out:
        args.out.write_text(text)
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
