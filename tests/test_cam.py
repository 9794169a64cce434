"""Grad-CAM, PAR refinement and token labels vs hand-written references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pagkd_lite.method.cam import grad_cam, par_refine, token_labels

TOL = {"rtol": 1e-5, "atol": 1e-6}


def test_grad_cam_linear_head_by_hand():
    """GAP + linear head: dy_k/dF_c = W[k, c] / (h w), so CAM = ReLU(sum_c W[y, c] F_c)."""
    gen = torch.Generator().manual_seed(0)
    b, c, h, w, k = 3, 5, 4, 6, 3
    fmap = torch.randn(b, c, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
    head = torch.nn.Linear(c, k).double()
    logits = head(fmap.mean(dim=(2, 3)))
    labels = torch.tensor([2, 0, 1])
    cam = grad_cam(logits, fmap, labels)
    assert cam.shape == (b, h, w) and not cam.requires_grad
    for i in range(b):
        ref = torch.zeros(h, w, dtype=torch.float64)
        for ch in range(c):
            ref += head.weight[labels[i], ch].item() / (h * w) * fmap[i, ch].detach()
        ref = ref.clamp_min(0)
        ref = (ref - ref.min()) / (ref.max() - ref.min())
        torch.testing.assert_close(cam[i], ref, **TOL)
    # the graph is retained and nothing was accumulated into .grad
    assert fmap.grad is None
    logits.sum().backward()
    assert fmap.grad is not None


def test_grad_cam_constant_map_is_zero_and_errors():
    fmap = torch.randn(2, 3, 2, 2, requires_grad=True)
    head = torch.nn.Linear(3, 2)
    with torch.no_grad():
        head.weight.zero_()
    cam = grad_cam(head(fmap.mean(dim=(2, 3))), fmap, torch.tensor([0, 1]))
    assert torch.all(cam == 0)
    with torch.no_grad():
        logits = head(fmap.mean(dim=(2, 3)))
    with pytest.raises(ValueError, match="graph"):
        grad_cam(logits, fmap, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        grad_cam(head(fmap.mean(dim=(2, 3))), fmap, torch.tensor([0, 2]))


def ref_par(image, cam, dilations, num_iter, w_colour=0.3, eps=1e-8):
    """Loop over neighbours; shifts by clamped indices (replicate border)."""
    size = (image.shape[-2] // 2, image.shape[-1] // 2)
    img = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
    m = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)
    h, w = size
    ys, xs = torch.arange(h), torch.arange(w)

    def shift(x, dy, dx):
        rows = (ys + dy).clamp(0, h - 1)
        cols = (xs + dx).clamp(0, w - 1)
        return x[:, :, rows][:, :, :, cols]

    offsets = [(dy * d, dx * d) for d in dilations
               for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    nbs = [shift(img, dy, dx) for dy, dx in offsets]
    sigma = torch.stack(nbs).std(dim=0)  # per channel, over neighbours
    kappas = []
    for nb in nbs:
        kappas.append((-((nb - img).abs() / (w_colour * (sigma + eps))) ** 2).mean(dim=1))
    aff = torch.softmax(torch.stack(kappas), dim=0)  # (N, B, h, w)
    for _ in range(num_iter):
        new = torch.zeros_like(m[:, 0])
        for a, (dy, dx) in zip(aff, offsets, strict=True):
            new += a * shift(m, dy, dx)[:, 0]
        m = new[:, None]
    return m[:, 0]


@pytest.mark.parametrize("hw,dilations,num_iter", [((16, 20), (1, 2, 4, 8), 10),
                                                   ((9, 7), (1, 3), 3)])
def test_par_matches_neighbour_loop(hw, dilations, num_iter):
    gen = torch.Generator().manual_seed(2)
    image = torch.rand(2, 3, *hw, generator=gen, dtype=torch.float64)
    cam = torch.rand(2, 3, 4, generator=gen, dtype=torch.float64)
    out = par_refine(image, cam, dilations=dilations, num_iter=num_iter)
    assert out.shape == (2, hw[0] // 2, hw[1] // 2)
    torch.testing.assert_close(out, ref_par(image, cam, dilations, num_iter), **TOL)


def test_par_follows_colour_edges():
    """A two-colour image: refinement keeps a CAM from leaking across the colour edge."""
    image = torch.zeros(1, 3, 32, 32)
    image[..., 16:] = 1.0
    image += 0.01 * torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cam = torch.zeros(1, 4, 4)
    cam[..., :2] = 1.0
    out = par_refine(image, cam)
    assert out.min() >= 0 and out.max() <= 1
    left, right = out[0, :, :7].mean(), out[0, :, 9:].mean()
    assert left > 0.9 and right < 0.1
    # constant CAM is a fixed point
    const = par_refine(image, torch.full((1, 4, 4), 0.4))
    torch.testing.assert_close(const, torch.full_like(const, 0.4))


def ref_token_labels(cam, token_hw, high, low):
    """Adaptive-average-pool bins written out: rows floor(i H / h) .. ceil((i + 1) H / h)."""
    b, hh, ww = cam.shape
    h, w = token_hw
    out = torch.empty(b, h * w, dtype=torch.long)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                r0, r1 = (i * hh) // h, math.ceil((i + 1) * hh / h)
                c0, c1 = (j * ww) // w, math.ceil((j + 1) * ww / w)
                v = cam[n, r0:r1, c0:c1].mean().item()
                out[n, i * w + j] = 1 if v > high else (0 if v < low else -1)
    return out


@pytest.mark.parametrize("size,token_hw", [((8, 8), (4, 4)), ((7, 10), (3, 4)), ((5, 5), (5, 5))])
def test_token_labels_match_reference(size, token_hw):
    cam = torch.rand(3, *size, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    cam[0] = 0.5  # all uncertain
    lab = token_labels(cam, token_hw, high=0.6, low=0.4)
    assert lab.dtype == torch.long and lab.shape == (3, token_hw[0] * token_hw[1])
    assert torch.equal(lab, ref_token_labels(cam, token_hw, 0.6, 0.4))
    assert torch.all(lab[0] == -1)
    assert set(lab.unique().tolist()) <= {-1, 0, 1}


def test_token_labels_validation():
    with pytest.raises(ValueError, match="low < high"):
        token_labels(torch.rand(1, 4, 4), (2, 2), high=0.3, low=0.7)


def test_pipeline_shapes():
    """Grad-CAM on a tiny conv net -> PAR -> token labels, end to end."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, stride=4, padding=1)
    head = torch.nn.Linear(4, 3)
    image = torch.rand(2, 3, 32, 32)
    fmap = conv(image)
    logits = head(fmap.mean(dim=(2, 3)))
    cam = grad_cam(logits, fmap, torch.tensor([0, 2]))
    lab = token_labels(par_refine(image, cam), tuple(fmap.shape[-2:]))
    assert lab.shape == (2, 64)
