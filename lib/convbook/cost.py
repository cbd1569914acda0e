"""Chapter 4: the cost of a convolution — parameters, multiply-accumulates, memory.

Formulas (per input sample, spatial sizes per axis, ``g`` groups, ``k`` the kernel size
on each axis, ``n_out`` the output size from :func:`convbook.shapes.conv_output_size`):

* parameters of a convolution   ``Π k · (C_in / g) · C_out  (+ C_out with a bias)``
* MACs of a convolution         ``Π n_out · Π k · (C_in / g) · C_out``
  (every tap counted, including taps that fall on the zero padding: a dense kernel does
  them, and this is the convention of ``torch.utils.flop_counter``)
* MACs of a transposed conv.    ``Π n_in · Π k · (C_in / g) · C_out`` — each *input*
  element is scattered through the whole kernel; counting at the output positions instead
  over-counts by about ``Π s``
* linear layer                  params ``C_in C_out + C_out``, MACs ``C_in C_out``
* batch norm (inference)        params ``2C`` (γ, β; the running statistics are buffers),
  one multiply-add per element once folded into a scale and a shift
* pooling                       no MACs; ``Π k`` additions / comparisons per output element

The bias addition is not counted as a MAC (``FlopCounterMode`` does not count it either).
``FlopCounterMode`` reports FLOPs = 2 × MACs for convolutions and matrix products and
nothing for batch norm, pooling or activations.

:func:`profile` reads the calls a model makes from :func:`convbook.graph.trace` (one run on
meta tensors) and applies these formulas call by call; :func:`graph_counts` sums the same
formulas into the FLOPs and compulsory bytes the benchmarks compare against.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np
import sympy as sp
import torch
from torch import nn

from . import models
from .claims import Tally, claim
from .numerics import generator, randint
from .conventions import as_int, as_tuple, resolve_padding, spatial_ndim
from .shapes import conv_output_size

__all__ = [
    "conv_params",
    "conv_macs",
    "conv_out_size",
    "linear_params",
    "linear_macs",
    "bn_params",
    "bn_ops",
    "pool_ops",
    "separable_ratio",
    "LayerCost",
    "Profile",
    "profile",
    "graph_counts",
    "flop_counter_flops",
    "stage_costs",
    "bottleneck_stride_delta",
    "third_party_counts",
    "mobilenet_v1_shares",
    "plot_stage_costs",
    "plot_flops_vs_memory",
    "RESNET_TABLE1_GMACS",
    "TORCHVISION_GFLOPS",
    "MOBILENET_V1_TABLE2",
]

#: He et al. 2016, Table 1, "FLOPs" row (×10⁹ multiply-adds), by depth.
RESNET_TABLE1_GMACS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}

#: torchvision's model documentation, "GFLOPS" column (they are giga-MACs; see the chapter).
TORCHVISION_GFLOPS = {
    "resnet18": 1.81, "resnet34": 3.66, "resnet50": 4.09, "resnet101": 7.80, "resnet152": 11.51,
    "resnext50_32x4d": 4.23, "wide_resnet50_2": 11.40, "mobilenet_v2": 0.30, "vgg16": 15.47,
}

#: Howard et al. 2017, Table 2: (share of mult-adds %, share of parameters %) per layer type.
MOBILENET_V1_TABLE2 = {
    "conv1x1": (94.86, 74.59),
    "depthwise3x3": (3.06, 1.06),
    "conv3x3": (1.19, 0.02),
    "fc": (0.18, 24.33),
}


# --------------------------------------------------------------------------------------
# Per-layer formulas
# --------------------------------------------------------------------------------------


def conv_params(in_channels: int, out_channels: int, kernel_size: int | Sequence[int], groups: int = 1,
                bias: bool = True, ndim: int | None = None) -> int:
    """Parameters of a (transposed) convolution: ``Π k · (C_in/g) · C_out + (C_out if bias)``.

    ``kernel_size`` follows :mod:`convbook.conventions`: an int is the size on every one of
    ``ndim`` spatial axes (default 2, as ``nn.Conv2d(16, 4, 5)`` has a 5×5 kernel), a tuple gives
    one size per axis (its length sets ``ndim``). Rules: channels, kernel sizes, groups ≥ 1;
    ``g`` divides ``C_in`` and ``C_out``. (A transposed convolution's weight is
    ``(C_in, C_out/g, *k)``: the same count.)
    """
    nd = spatial_ndim(kernel_size, ndim=ndim)
    ks = as_tuple(kernel_size, nd, "kernel_size", 1)
    in_channels, out_channels, groups = _channels(in_channels, out_channels, groups)
    return math.prod(ks) * (in_channels // groups) * out_channels + (out_channels if _flag(bias, "bias") else 0)


def conv_out_size(input_size: int | Sequence[int], kernel_size: int | Sequence[int], stride: int | Sequence[int] = 1,
                  padding: int | str | Sequence[int] = 0, dilation: int | Sequence[int] = 1, transposed: bool = False,
                  output_padding: int | Sequence[int] = 0, ndim: int | None = None) -> tuple[int, ...]:
    """Output spatial size, per axis. Direct: ``⌊(n + 2p − d(k−1) − 1)/s⌋ + 1``;
    transposed: ``(n − 1)s − 2p + d(k−1) + output_padding + 1``.

    Per-axis arguments follow :mod:`convbook.conventions`: ``ndim`` is the common length of the
    tuple arguments, else 2; ``padding`` may be ``'valid'`` or ``'same'`` (direct, stride 1)."""
    nd, n, k, s, d, op = _axes(input_size, kernel_size, stride, dilation, output_padding, padding, ndim=ndim)
    if not transposed:
        if isinstance(padding, str):  # 'valid' / 'same': checked once for all axes, then per axis
            resolve_padding(padding, k, s, d, nd)
            return tuple(conv_output_size(n[i], k[i], s[i], padding, d[i]) for i in range(nd))
        p = as_tuple(padding, nd, "padding", 0)
        return tuple(conv_output_size(n[i], k[i], s[i], p[i], d[i]) for i in range(nd))
    p = tuple(left for left, _ in resolve_padding(padding, k, s, d, nd, allow_strings=False))
    out = tuple((n[i] - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1 for i in range(nd))
    if any(o < 1 for o in out):
        raise ValueError(f"transposed convolution output must be >= 1 on every axis, got {out}")
    return out


def conv_macs(in_channels: int, out_channels: int, kernel_size: int | Sequence[int], input_size: int | Sequence[int],
              stride: int | Sequence[int] = 1, padding: int | str | Sequence[int] = 0, dilation: int | Sequence[int] = 1,
              groups: int = 1, transposed: bool = False, output_padding: int | Sequence[int] = 0,
              ndim: int | None = None) -> int:
    """Multiply-accumulates of one (transposed) convolution for ONE input sample.

    Direct: ``Π n_out · Π k · (C_in/g) · C_out``. Depthwise is ``g = C_in = C_out``.
    Transposed: ``Π n_in · Π k · (C_in/g) · C_out`` (each input element times each tap).
    Taps on the padding are counted; the bias is not. Sizes are ints or per-axis tuples
    (:mod:`convbook.conventions`: the length of the tuple arguments sets the number of axes,
    all ints mean ``ndim``, default 2); ``padding`` may be ``'valid'`` or ``'same'``.
    """
    in_channels, out_channels, groups = _channels(in_channels, out_channels, groups)
    nd, n, k, *_ = _axes(input_size, kernel_size, stride, dilation, output_padding, padding, ndim=ndim)
    out = conv_out_size(input_size, kernel_size, stride, padding, dilation, transposed, output_padding, ndim=nd)
    positions = math.prod(n) if _flag(transposed, "transposed") else math.prod(out)
    return positions * math.prod(k) * (in_channels // groups) * out_channels


def linear_params(in_features: int, out_features: int, bias: bool = True) -> int:
    """``C_in · C_out (+ C_out)``."""
    in_features, out_features = _positive(in_features=in_features, out_features=out_features)
    return in_features * out_features + (out_features if _flag(bias, "bias") else 0)


def linear_macs(in_features: int, out_features: int, rows: int = 1) -> int:
    """``rows · C_in · C_out`` (bias additions not counted)."""
    in_features, out_features, rows = _positive(in_features=in_features, out_features=out_features, rows=rows)
    return rows * in_features * out_features


def bn_params(channels: int, affine: bool = True) -> int:
    """``2C`` learnable parameters (γ, β) — running mean and variance are buffers, not parameters."""
    (channels,) = _positive(channels=channels)
    return 2 * channels if _flag(affine, "affine") else 0


def bn_ops(channels: int, spatial_size: int | Sequence[int], ndim: int | None = None) -> int:
    """Inference batch norm: one multiply-add per element, ``C · Π n`` (scale and shift folded).
    An int ``spatial_size`` is the size of each of ``ndim`` axes (default 2)."""
    (channels,) = _positive(channels=channels)
    nd = spatial_ndim(spatial_size, ndim=ndim)
    return channels * math.prod(as_tuple(spatial_size, nd, "spatial_size", 1))


def pool_ops(channels: int, kernel_size: int | Sequence[int], input_size: int | Sequence[int],
             stride: int | Sequence[int] | None = None, padding: int | Sequence[int] = 0,
             ndim: int | None = None) -> int:
    """Pooling: ``C · Π n_out · Π k`` additions (average) or comparisons (max); no MACs.
    ``stride`` defaults to the kernel size (PyTorch's default); per-axis arguments follow
    :mod:`convbook.conventions` (no padding strings: pooling has none)."""
    (channels,) = _positive(channels=channels)
    stride = kernel_size if stride is None else stride
    if isinstance(padding, str):
        resolve_padding(padding, 1, 1, 1, 1, allow_strings=False)
    nd, n, k, *_ = _axes(input_size, kernel_size, stride, 1, 0, padding, ndim=ndim)
    out = conv_out_size(input_size, kernel_size, stride, padding, ndim=nd)
    return channels * math.prod(out) * math.prod(k)


def separable_ratio(c_in: int, c_out: int, k: int) -> Fraction:
    """Cost of a depthwise (k×k) + pointwise (1×1) pair over a standard k×k convolution,
    same padding and stride: ``(k²C_in + C_in C_out) / (k² C_in C_out) = 1/C_out + 1/k²``."""
    c_in, c_out, k = _positive(c_in=c_in, c_out=c_out, k=k)
    return Fraction(1, c_out) + Fraction(1, k * k)


# --------------------------------------------------------------------------------------
# Whole models
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerCost:
    """One row of a :class:`Profile`.

    ``bytes_moved`` is the memory model: input, parameters and output each cross memory
    once, ``bytes_per_element`` each (no cache reuse, no recomputation);
    ``intensity = flops / bytes_moved`` with ``flops = 2·MACs`` for conv/linear,
    ``ops`` for the others.
    """

    name: str
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    macs: int
    ops: int
    activations: int
    bytes_moved: int

    @property
    def flops(self) -> int:
        return 2 * self.macs if self.macs else self.ops

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes_moved if self.bytes_moved else 0.0


@dataclass(frozen=True)
class Profile:
    """Per-layer costs and totals of a model for one input shape."""

    rows: tuple[LayerCost, ...]
    bytes_per_element: int
    extra_params: int = 0
    """Parameters no leaf call accounts for: held by a module with children (a layer-scale γ on
    a block) or by a layer the forward pass never calls."""

    @property
    def params(self) -> int:
        """Every parameter once (``sum(p.numel() for p in model.parameters())``): a layer called
        several times has its parameters in its first row only; plus :attr:`extra_params`."""
        return sum(r.params for r in self.rows) + self.extra_params

    @property
    def macs(self) -> int:
        """Conv + linear multiply-accumulates (what papers call FLOPs or mult-adds)."""
        return sum(r.macs for r in self.rows)

    @property
    def flops(self) -> int:
        """``2 · macs``: the convention of ``torch.utils.flop_counter.FlopCounterMode``."""
        return 2 * self.macs

    @property
    def other_ops(self) -> int:
        """Batch-norm multiply-adds and pooling adds/comparisons (uncounted by FlopCounterMode)."""
        return sum(r.ops for r in self.rows)

    @property
    def activations(self) -> int:
        return sum(r.activations for r in self.rows)

    def by_kind(self) -> dict[str, tuple[int, int]]:
        """``{kind: (params, macs)}``."""
        out: dict[str, tuple[int, int]] = {}
        for r in self.rows:
            p, m = out.get(r.kind, (0, 0))
            out[r.kind] = (p + r.params, m + r.macs)
        return out

    def table(self, max_rows: int | None = None) -> str:
        """Fixed-width per-layer table (integers only) followed by the totals."""
        head = f"{'layer':<24} {'kind':<10} {'output':<18} {'params':>12} {'MACs':>15} {'act. elems':>12} {'FLOP/B':>7}"
        lines = [head, "-" * len(head)]
        rows = self.rows if max_rows is None else self.rows[:max_rows]
        for r in rows:
            lines.append(f"{r.name[:24]:<24} {r.kind:<10} {'×'.join(map(str, r.output_shape)):<18} {r.params:>12,} "
                         f"{r.macs:>15,} {r.activations:>12,} {r.intensity:>7.1f}")
        if max_rows is not None and len(self.rows) > max_rows:
            lines.append(f"... {len(self.rows) - max_rows} more layers")
        lines.append(f"{'total':<24} {'':<10} {'':<18} {self.params:>12,} {self.macs:>15,} {self.activations:>12,}")
        return "\n".join(lines)


def profile(model: nn.Module, input_shape: Sequence[int] = (1, 3, 224, 224), bytes_per_element: int = 4) -> Profile:
    """Per-layer parameters, MACs, other ops, activations and bytes moved for ``model``.

    The rows are the leaf-module calls of :func:`convbook.graph.trace` in execution order (a
    module called k times gives k rows; any model that runs, including ones ``torch.fx``
    cannot trace). Costs then come from the formulas of this module (``conv_macs``,
    ``conv_params``, …), applied to the whole batch ``input_shape[0]``; the graph supplies
    only which layer ran on which input shape. Layers without a rule (activations, dropout,
    LSTM) get zero MACs and ops but their output still counts as activation memory.
    Parameters read outside leaf calls (a layer-scale γ) are :attr:`Profile.extra_params`.
    """
    if len(input_shape) < 2 or any(int(s) < 1 for s in input_shape):
        raise ValueError(f"input_shape must be (N, C, *spatial) with positive sizes, got {tuple(input_shape)}")
    if bytes_per_element < 1:
        raise ValueError(f"bytes_per_element must be >= 1, got {bytes_per_element}")
    shape = tuple(as_int(v, f"input_shape[{j}]", 1) for j, v in enumerate(input_shape))
    records = _trace(model, shape)
    rows, seen = _params_once(model, records, [_cost(name, mod, i, o, bytes_per_element) for name, mod, i, o in records])
    return Profile(tuple(rows), bytes_per_element, _params_outside(model, seen))


def graph_counts(model: nn.Module, x_shape: Sequence[int], dtype: torch.dtype = torch.float32) -> tuple[int, int]:
    """FLOPs and compulsory bytes of ``model`` on one input, summed over its leaf-module calls.

    The calls come from :func:`convbook.graph.trace` (one run on meta tensors; a module called
    k times counts k times). FLOPs are ``2 · MACs`` (``torch.utils.flop_counter``'s convention)
    for every ``Conv1d/2d/3d`` (``Π n_out · Π k · C_in/g · C_out`` per sample, any padding
    including ``'same'``/``'valid'``), every ``ConvTranspose1d/2d/3d`` (``Π n_in · Π k · C_in/g
    · C_out`` per sample) and every ``Linear`` (``rows · in · out``): :func:`conv_macs`,
    :func:`linear_macs`. Bytes: each leaf call reads its first tensor input and its parameters
    and writes its first tensor output once, ``itemsize(dtype)`` bytes each (an LSTM's
    ``(out, (h, c))`` counts ``out``); normalisation, activation and pooling layers move bytes
    but add no FLOPs. Same contract as ``convbook.bench.module_counts``.

    Rules (``ValueError``): ``x_shape`` positive ints; ``dtype`` a floating torch dtype.
    """
    x_shape = tuple(as_int(v, f"x_shape[{j}]", 1) for j, v in enumerate(x_shape))
    if not x_shape:
        raise ValueError("x_shape must have at least one axis")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype, got {dtype!r}")
    itemsize = torch.empty((), dtype=dtype).element_size()
    flops = elems = 0
    for name, mod, i, o in _trace(model, x_shape):
        if isinstance(mod, _CONV + _CONVT):
            transposed = isinstance(mod, _CONVT)
            flops += 2 * i[0] * conv_macs(mod.in_channels, mod.out_channels, tuple(mod.kernel_size), tuple(i[2:]),
                                          tuple(mod.stride), _padding(mod.padding), tuple(mod.dilation), mod.groups,
                                          transposed, tuple(mod.output_padding) if transposed else 0)
        elif isinstance(mod, nn.Linear):
            flops += 2 * linear_macs(mod.in_features, mod.out_features, math.prod(i[:-1]))
        elems += math.prod(i) + sum(p.numel() for p in mod.parameters()) + math.prod(o)
    return int(flops), int(itemsize * elems)


def flop_counter_flops(model: nn.Module, input_shape: Sequence[int] = (1, 3, 224, 224)) -> dict[str, int]:
    """FLOPs by operator from ``torch.utils.flop_counter.FlopCounterMode``, run on a meta copy."""
    from torch.utils.flop_counter import FlopCounterMode

    m = model if models._on_meta(model) else models._meta_copy(model)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        m(torch.empty(*input_shape, device="meta"))
    return {str(k).split(".")[-1]: int(v) for k, v in counter.get_flop_counts()["Global"].items()}


def stage_costs(prof: Profile) -> dict[str, tuple[int, int]]:
    """``{stage: (params, macs)}`` grouping rows by the first component of the layer name, with the
    paper's stage names: the stem (``conv1``, ``bn1``, ``relu``, ``maxpool``) → ``conv1``,
    torchvision's ``layer1`` … ``layer4`` → ``conv2_x`` … ``conv5_x``; other names (``avgpool``,
    ``fc``) are kept."""
    out: dict[str, tuple[int, int]] = {}
    for r in prof.rows:
        top = r.name.split(".")[0]
        if top in ("conv1", "bn1", "relu", "maxpool"):
            stage = "conv1"
        elif top.startswith("layer") and top[5:].isdigit():
            stage = f"conv{int(top[5:]) + 1}_x"
        else:
            stage = top
        p, m = out.get(stage, (0, 0))
        out[stage] = (p + r.params, m + r.macs)
    return out


def bottleneck_stride_delta(layers: Sequence[int] = (3, 4, 6, 3), image: int = 224) -> int:
    """MACs that moving the stride from the first 1×1 to the 3×3 adds to a bottleneck ResNet.

    In a stage with input channels ``C``, bottleneck width ``w`` and output size ``H``, the
    first block's 1×1 runs at ``(2H)²`` instead of ``H²`` positions: ``+3H²·C·w``.
    Stages 2–4 (``C = 256, 512, 1024``; ``w = 128, 256, 512``; ``H = image/8, /16, /32``).
    ``layers`` only fixes which network is meant; the delta does not depend on depth.
    """
    if len(layers) != 4:
        raise ValueError(f"layers must have 4 entries, got {list(layers)}")
    image = as_int(image, "image", 1)
    if image % 32:
        raise ValueError(f"image size must be a multiple of 32, got {image}")
    return sum(3 * (image // (8 * 2**j)) ** 2 * (256 * 2**j) * (128 * 2**j) for j in range(3))


def third_party_counts(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int | None]:
    """What fvcore, ptflops (both backends), thop and torchinfo report for ``model``
    (their "FLOPs"/"MACs" number as returned; ``None`` where the package is missing or fails).
    Runs on real CPU tensors with their warnings and prints silenced."""
    import contextlib
    import io
    import warnings

    x = torch.zeros(*input_shape)
    out: dict[str, int | None] = {}
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        for name, fn in (("fvcore", _fvcore), ("ptflops (pytorch)", lambda m, x: _ptflops(m, x, "pytorch")),
                         ("ptflops (aten)", lambda m, x: _ptflops(m, x, "aten")), ("thop", _thop),
                         ("torchinfo", _torchinfo)):
            try:
                out[name] = int(fn(model, x))
            except Exception:  # noqa: BLE001 — a counter that crashes is reported as None
                out[name] = None
    return out


def plot_stage_costs(prof: Profile, ax=None, title: str = "ResNet-50"):
    """Bars of the share of MACs and of parameters in each stage."""
    import matplotlib.pyplot as plt
    import numpy as np

    st = stage_costs(prof)
    names = list(st)
    p = np.array([st[n][0] for n in names], dtype=float)
    m = np.array([st[n][1] for n in names], dtype=float)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(len(names))
    ax.bar(x - 0.2, 100 * m / m.sum(), 0.4, label=f"MACs ({m.sum() / 1e9:.2f} G)")
    ax.bar(x + 0.2, 100 * p / p.sum(), 0.4, label=f"parameters ({p.sum() / 1e6:.2f} M)")
    ax.set_xticks(x, names)
    ax.set_ylabel("share of total (%)")
    ax.set_title(f"{title}: where the cost sits")
    ax.legend()
    return ax


def plot_flops_vs_memory(prof: Profile, ax=None, title: str = "ResNet-50"):
    """Scatter, one point per conv/linear layer: FLOPs against output activation bytes."""
    import matplotlib.pyplot as plt

    rows = [r for r in prof.rows if r.macs]
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4.5))
    kinds = sorted({r.kind for r in rows})
    for kind in kinds:
        sel = [r for r in rows if r.kind == kind]
        ax.scatter([r.activations * prof.bytes_per_element / 2**20 for r in sel], [r.flops / 1e6 for r in sel],
                   s=18, label=kind)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("output activation (MiB, float32, batch 1)")
    ax.set_ylabel("MFLOPs (2 × MACs)")
    ax.set_title(f"{title}: compute vs activation memory per layer")
    ax.legend()
    return ax


# --------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------


@claim(
    "cost.conv-params",
    title="Parameters of a convolution",
    chapter=4,
    statement="A 1-, 2- or 3-D convolution with kernel k (per axis, sizes that may differ between axes; an int k means k on every axis), C_in inputs, C_out outputs and g groups (any channel multipliers C_in/g, C_out/g, depthwise included) has Π k · C_in C_out / g weights, plus C_out with a bias; the same for its transpose.",
    parameters=("groups", "per-axis kernel", "bias"),
    reference="sum(p.numel()) of nn.Conv1d/2d/3d and nn.ConvTranspose1d/2d/3d",
)
def check_conv_params(device: str = "cpu"):
    """Random 1-D/2-D/3-D, grouped, depthwise, transposed layers built on the meta device."""
    t = Tally()
    gen = generator(401)
    for case in range(150):
        nd = 1 + case % 3
        g = randint(1, 4, gen)
        c_in, c_out = g * randint(1, 6, gen), g * randint(1, 6, gen)
        if case % 10 == 0:  # depthwise
            c_in = c_out = g = randint(1, 32, gen)
        ks = tuple(randint(1, 5, gen) for _ in range(nd))
        bias = bool(case % 2)
        transposed = case % 5 == 1
        cls = [nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d][nd - 1 + 3 * transposed]
        layer = cls(c_in, c_out, ks, groups=g, bias=bias, device="meta")
        t.exact(conv_params(c_in, c_out, ks, groups=g, bias=bias) == models.count_params(layer),
                f"{cls.__name__} {c_in}->{c_out} k={ks} g={g} bias={bias}")
        square = cls(c_in, c_out, ks[0], groups=g, bias=bias, device="meta")  # an int kernel size: every axis
        t.exact(conv_params(c_in, c_out, ks[0], groups=g, bias=bias, ndim=nd) == models.count_params(square),
                f"{cls.__name__} {c_in}->{c_out} k={ks[0]} (int) g={g} bias={bias}")
    for case in range(20):
        a, b, bias = randint(1, 300, gen), randint(1, 300, gen), bool(case % 2)
        t.exact(linear_params(a, b, bias) == models.count_params(nn.Linear(a, b, bias=bias, device="meta")), "linear")
        c = randint(1, 512, gen)
        t.exact(bn_params(c) == models.count_params(nn.BatchNorm2d(c, device="meta")), "batch norm")
    return t.verdict("exact, vs sum(p.numel()) of nn.Conv{1,2,3}d / ConvTranspose / Linear / BatchNorm2d", case_unit="layers")


@claim(
    "cost.conv-macs",
    title="Multiply-accumulates of a convolution",
    chapter=4,
    statement="A 1-, 2- or 3-D convolution costs Π n_out · Π k · C_in C_out / g multiply-accumulates per sample (a transposed one Π n_in · Π k · C_in C_out / g, not scaled by Π s), for every stride, padding (ints or 'same'/'valid'), dilation and groups with channel multipliers, with sizes that differ between axes; FlopCounterMode reports twice that.",
    parameters=("groups", "stride", "padding", "dilation", "padding strings", "per-axis sizes", "transposed"),
    reference="torch.utils.flop_counter.FlopCounterMode",
)
def check_conv_macs(device: str = "cpu"):
    """Random layers on the meta device: conv_macs × batch × 2 vs FlopCounterMode's count."""
    from torch.utils.flop_counter import FlopCounterMode

    t = Tally()
    gen = generator(402)
    for case in range(30):
        nd = 1 + case % 3
        transposed = case % 4 == 3
        g = randint(1, 3, gen)
        c_in, c_out = g * randint(1, 4, gen), g * randint(1, 4, gen)
        if case % 6 == 0:
            c_in = c_out = g = randint(1, 8, gen)
        ks = tuple(randint(1, 4, gen) for _ in range(nd))
        d = tuple(randint(1, 2, gen) for _ in range(nd))
        s = tuple(randint(1, 3, gen) for _ in range(nd))
        p = tuple(randint(0, 2, gen) for _ in range(nd))
        n = tuple(randint(d[i] * (ks[i] - 1) + 1, 9, gen) for i in range(nd))
        batch = randint(1, 3, gen)
        if transposed:
            p = tuple(min(p[i], d[i] * (ks[i] - 1)) for i in range(nd))  # keep the output non-empty
            cls = [nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d][nd - 1]
        else:
            cls = [nn.Conv1d, nn.Conv2d, nn.Conv3d][nd - 1]
        layer = cls(c_in, c_out, ks, stride=s, padding=p, dilation=d, groups=g, device="meta")
        with FlopCounterMode(display=False) as counter:
            layer(torch.empty(batch, c_in, *n, device="meta"))
        ours = batch * conv_macs(c_in, c_out, ks, n, s, p, d, g, transposed=transposed)
        t.exact(2 * ours == counter.get_total_flops(), f"{cls.__name__} {c_in}->{c_out} k={ks} s={s} p={p} d={d} g={g} n={n}")
        if not transposed:  # the padding strings of nn.ConvNd ('same' needs stride 1)
            for pad, st in (("same", 1), ("valid", s)):
                layer = cls(c_in, c_out, ks, stride=st, padding=pad, dilation=d, groups=g, device="meta")
                with FlopCounterMode(display=False) as counter, warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    layer(torch.empty(batch, c_in, *n, device="meta"))
                ours = batch * conv_macs(c_in, c_out, ks, n, st, pad, d, g)
                t.exact(2 * ours == counter.get_total_flops(), f"{cls.__name__} padding={pad!r} k={ks} d={d} n={n}")
    for case in range(4):
        a, b, rows = randint(1, 64, gen), randint(1, 64, gen), randint(1, 5, gen)
        with FlopCounterMode(display=False) as counter:
            nn.Linear(a, b, device="meta")(torch.empty(rows, a, device="meta"))
        t.exact(2 * linear_macs(a, b, rows) == counter.get_total_flops(), "linear")
    return t.verdict("exact, 2 × formula vs torch.utils.flop_counter.FlopCounterMode (meta tensors)", case_unit="layers")


@claim(
    "cost.depthwise-ratio",
    title="Depthwise separable vs standard convolution",
    chapter=4,
    statement="A k×k depthwise convolution followed by a 1×1 pointwise one costs 1/C_out + 1/k² of a standard k×k convolution with the same input, output and stride, for every k, C_in, C_out ≥ 1.",
    parameters=("kernel_size", "C_out"),
    reference="exact ratio of FlopCounterMode counts",
    sympy_role="proven for symbolic sizes",
)
def check_depthwise_ratio(device: str = "cpu"):
    """sympy from the per-layer cost definitions, then exact Fractions of FlopCounterMode counts."""
    from torch.utils.flop_counter import FlopCounterMode

    t = Tally()
    k, m, c_in, c_out = sp.symbols("k M C_in C_out", positive=True)
    standard = m**2 * k**2 * c_in * c_out / 1           # g = 1
    depthwise = m**2 * k**2 * c_in * c_in / c_in        # g = C_in, C_out = C_in
    pointwise = m**2 * 1 * c_in * c_out / 1
    t.exact(sp.simplify((depthwise + pointwise) / standard - (1 / c_out + 1 / k**2)) == 0, "sympy ratio")
    gen = generator(403)
    for _ in range(12):
        ci, co, kk = randint(1, 24, gen), randint(1, 24, gen), randint(1, 5, gen)
        s, n = randint(1, 2, gen), randint(kk, 12, gen)
        pad = (kk - 1) // 2
        counts = []
        for layers in ([nn.Conv2d(ci, co, kk, s, pad, bias=False, device="meta")],
                       [nn.Conv2d(ci, ci, kk, s, pad, groups=ci, bias=False, device="meta"),
                        nn.Conv2d(ci, co, 1, bias=False, device="meta")]):
            with FlopCounterMode(display=False) as counter:
                nn.Sequential(*layers)(torch.empty(1, ci, n, n, device="meta"))
            counts.append(counter.get_total_flops())
        t.exact(Fraction(counts[1], counts[0]) == separable_ratio(ci, co, kk), f"C_in={ci} C_out={co} k={kk}")
    return t.verdict("sympy from the per-layer costs + exact ratio of FlopCounterMode counts", case_unit="cases")


@claim(
    "cost.profile-totals",
    title="A per-layer profile adds up to FlopCounterMode and sum(p.numel())",
    chapter=4,
    statement="Summing the per-layer formulas over ResNet-50, MobileNet v2, VGG-16, a DCGAN-style generator of transposed convolutions and a model that calls one layer three times and holds a layer-scale parameter on a block gives exactly FlopCounterMode's FLOPs (MACs counted per call) and the models' parameter counts sum(p.numel()) (each parameter once).",
    parameters=("bias", "transposed", "repeated calls", "non-leaf parameters"),
    reference="torch.utils.flop_counter.FlopCounterMode and sum(p.numel() for p in model.parameters())",
)
def check_profile_totals(device: str = "cpu"):
    t = Tally()
    cases = [(name, models.build(name), (1, 3, 224, 224)) for name in ("resnet50", "mobilenet_v2", "vgg16")]
    with torch.device("meta"):
        cases += [("dcgan-generator", _dcgan_generator(), (2, 100, 1, 1)), ("repeated-layer", _RepeatedLayer(), (2, 8, 16, 16))]
    for name, m, shape in cases:
        prof = profile(m, shape)
        t.exact(prof.flops == sum(flop_counter_flops(m, shape).values()), f"{name} FLOPs: {prof.flops:,}")
        t.exact(prof.params == models.count_params(m), f"{name} params: {prof.params:,} vs {models.count_params(m):,}")
    return t.verdict("exact, profile() totals vs FlopCounterMode and sum(p.numel())", case_unit="checks")


def _dcgan_generator() -> nn.Module:
    """Radford et al.'s DCGAN generator layout (64×64 output), transposed convolutions with biases."""
    layers: list[nn.Module] = []
    for c_in, c_out, s, p in ((100, 512, 1, 0), (512, 256, 2, 1), (256, 128, 2, 1), (128, 64, 2, 1)):
        layers += [nn.ConvTranspose2d(c_in, c_out, 4, s, p), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.ConvTranspose2d(64, 3, 4, 2, 1), nn.Tanh())


class _RepeatedLayer(nn.Module):
    """One 3×3 'same' convolution applied three times, scaled by a per-channel γ held by this (non-leaf) module."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding="same")
        self.gamma = nn.Parameter(torch.ones(8, 1, 1))
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(3):
            x = torch.relu(self.conv(x)) * self.gamma
        return self.head(x.mean((2, 3)))


def network_complexity(n_layers: int, chain: bool = True) -> tuple[sp.Expr, sp.Expr]:
    """He & Sun's time and space complexity of ``n_layers`` convolutions, built symbolically.

    Layer ``l`` maps ``C_{l-1}`` channels to ``C_l`` with a ``K_l × K_l`` kernel on an ``M_l × M_l``
    output. Each of its ``M_l² C_l`` outputs is a dot product of length ``K_l² C_{l-1}``, so

        time  = Σ_l M_l² K_l² C_{l-1} C_l          (multiply-accumulates)
        space = Σ_l (K_l² C_{l-1} C_l + M_l² C_l)   (weights + output feature maps, in elements)

    ``chain=True`` is He & Sun's plain network, where a layer's input channels are the previous
    layer's outputs ``C[l-1]`` (``C[0]`` is the image's). ``chain=False`` gives each layer its own
    input channel count ``Cin[l]`` — what a network with branches and shortcuts needs.
    Returns the two unevaluated ``sympy.Sum`` over ``l = 1 … n_layers``.
    """
    if isinstance(n_layers, (bool, float, str)) or not isinstance(n_layers, (int, np.integer)) or n_layers < 1:
        raise ValueError(f"n_layers must be an int >= 1, got {n_layers!r}")
    n_layers = int(n_layers)
    M, K, C, Cin = sp.IndexedBase("M"), sp.IndexedBase("K"), sp.IndexedBase("C"), sp.IndexedBase("Cin")
    l = sp.Symbol("l", integer=True, positive=True)
    c_in = C[l - 1] if chain else Cin[l]
    outputs, dot_length = M[l] ** 2 * C[l], K[l] ** 2 * c_in
    time = sp.Sum(outputs * dot_length, (l, 1, n_layers))
    space = sp.Sum(K[l] ** 2 * c_in * C[l] + M[l] ** 2 * C[l], (l, 1, n_layers))
    return time, space


def chain_values(convs: Sequence[dict]) -> dict:
    """Values of ``M[l]``, ``K[l]``, ``C[l]`` and ``Cin[l]`` for :func:`network_complexity` from
    ``models.conv_shapes`` rows (square maps and kernels, groups = 1); ``C[0]`` is the first layer's input."""
    M, K, C, Cin = sp.IndexedBase("M"), sp.IndexedBase("K"), sp.IndexedBase("C"), sp.IndexedBase("Cin")
    values = {C[0]: convs[0]["in_channels"]}
    for l, row in enumerate(convs, start=1):
        (m_h, m_w), (k_h, k_w) = row["output_size"], row["kernel_size"]
        if m_h != m_w or k_h != k_w or row["groups"] != 1:
            raise ValueError(f"layer {row['name']}: the formula assumes square maps and kernels and groups=1")
        values.update({M[l]: m_h, K[l]: k_h, C[l]: row["out_channels"], Cin[l]: row["in_channels"]})
    return values


