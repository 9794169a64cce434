"""Scale benchmark (issue #24): ``pagkd-lite cv`` on a synthetic real-layout folder of JPEGs,
with the decode cache off, cold and warm, with the images kept as files, and the same work
on 2 gloo DDP ranks; wall time, peak RSS and decode counts.

    python benchmarks/scale_bench.py --work W --runs cold warm ddp     # 5000 JPEGs, 448 px
    python benchmarks/scale_bench.py --work W --md-only                # the table again
    python benchmarks/scale_bench.py --n 300 --work W --runs cold warm # a check that it works

The folder is ``<work>/data/<WLI|NBI>/<class>/<i>.jpg`` (half WLI, half NBI, two classes,
every stem used once per modality and class), written once and reused. Runs:

* ``no-cache``, ``cold``, ``warm``, ``files``: one ``pagkd-lite cv --method wli_only`` child
  process each, with ``--no-decode-cache``, ``--cache-dir <cache>`` on an emptied cache,
  ``--cache-dir <cache>`` again, and ``--decode-per-step`` (images kept as files).
* ``ddp``: ``cv`` refuses torchrun, so ``torchrun --nproc_per_node N
  benchmarks/scale_ddp.py`` does cv's work for wli_only on N gloo ranks with the kit's
  functions (load through the cache, lesion folds, train and predict per fold), reading
  the store the ``cold`` run wrote; each rank reports its own figures.

A cv child's peak RSS is its own ``ru_maxrss`` (``os.wait4``); its private and file-backed
resident memory (``RssAnon``, ``RssFile``: libraries and memory-mapped store pages, which
processes share) are sampled from ``/proc/<pid>/status`` every 0.2 s, maxima kept. Its
decode count is ``decoded`` in its ``load_report.json``. Every run is appended to
``<work>/runs.json`` with the load average before and after it; ``--md`` (default
``benchmarks/results/scale.md``) is written from that file, paths shown as ``<data>``,
``<cache>``, ``<out>``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("adenoma", "hyperplastic")
REPO = Path(__file__).resolve().parents[1]
RUNS = ("no-cache", "cold", "warm", "files", "ddp")


def write_folder(root: Path, n: int, px: int, seed: int = 0) -> tuple[Path, float]:
    """``n`` JPEGs of ``px`` x ``px`` under ``root/<WLI|NBI>/<class>/``: smooth random
    colour fields (blurred noise, like a textured mucosa) so JPEG sizes are realistic.
    Returns the folder and the seconds spent writing it (0 when it was already there)."""
    done = root / ".complete"
    if done.exists() and done.read_text() == f"{n} {px} {seed}":
        return root, 0.0
    t0 = time.perf_counter()
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
    return root, time.perf_counter() - t0


class MemorySampler(threading.Thread):
    """Polls ``/proc/<pid>/status`` and keeps the maxima of VmRSS, RssAnon and RssFile (MB)."""

    FIELDS = ("VmRSS", "RssAnon", "RssFile")

    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak = dict.fromkeys(self.FIELDS, 0.0)
        self.stop = threading.Event()

    def run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while not self.stop.is_set():
            try:
                for line in status.read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key in self.peak:
                        self.peak[key] = max(self.peak[key], int(value.split()[0]) / 1024)
            except (OSError, ValueError, IndexError):
                pass
            self.stop.wait(self.every)


def run_cv(argv: list[str], out: Path) -> dict:
    """Run ``pagkd-lite cv`` as a child: seconds, peak RSS, sampled peaks, decodes, exit."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    log = out.with_name(out.name + ".log")   # stdout and stderr, beside <out>
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "pagkd_lite.apps.cli", *argv, "--out",
                                 str(out)], env=env, stdout=sink, stderr=subprocess.STDOUT)
        sampler = MemorySampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc
    if rc != 0:
        print(log.read_text(errors="replace")[-2000:], file=sys.stderr)
    report = out / "load_report.json"
    rep = json.loads(report.read_text()) if report.exists() else {}
    auc: float | str = "?"
    results = out / "cv_results.csv"
    if results.exists():
        with results.open(newline="") as f:
            pooled = [r for r in csv.DictReader(f) if r["fold"] == "pooled"]
        auc = float(pooled[0]["auc"]) if pooled else "?"
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
            "peak_anon_mb": sampler.peak["RssAnon"], "peak_file_mb": sampler.peak["RssFile"],
            "decoded": rep.get("decoded", "?"), "cache": rep.get("cache", {}),
            "images": sum(sum(c.values()) for c in rep.get("counts", {}).values()),
            "returncode": rc, "pooled_auc": auc}


