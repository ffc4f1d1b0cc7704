"""CRAFT (Fel et al. CVPR 2023): concepts by a dictionary of patch activations, ranked by Sobol importance.

Steps, one function each: pick the class's images (those the model predicts as the class), cut
patches, pool their concept-layer activations, factorise them (rank r: NMF where the layer is
non-negative, Semi-NMF with non-negative codes for signed layers; `dictionary.py`), locate each
concept in the images, estimate importance (Sobol total indices through h; exact logit shares
where h is pool + linear), and keep the top crops and attribution maps. Everything after the
factorisation depends only on the codes U >= 0 and the bank W, so it is the same for every method.

Tokens (ViT): a patch is pooled as the head pools (class token or mean of patch tokens;
`LoadedModel.pooled`), patches are resized to the model's input size, and attribution maps show
the patch tokens on the image grid (prefix tokens have no place in it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .config import CraftSettings
from .dictionary import Dictionary, choose_method, make_dictionary
from .errors import CraftError
from .images import SourceImage
from .models import LoadedModel
from .sobol import jansen_total_indices, sobol_designs
from .tokens import as_tokens, token_boxes

Box = tuple[int, int, int, int]



# ----------------------------------------------------------------------------- geometry


def patch_starts(length: int, patch: int, stride: int) -> list[int]:
    """Patch origins along one side; the last patch is moved flush with the border so all is covered."""
    if patch >= length:
        return [0]
    starts = list(range(0, length - patch + 1, max(1, stride)))
    if starts[-1] + patch < length:
        starts.append(length - patch)
    return starts


def patch_boxes(size: int, patch: int, stride: int) -> list[Box]:
    """(x0, y0, x1, y1) boxes tiling a size x size view, row by row."""
    starts = patch_starts(size, patch, stride)
    return [(x, y, x + patch, y + patch) for y in starts for x in starts]


def view_region(width: int, height: int, crop_pct: float) -> tuple[float, float, float, float]:
    """The square of the original image that the model sees (timm eval: resize short side to
    input / crop_pct, centre crop input), in original pixel coordinates."""
    side = min(width, height) * crop_pct
    x0, y0 = (width - side) / 2, (height - side) / 2
    return (x0, y0, x0 + side, y0 + side)


def to_source_box(box: Box, region: tuple[float, float, float, float], view_size: int) -> list[int]:
    """A box in view pixels back to original-image pixels."""
    scale = (region[2] - region[0]) / view_size
    return [round(region[0] + box[0] * scale), round(region[1] + box[1] * scale),
            round(region[0] + box[2] * scale), round(region[1] + box[3] * scale)]


# ----------------------------------------------------------------------------- images


@dataclass
class View:
    """An image as the model sees it, with where it came from."""

    source: SourceImage
    region: tuple[float, float, float, float]
    pixels: Image.Image  # the region at display resolution (2x the model input)


def make_views(images: Sequence[SourceImage], model: LoadedModel) -> tuple[list[View], torch.Tensor]:
    """Views and their normalised model inputs (N, 3, S, S)."""
    p = model.preprocess
    resample = Image.Resampling.BICUBIC if p.interpolation == "bicubic" else Image.Resampling.BILINEAR
    views, tensors = [], []
    for src in images:
        region = view_region(*src.image.size, p.crop_pct)
        pixels = src.image.resize((2 * p.input_size, 2 * p.input_size), resample, box=region)
        small = pixels.resize((p.input_size, p.input_size), resample)
        views.append(View(src, region, pixels))
        tensors.append(torch.from_numpy(np.asarray(small, dtype=np.float32) / 255).permute(2, 0, 1))
    if not tensors:
        return [], torch.zeros(0, 3, p.input_size, p.input_size)
    return views, model.normalize(torch.stack(tensors).to(model.device))


@torch.no_grad()
def _batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int, bf16: bool) -> torch.Tensor:
    """fn over chunks of x, under bf16 autocast where the model uses it (callers cast outputs back to float)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        return torch.cat([fn(x[i : i + batch]) for i in range(0, len(x), batch)]) if len(x) else x


def select_images(model: LoadedModel, images: Sequence[SourceImage], class_index: int, settings: CraftSettings,
                  batch: int = 64) -> tuple[list[View], torch.Tensor, torch.Tensor, str]:
    """The images the model predicts as the class (up to max_images), else all of them.

    Returns the views, their model inputs, their concept-layer activations and which case
    applied: `predicted`, `all` (too few predicted correctly) or `none` (no usable image).
    """
    if not images:
        return [], torch.zeros(0), torch.zeros(0), "none"
    views, x = make_views(images, model)
    act = _batched(model.g, x, batch, model.autocast_bf16).float()
    predicted = _batched(model.h, act, 4 * batch, model.autocast_bf16).float().argmax(-1).cpu()
    keep = [i for i in range(len(views)) if predicted[i] == class_index][: settings.max_images]
    selection = "predicted"
    if len(keep) < min(settings.min_predicted, len(views)):
        keep, selection = list(range(min(len(views), settings.max_images))), "all"
    return [views[i] for i in keep], x[keep], act[keep], selection


