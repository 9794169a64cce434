"""The GPU switches (pagkd_lite.models.accel), checked on the CPU: bf16 autocast, float32 losses,
channels_last, compile wiring, and the paper preset's shapes.

CUDA itself is checked by benchmarks/gpu_check.sh (CPU vs GPU losses, speed, memory);
these tests make sure the code paths exist, keep CPU numbers unchanged and stay correct.
"""

import dataclasses

import pytest
import torch

from pagkd_lite.config import TrainConfig, override, paper, smoke
from pagkd_lite.method.cam import grad_cam
from pagkd_lite.method.distill import Distiller, StepBatch, build_distiller
from pagkd_lite.method.gkd_den import GKDDenConfig, pair_loss
from pagkd_lite.method.gkd_pro import GKDPro, GKDProConfig
from pagkd_lite.models import accel
from pagkd_lite.models.accel import RuntimeConfig
from pagkd_lite.models.classifier import Classifier, ModelConfig
from pagkd_lite.training.train import fit

CPU = torch.device("cpu")
BF16 = RuntimeConfig(precision="bf16")
MODEL = ModelConfig(backbone="test_resnet", dim=8, feature_index=-2)
CFG = TrainConfig(epochs=2, batch_size=6, lr=1e-3, warmup_epochs=0)


def weights(d):
    return torch.cat([p.detach().flatten() for p in d.student.parameters()])


@pytest.mark.parametrize("field, value", [("precision", "fp16"), ("channels_last", "yes"),
                                          ("compile", "fast")])
def test_bad_runtime_values_are_named(field, value):
    with pytest.raises(ValueError, match=f"RuntimeConfig.{field}"):
        RuntimeConfig(**{field: value})
    with pytest.raises(ValueError, match=f"RuntimeConfig.{field}"):
        override(smoke(), [f"runtime.{field}={value}"])


def test_auto_is_fp32_and_plain_layout_on_cpu():
    rt = RuntimeConfig()
    assert accel.amp_dtype(rt, CPU) is None and not accel.use_channels_last(rt, CPU)
    assert accel.amp_dtype(BF16, CPU) is torch.bfloat16
    assert accel.describe(rt, CPU) == "cpu, fp32, compile=off"


def test_cpu_numbers_unchanged_by_runtime_path(tiny_sets):
    """fit() with the default runtime (auto) on a CPU is the fp32 run, bit for bit."""
    runs = []
    for rt in (None, RuntimeConfig()):
        torch.manual_seed(0)
        d = Distiller(Classifier(MODEL, 3))
        fit(d, tiny_sets["wli_train"], tiny_sets["wli_val"], CFG, CPU, progress=False,
            runtime=rt)
        runs.append(weights(d))
    assert torch.equal(*runs)


def _tokens(seed=0, b=6, hw=9, d=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, hw, d, generator=g), torch.tensor([0, 0, 1, 1, 2, 2])[:b]