@claim(
    "cost.network-complexity",
    title="A plain network's cost: Σ M² K² C_{l-1} C_l",
    chapter=4,
    statement="For a plain chain of convolutions (VGG-16) the total multiply-accumulates are exactly Σ_l M_l² K_l² C_{l-1} C_l, and He & Sun's space term Σ_l (K_l² C_{l-1} C_l + M_l² C_l) is exactly the number of convolution weights plus the number of elements of the convolutions' output feature maps (one image, each map counted once); in a network with shortcuts (ResNet-50) the chain reading C_{l-1} = layer l-1's output channels is wrong, and each layer's own input channels must be used.",
    parameters=("input channels", "output size"),
    reference="FlopCounterMode (meta device) and the layers' weights and output shapes from forward hooks",
    sympy_role="verified for finitely many sizes",
)
def check_network_complexity(device: str = "cpu"):
    t = Tally()
    # VGG-16's 13 convolutions form a chain (pooling changes M, not C)
    vgg = models.build("vgg16")
    convs = models.conv_shapes(vgg)
    t.exact(all(a["out_channels"] == b["in_channels"] for a, b in zip(convs, convs[1:])), "VGG-16 convolutions form a chain")
    time, space = network_complexity(len(convs))
    values = chain_values(convs)
    time_value = int(time.doit().xreplace(values))
    t.exact(2 * time_value == flop_counter_flops(vgg)["convolution"], f"VGG-16 Σ M²K²C_(l-1)C_l = {time_value:,} vs FlopCounterMode/2")
    weights = sum(m.weight.numel() for m in vgg.modules() if isinstance(m, nn.Conv2d))
    feature_maps = sum(r["out_channels"] * r["output_size"][0] * r["output_size"][1] for r in convs)
    t.exact(int(space.doit().xreplace(values)) == weights + feature_maps, "VGG-16 space = conv weights + conv outputs (hooks)")
    # ResNet-50 is not a chain: the chain substitution miscounts, each layer's own C_in is exact
    r50 = models.build("resnet50")
    rconvs = models.conv_shapes(r50)
    counted = flop_counter_flops(r50)["convolution"] // 2
    rtime, _ = network_complexity(len(rconvs))
    chain = int(rtime.doit().xreplace(chain_values(rconvs)))
    t.exact(chain != counted, f"ResNet-50 chain reading {chain:,} should differ from {counted:,}")
    own_time, _ = network_complexity(len(rconvs), chain=False)
    own = int(own_time.doit().xreplace(chain_values(rconvs)))
    t.exact(own == counted, f"ResNet-50 with each layer's own input channels {own:,} vs {counted:,}")
    return t.verdict("sympy sum, built from the per-layer definition and evaluated on VGG-16 and ResNet-50, vs FlopCounterMode "
                     "and forward hooks (meta device)", case_unit="checks")


