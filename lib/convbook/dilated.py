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

import itertools
import math
from typing import Sequence

import numpy as np
import sympy as sp
import torch
import torch.nn.functional as F

from .claims import Tally, claim
from .conventions import as_int, as_tuple, resolve_padding
from .numerics import check_device, generator, randint, randn

__all__ = [
    "effective_kernel_size",
    "dilate_kernel",
    "stack_receptive_field",
    "stack_offsets",
    "stack_path_counts",
    "conv_via_zero_inserted",
    "dilated_conv_by_polyphase",
    "hdc_max_gap",
    "satisfies_hdc",
    "plot_gridding",
]


# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------


def effective_kernel_size(kernel_size: int, dilation: int) -> int:
    """``d(k - 1) + 1``: the span of a dilated kernel. Rules: kernel_size, dilation ≥ 1 (integers)."""
    return as_int(dilation, "dilation", 1) * (as_int(kernel_size, "kernel_size", 1) - 1) + 1


def dilate_kernel(weight: torch.Tensor, dilation: int | Sequence[int]) -> torch.Tensor:
    """Insert ``d - 1`` zeros between neighbouring taps on every spatial axis.

    ``weight``: ``C_out × C_in × k…`` (1-D or 2-D); result: ``C_out × C_in × (d(k-1)+1)…``
    with ``W_d[…, d a] = W[…, a]`` and zeros elsewhere.
    Rules: dilation ≥ 1 (an int, or one per spatial axis).
    """
    nd = weight.dim() - 2
    if nd not in (1, 2):
        raise ValueError(f"weight must be C_out × C_in × k (3-D) or × kh × kw (4-D), got shape {tuple(weight.shape)}")
    d = as_tuple(dilation, nd, "dilation", 1)
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


def conv_via_zero_inserted(x: torch.Tensor, weight: torch.Tensor, stride: int | Sequence[int] = 1,
                           padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1) -> torch.Tensor:
    """A dilated convolution computed as an undilated one with :func:`dilate_kernel`'s zero-inserted kernel:
    ``conv(x, W_d, stride, padding)``. 1-D or 2-D; stride, padding and dilation an int or one per axis."""
    nd = weight.dim() - 2
    conv = F.conv1d if nd == 1 else F.conv2d
    d = as_tuple(dilation, nd, "dilation", 1)
    s = as_tuple(stride, nd, "stride", 1)
    pads = resolve_padding(padding, tuple(weight.shape[2:]), s, d, nd)
    if all(a == b for a, b in pads):
        return conv(x, dilate_kernel(weight, d), stride=s, padding=tuple(a for a, _ in pads))
    return conv(F.pad(x, [q for pair in reversed(pads) for q in pair]), dilate_kernel(weight, d), stride=s)


def dilated_conv_by_polyphase(x: torch.Tensor, weight: torch.Tensor, dilation: int | Sequence[int],
                              padding: int | Sequence[int] = 0) -> torch.Tensor:
    """A stride-1 dilated 2-D convolution computed as ``d_h·d_w`` undilated convolutions (space-to-batch).

    Pad ``x``; split it into its polyphase components ``x_{φψ}[m, n] = x_pad[φ + d_h m, ψ + d_w n]``
    (``0 ≤ φ < d_h``, ``0 ≤ ψ < d_w``); convolve each with ``W`` *undilated*; interleave:
    ``y[φ + d_h m, ψ + d_w n] = conv(x_{φψ}, W)[m, n]``. It works because output ``u = φ + d m`` reads
    ``x_pad[u + d a] = x_pad[φ + d(m + a)] = x_{φ}[m + a]``: the taps of a dilated kernel never leave one
    sub-grid. Rules: x is ``N × C × H × W``, weight ``C_out × C_in × kh × kw``; dilation, padding per axis.
    """
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(f"x and weight must be 4-D (N × C × H × W and C_out × C_in × kh × kw), got {tuple(x.shape)} "
                         f"and {tuple(weight.shape)}")
    d = as_tuple(dilation, 2, "dilation", 1)
    k = weight.shape[2:]
    (top, bottom), (left, right) = resolve_padding(padding, tuple(k), 1, d, 2)  # ints, per-axis, 'same', 'valid'
    xp = F.pad(x, (left, right, top, bottom))
    out_size = tuple(xp.shape[2 + j] - d[j] * (k[j] - 1) for j in range(2))
    if min(out_size) < 1:
        raise ValueError(f"dilated kernel larger than the padded input: output size {out_size}")
    out = x.new_zeros(x.shape[0], weight.shape[0], *out_size)
    for phi in range(min(d[0], out_size[0])):
        for psi in range(min(d[1], out_size[1])):
            sub = xp[:, :, phi::d[0], psi::d[1]]
            y = F.conv2d(sub, weight)
            rows, cols = len(range(phi, out_size[0], d[0])), len(range(psi, out_size[1], d[1]))
            out[:, :, phi::d[0], psi::d[1]] = y[:, :, :rows, :cols]
    return out


