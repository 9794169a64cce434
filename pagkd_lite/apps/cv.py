"""``pagkd-lite cv``: the paper's protocol on your own WLI/NBI data.

K-fold cross-validation with predictions pooled over folds (docs/method.md, "Paper setting"):

1. Load the data (:func:`pagkd_lite.data.realdata.load_dataset`: a folder tree or a CSV
   manifest) into ``{"WLI": ImageSet, "NBI": ImageSet}`` and a load report.
2. Build K leakage-free folds over both modalities at once
   (:func:`pagkd_lite.data.splits.lesion_folds`): no patient (or lesion) of a test fold
   appears in that fold's training or validation images, WLI or NBI.
3. Per fold: train the NBI teacher on the fold's NBI training images, train the WLI
   student with the chosen method (best epoch on the fold's WLI validation images), and
   predict the fold's WLI test images.
4. Pool the test predictions over folds (every WLI image is predicted exactly once) and
   score them, with bootstrap 95% intervals; per-fold scores are reported beside them.

Outputs under ``--out`` (default ``runs/cv-<preset>-<method>``): ``cv_results.csv`` (one
row per fold and a pooled row, each with the torch version, thread count, device and
determinism switches it ran with: :mod:`pagkd_lite.training.runinfo`), ``predictions.csv`` (one
row per WLI image), ``report.md``, ``load_report.{json,txt}``,
``fold<i>/<method>/{best,last}.pt`` and ``fold<i>/result.json``.

Each fold's result is kept as soon as the fold ends, so the same command after a kill
trains only the unfinished folds; under torchrun the folds are spread over the ranks and
rank 0 writes the pooled files (:mod:`pagkd_lite.apps.cv_folds`).

A data set that images the same lesions in both modalities (CPC-Paired, PICCOLO, Mesejo et
al.) is used unpaired with ``--unpair`` (:func:`unpaired_folds`): in each fold every training
lesion trains either the NBI teacher or the WLI student, never both (``splits.unpair``).

``paired_oracle`` is refused: it distils from the NBI image of the *same* lesion, which an
unpaired data set does not have, and the folds here hold WLI and NBI images of different
lesions. To compare against true pairs, use ``pagkd-lite bench`` on SynthEndo (which
renders each training lesion in both modalities).
"""

from __future__ import annotations

import csv
import io
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import Config, method_config
from ..data.imageset import ImageSet
from ..data.splits import FOLD_KEYS, GROUP_BY, check_disjoint, unpair
from ..distributed import job_rank, job_size
from ..files import atomic_write_text, readable
from ..method.distill import METHODS
from ..training.metrics import METRICS, Estimate, bootstrap_metrics, compute_metrics
from ..training.runinfo import csv_fields, describe, run_info
from .cv_folds import FoldResult, data_digest, fold_key, run_folds

#: Methods that need an NBI image paired with every WLI training image.
PAIRED_METHODS = tuple(m for m, entry in METHODS.items() if entry.paired)
#: Methods the cross-validation path runs (real data has neither pairs nor true masks).
CV_METHODS = tuple(m for m, entry in METHODS.items()
                   if m not in PAIRED_METHODS and not entry.needs_masks)

FOLD_COLUMNS = ("fold", "n_test", *METRICS)


