"""Chapter 3: receptive fields (convbook.receptive)."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch
import torch.nn as nn
from hypothesis import given
from hypothesis import strategies as st

from convbook import receptive
from convbook.receptive import (Layer, chain_module, closed_form_inductive_step, field_offsets, gradient_support,
                                layers_of, padded_source, receptive_field, receptive_field_closed_form_expr,
                                receptive_field_recurrence_expr, receptive_field_table, receptive_support, resnet50_1d,
                                resnet50_layers, stage_table, vgg16_layers)
from tests.planting import Plant, planted_failure_test

D = torch.float64


# --- valid inputs ---------------------------------------------------------------------------


def test_simple_chains():
    assert receptive_field([]) == (1, 1, 0)
    assert receptive_field([(3, 1, 1), (3, 1, 1)]) == (5, 1, -2)
    assert receptive_field([(3, 2, 1, 1), (3, 1, 0, 2)]) == (11, 2, -1)
    rows = receptive_field_table([(3, 1, 1), (2, 2, 0)], ["conv", "pool"])
    assert rows == [("conv", 3, 1, -1), ("pool", 4, 2, -1)]
    assert receptive_field_table([(3, 1, 1)])[0][0] == "layer 1"


def test_sequential_and_axes():
    seq = nn.Sequential(nn.Conv2d(1, 2, (3, 5), stride=(1, 2), padding=(1, 2)), nn.ReLU(), nn.BatchNorm2d(2),
                        nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(2, 2, 3, padding="same", dilation=2)))
    assert layers_of(seq, 0) == [(3, 1, 1, 1, "zeros"), (2, 2, 0, 1, "zeros"), (3, 1, 2, 2, "zeros")]
    assert layers_of(seq, 1) == [(5, 2, 2, 1, "zeros"), (2, 2, 0, 1, "zeros"), (3, 1, 2, 2, "zeros")]
    assert receptive_field(seq, 1) == receptive_field(layers_of(seq, 1))
    assert layers_of(nn.Conv1d(1, 1, 4, padding="valid")) == [Layer(4, 1, 0, 1)]
    assert layers_of([(3, 1, 1)]) == [Layer(3, 1, 1, 1, "zeros")]


def _ones(conv):
    conv = conv.double()
    with torch.no_grad():
        conv.weight.fill_(1.0)
    return conv


# --- padding modes (regression: every mode used to be treated as zero padding) ------------


def test_circular_padding_support_regression():
    # output 0 of a 3-tap circular conv on 8 pixels reads inputs 0, 1 and 7 (the library said [0, 1])
    c = _ones(nn.Conv1d(1, 1, 3, padding=1, padding_mode="circular", bias=False))
    assert receptive_support(nn.Sequential(c), 8, 0).tolist() == [0, 1, 7]
    assert receptive_support(c, 8, 7).tolist() == [0, 6, 7]
    assert gradient_support(nn.Sequential(c), (1, 1, 8), (0,))[:, 0].tolist() == [0, 1, 7]
    assert layers_of(c) == [Layer(3, 1, 1, 1, "circular")]
    assert receptive_support([(3, 1, 1, 1, "circular")], 8, 0).tolist() == [0, 1, 7]


def test_reflect_and_replicate_support():
    # reflect: padded position -1 mirrors to 1 (edge not repeated); replicate clamps to 0
    assert receptive_support([(3, 1, 1, 1, "reflect")], 8, 0).tolist() == [0, 1]
    assert receptive_support([(5, 1, 2, 1, "reflect")], 8, 0).tolist() == [0, 1, 2]
    assert receptive_support([(5, 1, 2, 1, "replicate")], 8, 7).tolist() == [5, 6, 7]
    assert padded_source(np.array([-2, -1, 8, 9]), 8, "reflect").tolist() == [2, 1, 6, 5]
    assert padded_source(np.array([-2, 9]), 8, "replicate").tolist() == [0, 7]
    assert padded_source(np.array([-2, 9]), 8, "zeros").tolist() == []
    assert padded_source(np.array([-1, 1]), 1, "circular").tolist() == [0, 0]


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_every_mode_matches_autograd_2d_with_one_pixel(mode):
    c = _ones(nn.Conv2d(1, 1, (3, 2), padding=(1, 0), padding_mode=mode, dilation=(1, 2), bias=False))
    for shape in ((2, 5), (1, 3)) if mode != "reflect" else ((2, 5),):  # reflect needs padding < size
        seq = nn.Sequential(c, c) if shape == (2, 5) else nn.Sequential(c)
        out = seq(torch.zeros(1, 1, *shape, dtype=D)).shape[2:]
        for u in np.ndindex(*out):
            supp = {tuple(r) for r in gradient_support(seq, (1, 1, *shape), u)}
            pred = {(a, b) for a in receptive_support(seq, shape[0], u[0], 0) for b in receptive_support(seq, shape[1], u[1], 1)}
            assert supp == pred, (mode, shape, u)


def test_interior_field_is_the_same_for_every_mode():
    for mode in ("zeros", "reflect", "replicate", "circular"):
        layers = [(3, 2, 1, 1, mode), (3, 1, 1, 2, mode)]
        assert receptive_field(layers) == (11, 2, -3)
        supp = receptive_support(layers, 40, 10)
        assert supp.min() == 17 and supp.max() == 27


# --- shared modules and loops (regression: named_modules() deduplicated them) --------------


def test_shared_module_counts_once_per_call_regression():
    c = nn.Conv1d(1, 1, 3, bias=False)
    assert receptive_field(nn.Sequential(c, c)) == (5, 1, 0)  # was (3, 1, 0)
    assert len(layers_of(nn.Sequential(c, nn.ReLU(), c))) == 2


def test_block_called_in_a_loop():
    class Loop(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Sequential(nn.Conv1d(1, 1, 3, padding=1), nn.ReLU())
            self.pool = nn.MaxPool1d(2)

        def forward(self, x):
            for _ in range(4):
                x = self.block(x)
            return torch.relu(self.pool(x))

    assert receptive_field(Loop()) == (10, 2, -4)
    assert layers_of(Loop()) == [(3, 1, 1, 1, "zeros")] * 4 + [(2, 2, 0, 1, "zeros")]


def test_non_chain_models_are_refused():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv1d(1, 1, 3, padding=1)

        def forward(self, x):
            return x + self.c(x)

    with pytest.raises(ValueError, match="not a chain.*combines 2 tensors.*convbook.review"):
        receptive_field(Residual())
    with pytest.raises(ValueError, match="no receptive-field rule"):
        receptive_field(nn.Sequential(nn.Conv1d(1, 1, 3), nn.Flatten()))


def test_stacked_and_effective_examples():
    assert receptive.stacked_vs_single(3, 3, 4) == (7, 27 * 16, 49 * 16)
    assert receptive.tap_variance([1, 1, 1]) == pytest.approx(2 / 3, rel=1e-12)
    assert receptive.tap_variance([1, 1, 1], 2) == pytest.approx(8 / 3, rel=1e-12)
    g = receptive.gradient_profile([np.ones(3)] * 4)
    assert g.size == 9 and g.sum() == pytest.approx(1.0, rel=1e-12)
    assert receptive.effective_field_variance([np.ones(3)] * 4) == pytest.approx(8 / 3, rel=1e-12)
    with pytest.raises(ValueError, match="non-negative"):
        receptive.tap_variance([1, -1])
    with pytest.raises(ValueError, match="same length"):
        receptive.effective_field_variance([np.ones(3)], [1, 2])
    with pytest.raises(ValueError, match="depth must be >= 1"):
        receptive.stacked_vs_single(0)


def test_closed_form_inductive_step_vanishes():
    assert closed_form_inductive_step() == (0, 0, 0)


def test_symbolic_forms_agree():
    for n in (1, 3):
        rec, closed = receptive_field_recurrence_expr(n), receptive_field_closed_form_expr(n)
        assert all(sp.expand(a - b) == 0 for a, b in zip(rec, closed))


def test_tables_and_nets():
    assert receptive_field([l for _, l in vgg16_layers()])[:2] == (212, 32)
    assert receptive_field([l for _, l in resnet50_layers()])[0] == 427
    assert receptive_field([l for _, l in resnet50_layers("v1")])[0] == 483
    rows = stage_table(resnet50_layers(), ["conv1", "maxpool", "conv2_", "conv5_"])
    assert [r[0] for r in rows] == ["conv1", "maxpool", "conv2", "conv5"] and rows[1][1:] == (11, 4, -5)
    net = resnet50_1d()
    assert net(torch.zeros(1, 1, 224, dtype=D)).shape[-1] == 7


def test_gridding_offsets():
    assert list(field_offsets([(3, 1, 0, 2)] * 2)) == [0, 2, 4, 6, 8]
    assert list(field_offsets([(3, 1, 0, 1), (3, 1, 0, 2)])) == list(range(7))
    assert list(field_offsets([(1, 2, 0), (3, 1, 0)])) == [0, 2, 4]  # stride larger than the kernel: holes too


@given(layers=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2), st.integers(1, 3)),
                       min_size=1, max_size=4),
       n=st.integers(8, 40), data=st.data())
def test_support_matches_autograd_property(layers, n, data):
    try:
        model = chain_module(layers)
        n_out = model(torch.zeros(1, 1, n, dtype=D)).shape[-1]
    except RuntimeError:
        with pytest.raises(ValueError):
            receptive_support(layers, n, 0)
        return
    u = data.draw(st.integers(0, n_out - 1))
    measured = gradient_support(model, (1, 1, n), (u,))[:, 0]
    assert np.array_equal(measured, receptive_support(layers, n, u))
    r, j, start = receptive_field(layers)
    if measured.size:
        assert measured.min() >= start + u * j and measured.max() <= start + u * j + r - 1


def test_chain_module_with_pool():
    m = chain_module([(3, 1, 1), (2, 2, 0)], pool=[False, True])
    assert isinstance(m[1], nn.AvgPool1d)
    assert receptive_field(m) == (4, 2, -1)


# --- invalid inputs -------------------------------------------------------------------------


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="s must be an int >= 1"):
        receptive_field([(3, 0, 1)])
    with pytest.raises(ValueError, match="p must be an int >= 0"):
        receptive_field([(3, 1, -1)])
    with pytest.raises(ValueError, match=r"a layer must be \(k, s, p\)"):
        receptive_field([(3, 1)])
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        receptive_field([(3, 1, 1, 1, "mirror")])
    with pytest.raises(ValueError, match="reflect padding needs padding < input size"):
        receptive_support([(3, 1, 2, 1, "reflect")], 2, 0)
    with pytest.raises(ValueError, match="circular padding needs padding <= input size"):
        receptive_support([(5, 1, 3, 1, "circular")], 2, 0)
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        padded_source(np.array([0]), 3, "wrap")
    with pytest.raises(ValueError, match="sequence of"):
        receptive_field("3,1,1")
    with pytest.raises(ValueError, match="no receptive-field rule for module type ConvTranspose2d"):
        receptive_field(nn.Sequential(nn.ConvTranspose2d(1, 1, 3)))
    with pytest.raises(ValueError, match="axis 2 out of range"):
        receptive_field(nn.Sequential(nn.Conv2d(1, 1, 3)), axis=2)
    with pytest.raises(ValueError, match="one entry per layer"):
        receptive_field_table([(3, 1, 1)], ["a", "b"])
    with pytest.raises(ValueError, match="n_layers must be a positive int"):
        receptive_field_recurrence_expr(0)
    with pytest.raises(ValueError, match="n_layers must be a positive int"):
        receptive_field_closed_form_expr(-1)
    with pytest.raises(ValueError, match="index must be an output position"):
        receptive_support([(3, 1, 0)], 5, 3)
    with pytest.raises(ValueError, match="one flag per layer"):
        chain_module([(3, 1, 0)], pool=[True, False])
    with pytest.raises(ValueError, match="average-pooling layer needs d = 1"):
        chain_module([(3, 1, 0, 2)], pool=[True])
    with pytest.raises(ValueError, match="zero padding"):
        chain_module([(3, 1, 1, 1, "circular")], pool=[True])
    with pytest.raises(ValueError, match="variant must be"):
        resnet50_layers("v2")
    with pytest.raises(ValueError, match="no layer named"):
        stage_table(vgg16_layers(), ["conv9"])


def test_plots_run():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    receptive.plot_receptive_growth({"VGG-16": vgg16_layers()})
    receptive.plot_effective_field((1, 4))
    axes = receptive.plot_gridding(3, {"d = 2, 2": [2, 2], "d = 1, 2": [1, 2]})
    assert "25 of 81" in axes[0].get_title()
    plt.close("all")


# --- planted failures ------------------------------------------------------------------------

_RF = receptive.receptive_field
_STEP = receptive._step
_SUPPORT = receptive.receptive_support
_OFFSETS = receptive.field_offsets
_CLOSED = receptive.receptive_field_closed_form_expr
_NORM = receptive._normalise
_PADDED = receptive.padded_source
_CONV_PADDING = receptive._conv_padding
_RESNET = receptive.resnet50_layers


def _step_jump_no_stride(state, layer):
    r, j, start = state
    k, s, p, d = layer[:4]
    return r + (k - 1) * d * j, j, start - p * j


def _step_kernel_not_minus_one(state, layer):
    r, j, start = state
    k, s, p, d = layer[:4]
    return r + k * d * j - d * j * (k == 1), j * s, start - p * j  # k taps widen by k·d (except k = 1)


def _step_no_dilation(state, layer):
    r, j, start = state
    k, s, p, d = layer[:4]
    return r + (k - 1) * j, j * s, start - p * j


def _step_start_no_padding(state, layer):
    r, j, start = state
    k, s, p, d = layer[:4]
    return r + (k - 1) * d * j, j * s, start


def _conv_padding_zero_for_modes(m, axis, k, s, d):
    """The value PyTorch passes to F.conv for non-zero modes (it pads with F.pad first): 0."""
    return (0, 0) if m.padding_mode != "zeros" else _CONV_PADDING(m, axis, k, s, d)


def _support_axis0(layers, input_size, index, axis=0):
    return _SUPPORT(layers, input_size, index, 0)


def _normalise_with(**change):
    def wrong(model, axis):
        return [(layer._replace(**change), size_fn) for layer, size_fn in _NORM(model, axis)]
    return wrong


def _padded_as_zeros(pos, n, padding_mode, padding=0):
    return _PADDED(pos, n, "zeros", padding)


def _calls_deduplicated(model):
    """The old walk: named_modules() lists a shared module once."""
    if not isinstance(model, nn.Sequential):
        return [model]
    return [m for m in model.modules() if not isinstance(m, (nn.Sequential, receptive._Repeat))]


def _offsets_dense(layers, axis=0):
    got = _OFFSETS(layers, axis)
    return np.arange(got.max() + 1)


def _offsets_without_last_layer(layers, axis=0):
    ls = layers_of(layers, axis)
    return _OFFSETS(ls[:-1], axis) if len(ls) > 1 else _OFFSETS(ls, axis)


def _offsets_kernel_minus_one(layers, axis=0):
    return _OFFSETS([(max(k - 1, 1), s, p, d) for k, s, p, d, _ in layers_of(layers, axis)], axis)


def _closed_form_no_dilation(n_layers):
    size, jump, start = _CLOSED(n_layers)
    ds = {layer[3]: 1 for layer in receptive._symbolic_layers(n_layers)}
    return size.subs(ds), jump, start


def _closed_form_kernel(n_layers):
    size, jump, start = _CLOSED(n_layers)
    ks = {layer[0]: layer[0] + 1 for layer in receptive._symbolic_layers(n_layers)}
    return size.subs(ks), jump, start


def _closed_form_stride_inclusive(n_layers):
    """Π_{i≤l} s_i instead of Π_{i<l} s_i."""
    ls = receptive._symbolic_layers(n_layers)
    before = [sp.Mul(*[ls[i][1] for i in range(l + 1)]) for l in range(n_layers)]
    size = 1 + sp.Add(*[(k - 1) * d * before[l] for l, (k, s, p, d) in enumerate(ls)])
    start = -sp.Add(*[p * before[l] for l, (k, s, p, d) in enumerate(ls)])
    return size, sp.Mul(*[layer[1] for layer in ls]), start


def _closed_form_no_padding(n_layers):
    size, jump, start = _CLOSED(n_layers)
    return size, jump, sp.Integer(0)


def _closed_form_first_three_layers(n_layers):
    """Correct up to depth 3, ignores deeper layers."""
    size, jump, start = _CLOSED(min(n_layers, 3))
    return size, jump * (receptive._symbolic_layers(n_layers)[-1][1] if n_layers > 3 else 1), start


def _step_new_jump(state, layer):
    """Wrong recurrence: the size grows with the *new* jump."""
    r, j, start = state
    k, s, p, d = layer[:4]
    return r + (k - 1) * d * j * s, j * s, start - p * j


def _step_start_new_jump(state, layer):
    r, j, start = state
    k, s, p, d = layer[:4]
    return r + (k - 1) * d * j, j * s, start - p * j * s


def _support_no_clipping_of_dilation(layers, input_size, index, axis=0):
    """Wrong support: a dense interval (no gridding holes)."""
    got = _SUPPORT(layers, input_size, index, axis)
    return np.arange(got.min(), got.max() + 1) if got.size else got


PLANTS = [
    Plant("rf.recurrence", "jump not multiplied by the stride", {"convbook.receptive:_step": _step_jump_no_stride},
          parameter="stride"),
    Plant("rf.recurrence", "size widened by k instead of k - 1", {"convbook.receptive:_step": _step_kernel_not_minus_one},
          parameter="kernel"),
    Plant("rf.recurrence", "start ignores padding", {"convbook.receptive:_step": _step_start_no_padding}, parameter="padding"),
    Plant("rf.recurrence", "recurrence ignores dilation", {"convbook.receptive:_step": _step_no_dilation},
          parameter="dilation"),
    Plant("rf.recurrence", "reflect/replicate/circular padding read as 0 (as F.conv sees it)",
          {"convbook.receptive:_conv_padding": _conv_padding_zero_for_modes}, parameter="padding_mode"),
    Plant("rf.closed-form", "dilation missing from the closed form",
          {"convbook.receptive:receptive_field_closed_form_expr": _closed_form_no_dilation}, parameter="dilation"),
    Plant("rf.closed-form", "kernel k instead of k - 1",
          {"convbook.receptive:receptive_field_closed_form_expr": _closed_form_kernel}, parameter="kernel"),
    Plant("rf.closed-form", "strides multiplied up to and including the layer",
          {"convbook.receptive:receptive_field_closed_form_expr": _closed_form_stride_inclusive}, parameter="stride"),
    Plant("rf.closed-form", "start without padding",
          {"convbook.receptive:receptive_field_closed_form_expr": _closed_form_no_padding}, parameter="padding"),
    Plant("rf.closed-form", "closed form right only up to depth 3",
          {"convbook.receptive:receptive_field_closed_form_expr": _closed_form_first_three_layers}, parameter="depth"),
    Plant("rf.closed-form", "recurrence step ignores dilation", {"convbook.receptive:_step": _step_no_dilation}),
    Plant("rf.autograd", "support without holes", {"convbook.receptive:receptive_support": _support_no_clipping_of_dilation}),
    Plant("rf.autograd", "axis 0's layers used on every axis", {"convbook.receptive:receptive_support": _support_axis0},
          parameter="per-axis sizes"),
    Plant("rf.autograd", "stride ignored in the support", {"convbook.receptive:_normalise": _normalise_with(s=1)},
          parameter="stride"),
    Plant("rf.autograd", "dilation ignored in the support", {"convbook.receptive:_normalise": _normalise_with(d=1)},
          parameter="dilation"),
    Plant("rf.autograd", "every padding mode treated as zeros", {"convbook.receptive:padded_source": _padded_as_zeros},
          parameter="padding_mode"),
    Plant("rf.autograd", "shared modules counted once (named_modules walk)",
          {"convbook.receptive:_module_calls": _calls_deduplicated}, parameter="repeated calls"),
    Plant("rf.gridding", "field assumed dense", {"convbook.receptive:field_offsets": _offsets_dense}, parameter="dilation"),
    Plant("rf.gridding", "last layer left out", {"convbook.receptive:field_offsets": _offsets_without_last_layer},
          parameter="depth"),
    Plant("rf.gridding", "k - 1 taps per layer", {"convbook.receptive:field_offsets": _offsets_kernel_minus_one},
          parameter="kernel"),
    Plant("rf.vgg16", "size grows with the new jump", {"convbook.receptive:_step": _step_new_jump}),
    Plant("rf.resnet50", "start uses the new jump", {"convbook.receptive:_step": _step_start_new_jump}),
    Plant("rf.resnet50", "variant ignored (v1.5 layout for both)",
          {"convbook.receptive:resnet50_layers": lambda variant="v1.5": _RESNET("v1.5")}, parameter="variant"),
]


_STACKED = receptive.stacked_vs_single
_TAP_VARIANCE = receptive.tap_variance
_EFFECTIVE = receptive.effective_field_variance


def _variance_last_layer_times_depth(kernels, dilations=None):
    ds = [1] * len(kernels) if dilations is None else list(dilations)
    return len(kernels) * _TAP_VARIANCE(kernels[-1], ds[-1])


def _tap_variance_uniform(kernel, dilation=1):
    """The uniform-kernel variance whatever the weights: d²(k² - 1)/12."""
    k = len(np.asarray(kernel).ravel())
    return dilation**2 * (k * k - 1) / 12


PLANTS += [
    Plant("rf.stacked-3x3", "field n·k", {"convbook.receptive:stacked_vs_single": lambda n, k=3, c=1: (n * k, *_STACKED(n, k, c)[1:])},
          parameter="kernel"),
    Plant("rf.stacked-3x3", "weights of one layer only",
          {"convbook.receptive:stacked_vs_single": lambda n, k=3, c=1: (_STACKED(n, k, c)[0], k * k * c * c, _STACKED(n, k, c)[2])},
          parameter="depth"),
    Plant("rf.stacked-3x3", "weights linear in the width",
          {"convbook.receptive:stacked_vs_single": lambda n, k=3, c=1: (_STACKED(n, k, c)[0], n * k * k * c, _STACKED(n, k, c)[2] // c)},
          parameter="channels"),
    Plant("rf.effective", "last layer's variance times depth",
          {"convbook.receptive:effective_field_variance": _variance_last_layer_times_depth}, parameter="depth"),
    Plant("rf.effective", "every kernel taken as uniform", {"convbook.receptive:tap_variance": _tap_variance_uniform},
          parameter="kernel"),
    Plant("rf.effective", "dilation ignored",
          {"convbook.receptive:effective_field_variance": lambda kernels, dilations=None: _EFFECTIVE(kernels)},
          parameter="dilation"),
]

test_planted_failure = planted_failure_test(PLANTS)


def test_a_network_the_book_does_not_use():
    """A ConvNeXt-like stem and blocks: patchify conv, depthwise 7×7 reflect-padded conv called in a loop,
    1×1 convs, GELU, average pool; every output's support equals autograd's."""

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.dw = nn.Conv2d(4, 4, 7, padding=3, groups=4, padding_mode="reflect", bias=False)
            self.pw = nn.Conv2d(4, 4, 1, bias=False)

        def forward(self, x):
            return self.pw(torch.nn.functional.gelu(self.dw(x)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 4, 4, stride=4, bias=False)
            self.block = Block()
            self.pool = nn.AvgPool2d(2)  # max pooling would send the gradient to one winner only

        def forward(self, x):
            x = self.stem(x)
            for _ in range(2):
                x = self.block(x)
            return self.pool(x)

    net = Net().double()
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(0.5, 1.5)
    assert receptive_field(net) == (4 + 4 * 6 * 2 + 4, 8, 0 - 4 * 3 * 2)
    out = net(torch.zeros(1, 1, 32, 28, dtype=D)).shape[2:]
    for u in [(0, 0), (1, 2), (out[0] - 1, out[1] - 1)]:
        x = torch.full((1, 1, 32, 28), 1.0, dtype=D, requires_grad=True)
        net(x)[0, :, u[0], u[1]].sum().backward()  # all channels: GELU is not monotone, but positive inputs keep it so
        measured = {tuple(r) for r in np.argwhere(x.grad[0, 0].numpy() != 0)}
        pred = {(a, b) for a in receptive_support(net, 32, u[0], 0) for b in receptive_support(net, 28, u[1], 1)}
        assert measured == pred, u


# --- rf.alignment ---------------------------------------------------------------------------------------------


def test_field_centre_offset_named_pairs():
    from convbook.receptive import field_centre_offset, paths_aligned

    assert field_centre_offset([(3, 2, 1)]) == 0.0
    assert field_centre_offset([(1, 2, 0)]) == 0.0
    assert field_centre_offset([(2, 2, 0)]) == 0.5
    assert field_centre_offset([(3, 1, 0, 2)]) == 2.0
    assert field_centre_offset([]) == 0.0
    assert paths_aligned([(3, 2, 1)], [(1, 2, 0)]) == (True, 0.0)
    assert paths_aligned([(2, 2, 0)], [(1, 2, 0)]) == (False, -0.5)
    # ResNet-50's conv3_1 (v1.5): 1x1, 3x3/2 p1, 1x1 against the 1x1/2 projection shortcut
    assert paths_aligned([(1, 1, 0), (3, 2, 1), (1, 1, 0)], [(1, 2, 0)]) == (True, 0.0)
    with pytest.raises(ValueError, match="same jump"):
        paths_aligned([(3, 2, 1)], [(1, 1, 0)])


def _centre_offset_with(*, pad=True, dil=True, half=True):
    def wrong(layers, axis=0):
        r, j, start = 1, 1, 0
        for k, s, p, d, _ in receptive.layers_of(layers, axis):
            d = d if dil else 1
            r, j, start = r + (k - 1) * d * j, j * s, start - (p if pad else 0) * j
        return start + ((r - 1) / 2 if half else 0)
    return wrong


PLANTS += [
    Plant("rf.alignment", "padding ignored in the offset",
          {"convbook.receptive:field_centre_offset": _centre_offset_with(pad=False)}, parameter="padding"),
    Plant("rf.alignment", "dilation ignored", {"convbook.receptive:field_centre_offset": _centre_offset_with(dil=False)},
          parameter="dilation"),
    Plant("rf.alignment", "(size - 1)/2 dropped", {"convbook.receptive:field_centre_offset": _centre_offset_with(half=False)},
          parameter="kernel"),
]

test_planted_failure = planted_failure_test(PLANTS)


# --- models torch.fx cannot trace: layers_of reads convbook.graph ----------------------------


def _positive(model: nn.Module) -> nn.Module:
    model = model.to(torch.float64)
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(0.5, 1.5)
    return model


class _ControlFlow(nn.Module):
    """Python control flow on the input size, a conv called twice and a layer-scale γ."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv1d(1, 1, 3, dilation=2, bias=False)
        self.pool = nn.AvgPool1d(2)
        self.gamma = nn.Parameter(torch.ones(1, 1, 1))

    def forward(self, x):
        if x.size(-1) > 20:
            x = self.pool(x)
        x = self.c(self.c(x)) * self.gamma
        return torch.relu(x)


