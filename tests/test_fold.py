"""Chapter 6: folding batch norm (convbook.fold)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from convbook import fold
from convbook.fold import (BiasMapConv, bn_conv_bias_map, bn_conv_exact, bn_scale_shift, bn_traffic_saved,
                           border_band_mask, border_band_width, count_batchnorms, fold_bn_conv,
                           fold_bn_conv_with_border, fold_conv_bn, fold_model,
                           output_channel_of_weight, torch_fusion_table)
from tests.planting import Plant, planted_failure_test

D = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _bn(c, dim=2, seed=0, **kw):
    bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dim](c, **kw).double()
    if bn.track_running_stats:
        fold._randomise_bn(bn, _gen(seed))
    return bn.eval()


def _rand_layer(layer, seed=1):
    layer = layer.double()
    fold._randomise(layer, _gen(seed))
    return layer


def _x(*shape, seed=2):
    return torch.randn(*shape, generator=_gen(seed), dtype=D)


# --- valid inputs ---------------------------------------------------------------------------


def test_bn_scale_shift_matches_bn():
    bn = _bn(5)
    s, t = bn_scale_shift(bn)
    x = _x(3, 5, 4, 4)
    assert torch.allclose(bn(x), x * s.reshape(1, -1, 1, 1) + t.reshape(1, -1, 1, 1), rtol=0, atol=1e-12)
    bn2 = nn.BatchNorm2d(3, affine=False).double().eval()
    s2, t2 = bn_scale_shift(bn2)
    assert torch.allclose(s2, torch.full((3,), 1 / np.sqrt(1 + 1e-5), dtype=D))
    assert torch.equal(t2, torch.zeros(3, dtype=D))


def test_output_channel_of_weight_transpose_groups():
    # ConvTranspose(4 -> 6, groups=2): weight (4, 3, k); input 0,1 feed outputs 0..2, inputs 2,3 feed 3..5
    chan = output_channel_of_weight("transpose", (4, 3), groups=2)
    assert chan.tolist() == [[0, 1, 2], [0, 1, 2], [3, 4, 5], [3, 4, 5]]
    assert output_channel_of_weight("conv", (2, 3)).tolist() == [[0, 0, 0], [1, 1, 1]]


def test_fold_conv_bn_does_not_mutate_inputs():
    conv, bn = _rand_layer(nn.Conv2d(3, 4, 3, bias=False)), _bn(4)
    w = conv.weight.clone()
    rm = bn.running_mean.clone()
    fused = fold_conv_bn(conv, bn)
    assert conv.bias is None and torch.equal(conv.weight, w) and torch.equal(bn.running_mean, rm)
    assert fused is not conv and fused.bias is not None


@given(nd=st.sampled_from([1, 2, 3]), g=st.integers(1, 3), ci=st.integers(1, 3), co=st.integers(1, 3),
       k=st.integers(1, 3), s=st.integers(1, 2), p=st.integers(0, 2), d=st.integers(1, 2), bias=st.booleans(),
       mode=st.sampled_from(["zeros", "reflect", "replicate", "circular"]), seed=st.integers(0, 1000))
@settings(max_examples=40)
def test_fold_conv_bn_property(nd, g, ci, co, k, s, p, d, bias, mode, seed):
    conv_t = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[nd]
    conv = _rand_layer(conv_t(g * ci, g * co, k, s, p, d, g, bias, mode), seed)
    bn = _bn(g * co, nd, seed + 1)
    x = _x(2, g * ci, *([5] * nd), seed=seed + 2)
    with torch.no_grad():
        assert torch.allclose(fold_conv_bn(conv, bn)(x), bn(conv(x)), rtol=1e-12, atol=1e-12)


@given(g=st.integers(1, 3), ci=st.integers(1, 3), co=st.integers(1, 3), k=st.integers(1, 3), s=st.integers(1, 3),
       bias=st.booleans(), seed=st.integers(0, 1000))
@settings(max_examples=30)
def test_fold_transpose_property(g, ci, co, k, s, bias, seed):
    conv = _rand_layer(nn.ConvTranspose2d(g * ci, g * co, k, stride=s, groups=g, bias=bias), seed)
    bn = _bn(g * co, 2, seed + 1)
    x = _x(2, g * ci, 4, 3, seed=seed + 2)
    with torch.no_grad():
        assert torch.allclose(fold_conv_bn(conv, bn)(x), bn(conv(x)), rtol=1e-12, atol=1e-12)


@given(g=st.integers(1, 3), ci=st.integers(1, 3), co=st.integers(1, 3), k=st.integers(1, 3), s=st.integers(1, 2),
       d=st.integers(1, 2), mode=st.sampled_from(["reflect", "replicate", "circular"]), seed=st.integers(0, 1000))
@settings(max_examples=30)
def test_fold_bn_conv_property(g, ci, co, k, s, d, mode, seed):
    conv = _rand_layer(nn.Conv2d(g * ci, g * co, k, s, 1, d, g, padding_mode=mode), seed)
    bn = _bn(g * ci, 2, seed + 1)
    x = _x(2, g * ci, 6, 5, seed=seed + 2)
    with torch.no_grad():
        assert torch.allclose(fold_bn_conv(bn, conv)(x), conv(bn(x)), rtol=1e-12, atol=1e-12)


@given(n=st.integers(1, 12), k=st.integers(1, 4), s=st.integers(1, 3), p=st.integers(0, 3), d=st.integers(1, 3))
def test_border_band_width_by_enumeration(n, k, s, p, d):
    if d * (k - 1) + 1 > n + 2 * p:
        with pytest.raises(ValueError, match="empty output"):
            border_band_width(n, k, s, p, d)
        return
    n_out = (n + 2 * p - d * (k - 1) - 1) // s + 1
    reads_pad = [any(not 0 <= s * u - p + d * a < n for a in range(k)) for u in range(n_out)]
    lead, trail = border_band_width(n, k, s, p, d)
    predicted = [u < lead or u >= n_out - trail for u in range(n_out)]
    assert predicted == reads_pad
    assert border_band_mask((n,), (k,), (s,), (p,), (d,)).tolist() == reads_pad


def test_bias_map_is_exact_and_constant_inside():
    bn, conv = _bn(3), _rand_layer(nn.Conv2d(3, 2, 3, padding=1))
    x = _x(2, 3, 7, 6)
    exact = fold_bn_conv_with_border(bn, conv, (7, 6))
    with torch.no_grad():
        assert torch.allclose(exact(x), conv(bn(x)), rtol=0, atol=1e-12)
    bmap = bn_conv_bias_map(bn, conv, (7, 6))
    inside = torch.as_tensor(~border_band_mask((7, 6), (3, 3), (1, 1), (1, 1), (1, 1)))
    const = fold_bn_conv(bn, conv, exact=False).bias
    assert torch.allclose(bmap[:, inside], const[:, None].expand(-1, int(inside.sum())), atol=1e-12)
    assert bn_conv_exact(nn.Conv2d(3, 2, 3, padding=1, padding_mode="reflect"))
    assert bn_conv_exact(nn.Conv2d(3, 2, 3, padding="valid"))
    assert not bn_conv_exact(nn.Conv2d(3, 2, 3, padding="same"))
    assert bn_conv_exact(nn.Linear(3, 2))


def test_fold_model_sequential_and_untouched():
    model = nn.Sequential(_rand_layer(nn.Conv2d(3, 4, 3, padding=1)), _bn(4), nn.ReLU(),
                          _rand_layer(nn.Conv2d(4, 2, 1)), _bn(2, seed=5)).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_model(model)
    assert count_batchnorms(folded) == 0 and count_batchnorms(model) == 2
    x = _x(2, 3, 6, 6)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), rtol=1e-12, atol=1e-12)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_fold_model_linear_needs_example_input():
    model = nn.Sequential(_rand_layer(nn.Linear(5, 4)), _bn(4, dim=1)).eval()
    x = _x(3, 5)
    assert count_batchnorms(fold_model(model)) == 1
    folded = fold_model(model, example_input=x)
    assert count_batchnorms(folded) == 0
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), rtol=1e-12, atol=1e-12)


def test_fold_model_shared_conv_is_not_folded():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = _rand_layer(nn.Conv2d(3, 3, 1)), _bn(3)

        def forward(self, x):
            return self.bn(self.conv(x)) + self.conv(x)

    model = Shared().eval()
    folded = fold_model(model)
    assert count_batchnorms(folded) == 1
    x = _x(1, 3, 4, 4)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), rtol=1e-12, atol=1e-12)


def _randomised(model, seed=0):
    gen = _gen(seed)
    model = model.double()
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                          nn.ConvTranspose3d, nn.Linear)):
            fold._randomise(m, gen)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            fold._randomise_bn(m, gen)
    return model.eval()


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("layers", [
    lambda: [nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)],
    lambda: [nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)],
    lambda: [nn.Conv2d(3, 3, 3), nn.ReLU(), nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)],
    lambda: [nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(4)],
], ids=["bn-conv1x1-bn", "bn-conv3-bn", "conv-relu-bn-conv1x1-bn", "bn-reflectconv-bn"])
def test_fold_model_bn_conv_bn_chain_regression(layers):
    """Regression: the second fold used the stale original conv and overwrote the first (rel. error ~1)."""
    model = _randomised(nn.Sequential(*layers()), seed=3)
    folded = fold_model(model)
    x = _x(2, 3, 8, 8)
    with torch.no_grad():
        assert _rel(folded(x), model(x)) <= 1e-10
    assert count_batchnorms(folded) == 0 and not folded.fold_report.unfolded


class _PreActProjection(nn.Module):
    """Pre-activation block with a 1×1 projection shortcut: the ReLU output feeds two convs."""

    def __init__(self):
        super().__init__()
        self.bn1, self.conv1, self.proj = nn.BatchNorm2d(4), nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(4, 6, 1)
        self.bn2, self.conv2 = nn.BatchNorm2d(6, eps=0.3, momentum=0.7), nn.Conv2d(6, 6, 3, padding=1)

    def forward(self, x):
        a = torch.relu(self.bn1(x))
        return self.proj(a) + self.conv2(torch.relu(self.bn2(self.conv1(a))))


class _ConcatThenBnConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(4, 2, 3, padding=1), nn.Conv2d(4, 3, 1)
        self.bn, self.mix = nn.BatchNorm2d(5, eps=1e-2), nn.Conv2d(5, 4, 1, bias=False)

    def forward(self, x):
        return self.mix(self.bn(torch.cat([self.a(x), self.b(x)], 1)))


class _SEReadsBN(nn.Module):
    """The BN output is read twice (gate and product): fine for Conv→BN, which only needs the conv's output alone."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.BatchNorm2d(4, eps=0.5)
        self.fc = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return y * torch.sigmoid(self.fc(y.mean((2, 3), keepdim=True)))


