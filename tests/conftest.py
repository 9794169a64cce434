"""Shared fixtures: small random ImageSets, the golden loss values, the smallest PaGKD; and a
guard that no test leaves a global torch setting (thread count, default dtype) changed."""

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from pagkd_lite.config import smoke
from pagkd_lite.data.imageset import ImageSet
from pagkd_lite.method.distill import build_distiller
from pagkd_lite.models.classifier import Classifier, ModelConfig

torch.set_num_threads(2)  # the session's setting (2-core machines): timings comparable


def _global_state() -> dict:
    return {"threads": torch.get_num_threads(), "default_dtype": torch.get_default_dtype(),
            "grad_enabled": torch.is_grad_enabled()}


@pytest.fixture(autouse=True)
def _no_global_state_left_changed(request):
    """Every test leaves the thread count, the default dtype and grad mode as it found them
    (a module fixture that changes them for its tests restores them at its own teardown)."""
    before = _global_state()
    yield
    after = _global_state()
    assert after == before, f"{request.node.nodeid} changed global torch state: {before} -> {after}"


@pytest.fixture(scope="session", autouse=True)
def _decode_cache_in_tmp(tmp_path_factory):
    """``pagkd-lite cv`` keeps decoded images under ``$PAGKD_CACHE_DIR`` (default
    ``runs/decode-cache``): during tests, a temporary folder, never the working tree."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAGKD_CACHE_DIR", str(tmp_path_factory.mktemp("decode-cache")))
        yield


@pytest.fixture(scope="session", autouse=True)
def _session_state_unchanged():
    """The same check over the whole session (module- and session-scoped fixtures included)."""
    before = _global_state()
    yield
    after = _global_state()
    assert after == before, f"the test session changed global torch state: {before} -> {after}"


def random_set(n: int, k: int, modality: str, size: int = 32, seed: int = 0,
               counts: list[int] | None = None) -> ImageSet:
    """n random images with a class-dependent mean so that training can learn something."""
    g = torch.Generator().manual_seed(seed)
    if counts is None:
        labels = torch.arange(n) % k
    else:
        labels = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
        n = len(labels)
    base = torch.rand(n, 3, size, size, generator=g) * 120
    images = (base + labels.view(-1, 1, 1, 1) * 40).clamp(0, 255).to(torch.uint8)
    prefix = f"{modality}-{seed}"
    return ImageSet(images=images, labels=labels,
                    patient_ids=[f"{prefix}-p{i // 2}" for i in range(n)],
                    lesion_ids=[f"{prefix}-l{i}" for i in range(n)],
                    class_names=[f"c{i}" for i in range(k)], modality=modality)


@pytest.fixture
def tiny_sets():
    k = 3
    return {
        "wli_train": random_set(36, k, "WLI", seed=1),
        "nbi_train": random_set(30, k, "NBI", seed=2),
        "wli_val": random_set(18, k, "WLI", seed=3),
        "nbi_val": random_set(18, k, "NBI", seed=4),
        "wli_test": random_set(18, k, "WLI", seed=5),
        "nbi_test": random_set(18, k, "NBI", seed=6),
    }


@pytest.fixture(scope="session")
def golden() -> tuple[dict, dict]:
    """(stored, recomputed): the loss values in tests/fixtures/golden_losses.json and the
    same values computed now by tests/make_golden.py."""
    here = Path(__file__).parent
    spec = importlib.util.spec_from_file_location("make_golden", here / "make_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    stored = json.loads((here / "fixtures" / "golden_losses.json").read_text())["values"]
    return stored, mod.compute_golden()


@pytest.fixture(scope="module")
def distiller():
    """The smallest full PaGKD (3 classes): test_resnet tokens of d = 16 and 3 queries,
    random weights (student built first, then the teacher)."""
    torch.manual_seed(0)
    cfg = smoke()
    cfg = dataclasses.replace(cfg, model=ModelConfig(backbone="test_resnet", dim=16,
                                                     feature_index=-2),
                              pro=dataclasses.replace(cfg.pro, num_queries=3,
                                                      num_heads=2))
    student = Classifier(cfg.model, 3)
    teacher = Classifier(cfg.model, 3)
    return build_distiller("pagkd", student, teacher, cfg, 3)
