"""Chapter 2: output-size arithmetic (convbook.shapes)."""

from __future__ import annotations

import warnings

import pytest
import sympy as sp
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from convbook import shapes
from convbook.shapes import (avg_pool_output_size, bottleneck_block, conv_output_shape, conv_output_size,
                             conv_output_size_expr, conv_transpose_output_size, conv_transpose_output_size_expr,
                             dumoulin_visin_relationships, format_shape_table, layer_output_shape, pool_output_size,
                             pool_output_size_expr, same_padding, trace_shapes)
from tests.planting import Plant, planted_failure_test

D = torch.float64


def _size(fn, n, *args, **kw):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(torch.zeros(1, 1, n, dtype=D), *args, **kw).shape[-1]
    except RuntimeError:
        return None


def _ours(fn, *args):
    try:
        return fn(*args)
    except ValueError:
        return None


# --- valid inputs ---------------------------------------------------------------------------


def test_known_values():
    assert conv_output_size(224, 7, 2, 3) == 112
    assert conv_transpose_output_size(28, 3, 2, 1, 1, 1) == 56
    assert pool_output_size(112, 3, 2, 1) == 56
    assert pool_output_size(5, 2, 2, 1, ceil_mode=True) == 3  # the naive ceil formula says 4
    assert avg_pool_output_size(7, 2, None, 0, True) == 4
    assert same_padding(4) == (1, 2) and same_padding(3, 1, 2) == (2, 2) and same_padding(3, 2, 1, size=8) == (0, 1)


def test_symbolic_forms():
    n, k, s, p, d, a = (shapes._SYMBOLS[c] for c in "nkspda")
    assert sp.simplify(conv_output_size_expr() - (sp.floor((n + 2 * p - d * (k - 1) - 1) / s) + 1)) == 0
    assert sp.expand(conv_transpose_output_size_expr() - ((n - 1) * s - 2 * p + d * (k - 1) + 1 + a)) == 0
    ceil_form = pool_output_size_expr(True)
    assert int(ceil_form.subs({n: 5, k: 2, s: 2, p: 1, d: 1})) == 3
    assert pool_output_size_expr(False) == conv_output_size_expr()
    rels = dumoulin_visin_relationships()
    assert [r["number"] for r in rels] == list(range(1, 16))
    assert all(sp.simplify(r["expr"] - r["paper"]) == 0 for r in rels)


@given(n=st.integers(1, 30), k=st.integers(1, 7), s=st.integers(1, 5), p=st.integers(0, 4), d=st.integers(1, 4))
def test_conv_output_size_property(n, k, s, p, d):
    assert _ours(conv_output_size, n, k, s, p, d) == _size(F.conv1d, n, torch.zeros(1, 1, k, dtype=D), stride=s,
                                                            padding=p, dilation=d)


@given(n=st.integers(1, 20), k=st.integers(1, 6), s=st.integers(1, 4), p=st.integers(0, 5), d=st.integers(1, 3),
       op=st.integers(0, 4))
def test_conv_transpose_output_size_property(n, k, s, p, d, op):
    ref = _size(F.conv_transpose1d, n, torch.zeros(1, 1, k, dtype=D), stride=s, padding=p, output_padding=op, dilation=d)
    assert _ours(conv_transpose_output_size, n, k, s, p, d, op) == ref


@given(n=st.integers(1, 25), k=st.integers(1, 6), s=st.integers(1, 4), p=st.integers(0, 3), d=st.integers(1, 3),
       ceil=st.booleans())
def test_pool_output_size_property(n, k, s, p, d, ceil):
    assert _ours(pool_output_size, n, k, s, p, d, ceil) == _size(F.max_pool1d, n, k, s, p, d, ceil_mode=ceil)
    assert _ours(avg_pool_output_size, n, k, s, p, ceil) == _size(F.avg_pool1d, n, k, s, p, ceil_mode=ceil)


