"""Files the package ships: the site templates and the embedded default zoo.

In a source checkout (or an editable install) they live at the top of the repository
(`templates/`, `models.yaml`); a built wheel carries copies under `generator/_data/` (setup.py's
build step puts them there). These functions are the one place that knows both layouts: the
packaged copy wins, so an installed wheel never reads from a folder that merely happens to sit
next to it.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = "_data"


def _packaged(name: str) -> Path | None:
    item = importlib.resources.files(__package__) / DATA_DIR / name
    # Wheels are installed unpacked, so the Traversable is a real path.
    return Path(str(item)) if item.is_file() or item.is_dir() else None


def templates_dir() -> Path:
    """The Jinja/MkDocs templates folder (with `assets/` and `docs/`)."""
    found = _packaged("templates") or _SOURCE_ROOT / "templates"
    if not found.is_dir():
        raise FileNotFoundError(f"the site templates are missing from this installation ({found}); reinstall lens-gallery")
    return found


def default_zoo_path() -> Path:
    """The embedded default `models.yaml` (the three EfficientNet-Lite models and the demo preset)."""
    found = _packaged("models.yaml") or _SOURCE_ROOT / "models.yaml"
    if not found.is_file():
        raise FileNotFoundError(f"the default models.yaml is missing from this installation ({found}); reinstall lens-gallery")
    return found
