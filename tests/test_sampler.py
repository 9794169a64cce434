import pytest
import torch

from pagkd_lite.data.sampler import GroupSampler


def labels_of(counts):
    return torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])


def test_same_composition_and_no_pairing_ties():
    w, n = labels_of([30, 20, 10]), labels_of([5, 40, 15])
    s = GroupSampler(w, n, batch_size=12, seed=0)
    for step in s.epoch():
        assert torch.equal(w[step.wli], step.labels)
        assert torch.equal(n[step.nbi], step.labels)
        assert torch.bincount(step.labels, minlength=3).tolist() == [4, 4, 4]
        # no image drawn twice within a step of one modality (pools are large enough)
        assert len(set(step.wli.tolist())) == 12
        assert len(set(step.nbi.tolist())) == 12


def test_remainder_rotates_and_sizes_are_balanced():
    w = labels_of([10, 10, 10])
    s = GroupSampler(w, w, batch_size=10, steps_per_epoch=30, seed=1)
    totals = torch.zeros(3)
    for step in s.epoch():
        counts = torch.bincount(step.labels, minlength=3)
        assert counts.sum() == 10 and counts.max() - counts.min() <= 1
        totals += counts
    assert totals.max() - totals.min() < 30  # each class gets the extra image some of the time


def test_imbalance_is_resampled():
    """A minority class is drawn as often as the majority: its pool is cycled."""
    w = labels_of([100, 6])
    s = GroupSampler(w, labels_of([6, 100]), batch_size=8, steps_per_epoch=20, seed=2)
    seen = torch.zeros(106)
    for step in s.epoch():
        seen.index_add_(0, step.wli, torch.ones(len(step.wli)))
    assert seen[100:].min() >= 10  # every minority image revisited many times
    # each pass over a pool is a permutation: counts of minority images differ by at most 1
    assert seen[100:].max() - seen[100:].min() <= 1


def test_deterministic_from_seed_and_different_across_seeds():
    w, n = labels_of([9, 9]), labels_of([7, 11])
    a = [(s.wli.tolist(), s.nbi.tolist()) for s in GroupSampler(w, n, 6, seed=3).epoch()]
    b = [(s.wli.tolist(), s.nbi.tolist()) for s in GroupSampler(w, n, 6, seed=3).epoch()]
    c = [(s.wli.tolist(), s.nbi.tolist()) for s in GroupSampler(w, n, 6, seed=4).epoch()]
    assert a == b and a != c


def test_wli_stream_independent_of_nbi_set():
    """Methods compared on one seed see the same WLI batches whatever the NBI set is."""
    w = labels_of([9, 9])
    a = [s.wli.tolist() for s in GroupSampler(w, labels_of([3, 3]), 6, seed=5).epoch()]
    b = [s.wli.tolist() for s in GroupSampler(w, labels_of([30, 8]), 6, seed=5).epoch()]
    assert a == b


def test_missing_class_in_one_modality_is_a_clear_error():
    with pytest.raises(ValueError, match="'polyp'.*no NBI"):
        GroupSampler(labels_of([4, 4]), labels_of([4, 0]), 4, num_classes=2,
                     class_names=["normal", "polyp"])


def test_batch_smaller_than_classes_rejected():
    with pytest.raises(ValueError, match="batch_size 2"):
        GroupSampler(labels_of([4, 4, 4]), labels_of([4, 4, 4]), 2)


def test_ranks_share_composition_not_images():
    w, n = labels_of([40, 40]), labels_of([40, 40])
    r0 = GroupSampler(w, n, 8, seed=0, rank=0, world_size=2).step()
    r1 = GroupSampler(w, n, 8, seed=0, rank=1, world_size=2).step()
    assert torch.equal(torch.bincount(r0.labels), torch.bincount(r1.labels))
    assert r0.wli.tolist() != r1.wli.tolist()


def test_authors_pool_keeps_min_count_images_per_class_and_modality():
    """``pool="authors"``: each epoch draws from ``n_c = min(#WLI_c, #NBI_c)`` images of each
    modality and class (a random subset, the same on every rank, another one next epoch);
    ``"all"`` is the sampler it always was."""
    from pagkd_lite.data.sampler import GroupConfig

    w, n = labels_of([4, 6, 5]), labels_of([10, 3, 5])
    s = GroupSampler(w, n, batch_size=9, steps_per_epoch=20, seed=4, pool="authors")
    pools_w, pools_n = s.pools
    assert [len(p) for p in pools_w] == [len(p) for p in pools_n] == [4, 3, 5]
    used_w, used_n = set(), set()
    for step in s.epoch():
        assert torch.equal(w[step.wli], step.labels) and torch.equal(n[step.nbi], step.labels)
        used_w |= set(step.wli.tolist())
        used_n |= set(step.nbi.tolist())
    assert used_w == set(torch.cat(pools_w).tolist())
    assert used_n == set(torch.cat(pools_n).tolist())
    assert len(used_w) == 12 < len(w) and len(used_n) == 12 < len(n)
    other_rank = GroupSampler(w, n, batch_size=9, seed=4, pool="authors", rank=1, world_size=2)
    assert all(torch.equal(a, b) for a, b in zip(other_rank.pools[0], pools_w, strict=True))
    later = [GroupSampler(w, n, 9, seed=e, pool="authors").pools[1][0] for e in range(5, 9)]
    assert any(not torch.equal(p, pools_n[0]) for p in later)
    plain, default = GroupSampler(w, n, 9, seed=4), GroupSampler(w, n, 9, seed=4, pool="all")
    for a, b in zip(plain.epoch(), default.epoch(), strict=True):
        assert torch.equal(a.wli, b.wli) and torch.equal(a.nbi, b.nbi)
    with pytest.raises(ValueError, match="pool must be one of"):
        GroupSampler(w, n, 9, pool="couples")
    with pytest.raises(ValueError, match="GroupConfig.pool must be one of"):
        GroupConfig(pool="couples")
