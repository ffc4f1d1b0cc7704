"""The dictionary's atlas: what its pages, map and matches need, from one encode pass of its photos
after training (issue 19 §4-§5). Computations only (torch, numpy, scikit-learn); the dictionary
unit (generator/workers/dictionary_unit.py) turns the result into the store's records.

One streamed pass over the photo views (`tokens.stream_tokens`), a batch of views at a time, keeps
per-batch summaries and never every token:

- each atom's firing frequency (fraction of tokens where its code is > 0) and energy (its share of
  sum z²);
- each class's shares of its logit (`model_concepts.head_terms`, summed over the class's views,
  then `class_shares` of their mean: atoms, bias and residual add to 100 %);
- co-occurrence: for every pair of atoms, the tokens where both fire (sparse pair counts: at most
  k² pairs per token), hence Jaccard = both / either;
- each token's top-k codes (`codes`, for cross-model matching);
- per atom, the views where its code peaks highest (a running top list: value, view, token).

Then a seeded t-SNE (scikit-learn; PCA to 50 dimensions first when the layer is wider) of the
alive atoms' decoder rows places them on a 2-D map, and `regions` re-encodes only the views the
shown atoms need and cuts their crops and code maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .craft import crop_image, make_views
from .images import SourceImage
from .model_concepts import ImageTerms, class_shares, head_terms
from .models import LoadedModel
from .sae import TopKSAE
from .tokens import stream_tokens, token_box

PCA_DIMS = 50  # t-SNE on more dimensions than this goes through PCA first (scikit-learn's advice)
CANDIDATES = 3  # running top list per atom: this many x the regions shown, so one view per photo remains


@dataclass
class Grid:
    """Where a token lies: its row-major position on an (h, w) grid after `prefix` tokens (a ViT's class
    and register tokens, which have no place)."""

    h: int
    w: int
    prefix: int = 0


def layer_grid(model: LoadedModel) -> Grid | None:
    """The concept layer's token grid: a feature map's (h, w), a ViT's square patch grid; None without one."""
    if len(model.act_shape) == 3:
        return Grid(int(model.act_shape[1]), int(model.act_shape[2]))
    patches = model.act_shape[0] - model.num_prefix_tokens
    n = int(round(patches**0.5))
    return Grid(n, n, model.num_prefix_tokens) if n * n == patches and n > 0 else None


@dataclass
class Atlas:
    """The atlas of one dictionary, as arrays (the unit makes records of it)."""

    head_kind: str  # linear | gradient
    n_views: int
    n_tokens: int
    frequency: np.ndarray  # (atoms,)
    energy: np.ndarray  # (atoms,), sums to 1 where anything fires
    shares: dict[int, dict]  # class -> model_concepts.class_shares(...) + "n_images"
    cooccur: dict[int, list[tuple[int, float]]]  # alive atom -> up to `top` (atom, Jaccard), best first
    xy: dict[int, tuple[float, float]]  # alive atom -> its point on the map, in [0, 1]²
    grid: Grid | None
    indices: np.ndarray  # int16 (views, h*w, k): each grid token's top-k atoms (empty without a grid)
    values: np.ndarray  # float16 (views, h*w, k)
    peaks: dict[int, list[tuple[float, int, int]]] = field(default_factory=dict)  # atom -> (code, view, token), best first

    @property
    def alive(self) -> np.ndarray:
        return self.frequency > 0

    def top_atoms(self, class_index: int, top: int) -> list[tuple[int, float]]:
        """The class's `top` atoms by share (% of its logit), positive shares only, best first."""
        share = np.asarray(self.shares[class_index]["atoms"])
        order = [int(k) for k in np.argsort(-share, kind="stable")[:top]]
        return [(k, float(share[k])) for k in order if share[k] > 0]

    def shown(self, top: int) -> list[int]:
        """Alive atoms among some class's `top` atoms: they get pages and MACOs (index order)."""
        return sorted({k for c in self.shares for k, _ in self.top_atoms(c, top) if self.alive[k]})

    def users(self, atom: int, top: int) -> list[tuple[int, float]]:
        """The `top` classes using the atom most, by (positive) share, best first."""
        found = [(c, float(s["atoms"][atom])) for c, s in self.shares.items() if s["atoms"][atom] > 0]
        return sorted(found, key=lambda cs: (-cs[1], cs[0]))[:top]


