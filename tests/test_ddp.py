"""Two CPU processes with the gloo backend, started by torchrun (issue: beyond one machine)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from pagkd_lite.checkpoint import load_checkpoint

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


def test_two_gloo_ranks_stay_in_lockstep(tmp_path):
    torchrun(str(HERE / "ddp_worker.py"), str(tmp_path))
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k, v in r0.items():
        if v.is_floating_point() and "running" not in k:
            assert torch.allclose(v, r1[k], atol=1e-6), k  # averaged gradients, same steps
    # only rank 0 wrote the run's checkpoint
    ck = load_checkpoint(tmp_path / "pagkd" / "best.pt", required=("distiller",))
    assert ck["method"] == "pagkd"


def test_console_entry_point_under_torchrun(tmp_path):
    res = torchrun("-m", "pagkd_lite.cli", "train-student", "--preset", "smoke",
                   "--method", "wli_only", "--quiet", "--out", str(tmp_path),
                   "--set", "train.epochs=1")
    assert res.stdout.count("wli_only: best epoch") == 1  # printed by rank 0 only
    assert (tmp_path / "wli_only" / "best.pt").exists()