class _SharedThenBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.conv(self.bn(self.conv(x)))


class _OutputTwoReaders(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) * y


class _Transposed3d(nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.bn = nn.ConvTranspose3d(4, 6, 2, stride=2, groups=2), nn.BatchNorm3d(6, eps=1e-6, momentum=None)
        self.bn2, self.conv = nn.BatchNorm3d(6), nn.Conv3d(6, 3, 2, dilation=2)

    def forward(self, x):
        return self.conv(self.bn2(torch.relu(self.bn(self.up(x)))))


@pytest.mark.parametrize("make, shape, left", [
    (_PreActProjection, (2, 4, 6, 6), {"bn1"}),
    (_ConcatThenBnConv, (2, 4, 6, 6), set()),
    (_SEReadsBN, (2, 4, 6, 6), set()),
    (_SharedThenBN, (2, 4, 5, 5), {"bn"}),
    (_OutputTwoReaders, (2, 4, 5, 5), {"bn"}),
    (_Transposed3d, (2, 4, 3, 3, 3), set()),
], ids=["preact-projection", "concat-bn-conv", "se", "shared-conv", "two-readers", "transposed-3d"])
def test_fold_model_on_architectures_the_book_does_not_use(make, shape, left):
    model = _randomised(make(), seed=5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_model(model)
    x = _x(*shape, seed=6)
    with torch.no_grad():
        assert _rel(folded(x), model(x)) <= 1e-10
    remaining = {n for n, m in folded.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert remaining == left == set(folded.fold_report.unfolded)
    assert all(folded.fold_report.unfolded.values())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_fold_model_report_names_reasons():
    model = _randomised(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 3, padding=1)))
    report = fold_model(model).fold_report
    assert report.folded == [] and list(report.unfolded) == ["2"]
    assert "zero padding" in report.unfolded["2"] and "ReLU" in report.unfolded["2"]
    assert "left: 1" in str(report)


def test_fold_preact_exact_and_naive_is_wrong():
    prev, conv = _rand_layer(nn.Conv2d(3, 4, 3), 1), _rand_layer(nn.Conv2d(4, 6, 3, padding=1, groups=2), 2)
    bn = nn.BatchNorm2d(4, eps=0.1).double()
    fold._randomise_bn(bn, _gen(3), positive_gamma=True)
    bn.eval()
    x = _x(2, 3, 9, 9)
    with torch.no_grad():
        ref = conv(torch.relu(bn(prev(x))))
        p2, c2 = fold.fold_preact(prev, bn, conv)
        assert _rel(c2(torch.relu(p2(x))), ref) <= 1e-12
        p3, c3 = fold.naive_preact_fold(prev, bn, conv)
        assert _rel(c3(torch.relu(p3(x))), ref) > 0.01
    assert conv.bias is not None and torch.equal(c2.bias, conv.bias)


@pytest.mark.parametrize("gamma0", [-0.5, 0.0])
def test_fold_preact_refuses_non_positive_scale(gamma0):
    bn = _bn(3)
    with torch.no_grad():
        bn.weight[1] = gamma0
    with pytest.raises(ValueError, match=r"s_c = γ_c/√\(σ²_c\+ε\) > 0.*channels \[1\]"):
        fold.fold_preact(_rand_layer(nn.Conv2d(2, 3, 1)), bn, _rand_layer(nn.Conv2d(3, 2, 3)))


def test_model_traffic_saved_counts_only_folded_pairs():
    """Regression: every BN after a conv was counted, folded or not."""
    model = _randomised(_OutputTwoReaders())
    saved = fold.model_traffic_saved(model, (2, 4, 5, 5), 8)
    assert saved == {"pairs": 0, "bytes": 0, "activation_bytes": 0}
    model = _randomised(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 5, 1, bias=False), nn.BatchNorm2d(5)))
    x = _x(2, 3, 4, 4)
    measured = fold.module_traffic(model, x, 8) - fold.module_traffic(fold_model(model), x, 8)
    # BN(3) -> conv: 2*96 + 12 - 5 (bias gained, 5 outputs); conv -> BN(5): 2*160 + 20 (bias already there)
    assert measured == (2 * 96 + 12 - 5 + 2 * 160 + 20) * 8
    assert fold.model_traffic_saved(model, (2, 3, 4, 4), 8)["bytes"] == measured


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v1", "resnet18", "resnext50_32x4d"])
def test_fold_model_on_library_models(name):
    net = fold._random_model(name, _gen(11), "cpu", num_classes=10)
    folded = fold_model(net, strict=True)
    assert count_batchnorms(folded) == 0
    x = _x(1, 3, 32, 32)
    with torch.no_grad():
        ref = net(x)
        assert float((folded(x) - ref).abs().max() / ref.abs().max()) < 1e-10


