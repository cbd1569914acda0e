"""Chapter 10: separable kernels — spatially separable (rank one) and depthwise separable.

Spatial: a ``k_h × k_w`` kernel ``K`` is the outer product ``u vᵀ`` iff ``rank K ≤ 1``; then the
2-D cross-correlation is a column pass with ``u`` followed by a row pass with ``v``
(``k_h + k_w`` multiplies per output instead of ``k_h k_w``). For a general kernel the SVD
``K = Σ σ_i u_i v_iᵀ`` gives the best rank-``r`` sum of separable passes, with error
``‖K − K_r‖_F = (Σ_{i>r} σ_i²)^{1/2}`` (Eckart–Young).

Depthwise separable: a depthwise convolution ``D`` (``C_in × 1 × k × k``) followed by a
pointwise one ``P`` (``C_out × C_in × 1 × 1``) equals the dense convolution with
``W[o, i] = P[o, i] D[i]``. So ``W`` is depthwise-then-pointwise iff for every input channel
``i`` the ``C_out × k²`` matrix ``W[:, i]`` has rank ≤ 1; the best approximation takes the
leading singular triple of each ``W[:, i]``.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import sympy as sp
import torch
import torch.nn.functional as F

from .claims import Tally, claim
from .numerics import as_tuple, check_device, generator, randint, randn

__all__ = [
    "sobel_kernel",
    "gaussian_kernel",
    "kernel_rank",
    "separable_factors",
    "two_pass_conv2d",
    "separable_terms",
    "low_rank_conv2d",
    "separable_multiplies",
    "depthwise_separable_multiplies",
    "compose_depthwise_pointwise",
    "depthwise_separable_conv",
    "is_depthwise_separable",
    "best_depthwise_separable",
    "plot_low_rank",
]


# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------


def sobel_kernel(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The 3×3 Sobel x-derivative kernel ``[1, 2, 1]ᵀ [-1, 0, 1]`` (smoothing down, difference across)."""
    return torch.outer(torch.tensor([1.0, 2.0, 1.0], dtype=dtype), torch.tensor([-1.0, 0.0, 1.0], dtype=dtype))