@claim(
    "cost.torchvision-params",
    title="The book's models have torchvision's parameter counts",
    chapter=4,
    statement="ResNet-18/34/50/101/152, ResNeXt-50 32×4d, Wide-ResNet-50-2, MobileNet v2 and VGG-16 in convbook.models have exactly torchvision's published parameter counts, counting batch norm's γ and β (not its running statistics).",
    parameters=("batch norm",),
    reference="torchvision's published parameter counts",
)
def check_torchvision_params(device: str = "cpu"):
    t = Tally()
    for name, published in models.TORCHVISION_PARAMS.items():
        m = models.build(name)
        t.exact(models.count_params(m) == published, f"{name} sum(p.numel())")
        t.exact(profile(m).params == published, f"{name} formula")
    return t.verdict("exact, sum(p.numel()) and the formulas vs the published counts", case_unit="checks")


@claim(
    "cost.torchvision-gflops",
    title="torchvision's 'GFLOPS' are giga multiply-accumulates",
    chapter=4,
    statement="torchvision's published GFLOPS for every model of convbook.models equal the exact conv + linear MAC count at 224×224, in units of 10⁹, rounded to two decimals — half of FlopCounterMode's FLOPs.",
    parameters=("stride",),
    reference="torchvision's published GFLOPS table",
)
def check_torchvision_gflops(device: str = "cpu"):
    t = Tally()
    for name, published in TORCHVISION_GFLOPS.items():
        macs = profile(models.build(name)).macs
        t.exact(round(macs / 1e9, 2) == published, f"{name}: {macs:,} MACs vs {published}")
        t.exact(round(2 * macs / 1e9, 2) != published, f"{name}: 2×MACs (FLOPs) matches too, so the table cannot tell MACs from FLOPs")
    return t.verdict("exact MAC count rounded to 0.01 G vs the published table", case_unit="checks")


