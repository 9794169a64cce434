"""Two CPU processes with the gloo backend, started by torchrun (issue: beyond one machine)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pagkd_lite.training.checkpoint import load_checkpoint

HERE = Path(__file__).parent


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", _port(), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


@pytest.mark.parametrize("gather", [False, True], ids=["own_groups", "gather_prototypes"])
def test_two_gloo_ranks_stay_in_lockstep(tmp_path, gather):
    torchrun(str(HERE / "ddp_worker.py"), str(tmp_path), str(gather).lower())
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k, v in r0.items():
        if v.is_floating_point() and "running" not in k:
            assert torch.allclose(v, r1[k], atol=1e-6), k  # averaged gradients, same steps
    # only rank 0 wrote the run's checkpoint
    ck = load_checkpoint(tmp_path / "pagkd" / "best.pt", required=("distiller",))
    assert ck["method"] == "pagkd"


def test_console_entry_point_under_torchrun(tmp_path):
    res = torchrun("-m", "pagkd_lite.apps.cli", "train-student", "--preset", "smoke",
                   "--method", "wli_only", "--quiet", "--out", str(tmp_path),
                   "--set", "train.epochs=1")
    assert res.stdout.count("wli_only: best epoch") == 1  # printed by rank 0 only
    assert (tmp_path / "wli_only" / "best.pt").exists()


def test_gkd_pro_gather_matches_single_process_reference(tmp_path):
    """pro.gather=true on 2 ranks == a loop over both ranks' prototype sets in one process:
    each rank's L_con uses its own positive and every rank's other-class sets as
    negatives; the rank-averaged gradients are those of the mean of the ranks' losses."""
    torchrun(str(HERE / "ddp_gather_worker.py"), str(tmp_path))
    from ddp_gather_worker import CFG, build, rank_inputs

    pro = build()
    sets = []  # (rank, is WLI, class, prototype set (N_q, d))
    for r in range(2):
        tw, lw, tn, ln = rank_inputs(r)
        for is_w, tok, lab in ((True, tw, lw), (False, tn, ln)):
            protos, classes, _ = pro.prototypes(tok, lab)
            sets += [(r, is_w, int(c), p) for p, c in zip(protos, classes, strict=True)]

    def s(a, b):
        return F.cosine_similarity(a, b, dim=-1).mean() / CFG.tau

    cons, pcls = [], []
    for r in range(2):
        terms = []
        for r1, w1, c1, p1 in sets:
            pos = [p for r2, w2, c2, p in sets if r2 == r and not w2 and c2 == c1]
            if r1 != r or not w1 or not pos:
                continue
            neg = [p for _, _, c2, p in sets if c2 != c1]
            denom = sum(torch.exp(s(p1, p)) for p in pos + neg) + float(CFG.plus_one)
            terms.append(-torch.log(torch.exp(s(p1, pos[0])) / denom))
        cons.append(torch.stack(terms).mean())
        local = [(c, p) for r2, _, c, p in sets if r2 == r]
        logits = pro.classifier(torch.stack([p.mean(0) for _, p in local]))
        pcls.append(F.cross_entropy(logits, torch.tensor([c for c, _ in local])))
    (sum(cons) + sum(pcls)).div(2).backward()

    single = build()  # same weights; in one process gather has no effect: own groups only
    for r in range(2):
        got = torch.load(tmp_path / f"gather{r}.pt", weights_only=True)
        torch.testing.assert_close(got["con"], cons[r].detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["pcls"], pcls[r].detach(), rtol=1e-5, atol=1e-6)
        for name, p in pro.named_parameters():
            torch.testing.assert_close(got["grads"][name], p.grad, rtol=1e-4, atol=1e-6)
        # the other rank's sets really entered the denominator
        assert not torch.allclose(single(*rank_inputs(r))["con"], got["con"])
