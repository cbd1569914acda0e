"""Chapter 7: grouped convolutions, ResNeXt's three equivalent forms, depthwise separable
convolutions and channel shuffle.

Definitions (weights ``(C_out, C_in / g, k_h, k_w)``, ``g`` groups, ``C_in`` and ``C_out``
divisible by ``g``):

* a grouped convolution splits the input channels into ``g`` consecutive groups of
  ``C_in/g`` and the output channels into ``g`` groups of ``C_out/g``; output group ``j``
  reads input group ``j`` only.  As a dense convolution its weight is *block-diagonal*:
  ``W_dense[o, i] = W[o, i - j·C_in/g]`` when ``o`` and ``i`` lie in the same group ``j``,
  else ``0``.
* cost: ``params = C_out · (C_in/g) · k_h k_w`` and ``MACs = params · H_out W_out``, the
  dense cost divided by ``g``.
* ResNeXt (Xie et al. 2017, Fig. 3): ``y = relu(x + BN(Σ_i T_i(x)))`` with ``C`` paths
  ``T_i = 1×1(C_in→d) → BN → ReLU → 3×3(d→d) → BN → ReLU → 1×1(d→C_out)``; forms
  (a) paths summed, (b) last layers merged into one 1×1 over the ``C·d`` concatenated
  channels, (c) first layers merged into one 1×1 (``C_in→C·d``) and the 3×3s into one
  grouped 3×3 with ``C`` groups.
* channel shuffle with ``g`` groups of ``n`` channels: output channel ``a·g + b`` is input
  channel ``b·n + a`` (``a < n``, ``b < g``): reshape to ``(g, n)``, transpose, flatten.
"""

from __future__ import annotations

import copy
import itertools
import math
from fractions import Fraction
from typing import Sequence

import sympy as sp
import torch
import torch.nn as nn
import torch.nn.functional as F

from .claims import Tally, alias, claim
from .plotting import mark_uniform
from .numerics import DTYPE, check_device, generator, randint, randn

__all__ = [
    "block_diagonal_mask",
    "grouped_to_dense",
    "dense_to_grouped",
    "grouped_cost",
    "grouped_cost_symbolic",
    "ResNeXtBlock",
    "resnext_block",
    "convert_block",
    "resnext_params",
    "resnext_params_symbolic",
    "table2_width",
    "TABLE2",
    "depthwise_separable_ratio",
    "resnext_linear_identities",
    "channel_shuffle",
    "channel_unshuffle",
    "group_connectivity",
    "plot_group_connectivity",
    "plot_resnext_forms",
    "plot_grouped_weight_layout",
]

#: Xie et al. 2017, Table 2 (conv2 stage, 256-d in and out): cardinality C -> bottleneck width d.
TABLE2 = {1: 64, 2: 40, 4: 24, 8: 14, 32: 4}

FORMS = ("a", "b", "c")


# --------------------------------------------------------------------------------------
# Grouped convolution = dense convolution with a block-diagonal weight
# --------------------------------------------------------------------------------------


def block_diagonal_mask(out_channels: int, in_channels: int, groups: int) -> torch.Tensor:
    """Boolean ``(C_out, C_in)`` mask: ``True`` where output ``o`` and input ``i`` share a group.

    ``o // (C_out/g) == i // (C_in/g)``. Both channel counts must be divisible by ``groups``.
    """
    _check_groups(in_channels, out_channels, groups)
    o = torch.arange(out_channels) // (out_channels // groups)
    i = torch.arange(in_channels) // (in_channels // groups)
    return o[:, None] == i[None, :]


def grouped_to_dense(conv: nn.Conv2d) -> nn.Conv2d:
    """The dense (``groups=1``) convolution that computes the same map as the grouped ``conv``.

    ``W_dense[o, i] = W[o, i - j·C_in/g]`` for ``o, i`` in group ``j``, zero elsewhere (a
    block-diagonal weight); bias, stride, padding, dilation and padding mode are copied.
    Returns a new module; ``conv`` is not modified.
    """
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"grouped_to_dense needs an nn.Conv2d, got {type(conv).__name__}")
    g, c_in, c_out = conv.groups, conv.in_channels, conv.out_channels
    w = conv.weight.detach()
    dense = w.new_zeros(c_out, c_in, *w.shape[2:])
    n_in, n_out = c_in // g, c_out // g
    for j in range(g):
        dense[j * n_out:(j + 1) * n_out, j * n_in:(j + 1) * n_in] = w[j * n_out:(j + 1) * n_out]
    out = _conv_like(conv, groups=1)
    with torch.no_grad():
        out.weight.copy_(dense)
        if conv.bias is not None:
            out.bias.copy_(conv.bias.detach())
    return out


def dense_to_grouped(conv: nn.Conv2d, groups: int) -> nn.Conv2d:
    """The grouped convolution with ``groups`` groups equal to the dense ``conv``.

    Valid only when ``conv.weight`` is block-diagonal for ``groups`` (every entry outside the
    diagonal blocks exactly zero); otherwise ``ValueError`` names how many entries break it.
    """
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"dense_to_grouped needs an nn.Conv2d, got {type(conv).__name__}")
    if conv.groups != 1:
        raise ValueError(f"dense_to_grouped needs a dense convolution (groups=1), got groups={conv.groups}")
    c_in, c_out = conv.in_channels, conv.out_channels
    mask = block_diagonal_mask(c_out, c_in, groups)
    w = conv.weight.detach()
    off = int((w[~mask.to(w.device)] != 0).sum())
    if off:
        raise ValueError(f"weight is not block-diagonal for groups={groups}: {off} non-zero entries outside the diagonal blocks")
    n_in, n_out = c_in // groups, c_out // groups
    blocks = [w[j * n_out:(j + 1) * n_out, j * n_in:(j + 1) * n_in] for j in range(groups)]
    out = _conv_like(conv, groups=groups)
    with torch.no_grad():
        out.weight.copy_(torch.cat(blocks, dim=0))
        if conv.bias is not None:
            out.bias.copy_(conv.bias.detach())
    return out


