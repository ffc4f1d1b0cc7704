"""Concept dictionaries for CRAFT: A (n, m) ~ U (n, r) W (r, m) with non-negative codes U >= 0.

One interface for every method, as in `overcomplete`: `fit(A) -> (U, W)` learns the concept bank W
and the codes of A; `transform(A) -> U` codes new activations on the fixed bank. Methods:

- `nmf`: U, W >= 0 (CRAFT's original; `nmf.py`, HALS). Needs non-negative activations (post-ReLU).
- `semi-nmf`: W signed, U >= 0 (Ding, Li & Jordan 2010), for any layer (ViT tokens, ConvNeXt
  stages). Solved by alternating exact steps: HALS column updates of U (the same coordinate
  descent as NMF, which needs no sign on W) and the least-squares W for fixed U.

Both are deterministic for a seed and run on the activations' device. `transform` is the same
non-negative least squares for both, so CRAFT's importance, crops and attribution maps treat the
methods alike.

Why not `overcomplete` (PyPI, 0.3.0; it has both Semi-NMF and TopK SAEs): evaluated and not used.
Its top-level import fails with matplotlib >= 3.9 (`matplotlib.cm.get_cmap` removed; we have
3.11); it pulls opencv-python (~190 MB, GUI libs) and scikit-image for its plots, caps Python
< 3.13, and initialises with the global RNG (not reproducible per class without reseeding torch
globally). Semi-NMF by HALS is ~30 lines on top of the NMF solver we already have.
"""

from __future__ import annotations

from typing import Protocol

import torch

from .nmf import EPS, _hals_sweep, nmf, nnls_transform, relative_error

METHODS = ("nmf", "semi-nmf")
NEGATIVE_TOLERANCE = -1e-5  # activations above this count as non-negative (float noise of ReLU layers)


class Dictionary(Protocol):
    """A concept dictionary learner: fit once per class, then code other activations."""

    name: str
    W: torch.Tensor | None  # (r, m) concept bank, after fit
    relative_error: float  # ||A - U W||_F / ||A||_F of the fit
    iterations: int

    def fit(self, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def transform(self, A: torch.Tensor) -> torch.Tensor: ...


class NMF:
    """Both factors non-negative (HALS); refuses a matrix with negative entries."""

    name = "nmf"

    def __init__(self, rank: int, iters: int = 500, tol: float = 1e-5, seed: int = 0):
        self.rank, self.iters, self.tol, self.seed = rank, iters, tol, seed
        self.W: torch.Tensor | None = None
        self.relative_error = float("nan")
        self.iterations = 0

    def fit(self, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        result = nmf(A, self.rank, iters=self.iters, tol=self.tol, seed=self.seed)
        self.W, self.relative_error, self.iterations = result.W, result.relative_error, result.iterations
        return result.U, result.W

    def transform(self, A: torch.Tensor) -> torch.Tensor:
        assert self.W is not None, "fit first"
        return nnls_transform(A, self.W)


class SemiNMF:
    """Codes U >= 0, bank W signed: min ||A - U W||_F for activations of any sign.

    Initialised from r distinct rows of A (seeded) as the bank, the codes solved on it; each
    iteration then updates U by one HALS sweep and W by least squares (a small ridge keeps
    unused concepts defined). Finally each bank row is scaled to unit norm and its codes by
    the inverse, so codes compare across concepts and directions are unit vectors.
    """

    name = "semi-nmf"

    def __init__(self, rank: int, iters: int = 500, tol: float = 1e-5, seed: int = 0, ridge: float = 1e-6):
        self.rank, self.iters, self.tol, self.seed, self.ridge = rank, iters, tol, seed, ridge
        self.W: torch.Tensor | None = None
        self.relative_error = float("nan")
        self.iterations = 0

    def _solve_w(self, A: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
        gram = U.T @ U
        gram = gram + self.ridge * gram.diagonal().mean().clamp(min=EPS) * torch.eye(len(gram), device=U.device)
        return torch.linalg.solve(gram, U.T @ A)

    def fit(self, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        A = A.float()
        n = A.shape[0]
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        rows = torch.randperm(n, generator=gen)[: self.rank].to(A.device)
        W = A[rows].clone()
        if len(rows) < self.rank:  # fewer samples than concepts: pad with small random directions
            extra = torch.randn(self.rank - len(rows), A.shape[1], generator=gen).to(A.device) * A.std().clamp(min=EPS)
            W = torch.cat([W, extra])
        U = nnls_transform(A, W, iters=20)
        previous, it = float("inf"), 0
        for it in range(1, self.iters + 1):
            _hals_sweep(U, A @ W.T, W @ W.T)
            W = self._solve_w(A, U)
            if it % 10 == 0 or it == self.iters:
                err = relative_error(A, U, W)
                if previous - err < self.tol * max(err, EPS):
                    break
                previous = err
        norms = W.norm(dim=1).clamp(min=EPS)
        U, W = U * norms, W / norms[:, None]
        self.W, self.relative_error, self.iterations = W, relative_error(A, U, W), it
        return U, W

    def transform(self, A: torch.Tensor) -> torch.Tensor:
        assert self.W is not None, "fit first"
        return nnls_transform(A, self.W)


def make_dictionary(method: str, rank: int, iters: int = 500, seed: int = 0) -> Dictionary:
    """A dictionary learner by name (`nmf`, `semi-nmf`)."""
    if method == "nmf":
        return NMF(rank, iters=iters, seed=seed)
    if method == "semi-nmf":
        return SemiNMF(rank, iters=iters, seed=seed)
    raise ValueError(f"unknown concept dictionary method '{method}' (known: {', '.join(METHODS)})")


def is_non_negative(*tensors: torch.Tensor) -> bool:
    return all(float(t.min()) >= NEGATIVE_TOLERANCE for t in tensors if t.numel())


def choose_method(setting: str, *activations: torch.Tensor) -> str:
    """`auto`: NMF where every activation is non-negative, else Semi-NMF; other settings as given."""
    if setting != "auto":
        return setting
    return "nmf" if is_non_negative(*activations) else "semi-nmf"
