"""GKD-Den: group dense distillation (Hu et al., AAAI 2026, arXiv 2601.09209).

Within a class ``c`` every WLI image ``m`` of the step is paired with every NBI image
``n`` (``G_c^W x G_c^N``): no instance correspondence is assumed. Token labels
(foreground / background / uncertain, from :mod:`pagkd_lite.method.cam`) give a relation map
``R_mn`` that says which tokens of ``n`` a token of ``m`` may attend to; the
relation-guided cross-attention rebuilds ``m``'s tokens from ``n``'s, and the loss asks
the rebuilt map to point the same way as the original (and the same from NBI to WLI).

Token convention of the kit: tokens ``(B, hw, d)``, labels ``(B,)`` long, token labels
``(B, hw)`` long in ``{-1, 0, 1}`` (uncertain, background, foreground).

Choices that differ from the authors' research code (see ``docs/method.md``):

* **Scaling.** Authors: no ``1/sqrt(d)`` on the scores. Ours: the same by default
  (``scale=False``); ``scale=True`` divides by ``sqrt(d)``.
* **Fully masked rows** (``masked_rows``). A query token whose relation row is all zero
  (it is certain and every key token is certain with the other label) has nothing to
  attend to. The authors fill masked scores with -1e9 (``train.py``, ``Den1``), so such a
  row attends UNIFORMLY to every key token and stays in the cosine: ``"uniform"``. The
  kit's ``"drop"``: that row gets zero attention and is EXCLUDED from the cosine (dropped
  from both ``vec H`` and ``vec T_m``); a pair (in one direction) with no valid row
  contributes nothing, is left out of the mean and is counted (``n_pairs_empty``).
  Values and gradients stay finite either way.
* **Reduction over pairs** (``reduction``). The authors (``train.py``, ``Den_set``) take
  the mean over the pairs of each class, then SUM over classes: ``"per_class_sum"``. The
  kit's ``"mean_all"`` averages over all pairs, so its ``lambda_den`` is in effect about
  ``1/K`` of theirs.
* **Any K, any group sizes.** Pairs are built for every class present in both
  modalities; a class present in one modality only yields no pairs.

Two implementations of the same loss: :func:`~pagkd_lite.method.den_pairs.pair_loss` on explicitly
paired rows (gathered tokens, plain autograd; the baselines that bring their own pairs use it;
module :mod:`pagkd_lite.method.den_pairs`, with the configuration and the per-pair primitives), and
:func:`~pagkd_lite.method.den_groups.group_den` for ALL same-class pairs (what :class:`GKDDen` runs;
:mod:`pagkd_lite.method.den_groups`): class by class, no per-pair copies of tokens, one score
tensor per pair for both directions, relation and mask from the token states, a hand-written
backward, blocks of a bounded number of scores. Tests hold both to the loop reference
(:mod:`pagkd_lite.method.reference`), values and gradients.
"""

from __future__ import annotations

from torch import Tensor, nn

from .den_groups import CHUNK_ELEMS, chunk_elems_for, group_den
from .den_pairs import (
    COSINES,
    MASKED_ROWS,
    REDUCTIONS,
    RELATIONS,
    TARGETS,
    GKDDenConfig,
    center_tokens,
    gathered_den,
    masked_cosine,
    masked_token_cosine,
    pair_loss,
    relation_attention,
    relation_maps,
)

#: the names the notebooks, tests and the rest of the kit import from ``pagkd_lite.method.gkd_den``
__all__ = [
    "CHUNK_ELEMS", "COSINES", "MASKED_ROWS", "REDUCTIONS", "RELATIONS",
    "TARGETS", "GKDDen", "GKDDenConfig", "center_tokens", "chunk_elems_for", "gathered_den",
    "group_den", "masked_cosine", "masked_token_cosine", "pair_loss", "relation_attention",
    "relation_maps",
]


