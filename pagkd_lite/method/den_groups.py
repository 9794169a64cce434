"""GKD-Den over ALL same-class pairs, class by class: the fast path that GKDDen runs.

:func:`group_den` gives the values and gradients of :func:`pagkd_lite.method.den_pairs.pair_loss` on
every same-class (WLI, NBI) pair without gathering them: no per-pair copies of tokens, one
score tensor per pair for both directions, relation and mask rebuilt from the token states,
a hand-written backward (:class:`_GroupAttention`), blocks of a bounded number of scores.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..models.accel import float32
from .den_pairs import (
    _MASKED_SCORE,
    _NORM_EPS,
    GKDDenConfig,
    _check_toklab,
    center_tokens,
    relation_maps,
)

#: Largest block of scores computed at once, in elements (``pairs x hw_w x hw_n``), by
#: device type: on a CPU 256 Ki elements (1 MB in float32: the few tensors of a block stay in
#: cache from one pass to the next; measured fastest at 16 x 16 tokens), elsewhere 16 Mi.
#: Besides these blocks, :class:`~pagkd_lite.method.gkd_den.GKDDen` keeps for the backward pass the
#: attention maps (``2 P hw_w hw_n`` values) and ``H`` (``2 P hw d``).
CHUNK_ELEMS = {"cpu": 1 << 18, "default": 1 << 24}


def chunk_elems_for(device: torch.device) -> int:
    """The default block size (:data:`CHUNK_ELEMS`) on ``device``."""
    return CHUNK_ELEMS.get(device.type, CHUNK_ELEMS["default"])


def _chunks(b_w: int, b_n: int, hw_w: int, hw_n: int, chunk_elems: int):
    """``(n0, n1, m0, m1)`` blocks of the ``b_n x b_w`` pairs of one class, NBI-major, each with
    at most ``chunk_elems`` scores (at least one pair): all WLI images for a run of NBI images,
    or, when one NBI image times all WLI images is already too big, one NBI image and a run of
    WLI images. Either way a block's rows of an ``(b_n, b_w, ...)`` tensor are contiguous."""
    per_pair = hw_w * hw_n
    n_step = min(b_n, chunk_elems // (b_w * per_pair))
    if n_step >= 1:
        for n0 in range(0, b_n, n_step):
            yield n0, min(n0 + n_step, b_n), 0, b_w
        return
    m_step = max(1, min(b_w, chunk_elems // per_pair))
    for n0 in range(b_n):
        for m0 in range(0, b_w, m_step):
            yield n0, n0 + 1, m0, min(m0 + m_step, b_w)


def _relation_rows(state_n: Tensor, scale: float, fill: float,
                   dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """Per NBI image, the three rows a WLI token's relation can be, by its state ``a``
    (0 uncertain, 1 bg, 2 fg): ``mult (B_n, 3, hw_n)`` with ``mult[n, a, j] = R [/ sqrt(d)]``
    (``R`` of :func:`relation_maps`: 0.5 if either token is uncertain, else 1 for the same
    label and 0 for different ones) and ``add (B_n, 3, hw_n)``, 0 where ``R != 0`` and
    ``fill`` where ``R == 0`` (None when no entry is masked). For the pair ``(n, m)`` the
    masked score row of WLI token ``i`` is ``S[i] * mult[n, a_i] + add[n, a_i]``: exactly
    ``fill`` where ``R == 0`` (the product is 0 there), ``S[i] R [/ sqrt(d)]`` elsewhere."""
    dev = state_n.device
    r = torch.tensor([[0.5, 0.5, 0.5], [0.5, 1.0, 0.0], [0.5, 0.0, 1.0]], dtype=torch.float64)
    mult = (r * scale).to(dev, dtype)[:, state_n].transpose(0, 1).contiguous()
    add = None
    if bool((mult == 0).any()):
        add = torch.where(r == 0, torch.tensor(fill, dtype=torch.float64), 0.0)
        add = add.to(dev, dtype)[:, state_n].transpose(0, 1).contiguous()
    return mult, add


def _block_rows(table: Tensor, state_w: Tensor, block) -> Tensor:
    """``table[n, state_w[m, i]]`` for the block's pairs: ``(nb, mb * hw_w, hw_n)``."""
    n0, n1, m0, m1 = block
    return torch.index_select(table[n0:n1], 1, state_w[m0:m1].reshape(-1))


class _GroupAttention(torch.autograd.Function):
    """Relation-guided cross-attention of every WLI image of a class with every NBI image of
    it, both directions from ONE score tensor per pair, no copies of tokens per pair; returns
    the per-pair sums the cosine needs.

    Inputs: ``q = T^W (B_w, hw_w, d)``, ``k = T^N (B_n, hw_n, d)`` (the class's images);
    ``state_w (B_w, hw_w)`` long, WLI token states (0 uncertain, 1 bg, 2 fg); ``mult, add
    (B_n, 3, hw_n)`` from :func:`_relation_rows` (``mult`` None: ``use_mask=False``; ``add``
    None: nothing masked in the class); ``valid_w (B_n, B_w, hw_w)``, ``valid_n (B_n, B_w,
    hw_n)`` bool, the rows with something to attend to (None: all; only
    ``masked_rows="drop"`` has invalid rows).
    For the pair ``(n, m)`` (WLI image ``m``, NBI image ``n``)::

        Z = (T_m T_n^T) * R_mn [/ sqrt(d)], = fill where R_mn == 0     (hw_w, hw_n)
        A^W = softmax_j Z (rows),    H^W = A^W T_n      (hw_w, d): WLI queries NBI
        A^N = softmax_i Z (columns), H^N = A^N^T T_m    (hw_n, d): NBI queries WLI
        dot^W = sum_i v_i <H^W_i, T_m[i]>,   hh^W = sum_i v_i |H^W_i|^2    (v = valid_w[n, m])
        dot^N = sum_j v_j <H^N_j, T_n[j]>,   hh^N = sum_j v_j |H^N_j|^2    (v = valid_n[n, m])

    Invalid rows of ``A^W`` (columns of ``A^N``) are zero. ``A^N`` is the transpose of
    :func:`relation_attention`'s ``attn`` for ``q = T_n``, ``kv = T_m``, ``R_mn^T``: ``Z^T``
    holds the same scores, so one product ``T_m T_n^T`` serves both directions. ``fill`` is
    -1e9 (``"uniform"``, the authors': a fully masked row attends uniformly) or
    ``-finfo.max / 4`` (``"drop"``: as good as -inf; masked entries get exactly zero weight).

    Outputs ``dot^W, hh^W, dot^N, hh^N``, each ``(B_n, B_w)`` (the last two empty without
    ``two_way``). The pairs are processed in blocks of at most ``chunk_elems`` scores
    (:func:`_chunks`); the forward keeps ``A^W``, ``A^N`` and ``H``, the backward recomputes
    ``R``. Matrix products per pair: 3 forward, 6 backward (autograd on gathered pairs: 4 and
    8). ``sink``, a list or None, receives ``(n0, n1, m0, m1, A^W, A^N or None)`` per block,
    ``A (nb, mb, hw_w, hw_n)``.
    """

    @staticmethod
    def forward(ctx, q, k, state_w, mult, add, valid_w, valid_n, scale, two_way, chunk_elems,
                sink):
        b_w, hw_w, d = q.shape
        b_n, hw_n, _ = k.shape
        h_w = q.new_empty(b_n, b_w, hw_w, d)
        h_n = q.new_empty(b_n, b_w, hw_n, d) if two_way else None
        # per row <H_i, T_i> and |H_i|^2, block by block while H is in cache
        rows_w = q.new_empty(2, b_n, b_w, hw_w)
        rows_n = q.new_empty(2, b_n, b_w, hw_n) if two_way else None
        blocks = []
        for block in _chunks(b_w, b_n, hw_w, hw_n, chunk_elems):
            n0, n1, m0, m1 = block
            nb, mb = n1 - n0, m1 - m0
            qc, kc = q[m0:m1], k[n0:n1]
            # <T_m[i], T_n[j]> for every (n, m, i, j) of the block; T_m shared, not copied
            z = torch.bmm(qc.reshape(1, mb * hw_w, d).expand(nb, -1, -1), kc.transpose(1, 2))
            z = z.view(nb, mb, hw_w, hw_n)
            if mult is not None:  # Z = S * R [/ sqrt(d)], = fill where R == 0
                r = _block_rows(mult, state_w, block).view_as(z)
                if add is not None:
                    z = _block_rows(add, state_w, block).view_as(z).addcmul_(z, r)
                else:
                    z.mul_(r)
                del r
            elif scale != 1.0:
                z.mul_(scale)
            a_w = torch.softmax(z, dim=-1)
            if valid_w is not None:  # rows with nothing to attend to: zero attention
                rows = (~valid_w[n0:n1, m0:m1]).reshape(-1).nonzero().squeeze(1)
                a_w.view(-1, hw_n).index_fill_(0, rows, 0.0)
            hb = h_w[n0:n1, m0:m1]
            torch.bmm(a_w.view(nb, mb * hw_w, hw_n), kc, out=hb.view(nb, mb * hw_w, d))
            rows_w[0, n0:n1, m0:m1] = (hb * qc).sum(-1)
            rows_w[1, n0:n1, m0:m1] = (hb * hb).sum(-1)
            a_n = None
            if two_way:
                a_n = torch.softmax(z, dim=2)
                if valid_n is not None:  # the same for NBI tokens (columns of A^N)
                    pair, col = (~valid_n[n0:n1, m0:m1]).reshape(nb * mb, hw_n).nonzero(
                        as_tuple=True)
                    a_n.view(nb * mb, hw_w, hw_n)[pair, :, col] = 0.0
                for t in range(nb):  # H^N[n, m] = A^N[n, m]^T T_m
                    torch.bmm(a_n[t].transpose(1, 2), qc, out=h_n[n0 + t, m0:m1])
                hb = h_n[n0:n1, m0:m1]
                rows_n[0, n0:n1, m0:m1] = (hb * kc[:, None]).sum(-1)
                rows_n[1, n0:n1, m0:m1] = (hb * hb).sum(-1)
            del z
            blocks.append((block, a_w, a_n))
        if sink is not None:
            sink.extend((*block, a_w, a_n) for block, a_w, a_n in blocks)
        dot_w, hh_w = _pair_sums(rows_w, valid_w)
        dot_n = hh_n = q.new_empty(0)
        if two_way:
            dot_n, hh_n = _pair_sums(rows_n, valid_n)
        ctx.blocks, ctx.scale, ctx.two_way = blocks, scale, two_way
        ctx.save_for_backward(q, k, state_w, mult, valid_w, valid_n, h_w, h_n)
        return dot_w, hh_w, dot_n, hh_n

    @staticmethod
    @once_differentiable
    def backward(ctx, g_dot_w, g_hh_w, g_dot_n, g_hh_n):
        q, k, state_w, mult, valid_w, valid_n, h_w, h_n = ctx.saved_tensors
        b_w, hw_w, d = q.shape
        hw_n = k.shape[1]
        # dL/dH = a T + b H row by row (a = dL/d dot * v, b = 2 dL/d hh * v), and the direct
        # part of dL/dT through dot, the sum over partners of a H
        coef_w = _row_coefs(g_dot_w, g_hh_w, valid_w, h_w)
        coef_n = _row_coefs(g_dot_n, g_hh_n, valid_n, h_n) if ctx.two_way else None
        dq, dk = torch.zeros_like(q), torch.zeros_like(k)
        for block, a_w, a_n in ctx.blocks:
            n0, n1, m0, m1 = block
            nb, mb = n1 - n0, m1 - m0
            qc, kc = q[m0:m1], k[n0:n1]
            a, b = coef_w[:, n0:n1, m0:m1, :, None]
            hb = h_w[n0:n1, m0:m1]
            gw = torch.addcmul(a * qc, b, hb).view(nb, mb * hw_w, d)
            dq[m0:m1] += (a * hb).sum(0)
            # WLI queries: dL/dA^W = g^W T_n^T, dL/dT_n += A^W^T g^W
            da = torch.bmm(gw, kc.transpose(1, 2)).view(nb, mb, hw_w, hw_n)
            dz = torch._softmax_backward_data(da, a_w, -1, a_w.dtype)
            dk[n0:n1].baddbmm_(a_w.view(nb, mb * hw_w, hw_n).transpose(1, 2), gw)
            if ctx.two_way:  # NBI queries: dL/dA^N = T_m g^N^T, dL/dT_m += A^N g^N
                a, b = coef_n[:, n0:n1, m0:m1, :, None]
                hb = h_n[n0:n1, m0:m1]
                gn = torch.addcmul(a * kc[:, None], b, hb)
                dk[n0:n1] += (a * hb).sum(1)
                for t in range(nb):
                    torch.bmm(qc, gn[t].transpose(1, 2), out=da[t])
                    dq[m0:m1].baddbmm_(a_n[t], gn[t])
                dz += torch._softmax_backward_data(da, a_n, 2, a_n.dtype)
            del da
            # dL/d<T_m[i], T_n[j]> = dL/dZ * R [/ sqrt(d)]: 0 where R == 0 (masked entries)
            if mult is not None:
                dz.mul_(_block_rows(mult, state_w, block).view_as(dz))
            elif ctx.scale != 1.0:
                dz.mul_(ctx.scale)
            ds = dz.view(nb, mb * hw_w, hw_n)
            dq[m0:m1] += torch.bmm(ds, kc).view(nb, mb, hw_w, d).sum(0)
            dk[n0:n1].baddbmm_(ds.transpose(1, 2),
                               qc.reshape(1, mb * hw_w, d).expand(nb, -1, -1))
        return dq, dk, *([None] * 9)


def _pair_sums(rows: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
    """Per pair, the sums over valid rows of ``rows (2, B_n, B_w, hw)`` (``<H_i, T_i>`` and
    ``|H_i|^2``): ``dot, hh (B_n, B_w)``."""
    if valid is not None:
        rows = rows * valid.to(rows.dtype)
    dot, hh = rows.sum(-1)
    return dot, hh


def _row_coefs(g_dot: Tensor | None, g_hh: Tensor | None, valid: Tensor | None,
               h: Tensor) -> Tensor:
    """Backward of :func:`_pair_sums`, row by row: ``(2, B_n, B_w, hw)`` holding
    ``a = dL/d dot * v`` and ``b = 2 dL/d hh * v``, so that ``dL/dH_i = a_i T_i + b_i H_i``
    and the direct part of ``dL/dT_i`` is ``a_i H_i`` (summed over the partners)."""
    shape = h.shape[:3]
    zero = h.new_zeros(shape[:2])
    a = g_dot if g_dot is not None else zero
    b = 2 * g_hh if g_hh is not None else zero
    coef = torch.stack([a, b])[..., None].expand(2, *shape)
    if valid is not None:
        return coef * valid.to(coef.dtype)
    return coef.contiguous()


def _reach(state: Tensor) -> Tensor:
    """``(B, hw)`` states (0 uncertain, 1 bg, 2 fg) -> ``(B, 3)`` bool: a token in state ``a``
    of ANOTHER image has a partner (``R != 0``) in this one: always if uncertain; bg if this
    image has a bg or an uncertain token; fg if it has an fg or an uncertain token."""
    has = torch.zeros(state.shape[0], 3, dtype=torch.bool, device=state.device)
    has.scatter_(1, state, True)
    return torch.stack([torch.ones_like(has[:, 0]), has[:, 0] | has[:, 1],
                        has[:, 0] | has[:, 2]], dim=1)


@float32
def group_den(
    tokens_w: Tensor, labels_w: Tensor, toklab_w: Tensor, tokens_n: Tensor, labels_n: Tensor,
    toklab_n: Tensor, cfg: GKDDenConfig, chunk_elems: int | None = None,
    return_details: bool = False,
) -> dict[str, Tensor]:
    """``L_Den`` over ALL same-class pairs, class by class (what ``GKDDen`` computes).

    The values and gradients of :func:`~pagkd_lite.method.den_pairs.pair_loss` on the gathered pairs
    ``(tokens_w[iw], tokens_n[inb])`` with ``pair_class = labels_w[iw]``, without gathering:
    for each class ``c`` with ``B_w^c`` WLI and ``B_n^c`` NBI images, :class:`_GroupAttention`
    takes ``T^W_c (B_w^c, hw_w, d)`` and ``T^N_c (B_n^c, hw_n, d)`` and returns, for all
    ``B_n^c x B_w^c`` pairs, the sums over valid rows of ``<H, T>`` and ``|H|^2``; with
    ``tt = sum_i v_i |T_i|^2``, per pair and direction::

        1 - cos(vec H, vec T) = 1 - dot / (sqrt(max(hh, 1e-16)) sqrt(max(tt, 1e-16)))

    (``H^W`` against ``T_m``, ``H^N`` against ``T_n``), reduced as ``cfg.reduction`` says:
    ``"mean_all"`` sums every pair with a valid row and divides by their number,
    ``"per_class_sum"`` does so per class and sums the classes; pairs without a valid row are
    left out and counted (``n_pairs_empty``). Valid rows come from the token labels alone
    (:func:`_reach`). Memory: ``A^W, A^N`` (``2 P hw_w hw_n``) and ``H`` kept for the
    backward, plus a few blocks of at most ``chunk_elems`` scores (None: by device,
    :func:`chunk_elems_for`). Under autocast it computes in float32.

    Returns the keys of :func:`~pagkd_lite.method.den_pairs.pair_loss`; with ``return_details`` also
    ``pairs (P, 2)`` (row-major over (WLI index, NBI index), as ``(labels_w[:, None] ==
    labels_n[None, :]).nonzero()``), ``R (P, hw_w, hw_n)``, ``attn_w (P, hw_w, hw_n)``,
    ``valid_rows_w (P, hw_w)`` and, if ``cfg.two_way``, ``attn_n (P, hw_n, hw_w)``,
    ``valid_rows_n (P, hw_n)``.
    """
    if cfg.cosine != "map" or cfg.relation != "multiply":
        raise ValueError("group_den computes the map cosine with S * R; cosine='token' and "
                         "relation='log_prior' run on the gathered pairs (GKDDen does this)")
    dev, dtype = tokens_w.device, tokens_w.dtype
    hw_w, d = tokens_w.shape[1:]
    if cfg.center:
        tokens_w, tokens_n = center_tokens(tokens_w), center_tokens(tokens_n)
    if tokens_n.shape[2] != d:
        raise ValueError(f"GKD-Den: WLI and NBI tokens need the same d, got "
                         f"{tuple(tokens_w.shape)} and {tuple(tokens_n.shape)}")
    _check_toklab("toklab_w", toklab_w)
    _check_toklab("toklab_n", toklab_n)
    if chunk_elems is None:
        chunk_elems = chunk_elems_for(dev)
    classes = sorted(set(labels_w.tolist()) & set(labels_n.tolist()))
    scale = 1.0 / d**0.5 if cfg.scale else 1.0
    fill = _MASKED_SCORE if cfg.masked_rows == "uniform" else -torch.finfo(dtype).max / 4
    drop = cfg.use_mask and cfg.masked_rows == "drop"
    sides = ("w", "n") if cfg.two_way else ("w",)
    sums = {s: [] for s in sides}
    counts = {s: [] for s in sides}
    n_masked = torch.zeros((), dtype=torch.long, device=dev)
    n_pairs = 0
    per_class = []
    for c in classes:
        iw = (labels_w == c).nonzero().squeeze(1)
        inb = (labels_n == c).nonzero().squeeze(1)
        # tokens of a feature map are (B, hw, d) views of (B, d, hw): the blocks need rows
        q, k = tokens_w[iw].contiguous(), tokens_n[inb].contiguous()
        state_w, state_n = toklab_w[iw].long() + 1, toklab_n[inb].long() + 1
        mult = add = valid_w = valid_n = None
        if cfg.use_mask:
            mult, add = _relation_rows(state_n, scale, fill, dtype)
            if drop:
                reach_w, reach_n = _reach(state_w), _reach(state_n)
                valid_w = reach_n[:, state_w]                               # (B_n, B_w, hw_w)
                valid_n = reach_w[:, state_n].transpose(0, 1).contiguous()  # (B_n, B_w, hw_n)
                # all rows valid: nothing to zero, nothing to leave out
                valid_w = None if bool(valid_w.all()) else valid_w
                valid_n = None if bool(valid_n.all()) else valid_n
        sink = [] if return_details else None
        dots = _GroupAttention.apply(q, k, state_w, mult, add, valid_w, valid_n, scale,
                                     cfg.two_way, chunk_elems, sink)
        terms = {"w": (dots[0], dots[1], q, valid_w, 0)}
        if cfg.two_way:
            terms["n"] = (dots[2], dots[3], k, valid_n, 1)
        for s in sides:
            dot, hh, t, valid, own = terms[s]
            tt = (t * t).sum(-1)                                # (B, hw) of the query side
            tt = tt.unsqueeze(own)                              # broadcast to (B_n, B_w, hw)
            if valid is not None:
                tt = (tt * valid.to(dtype)).sum(-1)
                ok = valid.any(-1)
                n_masked = n_masked + (~valid).sum()
            else:
                tt = tt.sum(-1).expand_as(dot)
                ok = torch.ones_like(dot, dtype=torch.bool)
            cos = dot / (hh.clamp_min(_NORM_EPS).sqrt() * tt.clamp_min(_NORM_EPS).sqrt())
            sums[s].append(((1.0 - cos) * ok.to(dtype)).sum())
            counts[s].append(ok.sum())
        n_pairs += len(iw) * len(inb)
        per_class.append((iw, inb, sink, valid_w, valid_n))
    if n_pairs == 0:
        zero = tokens_w.sum() * 0.0 + tokens_n.sum() * 0.0
        n0 = torch.zeros((), dtype=torch.long, device=dev)
        out = {"den": zero, "n_pairs": n0, "n_rows_masked": n0.clone(),
               "n_pairs_empty": n0.clone()}
    else:
        den = tokens_w.new_zeros(())
        n_empty = torch.zeros((), dtype=torch.long, device=dev)
        for s in sides:
            total, count = torch.stack(sums[s]), torch.stack(counts[s])
            n_empty = n_empty + (n_pairs - count.sum())
            if cfg.reduction == "per_class_sum":
                den = den + (total / count.clamp_min(1).to(dtype)).sum()
            else:
                den = den + total.sum() / count.sum().clamp_min(1).to(dtype)
        out = {"den": den, "n_pairs": torch.tensor(n_pairs, device=dev),
               "n_rows_masked": n_masked, "n_pairs_empty": n_empty}
    if return_details:
        out.update(_details(labels_w, labels_n, toklab_w, toklab_n, per_class, cfg,
                            hw_w, tokens_n.shape[1], dtype))
    return out


def _details(labels_w, labels_n, toklab_w, toklab_n, per_class, cfg, hw_w, hw_n, dtype):
    """Per-pair ``pairs, R, attn_w, attn_n, valid_rows_*`` of :func:`group_den`, in the
    order of ``(labels_w[:, None] == labels_n[None, :]).nonzero()``."""
    iw, inb = (labels_w[:, None] == labels_n[None, :]).nonzero(as_tuple=True)
    p = len(iw)
    dev = labels_w.device
    attn_w = torch.zeros(p, hw_w, hw_n, dtype=dtype, device=dev)
    attn_n = torch.zeros(p, hw_n, hw_w, dtype=dtype, device=dev)
    valid_w = torch.ones(p, hw_w, dtype=torch.bool, device=dev)
    valid_n = torch.ones(p, hw_n, dtype=torch.bool, device=dev)
    pair_index = torch.full((len(labels_n), len(labels_w)), -1, dtype=torch.long, device=dev)
    pair_index[inb, iw] = torch.arange(p, device=dev)
    for cw, cn, sink, vw, vn in per_class:
        rows = pair_index[cn][:, cw]                         # (B_n, B_w) pair numbers
        if vw is not None:
            valid_w[rows] = vw
        if vn is not None:
            valid_n[rows] = vn
        for n0, n1, m0, m1, a_w, a_n in sink:
            idx = rows[n0:n1, m0:m1]
            attn_w[idx] = a_w.detach()
            if a_n is not None:
                attn_n[idx] = a_n.detach().transpose(-1, -2)
    out = {"pairs": torch.stack([iw, inb], dim=1),
           "R": relation_maps(toklab_w[iw], toklab_n[inb]),
           "attn_w": attn_w, "valid_rows_w": valid_w}
    if cfg.two_way:
        out.update(attn_n=attn_n, valid_rows_n=valid_n)
    return out

