"""The training loop shared by the teacher and every student method.

One epoch = ``steps_per_epoch`` group steps from :class:`GroupSampler` (a WLI batch and,
for distillers that need it, an NBI batch of the same class composition). After every
``eval_every`` epochs the model is scored on the VALIDATION set (AUC); the best epoch's
weights are kept (model selection never looks at test data). Each epoch ends with an
atomic ``last.pt``, so ``resume=True`` continues an interrupted run; the sampler and the
augmentation are reseeded per epoch, so a resumed run gives the same numbers as an
uninterrupted one.

What the network is fed is the model's own setting (``model.input_norm``, ``model.input_rotate``:
:func:`input_settings`); which images form the groups is the distiller's ``group_pool``
(``groups.pool``, set by ``distill.build_distiller``).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.imageset import ImageSet
from ..data.sampler import GroupSampler
from ..data.transforms import draw_rotate_flip, model_input, prepare, to_float
from ..distributed import average_gradients, broadcast_buffers, gather_rows, rank, world_size
from ..errors import ConfigError
from ..method.distiller import Distiller, StepBatch
from ..models import accel
from ..models.accel import RuntimeConfig
from ..models.classifier import eval_mode, input_settings
from .checkpoint import check_provenance, load_checkpoint, load_weights, save_checkpoint
from .metrics import auc_score


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: cuda if available, then mps, then cpu; otherwise the named device.

    Under torchrun with CUDA, ``auto`` and ``cuda`` mean this rank's card (the one
    :func:`~pagkd_lite.distributed.init_from_env` made current, ``LOCAL_RANK``).
    """
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if name == "auto":
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {name!r} is not a device name; use auto, cpu, cuda, "
                          f"cuda:<index> or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available here")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} "
                          f"CUDA device(s)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                  and torch.backends.mps.is_available()):
        raise ConfigError(f"device {name!r} asked for, but MPS is not available here")
    return dev


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


#: Pixels per prediction batch: 128 images at 112 x 112 px. The activations of a forward
#: pass grow with batch x side^2 (the demo's ResNet-10t at 448 px: 3.9 GB for 128 images,
#: 0.26 GB for 8; ``benchmarks/activation_memory.py``), so :func:`predict_batch_size` shrinks
#: the batch as the side grows: 128 up to 112 px, 32 at 224 px, 8 at 448 px. Per image the
#: probabilities do not depend on it (up to float rounding: the convolutions may sum in
#: another order).
PREDICT_PIXELS = 128 * 112 * 112


