"""Rendering speed of SynthEndo on one CPU core: prints images per second.

Usage: ``python benchmarks/synthendo_speed.py [--size 128] [--n 512] [--threads 1]``.
Times latent sampling + WLI rendering + NBI rendering of the same ``n`` instances (so
``2 n`` images), after one warm-up batch. The kit's target is >= 100 images/s at 128 px on
one core.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from pagkd_lite.data.synthendo import SynthEndoConfig, make_generator, render, sample_latents


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128, help="image size in pixels")
    ap.add_argument("--n", type=int, default=512, help="latent instances (2 n images)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is kept")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = SynthEndoConfig(image_size=args.size)
    warm = sample_latents(64, cfg, make_generator(0, "warm"))
    render(warm, "WLI", cfg, make_generator(0, "warm", "r"))
    best = float("inf")
    for r in range(args.repeats):
        t0 = time.perf_counter()
        lat = sample_latents(args.n, cfg, make_generator(r, "bench"), prefix="bench")
        render(lat, "WLI", cfg, make_generator(r, "bench", "wli"))
        render(lat, "NBI", cfg, make_generator(r, "bench", "nbi"))
        best = min(best, time.perf_counter() - t0)
    ips = 2 * args.n / best
    print(f"SynthEndo: {ips:.1f} images/s at {args.size} px, {args.threads} thread(s), "
          f"{2 * args.n} images in {best:.2f} s (best of {args.repeats}); "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}")


if __name__ == "__main__":
    main()
