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
