"""Embeddings and modality-invariance numbers for notebook 06 (UMAP of prototypes).

PaGKD asks the WLI student to describe a lesion class the way the NBI teacher does, without
pairs. If that works, the student's representation should depend on the class and not on
the modality. This module gives the vectors and the numbers to look at that claim:

* :func:`image_embeddings`: one vector per image, the pooled tokens ``mean_p T[p]`` (what
  the linear head sees), from a classifier, a distiller's student, or a distiller's
  teacher-plus-adapter branch (the space where GKD-Den and GKD-Pro compare modalities);
* :func:`prototype_sets`: GKD-Pro prototype sets ``P_c^m`` of both modalities over a few
  group steps;
* :func:`umap_2d`: a 2-D UMAP layout (McInnes et al., 2018) for the eyes only;
* :func:`modality_mixing`, :func:`silhouette_by`, :func:`invariance`: the numbers, computed
  in the full embedding space, never on the 2-D layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..data.imageset import ImageSet
from ..data.sampler import GroupSampler
from ..data.transforms import model_input, to_float
from ..method.distiller import Distiller, PaGKD, TeacherSide
from ..models.classifier import eval_mode, input_settings


def _unwrap(model_or_distiller) -> torch.nn.Module:
    return model_or_distiller.student if isinstance(model_or_distiller, Distiller) \
        else model_or_distiller


@torch.no_grad()
def image_embeddings(model_or_distiller, images: ImageSet, device: torch.device | str = "cpu",
                     side: str = "student", batch_size: int = 64) -> np.ndarray:
    """Pooled tokens of every image: ``e_i = (1 / hw) * sum_p T_i[p]``, shape ``(N, d)``.

    Args:
        model_or_distiller: a :class:`~pagkd_lite.models.classifier.Classifier` (teacher or
            student) or a distiller (its ``student`` is used for ``side="student"``).
        images: the images to embed (any modality: a WLI student's view of NBI images is a
            legitimate cross-modal probe).
        device: where to compute.
        side: ``"student"``: the model's own tokens; ``"adapter"``: a distiller's frozen
            teacher features through its trained 1x1 adapter, ``adapter(F_T)`` (the NBI side
            of PaGKD's losses, in the student's token space).
        batch_size: images per forward pass.

    Returns:
        ``(N, d)`` float32 array (the model is left in the mode it was in).
    """
    if side not in ("student", "adapter"):
        raise ValueError(f"image_embeddings: side must be 'student' or 'adapter', got {side!r}")
    if side == "adapter" and not isinstance(model_or_distiller, TeacherSide):
        raise ValueError(f"image_embeddings: side='adapter' needs a distiller with a teacher and "
                         f"an adapter, got {type(model_or_distiller).__name__}")
    device = torch.device(device)
    out = []
    norm = input_settings(model_or_distiller)[0]
    model_or_distiller.to(device)
    with eval_mode(model_or_distiller):
        for i in range(0, len(images), batch_size):
            x = model_input(to_float(images.images[i : i + batch_size].to(device)), norm)
            if side == "student":
                tokens = _unwrap(model_or_distiller)(x).tokens
            else:
                tokens = model_or_distiller.teacher_tokens(x)
            out.append(tokens.mean(dim=1).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length, ``x / max(||x||, eps)``: Euclidean distance then ranks
    neighbours as the cosine does (the losses of PaGKD are cosines)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


@dataclass
class PrototypeSets:
    """GKD-Pro prototype vectors gathered over group steps, one row per (step, group, slot).

    Attributes:
        vectors: ``(M, d)``; a group ``G_c^m`` contributes its ``N_q`` slots ``P_c^m[k]``.
        modality: ``(M,)`` ``"WLI"`` or ``"NBI"``.
        label: ``(M,)`` class of the group.
        slot: ``(M,)`` query index ``k`` (``-1`` for group means).
        step: ``(M,)`` group step the group came from.
    """

    vectors: np.ndarray
    modality: np.ndarray
    label: np.ndarray
    slot: np.ndarray
    step: np.ndarray

    def __len__(self) -> int:
        return len(self.vectors)

    def group_means(self) -> PrototypeSets:
        """One row per group: ``mean_k P_c^m[k]`` (what the prototype classifier reads)."""
        keys = list(dict.fromkeys(zip(self.step.tolist(), self.modality.tolist(),
                                      self.label.tolist(), strict=True)))
        rows = []
        for s, m, c in keys:
            sel = (self.step == s) & (self.modality == m) & (self.label == c)
            rows.append(self.vectors[sel].mean(axis=0))
        return PrototypeSets(
            vectors=np.stack(rows).astype(np.float32),
            modality=np.array([k[1] for k in keys]), label=np.array([k[2] for k in keys]),
            slot=np.full(len(keys), -1), step=np.array([k[0] for k in keys]),
        )


@torch.no_grad()
def prototype_sets(distiller, wli: ImageSet, nbi: ImageSet, device: torch.device | str = "cpu",
                   steps: int = 4, batch_size: int = 12, seed: int = 0) -> PrototypeSets:
    """GKD-Pro prototypes of both modalities over ``steps`` group steps.

    Each step draws a class-balanced WLI batch and NBI batch (:class:`GroupSampler`, no
    pairing), computes student tokens on WLI and adapted teacher tokens on NBI, and runs
    ``distiller.pro(..., return_details=True)``, exactly as in training but in eval mode and
    without augmentation.

    Returns:
        :class:`PrototypeSets` with ``M = steps * (G_w + G_n) * N_q`` rows.
    """
    if not (isinstance(distiller, PaGKD) and distiller.pro is not None):
        raise ValueError(f"prototype_sets: {type(distiller).__name__} has no GKD-Pro module; "
                         "use a distiller trained with GKD-Pro (e.g. method 'pagkd')")
    device = torch.device(device)
    sampler = GroupSampler(wli.labels, nbi.labels, batch_size, num_classes=wli.num_classes,
                           steps_per_epoch=steps, seed=seed, class_names=wli.class_names)
    vecs, mods, labs, slots, stp = [], [], [], [], []
    norm = input_settings(distiller)[0]
    distiller.to(device)
    with eval_mode(distiller):
        for s, group in enumerate(sampler):
            x_w = model_input(to_float(wli.images[group.wli].to(device)), norm)
            x_n = model_input(to_float(nbi.images[group.nbi].to(device)), norm)
            y = group.labels.to(device)
            tok_w = distiller.student(x_w).tokens
            tok_n = distiller.teacher_tokens(x_n)
            det = distiller.pro(tok_w, y, tok_n, y, return_details=True)
            for mod, protos, classes in (("WLI", det["protos_w"], det["classes_w"]),
                                         ("NBI", det["protos_n"], det["classes_n"])):
                g, nq, _ = protos.shape
                vecs.append(protos.reshape(g * nq, -1).float().cpu().numpy())
                mods += [mod] * (g * nq)
                labs.append(classes.cpu().repeat_interleave(nq).numpy())
                slots.append(np.tile(np.arange(nq), g))
                stp.append(np.full(g * nq, s))
    return PrototypeSets(vectors=np.concatenate(vecs), modality=np.array(mods),
                         label=np.concatenate(labs), slot=np.concatenate(slots),
                         step=np.concatenate(stp))


def umap_2d(x: np.ndarray, seed: int = 0, n_neighbors: int = 10, min_dist: float = 0.3,
            metric: str = "euclidean") -> np.ndarray:
    """A 2-D UMAP layout ``(N, 2)`` (McInnes, Healy and Melville, 2018), deterministic.

    ``random_state=seed`` fixes the layout (and makes umap-learn run single-threaded);
    ``n_neighbors`` is small because the point clouds here are small (capped at ``N - 1``).
    The first call in a process compiles umap-learn's numba kernels (seconds to tens of
    seconds); later calls take well under a second for a few hundred points. Use the
    layout to look, not to measure: distances in it are distorted by design.
    """
    import warnings

    import umap

    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) < 4:
        raise ValueError(f"umap_2d: need an (N, d) array with N >= 4, got shape {x.shape}")
    with warnings.catch_warnings():  # "n_jobs overridden by random_state": expected here
        warnings.simplefilter("ignore", UserWarning)
        reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(x) - 1),
                            min_dist=min_dist, metric=metric, random_state=seed)
        return reducer.fit_transform(x).astype(np.float32)


def modality_mixing(x: np.ndarray, modality, k: int = 10) -> float:
    """How well the modalities mix among nearest neighbours, 1.0 = perfectly mixed.

    For point ``i`` of modality ``m_i``, ``f_i`` is the fraction of its ``k`` nearest
    neighbours (Euclidean, itself excluded) from another modality. If modality carried no
    information about position, ``E[f_i] = (N - N_{m_i}) / (N - 1)``; the score is

        mixing = mean_i  f_i / ((N - N_{m_i}) / (N - 1))

    so ``0`` means every neighbourhood is one modality only (separate clusters) and ``1``
    means neighbourhoods hold the other modality as often as its share predicts, whatever
    the proportions. Values slightly above 1 happen by chance.

    Args:
        x: ``(N, d)`` points. modality: ``(N,)`` labels (two or more values). k: neighbours.
    """
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(x, dtype=np.float64)
    mod = np.asarray(modality)
    n = len(x)
    if x.ndim != 2 or mod.shape != (n,):
        raise ValueError(f"modality_mixing: x must be (N, d) and modality (N,), got {x.shape} "
                         f"and {mod.shape}")
    values, counts = np.unique(mod, return_counts=True)
    if len(values) < 2:
        raise ValueError(f"modality_mixing: need two modalities, got only {values.tolist()}")
    if not 1 <= k <= n - 1:
        raise ValueError(f"modality_mixing: k must be in [1, {n - 1}], got {k}")
    idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)
    not_self = idx != np.arange(n)[:, None]
    keep = not_self & (np.cumsum(not_self, axis=1) <= k)  # first k neighbours that are not i
    other = (mod[idx] != mod[:, None]) & keep
    frac = other.sum(axis=1) / k
    share = dict(zip(values.tolist(), counts.tolist(), strict=True))
    expected = np.array([(n - share[m]) / (n - 1) for m in mod.tolist()])
    return float(np.mean(frac / expected))


def silhouette_by(x: np.ndarray, labels, metric: str = "euclidean") -> float:
    """Mean silhouette (Rousseeuw, 1987) of ``x`` grouped by ``labels`` (scikit-learn).

    ``s_i = (b_i - a_i) / max(a_i, b_i)`` with ``a_i`` the mean distance to its own group and
    ``b_i`` the smallest mean distance to another group; near 1: tight separate groups,
    near 0: overlapping, negative: points sit closer to another group.
    """
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    k = len(np.unique(labels))
    if not 2 <= k <= len(labels) - 1:
        raise ValueError(f"silhouette_by: need 2 <= groups <= N - 1, got {k} groups of "
                         f"{len(labels)} points")
    return float(silhouette_score(np.asarray(x, dtype=np.float64), labels, metric=metric))


def invariance(x: np.ndarray, modality, label, k: int = 10) -> dict[str, float]:
    """The three numbers of notebook 06 for one embedding.

    Returns ``{"mixing": modality_mixing, "sil_class": silhouette by class,
    "sil_modality": silhouette by modality, "n": N}``. A modality-invariant, discriminative
    embedding has mixing near 1, a high class silhouette and a modality silhouette near 0.
    """
    return {"mixing": modality_mixing(x, modality, k), "sil_class": silhouette_by(x, label),
            "sil_modality": silhouette_by(x, modality), "n": float(len(x))}


def embedding_figure(xy: np.ndarray, label, modality, class_names: list[str],
                     title: str = "", hover=None) -> go.Figure:
    """Two scatter panels of a 2-D layout: coloured by class (left) and by modality (right).

    Marker symbol = modality in both panels (circle WLI, diamond NBI).
    """
    label, modality = np.asarray(label), np.asarray(modality)
    hover = np.asarray(hover) if hover is not None else np.array(
        [f"{class_names[int(c)]}, {m}" for c, m in zip(label, modality, strict=True)])
    fig = make_subplots(rows=1, cols=2, subplot_titles=("coloured by class",
                                                        "coloured by modality"))
    symbols = {"WLI": "circle", "NBI": "diamond"}
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
    mod_colour = {"WLI": "#e377c2", "NBI": "#17becf"}
    for c, name in enumerate(class_names):
        for m in np.unique(modality):
            sel = (label == c) & (modality == m)
            if sel.any():
                fig.add_scatter(x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=f"{name} {m}",
                                legendgroup="class", text=hover[sel], hoverinfo="text",
                                marker={"color": palette[c % len(palette)],
                                        "symbol": symbols.get(str(m), "circle"), "size": 7,
                                        "opacity": 0.8}, row=1, col=1)
    for m in np.unique(modality):
        sel = modality == m
        fig.add_scatter(x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=str(m),
                        legendgroup="modality", text=hover[sel], hoverinfo="text",
                        marker={"color": mod_colour.get(str(m), "#7f7f7f"),
                                "symbol": symbols.get(str(m), "circle"), "size": 7,
                                "opacity": 0.8}, row=1, col=2)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_layout(title=title or None, height=420, margin={"t": 70, "b": 20})
    return fig
