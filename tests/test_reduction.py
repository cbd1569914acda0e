"""Chapter 5: 1×1 convolutions for feature reduction (convbook.reduction)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from convbook import reduction
from convbook.reduction import (break_even_rank, cascade, collapse_linear_stack, conv1x1_einsum, conv1x1_linear,
                                conv1x1_matrix, eckart_young_error, random_cascade_params, svd_error_curve,
                                svd_factorise, svd_macs, truncated_weight)
from tests.planting import Plant, planted_failure_test

D = torch.float64


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


# --- valid inputs ---------------------------------------------------------------------------


@given(nd=st.sampled_from([1, 2, 3]), g=st.integers(1, 3), ci=st.integers(1, 4), co=st.integers(1, 4),
       s=st.integers(1, 3), n=st.integers(1, 6), bias=st.booleans(), seed=st.integers(0, 1000))
@settings(max_examples=40)
def test_conv1x1_is_einsum_and_linear(nd, g, ci, co, s, n, bias, seed):
    w = _rand(g * co, ci, *([1] * nd), seed=seed)
    b = _rand(g * co, seed=seed + 1) if bias else None
    x = _rand(2, g * ci, *([n] * nd), seed=seed + 2)
    ref = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd](x, w, b, stride=s, groups=g)
    m = conv1x1_matrix(w, g)
    assert torch.allclose(conv1x1_einsum(x, m, b, stride=s), ref, rtol=1e-12, atol=1e-12)
    if s == 1:
        assert torch.allclose(conv1x1_linear(x, m, b), ref, rtol=1e-12, atol=1e-12)


def test_conv1x1_matrix_is_block_diagonal():
    w = torch.arange(1.0, 5.0).reshape(4, 1, 1, 1)
    assert conv1x1_matrix(w, groups=2).tolist() == [[1, 0], [2, 0], [0, 3], [0, 4]]


def test_cascade_orderings_have_the_layers_in_order():
    p = random_cascade_params([4, 2, 2], torch.Generator().manual_seed(0))
    kinds = [type(m).__name__ for m in cascade(p, p, "conv-bn-relu")]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU"] * 2
    kinds = [type(m).__name__ for m in cascade(p[1:], p[:-1], "bn-relu-conv")]
    assert kinds == ["BatchNorm2d", "ReLU", "Conv2d"]
    assert [type(m).__name__ for m in cascade(p, [], "conv")] == ["Conv2d", "Conv2d"]


def test_collapse_linear_stack_two_layers():
    w1, b1, w2, b2 = _rand(3, 4), _rand(3, seed=1), _rand(2, 3, seed=2), _rand(2, seed=3)
    w, b = collapse_linear_stack([w1, w2], [b1, b2])
    x = _rand(4, seed=4)
    assert torch.allclose(w @ x + b, w2 @ (w1 @ x + b1) + b2, atol=1e-12)


@given(ci=st.integers(1, 12), co=st.integers(1, 12), data=st.data(), bias=st.booleans(), seed=st.integers(0, 1000))
@settings(max_examples=30)
def test_svd_factorise_property(ci, co, data, bias, seed):
    r = data.draw(st.integers(1, min(ci, co)))
    conv = nn.Conv2d(ci, co, 1, bias=bias).double()
    with torch.no_grad():
        conv.weight.copy_(_rand(co, ci, 1, 1, seed=seed))
    pair = svd_factorise(conv, r)
    w_r = truncated_weight(conv.weight.detach().reshape(co, ci), r)
    x = _rand(1, ci, 3, 3, seed=seed + 1)
    with torch.no_grad():
        assert torch.allclose(pair(x), F.conv2d(x, w_r.reshape(co, ci, 1, 1), conv.bias), rtol=1e-12, atol=1e-12)
    assert [m.weight.shape[:2] for m in pair] == [(r, ci), (co, r)]
    if r == min(ci, co):  # full rank: exact
        with torch.no_grad():
            assert torch.allclose(pair(x), conv(x), rtol=1e-10, atol=1e-10)


def test_macs_and_break_even():
    assert svd_macs(256, 64, None, 56 * 56) == 256 * 64 * 56 * 56
    assert svd_macs(256, 64, 16, 1) == 16 * 320
    assert break_even_rank(256, 64) == 51  # 256*64/320 = 51.2
    assert break_even_rank(4, 4) == 1  # 16/8 = 2: rank 2 ties, so 1
    assert break_even_rank(1, 5) == 0


def test_eckart_young_error_values():
    s = torch.tensor([3.0, 2.0, 1.0], dtype=D)
    assert eckart_young_error(s, 1) == (2.0, pytest.approx(np.sqrt(5.0)))
    assert eckart_young_error(s, 3) == (0.0, 0.0)


def test_svd_error_curve_below_bound():
    c = svd_error_curve(c_in=16, c_out=12, pixels=32)
    assert len(c["ranks"]) == 12
    assert np.all(c["measured"] <= c["bound"] + 1e-12)
    assert c["macs"][-1] == pytest.approx(12 * 28 / (16 * 12))


# --- invalid inputs -------------------------------------------------------------------------


def test_invalid_inputs_raise_clear_errors():
    x = _rand(1, 3, 4, 4)
    with pytest.raises(ValueError, match="weight must be"):
        conv1x1_einsum(x, _rand(2, 3, 3, 3))
    with pytest.raises(ValueError, match="x must be"):
        conv1x1_einsum(x, _rand(2, 4))
    with pytest.raises(ValueError, match="weight must be"):
        conv1x1_matrix(_rand(2, 3, 3, 3))
    with pytest.raises(ValueError, match="groups must divide"):
        conv1x1_matrix(_rand(3, 1, 1, 1), groups=2)
    with pytest.raises(ValueError, match="widths must list"):
        random_cascade_params([4], torch.Generator())
    p = random_cascade_params([4, 2], torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="ordering must be"):
        cascade(p, p, "relu-conv-bn")
    with pytest.raises(ValueError, match="one BN per conv"):
        cascade(p, [], "conv-bn-relu")
    with pytest.raises(ValueError, match="BN has 2 channels"):
        cascade(p, p, "bn-relu-conv")
    with pytest.raises(ValueError, match="as many biases"):
        collapse_linear_stack([_rand(2, 2)], [])
    with pytest.raises(ValueError, match="do not chain"):
        collapse_linear_stack([_rand(3, 2), _rand(2, 4)], [_rand(3), _rand(2)])
    with pytest.raises(ValueError, match="rank must be"):
        truncated_weight(_rand(3, 4), 4)
    with pytest.raises(ValueError, match="matrix"):
        truncated_weight(_rand(3, 4, 1), 1)
    with pytest.raises(ValueError, match="1x1 Conv2d"):
        svd_factorise(nn.Conv2d(3, 3, 3), 1)
    with pytest.raises(ValueError, match="padding 0"):
        svd_factorise(nn.Conv2d(3, 3, 1, padding=1), 1)
    with pytest.raises(ValueError, match="c_in must be"):
        svd_macs(0, 3, None)
    with pytest.raises(ValueError, match="rank must be"):
        svd_macs(3, 3, 4)
    with pytest.raises(ValueError, match="rank must be"):
        eckart_young_error(torch.ones(3), -1)


# --- planted failures: each check must fail on a wrong formula -------------------------------


def _matrix_ignoring_groups(weight, groups=1):
    c_out, per_in = weight.shape[:2]
    return weight.reshape(c_out, per_in).repeat(1, groups)


_ORIG_CASCADE = reduction.cascade
_ORIG_MACS = reduction.svd_macs
_ORIG_EY = reduction.eckart_young_error


def _cascade_relu_before_bn(conv_params, bn_params, ordering, eps=1e-5):
    seq = _ORIG_CASCADE(conv_params, bn_params, ordering, eps)
    if ordering != "bn-relu-conv":
        return seq
    layers = list(seq)
    for k in range(0, len(layers), 3):
        layers[k], layers[k + 1] = layers[k + 1], layers[k]
    return nn.Sequential(*layers).eval()


def _collapse_drops_early_biases(weights, biases):
    w_tot = weights[0]
    for w in weights[1:]:
        w_tot = w @ w_tot
    return w_tot, biases[-1]


def _factorise_sigma_twice(conv, rank):
    pair = _ORIG_FACTORISE(conv, rank)
    w = conv.weight.detach().reshape(conv.out_channels, conv.in_channels)
    s = torch.linalg.svdvals(w)[:rank]
    with torch.no_grad():
        pair[1].weight.mul_(s.reshape(1, rank, 1, 1))
    return pair


_ORIG_FACTORISE = reduction.svd_factorise
_ORIG_RECUT = reduction.preactivation_recut
_ORIG_EINSUM = reduction.conv1x1_einsum


def _recut_default_eps(params, eps=1e-5):
    """The BN's eps forgotten: every BN of the recut uses PyTorch's default 1e-5."""
    return _ORIG_RECUT(params)


def _recut_pairing_shifted(params, eps=1e-5):
    """Body blocks pair B_k with C_k (instead of B_{k-1} with C_k)."""
    head, _, tail = _ORIG_RECUT(params, eps)
    body = _ORIG_CASCADE(params[1:], params[1:], "bn-relu-conv", eps) if len(params) > 1 else nn.Identity()
    return head, body, tail


def _cascade_default_eps(conv_params, bn_params, ordering, eps=1e-5):
    return _ORIG_CASCADE(conv_params, bn_params, ordering)


def _einsum_last_two_axes(x, weight, bias=None, stride=1):
    """Stride applied to the last two axes, as if every input were 2-D."""
    if stride != 1:
        x = x[..., ::stride, ::stride]
    return _ORIG_EINSUM(x, weight, bias)


def _einsum_without_stride(x, weight, bias=None, stride=1):
    return _ORIG_EINSUM(x, weight, bias)


def _factorise_without_stride(conv, rank):
    pair = _ORIG_FACTORISE(conv, rank)
    pair[0].stride = (1, 1)
    return pair


def _factorise_without_bias(conv, rank):
    pair = _ORIG_FACTORISE(conv, rank)
    if pair[1].bias is not None:
        with torch.no_grad():
            pair[1].bias.zero_()
    return pair


def _factorise_full_rank(conv, rank):
    """The rank argument ignored: the full SVD is kept."""
    return _ORIG_FACTORISE(conv, min(conv.in_channels, conv.out_channels))


_ORIG_COLLAPSE = reduction.collapse_1x1_then_kxk
_ORIG_DATA = reduction.data_aware_weight


def _band_rule(which):
    """The band rule with one parameter mishandled; the output grid itself is right."""
    def wrong(size, kernel_size, stride, padding, dilation):
        axes = []
        for n, k, s_, p_, d_ in zip(size, kernel_size, stride, padding, dilation):
            u = np.arange((n + 2 * p_ - d_ * (k - 1) - 1) // s_ + 1)
            s2, p2, d2 = (1 if which == "stride" else s_), (0 if which == "padding" else p_), (1 if which == "dilation" else d_)
            axes.append((s2 * u < p2) | (s2 * u - p2 + d2 * (k - 1) >= n))
        return np.logical_or.outer(axes[0], axes[1])
    return wrong


def _truncated_svd_weight(weight, x, rank):
    """The activations ignored: the truncated SVD of W."""
    u, s, vh = np.linalg.svd(weight, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank]


PLANTS = [
    Plant("reduce.collapse-border", "border ignored",
          {"convbook.reduction:border_band_mask": lambda size, k, s, p, d: np.zeros(
              tuple((n + 2 * pp - dd * (kk - 1) - 1) // ss + 1 for n, kk, ss, pp, dd in zip(size, k, s, p, d)), dtype=bool)}),
    Plant("reduce.collapse-border", "first bias left out of the collapsed bias",
          {"convbook.reduction:collapse_1x1_then_kxk": lambda w1, b1, w2, b2: _ORIG_COLLAPSE(w1, None, w2, b2)}),
    Plant("reduce.collapse-border", "band computed as if stride 1", {"convbook.reduction:border_band_mask": _band_rule("stride")},
          parameter="stride"),
    Plant("reduce.collapse-border", "band computed without padding", {"convbook.reduction:border_band_mask": _band_rule("padding")},
          parameter="padding"),
    Plant("reduce.collapse-border", "band computed without dilation",
          {"convbook.reduction:border_band_mask": _band_rule("dilation")}, parameter="dilation"),
    Plant("reduce.data-aware", "rank ignored (full rank kept)",
          {"convbook.reduction:data_aware_weight": lambda w, x, rank: _ORIG_DATA(w, x, min(w.shape))}, parameter="rank"),
    Plant("reduce.data-aware", "activations ignored (truncated SVD of W)",
          {"convbook.reduction:data_aware_weight": _truncated_svd_weight}, parameter="activations"),
    Plant("reduce.conv1x1-linear", "groups ignored (dense tiling)", {"convbook.reduction:conv1x1_matrix": _matrix_ignoring_groups},
          parameter="groups"),
    Plant("reduce.conv1x1-linear", "stride ignored", {"convbook.reduction:conv1x1_einsum": _einsum_without_stride},
          parameter="stride"),
    Plant("reduce.conv1x1-linear", "stride on the last two axes whatever the dimension",
          {"convbook.reduction:conv1x1_einsum": _einsum_last_two_axes}, parameter="dimension"),
    Plant("reduce.orderings-cascade", "ReLU before BN in the pre-activation block",
          {"convbook.reduction:cascade": _cascade_relu_before_bn}),
    Plant("reduce.orderings-cascade", "BN eps forgotten in the recut",
          {"convbook.reduction:preactivation_recut": _recut_default_eps}, parameter="eps"),
    Plant("reduce.orderings-cascade", "BN eps forgotten in cascade (passed the old associativity-only check)",
          {"convbook.reduction:cascade": _cascade_default_eps}),
    Plant("reduce.orderings-cascade", "B_k paired with C_k in the body",
          {"convbook.reduction:preactivation_recut": _recut_pairing_shifted}, parameter="depth"),
    Plant("reduce.conv-stack-collapses", "earlier biases dropped",
          {"convbook.reduction:collapse_linear_stack": _collapse_drops_early_biases}, parameter="depth"),
    Plant("reduce.svd-factorisation", "Σ applied in both layers", {"convbook.reduction:svd_factorise": _factorise_sigma_twice}),
    Plant("reduce.svd-factorisation", "rank ignored", {"convbook.reduction:svd_factorise": _factorise_full_rank},
          parameter="rank"),
    Plant("reduce.svd-factorisation", "stride dropped", {"convbook.reduction:svd_factorise": _factorise_without_stride},
          parameter="stride"),
    Plant("reduce.svd-factorisation", "bias dropped", {"convbook.reduction:svd_factorise": _factorise_without_bias},
          parameter="bias"),
    Plant("reduce.svd-factorisation", "MACs counted as r·(C_in+C_out+1)",
          {"convbook.reduction:svd_macs": lambda c_in, c_out, rank, pixels=1: (
              _ORIG_MACS(c_in, c_out, rank, pixels) + (rank or 0) * pixels)}),
    Plant("reduce.eckart-young", "σ_r instead of σ_{r+1}",
          {"convbook.reduction:eckart_young_error": lambda s, rank: _ORIG_EY(s, rank - 1)}, parameter="rank"),
]

test_planted_failure = planted_failure_test(PLANTS)


def test_plot_svd_error_draws_bound_and_measured():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = reduction.svd_error_curve(8, 8, decay=0.3, pixels=16)
    axes = reduction.plot_svd_error(curve)
    for ax in axes:
        assert len(ax.get_lines()) >= 2
        assert len(ax.get_lines()[0].get_xdata()) == 7  # full rank left out
    assert reduction.ORDERINGS == ("conv-bn-relu", "bn-relu-conv", "conv")
    plt.close("all")


def test_collapse_border_example_and_data_aware_example():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3, 8, 8, generator=g, dtype=D)
    w1, b1 = torch.randn(2, 3, 1, 1, generator=g, dtype=D), torch.randn(2, generator=g, dtype=D)
    w2, b2 = torch.randn(4, 2, 3, 3, generator=g, dtype=D), torch.randn(4, generator=g, dtype=D)
    w, b = reduction.collapse_1x1_then_kxk(w1, b1, w2, b2)
    diff = (F.conv2d(x, w, b, padding=1) - F.conv2d(F.conv2d(x, w1, b1), w2, b2, padding=1)).abs().amax(dim=(0, 1))
    band = torch.as_tensor(reduction.border_band_mask((8, 8), (3, 3), (1, 1), (1, 1), (1, 1)))
    assert int(band.sum()) == 64 - 36 and float(diff[~band].max()) < 1e-12 and float(diff[band].min()) > 1e-6
    rng = np.random.default_rng(0)
    wm, xa = rng.standard_normal((16, 16)), reduction.anisotropic_activations(16, 200, 0.4, seed=1)
    errs = reduction.factorisation_errors(wm, xa, 4)
    assert errs["data"]["output"] < errs["svd"]["output"] and errs["svd"]["weight"] < errs["data"]["weight"]
    with pytest.raises(ValueError, match="rank must be"):
        reduction.data_aware_weight(wm, xa, 0)
    with pytest.raises(ValueError, match="x must be"):
        reduction.data_aware_weight(wm, xa[:3], 2)
