"""One-line errors for the user's input: config files, spectra, devices, ports, CLI values, NaN-only settings."""

from __future__ import annotations

import numpy as np
import pytest

from generator.cli import main
from generator.config import load_zoo
from generator.errors import ConfigError, LensError

from .conftest import write_tiny_zoo


def one_line_error(capsys, *argv: str, code: int = 2) -> str:
    capsys.readouterr()
    assert main(list(argv)) == code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("lens: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_config_files_that_cannot_be_read(tmp_path):
    folder = tmp_path / "models.yaml"
    folder.mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        load_zoo(folder)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("title: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_zoo(latin)
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML: .* at line \d+, column \d+") as e:
        load_zoo(bad)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("extra, words", [
    ("  - {name: spectra, arch: test_resnet, weights: {file: tiny.safetensors}}\n", "reserved"),
    ("  - {name: runs.jsonl, arch: test_resnet, weights: {file: tiny.safetensors}}\n", "reserved"),
    ("  - {name: z, arch: test_resnet, weights: {file: tiny.safetensors}, std: [0.2, 0.0, 0.2]}\n", "key 'std'"),
    ("  - {name: z, arch: test_resnet, weights: {file: tiny.safetensors}, maco: {noise: .inf}}\n", "maco.noise"),
    ("  - {name: z, arch: test_resnet, weights: {file: tiny.safetensors}, maco: {lr: .nan}}\n", "maco.lr"),
])
def test_names_and_values_the_store_or_maths_cannot_take(tmp_path, extra, words):
    config = write_tiny_zoo(tmp_path, extra=extra)
    with pytest.raises(ConfigError, match=words) as e:
        load_zoo(config)
    assert "\n" not in str(e.value)


def test_bad_spectra_are_one_line(tmp_path, tiny_config, capsys):
    common = ["status", "--config", str(tiny_config), "--classes", "1", "--out", str(tmp_path / "s")]
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not numpy at all")
    assert "not a numpy .npy array" in one_line_error(capsys, *common, "--spectrum", str(garbage))
    shape = tmp_path / "shape.npy"
    np.save(shape, np.ones((3, 8, 8), np.float32))
    assert "(3, R, R//2+1)" in one_line_error(capsys, *common, "--spectrum", str(shape))
    zero = tmp_path / "zero.npy"
    np.save(zero, np.zeros((3, 8, 5), np.float32))
    assert "NaN" in one_line_error(capsys, *common, "--spectrum", str(zero))
    assert "nor an existing .npy" in one_line_error(capsys, *common, "--spectrum", str(tmp_path / "nope.npy"))


@pytest.mark.parametrize("flags, words", [
    (["--classes", ""], "--classes"),
    (["--model", ""], "--model"),
    (["--model", " , "], "--model"),
    (["--steps", "0"], "--steps 0"),
    (["--steps", "-3"], "--steps -3"),
    (["--crops", "-1"], "--crops"),
    (["--batch-size", "0"], "--batch-size 0"),
    (["--retries", "-1"], "--retries -1"),
    (["--seed", "-1"], "--seed -1"),
    (["--shard", ""], "--shard"),
    (["--spectrum", ""], "--spectrum"),
    (["--devices", ""], "--devices"),
    (["--devices", "0,,1"], "--devices"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--device", "cuda:7"], "--device 'cuda:7'"),
    (["--device", ""], "--device"),
])
def test_every_render_value_is_checked(tiny_config, tmp_path, capsys, flags, words):
    line = one_line_error(capsys, "render", "--config", str(tiny_config), "--classes", "1", "--out", str(tmp_path / "r"),
                          "--no-progress", *flags)
    assert words in line
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("meta.json"))


def test_an_empty_what_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        main(["render", "--what", ""])
    assert e.value.code == 2 and "--what" in capsys.readouterr().err


@pytest.mark.parametrize("port", ["-1", "70000"])  # 0 is valid: any free port
def test_serve_ports(tiny_config, tmp_path, capsys, port):
    assert "--port" in one_line_error(capsys, "serve", "--config", str(tiny_config), "--dir", str(tmp_path), "--port", port)


def test_a_port_in_use_is_one_line(tiny_config, tmp_path, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        (tmp_path / "index.html").write_text("x")
        line = one_line_error(capsys, "serve", "--config", str(tiny_config), "--dir", str(tmp_path), "--port", str(port))
    assert f"--port {port}" in line and "cannot serve" in line


def test_errors_are_one_hierarchy():
    from generator import errors

    for name in ("ConfigError", "ClassSpecError", "PlanError", "ModelError", "CraftError", "SiteError", "StoreError"):
        assert issubclass(getattr(errors, name), LensError)


@pytest.mark.parametrize("flag", ["--store", "--images", "--config"])
def test_empty_path_flags_are_refused_not_the_current_folder(tiny_config, tmp_path, capsys, monkeypatch, flag):
    monkeypatch.chdir(tmp_path)
    argv = ["render", "--config", str(tiny_config), "--classes", "1", "--dry-run", flag, ""]
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"argument {flag}" in err and "empty path" in err
    assert list(tmp_path.iterdir()) == []


def test_empty_site_flag_is_refused(tiny_config, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["site", "--config", str(tiny_config), "--site", ""])
    assert e.value.code == 2 and "argument --site" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["out", "site", "images", "spectrum"])
def test_empty_paths_in_models_yaml_are_refused(tmp_path, key):
    config = write_tiny_zoo(tmp_path)
    text = config.read_text()
    text = "\n".join(line for line in text.splitlines() if not line.startswith(f"{key}:")) + f'\n{key}: "  "\n'
    config.write_text(text)
    with pytest.raises(ConfigError, match=f"key '{key}'.*empty path"):
        load_zoo(config)


def test_init_on_files_folders_and_read_only_places(tmp_path, capsys, monkeypatch):
    in_the_way = tmp_path / "file"
    in_the_way.write_text("mine\n")
    assert "is a file, not a folder" in one_line_error(capsys, "init", str(in_the_way))
    assert "Not a directory" in one_line_error(capsys, "init", str(in_the_way / "sub"))
    (tmp_path / "d" / "models.yaml").mkdir(parents=True)
    assert "is a folder" in one_line_error(capsys, "init", str(tmp_path / "d"), "--force")
    assert in_the_way.read_text() == "mine\n"

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("generator.store.open", read_only, raising=False)  # as root, chmod cannot refuse a write
    assert "cannot write" in one_line_error(capsys, "init", str(tmp_path / "ro"))
    assert not (tmp_path / "ro" / "models.yaml").exists()


@pytest.mark.parametrize("flags, words", [
    (["--concepts", "-1"], "--concepts -1"),
    (["--concepts", "99999999999999999999"], "--concepts"),
    (["--cell", "nan"], "--cell nan"),
    (["--cell", "0"], "--cell 0"),
    (["--dpi", "0"], "--dpi 0"),
    (["--dpi", "2400", "--cell", "20"], "pixels"),
])
def test_figure_numbers_are_checked(tiny_config, tmp_path, capsys, flags, words):
    from benchmarks.synthetic_store import write_synthetic_store

    store = write_synthetic_store(tmp_path / "store", [1], ["tiny"], concepts=1, crops=1, attributions=1, link=False)
    line = one_line_error(capsys, "figure", "--config", str(tiny_config), "--store", str(store), "--classes", "1",
                          "--output", str(tmp_path / "fig"), *flags)
    assert words in line and not (tmp_path / "fig.png").exists()


def test_figure_output_that_cannot_be_written(tiny_config, tmp_path, capsys):
    from benchmarks.synthetic_store import write_synthetic_store

    store = write_synthetic_store(tmp_path / "store", [1], ["tiny"], concepts=1, crops=1, attributions=1, link=False)
    (tmp_path / "fig.png").mkdir()  # a folder where the PNG goes
    line = one_line_error(capsys, "figure", "--config", str(tiny_config), "--store", str(store), "--classes", "1",
                          "--output", str(tmp_path / "fig"))
    assert "cannot write" in line and "fig.png" in line


def test_layers_samples_and_spectrum_output_folder(tiny_config, tiny_images, tmp_path, capsys):
    assert "--samples 0" in one_line_error(capsys, "layers", "tiny", "--config", str(tiny_config), "--samples", "0")
    folder = tmp_path / "spectra"
    folder.mkdir()
    capsys.readouterr()
    assert main(["spectrum", "--images", str(tiny_images), "--config", str(tiny_config), "--output", str(folder)]) == 0
    written = list(folder.glob("*.npy"))
    assert len(written) == 1 and str(written[0]) in capsys.readouterr().out  # a folder gets <id>.npy inside it


def test_an_invalid_timm_tag_is_one_line(tmp_path, capsys):
    config = write_tiny_zoo(tmp_path, extra="  - {name: tagged, arch: resnet18, weights: {timm: no_such_tag}}\n")
    capsys.readouterr()
    assert main(["models", "--config", str(config)]) == 0  # the listing loads nothing: it says why on the model's row
    out = capsys.readouterr().out
    assert "key 'weights.timm'" in out and "no_such_tag" in out
    assert "key 'weights.timm'" in one_line_error(capsys, "layers", "tagged", "--config", str(config))
