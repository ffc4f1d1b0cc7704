"""The same concept in two models: atoms of two dictionaries matched by where they fire (issue 19 §5).

Two models' atoms live in different spaces (other channels, other token grids), so they are
compared by what they do on the same photos: each atom's code map (its code at every token of
every photo view) is resampled to a common grid, flattened over the shared views, and every atom
of A is correlated (Pearson) with every atom of B. An atom's match is its best-correlated atom of
the other model; a match is mutual when that atom's own best is the first one.

    maps = code_maps(indices, values, grid, atoms, common)        # sparse (views * cells, atoms)
    found = match_atoms(maps_a, maps_b, threshold=None)          # threshold None: from the null below

**The threshold** is chosen against a null, per pair of models, so that it means the same at any
number of views, grid or dictionary size: the same best-match correlation is computed with B's
views shuffled (view i of A against view p(i) of B, a seeded permutation with no fixed point; the
spatial layout inside each view is kept, so a shared centre bias or a shared "fires everywhere"
atom still correlates, as it would by chance). The threshold is the NULL_QUANTILE (99th)
percentile of A's best scores under that null, and never below MIN_THRESHOLD: at most about 1 % of
A's atoms would find a match above it if the models' maps had nothing to do with each other.
Only matches at or above it count (`Matches.entries`, `mutual_rate`).

Memory: codes stay scipy sparse matrices (each token holds k codes); the correlation is computed
from sparse products A^T B, a block of A's atoms at a time, so the largest dense array is
(block x B's atoms), never views x atoms x atoms. Resampling is a fixed linear map per grid pair
(torch's `area` interpolation where a side shrinks, `linear` with align_corners=False where it
grows, taken from `torch.nn.functional.interpolate` applied to the identity so it is exactly
torch's own resampling), applied to every view as one sparse product.

Everything is deterministic: no randomness but the null's permutation, seeded by `seed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from .errors import DictionaryError

NULL_QUANTILE = 0.99
MIN_THRESHOLD = 0.2  # a floor where the null is tiny (few views): below it a "match" explains < 4 % of the variance
BLOCK = 1024  # A's atoms per block of the correlation


def common_grid(a: Sequence[int], b: Sequence[int]) -> tuple[int, int]:
    """The grid both maps are compared on: the coarser side of each (nothing is invented by upsampling both)."""
    return (min(int(a[0]), int(b[0])), min(int(a[1]), int(b[1])))


def _resample_1d(n: int, m: int) -> np.ndarray:
    """(m, n) matrix resampling a length-n signal to length m: area where it shrinks, linear where it grows."""
    if n == m:
        return np.eye(n)
    eye = torch.eye(n, dtype=torch.float64)[:, None, :]  # n signals, each one basis vector
    mode = "area" if m < n else "linear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    out = torch.nn.functional.interpolate(eye, size=m, mode=mode, **kwargs)  # (n, 1, m)
    return out[:, 0, :].T.numpy()


def resampler(grid: Sequence[int], common: Sequence[int]) -> sp.csr_matrix:
    """(common cells, grid cells) sparse map of a row-major code map on `grid` to one on `common` (separable)."""
    rh = _resample_1d(int(grid[0]), int(common[0]))
    rw = _resample_1d(int(grid[1]), int(common[1]))
    return sp.csr_matrix(np.kron(rh, rw))


def code_maps(indices: np.ndarray, values: np.ndarray, grid: Sequence[int], atoms: int,
              common: Sequence[int]) -> sp.csr_matrix:
    """Every view's code map resampled to `common`: sparse float64 (views * common_h * common_w, atoms).

    `indices` (int) and `values` (float) are (views, h*w, k): each token's top-k atoms and codes, as
    the dictionary's `codes.<h>.npz` holds them (row-major tokens of the `grid` (h, w)). Rows are
    view-major: view v's cells are rows v*cells .. (v+1)*cells - 1, row-major on `common`. Zero
    codes (a top-k slot that did not fire) are dropped.
    """
    indices, values = np.asarray(indices), np.asarray(values)
    if indices.shape != values.shape or indices.ndim != 3:
        raise DictionaryError(f"codes: indices {indices.shape} and values {values.shape} must be the same (views, tokens, k)")
    views, tokens, _ = indices.shape
    h, w = int(grid[0]), int(grid[1])
    if tokens != h * w:
        raise DictionaryError(f"codes: {tokens} tokens per view do not fill the grid {h}x{w}")
    if indices.size and (indices.min() < 0 or indices.max() >= atoms):
        raise DictionaryError(f"codes: atom indices outside 0..{atoms - 1}")
    rows = np.repeat(np.arange(views * tokens), indices.shape[2])
    vals = values.reshape(-1).astype(np.float64)
    keep = vals != 0
    z = sp.csr_matrix((vals[keep], (rows[keep], indices.reshape(-1)[keep].astype(np.int64))),
                      shape=(views * tokens, atoms))  # duplicate (row, atom) pairs would be summed; top-k has none
    if (h, w) == (int(common[0]), int(common[1])):
        return z
    r = resampler((h, w), common)
    return (sp.kron(sp.eye(views, format="csr"), r, format="csr") @ z).tocsr()


@dataclass
class Side:
    """One direction of the matching: for each atom of this model, its best atom in the other."""

    best: np.ndarray  # int (atoms,): the other model's best-correlated atom (-1 where the atom never varies)
    score: np.ndarray  # float (atoms,): that Pearson correlation (0 where undefined)
    mutual: np.ndarray  # bool (atoms,): the best atom's own best is this one


@dataclass
class Matches:
    """The matching of A's atoms and B's atoms on `n_rows` shared cells (views x common grid)."""

    a_to_b: Side
    b_to_a: Side
    threshold: float
    n_rows: int

    @property
    def mutual_rate(self) -> float:
        """Share of A's matched atoms (score >= threshold) whose match is mutual (0 where none matched)."""
        matched = self.a_to_b.score >= self.threshold
        return float(self.a_to_b.mutual[matched].mean()) if matched.any() else 0.0

    def entries(self, side: str = "a_to_b") -> dict[str, dict]:
        """{"<atom>": {"atom", "score", "mutual"}} of one side, only matches at or above the threshold."""
        s: Side = getattr(self, side)
        keep = np.flatnonzero(s.score >= self.threshold)
        return {str(int(i)): {"atom": int(s.best[i]), "score": round(float(s.score[i]), 4), "mutual": bool(s.mutual[i])}
                for i in keep}


