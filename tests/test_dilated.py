"""Chapter 10: dilated convolution, receptive fields and gridding (convbook.dilated)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from convbook import dilated as dl
from convbook.dilated import (conv_via_zero_inserted, dilate_kernel, dilated_conv_by_polyphase, effective_kernel_size,
                              hdc_max_gap, satisfies_hdc, stack_offsets, stack_path_counts, stack_receptive_field)
from tests.planting import Plant, planted_failure_test

D = torch.float64


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=D)


def test_dilate_kernel_example():
    w = torch.tensor([[[1.0, 2.0, 3.0]]], dtype=D)
    assert dilate_kernel(w, 2).tolist() == [[[1.0, 0.0, 2.0, 0.0, 3.0]]]
    assert dilate_kernel(_rand(1, 1, 2, 3), (3, 1)).shape == (1, 1, 4, 3)
    assert effective_kernel_size(3, 4) == 9


@given(nd=st.sampled_from([1, 2]), k=st.integers(1, 4), d=st.integers(1, 4), s=st.integers(1, 2), p=st.integers(0, 2),
       extra=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_dilate_kernel_property(nd, k, d, s, p, extra, seed):
    n = d * (k - 1) + extra
    x, w = _rand(1, 2, *([n] * nd), seed=seed), _rand(2, 2, *([k] * nd), seed=seed + 1)
    conv = F.conv1d if nd == 1 else F.conv2d
    assert torch.allclose(conv(x, dilate_kernel(w, d), stride=s, padding=p), conv(x, w, stride=s, padding=p, dilation=d),
                          rtol=1e-12, atol=1e-12)


def test_stack_examples():
    assert stack_receptive_field([3, 3, 3], [1, 2, 4]) == 15
    assert list(stack_offsets([3, 3], [2, 2])) == [0, 2, 4, 6, 8]
    assert list(stack_path_counts([3, 3], [1, 1])) == [1, 2, 3, 2, 1]
    assert len(stack_offsets([3] * 4, [1, 2, 4, 8])) == 31


@given(ks=st.lists(st.integers(1, 4), min_size=1, max_size=4), data=st.data())
def test_stack_offsets_match_impulse_response(ks, data):
    ds = data.draw(st.lists(st.integers(1, 4), min_size=len(ks), max_size=len(ks)))
    span = stack_receptive_field(ks, ds)
    x = torch.zeros(1, 1, 2 * span - 1, dtype=D)
    x[0, 0, span - 1] = 1.0
    h = x
    for k, d in zip(ks, ds):
        h = F.conv1d(h, torch.ones(1, 1, k, dtype=D), dilation=d)
    counts = h[0, 0].flip(0).numpy()  # output u reads input u + offset: impulse at span-1 -> offset span-1-u
    assert np.array_equal(counts.astype(np.int64), stack_path_counts(ks, ds))
    assert np.array_equal(np.nonzero(counts)[0], stack_offsets(ks, ds))


def test_gcd_one_does_not_prevent_holes():
    # d = (1, 5), k = 3: offsets {0, 1, 2} + {0, 5, 10}; 3, 4, 8, 9 are never read although gcd(1, 5) = 1
    assert sorted(set(range(13)) - set(stack_offsets([3, 3], [1, 5]).tolist())) == [3, 4, 8, 9]
    assert not satisfies_hdc([1, 5])


def test_hdc_examples():
    # Wang et al.: [1, 2, 5] satisfies the rule (M_2 = 2), [1, 2, 9] does not (M_2 = 5)
    assert hdc_max_gap([1, 2, 5]) == 2 and satisfies_hdc([1, 2, 5])
    assert hdc_max_gap([1, 2, 9]) == 5 and not satisfies_hdc([1, 2, 9])
    assert len(stack_offsets([3] * 3, [1, 2, 5])) == stack_receptive_field([3] * 3, [1, 2, 5])
    assert not satisfies_hdc([2, 1, 2])  # r_1 must be 1
    with pytest.raises(ValueError, match="3-tap"):
        hdc_max_gap([1, 2], kernel_size=5)
    with pytest.raises(ValueError, match="at least two"):
        hdc_max_gap([1])


@given(kh=st.integers(1, 3), kw=st.integers(1, 3), dh=st.integers(1, 4), dw=st.integers(1, 4), ph=st.integers(0, 2),
       pw=st.integers(0, 2), extra=st.integers(0, 5), seed=st.integers(0, 10_000))
def test_polyphase_property(kh, kw, dh, dw, ph, pw, extra, seed):
    h, w_ = max(1, dh * (kh - 1) + 1 - 2 * ph + extra), max(1, dw * (kw - 1) + 1 - 2 * pw + extra)
    x, w = _rand(1, 2, h, w_, seed=seed), _rand(3, 2, kh, kw, seed=seed + 1)
    ref = F.conv2d(x, w, padding=(ph, pw), dilation=(dh, dw))
    assert torch.allclose(dilated_conv_by_polyphase(x, w, (dh, dw), (ph, pw)), ref, rtol=1e-12, atol=1e-12)
    assert torch.allclose(conv_via_zero_inserted(x, w, 1, (ph, pw), (dh, dw)), ref, rtol=1e-12, atol=1e-12)


def test_plot_gridding_draws():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    dl.plot_gridding()
    plt.close("all")


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="dilation must be >= 1"):
        effective_kernel_size(3, 0)
    with pytest.raises(ValueError, match="kernel_size must be an int"):
        effective_kernel_size(3.0, 1)
    with pytest.raises(ValueError, match="dilation must be >= 1"):
        dilate_kernel(_rand(1, 1, 3), 0)
    with pytest.raises(ValueError, match="dilation\\[1\\] must be >= 1"):
        dilate_kernel(_rand(1, 1, 3, 3), (2, 0))
    with pytest.raises(ValueError, match="one per spatial axis"):
        dilate_kernel(_rand(1, 1, 3, 3), (2, 2, 2))
    with pytest.raises(ValueError, match="dilation must be an integer"):
        dilate_kernel(_rand(1, 1, 3, 3), 2.0)
    with pytest.raises(ValueError, match="3-D"):
        dilate_kernel(_rand(3, 3), 2)
    with pytest.raises(ValueError, match="same length"):
        stack_receptive_field([3, 3], [1])
    with pytest.raises(ValueError, match="non-empty"):
        stack_offsets([], [])
    with pytest.raises(ValueError, match="dilations\\[1\\] must be >= 1"):
        stack_path_counts([3, 3], [1, 0])
    with pytest.raises(ValueError, match="must be 4-D"):
        dilated_conv_by_polyphase(_rand(1, 1, 3), _rand(1, 1, 3), 2)
    with pytest.raises(ValueError, match="dilated kernel larger"):
        dilated_conv_by_polyphase(_rand(1, 1, 3, 3), _rand(1, 1, 3, 3), 2)


_DILATE = dl.dilate_kernel
_ZERO_INSERTED = dl.conv_via_zero_inserted
_OFFSETS = dl.stack_offsets
_SPAN = dl.stack_receptive_field
_POLYPHASE = dl.dilated_conv_by_polyphase
_GAP = dl.hdc_max_gap


def _dilate_off_by_one(weight, dilation):
    ds = (dilation,) * (weight.dim() - 2) if isinstance(dilation, int) else tuple(dilation)
    return _DILATE(weight, tuple(d + 1 if d > 1 else d for d in ds))


def _dilate_axis0(weight, dilation):
    ds = (dilation,) * (weight.dim() - 2) if isinstance(dilation, int) else tuple(dilation)
    return _DILATE(weight, (ds[0],) * len(ds))


def _zero_inserted_stride_on_input(x, weight, stride=1, padding=0, dilation=1):
    """Subsample the input by the stride first, then convolve with stride 1."""
    nd = weight.dim() - 2
    s = (stride,) * nd if isinstance(stride, int) else tuple(stride)
    return _ZERO_INSERTED(x[(slice(None), slice(None), *[slice(None, None, sj) for sj in s])], weight, 1, padding, dilation)


def _offsets_last_layer_undilated(ks, ds):
    return _OFFSETS(ks, list(ds[:-1]) + [1])


def _offsets_without_first_layer(ks, ds):
    return _OFFSETS(ks[1:], ds[1:]) if len(ks) > 1 else _OFFSETS(ks, ds)


def _polyphase_axis0(x, weight, dilation, padding=0):
    d = (dilation,) * 2 if isinstance(dilation, int) else tuple(dilation)
    return _POLYPHASE(x, weight, (d[0], d[0]), padding)


def _gap_last_two_only(dilations, kernel_size=3):
    rs = list(dilations)
    return _GAP(rs[-2:] if len(rs) > 2 else rs, kernel_size) if len(rs) > 2 else _GAP(rs, kernel_size)


PLANTS = [
    Plant("dilate.zero-inserted", "d zeros inserted instead of d-1", {"convbook.dilated:dilate_kernel": _dilate_off_by_one},
          parameter="dilation"),
    Plant("dilate.zero-inserted", "axis 0's dilation on every axis", {"convbook.dilated:dilate_kernel": _dilate_axis0},
          parameter="per-axis sizes"),
    Plant("dilate.zero-inserted", "stride applied to the input before convolving",
          {"convbook.dilated:conv_via_zero_inserted": _zero_inserted_stride_on_input}, parameter="stride"),
    Plant("dilate.zero-inserted", "padding dropped",
          {"convbook.dilated:conv_via_zero_inserted": lambda x, w, stride=1, padding=0, dilation=1: _ZERO_INSERTED(x, w, stride, 0, dilation)},
          parameter="padding"),
    Plant("dilate.receptive-growth", "span Σ d_l k_l", {"convbook.dilated:stack_receptive_field": lambda ks, ds: sum(d * k for k, d in zip(ks, ds))},
          parameter="kernel"),
    Plant("dilate.receptive-growth", "span 1 + Σ (k_l - 1), dilation ignored",
          {"convbook.dilated:stack_receptive_field": lambda ks, ds: _SPAN(ks, [1] * len(ds))}, parameter="dilation"),
    Plant("dilate.receptive-growth", "only the first three layers counted",
          {"convbook.dilated:stack_receptive_field": lambda ks, ds: _SPAN(ks[:3], ds[:3])}, parameter="depth"),
    Plant("dilate.gridding", "last layer's dilation ignored", {"convbook.dilated:stack_offsets": _offsets_last_layer_undilated},
          parameter="dilation"),
    Plant("dilate.gridding", "first layer left out", {"convbook.dilated:stack_offsets": _offsets_without_first_layer},
          parameter="depth"),
    Plant("dilate.gridding", "k - 1 taps per layer",
          {"convbook.dilated:stack_offsets": lambda ks, ds: _OFFSETS([max(k - 1, 1) for k in ks], ds)}, parameter="kernel"),
    Plant("dilate.gridding-condition", "gcd = 1 taken as sufficient",
          {"convbook.dilated:satisfies_hdc": lambda rs, kernel_size=3: math.gcd(*rs) == 1}, parameter="dilation"),
    Plant("dilate.gridding-condition", "M_2 from the last two dilations only",
          {"convbook.dilated:hdc_max_gap": _gap_last_two_only}, parameter="depth"),
    Plant("dilate.polyphase", "undilated sub-grids (d = 1)",
          {"convbook.dilated:dilated_conv_by_polyphase": lambda x, w, d, padding=0: _POLYPHASE(x, w, 1, padding)},
          parameter="dilation"),
    Plant("dilate.polyphase", "padding dropped before the split",
          {"convbook.dilated:dilated_conv_by_polyphase": lambda x, w, d, padding=0: _POLYPHASE(x, w, d, 0)},
          parameter="padding"),
    Plant("dilate.polyphase", "axis 0's dilation on both axes",
          {"convbook.dilated:dilated_conv_by_polyphase": _polyphase_axis0}, parameter="per-axis sizes"),
]

test_planted_failure = planted_failure_test(PLANTS)


def test_numpy_integers_and_padding_strings():
    x, w = _rand(1, 2, 9, 8, seed=1), _rand(3, 2, 3, 2, seed=2)
    for d, p in ((np.int64(2), np.int64(1)), ((1, 2), "same"), (2, "valid")):
        ref = F.conv2d(x, w, padding=p if isinstance(p, str) else int(p), dilation=d if isinstance(d, tuple) else int(d))
        assert torch.allclose(dilated_conv_by_polyphase(x, w, d, p), ref, rtol=1e-12, atol=1e-12)
        assert torch.allclose(conv_via_zero_inserted(x, w, 1, p, d), ref, rtol=1e-12, atol=1e-12)
    assert hdc_max_gap([np.int64(1), np.int64(2), np.int64(5)]) == 2
    with pytest.raises(ValueError, match="must be an integer"):
        dilated_conv_by_polyphase(x, w, 2.0)
    with pytest.raises(ValueError, match="kernel_size must be an integer"):
        hdc_max_gap([1, 2], kernel_size=3.0)
