"""Chapter 11: how a convolution is computed — direct loops, im2col + GEMM, and the FFT.

Every function here takes the arguments of ``torch.nn.functional.conv2d``,
``(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1)``, and computes

    y[n, o, u, v] = b[o] + Σ_i Σ_a Σ_c W[o, i, a, c] · x_pad[n, g·C_in/G + i, s_h u + d_h a, s_w v + d_w c]

(``g = o // (C_out/G)`` the group of output channel ``o``) by a different algorithm:

* :func:`conv2d_direct` — the loop nest over kernel taps, vectorised over batch, channels
  and output positions;
* :func:`conv2d_im2col` — unfold every receptive field into a column of a
  ``(C_in k_h k_w, H_out W_out)`` matrix (:func:`im2col`) and multiply by the
  ``(C_out, C_in k_h k_w)`` weight matrix: one GEMM per group;
* :func:`conv2d_fft` — the convolution theorem: a cross-correlation is a convolution with
  the flipped kernel, a convolution is a pointwise product of DFTs, and a length-L
  *circular* convolution equals the linear one at every index ``n ≥ N + K - 1 - L``
  (:func:`circular_alias_free`), so a transform as long as the padded input suffices for
  the outputs a convolution layer keeps.

Winograd's minimal filtering is in :mod:`convbook.winograd`, the Triton kernel in
:mod:`convbook.triton_conv`.  Validity rules shared by all (``ValueError`` naming the rule):
``x`` is ``(N, C_in, H, W)``, ``weight`` is ``(C_out, C_in/G, k_h, k_w)``, ``G`` divides
``C_in`` and ``C_out``, ``bias`` is ``(C_out,)``, stride and dilation ≥ 1, padding ≥ 0, the
dilated kernel fits in the padded input, x and weight share dtype and device.  String
padding (``'same'``, ``'valid'``) raises :class:`Unsupported` (a ``ValueError`` and a ``NotImplementedError``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .claims import Tally, claim
from .numerics import DTYPE, as_tuple, check_device, generator, randint, randn
from .shapes import conv_output_size

__all__ = [
    "Unsupported",
    "ConvParams",
    "conv_params",
    "conv2d_direct",
    "im2col",
    "conv2d_im2col",
    "im2col_blowup",
    "circular_conv1d",
    "circular_alias_free",
    "conv2d_fft",
    "fft_kernel_spectrum",
    "direct_mults",
    "fft_mults",
    "fft_kernel_spectrum_numel",
    "fft_crossover_kernel",
    "count_multiplications",
    "radix2_fft",
    "conv2d_fft_counted",
    "float32_errors",
    "plot_im2col",
    "plot_fft_crossover",
]


# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------


class Unsupported(ValueError, NotImplementedError):
    """An argument PyTorch accepts but this algorithm does not implement (string padding here;
    stride or dilation other than 1 in Winograd's tiles). A ``ValueError`` that names the rule,
    and a ``NotImplementedError`` for code that treats it as a missing feature."""


@dataclass(frozen=True)
class ConvParams:
    """Validated shapes and hyper-parameters of one ``F.conv2d`` call."""

    n: int
    c_in: int
    h: int
    w: int
    c_out: int
    kh: int
    kw: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    h_out: int
    w_out: int

    @property
    def c_in_g(self) -> int:
        return self.c_in // self.groups

    @property
    def c_out_g(self) -> int:
        return self.c_out // self.groups


def conv_params(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
                dilation=1, groups: int = 1, *, who: str = "conv2d") -> ConvParams:
    """Check the arguments of an ``F.conv2d``-like call and return their shapes.

    Raises ``ValueError`` naming the broken rule (shapes, groups, bias, stride ≥ 1,
    padding ≥ 0, dilation ≥ 1, dilated kernel fits the padded input, same dtype/device)
    and :class:`Unsupported` for string padding.
    """
    if isinstance(padding, str):
        raise Unsupported(f"{who}: string padding ({padding!r}) is not supported; pass integer padding")
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"{who}: x must be a 4-D tensor (N, C_in, H, W), got shape {tuple(getattr(x, 'shape', ()))}")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
        raise ValueError(f"{who}: weight must be a 4-D tensor (C_out, C_in/groups, k_h, k_w), "
                         f"got shape {tuple(getattr(weight, 'shape', ()))}")
    if x.dtype != weight.dtype or x.device != weight.device:
        raise ValueError(f"{who}: x and weight must share dtype and device, got {x.dtype}/{x.device} and "
                         f"{weight.dtype}/{weight.device}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{who}: groups must be an int >= 1, got {groups!r}")
    n, c_in, h, w = x.shape
    c_out, c_in_g, kh, kw = weight.shape
    if c_in % groups or c_out % groups:
        raise ValueError(f"{who}: groups must divide C_in and C_out, got groups={groups}, C_in={c_in}, C_out={c_out}")
    if c_in_g * groups != c_in:
        raise ValueError(f"{who}: weight has {c_in_g} input channels per group but x has C_in/groups = "
                         f"{c_in}/{groups} = {c_in // groups}")
    if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (c_out,)):
        raise ValueError(f"{who}: bias must have shape ({c_out},), got {tuple(getattr(bias, 'shape', ()))}")
    s = as_tuple(stride, 2, "stride")
    p = as_tuple(padding, 2, "padding")
    d = as_tuple(dilation, 2, "dilation")
    if min(s) < 1:
        raise ValueError(f"{who}: stride must be >= 1, got {s}")
    if min(p) < 0:
        raise ValueError(f"{who}: padding must be >= 0, got {p}")
    if min(d) < 1:
        raise ValueError(f"{who}: dilation must be >= 1, got {d}")
    h_out = conv_output_size(int(h), int(kh), s[0], p[0], d[0])
    w_out = conv_output_size(int(w), int(kw), s[1], p[1], d[1])
    return ConvParams(int(n), int(c_in), int(h), int(w), int(c_out), int(kh), int(kw), s, p, d, groups, h_out, w_out)


def conv2d_direct(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
                  dilation=1, groups: int = 1) -> torch.Tensor:
    """Direct convolution: the loop nest over kernel taps ``(a, c)``.

    ``y[n, g, o] += W[g, o, :, a, c] · x_pad[n, g, :, s_h u + d_h a, s_w v + d_w c]`` for every
    tap, vectorised over batch, groups, channels and output positions ``(u, v)``. Exact in
    any dtype up to the order of summation. Supports every ``F.conv2d`` argument.
    """
    prm = conv_params(x, weight, bias, stride, padding, dilation, groups, who="conv2d_direct")
    (sh, sw), (ph, pw), (dh, dw) = prm.stride, prm.padding, prm.dilation
    g = prm.groups
    xp = F.pad(x, (pw, pw, ph, ph)).reshape(prm.n, g, prm.c_in_g, prm.h + 2 * ph, prm.w + 2 * pw)
    wg = weight.reshape(g, prm.c_out_g, prm.c_in_g, prm.kh, prm.kw)
    y = x.new_zeros(prm.n, g, prm.c_out_g, prm.h_out, prm.w_out)
    for a in range(prm.kh):
        for c in range(prm.kw):
            window = xp[..., dh * a: dh * a + sh * (prm.h_out - 1) + 1: sh, dw * c: dw * c + sw * (prm.w_out - 1) + 1: sw]
            y += torch.einsum("ngihw,goi->ngohw", window, wg[..., a, c])
    y = y.reshape(prm.n, prm.c_out, prm.h_out, prm.w_out)
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y


def im2col(x: torch.Tensor, kernel_size: int | Sequence[int], stride=1, padding=0, dilation=1) -> torch.Tensor:
    """The unfolded ("im2col") matrix of ``x``: shape ``(N, C·k_h·k_w, H_out·W_out)``.

    Column ``u·W_out + v`` holds the receptive field of output ``(u, v)``; row
    ``(i·k_h + a)·k_w + c`` holds channel ``i``'s tap ``(a, c)``:
    ``cols[n, (i, a, c), (u, v)] = x_pad[n, i, s_h u + d_h a, s_w v + d_w c]`` — the layout of
    ``F.unfold``. Built here by explicit gathering, one tap at a time.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"im2col: x must be a 4-D tensor (N, C, H, W), got shape {tuple(getattr(x, 'shape', ()))}")
    kh, kw = as_tuple(kernel_size, 2, "kernel_size")
    if min(kh, kw) < 1:
        raise ValueError(f"im2col: kernel_size must be >= 1, got {(kh, kw)}")
    dummy = x.new_zeros(1, x.shape[1], kh, kw)
    prm = conv_params(x, dummy, None, stride, padding, dilation, 1, who="im2col")
    (sh, sw), (ph, pw), (dh, dw) = prm.stride, prm.padding, prm.dilation
    xp = F.pad(x, (pw, pw, ph, ph))
    cols = x.new_empty(prm.n, prm.c_in, kh, kw, prm.h_out, prm.w_out)
    for a in range(kh):
        for c in range(kw):
            cols[:, :, a, c] = xp[..., dh * a: dh * a + sh * (prm.h_out - 1) + 1: sh,
                                  dw * c: dw * c + sw * (prm.w_out - 1) + 1: sw]
    return cols.reshape(prm.n, prm.c_in * kh * kw, prm.h_out * prm.w_out)


