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

Precisions (``mode``, from the input dtype and ``input_precision``), all but fp64 accumulating
in float32:

==============  ===========================  ======================  ===========================
mode            inputs                       products on             output
==============  ===========================  ======================  ===========================
``fp64``        float64                      FP64 units              float64
``fp32-ieee``   float32 (the default)        FP32 FMA units          float32
``tf32``        float32, ``input_precision``  tensor cores (TF32)     float32
                ``="tf32"``
``fp16``        float16                      tensor cores            float16
``bf16``        bfloat16                     tensor cores            bfloat16
==============  ===========================  ======================  ===========================

Triton's interpreter (CPU tensors) is a numpy emulation, and with Triton 3.9 it is exact
enough only for some of these: fp16 products are formed in float32 and summed in float32, as
on tensor cores; ``input_precision="tf32"`` is *ignored* there (the products are full float32,
so an interpreter run of ``tf32`` is a float32 run and says nothing about TF32 rounding); and
bfloat16 tensors reach its ``tl.dot`` as their raw 16-bit integer patterns, so a bf16 product
comes out as garbage.  :func:`conv2d_triton` therefore refuses bf16 CPU tensors with a
``ValueError``; bf16 is checked only on a GPU.

The error of the reduced-precision modes is bounded in :func:`rounding_error_bound` (derived
there); the tile sizes on a GPU come from :func:`pick_config`.
"""

import importlib.util
import math
import os
from dataclasses import dataclass
from functools import lru_cache

import torch

from .claims import Tally, claim
from .impl import conv_params, random_conv_case
from .numerics import check_device, generator

__all__ = [
    "TRITON_AVAILABLE",
    "triton_missing_reason",
    "MODES",
    "UNIT_ROUNDOFF",
    "TileConfig",
    "CONFIGS",
    "INTERPRETER_CONFIG",
    "pick_config",
    "conv_mode",
    "conv2d_triton",
    "gamma",
    "rounding_error_bound",
    "triton_agreement",
]

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


#: The five arithmetic modes of :func:`conv2d_triton` (module docstring).
MODES = ("fp64", "fp32-ieee", "tf32", "fp16", "bf16")

#: ``mode -> (u_in, u_acc, u_out)``: unit roundoff of the rounding the *kernel* applies to its
#: inputs, of its accumulation and of its output store (0: no rounding there).
#:
#: * ``u_in``: only TF32 rounds inputs inside the kernel (float32 → TF32, 10 explicit
#:   significand bits): ``2^-10``, the truncation error. Triton hands the float32 bits to the
#:   tensor-core instruction unconverted on sm_90 and sm_80 (no ``cvt.rna.tf32`` in the PTX;
#:   ``tests/test_gpu_compile.py`` checks), and the instruction ignores the 13 low bits;
#:   round-to-nearest would halve the error.  fp16 and
#:   bf16 inputs are used as given (a float32 → fp16/bf16 conversion is the caller's rounding).
#: * ``u_acc``: float32 sums on tensor cores truncate instead of rounding to nearest (Fasi,
#:   Higham, Mikaitis & Pranesh 2021 measured this on V100, T4 and A100), so ``2^-23``; the FMA
#:   path rounds to nearest, ``2^-24``; float64 ``2^-53``.
#: * ``u_out``: the float32 accumulator stored as fp16 (``2^-11``) or bf16 (``2^-8``).
UNIT_ROUNDOFF: dict[str, tuple[float, float, float]] = {
    "fp64": (0.0, 2.0 ** -53, 0.0),
    "fp32-ieee": (0.0, 2.0 ** -24, 0.0),
    "tf32": (2.0 ** -10, 2.0 ** -23, 0.0),
    "fp16": (0.0, 2.0 ** -23, 2.0 ** -11),
    "bf16": (0.0, 2.0 ** -23, 2.0 ** -8),
}

_ITEMSIZE = {"fp64": 8, "fp32-ieee": 4, "tf32": 4, "fp16": 2, "bf16": 2}


@dataclass(frozen=True)
class TileConfig:
    """One launch configuration: a ``block_m × block_n`` output tile per program, ``block_k``
    reduction indices per step, ``num_warps`` warps, ``num_stages`` software-pipeline stages."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int

    @property
    def name(self) -> str:
        return f"{self.block_m}x{self.block_n}x{self.block_k}/{self.num_warps}w/{self.num_stages}s"


