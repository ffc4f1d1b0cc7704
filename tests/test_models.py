"""The embedded models: strict loads from the packaged checkpoints, preprocessing, accuracy, the g/h split."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from generator.classes import all_classes
from generator.models import load_strict, read_checkpoint, weights_path


def test_packaged_checkpoints_load_strictly_after_key_map(zoo):
    import timm

    from generator.keymaps import efficientnet_pytorch

    for entry in zoo.models.values():
        path = weights_path(entry, zoo.root)
        state = read_checkpoint(path)
        assert any(k.startswith("_blocks.") for k in state)  # the efficientnet_pytorch layout
        model = timm.create_model(entry.arch)
        load_strict(model, efficientnet_pytorch(state, model), entry.name)  # raises on any mismatch


def test_preprocessing_travels_with_the_model(lite0):
    p = lite0.preprocess
    assert (p.input_size, p.interpolation, p.mean, p.std) == (224, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert lite0.linear_head is not None  # global average pool + linear: exact logit shares exist
    assert lite0.num_concept_channels == 1280


def test_g_then_h_is_the_model(lite0):
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(lite0.h(lite0.g(x)), lite0.module(x), atol=1e-4)
        assert (lite0.g(x) >= 0).all()  # ReLU6 before pooling: NMF-ready


@pytest.mark.slow
def test_lite0_top1_on_imagenet_samples(lite0, samples):
    """Weights and preprocessing are right: >= 70% top-1 on one image per class."""
    transform = lite0.image_transform()
    correct, total, batch, labels = 0, 0, [], []
    for c in all_classes():
        files = sorted((samples / c.wnid).glob("*"))
        if not files:
            continue
        batch.append(transform(Image.open(files[0]).convert("RGB")))
        labels.append(c.index)
        if len(batch) == 100 or c.index == 999:
            with torch.no_grad():
                predicted = lite0.logits(torch.stack(batch)).argmax(-1)
            correct += int((predicted == torch.tensor(labels)).sum())
            total += len(labels)
            batch, labels = [], []
    assert total >= 990, f"only {total} sample images found in {samples}"
    accuracy = correct / total
    print(f"efficientnet-lite0 top-1 on {total} ImageNet samples: {accuracy:.3f}")
    assert accuracy >= 0.70


# ----------------------------------------------------------------------------- any architecture, end to end

ARCHS = {"resnet18-random": "resnet18", "vit-tiny-random": "vit_tiny_patch16_224", "convnext-atto-random": "convnext_atto"}


@pytest.fixture(scope="module")
def arch_zoo(tmp_path_factory):
    """A zoo of three randomly initialised timm models (pretrained=False) saved as safetensors, at 64 px."""
    import timm
    from safetensors.torch import save_file

    from .conftest import write_class_folder

    folder = tmp_path_factory.mktemp("archs")
    images = write_class_folder(folder / "imagenet", classes=(1,), per_class=2)
    entries = []
    for name, arch in ARCHS.items():
        torch.manual_seed(0)
        save_file(timm.create_model(arch, pretrained=False).state_dict(), str(folder / f"{arch}.safetensors"))
        entries.append(f"  - {{name: {name}, arch: {arch}, weights: {{file: {arch}.safetensors}}, input_size: 64}}")
    (folder / "models.yaml").write_text(f"""
images: {images}
spectrum: powerlaw
defaults:
  maco: {{steps: 2, image_size: 64, crops: 2}}
  craft: {{rank: 3, top_crops: 2, sobol_designs: 4, nmf_iters: 30, attribution_images: 1, visualize: 2}}
models:
""" + "\n".join(entries) + "\n")
    return folder / "models.yaml"


def test_any_architecture_renders_class_maco_concepts_and_concept_macos(arch_zoo, tmp_path):
    """ResNet (post-ReLU: NMF), ViT and ConvNeXt (signed: Semi-NMF) all render every part."""
    from generator.cli import main
    from generator.store import Store

    out = tmp_path / "artifacts"
    assert main(["render", "--config", str(arch_zoo), "--classes", "1", "--out", str(out), "--no-progress"]) == 0
    methods = {}
    for name in ARCHS:
        (meta,) = list(Store(out).iter_metas(name))
        assert meta["maco"]["status"] == "done" and meta["craft"]["status"] == "done", (name, meta["craft"])
        assert meta["craft"]["image_selection"] == "all" and len(meta["concepts"]) == 3, name
        methods[name] = meta["craft"]["method"]
        visualized = [c for c in meta["concepts"] if c.get("maco")]
        assert len(visualized) == 2 and all(c["maco"]["status"] == "done" for c in visualized), name
        for c in meta["concepts"]:
            assert c["crops"] and c["attributions"], name
            for f in [x["file"] for x in c["crops"] + c["attributions"]] + list((c.get("maco") or {}).get("files", {}).values()):
                assert (out / name / "0001" / f).stat().st_size > 0, (name, f)
        shares = [c["logit_share"] for c in meta["concepts"]]
        # ResNet and ViT (class token) heads are pool + linear: exact shares; ConvNeXt's head has a LayerNorm.
        assert all(s is not None for s in shares) == (name != "convnext-atto-random"), (name, shares)
    assert methods == {"resnet18-random": "nmf", "vit-tiny-random": "semi-nmf", "convnext-atto-random": "semi-nmf"}


def test_vit_tokens_patches_and_head_pooling(arch_zoo):
    """ViT: the class token is what the head reads (pooled), patch tokens form the attribution grid."""
    from generator.config import load_zoo
    from generator.models import load_model

    zoo = load_zoo(arch_zoo)
    vit = load_model(zoo.model("vit-tiny-random"), zoo.root)
    assert vit.act_shape == (1 + 16, 192) and vit.num_prefix_tokens == 1 and vit.token_pool == "cls"
    act = torch.randn(2, *vit.act_shape)
    assert torch.equal(vit.pooled(act), act[:, 0])
    assert vit.linear_head is not None  # h = head(class token): exact logit shares
    maps = torch.arange(2 * 17 * 3.0).view(2, 17, 3)
    assert torch.equal(vit.spatial_maps(maps), maps[:, 1:].view(2, 4, 4, 3))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(vit.h(vit.g(x)), vit.module(x), atol=1e-5)
