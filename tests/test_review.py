"""convbook.review on architectures the book does not use, against independent references.

References: ``model.parameters()`` for unique parameters; forward hooks (run here, on the real
model) for every conv/convT/linear output shape; ``torch.utils.flop_counter.FlopCounterMode``
for MACs (per module and in total; an ``LSTMCell`` loop for the LSTM, whose fused CPU kernel
FlopCounterMode does not see); autograd for receptive fields (gradient support of one output
unit on an all-ones input with positive weights, max-pooling replaced by average pooling with
the same window so every window element gets gradient); the model itself in float64 for the fold.
"""

from __future__ import annotations

import copy
from fractions import Fraction
import time

import numpy as np
import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.flop_counter import FlopCounterMode

import convbook.review as R
from convbook.__main__ import main as cli_main
from convbook.claims import get_claim
from convbook.fold import fold_model
from convbook.models import resnet50

torch.set_num_threads(1)


# ============================================================================ architectures
class PreActBlock(nn.Module):
    """Pre-activation residual block (BN → ReLU → conv, twice); strided with a 1×1 projection."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if stride != 1 or c_in != c_out else None

    def forward(self, x):
        o = F.relu(self.bn1(x))
        short = self.shortcut(o) if self.shortcut is not None else x
        o = self.conv1(o)
        o = self.conv2(F.relu(self.bn2(o)))
        return o + short


class PreActNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.block1 = PreActBlock(16, 16)
        self.block2 = PreActBlock(16, 32, stride=2)
        self.bn = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.block2(self.block1(self.stem(x)))
        x = F.relu(self.bn(x))
        return self.fc(x.mean(dim=(2, 3)))


class SharedNet(nn.Module):
    """A recurrent conv block: one conv module called three times, a layer-scale γ held by the model."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.step = nn.Conv2d(8, 8, 3, padding=1)
        self.step_bn = nn.BatchNorm2d(8)
        self.gamma = nn.Parameter(torch.full((1, 8, 1, 1), 0.5))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        for _ in range(3):
            x = x + self.gamma * F.relu(self.step_bn(self.step(x)))
        return self.head(x)


class SE(nn.Module):
    def __init__(self, c: int, r: int = 4):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.fc2 = nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(self.pool(x)))))


class InvertedResidualSE(nn.Module):
    def __init__(self, c: int, expand: int = 4):
        super().__init__()
        h = c * expand
        self.expand = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6())
        self.se = SE(h)
        self.project = nn.Sequential(nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.project(self.se(self.dw(self.expand(x))))


class LayerScaleBlock(nn.Module):
    """ConvNeXt-style: depthwise 7×7, LayerNorm over channels (channels-last), MLP, γ, residual."""

    def __init__(self, c: int = 16):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.fc1 = nn.Linear(c, 4 * c)
        self.fc2 = nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(1e-1 * torch.ones(c))

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


def conv_bn_relu(c_in, c_out, k=3, **kw):
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False, **kw), nn.BatchNorm2d(c_out), nn.ReLU())


