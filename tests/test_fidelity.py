"""The authors' behaviour (docs/fidelity.md) as switches, and the paths it fixed: the one
CAM -> label chain (diagnose = training), twins that share their augmentation on the real
``fit`` path, ``class_hint``, the ``authors`` preset and ``pagkd_authors``.

The loss switches (``pro.similarity``, ``pro.con_reduction``, ``den.reduction``,
``den.masked_rows``) are checked against the loop references in ``test_gkd_pro.py`` and
``test_gkd_den.py`` (values and gradients)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from pagkd_lite.apps.diagnose import REFINEMENTS, diagnose_token_labels
from pagkd_lite.config import get_preset, method_config, override, smoke
from pagkd_lite.data.synthendo import SynthEndoConfig, generate
from pagkd_lite.data.transforms import prepare
from pagkd_lite.method import cam as cam_module
from pagkd_lite.method.cam import TokenLabelConfig, cam_token_labels, par_refine
from pagkd_lite.method.distill import AUTHORS_SETTINGS, StepBatch, build_distiller
from pagkd_lite.models.classifier import Classifier, ModelConfig
from pagkd_lite.training import train as train_module
from pagkd_lite.training.train import fit, nbi_training_set

SMALL = dict(image_size=64, n_wli_train=12, n_nbi_train=12, n_wli_val=6, n_nbi_val=6,
             n_wli_test=6, n_nbi_test=6)


@pytest.fixture(scope="module")
def sets():
    return generate(SynthEndoConfig(**SMALL, seed=2))


def _tiny_cfg(*settings):
    cfg = smoke()
    cfg = dataclasses.replace(
        cfg, model=ModelConfig(backbone="test_resnet", dim=16, feature_index=-2),
        pro=dataclasses.replace(cfg.pro, num_queries=3, num_heads=2))
    return override(cfg, list(settings))


# ------------------------------------------------------------------ the classifier head
@pytest.mark.parametrize("head_input", ["tokens", "backbone"])
def test_head_input_matches_a_loop_over_positions(head_input):
    """logits = fc(mean over positions of E) or of F, in value and gradient."""
    torch.manual_seed(0)
    model = Classifier(ModelConfig(backbone="test_resnet", dim=8, feature_index=-2,
                                   head_input=head_input, token_bias=False), 3).double()
    feats = torch.randn(2, model.feature_channels, 3, 2, dtype=torch.float64,
                        requires_grad=True)
    logits, tokens = model.head(feats)
    pooled = []
    for b in range(2):  # the slow way: one position at a time
        acc = 0
        for i in range(3):
            for j in range(2):
                acc = acc + (tokens[b, i * 2 + j] if head_input == "tokens" else feats[b, :, i, j])
        pooled.append(acc / 6)
    ref = model.fc(torch.stack(pooled))
    torch.testing.assert_close(logits, ref)
    g1 = torch.autograd.grad(logits.square().sum(), feats, retain_graph=True)[0]
    g2 = torch.autograd.grad(ref.square().sum(), feats)[0]
    torch.testing.assert_close(g1, g2)
    assert model.embed.bias is None
    assert model.fc.in_features == (8 if head_input == "tokens" else model.feature_channels)


def test_backbone_head_keeps_the_tokens_off_the_classifier():
    torch.manual_seed(0)
    model = Classifier(ModelConfig(backbone="test_resnet", dim=8, feature_index=-2,
                                   head_input="backbone"), 3)
    out = model(torch.randn(2, 3, 32, 32))
    F.cross_entropy(out.logits, torch.tensor([0, 1])).backward()
    assert model.embed.weight.grad is None  # CE reaches the backbone, not the token branch
    assert next(model.backbone.parameters()).grad is not None
    with pytest.raises(ValueError, match="head_input"):
        ModelConfig(head_input="pooled")


def test_token_bias_off_reaches_the_adapter():
    cfg = _tiny_cfg("model.token_bias=false")
    d = build_distiller("pagkd", Classifier(cfg.model, 3), Classifier(cfg.model, 3), cfg, 3)
    assert d.adapter.bias is None and d.student.embed.bias is None


# ------------------------------------------------------------------ CAM -> token labels
def _authors_labels_slowly(image, cam, hw, cfg):
    """The authors' rule written image by image, token by token (PAR with the config's
    ``par_align_corners``)."""
    out = torch.empty(cam.shape[0], hw[0] * hw[1], dtype=torch.long)
    for b in range(cam.shape[0]):
        wins = []
        for score in (cfg.high, cfg.low):
            two = torch.stack([torch.full_like(cam[b], score), cam[b]])[None].softmax(1)
            if cfg.par_iters:
                two = par_refine(image[b:b + 1], two, cfg.par_dilations, cfg.par_iters,
                                 scale=cfg.par_scale, align_corners=cfg.par_align_corners)
            two = F.interpolate(two, size=hw, mode="bilinear", align_corners=False)[0]
            wins.append([bool(two[1, i, j] > two[0, i, j]) for i in range(hw[0])
                         for j in range(hw[1])])
        for t in range(hw[0] * hw[1]):
            out[b, t] = 1 if wins[0][t] else (0 if not wins[1][t] else -1)
    return out


@pytest.mark.parametrize("iters", [0, 3])
def test_authors_label_rule_matches_a_slow_version(iters):
    g = torch.Generator().manual_seed(iters)
    image = torch.rand(3, 3, 32, 32, generator=g)
    cam = torch.rand(3, 4, 4, generator=g)
    cfg = TokenLabelConfig(rule="authors", par_iters=iters, par_dilations=(1, 2))
    labels, _ = cam_token_labels(image, cam, (4, 4), cfg)
    assert torch.equal(labels, _authors_labels_slowly(image, cam, (4, 4), cfg))
    assert set(labels.unique().tolist()) <= {-1, 0, 1}
    if iters == 0:  # without PAR the rule is a cut of the raw CAM (ties go to background)
        flat = cam.flatten(1)
        expect = torch.where(flat > 0.7, 1, torch.where(flat <= 0.3, 0, -1))
        assert torch.equal(labels, expect)


def test_zero_iterations_do_no_neighbour_work_and_no_resampling(monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("par_iters=0 must not resample or visit neighbours")

    monkeypatch.setattr(cam_module, "_all_neighbours", forbidden)
    monkeypatch.setattr(cam_module.F, "interpolate", forbidden)
    monkeypatch.setattr(cam_module.F, "adaptive_avg_pool2d", forbidden)
    cam = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0))
    labels, shown = cam_token_labels(torch.rand(2, 3, 32, 32), cam, (4, 4),
                                     TokenLabelConfig(par_iters=0))
    assert shown is cam
    flat = cam.flatten(1)
    assert torch.equal(labels, torch.where(flat > 0.7, 1, torch.where(flat < 0.3, 0, -1)))


@pytest.mark.parametrize("settings", [("labels.par_iters=0",), ("labels.par_iters=2",),
                                      ("labels.rule=authors", "labels.par_iters=2")])
def test_diagnose_labels_equal_the_labels_of_a_training_step(sets, settings):
    """The same images (no augmentation), the same models in eval mode, the same settings:
    diagnose and a training step's cam_labels give the same token labels."""
    cfg = _tiny_cfg(*settings)
    torch.manual_seed(0)
    student, teacher = Classifier(cfg.model, 3).eval(), Classifier(cfg.model, 3).eval()
    d = build_distiller("pagkd", student, teacher, cfg, 3)
    d.eval()
    idx = torch.arange(6)
    x_w, img_w = prepare(sets["wli_test"].images[idx], "cpu")
    x_n, img_n = prepare(sets["nbi_test"].images[idx], "cpu")
    batch = StepBatch(x_w=x_w, img_w=img_w, y_w=sets["wli_test"].labels[idx], x_n=x_n,
                      img_n=img_n, y_n=sets["nbi_test"].labels[idx])
    out = d.student(batch.x_w)
    _, _, cam_n = d.teacher_forward(batch.x_n, batch.y_n, want_cam=True)
    step = d.cam_labels(batch, out, cam_n)
    diag = diagnose_token_labels(teacher, student, sets["nbi_test"], sets["wli_test"], cfg.labels,
                                 n_images=6)
    assert torch.equal(diag["NBI"], step["lab_n"]) and torch.equal(diag["WLI"], step["lab_w"])
    assert any(r.rule == "authors" for r in REFINEMENTS)


