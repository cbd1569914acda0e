"""Chapter 4: the cost of a convolution (convbook.cost)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from convbook import cost, models
from convbook.cost import (bn_ops, bn_params, bottleneck_stride_delta, conv_macs, conv_out_size, conv_params,
                           linear_macs, linear_params, pool_ops, profile, separable_ratio)
from tests.planting import Plant, planted_failure_test


def _flops(layer: nn.Module, shape) -> int:
    with FlopCounterMode(display=False) as counter:
        layer(torch.empty(*shape, device="meta"))
    return counter.get_total_flops()


# --- valid inputs ---------------------------------------------------------------------------


def test_worked_examples():
    # ResNet-50 stem: 7x7, 3 -> 64, stride 2, padding 3 on 224x224: 112^2 * 49 * 3 * 64
    assert conv_macs(3, 64, (7, 7), (224, 224), 2, 3) == 112 * 112 * 49 * 3 * 64 == 118_013_952
    assert conv_params(3, 64, (7, 7), bias=False) == 9408
    # depthwise 3x3 on 32 channels at 112x112
    assert conv_macs(32, 32, (3, 3), (112, 112), 1, 1, groups=32) == 112 * 112 * 9 * 32
    # a transposed conv counts input positions: 8x8 input, 16 -> 32, k=4
    assert conv_macs(16, 32, (4, 4), (8, 8), 2, 1, transposed=True) == 64 * 16 * 16 * 32
    assert conv_out_size((8, 8), (4, 4), 2, 1, transposed=True) == (16, 16)
    assert conv_out_size(7, 3, 2, 1, transposed=True, output_padding=1) == (14, 14)  # ints: 2 axes, like nn.Conv2d
    assert conv_out_size(7, 3, 2, 1, transposed=True, output_padding=1, ndim=1) == (14,)
    assert linear_params(2048, 1000) == 2_049_000 and linear_macs(2048, 1000, 3) == 3 * 2_048_000
    assert bn_params(64) == 128 and bn_params(64, affine=False) == 0 and bn_ops(64, (56, 56)) == 64 * 56 * 56
    assert pool_ops(64, 3, (112, 112), 2, 1) == 64 * 56 * 56 * 9
    assert pool_ops(4, 2, 8) == 4 * 4 * 4 * 2 * 2  # stride defaults to the kernel; ints mean 2 axes
    assert pool_ops(4, 2, 8, ndim=1) == 4 * 4 * 2
    assert separable_ratio(32, 64, 3) == Fraction(1, 64) + Fraction(1, 9)
    assert bottleneck_stride_delta() == 3 * (28**2 * 256 * 128 + 14**2 * 512 * 256 + 7**2 * 1024 * 512)


@settings(max_examples=40, deadline=None)
@given(nd=st.integers(1, 3), g=st.integers(1, 3), ci=st.integers(1, 3), co=st.integers(1, 3), k=st.integers(1, 3),
       s=st.integers(1, 3), p=st.integers(0, 2), d=st.integers(1, 2), n=st.integers(5, 9), batch=st.integers(1, 2),
       bias=st.booleans(), transposed=st.booleans())
def test_conv_formulas_match_torch(nd, g, ci, co, k, s, p, d, n, batch, bias, transposed):
    c_in, c_out = g * ci, g * co
    cls = ([nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d] if transposed else [nn.Conv1d, nn.Conv2d, nn.Conv3d])[nd - 1]
    if transposed:
        p = min(p, d * (k - 1))
    layer = cls(c_in, c_out, k, stride=s, padding=p, dilation=d, groups=g, bias=bias, device="meta")
    assert conv_params(c_in, c_out, (k,) * nd, g, bias) == models.count_params(layer)
    shape = (batch, c_in) + (n,) * nd
    with torch.no_grad():
        out = layer(torch.empty(*shape, device="meta"))
    assert tuple(out.shape[2:]) == conv_out_size((n,) * nd, k, s, p, d, transposed)
    assert 2 * batch * conv_macs(c_in, c_out, (k,) * nd, (n,) * nd, s, p, d, g, transposed) == _flops(layer, shape)


@settings(max_examples=20, deadline=None)
@given(c=st.integers(1, 16), k=st.integers(1, 4), m=st.integers(4, 12), s=st.integers(1, 2))
def test_depthwise_separable_ratio_matches_counter(c, k, m, s):
    pad = (k - 1) // 2
    std = _flops(nn.Conv2d(c, 2 * c, k, s, pad, device="meta"), (1, c, m, m))
    sep = _flops(nn.Sequential(nn.Conv2d(c, c, k, s, pad, groups=c, device="meta"), nn.Conv2d(c, 2 * c, 1, device="meta")),
                 (1, c, m, m))
    assert Fraction(sep, std) == separable_ratio(c, 2 * c, k)


@pytest.mark.parametrize("c,k,n,s,p", [(1, 3, 9, 2, 1), (3, 2, 8, None, 0), (2, (3, 2), (7, 6), (2, 1), (1, 1)),
                                       (4, 3, (6, 5), 1, 0)])
def test_pool_ops_by_enumeration(c, k, n, s, p):
    # independent count: the window elements (padding included) that F.unfold extracts, per channel
    nd = 1 if isinstance(n, int) else len(n)
    tup = lambda v: (v,) * 2 if isinstance(v, int) else tuple(v)
    n2 = (1, n) if nd == 1 else tup(n)
    k2, s2 = ((1, v) if nd == 1 else tup(v) for v in (k, k if s is None else s))
    p2 = (0, p) if nd == 1 else tup(p)
    cols = torch.nn.functional.unfold(torch.ones(1, c, *n2), k2, stride=s2, padding=p2)
    assert pool_ops(c, k, n, s, p, ndim=nd) == cols.numel()
    pool = (nn.MaxPool1d if nd == 1 else nn.MaxPool2d)(k, s, p)
    out = pool(torch.zeros(1, c, *(n2[1:] if nd == 1 else n2)))
    assert pool_ops(c, k, n, s, p, ndim=nd) == out.numel() * math.prod(k2)


def test_profile_rows_are_the_graph_calls_with_formula_shapes():
    """Each row is one executed leaf call; its output shape (recorded by the run) equals the book's formula."""
    from convbook.graph import trace
    from convbook.shapes import layer_output_shape

    for name, kw in (("resnet18", {}), ("resnet50", {"stride_on": "1x1"}), ("mobilenet_v1", {}),
                     ("mobilenet_v2", {}), ("vgg16", {})):
        m = models.build(name, **kw)
        rows = profile(m, (2, 3, 64, 64)).rows
        calls = [c for c in trace(m, (2, 3, 64, 64)).calls if c.is_module]
        assert [(r.name, r.input_shape, r.output_shape) for r in rows] == \
            [(c.name, c.input_shape, c.output_shape) for c in calls], name
        for r, c in zip(rows, calls):
            if not isinstance(c.module, nn.Flatten):
                assert layer_output_shape(c.module, r.input_shape) == r.output_shape, (name, r.name)


