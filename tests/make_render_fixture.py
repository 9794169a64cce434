"""Regenerate SynthEndo's render references in ``tests/fixtures/`` (a DELIBERATE act).

Two files, read by ``tests/test_render_reference.py``:

* ``synthendo_reference.npz``: three images (first, middle, last) of every split of two small
  configurations, uint8. They are the images of the renderer before it was split into named
  stages (commit fba6dcc): on the machine that wrote this file, fba6dcc's one-function
  renderer and today's staged renderer give the same bytes for every image of both
  configurations. The test allows what differs between CPUs (at most one grey level, at least
  99.9 % of pixels equal), not a different renderer.
* ``synthendo_stages.json``: per configuration, split and stage (the latents, then every
  stage of :func:`pagkd_lite.data.synthendo.render_stages`), the mean, standard deviation,
  minimum and maximum in float64, and the machine that wrote them. When another machine
  renders other pixels, the test names the first stage whose statistics moved.

Run only when the renderer is meant to change, and say so in the commit message::

    python tests/make_render_fixture.py
"""

from __future__ import annotations

import json
import platform
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from pagkd_lite.data.synthendo import (
    SPLITS,
    SynthEndoConfig,
    generate,
    make_generator,
    render_stages,
    sample_latents,
)

HERE = Path(__file__).parent / "fixtures"
IMAGES = HERE / "synthendo_reference.npz"
STAGES = HERE / "synthendo_stages.json"

_SMALL = dict(image_size=64, n_wli_train=12, n_nbi_train=12, n_wli_val=6, n_nbi_val=6,
              n_wli_test=6, n_nbi_test=6)
CONFIGS = {
    "small64_seed3": SynthEndoConfig(**_SMALL, seed=3),
    "two_class48_seed7": SynthEndoConfig(
        image_size=48, num_classes=2, n_wli_train=8, n_nbi_train=8, n_wli_val=4, n_nbi_val=4,
        n_wli_test=4, n_nbi_test=4, seed=7, wli_contrast=0.6),
}


@contextmanager
def one_thread():
    """One torch thread inside, the caller's thread count restored after (whatever it was)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def picks(n: int) -> list[int]:
    """The images kept per split: first, middle, last."""
    return sorted({0, n // 2, n - 1})


def reference_images() -> dict[str, np.ndarray]:
    """``"<config>/<split>"`` -> uint8 ``(3, 3, S, S)``, rendered now at one thread."""
    out = {}
    with one_thread():
        for name, cfg in CONFIGS.items():
            for split, s in generate(cfg).items():
                out[f"{name}/{split}"] = s.images[picks(len(s))].numpy()
    return out


def _stats(t: torch.Tensor) -> dict[str, float]:
    x = t.detach().double()
    return {"mean": x.mean().item(), "std": x.std().item() if x.numel() > 1 else 0.0,
            "min": x.min().item(), "max": x.max().item()}


def stage_statistics() -> dict[str, dict[str, dict[str, float]]]:
    """``"<config>/<split>"`` -> stage -> statistics, in rendering order, at one thread.

    The stages are those of :func:`~pagkd_lite.data.synthendo.generate` for the WLI and NBI
    splits of each configuration: ``0_latents.<param>`` (the random draws of
    :func:`sample_latents`), then :func:`render_stages` with the split's render generator."""
    out = {}
    with one_thread():
        for name, cfg in CONFIGS.items():
            for split in SPLITS:
                lat = sample_latents(cfg.split_size(split), cfg, make_generator(cfg.seed, split),
                                     prefix=split)
                stages = {f"0_latents.{k}": v for k, v in lat.params.items()}
                stages.update(render_stages(lat, split.split("_")[0].upper(), cfg,
                                            make_generator(cfg.seed, split, "render")))
                out[f"{name}/{split}"] = {k: _stats(v) for k, v in stages.items()}
    return out


if __name__ == "__main__":
    HERE.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(IMAGES, **reference_images())
    machine = {"cpu": platform.processor() or platform.machine(), "python":
               platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
               "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": 1}
    STAGES.write_text(json.dumps({"_note": "Written by tests/make_render_fixture.py.",
                                  "_machine": machine, "stages": stage_statistics()},
                                 indent=1, sort_keys=True) + "\n")
    print(f"wrote {IMAGES.name} ({IMAGES.stat().st_size} bytes) and {STAGES.name}")
