"""What a run ran on, recorded beside its numbers: torch version, CPU thread count, device,
and the determinism switches.

The same command with the same seed gives bit-identical results on the same machine at
the same thread count; another thread count (``--threads``), torch version or device
can move them (floating-point sums are reduced in another order). These fields go into
``cv_results.csv``, ``report.md`` and each checkpoint's provenance, so two results that
differ can be told apart by what they ran on.
"""

from __future__ import annotations

import torch

__all__ = ["CSV_FIELDS", "csv_fields", "describe", "run_info"]

#: the run_info fields that go into every results CSV, one column each
CSV_FIELDS = ("torch", "threads", "device", "deterministic_algorithms", "cudnn_deterministic",
              "cudnn_benchmark")


def run_info(device: str | torch.device | None = None) -> dict:
    """``{"torch", "threads", "device", "deterministic_algorithms",
    "cudnn_deterministic", "cudnn_benchmark"}`` for this process now. ``device`` is
    resolved (``"auto"`` -> ``cpu``/``cuda:0``/``mps``); None leaves it out."""
    from .train import pick_device

    # str(): torch.__version__ is a TorchVersion, which weights_only loading refuses
    info = {"torch": str(torch.__version__), "threads": torch.get_num_threads()}
    if device is not None:
        dev = device if isinstance(device, torch.device) else pick_device(str(device))
        info["device"] = str(dev)
        if dev.type == "cuda":
            info["device_name"] = torch.cuda.get_device_name(dev)
    info |= {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
             "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
             "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}
    return info


def describe(info: dict) -> str:
    """One line, e.g. ``torch 2.5.1, 2 CPU thread(s), device cpu, deterministic
    algorithms off (cudnn.deterministic off, cudnn.benchmark off)``."""
    def onoff(key: str) -> str:
        return "on" if info.get(key) else "off"

    device = info.get("device", "?")
    if "device_name" in info:
        device += f" ({info['device_name']})"
    return (f"torch {info.get('torch')}, {info.get('threads')} CPU thread(s), device {device}, "
            f"deterministic algorithms {onoff('deterministic_algorithms')} "
            f"(cudnn.deterministic {onoff('cudnn_deterministic')}, cudnn.benchmark "
            f"{onoff('cudnn_benchmark')})")


def csv_fields(info: dict) -> dict:
    """The :data:`CSV_FIELDS` of ``info`` (missing ones empty), for a results CSV row."""
    return {k: info.get(k, "") for k in CSV_FIELDS}