def test_traffic_formula_values():
    # B=1, C=64, 56x56, float32, conv without bias: (2*64*56*56 + 4*64 - 64) * 4 bytes
    assert bn_traffic_saved((1, 64, 56, 56), 4) == (2 * 64 * 56 * 56 + 3 * 64) * 4
    assert bn_traffic_saved((2, 3, 5), 2, conv_has_bias=True) == (2 * 30 + 12) * 2


def test_model_traffic_saved_small_model_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 2, 3, stride=2, bias=False), nn.BatchNorm2d(2))
    got = fold.model_traffic_saved(model, (2, 3, 9, 9), bytes_per_element=2)
    first = 2 * (2 * 4 * 9 * 9) + 4 * 4  # conv has a bias
    second = 2 * (2 * 2 * 4 * 4) + 4 * 2 - 2  # 9 -> 4 with k=3, s=2; bias added
    assert got == {"pairs": 2, "bytes": (first + second) * 2, "activation_bytes": (2 * 4 * 81 + 2 * 2 * 16) * 2}


def test_fold_timing_case_is_equivalent():
    case = fold.fold_timing_case(dtype=torch.float64)
    x = case["input"][:1, :, :8, :8]
    with torch.no_grad():
        assert torch.allclose(case["fused"](x), case["unfused"](x), rtol=1e-12, atol=1e-10)
    assert case["bytes_saved"] == (2 * 32 * 64 * 56 * 56 + 3 * 64) * 8