class UNet(nn.Module):
    def __init__(self, c: int = 8):
        super().__init__()
        self.enc1, self.enc2, self.mid = conv_bn_relu(3, c), conv_bn_relu(c, 2 * c), conv_bn_relu(2 * c, 4 * c)
        self.pool = nn.MaxPool2d(2)
        self.up2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)
        self.dec2 = conv_bn_relu(4 * c, 2 * c)
        self.up1 = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        self.dec1 = conv_bn_relu(2 * c, c)
        self.out = nn.Conv2d(c, 2, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        m = self.mid(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.out(d1)


def dcgan_generator(z: int = 16, k: int = 4) -> nn.Sequential:
    p = 1 if k == 4 else 0
    return nn.Sequential(
        nn.ConvTranspose2d(z, 64, 4, 1, 0, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.ConvTranspose2d(64, 32, k, 2, p, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.ConvTranspose2d(32, 3, k, 2, p, bias=False), nn.Tanh())


def dcgan_discriminator() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 32, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
        nn.Conv2d(32, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.LeakyReLU(0.2),
        nn.Conv2d(64, 1, 4, 1, 0, bias=False), nn.Sigmoid())


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: parallel dilated 3×3 branches, a 1×1 and a global-pooling branch."""

    def __init__(self, c_in: int = 8, c: int = 8, rates=(2, 4, 6), image_pool: bool = True):
        super().__init__()
        self.branches = nn.ModuleList([conv_bn_relu(c_in, c, 1)] + [
            nn.Sequential(nn.Conv2d(c_in, c, 3, padding=r, dilation=r, bias=False), nn.BatchNorm2d(c), nn.ReLU())
            for r in rates])
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c_in, c, 1)) if image_pool else None
        n = len(self.branches) + (1 if image_pool else 0)
        self.project = conv_bn_relu(n * c, c, 1)

    def forward(self, x):
        outs = [b(x) for b in self.branches]
        if self.image_pool is not None:
            outs.append(F.interpolate(self.image_pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False))
        return self.project(torch.cat(outs, dim=1))


def gridding_stack(dilations, kernels=None) -> nn.Sequential:
    layers, c = [], 3
    for i, d in enumerate(dilations):
        layers += [nn.Conv2d(c, 8, kernels[i] if kernels else 3, dilation=d), nn.BatchNorm2d(8), nn.ReLU()]
        c = 8
    return nn.Sequential(*layers)


def same_even() -> nn.Sequential:
    """padding='same' with an even kernel; a BN → conv pair without padding and one with zero padding."""
    return nn.Sequential(nn.Conv2d(3, 8, 4, padding="same"), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.BatchNorm2d(8), nn.Conv2d(8, 8, 1), nn.ReLU(),
                         nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, padding=1))


class ControlFlow(nn.Module):
    """A wrapper with Python control flow on tensor values: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.refine = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        if x.shape[-1] > 16:
            x = F.avg_pool2d(x, 2)
        x = self.inner(x)
        steps = 2 if float(x.mean()) > -1e9 else 1
        for _ in range(steps):
            x = torch.relu(self.refine(x))
        return x


class LSTMHead(nn.Module):
    """Conv features read left to right by an LSTM (text-line recognisers)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((1, None)))
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        f = self.conv(x).squeeze(2).permute(0, 2, 1)
        y, (h, c) = self.lstm(f)
        return self.fc(y)


ARCHS = {
    "preact": (PreActNet, (2, 3, 16, 16)),
    "shared": (SharedNet, (1, 3, 12, 12)),
    "inverted-se": (lambda: InvertedResidualSE(8), (1, 8, 10, 10)),
    "layer-scale": (LayerScaleBlock, (1, 16, 12, 12)),
    "unet": (UNet, (1, 3, 16, 16)),
    "dcgan-g": (dcgan_generator, (2, 16, 1, 1)),
    "dcgan-g-k3": (lambda: dcgan_generator(k=3), (1, 16, 1, 1)),
    "dcgan-d": (dcgan_discriminator, (2, 3, 16, 16)),
    "aspp": (ASPP, (1, 8, 12, 12)),
    "grid-222": (lambda: gridding_stack((2, 2, 2)), (1, 3, 20, 20)),
    "grid-124": (lambda: gridding_stack((1, 2, 4)), (1, 3, 20, 20)),
    "grid-14": (lambda: gridding_stack((1, 4)), (1, 3, 20, 20)),
    "same-even": (same_even, (1, 3, 9, 9)),
    "control-flow": (ControlFlow, (1, 3, 20, 20)),
    "lstm-head": (LSTMHead, (2, 1, 8, 12)),
}

MAC_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


def build(name: str, seed: int = 0) -> tuple[nn.Module, tuple]:
    factory, shape = ARCHS[name]
    torch.manual_seed(seed)
    model = factory()
    gen = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen))
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=gen))
    return model.eval(), shape


@pytest.fixture(scope="module")
def reviews():
    out = {}
    for name in ARCHS:
        model, shape = build(name)
        out[name] = (model, shape, R.review(model, shape, name=name))
    return out


# ============================================================================ references
def hook_shapes(model: nn.Module, shape) -> list[tuple[str, tuple]]:
    """(name, output shape) of every conv/convT/linear call, by forward hooks on a real run."""
    names = {m: n for n, m in model.named_modules()}
    seen = []
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.append((names[mod], tuple(o.shape))))
             for m in model.modules() if isinstance(m, MAC_MODULES)]
    try:
        with torch.no_grad():
            model(torch.randn(shape))
    finally:
        for h in hooks:
            h.remove()
    return seen


def flop_counter(model: nn.Module, shape) -> dict[str, int]:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.randn(shape))
    return {k: sum(v.values()) for k, v in fc.get_flop_counts().items()}


def lstm_reference_macs(lstm: nn.LSTM, n: int, t: int) -> int:
    """MACs of the same LSTM run as an LSTMCell loop, counted by FlopCounterMode (which sees its matmuls)."""
    cell = nn.LSTMCell(lstm.input_size, lstm.hidden_size)
    h = c = torch.zeros(n, lstm.hidden_size)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        for _ in range(t):
            h, c = cell(torch.randn(n, lstm.input_size), (h, c))
    return fc.get_total_flops() // 2


def positive_copy(model: nn.Module) -> nn.Module:
    """A float64 copy with every weight positive and max pooling replaced by average pooling."""
    m = copy.deepcopy(model).double().eval()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in m.parameters():  # positive, scaled by the fan-in so that sigmoid/tanh do not saturate
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.copy_((torch.rand(p.shape, generator=gen, dtype=p.dtype) + 0.1) / fan_in)
        for mod in m.modules():
            if isinstance(mod, _BatchNorm):
                mod.running_mean.zero_()
                mod.running_var.fill_(1.0)
    for parent in list(m.modules()):
        for key, child in list(parent._modules.items()):
            if isinstance(child, nn.MaxPool2d):
                parent._modules[key] = nn.AvgPool2d(child.kernel_size, child.stride, child.padding)
    return m


def autograd_field(model: nn.Module, shape, module_name: str | None = None, phases: int = 2) -> list[int]:
    """Largest extent, per spatial axis, of the input gradient support of one output unit (of the
    model, or of the first call of ``module_name``), over ``phases`` consecutive central units per axis."""
    m = positive_copy(model)
    captured = {}
    if module_name is not None:
        mod = dict(m.named_modules())[module_name]
        h = mod.register_forward_hook(lambda _m, _i, o: captured.setdefault("out", o))
    nd = len(shape) - 2
    best = [0] * nd
    for phase in np.ndindex(*([phases] * nd)):
        x = torch.ones(shape, dtype=torch.float64, requires_grad=True)
        captured.clear()
        out = m(x)
        if module_name is not None:
            out = captured["out"]
        idx = tuple(n // 2 + p for n, p in zip(out.shape[2:], phase))
        out[(0, 0, *idx)].backward()
        support = np.argwhere(x.grad[0].abs().sum(0).numpy() > 0)
        for a in range(nd):
            best[a] = max(best[a], int(support[:, a].max() - support[:, a].min() + 1))
    if module_name is not None:
        h.remove()
    return best


# ============================================================================ tests
@pytest.mark.parametrize("name", list(ARCHS))
def test_unique_params_match_model_parameters(reviews, name):
    model, shape, rev = reviews[name]
    assert rev.params == sum(p.numel() for p in model.parameters())
    assert rev.params_used == rev.params


@pytest.mark.parametrize("name", list(ARCHS))
def test_conv_linear_calls_and_shapes_match_hooks(reviews, name):
    model, shape, rev = reviews[name]
    mine = [(c.name, c.output_shape) for c in rev.graph.calls if isinstance(c.module, MAC_MODULES)]
    assert mine == hook_shapes(model, shape)


@pytest.mark.parametrize("name", list(ARCHS))
def test_macs_match_flop_counter_per_module_and_in_total(reviews, name):
    model, shape, rev = reviews[name]
    fc = flop_counter(model, shape)
    root = type(model).__name__
    extra = 0
    for c in rev.graph.calls:
        if isinstance(c.module, nn.LSTM):
            extra += lstm_reference_macs(c.module, c.input_shape[0], c.input_shape[1])
    assert rev.macs == fc.get("Global", 0) // 2 + extra
    by_name: dict[str, int] = {}
    for r in rev.layers:
        if isinstance(rev.graph.calls[r.index].module, MAC_MODULES):
            by_name[r.name] = by_name.get(r.name, 0) + r.macs
    for n, macs in by_name.items():
        assert 2 * macs == fc[f"{root}.{n}"], n


FIELD_CASES = [
    ("preact", "block2.conv2"), ("preact", "block2.conv1"), ("unet", None), ("unet", "mid.0"), ("unet", "dec2.0"),
    ("dcgan-d", None), ("dcgan-d", "3"), ("grid-222", None), ("grid-124", None), ("grid-14", None), ("same-even", None),
    ("shared", None), ("aspp", "branches.3.0"), ("control-flow", None), ("layer-scale", "dw"), ("layer-scale", None),
]


@pytest.mark.parametrize("name,module_name", FIELD_CASES)
def test_receptive_field_matches_autograd(reviews, name, module_name):
    model, shape, rev = reviews[name]
    big = (1, shape[1], 48, 48)
    rev_big = R.review(model, big)
    if module_name is None:
        call = rev_big.layers[rev_big.graph.output_sources[0]]
    else:
        call = [r for r in rev_big.layers if r.name == module_name][0]
    assert call.receptive_field is not None, call.field_note
    sizes = [s for s, _ in call.receptive_field]
    assert sizes == autograd_field(model, big, module_name)


def test_global_fields_are_named(reviews):
    _, _, aspp = reviews["aspp"]
    out = aspp.layers[aspp.graph.output_sources[0]]
    assert out.receptive_field is None and out.field_note == "whole input: image_pool.0 to 1×1"
    _, _, se = reviews["inverted-se"]
    out = se.layers[se.graph.output_sources[0]]
    assert out.receptive_field is None and out.field_note.startswith("whole input: squeeze-excitation gate se.mul")
    assert "se.pool" in out.field_note
    # without the image-pooling branch the pyramid has a finite field: the largest rate wins
    model = ASPP(image_pool=False).eval()
    rev = R.review(model, (1, 8, 40, 40))
    field = rev.layers[rev.graph.output_sources[0]].receptive_field
    assert [s for s, _ in field] == [13, 13] == autograd_field(model, (1, 8, 40, 40))


def test_transposed_and_upsampling_jumps():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, stride=2), nn.ConvTranspose2d(1, 1, 3, stride=2),
                          nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(1, 1, 3))
    rev = R.review(model, (1, 1, 41, 41))
    assert [r.receptive_field[0][1] for r in rev.layers] == [2, 1, Fraction(1, 2), Fraction(1, 2)]
    for r in rev.layers:
        assert [s for s, _ in r.receptive_field] == autograd_field(model, (1, 1, 41, 41), r.name, phases=4), r.name
    # the transposed conv's field depends on the phase: even outputs read two units, odd ones one
    field = R.receptive_fields(rev.graph)[1][0][0]
    assert (field.jump, field.lo, field.hi) == (1, (-2, 0), (2, 2))


@pytest.mark.parametrize("name", [n for n in ARCHS if n not in {"dcgan-g", "dcgan-g-k3"}] + ["dcgan-g"])
def test_fold_matches_model_in_float64(reviews, name):
    model, shape, rev = reviews[name]
    report = rev.fold()
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        ref = copy.deepcopy(model).double().eval()(x)
        got = report.model_float64(x)
    assert ((ref - got).abs().max() / ref.abs().max()).item() < 1e-10
    n_bn = sum(isinstance(m, _BatchNorm) for m in model.modules())  # every BN of the model, called or not
    assert len(report.folded) + len(report.left) == n_bn
    assert all(why for _, why in report.left)
    assert model.training is False and all(isinstance(m, _BatchNorm) for m in model.modules()
                                           if type(m).__name__.startswith("BatchNorm"))


def test_fold_counts_and_reasons(reviews):
    unet = reviews["unet"][2].fold()
    assert len(unet.folded) == 5 and not unet.left and unet.bns_after == 0
    preact = reviews["preact"][2].fold()  # conv1 → bn2 folds; BN → ReLU → conv does not
    assert [(a, b) for a, b, _ in preact.folded] == [("block1.conv1", "block1.bn2"), ("block2.conv1", "block2.bn2")]
    assert [bn for bn, _ in preact.left] == ["block1.bn1", "block2.bn1", "bn"]
    assert "also read elsewhere" in preact.left[0][1] and "feeds relu" in preact.left[1][1]
    assert preact.categories == dict.fromkeys(["block1.bn1", "block2.bn1", "bn"], "no-exclusive-neighbour")
    shared = reviews["shared"][2].fold()
    assert shared.folded == [] and shared.left == [("step_bn", "the module is called 3 times (one BN, several places)")]
    assert shared.categories == {"step_bn": "bn-called-several-times"}
    same = reviews["same-even"][2].fold()
    assert same.folded == [("0", "1", "conv→BN"), ("4", "3", "BN→conv")]
    assert [bn for bn, _ in same.left] == ["6"] and "zero padding" in same.left[0][1]
    assert same.categories == {"6": "zero-padding"}


def test_fold_refuses_a_conv_whose_output_has_other_readers():
    class TwoReaders(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    rev = R.review(TwoReaders().eval(), (1, 3, 6, 6))
    report = rev.fold()
    assert not report.folded and "also read elsewhere" in report.left[0][1]


def _random_bns(model: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.weight.data.copy_(1 + 0.3 * torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen))
    return model.double().eval()


def test_fold_keeps_a_bn_whose_conv_output_is_also_the_model_output():
    class AlsoReturned(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y), y

    model = _random_bns(AlsoReturned())
    report = R.review(model, (1, 3, 5, 5)).fold()
    assert report.folded == [] and "also read elsewhere" in report.left[0][1]
    assert report.left == list(fold_model(model).fold_report.unfolded.items())


def test_fold_keeps_a_bn_whose_conv_weights_are_read_elsewhere():
    class FunctionalRead(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(self.conv(x)) + F.conv2d(x, self.conv.weight, padding=1)

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.bn = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.a(x) + self.bn(self.b(x))

    for make in (FunctionalRead, Tied):
        model = _random_bns(make())
        report = R.review(model, (1, 3, 5, 5)).fold()
        assert report.folded == [] and "also read" in report.left[0][1], make
        assert report.categories == {"bn": "no-exclusive-neighbour"}
        assert report.left == list(fold_model(model).fold_report.unfolded.items())


def test_fold_folds_both_bns_of_a_bn_conv_bn_chain():
    model = _random_bns(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 5, 3, bias=False), nn.BatchNorm2d(5),
                                      nn.ReLU(), nn.BatchNorm2d(5), nn.Conv2d(5, 2, 1), nn.BatchNorm2d(2)))
    report = R.review(model, (2, 3, 8, 8)).fold()
    assert report.folded == [("1", "0", "BN→conv"), ("1", "2", "conv→BN"), ("5", "4", "BN→conv"),
                             ("5", "6", "conv→BN")]
    assert report.bns_after == 0 and not report.left and report.max_rel_error < 1e-10
    assert {bn for bn, _, _ in fold_model(model).fold_report.folded} == {"0", "2", "4", "6"}
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert ((report.model(x) - model(x)).abs().max() / model(x).abs().max()).item() < 1e-10


def codes(rev) -> dict[str, list]:
    out: dict[str, list] = {}
    for f in rev.findings:
        out.setdefault(f.code, []).append(f)
    return out


def test_findings_cite_existing_claims(reviews):
    for _, _, rev in reviews.values():
        for f in rev.findings:
            if f.claim is not None:
                get_claim(f.claim)  # raises for an unknown id
            else:
                assert f.reference


def test_findings_on_each_hazard(reviews):
    assert "checkerboard" in codes(reviews["dcgan-g-k3"][2])
    assert "checkerboard" not in codes(reviews["dcgan-g"][2])
    grid = codes(reviews["grid-222"][2])["gridding"]
    assert len(grid) == 1 and grid[0].where == ["0", "3", "6"] and grid[0].claim == "dilate.gridding"
    assert "gridding" not in codes(reviews["grid-124"][2])  # 1, 2, 4 reads every offset
    assert "gridding" in codes(reviews["grid-14"][2])  # no common factor, yet {0,1,2} + {0,4,8} misses 3 and 7
    assert "gridding" not in codes(reviews["aspp"][2])  # parallel rates are not a stack
    sub = codes(reviews["preact"][2])["strided-subsample"]
    assert [f.where for f in sub] == [["block2.shortcut"]] and sub[0].claim == "shortcut.gradient-coverage"
    same = codes(reviews["same-even"][2])
    assert same["same-even-kernel"][0].where == ["0"]
    assert "bias-before-bn" in same and same["bias-before-bn"][0].where == ["0"]
    assert "bn-not-folded" in codes(reviews["preact"][2])
    assert "memory-bound" in codes(reviews["inverted-se"][2])  # depthwise and SE convs
    assert "channels-not-multiple-of-8" in codes(reviews["lstm-head"][2])  # fc to 5 classes


# ----------------------------------------------------------------------------- regressions
def test_module_called_three_times_counts_params_once_macs_three_times(reviews):
    model, shape, rev = reviews["shared"]
    steps = [r for r in rev.layers if r.name == "step"]
    assert len(steps) == 3
    assert rev.params == sum(p.numel() for p in model.parameters())  # cost.profile counted `step` 3 times
    assert sum(r.macs for r in steps) == 3 * steps[0].macs == 3 * 8 * 12 * 12 * 8 * 9


def test_non_leaf_parameter_is_counted(reviews):
    model, shape, rev = reviews["layer-scale"]
    assert rev.params == sum(p.numel() for p in model.parameters())
    gamma_calls = [c for c in rev.graph.calls if "gamma" in c.param_names]
    assert len(gamma_calls) == 1 and gamma_calls[0].kind == "mul" and gamma_calls[0].params == 16


def test_same_padding_even_kernel_shapes_and_field(reviews):
    _, _, rev = reviews["same-even"]
    assert rev.layers[0].output_shape == (1, 8, 9, 9)
    assert rev.layers[0].receptive_field == ((4, 1), (4, 1))


def test_tuple_returning_leaf(reviews):
    _, _, rev = reviews["lstm-head"]
    lstm = [c for c in rev.graph.calls if c.kind == "LSTM"][0]
    assert lstm.output_shapes == [(2, 12, 16), (1, 2, 16), (1, 2, 16)]
    fc = [c for c in rev.graph.calls if c.kind == "Linear"][0]
    assert rev.graph.calls[fc.inputs[0]] is lstm or rev.graph.calls[fc.inputs[0]].inputs[0] == lstm.index


def test_control_flow_model_fx_cannot_trace(reviews):
    model, shape, rev = reviews["control-flow"]
    with pytest.raises(Exception):
        torch.fx.symbolic_trace(model)
    assert [r.name for r in rev.layers if r.macs] == ["inner.0", "refine", "refine"]
    assert rev.graph.run_on == "cpu"  # float(x.mean()) needs values: the meta run falls back


def test_counts_set_beside_flop_counter(reviews):
    _, _, rev = reviews["unet"]
    c = rev.counts()
    assert c["flops"] == 2 * c["macs"] == c["flop_counter"]
    assert c["train_step_flops"] == 3 * c["flops"]
    assert c["bn_ops"] > 0 and c["folded_flops"] < c["total_flops"]


def test_markdown_and_json(reviews):
    _, _, rev = reviews["unet"]
    md = rev.to_markdown()
    assert "| # | call |" in md and "`up2`" in md and "receptive field" in md
    import json

    data = json.loads(rev.to_json())
    assert data["summary"]["params"] == rev.params and len(data["layers"]) == len(rev.layers)
    assert data["summary"]["macs"] == rev.macs


def test_input_model_is_not_modified():
    model, shape = build("unet")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rev = R.review(model, shape)
    rev.fold()
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_resnet50_review_is_fast():
    model = resnet50()
    start = time.perf_counter()
    rev = R.review(model, (1, 3, 224, 224))
    assert time.perf_counter() - start < 10
    assert rev.params == 25_557_032
    assert rev.graph.run_on == "meta"
    assert rev.layers[rev.graph.output_sources[0]].receptive_field is None
    shortcuts = codes(rev)["strided-subsample"]
    assert [f.where[0] for f in shortcuts] == [f"layer{i}.0.downsample.0" for i in (2, 3, 4)]


# ----------------------------------------------------------------------------- CLI
def test_cli_review_formats_and_errors(tmp_path, capsys):
    src = tmp_path / "net.py"
    src.write_text("import torch.nn as nn\n"
                   "net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())\n"
                   "class Net(nn.Module):\n"
                   "    def __init__(self):\n"
                   "        super().__init__(); self.c = nn.Conv2d(3, 8, 3)\n"
                   "    def forward(self, x): return self.c(x)\n"
                   "def make(): return Net()\n")
    for name in ("net", "Net", "make"):
        assert cli_main(["review", f"{src}:{name}", "--input", "1,3,10,10"]) == 0
        assert "parameters 224" in capsys.readouterr().out
    assert cli_main(["review", f"{src}:net", "--input", "1,3,10,10", "--format", "json"]) == 0
    import json

    assert json.loads(capsys.readouterr().out)["summary"]["macs"] == 8 * 8 * 8 * 27
    assert cli_main(["review", f"{src}:net", "--input", "1,3,10,10", "--format", "md"]) == 0
    assert "| 0 | `0` | Conv2d" in capsys.readouterr().out
    for args, msg in [([f"{tmp_path}/none.py:net", "--input", "1,3,8,8"], "no such file"),
                      ([f"{src}:nope", "--input", "1,3,8,8"], "has no name 'nope'"),
                      ([f"{src}:net", "--input", "1,4,8,8"], "fails on an input of shape (1, 4, 8, 8)"),
                      ([f"{src}:net", "--input", "1,x,8"], "--input must be")]:
        assert cli_main(["review", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("error:") and msg in err


def test_counter_conventions_transposed_stride_squared():
    rows = {r["probe"]: r for r in R.counter_conventions()}
    convt = rows["transposed 4×4, stride 2"]
    assert convt["review"] == convt["flop_counter"] == 8 * 16 * 16 * 8 * 16  # C_in·H·W · C_out·k²
    for tool in ("thop", "torchinfo"):
        if convt.get(tool) is not None:  # the pinned versions charge s² = 4 times the MACs
            assert convt[tool] == 4 * convt["review"]
    assert rows["conv 3×3, no bias"]["review"] == rows["conv 3×3, no bias"]["flop_counter"]


def test_checkerboard_includes_dilation():
    even = nn.ConvTranspose2d(2, 2, 4, stride=2, dilation=2)  # s | k but gcd(d, s) = 2: some outputs get no tap
    rev = R.review(nn.Sequential(even).eval(), (1, 2, 6, 6))
    assert "checkerboard" in codes(rev)
    rev = R.review(nn.Sequential(nn.ConvTranspose2d(2, 2, 4, stride=2, dilation=3)).eval(), (1, 2, 6, 6))
    assert "checkerboard" not in codes(rev)


def test_fields_through_pixel_shuffle_nearest_upsampling_and_adaptive_pooling():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.PixelShuffle(2), nn.Upsample(scale_factor=3), nn.Conv2d(1, 2, 3),
                          nn.AdaptiveAvgPool2d(7), nn.Conv2d(2, 1, 2))
    shape = (1, 1, 30, 30)
    rev = R.review(model, shape)
    for r in rev.layers:
        assert [s for s, _ in r.receptive_field] == autograd_field(model, shape, r.name, phases=3), r.name


# ----------------------------------------------------------------------------- zoo regressions
def test_partial_spatial_reduction_is_a_window_or_untracked():
    """mean over H with keepdim is a window over the whole axis (checked by autograd); without keepdim
    the field is not tracked; over every spatial axis it is the whole input."""

    class HeightMean(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 2, 3, padding=1)
            self.d = nn.Conv2d(2, 2, (1, 3))

        def forward(self, x):
            return self.d(self.c(x).mean(2, keepdim=True))

    model = HeightMean().eval()
    rev = R.review(model, (1, 1, 12, 30))
    out = rev.layers[rev.graph.output_sources[0]]
    assert [s for s, _ in out.receptive_field][1] == 5 == autograd_field(model, (1, 1, 12, 30), phases=1)[1]
    assert autograd_field(model, (1, 1, 12, 30), phases=1)[0] == 12  # every row
    assert out.receptive_field[0][0] == 14  # rows −1 … 12: the 3×3 conv's padding counts (theoretical field)
    rev = R.review(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(2)), (1, 1, 8, 8))
    assert rev.layers[-1].receptive_field is None and "merges or splits a spatial axis" in rev.layers[-1].field_note


def test_join_with_an_untracked_branch_is_untracked():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x):
            y = self.c(x)
            scrambled = y.flatten(2).flip(-1).view_as(y)  # mixes the spatial axes
            return y + scrambled

    rev = R.review(Mixed(), (1, 1, 6, 6))
    out = rev.layers[rev.graph.output_sources[0]]
    assert out.receptive_field is None and out.field_note.startswith("not tracked past flatten")


def test_attention_einsum_and_cell_macs_match_flop_counter():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(16, 2, batch_first=True)
            self.cell = nn.LSTMCell(16, 8)
            self.w = nn.Parameter(torch.randn(16, 16))

        def forward(self, x):
            y, _ = self.mha(x, x, x)
            y = torch.einsum("bld,de->ble", y, self.w)
            h = c = torch.zeros(x.shape[0], 8, dtype=x.dtype)
            for t in range(x.shape[1]):
                h, c = self.cell(y[:, t], (h, c))
            return h

    model = Attn().double().train()  # grad mode: MultiheadAttention takes the path FlopCounterMode sees
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    with FlopCounterMode(display=False) as fc:
        model(x)
    rev = R.review(model, (2, 5, 16))
    assert rev.macs == fc.get_total_flops() // 2
    assert [r.kind for r in rev.layers if r.macs] == ["MultiheadAttention", "einsum"] + ["LSTMCell"] * 5
    assert "macs-not-counted" not in codes(rev)

    class SDPA(nn.Module):
        def forward(self, q):
            return F.scaled_dot_product_attention(q, q, q)

    class Explicit(nn.Module):
        def forward(self, q):
            return torch.softmax(q @ q.transpose(-2, -1) / 4, -1) @ q

    with FlopCounterMode(display=False) as fc:
        Explicit()(torch.randn(2, 3, 7, 16))
    assert R.review(SDPA(), (2, 3, 7, 16)).macs == fc.get_total_flops() // 2


def test_macs_without_a_rule_are_reported():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(8, 4))

        def forward(self, x):
            return torch.tensordot(x, self.w, dims=1) + torch.einsum("bi,ij,jk->bk", x, self.w, self.w.t()).sum()

    rev = R.review(Odd(), (3, 8))
    found = codes(rev)["macs-not-counted"][0]
    assert found.severity == "warning" and found.where == ["tensordot", "einsum"] and "lower bound" in found.message


def test_subclasses_that_replace_forward():
    """A LayerNorm subclass over channels (torchvision's LayerNorm2d) is traced, not taken for a LayerNorm
    over the map; a BatchNorm subclass that adds its activation is never folded, and says why."""

    class LayerNorm2d(nn.LayerNorm):
        def forward(self, x):
            return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                                self.eps).permute(0, 3, 1, 2)

    class BatchNormAct2d(nn.BatchNorm2d):
        def forward(self, x):
            return F.relu(super().forward(x))

    model = nn.Sequential(nn.Conv2d(3, 4, 3), LayerNorm2d(4), nn.Conv2d(4, 4, 3, bias=False), BatchNormAct2d(4),
                          nn.Conv2d(4, 2, 1)).eval()
    rev = R.review(model, (1, 3, 20, 20))
    out = rev.layers[-1]
    assert [s for s, _ in out.receptive_field] == [5, 5] == autograd_field(model, (1, 3, 20, 20))
    report = rev.fold()
    assert report.folded == [] and "replaces BatchNorm's forward" in report.left[0][1]
    assert [c.kind for c in rev.graph.calls].count("BatchNormAct2d") == 1


def test_fold_through_spectral_and_weight_norm():
    for wrap in (nn.utils.parametrizations.spectral_norm, nn.utils.spectral_norm,
                 nn.utils.parametrizations.weight_norm, nn.utils.weight_norm):
        torch.manual_seed(0)
        model = nn.Sequential(wrap(nn.ConvTranspose2d(8, 4, 4, 2, 1)), nn.BatchNorm2d(4), nn.ReLU(),
                              wrap(nn.Conv2d(4, 4, 3, padding=1)), nn.BatchNorm2d(4)).eval()
        for bn in (model[1], model[4]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 1.5)
        rev = R.review(model, (2, 8, 5, 5))
        assert rev.params == sum(p.numel() for p in model.parameters())
        report = rev.fold()
        assert [(a, b) for a, b, _ in report.folded] == [("0", "1"), ("3", "4")] and report.bns_after == 0
        assert report.max_rel_error < 1e-12
        assert type(model[0]).__name__.startswith(("Parametrized", "ConvTranspose2d"))  # the model is untouched
        with torch.no_grad():
            model(torch.randn(1, 8, 5, 5))  # still runs: its parametrization class was not edited


def test_a_bn_never_called_is_left_with_a_reason():
    class Spare(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.unused = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x))

    report = R.review(Spare().eval(), (1, 3, 8, 8)).fold()
    assert report.folded == [("conv", "bn", "conv→BN")] and report.bns_before == 2 and report.bns_after == 1
    assert report.left == [("unused", "it is never called in the forward pass at this input")]


def test_norms_with_batch_or_running_statistics():
    """A BN without running statistics normalises with batch statistics over the map even in eval mode:
    whole input (autograd agrees); an InstanceNorm with running statistics and a LocalResponseNorm are per position."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False), nn.Conv2d(2, 2, 3)).eval()
    rev = R.review(model, (1, 1, 20, 20))
    assert rev.layers[-1].receptive_field is None
    assert rev.layers[-1].field_note == "whole input: 1 (batch norm with batch statistics over the map)"
    x = torch.rand(1, 1, 20, 20, dtype=torch.float64, requires_grad=True)
    copy.deepcopy(model).double()(x)[0, 0, 9, 9].backward()
    assert bool((x.grad[0, 0] != 0).all())
    inorm = nn.InstanceNorm2d(2, track_running_stats=True)
    for norm in (inorm, nn.LocalResponseNorm(2)):
        rev = R.review(nn.Sequential(nn.Conv2d(1, 2, 3), norm, nn.Conv2d(2, 2, 3)).eval(), (1, 1, 20, 20))
        assert rev.layers[-1].receptive_field == ((5, 1), (5, 1))


def test_unidirectional_lstm_field_grows_from_the_first_step():
    """Step t of a left-to-right LSTM over the columns reads columns 0 … t+1 (3×3 conv): a table field
    whose clipped span equals the autograd support at every step."""
    model, shape = build("lstm-head")
    shape = (1, 1, 8, 12)
    rev = R.review(model, shape)
    fc = [r for r in rev.layers if r.kind == "Linear"][0]
    (field,) = R.receptive_fields(rev.graph)[fc.index][0]
    assert field.n == 12 and fc.receptive_field[0][0] == field.size == 6 + 2 + 1  # central step 6: −1 … 7
    positive = positive_copy(model)
    for t in range(12):
        x = torch.ones(shape, dtype=torch.float64, requires_grad=True)
        positive(x)[0, t, 0].backward()
        cols = torch.nonzero(x.grad[0, 0].abs().sum(0)).flatten()
        lo, hi = field.at(t)
        assert (int(cols.min()), int(cols.max())) == (max(lo, 0), min(hi, 11)), t


def test_area_interpolation_is_adaptive_pooling():
    class Area(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.d = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3)

        def forward(self, x):
            return self.d(F.interpolate(self.c(x), size=(9, 9), mode="area"))

    model = Area().eval()
    rev = R.review(model, (1, 1, 30, 30))
    assert [s for s, _ in rev.layers[-1].receptive_field] == [13, 13] == autograd_field(model, (1, 1, 30, 30), phases=3)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_fractional_scale_factor_maps_by_its_inverse(mode):
    """With a scale factor PyTorch samples output v at v/scale (not v·n_in/n_out): exact spans per unit."""
    model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Upsample(scale_factor=1.5, mode=mode), nn.Conv2d(1, 1, 3)).eval()
    shape = (1, 1, 23, 23)  # 21 → 31 units: 21/31 ≠ 2/3; the last conv gives 29
    rev = R.review(model, shape)
    field = R.receptive_fields(rev.graph)[2][0][0]
    positive = positive_copy(model)
    for u in range(29):
        x = torch.ones(shape, dtype=torch.float64, requires_grad=True)
        positive(x)[0, 0, u, u].backward()
        rows = torch.nonzero(x.grad[0, 0].sum(1)).flatten()
        lo, hi = field.at(u)
        assert (int(rows.min()), int(rows.max())) == (max(lo, 0), min(hi, 22)), u
