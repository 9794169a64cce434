"""The pre-registered variants (benchmarks/PREREGISTERED.md) and the mechanism log.

The loss switches of (b), (c), (d) (``den.center``, ``den.cosine``, ``den.relation``) are
checked against the loop reference in ``test_gkd_den.py`` (values and gradients, several
configurations each). Here: (a) the frozen target, (e) the gate and the ramp, (f) the sum
with ``logit_kd``, what centring removes, and the per-epoch mechanism numbers."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pagkd_lite.config import method_config, override, smoke
from pagkd_lite.data.synthendo import SynthEndoConfig, generate
from pagkd_lite.method import reference
from pagkd_lite.method.cam import grad_cam
from pagkd_lite.method.distill import (
    METHODS,
    VARIANTS,
    LogitKD,
    PaGKD,
    PaGKDLogit,
    StepBatch,
    WLIOnly,
    build_distiller,
)
from pagkd_lite.method.gkd_den import GKDDen, GKDDenConfig, group_den, pair_loss
from pagkd_lite.method.mechanism_log import _common_share
from pagkd_lite.models.classifier import Classifier, ModelConfig, eval_mode
from pagkd_lite.training.mechanism import (
    beats_chance,
    make_probe,
    mechanism_metrics,
    nbi_twins,
    probe_metrics,
)
from pagkd_lite.training.train import fit

SMALL = dict(image_size=64, n_wli_train=12, n_nbi_train=12, n_wli_val=9, n_nbi_val=9,
             n_wli_test=6, n_nbi_test=6)


@pytest.fixture(scope="module")
def sets():
    return generate(SynthEndoConfig(**SMALL, seed=3))


def _cfg(method="pagkd", *settings):
    cfg = smoke()
    cfg = dataclasses.replace(
        cfg, model=ModelConfig(backbone="test_resnet", dim=16, feature_index=-2),
        pro=dataclasses.replace(cfg.pro, num_queries=3, num_heads=2))
    return method_config(override(cfg, list(settings)), method)


def _build(method, *settings, seed=0):
    cfg = _cfg(method, *settings)
    torch.manual_seed(seed)
    student, teacher = Classifier(cfg.model, 3), Classifier(cfg.model, 3)
    return build_distiller(method, student, teacher, cfg, 3), cfg


def _batch(sets):
    probe = make_probe(sets["wli_val"], sets["nbi_val"], torch.device("cpu"), per_class=2)
    return probe


def test_six_variants_registered_with_their_switches():
    assert len(VARIANTS) == 6 and all(v in METHODS for v in VARIANTS)
    cfg = _cfg("pagkd_token_cos")
    assert cfg.den.center and cfg.den.cosine == "token"
    assert _cfg("pagkd_log_prior").den.relation == "log_prior"
    assert _cfg("pagkd_scheduled").train.lambda_ramp_epochs == 5
    assert _cfg("pagkd_paper").den == GKDDenConfig()


def test_pagkd_runs_with_the_frozen_target_study_winner():
    """``pagkd`` is the candidate that won on validation and held on test
    (benchmarks/studies/2026-12-07-frozen-target): the settings of
    ``pagkd_frozen_warm_logit`` and its distiller class, under the method's own name."""
    cfg = _cfg("pagkd")
    assert cfg.den.target == "teacher" and cfg.model.student_init == "wli_only"
    assert _cfg("pagkd_frozen_warm_logit") == cfg
    assert METHODS["pagkd"].cls is METHODS["pagkd_frozen_warm_logit"].cls is PaGKDLogit
    assert METHODS["pagkd_paper"].cls is PaGKD and not METHODS["pagkd_paper"].config
    # the controls at pagkd's start: cross-entropy alone, and logit_kd alone
    for control, cls in (("wli_only_warm", WLIOnly), ("logit_kd_warm", LogitKD)):
        assert METHODS[control].cls is cls
        assert _cfg(control).model.student_init == "wli_only"


