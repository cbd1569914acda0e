"""Chapter 10: dilated (atrous) convolution, receptive-field growth and gridding.

A convolution with dilation ``d`` reads taps ``d`` apart:

    y[u] = Σ_a w[a] x_pad[s u + d a]

which is the ordinary convolution with the *zero-inserted* kernel
``w_d[d a] = w[a]`` (``d - 1`` zeros between taps), of effective size ``d(k - 1) + 1``.

A stack of stride-1 layers with kernels ``k_l`` and dilations ``d_l`` reads the input
offsets of the Minkowski sum ``Σ_l d_l·{0, …, k_l - 1}``: its receptive field spans
``1 + Σ_l d_l (k_l - 1)`` positions, but it may skip some of them (gridding).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import sympy as sp
import torch
import torch.nn.functional as F

from .claims import Tally, claim
from .numerics import check_device, generator, randint, randn

__all__ = [
    "effective_kernel_size",
    "dilate_kernel",
    "stack_receptive_field",
    "stack_offsets",
    "stack_path_counts",
    "plot_gridding",
]


# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------


def effective_kernel_size(kernel_size: int, dilation: int) -> int:
    """``d(k - 1) + 1``: the span of a dilated kernel. Rules: kernel_size, dilation ≥ 1."""
    _check_int(kernel_size=(kernel_size, 1), dilation=(dilation, 1))
    return dilation * (kernel_size - 1) + 1


def dilate_kernel(weight: torch.Tensor, dilation: int | Sequence[int]) -> torch.Tensor:
    """Insert ``d - 1`` zeros between neighbouring taps on every spatial axis.

    ``weight``: ``C_out × C_in × k…`` (1-D or 2-D); result: ``C_out × C_in × (d(k-1)+1)…``
    with ``W_d[…, d a] = W[…, a]`` and zeros elsewhere.
    Rules: dilation ≥ 1 (an int, or one per spatial axis).
    """
    nd = weight.dim() - 2
    if nd not in (1, 2):
        raise ValueError(f"weight must be C_out × C_in × k (3-D) or × kh × kw (4-D), got shape {tuple(weight.shape)}")
    d = (dilation,) * nd if isinstance(dilation, int) else tuple(dilation)
    if len(d) != nd:
        raise ValueError(f"dilation must be an int or one int per spatial axis ({nd}), got {dilation!r}")
    for j, dj in enumerate(d):
        _check_int(**{f"dilation[{j}]": (dj, 1)})
    k = weight.shape[2:]
    out = weight.new_zeros(*weight.shape[:2], *[effective_kernel_size(k[j], d[j]) for j in range(nd)])
    out[(slice(None), slice(None), *[slice(None, None, d[j]) for j in range(nd)])] = weight
    return out


def stack_receptive_field(kernel_sizes: Sequence[int], dilations: Sequence[int]) -> int:
    """Span of the receptive field of stride-1 layers stacked: ``1 + Σ_l d_l (k_l - 1)``.

    Each layer widens the span by its effective size minus one. With ``k = 3`` and
    ``d_l = 2^l`` (``l = 0 … L-1``) this is ``2^{L+1} - 1``: exponential in depth.
    Rules: same number of kernel sizes and dilations, each ≥ 1.
    """
    ks, ds = _check_stack(kernel_sizes, dilations)
    return 1 + sum(d * (k - 1) for k, d in zip(ks, ds))


def stack_offsets(kernel_sizes: Sequence[int], dilations: Sequence[int]) -> np.ndarray:
    """The input offsets a stack reads: the Minkowski sum ``Σ_l d_l·{0, …, k_l - 1}`` (sorted).

    An offset missing from it, inside ``[0, span)``, is a *hole*: the stack never sees that
    input, whatever its weights. If every ``d_l`` is a multiple of ``g > 1``, so is every offset.
    """
    ks, ds = _check_stack(kernel_sizes, dilations)
    reach = {0}
    for k, d in zip(ks, ds):
        reach = {r + d * a for r in reach for a in range(k)}
    return np.array(sorted(reach))


def stack_path_counts(kernel_sizes: Sequence[int], dilations: Sequence[int]) -> np.ndarray:
    """Number of tap paths from each input offset to one output (all-ones kernels).

    ``counts[o]`` for ``o = 0 … span-1``: the coefficients of ``Π_l (1 + z^{d_l} + … + z^{d_l(k_l-1)})``.
    Zero exactly at the holes. Works per axis; a 2-D stack of square kernels is the outer product.
    """
    ks, ds = _check_stack(kernel_sizes, dilations)
    counts = np.array([1], dtype=np.int64)
    for k, d in zip(ks, ds):
        taps = np.zeros(effective_kernel_size(k, d), dtype=np.int64)
        taps[::d] = 1
        counts = np.convolve(counts, taps)
    return counts


def plot_gridding(schedules: Sequence[Sequence[int]] = ((1, 2, 4), (2, 2, 2), (1, 2, 3)), kernel_size: int = 3,
                  axes=None):
    """For each dilation schedule (3×3 kernels, stride 1), the 2-D map of tap paths per input
    offset; black cells are holes (never read)."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, len(schedules), figsize=(3.6 * len(schedules), 3.6))
    for ax, ds in zip(np.atleast_1d(axes), schedules):
        c = stack_path_counts([kernel_size] * len(ds), ds)
        img = np.outer(c, c).astype(float)
        shown = np.ma.masked_where(img == 0, img)
        cmap = plt.get_cmap("viridis").with_extremes(bad="black")
        ax.imshow(shown, cmap=cmap, interpolation="nearest")
        holes = int((img == 0).sum())
        ax.set_title(f"d = {tuple(ds)}: span {len(c)}, {holes} of {img.size} holes", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    return axes


# --------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------


@claim(
    "dilate.zero-inserted",
    title="A dilated convolution is a convolution with a zero-inserted kernel",
    chapter=10,
    statement="conv(x, W, dilation d) = conv(x, W_d) with W_d the kernel spread by d − 1 zeros between taps, of effective size d(k − 1) + 1, for every stride and padding.",
)
def check_zero_inserted(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(1001)
    for case in range(40):
        nd = 1 + case % 2
        k = tuple(randint(1, 4, gen) for _ in range(nd))
        d = tuple(randint(1, 4, gen) for _ in range(nd))
        s, p = randint(1, 2, gen), randint(0, 2, gen)
        size = tuple(d[j] * (k[j] - 1) + randint(1, 5, gen) for j in range(nd))
        x = randn(2, 2, *size, gen=gen, device=device)
        w = randn(3, 2, *k, gen=gen, device=device)
        conv = F.conv1d if nd == 1 else F.conv2d
        wd = dilate_kernel(w, d)
        if not t.exact(tuple(wd.shape[2:]) == tuple(d[j] * (k[j] - 1) + 1 for j in range(nd)), f"shape k={k} d={d}"):
            continue
        t.close(conv(x, wd, stride=s, padding=p), conv(x, w, stride=s, padding=p, dilation=d), f"{nd}-D k={k} d={d} s={s} p={p}")
    return t.verdict("random layers vs F.conv1d/F.conv2d with dilation", dtype="float64")


@claim(
    "dilate.receptive-growth",
    title="Stacked dilations grow the receptive field exponentially",
    chapter=10,
    statement="Stride-1 layers with kernels k_l and dilations d_l see a span of 1 + Σ d_l (k_l − 1) inputs; with k = 3 and d_l = 2^l for L layers that is 2^(L+1) − 1, against 2L + 1 without dilation.",
)
def check_receptive_growth(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    # symbolic: the span formula summed over d_l = 2^l, k = 3 simplifies to 2^(L+1) - 1
    L, l = sp.symbols("L l", integer=True, positive=True)
    span = 1 + sp.summation(2**l * (3 - 1), (l, 0, L - 1))
    t.exact(sp.simplify(span - (2 ** (L + 1) - 1)) == 0, f"sympy: span = {sp.simplify(span)}")
    # measured: support of the impulse response of a stack of random positive kernels
    gen = generator(1002)
    for case in range(40):
        depth = randint(1, 4, gen)
        ks = [randint(1, 4, gen) for _ in range(depth)]
        ds = [2**j for j in range(depth)] if case % 2 == 0 else [randint(1, 4, gen) for _ in range(depth)]
        span_pred = stack_receptive_field(ks, ds)
        support = _measured_support(ks, ds, gen, device)
        t.exact(int(support.max() - support.min() + 1) == span_pred, f"k={ks} d={ds}: span {span_pred}")
        if all(k == 3 for k in ks) and ds == [2**j for j in range(depth)]:
            t.exact(span_pred == 2 ** (depth + 1) - 1, f"exponential schedule depth {depth}")
    for depth in range(1, 8):
        t.exact(stack_receptive_field([3] * depth, [2**j for j in range(depth)]) == 2 ** (depth + 1) - 1, f"depth {depth}")
    return t.verdict("sympy sum + impulse responses of random stacks (F.conv1d) + closed form for depth ≤ 7", case_unit="cases")


@claim(
    "dilate.gridding",
    title="Gridding: the offsets a dilated stack reads are a Minkowski sum, with holes",
    chapter=10,
    statement="A stride-1 dilated stack reads exactly the input offsets Σ_l d_l·{0, …, k_l − 1}; if all d_l share a factor g > 1 it misses every offset not divisible by g, while k = 3 with d = 1, 2, 4, … misses none.",
)
def check_gridding(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    gen = generator(1003)
    for case in range(50):
        depth = randint(1, 4, gen)
        ks = [randint(2, 3, gen) for _ in range(depth)]
        ds = [randint(1, 4, gen) for _ in range(depth)]
        if case % 3 == 0:
            g = randint(2, 3, gen)
            ds = [g * randint(1, 2, gen) for _ in range(depth)]
        support = _measured_support(ks, ds, gen, device)
        offsets = stack_offsets(ks, ds)
        t.exact(bool(np.array_equal(offsets, support)), f"k={ks} d={ds}: offsets")
        t.exact(bool(np.array_equal(np.nonzero(stack_path_counts(ks, ds))[0], support)), f"k={ks} d={ds}: path counts")
        g = math.gcd(*ds)
        if g > 1:
            t.exact(bool(np.all(support % g == 0)), f"d={ds}: only multiples of {g}")
    for depth in range(1, 7):
        ds = [2**j for j in range(depth)]
        t.exact(len(stack_offsets([3] * depth, ds)) == stack_receptive_field([3] * depth, ds), f"no holes for d={ds}")
    return t.verdict("impulse responses of random positive stacks (F.conv1d) vs Minkowski sum", case_unit="cases")


# --------------------------------------------------------------------------------------
# Private helpers
# --------------------------------------------------------------------------------------


def _measured_support(ks: Sequence[int], ds: Sequence[int], gen, device: str) -> np.ndarray:
    """Offsets o with a non-zero response: run a unit impulse through the stack with positive
    random kernels (no cancellation possible), read which inputs reach output 0 via autograd."""
    span = 1 + sum(d * (k - 1) for k, d in zip(ks, ds))
    x = torch.zeros(1, 1, span, dtype=torch.float64, device=device, requires_grad=True)
    h = x
    for k, d in zip(ks, ds):
        w = randn(1, 1, k, gen=gen, device=device).abs() + 0.1
        h = F.conv1d(h, w, dilation=d)
    (grad,) = torch.autograd.grad(h[0, 0, 0], x)
    return np.nonzero(grad[0, 0].cpu().numpy())[0]


def _check_int(**values: tuple[int, int]) -> None:
    for name, (value, low) in values.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise ValueError(f"{name} must be an int, got {value!r}")
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")


def _check_stack(kernel_sizes: Sequence[int], dilations: Sequence[int]) -> tuple[list[int], list[int]]:
    ks, ds = list(kernel_sizes), list(dilations)
    if len(ks) != len(ds) or not ks:
        raise ValueError(f"kernel_sizes and dilations must be non-empty and of the same length, got {len(ks)} and {len(ds)}")
    for j, (k, d) in enumerate(zip(ks, ds)):
        _check_int(**{f"kernel_sizes[{j}]": (k, 1), f"dilations[{j}]": (d, 1)})
    return ks, ds
