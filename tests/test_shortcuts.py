"""Chapter 8: residual shortcuts across a change of dimensions (convbook.shortcuts)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from convbook import shortcuts
from convbook.shapes import conv_output_size
from convbook.shortcuts import (KINDS, block_mean_projection, bottleneck_block, bottleneck_shapes,
                                expected_coverage, gradient_coverage, gradient_mask, is_identity,
                                linear_map_matrix, linear_map_rank, resnet50_transition_costs, shortcut,
                                shortcut_cost, shortcut_rank)
from tests.planting import Plant, planted_failure_test

D = torch.float64


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=D)


# --- valid inputs ---------------------------------------------------------------------------


@given(kind=st.sampled_from(KINDS), c_in=st.integers(1, 4), extra=st.integers(0, 3), s=st.integers(1, 3),
       h=st.integers(1, 9), w=st.integers(1, 9))
@settings(max_examples=40)
def test_every_shortcut_gives_the_residual_shape(kind, c_in, extra, s, h, w):
    mod = shortcut(kind, c_in, c_in + extra, s).eval()
    y = mod(torch.zeros(1, c_in, h, w))
    assert y.shape == (1, c_in + extra, math.ceil(h / s), math.ceil(w / s))
    assert y.shape[2] == conv_output_size(h, 3, s, 1)  # matches the residual branch's 3x3/s, pad 1


def test_option_a_is_subsampling_plus_zero_channels():
    x = _rand(2, 3, 6, 6)
    y = shortcut("A", 3, 5, 2)(x)
    assert torch.equal(y[:, :3], x[:, :, ::2, ::2])
    assert torch.equal(y[:, 3:], torch.zeros(2, 2, 3, 3, dtype=D))


def test_identity_where_nothing_changes():
    for kind in ("A", "B", "D", "max"):
        assert is_identity(shortcut(kind, 4, 4, 1))
    assert not is_identity(shortcut("C", 4, 4, 1))


def test_option_d_is_avgpool_then_conv():
    mod = shortcut("D", 2, 3, 2).double().eval()
    x = _rand(1, 2, 6, 6)
    conv, bn = mod[1], mod[2]
    ref = bn(F.conv2d(F.avg_pool2d(x, 2), conv.weight))
    with torch.no_grad():
        assert torch.allclose(mod(x), ref, rtol=1e-12, atol=1e-12)


def test_gradient_coverage_values():
    assert gradient_coverage(shortcut("B", 2, 4, 2), (1, 2, 8, 8)) == Fraction(1, 4)
    assert gradient_coverage(shortcut("D", 2, 4, 2), (1, 2, 8, 8)) == 1
    assert gradient_coverage(shortcut("A", 2, 2, 1), (1, 2, 4, 4)) == 1
    assert gradient_coverage(shortcut("max", 2, 4, 2), (1, 2, 8, 8)) <= Fraction(1, 4)
    assert expected_coverage("B", 2, 5, 5) == Fraction(9, 25)
    assert gradient_coverage(shortcut("B", 1, 1, 2), (1, 1, 5, 5)) == Fraction(9, 25)
    mask = gradient_mask(shortcut("C", 1, 1, 2), (1, 1, 4, 4))
    assert mask[0, 0, ::2, ::2].all() and mask.sum() == 4


@given(kind=st.sampled_from(["A", "B", "C", "D"]), c_in=st.integers(1, 3), c_out=st.integers(1, 4),
       s=st.integers(1, 2), h=st.integers(2, 5))
@settings(max_examples=25)
def test_rank_matches_formula(kind, c_in, c_out, s, h):
    if kind == "A" and c_out < c_in:
        return
    torch.manual_seed(0)
    mod = shortcut(kind, c_in, c_out, s)
    assert linear_map_rank(mod, (c_in, h, h)) == shortcut_rank(kind, c_in, c_out, s, h, h)


def test_linear_map_matrix_applies_the_map():
    mod = shortcut("D", 2, 3, 2).double().eval()
    m = linear_map_matrix(mod, (2, 4, 4))
    x = _rand(1, 2, 4, 4)
    with torch.no_grad():
        affine = mod(x).flatten() - mod(torch.zeros_like(x)).flatten()
    assert torch.allclose(m @ x.flatten(), affine, rtol=1e-12, atol=1e-12)


def test_block_mean_projection():
    x = torch.arange(16.0, dtype=D).reshape(1, 1, 4, 4)
    p = block_mean_projection(x)
    assert p[0, 0, 0, 0] == (0 + 1 + 4 + 5) / 4
    assert torch.equal(block_mean_projection(p), p)


def test_costs_of_resnet50_transitions():
    b = resnet50_transition_costs("B")
    assert [r["params"] for r in b] == [64 * 256, 256 * 512, 512 * 1024, 1024 * 2048]
    assert [r["macs"] for r in b] == [64 * 256 * 56 * 56] + [256 * 512 * 28 * 28] * 3
    assert all(r["params"] == 0 for r in resnet50_transition_costs("A"))
    d = resnet50_transition_costs("D")
    assert d[0]["pool_reads"] == 0 and d[1]["pool_reads"] == 256 * 56 * 56
    assert shortcut_cost("C", 256, 256, 1, 56)["params"] == 65536
    assert shortcut_cost("B", 256, 256, 1, 56)["params"] == 0


def test_bottleneck_headline_shapes():
    assert bottleneck_shapes(256, 128, 512, 2, 56)["out"] == (512, 28, 28)
    with torch.device("meta"):
        y = bottleneck_block()(torch.empty(1, 256, 56, 56))
    assert y.shape == (1, 512, 28, 28)


# --- invalid inputs -------------------------------------------------------------------------


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="kind must be one of"):
        shortcut("E", 2, 2, 1)
    with pytest.raises(ValueError, match="stride must be a positive int"):
        shortcut("B", 2, 2, 0)
    with pytest.raises(ValueError, match="out_channels >= in_channels"):
        shortcut("A", 4, 2, 2)
    with pytest.raises(ValueError, match="input_shape must be 4"):
        gradient_mask(shortcut("B", 2, 2, 2), (2, 4, 4))
    with pytest.raises(ValueError, match="input_shape must be 3"):
        linear_map_matrix(shortcut("B", 2, 2, 2), (1, 2, 4, 4))
    with pytest.raises(ValueError, match="linear kinds"):
        expected_coverage("max", 2, 4, 4)
    with pytest.raises(ValueError, match="linear kinds"):
        shortcut_rank("max", 2, 2, 2, 4, 4)
    with pytest.raises(ValueError, match="divisible by block"):
        block_mean_projection(_rand(1, 1, 3, 4))
    with pytest.raises(ValueError, match="kind must be one of"):
        shortcut_cost("Z", 2, 2, 1, 4)
    with pytest.raises(ValueError, match="size and stride"):
        shortcut_cost("B", 2, 2, 0, 4)
    with pytest.raises(ValueError, match="mid_channels must be a positive int"):
        bottleneck_block(4, 0, 8, 2)


# --- planted failures: each check must fail on a wrong formula -------------------------------

_ORIG_SHORTCUT = shortcuts.shortcut
_ORIG_RANK = shortcuts.shortcut_rank
_ORIG_COST = shortcuts.shortcut_cost


def _d_without_pool(kind, in_channels, out_channels, stride=1):
    """Wrong: ResNet-D's average pool forgotten (it becomes option B)."""
    return _ORIG_SHORTCUT("B" if kind == "D" else kind, in_channels, out_channels, stride)


