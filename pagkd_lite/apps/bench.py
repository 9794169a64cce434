"""``pagkd-lite bench``: does pairing-free distillation pay on SynthEndo, and how close does
it come to distilling from true pairs?

For each seed (data AND training seed), the NBI teacher is trained once (cached), then every
method trains a WLI student from the same initialisation and the same WLI batches, is
selected on wli_val and scored on wli_test. Rows are appended to a CSV as they finish, so an
interrupted bench resumes where it stopped. The summary gives each method's mean over seeds
with a t-interval, and the seed-paired difference to ``wli_only`` with its interval
(:mod:`pagkd_lite.apps.gains` computes it, :mod:`pagkd_lite.apps.figures` draws it).

``--sweep FIELD=v1,v2,...`` repeats the bench for each value of a config field (e.g.
``data.wli_contrast``) and adds a column with the value.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from ..config import Config, override
from ..training.runinfo import CSV_FIELDS, csv_fields, run_info
from .figures import figure, heatmap_figure, summarize, write_outputs
from .gains import PAIR_ORACLES, premise_check

#: the views (:mod:`pagkd_lite.apps.figures`) and the premise check
#: (:mod:`pagkd_lite.apps.gains`) are also reachable from here, by the names the course and
#: the CLI use
__all__ = [
    "BENCH_METHODS", "COLUMNS", "PAIR_ORACLES", "figure", "heatmap_figure", "history_path",
    "parse_grid", "premise_check", "read_histories", "read_rows", "run_bench", "summarize",
    "sweep_fields", "write_outputs",
]

BENCH_METHODS = ("wli_only", "logit_kd", "pseudo_pair", "pagkd_no_pro", "pagkd_no_den", "pagkd",
                 "pagkd_logit", "paired_oracle", "paired_hint", "oracle_masks")
COLUMNS = ("method", "seed", "auc", "accuracy", "f1", "sensitivity", "specificity",
           "train_seconds")


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def history_path(csv_path: Path | str) -> Path:
    """Where :func:`run_bench` keeps the per-epoch logs of a results CSV."""
    csv_path = Path(csv_path)
    return csv_path.with_name(csv_path.stem + ".history.jsonl")


def _append_history(csv_path: Path, record: dict) -> None:
    path = history_path(csv_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record, default=float) + "\n")


def read_histories(csv_path: Path | str) -> list[dict]:
    """The records of :func:`history_path` (an empty list when there are none)."""
    path = history_path(csv_path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_bench(cfg: Config, seeds: list[int], methods=BENCH_METHODS, csv_path: Path | str = "",
              cache_dir: Path | str = "runs/bench", progress: bool = False,
              extra: dict | None = None, log=print) -> list[dict]:
    """Train and score every (seed, method); append rows to ``csv_path``; return all rows.

    ``extra`` adds fixed columns (the sweep value). Rows already in the CSV with the same
    method, seed and extra values are not recomputed. A new CSV also records what each row
    ran on (:data:`pagkd_lite.training.runinfo.CSV_FIELDS`: torch, threads, device, determinism);
    rows appended to an older CSV keep its columns.
    Each student's per-epoch log (losses, validation AUC and, for the methods with a dense
    loss (PaGKD and its variants, ``pseudo_pair``, ``paired_oracle``), the mechanism numbers
    of :mod:`pagkd_lite.training.mechanism`) is appended to
    ``<csv stem>.history.jsonl``, one JSON line ``{"method", "seed", **extra, "history":
    [...]}`` per run (:func:`read_histories`).
    """
    from ..training.metrics import compute_metrics
    from ..training.pipeline import make_data, teacher_for, train_student, train_teacher
    from ..training.train import pick_device, predict

    csv_path = Path(csv_path)
    extra = extra or {}
    old = read_rows(csv_path)
    columns = (list(old[0]) if old else
               [*COLUMNS, *extra, *(k for k in CSV_FIELDS if k not in extra)])
    done = {(r["method"], str(r["seed"]), *(str(r.get(k)) for k in extra))
            for r in old}
    device = pick_device(cfg.device)
    ran_on = csv_fields(run_info(cfg.device))
    for seed in seeds:
        c = override(cfg, [f"seed={seed}", f"data.seed={seed}"])
        todo = [m for m in ("teacher_nbi", *methods)
                if (m, str(seed), *(str(v) for v in extra.values())) not in done]
        if not todo:
            continue
        sets = make_data(c)
        teacher, info = train_teacher(c, sets, out_dir=cache_dir, progress=progress)
        for method in todo:
            t0 = time.perf_counter()
            if method == "teacher_nbi":
                model, test, secs = teacher, sets["nbi_test"], info["seconds"]
            else:
                t = teacher_for(c, method, teacher, sets, out_dir=cache_dir, progress=progress)
                model, result = train_student(c, sets, method, t, progress=progress,
                                              ssl_dir=cache_dir)
                test, secs = sets["wli_test"], result.seconds
                _append_history(csv_path, {"method": method, "seed": seed, **extra,
                                           "history": result.history})
            probs = predict(model, test, device, runtime=c.runtime)
            m = compute_metrics(test.labels.numpy(), probs)
            row = {"method": method, "seed": seed, **{k: f"{m[k]:.4f}" for k in
                   ("auc", "accuracy", "f1", "sensitivity", "specificity")},
                   "train_seconds": f"{secs:.1f}", **ran_on, **extra}
            new = not csv_path.exists()
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            with csv_path.open("a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
                if new:
                    w.writeheader()
                w.writerow(row)
            log(f"seed {seed} {method:14s} AUC {m['auc']:.3f} "
                f"({secs:.0f} s train, {time.perf_counter() - t0:.0f} s total) {extra or ''}")
    return read_rows(csv_path)


def sweep_fields(row: dict) -> list[str]:
    """The sweep fields of a results row: every column that is neither a result
    (:data:`COLUMNS`) nor a record of what the run ran on (``runinfo.CSV_FIELDS``)."""
    return [k for k in row if k not in COLUMNS and k not in CSV_FIELDS]


def parse_grid(sweeps: list[str] | None) -> list[dict[str, str]]:
    """``["a.x=1,2", "b.y=3,4"]`` -> the cross product as dicts of field -> value, in order
    (``[{}]`` for no sweep)."""
    cells: list[dict[str, str]] = [{}]
    for item in sweeps or []:
        field, _, values = item.partition("=")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not field.strip() or not vals:
            raise ValueError(f"--sweep {item!r}: expected FIELD=V1,V2,...")
        cells = [{**c, field.strip(): v} for c in cells for v in vals]
    return cells
