"""Distillers: gradients go where docs/method.md says, and every method's step is finite."""

import dataclasses

import pytest
import torch

from pagkd_lite.config import smoke
from pagkd_lite.method.distill import (
    METHODS,
    Distiller,
    StepBatch,
    TeacherSide,
    build_distiller,
    same_class_partners,
)
from pagkd_lite.models.classifier import Classifier


def make(method, k=3, seed=0):
    torch.manual_seed(seed)
    cfg = smoke()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, warmup_epochs=0))
    teacher = Classifier(cfg.model, k)
    return build_distiller(method, Classifier(cfg.model, k), teacher, cfg, k), cfg


def batch(b=6, k=3, size=32, seed=0, y_n=None):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(b) % k
    img_w, img_n = torch.rand(b, 3, size, size, generator=g), torch.rand(b, 3, size, size,
                                                                          generator=g)
    # lesion masks: a disc in the middle (only the oracle_masks reference reads them)
    r = torch.linspace(-1, 1, size)
    disc = ((r[:, None] ** 2 + r[None, :] ** 2) < 0.4).float().expand(b, 1, size, size)
    return StepBatch(img_w * 2 - 1, img_w, y, img_n * 2 - 1, img_n, y if y_n is None else y_n,
                     mask_w=disc, mask_n=disc)


def test_gradients_reach_exactly_the_trainable_parts():
    d, _ = make("pagkd")
    d.train()
    _, losses = d.forward_train(batch(), epoch=0)
    assert {"ce", "den", "con", "pcls", "total"} <= set(losses)
    losses["total"].backward()
    assert not d.teacher.training
    assert all(p.grad is None for p in d.teacher.parameters())
    named = dict(d.named_parameters())
    for prefix in ("student.backbone", "student.embed", "student.fc", "adapter",
                   "pro.queries", "pro.mha", "pro.classifier"):
        grads = [p.grad for n, p in named.items() if n.startswith(prefix)]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), prefix


def test_train_mode_keeps_teacher_frozen_and_learnables_exclude_it():
    d, _ = make("pagkd")
    d.train()
    assert not d.teacher.training
    ids = {id(p) for p in d.learnable_parameters()}
    assert not any(id(p) in ids for p in d.teacher.parameters())
    assert all(id(p) in ids for p in d.student.parameters())


def test_warmup_switches_group_losses_off():
    d, cfg = make("pagkd")
    d.warmup_epochs = 2
    _, losses = d.forward_train(batch(), epoch=1)
    assert set(losses) == {"ce", "total"}
    assert torch.equal(losses["total"], losses["ce"])


@pytest.mark.parametrize("method", [m for m in METHODS if m != "wli_only"])
def test_every_method_gives_finite_named_losses(method):
    d, _ = make(method)
    _, losses = d.forward_train(batch(), epoch=0)
    assert "total" in losses and "ce" in losses
    assert all(torch.isfinite(v) for v in losses.values())
    losses["total"].backward()


def test_ablations_drop_their_module():
    assert make("pagkd_no_pro")[0].pro is None
    assert make("pagkd_no_den")[0].den is None
    assert make("pagkd_no_mask")[0].den.cfg.use_mask is False
    assert make("pagkd_one_way")[0].den.cfg.two_way is False


def test_logit_kd_matches_a_loop():
    d, cfg = make("logit_kd")
    b = batch(b=6, y_n=torch.tensor([0, 0, 1, 1, 1, 0]))  # class 2 absent on the NBI side
    _, losses = d.forward_train(b, epoch=0)
    t = cfg.train.kd_temperature
    with torch.no_grad():
        p_t = torch.softmax(d.teacher(b.x_n).logits / t, 1)
        z_s = d.student(b.x_w).logits
    terms = []
    for i in range(6):
        same = b.y_n == b.y_w[i]
        if not same.any():
            continue
        target = p_t[same].mean(0)
        log_p = torch.log_softmax(z_s[i] / t, 0)
        terms.append((target * (target.log() - log_p)).sum() * t * t)
    assert torch.allclose(losses["kd"], torch.stack(terms).mean(), rtol=1e-5, atol=1e-6)


def test_logit_kd_without_a_shared_class_is_zero_not_nan():
    """A step whose WLI classes have no NBI image: nothing to match, L_kd = 0 with a gradient
    (a mean over no row was 0 / 0 = NaN, in ``logit_kd`` and in ``pagkd``'s kd term)."""
    for name in ("logit_kd", "pagkd"):
        d, _ = make(name)
        b = batch(b=6, k=2, y_n=torch.tensor([2, 2, 2, 2, 2, 2]))  # WLI classes 0, 1 only
        _, losses = d.forward_train(b, epoch=0)
        assert losses["kd"].item() == 0.0, name
        losses["total"].backward()
        assert all(torch.isfinite(p.grad).all() for p in d.student.parameters()
                   if p.grad is not None), name