@claim(
    "cost.resnet-table1",
    title="ResNet Table 1 FLOPs, reproduced",
    chapter=4,
    statement="He et al.'s Table 1 FLOPs (1.8, 3.6, 3.8, 7.6, 11.3 ×10⁹) are the mult-adds of the paper's networks (stride on the 1×1; ResNet-34 with parameter-free shortcuts) to 0.1 G; all round to nearest except ResNet-50's exact 3.86 G, printed truncated as 3.8.",
    parameters=("stride",),
    reference="He et al. 2016, Table 1",
)
def check_resnet_table1(device: str = "cpu"):
    t = Tally()
    for depth, printed in RESNET_TABLE1_GMACS.items():
        kw = {} if depth < 50 else {"stride_on": "1x1"}
        prof = profile(models.build(f"resnet{depth}", **kw))
        macs = prof.macs
        if depth == 34:  # option A shortcuts: no projection convolutions
            macs -= sum(r.macs for r in prof.rows if ".downsample." in r.name)
        g = macs / 1e9
        if depth == 50:
            t.exact(round(g, 1) == 3.9 and math.floor(g * 10) / 10 == printed, f"resnet50: {macs:,}")
        else:
            t.exact(round(g, 1) == printed, f"resnet{depth}: {macs:,} vs {printed}")
        t.exact(abs(g - printed) < 0.1, f"resnet{depth} within 0.1 G")
    return t.verdict("exact mult-add counts of the paper's architectures vs the printed table", case_unit="checks")