def test_profile_generic_model_uses_hooks_and_matches_counter():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
            self.head = nn.Linear(4, 10)

        def forward(self, x):
            return self.head(self.b(self.a(x)).mean((2, 3)))

    m = Tiny()
    prof = profile(m, (2, 3, 16, 16))
    assert prof.params == sum(p.numel() for p in m.parameters())
    assert prof.flops == sum(cost.flop_counter_flops(m, (2, 3, 16, 16)).values())
    assert [r.kind for r in prof.rows] == ["conv", "convT", "linear"]
    assert "total" in prof.table() and "more layers" in prof.table(max_rows=1)
    assert all(p.device.type == "cpu" for p in m.parameters())  # input model untouched


def test_profile_rows_and_helpers():
    prof = profile(models.build("resnet50"))
    assert prof.rows[0].name == "conv1" and prof.rows[0].output_shape == (1, 64, 112, 112)
    assert prof.rows[0].bytes_moved == 4 * (3 * 224 * 224 + 9408 + 64 * 112 * 112)
    assert prof.rows[0].intensity == pytest.approx(2 * prof.rows[0].macs / prof.rows[0].bytes_moved)
    st_ = cost.stage_costs(prof)
    assert list(st_) == ["conv1", "conv2_x", "conv3_x", "conv4_x", "conv5_x", "avgpool", "fc"]
    assert sum(p for p, _ in st_.values()) == prof.params and sum(m for _, m in st_.values()) == prof.macs
    assert prof.other_ops > 0 and prof.activations > 0
    assert prof.by_kind()["linear"] == (2_049_000, 2_048_000)


