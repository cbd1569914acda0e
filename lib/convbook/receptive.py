"""Chapter 3: receptive fields of chains of convolutions and poolings.

A layer is described along one axis by ``(k, s, p, d)``: kernel, stride, left padding,
dilation. For a chain of layers, output unit ``u`` of the last layer depends on the input
positions ``start + u·jump, …, start + u·jump + size - 1`` (before clipping to the input), where

    jump_l  = jump_{l-1} · s_l                               (jump_0 = 1)
    size_l  = size_{l-1} + (k_l - 1) · d_l · jump_{l-1}      (size_0 = 1)
    start_l = start_{l-1} - p_l · jump_{l-1}                 (start_0 = 0)

and, unrolled (Araujo, Norris & Sim, Distill 2019),

    jump  = Π_l s_l,   size = 1 + Σ_l (k_l - 1) d_l Π_{i<l} s_i,   start = -Σ_l p_l Π_{i<l} s_i.

``start`` is the left edge of output 0's field (negative: it begins in the padding); its centre
is ``start + (size - 1)/2``. The field is a *span*: with dilation (or strides larger than the
kernel) some positions inside it are never read — the gridding pattern, given by
:func:`field_offsets`.

Borders and padding modes. ``(size, jump)`` is the field of an *interior* unit — one whose span
lies inside the input — and holds for every padding mode, because such a unit never reads the
padding. At the borders the modes differ: zero padding clips the span (the unit reads only the
part inside the input); ``'reflect'``, ``'replicate'`` and ``'circular'`` padding fold the padded
positions back onto real inputs (mirror without repeating the edge, clamp, wrap), so a border unit
may read inputs *outside* its span (circular: output 0 of a 3-tap convolution with padding 1 reads
inputs 0, 1 and n - 1). :func:`receptive_support` computes the exact set under every mode.

Models are read from the calls they make (:func:`convbook.graph.trace`), not by listing their
submodules: a module called twice, or a block called in a loop, counts once per call. Here the
model must be a chain; :mod:`convbook.review` propagates fields through branches.
"""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple, Sequence

import numpy as np
import sympy as sp
import torch
import torch.nn as nn

from .claims import Tally, claim
from .plotting import mark_uniform
from .conventions import as_int
from .numerics import DTYPE, check_device, generator, randint
from .shapes import _probe_shapes, _single_threaded, conv_output_size, pool_output_size, same_padding

__all__ = [
    "Layer",
    "PADDING_MODES",
    "layers_of",
    "padded_source",
    "closed_form_inductive_step",
    "receptive_field",
    "receptive_field_table",
    "receptive_field_recurrence_expr",
    "receptive_field_closed_form_expr",
    "field_offsets",
    "field_centre_offset",
    "paths_aligned",
    "receptive_support",
    "gradient_support",
    "chain_module",
    "stacked_vs_single",
    "tap_variance",
    "effective_field_variance",
    "gradient_profile",
    "plot_effective_field",
    "vgg16_layers",
    "resnet50_layers",
    "resnet50_1d",
    "stage_table",
    "plot_receptive_growth",
    "plot_gridding",
]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class Layer(NamedTuple):
    """One layer along one axis: kernel, stride, left padding, dilation and padding mode."""

    k: int
    s: int
    p: int
    d: int = 1
    padding_mode: str = "zeros"

# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------


def layers_of(model: nn.Module | Sequence, axis: int = 0, *, input_shape: Sequence[int] | None = None) -> list[Layer]:
    """:class:`Layer` ``(k, s, p, d, padding_mode)`` per call along spatial ``axis``.

    Tuples may be ``(k, s, p)`` (d = 1), ``(k, s, p, d)`` or ``(k, s, p, d, padding_mode)``
    (mode ``'zeros'`` unless given). A module is read from :func:`convbook.graph.trace` (one run
    on meta tensors of a probe input, so Python control flow and wrappers ``torch.fx`` cannot
    trace are fine): the layers are the calls on the path from the input to the output, in order,
    one per call — a module used twice or a block called in a loop appears once per call. Rules:
    ``Conv*d`` (padding ``'same'`` contributes its *left* padding, ``'valid'`` 0; the padding mode
    is kept), ``MaxPool*d``, ``AvgPool*d``, padding layers (``ReflectionPad*d`` etc.: a 1-tap layer
    with that padding and mode); shape-preserving layers (activations, batch norm, dropout,
    identity, pointwise functions, a layer-scale ``x * γ``) are skipped. Anything else (transposed
    convs, linear layers, adaptive pooling, ``Upsample``, ``LayerNorm``, ``x.mean``) raises
    ``ValueError`` naming it, and so does a model that is not a chain (a shortcut adding two tensors,
    a concatenation): the message points to :mod:`convbook.review`, which handles branches.
    ``input_shape`` (keyword) runs the model on that input instead of a probe input — needed when
    the calls depend on the input's size.
    """
    return [layer for layer, _ in _normalise(model, axis, input_shape)]


def receptive_field(layers: nn.Module | Sequence, axis: int = 0, *,
                    input_shape: Sequence[int] | None = None) -> tuple[int, int, int]:
    """``(size, jump, start)`` of the last layer's units in input coordinates, by the recurrence.

    ``size = r_L``, ``jump = j_L``, ``start`` = left edge of output 0's *unclipped* window (see
    module doc). This is the theoretical field of an interior unit (one whose span
    ``[start + u·jump, start + u·jump + size - 1]`` lies inside the input), exact for every padding
    mode. A border unit reads a subset of its span under zero padding; under ``'reflect'``,
    ``'replicate'`` or ``'circular'`` padding it may read inputs outside it — use
    :func:`receptive_support` for the exact set. Rules: k, s, d ≥ 1, p ≥ 0 (``ValueError``
    otherwise). An empty chain gives ``(1, 1, 0)``. ``input_shape``: as in :func:`layers_of`.
    """
    r, j, start = 1, 1, 0
    for layer in layers_of(layers, axis, input_shape=input_shape):
        r, j, start = _step((r, j, start), layer)
    return r, j, start


def receptive_field_table(layers: Sequence, names: Sequence[str] | None = None) -> list[tuple[str, int, int, int]]:
    """Rows ``(name, size, jump, start)`` after each layer of a tuple chain."""
    ls = layers_of(layers)
    names = list(names) if names is not None else [f"layer {i + 1}" for i in range(len(ls))]
    if len(names) != len(ls):
        raise ValueError(f"names must have one entry per layer: {len(names)} names for {len(ls)} layers")
    rows, state = [], (1, 1, 0)
    for name, layer in zip(names, ls):
        state = _step(state, layer)
        rows.append((name, *state))
    return rows


def receptive_field_recurrence_expr(n_layers: int) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    """``(size, jump, start)`` of ``n_layers`` symbolic layers, by iterating the recurrence step."""
    if not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
    state = (sp.Integer(1), sp.Integer(1), sp.Integer(0))
    for layer in _symbolic_layers(n_layers):
        state = _step(state, layer)
    return state


def receptive_field_closed_form_expr(n_layers: int) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    """``(size, jump, start)`` from the closed forms: products of strides and sums over layers."""
    if not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
    ls = _symbolic_layers(n_layers)
    strides_before = [sp.Mul(*[ls[i][1] for i in range(l)]) for l in range(n_layers)]
    size = 1 + sp.Add(*[(k - 1) * d * strides_before[l] for l, (k, s, p, d) in enumerate(ls)])
    start = -sp.Add(*[p * strides_before[l] for l, (k, s, p, d) in enumerate(ls)])
    return size, sp.Mul(*[layer[1] for layer in ls]), start