# ------------------------------------------------------------------ pairs and references
def _spy_geometry(monkeypatch):
    calls = []
    real = train_module.draw_rotate_flip

    def spy(b, max_degrees, generator=None):
        out = real(b, max_degrees, generator)
        calls.append(out)
        return out

    monkeypatch.setattr(train_module, "draw_rotate_flip", spy)
    seen = []
    real_prepare = train_module.prepare

    def prepare_spy(images, device, augment=False, max_degrees=180.0, generator=None,
                    masks=None, geometry=None, **inputs):
        seen.append(geometry)
        return real_prepare(images, device, augment, max_degrees, generator, masks, geometry,
                            **inputs)

    monkeypatch.setattr(train_module, "prepare", prepare_spy)
    return calls, seen


def _fit(method, sets, cfg):
    torch.manual_seed(0)
    d = build_distiller(method, Classifier(cfg.model, 3), Classifier(cfg.model, 3), cfg, 3)
    tcfg = dataclasses.replace(cfg.train, epochs=1, steps_per_epoch=2, warmup_epochs=0,
                               batch_size=6)
    train_n = nbi_training_set(d, sets)
    fit(d, sets["wli_train"], sets["wli_val"], tcfg, torch.device("cpu"), seed=3, train_n=train_n,
        progress=False)
    return d


