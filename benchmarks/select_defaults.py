"""Apply the pre-registered rule of docs/fidelity.md ("Chosen defaults") to the validation runs.

Reads ``validation_defaults*.csv`` of the study ``benchmarks/studies/2026-12-02-pagkd-defaults/``
(seeds 100-104, demo preset), computes each candidate's seed-paired AUC gain over
``wli_only`` of the same architecture with its 95 % interval, and picks the largest lower
bound (within 0.001 the candidate with fewer changes wins). Writes the study's
``validation_defaults_choice.md``::

    python benchmarks/select_defaults.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pagkd_lite.apps.bench import read_rows
from pagkd_lite.apps.gains import paired_gains
from pagkd_lite.training.metrics import mean_interval

RESULTS = Path(__file__).parent / "studies" / "2026-12-02-pagkd-defaults"
TIE = 0.001


def candidates(results: Path) -> list[tuple[str, list[float]]]:
    """``(name, seed-paired gains)`` in order of fewer changes first."""
    main = read_rows(results / "validation_defaults.csv")
    losses = read_rows(results / "validation_defaults_authors_losses.csv")
    head = read_rows(results / "validation_defaults_backbone_head.csv")
    base = [r for r in main if r["method"] == "wli_only"]
    base_head = [{**r, "method": "wli_only_backbone_head"} for r in head
                 if r["method"] == "wli_only"]
    return [
        ("kit", paired_gains(main, "pagkd")),
        ("authors_losses", paired_gains(base + losses, "pagkd")),
        ("authors", paired_gains(main + base_head, "pagkd_authors", "wli_only_backbone_head")),
    ]


def choose(cands: list[tuple[str, list[float]]]) -> tuple[str, list[str]]:
    """The winner by the rule, and one Markdown table row per candidate."""
    rows, best, best_low = [], None, float("-inf")
    for name, gains in cands:
        est = mean_interval(gains)
        rows.append(f"| {name} | {len(gains)} | {est.value:+.3f} "
                    f"[{est.low:+.3f}, {est.high:+.3f}] |")
        if len(gains) >= 2 and est.low > best_low + TIE:
            best, best_low = name, est.low
    return best, rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=RESULTS,
                   help="the study folder: its CSVs in, validation_defaults_choice.md out")
    args = p.parse_args(argv)
    best, rows = choose(candidates(args.results))
    text = "\n".join([
        "# Validation of pagkd's defaults (seeds 100-104, demo preset)", "",
        "Rule (docs/fidelity.md, \"Chosen defaults\", pre-registered): the largest lower bound "
        "of the seed-paired AUC gain over `wli_only` of the same architecture; within "
        f"{TIE} the candidate with fewer changes.", "",
        "| candidate | seeds | gain over wli_only [95% CI] |", "|---|---|---|", *rows, "",
        f"Chosen: **{best}**.", ""])
    (args.results / "validation_defaults_choice.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