def field_offsets(layers: nn.Module | Sequence, axis: int = 0) -> np.ndarray:
    """Offsets (from ``start``) inside the field that some path of taps actually reaches.

    The Minkowski sum over layers of ``{d_l · a · j_{l-1} : a = 0 … k_l - 1}``, ignoring the input's
    borders: the field of an interior unit. With equal dilations ``d > 1`` it has holes (gridding).
    """
    offsets, jump = np.array([0], dtype=np.int64), 1
    for k, s, p, d, _ in layers_of(layers, axis):
        taps = d * jump * np.arange(k)
        offsets = np.unique((offsets[:, None] + taps[None, :]).ravel())
        jump *= s
    return offsets


def field_centre_offset(layers: nn.Module | Sequence, axis: int = 0) -> float:
    """Centre of output 0's field in input coordinates: ``start + (size - 1)/2``.

    Output unit ``u`` of the chain is centred on ``offset + u·jump``. Computed by the recurrence
    (padding enters ``start``, kernel and dilation enter ``size``); a half-integer where the field
    has an even number of positions.
    """
    r, j, start = 1, 1, 0
    for k, s, p, d, _ in layers_of(layers, axis):
        r, j, start = r + (k - 1) * d * j, j * s, start - p * j
    return start + (r - 1) / 2


def paths_aligned(path_a: nn.Module | Sequence, path_b: nn.Module | Sequence, axis: int = 0) -> tuple[bool, float]:
    """Whether the fields of two merged paths are aligned along ``axis``, and by how much they are not.

    Returns ``(aligned, shift)``: ``shift = offset_b - offset_a`` (:func:`field_centre_offset`), the same
    for every output unit. Both paths must have the same jump (their outputs are added or concatenated
    position by position); ``ValueError`` otherwise. Araujo, Norris & Sim (2019).
    """
    ja, jb = receptive_field(path_a, axis)[1], receptive_field(path_b, axis)[1]
    if ja != jb:
        raise ValueError(f"merged paths must have the same jump, got {ja} and {jb}")
    shift = field_centre_offset(path_b, axis) - field_centre_offset(path_a, axis)
    return shift == 0, shift


def receptive_support(layers: nn.Module | Sequence, input_size: int, index: int, axis: int = 0) -> np.ndarray:
    """Input positions (sorted) that output ``index`` reads along ``axis`` for an input of ``input_size``.

    Propagates the set of positions backwards through the layers: a position ``u`` of layer l's
    output reads position ``i = s·u - p + d·a`` of its input (``a = 0 … k-1``). Where ``i`` lies
    outside ``[0, n)`` it is padding, mapped by the layer's padding mode (:func:`padded_source`):
    ``'zeros'`` (and pooling) reads nothing, ``'circular'`` reads ``i mod n``, ``'reflect'`` reads
    ``-i`` or ``2(n-1) - i``, ``'replicate'`` reads ``0`` or ``n - 1``. Layer sizes follow PyTorch
    (``ceil_mode`` included for pooling modules). Raises ``ValueError`` if ``index`` is not an output
    position, or where PyTorch refuses the padding (reflect needs p < n, circular p ≤ n).
    """
    norm = _normalise(layers, axis)
    sizes = [int(input_size)]
    for layer, size_fn in norm:
        sizes.append(size_fn(sizes[-1]))
    if not 0 <= index < sizes[-1]:
        raise ValueError(f"index must be an output position in [0, {sizes[-1]}), got {index}")
    current = np.array([index], dtype=np.int64)
    for (k, s, p, d, mode), n_in in zip(reversed([layer for layer, _ in norm]), reversed(sizes[:-1])):
        pos = (s * current[:, None] - p + d * np.arange(k)[None, :]).ravel()
        current = np.unique(padded_source(pos, n_in, mode, p))
    return current


def padded_source(pos: np.ndarray, n: int, padding_mode: str, padding: int = 0) -> np.ndarray:
    """The real input positions that positions ``pos`` of a padded axis of length ``n`` read.

    ``pos`` are in unpadded coordinates (``0 … n-1`` real, others padding). ``'zeros'`` drops the
    padding; ``'circular'`` maps ``i`` to ``i mod n``; ``'reflect'`` mirrors about the edge
    without repeating it (``-i``; ``2(n-1) - i``); ``'replicate'`` clamps to ``[0, n-1]``.
    Rules (PyTorch's): ``'reflect'`` needs ``padding < n``, ``'circular'`` ``padding <= n``.
    """
    pos = np.asarray(pos, dtype=np.int64)
    n, padding = as_int(n, "n", 1), as_int(padding, "padding", 0)
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if padding_mode == "zeros":
        return pos[(pos >= 0) & (pos < n)]
    if padding_mode == "reflect" and padding >= n:
        raise ValueError(f"reflect padding needs padding < input size, got padding = {padding}, size = {n}")
    if padding_mode == "circular" and padding > n:
        raise ValueError(f"circular padding needs padding <= input size, got padding = {padding}, size = {n}")
    if padding_mode == "circular":
        return pos % n
    if padding_mode == "replicate":
        return np.clip(pos, 0, n - 1)
    out = np.where(pos < 0, -pos, pos)
    return np.where(out > n - 1, 2 * (n - 1) - out, out)


def gradient_support(model: nn.Module, input_shape: Sequence[int], output_index: Sequence[int]) -> np.ndarray:
    """Input positions with a non-zero gradient of one output unit, measured by autograd.

    ``input_shape`` is ``(N, C, *spatial)``; the output unit is ``out[0, 0, *output_index]``.
    The input is all ones; the caller makes the model's weights positive (see
    :func:`chain_module`) so that no contributions cancel. Returns the spatial coordinates of
    the non-zero gradient entries of sample 0, summed over channels: an ``(m, nd)`` int array.
    """
    x = torch.ones(*input_shape, dtype=DTYPE, requires_grad=True)
    param = next(iter(model.parameters()), None)
    if param is not None:
        x = torch.ones(*input_shape, dtype=param.dtype, device=param.device, requires_grad=True)
    out = model(x)
    out[(0, 0, *output_index)].backward()
    g = x.grad[0].abs().sum(0).cpu().numpy()
    return np.argwhere(g > 0)


def chain_module(layers: Sequence, nd: int = 1, pool: Sequence[bool] | None = None) -> nn.Sequential:
    """A one-channel ``nn.Sequential`` realising a tuple chain with all-positive weights (float64).

    Layer ``i`` is ``Conv{nd}d(1, 1, k, s, p, d, padding_mode=mode)`` with weights 1 and no bias,
    or — where ``pool[i]`` is true — ``AvgPool{nd}d(k, s, p)`` (needs d = 1, p ≤ k // 2 and zero
    padding).
    """
    ls = layers_of(layers)
    pool = [False] * len(ls) if pool is None else list(pool)
    if len(pool) != len(ls):
        raise ValueError(f"pool must have one flag per layer: {len(pool)} flags for {len(ls)} layers")
    conv, avg = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[nd - 1], (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)[nd - 1]
    mods: list[nn.Module] = []
    for (k, s, p, d, mode), is_pool in zip(ls, pool):
        if is_pool:
            if d != 1 or p > k // 2 or mode != "zeros":
                raise ValueError(f"an average-pooling layer needs d = 1, p <= k // 2 and zero padding, got k={k}, p={p}, "
                                 f"d={d}, padding_mode={mode!r}")
            mods.append(avg(k, s, p))
        else:
            c = conv(1, 1, k, stride=s, padding=p, dilation=d, bias=False, padding_mode=mode).to(DTYPE)
            with torch.no_grad():
                c.weight.fill_(1.0)
            mods.append(c)
    return nn.Sequential(*mods)


