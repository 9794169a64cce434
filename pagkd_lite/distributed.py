"""Data parallelism over processes (``torchrun``), kept small enough to read.

Each rank draws its own group steps (same class composition on every rank, see
:class:`GroupSampler`), computes its losses on its own groups, and the gradients are
averaged over ranks with one all-reduce per parameter bucket after ``backward()`` — what
``DistributedDataParallel`` does, written out so that it works for any distiller whatever
its parameters are used for in a step (GKD modules are idle during warm-up, which plain DDP
reports as an error unless ``find_unused_parameters`` is set). BatchNorm buffers are
broadcast from rank 0 before evaluation; evaluation and checkpoints happen on rank 0.

Start: ``torchrun --nproc_per_node 2 -m pagkd_lite.apps.cli train-student --preset smoke``.
Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def init_from_env(device_type: str = "cpu") -> bool:
    """Join the process group that ``torchrun`` describes in the environment.

    Returns True when running distributed (WORLD_SIZE > 1), else False and does nothing.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def shutdown() -> None:
    """Leave the process group (call at the end of a torchrun job; a no-op otherwise).
    Exiting with the group still open can abort the process (gloo's threads)."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average ``.grad`` over ranks (zeros stand in for parameters unused on a rank)."""
    if not is_distributed():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
    if not is_distributed():
        return
    for b in module.buffers():
        dist.broadcast(b, src=0)


class _AllGatherRows(torch.autograd.Function):
    """All-gather along dim 0 with the gradient sent back to the rows' owners.

    Forward: every rank's ``(n_r, ...)`` rows, padded to the largest ``n_r`` for
    ``all_gather`` and concatenated in rank order. Backward: each rank's loss may use every
    rank's rows, so the incoming gradients are summed over ranks (``all_reduce``) and each
    rank keeps the slice of its own rows.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        padded = x.new_zeros((max(sizes), *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        ctx.start = sum(sizes[: rank()])
        ctx.n = x.shape[0]
        return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.start : ctx.start + ctx.n], None


def all_gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every rank's rows of ``x`` (``(n_r, ...)``, ``n_r`` may differ), concatenated in rank
    order, and where this rank's rows start. Differentiable: a loss on the result sends
    gradients back to the rank that owns each row. Not distributed: ``(x, 0)``.

    Every rank must call it (a collective), and every rank's loss must depend on the result
    when ``backward()`` runs, or the ranks wait for each other forever.
    """
    if not is_distributed():
        return x, 0
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    sizes_int = [int(s) for s in sizes]
    return _AllGatherRows.apply(x.contiguous(), sizes_int), sum(sizes_int[: rank()])


def gather_rows(local: torch.Tensor, index: torch.Tensor, total: int) -> torch.Tensor:
    """Reassemble rows computed on each rank (``local[i]`` is row ``index[i]``) into one
    ``(total, ...)`` tensor, the same on every rank."""
    if not is_distributed():
        out = local.new_empty((total, *local.shape[1:]))
        out[index] = local
        return out
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, (index.cpu(), local.cpu()))
    out = local.new_empty((total, *local.shape[1:])).cpu()
    for idx, rows in parts:
        out[idx] = rows
    return out
