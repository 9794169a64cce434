"""The figure functions behind the notebooks' widgets, called directly (no front end)."""

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from pagkd_lite.course import viz
from pagkd_lite.data.sampler import GroupSampler
from pagkd_lite.method.gkd_pro import GKDPro, GKDProConfig
from pagkd_lite.training.metrics import bootstrap_metrics


def _types(fig: go.Figure) -> list[str]:
    return [t.type for t in fig.data]


def test_as_hwc_uint8_and_float():
    img = torch.randint(0, 256, (3, 8, 10), dtype=torch.uint8)
    out = viz.as_hwc(img)
    assert out.shape == (8, 10, 3) and out.dtype == np.uint8
    assert np.array_equal(out, img.permute(1, 2, 0).numpy())
    flt = viz.as_hwc(img.float() / 255)
    assert np.abs(flt.astype(int) - out.astype(int)).max() <= 1
    with pytest.raises(ValueError, match="3, H, W"):
        viz.as_hwc(torch.zeros(8, 10))


def test_upsample_map_shape_and_range():
    m = torch.rand(4, 4)
    up = viz.upsample_map(m, (32, 32))
    assert up.shape == (32, 32)
    assert up.min() >= float(m.min()) - 1e-6 and up.max() <= float(m.max()) + 1e-6


def test_image_grid(tiny_sets):
    imgs = tiny_sets["wli_train"].images[:5]
    fig = viz.image_grid(imgs, [f"t{i}" for i in range(5)], cols=3)
    assert _types(fig) == ["image"] * 5
    assert fig.data[0].z.shape == (32, 32, 3)
    assert fig.data[4].xaxis == "x5"  # second row, second column of a 2 x 3 grid
    with pytest.raises(ValueError, match="titles"):
        viz.image_grid(imgs, ["a"])


def test_class_examples(tiny_sets):
    fig = viz.class_examples(tiny_sets["wli_train"], tiny_sets["nbi_train"], per_class=2)
    assert _types(fig) == ["image"] * (2 * 3 * 2)  # (class, modality) rows x 2 images


def test_group_explorer(tiny_sets):
    sets = tiny_sets
    sampler = GroupSampler(sets["wli_train"].labels, sets["nbi_train"].labels, batch_size=9,
                           seed=0)
    step = sampler.step()
    for c in range(3):
        fig = viz.group_explorer(sets, step, c)
        n_w = int((step.labels == c).sum())
        assert _types(fig) == ["image"] * (2 * n_w)
        # the traces show exactly the step's images of class c, WLI first
        shown = np.stack([t.z for t in fig.data[:n_w]])
        want = sets["wli_train"].images[step.wli[step.labels == c]].permute(0, 2, 3, 1).numpy()
        assert np.array_equal(shown, want)
    with pytest.raises(ValueError, match="class_index"):
        viz.group_explorer(sets, step, 3)


def test_card_table():
    card = {"name": "x", "modalities": ["WLI", "NBI"], "size": {"images": 3}}
    fig = viz.card_table(card)
    assert _types(fig) == ["table"]
    assert list(fig.data[0].cells.values[0]) == ["name", "modalities", "size"]
    assert fig.data[0].cells.values[1][1] == '["WLI", "NBI"]'


def test_cam_overlay_and_grid():
    img = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    fig = viz.cam_overlay(img, torch.rand(4, 4), title="cam")
    assert _types(fig) == ["image", "heatmap"]
    assert np.asarray(fig.data[1].z).shape == (16, 16)
    imgs = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    grid = viz.cam_grid(imgs, torch.rand(3, 2, 2))
    assert _types(grid).count("image") == 3 and _types(grid).count("heatmap") == 3
    assert sum(bool(t.showscale) for t in grid.data if t.type == "heatmap") == 1
    with pytest.raises(ValueError, match="maps"):
        viz.cam_grid(imgs, torch.rand(2, 2, 2))


def _group_attention():
    torch.manual_seed(0)
    pro = GKDPro(GKDProConfig(num_queries=3, num_heads=2), 2, 8)
    tokens, labels = torch.randn(5, 4, 8), torch.tensor([0, 0, 0, 1, 1])
    out = pro(tokens, labels, tokens, labels, return_details=True)
    return out["attn"][0, :, : 3 * 4]  # WLI group of class 0: 3 images x 2 x 2 tokens


