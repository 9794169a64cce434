"""The kit's jobs as plain functions: data, teacher, student, evaluation, demo.

The CLI and the notebooks call these; each is a few lines over the library so that a
learner can read what a command does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import synthendo
from .accel import amp_dtype
from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config, method_config, to_dict
from .data import ImageSet
from .distill import Distiller, build_distiller
from .distributed import rank
from .files import readable
from .mechanism import make_probe
from .metrics import Estimate, bootstrap_metrics
from .models import Classifier, freeze
from .runinfo import run_info
from .synthendo import generate
from .train import FitResult, fit, pick_device, predict, seed_everything

# The generator's code version: a changed SynthEndo draws other images from the same config,
# so every cache key that depends on the data includes it.
GENERATOR_VERSION = hashlib.sha256(Path(synthendo.__file__).read_bytes()).hexdigest()[:12]


def make_data(cfg: Config) -> dict[str, ImageSet]:
    """SynthEndo splits for this config (deterministic from ``cfg.data.seed``)."""
    return generate(cfg.data)


def _key(*parts) -> str:
    blob = json.dumps([dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p
                       for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class Evaluation:
    """Metrics with 95% bootstrap intervals, and the probabilities they came from."""

    metrics: dict[str, Estimate]
    probs: np.ndarray
    labels: np.ndarray


def evaluate(model: torch.nn.Module, images: ImageSet, device: torch.device,
             n_boot: int = 1000, seed: int = 0, runtime=None) -> Evaluation:
    """Metrics on ``images`` with bootstrap intervals (``runtime``: see :mod:`.accel`)."""
    probs = predict(model, images, device, runtime=runtime)
    labels = images.labels.numpy()
    return Evaluation(bootstrap_metrics(labels, probs, n_boot=n_boot, seed=seed), probs, labels)


def train_teacher(cfg: Config, sets: dict[str, ImageSet], out_dir: str | Path | None = None,
                  progress: bool = True, cache: bool = True) -> tuple[Classifier, dict]:
    """Train the NBI teacher (or load it from the cache), freeze it, return (teacher, info).

    The cache file is ``<out_dir>/teacher-<key>.pt`` where the key hashes the data (less the
    WLI split sizes, which do not change the NBI splits), model, teacher-training settings,
    seed, precision (fp32 or bf16) and ``GENERATOR_VERSION``, so a changed setting or
    generator never reuses a stale teacher. ``info["loaded"]`` says whether it came from the
    cache.
    """
    device = pick_device(cfg.device)
    # the teacher sees only the NBI splits, which do not depend on the WLI split sizes
    nbi_data = dataclasses.replace(cfg.data, n_wli_train=0, n_wli_val=0, n_wli_test=0)
    parts = [nbi_data, cfg.model, cfg.teacher, cfg.seed, GENERATOR_VERSION]
    if amp_dtype(cfg.runtime, device) is not None:
        parts.append("bf16")
    key = _key(*parts)
    path = Path(out_dir) / f"teacher-{key}.pt" if out_dir is not None else None
    nbi = sets["nbi_train"]
    teacher = Classifier(cfg.model, nbi.num_classes)
    if cache and path is not None and path.exists():
        ck = load_checkpoint(path, required=("model", "info"))
        teacher.load_state_dict(ck["model"])
        return freeze(teacher.to(device)), {**ck["info"], "loaded": True}
    seed_everything(cfg.seed)
    teacher = Classifier(cfg.model, nbi.num_classes)
    wrapper = Distiller(teacher)
    result = fit(wrapper, nbi, sets["nbi_val"], cfg.teacher, device, seed=cfg.seed,
                 progress=progress, desc="teacher (NBI)", runtime=cfg.runtime)
    info = {"best_epoch": result.best_epoch, "best_val_auc": result.best_val_auc,
            "seconds": result.seconds, "history": result.history, "key": key,
            "class_names": nbi.class_names}
    if path is not None and rank() == 0:
        save_checkpoint(path, {"model": teacher.state_dict(), "info": info,
                               "config": to_dict(cfg)})
    return freeze(teacher), {**info, "loaded": False}


def provenance(cfg: Config, images: ImageSet) -> dict:
    """What a student checkpoint was trained on, for ``checkpoint.check_provenance``:
    ``{"data": {"source": "synthendo", "config": ...} or {"source": "real", "root": ...,
    "class_names": [...]}, "model": {"backbone": ..., "num_classes": K}, "runtime": ...}``;
    ``runtime`` (torch version, threads, device, determinism: :func:`runinfo.run_info`) is
    a record, never compared."""
    meta = images.meta or {}
    if meta.get("source") == "SynthEndo":
        data = {"source": "synthendo", "config": to_dict(cfg)["data"]}
    else:
        data = {"source": "real", "root": readable(str(meta.get("root"))),
                "class_names": list(images.class_names)}
    return {"data": data, "model": {"backbone": cfg.model.backbone,
                                    "num_classes": images.num_classes},
            "runtime": run_info(cfg.device)}


def train_student(cfg: Config, sets: dict[str, ImageSet], method: str,
                  teacher: Classifier | None = None, out_dir: str | Path | None = None,
                  resume: bool = False, progress: bool = True) -> tuple[Distiller, FitResult]:
    """Train a WLI student with ``method`` (see ``config.METHODS``); best epoch on wli_val.

    The method's own settings (``config.method_config``, e.g. ``pagkd_authors``) are applied
    to ``cfg`` first; ``teacher`` must have been built with the resulting ``cfg.model``."""
    cfg = method_config(cfg, method)
    if teacher is not None and teacher.cfg != cfg.model:
        raise ValueError(f"train_student: method {method!r} runs with model {cfg.model}, but "
                         f"the teacher was built with {teacher.cfg}; train the teacher with "
                         f"config.method_config(cfg, {method!r})")
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    wli = sets["wli_train"]
    student = Classifier(cfg.model, wli.num_classes)
    distiller = build_distiller(method, student, teacher, cfg, wli.num_classes)
    train_n = None
    if distiller.paired:
        train_n = sets["paired_nbi"]
    elif distiller.needs_nbi:
        train_n = sets["nbi_train"]
    run_dir = Path(out_dir) / method if out_dir is not None else None
    prov = provenance(cfg, wli)
    probe = None  # a fixed held-out batch for the per-epoch mechanism log (mechanism.py)
    if distiller.needs_nbi and sets.get("nbi_val") is not None:
        probe = make_probe(sets["wli_val"], sets["nbi_val"], device)
    result = fit(distiller, wli, sets["wli_val"], cfg.train, device, seed=cfg.seed,
                 train_n=train_n, out_dir=run_dir, resume=resume, progress=progress,
                 desc=method, runtime=cfg.runtime, provenance=prov, probe=probe)
    if run_dir is not None and rank() == 0:
        save_checkpoint(run_dir / "best.pt", {
            "distiller": distiller.trainable_state_dict(), "method": method,
            "config": to_dict(cfg), "best_epoch": result.best_epoch,
            "best_val_auc": result.best_val_auc, "history": result.history,
            "provenance": prov,
        })
    return distiller, result


def format_table(rows: list[dict], metrics=("auc", "accuracy", "f1")) -> str:
    """A Markdown table: one row per model, each metric as 'value [low, high]'."""
    head = "| model | evaluated on | " + " | ".join(m.upper() if m == "auc" else m
                                                   for m in metrics) + " | train s |"
    lines = [head, "|" + "---|" * (len(metrics) + 3)]
    for r in rows:
        cells = " | ".join(str(r["metrics"][m]) for m in metrics)
        lines.append(f"| {r['name']} | {r['split']} | {cells} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def demo(cfg: Config, methods=("wli_only", "pagkd"), out_dir: str | Path | None = None,
         progress: bool = True) -> dict:
    """The main job: SynthEndo, NBI teacher, WLI students, a table and an HTML report."""
    from .report import write_report

    t0 = time.perf_counter()
    out = Path(out_dir or Path(cfg.out_dir) / f"demo-{cfg.name}")
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    sets = make_data(cfg)
    teacher, tinfo = train_teacher(cfg, sets, out_dir=out, progress=progress)
    rows, curves = [], {"teacher_nbi": tinfo["history"]}
    ev_t = evaluate(teacher, sets["nbi_test"], device, cfg.bootstrap, cfg.seed, cfg.runtime)
    rows.append({"name": "teacher_nbi", "split": "nbi_test", "metrics": ev_t.metrics,
                 "seconds": tinfo["seconds"], "eval": ev_t})
    for method in methods:
        mc = method_config(cfg, method)  # a method with its own model gets its own teacher
        t = teacher if mc.model == cfg.model else train_teacher(mc, sets, out_dir=out,
                                                                progress=progress)[0]
        distiller, result = train_student(cfg, sets, method, t, out_dir=out, progress=progress)
        ev = evaluate(distiller, sets["wli_test"], device, cfg.bootstrap, cfg.seed, cfg.runtime)
        rows.append({"name": method, "split": "wli_test", "metrics": ev.metrics,
                     "seconds": result.seconds, "eval": ev})
        curves[method] = result.history
    table = format_table(rows)
    wall = time.perf_counter() - t0
    report = write_report(out / "report.html", cfg, rows, curves, table, wall,
                          class_names=sets["wli_test"].class_names)
    (out / "table.md").write_text(table + "\n")
    return {"table": table, "rows": rows, "curves": curves, "report": report, "seconds": wall,
            "out_dir": out}
