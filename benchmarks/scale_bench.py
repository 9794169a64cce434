"""Scale benchmark (issue #34): ``pagkd-lite cv``'s private memory against the size of the
data set and of its images, and ``cv`` over torchrun's ranks; wall time, peak RssAnon, peak
RssFile and images decoded per row.

    python benchmarks/scale_bench.py --work W                  # the issue's rows (below)
    python benchmarks/scale_bench.py --work W --md-only        # the table again
    python benchmarks/scale_bench.py --work W --rows 40:32:1:cold 40:32:2:warm --folds 2 \\
        --md W/scale.md                                        # a check that it works

A row is ``N:S:P:CACHE``: ``cv`` on ``N`` JPEGs decoded at ``data.image_size`` ``S``, by
``P`` processes (1: one ``pagkd-lite cv`` child; more: ``torchrun --nproc_per_node P -m
pagkd_lite cv``, the folds spread over the ranks), with a ``cold`` decode cache (emptied
first: the row decodes every image) or a ``warm`` one (the store an earlier row of the same
``N`` and ``S`` filled: 0 decoded). The default rows are the issue's: 1,000 and 5,000 JPEGs
at 64, 224 and 448 px, one process, cold; then 5,000 at 224 px warm, in one process and on
2 ranks (the same work, so the wall times compare).

The folders are ``<work>/data-<N>/<WLI|NBI>/<class>/<i>.jpg`` (``--px`` square JPEGs, half
WLI, half NBI, two classes), written once and reused; the caches ``<work>/cache-<N>-<S>``
(a cache no later row reads is deleted after its row: 5,000 images at 448 px are 3 GB).

Memory: every process of the row (the cv child, or torchrun's ranks, not its agent) is
sampled from ``/proc/<pid>/status`` every 0.2 s; a row's peak RssAnon (private memory:
heap, tensors, copies) and peak RssFile (file-backed: libraries and the memory-mapped
store, shared between processes) are the largest of any one process. Images decoded: rank
0's ``load_report.json``, and each other rank's own line on stderr. Every row is appended
to ``<work>/runs.json`` with the load average before and after it; ``--md`` (default
``benchmarks/studies/2026-12-07-scale-memory/scale.md``, the scale study's table) is written
from that file, with the targets of issue #34 checked against the rows that measure them.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("adenoma", "hyperplastic")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROWS = ("1000:64:1:cold", "1000:224:1:cold", "1000:448:1:cold",
                "5000:64:1:cold", "5000:224:1:cold", "5000:448:1:cold",
                "5000:224:1:warm", "5000:224:2:warm")
#: the reduced epoch budget (wli_only: no teacher; 2 student epochs of the preset's steps)
DEFAULT_SET = ("train.epochs=2", "train.warmup_epochs=0")
RANK_LINE = re.compile(r"rank (\d+): data loaded, (\d+) image\(s\) decoded")
MB = 1024  # /proc reports kB


def parse_row(spec: str) -> dict:
    """``"N:S:P:CACHE"`` -> ``{"n", "size", "procs", "cache", "label"}``."""
    try:
        n, size, procs, cache = spec.split(":")
        row = {"n": int(n), "size": int(size), "procs": int(procs), "cache": cache,
               "label": spec}
    except ValueError:
        raise SystemExit(f"--rows {spec!r}: write N:S:P:CACHE, e.g. 5000:224:2:warm") from None
    if cache not in ("cold", "warm") or row["procs"] < 1 or row["n"] < 4:
        raise SystemExit(f"--rows {spec!r}: CACHE is cold or warm, P >= 1, N >= 4")
    return row


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


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(x) for x in (task / "children").read_text().split()]
        except (OSError, ValueError):
            pass
    return kids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            "utf-8", "replace")
    except OSError:
        return ""


class TreeSampler(threading.Thread):
    """Every 0.2 s: the processes of a row (``root``, or with ``ranks`` the descendants of
    ``root`` that run pagkd_lite: torchrun's ranks, not its agent) and each one's peak
    RssAnon and RssFile (MB)."""

    def __init__(self, root: int, ranks: bool, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root, self.ranks, self.every = root, ranks, every
        self.peaks: dict[int, dict[str, float]] = {}
        self.stop = threading.Event()

    def _pids(self) -> list[int]:
        if not self.ranks:
            return [self.root]
        seen, todo = [], _children(self.root)
        while todo:
            pid = todo.pop()
            seen.append(pid)
            todo += _children(pid)
        return [p for p in seen if "pagkd_lite" in _cmdline(p)
                and "torch.distributed.run" not in _cmdline(p)]

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in self._pids():
                try:
                    text = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                peak = self.peaks.setdefault(pid, {"RssAnon": 0.0, "RssFile": 0.0})
                for line in text.splitlines():
                    key, _, value = line.partition(":")
                    if key in peak:
                        peak[key] = max(peak[key], int(value.split()[0]) / MB)
            self.stop.wait(self.every)


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def run_row(row: dict, argv: list[str], out: Path) -> dict:
    """Run one row's ``cv`` (a child, or torchrun's ranks): wall time, per-process memory
    peaks, images decoded per process, pooled AUC, exit status."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    shutil.rmtree(out, ignore_errors=True)
    launch = [sys.executable, "-m", "pagkd_lite"]
    if row["procs"] > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                  str(row["procs"]), "--master_addr", "127.0.0.1", "--master_port", _port(),
                  "-m", "pagkd_lite"]
    log = out.with_name(out.name + ".log")   # stdout and stderr, beside <out>
    t0 = time.perf_counter()
    with log.open("wb") as sink:
        proc = subprocess.Popen([*launch, *argv, "--out", str(out)], env=env, stdout=sink,
                                stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid, ranks=row["procs"] > 1)
        sampler.start()
        rc = proc.wait()
    seconds = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    text = log.read_text(errors="replace")
    if rc != 0:
        print(text[-3000:], file=sys.stderr)
    report = out / "load_report.json"
    decoded = {0: json.loads(report.read_text()).get("decoded", "?")} if report.exists() else {}
    decoded |= {int(r): int(d) for r, d in RANK_LINE.findall(text)}
    auc: float | str = "?"
    results = out / "cv_results.csv"
    if results.exists():
        with results.open(newline="") as f:
            pooled = [r for r in csv.DictReader(f) if r["fold"] == "pooled"]
        auc = float(pooled[0]["auc"]) if pooled else "?"
    procs = sorted(sampler.peaks.values(), key=lambda p: -p["RssAnon"])
    return {"seconds": seconds, "returncode": rc, "pooled_auc": auc,
            "decoded": [decoded.get(r, "?") for r in range(row["procs"])],
            "per_process": procs,
            "peak_anon_mb": max((p["RssAnon"] for p in procs), default=0.0),
            "peak_file_mb": max((p["RssFile"] for p in procs), default=0.0)}


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