def test_torch_fusion_table_rows():
    rows = torch_fusion_table()
    assert [r["torch_ok"] for r in rows if not r["gap"]] == [True, True]
    assert not any(r["torch_ok"] for r in rows if r["gap"])
    assert max(r["convbook_error"] for r in rows) < 1e-12


def test_float32_errors_are_rounding():
    errs = fold.float32_fold_errors(n_layers=5)
    assert errs["folded"].max() < 1e-5 and errs["unfolded"].max() < 1e-5


# --- invalid inputs -------------------------------------------------------------------------


def test_invalid_inputs_raise_clear_errors():
    conv = nn.Conv2d(3, 4, 3).double()
    with pytest.raises(ValueError, match="expected a BatchNorm"):
        bn_scale_shift(nn.ReLU())
    with pytest.raises(ValueError, match="track_running_stats=False"):
        bn_scale_shift(_bn(4, track_running_stats=False))
    with pytest.raises(ValueError, match="training mode"):
        fold_conv_bn(conv, _bn(4).train())
    with pytest.raises(ValueError, match="kind must be"):
        output_channel_of_weight("dense", (2, 2))
    with pytest.raises(ValueError, match="groups must divide"):
        output_channel_of_weight("transpose", (3, 2), groups=2)
    with pytest.raises(ValueError, match="channel mismatch"):
        fold_conv_bn(conv, _bn(5))
    with pytest.raises(ValueError, match="dimension mismatch"):
        fold_conv_bn(conv, _bn(4, dim=1))
    with pytest.raises(ValueError, match="handles Conv1d/2d/3d"):
        fold_conv_bn(nn.ReLU(), _bn(4))
    with pytest.raises(ValueError, match="transposed"):
        fold_bn_conv(_bn(3), nn.ConvTranspose2d(3, 4, 3).double())
    with pytest.raises(ValueError, match="channel mismatch"):
        fold_bn_conv(_bn(4), conv)
    with pytest.raises(ValueError, match="not exact"):
        fold_bn_conv(_bn(3), nn.Conv2d(3, 4, 3, padding=1).double())
    with pytest.raises(ValueError, match="needs a Conv1d/2d/3d"):
        bn_conv_bias_map(_bn(3, dim=1), nn.Linear(3, 2).double(), (5,))
    with pytest.raises(ValueError, match="input_size must have 2"):
        bn_conv_bias_map(_bn(3), conv, (5,))
    with pytest.raises(ValueError, match="channel mismatch"):
        bn_conv_bias_map(_bn(4), conv, (5, 5))
    with pytest.raises(ValueError, match="same length"):
        border_band_mask((5, 5), (3,), (1,), (1,), (1,))
    with pytest.raises(ValueError, match="empty output"):
        border_band_mask((2,), (5,), (1,), (0,), (1,))
    with pytest.raises(ValueError, match="built for outputs"):
        BiasMapConv(conv, torch.zeros(4, 3, 3, dtype=D))(_x(1, 3, 6, 6))
    with pytest.raises(ValueError, match="eval mode"):
        fold_model(nn.Sequential(conv, _bn(4)).train())
    with pytest.raises(ValueError, match="track_running_stats"):
        fold_model(nn.Sequential(conv, _bn(4, track_running_stats=False)).eval())
    with pytest.raises(ValueError, match="not directly after"):
        fold_model(nn.Sequential(conv, nn.ReLU(), _bn(4), nn.Conv2d(4, 2, 3, padding=1).double()).eval(),
                   strict=True)
    with pytest.raises(ValueError, match="activation_shape"):
        bn_traffic_saved((4,))

    class Untraceable(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(ValueError, match="fx-traceable"):
        fold_model(Untraceable().eval())


# --- planted failures: each check must fail on a wrong formula -------------------------------


def _fold_params_no_eps(weight, bias, mean, var, eps, gamma, beta, sqrt=torch.sqrt):
    scale = gamma / sqrt(var)
    return weight * scale, (bias - mean) * scale + beta


def _fold_params_no_mean(weight, bias, mean, var, eps, gamma, beta, sqrt=torch.sqrt):
    scale = gamma / sqrt(var + eps)
    return weight * scale, bias * scale + beta


def _fold_params_no_sqrt(weight, bias, mean, var, eps, gamma, beta, sqrt=torch.sqrt):
    scale = gamma / (var + eps)
    return weight * scale, (bias - mean) * scale + beta


def _fold_params_no_beta(weight, bias, mean, var, eps, gamma, beta, sqrt=torch.sqrt):
    scale = gamma / sqrt(var + eps)
    return weight * scale, (bias - mean) * scale


_ORIG_CHAN = fold.output_channel_of_weight
_ORIG_WIDTH = fold.border_band_width
_ORIG_TRAFFIC = fold.bn_traffic_saved
_ORIG_FOLD_CONV_BN = fold.fold_conv_bn
_ORIG_FOLD_BN_CONV = fold.fold_bn_conv
_ORIG_PREACT = fold.fold_preact


def _chan_axis1_ignoring_groups(kind, shape, groups=1):
    """torch's belief: the output channel of a transposed weight is simply axis 1."""
    if kind == "transpose":
        return np.repeat(np.arange(int(shape[1]))[None, :], int(shape[0]), axis=0)
    return _ORIG_CHAN(kind, shape, groups)


def _chan_axis1_for_conv(kind, shape, groups=1):
    """Wrong axis: the per-channel scale applied along weight axis 1 (the input channels)."""
    if kind == "conv":
        return np.repeat(np.arange(int(shape[1]))[None, :], int(shape[0]), axis=0)
    return _ORIG_CHAN(kind, shape, groups)


def _chan_within_group(kind, shape, groups=1):
    """Wrong for groups > 1: a conv's output channel counted within its group (o mod C_out/g)."""
    if kind == "conv":
        per_group = int(shape[0]) // groups
        return np.repeat((np.arange(int(shape[0])) % per_group)[:, None], int(shape[1]), axis=1)
    return _ORIG_CHAN(kind, shape, groups)


def _input_chan_ignoring_groups(kind, shape, groups):
    c_out, per_group_in = int(shape[0]), int(shape[1])
    return np.repeat(np.arange(per_group_in)[None, :], c_out, axis=0)


def _band_width_floor(size, kernel_size, stride=1, padding=0, dilation=1):
    lead, trail = _ORIG_WIDTH(size, kernel_size, stride, padding, dilation)
    return padding // stride, trail


def _band_mask_axis0_everywhere(size, k, s, p, d):
    """Wrong: the band computed with axis 0's kernel, stride, padding and dilation on every axis."""
    nd = len(size)
    return _ORIG_MASK(size, (k[0],) * nd, (s[0],) * nd, (p[0],) * nd, (d[0],) * nd)


_ORIG_MASK = fold.border_band_mask


def _fold_bn_conv_forgets_bn(bn, conv, *, exact=True):
    import copy

    return copy.deepcopy(conv)


def _traffic_read_only(activation_shape, bytes_per_element=4, conv_has_bias=False, bias_channels=None):
    return (_ORIG_TRAFFIC(activation_shape, bytes_per_element, conv_has_bias, bias_channels)
            - int(np.prod(activation_shape)) * bytes_per_element)


def _traffic_bias_always_added(activation_shape, bytes_per_element=4, conv_has_bias=False, bias_channels=None):
    """Wrong: counts the added bias even when the conv already had one."""
    return _ORIG_TRAFFIC(activation_shape, bytes_per_element, False, bias_channels)


def _traffic_bias_on_bn_channels(activation_shape, bytes_per_element=4, conv_has_bias=False, bias_channels=None):
    """Wrong for BN → conv: the added bias counted with the BN's channels, not the conv's outputs."""
    return _ORIG_TRAFFIC(activation_shape, bytes_per_element, conv_has_bias, None)


def _scale_shift_no_eps(bn):
    """Wrong: s = γ/√σ², ε ignored."""
    fold._check_bn(bn)
    mean, var = bn.running_mean.detach(), bn.running_var.detach()
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var)
    return scale, beta - mean * scale