def stacked_vs_single(depth: int, kernel_size: int = 3, channels: int = 1) -> tuple[int, int, int]:
    """``(field, stacked_weights, single_weights)`` for ``depth`` stacked ``k×k`` stride-1 convolutions
    ``C → C`` (no bias) against the one ``field×field`` convolution with the same receptive field.

    ``field = depth·(k - 1) + 1``; the stack has ``depth·k²·C²`` weights, the single layer ``field²·C²``
    (three 3×3 layers: field 7, ``27C²`` against ``49C²``). Rules: depth, kernel_size, channels ≥ 1.
    """
    depth, kernel_size, channels = (as_int(v, name, 1) for name, v in
                                    (("depth", depth), ("kernel_size", kernel_size), ("channels", channels)))
    field = depth * (kernel_size - 1) + 1
    return field, depth * kernel_size**2 * channels**2, field**2 * channels**2


def tap_variance(kernel: Sequence[float] | np.ndarray, dilation: int = 1) -> float:
    """Variance of the tap offset ``d·a`` under the distribution ``w[a] / Σ w`` of a non-negative kernel.

    Rules: entries ≥ 0, not all 0; dilation ≥ 1.
    """
    w = np.asarray(kernel, dtype=np.float64).ravel()
    if w.size == 0 or np.any(w < 0) or not np.any(w > 0):
        raise ValueError(f"kernel must be non-negative and not all zero, got {w.tolist()}")
    dilation = as_int(dilation, "dilation", 1)
    prob = w / w.sum()
    offsets = dilation * np.arange(w.size)
    mean = float(prob @ offsets)
    return float(prob @ (offsets - mean) ** 2)


def effective_field_variance(kernels: Sequence, dilations: Sequence[int] | None = None) -> float:
    """Variance of the normalised input gradient of one output of a stride-1 stack of non-negative kernels.

    The gradient of output ``u`` with respect to input ``u + o`` is the convolution of the kernels
    (each spread by its dilation), i.e. — normalised to sum 1 — the distribution of a sum of independent
    tap offsets, one per layer. Variances of independent variables add:

        Var = Σ_l Var_l,   Var_l = :func:`tap_variance` (w_l, d_l),

    so ``L`` identical layers give a standard deviation ``√L·σ_1``: the effective field grows as ``√L``
    while the span grows as ``L·d(k - 1) + 1`` (Luo et al. 2016). Uniform ``k``-tap kernels:
    ``Var_l = d²(k² - 1)/12``.
    """
    ks = list(kernels)
    ds = [1] * len(ks) if dilations is None else list(dilations)
    if len(ds) != len(ks) or not ks:
        raise ValueError(f"kernels and dilations must be non-empty and of the same length, got {len(ks)} and {len(ds)}")
    return float(sum(tap_variance(w, d) for w, d in zip(ks, ds)))


def gradient_profile(kernels: Sequence, dilations: Sequence[int] | None = None) -> np.ndarray:
    """The input gradient of output 0 of a stride-1 1-D stack (``F.conv1d``, no padding), by autograd,
    normalised to sum 1: entry ``o`` is the weight of input offset ``o`` (the measured effective field)."""
    ks = [torch.as_tensor(np.asarray(w, dtype=np.float64)) for w in kernels]
    ds = [1] * len(ks) if dilations is None else [as_int(d, f"dilations[{j}]", 1) for j, d in enumerate(dilations)]
    if len(ds) != len(ks) or not ks:
        raise ValueError(f"kernels and dilations must be non-empty and of the same length, got {len(ks)} and {len(ds)}")
    span = 1 + sum(d * (w.numel() - 1) for w, d in zip(ks, ds))
    x = torch.zeros(1, 1, span, dtype=DTYPE, requires_grad=True)
    h = x
    for w, d in zip(ks, ds):
        h = torch.nn.functional.conv1d(h, w.view(1, 1, -1), dilation=d)
    h[0, 0, 0].backward()
    g = x.grad[0, 0].numpy()
    return g / g.sum()


def plot_effective_field(depths: Sequence[int] = (1, 2, 4, 8, 16, 32), kernel_size: int = 3, seed: int = 0, axes=None):
    """Left: the normalised gradient profile of stacks of random non-negative ``kernel_size``-tap layers
    (seeded); right: its standard deviation against depth, with the span and ``√L·σ_1``."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    gen = np.random.default_rng(seed)
    base = gen.uniform(0.2, 1.0, size=kernel_size)
    for L in depths:
        g = gradient_profile([base] * L)
        o = np.arange(g.size)
        axes[0].plot(o - float(g @ o), g, marker=".", ms=3, label=f"L = {L}")
    axes[0].set_xlabel("input offset from the gradient's mean")
    axes[0].set_ylabel("share of the gradient")
    axes[0].legend(fontsize=8)
    Ls = np.arange(1, max(depths) + 1)
    measured = [np.sqrt(_profile_variance(gradient_profile([base] * L))) for L in Ls]
    axes[1].plot(Ls, measured, "o", ms=3, label="std of the gradient (measured)")
    axes[1].plot(Ls, np.sqrt(Ls * tap_variance(base)), "-", label=r"$\sqrt{L}\,\sigma_1$")
    axes[1].plot(Ls, (Ls * (kernel_size - 1) + 1) / 2, "--", label="half the span")
    axes[1].set_xlabel("depth L")
    axes[1].set_ylabel("pixels")
    axes[1].legend(fontsize=8)
    return axes


def _profile_variance(g: np.ndarray) -> float:
    o = np.arange(g.size)
    mean = float(g @ o)
    return float(g @ (o - mean) ** 2)


def vgg16_layers() -> list[tuple[str, Layer]]:
    """VGG-16's conv/pool layers (configuration D, Simonyan & Zisserman), one axis: ``(name, (k, s, p, d))``."""
    out = []
    for block, n_conv in enumerate((2, 2, 3, 3, 3), start=1):
        out += [(f"conv{block}_{i}", (3, 1, 1, 1)) for i in range(1, n_conv + 1)]
        out.append((f"pool{block}", (2, 2, 0, 1)))
    return out


def resnet50_layers(variant: str = "v1.5") -> list[tuple[str, Layer]]:
    """ResNet-50's main path (conv1, max pool, 16 bottlenecks), one axis: ``(name, (k, s, p, d))``.

    ``variant='v1.5'`` (torchvision) puts a stage's stride on the 3×3 conv; ``'v1'`` (the paper)
    on the first 1×1. The shortcut of each block reads a subset of the main path's field, so the
    main path determines the receptive field.
    """
    if variant not in ("v1", "v1.5"):
        raise ValueError(f"variant must be 'v1' or 'v1.5', got {variant!r}")
    out = [("conv1", (7, 2, 3, 1)), ("maxpool", (3, 2, 1, 1))]
    for stage, blocks in zip(range(2, 6), (3, 4, 6, 3)):
        for b in range(1, blocks + 1):
            s = 2 if (b == 1 and stage > 2) else 1
            s1, s3 = (s, 1) if variant == "v1" else (1, s)
            out += [(f"conv{stage}_{b}a", (1, s1, 0, 1)), (f"conv{stage}_{b}b", (3, s3, 1, 1)),
                    (f"conv{stage}_{b}c", (1, 1, 0, 1))]
    return out


