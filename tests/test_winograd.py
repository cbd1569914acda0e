"""Chapter 11: Winograd minimal filtering by Toom–Cook (convbook.winograd)."""

from __future__ import annotations

import pytest
import sympy as sp
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from fractions import Fraction

from convbook import impl, winograd
from convbook.winograd import (conv2d_winograd, default_points, direct_correlation_1d, winograd_1d, winograd_2d,
                               winograd_matrices, winograd_mults)
from tests.planting import Plant, planted_failure_test

D = torch.float64


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=D)


# --- valid inputs ---------------------------------------------------------------------------


def test_f23_matrices_are_lavin_grays_up_to_the_sign_of_the_infinity_row():
    at, g, bt = winograd_matrices(2, 3)
    assert g == sp.Matrix([[1, 0, 0], [sp.Rational(1, 2)] * 3, [sp.Rational(1, 2), -sp.Rational(1, 2), sp.Rational(1, 2)], [0, 0, 1]])
    assert bt[:3, :] == sp.Matrix([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0]])
    assert bt[3, :] == -sp.Matrix([[0, 1, 0, -1]])  # Lavin & Gray: [0, 1, 0, -1] with A's last column negated
    assert at == sp.Matrix([[1, 1, 1, 0], [0, 1, -1, 1]])


def test_f43_bt_is_lavin_grays_with_rows_two_and_three_negated():
    at, g, bt = winograd_matrices(4, 3)
    at_lg, g_lg, bt_lg = winograd.LAVIN_GRAY[(4, 3)]
    assert bt != bt_lg  # regression: the chapter once called them identical
    assert winograd.row_signs(bt, bt_lg) == [1, -1, -1, 1, 1, 1]
    assert winograd.row_signs(g, g_lg) == [1, -1, -1, 1, 1, 1] and at == at_lg
    assert winograd.row_signs(bt, sp.eye(6)) is None
    # the published matrices are a correct F(4,3) too
    d, gg = sp.symbols("d0:6"), sp.symbols("g0:3")
    y = at_lg * (sp.Matrix((g_lg * sp.Matrix(gg))).multiply_elementwise(bt_lg * sp.Matrix(d)))
    assert all(sp.expand(a - b) == 0 for a, b in zip(y, direct_correlation_1d(d, gg, 4)))


def test_general_multiplications_are_counted_as_performed():
    stats = {}
    winograd_1d(sp.symbols("d0:4"), sp.symbols("g0:3"), 2, stats=stats)
    assert stats == {"general": 4}
    stats = {}
    winograd_1d([1, 2, 3, 4], [1, 0, 2], 2, stats=stats)  # numbers: nothing is a general multiplication
    assert stats == {}


def test_default_points_and_custom_points():
    assert default_points(7) == [0, 1, -1, 2, -2, sp.Rational(1, 2), -sp.Rational(1, 2)]
    d, g = sp.symbols("d0:4"), sp.symbols("g0:3")
    ours = winograd_1d(d, g, 2, points=[0, 2, -3])  # any distinct points work
    assert all(sp.expand(a - b) == 0 for a, b in zip(ours, direct_correlation_1d(d, g, 2)))


def test_mult_counts():
    assert winograd_mults(2, 3) == (16, 36)
    assert winograd_mults(4, 3) == (36, 144)
    assert winograd_mults(2, 3, dims=1) == (4, 6)


@settings(max_examples=40)
@given(g=st.integers(1, 2), ci=st.integers(1, 3), co=st.integers(1, 3), h=st.integers(3, 11), w=st.integers(3, 11),
       kh=st.integers(1, 4), kw=st.integers(1, 4), p=st.integers(0, 2), m=st.sampled_from([1, 2, 3, 4]),
       bias=st.booleans(), seed=st.integers(0, 10_000))
def test_conv2d_winograd_matches_torch(g, ci, co, h, w, kh, kw, p, m, bias, seed):
    if kh > h + 2 * p or kw > w + 2 * p:
        return
    x, weight = _rand(2, g * ci, h, w, seed=seed), _rand(g * co, ci, kh, kw, seed=seed + 1)
    b = _rand(g * co, seed=seed + 2) if bias else None
    ref = F.conv2d(x, weight, b, padding=p, groups=g)
    assert torch.allclose(conv2d_winograd(x, weight, b, padding=p, groups=g, m=m), ref, rtol=1e-10, atol=1e-10)


