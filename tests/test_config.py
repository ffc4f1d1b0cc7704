"""models.yaml validation: every bad input names the file, the model and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from generator.config import ConfigError, load_zoo
from generator.models import ModelError, build_module, weights_status

from .conftest import REPO, write_tiny_zoo


def _zoo_text(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "models.yaml"
    p.write_text(body)
    return p


ENTRY = "  - {{name: {name}, arch: {arch}, weights: {weights}{extra}}}\n"


def _one(tmp_path: Path, name="m", arch="test_resnet", weights="{file: w.safetensors}", extra="") -> Path:
    return _zoo_text(tmp_path, "models:\n" + ENTRY.format(name=name, arch=arch, weights=weights, extra=extra))


def test_embedded_zoo_has_three_efficientnet_lite_models():
    zoo = load_zoo(REPO / "models.yaml")
    assert list(zoo.models) == ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]
    assert all(m.arch.startswith("tf_efficientnet_lite") for m in zoo.models.values())
    assert "demo" in zoo.data.presets


def test_unknown_key_names_model_and_key(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_zoo(_one(tmp_path, extra=", wieghts_typo: 1"))
    assert "model 'm' (entry 1), key 'wieghts_typo': unknown key" in str(e.value)
    assert str(tmp_path / "models.yaml") in str(e.value)


def test_unknown_top_level_and_nested_keys(tmp_path):
    with pytest.raises(ConfigError, match="key 'defaults.maco.stepz': unknown key"):
        entry = ENTRY.format(name="m", arch="x", weights="{timm: ''}", extra="")
        load_zoo(_zoo_text(tmp_path, "defaults: {maco: {stepz: 3}}\nmodels:\n" + entry))


def test_duplicate_name(tmp_path):
    body = "models:\n" + ENTRY.format(name="m", arch="a", weights="{timm: ''}", extra="") * 2
    with pytest.raises(ConfigError, match="model 'm' \\(entry 2\\): duplicate name, already used by entry 1"):
        load_zoo(_zoo_text(tmp_path, body))


def test_bad_slug_and_weights_source(tmp_path):
    with pytest.raises(ConfigError, match="model 'Bad Name' .*key 'name'"):
        load_zoo(_one(tmp_path, name="'Bad Name'"))
    with pytest.raises(ConfigError, match="key 'weights'.*needs one of"):
        load_zoo(_one(tmp_path, weights="{}"))
    with pytest.raises(ConfigError, match="either `timm` or `package`"):
        load_zoo(_one(tmp_path, weights="{timm: in1k, file: x.pth}"))


def test_bad_override_value_names_model(tmp_path):
    with pytest.raises(ConfigError, match="model 'm'.*key 'maco.steps'"):
        load_zoo(_one(tmp_path, extra=", maco: {steps: 0}"))
    with pytest.raises(ConfigError, match="model 'm': unknown key 'maco.stepz'"):
        load_zoo(_one(tmp_path, extra=", maco: {stepz: 3}"))


def test_dictionary_settings_default_and_bad_override_names_the_key(tmp_path):
    zoo = load_zoo(_one(tmp_path, extra=", dictionary: {atoms: 64, k: 4}"))
    settings = zoo.dictionary_settings(zoo.model("m"))
    assert (settings.atoms, settings.k, settings.epochs) == (64, 4, 20)
    with pytest.raises(ConfigError, match="model 'm'.*key 'dictionary.k'"):
        load_zoo(_one(tmp_path, extra=", dictionary: {k: 0}"))
    with pytest.raises(ConfigError, match="model 'm': .*k \\(9\\) must not exceed atoms \\(4\\)"):
        load_zoo(_one(tmp_path, extra=", dictionary: {atoms: 4, k: 9}"))


def test_preset_with_unknown_model(tmp_path):
    body = "presets: {p: {classes: '1', models: [nope]}}\nmodels:\n" + ENTRY.format(name="m", arch="a", weights="{timm: ''}", extra="")
    with pytest.raises(ConfigError, match="preset 'p': unknown model 'nope'"):
        load_zoo(_zoo_text(tmp_path, body))


def test_a_preset_sets_the_dictionary_and_the_parts_it_renders(tmp_path):
    from generator.plan import Request, resolve

    models = "models:\n" + ENTRY.format(name="m", arch="a", weights="{timm: ''}", extra="")
    body = "presets: {p: {classes: '1', what: 'maco,dictionary', dictionary: {atoms: 128, augment: true}}}\n" + models
    zoo = load_zoo(_zoo_text(tmp_path, body))
    assert zoo.preset("p").what == "maco,dictionary"
    settings = zoo.dictionary_settings(zoo.model("m"), zoo.preset("p").dictionary)
    assert settings.atoms == 128 and settings.augment and settings.k == 64
    plain = resolve(Request(config=zoo.path, out=tmp_path / "s", models=["m"], classes=[1], parts=frozenset({"dictionary"}),
                            spectrum="powerlaw"))
    tuned = resolve(Request(config=zoo.path, out=tmp_path / "s", models=["m"], classes=[1], parts=frozenset({"dictionary"}),
                            dictionary_overrides={"visualize": 1}, spectrum="powerlaw"))
    # which atoms get a MACO is not the dictionary's concern: the same dictionary, other atom units
    assert plain.plans[0].dictionary_hash() == tuned.plans[0].dictionary_hash()
    assert plain.plans[0].atom_hash() == tuned.plans[0].atom_hash()
    for bad, match in (("{classes: '1', what: 'maco,nope'}", "preset 'p': key 'what'"),
                       ("{classes: '1', dictionary: {atoms: 1}}", "preset 'p': .*dictionary.atoms"),
                       ("{classes: '1', dictionary: {atoms: 32}}",
                        r"preset 'p': key 'dictionary': .*k \(64\) must not exceed atoms \(32\): set `k`")):
        with pytest.raises(ConfigError, match=match):
            load_zoo(_zoo_text(tmp_path, f"presets: {{p: {bad}}}\n" + models))


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_zoo(_zoo_text(tmp_path, "models: [\n"))
    with pytest.raises(ConfigError, match="file not found"):
        load_zoo(tmp_path / "absent.yaml")


def test_unknown_arch(tmp_path):
    zoo = load_zoo(_one(tmp_path, arch="resnet5O"))
    with pytest.raises(ModelError, match="model 'm': key 'arch': 'resnet5O' is not a timm architecture \\(did you mean"):
        build_module(zoo.model("m"), zoo.root)


def test_missing_file_and_package(tmp_path):
    zoo = load_zoo(_one(tmp_path))
    with pytest.raises(ModelError, match="model 'm': key 'weights.file': .*w.safetensors' does not exist"):
        build_module(zoo.model("m"), zoo.root)
    zoo = load_zoo(_one(tmp_path, weights="{package: no_such_package_xyz}"))
    with pytest.raises(ModelError, match="key 'weights.package': Python package 'no_such_package_xyz' is not installed"):
        build_module(zoo.model("m"), zoo.root)
    assert weights_status(zoo.model("m"), zoo.root).startswith("unavailable")


def test_missing_unexpected_and_misshaped_weights(tmp_path):
    import timm
    from safetensors.torch import save_file

    state = timm.create_model("test_resnet").state_dict()
    broken = dict(state)
    del broken["fc.bias"]
    broken["extra.weight"] = torch.zeros(1)
    broken["fc.weight"] = torch.zeros(3, 3)
    save_file(broken, str(tmp_path / "w.safetensors"))
    zoo = load_zoo(_one(tmp_path))
    with pytest.raises(ModelError) as e:
        build_module(zoo.model("m"), zoo.root)
    msg = str(e.value)
    assert "model 'm' (file:w.safetensors)" in msg
    assert "1 missing keys: fc.bias" in msg and "1 unexpected keys: extra.weight" in msg
    assert "fc.weight (3, 3) vs (1000, 96)" in msg


def test_pth_is_loaded_without_unpickling_objects(tmp_path):
    import timm

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    state = timm.create_model("test_resnet").state_dict()
    torch.save({"state_dict": state, "evil": Evil()}, tmp_path / "w.pth")
    zoo = load_zoo(_one(tmp_path, weights="{file: w.pth}"))
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        build_module(zoo.model("m"), zoo.root)
    torch.save({"state_dict": state}, tmp_path / "ok.pth")
    zoo = load_zoo(_one(tmp_path, weights="{file: ok.pth}"))
    assert build_module(zoo.model("m"), zoo.root) is not None


def test_timm_weights_offline_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    zoo = load_zoo(_one(tmp_path, arch="resnet18", weights="{timm: a1_in1k}"))
    with pytest.raises(ModelError, match="could not get timm pretrained weights 'resnet18.a1_in1k'.*without network access"):
        build_module(zoo.model("m"), zoo.root)


def test_adding_a_model_is_one_entry(tmp_path):
    """A second tiny model appended to a zoo is planned, loaded and rendered with no other change."""
    path = write_tiny_zoo(tmp_path, extra="  - {name: tiny-b, arch: test_resnet, weights: {file: tiny.safetensors}, input_size: 64}\n")
    zoo = load_zoo(path)
    assert list(zoo.models) == ["tiny", "tiny-b"]
    from generator.models import load_model

    assert load_model(zoo.model("tiny-b"), zoo.root).preprocess.input_size == 64


# ----------------------------------------------------------------------------- config discovery


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "models.yaml").write_text("out: renders\nsite: public\nimages: photos\n"
                                         "models:\n  - {name: m, arch: test_resnet, weights: {file: w/m.safetensors}}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    zoo = load_zoo(Path("../project/models.yaml"))
    assert not zoo.embedded
    assert zoo.resolve_path(zoo.data.out).resolve() == project / "renders"
    assert zoo.resolve_path(zoo.data.site).resolve() == project / "public"
    assert zoo.resolve_path(zoo.data.images).resolve() == project / "photos"
    assert load_zoo(project).path == project / "models.yaml"  # a folder holding a models.yaml


def test_default_config_is_the_local_file_else_the_embedded_zoo_rooted_here(tmp_path, monkeypatch):
    from generator.resources import default_zoo_path

    monkeypatch.chdir(tmp_path)
    zoo = load_zoo()
    assert zoo.embedded and zoo.path == default_zoo_path() and zoo.root == tmp_path
    assert zoo.resolve_path(zoo.data.out) == tmp_path / "artifacts"  # never the checkout or the installed package
    assert "embedded default zoo" in zoo.describe()
    (tmp_path / "models.yaml").write_text((REPO / "models.yaml").read_text())
    zoo = load_zoo()
    assert not zoo.embedded and zoo.path == tmp_path / "models.yaml" and zoo.root == tmp_path
    assert zoo.describe() == str(tmp_path / "models.yaml")