class _Bottleneck1d(nn.Module):
    def __init__(self, s1: int, s3: int):
        super().__init__()
        self.a, self.b, self.c = (_ones_conv(1, s1, 0), _ones_conv(3, s3, 1), _ones_conv(1, 1, 0))
        self.shortcut = _ones_conv(1, s1 * s3, 0)

    def forward(self, x):
        return self.c(self.b(self.a(x))) + self.shortcut(x)


def resnet50_1d(variant: str = "v1.5") -> nn.Module:
    """A one-channel 1-D ResNet-50 *with* its shortcuts and positive weights, for autograd measurements."""
    mods: list[nn.Module] = [_ones_conv(7, 2, 3), nn.MaxPool1d(3, 2, 1)]
    ls = resnet50_layers(variant)[2:]
    for i in range(0, len(ls), 3):
        mods.append(_Bottleneck1d(ls[i][1][1], ls[i + 1][1][1]))
    # max pooling routes the gradient to one winner; for the field use average pooling of the same window
    mods[1] = nn.AvgPool1d(3, 2, 1)
    return nn.Sequential(*mods)


def stage_table(named_layers: Sequence[tuple[str, Layer]], stages: Sequence[str]) -> list[tuple[str, int, int, int]]:
    """Rows ``(name, size, jump, start)`` after each layer whose name is in (or, for ``'convX_'``, starts) a stage."""
    rows = receptive_field_table([l for _, l in named_layers], [n for n, _ in named_layers])
    picked = []
    for stage in stages:
        matches = [r for r in rows if r[0] == stage or r[0].startswith(stage)]
        if not matches:
            raise ValueError(f"no layer named {stage!r}")
        picked.append((stage.rstrip("_"), *matches[-1][1:]))
    return picked