# ----------------------------------------------------------------------------- concepts


def patch_activations(model: LoadedModel, x: torch.Tensor, boxes: Sequence[Box], batch: int = 64) -> torch.Tensor:
    """Each patch of each view resized to the model input, through g, spatially averaged: (N * P, C)."""
    size = x.shape[-1]
    out = []
    for start in range(0, len(x), max(1, batch // len(boxes))):
        chunk = x[start : start + max(1, batch // len(boxes))]
        patches = torch.cat([chunk[:, :, y0:y1, x0:x1] for (x0, y0, x1, y1) in boxes], dim=0)
        patches = F.interpolate(patches, size=(size, size), mode="bilinear", align_corners=False)
        pooled = model.pooled(_batched(model.g, patches, batch, model.autocast_bf16).float())
        # cat() above is patch-major; reorder to image-major so row = image * P + patch.
        out.append(pooled.view(len(boxes), len(chunk), -1).transpose(0, 1).reshape(len(chunk) * len(boxes), -1))
    return torch.cat(out)


def patch_side(model: LoadedModel, settings: CraftSettings) -> int:
    """CRAFT's patch side in input pixels: `patch_size` at a 224-pixel input, scaled with the input."""
    return max(8, round(settings.patch_size * model.preprocess.input_size / 224))


def dictionary_rows(model: LoadedModel, x: torch.Tensor, act: torch.Tensor,
                    settings: CraftSettings) -> tuple[torch.Tensor, list[Box], int]:
    """What the dictionary factorises, the input box each row shows, and the rows per view.

    `patches` (CRAFT 2023): crops of every view re-forwarded and pooled, (N * P, C). `tokens`
    (xplique's holistic CRAFT): the concept layer's own positions of the views already computed,
    (N * T, C), no further forward pass; a row's crop is the patch-sized square around its position.
    """
    size = model.preprocess.input_size
    patch = patch_side(model, settings)
    if settings.mode == "tokens":
        tokens = as_tokens(model, act)
        return tokens.reshape(-1, tokens.shape[-1]), token_boxes(model, patch), tokens.shape[1]
    boxes = patch_boxes(size, patch, max(1, round(patch * settings.patch_stride)))
    return patch_activations(model, x, boxes), boxes, len(boxes)


def check_non_negative(act: torch.Tensor, model: LoadedModel) -> None:
    low = float(act.min())
    if low < -1e-5:
        raise CraftError(
            f"model '{model.name}': concept layer '{model.entry.concept_layer}' has negative activations "
            f"(min {low:.3g}); NMF needs non-negative ones. Set `craft: {{method: semi-nmf}}` (or `auto`) for this "
            "model in models.yaml, or `concept_layer:` to a layer that follows a ReLU (`lens layers MODEL` lists them)"
        )


def concept_maps(model: LoadedModel, act: torch.Tensor, dictionary: Dictionary) -> torch.Tensor:
    """Concept coefficients at every position of each image's activations: (N, H, W, r) or (N, T, r)."""
    spatial = model.channels_last(act)
    flat = spatial.reshape(-1, spatial.shape[-1])
    assert dictionary.W is not None
    return dictionary.transform(flat).reshape(*spatial.shape[:-1], dictionary.W.shape[0])


def pooled_codes(model: LoadedModel, maps: torch.Tensor) -> torch.Tensor:
    """Concept coefficients pooled as the head pools activations: (N, r). Exact, as pooling is linear."""
    if maps.ndim == 4:
        return maps.flatten(1, -2).mean(1)
    return model.pooled(maps)


def _class_logit(model: LoadedModel, coefficients: torch.Tensor, W: torch.Tensor, class_index: int) -> torch.Tensor:
    """h on activations rebuilt from concept coefficients (..., r) -> class logit per leading row."""
    act = model.channels_first(coefficients @ W)
    return model.h(act)[:, class_index].float()


@torch.no_grad()
def sobol_totals(model: LoadedModel, maps: torch.Tensor, W: torch.Tensor, class_index: int,
                 designs: int, seed: int) -> torch.Tensor:
    """Per image, the Sobol total index of each concept for the class logit: (N, r).

    Each design multiplies every concept's coefficients by a mask value in [0, 1], everywhere
    in the image (CRAFT's perturbation).
    """
    r = W.shape[0]
    masks = sobol_designs(r, designs, seed).to(maps.device)
    totals = []
    for image_maps in maps:
        perturbed = image_maps[None] * masks.view(len(masks), *([1] * (image_maps.ndim - 1)), r)
        logits = torch.cat([_class_logit(model, chunk, W, class_index) for chunk in perturbed.split(256)])
        totals.append(jansen_total_indices(logits, designs, r))
    return torch.stack(totals) if totals else torch.zeros(0, r, device=maps.device)


def linear_totals(model: LoadedModel, maps: torch.Tensor, W: torch.Tensor, class_index: int) -> torch.Tensor | None:
    """Exact Sobol total indices where h is pool + linear: (N, r), or None for other heads.

    There the masked logit is b + sum_k m_k c_k with c_k = pooled(U_k) (W_k . w_c), linear in
    independent uniform masks, so S_Tk = c_k^2 Var(m) / Var(logit) = c_k^2 / sum_j c_j^2
    (checked against the estimator in tests/test_craft.py and benchmarks/bench_craft.py).
    """
    head = model.linear_head
    if head is None:
        return None
    c = pooled_codes(model, maps).float() * (W.float() @ head[0][class_index].float())  # (N, r)
    squares = c.square()
    return squares / squares.sum(1, keepdim=True).clamp(min=1e-30)


def concept_totals(model: LoadedModel, maps: torch.Tensor, W: torch.Tensor, class_index: int,
                   settings: CraftSettings) -> torch.Tensor:
    """Per image Sobol total indices: exact for pool + linear heads (no designs run), else estimated."""
    exact = linear_totals(model, maps, W, class_index)
    if exact is not None:
        return exact
    return sobol_totals(model, maps, W, class_index, settings.sobol_designs, settings.seed)


def logit_shares(model: LoadedModel, maps: torch.Tensor, W: torch.Tensor, class_index: int) -> torch.Tensor | None:
    """Where h is mean-pool + linear, the class logit is exactly bias + sum_k mean(U_k) (W_k . w_c).

    Each concept's term, averaged over images, as a signed fraction of the sum of |terms| (so the
    shares' magnitudes add up to 1). None where h is not pool + linear.
    """
    head = model.linear_head
    if head is None:
        return None
    weight, _ = head
    per_concept = pooled_codes(model, maps) * (W @ weight[class_index].float())  # (N, r)
    contribution = per_concept.mean(0)
    return contribution / contribution.abs().sum().clamp(min=1e-12)


@torch.no_grad()
def deletion_curves(model: LoadedModel, maps: torch.Tensor, W: torch.Tensor, class_index: int,
                    order: Sequence[int], seed: int, random_orders: int = 8) -> dict:
    """Class logit as concepts are removed one by one, in importance order and in random orders.

    Faithful importances make the logit fall fastest: a lower area under the curve.
    Also the drop from removing each single concept.
    """
    r = W.shape[0]

    def curve(seq: Sequence[int]) -> list[float]:
        keep = torch.ones(r + 1, r, device=maps.device)
        for step, k in enumerate(seq, start=1):
            keep[step:, k] = 0
        logits = torch.stack([_class_logit(model, maps * m, W, class_index).mean() for m in keep])
        return logits.cpu().tolist()

    full = curve([])[0]
    single = []
    for k in range(r):
        m = torch.ones(r, device=maps.device)
        m[k] = 0
        single.append(full - float(_class_logit(model, maps * m, W, class_index).mean()))
    gen = torch.Generator().manual_seed(seed)
    by_importance = curve(order)
    randoms = [curve(torch.randperm(r, generator=gen).tolist()) for _ in range(random_orders)]
    mean_random = np.mean(randoms, axis=0).tolist()
    span = max(abs(full), 1e-6)
    return {
        "curve_importance": by_importance,
        "curve_random": mean_random,
        # Normalised by the full logit so classes compare; trapezoid over fractions 0..1 removed.
        "auc_importance": _area(np.array(by_importance) / span),
        "auc_random": _area(np.array(mean_random) / span),
        "single_removal_drop": single,
    }


def _area(curve: np.ndarray) -> float:
    """Trapezoid area of a curve sampled at evenly spaced fractions 0..1."""
    return float((curve.sum() - (curve[0] + curve[-1]) / 2) / (len(curve) - 1))


# ----------------------------------------------------------------------------- result


@dataclass
class Crop:
    view: int  # index into CraftResult.views
    box: Box  # in view pixels (model input resolution)
    coefficient: float


@dataclass
class Concept:
    id: int  # dictionary component index
    importance: float
    logit_share: float | None
    direction: torch.Tensor  # (C,) W row: the direction visualised by MACO
    crops: list[Crop]
    removal_drop: float  # class logit drop when only this concept is removed


@dataclass
class CraftResult:
    concepts: list[Concept]  # ordered by importance, most important first
    views: list[View]
    maps: torch.Tensor  # (N, h, w, r) concept coefficients per image position (patch tokens on their grid)
    selection: str
    nmf_error: float  # relative reconstruction error of the dictionary, whatever its method
    deletion: dict
    timings: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    method: str | None = None  # the dictionary used: `nmf` or `semi-nmf` (meta.json: craft.method)
    # Per image, columns by concept id (the atlas's data: generator/concept_data.py, sidefiles.py):
    coefficients: torch.Tensor | None = None  # (N, r) maps pooled as the head pools (pooled_codes)
    image_importance: torch.Tensor | None = None  # (N, r) Sobol total indices (their mean is `importance`)


def run_craft(model: LoadedModel, images: Sequence[SourceImage], class_index: int, settings: CraftSettings) -> CraftResult:
    """Everything CRAFT computes for one class of one model."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    views, x, act, selection = select_images(model, images, class_index, settings)
    if not views:
        return CraftResult([], [], torch.zeros(0), "none", float("nan"), {}, timings, reason="no usable image for this class")
    rows, row_boxes, per_view = dictionary_rows(model, x, act, settings)
    method = choose_method(settings.method, rows, act)
    if method == "nmf":
        check_non_negative(rows, model)
        check_non_negative(act, model)
    _sync(model)
    timings["activations"] = time.perf_counter() - t

    t = time.perf_counter()  # the dictionary fit, whatever its method ("nmf" kept as the stage name)
    rank = min(settings.rank, rows.shape[0])
    dictionary = make_dictionary(method, rank, iters=settings.nmf_iters, seed=settings.seed)
    U, W = dictionary.fit(rows)
    if settings.mode == "tokens":  # the rows are the images' own tokens: their codes are the maps
        maps = U.reshape(*model.channels_last(act).shape[:-1], rank)
    else:
        maps = concept_maps(model, act, dictionary)
    _sync(model)
    timings["nmf"] = time.perf_counter() - t

    t = time.perf_counter()
    image_importance = concept_totals(model, maps, W, class_index, settings).cpu()
    importance = image_importance.mean(0)
    shares = logit_shares(model, maps, W, class_index)
    timings["sobol"] = time.perf_counter() - t

    order = sorted(range(rank), key=lambda k: -float(importance[k]))
    deletion = deletion_curves(model, maps, W, class_index, order, settings.seed)
    U = U.cpu()
    concepts = []
    for k in order:
        top = torch.argsort(U[:, k], descending=True)[: settings.top_crops].tolist()
        crops = [Crop(i // per_view, row_boxes[i % per_view], float(U[i, k])) for i in top]
        concepts.append(Concept(
            k, float(importance[k]), None if shares is None else float(shares[k]), W[k].cpu(), crops,
            float(deletion["single_removal_drop"][k]),
        ))
    return CraftResult(concepts, views, model.spatial_maps(maps).cpu(), selection, dictionary.relative_error, deletion,
                       timings, method=method, coefficients=pooled_codes(model, maps).float().cpu(),
                       image_importance=image_importance)


def _sync(model: LoadedModel) -> None:
    """Only for honest stage timings: CRAFT is not in MACO's step loop."""
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


# ----------------------------------------------------------------------------- pictures


def crop_image(view: View, box: Box, view_size: int, out_size: int = 128) -> Image.Image:
    """The patch, cut from the display-resolution view."""
    scale = view.pixels.size[0] / view_size
    return view.pixels.resize((out_size, out_size), Image.Resampling.BICUBIC, box=tuple(v * scale for v in box))


def attribution_overlay(view: View, concept_map: torch.Tensor, vmax: float, out_size: int = 256) -> Image.Image:
    """The concept's coefficient map upsampled over the image, as a heatmap blended on it."""
    import matplotlib

    heat = concept_map.float()
    if heat.ndim == 1:  # tokens: no spatial layout to show
        side = int(round(heat.numel() ** 0.5))
        heat = heat[-side * side :].view(side, side)
    heat = F.interpolate(heat[None, None], size=(out_size, out_size), mode="bilinear", align_corners=False)[0, 0]
    heat = (heat / max(vmax, 1e-12)).clamp(0, 1).numpy()
    colours = matplotlib.colormaps["inferno"](heat)[..., :3]
    base = np.asarray(view.pixels.resize((out_size, out_size), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    alpha = (0.15 + 0.7 * heat)[..., None]
    blended = (1 - alpha) * base * 0.85 + alpha * colours
    return Image.fromarray((blended * 255).round().astype(np.uint8))
