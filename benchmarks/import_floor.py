"""The memory floor of a `pagkd-lite cv` process: resident memory after each group of imports.

Each step runs in a fresh process (``OMP_NUM_THREADS=1``) that imports the modules of the
steps before it, then its own, and reads ``/proc/self/status``: VmHWM (peak resident set,
what ``ru_maxrss`` reports), RssAnon (private) and RssFile (file-backed pages: shared
libraries, which the OS shares between processes). Writes
``benchmarks/studies/2026-12-03-scale-memory/import_floor.md``. Linux only.

    python benchmarks/import_floor.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

#: (label, what the step adds to the imports before it)
STEPS = (
    ("python", ""),
    ("+ torch", "import torch"),
    ("+ timm, torchvision", "import timm, torchvision"),
    ("+ PIL, numpy", "import PIL.Image, numpy"),
    ("+ scikit-learn (the lesion folds)", "import sklearn.model_selection, sklearn.metrics"),
    ("+ the kit's cv path", "import pagkd_lite.apps.cli, pagkd_lite.apps.cv, "
                            "pagkd_lite.training.pipeline, pagkd_lite.data.realdata"),
)

_READ = ("import json\nd = {}\nfor line in open('/proc/self/status'):\n"
         "    k, _, v = line.partition(':')\n"
         "    if k in ('VmHWM', 'RssAnon', 'RssFile'):\n"
         "        d[k] = int(v.split()[0]) / 1024\nprint(json.dumps(d))\n")


def measure(code: str) -> dict[str, float]:
    """VmHWM, RssAnon and RssFile in MB of a fresh process that runs ``code``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code + "\n" + _READ], capture_output=True,
                         text=True, env=env, check=True, timeout=600)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--md", default="benchmarks/studies/2026-12-03-scale-memory/import_floor.md")
    args = ap.parse_args()
    import torch

    rows, code = [], ""
    for label, step in STEPS:
        code = "\n".join(x for x in (code, step) if x)
        rows.append((label, measure(code)))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# The memory floor of a `cv` process",
        "",
        f"Measured {when} by `python benchmarks/import_floor.py`: {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}. "
        "Each row is a fresh process that has imported its row's modules and every row "
        "above; MB from `/proc/self/status`.",
        "",
        "| imports | VmHWM (peak RSS) | RssAnon (private) | RssFile (shared libraries) |",
        "|---|---|---|---|",
        *(f"| {label} | {m['VmHWM']:.0f} | {m['RssAnon']:.0f} | {m['RssFile']:.0f} |"
          for label, m in rows),
        "",
        "Before it reads an image or builds a model, a `cv` process already holds the last "
        "row. scale.md's 1 GB per rank target measures `ru_maxrss`, which counts the shared "
        "library pages with the private ones; what training adds (the model, its gradients "
        "and Adam state, a batch's activations, the libraries' compute kernels loaded on first "
        "use) comes on top of this floor.",
        "",
    ]
    Path(args.md).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
