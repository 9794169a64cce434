"""The kit's jobs as plain functions: data, SSL backbone, teacher, student, evaluation, demo.

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

from ..config import Config, key_dict, method_config, to_dict
from ..data import synthendo
from ..data.image_rows import in_chunks
from ..data.imageset import ImageSet
from ..data.synthendo import generate
from ..distributed import rank
from ..errors import CheckpointError
from ..files import readable
from ..method.distill import build_distiller
from ..method.distiller import Distiller
from ..models.accel import amp_dtype
from ..models.classifier import Classifier, freeze
from ..models.pretrain import pretrain
from .checkpoint import check_provenance, load_checkpoint, save_checkpoint
from .mechanism import make_probe, nbi_twins
from .metrics import Estimate, bootstrap_metrics
from .runinfo import run_info
from .train import (
    FitResult,
    fit,
    nbi_role,
    nbi_training_set,
    pick_device,
    predict,
    seed_everything,
)

# The generator's code version: a changed SynthEndo draws other images from the same config,
# so every cache key that depends on the data includes it.
GENERATOR_VERSION = synthendo.generator_version()


def make_data(cfg: Config) -> dict[str, ImageSet]:
    """SynthEndo splits for this config (deterministic from ``cfg.data.seed``)."""
    return generate(cfg.data)


def _key(*parts) -> str:
    blob = json.dumps([dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p
                       for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ------------------------------------------------------------------ the SSL backbone
def _backbone_fields(cfg: Config) -> dict:
    """The model settings that make the backbone (what an SSL checkpoint depends on and is
    checked against); the head's (``dim``, ``head_input``, ``token_bias``) do not."""
    m = cfg.model
    return {"backbone": m.backbone, "feature_index": m.feature_index,
            "pretrained": m.pretrained}


def _images_digest(*image_sets: ImageSet) -> str:
    """sha256 (12 hex digits) of the sets' image tensors: which images, in which order. Read
    chunk by chunk (:func:`~pagkd_lite.data.image_rows.in_chunks`), so a subset that is a
    view over the decode store is never copied whole into memory; the digest is that of the
    whole tensor."""
    h = hashlib.sha256()
    for s in image_sets:
        h.update(f"{s.modality}{tuple(s.images.shape)}".encode())
        for chunk in in_chunks(s.images):
            h.update(chunk.numpy())
    return h.hexdigest()[:12]


def ssl_provenance(cfg: Config, sets: dict[str, ImageSet]) -> dict:
    """What the SSL backbone of ``cfg`` on ``sets`` is trained on: ``data`` (as
    :func:`provenance`), ``model`` (:func:`_backbone_fields`), ``splits`` (the image count
    of each split used: ``wli_train`` and ``nbi_train``, the only ones ever read),
    ``images_sha256``, ``generator_version`` and ``runtime`` (a record, never compared)."""
    wli, nbi = sets["wli_train"], sets["nbi_train"]
    return {"data": provenance(cfg, wli)["data"], "model": _backbone_fields(cfg),
            "splits": {"wli_train": len(wli), "nbi_train": len(nbi)},
            "images_sha256": _images_digest(wli, nbi), "generator_version": GENERATOR_VERSION,
            "runtime": run_info(cfg.device)}


def ssl_key(cfg: Config, sets: dict[str, ImageSet]) -> str:
    """The SSL checkpoint's key: the data config, the backbone settings, ``cfg.pretrain``,
    the seed, ``GENERATOR_VERSION`` and the digest of the WLI and NBI training images (so
    real data, whose folds the data config does not describe, is keyed by its images)."""
    digest = _images_digest(sets["wli_train"], sets["nbi_train"])
    return _key(cfg.data, _backbone_fields(cfg), cfg.pretrain, cfg.seed, GENERATOR_VERSION,
                digest)


def load_ssl_checkpoint(path: str | Path, cfg: Config, sets: dict[str, ImageSet]) -> dict:
    """An SSL checkpoint (``weights_only=True``), refused with a :class:`CheckpointError`
    when it was pretrained on other data (source, config or class names, or other training
    images), for another backbone, or with other ``pretrain`` settings."""
    ck = load_checkpoint(path, required=("backbone", "pretrain", "history", "key",
                                         "provenance"), what="SSL checkpoint")
    want = ssl_provenance(cfg, sets)
    check_provenance(path, ck, data=want["data"], model=want["model"])
    old = ck["provenance"]
    for name in ("feature_index", "pretrained"):
        if old["model"].get(name) != want["model"][name]:
            raise CheckpointError(f"SSL checkpoint {path}: pretrained with model.{name} "
                                  f"{old['model'].get(name)!r}, this run has "
                                  f"{want['model'][name]!r}")
    for name in ("splits", "images_sha256"):
        if old.get(name) != want[name]:
            raise CheckpointError(f"SSL checkpoint {path}: pretrained on other training images "
                                  f"({name} {old.get(name)!r}; this run has {want[name]!r})")
    if ck["key"] != ssl_key(cfg, sets):
        raise CheckpointError(f"SSL checkpoint {path}: made with other pretrain settings, seed "
                              f"or generator version (key {ck['key']}, this run's "
                              f"{ssl_key(cfg, sets)})")
    return ck


