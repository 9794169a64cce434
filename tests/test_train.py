"""Training loop: model selection on validation, resume = uninterrupted, DDP path."""

import dataclasses
import os
import socket

import pytest
import torch
import torch.distributed as dist

from pagkd_lite.config import TrainConfig
from pagkd_lite.method.distill import Distiller
from pagkd_lite.models.classifier import Classifier, ModelConfig
from pagkd_lite.training.checkpoint import load_checkpoint
from pagkd_lite.training.train import NBI_TRAIN_SPLIT, fit, nbi_role, nbi_training_set

CFG = TrainConfig(epochs=3, batch_size=6, lr=1e-3, warmup_epochs=0)
MODEL = ModelConfig(backbone="test_resnet", dim=8, feature_index=-2)


def student(seed=0):
    torch.manual_seed(seed)
    return Distiller(Classifier(MODEL, 3))


def weights(d):
    return torch.cat([p.detach().flatten() for p in d.student.parameters()])


def test_same_seed_same_weights(tiny_sets):
    a, b = student(), student()
    fit(a, tiny_sets["wli_train"], tiny_sets["wli_val"], CFG, torch.device("cpu"), progress=False)
    fit(b, tiny_sets["wli_train"], tiny_sets["wli_val"], CFG, torch.device("cpu"), progress=False)
    assert torch.equal(weights(a), weights(b))


def test_selection_uses_validation_and_keeps_best_epoch(tiny_sets, tmp_path):
    d = student()
    res = fit(d, tiny_sets["wli_train"], tiny_sets["wli_val"], CFG, torch.device("cpu"),
              out_dir=tmp_path, progress=False)
    aucs = [h["val_auc"] for h in res.history]
    assert res.best_epoch == max(range(3), key=lambda i: (aucs[i], -i))
    assert res.best_val_auc == pytest.approx(max(aucs))
    ck = load_checkpoint(tmp_path / "last.pt", required=("best_state",))
    best = torch.cat([v.flatten().float() for k, v in ck["best_state"].items()
                      if k.startswith("student.") and v.is_floating_point()])
    now = torch.cat([v.flatten().float() for k, v in d.trainable_state_dict().items()
                     if k.startswith("student.") and v.is_floating_point()])
    assert torch.equal(best, now)  # the returned model is the best epoch's


def test_resume_gives_the_same_numbers(tiny_sets, tmp_path):
    full = student()
    fit(full, tiny_sets["wli_train"], tiny_sets["wli_val"], CFG, torch.device("cpu"),
        out_dir=tmp_path / "full", progress=False)
    part = student()
    fit(part, tiny_sets["wli_train"], tiny_sets["wli_val"],
        dataclasses.replace(CFG, epochs=2), torch.device("cpu"), out_dir=tmp_path / "cut",
        progress=False)  # "interrupted" after 2 epochs
    resumed = student(seed=123)  # different init: everything must come from the checkpoint
    res = fit(resumed, tiny_sets["wli_train"], tiny_sets["wli_val"], CFG, torch.device("cpu"),
              out_dir=tmp_path / "cut", resume=True, progress=False)
    assert len(res.history) == 3
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "last.pt")
    for k, v in a["distiller"].items():
        assert torch.equal(v, b["distiller"][k]), k
    assert [h["val_auc"] for h in a["history"]] == [h["val_auc"] for h in b["history"]]


def test_one_function_decides_the_nbi_images_of_every_method(tiny_sets):
    """nbi_role: none, the twins (paired methods) or an unpaired same-class batch; the set
    pipeline.train_student hands to fit comes from it; fit refuses a missing NBI set."""
    from pagkd_lite.config import smoke
    from pagkd_lite.method.distill import METHODS, build_distiller

    cfg = smoke()
    sets = {**tiny_sets, "paired_nbi": tiny_sets["nbi_train"]}
    for name, entry in METHODS.items():
        torch.manual_seed(0)
        d = build_distiller(name, Classifier(cfg.model, 3), Classifier(cfg.model, 3), cfg, 3)
        role = nbi_role(d)
        want = None if not entry.needs_teacher else "twins" if entry.paired else "unpaired"
        assert role == want, name
        got = nbi_training_set(d, sets)
        assert got is (None if role is None else sets[NBI_TRAIN_SPLIT[role]]), name
    with pytest.raises(ValueError, match="needs an NBI training set"):
        fit(d, tiny_sets["wli_train"], tiny_sets["wli_val"], CFG, torch.device("cpu"),
            progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_single_process_unchanged_by_distributed_path(tiny_sets):
    """A 1-process gloo group takes the distributed code path; numbers must not move."""
    plain = student()
    fit(plain, tiny_sets["wli_train"], tiny_sets["wli_val"], CFG, torch.device("cpu"),
        progress=False)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        ddp = student()
        fit(ddp, tiny_sets["wli_train"], tiny_sets["wli_val"], CFG, torch.device("cpu"),
            progress=False)
    finally:
        dist.destroy_process_group()
    assert torch.equal(weights(plain), weights(ddp))
