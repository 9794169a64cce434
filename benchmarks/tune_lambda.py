"""Choose PaGKD's loss weight on VALIDATION data only (issue: if PaGKD does not beat WLI-only,
look at weights and learning rates chosen on validation data).

For data/training seeds disjoint from the benchmark's (100, 101, 102 by default), trains
``pagkd`` with each candidate value of a config field and reports the best-epoch validation
AUC (wli_val); the test split is never scored. The value with the highest mean wins.

    python benchmarks/tune_lambda.py --field train.lambda_den --values 0.1,0.3,1.0
"""

from __future__ import annotations

import argparse
import statistics
from datetime import date

from pagkd_lite.config import get_preset, override
from pagkd_lite.training.pipeline import make_data, train_student, train_teacher


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--field", default="train.lambda_den")
    ap.add_argument("--values", default="0.1,0.3,1.0")
    ap.add_argument("--seeds", default="100,101,102")
    ap.add_argument("--method", default="pagkd")
    args = ap.parse_args()
    values = args.values.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    val = {v: [] for v in ["wli_only", *values]}
    for seed in seeds:
        cfg = override(get_preset(args.preset), [f"seed={seed}", f"data.seed={seed}"])
        sets = make_data(cfg)
        teacher, _ = train_teacher(cfg, sets, out_dir="runs/tune", progress=False)
        _, res = train_student(cfg, sets, "wli_only", progress=False)
        val["wli_only"].append(res.best_val_auc)
        for v in values:
            c = override(cfg, [f"{args.field}={v}"])
            _, res = train_student(c, sets, args.method, teacher, progress=False)
            val[v].append(res.best_val_auc)
            print(f"seed {seed} {args.field}={v}: val AUC {res.best_val_auc:.3f}", flush=True)
    print(f"# {args.method}, {args.field}, preset {args.preset}, seeds {seeds}, {date.today()}")
    print("| setting | val AUC per seed | mean |")
    print("|---|---|---|")
    for k, vs in val.items():
        name = k if k == "wli_only" else f"{args.field}={k}"
        print(f"| {name} | {', '.join(f'{x:.3f}' for x in vs)} | {statistics.mean(vs):.3f} |")
    best = max(values, key=lambda v: statistics.mean(val[v]))
    print(f"best_on_validation={args.field}={best}")


if __name__ == "__main__":
    main()
