"""convbook.review on the public architectures of ``tests/zoo.py``, every figure against a reference.

For every zoo model:

1. ``params`` == ``sum(p.numel() for p in model.parameters())`` (unique parameters);
2. every conv / transposed conv / linear call: output shape and MACs == forward hooks on a real
   float64 run, MACs computed here from the hooked shapes and the module's attributes (the rows
   found both from the call records and from the JSON by their ``torch.nn`` base class); the total
   == ``FlopCounterMode`` FLOPs / 2 on the same float64 run (which also sees the LSTM's and the
   attention's matrix products), per module == FlopCounterMode's per-module count, and the split
   by kind sums to the total;
3. receptive fields of the last conv call and a middle one (and the model output when it is a
   map): the exact input span of consecutive central output units == the support of the input
   gradient of that unit (autograd on float64, positive weights, max pooling replaced by average
   pooling over the same window, ReLUs made leaky so that no connection is hidden), and the
   printed size == that span on an input large enough not to clip it; where the review prints no
   field, its note says "whole input" and the gradient support is the whole input, or (ViT) says
   plainly that the field is not tracked; for nine encoder-decoder, segmentation, GAN, recurrent
   and text-recognition models, every conv call's central unit likewise;
4. ``fold()``: the folded copy == the model in float64 (relative error < 1e-10), every BN of the
   model is folded or left with a reason;
5. ``to_markdown()``, ``to_text()`` and ``to_json()`` run, the JSON round-trips to the same figures;

and the CLI reviews a zoo model from its file.
"""

from __future__ import annotations

import json
import math
import sys
from fractions import Fraction
from pathlib import Path

import itertools
import pytest
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode
import torch.nn.functional as F

import convbook.review as R
from convbook.graph import copy_model  # deepcopy that also copes with the hook-based weight_norm
from convbook.__main__ import main as cli_main

sys.path.insert(0, str(Path(__file__).parent))
from zoo import ZOO  # noqa: E402

torch.set_num_threads(1)

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONVTS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
MAC_MODULES = CONVS + CONVTS + (nn.Linear,)

#: models whose chosen rows the review may leave "not tracked" (a reshape mixes the spatial axes).
NOT_TRACKED_OK = {"vit"}
#: (model, spatial axis) whose input size the model fixes (CRNN pools the text-line height to 1,
#: a generator reads a 1×1 latent map), so a field along it may be clipped by the border: there
#: only the clipped span is compared.
FIXED_AXES = {("crnn", 0), ("resize-conv-g", 0), ("resize-conv-g", 1)}  # and a generator's 1×1 latent map


def build(name: str, seed: int = 0) -> tuple[nn.Module, tuple, tuple]:
    """The zoo model in eval mode with non-trivial BN statistics, its input shape and its field input shape."""
    factory, shape, big = ZOO[name]
    torch.manual_seed(seed)
    model = factory()
    gen = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            c = m.num_features
            if m.running_mean is not None:
                m.running_mean.copy_(torch.randn(c, generator=gen))
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            if m.weight is not None:
                m.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.data.copy_(torch.randn(c, generator=gen))
    return model.eval(), shape, big


@pytest.fixture(scope="module")
def reviews():
    out = {}
    for name in ZOO:
        model, shape, big = build(name)
        out[name] = (model, shape, big, R.review(model, shape, name=name))
    return out


