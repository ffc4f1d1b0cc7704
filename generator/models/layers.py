"""Where a model splits at its concept layer: the traced graph's clean cuts (no skip connection flows
past them), the g/h split, the `features` node, and the table of candidate layers for `lens layers`."""

from __future__ import annotations

import difflib
import inspect
import math
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import ModelError


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