@pytest.mark.parametrize("kwargs", [dict(target="student"), dict(cosine="rows"),
                                    dict(relation="add"), dict(center=1), dict(wli_gate="yes")])
def test_bad_variant_values_name_the_field(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        GKDDenConfig(**kwargs)


def test_group_den_refuses_what_it_does_not_compute():
    t = torch.randn(2, 4, 3)
    lab, tl = torch.tensor([0, 0]), torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="gathered"):
        group_den(t, lab, tl, t, lab, tl, GKDDenConfig(cosine="token"))


def test_centred_loss_ignores_a_token_shared_by_every_position():
    """(b): adding one vector to every token of an image changes L_Den, unless centred."""
    g = torch.Generator().manual_seed(0)
    tw, tn = torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, 5, generator=g)
    lw, ln = torch.tensor([0, 1, 1]), torch.tensor([1, 0, 1])
    tlw, tln = torch.randint(-1, 2, (3, 4), generator=g), torch.randint(-1, 2, (3, 4), generator=g)
    shift_w, shift_n = 5 * torch.randn(3, 1, 5, generator=g), 5 * torch.randn(3, 1, 5, generator=g)
    for cfg in (GKDDenConfig(center=True), GKDDenConfig(center=True, cosine="token")):
        a = GKDDen(cfg)(tw, lw, tlw, tn, ln, tln)["den"]
        b = GKDDen(cfg)(tw + shift_w, lw, tlw, tn + shift_n, ln, tln)["den"]
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    plain = GKDDen(GKDDenConfig())
    assert abs(float(plain(tw, lw, tlw, tn, ln, tln)["den"])
               - float(plain(tw + shift_w, lw, tlw, tn + shift_n, ln, tln)["den"])) > 1e-3


def test_frozen_target_moves_only_the_student_side(sets):
    """(a): L_Den compares the projected student tokens with the teacher's OWN tokens (the
    loop reference on those inputs gives the same value); no gradient reaches the adapter
    through L_Den; the projector has no bias."""
    d, cfg = _build("pagkd_frozen_target")
    assert d.projector.bias is None
    batch = _batch(sets)
    d.train()
    out = d.student(batch.x_w)
    t = d.teacher_pass(batch.x_n, batch.y_n, want_cam=True)
    tok_w, lab_w, tok_t, lab_n = d.den_inputs(batch, out, t)
    with torch.no_grad():
        own = d.teacher(batch.x_n).tokens
    torch.testing.assert_close(tok_t, own)
    assert not tok_t.requires_grad
    den = d.den(tok_w, batch.y_w, lab_w, tok_t, batch.y_n, lab_n)["den"]
    ref = reference.gkd_den_loss(tok_w.double(), batch.y_w, lab_w, tok_t.double(), batch.y_n,
                                 lab_n, cfg.den)["den"]
    torch.testing.assert_close(den.double(), ref, rtol=1e-5, atol=1e-6)
    den.backward()
    assert d.adapter.weight.grad is None
    assert d.projector.weight.grad is not None and d.projector.weight.grad.abs().sum() > 0


