"""The slow, obvious versions of GKD-Pro and GKD-Den: one group, one pair, one token at a time.

:mod:`pagkd_lite.method.gkd_pro` and :mod:`pagkd_lite.method.gkd_den` pack every group and every
pair of a step into a few batched tensor calls, which is fast but hard to read. The functions
here compute the same losses with plain Python loops in the paper's notation
(``docs/method.md``), so a reader can check one against the other and the tests can compare
values AND gradients (``tests/test_gkd_pro.py``, ``tests/test_gkd_den.py``). Use them to learn
and to test; they are far too slow to train with.

GKD-Pro, for the groups ``G_c^m`` (class ``c``, modality ``m`` in {W, N}) of one step::

    P_c^m  = MHA(Q, [T_1 + e_1; T_2 + e_2; ...])          (N_q, d): one call per group
    s(A, B) = (1 / N_q) sum_k cos(A[k], B[k])              (similarity "slot")
    s(A, B) = (1 / 20) sum_ch cos(A[:, ch], B[:, ch])     (similarity "channel", the authors')
    L_con  = mean|sum_c -log( exp(s(P_c^W, P_c^N) / tau)
                          / ([1] + sum_{(c', m') != (c, W)} exp(s(P_c^W, P_c'^m') / tau)) )
    L_pcls = mean over groups of CE(classifier(mean_k P_c^m[k]), c)

GKD-Den, for every same-class pair ``(m, n)`` in ``G_c^W x G_c^N``::

    R_mn[i, j] = 1 if labels agree, 0 if they differ, 0.5 if either is uncertain (-1)
    A[i, :]    = softmax_j (R_mn[i, j] * <T_m[i], T_n[j]> [/ sqrt(d)]) over j with R_mn[i, j] != 0
                 (relation "log_prior": <T_m[i], T_n[j]> [/ sqrt(d)] + log R_mn[i, j])
    H_m[i]     = sum_j A[i, j] T_n[j]
    L_Den      = mean_pairs (1 - cos(vec H_m, vec T_m))  [+ the same from N to W]
                 (or sum_c mean_{pairs of class c}: reduction "per_class_sum")
                 (cosine "token": (1 / rows) sum_i cos(H_m[i], T_m[i]) instead of the map cosine)
    center:      T[i] <- T[i] - (1 / hw) sum_k T[k], every image, before all of the above

(rows with nothing to attend to are left out of the cosine, or attend uniformly with
``masked_rows="uniform"``; see :mod:`pagkd_lite.method.gkd_den`).

At the end, NT-Xent of the SSL pretraining (:func:`nt_xent_loop`, :mod:`pagkd_lite.models.pretrain`)
one anchor at a time (``tests/test_pretrain.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .gkd_den import GKDDenConfig
from .gkd_pro import GKDPro


# ------------------------------------------------------------------------------- GKD-Pro
def identity_vector(model: GKDPro, pos: int) -> Tensor:
    """``e_pos`` (d,): the identity of the image at place ``pos`` of its group."""
    d = model.dim
    if model.cfg.identity == "learned":
        return model.identity[pos]
    if model.cfg.identity == "none":
        return torch.zeros(d, dtype=torch.float64)
    vals = []
    for j in range(d):
        freq = 10000.0 ** (-(j - j % 2) / d)
        vals.append(math.sin(pos * freq) if j % 2 == 0 else math.cos(pos * freq))
    return torch.tensor(vals, dtype=torch.float64)


def prototypes(model: GKDPro, tokens: Tensor, labels: Tensor) -> dict[int, Tensor]:
    """``{c: P_c (N_q, d)}``: one attention call per group on the concatenation of its
    images' tokens ``(B, hw, d)`` (with identities), for the classes present in ``labels``."""
    protos = {}
    for c in range(model.num_classes):
        members = [i for i in range(len(labels)) if int(labels[i]) == c]
        if not members:
            continue
        parts = [tokens[i] + identity_vector(model, pos).to(tokens.dtype)
                 for pos, i in enumerate(members)]
        seq = torch.cat(parts, dim=0)[None]
        out, _ = model.mha(model.queries[None], seq, seq, need_weights=False)
        protos[c] = out[0]
    return protos