def test_paired_twins_share_their_rotation_and_flip_on_the_real_fit_path(sets, monkeypatch):
    calls, seen = _spy_geometry(monkeypatch)
    _fit("paired_hint", sets, _tiny_cfg())
    # per step: one draw (WLI), applied to the WLI batch and then to its NBI twins
    assert len(calls) == 2 and len(seen) == 4
    for step in range(2):
        wli, nbi = seen[2 * step], seen[2 * step + 1]
        assert wli is calls[step] and nbi is calls[step]
        assert float(wli[0].abs().max()) > 0  # a real rotation was drawn


def test_unpaired_nbi_keeps_its_own_augmentation_stream(sets, monkeypatch):
    calls, seen = _spy_geometry(monkeypatch)
    _fit("class_hint", sets, _tiny_cfg())
    assert len(calls) == 4  # WLI and NBI draw separately
    assert not torch.equal(seen[0][0], seen[1][0])


def test_class_hint_pairs_same_class_different_lesions(sets):
    cfg = _tiny_cfg()
    d = _fit("class_hint", sets, cfg)
    assert not d.paired and d.needs_nbi
    y_w = torch.tensor([0, 1, 2, 0, 1, 2])
    y_n = torch.tensor([2, 2, 0, 1, 0, 1])
    batch = StepBatch(x_w=torch.zeros(6, 3, 8, 8), img_w=torch.zeros(6, 3, 8, 8), y_w=y_w,
                      y_n=y_n)
    d.generator = torch.Generator().manual_seed(0)
    iw, in_ = d.partners(batch)
    assert torch.equal(y_w[iw], y_n[in_]) and len(iw) == 6
    assert not set(sets["wli_train"].lesion_ids) & set(sets["nbi_train"].lesion_ids)


# ------------------------------------------------------------------ preset and method
def test_authors_preset_and_method_set_every_switch():
    a = get_preset("authors")
    assert (a.model.head_input, a.model.token_bias) == ("backbone", False)
    assert (a.pro.similarity, a.pro.channel_scale, a.pro.con_reduction) == ("channel", 20.0, "sum")
    assert (a.den.reduction, a.den.masked_rows, a.labels.rule, a.labels.par_iters) == (
        "per_class_sum", "uniform", "authors", 10)
    demo = get_preset("demo")
    assert method_config(demo, "pagkd_authors") == override(demo, list(AUTHORS_SETTINGS))
    assert method_config(demo, "pagkd_paper") is demo
    assert dataclasses.replace(a, name="demo") == method_config(demo, "pagkd_authors")


def test_pagkd_authors_trains_with_its_own_teacher(sets):
    from pagkd_lite.training.pipeline import train_student, train_teacher

    cfg = override(_tiny_cfg(), ["train.epochs=1", "teacher.epochs=1", "train.warmup_epochs=0"])
    data = dict(sets)
    plain, _ = train_teacher(cfg, data, progress=False)
    with pytest.raises(ValueError, match="method_config"):
        train_student(cfg, data, "pagkd_authors", plain, progress=False)
    teacher, _ = train_teacher(method_config(cfg, "pagkd_authors"), data, progress=False)
    d, result = train_student(cfg, data, "pagkd_authors", teacher, progress=False)
    assert d.student.cfg.head_input == "backbone" and d.label_cfg.rule == "authors"
    assert d.pro.cfg.similarity == "channel" and result.history