def pretrained_backbone(cfg: Config, sets: dict[str, ImageSet],
                        out_dir: str | Path | None = None, progress: bool = True,
                        cache: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """The SimCLR backbone of ``cfg`` on the current data (:mod:`pagkd_lite.models.pretrain`),
    trained once, then loaded from ``<out_dir>/ssl-<ssl_key>.pt``. Returns
    ``(backbone state dict, info)``; ``info``: ``key``, ``path`` (None without ``out_dir``),
    ``loaded``, ``history`` (mean NT-Xent per epoch), ``final_loss``, ``seconds``.

    Only ``sets["wli_train"]`` and ``sets["nbi_train"]`` are read, and only their images go
    to :func:`pretrain.pretrain`: no label, no validation or test image. The checkpoint holds
    the backbone, ``pretrain`` (the settings), ``history``, ``seconds``, ``key`` and
    ``provenance`` (:func:`ssl_provenance`).
    """
    wli, nbi = sets["wli_train"], sets["nbi_train"]
    key = ssl_key(cfg, sets)
    path = Path(out_dir) / f"ssl-{key}.pt" if out_dir is not None else None
    if cache and path is not None and path.exists():
        ck = load_ssl_checkpoint(path, cfg, sets)
        return ck["backbone"], {"key": key, "path": path, "loaded": True,
                                "history": ck["history"], "final_loss": ck["history"][-1]["loss"],
                                "seconds": ck["seconds"]}
    result = pretrain(cfg.model, wli.images, nbi.images, cfg.pretrain, pick_device(cfg.device),
                      seed=cfg.seed, progress=progress, desc="ssl (WLI+NBI train)")
    if path is not None and rank() == 0:
        save_checkpoint(path, {"backbone": result.backbone, "pretrain": to_dict(cfg)["pretrain"],
                               "history": result.history, "seconds": result.seconds,
                               "key": key, "provenance": ssl_provenance(cfg, sets)})
    return result.backbone, {"key": key, "path": path, "loaded": False,
                             "history": result.history,
                             "final_loss": result.history[-1]["loss"], "seconds": result.seconds}


def build_classifier(cfg: Config, sets: dict[str, ImageSet], num_classes: int,
                     ssl_dir: str | Path | None = None, progress: bool = True) -> Classifier:
    """A fresh Classifier to train, the one place teacher and student are made.

    ``model.init = "scratch"``: ``seed_everything(cfg.seed)``, then ``Classifier`` (random
    weights, or ImageNet's with ``model.pretrained``). ``"ssl"``: the same, then the backbone
    from :func:`pretrained_backbone` (cached in ``ssl_dir``); the embedding and the head stay
    as drawn. The SSL backbone is fetched BEFORE seeding, so the global random state after
    this call is the same whether it was trained now or loaded.
    """
    state = (pretrained_backbone(cfg, sets, ssl_dir, progress)[0]
             if cfg.model.init == "ssl" else None)
    seed_everything(cfg.seed)
    model = Classifier(cfg.model, num_classes)
    if state is not None:
        model.backbone.load_state_dict(state)
    return model


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
                  progress: bool = True, cache: bool = True,
                  ssl_dir: str | Path | None = None) -> tuple[Classifier, dict]:
    """Train the NBI teacher (or load it from the cache), freeze it, return (teacher, info).

    The cache file is ``<out_dir>/teacher-<key>.pt`` where the key hashes the data (less the
    WLI split sizes, which do not change the NBI splits), model, teacher-training settings,
    seed, precision (fp32 or bf16) and ``GENERATOR_VERSION``, so a changed setting or
    generator never reuses a stale teacher; with ``model.init = "ssl"`` also the SSL
    backbone's key (:func:`ssl_key`: the WLI and NBI training images and ``pretrain``).
    ``info["loaded"]`` says whether it came from the cache. The teacher starts as
    :func:`build_classifier` makes it (its SSL checkpoint cached in ``ssl_dir``, default
    ``out_dir``).
    """
    device = pick_device(cfg.device)
    # the teacher sees only the NBI splits, which do not depend on the WLI split sizes
    nbi_data = dataclasses.replace(cfg.data, n_wli_train=0, n_wli_val=0, n_wli_test=0)
    model = {k: v for k, v in key_dict(cfg)["model"].items() if k != "student_init"}
    parts = [nbi_data, model, cfg.teacher, cfg.seed, GENERATOR_VERSION]
    if amp_dtype(cfg.runtime, device) is not None:
        parts.append("bf16")
    if cfg.model.init == "ssl":  # its start depends on the WLI training images too
        parts.append({"ssl": ssl_key(cfg, sets)})
    key = _key(*parts)
    path = Path(out_dir) / f"teacher-{key}.pt" if out_dir is not None else None
    nbi = sets["nbi_train"]
    teacher = Classifier(cfg.model, nbi.num_classes)
    if cache and path is not None and path.exists():
        ck = load_checkpoint(path, required=("model", "info"))
        teacher.load_state_dict(ck["model"])
        return freeze(teacher.to(device)), {**ck["info"], "loaded": True}
    teacher = build_classifier(cfg, sets, nbi.num_classes,
                               ssl_dir=out_dir if ssl_dir is None else ssl_dir,
                               progress=progress)
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