def plot_receptive_growth(nets: dict, ax=None):
    """Receptive field size after every layer (log scale) for several named layer lists."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    for label, named in nets.items():
        rows = receptive_field_table([l for _, l in named], [n for n, _ in named])
        ax.plot(range(1, len(rows) + 1), [r[1] for r in rows], marker=".", label=f"{label} (final {rows[-1][1]})")
    ax.set_yscale("log")
    ax.set_xlabel("layer (conv or pool), in order")
    ax.set_ylabel("receptive field size (pixels)")
    ax.grid(True, which="both", lw=0.3)
    ax.legend()
    return ax


def plot_gridding(kernel_size: int, dilation_sets: dict, axes=None):
    """2-D support (by autograd) of one interior output unit for stacks of dilated convs."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, len(dilation_sets), figsize=(4 * len(dilation_sets), 4))
    for ax, (label, dils) in zip(np.atleast_1d(axes), dilation_sets.items()):
        layers = [(kernel_size, 1, 0, d) for d in dils]
        r, _, _ = receptive_field(layers)
        model = chain_module(layers, nd=2)
        supp = gradient_support(model, (1, 1, r, r), (0, 0))
        img = np.zeros((r, r))
        img[supp[:, 0], supp[:, 1]] = 1
        ax.imshow(img, cmap="Blues", vmin=0, vmax=1.3, interpolation="nearest")
        mark_uniform(ax, img, "every position read")
        ax.set_title(f"{label}: field {r}×{r}, {len(supp)} of {r * r} read", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    return axes


# --------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------


@claim(
    "rf.recurrence",
    title="Receptive field recurrence",
    chapter=3,
    statement="For every chain of convolutions and poolings (kernels k_l, strides s_l, left paddings p_l, dilations d_l ≥ 1), jump_l = jump_{l-1}s_l, size_l = size_{l-1} + (k_l-1)d_l jump_{l-1}, start_l = start_{l-1} - p_l jump_{l-1}: with zero padding, output unit u reads only inputs in [start + u·jump, start + u·jump + size - 1]; with any padding mode (zeros, reflect, replicate, circular), a unit whose interval lies inside the input reads both its ends.",
    parameters=("kernel", "stride", "padding", "dilation", "padding_mode"),
    reference="autograd (non-zero input gradients of real nn.Conv1d/AvgPool1d chains)",
)
@_single_threaded
def check_recurrence(device: str = "cpu"):
    """Random 1-D nn.Sequential chains (conv with every padding mode + average pooling), every
    output unit, autograd gradients; some 1- to 4-pixel inputs."""
    device = check_device(device)
    t = Tally()
    gen = generator(3101)
    interior = {mode: 0 for mode in PADDING_MODES}
    for case in range(60):
        seq, n = _random_chain(gen, nd=1, n_layers=randint(1, 4, gen), small=case % 6 == 5)
        r, j, start = receptive_field(seq)
        modes = {m.padding_mode for m in seq.modules() if isinstance(m, _CONVS)}
        model = seq.to(device)
        n_out = model(torch.zeros(1, 1, n, dtype=DTYPE, device=device)).shape[-1]
        for u in range(n_out):
            supp = gradient_support(model, (1, 1, n), (u,))[:, 0]
            lo, hi = start + u * j, start + u * j + r - 1
            if modes == {"zeros"}:
                if supp.size == 0:  # the unit reads only padding
                    t.exact(hi < 0 or lo >= n or not _reads_input(seq, n, u), f"empty support u={u} field [{lo}, {hi}]")
                    continue
                t.exact(supp.min() >= max(lo, 0) and supp.max() <= min(hi, n - 1), f"support outside field u={u} [{lo}, {hi}]")
            if lo >= 0 and hi < n:
                for mode in modes:
                    interior[mode] += 1
                t.exact(supp.size > 0 and supp.min() == lo and supp.max() == hi,
                        f"span u={u} modes {sorted(modes)}: {supp} vs [{lo}, {hi}]")
    t.note("units whose field lies inside the input, by padding mode of their chain: "
           + ", ".join(f"{m} {c}" for m, c in interior.items()))
    return t.verdict("random 1-D conv/pool chains, every padding mode, every output unit, autograd support vs predicted field",
                     case_unit="units")


def closed_form_inductive_step() -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    """The inductive step of the closed forms, as three sympy differences that must vanish.

    Hypothesis at depth L: ``(size, jump, start) = (1 + S, P, -T)`` with ``S = Σ_{l≤L} (k_l-1) d_l Π_{i<l} s_i``,
    ``P = Π_{l≤L} s_l``, ``T = Σ_{l≤L} p_l Π_{i<l} s_i`` (kept as free symbols). Layer ``L+1 = (k, s, p, d)``
    extends each sum by its last term and the product by ``s``; one step of the recurrence (:func:`_step`)
    must give exactly that. Returns ``step - closed form at L+1`` for size, jump, start.
    """
    S, P, T = sp.symbols("S P T")
    k, s, d = sp.symbols("k s d", integer=True, positive=True)
    p = sp.Symbol("p", integer=True, nonnegative=True)
    stepped = _step((1 + S, P, -T), (k, s, p, d))
    closed_next = (1 + (S + (k - 1) * d * P), P * s, -(T + p * P))
    return tuple(sp.expand(a - b) for a, b in zip(stepped, closed_next))


@claim(
    "rf.closed-form",
    title="Closed forms of the receptive field",
    chapter=3,
    statement="For every depth L ≥ 1 and all k_l, s_l, d_l ≥ 1, p_l ≥ 0, the recurrence unrolls to jump = Π s_l, size = 1 + Σ_l (k_l - 1) d_l Π_{i<l} s_i and start = -Σ_l p_l Π_{i<l} s_i (Araujo et al.): proven by induction on depth.",
    parameters=("depth", "kernel", "stride", "padding", "dilation"),
    reference="induction: base case and inductive step checked symbolically (sympy); the recurrence on random chains",
    sympy_role="proven for symbolic sizes",
)
@_single_threaded
def check_closed_form(device: str = "cpu"):
    """sympy: base case and inductive step for symbolic layers; recurrence = closed form for 1–6 symbolic layers;
    numbers on random chains."""
    check_device(device)
    t = Tally()
    for name, diff in zip(("size", "jump", "start"), closed_form_inductive_step()):
        t.exact(diff == 0, f"inductive step, {name}: {diff}")
    for n_layers in range(1, 7):
        rec, closed = receptive_field_recurrence_expr(n_layers), receptive_field_closed_form_expr(n_layers)
        for name, a, b in zip(("size", "jump", "start"), rec, closed):
            t.exact(sp.expand(a - b) == 0, f"{name}, {n_layers} layers: {a} vs {b}")
    gen = generator(3202)
    closed6 = [sp.lambdify(_flat_symbols(6), e, "math") for e in receptive_field_closed_form_expr(6)]
    for _ in range(200):
        layers = [(randint(1, 7, gen), randint(1, 3, gen), randint(0, 3, gen), randint(1, 4, gen)) for _ in range(6)]
        n_real = randint(1, 6, gen)
        padded = layers[:n_real] + [(1, 1, 0, 1)] * (6 - n_real)  # identity layers
        flat = [v for layer in padded for v in layer]
        t.exact(receptive_field(layers[:n_real]) == tuple(int(f(*flat)) for f in closed6), f"numeric {layers[:n_real]}")
    return t.verdict("sympy: inductive step + recurrence = closed form (1–6 layers) + 200 random chains",
                     case_unit="comparisons")


@claim(
    "rf.autograd",
    title="The receptive field, gridding and borders included, is exactly what autograd sees",
    chapter=3,
    statement="For every chain of 2-D convolutions (kernels, strides, paddings and dilations that differ per axis; padding modes zeros, reflect, replicate, circular) and average poolings, including modules called more than once and inputs down to 1 pixel, the input positions with a non-zero gradient for an output unit are exactly the product of the per-axis supports: the taps propagated backwards, padded positions mapped by the padding mode.",
    parameters=("per-axis sizes", "stride", "dilation", "padding_mode", "repeated calls"),
    reference="autograd (non-zero input gradients of real nn.Conv2d/AvgPool2d models)",
)
@_single_threaded
def check_autograd(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    gen = generator(3303)
    for case in range(50):
        seq, n = _random_chain(gen, nd=2, n_layers=randint(1, 4, gen), small=case % 5 == 4, share=case % 3 == 1)
        model = seq.to(device)
        out_shape = model(torch.zeros(1, 1, *n, dtype=DTYPE, device=device)).shape[2:]
        for _ in range(3):
            u = tuple(randint(0, out_shape[a] - 1, gen) for a in range(2))
            supp = {tuple(row) for row in gradient_support(model, (1, 1, *n), u)}
            try:
                rows = receptive_support(seq, n[0], u[0], axis=0)
                cols = receptive_support(seq, n[1], u[1], axis=1)
            except ValueError as err:
                t.exact(False, f"unit {u} of {n}: {err}")
                continue
            predicted = {(int(a), int(b)) for a in rows for b in cols}
            t.exact(supp == predicted, f"unit {u} of {n}: {len(supp)} measured vs {len(predicted)} predicted positions")
    return t.verdict("random 2-D conv/pool models (padding modes, shared modules, loops): autograd support = "
                     "predicted support (exact sets)", case_unit="units")


@claim(
    "rf.gridding",
    title="Gridding of stacked dilated convolutions",
    chapter=3,
    statement="For every depth L ≥ 1, kernel k ≥ 2 and dilation d > 1, L stacked stride-1 k-tap convolutions with dilation d read only every d-th position of their field (1 + L(k-1) of 1 + L(k-1)d per axis), whereas dilations 1, 2, 4, …, 2^(L-1) with k = 3 read every position of a field of 2^(L+1) - 1.",
    parameters=("depth", "kernel", "dilation"),
    reference="autograd (non-zero input gradients of real nn.Conv1d stacks)",
)
@_single_threaded
def check_gridding(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    for L, d, k in itertools.product(range(1, 5), range(2, 5), (2, 3, 4)):
        layers = [(k, 1, 0, d)] * L
        r = receptive_field(layers)[0]
        offsets = field_offsets(layers)
        supp = gradient_support(chain_module(layers).to(device), (1, 1, r), (0,))[:, 0]
        t.exact(np.array_equal(supp, offsets) and np.array_equal(offsets, d * np.arange(L * (k - 1) + 1)),
                f"equal dilation L={L} d={d} k={k}: {len(supp)} read of {r}")
    for L in range(1, 6):
        layers = [(3, 1, 0, 2 ** l) for l in range(L)]
        r = receptive_field(layers)[0]
        supp = gradient_support(chain_module(layers).to(device), (1, 1, r), (0,))[:, 0]
        t.exact(r == 2 ** (L + 1) - 1 and np.array_equal(supp, np.arange(r)) and np.array_equal(field_offsets(layers), supp),
                f"doubling dilations L={L}: field {r}, {len(supp)} read")
    return t.verdict("1-D autograd support vs field_offsets, equal and doubling dilations", case_unit="stacks")


@claim(
    "rf.vgg16",
    title="Receptive fields of VGG-16, stage by stage",
    chapter=3,
    statement="VGG-16's receptive field grows to 196 pixels at conv5_3 and 212 at pool5, with jump 16 and 32; every stage's (size, jump, start) matches autograd through the 1-D chain.",
    reference="autograd through the 1-D layer chain",
)
@_single_threaded
def check_vgg16(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    named = vgg16_layers()
    _check_named_chain(t, named, device)
    rows = {r[0]: r for r in receptive_field_table([l for _, l in named], [n for n, _ in named])}
    t.exact(rows["conv5_3"][1:3] == (196, 16) and rows["pool5"][1:3] == (212, 32), "VGG-16 headline values")
    return t.verdict("every VGG-16 layer: recurrence vs 1-D autograd (size, jump, start)", case_unit="comparisons")


@claim(
    "rf.resnet50",
    title="Receptive fields of ResNet-50, stage by stage",
    chapter=3,
    statement="ResNet-50's receptive field after each stage (conv1, max pool, conv2_x … conv5_x), for both layouts (variant: torchvision's v1.5 and the paper's v1), matches autograd through a 1-D ResNet-50 with its shortcuts; the final size is 427 (v1.5) and 483 (v1).",
    parameters=("variant",),
    reference="autograd through a 1-D ResNet-50 with its shortcuts",
)
@_single_threaded
def check_resnet50(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    for variant, final in (("v1.5", 427), ("v1", 483)):
        named = resnet50_layers(variant)
        # conv1, the max pool, and the end of every bottleneck block (its third convolution)
        _check_named_chain(t, named, device, indices=[0, 1, *range(4, len(named), 3)])
        r, j, start = receptive_field([l for _, l in named])
        net = resnet50_1d(variant).to(device)
        n = 2 * r + 64
        n_out = net(torch.zeros(1, 1, n, dtype=DTYPE, device=device)).shape[-1]
        u = n_out // 2
        supp = gradient_support(net, (1, 1, n), (u,))[:, 0]
        t.exact((int(supp.max() - supp.min() + 1), int(supp.min()) - u * j) == (r, start) and r == final,
                f"ResNet-50 {variant} with shortcuts: measured span {supp.min()}..{supp.max()} vs size {r}")
    return t.verdict("ResNet-50 (v1.5, v1) layers vs 1-D autograd, with and without shortcuts", case_unit="comparisons")


@claim(
    "rf.stacked-3x3",
    title="Stacked small convolutions: the field of a large one with fewer weights",
    chapter=3,
    statement="For every depth n ≥ 1, kernel k ≥ 1 and width C ≥ 1, n stacked stride-1 k×k convolutions C → C (no bias) read exactly the (n(k−1)+1)² inputs of one (n(k−1)+1)×(n(k−1)+1) convolution, with n·k²·C² weights against (n(k−1)+1)²·C²: three 3×3 layers see 7×7 with 27C² weights against 49C².",
    parameters=("depth", "kernel", "channels"),
    reference="autograd support and parameter counts of real nn.Conv2d stacks",
)
@_single_threaded
def check_stacked_3x3(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    gen = generator(3404)
    for n, k, c in itertools.product(range(1, 5), (1, 2, 3, 5), (1, 2, 3)):
        field, stacked, single = stacked_vs_single(n, k, c)
        mods = [nn.Conv2d(c, c, k, bias=False).to(DTYPE) for _ in range(n)]
        for m in mods:
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=gen)
        stack = nn.Sequential(*mods).to(device)
        size = n * (k - 1) + 1 + 2  # one pixel more than the field on each side
        supp = gradient_support(stack, (1, c, size, size), (1, 1))
        measured = (int(supp[:, 0].max() - supp[:, 0].min() + 1), len(supp))
        t.exact(measured == (field, field * field), f"n={n} k={k} C={c}: support {measured} vs field {field}")
        t.exact(sum(p.numel() for p in stack.parameters()) == stacked, f"n={n} k={k} C={c}: stacked weights")
        t.exact(nn.Conv2d(c, c, field, bias=False).weight.numel() == single, f"n={n} k={k} C={c}: single-layer weights")
    return t.verdict("depth 1–4, k ∈ {1, 2, 3, 5}, C ∈ {1, 2, 3}: autograd support and parameter counts of nn.Conv2d stacks",
                     case_unit="comparisons")


@claim(
    "rf.effective",
    title="The effective receptive field grows as the square root of depth",
    chapter=3,
    statement="For every stride-1 1-D stack of L convolutions with non-negative kernels w_l (not all zero) of any sizes k_l and dilations d_l, the gradient of one output with respect to the input, normalised to sum 1, has variance Σ_l Var_l, where Var_l is the variance of the tap offset d_l·a under w_l/Σw_l; L identical layers give standard deviation √L·σ_1 (uniform k-tap kernels: σ_1² = d²(k²−1)/12), while the span grows as L·d(k−1) + 1.",
    parameters=("depth", "kernel", "dilation"),
    reference="autograd (input gradients of F.conv1d stacks)",
)
@_single_threaded
def check_effective(device: str = "cpu"):
    check_device(device)
    t = Tally(tol=1e-10)
    gen = np.random.default_rng(3505)
    for _ in range(80):
        L = int(gen.integers(1, 13))
        kernels = [gen.uniform(0.0, 1.0, size=int(gen.integers(1, 6))) for _ in range(L)]
        ds = [int(gen.integers(1, 4)) for _ in range(L)]
        g = gradient_profile(kernels, ds)
        t.close(np.array([_profile_variance(g)]), np.array([effective_field_variance(kernels, ds)]), f"L={L} d={ds}")
    for k in (2, 3, 5):
        for d in (1, 2):
            for L in (1, 2, 4, 9, 16):
                g = gradient_profile([np.ones(k)] * L, [d] * L)
                t.close(np.array([np.sqrt(_profile_variance(g))]), np.array([np.sqrt(L * d * d * (k * k - 1) / 12)]),
                        f"uniform k={k} d={d} L={L}: sqrt(L) law")
    return t.verdict("80 random non-negative stacks (seeded) + uniform stacks: variance of the autograd gradient vs "
                     "the sum of per-layer variances", dtype="float64")


@claim(
    "rf.alignment",
    title="Receptive-field alignment of merged paths",
    chapter=3,
    statement="For every two chains of convolutions (any kernels, strides, paddings and dilations, per axis) with the same jump J, output unit u of path i has its field centred on o_i + u·J with o_i = start_i + (size_i − 1)/2 (start_i = −Σ_l p_l Π_{m<l} s_m, size_i = 1 + Σ_l (k_l − 1) d_l Π_{m<l} s_m); so the fields of the merged (added or concatenated) output are aligned for every u iff o_1 = o_2, and otherwise shifted by o_2 − o_1 at every u. A 3×3/2 conv with padding 1 and a 1×1/2 conv (ResNet's projection shortcut) are aligned (centres 2u); a 2×2/2 conv without padding is half a pixel off a 1×1/2 conv (2u + 0.5 vs 2u).",
    parameters=("padding", "dilation", "kernel"),
    reference="autograd (midpoint of the non-zero input gradient of one output unit of each path, real nn.Conv2d modules)",
)
@_single_threaded
def check_alignment(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    gen = generator(3707)
    seen = {True: 0, False: 0}

    def measured_centres(path, u):
        r, j, _ = zip(*(receptive_field(_axis_chain(path, a)) for a in range(2)))
        n = tuple(r[a] + j[a] * (u + 2) + 8 for a in range(2))  # unit u's span lies inside the input
        model = _conv2d_path(path, gen).to(device)
        supp = gradient_support(model, (1, 1, *n), (u, u))
        return tuple((int(supp[:, a].min()) + int(supp[:, a].max())) / 2 for a in range(2))

    named = [("3x3/2 p1 vs 1x1/2", [(3, 2, 1, 1)], [(1, 2, 0, 1)], True),
             ("2x2/2 p0 vs 1x1/2", [(2, 2, 0, 1)], [(1, 2, 0, 1)], False)]
    cases = [(name, [[l, l] for l in a], [[l, l] for l in b]) for name, a, b, _ in named]
    for case in range(40):
        a = [[(randint(1, 5, gen), randint(1, 3, gen), randint(0, 2, gen), randint(1, 2, gen)) for _ in range(2)]
             for _ in range(randint(1, 3, gen))]
        b = []
        for layer in a:  # the same strides in another order: the same jump
            b.append([(randint(1, 5, gen), s, randint(0, 2, gen), randint(1, 2, gen)) for (_, s, _, _) in layer])
        b = [b[i] for i in torch.randperm(len(b), generator=gen).tolist()]
        if case % 2 == 0:  # one layer made to align with path a where possible
            single = []
            for ax in range(2):
                jump = receptive_field(_axis_chain(a, ax))[1]
                target = field_centre_offset(_axis_chain(a, ax))
                options = [(k, jump, int((k - 1) / 2 - target), 1) for k in range(1, 6)
                           if ((k - 1) / 2 - target) in (0, 1, 2)]
                single.append(options[randint(0, len(options) - 1, gen)] if options else (1, jump, 0, 1))
            b = [single]
        cases.append((f"case {case}", a, b))
    for name, a, b in cases:
        u = randint(0, 2, gen) + max(-(receptive_field(_axis_chain(path, ax))[2] // receptive_field(_axis_chain(path, ax))[1])
                                     for path in (a, b) for ax in range(2))
        for path in (a, b):
            centre = measured_centres(path, u)
            for ax in range(2):
                ch = _axis_chain(path, ax)
                predicted = field_centre_offset(ch) + u * receptive_field(ch)[1]
                t.exact(centre[ax] == predicted, f"{name}, axis {ax}, unit {u}: centre {centre[ax]} vs {predicted}")
        ca, cb = measured_centres(a, u), measured_centres(b, u)
        for ax in range(2):
            pa, pb = _axis_chain(a, ax), _axis_chain(b, ax)
            if receptive_field(pa)[1] != receptive_field(pb)[1]:
                continue
            aligned, shift = paths_aligned(pa, pb)
            seen[bool(ca[ax] == cb[ax])] += 1
            t.exact((ca[ax] == cb[ax]) == aligned and cb[ax] - ca[ax] == shift,
                    f"{name}, axis {ax}: measured shift {cb[ax] - ca[ax]}, predicted {shift} (aligned {aligned})")
    for name, a, b, aligned in named:
        t.exact(paths_aligned(a, b) == (aligned, 0.0 if aligned else -0.5), f"{name}: {paths_aligned(a, b)}")
    t.exact(seen[True] > 0 and seen[False] > 0, f"aligned and misaligned pairs both measured: {seen}")
    return t.verdict("2 named pairs + 40 random pairs of 2-D conv chains with equal jumps (seeded): midpoint of the "
                     "autograd support of one unit per path vs offset + u·jump, and alignment", case_unit="cases")


def _axis_chain(path, axis: int) -> list[tuple[int, int, int, int]]:
    return [layer[axis] for layer in path]


def _conv2d_path(path, gen) -> nn.Sequential:
    """Real ``nn.Conv2d`` layers (one channel, weights in [0.5, 1.5], float64) for per-axis ``(k, s, p, d)`` pairs."""
    mods = []
    for layer in path:
        k, s, p, d = (tuple(ax[i] for ax in layer) for i in range(4))
        c = nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d, bias=False).to(DTYPE)
        with torch.no_grad():
            c.weight.uniform_(0.5, 1.5, generator=gen)
        mods.append(c)
    return nn.Sequential(*mods)


# --------------------------------------------------------------------------------------
# Private helpers
# --------------------------------------------------------------------------------------

_SKIP = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout, nn.Dropout2d,
         nn.Dropout3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm)


def _step(state, layer):
    """One step of the recurrence (works on ints and on sympy symbols)."""
    r, j, start = state
    k, s, p, d = layer[:4]
    return r + (k - 1) * d * j, j * s, start - p * j


@functools.lru_cache(maxsize=None)
def _symbolic_layers(n_layers: int) -> tuple[tuple[sp.Symbol, ...], ...]:
    layers = []
    for l in range(1, n_layers + 1):
        k, s, d = sp.symbols(f"k{l} s{l} d{l}", integer=True, positive=True)
        p = sp.Symbol(f"p{l}", integer=True, nonnegative=True)
        layers.append((k, s, p, d))
    return tuple(layers)


def _flat_symbols(n_layers: int) -> list[sp.Symbol]:
    return [v for layer in _symbolic_layers(n_layers) for v in layer]


def _axis(value, axis: int) -> int:
    if isinstance(value, int):
        return value
    value = tuple(value)
    if not 0 <= axis < len(value):
        raise ValueError(f"axis {axis} out of range for a {len(value)}-D layer")
    return int(value[axis])


def _checked(layer, where: str) -> Layer:
    if not isinstance(layer, (tuple, list)) or len(layer) not in (3, 4, 5):
        raise ValueError(f"{where}: a layer must be (k, s, p), (k, s, p, d) or (k, s, p, d, padding_mode), got {layer!r}")
    k, s, p, d, mode = (*layer, 1, "zeros")[:5] if len(layer) == 3 else (*layer, "zeros")[:5]
    for name, v, low in (("k", k, 1), ("s", s, 1), ("p", p, 0), ("d", d, 1)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low:
            raise ValueError(f"{where}: {name} must be an int >= {low}, got {v!r}")
    if mode not in PADDING_MODES:
        raise ValueError(f"{where}: padding_mode must be one of {PADDING_MODES}, got {mode!r}")
    return Layer(int(k), int(s), int(p), int(d), mode)


_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_PADS = {f"{kind}Pad{nd}d": mode for kind, mode in (("Reflection", "reflect"), ("Replication", "replicate"),
                                                     ("Zero", "zeros"), ("Constant", "zeros"), ("Circular", "circular"))
         for nd in (1, 2, 3)}
#: Ops (convbook.graph op names) that act on each element on its own: they keep every position's field.
#: With one data input (a parameter such as a layer-scale γ or a constant is not one) ``add``/``mul``/… qualify.
_POINTWISE_OPS = {"relu", "relu_", "relu6", "sigmoid", "sigmoid_", "tanh", "tanh_", "abs", "neg", "exp", "gelu", "silu",
                  "silu_", "hardswish", "hardsigmoid", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "elu",
                  "mish", "dropout", "contiguous", "clone", "float", "double", "to", "add", "add_", "sub", "sub_", "mul",
                  "mul_", "div", "div_", "rsub", "pow", "clamp", "clamp_", "batch_norm"}
_REVIEW_HINT = "convbook.review propagates receptive fields through branches (Review.layers)"


def _module_calls(model: nn.Module, input_shape: Sequence[int] | None = None) -> list[nn.Module]:
    """The modules called on the path from the input to the output, in call order, one entry per call.

    A view of :func:`convbook.graph.trace` (loops unrolled, shared modules repeated; any model that
    runs, including ones ``torch.fx`` cannot trace) on a probe input (``shapes._probe_shapes``). Walks
    back from the output through each call's producer (``Call.inputs``). Raises ``ValueError`` when
    a call combines several tensors (the model is not a chain: a shortcut, a concatenation,
    squeeze-excitation) or is an op without a receptive-field rule.
    """
    if isinstance(model, _CONVS + _POOLS + _SKIP) or type(model).__name__ in _PADS:
        return [model]
    if input_shape is None:
        g = _probe_graph(model)
    else:
        from .graph import trace

        g = trace(model, input_shape)
    name = type(model).__name__
    if len(g.output_sources) != 1:
        raise ValueError(f"{name}: the output is not a single tensor computed from the input")
    node, calls = g.output_sources[0], []
    while node != -1:
        if node is None:
            raise ValueError(f"{name}: the output is not a single tensor computed from the input")
        c = g.calls[node]
        data = sorted({i for i in c.inputs if i is not None})
        if len(data) > 1:
            raise ValueError(f"{name} is not a chain: call {c.name!r} ({c.kind}) combines {len(data)} tensors; "
                             f"receptive fields here are computed for chains of layers — {_REVIEW_HINT}")
        if not data:
            raise ValueError(f"{name}: call {c.name!r} ({c.kind}) does not read the input")
        if c.is_module:
            if not (isinstance(c.module, _CONVS + _POOLS + _SKIP) or c.kind in _PADS):
                raise ValueError(f"no receptive-field rule for module type {c.kind} ({c.name!r} in {name})")
            calls.append(c.module)
        elif c.kind not in _POINTWISE_OPS:
            raise ValueError(f"no receptive-field rule for function {c.kind} in {name}")
        node = data[0]
    return calls[::-1]


def _probe_graph(model: nn.Module):
    """:func:`convbook.graph.trace` on the first probe shape the model accepts."""
    from .graph import trace

    errors = []
    for shape in _probe_shapes(model):  # convbook.shapes: input shapes a model given alone may accept
        try:
            return trace(model, shape)
        except ValueError as err:
            errors.append(str(err))
    raise ValueError(f"cannot run {type(model).__name__} to find its calls (tried {len(errors)} input shapes): "
                     f"{errors[-1] if errors else ''}")


def _conv_padding(m: nn.Module, axis: int, k: int, s: int, d: int) -> tuple[int, int]:
    """``(left, right)`` padding of a convolution module along ``axis``, whatever its padding mode."""
    if m.padding == "same":
        return same_padding(k, s, d)
    if m.padding == "valid":
        return 0, 0
    p = _axis(m.padding, axis)
    return p, p


def _normalise(model, axis: int, input_shape: Sequence[int] | None = None) -> list[tuple[Layer, object]]:
    """[(layer, size_fn)] where size_fn maps the layer's input length to its output length."""
    if isinstance(model, nn.Module):
        out = []
        for m in (_module_calls(model) if input_shape is None else _module_calls(model, input_shape)):
            if isinstance(m, _SKIP):
                continue
            if isinstance(m, _CONVS):
                k, s, d = _axis(m.kernel_size, axis), _axis(m.stride, axis), _axis(m.dilation, axis)
                left, right = _conv_padding(m, axis, k, s, d)
                layer = Layer(k, s, left, d, m.padding_mode)
                out.append((layer, functools.partial(_conv_size, k=k, s=s, p=(left, right), d=d, mode=m.padding_mode)))
            elif type(m).__name__ in _PADS:
                mode = _PADS[type(m).__name__]
                nd = int(type(m).__name__[-2])
                if not 0 <= axis < nd:
                    raise ValueError(f"axis {axis} out of range for a {nd}-D layer")
                pad = (m.padding,) * (2 * nd) if isinstance(m.padding, int) else tuple(m.padding)
                left, right = pad[2 * (nd - 1 - axis)], pad[2 * (nd - 1 - axis) + 1]  # (last axis first) pairs
                out.append((Layer(1, 1, left, 1, mode),
                            functools.partial(_conv_size, k=1, s=1, p=(left, right), d=1, mode=mode)))
            elif isinstance(m, _POOLS):
                k = _axis(m.kernel_size, axis)
                s = _axis(m.stride if m.stride is not None else m.kernel_size, axis)
                p, d = _axis(m.padding, axis), _axis(getattr(m, "dilation", 1), axis)
                out.append((Layer(k, s, p, d), functools.partial(pool_output_size, kernel_size=k, stride=s, padding=p,
                                                                  dilation=d, ceil_mode=bool(m.ceil_mode))))
            else:
                raise ValueError(f"no receptive-field rule for module type {type(m).__name__}")
        return out
    if isinstance(model, (str, bytes)) or not isinstance(model, Sequence):
        raise ValueError(f"layers must be an nn.Module or a sequence of (k, s, p, d) tuples, got {type(model).__name__}")
    out = []
    for i, layer in enumerate(model):
        lay = _checked(layer, f"layer {i}")
        out.append((lay, functools.partial(_conv_size, k=lay.k, s=lay.s, p=(lay.p, lay.p), d=lay.d, mode=lay.padding_mode)))
    return out


def _conv_size(n: int, k: int, s: int, p: tuple[int, int], d: int, mode: str = "zeros") -> int:
    """Output length for left/right padding ``p``; refuses what PyTorch refuses for the padding mode."""
    if mode == "reflect" and max(p) >= n:
        raise ValueError(f"reflect padding needs padding < input size, got padding = {max(p)}, size = {n}")
    if mode == "circular" and max(p) > n:
        raise ValueError(f"circular padding needs padding <= input size, got padding = {max(p)}, size = {n}")
    if p[0] == p[1]:
        return conv_output_size(n, k, s, p[0], d)
    return conv_output_size(n + p[0] + p[1], k, s, 0, d)


def _ones_conv(k: int, s: int, p: int) -> nn.Conv1d:
    c = nn.Conv1d(1, 1, k, stride=s, padding=p, bias=False).to(DTYPE)
    with torch.no_grad():
        c.weight.fill_(1.0)
    return c


class _Repeat(nn.Module):
    """Calls one block ``times`` times in a loop (the same weights each time)."""

    def __init__(self, block: nn.Module, times: int):
        super().__init__()
        self.block, self.times = block, times

    def forward(self, x):
        for _ in range(self.times):
            x = self.block(x)
        return x


def _random_chain(gen, nd: int, n_layers: int, small: bool = False, share: bool = False) -> tuple[nn.Module, tuple | int]:
    """A random valid chain of positive convs (every padding mode) and average pools, and an input size it accepts.

    ``small``: inputs of 1 to 4 pixels per axis. ``share``: one module is called more than once (repeated
    in the ``nn.Sequential``, or a block called in a loop).
    """
    while True:
        layers, pools = [], []
        for _ in range(n_layers):
            if randint(0, 3, gen) == 0:
                k = randint(2, 3, gen)
                pools.append(None)
                layers.append([(k, randint(1, 2, gen), randint(0, k // 2, gen), 1) for _ in range(nd)])
            else:
                pools.append(PADDING_MODES[max(0, randint(-2, 3, gen))])
                layers.append([(randint(1, 4, gen), randint(1, 3, gen), randint(0, 2, gen), randint(1, 3, gen)) for _ in range(nd)])
        n = tuple(randint(1, 4, gen) if small else randint(8, 24 if nd == 1 else 14, gen) for _ in range(nd))
        mods = []
        conv, avg = (nn.Conv1d, nn.Conv2d)[nd - 1], (nn.AvgPool1d, nn.AvgPool2d)[nd - 1]
        for axes, mode in zip(layers, pools):
            k, s, p, d = (tuple(a[i] for a in axes) for i in range(4))
            if mode is None:
                mods.append(avg(k, s, p, ceil_mode=bool(randint(0, 1, gen))))
            else:
                c = conv(1, 1, k, stride=s, padding=p, dilation=d, bias=False, padding_mode=mode).to(DTYPE)
                with torch.no_grad():
                    c.weight.uniform_(0.5, 1.5, generator=gen)
                mods.append(c)
        if share:
            i = randint(0, len(mods) - 1, gen)
            if randint(0, 1, gen):
                mods.insert(i + 1, mods[i])
            else:
                mods[i] = _Repeat(mods[i], randint(2, 3, gen))
        seq = nn.Sequential(*mods)
        try:  # valid iff PyTorch runs it (the library's own size rules are under test)
            if seq(torch.zeros(1, 1, *((n,) if isinstance(n, int) else n), dtype=DTYPE)).numel() == 0:
                continue
        except RuntimeError:
            continue
        return seq, (n[0] if nd == 1 else n)


def _reads_input(seq, n: int, u: int) -> bool:
    try:
        return receptive_support(seq, n, u).size > 0
    except ValueError:
        return True


def _check_named_chain(t: Tally, named, device: str, indices: Sequence[int] | None = None) -> None:
    """After each layer listed in ``indices`` (default: every layer): (size, jump, start) by the
    recurrence vs 1-D autograd on an interior unit of the chain truncated there."""
    layers = [l for _, l in named]
    for i in range(len(layers)) if indices is None else indices:
        prefix = layers[: i + 1]
        r, j, start = receptive_field(prefix)
        n = 2 * r + 4 * j + 16
        model = chain_module(prefix).to(device)
        n_out = model(torch.zeros(1, 1, n, dtype=DTYPE, device=device)).shape[-1]
        u = n_out // 2
        s0 = gradient_support(model, (1, 1, n), (u,))[:, 0]
        s1 = gradient_support(model, (1, 1, n), (u + 1,))[:, 0]
        measured = (int(s0.max() - s0.min() + 1), int(s1.min() - s0.min()), int(s0.min()) - u * int(s1.min() - s0.min()))
        t.exact(measured == (r, j, start), f"{named[i][0]}: measured {measured}, predicted {(r, j, start)}")
