"""Embeddings and modality-invariance numbers of notebook 06, on data where the answer is known."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from conftest import random_set

from pagkd_lite.config import smoke
from pagkd_lite.course import embedding as emb
from pagkd_lite.data.sampler import GroupSampler
from pagkd_lite.data.transforms import normalize, to_float
from pagkd_lite.method.distill import build_distiller
from pagkd_lite.models.classifier import Classifier


def clusters(n_a: int, n_b: int, d: int = 8, gap: float = 50.0, seed: int = 0):
    """Two Gaussian blobs, ``gap`` apart along the first axis; modality = blob."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n_a, d))
    b = rng.normal(size=(n_b, d))
    b[:, 0] += gap
    return np.concatenate([a, b]), np.array(["WLI"] * n_a + ["NBI"] * n_b)


def mixing_reference(x, mod, k):
    """Brute force: full distance matrix, each point's k nearest others, normalised share."""
    n = len(x)
    dist = np.linalg.norm(x[:, None] - x[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    scores = []
    for i in range(n):
        nn = np.argsort(dist[i])[:k]
        frac = np.mean(mod[nn] != mod[i])
        expected = np.sum(mod != mod[i]) / (n - 1)
        scores.append(frac / expected)
    return float(np.mean(scores))


# ------------------------------------------------------------------ invariance numbers
def test_separate_modality_clusters_do_not_mix():
    x, mod = clusters(60, 60)
    assert emb.modality_mixing(x, mod, k=10) == pytest.approx(0.0, abs=1e-12)
    assert emb.silhouette_by(x, mod) > 0.9


@pytest.mark.parametrize("n_a,n_b", [(150, 150), (100, 300)])
def test_identical_distributions_mix_perfectly(n_a, n_b):
    """Same distribution: E[mixing] = 1 whatever the proportions (one draw scatters by about
    0.03 balanced, 0.06 at 1:3; the mean of five draws is checked)."""
    values = []
    for seed in range(5):
        x, mod = clusters(n_a, n_b, gap=0.0, seed=seed)
        values.append(emb.modality_mixing(x, mod, k=10))
        assert abs(emb.silhouette_by(x, mod)) < 0.05
    assert np.mean(values) == pytest.approx(1.0, abs=0.08)


def test_mixing_equals_brute_force():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 5))
    mod = np.array(["WLI", "NBI", "NBI"] * 16 + ["WLI", "WLI"])
    x[mod == "NBI", 0] += 1.0  # partly separated: a value strictly between 0 and 1
    value = emb.modality_mixing(x, mod, k=7)
    assert value == pytest.approx(mixing_reference(x, mod, 7), abs=1e-12)
    assert 0.1 < value < 0.95


def test_mixing_excludes_the_point_itself_even_with_duplicates():
    x, mod = clusters(20, 20, gap=0.0, seed=2)
    x = np.concatenate([x, x])  # every point twice, same modality: its twin is a neighbour
    mod = np.concatenate([mod, mod])
    v = emb.modality_mixing(x, mod, k=1)  # the single neighbour is the twin: same modality
    assert v == pytest.approx(0.0, abs=1e-12)


def test_mixing_and_silhouette_errors():
    x, mod = clusters(5, 5)
    with pytest.raises(ValueError, match="two modalities"):
        emb.modality_mixing(x, np.array(["WLI"] * 10))
    with pytest.raises(ValueError, match="k must be"):
        emb.modality_mixing(x, mod, k=10)
    with pytest.raises(ValueError, match="groups"):
        emb.silhouette_by(x, np.zeros(10))


def test_silhouette_is_rousseeuw():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(30, 3))
    lab = np.repeat([0, 1, 2], 10)
    x[lab == 1] += 2.0
    dist = np.linalg.norm(x[:, None] - x[None], axis=-1)
    s = []
    for i in range(30):
        own = lab == lab[i]
        a = dist[i, own].sum() / (own.sum() - 1)
        b = min(dist[i, lab == c].mean() for c in set(lab.tolist()) - {lab[i]})
        s.append((b - a) / max(a, b))
    assert emb.silhouette_by(x, lab) == pytest.approx(float(np.mean(s)), abs=1e-10)


def test_invariance_and_l2():
    x, mod = clusters(30, 30)
    label = np.tile([0, 1], 30)
    out = emb.invariance(x, mod, label, k=5)
    assert set(out) == {"mixing", "sil_class", "sil_modality", "n"}
    assert out["mixing"] < 0.05 and out["sil_modality"] > 0.9 and out["n"] == 60
    unit = emb.l2_normalise(x)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0)


def test_umap_2d_is_deterministic_and_keeps_clusters_apart():
    x, mod = clusters(40, 40, d=16, gap=20.0)
    y1 = emb.umap_2d(x, seed=0)
    y2 = emb.umap_2d(x, seed=0)
    assert y1.shape == (80, 2) and y1.dtype == np.float32
    np.testing.assert_array_equal(y1, y2)
    assert emb.modality_mixing(y1, mod, k=5) < 0.05
    with pytest.raises(ValueError, match="N >= 4"):
        emb.umap_2d(x[:3])