def _teacher_model(model) -> object:
    """A model config as the teacher sees it: ``student_init`` concerns students only."""
    return dataclasses.replace(model, student_init="scratch")


def raw_student(cfg: Config, sets: dict[str, ImageSet], cache_dir: str | Path | None = None,
                progress: bool = True) -> tuple[dict[str, torch.Tensor], float]:
    """The start of a student with ``model.student_init = "wli_only"``: the weights (a
    ``Classifier`` state dict) of the trained ``wli_only`` student of this seed and data (the
    authors' "raw student"), and the seconds its training took (counted in the distilled
    method's time, also when it was cached).

    Trained once by :func:`train_student` with ``student_init = "scratch"`` and cached as
    ``<cache_dir>/raw-student-<key>.pt``; the key hashes the data config, the model (less
    ``student_init``), ``cfg.train``, the seed, the precision, ``GENERATOR_VERSION`` and the
    digest of the WLI training and validation images (real data's folds are not in its
    config), so a cached student is never reused for other data or settings (loaded with
    ``weights_only=True``)."""
    key, path = _raw_student_file(cfg, sets, cache_dir)
    if path is not None and path.exists():
        ck = load_checkpoint(path, required=("model", "seconds", "key"), what="raw student")
        if ck["key"] != key:
            raise CheckpointError(f"raw student {path}: made for key {ck['key']}, this run's "
                                  f"is {key}")
        return ck["model"], float(ck["seconds"])
    scratch = dataclasses.replace(cfg, model=_teacher_model(cfg.model))
    # train_student keeps every wli_only student it trains as the raw student (_keep_raw)
    distiller, result = train_student(scratch, sets, "wli_only", None, progress=progress,
                                      ssl_dir=cache_dir)
    return distiller.student.state_dict(), result.seconds


def _raw_student_file(cfg: Config, sets: dict[str, ImageSet],
                      cache_dir: str | Path | None) -> tuple[str, Path | None]:
    """The raw student's cache key and file, ``<cache_dir>/raw-student-<key>.pt`` (``None``
    without a ``cache_dir``); see :func:`raw_student` for what the key hashes."""
    scratch = dataclasses.replace(cfg, model=_teacher_model(cfg.model))
    device = pick_device(cfg.device)
    parts = [cfg.data, key_dict(scratch)["model"], cfg.train, cfg.seed, GENERATOR_VERSION,
             _images_digest(sets["wli_train"], sets["wli_val"])]
    if amp_dtype(cfg.runtime, device) is not None:
        parts.append("bf16")
    if cfg.model.init == "ssl":
        parts.append({"ssl": ssl_key(cfg, sets)})
    key = _key(*parts)
    path = Path(cache_dir) / f"raw-student-{key}.pt" if cache_dir is not None else None
    return key, path


def _keep_raw(cfg: Config, sets: dict[str, ImageSet], cache_dir: str | Path | None,
              student: Classifier, result: FitResult) -> None:
    """Cache a trained ``wli_only`` student as the raw student of its seed and data, where
    none is cached yet: it is exactly what :func:`raw_student` would train (``wli_only``
    always starts as :func:`build_classifier` makes it, seeded), so a ``pagkd`` run after a
    ``wli_only`` run of the same settings (``make demo``, ``make cache``, a bench seed)
    starts from it instead of training it again. Its seconds stay counted in the warm
    method's time. Without a ``cache_dir`` (or off rank 0) nothing is kept, and the images
    are not read for the key."""
    if cache_dir is None or rank() != 0:
        return
    key, path = _raw_student_file(cfg, sets, cache_dir)
    if path.exists():
        return
    save_checkpoint(path, {"model": student.state_dict(), "seconds": result.seconds,
                           "key": key, "best_epoch": result.best_epoch,
                           "best_val_auc": result.best_val_auc})