def hdc_max_gap(dilations: Sequence[int], kernel_size: int = 3) -> int:
    """Wang et al.'s ``M_2`` for 3-tap layers with dilations ``r_1, …, r_n`` (``n ≥ 2``):

        M_n = r_n,   M_i = max(M_{i+1} - 2 r_i, M_{i+1} - 2(M_{i+1} - r_i), r_i)   for i = n-1, …, 2.

    The hybrid-dilated-convolution (HDC) design rule asks ``M_2 ≤ K`` (the kernel size, 3), so that the
    first layer (``r_1 = 1``) fills every gap left by the others. Rules: kernel_size = 3 (the formula's
    ``2 r_i`` is the span of a 3-tap kernel); at least two dilations, each ≥ 1.
    """
    if as_int(kernel_size, "kernel_size", 1) != 3:
        raise ValueError(f"the HDC recursion is stated for 3-tap kernels, got kernel_size = {kernel_size}")
    rs = list(dilations)
    if len(rs) < 2:
        raise ValueError(f"the HDC recursion needs at least two dilations, got {rs}")
    rs = [as_int(r, f"dilations[{j}]", 1) for j, r in enumerate(rs)]
    m = rs[-1]
    for r in reversed(rs[1:-1]):
        m = max(m - 2 * r, m - 2 * (m - r), r)
    return m


