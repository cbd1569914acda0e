"""Chapter 10: spatially and depthwise separable convolutions (convbook.separable)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from convbook import separable as sep
from convbook.separable import (best_depthwise_separable, compose_depthwise_pointwise, depthwise_separable_conv,
                                depthwise_separable_multiplies, gaussian_kernel, is_depthwise_separable, kernel_rank,
                                low_rank_conv2d, separable_factors, separable_multiplies, separable_terms, sobel_kernel,
                                two_pass_conv2d)
from tests.planting import Plant, planted_failure_test

D = torch.float64


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=D)


def test_sobel_and_gaussian_are_rank_one():
    assert kernel_rank(sobel_kernel()) == 1
    assert kernel_rank(gaussian_kernel(5, 1.0)) == 1
    assert float(gaussian_kernel(7, 2.0).sum()) == pytest.approx(1.0)
    u, v = separable_factors(sobel_kernel())
    assert torch.allclose(torch.outer(u, v), sobel_kernel(), atol=1e-12)
    assert kernel_rank(torch.zeros(3, 3, dtype=D)) == 0


@given(kh=st.integers(1, 5), kw=st.integers(1, 5), p=st.integers(0, 2), seed=st.integers(0, 10_000))
def test_two_pass_property(kh, kw, p, seed):
    u, v = _rand(kh, seed=seed), _rand(kw, seed=seed + 1)
    x = _rand(2, 2, 7, 8, seed=seed + 2)
    ref = F.conv2d(x, torch.outer(u, v).expand(2, 1, -1, -1), padding=p, groups=2)
    assert torch.allclose(two_pass_conv2d(x, u, v, p), ref, rtol=1e-12, atol=1e-12)


@given(kh=st.integers(2, 6), kw=st.integers(2, 6), seed=st.integers(0, 10_000))
def test_low_rank_full_rank_is_exact(kh, kw, seed):
    k = _rand(kh, kw, seed=seed)
    full = sum(torch.outer(u, v) for u, v in separable_terms(k, min(kh, kw)))
    assert torch.allclose(full, k, atol=1e-12)
    x = _rand(1, 1, 9, 9, seed=seed + 1)
    assert torch.allclose(low_rank_conv2d(x, k, min(kh, kw)), F.conv2d(x, k[None, None]), atol=1e-11)


def test_costs():
    assert separable_multiplies(3) == 6 and separable_multiplies((3, 5), 2) == 16
    assert depthwise_separable_multiplies(32, 64, 3) == (32 * 9 + 32 * 64, 32 * 64 * 9)


@given(c_in=st.integers(1, 3), c_out=st.integers(1, 4), k=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_depthwise_compose_and_factor(c_in, c_out, k, seed):
    d, p = _rand(c_in, 1, k, k, seed=seed), _rand(c_out, c_in, 1, 1, seed=seed + 1)
    w = compose_depthwise_pointwise(d, p)
    x = _rand(1, c_in, 6, 6, seed=seed + 2)
    assert torch.allclose(depthwise_separable_conv(x, d, p, 1), F.conv2d(x, w, padding=1), atol=1e-12)
    assert is_depthwise_separable(w)
    d2, p2 = best_depthwise_separable(w)
    assert torch.allclose(compose_depthwise_pointwise(d2, p2), w, atol=1e-12)


def test_generic_dense_is_not_depthwise_separable():
    assert not is_depthwise_separable(_rand(4, 3, 3, 3))


def test_plot_low_rank_draws():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sep.plot_low_rank(_rand(5, 5))
    plt.close("all")


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="not separable"):
        separable_factors(_rand(3, 3))
    with pytest.raises(ValueError, match="2-D tensor"):
        kernel_rank(_rand(3))
    with pytest.raises(ValueError, match="size must be"):
        gaussian_kernel(0, 1.0)
    with pytest.raises(ValueError, match="sigma must be"):
        gaussian_kernel(3, 0.0)
    with pytest.raises(ValueError, match="1-D vectors"):
        two_pass_conv2d(_rand(1, 1, 5, 5), _rand(3, 1), _rand(3))
    with pytest.raises(ValueError, match="N × C × H × W"):
        two_pass_conv2d(_rand(5, 5), _rand(3), _rand(3))
    with pytest.raises(ValueError, match="rank must be"):
        separable_terms(_rand(3, 4), 4)
    with pytest.raises(ValueError, match="rank must be"):
        separable_multiplies(3, 0)
    with pytest.raises(ValueError, match="c_out must be"):
        depthwise_separable_multiplies(3, 0, 3)
    with pytest.raises(ValueError, match="depthwise must be"):
        compose_depthwise_pointwise(_rand(3, 2, 3, 3), _rand(4, 3, 1, 1))
    with pytest.raises(ValueError, match="pointwise must be"):  # mismatched kernel shapes
        compose_depthwise_pointwise(_rand(3, 1, 3, 3), _rand(4, 2, 1, 1))
    with pytest.raises(ValueError, match="pointwise must be"):
        depthwise_separable_conv(_rand(1, 3, 5, 5), _rand(3, 1, 3, 3), _rand(4, 3, 3, 3))
    with pytest.raises(ValueError, match="C_out × C_in × k_h × k_w"):
        is_depthwise_separable(_rand(3, 3, 3))
    with pytest.raises(ValueError, match="C_out × C_in × k_h × k_w"):
        best_depthwise_separable(_rand(3, 3))


_FACTORS = sep.separable_factors
_TERMS = sep.separable_terms
_BEST = sep.best_depthwise_separable


def _factors_unscaled(kernel, rtol=1e-10):
    u, v = _FACTORS(kernel, rtol)
    return u / u.norm(), v  # σ₁ split wrongly: √σ₁ lost on one side


def _terms_smallest(kernel, rank):
    terms = _TERMS(kernel, min(kernel.shape))
    return terms[-rank:]


def _two_pass_same_vector(x, u, v, padding=0):
    return _TWO_PASS(x, u, u if len(u) == len(v) else v, padding)


_TWO_PASS = sep.two_pass_conv2d


def _two_pass_max_padding(x, u, v, padding=0):
    p = padding if isinstance(padding, int) else max(padding)
    return _TWO_PASS(x, u, v, (p, p))


def _is_dw_wrong_axis(weight, rtol=1e-10):
    return all(sep._slice_rank(weight[o].reshape(weight.shape[1], -1), rtol) <= 1 for o in range(weight.shape[0]))


def _best_from_first_output(weight):
    """Depthwise kernels copied from the first output channel, pointwise fitted: not optimal."""
    d = weight[0].unsqueeze(1).clone()
    d = d / d.flatten(1).norm(dim=1).clamp_min(1e-300)[:, None, None, None]
    p = torch.einsum("oiab,iab->oi", weight, d[:, 0])[:, :, None, None]
    return d, p


PLANTS = [
    Plant("separable.rank-one", "√σ₁ dropped from u", {"convbook.separable:separable_factors": _factors_unscaled}),
    Plant("separable.rank-one", "u and v swapped", {"convbook.separable:separable_factors": lambda k, rtol=1e-10: _FACTORS(k, rtol)[::-1]},
          parameter="per-axis kernel size"),
    Plant("separable.two-pass", "column vector used for both passes", {"convbook.separable:two_pass_conv2d": _two_pass_same_vector},
          parameter="per-axis kernel size"),
    Plant("separable.two-pass", "the larger padding on both axes", {"convbook.separable:two_pass_conv2d": _two_pass_max_padding},
          parameter="padding"),
    Plant("separable.eckart-young", "smallest singular terms kept", {"convbook.separable:separable_terms": _terms_smallest},
          parameter="rank"),
    Plant("separable.cost", "rank ignored (2k)", {"convbook.separable:separable_multiplies": lambda k, rank=1: 2 * max(k if isinstance(k, int) else k)},
          parameter="rank"),
    Plant("separable.cost", "k_h used for both axes",
          {"convbook.separable:separable_multiplies": lambda k, rank=1: rank * 2 * (k if isinstance(k, int) else k[0])},
          parameter="kernel size"),
    Plant("separable.cost", "depthwise cost without the pointwise term",
          {"convbook.separable:depthwise_separable_multiplies": lambda ci, co, k: (ci * k * k, ci * co * k * k)},
          parameter="channels"),
    Plant("separable.depthwise-iff-rank1", "rank tested on W[o] (wrong axis)", {"convbook.separable:is_depthwise_separable": _is_dw_wrong_axis},
          parameter="channels"),
    Plant("separable.depthwise-best", "depthwise kernels from the first output channel",
          {"convbook.separable:best_depthwise_separable": _best_from_first_output}, parameter="channels"),
]

test_planted_failure = planted_failure_test(PLANTS)
