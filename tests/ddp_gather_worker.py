"""Run by tests/test_ddp.py under torchrun (2 gloo ranks): GKD-Pro with ``gather=True``.

Each rank has its own groups (rank 1 lacks class 2 in NBI, so the ranks hold different
numbers of prototype sets); the rank's losses and its rank-averaged gradients are saved
for the single-process reference in the test.
"""

import sys
from pathlib import Path

import torch

from pagkd_lite.method.gkd_pro import GKDPro, GKDProConfig

CFG = GKDProConfig(num_queries=4, num_heads=4, gather=True, similarity="slot",
                   con_reduction="mean")  # the reference in tests/test_ddp.py is written so
LABELS = {0: ([0, 0, 1, 2, 2], [0, 1, 1, 2]), 1: ([0, 1, 1, 2], [0, 1])}


def rank_inputs(r: int):
    """(tokens_w, labels_w, tokens_n, labels_n) of rank ``r``: 6 tokens per image, d = 16."""
    g = torch.Generator().manual_seed(100 + r)
    lw, ln = (torch.tensor(v) for v in LABELS[r])
    return (torch.randn(len(lw), 6, 16, generator=g), lw,
            torch.randn(len(ln), 6, 16, generator=g), ln)


def build() -> GKDPro:
    torch.manual_seed(0)
    return GKDPro(CFG, num_classes=3, dim=16)


if __name__ == "__main__":
    from pagkd_lite.distributed import average_gradients, init_from_env, rank, shutdown

    assert init_from_env("cpu"), "expected to run under torchrun with WORLD_SIZE > 1"
    pro = build()
    out = pro(*rank_inputs(rank()))
    (out["con"] + out["pcls"]).backward()
    params = list(pro.parameters())
    average_gradients(params)
    torch.save({"con": out["con"].detach(), "pcls": out["pcls"].detach(),
                "grads": {n: p.grad for n, p in pro.named_parameters()}},
               Path(sys.argv[1]) / f"gather{rank()}.pt")
    shutdown()