@dataclass
class CVResult:
    """What :func:`run_cv` returns.

    Attributes:
        method: the student's training method.
        class_names: the label space (index = label).
        folds: one dict per fold: ``fold``, ``n_test``, each metric of
            :data:`pagkd_lite.training.metrics.METRICS` (NaN where a class is missing from the
            fold's test images), ``n_wli_train``, ``n_nbi_train``, ``n_wli_val``, ``n_nbi_val``,
            ``best_epoch``, ``val_auc``, ``teacher_nbi_auc`` (NaN for ``wli_only``),
            ``seconds``, ``ran_on`` (the fold's :func:`~pagkd_lite.training.runinfo.csv_fields`).
        pooled: each metric on the pooled predictions, with its bootstrap 95% interval.
        probs: ``(N, K)`` pooled WLI test probabilities, row i = WLI image i.
        labels: ``(N,)`` WLI labels.
        fold_of: ``(N,)`` the fold that predicted each WLI image.
        out_dir: where the files were written (None: nothing written).
        seconds: wall time.
        files: the files written, by kind (``results``, ``predictions``, ``report``,
            ``load_report``).
    """

    method: str
    class_names: list[str]
    folds: list[dict]
    pooled: dict[str, Estimate]
    probs: np.ndarray
    labels: np.ndarray
    fold_of: np.ndarray
    out_dir: Path | None = None
    seconds: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)

    def table(self) -> str:
        """Markdown: one row per fold and the pooled row (with 95% intervals)."""
        head = "| fold | WLI test images | " + " | ".join(
            m.upper() if m == "auc" else m for m in METRICS) + " |"
        lines = [head, "|" + "---|" * (len(METRICS) + 2)]
        for r in self.folds:
            cells = " | ".join("n/a" if math.isnan(r[m]) else f"{r[m]:.3f}" for m in METRICS)
            lines.append(f"| {r['fold']} | {r['n_test']} | {cells} |")
        cells = " | ".join(str(self.pooled[m]) for m in METRICS)
        lines.append(f"| **pooled** | {len(self.labels)} | {cells} |")
        return "\n".join(lines)


def check_method(method: str) -> None:
    """Raise ``ValueError`` unless ``method`` can run on unpaired cross-validation folds."""
    if method in PAIRED_METHODS:
        raise ValueError(
            f"method {method!r} distils from the NBI image of the same lesion, aligned with "
            f"every WLI training image; the cross-validation path is pairing-free and keeps "
            f"no such alignment (real unpaired data has none). Compare against true pairs "
            f"with `pagkd-lite bench` on SynthEndo instead, or choose one of "
            f"{list(CV_METHODS)}.")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(CV_METHODS)}")


def fold_sets(sets: dict[str, ImageSet], fold: dict) -> dict[str, ImageSet]:
    """The six splits of one fold: ``wli_train, nbi_train, wli_val, nbi_val, wli_test,
    nbi_test`` as ImageSets (``fold`` holds index tensors, see ``splits.lesion_folds``)."""
    return {key: sets[key.split("_")[0].upper()].subset(fold[key]) for key in FOLD_KEYS}


def unpaired_folds(sets: dict[str, ImageSet], folds: list[dict], seed: int,
                   group_by: str = "patient") -> list[dict]:
    """Folds for a *paired* data set used unpaired: in each fold, every training lesion
    group keeps its images of one modality only (``splits.unpair``), so no lesion trains
    both the NBI teacher and the WLI student. Validation and test parts are unchanged."""
    out = []
    for i, fold in enumerate(folds):
        u = unpair(sets, seed + i, fold=fold, group_by=group_by)
        out.append({**fold, "wli_train": u["wli_train"], "nbi_train": u["nbi_train"]})
    return out


def _check_fold(i: int, fs: dict[str, ImageSet], needs_nbi: bool) -> None:
    """Clear errors for folds the training loop cannot use (empty or one-class splits)."""
    keys = ["wli_train", "wli_val", "wli_test"]
    if needs_nbi:
        keys += ["nbi_train", "nbi_val"]
    for key in keys:
        s = fs[key]
        if len(s) == 0:
            raise ValueError(f"fold {i}: {key} is empty ({len(fs['wli_train'])} WLI / "
                             f"{len(fs['nbi_train'])} NBI training images); use fewer folds "
                             f"(--folds) or more data")
        if key.endswith("_val") and min(s.class_counts()) == 0:
            missing = [c for c, n in zip(s.class_names, s.class_counts(), strict=True) if n == 0]
            raise ValueError(
                f"fold {i}: {key} has no images of class(es) {missing} (counts "
                f"{dict(zip(s.class_names, s.class_counts(), strict=True))}); model "
                f"selection needs every class in validation. Use fewer folds (--folds), "
                f"group by lesion (--group-by lesion), a larger --val-fraction, or collect "
                f"more patients of that class.")


