"""Packaging: a wheel built from the sdist (what `python -m build` does) carries the templates, the
default zoo and every asset; installed outside the source tree it builds a site, `lens init`
works, and nothing is written into the installed package or the checkout.

Offline: the wheel is built with this venv's setuptools (no build isolation, no download) and
installed with `pip install --no-deps --target`; the test then runs it with PYTHONPATH pointing
there, from a temporary folder, and checks that `generator` was imported from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from benchmarks.synthetic_store import write_synthetic_store

from .conftest import REPO

SOURCES = ("generator", "templates", "models.yaml", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md")


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """sdist of a clean copy of the sources, then a wheel built from the unpacked sdist."""
    if importlib_missing("setuptools"):
        pytest.skip("setuptools is not installed in this environment: cannot build the wheel offline")
    tmp = tmp_path_factory.mktemp("build")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_data"))
        else:
            shutil.copy2(path, src / name)
    hook = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    sdist_name = _run([sys.executable, "-c", hook, str(tmp / "sdist")], cwd=src).stdout.strip().splitlines()[-1]
    with tarfile.open(tmp / "sdist" / sdist_name) as tar:
        tar.extractall(tmp / "unpacked", filter="data")
    unpacked = next((tmp / "unpacked").iterdir())
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(tmp / "dist"),
          str(unpacked)], cwd=tmp)
    [whl] = (tmp / "dist").glob("lens_gallery-*.whl")
    return whl


def importlib_missing(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


def test_wheel_carries_templates_default_zoo_and_assets(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {f"generator/_data/templates/{f}" for f in _files(REPO / "templates")}
    assert templates and templates <= names, sorted(templates - names)
    assert "generator/_data/models.yaml" in names
    assert zipfile.ZipFile(wheel).read("generator/_data/models.yaml") == (REPO / "models.yaml").read_bytes()
    assert any(n.endswith("entry_points.txt") for n in names)
    assert not any(n.startswith(("templates/", "tests/", "benchmarks/")) for n in names)


def test_installed_wheel_builds_a_site_outside_the_source_tree(wheel, tmp_path):
    target = tmp_path / "installed"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)], cwd=tmp_path)
    installed_before = _files(target)
    checkout_before = _files(REPO / "templates") | {p.name for p in REPO.iterdir()}
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    work = tmp_path / "work"
    work.mkdir()

    where = _run([sys.executable, "-c", "import generator.resources as r; print(r.templates_dir()); print(r.default_zoo_path())"],
                 cwd=work, env=env).stdout.split()
    assert all(Path(p).is_relative_to(target / "generator" / "_data") for p in where), where

    write_synthetic_store(work / "artifacts", [0, 1, 967], ["efficientnet-lite0"], concepts=2, crops=2, attributions=1)
    lens = [str(target / "bin" / "lens")] if (target / "bin" / "lens").exists() else [sys.executable, "-m", "generator"]
    done = _run([*lens, "site", "--no-progress"], cwd=work, env=env)
    assert f"lens: config: the embedded default zoo ({target / 'generator' / '_data' / 'models.yaml'})" in done.stderr
    site = work / "site"
    assert (site / "index.html").is_file() and (site / "classes" / "0967.html").is_file()
    assert "efficientnet-lite0" in (site / "classes" / "0967.html").read_text()

    project = tmp_path / "project"
    project.mkdir()
    _run([*lens, "init"], cwd=project, env=env)
    assert (project / "models.yaml").read_bytes() == (target / "generator" / "_data" / "models.yaml").read_bytes()
    done = _run([*lens, "models"], cwd=project, env=env)
    assert f"lens: config: {project / 'models.yaml'}" in done.stderr
    assert "efficientnet-lite0" in done.stdout

    assert _files(target) == installed_before  # nothing written into the installed package
    assert _files(REPO / "templates") | {p.name for p in REPO.iterdir()} == checkout_before


def test_editable_install_reads_the_checkout_templates_and_zoo(tmp_path):
    """`pip install -e .` (README's first command) goes through setup.py too: it must keep working."""
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        (shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__")) if path.is_dir()
         else shutil.copy2(path, src / name))
    hook = "import sys; from setuptools import build_meta as b; print(b.build_editable(sys.argv[1]))"
    name = _run([sys.executable, "-c", hook, str(tmp_path / "dist")], cwd=src).stdout.strip().splitlines()[-1]
    target = tmp_path / "installed"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target),
          str(tmp_path / "dist" / name)], cwd=tmp_path)
    # --target does not process .pth files (the editable finder): addsitedir does, as site-packages would.
    code = (f"import site; site.addsitedir({str(target)!r}); import generator, generator.resources as r; "
            "print(generator.__file__); print(r.templates_dir()); print(r.default_zoo_path())")
    where = _run([sys.executable, "-S", "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""}).stdout.split()
    assert where == [str(src / "generator" / "__init__.py"), str(src / "templates"), str(src / "models.yaml")]