def predict_batch_size(height: int, width: int, most: int = 128) -> int:
    """Images per prediction batch of ``height`` x ``width`` px images:
    ``PREDICT_PIXELS / (height * width)``, between 1 and ``most``."""
    return max(1, min(most, PREDICT_PIXELS // (height * width)))


@torch.no_grad()
def predict(model: torch.nn.Module, images: ImageSet, device: torch.device,
            batch_size: int | None = None, runtime: RuntimeConfig | None = None) -> np.ndarray:
    """Class probabilities (N, K) for an ImageSet; ``model`` is a Classifier or a distiller.

    ``batch_size``: images per forward pass; by default :func:`predict_batch_size` of the
    images' size, so the memory a pass needs does not grow with the resolution.
    ``runtime`` (optional) sets bf16 autocast and the input memory format, as in training.
    The input is what ``model`` was trained on (``model.input_norm``: :func:`input_settings`).

    Distributed: each rank scores every world_size-th image and the rows are gathered, so
    every rank (rank 0 included) gets all N rows.
    """
    index = torch.arange(rank(), len(images), world_size())
    batch_size = batch_size or predict_batch_size(*images.images.shape[-2:])
    norm = input_settings(model)[0]
    out = []
    with eval_mode(model):
        for i in range(0, len(index), batch_size):
            batch = accel.host_to_device(images.images, index[i : i + batch_size], device, runtime)
            x = accel.input_format(model_input(to_float(batch), norm), runtime)
            with accel.autocast(runtime, device):
                logits = model(x)
            logits = getattr(logits, "logits", logits)
            out.append(torch.softmax(logits.float(), dim=1).cpu())
    local = torch.cat(out) if out else torch.empty(0, images.num_classes)
    return gather_rows(local, index, len(images)).numpy()


#: The NBI training split of each :func:`nbi_role`.
NBI_TRAIN_SPLIT = {"twins": "paired_nbi", "unpaired": "nbi_train"}


def nbi_role(distiller: Distiller) -> str | None:
    """Which NBI images ``distiller`` sees, decided here and nowhere else:

    * ``None``: none (WLI only; :func:`fit` ignores any ``train_n``);
    * ``"twins"`` (``distiller.paired``): the NBI twin of each WLI image of the step, index by
      index, under the same rotation and flip; ``train_n`` is aligned with ``train_w``
      (SynthEndo's ``paired_nbi``);
    * ``"unpaired"``: a same-class NBI batch of its own from the group sampler, with its own
      augmentation stream (``nbi_train``).
    """
    if not distiller.needs_nbi:
        return None
    return "twins" if distiller.paired else "unpaired"


def nbi_training_set(distiller: Distiller, sets: dict[str, ImageSet]) -> ImageSet | None:
    """The NBI training set of ``distiller``'s :func:`nbi_role` (:data:`NBI_TRAIN_SPLIT`),
    or None."""
    role = nbi_role(distiller)
    return None if role is None else sets[NBI_TRAIN_SPLIT[role]]


def _prepare_step(images: ImageSet, index: torch.Tensor, with_masks: bool, device, tcfg,
                  geometry: tuple[torch.Tensor, torch.Tensor], runtime: RuntimeConfig | None,
                  inputs: tuple[str, str] = ("imagenet", "crop")):
    """One modality's batch on the device, augmented by ``geometry`` (angles, flips) and
    framed and scaled as ``inputs`` (:func:`input_settings`) says: (network input, [0, 1]
    image, lesion masks in [0, 1] under the same augmentation, or None)."""
    imgs = accel.host_to_device(images.images, index, device, runtime)
    masks = accel.host_to_device(images.masks, index, device, runtime) if with_masks else None
    out = prepare(imgs, device, tcfg.augment, tcfg.rotation_degrees, masks=masks,
                  geometry=geometry, norm=inputs[0], rotate=inputs[1])
    x, img = out[0], out[1]
    return accel.input_format(x, runtime), img, (out[2] if with_masks else None)


def train_step(distiller: Distiller, opt: torch.optim.Optimizer, batch: StepBatch, epoch: int,
               runtime: RuntimeConfig | None = None) -> dict[str, torch.Tensor]:
    """One optimisation step, the same for the teacher, every student and the benchmarks:
    ``losses = distiller.forward_train(batch, epoch)`` (under the run's autocast), backward
    of ``losses["total"]``, gradients averaged over torchrun ranks, ``opt.step()``.
    Returns the losses."""
    with accel.autocast(runtime, batch.x_w.device):
        _, losses = distiller.forward_train(batch, epoch)
    opt.zero_grad(set_to_none=True)
    losses["total"].backward()
    average_gradients([p for group in opt.param_groups for p in group["params"]])
    opt.step()
    return losses


@dataclass
class FitResult:
    """What a training run returns: the best (validation) epoch and the history."""

    best_epoch: int
    best_val_auc: float
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    skipped: dict = field(default_factory=dict)


def _check_sets(distiller: Distiller, train_w: ImageSet, train_n: ImageSet | None) -> None:
    """Refuse training sets that cannot give ``distiller`` what its steps need."""
    role = nbi_role(distiller)
    if role is not None and train_n is None:
        raise ValueError(f"{type(distiller).__name__} needs an NBI training set")
    if role == "twins" and train_n.lesion_ids != train_w.lesion_ids:
        raise ValueError("paired method: train_n must hold the NBI twins of train_w, in order")
    if distiller.needs_masks and any(s is not None and s.masks is None for s in (train_w, train_n)):
        raise ValueError(f"{type(distiller).__name__} needs ground-truth lesion masks (SynthEndo "
                         "has them; real data does not)")


def _step_batch(step, train_w: ImageSet, train_n: ImageSet | None, role: str | None,
                needs_masks: bool, tcfg, device, runtime: RuntimeConfig | None,
                aug_w: torch.Generator, aug_n: torch.Generator,
                inputs: tuple[str, str] = ("imagenet", "crop")) -> StepBatch:
    """One sampler step's images on the device, augmented: the WLI batch and, by
    :func:`nbi_role`, the NBI twins (under the WLI draw) or the step's own NBI batch;
    ``inputs``: :func:`input_settings` of the distiller."""
    geo_w = draw_rotate_flip(len(step.wli), tcfg.rotation_degrees, aug_w)
    x_w, img_w, mask_w = _prepare_step(train_w, step.wli, needs_masks, device, tcfg, geo_w,
                                       runtime, inputs)
    batch = StepBatch(x_w=x_w, img_w=img_w, y_w=step.labels.to(device), mask_w=mask_w)
    if role is not None:
        nbi_idx = step.wli if role == "twins" else step.nbi
        # true pairs: the NBI twin of image i takes image i's rotation and flip, so
        # token p of one is token p of the other; unpaired NBI: its own stream
        geo_n = geo_w if role == "twins" else draw_rotate_flip(
            len(nbi_idx), tcfg.rotation_degrees, aug_n)
        batch.x_n, batch.img_n, batch.mask_n = _prepare_step(
            train_n, nbi_idx, needs_masks, device, tcfg, geo_n, runtime, inputs)
        batch.y_n = train_n.labels[nbi_idx].to(device)
    return batch


def _train_epoch(distiller: Distiller, opt: torch.optim.Optimizer, train_w: ImageSet,
                 train_n: ImageSet | None, tcfg, device, seed: int, epoch: int, steps: int,
                 runtime: RuntimeConfig | None, bar: dict) -> dict[str, float]:
    """One epoch's steps; returns ``{"epoch", mean of every loss}``. The sampler, the two
    augmentation streams and ``distiller.generator`` are seeded by ``(seed, epoch)`` (and the
    rank), so a resumed run draws what an uninterrupted one would. ``bar``: tqdm options.
    The unpaired groups come from ``distiller.group_pool`` (``groups.pool``)."""
    role = nbi_role(distiller)
    inputs = input_settings(distiller)
    distiller.train()
    sampler = GroupSampler(
        train_w.labels,
        train_n.labels if role == "unpaired" else train_w.labels,
        tcfg.batch_size,
        num_classes=train_w.num_classes,
        steps_per_epoch=steps,
        seed=seed * 10_007 + epoch,
        class_names=train_w.class_names,
        rank=rank(),
        world_size=world_size(),
        pool=distiller.group_pool if role == "unpaired" else "all",
    )
    # Separate augmentation streams per modality: the WLI images of a seed are augmented
    # identically whatever the method, so methods differ only by their losses.
    aug_w = torch.Generator().manual_seed(seed * 10_007 + epoch + 1 + 7919 * rank())
    aug_n = torch.Generator().manual_seed(seed * 10_007 + epoch + 3 + 7919 * rank())
    distiller.generator = torch.Generator().manual_seed(seed * 10_007 + epoch + 2)
    sums: dict[str, float] = {}
    progress = tqdm(sampler, leave=False, **bar)
    for step in progress:
        batch = _step_batch(step, train_w, train_n, role, distiller.needs_masks, tcfg, device,
                            runtime, aug_w, aug_n, inputs)
        losses = train_step(distiller, opt, batch, epoch, runtime)
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        progress.set_postfix(loss=f"{float(losses['total'].detach()):.3f}")
    return {"epoch": epoch, **{k: v / steps for k, v in sums.items()}}


def _evaluate(distiller: Distiller, val: ImageSet, device, runtime: RuntimeConfig | None,
              record: dict, best: dict) -> dict:
    """Validation AUC into ``record["val_auc"]``; returns the best epoch so far (a copy of
    the weights when this epoch beats it). Every rank scores the same validation set with the
    same weights and buffers, so every rank takes the same model-selection decision."""
    probs = predict(distiller, val, device, runtime=runtime)
    record["val_auc"] = auc_score(val.labels.numpy(), probs)
    if record["val_auc"] > best["auc"]:
        return {"epoch": record["epoch"], "auc": record["val_auc"],
                "state": copy.deepcopy(distiller.trainable_state_dict())}
    return best


def _save_last(last: Path, distiller: Distiller, opt: torch.optim.Optimizer, epoch: int,
               history: list[dict], best: dict, provenance: dict | None) -> None:
    """The atomic ``last.pt`` of an epoch: what :func:`_resume` continues from."""
    save_checkpoint(last, {
        "distiller": distiller.trainable_state_dict(), "optimizer": opt.state_dict(),
        "epoch": epoch, "history": history, "best_epoch": best["epoch"],
        "best_auc": best["auc"], "best_state": best["state"],
        **({"provenance": provenance} if provenance is not None else {}),
    })


def _resume(last: Path, distiller: Distiller, opt: torch.optim.Optimizer,
            provenance: dict | None) -> tuple[int, list[dict], dict]:
    """Load ``last.pt`` into the distiller and the optimiser (refused when trained on other
    data or another model); returns ``(first epoch to run, history, best)``."""
    ck = load_checkpoint(last, required=("distiller", "optimizer", "epoch", "history",
                                         "best_epoch", "best_auc", "best_state"))
    if provenance is not None:
        check_provenance(last, ck, provenance["data"], provenance["model"])
    load_weights(last, distiller, ck["distiller"])
    opt.load_state_dict(ck["optimizer"])
    best = {"epoch": ck["best_epoch"], "auc": ck["best_auc"], "state": ck["best_state"]}
    return ck["epoch"] + 1, ck["history"], best


def fit(
    distiller: Distiller,
    train_w: ImageSet,
    val: ImageSet,
    tcfg,
    device: torch.device,
    seed: int = 0,
    train_n: ImageSet | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    desc: str = "train",
    runtime: RuntimeConfig | None = None,
    provenance: dict | None = None,
    probe: StepBatch | None = None,
) -> FitResult:
    """Train ``distiller`` on ``train_w`` (+ ``train_n``), select on ``val``.

    Which NBI images a step holds is :func:`nbi_role`'s decision: for ``"twins"``
    (paired methods) ``train_n`` must be aligned with ``train_w`` (image i of one is the
    other modality's rendering of image i) and the NBI batch is the twins of the WLI batch.
    On return the distiller holds the best epoch's weights.

    ``runtime`` (``cfg.runtime``) picks bf16 autocast, channels_last, pinned copies and
    torch.compile (see :mod:`pagkd_lite.models.accel`); None or ``auto`` on a CPU is plain fp32.

    ``provenance`` (``pipeline.provenance``) is saved in ``last.pt``; ``resume=True``
    refuses a ``last.pt`` trained on other data or another model (``CheckpointError``).

    ``probe`` (:func:`pagkd_lite.training.mechanism.make_probe`), a fixed held-out batch, is
    handed to ``distiller.after_epoch`` after every epoch's steps; what it returns (e.g. the
    mechanism curves of GKD-Den) joins the epoch's record in ``history``; with
    ``model.input_norm = "none"`` its network inputs are its (unaugmented) [0, 1] images.
    """
    _check_sets(distiller, train_w, train_n)
    if probe is not None and input_settings(distiller)[0] == "none":
        # the probe is unaugmented (pipeline, mechanism.make_probe): its network input is
        # then its [0, 1] image itself
        probe = dataclasses.replace(probe, x_w=probe.img_w.clone(), x_n=(
            None if probe.img_n is None else probe.img_n.clone()))
    accel.setup(runtime, device)
    accel.place(distiller, runtime, device)
    opt = torch.optim.Adam(distiller.learnable_parameters(), lr=tcfg.lr,
                           weight_decay=tcfg.weight_decay)
    # Distributed: every rank takes its own steps; together they cover one pass per epoch.
    steps = tcfg.steps_per_epoch or -(-len(train_w) // (tcfg.batch_size * world_size()))
    last = Path(out_dir) / "last.pt" if out_dir is not None else None
    start_epoch, history, best = 0, [], {"epoch": -1, "auc": -1.0, "state": None}
    if resume and last is not None and last.exists():
        start_epoch, history, best = _resume(last, distiller, opt, provenance)

    t0, show = time.perf_counter(), progress and rank() == 0
    for epoch in range(start_epoch, tcfg.epochs):
        bar = {"desc": f"{desc} {epoch + 1}/{tcfg.epochs}", "disable": not show}
        record = _train_epoch(distiller, opt, train_w, train_n, tcfg, device, seed, epoch, steps,
                              runtime, bar)
        record.update(distiller.after_epoch(epoch, probe))
        broadcast_buffers(distiller)
        if (epoch + 1) % tcfg.eval_every == 0 or epoch + 1 == tcfg.epochs:
            best = _evaluate(distiller, val, device, runtime, record, best)
        history.append(record)
        if last is not None and rank() == 0:
            _save_last(last, distiller, opt, epoch, history, best, provenance)
    distiller.load_trainable_state_dict(best["state"])
    return FitResult(best_epoch=best["epoch"], best_val_auc=best["auc"], history=history,
                     seconds=time.perf_counter() - t0)