class _Pairs:
    """Co-firing counts of atom pairs (a < b), kept sparse: keys a * atoms + b with their counts."""

    def __init__(self, atoms: int):
        self.atoms = atoms
        self.keys = torch.zeros(0, dtype=torch.long)
        self.counts = torch.zeros(0, dtype=torch.long)

    def add(self, firing: torch.Tensor, active: torch.Tensor) -> None:
        """`firing` (n, k) atom indices of n tokens, `active` (n, k) whether each fires."""
        a, b = firing[:, :, None], firing[:, None, :]
        both = active[:, :, None] & active[:, None, :] & (a < b)
        keys = (a * self.atoms + b)[both]
        keys, counts = torch.cat([self.keys, keys]), torch.cat([self.counts, torch.ones_like(keys)])
        self.keys, inverse = torch.unique(keys, return_inverse=True)
        self.counts = torch.zeros_like(self.keys).scatter_add_(0, inverse, counts)

    def jaccard(self, fired: torch.Tensor, top: int) -> dict[int, list[tuple[int, float]]]:
        """Per atom, its `top` partners by Jaccard = both / (fired_a + fired_b - both), best first."""
        a, b = self.keys // self.atoms, self.keys % self.atoms
        both = self.counts.double()
        score = (both / (fired[a] + fired[b] - both).clamp(min=1)).numpy()
        out: dict[int, list[tuple[int, float]]] = {}
        mine, other = np.concatenate([a.numpy(), b.numpy()]), np.concatenate([b.numpy(), a.numpy()])
        scores = np.concatenate([score, score])
        for i in np.lexsort((other, -scores, mine)):  # by atom, then best score, then partner index
            partners = out.setdefault(int(mine[i]), [])
            if len(partners) < top:
                partners.append((int(other[i]), float(scores[i])))
        return out


class _Peaks:
    """Per atom, the `keep` views where its code peaks highest: (code, view, token)."""

    def __init__(self, atoms: int, keep: int):
        self.values = torch.zeros(atoms, 0)
        self.views = torch.zeros(atoms, 0, dtype=torch.long)
        self.tokens = torch.zeros(atoms, 0, dtype=torch.long)
        self.keep = keep

    def add(self, z: torch.Tensor, views: Sequence[int]) -> None:
        """z (n, T, atoms): the codes of n views."""
        best, token = z.max(1)  # (n, atoms)
        values = torch.cat([self.values, best.T], 1)
        view_ids = torch.cat([self.views, torch.as_tensor(list(views)).expand(z.shape[-1], -1)], 1)
        tokens = torch.cat([self.tokens, token.T], 1)
        # Stable: equal codes keep the earlier view, so the result never depends on the batch size.
        order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, : self.keep]
        self.values, self.views, self.tokens = values.gather(1, order), view_ids.gather(1, order), tokens.gather(1, order)

    def of(self, atom: int) -> list[tuple[float, int, int]]:
        return [(float(v), int(i), int(t)) for v, i, t in zip(self.values[atom], self.views[atom], self.tokens[atom]) if v > 0]


