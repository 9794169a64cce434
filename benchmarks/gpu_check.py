"""The GPU check (issue: GPU and beyond one machine): CPU vs GPU losses, speed, memory.

Run through ``bash benchmarks/gpu_check.sh`` (5 minutes or less on one H100). Two parts,
for each preset (default ``demo``, ``demo16`` = the demo preset at 16 x 16 tokens, and
``paper``; ``pretrained=False``: same speed, no hub):

1. **Agreement.** One PaGKD distiller (group losses on), the same weights and the same
   synthetic batch on the CPU in float32 and on the device, in float32 (TF32 off) and
   under bf16 autocast. Reported: the relative error of each loss term
   ``|l_dev - l_cpu| / |l_cpu|``, of the flattened gradient ``||g_dev - g_cpu|| / ||g_cpu||``,
   and the share of GKD-Den token labels (from thresholded CAMs) that differ. A CAM value
   close to a threshold can flip a label, so ``den`` may differ more than the other terms.
2. **Speed and memory.** Training steps (forward, backward, Adam) of ``wli_only``,
   ``wli_only+teacher`` (adds the teacher's forward pass: the cost baseline of the
   distillers), ``+gkd_pro``, ``+gkd_den`` and ``pagkd``, in float32 and bf16 autocast
   (with channels_last on CUDA). Reported: median ms per step, WLI images per second
   (``batch / step time``; each step also passes as many NBI images through the teacher)
   and peak memory (``torch.cuda.max_memory_allocated``).

Results: ``<out>/gpu_check.md`` (tables) and ``gpu_check.json``. Exit code 1 if an fp32
agreement row fails its tolerance. On a machine without CUDA, ``--device cpu`` runs the
same code (used by the tests with the ``smoke`` preset).

    python benchmarks/gpu_check.py --device cuda [--presets demo,paper] [--reps 20]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from step_time import make_batch, make_variants  # noqa: E402

from pagkd_lite.config import get_preset, override  # noqa: E402
from pagkd_lite.method.distill import StepBatch, build_distiller  # noqa: E402
from pagkd_lite.models import accel  # noqa: E402
from pagkd_lite.models.accel import RuntimeConfig  # noqa: E402
from pagkd_lite.models.classifier import Classifier  # noqa: E402
from pagkd_lite.training.train import train_step  # noqa: E402

# relative-error limits: fp32 on two devices differs by summation order only; bf16 keeps
# 8 bits of mantissa in the backbones. den: see the module docstring.
TOL = {"fp32": {"loss": 1e-3, "den": 1e-2, "grad": 1e-2},
       "bf16": {"loss": 5e-2, "den": 1e-1, "grad": 2e-1}}
LOSSES = ("ce", "den", "con", "pcls", "total")


#: presets of the check beyond the kit's own: ``demo16`` is the demo preset at 16 x 16 tokens
#: (the student's stride-4 stage, ``model.feature_index=-4``), where GKD-Den costs most
EXTRA_PRESETS = {"demo16": ("demo", ["model.feature_index=-4"])}


def preset(name: str):
    """A kit preset, or one of :data:`EXTRA_PRESETS`, with ``pretrained=False``."""
    base, sets = EXTRA_PRESETS.get(name, (name, []))
    return override(get_preset(base), [*sets, "model.pretrained=false"])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_outputs(d, batch: StepBatch, epoch: int, rt: RuntimeConfig | None,
                 device: torch.device) -> dict:
    """Losses, flattened gradient and token labels of one training step (no optimiser).
    The token labels are computed again outside the step (same inputs, same weights)."""
    d.zero_grad(set_to_none=True)
    with accel.autocast(rt, device):
        _, losses = d.forward_train(batch, epoch)
        out = d.student(batch.x_w)
        _, _, cam_n = d.teacher_forward(batch.x_n, batch.y_n, want_cam=True)
        lab_w, lab_n = d.token_labels(batch, out, cam_n)
    losses["total"].backward()
    grad = torch.cat([p.grad.flatten().float() for p in d.learnable_parameters()
                      if p.grad is not None])
    return {"losses": {k: float(v.detach()) for k, v in losses.items()}, "grad": grad.cpu(),
            "labels": torch.cat([lab_w.flatten(), lab_n.flatten()]).cpu()}


def agreement(cfg, device: torch.device, batch_size: int) -> list[dict]:
    """CPU fp32 vs device fp32 and device bf16 for one PaGKD step (module docstring)."""
    k = cfg.data.num_classes
    torch.manual_seed(0)
    d_cpu = build_distiller("pagkd", Classifier(cfg.model, k), Classifier(cfg.model, k), cfg,
                            k).train()
    batch = make_batch(cfg, batch_size)
    epoch = cfg.train.warmup_epochs
    ref = step_outputs(d_cpu, batch, epoch, None, torch.device("cpu"))
    rows = []
    for precision in ("fp32", "bf16"):
        d_dev = copy.deepcopy(d_cpu).to(device).train()
        rt = RuntimeConfig(precision=precision, channels_last="off")
        dev_batch = StepBatch(*(t.to(device) for t in (batch.x_w, batch.img_w, batch.y_w,
                                                       batch.x_n, batch.img_n, batch.y_n)))
        tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            got = step_outputs(d_dev, dev_batch, epoch, rt, device)
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        row = {"preset": cfg.name, "precision": precision, "batch": batch_size, "classes": k}
        for name in LOSSES:
            a, b = ref["losses"][name], got["losses"][name]
            row[f"rel_{name}"] = abs(b - a) / max(abs(a), 1e-12)
        row["rel_grad"] = float((got["grad"] - ref["grad"]).norm() / ref["grad"].norm())
        row["label_mismatch"] = float((got["labels"] != ref["labels"]).float().mean())
        tol = TOL[precision]
        row["ok"] = bool(all(row[f"rel_{n}"] <= tol["loss"] for n in LOSSES if n != "den")
                         and row["rel_den"] <= tol["den"] and row["rel_grad"] <= tol["grad"])
        rows.append(row)
    return rows


def speed(cfg, device: torch.device, precision: str, reps: int, warmup: int,
          compile_mode: str) -> list[dict]:
    """Median ms per training step, WLI images/s and peak memory for the five variants."""
    rt = RuntimeConfig(precision=precision, compile=compile_mode)
    accel.setup(rt, device)
    batch = make_batch(cfg, device=device)
    batch.x_w, batch.x_n = accel.input_format(batch.x_w, rt), accel.input_format(batch.x_n, rt)
    epoch = cfg.train.warmup_epochs
    rows = []
    variants = make_variants(cfg)
    for name in list(variants):
        d = variants.pop(name)  # a timed variant's memory is freed before the next one
        accel.place(d, rt, device).train()
        opt = torch.optim.Adam(d.learnable_parameters(), lr=1e-4)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for i in range(warmup + reps):
            sync(device)
            t0 = time.perf_counter()
            train_step(d, opt, batch, epoch, rt)
            sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        ms = statistics.median(times) * 1000
        peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
                else float("nan"))
        rows.append({"preset": cfg.name, "precision": precision, "variant": name,
                     "batch": cfg.train.batch_size, "image_size": cfg.data.image_size,
                     "ms_per_step": ms, "wli_images_per_s": cfg.train.batch_size / ms * 1000,
                     "peak_gib": peak, "runtime": accel.describe(rt, device)})
        del d, opt
    base = {r["precision"]: r["ms_per_step"] for r in rows if r["variant"] == "wli_only+teacher"}
    for r in rows:
        r["x_baseline"] = r["ms_per_step"] / base[r["precision"]]
    return rows


def markdown(meta: dict, agree: list[dict], timing: list[dict]) -> str:
    lines = [f"# GPU check: {meta['device_name']}", "",
             f"`{meta['command']}`; {meta['date']}; torch {meta['torch']}"
             f" (CUDA {meta['cuda'] or '-'}); {meta['seconds']:.0f} s in all.", "",
             "## CPU (fp32) vs device: relative error of one PaGKD step", "",
             "| preset | device precision | batch | ce | den | con | pcls | total | gradient "
             "| token labels differing | within tolerance |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in agree:
        lines.append(f"| {r['preset']} | {r['precision']} | {r['batch']} | "
                     + " | ".join(f"{r[f'rel_{n}']:.1e}" for n in LOSSES)
                     + f" | {r['rel_grad']:.1e} | {r['label_mismatch']:.2%} | "
                     f"{'yes' if r['ok'] else 'NO'} |")
    lines += ["", "Tolerances (relative): " + "; ".join(
        f"{p}: losses {t['loss']:g}, den {t['den']:g}, gradient {t['grad']:g}"
        for p, t in TOL.items()) + ".", "",
        "## Training step: speed and peak memory", "",
        "| preset | precision | variant | batch | px | ms/step | WLI images/s | x baseline "
        "| peak GiB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in timing:
        peak = "-" if r["peak_gib"] != r["peak_gib"] else f"{r['peak_gib']:.2f}"
        lines.append(f"| {r['preset']} | {r['precision']} | {r['variant']} | {r['batch']} | "
                     f"{r['image_size']} | {r['ms_per_step']:.1f} | {r['wli_images_per_s']:.0f} "
                     f"| {r['x_baseline']:.2f} | {peak} |")
    lines += ["", "x baseline = ms/step / ms/step of wli_only+teacher (same preset and "
              "precision). Images/s counts the WLI batch; the step also runs the teacher on "
              "as many NBI images."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--presets", default="demo,demo16,paper",
                    help="kit presets or demo16 (the demo preset at 16 x 16 tokens)")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--reps", type=int, default=20, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps per variant first")
    ap.add_argument("--agree-batch", type=int, default=12,
                    help="images per modality in the agreement step (CPU time)")
    ap.add_argument("--compile", default="off", help="torch.compile mode for the timed steps")
    ap.add_argument("--out", default=f"benchmarks/studies/{date.today():%Y-%m-%d}-gpu-check",
                    help="output folder (default: a new dated study folder)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available here; use --device cpu to try the script",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    agree, timing = [], []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def write(final: bool) -> str:
        """Results so far (after each part, so a run stopped by the timeout leaves them)."""
        meta = {"device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                                else f"CPU ({platform.processor() or platform.machine()}, "
                                     f"{torch.get_num_threads()} threads)"),
                "torch": torch.__version__, "cuda": torch.version.cuda,
                "date": str(date.today()), "complete": final,
                "command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:]),
                "seconds": time.perf_counter() - t0}
        text = markdown(meta, agree, timing)
        if not final:
            text += "\n**Incomplete: the run stopped before the end.**\n"
        (out / "gpu_check.md").write_text(text)
        (out / "gpu_check.json").write_text(json.dumps(
            {"meta": meta, "agreement": agree, "speed": timing}, indent=1))
        return text

    for name in args.presets.split(","):
        cfg = preset(name)
        agree += agreement(cfg, device, min(args.agree_batch, cfg.train.batch_size))
        write(final=False)
        print(f"agreement {name}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
        for precision in args.precisions.split(","):
            timing += speed(cfg, device, precision, args.reps, args.warmup, args.compile)
            write(final=False)
            print(f"speed {name} {precision}: done ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    print(write(final=True))
    return 0 if all(r["ok"] for r in agree if r["precision"] == "fp32") else 1


if __name__ == "__main__":
    sys.exit(main())
