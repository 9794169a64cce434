"""SynthEndo's ground truth (lesion masks), the label-quality diagnostics, and the two
references that use pairs or masks: ``paired_hint`` and ``oracle_masks``."""

import dataclasses
from pathlib import Path

import pytest
import torch

from pagkd_lite.apps.diagnose import (
    REFINEMENTS,
    diagnose_labels,
    label_quality,
    relation_quality,
    true_token_labels,
)
from pagkd_lite.config import override, smoke
from pagkd_lite.data import synth_render, synthendo
from pagkd_lite.data.synthendo import SynthEndoConfig, generate
from pagkd_lite.data.transforms import prepare
from pagkd_lite.method.distill import StepBatch, build_distiller
from pagkd_lite.models.classifier import Classifier, ModelConfig


@pytest.fixture
def tiny_pagkd_parts():
    """(cfg, teacher, student): smoke config with test_resnet at d = 16, random weights."""
    torch.manual_seed(0)
    cfg = smoke()
    cfg = dataclasses.replace(
        cfg, model=ModelConfig(backbone="test_resnet", dim=16, feature_index=-2),
        pro=dataclasses.replace(cfg.pro, num_queries=3, num_heads=2))
    return cfg, Classifier(cfg.model, 3), Classifier(cfg.model, 3)


SMALL = dict(image_size=64, n_wli_train=12, n_nbi_train=12, n_wli_val=6, n_nbi_val=6,
             n_wli_test=6, n_nbi_test=6)


def test_masks_shape_and_paired_twins_share_them():
    sets = generate(SynthEndoConfig(**SMALL))
    for name, s in sets.items():
        assert s.masks is not None and s.masks.dtype == torch.uint8
        assert tuple(s.masks.shape) == (len(s), 1, 64, 64), name
        frac = (s.masks >= 128).float().mean(dim=(1, 2, 3))
        assert bool((frac > 0.01).all() and (frac < 0.9).all()), name  # a lesion, not the crop
    assert torch.equal(sets["paired_nbi"].masks, sets["wli_train"].masks)
    sub = sets["wli_test"].subset([2, 0])
    assert torch.equal(sub.masks, sets["wli_test"].masks[[2, 0]])


def test_mask_follows_the_view_transform_and_holds_the_pattern():
    cfg = SynthEndoConfig(**SMALL, seed=5)
    lat = synthendo.sample_latents(12, cfg, synthendo.make_generator(5, "t"), prefix="t")
    masks = synthendo.lesion_masks(lat, cfg).float()[:, 0] / 255
    s = cfg.image_size
    # centroid of the mask = the lesion centre of the view (pixel grid in [-1, 1])
    lin = (torch.arange(s) + 0.5) / s * 2 - 1
    cy = (masks.sum(2) * lin).sum(1) / masks.sum((1, 2))
    cx = (masks.sum(1) * lin).sum(1) / masks.sum((1, 2))
    inside = (lat.params["center"].abs() < 0.5).all(1)  # lesions not cut by the crop border
    assert inside.any()
    assert torch.allclose(cx[inside], lat.params["center"][inside, 0], atol=0.08)
    assert torch.allclose(cy[inside], lat.params["center"][inside, 1], atol=0.08)
    # the class pattern (dark and white structures) lies inside the mask
    geo = synth_render._geometry(lat.params, s)
    dark, light = synth_render._class_pattern(lat.labels, lat.params, geo, s, cfg.num_classes)
    pattern = (dark + light) > 0.2
    assert float(masks[pattern].min()) > 0.25  # the pattern fades out at the soft rim
    # moving the lesion moves the mask
    lat.params["center"] = lat.params["center"] + 0.25
    moved = synthendo.lesion_masks(lat, cfg).float()[:, 0] / 255
    assert not torch.allclose(moved, masks)


def test_augmentation_moves_masks_with_images():
    sets = generate(SynthEndoConfig(**SMALL))
    s = sets["nbi_train"]
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    x, img, m = prepare(s.images, "cpu", True, 180.0, g1, masks=s.masks)
    x0, img0 = prepare(s.images, "cpu", True, 180.0, g2)
    assert torch.equal(x, x0) and torch.equal(img, img0)  # images as without masks
    # the mask rotated with the image: the lesion tint (NBI: browner, less green than the
    # mucosa) is where the rotated mask says, and no longer where the unrotated one was
    green_minus_red = img[:, 1] - img[:, 0]
    rot = m[:, 0] > 0.5
    unrot = s.masks[:, 0].float() / 255 > 0.5
    inside = (green_minus_red * rot).sum() / rot.sum()
    outside = (green_minus_red * ~rot * (img.sum(1) > 0)).sum() / (~rot * (img.sum(1) > 0)).sum()
    assert float(inside) < float(outside)
    assert not torch.equal(rot, unrot)