# ------------------------------------------------------------------ the fidelity switches
def test_par_align_corners_is_the_upsampling_of_the_cam_inside_par():
    """``par_refine`` upsamples the CAM bilinearly with ``align_corners`` as asked (the image
    always with False); the label chain passes ``labels.par_align_corners`` to it, for the
    authors' rule and the kit's, and it changes some labels."""
    g = torch.Generator().manual_seed(5)
    image, cam = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 4, 4, generator=g)
    for corners in (False, True):
        up = F.interpolate(cam[:, None], size=(16, 16), mode="bilinear",
                           align_corners=corners)[:, 0]
        torch.testing.assert_close(par_refine(image, cam, (1,), num_iter=0,
                                              align_corners=corners), up)
    cfg = TokenLabelConfig(rule="authors", par_iters=3, par_dilations=(1, 2),
                           par_align_corners=True)
    labels, _ = cam_token_labels(image, cam, (4, 4), cfg)
    assert torch.equal(labels, _authors_labels_slowly(image, cam, (4, 4), cfg))
    cams = torch.rand(32, 4, 4, generator=g)
    images = torch.rand(32, 3, 32, 32, generator=g)
    for rule in ("authors", "kit"):
        kit, authors = (cam_token_labels(images, cams, (4, 4), dataclasses.replace(
            cfg, rule=rule, par_align_corners=c))[0] for c in (False, True))
        assert (kit != authors).any()
    assert TokenLabelConfig().par_align_corners is False
    with pytest.raises(ValueError, match="par_align_corners must be a bool"):
        TokenLabelConfig(par_align_corners="yes")


def test_expand_rotation_keeps_the_whole_image_and_zooms_out():
    """``input_rotate="expand"``: at multiples of 90 degrees it is the kit's rotation; at 45
    degrees an all-ones image covers half the canvas (a square shrunk by 1 / sqrt(2), turned),
    against 2 (sqrt(2) - 1) = 0.83 when the corners are cut; bright corners stay in view."""
    from pagkd_lite.data.transforms import rotate_flip

    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    flips = torch.tensor([1.0, -1.0])
    for a in (0.0, math.pi / 2):
        angles = torch.full((2,), a)
        torch.testing.assert_close(rotate_flip(x, angles, flips, "expand"),
                                   rotate_flip(x, angles, flips))
    ones, q = torch.ones(1, 1, 64, 64), torch.full((1,), math.pi / 4)
    assert abs(float(rotate_flip(ones, q, torch.ones(1), "expand").mean()) - 0.5) < 0.03
    assert abs(float(rotate_flip(ones, q, torch.ones(1)).mean()) - 0.828) < 0.03
    corners = torch.zeros(1, 1, 64, 64)
    for i in (slice(4, 8), slice(56, 60)):
        for j in (slice(4, 8), slice(56, 60)):
            corners[..., i, j] = 1.0
    kept = rotate_flip(corners, q, torch.ones(1), "expand").sum() * 2  # area shrinks by 2
    assert abs(float(kept / corners.sum()) - 1) < 0.1
    assert float(rotate_flip(corners, q, torch.ones(1)).sum()) < 0.05 * float(corners.sum())
    with pytest.raises(ValueError, match="rotate must be one of"):
        rotate_flip(x, angles, flips, "reshape")


def test_expand_rotation_matches_scipy_rotate_with_reshape_then_resize():
    """The authors' ``scipy.ndimage.rotate(image, angle)`` (``reshape=True``), resized back to
    the canvas: the same picture as ``rotate_flip(..., "expand")`` up to interpolation."""
    from pagkd_lite.data.transforms import rotate_flip

    ndimage = pytest.importorskip("scipy.ndimage")
    g = torch.Generator().manual_seed(1)
    img = F.interpolate(torch.rand(1, 1, 8, 8, generator=g), size=(64, 64), mode="bilinear",
                        align_corners=False)
    for degrees in (30.0, -60.0, 135.0):
        ref = torch.from_numpy(ndimage.rotate(img[0, 0].numpy(), degrees, order=1)).float()
        ref = F.interpolate(ref[None, None], size=(64, 64), mode="bilinear",
                            align_corners=False, antialias=True)
        angle, keep = torch.tensor([math.radians(degrees)]), torch.ones(1)
        assert float((rotate_flip(img, angle, keep, "expand") - ref).abs().mean()) < 0.02
        assert float((rotate_flip(img, angle, keep) - ref).abs().mean()) > 0.2  # crop: not it


