import os
import subprocess
import sys

import pytest
import torch

from pagkd_lite.models.classifier import Classifier, ModelConfig, freeze

# Three timm families (ResNet, ConvNeXt, EfficientNet) plus a ViT: timm's tiny test models.
BACKBONES = ["test_resnet", "test_convnext", "test_efficientnet", "test_vit"]


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("k", [2, 3])
def test_shapes_and_finite(name, k):
    torch.manual_seed(0)
    model = Classifier(ModelConfig(backbone=name, dim=16), num_classes=k)
    out = model(torch.randn(2, 3, 64, 64))
    b, c, h, w = out.features.shape
    assert out.logits.shape == (2, k)
    assert c == model.feature_channels and h == 64 // model.reduction
    assert out.tokens.shape == (2, h * w, 16)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.tokens).all()
    # the tokens pooled and passed through fc give the logits (the head is what it says)
    assert torch.allclose(model.fc(out.tokens.mean(1)), out.logits, atol=1e-5)


def test_feature_index_picks_an_earlier_stage():
    last = Classifier(ModelConfig(backbone="test_resnet", dim=8), 2)
    earlier = Classifier(ModelConfig(backbone="test_resnet", dim=8, feature_index=-2), 2)
    assert earlier.reduction == last.reduction // 2


def test_freeze_teacher():
    t = freeze(Classifier(ModelConfig(backbone="test_resnet", dim=8), 2).train())
    assert not t.training and not any(p.requires_grad for p in t.parameters())


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="no model named 'resnet_nope'"):
        ModelConfig(backbone="resnet_nope")
    with pytest.raises(ValueError, match="dim"):
        ModelConfig(dim=0)
    with pytest.raises(ValueError, match="num_classes"):
        Classifier(ModelConfig(backbone="test_resnet"), 1)


def test_pretrained_without_hub_fails_clearly():
    """Real loading path with the hub switched off (a fresh process reads HF_HUB_OFFLINE)."""
    code = (
        "from pagkd_lite.models.classifier import Classifier, ModelConfig\n"
        "Classifier(ModelConfig(backbone='test_resnet', pretrained=True), 2)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode != 0
    assert "Could not load pretrained weights for 'test_resnet'" in res.stderr
    assert "pretrained=False" in res.stderr
