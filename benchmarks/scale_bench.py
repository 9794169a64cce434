"""Scale benchmark (issue #24): ``pagkd-lite cv`` on a synthetic real-layout folder of JPEGs,
with the decode cache off, cold and warm; wall time, peak RSS and decode counts.

    python benchmarks/scale_bench.py                      # the issue's size: 5000 JPEGs, 448 px
    python benchmarks/scale_bench.py --n 300 --label "small run"   # a check that it works

The folder is ``<work>/data/<WLI|NBI>/<class>/<i>.jpg`` (half WLI, half NBI, two classes,
every stem used once per modality and class), written once and reused. Each ``cv`` run is
a child process; its peak RSS is the child's own ``ru_maxrss`` (``os.wait4``), its decode
count is ``decoded`` in its ``load_report.json``. The table goes to
``benchmarks/results/scale.md`` (``--md``) with the machine, date and commands (paths shown
as ``<data>``, ``<cache>``, ``<out>``).

``cv`` runs as one process: only ``train-teacher`` and ``train-student`` split their work
over torchrun ranks (see docs/usage.md, "GPU and more than one machine"), so there is no 2-rank
``cv`` figure; ``--concurrent 2`` instead starts two warm ``cv`` processes at once on one
store, the case of several ranks or jobs reading the same images.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("adenoma", "hyperplastic")


@dataclass
class Run:
    """One ``cv`` child process: what it was and what it cost."""

    mode: str
    seconds: float
    peak_rss_mb: float
    decoded: int | str
    returncode: int


def write_folder(root: Path, n: int, px: int, seed: int = 0) -> Path:
    """``n`` JPEGs of ``px`` x ``px`` under ``root/<WLI|NBI>/<class>/``: smooth random
    colour fields (blurred noise, like a textured mucosa) so JPEG sizes are realistic."""
    done = root / ".complete"
    if done.exists() and done.read_text() == f"{n} {px} {seed}":
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    per = n // (2 * len(CLASSES))
    for mod in ("WLI", "NBI"):
        for c, cls in enumerate(CLASSES):
            d = root / mod / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per):
                small = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
                small[..., c] = np.clip(small[..., c].astype(int) + 40, 0, 255)
                img = Image.fromarray(small).resize((px, px), Image.Resampling.BICUBIC)
                img.save(d / f"{i:05d}.jpg", quality=90)
    done.write_text(f"{n} {px} {seed}")
    return root


def run_cv(argv: list[str], out: Path) -> tuple[float, float, int, int | str]:
    """Run ``pagkd-lite cv`` as a child; (seconds, peak RSS MB, return code, decodes)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pagkd_lite.cli", *argv, "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc
    if rc != 0:
        print(proc.stderr.read().decode()[-2000:], file=sys.stderr)
    proc.stderr.close()
    report = out / "load_report.json"
    decoded = json.loads(report.read_text()).get("decoded", "?") if report.exists() else "?"
    return seconds, usage.ru_maxrss / 1024, rc, decoded  # ru_maxrss: KiB on Linux