def _moments(m: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations (population) of a sparse matrix."""
    n = m.shape[0]
    mean = np.asarray(m.sum(0)).ravel() / n
    sq = np.asarray(m.multiply(m).sum(0)).ravel() / n
    return mean, np.sqrt(np.maximum(sq - mean**2, 0.0))


def _best_both_ways(a: sp.csr_matrix, b: sp.csr_matrix, block: int = BLOCK) -> tuple[np.ndarray, ...]:
    """Best B atom per A atom and best A atom per B atom, with their correlations, block by block of A."""
    n = a.shape[0]
    mean_a, std_a = _moments(a)
    mean_b, std_b = _moments(b)
    at = a.T.tocsr()
    b = b.tocsc()
    best_ab = np.full(a.shape[1], -1)
    score_ab = np.zeros(a.shape[1])
    best_ba = np.full(b.shape[1], -1)
    score_ba = np.full(b.shape[1], -np.inf)
    valid_b = std_b > 0
    for start in range(0, a.shape[1], block):
        stop = min(start + block, a.shape[1])
        cross = (at[start:stop] @ b).toarray() / n  # E[a b] over the shared cells, (block, atoms_b)
        cov = cross - np.outer(mean_a[start:stop], mean_b)
        denom = np.outer(std_a[start:stop], std_b)
        corr = np.where(denom > 0, cov / np.where(denom > 0, denom, 1.0), -np.inf)
        if corr.shape[1]:
            j = corr.argmax(1)
            s = corr[np.arange(len(j)), j]
            ok = np.isfinite(s)
            best_ab[start:stop] = np.where(ok, j, -1)
            score_ab[start:stop] = np.where(ok, s, 0.0)
        if corr.shape[0]:
            i = corr.argmax(0)
            s = corr[i, np.arange(corr.shape[1])]
            better = s > score_ba
            best_ba[better] = i[better] + start
            score_ba[better] = s[better]
    ok = np.isfinite(score_ba) & valid_b
    best_ba = np.where(ok, best_ba, -1)
    score_ba = np.where(ok, score_ba, 0.0)
    return best_ab, score_ab, best_ba, score_ba


def _mutual(best: np.ndarray, other_best: np.ndarray) -> np.ndarray:
    idx = np.arange(len(best))
    return (best >= 0) & (other_best[np.clip(best, 0, None)] == idx) if len(other_best) else np.zeros(len(best), bool)


def shuffled_views(m: sp.csr_matrix, cells: int, seed: int = 0) -> sp.csr_matrix:
    """`m`'s rows with whole views permuted (no view kept in place where there are two or more): the null."""
    views = m.shape[0] // cells
    q = np.random.default_rng(seed).permutation(views)
    perm = np.empty(views, dtype=np.int64)
    perm[q] = np.roll(q, -1)  # one random cycle through all views: no view stays in place (views >= 2)
    rows = (perm[:, None] * cells + np.arange(cells)[None, :]).ravel()
    return m[rows]


def null_scores(a: sp.csr_matrix, b: sp.csr_matrix, cells: int, seed: int = 0) -> np.ndarray:
    """A's best-match correlations with B's views shuffled (`shuffled_views`), for A's atoms that fire at all."""
    _, score, _, _ = _best_both_ways(a, shuffled_views(b, cells, seed))
    return score[np.asarray((a != 0).sum(0)).ravel() > 0]


def null_threshold(a: sp.csr_matrix, b: sp.csr_matrix, cells: int, seed: int = 0,
                   quantile: float = NULL_QUANTILE) -> float:
    """The `quantile` of the null's best-match correlations (`null_scores`), floored at MIN_THRESHOLD."""
    alive = null_scores(a, b, cells, seed)
    value = float(np.quantile(alive, quantile)) if len(alive) else 1.0
    return max(value, MIN_THRESHOLD)


def match_atoms(codes_a: sp.csr_matrix, codes_b: sp.csr_matrix, threshold: float | None = None,
                cells: int | None = None, seed: int = 0) -> Matches:
    """Match A's atoms and B's atoms by the Pearson correlation of their code maps (module docstring).

    `codes_a` and `codes_b` come from `code_maps` on the same views in the same order and the same
    common grid (`cells` = its h * w, needed only for the null). `threshold` None: the null's
    (`null_threshold`, seeded by `seed`). An atom that never varies over the cells has no match.
    """
    if codes_a.shape[0] != codes_b.shape[0] or codes_a.shape[0] < 2:
        raise DictionaryError(f"matching needs the same 2+ cells in both models, got {codes_a.shape[0]} and {codes_b.shape[0]}")
    a, b = sp.csr_matrix(codes_a, dtype=np.float64), sp.csr_matrix(codes_b, dtype=np.float64)
    if threshold is None:
        if not cells or a.shape[0] % cells:
            raise DictionaryError("matching: the null threshold needs the cells per view")
        threshold = null_threshold(a, b, cells, seed)
    best_ab, score_ab, best_ba, score_ba = _best_both_ways(a, b)
    sides = (Side(best_ab, score_ab, _mutual(best_ab, best_ba)), Side(best_ba, score_ba, _mutual(best_ba, best_ab)))
    return Matches(sides[0], sides[1], float(threshold), a.shape[0])


def shared_views(sources_a: Sequence[str], sources_b: Sequence[str]) -> tuple[list[int], list[int]]:
    """Positions of the views both models saw (same identity string), in A's order."""
    where = {s: i for i, s in enumerate(sources_b)}
    pairs = [(i, where[s]) for i, s in enumerate(sources_a) if s in where]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def match_codes(a: dict, b: dict, atoms_a: int, atoms_b: int, threshold: float | None = None,
                seed: int = 0) -> tuple[Matches, tuple[int, int], int]:
    """Match two models from their `codes.<h>.npz` contents (`sources`, `grid`, `indices`, `values`).

    Returns the matches, the common grid and the number of shared views. Raises DictionaryError
    when the two saw fewer than two views in common.
    """
    ia, ib = shared_views([str(s) for s in a["sources"]], [str(s) for s in b["sources"]])
    if len(ia) < 2:
        raise DictionaryError(f"matching needs 2+ photo views both dictionaries saw, found {len(ia)}")
    common = common_grid(tuple(a["grid"]), tuple(b["grid"]))
    ma = code_maps(np.asarray(a["indices"])[ia], np.asarray(a["values"])[ia], tuple(a["grid"]), atoms_a, common)
    mb = code_maps(np.asarray(b["indices"])[ib], np.asarray(b["values"])[ib], tuple(b["grid"]), atoms_b, common)
    return match_atoms(ma, mb, threshold, cells=common[0] * common[1], seed=seed), common, len(ia)
