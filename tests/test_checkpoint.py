import pytest
import torch

from pagkd_lite.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_round_trip(tmp_path):
    state = {"w": torch.arange(4.0), "epoch": 3, "history": [{"auc": 0.5}], "name": "x"}
    path = save_checkpoint(tmp_path / "a" / "ck.pt", state)
    back = load_checkpoint(path, required=("w", "epoch"))
    assert torch.equal(back["w"], state["w"]) and back["history"] == state["history"]
    assert not list(path.parent.glob("*.tmp"))  # the temporary file is gone


def test_foreign_checkpoint_is_refused(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="not a pagkd_lite checkpoint"):
        load_checkpoint(path)


class Pickled:  # an arbitrary object: weights_only loading must refuse it
    pass


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "pagkd_lite/1", "obj": Pickled()}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(path)


def test_missing_file_and_keys(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nope.pt")
    path = save_checkpoint(tmp_path / "ck.pt", {"a": 1})
    with pytest.raises(CheckpointError, match="missing \\['b'\\]"):
        load_checkpoint(path, required=("a", "b"))


@pytest.mark.parametrize("make, match", [
    (lambda p: p.write_bytes(b""), "empty file (0 bytes), not a checkpoint"),
    (lambda p: p.write_text("epoch,auc\n1,0.5\n"), "not a checkpoint (a text file)"),
    (lambda p: p.mkdir(), "is a folder, not a checkpoint file"),
])
def test_not_a_checkpoint_is_said_plainly(tmp_path, make, match):
    path = tmp_path / "ck.pt"
    make(path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, what="--checkpoint")
    assert str(info.value).startswith(f"--checkpoint {path}: {match}")
    assert "EOFError" not in str(info.value) and "no such file" not in str(info.value)