def grouped_cost(in_channels: int, out_channels: int, kernel_size: int | Sequence[int], groups: int,
                 out_size: Sequence[int]) -> tuple[int, int]:
    """``(params, MACs)`` of a grouped convolution (weights only, no bias).

    ``params = C_out · (C_in/g) · Π k`` — each output channel's filter spans its group's
    ``C_in/g`` inputs; ``MACs = params · Π out_size`` (one multiply-add per weight per output
    position, taps on padding included).
    """
    _check_groups(in_channels, out_channels, groups)
    from .conventions import as_tuple, spatial_ndim

    ks = as_tuple(kernel_size, spatial_ndim(kernel_size), "kernel_size")
    if any(k < 1 for k in ks) or any(n < 1 for n in out_size):
        raise ValueError(f"kernel sizes and output sizes must be >= 1, got {ks} and {tuple(out_size)}")
    params = out_channels * (in_channels // groups)
    for k in ks:
        params *= k
    macs = params
    for n in out_size:
        macs *= n
    return params, macs


def grouped_cost_symbolic() -> dict[str, sp.Expr]:
    """Derive, with sympy, the grouped cost and its ratio to the dense cost.

    Built by summing over the ``g`` groups: group ``j`` is a dense convolution from
    ``C_in/g`` to ``C_out/g`` channels. Returns ``{'params', 'macs', 'ratio'}`` where
    ``ratio`` is grouped/dense (simplifies to ``1/g``).
    """
    c_in, c_out, k, g, h, w = sp.symbols("C_in C_out k g H W", positive=True)
    j = sp.symbols("j", integer=True)
    per_group = (c_out / g) * (c_in / g) * k**2
    params = sp.simplify(sp.summation(per_group, (j, 1, g)))
    dense = c_out * c_in * k**2
    return {"params": params, "macs": sp.simplify(params * h * w), "ratio": sp.simplify(params / dense)}


# --------------------------------------------------------------------------------------
# ResNeXt blocks in three forms
# --------------------------------------------------------------------------------------


class ResNeXtBlock(nn.Module):
    """One ResNeXt bottleneck block in form ``'a'``, ``'b'`` or ``'c'`` (Xie et al. 2017, Fig. 3).

    ``forward(x) = relu(shortcut(x) + bn3(residual(x)))``; ``shortcut`` is the identity when
    ``in_channels == out_channels``, else a 1×1 projection followed by BN. Build with
    :func:`resnext_block`.
    """

    def __init__(self, form: str, in_channels: int, cardinality: int, width: int, out_channels: int):
        super().__init__()
        self.form, self.in_channels, self.cardinality = form, in_channels, cardinality
        self.width, self.out_channels = width, out_channels
        C, d = cardinality, width
        if form == "a":
            self.paths = nn.ModuleList(
                nn.Sequential(_conv(in_channels, d, 1), nn.BatchNorm2d(d), nn.ReLU(),
                              _conv(d, d, 3), nn.BatchNorm2d(d), nn.ReLU(), _conv(d, out_channels, 1))
                for _ in range(C))
        elif form == "b":
            self.paths = nn.ModuleList(
                nn.Sequential(_conv(in_channels, d, 1), nn.BatchNorm2d(d), nn.ReLU(),
                              _conv(d, d, 3), nn.BatchNorm2d(d), nn.ReLU())
                for _ in range(C))
            self.conv3 = _conv(C * d, out_channels, 1)
        else:
            self.conv1, self.bn1 = _conv(in_channels, C * d, 1), nn.BatchNorm2d(C * d)
            self.conv2, self.bn2 = _conv(C * d, C * d, 3, groups=C), nn.BatchNorm2d(C * d)
            self.conv3 = _conv(C * d, out_channels, 1)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = (nn.Identity() if in_channels == out_channels else
                         nn.Sequential(_conv(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels)))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """``Σ_i T_i(x)`` before the last BN: the aggregated transformation."""
        if self.form == "a":
            return sum(path(x) for path in self.paths)
        if self.form == "b":
            return self.conv3(torch.cat([path(x) for path in self.paths], dim=1))
        z = F.relu(self.bn1(self.conv1(x)))
        z = F.relu(self.bn2(self.conv2(z)))
        return self.conv3(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.shortcut(x) + self.bn3(self.residual(x)))

    def extra_repr(self) -> str:
        return (f"form={self.form!r}, in_channels={self.in_channels}, cardinality={self.cardinality}, "
                f"width={self.width}, out_channels={self.out_channels}")


def resnext_block(form: str, in_channels: int = 256, cardinality: int = 32, width: int = 4,
                  out_channels: int = 256) -> ResNeXtBlock:
    """A ResNeXt block (float32, PyTorch's default initialisation) in form ``'a'``, ``'b'`` or ``'c'``.

    (a) ``C`` paths ``1×1(C_in→d), 3×3(d→d), 1×1(d→C_out)``, summed; (b) the paths' last
    layers replaced by one 1×1 over the ``C·d`` concatenated channels; (c) ``1×1(C_in→C·d)``,
    grouped ``3×3`` with ``C`` groups, ``1×1(C·d→C_out)``. Every conv is followed by BN and
    ReLU, except the last, whose BN comes after the sum and whose ReLU after the shortcut.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    for name, v in (("in_channels", in_channels), ("cardinality", cardinality), ("width", width),
                    ("out_channels", out_channels)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    return ResNeXtBlock(form, in_channels, cardinality, width, out_channels)


def convert_block(block: ResNeXtBlock, form: str) -> ResNeXtBlock:
    """The same block rewritten in ``form``, weights, BN parameters and statistics preserved.

    Path ``i`` owns channels ``i·d … i·d + d - 1`` of the concatenation: its first 1×1 is rows
    ``i·d:(i+1)·d`` of form (c)'s first 1×1, its 3×3 is group ``i`` of the grouped 3×3, and its
    last 1×1 is columns ``i·d:(i+1)·d`` of the merged last 1×1 (the sum of the paths' last
    layers is one 1×1 over the concatenation). BN acts per channel, so the paths' BNs are
    slices of one BN. Returns a new module (same dtype, device and train/eval mode).
    """
    if not isinstance(block, ResNeXtBlock):
        raise ValueError(f"convert_block needs a ResNeXtBlock, got {type(block).__name__}")
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    parts = _canonical(block)
    C, d = block.cardinality, block.width
    p = next(block.parameters())
    out = resnext_block(form, block.in_channels, C, d, block.out_channels).to(dtype=p.dtype, device=p.device)
    with torch.no_grad():
        if form in ("a", "b"):
            for i, path in enumerate(out.paths):
                path[0].weight.copy_(parts["w1"][i])
                path[1] = _make_bn(parts["bn1"], i * d, (i + 1) * d)
                path[3].weight.copy_(parts["w2"][i])
                path[4] = _make_bn(parts["bn2"], i * d, (i + 1) * d)
                if form == "a":
                    path[6].weight.copy_(parts["w3"][:, i * d:(i + 1) * d])
            if form == "b":
                out.conv3.weight.copy_(parts["w3"])
        else:
            out.conv1.weight.copy_(torch.cat(parts["w1"], dim=0))
            out.bn1 = _make_bn(parts["bn1"], 0, C * d)
            out.conv2.weight.copy_(torch.cat(parts["w2"], dim=0))
            out.bn2 = _make_bn(parts["bn2"], 0, C * d)
            out.conv3.weight.copy_(parts["w3"])
    out.bn3 = copy.deepcopy(block.bn3)
    out.shortcut = _clone_shortcut(block)
    out.train(block.training)
    return out


def resnext_params(cardinality: int, width: int, channels: int = 256, kernel_size: int = 3) -> int:
    """Conv weights of one block with identity shortcut: ``C·(c·d + k²·d² + d·c)``.

    (Xie et al. 2017, Sec. 3.3: ``C·(256·d + 3·3·d·d + d·256)``; BN parameters not counted.)
    """
    for name, v in (("cardinality", cardinality), ("width", width), ("channels", channels), ("kernel_size", kernel_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    return cardinality * (channels * width + kernel_size**2 * width**2 + width * channels)


def resnext_params_symbolic() -> sp.Expr:
    """The block's parameter count as a sympy expression in ``C, d, c, k``, built path by path.

    Each of the ``C`` paths has a ``1×1 (c→d)``, a ``k×k (d→d)`` and a ``1×1 (d→c)``
    convolution; a dense conv from ``a`` to ``b`` channels with a ``k×k`` kernel has ``a·b·k²``
    weights.
    """
    C, d, c, k = sp.symbols("C d c k", positive=True)
    i = sp.symbols("i", integer=True)
    dense = lambda a, b, kk: a * b * kk**2  # noqa: E731
    per_path = dense(c, d, 1) + dense(d, d, k) + dense(d, c, 1)
    return sp.expand(sp.summation(per_path, (i, 1, C)))


def table2_width(cardinality: int, channels: int = 256, baseline_width: int = 64) -> dict:
    """Solve ``params(C, d) = params(1, baseline_width)`` for ``d`` with sympy.

    Returns ``{'exact': sympy root, 'real': float, 'nearest': int, 'floor': int, 'ceil': int}``:
    the positive root of the quadratic ``C·(2c·d + 9d²) = 2c·d₀ + 9d₀²``.
    """
    if not isinstance(cardinality, int) or cardinality < 1:
        raise ValueError(f"cardinality must be a positive int, got {cardinality!r}")
    expr = resnext_params_symbolic()
    C, d, c, k = sp.symbols("C d c k", positive=True)
    target = expr.subs({C: 1, d: baseline_width, c: channels, k: 3})
    eq = sp.Eq(expr.subs({C: cardinality, c: channels, k: 3}), target)
    roots = [r for r in sp.solve(eq, d) if r.is_positive]
    if len(roots) != 1:
        raise ValueError(f"expected one positive root for C={cardinality}, got {roots}")
    root = sp.nsimplify(roots[0])
    real = float(root)
    return {"exact": root, "real": real, "nearest": int(sp.floor(root + sp.Rational(1, 2))),
            "floor": int(sp.floor(root)), "ceil": int(sp.ceiling(root))}


def depthwise_separable_ratio() -> sp.Expr:
    """Derive (sympy) the cost of depthwise (``g = C_in``) + pointwise 1×1 over a dense ``k×k`` conv.

    Built from :func:`grouped_cost_symbolic`'s per-group formula: depthwise is the grouped
    cost with ``g = C_out = C_in``, pointwise the dense 1×1 cost; simplifies to
    ``1/C_out + 1/k²`` (parameters and MACs alike, at equal output size).
    """
    c_in, c_out, k, g = sp.symbols("C_in C_out k g", positive=True)
    grouped = grouped_cost_symbolic()["params"].subs(
        {sp.Symbol("C_in", positive=True): c_in, sp.Symbol("C_out", positive=True): c_out,
         sp.Symbol("k", positive=True): k, sp.Symbol("g", positive=True): g})
    depthwise = grouped.subs({c_out: c_in}).subs({g: c_in})
    pointwise = grouped.subs({g: 1, k: 1})
    dense = grouped.subs({g: 1})
    return sp.simplify(sp.expand((depthwise + pointwise) / dense))


def resnext_linear_identities(in_channels: int, cardinality: int, width: int, out_channels: int) -> dict:
    """The linear parts of ResNeXt's forms, compared on symbolic weights (sympy), one position at a time.

    With ``C`` paths of width ``d``, path weights ``W1_i (d×C_in)``, ``W2_i (d×d)`` (one tap of
    the 3×3) and ``W3_i (C_out×d)``, path activations ``z_i`` and input ``x``, returns the
    expanded differences (zero matrices when the identities hold):

    * ``'last'``: ``Σ_i W3_i z_i − [W3_1 … W3_C]·[z_1; …; z_C]`` (form (a) vs (b));
    * ``'first'``: ``[W1_1 x; …; W1_C x] − [W1_1; …; W1_C]·x`` (form (b) vs (c));
    * ``'middle'``: ``[W2_1 z_1; …; W2_C z_C] − diag(W2_1, …, W2_C)·[z_1; …; z_C]``;

    and ``'merged_middle'``, the block-diagonal ``diag(W2_1, …, W2_C)`` (the grouped 3×3 tap),
    ``'merged_first'`` = ``[W1_1; …; W1_C]``, ``'merged_last'`` = ``[W3_1 … W3_C]`` and the per-path
    symbol matrices ``'w1'``, ``'w2'``, ``'w3'`` (to substitute numbers for).
    """
    for name, v in (("in_channels", in_channels), ("cardinality", cardinality), ("width", width),
                    ("out_channels", out_channels)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    C, d = cardinality, width
    w3 = [sp.Matrix(out_channels, d, lambda r, s, i=i: sp.Symbol(f"u{i}_{r}_{s}")) for i in range(C)]
    z = [sp.Matrix(d, 1, lambda r, s, i=i: sp.Symbol(f"z{i}_{r}")) for i in range(C)]
    summed = sum((w3[i] * z[i] for i in range(C)), sp.zeros(out_channels, 1))
    last = (summed - sp.Matrix.hstack(*w3) * sp.Matrix.vstack(*z)).expand()
    w1 = [sp.Matrix(d, in_channels, lambda r, s, i=i: sp.Symbol(f"v{i}_{r}_{s}")) for i in range(C)]
    x = sp.Matrix(in_channels, 1, lambda r, s: sp.Symbol(f"x{r}"))
    first = (sp.Matrix.vstack(*[w1[i] * x for i in range(C)]) - sp.Matrix.vstack(*w1) * x).expand()
    w2 = [sp.Matrix(d, d, lambda r, s, i=i: sp.Symbol(f"m{i}_{r}_{s}")) for i in range(C)]
    merged = sp.diag(*w2)
    middle = (sp.Matrix.vstack(*[w2[i] * z[i] for i in range(C)]) - merged * sp.Matrix.vstack(*z)).expand()
    return {"last": last, "first": first, "middle": middle, "merged_middle": merged,
            "merged_first": sp.Matrix.vstack(*w1), "merged_last": sp.Matrix.hstack(*w3), "w1": w1, "w2": w2, "w3": w3}


# --------------------------------------------------------------------------------------
# Channel shuffle
# --------------------------------------------------------------------------------------


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: ``(B, g·n, ...) -> reshape (B, g, n, ...) -> transpose -> flatten``.

    Output channel ``a·g + b`` is input channel ``b·n + a``: the ``a``-th channel of every
    group, then the next. Needs the channel count divisible by ``groups``.
    """
    if x.dim() < 2:
        raise ValueError(f"x must be (B, C, ...), got shape {tuple(x.shape)}")
    c = x.shape[1]
    if not isinstance(groups, int) or groups < 1 or c % groups:
        raise ValueError(f"channels must be divisible by groups: channels={c}, groups={groups}")
    n = c // groups
    return x.reshape(x.shape[0], groups, n, *x.shape[2:]).transpose(1, 2).reshape(x.shape)


def channel_unshuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """The inverse of :func:`channel_shuffle` with ``groups``: a shuffle with ``C/groups`` groups.

    Shuffling with ``g`` groups is the transpose of a ``g × n`` matrix of channels; the
    transpose of the ``n × g`` result with ``n`` groups restores the order.
    """
    c = x.shape[1] if x.dim() >= 2 else 0
    if x.dim() < 2 or not isinstance(groups, int) or groups < 1 or c % groups:
        raise ValueError(f"channels must be divisible by groups: channels={c}, groups={groups}")
    return channel_shuffle(x, c // groups)


def group_connectivity(groups: int, per_group: int, shuffle: bool) -> torch.Tensor:
    """Which input groups each output group of ``gconv → [shuffle] → gconv`` can depend on.

    Two 1×1 grouped convolutions (``g`` groups of ``n`` channels each) composed, with or
    without a channel shuffle between them, as the boolean ``g × g`` block pattern of the
    composed ``(g·n) × (g·n)`` weight: entry ``(j, i)`` is true when block ``(j, i)`` of
    ``B₂ P B₁`` has a non-zero pattern (``B`` block-diagonal masks, ``P`` the shuffle's
    permutation matrix). Derived from the masks, not from numbers.
    """
    if groups < 1 or per_group < 1:
        raise ValueError(f"groups and per_group must be >= 1, got {groups} and {per_group}")
    c = groups * per_group
    b = block_diagonal_mask(c, c, groups).to(torch.int64)
    perm = torch.eye(c, dtype=torch.int64)
    if shuffle:
        perm = channel_shuffle(perm[None, :, :], groups)[0]  # rows permuted: P[o, :] = e_{src(o)}
    composed = (b @ perm @ b) > 0
    return composed.reshape(groups, per_group, groups, per_group).any(dim=3).any(dim=1)


def plot_group_connectivity(groups: int = 4, per_group: int = 4, axes=None, fontsize: float = 10):
    """Composed weight pattern of two grouped 1×1 convs, without and with a shuffle between.

    Each panel shows the non-zero entries of the composed ``(g·n) × (g·n)`` channel matrix (black:
    non-zero, white: zero, on a fixed 0–1 scale, so an all-non-zero panel is all black), group
    boundaries in red, integer channel ticks, all text at least ``fontsize`` points.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(8, 4))
    c = groups * per_group
    gen = generator(0)
    for ax, shuffle in zip(axes, (False, True)):
        w1 = randn(c, per_group, 1, 1, gen=gen)
        w2 = randn(c, per_group, 1, 1, gen=gen)
        m = _composed_matrix(w1, w2, groups, shuffle, "cpu")
        ax.imshow((m != 0).numpy().astype(float), cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
        mark_uniform(ax, (m != 0).numpy().astype(float), "every entry non-zero")
        for t in range(0, c + 1, per_group):
            ax.axhline(t - 0.5, color="tab:red", lw=0.8)
            ax.axvline(t - 0.5, color="tab:red", lw=0.8)
        ax.set_title(("with" if shuffle else "without") + f" shuffle: {int((m != 0).sum())} non-zeros",
                     fontsize=fontsize + 1)
        ax.set_xlabel("input channel", fontsize=fontsize)
        ax.set_ylabel("output channel", fontsize=fontsize)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=fontsize)
    axes[-1].legend(handles=[Patch(facecolor="black", edgecolor="grey", label="non-zero"),
                             Patch(facecolor="white", edgecolor="grey", label="zero")],
                    loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=fontsize, frameon=False)
    return axes


def plot_grouped_weight_layout(axes=None, in_channels: int = 8, out_channels: int = 8, groups: int = 4,
                               seed: int = 0, fontsize: float = 10):
    """A grouped 1×1 convolution's weight (``C_out × C_in/g``) beside the dense ``C_out × C_in`` weight it
    equals (:func:`grouped_to_dense`): the same numbers, group ``j``'s rows moved into diagonal block ``j``,
    zeros (white) elsewhere. One colour scale for both panels, each group outlined in its own colour, all
    text at least ``fontsize`` points. ``axes``: two axes, or None for a new figure. Returns ``axes``.
    Rules: ``groups`` divides both channel counts.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import MaxNLocator

    _check_groups(in_channels, out_channels, groups)
    n_in, n_out = in_channels // groups, out_channels // groups
    conv = _conv(in_channels, out_channels, 1, groups).to(DTYPE)
    with torch.no_grad():
        conv.weight.copy_(randn(*conv.weight.shape, gen=generator(seed)))
    w = conv.weight.detach()[:, :, 0, 0].numpy()
    dense = grouped_to_dense(conv).weight.detach()[:, :, 0, 0].numpy()
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(3.0 + 0.5 * (n_in + in_channels), 1.2 + 0.5 * out_channels),
                               gridspec_kw={"width_ratios": [max(n_in, 2), in_channels]})
    lim = float(abs(w).max())
    colours = plt.get_cmap("tab10")
    for ax, m, title in ((axes[0], w, f"grouped weight\n{out_channels} × {n_in} (C_out × C_in/g)"),
                         (axes[1], dense, f"dense weight\n{out_channels} × {in_channels}, {groups} diagonal blocks")):
        ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_title(title, fontsize=fontsize + 1)
        ax.set_ylabel("output channel", fontsize=fontsize)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=fontsize)
    axes[0].set_xlabel("input channel\nwithin its group", fontsize=fontsize)
    axes[1].set_xlabel("input channel", fontsize=fontsize)
    for j in range(groups):
        c = colours(j % 10)
        axes[0].add_patch(Rectangle((-0.5, j * n_out - 0.5), n_in, n_out, fill=False, edgecolor=c, lw=2.5))
        axes[1].add_patch(Rectangle((j * n_in - 0.5, j * n_out - 0.5), n_in, n_out, fill=False, edgecolor=c, lw=2.5))
    return axes