class GKDDen(nn.Module):
    """Group dense distillation loss ``L_Den`` over all same-class WLI x NBI pairs.

    Hu et al., "Pairing-free Group-level Knowledge Distillation for Robust Gastrointestinal
    Lesion Classification in White-Light Endoscopy", AAAI 2026 (arXiv 2601.09209), GKD-Den::

        pairs = {(m, n): y_m = y_n}   = U_c G_c^W x G_c^N
        R_mn[i, j] = 1 | 0 | 0.5       (same certain label | different | either uncertain)
        A = softmax_j( masked_{R=0}( (T_m T_n^T) * R_mn [/ sqrt(d)] ) ),  H_{m<-n} = A T_n
        L_Den = mean_pairs (1 - cos(vec H_{m<-n}, vec T_m))
              + mean_pairs (1 - cos(vec H_{n<-m}, vec T_n))     (if two_way, R transposed)

    ``mean_pairs`` is over all pairs (``reduction="mean_all"``) or the sum over classes of
    the mean over that class's pairs (``"per_class_sum"``, the authors').

    Pairs are ``(labels_w[:, None] == labels_n[None, :]).nonzero()`` (default: ALL of them);
    they are computed class by class by :func:`group_den` (no per-pair copies of tokens, one
    score tensor per pair for both directions, blocks of at most ``chunk_elems`` scores), with
    the values and gradients of :func:`pair_loss` on the gathered pairs. No parameters.

    Args:
        cfg: :class:`GKDDenConfig`.
        chunk_elems: largest block of scores (``pairs x hw_w x hw_n`` elements) computed at
            once; bounds the work memory, not the result (None: by device,
            :data:`CHUNK_ELEMS`).
    """

    def __init__(self, cfg: GKDDenConfig, chunk_elems: int | None = None) -> None:
        super().__init__()
        if chunk_elems is not None and chunk_elems < 1:
            raise ValueError(f"GKDDen: chunk_elems must be >= 1, got {chunk_elems}")
        self.cfg = cfg
        self.chunk_elems = chunk_elems

    def forward(
        self, tokens_w: Tensor, labels_w: Tensor, toklab_w: Tensor,
        tokens_n: Tensor, labels_n: Tensor, toklab_n: Tensor, return_details: bool = False,
    ) -> dict[str, Tensor]:
        """Compute ``L_Den`` for one step.

        Slow loop reference: :func:`pagkd_lite.method.reference.gkd_den_loss`.

        Args:
            tokens_w: WLI (student) tokens ``(B_w, hw_w, d)``; labels_w ``(B_w,)`` long;
                toklab_w ``(B_w, hw_w)`` in ``{-1, 0, 1}``.
            tokens_n: NBI (adapted teacher) tokens ``(B_n, hw_n, d)``; labels_n ``(B_n,)``;
                toklab_n ``(B_n, hw_n)``.
            return_details: add ``pairs (P, 2)`` (WLI index, NBI index), ``R (P, hw_w, hw_n)``,
                ``attn_w (P, hw_w, hw_n)``, ``attn_n (P, hw_n, hw_w)`` and ``valid_rows_w``,
                ``valid_rows_n`` (as :func:`pair_loss` on the gathered pairs).

        Returns:
            ``{"den", "n_pairs", "n_rows_masked", "n_pairs_empty"}`` (see :func:`pair_loss`).
        """
        for name, tok, lab, tl in (("WLI", tokens_w, labels_w, toklab_w),
                                   ("NBI", tokens_n, labels_n, toklab_n)):
            if tok.ndim != 3 or lab.shape != tok.shape[:1] or tl.shape != tok.shape[:2]:
                raise ValueError(
                    f"GKDDen: {name} tokens must be (B, hw, d), labels (B,), token labels "
                    f"(B, hw); got {tuple(tok.shape)}, {tuple(lab.shape)}, {tuple(tl.shape)}"
                )
        if self.cfg.cosine == "token" or self.cfg.relation == "log_prior":
            return gathered_den(tokens_w, labels_w, toklab_w, tokens_n, labels_n, toklab_n,
                                self.cfg, return_details=return_details)
        return group_den(tokens_w, labels_w, toklab_w, tokens_n, labels_n, toklab_n, self.cfg,
                         chunk_elems=self.chunk_elems, return_details=return_details)