#: The configurations :func:`pick_config` chooses from, per mode (tensor-core modes: 64- and
#: 128-wide tiles; the FMA modes smaller tiles, as their products are held in registers).
#: ``block_k = 32`` for the 16-bit modes too: each thread computes the address and the padding
#: mask of every input element it gathers, and with 64 reduction indices per step (and 64-bit
#: offsets) every 16-bit configuration compiled for sm_90 spilled, up to 2 KB per thread; with
#: 32 and 32-bit offsets the largest sm_90 spill is 12 bytes (``notebooks/data/gpu/compiled.json``).
CONFIGS: dict[str, tuple[TileConfig, ...]] = {
    "bf16": (TileConfig(128, 128, 32, 8, 3), TileConfig(128, 64, 32, 4, 3), TileConfig(64, 128, 32, 4, 3),
             TileConfig(64, 64, 32, 4, 3)),
    "fp16": (TileConfig(128, 128, 32, 8, 3), TileConfig(128, 64, 32, 4, 3), TileConfig(64, 128, 32, 4, 3),
             TileConfig(64, 64, 32, 4, 3)),
    "tf32": (TileConfig(128, 128, 32, 8, 3), TileConfig(128, 64, 32, 4, 3), TileConfig(64, 128, 32, 4, 3),
             TileConfig(64, 64, 32, 4, 3)),
    "fp32-ieee": (TileConfig(64, 64, 32, 4, 2), TileConfig(64, 32, 32, 4, 2)),
    "fp64": (TileConfig(64, 64, 16, 4, 2), TileConfig(64, 32, 16, 4, 2)),
}

#: Block sizes of CPU (interpreter) runs: few programs, since each costs ~50 ms there.
INTERPRETER_CONFIG = TileConfig(128, 16, 64, 4, 1)


def conv_mode(dtype: torch.dtype, input_precision: str | None = None) -> str:
    """The arithmetic mode (:data:`MODES`) of a call with inputs of ``dtype``.

    ``input_precision`` is ``None`` or ``"ieee"`` (exact float32 products) or ``"tf32"``, and
    only float32 accepts it; ``ValueError`` otherwise.
    """
    if input_precision not in (None, "ieee", "tf32"):
        raise ValueError(f"input_precision must be None, 'ieee' or 'tf32', got {input_precision!r}")
    if dtype == torch.float32:
        return "tf32" if input_precision == "tf32" else "fp32-ieee"
    modes = {torch.float64: "fp64", torch.float16: "fp16", torch.bfloat16: "bf16"}
    if dtype not in modes:
        raise ValueError(f"conv2d_triton: dtype must be float64, float32, float16 or bfloat16, got {dtype}")
    if input_precision is not None:
        raise ValueError(f"input_precision={input_precision!r} applies to float32 inputs only (got {dtype}): "
                         f"float64 is always IEEE, fp16/bf16 always use tensor cores")
    return modes[dtype]


def pick_config(m_total: int, c_out_g: int, groups: int, mode: str, sm_count: int = 132) -> TileConfig:
    """The tile configuration for a layer with ``m_total = N·H_out·W_out`` output positions,
    ``c_out_g`` output channels per group and ``groups`` groups, on a GPU with ``sm_count`` SMs.

    Rule (from :data:`CONFIGS` of ``mode``):

    1. ``block_n`` = the smallest tile width ≥ ``c_out_g`` (so a 64-channel layer does not
       compute a half-empty 128-wide tile), else the widest;
    2. ``block_m`` = the tallest tile height, unless the grid
       ``⌈m_total/block_m⌉·⌈c_out_g/block_n⌉·groups`` would then have fewer tiles than the
       GPU has SMs: then the shortest height (more, smaller tiles fill more SMs);
    3. ``block_k``, ``num_warps`` and ``num_stages`` come with the chosen ``(block_m, block_n)``.
    """
    if mode not in CONFIGS:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    for name, v in (("m_total", m_total), ("c_out_g", c_out_g), ("groups", groups), ("sm_count", sm_count)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"pick_config: {name} must be an int >= 1, got {v!r}")
    cfgs = CONFIGS[mode]
    widths = sorted({c.block_n for c in cfgs})
    block_n = next((b for b in widths if b >= c_out_g), widths[-1])
    heights = sorted({c.block_m for c in cfgs if c.block_n == block_n})
    block_m = heights[-1]
    if math.ceil(m_total / block_m) * math.ceil(c_out_g / block_n) * groups < sm_count:
        block_m = heights[0]
    return next(c for c in cfgs if (c.block_m, c.block_n) == (block_m, block_n))


