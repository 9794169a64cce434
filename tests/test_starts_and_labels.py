"""The switches of the frozen-target study (docs/results.md): where the student starts
(``model.student_init``), how the token embedding is drawn (``model.embed_init``), and where
GKD-Den's token labels come from and how many are wrong (``labels.source``,
``labels.flip_rate``). Each test checks the behaviour its docstring states."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pagkd_lite.config import key_dict, override, smoke
from pagkd_lite.data.synthendo import SynthEndoConfig, generate
from pagkd_lite.method.cam import TokenLabelConfig, flip_labels, token_labels
from pagkd_lite.method.distill import build_distiller
from pagkd_lite.models.classifier import Classifier, ModelConfig
from pagkd_lite.training import pipeline
from pagkd_lite.training.mechanism import make_probe
from pagkd_lite.training.train import FitResult

SMALL = dict(image_size=64, n_wli_train=12, n_nbi_train=12, n_wli_val=9, n_nbi_val=9,
             n_wli_test=6, n_nbi_test=6)


@pytest.fixture(scope="module")
def sets():
    return generate(SynthEndoConfig(**SMALL, seed=3))


def _cfg(*settings):
    cfg = smoke()
    cfg = dataclasses.replace(
        cfg, data=SynthEndoConfig(**SMALL, seed=3),
        model=ModelConfig(backbone="test_resnet", dim=16, feature_index=-2),
        pro=dataclasses.replace(cfg.pro, num_queries=3, num_heads=2))
    return override(cfg, ["train.epochs=2", "train.steps_per_epoch=2", *settings])


# ------------------------------------------------------------------ model.embed_init
def test_kaiming_fan_out_draws_the_embedding_with_the_authors_std():
    """``kaiming_fan_out``: the 1x1 embedding's weight is normal with std sqrt(2 / d) (fan_out
    = d output channels x 1 x 1), the authors' ``ResNet.__init__`` loop; the default draws
    PyTorch's uniform init, std 1 / sqrt(3 C), several times smaller."""
    base = ModelConfig(backbone="resnet10t", dim=64, feature_index=-2)
    torch.manual_seed(0)
    default = Classifier(base, 3).embed.weight.detach()
    torch.manual_seed(0)
    authors = dataclasses.replace(base, embed_init="kaiming_fan_out")
    kaiming = Classifier(authors, 3).embed.weight.detach()
    c = default.shape[1]
    assert float(default.std()) == pytest.approx((1 / (3 * c)) ** 0.5, rel=0.05)
    assert float(kaiming.std()) == pytest.approx((2 / 64) ** 0.5, rel=0.05)
    assert float(kaiming.mean()) == pytest.approx(0.0, abs=0.01)
    assert float(kaiming.std()) / float(default.std()) > 4


def test_new_model_fields_refuse_unknown_values_and_keep_old_cache_keys():
    with pytest.raises(ValueError, match="embed_init"):
        ModelConfig(embed_init="xavier")
    with pytest.raises(ValueError, match="student_init"):
        ModelConfig(student_init="teacher")
    cfg = _cfg()
    assert "embed_init" not in key_dict(cfg)["model"]
    assert "student_init" not in key_dict(cfg)["model"]
    changed = override(cfg, ["model.embed_init=kaiming_fan_out"])
    assert key_dict(changed)["model"]["embed_init"] == "kaiming_fan_out"


# ------------------------------------------------------------------ model.student_init
def test_student_init_wli_only_starts_from_the_trained_wli_only_student(sets, tmp_path,
                                                                        monkeypatch):
    """The distilled student's first step sees the weights of the trained ``wli_only``
    student of the same seed and data; that student is trained once and then read from the
    cache (same weights, same seconds), the rest of the distiller is drawn the same either
    way, its training time is added to the method's, and the teacher is not retrained."""
    cfg = _cfg("model.student_init=wli_only")
    scratch = _cfg()
    teacher, _ = pipeline.train_teacher(scratch, sets, out_dir=tmp_path, progress=False)
    wli, _ = pipeline.train_student(scratch, sets, "wli_only", progress=False)
    want = wli.student.state_dict()

    real_fit, starts = pipeline.fit, []

    def spy(distiller, *args, **kwargs):
        starts.append({k: v.clone() for k, v in distiller.trainable_state_dict().items()})
        return FitResult(best_epoch=0, best_val_auc=0.5, seconds=1.0)

    state, seconds = pipeline.raw_student(cfg, sets, tmp_path, progress=False)
    assert all(torch.equal(state[k], want[k]) for k in want)
    assert len(list(tmp_path.glob("raw-student-*.pt"))) == 1
    monkeypatch.setattr(pipeline, "fit", spy)
    for _ in range(2):  # the raw student is in the cache now: loaded, not trained
        teacher_used = pipeline.teacher_for(cfg, "pagkd", teacher, sets, out_dir=tmp_path,
                                            progress=False)
        assert teacher_used is teacher
        _, result = pipeline.train_student(cfg, sets, "pagkd", teacher, ssl_dir=tmp_path,
                                           progress=False)
        assert result.seconds == pytest.approx(1.0 + seconds)
    for k in want:
        assert torch.equal(starts[0][f"student.{k}"], want[k])
    assert all(torch.equal(starts[0][k], starts[1][k]) for k in starts[0])
    monkeypatch.setattr(pipeline, "fit", real_fit)
    _, plain = pipeline.train_student(scratch, sets, "pagkd", teacher, progress=False)
    assert plain.seconds < seconds + 60  # no raw student behind the default