def gaussian_kernel(size: int, sigma: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised ``size × size`` Gaussian ``g gᵀ`` with ``g[a] ∝ exp(-(a - c)²/(2σ²))``, ``c = (size-1)/2``.

    Rules: size ≥ 1, sigma > 0.
    """
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    a = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(a**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def kernel_rank(kernel: torch.Tensor, rtol: float = 1e-10) -> int:
    """Numerical rank of a 2-D kernel: singular values above ``rtol · σ₁``."""
    _check_2d(kernel)
    s = torch.linalg.svdvals(kernel)
    if s[0] == 0:
        return 0
    return int((s > rtol * s[0]).sum())


def separable_factors(kernel: torch.Tensor, rtol: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor]:
    """``(u, v)`` with ``kernel = u vᵀ``, from the leading singular triple (``u = √σ₁ u₁``, ``v = √σ₁ v₁``).

    Rule: the kernel must have rank ≤ 1 (``σ₂ ≤ rtol σ₁``), else ValueError.
    """
    _check_2d(kernel)
    u, s, vh = torch.linalg.svd(kernel)
    if len(s) > 1 and s[1] > rtol * s[0]:
        raise ValueError(f"kernel is not separable: rank > 1 (σ₂/σ₁ = {float(s[1] / s[0]):.3g} > rtol = {rtol:g})")
    root = torch.sqrt(s[0])
    return root * u[:, 0], root * vh[0]


def two_pass_conv2d(x: torch.Tensor, u: torch.Tensor, v: torch.Tensor, padding: int | Sequence[int] = 0) -> torch.Tensor:
    """Cross-correlate every channel of ``x`` (``N × C × H × W``) with ``u vᵀ`` in two 1-D passes:
    a ``k_h × 1`` column pass with ``u``, then a ``1 × k_w`` row pass with ``v``.

    ``Σ_a Σ_b u[a] v[b] x[h+a, w+b] = Σ_b v[b] (Σ_a u[a] x[h+a, w+b])``: the double sum splits.
    """
    if u.dim() != 1 or v.dim() != 1:
        raise ValueError(f"u and v must be 1-D vectors, got shapes {tuple(u.shape)} and {tuple(v.shape)}")
    if x.dim() != 4:
        raise ValueError(f"x must be N × C × H × W, got shape {tuple(x.shape)}")
    p = as_tuple(padding, 2, "padding")
    c = x.shape[1]
    col = u.reshape(1, 1, -1, 1).expand(c, 1, -1, 1)
    row = v.reshape(1, 1, 1, -1).expand(c, 1, 1, -1)
    return F.conv2d(F.conv2d(x, col, padding=(p[0], 0), groups=c), row, padding=(0, p[1]), groups=c)


def separable_terms(kernel: torch.Tensor, rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The ``rank`` leading separable terms ``(√σ_i u_i, √σ_i v_i)`` of the SVD of ``kernel``.

    ``Σ_i u_i v_iᵀ`` is the best rank-``r`` approximation in Frobenius and spectral norm
    (Eckart–Young), error ``(Σ_{i>r} σ_i²)^{1/2}``. Rule: ``1 ≤ rank ≤ min(k_h, k_w)``.
    """
    _check_2d(kernel)
    if not isinstance(rank, int) or not 1 <= rank <= min(kernel.shape):
        raise ValueError(f"rank must be an int in [1, min(kernel.shape) = {min(kernel.shape)}], got {rank!r}")
    u, s, vh = torch.linalg.svd(kernel)
    root = torch.sqrt(s)
    return [(root[i] * u[:, i], root[i] * vh[i]) for i in range(rank)]


def low_rank_conv2d(x: torch.Tensor, kernel: torch.Tensor, rank: int, padding: int | Sequence[int] = 0) -> torch.Tensor:
    """Sum of ``rank`` two-pass convolutions, one per leading separable term of ``kernel``."""
    terms = separable_terms(kernel, rank)
    return sum(two_pass_conv2d(x, u, v, padding) for u, v in terms)


def separable_multiplies(kernel_size: int | Sequence[int], rank: int = 1) -> int:
    """Multiplies per output of ``rank`` two-pass convolutions: ``rank · (k_h + k_w)`` (``2kr`` when square),
    against ``k_h k_w`` for the 2-D kernel. Rules: sizes and rank ≥ 1."""
    kh, kw = as_tuple(kernel_size, 2, "kernel_size")
    for name, value in (("kernel_size", kh), ("kernel_size", kw), ("rank", rank)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return rank * (kh + kw)


def depthwise_separable_multiplies(c_in: int, c_out: int, kernel_size: int) -> tuple[int, int]:
    """Multiplies per output pixel: ``(C_in k² + C_in C_out, C_in C_out k²)`` for depthwise-separable vs dense.

    Ratio ``1/C_out + 1/k²``. Rules: all ≥ 1.
    """
    from .conventions import as_int

    c_in, c_out, kernel_size = (as_int(v, name, 1) for v, name in (
        (c_in, "c_in"), (c_out, "c_out"), (kernel_size, "kernel_size")))
    return c_in * kernel_size**2 + c_in * c_out, c_in * c_out * kernel_size**2


def compose_depthwise_pointwise(depthwise: torch.Tensor, pointwise: torch.Tensor) -> torch.Tensor:
    """Dense weight of depthwise ``D`` (``C_in × 1 × k_h × k_w``) then pointwise ``P`` (``C_out × C_in × 1 × 1``):
    ``W[o, i] = P[o, i] · D[i]``."""
    if depthwise.dim() != 4 or depthwise.shape[1] != 1:
        raise ValueError(f"depthwise must be C_in × 1 × kh × kw, got shape {tuple(depthwise.shape)}")
    if pointwise.dim() != 4 or pointwise.shape[2:] != (1, 1) or pointwise.shape[1] != depthwise.shape[0]:
        raise ValueError(f"pointwise must be C_out × C_in × 1 × 1 with C_in = {depthwise.shape[0]}, got shape {tuple(pointwise.shape)}")
    return pointwise[:, :, 0, 0, None, None] * depthwise[None, :, 0]


def depthwise_separable_conv(x: torch.Tensor, depthwise: torch.Tensor, pointwise: torch.Tensor,
                             padding: int | Sequence[int] = 0) -> torch.Tensor:
    """Depthwise convolution (``groups = C_in``) then a 1×1 convolution."""
    compose_depthwise_pointwise(depthwise, pointwise)  # validates shapes
    return F.conv2d(F.conv2d(x, depthwise, padding=padding, groups=depthwise.shape[0]), pointwise)


def is_depthwise_separable(weight: torch.Tensor, rtol: float = 1e-10) -> bool:
    """Whether a dense weight ``C_out × C_in × k_h × k_w`` is depthwise-then-pointwise (multiplier 1):
    iff every ``W[:, i]``, read as a ``C_out × k_h k_w`` matrix, has rank ≤ 1."""
    _check_4d(weight)
    return all(_slice_rank(weight[:, i].reshape(weight.shape[0], -1), rtol) <= 1 for i in range(weight.shape[1]))


def best_depthwise_separable(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best depthwise-separable ``(D, P)`` for a dense weight, in Frobenius norm.

    ``‖W - P∘D‖²_F = Σ_i ‖W[:, i] - P[:, i] vec(D[i])ᵀ‖²_F`` splits over input channels, and each
    term is a rank-1 approximation: the leading singular triple of ``W[:, i]`` (``C_out × k²``)
    is optimal, error ``(Σ_i Σ_{j≥2} σ_j(W[:, i])²)^{1/2}``. Exact (error 0) iff
    :func:`is_depthwise_separable`.
    """
    _check_4d(weight)
    c_out, c_in, kh, kw = weight.shape
    mats = weight.permute(1, 0, 2, 3).reshape(c_in, c_out, kh * kw)
    u, s, vh = torch.linalg.svd(mats, full_matrices=False)
    depthwise = vh[:, 0].reshape(c_in, 1, kh, kw)
    pointwise = (u[:, :, 0] * s[:, :1]).T.reshape(c_out, c_in, 1, 1)
    return depthwise.contiguous(), pointwise.contiguous()


def plot_low_rank(kernel: torch.Tensor, ranks: Sequence[int] = (1, 2, 3), axes=None):
    """The kernel, its rank-r approximations, and the singular values (error bars = Eckart–Young)."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, len(ranks) + 2, figsize=(2.8 * (len(ranks) + 2), 3.0))
    vmax = float(kernel.abs().max())
    axes[0].imshow(kernel.numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    axes[0].set_title("kernel", fontsize=10)
    s = torch.linalg.svdvals(kernel)
    for ax, r in zip(axes[1:], ranks):
        approx = sum(torch.outer(u, v) for u, v in separable_terms(kernel, r))
        err = float(torch.sqrt((s[r:] ** 2).sum()) / torch.linalg.norm(kernel))
        ax.imshow(approx.numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(f"rank {r}: rel. error {err:.2f}", fontsize=10)
    for ax in axes[: len(ranks) + 1]:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[-1].bar(np.arange(1, len(s) + 1), s.numpy())
    axes[-1].set_title("singular values σᵢ", fontsize=10)
    axes[-1].set_xlabel("i")
    return axes


# --------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------


@claim(
    "separable.rank-one",
    title="A kernel is separable iff its rank is one",
    chapter=10,
    statement="For every k_h × k_w (k_h ≠ k_w allowed), a kernel is an outer product u vᵀ iff its rank is at most 1 (every 2×2 minor vanishes); Sobel and Gaussian kernels are, a generic kernel is not.",
    parameters=("per-axis kernel size",),
    reference="exact arithmetic (sympy) for the minors; torch.outer of the returned factors",
    sympy_role="proven for symbolic sizes",
)
def check_rank_one(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    # "only if", symbolically: every 2×2 minor of an outer product of symbols expands to 0
    # any 2×2 minor of u vᵀ, of any size, is u_a v_b · u_c v_e − u_a v_e · u_c v_b: one identity for all sizes
    ua, uc, vb, ve = sp.symbols("u_a u_c v_b v_e")
    t.exact(sp.expand(ua * vb * uc * ve - ua * ve * uc * vb) == 0, "generic 2×2 minor of an outer product")
    us, vs = sp.symbols("u0:4"), sp.symbols("v0:4")
    outer = sp.Matrix(4, 4, lambda a, b: us[a] * vs[b])
    for (a, c), (b, e) in itertools.product(itertools.combinations(range(4), 2), repeat=2):
        t.exact(sp.expand(outer[a, b] * outer[c, e] - outer[a, e] * outer[c, b]) == 0, f"minor {(a, c)}×{(b, e)}")
    gen = generator(1011)
    examples = [("Sobel", sobel_kernel()), ("Gaussian 5×5", gaussian_kernel(5, 1.2))]
    for _ in range(30):
        kh, kw = randint(1, 6, gen), randint(1, 6, gen)
        examples.append((f"random outer {kh}×{kw}", torch.outer(randn(kh, gen=gen), randn(kw, gen=gen))))
    for name, k in examples:  # "if": rank ≤ 1 -> factors that reproduce the kernel
        u, v = separable_factors(k.to(device))
        t.close(torch.outer(u, v), k.to(device), name)
    rejected = 0
    for _ in range(30):  # generic kernels (rank ≥ 2) are rejected
        kh, kw = randint(2, 6, gen), randint(2, 6, gen)
        k = randn(kh, kw, gen=gen, device=device)
        try:
            separable_factors(k)
        except ValueError:
            rejected += 1
            t.exact(kernel_rank(k) >= 2, "rejected kernel has rank ≥ 2")
        else:
            t.exact(False, f"generic {kh}×{kw} kernel accepted as separable")
    t.note(f"{rejected} generic kernels rejected")
    return t.verdict("sympy 2×2 minors + factorisation of Sobel, Gaussian and random rank-1 kernels", dtype="float64")


@claim(
    "separable.two-pass",
    title="Two 1-D passes equal the 2-D convolution with a separable kernel",
    chapter=10,
    statement="For every k_h, k_w and per-axis padding, cross-correlating with a k_h × 1 column u and then a 1 × k_w row v equals cross-correlating with u vᵀ (Sobel and Gaussian as examples).",
    parameters=("padding", "per-axis kernel size"),
    reference="PyTorch F.conv2d with the outer-product kernel",
)
def check_two_pass(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(1012)
    named = [("Sobel", torch.tensor([1.0, 2.0, 1.0]), torch.tensor([-1.0, 0.0, 1.0]))]
    g = gaussian_kernel(5, 1.0)[2] / gaussian_kernel(5, 1.0)[2].sum()
    named.append(("Gaussian", g, g))
    for _ in range(24):
        named.append(("random", randn(randint(1, 5, gen), gen=gen), randn(randint(1, 5, gen), gen=gen)))
    for name, u, v in named:
        u, v = u.to(torch.float64).to(device), v.to(torch.float64).to(device)
        p = (randint(0, 2, gen), randint(0, 2, gen))
        x = randn(2, 3, randint(5, 10, gen), randint(5, 10, gen), gen=gen, device=device)
        k = torch.outer(u, v).expand(3, 1, -1, -1)
        t.close(two_pass_conv2d(x, u, v, p), F.conv2d(x, k, padding=p, groups=3), f"{name} k={tuple(k.shape[2:])} p={p}")
    return t.verdict("Sobel, Gaussian and random separable kernels vs F.conv2d", dtype="float64")


@claim(
    "separable.eckart-young",
    title="The SVD gives the best sum of r separable passes",
    chapter=10,
    statement="For any kernel K and every rank r, the r leading SVD terms K_r = Σ_{i≤r} σ_i u_i v_iᵀ give r two-pass convolutions with ‖K − K_r‖_F = (Σ_{i>r} σ_i²)^{1/2}, and no rank-r kernel is closer.",
    parameters=("rank",),
    reference="numpy singular values; fitted rank-r competitors; PyTorch F.conv2d",
)
def check_eckart_young(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12, kind="abs.")
    gen = generator(1013)
    beaten = 0
    for _ in range(30):
        kh, kw = randint(2, 7, gen), randint(2, 7, gen)
        kernel = randn(kh, kw, gen=gen, device=device)
        sv = np.linalg.svd(kernel.cpu().numpy(), compute_uv=False)  # independent: numpy's singular values
        scale = float(np.linalg.norm(sv))
        for r in range(1, min(kh, kw) + 1):
            approx = sum(torch.outer(u, v) for u, v in separable_terms(kernel, r))
            direct = float(torch.linalg.norm(kernel - approx)) / scale
            t.close(np.array([direct]), np.array([np.sqrt((sv[r:] ** 2).sum()) / scale]), f"{kh}×{kw} r={r}: error formula")
            for _ in range(3):  # competitors: random rank-r kernels fitted to K on their row space
                a = randn(kh, r, gen=gen, device=device)
                fitted = a @ torch.linalg.lstsq(a, kernel).solution
                beaten += float(torch.linalg.norm(kernel - fitted)) < (direct - 1e-12) * scale
        x = randn(1, 1, kh + 3, kw + 3, gen=gen, device=device)
        r = randint(1, min(kh, kw), gen)
        approx = sum(torch.outer(u, v) for u, v in separable_terms(kernel, r))
        t.close(low_rank_conv2d(x, kernel, r), F.conv2d(x, approx[None, None]), f"{kh}×{kw} r={r}: passes")
    t.exact(beaten == 0, f"{beaten} competitors beat the SVD")
    return t.verdict("random kernels: error vs numpy singular values, 3 fitted competitors per rank, passes vs F.conv2d",
                     dtype="float64")


@claim(
    "separable.cost",
    title="Multiplies of separable and depthwise separable convolutions",
    chapter=10,
    statement="For every k_h × k_w and rank r, r two-pass convolutions cost r(k_h + k_w) multiplies per output (2k against k² for r = 1); for every C_in, C_out and k, depthwise-then-pointwise costs C_in k² + C_in C_out per output pixel against C_in C_out k².",
    parameters=("rank", "kernel size", "channels"),
    reference="torch.utils.flop_counter on the layers as run",
)
def check_cost(device: str = "cpu"):
    from torch.utils.flop_counter import FlopCounterMode

    device = check_device(device)
    t = Tally()
    gen = generator(1014)
    for _ in range(12):  # spatial: count with PyTorch's FLOP counter (2 FLOPs per multiply-add), "same" padding
        kh, kw = 2 * randint(0, 3, gen) + 1, 2 * randint(0, 3, gen) + 1
        r = randint(1, min(kh, kw), gen)
        h, w = randint(8, 12, gen), randint(8, 12, gen)
        x = randn(1, 1, h, w, gen=gen, device=device)
        kernel = randn(kh, kw, gen=gen, device=device)
        with FlopCounterMode(display=False) as fc:
            low_rank_conv2d(x, kernel, r, padding=(kh // 2, kw // 2))
        with FlopCounterMode(display=False) as fc_full:
            F.conv2d(x, kernel[None, None], padding=(kh // 2, kw // 2))
        t.exact(fc.get_total_flops() == 2 * separable_multiplies((kh, kw), r) * h * w, f"k={kh}×{kw} r={r}")
        t.exact(fc_full.get_total_flops() == 2 * kh * kw * h * w, f"k={kh}×{kw} dense")
    for _ in range(12):
        c_in, c_out, k = randint(1, 8, gen), randint(1, 8, gen), 2 * randint(0, 3, gen) + 1
        x = randn(1, c_in, 9, 9, gen=gen, device=device)
        d = randn(c_in, 1, k, k, gen=gen, device=device)
        p = randn(c_out, c_in, 1, 1, gen=gen, device=device)
        with FlopCounterMode(display=False) as fc_sep:
            depthwise_separable_conv(x, d, p, padding=k // 2)
        with FlopCounterMode(display=False) as fc_dense:
            F.conv2d(x, randn(c_out, c_in, k, k, gen=gen, device=device), padding=k // 2)
        sep, dense = depthwise_separable_multiplies(c_in, c_out, k)
        t.exact((fc_sep.get_total_flops(), fc_dense.get_total_flops()) == (2 * sep * 81, 2 * dense * 81), f"C={c_in}->{c_out} k={k}")
    return t.verdict("formulas vs torch.utils.flop_counter on random layers", case_unit="layers")


@claim(
    "separable.depthwise-iff-rank1",
    title="Which dense convolutions are depthwise separable",
    chapter=10,
    statement="For every C_in, C_out and k, a dense weight W (C_out × C_in × k × k) is a depthwise convolution followed by a pointwise one iff for every input channel i the C_out × k² matrix W[:, i] has rank at most 1.",
    parameters=("channels",),
    reference="exact arithmetic (sympy) for the minors; PyTorch F.conv2d for the factored layers",
    sympy_role="verified for finitely many sizes",
)
def check_depthwise_iff_rank1(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    # "only if", symbolically: W[o, i, a] = P[o, i] D[i, a] has vanishing 2×2 minors in each W[:, i]
    c_out, c_in, kk = 3, 2, 4
    pm = sp.Matrix(c_out, c_in, lambda o, i: sp.Symbol(f"P{o}{i}"))
    dm = sp.Matrix(c_in, kk, lambda i, a: sp.Symbol(f"D{i}{a}"))
    for i in range(c_in):
        wi = sp.Matrix(c_out, kk, lambda o, a: pm[o, i] * dm[i, a])
        minors = [wi.extract(list(r), list(c)).det() for r in itertools.combinations(range(c_out), 2)
                  for c in itertools.combinations(range(kk), 2)]
        t.exact(all(sp.expand(m) == 0 for m in minors), f"symbolic minors of W[:, {i}]")
    gen = generator(1015)
    for case in range(40):
        c_in, c_out, k = randint(1, 4, gen), randint(2, 4, gen), randint(1, 3, gen)
        x = randn(2, c_in, 7, 7, gen=gen, device=device)
        if case % 2 == 0:  # a depthwise-separable layer: recognised, and the two convolutions match
            d = randn(c_in, 1, k, k, gen=gen, device=device)
            p = randn(c_out, c_in, 1, 1, gen=gen, device=device)
            w = compose_depthwise_pointwise(d, p)
            t.exact(is_depthwise_separable(w), f"composite C={c_in}->{c_out} k={k} recognised")
            t.close(depthwise_separable_conv(x, d, p, padding=1), F.conv2d(x, w, padding=1), f"composite conv C={c_in}->{c_out} k={k}")
        else:  # "if": rank-1 slices built directly, then factored and run as two convolutions
            w = torch.stack([torch.outer(randn(c_out, gen=gen), randn(k * k, gen=gen)).reshape(c_out, k, k)
                             for _ in range(c_in)], dim=1).to(device)
            if case % 4 == 1 and k > 1:  # perturb one slice to rank 2: no longer separable
                j = randint(0, c_in - 1, gen)
                w[:, j] += torch.outer(randn(c_out, gen=gen), randn(k * k, gen=gen)).reshape(c_out, k, k).to(device)
                t.exact(not is_depthwise_separable(w), f"rank-2 slice C={c_in}->{c_out} k={k} rejected")
                continue
            t.exact(is_depthwise_separable(w), f"rank-1 slices C={c_in}->{c_out} k={k} recognised")
            d, p = best_depthwise_separable(w)
            t.close(depthwise_separable_conv(x, d, p, padding=1), F.conv2d(x, w, padding=1), f"factored C={c_in}->{c_out} k={k}")
    return t.verdict("sympy minors + random composites and rank-1/rank-2 slices vs F.conv2d", dtype="float64")


@claim(
    "separable.depthwise-best",
    title="Best depthwise separable approximation of a dense layer",
    chapter=10,
    statement="For every C_in, C_out and k, the best depthwise-then-pointwise approximation of W in Frobenius (weight-space) norm takes the leading singular triple of each W[:, i]; its error is (Σ_i Σ_{j≥2} σ_j(W[:, i])²)^{1/2}.",
    parameters=("channels",),
    reference="numpy singular values of each W[:, i]; fitted competitors; PyTorch F.conv2d",
)
def check_depthwise_best(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12, kind="abs.")
    gen = generator(1016)
    beaten = 0
    for _ in range(30):
        c_in, c_out, k = randint(1, 4, gen), randint(2, 5, gen), randint(1, 3, gen)
        w = randn(c_out, c_in, k, k, gen=gen, device=device)
        d, p = best_depthwise_separable(w)
        approx = compose_depthwise_pointwise(d, p)
        direct = float(torch.linalg.norm(w - approx))
        sv = [np.linalg.svd(w[:, i].reshape(c_out, -1).cpu().numpy(), compute_uv=False) for i in range(c_in)]
        bound = float(np.sqrt(sum((s[1:] ** 2).sum() for s in sv)))
        scale = float(torch.linalg.norm(w))
        t.close(np.array([direct / scale]), np.array([bound / scale]), f"C={c_in}->{c_out} k={k}")
        for _ in range(3):  # competitors: random depthwise kernels with the best pointwise for them
            dc = randn(c_in, 1, k, k, gen=gen, device=device)
            pc = torch.einsum("oiab,iab->oi", w, dc[:, 0]) / (dc[:, 0] ** 2).sum(dim=(1, 2))
            comp = compose_depthwise_pointwise(dc, pc[:, :, None, None])
            beaten += float(torch.linalg.norm(w - comp)) < direct - 1e-12 * scale
        x = randn(1, c_in, 6, 6, gen=gen, device=device)
        t.close(depthwise_separable_conv(x, d, p) / scale, F.conv2d(x, approx) / scale, f"as convolutions C={c_in}->{c_out} k={k}")
    t.exact(beaten == 0, f"{beaten} competitors beat the per-channel SVD")
    return t.verdict("random dense layers: error vs numpy singular values of each W[:, i], fitted competitors", dtype="float64")


# --------------------------------------------------------------------------------------
# Private helpers
# --------------------------------------------------------------------------------------


def _check_2d(kernel: torch.Tensor) -> None:
    if not isinstance(kernel, torch.Tensor) or kernel.dim() != 2:
        raise ValueError(f"kernel must be a 2-D tensor (k_h × k_w), got {getattr(kernel, 'shape', type(kernel))}")


def _check_4d(weight: torch.Tensor) -> None:
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise ValueError(f"weight must be C_out × C_in × k_h × k_w, got {getattr(weight, 'shape', type(weight))}")


def _slice_rank(m: torch.Tensor, rtol: float) -> int:
    s = torch.linalg.svdvals(m)
    if s.numel() == 0 or s[0] == 0:
        return 0
    return int((s > rtol * s[0]).sum())