def test_third_party_counters_on_a_transposed_convolution():
    layer = nn.ConvTranspose2d(16, 32, 4, stride=2, padding=1, bias=False)
    exact = conv_macs(16, 32, 4, (8, 8), 2, 1, transposed=True)
    counts = cost.third_party_counts(layer, (1, 16, 8, 8))
    assert counts["fvcore"] == exact and counts["ptflops (pytorch)"] == exact
    assert counts["thop"] == 4 * exact and counts["torchinfo"] == 4 * exact  # output positions: × s²


# --- invalid inputs -------------------------------------------------------------------------


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="groups must divide"):
        conv_params(6, 4, 3, groups=4)
    with pytest.raises(ValueError, match="in_channels must be >= 1"):
        conv_params(0, 4, 3)
    with pytest.raises(ValueError, match=r"kernel_size\[1\] must be >= 1"):
        conv_params(3, 4, (3, 0))
    with pytest.raises(ValueError, match="disagree on the number of spatial axes"):
        conv_macs(3, 4, (3, 3), (8, 8, 8))
    with pytest.raises(ValueError, match="padding must be >= 0"):
        conv_macs(3, 4, 3, 8, padding=-1)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        conv_macs(3, 4, 3, 8, stride=0)
    with pytest.raises(ValueError, match="dilated kernel larger"):
        conv_macs(3, 4, 5, 3)
    with pytest.raises(ValueError, match="transposed convolution output must be >= 1"):
        conv_out_size(1, 1, 1, 2, transposed=True)
    with pytest.raises(ValueError, match="out_features"):
        linear_params(3, 0)
    with pytest.raises(ValueError, match="rows"):
        linear_macs(3, 4, 0)
    with pytest.raises(ValueError, match="channels"):
        bn_params(0)
    with pytest.raises(ValueError, match="at least one spatial axis"):
        bn_ops(4, ())
    with pytest.raises(ValueError, match="channels"):
        pool_ops(0, 2, 8)
    with pytest.raises(ValueError, match="k must be"):
        separable_ratio(3, 4, 0)
    with pytest.raises(ValueError, match="input_shape"):
        profile(models.build("resnet18"), (3,))
    with pytest.raises(ValueError, match="bytes_per_element"):
        profile(models.build("resnet18"), (1, 3, 32, 32), bytes_per_element=0)
    with pytest.raises(ValueError, match="4 entries"):
        bottleneck_stride_delta((3, 4, 6))
    with pytest.raises(ValueError, match="multiple of 32"):
        bottleneck_stride_delta(image=100)


# --- planted failures -----------------------------------------------------------------------


_true_conv_params = cost.conv_params


def _params_without_groups(in_channels, out_channels, kernel_size, groups=1, bias=True, ndim=None):
    return _true_conv_params(in_channels, out_channels, kernel_size, 1, bias, ndim)


def _params_axis0(in_channels, out_channels, kernel_size, groups=1, bias=True, ndim=None):
    """Axis 0's kernel size on every axis."""
    if isinstance(kernel_size, tuple):
        ndim, kernel_size = len(kernel_size), kernel_size[0]
    return _true_conv_params(in_channels, out_channels, kernel_size, groups, bias, ndim)


def _params_bias_always(in_channels, out_channels, kernel_size, groups=1, bias=True, ndim=None):
    return _true_conv_params(in_channels, out_channels, kernel_size, groups, True, ndim)


_true_conv_macs = cost.conv_macs


def _macs(c_in, c_out, k, n, stride=1, padding=0, dilation=1, groups=1, transposed=False, output_padding=0, ndim=None):
    return _true_conv_macs(c_in, c_out, k, n, stride, padding, dilation, groups, transposed, output_padding, ndim)


def _macs_transposed_at_outputs(c_in, c_out, k, n, stride=1, padding=0, dilation=1, groups=1, transposed=False,
                                output_padding=0, ndim=None):
    macs = _macs(c_in, c_out, k, n, stride, padding, dilation, groups, transposed, output_padding, ndim)
    if not transposed:
        return macs
    out = cost.conv_out_size(n, k, stride, padding, dilation, True, output_padding, ndim)
    nin = (n,) * len(out) if isinstance(n, int) else tuple(n)
    return macs * math.prod(out) // math.prod(nin)


