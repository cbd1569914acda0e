"""Chapter 1: convolution and cross-correlation (convbook.conv)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from convbook import conv
from convbook.conv import (conv2d_by_channels, conv_matrix, convolve1d, convolve2d, correlate1d, correlate2d,
                           equivariance_masks, flip_kernel, shift)
from tests.planting import Plant, planted_failure_test

D = torch.float64


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=D)


# --- valid inputs ---------------------------------------------------------------------------


def test_convolve1d_matches_numpy_and_definition():
    x, w = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 0.0, -1.0])
    assert np.allclose(convolve1d(x, w, "full"), np.convolve(x, w, "full"))
    assert np.allclose(convolve1d(x, w, "valid"), np.convolve(x, w, "valid"))
    # y[n] = sum_m w[m] x[n-m]: y[2] = w0 x2 + w1 x1 + w2 x0 = 3 - 1 = 2
    assert convolve1d(x, w, "valid")[0] == pytest.approx(2.0)


def test_correlate1d_matches_numpy_correlate():
    x, w = np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([2.0, -1.0, 0.5])
    assert np.allclose(correlate1d(x, w, "valid"), np.correlate(x, w, "valid"))
    assert np.allclose(correlate1d(x, w, "full"), np.correlate(x, w, "full"))


def test_flip_kernel_torch_and_numpy():
    w = torch.arange(2 * 3 * 2 * 2.0).reshape(2, 3, 2, 2)
    assert torch.equal(flip_kernel(w), w.flip(2, 3))
    assert np.array_equal(flip_kernel(np.array([1, 2, 3])), np.array([3, 2, 1]))
    with pytest.raises(ValueError, match="spatial_dims"):
        flip_kernel(w, spatial_dims=5)


def test_convolve2d_full_and_valid():
    x, w = _rand(5, 6), _rand(2, 3, seed=1)
    expected = F.conv2d(x[None, None], flip_kernel(w)[None, None])[0, 0]
    assert torch.allclose(convolve2d(x, w, "valid"), expected, rtol=0, atol=1e-12)
    assert convolve2d(x, w, "full").shape == (6, 8)


@given(
    c_in=st.integers(1, 3), c_out=st.integers(1, 3), h=st.integers(3, 9), w=st.integers(3, 9),
    kh=st.integers(1, 3), kw=st.integers(1, 3), s=st.integers(1, 3), p=st.integers(0, 2), d=st.integers(1, 2),
    bias=st.booleans(), seed=st.integers(0, 10_000),
)
def test_conv2d_by_channels_property(c_in, c_out, h, w, kh, kw, s, p, d, bias, seed):
    if d * (kh - 1) + 1 > h + 2 * p or d * (kw - 1) + 1 > w + 2 * p:
        return
    x, weight = _rand(2, c_in, h, w, seed=seed), _rand(c_out, c_in, kh, kw, seed=seed + 1)
    b = _rand(c_out, seed=seed + 2) if bias else None
    ours = conv2d_by_channels(x, weight, b, s, p, d)
    ref = F.conv2d(x, weight, b, stride=s, padding=p, dilation=d)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-12)


@given(nd=st.sampled_from([1, 2]), n=st.integers(3, 7), k=st.integers(1, 3), s=st.integers(1, 3),
       p=st.integers(0, 2), d=st.integers(1, 2), seed=st.integers(0, 10_000))
def test_conv_matrix_property(nd, n, k, s, p, d, seed):
    if d * (k - 1) + 1 > n + 2 * p:
        return
    w = _rand(2, 2, *([k] * nd), seed=seed)
    x = _rand(2, *([n] * nd), seed=seed + 1)
    m = conv_matrix(w, [n] * nd, s, p, d)
    y = (F.conv1d if nd == 1 else F.conv2d)(x[None], w, stride=s, padding=p, dilation=d)[0]
    assert torch.allclose(m @ x.reshape(-1), y.reshape(-1), rtol=1e-12, atol=1e-12)


def test_conv_matrix_nonzeros_of_the_chapter_example():
    w = torch.arange(1.0, 10.0, dtype=D).reshape(1, 1, 3, 3)
    m = conv_matrix(w, (5, 5), padding=1)
    # 25 outputs, 9 taps each, minus the taps that fall on the padding: the border outputs
    # (16 of them) lose 3 taps each on an edge, the 4 corners lose 2 more (5 in total)
    assert m.shape == (25, 25)
    assert int((m != 0).sum()) == 25 * 9 - (12 * 3 + 4 * 5)


def test_circular_conv2d_matches_nn_conv2d_circular():
    x, w = _rand(1, 2, 7, 6), _rand(3, 2, 3, 5, seed=1)
    layer = torch.nn.Conv2d(2, 3, (3, 5), padding=(2, 4), dilation=2, padding_mode="circular", bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(w)
    assert torch.allclose(conv.circular_conv2d(x, w, dilation=2), layer(x), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="odd kernel"):
        conv.circular_conv2d(x, _rand(1, 2, 2, 3))


@given(t=st.integers(-8, 8), n=st.integers(1, 7))
def test_shift_zero_and_circular(t, n):
    x = torch.arange(float(n))
    assert torch.equal(shift(x, (t,), "circular"), torch.roll(x, t))
    z = shift(x, (t,), "zero")
    for m in range(n):
        expected = x[m - t] if 0 <= m - t < n else 0.0
        assert z[m] == expected


def test_equivariance_masks_simple_case():
    # n=10, k=3, p=1, d=1, t=+2: comparable outputs 2..9, only output 9 reads a shifted-out sample
    comparable, equal = equivariance_masks((10,), (3,), (1,), (1,), (2,))
    assert list(np.nonzero(comparable)[0]) == list(range(2, 10))
    assert list(np.nonzero(comparable & ~equal)[0]) == [9]
    # no padding: every comparable output is equal
    comparable, equal = equivariance_masks((10,), (3,), (0,), (1,), (3,))
    assert np.array_equal(comparable, equal)


# --- invalid inputs -------------------------------------------------------------------------


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="mode"):
        convolve1d([1.0, 2.0], [1.0], "same")
    with pytest.raises(ValueError, match=r"len\(w\) <= len\(x\)"):
        convolve1d([1.0], [1.0, 2.0], "valid")
    with pytest.raises(ValueError, match="non-empty 1-D"):
        correlate1d([], [1.0])
    with pytest.raises(ValueError, match="2-D kernel"):
        correlate2d(_rand(4, 4), _rand(3))
    with pytest.raises(ValueError, match="dilated kernel larger than padded input"):
        correlate2d(_rand(4, 4), _rand(5, 5))
    with pytest.raises(ValueError, match="input channels"):
        conv2d_by_channels(_rand(1, 2, 5, 5), _rand(3, 4, 3, 3))
    with pytest.raises(ValueError, match="bias must have shape"):
        conv2d_by_channels(_rand(1, 2, 5, 5), _rand(3, 2, 3, 3), _rand(2))
    with pytest.raises(ValueError, match="stride must be"):
        conv_matrix(_rand(1, 1, 3, 3), (5, 5), stride=0)
    with pytest.raises(ValueError, match="weight must be"):
        conv_matrix(_rand(1, 1, 3, 3, 3), (5, 5, 5))
    with pytest.raises(ValueError, match="mode must be"):
        shift(_rand(4), (1,), "reflect")
    with pytest.raises(ValueError, match="same length"):
        equivariance_masks((5, 5), (3,), (1,), (1,), (1,))


# --- planted failures: each check must fail on a wrong formula -------------------------------


_ORIG_BY_CHANNELS = conv.conv2d_by_channels


def _conv2d_by_channels_without_bias(x, weight, bias=None, stride=1, padding=0, dilation=1):
    return _ORIG_BY_CHANNELS(x, weight, None, stride, padding, dilation)


def _matrix_transposed_taps(weight, input_size, stride=1, padding=0, dilation=1):
    return _ORIG_MATRIX(flip_kernel(weight), input_size, stride, padding, dilation)


_ORIG_MATRIX = conv.conv_matrix
_ORIG_MASKS = conv.equivariance_masks


def _masks_all_equal(*args):
    comparable, _ = _ORIG_MASKS(*args)
    return comparable, comparable.copy()


def _masks_one_extra_failure(*args):
    comparable, equal = _ORIG_MASKS(*args)
    flat = equal.reshape(-1).copy()
    where = np.nonzero(flat)[0]
    if where.size:
        flat[where[-1]] = False  # predicts a failure at an output where the identity holds
    return comparable, flat.reshape(equal.shape)


def _zero_padded_conv(x, weight, dilation=1):
    """The wrong belief: zero padding is as good as circular padding."""
    p = tuple(dilation * (k - 1) // 2 for k in weight.shape[2:])
    return F.conv2d(x, weight, padding=p, dilation=dilation)


def _flip_last_axis_only(weight, spatial_dims=None):
    return _ORIG_FLIP(weight, 1)


_ORIG_FLIP = conv.flip_kernel


def _by_channels_one_value(name, pick):
    def wrong(x, weight, bias=None, stride=1, padding=0, dilation=1):
        kw = {"stride": stride, "padding": padding, "dilation": dilation}
        v = kw[name]
        v = pick(v) if isinstance(v, (tuple, list)) else v
        kw[name] = (v, v)
        return _ORIG_BY_CHANNELS(x, weight, bias, **kw)
    return wrong


def _by_channels_first_input_only(x, weight, bias=None, stride=1, padding=0, dilation=1):
    return _ORIG_BY_CHANNELS(x[:, :1], weight[:, :1], bias, stride, padding, dilation)


def _matrix_one_value(name, pick):
    def wrong(weight, input_size, stride=1, padding=0, dilation=1):
        kw = {"stride": stride, "padding": padding, "dilation": dilation}
        v = kw[name]
        kw[name] = pick(v) if isinstance(v, (tuple, list)) else v
        return _ORIG_MATRIX(weight, input_size, **kw)
    return wrong


def _circular_without_dilation(x, weight, dilation=1):
    """Circular padding (k-1)/2 computed without the dilation, convolution dilated."""
    p = tuple((k - 1) // 2 for k in weight.shape[2:])
    return F.conv2d(F.pad(x, (p[1], p[1], p[0], p[0]), mode="circular"), weight, dilation=dilation)


def _masks_ignore(name):
    """The band rule with one parameter mishandled (the output grid itself is kept)."""
    import itertools

    def wrong(input_size, kernel_size, padding, dilation, offsets):
        comparable, _ = _ORIG_MASKS(input_size, kernel_size, padding, dilation, offsets)
        nd = len(input_size)
        size, ks, p, d, t = (list(v) for v in (input_size, kernel_size, padding, dilation, offsets))
        if name == "padding":
            p = [0] * nd
        elif name == "dilation":
            d = [1] * nd
        elif name == "offsets":
            t = [0] * nd
        else:  # axis 0's kernel, padding and dilation on every axis
            ks, p, d = [ks[0]] * nd, [p[0]] * nd, [d[0]] * nd
        grids = np.meshgrid(*[np.arange(n) for n in comparable.shape], indexing="ij")
        differs = np.zeros(comparable.shape, dtype=bool)
        for taps in itertools.product(*[range(k) for k in ks]):
            m = [grids[j] - p[j] + d[j] * taps[j] for j in range(nd)]
            inside = np.all([(m[j] >= 0) & (m[j] < size[j]) for j in range(nd)], axis=0)
            src = np.all([(m[j] - t[j] >= 0) & (m[j] - t[j] < size[j]) for j in range(nd)], axis=0)
            differs |= src & ~inside
        return comparable, comparable & ~differs
    return wrong


PLANTS = [
    Plant("conv.cross-correlation", "no flip", {"convbook.conv:flip_kernel": lambda w, spatial_dims=None: w},
          parameter="kernel size"),
    Plant("conv.cross-correlation", "flipped along the last axis only", {"convbook.conv:flip_kernel": _flip_last_axis_only},
          parameter="axes"),
    Plant("conv.multichannel-sum", "bias dropped", {"convbook.conv:conv2d_by_channels": _conv2d_by_channels_without_bias},
          parameter="bias"),
    Plant("conv.multichannel-sum", "row stride on both axes",
          {"convbook.conv:conv2d_by_channels": _by_channels_one_value("stride", min)}, parameter="stride"),
    Plant("conv.multichannel-sum", "larger padding on both axes",
          {"convbook.conv:conv2d_by_channels": _by_channels_one_value("padding", max)}, parameter="padding"),
    Plant("conv.multichannel-sum", "smaller dilation on both axes",
          {"convbook.conv:conv2d_by_channels": _by_channels_one_value("dilation", min)}, parameter="dilation"),
    Plant("conv.multichannel-sum", "only the first input channel summed",
          {"convbook.conv:conv2d_by_channels": _by_channels_first_input_only}, parameter="channels"),
    Plant("conv.matrix", "kernel flipped in the matrix", {"convbook.conv:conv_matrix": _matrix_transposed_taps}),
    Plant("conv.matrix", "smaller stride on both axes", {"convbook.conv:conv_matrix": _matrix_one_value("stride", min)},
          parameter="stride"),
    Plant("conv.matrix", "larger padding on both axes", {"convbook.conv:conv_matrix": _matrix_one_value("padding", max)},
          parameter="padding"),
    Plant("conv.matrix", "smaller dilation on both axes", {"convbook.conv:conv_matrix": _matrix_one_value("dilation", min)},
          parameter="dilation"),
    Plant("conv.equivariance-circular", "zero instead of circular padding", {"convbook.conv:circular_conv2d": _zero_padded_conv},
          parameter="shift"),
    Plant("conv.equivariance-circular", "dilation ignored", {"convbook.conv:circular_conv2d": _circular_without_dilation},
          parameter="dilation"),
    Plant("conv.equivariance-border", "band predicted empty", {"convbook.conv:equivariance_masks": _masks_all_equal}),
    Plant("conv.equivariance-border", "one failure too many predicted", {"convbook.conv:equivariance_masks": _masks_one_extra_failure}),
    Plant("conv.equivariance-border", "padding ignored", {"convbook.conv:equivariance_masks": _masks_ignore("padding")},
          parameter="padding"),
    Plant("conv.equivariance-border", "dilation ignored", {"convbook.conv:equivariance_masks": _masks_ignore("dilation")},
          parameter="dilation"),
    Plant("conv.equivariance-border", "shift ignored", {"convbook.conv:equivariance_masks": _masks_ignore("offsets")},
          parameter="shift"),
    Plant("conv.equivariance-border", "axis 0's kernel used on every axis",
          {"convbook.conv:equivariance_masks": _masks_ignore("per-axis sizes")}, parameter="per-axis sizes"),
]

test_planted_failure = planted_failure_test(PLANTS)