def test_raw_student_cache_is_keyed_by_the_training_settings(sets, tmp_path):
    """Another student training budget is another raw student (another file)."""
    pipeline.raw_student(_cfg("model.student_init=wli_only"), sets, tmp_path, progress=False)
    pipeline.raw_student(_cfg("model.student_init=wli_only", "train.epochs=1"), sets,
                         tmp_path, progress=False)
    assert len(list(tmp_path.glob("raw-student-*.pt"))) == 2


# ------------------------------------------------------------------ labels
def test_flip_labels_flips_a_share_of_the_certain_labels_only():
    g = torch.Generator().manual_seed(0)
    lab = torch.randint(-1, 2, (200, 64), generator=g)
    assert flip_labels(lab, 0.0, g) is lab
    assert torch.equal(flip_labels(lab, 1.0, g)[lab >= 0], 1 - lab[lab >= 0])
    out = flip_labels(lab, 0.3, torch.Generator().manual_seed(1))
    again = flip_labels(lab, 0.3, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    assert torch.equal(out[lab < 0], lab[lab < 0])
    certain = lab >= 0
    share = float((out[certain] != lab[certain]).float().mean())
    assert share == pytest.approx(0.3, abs=0.02)


def test_label_settings_refuse_bad_values():
    with pytest.raises(ValueError, match="source"):
        TokenLabelConfig(source="teacher")
    with pytest.raises(ValueError, match="flip_rate"):
        TokenLabelConfig(flip_rate=1.5)


def _distiller(method, *settings):
    cfg = _cfg(*settings)
    torch.manual_seed(0)
    student, teacher = Classifier(cfg.model, 3), Classifier(cfg.model, 3)
    return build_distiller(method, student, teacher, cfg, 3)


def test_mask_source_gives_the_true_token_labels_and_flips_them_at_the_rate(sets):
    """``labels.source=mask``: the labels are the masks' (the same as ``oracle_masks``), no
    CAM is needed, the batch must carry masks; ``flip_rate`` then corrupts about that share
    of the certain ones, from the distiller's generator."""
    probe = make_probe(sets["wli_val"], sets["nbi_val"], torch.device("cpu"), per_class=3)
    d = _distiller("pagkd", "labels.source=mask")
    oracle = _distiller("oracle_masks")
    assert d.needs_masks and oracle.needs_masks
    assert not _distiller("pagkd").needs_masks
    with torch.no_grad():
        out = d.student(probe.x_w)
    hw = tuple(out.features.shape[-2:])
    true_w = token_labels(probe.mask_w[:, 0], hw)
    lab_w, lab_n = d.token_labels(probe, out, None)
    assert torch.equal(lab_w, true_w)
    o_w, o_n = oracle.token_labels(probe, out, None)
    assert torch.equal(o_w, lab_w) and torch.equal(o_n, lab_n)
    flipped = _distiller("pagkd_frozen_target", "labels.source=mask", "labels.flip_rate=1")
    f_w, f_n = flipped.token_labels(probe, out, None)
    assert torch.equal(f_w[true_w >= 0], 1 - true_w[true_w >= 0])
    assert torch.equal(f_w[true_w < 0], true_w[true_w < 0])


# ------------------------------------------------------------------ the mechanism log
def test_adapter_drift_is_the_relative_move_of_the_adapter_from_its_start(sets):
    """``adapter_drift`` = ||W - W_0|| / ||W_0||: 0 as drawn, the known value after a known
    move, and the same start for a distiller rebuilt from the same seed."""
    from pagkd_lite.training.mechanism import adapter_drift, mechanism_metrics

    d = _distiller("pagkd")
    assert adapter_drift(d) == 0.0
    assert torch.equal(d.adapter_start, _distiller("pagkd").adapter_start)
    with torch.no_grad():
        d.adapter.weight.mul_(1.5)
    assert adapter_drift(d) == pytest.approx(0.5, rel=1e-5)
    probe = make_probe(sets["wli_val"], sets["nbi_val"], torch.device("cpu"), per_class=2)
    assert mechanism_metrics(d, probe)["adapter_drift"] == pytest.approx(0.5, rel=1e-5)
