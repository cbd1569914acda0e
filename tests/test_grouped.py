"""Chapter 7: grouped convolutions, ResNeXt forms, depthwise separable, channel shuffle (convbook.grouped)."""

from __future__ import annotations

import sympy as sp
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from convbook import grouped
from convbook.grouped import (TABLE2, block_diagonal_mask, channel_shuffle, channel_unshuffle, convert_block,
                              dense_to_grouped, depthwise_separable_ratio, group_connectivity, grouped_cost,
                              grouped_cost_symbolic, grouped_to_dense, resnext_block, resnext_linear_identities,
                              resnext_params, resnext_params_symbolic, table2_width)
from tests.planting import Plant, planted_failure_test

D = torch.float64


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=D)


def _grouped_conv(c_in, c_out, k, g, seed=0, **kw):
    conv = nn.Conv2d(c_in, c_out, k, groups=g, **kw).double()
    with torch.no_grad():
        conv.weight.copy_(_rand(*conv.weight.shape, seed=seed))
    return conv


# --- valid inputs ---------------------------------------------------------------------------


def test_block_diagonal_mask_small_case():
    m = block_diagonal_mask(4, 6, 2)
    assert m.shape == (4, 6)
    assert m[:2, :3].all() and m[2:, 3:].all()
    assert not m[:2, 3:].any() and not m[2:, :3].any()


@given(g=st.integers(1, 4), a=st.integers(1, 3), b=st.integers(1, 3), k=st.integers(1, 3),
       s=st.integers(1, 2), p=st.integers(0, 1), bias=st.booleans(), seed=st.integers(0, 1000))
@settings(max_examples=30)
def test_grouped_to_dense_property(g, a, b, k, s, p, bias, seed):
    conv = _grouped_conv(g * a, g * b, k, g, seed, stride=s, padding=p, bias=bias)
    x = _rand(2, g * a, 6, 5, seed=seed + 1)
    dense = grouped_to_dense(conv)
    with torch.no_grad():
        assert torch.allclose(dense(x), conv(x), rtol=1e-12, atol=1e-12)
        back = dense_to_grouped(dense, g)
        assert torch.equal(back.weight, conv.weight)
        if bias:
            assert torch.equal(back.bias, conv.bias)
    assert conv.groups == g  # input not mutated


def test_grouped_cost_values_and_symbolic():
    assert grouped_cost(8, 4, 3, 2, (5, 5)) == (4 * 4 * 9, 4 * 4 * 9 * 25)
    assert grouped_cost(8, 4, (1, 3), 4, (2, 3)) == (4 * 2 * 3, 4 * 2 * 3 * 6)
    sym = grouped_cost_symbolic()
    g = sp.Symbol("g", positive=True)
    assert sp.simplify(sym["ratio"] - 1 / g) == 0


@pytest.mark.parametrize("src", ["a", "b", "c"])
@pytest.mark.parametrize("dst", ["a", "b", "c"])
def test_convert_block_every_pair_small(src, dst):
    block = resnext_block(src, 6, 3, 2, 6).double()
    grouped._randomize(block, torch.Generator().manual_seed(1))
    block.eval()
    x = _rand(2, 6, 5, 5)
    other = convert_block(block, dst)
    assert other is not block and other.form == dst and not other.training
    with torch.no_grad():
        assert torch.allclose(other(x), block(x), rtol=1e-12, atol=1e-12)


def test_resnext_block_default_shapes_and_projection_shortcut():
    c = resnext_block("c")
    assert c.conv2.groups == 32 and c.conv1.out_channels == 128
    assert isinstance(c.shortcut, nn.Identity)
    b = resnext_block("b", 4, 2, 2, 8).double().eval()
    assert isinstance(b.shortcut, nn.Sequential)
    a = convert_block(b, "a")
    x = _rand(1, 4, 4, 4)
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), rtol=1e-12, atol=1e-12)
        assert a(x).shape == (1, 8, 4, 4)


def test_convert_block_keeps_every_bn_setting_regression():
    """Regression: the projection shortcut was copied with load_state_dict, losing eps and momentum
    (a→c differed by 0.25 relative with eps = 0.5)."""
    block = resnext_block("a", 4, 2, 2, 8).double()
    grouped._randomize(block, torch.Generator().manual_seed(0))
    block.shortcut[1].eps, block.shortcut[1].momentum = 0.5, 0.3
    block.bn3.eps, block.bn3.momentum = 0.05, None
    for path in block.paths:
        path[1].eps, path[1].momentum = 0.2, 0.6
        path[4].eps = 1e-6
    block.eval()
    x = _rand(2, 4, 5, 5)
    for dst in ("a", "b", "c"):
        other = convert_block(block, dst)
        assert grouped._bn_settings(other) == grouped._bn_settings(block)
        with torch.no_grad():
            ref = block(x)
            assert float((other(x) - ref).abs().max() / ref.abs().max()) <= 1e-12
    assert convert_block(block, "c").bn1.momentum == 0.6


