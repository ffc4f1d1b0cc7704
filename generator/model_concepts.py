"""The model-wide concept dictionary at work: its training sample, its importance through the head,
and the checks of its faithfulness (issue 19 §2, §3, §6).

- `sample_tokens`: the dictionary's training set from one streamed token pass (`tokens.py`), a
  seeded sample of `tokens_per_image` tokens per image, so memory grows with images x sample and
  never with every token.
- `head_terms`: each atom's part of a class logit. Pool + linear head (logit = b + w . pool(x)):
  x = z D + b_dec + e exactly (e the reconstruction residual) and pooling is linear, so
  logit_c = [b_c + w_c . b_dec] + sum_k pool(z)_k Γ_kc + w_c . pool(e), Γ = D W^T: atoms, bias and
  residual add up to the logit exactly. Other heads: gradient x input on the codes, the rest of
  the logit (bias, residual, non-linearity) as its own term, so the parts still add up.
- `evaluate`: R² and top-1 agreement of the head on reconstructions, and deletion of a class's
  top atoms against random firing atoms, image by image in a second streamed pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from PIL import Image

from .models import LoadedModel
from .sae import TopKSAE, encode_batched
from .tokens import stream_tokens


def sample_tokens(model: LoadedModel, images: Sequence[Image.Image], per_image: int, seed: int, batch: int = 32,
                  flips: bool = False, on_image: Callable[[int], None] | None = None) -> torch.Tensor:
    """`per_image` tokens of each image (all where it has fewer), drawn by a generator seeded by
    (seed, image index): (n_images * per_image, C) float32 on the CPU, in image order."""
    out = []
    for part in stream_tokens(model, images, batch=batch, flips=flips):
        tokens = part.tokens.cpu()
        for row, index in zip(tokens, part.indices):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + index)
            pick = torch.randperm(len(row), generator=gen)[:per_image]
            out.append(row[pick])
        if on_image is not None:
            on_image(len(part.indices))
    return torch.cat(out) if out else torch.zeros(0, model.num_concept_channels)


@dataclass
class ImageTerms:
    """One image's logit for one class, split: `atoms` (atoms,), `bias`, `residual` (sum = `logit`)."""

    logit: float
    atoms: torch.Tensor
    bias: float
    residual: float


@torch.no_grad()
def _codes(model: LoadedModel, sae: TopKSAE, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (T, atoms) of one image's tokens (T, C) and its residual (T, C)."""
    z = encode_batched(sae, tokens)
    return z, tokens - sae.decode(z)


def _pool(model: LoadedModel, tokens: torch.Tensor) -> torch.Tensor:
    """One image's tokens (T, ...) pooled as the head pools them."""
    if len(model.act_shape) == 3:  # feature map: positions are the tokens
        return tokens.mean(0)
    return model.pooled(tokens[None])[0]


def as_layer(model: LoadedModel, tokens: torch.Tensor) -> torch.Tensor:
    """Tokens (n, T, C) back to the concept layer's layout."""
    if len(model.act_shape) == 3:
        c, h, w = model.act_shape
        return tokens.reshape(len(tokens), h, w, c).permute(0, 3, 1, 2)
    return tokens


def head_terms(model: LoadedModel, sae: TopKSAE, tokens: torch.Tensor, class_index: int) -> ImageTerms:
    """One image's class logit split over atoms, bias and residual (module docstring)."""
    tokens = tokens.float().cpu()
    z, e = _codes(model, sae, tokens)
    head = model.linear_head
    if head is not None:
        w, b = head[0][class_index].float().cpu(), float(head[1][class_index])
        gamma = sae.D.detach() @ w  # (atoms,): Γ's column for the class
        atoms = _pool(model, z) * gamma
        bias = b + float(sae.b_dec.detach() @ w)
        residual = float(_pool(model, e) @ w)
        return ImageTerms(float(atoms.sum()) + bias + residual, atoms, bias, residual)
    return gradient_terms(model, sae, z, e, class_index)


def gradient_terms(model: LoadedModel, sae: TopKSAE, z: torch.Tensor, e: torch.Tensor, class_index: int) -> ImageTerms:
    """Gradient x input on one image's codes z (T, atoms), residual e (T, C); the rest of the logit as `residual`."""
    z = z.clone().requires_grad_(True)
    x = z @ sae.D.detach() + sae.b_dec.detach() + e
    logit = model.h(as_layer(model, x[None]).to(model.device))[0, class_index].float()
    (grad,) = torch.autograd.grad(logit, z)
    atoms = (grad * z).sum(0).detach()
    value = float(logit.detach())
    return ImageTerms(value, atoms, 0.0, value - float(atoms.sum()))


def class_shares(terms: Sequence[ImageTerms]) -> dict:
    """A class's shares: the mean of each part over its images, as % of the mean logit (sum 100 %)."""
    logit = sum(t.logit for t in terms) / len(terms)
    atoms = torch.stack([t.atoms for t in terms]).mean(0)
    scale = 100 / logit if abs(logit) > 1e-12 else float("nan")
    return {"logit": logit, "atoms": (atoms * scale).tolist(),
            "bias": sum(t.bias for t in terms) / len(terms) * scale,
            "residual": sum(t.residual for t in terms) / len(terms) * scale}


@torch.no_grad()
def deletion_drops(model: LoadedModel, sae: TopKSAE, tokens: torch.Tensor, class_index: int, top: Sequence[int],
                   generator: torch.Generator, draws: int = 8) -> tuple[float, float]:
    """Class-logit drop from removing the `top` atoms' parts (z_k D_k) from the image's tokens, and
    the mean drop over `draws` sets of as many random atoms among those that fire on the image."""
    tokens = tokens.float().cpu()
    z = encode_batched(sae, tokens)
    D = sae.D.detach()
    firing = [k for k in torch.nonzero(z.sum(0) > 0).flatten().tolist() if k not in set(top)]
    sets = [list(top)]
    for _ in range(draws if len(firing) >= len(top) else 0):
        sets.append([firing[i] for i in torch.randperm(len(firing), generator=generator)[: len(top)].tolist()])
    variants = [tokens] + [tokens - z[:, idx] @ D[idx] for idx in (torch.as_tensor(s, dtype=torch.long) for s in sets)]
    logits = model.h(as_layer(model, torch.stack(variants)).to(model.device))[:, class_index].float().cpu()
    drops = logits[0] - logits[1:]
    return float(drops[0]), (float(drops[1:].mean()) if len(drops) > 1 else float("nan"))


@torch.no_grad()
def reconstruction(model: LoadedModel, sae: TopKSAE, tokens: torch.Tensor) -> dict:
    """For a batch of images' tokens (n, T, C): the head's top-1 on the tokens and on their reconstructions,
    and the squared error and spread sums that R² is made of."""
    flat = tokens.float().cpu().reshape(-1, tokens.shape[-1])
    rebuilt = sae.decode(encode_batched(sae, flat)).reshape(tokens.shape)
    original = model.h(as_layer(model, tokens.to(model.device))).argmax(-1).cpu()
    replaced = model.h(as_layer(model, rebuilt.to(model.device))).argmax(-1).cpu()
    return {"top1": original, "top1_rebuilt": replaced, "error": float((tokens.cpu() - rebuilt).square().sum()),
            "sum": flat.sum(0), "sum_sq": float(flat.square().sum()), "count": len(flat)}