def run_cv(cfg: Config, sets: dict[str, ImageSet], folds: list[dict], method: str,
           out_dir: str | Path | None = None, progress: bool = False, *,
           group_by: str = "patient", load_report=None,
           log: Callable[[str], None] | None = print) -> CVResult:
    """Cross-validate ``method`` over ``folds``; pool the WLI test predictions.

    Args:
        cfg: run settings (model, teacher and student training, seed, device, bootstrap).
        sets: ``{"WLI": ImageSet, "NBI": ImageSet}`` (e.g. from ``realdata.load_dataset``).
        folds: fold dicts of index tensors (``splits.lesion_folds``); the WLI test parts
            must partition the WLI images.
        method: a student method of ``distill.METHODS`` except the paired ones.
        out_dir: where to write the CSVs, the report, the load report, each fold's
            student checkpoints and result (a later run with the same settings reads the
            finished folds' results and trains only the others); None writes nothing.
        progress: tqdm bars while training.
        group_by: ``"patient"`` or ``"lesion"``, for the leakage check of every fold.
        load_report: the ``realdata.LoadReport`` to save beside the results (optional).
        log: called with one line per fold (None: silent).

    Under torchrun (every rank calls it with the same arguments) the folds are spread over
    the ranks (:mod:`pagkd_lite.apps.cv_folds`); every rank returns the pooled result and
    rank 0 alone writes the files.

    Returns:
        A :class:`CVResult`.
    """
    check_method(method)
    _check_inputs(sets, folds, group_by)
    wli = sets["WLI"]
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    needs_teacher = METHODS[method].needs_teacher
    _check_folds(sets, folds, group_by, needs_teacher)

    t0 = time.perf_counter()
    digest = data_digest(sets)
    keys = [fold_key(cfg, method, digest, f, csv_fields(run_info(cfg.device))) for f in folds]
    where = f" (rank {job_rank()})" if job_size() > 1 else ""

    def train(i: int) -> FoldResult:
        row, p = _run_fold(cfg, fold_sets(sets, folds[i]), method, needs_teacher,
                           out / f"fold{i}" if out is not None else None, out, progress)
        if log is not None:
            teacher_txt = (f"teacher NBI test AUC {row['teacher_nbi_auc']:.3f}; "
                           if needs_teacher else "")
            log(f"fold {i + 1}/{len(folds)}{where}: {method} WLI test AUC {row['auc']:.3f} "
                f"({row['n_test']} images; {teacher_txt}{row['seconds']:.0f} s)")
        return FoldResult(fold=i, key=keys[i],
                          row={**row, "ran_on": csv_fields(run_info(cfg.device))},
                          probs=np.asarray(p, dtype=np.float64))

    results = run_folds(keys, train, out, log)
    probs = np.full((len(wli), wli.num_classes), np.nan)
    fold_of = np.full(len(wli), -1, dtype=np.int64)
    rows = []
    for i, fold in enumerate(folds):
        idx = fold["wli_test"].numpy()
        probs[idx], fold_of[idx] = results[i].probs, i
        rows.append({"fold": i, **results[i].row})
    labels = wli.labels.numpy()
    pooled = bootstrap_metrics(labels, probs, n_boot=cfg.bootstrap, seed=cfg.seed)
    res = CVResult(method=method, class_names=list(wli.class_names), folds=rows, pooled=pooled,
                   probs=probs, labels=labels, fold_of=fold_of, out_dir=out,
                   seconds=time.perf_counter() - t0)
    if out is not None and job_rank() == 0:
        res.files = write_results(res, cfg, wli, out, load_report=load_report,
                                  group_by=group_by)
    return res


