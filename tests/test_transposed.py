"""Chapter 9: transposed convolution and checkerboard artifacts (convbook.transposed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from convbook import transposed as tr
from convbook.transposed import (adjoint_inner_products, conv_transpose_by_scatter, equivalent_conv_padding,
                                 interior_overlap, nearest_resize_conv_kernel, overlap_count, overlap_count_2d,
                                 overlap_is_uniform, pixel_shuffle_as_transposed, polyphase_sums,
                                 required_output_padding, resize_conv, subpixel_conv, transposed_as_conv,
                                 transposed_kernel_as_conv)
from tests.planting import Plant, planted_failure_test

D = torch.float64


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=D)


# --- valid inputs ---------------------------------------------------------------------------


@given(nd=st.sampled_from([1, 2]), g=st.integers(1, 2), m=st.integers(1, 5), k=st.integers(1, 4), s=st.integers(1, 3),
       p=st.integers(0, 2), d=st.integers(1, 2), op=st.integers(0, 2), seed=st.integers(0, 10_000))
def test_scatter_and_as_conv_match_pytorch(nd, g, m, k, s, p, d, op, seed):
    if op >= max(s, d) or (m - 1) * s - 2 * p + d * (k - 1) + op + 1 < 1:
        return
    y, w = _rand(2, 2 * g, *([m] * nd), seed=seed), _rand(2 * g, 3, *([k] * nd), seed=seed + 1)
    ref = (F.conv_transpose1d if nd == 1 else F.conv_transpose2d)(y, w, stride=s, padding=p, dilation=d, groups=g,
                                                                    output_padding=op)
    assert torch.allclose(conv_transpose_by_scatter(y, w, s, p, d, g, op), ref, rtol=1e-12, atol=1e-12)
    assert torch.allclose(transposed_as_conv(y, w, s, p, d, g, op), ref, rtol=1e-12, atol=1e-12)


def test_adjoint_inner_products_agree():
    x, w = _rand(1, 2, 7, 6), _rand(3, 2, 3, 2, seed=1)
    y = _rand(*F.conv2d(x, w, stride=2, padding=1).shape, seed=2)
    lhs, rhs = adjoint_inner_products(x, y, w, 2, 1)
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_required_output_padding_and_equivalent_padding():
    # n = 7, k = 3, s = 2, p = 1: (7 + 2 - 2 - 1) mod 2 = 0; n = 8 gives 1
    assert required_output_padding(7, 3, 2, 1) == 0
    assert required_output_padding(8, 3, 2, 1) == 1
    assert equivalent_conv_padding(3, 1, 2) == 3
    assert equivalent_conv_padding(1, 2) == -2


def test_transposed_kernel_as_conv_layout():
    w = torch.arange(2 * 3 * 2.0).reshape(2, 3, 2)
    v = transposed_kernel_as_conv(w)
    assert v.shape == (3, 2, 2) and torch.equal(v[1, 0], w[0, 1].flip(0))


def test_overlap_counts_examples():
    # k = 3, s = 2, 3 inputs: taps per output 1 1 2 1 2 1 1
    assert list(overlap_count(3, 2, 3)) == [1, 1, 2, 1, 2, 1, 1]
    assert list(interior_overlap(3, 2)) == [2, 1]
    assert list(interior_overlap(4, 2)) == [2, 2]
    assert overlap_count_2d((3, 3), (2, 2), (3, 3))[2, 2] == 4
    assert overlap_is_uniform(4, 2) and not overlap_is_uniform(3, 2)
    assert overlap_is_uniform((4, 6), (2, 3)) and not overlap_is_uniform((4, 5), (2, 2))


@given(k=st.integers(1, 12), s=st.integers(1, 6), n=st.integers(1, 6))
def test_overlap_count_property(k, s, n):
    ones = torch.ones(1, 1, n, dtype=D)
    ref = F.conv_transpose1d(ones, torch.ones(1, 1, k, dtype=D), stride=s)[0, 0].numpy()
    assert np.array_equal(overlap_count(k, s, n), ref)
    assert interior_overlap(k, s).sum() == k  # every tap lands on exactly one residue


def test_polyphase_sums_and_resize_kernel():
    w = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]], dtype=D)
    assert polyphase_sums(w, 2).tolist() == [[4.0, 6.0]]
    wc = _rand(2, 1, 3, seed=3)
    v = nearest_resize_conv_kernel(wc, 2)
    assert v.shape == (1, 2, 4)
    assert torch.allclose(polyphase_sums(v, 2, 2), wc.sum(dim=(1, 2))[:, None].expand(-1, 2), atol=1e-12)
    x = _rand(1, 1, 6, seed=4)
    assert torch.allclose(resize_conv(x, wc, 2), F.conv_transpose1d(x, v, stride=2, padding=2), atol=1e-12)


def test_resize_conv_linear_constant():
    x = torch.full((1, 1, 5, 5), 3.0, dtype=D)
    w = _rand(2, 1, 3, 3, seed=5)
    out = resize_conv(x, w, 2, "linear")
    assert torch.allclose(out, 3.0 * w.sum(dim=(1, 2, 3)).view(1, 2, 1, 1).expand_as(out), atol=1e-12)


def test_pixel_shuffle_as_transposed_small():
    x, w = _rand(1, 2, 5, 4), _rand(2 * 4, 2, 3, 3, seed=6)
    v, pad = pixel_shuffle_as_transposed(w, 2, 1)
    assert v.shape == (2, 2, 6, 6) and pad == (2, 2)
    assert torch.allclose(subpixel_conv(x, w, 2, 1), F.conv_transpose2d(x, v, stride=2, padding=pad), atol=1e-12)


def test_plots_draw(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tr.plot_overlap_patterns()
    tr.plot_checkerboard()
    plt.close("all")


# --- invalid inputs -------------------------------------------------------------------------


def test_invalid_inputs_raise_clear_errors():
    y, w = _rand(1, 2, 4), _rand(2, 3, 3)
    with pytest.raises(ValueError, match="output_padding must be smaller than max"):
        conv_transpose_by_scatter(y, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="output_padding must be smaller than max"):
        transposed_as_conv(y, w, stride=1, output_padding=1)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        conv_transpose_by_scatter(y, w, stride=0)
    with pytest.raises(ValueError, match="mismatched channels"):
        conv_transpose_by_scatter(_rand(1, 3, 4), w)
    with pytest.raises(ValueError, match="divisible by groups"):
        conv_transpose_by_scatter(y, w, groups=3)
    with pytest.raises(ValueError, match="N × C_in"):
        conv_transpose_by_scatter(_rand(2, 4), w)
    with pytest.raises(ValueError, match="output size < 1"):
        conv_transpose_by_scatter(_rand(1, 2, 1), _rand(2, 1, 1), padding=1)
    with pytest.raises(ValueError, match="only 1-D and 2-D"):
        conv_transpose_by_scatter(_rand(1, 2, 3, 3, 3), _rand(2, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="output shape"):
        adjoint_inner_products(_rand(1, 2, 5), _rand(1, 3, 9), _rand(3, 2, 3))
    with pytest.raises(ValueError, match="padding must be >= 0"):
        equivalent_conv_padding(3, -1)
    with pytest.raises(ValueError, match="divisible by groups"):
        transposed_kernel_as_conv(w, groups=4)
    with pytest.raises(ValueError, match="C_in × C_out/groups"):
        transposed_kernel_as_conv(_rand(3, 3))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        overlap_count(3, 0, 4)
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        interior_overlap(0, 2)
    with pytest.raises(ValueError, match="same length"):
        overlap_is_uniform((3, 3), 2)
    with pytest.raises(ValueError, match="sequence of 2"):
        overlap_count_2d((3, 3, 3), (2, 2), (4, 4))
    with pytest.raises(ValueError, match="C_in × C_out × k"):
        polyphase_sums(_rand(1, 1, 3, 3), 2)
    with pytest.raises(ValueError, match="mode must be"):
        resize_conv(y, _rand(1, 2, 3), 2, "cubic")
    with pytest.raises(ValueError, match="same rank"):
        resize_conv(y, _rand(1, 2, 3, 3), 2)
    with pytest.raises(ValueError, match="scale must be >= 1"):
        nearest_resize_conv_kernel(w, 0)
    with pytest.raises(ValueError, match="4-D"):
        nearest_resize_conv_kernel(_rand(3), 2)
    with pytest.raises(ValueError, match="C·r²"):
        subpixel_conv(_rand(1, 2, 4, 4), _rand(3, 2, 3, 3), 2)
    with pytest.raises(ValueError, match="C·r²"):
        pixel_shuffle_as_transposed(_rand(3, 2, 3, 3), 2)
    with pytest.raises(ValueError, match="0 <= p <= k - 1"):
        pixel_shuffle_as_transposed(_rand(4, 2, 3, 3), 2, 3)
    with pytest.raises(ValueError, match="dilated kernel larger"):
        required_output_padding(2, 5)


# --- planted failures -----------------------------------------------------------------------

_SCATTER = tr.conv_transpose_by_scatter
_AS_CONV_KERNEL = tr.transposed_kernel_as_conv
_RESIZE = tr.resize_conv


def _scatter_flipped(y, weight, *args, **kwargs):
    """The belief that transposing only flips the kernel in space... applied twice (no flip needed)."""
    return _SCATTER(y, weight.flip(-1), *args, **kwargs)


def _kernel_not_flipped(weight, groups=1):
    return _AS_CONV_KERNEL(weight, groups).flip(tuple(range(2, weight.dim())))


def _resize_by_zero_insertion(x, weight, scale, mode="nearest", padding=0):
    nd = x.dim() - 2
    up = x.new_zeros(*x.shape[:2], *[n * scale for n in x.shape[2:]])
    up[(slice(None), slice(None), *[slice(None, None, scale)] * nd)] = x * scale**nd
    return (F.conv1d if nd == 1 else F.conv2d)(up, weight, padding=padding)


def _pixel_kernel_no_flip(weight, scale, padding=0):
    c_rr, c_in, kh, kw = weight.shape
    c = c_rr // (scale * scale)
    p = (padding, padding) if isinstance(padding, int) else tuple(padding)
    v = weight.reshape(c, scale, scale, c_in, kh, kw).permute(3, 0, 4, 1, 5, 2).reshape(c_in, c, kh * scale, kw * scale)
    return v.contiguous(), (scale * (kh - 1 - p[0]), scale * (kw - 1 - p[1]))


def _overlap_floor(kernel_size, stride, length):
    """Every output gets floor(k/s) taps plus the border ramps: the 'average' belief."""
    counts = _OVERLAP(kernel_size, stride, length).copy()
    lo, hi = kernel_size - 1, (length - 1) * stride
    if hi >= lo:
        counts[lo : hi + 1] = kernel_size // stride
    return counts


_OVERLAP = tr.overlap_count

PLANTS = [
    Plant("transpose.adjoint", "kernel flipped in the scatter", {"convbook.transposed:conv_transpose_by_scatter": _scatter_flipped}),
    Plant("transpose.gradient", "output_padding forgotten",
          {"convbook.transposed:required_output_padding": lambda n, k, s=1, p=0, d=1: 0}),
    Plant("transpose.as-conv", "padding k-1-p ignores dilation",
          {"convbook.transposed:equivalent_conv_padding": lambda k, p=0, d=1: (k - 1) - p}),
    Plant("transpose.as-conv", "kernel not flipped", {"convbook.transposed:transposed_kernel_as_conv": _kernel_not_flipped}),
    Plant("transpose.output-size", "remainder mod (s+1)",
          {"convbook.transposed:required_output_padding": lambda n, k, s=1, p=0, d=1: (n + 2 * p - d * (k - 1) - 1) % (s + 1)}),
    Plant("transpose.overlap-count", "interior taken as floor(k/s)", {"convbook.transposed:overlap_count": _overlap_floor}),
    Plant("transpose.overlap-count", "interior ceil((k-r-1)/s)",
          {"convbook.transposed:interior_overlap": lambda k, s: (k - np.arange(s) + s - 2) // s}),
    Plant("transpose.uniform-iff-divides", "uniform once k >= s",
          {"convbook.transposed:overlap_is_uniform": lambda k, s: all(a >= b for a, b in zip(np.atleast_1d(k), np.atleast_1d(s)))}),
    Plant("transpose.constant-response", "residues without the padding shift",
          {"convbook.transposed:polyphase_sums": lambda w, s, p=0: _POLY(w, s, 0)}),
    Plant("transpose.resize-conv-uniform", "zero-insertion instead of resizing",
          {"convbook.transposed:resize_conv": _resize_by_zero_insertion}),
    Plant("transpose.pixel-shuffle", "sub-kernels placed without the flip",
          {"convbook.transposed:pixel_shuffle_as_transposed": _pixel_kernel_no_flip}),
]
_POLY = tr.polyphase_sums

test_planted_failure = planted_failure_test(PLANTS)
