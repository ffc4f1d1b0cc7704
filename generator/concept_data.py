"""The concept atlas's data as CRAFT and the model give it: per-image records of a CRAFT result and
the model's head in the pooled concept-layer space. The files' names, formats, writers and readers
are generator/sidefiles.py's (the store layer); this module only computes what goes in them.

The head (`head.npz`): "linear" where h is mean-pool + linear (LoadedModel.linear_head: the rows
themselves, exact); "gradient" otherwise: row k is the gradient of logit k with respect to the pooled
concept-layer features, taken at the mean concept-layer activation of the bundled demo photos, for a
spatially uniform change (so the pooled vector moves by exactly that change); `bias` = logit -
weight . pooled there, so weight . p + bias is the head's first-order approximation around that
point. It is recomputed only when its key (arch, weights, concept layer, input size) changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from . import sidefiles
from .craft import CraftResult, make_views
from .images import SourceImage
from .models import LoadedModel
from .sidefiles import HEAD_VERSION
from .store import Store

# ----------------------------------------------------------------------------- per class


def directions(result: CraftResult) -> np.ndarray:
    """The concept vectors (r, C), rows by concept id (the `directions` file)."""
    return np.stack([c.direction.numpy() for c in sorted(result.concepts, key=lambda c: c.id)]).astype(np.float32)


def per_image(result: CraftResult) -> sidefiles.PerImage | None:
    """A CRAFT result's per-image records (columns by concept id, rows in `result.views` order), if it has them."""
    if result.coefficients is None:
        return None
    importance = result.image_importance.float().numpy() if result.image_importance is not None else None
    return sidefiles.PerImage(result.coefficients.float().numpy().astype(np.float32), importance,
                              [v.source.source for v in result.views])


def class_files(store: Store, model: str, class_index: int, result: CraftResult, tag: str) -> sidefiles.ClassFiles:
    """The writer of one class's side files, fed from a CRAFT result (workers.save_craft)."""
    return sidefiles.ClassFiles(store, model, class_index, tag, [v.pixels for v in result.views], per_image(result))


# ----------------------------------------------------------------------------- the head


def _lift(m: LoadedModel, d: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A spatially uniform concept-layer change whose pooled value (LoadedModel.pooled) is d (B, C)."""
    if like.ndim == 4:
        return d[:, :, None, None].expand(len(d), *like.shape[1:])
    out = torch.zeros(len(d), *like.shape[1:], dtype=d.dtype, device=d.device)
    if m.token_pool == "cls":
        out[:, 0] = d
    else:
        out[:, m.num_prefix_tokens :] = d[:, None, :]
    return out


def gradient_head(m: LoadedModel, images: Sequence[SourceImage], chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(weight (K, C), bias (K,)): the head linearised at the images' mean concept-layer activation A0.

    Row k = d logit_k(A0 + lift(p)) / dp at p = 0, one backward per chunk of classes (each class's
    own copy of the input in the batch); bias = logit(A0) - weight . pooled(A0)."""
    _, x = make_views(images, m)
    if not len(x):
        raise ValueError("no image to linearise the head at")
    with torch.no_grad():
        a0 = torch.cat([m.g(x[i : i + 16]).float() for i in range(0, len(x), 16)]).mean(0, keepdim=True)
        logits0 = m.h(a0).float()[0]
        p0 = m.pooled(a0).float()[0]
    k_total, c = len(logits0), len(p0)
    weight = torch.zeros(k_total, c)
    for start in range(0, k_total, chunk):
        ks = torch.arange(start, min(start + chunk, k_total), device=a0.device)
        d = torch.zeros(len(ks), c, device=a0.device, requires_grad=True)
        with torch.enable_grad():
            out = m.h(a0 + _lift(m, d, a0)).float()
            out[torch.arange(len(ks)), ks].sum().backward()
        weight[start : start + len(ks)] = d.grad.detach().cpu()  # type: ignore[union-attr]
    bias = logits0.cpu() - weight @ p0.cpu()
    return weight.numpy().astype(np.float32), bias.numpy().astype(np.float32)


def model_head(m: LoadedModel, images: Sequence[SourceImage] | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(weight, bias, kind) of `head.npz`; `images` (default: the demo photos) only for a gradient head."""
    head = m.linear_head
    if head is not None:
        weight, bias = (t.detach().float().cpu().numpy().astype(np.float32) for t in head)
        return weight, bias, "linear"
    if images is None:
        from .images import demo_photos

        images = demo_photos()
    weight, bias = gradient_head(m, images)
    return weight, bias, "gradient"


def head_key(m: LoadedModel) -> str:
    """What the head depends on; model.json records it so a later load does not recompute the head."""
    e = m.entry
    return f"v{HEAD_VERSION}|{e.architecture}|{e.weights.describe()}|{e.concept_layer}|{m.preprocess.input_size}"


def write_head(store: Store, m: LoadedModel, concept_layer: str,
               images: Sequence[SourceImage] | None = None) -> str | None:
    """`<model>/head.npz` for the concept layer CRAFT uses, unless model.json says it is current.

    Returns its kind, or None when not written: the model was loaded without that concept layer
    (`--what maco`, or the layer failed), or the head could not be linearised (logged; the atlas
    then shows no aligned classes). A store that cannot be written raises StoreError."""
    if m.entry.concept_layer != concept_layer:
        return None
    return sidefiles.write_head(store, m.name, head_key(m), lambda: model_head(m, images))
