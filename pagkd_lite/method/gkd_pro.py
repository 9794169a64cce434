"""GKD-Pro: group prototype distillation (Hu et al., AAAI 2026, arXiv 2601.09209).

The images of class ``c`` in modality ``m`` of one step form a group ``G_c^m``; there is
no instance correspondence between WLI and NBI. A set of learnable, lesion-aware queries
reads each group (all its tokens at once) through one multi-head cross-attention layer,
giving a prototype set ``P_c^m`` of ``N_q`` vectors. WLI and NBI prototype sets of the same
class are pulled together and those of different classes pushed apart (``L_con``), and a
linear classifier must recognise the class from every prototype set (``L_pcls``).

Token convention of the kit: tokens ``(B, hw, d)`` float, labels ``(B,)`` long in
``[0, K)``. WLI tokens come from the student, NBI tokens from the frozen teacher's feature
map passed through the trainable adapter.

Choices that differ from the authors' research code (see ``docs/method.md``):

* **Identity embedding.** Before an image's tokens join its group's sequence, a
  per-image identity vector is added to all of them so that the attention can tell
  images apart. Authors: a fixed scalar per position. Ours (default
  ``identity="sinusoidal"``): the fixed sinusoidal vector of the image's position in its
  group (positions follow the order of the images in the batch). ``"learned"`` (a
  trainable table) and ``"none"`` are also offered.
* **Set similarity** (``similarity``). The authors' code (``train.py``, ``set_loss``) holds
  a prototype set as ``(d, N_q)``, normalises every CHANNEL across the ``N_q`` slots and sums
  the ``d`` channel-wise cosines, divided by 20: ``s(A, B) = (1/20) sum_ch cos(A[:, ch],
  B[:, ch])``, up to ``d / 20`` (6.4 at d = 128). ``similarity="channel"`` is theirs
  (``channel_scale=20``). ``similarity="slot"`` is the mean over slots of slot-wise
  cosines, ``s(A, B) = (1/N_q) sum_k cos(A[k], B[k])``, at most 1. The two are different
  functions, not a rescaling of each other. Either is divided by ``tau``.
* **Reduction over anchors** (``con_reduction``): the authors sum ``L_con`` over the anchor
  classes (``"sum"``); ``"mean"`` averages.
* **"+1" in the InfoNCE denominator.** Authors' variant, kept as the default
  (``plus_one=True``); ``plus_one=False`` is plain InfoNCE.
* **Any K >= 2.** Authors: 3 classes hard-coded, group losses skipped unless all 3 are
  present. Ours: a class present in one modality only is skipped for ``L_con`` (for that
  class only) and counted in ``n_pairs_skipped``; it still enters ``L_pcls`` and still
  serves as a negative for the other classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distributed import all_gather_rows, is_distributed
from ..models.accel import float32

IDENTITIES = ("sinusoidal", "learned", "none")
SIMILARITIES = ("slot", "channel")
REDUCTIONS = ("mean", "sum")


@dataclass
class GKDProConfig:
    """Configuration of :class:`GKDPro`.

    Attributes:
        num_queries: number of learnable queries ``N_q`` (paper: 12).
        num_heads: heads of the cross-attention (paper: 16); must divide the token width
            ``d`` (``model.dim``, given to :class:`GKDPro`).
        tau: similarity temperature, ``> 0`` (logits = ``s / tau``; authors: 1).
        similarity: ``"channel"`` (sum of channel-wise cosines across slots /
            ``channel_scale``, the authors'; default) or ``"slot"`` (mean of slot-wise
            cosines, the kit's earlier default).
        channel_scale: divisor of the channel similarity (authors: 20).
        con_reduction: ``"sum"`` (the authors'; default) or ``"mean"`` of ``L_con`` over
            anchor classes.

    The defaults of ``similarity`` and ``con_reduction`` were chosen on validation seeds
    100-104 by a pre-registered rule (docs/fidelity.md, "Chosen defaults").
        plus_one: add 1 to the InfoNCE denominator (authors' variant, default); ``False``
            gives plain InfoNCE.
        identity: per-image identity embedding added to each image's tokens before the
            group sequence is built: ``"sinusoidal"`` (fixed, default), ``"learned"`` or
            ``"none"``. Authors: fixed scalars per position.
        max_group_size: rows of the identity table; a group with more images is an error.
        gather: under torchrun, all-gather the prototype sets of every rank so that other
            ranks' sets of OTHER classes join the InfoNCE denominator as extra negatives
            (the positive stays this rank's NBI set of the anchor's class; other ranks'
            same-class sets are left out). Off by default: each rank uses its own groups.
            ``L_pcls`` is always local. No effect outside torchrun.
    """

    num_queries: int = 12
    num_heads: int = 16
    tau: float = 1.0
    similarity: str = "channel"  # chosen on validation seeds (docs/fidelity.md)
    channel_scale: float = 20.0
    con_reduction: str = "sum"  # chosen on validation seeds (docs/fidelity.md)
    plus_one: bool = True
    identity: str = "sinusoidal"
    max_group_size: int = 64
    gather: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.gather, bool):
            raise ValueError(f"GKDProConfig.gather must be a bool, got {self.gather!r}")
        for name in ("num_queries", "num_heads", "max_group_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GKDProConfig.{name} must be a positive int, got {value!r}")
        if not (isinstance(self.tau, (int, float)) and math.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"GKDProConfig.tau must be a finite number > 0, got {self.tau!r}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"GKDProConfig.similarity must be one of {SIMILARITIES}, "
                             f"got {self.similarity!r}")
        if self.con_reduction not in REDUCTIONS:
            raise ValueError(f"GKDProConfig.con_reduction must be one of {REDUCTIONS}, "
                             f"got {self.con_reduction!r}")
        if not (math.isfinite(self.channel_scale) and self.channel_scale > 0):
            raise ValueError(f"GKDProConfig.channel_scale must be a finite number > 0, "
                             f"got {self.channel_scale!r}")
        if self.identity not in IDENTITIES:
            raise ValueError(
                f"GKDProConfig.identity must be one of {IDENTITIES}, got {self.identity!r}"
            )


def check_heads(dim: int, num_heads: int) -> None:
    """``num_heads`` must divide the token width ``dim``: each head gets ``dim / num_heads``
    channels."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"GKDPro: the token width (model.dim) must be a positive int, "
                         f"got {dim!r}")
    if dim % num_heads != 0:
        raise ValueError(f"GKD-Pro: pro.num_heads={num_heads} must divide the token width "
                         f"model.dim={dim} (each head gets dim / num_heads channels)")


def sinusoidal_table(n: int, dim: int) -> Tensor:
    """Fixed sinusoidal table ``(n, dim)`` (Vaswani et al., 2017).

    ``E[i, 2j] = sin(i / 10000^(2j/dim))``, ``E[i, 2j+1] = cos(i / 10000^(2j/dim))``.
    """
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    freq = torch.pow(10000.0, -torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    table = torch.zeros(n, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return table.float()


def set_similarity(a: Tensor, b: Tensor, cfg: GKDProConfig) -> Tensor:
    """``s(A, B)`` for every pair of prototype sets: ``a (G_a, N_q, d)``, ``b (G_b, N_q, d)``
    -> ``(G_a, G_b)``.

    ``"slot"``: ``(1/N_q) sum_k cos(A[k], B[k])`` (each slot normalised over its d channels).
    ``"channel"``: ``(1/channel_scale) sum_ch cos(A[:, ch], B[:, ch])`` (each channel
    normalised over the N_q slots; the authors').
    Slow loop reference: :func:`pagkd_lite.method.reference.set_similarity`.
    """
    if cfg.similarity == "slot":
        ua, ub = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
        return torch.einsum("akd,bkd->ab", ua, ub) / a.shape[1]
    ua, ub = F.normalize(a, dim=1), F.normalize(b, dim=1)
    return torch.einsum("akd,bkd->ab", ua, ub) / cfg.channel_scale


def _check_tokens(name: str, tokens: Tensor, labels: Tensor, dim: int, num_classes: int) -> None:
    if tokens.ndim != 3 or tokens.shape[-1] != dim:
        raise ValueError(f"GKDPro: {name} tokens must be (B, hw, {dim}), got {tuple(tokens.shape)}")
    if labels.ndim != 1 or labels.shape[0] != tokens.shape[0]:
        raise ValueError(
            f"GKDPro: {name} labels must be (B,) with B={tokens.shape[0]}, "
            f"got {tuple(labels.shape)}"
        )
    if labels.dtype != torch.long:
        raise ValueError(f"GKDPro: {name} labels must be int64, got {labels.dtype}")
    if tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise ValueError(f"GKDPro: {name} tokens are empty: {tuple(tokens.shape)}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"GKDPro: {name} labels must lie in [0, {num_classes}), got [{lo}, {hi}]")


def pack_groups(tokens: Tensor, labels: Tensor, identity: Tensor, num_classes: int,
                max_group_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pack one modality's images into padded group sequences, one per present class.

    Image ``i`` at place ``pos(i)`` of its class's group (batch order) joins the sequence as
    ``T_i + identity[pos(i)]``.

    Args:
        tokens: ``(B, hw, d)``; labels: ``(B,)`` long in ``[0, K)``.
        identity: ``(max_group_size, d)`` identity vectors by place in the group.

    Returns:
        ``seq (G, L_max * hw, d)``, ``pad (G, L_max * hw)`` (True = padding),
        ``group_class (G,)`` ascending and ``present (K,)`` bool.
    """
    b, hw, d = tokens.shape
    counts = torch.bincount(labels, minlength=num_classes)
    present = counts > 0
    n_groups = int(present.sum())
    l_max = int(counts.max())
    if l_max > max_group_size:
        raise ValueError(
            f"GKDPro: a group has {l_max} images but max_group_size="
            f"{max_group_size}; raise GKDProConfig.max_group_size"
        )
    order = torch.argsort(labels, stable=True)  # images of a class keep batch order
    lab_sorted = labels[order]
    start = torch.cumsum(counts, 0) - counts
    pos = torch.arange(b, device=labels.device) - start[lab_sorted]  # place in group
    gid = (torch.cumsum(present.long(), 0) - 1)[lab_sorted]  # group of each image
    x = tokens[order] + identity[pos][:, None, :]
    seq = tokens.new_zeros(n_groups, l_max, hw, d).index_put((gid, pos), x)
    valid = torch.zeros(n_groups, l_max, dtype=torch.bool, device=tokens.device)
    valid[gid, pos] = True
    pad = (~valid).repeat_interleave(hw, dim=1)
    group_class = torch.nonzero(present).flatten()
    return seq.reshape(n_groups, l_max * hw, d), pad, group_class, present


def contrastive_loss(sim: Tensor, group_class: Tensor, is_w: Tensor, col_class: Tensor,
                     col_is_w: Tensor, col_local: Tensor, both: Tensor,
                     cfg: GKDProConfig) -> tuple[Tensor | None, int]:
    """``L_con`` from the similarity logits of the step's prototype sets.

    Anchors are the WLI groups whose class also has an NBI group; each anchor's positive is
    the (local) NBI group of its class; its denominator runs over the positive and every
    group of another class, both modalities, plus ``exp(0) = 1`` with ``cfg.plus_one``::

        L_con = mean|sum_a ( log([1 +] sum_{j in den(a)} exp(sim[a, j])) - sim[a, pos(a)] )

    Args:
        sim: ``(G, G_cols)`` ``s / tau`` of every group (rows) against every column.
        group_class, is_w: ``(G,)`` class and modality of the rows.
        col_class, col_is_w, col_local: ``(G_cols,)`` class, modality, and whether the column
            is this rank's own (with ``cfg.gather`` the columns include other ranks').
        both: ``(K,)`` bool, classes present in both modalities.
        cfg: :class:`GKDProConfig` (``plus_one``, ``con_reduction``).

    Returns:
        ``(L_con or None when there is no anchor, number of anchors)``.
    """
    anchor = is_w & both[group_class]
    same = group_class[:, None] == col_class[None, :]
    pos_mask = same & ~col_is_w[None, :] & col_local[None, :] & anchor[:, None]
    denom_mask = (~same | pos_mask) & anchor[:, None]
    logits = sim.masked_fill(~denom_mask, float("-inf"))
    if cfg.plus_one:  # log(1) = 0 joins the log-sum-exp
        logits = torch.cat([logits, logits.new_zeros(logits.shape[0], 1)], dim=1)
    n_con = int(anchor.sum())
    if n_con == 0:
        return None, 0
    pos_logit = (sim * pos_mask).sum(1)[anchor]
    per_anchor = torch.logsumexp(logits[anchor], dim=1) - pos_logit
    return (per_anchor.sum() if cfg.con_reduction == "sum" else per_anchor.mean()), n_con


class GKDPro(nn.Module):
    """Group prototype distillation: ``L_con`` (cross-modal contrast) and ``L_pcls``.

    Hu et al., "Pairing-free Group-level Knowledge Distillation for Robust Gastrointestinal
    Lesion Classification in White-Light Endoscopy", AAAI 2026 (arXiv 2601.09209), GKD-Pro.

    For every group ``G_c^m`` (class ``c``, modality ``m`` in {W, N}) present in the step::

        S_c^m = concat_{i in G_c^m} (T_i + e_{pos(i)})          (|G_c^m| * hw, d)
        P_c^m = MHA(Q, S_c^m, S_c^m)                             (N_q, d)
        s(A, B) = (1 / N_q) * sum_k cos(A[k], B[k])              similarity = "slot"
        s(A, B) = (1 / channel_scale) * sum_ch cos(A[:, ch], B[:, ch])   "channel"

        L_con = mean|sum_{c in C_WN} -log( exp(s(P_c^W, P_c^N) / tau)
                   / ([1 +] sum_{(c', m') != (c, W)} exp(s(P_c^W, P_{c'}^{m'}) / tau)) )
        L_pcls = mean_{(c, m)} CE(W_p * mean_k P_c^m + b_p, c)

    With ``cfg.gather`` under torchrun the denominator also runs over every other rank's
    prototype sets of other classes (:func:`pagkd_lite.distributed.all_gather_rows`).

    ``C_WN`` are the classes present in both modalities. The denominator sum runs over
    the positive ``P_c^N`` and every prototype set of another class in both modalities
    (``1 +`` only if ``plus_one``). ``Q`` (``N_q x d``), the single
    ``nn.MultiheadAttention`` (shared by both modalities and all classes) and the
    prototype classifier ``nn.Linear(d, K)`` are trainable.

    All groups of both modalities go through ONE attention call as a padded batch
    ``(G, L_max * hw, d)`` with a ``key_padding_mask``; no loop over images or pairs.
    If no class is present in both modalities, ``L_con`` is an exact zero that keeps the
    graph (``protos.sum() * 0``), never NaN.

    Args:
        cfg: :class:`GKDProConfig`.
        num_classes: number of classes ``K`` (``>= 2``).
        dim: the token and prototype width ``d``: the width of the student's tokens
            (``model.dim``; paper: 128); ``cfg.num_heads`` must divide it.
    """

    def __init__(self, cfg: GKDProConfig, num_classes: int, dim: int) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"GKDPro: num_classes must be an int >= 2, got {num_classes!r}")
        check_heads(dim, cfg.num_heads)
        self.cfg = cfg
        self.num_classes, self.dim = num_classes, dim
        d = dim
        self.queries = nn.Parameter(torch.randn(cfg.num_queries, d) * d**-0.5)
        self.mha = nn.MultiheadAttention(d, cfg.num_heads, batch_first=True)
        self.classifier = nn.Linear(d, num_classes)
        if cfg.identity == "learned":
            self.identity = nn.Parameter(torch.randn(cfg.max_group_size, d) * 0.02)
        elif cfg.identity == "sinusoidal":
            self.register_buffer(
                "identity", sinusoidal_table(cfg.max_group_size, d), persistent=False
            )
        else:
            self.register_buffer("identity", torch.zeros(cfg.max_group_size, d), persistent=False)

    def _pack(self, tokens: Tensor, labels: Tensor, num_classes: int):
        return pack_groups(tokens, labels, self.identity.to(tokens.dtype), num_classes,
                           self.cfg.max_group_size)

    def _attend(self, seq: Tensor, pad: Tensor, need_weights: bool):
        q = self.queries.to(seq.dtype).unsqueeze(0).expand(seq.shape[0], -1, -1)
        out, attn = self.mha(
            q, seq, seq, key_padding_mask=pad, need_weights=need_weights,
            average_attn_weights=True,
        )
        return out, attn

    @float32
    def prototypes(
        self, tokens: Tensor, labels: Tensor, num_classes: int | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Prototype sets of one modality's groups.

        Slow loop reference: :func:`pagkd_lite.method.reference.prototypes`.

        Args:
            tokens: ``(B, hw, d)``.
            labels: ``(B,)`` long in ``[0, K)``.
            num_classes: ``K`` (default: the module's).

        Returns:
            ``protos (G, N_q, d)`` (one set per present class, ascending class),
            ``group_class (G,)`` long, ``present (K,)`` bool.
        """
        k = self.num_classes if num_classes is None else num_classes
        _check_tokens("tokens", tokens, labels, self.dim, k)
        seq, pad, group_class, present = self._pack(tokens, labels, k)
        protos, _ = self._attend(seq, pad, need_weights=False)
        return protos, group_class, present

    def _columns(self, protos: Tensor, group_class: Tensor, is_w: Tensor):
        """The prototype sets the contrast compares against: ``(cols (G_c, N_q, d),
        class (G_c,), is_w (G_c,), local (G_c,) bool)``. This step's own sets, or with
        ``cfg.gather`` under torchrun every rank's (rank order; gradients flow back)."""
        local = torch.ones_like(is_w)
        if not (self.cfg.gather and is_distributed()):
            return protos, group_class, is_w, local
        cols, start = all_gather_rows(protos)
        meta, _ = all_gather_rows(torch.stack([group_class, is_w.long()], dim=1))
        col_local = torch.zeros(cols.shape[0], dtype=torch.bool, device=cols.device)
        col_local[start : start + protos.shape[0]] = True
        return cols, meta[:, 0], meta[:, 1].bool(), col_local

    # ------------------------------------------------------------------ losses
    @float32
    def forward(
        self, tokens_w: Tensor, labels_w: Tensor, tokens_n: Tensor, labels_n: Tensor,
        return_details: bool = False,
    ) -> dict[str, Tensor]:
        """Compute ``L_con`` and ``L_pcls`` for one step.

        Slow loop reference: :func:`pagkd_lite.method.reference.gkd_pro_losses`.

        Args:
            tokens_w: WLI (student) tokens ``(B_w, hw_w, d)``.
            labels_w: ``(B_w,)`` long.
            tokens_n: NBI (adapted teacher) tokens ``(B_n, hw_n, d)``.
            labels_n: ``(B_n,)`` long.
            return_details: also return prototypes, similarities and attention weights.

        Returns:
            ``{"con": L_con, "pcls": L_pcls, "n_pairs_skipped": classes present in only one
            modality (long scalar), "n_con_classes": classes used by L_con}``; with
            ``return_details`` also ``protos_w (G_w, N_q, d)``, ``classes_w (G_w,)``,
            ``protos_n``, ``classes_n``, ``sim (G, G_cols)`` (``s / tau``, WLI groups first;
            ``G_cols = G`` unless ``cfg.gather`` under torchrun),
            ``attn (G, N_q, L_max * hw_max)`` (head-averaged) and ``key_padding_mask``.
        """
        k = self.num_classes
        _check_tokens("WLI", tokens_w, labels_w, self.dim, k)
        _check_tokens("NBI", tokens_n, labels_n, self.dim, k)
        seq_w, pad_w, cls_w, pres_w = self._pack(tokens_w, labels_w, k)
        seq_n, pad_n, cls_n, pres_n = self._pack(tokens_n, labels_n, k)
        length = max(seq_w.shape[1], seq_n.shape[1])
        seqs, pads = [], []
        for seq, pad in ((seq_w, pad_w), (seq_n, pad_n)):  # two modalities, not images
            extra = length - seq.shape[1]
            seqs.append(F.pad(seq, (0, 0, 0, extra)))
            pads.append(F.pad(pad, (0, extra), value=True))
        seq, pad = torch.cat(seqs), torch.cat(pads)
        protos, attn = self._attend(seq, pad, need_weights=return_details)
        g_w = cls_w.shape[0]
        group_class = torch.cat([cls_w, cls_n])
        is_w = torch.arange(group_class.shape[0], device=seq.device) < g_w

        # rows: this step's groups; columns: the same, or every rank's with cfg.gather
        cols, col_class, col_is_w, col_local = self._columns(protos, group_class, is_w)

        sim = set_similarity(protos, cols, self.cfg) / self.cfg.tau  # (G, G_cols)

        con, n_con = contrastive_loss(sim, group_class, is_w, col_class, col_is_w, col_local,
                                      pres_w & pres_n, self.cfg)
        if n_con == 0:  # keeps the graph (and, with gather, every rank's backward in step)
            con = cols.sum() * 0.0

        pcls = F.cross_entropy(self.classifier(protos.mean(dim=1)), group_class)
        out = {
            "con": con,
            "pcls": pcls,
            "n_pairs_skipped": (pres_w ^ pres_n).sum(),
            "n_con_classes": torch.tensor(n_con, device=seq.device),
        }
        if return_details:
            out.update(
                protos_w=protos[:g_w], classes_w=cls_w, protos_n=protos[g_w:], classes_n=cls_n,
                sim=sim, attn=attn, key_padding_mask=pad,
            )
        return out