def test_pseudo_pairs_are_same_class_and_oracle_pairs_are_aligned():
    d, _ = make("pseudo_pair")
    d.generator = torch.Generator().manual_seed(0)
    y_w = torch.tensor([0, 1, 2, 0, 1, 2])
    y_n = torch.tensor([1, 1, 0, 0, 0, 1])  # no class 2 in NBI
    iw, in_ = same_class_partners(y_w, y_n, d.generator)
    assert iw.tolist() == [0, 1, 3, 4]
    assert torch.equal(y_w[iw], y_n[in_])
    o, _ = make("paired_oracle")
    iw, in_ = o.pairs(batch())
    assert torch.equal(iw, in_)


def test_capabilities_are_declared_not_probed():
    """The teacher-side parts are the public TeacherSide class (what explore, embedding and
    diagnose test with isinstance); every distiller has a ``generator`` (None until fit seeds
    it); no module of the library asks ``hasattr``."""
    from pathlib import Path

    import pagkd_lite

    side = {"pagkd", "pagkd_no_pro", "pagkd_no_den", "oracle_masks", "pseudo_pair",
            "paired_oracle", "pagkd_frozen_target"}
    for name in (*side, "wli_only", "logit_kd", "paired_hint", "class_hint"):
        d, _ = make(name)
        assert isinstance(d, Distiller) and d.generator is None
        assert isinstance(d, TeacherSide) == (name in side), name
    root = Path(pagkd_lite.__file__).parent
    assert not [p.name for p in root.rglob("*.py") if "hasattr(" in p.read_text()]


def test_no_nan_over_200_random_steps():
    """Tiny backbone, random K, group sizes, images and classes missing on one side; the
    steps alternate between ``pagkd`` (frozen target + the logit_kd term) and
    ``pagkd_paper`` (the adapted target)."""
    g = torch.Generator().manual_seed(0)
    models = {}
    for step in range(200):
        k = int(torch.randint(2, 5, (1,), generator=g))
        method = ("pagkd", "pagkd_paper")[step % 2]
        if (k, method) not in models:
            d, _ = make(method, k=k, seed=k)
            models[k, method] = (d, torch.optim.Adam(d.learnable_parameters(), lr=1e-3))
        d, opt = models[k, method]
        b = int(torch.randint(k, 2 * k + 3, (1,), generator=g))
        y_w = torch.randint(0, k, (b,), generator=g)
        y_n = torch.randint(0, k, (int(torch.randint(1, 2 * k + 3, (1,), generator=g)),),
                            generator=g)
        size = 32
        img_w = torch.rand(b, 3, size, size, generator=g)
        img_n = torch.rand(len(y_n), 3, size, size, generator=g)
        sb = StepBatch(img_w * 4 - 2, img_w, y_w, img_n * 4 - 2, img_n, y_n)
        _, losses = d.forward_train(sb, epoch=0)
        for name, v in losses.items():
            assert torch.isfinite(v), (step, name)
        opt.zero_grad()
        losses["total"].backward()
        for n, p in d.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), (step, n)
        opt.step()


def test_every_method_declares_a_kind_and_references_are_what_real_data_cannot_run():
    """Each registry entry has a kind of ``KINDS``; the references are exactly the entries
    that need true pairs or ground-truth masks; ``method_help`` lists every method once,
    under its kind's heading, the kinds in ``KINDS``'s order; a bad kind is refused."""
    from pagkd_lite.method.distill import KINDS, METHODS, Method, WLIOnly, method_help

    assert {m.kind for m in METHODS.values()} <= set(KINDS)
    refs = {n for n, m in METHODS.items() if m.kind == "reference"}
    assert refs == {n for n, m in METHODS.items() if m.paired or m.needs_masks}
    text = method_help()
    headings = [line.strip().rstrip(":") for line in text.splitlines() if line.startswith(" ")
                and not line.startswith("  ")]
    assert headings == [h for k, h in KINDS.items() if any(m.kind == k
                                                            for m in METHODS.values())]
    listed = [line.split()[0] for line in text.splitlines() if line.startswith("  ")]
    assert sorted(listed) == sorted(METHODS)
    with pytest.raises(ValueError, match="kind"):
        Method(WLIOnly, "x", kind="oracle")
