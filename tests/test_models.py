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
