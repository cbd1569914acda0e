"""Chapter 1: convolution and cross-correlation, from their definitions.

Definitions (1-D, sequences indexed from 0; 2-D is the same on each axis):

* true convolution      (x * w)[n] = Σ_m w[m] x[n - m]
* cross-correlation     (x ⋆ w)[n] = Σ_m w[m] x[n + m]

What deep-learning libraries call a convolution (``torch.nn.functional.conv2d``) is the
cross-correlation, with padding ``p``, stride ``s`` and dilation ``d``:

    y[o, u] = b[o] + Σ_i Σ_a w[o, i, a] x_pad[i, s u + d a]

and flipping the kernel, ``w[m] -> w[K-1-m]``, turns one into the other.

Everything here is written from those formulas (loops over kernel taps, vectorised over
positions) so that the checks compare two independent computations: this module and
PyTorch.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import sympy as sp
import torch
import torch.nn.functional as F

from .claims import Tally, claim
from .numerics import DTYPE, as_tuple, check_device, generator, randint, randn
from .shapes import conv_output_size

__all__ = [
    "flip_kernel",
    "convolve1d",
    "correlate1d",
    "convolve2d",
    "correlate2d",
    "conv2d_by_channels",
    "conv_matrix",
    "circular_conv2d",
    "shift",
    "equivariance_masks",
    "plot_conv_matrix",
    "plot_equivariance",
]


# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------


def flip_kernel(weight, spatial_dims: int | None = None):
    """Reverse the kernel along its spatial axes: ``w[..., a, b] -> w[..., K1-1-a, K2-1-b]``.

    ``spatial_dims`` is the number of trailing axes to flip (default: all axes after the
    first two for a ``(C_out, C_in, *k)`` weight, or all axes of a 1-D/2-D kernel).
    Accepts a torch tensor or a numpy array (including object arrays of sympy symbols).
    """
    ndim = weight.ndim
    if spatial_dims is None:
        spatial_dims = ndim - 2 if ndim >= 3 else ndim
    if not 1 <= spatial_dims <= ndim:
        raise ValueError(f"spatial_dims must be in [1, {ndim}], got {spatial_dims}")
    axes = tuple(range(ndim - spatial_dims, ndim))
    if isinstance(weight, np.ndarray):
        return np.flip(weight, axis=axes)
    return torch.flip(weight, dims=axes)


def convolve1d(x: Sequence, w: Sequence, mode: str = "full") -> np.ndarray:
    """True 1-D convolution ``y[n] = Σ_m w[m] x[n - m]`` from the definition.

    ``mode='full'`` gives all ``N + K - 1`` outputs where the sequences overlap;
    ``mode='valid'`` the ``N - K + 1`` outputs where ``w`` lies entirely inside ``x``
    (requires ``K <= N``). Works on numbers and on sympy symbols (object arrays).
    """
    x, w = _as_1d(x, "x"), _as_1d(w, "w")
    n, k = len(x), len(w)
    out = np.zeros(n + k - 1, dtype=np.result_type(x, w)) if x.dtype != object else np.array([0] * (n + k - 1), dtype=object)
    for m in range(k):  # y[n] += w[m] x[n - m]  <=>  y[m + j] += w[m] x[j]
        out[m : m + n] = out[m : m + n] + w[m] * x
    return _select_mode(out, n, k, mode)


def correlate1d(x: Sequence, w: Sequence, mode: str = "valid") -> np.ndarray:
    """1-D cross-correlation ``y[n] = Σ_m w[m] x[n + m]`` (what ``F.conv1d`` computes).

    ``mode='valid'``: ``n = 0 … N-K``; ``mode='full'``: ``n = -(K-1) … N-1``.
    """
    x, w = _as_1d(x, "x"), _as_1d(w, "w")
    n, k = len(x), len(w)
    out = np.zeros(n + k - 1, dtype=np.result_type(x, w)) if x.dtype != object else np.array([0] * (n + k - 1), dtype=object)
    for m in range(k):  # index n + (K-1) of the full output reads x[n + m]
        out[k - 1 - m : k - 1 - m + n] = out[k - 1 - m : k - 1 - m + n] + w[m] * x
    return _select_mode(out, n, k, mode)


def convolve2d(x: torch.Tensor, w: torch.Tensor, mode: str = "valid") -> torch.Tensor:
    """True 2-D convolution ``y[u, v] = Σ_{a,b} w[a, b] x[u - a, v - b]`` over the last two axes.

    Leading axes of ``x`` are batch axes. ``mode`` is ``'valid'`` or ``'full'``.
    """
    if w.dim() != 2:
        raise ValueError(f"w must be a 2-D kernel, got shape {tuple(w.shape)}")
    kh, kw = w.shape
    h, wd = x.shape[-2:]
    full = x.new_zeros(*x.shape[:-2], h + kh - 1, wd + kw - 1)
    for a in range(kh):
        for b in range(kw):
            full[..., a : a + h, b : b + wd] += w[a, b] * x
    if mode == "full":
        return full
    if mode == "valid":
        if kh > h or kw > wd:
            raise ValueError(f"mode='valid' needs the kernel {tuple(w.shape)} to fit inside x {(h, wd)}")
        return full[..., kh - 1 : h, kw - 1 : wd]
    raise ValueError(f"mode must be 'full' or 'valid', got {mode!r}")


def correlate2d(
    x: torch.Tensor,
    w: torch.Tensor,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
) -> torch.Tensor:
    """Single-channel 2-D cross-correlation over the last two axes of ``x``, from the definition.

    ``y[u, v] = Σ_{a,b} w[a, b] x_pad[s₁u + d₁a, s₂v + d₂b]`` with zero padding ``p`` on
    each side; the output size on each axis is ``floor((n + 2p - d(k-1) - 1)/s) + 1``.
    """
    if w.dim() != 2:
        raise ValueError(f"w must be a 2-D kernel, got shape {tuple(w.shape)}")
    s, p, d = as_tuple(stride, 2, "stride"), as_tuple(padding, 2, "padding"), as_tuple(dilation, 2, "dilation")
    h, wd = x.shape[-2:]
    ho = conv_output_size(h, w.shape[0], s[0], p[0], d[0])
    wo = conv_output_size(wd, w.shape[1], s[1], p[1], d[1])
    xp = F.pad(x, (p[1], p[1], p[0], p[0]))
    out = x.new_zeros(*x.shape[:-2], ho, wo)
    for a in range(w.shape[0]):
        for b in range(w.shape[1]):
            r0, c0 = d[0] * a, d[1] * b
            out += w[a, b] * xp[..., r0 : r0 + s[0] * (ho - 1) + 1 : s[0], c0 : c0 + s[1] * (wo - 1) + 1 : s[1]]
    return out


def conv2d_by_channels(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
) -> torch.Tensor:
    """Multi-channel convolution as a sum of single-channel cross-correlations.

    ``y[:, o] = b[o] + Σ_i correlate2d(x[:, i], weight[o, i])``: one filter — a
    ``(C_in, k_h, k_w)`` stack of kernels — per output channel. ``x`` is ``(B, C_in, H, W)``,
    ``weight`` is ``(C_out, C_in, k_h, k_w)``.
    """
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(f"x must be (B, C_in, H, W) and weight (C_out, C_in, kh, kw); got {tuple(x.shape)} and {tuple(weight.shape)}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"input channels of x ({x.shape[1]}) must equal weight.shape[1] ({weight.shape[1]})")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must have shape (C_out,) = ({weight.shape[0]},), got {tuple(bias.shape)}")
    outs = []
    for o in range(weight.shape[0]):
        acc = sum(correlate2d(x[:, i], weight[o, i], stride, padding, dilation) for i in range(x.shape[1]))
        if bias is not None:
            acc = acc + bias[o]
        outs.append(acc)
    return torch.stack(outs, dim=1)


def conv_matrix(
    weight: torch.Tensor,
    input_size: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
) -> torch.Tensor:
    """The matrix ``M`` of the linear map ``x ↦ conv(x)`` (no bias), for 1-D or 2-D weights.

    For a weight ``(C_out, C_in, *k)`` and an input of spatial size ``input_size``,
    ``M`` has shape ``(C_out · Π n_out, C_in · Π n)`` and ``M @ x.flatten() ==
    conv(x).flatten()`` (row-major ``vec``). Entry
    ``M[(o, u), (i, s·u - p + d·a)] = w[o, i, a]`` for every tap ``a`` that lands inside
    the input; taps on the zero padding contribute nothing. With one channel and stride 1
    the 1-D matrix is Toeplitz and the 2-D one doubly block Toeplitz.
    """
    nd = weight.dim() - 2
    if nd not in (1, 2):
        raise ValueError(f"weight must be (C_out, C_in, k) or (C_out, C_in, kh, kw), got shape {tuple(weight.shape)}")
    size = as_tuple(tuple(input_size), nd, "input_size")
    s, p, d = as_tuple(stride, nd, "stride"), as_tuple(padding, nd, "padding"), as_tuple(dilation, nd, "dilation")
    ks = tuple(weight.shape[2:])
    out_size = tuple(conv_output_size(size[j], ks[j], s[j], p[j], d[j]) for j in range(nd))
    c_out, c_in = weight.shape[:2]
    n_in, n_out = int(np.prod(size)), int(np.prod(out_size))
    m = weight.new_zeros(c_out * n_out, c_in * n_in)
    grids = np.meshgrid(*[np.arange(n) for n in out_size], indexing="ij")  # output coordinates
    out_flat = np.ravel_multi_index(tuple(g.ravel() for g in grids), out_size)
    for taps in itertools.product(*[range(k) for k in ks]):
        pos = [grids[j].ravel() * s[j] - p[j] + d[j] * taps[j] for j in range(nd)]
        inside = np.all([(pos[j] >= 0) & (pos[j] < size[j]) for j in range(nd)], axis=0)
        if not inside.any():
            continue
        in_flat = np.ravel_multi_index(tuple(q[inside] for q in pos), size)
        rows_sp, cols_sp = out_flat[inside], in_flat
        for o in range(c_out):
            for i in range(c_in):
                rows = torch.as_tensor(o * n_out + rows_sp)
                cols = torch.as_tensor(i * n_in + cols_sp)
                m[rows, cols] += weight[(o, i) + taps]
    return m


def circular_conv2d(x: torch.Tensor, weight: torch.Tensor, dilation: int = 1) -> torch.Tensor:
    """Stride-1 convolution with circular padding ``p = d(k-1)/2``: output size = input size.

    Requires an odd kernel on both axes (``d(k-1)`` even), so the padding is symmetric.
    """
    from .conventions import as_int

    dilation = as_int(dilation, "dilation", 1)
    ks = tuple(weight.shape[2:])
    if any(dilation * (k - 1) % 2 for k in ks):
        raise ValueError(f"circular 'same' padding needs d*(k-1) even (an odd kernel), got kernel {ks}, dilation {dilation}")
    p = tuple(dilation * (k - 1) // 2 for k in ks)
    return F.conv2d(F.pad(x, (p[1], p[1], p[0], p[0]), mode="circular"), weight, dilation=dilation)


def shift(x: torch.Tensor, offsets: Sequence[int], mode: str = "zero") -> torch.Tensor:
    """Translate ``x`` by ``offsets`` along its last ``len(offsets)`` axes: ``x'[m] = x[m - t]``.

    ``mode='circular'`` wraps around (``torch.roll``); ``mode='zero'`` lets zeros enter on one
    side and drops the samples pushed past the other.
    """
    nd = len(offsets)
    dims = tuple(range(x.dim() - nd, x.dim()))
    if mode == "circular":
        return torch.roll(x, shifts=tuple(offsets), dims=dims)
    if mode != "zero":
        raise ValueError(f"mode must be 'zero' or 'circular', got {mode!r}")
    out = torch.zeros_like(x)
    src, dst = [slice(None)] * x.dim(), [slice(None)] * x.dim()
    for dim, t in zip(dims, offsets):
        n = x.shape[dim]
        if abs(t) >= n:
            return out
        src[dim] = slice(0, n - t) if t >= 0 else slice(-t, n)
        dst[dim] = slice(t, n) if t >= 0 else slice(0, n + t)
    out[tuple(dst)] = x[tuple(src)]
    return out


def equivariance_masks(
    input_size: Sequence[int],
    kernel_size: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    offsets: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """Where ``conv(shift(x, t))[o] == conv(x)[o - t]`` holds, for zero padding and stride 1.

    Returns ``(comparable, equal)``, boolean arrays over output positions ``o`` of the
    shifted input's output. ``comparable[o]``: ``o - t`` is also an output position.
    ``equal[o]``: comparable, and the identity holds for every input and weight.

    Derivation: tap ``a`` of output ``o`` reads padded position ``m = o - p + d·a``.
    The shifted input gives ``x'_pad[m] = x[m - t]`` when both ``m`` and ``m - t`` are
    inside the input, else 0; the unshifted output at ``o - t`` reads ``x_pad[m - t]``,
    which is ``x[m - t]`` whenever ``m - t`` is inside. They differ exactly when ``m - t``
    is inside the input but ``m`` is not — a sample the shift pushed into the padding.
    So the identity fails at ``o`` iff some tap has ``m - t`` inside and ``m`` outside:
    a band at the border the shift moves towards, as wide as the kernel reaches into the
    padding (``d(k-1) - p`` positions) plus the shift.
    """
    nd = len(input_size)
    size, ks = tuple(input_size), tuple(kernel_size)
    p, d, t = tuple(padding), tuple(dilation), tuple(offsets)
    if not (len(ks) == len(p) == len(d) == len(t) == nd):
        raise ValueError("input_size, kernel_size, padding, dilation and offsets must have the same length")
    out_size = tuple(conv_output_size(size[j], ks[j], 1, p[j], d[j]) for j in range(nd))
    grids = np.meshgrid(*[np.arange(n) for n in out_size], indexing="ij")
    comparable = np.all([(grids[j] - t[j] >= 0) & (grids[j] - t[j] < out_size[j]) for j in range(nd)], axis=0)
    differs = np.zeros(out_size, dtype=bool)
    for taps in itertools.product(*[range(k) for k in ks]):
        m = [grids[j] - p[j] + d[j] * taps[j] for j in range(nd)]
        m_inside = np.all([(m[j] >= 0) & (m[j] < size[j]) for j in range(nd)], axis=0)
        src_inside = np.all([(m[j] - t[j] >= 0) & (m[j] - t[j] < size[j]) for j in range(nd)], axis=0)
        differs |= src_inside & ~m_inside
    return comparable, comparable & ~differs


def plot_conv_matrix(weight: torch.Tensor, input_size: Sequence[int], padding: int = 0, stride: int = 1, ax=None):
    """Draw the matrix of a convolution (non-zeros coloured by kernel tap) with its block grid."""
    import matplotlib.pyplot as plt

    m = conv_matrix(weight, input_size, stride=stride, padding=padding).cpu().numpy()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 6 * m.shape[0] / m.shape[1] + 0.6))
    shown = np.ma.masked_where(m == 0, m)
    ax.imshow(shown, cmap="viridis", interpolation="nearest")
    if weight.dim() == 4:  # block boundaries: one block per (output row, input row)
        out_w = conv_output_size(input_size[1], weight.shape[3], stride, padding)
        for r in range(0, m.shape[0] + 1, out_w):
            ax.axhline(r - 0.5, color="0.8", lw=0.5)
        for c in range(0, m.shape[1] + 1, input_size[1]):
            ax.axvline(c - 0.5, color="0.8", lw=0.5)
    ax.set_xlabel(f"input index (vec x), {m.shape[1]} entries")
    ax.set_ylabel(f"output index (vec y), {m.shape[0]} entries")
    ax.set_title(f"{m.shape[0]}×{m.shape[1]} matrix, {int((m != 0).sum())} non-zeros of {m.size}")
    return ax


def plot_equivariance(input_size: Sequence[int], kernel_size: Sequence[int], padding: Sequence[int],
                      dilation: Sequence[int], offsets: Sequence[int], seed: int = 0, axes=None):
    """Left: |conv(shift x) - shift(conv x)| for random data; right: the predicted failure band."""
    import matplotlib.pyplot as plt

    gen = generator(seed)
    x = randn(1, 1, *input_size, gen=gen)
    w = randn(1, 1, *kernel_size, gen=gen)
    y = F.conv2d(x, w, padding=tuple(padding), dilation=tuple(dilation))[0, 0]
    ys = F.conv2d(shift(x, offsets), w, padding=tuple(padding), dilation=tuple(dilation))[0, 0]
    comparable, equal = equivariance_masks(input_size, kernel_size, padding, dilation, offsets)
    err = np.full(comparable.shape, np.nan)
    idx = np.nonzero(comparable)
    err[idx] = np.abs(ys.numpy()[idx] - y.numpy()[tuple(i - t for i, t in zip(idx, offsets))])
    predicted = np.where(comparable, np.where(equal, 0.0, 1.0), np.nan)
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(9, 4))
    im = axes[0].imshow(err, cmap="magma")
    axes[0].set_title("measured |conv(shift x) − shift(conv x)|")
    plt.colorbar(im, ax=axes[0], fraction=0.046)
    axes[1].imshow(predicted, cmap="coolwarm", vmin=0, vmax=1)
    axes[1].set_title("predicted: red = may differ, blue = equal")
    for ax in axes:
        ax.set_xlabel("output column")
        ax.set_ylabel("output row")
    return axes


# --------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------


@claim(
    "conv.cross-correlation",
    title="PyTorch's convolution is cross-correlation",
    chapter=1,
    statement="For every input length N and kernel length K <= N (and every H × W input with k_h × k_w kernel in 2-D), F.conv1d/F.conv2d compute cross-correlation: they equal the true convolution with the kernel flipped along every spatial axis, and differ from it otherwise.",
    parameters=("kernel size", "axes"),
    reference="numpy.convolve, PyTorch F.conv1d and F.conv2d; exact arithmetic (sympy) for N <= 6",
    sympy_role="verified for finitely many sizes",
)
def check_cross_correlation(device: str = "cpu"):
    """Symbolic identity for small lengths; numbers against numpy.convolve, F.conv1d, F.conv2d."""
    device = check_device(device)
    t = Tally(tol=1e-12)
    # symbolic: correlate(x, w) == convolve(x, flip(w)) for every N <= 6, K <= N
    for n in range(1, 7):
        for k in range(1, n + 1):
            xs = np.array(sp.symbols(f"x0:{n}"), dtype=object)
            ws = np.array(sp.symbols(f"w0:{k}"), dtype=object)
            lhs = correlate1d(xs, ws, "valid")
            rhs = convolve1d(xs, flip_kernel(ws), "valid")
            t.exact(all(sp.expand(a - b) == 0 for a, b in zip(lhs, rhs)) and len(lhs) == len(rhs), f"symbolic N={n} K={k}")
    gen = generator(101)
    for case in range(60):
        n, k = randint(1, 20, gen), randint(1, 7, gen)
        n = max(n, k)
        x = randn(n, gen=gen)
        w = randn(k, gen=gen)
        # our definition of true convolution agrees with numpy's
        t.close(convolve1d(x.numpy(), w.numpy(), "full"), np.convolve(x.numpy(), w.numpy(), "full"), f"numpy.convolve n={n} k={k}")
        torch_out = F.conv1d(x.view(1, 1, -1).to(device), w.view(1, 1, -1).to(device))[0, 0]
        flipped = flip_kernel(w.view(1, 1, -1))[0, 0]
        t.close(torch_out, convolve1d(x.numpy(), flipped.numpy(), "valid"), f"F.conv1d n={n} k={k}")
        if k > 1 and case % 3 == 0:  # without the flip they disagree (w is not symmetric)
            plain = convolve1d(x.numpy(), w.numpy(), "valid")
            t.exact(np.max(np.abs(torch_out.cpu().numpy() - plain)) > 1e-6, "unflipped kernel should differ")
    for case in range(40):
        h, wd = randint(1, 12, gen), randint(1, 12, gen)
        kh, kw = randint(1, min(h, 5), gen), randint(1, min(wd, 5), gen)
        x = randn(2, 1, h, wd, gen=gen)
        w = randn(1, 1, kh, kw, gen=gen)
        torch_out = F.conv2d(x.to(device), w.to(device))[:, 0]
        t.close(torch_out, convolve2d(x[:, 0], flip_kernel(w)[0, 0], "valid"), f"F.conv2d {h}x{wd} k={kh}x{kw}")
    return t.verdict("sympy identity (N≤6) + random cases vs numpy.convolve, F.conv1d, F.conv2d", dtype="float64")


@claim(
    "conv.multichannel-sum",
    title="A multi-channel convolution sums single-channel cross-correlations",
    chapter=1,
    statement="For every C_in, C_out, per-axis kernel size, stride, padding and dilation, y[:, o] = b[o] + Σ_i x[:, i] ⋆ W[o, i]: each output channel has one filter, a stack of C_in kernels, and adds up their cross-correlations.",
    parameters=("stride", "padding", "dilation", "bias", "channels"),
    reference="PyTorch F.conv2d",
)
def check_multichannel_sum(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(202)
    for _ in range(60):
        c_in, c_out = randint(1, 4, gen), randint(1, 4, gen)
        h, wd = randint(1, 11, gen), randint(1, 11, gen)
        kh, kw = randint(1, 4, gen), randint(1, 4, gen)
        s, d, p = (randint(1, 3, gen), randint(1, 3, gen)), (randint(1, 3, gen), randint(1, 3, gen)), (randint(0, 2, gen), randint(0, 2, gen))
        if any(d[j] * ((kh, kw)[j] - 1) + 1 > (h, wd)[j] + 2 * p[j] for j in range(2)):
            continue
        x = randn(2, c_in, h, wd, gen=gen, device=device)
        w = randn(c_out, c_in, kh, kw, gen=gen, device=device)
        b = randn(c_out, gen=gen, device=device)
        expected = F.conv2d(x, w, b, stride=s, padding=p, dilation=d)
        t.close(conv2d_by_channels(x, w, b, s, p, d), expected, f"C_in={c_in} C_out={c_out} k={kh}x{kw} s={s} p={p} d={d}")
    return t.verdict("random layers (stride, padding, dilation) vs F.conv2d", case_unit="layers", dtype="float64")


@claim(
    "conv.matrix",
    title="Convolution is a linear map with a (doubly block) Toeplitz matrix",
    chapter=1,
    statement="For every 1-D or 2-D weight, input size, per-axis stride, padding and dilation there is a sparse matrix M with M·vec(x) = vec(conv(x)), M[(o, u), (i, s·u − p + d·a)] = w[o, i, a]; for one channel and stride 1 it is Toeplitz (1-D) or doubly block Toeplitz (2-D).",
    parameters=("stride", "padding", "dilation"),
    reference="PyTorch F.conv1d and F.conv2d",
)
def check_conv_matrix(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(303)
    for case in range(60):
        nd = 1 + case % 2
        c_in, c_out = randint(1, 3, gen), randint(1, 3, gen)
        size = tuple(randint(1, 8, gen) for _ in range(nd))
        ks = tuple(randint(1, 3, gen) for _ in range(nd))
        s, p, d = (tuple(randint(lo, hi, gen) for _ in range(nd)) for lo, hi in ((1, 3), (0, 2), (1, 3)))
        if nd == 1:
            s, p, d = s[0], p[0], d[0]
        if any(dj * (k - 1) + 1 > n + 2 * pj for n, k, pj, dj in zip(size, ks, _tup(p, nd), _tup(d, nd))):
            continue
        w = randn(c_out, c_in, *ks, gen=gen, device=device)
        x = randn(c_in, *size, gen=gen, device=device)
        m = conv_matrix(w, size, s, p, d)
        conv = F.conv1d if nd == 1 else F.conv2d
        y = conv(x.unsqueeze(0), w, stride=s, padding=p, dilation=d)[0]
        t.close(m @ x.reshape(-1), y.reshape(-1), f"{nd}-D size={size} k={ks} s={s} p={p} d={d}")
    # structure: one channel, stride 1 -> Toeplitz / doubly block Toeplitz
    for case in range(20):
        nd = 1 + case % 2
        size = tuple(randint(3, 7, gen) for _ in range(nd))
        ks = tuple(randint(1, min(3, n), gen) for n in size)
        p = randint(0, 1, gen)
        w = randn(1, 1, *ks, gen=gen, device=device)
        m = conv_matrix(w, size, 1, p, 1).cpu().numpy()
        t.exact(_is_toeplitz(m) if nd == 1 else _is_doubly_block_toeplitz(m, size, ks, p), f"{nd}-D structure size={size}")
    return t.verdict("M·vec(x) vs F.conv1d/F.conv2d, plus Toeplitz structure", dtype="float64")


@claim(
    "conv.equivariance-circular",
    title="With circular padding, convolution commutes with every translation",
    chapter=1,
    statement="For every odd kernel k_h × k_w, dilation d and shift t, with circular padding p = d(k-1)/2 and stride 1, conv(roll(x, t)) = roll(conv(x), t) exactly.",
    parameters=("shift", "dilation"),
    reference="PyTorch F.conv2d on circularly padded input, torch.roll",
)
def check_equivariance_circular(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(404)
    for _ in range(60):
        h, wd = randint(4, 12, gen), randint(4, 12, gen)
        d = randint(1, 2, gen)
        kh, kw = 2 * randint(0, 2, gen) + 1, 2 * randint(0, 2, gen) + 1
        if d * (kh - 1) + 1 > h or d * (kw - 1) + 1 > wd:
            continue
        x = randn(1, 2, h, wd, gen=gen, device=device)
        w = randn(3, 2, kh, kw, gen=gen, device=device)
        off = (randint(-h, h, gen), randint(-wd, wd, gen))
        lhs = circular_conv2d(shift(x, off, "circular"), w, dilation=d)
        rhs = shift(circular_conv2d(x, w, dilation=d), off, "circular")
        t.close(lhs, rhs, f"{h}x{wd} k={kh}x{kw} d={d} t={off}")
    return t.verdict("random shifts, kernels, dilations vs F.conv2d on circularly padded input", dtype="float64")


@claim(
    "conv.equivariance-border",
    title="With zero padding, translation equivariance fails exactly in a border band",
    chapter=1,
    statement="For 1-D and 2-D inputs, every per-axis kernel size, zero padding, dilation and shift t, at stride 1, conv(shift(x, t))[o] = conv(x)[o - t] exactly where no kernel tap reads a sample that the shift pushed into the padding, and generically fails everywhere else.",
    parameters=("padding", "dilation", "shift", "per-axis sizes"),
    reference="PyTorch F.conv1d and F.conv2d on shifted random inputs",
)
def check_equivariance_border(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(505)
    positions = 0
    for case in range(80):
        nd = 1 + case % 2
        size = tuple(randint(4, 12, gen) for _ in range(nd))
        ks = tuple(randint(1, 4, gen) for _ in range(nd))
        d = tuple(randint(1, 2, gen) for _ in range(nd))
        p = tuple(randint(0, 3, gen) for _ in range(nd))
        if any(dj * (k - 1) + 1 > n + 2 * pj for n, k, pj, dj in zip(size, ks, p, d)):
            continue
        off = tuple(randint(-3, 3, gen) for _ in range(nd))
        x = randn(1, 1, *size, gen=gen, device=device)
        w = randn(1, 1, *ks, gen=gen, device=device)
        conv = F.conv1d if nd == 1 else F.conv2d
        y = conv(x, w, padding=p, dilation=d)[0, 0].cpu().numpy()
        ys = conv(shift(x, off), w, padding=p, dilation=d)[0, 0].cpu().numpy()
        comparable, equal = equivariance_masks(size, ks, p, d, off)
        idx = np.nonzero(comparable)
        src = tuple(i - o for i, o in zip(idx, off))
        lhs, rhs = ys[idx], y[src]
        eq = equal[idx]
        if eq.any():
            t.close(lhs[eq], rhs[eq], f"predicted-equal band, size={size} k={ks} p={p} d={d} t={off}")
        scale = max(float(np.max(np.abs(y))), 1e-300)
        for a, b in zip(lhs[~eq], rhs[~eq]):
            t.exact(abs(a - b) > 1e-9 * scale, f"predicted failure but equal, size={size} k={ks} p={p} d={d} t={off}")
        positions += int(comparable.sum())
    t.note(f"{positions:,} output positions compared")
    return t.verdict("random shifts vs F.conv1d/F.conv2d: equal inside the predicted band, different outside", dtype="float64")


# --------------------------------------------------------------------------------------
# Private helpers
# --------------------------------------------------------------------------------------


def _tup(v, n: int) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _as_1d(x: Sequence, name: str) -> np.ndarray:
    arr = np.asarray(x) if not isinstance(x, np.ndarray) else x
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {arr.shape}")
    return arr


def _select_mode(full: np.ndarray, n: int, k: int, mode: str) -> np.ndarray:
    if mode == "full":
        return full
    if mode == "valid":
        if k > n:
            raise ValueError(f"mode='valid' needs len(w) <= len(x), got {k} > {n}")
        return full[k - 1 : n]
    raise ValueError(f"mode must be 'full' or 'valid', got {mode!r}")


def _is_toeplitz(m: np.ndarray) -> bool:
    """Every diagonal of ``m`` is constant."""
    return bool(np.all(m[1:, 1:] == m[:-1, :-1]))


def _is_doubly_block_toeplitz(m: np.ndarray, size: Sequence[int], ks: Sequence[int], p: int) -> bool:
    """Blocks (one per output row × input row) depend only on the row difference, and each is Toeplitz."""
    h, w = size
    ho, wo = conv_output_size(h, ks[0], 1, p), conv_output_size(w, ks[1], 1, p)
    blocks = m.reshape(ho, wo, h, w)
    for u in range(ho):
        for r in range(h):
            block = blocks[u, :, r, :]
            if not _is_toeplitz(block):
                return False
            if u + 1 < ho and r + 1 < h and not np.array_equal(block, blocks[u + 1, :, r + 1, :]):
                return False
    return True