@claim(
    "cost.resnet50-stride-placement",
    title="Where the stride sits moves ResNet-50 from 3.86 to 4.09 GMACs",
    chapter=4,
    statement="Putting a bottleneck's stride on the 3×3 instead of the first 1×1 (torchvision's ResNet v1.5) adds Σ 3H²·C·w = 231,211,008 MACs to ResNet-50 at 224×224 (the same for ResNet-101 and -152) and changes no parameter.",
    parameters=("stride placement",),
    reference="exact traced counts (profile) of both placements",
)
def check_resnet50_stride_placement(device: str = "cpu"):
    t = Tally()
    for depth, layers in ((50, (3, 4, 6, 3)), (101, (3, 4, 23, 3)), (152, (3, 8, 36, 3))):
        paper = profile(models.build(f"resnet{depth}", stride_on="1x1"))
        tv = profile(models.build(f"resnet{depth}", stride_on="3x3"))
        t.exact(tv.macs - paper.macs == bottleneck_stride_delta(layers), f"resnet{depth} delta")
        t.exact(tv.params == paper.params, f"resnet{depth} params unchanged")
    t.exact(bottleneck_stride_delta() == 231_211_008, "delta value")
    return t.verdict("exact, traced counts of both placements vs the closed-form delta", case_unit="checks")