def test_frozen_target_runs_the_teacher_backbone_once_per_step(sets):
    """(a): the step's L_Den and total loss are bit-identical to the former two-pass
    computation (adapter tokens and CAM from one teacher pass, the teacher's own tokens from a
    second, full ``teacher(x_n)``), and the teacher's backbone now runs once per step."""
    d, cfg = _build("pagkd_frozen_target", "train.warmup_epochs=0")
    batch = _batch(sets)
    d.train()
    calls = []
    hook = d.teacher.backbone.register_forward_hook(lambda *a: calls.append(1))
    try:
        out = d.student(batch.x_w)
        named, terms = d.distill_losses(batch, out)
        assert len(calls) == 1
        _, losses = d.forward_train(batch, epoch=0)
        assert len(calls) == 2
    finally:
        hook.remove()
    # the former computation, spelled out: the teacher's own tokens from a second pass
    tok_n, _, cam_n = d.teacher_forward(batch.x_n, batch.y_n, want_cam=True)
    lab_w, lab_n = d.token_labels(batch, out, cam_n)
    with torch.no_grad():
        own = d.teacher(batch.x_n).tokens
    old_den = d.den(d.projector(out.tokens), batch.y_w, lab_w, own, batch.y_n, lab_n)["den"]
    pro = d.pro(out.tokens, batch.y_w, tok_n, batch.y_n)
    assert torch.equal(named["den"], old_den)
    assert torch.equal(named["con"], pro["con"]) and torch.equal(named["pcls"], pro["pcls"])
    old_total = (torch.nn.functional.cross_entropy(out.logits, batch.y_w)
                 + cfg.train.lambda_den * old_den
                 + cfg.train.lambda_pro * (pro["con"] + pro["pcls"]))
    assert torch.equal(losses["total"], old_total)
    # and the pass's own tokens, which den_inputs hands to L_Den, are the second pass's
    t = d.teacher_pass(batch.x_n, batch.y_n, want_cam=True)
    assert torch.equal(t.own_tokens, own)
    assert torch.equal(d.den_inputs(batch, out, t)[2], own)


def test_gate_keeps_wli_labels_uncertain_until_the_student_beats_chance(sets, monkeypatch):
    """(e): closed gate -> every WLI token label is -1; after_epoch opens it when (and only
    when) beats_chance says so, and it stays open; the state is in the weights."""
    d, _ = _build("pagkd_scheduled")
    batch = _batch(sets)
    out = d.student(batch.x_w)
    t = d.teacher_pass(batch.x_n, batch.y_n, want_cam=True)
    assert "gate_open" in d.trainable_state_dict()
    _, lab_w, _, _ = d.den_inputs(batch, out, t)
    assert bool((lab_w == -1).all())
    import pagkd_lite.method.distiller as distiller_module

    monkeypatch.setattr(distiller_module, "beats_chance", lambda *a: False)
    assert d.after_epoch(0, batch)["wli_gate"] == 0.0
    monkeypatch.setattr(distiller_module, "beats_chance", lambda *a: True)
    assert d.after_epoch(1, batch)["wli_gate"] == 1.0
    monkeypatch.setattr(distiller_module, "beats_chance", lambda *a: False)
    assert d.after_epoch(2, batch)["wli_gate"] == 1.0
    _, lab_open, _, _ = d.den_inputs(batch, out, t)
    assert torch.equal(lab_open, d.token_labels(batch, out, t.cam)[0])


def test_beats_chance_is_two_standard_errors_above_one_over_k(sets):
    d, _ = _build("pagkd_scheduled")
    batch = _batch(sets)                      # 6 WLI images, K = 3: threshold 1/3 + 0.385
    n = len(batch.y_w)

    class Fake(torch.nn.Module):
        """Right on the first ``correct`` images, wrong on the others."""

        def __init__(self, correct):
            super().__init__()
            self.correct = correct

        def forward(self, x):
            wrong = (torch.arange(n) >= self.correct).long()
            logits = torch.nn.functional.one_hot((batch.y_w + wrong) % 3, 3).float()
            return type("Out", (), {"logits": logits})()

    d.student = Fake(4)                      # 0.667 < 0.718
    assert not beats_chance(d, batch, 3)
    d.student = Fake(5)                      # 0.833 > 0.718
    assert beats_chance(d, batch, 3)


def test_ramp_scales_the_distillation_terms():
    d, cfg = _build("pagkd_scheduled", "train.warmup_epochs=1")
    assert [d.ramp(e) for e in (1, 2, 5, 6, 9)] == [0.2, 0.4, 1.0, 1.0, 1.0]
    d0, _ = _build("pagkd")
    assert d0.ramp(1) == 1.0