def _macs_with_bias(c_in, c_out, k, n, stride=1, padding=0, dilation=1, groups=1, transposed=False, output_padding=0, ndim=None):
    out = cost.conv_out_size(n, k, stride, padding, dilation, transposed, output_padding, ndim)
    return _macs(c_in, c_out, k, n, stride, padding, dilation, groups, transposed, output_padding, ndim) + c_out * math.prod(out)


def _macs_ignoring_stride(c_in, c_out, k, n, stride=1, padding=0, dilation=1, groups=1, transposed=False, output_padding=0,
                          ndim=None):
    if transposed:
        return _macs(c_in, c_out, k, n, stride, padding, dilation, groups, transposed, output_padding, ndim)
    return _macs(c_in, c_out, k, n, 1, padding, dilation, groups, transposed, output_padding, ndim)


def _macs_ignoring_groups(c_in, c_out, k, n, stride=1, padding=0, dilation=1, groups=1, transposed=False, output_padding=0,
                          ndim=None):
    return groups * _macs(c_in, c_out, k, n, stride, padding, dilation, groups, transposed, output_padding, ndim)


def _macs_ignoring_padding(c_in, c_out, k, n, stride=1, padding=0, dilation=1, groups=1, transposed=False, output_padding=0,
                           ndim=None):
    if isinstance(padding, str) or transposed:
        return _macs(c_in, c_out, k, n, stride, padding, dilation, groups, transposed, output_padding, ndim)
    try:
        return _macs(c_in, c_out, k, n, stride, 0, dilation, groups, transposed, output_padding, ndim)
    except ValueError:
        return 0


def _macs_ignoring_dilation(c_in, c_out, k, n, stride=1, padding=0, dilation=1, groups=1, transposed=False, output_padding=0,
                            ndim=None):
    return _macs(c_in, c_out, k, n, stride, padding, 1, groups, transposed, output_padding, ndim)


def _macs_same_as_valid(c_in, c_out, k, n, stride=1, padding=0, dilation=1, groups=1, transposed=False, output_padding=0,
                        ndim=None):
    padding = "valid" if padding == "same" else padding
    try:
        return _macs(c_in, c_out, k, n, stride, padding, dilation, groups, transposed, output_padding, ndim)
    except ValueError:
        return 0


def _macs_axis0(c_in, c_out, k, n, stride=1, padding=0, dilation=1, groups=1, transposed=False, output_padding=0, ndim=None):
    """Axis 0's kernel, stride, padding, dilation and size on every axis."""
    first = lambda v: v if isinstance(v, (int, str)) else tuple(v)[0]
    nd = next((len(v) for v in (k, n, stride, padding, dilation) if not isinstance(v, (int, str))), ndim or 2)
    try:
        return _macs(c_in, c_out, first(k), first(n), first(stride), first(padding), first(dilation), groups, transposed,
                     first(output_padding), nd)
    except ValueError:
        return 0


_true_params_once = cost._params_once


def _params_every_call(model, records, rows):
    """The old profile(): every call of a layer adds its parameters again."""
    _, seen = _true_params_once(model, records, rows)
    return rows, seen


