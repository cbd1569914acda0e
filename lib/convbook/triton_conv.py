"""Chapter 11: an implicit-GEMM convolution kernel in Triton (no unfolded matrix in memory).

The im2col GEMM ``Y[(n,u,v), o] = Σ_K A[(n,u,v), K] · B[K, o]`` with ``K = (i, a, c)`` runs
here without ever storing ``A``: each program owns a ``BLOCK_M × BLOCK_N`` tile of ``Y``
(``BLOCK_M`` output positions × ``BLOCK_N`` output channels of one group) and, for each
``BLOCK_K`` slice of ``K``, computes the input coordinates

    h = s_h u - p_h + d_h a,    w = s_w v - p_w + d_w c

from the indices, loads ``x[n, g C_in/G + i, h, w]`` (zero where ``(h, w)`` falls in the
padding, by a mask) and the weight slice, and accumulates ``tl.dot``. Memory traffic is the
input, the weight and the output; the ``k_h k_w / (s_h s_w)`` blow-up of im2col never exists.

Triton is optional. On CUDA tensors the kernel is compiled; on CPU tensors it runs in
Triton's interpreter (the mode ``TRITON_INTERPRET=1`` selects), slowly, which is how the
tests and claim ``impl.triton`` exercise it without a GPU.  When Triton cannot be imported,
:func:`conv2d_triton` raises ``RuntimeError`` saying how to install it, and the claim
``impl.triton`` is *not registered* (a check that could only be skipped would pass vacuously).
"""

import importlib.util
import os
from functools import lru_cache

import torch

from .claims import Tally, claim
from .impl import conv_params, random_conv_case
from .numerics import check_device, generator

__all__ = ["TRITON_AVAILABLE", "triton_missing_reason", "conv2d_triton", "triton_agreement"]

tl = None  # triton.language, imported on first use by _kernel

if not torch.cuda.is_available():
    # no GPU: Triton can only run in its interpreter; set the mode before triton is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

#: Whether the ``triton`` package is installed (the claim is registered only then).
TRITON_AVAILABLE: bool = importlib.util.find_spec("triton") is not None


