"""CRAFT: NMF, Sobol, patch geometry, bad images, and the real model on the demo photos."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from generator import craft
from generator.config import CraftSettings
from generator.images import SourceImage, demo_photos, load_class_images, load_rgb
from generator.nmf import nmf, nnls_transform
from generator.sobol import jansen_total_indices, sobol_designs


def test_nmf_recovers_a_planted_factorisation():
    from scipy.optimize import linear_sum_assignment

    g = torch.Generator().manual_seed(1)
    U = torch.rand(300, 5, generator=g) ** 3
    W = torch.rand(5, 64, generator=g) ** 3
    result = nmf(U @ W, 5, iters=2000, tol=1e-10, seed=0)
    assert result.relative_error < 1e-3
    cos = torch.nn.functional.normalize(result.W, dim=1) @ torch.nn.functional.normalize(W, dim=1).T
    rows, cols = linear_sum_assignment(-cos.numpy())
    assert cos[rows, cols].min() > 0.99
    assert (result.U >= 0).all() and (result.W >= 0).all()


def test_nmf_is_deterministic_and_refuses_negatives():
    A = torch.rand(40, 12)
    a, b = nmf(A, 3, iters=50, seed=7), nmf(A, 3, iters=50, seed=7)
    assert torch.equal(a.W, b.W)
    with pytest.raises(ValueError, match="non-negative"):
        nmf(A - 1, 3)


def test_nnls_transform_recovers_coefficients():
    g = torch.Generator().manual_seed(0)
    U, W = torch.rand(50, 4, generator=g), torch.rand(4, 30, generator=g)
    assert (nnls_transform(U @ W, W, iters=300) - U).abs().max() < 1e-3


def test_sobol_recovers_ishigami_total_indices():
    n = 2**13
    x = sobol_designs(3, n, seed=0) * 2 * math.pi - math.pi
    f = torch.sin(x[:, 0]) + 7 * torch.sin(x[:, 1]) ** 2 + 0.1 * x[:, 2] ** 4 * torch.sin(x[:, 0])
    st = jansen_total_indices(f, n, 3)
    assert torch.allclose(st, torch.tensor([0.5576, 0.4424, 0.2437]), atol=0.01)


def test_sobol_on_additive_linear_function():
    """f = sum a_i x_i, x_i ~ U(0, 1): ST_i = a_i^2 / sum a_j^2."""
    a = torch.tensor([4.0, 2.0, 1.0, 0.0])
    n = 2**12
    st = jansen_total_indices(sobol_designs(4, n) @ a, n, 4)
    assert torch.allclose(st, a**2 / (a**2).sum(), atol=0.01)


@pytest.mark.parametrize("size, patch, stride", [(224, 64, 51), (224, 64, 32), (240, 69, 55), (64, 64, 51), (50, 64, 51)])
def test_patch_boxes_cover_the_view(size, patch, stride):
    boxes = craft.patch_boxes(size, min(patch, size), stride)
    covered = np.zeros((size, size), bool)
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
        assert x1 - x0 == min(patch, size) == y1 - y0
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    starts = craft.patch_starts(size, min(patch, size), stride)
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))  # never sparser than the stride


def test_default_geometry_is_64_px_at_stride_51():
    assert craft.patch_starts(224, 64, round(64 * 0.8)) == [0, 51, 102, 153, 160]


def test_view_boxes_map_back_to_the_source_image():
    region = craft.view_region(400, 300, 0.875)
    assert region == (200 - 131.25, 150 - 131.25, 200 + 131.25, 150 + 131.25)
    assert craft.to_source_box((0, 0, 224, 224), region, 224) == [69, 19, 331, 281]


def test_bad_and_odd_images(tmp_path, caplog):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "garbage.jpg").write_bytes(b"not an image at all")
    good = Image.new("RGB", (64, 64), (10, 200, 30))
    good.save(tmp_path / "good.jpg")
    (tmp_path / "truncated.jpg").write_bytes((tmp_path / "good.jpg").read_bytes()[:200])
    Image.new("L", (40, 30), 128).save(tmp_path / "gray.png")
    Image.new("CMYK", (40, 30), (0, 255, 0, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("P", (40, 30)).save(tmp_path / "palette.png")
    Image.new("RGBA", (40, 30), (255, 0, 0, 0)).save(tmp_path / "transparent.png")
    Image.new("RGB", (3000, 1500)).save(tmp_path / "huge.png")
    for bad in ("empty.jpg", "garbage.jpg", "truncated.jpg"):
        assert load_rgb(tmp_path / bad) is None
        assert bad in caplog.text
    for odd in ("gray.png", "cmyk.jpg", "palette.png", "transparent.png"):
        assert load_rgb(tmp_path / odd).mode == "RGB"
    assert load_rgb(tmp_path / "transparent.png").getpixel((0, 0)) == (255, 255, 255)
    assert max(load_rgb(tmp_path / "huge.png").size) == 1024


def test_class_folder_skips_bad_files(tiny_images):
    images = load_class_images(tiny_images, "n01443537")
    assert [i.source for i in images] == ["n01443537/img_0.jpg", "n01443537/img_1.jpg"]


def test_craft_on_tiny_model(tiny_model, tiny_images):
    """Logic on a random model: all images used (fallback), ranked concepts, crops and maps."""
    settings = CraftSettings(rank=3, top_crops=3, sobol_designs=8, nmf_iters=50)
    images = load_class_images(tiny_images, "n01443537")
    r = craft.run_craft(tiny_model, images, 1, settings)
    assert r.selection == "all" and len(r.views) == 2
    assert [c.importance for c in r.concepts] == sorted((c.importance for c in r.concepts), reverse=True)
    assert sorted(c.id for c in r.concepts) == [0, 1, 2]
    assert all(len(c.crops) == 3 for c in r.concepts)
    assert r.maps.shape[-1] == 3 and 0 <= r.nmf_error < 1
    assert set(r.timings) == {"activations", "nmf", "sobol"}
    overlay = craft.attribution_overlay(r.views[0], r.maps[0, ..., 0], float(r.maps[..., 0].max()))
    assert overlay.size == (256, 256)


def test_no_image_means_no_concepts(tiny_model):
    r = craft.run_craft(tiny_model, [], 1, CraftSettings())
    assert r.concepts == [] and r.selection == "none" and "no usable image" in r.reason


def test_signed_layer_gets_semi_nmf_and_nmf_is_refused_there(tmp_path):
    """ConvNeXt features are signed: `auto` picks Semi-NMF; `nmf` forced is refused, naming the layer and the fix."""
    import timm
    from safetensors.torch import save_file

    from generator.config import load_zoo
    from generator.models import load_model

    save_file(timm.create_model("test_convnext").state_dict(), str(tmp_path / "c.safetensors"))
    (tmp_path / "models.yaml").write_text("models:\n  - {name: cnx, arch: test_convnext, weights: {file: c.safetensors}, input_size: 64}\n")
    zoo = load_zoo(tmp_path / "models.yaml")
    model = load_model(zoo.model("cnx"), zoo.root)
    image = SourceImage("x", Image.new("RGB", (64, 64), (200, 30, 30)))
    with pytest.raises(craft.CraftError, match="model 'cnx': concept layer 'features' has negative activations.*method: semi-nmf"):
        craft.run_craft(model, [image], 1, CraftSettings(rank=2, method="nmf", sobol_designs=4, nmf_iters=20))
    r = craft.run_craft(model, [image], 1, CraftSettings(rank=2, sobol_designs=4, nmf_iters=20, top_crops=2))
    assert r.method == "semi-nmf" and len(r.concepts) == 2
    assert any((c.direction < 0).any() for c in r.concepts)  # a signed concept bank
    assert (r.maps >= 0).all() and all(c.crops for c in r.concepts)


def test_concept_layer_inside_a_block_is_refused(tmp_path, tiny_config):
    """A module path crossed by a skip connection is not a valid g/h split."""
    from generator.config import load_zoo
    from generator.models import ModelError, load_model

    text = tiny_config.read_text().replace("    input_size: 64\n", "    input_size: 64\n    concept_layer: layer3.0.act1\n", 1)
    (tmp_path / "models.yaml").write_text(text)
    (tmp_path / "tiny.safetensors").write_bytes((tiny_config.parent / "tiny.safetensors").read_bytes())
    zoo = load_zoo(tmp_path / "models.yaml")
    with pytest.raises(ModelError, match="is not a clean cut"):
        load_model(zoo.model("tiny"), zoo.root)


def test_concept_layer_between_stages_splits_exactly(tmp_path, tiny_config):
    from generator.config import load_zoo
    from generator.models import load_model

    text = tiny_config.read_text().replace("    input_size: 64\n", "    input_size: 64\n    concept_layer: layer2.0.act2\n", 1)
    (tmp_path / "models.yaml").write_text(text)
    (tmp_path / "tiny.safetensors").write_bytes((tiny_config.parent / "tiny.safetensors").read_bytes())
    zoo = load_zoo(tmp_path / "models.yaml")
    model = load_model(zoo.model("tiny"), zoo.root)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.h(model.g(x)), model.module(x), atol=1e-5)
    assert model.linear_head is None  # the rest of the network is not pool + linear


@pytest.mark.slow
def test_craft_real_model_on_demo_photos(lite0):
    """efficientnet-lite0 on the bundled espresso photo: concepts with crops, and the top one matters most."""
    photos = {p.source: p for p in demo_photos()}
    settings = CraftSettings(patch_stride=0.5)
    r = craft.run_craft(lite0, [photos["demo/coffee"]], 967, settings)
    assert r.selection == "predicted" and len(r.concepts) == 10
    assert all(len(c.crops) == 10 for c in r.concepts)
    assert lite0.linear_head is not None and all(c.logit_share is not None for c in r.concepts)
    top, least = r.concepts[0], r.concepts[-1]
    # Zeroing the top concept's coefficients before h lowers the espresso logit more than the least important's.
    assert top.removal_drop > least.removal_drop
    assert top.removal_drop > 0
    # Importance order is faithful: deleting concepts in that order drops the logit faster than at random.
    assert r.deletion["auc_importance"] < r.deletion["auc_random"]


@pytest.mark.slow
@pytest.mark.parametrize("layer, method", [("features", "semi-nmf"), ("blocks.5", "auto")])
def test_craft_signed_method_real_model_on_demo_photos(zoo, layer, method):
    """Semi-NMF on efficientnet-lite0 and the espresso photo: at `features` (forced; NMF would also
    apply) and at `blocks.5`, a linear bottleneck with signed outputs (chosen by `auto`). Deleting
    concepts in importance order lowers the logit faster than at random; at `features` (h linear)
    the top concept's removal also lowers it more than the least important's. Past `blocks.5`
    h is non-linear and Sobol indices measure variance, not sign: a top concept's removal alone
    can raise the logit there, so that check is only made where h is linear."""
    from generator.models import load_model

    entry = zoo.model("efficientnet-lite0").model_copy(update={"concept_layer": layer})
    model = load_model(entry, zoo.root, "cpu")
    photos = {p.source: p for p in demo_photos()}
    r = craft.run_craft(model, [photos["demo/coffee"]], 967, CraftSettings(patch_stride=0.5, method=method))
    assert r.method == "semi-nmf" and r.selection == "predicted" and len(r.concepts) == 10
    assert all(len(c.crops) == 10 for c in r.concepts) and (r.maps >= 0).all()
    assert (model.linear_head is not None) == (layer == "features")
    assert all((c.logit_share is not None) == (layer == "features") for c in r.concepts)
    assert r.deletion["auc_importance"] < r.deletion["auc_random"]
    if layer == "features":
        top, least = r.concepts[0], r.concepts[-1]
        assert top.removal_drop > least.removal_drop and top.removal_drop > 0


def test_linear_head_sobol_totals_are_squared_logit_contributions(tiny_model, tiny_images):
    """Pool + linear head: the estimator converges to c_k^2 / sum c_j^2, which CRAFT then uses exactly."""
    assert tiny_model.linear_head is not None
    settings = CraftSettings(rank=4, top_crops=3, sobol_designs=8, nmf_iters=50, mode="tokens")
    r = craft.run_craft(tiny_model, load_class_images(tiny_images, "n01443537"), 1, settings)
    W = torch.stack([k.direction for k in sorted(r.concepts, key=lambda k: k.id)])
    exact = craft.linear_totals(tiny_model, r.maps, W, 1)
    estimate = craft.sobol_totals(tiny_model, r.maps, W, 1, designs=2048, seed=0)
    torch.testing.assert_close(estimate, exact, atol=0.03, rtol=0)
    assert torch.allclose(exact.sum(1), torch.ones(len(exact)))
    assert [c.importance for c in r.concepts] == sorted(exact.mean(0).tolist(), reverse=True)
