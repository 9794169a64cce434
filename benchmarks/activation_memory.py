"""The private memory one forward pass and one training step of the demo model need, by image
size and batch: what is left of a `pagkd-lite cv` process's peak once no pixel is copied.

Each case runs in a fresh process (``OMP_NUM_THREADS=1``, one torch thread): it builds the
``demo`` preset's student (ResNet-10t, d = 64) at ``data.image_size`` S, reads its RssAnon,
then runs the case twice on random images while a thread samples ``/proc/self/status`` every
10 ms: ``predict``, a forward pass of B images under ``torch.no_grad`` in eval mode (what
:func:`pagkd_lite.training.train.predict` does per batch), or ``train``, a forward and
backward pass of B images in train mode (the model's share of one training step). The table
gives the peak RssAnon above the process's RssAnon before the case. Linux only. Writes
``benchmarks/studies/2026-12-07-scale-memory/activation_memory.md``.

    python benchmarks/activation_memory.py
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

#: (mode, image side, batch): the prediction batches before and after the pixel budget of
#: ``train.predict_batch_size`` (128 at any size, then 128 / 32 / 8), and the demo's training
#: batch of 24.
CASES = (
    ("predict", 64, 128), ("predict", 224, 128), ("predict", 224, 32),
    ("predict", 448, 128), ("predict", 448, 8),
    ("train", 64, 24), ("train", 224, 24), ("train", 448, 24), ("train", 448, 8),
)

_CASE = """
import json, sys, threading, time
import torch
from pagkd_lite.config import build_config
from pagkd_lite.models.classifier import Classifier
torch.set_num_threads(1)
mode, side, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon"):
            return int(line.split()[1]) / 1024

torch.manual_seed(0)
model = Classifier(build_config("demo", [f"data.image_size={side}"]).model, num_classes=2)
x = torch.randn(batch, 3, side, side)
time.sleep(0.1)
base = anon()
peak, done = [base], [False]

def sample():
    while not done[0]:
        peak[0] = max(peak[0], anon())
        time.sleep(0.01)

t = threading.Thread(target=sample, daemon=True)
t.start()
for _ in range(2):
    if mode == "predict":
        model.eval()
        with torch.no_grad():
            model(x)
    else:
        model.train()
        model(x).logits.sum().backward()
time.sleep(0.05)
done[0] = True
t.join()
print(json.dumps({"base": base, "peak": peak[0]}))
"""


def run_case(mode: str, side: int, batch: int) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _CASE, mode, str(side), str(batch)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--md", default="benchmarks/studies/2026-12-07-scale-memory/"
                                    "activation_memory.md")
    args = ap.parse_args()
    if not Path("/proc/self/status").exists():
        sys.exit("activation_memory.py: Linux only (reads /proc/self/status)")
    rows = []
    for mode, side, batch in CASES:
        r = run_case(mode, side, batch)
        rows.append((mode, side, batch, r["base"], r["peak"]))
        print(f"{mode} {side} px x {batch}: +{r['peak'] - r['base']:.0f} MB", flush=True)
    import torch  # noqa: PLC0415 (only for the version in the header)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), platform.processor())
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Activation memory of the demo model, by image size and batch",
        "",
        f"Written by `benchmarks/activation_memory.py` on {when}: {platform.machine()}, "
        f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, torch "
        f"{torch.__version__}, one thread, each case in a fresh process. `predict`: a "
        "forward pass of the batch in eval mode under `torch.no_grad`; `train`: a forward "
        "and backward pass in train mode. MB above the process's RssAnon before the case "
        "(the imports and the model).",
        "",
        "| case | image side (px) | batch | RssAnon before (MB) | peak above it (MB) |",
        "|---|---|---|---|---|",
        *(f"| {m} | {s} | {b} | {base:.0f} | {peak - base:.0f} |"
          for m, s, b, base, peak in rows),
        "",
    ]
    Path(args.md).write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.md}")


if __name__ == "__main__":
    main()
