"""Reading a checkpoint file: tensors only (safetensors, or torch.load with weights_only=True and a
few safe globals), the state dict inside training wrappers (EMA first), wrapper prefixes, `prefix_map:`,
`key_map:` conversions, and the strict load that names every key that does not fit."""

from __future__ import annotations

import argparse
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import ModelEntry
from ..errors import ModelError
from ..keymaps import KEY_MAPS, StateDict

# `.pth.tar` is what timm's train.py writes (`model_best.pth.tar`), `.ckpt` Lightning; Path.suffix would see `.tar`.
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".pth.tar", ".ckpt")


def is_checkpoint_name(name: str) -> bool:
    """Whether a file name ends with one of CHECKPOINT_SUFFIXES."""
    return name.lower().endswith(CHECKPOINT_SUFFIXES)


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


def apply_key_map(entry: ModelEntry, state: StateDict, module: nn.Module) -> StateDict:
    """`key_map:` of models.yaml: the named KEY_MAPS conversion of the state dict to `module`'s keys
    (unchanged without one). An unknown name, or one that does not fit, is a ModelError naming the model."""
    if entry.key_map is None:
        return state
    source = entry.weights.describe()
    if entry.key_map not in KEY_MAPS:
        known = ", ".join(KEY_MAPS)
        raise ModelError(f"model '{entry.name}': key 'key_map': unknown conversion '{entry.key_map}' (known: {known})")
    try:
        return KEY_MAPS[entry.key_map](state, module)
    except (KeyError, AttributeError, TypeError) as e:
        raise ModelError(f"model '{entry.name}': key_map '{entry.key_map}' does not fit {source}: {e}") from None
