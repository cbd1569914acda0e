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

from . import impl as _impl
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
    "LAVIN_GRAY",
    "row_signs",
    "conv2d_winograd",
    "choose_tile",
    "winograd_layer_ops",
    "transform_share",
]

#: The matrices ``(Aᵀ, G, Bᵀ)`` as printed by Lavin & Gray (2016) for F(2,3) and F(4,3), typed
#: from the paper so that the book's own construction can be compared with them.
LAVIN_GRAY = {
    (2, 3): (
        sp.Matrix([[1, 1, 1, 0], [0, 1, -1, -1]]),
        sp.Matrix([[1, 0, 0], [sp.Rational(1, 2)] * 3, [sp.Rational(1, 2), -sp.Rational(1, 2), sp.Rational(1, 2)],
                   [0, 0, 1]]),
        sp.Matrix([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
    ),
    (4, 3): (
        sp.Matrix([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
        sp.Matrix([[sp.Rational(1, 4), 0, 0],
                   [-sp.Rational(1, 6), -sp.Rational(1, 6), -sp.Rational(1, 6)],
                   [-sp.Rational(1, 6), sp.Rational(1, 6), -sp.Rational(1, 6)],
                   [sp.Rational(1, 24), sp.Rational(1, 12), sp.Rational(1, 6)],
                   [sp.Rational(1, 24), -sp.Rational(1, 12), sp.Rational(1, 6)],
                   [0, 0, 1]]),
        sp.Matrix([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
                   [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]),
    ),
}


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


def winograd_1d(d: Sequence, g: Sequence, m: int, points: Sequence | None = None, stats: dict | None = None) -> list:
    """F(m, r) applied to one input tile ``d`` (length ``m + r - 1``) and filter ``g`` (length r):
    ``Aᵀ[(G g) ⊙ (Bᵀ d)]``. Works on numbers or sympy expressions (returned expanded).

    ``stats``: if a dict is given, ``stats["general"]`` is increased by the number of *general*
    multiplications the run performs — element-wise products whose two factors both depend on
    the inputs (a filter-dependent times a data-dependent quantity), counted as they happen."""
    r = len(g)
    if len(d) != m + r - 1:
        raise ValueError(f"F({m},{r}) needs an input tile of m + r - 1 = {m + r - 1} values, got {len(d)}")
    at, gm, bt = winograd_matrices(m, r, points)
    to, back = _ring([*d, *g])
    u = _matmul(_lift(gm, to), [[to(e)] for e in g])
    v = _matmul(_lift(bt, to), [[to(e)] for e in d])
    y = _matmul(_lift(at, to), [[_product(u[i][0], v[i][0], stats)] for i in range(len(u))])
    return [back(row[0]) for row in y]


def winograd_2d(d: sp.Matrix, g: sp.Matrix, m: int, stats: dict | None = None) -> sp.Matrix:
    """Nested F(m×m, r×r): ``Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A`` for an ``(m+r-1)²`` tile ``d``.

    Computed in a polynomial ring over the rationals when the entries are symbolic (so the
    result comes back expanded), exactly in rationals otherwise. ``stats`` counts the general
    multiplications performed, as in :func:`winograd_1d`."""
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
    had = [[_product(u[i][k], v[i][k], stats) for k in range(len(u))] for i in range(len(u))]
    y = _matmul(_matmul(at_, had), _transpose(at_))
    return sp.Matrix(m, m, lambda i, k: back(y[i][k]))


def direct_correlation_1d(d: Sequence, g: Sequence, m: int) -> list:
    """``y[i] = Σ_j g[j] d[i + j]`` for ``i < m``: the definition, as a loop."""
    return [sum(g[j] * d[i + j] for j in range(len(g))) for i in range(m)]


def direct_correlation_2d(d: sp.Matrix, g: sp.Matrix, m: int) -> sp.Matrix:
    """``Y[i, k] = Σ_{a,b} g[a, b] d[i + a, k + b]`` for ``i, k < m``."""
    r = g.shape[0]
    return sp.Matrix(m, m, lambda i, k: sum(g[a, b] * d[i + a, k + b] for a in range(r) for b in range(r)))


def row_signs(ours: sp.Matrix, theirs: sp.Matrix) -> list[int] | None:
    """Signs ``D = diag(s_i)``, ``s_i = ±1``, with ``ours = D · theirs`` row by row, or ``None``
    when some row differs by more than its sign."""
    if ours.shape != theirs.shape:
        return None
    signs = []
    for i in range(ours.rows):
        if ours.row(i) == theirs.row(i):
            signs.append(1)
        elif ours.row(i) == -theirs.row(i):
            signs.append(-1)
        else:
            return None
    return signs


def winograd_mults(m: int, r: int, dims: int = 2) -> tuple[int, int]:
    """General multiplications per output tile: ``(α^dims, (m r)^dims)`` for Winograd vs direct."""
    return (m + r - 1) ** dims, (m * r) ** dims


def conv2d_winograd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
                    dilation=1, groups: int = 1, *, m: int | str = 2) -> torch.Tensor:
    """Convolution by nested Winograd F(m×m, k_h×k_w) tiles (any kernel size; F(m, k_h) on rows,
    F(m, k_w) on columns).

    The padded input is cut into overlapping ``(m+k_h-1)×(m+k_w-1)`` tiles with step ``m``
    (zero-extended at the bottom/right so the tiles cover the output); each tile is
    transformed ``V = B_hᵀ d B_w``, each filter ``U = G_h g G_wᵀ``, multiplied elementwise and
    summed over input channels (per group), and transformed back ``Y = A_hᵀ M A_w``.

    Laid out as GEMMs on contiguous operands: the tiles are gathered into an
    ``(α_h, α_w, C_in, N·T)`` array (one strided copy per tile position); each transform is
    two GEMMs, one per axis (``Bᵀ`` on the first axis of the flattened array, then on the
    second, batched over the first); the sum over input channels is one batched GEMM per
    transformed position ``(ξ, ν)``: ``M_ξν = U_ξν V_ξν`` with ``U_ξν`` of shape
    ``(C_out/G, C_in/G)`` and ``V_ξν`` of shape ``(C_in/G, N·T)``; the weight is transformed
    once per call. ``m='auto'`` takes the tile :func:`choose_tile` picks for the layer.
    Only stride 1 and dilation 1: other values raise ``convbook.impl.Unsupported`` (a ``ValueError``).
    """
    prm = conv_params(x, weight, bias, stride, padding, dilation, groups, who="conv2d_winograd")
    if prm.stride != (1, 1):
        raise _impl.Unsupported(f"conv2d_winograd: stride {prm.stride} is not supported (Winograd tiles need stride 1)")
    if prm.dilation != (1, 1):
        raise _impl.Unsupported(f"conv2d_winograd: dilation {prm.dilation} is not supported (only dilation 1)")
    if m == "auto":
        m = choose_tile(prm.c_in_g * prm.groups, prm.c_out, prm.h_out, prm.w_out, prm.kh, prm.kw, batch=prm.n,
                        groups=prm.groups)
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"conv2d_winograd: tile size m must be an int >= 1 or 'auto', got {m!r}")
    g, n, (ph, pw) = prm.groups, prm.n, prm.padding
    ath, gh, bth = (t.to(dtype=x.dtype, device=x.device) for t in _torch_matrices(m, prm.kh))
    atw, gw, btw = (t.to(dtype=x.dtype, device=x.device) for t in _torch_matrices(m, prm.kw))
    ah, aw = m + prm.kh - 1, m + prm.kw - 1
    th, tw = -(-prm.h_out // m), -(-prm.w_out // m)
    need_h, need_w = th * m + prm.kh - 1, tw * m + prm.kw - 1
    xp = F.pad(x, (pw, pw + need_w - (prm.w + 2 * pw), ph, ph + need_h - (prm.h + 2 * ph))).transpose(0, 1)
    d = x.new_empty(ah, aw, prm.c_in, n, th, tw)                        # tile position first, then C_in, N, tiles
    for i in range(ah):
        for j in range(aw):
            d[i, j] = xp[..., i: i + m * (th - 1) + 1: m, j: j + m * (tw - 1) + 1: m]
    v = torch.matmul(bth, d.reshape(ah, -1))                            # Bᵀ along the tile's rows
    v = torch.matmul(btw, v.reshape(ah, aw, -1))                        # … and along its columns: (α_h, α_w, C_in·N·T)
    wp = weight.permute(2, 3, 0, 1).reshape(prm.kh, -1)                 # (k_h, k_w·C_out·C_in/G)
    u = torch.matmul(gh, wp)                                            # G along the filter's rows
    u = torch.matmul(gw, u.reshape(ah, prm.kw, -1))                     # … and columns: (α_h, α_w, C_out·C_in/G)
    u = u.reshape(ah * aw, g, prm.c_out_g, prm.c_in_g)
    mm = torch.matmul(u, v.reshape(ah * aw, g, prm.c_in_g, n * th * tw))  # (α_hα_w, G, C_out/G, N·T)
    y = torch.matmul(ath, mm.reshape(ah, -1))                           # Aᵀ along rows: (m, α_w·C_out·N·T)
    y = torch.matmul(atw, y.reshape(m, aw, -1))                         # … and columns: (m, m, C_out·N·T)
    y = y.reshape(m, m, prm.c_out, n, th, tw).permute(3, 2, 4, 0, 5, 1).reshape(n, prm.c_out, th * m, tw * m)
    y = y[..., : prm.h_out, : prm.w_out].contiguous()
    if bias is not None:
        y += bias.view(1, -1, 1, 1)
    return y


def choose_tile(c_in: int, c_out: int, h_out: int, w_out: int, kh: int = 3, kw: int = 3, *, batch: int = 1,
                groups: int = 1, candidates: Sequence[int] = (2, 4)) -> int:
    """The tile ``m`` among ``candidates`` that minimises the multiplications
    :func:`winograd_layer_ops` counts for the layer (general products, input, output and weight
    transforms, the weight transformed in every call), per group; ties go to the smaller tile
    (the more accurate one in floating point)."""
    from .conventions import as_int

    groups = as_int(groups, "groups", 1)
    c_in, c_out = as_int(c_in, "c_in", 1), as_int(c_out, "c_out", 1)
    if c_in % groups or c_out % groups:
        raise ValueError(f"choose_tile: groups {groups} must divide c_in {c_in} and c_out {c_out}")
    if not candidates:
        raise ValueError("choose_tile: candidates must not be empty")

    def cost(m):
        ops = winograd_layer_ops(c_in // groups, c_out // groups, h_out, w_out, kh, kw, m, batch)
        return groups * sum(ops.values())

    return min(sorted(as_int(m, "m", 1) for m in candidates), key=cost)


def winograd_layer_ops(c_in: int, c_out: int, h_out: int, w_out: int, kh: int, kw: int, m: int,
                       batch: int = 1) -> dict[str, int]:
    """Multiplications :func:`conv2d_winograd` performs on one layer (stride 1, one group),
    the transforms counted as the dense matrix products the implementation does.

    ``T = ⌈h_out/m⌉·⌈w_out/m⌉`` tiles per image, ``α_h = m + k_h - 1``, ``α_w = m + k_w - 1``:

    * ``general`` — ``N·C_in·C_out·T·α_h α_w`` products of data by weights;
    * ``input`` — ``Bᵀ d B`` once per image, input channel and tile, reused by all ``C_out``
      filters: ``N·C_in·T·α_h α_w (α_h + α_w)``;
    * ``output`` — ``Aᵀ M A`` once per image, output channel and tile, after the sum over
      ``C_in``: ``N·C_out·T·m α_w (α_h + m)``;
    * ``weight`` — ``G g Gᵀ`` once per filter: ``C_in·C_out·α_h k_w (k_h + α_w)``.

    The three transforms multiply by constants only; Lavin & Gray's sparse transforms replace
    most of them by additions, which changes the constants but not the scaling.
    """
    from .conventions import as_int

    c_in, c_out, h_out, w_out, kh, kw, m, batch = (as_int(v, name, 1) for v, name in (
        (c_in, "c_in"), (c_out, "c_out"), (h_out, "h_out"), (w_out, "w_out"), (kh, "kh"), (kw, "kw"), (m, "m"),
        (batch, "batch")))
    ah, aw = m + kh - 1, m + kw - 1
    tiles = -(-h_out // m) * -(-w_out // m)
    return {
        "general": batch * c_in * c_out * tiles * ah * aw,
        "input": batch * c_in * tiles * ah * aw * (ah + aw),
        "output": batch * c_out * tiles * m * aw * (ah + m),
        "weight": c_in * c_out * ah * kw * (kh + aw),
    }


def transform_share(c: int, n: int = 56, r: int = 3, m: int = 2) -> float:
    """Share of the per-image data transforms (input + output) in the multiplications of a
    ``C → C`` "same" ``r×r`` layer on ``n×n`` inputs, weights pre-transformed."""
    ops = winograd_layer_ops(c, c, n, n, r, r, m)
    return (ops["input"] + ops["output"]) / (ops["general"] + ops["input"] + ops["output"])


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


def _symbolic_1d_check(m: int, r: int, t: Tally, stats: dict | None = None) -> None:
    d = sp.symbols(f"d0:{m + r - 1}")
    g = sp.symbols(f"g0:{r}")
    try:
        ours = winograd_1d(d, g, m, stats=stats)  # through the module global (a planted error bites)
    except (ValueError, IndexError, TypeError) as err:  # the construction does not even run
        t.exact(False, f"F({m},{r}) failed to run: {err}")
        return
    ref = direct_correlation_1d(d, g, m)
    t.exact(len(ours) == len(ref), f"F({m},{r}): {len(ours)} outputs, expected {len(ref)}")
    for i, (a, b) in enumerate(zip(ours, ref)):
        t.exact(sp.expand(a - b) == 0, f"F({m},{r}) output {i}: Winograd − direct = {sp.expand(a - b)}")


def _direct_products(outputs) -> int:
    """Products ``g·d`` in the expanded definition: one monomial per output and tap."""
    return sum(len(sp.Add.make_args(sp.expand(e))) for e in outputs)


@claim(
    "impl.winograd-f23-symbolic",
    title="Winograd F(2,3) is exact (symbolic proof)",
    chapter=11,
    statement="With Aᵀ, G, Bᵀ built by Toom–Cook from the points 0, 1, -1, ∞, Aᵀ[(G g) ⊙ (Bᵀ d)] equals the 2-output, 3-tap correlation identically in the symbols d0..d3, g0..g2, performing 4 general multiplications where the definition performs 6.",
    reference="the definition of correlation, in exact arithmetic (sympy)",
    sympy_role="derived",
)
def check_winograd_f23(device: str = "cpu"):
    check_device(device)
    t = Tally()
    stats: dict = {}
    _symbolic_1d_check(2, 3, t, stats)
    at, g, bt = winograd_matrices(2, 3)
    t.exact(at.shape == (2, 4) and g.shape == (4, 3) and bt.shape == (4, 4), "shapes m×α, α×r, α×α")
    d, gg = sp.symbols("d0:4"), sp.symbols("g0:3")
    t.exact((stats.get("general"), _direct_products(direct_correlation_1d(d, gg, 2))) == (4, 6),
            f"multiplications performed {stats.get('general')} vs 4; direct 6")
    return t.verdict("sympy: expand(Winograd − definition) == 0 for every output; products counted as performed",
                     case_unit="identities")


@claim(
    "impl.winograd-f63-symbolic",
    title="Winograd F(6,3) is exact (symbolic proof)",
    chapter=11,
    statement="With Aᵀ, G, Bᵀ built by Toom–Cook from the points 0, ±1, ±2, ±1/2, ∞, F(6,3) equals the 6-output, 3-tap correlation identically in the symbols, performing 8 general multiplications where the definition performs 18: its float32 inaccuracy is conditioning, not a wrong algorithm.",
    reference="the definition of correlation, in exact arithmetic (sympy)",
    sympy_role="derived",
)
def check_winograd_f63(device: str = "cpu"):
    check_device(device)
    t = Tally()
    stats: dict = {}
    _symbolic_1d_check(6, 3, t, stats)
    at, g, bt = winograd_matrices(6, 3)
    t.exact(at.shape == (6, 8) and g.shape == (8, 3) and bt.shape == (8, 8), "shapes m×α, α×r, α×α with α = m + r − 1 = 8")
    d, gg = sp.symbols("d0:8"), sp.symbols("g0:3")
    direct = _direct_products(direct_correlation_1d(d, gg, 6))
    t.exact((stats.get("general"), direct) == (8, 18), f"multiplications performed {stats.get('general')} vs 8; direct {direct} vs 18")
    return t.verdict("sympy: expand(Winograd − definition) == 0 for every output; products counted as performed",
                     case_unit="identities")


@claim(
    "impl.winograd-f43-symbolic",
    title="Winograd F(4,3) is exact (symbolic proof)",
    chapter=11,
    statement="With Aᵀ, G, Bᵀ built by Toom–Cook from the points 0, ±1, ±2, ∞, F(4,3) equals the 4-output, 3-tap correlation identically in the symbols, using 6 multiplications instead of 12; its Bᵀ is Lavin & Gray's with rows 2 and 3 negated (D Bᵀ with D = diag(1, −1, −1, 1, 1, 1)) and its G is theirs times the same D, so the products are unchanged; F(m, r) is exact for every m, r <= 4.",
    parameters=("m", "r"),
    reference="the definition of correlation in exact arithmetic (sympy); Lavin & Gray's published matrices",
    sympy_role="verified for finitely many sizes",
)
def check_winograd_f43(device: str = "cpu"):
    check_device(device)
    t = Tally()
    _symbolic_1d_check(4, 3, t)
    for m in range(1, 5):
        for r in range(1, 5):
            if (m, r) != (4, 3):
                _symbolic_1d_check(m, r, t)
    at, g, bt = winograd_matrices(4, 3)
    at_lg, g_lg, bt_lg = LAVIN_GRAY[(4, 3)]
    signs = row_signs(bt, bt_lg)
    t.exact(signs == [1, -1, -1, 1, 1, 1], f"Bᵀ = D·Bᵀ(Lavin & Gray), D = diag({signs})")
    t.exact(row_signs(g, g_lg) == signs and at == at_lg, "G = D·G(Lavin & Gray), Aᵀ identical")
    return t.verdict("sympy: expand(Winograd − definition) == 0, F(4,3) and every F(m≤4, r≤4); "
                     "row signs against Lavin & Gray", case_unit="identities")


@claim(
    "impl.winograd-2d",
    title="Nested Winograd F(2×2,3×3) and F(4×4,3×3) are exact; conv2d_winograd equals F.conv2d",
    chapter=11,
    statement="Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A equals the 2-D correlation of a 3×3 filter symbolically for m = 2 and 4, and conv2d_winograd built on it equals F.conv2d in float64 for stride 1, every per-axis padding, groups with channel multipliers, kernels up to 5×5 (k_h ≠ k_w allowed) and tile sizes m = 2, 4 and the one choose_tile picks.",
    parameters=("m", "padding", "groups"),
    reference="PyTorch F.conv2d; the definition of correlation in exact arithmetic (sympy)",
    sympy_role="verified for finitely many sizes",
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
        m = (4, 2, "auto")[case % 3]
        t.close(conv2d_winograd(x, weight, bias, m=m, **kw), F.conv2d(x, weight, bias, **kw),
                f"m={m} x={tuple(x.shape)} w={tuple(weight.shape)} {kw}")
    return t.verdict("sympy identity for m = 2, 4 + random stride-1 layers (m = 2, 4, auto) vs F.conv2d", dtype="float64")


@claim(
    "impl.winograd-mults",
    title="Winograd multiplications per tile: α^dims instead of (m r)^dims",
    chapter=11,
    statement="For every m, r >= 1 in 1-D and nested in 2-D, F(m, r) performs (m + r − 1)^dims general multiplications per output tile where the definition performs (m r)^dims: 16 vs 36 for F(2×2,3×3), 36 vs 144 for F(4×4,3×3).",
    parameters=("m", "r", "dims"),
    reference="multiplications counted while the symbolic algorithm runs; monomials of the expanded definition",
    sympy_role="verified for finitely many sizes",
)
def check_winograd_mults(device: str = "cpu"):
    check_device(device)
    t = Tally()
    sizes_1d = [(m, r) for m in range(1, 6) for r in range(1, 5)]
    sizes_2d = [(1, 3), (2, 1), (2, 2), (2, 3), (3, 2), (4, 3)]
    for dims, sizes in ((1, sizes_1d), (2, sizes_2d)):
        for m, r in sizes:
            stats: dict = {}
            a = m + r - 1
            if dims == 1:
                d, g = sp.symbols(f"d0:{a}"), sp.symbols(f"g0:{r}")
                out = winograd_1d(d, g, m, stats=stats)
                ref = direct_correlation_1d(d, g, m)
            else:
                d = sp.Matrix(a, a, lambda i, k: sp.Symbol(f"d{i}_{k}"))
                g = sp.Matrix(r, r, lambda i, k: sp.Symbol(f"g{i}_{k}"))
                out = list(winograd_2d(d, g, m, stats=stats))
                ref = list(direct_correlation_2d(d, g, m))
            # the counted run must also be correct, or its count means nothing
            t.exact(all(sp.expand(x - y) == 0 for x, y in zip(out, ref)), f"F({m},{r}) {dims}-D exact")
            wino, dire = winograd_mults(m, r, dims)
            t.exact(stats.get("general", 0) == wino, f"F({m},{r}) {dims}-D: performed {stats.get('general')} vs formula {wino}")
            t.exact(_direct_products(ref) == dire, f"direct {dims}-D m={m} r={r}: counted {_direct_products(ref)} vs {dire}")
    return t.verdict("general multiplications counted as the symbolic 1-D and 2-D algorithms run, vs α^dims and (m r)^dims",
                     case_unit="counts")


@claim(
    "impl.winograd-float32",
    title="Larger Winograd tiles lose float32 accuracy",
    chapter=11,
    statement="In float32, on the book's four random 16-channel 3×3 layers of 24×24 inputs, the RMS error of F(m×m,3×3) grows with the tile: F(2,3) < F(4,3) < F(6,3), and F(6,3) is more than 10× worse than direct convolution.",
    reference="float64 F.conv2d of the same float32 data",
)
def check_winograd_float32(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    errs = float32_error_by_tile((2, 4, 6), device=device)
    t.exact(errs[2] < errs[4] < errs[6], f"ordering F(2,3) {errs[2]:.1e} < F(4,3) {errs[4]:.1e} < F(6,3) {errs[6]:.1e}")
    t.exact(errs[6] > 10 * errs["direct"], f"F(6,3) {errs[6]:.1e} vs 10 × direct {errs['direct']:.1e}")
    return t.verdict("float32 RMS errors against float64 F.conv2d, 4 random 16-channel 3×3 layers",
                     case_unit="comparisons")


def _fft_weight_spectra(x, w, padding):
    """Run :func:`convbook.impl.conv2d_fft` and return the kernel spectra it computes, recorded as
    its calls of :func:`convbook.impl.fft_kernel_spectrum` return."""
    from unittest import mock

    seen = []
    original = _impl.fft_kernel_spectrum

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append(out)
        return out

    with mock.patch.object(_impl, "fft_kernel_spectrum", recording):
        y = _impl.conv2d_fft(x, w, padding=padding)
    return y, seen


@claim(
    "impl.fast-algorithm-memory",
    title="What the fast algorithms store and what their transforms cost",
    chapter=11,
    statement="FFT: conv2d_fft holds C_in·C_out·L_h·(L_w//2+1) complex kernel values (one-sided on the last axis; C_in·C_out·L_h·L_w with a full complex FFT), L = n + k − 1 per axis for a 'same' layer with odd k. Winograd F(m×m, k_h×k_w), T = ⌈h/m⌉·⌈w/m⌉ tiles: conv2d_winograd performs C_in·C_out·T·α_hα_w general multiplications (α = m + k − 1) plus data transforms proportional to (C_in + C_out)·T — the input transform once per input channel and tile, the output transform once per output channel and tile — plus a weight transform once per filter, so the data-transform share tends to 0 as the channels grow.",
    parameters=("C_in", "C_out", "n", "k", "m"),
    reference="numel() and element_size() of the kernel spectra conv2d_fft computes (its fft_kernel_spectrum calls recorded as it runs, each equal to torch.fft.rfft2 of the zero-filled flipped kernel); multiplications counted as conv2d_winograd's torch operations run (impl.count_multiplications), both checked against F.conv2d",
)
def check_fast_algorithm_memory(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-10)
    gen = generator(1112)
    for _ in range(12):
        c_in, c_out = randint(1, 5, gen), randint(1, 5, gen)
        nh, nw = randint(3, 12, gen), randint(3, 12, gen)
        kh, kw = 2 * randint(1, 2, gen) + 1, 2 * randint(1, 2, gen) + 1
        nh, nw = max(nh, kh), max(nw, kw)
        x = randn(1, c_in, nh, nw, gen=gen, device=device)
        w = randn(c_out, c_in, kh, kw, gen=gen, device=device)
        pad = ((kh - 1) // 2, (kw - 1) // 2)
        ref = F.conv2d(x, w, padding=pad)
        y, spectra = _fft_weight_spectra(x, w, pad)
        t.close(y, ref, f"conv2d_fft C={c_in}->{c_out} n={nh}x{nw} k={kh}x{kw}")
        t.exact(len(spectra) == 1, f"one kernel spectrum expected, recorded {len(spectra)}")
        if spectra:
            spec = spectra[0]
            formula = _impl.fft_kernel_spectrum_numel(c_in, c_out, (nh, nw), (kh, kw))
            t.exact(spec.numel() == formula, f"FFT C={c_in}->{c_out} n={nh}x{nw} k={kh}x{kw}: "
                                             f"numel {spec.numel()} vs formula {formula}")
            t.exact(spec.numel() * spec.element_size() == formula * 2 * w.element_size(),
                    f"FFT bytes {spec.numel() * spec.element_size()} vs {formula} × 2 × {w.element_size()}")
            lh, lw = nh + 2 * pad[0], nw + 2 * pad[1]
            direct = torch.fft.rfft2(torch.flip(w, dims=(-2, -1)), s=(lh, lw)).permute(2, 3, 0, 1)
            t.close(spec, direct, f"kernel spectrum vs rfft2 of the zero-filled flipped kernel k={kh}x{kw}")
        m = randint(1, 4, gen)
        y_w, performed = _impl.count_multiplications(conv2d_winograd, x, w, padding=pad, m=m)
        t.close(y_w, ref, f"conv2d_winograd m={m} C={c_in}->{c_out} n={nh}x{nw} k={kh}x{kw}")
        ops = winograd_layer_ops(c_in, c_out, nh, nw, kh, kw, m)
        t.exact(performed == sum(ops.values()), f"Winograd m={m} C={c_in}->{c_out} n={nh}x{nw} k={kh}x{kw}: "
                                                f"performed {performed} vs formula {sum(ops.values())} {ops}")
    # the data transforms per general multiplication fall exactly as 1/C (C_in = C_out = C)
    one = winograd_layer_ops(1, 1, 56, 56, 3, 3, 2)
    for c in (4, 16, 64, 256, 1024):
        ops = winograd_layer_ops(c, c, 56, 56, 3, 3, 2)
        t.exact((ops["input"] + ops["output"]) * c * one["general"] == ops["general"] * (one["input"] + one["output"]),
                f"C={c}: data transforms / general multiplications is not 1/C of its value at C=1")
    shares = [transform_share(c) for c in (1, 4, 16, 64, 256, 1024)]
    t.exact(all(a > b for a, b in zip(shares, shares[1:])), f"share not falling with C: {[round(s, 4) for s in shares]}")
    return t.verdict("kernel-spectrum sizes recorded from conv2d_fft; multiplications counted in conv2d_winograd; "
                     "random layers vs F.conv2d", case_unit="comparisons", dtype="float64")


# --------------------------------------------------------------------------------------
# Private helpers
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _torch_matrices(m: int, r: int) -> tuple[torch.Tensor, ...]:
    """Float64 CPU copies of ``(Aᵀ, G, Bᵀ)`` (converted once from the exact rationals)."""
    return tuple(torch.tensor([[float(sp.Rational(e)) for e in row] for row in mat.tolist()], dtype=torch.float64)
                 for mat in winograd_matrices(m, r))


def _product(a, b, stats: dict | None):
    """``a·b``, counted in ``stats["general"]`` when both factors are non-constant polynomials."""
    if stats is not None and not _is_constant(a) and not _is_constant(b):
        stats["general"] = stats.get("general", 0) + 1
    return a * b


def _is_constant(e) -> bool:
    if hasattr(e, "is_ground"):  # an element of a sympy polynomial ring
        return bool(e.is_ground)
    return not sp.sympify(e).free_symbols


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