def set_similarity(a: Tensor, b: Tensor, similarity: str = "slot",
                   channel_scale: float = 20.0) -> Tensor:
    """``s(A, B)`` of two prototype sets (N_q, d), slot by slot or channel by channel:
    ``(1 / N_q) sum_k cos(A[k], B[k])`` (``"slot"``) or
    ``(1 / channel_scale) sum_ch cos(A[:, ch], B[:, ch])`` (``"channel"``)."""
    if similarity == "slot":
        return sum(F.cosine_similarity(a[k], b[k], dim=0) for k in range(a.shape[0])) / a.shape[0]
    return sum(F.cosine_similarity(a[:, ch], b[:, ch], dim=0)
               for ch in range(a.shape[1])) / channel_scale


def gkd_pro_losses(model: GKDPro, tokens_w: Tensor, labels_w: Tensor, tokens_n: Tensor,
                   labels_n: Tensor) -> dict:
    """``L_con`` and ``L_pcls`` of one step, class by class.

    Returns ``{"con", "pcls", "n_pairs_skipped"`` (classes in one modality only)``,
    "protos": {"W": {c: P_c^W}, "N": {c: P_c^N}}}``.
    """
    cfg = model.cfg
    sets = {"W": prototypes(model, tokens_w, labels_w), "N": prototypes(model, tokens_n, labels_n)}
    terms, skipped = [], 0
    for c in range(model.num_classes):
        in_w, in_n = c in sets["W"], c in sets["N"]
        if in_w != in_n:
            skipped += 1
        if not (in_w and in_n):
            continue
        anchor = sets["W"][c]

        def s(a, b):
            return set_similarity(a, b, cfg.similarity, cfg.channel_scale) / cfg.tau

        num = torch.exp(s(anchor, sets["N"][c]))
        den = torch.tensor(1.0 if cfg.plus_one else 0.0, dtype=tokens_w.dtype)
        for m2 in ("W", "N"):
            for c2, other in sets[m2].items():
                if (c2, m2) == (c, "W"):
                    continue
                den = den + torch.exp(s(anchor, other))
        terms.append(-torch.log(num / den))
    con = torch.tensor(0.0, dtype=tokens_w.dtype)
    if terms:
        con = torch.stack(terms).sum() if cfg.con_reduction == "sum" else torch.stack(terms).mean()
    ces = []
    for m in ("W", "N"):
        for c, p in sets[m].items():
            logits = model.classifier(p.mean(dim=0))[None]
            ces.append(F.cross_entropy(logits, torch.tensor([c])))
    return {"con": con, "pcls": torch.stack(ces).mean(), "n_pairs_skipped": skipped,
            "protos": sets}


# ------------------------------------------------------------------------------- GKD-Den
def relation_map(lab_m: Tensor, lab_n: Tensor) -> Tensor:
    """``R_mn (hw_m, hw_n)`` of ONE pair, token by token (float64)."""
    r = torch.zeros(len(lab_m), len(lab_n), dtype=torch.float64)
    for i, a in enumerate(lab_m.tolist()):
        for j, b in enumerate(lab_n.tolist()):
            if a == -1 or b == -1:
                r[i, j] = 0.5
            else:
                r[i, j] = 1.0 if a == b else 0.0
    return r


def pair_attention(q: Tensor, kv: Tensor, r: Tensor, cfg: GKDDenConfig):
    """ONE pair, row by row: ``H (hw_q, d)``, attention ``A (hw_q, hw_k)`` and which rows
    had something to attend to (list of bool)."""
    hq, d = q.shape
    h = torch.zeros_like(q)
    attn = torch.zeros(hq, kv.shape[0], dtype=q.dtype)
    valid = []
    for i in range(hq):
        keep = [j for j in range(kv.shape[0]) if not cfg.use_mask or r[i, j] != 0]
        if not keep and cfg.masked_rows == "uniform":  # every score -1e9: equal weights
            valid.append(True)
            for j in range(kv.shape[0]):
                attn[i, j] = 1.0 / kv.shape[0]
                h[i] = h[i] + kv[j] / kv.shape[0]
            continue
        valid.append(bool(keep))
        if not keep:
            continue
        scores = []
        for j in keep:
            s = torch.dot(q[i], kv[j])
            if cfg.scale:
                s = s / math.sqrt(d)
            if cfg.use_mask and cfg.relation == "log_prior":
                s = s + math.log(float(r[i, j]))
            elif cfg.use_mask:
                s = s * r[i, j]
            scores.append(s)
        w = torch.softmax(torch.stack(scores), dim=0)
        for wj, j in zip(w, keep, strict=True):
            attn[i, j] = wj
            h[i] = h[i] + wj * kv[j]
    return h, attn, valid


