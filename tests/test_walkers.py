"""Every model walker is a view of one graph (convbook.graph.trace), so they agree with each other.

Six architectures written here — a pre-activation block, a shared module, squeeze-excitation, a
U-Net-style skip concatenation, a wrapper torch.fx cannot trace, a depthwise-separable stack — are
read by trace_shapes, cost.profile, cost.graph_counts, models.conv_shapes, fold.fold_decisions,
receptive.layers_of and convbook.review; their shapes, parameters, MACs and fold decisions are
compared with each other and with independent references (a real run, FlopCounterMode,
model.parameters(), autograd).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from convbook import cost, fold, models, receptive, shapes
from convbook.graph import trace


class PreAct(nn.Module):
    """Pre-activation residual block with a projection shortcut: BN → ReLU → conv, twice."""

    def __init__(self):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(4), nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.proj = nn.Conv2d(4, 8, 1, stride=2, bias=False)

    def forward(self, x):
        y = F.relu(self.bn1(x))
        return self.proj(y) + self.conv2(F.relu(self.bn2(self.conv1(y))))


class Shared(nn.Module):
    """One conv + BN block called three times (the same weights), then a head."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        for _ in range(3):
            x = self.block(x)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class SqueezeExcite(nn.Module):
    """conv → BN → gate from a global mean (1×1 → ReLU → 1×1 → sigmoid), multiplied back."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.fc1, self.fc2 = nn.Conv2d(8, 2, 1), nn.Conv2d(2, 8, 1)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return y * torch.sigmoid(self.fc2(F.relu(self.fc1(y.mean((2, 3), keepdim=True)))))


class UNetish(nn.Module):
    """Down (strided conv), up (transposed conv), skip concatenation, then a 3×3 conv."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.bn_up = nn.BatchNorm2d(8)
        self.dec = nn.Conv2d(16, 4, 3, padding=1)

    def forward(self, x):
        e = self.enc(x)
        u = self.bn_up(self.up(F.relu(self.down(e))))
        return self.dec(torch.cat([e, u], dim=1))


