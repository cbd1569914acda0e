"""Chapter 11: Winograd's minimal filtering F(m, r), derived by the Toom–Cook construction.

F(m, r) computes ``m`` outputs of a correlation with an ``r``-tap filter,
``y[i] = Σ_j g[j] d[i + j]`` (``i < m``, ``α = m + r - 1`` inputs), as

    y = Aᵀ [ (G g) ⊙ (Bᵀ d) ]                               (Lavin & Gray 2016)

with ``α`` general multiplications instead of ``m r``.  Derivation (Toom–Cook):

1. The *linear convolution* ``s = g * h`` of an ``r``-tap ``g`` and an ``m``-tap ``h`` is the
   coefficient list of the product polynomial ``s(t) = g(t) h(t)`` of degree ``α - 1``.
   Evaluate ``g`` and ``h`` at ``α - 1`` finite points and at ∞ (the leading coefficient),
   multiply the ``α`` values pointwise, and interpolate: ``s = V⁻¹ [(E_r g) ⊙ (E_m h)]``,
   ``E_q`` the ``α × q`` evaluation matrix, ``V = E_α``.
2. The correlation is the *transpose* of that convolution: ``y = M d`` with
   ``M[i, k] = g[k - i]``, and ``s = Mᵀ h``. Transposing
   ``Mᵀ = V⁻¹ diag(E_r g) E_m`` gives ``M = E_mᵀ diag(E_r g) V⁻ᵀ``, i.e.
   ``Aᵀ = E_mᵀ``, ``G = E_r``, ``Bᵀ = V⁻ᵀ``.
3. A diagonal ``D`` can move between ``G`` and ``Bᵀ`` (``G → D⁻¹G``, ``Bᵀ → D Bᵀ``); we
   scale each row of ``Bᵀ`` to coprime integers.

In 2-D the transforms nest: ``Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A`` computes an ``m×m`` output
tile with ``α²`` multiplications instead of ``m² r²``.
"""

from __future__ import annotations

from functools import lru_cache, reduce
from typing import Sequence

import numpy as np
import sympy as sp
import torch
import torch.nn.functional as F

from .claims import Tally, claim
from .impl import conv_params, random_conv_case
from .numerics import DTYPE, check_device, generator, randint, randn

__all__ = [
    "default_points",
    "evaluation_matrix",
    "winograd_matrices",
    "winograd_1d",
    "winograd_2d",
    "direct_correlation_1d",
    "direct_correlation_2d",
    "winograd_mults",
    "conv2d_winograd",
]


# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------