def _rank_avgpool_invertible(kind, in_channels, out_channels, stride, height, width):
    """Wrong belief: average pooling 'loses no information', so D keeps every input dimension."""
    if kind == "D":
        return min(in_channels * height * width, out_channels * math.ceil(height / stride) * math.ceil(width / stride))
    return _ORIG_RANK(kind, in_channels, out_channels, stride, height, width)


def _projection_strided(x, block=2):
    """Wrong: keeps the top-left sample of each block instead of its mean."""
    return x[..., ::block, ::block].repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1)


def _cost_at_input_resolution(kind, in_channels, out_channels, stride, size, everywhere=False):
    """Wrong: MACs counted at the input resolution (stride forgotten)."""
    cost = _ORIG_COST(kind, in_channels, out_channels, 1, size)
    if stride > 1 and kind in ("D", "max"):
        cost["pool_reads"] = _ORIG_COST(kind, in_channels, out_channels, stride, size)["pool_reads"]
    return cost


def _shapes_without_padding(in_channels, mid_channels, out_channels, stride, size):
    n2 = conv_output_size(size, 3, stride, 0)
    return {"conv1": (mid_channels, size, size), "conv2": (mid_channels, n2, n2),
            "conv3": (out_channels, n2, n2), "shortcut": (out_channels, n2, n2), "out": (out_channels, n2, n2)}