def test_winograd_2d_numeric_tile():
    d = sp.Matrix(4, 4, lambda i, k: i * 4 + k)
    g = sp.Matrix(3, 3, lambda i, k: (i + 1) * (k - 1))
    assert winograd_2d(d, g, 2) == sp.Matrix(2, 2, lambda i, k: sum(g[a, b] * d[i + a, k + b] for a in range(3) for b in range(3)))


# --- invalid inputs -------------------------------------------------------------------------


def test_invalid_inputs():
    with pytest.raises(ValueError, match="m >= 1 and r >= 1"):
        winograd_matrices(0, 3)
    with pytest.raises(ValueError, match="distinct finite points"):
        winograd_matrices(2, 3, points=[0, 1])
    with pytest.raises(ValueError, match="distinct finite points"):
        winograd_matrices(2, 3, points=[0, 1, 1])
    with pytest.raises(ValueError, match="count must be >= 0"):
        default_points(-1)
    with pytest.raises(ValueError, match="input tile of m"):
        winograd_1d([1, 2, 3], [1, 2, 3], 2)
    with pytest.raises(ValueError, match="square"):
        winograd_2d(sp.zeros(4, 4), sp.zeros(3, 2), 2)
    x, w = _rand(1, 2, 6, 6), _rand(2, 2, 3, 3)
    with pytest.raises(ValueError, match="Winograd tiles need stride 1"):
        conv2d_winograd(x, w, stride=2)
    with pytest.raises(ValueError, match="only dilation 1"):
        conv2d_winograd(x, w, dilation=2)
    with pytest.raises(ValueError, match="tile size m"):
        conv2d_winograd(x, w, m=0)
    with pytest.raises(ValueError, match="input channels per group"):
        conv2d_winograd(x, _rand(2, 1, 3, 3))


# --- planted failures -----------------------------------------------------------------------


_ORIG_1D, _ORIG_2D, _ORIG_CONV, _ORIG_ERR = (winograd.winograd_1d, winograd.winograd_2d, winograd.conv2d_winograd,
                                             winograd.float32_error_by_tile)


def _interpolation_not_transposed(m, r, points=None):
    """Using V⁻¹ instead of V⁻ᵀ for Bᵀ (forgetting the transposition principle)."""
    at, g, bt = winograd._matrices_cached.__wrapped__(m, r, None)
    return at, g, bt.T


def _conv_drops_last_channel(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, m=2):
    w = weight.clone()
    w[:, -1] = 0  # the channel sum stops one short
    return _ORIG_CONV(x, w, bias, stride, padding, dilation, groups, m=m)


def _mults_typo(m, r, dims=2):
    return (m + r) ** dims, (m * r) ** dims


def _mults_r_fixed(m, r, dims=2):
    """r taken to be 3 (the only filter size in the chapter's examples)."""
    return (m + 2) ** dims, (m * 3) ** dims


def _mults_always_2d(m, r, dims=2):
    return (m + r - 1) ** 2, (m * r) ** 2


_ORIG_MATS = winograd.winograd_matrices
_ORIG_TORCH_MATS = winograd._torch_matrices


def _at_without_infinity_column_for_large_m(m, r, points=None):
    at, g, bt = _ORIG_MATS(m, r, points)
    if m >= 3:
        at[:, -1] = sp.zeros(m, 1)
    return at, g, bt


def _g_without_infinity_row_for_long_filters(m, r, points=None):
    at, g, bt = _ORIG_MATS(m, r, points)
    if r >= 4:
        g[-1, :] = sp.zeros(1, r)
    return at, g, bt


def _torch_matrices_two_output_rows(m, r):
    """Aᵀ keeps only its first two rows: tiles with m > 2 lose outputs 3..m."""
    at, g, bt = _ORIG_TORCH_MATS(m, r)
    at = at.clone()
    at[2:] = 0
    return at, g, bt


def _conv_padding_rows_only(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, m=2):
    """One padding for both axes (the larger one): per-axis padding mishandled."""
    p = padding if isinstance(padding, int) else max(padding)
    return _ORIG_CONV(x, weight, bias, stride, (p, p), dilation, groups, m=m)