def conv2d_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
                  dilation=1, groups: int = 1, *, input_precision: str | None = None,
                  config: TileConfig | None = None, block_m: int | None = None, block_n: int | None = None,
                  block_k: int | None = None) -> torch.Tensor:
    """``F.conv2d`` by an implicit-GEMM Triton kernel (module docstring); every stride,
    padding, dilation, groups and bias.

    Arithmetic by input dtype (:func:`conv_mode`): float64 in float64; float32 with IEEE
    float32 products (``input_precision=None`` or ``"ieee"``, no TF32) or with TF32 tensor-core
    products (``input_precision="tf32"``); float16 and bfloat16 on tensor cores.  All but
    float64 accumulate in float32; the output has the input dtype.  Error bounds:
    :func:`rounding_error_bound`.

    Tiles: ``config`` (a :class:`TileConfig`), else :func:`pick_config` on CUDA tensors and
    :data:`INTERPRETER_CONFIG` on CPU tensors; ``block_m``/``block_n``/``block_k`` override the
    chosen sizes.  CPU tensors run in Triton's interpreter, where ``"tf32"`` computes full
    float32 products (no TF32 rounding) and bfloat16 is refused.

    Raises ``RuntimeError`` when Triton is missing (with the install command), ``ValueError``
    for invalid arguments (as :func:`convbook.impl.conv_params`), for other dtypes, for
    ``input_precision`` with a dtype other than float32, for bfloat16 on a CPU tensor and for
    block sizes that are not powers of two >= 16.
    """
    reason = triton_missing_reason()
    if reason is not None:
        raise RuntimeError(reason)
    prm = conv_params(x, weight, bias, stride, padding, dilation, groups, who="conv2d_triton")
    mode = conv_mode(x.dtype, input_precision)
    compiled = x.device.type == "cuda"
    if mode == "bf16" and not compiled:
        raise ValueError("conv2d_triton: bfloat16 runs only on a CUDA device; Triton 3.9's interpreter (CPU "
                         "tensors) passes bf16 values to tl.dot as raw 16-bit integers and returns garbage "
                         f"(got a bfloat16 tensor on {x.device})")
    m_total = prm.n * prm.h_out * prm.w_out
    if config is None:
        config = pick_config(m_total, prm.c_out_g, prm.groups, mode) if compiled else INTERPRETER_CONFIG
    bm = config.block_m if block_m is None else block_m
    bn = config.block_n if block_n is None else block_n
    bk = config.block_k if block_k is None else block_k
    for name, b in (("block_m", bm), ("block_n", bn), ("block_k", bk)):
        if not isinstance(b, int) or b < 16 or b & (b - 1):
            raise ValueError(f"conv2d_triton: {name} must be a power of two >= 16 (tl.dot), got {b}")
    import triton

    kernel = _kernel(compiled)
    x_c, w_c = x.contiguous(), weight.contiguous()
    y = torch.empty(prm.n, prm.c_out, prm.h_out, prm.w_out, dtype=x.dtype, device=x.device)
    b_arg = bias.contiguous() if bias is not None else y  # dummy pointer when there is no bias
    grid = (triton.cdiv(m_total, bm), triton.cdiv(prm.c_out_g, bn), prm.groups)
    launch = dict(num_warps=config.num_warps, num_stages=config.num_stages) if compiled else {}
    kernel[grid](
        x_c, w_c, b_arg, y,
        prm.c_in, prm.h, prm.w, prm.h_out, prm.w_out, m_total,
        *x_c.stride(), *w_c.stride(), *y.stride(),
        *prm.stride, *prm.padding, *prm.dilation,
        CIN_G=prm.c_in_g, COUT_G=prm.c_out_g, KH=prm.kh, KW=prm.kw,
        HAS_BIAS=bias is not None, FP64=mode == "fp64", DOT_PRECISION="tf32" if mode == "tf32" else "ieee",
        INT64_INDEX=max(x_c.numel(), w_c.numel(), y.numel()) >= 2 ** 31,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, **launch,
    )
    return y


def gamma(n: int, u: float) -> float:
    """Higham's ``γ_n = n u / (1 - n u)``: a sum of ``n + 1`` terms, added in any order with unit
    roundoff ``u``, is within ``γ_n Σ|t_i|`` of the exact sum (requires ``n u < 1``)."""
    if n * u >= 1:
        raise ValueError(f"gamma needs n·u < 1, got n={n}, u={u}")
    return n * u / (1 - n * u)


