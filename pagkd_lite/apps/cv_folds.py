"""Which folds a ``cv`` run trains, on which rank, and what it keeps of each.

**Resume per fold.** A fold's result (its row of ``cv_results.csv`` and its WLI test
probabilities) is saved as soon as the fold ends, atomically, as
``<out>/fold<i>/result.json``. A restarted run (the same command after a kill, a crash or a
full disk) reads the results whose key matches and trains only the other folds; a fold cut
off part-way is trained again from its start. The key (:func:`fold_key`) hashes the
settings (the config as the cache keys see it, less ``name``, ``out_dir``, ``bootstrap``
and ``device``), the method, the fold's six index arrays, the data (:func:`data_digest`)
and what the fold runs on (torch version, thread count, device type, determinism
switches), so a result is never reused for other data, settings or thread count.
``<out>/fold<i>/RUNNING`` says which rank (pid, host) is training the fold while it runs.

**Folds over torchrun's ranks** (``torchrun --nproc_per_node N -m pagkd_lite cv ...``). Each
rank reads the results it finds under its own ``--out`` and posts them on the job's
:class:`~pagkd_lite.distributed.Board`; the unfinished folds are dealt round-robin (the
``j``-th unfinished fold to rank ``j mod N``), and each rank trains its folds' teacher and
student alone (:func:`~pagkd_lite.distributed.alone`: no gradient traffic), posting each
result when it ends. A rank without a fold says so and waits. Every rank then holds every
fold's result; rank 0 writes the pooled files (and the results it did not train, so that
its ``--out`` is complete when the machines do not share one). At a fixed thread count a
fold gives the same numbers on any rank as in one process, so the pooled result is that
of one process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import Config, key_dict, method_config
from ..data.image_rows import in_chunks
from ..data.imageset import ImageSet
from ..data.splits import FOLD_KEYS
from ..distributed import (
    Board,
    RankStopped,
    alone,
    is_distributed,
    job_rank,
    job_size,
    stop_on_sigterm,
)
from ..errors import RunStopped
from ..files import atomic_write_text, readable

#: the ``format`` of ``result.json``
FORMAT = "pagkd-lite cv fold result 1"
RESULT, RUNNING = "result.json", "RUNNING"
#: config fields that change no fold's numbers
NOT_KEYED = ("name", "out_dir", "bootstrap", "device")


@dataclass
class FoldResult:
    """One finished fold.

    Attributes:
        fold: its index ``i`` (``fold<i>/``).
        key: :func:`fold_key` of the run that made it.
        row: its row of ``cv_results.csv`` without ``fold``: ``n_test``, the metrics, the
            split sizes, ``best_epoch``, ``val_auc``, ``teacher_nbi_auc``, ``seconds`` and
            ``ran_on`` (:func:`pagkd_lite.training.runinfo.csv_fields` where it ran).
        probs: float64 ``(n_test, K)``, the WLI test probabilities, row j = the fold's
            j-th ``wli_test`` image.
    """

    fold: int
    key: str
    row: dict
    probs: np.ndarray

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "fold": self.fold, "key": self.key,
                           "row": self.row, "probs": self.probs.tolist()})

    @classmethod
    def from_json(cls, text: str) -> FoldResult:
        d = json.loads(text)
        if d.get("format") != FORMAT:
            raise ValueError(f"format {d.get('format')!r}, not {FORMAT!r}")
        probs = np.asarray(d["probs"], dtype=np.float64)
        if probs.ndim != 2 or len(probs) != d["row"]["n_test"]:
            raise ValueError(f"{probs.shape} probabilities for {d['row']['n_test']} images")
        return cls(fold=int(d["fold"]), key=str(d["key"]), row=dict(d["row"]), probs=probs)


def data_digest(sets: dict[str, ImageSet]) -> str:
    """sha256 of what the folds index: per modality its labels, class names, lesion and
    patient ids, image shape, and its files' sha256 (real data's ``meta["sha256"]``) or,
    without them, its pixels (read chunk by chunk:
    :func:`~pagkd_lite.data.image_rows.in_chunks`)."""
    h = hashlib.sha256()
    for m in sorted(sets):
        s = sets[m]
        h.update(json.dumps([m, list(s.class_names), s.lesion_ids, s.patient_ids,
                             list(s.images.shape), (s.meta or {}).get("sha256")],
                            ensure_ascii=True).encode())
        h.update(s.labels.numpy().tobytes())
        if not (s.meta or {}).get("sha256"):
            for chunk in in_chunks(s.images):
                h.update(chunk.numpy())
    return h.hexdigest()


def fold_key(cfg: Config, method: str, digest: str, fold: dict, ran_on: dict) -> str:
    """The key of fold ``fold``'s result (see the module docstring): 16 hex digits."""
    settings = {k: v for k, v in key_dict(method_config(cfg, method)).items()
                if k not in NOT_KEYED}
    parts = {"settings": settings, "method": method, "data": digest,
             "fold": {k: [int(i) for i in fold[k]] for k in FOLD_KEYS},
             "ran_on": {**ran_on, "device": str(ran_on.get("device", "")).split(":")[0]}}
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_finished(out: Path | None, keys: list[str],
                  log: Callable[[str], None] | None = None) -> dict[int, FoldResult]:
    """The folds whose ``<out>/fold<i>/result.json`` holds a result with key ``keys[i]``;
    one the run cannot use (other settings or data, unreadable) is named in ``log`` and
    trained again."""
    done: dict[int, FoldResult] = {}
    if out is None:
        return done
    for i, key in enumerate(keys):
        path = out / f"fold{i}" / RESULT
        if not path.exists():
            continue
        try:
            res = FoldResult.from_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError) as err:
            why = f"unreadable ({type(err).__name__}: {err})"
        else:
            if res.key == key and res.fold == i:
                done[i] = res
                continue
            why = "made with other settings, data or thread count"
        if log is not None:
            log(f"fold {i + 1}/{len(keys)}: {readable(str(path))} {why}: trained again")
    return done