def _conv_first_group_weights(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, m=2):
    per = weight.shape[0] // groups
    w = weight[:per].repeat(groups, 1, 1, 1)
    return _ORIG_CONV(x, w, bias, stride, padding, dilation, groups, m=m)


def _swap_4_6(errs):
    """F(4,3) and F(6,3) labelled the wrong way round."""
    return {**errs, 4: errs[6], 6: errs[4]}


def _winograd_in_float64(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, m=2):
    """Transforms silently run in float64 and rounded back: the float32 error no longer grows with m."""
    b = bias.double() if bias is not None else None
    return _ORIG_CONV(x.double(), weight.double(), b, stride, padding, dilation, groups, m=m).to(x.dtype)


_ORIG_SPECTRUM = impl.fft_kernel_spectrum_numel
_ORIG_LAYER_OPS = winograd.winograd_layer_ops


def _spectrum_without_k_minus_1(c_in, c_out, n, k, padding=None, onesided=True):
    return _ORIG_SPECTRUM(c_in, c_out, n, k, padding=0, onesided=onesided)


def _spectrum_height_for_both_axes(c_in, c_out, n, k, padding=None, onesided=True):
    nh = n[0] if isinstance(n, tuple) else n
    return _ORIG_SPECTRUM(c_in, c_out, (nh, nh), k, padding=padding, onesided=onesided)


def _spectrum_rfft_halving_ignored(c_in, c_out, n, k, padding=None, onesided=True):
    return _ORIG_SPECTRUM(c_in, c_out, n, k, padding=padding, onesided=False)


def _ops_input_transform_per_pair(c_in, c_out, h_out, w_out, kh, kw, m, batch=1):
    ops = _ORIG_LAYER_OPS(c_in, c_out, h_out, w_out, kh, kw, m, batch)
    return {**ops, "input": ops["input"] * c_out}


def _ops_output_transform_per_pair(c_in, c_out, h_out, w_out, kh, kw, m, batch=1):
    ops = _ORIG_LAYER_OPS(c_in, c_out, h_out, w_out, kh, kw, m, batch)
    return {**ops, "output": ops["output"] * c_in}


