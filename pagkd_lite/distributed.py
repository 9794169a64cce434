"""Data parallelism over processes (``torchrun``), kept small enough to read.

Each rank draws its own group steps (same class composition on every rank, see
:class:`GroupSampler`), computes its losses on its own groups, and the gradients are
averaged over ranks with one all-reduce per parameter bucket after ``backward()`` — what
``DistributedDataParallel`` does, written out so that it works for any distiller whatever
its parameters are used for in a step (GKD modules are idle during warm-up, which plain DDP
reports as an error unless ``find_unused_parameters`` is set). BatchNorm buffers are
broadcast from rank 0 before evaluation; evaluation and checkpoints happen on rank 0.

Start: ``torchrun --nproc_per_node 2 -m pagkd_lite train-student --preset smoke``.
Backend: NCCL on CUDA, gloo on CPU.

Work split by task instead of by step (``pagkd-lite cv``: each rank trains whole folds) runs
each task inside :func:`alone`, where this rank trains as one process would, and meets the
other ranks through a :class:`Board` in the job's key-value store: polled, never a
collective, so a rank that waits for another's folds hits no timeout, and a rank that
torchrun stops (:func:`stop_on_sigterm`) can tell which rank failed and what it was doing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator

import torch
import torch.distributed as dist

#: how many :func:`alone` blocks are open (this rank then works as one process)
_ALONE = 0


def job_rank() -> int:
    """This process's rank in the torchrun job (0 when not under torchrun), also inside
    :func:`alone`."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def job_size() -> int:
    """The number of ranks in the torchrun job (1 when not under torchrun), also inside
    :func:`alone`."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_distributed() -> bool:
    """True when training steps are shared with other ranks (under torchrun, outside
    :func:`alone`)."""
    return _ALONE == 0 and dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Inside: this rank trains, predicts and saves as one process would (``rank()`` 0,
    ``world_size()`` 1, no gradient averaging or gathering), although it is one rank of a
    torchrun job; :func:`job_rank` still says which. For work split by task (a fold per
    rank), where the ranks must not wait for each other's steps."""
    global _ALONE
    _ALONE += 1
    try:
        yield
    finally:
        _ALONE -= 1


def init_from_env(device_type: str = "cpu") -> bool:
    """Join the process group that ``torchrun`` describes in the environment.

    Returns True when running distributed (WORLD_SIZE > 1), else False and does nothing.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def shutdown() -> None:
    """Leave the process group (call at the end of a torchrun job; a no-op otherwise).
    Exiting with the group still open can abort the process (gloo's threads)."""
    if dist.is_available() and dist.is_initialized():
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


# ------------------------------------------------------------------ work split by task
class RankStopped(BaseException):
    """Raised in this rank's main thread when torchrun stops it (SIGTERM: torchrun sends it
    to every other rank when one fails). A ``BaseException``, like ``KeyboardInterrupt``,
    so that no ``except Exception`` on the way swallows it."""


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Inside: SIGTERM raises :class:`RankStopped` (in the main thread; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise RankStopped("stopped by SIGTERM")

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


class Board:
    """A torchrun job's shared notes, kept in the key-value store its ranks met through
    (torchrun's agent holds it, so it outlives a rank that dies).

    Each rank says what it is doing (:meth:`doing`), posts results (:meth:`put`) and waits
    for the others' by polling (:meth:`wait`): no collective, so no timeout however long
    the wait. Keys live under ``pagkd/<topic>/<restart count>/``, so a job that torchrun
    restarts starts a clean board.

    Args:
        topic: the work the ranks share (e.g. ``"cv"``).
        poll: seconds between two looks at the store while waiting.
    """

    def __init__(self, topic: str, poll: float = 0.2) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("Board: needs the torchrun process group (init_from_env)")
        self.store = dist.distributed_c10d._get_default_store()
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        self.prefix = f"pagkd/{topic}/{restart}/"
        self.rank, self.size, self.poll = job_rank(), job_size(), float(poll)

    def put(self, key: str, value: str) -> None:
        self.store.set(self.prefix + key, value.encode("utf-8"))

    def has(self, key: str) -> bool:
        return bool(self.store.check([self.prefix + key]))

    def get(self, key: str) -> str:
        """The value of ``key``, which must be there (:meth:`has`, :meth:`wait`)."""
        return self.store.get(self.prefix + key).decode("utf-8")

    def wait(self, keys: list[str]) -> None:
        """Return once every one of ``keys`` is on the board."""
        pending = list(keys)
        while pending:
            pending = [k for k in pending if not self.has(k)]
            if pending:
                time.sleep(self.poll)

    def doing(self, what: str) -> None:
        """Say what this rank is doing now (read back after a failure: :meth:`stopped`)."""
        self.put(f"doing/{self.rank}", what)

    def stopped(self, grace: float = 5.0) -> tuple[dict[int, str], bool]:
        """After :class:`RankStopped`: mark this rank stopped and give the other stopped
        ranks ``grace`` seconds to do the same. Returns ``({rank: what it was doing}`` for
        the ranks that did not (the ones that failed), ``whether this rank is the one to say
        so)``: exactly one rank is. Where the store cannot be reached (its host is gone),
        ``({}, True)``."""
        try:
            self.put(f"stopped/{self.rank}", "1")
            end = time.monotonic() + grace
            while True:
                silent = [q for q in range(self.size) if not self.has(f"stopped/{q}")]
                if len(silent) <= 1 or time.monotonic() > end:
                    break
                time.sleep(0.1)
            gone = {q: self.get(f"doing/{q}") if self.has(f"doing/{q}") else "starting"
                    for q in silent}
            return gone, self.store.add(self.prefix + "reporter", 1) == 1
        except (RuntimeError, OSError):  # the store's host is gone too
            return {}, True
