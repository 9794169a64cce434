"""Class mode: the course's models, trained once and loaded in seconds afterwards.

``make cache`` (= ``pagkd-lite cache --preset demo``) trains the NBI teacher and the WLI
students of notebooks 02-06 into one folder, ``<root>/<key>/``; the notebooks open the same
folder and load what is there (printing ``loaded``), training only what is missing
(``trained``). The key hashes the whole configuration AND ``GENERATOR_VERSION`` (a hash of
SynthEndo's source), so another setting or another generator gets another folder. Each
folder also holds ``key.json`` (the configuration and generator version it was made
with); a folder whose ``key.json`` disagrees is stale: it is reported, wiped and retrained,
never used silently. Checkpoints load with ``weights_only=True`` (:mod:`.checkpoint`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config, key_dict
from ..data.imageset import ImageSet
from ..method.distill import Distiller
from ..models.classifier import Classifier
from ..training.pipeline import (
    GENERATOR_VERSION,
    _key,
    make_data,
    pretrained_backbone,
    train_student,
    train_teacher,
)
from ..training.train import FitResult, pick_device

# what `make cache` trains: the baseline, PaGKD as the kit runs it and as the paper describes
# it, the paper form's ablations and two simple baselines
COURSE_METHODS = ("wli_only", "pagkd", "pagkd_paper", "pagkd_no_pro", "pagkd_no_den",
                  "pagkd_no_mask", "pagkd_one_way", "logit_kd", "pseudo_pair")


def cache_key(cfg: Config) -> dict:
    """What a cached model depends on: the whole configuration (:func:`config.key_dict`: the
    SSL settings only when ``model.init = "ssl"``) and the generator's code."""
    return {"config": key_dict(cfg), "generator_version": GENERATOR_VERSION}


def run_dir(cfg: Config, root: str | Path = "runs/course") -> Path:
    """``<root>/<cfg.name>-<12 hex digits of sha256(cache_key(cfg))>``."""
    return Path(root) / f"{cfg.name}-{_key(cache_key(cfg))}"


@dataclass
class Course:
    """One configuration's data, teacher and (lazily) students, from the cache or trained."""

    cfg: Config
    sets: dict[str, ImageSet]
    teacher: Classifier
    teacher_info: dict
    folder: Path
    progress: bool = True
    log: list[str] = field(default_factory=list)

    def _say(self, line: str) -> None:
        self.log.append(line)
        print(line)

    def student(self, method: str) -> tuple[Distiller, FitResult]:
        """The WLI student of ``method`` with the shared teacher: loaded if cached, else trained
        (an interrupted run is resumed from its ``last.pt``)."""
        run = self.folder / method
        was = "loaded" if (run / "best.pt").exists() else \
            "resumed" if (run / "last.pt").exists() else "trained"
        distiller, result = train_student(self.cfg, self.sets, method, self.teacher,
                                          out_dir=self.folder, resume=True,
                                          progress=self.progress, ssl_dir=self.folder.parent)
        self._say(f"{method}: {was} ({result.seconds:.0f} s of training; best val AUC "
                  f"{result.best_val_auc:.3f} at epoch {result.best_epoch + 1})")
        return distiller, result


def open_course(cfg: Config, root: str | Path = "runs/course", progress: bool = True) -> Course:
    """Data and teacher of ``cfg`` from ``run_dir(cfg, root)``: loaded when cached, else trained.

    Raises nothing on a stale folder: it is wiped (it only ever holds this module's output)
    and retrained, with a printed line that says so.
    """
    folder = run_dir(cfg, root)
    stamp, key = folder / "key.json", cache_key(cfg)
    key_json = json.loads(json.dumps(key, default=str))  # as it reads back from disk
    if stamp.exists() and json.loads(stamp.read_text()) != key_json:
        print(f"stale cache {folder}: made with another configuration or generator version; "
              "retraining")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(key_json, indent=1, sort_keys=True))
    sets = make_data(cfg)
    # the SSL backbone sits at the root: it does not depend on model.init or the training
    # settings, so scratch and ssl configurations of the same data share it
    teacher, info = train_teacher(cfg, sets, out_dir=folder, progress=progress,
                                  ssl_dir=folder.parent)
    course = Course(cfg, sets, teacher, info, folder, progress)
    was = "loaded" if info.get("loaded") else "trained"
    course._say(f"teacher: {was} ({info['seconds']:.0f} s of training; best NBI val AUC "
                f"{info['best_val_auc']:.3f}) - device {pick_device(cfg.device)}, cache {folder}")
    return course


def build_cache(cfg: Config, methods=COURSE_METHODS, root: str | Path = "runs/course",
                progress: bool = True) -> Course:
    """Train (or confirm) every model the course loads, and the SSL backbone of ``cfg``'s
    data (``<root>/ssl-<key>.pt``, for runs with ``--set model.init=ssl``); what ``make
    cache`` runs."""
    course = open_course(cfg, root, progress)
    for method in methods:
        course.student(method)
    _, info = pretrained_backbone(cfg, course.sets, course.folder.parent, progress)
    course._say(f"ssl backbone: {'loaded' if info['loaded'] else 'trained'} "
                f"({info['seconds']:.0f} s of training; final NT-Xent loss "
                f"{info['final_loss']:.3f}) - {info['path']}")
    warm_umap(course)
    return course


def warm_umap(course: Course) -> float:
    """Compile umap-learn's numba kernels once, into numba's on-disk cache, so that notebook
    06's first UMAP takes seconds instead of tens of seconds. Returns the seconds it took."""
    import time

    import numpy as np

    from .embedding import umap_2d

    t0 = time.perf_counter()
    umap_2d(np.random.default_rng(0).normal(size=(64, 8)), seed=0)
    seconds = time.perf_counter() - t0
    course._say(f"UMAP kernels compiled for notebook 06 ({seconds:.0f} s; numba caches them "
                "on disk, once per installation)")
    return seconds