def _ops_tiles_floored(c_in, c_out, h_out, w_out, kh, kw, m, batch=1):
    ops = _ORIG_LAYER_OPS(c_in, c_out, h_out, w_out, kh, kw, m, batch)
    scale = Fraction((h_out // m) * (w_out // m), -(-h_out // m) * -(-w_out // m))
    return {key: (v if key == "weight" else int(v * scale)) for key, v in ops.items()}


PLANTS = [
    Plant("impl.winograd-f23-symbolic", "Bᵀ = V⁻¹ instead of V⁻ᵀ", {"convbook.winograd:winograd_matrices": _interpolation_not_transposed}),
    Plant("impl.winograd-f43-symbolic", "Bᵀ = V⁻¹ instead of V⁻ᵀ", {"convbook.winograd:winograd_matrices": _interpolation_not_transposed}),
    Plant("impl.winograd-f63-symbolic", "Bᵀ = V⁻¹ instead of V⁻ᵀ", {"convbook.winograd:winograd_matrices": _interpolation_not_transposed}),
    Plant("impl.winograd-2d", "Bᵀ = V⁻¹ instead of V⁻ᵀ", {"convbook.winograd:winograd_matrices": _interpolation_not_transposed}),
    Plant("impl.winograd-2d", "channel sum one short", {"convbook.winograd:conv2d_winograd": _conv_drops_last_channel}),
    Plant("impl.winograd-mults", "α = m + r", {"convbook.winograd:winograd_mults": _mults_typo}, parameter="m"),
    Plant("impl.winograd-mults", "r taken as 3", {"convbook.winograd:winograd_mults": _mults_r_fixed}, parameter="r"),
    Plant("impl.winograd-mults", "always squared", {"convbook.winograd:winograd_mults": _mults_always_2d},
          parameter="dims"),
    Plant("impl.winograd-f43-symbolic", "Aᵀ loses its ∞ column for m >= 3",
          {"convbook.winograd:winograd_matrices": _at_without_infinity_column_for_large_m}, parameter="m"),
    Plant("impl.winograd-f43-symbolic", "G loses its ∞ row for r >= 4",
          {"convbook.winograd:winograd_matrices": _g_without_infinity_row_for_long_filters}, parameter="r"),
    Plant("impl.winograd-2d", "Aᵀ of two rows whatever m", {"convbook.winograd:_torch_matrices": _torch_matrices_two_output_rows},
          parameter="m"),
    Plant("impl.winograd-2d", "the larger padding used on both axes", {"convbook.winograd:conv2d_winograd": _conv_padding_rows_only},
          parameter="padding"),
    Plant("impl.winograd-2d", "group 0's filters in every group", {"convbook.winograd:conv2d_winograd": _conv_first_group_weights},
          parameter="groups"),
    Plant("impl.winograd-float32", "errors reported in the wrong order",
          {"convbook.winograd:float32_error_by_tile": lambda ms=(2, 4, 6), **kw: _swap_4_6(_ORIG_ERR(ms, **kw))}),
    Plant("impl.winograd-float32", "tile transforms computed in float64", {"convbook.winograd:conv2d_winograd": _winograd_in_float64}),
    Plant("impl.fast-algorithm-memory", "k−1 dropped from L",
          {"convbook.impl:fft_kernel_spectrum_numel": _spectrum_without_k_minus_1}, parameter="k"),
    Plant("impl.fast-algorithm-memory", "L_h used on both axes",
          {"convbook.impl:fft_kernel_spectrum_numel": _spectrum_height_for_both_axes}, parameter="n"),
    Plant("impl.fast-algorithm-memory", "rfft halving ignored",
          {"convbook.impl:fft_kernel_spectrum_numel": _spectrum_rfft_halving_ignored}),
    Plant("impl.fast-algorithm-memory", "input transform counted per (C_in, C_out) pair",
          {"convbook.winograd:winograd_layer_ops": _ops_input_transform_per_pair}, parameter="C_out"),
    Plant("impl.fast-algorithm-memory", "output transform counted per (C_in, C_out) pair",
          {"convbook.winograd:winograd_layer_ops": _ops_output_transform_per_pair}, parameter="C_in"),
    Plant("impl.fast-algorithm-memory", "tiles counted as ⌊n/m⌋",
          {"convbook.winograd:winograd_layer_ops": _ops_tiles_floored}, parameter="m"),
]

test_planted_failure = planted_failure_test(PLANTS)


def test_choose_tile_is_the_argmin_of_the_counted_multiplications():
    for c, n, batch in ((64, 56, 8), (512, 7, 1), (3, 5, 1), (16, 28, 2)):
        costs = {m: sum(winograd.winograd_layer_ops(c, c, n, n, 3, 3, m, batch).values()) for m in (2, 4, 6)}
        best = min(costs.values())
        assert winograd.choose_tile(c, c, n, n, batch=batch, candidates=(2, 4, 6)) == min(m for m in costs if costs[m] == best)
    # ties go to the smaller, more accurate tile
    assert winograd.choose_tile(1, 1, 1, 1, 1, 1, candidates=(4, 2, 1)) == 1
    assert winograd.choose_tile(8, 8, 14, 14, groups=4) == min(
        (2, 4), key=lambda m: sum(winograd.winograd_layer_ops(2, 2, 14, 14, 3, 3, m).values()))
    with pytest.raises(ValueError, match="groups 3 must divide"):
        winograd.choose_tile(8, 8, 14, 14, groups=3)
    with pytest.raises(ValueError, match="candidates must not be empty"):
        winograd.choose_tile(8, 8, 14, 14, candidates=())


def test_auto_tile_equals_conv2d_and_bad_tiles_are_refused():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, 9, 10, generator=g, dtype=torch.float64)
    w = torch.randn(6, 4, 3, 3, generator=g, dtype=torch.float64)
    y = conv2d_winograd(x, w, padding=1, groups=2, m="auto")
    assert torch.allclose(y, F.conv2d(x, w, padding=1, groups=2), atol=1e-11, rtol=0)
    for bad in (True, 0, 2.0, "best"):
        with pytest.raises(ValueError, match="tile size m"):
            conv2d_winograd(x, w, padding=1, groups=2, m=bad)
