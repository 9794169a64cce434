"""Regenerate ``tests/fixtures/den_reference16.npz``: the loop reference of GKD-Den at 16 x 16
tokens (a DELIBERATE act).

:func:`pagkd_lite.method.reference.gkd_den_loss` works one token pair at a time; at 16 x 16 tokens
(256 x 256 scores per pair and direction) its value and gradient take minutes, too long for
every test run. This script computes them once, for fixed inputs stored in the same file, and
``tests/test_gkd_den.py`` compares :class:`pagkd_lite.method.gkd_den.GKDDen` (value and gradient)
with them. Inputs: 3 WLI + 3 NBI images, d = 8, float64; WLI labels ``[0, 1, 0]``, NBI labels
``[0, 0, 1]`` (class 0: 2 x 2 pairs, class 1: 1 pair); WLI image 1 all fg and NBI image 2 all
bg (their pair is fully masked: empty with ``masked_rows="drop"``, uniform with
``"uniform"``); NBI image 1 all fg (every bg token of a class-0 WLI image has a fully masked
row with it). Configurations: ``drop_mean_all`` (``masked_rows="drop"``,
``reduction="mean_all"``, the kit's defaults before 2026-12-02) and ``authors``
(``masked_rows="uniform"``, ``reduction="per_class_sum"``, the defaults since).

Run only when the reference or the inputs are meant to change, and say so in the commit
message (about 10 minutes on one busy core)::

    python tests/make_den_reference16.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pagkd_lite.method import reference
from pagkd_lite.method.gkd_den import GKDDenConfig

FIXTURE = Path(__file__).parent / "fixtures" / "den_reference16.npz"
HW, D = 16 * 16, 8
CONFIGS = {
    "drop_mean_all": GKDDenConfig(masked_rows="drop", reduction="mean_all"),
    "authors": GKDDenConfig(masked_rows="uniform", reduction="per_class_sum"),
}


def make_inputs() -> dict[str, torch.Tensor]:
    """The fixed inputs (see the module docstring)."""
    g = torch.Generator().manual_seed(16)
    labels_w, labels_n = torch.tensor([0, 1, 0]), torch.tensor([0, 0, 1])
    tokens_w = 2 * torch.randn(3, HW, D, generator=g, dtype=torch.float64)
    tokens_n = 2 * torch.randn(3, HW, D, generator=g, dtype=torch.float64)
    toklab_w = torch.randint(-1, 2, (3, HW), generator=g)
    toklab_n = torch.randint(-1, 2, (3, HW), generator=g)
    toklab_w[1] = 1
    toklab_n[1] = 1
    toklab_n[2] = 0
    return {"tokens_w": tokens_w, "labels_w": labels_w, "toklab_w": toklab_w,
            "tokens_n": tokens_n, "labels_n": labels_n, "toklab_n": toklab_n}


def main() -> None:
    torch.set_num_threads(1)
    x = make_inputs()
    arrays = {k: v.numpy() for k, v in x.items()}
    for name, cfg in CONFIGS.items():
        tw = x["tokens_w"].clone().requires_grad_()
        tn = x["tokens_n"].clone().requires_grad_()
        ref = reference.gkd_den_loss(tw, x["labels_w"], x["toklab_w"], tn, x["labels_n"],
                                     x["toklab_n"], cfg)
        gw, gn = torch.autograd.grad(ref["den"], [tw, tn])
        arrays[f"{name}/den"] = np.array(ref["den"].item())
        for key in ("n_pairs", "n_rows_masked", "n_pairs_empty"):
            arrays[f"{name}/{key}"] = np.array(ref[key])
        arrays[f"{name}/grad_w"], arrays[f"{name}/grad_n"] = gw.numpy(), gn.numpy()
        print(f"{name}: den={ref['den'].item():.12f} n_pairs={ref['n_pairs']} "
              f"n_rows_masked={ref['n_rows_masked']} n_pairs_empty={ref['n_pairs_empty']}",
              flush=True)
    arrays["_torch"] = np.array(torch.__version__)
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(FIXTURE, **arrays)
    print(f"wrote {FIXTURE}")


if __name__ == "__main__":
    main()
