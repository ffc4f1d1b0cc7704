"""The Python API (generator/api.py): zoo, timm and plain nn.Module models; class and direction
visualizations; CRAFT on PIL images; reading a store. Tiny random models, a few MACO steps."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import generator as lens
from generator import api
from generator.cli import main
from generator.errors import ConfigError, CraftError, LensError

from .conftest import REPO

FAST = {"steps": 3, "image_size": 48, "crops": 2, "input_size": 48, "spectrum": "powerlaw"}


class TinyNet(nn.Module):
    """A torchvision-style classifier: conv features (post-ReLU), global pool, linear head."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                                      nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def _photos(n: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((96, 72), Image.Resampling.BICUBIC)
            for _ in range(n)]


def test_the_package_exports_the_api_lazily_without_shadowing_modules():
    assert set(api.__all__) == set(lens.__all__) - {"__version__"}
    assert lens.visualize is api.visualize and lens.open_store is api.open_store
    modules = {p.stem for p in (REPO / "generator").glob("*.py")}
    assert not modules & set(api.__all__), "an API name would hide a submodule (from generator import <name>)"
    check = "import sys, generator; generator.__version__; assert 'torch' not in sys.modules and 'generator.api' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], cwd=REPO, check=True)


def test_zoo_model_visualization_equals_the_one_lens_render_stores(tiny_config, tmp_path):
    store = tmp_path / "store"
    assert main(["render", "--config", str(tiny_config), "--store", str(store), "--classes", "1", "--what", "maco",
                 "--no-progress", "--spectrum", "powerlaw"]) == 0
    model = lens.from_zoo("tiny", config=tiny_config)
    [v] = lens.visualize(model, 1, spectrum="powerlaw")
    record = lens.open_store(store).record("tiny", 1)
    assert record.maco.status == "done"
    assert np.array_equal(np.asarray(v.image), np.asarray(record.maco.image))
    assert np.array_equal(np.asarray(v.alpha), np.asarray(record.maco.alpha))
    assert (v.class_index, v.class_name, v.key) == (1, "goldfish, Carassius auratus", "class/0001")
    assert 0 <= v.probability <= 1 and v.rank >= 1 and v.finite
    assert v.rgba.shape == (64, 64, 4) and v.rgba.dtype == np.uint8
    assert v.overlay().size == v.image.size


def test_timm_model_classes_by_name_and_directions(tmp_path):
    model = lens.from_timm("test_resnet", input_size=48)
    assert model.input_size == 48 and model.name == "test_resnet" and "input 48px" in repr(model)
    vs = lens.visualize(model, "goldfish,tabby", **FAST)
    assert [v.class_index for v in vs] == [1, 281]
    assert all(isinstance(v.image, Image.Image) and v.image.size == (48, 48) for v in vs)
    channels = model.loaded.num_concept_channels
    directions = np.eye(channels, dtype=np.float32)[:2]
    ds = lens.visualize_directions(model, directions, keys=["a", "b"], **FAST)
    assert [d.key for d in ds] == ["a", "b"] and ds[0].class_index is None
    assert not np.array_equal(np.asarray(ds[0].image), np.asarray(ds[1].image))
    with pytest.raises(ConfigError, match="has 3 values; the concept layer"):
        lens.visualize_directions(model, [np.ones(3)], **FAST)
    with pytest.raises(ConfigError, match="MACO settings"):
        lens.visualize(model, 1, steps=0)
    with pytest.raises(LensError, match="not a timm architecture"):
        lens.from_timm("resnet_nope")