class Untraceable(nn.Module):
    """A wrapper with Python control flow on the input and a layer-scale γ: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Conv2d(4, 6, 3, padding="same"), nn.BatchNorm2d(6))
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.gamma = nn.Parameter(torch.full((6, 1, 1), 0.5))

    def forward(self, x):
        y = self.inner(x) * self.gamma
        if y.shape[-1] % 2:
            y = self.pool(y)
        return y


class Separable(nn.Sequential):
    """Depthwise-separable stack (MobileNet v1 style): depthwise 3×3 → BN → ReLU → pointwise 1×1 → BN → ReLU."""

    def __init__(self):
        layers, c = [], 4
        for c_out, s in ((8, 1), (16, 2), (16, 1)):
            layers += [nn.Conv2d(c, c, 3, stride=s, padding=1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                       nn.Conv2d(c, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
            c = c_out
        super().__init__(*layers)


ARCHS = [(PreAct, (2, 4, 9, 9)), (Shared, (2, 4, 8, 7)), (SqueezeExcite, (1, 4, 6, 6)), (UNetish, (1, 4, 8, 8)),
         (Untraceable, (2, 4, 7, 7)), (Separable, (1, 4, 10, 10))]
IDS = ["preact", "shared", "squeeze-excite", "unet-skip", "untraceable", "separable"]


def _model(make) -> nn.Module:
    torch.manual_seed(0)
    model = make().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return model


def _hook_shapes(model: nn.Module, shape) -> list[tuple[str, tuple, tuple]]:
    """(name, input, output) of every torch.nn leaf call, by forward hooks on a real run (independent of the graph)."""
    names = {m: n for n, m in model.named_modules()}
    seen = []

    def hook(mod, args, out):
        seen.append((names[mod], tuple(args[0].shape), tuple(out.shape)))

    leaves = [m for m in model.modules() if not list(m.children()) and type(m).__module__.startswith("torch.nn")]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(torch.randn(shape))
    finally:
        for h in handles:
            h.remove()
    return seen


def _flop_counter(model: nn.Module, shape) -> int:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.randn(shape))
    return int(fc.get_total_flops())


@pytest.mark.parametrize("make, shape", ARCHS, ids=IDS)
def test_walkers_agree_on_shapes(make, shape):
    model = _model(make)
    hooked = _hook_shapes(model, shape)
    prof = cost.profile(model, shape)
    assert [(r.name, r.input_shape, r.output_shape) for r in prof.rows] == hooked
    g = trace(model, shape)
    rows = shapes.trace_shapes(model, shape)  # formulas, from the input forward
    assert [s for _, _, s in rows[1:]] == [c.output_shape for c in g.calls]
    module_rows = [s for (_, _, s), c in zip(rows[1:], g.calls) if c.is_module]
    assert module_rows == [o for _, _, o in hooked]
    with torch.no_grad():
        assert rows[-1][2] == tuple(model(torch.randn(shape)).shape)
    convs = models.conv_shapes(model, shape)
    assert [(r["name"], r["input_size"], r["output_size"]) for r in convs] == \
        [(n, i[2:], o[2:]) for n, i, o in hooked if isinstance(model.get_submodule(n), nn.Conv2d)]


@pytest.mark.parametrize("make, shape", ARCHS, ids=IDS)
def test_walkers_agree_on_params_and_macs(make, shape):
    from convbook.review import review

    model = _model(make)
    prof = cost.profile(model, shape)
    flops, nbytes = cost.graph_counts(model, shape)
    rev = review(model, shape)
    assert prof.params == rev.params == sum(p.numel() for p in model.parameters())
    assert 2 * prof.macs == 2 * rev.macs == flops == _flop_counter(model, shape)
    elems = sum(math.prod(r.input_shape) + math.prod(r.output_shape)
                + sum(p.numel() for p in model.get_submodule(r.name).parameters()) for r in prof.rows)
    assert nbytes == 4 * elems
    assert cost.graph_counts(model, shape, torch.float64)[1] == 2 * nbytes


@pytest.mark.parametrize("make, shape", ARCHS, ids=IDS)
def test_fold_decisions_agree_with_review_and_keep_the_output(make, shape):
    from convbook.review import review

    model = _model(make).double()
    decided = fold.fold_decisions(model, shape)
    plan = review(model, shape).graph
    from convbook.review import fold_plan

    plan = fold_plan(plan)
    ours = {(bn, layer) for bn, layer, _ in decided.folded}
    theirs = {(bn, layer) for layer, bn in plan["after"]} | {(bn, conv) for bn, conv in plan["before"]}
    assert ours == theirs
    assert set(decided.unfolded) == {bn for bn, _ in plan["left"]}
    if make is not Untraceable:  # fold_model's rewrite needs torch.fx
        folded = fold.fold_model(model)
        assert {(bn, layer) for bn, layer, _ in folded.fold_report.folded} == ours
        x = torch.randn(shape, dtype=torch.float64)
        with torch.no_grad():
            ref = model(x)
            assert (folded(x) - ref).abs().max() <= 1e-10 * ref.abs().max()


@pytest.mark.parametrize("make, shape", ARCHS, ids=IDS)
def test_receptive_field_is_a_chain_view_or_refers_to_review(make, shape):
    from convbook.review import review

    model = _model(make)
    if make in (Separable, Untraceable):  # chains: the recurrence and review's propagation agree
        last = review(model, shape).layers[-1].receptive_field
        for axis in (0, 1):
            size, jump, _ = receptive.receptive_field(model, axis, input_shape=shape)
            assert (size, jump) == (last[axis][0], last[axis][1])
    elif make is Shared:  # a chain ending in global pooling and a linear head: no field rule for those
        with pytest.raises(ValueError, match="no receptive-field rule for module type Linear"):
            receptive.layers_of(model, input_shape=shape)
        assert receptive.receptive_field(model.block, input_shape=shape) == (3, 1, -1)
    else:  # branches
        with pytest.raises(ValueError, match="not a chain.*convbook.review"):
            receptive.layers_of(model, input_shape=shape)


def test_separable_stack_field_matches_autograd():
    model = _model(Separable).double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.uniform_(0.5, 1.5)
            if isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.fill_(10.0)  # every ReLU stays open: the gradient reaches the whole field
    size, jump, start = receptive.receptive_field(model, 0)
    sup = receptive.gradient_support(model, (1, 4, 24, 24), (5, 5))
    rows = sorted(set(sup[:, 0].tolist()))
    assert (rows[0], rows[-1] - rows[0] + 1) == (start + 5 * jump, size)