def test_convert_block_affine_false_and_no_running_stats():
    block = resnext_block("c", 4, 2, 2, 4).double()
    block.bn1 = nn.BatchNorm2d(4, affine=False).double()
    block.bn2 = nn.BatchNorm2d(4, track_running_stats=False).double()
    block.train()
    x = _rand(3, 4, 5, 5)
    a = convert_block(block, "a")
    assert not a.paths[0][1].affine and not a.paths[1][4].track_running_stats
    with torch.no_grad():
        assert torch.allclose(a(x), block(x), rtol=1e-12, atol=1e-12)


def test_resnext_params_and_table2():
    assert resnext_params(32, 4) == 70144
    assert resnext_params(1, 64) == 69632
    C, d, c, k = sp.symbols("C d c k", positive=True)
    assert resnext_params_symbolic().subs({C: 2, d: 40, c: 256, k: 3}) == resnext_params(2, 40)
    for card, width in TABLE2.items():
        sol = table2_width(card)
        assert sol["nearest"] == width
        assert sol["floor"] <= sol["real"] <= sol["ceil"]


def test_resnext_linear_identities_vanish_and_merge_block_diagonally():
    ids = resnext_linear_identities(3, 2, 2, 4)
    assert ids["last"].shape == (4, 1) and ids["first"].shape == (4, 1) and ids["middle"].shape == (4, 1)
    for layer in ("last", "first", "middle"):
        assert ids[layer] == sp.zeros(*ids[layer].shape)
    merged = ids["merged_middle"]
    assert merged[0, 2] == 0 and merged[3, 1] == 0 and merged[0, 1] != 0 and merged[2, 3] != 0


def test_depthwise_separable_ratio_symbolic():
    r = depthwise_separable_ratio()
    c_out, k = sp.Symbol("C_out", positive=True), sp.Symbol("k", positive=True)
    assert sp.simplify(r - (1 / c_out + 1 / k**2)) == 0
    assert r.subs({c_out: 256, k: 3}) == sp.Rational(1, 256) + sp.Rational(1, 9)


@given(g=st.integers(1, 6), n=st.integers(1, 6))
def test_channel_shuffle_matches_torch_and_inverts(g, n):
    x = _rand(2, g * n, 3, 3, seed=g * 7 + n)
    y = channel_shuffle(x, g)
    assert torch.equal(y, nn.ChannelShuffle(g)(x))
    assert torch.equal(channel_unshuffle(y, g), x)
    assert torch.equal(channel_shuffle(channel_unshuffle(x, g), g), x)


def test_group_connectivity_examples():
    assert torch.equal(group_connectivity(3, 2, False), torch.eye(3, dtype=torch.bool))
    full = group_connectivity(3, 3, True)
    assert full.all()
    partial = group_connectivity(4, 2, True)
    assert (partial.sum(dim=1) == 2).all()


# --- invalid inputs -------------------------------------------------------------------------


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="divisible by groups"):
        block_diagonal_mask(4, 6, 4)
    with pytest.raises(ValueError, match="groups must be a positive int"):
        block_diagonal_mask(4, 4, 0)
    with pytest.raises(ValueError, match="channel counts"):
        grouped_cost(0, 4, 3, 1, (3, 3))
    with pytest.raises(ValueError, match="divisible by groups"):
        grouped_cost(6, 4, 3, 4, (3, 3))
    with pytest.raises(ValueError, match=">= 1"):
        grouped_cost(4, 4, 0, 1, (3, 3))
    with pytest.raises(ValueError, match="nn.Conv2d"):
        grouped_to_dense(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="nn.Conv2d"):
        dense_to_grouped(nn.Linear(2, 2), 2)
    with pytest.raises(ValueError, match="groups=1"):
        dense_to_grouped(_grouped_conv(4, 4, 1, 2), 2)
    with pytest.raises(ValueError, match="not block-diagonal"):
        dense_to_grouped(_grouped_conv(4, 4, 1, 1), 2)
    with pytest.raises(ValueError, match="form must be"):
        resnext_block("d")
    with pytest.raises(ValueError, match="cardinality must be a positive int"):
        resnext_block("a", cardinality=0)
    with pytest.raises(ValueError, match="form must be"):
        convert_block(resnext_block("a", 4, 2, 1, 4), "z")
    with pytest.raises(ValueError, match="ResNeXtBlock"):
        convert_block(nn.Identity(), "a")
    with pytest.raises(ValueError, match="width must be a positive int"):
        resnext_params(2, 0)
    with pytest.raises(ValueError, match="cardinality must be a positive int"):
        table2_width(0)
    with pytest.raises(ValueError, match="divisible by groups"):
        channel_shuffle(_rand(1, 6, 2, 2), 4)
    with pytest.raises(ValueError, match=r"\(B, C, ...\)"):
        channel_shuffle(_rand(6), 2)
    with pytest.raises(ValueError, match="divisible by groups"):
        channel_unshuffle(_rand(1, 6, 2, 2), 4)
    with pytest.raises(ValueError, match="per_group"):
        group_connectivity(0, 2, True)
    with pytest.raises(ValueError, match="width must be a positive int"):
        resnext_linear_identities(2, 2, 0, 2)
    uneven = resnext_block("a", 4, 2, 1, 4)
    uneven.paths[1][1].eps = 1e-3
    with pytest.raises(ValueError, match="same eps and momentum"):
        convert_block(uneven, "c")
    uneven = resnext_block("b", 4, 2, 1, 4)
    uneven.paths[0][4].momentum = 0.5
    with pytest.raises(ValueError, match="same eps and momentum"):
        convert_block(uneven, "a")