def _delta_four_times(layers=(3, 4, 6, 3), image=224):
    return sum(4 * (image // (8 * 2**j)) ** 2 * (256 * 2**j) * (128 * 2**j) for j in range(3))


_true_linear_params = cost.linear_params

_ORIG_COMPLEXITY = cost.network_complexity
_ORIG_CHAIN_VALUES = cost.chain_values


def _complexity_without_input_channels(n_layers, chain=True):
    """The wrong belief: a layer costs M² K² C_l (forgetting the dot product runs over its input channels)."""
    time, space = _ORIG_COMPLEXITY(n_layers, chain)
    C, Cin = sp.IndexedBase("C"), sp.IndexedBase("Cin")
    l = sp.Symbol("l", integer=True, positive=True)
    return time.xreplace({C[l - 1]: 1, Cin[l]: 1}), space


def _chain_values_at_input_size(convs):
    """M_l read off the layer's input map instead of its output map (wrong after every stride)."""
    return _ORIG_CHAIN_VALUES([dict(row, output_size=row["input_size"]) for row in convs])


_C = "convbook.cost:"

PLANTS = [
    Plant("cost.network-complexity", "C_(l-1) dropped", {_C + "network_complexity": _complexity_without_input_channels},
          parameter="input channels"),
    Plant("cost.network-complexity", "M_l taken at the input", {_C + "chain_values": _chain_values_at_input_size},
          parameter="output size"),
    Plant("cost.conv-params", "groups ignored", {_C + "conv_params": _params_without_groups}, parameter="groups"),
    Plant("cost.conv-params", "axis 0's kernel size on every axis", {_C + "conv_params": _params_axis0},
          parameter="per-axis kernel"),
    Plant("cost.conv-params", "bias always counted", {_C + "conv_params": _params_bias_always}, parameter="bias"),
    Plant("cost.conv-macs", "transposed counted at output positions", {_C + "conv_macs": _macs_transposed_at_outputs},
          parameter="transposed"),
    Plant("cost.conv-macs", "groups ignored", {_C + "conv_macs": _macs_ignoring_groups}, parameter="groups"),
    Plant("cost.conv-macs", "stride ignored", {_C + "conv_macs": _macs_ignoring_stride}, parameter="stride"),
    Plant("cost.conv-macs", "padding ignored", {_C + "conv_macs": _macs_ignoring_padding}, parameter="padding"),
    Plant("cost.conv-macs", "dilation ignored", {_C + "conv_macs": _macs_ignoring_dilation}, parameter="dilation"),
    Plant("cost.conv-macs", "'same' read as no padding", {_C + "conv_macs": _macs_same_as_valid}, parameter="padding strings"),
    Plant("cost.conv-macs", "axis 0's values on every axis", {_C + "conv_macs": _macs_axis0}, parameter="per-axis sizes"),
    Plant("cost.depthwise-ratio", "1/k instead of 1/k^2",
          {_C + "separable_ratio": lambda c_in, c_out, k: Fraction(1, c_out) + Fraction(1, k)}, parameter="kernel_size"),
    Plant("cost.depthwise-ratio", "1/C_in instead of 1/C_out",
          {_C + "separable_ratio": lambda c_in, c_out, k: Fraction(1, c_in) + Fraction(1, k * k)}, parameter="C_out"),
    Plant("cost.profile-totals", "bias additions counted as MACs", {_C + "conv_macs": _macs_with_bias}, parameter="bias"),
    Plant("cost.profile-totals", "transposed counted at output positions", {_C + "conv_macs": _macs_transposed_at_outputs},
          parameter="transposed"),
    Plant("cost.profile-totals", "parameters counted at every call", {_C + "_params_once": _params_every_call},
          parameter="repeated calls"),
    Plant("cost.profile-totals", "parameters of non-leaf modules dropped", {_C + "_params_outside": lambda model, seen: 0},
          parameter="non-leaf parameters"),
    Plant("cost.torchvision-params", "running statistics counted as parameters",
          {_C + "bn_params": lambda channels, affine=True: 4 * channels}, parameter="batch norm"),
    Plant("cost.torchvision-gflops", "stride ignored", {_C + "conv_macs": _macs_ignoring_stride}, parameter="stride"),
    Plant("cost.resnet-table1", "stride ignored", {_C + "conv_macs": _macs_ignoring_stride}, parameter="stride"),
    Plant("cost.resnet50-stride-placement", "4H^2 instead of 3H^2", {_C + "bottleneck_stride_delta": _delta_four_times},
          parameter="stride placement"),
    Plant("cost.resnext-table1", "groups ignored in MACs", {_C + "conv_macs": _macs_ignoring_groups}, parameter="groups"),
    Plant("cost.mobilenet-v1", "groups ignored in MACs", {_C + "conv_macs": _macs_ignoring_groups}, parameter="groups"),
    Plant("cost.mobilenet-v1-table2", "FC bias counted as a weight",
          {_C + "linear_params": lambda a, b, bias=True: _true_linear_params(a, b, True)}, parameter="bias"),
]

test_planted_failure = planted_failure_test(PLANTS)


def test_network_complexity_small_chain_and_refusals():
    time, space = cost.network_complexity(2)
    M, K, C = sp.IndexedBase("M"), sp.IndexedBase("K"), sp.IndexedBase("C")
    values = {M[1]: 8, M[2]: 4, K[1]: 3, K[2]: 1, C[0]: 3, C[1]: 16, C[2]: 32}
    assert int(time.doit().xreplace(values)) == 64 * 9 * 3 * 16 + 16 * 1 * 16 * 32
    assert int(space.doit().xreplace(values)) == (9 * 3 * 16 + 64 * 16) + (16 * 32 + 16 * 32)
    with pytest.raises(ValueError, match="n_layers"):
        cost.network_complexity(0)
    grouped = [dict(name="g", in_channels=4, out_channels=4, kernel_size=(3, 3), output_size=(5, 5), groups=2)]
    with pytest.raises(ValueError, match="groups=1"):
        cost.chain_values(grouped)


# --- argument conventions and profile() regressions ------------------------------------------


def test_int_kernel_size_means_every_axis_like_nn_conv2d():
    # was 80 (one spatial axis); nn.Conv2d(16, 4, 5, groups=4) has 4 * 4 * 25 weights + 4 biases
    layer = nn.Conv2d(16, 4, 5, groups=4, device="meta")
    assert conv_params(16, 4, 5, groups=4) == models.count_params(layer) == 404
    assert conv_params(16, 4, 5, groups=4, bias=False) == 400
    assert conv_params(16, 4, 5, groups=4, ndim=1) == models.count_params(nn.Conv1d(16, 4, 5, groups=4, device="meta"))
    assert conv_macs(3, 8, 3, 10) == _flops(nn.Conv2d(3, 8, 3, device="meta"), (1, 3, 10, 10)) // 2


def test_numpy_integers_and_padding_strings_are_accepted():
    import numpy as np

    assert conv_params(np.int64(16), np.int32(4), np.int64(5), groups=np.int64(4)) == 404
    for padding in ("same", "valid"):
        layer = nn.Conv2d(3, 8, (4, 3), dilation=(1, 2), padding=padding, device="meta")
        assert 2 * conv_macs(3, 8, (4, 3), (9, 10), 1, padding, (1, 2)) == _flops(layer, (1, 3, 9, 10))
        assert conv_out_size((9, 10), (4, 3), 1, padding, (1, 2)) == tuple(layer(torch.empty(1, 3, 9, 10, device="meta")).shape[2:])
    with pytest.raises(ValueError, match="stride 1"):
        conv_macs(3, 8, 3, 9, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding strings"):
        conv_macs(3, 8, 3, 9, padding="same", transposed=True)
    with pytest.raises(ValueError, match="integer"):
        conv_params(3, 8, 3.0)


def test_profile_counts_parameters_once_and_macs_per_call():
    class Thrice(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(8, 8, 3, padding="same")
            self.gamma = nn.Parameter(torch.ones(8, 1, 1))  # held by the non-leaf root: a layer scale
            self.head = nn.Linear(8, 4)

        def forward(self, x):
            for _ in range(3):
                x = self.c(x) * self.gamma
            return self.head(x.mean((2, 3)))

    m = Thrice()
    prof = profile(m, (2, 8, 16, 16))
    assert prof.params == sum(p.numel() for p in m.parameters()) == 8 * 8 * 9 + 8 + 8 + 8 * 4 + 4
    assert prof.extra_params == 8
    assert prof.flops == sum(cost.flop_counter_flops(m, (2, 8, 16, 16)).values())
    assert sum(r.macs for r in prof.rows if r.name == "c") == 3 * 2 * 16 * 16 * 9 * 8 * 8


def test_profile_of_a_layer_returning_a_tuple():
    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(4, 5, batch_first=True)
            self.fc = nn.Linear(5, 2)

        def forward(self, x):
            return self.fc(self.lstm(x)[0])

    m = Recurrent()
    prof = profile(m, (2, 3, 4))
    assert prof.params == sum(p.numel() for p in m.parameters())
    assert prof.macs == 2 * 3 * 5 * 2  # the linear layer; the LSTM has no rule and counts no MACs


# --- graph_counts: FLOPs and bytes of every leaf call, from convbook.graph -------------------


def _hooked_bytes(model: nn.Module, shape, itemsize: int) -> int:
    """Independent reference: forward hooks on every torch.nn leaf of a real run, first tensor in/out."""
    def first(v):
        if isinstance(v, torch.Tensor):
            return v
        return next((t for t in map(first, v) if t is not None), None) if isinstance(v, (tuple, list)) else None

    total = [0]

    def hook(mod, args, out):
        total[0] += first(args).numel() + sum(p.numel() for p in mod.parameters()) + first(out).numel()

    leaves = [m for m in model.modules() if not list(m.children()) and type(m).__module__.startswith("torch.nn")]
    handles = [m.register_forward_hook(hook) for m in leaves]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model(torch.randn(shape, device=device))
    finally:
        for h in handles:
            h.remove()
    return itemsize * total[0]


class _SharedSame(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv1d(4, 4, 4, padding="same", dilation=2)
        self.up = nn.ConvTranspose1d(4, 2, 3, stride=2, output_padding=1)

    def forward(self, x):
        return self.up(self.c(self.c(x)))


class _Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 5, batch_first=True)
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        return self.fc(self.lstm(x)[0])


@pytest.mark.parametrize("make, shape", [(lambda: models.build("resnet18"), (1, 3, 64, 64)), (_SharedSame, (2, 4, 11)),
                                         (_Recurrent, (2, 3, 4)),
                                         (lambda: nn.ConvTranspose3d(2, 4, 3, stride=2, groups=2), (1, 2, 3, 4, 3))])
def test_graph_counts_match_flop_counter_and_hooks(make, shape):
    model = make().eval()
    flops, nbytes = cost.graph_counts(model, shape)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.randn(shape, device=next(model.parameters()).device))
    # FlopCounterMode counts the LSTM's gate matmuls too; graph_counts, like module_counts, has no LSTM rule
    expected = fc.get_total_flops() if not isinstance(model, _Recurrent) else 2 * 2 * 3 * 5 * 2
    assert flops == expected
    assert nbytes == _hooked_bytes(model, shape, 4)
    assert cost.graph_counts(model, shape, torch.float16) == (flops, nbytes // 2)


def test_graph_counts_refuses_bad_input():
    with pytest.raises(ValueError, match="x_shape"):
        cost.graph_counts(nn.Conv2d(1, 1, 1), (1, 0, 4, 4))
    with pytest.raises(ValueError, match="floating torch dtype"):
        cost.graph_counts(nn.Conv2d(1, 1, 1), (1, 1, 4, 4), torch.int32)
    with pytest.raises(ValueError, match="fails on an input of shape"):
        cost.graph_counts(nn.Conv2d(3, 1, 1), (1, 1, 4, 4))


def test_profile_works_on_models_fx_cannot_trace():
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3, padding="same")
            self.gamma = nn.Parameter(torch.ones(4, 1, 1))
            self.up = nn.Upsample(scale_factor=2)
            self.pad = nn.ReflectionPad2d(1)
            self.norm = nn.LayerNorm(4)

        def forward(self, x):
            for _ in range(2 if x.size(-1) > 4 else 1):
                x = self.pad(x)[..., 1:-1, 1:-1]
            y = self.up(self.c(x) * self.gamma)
            return self.norm(y.mean((2, 3)))

    m = Wrapper()
    prof = profile(m, (2, 3, 6, 6))
    assert [r.name for r in prof.rows] == ["pad", "pad", "c", "up", "norm"]
    assert prof.params == sum(p.numel() for p in m.parameters()) and prof.extra_params == 4
    assert prof.flops == sum(cost.flop_counter_flops(m, (2, 3, 6, 6)).values())
    assert prof.rows[3].output_shape == (2, 4, 12, 12)


def test_profile_reuses_the_trace_only_for_structurally_identical_book_models():
    a, b = profile(models.build("resnet18"), (1, 3, 32, 32)), profile(models.build("resnet18"), (1, 3, 32, 32))
    assert a == b  # the second profile reads the first one's calls
    assert cost._structure_key(models.build("resnet50"), (1, 3, 32, 32)) != \
        cost._structure_key(models.build("resnet50", stride_on="1x1"), (1, 3, 32, 32))
    big = profile(models.build("resnet18"), (1, 3, 64, 64))  # another shape: traced again
    assert big.rows[0].input_shape == (1, 3, 64, 64) and big.rows[0].macs == 4 * a.rows[0].macs

    class Loop(nn.Module):  # its forward depends on an attribute repr() does not show: never cached
        def __init__(self, times):
            super().__init__()
            self.c, self.times = nn.Conv2d(2, 2, 3, padding=1), times

        def forward(self, x):
            for _ in range(self.times):
                x = self.c(x)
            return x

    assert cost._structure_key(Loop(2), (1, 2, 5, 5)) is None
    assert profile(Loop(3), (1, 2, 5, 5)).macs == 3 * profile(Loop(1), (1, 2, 5, 5)).macs
