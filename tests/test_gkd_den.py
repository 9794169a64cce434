"""GKD-Den: relation maps, relation attention and L_Den vs the loop reference
(:mod:`pagkd_lite.method.reference`), values and gradients; golden values, masked rows; a 200-step
random stress test of both group losses."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from pagkd_lite.method import reference
from pagkd_lite.method.cam import TokenLabelConfig
from pagkd_lite.method.gkd_den import (
    GKDDen,
    GKDDenConfig,
    pair_loss,
    relation_attention,
    relation_maps,
)
from pagkd_lite.method.gkd_pro import GKDPro, GKDProConfig

TOL = {"rtol": 1e-5, "atol": 1e-6}
DROP = GKDDenConfig(masked_rows="drop")  # the kit's earlier default: masked rows leave the loss


ref_relation = reference.relation_map
ref_attention = reference.pair_attention


def ref_den(tw, lw, tlw, tn, ln, tln, cfg):
    ref = reference.gkd_den_loss(tw, lw, tlw, tn, ln, tln, cfg)
    return ref["den"], ref["n_pairs"], ref["n_rows_masked"], ref["n_pairs_empty"]


def random_toklab(b, hw, gen):
    """Random labels, with an all-uncertain image, an all-fg and an all-bg image."""
    lab = torch.randint(-1, 2, (b, hw), generator=gen)
    if b >= 3:
        lab[0] = -1
        lab[1] = 1
        lab[2] = 0
    return lab


CONFIGS = [
    GKDDenConfig(),
    GKDDenConfig(scale=True, two_way=False),
    GKDDenConfig(use_mask=False),
    GKDDenConfig(masked_rows="uniform"),             # the authors' -1e9 fill
    GKDDenConfig(reduction="per_class_sum"),         # the authors' sum over classes
    GKDDenConfig(masked_rows="uniform", reduction="per_class_sum", two_way=False),
    # the pre-registered variants (benchmarks/PREREGISTERED.md)
    GKDDenConfig(center=True),                                          # (b)
    GKDDenConfig(center=True, cosine="token"),                          # (c)
    GKDDenConfig(cosine="token", masked_rows="drop", reduction="mean_all", two_way=False),
    GKDDenConfig(scale=True, relation="log_prior"),                     # (d)
    GKDDenConfig(relation="log_prior", masked_rows="drop", reduction="mean_all"),
]
IDS = ["default", "scaled_one_way", "no_mask", "uniform_rows", "per_class_sum", "authors_one_way",
       "centred", "token_cos_centred", "token_cos_drop_one_way", "log_prior", "log_prior_drop"]


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@pytest.mark.parametrize("counts_w,counts_n,hw_w,hw_n", [
    ([1, 3], [2, 2], 4, 4),
    ([2, 0, 4], [1, 3, 1], 3, 5),
    ([1, 2, 3, 1, 0], [0, 2, 1, 3, 2], 4, 2),
])
def test_den_matches_loop_reference(cfg, counts_w, counts_n, hw_w, hw_n):
    gen = torch.Generator().manual_seed(7 * sum(counts_n) + hw_w)
    lw = torch.cat([torch.full((k,), c) for c, k in enumerate(counts_w)]).long()
    ln = torch.cat([torch.full((k,), c) for c, k in enumerate(counts_n)]).long()
    lw = lw[torch.randperm(len(lw), generator=gen)]
    ln = ln[torch.randperm(len(ln), generator=gen)]
    d = 6
    tw = torch.randn(len(lw), hw_w, d, generator=gen, dtype=torch.float64)
    tn = torch.randn(len(ln), hw_n, d, generator=gen, dtype=torch.float64)
    tlw, tln = random_toklab(len(lw), hw_w, gen), random_toklab(len(ln), hw_n, gen)
    out = GKDDen(cfg)(tw, lw, tlw, tn, ln, tln)
    den, n_pairs, n_masked, n_empty = ref_den(tw, lw, tlw, tn, ln, tln, cfg)
    torch.testing.assert_close(out["den"], den, **TOL)
    assert int(out["n_pairs"]) == n_pairs
    assert int(out["n_rows_masked"]) == n_masked
    assert int(out["n_pairs_empty"]) == n_empty


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_den_gradients_match_loop_reference(cfg):
    """dL_Den / d(WLI tokens, NBI tokens): batched and loop reference agree in float64
    (the step includes an all-uncertain, an all-fg and an all-bg image)."""
    gen = torch.Generator().manual_seed(11)
    lw, ln = torch.tensor([0, 1, 1, 0, 2]), torch.tensor([1, 0, 0, 1, 2, 1])
    tw = torch.randn(len(lw), 4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    tn = torch.randn(len(ln), 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    tlw, tln = random_toklab(len(lw), 4, gen), random_toklab(len(ln), 5, gen)
    batched = torch.autograd.grad(GKDDen(cfg)(tw, lw, tlw, tn, ln, tln)["den"], [tw, tn])
    looped = torch.autograd.grad(reference.gkd_den_loss(tw, lw, tlw, tn, ln, tln, cfg)["den"],
                                 [tw, tn])
    for g_b, g_r in zip(batched, looped, strict=True):
        assert g_b.abs().sum() > 0
        torch.testing.assert_close(g_b, g_r, rtol=1e-5, atol=1e-9)


def test_relation_maps_and_attention_match_reference():
    gen = torch.Generator().manual_seed(3)
    p, hq, hk, d = 4, 5, 3, 4
    lab_q, lab_k = torch.randint(-1, 2, (p, hq), generator=gen), torch.randint(-1, 2, (p, hk),
                                                                               generator=gen)
    lab_q[0] = 1
    lab_k[0] = 0  # pair 0: every row masked
    r = relation_maps(lab_q, lab_k)
    assert r.shape == (p, hq, hk)
    q = torch.randn(p, hq, d, generator=gen, dtype=torch.float64)
    kv = torch.randn(p, hk, d, generator=gen, dtype=torch.float64)
    for cfg in (GKDDenConfig(), DROP, GKDDenConfig(scale=True, masked_rows="drop"),
                GKDDenConfig(use_mask=False)):
        h, attn, valid = relation_attention(q, kv, r, cfg)
        for i in range(p):
            rr = ref_relation(lab_q[i], lab_k[i])
            torch.testing.assert_close(r[i].double(), rr)
            h_ref, a_ref, v_ref = ref_attention(q[i], kv[i], rr, cfg)
            torch.testing.assert_close(h[i], h_ref, **TOL)
            torch.testing.assert_close(attn[i], a_ref, **TOL)
            assert valid[i].tolist() == v_ref
    assert not relation_attention(q, kv, r, DROP)[2][0].any()  # pair 0: no row to keep
    h, attn, valid = relation_attention(q, kv, r, GKDDenConfig(masked_rows="uniform"))
    assert valid[0].all()  # the authors' -1e9 fill: every key the same weight
    torch.testing.assert_close(attn[0], torch.full_like(attn[0], 1 / hk))


def test_masked_entries_get_exactly_zero_attention():
    gen = torch.Generator().manual_seed(0)
    lab_w = torch.randint(-1, 2, (6, 9), generator=gen)
    lab_n = torch.randint(-1, 2, (6, 9), generator=gen)
    r = relation_maps(lab_w, lab_n)
    q = torch.randn(6, 9, 8, generator=gen) * 30  # large scores: no underflow excuse
    kv = torch.randn(6, 9, 8, generator=gen) * 30
    _, attn, valid = relation_attention(q, kv, r, DROP)
    assert (r == 0).any()
    assert torch.all(attn[r == 0] == 0)
    assert torch.allclose(attn.sum(-1)[valid], torch.ones(()))
    assert torch.all(attn[~valid] == 0)


def test_pair_loss_is_what_forward_uses():
    gen = torch.Generator().manual_seed(5)
    lw, ln = torch.tensor([0, 1, 1, 2]), torch.tensor([1, 2, 0, 1])
    tw, tn = torch.randn(4, 3, 4, generator=gen), torch.randn(4, 3, 4, generator=gen)
    tlw, tln = torch.randint(-1, 2, (4, 3), generator=gen), torch.randint(-1, 2, (4, 3),
                                                                         generator=gen)
    out = GKDDen(GKDDenConfig())(tw, lw, tlw, tn, ln, tln, return_details=True)
    iw, inb = out["pairs"].unbind(1)
    pairs = sorted(zip(iw.tolist(), inb.tolist(), strict=True))
    assert pairs == [(0, 2), (1, 0), (1, 3), (2, 0), (2, 3), (3, 1)]
    direct = pair_loss(tw[iw], tlw[iw], tn[inb], tln[inb], GKDDenConfig(), pair_class=lw[iw])
    torch.testing.assert_close(out["den"], direct["den"])
    mean_all = GKDDenConfig(reduction="mean_all")
    torch.testing.assert_close(GKDDen(mean_all)(tw, lw, tlw, tn, ln, tln)["den"],
                               pair_loss(tw[iw], tlw[iw], tn[inb], tln[inb], mean_all)["den"])
    assert out["attn_w"].shape == (6, 3, 3) and out["R"].shape == (6, 3, 3)


def test_golden_values(golden):
    stored, now = golden
    keys = sorted(k for k in stored if "/den" in k)
    assert keys
    for key in keys:
        assert now[key] == pytest.approx(stored[key], rel=1e-5, abs=1e-5), key


def test_gradients_reach_both_token_inputs():
    gen = torch.Generator().manual_seed(1)
    tw = torch.randn(3, 4, 5, generator=gen).requires_grad_()
    tn = torch.randn(2, 4, 5, generator=gen).requires_grad_()
    tl = torch.tensor([[1, 1, 0, -1]] * 3)
    for cfg in (GKDDenConfig(), GKDDenConfig(two_way=False)):
        tw.grad = tn.grad = None
        out = GKDDen(cfg)(tw, torch.tensor([0, 1, 0]), tl, tn, torch.tensor([0, 0]), tl[:2])
        out["den"].backward()
        assert tw.grad.abs().sum() > 0 and tn.grad.abs().sum() > 0


def test_fully_masked_rows_and_pairs_are_finite():
    tw = torch.randn(2, 3, 4, requires_grad=True)
    tn = torch.randn(2, 3, 4, requires_grad=True)
    lab = torch.tensor([0, 0])
    # every token of every WLI image is fg, of every NBI image bg: all rows masked
    out = GKDDen(DROP)(tw, lab, torch.ones(2, 3, dtype=torch.long), tn, lab,
                       torch.zeros(2, 3, dtype=torch.long))
    assert out["den"].item() == 0.0
    assert int(out["n_pairs_empty"]) == 8 and int(out["n_rows_masked"]) == 24
    out["den"].backward()
    assert torch.isfinite(tw.grad).all() and torch.isfinite(tn.grad).all()
    # one row masked (token 0 of WLI is bg, every NBI token fg), the others valid
    tw.grad = tn.grad = None
    tlw = torch.tensor([[0, 1, -1], [0, 1, 1]])
    out = GKDDen(DROP)(tw, lab, tlw, tn, lab, torch.ones(2, 3, dtype=torch.long))
    assert int(out["n_rows_masked"]) == 4 and int(out["n_pairs_empty"]) == 0
    out["den"].backward()
    assert torch.isfinite(tw.grad).all() and tw.grad.abs().sum() > 0
    # the default (the authors'): masked rows attend uniformly and stay in the loss
    tw.grad = tn.grad = None
    out = GKDDen(GKDDenConfig())(tw, lab, torch.ones(2, 3, dtype=torch.long), tn, lab,
                                 torch.zeros(2, 3, dtype=torch.long))
    assert int(out["n_rows_masked"]) == 0 and out["den"].item() > 0.0
    out["den"].backward()
    assert torch.isfinite(tw.grad).all() and torch.isfinite(tn.grad).all()


def test_no_pairs_gives_zero_with_graph():
    tw = torch.randn(2, 3, 4, requires_grad=True)
    tn = torch.randn(1, 3, 4, requires_grad=True)
    tl = torch.zeros(2, 3, dtype=torch.long)
    out = GKDDen(GKDDenConfig())(tw, torch.tensor([0, 0]), tl, tn, torch.tensor([1]), tl[:1])
    assert out["den"].item() == 0.0 and int(out["n_pairs"]) == 0
    out["den"].backward()
    assert torch.isfinite(tw.grad).all()


def test_config_validation():
    with pytest.raises(ValueError, match="scale"):
        GKDDenConfig(scale=1)


@pytest.mark.parametrize("kwargs", [{"high": 0.3, "low": 0.3}, {"high": 0.2, "low": 0.5},
                                    {"high": 1.5}, {"low": -0.1}, {"rule": "mine"},
                                    {"par_iters": -1}, {"par_dilations": (0, 2)}])
def test_token_label_config_validation(kwargs):
    with pytest.raises(ValueError, match="TokenLabelConfig"):
        TokenLabelConfig(**kwargs)


def test_input_validation():
    tok = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="-1"):
        relation_maps(torch.tensor([[2, 0, 0]]), torch.tensor([[0, 0, 0]]))
    with pytest.raises(ValueError, match="token labels"):
        GKDDen(GKDDenConfig())(tok, torch.tensor([0, 0]), torch.zeros(2, 4, dtype=torch.long),
                               tok, torch.tensor([0, 0]), torch.zeros(2, 3, dtype=torch.long))


def test_200_random_steps_are_finite():
    """Both group losses and their gradients stay finite over random steps (tiny dims)."""
    rng = random.Random(0)
    gen = torch.Generator().manual_seed(0)
    d = 4
    torch.manual_seed(0)
    pros = {k: GKDPro(GKDProConfig(num_queries=2, num_heads=2, max_group_size=6,
                                   plus_one=k % 2 == 0), k, d) for k in range(2, 6)}
    dens = [GKDDen(GKDDenConfig()), GKDDen(GKDDenConfig(scale=True, two_way=False))]
    for step in range(200):
        k = rng.randint(2, 5)
        hw = rng.randint(1, 6)
        lw = torch.tensor([c for c in range(k) for _ in range(rng.randint(0, 6))] or [0])
        ln = torch.tensor([c for c in range(k) for _ in range(rng.randint(0, 6))] or [1])
        tw = (torch.randn(len(lw), hw, d, generator=gen) * 10 ** rng.uniform(-3, 2))
        tn = (torch.randn(len(ln), hw, d, generator=gen) * 10 ** rng.uniform(-3, 2))
        tw.requires_grad_()
        tn.requires_grad_()
        mode = step % 4
        if mode == 0:  # all uncertain
            tlw, tln = -torch.ones(len(lw), hw).long(), -torch.ones(len(ln), hw).long()
        elif mode == 1:  # all masked
            tlw, tln = torch.ones(len(lw), hw).long(), torch.zeros(len(ln), hw).long()
        else:
            tlw = torch.randint(-1, 2, (len(lw), hw), generator=gen)
            tln = torch.randint(-1, 2, (len(ln), hw), generator=gen)
        pro = pros[k]
        pro.zero_grad()
        out = pro(tw, lw, tn, ln)
        den = dens[step % 2](tw, lw, tlw, tn, ln, tln)["den"]
        loss = out["con"] + out["pcls"] + den
        assert torch.isfinite(loss), f"step {step}: non-finite loss"
        loss.backward()
        grads = [tw.grad, tn.grad] + [p.grad for p in pro.parameters() if p.grad is not None]
        assert all(torch.isfinite(g).all() for g in grads), f"step {step}: non-finite grad"


# ------------------------------------------------------------------ 16 x 16 tokens, chunks
def _den16_reference():
    """Inputs and loop-reference results at 16 x 16 tokens (``tests/make_den_reference16.py``
    computed them with :func:`pagkd_lite.method.reference.gkd_den_loss`: minutes, hence stored)."""
    path = Path(__file__).parent / "fixtures" / "den_reference16.npz"
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("name,cfg", [
    ("drop_mean_all", GKDDenConfig(masked_rows="drop", reduction="mean_all")),
    ("authors", GKDDenConfig()),  # the defaults: uniform rows, per-class sum
])
def test_den_16x16_matches_loop_reference(name, cfg):
    """The class-by-class path at the token grid where the method lives (16 x 16 tokens,
    256 x 256 scores per pair), value, counts and gradients, float64, against the loop
    reference; with the default blocks and with one pair per block."""
    ref = _den16_reference()
    x = {k: torch.from_numpy(ref[k]) for k in ("tokens_w", "labels_w", "toklab_w",
                                                "tokens_n", "labels_n", "toklab_n")}
    assert x["tokens_w"].shape == (3, 256, 8) and x["tokens_w"].dtype == torch.float64
    for chunk in (None, 1):  # one block per class here; one pair per block
        tw = x["tokens_w"].clone().requires_grad_()
        tn = x["tokens_n"].clone().requires_grad_()
        out = GKDDen(cfg, chunk_elems=chunk)(tw, x["labels_w"], x["toklab_w"].long(), tn,
                                             x["labels_n"], x["toklab_n"].long())
        gw, gn = torch.autograd.grad(out["den"], [tw, tn])
        torch.testing.assert_close(out["den"].item(), float(ref[f"{name}/den"]),
                                   rtol=1e-5, atol=1e-5)
        for key in ("n_pairs", "n_rows_masked", "n_pairs_empty"):
            assert int(out[key]) == int(ref[f"{name}/{key}"]), key
        for got, want in ((gw, ref[f"{name}/grad_w"]), (gn, ref[f"{name}/grad_n"])):
            assert np.abs(want).sum() > 0
            torch.testing.assert_close(got, torch.from_numpy(want), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_chunked_equals_unchunked(cfg):
    """Blocks of one pair (``chunk_elems=1``), of a part of one NBI image's pairs and of a few
    NBI images give the same values, counts, details and gradients as one block per class;
    so do tokens laid out as a backbone's feature map."""
    gen = torch.Generator().manual_seed(23)
    lw, ln = torch.tensor([0, 1, 1, 0, 2, 1, 1]), torch.tensor([1, 0, 0, 1, 2, 1])
    hw = 9
    tw = torch.randn(len(lw), hw, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    tn = torch.randn(len(ln), hw, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    tlw, tln = random_toklab(len(lw), hw, gen), random_toklab(len(ln), hw, gen)
    tln[1] = 1  # fully masked rows for the bg tokens of the class-0 WLI images
    results = []
    for chunk in (1 << 30, 1, 2 * hw * hw, 9 * hw * hw):
        out = GKDDen(cfg, chunk_elems=chunk)(tw, lw, tlw, tn, ln, tln, return_details=True)
        grads = torch.autograd.grad(out["den"], [tw, tn])
        results.append((out, grads))
    # tokens as a backbone gives them: (B, hw, d) views of (B, d, hw) maps; and a loss
    # whose gradient arrives expanded (a sum)
    tw_t = tw.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
    tn_t = tn.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
    out = GKDDen(cfg, chunk_elems=2 * hw * hw)(tw_t, lw, tlw, tn_t, ln, tln,
                                               return_details=True)
    grads = torch.autograd.grad(out["den"].expand(3).sum() / 3, [tw_t, tn_t])
    results.append((out, grads))
    (first, g_first) = results[0]
    for out, grads in results[1:]:
        assert set(out) == set(first)
        for key, value in first.items():
            torch.testing.assert_close(out[key], value, rtol=1e-12, atol=1e-12, msg=key)
        for g, g0 in zip(grads, g_first, strict=True):
            torch.testing.assert_close(g, g0, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_details_match_pair_loss(cfg):
    """``return_details`` of the class-by-class path: the same pairs, relation maps,
    attention maps and valid rows as :func:`pair_loss` on the gathered pairs."""
    gen = torch.Generator().manual_seed(29)
    lw, ln = torch.tensor([2, 0, 1, 0, 1]), torch.tensor([0, 1, 1, 0, 0])
    tw = torch.randn(len(lw), 6, 5, generator=gen, dtype=torch.float64)
    tn = torch.randn(len(ln), 4, 5, generator=gen, dtype=torch.float64)
    tlw, tln = random_toklab(len(lw), 6, gen), random_toklab(len(ln), 4, gen)
    out = GKDDen(cfg)(tw, lw, tlw, tn, ln, tln, return_details=True)
    iw, inb = out["pairs"].unbind(1)
    ref = pair_loss(tw[iw], tlw[iw], tn[inb], tln[inb], cfg, return_details=True,
                    pair_class=lw[iw])
    assert set(out) == set(ref) | {"pairs"}
    for key, value in ref.items():
        torch.testing.assert_close(out[key], value, rtol=1e-10, atol=1e-12, msg=key)


def test_group_path_computes_in_float32_under_autocast():
    """Under bf16 autocast the class-by-class path casts bf16 tokens up and computes in
    float32: the same value and gradients as float32 on the rounded tokens."""
    gen = torch.Generator().manual_seed(31)
    lw, ln = torch.tensor([0, 1, 0, 1]), torch.tensor([1, 0, 0])
    tw = torch.randn(4, 9, 8, generator=gen).bfloat16().requires_grad_()
    tn = torch.randn(3, 9, 8, generator=gen).bfloat16().requires_grad_()
    tlw, tln = random_toklab(4, 9, gen), random_toklab(3, 9, gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = GKDDen(GKDDenConfig())(tw, lw, tlw, tn, ln, tln)["den"]
    assert got.dtype == torch.float32
    g_got = torch.autograd.grad(got, [tw, tn])
    tw32 = tw.detach().float().requires_grad_()
    tn32 = tn.detach().float().requires_grad_()
    want = GKDDen(GKDDenConfig())(tw32, lw, tlw, tn32, ln, tln)["den"]
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    for g, g32 in zip(g_got, torch.autograd.grad(want, [tw32, tn32]), strict=True):
        assert g.dtype == torch.bfloat16
        torch.testing.assert_close(g, g32.bfloat16())