def _find(rows: list[dict], n: int, size: int, procs: int, cache: str | None = None):
    for r in rows:
        if (r["n"], r["size"], r["procs"]) == (n, size, procs) and cache in (None, r["cache"]):
            return r
    return None


def targets(rows: list[dict]) -> list[str]:
    """Issue #34's targets, each MET, MISSED or not measured, with its numbers."""
    out = []

    def verdict(ok: bool) -> str:
        return "**MET**" if ok else "**MISSED**"

    for size in (224, 448):
        a, b = _find(rows, 1000, size, 1, "cold"), _find(rows, 5000, size, 1, "cold")
        if a and b:
            d = b["peak_anon_mb"] - a["peak_anon_mb"]
            out.append(f"- Private memory independent of the data set at {size} px: peak "
                       f"RssAnon 5,000 images {b['peak_anon_mb']:.0f} MB - 1,000 images "
                       f"{a['peak_anon_mb']:.0f} MB = {d:+.0f} MB (target <= 64 MB): "
                       f"{verdict(d <= 64)}")
        else:
            out.append(f"- Private memory independent of the data set at {size} px: not "
                       f"measured (needs rows 1000:{size}:1:cold and 5000:{size}:1:cold)")
    big = _find(rows, 5000, 448, 1)
    out.append(f"- 448 px, 5,000 images, one process: peak RssAnon {big['peak_anon_mb']:.0f} MB"
               f" (target <= 1,536 MB), exit {big['returncode']}: "
               f"{verdict(big['peak_anon_mb'] <= 1536 and big['returncode'] == 0)}"
               if big else "- 448 px, 5,000 images: not measured (row 5000:448:1:cold)")
    one, two = _find(rows, 5000, 224, 1, "warm"), _find(rows, 5000, 224, 2, "warm")
    if one and two:
        same = one["pooled_auc"] == two["pooled_auc"] and one["pooled_auc"] != "?"
        ratio = two["seconds"] / one["seconds"]
        out.append(f"- 2 ranks, 5,000 images at 224 px (warm cache, one thread a process): "
                   f"pooled AUC {two['pooled_auc']} vs one process {one['pooled_auc']} "
                   f"(identical: {verdict(same)}); wall {two['seconds']:.0f} s vs "
                   f"{one['seconds']:.0f} s = {ratio:.3f} x (target <= 0.6 x): "
                   f"{verdict(ratio <= 0.6)}")
    else:
        out.append("- 2 ranks against one process: not measured (needs rows 5000:224:1:warm "
                   "and 5000:224:2:warm)")
    warm = [r for r in rows if r["cache"] == "warm"]
    if warm:
        zero = all(d == 0 for r in warm for d in r["decoded"])
        out.append("- A warm cache decodes 0 images: "
                   + ", ".join(f"{r['label']}: {r['decoded']}" for r in warm)
                   + f": {verdict(zero)}")
    return out


