"""Same command, same seed, same thread count: bit-identical weights (docs/results.md,
"Reproducibility"). Two epochs of the smoke preset are trained twice in one process at
one CPU thread, for the WLI-only student and for PaGKD (teacher, CAM labels, both GKD
modules), and every tensor of the two state dicts must be equal, not close."""

from __future__ import annotations

import pytest
import torch

from pagkd_lite.config import override, smoke
from pagkd_lite.training.pipeline import make_data, train_student, train_teacher


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("method", ["wli_only", "pagkd"])
def test_two_epochs_twice_give_identical_weights(one_thread, method):
    cfg = override(smoke(), ["train.epochs=2", "device=cpu"])
    sets = make_data(cfg)
    teacher = None
    if method == "pagkd":
        teacher, _ = train_teacher(cfg, sets, out_dir=None, progress=False, cache=False)
    runs = [train_student(cfg, sets, method, teacher, out_dir=None, progress=False)
            for _ in range(2)]
    (a, ra), (b, rb) = runs
    assert len(ra.history) == len(rb.history) == 2
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and sa
    for name, tensor in sa.items():
        assert torch.equal(tensor, sb[name]), f"{method}: {name} differs between two runs"
    assert [h["val_auc"] for h in ra.history] == [h["val_auc"] for h in rb.history]
