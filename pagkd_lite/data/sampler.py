"""Unpaired grouping: each step, a WLI batch and an NBI batch with the same class mix.

PaGKD never pairs images. A step draws, for every class c, the same number of WLI and NBI
images of class c; the images of class c and modality m form the group G_c^m (docs/method.md,
"Unpaired grouping"). No index of one modality is ever tied to an index of the other.

Class imbalance is handled by resampling: each (modality, class) pool is an endless
stream of reshuffled passes over that pool, so small classes are revisited more often and
every step has the balanced composition.

Which images form the pools (:class:`GroupConfig`, a run's ``groups`` section): every
training image (``pool = "all"``, the kit's), or, as the authors' ``utils/loader.py``
(``MultiModalImbalancedDataset.reset_pair_indices``) does, only ``n_c = min(#WLI_c, #NBI_c)``
images of each modality and class c, drawn anew every epoch (``pool = "authors"``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

#: which training images an epoch's groups are drawn from (:class:`GroupConfig`)
GROUP_POOLS = ("all", "authors")


@dataclass
class GroupConfig:
    """How the unpaired groups are drawn: the ``groups`` section of a run's config.

    Attributes:
        pool: :data:`GROUP_POOLS`. ``"all"`` (the kit's): every WLI and NBI training image
            of class c is in class c's pools. ``"authors"``: each epoch, a random subset of
            ``n_c = min(#WLI_c, #NBI_c)`` images per modality and class c (the same subset on
            every rank), as the authors' loader re-draws ``n_c`` couples per class each epoch;
            the images left out wait for a later epoch. Read by the training loop for the
            methods with unpaired NBI groups (``Distiller.group_pool``); the teacher and
            ``wli_only`` draw no groups and ignore it.
    """

    pool: str = "all"

    def __post_init__(self) -> None:
        if self.pool not in GROUP_POOLS:
            raise ValueError(f"GroupConfig.pool must be one of {GROUP_POOLS}, got {self.pool!r}")


@dataclass
class GroupStep:
    """Indices of one step: ``wli`` into the WLI set, ``nbi`` into the NBI set.

    ``labels`` is the class of each position; both index tensors follow it, so
    ``wli_labels[wli] == nbi_labels[nbi] == labels``. The positions carry no pairing:
    position i of ``wli`` and of ``nbi`` only share a class.
    """

    wli: torch.Tensor
    nbi: torch.Tensor
    labels: torch.Tensor


class _ClassStream:
    """Endless reshuffled passes over one pool of indices."""

    def __init__(self, pool: torch.Tensor, generator: torch.Generator) -> None:
        self.pool = pool
        self.gen = generator
        self.order = pool[torch.randperm(len(pool), generator=generator)]
        self.pos = 0

    def take(self, n: int) -> torch.Tensor:
        out = []
        while n > 0:
            if self.pos == len(self.order):
                order = self.pool[torch.randperm(len(self.pool), generator=self.gen)]
                if out:  # a new pass inside one step: images already taken go last,
                    taken = torch.isin(order, torch.cat(out))  # so no image repeats in a step
                    order = torch.cat([order[~taken], order[taken]])
                self.order, self.pos = order, 0
            k = min(n, len(self.order) - self.pos)
            out.append(self.order[self.pos : self.pos + k])
            self.pos += k
            n -= k
        return torch.cat(out)


class GroupSampler:
    """Yields :class:`GroupStep`s with the same class composition in both modalities.

    Args:
        wli_labels: (N_w,) labels of the WLI training set.
        nbi_labels: (N_n,) labels of the NBI training set.
        batch_size: images per modality per step (paper: 24). Split as evenly as possible
            over the classes; the classes that get the remainder rotate from step to step.
        steps_per_epoch: steps in one epoch (default: ceil(N_w / batch_size)).
        seed: the whole stream is a function of the seed.
        rank, world_size: distributed sharding. Each rank draws from its own stream
            (seeded by seed and rank) with the same class composition on every rank.
        pool: :data:`GROUP_POOLS` (:class:`GroupConfig`): ``"all"`` pools every image of a
            (modality, class); ``"authors"`` keeps ``n_c = min(#WLI_c, #NBI_c)`` of each, drawn
            from a generator seeded by ``seed`` alone (the same on every rank). With
            ``"all"`` no draw is made for it, so the stream is the one it always was.

    Raises:
        ValueError: a class has images in one modality and none in the other, naming it.
    """

    def __init__(
        self,
        wli_labels: torch.Tensor,
        nbi_labels: torch.Tensor,
        batch_size: int,
        num_classes: int | None = None,
        steps_per_epoch: int | None = None,
        seed: int = 0,
        class_names: list[str] | None = None,
        rank: int = 0,
        world_size: int = 1,
        pool: str = "all",
    ) -> None:
        wli_labels = torch.as_tensor(wli_labels, dtype=torch.long)
        nbi_labels = torch.as_tensor(nbi_labels, dtype=torch.long)
        k = num_classes or int(max(wli_labels.max(), nbi_labels.max())) + 1
        names = class_names or [str(c) for c in range(k)]
        if batch_size < k:
            raise ValueError(
                f"GroupSampler: batch_size {batch_size} is smaller than the number of classes {k}; "
                "every step needs at least one image per class and modality"
            )
        if pool not in GROUP_POOLS:
            raise ValueError(f"GroupSampler: pool must be one of {GROUP_POOLS}, got {pool!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"GroupSampler: rank {rank} outside world_size {world_size}")
        w_counts = torch.bincount(wli_labels, minlength=k)
        n_counts = torch.bincount(nbi_labels, minlength=k)
        for c in range(k):
            if w_counts[c] == 0 or n_counts[c] == 0:
                missing = "WLI" if w_counts[c] == 0 else "NBI"
                raise ValueError(
                    f"GroupSampler: class {names[c]!r} (label {c}) has no {missing} training "
                    "images "
                    f"(WLI: {int(w_counts[c])}, NBI: {int(n_counts[c])}); group distillation needs "
                    "every class in both modalities"
                )
        self.num_classes = k
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch or -(-len(wli_labels) // (batch_size * world_size))
        # Separate streams per modality: the WLI batches of a seed are the same whatever
        # the NBI set is, so methods compared on one seed see the same WLI images.
        gen_w = torch.Generator().manual_seed(seed * 1_000_003 + 2 * rank)
        gen_n = torch.Generator().manual_seed(seed * 1_000_003 + 2 * rank + 1)
        self.rotation = torch.Generator().manual_seed(seed)  # same on every rank
        pools_w = [(wli_labels == c).nonzero().flatten() for c in range(k)]
        pools_n = [(nbi_labels == c).nonzero().flatten() for c in range(k)]
        if pool == "authors":  # n_c = min(#WLI_c, #NBI_c) of each, the same on every rank
            pick = torch.Generator().manual_seed(seed * 1_000_003 + 1_000_002)
            n = [min(len(w), len(v)) for w, v in zip(pools_w, pools_n, strict=True)]
            for pools in (pools_w, pools_n):
                for c in range(k):
                    keep = torch.randperm(len(pools[c]), generator=pick)[:n[c]]
                    pools[c] = pools[c][keep].sort().values
        self.pools = (pools_w, pools_n)  # the (WLI, NBI) index pools of each class
        self.wli = [_ClassStream(p, gen_w) for p in pools_w]
        self.nbi = [_ClassStream(p, gen_n) for p in pools_n]

    def composition(self) -> list[int]:
        """Images per class for the next step: batch_size split evenly, remainder rotated."""
        base, extra = divmod(self.batch_size, self.num_classes)
        counts = [base] * self.num_classes
        for c in torch.randperm(self.num_classes, generator=self.rotation)[:extra].tolist():
            counts[c] += 1
        return counts

    def step(self) -> GroupStep:
        counts = self.composition()
        labels = torch.cat([torch.full((n,), c, dtype=torch.long) for c, n in enumerate(counts)])
        wli = torch.cat([self.wli[c].take(n) for c, n in enumerate(counts)])
        nbi = torch.cat([self.nbi[c].take(n) for c, n in enumerate(counts)])
        return GroupStep(wli=wli, nbi=nbi, labels=labels)

    def epoch(self) -> Iterator[GroupStep]:
        for _ in range(self.steps_per_epoch):
            yield self.step()

    def __iter__(self) -> Iterator[GroupStep]:
        return self.epoch()

    def __len__(self) -> int:
        return self.steps_per_epoch
