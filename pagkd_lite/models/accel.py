"""Speed switches for a GPU: bf16 autocast, channels_last, pinned memory, torch.compile.

None of these changes the method; each is a way of running the same arithmetic faster.
They live in one :class:`RuntimeConfig` (``cfg.runtime``, changed with
``--set runtime.precision=bf16`` and the like) and are applied in three places:

* :func:`place` moves a distiller to the device, converts it to ``channels_last`` and
  compiles each backbone in place (``nn.Module.compile``, so state-dict keys do not change);
* :func:`host_to_device` copies a uint8 batch through pinned memory with a non-blocking copy;
* :func:`autocast` wraps the forward passes. The losses themselves (GKD-Pro, GKD-Den,
  Grad-CAM weights, logit KD) always run in float32: they switch autocast off locally and
  cast their inputs up, so only the backbones and heads run in bf16.

``"auto"`` means: on CUDA, bf16 (where the card supports it) and channels_last; elsewhere
float32 and the default memory format, so CPU numbers never change with this module.
``compile`` is off by default (it costs a minute or more of compilation per model).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16")
SWITCHES = ("auto", "on", "off")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


@dataclass
class RuntimeConfig:
    """How to run on the device (not what to compute).

    Attributes:
        precision: ``auto`` (bf16 on a CUDA card that supports it, else fp32), ``fp32`` or
            ``bf16`` (autocast; bf16 on the CPU works too, mostly to test the code path).
        channels_last: ``auto`` (on for CUDA), ``on`` or ``off``: NHWC memory layout for
            the backbones and their inputs (faster convolutions on tensor cores).
        compile: ``off`` or a ``torch.compile`` mode (``default``, ``reduce-overhead``,
            ``max-autotune``), applied to every backbone.
        compile_backend: ``torch.compile`` backend (``inductor``; ``eager`` only traces,
            which the tests use to check the wiring quickly).
        pin_memory: on CUDA, copy batches through pinned host memory, non-blocking.
        cudnn_benchmark: on CUDA, let cuDNN pick the fastest kernels for the (fixed)
            input sizes.
    """

    precision: str = "auto"
    channels_last: str = "auto"
    compile: str = "off"
    compile_backend: str = "inductor"
    pin_memory: bool = True
    cudnn_benchmark: bool = True

    def __post_init__(self) -> None:
        for name, allowed in (("precision", PRECISIONS), ("channels_last", SWITCHES),
                              ("compile", COMPILE_MODES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"RuntimeConfig.{name} must be one of {allowed}, "
                                 f"got {getattr(self, name)!r}")


def amp_dtype(rt: RuntimeConfig | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for this run (``torch.bfloat16``), or None for float32."""
    if rt is None or rt.precision == "fp32":
        return None
    if rt.precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def use_channels_last(rt: RuntimeConfig | None, device: torch.device) -> bool:
    if rt is None or rt.channels_last == "off":
        return False
    return rt.channels_last == "on" or device.type == "cuda"


def describe(rt: RuntimeConfig | None, device: torch.device) -> str:
    """One line for logs and result files, e.g. ``cuda, bf16, channels_last, compile=off``."""
    dtype = amp_dtype(rt, device)
    parts = [str(device), "bf16 autocast" if dtype is not None else "fp32"]
    if use_channels_last(rt, device):
        parts.append("channels_last")
    parts.append(f"compile={rt.compile if rt is not None else 'off'}")
    return ", ".join(parts)


def autocast(rt: RuntimeConfig | None, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` in bf16 where the run asks for it, else a no-op context."""
    dtype = amp_dtype(rt, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def float32_region(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast switched off on ``t``'s device: the losses compute in float32 in here."""
    return torch.autocast(device_type=t.device.type, enabled=False)


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """float16 / bfloat16 -> float32; float32, float64 and integer tensors unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def float32(fn: Callable) -> Callable:
    """Decorator for a loss: under autocast, run ``fn`` with autocast switched off and its
    half-precision tensor arguments cast to float32. Without autocast it calls ``fn``
    unchanged (same tensors, same numbers)."""

    def up(a):
        return at_least_float32(a) if isinstance(a, torch.Tensor) else a

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        if first is None or not torch.is_autocast_enabled(first.device.type):
            return fn(*args, **kwargs)
        with float32_region(first):
            return fn(*map(up, args), **{k: up(v) for k, v in kwargs.items()})

    return wrapper


def setup(rt: RuntimeConfig | None, device: torch.device) -> None:
    """Process-wide switches (cuDNN autotuning) for a CUDA run; nothing on other devices."""
    if rt is not None and device.type == "cuda":
        torch.backends.cudnn.benchmark = rt.cudnn_benchmark


def place(module: nn.Module, rt: RuntimeConfig | None, device: torch.device) -> nn.Module:
    """Move ``module`` to ``device``; channels_last and in-place compile of every backbone.

    Backbones are the ``backbone`` attribute of each
    :class:`~pagkd_lite.models.classifier.Classifier`
    inside ``module`` (student and teacher). Compiling is idempotent: an already compiled
    backbone is left alone.
    """
    from .classifier import Classifier

    module.to(device)
    if use_channels_last(rt, device):
        module.to(memory_format=torch.channels_last)
    if rt is not None and rt.compile != "off":
        for m in module.modules():
            compiled = getattr(getattr(m, "backbone", None), "_compiled_call_impl", None)
            if isinstance(m, Classifier) and compiled is None:
                kwargs = {"backend": rt.compile_backend}
                if rt.compile != "default":
                    kwargs["mode"] = rt.compile
                m.backbone.compile(**kwargs)
    return module


def input_format(x: torch.Tensor, rt: RuntimeConfig | None) -> torch.Tensor:
    """A network input in the memory format of the run (NHWC with channels_last)."""
    if use_channels_last(rt, x.device):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def host_to_device(images: torch.Tensor, index: torch.Tensor, device: torch.device,
                   rt: RuntimeConfig | None) -> torch.Tensor:
    """``images[index]`` on ``device``: through pinned memory and a non-blocking copy on CUDA.

    ``images`` is the (N, 3, H, W) uint8 set in host memory; only the batch is copied.
    """
    batch = images[index]
    if device.type != "cuda":
        return batch.to(device)
    if rt is None or rt.pin_memory:
        batch = batch.pin_memory()
    return batch.to(device, non_blocking=True)
