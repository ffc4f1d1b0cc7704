"""Non-negative matrix factorisation A ~ U W on the device, by HALS (Cichocki & Phan 2009).

Written here rather than taken from scikit-learn because CRAFT runs for 1000 classes x many
models on GPUs: this is ~30 lines of torch, deterministic for a seed, and needs no CPU round trip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

EPS = 1e-12


@dataclass
class NMFResult:
    U: torch.Tensor  # (n, r) coefficients
    W: torch.Tensor  # (r, m) components (concept directions)
    relative_error: float  # ||A - UW||_F / ||A||_F
    iterations: int


def _hals_sweep(X: torch.Tensor, AtB: torch.Tensor, BtB: torch.Tensor) -> None:
    """One pass of column-wise updates of X >= 0 minimising ||A - X B||, in place.

    AtB = A B^T (n, r) and BtB = B B^T (r, r) are precomputed.
    """
    for k in range(X.shape[1]):
        step = (AtB[:, k] - X @ BtB[:, k]) / BtB[k, k].clamp(min=EPS)
        X[:, k] = (X[:, k] + step).clamp(min=EPS)


def relative_error(A: torch.Tensor, U: torch.Tensor, W: torch.Tensor) -> float:
    return float(torch.linalg.norm(A - U @ W) / torch.linalg.norm(A).clamp(min=EPS))


def nmf(A: torch.Tensor, rank: int, iters: int = 500, tol: float = 1e-5, seed: int = 0) -> NMFResult:
    """Factorise a non-negative (n, m) matrix into U (n, r) and W (r, m), both non-negative."""
    if (A < 0).any():
        raise ValueError("NMF needs a non-negative matrix")
    A = A.float()
    n, m = A.shape
    gen = torch.Generator(device="cpu").manual_seed(seed)
    scale = (A.mean() / rank).sqrt()
    U = (torch.rand(n, rank, generator=gen) * scale).to(A.device)
    W = (torch.rand(rank, m, generator=gen) * scale).to(A.device)
    previous, it = float("inf"), 0
    for it in range(1, iters + 1):
        _hals_sweep(U, A @ W.T, W @ W.T)
        _hals_sweep(W.T, A.T @ U, U.T @ U)  # W^T is a view: updated in place
        if it % 10 == 0 or it == iters:
            err = relative_error(A, U, W)
            if previous - err < tol * max(err, EPS):
                break
            previous = err
    return NMFResult(U, W, relative_error(A, U, W), it)


def nnls_transform(A: torch.Tensor, W: torch.Tensor, iters: int = 100) -> torch.Tensor:
    """Coefficients U >= 0 with A ~ U W for fixed components W (CRAFT's `transform`)."""
    A = A.float()
    WWt = W @ W.T
    AWt = A @ W.T
    U = (AWt @ torch.linalg.pinv(WWt)).clamp(min=EPS)
    for _ in range(iters):
        _hals_sweep(U, AWt, WWt)
    return U