# --- planted failures: each check must fail on a wrong formula -------------------------------

_ORIG_TO_DENSE = grouped.grouped_to_dense
_ORIG_MAKE_BN = grouped._make_bn
_ORIG_CONN = grouped.group_connectivity


def _to_dense_blocks_rolled(conv):
    """Wrong: output group j wired to input group j+1."""
    dense = _ORIG_TO_DENSE(conv)
    n_in = conv.in_channels // conv.groups
    with torch.no_grad():
        dense.weight.copy_(torch.roll(dense.weight, n_in, dims=1))
    return dense


def _make_bn_without_statistics(state, lo, hi):
    """Wrong: copies γ and β but forgets the running statistics."""
    return _ORIG_MAKE_BN({**state, "running_mean": None, "running_var": None}, lo, hi)


def _make_bn_default_momentum(state, lo, hi):
    """Wrong: the paths' BNs rebuilt with PyTorch's default momentum 0.1."""
    return _ORIG_MAKE_BN({**state, "momentum": 0.1}, lo, hi)


def _shortcut_by_state_dict(block):
    """The old conversion: a fresh shortcut with the tensors copied by load_state_dict (eps, momentum lost)."""
    fresh = resnext_block("a", block.in_channels, 1, 1, block.out_channels).shortcut
    fresh = fresh.to(dtype=next(block.parameters()).dtype)
    fresh.load_state_dict(block.shortcut.state_dict())
    return fresh


def _cost_not_divided(in_channels, out_channels, kernel_size, groups, out_size):
    return _ORIG_COST(in_channels, out_channels, kernel_size, 1, out_size)


_ORIG_COST = grouped.grouped_cost


def _params_missing_square(cardinality, width, channels=256, kernel_size=3):
    return cardinality * (channels * width + kernel_size**2 * width + width * channels)


def _symbolic_missing_last_layer():
    C, d, c, k = sp.symbols("C d c k", positive=True)
    return sp.expand(C * (c * d + k**2 * d**2))