def render(work: Path, md: Path) -> None:
    """The Markdown of every row recorded in ``<work>/runs.json``."""
    state = json.loads((work / "runs.json").read_text())
    m, s, rows = state["machine"], state["setup"], state["rows"]
    lines = [
        "# Scale benchmark: `pagkd-lite cv`'s memory against the data set, and cv over ranks",
        "",
        f"Written by `benchmarks/scale_bench.py` from its run records; every figure below is "
        f"a measurement of the run in its row. Machine: {m['arch']} (`uname -m`), "
        f"{m['nproc']} CPUs (`nproc`), {m['cpu']} (`/proc/cpuinfo`), {m['mem']} RAM, "
        f"{m['os']}, Python {m['python']}, torch {m['torch']}. Threads: `--threads "
        f"{s['threads']}` and `OMP_NUM_THREADS={s['omp']}` in every process.",
        "",
        f"Data: synthetic JPEGs at {s['px']} x {s['px']} px (half WLI, half NBI, "
        f"{len(CLASSES)} classes, real layout `<data>/<WLI|NBI>/<class>/<i>.jpg`), written by "
        "this script. Command of a row (`<data>`, `<cache>`, `<out>` its folders): "
        f"`pagkd-lite {s['shown']} --data-root <data> --cache-dir <cache> --out <out>`, with "
        "`data.image_size` the row's; rows with 2 processes run it as `torchrun "
        "--nproc_per_node 2 -m pagkd_lite cv ...` (the folds spread over the ranks). "
        "`cold`: the row's cache emptied first; `warm`: the store an earlier row filled.",
        "",
        "| row (N:S:P:cache) | started (UTC) | load avg before -> after | wall s | peak "
        "RssAnon MB | peak RssFile MB | images decoded (per process) | pooled WLI AUC | exit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        auc = r["pooled_auc"]
        anon = " / ".join(f"{p['RssAnon']:.0f}" for p in r["per_process"]) or "?"
        file = " / ".join(f"{p['RssFile']:.0f}" for p in r["per_process"]) or "?"
        lines.append(f"| {r['label']} | {r['started']} | {r['load_before']} -> "
                     f"{r['load_after']} | {r['seconds']:.0f} | {anon} | {file} | "
                     f"{', '.join(str(d) for d in r['decoded'])} | "
                     f"{auc if isinstance(auc, str) else f'{auc:.4f}'} | {r['returncode']} |")
    lines += [
        "",
        "RssAnon is a process's private resident memory (heap, tensors, any copy of "
        "pixels); RssFile its file-backed resident pages (the torch libraries and the "
        "memory-mapped decode store), which the OS shares between processes. With several "
        "processes each is listed, largest RssAnon first.",
        "",
        "## Targets (issue #34)",
        "",
        *targets(rows),
        "",
        *(x for note in state.get("notes", []) for x in (note, "")),
        f"Reproduce: `python benchmarks/scale_bench.py --work <work> --px {s['px']} --folds "
        f"{s['folds']} --preset {s['preset']} --method {s['method']}"
        + "".join(f" --set {o}" for o in s["overrides"])
        + " --rows " + " ".join(r["label"] for r in rows) + "`.",
        "",
    ]
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text("\n".join(lines))
    print(f"written {md}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS), metavar="N:S:P:CACHE",
                    help="the rows, run in this order (default: issue #34's)")
    ap.add_argument("--px", type=int, default=448, help="side of the JPEGs (default 448)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--method", default="wli_only")
    ap.add_argument("--set", dest="overrides", action="append", default=None,
                    metavar="NAME=VALUE",
                    help=f"--set for cv (repeatable; default {' '.join(DEFAULT_SET)})")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", required=True, help="scratch folder (data, caches, outputs)")
    ap.add_argument("--md", default="benchmarks/studies/2026-12-07-scale-memory/scale.md")
    ap.add_argument("--md-only", action="store_true", help="only write --md from runs.json")
    ap.add_argument("--note", action="append", default=[],
                    help="a paragraph added to the Markdown (repeatable)")
    args = ap.parse_args()
    overrides = list(DEFAULT_SET) if args.overrides is None else args.overrides

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
    rows = [parse_row(r) for r in args.rows]
    base = ["cv", "--folds", str(args.folds), "--method", args.method, "--preset", args.preset,
            *(x for o in overrides for x in ("--set", o)), "--threads", str(args.threads),
            "--device", "cpu", "--seed", "0", "--quiet"]
    setup = {"px": args.px, "folds": args.folds, "preset": args.preset, "method": args.method,
             "overrides": overrides, "threads": args.threads,
             "omp": os.environ.get("OMP_NUM_THREADS", "1"), "shown": " ".join(base)}
    state = (json.loads(state_path.read_text()) if state_path.exists()
             else {"rows": [], "notes": []})
    if state.get("setup") not in (None, setup):
        state["rows"] = []        # another setting: start a new record
    state["machine"], state["setup"] = machine(), setup
    for i, row in enumerate(rows):
        data, write_s = write_folder(work / f"data-{row['n']}", row["n"], args.px)
        if write_s:
            print(f"wrote {row['n']} JPEGs in {write_s:.0f} s", flush=True)
        cache = work / f"cache-{row['n']}-{row['size']}"
        if row["cache"] == "cold":
            shutil.rmtree(cache, ignore_errors=True)
        argv = [*base, "--set", f"data.image_size={row['size']}", "--data-root", str(data),
                "--cache-dir", str(cache)]
        started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
        before = load()
        rec = run_row(row, argv, work / f"out-{row['label'].replace(':', '-')}")
        rec |= {**row, "started": started, "load_before": before, "load_after": load()}
        print(json.dumps({k: v for k, v in rec.items() if k != "per_process"}), flush=True)
        state["rows"] = [r for r in state["rows"] if r["label"] != row["label"]] + [rec]
        state_path.write_text(json.dumps(state, indent=1))
        later = [(r["n"], r["size"]) for r in rows[i + 1:] if r["cache"] == "warm"]
        if (row["n"], row["size"]) not in later:
            shutil.rmtree(cache, ignore_errors=True)  # no later row reads it
    render(work, Path(args.md))


if __name__ == "__main__":
    main()
