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
                                 overlap_count_nd, overlap_is_uniform, resize_conv_constant_region, pixel_shuffle_as_transposed, polyphase_sums,
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


def test_overlap_with_dilation_regression():
    # k = 2, s = 2, d = 2: taps 0 and 2 both land on even outputs; odd outputs get nothing.
    # overlap_is_uniform(2, 2) used to say uniform, ignoring the dilation.
    ref = F.conv_transpose1d(torch.ones(1, 1, 5, dtype=D), torch.ones(1, 1, 2, dtype=D), stride=2, dilation=2)[0, 0]
    assert ref.tolist() == [1, 0, 2, 0, 2, 0, 2, 0, 2, 0, 1]
    assert overlap_count(2, 2, 5, 2).tolist() == ref.tolist()
    assert interior_overlap(2, 2, 2).tolist() == [2, 0]
    assert not overlap_is_uniform(2, 2, 2) and overlap_is_uniform(2, 2, 1)
    assert overlap_is_uniform(4, 2, 3) and not overlap_is_uniform(4, 2, 2)  # gcd(d, s) = 1 and s | k
    assert overlap_is_uniform((4, 3), (2, 3), (1, 2)) and not overlap_is_uniform((4, 3), (2, 3), (1, 3))


def test_overlap_nd_per_axis_and_3d():
    k, s, d, n = (2, 3, 1), (2, 1, 3), (1, 2, 2), (3, 2, 2)
    ref = F.conv_transpose3d(torch.ones(1, 1, *n, dtype=D), torch.ones(1, 1, *k, dtype=D), stride=s, dilation=d)[0, 0]
    assert np.array_equal(overlap_count_nd(k, s, n, d), ref.numpy())
    assert overlap_count_2d((3, 2), (2, 1), (3, 4), (1, 3)).shape == (7, 7)


@given(k=st.integers(1, 12), s=st.integers(1, 6), n=st.integers(1, 6), d=st.integers(1, 5))
def test_overlap_count_property(k, s, n, d):
    ones = torch.ones(1, 1, n, dtype=D)
    ref = F.conv_transpose1d(ones, torch.ones(1, 1, k, dtype=D), stride=s, dilation=d)[0, 0].numpy()
    assert np.array_equal(overlap_count(k, s, n, d), ref)
    assert interior_overlap(k, s, d).sum() == k  # every tap lands on exactly one residue


def test_resize_conv_zero_padding_border_regression():
    # a constant input through nearest resize and a 3-tap ones conv with zero padding 1: 2, 3, ..., 3, 2
    x = torch.ones(1, 1, 4, dtype=D)
    out = resize_conv(x, torch.ones(1, 1, 3, dtype=D), 2, padding=1)[0, 0]
    assert out.tolist() == [2, 3, 3, 3, 3, 3, 3, 2]
    assert resize_conv_constant_region(8, 1) == slice(1, 7)
    for mode in ("reflect", "replicate", "circular"):
        out = resize_conv(x, torch.ones(1, 1, 3, dtype=D), 2, padding=1, padding_mode=mode)[0, 0]
        assert out.tolist() == [3] * 8
        assert resize_conv_constant_region(8, 1, mode) == slice(0, 8)
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        resize_conv(x, torch.ones(1, 1, 3, dtype=D), 2, padding_mode="wrap")


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
    axes = tr.plot_scatter_steps([1.0, 2.0, -1.0], [1.0, 0.5, 0.25], stride=2)
    assert len(axes) == 3
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
        overlap_is_uniform((3, 3), (2, 2, 2))
    with pytest.raises(ValueError, match="kernel_size must be an int or a"):
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


def _resize_by_zero_insertion(x, weight, scale, mode="nearest", padding=0, padding_mode="zeros"):
    nd = x.dim() - 2
    up = x.new_zeros(*x.shape[:2], *[n * scale for n in x.shape[2:]])
    up[(slice(None), slice(None), *[slice(None, None, scale)] * nd)] = x * scale**nd
    if padding_mode != "zeros":
        up = F.pad(up, [padding] * (2 * nd), mode=padding_mode)
        padding = 0
    return (F.conv1d if nd == 1 else F.conv2d)(up, weight, padding=padding)


def _pixel_kernel_no_flip(weight, scale, padding=0):
    c_rr, c_in, kh, kw = weight.shape
    c = c_rr // (scale * scale)
    p = (padding, padding) if isinstance(padding, int) else tuple(padding)
    v = weight.reshape(c, scale, scale, c_in, kh, kw).permute(3, 0, 4, 1, 5, 2).reshape(c_in, c, kh * scale, kw * scale)
    return v.contiguous(), (scale * (kh - 1 - p[0]), scale * (kw - 1 - p[1]))