# ============================================================================ references
def expected_macs(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Independent MAC formulas from hooked shapes: a conv output element is one dot product of length
    C_in/g·Πk; a transposed conv scatters each input element to C_out/g·Πk outputs; a linear output
    element is a dot product of length in_features."""
    if isinstance(module, CONVTS):
        return x.numel() * (module.out_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, CONVS):
        return y.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    return y.numel() * module.in_features


def hooked_calls(model: nn.Module, shape) -> list[tuple[str, tuple, int]]:
    """(name, output shape, MACs) of every conv/convT/linear call, by forward hooks on a float64 run."""
    m = copy_model(model).double().eval()
    names = {mod: n for n, mod in m.named_modules()}
    seen = []

    def hook(mod, args, out):
        seen.append((names[mod], tuple(out.shape), expected_macs(mod, args[0], out)))

    hooks = [mod.register_forward_hook(hook) for mod in m.modules() if isinstance(mod, MAC_MODULES)]
    try:
        with torch.no_grad():
            m(torch.randn(shape, dtype=torch.float64))
    finally:
        for h in hooks:
            h.remove()
    return seen


def flop_counts(model: nn.Module, shape) -> dict[str, int]:
    """FlopCounterMode FLOPs per module path on a float64 run (float64 avoids the fused LSTM kernel)."""
    m = copy_model(model).double().eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m(torch.randn(shape, dtype=torch.float64))
    return {k: sum(v.values()) for k, v in fc.get_flop_counts().items()}


_MAXPOOLS = {nn.MaxPool1d: nn.AvgPool1d, nn.MaxPool2d: nn.AvgPool2d, nn.MaxPool3d: nn.AvgPool3d}
_ADAPTIVE_MAX = {nn.AdaptiveMaxPool1d: nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool2d: nn.AdaptiveAvgPool2d,
                 nn.AdaptiveMaxPool3d: nn.AdaptiveAvgPool3d}


def positive_copy(model: nn.Module) -> nn.Module:
    """A float64 copy with every parameter positive (scaled by fan-in), BN statistics (0, 1), and max
    pooling replaced by average pooling over the same windows (every window element then gets gradient).
    ReLUs are made leaky while the gradient is measured (see :class:`LeakyRelu`)."""
    m = copy_model(model).double().eval()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in m.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.copy_((torch.rand(p.shape, generator=gen, dtype=p.dtype) + 0.1) / fan_in)
        for mod in m.modules():
            if isinstance(mod, _BatchNorm) and mod.running_mean is not None:
                mod.running_mean.zero_()
                mod.running_var.fill_(1.0)
    for parent in list(m.modules()):
        for key, child in list(parent._modules.items()):
            if type(child) in _MAXPOOLS:
                parent._modules[key] = _MAXPOOLS[type(child)](child.kernel_size, child.stride, child.padding,
                                                              ceil_mode=child.ceil_mode)
            elif type(child) in _ADAPTIVE_MAX:
                parent._modules[key] = _ADAPTIVE_MAX[type(child)](child.output_size)
    return m


class LeakyRelu(TorchFunctionMode):
    """Every ReLU becomes a leaky ReLU (slope 0.1) during the gradient measurement: the field is which
    inputs a unit is connected to, and a ReLU that happens to be off at this input would hide a connection."""

    RELUS = {F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.RELUS:
            inplace = func in (torch.relu_, torch.Tensor.relu_) or kwargs.get("inplace", False) or (
                len(args) > 1 and args[1] is True)
            return F.leaky_relu(args[0], 0.1, inplace=bool(inplace))
        return func(*args, **kwargs)


def gradient_support(model: nn.Module, shape, module_name: str | None, occurrence: int, unit,
                     channel_sum: bool = False) -> list[tuple[int, int]]:
    """Per spatial axis, the first and last input position with a non-zero gradient of output unit
    ``(0, 0, *unit)`` (of the sum over channels at ``unit`` with ``channel_sum``) of the
    ``occurrence``-th call of ``module_name`` (the model output for ``None``)."""
    captured = []
    handle = None
    if module_name is not None:
        handle = dict(model.named_modules())[module_name].register_forward_hook(
            lambda _m, _i, o: captured.append(o))
    gen = torch.Generator().manual_seed(5)
    x = (torch.rand(shape, generator=gen, dtype=torch.float64) + 0.5).requires_grad_(True)
    try:
        with LeakyRelu():
            out = model(x)
    finally:
        if handle is not None:
            handle.remove()
    if module_name is not None:
        out = captured[occurrence]
    while not isinstance(out, torch.Tensor):  # a dict (torchvision segmentation) or tuple: its first output
        out = next(iter(out.values())) if isinstance(out, dict) else out[0]
    (out[(0, 0, *unit)] if channel_sum is False else out[(0, slice(None), *unit)].sum()).backward()
    g = x.grad[0].abs().sum(0)
    nz = g.nonzero()
    assert len(nz), "no input gradient at all"
    return [(int(nz[:, a].min()), int(nz[:, a].max())) for a in range(g.dim())]


def field_rows(rev: R.Review) -> list[R.Layer]:
    """The rows whose fields are checked: a middle conv call, the last conv call, the output if it is a map."""
    convs = [r for r in rev.layers if isinstance(rev.graph.calls[r.index].module, CONVS + CONVTS)]
    rows = [convs[len(convs) // 2], convs[-1]]
    nd = len(rev.input_shape) - 2
    for src in rev.graph.output_sources:
        if src is not None and src >= 0 and len(rev.layers[src].output_shape or ()) == nd + 2:
            rows.append(rev.layers[src])
    out = []
    for r in rows:
        if r.index not in {o.index for o in out}:
            out.append(r)
    return out


# ============================================================================ tests
NAMES = list(ZOO)


def test_zoo_is_large_enough():
    assert len(ZOO) >= 14


@pytest.mark.parametrize("name", NAMES)
def test_params_are_the_unique_parameters(reviews, name):
    model, _, _, rev = reviews[name]
    assert rev.params == sum(p.numel() for p in model.parameters())
    assert rev.params_used == rev.params  # every zoo model reads all its parameters


@pytest.mark.parametrize("name", NAMES)
def test_conv_linear_calls_shapes_and_macs_match_hooks(reviews, name):
    model, shape, _, rev = reviews[name]
    mine = [(r.name, r.output_shape, r.macs) for r in rev.layers
            if isinstance(rev.graph.calls[r.index].module, MAC_MODULES)]
    assert mine == hooked_calls(model, shape)
    # the same rows from the JSON alone, by the torch.nn base class each row names
    bases = {m.__name__ for m in MAC_MODULES}
    rows = json.loads(rev.to_json())["layers"]
    assert [(d["name"], tuple(d["output_shape"]), d["macs"]) for d in rows if d["base"] in bases] == mine


@pytest.mark.parametrize("name", NAMES)
def test_macs_match_flop_counter(reviews, name):
    model, shape, _, rev = reviews[name]
    fc = flop_counts(model, shape)
    assert 2 * rev.macs == fc["Global"]
    by_kind = rev.macs_by_kind()
    assert sum(by_kind.values()) == rev.macs
    conv_linear = sum(expected for _, _, expected in hooked_calls(model, shape))
    assert by_kind["convolution"] + by_kind["linear"] >= conv_linear  # plus functional convs/linears
    assert by_kind["recurrent"] == sum(r.macs for r in rev.layers
                                       if isinstance(rev.graph.calls[r.index].module, (nn.RNNBase, nn.RNNCellBase)))
    root = type(model).__name__
    by_name: dict[str, int] = {}
    for r in rev.layers:
        m = rev.graph.calls[r.index].module
        if isinstance(m, MAC_MODULES + (nn.LSTM,)):
            by_name[r.name] = by_name.get(r.name, 0) + r.macs
    assert by_name
    for n, macs in by_name.items():
        assert 2 * macs == fc[f"{root}.{n}"], n


@pytest.mark.parametrize("name", NAMES)
def test_receptive_fields_match_autograd(reviews, name):
    model, _, big, _ = reviews[name]
    rev = R.review(model, big)
    fields = R.receptive_fields(rev.graph)
    pos = positive_copy(model)
    checked = 0
    for row in field_rows(rev):  # at least the last conv call and a middle one
        call = rev.graph.calls[row.index]
        module_name = call.name if call.is_module else None
        occurrence = sum(1 for c in rev.graph.calls[:row.index] if c.is_module and c.name == call.name)
        if module_name is None:
            assert row.index in rev.graph.output_sources
        out_spatial = row.output_shape[2:]
        if row.receptive_field is None:
            note = row.field_note
            if note.startswith("whole input"):
                unit = tuple(n // 2 for n in out_spatial)
                # after a normalisation over the map a ReLU may zero channel 0: sum over the channels
                span = gradient_support(pos, big, module_name, occurrence, unit, channel_sum=True)
                assert span == [(0, n - 1) for n in big[2:]], (row.name, note)
                checked += 1
            elif len(big) == 2:  # a generator fed a latent vector: no pixels to have a field in
                assert note.startswith("no receptive field: the input") and "no spatial axes" in note
                checked += 1
            else:
                assert name in NOT_TRACKED_OK and note.startswith("not tracked"), (row.name, note)
            continue
        axes, _ = fields[row.index]
        assert [s for s, _ in row.receptive_field] == [f.size for f in axes]
        assert [j for _, j in row.receptive_field] == [f.jump for f in axes]
        # periodic fields: the central period's phases (at most 2 per axis in 3-D, 4 otherwise);
        # table fields (branches with different jumps joined): the central unit and the next one
        periods = [1 if f.n else f.period for f in axes]
        phases = [range(min(q, 2 if len(axes) > 2 else 4, n - n // 2) if not f.n else min(2, n - n // 2))
                  for q, f, n in zip(periods, axes, out_spatial)]
        sizes_seen = [0] * len(axes)
        for phase in itertools.product(*phases):
            unit = tuple(n // 2 + p for n, p in zip(out_spatial, phase))  # consecutive units cover the phases
            span = gradient_support(pos, big, module_name, occurrence, unit)
            theory = [f.at(u) for f, u in zip(axes, unit)]
            clipped = [(max(lo, 0), min(hi, n - 1)) for (lo, hi), n in zip(theory, big[2:])]
            assert span == clipped, (row.name, unit, span, theory)
            for a, ((lo, hi), n) in enumerate(zip(theory, big[2:])):
                if (name, a) in FIXED_AXES:
                    continue
                assert lo >= 0 and hi <= n - 1, f"{row.name}: enlarge the field input ({theory})"
                if not axes[a].n or unit[a] == out_spatial[a] // 2:
                    sizes_seen[a] = max(sizes_seen[a], hi - lo + 1)
        for a, f in enumerate(axes):
            # every phase measured (or the central unit of a table): the printed size is that span
            if (f.n or len(phases[a]) == f.period) and (name, a) not in FIXED_AXES:
                assert sizes_seen[a] == row.receptive_field[a][0], row.name
        checked += 1
    rows = field_rows(rev)
    assert checked >= min(2, len(rows)) - (1 if name in NOT_TRACKED_OK else 0) and checked >= 1


@pytest.mark.parametrize("name", NAMES)
def test_fold_matches_model_in_float64(reviews, name):
    model, shape, _, rev = reviews[name]
    report = rev.fold()
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        ref = R._flat(copy_model(model).double().eval()(x))
        got = R._flat(report.model_float64(x))
    assert len(ref) == len(got)
    for a, b in zip(ref, got):
        assert ((a - b).abs().max() / a.abs().max()).item() < 1e-10
    n_bn = sum(isinstance(m, _BatchNorm) for m in model.modules())  # every BN of the model, called or not
    assert len(report.folded) + len(report.left) == n_bn
    assert report.bns_after == len(report.left)
    assert all(why.strip() for _, why in report.left)


@pytest.mark.parametrize("name", NAMES)
def test_reports_render_and_json_round_trips(reviews, name):
    _, _, _, rev = reviews[name]
    md = rev.to_markdown()
    assert md.startswith(f"### Review of `{name}`") and "| # | call |" in md
    assert len([ln for ln in md.splitlines() if ln.startswith("| ") and ln[2].isdigit()]) == len(rev.table())
    assert rev.to_text()
    data = json.loads(rev.to_json())
    assert data == json.loads(json.dumps(rev.to_dict()))
    assert data["summary"]["params"] == rev.params and data["summary"]["macs"] == rev.macs
    assert len(data["layers"]) == len(rev.layers)
    for row, d in zip(rev.layers, data["layers"]):
        assert d["macs"] == row.macs and d["params"] == row.params
        assert (d["output_shape"] is None) == (row.output_shape is None)
        if row.receptive_field is None:
            assert d["receptive_field"] is None and d["field_note"] == row.field_note
        else:
            assert [(s, Fraction(j)) for s, j in d["receptive_field"]] == list(row.receptive_field)


def test_cli_reviews_a_zoo_model(capsys):
    zoo_file = Path(__file__).parent / "zoo.py"
    assert cli_main(["review", f"{zoo_file}:mobilenetv3", "--input", "1,3,32,32", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    model, _, _ = build("mobilenetv3")
    rev = R.review(model, (1, 3, 32, 32))
    assert data["summary"]["params"] == sum(p.numel() for p in model.parameters()) == rev.params
    assert data["summary"]["macs"] == rev.macs
    assert [d["name"] for d in data["layers"]] == [r.name for r in rev.layers]


#: the kinds of network a review is most often asked about: every conv row of these is checked
EVERY_ROW = ["efficientnet-timm", "deeplabv3plus-no-pool", "unet-milesial-bilinear", "pix2pix-unet", "recurrent-conv",
             "crnn", "patchgan-bn", "hrnet", "unet-valid"]


@pytest.mark.parametrize("name", EVERY_ROW)
def test_every_conv_row_field_matches_autograd(reviews, name):
    """Every call of every conv / transposed conv: the exact span of its central unit == the autograd
    support (clipped by the border), or, for a field printed as the whole input, the support is the
    whole input."""
    model, _, big, _ = reviews[name]
    rev = R.review(model, big)
    fields = R.receptive_fields(rev.graph)
    pos = positive_copy(model)
    checked = 0
    for row in rev.layers:
        call = rev.graph.calls[row.index]
        if not isinstance(call.module, CONVS + CONVTS):
            continue
        occurrence = sum(1 for c in rev.graph.calls[:row.index] if c.is_module and c.name == call.name)
        unit = tuple(n // 2 for n in row.output_shape[2:])
        if row.receptive_field is None:
            assert row.field_note.startswith("whole input"), (row.name, row.field_note)
            span = gradient_support(pos, big, call.name, occurrence, unit, channel_sum=True)
            assert span == [(0, n - 1) for n in big[2:]], row.name
        else:
            span = gradient_support(pos, big, call.name, occurrence, unit)
            theory = [f.at(u) for f, u in zip(fields[row.index][0], unit)]
            assert span == [(max(lo, 0), min(hi, n - 1)) for (lo, hi), n in zip(theory, big[2:])], row.name
        checked += 1
    assert checked >= 4


def _walker_models() -> dict:
    """The six architectures of tests/test_walkers.py (pre-activation, shared module, squeeze-excitation,
    skip concatenation, a wrapper torch.fx cannot trace, depthwise-separable), randomised as there."""
    import tests.test_walkers as W

    return {f"walkers-{i}": (W._model(make), shape) for (make, shape), i in zip(W.ARCHS, W.IDS)}


def _fold_agreement(model: nn.Module, shape, rev: R.Review) -> str:
    """Assert that Review.fold() and fold_model fold the same BNs, leave the rest for the same kind of reason,
    and that both folded copies equal the model in float64; returns how fold_model was compared."""
    from convbook.fold import fold_decisions, fold_model

    report = rev.fold()
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    ref_model = copy_model(model, "cpu", torch.float64).eval()
    with torch.no_grad():
        ref = R._flat(ref_model(x))

    def same_as_model(out) -> None:
        got = R._flat(out)
        assert len(got) == len(ref)
        for a, b in zip(ref, got):
            assert ((a - b).abs().max() / a.abs().max().clamp_min(1e-300)).item() < 1e-10

    with torch.no_grad():
        same_as_model(report.model_float64(x))
    review_folded = {bn for _, bn, _ in report.folded}
    assert set(report.categories) == {bn for bn, _ in report.left}
    try:
        folded = fold_model(ref_model, example_input=x)  # example_input: Linear → BN allowed, as in review
    except ValueError as err:
        assert "fx-traceable" in str(err)  # review folds by replacing modules; compare with the decisions
        decided = fold_decisions(ref_model, shape, linear_bn=True)
        assert {bn for bn, _, _ in decided.folded} == review_folded
        assert decided.categories == report.categories
        return "decisions"
    fr = folded.fold_report
    assert {bn for bn, _, _ in fr.folded} == review_folded
    assert fr.categories == report.categories
    assert fr.unfolded == dict(report.left)
    with torch.no_grad():
        same_as_model(folded(x))
    return "fold_model"


@pytest.mark.parametrize("name", NAMES)
def test_review_fold_agrees_with_fold_model(reviews, name):
    """Same set of folded BNs, same reason category for every BN left, both copies == the model (float64)."""
    model, shape, _, rev = reviews[name]
    _fold_agreement(model, shape, rev)


def test_review_fold_agrees_with_fold_model_on_the_walker_models():
    how = {name: _fold_agreement(model, shape, R.review(model, shape))
           for name, (model, shape) in _walker_models().items()}
    assert how["walkers-untraceable"] == "decisions" and list(how.values()).count("fold_model") == 5, how