def test_true_token_labels_pool_to_the_grid():
    m = torch.zeros(1, 1, 8, 8)
    m[0, 0, :4, :4] = 1.0            # top-left cell of a 2 x 2 grid
    m[0, 0, 4:, 4:6] = 1.0           # half of the bottom-right cell
    assert true_token_labels(m, (2, 2)).tolist() == [[True, False, False, True]]
    assert true_token_labels((m * 255).to(torch.uint8), (2, 2)).tolist() == \
        [[True, False, False, True]]


def test_label_quality_on_hand_made_labels():
    truth = torch.tensor([[True, True, True, False, False, False, False, False]])
    labels = torch.tensor([[1, 1, -1, 1, 0, 0, -1, 0]])
    q = label_quality(labels, truth)
    assert q["fg_precision"] == pytest.approx(2 / 3)    # 2 of 3 fg tokens are lesion
    assert q["fg_recall"] == pytest.approx(2 / 3)       # 2 of 3 lesion tokens called fg
    assert q["bg_precision"] == pytest.approx(1.0)      # every bg token is background
    assert q["uncertain"] == pytest.approx(2 / 8)
    empty = label_quality(torch.full((1, 4), -1), torch.zeros(1, 4, dtype=torch.bool))
    assert empty["uncertain"] == 1.0 and empty["fg_precision"] != empty["fg_precision"]  # NaN
    with pytest.raises(ValueError, match="differ"):
        label_quality(labels, truth[:, :4])


def test_relation_quality_on_hand_made_pairs():
    # one WLI image, two NBI images; only the first NBI image has the same class
    lab_w = torch.tensor([[1, 0, -1]])
    truth_w = torch.tensor([[True, False, False]])
    lab_n = torch.tensor([[1, 1, 0], [1, 1, 1]])
    truth_n = torch.tensor([[True, False, False], [True, True, True]])
    q = relation_quality(lab_w, lab_n, truth_w, truth_n, torch.tensor([0]), torch.tensor([0, 1]))
    # R = 1 entries: (p0, q0) fg-fg right, (p0, q1) fg-fg wrong (q1 is background),
    # (p1, q2) bg-bg right  -> 2 of 3 right; 3 of 9 entries are 1
    assert q["n_pairs"] == 1
    assert q["r1_correct"] == pytest.approx(2 / 3)
    assert q["r1_share"] == pytest.approx(3 / 9)


def test_diagnose_labels_rows_and_masks_required(tiny_pagkd_parts):
    cfg, teacher, student = tiny_pagkd_parts
    sets = generate(SynthEndoConfig(**SMALL))
    rows = diagnose_labels(teacher.eval(), student.eval(), sets["nbi_test"], sets["wli_test"],
                           n_images=6)
    assert len(rows) == 2 * len(REFINEMENTS) and {r["cam_of"] for r in rows} == {"teacher on NBI",
                                                               "student on WLI"}
    for r in rows:
        assert 0.0 <= r["uncertain"] <= 1.0
    nomask = sets["nbi_test"].subset(range(6))
    nomask.masks = None
    with pytest.raises(ValueError, match="no ground-truth masks"):
        diagnose_labels(teacher, student, nomask, sets["wli_test"])


def _paired_batch(sets, n=6):
    idx = torch.arange(n)
    x_w, img_w, m_w = prepare(sets["wli_train"].images[idx], "cpu",
                              masks=sets["wli_train"].masks[idx])
    x_n, img_n, m_n = prepare(sets["paired_nbi"].images[idx], "cpu",
                              masks=sets["paired_nbi"].masks[idx])
    y = sets["wli_train"].labels[idx]
    return StepBatch(x_w=x_w, img_w=img_w, y_w=y, x_n=x_n, img_n=img_n, y_n=y,
                     mask_w=m_w, mask_n=m_n)


def test_oracle_masks_uses_the_true_masks_not_the_cam(tiny_pagkd_parts):
    cfg, teacher, student = tiny_pagkd_parts
    sets = generate(SynthEndoConfig(**SMALL))
    batch = _paired_batch(sets)
    d = build_distiller("oracle_masks", student, teacher, cfg, 3)
    assert d.needs_masks and not build_distiller("pagkd", Classifier(cfg.model, 3), teacher,
                                                 cfg, 3).needs_masks
    out = d.student(batch.x_w)
    lab_w, lab_n = d.token_labels(batch, out, None)
    hw = tuple(out.features.shape[-2:])
    truth = true_token_labels(batch.mask_w, hw)
    assert bool(((lab_w == 1) <= truth).all())  # mean > 0.7 implies >= 0.5: fg is lesion
    assert bool(((lab_w == 0) <= ~truth).all())
    # other masks, other labels: the labels come from the masks
    batch.mask_w = 1.0 - batch.mask_w
    assert not torch.equal(d.token_labels(batch, out, None)[0], lab_w)
    _, losses = d.forward_train(_paired_batch(sets), epoch=99)
    assert set(losses) >= {"ce", "den", "con", "pcls"}
    losses["total"].backward()
    assert d.student.embed.weight.grad is not None
    assert all(p.grad is None for p in d.teacher.parameters())