def save(out: Path | None, res: FoldResult) -> None:
    """Write ``<out>/fold<i>/result.json`` atomically and remove its ``RUNNING`` note."""
    if out is None:
        return
    folder = out / f"fold{res.fold}"
    atomic_write_text(folder / RESULT, res.to_json(), durable=True)
    (folder / RUNNING).unlink(missing_ok=True)


def _running(out: Path | None, i: int) -> None:
    """``<out>/fold<i>/RUNNING``: which rank, pid and host train fold ``i`` now."""
    if out is not None:
        atomic_write_text(out / f"fold{i}" / RUNNING, json.dumps(
            {"rank": job_rank(), "pid": os.getpid(), "host": socket.gethostname()}))


def run_folds(keys: list[str], train: Callable[[int], FoldResult], out: Path | None,
              log: Callable[[str], None] | None = None) -> dict[int, FoldResult]:
    """Every fold's result: read where finished (:func:`read_finished`), else trained by
    ``train(i)`` and saved at once (:func:`save`). Under torchrun the unfinished folds are
    spread over the ranks and every rank returns every fold's result (module docstring).

    Args:
        keys: :func:`fold_key` of each fold, in fold order.
        train: trains fold ``i`` and returns its result (run by one rank, alone).
        out: the run's folder (None: nothing read or written).
        log: called with one line per fold read, trained, or waited for.
    """
    say = log if log is not None else (lambda line: None)
    if not is_distributed():
        done = read_finished(out, keys, say)
        for i in sorted(done):
            say(f"fold {i + 1}/{len(keys)}: finished before, read from "
                f"{readable(str(out / f'fold{i}' / RESULT))}")
        for i in range(len(keys)):
            if i not in done:
                _running(out, i)
                done[i] = train(i)
                save(out, done[i])
        return done
    return _run_on_ranks(keys, train, out, say)


def _run_on_ranks(keys: list[str], train: Callable[[int], FoldResult], out: Path | None,
                  say: Callable[[str], None]) -> dict[int, FoldResult]:
    board, me, size = Board("cv"), job_rank(), job_size()
    mine = read_finished(out, keys, say if me == 0 else None)
    board.put(f"finished/{me}", json.dumps({i: r.to_json() for i, r in mine.items()}))
    board.wait([f"finished/{q}" for q in range(size)])
    done: dict[int, FoldResult] = {}
    for q in range(size):
        for i, text in json.loads(board.get(f"finished/{q}")).items():
            done.setdefault(int(i), FoldResult.from_json(text))
    if me == 0:
        for i in sorted(done):
            say(f"fold {i + 1}/{len(keys)}: finished before, not trained again")
    todo = [i for i in range(len(keys)) if i not in done]
    assigned = todo[me::size]
    if not assigned:
        say(f"rank {me}: no fold to train ({len(todo)} unfinished fold(s) for {size} "
            f"ranks); waiting for the other ranks")
    for i in assigned:
        board.doing(f"fold {i + 1}/{len(keys)}"
                    + (f" ({readable(str(out / f'fold{i}'))})" if out is not None else ""))
        _running(out, i)
        with alone():
            res = train(i)
        save(out, res)
        board.put(f"result/{i}", res.to_json())
    board.doing("waiting for the other ranks' folds")
    board.wait([f"result/{i}" for i in todo])
    for i in todo:
        done[i] = FoldResult.from_json(board.get(f"result/{i}"))
        if me == 0 and i not in assigned and out is not None:
            if not (out / f"fold{i}" / RESULT).exists():  # machines without a shared --out
                save(out, done[i])
    board.doing("writing the results" if me == 0 else "done")
    return done


def stop_message(gone: dict[int, str], out: Path | None) -> str:
    """The one line for a torchrun job stopped because ranks ``gone`` (rank -> what it was
    doing) failed; empty ``gone``: the store could not say which."""
    keep = (f"the finished folds are kept ({readable(str(out))}/fold<i>/{RESULT}): run the "
            f"same command again to train the unfinished folds only" if out is not None
            else "nothing was kept (no --out)")
    if not gone:
        return (f"rank {job_rank()} was stopped by torchrun because another rank failed "
                f"(torchrun's message names it); {keep}")
    who = "; ".join(f"rank {q} stopped during {what}" for q, what in sorted(gone.items()))
    return (f"{who} (killed, or failed: torchrun's message says which); the other ranks "
            f"were stopped; {keep}")


@contextlib.contextmanager
def stop_on_failure(out: Path | None) -> Iterator[None]:
    """Under torchrun, around a whole ``cv`` command: a rank that torchrun stops because
    another failed (:class:`~pagkd_lite.distributed.RankStopped`) ends with
    :class:`~pagkd_lite.errors.RunStopped`, whose message (:func:`stop_message`) one rank
    gives and the others leave empty. Outside torchrun it does nothing.

    Args:
        out: the run's folder (for the message).
    """
    if job_size() <= 1:
        yield
        return
    board = Board("cv")
    board.doing("loading the data")
    try:
        with stop_on_sigterm():
            yield
    except RankStopped:
        gone, speak = board.stopped()
        raise RunStopped(stop_message(gone, out) if speak else "") from None