def _reset(original, attr, value):
    """A fold that rebuilds the layer but forgets ``attr`` (set to its default ``value(layer)``)."""

    def wrong(*args, **kwargs):
        out = original(*args, **kwargs)
        if hasattr(out, attr):
            setattr(out, attr, value(out))
        return out

    return wrong


def _ones(m):
    return (1,) * (m.weight.dim() - 2)


def _zeros(m):
    return (0,) * (m.weight.dim() - 2)


def _fold_conv_bn_drops_bias(layer, bn):
    import copy

    layer = copy.deepcopy(layer)
    layer.bias = None
    return _ORIG_FOLD_CONV_BN(layer, bn)


def _fold_conv_bn_2d_only(layer, bn):
    """Wrong: only 2-D convs are folded; others come back with the BN dropped."""
    import copy

    if layer.weight.dim() != 4:
        return copy.deepcopy(layer)
    return _ORIG_FOLD_CONV_BN(layer, bn)


def _fold_conv_bn_skips_non_affine(layer, bn):
    """Wrong: a BN without γ, β taken for the identity ("nothing to fold")."""
    import copy

    if not bn.affine:
        return copy.deepcopy(layer)
    return _ORIG_FOLD_CONV_BN(layer, bn)


def _fold_bn_conv_2d_only(bn, conv, *, exact=True):
    """Wrong: only 2-D convs are folded; others come back with the BN dropped."""
    import copy

    if conv.weight.dim() != 4:
        return copy.deepcopy(conv)
    return _ORIG_FOLD_BN_CONV(bn, conv, exact=exact)


