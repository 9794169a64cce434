"""Regenerate ``tests/fixtures/golden_losses.json`` (GKD-Pro and GKD-Den loss values).

Regenerating is a DELIBERATE act: the golden test exists so that any change in the
numbers the losses produce is visible. Run this only when a change of the numbers is
intended (a fixed bug, a changed default), and say so in the commit message::

    python tests/make_golden.py

``compute_golden()`` is also imported by the tests, so inputs are built in one place.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pagkd_lite.method.gkd_den import GKDDen, GKDDenConfig
from pagkd_lite.method.gkd_pro import GKDPro, GKDProConfig

FIXTURE = Path(__file__).parent / "fixtures" / "golden_losses.json"


def _inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    k, hw, d = 3, 6, 16
    labels_w = torch.tensor([0, 1, 1, 2, 0, 1, 2, 2])
    labels_n = torch.tensor([2, 0, 1, 1, 0, 0, 2])
    tokens_w = torch.randn(len(labels_w), hw, d, generator=g, dtype=torch.float64)
    tokens_n = torch.randn(len(labels_n), hw, d, generator=g, dtype=torch.float64)
    toklab_w = torch.randint(-1, 2, (len(labels_w), hw), generator=g)
    toklab_n = torch.randint(-1, 2, (len(labels_n), hw), generator=g)
    return k, d, tokens_w, labels_w, toklab_w, tokens_n, labels_n, toklab_n


def compute_golden() -> dict[str, float]:
    """Loss values on fixed inputs (float64), keyed by name."""
    out: dict[str, float] = {}
    for seed in (0, 1):
        k, d, tw, lw, tlw, tn, ln, tln = _inputs(seed)
        for tag, kw in (("", {}), ("_plain_tau05", {"plus_one": False, "tau": 0.5})):
            torch.manual_seed(1234)
            pro = GKDPro(GKDProConfig(num_queries=4, num_heads=4, **kw), k, d).double()
            res = pro(tw, lw, tn, ln)
            out[f"seed{seed}/con{tag}"] = res["con"].item()
            out[f"seed{seed}/pcls{tag}"] = res["pcls"].item()
        for tag, kw in (("", {}), ("_one_way_scaled", {"two_way": False, "scale": True}),
                        ("_no_mask", {"use_mask": False})):
            res = GKDDen(GKDDenConfig(**kw))(tw, lw, tlw, tn, ln, tln)
            out[f"seed{seed}/den{tag}"] = res["den"].item()
    return out


if __name__ == "__main__":
    values = compute_golden()
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "_note": "Written by tests/make_golden.py. Regenerate only on purpose (see its docstring).",
        "_torch": torch.__version__,
        "values": values,
    }
    FIXTURE.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(values)} values to {FIXTURE}")