def test_timm_model_from_a_checkpoint_loads_strictly(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    reference = timm.create_model("test_resnet")
    save_file(reference.state_dict(), str(tmp_path / "w.safetensors"))
    model = lens.from_timm("test_resnet", checkpoint=tmp_path / "w.safetensors")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.loaded.logits(x), reference.eval()(x), atol=1e-5)
    save_file({"nope": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(LensError, match="weights do not fit the architecture"):
        lens.from_timm("test_resnet", checkpoint=tmp_path / "bad.safetensors")


@pytest.mark.parametrize("split", ["pair", "path"])
def test_any_module_classifier_with_a_split_gets_visualizations_and_concepts(split):
    net = TinyNet()
    how = (net.features, lambda a: net.fc(net.pool(a).flatten(1))) if split == "pair" else "features.3"
    model = lens.from_module(net, input_size=48, split=how, name="Tiny Net")
    assert model.name == "tiny-net" and model.loaded.num_concept_channels == 16
    [v] = lens.visualize(model, 0, **FAST)
    assert v.image.size == (48, 48)
    result = lens.find_concepts(model, _photos(), 0, rank=3, sobol_designs=8, nmf_iters=30, top_crops=2, attribution_images=1)
    assert result.class_index == 0 and result.n_images == 3 and result.image_selection == "all"
    assert len(result.concepts) == 3 and [c.rank for c in result.concepts] == [1, 2, 3]
    importances = [c.importance for c in result.concepts]
    assert importances == sorted(importances, reverse=True)
    top = result.concepts[0]
    assert top.direction.shape == (16,) and top.direction.dtype == np.float32
    assert len(top.crops) == 2 and all(isinstance(c, Image.Image) for c in top.crops)
    assert len(top.heatmaps) == 1
    [cv] = lens.visualize_directions(model, [top.direction], **FAST)
    assert cv.image.size == (48, 48)


def test_module_without_a_split_draws_classes_but_says_what_concepts_need():
    model = lens.from_module(TinyNet(), input_size=48)
    [v] = lens.visualize(model, 5, **FAST)
    assert v.class_index == 5
    with pytest.raises(CraftError, match="pass split= to from_module"):
        lens.find_concepts(model, _photos(), 5)
    with pytest.raises(LensError, match="expected a torch nn.Module"):
        lens.from_module(lambda x: x)


def test_store_records_are_plain_objects(tmp_path):
    from benchmarks.synthetic_store import DEFAULT_MODELS, write_synthetic_store

    root = write_synthetic_store(tmp_path / "store", 6, DEFAULT_MODELS)
    store = lens.open_store(root)
    assert store.models() == sorted(DEFAULT_MODELS)
    records = store.records()
    assert {(r.model, r.class_index) for r in records} == {(m.model, m.class_index) for m in (r.meta for r in records)}
    some = store.records(model="efficientnet-lite0", classes="0-2")
    assert [r.class_index for r in some] == sorted(r.class_index for r in some) and {r.model for r in some} == {"efficientnet-lite0"}
    done = next(r for r in records if r.maco.status == "done" and r.concepts)
    assert isinstance(done.maco.image, Image.Image) and done.maco.alpha.mode == "L"
    concept = done.concepts[0]
    assert concept.rank == 1 and all(isinstance(c, Image.Image) for c in concept.crops)
    failed = [r for r in records if r.maco.status == "failed"]
    assert all(r.maco.image is None and r.maco.error for r in failed)
    assert store.record("efficientnet-lite0", 999) is None
    fig = store.figure("0-2", ["efficientnet-lite0"])
    assert len(fig.axes) == 3
    with pytest.raises(LensError, match="no such artifact store"):
        lens.open_store(tmp_path / "nope")


SMALL_RENDER = {"steps": 2, "image_size": 64, "crops": 2, "rank": 3, "top_crops": 2, "sobol_designs": 4, "nmf_iters": 30,
                "attribution_images": 1, "visualize": 2}


def test_a_notebook_torchvision_model_rendered_into_a_store_is_published_by_lens_site(tmp_path, monkeypatch, capsys):
    """lens.render writes the records `lens render` writes (model card, MACO, CRAFT, concept MACOs),
    skips what is done, re-renders when the weights change; `lens site` then publishes the model."""
    import torchvision

    from .conftest import write_class_folder

    images = write_class_folder(tmp_path / "imagenet", classes=(1,), per_class=2)
    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    model = lens.from_module(net, input_size=64, split="layer4", name="My ResNet")
    rows = lens.layers(model, samples=2)
    assert rows[0].name == "features" and "layer4" in {r.module for r in rows} and all(r.clean for r in rows)
    store = tmp_path / "artifacts"
    summary = lens.render(model, "1", store=store, images=images, **SMALL_RENDER)
    assert summary.failed == 0 and summary.done == 4 and summary.exit_code == 0  # MACO, CRAFT, two concept MACOs
    [record] = lens.open_store(store).records("my-resnet")
    assert record.maco.status == "done" and record.craft_status == "done" and len(record.concepts) == 3
    assert sum(c.visualization.status == "done" for c in record.concepts) == 2
    card = json.loads((store / "my-resnet" / "model.json").read_text())
    assert card["arch"] == "torchvision.models.resnet.ResNet" and card["weights"].startswith("file:in-memory ResNet sha256:")
    assert lens.render(model, "1", store=store, images=images, **SMALL_RENDER).done == 0  # done with these settings
    with torch.no_grad():
        net.fc.bias.add_(1.0)
    changed = lens.from_module(net, input_size=64, split="layer4", name="My ResNet")
    assert lens.render(changed, "1", store=store, images=images, what="maco", **SMALL_RENDER).done == 1  # new weights
    with pytest.raises(ConfigError, match="unknown setting 'stepz'"):
        lens.render(model, "1", store=store, stepz=3)
    monkeypatch.chdir(tmp_path)  # no models.yaml here: the embedded zoo, whose models the store does not hold
    assert main(["site", "--store", str(store), "--site", str(tmp_path / "site"), "--no-progress"]) == 0
    html = (tmp_path / "site" / "classes" / "0001.html").read_text()
    assert 'data-model="my-resnet"' in html and html.count('<div class="lens-cvis') >= 3