def test_group_attention_and_mass():
    attn = _group_attention()
    imgs = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    fig = viz.group_attention(imgs, attn, (2, 2), query=1)
    assert _types(fig) == ["image"] * 3 + ["heatmap"] * 3
    assert np.asarray(fig.data[3].z).shape == (16, 16)
    mean_fig = viz.group_attention(imgs, attn, (2, 2), query=None, titles=["a", "b", "c"])
    assert len(mean_fig.data) == 6
    with pytest.raises(ValueError, match="attn must be"):
        viz.group_attention(imgs, attn, (3, 3))
    mass = viz.query_image_mass(attn, 3)
    z = np.asarray(mass.data[0].z)
    assert _types(mass) == ["heatmap"] and z.shape == (3, 3)
    assert np.allclose(z.sum(1), 1.0, atol=1e-5)


def test_similarity_matrix():
    sim = torch.randn(4, 4)
    fig = viz.similarity_matrix(sim, ["a", "b", "c", "d"])
    assert _types(fig) == ["heatmap"] and np.asarray(fig.data[0].z).shape == (4, 4)
    with pytest.raises(ValueError, match="square"):
        viz.similarity_matrix(sim, ["a"])


def test_metric_bars_and_learning_curves():
    rng = np.random.default_rng(0)
    labels = np.arange(30) % 3
    probs = rng.dirichlet(np.ones(3), size=30)
    ms = bootstrap_metrics(labels, probs, n_boot=50)
    fig = viz.metric_bars({"a": ms, "b": ms}, metrics=("auc", "f1"))
    assert _types(fig) == ["bar", "bar"] and list(fig.data[0].x) == ["auc", "f1"]
    assert fig.data[0].error_y.array[0] == pytest.approx(ms["auc"].high - ms["auc"].value)
    hist = [{"epoch": 0, "ce": 1.0, "val_auc": 0.5}, {"epoch": 1, "ce": 0.8, "val_auc": 0.6}]
    curves = viz.learning_curves({"m": hist})
    assert len(curves.data) == 2  # val AUC + the ce term


# ------------------------------------------------------------------- showing in JupyterLab
def test_lab_renderer_leaves_the_width_to_jupyterlab():
    """Issue 35: JupyterLab's plotly extension saves a PNG snapshot at the output area's size;
    a figure narrower than the area came back stretched. The renderer drops the width."""
    fig = go.Figure(go.Bar(y=[1, 2])).update_layout(width=500, height=300)
    spec = viz.LabRenderer().to_mimebundle(fig.to_dict())["application/vnd.plotly.v1+json"]
    assert "width" not in spec["layout"] and spec["layout"]["height"] == 300
    assert spec["config"]["responsive"] is True
    assert spec["data"][0]["y"] == [1, 2]
    assert fig.layout.width == 500  # the figure itself is unchanged


def test_use_lab_renderer_replaces_only_plotlys_jupyter_default(monkeypatch):
    import importlib
    import sys
    import types

    import plotly.io as pio

    import pagkd_lite.course

    before = pio.renderers.default
    monkeypatch.delenv("PLOTLY_RENDERER", raising=False)
    try:
        # in a kernel, importing the course makes it the default
        pio.renderers.default = "plotly_mimetype"
        monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
        importlib.reload(pagkd_lite.course)
        assert pio.renderers.default == viz.LAB_RENDERER
        fig = go.Figure(go.Bar(y=[1])).update_layout(width=400)
        bundle = pio.renderers._build_mime_bundle(fig.to_dict())
        assert "width" not in bundle["application/vnd.plotly.v1+json"]["layout"]
        # a renderer the user chose stays
        pio.renderers.default = "plotly_mimetype"
        monkeypatch.setenv("PLOTLY_RENDERER", "plotly_mimetype")
        assert not viz.use_lab_renderer() and pio.renderers.default == "plotly_mimetype"
        monkeypatch.delenv("PLOTLY_RENDERER")
        pio.renderers.default = "json"
        assert not viz.use_lab_renderer() and pio.renderers.default == "json"
    finally:
        pio.renderers.default = before
