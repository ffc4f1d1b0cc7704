"""Shared fixtures: a tiny random model zoo for logic tests, the real embedded models for outcome tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SAMPLES = Path(os.environ.get("LENS_IMAGENET_SAMPLES", REPO.parent / "shared" / "imagenet-samples"))
TINY_CLASSES = (1, 2, 3)

torch.set_num_threads(min(2, os.cpu_count() or 1))


def write_tiny_zoo(folder: Path, images: Path | None = None, extra: str = "") -> Path:
    """models.yaml with one random `test_resnet` (weights saved as safetensors) and a `quick` preset."""
    import timm
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "tiny.safetensors"
    if not weights.exists():
        torch.manual_seed(0)
        save_file(timm.create_model("test_resnet").state_dict(), str(weights))
    text = f"""
title: Tiny test gallery
images: {images if images else 'null'}
spectrum: powerlaw
out: artifacts
defaults:
  maco: {{steps: 3, image_size: 64, crops: 2, input_size: 64}}
  craft: {{rank: 3, patch_size: 64, patch_stride: 0.8, top_crops: 3, sobol_designs: 8, nmf_iters: 50, attribution_images: 1}}
presets:
  quick:
    classes: 1,2,3
models:
  - name: tiny
    arch: test_resnet
    weights: {{file: tiny.safetensors}}
    input_size: 64
{extra}"""
    path = folder / "models.yaml"
    path.write_text(text)
    return path


def write_dictionary_zoo(folder: Path, images: Path, dictionary: str) -> Path:
    """The tiny zoo with `dictionary` (a flow mapping, e.g. `{atoms: 16, k: 2}`) as its default dictionary settings."""
    path = write_tiny_zoo(folder, images=images)
    path.write_text(path.read_text().replace("defaults:\n", f"defaults:\n  dictionary: {dictionary}\n"))
    return path


def write_class_folder(root: Path, classes=TINY_CLASSES, per_class: int = 2) -> Path:
    """An ImageNet-layout folder of small smooth random images (plus one bad file per class)."""
    from generator.classes import imagenet_class

    rng = np.random.default_rng(0)
    for c in classes:
        d = root / imagenet_class(c).wnid
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            small = rng.integers(0, 255, size=(6, 8, 3), dtype=np.uint8)
            Image.fromarray(small).resize((96, 72), Image.Resampling.BICUBIC).save(d / f"img_{i}.jpg")
        (d / "zero_bytes.jpg").write_bytes(b"")
    return root


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory) -> Path:
    return write_class_folder(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory, tiny_images) -> Path:
    return write_tiny_zoo(tmp_path_factory.mktemp("zoo"), images=tiny_images)


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
    from generator.config import load_zoo
    from generator.models import load_model

    zoo = load_zoo(tiny_config)
    return load_model(zoo.model("tiny"), zoo.root, "cpu")


@pytest.fixture
def tiny_model_f64(tiny_config):
    """A fresh tiny model in float64, where a batched render is bit-identical to one rendered alone (`LoadedModel.to`
    changes the model in place, so the session's `tiny_model` is not converted)."""
    from generator.config import load_zoo
    from generator.models import load_model

    zoo = load_zoo(tiny_config)
    return load_model(zoo.model("tiny"), zoo.root).to(torch.float64)


@pytest.fixture(scope="session")
def zoo():
    from generator.config import load_zoo

    return load_zoo(REPO / "models.yaml")


@pytest.fixture(scope="session")
def lite0(zoo):
    from generator.models import load_model

    return load_model(zoo.model("efficientnet-lite0"), zoo.root, "cpu")


@pytest.fixture(scope="session")
def samples() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip(f"ImageNet samples folder {SAMPLES} is absent (set LENS_IMAGENET_SAMPLES to point at one)")
    return SAMPLES


REAL_MODELS = "efficientnet-lite0,efficientnet-lite1"
REAL_CLASSES = "872,967"  # tripod and espresso: the bundled photos camera and coffee


@pytest.fixture(scope="session")
def real_store(tmp_path_factory) -> Path:
    """A small real render: two embedded models, two classes, class MACO + CRAFT + concept MACOs, scored."""
    from generator.cli import main

    out = tmp_path_factory.mktemp("real") / "artifacts"
    common = ["--config", str(REPO / "models.yaml"), "--models", REAL_MODELS, "--preset", "demo",
              "--classes", REAL_CLASSES, "--store", str(out), "--no-progress"]
    assert main(["render", *common, "--steps", "12", "--image-size", "128", "--device", "cpu"]) == 0
    assert main(["quality", *common, "--steps", "12", "--image-size", "128", "--device", "cpu"]) == 0
    return out


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium for the browser tests; skips, saying why, only where it truly cannot start."""
    from .browsing import CHROMIUM, LAUNCH_ARGS

    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as e:
        pytest.skip(f"the playwright package is not installed ({e}); pip install playwright")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no system Chromium at {CHROMIUM}; install it with `apt-get install -y chromium`")
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        except Error as e:
            pytest.skip(f"Chromium at {CHROMIUM} does not start: {str(e).splitlines()[0]}")
        yield b
        b.close()