_ORIG_EXPECTED = shortcuts.expected_coverage
_ORIG_PROJ = shortcuts.block_constant_projection
_ORIG_BLOCK = shortcuts.bottleneck_block
_ORIG_BLOCK_COV = shortcuts.expected_block_coverage
_ORIG_LOCAL = shortcuts.expected_local_rank
_ZeroPad = shortcuts.ZeroPadShortcut


class _ZeroPadStride2(_ZeroPad):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__(in_channels, out_channels, 2)


class _ZeroPadInFront(_ZeroPad):
    def forward(self, x):
        y = x[:, :, :: self.stride, :: self.stride]
        return F.pad(y, (0, 0, 0, 0, self.out_channels - self.in_channels, 0))


class _ZeroPadRowsOnly(_ZeroPad):
    def forward(self, x):
        y = x[:, :, :: self.stride, :]
        return F.pad(y, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))


def _local_rank_first_channel(kind, x):
    return _ORIG_LOCAL(kind, x[:1]) * x.shape[0] if kind == "max" else _ORIG_LOCAL(kind, x)


PLANTS = [
    Plant("shortcut.gradient-coverage", "ResNet-D without its average pool", {"convbook.shortcuts:shortcut": _d_without_pool}),
    Plant("shortcut.gradient-coverage", "coverage of D believed 1/4",
          {"convbook.shortcuts:expected_coverage": lambda kind, s, h, w, identity=False: Fraction(1, s * s)}),
    Plant("shortcut.gradient-coverage", "stride taken as 2",
          {"convbook.shortcuts:expected_coverage": lambda kind, s, h, w, identity=False: _ORIG_EXPECTED(kind, 2, h, w, identity)},
          parameter="stride"),
    Plant("shortcut.gradient-coverage", "height used for both axes",
          {"convbook.shortcuts:expected_coverage": lambda kind, s, h, w, identity=False: _ORIG_EXPECTED(kind, s, h, h, identity)
           * Fraction(h, w)}, parameter="per-axis sizes"),
    Plant("shortcut.rank", "average pool believed invertible", {"convbook.shortcuts:shortcut_rank": _rank_avgpool_invertible}),
    Plant("shortcut.rank", "stride ignored",
          {"convbook.shortcuts:shortcut_rank": lambda kind, ci, co, s, h, w: _ORIG_RANK(kind, ci, co, 1, h, w)
           if kind == "C" or ci != co or s != 1 else _ORIG_RANK(kind, ci, co, s, h, w)}, parameter="stride"),
    Plant("shortcut.rank", "projection rank C_in·P whatever C_out",
          {"convbook.shortcuts:shortcut_rank": lambda kind, ci, co, s, h, w: _ORIG_RANK("A", ci, co, s, h, w)
           if kind in "BCD" and (kind == "C" or ci != co or s != 1) else _ORIG_RANK(kind, ci, co, s, h, w)},
          parameter="channels"),
    Plant("shortcut.rank", "height used for both axes",
          {"convbook.shortcuts:shortcut_rank": lambda kind, ci, co, s, h, w: _ORIG_RANK(kind, ci, co, s, h, h)},
          parameter="per-axis sizes"),
    Plant("shortcut.avgpool-not-invertible", "kept information = strided samples",
          {"convbook.shortcuts:block_mean_projection": _projection_strided}),
    Plant("shortcut.avgpool-not-invertible", "the matrix believed to be Π/4 (so 4MᵀM = Π/4·4)",
          {"convbook.shortcuts:block_constant_projection": lambda c, h, w, block=2: _ORIG_PROJ(c, h, w, block) / 4}),
    Plant("shortcut.avgpool-not-invertible", "Π of one channel",
          {"convbook.shortcuts:block_constant_projection": lambda c, h, w, block=2: _ORIG_PROJ(1, h, w, block)},
          parameter="channels"),
    Plant("shortcut.avgpool-not-invertible", "Π with the height's blocks on both axes",
          {"convbook.shortcuts:block_constant_projection": lambda c, h, w, block=2: _ORIG_PROJ(c, h, h, block)},
          parameter="per-axis sizes"),
    Plant("shortcut.block-coverage", "stride always on the 3×3",
          {"convbook.shortcuts:bottleneck_block": lambda *a, **k: _ORIG_BLOCK(*a[:5], placement="v1.5")},
          parameter="placement"),
    Plant("shortcut.block-coverage", "option D believed like B",
          {"convbook.shortcuts:expected_block_coverage": lambda pl, kind, s, h, w: _ORIG_BLOCK_COV(pl, "B", s, h, w)},
          parameter="shortcut option"),
    Plant("shortcut.block-coverage", "height used for both axes",
          {"convbook.shortcuts:expected_block_coverage": lambda pl, kind, s, h, w: _ORIG_BLOCK_COV(pl, kind, s, h, h)
           * (Fraction(h, w) if pl == "v1" and kind != "D" else 1)}, parameter="per-axis sizes"),
    Plant("shortcut.option-a-maxpool", "stride 2 whatever s", {"convbook.shortcuts:ZeroPadShortcut": _ZeroPadStride2},
          parameter="stride"),
    Plant("shortcut.option-a-maxpool", "zero channels in front", {"convbook.shortcuts:ZeroPadShortcut": _ZeroPadInFront},
          parameter="channels"),
    Plant("shortcut.option-a-maxpool", "rows subsampled, columns kept", {"convbook.shortcuts:ZeroPadShortcut": _ZeroPadRowsOnly},
          parameter="per-axis sizes"),
    Plant("shortcut.maxpool-local-rank", "max pool believed full rank",
          {"convbook.shortcuts:expected_local_rank": lambda kind, x: _ORIG_LOCAL("avg", x)}),
    Plant("shortcut.maxpool-local-rank", "channel 0's maxima counted for every channel",
          {"convbook.shortcuts:expected_local_rank": _local_rank_first_channel}, parameter="channels"),
    Plant("shortcut.maxpool-local-rank", "height used for both axes",
          {"convbook.shortcuts:expected_local_rank": lambda kind, x: _ORIG_LOCAL(kind, x) if kind == "max"
           else x.shape[0] * math.ceil(x.shape[1] / 2) ** 2}, parameter="per-axis sizes"),
    Plant("shortcut.cost-resnet50", "MACs at input resolution", {"convbook.shortcuts:shortcut_cost": _cost_at_input_resolution}),
    Plant("shortcut.bottleneck-shapes", "3x3 without padding", {"convbook.shortcuts:bottleneck_shapes": _shapes_without_padding}),
]

