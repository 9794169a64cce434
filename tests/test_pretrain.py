"""SimCLR pretraining (pagkd_lite.models.pretrain), its cached checkpoint and ``model.init=ssl``,
on the smoke preset."""

import dataclasses
import shutil

import pytest
import torch

from pagkd_lite.apps.cli import main
from pagkd_lite.config import key_dict, override, smoke
from pagkd_lite.errors import CheckpointError
from pagkd_lite.method.reference import nt_xent_loop
from pagkd_lite.models import pretrain
from pagkd_lite.models.pretrain import PretrainConfig, augment, nt_xent
from pagkd_lite.training import pipeline
from pagkd_lite.training.checkpoint import load_checkpoint

TRAIN_KEYS = ("wli_train", "nbi_train")


@pytest.fixture(scope="module")
def cfg():
    return override(smoke(), ["device=cpu", "teacher.epochs=1"])


@pytest.fixture(scope="module")
def sets(cfg):
    return pipeline.make_data(cfg)


class TrainOnly(dict):
    """The splits of a run, but reading any split other than the two training sets fails."""

    def __getitem__(self, key):
        if key not in TRAIN_KEYS:
            raise AssertionError(f"SSL pretraining read sets[{key!r}]")
        return super().__getitem__(key)


def test_nt_xent_matches_the_loop_in_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    for tau in (0.1, 0.5, 2.0):
        fast, slow = nt_xent(z1, z2, tau), nt_xent_loop(z1, z2, tau)
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=0)
        g_fast = torch.autograd.grad(fast, (z1, z2))
        g_slow = torch.autograd.grad(slow, (z1, z2))
        for a, b in zip(g_fast, g_slow, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-12)


def test_nt_xent_is_low_when_the_views_agree_and_the_images_differ():
    z = torch.eye(4, dtype=torch.float64) * 10
    noise = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert nt_xent(z, z, 0.1) < 1e-3 < nt_xent(z, noise, 0.1)


