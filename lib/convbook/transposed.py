"""Chapter 9: transposed convolution, its adjoint identity, and checkerboard artifacts.

A transposed convolution with weight ``W`` (PyTorch layout ``C_in × C_out/g × k…``),
stride ``s``, padding ``p``, dilation ``d`` and output padding ``op`` *scatters* every
input sample into the output:

    out_full[c, s·m + d·a] += Σ_i y[i, m] W[i, c, a],     out = out_full[p : p + L]

with ``L = (M - 1)s - 2p + d(k - 1) + op + 1`` outputs along an axis of length ``M``.
It is the adjoint (matrix transpose) of the convolution with the same arguments, equal to a
stride-1 convolution over the zero-upsampled input padded by ``d(k-1) - p`` with the
flipped, channel-transposed kernel.

Checkerboards: with all-ones weights, output ``j`` of a 1-D transposed convolution (no
padding) receives one tap for every ``a`` in range with ``d·a ≡ j (mod s)``, so in the
interior the count depends only on ``r = j mod s``: ``c(r) = #{a < k : d·a ≡ r (mod s)}``
(``⌈(k - r)/s⌉`` for ``d = 1``), uniform iff ``gcd(d, s) = 1`` and ``s | k``.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .claims import Tally, claim
from .plotting import mark_uniform
from .conventions import as_int
from .conventions import as_tuple as per_axis
from .numerics import as_tuple, check_device, generator, randint, randn
from .shapes import conv_output_size, conv_transpose_output_size

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

__all__ = [
    "required_output_padding",
    "conv_transpose_by_scatter",
    "adjoint_inner_products",
    "equivalent_conv_padding",
    "transposed_kernel_as_conv",
    "transposed_as_conv",
    "overlap_count",
    "interior_overlap",
    "overlap_count_2d",
    "overlap_count_nd",
    "overlap_is_uniform",
    "polyphase_sums",
    "resize_conv",
    "resize_conv_constant_region",
    "nearest_resize_conv_kernel",
    "subpixel_conv",
    "pixel_shuffle_as_transposed",
    "plot_scatter_steps",
    "plot_overlap_patterns",
    "plot_checkerboard",
    "period2_fraction",
    "checkerboard_demo",
    "plot_checkerboard_image",
]


# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------


def required_output_padding(size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """The ``output_padding`` that makes a transposed convolution return the size ``size``
    that the convolution with the same arguments started from.

    A convolution maps every ``n`` with the same ``(n + 2p - d(k-1) - 1) // s`` to the same
    output size, so the transposed map cannot know which one was meant; the remainder

        op = (n + 2p - d(k - 1) - 1) mod s         (0 ≤ op < s)

    picks it. Validity rules are those of :func:`convbook.shapes.conv_output_size`.
    """
    n, k = as_int(size, "size", 1), as_int(kernel_size, "kernel_size", 1)
    s, p, d = as_int(stride, "stride", 1), as_int(padding, "padding", 0), as_int(dilation, "dilation", 1)
    conv_output_size(n, k, s, p, d)  # validates
    return (n + 2 * p - d * (k - 1) - 1) % s


def conv_transpose_by_scatter(y: torch.Tensor, weight: torch.Tensor, stride: int | Sequence[int] = 1,
                              padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1, groups: int = 1,
                              output_padding: int | Sequence[int] = 0) -> torch.Tensor:
    """Transposed convolution (1-D or 2-D, any groups) written from the scatter definition.

    ``out_full[n, g·C_og + c, s·m + d·a] += Σ_{i in group g} y[n, i, m] W[i, c, a]``, then the
    first ``p`` and last ``p`` positions are cropped (``op`` extra zeros were appended on the
    right first). ``y``: ``N × C_in × M…``; ``weight``: ``C_in × C_out/groups × k…``.

    Rules: ``C_in`` = ``weight.shape[0]`` and divisible by ``groups``; stride, dilation ≥ 1;
    padding ≥ 0; ``0 ≤ output_padding < max(stride, dilation)`` (PyTorch's rule);
    the output must be non-empty.
    """
    nd = _check_pair(y, weight, groups)
    k = tuple(weight.shape[2:])
    s, p, d, op = _args(nd, stride, padding, dilation, output_padding)
    m = tuple(y.shape[2:])
    out_len = tuple(_transposed_size(m[j], k[j], s[j], p[j], d[j], op[j]) for j in range(nd))
    full_len = tuple((m[j] - 1) * s[j] + d[j] * (k[j] - 1) + 1 + op[j] for j in range(nd))
    n, c_in = y.shape[:2]
    cig, cog = c_in // groups, weight.shape[1]
    full = y.new_zeros(n, groups * cog, *full_len)
    yg = y.reshape(n, groups, cig, *m)
    wg = weight.reshape(groups, cig, cog, *k)
    for taps in itertools.product(*[range(kj) for kj in k]):
        contrib = torch.einsum("ngi...,gic->ngc...", yg, wg[(Ellipsis, *taps)]).reshape(n, groups * cog, *m)
        where = tuple(slice(d[j] * taps[j], d[j] * taps[j] + s[j] * (m[j] - 1) + 1, s[j]) for j in range(nd))
        full[(slice(None), slice(None), *where)] += contrib
    crop = tuple(slice(p[j], p[j] + out_len[j]) for j in range(nd))
    return full[(slice(None), slice(None), *crop)]


def adjoint_inner_products(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, stride: int | Sequence[int] = 1,
                           padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1,
                           groups: int = 1) -> tuple[float, float]:
    """The two sides of the dot-product test ``⟨conv(x), y⟩ = ⟨x, convᵀ(y)⟩``.

    ``conv`` is PyTorch's ``F.conv1d/F.conv2d`` with ``weight`` (``C_out × C_in/g × k…``);
    ``convᵀ`` is :func:`conv_transpose_by_scatter` with the same weight tensor (read as
    ``C_out × C_in/g × k…``, i.e. its ``C_in`` is the convolution's ``C_out``) and the output
    padding of :func:`required_output_padding`, so that ``convᵀ(y)`` has ``x``'s shape.
    ``y`` must have the convolution's output shape.
    """
    nd = weight.dim() - 2
    conv = _conv_fn(nd)
    s, p, d, _ = _args(nd, stride, padding, dilation, 0)
    cx = conv(x, weight, stride=s, padding=p, dilation=d, groups=groups)
    if cx.shape != y.shape:
        raise ValueError(f"y must have the convolution's output shape {tuple(cx.shape)}, got {tuple(y.shape)}")
    op = tuple(required_output_padding(x.shape[2 + j], weight.shape[2 + j], s[j], p[j], d[j]) for j in range(nd))
    ty = conv_transpose_by_scatter(y, weight, s, p, d, groups, op)
    lhs = float((cx * y).sum())
    rhs = float((x * ty).sum()) if ty.shape == x.shape else float("nan")
    return lhs, rhs


def equivalent_conv_padding(kernel_size: int, padding: int = 0, dilation: int = 1) -> int:
    """Padding of the stride-1 convolution that reproduces a transposed convolution:
    ``d(k - 1) - p`` on each side (plus ``output_padding`` on the far side).

    Negative values mean cropping. Rules: kernel_size, dilation ≥ 1; padding ≥ 0.
    """
    _nonneg(kernel_size=(kernel_size, 1), dilation=(dilation, 1), padding=(padding, 0))
    return int(dilation) * (int(kernel_size) - 1) - int(padding)


def transposed_kernel_as_conv(weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """The convolution weight equivalent to a transposed-convolution weight.

    ``W`` (``C_in × C_out/g × k…``) becomes ``V`` (``C_out × C_in/g × k…``) with
    ``V[g·C_og + c, i, a] = W[g·C_ig + i, c, k - 1 - a]``: input and output channels swapped
    inside each group, and every spatial axis flipped.
    """
    if weight.dim() < 3:
        raise ValueError(f"weight must be C_in × C_out/groups × k… (3-D or 4-D), got shape {tuple(weight.shape)}")
    if groups < 1 or weight.shape[0] % groups:
        raise ValueError(f"weight.shape[0] = {weight.shape[0]} must be divisible by groups = {groups}")
    c_in, cog = weight.shape[:2]
    k = tuple(weight.shape[2:])
    v = weight.reshape(groups, c_in // groups, cog, *k).transpose(1, 2).reshape(groups * cog, c_in // groups, *k)
    return v.flip(tuple(range(2, weight.dim())))


def transposed_as_conv(y: torch.Tensor, weight: torch.Tensor, stride: int | Sequence[int] = 1,
                       padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1, groups: int = 1,
                       output_padding: int | Sequence[int] = 0) -> torch.Tensor:
    """A transposed convolution computed as a stride-1 convolution.

    1. insert ``s - 1`` zeros between neighbouring samples of ``y`` (length ``(M-1)s + 1``);
    2. pad ``q = d(k-1) - p`` zeros on the near side and ``q + op`` on the far side
       (:func:`equivalent_conv_padding`; a negative amount crops);
    3. convolve with stride 1, dilation ``d``, ``groups`` and :func:`transposed_kernel_as_conv`.

    Output length ``(M-1)s + 1 + 2q + op - d(k-1) = (M-1)s - 2p + d(k-1) + op + 1``.
    Same rules as :func:`conv_transpose_by_scatter`.
    """
    nd = _check_pair(y, weight, groups)
    k = tuple(weight.shape[2:])
    s, p, d, op = _args(nd, stride, padding, dilation, output_padding)
    m = tuple(y.shape[2:])
    for j in range(nd):
        _transposed_size(m[j], k[j], s[j], p[j], d[j], op[j])
    up = y.new_zeros(*y.shape[:2], *[(m[j] - 1) * s[j] + 1 for j in range(nd)])
    up[(slice(None), slice(None), *[slice(None, None, s[j]) for j in range(nd)])] = y
    pads: list[int] = []
    for j in reversed(range(nd)):  # F.pad lists the last axis first
        q = equivalent_conv_padding(k[j], p[j], d[j])
        pads += [q, q + op[j]]
    up = F.pad(up, pads)
    return _conv_fn(nd)(up, transposed_kernel_as_conv(weight, groups), stride=1, dilation=d, groups=groups)


def overlap_count(kernel_size: int, stride: int, length: int, dilation: int = 1) -> np.ndarray:
    """Number of kernel taps that reach each output of a 1-D transposed convolution.

    ``length`` input samples, no padding; output ``j`` (``0 ≤ j < (length-1)s + d(k-1) + 1``) receives
    tap ``a`` from input ``m = (j - d·a)/s`` when that is an integer in ``[0, length)``. With
    ``g = gcd(d, s)``, ``s' = s/g``, ``d' = d/g``: no tap reaches ``j`` unless ``g | j``; then the taps
    are the ``a ≡ a₀ = (j/g)·d'⁻¹ (mod s')`` in ``[lo, hi] = [max(0, ⌈(j - (length-1)s)/d⌉), min(k-1, ⌊j/d⌋)]``:

        count[j] = ⌊(hi - a₀)/s'⌋ - ⌊(lo - 1 - a₀)/s'⌋   (0 when g ∤ j or hi < lo).

    In the interior (``d(k-1) ≤ j ≤ (length-1)s``) this is :func:`interior_overlap` at ``j mod s``.
    Rules: kernel_size, stride, length, dilation ≥ 1.
    """
    _nonneg(kernel_size=(kernel_size, 1), stride=(stride, 1), length=(length, 1), dilation=(dilation, 1))
    k, s, n, d = int(kernel_size), int(stride), int(length), int(dilation)
    g = math.gcd(d, s)
    s1, d1 = s // g, d // g
    inv = pow(d1, -1, s1) if s1 > 1 else 0
    j = np.arange((n - 1) * s + d * (k - 1) + 1)
    a0 = ((j // g) * inv) % s1
    hi = np.minimum(k - 1, j // d)
    lo = np.maximum(0, -((-(j - (n - 1) * s)) // d))  # ceil division
    count = (hi - a0) // s1 - (lo - 1 - a0) // s1
    return np.where((j % g == 0) & (hi >= lo), np.maximum(count, 0), 0)


def interior_overlap(kernel_size: int, stride: int, dilation: int = 1) -> np.ndarray:
    """Taps per interior output by residue ``r = j mod s``: ``c(r) = #{a < k : d·a ≡ r (mod s)}``, ``r = 0 … s-1``.

    With ``g = gcd(d, s)``, ``s' = s/g``: ``c(r) = 0`` when ``g ∤ r``, else ``⌈(k - a₀)/s'⌉`` with
    ``a₀ = (r/g)·(d/g)⁻¹ mod s'``. For ``d = 1``: ``⌈(k - r)/s⌉`` — writing ``k = q s + m``, residues
    ``r < m`` get ``q + 1``, the others ``q``. Rules: kernel_size, stride, dilation ≥ 1.
    """
    _nonneg(kernel_size=(kernel_size, 1), stride=(stride, 1), dilation=(dilation, 1))
    k, s, d = int(kernel_size), int(stride), int(dilation)
    g = math.gcd(d, s)
    s1 = s // g
    inv = pow(d // g, -1, s1) if s1 > 1 else 0
    r = np.arange(s)
    a0 = ((r // g) * inv) % s1
    return np.where(r % g == 0, (k - a0 + s1 - 1) // s1, 0)


def overlap_count_nd(kernel_size: Sequence[int], stride: Sequence[int], length: Sequence[int],
                     dilation: int | Sequence[int] = 1) -> np.ndarray:
    """Overlap counts of an N-D transposed convolution: the outer product of the per-axis 1-D counts.

    A tap ``(a₁, …, a_N)`` reaches output ``(j₁, …, j_N)`` iff each ``a_i`` reaches ``j_i`` on its own axis,
    so the count factorises: ``count[j₁, …, j_N] = Π_i c_i[j_i]`` (:func:`overlap_count` per axis).
    Every argument is one int per axis (``dilation`` may be one int for all axes).
    """
    nd = len(tuple(kernel_size))
    ks = per_axis(kernel_size, nd, "kernel_size", 1)
    ss, ls = per_axis(stride, nd, "stride", 1), per_axis(length, nd, "length", 1)
    ds = per_axis(dilation, nd, "dilation", 1)
    out = np.ones((), dtype=np.int64)
    for j in range(nd):
        out = np.multiply.outer(out, overlap_count(ks[j], ss[j], ls[j], ds[j]))
    return out


def overlap_count_2d(kernel_size: Sequence[int], stride: Sequence[int], length: Sequence[int],
                     dilation: int | Sequence[int] = 1) -> np.ndarray:
    """2-D overlap counts: :func:`overlap_count_nd` with two axes, ``count[j₁, j₂] = c₁[j₁] · c₂[j₂]``."""
    ks, ss, ls = (as_tuple(v, 2, name) for v, name in ((kernel_size, "kernel_size"), (stride, "stride"), (length, "length")))
    return overlap_count_nd(ks, ss, ls, dilation)


def overlap_is_uniform(kernel_size: int | Sequence[int], stride: int | Sequence[int],
                       dilation: int | Sequence[int] = 1) -> bool:
    """Whether every interior output receives the same number of taps: iff on every axis
    ``gcd(d, s) = 1`` and ``s | k``.

    Proof (1-D): the interior count is ``c(r) = #{a < k : d·a ≡ r (mod s)}``. If ``g = gcd(d, s) > 1``,
    ``c(1) = 0`` (``d·a`` is a multiple of ``g``) while ``c(0) ≥ 1`` (``a = 0``): not uniform. If ``g = 1``,
    ``a ↦ d·a mod s`` permutes the residues, so the values ``c(r)`` are those of ``d = 1``, ``⌈(k - r)/s⌉``,
    in another order; with ``k = q s + m`` residue 0 gets ``q + 1`` when ``m > 0`` and residue ``s - 1 ≥ m``
    gets ``q``; all get ``q`` when ``m = 0``. (N-D): the table is an outer product of per-axis vectors with
    a positive entry, constant iff every factor is constant.
    """
    def axes(v):
        return (v,) if np.ndim(v) == 0 else tuple(v)

    lengths = {len(axes(v)) for v in (kernel_size, stride, dilation) if np.ndim(v) != 0}
    nd = lengths.pop() if len(lengths) == 1 else (1 if not lengths else -1)
    ks, ss, ds = ((v,) * nd if np.ndim(v) == 0 and nd > 0 else axes(v) for v in (kernel_size, stride, dilation))
    if nd < 0 or not len(ks) == len(ss) == len(ds):
        raise ValueError(f"kernel_size, stride and dilation must have the same length, got {ks}, {ss} and {ds}")
    _nonneg(**{f"kernel_size[{j}]": (v, 1) for j, v in enumerate(ks)}, **{f"stride[{j}]": (v, 1) for j, v in enumerate(ss)},
            **{f"dilation[{j}]": (v, 1) for j, v in enumerate(ds)})
    return all(math.gcd(int(d), int(s)) == 1 and int(k) % int(s) == 0 for k, s, d in zip(ks, ss, ds))


def polyphase_sums(weight: torch.Tensor, stride: int, padding: int = 0) -> torch.Tensor:
    """Response of a 1-D transposed convolution to a constant input 1, by output residue.

    Interior output ``j`` adds the taps ``b ≡ j + p (mod s)`` of every input-output channel
    pair: ``R[c, r] = Σ_i Σ_{b ≡ r + p (mod s)} W[i, c, b]``, for ``r = 0 … s-1``.
    A constant input gives a constant interior iff all ``R[c, ·]`` are equal.
    ``weight``: ``C_in × C_out × k`` (groups = 1).
    """
    if weight.dim() != 3:
        raise ValueError(f"weight must be C_in × C_out × k (1-D), got shape {tuple(weight.shape)}")
    _nonneg(stride=(stride, 1), padding=(padding, 0))
    k = weight.shape[2]
    b = torch.arange(k)
    out = weight.new_zeros(weight.shape[1], stride)
    for r in range(stride):
        mask = (b - r - padding) % stride == 0
        out[:, r] = weight[:, :, mask].sum(dim=(0, 2))
    return out


def resize_conv(x: torch.Tensor, weight: torch.Tensor, scale: int, mode: str = "nearest",
                padding: int | Sequence[int] = 0, padding_mode: str = "zeros") -> torch.Tensor:
    """Upsample by the integer ``scale`` (``'nearest'`` or ``'linear'`` interpolation,
    ``align_corners=False``), then a stride-1 convolution with ``weight`` (``C_out × C_in × k…``),
    ``padding`` on each side filled by ``padding_mode`` (as ``nn.Conv*d``: ``'zeros'``, ``'reflect'``,
    ``'replicate'``, ``'circular'``).

    The resize step fills every new position with a convex combination of inputs (weights
    summing to 1), so a constant input stays constant before the convolution sees it; the
    convolution keeps it constant wherever it reads no zero padding (:func:`resize_conv_constant_region`).
    Rules: scale ≥ 1; mode in {'nearest', 'linear'}; x is N × C × L or N × C × H × W.
    """
    _nonneg(scale=(scale, 1))
    nd = x.dim() - 2
    if nd not in (1, 2) or weight.dim() != x.dim():
        raise ValueError(f"x must be 3-D or 4-D and weight of the same rank, got {tuple(x.shape)} and {tuple(weight.shape)}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if mode == "nearest":
        up = F.interpolate(x, scale_factor=scale, mode="nearest")
    elif mode == "linear":
        up = F.interpolate(x, scale_factor=scale, mode="linear" if nd == 1 else "bilinear", align_corners=False)
    else:
        raise ValueError(f"mode must be 'nearest' or 'linear', got {mode!r}")
    if padding_mode == "zeros":
        return _conv_fn(nd)(up, weight, padding=padding)
    p = as_tuple(padding, nd, "padding")
    pads = [q for j in reversed(range(nd)) for q in (p[j], p[j])]
    return _conv_fn(nd)(F.pad(up, pads, mode=padding_mode), weight)


def resize_conv_constant_region(out_size: int, padding: int, padding_mode: str = "zeros") -> slice:
    """Outputs (along one axis) of :func:`resize_conv` that are constant for a constant input.

    Output ``u`` of a stride-1 convolution reads padded positions ``u … u + k - 1``; with zero padding
    ``p`` it reads a zero unless ``p ≤ u ≤ out_size - 1 - p``, so only ``slice(p, out_size - p)`` is
    guaranteed constant. ``'reflect'``, ``'replicate'`` and ``'circular'`` padding copy input values, so
    a constant stays constant everywhere: ``slice(0, out_size)``.
    """
    _nonneg(out_size=(out_size, 1), padding=(padding, 0))
    out_size, padding = int(out_size), int(padding)
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if padding_mode != "zeros":
        return slice(0, out_size)
    return slice(padding, max(out_size - padding, padding))


def nearest_resize_conv_kernel(weight: torch.Tensor, scale: int) -> torch.Tensor:
    """The transposed-convolution weight equal to nearest-resize by ``scale`` then ``weight``.

    ``resize_conv(x, W, s, 'nearest') == conv_transpose(x, V, stride=s, padding=k-1)`` with
    ``V = flip(W) ⊛ box_s`` (full convolution with ``s`` ones per axis, size ``k + s - 1``),
    channels swapped to ``C_in × C_out``. Every residue class of ``V`` (mod s) sums to ``Σ W``:
    each tap ``a`` is smeared over ``s`` consecutive positions, one of each residue.
    """
    _nonneg(scale=(scale, 1))
    nd = weight.dim() - 2
    if nd not in (1, 2):
        raise ValueError(f"weight must be C_out × C_in × k (3-D) or × kh × kw (4-D), got shape {tuple(weight.shape)}")
    c_out, c_in = weight.shape[:2]
    flat = weight.flip(tuple(range(2, weight.dim()))).reshape(c_out * c_in, 1, *weight.shape[2:])
    box = weight.new_ones(1, 1, *([scale] * nd))
    v = _conv_fn(nd)(flat, box, padding=scale - 1).reshape(c_out, c_in, *[kj + scale - 1 for kj in weight.shape[2:]])
    return v.transpose(0, 1).contiguous()


def subpixel_conv(x: torch.Tensor, weight: torch.Tensor, scale: int, padding: int | Sequence[int] = 0) -> torch.Tensor:
    """Sub-pixel convolution (Shi et al. 2016): a stride-1 convolution to ``C·r²`` channels,
    then ``pixel_shuffle`` by ``r``: ``y[c, r u + φ, r v + ψ] = z[c r² + φ r + ψ, u, v]``.

    Rules: weight is ``C r² × C_in × kh × kw``; scale ≥ 1.
    """
    _nonneg(scale=(scale, 1))
    if weight.dim() != 4 or weight.shape[0] % (scale * scale):
        raise ValueError(f"weight must be (C·r²) × C_in × kh × kw with r = {scale}, got shape {tuple(weight.shape)}")
    return F.pixel_shuffle(F.conv2d(x, weight, padding=padding), scale)


def pixel_shuffle_as_transposed(weight: torch.Tensor, scale: int, padding: int | Sequence[int] = 0) -> tuple[torch.Tensor, tuple[int, int]]:
    """The transposed convolution (weight ``V``, stride ``r``, padding ``P``) equal to
    :func:`subpixel_conv` ``(x, W, r, p)``.

    ``V[i, c, r(kh-1-a) + φ, r(kw-1-b) + ψ] = W[c r² + φ r + ψ, i, a, b]`` — kernel size ``r·k``,
    a multiple of the stride — and ``P = r(k - 1 - p)`` per axis.
    Rules: ``0 ≤ p ≤ k - 1`` on each axis (else ``P`` would be negative).
    """
    _nonneg(scale=(scale, 1))
    if weight.dim() != 4 or weight.shape[0] % (scale * scale):
        raise ValueError(f"weight must be (C·r²) × C_in × kh × kw with r = {scale}, got shape {tuple(weight.shape)}")
    p = as_tuple(padding, 2, "padding")
    kh, kw = weight.shape[2:]
    for pj, kj in zip(p, (kh, kw)):
        if not 0 <= pj <= kj - 1:
            raise ValueError(f"padding must satisfy 0 <= p <= k - 1, got p = {pj} with k = {kj}")
    c_rr, c_in = weight.shape[:2]
    c = c_rr // (scale * scale)
    w = weight.reshape(c, scale, scale, c_in, kh, kw).flip(4, 5)        # [c, φ, ψ, i, a', b']
    v = w.permute(3, 0, 4, 1, 5, 2).reshape(c_in, c, kh * scale, kw * scale)  # [i, c, a'·r + φ, b'·r + ψ]
    return v.contiguous(), (scale * (kh - 1 - p[0]), scale * (kw - 1 - p[1]))


def plot_scatter_steps(y: Sequence[float], weight: Sequence[float], stride: int = 2, dilation: int = 1, axes=None):
    """The scatter of a 1-D transposed convolution, one input sample at a time.

    Panel ``m`` shows the running output before (grey) and after (black ticks) input sample ``m`` adds
    ``y[m]·w`` at positions ``s·m + d·a`` (hatched); the last panel's ticks are the full output, equal to
    ``F.conv_transpose1d``. Padding 0, one channel.
    """
    import matplotlib.pyplot as plt

    y = np.asarray(y, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    _nonneg(stride=(stride, 1), dilation=(dilation, 1))
    n_out = (y.size - 1) * stride + dilation * (w.size - 1) + 1
    if axes is None:
        _, axes = plt.subplots(y.size, 1, figsize=(7, 1.5 * y.size), sharex=True)
    axes = np.atleast_1d(axes)
    out = np.zeros(n_out)
    for m, ax in enumerate(axes[: y.size]):
        new = np.zeros(n_out)
        new[stride * m + dilation * np.arange(w.size)] = y[m] * w
        ax.bar(np.arange(n_out), out, color="0.75", label="sum so far")
        ax.bar(np.arange(n_out), new, bottom=out, color="tab:orange", hatch="//", label=f"y[{m}]·w at {stride}·{m} + {dilation}·a")
        out = out + new
        ax.plot(np.arange(n_out), out, "k_", ms=16, mew=2, label="new sum")
        ax.set_ylabel(f"after y[{m}]", fontsize=9)
        ax.legend(fontsize=8, loc="upper right")
    axes[-1].set_xlabel("output position j")
    axes[-1].set_xticks(range(n_out))
    return axes


def plot_overlap_patterns(kernel_sizes: Sequence[int] = (3, 4, 5), strides: Sequence[int] = (2, 3), length: int = 6,
                          axes=None):
    """Images of ``overlap_count_2d`` for every (stride, kernel size): the checkerboard of taps."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(len(strides), len(kernel_sizes), figsize=(3.0 * len(kernel_sizes), 3.0 * len(strides)))
    axes = np.atleast_2d(axes)
    for row, s in enumerate(strides):
        for col, k in enumerate(kernel_sizes):
            counts = overlap_count_2d((k, k), (s, s), (length, length))
            ax = axes[row, col]
            ax.imshow(counts, cmap="viridis", interpolation="nearest")
            mark_uniform(ax, counts, f"every output: {np.asarray(counts).flat[0]:g} taps")
            inner = interior_overlap(k, s)
            tag = "uniform" if overlap_is_uniform(k, s) else f"{inner.min() ** 2}–{inner.max() ** 2} taps"
            ax.set_title(f"k={k}, s={s}: {tag}", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
    return axes


def plot_checkerboard(kernel_size: int = 3, stride: int = 2, size: int = 8, seed: int = 0, axes=None):
    """A constant input through: ones-weight and random-weight transposed convolutions,
    nearest-resize-then-convolve and sub-pixel convolution (random weights)."""
    import matplotlib.pyplot as plt

    gen = generator(seed)
    k, s = kernel_size, stride
    x = torch.ones(1, 1, size, size, dtype=torch.float64)
    ones_t = F.conv_transpose2d(x, torch.ones(1, 1, k, k, dtype=torch.float64), stride=s)[0, 0, k:-k, k:-k]
    rand_t = F.conv_transpose2d(x, randn(1, 1, k, k, gen=gen), stride=s)[0, 0, k:-k, k:-k]
    rc = resize_conv(x, randn(1, 1, k, k, gen=gen), s)[0, 0]
    sp_ = subpixel_conv(x, randn(s * s, 1, k, k, gen=gen), s)[0, 0]
    panels = [(ones_t, f"transposed, ones, k={k} s={s}"), (rand_t, "transposed, random weights"),
              (rc, "nearest resize + conv"), (sp_, "sub-pixel (pixel shuffle)")]
    if axes is None:
        _, axes = plt.subplots(1, 4, figsize=(13, 3.4))
    for ax, (img, title) in zip(axes, panels):
        im = img.numpy()
        spread = float(im.max() - im.min())
        ax.imshow(im, cmap="gray", interpolation="nearest", vmin=im.min() - (1 if spread < 1e-9 else 0),
                  vmax=im.max() + (1 if spread < 1e-9 else 0))
        ax.set_title(title + ("\n(constant)" if spread < 1e-9 else "\n(periodic)"), fontsize=10)
        if spread < 1e-9:  # constant up to rounding: say so in the panel, which is otherwise one grey
            mark_uniform(ax, np.full(im.shape, float(im.mean())), f"constant {float(im.mean()):.3g}")
        ax.set_xticks([])
        ax.set_yticks([])
    return axes


def period2_fraction(image) -> float:
    """Share of a 2-D image's variance carried by its 2×2-periodic component.

    The four phases ``(i mod 2, j mod 2)`` each have a mean ``m_φ``; the period-2 component is the
    image that takes the value ``m_φ`` on phase ``φ``. Returned: ``var(m_φ) / var(image)`` (population
    variances; phases weighted equally), in ``[0, 1]`` for even sides. A smooth image has nearly equal
    phase means, so a value near 0; a checkerboard puts its energy here.
    Rules: image 2-D with even sides ≥ 2 and non-zero variance.
    """
    a = np.asarray(image, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] % 2 or a.shape[1] % 2 or min(a.shape) < 2:
        raise ValueError(f"image must be 2-D with even sides >= 2, got shape {a.shape}")
    total = float(a.var())
    if total == 0.0:
        raise ValueError("image is constant: its variance is 0, so the fraction is undefined")
    means = np.array([a[i::2, j::2].mean() for i in range(2) for j in range(2)])
    return float(means.var() / total)


def checkerboard_demo(size: int = 64, seed: int = 0) -> dict:
    """Upsample a smooth synthetic image ×2 two ways and measure the checkerboard.

    The input (float64, ``1 × 1 × size/2 × size/2``) is a sum of four Gaussian bumps with seeded
    centres, widths and heights on a positive floor. It is upsampled to ``size × size`` by
    (i) a transposed convolution, kernel 3, stride 2, padding 1, output padding 1, with random
    positive weights scaled to sum 4 (so the four polyphase sums average 1, but differ: 4, 2, 2, 1
    taps), and (ii) nearest resize ×2, then a 3×3 convolution with replicate padding 1 and random
    positive weights scaled to sum 1 (a constant input stays constant).
    Returns ``{"input", "transposed", "resize_conv"}`` (2-D numpy arrays), the period-2 fractions
    ``{"fraction_transposed", "fraction_resize_conv"}`` (:func:`period2_fraction`) and their ratio
    ``"ratio"``, plus the weights ``{"w_transposed", "w_resize"}``.
    Rules: size even and ≥ 4.
    """
    size = as_int(size, "size")
    if size < 4 or size % 2:
        raise ValueError(f"size must be even and >= 4, got {size}")
    gen = generator(seed)
    n = size // 2
    yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    img = torch.full((n, n), 0.2, dtype=torch.float64)
    for _ in range(4):
        cy, cx, width, height = torch.rand(4, generator=gen, dtype=torch.float64).tolist()
        sigma = n * (0.12 + 0.18 * width)
        img = img + (0.5 + height) * torch.exp(-((yy - cy * n) ** 2 + (xx - cx * n) ** 2) / (2 * sigma ** 2))
    x = img[None, None]
    w_t = torch.rand(1, 1, 3, 3, generator=gen, dtype=torch.float64) + 0.1
    w_t = w_t * (4.0 / w_t.sum())
    w_r = torch.rand(1, 1, 3, 3, generator=gen, dtype=torch.float64) + 0.1
    w_r = w_r / w_r.sum()
    up_t = F.conv_transpose2d(x, w_t, stride=2, padding=1, output_padding=1)[0, 0]
    up_r = resize_conv(x, w_r, 2, padding=1, padding_mode="replicate")[0, 0]
    f_t, f_r = period2_fraction(up_t.numpy()), period2_fraction(up_r.numpy())
    return {"input": img.numpy(), "transposed": up_t.numpy(), "resize_conv": up_r.numpy(),
            "fraction_transposed": f_t, "fraction_resize_conv": f_r, "ratio": f_t / f_r,
            "w_transposed": w_t, "w_resize": w_r}


def plot_checkerboard_image(axes=None, size: int = 64, seed: int = 0, crop: int = 12, fontsize: float = 10):
    """Original, transposed-conv ×2 and resize-conv ×2 of :func:`checkerboard_demo` (top row), and a
    zoomed ``crop × crop`` window of each (bottom row, same place in the image), titles giving the
    period-2 fraction. ``crop`` is even (pixels of the upsampled images). ``axes``: 2 × 3 array of axes, or None for a new figure. Returns ``(axes, demo)``."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if crop < 2 or crop % 2 or crop > size:
        raise ValueError(f"crop must be even, >= 2 and <= size={size}, got {crop}")
    demo = checkerboard_demo(size, seed)
    if axes is None:
        _, axes = plt.subplots(2, 3, figsize=(11, 7.4))
    axes = np.asarray(axes).reshape(2, 3)
    n = size // 2
    c0 = (n - crop // 2) // 2 * 2  # even corner in the upsampled image, so the phases line up
    panels = [(demo["input"], f"original ({n}×{n})", 1),
              (demo["transposed"], f"transposed conv, k=3 s=2\nperiod-2 share {demo['fraction_transposed']:.2g}", 2),
              (demo["resize_conv"], f"nearest resize + 3×3 conv\nperiod-2 share {demo['fraction_resize_conv']:.2g}", 2)]
    for col, (img, title, scale) in enumerate(panels):
        top, bottom = axes[0, col], axes[1, col]
        top.imshow(img, cmap="magma", interpolation="nearest")
        top.set_title(title, fontsize=fontsize + 1)
        side, start = crop * scale // 2, c0 * scale // 2  # the same window of the scene in every column
        top.add_patch(Rectangle((start - 0.5, start - 0.5), side, side, fill=False, edgecolor="cyan", lw=1.5))
        window = img[start:start + side, start:start + side]
        bottom.imshow(window, cmap="magma", interpolation="nearest")
        bottom.set_title(f"zoom: {side}×{side} pixels", fontsize=fontsize)
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    return axes, demo



# --------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------


def _random_layer(gen, nd: int, device: str, *, groups_max: int = 2):
    """A random valid (x, weight, s, p, d, groups) for the adjoint-type checks."""
    while True:
        g = randint(1, groups_max, gen)
        c_in, c_out = g * randint(1, 2, gen), g * randint(1, 2, gen)
        size = tuple(randint(1, 9 if nd == 1 else 7, gen) for _ in range(nd))  # down to 1 pixel
        k = tuple(randint(1, 4, gen) for _ in range(nd))
        s = tuple(randint(1, 3, gen) for _ in range(nd))
        p = tuple(randint(0, 2, gen) for _ in range(nd))
        d = tuple(randint(1, 3, gen) for _ in range(nd))
        if all(d[j] * (k[j] - 1) + 1 <= size[j] + 2 * p[j] for j in range(nd)):
            x = randn(2, c_in, *size, gen=gen, device=device)
            w = randn(c_out, c_in // g, *k, gen=gen, device=device)
            return x, w, s, p, d, g


@claim(
    "transpose.adjoint",
    title="Transposed convolution is the adjoint of convolution",
    chapter=9,
    statement="For every stride s ≥ 1, padding p ≥ 0, dilation d ≥ 1 (each per axis, in 1-D and 2-D, inputs down to 1 pixel) and groups g (with channel multipliers), ⟨conv(x), y⟩ = ⟨x, convᵀ(y)⟩ where convᵀ scatters y through the same weight: the dot-product test; the scatter equals F.conv_transpose.",
    parameters=("stride", "padding", "dilation", "groups", "per-axis sizes"),
    reference="PyTorch F.conv1d/F.conv2d (dot-product test) and F.conv_transpose1d/2d",
)
def check_adjoint(device: str = "cpu"):
    """Dot-product test with the scatter definition; also the scatter vs F.conv_transpose."""
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(901)
    for case in range(36):
        nd = 1 + case % 2
        x, w, s, p, d, g = _random_layer(gen, nd, device)
        y = randn(*_conv_fn(nd)(x, w, stride=s, padding=p, dilation=d, groups=g).shape, gen=gen, device=device)
        what = f"{nd}-D size={tuple(x.shape[2:])} s={s} p={p} d={d} g={g}"
        sides = _attempt(t, what, adjoint_inner_products, x, y, w, s, p, d, g)
        if sides is not None:
            t.close(np.array([sides[1]]), np.array([sides[0]]), what)
        op = tuple(required_output_padding(x.shape[2 + j], w.shape[2 + j], s[j], p[j], d[j]) for j in range(nd))
        ref = _conv_transpose_fn(nd)(y, w, stride=s, padding=p, dilation=d, groups=g, output_padding=op)
        got = _attempt(t, what, conv_transpose_by_scatter, y, w, s, p, d, g, op)
        if got is not None:
            t.close(got, ref, f"scatter vs F.conv_transpose {what}")
    return t.verdict("dot-product test + scatter definition vs F.conv_transpose1d/2d (random layers)", dtype="float64")


@claim(
    "transpose.gradient",
    title="Transposed convolution is the gradient of convolution with respect to its input",
    chapter=9,
    statement="For every stride, padding, dilation (per axis, 1-D and 2-D) and groups, ∂⟨conv(x), y⟩/∂x = convᵀ(y) with output_padding (n + 2p − d(k−1) − 1) mod s, which restores the input size.",
    parameters=("stride", "padding", "dilation", "groups", "output_padding"),
    reference="autograd (input gradient of F.conv1d/F.conv2d)",
)
def check_gradient(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(902)
    nonzero_op = 0
    for case in range(50):
        nd = 1 + case % 2
        x, w, s, p, d, g = _random_layer(gen, nd, device)
        x.requires_grad_(True)
        out = _conv_fn(nd)(x, w, stride=s, padding=p, dilation=d, groups=g)
        y = randn(*out.shape, gen=gen, device=device)
        (grad,) = torch.autograd.grad((out * y).sum(), x)
        op = tuple(required_output_padding(x.shape[2 + j], w.shape[2 + j], s[j], p[j], d[j]) for j in range(nd))
        nonzero_op += any(op)
        what = f"{nd}-D s={s} p={p} d={d} g={g} op={op}"
        got = _attempt(t, what, conv_transpose_by_scatter, y, w, s, p, d, g, op)
        if got is not None:
            t.close(got, grad, what)
    t.note(f"{nonzero_op} of the layers need a non-zero output_padding")
    return t.verdict("autograd input gradient vs scatter transposed convolution (random layers)", dtype="float64")


@claim(
    "transpose.as-conv",
    title="Transposed convolution is a stride-1 convolution of the zero-upsampled input",
    chapter=9,
    statement="For every stride, padding, dilation and output_padding (per axis, 1-D and 2-D) and groups, convᵀ(y) = conv(pad(upsample₀(y), d(k−1)−p, d(k−1)−p+op), flip(Wᵀ)) with stride 1 and dilation d: insert s−1 zeros, pad d(k−1)−p (crop if negative), swap channels within each group and flip the kernel.",
    parameters=("stride", "padding", "dilation", "groups", "output_padding", "per-axis sizes"),
    reference="PyTorch F.conv_transpose1d/2d",
)
def check_as_conv(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(903)
    cropped = 0
    for case in range(60):
        nd = 1 + case % 2
        g = randint(1, 2, gen)
        c_in, cog = g * randint(1, 2, gen), randint(1, 2, gen)
        m = tuple(randint(2, 6, gen) for _ in range(nd))
        k = tuple(randint(1, 4, gen) for _ in range(nd))
        s = tuple(randint(1, 3, gen) for _ in range(nd))
        d = tuple(randint(1, 2, gen) for _ in range(nd))
        p = tuple(randint(0, 3, gen) for _ in range(nd))
        op = tuple(randint(0, max(s[j], d[j]) - 1, gen) for j in range(nd))
        if any((m[j] - 1) * s[j] - 2 * p[j] + d[j] * (k[j] - 1) + op[j] + 1 < 1 for j in range(nd)):
            continue
        cropped += any(d[j] * (k[j] - 1) < p[j] for j in range(nd))
        y = randn(2, c_in, *m, gen=gen, device=device)
        w = randn(c_in, cog, *k, gen=gen, device=device)
        ref = _conv_transpose_fn(nd)(y, w, stride=s, padding=p, dilation=d, groups=g, output_padding=op)
        what = f"{nd}-D m={m} k={k} s={s} p={p} d={d} op={op} g={g}"
        got = _attempt(t, what, transposed_as_conv, y, w, s, p, d, g, op)
        if got is not None:
            t.close(got, ref, what)
    t.note(f"{cropped} cases with d(k−1) < p (negative padding = crop)")
    return t.verdict("random transposed layers (output_padding, groups) vs F.conv_transpose1d/2d", dtype="float64")


@claim(
    "transpose.output-size",
    title="Output size of a transposed convolution, and the output_padding that inverts a convolution's size",
    chapter=9,
    statement="For every input size n ≥ 1, kernel k, stride s, dilation d ≥ 1 and padding p ≥ 0 with d(k−1)+1 ≤ n+2p, a transposed convolution outputs (m−1)s − 2p + d(k−1) + op + 1 samples (0 ≤ op < max(s, d)); op = (n + 2p − d(k−1) − 1) mod s maps a convolution's output size m back to its input size n.",
    parameters=("input size", "kernel", "stride", "padding", "dilation"),
    reference="PyTorch F.conv1d/F.conv_transpose1d output shapes (exhaustive grid)",
)
def check_output_size(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    # exhaustive grid of input sizes n and layer arguments: conv, then transposed conv with op
    for n, k, s, p, d in itertools.product(range(1, 9), range(1, 4), range(1, 4), range(0, 3), range(1, 3)):
        if d * (k - 1) + 1 > n + 2 * p:
            continue
        m = conv_output_size(n, k, s, p, d)
        op = required_output_padding(n, k, s, p, d)
        if not t.exact(0 <= op < s, f"op={op} out of range s={s}"):
            continue
        back = (m - 1) * s - 2 * p + d * (k - 1) + op + 1
        if not t.exact(back == n, f"n={n} k={k} s={s} p={p} d={d}: size {back}"):
            continue
        t.exact(_transposed_size(m, k, s, p, d, op) == back, "validated formula")
        y = torch.zeros(1, 1, m, dtype=torch.float64, device=device)
        w = torch.zeros(1, 1, k, dtype=torch.float64, device=device)
        got = F.conv_transpose1d(y, w, stride=s, padding=p, dilation=d, output_padding=op).shape[-1]
        t.exact(got == back, f"F.conv_transpose1d size {got} vs formula {back}")
    return t.verdict("exhaustive grid n≤8, k≤3, s≤3, p≤2, d≤2: formula vs F.conv_transpose1d and round trip", case_unit="comparisons")


@claim(
    "transpose.overlap-count",
    title="Taps per output of a transposed convolution, in closed form",
    chapter=9,
    statement="For every kernel k, stride s, dilation d ≥ 1 and input length n ≥ 1, output j of a transposed convolution (all-ones input and weights, no padding) receives #{a < k : j − d·a ∈ s·{0, …, n−1}} taps, given in closed form by overlap_count; in the interior d(k−1) ≤ j ≤ (n−1)s the count is c(j mod s) with c(r) = #{a < k : d·a ≡ r (mod s)}; in N dimensions, with k, s, d, n per axis, it is the outer product of the per-axis counts.",
    parameters=("kernel", "stride", "dilation", "input length", "per-axis sizes"),
    reference="PyTorch F.conv_transpose1d/2d/3d of an all-ones input with all-ones weights (brute force)",
)
def check_overlap_count(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    one = dict(dtype=torch.float64, device=device)
    for k, s, d, n in itertools.product(range(1, 8), range(1, 6), range(1, 5), range(1, 7)):
        ref = F.conv_transpose1d(torch.ones(1, 1, n, **one), torch.ones(1, 1, k, **one), stride=s, dilation=d)[0, 0].cpu().numpy()
        counts = overlap_count(k, s, n, d)
        t.exact(counts.shape == ref.shape and bool(np.array_equal(counts, ref)), f"1-D k={k} s={s} d={d} n={n}")
        lo, hi = d * (k - 1), (n - 1) * s
        if hi >= lo:
            j = np.arange(lo, hi + 1)
            t.exact(bool(np.array_equal(ref[j], interior_overlap(k, s, d)[j % s])), f"interior k={k} s={s} d={d} n={n}")
    gen = generator(905)
    for case in range(150):
        nd = 2 if case < 120 else 3
        k = tuple(randint(1, 5, gen) for _ in range(nd))
        s = tuple(randint(1, 4, gen) for _ in range(nd))
        d = tuple(randint(1, 3, gen) for _ in range(nd))
        n = tuple(randint(1, 4, gen) for _ in range(nd))
        conv_t = (F.conv_transpose2d, F.conv_transpose3d)[nd - 2]
        ref = conv_t(torch.ones(1, 1, *n, **one), torch.ones(1, 1, *k, **one), stride=s, dilation=d)[0, 0].cpu().numpy()
        counts = overlap_count_nd(k, s, n, d)
        t.exact(counts.shape == ref.shape and bool(np.array_equal(counts, ref)), f"{nd}-D k={k} s={s} d={d} n={n}")
    return t.verdict("exhaustive k≤7, s≤5, d≤4, n≤6 (1-D) + 150 random per-axis 2-D/3-D layers vs F.conv_transpose of ones",
                     case_unit="configurations")


@claim(
    "transpose.uniform-iff-divides",
    title="The overlap is uniform iff the stride divides the kernel size and is coprime to the dilation",
    chapter=9,
    statement="For every kernel k, stride s and dilation d ≥ 1 (per axis, in any number of dimensions), every interior output of a transposed convolution receives the same number of taps iff, on every axis, gcd(d, s) = 1 and s divides k; with d = 1, residues r < k mod s get one tap more; with gcd(d, s) = g > 1, residues not divisible by g get none.",
    parameters=("kernel", "stride", "dilation", "per-axis sizes"),
    reference="PyTorch F.conv_transpose1d/2d/3d of an all-ones input with all-ones weights (brute force)",
)
def check_uniform_iff_divides(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    one = dict(dtype=torch.float64, device=device)
    for k, s, d in itertools.product(range(1, 13), range(1, 7), range(1, 6)):
        n = (d * (k - 1)) // s + 3  # interior spans at least one full period
        ref = F.conv_transpose1d(torch.ones(1, 1, n, **one), torch.ones(1, 1, k, **one), stride=s, dilation=d)[0, 0].cpu().numpy()
        interior = ref[d * (k - 1) : (n - 1) * s + 1]
        measured = bool(np.all(interior == interior[0]))
        t.exact(overlap_is_uniform(k, s, d) == measured, f"1-D k={k} s={s} d={d}: measured uniform={measured}")
        if d == 1:
            q, m = divmod(k, s)
            by_residue = {int(r): int(c) for r, c in zip(np.arange(k - 1, (n - 1) * s + 1) % s, interior)}
            t.exact(all(by_residue[r] == q + (r < m) for r in range(s)), f"1-D k={k} s={s}: residue counts")
        g = math.gcd(d, s)
        if g > 1:
            residues = np.arange(d * (k - 1), (n - 1) * s + 1) % s
            t.exact(bool(np.all(interior[residues % g != 0] == 0)), f"1-D k={k} s={s} d={d}: residues not divisible by {g}")
    gen = generator(906)
    for case in range(160):
        nd = 2 if case < 130 else 3
        k = tuple(randint(1, 6, gen) for _ in range(nd))
        s = tuple(randint(1, 3, gen) for _ in range(nd))
        d = tuple(randint(1, 3, gen) for _ in range(nd))
        n = tuple((d[j] * (k[j] - 1)) // s[j] + 3 for j in range(nd))
        conv_t = (F.conv_transpose2d, F.conv_transpose3d)[nd - 2]
        ref = conv_t(torch.ones(1, 1, *n, **one), torch.ones(1, 1, *k, **one), stride=s, dilation=d)[0, 0].cpu().numpy()
        interior = ref[tuple(slice(d[j] * (k[j] - 1), (n[j] - 1) * s[j] + 1) for j in range(nd))]
        measured = bool(np.all(interior == interior.flat[0]))
        t.exact(overlap_is_uniform(k, s, d) == measured, f"{nd}-D k={k} s={s} d={d}: measured uniform={measured}")
    return t.verdict("exhaustive k≤12, s≤6, d≤5 (1-D) + 160 random per-axis 2-D/3-D layers: predicate vs "
                     "F.conv_transpose of ones", case_unit="configurations")


@claim(
    "transpose.constant-response",
    title="A constant input exposes the kernel's polyphase sums",
    chapter=9,
    statement="For every kernel k, stride s, padding 0 ≤ p ≤ k − 1 and numbers of input and output channels, on a constant input 1 interior output j of a 1-D transposed convolution equals the sum, over input channels, of the taps b ≡ j + p (mod s): constant iff the s polyphase sums agree — uneven for generic weights even when s divides k.",
    parameters=("kernel", "stride", "padding", "channels"),
    reference="PyTorch F.conv_transpose1d",
)
def check_constant_response(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(906)
    uneven_divisible = 0
    for _ in range(80):
        k, s = randint(1, 8, gen), randint(1, 4, gen)
        p = randint(0, min(2, k - 1), gen)
        c_in, c_out, n = randint(1, 3, gen), randint(1, 3, gen), randint(1, 3, gen) + (k + p) // s + 3
        w = randn(c_in, c_out, k, gen=gen, device=device)
        out = F.conv_transpose1d(torch.ones(1, c_in, n, dtype=torch.float64, device=device), w, stride=s, padding=p)[0]
        j = torch.arange(k - 1 - p, (n - 1) * s - p + 1, device=device)  # interior: every tap in range (p ≤ k-1)
        sums = polyphase_sums(w, s, p)
        t.close(out[:, j], sums[:, (j % s).cpu()], f"k={k} s={s} p={p}")
        if k % s == 0 and s > 1:
            spread = float((sums.max(dim=1).values - sums.min(dim=1).values).min())
            uneven_divisible += spread > 1e-6
    t.note(f"{uneven_divisible} random layers with s | k still respond unevenly to a constant input")
    return t.verdict("random 1-D transposed layers on constant input vs F.conv_transpose1d", dtype="float64")


@claim(
    "transpose.resize-conv-uniform",
    title="Resize-then-convolve has no checkerboard",
    chapter=9,
    statement="For every scale s ≥ 2, nearest or (bi)linear resizing by s (align_corners=False) followed by a stride-1 convolution maps a constant input c to the constant c·ΣW at every output when the convolution pads with reflect, replicate or circular padding (or not at all); with zero padding p > 0 only the outputs at least p from each border are constant, the border ones read zeros. Nearest-resize-then-conv without padding is a transposed convolution (stride s, padding k−1) with kernel flip(W) ⊛ box_s, whose s polyphase sums all equal ΣW.",
    parameters=("interpolation", "scale", "padding", "padding_mode"),
    reference="PyTorch F.interpolate + F.conv1d/F.conv2d, and F.conv_transpose1d/2d",
)
def check_resize_conv_uniform(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(907)
    border_differs = 0
    for case in range(96):
        nd = 1 + case % 2
        k, s = randint(1, 5, gen), randint(2, 4, gen)
        c_in, c_out = randint(1, 2, gen), randint(1, 2, gen)
        size = (randint(1, 5, gen) + k // s,) * nd  # down to 1 pixel
        mode = ("nearest", "linear")[(case // 2) % 2]
        padding_mode = PADDING_MODES[(case // 4) % 4]
        p = randint(0, k - 1, gen) if case % 3 else k - 1
        w = randn(c_out, c_in, *([k] * nd), gen=gen, device=device)
        c = float(randn(1, gen=gen)) + 2.0
        x = torch.full((1, c_in, *size), c, dtype=torch.float64, device=device)
        if padding_mode == "reflect" and p >= size[0] * s:
            p = 0
        out = resize_conv(x, w, s, mode, padding=p, padding_mode=padding_mode)[0]
        expected = (c * w.sum(dim=tuple(range(1, w.dim())))).view(-1, *([1] * nd)).expand_as(out)
        region = resize_conv_constant_region(out.shape[-1], p, padding_mode)
        inner = (slice(None), *([region] * nd))
        what = f"{nd}-D {mode} k={k} s={s} p={p} {padding_mode}"
        t.close(out[inner], expected[inner], f"{what}: constant response in the region")
        outside = torch.ones_like(out, dtype=torch.bool)
        outside[inner] = False
        if bool(outside.any()):  # zero padding: the border outputs read zeros and differ from c·ΣW
            border_differs += 1
            t.exact(bool(((out - expected).abs() > 1e-9)[outside].any()), f"{what}: border outputs differ")
        if mode == "nearest" and p == 0:
            xr = randn(1, c_in, *size, gen=gen, device=device)
            v = nearest_resize_conv_kernel(w, s)
            ref = _conv_transpose_fn(nd)(xr, v, stride=s, padding=k - 1)
            t.close(resize_conv(xr, w, s, "nearest"), ref, f"{nd}-D k={k} s={s}: as transposed conv")
            if nd == 1:
                t.close(polyphase_sums(v, s, k - 1), w.sum(dim=(1, 2)).view(-1, 1).expand(-1, s),
                        f"k={k} s={s}: polyphase sums")
    t.note(f"{border_differs} zero-padded layers whose border outputs differ from the constant, as stated")
    return t.verdict("constant inputs (nearest/linear, 1-D/2-D, every padding mode) and random inputs vs F.conv_transpose",
                     dtype="float64")


@claim(
    "transpose.pixel-shuffle",
    title="Sub-pixel convolution is a transposed convolution with a rearranged kernel",
    chapter=9,
    statement="For every scale r ≥ 1, kernel kh × kw and padding 0 ≤ p ≤ k − 1 (per axis), pixel_shuffle(conv(x, W, padding p), r) = conv_transpose(x, V, stride r, padding r(k−1−p)) with V[i, c, r(kh−1−a)+φ, r(kw−1−b)+ψ] = W[c r² + φ r + ψ, i, a, b]: a kernel of size r·k, a multiple of the stride.",
    parameters=("scale", "padding", "per-axis sizes"),
    reference="PyTorch F.conv2d + F.pixel_shuffle vs F.conv_transpose2d",
)
def check_pixel_shuffle(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(908)
    for _ in range(50):
        r = randint(1, 3, gen)
        c, c_in = randint(1, 2, gen), randint(1, 3, gen)
        kh, kw = randint(1, 4, gen), randint(1, 4, gen)
        p = (randint(0, kh - 1, gen), randint(0, kw - 1, gen))
        h, w_ = randint(max(1, kh - 2 * p[0]), 7, gen), randint(max(1, kw - 2 * p[1]), 7, gen)  # down to 1 pixel
        x = randn(2, c_in, h, w_, gen=gen, device=device)
        weight = randn(c * r * r, c_in, kh, kw, gen=gen, device=device)
        v, pad = pixel_shuffle_as_transposed(weight, r, p)
        ref = _attempt(t, f"r={r} k={kh}x{kw} p={p}", F.conv_transpose2d, x, v, stride=r, padding=pad)
        if ref is None:
            continue
        t.close(subpixel_conv(x, weight, r, p), ref, f"r={r} k={kh}x{kw} p={p}")
        t.exact(v.shape[2] % r == 0 and v.shape[3] % r == 0, "kernel size a multiple of the stride")
    return t.verdict("random sub-pixel layers vs F.conv_transpose2d with the rearranged kernel", dtype="float64")


# --------------------------------------------------------------------------------------
# Private helpers
# --------------------------------------------------------------------------------------


def _attempt(t: Tally, what: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, or ``None`` after recording a mismatch when it raises (a wrong
    formula can make PyTorch refuse the shapes: that is a failed case, not a crash)."""
    try:
        return fn(*args, **kwargs)
    except (RuntimeError, ValueError) as err:
        t.exact(False, f"{what}: {type(err).__name__}: {err}")
        return None


def _conv_fn(nd: int):
    if nd == 1:
        return F.conv1d
    if nd == 2:
        return F.conv2d
    raise ValueError(f"only 1-D and 2-D layers are supported, got {nd} spatial dimensions")


def _conv_transpose_fn(nd: int):
    if nd == 1:
        return F.conv_transpose1d
    if nd == 2:
        return F.conv_transpose2d
    raise ValueError(f"only 1-D and 2-D layers are supported, got {nd} spatial dimensions")


def _nonneg(**values: tuple[int, int]) -> None:
    """Each ``name=(value, low)``: an integer (Python, numpy or 0-d tensor) ≥ low, else ValueError naming it."""
    for name, (value, low) in values.items():
        as_int(value, name, low)


def _args(nd: int, stride, padding, dilation, output_padding):
    s, p = as_tuple(stride, nd, "stride"), as_tuple(padding, nd, "padding")
    d, op = as_tuple(dilation, nd, "dilation"), as_tuple(output_padding, nd, "output_padding")
    for j in range(nd):
        _nonneg(stride=(s[j], 1), padding=(p[j], 0), dilation=(d[j], 1), output_padding=(op[j], 0))
        if op[j] >= max(s[j], d[j]):
            raise ValueError(f"output_padding must be smaller than max(stride, dilation): got output_padding = {op[j]}, "
                             f"stride = {s[j]}, dilation = {d[j]}")
    return s, p, d, op


def _check_pair(y: torch.Tensor, weight: torch.Tensor, groups: int) -> int:
    nd = weight.dim() - 2
    _conv_fn(nd)
    if y.dim() != nd + 2:
        raise ValueError(f"y must be N × C_in × (spatial ×{nd}) to match the weight, got shape {tuple(y.shape)}")
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be an int >= 1, got {groups!r}")
    if y.shape[1] != weight.shape[0] or y.shape[1] % groups:
        raise ValueError(f"mismatched channels: y has C_in = {y.shape[1]}, weight.shape[0] = {weight.shape[0]}; "
                         f"both must be equal and divisible by groups = {groups}")
    return nd


def _transposed_size(m: int, k: int, s: int, p: int, d: int, op: int) -> int:
    """(m - 1)s - 2p + d(k - 1) + op + 1, validated by :func:`convbook.shapes.conv_transpose_output_size`."""
    return conv_transpose_output_size(m, k, s, p, d, op)
