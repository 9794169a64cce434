"""Class mode: the cache loads what it trained, and never a stale model."""

import json

import pytest
import torch

from pagkd_lite.apps.cli import main
from pagkd_lite.config import override, smoke
from pagkd_lite.course import class_mode
from pagkd_lite.training import pipeline


@pytest.fixture
def cfg():
    return override(smoke(), ["train.epochs=1", "device=cpu"])


def test_second_open_loads_what_the_first_trained(cfg, tmp_path, capsys):
    first = class_mode.open_course(cfg, tmp_path, progress=False)
    d1, r1 = first.student("wli_only")
    second = class_mode.open_course(cfg, tmp_path, progress=False)
    d2, r2 = second.student("wli_only")
    assert first.log[0].startswith("teacher: trained")
    assert second.log[0].startswith("teacher: loaded")
    assert first.log[1].startswith("wli_only: trained")
    assert second.log[1].startswith("wli_only: loaded")
    assert second.folder == first.folder and r2.best_val_auc == r1.best_val_auc
    for a, b in zip(d1.trainable_state_dict().values(), d2.trainable_state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)


def test_key_follows_config_and_generator(cfg, tmp_path, monkeypatch):
    base = class_mode.run_dir(cfg, tmp_path)
    assert class_mode.run_dir(override(cfg, ["train.lr=0.002"]), tmp_path) != base
    monkeypatch.setattr(class_mode, "GENERATOR_VERSION", "another-one")
    assert class_mode.run_dir(cfg, tmp_path) != base
    assert class_mode.cache_key(cfg)["generator_version"] == "another-one"


def test_teacher_key_includes_generator_version(cfg, tmp_path, monkeypatch):
    sets = pipeline.make_data(cfg)
    _, a = pipeline.train_teacher(cfg, sets, out_dir=tmp_path, progress=False)
    monkeypatch.setattr(pipeline, "GENERATOR_VERSION", "another-one")
    _, b = pipeline.train_teacher(cfg, sets, out_dir=tmp_path, progress=False)
    assert a["key"] != b["key"] and not a["loaded"] and not b["loaded"]


def test_stale_folder_is_retrained_not_used(cfg, tmp_path, capsys):
    c = class_mode.open_course(cfg, tmp_path, progress=False)
    stamp = c.folder / "key.json"
    old = json.loads(stamp.read_text())
    stamp.write_text(json.dumps({**old, "generator_version": "older"}))
    c2 = class_mode.open_course(cfg, tmp_path, progress=False)
    out = capsys.readouterr().out
    assert "stale cache" in out and c2.log[0].startswith("teacher: trained")
    assert json.loads(stamp.read_text()) == old


def test_cli_cache(tmp_path, capsys):
    args = ["cache", "--preset", "smoke", "--quiet", "--out", str(tmp_path), "--set",
            "train.epochs=1", "--methods", "wli_only", "pagkd"]
    assert main(args) == 0
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("pagkd: trained") == 1 and out.count("pagkd: loaded") == 1
    assert out.count("UMAP kernels compiled for notebook 06") == 2
    # the SSL backbone of the data (for --set model.init=ssl) sits at the root, once
    assert out.count("ssl backbone: trained") == 1 and out.count("ssl backbone: loaded") == 1
    assert len(list(tmp_path.glob("ssl-*.pt"))) == 1


def test_an_interrupted_student_resumes_and_ends_as_an_uninterrupted_one(cfg, tmp_path,
                                                                         monkeypatch):
    """make cache stopped mid-student (Ctrl-C after its first epoch) continues from that
    student's last.pt, and ends with the weights of a run that was never stopped."""
    from pagkd_lite.training import train as train_module

    cfg = override(cfg, ["train.epochs=2", "train.warmup_epochs=0"])
    whole, _ = class_mode.open_course(cfg, tmp_path / "whole", progress=False).student(
        "wli_only")
    real = train_module._train_epoch

    def stop_at_second_epoch(*args, **kwargs):
        if args[7] == 1:  # the epoch argument
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "_train_epoch", stop_at_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        class_mode.open_course(cfg, tmp_path / "cut", progress=False).student("wli_only")
    trained_epochs = []

    def count(*args, **kwargs):
        trained_epochs.append(args[7])
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "_train_epoch", count)
    again = class_mode.open_course(cfg, tmp_path / "cut", progress=False)
    resumed, result = again.student("wli_only")
    assert again.log[1].startswith("wli_only: resumed")
    assert trained_epochs == [1]  # the first epoch came from last.pt, not trained again
    assert [h["epoch"] for h in result.history] == [0, 1]
    for a, b in zip(whole.trainable_state_dict().values(),
                    resumed.trainable_state_dict().values(), strict=True):
        assert torch.equal(a, b)
