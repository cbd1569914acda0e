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
from convbook.receptive import (chain_module, field_offsets, gradient_support, layers_of, receptive_field,
                                receptive_field_closed_form_expr, receptive_field_recurrence_expr,
                                receptive_field_table, receptive_support, resnet50_1d, resnet50_layers, stage_table,
                                vgg16_layers)
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
    assert layers_of(seq, 0) == [(3, 1, 1, 1), (2, 2, 0, 1), (3, 1, 2, 2)]
    assert layers_of(seq, 1) == [(5, 2, 2, 1), (2, 2, 0, 1), (3, 1, 2, 2)]
    assert receptive_field(seq, 1) == receptive_field(layers_of(seq, 1))
    assert layers_of(nn.Conv1d(1, 1, 4, padding="valid")) == [(4, 1, 0, 1)]


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
    with pytest.raises(ValueError, match="variant must be"):
        resnet50_layers("v2")
    with pytest.raises(ValueError, match="no layer named"):
        stage_table(vgg16_layers(), ["conv9"])


def test_plots_run():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    receptive.plot_receptive_growth({"VGG-16": vgg16_layers()})
    axes = receptive.plot_gridding(3, {"d = 2, 2": [2, 2], "d = 1, 2": [1, 2]})
    assert "25 of 81" in axes[0].get_title()
    plt.close("all")


# --- planted failures ------------------------------------------------------------------------

_RF = receptive.receptive_field
_STEP = receptive._step
_SUPPORT = receptive.receptive_support
_OFFSETS = receptive.field_offsets
_CLOSED = receptive.receptive_field_closed_form_expr


def _step_new_jump(state, layer):
    """Wrong recurrence: the size grows with the *new* jump."""
    r, j, start = state
    k, s, p, d = layer
    return r + (k - 1) * d * j * s, j * s, start - p * j


def _step_no_dilation(state, layer):
    r, j, start = state
    k, s, p, d = layer
    return r + (k - 1) * j, j * s, start - p * j


def _step_start_new_jump(state, layer):
    r, j, start = state
    k, s, p, d = layer
    return r + (k - 1) * d * j, j * s, start - p * j * s


def _support_no_clipping_of_dilation(layers, input_size, index, axis=0):
    """Wrong support: a dense interval (no gridding holes)."""
    got = _SUPPORT(layers, input_size, index, axis)
    return np.arange(got.min(), got.max() + 1) if got.size else got


def _offsets_dense(layers, axis=0):
    got = _OFFSETS(layers, axis)
    return np.arange(got.max() + 1)


def _closed_form_no_dilation(n_layers):
    size, jump, start = _CLOSED(n_layers)
    ds = {layer[3]: 1 for layer in receptive._symbolic_layers(n_layers)}
    return size.subs(ds), jump, start


PLANTS = [
    Plant("rf.recurrence", "size grows with the new jump", {"convbook.receptive:_step": _step_new_jump}),
    Plant("rf.recurrence", "start uses the new jump", {"convbook.receptive:_step": _step_start_new_jump}),
    Plant("rf.closed-form", "dilation missing from the closed form",
          {"convbook.receptive:receptive_field_closed_form_expr": _closed_form_no_dilation}),
    Plant("rf.closed-form", "recurrence ignores dilation", {"convbook.receptive:_step": _step_no_dilation}),
    Plant("rf.autograd", "support without holes", {"convbook.receptive:receptive_support": _support_no_clipping_of_dilation}),
    Plant("rf.gridding", "field assumed dense", {"convbook.receptive:field_offsets": _offsets_dense}),
    Plant("rf.vgg16", "size grows with the new jump", {"convbook.receptive:_step": _step_new_jump}),
    Plant("rf.resnet50", "start uses the new jump", {"convbook.receptive:_step": _step_start_new_jump}),
]

test_planted_failure = planted_failure_test(PLANTS)