@claim(
    "cost.resnext-table1",
    title="ResNeXt Table 1: ResNet-50 vs ResNeXt-50 32×4d",
    chapter=4,
    statement="ResNet-50 has 25.56 M parameters and 4.09 G mult-adds, ResNeXt-50 (32×4d) 25.03 M and 4.23 G; Xie et al. print 25.5 M / 4.1 G and 25.0 M / 4.2 G — the 25.5 is truncated, rounding gives 25.6.",
    parameters=("groups",),
    reference="Xie et al. 2017, Table 1",
)
def check_resnext_table1(device: str = "cpu"):
    t = Tally()
    r = profile(models.build("resnet50"))
    x = profile(models.build("resnext50_32x4d"))
    t.exact(round(r.macs / 1e9, 1) == 4.1 and round(x.macs / 1e9, 1) == 4.2, "FLOPs 4.1 / 4.2")
    t.exact(round(x.params / 1e6, 1) == 25.0, "ResNeXt params 25.0 M")
    t.exact(round(r.params / 1e6, 1) == 25.6 and math.floor(r.params / 1e5) / 10 == 25.5, "ResNet-50 params: 25.5 is truncated")
    t.exact(x.macs > r.macs and x.params < r.params, "ResNeXt: fewer params, more MACs")
    return t.verdict("exact counts vs the printed table", case_unit="checks")


