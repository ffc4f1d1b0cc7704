"""The embedded models: strict loads from the packaged checkpoints, preprocessing, accuracy, the g/h split."""

from __future__ import annotations

from pathlib import Path

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
    return write_small_zoo(folder, images, entries)


def write_small_zoo(folder, images, entries: list[str]):
    """models.yaml of the given entries at tiny settings (64 px, 2 MACO steps, 3 concepts, 2 visualized)."""
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
    assert main(["render", "--config", str(arch_zoo), "--classes", "1", "--store", str(out), "--no-progress"]) == 0
    methods = {}
    for name in ARCHS:
        meta = Store(out).meta(name, 1)
        assert meta.maco.status == "done" and meta.craft.status == "done", (name, meta.craft)
        assert meta.craft.image_selection == "all" and len(meta.concepts) == 3, name
        methods[name] = meta.craft.method
        visualized = [c for c in meta.concepts if c.maco]
        assert len(visualized) == 2 and all(c.maco.status == "done" for c in visualized), name
        for c in meta.concepts:
            assert c.crops and c.attributions, name
            for f in [x.file for x in c.crops + c.attributions] + list((c.maco.files if c.maco else {}).values()):
                assert (out / name / "0001" / f).stat().st_size > 0, (name, f)
        shares = [c.logit_share for c in meta.concepts]
        # ResNet and ViT (class token) heads are pool + linear: exact shares; ConvNeXt's head has a LayerNorm.
        assert all(s is not None for s in shares) == (name != "convnext-atto-random"), (name, shares)
    assert methods == {"resnet18-random": "nmf", "vit-tiny-random": "semi-nmf", "convnext-atto-random": "semi-nmf"}

    # ... and the site shows every part of every architecture: class visualization, concepts, their pages.
    from generator.config import load_zoo
    from generator.site import build_site
    from generator.site.views import concepts_page

    site_dir = tmp_path / "site"
    report = build_site(load_zoo(arch_zoo), out, site_dir, progress=False)
    assert report.placeholders == len(ARCHS) and not report.problems, report  # concept 3 of each: `visualize: 2`
    html = (site_dir / "classes" / "0001.html").read_text()
    for name in ARCHS:
        section = html.split(f'<section class="lens-craft" data-model="{name}"')[1].split("</section>")[0]
        assert section.count('<div class="lens-cvis') == 3 and section.count('<img class="lens-over"') == 2, name
        assert section.count('data-state="not-visualized"') == 1 and section.count("lens-missing") == 1, name
        concept_html = (site_dir / concepts_page(name, 1)).read_text()
        assert concept_html.count('class="lens-heatlayer"') >= 3, name


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


# ----------------------------------------------------------------------------- layers a user can find and name


def _exact_split(module, layer: str, size: int = 64) -> None:
    from generator.models import split_at_layer

    g, h = split_at_layer(module, layer, "m")
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(h(g(x)), module(x), atol=1e-5), layer


@pytest.mark.parametrize("arch, layers", [
    ("resnet18", ["layer3.1.add", "layer3.1.act2", "layer3", "layer4.0", "features"]),
    ("vit_tiny_patch16_224", ["blocks.11.add", "blocks.11", "norm.layer_norm"]),
    ("convnext_atto", ["stages.2", "stages.3.blocks.0.add", "stages.2.downsample"]),
])
def test_concept_layer_accepts_function_nodes_and_module_paths(arch, layers):
    """The names the issue saw refused: fx function nodes and module paths split the model exactly."""
    from generator.models import _create

    torch.manual_seed(0)
    module = _create(arch).eval()
    for layer in layers:
        _exact_split(module, layer)