def rounding_error_bound(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
                         padding=0, dilation=1, groups: int = 1, *, mode: str) -> torch.Tensor:
    """Elementwise bound on ``|conv2d_triton(...) - y|`` in ``mode``, where ``y`` is the float64
    ``F.conv2d`` of the same inputs (as float64), valid when nothing overflows or underflows.

    Derivation, for one output with reduction length ``K = (C_in/g)·k_h·k_w`` (the padding's
    zeros add nothing), ``(u_in, u_acc, u_out) = UNIT_ROUNDOFF[mode]`` and ``A = Σ_k |x_k||w_k| + |b|``:

    * the kernel's inputs ``x̂ = x(1+δ)``, ``ŵ = w(1+ε)``, ``|δ|, |ε| ≤ u_in``, so each product
      is within ``((1+u_in)² - 1)|x_k w_k|`` of the exact one; the products of two fp16, bf16
      or TF32 numbers are exact in the float32 accumulator (≤ 22 significand bits of 24);
    * summing the ``K`` products and the bias (``K + 1`` terms) in any order with unit
      roundoff ``u_acc`` adds at most ``γ_K Σ|t̂_k| ≤ γ_K (1+u_in)² A`` (Higham 2002, §3.1), so
      the accumulator ``s`` obeys ``|s - y| ≤ E := ((1+u_in)²(1+γ_K) - 1) A``;
    * storing ``s`` rounds it once more: ``|ŷ - s| ≤ u_out |s| ≤ u_out (|y| + E)``.

    Hence ``|ŷ - y| ≤ (1 + u_out) E + u_out |y|``; with ``A ≤ K max|x| max|w| + |b|`` this is
    ``≈ (2 u_in + K u_acc) K max|x| max|w| + u_out |y|`` to first order.  The returned bound
    compares with a *computed* float64 reference ``ỹ`` (itself within ``e = γ_K(2^-53) A`` of
    ``y``), so it is ``(1 + u_out) E + u_out (|ỹ| + e) + e``, with ``A`` and ``ỹ`` evaluated in
    float64 by ``F.conv2d`` (their own relative errors, < 1e-13 here, are far below the
    margins of the bound's roundings).
    """
    import torch.nn.functional as F

    conv_params(x, weight, bias, stride, padding, dilation, groups, who="rounding_error_bound")  # F.conv2d's argument rules
    if mode not in UNIT_ROUNDOFF:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    u_in, u_acc, u_out = UNIT_ROUNDOFF[mode]
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    x64, w64 = x.double(), weight.double()
    b64 = bias.double() if bias is not None else None
    k = weight.shape[1] * weight.shape[2] * weight.shape[3]
    a = F.conv2d(x64.abs(), w64.abs(), b64.abs() if b64 is not None else None, **kw)
    y_ref = F.conv2d(x64, w64, b64, **kw)
    e_ref = gamma(k, 2.0 ** -53) * a
    e = ((1 + u_in) ** 2 * (1 + gamma(k, u_acc)) - 1) * a
    return (1 + u_out) * e + u_out * (y_ref.abs() + e_ref) + e_ref


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
        parameters=("stride", "padding", "dilation", "groups", "bias"),
        reference="PyTorch F.conv2d (float64)",
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
        HAS_BIAS: tl.constexpr, FP64: tl.constexpr, DOT_PRECISION: tl.constexpr, INT64_INDEX: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        grp = tl.program_id(2)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)      # output positions (n, u, v)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)      # output channels within the group
        m_ok = offs_m < M_TOTAL
        n_ok = offs_n < COUT_G
        img = offs_m // (H_OUT * W_OUT)
        if INT64_INDEX:  # 64-bit offsets only for tensors of 2^31 elements or more (they cost registers)
            img = img.to(tl.int64)
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
            # float64 and float32 "ieee": exact products; "tf32" and 16-bit inputs: tensor cores
            acc = tl.dot(tile_a, tile_b, acc, input_precision=DOT_PRECISION)
        if HAS_BIAS:
            acc += tl.load(b_ptr + grp * COUT_G + offs_n, mask=n_ok, other=0.0).to(acc.dtype)[None, :]
        y_off = img[:, None] * syn + (grp * COUT_G + offs_n[None, :]) * syc + u[:, None] * syh + v[:, None] * syw
        tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])

    if compiled:
        return triton.runtime.jit.JITFunction(implicit_gemm_conv2d)
    from triton.runtime.interpreter import InterpretedFunction

    return InterpretedFunction(implicit_gemm_conv2d)