def conv2d_im2col(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
                  dilation=1, groups: int = 1) -> torch.Tensor:
    """im2col + GEMM: ``Y_g = W_g · cols_g`` per group, with

    ``W_g`` of shape ``(C_out/G, (C_in/G)·k_h·k_w)`` and ``cols_g`` of shape
    ``((C_in/G)·k_h·k_w, N·H_out·W_out)`` (rows of group ``g`` of the unfolded matrix, every
    image side by side), then ``(C_out, N, H_out W_out) -> (N, C_out, H_out, W_out)``.

    Laid out for the BLAS: the columns of all ``N`` images form one contiguous operand, so each
    group is a single large GEMM. A 1×1 kernel without padding needs no unfolding: its
    unfolded matrix *is* the (subsampled) input, read as a view when the stride is 1. Supports
    every ``F.conv2d`` argument; memory for the unfolded matrix is :func:`im2col_blowup` times
    the input's (zero extra for an unpadded 1×1 kernel at stride 1).
    """
    prm = conv_params(x, weight, bias, stride, padding, dilation, groups, who="conv2d_im2col")
    g, n, length = prm.groups, prm.n, prm.h_out * prm.w_out
    rows = prm.c_in_g * prm.kh * prm.kw
    wmat = weight.reshape(g, prm.c_out_g, rows)
    if (prm.kh, prm.kw) == (1, 1) and prm.padding == (0, 0):
        (sh, sw) = prm.stride
        xs = x if (sh, sw) == (1, 1) else x[..., ::sh, ::sw]
        if n == 1 or length >= _PER_IMAGE_COLUMNS:                    # each image's input is its matrix
            y = torch.matmul(wmat, xs.reshape(n, g, rows, length))     # (N, G, C_out/G, L): no copy in or out
            return _finish(y.reshape(n, prm.c_out, prm.h_out, prm.w_out), bias)
        cols = xs.transpose(0, 1).reshape(g, rows, n * length)          # (G, C_in/G, N·L)
    else:
        cols = _unfold_batch_last(x, prm).reshape(g, rows, n * length)  # (G, (C_in/G)·k_h·k_w, N·L)
    y = torch.matmul(wmat, cols)                                       # (G, C_out/G, N·L): one GEMM per group
    y = y.reshape(prm.c_out, n, prm.h_out, prm.w_out).transpose(0, 1)
    return _finish(y, bias)


#: An unpadded 1×1 layer with at least this many output pixels per image multiplies each image's
#: input in place (N GEMMs, no copies); below it the images are put side by side for one wide GEMM.
_PER_IMAGE_COLUMNS = 512


