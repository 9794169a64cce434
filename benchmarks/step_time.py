"""Milliseconds per training step, side by side in one run (issue: PaGKD's cost).

Variants, all on the same batch, backbone and optimiser (``--preset``, default demo):
  wli_only            CE on the WLI batch
  wli_only+teacher    the same plus a teacher forward pass on the NBI batch (the baseline)
  +gkd_pro            PaGKD without GKD-Den
  +gkd_den            PaGKD without GKD-Pro
  pagkd               full PaGKD
The variants run round-robin (one step each, repeated) so that drift in machine load hits
all of them alike; the median over repetitions is reported. The last line reads
``full_vs_baseline_ratio=<x>`` with x = pagkd / (wli_only+teacher). Target: x <= 1.25.

    python benchmarks/step_time.py [--preset demo] [--reps 20] [--threads 2] [--profile]
                                   [--set den.par_scale=4 ...]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from datetime import date

import torch

from pagkd_lite.config import get_preset, override
from pagkd_lite.distill import Distiller, StepBatch, build_distiller
from pagkd_lite.models import Classifier
from pagkd_lite.train import train_step


class TeacherForwardOnly(Distiller):
    """CE on WLI plus a teacher forward pass whose output is discarded (the baseline)."""

    needs_nbi = True

    def forward_train(self, batch, epoch):
        logits, losses = super().forward_train(batch, epoch)
        with torch.no_grad():
            self.teacher(batch.x_n)
        return logits, losses


def make_batch(cfg, batch_size: int | None = None, device: str | torch.device = "cpu",
               seed: int = 0) -> StepBatch:
    """A synthetic step: ``batch_size`` WLI and as many NBI images (classes round-robin),
    normalised inputs ~ N(0, 1) and [0, 1] images for PAR, at the preset's image size."""
    k, s = cfg.data.num_classes, cfg.data.image_size
    b = batch_size or cfg.train.batch_size
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(b) % k
    parts = (torch.randn(b, 3, s, s, generator=g), torch.rand(b, 3, s, s, generator=g), y,
             torch.randn(b, 3, s, s, generator=g), torch.rand(b, 3, s, s, generator=g), y)
    return StepBatch(*(t.to(device) for t in parts))


def make_variants(cfg, seed: int = 0) -> dict[str, Distiller]:
    """The five timed variants (module docstring), sharing one teacher."""
    k = cfg.data.num_classes
    torch.manual_seed(seed)
    teacher = Classifier(cfg.model, k)
    return {
        "wli_only": build_distiller("wli_only", Classifier(cfg.model, k), None, cfg, k),
        "wli_only+teacher": TeacherForwardOnly(Classifier(cfg.model, k), teacher),
        "+gkd_pro": build_distiller("pagkd_no_den", Classifier(cfg.model, k), teacher, cfg, k),
        "+gkd_den": build_distiller("pagkd_no_pro", Classifier(cfg.model, k), teacher, cfg, k),
        "pagkd": build_distiller("pagkd", Classifier(cfg.model, k), teacher, cfg, k),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--profile", action="store_true", help="print a profile of one full step")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                    help="override a config field, e.g. den.par_scale=4 (repeatable)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = override(get_preset(args.preset), args.overrides)
    b, s = cfg.train.batch_size, cfg.data.image_size
    batch = make_batch(cfg)
    variants = make_variants(cfg)
    opts = {n: torch.optim.Adam(d.learnable_parameters(), lr=1e-4) for n, d in variants.items()}
    epoch = cfg.train.warmup_epochs  # group losses switched on

    def step(name: str) -> float:
        d, opt = variants[name], opts[name]
        t0 = time.perf_counter()
        train_step(d, opt, batch, epoch)
        return time.perf_counter() - t0

    for d in variants.values():
        d.train()
    for name in variants:  # warm-up: allocator, first-call overheads
        step(name), step(name)
    times = {n: [] for n in variants}
    for _ in range(args.reps):
        for name in variants:
            times[name].append(step(name))
    med = {n: statistics.median(t) * 1000 for n, t in times.items()}
    base = med["wli_only+teacher"]
    print(f"# step time, preset {args.preset}: batch {b} per modality, {s} px, "
          f"{cfg.model.backbone}, d={cfg.model.dim}; {torch.get_num_threads()} threads; "
          f"{platform.processor() or platform.machine()}; torch {torch.__version__}; "
          f"{date.today()}" + (f"; {' '.join(args.overrides)}" if args.overrides else ""))
    print("| variant | ms/step (median) | x baseline |")
    print("|---|---|---|")
    for n, v in med.items():
        print(f"| {n} | {v:.0f} | {v / base:.2f} |")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step("pagkd")
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25))
    print(f"full_vs_baseline_ratio={med['pagkd'] / base:.3f}")


if __name__ == "__main__":
    main()
