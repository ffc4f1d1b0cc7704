"""Building an entry's network: the registry check (timm architecture, torchvision builder), the
timm / torchvision / factory builders, weights loaded strictly, and `lens models`' weight status."""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Iterator

from torch import nn

from ..config import ModelEntry, WeightsUsed
from ..errors import ModelError
from .checkpoints import apply_key_map, load_checkpoint, load_strict
from .weights import _hub_cached_file, _hub_offline, _hub_reachable, _timm_tagged, weights_path


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
    state = apply_key_map(entry, ck.state, module)
    load_strict(module, state, f"model '{entry.name}' ({source})")
    used = WeightsUsed(source=source, file=str(path), entry=ck.entry, other_entries=list(ck.other_entries),
                       prefixes_stripped=list(ck.prefixes_stripped), prefix_map=entry.prefix_map, key_map=entry.key_map)
    return module.eval(), used


def build_module(entry: ModelEntry, root: Path) -> nn.Module:
    """The network of an entry with its weights loaded strictly, on the CPU, in eval mode."""
    return build_model(entry, root)[0]


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