# ------------------------------------------------------------------ embeddings from models
def test_image_embeddings_are_pooled_tokens(distiller):
    images = random_set(10, 3, "WLI", size=32, seed=5)
    x = normalize(to_float(images.images))
    distiller.eval()
    with torch.no_grad():
        tokens = distiller.student(x).tokens
        feats = distiller.teacher.backbone(x)[-1]
        adapted = distiller.adapter(feats).flatten(2).transpose(1, 2)
    distiller.train()
    e = emb.image_embeddings(distiller, images, "cpu", batch_size=4)
    assert e.shape == (10, 16)
    np.testing.assert_allclose(e, tokens.mean(1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(emb.image_embeddings(distiller.student, images), e, atol=1e-6)
    a = emb.image_embeddings(distiller, images, side="adapter")
    np.testing.assert_allclose(a, adapted.mean(1).numpy(), rtol=1e-5, atol=1e-6)
    assert distiller.training  # mode restored
    with pytest.raises(ValueError, match="adapter"):
        emb.image_embeddings(distiller.student, images, side="adapter")


def test_prototype_sets_are_the_gkd_pro_prototypes(distiller):
    wli = random_set(12, 3, "WLI", size=32, seed=6)
    nbi = random_set(12, 3, "NBI", size=32, seed=7)
    ps = emb.prototype_sets(distiller, wli, nbi, steps=2, batch_size=6, seed=3)
    nq = distiller.pro.cfg.num_queries
    assert ps.vectors.shape == (2 * 2 * 3 * nq, 16) and len(ps) == 36
    assert set(ps.modality.tolist()) == {"WLI", "NBI"} and set(ps.label.tolist()) == {0, 1, 2}
    # rows of step 0, WLI = prototypes() of that step's WLI tokens alone (padding is masked)
    step = next(iter(GroupSampler(wli.labels, nbi.labels, 6, num_classes=3, steps_per_epoch=2,
                                  seed=3)))
    distiller.eval()
    with torch.no_grad():
        tok = distiller.student(normalize(to_float(wli.images[step.wli]))).tokens
        protos, classes, _ = distiller.pro.prototypes(tok, step.labels)
    distiller.train()
    sel = (ps.step == 0) & (ps.modality == "WLI")
    np.testing.assert_allclose(ps.vectors[sel], protos.reshape(-1, 16).numpy(), atol=1e-5)
    assert ps.label[sel].tolist() == classes.repeat_interleave(nq).tolist()
    means = ps.group_means()
    assert len(means) == 2 * 2 * 3 and set(means.slot.tolist()) == {-1}
    first = (ps.step == 0) & (ps.modality == "WLI") & (ps.label == 0)
    np.testing.assert_allclose(means.vectors[0], ps.vectors[first].mean(0), rtol=1e-6)


def test_prototype_sets_need_gkd_pro():
    cfg = smoke()
    d = build_distiller("pagkd_no_pro", Classifier(cfg.model, 3), Classifier(cfg.model, 3), cfg, 3)
    with pytest.raises(ValueError, match="GKD-Pro"):
        emb.prototype_sets(d, random_set(6, 3, "WLI"), random_set(6, 3, "NBI"))


def test_embedding_figure_panels():
    xy = np.random.default_rng(0).normal(size=(12, 2))
    label = np.tile([0, 1, 2], 4)
    mod = np.array(["WLI"] * 6 + ["NBI"] * 6)
    fig = emb.embedding_figure(xy, label, mod, ["a", "b", "c"], title="t")
    assert isinstance(fig, go.Figure)
    # 3 classes x 2 modalities on the left, 2 modalities on the right
    assert len(fig.data) == 8
    assert sum(len(t.x) for t in fig.data) == 24


def test_adapter_embeddings_and_prototypes_equal_the_distillers_training_step(distiller):
    """``image_embeddings(side="adapter")`` and ``prototype_sets`` see the tokens that
    ``forward_train`` hands to GKD-Pro on the same group step."""
    from pagkd_lite.data.transforms import prepare
    from pagkd_lite.method.distill import StepBatch

    wli = random_set(12, 3, "WLI", size=32, seed=6)
    nbi = random_set(12, 3, "NBI", size=32, seed=7)
    ps = emb.prototype_sets(distiller, wli, nbi, steps=1, batch_size=6, seed=3)
    step = next(iter(GroupSampler(wli.labels, nbi.labels, 6, num_classes=3, steps_per_epoch=1,
                                  seed=3)))
    x_w, img_w = prepare(wli.images[step.wli], torch.device("cpu"))
    x_n, img_n = prepare(nbi.images[step.nbi], torch.device("cpu"))
    batch = StepBatch(x_w, img_w, step.labels, x_n, img_n, step.labels)
    seen = {}
    hook = distiller.pro.register_forward_hook(
        lambda _, args, out: seen.update(tok_n=args[2].detach()))
    distiller.eval()
    try:
        distiller.forward_train(batch, epoch=10**6)
        det = distiller.pro(distiller.student(x_w).tokens, step.labels, seen["tok_n"],
                            step.labels, return_details=True)
    finally:
        hook.remove()
        distiller.train()
    adapter_side = emb.image_embeddings(distiller, nbi.subset(step.nbi), side="adapter")
    np.testing.assert_allclose(adapter_side, seen["tok_n"].mean(1).numpy(), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(ps.vectors[ps.modality == "NBI"],
                               det["protos_n"].detach().reshape(-1, 16).numpy(), atol=1e-6)