def _unfold_batch_last(x: torch.Tensor, prm: ConvParams) -> torch.Tensor:
    """The unfolded matrix with every image side by side: shape ``(C_in, k_h, k_w, N, H_out, W_out)``,
    entry ``x_pad[n, i, s_h u + d_h a, s_w v + d_w c]`` at ``(i, a, c, n, u, v)`` — one copy per tap.

    With a stride, the padded input is first split into its ``s_h s_w`` phases
    ``P_{φψ}[u, v] = x_pad[s_h u + φ, s_w v + ψ]`` (one strided copy of the input); then
    ``x_pad[s u + d a] = P_{(d a) mod s}[u + ⌊d a / s⌋]`` per axis, so every tap reads a
    contiguous window of one phase instead of gathering single elements."""
    (sh, sw), (ph, pw), (dh, dw) = prm.stride, prm.padding, prm.dilation
    xp = F.pad(x, (pw, pw, ph, ph)).transpose(0, 1)                    # C, N, H_p, W_p (a view)
    cols = x.new_empty(prm.c_in, prm.kh, prm.kw, prm.n, prm.h_out, prm.w_out)
    phases: dict[tuple[int, int], torch.Tensor] = {}
    for a in range(prm.kh):
        for c in range(prm.kw):
            (oh, fh), (ow, fw) = divmod(dh * a, sh), divmod(dw * c, sw)
            if (sh, sw) == (1, 1):
                src = xp
            else:
                if (fh, fw) not in phases:
                    phases[(fh, fw)] = xp[..., fh::sh, fw::sw].contiguous()
                src = phases[(fh, fw)]
            cols[:, a, c] = src[..., oh: oh + prm.h_out, ow: ow + prm.w_out]
    return cols