def _preact_2d_only(prev, bn, conv):
    """Wrong: only 2-D layers are folded; others come back with the BN dropped."""
    import copy

    if conv.weight.dim() != 4:
        return copy.deepcopy(prev), copy.deepcopy(conv)
    return _ORIG_PREACT(prev, bn, conv)


def _preact_refusing_zero_padding(prev, bn, conv):
    """Wrong rule: refuses zero padding as BN → conv must (but only the scale crosses this conv)."""
    if not fold.bn_conv_exact(conv):
        raise ValueError("zero padding")
    return _ORIG_PREACT(prev, bn, conv)


_NO_EPS_FOLD = {"convbook.fold:fold_params": _fold_params_no_eps}
_NO_EPS_SHIFT = {"convbook.fold:bn_scale_shift": _scale_shift_no_eps}


PLANTS = [
    Plant("bn.fold-symbolic", "ε left out", _NO_EPS_FOLD, parameter="eps"),
    Plant("bn.fold-symbolic", "input channel ignores groups",
          {"convbook.fold:_input_channel_of_weight": _input_chan_ignoring_groups}, parameter="groups"),
    Plant("bn.fold-conv", "μ left out of the bias", {"convbook.fold:fold_params": _fold_params_no_mean}),
    Plant("bn.fold-conv", "eps ignored", _NO_EPS_FOLD, parameter="eps"),
    Plant("bn.fold-conv", "output channel counted within its group",
          {"convbook.fold:output_channel_of_weight": _chan_within_group}, parameter="groups"),
    Plant("bn.fold-conv", "stride forgotten", {"convbook.fold:fold_conv_bn": _reset(_ORIG_FOLD_CONV_BN, "stride", _ones)},
          parameter="stride"),
    Plant("bn.fold-conv", "padding mode forgotten",
          {"convbook.fold:fold_conv_bn": _reset(_ORIG_FOLD_CONV_BN, "padding_mode", lambda m: "zeros")},
          parameter="padding_mode"),
    Plant("bn.fold-conv", "dilation forgotten",
          {"convbook.fold:fold_conv_bn": _reset(_ORIG_FOLD_CONV_BN, "dilation", _ones)}, parameter="dilation"),
    Plant("bn.fold-conv", "conv bias dropped", {"convbook.fold:fold_conv_bn": _fold_conv_bn_drops_bias},
          parameter="bias"),
    Plant("bn.fold-conv", "only 2-D convs folded", {"convbook.fold:fold_conv_bn": _fold_conv_bn_2d_only},
          parameter="dimension"),
    Plant("bn.fold-conv", "BN without affine parameters taken for the identity",
          {"convbook.fold:fold_conv_bn": _fold_conv_bn_skips_non_affine}, parameter="affine"),
    Plant("bn.fold-transpose", "scale on axis 1 ignoring groups",
          {"convbook.fold:output_channel_of_weight": _chan_axis1_ignoring_groups}, parameter="groups"),
    Plant("bn.fold-transpose", "eps ignored", _NO_EPS_FOLD, parameter="eps"),
    Plant("bn.fold-transpose", "stride forgotten",
          {"convbook.fold:fold_conv_bn": _reset(_ORIG_FOLD_CONV_BN, "stride", _ones)}, parameter="stride"),
    Plant("bn.fold-transpose", "output padding forgotten",
          {"convbook.fold:fold_conv_bn": _reset(_ORIG_FOLD_CONV_BN, "output_padding", _zeros)},
          parameter="output_padding"),
    Plant("bn.fold-transpose", "dilation forgotten",
          {"convbook.fold:fold_conv_bn": _reset(_ORIG_FOLD_CONV_BN, "dilation", _ones)}, parameter="dilation"),
    Plant("bn.fold-transpose", "only 2-D layers folded", {"convbook.fold:fold_conv_bn": _fold_conv_bn_2d_only},
          parameter="dimension"),
    Plant("bn.fold-linear", "variance instead of standard deviation", {"convbook.fold:fold_params": _fold_params_no_sqrt}),
    Plant("bn.fold-linear", "eps ignored", _NO_EPS_FOLD, parameter="eps"),
    Plant("bn.fold-linear", "layer bias dropped", {"convbook.fold:fold_conv_bn": _fold_conv_bn_drops_bias},
          parameter="bias"),
    Plant("bn.fold-bn-conv-exact", "input channel ignores groups",
          {"convbook.fold:_input_channel_of_weight": _input_chan_ignoring_groups}, parameter="groups"),
    Plant("bn.fold-bn-conv-exact", "eps ignored", _NO_EPS_SHIFT, parameter="eps"),
    Plant("bn.fold-bn-conv-exact", "padding mode forgotten",
          {"convbook.fold:fold_bn_conv": _reset(_ORIG_FOLD_BN_CONV, "padding_mode", lambda m: "zeros")},
          parameter="padding_mode"),
    Plant("bn.fold-bn-conv-exact", "stride forgotten",
          {"convbook.fold:fold_bn_conv": _reset(_ORIG_FOLD_BN_CONV, "stride", _ones)}, parameter="stride"),
    Plant("bn.fold-bn-conv-exact", "dilation forgotten",
          {"convbook.fold:fold_bn_conv": _reset(_ORIG_FOLD_BN_CONV, "dilation", _ones)}, parameter="dilation"),
    Plant("bn.fold-bn-conv-exact", "only 2-D convs folded", {"convbook.fold:fold_bn_conv": _fold_bn_conv_2d_only},
          parameter="dimension"),
    Plant("bn.fold-bn-conv-border", "band width ⌊p/s⌋ instead of ⌈p/s⌉",
          {"convbook.fold:border_band_width": _band_width_floor}),
    Plant("bn.fold-bn-conv-border", "band predicted empty",
          {"convbook.fold:border_band_mask": lambda size, k, s, p, d: np.zeros(
              [(n + 2 * pj - dj * (kj - 1) - 1) // sj + 1 for n, kj, sj, pj, dj in zip(size, k, s, p, d)], dtype=bool)}),
    Plant("bn.fold-bn-conv-border", "band from axis 0's parameters on every axis",
          {"convbook.fold:border_band_mask": _band_mask_axis0_everywhere}, parameter="per-axis sizes"),
    Plant("bn.fold-bn-conv-border", "eps ignored", _NO_EPS_SHIFT, parameter="eps"),
    Plant("bn.fuse-eval-agreement", "β left out", {"convbook.fold:fold_params": _fold_params_no_beta}),
    Plant("bn.fuse-eval-agreement", "eps ignored", _NO_EPS_FOLD, parameter="eps"),
    Plant("bn.fuse-eval-agreement", "output channel counted within its group",
          {"convbook.fold:output_channel_of_weight": _chan_within_group}, parameter="groups"),
    Plant("bn.fuse-eval-gaps", "BN→conv returns the conv unchanged", {"convbook.fold:fold_bn_conv": _fold_bn_conv_forgets_bn}),
    Plant("bn.fuse-eval-gaps", "eps ignored", _NO_EPS_FOLD, parameter="eps"),
    Plant("bn.fold-model", "BN→conv folded through zero padding", {"convbook.fold:bn_conv_exact": lambda conv: True},
          parameter="padding_mode"),
    Plant("bn.fold-model", "eps ignored", _NO_EPS_FOLD, parameter="eps"),
    Plant("bn.fold-model", "shared and tied layers folded",
          {"convbook.fold:_exclusive_reason": lambda calls, attr_reads, target: None}, parameter="shared modules"),
    Plant("bn.fold-preact", "naive fold through the ReLU", {"convbook.fold:fold_preact": fold.naive_preact_fold}),
    Plant("bn.fold-preact", "sign of s ignored", {"convbook.fold:_require_positive_scale": lambda s: None},
          parameter="sign of s"),
    Plant("bn.fold-preact", "eps ignored", _NO_EPS_SHIFT, parameter="eps"),
    Plant("bn.fold-preact", "input channel ignores groups",
          {"convbook.fold:_input_channel_of_weight": _input_chan_ignoring_groups}, parameter="groups"),
    Plant("bn.fold-preact", "zero padding refused", {"convbook.fold:fold_preact": _preact_refusing_zero_padding},
          parameter="padding_mode"),
    Plant("bn.fold-preact", "only 2-D layers folded", {"convbook.fold:fold_preact": _preact_2d_only},
          parameter="dimension"),
    Plant("bn.refuse-bad-input", "no BN checks", {"convbook.fold:_check_bn": lambda bn: None}),
    Plant("bn.traffic-saved", "only the write counted", {"convbook.fold:bn_traffic_saved": _traffic_read_only}),
    Plant("bn.traffic-saved", "bias counted as added though the conv had one",
          {"convbook.fold:bn_traffic_saved": _traffic_bias_always_added}, parameter="conv bias"),
    Plant("bn.traffic-saved", "BN → conv: added bias counted on the BN's channels",
          {"convbook.fold:bn_traffic_saved": _traffic_bias_on_bn_channels}, parameter="fold order"),
    Plant("bn.fold-model-resnet50", "β left out", {"convbook.fold:fold_params": _fold_params_no_beta}),
    Plant("bn.fold-model-resnet50", "eps ignored", _NO_EPS_FOLD, parameter="eps"),
    Plant("bn.fold-model-mobilenets", "scale on the input-channel axis",
          {"convbook.fold:output_channel_of_weight": _chan_axis1_for_conv}),
    Plant("bn.fold-model-mobilenets", "eps ignored", _NO_EPS_FOLD, parameter="eps"),
]

test_planted_failure = planted_failure_test(PLANTS)


def test_plot_border_error_band_count():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = fold.plot_border_error(8, 3, 1)
    # a 3x3 kernel with padding 1 on 8x8: the outer frame of 28 outputs reads padding
    assert axes[1].get_title() == "predicted band: 28 of 64 outputs"
    plt.close("all")


def test_derivations_have_the_derived_coefficients():
    import sympy as sp

    d = fold.derive_conv_bn_fold(2)
    s = d["gamma"] / sp.sqrt(d["var"] + d["eps"])
    assert all(sp.simplify(wa - w * s) == 0 for wa, w in zip(d["weights"], d["w"]))
    assert sp.simplify(d["bias"] - ((d["b"] - d["mu"]) * s + d["beta"])) == 0
    e = fold.derive_bn_conv_fold(2)
    assert e["weights"] == [w * si for w, si in zip(e["w"], e["s"])]
    assert sp.expand(e["bias"] - e["b"] - sum(w * t for w, t in zip(e["w"], e["t"]))) == 0


# --- fold decisions come from the data flow of the run (convbook.graph) ----------------------


def test_review_folds_exactly_what_fold_decisions_decides_on_the_claim_architectures():
    """One set of rules: review's plan and Review.fold() are fold_decisions', chains and refusals included."""
    from convbook.graph import trace
    from convbook.review import fold_plan, review

    seen = {"chain": 0, "read": 0}
    for case in range(fold.N_SMALL_MODELS):
        model, n_left, shape = fold._small_model(case)
        model = fold._randomised_small_model(model.double().eval(), fold.generator(700 + case), "cpu")
        ours = fold.fold_decisions(model, shape, linear_bn=True)
        plan = fold_plan(trace(model, shape))
        assert plan["folded"] == ours.folded and dict(plan["left"]) == ours.unfolded, case
        assert plan["categories"] == ours.categories and set(ours.categories) == set(ours.unfolded), case
        assert len(ours.unfolded) == n_left, (case, ours.unfolded)
        report = review(model, shape).fold()
        assert {bn for _, bn, _ in report.folded} == {bn for bn, _, _ in ours.folded}, case
        assert report.max_rel_error <= 1e-10 and report.bns_after == n_left, case
        layers = [layer for _, layer, _ in ours.folded]
        seen["chain"] += sum(layers.count(x) == 2 for x in set(layers))
        seen["read"] += sum("also read" in why for why in ours.unfolded.values())
    assert seen["chain"] >= 4 and seen["read"] >= 1, seen


def test_fold_decisions_categories_and_bad_category():
    report = fold.fold_decisions(_randomised(nn.Sequential(nn.Conv2d(3, 3, 3), nn.ReLU(), nn.BatchNorm2d(3),
                                                           nn.Conv2d(3, 2, 3, padding=1))), (1, 3, 8, 8))
    assert report.folded == [] and report.categories == {"2": "zero-padding"}
    assert "zero padding" in report.unfolded["2"]
    with pytest.raises(ValueError, match="category must be one of"):
        report.leave("2", "because", "no reason")


def test_fold_decisions_list_a_bn_that_never_runs_and_a_bn_subclass():
    class Act(nn.BatchNorm2d):
        def forward(self, x):
            return torch.relu(super().forward(x))

    class Spare(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.unused = nn.Conv2d(3, 4, 1), Act(4), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x))

    model = _randomised(Spare())
    report = fold.fold_decisions(model, (1, 3, 4, 4))
    assert report.folded == []
    assert report.categories == {"bn": "bn-forward-replaced", "unused": "never-called"}
    model.bn = _randomised(nn.BatchNorm2d(4))  # torch.fx cannot trace BatchNorm's forward in a subclass
    folded = fold_model(model)
    assert folded.fold_report.folded == [("bn", "conv", "conv-bn")]
    assert folded.fold_report.categories == {"unused": "never-called"}
    x = _x(2, 3, 4, 4)
    with torch.no_grad():
        assert _rel(folded(x), model(x)) <= 1e-12


def test_fold_model_keeps_a_bn_whose_layer_output_is_also_returned():
    class AlsoReturned(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y), y

    model = _randomised(AlsoReturned())
    folded = fold_model(model)
    assert folded.fold_report.folded == [] and "also read elsewhere" in folded.fold_report.unfolded["bn"]
    x = _x(2, 3, 5, 5)
    with torch.no_grad():
        assert all(_rel(a, b) <= 1e-12 for a, b in zip(folded(x), model(x)))


def test_fold_model_refuses_tied_modules_and_functional_reads():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)
            self.b.weight = self.a.weight  # tied: folding a BN into b would change a
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            return self.a(x) + self.bn(self.b(x))

    model = _randomised(Tied())
    report = fold_model(model).fold_report
    assert report.folded == [] and "also read" in report.unfolded["bn"]
    x = _x(2, 3, 4, 4)
    with torch.no_grad():
        assert _rel(fold_model(model)(x), model(x)) <= 1e-12


def test_fold_decisions_read_models_fx_cannot_trace():
    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
            self.bn2, self.conv2 = nn.BatchNorm2d(4), nn.Conv2d(4, 2, 3, padding=1)

        def forward(self, x):
            y = self.bn(self.conv(x))
            return self.conv2(self.bn2(y)) if y.sum() > -1e30 else y

    report = fold.fold_decisions(_randomised(Untraceable()), (2, 3, 6, 6))
    assert report.folded == [("bn", "conv", "conv-bn")]
    assert "zero padding" in report.unfolded["bn2"]
    with pytest.raises(ValueError, match="fx-traceable"):
        fold_model(_randomised(Untraceable()))