@given(n=st.integers(1, 20), k=st.integers(1, 6), d=st.integers(1, 3))
def test_same_padding_property(n, k, d):
    left, right = same_padding(k, 1, d)
    assert left + right == d * (k - 1) and right - left in (0, 1)
    x, w = torch.randn(1, 1, n, dtype=D), torch.randn(1, 1, k, dtype=D)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = F.conv1d(x, w, padding="same", dilation=d)
    assert torch.allclose(F.conv1d(F.pad(x, (left, right)), w, dilation=d), ref, rtol=1e-12, atol=1e-12)


def test_conv_output_shape_and_layers():
    assert conv_output_shape((2, 4, 9, 9), 6, 3, 2, 1, groups=2) == (2, 6, 5, 5)
    assert conv_output_shape((1, 3, 8, 8), 5, (3, 2), padding="same") == (1, 5, 8, 8)
    assert conv_output_shape((1, 3, 8), 5, 3, padding="valid") == (1, 5, 6)
    assert conv_output_shape((1, 4, 5), 2, 3, 2, transposed=True, output_padding=1) == (1, 2, 12)
    x = torch.zeros(2, 3, 11, 10)
    for layer in (nn.Conv2d(3, 4, 3, 2, 1), nn.ConvTranspose2d(3, 2, 3, 2, 1, 1), nn.MaxPool2d(3, 2, 1, ceil_mode=True),
                  nn.AvgPool2d(2), nn.AdaptiveAvgPool2d((1, None)), nn.AdaptiveAvgPool2d(1), nn.BatchNorm2d(3),
                  nn.Flatten(), nn.ReLU()):
        assert layer_output_shape(layer, x.shape) == tuple(layer(x).shape), layer
    assert layer_output_shape(nn.Linear(10, 7), (2, 3, 10)) == (2, 3, 7)


def test_trace_shapes_bottleneck():
    rows = trace_shapes(bottleneck_block(), (1, 256, 56, 56))
    by_name = {name: s for name, _, s in rows}
    assert by_name["conv1"] == (1, 128, 56, 56)
    assert by_name["conv2"] == (1, 128, 28, 28)
    assert by_name["conv3"] == (1, 512, 28, 28)
    assert rows[-1][2] == (1, 512, 28, 28)
    table = format_shape_table(rows)
    assert "downsample_0" in table and "(1, 512, 28, 28)" in table


