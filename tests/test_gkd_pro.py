"""GKD-Pro: batched implementation vs the loop reference (:mod:`pagkd_lite.method.reference`),
values
and gradients; golden values."""

from __future__ import annotations

import pytest
import torch

from pagkd_lite.method import reference
from pagkd_lite.method.gkd_pro import GKDPro, GKDProConfig

TOL = {"rtol": 1e-5, "atol": 1e-6}


def ref_losses(model, tw, lw, tn, ln):
    ref = reference.gkd_pro_losses(model, tw, lw, tn, ln)
    return ref["con"], ref["pcls"], ref["n_pairs_skipped"], ref["protos"]


def labels_from_counts(counts, gen):
    lab = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)]).long()
    return lab[torch.randperm(len(lab), generator=gen)]  # mixed batch order


# K in {2, 3, 5}; group sizes incl. 1; unequal; a class missing in one modality
CASES = [
    ([1, 3], [2, 2], 4, 4),
    ([2, 0, 4], [1, 3, 1], 3, 5),
    ([1, 2, 3, 1, 0], [0, 2, 1, 3, 2], 4, 2),
    ([1, 1, 1], [1, 1, 1], 2, 2),
]


@pytest.mark.parametrize("counts_w,counts_n,hw_w,hw_n", CASES)
@pytest.mark.parametrize("plus_one,tau,identity,similarity,reduction", [
    (True, 1.0, "sinusoidal", "slot", "mean"), (False, 0.5, "learned", "slot", "mean"),
    (True, 20 / 4, "none", "slot", "sum"),
    (True, 1.0, "sinusoidal", "channel", "sum"),    # the authors'
    (False, 0.5, "learned", "channel", "mean"),
])
def test_matches_loop_reference(counts_w, counts_n, hw_w, hw_n, plus_one, tau, identity,
                                similarity, reduction):
    gen = torch.Generator().manual_seed(sum(counts_w) * 31 + hw_n)
    torch.manual_seed(0)
    k, d = len(counts_w), 8
    cfg = GKDProConfig(num_queries=3, num_heads=2, tau=tau, plus_one=plus_one,
                       identity=identity, max_group_size=8, similarity=similarity,
                       con_reduction=reduction, channel_scale=2.0)
    model = GKDPro(cfg, k, d).double()
    lw, ln = labels_from_counts(counts_w, gen), labels_from_counts(counts_n, gen)
    tw = torch.randn(len(lw), hw_w, d, generator=gen, dtype=torch.float64)
    tn = torch.randn(len(ln), hw_n, d, generator=gen, dtype=torch.float64)
    out = model(tw, lw, tn, ln, return_details=True)
    con, pcls, skipped, sets = ref_losses(model, tw, lw, tn, ln)
    torch.testing.assert_close(out["con"], con, **TOL)
    torch.testing.assert_close(out["pcls"], pcls, **TOL)
    assert int(out["n_pairs_skipped"]) == skipped
    assert int(out["n_con_classes"]) == sum(
        1 for a, b in zip(counts_w, counts_n, strict=True) if a > 0 and b > 0)
    for key, m in (("protos_w", "W"), ("protos_n", "N")):
        classes = out["classes_" + m.lower()].tolist()
        assert classes == sorted(sets[m])
        torch.testing.assert_close(out[key], torch.stack([sets[m][c] for c in classes]), **TOL)


