"""Build a model of the zoo: timm architecture, weights from a package, a file or the hub, strict load.

This is the one place that knows how to turn a `models.yaml` entry into a ready model. The
preprocessing (input size, mean, std, interpolation) travels with it, as in timm, and the model is
split at its concept layer into g (input -> activations) and h (activations -> logits) for CRAFT.

A module per job, in timm's manner (lower ones never import higher ones): `devices` (which device)
and `checkpoints` (reading a file: tensors only, wrappers, prefixes, key maps, strict load) ->
`weights` (where an entry's weights are: file, package, hub cache) and `preprocess` (what the model
expects as input) -> `build` (the registry check and the timm / torchvision / factory builders) and
`layers` (clean cuts, the g/h split, `lens layers`) -> `loaded` (`LoadedModel`, `load_model`). This
package re-exports every name `generator.models` had as a single module; a test that swaps a piece
patches it in the module that looks it up (e.g. `generator.models.build` for the builders).
"""

from __future__ import annotations

from ..config import ModelEntry, WeightsUsed
from ..errors import ModelError
from ..keymaps import KEY_MAPS, StateDict
from .build import (
    _create,
    _factory_module,
    _fresh_module,
    _timm_pretrained,
    _torchvision_module,
    build_model,
    build_module,
    check_arch,
    check_weights,
    weights_status,
)
from .checkpoints import (
    CHECKPOINT_SAFE_GLOBALS,
    CHECKPOINT_SUFFIXES,
    WRAPPER_KEYS,
    WRAPPER_PREFIXES,
    Checkpoint,
    apply_key_map,
    is_checkpoint_name,
    load_checkpoint,
    load_strict,
    map_prefixes,
    read_checkpoint,
    strip_wrapper_prefixes,
    unwrap,
    unwrap_checkpoint,
)
from .devices import resolve_device
from .layers import GraphCuts, LayerRow, feature_node, graph_cuts, has_timm_split, layer_table, split_at_layer
from .loaded import LoadedModel, load_model
from .preprocess import Preprocess, preprocess_of
from .weights import _hub_cached_file, weights_path

__all__ = [
    "CHECKPOINT_SAFE_GLOBALS", "CHECKPOINT_SUFFIXES", "KEY_MAPS", "WRAPPER_KEYS", "WRAPPER_PREFIXES",
    "Checkpoint", "GraphCuts", "LayerRow", "LoadedModel", "ModelEntry", "ModelError", "Preprocess", "StateDict", "WeightsUsed",
    "_create", "_factory_module", "_fresh_module", "_hub_cached_file", "_timm_pretrained", "_torchvision_module",
    "apply_key_map", "build_model", "build_module", "check_arch", "check_weights", "feature_node", "graph_cuts", "has_timm_split",
    "is_checkpoint_name", "layer_table", "load_checkpoint", "load_model", "load_strict", "map_prefixes", "preprocess_of",
    "read_checkpoint", "resolve_device", "split_at_layer", "strip_wrapper_prefixes", "unwrap", "unwrap_checkpoint",
    "weights_path", "weights_status",
]