def default_points(count: int) -> list[sp.Rational]:
    """The ``count`` finite interpolation points used by default: 0, 1, -1, 2, -2, 1/2, -1/2,
    3, -3, 1/3, -1/3, … (small magnitudes keep the transforms well conditioned)."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    pts: list[sp.Rational] = [sp.Integer(0)]
    q = 1
    while len(pts) < count:
        pts += [sp.Integer(q), sp.Integer(-q)] + ([sp.Rational(1, q), sp.Rational(-1, q)] if q > 1 else [])
        q += 1
    return pts[:count]


def evaluation_matrix(points: Sequence, ncoef: int) -> sp.Matrix:
    """Rows ``[1, p, p², …, p^(ncoef-1)]`` for each finite point, then ``[0, …, 0, 1]`` for ∞
    (a polynomial's "value at infinity" is its leading coefficient)."""
    rows = [[sp.Rational(p) ** j for j in range(ncoef)] for p in points]
    rows.append([0] * (ncoef - 1) + [1])
    return sp.Matrix(rows)


@lru_cache(maxsize=None)
def _matrices_cached(m: int, r: int, points: tuple | None):
    alpha = m + r - 1
    pts = list(points) if points is not None else default_points(alpha - 1)
    if len(pts) != alpha - 1 or len(set(pts)) != len(pts):
        raise ValueError(f"F({m},{r}) needs α - 1 = {alpha - 1} distinct finite points, got {list(pts)}")
    e_g = evaluation_matrix(pts, r)        # α × r
    e_h = evaluation_matrix(pts, m)        # α × m
    v = evaluation_matrix(pts, alpha)      # α × α, invertible for distinct points
    at = e_h.T                             # m × α
    g = e_g
    bt = v.inv().T                         # α × α
    # move a diagonal scaling from Bᵀ into G: each row of Bᵀ becomes coprime integers
    for i in range(alpha):
        row = bt.row(i)
        dens = [sp.fraction(e)[1] for e in row]
        nums = [sp.fraction(e)[0] for e in row if e != 0]
        scale = sp.Rational(reduce(sp.ilcm, dens, 1), reduce(sp.igcd, nums, 0)) if nums else sp.Integer(1)
        bt[i, :] = row * scale
        g[i, :] = g.row(i) / scale
    return at, g, bt


def winograd_matrices(m: int, r: int, points: Sequence | None = None) -> tuple[sp.Matrix, sp.Matrix, sp.Matrix]:
    """``(Aᵀ, G, Bᵀ)`` of F(m, r), built by the Toom–Cook construction (module docstring).

    ``points``: the ``α - 1 = m + r - 2`` distinct finite interpolation points (∞ is always
    added); default :func:`default_points`. Shapes ``m×α``, ``α×r``, ``α×α``; exact
    rationals. Raises ``ValueError`` for ``m, r < 1`` or a wrong number of points.
    """
    if not (isinstance(m, int) and isinstance(r, int)) or m < 1 or r < 1:
        raise ValueError(f"F(m, r) needs integers m >= 1 and r >= 1, got m={m!r}, r={r!r}")
    key = tuple(sp.Rational(p) for p in points) if points is not None else None
    at, g, bt = _matrices_cached(m, r, key)
    return at.copy(), g.copy(), bt.copy()


def winograd_1d(d: Sequence, g: Sequence, m: int, points: Sequence | None = None) -> list:
    """F(m, r) applied to one input tile ``d`` (length ``m + r - 1``) and filter ``g`` (length r):
    ``Aᵀ[(G g) ⊙ (Bᵀ d)]``. Works on numbers or sympy expressions (returned expanded)."""
    r = len(g)
    if len(d) != m + r - 1:
        raise ValueError(f"F({m},{r}) needs an input tile of m + r - 1 = {m + r - 1} values, got {len(d)}")
    at, gm, bt = winograd_matrices(m, r, points)
    to, back = _ring([*d, *g])
    u = _matmul(_lift(gm, to), [[to(e)] for e in g])
    v = _matmul(_lift(bt, to), [[to(e)] for e in d])
    y = _matmul(_lift(at, to), [[u[i][0] * v[i][0]] for i in range(len(u))])
    return [back(row[0]) for row in y]


def winograd_2d(d: sp.Matrix, g: sp.Matrix, m: int) -> sp.Matrix:
    """Nested F(m×m, r×r): ``Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A`` for an ``(m+r-1)²`` tile ``d``.

    Computed in a polynomial ring over the rationals when the entries are symbolic (so the
    result comes back expanded), exactly in rationals otherwise."""
    r = g.shape[0]
    if g.shape != (r, r) or d.shape != (m + r - 1, m + r - 1):
        raise ValueError(f"F({m}×{m},{r}×{r}) needs a square {r}×{r} filter and a {(m + r - 1)}×{(m + r - 1)} tile, "
                         f"got {g.shape} and {d.shape}")
    at, gm, bt = winograd_matrices(m, r)
    to, back = _ring([*d, *g])
    at_, gm_, bt_ = (_lift(a, to) for a in (at, gm, bt))
    d_, g_ = _lift(d, to), _lift(g, to)
    u = _matmul(_matmul(gm_, g_), _transpose(gm_))
    v = _matmul(_matmul(bt_, d_), _transpose(bt_))
    had = [[u[i][k] * v[i][k] for k in range(len(u))] for i in range(len(u))]
    y = _matmul(_matmul(at_, had), _transpose(at_))
    return sp.Matrix(m, m, lambda i, k: back(y[i][k]))


def direct_correlation_1d(d: Sequence, g: Sequence, m: int) -> list:
    """``y[i] = Σ_j g[j] d[i + j]`` for ``i < m``: the definition, as a loop."""
    return [sum(g[j] * d[i + j] for j in range(len(g))) for i in range(m)]


def direct_correlation_2d(d: sp.Matrix, g: sp.Matrix, m: int) -> sp.Matrix:
    """``Y[i, k] = Σ_{a,b} g[a, b] d[i + a, k + b]`` for ``i, k < m``."""
    r = g.shape[0]
    return sp.Matrix(m, m, lambda i, k: sum(g[a, b] * d[i + a, k + b] for a in range(r) for b in range(r)))


def winograd_mults(m: int, r: int, dims: int = 2) -> tuple[int, int]:
    """General multiplications per output tile: ``(α^dims, (m r)^dims)`` for Winograd vs direct."""
    return (m + r - 1) ** dims, (m * r) ** dims


def conv2d_winograd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
                    dilation=1, groups: int = 1, *, m: int = 2) -> torch.Tensor:
    """Convolution by nested Winograd F(m×m, k_h×k_w) tiles (any kernel size; F(m, k_h) on rows,
    F(m, k_w) on columns).

    The padded input is cut into overlapping ``(m+k_h-1)×(m+k_w-1)`` tiles with step ``m``
    (zero-extended at the bottom/right so the tiles cover the output); each tile is
    transformed ``V = B_hᵀ d B_w``, each filter ``U = G_h g G_wᵀ``, multiplied elementwise and
    summed over input channels (per group), and transformed back ``Y = A_hᵀ M A_w``.
    Only stride 1 and dilation 1: other values raise ``NotImplementedError``.
    """
    prm = conv_params(x, weight, bias, stride, padding, dilation, groups, who="conv2d_winograd")
    if prm.stride != (1, 1):
        raise NotImplementedError(f"conv2d_winograd: stride {prm.stride} is not supported (Winograd tiles need stride 1)")
    if prm.dilation != (1, 1):
        raise NotImplementedError(f"conv2d_winograd: dilation {prm.dilation} is not supported (only dilation 1)")
    if not isinstance(m, int) or m < 1:
        raise ValueError(f"conv2d_winograd: tile size m must be an int >= 1, got {m!r}")
    g, (ph, pw) = prm.groups, prm.padding
    ath, gh, bth = (t.to(dtype=x.dtype, device=x.device) for t in _torch_matrices(m, prm.kh))
    atw, gw, btw = (t.to(dtype=x.dtype, device=x.device) for t in _torch_matrices(m, prm.kw))
    ah, aw = m + prm.kh - 1, m + prm.kw - 1
    th, tw = -(-prm.h_out // m), -(-prm.w_out // m)
    need_h, need_w = th * m + prm.kh - 1, tw * m + prm.kw - 1
    xp = F.pad(x, (pw, pw + need_w - (prm.w + 2 * pw), ph, ph + need_h - (prm.h + 2 * ph)))
    tiles = xp.unfold(2, ah, m).unfold(3, aw, m)                        # N, C, th, tw, αh, αw
    v = bth @ tiles @ btw.T                                             # Bᵀ d B per tile
    u = gh @ weight @ gw.T                                              # G g Gᵀ per filter
    # elementwise in the transformed domain, summed over input channels: a GEMM per (group, α-position)
    v = v.reshape(prm.n, g, prm.c_in_g, th * tw, ah * aw).permute(1, 4, 2, 0, 3)   # G, αα, C_in/G, N, T
    v = v.reshape(g, ah * aw, prm.c_in_g, prm.n * th * tw)
    u = u.reshape(g, prm.c_out_g, prm.c_in_g, ah * aw).permute(0, 3, 1, 2)          # G, αα, C_out/G, C_in/G
    mm = (u @ v).reshape(g, ah, aw, prm.c_out_g, prm.n, th, tw)
    mm = mm.permute(4, 0, 3, 5, 6, 1, 2).reshape(prm.n, prm.c_out, th, tw, ah, aw)
    y = ath @ mm @ atw.T                                                # Aᵀ M A per tile
    y = y.permute(0, 1, 2, 4, 3, 5).reshape(prm.n, prm.c_out, th * m, tw * m)[..., : prm.h_out, : prm.w_out]
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y.contiguous()


def float32_error_by_tile(ms: Sequence[int] = (2, 4, 6), *, cases: int = 4, seed: int = 11, size: int = 24,
                          channels: int = 16, device: str = "cpu") -> dict:
    """RMS relative error ``‖y - y64‖ / ‖y64‖`` (over all outputs of ``cases`` random layers) of
    :func:`conv2d_winograd` with F(m×m, 3×3) in float32, for each ``m``, and of
    ``convbook.impl.conv2d_direct`` in float32 (key ``"direct"``), against the float64
    ``F.conv2d`` of the same float32-representable data (by :func:`convbook.impl.float32_errors`)."""
    from . import impl

    # conv2d_winograd is looked up at call time, through the module global (a planted error bites)
    algos = {m: (lambda x, w, padding, m=m: conv2d_winograd(x, w, padding=padding, m=m)) for m in ms}
    algos["direct"] = lambda x, w, padding: impl.conv2d_direct(x, w, padding=padding)
    return impl.float32_errors(algos, cases=cases, seed=seed, size=size, channels=channels, device=device)


# --------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------


def _symbolic_1d_check(m: int, r: int, t: Tally) -> None:
    d = sp.symbols(f"d0:{m + r - 1}")
    g = sp.symbols(f"g0:{r}")
    ours = winograd_1d(d, g, m)  # through the module global (a planted error bites)
    ref = direct_correlation_1d(d, g, m)
    for i, (a, b) in enumerate(zip(ours, ref)):
        t.exact(sp.expand(a - b) == 0, f"F({m},{r}) output {i}: Winograd − direct = {sp.expand(a - b)}")


@claim(
    "impl.winograd-f23-symbolic",
    title="Winograd F(2,3) is exact (symbolic proof)",
    chapter=11,
    statement="With Aᵀ, G, Bᵀ built by Toom–Cook from the points 0, 1, -1, ∞, Aᵀ[(G g) ⊙ (Bᵀ d)] equals the 2-output, 3-tap correlation identically in the symbols d0..d3, g0..g2, using 4 multiplications instead of 6.",
)
def check_winograd_f23(device: str = "cpu"):
    check_device(device)
    t = Tally()
    _symbolic_1d_check(2, 3, t)
    at, g, bt = winograd_matrices(2, 3)
    t.exact(at.shape == (2, 4) and g.shape == (4, 3) and bt.shape == (4, 4), "shapes m×α, α×r, α×α")
    return t.verdict("sympy: expand(Winograd − definition) == 0 for every output", case_unit="identities")


@claim(
    "impl.winograd-f63-symbolic",
    title="Winograd F(6,3) is exact (symbolic proof)",
    chapter=11,
    statement="With Aᵀ, G, Bᵀ built by Toom–Cook from the points 0, ±1, ±2, ±1/2, ∞, F(6,3) equals the 6-output, 3-tap correlation identically in the symbols, using 8 multiplications instead of 18 (64 instead of 324 per 6×6 tile in 2-D): its float32 inaccuracy is conditioning, not a wrong algorithm.",
)
def check_winograd_f63(device: str = "cpu"):
    check_device(device)
    t = Tally()
    _symbolic_1d_check(6, 3, t)
    at, g, bt = winograd_matrices(6, 3)
    t.exact(at.shape == (6, 8) and g.shape == (8, 3) and bt.shape == (8, 8), "shapes m×α, α×r, α×α with α = m + r − 1 = 8")
    t.exact(winograd_mults(6, 3, 1) == (8, 18) and winograd_mults(6, 3, 2) == (64, 324), "multiplications 8 vs 18, 64 vs 324")
    return t.verdict("sympy: expand(Winograd − definition) == 0 for every output", case_unit="identities")


@claim(
    "impl.winograd-f43-symbolic",
    title="Winograd F(4,3) is exact (symbolic proof)",
    chapter=11,
    statement="With Aᵀ, G, Bᵀ built by Toom–Cook from the points 0, ±1, ±2, ∞, F(4,3) equals the 4-output, 3-tap correlation identically in the symbols, using 6 multiplications instead of 12; so do F(m, r) for all m, r <= 4.",
)
def check_winograd_f43(device: str = "cpu"):
    check_device(device)
    t = Tally()
    _symbolic_1d_check(4, 3, t)
    for m in range(1, 5):
        for r in range(1, 5):
            if (m, r) != (4, 3):
                _symbolic_1d_check(m, r, t)
    return t.verdict("sympy: expand(Winograd − definition) == 0, F(4,3) and every F(m≤4, r≤4)",
                     case_unit="identities")


@claim(
    "impl.winograd-2d",
    title="Nested Winograd F(2×2,3×3) and F(4×4,3×3) are exact; conv2d_winograd equals F.conv2d",
    chapter=11,
    statement="Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A equals the 2-D correlation of a 3×3 filter symbolically for m = 2 and 4, and conv2d_winograd built on it equals F.conv2d in float64 (stride 1, any padding, groups, kernel up to 5×5, m = 2, 4).",
)
def check_winograd_2d(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-10)
    for m in (2, 4):
        d = sp.Matrix(m + 2, m + 2, lambda i, k: sp.Symbol(f"d{i}_{k}"))
        g = sp.Matrix(3, 3, lambda i, k: sp.Symbol(f"g{i}_{k}"))
        diff = (winograd_2d(d, g, m) - direct_correlation_2d(d, g, m)).applyfunc(sp.expand)
        t.exact(diff == sp.zeros(m, m), f"F({m}×{m},3×3) symbolic")
    gen = generator(1106)
    for case in range(200):
        x, weight, bias, kw = random_conv_case(gen, device, kernel_max=5, stride_max=1, dilation_max=1)
        m = 2 if case % 2 else 4
        t.close(conv2d_winograd(x, weight, bias, m=m, **kw), F.conv2d(x, weight, bias, **kw),
                f"m={m} x={tuple(x.shape)} w={tuple(weight.shape)} {kw}")
    return t.verdict("sympy identity for m = 2, 4 + random stride-1 layers vs F.conv2d", dtype="float64")


@claim(
    "impl.winograd-mults",
    title="Winograd multiplications per tile: 16 vs 36 and 36 vs 144",
    chapter=11,
    statement="Counted in the symbolic algorithm, F(2×2,3×3) needs 16 general multiplications per 2×2 output tile where direct needs 36, and F(4×4,3×3) needs 36 where direct needs 144.",
)
def check_winograd_mults(device: str = "cpu"):
    check_device(device)
    t = Tally()
    for m in (2, 4):
        r = 3
        d = sp.Matrix(m + r - 1, m + r - 1, lambda i, k: sp.Symbol(f"d{i}_{k}"))
        g = sp.Matrix(r, r, lambda i, k: sp.Symbol(f"g{i}_{k}"))
        at, gm, bt = winograd_matrices(m, r)
        u, v = gm * g * gm.T, bt * d * bt.T
        # a general multiplication multiplies a filter-dependent by a data-dependent quantity
        counted = sum(1 for a, b in zip(u, v) if a.free_symbols and b.free_symbols)
        # direct: one product g[a,b]·d[i+a,k+b] per output per tap = monomials of the expanded outputs
        direct = sum(len(sp.Add.make_args(sp.expand(e))) for e in direct_correlation_2d(d, g, m))
        wino, dire = winograd_mults(m, r)
        t.exact(counted == wino, f"F({m}×{m},3×3): counted {counted} vs α² = {wino}")
        t.exact(direct == dire, f"direct {m}×{m} tile: counted {direct} vs m²r² = {dire}")
    t.exact(winograd_mults(2, 3) == (16, 36) and winograd_mults(4, 3) == (36, 144), "16 vs 36, 36 vs 144")
    return t.verdict("products counted in the sympy algorithm vs α² and m²r²", case_unit="counts")


@claim(
    "impl.winograd-float32",
    title="Larger Winograd tiles lose float32 accuracy",
    chapter=11,
    statement="In float32, the RMS error of F(m×m,3×3) grows with the tile: F(2,3) < F(4,3) < F(6,3), and F(6,3) is more than 10× worse than direct convolution.",
)
def check_winograd_float32(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    errs = float32_error_by_tile((2, 4, 6), device=device)
    t.exact(errs[2] < errs[4] < errs[6], f"ordering F(2,3) {errs[2]:.1e} < F(4,3) {errs[4]:.1e} < F(6,3) {errs[6]:.1e}")
    t.exact(errs[6] > 10 * errs["direct"], f"F(6,3) {errs[6]:.1e} vs 10 × direct {errs['direct']:.1e}")
    return t.verdict("float32 RMS errors against float64 F.conv2d, 4 random 16-channel 3×3 layers",
                     case_unit="comparisons")


# --------------------------------------------------------------------------------------
# Private helpers
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _torch_matrices(m: int, r: int) -> tuple[torch.Tensor, ...]:
    """Float64 CPU copies of ``(Aᵀ, G, Bᵀ)`` (converted once from the exact rationals)."""
    return tuple(torch.tensor([[float(sp.Rational(e)) for e in row] for row in mat.tolist()], dtype=torch.float64)
                 for mat in winograd_matrices(m, r))


def _ring(entries: Sequence):
    """Converters into (and out of) the polynomial ring QQ[free symbols of ``entries``]."""
    syms = sorted(set().union(*(sp.sympify(e).free_symbols for e in entries)), key=str)
    if not syms:
        return sp.Rational, lambda e: e
    ring, *_ = sp.ring(syms, sp.QQ)
    return (lambda e: ring(sp.sympify(e))), (lambda e: e.as_expr())


def _lift(mat, to) -> list[list]:
    return [[to(e) for e in row] for row in sp.Matrix(mat).tolist()]


def _matmul(a: list[list], b: list[list]) -> list[list]:
    return [[sum((a[i][k] * b[k][j] for k in range(len(b))), start=a[i][0] * 0) for j in range(len(b[0]))]
            for i in range(len(a))]


def _transpose(a: list[list]) -> list[list]:
    return [list(col) for col in zip(*a)]