def run_ddp(ranks: int, data: Path, cache: Path, out: Path, args) -> dict:
    """``torchrun --nproc_per_node ranks benchmarks/scale_ddp.py``: the ranks' own records."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
           "--master_port", str(29500 + os.getpid() % 1000),
           str(REPO / "benchmarks" / "scale_ddp.py"), "--data-root", str(data),
           "--cache-dir", str(cache), "--out", str(out), "--folds", str(args.folds),
           "--preset", args.preset, "--set", f"data.image_size={args.image_size}",
           *(x for o in args.overrides for x in ("--set", o)), "--threads", str(args.threads)]
    t0 = time.perf_counter()
    log = out.with_name(out.name + ".log")
    with log.open("wb") as sink:
        proc = subprocess.run(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
    recs = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    return {"seconds": seconds, "returncode": proc.returncode, "ranks": recs}


def machine() -> dict:
    """``uname -m``, ``nproc``, the CPU model, memory, OS, Python, torch."""
    import torch

    model, mem = "?", "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            mem = f"{int(line.split()[1]) / 2**20:.0f} GiB"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # nproc reads it
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, env=env).stdout.strip()
    return {"arch": platform.machine(), "nproc": nproc, "cpu": model, "mem": mem,
            "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "torch": torch.__version__}


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def render(work: Path, md: Path) -> None:
    """The Markdown table of every run recorded in ``<work>/runs.json``."""
    state = json.loads((work / "runs.json").read_text())
    m, s = state["machine"], state["setup"]
    cv_rows = [r for r in state["runs"] if r["run"] != "ddp"]
    ddp_rows = [r for r in state["runs"] if r["run"] == "ddp"]
    lines = [
        "# Scale benchmark: `pagkd-lite cv` on a real-layout folder of JPEGs",
        "",
        f"Written by `benchmarks/scale_bench.py` from its run records; every figure below is "
        f"a measurement of the run in its row. Machine: {m['arch']} (`uname -m`), "
        f"{m['nproc']} CPUs (`nproc`), {m['cpu']} (`/proc/cpuinfo`), {m['mem']} RAM, "
        f"{m['os']}, Python {m['python']}, torch {m['torch']}. Threads: "
        f"`--threads {s['threads']}`, `OMP_NUM_THREADS={s['omp']}`.",
        "",
        f"Data: {s['images']} synthetic JPEGs at {s['px']} x {s['px']} px (half WLI, half NBI, "
        f"{len(CLASSES)} classes, real layout `<data>/<WLI|NBI>/<class>/<i>.jpg`, "
        f"{s['data_mb']:.0f} MB on disk), written by `benchmarks/scale_bench.py`"
        + (f" in {s['write_s']:.0f} s" if s.get("write_s") else "") + ". Decoded store: "
        f"{s['images']} x 3 x {s['image_size']} x {s['image_size']} bytes = "
        f"{s['images'] * 3 * s['image_size'] ** 2 / 2**20:.1f} MiB.",
        "",
        f"cv command (each row one child process): `pagkd-lite {s['shown']} --out <out>` plus "
        "`--no-decode-cache` (no-cache), `--cache-dir <cache>` (cold: the cache emptied "
        "first; warm: the same cache again), or `--decode-per-step` (files: the images stay "
        "JPEGs, each batch decoded when used by 2 DataLoader workers).",
        "",
        "| run | started (UTC) | load avg before -> after | wall s | peak RSS MB | peak "
        "RssAnon MB | peak RssFile MB | images decoded | pooled WLI AUC | exit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in cv_rows:
        auc = r["pooled_auc"]
        lines.append(f"| {r['run']} | {r['started']} | {r['load_before']} -> {r['load_after']} "
                     f"| {r['seconds']:.0f} | {r['peak_rss_mb']:.0f} | {r['peak_anon_mb']:.0f} "
                     f"| {r['peak_file_mb']:.0f} | {r['decoded']} | "
                     f"{auc if isinstance(auc, str) else f'{auc:.3f}'} | {r['returncode']} |")
    for r in ddp_rows:
        lines += [
            "",
            f"DDP ({len(r['ranks'])} gloo ranks, started {r['started']} UTC, load avg "
            f"{r['load_before']} -> {r['load_after']}, torchrun exit {r['returncode']}, "
            f"{r['seconds']:.0f} s wall for the whole torchrun): `cv` refuses torchrun (only "
            "`train-teacher` and `train-student` split over ranks, and they train on "
            "SynthEndo), so `torchrun --nproc_per_node 2 benchmarks/scale_ddp.py --data-root "
            f"<data> --cache-dir <cache> --folds {s['folds']} --preset {s['preset']}"
            + "".join(f" --set {o}" for o in s["overrides_all"])
            + f" --threads {s['threads']}` does cv's work for wli_only with the kit's "
            "functions on every rank: load through the decode cache (the store the cold run "
            "wrote), the same lesion folds, and per fold `train_student` (gradients averaged "
            "over the ranks) and `predict` (rows gathered).",
            "",
            "| rank | wall s | load s | peak RSS MB | at end: RSS / RssAnon / RssFile MB | "
            "images decoded | pooled WLI AUC |",
            "|---|---|---|---|---|---|---|",
            *(f"| {x['rank']} | {x['seconds']:.0f} | {x['load_seconds']:.1f} | "
              f"{x['peak_rss_mb']:.0f} | {x['memory_at_end_mb'].get('VmRSS', 0):.0f} / "
              f"{x['memory_at_end_mb'].get('RssAnon', 0):.0f} / "
              f"{x['memory_at_end_mb'].get('RssFile', 0):.0f} | {x['decoded']} | "
              f"{x['pooled_auc']:.3f} |" for x in r["ranks"]),
        ]
    lines += [
        "",
        "Peak RSS is the process's own maximum resident set (`ru_maxrss`). It counts "
        "file-backed pages too (the torch libraries, the memory-mapped store), which the OS "
        "shares between processes; RssAnon is the private part (heap, tensors, each fold's "
        "copied subsets). For scale: `import torch` alone is about 0.6 GB of RSS with this "
        "torch build, and the kit's imports (torch, timm, torchvision) about 0.9 GB "
        "(measured with `ru_maxrss` right after the imports, see the notes below).",
        "",
        *(x for note in state.get("notes", []) for x in (note, "")),
        f"Reproduce: `python benchmarks/scale_bench.py --work <work> --n {s['n']} --px "
        f"{s['px']} --image-size {s['image_size']} --folds {s['folds']} --preset "
        f"{s['preset']}" + "".join(f" --set {o}" for o in s["overrides"])
        + " --runs " + " ".join(r["run"] for r in state["runs"]) + "`.",
        "",
    ]
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text("\n".join(lines))
    print(f"written {md}")


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
    ap.add_argument("--runs", nargs="*", default=["cold", "warm", "ddp"], choices=RUNS,
                    help="in this order; ddp reads the store cold or warm wrote")
    ap.add_argument("--ranks", type=int, default=2, help="DDP ranks of the ddp run")
    ap.add_argument("--work", required=True, help="scratch folder (data, cache, outputs)")
    ap.add_argument("--md", default="benchmarks/results/scale.md")
    ap.add_argument("--md-only", action="store_true", help="only write --md from runs.json")
    ap.add_argument("--note", action="append", default=[],
                    help="a paragraph added to the Markdown (repeatable)")
    args = ap.parse_args()

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "runs.json"
    if args.md_only:
        if args.note:
            state = json.loads(state_path.read_text())
            state["notes"] = args.note
            state_path.write_text(json.dumps(state, indent=1))
        render(work, Path(args.md))
        return
    data, write_s = write_folder(work / "data", args.n, args.px)
    cache = work / "cache"
    overrides = [f"data.image_size={args.image_size}", *args.overrides]
    base = ["cv", "--data-root", str(data), "--folds", str(args.folds), "--method", "wli_only",
            "--preset", args.preset, *(x for o in overrides for x in ("--set", o)),
            "--threads", str(args.threads), "--device", "cpu", "--seed", "0", "--quiet"]
    shown = " ".join("<data>" if a == str(data) else a for a in base)
    images = args.n // (2 * len(CLASSES)) * 2 * len(CLASSES)
    setup = {"n": args.n, "px": args.px, "image_size": args.image_size, "folds": args.folds,
             "preset": args.preset, "overrides": args.overrides, "overrides_all": overrides,
             "threads": args.threads, "omp": os.environ.get("OMP_NUM_THREADS", "1"),
             "images": images, "shown": shown,
             "data_mb": sum(f.stat().st_size for f in data.rglob("*.jpg")) / 2**20}
    state = (json.loads(state_path.read_text()) if state_path.exists()
             else {"runs": [], "notes": []})
    if state.get("setup", {}).get("shown") not in (None, shown):
        state["runs"] = []        # another setting: start a new record
    state["machine"], state["setup"] = machine(), {**state.get("setup", {}), **setup}
    if write_s:
        state["setup"]["write_s"] = write_s
    for run in args.runs:
        if run == "cold":
            shutil.rmtree(cache, ignore_errors=True)
        started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
        before = load()
        if run == "ddp":
            rec = run_ddp(args.ranks, data, cache, work / "out-ddp", args)
        else:
            extra = {"no-cache": ["--no-decode-cache"], "files": ["--decode-per-step"]}.get(
                run, ["--cache-dir", str(cache)])
            rec = run_cv([*base, *extra], work / f"out-{run}")
        rec.update(run=run, started=started, load_before=before, load_after=load())
        print(json.dumps({k: v for k, v in rec.items() if k != "ranks"}), flush=True)
        for x in rec.get("ranks", []):
            print(json.dumps(x), flush=True)
        state["runs"] = [r for r in state["runs"] if r["run"] != run] + [rec]
        state_path.write_text(json.dumps(state, indent=1))
    render(work, Path(args.md))


if __name__ == "__main__":
    main()
