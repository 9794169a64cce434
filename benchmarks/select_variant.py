"""Apply the pre-registered rule of benchmarks/PREREGISTERED.md to the validation runs.

Reads ``variants_validation.csv`` of the study ``benchmarks/studies/2026-12-02-variants/``
(seeds 100-104, demo preset: ``pagkd`` and the six variants of
:data:`pagkd_lite.method.distill.VARIANTS`), computes each variant's seed-paired AUC gain over
``pagkd`` with its 95 % interval, and names the variant with the largest lower bound (within
0.001 the one listed first). For context (never for the choice) it adds each method's gain
over ``wli_only`` where ``validation_defaults.csv`` (study ``2026-12-02-pagkd-defaults``) has
``wli_only`` on the same seeds. Writes the study's ``variants_choice.md``, and
``variants_test.md`` from its ``variants_test.csv``::

    pagkd-lite bench --preset demo --threads 1 --first-seed 100 --seeds 5 \\
        --methods pagkd pagkd_frozen_target pagkd_centred pagkd_token_cos pagkd_log_prior \\
        pagkd_scheduled pagkd_logit \\
        --csv benchmarks/studies/2026-12-02-variants/variants_validation.csv
    python benchmarks/select_variant.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from select_defaults import TIE
from select_defaults import choose as largest_lower_bound

from pagkd_lite.apps.bench import read_rows
from pagkd_lite.apps.gains import paired_gains
from pagkd_lite.method.distill import VARIANTS
from pagkd_lite.training.metrics import mean_interval

STUDIES = Path(__file__).parent / "studies"
RESULTS = STUDIES / "2026-12-02-variants"
DEFAULTS = STUDIES / "2026-12-02-pagkd-defaults" / "validation_defaults.csv"


def choose(rows: list[dict], baseline: str = "pagkd") -> tuple[str | None, list[str]]:
    """The winner by the rule (the same rule as ``select_defaults.choose``: largest lower
    bound, the earlier candidate within 0.001), and one Markdown row per variant."""
    cands = [(name, paired_gains(rows, name, baseline)) for name in VARIANTS]
    best, lines = largest_lower_bound([c for c in cands if c[1]])
    lines += [f"| {name} | 0 | (not run) |" for name, gains in cands if not gains]
    return best, lines


def context(rows: list[dict], base_rows: list[dict]) -> list[str]:
    """Each method's seed-paired gain over ``wli_only`` (context only)."""
    base = [r for r in base_rows if r["method"] == "wli_only"]
    out = []
    for name in ("pagkd", *VARIANTS):
        gains = paired_gains(rows + base, name, "wli_only")
        if len(gains) >= 2:
            est = mean_interval(gains)
            out.append(f"| {name} | {len(gains)} | {est.signed()} |")
    return out


REFERENCES = ("wli_only", "pagkd", "logit_kd", "paired_hint", "oracle_masks")


def test_table(rows: list[dict], winner: str) -> list[str]:
    """The pre-registered test-seed comparisons: ``winner - reference``, seed-paired, with
    the seeds each line has so far; ``shown`` when the interval excludes 0."""
    lines = ["| comparison | seeds | AUC gain [95% CI] | |", "|---|---|---|---|"]
    for base in REFERENCES:
        for a, b in ((winner, base), (base, "wli_only")):
            if a == b or (b == "wli_only" and a == "wli_only"):
                continue
            gains = paired_gains(rows, a, b)
            if len(gains) < 2:
                lines.append(f"| {a} - {b} | {len(gains)} | (fewer than 2 seeds) | |")
                continue
            est = mean_interval(gains)
            verdict = "shown" if est.low > 0 or est.high < 0 else "not shown"
            lines.append(f"| {a} - {b} | {len(gains)} | {est.signed()} | {verdict} |")
    return list(dict.fromkeys(lines))


PAIR_REFERENCES = ("paired_hint", "oracle_masks")


def targets(rows: list[dict], winner: str) -> list[str]:
    """The issue's targets on the test seeds, each with its number and MET / MISSED (never
    relaxed): winner - wli_only >= +0.03 with the interval above 0; the winner's mean AUC at
    or above the best pair reference's minus 0.01; winner - logit_kd reported."""
    def auc(m):
        vals = [float(r["auc"]) for r in rows if r["method"] == m]
        return sum(vals) / len(vals) if vals else float("nan")

    gain = mean_interval(paired_gains(rows, winner, "wli_only"))
    ok1 = gain.value >= 0.03 and gain.low > 0
    best = max(PAIR_REFERENCES, key=auc)
    ok2 = auc(winner) >= auc(best) - 0.01
    kd = mean_interval(paired_gains(rows, winner, "logit_kd"))
    return ["## Targets (test seeds, pre-registered, never relaxed)", "",
            f"- {winner} - wli_only >= +0.03 with the interval above 0: {gain.signed()}: "
            f"**{'MET' if ok1 else 'MISSED'}**",
            f"- {winner} at or above the best pair reference ({best}, mean AUC "
            f"{auc(best):.3f}) minus 0.01: {auc(winner):.3f}: **{'MET' if ok2 else 'MISSED'}**",
            f"- {winner} - logit_kd (reported, no threshold): {kd.signed()}", ""]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=RESULTS,
                   help="the study folder: its variants_*.csv in, the tables out")
    p.add_argument("--defaults", type=Path, default=DEFAULTS,
                   help="the CSV whose wli_only rows give the context")
    args = p.parse_args(argv)
    rows = read_rows(args.results / "variants_validation.csv")
    best, lines = choose(rows)
    ctx = context(rows, read_rows(args.defaults))
    seeds = sorted({int(r["seed"]) for r in rows})
    text = "\n".join([
        f"# Pre-registered variants on validation seeds {seeds} (demo preset)", "",
        "Rule (benchmarks/PREREGISTERED.md, committed before any variant existed): the largest "
        "lower bound of the seed-paired AUC gain over `pagkd`; within "
        f"{TIE} the variant listed first.", "",
        "| variant | seeds | gain over pagkd [95% CI] |", "|---|---|---|", *lines, "",
        f"Chosen: **{best}**." if best else "No variant has two seeds yet.", "",
        "Context only (not used to choose): gain over `wli_only` on the same seeds "
        "(`wli_only` rows of `validation_defaults.csv`).", "",
        "| method | seeds | gain over wli_only [95% CI] |", "|---|---|---|", *ctx, ""])
    (args.results / "variants_choice.md").write_text(text)
    print(text)
    test_rows = read_rows(args.results / "variants_test.csv")
    if best and test_rows:
        seeds = sorted({int(r["seed"]) for r in test_rows if r["method"] == best})
        test = "\n".join([
            f"# The winner, `{best}`, on test seeds (demo preset)", "",
            "Pre-registered (benchmarks/PREREGISTERED.md): the winner and the references "
            "on test seeds 0-9, seed-paired AUC gains with 95 % intervals. Seeds of the "
            f"winner so far: {seeds}.", "", *test_table(test_rows, best), "",
            *(targets(test_rows, best) if len(seeds) == 10 else [])])
        (args.results / "variants_test.md").write_text(test)
        print(test)


if __name__ == "__main__":
    main()
