"""The concept atlas's data: what the render writes beside CRAFT's concepts for the site's relations
(generator/site/relations.py reads it; benchmarks/synthetic_store.py writes the same formats).

Per class with CRAFT done (`<tag>` = the CRAFT settings hash's first 8 characters):

- `concepts/per_image.<tag>.npz` (meta `craft.files.per_image`): `coefficients` float32 (N, r), each
  image's concept coefficients pooled as the head pools the concept layer (CraftResult.coefficients),
  columns by concept id; `importance` float32 (N, r), each image's Sobol total indices (their mean
  over images is the concepts' `importance`); `sources` str (N,), the images' source ids. Where the
  head is linear the site computes the exact per-image logit terms coefficient_k * (W_k . w_class)
  from the coefficients and `head.npz`, so they are not stored twice.
- `concepts/thumbs.<tag>.jpg` (meta `craft.files.thumbs`): the N views as the model sees them,
  THUMB_CELL px squares, THUMB_COLS per row, row-major in `per_image` order.
- `concepts/photos/photo_<view>.<tag>.jpg` (meta `concepts[].attributions[].photo`): the plain view
  under a heatmap, same size and framing as the heatmap; one file per view, shared by concepts.

Per model, `<model>/head.npz` (model.json `head`): `weight` float32 (K, C), `bias` float32 (K,) and
`kind`: "linear" where h is mean-pool + linear (LoadedModel.linear_head: the rows themselves, exact);
"gradient" otherwise: row k is the gradient of logit k with respect to the pooled concept-layer
features, taken at the mean concept-layer activation of the bundled demo photos, for a spatially
uniform change (so the pooled vector moves by exactly that change); `bias` = logit - weight . pooled
there, so weight . p + bias is the head's first-order approximation around that point. Written
atomically under the model-card lock, and only when its key (arch, weights, concept layer, input
size) differs from the one model.json records.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from .craft import CraftResult, View, make_views
from .errors import StoreError
from .images import SourceImage
from .models import LoadedModel
from .records import ModelCard
from .store import Store, atomic_write_bytes, encode_jpeg

log = logging.getLogger("lens")

THUMB_CELL, THUMB_COLS = 64, 16  # = generator.site.relations.THUMB_CELL, THUMB_COLS (the site's sprite geometry)
PHOTO_SIZE = 256  # = craft.attribution_overlay's out_size: a photo lies exactly under its heatmap
HEAD = "head.npz"
HEAD_VERSION = 1
# Files of earlier CRAFT versions to delete once meta.json points at the new ones (workers.save_craft).
PRUNE_PATTERNS = ("concepts/per_image.*.npz", "concepts/thumbs.*.jpg", "concepts/photos/*")


# ----------------------------------------------------------------------------- encoding


def per_image_npz(result: CraftResult) -> bytes:
    """The `per_image` file of a CRAFT result (columns by concept id, rows in `result.views` order)."""
    if result.coefficients is None:
        raise ValueError("the CRAFT result has no per-image coefficients")
    arrays: dict[str, Any] = {"coefficients": result.coefficients.float().numpy().astype(np.float32),
                              "sources": np.array([v.source.source for v in result.views], dtype=str)}
    if result.image_importance is not None:
        arrays["importance"] = result.image_importance.float().numpy().astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def thumbs_image(views: Sequence[View]) -> Image.Image:
    """The views as THUMB_CELL px squares, THUMB_COLS per row (fewer columns when there are fewer views)."""
    cols = max(1, min(THUMB_COLS, len(views)))
    rows = max(1, math.ceil(len(views) / cols))
    sheet = Image.new("RGB", (cols * THUMB_CELL, rows * THUMB_CELL))
    for i, view in enumerate(views):
        cell = view.pixels.resize((THUMB_CELL, THUMB_CELL), Image.Resampling.BICUBIC)
        sheet.paste(cell.convert("RGB"), ((i % cols) * THUMB_CELL, (i // cols) * THUMB_CELL))
    return sheet


def photo_image(view: View) -> Image.Image:
    """The plain view under a heatmap: resized exactly as craft.attribution_overlay resizes its base."""
    return view.pixels.resize((PHOTO_SIZE, PHOTO_SIZE), Image.Resampling.BILINEAR)


class ClassData:
    """Writes one class's atlas files during workers.save_craft; `written` lists them (to keep on prune)."""

    def __init__(self, store: Store, model: str, class_index: int, result: CraftResult, tag: str):
        self.store, self.model, self.class_index, self.result, self.tag = store, model, class_index, result, tag
        self.written: set[str] = set()
        self._photos: dict[int, str] = {}

    def write(self) -> dict[str, str]:
        """`per_image` and `thumbs`: the entries for `craft.files` (none without per-image coefficients)."""
        if self.result.coefficients is None or not self.result.views:
            return {}
        files = {"per_image": f"concepts/per_image.{self.tag}.npz", "thumbs": f"concepts/thumbs.{self.tag}.jpg"}
        self.store.write_file(self.model, self.class_index, files["per_image"], per_image_npz(self.result))
        self.store.write_file(self.model, self.class_index, files["thumbs"], encode_jpeg(thumbs_image(self.result.views)))
        self.written.update(files.values())
        return files

    def photo(self, view: int) -> str:
        """The photo of view `view` (written on first use)."""
        if view not in self._photos:
            rel = f"concepts/photos/photo_{view}.{self.tag}.jpg"
            self.store.write_file(self.model, self.class_index, rel, encode_jpeg(photo_image(self.result.views[view])))
            self._photos[view] = rel
            self.written.add(rel)
        return self._photos[view]


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


def head_npz(weight: np.ndarray, bias: np.ndarray, kind: str) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, weight=weight.astype(np.float32), bias=bias.astype(np.float32), kind=np.array(kind))
    return buf.getvalue()


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
    key = head_key(m)
    path = store.root / m.name / HEAD
    kind: list[str] = []

    def change(card: ModelCard) -> None:
        if card.head and card.head.get("key") == key and path.is_file():
            kind.append(str(card.head.get("kind")))
            return
        weight, bias, k = model_head(m, images)
        atomic_write_bytes(path, head_npz(weight, bias, k))
        card.head = {"file": HEAD, "kind": k, "key": key}
        kind.append(k)

    try:
        store.update_model_card(m.name, change)
    except StoreError:
        raise
    except Exception as e:  # noqa: BLE001 - an optional file of the atlas must never stop a render
        log.warning("%s: head.npz not written (%s: %s); the atlas will show no aligned classes", m.name, type(e).__name__, e)
        return None
    return kind[0] if kind else None