def test_pagkd_logit_adds_the_logit_kd_term(sets):
    """(f): the loss is pagkd's terms plus lambda_kd times logit_kd's L_kd, same batch."""
    d, cfg = _build("pagkd_logit")
    d.eval()
    batch = _batch(sets)
    out = d.student(batch.x_w)
    named, terms = d.distill_losses(batch, out)
    kd_ref = LogitKD(d.student, d.teacher, cfg, 3).distill_losses(batch, out)[0]["kd"]
    torch.testing.assert_close(named["kd"], kd_ref)
    torch.testing.assert_close(terms[-1], cfg.train.lambda_kd * kd_ref)
    assert {"den", "con", "pcls", "kd"} <= set(named) and len(terms) == 3


def test_common_share_splits_the_numerator_exactly():
    g = torch.Generator().manual_seed(1)
    h, t = torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 3, generator=g)
    valid = torch.ones(2, 5, dtype=torch.bool)
    # constant maps: everything is common
    assert _common_share(h.mean(1, keepdim=True).expand_as(h),
                         t.mean(1, keepdim=True).expand_as(t), valid) == pytest.approx(1.0)
    # centred maps: nothing is
    assert _common_share(h - h.mean(1, keepdim=True), t - t.mean(1, keepdim=True),
                         valid) == pytest.approx(0.0, abs=1e-6)


def test_mechanism_metrics_change_nothing_and_oracle_labels_agree(sets):
    """On the oracle's labels the WLI/NBI token labels are the true ones (accuracy 1,
    relation agreement 1); the call changes no weight and no random state."""
    d, _ = _build("oracle_masks")
    batch = _batch(sets)
    before = {k: v.clone() for k, v in d.state_dict().items()}
    rng = torch.get_rng_state()
    m = mechanism_metrics(d, batch)
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(v, d.state_dict()[k]) for k, v in before.items())
    assert m["label_acc_w"] == 1.0 and m["label_acc_n"] == 1.0 and m["relation_agree"] == 1.0
    assert 0.0 <= m["attn_entropy"] <= 1.0 and 0.0 <= m["cam_auc_w"] <= 1.0
    assert all(p.grad is None for p in d.parameters())


@pytest.mark.parametrize("method", ["pagkd", "pagkd_token_cos", "pagkd_scheduled"])
def test_fit_logs_the_mechanism_each_epoch(sets, method):
    d, cfg = _build(method, "train.epochs=2", "train.warmup_epochs=0",
                    "train.steps_per_epoch=1", "train.batch_size=6")
    probe = make_probe(sets["wli_val"], sets["nbi_val"], torch.device("cpu"), per_class=2)
    res = fit(d, sets["wli_train"], sets["wli_val"], cfg.train, torch.device("cpu"),
              train_n=sets["nbi_train"], progress=False, probe=probe)
    for rec in res.history:
        assert {"label_acc_w", "label_acc_n", "relation_agree", "common_share",
                "attn_entropy", "cam_auc_w"} <= set(rec)
    if method == "pagkd_scheduled":
        assert "wli_gate" in res.history[0]


def test_probe_without_masks_reports_the_mask_free_numbers(sets):
    d, _ = _build("pagkd")
    probe = make_probe(sets["wli_val"], sets["nbi_val"], torch.device("cpu"), per_class=2)
    probe = dataclasses.replace(probe, mask_w=None, mask_n=None)
    assert set(mechanism_metrics(d, probe)) == {"common_share", "attn_entropy", "adapter_drift"}


def test_probe_is_balanced_and_fixed(sets):
    a = make_probe(sets["wli_val"], sets["nbi_val"], torch.device("cpu"), per_class=2)
    b = make_probe(sets["wli_val"], sets["nbi_val"], torch.device("cpu"), per_class=2)
    assert torch.equal(a.x_w, b.x_w) and torch.equal(a.x_n, b.x_n)
    assert torch.bincount(a.y_w).tolist() == [2, 2, 2] and a.mask_w is not None
    assert isinstance(a, StepBatch)


