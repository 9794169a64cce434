"""Tests of SynthEndo (the procedural WLI/NBI generator) and of data-card parsing.

Small images and small splits keep the file fast on a 2-core CPU; each test can fail.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pagkd_lite.data import synth_config
from pagkd_lite.data.cards import REQUIRED_FIELDS, load_card, missing_fields
from pagkd_lite.data.imageset import ImageSet
from pagkd_lite.data.synthendo import (
    GENERATOR_MODULES,
    SPLITS,
    SynthEndoConfig,
    export_folder,
    generate,
    generator_version,
    make_generator,
    preview_grid,
    render,
    sample_latents,
)

ROOT = Path(__file__).resolve().parents[1]


def _small_cfg(**kw) -> SynthEndoConfig:
    base = dict(image_size=32, n_wli_train=12, n_nbi_train=12, n_wli_val=6, n_nbi_val=6,
                n_wli_test=9, n_nbi_test=9)
    base.update(kw)
    return SynthEndoConfig(**base)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: these small ops only lose time to a thread pool on a shared 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sets64() -> dict[str, ImageSet]:
    """Default knobs at 64 px: 180 training and 180 test images per modality."""
    cfg = SynthEndoConfig(image_size=64, n_wli_train=180, n_nbi_train=180, n_wli_val=30,
                          n_nbi_val=30, n_wli_test=180, n_nbi_test=180, seed=0)
    return generate(cfg)


def _auc(y: np.ndarray, prob: np.ndarray) -> float:
    if prob.shape[1] == 2:
        return float(roc_auc_score(y, prob[:, 1]))
    return float(roc_auc_score(y, prob, multi_class="ovr", average="macro"))


# ------------------------------------------------------------------------------------------
# 1. determinism
# ------------------------------------------------------------------------------------------


def test_same_seed_same_tensors_other_seed_differs():
    a = generate(_small_cfg(seed=3))
    b = generate(_small_cfg(seed=3))
    c = generate(_small_cfg(seed=4))
    assert set(a) == set(SPLITS) | {"paired_nbi"}
    for k in a:
        assert torch.equal(a[k].images, b[k].images), k
        assert torch.equal(a[k].labels, b[k].labels), k
        assert a[k].lesion_ids == b[k].lesion_ids, k
        assert not torch.equal(a[k].images, c[k].images), k


def test_render_is_deterministic_given_generator():
    cfg = _small_cfg()
    lat = sample_latents(10, cfg, make_generator(0, "t"))
    x1 = render(lat, "WLI", cfg, make_generator(0, "r"))
    x2 = render(lat, "WLI", cfg, make_generator(0, "r"))
    assert x1.dtype == torch.uint8 and x1.shape == (10, 3, 32, 32)
    assert torch.equal(x1, x2)
    with pytest.raises(ValueError, match="modality"):
        render(lat, "XYZ", cfg, make_generator(0, "r"))


def test_same_scenes_at_any_image_size():
    """Latents live at a fixed resolution: a 64 px render, downsampled, matches the 32 px one."""
    lat = sample_latents(9, _small_cfg(), make_generator(0, "size"))
    small = render(lat, "NBI", _small_cfg(), make_generator(0, "r")).float()
    large = render(lat, "NBI", _small_cfg(image_size=64), make_generator(0, "r")).float()
    down = F.avg_pool2d(large, 2)
    corr = torch.corrcoef(torch.stack([small.flatten(), down.flatten()]))[0, 1]
    assert corr > 0.9, float(corr)


def test_preview_grid_layout():
    img = preview_grid(_small_cfg(), per_class=2)
    assert img.mode == "RGB"
    assert img.size[0] > 2 * 2 * 32 and img.size[1] > 3 * 32


# ------------------------------------------------------------------------------------------
# 2. splits: disjoint lesions and patients, balanced classes, aligned paired set
# ------------------------------------------------------------------------------------------


def test_splits_disjoint_balanced_and_paired_aligned(sets64):
    for i, s in enumerate(SPLITS):
        for t in SPLITS[i + 1:]:
            assert not set(sets64[s].lesion_ids) & set(sets64[t].lesion_ids), (s, t)
            assert not set(sets64[s].patient_ids) & set(sets64[t].patient_ids), (s, t)
    for s in SPLITS:
        ims = sets64[s]
        assert ims.modality == s.split("_")[0].upper()
        assert ims.images.shape[1:] == (3, 64, 64)
        counts = ims.class_counts()
        assert max(counts) - min(counts) <= 1, (s, counts)
        assert ims.class_names == ["hyperplastic", "adenoma", "adenocarcinoma"]
        # several images per patient and per lesion (views), never a lesion in two patients
        owner: dict[str, str] = {}
        for les, pat in zip(ims.lesion_ids, ims.patient_ids, strict=True):
            assert owner.setdefault(les, pat) == pat
        assert len(set(ims.patient_ids)) < len(set(ims.lesion_ids)) < len(ims)
    w, p = sets64["wli_train"], sets64["paired_nbi"]
    assert p.modality == "NBI" and w.modality == "WLI"
    assert p.lesion_ids == w.lesion_ids and p.patient_ids == w.patient_ids
    assert torch.equal(p.labels, w.labels)
    assert not torch.equal(p.images, w.images)


def test_two_class_config():
    sets = generate(_small_cfg(num_classes=2))
    for k, ims in sets.items():
        assert ims.class_names == ["hyperplastic", "adenoma"], k
        assert set(ims.labels.tolist()) <= {0, 1}


# ------------------------------------------------------------------------------------------
# 3. no trivial leak: a global colour-histogram classifier is near chance
# ------------------------------------------------------------------------------------------


def _colour_features(ims: ImageSet) -> np.ndarray:
    """8-bin histogram per RGB channel (fractions) + mean and std per channel."""
    x = ims.images.float() / 255.0
    n = x.shape[0]
    flat = x.view(n, 3, -1)
    bins = (flat * 8).long().clamp(max=7)
    hist = F.one_hot(bins, 8).float().mean(2).view(n, 24)
    return torch.cat([hist, flat.mean(2), flat.std(2)], 1).numpy()


def _histogram_auc(train: ImageSet, test: ImageSet) -> float:
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    clf.fit(_colour_features(train), train.labels.numpy())
    return _auc(test.labels.numpy(), clf.predict_proba(_colour_features(test)))


def test_colour_histograms_do_not_reveal_the_class(sets64):
    auc_wli = _histogram_auc(sets64["wli_train"], sets64["wli_test"])
    auc_nbi = _histogram_auc(sets64["nbi_train"], sets64["nbi_test"])
    print(f"colour-histogram AUC: WLI {auc_wli:.3f}, NBI {auc_nbi:.3f}")
    assert auc_wli <= 0.65, auc_wli
    assert auc_nbi <= 0.75, auc_nbi


def test_colour_histogram_check_has_power(sets64):
    """Negative control: a class-dependent tint (as NICE colour would give) is caught."""

    def tinted(ims: ImageSet) -> ImageSet:
        shift = torch.tensor([0.0, 12.0, 24.0])[ims.labels].view(-1, 1, 1, 1)
        x = (ims.images.float() + shift * torch.tensor([1.0, -0.5, -1.0]).view(1, 3, 1, 1))
        return ImageSet(images=x.clamp(0, 255).to(torch.uint8), labels=ims.labels,
                        patient_ids=ims.patient_ids, lesion_ids=ims.lesion_ids,
                        class_names=ims.class_names, modality=ims.modality)

    assert _histogram_auc(tinted(sets64["wli_train"]), tinted(sets64["wli_test"])) > 0.8


def test_class_enters_only_through_the_pattern():
    """At zero pattern contrast, relabelling the same latents changes no pixel; at the default
    contrast it does."""
    for modality, knob in (("WLI", "wli_contrast"), ("NBI", "nbi_contrast")):
        cfg = _small_cfg(**{knob: 0.0})
        lat = sample_latents(12, cfg, make_generator(0, "relabel"))
        other = lat.subset(range(len(lat)))
        other.labels = (lat.labels + 1) % cfg.num_classes
        same = [render(x, modality, cfg, make_generator(0, "r")) for x in (lat, other)]
        assert torch.equal(same[0], same[1]), modality
        default = _small_cfg()
        diff = [render(x, modality, default, make_generator(0, "r")) for x in (lat, other)]
        assert not torch.equal(diff[0], diff[1]), modality


# ------------------------------------------------------------------------------------------
# 4. the premise: with equal training sizes, NBI is clearly easier than WLI
# ------------------------------------------------------------------------------------------


def _tiny_cnn(num_classes: int, width: int = 12) -> nn.Module:
    def block(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 4 * width),
                         block(4 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4 * width, num_classes))


def _train_and_test_cnn(train: ImageSet, test: ImageSet, epochs: int, seed: int = 0) -> float:
    torch.manual_seed(seed)
    model = _tiny_cnn(train.num_classes)
    x = train.images.float() / 255.0
    mean = x.mean((0, 2, 3), keepdim=True)
    std = x.std((0, 2, 3), keepdim=True)
    x = (x - mean) / std
    y = train.labels
    bs = 30
    steps = epochs * ((len(x) + bs - 1) // bs)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), bs):
            idx = perm[i:i + bs]
            xb = torch.rot90(x[idx], int(torch.randint(4, (1,), generator=gen)), (2, 3))
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        prob = F.softmax(model((test.images.float() / 255.0 - mean) / std), 1).numpy()
    return _auc(test.labels.numpy(), prob)


@pytest.mark.slow
def test_nbi_is_easier_than_wli_with_equal_training_sizes(sets64):
    assert len(sets64["wli_train"]) == len(sets64["nbi_train"])
    auc_wli = _train_and_test_cnn(sets64["wli_train"], sets64["wli_test"], epochs=8)
    auc_nbi = _train_and_test_cnn(sets64["nbi_train"], sets64["nbi_test"], epochs=8)
    print(f"tiny-CNN AUC: WLI {auc_wli:.3f}, NBI {auc_nbi:.3f}")
    assert auc_nbi > auc_wli + 0.05, (auc_wli, auc_nbi)
    assert auc_nbi >= 0.75, auc_nbi


# ------------------------------------------------------------------------------------------
# 5. export
# ------------------------------------------------------------------------------------------


def test_export_folder_writes_readable_pngs_and_manifest(tmp_path):
    sets = generate(_small_cfg(n_wli_val=0, n_nbi_val=3))
    root = export_folder(sets, tmp_path / "synth")
    with open(root / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "modality", "label", "patient_id", "lesion_id", "split"]
    assert len(rows) == sum(len(s) for s in sets.values())
    for split, ims in sets.items():
        mine = [r for r in rows if r["split"] == split]
        assert len(mine) == len(ims), split
        assert [r["lesion_id"] for r in mine] == ims.lesion_ids
        assert all(r["modality"] == ims.modality for r in mine)
    assert len({r["path"] for r in rows}) == len(rows)
    first = sets["wli_train"]
    r0 = rows[0]
    assert r0["path"].startswith(f"wli_train/WLI/{r0['label']}/")
    assert r0["label"] == first.class_names[int(first.labels[0])]
    for r in rows[:: max(1, len(rows) // 10)]:
        with Image.open(root / r["path"]) as im:
            assert im.mode == "RGB" and im.size == (32, 32)
    with Image.open(root / r0["path"]) as im:
        back = torch.from_numpy(np.array(im)).permute(2, 0, 1)
    assert torch.equal(back, first.images[0])


# ------------------------------------------------------------------------------------------
# 6. config validation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("num_classes", 4), ("num_classes", 1), ("image_size", 31), ("n_wli_train", -1),
     ("n_nbi_test", -5), ("wli_contrast", 1.5), ("nbi_contrast", -0.1), ("nuisance", 2.0),
     ("images_per_patient", 0), ("views_per_lesion", 0)],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SynthEndoConfig(**{field: value})


def test_the_config_is_defined_below_the_generator_and_re_exported():
    assert SynthEndoConfig is synth_config.SynthEndoConfig and SPLITS is synth_config.SPLITS


def test_generator_version_hashes_every_generator_module():
    """Every SynthEndo module of ``pagkd_lite.data`` (``synthendo`` and ``synth_*``) is in
    :data:`GENERATOR_MODULES`, and :func:`generator_version` hashes their sources in order."""
    data = ROOT / "pagkd_lite" / "data"
    assert set(GENERATOR_MODULES) == {"synthendo"} | {p.stem for p in data.glob("synth_*.py")}
    h = hashlib.sha256()
    for name in GENERATOR_MODULES:
        h.update((data / f"{name}.py").read_bytes())
    assert generator_version() == h.hexdigest()[:12]


# ------------------------------------------------------------------------------------------
# data card
# ------------------------------------------------------------------------------------------


def test_synthendo_card_has_required_fields():
    card = load_card(ROOT / "data_cards" / "synthendo.md")
    assert missing_fields(card) == []
    assert card["num_classes"] in (2, 3)
    assert (ROOT / "docs" / "synthendo_grid.png").is_file()


def test_load_card_errors_name_the_file(tmp_path):
    bad = tmp_path / "no_front_matter.md"
    bad.write_text("# just a title\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no_front_matter.md"):
        load_card(bad)
    broken = tmp_path / "broken.md"
    broken.write_text("---\nname: [unclosed\n---\nbody\n", encoding="utf-8")
    with pytest.raises(ValueError, match="broken.md"):
        load_card(broken)
    ok = tmp_path / "ok.md"
    ok.write_text("---\nname: x\n---\n", encoding="utf-8")
    assert load_card(ok) == {"name": "x"}
    assert missing_fields(load_card(ok)) == list(REQUIRED_FIELDS[1:])
