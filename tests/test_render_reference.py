"""SynthEndo renders the images of its one-function reference on any CPU.

The renderer is float arithmetic quantised to uint8: a pixel that lies near a rounding
boundary may flip by one grey level between CPUs (vector units, libm), so no test here
compares a hash. The stored images (``tests/make_render_fixture.py``) are checked under a
stated tolerance, and the per-stage statistics name the stage that moved on a machine where
they differ.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from make_render_fixture import (
    CONFIGS,
    IMAGES,
    STAGES,
    one_thread,
    reference_images,
    stage_statistics,
)

MAX_GREY_LEVELS = 1  # the largest per-pixel difference allowed
MIN_EQUAL = 0.999  # the smallest fraction of equal pixels allowed
STAT_REL = 1e-4  # a stage's statistic may move by this much of the stage's scale


@pytest.fixture(scope="module")
def stored_images() -> dict[str, np.ndarray]:
    with np.load(IMAGES) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_render_gives_the_reference_images_within_a_grey_level(config, stored_images):
    now = reference_images()
    keys = sorted(k for k in stored_images if k.startswith(config + "/"))
    assert len(keys) == 7  # six splits and paired_nbi
    for key in keys:
        a, b = now[key].astype(np.int16), stored_images[key].astype(np.int16)
        assert a.shape == b.shape, key
        diff = np.abs(a - b)
        equal = float((diff == 0).mean())
        assert diff.max() <= MAX_GREY_LEVELS and equal >= MIN_EQUAL, (
            f"{key}: max difference {diff.max()} grey levels, {equal:.5%} of pixels equal "
            f"(allowed: <= {MAX_GREY_LEVELS}, >= {MIN_EQUAL:.1%}); "
            "test_render_stage_statistics names the stage that moved")


def _moved(ref: dict, now: dict) -> list[str]:
    """Lines ``stage: stat ref -> now`` for every statistic outside the tolerance, in order."""
    out = []
    for stage in sorted(ref, key=lambda s: (int(s.split("_")[0]), s)):
        r, n = ref[stage], now[stage]
        scale = abs(r["mean"]) + r["std"] + 1e-6
        # uint8 images: a pixel flipping by one level may move the extremes by one
        slack = 1.0 if stage == "10_uint8" else 0.0
        for stat in ("mean", "std", "min", "max"):
            tol = STAT_REL * scale + (slack if stat in ("min", "max") else 0.0)
            if abs(n[stat] - r[stat]) > tol:
                out.append(f"{stage}: {stat} {r[stat]:.8g} -> {n[stat]:.8g} (tol {tol:.2g})")
    return out


def test_render_stage_statistics():
    stored = json.loads(STAGES.read_text())
    ref, now = stored["stages"], stage_statistics()
    assert set(now) == set(ref)
    report = []
    for key in sorted(ref):
        assert set(now[key]) == set(ref[key]), f"{key}: the stages changed"
        report += [f"{key} {line}" for line in _moved(ref[key], now[key])]
    assert not report, ("SynthEndo's stages differ from those of the machine that wrote "
                        f"{STAGES.name} ({stored['_machine']}); first moved first:\n"
                        + "\n".join(report[:20]))


def test_one_thread_restores_the_thread_count_it_found():
    before = torch.get_num_threads()
    torch.set_num_threads(1 if before != 1 else 2)
    try:
        found = torch.get_num_threads()
        with one_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == found
    finally:
        torch.set_num_threads(before)
