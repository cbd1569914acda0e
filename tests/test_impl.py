"""Chapter 11: direct, im2col and FFT convolutions (convbook.impl)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from convbook import impl
from convbook.impl import (circular_alias_free, circular_conv1d, conv2d_direct, conv2d_fft, conv2d_im2col,
                           direct_mults, fft_crossover_kernel, fft_mults, im2col, im2col_blowup)
from tests.planting import Plant, planted_failure_test

D = torch.float64
ALGORITHMS = [conv2d_direct, conv2d_im2col, conv2d_fft]


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=D)


# --- valid inputs ---------------------------------------------------------------------------


@settings(max_examples=40)
@given(g=st.integers(1, 2), ci=st.integers(1, 2), co=st.integers(1, 2), h=st.integers(3, 8), w=st.integers(3, 8),
       kh=st.integers(1, 3), kw=st.integers(1, 3), s=st.integers(1, 3), p=st.integers(0, 2), d=st.integers(1, 2),
       bias=st.booleans(), seed=st.integers(0, 10_000))
def test_algorithms_match_torch(g, ci, co, h, w, kh, kw, s, p, d, bias, seed):
    if d * (kh - 1) + 1 > h + 2 * p or d * (kw - 1) + 1 > w + 2 * p:
        return
    x, weight = _rand(2, g * ci, h, w, seed=seed), _rand(g * co, ci, kh, kw, seed=seed + 1)
    b = _rand(g * co, seed=seed + 2) if bias else None
    ref = F.conv2d(x, weight, b, stride=s, padding=p, dilation=d, groups=g)
    for fn in ALGORITHMS:
        out = fn(x, weight, b, stride=s, padding=p, dilation=d, groups=g)
        assert out.shape == ref.shape
        assert torch.allclose(out, ref, rtol=1e-10, atol=1e-10), fn.__name__


def test_im2col_layout_and_shape():
    x = torch.arange(1.0, 17.0, dtype=D).reshape(1, 1, 4, 4)
    cols = im2col(x, 3)
    assert cols.shape == (1, 9, 4)  # (C k², H_out W_out)
    assert cols[0, :, 0].tolist() == [1, 2, 3, 5, 6, 7, 9, 10, 11]  # first receptive field, row-major
    assert torch.equal(cols, F.unfold(x, 3))


def test_blowup_factor_examples():
    assert im2col_blowup((56, 56), (3, 3), 1, 1) == 9
    assert im2col_blowup((224, 224), (7, 7), 2, 3) == Fraction(49, 4)
    assert im2col_blowup((5, 5), (3, 3)) == Fraction(9 * 9, 25)  # valid conv: 3×3 outputs


def test_circular_conv_and_alias_mask():
    x, w = _rand(6), _rand(3, seed=1)
    lin = np.convolve(x.numpy(), w.numpy())
    assert np.allclose(circular_conv1d(x, w, 8).numpy(), lin, atol=1e-12)  # L = N + K - 1
    c6 = circular_conv1d(x, w, 6).numpy()
    mask = circular_alias_free(6, 3, 6)
    assert mask.tolist() == [False, False, True, True, True, True]  # valid part K-1..N-1 survives
    assert np.allclose(c6[mask], lin[:6][mask], atol=1e-12)
    assert not np.allclose(c6[0], lin[0])


def test_cost_model_numbers():
    assert direct_mults(56, 3, 64, 64) == 64 * 64 * 56 * 56 * 9
    assert fft_mults(7, 2, 1, 1, power_of_two=True) == 2 * 4 * 64 * 3 + 4 * 64
    assert fft_crossover_kernel(56, 1, 1) == 9
    assert fft_crossover_kernel(3, 1, 1) is None


# --- invalid inputs -------------------------------------------------------------------------


@pytest.mark.parametrize("fn", ALGORITHMS)
def test_invalid_inputs(fn):
    x, w = _rand(1, 4, 6, 6), _rand(2, 2, 3, 3)
    with pytest.raises(ValueError, match="4-D tensor"):
        fn(x[0], w)
    with pytest.raises(ValueError, match="weight must be a 4-D"):
        fn(x, w[0])
    with pytest.raises(ValueError, match="share dtype"):
        fn(x.float(), w)
    with pytest.raises(ValueError, match="groups must be an int"):
        fn(x, w, groups=0)
    with pytest.raises(ValueError, match="groups must divide"):
        fn(x, _rand(3, 2, 3, 3), groups=2)
    with pytest.raises(ValueError, match="input channels per group"):
        fn(x, w, groups=1)
    with pytest.raises(ValueError, match="bias must have shape"):
        fn(x, w, _rand(3), groups=2)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        fn(x, w, stride=0, groups=2)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        fn(x, w, padding=-1, groups=2)
    with pytest.raises(ValueError, match="dilation must be >= 1"):
        fn(x, w, dilation=0, groups=2)
    with pytest.raises(ValueError, match="dilated kernel larger"):
        fn(x, w, dilation=4, groups=2)
    with pytest.raises(ValueError, match="string padding"):
        fn(x, w, padding="same", groups=2)


def test_invalid_helpers():
    with pytest.raises(ValueError, match="4-D tensor"):
        im2col(_rand(4, 4), 3)
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        im2col(_rand(1, 1, 4, 4), 0)
    with pytest.raises(ValueError, match="must be 1-D"):
        circular_conv1d(_rand(2, 2), _rand(2), 4)
    with pytest.raises(ValueError, match="length must be >="):
        circular_conv1d(_rand(5), _rand(2), 4)
    with pytest.raises(ValueError, match="L >= max"):
        circular_alias_free(5, 2, 3)


# --- planted failures -----------------------------------------------------------------------


_DIRECT, _IM2COL, _FFT = impl.conv2d_direct, impl.conv2d_im2col, impl.conv2d_fft


def _direct_without_bias(x, weight, bias=None, **kw):
    return _DIRECT(x, weight, None, **kw)


def _im2col_kernel_transposed(x, weight, bias=None, **kw):
    return _IM2COL(x, weight.transpose(2, 3).contiguous() if weight.shape[2] == weight.shape[3] else weight, bias, **kw)


def _fft_without_flip(x, weight, bias=None, **kw):
    """The classic slip: forgetting that the layer is a cross-correlation."""
    return _FFT(x, torch.flip(weight, dims=(-2, -1)), bias, **kw)


def _unfold_off_by_one(x, kernel_size, stride=1, padding=0, dilation=1):
    cols = F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=stride)
    return torch.roll(cols, 1, dims=-1)


def _alias_mask_too_optimistic(n, k, length):
    return np.ones(length, dtype=bool)  # "circular = linear" without the padding


_ORIG_FFT_MULTS = impl.fft_mults
_ORIG_BLOWUP = impl.im2col_blowup
_ORIG_IM2COL = impl.conv2d_im2col
_ORIG_UNFOLD_BATCH_LAST = impl._unfold_batch_last


def _wide_1x1_images_swapped(x, w, b, stride, padding, dilation, groups):
    """The per-image 1×1 layout with the batch reversed (wrong only for ≥ 2 images of ≥ 512 output pixels)."""
    y = _ORIG_IM2COL(x, w, b, stride, padding, dilation, groups)
    if tuple(w.shape[2:]) == (1, 1) and x.shape[0] > 1 and y.shape[2] * y.shape[3] >= 512:
        y = y.flip(0)
    return y


def _wrong_phase(x, prm):
    """The strided unfolding shifted by one output column (wrong only when s > 1)."""
    if prm.stride == (1, 1):
        return _ORIG_UNFOLD_BATCH_LAST(x, prm)
    cols = _ORIG_UNFOLD_BATCH_LAST(x, prm)
    return torch.roll(cols, 1, dims=-1)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _one_value_for_both_axes(fn, name, pick):
    """A wrong implementation that uses one value of ``name`` (``pick`` of the two) on both axes."""
    def wrong(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        kw = {"stride": _pair(stride), "padding": _pair(padding), "dilation": _pair(dilation)}
        v = pick(kw[name])
        kw[name] = (v, v)
        return fn(x, weight, bias, groups=groups, **kw)
    return wrong


def _first_group_everywhere(fn):
    def wrong(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        per = weight.shape[0] // groups
        return fn(x, weight[:per].repeat(groups, 1, 1, 1), bias, stride, padding, dilation, groups)
    return wrong


def _without_bias(fn):
    def wrong(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        return fn(x, weight, None, stride, padding, dilation, groups)
    return wrong


def _conv_param_plants(claim_id, target, fn):
    return [
        Plant(claim_id, "row stride on both axes", {target: _one_value_for_both_axes(fn, "stride", min)}, parameter="stride"),
        Plant(claim_id, "larger padding on both axes", {target: _one_value_for_both_axes(fn, "padding", max)},
              parameter="padding"),
        Plant(claim_id, "smaller dilation on both axes", {target: _one_value_for_both_axes(fn, "dilation", min)},
              parameter="dilation"),
        Plant(claim_id, "group 0's filters in every group", {target: _first_group_everywhere(fn)}, parameter="groups"),
        Plant(claim_id, "bias dropped", {target: _without_bias(fn)}, parameter="bias"),
    ]


def _fft_mults_square_channels(n, k, c_in, c_out, power_of_two=False):
    return _ORIG_FFT_MULTS(n, k, c_in, c_in, power_of_two)  # C_out taken equal to C_in


def _bisection_lower_half(n, c_in, c_out, k_max=None, power_of_two=False):
    k_max = n if k_max is None else k_max
    wins = [k for k in range(1, k_max + 1, 2) if _ORIG_FFT_MULTS(n, k, c_in, c_out, power_of_two) < direct_mults(n, k, c_in, c_out)]
    return wins[0] - 2 if wins and wins[0] > 1 else (wins[0] if wins else None)


PLANTS = [
    *_conv_param_plants("impl.direct", "convbook.impl:conv2d_direct", _DIRECT),
    *_conv_param_plants("impl.im2col", "convbook.impl:conv2d_im2col", _IM2COL),
    *_conv_param_plants("impl.fft", "convbook.impl:conv2d_fft", _FFT),
    Plant("impl.im2col", "kernel rows and columns swapped", {"convbook.impl:conv2d_im2col": _im2col_kernel_transposed}),
    Plant("impl.im2col", "columns shifted by one position", {"convbook.impl:im2col": _unfold_off_by_one}),
    Plant("impl.im2col", "wide 1x1 layout mixes up the images",
          {"convbook.impl:conv2d_im2col": lambda x, w, b=None, stride=1, padding=0, dilation=1, groups=1:
           _wide_1x1_images_swapped(x, w, b, stride, padding, dilation, groups)}),
    Plant("impl.im2col", "strided unfolding shifted by one output column", {"convbook.impl:_unfold_batch_last": _wrong_phase}),
    Plant("impl.im2col-blowup", "stride forgotten in the factor",
          {"convbook.impl:im2col_blowup": lambda size, k, stride=1, padding=0, dilation=1: Fraction(k[0] * k[1])},
          parameter="stride"),
    Plant("impl.im2col-blowup", "k_h² for a k_h × k_w kernel",
          {"convbook.impl:im2col_blowup": lambda size, k, stride=1, padding=0, dilation=1:
           _ORIG_BLOWUP(size, k, stride, padding, dilation) * Fraction(k[0], k[1])}, parameter="kernel size"),
    Plant("impl.im2col-blowup", "the larger side used for both axes",
          {"convbook.impl:im2col_blowup": lambda size, k, stride=1, padding=0, dilation=1:
           _ORIG_BLOWUP((max(size), max(size)), k, stride, padding, dilation)}, parameter="per-axis sizes"),
    Plant("impl.fft", "kernel not flipped", {"convbook.impl:conv2d_fft": _fft_without_flip}),
    Plant("impl.fft-padding", "alias-free everywhere", {"convbook.impl:circular_alias_free": _alias_mask_too_optimistic},
          parameter="L"),
    Plant("impl.fft-padding", "aliases believed to reach K - 1 whatever L",
          {"convbook.impl:circular_alias_free": lambda n, k, length: np.arange(length) >= k - 1}, parameter="N"),
    Plant("impl.fft-padding", "K left out of the alias bound",
          {"convbook.impl:circular_alias_free": lambda n, k, length: np.arange(length) >= n - length}, parameter="K"),
    Plant("impl.fft-crossover", "threshold one odd size too small", {"convbook.impl:fft_crossover_kernel": _bisection_lower_half}),
    Plant("impl.fft-crossover", "direct count misses k² (counts k)",
          {"convbook.impl:direct_mults": lambda n, k, c_in, c_out: c_in * c_out * n * n * k}, parameter="k"),
    Plant("impl.fft-crossover", "direct count with n instead of n²",
          {"convbook.impl:direct_mults": lambda n, k, c_in, c_out: c_in * c_out * n * k * k}, parameter="n"),
    Plant("impl.fft-crossover", "FFT count with C_out = C_in", {"convbook.impl:fft_mults": _fft_mults_square_channels},
          parameter="channels"),
]

test_planted_failure = planted_failure_test(PLANTS)


def test_cost_formulas_match_the_multiplications_performed():
    """Regression: the crossover check once compared the cost model only with itself."""
    x, w = _rand(1, 3, 6, 6), _rand(2, 3, 3, 3, seed=1)
    y, performed = impl.count_multiplications(conv2d_direct, x, w, padding=1)
    assert performed == direct_mults(6, 3, 3, 2) and torch.allclose(y, F.conv2d(x, w, padding=1), atol=1e-12)
    y_fft, mults = impl.conv2d_fft_counted(x[0].numpy(), w.numpy(), 1)
    assert mults == impl.fft_mults(6, 3, 3, 2, power_of_two=True)
    assert np.allclose(y_fft, F.conv2d(x, w, padding=1)[0].numpy(), atol=1e-12)
    counter = {}
    a = np.arange(8.0)
    assert np.allclose(impl.radix2_fft(a, counter=counter), np.fft.fft(a)) and counter == {"complex_mults": 12}
    with pytest.raises(ValueError, match="power of two"):
        impl.radix2_fft(np.zeros(6))


def test_counted_fft_convolution_refuses_bad_shapes():
    with pytest.raises(ValueError, match=r"\(C_in, n, n\)"):
        impl.conv2d_fft_counted(np.zeros((2, 4, 5)), np.zeros((1, 2, 3, 3)), 1)
    with pytest.raises(ValueError, match="padding must be"):
        impl.conv2d_fft_counted(np.zeros((2, 2, 2)), np.zeros((1, 2, 5, 5)), 0)
    with pytest.raises(ValueError, match="binary einsums"):
        impl.count_multiplications(lambda: torch.einsum("i...,i...->...", torch.ones(2, 3), torch.ones(2, 3)))
    with pytest.raises(ValueError, match="unaccounted"):
        impl.count_multiplications(F.conv2d, torch.ones(1, 1, 3, 3), torch.ones(1, 1, 2, 2))


# --- the fast layouts: every path of conv2d_im2col and the pruned kernel transform ----------------


@pytest.mark.parametrize("n,hw,stride,groups,bias", [
    (1, 6, 1, 1, False),     # one image: the input is the matrix (a view)
    (3, 24, 1, 2, True),     # >= 512 output pixels per image: each image multiplied in place
    (3, 6, 1, 1, False),     # few pixels: images side by side, one GEMM
    (2, 7, 2, 1, True),      # strided 1x1: subsampled input
    (2, 7, (2, 3), 2, False),
])
def test_im2col_unpadded_1x1_paths_equal_conv2d(n, hw, stride, groups, bias):
    x, w = _rand(n, 4, hw, hw, seed=3), _rand(6, 4 // groups, 1, 1, seed=4)
    b = _rand(6, seed=5) if bias else None
    y = impl.conv2d_im2col(x, w, b, stride=stride, groups=groups)
    ref = F.conv2d(x, w, b, stride=stride, groups=groups)
    assert y.shape == ref.shape and y.is_contiguous() and torch.allclose(y, ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("stride,dilation", [((2, 2), (1, 1)), ((3, 2), (2, 3)), ((2, 1), (2, 2)), ((1, 3), (3, 1))])
def test_im2col_strided_taps_read_the_right_phase(stride, dilation):
    """x_pad[s u + d a] = P_{(d a) mod s}[u + ⌊d a / s⌋]: every combination of phase and offset."""
    x, w = _rand(2, 3, 13, 11, seed=6), _rand(4, 3, 3, 3, seed=7)
    y = impl.conv2d_im2col(x, w, stride=stride, padding=(2, 1), dilation=dilation)
    assert torch.allclose(y, F.conv2d(x, w, stride=stride, padding=(2, 1), dilation=dilation), atol=1e-12, rtol=0)


@pytest.mark.parametrize("k,dilation,lengths", [((3, 3), (1, 1), (8, 8)), ((5, 2), (2, 3), (11, 7)), ((1, 4), (1, 2), (3, 9))])
def test_fft_kernel_spectrum_is_rfft2_of_the_zero_filled_flipped_kernel(k, dilation, lengths):
    w = _rand(3, 2, *k, seed=8)
    ext = tuple(d * (kk - 1) + 1 for d, kk in zip(dilation, k))
    wd = torch.zeros(3, 2, *ext, dtype=w.dtype)
    wd[..., :: dilation[0], :: dilation[1]] = w
    ref = torch.fft.rfft2(torch.flip(wd, dims=(-2, -1)), s=lengths).permute(2, 3, 0, 1)
    spec = impl.fft_kernel_spectrum(w, lengths, dilation)
    assert spec.shape == ref.shape and torch.allclose(spec, ref, atol=1e-12, rtol=0)
    assert impl.fft_kernel_spectrum(w.float(), lengths, dilation).dtype == torch.complex64


def test_fft_kernel_spectrum_refuses_bad_input():
    w = _rand(3, 2, 3, 3)
    with pytest.raises(ValueError, match="must be 4-D"):
        impl.fft_kernel_spectrum(w[0], (8, 8))
    with pytest.raises(ValueError, match="must be >= the dilated kernel's extent"):
        impl.fft_kernel_spectrum(w, (4, 8), 2)
    with pytest.raises(ValueError, match="dilation"):
        impl.fft_kernel_spectrum(w, (8, 8), 0)


def test_fft_batched_and_grouped_with_stride_equals_conv2d():
    x, w, b = _rand(5, 6, 10, 9, seed=9), _rand(4, 3, 5, 3, seed=10), _rand(4, seed=11)
    kw = dict(stride=(2, 3), padding=(2, 1), dilation=(1, 2), groups=2)
    assert torch.allclose(impl.conv2d_fft(x, w, b, **kw), F.conv2d(x, w, b, **kw), atol=1e-11, rtol=0)