def _pixel_phases_swapped(weight, scale, padding=0):
    c_rr, c_in, kh, kw = weight.shape
    c = c_rr // (scale * scale)
    w = weight.reshape(c, scale, scale, c_in, kh, kw).transpose(1, 2).reshape(c_rr, c_in, kh, kw)
    return _PIXEL(w, scale, padding)


def _pixel_pad_axis0(weight, scale, padding=0):
    v, pad = _PIXEL(weight, scale, padding)
    p = (padding, padding) if isinstance(padding, int) else tuple(padding)
    return v, (pad[0], scale * (weight.shape[2] - 1 - p[1]))


_OVERLAP = tr.overlap_count
_OVERLAP_ND = tr.overlap_count_nd
_INTERIOR = tr.interior_overlap
_UNIFORM = tr.overlap_is_uniform
_AS_CONV = tr.transposed_as_conv
_REGION = tr.resize_conv_constant_region
_NEAREST_KERNEL = tr.nearest_resize_conv_kernel
_PIXEL = tr.pixel_shuffle_as_transposed


def _scatter_with(**change):
    """The scatter with one argument forced to a wrong value (the parameter ignored)."""
    def wrong(y, weight, stride=1, padding=0, dilation=1, groups=1, output_padding=0):
        args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, output_padding=output_padding)
        nd = weight.dim() - 2
        for name, fn in change.items():
            args[name] = fn(args[name], nd)
        return _SCATTER(y, weight, **args)
    return wrong


def _axis0(v, nd):
    return (tuple(v) if not isinstance(v, int) else (v,) * nd)[0]


def _scatter_groups_swapped(y, weight, stride=1, padding=0, dilation=1, groups=1, output_padding=0):
    """Each group's output channels written to the other group's slots."""
    out = _SCATTER(y, weight, stride, padding, dilation, groups, output_padding)
    return out.reshape(out.shape[0], groups, -1, *out.shape[2:]).flip(1).reshape(out.shape)


def _as_conv_with(**change):
    def wrong(y, weight, stride=1, padding=0, dilation=1, groups=1, output_padding=0):
        args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, output_padding=output_padding)
        for name, fn in change.items():
            args[name] = fn(args[name], weight.dim() - 2)
        return _AS_CONV(y, weight, **args)
    return wrong


