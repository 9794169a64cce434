"""The frozen-target study: the label dose-response, the pre-registered rule, the test seeds.

Reads the study folder ``benchmarks/studies/2026-12-07-frozen-target/`` (its README gives
the commands that wrote each CSV) and writes, beside the CSVs:

* ``validation.csv``, ``test.csv``, ``dose_frozen.csv`` and ``dose_default.csv`` (with their
  histories): the parts that ran as separate processes (``validation_part_a.csv``, ...),
  merged;
* ``dose_response.md`` / ``.svg`` / ``_points.csv``: GKD-Den's seed-paired gain over
  ``wli_only`` against the MEASURED token-label accuracy (:mod:`pagkd_lite.apps.dose`), for
  true-mask labels with a share rho flipped (frozen target: rho 0-0.4; default target, i.e.
  ``oracle_masks``: rho 0, 0.2, 0.4), and each pairing-free label source (the student's
  Grad-CAM under each candidate's start) on the same axes;
* ``choice.md``: the amendment's rule (benchmarks/PREREGISTERED.md, 2026-12-07) on validation
  seeds 100-109: each candidate's seed-paired gain over ``wli_only``; the largest lower bound
  wins, within 0.001 the candidate listed first;
* ``test.md``: on test seeds 0-9, the winner and ``pagkd_frozen_target`` against the
  references, and the targets, each MET or MISSED.

    python benchmarks/frozen_target.py
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from select_defaults import TIE
from select_defaults import choose as largest_lower_bound
from select_variant import targets, test_table

from pagkd_lite.apps.bench import read_histories, read_rows
from pagkd_lite.apps.dose import FLIP, dose_figure, dose_point, svg_dose, table, write_points
from pagkd_lite.apps.figures import summarize
from pagkd_lite.apps.gains import paired_gains
from pagkd_lite.config import demo
from pagkd_lite.method.distill import FROZEN_CANDIDATES
from pagkd_lite.training.metrics import mean_interval

STUDY = Path(__file__).parent / "studies" / "2026-12-07-frozen-target"
#: the dose-response sweeps: (CSV stem, method, the name of its line)
SWEEPS = (("dose_frozen", "pagkd_frozen_target", "true masks, frozen target"),
          ("dose_default", "oracle_masks", "true masks, default target"))
#: the pairing-free label sources placed on the dose axes: (method, label), from the
#: candidates' validation runs
SOURCES = (("pagkd_frozen_target", "student CAM (frozen target)"),
           ("pagkd_frozen_warm", "student CAM after the warm start"),
           ("pagkd_frozen_embed", "student CAM with the authors' embed init"))


def merge_parts(study: Path, name: str) -> None:
    """``<name>_part_*.csv`` (and their histories), run as separate processes, into one
    ``<name>.csv`` and ``<name>.history.jsonl`` (rows in part order; a (method, seed, sweep
    cell) that two parts hold is an error: nothing is replaced silently). Nothing to do
    without parts."""
    parts = sorted(study.glob(f"{name}_part_*.csv"))
    if not parts:
        return
    rows = [r for p in parts for r in read_rows(p)]
    # a row is one (method, seed, sweep cell): the sweep's settings are the dotted columns
    keys = [(r["method"], r["seed"], *sorted((k, v) for k, v in r.items() if "." in k))
            for r in rows]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise SystemExit(f"{name}: rows in more than one part: {sorted(dup)}")
    with (study / f"{name}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [(p.with_name(p.stem + ".history.jsonl")) for p in parts]
    (study / f"{name}.history.jsonl").write_text(
        "".join(h.read_text() for h in lines if h.exists()))


def dose_points(study: Path) -> list:
    """Every point of the dose-response that has at least 2 paired seeds, in order."""
    base = read_rows(study / "validation_wli_only.csv")
    warmup = demo().train.warmup_epochs
    points = []
    for stem, method, name in SWEEPS:
        rows = read_rows(study / f"{stem}.csv")
        hist = read_histories(study / f"{stem}.csv")
        for rho in sorted({r[FLIP] for r in rows if r["method"] == method}, key=float):
            p = dose_point(rows, hist, method, name, series=name, cell={FLIP: rho},
                           baseline_rows=base, warmup_epochs=warmup)
            points += [p] if p else []
    cand = read_rows(study / "validation.csv")
    hist = read_histories(study / "validation.csv")
    for method, name in SOURCES:
        p = dose_point(cand, hist, method, name, baseline_rows=base, warmup_epochs=warmup)
        points += [p] if p else []
    return points


def write_dose(study: Path) -> list:
    points = dose_points(study)
    if not points:
        return points
    (study / "dose_response.md").write_text(
        "# The label dose-response (validation seeds 100-109, demo preset)\n\n"
        "Written by `python benchmarks/frozen_target.py` from this folder's CSVs and "
        "histories. Label accuracy: measured on the mechanism probe, the mean over the "
        "epochs with the group losses on of the WLI and NBI token-label accuracies "
        "(`pagkd_lite.apps.dose`). Gain: seed-paired AUC over `wli_only` "
        "(`validation_wli_only.csv`), 95 % t-interval.\n\n" + table(points) + "\n")
    (study / "dose_response.svg").write_text(svg_dose(points))
    dose_figure(points).write_html(study / "dose_response.html", include_plotlyjs="cdn")
    write_points(points, study / "dose_response_points.csv")
    return points


def write_choice(study: Path) -> str | None:
    rows = read_rows(study / "validation.csv") + read_rows(study / "validation_wli_only.csv")
    cands = [(m, paired_gains(rows, m, "wli_only")) for m in FROZEN_CANDIDATES]
    best, lines = largest_lower_bound([c for c in cands if len(c[1]) >= 2])
    lines += [f"| {m} | {len(g)} | (fewer than 2 seeds) |" for m, g in cands if len(g) < 2]
    seeds = sorted({int(r["seed"]) for r in rows if r["method"] in FROZEN_CANDIDATES})
    done = all(len(g) == 10 for _, g in cands)
    control = [*rows, *(r for p in sorted(study.glob("validation_control_*.csv"))
                        for r in read_rows(p))]
    context = []
    for a, b in (("wli_only_warm", "wli_only"), ("pagkd_frozen_warm", "wli_only_warm"),
                 ("pagkd_frozen_warm_logit", "wli_only_warm")):
        g = paired_gains(control, a, b)
        if len(g) >= 2:
            context.append(f"| {a} - {b} | {len(g)} | {mean_interval(g).signed()} |")
    text = "\n".join([
        f"# The frozen-target candidates on validation seeds {seeds} (demo preset)", "",
        "Rule (benchmarks/PREREGISTERED.md, amendment of 2026-12-07, committed before any "
        "candidate ran): the largest lower bound of the seed-paired AUC gain over `wli_only` "
        f"(95 % t-interval); within {TIE} the candidate listed first.", "",
        "| candidate | seeds | gain over wli_only [95% CI] |", "|---|---|---|", *lines, "",
        (f"Chosen: **{best}**." if done else
         f"Not all candidates have 10 seeds yet; leading so far: {best}."), "",
        "Context, not used to choose: the warm start gives the student a second budget of WLI "
        "training; `wli_only_warm` (the same start, cross-entropy alone) separates that from "
        "what the group losses add (`validation_control_*.csv`).", "",
        "| comparison | seeds | AUC gain [95% CI] |", "|---|---|---|", *context, ""])
    (study / "choice.md").write_text(text)
    print(text)
    return best if done else None


def write_test(study: Path, winner: str) -> None:
    rows = read_rows(study / "test.csv")
    if not rows:
        return
    lines = test_table(rows, winner)
    if winner != "pagkd_frozen_target":
        lines = list(dict.fromkeys(lines + test_table(rows, "pagkd_frozen_target")[2:]))
    # the controls at the winner's start (context, never in the rule): cross-entropy alone
    # (in test.csv) and logit_kd alone (test_control_logit_warm.csv, run after the test)
    control = study / "test_control_logit_warm.csv"
    rows_c = rows + (read_rows(control) if control.exists() else [])
    for a, b in ((winner, "wli_only_warm"), ("wli_only_warm", "wli_only"),
                 (winner, "logit_kd_warm"), ("logit_kd_warm", "wli_only_warm"),
                 ("logit_kd_warm", "wli_only")):
        g = paired_gains(rows_c, a, b)
        if len(g) >= 2 and a != b:
            lines.append(f"| {a} - {b} (context) | {len(g)} | {mean_interval(g).signed()} | |")
    seeds = sorted({int(r["seed"]) for r in rows if r["method"] == winner})
    text = "\n".join([
        f"# The winner, `{winner}`, on test seeds (demo preset)", "",
        "Pre-registered (benchmarks/PREREGISTERED.md, amendment of 2026-12-07): the winner, "
        "`pagkd_frozen_target` and the references on test seeds 0-9 at one thread; "
        f"seed-paired AUC gains with 95 % t-intervals. Seeds of the winner: {seeds}.", "",
        *lines, "", *(targets(rows, winner) if len(seeds) == 10 else []),
        "## Every method on the test seeds", "", summarize(rows), ""])
    (study / "test.md").write_text(text)
    print(text)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", type=Path, default=STUDY)
    args = p.parse_args(argv)
    for name in ("validation", "test", "dose_frozen", "dose_default"):
        merge_parts(args.study, name)
    points = write_dose(args.study)
    print(table(points) if points else "no dose-response points yet")
    best = write_choice(args.study)
    if best:
        write_test(args.study, best)


if __name__ == "__main__":
    main()