def triton_missing_reason() -> str | None:
    """``None`` when Triton imports, else the reason with the install command."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return (f"Triton is not available ({type(exc).__name__}: {exc}); install it with "
                f"`pip install triton==3.9.0` (pinned in requirements.txt) to run conv2d_triton")
    return None


def conv2d_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
                  dilation=1, groups: int = 1, *, block_m: int = 128, block_n: int = 16,
                  block_k: int = 64) -> torch.Tensor:
    """``F.conv2d`` by an implicit-GEMM Triton kernel (module docstring); every stride,
    padding, dilation, groups and bias. float32 accumulates in float32 with IEEE (no TF32)
    products; float64 in float64. CPU tensors run in Triton's interpreter.

    Raises ``RuntimeError`` when Triton is missing (with the install command), ``ValueError``
    for invalid arguments (as :func:`convbook.impl.conv_params`) and for dtypes other than
    float32/float64 or block sizes that are not powers of two >= 16.
    """
    reason = triton_missing_reason()
    if reason is not None:
        raise RuntimeError(reason)
    prm = conv_params(x, weight, bias, stride, padding, dilation, groups, who="conv2d_triton")
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"conv2d_triton: dtype must be float32 or float64, got {x.dtype}")
    for name, b in (("block_m", block_m), ("block_n", block_n), ("block_k", block_k)):
        if b < 16 or b & (b - 1):
            raise ValueError(f"conv2d_triton: {name} must be a power of two >= 16 (tl.dot), got {b}")
    import triton

    kernel = _kernel(x.device.type == "cuda")
    x_c, w_c = x.contiguous(), weight.contiguous()
    y = torch.empty(prm.n, prm.c_out, prm.h_out, prm.w_out, dtype=x.dtype, device=x.device)
    b_arg = bias.contiguous() if bias is not None else y  # dummy pointer when there is no bias
    m_total = prm.n * prm.h_out * prm.w_out
    grid = (triton.cdiv(m_total, block_m), triton.cdiv(prm.c_out_g, block_n), prm.groups)
    kernel[grid](
        x_c, w_c, b_arg, y,
        prm.c_in, prm.h, prm.w, prm.h_out, prm.w_out, m_total,
        *x_c.stride(), *w_c.stride(), *y.stride(),
        *prm.stride, *prm.padding, *prm.dilation,
        CIN_G=prm.c_in_g, COUT_G=prm.c_out_g, KH=prm.kh, KW=prm.kw,
        HAS_BIAS=bias is not None, FP64=x.dtype == torch.float64,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
    )
    return y


def triton_agreement(cases: int, seed: int, device: str = "cpu") -> Tally:
    """Float64 comparison of :func:`conv2d_triton` with ``F.conv2d`` on ``cases`` random layers."""
    import torch.nn.functional as F

    t = Tally(tol=1e-10)
    gen = generator(seed)
    for _ in range(cases):
        x, weight, bias, kw = random_conv_case(gen, device)
        t.close(conv2d_triton(x, weight, bias, **kw), F.conv2d(x, weight, bias, **kw),
                f"x={tuple(x.shape)} w={tuple(weight.shape)} {kw}")
    return t


# --------------------------------------------------------------------------------------
# Claims (registered only when Triton is installed)
# --------------------------------------------------------------------------------------

if TRITON_AVAILABLE:

    @claim(
        "impl.triton",
        title="The implicit-GEMM Triton kernel equals F.conv2d",
        chapter=11,
        statement="conv2d_triton, which never stores the unfolded matrix, equals F.conv2d in float64 for every stride, padding, dilation, groups and bias (on CPU through Triton's interpreter; 20 layers here, 200 more in the tests).",
    )
    def check_triton(device: str = "cpu"):
        device = check_device(device)
        import torch.nn.functional as F

        import convbook.triton_conv as mod

        t = Tally(tol=1e-10)
        gen = generator(1107)
        # the interpreter costs ~50 ms a launch: 20 layers here (the ledger's 1.5 s budget);
        # tests/test_triton_conv.py runs 200 more through triton_agreement
        for _ in range(20):
            x, weight, bias, kw = random_conv_case(gen, device)
            out = mod.conv2d_triton(x, weight, bias, **kw)  # through the module global: plants bite
            t.close(out, F.conv2d(x, weight, bias, **kw), f"x={tuple(x.shape)} w={tuple(weight.shape)} {kw}")
        mode = "Triton interpreter" if device == "cpu" else "compiled Triton"
        return t.verdict(f"random layers vs F.conv2d ({mode})", case_unit="layers", dtype="float64")


# --------------------------------------------------------------------------------------
# Private helpers
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _kernel(compiled: bool):
    """The Triton kernel: compiled for CUDA tensors, interpreted for CPU tensors."""
    global tl  # the kernel's globals must hold ``tl`` (Triton's compiler resolves names there)
    import triton
    import triton.language as tl

    def implicit_gemm_conv2d(
        x_ptr, w_ptr, b_ptr, y_ptr,
        C_IN, H, W, H_OUT, W_OUT, M_TOTAL,
        sxn, sxc, sxh, sxw, swo, swi, swh, sww, syn, syc, syh, syw,
        STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
        CIN_G: tl.constexpr, COUT_G: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
        HAS_BIAS: tl.constexpr, FP64: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        grp = tl.program_id(2)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)      # output positions (n, u, v)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)      # output channels within the group
        m_ok = offs_m < M_TOTAL
        n_ok = offs_n < COUT_G
        img = (offs_m // (H_OUT * W_OUT)).to(tl.int64)
        rem = offs_m % (H_OUT * W_OUT)
        u = rem // W_OUT
        v = rem % W_OUT
        if FP64:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        K_TOTAL = CIN_G * KH * KW
        for k0 in range(0, K_TOTAL, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)               # reduction index (i, a, c)
            k_ok = offs_k < K_TOTAL
            ci = offs_k // (KH * KW)
            tap = offs_k % (KH * KW)
            a = tap // KW
            c = tap % KW
            h = u[:, None] * STRIDE_H - PAD_H + a[None, :] * DIL_H
            w = v[:, None] * STRIDE_W - PAD_W + c[None, :] * DIL_W
            inside = (h >= 0) & (h < H) & (w >= 0) & (w < W) & m_ok[:, None] & k_ok[None, :]
            x_off = img[:, None] * sxn + (grp * CIN_G + ci[None, :]) * sxc + h * sxh + w * sxw
            tile_a = tl.load(x_ptr + x_off, mask=inside, other=0.0)
            w_off = (grp * COUT_G + offs_n[None, :]) * swo + ci[:, None] * swi + a[:, None] * swh + c[:, None] * sww
            tile_b = tl.load(w_ptr + w_off, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            acc += tl.dot(tile_a, tile_b, input_precision="ieee")
        if HAS_BIAS:
            acc += tl.load(b_ptr + grp * COUT_G + offs_n, mask=n_ok, other=0.0)[None, :]
        y_off = img[:, None] * syn + (grp * COUT_G + offs_n[None, :]) * syc + u[:, None] * syh + v[:, None] * syw
        tl.store(y_ptr + y_off, acc, mask=m_ok[:, None] & n_ok[None, :])

    if compiled:
        return triton.runtime.jit.JITFunction(implicit_gemm_conv2d)
    from triton.runtime.interpreter import InterpretedFunction

    return InterpretedFunction(implicit_gemm_conv2d)