test_planted_failure = planted_failure_test(PLANTS)


def test_plot_gradient_coverage_titles_and_modules():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = shortcuts.plot_gradient_coverage(8, 8)
    titles = [ax.get_title() for ax in axes]
    assert titles[:3] == ["A: coverage 1/4", "B: coverage 1/4", "D: coverage 1"]
    assert titles[3].startswith("max: coverage ")
    plt.close("all")
    block = shortcuts.bottleneck_block(8, 4, 16, 2, "A")
    assert isinstance(block, shortcuts.Bottleneck) and isinstance(block.shortcut, shortcuts.ZeroPadShortcut)
    assert len(shortcuts.RESNET50_TRANSITIONS) == 4


def test_avgpool_matrix_relation_is_four_mtm_equals_projection():
    """Regression: the chapter once said the pool's matrix is ¼ of the projection's."""
    m = shortcuts.linear_map_matrix(nn.AvgPool2d(2, 2), (2, 4, 6))
    proj = shortcuts.block_constant_projection(2, 4, 6)
    assert torch.equal(4 * m.T @ m, proj)
    assert m.shape != proj.shape  # M is (CHW/4) × CHW: it cannot be a multiple of Π
    with pytest.raises(ValueError, match="divisible"):
        shortcuts.block_constant_projection(1, 3, 4)


def test_stride_placement_and_block_coverage():
    v1 = bottleneck_block(4, 2, 8, 2, "B", placement="v1")
    assert v1.conv1.stride == (2, 2) and v1.conv2.stride == (1, 1)
    v15 = bottleneck_block(4, 2, 8, 2, "B")
    assert v15.conv1.stride == (1, 1) and v15.conv2.stride == (2, 2)
    assert shortcuts.expected_block_coverage("v1", "A", 2, 8, 6) == Fraction(1, 4)
    assert shortcuts.expected_block_coverage("v1", "D", 2, 8, 6) == 1
    assert shortcuts.expected_block_coverage("v1.5", "B", 2, 8, 6) == 1
    with pytest.raises(ValueError, match="placement"):
        bottleneck_block(4, 2, 8, 2, "B", placement="v2")
    with pytest.raises(ValueError, match="stride 2 or 3"):
        shortcuts.expected_block_coverage("v1", "A", 4, 8, 8)


def test_maxpool_local_rank_example():
    x = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r = shortcuts.local_jacobian_rank(lambda z: F.max_pool2d(z, 3, 2, 1), x)
    assert r == shortcuts.expected_local_rank("max", x) <= 48
    assert shortcuts.expected_local_rank("avg", x) == 48
    with pytest.raises(ValueError, match="kind"):
        shortcuts.expected_local_rank("min", x)