def test_layers_of_model_with_control_flow_shared_module_and_layer_scale():
    model = _positive(_ControlFlow())
    assert layers_of(model) == [Layer(2, 2, 0), Layer(3, 1, 0, 2), Layer(3, 1, 0, 2)]
    size, jump, start = receptive_field(model)
    sup = gradient_support(model, (1, 1, 64), (5,))[:, 0]
    assert (int(sup.min()), int(sup.max() - sup.min() + 1)) == (start + 5 * jump, size) == (10, 18)


def test_same_padding_and_reflection_pad_layers_match_autograd():
    model = _positive(nn.Sequential(nn.ReflectionPad1d((2, 1)), nn.Conv1d(1, 1, 4, padding="same", dilation=2),
                                    nn.ReplicationPad1d(1), nn.Conv1d(1, 1, 3, stride=2)))
    assert layers_of(model) == [Layer(1, 1, 2, 1, "reflect"), Layer(4, 1, 3, 2), Layer(1, 1, 1, 1, "replicate"),
                                Layer(3, 2, 0)]
    n = 9
    n_out = model(torch.zeros(1, 1, n, dtype=torch.float64)).shape[-1]
    for u in range(n_out):
        assert receptive_support(model, n, u).tolist() == gradient_support(model, (1, 1, n), (u,))[:, 0].tolist()
    pad2 = nn.ReflectionPad2d((1, 2, 3, 0))  # (left, right, top, bottom): axis 0 is H (top/bottom)
    assert layers_of(nn.Sequential(pad2, nn.Conv2d(1, 1, 3)), 0)[0] == Layer(1, 1, 3, 1, "reflect")
    assert layers_of(nn.Sequential(pad2, nn.Conv2d(1, 1, 3)), 1)[0] == Layer(1, 1, 1, 1, "reflect")