@claim(
    "cost.mobilenet-v1",
    title="MobileNet v1: 569 M mult-adds, 4.2 M parameters",
    chapter=4,
    statement="MobileNet v1 (1.0, 224) has 568,740,352 mult-adds (569 M) and 4,231,976 parameters with BN and the FC bias; its 4,209,088 weights (no BN, no bias) are the paper's 4.2 M.",
    parameters=("groups",),
    reference="FlopCounterMode, sum(p.numel()) and Howard et al. 2017's rounded figures",
)
def check_mobilenet_v1(device: str = "cpu"):
    t = Tally()
    m = models.build("mobilenet_v1")
    prof = profile(m)
    t.exact(prof.macs == 568_740_352 and round(prof.macs / 1e6) == 569, f"MACs {prof.macs:,}")
    t.exact(2 * prof.macs == sum(flop_counter_flops(m).values()), "vs FlopCounterMode")
    weights = sum(r.params for r in prof.rows if r.kind == "conv") + sum(r.macs for r in prof.rows if r.kind == "linear")
    t.exact(prof.params == models.count_params(m) == 4_231_976, f"params {prof.params:,} (formula) vs sum(p.numel())")
    t.exact(weights == 4_209_088 and round(weights / 1e5) / 10 == 4.2, f"weights {weights:,}")
    return t.verdict("exact, formulas vs FlopCounterMode and the paper's rounded figures", case_unit="checks")


@claim(
    "cost.mobilenet-v1-table2",
    title="MobileNet v1 Table 2: where the cost sits",
    chapter=4,
    statement="Howard et al.'s Table 2 shares of weights (1×1 74.59%, depthwise 1.06%, first conv 0.02%, FC 24.33%; no BN, no bias) and of mult-adds (94.86%, 3.06%, FC 0.18%) are exact to 0.01%, but the first convolution's mult-adds are 1.91%, not the printed 1.19%.",
    parameters=("bias",),
    reference="Howard et al. 2017, Table 2",
)
def check_mobilenet_v1_table2(device: str = "cpu"):
    t = Tally()
    shares = mobilenet_v1_shares()
    for kind, (macs_pct, params_pct) in MOBILENET_V1_TABLE2.items():
        m, p = shares[kind]
        t.exact(round(p, 2) == params_pct, f"{kind} weights {p:.3f}% vs {params_pct}")
        if kind == "conv3x3":  # the printed 1.19 has its digits swapped: the exact share is 1.91
            t.exact(round(m, 2) == 1.91 and macs_pct == 1.19, f"{kind} mult-adds {m:.3f}% (printed {macs_pct})")
        else:
            t.exact(round(m, 2) == macs_pct, f"{kind} mult-adds {m:.3f}% vs {macs_pct}")
    printed_sum = round(sum(v[0] for v in MOBILENET_V1_TABLE2.values()), 2)
    t.exact(printed_sum == 99.29 and round(sum(v[0] for v in shares.values()), 2) == 100.0, "printed column sums to 99.29%")
    return t.verdict("exact shares from the formulas vs the printed table (0.01%)", case_unit="entries")


def mobilenet_v1_shares() -> dict[str, tuple[float, float]]:
    """MobileNet v1 (1.0, 224): ``{layer type: (% of mult-adds, % of weights)}`` — weights
    exclude BN parameters and biases, the convention of Howard et al.'s Table 2."""
    model = models.build("mobilenet_v1")
    modules = dict(model.named_modules())
    acc: dict[str, list[int]] = {}
    for r in profile(model).rows:
        mod = modules[r.name]
        if r.kind not in ("conv", "linear"):
            continue
        if r.kind == "linear":
            kind = "fc"
        elif mod.groups > 1:
            kind = "depthwise3x3"
        elif mod.kernel_size == (1, 1):
            kind = "conv1x1"
        else:
            kind = "conv3x3"
        a = acc.setdefault(kind, [0, 0])
        a[0] += r.macs
        a[1] += (conv_params(mod.in_channels, mod.out_channels, tuple(mod.kernel_size), mod.groups, bias=False)
                 if kind != "fc" else linear_params(mod.in_features, mod.out_features, bias=False))
    tm, tp = sum(a[0] for a in acc.values()), sum(a[1] for a in acc.values())
    return {k: (100 * a[0] / tm, 100 * a[1] / tp) for k, a in acc.items()}


# --------------------------------------------------------------------------------------
# Private helpers
# --------------------------------------------------------------------------------------


def _positive(**values) -> tuple[int, ...]:
    return tuple(as_int(v, name, 1) for name, v in values.items())


def _flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def _channels(c_in: int, c_out: int, groups: int) -> tuple[int, int, int]:
    c_in, c_out, groups = _positive(in_channels=c_in, out_channels=c_out, groups=groups)
    if c_in % groups or c_out % groups:
        raise ValueError(f"groups must divide in_channels and out_channels, got C_in={c_in}, C_out={c_out}, groups={groups}")
    return c_in, c_out, groups


def _axes(input_size, kernel_size, stride, dilation, output_padding, padding, ndim=None):
    """``(ndim, n, k, s, d, output_padding)`` as per-axis tuples (:mod:`convbook.conventions`)."""
    nd = spatial_ndim(input_size, kernel_size, stride, dilation, output_padding, padding, ndim=ndim)
    return (nd, as_tuple(input_size, nd, "input_size", 1), as_tuple(kernel_size, nd, "kernel_size", 1),
            as_tuple(stride, nd, "stride", 1), as_tuple(dilation, nd, "dilation", 1),
            as_tuple(output_padding, nd, "output_padding", 0))


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.Dropout, nn.Identity)


