import re

import pytest

from pagkd_lite.config import PRESETS, from_dict, get_preset, override, to_dict


def test_presets_build_and_round_trip():
    for name in PRESETS:
        cfg = get_preset(name)
        assert from_dict(to_dict(cfg)) == cfg


def test_paper_preset_is_the_papers_setting():
    p = get_preset("paper")
    assert (p.model.backbone, p.data.image_size, p.model.dim) == ("resnet50", 448, 128)
    assert (p.pro.num_queries, p.pro.num_heads, p.train.batch_size) == (12, 16, 24)
    assert (p.train.lr, p.train.weight_decay, p.train.epochs) == (1e-4, 1e-8, 200)
    assert (p.train.lambda_den, p.train.lambda_pro, p.train.warmup_epochs) == (1.0, 0.001, 5)


def test_override_any_field_by_type():
    cfg = override(get_preset("smoke"), ["train.epochs=7", "model.backbone=resnet18",
                                         "den.scale=true", "train.lr=0.01", "seed=3",
                                         "data.wli_contrast=0.5"])
    assert cfg.train.epochs == 7 and cfg.model.backbone == "resnet18" and cfg.den.scale is True
    assert cfg.train.lr == 0.01 and cfg.seed == 3 and cfg.data.wli_contrast == 0.5
    assert get_preset("smoke").train.epochs != 7  # the preset itself is untouched


@pytest.mark.parametrize("item, message", [
    ("train.epochz=3", "no field 'epochz'"),
    ("nope.x=1", "'nope' is not a section"),
    ("train.epochs=three", "expected int"),
    ("train.epochs=0", "epochs must be >= 1"),
    ("den.scale=maybe", "expected a boolean"),
    ("train.epochs", "expected NAME=VALUE"),
    ("model.backbone=resnet_nope", "no model named"),
])
def test_bad_values_are_named(item, message):
    with pytest.raises(ValueError, match=message):
        override(get_preset("smoke"), [item])


def test_token_label_settings_have_their_own_section():
    """labels.* is where the CAM -> token-label settings live; the names they had inside den
    give an error that says where they went, and a config written before (a checkpoint's,
    with them inside den) still reads, with its values."""
    cfg = override(get_preset("smoke"), ["labels.par_iters=3", "labels.rule=authors"])
    assert (cfg.labels.par_iters, cfg.labels.rule) == (3, "authors")
    with pytest.raises(ValueError, match=r"own section; write labels.par_iters=0"):
        override(get_preset("smoke"), ["den.par_iters=0"])
    with pytest.raises(ValueError, match=r"write labels.rule=authors"):
        override(get_preset("smoke"), ["den.label_rule=authors"])
    old = to_dict(get_preset("demo"))
    labels = old.pop("labels")
    old["den"].update(high=0.6, low=labels["low"], par_iters=labels["par_iters"],
                      par_scale=labels["par_scale"], par_dilations=[1, 2],
                      label_rule=labels["rule"])
    read = from_dict(old)
    assert read.labels.high == 0.6 and read.labels.par_dilations == (1, 2)
    assert read.labels.par_iters == get_preset("demo").labels.par_iters == 0


def test_token_width_is_set_once_and_checked_against_the_heads():
    """GKD-Pro's width is the student's token width, model.dim; pro.dim is gone, and a
    width that pro.num_heads does not divide fails when the config is built."""
    from pagkd_lite.config import Config
    from pagkd_lite.method.gkd_pro import GKDProConfig
    from pagkd_lite.models.classifier import ModelConfig

    with pytest.raises(ValueError, match=r"pro.num_heads=4 must divide the token width "
                                         r"model.dim=18"):
        Config(model=ModelConfig(dim=18), pro=GKDProConfig(num_heads=4))
    assert override(get_preset("smoke"), ["model.dim=16", "seed=2"]).model.dim == 16
    with pytest.raises(ValueError, match=r"token width; write model.dim=16"):
        override(get_preset("smoke"), ["pro.dim=16"])
    old = to_dict(get_preset("smoke"))
    old["pro"]["dim"] = old["model"]["dim"]  # as configs were stored before 2026-12-03
    assert from_dict(old) == get_preset("smoke")


def test_build_config_applies_seed_device_and_overrides_to_a_preset_or_config():
    from pagkd_lite.config import build_config

    cfg = build_config("smoke", ["train.epochs=3"], seed=5, device="cpu")
    assert (cfg.train.epochs, cfg.seed, cfg.data.seed, cfg.device) == (3, 5, 5, "cpu")
    again = build_config(cfg, ["bootstrap=9"])
    assert (again.train.epochs, again.bootstrap, cfg.bootstrap) == (3, 9, 200)


def test_new_fields_are_keyed_only_when_set():
    """The fidelity switches leave the cache key of a run at their defaults as it was; set,
    each is hashed (the ``labels`` ones inside ``den``, the ``groups`` section as a whole)."""
    from pagkd_lite.config import key_dict

    base = get_preset("demo")
    d = key_dict(base)
    assert "groups" not in d and "labels" not in d
    assert not {"input_norm", "input_rotate"} & set(d["model"])
    assert not {"label_source", "label_flip_rate", "label_par_align_corners"} & set(d["den"])
    for item, where, name in (("model.input_norm=none", "model", "input_norm"),
                              ("model.input_rotate=expand", "model", "input_rotate"),
                              ("labels.par_align_corners=true", "den", "label_par_align_corners"),
                              ("labels.source=mask", "den", "label_source"),
                              ("labels.flip_rate=0.1", "den", "label_flip_rate")):
        assert name in key_dict(override(base, [item]))[where], item
    assert key_dict(override(base, ["groups.pool=authors"]))["groups"] == {"pool": "authors"}


def test_a_set_that_a_method_would_replace_is_refused_naming_field_method_and_value():
    from pagkd_lite.config import check_method_overrides
    from pagkd_lite.errors import ConfigError

    for item in ("den.two_way=false", "train.lambda_den=0.5", "den.center=true",
                 "train.lambda_ramp_epochs=5", "model.input_norm=imagenet",
                 "groups.pool=all", "labels.par_align_corners=false"):
        field, value = item.split("=")
        with pytest.raises(ConfigError, match=rf"--set {re.escape(item)}: method "
                                              rf"'pagkd_authors' runs with {field}="):
            check_method_overrides(["pagkd_authors"], [item])
    # the same value, in any spelling, passes; so do the fields no method fixes
    check_method_overrides(["pagkd_authors"], ["den.two_way=1", "train.lambda_pro=1e-3",
                                               "labels.par_dilations=1, 2, 4, 8",
                                               "train.epochs=3", "seed=4"])
    # bench: one set of values for all methods; the one that fixes the field is named
    with pytest.raises(ConfigError, match="--sweep den.target=adapted: method "
                                          "'pagkd_frozen_target'"):
        check_method_overrides(["wli_only", "pagkd_frozen_target"], ["den.target=adapted"],
                               flag="--sweep")
    # the label dose-response stays allowed
    check_method_overrides(["pagkd_frozen_target"], ["labels.source=mask",
                                                     "labels.flip_rate=0.2"])
    check_method_overrides(["oracle_masks", "pagkd", "not_a_method"], ["labels.flip_rate=0.2"])