def train_student(cfg: Config, sets: dict[str, ImageSet], method: str,
                  teacher: Classifier | None = None, out_dir: str | Path | None = None,
                  resume: bool = False, progress: bool = True,
                  ssl_dir: str | Path | None = None) -> tuple[Distiller, FitResult]:
    """Train a WLI student with ``method`` (see ``distill.METHODS``); best epoch on wli_val.

    The method's own settings (``config.method_config``, e.g. ``pagkd_authors``) are applied
    to ``cfg`` first; ``teacher`` must have been built with the resulting ``cfg.model``.
    The student starts as :func:`build_classifier` makes it (with ``model.init = "ssl"``
    its SSL checkpoint is cached in ``ssl_dir``, default ``out_dir``)."""
    cfg = method_config(cfg, method)
    if teacher is not None and _teacher_model(teacher.cfg) != _teacher_model(cfg.model):
        raise ValueError(f"train_student: method {method!r} runs with model {cfg.model}, but "
                         f"the teacher was built with {teacher.cfg}; train the teacher with "
                         f"config.method_config(cfg, {method!r})")
    device = pick_device(cfg.device)
    wli = sets["wli_train"]
    start_dir = out_dir if ssl_dir is None else ssl_dir
    raw_state, raw_seconds = None, 0.0
    if cfg.model.student_init == "wli_only" and method != "wli_only":
        raw_state, raw_seconds = raw_student(cfg, sets, start_dir, progress=progress)
    # drawn as always (the same random stream afterwards, whether the raw student was
    # trained now or loaded), then overwritten by the raw student's weights
    student = build_classifier(cfg, sets, wli.num_classes, ssl_dir=start_dir,
                               progress=progress)
    if raw_state is not None:
        student.load_state_dict(raw_state)
    distiller = build_distiller(method, student, teacher, cfg, wli.num_classes)
    role = nbi_role(distiller)  # which NBI images it sees: decided there only
    train_n = nbi_training_set(distiller, sets)
    run_dir = Path(out_dir) / method if out_dir is not None else None
    prov = provenance(cfg, wli)
    probe = None  # a fixed held-out batch for the per-epoch mechanism log (mechanism.py)
    if role == "twins":  # true pairs: the NBI twins of the probe's WLI images
        probe = make_probe(sets["wli_val"], nbi_twins(sets["wli_val"]), device, paired=True)
    elif role == "unpaired" and sets.get("nbi_val") is not None:
        probe = make_probe(sets["wli_val"], sets["nbi_val"], device)
    result = fit(distiller, wli, sets["wli_val"], cfg.train, device, seed=cfg.seed,
                 train_n=train_n, out_dir=run_dir, resume=resume, progress=progress,
                 desc=method, runtime=cfg.runtime, provenance=prov, probe=probe)
    result.seconds += raw_seconds  # the raw student's training is part of the method's cost
    if method == "wli_only":
        _keep_raw(cfg, sets, start_dir, distiller.student, result)
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


def teacher_for(cfg: Config, method: str, teacher: Classifier, sets: dict[str, ImageSet],
                out_dir: str | Path | None = None, progress: bool = True) -> Classifier:
    """The teacher ``method`` trains with: ``teacher`` (trained with ``cfg``) when the method's
    own settings (``config.method_config``, e.g. ``pagkd_authors``) leave the model and the
    teacher's training unchanged, else the teacher of those settings (cached like any)."""
    mc = method_config(cfg, method)
    if _teacher_model(mc.model) == _teacher_model(cfg.model) and mc.teacher == cfg.teacher:
        return teacher
    return train_teacher(mc, sets, out_dir=out_dir, progress=progress)[0]


#: the demo's students: the baseline, class-level distillation alone (``logit_kd``), PaGKD as
#: the paper describes it (``pagkd_paper``) and as the kit runs it (``pagkd``: the frozen
#: target, the warm start from the ``wli_only`` student trained just before, + the
#: ``logit_kd`` term; benchmarks/studies/2026-12-07-frozen-target)
DEMO_METHODS = ("wli_only", "logit_kd", "pagkd_paper", "pagkd")


def demo(cfg: Config, methods=DEMO_METHODS, out_dir: str | Path | None = None,
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
        t = teacher_for(cfg, method, teacher, sets, out_dir=out, progress=progress)
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