def _cost(name: str, mod: nn.Module, i: tuple[int, ...], o: tuple[int, ...], bpe: int) -> LayerCost:
    n = i[0]
    macs = ops = params = 0
    if isinstance(mod, _CONV + _CONVT):
        transposed = isinstance(mod, _CONVT)
        kind = "convT" if transposed else "conv"
        params = conv_params(mod.in_channels, mod.out_channels, tuple(mod.kernel_size), mod.groups, mod.bias is not None)
        macs = n * conv_macs(mod.in_channels, mod.out_channels, tuple(mod.kernel_size), tuple(i[2:]), tuple(mod.stride),
                             _padding(mod.padding), tuple(mod.dilation), mod.groups, transposed,
                             tuple(mod.output_padding) if transposed else 0)
    elif isinstance(mod, nn.Linear):
        kind = "linear"
        params = linear_params(mod.in_features, mod.out_features, mod.bias is not None)
        macs = linear_macs(mod.in_features, mod.out_features, math.prod(i[:-1]))
    elif isinstance(mod, _BN):
        kind = "bn"
        params = bn_params(mod.num_features, mod.affine)
        ops = n * bn_ops(i[1], tuple(i[2:]) or 1)
    elif isinstance(mod, _POOL):
        kind = "pool"
        nd = len(i) - 2
        ops = n * pool_ops(i[1], _tup(mod.kernel_size, nd), tuple(i[2:]), _tup(mod.stride, nd), _tup(mod.padding, nd))
    elif isinstance(mod, _ADAPTIVE):
        kind = "pool"
        ops = math.prod(i)  # every input element is added once (bins tile the input exactly here)
    else:
        kind = "other"
        params = sum(p.numel() for p in mod.parameters())
    # element-wise layers (ReLU, dropout) work in place on their input: no new activation
    act = 0 if isinstance(mod, _ELEMENTWISE) else math.prod(o)
    moved = bpe * (math.prod(i) + params + act)
    return LayerCost(name, kind, i, o, params, macs, ops, act, moved)


def _params_once(model: nn.Module, records: list, rows: list[LayerCost]) -> tuple[list[LayerCost], set[int]]:
    """Each parameter in the first row that uses it: a layer called again (or a parameter shared
    with an earlier layer) keeps its MACs but adds no parameters. Parameters are matched by
    identity through their names (the hook trace runs on a copy with the same names).
    Returns the rows and the ids of the parameters they hold."""
    by_name = dict(model.named_parameters(remove_duplicate=False))
    seen: set[int] = set()
    out = []
    for (name, mod, _, _), row in zip(records, rows):
        prefix = f"{name}." if name else ""
        own = {id(by_name[prefix + pn]): by_name[prefix + pn] for pn, _ in mod.named_parameters(remove_duplicate=False)
               if prefix + pn in by_name}
        unseen = {k: q for k, q in own.items() if k not in seen}
        if len(unseen) != len(own):
            row = dataclasses.replace(row, params=sum(q.numel() for q in unseen.values()))
        seen.update(own)
        out.append(row)
    return out, seen


def _params_outside(model: nn.Module, seen: set[int]) -> int:
    """Parameters of ``model`` that no leaf call holds: a layer-scale γ on a block, an uncalled layer."""
    return sum(q.numel() for q in model.parameters() if id(q) not in seen)


def _padding(p):
    """A module's padding as the per-layer formulas take it: the string itself, or a tuple."""
    return p if isinstance(p, str) else tuple(p)


def _tup(v, nd: int) -> tuple[int, ...]:
    return (v,) * nd if isinstance(v, int) else tuple(v)


def _trace(model: nn.Module, shape: tuple[int, ...]) -> list[tuple[str, nn.Module, tuple, tuple]]:
    """(name, module, input shape, output shape) of every leaf-module call, in execution order.

    A view of :func:`convbook.graph.trace`: its module calls, with the first tensor input and the
    first tensor output of each (an LSTM returns ``(out, (h, c))``: ``out``). A call without a
    tensor input or output cannot be costed and raises ``ValueError`` naming it."""
    key = _structure_key(model, shape)
    if key is not None and key in _TRACE_CACHE:
        return list(_TRACE_CACHE[key])
    out = []
    g = _graph(model, shape)
    for c in g.calls:
        if not c.is_module:
            continue
        if c.input_shape is None or c.output_shape is None:
            raise ValueError(f"layer {c.name} ({c.kind}) has no tensor input or output to cost")
        out.append((c.name, c.module, c.input_shape, c.output_shape))
    if key is not None and g.run_on == "meta":  # a meta run read no values: the calls follow from the structure
        if len(_TRACE_CACHE) >= 64:
            _TRACE_CACHE.pop(next(iter(_TRACE_CACHE)))
        _TRACE_CACHE[key] = tuple(out)
    return out


#: Leaf calls of models whose structure determines them (see :func:`_structure_key`), so that the many
#: profiles of the book's networks (each built afresh) trace each architecture once per input shape.
_TRACE_CACHE: dict = {}


def _structure_key(model: nn.Module, shape: tuple[int, ...]):
    """A key that fixes the calls ``model`` makes on ``shape``, or ``None`` when none is known.

    Only for models made entirely of ``torch.nn`` modules and the classes of :mod:`convbook.models`
    (whose forward passes depend on nothing but their submodules), with no hooks: then the class
    of every module, their names (sharing included) and ``repr`` (every layer's configuration)
    determine the calls and their shapes."""
    mods = list(model.named_modules(remove_duplicate=False))
    for _, m in mods:
        where = type(m).__module__
        if not (where.startswith("torch.nn.") or where == models.__name__):
            return None
        if m._forward_hooks or m._forward_pre_hooks:
            return None
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return None
    dtype = next((p.dtype for p in model.parameters()), None)
    return (tuple(shape), dtype, tuple((n, type(m).__module__, type(m).__qualname__) for n, m in mods), repr(model))


def _graph(model: nn.Module, shape: Sequence[int]):
    """:func:`convbook.graph.trace` of ``model`` (imported here: graph is the one model walker)."""
    from .graph import trace

    return trace(model, shape)


def _fvcore(model, x):
    from fvcore.nn import FlopCountAnalysis

    f = FlopCountAnalysis(model, x)
    f.unsupported_ops_warnings(False)
    f.uncalled_modules_warnings(False)
    return f.total()


def _ptflops(model, x, backend):
    from ptflops import get_model_complexity_info

    macs, _ = get_model_complexity_info(model, tuple(x.shape[1:]), as_strings=False, print_per_layer_stat=False,
                                        backend=backend)
    return macs


def _thop(model, x):
    import copy

    import thop

    macs, _ = thop.profile(copy.deepcopy(model), (x,), verbose=False)
    return macs


def _torchinfo(model, x):
    import torchinfo

    return torchinfo.summary(model, input_size=tuple(x.shape), verbose=0).total_mult_adds