def _check_inputs(sets: dict[str, ImageSet], folds: list[dict], group_by: str) -> None:
    """``sets`` are ``{"WLI", "NBI"}``, there are folds, and their WLI test parts cover every
    WLI image exactly once."""
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {GROUP_BY}, got {group_by!r}")
    if set(sets) != {"WLI", "NBI"}:
        raise ValueError(f"run_cv: sets must be {{'WLI': ImageSet, 'NBI': ImageSet}}, got keys "
                         f"{sorted(sets)}")
    if not folds:
        raise ValueError("run_cv: no folds given")
    count = np.zeros(len(sets["WLI"]), dtype=np.int64)
    for fold in folds:
        count[fold["wli_test"].numpy()] += 1
    if (count != 1).any():
        bad = np.flatnonzero(count != 1)[:10].tolist()
        raise ValueError(f"run_cv: the folds' wli_test parts must cover every WLI image "
                         f"exactly once; WLI images {bad} are tested {count[bad].tolist()} "
                         f"times")


def _check_folds(sets: dict[str, ImageSet], folds: list[dict], group_by: str,
                 needs_teacher: bool) -> None:
    """Every fold checked before any training: no patient or lesion on both sides, every
    part usable; a warning when lesions have training images in both modalities."""
    shared = 0
    for i, fold in enumerate(folds):
        check_disjoint(fold, sets, group_by=group_by)
        fs = fold_sets(sets, fold)
        _check_fold(i, fs, needs_teacher)
        shared += len(set(fs["wli_train"].lesion_ids) & set(fs["nbi_train"].lesion_ids))
    if shared and needs_teacher:
        warnings.warn(f"{shared} lesion(s) (summed over folds) have training images in both "
                      f"WLI and NBI: the teacher sees lesions the student trains on, so the "
                      f"run is not pairing-free. Use unpaired_folds(...) (CLI: --unpair).",
                      stacklevel=3)


