"""Concept dictionaries: NMF and Semi-NMF behind one interface, and the automatic choice."""

from __future__ import annotations

import pytest
import torch

from generator.dictionary import NMF, SemiNMF, choose_method, make_dictionary
from generator.nmf import nmf


def _planted(n: int = 400, r: int = 4, m: int = 48, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    U = torch.rand(n, r, generator=g) * (torch.rand(n, r, generator=g) < 0.4)  # sparse non-negative codes
    W = torch.randn(r, m, generator=g)  # signed concepts
    return U, W


def test_semi_nmf_recovers_a_planted_signed_dictionary():
    from scipy.optimize import linear_sum_assignment

    U, W = _planted()
    method = SemiNMF(4, iters=1000, tol=1e-10, seed=0)
    codes, bank = method.fit(U @ W)
    assert method.relative_error < 1e-3 and (codes >= 0).all() and (bank < 0).any()
    cos = torch.nn.functional.normalize(bank, dim=1) @ torch.nn.functional.normalize(W, dim=1).T
    rows, cols = linear_sum_assignment(-cos.numpy())
    # Semi-NMF is unique only up to mixings that keep the codes non-negative: near, not exact.
    assert cos[rows, cols].min() > 0.98
    assert torch.allclose(bank.norm(dim=1), torch.ones(4), atol=1e-5)  # unit directions


def test_one_interface_fit_then_transform():
    """transform codes new rows on the fitted bank, for both methods, with non-negative codes."""
    U, W = _planted()
    for method, A in ((SemiNMF(4, seed=0), U @ W), (NMF(4, seed=0), U @ W.abs())):
        codes, bank = method.fit(A[:300])
        new = method.transform(A[300:])
        assert new.shape == (100, 4) and (new >= 0).all() and (codes >= 0).all()
        assert torch.linalg.norm(A[300:] - new @ bank) / torch.linalg.norm(A[300:]) < 0.05, method.name


def test_nmf_method_is_the_original_solver():
    """The lite models keep their figures: the NMF method is bit-identical to the HALS NMF it wraps."""
    A = torch.rand(60, 20)
    codes, bank = make_dictionary("nmf", 3, iters=40, seed=5).fit(A)
    reference = nmf(A, 3, iters=40, seed=5)
    assert torch.equal(codes, reference.U) and torch.equal(bank, reference.W)


def test_semi_nmf_is_deterministic_and_copes_with_few_rows():
    A = torch.randn(50, 16)
    a, b = SemiNMF(3, iters=30, seed=2).fit(A), SemiNMF(3, iters=30, seed=2).fit(A)
    assert torch.equal(a[1], b[1])
    codes, bank = SemiNMF(5, iters=20).fit(torch.randn(3, 8))  # fewer samples than concepts
    assert codes.shape == (3, 5) and bank.shape == (5, 8) and torch.isfinite(bank).all()


def test_auto_choice_and_unknown_method():
    assert choose_method("auto", torch.rand(5, 3), torch.rand(2, 3)) == "nmf"
    assert choose_method("auto", torch.rand(5, 3), torch.randn(2, 3)) == "semi-nmf"
    assert choose_method("semi-nmf", torch.rand(5, 3)) == "semi-nmf"
    with pytest.raises(ValueError, match="unknown concept dictionary method 'pca'"):
        make_dictionary("pca", 3)
