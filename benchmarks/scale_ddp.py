"""One rank of the scale benchmark's DDP row (issue #24), run by ``benchmarks/scale_bench.py
--ddp 2`` under ``torchrun --nproc_per_node 2`` (gloo on CPU).

``pagkd-lite cv`` runs as one process (it refuses torchrun; only ``train-teacher`` and
``train-student`` split over ranks, and those train on SynthEndo), so this script does on
every rank what ``cv --method wli_only`` does, with the kit's own functions: load the folder
through the decode cache (:func:`pagkd_lite.data.realdata.load_dataset`), make the lesion folds
(:func:`pagkd_lite.data.splits.lesion_folds`), and per fold train the WLI student
(:func:`pagkd_lite.training.pipeline.train_student`, gradients averaged over the ranks) and predict
the fold's WLI test images (:func:`pagkd_lite.training.train.predict`, rows gathered over the
ranks).
Each rank writes ``<out>/rank<R>.json``: its wall time, peak RSS (``ru_maxrss``), its
resident memory at the end split into anonymous and file-backed pages (``/proc/self/status``),
and the load report's decode count.

    torchrun --nproc_per_node 2 benchmarks/scale_ddp.py --data-root DIR --cache-dir DIR \\
        --out DIR [--folds 5] [--preset demo] [--set NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

from pagkd_lite.apps.cv import fold_sets
from pagkd_lite.config import build_config
from pagkd_lite.data.realdata import RealDataConfig, load_dataset
from pagkd_lite.data.splits import lesion_folds
from pagkd_lite.distributed import init_from_env, rank, shutdown, world_size
from pagkd_lite.training.metrics import compute_metrics
from pagkd_lite.training.pipeline import train_student
from pagkd_lite.training.train import predict


def memory_mb() -> dict[str, float]:
    """This process's resident memory now, from ``/proc/self/status`` (MB): ``VmRSS``,
    ``RssAnon`` (private: heap, tensors), ``RssFile`` (file-backed: libraries, the store's
    memory-mapped pages, shared between processes), and ``VmHWM`` (the peak)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    t0 = time.perf_counter()
    assert init_from_env("cpu"), "run under torchrun with WORLD_SIZE > 1"
    torch.set_num_threads(args.threads)
    cfg = build_config(args.preset, args.overrides, args.seed, "cpu")
    sets, report = load_dataset(RealDataConfig(root=args.data_root,
                                               image_size=cfg.data.image_size,
                                               cache_dir=args.cache_dir))
    t_load = time.perf_counter() - t0
    folds = lesion_folds(sets, args.folds, cfg.seed)
    wli = sets["WLI"]
    probs = np.zeros((len(wli), wli.num_classes))
    for fold in folds:
        fs = fold_sets(sets, fold)
        student, _ = train_student(cfg, fs, "wli_only", None, out_dir=None, progress=False)
        probs[fold["wli_test"].numpy()] = predict(student, fs["wli_test"],
                                                 torch.device("cpu"), runtime=cfg.runtime)
        del student
    auc = compute_metrics(wli.labels.numpy(), probs)["auc"]
    record = {"rank": rank(), "world_size": world_size(),
              "seconds": time.perf_counter() - t0, "load_seconds": t_load,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "memory_at_end_mb": memory_mb(), "decoded": report.decoded,
              "cache": report.cache, "images": report.num_loaded, "pooled_auc": auc,
              "torch_threads": torch.get_num_threads()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank()}.json").write_text(json.dumps(record, indent=1))
    shutdown()


if __name__ == "__main__":
    main()