def machine() -> str:
    """CPU, cores, memory, OS, Python, torch: one line."""
    import torch

    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    cpu = platform.processor() or platform.machine()
    return (f"{cpu}, {os.cpu_count()} logical CPUs, {mem} RAM, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, torch "
            f"{torch.__version__}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="JPEGs in all (default 5000)")
    ap.add_argument("--px", type=int, default=448, help="side of the JPEGs (default 448)")
    ap.add_argument("--image-size", type=int, default=64, help="data.image_size (default 64)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="NAME=VALUE", help="extra --set for cv (repeatable)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modes", nargs="+", default=["no-cache", "cold", "warm"],
                    choices=["no-cache", "cold", "warm"])
    ap.add_argument("--concurrent", type=int, default=0,
                    help="also start this many warm cv processes at once on one store")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    ap.add_argument("--md", default="benchmarks/results/scale.md")
    ap.add_argument("--label", default="", help="a line saying what this run is")
    args = ap.parse_args()

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="scale-bench-"))
    t0 = time.perf_counter()
    data = write_folder(work / "data", args.n, args.px)
    write_s = time.perf_counter() - t0
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    base = ["cv", "--data-root", str(data), "--folds", str(args.folds), "--method", "wli_only",
            "--preset", args.preset, "--set", f"data.image_size={args.image_size}",
            *(x for o in args.overrides for x in ("--set", o)), "--threads", str(args.threads),
            "--device", "cpu", "--seed", "0", "--quiet"]
    runs: list[Run] = []
    for mode in args.modes:
        extra = ["--no-decode-cache"] if mode == "no-cache" else ["--cache-dir", str(cache)]
        s, rss, rc, dec = run_cv([*base, *extra], work / f"out-{mode}")
        runs.append(Run(mode, s, rss, dec, rc))
        print(f"{mode:9s} {s:7.1f} s  peak RSS {rss:7.0f} MB  decoded {dec}  rc {rc}")
    if args.concurrent:
        t1 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrent) as pool:
            res = list(pool.map(lambda i: run_cv([*base, "--cache-dir", str(cache)],
                                                 work / f"out-conc{i}"),
                                range(args.concurrent)))
        for i, (s, rss, rc, dec) in enumerate(res):
            runs.append(Run(f"warm, {args.concurrent} at once (#{i})", s, rss, dec, rc))
        print(f"concurrent: {time.perf_counter() - t1:.1f} s")
    store = sum(f.stat().st_size for f in cache.rglob("images.npy")) if cache.exists() else 0

    shown = " ".join(a if a not in (str(data), str(cache)) else
                     ("<data>" if a == str(data) else "<cache>") for a in base)
    lines = [
        "# Scale benchmark: `pagkd-lite cv` on a real-layout folder of JPEGs",
        "",
        *([f"**{args.label}**", ""] if args.label else []),
        f"Date: {datetime.date.today().isoformat()}. Machine: {machine()}.",
        "",
        f"Data: {args.n // (2 * len(CLASSES)) * 2 * len(CLASSES)} synthetic JPEGs at "
        f"{args.px} x {args.px} px (half WLI, half NBI, {len(CLASSES)} classes), written by "
        f"`benchmarks/scale_bench.py` in {write_s:.0f} s. Decoded store: "
        f"{store / 2**20:.1f} MiB (N x 3 x {args.image_size} x {args.image_size} bytes).",
        "",
        f"Command (each row one child process): `pagkd-lite {shown} --out <out>` plus "
        f"`--no-decode-cache` (no-cache) or `--cache-dir <cache>` (cold: empty cache; warm: "
        f"the same cache again).",
        "",
        "| run | wall s | peak RSS MB | images decoded | exit |",
        "|---|---|---|---|---|",
        *(f"| {r.mode} | {r.seconds:.1f} | {r.peak_rss_mb:.0f} | {r.decoded} | "
          f"{r.returncode} |" for r in runs),
        "",
        "Peak RSS is the child's own maximum resident set (`ru_maxrss` from `os.wait4`); it "
        "counts the store's pages the process touched, which the OS shares between processes "
        "reading one store. `cv` runs as one process (only `train-teacher` and "
        "`train-student` split over torchrun ranks), so there is no 2-rank `cv` row.",
        "",
        f"Reproduce: `python benchmarks/scale_bench.py --n {args.n} --px {args.px} "
        f"--image-size {args.image_size} --folds {args.folds} --preset {args.preset}"
        + "".join(f" --set {o}" for o in args.overrides)
        + (f" --concurrent {args.concurrent}" if args.concurrent else "") + "`.",
        "",
    ]
    Path(args.md).parent.mkdir(parents=True, exist_ok=True)
    Path(args.md).write_text("\n".join(lines))
    print(f"written {args.md}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