def test_input_norm_none_feeds_the_unit_images_in_training_and_prediction(sets, monkeypatch):
    """``model.input_norm=none``: ``prepare`` hands the [0, 1] image to the network (a copy),
    ``fit`` asks for it and for ``model.input_rotate``, and ``predict`` scores what the model
    was trained on; the default stays ImageNet-normalised. SSL with ``none`` is refused."""
    from pagkd_lite.data.transforms import normalize, to_float
    from pagkd_lite.training.train import predict

    images = sets["wli_test"].images[:3]
    x, img = prepare(images, "cpu", norm="none")
    assert torch.equal(x, img) and x is not img
    torch.testing.assert_close(prepare(images, "cpu")[0], normalize(to_float(images)))
    cfg = _tiny_cfg("model.input_norm=none", "model.input_rotate=expand")
    model = Classifier(cfg.model, 3).eval()
    with torch.no_grad():
        expect = torch.softmax(model(to_float(sets["wli_test"].images)).logits, 1).numpy()
    assert abs(predict(model, sets["wli_test"], torch.device("cpu")) - expect).max() < 1e-5
    seen = []
    real = train_module.prepare
    monkeypatch.setattr(train_module, "prepare",
                        lambda *a, **k: seen.append((k["norm"], k["rotate"])) or real(*a, **k))
    _fit("pagkd", sets, cfg)
    assert seen and set(seen) == {("none", "expand")}
    with pytest.raises(ValueError, match="input_norm='none' with init='ssl'"):
        ModelConfig(input_norm="none", init="ssl")
    with pytest.raises(ValueError, match="input_rotate must be one of"):
        ModelConfig(input_rotate="reshape")


def test_group_pool_reaches_the_sampler_of_unpaired_methods_only(sets, monkeypatch):
    """``groups.pool`` becomes the distiller's ``group_pool`` (``build_distiller``) and the
    pool of its group sampler; paired methods and the teacher draw from every image."""
    pools = []
    real = train_module.GroupSampler

    def spy(*a, **k):
        pools.append(k["pool"])
        return real(*a, **k)

    monkeypatch.setattr(train_module, "GroupSampler", spy)
    cfg = _tiny_cfg("groups.pool=authors")
    assert _fit("class_hint", sets, cfg).group_pool == "authors" and pools == ["authors"]
    pools.clear()
    _fit("paired_hint", sets, cfg)
    assert pools == ["all"]
    assert _fit("pagkd", sets, _tiny_cfg()).group_pool == "all"


def test_pagkd_authors_pins_every_field_it_depends_on():
    """``AUTHORS_SETTINGS`` fixes every den field, the loss weights and the ramp, the
    augmentation, the label source, and sets every switch of docs/fidelity.md."""
    from pagkd_lite.method.den_pairs import GKDDenConfig

    pinned = {item.split("=", 1)[0] for item in AUTHORS_SETTINGS}
    assert {f"den.{f.name}" for f in dataclasses.fields(GKDDenConfig)} <= pinned
    assert {"train.lambda_den", "train.lambda_pro", "train.lambda_ramp_epochs",
            "labels.source", "labels.flip_rate"} <= pinned
    a = get_preset("authors")
    assert (a.model.embed_init, a.model.student_init, a.model.input_norm,
            a.model.input_rotate) == ("kaiming_fan_out", "wli_only", "none", "expand")
    assert a.groups.pool == "authors" and a.labels.par_align_corners is True
    assert (a.den.two_way, a.den.use_mask, a.den.target, a.train.lambda_den,
            a.train.lambda_pro) == (True, True, "adapted", 1.0, 0.001)
    paper = method_config(get_preset("paper"), "pagkd_authors")
    assert (paper.data.image_size, paper.model.backbone, paper.model.input_norm) == (
        448, "resnet50", "none")