def test_augment_gives_other_views_in_range_and_is_seeded():
    x = torch.rand(6, 3, 16, 16)
    pc = PretrainConfig()
    a = augment(x, pc, torch.Generator().manual_seed(0))
    b = augment(x, pc, torch.Generator().manual_seed(0))
    c = augment(x, pc, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    # no crop, no jitter: a view is one of the 8 rotations / flips of the image, exactly
    plain = dataclasses.replace(pc, crop_scale=1.0, color_jitter=0.0)
    v = augment(x, plain, torch.Generator().manual_seed(2))
    for i in range(len(x)):
        turns = [torch.rot90(f, k, dims=(1, 2)) for f in (x[i], x[i].flip(2)) for k in range(4)]
        assert min(float((v[i] - t).abs().max()) for t in turns) < 1e-5


@pytest.mark.parametrize("item, message", [
    ("pretrain.temperature=0", "PretrainConfig.temperature must be > 0"),
    ("pretrain.batch_size=1", "PretrainConfig.batch_size must be >= 2"),
    ("pretrain.crop_scale=0", "PretrainConfig.crop_scale"),
    ("model.init=bogus", "ModelConfig.init must be one of"),
])
def test_bad_settings_are_named(item, message):
    with pytest.raises(ValueError, match=message):
        override(smoke(), [item])


def test_pretraining_runs_and_leaves_the_global_random_state(cfg, sets):
    state = torch.random.get_rng_state()
    res = pretrain.pretrain(cfg.model, sets["wli_train"].images, sets["nbi_train"].images,
                            dataclasses.replace(cfg.pretrain, epochs=2), progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert len(res.history) == 2
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in res.history)
    assert res.n_images == {"wli_train": len(sets["wli_train"]),
                            "nbi_train": len(sets["nbi_train"])}


def test_checkpoint_is_cached_safe_and_reads_only_the_training_images(cfg, sets, tmp_path,
                                                                       monkeypatch):
    only = TrainOnly(sets)
    state, info = pipeline.pretrained_backbone(cfg, only, tmp_path, progress=False)
    assert not info["loaded"] and info["path"] == tmp_path / f"ssl-{info['key']}.pt"
    ck = load_checkpoint(info["path"], required=("backbone", "provenance"))  # weights_only
    prov = ck["provenance"]
    assert prov["splits"] == {"wli_train": len(sets["wli_train"]),
                              "nbi_train": len(sets["nbi_train"])}
    assert prov["data"]["source"] == "synthendo" and "torch" in prov["runtime"]
    assert ck["pretrain"] == dataclasses.asdict(cfg.pretrain)
    for k, v in state.items():
        assert torch.equal(ck["backbone"][k], v)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(pipeline, "pretrain", no_training)
    again, info2 = pipeline.pretrained_backbone(cfg, only, tmp_path, progress=False)
    assert info2["loaded"] and info2["final_loss"] == info["final_loss"]
    assert all(torch.equal(again[k], state[k]) for k in state)


def test_checkpoint_from_other_data_or_backbone_is_refused(cfg, sets, tmp_path):
    _, info = pipeline.pretrained_backbone(cfg, sets, tmp_path, progress=False)
    other = override(cfg, ["data.seed=1"])
    other_sets = pipeline.make_data(other)
    target = tmp_path / f"ssl-{pipeline.ssl_key(other, other_sets)}.pt"
    shutil.copy(info["path"], target)  # a file under the other data's name
    with pytest.raises(CheckpointError, match="data config"):
        pipeline.pretrained_backbone(other, other_sets, tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="feature_index"):
        pipeline.load_ssl_checkpoint(info["path"], override(cfg, ["model.feature_index=-1"]),
                                     sets)
    fewer = {**sets, "nbi_train": sets["nbi_train"].subset(torch.arange(40))}
    with pytest.raises(CheckpointError, match="other training images"):
        pipeline.load_ssl_checkpoint(info["path"], cfg, fewer)


def test_ssl_init_starts_from_the_checkpoint_and_scratch_keeps_its_keys(cfg, sets, tmp_path):
    ssl = override(cfg, ["model.init=ssl"])
    model = pipeline.build_classifier(ssl, TrainOnly(sets), 3, ssl_dir=tmp_path,
                                      progress=False)
    ck = load_checkpoint(tmp_path / f"ssl-{pipeline.ssl_key(ssl, sets)}.pt")
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, ck["backbone"][k]), k
    # scratch: the same draw as before model.init existed (seed, then Classifier)
    scratch = pipeline.build_classifier(cfg, sets, 3)
    pipeline.seed_everything(cfg.seed)
    plain = pipeline.Classifier(cfg.model, 3)
    for a, b in zip(scratch.state_dict().values(), plain.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert "pretrain" not in key_dict(cfg) and "init" not in key_dict(cfg)["model"]
    assert key_dict(ssl)["model"]["init"] == "ssl" and "pretrain" in key_dict(ssl)


def test_ssl_teacher_has_its_own_cache_and_shares_the_backbone(cfg, sets, tmp_path):
    ssl = override(cfg, ["model.init=ssl"])
    _, scratch = pipeline.train_teacher(cfg, sets, out_dir=tmp_path, progress=False)
    teacher, info = pipeline.train_teacher(ssl, sets, out_dir=tmp_path, progress=False)
    assert info["key"] != scratch["key"] and not info["loaded"]
    assert (tmp_path / f"ssl-{pipeline.ssl_key(ssl, sets)}.pt").exists()
    # another pretrain budget is another SSL backbone, so another teacher
    more = override(ssl, ["pretrain.steps_per_epoch=3"])
    assert pipeline.ssl_key(more, sets) != pipeline.ssl_key(ssl, sets)
    _, again = pipeline.train_teacher(ssl, sets, out_dir=tmp_path, progress=False)
    assert again["loaded"] and again["key"] == info["key"]


def test_cli_pretrain(tmp_path, capsys):
    args = ["pretrain", "--preset", "smoke", "--quiet", "--out", str(tmp_path), "--threads", "1"]
    assert main(args) == 0
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("ssl backbone (test_resnet): trained") == 1
    assert out.count("ssl backbone (test_resnet): loaded") == 1
    assert "final NT-Xent loss" in out
    assert len(list(tmp_path.glob("ssl-*.pt"))) == 1 and str(tmp_path / "ssl-") in out