def plot_resnext_forms(ax=None, paths: int = 4, cardinality: int = 32, width: int = 4, channels: int = 256,
                       fontsize: float = 10):
    """Block diagrams of ResNeXt's three equivalent forms (Xie et al. 2017, Fig. 3), side by side.

    (a) ``cardinality`` separate paths, each 1×1 (channels→width), 3×3 (width→width), 1×1 (width→channels),
    summed with the identity; (b) per-path 1×1 and 3×3, concatenated to ``cardinality·width`` channels, one
    1×1 back to ``channels``; (c) one 1×1 (channels→C·d), one grouped 3×3 with ``cardinality`` groups, one 1×1.
    ``paths`` paths are drawn (the last one numbered ``cardinality``) with "…" between. Every box is labelled
    with its kernel and widths ``in→out``; all text is at least ``fontsize`` points. One axes in inch units;
    with ``ax=None`` a new figure of exactly the drawing's size holds it. Returns ``ax``.
    Rules: 2 ≤ paths ≤ cardinality; fontsize ≥ 9.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

    if not 2 <= paths <= cardinality:
        raise ValueError(f"need 2 <= paths <= cardinality, got paths={paths}, cardinality={cardinality}")
    if fontsize < 9:
        raise ValueError(f"fontsize must be at least 9 points, got {fontsize}")
    cd = cardinality * width
    f = fontsize / 10  # geometry scales with the font so labels keep their room
    bw, bh, step = 0.78 * f, 0.56 * f, 0.95 * f  # box width, box height, path spacing (inches)
    rows = {"in": 5.75, 1: 4.85, 2: 3.9, 3: 2.95, 4: 2.0, "sum": 1.1, "out": 0.35}
    rows = {k: v * max(1.0, f) for k, v in rows.items()}
    slots = paths + 1  # paths, plus one slot for "…" before the last path
    w_paths = slots * step
    w_ab = w_paths + 0.9 * f  # room for the identity on the right
    w_c = 2.3 * f + 0.9 * f
    gap = 0.5 * f
    total_w = 2 * w_ab + w_c + 2 * gap
    total_h = rows["in"] + 0.9 * max(1.0, f)
    if ax is None:
        ax = plt.figure(figsize=(total_w, total_h)).add_axes((0, 0, 1, 1))
    ax.set_xlim(0, total_w)
    ax.set_ylim(0, total_h)
    ax.set_aspect("equal")
    ax.axis("off")
    colours = {"1x1": "#dbe9f6", "3x3": "#fde3c8", "cat": "#e5e5e5"}

    def box(xc, yc, text, kind, w=bw, h=bh):
        ax.add_patch(FancyBboxPatch((xc - w / 2, yc - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.06",
                                    facecolor=colours[kind], edgecolor="black", lw=1.0))
        ax.text(xc, yc, text, ha="center", va="center", fontsize=fontsize)

    def arrow(p0, p1):
        ax.add_patch(FancyArrowPatch(p0, p1, arrowstyle="-|>", mutation_scale=10 * f, lw=1.0, color="black",
                                     shrinkA=0, shrinkB=0))

    def plus(xc, yc):
        r = 0.17 * f
        ax.add_patch(Circle((xc, yc), r, facecolor="white", edgecolor="black", lw=1.0))
        ax.text(xc, yc, "+", ha="center", va="center", fontsize=fontsize + 2)
        return r

    def frame(x0, w, title, last_row):
        """Input, output, the sum and the identity of one form; returns the x of the sum."""
        xc = x0 + w_paths / 2 if w != w_c else x0 + 1.15 * f
        ax.text(xc, total_h - 0.25 * f, title, ha="center", va="top", fontsize=fontsize + 1)
        ax.text(xc, rows["in"], f"{channels}-d in", ha="center", va="center", fontsize=fontsize)
        r = plus(xc, rows["sum"])
        arrow((xc, rows["sum"] - r), (xc, rows["out"] + 0.15 * f))
        ax.text(xc, rows["out"], f"{channels}-d out", ha="center", va="center", fontsize=fontsize)
        x_id = x0 + w - 0.35 * f
        ax.plot([xc + 0.55 * f, x_id, x_id], [rows["in"], rows["in"], rows["sum"]], color="black", lw=1.0)
        arrow((x_id, rows["sum"]), (xc + r, rows["sum"]))
        ax.text(x_id + 0.1 * f, (rows["in"] + rows["sum"]) / 2, "identity", rotation=90, ha="left", va="center",
                fontsize=fontsize)
        return xc

    def path_columns(x0):
        xs = [x0 + step * (i + 0.5) for i in range(slots)]
        return xs[:-2] + xs[-1:], xs[-2]  # path centres, the "…" slot

    def fan_out(xc, xs, y_top):
        for x in xs:
            arrow((xc, rows["in"] - 0.15 * f), (x, y_top + bh / 2))

    # (a) separate paths, summed
    x0 = 0.0
    xc = frame(x0, w_ab, f"(a) {cardinality} separate paths\n({paths} drawn), summed", 3)
    xs, x_dots = path_columns(x0)
    fan_out(xc, xs, rows[1])
    for x in xs:
        box(x, rows[1], f"1×1\n{channels}→{width}", "1x1")
        box(x, rows[2], f"3×3\n{width}→{width}", "3x3")
        box(x, rows[3], f"1×1\n{width}→{channels}", "1x1")
        arrow((x, rows[1] - bh / 2), (x, rows[2] + bh / 2))
        arrow((x, rows[2] - bh / 2), (x, rows[3] + bh / 2))
        arrow((x, rows[3] - bh / 2), (xc, rows["sum"] + 0.17 * f))
    for r in (1, 2, 3):
        ax.text(x_dots, rows[r], "…", ha="center", va="center", fontsize=fontsize + 4)

    # (b) early concatenation
    x0 = w_ab + gap
    xc = frame(x0, w_ab, f"(b) early concatenation\n({paths} of {cardinality} paths drawn)", 4)
    xs, x_dots = path_columns(x0)
    fan_out(xc, xs, rows[1])
    for x in xs:
        box(x, rows[1], f"1×1\n{channels}→{width}", "1x1")
        box(x, rows[2], f"3×3\n{width}→{width}", "3x3")
        arrow((x, rows[1] - bh / 2), (x, rows[2] + bh / 2))
        arrow((x, rows[2] - bh / 2), (x, rows[3] + bh / 2))
    for r in (1, 2):
        ax.text(x_dots, rows[r], "…", ha="center", va="center", fontsize=fontsize + 4)
    box(xc, rows[3], f"concatenate: {cd}-d", "cat", w=w_paths - 0.2 * f)
    box(xc, rows[4], f"1×1\n{cd}→{channels}", "1x1", w=1.3 * f)
    arrow((xc, rows[3] - bh / 2), (xc, rows[4] + bh / 2))
    arrow((xc, rows[4] - bh / 2), (xc, rows["sum"] + 0.17 * f))

    # (c) one grouped convolution
    x0 = 2 * (w_ab + gap)
    xc = frame(x0, w_c, "(c) grouped\nconvolution", 3)
    wide = 2.1 * f
    box(xc, rows[1], f"1×1\n{channels}→{cd}", "1x1", w=wide)
    box(xc, rows[2], f"3×3, {cardinality} groups\n{cd}→{cd}", "3x3", w=wide)
    box(xc, rows[3], f"1×1\n{cd}→{channels}", "1x1", w=wide)
    arrow((xc, rows["in"] - 0.15 * f), (xc, rows[1] + bh / 2))
    arrow((xc, rows[1] - bh / 2), (xc, rows[2] + bh / 2))
    arrow((xc, rows[2] - bh / 2), (xc, rows[3] + bh / 2))
    arrow((xc, rows[3] - bh / 2), (xc, rows["sum"] + 0.17 * f))
    return ax



# --------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------


@claim(
    "group.block-diagonal",
    title="A grouped convolution is a dense convolution with a block-diagonal weight",
    chapter=7,
    statement="For every g ≥ 1 dividing C_in and C_out, and any kernel, stride and padding, grouped_to_dense gives a groups=1 convolution whose weight is zero outside the g diagonal blocks and whose output equals the grouped convolution's; dense_to_grouped inverts it exactly.",
    parameters=("groups",),
    reference="PyTorch F.conv2d with groups=g vs groups=1",
)
def check_block_diagonal(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(701)
    for case in range(40):
        g = randint(1, 4, gen)
        c_in, c_out = g * randint(1, 3, gen), g * randint(1, 3, gen)
        k, s, p = randint(1, 3, gen), randint(1, 2, gen), randint(0, 1, gen)
        conv = nn.Conv2d(c_in, c_out, k, stride=s, padding=p, groups=g, bias=bool(case % 2)).to(DTYPE).to(device)
        with torch.no_grad():
            conv.weight.copy_(randn(*conv.weight.shape, gen=gen, device=device))
        x = randn(2, c_in, randint(k, 7, gen), randint(k, 7, gen), gen=gen, device=device)
        dense = grouped_to_dense(conv)
        t.exact(dense.groups == 1 and tuple(dense.weight.shape) == (c_out, c_in, k, k), "dense shape")
        mask = block_diagonal_mask(c_out, c_in, g).to(device)
        t.exact(bool((dense.weight[~mask] == 0).all()), f"off-block entries zero, g={g}")
        with torch.no_grad():
            t.close(dense(x), conv(x), f"dense vs grouped, g={g} c_in={c_in} c_out={c_out} k={k}")
            try:
                back = dense_to_grouped(dense, g)
            except ValueError as err:  # a dense form that is not block-diagonal cannot go back
                t.exact(False, f"round trip refused: {err}")
                continue
            t.exact(torch.equal(back.weight, conv.weight), "round trip weight")
    return t.verdict("random grouped convs vs their dense form (F.conv2d, groups=1)", dtype="float64")


@claim(
    "group.cost-divided-by-g",
    title="Grouping divides parameters and MACs by g",
    chapter=7,
    statement="For every g dividing C_in and C_out, a grouped convolution has C_out·(C_in/g)·k² weights and C_out·(C_in/g)·k²·H_out·W_out multiply-adds: the dense cost divided by g.",
    parameters=("groups",),
    reference="weight count of the built layer and non-zeros of its autograd Jacobian",
    sympy_role="proven for symbolic sizes",
)
def check_cost_divided_by_g(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    sym = grouped_cost_symbolic()
    t.exact(sp.simplify(sym["ratio"] - 1 / sp.Symbol("g", positive=True)) == 0, f"sympy ratio {sym['ratio']}")
    gen = generator(702)
    for _ in range(25):
        g = randint(1, 4, gen)
        c_in, c_out = g * randint(1, 3, gen), g * randint(1, 3, gen)
        k = randint(1, 3, gen)
        h, w = randint(k, 6, gen), randint(k, 6, gen)
        conv = nn.Conv2d(c_in, c_out, k, groups=g, bias=False).to(DTYPE).to(device)
        with torch.no_grad():
            conv.weight.copy_(randn(*conv.weight.shape, gen=gen, device=device))
        params, macs = grouped_cost(c_in, c_out, k, g, (h - k + 1, w - k + 1))
        t.exact(params == conv.weight.numel(), f"params g={g}")
        # MACs without padding = non-zeros of the layer's Jacobian (one per weight use)
        x = randn(1, c_in, h, w, gen=gen, device=device)
        jac = torch.autograd.functional.jacobian(lambda z: conv(z), x)
        t.exact(macs == int((jac != 0).sum()), f"MACs g={g} c_in={c_in} c_out={c_out} k={k} {h}x{w}")
        dense_params, dense_macs = grouped_cost(c_in, c_out, k, 1, (h - k + 1, w - k + 1))
        t.exact(dense_params == g * params and dense_macs == g * macs, "dense = g × grouped")
    return t.verdict("sympy ratio + weight count and Jacobian non-zeros of random layers")


@claim(
    "group.resnext-forms-linear",
    title="ResNeXt forms: summed 1×1 paths = one 1×1 over the concatenation; convert_block builds exactly those weights",
    chapter=7,
    statement="Σ_i W3_i z_i = [W3_1 … W3_C]·[z_1; …; z_C], the stacked first 1×1s are one 1×1 with stacked rows, and the per-path 3×3s are one grouped 3×3 (C groups) whose dense weight is block-diagonal — identities in the entries of the weights, checked for several (C, d); and convert_block's merged weights are these matrices with the paths' weights substituted.",
    parameters=("cardinality",),
    reference="sympy identities on symbolic weights; convert_block's weights vs the symbolic matrices evaluated",
    sympy_role="verified for finitely many sizes",
)
def check_resnext_forms_linear(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    gen = generator(703)
    for c_in, C, d, c_out in [(3, 2, 2, 3), (2, 3, 1, 2), (4, 2, 3, 2), (3, 4, 2, 5)]:
        ids = resnext_linear_identities(c_in, C, d, c_out)
        for layer in ("last", "first", "middle"):
            diff = ids[layer]
            t.exact(diff == sp.zeros(*diff.shape), f"{layer} layer C={C} d={d}: {list(diff)}")
        # and the block-diagonal pattern is exactly the grouped conv's mask
        merged = ids["merged_middle"]
        pattern = torch.tensor([[merged[r, s] != 0 for s in range(C * d)] for r in range(C * d)])
        t.exact(torch.equal(pattern, block_diagonal_mask(C * d, C * d, C)), "mask = grouped pattern")
        # convert_block: form (a) -> (b), (c); the merged weights are the symbolic matrices evaluated
        a = resnext_block("a", c_in, C, d, c_out).to(DTYPE).to(device)
        _randomize(a, gen)
        b, c = convert_block(a, "b"), convert_block(a, "c")
        syms = [s for mats in (ids["w1"], ids["w2"], ids["w3"]) for m in mats for s in m]
        evaluate = {name: sp.lambdify(syms, ids[name], "numpy") for name in ("merged_middle", "merged_first", "merged_last")}
        for tap in range(9):
            vals = []
            for key in ("w1", "w2", "w3"):
                for i, path in enumerate(a.paths):
                    w = {"w1": path[0].weight[:, :, 0, 0], "w2": path[3].weight.flatten(2)[:, :, tap],
                         "w3": path[6].weight[:, :, 0, 0]}[key]
                    vals += w.detach().cpu().flatten().tolist()
            as_tensor = lambda name: torch.tensor(evaluate[name](*vals).tolist(), dtype=DTYPE)  # noqa: E731
            dense2 = grouped_to_dense(c.conv2).weight.detach().cpu().flatten(2)[:, :, tap]
            t.exact(torch.equal(dense2, as_tensor("merged_middle")), f"grouped 3×3 tap {tap} = diag(W2_i), C={C} d={d}")
            if tap == 0:
                t.exact(torch.equal(c.conv1.weight.detach().cpu()[:, :, 0, 0], as_tensor("merged_first")),
                        f"form (c) first 1×1 = [W1_1; …; W1_C], C={C} d={d}")
                for blk in (b, c):
                    t.exact(torch.equal(blk.conv3.weight.detach().cpu()[:, :, 0, 0], as_tensor("merged_last")),
                            f"form ({blk.form}) last 1×1 = [W3_1 … W3_C], C={C} d={d}")
    return t.verdict("sympy identities on symbolic weights; convert_block's weights = the matrices evaluated",
                     case_unit="identities")


@claim(
    "group.resnext-forms-equal",
    title="ResNeXt's three forms compute the same function, BN and ReLU included",
    chapter=7,
    statement="For random weights and BN statistics, with every BN's eps drawn log-uniformly from [1e-6, 1] and momentum from [0.01, 0.99] (the paths' BNs of one layer sharing theirs), identity and projection shortcuts: convert_block between any two of the forms (a), (b), (c) gives a block whose output equals the original's in float64 to 1e-12, in eval mode and in training mode, and whose running statistics after a training step equal the original's.",
    parameters=("eps", "momentum"),
    reference="the original block run in PyTorch (eval and training mode)",
)
def check_resnext_forms_equal(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(704)
    configs = [(256, 32, 4, 256), (8, 4, 2, 8), (6, 3, 3, 10), (5, 2, 1, 4)]
    for c_in, C, d, c_out in configs:
        for src in FORMS:
            block = resnext_block(src, c_in, C, d, c_out).to(DTYPE).to(device)
            _randomize(block, gen)
            _randomize_bn_settings(block, gen)
            block.eval()
            hw = 6 if c_in > 16 else 5
            x = randn(2, c_in, hw, hw, gen=gen, device=device)
            nxt, nxt2 = FORMS[(FORMS.index(src) + 1) % 3], FORMS[(FORMS.index(src) + 2) % 3]
            with torch.no_grad():
                ref = block(x)
                # training mode: one forward of a copy of the original updates its running statistics
                trained = copy.deepcopy(block).train()
                ref_train = trained(x)
                others = {dst: convert_block(block, dst) for dst in (nxt, nxt2)}
                # a round trip through the other two forms restores every parameter exactly
                back = convert_block(convert_block(others[nxt], nxt2), src)
                sd0, sd1 = block.state_dict(), back.state_dict()
                t.exact(sd0.keys() == sd1.keys() and all(torch.equal(sd0[k], sd1[k]) for k in sd0), "round trip")
                t.exact(_bn_settings(back) == _bn_settings(block), f"round trip keeps eps/momentum, {src}")
                for dst, other in others.items():
                    t.exact(other.form == dst and other is not block and not other.training,
                            "new module of the target form, eval mode kept")
                    t.close(other(x), ref, f"eval {src}->{dst} C={C} d={d}")
                    # batch statistics are per channel, so the converted block still agrees in training mode
                    other.train()
                    t.close(other(x), ref_train, f"train {src}->{dst} C={C} d={d}")
                    # running statistics after the step, every BN (momentum), read back in the source form
                    stepped = convert_block(other.eval(), src).state_dict()
                    for k, v in trained.state_dict().items():
                        if "running" in k:
                            t.close(stepped[k], v, f"running stats {k} {src}->{dst}")
    return t.verdict("random blocks, every pair of forms, eval and train mode", dtype="float64")


@claim(
    "group.resnext-table2",
    title="ResNeXt Table 2: width d for each cardinality C at about constant parameters",
    chapter=7,
    reference="conv weight count of the built form-(c) blocks; the integer d with the closest count by enumeration",
    sympy_role="derived",
    statement="Solving C·(256·d + 9·d² + 256·d) = 69,632 (the C = 1, d = 64 block) for d and rounding to the nearest integer (equivalently: rounding up, or picking the integer d with the closest parameter count) gives the paper's d = 64, 40, 24, 14, 4 for C = 1, 2, 4, 8, 32; the table's blocks then have 0 % to 2.7 % more parameters than the baseline (truncating the root would give none of the d for C > 1).",
)
def check_resnext_table2(device: str = "cpu"):
    check_device(device)
    t = Tally()
    expr = resnext_params_symbolic()
    C, d, c, k = sp.symbols("C d c k", positive=True)
    t.exact(expr.subs({C: 32, d: 4, c: 256, k: 3}) == 70144, "paper's ~70k for 32x4d")
    base = resnext_params(1, 64)
    for card, d_paper in TABLE2.items():
        sol = table2_width(card)
        t.exact(sol["nearest"] == d_paper, f"C={card}: nearest {sol['nearest']} vs paper {d_paper}")
        t.exact(sol["ceil"] == d_paper, f"C={card}: ceil {sol['ceil']} vs paper {d_paper}")
        closest = min(range(1, 2 * 64), key=lambda dd: abs(resnext_params(card, dd) - resnext_params(1, 64)))
        t.exact(closest == d_paper, f"C={card}: closest-parameter width {closest} vs paper {d_paper}")
        if card > 1:
            t.exact(sol["floor"] != d_paper, f"C={card}: floor should not reproduce the table")
        # independent count: the conv weights of the actual form-(c) module
        block = resnext_block("c", 256, card, d_paper, 256)
        n = sum(m.weight.numel() for m in block.modules() if isinstance(m, nn.Conv2d))
        t.exact(n == resnext_params(card, d_paper) == int(expr.subs({C: card, d: d_paper, c: 256, k: 3})),
                f"C={card}: module weights {n}")
        excess = Fraction(n - base, base)
        t.exact(0 <= excess < Fraction(27, 1000), f"C={card}: excess {float(excess):.4f}")
        floor_note = ""
        if card > 1:
            under = Fraction(resnext_params(card, sol["floor"]) - base, base)
            floor_note = f"; truncated d = {sol['floor']}: {float(100 * under):+.2f} %"
        t.note(f"C={card:2d}: root d = {sol['real']:.2f}, paper d = {d_paper}, params {n:,} "
               f"({float(100 * excess):+.2f} % vs {base:,}){floor_note}")
    return t.verdict("sympy root of the parameter equation + weight count of built blocks")


alias("group.depthwise-separable-ratio", "cost.depthwise-ratio",
      "the depthwise separable cost ratio 1/C_out + 1/k² is chapter 4's claim; chapter 7 cites it")


@claim(
    "group.channel-shuffle",
    title="Channel shuffle is a permutation that lets information cross groups",
    chapter=7,
    statement="For all g, n ≤ 5 (g groups of n channels): channel_shuffle equals nn.ChannelShuffle and channel_unshuffle inverts it; composing grouped 1×1 convolutions, each output group depends on exactly one input group without a shuffle and on exactly min(n, g) input groups with one.",
    parameters=("groups", "channels per group"),
    reference="torch.nn.ChannelShuffle; non-zero blocks of the composed weight read off PyTorch",
)
def check_channel_shuffle(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    gen = generator(707)
    for g, n in itertools.product(range(1, 6), range(1, 6)):
        c = g * n
        x = randn(2, c, 3, 2, gen=gen, device=device)
        y = channel_shuffle(x, g)
        t.exact(torch.equal(y, nn.ChannelShuffle(g)(x)), f"vs nn.ChannelShuffle g={g} n={n}")
        t.exact(torch.equal(channel_unshuffle(y, g), x), f"inverse g={g} n={n}")
        # index formula: output a*g + b <- input b*n + a
        src = [b * n + a for a in range(n) for b in range(g)]
        t.exact(torch.equal(y, x[:, src]), f"index formula g={g} n={n}")
        for shuffle in (False, True):
            conn = group_connectivity(g, n, shuffle)
            want = min(n, g) if shuffle else 1
            t.exact(bool((conn.sum(dim=1) == want).all()), f"pattern g={g} n={n} shuffle={shuffle}")
            # numbers: random grouped 1x1 weights, the composed matrix's non-zero blocks
            w1 = randn(c, n, 1, 1, gen=gen, device=device)
            w2 = randn(c, n, 1, 1, gen=gen, device=device)
            m = _composed_matrix(w1, w2, g, shuffle, device)
            blocks = (m.reshape(g, n, g, n) != 0).any(dim=3).any(dim=1).cpu()
            t.exact(torch.equal(blocks, conn), f"numeric blocks g={g} n={n} shuffle={shuffle}")
    return t.verdict("all g, n ≤ 5: vs nn.ChannelShuffle, inverse, composed-weight blocks", case_unit="comparisons")


# --------------------------------------------------------------------------------------
# Private helpers
# --------------------------------------------------------------------------------------


def _check_groups(in_channels: int, out_channels: int, groups: int) -> None:
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"channel counts must be >= 1, got in={in_channels}, out={out_channels}")
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"channels must be divisible by groups: in_channels={in_channels}, "
                         f"out_channels={out_channels}, groups={groups}")


def _conv(c_in: int, c_out: int, k: int, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups, bias=False)


def _conv_like(conv: nn.Conv2d, groups: int) -> nn.Conv2d:
    return nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                     padding=conv.padding, dilation=conv.dilation, groups=groups, bias=conv.bias is not None,
                     padding_mode=conv.padding_mode).to(dtype=conv.weight.dtype, device=conv.weight.device)


def _bn_state(bns: list[nn.BatchNorm2d]) -> dict:
    """The per-path BNs concatenated into one.  They must share ``eps``, ``momentum``, ``affine`` and
    ``track_running_stats`` (one BN has one of each); ``ValueError`` otherwise."""
    settings = {(b.eps, b.momentum, b.affine, b.track_running_stats) for b in bns}
    if len(settings) != 1:
        raise ValueError("the paths' BNs must have the same eps and momentum (and affine, track_running_stats) to "
                         f"merge into one BN, got (eps, momentum, affine, track_running_stats) = "
                         f"{sorted(settings, key=str)}")
    b0 = bns[0]
    cat = lambda name: (torch.cat([getattr(b, name).detach() for b in bns])  # noqa: E731
                        if getattr(b0, name) is not None else None)
    return {
        "weight": cat("weight"),
        "bias": cat("bias"),
        "running_mean": cat("running_mean"),
        "running_var": cat("running_var"),
        "num_batches_tracked": b0.num_batches_tracked.clone() if b0.num_batches_tracked is not None else None,
        "eps": b0.eps,
        "momentum": b0.momentum,
        "affine": b0.affine,
        "track_running_stats": b0.track_running_stats,
        "like": b0.running_mean if b0.running_mean is not None else next(iter(b0.parameters()), None),
        "training": b0.training,
    }


def _make_bn(state: dict, lo: int, hi: int) -> nn.BatchNorm2d:
    """A BN over channels ``lo:hi`` of ``state``, built with the source's ``eps``, ``momentum``,
    ``affine`` and ``track_running_stats``, holding its parameters and running statistics."""
    bn = nn.BatchNorm2d(hi - lo, eps=state["eps"], momentum=state["momentum"], affine=state["affine"],
                        track_running_stats=state["track_running_stats"])
    like = state["like"]
    if like is not None:
        bn = bn.to(dtype=like.dtype, device=like.device)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            if state[name] is not None:
                getattr(bn, name).copy_(state[name][lo:hi])
        if state["num_batches_tracked"] is not None:
            bn.num_batches_tracked.copy_(state["num_batches_tracked"])
    return bn.train(state["training"])


def _clone_shortcut(block: ResNeXtBlock) -> nn.Module:
    """The block's shortcut as an independent copy: the same modules with the same configuration
    (the projection BN's eps, momentum, ...), parameters and statistics."""
    return copy.deepcopy(block.shortcut)


def _canonical(block: ResNeXtBlock) -> dict:
    """Per-path weights ``w1[i] (d, C_in, 1, 1)``, ``w2[i] (d, d, 3, 3)``, merged ``w3 (C_out, C·d, 1, 1)``, BN states."""
    C, d = block.cardinality, block.width
    if block.form in ("a", "b"):
        w1 = [p[0].weight.detach().clone() for p in block.paths]
        w2 = [p[3].weight.detach().clone() for p in block.paths]
        bn1 = _bn_state([p[1] for p in block.paths])
        bn2 = _bn_state([p[4] for p in block.paths])
        if block.form == "a":
            w3 = torch.cat([p[6].weight.detach() for p in block.paths], dim=1)
        else:
            w3 = block.conv3.weight.detach().clone()
    else:
        w1 = [block.conv1.weight.detach()[i * d:(i + 1) * d].clone() for i in range(C)]
        w2 = [block.conv2.weight.detach()[i * d:(i + 1) * d].clone() for i in range(C)]
        bn1, bn2 = _bn_state([block.bn1]), _bn_state([block.bn2])
        w3 = block.conv3.weight.detach().clone()
    return {"w1": w1, "w2": w2, "w3": w3, "bn1": bn1, "bn2": bn2}


def _randomize(block: nn.Module, gen: torch.Generator) -> None:
    """Random weights (scaled to keep activations O(1)) and random BN affine and running statistics."""
    dev = next(block.parameters()).device
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(randn(*m.weight.shape, gen=gen, device=dev) / fan_in**0.5)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(1 + 0.3 * randn(n, gen=gen, device=dev))
                m.bias.copy_(0.3 * randn(n, gen=gen, device=dev))
                m.running_mean.copy_(0.2 * randn(n, gen=gen, device=dev))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen, dtype=DTYPE).to(dev))


