"""benchmarks/gpu_check.py stays runnable: its CPU mode on the smoke preset (the GPU run
itself needs a card; see docs/usage.md, "GPU and more than one machine")."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]


def test_gpu_check_runs_on_cpu_and_writes_both_tables(tmp_path):
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu",
         "--presets", "smoke", "--reps", "1", "--warmup", "1", "--agree-batch", "6",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    # CPU fp32 vs CPU fp32 is the same computation: exactly zero error
    fp32 = next(r for r in data["agreement"] if r["precision"] == "fp32")
    assert data["meta"]["complete"]
    assert fp32["rel_total"] == 0.0 and fp32["rel_grad"] == 0.0 and fp32["ok"]
    bf16 = next(r for r in data["agreement"] if r["precision"] == "bf16")
    assert 0.0 < bf16["rel_grad"] < 0.2  # bf16 really ran, and stayed close
    variants = {(r["precision"], r["variant"]) for r in data["speed"]}
    assert variants == {(p, v) for p in ("fp32", "bf16") for v in
                        ("wli_only", "wli_only+teacher", "+gkd_pro", "+gkd_den", "pagkd")}
    text = (tmp_path / "gpu_check.md").read_text()
    assert "relative error of one PaGKD step" in text and "peak memory" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA card is present here")
def test_gpu_check_refuses_cuda_without_a_card():
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "CUDA is not available" in res.stderr


def test_demo16_is_the_demo_preset_at_16_by_16_tokens():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_check import preset

    from pagkd_lite.config import get_preset

    demo, demo16 = preset("demo"), preset("demo16")
    assert demo16.model.feature_index == -4 and demo.model.feature_index == -2
    assert demo16.train == demo.train and demo16.den == demo.den and demo16.data == demo.data
    assert not demo16.model.pretrained and get_preset("demo").model.backbone == \
        demo16.model.backbone