def satisfies_hdc(dilations: Sequence[int], kernel_size: int = 3) -> bool:
    """Wang et al.'s HDC condition: ``r_1 = 1`` and ``M_2 ≤ K`` (:func:`hdc_max_gap`)."""
    return list(dilations)[0] == 1 and hdc_max_gap(dilations, kernel_size) <= kernel_size


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
    statement="For every dilation d ≥ 1, stride s ≥ 1 and padding p ≥ 0 (each per axis, 1-D and 2-D, inputs down to the dilated kernel's size), conv(x, W, stride s, padding p, dilation d) = conv(x, W_d, stride s, padding p) with W_d the kernel spread by d − 1 zeros between taps, of effective size d(k − 1) + 1.",
    parameters=("dilation", "stride", "padding", "per-axis sizes"),
    reference="PyTorch F.conv1d/F.conv2d with dilation",
)
def check_zero_inserted(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(1001)
    for case in range(60):
        nd = 1 + case % 2
        k = tuple(randint(1, 4, gen) for _ in range(nd))
        d = tuple(randint(1, 4, gen) for _ in range(nd))
        s = tuple(randint(1, 3, gen) for _ in range(nd))
        p = tuple(randint(0, 2, gen) for _ in range(nd))
        size = tuple(max(1, d[j] * (k[j] - 1) + 1 - 2 * p[j] + randint(0, 4, gen)) for j in range(nd))
        x = randn(2, 2, *size, gen=gen, device=device)
        w = randn(3, 2, *k, gen=gen, device=device)
        conv = F.conv1d if nd == 1 else F.conv2d
        wd = dilate_kernel(w, d)
        if not t.exact(tuple(wd.shape[2:]) == tuple(d[j] * (k[j] - 1) + 1 for j in range(nd)), f"shape k={k} d={d}"):
            continue
        what = f"{nd}-D size={size} k={k} d={d} s={s} p={p}"
        try:
            got = conv_via_zero_inserted(x, w, stride=s, padding=p, dilation=d)
        except (RuntimeError, ValueError) as err:
            t.exact(False, f"{what}: {err}")
            continue
        t.close(got, conv(x, w, stride=s, padding=p, dilation=d), what)
    return t.verdict("random layers (per-axis k, d, s, p) vs F.conv1d/F.conv2d with dilation", dtype="float64")


@claim(
    "dilate.receptive-growth",
    title="Stacked dilations grow the receptive field exponentially",
    chapter=10,
    statement="For every depth L ≥ 1, kernels k_l ≥ 1 and dilations d_l ≥ 1, L stride-1 layers see a span of 1 + Σ d_l (k_l − 1) inputs; with k = 3 and d_l = 2^l that is 2^(L+1) − 1 for every L (the geometric sum, evaluated by sympy for symbolic L), against 2L + 1 without dilation.",
    parameters=("depth", "kernel", "dilation"),
    reference="autograd through random positive F.conv1d stacks; sympy for the geometric sum",
    sympy_role="proven for symbolic sizes",
)
def check_receptive_growth(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    # symbolic: the span formula summed over d_l = 2^l, k = 3, for a symbolic depth L
    L, l = sp.symbols("L l", integer=True, positive=True)
    span = 1 + sp.summation(2**l * (3 - 1), (l, 0, L - 1))
    t.exact(sp.simplify(span - (2 ** (L + 1) - 1)) == 0, f"sympy: span = {sp.simplify(span)}")
    # measured: support of the gradient through a stack of random positive kernels
    gen = generator(1002)
    for case in range(60):
        depth = randint(1, 6, gen)
        ks = [randint(1, 4, gen) for _ in range(depth)]
        ds = [2**j for j in range(depth)] if case % 2 == 0 else [randint(1, 4, gen) for _ in range(depth)]
        span_pred = stack_receptive_field(ks, ds)
        support = _measured_support(ks, ds, gen, device)
        t.exact(int(support.max() - support.min() + 1) == span_pred, f"k={ks} d={ds}: span {span_pred}")
        if all(k == 3 for k in ks) and ds == [2**j for j in range(depth)]:
            t.exact(span_pred == 2 ** (depth + 1) - 1, f"exponential schedule depth {depth}")
    for depth in range(1, 8):
        t.exact(stack_receptive_field([3] * depth, [2**j for j in range(depth)]) == 2 ** (depth + 1) - 1, f"depth {depth}")
        t.exact(stack_receptive_field([3] * depth, [1] * depth) == 2 * depth + 1, f"undilated depth {depth}")
    return t.verdict("sympy sum (symbolic L) + autograd support of random stacks (F.conv1d) + depth ≤ 7", case_unit="cases")


@claim(
    "dilate.gridding",
    title="Gridding: the offsets a dilated stack reads are a Minkowski sum, with holes",
    chapter=10,
    statement="For every depth, kernels k_l ≥ 1 and dilations d_l ≥ 1, a stride-1 dilated stack reads exactly the input offsets Σ_l d_l·{0, …, k_l − 1}; if all d_l share a factor g > 1 it misses every offset not divisible by g, while k = 3 with d = 1, 2, 4, … misses none.",
    parameters=("depth", "kernel", "dilation"),
    reference="autograd through random positive F.conv1d stacks",
)
def check_gridding(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    gen = generator(1003)
    for case in range(60):
        depth = randint(1, 5, gen)
        ks = [randint(1, 4, gen) for _ in range(depth)]
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
    return t.verdict("autograd support of random positive stacks (F.conv1d) vs Minkowski sum", case_unit="cases")


@claim(
    "dilate.gridding-condition",
    title="When a dilated stack has holes: a shared factor, gcd = 1, and the HDC rule",
    chapter=10,
    statement="For stride-1 stacks of 3-tap layers with dilations r_1, …, r_n: (a) if all r_i share a factor g > 1 the stack has holes; (b) gcd(r_1, …, r_n) = 1 does not prevent them (r = (1, 5) misses offsets 3, 4, 8, 9 of its span 13); (c) Wang et al.'s HDC condition — r_1 = 1 and M_2 ≤ 3, where M_n = r_n and M_i = max(M_{i+1} − 2r_i, M_{i+1} − 2(M_{i+1} − r_i), r_i) — is sufficient for no holes for every n and every sequence (each layer splits a gap g left by the layers above it into pieces of at most max(r_i, g − 2r_i); checked exhaustively for all n ≤ 4 with r_i ≤ 12 and all n = 5 with r_i ≤ 6), and not necessary (r = (1, 3, 1) has no holes, M_2 = 5).",
    parameters=("dilation", "depth"),
    reference="brute-force coverage: PyTorch F.conv1d of an impulse through all-ones stacks, every sequence in range",
)
def check_gridding_condition(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    shared = hdc_true = hdc_dense = gcd1_holes = hdc_false_dense = 0
    # (a) shared factor, any r_1
    for n in range(1, 4):
        for rs in itertools.product(range(1, 9), repeat=n):
            g = math.gcd(*rs)
            if g > 1:
                shared += 1
                read = _coverage(rs, device)
                t.exact(len(read) < 2 * sum(rs) + 1 and bool(np.all(read % g == 0)), f"d={rs}: holes, multiples of {g}")
    # (b) the gcd = 1 counterexample
    read = _coverage((1, 5), device)
    t.exact(sorted(set(range(13)) - set(read.tolist())) == [3, 4, 8, 9], f"d=(1, 5) reads {read.tolist()}")
    # (c) HDC, exhaustively with r_1 = 1
    for n, top in ((2, 12), (3, 12), (4, 12), (5, 6)):
        for tail in itertools.product(range(1, top + 1), repeat=n - 1):
            rs = (1, *tail)
            read = _coverage(rs, device)
            dense = len(read) == 2 * sum(rs) + 1
            if satisfies_hdc(rs):
                hdc_true += 1
                hdc_dense += dense
                t.exact(dense, f"HDC holds for r={rs} but the stack has holes")
            else:
                hdc_false_dense += dense
            gcd1_holes += (not dense)
    t.exact(not satisfies_hdc((1, 3, 1)) and len(_coverage((1, 3, 1), device)) == 11, "r=(1, 3, 1): dense without HDC")
    t.note(f"{shared} sequences with a shared factor, all with holes; {gcd1_holes} of the {hdc_true + hdc_false_dense + gcd1_holes} "
           "with r_1 = 1 (so gcd 1) have holes")
    t.note(f"{hdc_true} sequences satisfy HDC, {hdc_dense} of them without holes; {hdc_false_dense} violate HDC "
           "and have no holes either")
    return t.verdict("every dilation sequence in range: brute-force coverage (F.conv1d impulse) vs shared factor and HDC",
                     case_unit="sequences")


@claim(
    "dilate.polyphase",
    title="A dilated convolution is d² undilated convolutions on the polyphase sub-grids",
    chapter=10,
    statement="For every dilation (d_h, d_w) ≥ 1, padding p ≥ 0 (per axis), kernel and channels, a stride-1 dilated 2-D convolution equals d_h·d_w undilated convolutions with the same kernel, one on each polyphase component x_pad[φ + d_h m, ψ + d_w n], interleaved back (space-to-batch, convolve, batch-to-space).",
    parameters=("dilation", "padding", "per-axis sizes"),
    reference="PyTorch F.conv2d with dilation",
)
def check_polyphase(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(1005)
    for case in range(60):
        k = (randint(1, 4, gen), randint(1, 4, gen))
        d = (randint(1, 4, gen), randint(1, 4, gen))
        p = (randint(0, 2, gen), randint(0, 2, gen))
        size = tuple(max(1, d[j] * (k[j] - 1) + 1 - 2 * p[j] + randint(0, 6, gen)) for j in range(2))
        c_in, c_out = randint(1, 3, gen), randint(1, 3, gen)
        x = randn(2, c_in, *size, gen=gen, device=device)
        w = randn(c_out, c_in, *k, gen=gen, device=device)
        what = f"size={size} k={k} d={d} p={p}"
        try:
            got = dilated_conv_by_polyphase(x, w, d, p)
        except (RuntimeError, ValueError) as err:
            t.exact(False, f"{what}: {err}")
            continue
        t.close(got, F.conv2d(x, w, padding=p, dilation=d), what)
    return t.verdict("random 2-D layers (per-axis k, d, p; outputs down to 1 pixel) vs F.conv2d with dilation",
                     dtype="float64")


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


def _coverage(dilations: Sequence[int], device: str, kernel_size: int = 3) -> np.ndarray:
    """Offsets read by a stack of all-ones ``kernel_size``-tap layers, by brute force: an impulse through
    ``F.conv1d`` (stride 1, no padding); offset ``o`` is read iff output 0 depends on input ``o``."""
    span = 1 + sum(d * (kernel_size - 1) for d in dilations)
    x = torch.zeros(1, 1, 2 * span - 1, dtype=torch.float64, device=device)
    x[0, 0, span - 1] = 1.0
    h = x
    for d in dilations:
        h = F.conv1d(h, torch.ones(1, 1, kernel_size, dtype=torch.float64, device=device), dilation=d)
    counts = h[0, 0].flip(0).cpu().numpy()  # output u reads input u + o: the impulse at span-1 is offset span-1-u
    return np.nonzero(counts)[0]


def _check_int(**values: tuple[int, int]) -> None:
    """Each ``name=(value, low)``: an integer (Python, numpy or 0-d tensor) ≥ low, else ValueError naming it."""
    for name, (value, low) in values.items():
        as_int(value, name, low)


def _check_stack(kernel_sizes: Sequence[int], dilations: Sequence[int]) -> tuple[list[int], list[int]]:
    ks, ds = list(kernel_sizes), list(dilations)
    if len(ks) != len(ds) or not ks:
        raise ValueError(f"kernel_sizes and dilations must be non-empty and of the same length, got {len(ks)} and {len(ds)}")
    ks = [as_int(k, f"kernel_sizes[{j}]", 1) for j, k in enumerate(ks)]
    ds = [as_int(d, f"dilations[{j}]", 1) for j, d in enumerate(ds)]
    return ks, ds