def _run_fold(cfg: Config, fs: dict[str, ImageSet], method: str, needs_teacher: bool,
              fold_dir: Path | None, ssl_dir: Path | None,
              progress: bool) -> tuple[dict, np.ndarray]:
    """Train (the teacher and) the student on one fold; ``(row without "fold", WLI test
    probabilities (n_test, K))``."""
    from ..training.pipeline import train_student, train_teacher
    from ..training.train import pick_device, predict

    device = pick_device(cfg.device)
    t_fold = time.perf_counter()
    teacher, teacher_auc = None, float("nan")
    if needs_teacher:
        # No teacher cache: its key hashes the SynthEndo config, which says nothing
        # about which real images are in this fold.
        teacher, _ = train_teacher(method_config(cfg, method), fs, out_dir=None,
                                   progress=progress, cache=False, ssl_dir=ssl_dir)
        if len(fs["nbi_test"]):
            teacher_auc = compute_metrics(fs["nbi_test"].labels.numpy(),
                                         predict(teacher, fs["nbi_test"], device,
                                                 runtime=cfg.runtime))["auc"]
    # with model.init=ssl, teacher and student share the fold's SSL backbone, keyed by
    # the fold's training images (pipeline.ssl_key)
    student, result = train_student(cfg, fs, method, teacher, out_dir=fold_dir,
                                    progress=progress, ssl_dir=ssl_dir)
    p = predict(student, fs["wli_test"], device, runtime=cfg.runtime)
    row = {"n_test": len(p), **compute_metrics(fs["wli_test"].labels.numpy(), p),
           "n_wli_train": len(fs["wli_train"]), "n_nbi_train": len(fs["nbi_train"]),
           "n_wli_val": len(fs["wli_val"]), "n_nbi_val": len(fs["nbi_val"]),
           "best_epoch": result.best_epoch, "val_auc": result.best_val_auc,
           "teacher_nbi_auc": teacher_auc, "seconds": time.perf_counter() - t_fold}
    return row, p


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def write_results(res: CVResult, cfg: Config, wli: ImageSet, out: Path, load_report=None,
                  group_by: str = "patient") -> dict[str, Path]:
    """Write ``cv_results.csv``, ``predictions.csv``, ``report.md`` (and the load report),
    each atomically and durably (UTF-8; names that are not UTF-8 as ``\\xNN``,
    ``files.readable``): a full disk leaves the previous files and ends with an
    :class:`~pagkd_lite.errors.OutputError` naming the file."""
    files = {}
    info = run_info(cfg.device)
    ran_on = csv_fields(info)
    extra = ("n_wli_train", "n_nbi_train", "n_wli_val", "n_nbi_val", "best_epoch", "val_auc",
             "teacher_nbi_auc", "seconds")
    columns = [*FOLD_COLUMNS, *(f"{m}_{b}" for m in METRICS for b in ("low", "high")), *extra,
               *ran_on]
    f = io.StringIO()
    w = csv.DictWriter(f, fieldnames=columns)
    w.writeheader()
    for r in res.folds:
        w.writerow({c: _fmt(r[c]) for c in (*FOLD_COLUMNS, *extra)}
                   | r.get("ran_on", ran_on))
    pooled = {"fold": "pooled", "n_test": len(res.labels), "seconds": _fmt(res.seconds),
              **ran_on}
    for m, e in res.pooled.items():
        pooled |= {m: _fmt(e.value), f"{m}_low": _fmt(e.low), f"{m}_high": _fmt(e.high)}
    w.writerow(pooled)
    files["results"] = atomic_write_text(out / "cv_results.csv", f.getvalue(),
                                          durable=True)

    names = res.class_names
    f = io.StringIO()
    w = csv.writer(f)
    w.writerow(["index", "path", "lesion_id", "patient_id", "fold", "label", "pred",
                *(f"prob_{c}" for c in names)])
    for i in range(len(res.labels)):
        w.writerow([i, readable(wli.paths[i]) if wli.paths else "",
                    readable(wli.lesion_ids[i]), readable(wli.patient_ids[i]),
                    int(res.fold_of[i]), names[res.labels[i]],
                    names[int(res.probs[i].argmax())], *(f"{p:.6f}" for p in res.probs[i])])
    files["predictions"] = atomic_write_text(out / "predictions.csv", f.getvalue(),
                                              durable=True)

    lines = [f"# Cross-validation: {res.method}", "",
             f"{len(res.folds)} folds grouped by {group_by}; predictions pooled over folds; "
             f"intervals: percentile bootstrap over images ({cfg.bootstrap} resamples), "
             f"95%. Wall time {res.seconds:.0f} s.", "",
             f"Config: preset `{cfg.name}`, backbone `{cfg.model.backbone}` "
             f"(pretrained={cfg.model.pretrained}), images {wli.images.shape[-1]} px, teacher "
             f"{cfg.teacher.epochs} epoch(s), student {cfg.train.epochs} epoch(s), batch "
             f"{cfg.train.batch_size}, seed {cfg.seed}.", "",
             f"Ran on: {describe(info)}. The same seed reproduces these numbers bit for bit "
             f"only with the same torch, thread count (`--threads`) and device.", ""]
    if load_report is not None:
        files["load_report"], _ = load_report.save(out / "load_report")
        lines += [f"Data: `{load_report.root}` ({load_report.layout} layout), "
                  f"{load_report.num_loaded} images loaded, {len(load_report.skipped)} "
                  f"skipped, {len(load_report.ignored)} ignored, "
                  f"{len(load_report.duplicates)} duplicate groups (details: "
                  f"`load_report.txt`).", ""]
    counts = ", ".join(f"{c}: {n}" for c, n in zip(names, wli.class_counts(), strict=True))
    lines += [f"WLI images per class: {counts}.", "", res.table(), ""]
    files["report"] = atomic_write_text(out / "report.md", readable("\n".join(lines)),
                                         durable=True)
    return files
