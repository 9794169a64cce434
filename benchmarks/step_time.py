"""Milliseconds per training step, side by side in one run (issue: PaGKD's cost).

Variants, all on the same batch, backbone and optimiser (``--preset``, default demo):
  wli_only            CE on the WLI batch
  wli_only+teacher    the same plus a teacher forward pass on the NBI batch (the baseline)
  +gkd_pro            PaGKD without GKD-Den
  +gkd_den            PaGKD without GKD-Pro
  pagkd               full PaGKD
The variants run round-robin (one step each, repeated) so that drift in machine load hits
all of them alike; the median over repetitions is reported. The token grid is the student's
feature map: ``--set model.feature_index=F`` picks the stage (demo preset, 64 px: -2 is
4 x 4 tokens, -3 is 8 x 8, -4 is 16 x 16); the header line says which grid was timed.

Peak memory: for ``pagkd`` and for the baseline, a fresh process per variant builds the same
models and runs two steps, and reports its peak resident set size (the whole process, Python
and torch included, from ``VmHWM`` where Linux has it; the difference between the two is
what PaGKD adds). ``--no-rss`` skips it.

The last lines read ``peak_rss_mb pagkd=<a> wli_only+teacher=<b>`` and
``full_vs_baseline_ratio=<x>`` with x = pagkd / (wli_only+teacher) (targets, issue "GKD-Den
at the token grids where the method lives": <= 1.20 at 4 x 4, <= 1.30 at 8 x 8, <= 2.5 at
16 x 16 tokens, peak RSS of a 16 x 16 step <= 2 GB).

    python benchmarks/step_time.py [--preset demo] [--reps 20] [--threads 2] [--profile]
                                   [--no-rss] [--set model.feature_index=-4 ...]
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import date

import torch

from pagkd_lite.config import get_preset, override
from pagkd_lite.method.distill import Distiller, StepBatch, build_distiller
from pagkd_lite.models.classifier import Classifier
from pagkd_lite.training.train import train_step


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


def make_variants(cfg, seed: int = 0, names=None) -> dict[str, Distiller]:
    """The five timed variants (module docstring), sharing one teacher; ``names``: only
    these."""
    k = cfg.data.num_classes
    torch.manual_seed(seed)
    teacher = Classifier(cfg.model, k)
    build = {
        "wli_only": lambda: build_distiller("wli_only", Classifier(cfg.model, k), None, cfg, k),
        "wli_only+teacher": lambda: TeacherForwardOnly(Classifier(cfg.model, k), teacher),
        "+gkd_pro": lambda: build_distiller("pagkd_no_den", Classifier(cfg.model, k), teacher,
                                            cfg, k),
        "+gkd_den": lambda: build_distiller("pagkd_no_pro", Classifier(cfg.model, k), teacher,
                                            cfg, k),
        "pagkd": lambda: build_distiller("pagkd", Classifier(cfg.model, k), teacher, cfg, k),
    }
    return {name: make() for name, make in build.items() if names is None or name in names}


def _median_ms(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def stage_profile(cfg, batch: StepBatch, reps: int) -> list[tuple[str, float]]:
    """Where the time of one ``pagkd`` step goes: each stage timed alone on the step's own
    tensors, forward and forward + backward (median ms over ``reps``). Stages: the student
    (forward, CE, backward), the teacher pass (frozen backbone + head, with and without its
    Grad-CAM), the student's Grad-CAM (one extra backward to the feature map), CAM -> token
    labels, GKD-Den and GKD-Pro (forward; forward + backward on leaf copies of the tokens),
    and the optimiser update. The rows do not add up exactly to a step (a step shares one
    student forward between CE, CAM and the losses)."""
    from pagkd_lite.method.cam import cam_token_labels, grad_cam

    d = make_variants(cfg, names=["pagkd"])["pagkd"].train()
    opt = torch.optim.Adam(d.learnable_parameters(), lr=1e-4)
    rows = []

    def student_step():
        out = d.student(batch.x_w)
        torch.nn.functional.cross_entropy(out.logits, batch.y_w).backward()

    rows.append(("student forward + CE + backward", _median_ms(student_step, reps)))
    rows.append(("teacher pass (no CAM)",
                 _median_ms(lambda: d.teacher_pass(batch.x_n, batch.y_n, False), reps)))
    rows.append(("teacher pass (with Grad-CAM)",
                 _median_ms(lambda: d.teacher_pass(batch.x_n, batch.y_n, True), reps)))
    out = d.student(batch.x_w)
    rows.append(("student Grad-CAM (backward to the map)",
                 _median_ms(lambda: grad_cam(out.logits, out.features, batch.y_w), reps)))
    t = d.teacher_pass(batch.x_n, batch.y_n, True)
    cam_w = grad_cam(out.logits, out.features, batch.y_w)
    hw = tuple(out.features.shape[-2:])
    images, cams = torch.cat([batch.img_w, batch.img_n]), torch.cat([cam_w, t.cam])
    rows.append(("CAM -> token labels",
                 _median_ms(lambda: cam_token_labels(images, cams, hw, d.den_cfg), reps)))
    lab_w, lab_n = d.token_labels(batch, out, t.cam)
    tok_w = out.tokens.detach().requires_grad_()
    tok_n = t.tokens.detach().requires_grad_()

    def den(backward: bool):
        loss = d.den(tok_w, batch.y_w, lab_w, tok_n, batch.y_n, lab_n)["den"]
        if backward:
            loss.backward()

    def pro(backward: bool):
        r = d.pro(tok_w, batch.y_w, tok_n, batch.y_n)
        if backward:
            (r["con"] + r["pcls"]).backward()

    for name, fn in (("GKD-Den", den), ("GKD-Pro", pro)):
        rows.append((f"{name} forward", _median_ms(lambda fn=fn: fn(False), reps)))
        rows.append((f"{name} forward + backward", _median_ms(lambda fn=fn: fn(True), reps)))
    student_step()
    rows.append(("optimiser update (Adam)", _median_ms(opt.step, reps)))
    return rows


def den_floor(cfg, batch: StepBatch, grid: tuple[int, int], reps: int) -> dict[str, float]:
    """The arithmetic floor of GKD-Den's forward + backward on this core.

    Per same-class pair the kit's kernel (``pagkd_lite.method.den_groups``) does 9 matrix products
    of
    ``hw x hw x d`` multiply-adds with both directions (forward: S = T_m T_n^T, H^W = A^W T_n,
    H^N = A^N^T T_m; backward: two for each H and two for S), 6 with one direction. The floor
    is that count of FLOPs at the measured GEMM rate of one block of the kernel's own shape
    (``(mb * hw) x d`` times ``d x hw``, ``mb`` pairs per block at the CPU block size), so
    everything else (softmax, relation, cosine) is counted as overhead."""
    from pagkd_lite.method.den_groups import chunk_elems_for

    hw, d = grid[0] * grid[1], cfg.model.dim
    pairs = int((batch.y_w[:, None] == batch.y_n[None, :]).sum())
    products = 9 if cfg.den.two_way else 6
    gflop = 2 * products * pairs * hw * hw * d / 1e9
    mb = max(1, min(int((batch.y_w == 0).sum()), chunk_elems_for(torch.device("cpu")) // hw**2))
    a, b = torch.randn(1, mb * hw, d), torch.randn(1, d, hw)
    n = max(1, int(2e8 // (2 * mb * hw * hw * d)))  # about 0.2 GFLOP per timing

    def gemms():
        for _ in range(n):
            torch.bmm(a, b)

    secs = _median_ms(gemms, reps) / 1000
    rate = 2 * n * mb * hw * hw * d / secs / 1e9
    return {"pairs": pairs, "gflop": gflop, "gemm_gflops": rate, "floor_ms": gflop / rate * 1e3}


def token_grid(cfg) -> tuple[int, int]:
    """``(h, w)`` of the student's feature map (the token grid) at the preset's image size."""
    model = Classifier(cfg.model, cfg.data.num_classes).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, cfg.data.image_size, cfg.data.image_size))
    return tuple(out.features.shape[-2:])


def peak_rss_child(cfg, name: str) -> None:
    """In a fresh process: build ``name``, run two steps, print the peak RSS in MB."""
    batch = make_batch(cfg)
    d = make_variants(cfg, names=[name])[name]
    opt = torch.optim.Adam(d.learnable_parameters(), lr=1e-4)
    d.train()
    for _ in range(2):
        train_step(d, opt, batch, cfg.train.warmup_epochs)
    print(f"peak_rss_mb={peak_rss_of_this_process():.0f}")


def peak_rss_of_this_process() -> float:
    """Peak resident set size in MB: ``VmHWM`` of /proc/self/status where there is one (the
    high-water mark of this process's own memory; ``ru_maxrss`` can carry the parent's peak
    into a spawned child on Linux), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1024 if sys.platform != "darwin" else 1024 * 1024  # KB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def peak_rss_mb(argv: list[str], name: str) -> float:
    """Peak RSS (MB) of a fresh process that runs two steps of variant ``name``."""
    out = subprocess.run([sys.executable, __file__, *argv, "--rss-child", name],
                         capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1].split("=")[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--profile", action="store_true", help="print a profile of one full step")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                    help="override a config field, e.g. model.feature_index=-4 (16 x 16 tokens "
                         "at the demo preset) or labels.par_scale=4 (repeatable)")
    ap.add_argument("--no-rss", action="store_true",
                    help="skip the peak-RSS measurement (two fresh processes)")
    ap.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = override(get_preset(args.preset), args.overrides)
    if args.rss_child:
        peak_rss_child(cfg, args.rss_child)
        return
    b, s = cfg.train.batch_size, cfg.data.image_size
    grid = token_grid(cfg)
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
          f"{cfg.model.backbone}, d={cfg.model.dim}, {grid[0]} x {grid[1]} tokens; "
          f"{torch.get_num_threads()} threads; "
          f"{platform.processor() or platform.machine()}; torch {torch.__version__}; "
          f"{date.today()}" + (f"; {' '.join(args.overrides)}" if args.overrides else ""))
    print("| variant | ms/step (median) | x baseline |")
    print("|---|---|---|")
    for n, v in med.items():
        print(f"| {n} | {v:.0f} | {v / base:.2f} |")
    if args.profile:
        print(f"\nstages of a pagkd step, each timed alone (median of {args.reps}):")
        print("| stage | ms |")
        print("|---|---|")
        for name, ms in stage_profile(cfg, batch, args.reps):
            print(f"| {name} | {ms:.0f} |")
        f = den_floor(cfg, batch, grid, args.reps)
        print(f"\nGKD-Den arithmetic: {f['pairs']} same-class pairs, {f['gflop']:.2f} GFLOP "
              f"per forward + backward; GEMM at the kernel's block shape {f['gemm_gflops']:.0f} "
              f"GFLOP/s on this core -> floor {f['floor_ms']:.0f} ms")
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step("pagkd")
        print("\nops of one pagkd step, by self time (torch.profiler):")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    if not args.no_rss:
        child_argv = ["--preset", args.preset, "--threads", str(torch.get_num_threads())]
        for o in args.overrides:
            child_argv += ["--set", o]
        rss = {n: peak_rss_mb(child_argv, n) for n in ("pagkd", "wli_only+teacher")}
        print(f"peak_rss_mb pagkd={rss['pagkd']:.0f} "
              f"wli_only+teacher={rss['wli_only+teacher']:.0f}")
    print(f"full_vs_baseline_ratio={med['pagkd'] / base:.3f}")


if __name__ == "__main__":
    main()
