"""Chapter 10: dilated convolution, receptive fields and gridding (convbook.dilated)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from convbook import dilated as dl
from convbook.dilated import dilate_kernel, effective_kernel_size, stack_offsets, stack_path_counts, stack_receptive_field
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
    with pytest.raises(ValueError, match="dilation\\[0\\] must be >= 1"):
        dilate_kernel(_rand(1, 1, 3), 0)
    with pytest.raises(ValueError, match="one int per spatial axis"):
        dilate_kernel(_rand(1, 1, 3, 3), (2, 2, 2))
    with pytest.raises(ValueError, match="3-D"):
        dilate_kernel(_rand(3, 3), 2)
    with pytest.raises(ValueError, match="same length"):
        stack_receptive_field([3, 3], [1])
    with pytest.raises(ValueError, match="non-empty"):
        stack_offsets([], [])
    with pytest.raises(ValueError, match="dilations\\[1\\] must be >= 1"):
        stack_path_counts([3, 3], [1, 0])


_DILATE = dl.dilate_kernel


def _dilate_off_by_one(weight, dilation):
    ds = (dilation,) * (weight.dim() - 2) if isinstance(dilation, int) else tuple(dilation)
    return _DILATE(weight, tuple(d + 1 if d > 1 else d for d in ds))


def _offsets_last_layer_undilated(ks, ds):
    return _OFFSETS(ks, list(ds[:-1]) + [1])


_OFFSETS = dl.stack_offsets

PLANTS = [
    Plant("dilate.zero-inserted", "d zeros inserted instead of d-1", {"convbook.dilated:dilate_kernel": _dilate_off_by_one}),
    Plant("dilate.receptive-growth", "span Σ d_l k_l", {"convbook.dilated:stack_receptive_field": lambda ks, ds: sum(d * k for k, d in zip(ks, ds))}),
    Plant("dilate.gridding", "last layer's dilation ignored", {"convbook.dilated:stack_offsets": _offsets_last_layer_undilated}),
]

test_planted_failure = planted_failure_test(PLANTS)