def test_layers_without_a_field_rule_are_named():
    probe = receptive._probe_shapes(nn.Conv1d(1, 1, 3))[0]  # the model runs once on this input
    for tail, rule in ((nn.Upsample(scale_factor=2), "module type Upsample"),
                       (nn.LayerNorm(probe[-1]), "module type LayerNorm")):
        with pytest.raises(ValueError, match=f"no receptive-field rule for {rule}"):
            layers_of(nn.Sequential(nn.Conv1d(1, 1, 3, padding=1), tail))


def test_mean_and_lstm_are_refused_with_a_named_rule():
    class Mean(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv1d(2, 2, 3)

        def forward(self, x):
            return self.c(x).mean(-1, keepdim=True)

    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv1d(3, 4, 3)
            self.lstm = nn.LSTM(4, 5, batch_first=True)

        def forward(self, x):
            return self.lstm(self.c(x).transpose(1, 2))[0]

    with pytest.raises(ValueError, match="no receptive-field rule for function mean"):
        layers_of(Mean())
    with pytest.raises(ValueError, match="no receptive-field rule for module type LSTM"):
        layers_of(Recurrent())


def test_branches_are_refused_and_point_to_review():
    class SqueezeExcite(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = self.c(x)
            return y * torch.sigmoid(self.fc(y.mean((2, 3), keepdim=True)))

    class Concat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv1d(1, 1, 3, padding=1), nn.Conv1d(1, 1, 5, padding=2)

        def forward(self, x):
            return torch.cat([self.a(x), self.b(x)], 1)

    for model in (SqueezeExcite(), Concat()):
        with pytest.raises(ValueError, match="is not a chain.*convbook.review"):
            receptive_field(model)