def _randomize_bn_settings(block: "ResNeXtBlock", gen: torch.Generator) -> None:
    """Random eps (log-uniform on [1e-6, 1]) and momentum (uniform on [0.01, 0.99]) for every BN role of
    the block; the paths' BNs of one layer share theirs (they merge into one BN)."""
    roles: dict[str, list[nn.Module]] = {}
    for name, m in block.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            role = name.split(".")[-1] if not name.startswith("paths.") else "paths." + name.split(".")[-1]
            roles.setdefault(role, []).append(m)
    for role in sorted(roles):
        u = torch.rand(2, generator=gen, dtype=torch.float64)
        eps = float(torch.exp(math.log(1e-6) + u[0] * (math.log(1.0) - math.log(1e-6))))
        momentum = float(0.01 + 0.98 * u[1])
        for m in roles[role]:
            m.eps, m.momentum = eps, momentum


def _bn_settings(block: nn.Module) -> set[tuple]:
    """The distinct ``(eps, momentum, affine, track_running_stats)`` of the block's BNs."""
    return {(m.eps, m.momentum, m.affine, m.track_running_stats) for m in block.modules()
            if isinstance(m, nn.BatchNorm2d)}


def _composed_matrix(w1: torch.Tensor, w2: torch.Tensor, groups: int, shuffle: bool, device: str) -> torch.Tensor:
    """Channel matrix of ``gconv2(shuffle(gconv1(x)))`` for grouped 1×1 weights, read off PyTorch by feeding the identity."""
    c = w1.shape[0]
    eye = torch.eye(c, dtype=w1.dtype, device=device)[:, :, None, None]  # batch of unit inputs
    z = F.conv2d(eye, w1, groups=groups)
    if shuffle:
        z = channel_shuffle(z, groups)
    y = F.conv2d(z, w2, groups=groups)[:, :, 0, 0]  # row b = response to input channel b
    return y.T