def direction_cosine(q: Tensor, kv: Tensor, r: Tensor, cfg: GKDDenConfig):
    """``cos(vec H, vec T_q)`` over the valid rows (None if none) and the masked row count."""
    h, _, valid = pair_attention(q, kv, r, cfg)
    rows = [i for i, v in enumerate(valid) if v]
    if not rows:
        return None, len(valid)
    if cfg.cosine == "token":
        cos = sum(torch.dot(h[i], q[i])
                  / (h[i].norm().clamp_min(1e-8) * q[i].norm().clamp_min(1e-8))
                  for i in rows) / len(rows)
        return cos, len(valid) - len(rows)
    return F.cosine_similarity(h[rows].flatten(), q[rows].flatten(), dim=0), len(valid) - len(rows)


def centred(tokens: Tensor) -> Tensor:
    """Each image's tokens ``(B, hw, d)`` minus its mean token, image by image, token by token."""
    out = []
    for img in tokens:
        mean = sum(img[k] for k in range(img.shape[0])) / img.shape[0]
        out.append(torch.stack([img[i] - mean for i in range(img.shape[0])]))
    return torch.stack(out)


def gkd_den_loss(tokens_w: Tensor, labels_w: Tensor, toklab_w: Tensor, tokens_n: Tensor,
                 labels_n: Tensor, toklab_n: Tensor, cfg: GKDDenConfig) -> dict:
    """``L_Den`` of one step: loop over classes, then over every ``(m, n)`` in
    ``G_c^W x G_c^N``. Returns ``{"den", "n_pairs", "n_rows_masked", "n_pairs_empty"}``."""
    if cfg.center:
        tokens_w, tokens_n = centred(tokens_w), centred(tokens_n)
    terms = {"w": {}, "n": {}}  # side -> class -> [1 - cos]
    n_pairs = n_masked = n_empty = 0
    for c in sorted(set(labels_w.tolist()) | set(labels_n.tolist())):
        for m in [i for i in range(len(labels_w)) if labels_w[i] == c]:
            for n in [j for j in range(len(labels_n)) if labels_n[j] == c]:
                n_pairs += 1
                r = relation_map(toklab_w[m], toklab_n[n])
                dirs = [("w", tokens_w[m], tokens_n[n], r)]
                if cfg.two_way:
                    dirs.append(("n", tokens_n[n], tokens_w[m], r.T))
                for side, q, kv, rr in dirs:
                    cos, masked = direction_cosine(q, kv, rr, cfg)
                    n_masked += masked
                    if cos is None:
                        n_empty += 1
                    else:
                        terms[side].setdefault(c, []).append(1 - cos)
    den = torch.tensor(0.0, dtype=torch.float64)
    for side in terms:
        if cfg.reduction == "per_class_sum":
            for per_class in terms[side].values():
                den = den + torch.stack(per_class).mean()
        elif terms[side]:
            den = den + torch.stack([t for v in terms[side].values() for t in v]).mean()
    return {"den": den, "n_pairs": n_pairs, "n_rows_masked": n_masked,
            "n_pairs_empty": n_empty}


# ------------------------------------------------------------------------------- NT-Xent
def nt_xent_loop(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """NT-Xent (:func:`pagkd_lite.models.pretrain.nt_xent`), one anchor and one partner at a time.

    ``z1``, ``z2`` (B, p): row i of each is a view of image i. The 2B rows ``z_0 .. z_{2B-1}``
    (``z1`` then ``z2``); the positive of anchor i is ``p(i) = i + B mod 2B``::

        s(a, b) = a.b / (|a| |b|)
        l_i     = -log( exp(s(z_i, z_p(i)) / tau) / sum_{k != i} exp(s(z_i, z_k) / tau) )
        loss    = (1 / 2B) sum_i l_i
    """
    z = [*z1, *z2]
    n, b = len(z), len(z1)

    def s(a: Tensor, c: Tensor) -> Tensor:
        return torch.dot(a, c) / (a.norm() * c.norm())

    total = torch.zeros((), dtype=z1.dtype)
    for i in range(n):
        positive = torch.exp(s(z[i], z[(i + b) % n]) / temperature)
        denominator = torch.zeros((), dtype=z1.dtype)
        for k in range(n):
            if k != i:
                denominator = denominator + torch.exp(s(z[i], z[k]) / temperature)
        total = total - torch.log(positive / denominator)
    return total / n
