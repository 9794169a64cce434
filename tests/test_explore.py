"""The functions behind notebook 04's GKD-Den explorer, called directly (no widget front end)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from conftest import random_set

from pagkd_lite.config import smoke
from pagkd_lite.course import explore
from pagkd_lite.data.transforms import prepare
from pagkd_lite.method.cam import TokenLabelConfig, par_refine, token_labels
from pagkd_lite.method.distill import build_distiller
from pagkd_lite.method.gkd_den import GKDDenConfig, relation_attention, relation_maps
from pagkd_lite.models.classifier import Classifier, ModelConfig


@pytest.fixture(scope="module")
def sets():
    return random_set(9, 3, "WLI", size=64, seed=1), random_set(9, 3, "NBI", size=64, seed=2)


@pytest.fixture(scope="module")
def step(distiller, sets):
    wli, nbi = sets
    return explore.den_step(distiller, wli, nbi, [0, 1, 2, 3], [0, 1, 2, 4, 5])


def hand_step(lab_w, lab_n, d: int = 4, seed: int = 0, hw=(2, 2),
              cfg: GKDDenConfig | None = None) -> explore.DenStep:
    """A DenStep with chosen token labels, one class, random tokens and 16 x 16 images."""
    g = torch.Generator().manual_seed(seed)
    lab_w, lab_n = torch.as_tensor(lab_w), torch.as_tensor(lab_n)
    bw, bn, n = lab_w.shape[0], lab_n.shape[0], lab_w.shape[1]
    return explore.DenStep(
        img_w=torch.rand(bw, 3, 16, 16, generator=g), img_n=torch.rand(bn, 3, 16, 16, generator=g),
        y_w=torch.zeros(bw, dtype=torch.long), y_n=torch.zeros(bn, dtype=torch.long),
        cam_w=torch.rand(bw, *hw, generator=g), cam_n=torch.rand(bn, *hw, generator=g),
        refined_w=torch.rand(bw, 8, 8, generator=g), refined_n=torch.rand(bn, 8, 8, generator=g),
        lab_w=lab_w, lab_n=lab_n, tokens_w=torch.randn(bw, n, d, generator=g),
        tokens_n=torch.randn(bn, n, d, generator=g), token_hw=hw, cfg=cfg or GKDDenConfig(),
        labels=TokenLabelConfig(), class_names=["a", "b"],
    )


def test_den_step_matches_the_library_pipeline(distiller, sets, step):
    wli, nbi = sets
    assert step.token_hw == (4, 4)
    hw = 16
    assert step.tokens_w.shape == (4, hw, 16) and step.tokens_n.shape == (5, hw, 16)
    assert step.cam_w.shape == (4, 4, 4) and step.refined_n.shape == (5, 32, 32)
    assert set(step.lab_w.unique().tolist()) <= {-1, 0, 1}
    # the step is exactly par_refine + token_labels of its own CAMs
    refined = par_refine(torch.cat([step.img_w, step.img_n]), torch.cat([step.cam_w, step.cam_n]))
    labels = token_labels(refined, (4, 4), high=0.7, low=0.3)
    assert torch.equal(labels, torch.cat([step.lab_w, step.lab_n]))
    # NBI tokens are the adapted teacher tokens
    distiller.eval()
    x_n, _ = prepare(nbi.images[[0, 1, 2, 4, 5]], torch.device("cpu"))
    tok, _, _ = distiller.teacher_forward(x_n, nbi.labels[[0, 1, 2, 4, 5]], want_cam=False)
    torch.testing.assert_close(step.tokens_n, tok.detach())
    assert not step.tokens_w.requires_grad
    # same_group lists the NBI images of the WLI image's class
    for i in range(4):
        assert all(int(step.y_n[j]) == int(step.y_w[i]) for j in step.same_group(i))


def test_den_step_needs_a_teacher_side(sets):
    wli, nbi = sets
    plain = build_distiller("wli_only", Classifier(ModelConfig("test_resnet", 8, -2), 3), None,
                            smoke(), 3)
    with pytest.raises(ValueError, match="no teacher"):
        explore.den_step(plain, wli, nbi, [0], [0])


def test_pair_attention_is_the_library_attention(step):
    m = 0
    n = step.same_group(m)[0]
    att = explore.pair_attention(step, m, n)
    R = relation_maps(step.lab_w[[m]], step.lab_n[[n]])
    _, a, v = relation_attention(step.tokens_w[[m]], step.tokens_n[[n]], R, step.cfg)
    assert torch.equal(att["R"], R[0])
    torch.testing.assert_close(att["attn_w"], a[0])
    assert torch.equal(att["valid_w"], v[0])
    torch.testing.assert_close(att["round_trip"], att["attn_w"] @ att["attn_n"])
    # masked entries get exactly zero weight (rows with no key left: uniform by default);
    # valid rows sum to one
    full_w, full_n = (att["R"] == 0).all(1), (att["R"].T == 0).all(1)
    assert torch.all(att["attn_w"][(att["R"] == 0) & ~full_w[:, None]] == 0)
    assert torch.all(att["attn_n"][(att["R"].T == 0) & ~full_n[:, None]] == 0)
    sums = att["attn_w"].sum(1)
    torch.testing.assert_close(sums[att["valid_w"]], torch.ones(int(att["valid_w"].sum())))


def test_pair_must_share_a_class(step):
    m = 0
    other = [j for j in range(len(step.y_n)) if int(step.y_n[j]) != int(step.y_w[m])]
    with pytest.raises(ValueError, match="same group"):
        explore.pair_attention(step, m, other[0])
    with pytest.raises(IndexError):
        explore.pair_attention(step, 99, 0)
    with pytest.raises(IndexError):
        explore.token_attention(step, m, step.same_group(m)[0], 16)


def test_token_attention_figure_shows_the_attention_row(step):
    m = 1
    n = step.same_group(m)[0]
    fig = explore.token_attention(step, m, n, token=5)
    assert isinstance(fig, go.Figure)
    images = [t for t in fig.data if isinstance(t, go.Image)]
    assert len(images) == 3 and len(fig.layout.shapes) == 2
    att = explore.pair_attention(step, m, n)
    expect = explore.heat_overlay(explore.to_rgb(step.img_n[n]), att["attn_w"][5].reshape(4, 4),
                                  mode="nearest", normalise=True)
    assert np.array_equal(np.asarray(images[1].z), expect)


def test_fully_masked_token_attends_nowhere():
    # WLI token 0 is certain foreground; every NBI token is certain background
    step = hand_step([[1, 0, -1, 0]], [[0, 0, 0, 0]], cfg=GKDDenConfig(masked_rows="drop"))
    att = explore.pair_attention(step, 0, 0)
    assert not bool(att["valid_w"][0]) and bool(att["valid_w"][1])
    assert torch.all(att["attn_w"][0] == 0)
    fig = explore.token_attention(step, 0, 0, token=0)
    assert "fully masked: attends nowhere" in fig.layout.title.text
    # the default (the authors'): the same row attends to every NBI token alike
    uniform = explore.pair_attention(hand_step([[1, 0, -1, 0]], [[0, 0, 0, 0]]), 0, 0)
    torch.testing.assert_close(uniform["attn_w"][0], torch.full((4,), 0.25))
    assert "alike" in explore.token_attention(hand_step([[1, 0, -1, 0]], [[0, 0, 0, 0]]), 0, 0,
                                              token=0).layout.title.text
    # an uncertain token may attend everywhere (R = 0.5 everywhere on its row)
    assert torch.all(att["R"][2] == 0.5) and torch.all(att["attn_w"][2] > 0)


def test_relation_figure_is_R(step):
    m = 2
    n = step.same_group(m)[-1]
    fig = explore.relation_figure(step, m, n)
    R = relation_maps(step.lab_w[[m]], step.lab_n[[n]])[0].numpy()
    assert np.array_equal(np.asarray(fig.data[0].z), R)
    assert f"{int((R == 0).sum())} zeros" in fig.layout.title.text


def test_cam_and_label_figures(step):
    n = step.same_group(0)[0]
    fig = explore.cam_figure(step, 0, n)
    assert sum(isinstance(t, go.Image) for t in fig.data) == 8
    fig = explore.token_label_figure(step, 0, n)
    assert sum(isinstance(t, go.Image) for t in fig.data) == 2
    counts = [int((step.lab_w[0] == v).sum()) for v in (1, 0, -1)]
    assert f"{counts[0]} foreground, {counts[1]} background, {counts[2]} uncertain" \
        in fig.layout.annotations[0].text


def test_overlays_by_hand():
    rgb = np.full((8, 8, 3), 100, dtype=np.uint8)
    heat = torch.zeros(2, 2)
    assert np.array_equal(explore.heat_overlay(rgb, heat, alpha=0.0), rgb)
    full = explore.heat_overlay(rgb, heat, alpha=1.0, mode="nearest")
    assert np.array_equal(full[0, 0], explore._TURBO[0])
    labels = torch.tensor([1, 0, -1, -1])
    out = explore.label_overlay(rgb, labels, (2, 2), alpha=1.0)
    assert tuple(out[0, 0]) == explore.LABEL_RGB[1]   # top-left cell: foreground
    assert tuple(out[0, 7]) == explore.LABEL_RGB[0]   # top-right cell: background
    assert tuple(out[7, 7]) == explore.LABEL_RGB[-1]  # bottom row: uncertain
    half = explore.label_overlay(rgb, labels, (2, 2), alpha=0.5)
    assert tuple(half[0, 0]) == tuple(round(0.5 * 100 + 0.5 * v) for v in explore.LABEL_RGB[1])


def test_attention_explorer_offers_only_the_group_and_redraws(step):
    box = explore.attention_explorer(step, show=False)
    c = box.controls
    first = box.figure
    assert isinstance(first, go.Figure)
    for w in range(len(step.y_w)):
        c["wli"].value = w
        offered = [v for _, v in c["nbi"].options]
        assert offered == step.same_group(w) and c["nbi"].value == offered[0]
        assert box.figure.layout.annotations[0].text.startswith(f"WLI {w} ")
    c["token"].value = (c["token"].value + 1) % 16
    assert box.figure is not first
    assert f"token {c['token'].value} " in box.figure.layout.annotations[0].text


def test_den_step_equals_what_the_distillers_training_step_feeds_gkd_den(distiller, sets):
    """The notebook helper and ``forward_train`` give GKD-Den the same tensors on one batch."""
    from pagkd_lite.method.distill import StepBatch

    wli, nbi = sets
    wi, ni = [0, 1, 2, 3], [0, 1, 2, 4, 5]
    step = explore.den_step(distiller, wli, nbi, wi, ni)
    x_w, img_w = prepare(wli.images[wi], torch.device("cpu"))
    x_n, img_n = prepare(nbi.images[ni], torch.device("cpu"))
    batch = StepBatch(x_w, img_w, wli.labels[wi], x_n, img_n, nbi.labels[ni])
    seen = {}
    hook = distiller.den.register_forward_pre_hook(
        lambda _, args: seen.update(zip(("tokens_w", "y_w", "lab_w", "tokens_n", "y_n", "lab_n"),
                                        args, strict=True)))
    distiller.eval()
    try:
        distiller.forward_train(batch, epoch=10**6)
    finally:
        hook.remove()
        distiller.train()
    for name in ("tokens_w", "lab_w", "tokens_n", "lab_n", "y_w", "y_n"):
        assert torch.equal(getattr(step, name), seen[name].detach()), name