MECHANISM_KEYS = {"label_acc_w", "label_acc_n", "relation_agree", "common_share",
                  "attn_entropy", "cam_auc_w"}


def test_nbi_twins_render_the_same_scenes(sets):
    """The twins of a WLI split: same lesions in the same order, the same lesion masks (the
    same geometry, pixel for pixel), rendered as NBI; the latents are the split's own (the
    twins of wli_train have paired_nbi's masks); no global random state is used."""
    rng = torch.get_rng_state()
    twins = nbi_twins(sets["wli_val"])
    assert torch.equal(rng, torch.get_rng_state())
    wli = sets["wli_val"]
    assert twins.modality == "NBI" and twins.lesion_ids == wli.lesion_ids
    assert torch.equal(twins.labels, wli.labels) and torch.equal(twins.masks, wli.masks)
    assert not torch.equal(twins.images, wli.images)
    assert torch.equal(nbi_twins(sets["wli_train"]).masks, sets["paired_nbi"].masks)
    for bad in (sets["nbi_val"], wli.subset([0, 1, 2])):
        with pytest.raises(ValueError, match="nbi_twins"):
            nbi_twins(bad)


def test_paired_probe_holds_true_pairs(sets):
    wli = sets["wli_val"]
    probe = make_probe(wli, nbi_twins(wli), torch.device("cpu"), per_class=2, paired=True)
    unpaired = make_probe(wli, sets["nbi_val"], torch.device("cpu"), per_class=2)
    assert torch.equal(probe.x_w, unpaired.x_w) and torch.equal(probe.y_n, probe.y_w)
    assert torch.equal(probe.mask_n, probe.mask_w)
    with pytest.raises(ValueError, match="twins"):
        make_probe(wli, sets["nbi_val"], torch.device("cpu"), per_class=2, paired=True)


def _pair_probe(sets, method):
    if method == "paired_oracle":
        return make_probe(sets["wli_val"], nbi_twins(sets["wli_val"]), torch.device("cpu"),
                          per_class=2, paired=True)
    return _batch(sets)


@pytest.mark.parametrize("method", ["pseudo_pair", "paired_oracle"])
def test_pair_methods_report_the_mechanism_and_change_nothing(sets, method):
    """pseudo_pair and paired_oracle report PaGKD's numbers (finite, in range) on the probe;
    the call leaves the weights, the train mode, .grad, the global random state and the
    training generator as they were; the probe's pseudo pairs are the same every call."""
    d, _ = _build(method)
    probe = _pair_probe(sets, method)
    d.train()
    d.generator = torch.Generator().manual_seed(5)
    gen, rng = d.generator.get_state(), torch.get_rng_state()
    before = {k: v.clone() for k, v in d.state_dict().items()}
    m = d.after_epoch(0, probe)
    assert set(m) == MECHANISM_KEYS
    assert all(math.isfinite(v) for v in m.values())
    for key in MECHANISM_KEYS - {"common_share"}:
        assert 0.0 <= m[key] <= 1.0, key
    assert d.training and d.student.training and not d.teacher.training
    assert all(p.grad is None for p in d.parameters())
    assert all(torch.equal(v, d.state_dict()[k]) for k, v in before.items())
    assert torch.equal(rng, torch.get_rng_state()) and torch.equal(gen, d.generator.get_state())
    assert d.after_epoch(1, probe) == m
    assert d.after_epoch(0, None) == {}
    mask_free = dataclasses.replace(probe, mask_w=None, mask_n=None)
    assert set(d.after_epoch(0, mask_free)) == {"common_share", "attn_entropy"}


