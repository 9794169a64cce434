"""The setting axis of benchmarks/PREREGISTERED.md: does the demo move to ``model.init=ssl``?

The rule was written before any SSL result: the premise rule alone, i.e. the setting whose
best pair reference (``paired_hint``) has the largest LOWER bound of its seed-paired AUC gain
over ``wli_only`` on validation seeds 100-104 (``pagkd_lite.apps.bench.premise_check``); a
variant's result never enters the choice. Reads the scratch rows of the demo preset
(``validation_defaults.csv``, ``variants_validation.csv``) and the ``model.init=ssl`` rows
(``init_ssl.csv``), and writes ``setting_choice.md`` (both in the study
``benchmarks/studies/2026-12-02-ssl-start/``): the premise check per start, the choice, then
(context only) each method's gain over ``wli_only`` per start and its seed-paired change from
scratch to ssl::

    pagkd-lite bench --preset demo --threads 1 --first-seed 100 --seeds 3 \\
        --methods wli_only paired_hint --sweep model.init=ssl \\
        --csv benchmarks/studies/2026-12-02-ssl-start/init_ssl.csv   # one job per (seed, method)
    python benchmarks/select_setting.py

The committed ``init_ssl.csv`` has seeds 100-102 (the regime map's validation seeds); 103 and
104 were not run for lack of time, so the scratch row is also given on those three seeds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pagkd_lite.apps.bench import read_rows
from pagkd_lite.apps.gains import paired_gains, premise_check
from pagkd_lite.training.metrics import Estimate, mean_interval

STUDIES = Path(__file__).parent / "studies"
RESULTS = STUDIES / "2026-12-02-ssl-start"
DEFAULTS = STUDIES / "2026-12-02-pagkd-defaults" / "validation_defaults.csv"
VARIANTS = STUDIES / "2026-12-02-variants" / "variants_validation.csv"
INIT = "model.init"
VALIDATION = {str(s) for s in range(100, 105)}


def tagged(rows: list[dict], init: str) -> list[dict]:
    """Validation-seed rows with their start (rows without the column are ``scratch``)."""
    return [{**r, INIT: r.get(INIT) or init} for r in rows if r["seed"] in VALIDATION]


def gain(cell: dict) -> str:
    """A premise-check cell's gain, signed, with its interval."""
    return Estimate(cell["gain"], cell["low"], cell["high"]).signed()


def report(scratch: list[dict], ssl: list[dict]) -> str:
    rows = tagged(scratch, "scratch") + tagged(ssl, "ssl")
    cells = premise_check(rows, [INIT])
    out = ["# The setting axis: scratch or a self-supervised start (validation seeds 100-104)",
           "", "Rule (benchmarks/PREREGISTERED.md, 'The setting axis'): the start whose best "
           "pair reference has the largest lower bound of its seed-paired gain over "
           "`wli_only`. Only the references' rows are read for the choice.", "",
           "| start | best pair reference | gain over wli_only [95% CI] | seeds | valid testbed |",
           "|---|---|---|---|---|"]
    for c in cells:
        out.append(f"| {c[INIT]} | {c['oracle']} | {gain(c)} | {c['seeds']} | "
                   f"{'yes' if c['valid'] else 'no'} |")
    ssl_seeds = {r["seed"] for r in rows if r[INIT] == "ssl"}
    same = premise_check([r for r in rows if r[INIT] == "scratch" and r["seed"] in ssl_seeds],
                         [INIT])
    for c in same:  # the same comparison on only the seeds both starts have (context)
        out.append(f"| scratch, the ssl seeds only | {c['oracle']} | {gain(c)} | {c['seeds']} "
                   "| (context) |")
    chosen = cells[0][INIT] if cells else None
    out += ["", f"Chosen: **{chosen}**" if chosen else "No start has two seeds of both rows.",
            "", "Context, not used to choose: each method's seed-paired gain over `wli_only` "
            "per start, and its change from scratch to ssl (same seeds).", "",
            "| method | start | seeds | AUC gain over wli_only [95% CI] |", "|---|---|---|---|"]
    methods = sorted({r["method"] for r in rows} - {"wli_only", "teacher_nbi"})
    for m in methods:
        for init in ("scratch", "ssl"):
            sub = [r for r in rows if r[INIT] == init]
            gains = paired_gains(sub, m, "wli_only")
            if len(gains) >= 2:
                out.append(f"| {m} | {init} | {len(gains)} | {mean_interval(gains).signed()} |")
    out += ["", "| method | seeds | AUC ssl - scratch [95% CI] |", "|---|---|---|"]
    for m in ["wli_only", "teacher_nbi", *methods]:
        a = {r["seed"]: float(r["auc"]) for r in rows if r["method"] == m and r[INIT] == "ssl"}
        b = {r["seed"]: float(r["auc"]) for r in rows
             if r["method"] == m and r[INIT] == "scratch"}
        both = sorted(set(a) & set(b))
        if len(both) >= 2:
            change = mean_interval([a[s] - b[s] for s in both])
            out.append(f"| {m} | {len(both)} | {change.signed()} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=RESULTS,
                   help="the study folder: init_ssl.csv in, setting_choice.md out")
    p.add_argument("--defaults", type=Path, default=DEFAULTS, help="scratch references")
    p.add_argument("--variants", type=Path, default=VARIANTS, help="scratch pagkd, variants")
    args = p.parse_args(argv)
    # the references from validation_defaults.csv (its `pagkd` rows are an older default),
    # the current `pagkd`, the variants and the teacher from variants_validation.csv
    scratch = ([r for r in read_rows(args.defaults)
                if r["method"] in ("wli_only", "paired_hint")]
               + read_rows(args.variants))
    ssl = read_rows(args.results / "init_ssl.csv")
    text = report(scratch, ssl)
    (args.results / "setting_choice.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