def _shuffle_wrong_axis(x, groups):
    """Wrong: reshapes as (n, g) instead of (g, n) — the inverse shuffle."""
    c = x.shape[1]
    return x.reshape(x.shape[0], c // groups, groups, *x.shape[2:]).transpose(1, 2).reshape(x.shape)


def _canonical_paths_reversed(block):
    """Wrong: path i's weights taken from path C−1−i for the first layer only."""
    parts = _ORIG_CANONICAL(block)
    return {**parts, "w1": parts["w1"][::-1]}


_ORIG_CANONICAL = grouped._canonical


PLANTS = [
    Plant("group.block-diagonal", "blocks wired to the next group", {"convbook.grouped:grouped_to_dense": _to_dense_blocks_rolled},
          parameter="groups"),
    Plant("group.cost-divided-by-g", "cost not divided by g", {"convbook.grouped:grouped_cost": _cost_not_divided},
          parameter="groups"),
    Plant("group.resnext-forms-linear", "grouped mask taken as dense",
          {"convbook.grouped:block_diagonal_mask": lambda o, i, g: torch.ones(o, i, dtype=torch.bool)},
          parameter="cardinality"),
    Plant("group.resnext-forms-linear", "convert_block pairs first layers with the wrong paths",
          {"convbook.grouped:_canonical": _canonical_paths_reversed}),
    Plant("group.resnext-forms-equal", "BN running statistics not copied", {"convbook.grouped:_make_bn": _make_bn_without_statistics}),
    Plant("group.resnext-forms-equal", "shortcut eps dropped (state_dict copy)",
          {"convbook.grouped:_clone_shortcut": _shortcut_by_state_dict}, parameter="eps"),
    Plant("group.resnext-forms-equal", "paths' BN momentum reset to 0.1",
          {"convbook.grouped:_make_bn": _make_bn_default_momentum}, parameter="momentum"),
    Plant("group.resnext-table2", "3x3 term not squared in d", {"convbook.grouped:resnext_params": _params_missing_square}),
    Plant("group.resnext-table2", "last 1x1 left out of the count", {"convbook.grouped:resnext_params_symbolic": _symbolic_missing_last_layer}),
    Plant("group.channel-shuffle", "reshape on the wrong axis (n groups instead of g)",
          {"convbook.grouped:channel_shuffle": _shuffle_wrong_axis}, parameter="groups"),
    Plant("group.channel-shuffle", "shuffle believed to connect everything (n ignored)",
          {"convbook.grouped:group_connectivity": lambda g, n, s: torch.ones(g, g, dtype=torch.bool) if s else _ORIG_CONN(g, n, s)},
          parameter="channels per group"),
]

test_planted_failure = planted_failure_test(PLANTS)


def test_plot_group_connectivity_counts_non_zeros():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = grouped.plot_group_connectivity(4, 2)
    titles = [ax.get_title() for ax in axes]
    # g = 4 groups of n = 2: 4 diagonal 2x2 blocks without shuffle, each output group reaches min(n, g) = 2 with one
    assert titles == ["without shuffle: 16 non-zeros", "with shuffle: 32 non-zeros"]
    plt.close("all")



def test_plot_group_connectivity_fixed_scale_integer_ticks():
    """Regression: an all-non-zero panel was drawn blank (imshow scaled an all-True array to itself)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = grouped.plot_group_connectivity(4, 4)
    for ax in axes:
        assert ax.images[0].get_clim() == (0.0, 1.0)
        assert all(float(t).is_integer() for t in ax.get_xticks())
        assert ax.xaxis.label.get_fontsize() >= 9 and ax.title.get_fontsize() >= 9
    assert float(axes[1].images[0].get_array().min()) == 1.0  # every entry non-zero: drawn black, not blank
    plt.close("all")


# --- picture: ResNeXt's three forms -----------------------------------------------------------


def test_plot_resnext_forms_draws_three_labelled_diagrams():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    ax = grouped.plot_resnext_forms(paths=4)
    fig = ax.figure
    fig.canvas.draw()
    texts = [t for t in ax.texts if t.get_text()]
    strings = [t.get_text() for t in texts]
    boxes = [p for p in ax.patches if isinstance(p, FancyBboxPatch)]
    # (a) 4 paths × 3 boxes, (b) 4 × 2 + concatenate + 1×1, (c) 3 boxes
    assert len(boxes) == 12 + 10 + 3
    assert strings.count("…") == 3 + 2
    assert any("3×3, 32 groups" in s for s in strings) and any("concatenate: 128-d" in s for s in strings)
    assert strings.count("1×1\n256→4") == 8 and strings.count("1×1\n4→256") == 4
    assert all(t.get_fontsize() >= 9 for t in texts)
    renderer = fig.canvas.get_renderer()
    extents = [t.get_window_extent(renderer) for t in texts]
    for i in range(len(extents)):
        for j in range(i + 1, len(extents)):
            assert not extents[i].overlaps(extents[j]), (strings[i], strings[j])
    plt.close(fig)


def test_plot_resnext_forms_rejects_bad_arguments():
    with pytest.raises(ValueError, match="paths"):
        grouped.plot_resnext_forms(paths=1)
    with pytest.raises(ValueError, match="fontsize"):
        grouped.plot_resnext_forms(fontsize=8)


def test_plot_grouped_weight_layout_shows_the_same_numbers_in_diagonal_blocks():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = grouped.plot_grouped_weight_layout(in_channels=8, out_channels=6, groups=2, seed=0)
    left = axes[0].images[0].get_array()
    right = axes[1].images[0].get_array()
    assert left.shape == (6, 4) and right.shape == (6, 8)
    mask = block_diagonal_mask(6, 8, 2).numpy()
    assert (right[~mask] == 0).all()
    assert sorted(right[mask].tolist()) == sorted(left.ravel().tolist())
    assert len(axes[0].patches) == 2 and len(axes[1].patches) == 2
    assert "6 × 4" in axes[0].get_title() and "2 diagonal blocks" in axes[1].get_title()
    with pytest.raises(ValueError):
        grouped.plot_grouped_weight_layout(in_channels=8, out_channels=6, groups=4)
    plt.close("all")