def test_pair_metrics_are_pagkds_numbers_on_the_pairs_the_loss_uses(sets):
    """One implementation: the paired oracle's numbers are probe_metrics of pair_loss's
    attention on the twins; PaGKD's are probe_metrics of GKD-Den's on all same-class pairs."""
    d, cfg = _build("paired_oracle")
    probe = _pair_probe(sets, "paired_oracle")
    with eval_mode(d), torch.enable_grad():
        out = d.student(probe.x_w)
        t = d.teacher_pass(probe.x_n, probe.y_n, want_cam=True)
        lab_w, lab_n = d.token_labels(probe, out, t.cam)
        cam_w = grad_cam(out.logits, out.features, probe.y_w)
    idx = torch.arange(len(probe.y_w))
    det = pair_loss(out.tokens.detach(), lab_w, t.tokens.detach(), lab_n, cfg.den,
                    return_details=True)
    want = probe_metrics(cfg.den, cfg.labels, probe, out.tokens, lab_w, t.tokens, lab_n, idx, idx,
                         det["attn_w"], det["valid_rows_w"], cam_w)
    assert d.after_epoch(0, probe) == want


@pytest.mark.parametrize("method", ["pseudo_pair", "paired_oracle"])
def test_fit_logs_the_pair_mechanism_without_changing_the_training(sets, method):
    """fit hands the probe to PseudoPair.after_epoch each epoch; the losses and the
    validation AUC are those of the same run without a probe."""
    train_n = sets["paired_nbi"] if method == "paired_oracle" else sets["nbi_train"]
    runs = []
    for probe in (None, _pair_probe(sets, method)):
        d, cfg = _build(method, "train.epochs=2", "train.warmup_epochs=0",
                        "train.steps_per_epoch=1", "train.batch_size=6")
        runs.append(fit(d, sets["wli_train"], sets["wli_val"], cfg.train, torch.device("cpu"),
                        train_n=train_n, progress=False, probe=probe).history)
    plain, logged = runs
    for a, b in zip(plain, logged, strict=True):
        assert MECHANISM_KEYS <= set(b) and not MECHANISM_KEYS & set(a)
        assert {k: b[k] for k in a} == a


def test_train_student_gives_a_paired_distiller_a_paired_probe(sets, monkeypatch):
    import pagkd_lite.training.pipeline as pipeline

    seen = {}

    def fake_fit(distiller, *args, probe=None, **kwargs):
        seen["probe"] = probe
        return pipeline.FitResult(best_epoch=0, best_val_auc=0.5)

    monkeypatch.setattr(pipeline, "fit", fake_fit)
    cfg = dataclasses.replace(_cfg("paired_oracle"), device="cpu")
    torch.manual_seed(0)
    pipeline.train_student(cfg, sets, "paired_oracle", Classifier(cfg.model, 3), progress=False)
    probe = seen["probe"]
    assert torch.equal(probe.y_n, probe.y_w) and torch.equal(probe.mask_n, probe.mask_w)
    pipeline.train_student(cfg, sets, "pseudo_pair", Classifier(cfg.model, 3), progress=False)
    unpaired = make_probe(sets["wli_val"], sets["nbi_val"], torch.device("cpu"))
    assert torch.equal(seen["probe"].x_n, unpaired.x_n)


def test_mechanism_means_average_over_seeds_and_skip_missing_epochs():
    from pagkd_lite.training.report import MECHANISM_CURVES, mechanism_figure, mechanism_means

    recs = [{"method": "pagkd", "seed": 0, "history": [{"val_auc": 0.5}, {"val_auc": 0.7,
                                                                          "common_share": 0.9}]},
            {"method": "pagkd", "seed": 1, "history": [{"val_auc": 0.7}, {"val_auc": 0.9,
                                                                          "common_share": 0.7}]}]
    m = mechanism_means(recs)["pagkd"]
    assert m["val_auc"] == pytest.approx([0.6, 0.8])
    assert m["common_share"][0] is None and m["common_share"][1] == pytest.approx(0.8)
    assert len(mechanism_figure(recs).data) == len(MECHANISM_CURVES)  # one line a panel
