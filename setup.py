"""Build step only (metadata lives in pyproject.toml): copy the top-level `templates/` folder and the
default `models.yaml` into the package as `generator/_data/`, so that a wheel or `pip install .`
carries them. Editable installs read them in place (generator/resources.py)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        data = Path(self.build_lib) / "generator" / "_data"
        shutil.rmtree(data, ignore_errors=True)
        shutil.copytree(HERE / "templates", data / "templates", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copy2(HERE / "models.yaml", data / "models.yaml")


setup(cmdclass={"build_py": BuildPyWithData})
