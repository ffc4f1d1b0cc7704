"""Checkpoint key conversions, named in `models.yaml` by `key_map:`.

Each converter takes the checkpoint's state dict and the freshly built timm model (for its
structure) and returns a state dict in the model's own key layout. Loading stays strict.
"""

from __future__ import annotations

import re
from typing import Callable

import torch
from torch import nn

StateDict = dict[str, torch.Tensor]

_EP_BLOCK = re.compile(r"^_blocks\.(\d+)\.(_\w+?)\.(.+)$")
_EP_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# efficientnet_pytorch's MBConv names its layers the same whether or not it expands; timm's
# InvertedResidual (expanding) and DepthwiseSeparable (not) number their norms differently.
_EP_EXPANDING = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
    "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl", "_bn2": "bn3",
}
_EP_SEPARABLE = {
    "_depthwise_conv": "conv_dw", "_bn1": "bn1",
    "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pw", "_bn2": "bn2",
}


def efficientnet_pytorch(state: StateDict, model: nn.Module) -> StateDict:
    """lukemelas/efficientnet_pytorch layout (`_blocks.N._expand_conv`) to timm's (`blocks.stage.block.conv_pw`).

    The flat block number N is placed into (stage, block) using the stage lengths of the timm model.
    """
    stage_lengths = [len(stage) for stage in model.blocks]  # type: ignore[union-attr,arg-type]
    places = [(s, b) for s, n in enumerate(stage_lengths) for b in range(n)]
    expanding = {int(m.group(1)) for k in state if (m := _EP_BLOCK.match(k)) and m.group(2) == "_expand_conv"}
    out: StateDict = {}
    for key, value in state.items():
        if m := _EP_BLOCK.match(key):
            n, layer, rest = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(places):
                raise KeyError(f"checkpoint block {n} does not exist in a model with {len(places)} blocks")
            table = _EP_EXPANDING if n in expanding else _EP_SEPARABLE
            if layer not in table:
                raise KeyError(f"unknown layer '{layer}' in checkpoint key '{key}'")
            stage, block = places[n]
            out[f"blocks.{stage}.{block}.{table[layer]}.{rest}"] = value
        else:
            top, _, rest = key.partition(".")
            if top not in _EP_TOP:
                raise KeyError(f"unknown checkpoint key '{key}'")
            out[f"{_EP_TOP[top]}.{rest}"] = value
    return out


KEY_MAPS: dict[str, Callable[[StateDict, nn.Module], StateDict]] = {
    "efficientnet_pytorch": efficientnet_pytorch,
}