def _finish(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``y + b`` broadcast over channels, returned contiguous (NCHW)."""
    y = y.contiguous()
    if bias is not None:
        y += bias.view(1, -1, 1, 1)
    return y


def im2col_blowup(input_size: Sequence[int], kernel_size: Sequence[int], stride=1, padding=0,
                  dilation=1) -> Fraction:
    """Memory of the unfolded matrix over memory of the input, exactly:
    ``k_h k_w H_out W_out / (H W)`` (channels cancel).

    With "same" padding ``p = (k-1)/2`` (odd k, dilation 1) and ``s`` dividing ``H`` and ``W``,
    ``H_out = H/s`` and the factor is exactly ``k_h k_w / (s_h s_w)``.
    """
    h, w = input_size
    kh, kw = as_tuple(kernel_size, 2, "kernel_size")
    s, p, d = as_tuple(stride, 2, "stride"), as_tuple(padding, 2, "padding"), as_tuple(dilation, 2, "dilation")
    ho = conv_output_size(h, kh, s[0], p[0], d[0])
    wo = conv_output_size(w, kw, s[1], p[1], d[1])
    return Fraction(kh * kw * ho * wo, h * w)


def circular_conv1d(x: torch.Tensor, w: torch.Tensor, length: int) -> torch.Tensor:
    """Length-``length`` circular convolution by the DFT: ``irfft(rfft(x, L) · rfft(w, L), L)``.

    ``c[n] = Σ_m w[m] x[(n - m) mod L]`` for ``n < L``; ``x`` and ``w`` are 1-D and must
    each fit in ``L`` (``len(x), len(w) <= L``), otherwise ``ValueError``.
    """
    if x.ndim != 1 or w.ndim != 1:
        raise ValueError(f"circular_conv1d: x and w must be 1-D, got shapes {tuple(x.shape)} and {tuple(w.shape)}")
    if length < max(x.shape[0], w.shape[0]):
        raise ValueError(f"circular_conv1d: length must be >= len(x) and len(w), got {length} < "
                         f"{max(x.shape[0], w.shape[0])}")
    return torch.fft.irfft(torch.fft.rfft(x, length) * torch.fft.rfft(w, length), length)


def circular_alias_free(n: int, k: int, length: int) -> np.ndarray:
    """Which outputs of a length-L circular convolution equal the linear convolution.

    The linear convolution ``y`` of lengths ``N`` and ``K`` has ``N + K - 1`` entries; the
    circular one is its periodic sum ``c[j] = Σ_q y[j + qL]``. Index ``j`` picks up an alias
    exactly when ``j + L <= N + K - 2``, so ``c[j] = y[j]`` for ``j >= N + K - 1 - L`` (reading
    ``y[j] = 0`` beyond its end): all of ``y`` needs ``L >= N + K - 1``; the *valid* outputs ``j ∈ [K-1, N-1]``
    need only ``L >= N``. Returns a boolean mask over ``j = 0 .. L-1``.
    """
    from .conventions import as_int

    n, k, length = as_int(n, "n"), as_int(k, "k"), as_int(length, "length")
    if min(n, k) < 1 or length < max(n, k):
        raise ValueError(f"circular_alias_free: need N, K >= 1 and L >= max(N, K), got N={n}, K={k}, L={length}")
    j = np.arange(length)
    return j >= n + k - 1 - length


def conv2d_fft(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
               dilation=1, groups: int = 1) -> torch.Tensor:
    """Convolution theorem: ``x ⋆ w = x * flip(w)`` and ``DFT(x * w̃) = DFT(x) · DFT(w̃)``.

    The dilated kernel (zeros between taps, size ``K = d(k-1)+1``) is flipped and both it and
    the padded input (size ``N_p = N + 2p``) are transformed at length ``L = N_p`` per axis: by
    :func:`circular_alias_free` the circular result equals the linear one at indices
    ``j >= K - 1``, which are exactly the outputs a layer keeps (stride picks every
    ``s``-th, starting at ``K - 1``).

    Laid out for speed: the input by real FFTs (``rfft2``, ``L_w//2 + 1`` frequencies on the
    last axis); the kernel by :func:`fft_kernel_spectrum`, which transforms only its ``k``
    non-zero taps per axis (two small DFT-matrix GEMMs instead of an ``L_h × L_w`` FFT of a
    mostly-zero array) and is recomputed in every call; and the sum over input channels as one
    batched complex GEMM per frequency, ``Y_f = W_f X_f`` with ``W_f`` of shape
    ``(C_out/G, C_in/G)`` and ``X_f`` of shape ``(C_in/G, N)`` — the batch shares each ``W_f``.
    """
    prm = conv_params(x, weight, bias, stride, padding, dilation, groups, who="conv2d_fft")
    (sh, sw), (ph, pw), (dh, dw) = prm.stride, prm.padding, prm.dilation
    g, n = prm.groups, prm.n
    xp = F.pad(x, (pw, pw, ph, ph))
    lh, lw = xp.shape[-2:]
    fw = lw // 2 + 1
    kh_eff, kw_eff = dh * (prm.kh - 1) + 1, dw * (prm.kw - 1) + 1
    spec = fft_kernel_spectrum(weight, (lh, lw), (dh, dw))                  # (L_h, L_w//2+1, C_out, C_in/G)
    X = torch.fft.rfft2(xp)                                                 # (N, C_in, L_h, L_w//2+1)
    X = X.permute(2, 3, 1, 0).reshape(lh * fw, g, prm.c_in_g, n)            # frequency-major, batch last
    Y = torch.matmul(spec.reshape(lh * fw, g, prm.c_out_g, prm.c_in_g), X)  # (L_h·F_w, G, C_out/G, N)
    Y = Y.reshape(lh, fw, prm.c_out, n).permute(3, 2, 0, 1)
    full = torch.fft.irfft2(Y, s=(lh, lw))
    y = full[..., kh_eff - 1: kh_eff - 1 + sh * (prm.h_out - 1) + 1: sh,
             kw_eff - 1: kw_eff - 1 + sw * (prm.w_out - 1) + 1: sw]
    return _finish(y, bias)


def fft_kernel_spectrum(weight: torch.Tensor, lengths: Sequence[int], dilation=1) -> torch.Tensor:
    """DFT of the flipped, dilated kernel at lengths ``(L_h, L_w)``, one-sided on the last axis:
    shape ``(L_h, L_w//2 + 1, C_out, C_in/G)``, frequency-major.

    Tap ``(a, c)`` of the flipped kernel of extent ``K = d(k-1)+1`` sits at
    ``(K_h-1-d_h a, K_w-1-d_w c)``; every other entry is zero, so
    ``Ŵ[f, φ] = Σ_a E_h[f, a] Σ_c E_w[φ, c] w[a, c]`` with
    ``E[f, a] = exp(-2πi·((f·pos_a) mod L)/L)`` — a ``(F_w × k_w)`` GEMM then an
    ``(L_h × k_h)`` GEMM over the non-zero taps only, instead of an ``L_h × L_w`` FFT of the
    zero-filled array (equal to ``torch.fft.rfft2(flip(w_dilated), s=(L_h, L_w))``). The
    reduced angle keeps float64 accurate. ``L`` must be at least the kernel's extent.
    """
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
        raise ValueError(f"fft_kernel_spectrum: weight must be 4-D (C_out, C_in/G, k_h, k_w), got "
                         f"{tuple(getattr(weight, 'shape', ()))}")
    c_out, c_in_g, kh, kw = weight.shape
    (lh, lw), (dh, dw) = as_tuple(lengths, 2, "lengths"), as_tuple(dilation, 2, "dilation")
    if min(dh, dw) < 1:
        raise ValueError(f"fft_kernel_spectrum: dilation must be >= 1, got {(dh, dw)}")
    kh_eff, kw_eff = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if lh < kh_eff or lw < kw_eff:
        raise ValueError(f"fft_kernel_spectrum: transform lengths {(lh, lw)} must be >= the dilated kernel's extent "
                         f"{(kh_eff, kw_eff)}")
    ctype = torch.complex128 if weight.dtype == torch.float64 else torch.complex64
    e_h = _dft_matrix(lh, lh, [kh_eff - 1 - dh * a for a in range(kh)], weight.device, ctype)      # (L_h, k_h)
    e_w = _dft_matrix(lw, lw // 2 + 1, [kw_eff - 1 - dw * c for c in range(kw)], weight.device, ctype)  # (F_w, k_w)
    taps = weight.permute(2, 3, 0, 1).reshape(kh, kw, c_out * c_in_g).to(ctype)  # (k_h, k_w, C_out·C_in/G)
    rows = torch.matmul(e_w, taps)                                               # (k_h, F_w, C_out·C_in/G)
    spec = torch.matmul(e_h, rows.reshape(kh, -1))                               # (L_h, F_w·C_out·C_in/G)
    return spec.reshape(lh, lw // 2 + 1, c_out, c_in_g)


def _dft_matrix(length: int, freqs: int, positions: Sequence[int], device, ctype) -> torch.Tensor:
    """``E[f, j] = exp(-2πi·((f·positions[j]) mod L)/L)`` for ``f < freqs``: shape ``(freqs, len(positions))``."""
    f = torch.arange(freqs, dtype=torch.int64).unsqueeze(1)
    pos = torch.tensor(list(positions), dtype=torch.int64).unsqueeze(0)
    angle = (-2 * math.pi / length) * torch.remainder(f * pos, length).to(torch.float64)
    return torch.polar(torch.ones_like(angle), angle).to(device=device, dtype=ctype)


def direct_mults(n: int, k: int, c_in: int, c_out: int) -> int:
    """Multiplications of a direct (or im2col) stride-1 "same" convolution of an ``n×n`` image:
    ``C_in C_out n² k²`` (one per tap per output)."""
    return c_in * c_out * n * n * k * k


def fft_mults(n: int, k: int, c_in: int, c_out: int, power_of_two: bool = False) -> float:
    """Real multiplications of the FFT method under a stated model (kernel transforms precomputed).

    Transform length ``L = n + k - 1`` per axis (the padded input of a "same" convolution), or
    the next power of two ``>= n + k - 1`` when ``power_of_two``. A complex FFT of length ``L``
    costs ``(L/2) log2 L`` butterflies of one complex (= 4 real) multiplication (exact for
    radix 2, the usual model otherwise); an ``L×L`` transform does ``2L`` of them:
    ``4 L² log2 L``. Forward transforms of ``C_in`` inputs, inverse transforms of ``C_out``
    outputs, and ``C_in C_out L²`` complex products in between:
    ``(C_in + C_out)·4 L² log2 L + 4 C_in C_out L²``.
    """
    from .conventions import as_int

    n, k, c_in, c_out = (as_int(v, name, 1) for v, name in ((n, "n"), (k, "k"), (c_in, "c_in"), (c_out, "c_out")))
    length = n + k - 1
    if power_of_two:
        length = 1 << (length - 1).bit_length()
    return (c_in + c_out) * 4.0 * length * length * math.log2(length) + 4.0 * c_in * c_out * length * length


def fft_kernel_spectrum_numel(c_in: int, c_out: int, n, k, padding=None, onesided: bool = True) -> int:
    """Complex values held by the transformed kernels of :func:`conv2d_fft` (one group).

    ``n``, ``k`` and ``padding`` are per-axis (an int means both axes); ``padding`` defaults to
    the "same" padding ``(k - 1) // 2``. The transform length per axis is the padded input,
    ``L = n + 2p`` (``n + k - 1`` for odd ``k``); with ``rfft2`` the last axis keeps
    ``L_w // 2 + 1`` frequencies (the rest are conjugates): ``C_in·C_out·L_h·(L_w//2 + 1)``, or
    ``C_in·C_out·L_h·L_w`` for a full complex FFT (``onesided=False``).
    """
    (nh, nw), (kh, kw) = as_tuple(n, 2, "n"), as_tuple(k, 2, "k")
    ph, pw = ((kh - 1) // 2, (kw - 1) // 2) if padding is None else as_tuple(padding, 2, "padding")
    lh, lw = nh + 2 * ph, nw + 2 * pw
    return c_in * c_out * lh * (lw // 2 + 1 if onesided else lw)


def count_multiplications(fn: Callable, *args, **kwargs) -> tuple[object, int]:
    """Run ``fn(*args, **kwargs)`` and count the scalar multiplications its tensor operations perform,
    intercepting every torch function it calls (a ``TorchFunctionMode``): a binary ``einsum`` does one
    product per point of its joint index space; ``matmul``/``mm``/``bmm`` ``batch·m·k·n``; a
    tensor-by-tensor ``mul`` one per output element (multiplying by a Python constant is not counted).
    Any other multiplying operator (``conv``, ``linear``, ``addmm``, ``tensordot``, …) raises
    ``ValueError``, so an algorithm cannot hide multiplications from the count. Returns ``(result, count)``."""
    from torch.overrides import TorchFunctionMode

    state = {"mults": 0}
    matmuls = {torch.matmul, torch.mm, torch.bmm, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.mm,
               torch.Tensor.bmm}
    muls = {torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.Tensor.mul_,
            torch.Tensor.__imul__}
    hidden = ("conv", "linear", "addmm", "addbmm", "baddbmm", "tensordot", "bilinear", "dot", "mv", "inner",
              "outer", "kron", "fft")

    class _Counter(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = getattr(func, "__name__", str(func))
            if func is torch.einsum:
                eq, ops = args[0], args[1:]
                if len(ops) == 1 and isinstance(ops[0], (list, tuple)):
                    ops = tuple(ops[0])
                if "..." in eq or len(ops) != 2:
                    raise ValueError(f"count_multiplications: only binary einsums without '...' are counted, got {eq!r}")
                sizes = {}
                for sub, op in zip(eq.split("->")[0].split(","), ops):
                    sizes.update(zip(sub.strip(), op.shape))
                state["mults"] += int(np.prod(list(sizes.values())))
            elif func in matmuls:
                a, b = args[0], args[1]
                batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]) if a.dim() > 2 or b.dim() > 2 else ()
                state["mults"] += int(np.prod(batch)) * a.shape[-2] * a.shape[-1] * b.shape[-1]
            elif func in muls:
                if all(isinstance(v, torch.Tensor) for v in args[:2]):
                    state["mults"] += int(np.prod(torch.broadcast_shapes(args[0].shape, args[1].shape)))
            elif any(h in name for h in hidden):
                raise ValueError(f"count_multiplications: unaccounted multiplying operator {name}")
            return func(*args, **kwargs)

    with _Counter():
        result = fn(*args, **kwargs)
    return result, state["mults"]


def radix2_fft(a: np.ndarray, inverse: bool = False, counter: dict | None = None) -> np.ndarray:
    """Recursive radix-2 decimation-in-time DFT along the last axis (length a power of two).

    Each level combines two half-length transforms with ``L/2`` butterflies, one complex
    multiplication by a twiddle factor each (trivial twiddles included, as the cost model
    counts them); ``counter["complex_mults"]`` accumulates the multiplications performed,
    ``(L/2)·log2 L`` per transform. ``inverse`` uses conjugate twiddles and no ``1/L`` scaling.
    """
    length = a.shape[-1]
    if length & (length - 1) or length < 1:
        raise ValueError(f"radix2_fft: length must be a power of two, got {length}")
    if length == 1:
        return a.astype(complex)
    even = radix2_fft(a[..., ::2], inverse, counter)
    odd = radix2_fft(a[..., 1::2], inverse, counter)
    sign = 1.0 if inverse else -1.0
    twiddle = np.exp(sign * 2j * np.pi * np.arange(length // 2) / length)
    prod = twiddle * odd
    if counter is not None:
        counter["complex_mults"] = counter.get("complex_mults", 0) + prod.size
    return np.concatenate([even + prod, even - prod], axis=-1)


def conv2d_fft_counted(x: np.ndarray, weight: np.ndarray, padding: int) -> tuple[np.ndarray, int]:
    """A "same"-style stride-1 convolution by 2-D radix-2 FFTs, counting its real multiplications.

    ``x`` is ``(C_in, n, n)``, ``weight`` ``(C_out, C_in, k, k)``. The padded input (``n + 2p``)
    and the flipped kernel are transformed at the power of two ``L >= n + 2p``; the kernel
    transforms are precomputed (not counted), as in :func:`fft_mults`. Counted: ``C_in``
    forward and ``C_out`` inverse 2-D transforms (rows, then columns), and the
    ``C_in·C_out·L²`` products in the frequency domain, each complex multiplication as 4 real.
    Returns ``(y, real_multiplications)``.
    """
    if x.ndim != 3 or weight.ndim != 4 or x.shape[1] != x.shape[2] or weight.shape[2] != weight.shape[3] \
            or weight.shape[1] != x.shape[0]:
        raise ValueError(f"conv2d_fft_counted: x must be (C_in, n, n) and weight (C_out, C_in, k, k), got shapes "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    if not isinstance(padding, int) or padding < 0 or weight.shape[2] > x.shape[1] + 2 * padding:
        raise ValueError(f"conv2d_fft_counted: padding must be an int >= 0 with k <= n + 2p, got padding={padding!r}, "
                         f"k={weight.shape[2]}, n={x.shape[1]}")
    c_in, n, _ = x.shape
    c_out, _, k, _ = weight.shape
    padded = n + 2 * padding
    length = 1 << (padded - 1).bit_length()
    xp = np.zeros((c_in, length, length))
    xp[:, :padded, :padded] = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))
    wf = np.zeros((c_out, c_in, length, length))
    wf[..., :k, :k] = weight[..., ::-1, ::-1]
    counter: dict = {}

    def fft2(a, inverse=False, count=True):
        c = counter if count else None
        rows = radix2_fft(a, inverse, c)
        return np.swapaxes(radix2_fft(np.swapaxes(rows, -1, -2), inverse, c), -1, -2)

    xf = fft2(xp)
    kf = fft2(wf, count=False)  # precomputed per layer
    prod = kf * xf[None]                      # C_out × C_in × L × L complex products
    counter["complex_mults"] = counter.get("complex_mults", 0) + prod.size
    y = fft2(prod.sum(axis=1), inverse=True).real / (length * length)
    n_out = padded - k + 1
    return y[:, k - 1: k - 1 + n_out, k - 1: k - 1 + n_out], 4 * counter["complex_mults"]


def fft_crossover_kernel(n: int, c_in: int, c_out: int, k_max: int | None = None,
                         power_of_two: bool = False) -> int | None:
    """Smallest odd kernel size ``k <= k_max`` (default ``n``) at which :func:`fft_mults` <
    :func:`direct_mults`, or ``None`` if FFT never wins. Bisection over odd ``k``: valid
    when the FFT's advantage is monotone in ``k`` — true for ``L = n + k - 1`` and checked by claim
    ``impl.fft-crossover``; with power-of-two lengths it is not, and the answer is only the
    first odd ``k`` of a bisection."""
    k_max = n if k_max is None else k_max
    odd = list(range(1, k_max + 1, 2))
    lo, hi = 0, len(odd)
    while lo < hi:
        mid = (lo + hi) // 2
        if fft_mults(n, odd[mid], c_in, c_out, power_of_two) < direct_mults(n, odd[mid], c_in, c_out):
            hi = mid
        else:
            lo = mid + 1
    return odd[lo] if lo < len(odd) else None


def float32_errors(algorithms: dict, *, cases: int = 5, seed: int = 7, size: int = 16,
                   channels: int = 16, padding: int = 1, device: str = "cpu") -> dict:
    """RMS relative error ``sqrt(Σ‖y - y64‖² / Σ‖y64‖²)`` (summed over ``cases`` random layers,
    batch 2, ``channels → channels``, 3×3 kernels, ``size × size`` inputs) of each algorithm
    ``fn(x, w, padding=...)`` run in float32, against the float64 ``F.conv2d`` of the same
    float32-representable data. Keys are those of ``algorithms``."""
    device = check_device(device)
    gen = generator(seed)
    sq = {name: 0.0 for name in algorithms}
    total = 0.0
    for _ in range(cases):
        x = randn(2, channels, size, size, gen=gen, device=device).float()
        w = randn(channels, channels, 3, 3, gen=gen, device=device).float()
        ref = F.conv2d(x.double(), w.double(), padding=padding)
        total += float((ref ** 2).sum())
        for name, fn in algorithms.items():
            sq[name] += float(((fn(x, w, padding=padding).double() - ref) ** 2).sum())
    return {name: math.sqrt(v / total) for name, v in sq.items()}


def plot_im2col(input_size: Sequence[int] = (4, 4), channels: int = 2, kernel_size: int = 3, stride=1, padding=0,
                axes=None):
    """Left: the input with each entry labelled by its flat index; right: the unfolded matrix,
    each cell labelled with the input entry it copies (· for padding)."""
    import matplotlib.pyplot as plt

    h, w = input_size
    x = torch.arange(1.0, channels * h * w + 1, dtype=DTYPE).reshape(1, channels, h, w)
    cols = im2col(x, kernel_size, stride, padding)[0].numpy()
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 5), gridspec_kw={"width_ratios": [1, 1.4]})
    grid = x[0].reshape(channels * h, w).numpy()
    axes[0].imshow(np.repeat(np.arange(channels), h)[:, None] * np.ones((1, w)), cmap="Pastel1", vmin=0, vmax=8)
    for (r, c), v in np.ndenumerate(grid):
        axes[0].text(c, r, f"{int(v)}", ha="center", va="center", fontsize=8)
    axes[0].set_title(f"input: {channels} channels of {h}×{w} (stacked)")
    axes[1].imshow(np.where(cols > 0, (cols - 1) // (h * w), np.nan), cmap="Pastel1", vmin=0, vmax=8, aspect="auto")
    for (r, c), v in np.ndenumerate(cols):
        axes[1].text(c, r, f"{int(v)}" if v > 0 else "·", ha="center", va="center", fontsize=7)
    axes[1].set_title(f"unfolded: {cols.shape[0]}×{cols.shape[1]} = (C·k², H_out·W_out)")
    axes[1].set_xlabel("output position u·W_out + v")
    axes[1].set_ylabel("row (channel, tap)")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return axes


def plot_fft_crossover(n_values: Sequence[int] = (14, 28, 56, 112), c: int = 64, ax=None):
    """Ratio direct/FFT multiplications against odd kernel size, one curve per image size."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for n in n_values:
        ks = list(range(1, 32, 2))
        ax.plot(ks, [direct_mults(n, k, c, c) / fft_mults(n, k, c, c) for k in ks], marker="o", label=f"{n}×{n}")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("kernel size k")
    ax.set_ylabel("direct mults / FFT mults")
    ax.set_title(f"FFT wins above the line (C_in = C_out = {c}, 'same' padding)")
    ax.legend(title="image")
    return ax


# --------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------


def random_conv_case(gen: torch.Generator, device: str, *, kernel_max: int = 4, stride_max: int = 3,
                     dilation_max: int = 2, allow_groups: bool = True):
    """One random small ``F.conv2d`` configuration (x, weight, bias, kwargs) that is valid."""
    while True:
        g = randint(1, 3, gen) if allow_groups else 1
        c_in, c_out = g * randint(1, 3, gen), g * randint(1, 3, gen)
        h, w = randint(1, 10, gen), randint(1, 10, gen)  # 1-pixel inputs included
        kh, kw = randint(1, kernel_max, gen), randint(1, kernel_max, gen)
        s = (randint(1, stride_max, gen), randint(1, stride_max, gen))
        d = (randint(1, dilation_max, gen), randint(1, dilation_max, gen))
        p = (randint(0, 2, gen), randint(0, 2, gen))
        if d[0] * (kh - 1) + 1 <= h + 2 * p[0] and d[1] * (kw - 1) + 1 <= w + 2 * p[1]:
            break
    x = randn(randint(1, 2, gen), c_in, h, w, gen=gen, device=device)
    weight = randn(c_out, c_in // g, kh, kw, gen=gen, device=device)
    bias = randn(c_out, gen=gen, device=device) if randint(0, 1, gen) else None
    return x, weight, bias, dict(stride=s, padding=p, dilation=d, groups=g)


def layout_cases(gen: torch.Generator, device: str) -> list[tuple]:
    """Configurations that reach every layout of :func:`conv2d_im2col` (small random layers miss the
    wide ones): an unpadded 1×1 kernel on one image, on several images with ≥ 512 and with fewer
    output pixels each, strided; and strided, dilated, padded k×k kernels on several images.
    Returns ``[(x, weight, bias, kwargs)]``, groups and bias drawn at random."""
    out = []
    for n, hw, k, s, p, d in ((1, 7, 1, 1, 0, 1), (3, 24, 1, 1, 0, 1), (3, 6, 1, 1, 0, 1), (2, 9, 1, (2, 3), 0, 1),
                              (2, 13, 3, (2, 3), (2, 1), (2, 1)), (3, 12, (5, 2), 2, 1, (1, 2))):
        g = randint(1, 2, gen)
        kh, kw = (k, k) if isinstance(k, int) else k
        x = randn(n, 2 * g, hw, hw + 1, gen=gen, device=device)
        weight = randn(3 * g, 2, kh, kw, gen=gen, device=device)
        bias = randn(3 * g, gen=gen, device=device) if randint(0, 1, gen) else None
        out.append((x, weight, bias, dict(stride=s, padding=p, dilation=d, groups=g)))
    return out


def _describe(x, weight, kw) -> str:
    return f"x={tuple(x.shape)} w={tuple(weight.shape)} " + " ".join(f"{k}={v}" for k, v in kw.items())


def _check_against_torch(fn_name: str, seed: int, device: str, cases: int = 200) -> Tally:
    t = Tally(tol=1e-10)
    gen = generator(seed)
    for _ in range(cases):
        x, weight, bias, kw = random_conv_case(gen, device)
        fn = globals()[fn_name]  # through the module global, so a planted error bites
        t.close(fn(x, weight, bias, **kw), F.conv2d(x, weight, bias, **kw), _describe(x, weight, kw))
    return t


@claim(
    "impl.direct",
    title="The direct loop nest equals F.conv2d",
    chapter=11,
    statement="conv2d_direct, the loop over kernel taps, equals F.conv2d in float64 for every per-axis stride, padding and dilation, groups with any channel multipliers, with or without bias, on inputs from 1×1 pixel up.",
    parameters=("stride", "padding", "dilation", "groups", "bias"),
    reference="PyTorch F.conv2d",
)
def check_direct(device: str = "cpu"):
    device = check_device(device)
    t = _check_against_torch("conv2d_direct", 1101, device)
    return t.verdict("random layers (stride, padding, dilation, groups, bias) vs F.conv2d", case_unit="layers",
                     dtype="float64")


@claim(
    "impl.im2col",
    title="im2col + GEMM equals F.conv2d",
    chapter=11,
    statement="The unfolded matrix has shape (C_in k_h k_w, H_out W_out) and equals F.unfold; one GEMM per group with the (C_out/G, (C_in/G) k_h k_w) weight matrix equals F.conv2d for every per-axis stride, padding and dilation, groups with any channel multipliers, with or without bias.",
    parameters=("stride", "padding", "dilation", "groups", "bias"),
    reference="PyTorch F.conv2d and F.unfold",
)
def check_im2col(device: str = "cpu"):
    device = check_device(device)
    t = _check_against_torch("conv2d_im2col", 1102, device)
    gen = generator(1112)
    for x, weight, bias, kw in layout_cases(gen, device):  # the wide 1×1 and strided-phase layouts
        t.close(globals()["conv2d_im2col"](x, weight, bias, **kw), F.conv2d(x, weight, bias, **kw),
                "layout " + _describe(x, weight, kw))
    for _ in range(40):
        x, weight, _, kw = random_conv_case(gen, device, allow_groups=False)
        k = tuple(weight.shape[2:])
        cols = im2col(x, k, kw["stride"], kw["padding"], kw["dilation"])
        ref = F.unfold(x, k, dilation=kw["dilation"], padding=kw["padding"], stride=kw["stride"])
        t.close(cols, ref, "im2col vs F.unfold " + _describe(x, weight, kw))
    return t.verdict("random layers vs F.conv2d; unfolded matrices vs F.unfold", dtype="float64")


@claim(
    "impl.im2col-blowup",
    title="The unfolded matrix is k²/s² times larger than the input",
    chapter=11,
    statement="For every kernel k_h × k_w, stride, padding and dilation and every H × W input, im2col stores C_in k_h k_w H_out W_out numbers, k_h k_w H_out W_out / (H W) times the input; with 'same' padding (odd kernels, dilation 1) and s_h | H, s_w | W this is exactly k_h k_w/(s_h s_w).",
    parameters=("kernel size", "stride", "per-axis sizes"),
    reference="size of PyTorch's F.unfold output, exact fractions",
)
def check_im2col_blowup(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    grid = 0
    for kh, kw in ((1, 1), (3, 3), (5, 3), (3, 7), (7, 7), (1, 5)):
        for sh, sw in ((1, 1), (2, 2), (3, 1), (1, 2), (3, 3)):
            for h, w in ((6, 12), (12, 6), (6, 6), (1, 1), (7, 5)):
                for c in (1, 3):
                    ph, pw = kh // 2, kw // 2
                    x = torch.zeros(1, c, h, w, dtype=DTYPE, device=device)
                    cols = F.unfold(x, (kh, kw), padding=(ph, pw), stride=(sh, sw))  # PyTorch's unfolded matrix, counted
                    factor = im2col_blowup((h, w), (kh, kw), (sh, sw), (ph, pw))
                    t.exact(Fraction(cols.numel(), x.numel()) == factor, f"factor k={kh}x{kw} s={sh},{sw} {h}x{w}")
                    if h % sh == 0 and w % sw == 0:
                        t.exact(factor == Fraction(kh * kw, sh * sw), f"k²/s² k={kh}x{kw} s={sh},{sw} {h}x{w}")
                    grid += 1
    gen = generator(1103)
    for _ in range(60):  # any padding and dilation: the general factor
        x, weight, _, kw_ = random_conv_case(gen, device, allow_groups=False)
        k = tuple(weight.shape[2:])
        cols = F.unfold(x[:1], k, dilation=kw_["dilation"], padding=kw_["padding"], stride=kw_["stride"])
        factor = im2col_blowup(tuple(x.shape[2:]), k, kw_["stride"], kw_["padding"], kw_["dilation"])
        t.exact(Fraction(cols.numel(), x[:1].numel()) == factor, "general factor " + _describe(x, weight, kw_))
    t.note(f"{grid} 'same' layers and 60 random ones; e.g. 3×3, stride 1: ×9; 7×7 stride 2: ×49/4")
    return t.verdict("F.unfold size vs formula, exact fractions: grid of 'same' layers + random layers",
                     case_unit="comparisons")


@claim(
    "impl.fft-padding",
    title="Circular equals linear convolution exactly where no alias lands",
    chapter=11,
    statement="For every N >= 1, 1 <= K <= N and L >= N, a length-L circular convolution of lengths N and K equals the linear one at exactly the indices j >= N + K - 1 - L: L >= N + K - 1 recovers all of it, L = N the valid part.",
    parameters=("N", "K", "L"),
    reference="numpy.convolve (linear convolution by definition)",
)
def check_fft_padding(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-10)
    gen = generator(1104)
    for _ in range(60):
        n = randint(1, 12, gen)
        k = randint(1, n, gen)
        length = randint(n, n + k + 2, gen)
        x, w = randn(n, gen=gen, device=device), randn(k, gen=gen, device=device)
        lin = torch.zeros(max(length, n + k - 1), dtype=DTYPE)
        lin[: n + k - 1] = torch.from_numpy(np.convolve(x.cpu().numpy(), w.cpu().numpy()))
        lin = lin[:length]
        circ = circular_conv1d(x, w, length).cpu()
        ok = torch.from_numpy(circular_alias_free(n, k, length))
        idx = torch.nonzero(ok).flatten()
        if idx.numel():
            t.close(circ[idx], lin[idx], f"alias-free N={n} K={k} L={length}")
        scale = float(lin.abs().max())
        for j in torch.nonzero(~ok).flatten().tolist():
            t.exact(abs(float(circ[j] - lin[j])) > 1e-9 * scale, f"predicted alias but equal N={n} K={k} L={length} j={j}")
        t.exact(bool(ok[k - 1: n].all()), f"valid part not alias-free at L={length} >= N={n}")
    return t.verdict("random lengths vs numpy.convolve: equal where predicted, aliased elsewhere", dtype="float64")


@claim(
    "impl.fft",
    title="The FFT convolution equals F.conv2d",
    chapter=11,
    statement="conv2d_fft (flipped dilated kernel, transform length = padded input size, subsample for stride) equals F.conv2d in float64 for every per-axis stride, padding and dilation, groups with any channel multipliers, with or without bias.",
    parameters=("stride", "padding", "dilation", "groups", "bias"),
    reference="PyTorch F.conv2d",
)
def check_fft(device: str = "cpu"):
    device = check_device(device)
    t = _check_against_torch("conv2d_fft", 1105, device)
    return t.verdict("random layers (stride, padding, dilation, groups, bias) vs F.conv2d", case_unit="layers",
                     dtype="float64")


@claim(
    "impl.fft-crossover",
    title="Above a kernel size the FFT needs fewer multiplications than direct convolution",
    chapter=11,
    statement="Count real multiplications: direct 'same' convolution performs C_in·C_out·n²·k² (as conv2d_direct does); the FFT method (kernel transforms precomputed) performs (C_in + C_out)·4L²·log2 L + 4·C_in·C_out·L² with L the transform length — exactly what a radix-2 FFT convolution performs when L is a power of two, and the usual model otherwise. With L = n + k − 1, for n×n images and C_in = C_out = C the FFT beats direct exactly for odd k >= k*(n, C) (k <= n); rounding transforms up to powers of two destroys the threshold.",
    parameters=("n", "k", "channels"),
    reference="multiplications counted as conv2d_direct's torch operations run (a TorchFunctionMode) and in a counted radix-2 FFT convolution checked against F.conv2d; exhaustive enumeration over odd k",
)
def check_fft_crossover(device: str = "cpu"):
    check_device(device)
    t = Tally(tol=1e-10)
    gen = generator(1107)
    # 1. the two cost formulas against the multiplications the algorithms perform
    for n, k, c_in, c_out in ((5, 3, 2, 3), (6, 1, 3, 1), (4, 5, 1, 2), (1, 1, 2, 2), (7, 3, 1, 4), (3, 3, 3, 2),
                              (9, 5, 2, 1), (2, 3, 1, 1)):
        p = (k - 1) // 2
        x = randn(1, c_in, n, n, gen=gen)
        w = randn(c_out, c_in, k, k, gen=gen)
        y, performed = count_multiplications(conv2d_direct, x, w, padding=p)
        t.close(y, F.conv2d(x, w, padding=p), f"direct n={n} k={k}")
        t.exact(performed == direct_mults(n, k, c_in, c_out),
                f"direct n={n} k={k} C={c_in}->{c_out}: performed {performed} vs {direct_mults(n, k, c_in, c_out)}")
        y_fft, mults = conv2d_fft_counted(x[0].numpy(), w.numpy(), p)
        t.close(y_fft, F.conv2d(x, w, padding=p)[0], f"counted FFT n={n} k={k}")
        t.exact(mults == fft_mults(n, k, c_in, c_out, power_of_two=True),
                f"FFT n={n} k={k} C={c_in}->{c_out}: performed {mults} vs {fft_mults(n, k, c_in, c_out, True)}")
    # 2. the threshold: every odd k on a grid of sizes and widths
    for n in (1, 7, 8, 14, 16, 28, 32, 56, 64, 112, 224):
        for c in (1, 3, 16, 64, 256):
            kstar = fft_crossover_kernel(n, c, c)
            wins = [k for k in range(1, n + 1, 2) if fft_mults(n, k, c, c) < direct_mults(n, k, c, c)]
            expected = wins[0] if wins else None
            t.exact(kstar == expected, f"n={n} C={c}: bisection {kstar} vs enumeration {expected}")
            t.exact(not wins or wins == list(range(expected, n + 1, 2)), f"not a threshold n={n} C={c}")
    # power-of-two lengths: the wins come and go (n = 14, C = 16: k = 3 wins, k = 5 loses)
    wins = [k for k in range(1, 15, 2) if fft_mults(14, k, 16, 16, True) < direct_mults(14, k, 16, 16)]
    t.exact(3 in wins and 5 not in wins, f"power-of-two wins for n=14, C=16: {wins}")
    return t.verdict("cost formulas vs multiplications performed (direct, radix-2 FFT); bisection vs enumeration over odd k",
                     case_unit="comparisons", dtype="float64")