def test_den_par_options_reach_par_and_zero_iterations_is_the_raw_cam(
        tiny_pagkd_parts, monkeypatch):
    from pagkd_lite.method import cam as cam_module
    cfg, teacher, student = tiny_pagkd_parts
    sets = generate(SynthEndoConfig(**SMALL))
    cfg = override(cfg, ["labels.par_dilations=1,2", "labels.par_iters=3", "labels.par_scale=4"])
    seen = []

    def spy(image, cam, dilations, num_iter, scale, align_corners=False):
        seen.append((dilations, num_iter, scale))
        return real(image, cam, dilations, num_iter=num_iter, scale=scale,
                    align_corners=align_corners)

    real = cam_module.par_refine
    monkeypatch.setattr(cam_module, "par_refine", spy)
    d = build_distiller("pagkd", student, teacher, cfg, 3)
    d.forward_train(_paired_batch(sets), epoch=99)
    assert seen == [((1, 2), 3, 4)]
    # par_iters = 0: the labels come from the raw CAM at the token grid (no PAR call)
    seen.clear()
    d = build_distiller("pagkd", student, teacher, override(cfg, ["labels.par_iters=0"]), 3)
    batch = _paired_batch(sets)
    out = d.student(batch.x_w)
    _, _, cam_n = d.teacher_forward(batch.x_n, batch.y_n, want_cam=True)
    parts = d.cam_labels(batch, out, cam_n)
    assert seen == []
    assert torch.equal(parts["refined"], torch.cat([parts["cam_w"], cam_n]))
    with pytest.raises(ValueError, match="par_dilations"):
        override(cfg, ["labels.par_dilations=0,2"])


def test_diagnose_summary_averages_records_over_seeds(tmp_path):
    """diagnose --write keeps the data (JSON) and a Markdown view of it; the summary script
    reads the data, never the view."""
    import importlib.util
    import json

    from pagkd_lite.apps.diagnose import write_diagnosis

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "diagnose_summary.py"
    spec = importlib.util.spec_from_file_location("diagnose_summary", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    files = []
    for seed, (p, r) in enumerate([(1.0, 0.2), (float("nan"), 0.4)]):
        row = {"refinement": "raw CAM", "cam_of": "teacher on NBI", "token_grid": "4x4",
               "fg_precision": p, "fg_recall": r, "bg_precision": 0.9, "uncertain": 0.1,
               "r1_correct": 0.7, "r1_share": 0.3}
        record = {"preset": "demo", "seed": 100 + seed, "method": "pagkd",
                  "student_val_auc": 0.7, "labels": [row], "thresholds": [row],
                  "common_share": {"student tokens (WLI)": 0.9 + 0.02 * seed}}
        data, view = write_diagnosis(record, tmp_path / f"diag_seed{seed}")
        assert json.loads(data.read_text()) == json.loads(json.dumps(record))
        assert "| raw CAM | teacher on NBI | 4x4 | 1.000 |" in view.read_text() or seed == 1
        files.append(data)
    text = mod.summary(mod.read_records(files))
    line = next(x for x in text.splitlines() if x.startswith("| raw CAM"))
    # precision: the nan is left out (one record had a number); recall: the mean of both
    assert line.startswith("| raw CAM | teacher on NBI | 4x4 | 2 | 1.000 (1) | 0.300 | 0.900 |")
    assert "- student tokens (WLI): 0.910" in text
    with pytest.raises(SystemExit, match="diag_seed0.json"):
        mod.read_records([tmp_path / "diag_seed0.md"])


def test_paired_hint_pulls_tokens_to_the_twin(tiny_pagkd_parts):
    cfg, teacher, student = tiny_pagkd_parts
    sets = generate(SynthEndoConfig(**SMALL))
    batch = _paired_batch(sets)
    d = build_distiller("paired_hint", student, teacher, cfg, 3)
    assert d.paired and d.needs_nbi
    _, losses = d.forward_train(batch, epoch=99)
    assert 0.0 <= float(losses["hint"].detach()) <= 2.0
    losses["total"].backward()
    assert d.regressor.weight.grad is not None and d.student.embed.weight.grad is not None
    assert all(p.grad is None for p in d.teacher.parameters())
    # zero when the regressed student tokens ARE the teacher's tokens at the same positions
    d.regressor, d.student, batch.x_w = torch.nn.Identity(), teacher, batch.x_n
    _, same = d.forward_train(batch, epoch=99)
    assert float(same["hint"]) == pytest.approx(0.0, abs=1e-6)
    # ... and not when the twins are shuffled (the pairing matters)
    batch.x_n = batch.x_n.flip(0)
    _, shuffled = d.forward_train(batch, epoch=99)
    assert float(shuffled["hint"]) > 0.01


def test_common_share_of_constant_and_varied_maps():
    from pagkd_lite.apps.diagnose import common_share

    const = torch.ones(2, 16, 8) * torch.randn(2, 1, 8)
    assert common_share(const) == pytest.approx(1.0)
    g = torch.Generator().manual_seed(0)
    varied = torch.randn(4, 256, 8, generator=g)
    assert common_share(varied) < 0.02  # about 1/hw for independent tokens