# --- invalid inputs -------------------------------------------------------------------------


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="stride must be >= 1"):
        conv_output_size(5, 3, 0)
    with pytest.raises(ValueError, match="must be an int"):
        conv_output_size(5.0, 3)
    with pytest.raises(ValueError, match="dilated kernel larger than padded input"):
        conv_output_size(4, 3, 1, 0, 2)
    with pytest.raises(ValueError, match="output_padding must be smaller than stride or dilation"):
        conv_transpose_output_size(4, 3, 2, 0, 1, 2)
    with pytest.raises(ValueError, match="output size < 1"):
        conv_transpose_output_size(1, 1, 1, 1)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        conv_transpose_output_size(4, 3, 1, -1)
    with pytest.raises(ValueError, match="at most half the kernel"):
        pool_output_size(5, 3, 2, 2)
    with pytest.raises(ValueError, match="output size < 1"):
        pool_output_size(3, 4)
    with pytest.raises(ValueError, match="ceil_mode must be a bool"):
        pool_output_size(5, 2, ceil_mode=1)
    with pytest.raises(ValueError, match="pass size="):
        same_padding(3, 2)
    with pytest.raises(ValueError, match="groups must divide the channels"):
        conv_output_shape((1, 3, 8), 4, 3, groups=2)
    with pytest.raises(ValueError, match="input_shape must be"):
        conv_output_shape((1, 3), 4, 3)
    with pytest.raises(ValueError, match="padding='same' needs stride 1"):
        conv_output_shape((1, 3, 8), 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding must be an int"):
        conv_output_shape((1, 3, 8), 4, 3, padding="full")
    with pytest.raises(ValueError, match="kernel_size must be an int or a tuple of 2 ints"):
        conv_output_shape((1, 3, 8, 8), 4, (3, 3, 3))
    with pytest.raises(ValueError, match="expects"):
        layer_output_shape(nn.Conv2d(3, 4, 3), (1, 2, 8, 8))
    with pytest.raises(ValueError, match="rank"):
        layer_output_shape(nn.MaxPool2d(2), (1, 2, 8))
    with pytest.raises(ValueError, match="in_features"):
        layer_output_shape(nn.Linear(3, 4), (1, 5))
    with pytest.raises(ValueError, match="no shape rule for module type Embedding"):
        layer_output_shape(nn.Embedding(3, 4), (1, 5))
    with pytest.raises(ValueError, match="LSTM expects"):
        layer_output_shape(nn.LSTM(3, 4), (1, 5, 2))
    with pytest.raises(ValueError, match="LayerNorm over"):
        layer_output_shape(nn.LayerNorm(4), (1, 5, 3))

    class Cat(nn.Module):
        def forward(self, x):
            return torch.cat([x, x[:, :1]], 1)

    with pytest.raises(ValueError, match="no shape rule"):  # slicing has no rule
        trace_shapes(Cat(), (1, 2, 3))

    class BadCat(nn.Module):
        def forward(self, x):
            return torch.cat([x, torch.flatten(x, 1)], 1)

    with pytest.raises(ValueError, match="fails on an input of shape"):  # the structure comes from one run
        trace_shapes(BadCat(), (1, 2, 3))
    with pytest.raises(ValueError, match="must agree except along dim"):
        shapes.function_output_shape("cat", ([("tensor", (1, 2, 3)), ("tensor", (1, 6))], 1))
    with pytest.raises(ValueError, match="no shape rule for function getitem"):
        shapes.function_output_shape("getitem", (("tensor", (1, 2, 3)), 0))
    with pytest.raises(ValueError, match="cannot be viewed"):
        shapes.function_output_shape("view", (("tensor", (2, 3)), 4, -1))
    with pytest.raises(ValueError, match="padding <= d"):
        shapes.plot_arithmetic(5, 2, 1, 2, transposed=True)


def test_plot_arithmetic_draws_formula_count():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = shapes.plot_arithmetic(5, 3, 2, 1)
    assert "3×3 outputs" in ax.get_title()
    ax = shapes.plot_arithmetic(3, 3, 2, 1, transposed=True, output_padding=1)
    assert "6×6 outputs" in ax.get_title()
    plt.close("all")


# --- planted failures ------------------------------------------------------------------------

_CONV = shapes.conv_output_size
_TR = shapes.conv_transpose_output_size
_POOL = shapes.pool_output_size
_SAME = shapes.same_padding
_LAYER = shapes.layer_output_shape


def _conv_no_dilation(size, kernel_size, stride=1, padding=0, dilation=1):
    if isinstance(padding, str):
        return _CONV(size, kernel_size, stride, padding, dilation)
    return _CONV(size, kernel_size, stride, padding, 1) if kernel_size <= size + 2 * padding else _CONV(size, kernel_size, stride, padding, dilation)


def _conv_ceil(size, kernel_size, stride=1, padding=0, dilation=1):
    out = _CONV(size, kernel_size, stride, padding, dilation)
    if isinstance(padding, str):
        return out
    return out + (1 if (size + 2 * padding - dilation * (kernel_size - 1) - 1) % stride else 0)


def _conv_one_padding(size, kernel_size, stride=1, padding=0, dilation=1):
    """Padding counted on one side only: floor((n + p - d(k-1) - 1)/s) + 1."""
    out = _CONV(size, kernel_size, stride, padding, dilation)
    if isinstance(padding, str):
        return out
    return max((size + padding - dilation * (kernel_size - 1) - 1) // stride + 1, 1)


def _conv_no_stride(size, kernel_size, stride=1, padding=0, dilation=1):
    _CONV(size, kernel_size, stride, padding, dilation)
    return _CONV(size, kernel_size, 1, padding, dilation)


def _conv_same_is_valid(size, kernel_size, stride=1, padding=0, dilation=1):
    """'same' read as no padding (as a reader who thinks 'same' means 'unchanged kernel placement' might)."""
    return _CONV(size, kernel_size, stride, "valid" if padding == "same" else padding, dilation)


_SHAPE = shapes.conv_output_shape


def _first(v):
    return v if isinstance(v, (int, str)) else tuple(v)[0]


def _shape_axis0(input_shape, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, transposed=False,
                 output_padding=0):
    """Every axis given axis 0's kernel, stride, padding, dilation and output_padding."""
    return _SHAPE(input_shape, out_channels, _first(kernel_size), _first(stride), _first(padding), _first(dilation), groups,
                  transposed, _first(output_padding))


def _shape_no_groups_rule(input_shape, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, transposed=False,
                          output_padding=0):
    return _SHAPE(input_shape, out_channels, kernel_size, stride, padding, dilation, 1, transposed, output_padding)


def _transpose_no_output_padding(size, kernel_size, stride=1, padding=0, dilation=1, output_padding=0):
    return _TR(size, kernel_size, stride, padding, dilation, 0)


def _transpose_one_padding(size, kernel_size, stride=1, padding=0, dilation=1, output_padding=0):
    return _TR(size, kernel_size, stride, 0, dilation, output_padding) - padding


def _transpose_no_stride(size, kernel_size, stride=1, padding=0, dilation=1, output_padding=0):
    return _TR(size, kernel_size, 1, padding, dilation, output_padding)


def _transpose_no_dilation(size, kernel_size, stride=1, padding=0, dilation=1, output_padding=0):
    return _TR(size, kernel_size, stride, padding, 1, min(output_padding, stride - 1) if output_padding >= stride else output_padding)


def _pool_ignores_ceil(size, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    return _POOL(size, kernel_size, stride, padding, dilation, False)


def _pool_no_stride(size, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    return _POOL(size, kernel_size, 1, padding, dilation, ceil_mode)


def _pool_no_padding(size, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    _POOL(size, kernel_size, stride, padding, dilation, ceil_mode)
    try:
        return _POOL(size, kernel_size, stride, 0, dilation, ceil_mode)
    except ValueError:
        return 1


def _pool_no_dilation(size, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    return _POOL(size, kernel_size, stride, padding, 1, ceil_mode)


def _pool_no_half_kernel_rule(size, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    try:
        return _POOL(size, kernel_size, stride, padding, dilation, ceil_mode)
    except ValueError as e:
        if "half the kernel" not in str(e):
            raise
        stride = kernel_size if stride is None else stride
        return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def _layer_pool_axis0(module, input_shape):
    if isinstance(module, nn.MaxPool2d):
        m = nn.MaxPool2d(_first(module.kernel_size), _first(module.stride), _first(module.padding), _first(module.dilation),
                         ceil_mode=module.ceil_mode)
        return _LAYER(m, input_shape)
    return _LAYER(module, input_shape)


def _same_no_dilation(kernel_size, stride=1, dilation=1, size=None):
    return _SAME(kernel_size, stride, 1, size)


def _same_stride_ignored(kernel_size, stride=1, dilation=1, size=None):
    if stride == 1:
        return _SAME(kernel_size, stride, dilation, size)
    _SAME(kernel_size, stride, dilation, size)  # keeps the refusal without size
    return _SAME(kernel_size, 1, dilation)


def _pool_naive_ceil(size, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    stride = kernel_size if stride is None else stride
    _POOL(size, kernel_size, stride, padding, dilation, ceil_mode)
    num = size + 2 * padding - dilation * (kernel_size - 1) - 1
    return (-(-num // stride) if ceil_mode else num // stride) + 1


def _same_left_heavy(kernel_size, stride=1, dilation=1, size=None):
    left, right = _SAME(kernel_size, stride, dilation, size)
    return right, left


def _conv_accepts_everything(size, kernel_size, stride=1, padding=0, dilation=1):
    try:
        return _CONV(size, kernel_size, stride, padding, dilation)
    except ValueError:
        return 1


def _transpose_strict_stride(size, kernel_size, stride=1, padding=0, dilation=1, output_padding=0):
    if output_padding >= stride:
        raise ValueError("output_padding must be smaller than stride")
    return _TR(size, kernel_size, stride, padding, dilation, output_padding)


def _layer_pool_floor(module, input_shape):
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)) and module.ceil_mode:
        m = type(module)(module.kernel_size, module.stride, module.padding)
        return _LAYER(m, input_shape)
    return _LAYER(module, input_shape)


def _layer_transpose_ignores_output_padding(module, input_shape):
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
        shape = _LAYER(module, input_shape)
        return (*shape[:2], *(v - o for v, o in zip(shape[2:], module.output_padding)))
    return _LAYER(module, input_shape)


_S = "convbook.shapes:"

PLANTS = [
    Plant("shape.conv-output", "dilation ignored", {_S + "conv_output_size": _conv_no_dilation}, parameter="dilation"),
    Plant("shape.conv-output", "ceil instead of floor", {_S + "conv_output_size": _conv_ceil}),
    Plant("shape.conv-output", "stride ignored", {_S + "conv_output_size": _conv_no_stride}, parameter="stride"),
    Plant("shape.conv-output", "padding counted on one side", {_S + "conv_output_size": _conv_one_padding}, parameter="padding"),
    Plant("shape.conv-output", "'same' read as no padding", {_S + "conv_output_size": _conv_same_is_valid},
          parameter="padding strings"),
    Plant("shape.conv-output", "axis 0's values on every axis", {_S + "conv_output_shape": _shape_axis0},
          parameter="per-axis sizes"),
    Plant("shape.transpose-output", "output_padding dropped", {_S + "conv_transpose_output_size": _transpose_no_output_padding},
          parameter="output_padding"),
    Plant("shape.transpose-output", "padding subtracted once", {_S + "conv_transpose_output_size": _transpose_one_padding},
          parameter="padding"),
    Plant("shape.transpose-output", "stride ignored", {_S + "conv_transpose_output_size": _transpose_no_stride}, parameter="stride"),
    Plant("shape.transpose-output", "dilation ignored", {_S + "conv_transpose_output_size": _transpose_no_dilation},
          parameter="dilation"),
    Plant("shape.transpose-output", "axis 0's values on every axis", {_S + "conv_output_shape": _shape_axis0},
          parameter="per-axis sizes"),
    Plant("shape.pool-ceil-mode", "naive ceil, no last-window rule", {_S + "pool_output_size": _pool_naive_ceil},
          parameter="ceil_mode"),
    Plant("shape.pool-ceil-mode", "ceil_mode ignored", {_S + "pool_output_size": _pool_ignores_ceil}),
    Plant("shape.pool-ceil-mode", "stride ignored", {_S + "pool_output_size": _pool_no_stride}, parameter="stride"),
    Plant("shape.pool-ceil-mode", "padding ignored", {_S + "pool_output_size": _pool_no_padding}, parameter="padding"),
    Plant("shape.pool-ceil-mode", "dilation ignored", {_S + "pool_output_size": _pool_no_dilation}, parameter="dilation"),
    Plant("shape.pool-ceil-mode", "axis 0's values on every axis", {_S + "layer_output_shape": _layer_pool_axis0},
          parameter="per-axis sizes"),
    Plant("shape.same-padding", "extra padding on the left", {_S + "same_padding": _same_left_heavy}, parameter="kernel_size"),
    Plant("shape.same-padding", "dilation ignored", {_S + "same_padding": _same_no_dilation}, parameter="dilation"),
    Plant("shape.same-padding", "stride ignored in TensorFlow's 'SAME'", {_S + "same_padding": _same_stride_ignored},
          parameter="stride"),
    Plant("shape.validity-rules", "kernel-fits rule missing", {_S + "conv_output_size": _conv_accepts_everything},
          parameter="kernel fit"),
    Plant("shape.validity-rules", "output_padding < stride only", {_S + "conv_transpose_output_size": _transpose_strict_stride},
          parameter="output_padding"),
    Plant("shape.validity-rules", "pool half-kernel rule missing", {_S + "pool_output_size": _pool_no_half_kernel_rule},
          parameter="pool padding"),
    Plant("shape.validity-rules", "groups rule missing", {_S + "conv_output_shape": _shape_no_groups_rule}, parameter="groups"),
    Plant("shape.trace", "ceil_mode ignored", {_S + "layer_output_shape": _layer_pool_floor}, parameter="ceil_mode"),
    Plant("shape.trace", "output_padding ignored", {_S + "layer_output_shape": _layer_transpose_ignores_output_padding},
          parameter="output_padding"),
    Plant("shape.dv-unit-stride", "padding counted on one side", {_S + "conv_output_size": _conv_one_padding}, parameter="padding"),
    Plant("shape.dv-strided", "ceil instead of floor", {_S + "conv_output_size": _conv_ceil}),
    Plant("shape.dv-strided", "stride ignored", {_S + "conv_output_size": _conv_no_stride}, parameter="stride"),
    Plant("shape.dv-transposed", "output_padding dropped", {_S + "conv_transpose_output_size": _transpose_no_output_padding},
          parameter="output_padding"),
    Plant("shape.dv-dilated", "dilation ignored", {_S + "conv_output_size": _conv_no_dilation}, parameter="dilation"),
]

test_planted_failure = planted_failure_test(PLANTS)


def test_trace_shapes_concatenation_matches_running_it():
    class Inception(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1)
            self.b = nn.Conv2d(3, 6, 3, padding=1)
            self.c = nn.MaxPool2d(3, stride=1, padding=1)

        def forward(self, x):
            return torch.cat((self.a(x), self.b(x), self.c(x)), dim=-3)

    rows = trace_shapes(Inception(), (2, 3, 9, 7))
    assert rows[-1][2] == tuple(Inception()(torch.zeros(2, 3, 9, 7)).shape) == (2, 13, 9, 7)


# --- argument conventions (convbook.conventions) ----------------------------------------------


def test_numpy_and_tensor_integers_are_accepted_floats_and_bools_refused():
    import numpy as np

    assert conv_output_size(np.int64(5), 3) == 3  # was: "size must be an int"
    assert conv_output_size(torch.tensor(9), np.int32(3), torch.tensor(2)) == 4
    assert conv_transpose_output_size(np.int64(4), 3, np.int64(2), 1, 1, np.int64(1)) == 8
    assert pool_output_size(np.int16(7), 2, ceil_mode=np.bool_(True)) == 4
    assert conv_output_shape(tuple(np.array([1, 3, 8, 9])), np.int64(4), np.array([3, 2])) == (1, 4, 6, 8)
    for bad in (3.0, True, "3", torch.tensor(3.0), torch.tensor([3])):
        with pytest.raises(ValueError, match="kernel_size"):
            conv_output_size(9, bad)


def test_padding_strings_in_the_size_functions():
    for n, k, d in ((7, 4, 1), (7, 3, 2), (1, 1, 1), (6, 2, 3)):
        x, w = torch.zeros(1, 1, n, dtype=D), torch.zeros(1, 1, k, dtype=D)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert conv_output_size(n, k, 1, "same", d) == F.conv1d(x, w, padding="same", dilation=d).shape[-1] == n
        ref = _size(F.conv1d, n, w, padding="valid", dilation=d)
        assert _ours(lambda: conv_output_size(n, k, 1, "valid", d)) == ref
    with pytest.raises(ValueError, match="stride 1"):
        conv_output_size(8, 3, 2, "same")
    with pytest.raises(ValueError, match="padding strings"):
        conv_transpose_output_size(8, 3, 1, "same")
    with pytest.raises(ValueError, match="padding strings"):
        conv_output_shape((1, 2, 8), 2, 3, padding="same", transposed=True)


def test_transposed_size_below_one_is_refused_and_preimages_counted():
    # n = 1, k = 1, s = 3, p = 1: m0 = -1, so only output_padding = 2 gives a size (1); PyTorch refuses the others
    assert _ours(conv_transpose_output_size, 1, 1, 3, 1, 1, 0) is None
    assert _ours(conv_transpose_output_size, 1, 1, 3, 1, 1, 1) is None
    assert conv_transpose_output_size(1, 1, 3, 1, 1, 2) == 1
    assert shapes.forward_preimages(1, 1, 3, 1, 1) == (1,)
    assert shapes.forward_preimages(4, 3, 2, 1, 1) == (7, 8)


# --- trace_shapes on models torch.fx cannot trace (structure from convbook.graph) -------------


def _recorded(model, shape):
    """Every call's first output shape when the model runs for real (forward hooks + the graph's CPU run)."""
    from convbook.graph import trace

    return [c.output_shape for c in trace(model, shape, prefer_meta=False).calls]


class _Wrapper(nn.Module):
    """Python control flow on a size: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU())

    def forward(self, x):
        if x.shape[-1] > 9:
            x = self.body(x)
        return x


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(4, 4, 3, padding=1, stride=2)

    def forward(self, x):
        return self.c(self.c(x))


class _LayerScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 3, 3, padding="same")
        self.gamma = nn.Parameter(torch.full((3, 1, 1), 1e-2))

    def forward(self, x):
        return x + self.c(x) * self.gamma


class _Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 5, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(10, 2)

    def forward(self, x):
        out, (h, _c) = self.lstm(x)
        return self.fc(out) + h.sum()


class _Misc(nn.Module):
    def __init__(self):
        super().__init__()
        self.pad = nn.ReflectionPad2d((2, 1, 1, 0))
        self.up = nn.Upsample(scale_factor=2)
        self.norm = nn.LayerNorm(3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        y = self.up(self.pad(x))
        z = self.norm(y.mean((2, 3)))
        return self.fc(z.view(z.size(0), -1))


@pytest.mark.parametrize("model,shape", [
    (_Wrapper(), (1, 3, 11, 12)), (_Wrapper(), (1, 3, 5, 5)), (_Twice(), (2, 4, 9, 8)), (_LayerScale(), (1, 3, 6, 5)),
    (nn.Conv1d(2, 3, 4, padding="same", dilation=3), (1, 2, 10)), (_Recurrent(), (2, 6, 4)), (_Misc(), (1, 3, 4, 5)),
])
def test_trace_shapes_work_on_models_fx_cannot_trace(model, shape):
    rows = trace_shapes(model, shape)
    assert rows[0][2] == shape
    assert [s for _, _, s in rows[1:]] == _recorded(model, shape)
    assert rows[-1][2] == tuple(model(torch.zeros(shape)).shape)


def test_trace_shapes_names_each_call_of_a_shared_module():
    rows = trace_shapes(_Twice(), (1, 4, 16, 16))
    assert [(n, w, s) for n, w, s in rows[1:]] == [("c", "Conv2d", (1, 4, 8, 8)), ("c_1", "Conv2d", (1, 4, 4, 4))]
    rec = trace_shapes(_Recurrent(), (2, 6, 4))
    assert ("lstm", "LSTM", (2, 6, 10)) in rec
    misc = {n: s for n, _, s in trace_shapes(_Misc(), (1, 3, 4, 5))}
    assert misc["pad"] == (1, 3, 5, 8) and misc["up"] == (1, 3, 10, 16) and misc["mean"] == (1, 3)