def test_losses_compute_in_float32_under_autocast():
    """Under bf16 autocast the group losses switch autocast off: same numbers as fp32
    (a bf16 MultiheadAttention or bf16 cosines would move them by ~1e-3)."""
    torch.manual_seed(0)
    pro = GKDPro(GKDProConfig(num_queries=4, num_heads=4), 3, 16)
    tw, lw = _tokens(0)
    tn, ln = _tokens(1)
    ref = pro(tw, lw, tn, ln)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = pro(tw, lw, tn, ln)
    for k in ("con", "pcls"):
        assert got[k].dtype == torch.float32
        torch.testing.assert_close(got[k], ref[k], rtol=1e-6, atol=1e-7)

    lab_w = torch.tensor([[1, 0, -1] * 3] * 6)
    lab_n = torch.tensor([[0, 1, 1] * 3] * 6)
    ref = pair_loss(tw, lab_w, tn, lab_n, GKDDenConfig())["den"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = pair_loss(tw.bfloat16(), lab_w, tn.bfloat16(), lab_n, GKDDenConfig())["den"]
    assert got.dtype == torch.float32  # bf16 inputs are cast up, the arithmetic is fp32
    torch.testing.assert_close(got, pair_loss(tw.bfloat16().float(), lab_w,
                                              tn.bfloat16().float(), lab_n,
                                              GKDDenConfig())["den"], rtol=1e-6, atol=1e-7)
    assert abs(float(got) - float(ref)) < 0.05  # only the inputs' rounding differs


def test_grad_cam_maps_are_float32_under_autocast():
    torch.manual_seed(0)
    net = Classifier(MODEL, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.randn(4, 3, 32, 32))
        cam = grad_cam(out.logits, out.features, torch.tensor([0, 1, 2, 0]))
    assert out.features.dtype == torch.bfloat16 and cam.dtype == torch.float32
    assert float(cam.min()) >= 0 and float(cam.max()) <= 1


@pytest.mark.parametrize("method", ["pagkd", "pseudo_pair", "logit_kd"])
def test_bf16_training_runs_and_keeps_float32_weights(tiny_sets, method, tmp_path):
    cfg = override(smoke(), ["model.dim=8", "pro.num_heads=4"])
    cfg = dataclasses.replace(cfg, model=MODEL)
    torch.manual_seed(0)
    teacher = Classifier(MODEL, 3)
    d = build_distiller(method, Classifier(MODEL, 3), teacher, cfg, 3)
    res = fit(d, tiny_sets["wli_train"], tiny_sets["wli_val"], CFG, CPU, progress=False,
              train_n=tiny_sets["nbi_train"], out_dir=tmp_path, runtime=BF16)
    for record in res.history:
        assert all(torch.isfinite(torch.tensor(v)) for v in record.values())
    assert all(v.dtype == torch.float32 for v in d.trainable_state_dict().values()
               if v.is_floating_point())


def test_channels_last_and_compile_wiring():
    """place(): NHWC weights, backbones compiled in place (state-dict keys unchanged),
    same outputs. The 'eager' backend traces with dynamo without generating code, which
    keeps this test fast; inductor is what gpu_check uses."""
    torch.manual_seed(0)
    ref = Classifier(MODEL, 3).eval()
    net = Classifier(MODEL, 3).eval()
    net.load_state_dict(ref.state_dict())
    rt = RuntimeConfig(channels_last="on", compile="default", compile_backend="eager")
    accel.place(net, rt, CPU)
    assert list(net.state_dict()) == list(ref.state_dict())
    assert net.backbone._compiled_call_impl is not None
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = net(accel.input_format(x, rt)).logits
        torch.testing.assert_close(got, ref(x).logits, rtol=1e-4, atol=1e-5)


def test_host_to_device_on_cpu_is_plain_indexing():
    images = torch.randint(0, 255, (5, 3, 4, 4), dtype=torch.uint8)
    idx = torch.tensor([4, 0, 2])
    assert torch.equal(accel.host_to_device(images, idx, CPU, RuntimeConfig()), images[idx])


def test_paper_preset_step_has_the_papers_shapes():
    """ResNet-50 at 448 px: 14 x 14 tokens of d = 128, 12 queries, 16 heads; one full PaGKD
    step of the paper's form (``pagkd_paper``, group losses on) on the CPU with 2 + 2 images,
    finite losses and gradients."""
    cfg = override(paper(), ["model.pretrained=false"])
    s = cfg.data.image_size
    assert (s, cfg.model.backbone, cfg.model.dim, cfg.train.batch_size) == (448, "resnet50",
                                                                            128, 24)
    torch.manual_seed(0)
    d = build_distiller("pagkd_paper", Classifier(cfg.model, 3), Classifier(cfg.model, 3), cfg,
                        3)
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 1])
    batch = StepBatch(torch.randn(2, 3, s, s, generator=g), torch.rand(2, 3, s, s, generator=g),
                      y, torch.randn(2, 3, s, s, generator=g),
                      torch.rand(2, 3, s, s, generator=g), y)
    d.train()
    _, losses = d.forward_train(batch, cfg.train.warmup_epochs)
    assert set(losses) == {"ce", "den", "con", "pcls", "total"}
    losses["total"].backward()
    assert d.pro.queries.shape == (12, 128) and d.pro.mha.num_heads == 16
    assert d.student.embed.out_channels == 128 and d.student.reduction == 32  # 448/32 = 14
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(torch.isfinite(p.grad).all() for p in d.learnable_parameters()
               if p.grad is not None)