def _as_conv_kernel_no_groups(weight, groups=1):
    """Channels swapped across the whole tensor instead of within each group."""
    v = _AS_CONV_KERNEL(weight, 1)
    return v.reshape(groups, -1, *v.shape[1:])[:, :, : v.shape[1] // groups].reshape(-1, v.shape[1] // groups, *v.shape[2:]) \
        if v.shape[0] % groups == 0 and v.shape[1] % groups == 0 else v


def _overlap_no_dilation(kernel_size, stride, length, dilation=1):
    return _OVERLAP(kernel_size, stride, length, 1)


def _overlap_floor(kernel_size, stride, length, dilation=1):
    """Every output gets floor(k/s) taps plus the border ramps: the 'average' belief."""
    counts = _OVERLAP(kernel_size, stride, length, dilation).copy()
    lo, hi = dilation * (kernel_size - 1), (length - 1) * stride
    if hi >= lo:
        counts[lo : hi + 1] = kernel_size // stride
    return counts


def _overlap_no_borders(kernel_size, stride, length, dilation=1):
    """The interior pattern everywhere, as if the input were infinite."""
    j = np.arange((length - 1) * stride + dilation * (kernel_size - 1) + 1)
    return _INTERIOR(kernel_size, stride, dilation)[j % stride]


def _overlap_nd_axis0(kernel_size, stride, length, dilation=1):
    nd = len(tuple(kernel_size))
    ds = dilation if isinstance(dilation, int) else tuple(dilation)[0]
    return _OVERLAP_ND([tuple(kernel_size)[0]] * nd, [tuple(stride)[0]] * nd, length, ds)


PLANTS = [
    Plant("transpose.adjoint", "kernel flipped in the scatter", {"convbook.transposed:conv_transpose_by_scatter": _scatter_flipped}),
    Plant("transpose.adjoint", "stride ignored by the scatter",
          {"convbook.transposed:conv_transpose_by_scatter": _scatter_with(stride=lambda v, nd: 1, output_padding=lambda v, nd: 0)},
          parameter="stride"),
    Plant("transpose.adjoint", "padding not cropped",
          {"convbook.transposed:conv_transpose_by_scatter": _scatter_with(padding=lambda v, nd: 0)}, parameter="padding"),
    Plant("transpose.adjoint", "taps placed 1 apart whatever the dilation",
          {"convbook.transposed:conv_transpose_by_scatter": _scatter_with(dilation=lambda v, nd: 1, output_padding=lambda v, nd: 0)},
          parameter="dilation"),
    Plant("transpose.adjoint", "groups' outputs swapped",
          {"convbook.transposed:conv_transpose_by_scatter": _scatter_groups_swapped}, parameter="groups"),
    Plant("transpose.adjoint", "axis 0's stride on every axis",
          {"convbook.transposed:conv_transpose_by_scatter": _scatter_with(stride=_axis0, output_padding=lambda v, nd: 0)},
          parameter="per-axis sizes"),
    Plant("transpose.gradient", "output_padding forgotten",
          {"convbook.transposed:required_output_padding": lambda n, k, s=1, p=0, d=1: 0}, parameter="output_padding"),
    Plant("transpose.gradient", "stride ignored by the scatter",
          {"convbook.transposed:conv_transpose_by_scatter": _scatter_with(stride=lambda v, nd: 1, output_padding=lambda v, nd: 0)},
          parameter="stride"),
    Plant("transpose.gradient", "padding not cropped",
          {"convbook.transposed:conv_transpose_by_scatter": _scatter_with(padding=lambda v, nd: 0)}, parameter="padding"),
    Plant("transpose.gradient", "taps placed 1 apart whatever the dilation",
          {"convbook.transposed:conv_transpose_by_scatter": _scatter_with(dilation=lambda v, nd: 1, output_padding=lambda v, nd: 0)},
          parameter="dilation"),
    Plant("transpose.gradient", "groups' outputs swapped",
          {"convbook.transposed:conv_transpose_by_scatter": _scatter_groups_swapped}, parameter="groups"),
    Plant("transpose.as-conv", "padding k-1-p ignores dilation",
          {"convbook.transposed:equivalent_conv_padding": lambda k, p=0, d=1: (k - 1) - p}, parameter="dilation"),
    Plant("transpose.as-conv", "padding d(k-1) ignores p",
          {"convbook.transposed:equivalent_conv_padding": lambda k, p=0, d=1: d * (k - 1)}, parameter="padding"),
    Plant("transpose.as-conv", "kernel not flipped", {"convbook.transposed:transposed_kernel_as_conv": _kernel_not_flipped}),
    Plant("transpose.as-conv", "no zeros inserted (stride ignored)",
          {"convbook.transposed:transposed_as_conv": _as_conv_with(stride=lambda v, nd: 1, output_padding=lambda v, nd: 0)},
          parameter="stride"),
    Plant("transpose.as-conv", "output_padding dropped",
          {"convbook.transposed:transposed_as_conv": _as_conv_with(output_padding=lambda v, nd: 0)}, parameter="output_padding"),
    Plant("transpose.as-conv", "channels swapped across groups",
          {"convbook.transposed:transposed_kernel_as_conv": _as_conv_kernel_no_groups}, parameter="groups"),
    Plant("transpose.as-conv", "axis 0's padding on every axis",
          {"convbook.transposed:transposed_as_conv": _as_conv_with(padding=_axis0)}, parameter="per-axis sizes"),
    Plant("transpose.output-size", "remainder mod (s+1)",
          {"convbook.transposed:required_output_padding": lambda n, k, s=1, p=0, d=1: (n + 2 * p - d * (k - 1) - 1) % (s + 1)},
          parameter="stride"),
    Plant("transpose.output-size", "dilation left out of the remainder",
          {"convbook.transposed:required_output_padding": lambda n, k, s=1, p=0, d=1: (n + 2 * p - (k - 1) - 1) % s},
          parameter="dilation"),
    Plant("transpose.output-size", "padding left out of the remainder",
          {"convbook.transposed:required_output_padding": lambda n, k, s=1, p=0, d=1: (n - d * (k - 1) - 1) % s},
          parameter="padding"),
    Plant("transpose.output-size", "d·k instead of d(k-1)",
          {"convbook.transposed:required_output_padding": lambda n, k, s=1, p=0, d=1: (n + 2 * p - d * k - 1) % s},
          parameter="kernel"),
    Plant("transpose.output-size", "output_padding independent of the input size",
          {"convbook.transposed:required_output_padding": lambda n, k, s=1, p=0, d=1: 0}, parameter="input size"),
    Plant("transpose.overlap-count", "interior taken as floor(k/s)", {"convbook.transposed:overlap_count": _overlap_floor},
          parameter="kernel"),
    Plant("transpose.overlap-count", "interior ceil((k-r-1)/s)",
          {"convbook.transposed:interior_overlap": lambda k, s, d=1: (k - np.arange(s) + s - 2) // s}, parameter="stride"),
    Plant("transpose.overlap-count", "dilation ignored", {"convbook.transposed:overlap_count": _overlap_no_dilation},
          parameter="dilation"),
    Plant("transpose.overlap-count", "border ramps ignored", {"convbook.transposed:overlap_count": _overlap_no_borders},
          parameter="input length"),
    Plant("transpose.overlap-count", "axis 0's kernel and stride on every axis",
          {"convbook.transposed:overlap_count_nd": _overlap_nd_axis0}, parameter="per-axis sizes"),
    Plant("transpose.uniform-iff-divides", "uniform once k >= s",
          {"convbook.transposed:overlap_is_uniform": lambda k, s, d=1: all(a >= b for a, b in zip(np.atleast_1d(k), np.atleast_1d(s)))},
          parameter="kernel"),
    Plant("transpose.uniform-iff-divides", "uniform iff k is even (the stride-2 rule for every stride)",
          {"convbook.transposed:overlap_is_uniform": lambda k, s, d=1: all(a % 2 == 0 for a in np.atleast_1d(k))},
          parameter="stride"),
    Plant("transpose.uniform-iff-divides", "dilation ignored: s | k",
          {"convbook.transposed:overlap_is_uniform": lambda k, s, d=1: _UNIFORM(k, s, 1)}, parameter="dilation"),
    Plant("transpose.uniform-iff-divides", "only axis 0 examined",
          {"convbook.transposed:overlap_is_uniform": lambda k, s, d=1: _UNIFORM(*(np.atleast_1d(v)[:1].tolist() for v in (k, s, d)))},
          parameter="per-axis sizes"),
    Plant("transpose.constant-response", "residues without the padding shift",
          {"convbook.transposed:polyphase_sums": lambda w, s, p=0: _POLY(w, s, 0)}, parameter="padding"),
    Plant("transpose.constant-response", "residues mod 2 whatever the stride",
          {"convbook.transposed:polyphase_sums": lambda w, s, p=0: _POLY(w, 2, p)[:, np.arange(s) % 2]}, parameter="stride"),
    Plant("transpose.constant-response", "last tap left out",
          {"convbook.transposed:polyphase_sums": lambda w, s, p=0: _POLY(w[:, :, :-1], s, p) if w.shape[2] > 1 else _POLY(0 * w, s, p)},
          parameter="kernel"),
    Plant("transpose.constant-response", "only the first input channel summed",
          {"convbook.transposed:polyphase_sums": lambda w, s, p=0: _POLY(w[:1], s, p)}, parameter="channels"),
    Plant("transpose.resize-conv-uniform", "zero-insertion instead of resizing",
          {"convbook.transposed:resize_conv": _resize_by_zero_insertion}, parameter="interpolation"),
    Plant("transpose.resize-conv-uniform", "zero padding treated as uniform",
          {"convbook.transposed:resize_conv_constant_region": lambda n, p, mode="zeros": slice(0, n)}, parameter="padding"),
    Plant("transpose.resize-conv-uniform", "padding mode ignored (always zeros)",
          {"convbook.transposed:resize_conv": lambda x, w, s, mode="nearest", padding=0, padding_mode="zeros":
           _RESIZE(x, w, s, mode, padding)}, parameter="padding_mode"),
    Plant("transpose.resize-conv-uniform", "box of s + 1 ones",
          {"convbook.transposed:nearest_resize_conv_kernel": lambda w, s: _NEAREST_KERNEL(w, s + 1)}, parameter="scale"),
    Plant("transpose.pixel-shuffle", "sub-kernels placed without the flip",
          {"convbook.transposed:pixel_shuffle_as_transposed": _pixel_kernel_no_flip}),
    Plant("transpose.pixel-shuffle", "padding r(k-1) ignores p",
          {"convbook.transposed:pixel_shuffle_as_transposed": lambda w, r, p=0: _PIXEL(w, r, 0)}, parameter="padding"),
    Plant("transpose.pixel-shuffle", "phases φ and ψ swapped",
          {"convbook.transposed:pixel_shuffle_as_transposed": _pixel_phases_swapped}, parameter="scale"),
    Plant("transpose.pixel-shuffle", "axis 0's kernel size in both paddings",
          {"convbook.transposed:pixel_shuffle_as_transposed": _pixel_pad_axis0}, parameter="per-axis sizes"),
]
_POLY = tr.polyphase_sums

test_planted_failure = planted_failure_test(PLANTS)


def test_numpy_integers_accepted_floats_refused():
    # np.int64 used to raise TypeError inside pow(); floats must be refused with a ValueError
    assert overlap_count(np.int64(3), np.int64(2), np.int64(5)).tolist() == overlap_count(3, 2, 5).tolist()
    assert overlap_count_nd((2, 3), (2, 1), (3, 2), np.int64(2)).shape == overlap_count_nd((2, 3), (2, 1), (3, 2), 2).shape
    assert overlap_is_uniform(np.int64(4), np.int64(2)) and not overlap_is_uniform(np.int64(2), 2, np.int64(2))
    assert required_output_padding(np.int64(8), 3, np.int64(2), 1) == 1
    with pytest.raises(ValueError, match="must be an integer"):
        overlap_count(4.0, 2, 6)
    with pytest.raises(ValueError, match="padding must be an integer"):
        required_output_padding(9, 3, 1, "same")


# --- picture: checkerboard on a smooth image ----------------------------------------------------


def test_checkerboard_demo_transposed_has_far_larger_period2_component():
    demo = tr.checkerboard_demo(64, seed=0)
    assert demo["input"].shape == (32, 32) and demo["transposed"].shape == (64, 64)
    assert demo["resize_conv"].shape == (64, 64)
    # measured: 0.44 vs 2.7e-4 (ratio about 1600) for seed 0; other seeds give ratios above 1000
    assert demo["fraction_transposed"] > 0.1
    assert demo["fraction_resize_conv"] < 1e-3
    assert demo["ratio"] > 100
    for seed in range(1, 4):
        assert tr.checkerboard_demo(32, seed=seed)["ratio"] > 10


def test_checkerboard_demo_weights_and_resize_conv_of_constant_is_constant():
    demo = tr.checkerboard_demo(16, seed=0)
    assert float(demo["w_transposed"].sum()) == pytest.approx(4.0)
    assert float(demo["w_resize"].sum()) == pytest.approx(1.0)
    assert bool((demo["w_transposed"] > 0).all()) and bool((demo["w_resize"] > 0).all())
    x = torch.full((1, 1, 8, 8), 2.5, dtype=D)
    out = resize_conv(x, demo["w_resize"], 2, padding=1, padding_mode="replicate")[0, 0]
    assert torch.allclose(out, torch.full_like(out, 2.5), rtol=0, atol=1e-12)
    # the same constant through the transposed convolution is not constant: phases get 4, 2, 2, 1 taps
    t = F.conv_transpose2d(x, demo["w_transposed"], stride=2, padding=1, output_padding=1)[0, 0, 2:-2, 2:-2]
    assert float(t.max() - t.min()) > 0.1


def test_period2_fraction_on_known_images():
    checker = np.indices((8, 8)).sum(axis=0) % 2.0
    assert tr.period2_fraction(checker) == pytest.approx(1.0)
    ramp = np.add.outer(np.arange(8.0), np.zeros(8))
    assert 0 < tr.period2_fraction(ramp) < 0.1
    with pytest.raises(ValueError, match="even"):
        tr.period2_fraction(np.ones((3, 4)))
    with pytest.raises(ValueError, match="constant"):
        tr.period2_fraction(np.ones((4, 4)))
    with pytest.raises(ValueError, match="size"):
        tr.checkerboard_demo(7)


def test_plot_checkerboard_image_titles_carry_the_measure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes, demo = tr.plot_checkerboard_image(size=32, seed=0, crop=8)
    assert axes.shape == (2, 3)
    titles = [ax.get_title() for ax in axes.flat]
    assert f"{demo['fraction_transposed']:.2g}" in titles[1]
    assert f"{demo['fraction_resize_conv']:.2g}" in titles[2]
    assert all(len(ax.images) == 1 for ax in axes.flat)
    assert all(len(ax.patches) == 1 for ax in axes[0])  # the zoom window
    assert axes[1, 0].images[0].get_array().shape == (4, 4) and axes[1, 1].images[0].get_array().shape == (8, 8)
    with pytest.raises(ValueError, match="crop"):
        tr.plot_checkerboard_image(size=32, crop=5)
    plt.close("all")