def test_every_suggested_name_is_accepted():
    """The names an error message suggests are clean cuts that `concept_layer:` accepts."""
    import re

    from generator.models import ModelError, _create, split_at_layer

    module = _create("resnet18").eval()
    for wrong in ("layer3.1.ad", "blocks.11.add"):
        with pytest.raises(ModelError, match="no layer") as e:
            split_at_layer(module, wrong, "m")
        suggested = re.search(r"\(e\.g\. (.*?); `lens layers MODEL`", str(e.value)).group(1).split(", ")
        assert suggested
        for name in suggested:
            _exact_split(module, name)
    with pytest.raises(ModelError, match="'layer3.0.act1' is not a clean cut.*next clean cut is 'layer3.0.add'") as e:
        split_at_layer(module, "layer3.0.act1", "m")
    _exact_split(module, "layer3.0.add")


def test_layers_command_lists_clean_cuts_with_shape_and_sign(arch_zoo, capsys):
    from generator.cli import main

    assert main(["layers", "resnet18-random", "--config", str(arch_zoo), "--samples", "2"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert rows["features"][1:4] == ["yes", "512x2x2", "yes"]  # post-ReLU: NMF
    assert rows["layer3.1.act2"][-1] == "layer3" and rows["layer3.1.act2"][1] == "yes"
    assert "layer3.0.act1" not in rows  # inside a block: listed only with --all
    assert main(["layers", "vit-tiny-random", "--config", str(arch_zoo), "--samples", "2", "--all"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert rows["features"][1:3] == ["yes", "17x192"] and rows["features"][3] == "no"  # LayerNorm: signed
    assert rows["blocks.11.add_1"][1] == "yes" and rows["blocks.11.add_1"][-1] == "blocks"
    assert any(r[1] == "no" for r in rows.values())  # --all shows the cuts inside blocks too


# ----------------------------------------------------------------------------- models that are not timm's

LABNET = """
import torch
from torch import nn


class LabNet(nn.Module):
    def __init__(self, width=8, num_classes=1000):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


def build(width=8):
    return LabNet(width)


def broken():
    raise RuntimeError("the lab's code failed")
"""


@pytest.fixture(scope="module")
def own_zoo(tmp_path_factory):
    """A torchvision resnet18 (random init, weights as safetensors) and the lab's own net from a
    factory in the config's folder (weights as a timm-style training checkpoint, DDP prefixes)."""
    import torchvision
    from safetensors.torch import save_file

    from .conftest import write_class_folder

    folder = tmp_path_factory.mktemp("own")
    images = write_class_folder(folder / "imagenet", classes=(1,), per_class=2)
    torch.manual_seed(0)
    save_file(torchvision.models.resnet18().state_dict(), str(folder / "resnet18.safetensors"))
    (folder / "labnets_t20.py").write_text(LABNET)
    import importlib.util

    spec = importlib.util.spec_from_file_location("labnets_for_weights", folder / "labnets_t20.py")
    code = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(code)
    net = code.build(width=6)
    ema = {"module." + k: v + 0.5 for k, v in net.state_dict().items()}
    torch.save({"state_dict": {"module." + k: v for k, v in net.state_dict().items()}, "state_dict_ema": ema, "epoch": 1},
               folder / "labnet_best.pth.tar")
    return write_small_zoo(folder, images, [
        "  - {name: tv-resnet18, torchvision: resnet18, weights: {file: resnet18.safetensors}, input_size: 64}",
        '  - {name: labnet, factory: "labnets_t20:build", builder_args: {width: 6}, weights: {file: labnet_best.pth.tar}, '
        "input_size: 64}",
    ])


def test_torchvision_and_factory_entries_render_concepts_and_reach_the_site(own_zoo, tmp_path, capsys):
    from generator.cli import main
    from generator.config import load_zoo
    from generator.site import build_site
    from generator.store import Store

    out = tmp_path / "artifacts"
    assert main(["render", "--config", str(own_zoo), "--classes", "1", "--store", str(out), "--no-progress"]) == 0
    for name in ("tv-resnet18", "labnet"):
        meta = Store(out).meta(name, 1)
        assert meta.maco.status == "done" and meta.craft.status == "done", (name, meta.craft)
        assert len(meta.concepts) == 3 and meta.craft.method == "nmf", name  # both cut after a ReLU
        assert all(c.maco.status == "done" for c in meta.concepts if c.maco) and sum(bool(c.maco) for c in meta.concepts) == 2
        assert all(c.logit_share is not None for c in meta.concepts), name  # pool + their last Linear: exact shares
    card = Store(out).model_card("labnet")
    assert card.arch == "factory:labnets_t20:build" and card.concept_layer == "features"
    assert card.weights_used.entry == "state_dict_ema" and card.weights_used.prefixes_stripped == ["module."]
    assert Store(out).meta("labnet", 1).maco.weights_used == card.weights_used  # meta.json says it too
    assert Store(out).model_card("tv-resnet18").arch == "torchvision:resnet18"
    site_dir = tmp_path / "site"
    report = build_site(load_zoo(own_zoo), out, site_dir, progress=False)
    assert not report.problems, report
    html = (site_dir / "classes" / "0001.html").read_text()
    for name in ("tv-resnet18", "labnet"):
        section = html.split(f'<section class="lens-craft" data-model="{name}"')[1].split("</section>")[0]
        assert section.count('<div class="lens-cvis') == 3 and section.count('<img class="lens-over"') == 2, name
    assert main(["layers", "labnet", "--config", str(own_zoo), "--samples", "2"]) == 0
    listed = capsys.readouterr().out
    assert "labnet (factory:labnets_t20:build)" in listed and "body.3" in listed
    assert listed.splitlines()[2].split()[:2] == ["features", "yes"]


def test_factory_and_torchvision_mistakes_are_one_line_errors(own_zoo, tmp_path, capsys):
    from generator.cli import main
    from generator.config import load_zoo
    from generator.errors import ConfigError

    bad = own_zoo.parent / "bad.yaml"
    bad.write_text("""models:
  - {name: gone, factory: "no_such_pkg_t20.models:build", weights: {file: labnet_best.pth.tar}}
  - {name: raises, factory: "labnets_t20:broken", weights: {file: labnet_best.pth.tar}}
  - {name: nofn, factory: "labnets_t20:nope", weights: {file: labnet_best.pth.tar}}
  - {name: tv, torchvision: resnet19, weights: {file: resnet18.safetensors}}
""")
    assert main(["models", "--config", str(bad), "--check"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert "no module 'no_such_pkg_t20' installed or in" in lines[0]
    assert "calling it failed: RuntimeError: the lab's code failed" in lines[1]
    assert "has no function 'nope'" in lines[2]
    assert "'resnet19' is not a torchvision classification builder (did you mean resnet18" in lines[3]
    for text, message in (("{name: x, weights: {file: a.pth}}", "exactly one of `arch`"),
                          ("{name: x, arch: resnet18, torchvision: resnet18, weights: {file: a.pth}}", "got arch, torchvision"),
                          ("{name: x, torchvision: resnet18, weights: {timm: a1_in1k}}", "for timm architectures"),
                          ("{name: x, factory: 'not a path', weights: {file: a.pth}}", "factory")):
        bad.write_text(f"models:\n  - {text}\n")
        with pytest.raises(ConfigError, match=message) as e:
            load_zoo(bad)
        assert "bad.yaml: model 'x' (entry 1)" in str(e.value)


def test_an_entry_written_before_keeps_its_identity():
    """New keys (torchvision, factory, builder_args) stay out of the identity while unset, so the
    settings hashes of a store rendered before are unchanged."""
    from generator.config import ModelEntry

    entry = ModelEntry(name="m", arch="resnet50", weights={"file": "w.safetensors"}, input_size=224)
    assert entry.identity() == {
        "name": "m", "arch": "resnet50", "weights": {"package": None, "file": "w.safetensors", "timm": None}, "key_map": None,
        "checkpoint_key": None, "prefix_map": None, "input_size": 224, "mean": None, "std": None, "interpolation": None,
        "crop_pct": None, "concept_layer": "features"}


# ----------------------------------------------------------------------------- checkpoints as people have them


def _zoo_for(tmp_path, file: str, extra: str = ""):
    from generator.config import load_zoo

    (tmp_path / "models.yaml").write_text(
        f"models:\n  - {{name: m, arch: test_resnet, weights: {{file: {file}}}, input_size: 64{extra}}}\n")
    return load_zoo(tmp_path / "models.yaml")


def test_checkpoint_wrappers_and_prefixes_load_without_editing(tmp_path):
    import timm
    from safetensors.torch import save_file

    from generator.models import build_module

    torch.manual_seed(0)
    state = timm.create_model("test_resnet").state_dict()
    other = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}

    def prefixed(p):
        return {p + k: v for k, v in state.items()}

    cases = {
        "sd.pth": {"state_dict": state, "epoch": 3}, "model.pth": {"model": state}, "module.pth": {"module": state},
        "ema_only.pth": {"state_dict_ema": state, "optimizer": {"lr": 0.1}},
        "both.pth": {"state_dict": other, "state_dict_ema": state},  # EMA preferred, as timm's validation does
        "dp.pth": {"state_dict": prefixed("module.")}, "lightning.pth": {"state_dict": prefixed("model.")},
        "nested.pth": {"model": {"module": prefixed("_orig_mod.module.")}},
    }
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
    save_file(prefixed("_orig_mod."), str(tmp_path / "compiled.safetensors"))
    for name in [*cases, "compiled.safetensors"]:
        module = build_module(_zoo_for(tmp_path, name).model("m"), tmp_path)
        assert torch.equal(module.state_dict()["fc.weight"], state["fc.weight"]), name
    raw = build_module(_zoo_for(tmp_path, "both.pth", ", checkpoint_key: state_dict").model("m"), tmp_path)
    assert torch.equal(raw.state_dict()["fc.weight"], other["fc.weight"])


def test_ambiguous_prefix_gets_a_hint_and_a_yaml_option(tmp_path):
    """Not every key has the prefix (a Lightning module with a loss): one line names the `prefix_map:` to add."""
    import timm

    from generator.models import ModelError, build_module

    state = timm.create_model("test_resnet").state_dict()
    torch.save({"state_dict": {**{"net." + k: v for k, v in state.items()}, "loss.weight": torch.ones(3)}}, tmp_path / "l.pth")
    with pytest.raises(ModelError, match=r"fit once 'net\.' is stripped: add `prefix_map: \{'net\.': ''\}`") as e:
        build_module(_zoo_for(tmp_path, "l.pth").model("m"), tmp_path)
    assert "\n" not in str(e.value)
    module = build_module(_zoo_for(tmp_path, "l.pth", ", prefix_map: {'net.': ''}").model("m"), tmp_path)
    assert torch.equal(module.state_dict()["fc.bias"], state["fc.bias"])
    with pytest.raises(ModelError, match="checkpoint_key': no 'ema' in the checkpoint"):
        build_module(_zoo_for(tmp_path, "l.pth", ", checkpoint_key: ema").model("m"), tmp_path)


def test_unusable_files_are_one_line_errors_and_models_check_exits_1(tmp_path, capsys):
    import timm
    from safetensors.torch import save_file

    from generator.cli import main
    from generator.models import ModelError, build_module

    model = timm.create_model("test_resnet")
    torch.save(model, tmp_path / "whole.pth")  # a pickled model: never unpickled
    (tmp_path / "garbage.pth").write_bytes(b"\x00not a checkpoint" * 10)
    (tmp_path / "garbage.safetensors").write_bytes(b"{}garbage" * 10)
    save_file(model.state_dict(), str(tmp_path / "ok.safetensors"))
    (tmp_path / "truncated.safetensors").write_bytes((tmp_path / "ok.safetensors").read_bytes()[:5000])
    expected = {
        "whole.pth": r"pickled Python object.*torch.save\(model\).*weights_only=True.*save_file\(model.state_dict\(\)",
        "garbage.pth": "not a readable PyTorch checkpoint", "garbage.safetensors": "not a readable safetensors file",
        "truncated.safetensors": "not a readable safetensors file",
    }
    for name, pattern in expected.items():
        with pytest.raises(ModelError, match=pattern) as e:
            build_module(_zoo_for(tmp_path, name).model("m"), tmp_path)
        assert "\n" not in str(e.value) and name in str(e.value)
    lines = [f"  - {{name: {n.replace('.', '-')}, arch: test_resnet, weights: {{file: {n}}}}}" for n in ["ok.safetensors", *expected]]
    (tmp_path / "zoo.yaml").write_text("models:\n" + "\n".join(lines) + "\n")
    assert main(["models", "--config", str(tmp_path / "zoo.yaml")]) == 0
    listed = capsys.readouterr().out
    assert "available" not in listed and listed.count("found:") == 5  # not loaded: no claim that they fit
    assert main(["models", "--config", str(tmp_path / "zoo.yaml"), "--check"]) == 1
    checked = capsys.readouterr().out.splitlines()
    assert "usable:" in checked[0] and all("unusable:" in line for line in checked[1:]) and len(checked) == 5
    assert main(["models", "--config", str(tmp_path / "zoo.yaml"), "--check", "--models", "ok-safetensors"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["ok-safetensors"]
    assert main(["models", "--config", str(tmp_path / "zoo.yaml"), "--models", "nope"]) == 2
    assert "no model named 'nope'" in capsys.readouterr().err


def timm_training_checkpoint(folder, arch="test_resnet"):
    """model_best.pth.tar as timm's train.py writes it: timm's own CheckpointSaver with the run's
    `args` (an argparse.Namespace), an optimizer, an EMA model and a metric. Returns (path, raw
    state, EMA state)."""
    import argparse

    import timm
    from timm.utils import CheckpointSaver, ModelEmaV3

    torch.manual_seed(0)
    model = timm.create_model(arch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    optimizer.step()  # momentum buffers in the optimizer state
    ema = ModelEmaV3(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # the raw weights move on; the EMA keeps others
    args = argparse.Namespace(model=arch, lr=0.1, epochs=3, input_size=[3, 64, 64], device="cpu", amp=False, output="")
    saver = CheckpointSaver(model, optimizer, args=args, model_ema=ema, checkpoint_dir=str(folder), recovery_dir=str(folder))
    saver.save_checkpoint(0, metric=12.5)
    path = folder / "model_best.pth.tar"
    assert path.is_file()
    return path, model.state_dict(), ema.module.state_dict()


def test_timm_training_checkpoint_loads_its_ema_weights_and_says_so(tmp_path, capsys):
    """As written by timm's train.py: `.pth.tar`, args as a Namespace (allowed), the EMA weights
    preferred as timm's validation does, unless `checkpoint_key:` says otherwise; recorded."""
    from generator.api import from_timm
    from generator.cli import main
    from generator.models import build_model

    path, raw, ema = timm_training_checkpoint(tmp_path)
    module, used = build_model(_zoo_for(tmp_path, path.name).model("m"), tmp_path)
    assert torch.equal(module.state_dict()["fc.weight"], ema["fc.weight"])
    assert not torch.equal(raw["fc.weight"], ema["fc.weight"])
    assert used.entry == "state_dict_ema" and used.other_entries == ["state_dict"]
    module, used = build_model(_zoo_for(tmp_path, path.name, ", checkpoint_key: state_dict").model("m"), tmp_path)
    assert torch.equal(module.state_dict()["fc.weight"], raw["fc.weight"]) and used.entry == "state_dict"
    assert main(["models", "--config", str(tmp_path / "models.yaml"), "--check", "--models", "m"]) == 0
    assert "checkpoint entry 'state_dict' (the file also holds 'state_dict_ema')" in capsys.readouterr().out
    _zoo_for(tmp_path, path.name)
    assert main(["models", "--config", str(tmp_path / "models.yaml"), "--check"]) == 0
    assert "checkpoint entry 'state_dict_ema' (EMA; the file also holds 'state_dict')" in capsys.readouterr().out
    api = from_timm("test_resnet", checkpoint=path, checkpoint_key="state_dict", input_size=64)
    assert torch.equal(api.loaded.module.state_dict()["fc.weight"], raw["fc.weight"])
    assert api.loaded.weights_used.entry == "state_dict"
    prefixed = tmp_path / "net.pth"
    torch.save({"state_dict": {"net." + k: v for k, v in ema.items()}}, prefixed)
    api = from_timm("test_resnet", checkpoint=prefixed, prefix_map={"net.": ""}, input_size=64)
    assert torch.equal(api.loaded.module.state_dict()["fc.weight"], ema["fc.weight"])


def _touch(path):  # what a harmful pickle would run on load
    Path(path).touch()


class _Harmful:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (_touch, (self.path,))


def test_a_harmful_pickle_in_a_checkpoint_is_refused_without_running(tmp_path):
    import timm

    from generator.models import ModelError, build_module

    sentinel = tmp_path / "ran"
    state = timm.create_model("test_resnet").state_dict()
    torch.save({"state_dict": state, "args": _Harmful(sentinel)}, tmp_path / "evil.pth.tar")
    with pytest.raises(ModelError, match=r"pickles a Python object.*never unpickled.*save ck\['state_dict_ema'\]") as e:
        build_module(_zoo_for(tmp_path, "evil.pth.tar").model("m"), tmp_path)
    assert "\n" not in str(e.value) and "evil.pth.tar" in str(e.value)
    assert not sentinel.exists()
    torch.load(tmp_path / "evil.pth.tar", weights_only=False)  # the payload is real: a full unpickle runs it
    assert sentinel.exists()


# ----------------------------------------------------------------------------- timm hub weights


def test_timm_weights_offline_fail_fast_with_one_message(tmp_path, monkeypatch, capsys, caplog):
    import time

    import huggingface_hub

    from generator.config import load_zoo
    from generator.models import ModelError, build_module

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    (tmp_path / "models.yaml").write_text("models:\n  - {name: m, arch: resnet18, weights: {timm: a1_in1k}}\n")
    start = time.perf_counter()
    expected = "'resnet18.a1_in1k': HF_HUB_OFFLINE is set and they are not in the local hub cache.*beforehand"
    with pytest.raises(ModelError, match=expected) as e:
        build_module(load_zoo(tmp_path / "models.yaml").model("m"), tmp_path)
    assert time.perf_counter() - start < 5 and "\n" not in str(e.value)
    assert not caplog.records and not capsys.readouterr().err  # no log lines, let alone duplicated ones


def test_timm_weights_come_from_the_local_hub_cache(tmp_path, monkeypatch):
    """A cached hub snapshot is used without the network (HF_HUB_OFFLINE set)."""
    import huggingface_hub
    import timm
    from safetensors.torch import save_file

    from generator.config import load_zoo
    from generator.models import build_module

    cache = tmp_path / "hub"
    repo = cache / "models--timm--test_resnet.r160_in1k"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    torch.manual_seed(3)
    state = timm.create_model("test_resnet").state_dict()
    save_file(state, str(repo / "snapshots" / "abc123" / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    (tmp_path / "models.yaml").write_text("models:\n  - {name: m, arch: test_resnet, weights: {timm: r160_in1k}}\n")
    module = build_module(load_zoo(tmp_path / "models.yaml").model("m"), tmp_path)
    assert torch.equal(module.state_dict()["fc.weight"], state["fc.weight"])