@pytest.mark.parametrize("counts_w,counts_n,hw_w,hw_n", CASES[:3])
@pytest.mark.parametrize("identity,similarity,reduction", [
    ("sinusoidal", "slot", "mean"), ("learned", "slot", "mean"),
    ("sinusoidal", "channel", "sum"), ("learned", "channel", "mean"),
])
def test_gradients_match_loop_reference(counts_w, counts_n, hw_w, hw_n, identity, similarity,
                                        reduction):
    """d(L_con + L_pcls) / d(tokens, queries, attention, classifier, identities): batched
    and loop reference agree in float64, for both set similarities and reductions."""
    gen = torch.Generator().manual_seed(5 * sum(counts_w) + hw_w)
    torch.manual_seed(1)
    k, d = len(counts_w), 8
    model = GKDPro(GKDProConfig(num_queries=3, num_heads=2, identity=identity,
                                max_group_size=8, similarity=similarity,
                                con_reduction=reduction), k, d).double()
    lw, ln = labels_from_counts(counts_w, gen), labels_from_counts(counts_n, gen)
    tw = torch.randn(len(lw), hw_w, d, generator=gen, dtype=torch.float64, requires_grad=True)
    tn = torch.randn(len(ln), hw_n, d, generator=gen, dtype=torch.float64, requires_grad=True)
    params = [tw, tn, *(p for p in model.parameters() if p.requires_grad)]

    def grads(fn):
        out = fn(model, tw, lw, tn, ln)
        g = torch.autograd.grad(out["con"] + out["pcls"], params, allow_unused=True)
        return [torch.zeros_like(p) if gi is None else gi for gi, p in zip(g, params, strict=True)]

    batched = grads(lambda m, *a: m(*a))
    looped = grads(reference.gkd_pro_losses)
    names = ["tokens_w", "tokens_n", *(n for n, p in model.named_parameters() if p.requires_grad)]
    for name, g_b, g_r in zip(names, batched, looped, strict=True):
        torch.testing.assert_close(g_b, g_r, rtol=1e-5, atol=1e-9,
                                   msg=lambda m, name=name: f"{name}: {m}")
    assert batched[0].abs().sum() > 0 and batched[1].abs().sum() > 0


def test_prototypes_single_modality_matches_reference():
    torch.manual_seed(1)
    model = GKDPro(GKDProConfig(num_queries=2, num_heads=4), 3, 8).double()
    lab = torch.tensor([2, 0, 2, 2, 0])
    tok = torch.randn(5, 3, 8, dtype=torch.float64)
    protos, cls, present = model.prototypes(tok, lab, 3)
    ref = reference.prototypes(model, tok, lab)
    assert cls.tolist() == [0, 2] and present.tolist() == [True, False, True]
    torch.testing.assert_close(protos, torch.stack([ref[0], ref[2]]), **TOL)


def test_sinusoidal_table_and_identity_matter():
    torch.manual_seed(0)
    model = GKDPro(GKDProConfig(num_queries=2, num_heads=2), 2, 6).double()
    for pos in (0, 1, 5):
        torch.testing.assert_close(model.identity[pos].double(),
                                   reference.identity_vector(model, pos),
                                   rtol=1e-6, atol=1e-6)
    # with identities, swapping two images of a group changes the prototypes
    tok = torch.randn(2, 3, 6, dtype=torch.float64)
    lab = torch.tensor([0, 0])
    p1 = model.prototypes(tok, lab)[0]
    p2 = model.prototypes(tok.flip(0), lab)[0]
    assert not torch.allclose(p1, p2)


def test_no_class_in_both_modalities_gives_zero_with_graph():
    torch.manual_seed(0)
    model = GKDPro(GKDProConfig(num_queries=2, num_heads=2), 3, 8)
    tw = torch.randn(2, 4, 8, requires_grad=True)
    tn = torch.randn(3, 4, 8, requires_grad=True)
    out = model(tw, torch.tensor([0, 0]), tn, torch.tensor([1, 2, 2]))
    assert out["con"].item() == 0.0 and out["con"].requires_grad
    assert int(out["n_pairs_skipped"]) == 3 and int(out["n_con_classes"]) == 0
    (out["con"] + out["pcls"]).backward()
    assert torch.isfinite(tw.grad).all() and torch.isfinite(tn.grad).all()


def test_golden_values(golden):
    stored, now = golden
    assert set(now) == set(stored)
    for key in sorted(k for k in stored if "/con" in k or "/pcls" in k):
        assert now[key] == pytest.approx(stored[key], rel=1e-5, abs=1e-5), key


def test_gradients_reach_every_trainable_part():
    torch.manual_seed(0)
    model = GKDPro(GKDProConfig(num_queries=3, num_heads=2), 3, 8)
    tw = torch.randn(6, 4, 8, requires_grad=True)
    tn = torch.randn(5, 4, 8, requires_grad=True)
    out = model(tw, torch.tensor([0, 1, 2, 0, 1, 1]), tn, torch.tensor([2, 1, 0, 0, 2]))
    out["con"].backward(retain_graph=True)
    for name, t in (("queries", model.queries), ("in_proj", model.mha.in_proj_weight),
                    ("out_proj", model.mha.out_proj.weight), ("tokens_w", tw), ("tokens_n", tn)):
        assert t.grad is not None and t.grad.abs().sum() > 0, f"L_con gives no grad to {name}"
    model.zero_grad()
    out["pcls"].backward()
    for name, t in (("classifier", model.classifier.weight), ("queries", model.queries),
                    ("in_proj", model.mha.in_proj_weight)):
        assert t.grad is not None and t.grad.abs().sum() > 0, f"L_pcls gives no grad to {name}"