def code_arrays(top_i: torch.Tensor, top_v: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Each token's top-k atoms and codes in the layout `codes.<h>.npz` stores them: int16 / float16."""
    return top_i.to(torch.int16).numpy(), top_v.to(torch.float16).numpy()


@torch.no_grad()
def _encode(sae: TopKSAE, tokens: torch.Tensor) -> torch.Tensor:
    """Codes (n, T, atoms) of tokens (n, T, C)."""
    n, t, c = tokens.shape
    return sae.encode(tokens.reshape(n * t, c).float()).reshape(n, t, -1)


def compute_atlas(model: LoadedModel, sae: TopKSAE, views: Sequence[SourceImage], classes: Sequence[Sequence[int]],
                  seed: int, *, cooccur: int = 5, regions: int = 10, batch: int = 32,
                  on_views: Callable[[int], None] | None = None) -> Atlas:
    """The atlas of `sae` over the photo views; `classes[i]` are the classes view i counts for.

    Deterministic for the inputs and the seed, and independent of `batch` (every summary is a sum,
    or a stably ordered top list, over views)."""
    sae = sae.cpu().eval()
    atoms, k = sae.D.shape[0], sae.k
    grid = layer_grid(model)
    fired = torch.zeros(atoms, dtype=torch.float64)
    energy = torch.zeros(atoms, dtype=torch.float64)
    sums: dict[int, list] = {}
    pairs, peaks = _Pairs(atoms), _Peaks(atoms, CANDIDATES * regions)
    indices, values, n_tokens = [], [], 0
    for part in stream_tokens(model, [v.image for v in views], batch=batch):
        tokens = part.tokens.float().cpu()
        z = _encode(sae, tokens)
        top_v, top_i = z.topk(k, dim=-1)
        fired += (z > 0).sum((0, 1)).double()
        energy += z.square().sum((0, 1)).double()
        n_tokens += z.shape[0] * z.shape[1]
        pairs.add(top_i.reshape(-1, k), top_v.reshape(-1, k) > 0)
        peaks.add(z if grid is None else z[:, grid.prefix:], part.indices)
        if grid is not None:
            i, v = code_arrays(top_i[:, grid.prefix:], top_v[:, grid.prefix:])
            indices.append(i)
            values.append(v)
        for row, view in zip(tokens, part.indices):
            for c in classes[view]:
                _accumulate(sums, c, head_terms(model, sae, row, c))
        if on_views is not None:
            on_views(len(part.indices))
    cells = grid.h * grid.w if grid is not None else 0
    frequency = (fired / max(n_tokens, 1)).numpy()
    alive = np.flatnonzero(frequency > 0)
    atlas = Atlas(
        head_kind="linear" if model.linear_head is not None else "gradient", n_views=len(views), n_tokens=n_tokens,
        frequency=frequency, energy=(energy / energy.sum().clamp(min=1e-30)).numpy(),
        shares={c: _shares(s) for c, s in sorted(sums.items())}, cooccur=pairs.jaccard(fired, cooccur),
        xy=atom_map(sae.D.detach()[torch.as_tensor(alive, dtype=torch.long)].numpy(), alive, seed), grid=grid,
        indices=np.concatenate(indices) if indices else np.zeros((0, cells, k), np.int16),
        values=np.concatenate(values) if values else np.zeros((0, cells, k), np.float16))
    atlas.peaks = {a: _one_per_photo(peaks.of(a), views, regions) for a in alive.tolist()}
    return atlas


def _accumulate(sums: dict[int, list], class_index: int, terms: ImageTerms) -> None:
    """Running sums of a class's image terms: [count, logit, atoms, bias, residual]."""
    s = sums.setdefault(class_index, [0, 0.0, torch.zeros_like(terms.atoms, dtype=torch.float64), 0.0, 0.0])
    s[0] += 1
    s[1] += terms.logit
    s[2] += terms.atoms.double()
    s[3] += terms.bias
    s[4] += terms.residual


def _shares(s: list) -> dict:
    """class_shares of the class's mean terms (the same as of every term: a share is a ratio of means)."""
    n = s[0]
    mean = ImageTerms(s[1] / n, (s[2] / n).float(), s[3] / n, s[4] / n)
    out = class_shares([mean])
    out["atoms"] = np.asarray(out["atoms"], dtype=np.float64)
    out["n_images"] = n
    return out


def _one_per_photo(peaks: list[tuple[float, int, int]], views: Sequence[SourceImage], keep: int) -> list[tuple[float, int, int]]:
    """The best peak of each photo (a view's source id up to its '#' suffix), `keep` at most."""
    seen: set[str] = set()
    out = []
    for peak in peaks:
        photo = views[peak[1]].source.split("#", 1)[0]
        if photo not in seen:
            seen.add(photo)
            out.append(peak)
        if len(out) == keep:
            break
    return out


def atom_map(rows: np.ndarray, atoms: np.ndarray, seed: int) -> dict[int, tuple[float, float]]:
    """A 2-D point per atom from its decoder row: seeded t-SNE (PCA first above PCA_DIMS dimensions),
    scaled into [0, 1]². Fewer than 5 atoms: their first two principal components."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n = len(rows)
    if n == 0:
        return {}
    if n < 5:
        xy = PCA(n_components=min(2, n), random_state=seed).fit_transform(rows) if n > 1 else np.zeros((1, 1))
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    else:
        x = PCA(n_components=PCA_DIMS, random_state=seed).fit_transform(rows) if rows.shape[1] > PCA_DIMS and n > PCA_DIMS else rows
        xy = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", learning_rate="auto",
                  random_state=seed).fit_transform(x)
    low, span = xy.min(0), np.ptp(xy, 0)
    xy = (xy - low) / np.where(span > 0, span, 1)
    return {int(a): (round(float(p[0]), 5), round(float(p[1]), 5)) for a, p in zip(atoms, xy)}


@dataclass
class Region:
    """One crop of an atom's region strip and its code map over the crop (side x side, >= 0)."""

    view: int
    crop: Image.Image
    code_map: np.ndarray


@torch.no_grad()
def regions(model: LoadedModel, sae: TopKSAE, views: Sequence[SourceImage], peaks: dict[int, list[tuple[float, int, int]]],
            side: int, out_size: int, batch: int = 16) -> dict[int, list[Region]]:
    """Each atom's crops (the `side`-pixel input square around its peak token, at `out_size` px) and
    code maps, in peak order, re-encoding only the views the atoms need, `batch` at a time."""
    sae = sae.cpu().eval()
    grid = layer_grid(model)
    size = model.preprocess.input_size
    wanted: dict[int, list[tuple[int, int, int]]] = {}  # view -> (atom, rank, token)
    for atom, found in peaks.items():
        for rank, (_, view, token) in enumerate(found):
            wanted.setdefault(view, []).append((atom, rank, token))
    out: dict[int, list[Region | None]] = {atom: [None] * len(found) for atom, found in peaks.items()}
    order = sorted(wanted)
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        shown, _ = make_views([views[v] for v in chunk], model)
        for part in stream_tokens(model, [views[v].image for v in chunk], batch=batch):
            z = _encode(sae, part.tokens.float().cpu())
            for row, i in zip(z, part.indices):
                for atom, rank, token in wanted[chunk[i]]:
                    out[atom][rank] = _region(row[:, atom], grid, token, side, size, out_size, shown[i], chunk[i])
    return {atom: [r for r in found if r is not None] for atom, found in out.items()}


def _region(codes: torch.Tensor, grid: Grid | None, token: int, side: int, size: int, out_size: int, view, index: int) -> Region:  # noqa: ANN001
    if grid is None:  # no layout: the whole view, its map flat at the peak code
        return Region(index, crop_image(view, (0, 0, size, size), size, out_size), np.full((2, 2), float(codes.max())))
    box = token_box(token, (grid.h, grid.w), size, side)
    plane = codes[grid.prefix:].reshape(1, 1, grid.h, grid.w)
    full = F.interpolate(plane, size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    x0, y0, x1, y1 = box
    return Region(index, crop_image(view, box, size, out_size), full[y0:y1, x0:x1].clamp(min=0).numpy())