def test_groups_of_size_one_are_finite():
    torch.manual_seed(0)
    model = GKDPro(GKDProConfig(num_queries=2, num_heads=2, plus_one=False), 2, 8)
    tw = torch.randn(2, 1, 8, requires_grad=True)
    tn = torch.randn(2, 1, 8, requires_grad=True)
    out = model(tw, torch.tensor([0, 1]), tn, torch.tensor([1, 0]))
    (out["con"] + out["pcls"]).backward()
    for t in (tw.grad, tn.grad, model.queries.grad, model.mha.in_proj_weight.grad):
        assert torch.isfinite(t).all()


@pytest.mark.parametrize("kwargs,match", [
    ({"tau": 0.0}, "tau"),
    ({"tau": -1.0}, "tau"),
    ({"tau": float("nan")}, "tau"),
    ({"identity": "rotary"}, "identity"),
    ({"num_queries": 0}, "num_queries"),
    ({"max_group_size": 0}, "max_group_size"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GKDProConfig(**kwargs)


def test_input_validation():
    model = GKDPro(GKDProConfig(num_queries=2, num_heads=2, max_group_size=2), 2, 8)
    tok = torch.randn(3, 4, 8)
    with pytest.raises(ValueError, match="num_classes"):
        GKDPro(GKDProConfig(num_heads=2), 1, 8)
    with pytest.raises(ValueError, match="pro.num_heads=4 must divide the token width"):
        GKDPro(GKDProConfig(num_heads=4), 2, 10)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        model(tok, torch.tensor([0, 1, 2]), tok, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="tokens must be"):
        model(torch.randn(3, 4, 6), torch.tensor([0, 1, 1]), tok, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="max_group_size"):
        model(tok, torch.tensor([0, 0, 0]), tok, torch.tensor([0, 1, 1]))


def test_eval_mode_matches_train_mode():
    """nn.MultiheadAttention may take its fast path in eval / no_grad: same numbers."""
    torch.manual_seed(0)
    model = GKDPro(GKDProConfig(num_queries=3, num_heads=2), 3, 8)
    tw, tn = torch.randn(5, 4, 8), torch.randn(4, 4, 8)
    lw, ln = torch.tensor([0, 1, 2, 0, 0]), torch.tensor([2, 1, 1, 0])
    train = model(tw, lw, tn, ln)
    model.eval()
    with torch.no_grad():
        evald = model(tw, lw, tn, ln)
    for key in ("con", "pcls"):
        torch.testing.assert_close(evald[key], train[key], **TOL)


def test_channel_similarity_is_the_sum_of_channel_cosines_over_20():
    """The authors' similarity is not the slot similarity rescaled: for sets whose slots are
    permuted, the slot cosines change while every channel's cosine over slots does too, and
    the channel form reaches d / 20 for identical sets (6.4 at d = 128)."""
    from pagkd_lite.method.gkd_pro import set_similarity
    a = torch.randn(1, 12, 128, dtype=torch.float64)
    cfg = GKDProConfig(num_queries=12, num_heads=16, similarity="channel")
    torch.testing.assert_close(set_similarity(a, a, cfg)[0, 0],
                               torch.tensor(128 / 20, dtype=torch.float64))
    slot_cfg = GKDProConfig(num_queries=12, num_heads=16, similarity="slot")
    slot = set_similarity(a, a, slot_cfg)[0, 0]
    torch.testing.assert_close(slot, torch.tensor(1.0, dtype=torch.float64))
    b = torch.randn(3, 12, 128, dtype=torch.float64)
    ratio = set_similarity(a, b, cfg) / set_similarity(a, b, slot_cfg)
    assert float(ratio.std()) > 1e-3  # no single tau maps one onto the other


def test_bad_similarity_or_reduction_is_a_clear_error():
    with pytest.raises(ValueError, match="similarity"):
        GKDProConfig(similarity="cosine")
    with pytest.raises(ValueError, match="con_reduction"):
        GKDProConfig(con_reduction="median")
