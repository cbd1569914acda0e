"""Chapter 5: 1×1 convolutions as per-pixel linear maps, and how they reduce features.

A 1×1 convolution with weight ``W ∈ R^{C_out × C_in × 1 × 1}`` computes at every pixel

    y[b, o, u, v] = bias[o] + Σ_i W[o, i] x[b, i, s·u, s·v],

the same matrix–vector product at every position: ``einsum('oi,bi...->bo...')`` or a
``Linear(C_in, C_out)`` applied to the channels-last tensor.  With ``g`` groups the matrix
is block diagonal (:func:`conv1x1_matrix`).

Because the map is linear, it can be compressed like a matrix: the truncated SVD
``W ≈ W_r = U_r Σ_r V_rᵀ`` (best rank-r approximation, Eckart–Young) is a 1×1 conv to ``r``
channels (``Σ_r V_rᵀ``) followed by a 1×1 conv to ``C_out`` (``U_r``), costing
``r (C_in + C_out)`` instead of ``C_in C_out`` multiply–accumulates per pixel.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .claims import Tally, claim
from .numerics import DTYPE, check_device, generator, randint, randn

__all__ = [
    "conv1x1_einsum",
    "conv1x1_linear",
    "conv1x1_matrix",
    "ORDERINGS",
    "cascade",
    "preactivation_recut",
    "random_cascade_params",
    "collapse_linear_stack",
    "svd_factorise",
    "truncated_weight",
    "svd_macs",
    "break_even_rank",
    "eckart_young_error",
    "svd_error_curve",
    "collapse_1x1_then_kxk",
    "border_band_mask",
    "data_aware_weight",
    "anisotropic_activations",
    "factorisation_errors",
    "plot_svd_error",
]

#: The three orderings of a reduction block.
ORDERINGS = ("conv-bn-relu", "bn-relu-conv", "conv")


# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------


def conv1x1_einsum(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                   stride: int = 1) -> torch.Tensor:
    """A 1×1 convolution from its formula: ``y[b,o,…] = bias[o] + Σ_i W[o,i] x[b,i,s·…]``.

    ``x`` is ``(B, C_in, *spatial)`` (1, 2 or 3 spatial axes); ``weight`` is ``(C_out, C_in)``
    or ``(C_out, C_in, 1, …, 1)``.  Stride subsamples the positions first.
    """
    from .conventions import as_int

    stride = as_int(stride, "stride", 1)  # one stride for every axis
    w = _as_matrix(weight, x)
    nd = x.dim() - 2
    if stride != 1:
        x = x[(slice(None), slice(None)) + (slice(None, None, stride),) * nd]
    y = torch.einsum("oi,bi...->bo...", w, x)
    if bias is not None:
        y = y + bias.reshape(1, -1, *([1] * nd))
    return y


def conv1x1_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The same map through ``nn.functional.linear`` on the channels-last tensor.

    Move channels last, apply ``Linear(C_in, C_out)`` with the weight ``(C_out, C_in)``, move
    them back.
    """
    w = _as_matrix(weight, x)
    return F.linear(x.movedim(1, -1), w, bias).movedim(-1, 1)


def conv1x1_matrix(weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """The ``(C_out, C_in)`` matrix of a grouped 1×1 conv with weight ``(C_out, C_in/g, 1…)``.

    Block diagonal: group ``k`` maps input channels ``k·C_in/g … (k+1)·C_in/g − 1`` to output
    channels ``k·C_out/g …``; every other entry is 0.
    """
    if weight.dim() < 2 or any(s != 1 for s in weight.shape[2:]):
        raise ValueError(f"weight must be (C_out, C_in/g, 1, ..., 1), got shape {tuple(weight.shape)}")
    c_out, per_in = weight.shape[:2]
    if groups < 1 or c_out % groups:
        raise ValueError(f"groups must divide C_out = {c_out}, got groups={groups}")
    per_out = c_out // groups
    m = weight.new_zeros(c_out, per_in * groups)
    w2 = weight.reshape(c_out, per_in)
    for k in range(groups):
        m[k * per_out:(k + 1) * per_out, k * per_in:(k + 1) * per_in] = w2[k * per_out:(k + 1) * per_out]
    return m


def random_cascade_params(widths: Sequence[int], gen: torch.Generator, device: str = "cpu") -> list[dict]:
    """Random parameters for ``len(widths) − 1`` layers: a 1×1 conv ``widths[k] → widths[k+1]``
    (weight, bias) and a BN of ``widths[k+1]`` channels (γ, β, μ, σ²)."""
    if len(widths) < 2 or any(int(w) < 1 for w in widths):
        raise ValueError(f"widths must list at least 2 positive channel counts, got {list(widths)}")
    params = []
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        params.append({
            "weight": randn(c_out, c_in, gen=gen, device=device) / np.sqrt(c_in),
            "bias": 0.1 * randn(c_out, gen=gen, device=device),
            "gamma": 1 + 0.2 * randn(c_out, gen=gen, device=device),
            "beta": 0.1 * randn(c_out, gen=gen, device=device),
            "mean": 0.1 * randn(c_out, gen=gen, device=device),
            "var": 0.5 + randn(c_out, gen=gen, device=device).abs(),
        })
    return params


def cascade(conv_params: Sequence[dict], bn_params: Sequence[dict], ordering: str, eps: float = 1e-5) -> nn.Sequential:
    """An eval-mode stack of 1×1 reduction blocks in one of :data:`ORDERINGS`.

    ``'conv-bn-relu'`` (ResNet): block k = conv_k, BN_k, ReLU.  ``'bn-relu-conv'``
    (DenseNet, pre-activation ResNet): block k = BN_k, ReLU, conv_k — so BN_k normalises the
    *input* of conv_k.  ``'conv'``: convs only.  Entry ``k`` of ``conv_params`` gives conv_k
    (``weight``, ``bias``) and entry ``k`` of ``bn_params`` BN_k (``gamma, beta, mean, var``);
    every BN uses ``eps``.
    """
    if ordering not in ORDERINGS:
        raise ValueError(f"ordering must be one of {ORDERINGS}, got {ordering!r}")
    if ordering != "conv" and len(bn_params) != len(conv_params):
        raise ValueError(f"need one BN per conv: {len(conv_params)} convs, {len(bn_params)} BNs")
    layers: list[nn.Module] = []
    for k, cp in enumerate(conv_params):
        conv = _conv(cp)
        if ordering == "conv":
            layers.append(conv)
            continue
        bn = _bn(bn_params[k], eps)
        want = conv.out_channels if ordering == "conv-bn-relu" else conv.in_channels
        if bn.num_features != want:
            raise ValueError(f"block {k}: BN has {bn.num_features} channels but {ordering} needs {want}")
        layers += [conv, bn, nn.ReLU()] if ordering == "conv-bn-relu" else [bn, nn.ReLU(), conv]
    return nn.Sequential(*layers).eval()


def preactivation_recut(params: Sequence[dict], eps: float = 1e-5) -> tuple[nn.Module, nn.Module, nn.Module]:
    """The ResNet-ordered stack ``conv-bn-relu(C_1…C_L; B_1…B_L)`` cut as ``(head, body, tail)``:

    ``head = C_1``, ``body = bn-relu-conv(B_1…B_{L−1}; C_2…C_L)`` (block ``j`` is
    ``B_j → ReLU → C_{j+1}``), ``tail = ReLU ∘ B_L``; ``tail(body(head(x)))`` is the ResNet
    stack. ``params[k]`` holds conv ``k + 1``'s weight and bias and BN ``k + 1``'s statistics
    (as :func:`random_cascade_params` makes them).
    """
    if not params:
        raise ValueError("preactivation_recut needs at least one block")
    head = cascade(params[:1], [], "conv")
    body = cascade(params[1:], params[:-1], "bn-relu-conv", eps) if len(params) > 1 else nn.Identity()
    tail = nn.Sequential(_bn(params[-1], eps), nn.ReLU()).eval()
    return head, body, tail


def collapse_linear_stack(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A stack of 1×1 convs without non-linearity is one 1×1 conv:
    ``W = W_L ⋯ W_1`` and ``b = Σ_k W_L ⋯ W_{k+1} b_k``."""
    if len(weights) != len(biases) or not weights:
        raise ValueError(f"need as many biases as weights (at least one), got {len(weights)} and {len(biases)}")
    w_tot, b_tot = weights[0], biases[0]
    for w, b in zip(weights[1:], biases[1:]):
        if w.shape[1] != w_tot.shape[0]:
            raise ValueError(f"widths do not chain: {tuple(w.shape)} after {tuple(w_tot.shape)}")
        w_tot, b_tot = w @ w_tot, w @ b_tot + b
    return w_tot, b_tot


def truncated_weight(weight: torch.Tensor, rank: int) -> torch.Tensor:
    """The best rank-``rank`` approximation ``U_r Σ_r V_rᵀ`` of a ``(C_out, C_in)`` matrix."""
    u, s, vh = _svd(weight, rank)
    return (u[:, :rank] * s[:rank]) @ vh[:rank]


def svd_factorise(conv: nn.Conv2d, rank: int) -> nn.Sequential:
    """Replace a 1×1 ``Conv2d`` (groups 1) by two: ``C_in → rank`` (``Σ_r V_rᵀ``, no bias),
    then ``rank → C_out`` (``U_r``, with the original bias).  Their composition is the 1×1
    conv with the truncated weight :func:`truncated_weight`.  Stride goes on the first."""
    if not isinstance(conv, nn.Conv2d) or conv.kernel_size != (1, 1) or conv.groups != 1:
        raise ValueError(f"svd_factorise needs a 1x1 Conv2d with groups=1, got {conv}")
    if _pads(conv):
        raise ValueError(f"svd_factorise needs padding 0, got {conv.padding}")
    w = conv.weight.detach().reshape(conv.out_channels, conv.in_channels)
    u, s, vh = _svd(w, rank)
    first = nn.Conv2d(conv.in_channels, rank, 1, stride=conv.stride, bias=False).to(w.device, w.dtype)
    second = nn.Conv2d(rank, conv.out_channels, 1, bias=conv.bias is not None).to(w.device, w.dtype)
    with torch.no_grad():
        first.weight.copy_((s[:rank, None] * vh[:rank]).reshape(rank, -1, 1, 1))
        second.weight.copy_(u[:, :rank].reshape(conv.out_channels, rank, 1, 1))
        if conv.bias is not None:
            second.bias.copy_(conv.bias.detach())
    return nn.Sequential(first, second)


def svd_macs(c_in: int, c_out: int, rank: int | None, pixels: int = 1) -> int:
    """Multiply–accumulates of a 1×1 conv over ``pixels`` output positions.

    ``rank=None``: the dense layer, ``C_in·C_out·pixels``; otherwise the factorised pair,
    ``rank·(C_in + C_out)·pixels``.  Saving ``1 − r(C_in + C_out)/(C_in C_out)``.
    """
    for name, v in (("c_in", c_in), ("c_out", c_out), ("pixels", pixels)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if rank is None:
        return c_in * c_out * pixels
    if not 1 <= rank <= min(c_in, c_out):
        raise ValueError(f"rank must be in [1, min(C_in, C_out)] = [1, {min(c_in, c_out)}], got {rank}")
    return rank * (c_in + c_out) * pixels


def break_even_rank(c_in: int, c_out: int) -> int:
    """Largest rank whose factorisation costs strictly fewer MACs than the dense layer:
    the largest integer ``r < C_in C_out / (C_in + C_out)`` (0 when none)."""
    num, den = c_in * c_out, c_in + c_out
    return (num - 1) // den


def eckart_young_error(singular_values: torch.Tensor, rank: int) -> tuple[float, float]:
    """Errors of the best rank-r approximation: ``(‖W − W_r‖₂, ‖W − W_r‖_F) =
    (σ_{r+1}, √(Σ_{i>r} σ_i²))`` (0 when ``r`` reaches the number of singular values)."""
    s = singular_values
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    tail = s[rank:]
    return (float(tail[0]) if tail.numel() else 0.0, float(torch.sqrt((tail ** 2).sum())))


def svd_error_curve(c_in: int = 64, c_out: int = 64, decay: float = 0.08, seed: int = 0,
                    pixels: int = 256) -> dict:
    """Relative output error of the rank-r factorisation for every ``r``, measured on random
    inputs, with the Eckart–Young bound ``σ_{r+1}/σ_1`` (‖y − y_r‖ ≤ σ_{r+1}‖x‖ per pixel).

    ``measured[r]`` is the worst pixel's ``‖y − y_r‖ / (σ_1 ‖x‖)`` over ``pixels`` random inputs.

    The weight has singular values ``exp(−decay·i)`` (a trained layer's spectrum decays;
    a Gaussian one is nearly flat).  Returns ranks, MAC fraction, measured and bound.
    """
    gen = generator(seed)
    w = _decaying_matrix(c_out, c_in, decay, gen)
    s = torch.linalg.svdvals(w)
    x = randn(c_in, pixels, gen=gen)
    y = w @ x
    ranks = np.arange(1, min(c_in, c_out) + 1)
    measured, bound, macs = [], [], []
    for r in ranks:
        yr = truncated_weight(w, int(r)) @ x
        per_pixel = torch.linalg.norm(y - yr, dim=0) / torch.linalg.norm(x, dim=0)  # ‖(W − W_r)x‖ / ‖x‖
        measured.append(float(per_pixel.max() / s[0]))
        bound.append(eckart_young_error(s, int(r))[0] / float(s[0]))
        macs.append(svd_macs(c_in, c_out, int(r)) / svd_macs(c_in, c_out, None))
    return {"ranks": ranks, "macs": np.array(macs), "measured": np.array(measured), "bound": np.array(bound)}


def collapse_1x1_then_kxk(w1: torch.Tensor, b1: torch.Tensor | None, w2: torch.Tensor,
                          b2: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One k×k conv for a 1×1 conv ``(r, C_in)`` then a k×k conv ``(C_out, r, k_h, k_w)``:
    ``W[o, i, a, c] = Σ_j W2[o, j, a, c] W1[j, i]`` and ``b = b2 + Σ_{j,a,c} W2[o, j, a, c] b1[j]``.

    Read as a matrix ``(C_out k_h k_w) × C_in`` the weight has rank at most ``r``: the pair is a
    low-rank factorisation of the k×k layer. With zero padding the two agree only where the
    k×k window lies inside the input (:func:`border_band_mask`): there the padded samples of the
    intermediate are 0, not ``b1``, so the collapsed bias over-counts ``Σ W2·b1`` over the taps
    that fall on padding. Without a first bias they agree everywhere.
    """
    w1m = w1.reshape(w1.shape[0], w1.shape[1])
    w = torch.einsum("ojac,ji->oiac", w2, w1m)
    b = w2.new_zeros(w2.shape[0]) if b2 is None else b2.clone()
    if b1 is not None:
        b = b + torch.einsum("ojac,j->o", w2, b1)
    return w, b


def border_band_mask(size: int | Sequence[int], kernel_size: int | Sequence[int], stride: int | Sequence[int] = 1,
                     padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1) -> np.ndarray:
    """Boolean mask over the outputs of a conv whose window reads zero padding.

    On each axis output ``u`` reads input positions ``s·u − p + d·a``, ``a = 0 … k−1``; it touches
    padding iff ``s·u < p`` or ``s·u − p + d(k−1) >= n``: the first ``⌈p/s⌉`` outputs and the
    last ones whose window overhangs the far end. An output is in the band if it is on either
    axis's band. Every argument is an int (both axes) or a pair, as in ``F.conv2d``.
    """
    from .numerics import as_tuple

    size, kernel_size = as_tuple(size, 2, "size"), as_tuple(kernel_size, 2, "kernel_size")
    stride, padding, dilation = as_tuple(stride, 2, "stride"), as_tuple(padding, 2, "padding"), as_tuple(dilation, 2, "dilation")
    axes = []
    for n, k, s_, p_, d_ in zip(size, kernel_size, stride, padding, dilation):
        u = np.arange((n + 2 * p_ - d_ * (k - 1) - 1) // s_ + 1)
        axes.append((s_ * u < p_) | (s_ * u - p_ + d_ * (k - 1) >= n))
    return np.logical_or.outer(axes[0], axes[1])


def data_aware_weight(weight: np.ndarray, x: np.ndarray, rank: int) -> np.ndarray:
    """The rank-``rank`` weight that minimises the *output* error ``‖W X − W' X‖_F`` (Zhang et al. 2016).

    ``weight`` is ``(C_out, C_in)``, ``x`` the activations ``(C_in, N)`` (one column per pixel).
    With ``U_r`` the leading ``r`` left singular vectors of the responses ``Y = W X``,
    ``W' = U_r U_rᵀ W``: then ``W' X = U_r U_rᵀ Y`` is the best rank-r approximation of ``Y``
    (Eckart–Young on ``Y``), which no rank-r ``W'`` can beat. As two 1×1 convs: ``U_rᵀ W``
    (``C_in → r``), then ``U_r`` (``r → C_out``). The truncated SVD of ``W`` instead minimises the
    *weight* error ``‖W − W'‖``; the two coincide when ``X Xᵀ ∝ I``.
    """
    if not 1 <= rank <= min(weight.shape):
        raise ValueError(f"rank must be in [1, min(C_out, C_in)] = [1, {min(weight.shape)}], got {rank}")
    if x.ndim != 2 or x.shape[0] != weight.shape[1]:
        raise ValueError(f"x must be (C_in={weight.shape[1]}, N), got shape {x.shape}")
    u, _, _ = np.linalg.svd(weight @ x, full_matrices=False)
    ur = u[:, :rank]
    return ur @ (ur.T @ weight)


def anisotropic_activations(c: int, n: int, decay: float, seed: int = 0) -> np.ndarray:
    """``(c, n)`` activations with covariance ``Q diag(exp(−decay·i)) Qᵀ`` (random rotation ``Q``):
    a few directions carry most of the energy, as in a trained network's features."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((c, c)))
    return q @ (np.exp(-decay * np.arange(c))[:, None] ** 0.5 * rng.standard_normal((c, n)))


def factorisation_errors(weight: np.ndarray, x: np.ndarray, rank: int) -> dict:
    """Relative output error ``‖(W − W')X‖_F / ‖WX‖_F`` and weight error ``‖W − W'‖_F / ‖W‖_F`` of the
    truncated SVD (``'svd'``) and of :func:`data_aware_weight` (``'data'``) at ``rank``."""
    u, s, vh = np.linalg.svd(weight, full_matrices=False)
    cands = {"svd": (u[:, :rank] * s[:rank]) @ vh[:rank], "data": data_aware_weight(weight, x, rank)}
    y = weight @ x
    return {name: {"output": float(np.linalg.norm(y - w @ x) / np.linalg.norm(y)),
                   "weight": float(np.linalg.norm(weight - w) / np.linalg.norm(weight))} for name, w in cands.items()}


def plot_svd_error(curve: dict, axes=None):
    """Two panels: relative error vs rank, and vs fraction of MACs kept (log error axis).

    Full rank (exact, error at rounding level) is left out so the axis shows the useful range.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 4))
    keep = slice(0, len(curve["ranks"]) - 1)
    for ax, xs, label in ((axes[0], curve["ranks"], "rank r"), (axes[1], curve["macs"], "MACs / dense MACs")):
        ax.semilogy(xs[keep], curve["bound"][keep], "k-", label=r"Eckart–Young bound $\sigma_{r+1}/\sigma_1$")
        ax.semilogy(xs[keep], curve["measured"][keep], "o", ms=3, label="measured (worst pixel)")
        ax.set_xlabel(label)
        ax.set_ylabel("relative output error")
    axes[1].axvline(1.0, color="0.6", ls="--", lw=1)
    axes[0].legend(loc="lower left")
    return axes


# --------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------


@claim(
    "reduce.conv1x1-linear",
    title="A 1×1 convolution is a per-pixel linear map",
    chapter=5,
    statement="For 1-, 2- and 3-D inputs (1 pixel and up), any stride and groups with any channel multipliers, F.conv with a 1×1 kernel equals einsum('oi,bi...->bo...') with the (block-diagonal) channel matrix, and nn.Linear over the channels-last tensor.",
    parameters=("dimension", "stride", "groups"),
    reference="PyTorch F.conv1d, F.conv2d, F.conv3d",
)
def check_conv1x1_linear(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(501)
    convs = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
    for case in range(60):
        nd = 1 + case % 3
        groups = randint(1, 3, gen)
        c_in, c_out = groups * randint(1, 4, gen), groups * randint(1, 4, gen)
        stride = randint(1, 3, gen)
        w = randn(c_out, c_in // groups, *([1] * nd), gen=gen, device=device)
        b = randn(c_out, gen=gen, device=device) if case % 2 else None
        x = randn(2, c_in, *[randint(1, 6, gen) for _ in range(nd)], gen=gen, device=device)
        ref = convs[nd](x, w, b, stride=stride, groups=groups)
        m = conv1x1_matrix(w, groups)
        got = _run(t, lambda: conv1x1_einsum(x, m, b, stride=stride), f"einsum, nd={nd} g={groups} s={stride}")
        if got is not None:
            t.close(got, ref, f"einsum, nd={nd} g={groups} s={stride}")
        if stride == 1:
            t.close(conv1x1_linear(x, m, b), ref, f"linear, nd={nd} g={groups}")
    return t.verdict("random 1×1 layers: einsum and F.linear vs F.conv1d/2d/3d", dtype="float64")


def _torch_block_stack(params: Sequence[dict], eps: float, ordering: str) -> nn.Sequential:
    """The reference: PyTorch's own modules, built here layer by layer (not through :func:`cascade`)."""
    layers: list[nn.Module] = []
    for k, q in enumerate(params):
        c_out, c_in = q["weight"].shape
        conv = nn.Conv2d(c_in, c_out, kernel_size=1, bias=True).to(q["weight"].device, q["weight"].dtype)
        with torch.no_grad():
            conv.weight.copy_(q["weight"][:, :, None, None])
            conv.bias.copy_(q["bias"])
        bn_src = q if ordering == "conv-bn-relu" else params[k - 1]
        bn = nn.BatchNorm2d(bn_src["gamma"].numel(), eps=eps).to(q["weight"].device, q["weight"].dtype)
        with torch.no_grad():
            bn.weight.copy_(bn_src["gamma"])
            bn.bias.copy_(bn_src["beta"])
            bn.running_mean.copy_(bn_src["mean"])
            bn.running_var.copy_(bn_src["var"])
        if ordering == "conv-bn-relu":
            layers += [conv, bn, nn.ReLU()]
        elif k == 0:  # the pre-activation stack starts with the bare first conv
            layers.append(conv)
        else:
            layers += [bn, nn.ReLU(), conv]
    return nn.Sequential(*layers).eval()


def _run(t: Tally, fn, what: str):
    """Run ``fn()``; a wrong stack that cannot even run (mismatched widths) counts as a mismatch."""
    try:
        with torch.no_grad():
            return fn()
    except (RuntimeError, ValueError) as err:
        t.exact(False, f"{what}: {err}")
        return None


@claim(
    "reduce.orderings-cascade",
    title="In a deep cascade, Conv→BN→ReLU and BN→ReLU→Conv are the same network cut differently",
    chapter=5,
    statement="For every depth L >= 1, widths C_0…C_L and BN eps > 0, conv-bn-relu(C_1…C_L, B_1…B_L) = ReLU∘B_L ∘ bn-relu-conv(B_1…B_{L−1}; C_2…C_L) ∘ C_1 in eval mode: only the first conv and the last BN+ReLU differ.",
    parameters=("depth", "eps"),
    reference="PyTorch nn.Conv2d, nn.BatchNorm2d and nn.ReLU stacked in each ordering",
)
def check_orderings_cascade(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(502)
    for case in range(16):
        depth = 1 + case % 6
        eps = (1e-5, 0.5, 1e-9, 3.0)[case % 4]
        widths = [2 * randint(1, 8, gen)]
        for _ in range(depth):  # reductions 2C -> C mixed with C -> C and widenings
            widths.append((max(1, widths[-1] // 2), widths[-1], widths[-1] + 1)[randint(0, 2, gen)])
        p = random_cascade_params(widths, gen, device)
        # small variances, so that eps matters
        for q in p:
            q["var"] = q["var"] * (1e-3 if case % 2 else 1.0)
        x = randn(2, widths[0], randint(1, 4, gen), randint(1, 4, gen), gen=gen, device=device)
        what = f"depth {depth}, widths {widths}, eps {eps:g}"
        with torch.no_grad():
            ref = _torch_block_stack(p, eps, "conv-bn-relu")(x)
            pre = _torch_block_stack(p, eps, "bn-relu-conv")(x)
        last = p[-1]
        ref_tail = F.relu(F.batch_norm(pre, last["mean"], last["var"], last["gamma"], last["beta"], False, 0.0, eps))
        t.close(ref_tail, ref, what + " (PyTorch modules: pre-activation stack + last BN, ReLU vs ResNet stack)")
        resnet = _run(t, lambda: cascade(p, p, "conv-bn-relu", eps)(x), what)
        if resnet is not None:
            t.close(resnet, ref, what + " (cascade conv-bn-relu vs PyTorch modules)")

        def recut():
            head, body, tail = preactivation_recut(p, eps)
            return tail(body(head(x)))
        got = _run(t, recut, what)
        if got is not None:
            t.close(got, ref, what + " (recut vs PyTorch ResNet stack)")
    return t.verdict("random cascades: library stacks and the recut vs PyTorch modules in each ordering",
                     case_unit="comparisons", dtype="float64")


@claim(
    "reduce.conv-stack-collapses",
    title="1×1 convolutions without a non-linearity collapse to one",
    chapter=5,
    statement="For every depth L >= 1 and widths, a stack of 1×1 convs (the 'conv' ordering) equals the single 1×1 conv with W = W_L⋯W_1 and b = Σ_k W_L⋯W_{k+1} b_k, so its rank is at most its narrowest width.",
    parameters=("depth",),
    reference="the stack of PyTorch nn.Conv2d layers; torch.linalg.matrix_rank",
)
def check_conv_stack_collapses(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(503)
    for case in range(25):
        widths = [randint(1, 12, gen) for _ in range(2 + case % 5)]
        p = random_cascade_params(widths, gen, device)
        stack = cascade(p, [], "conv")
        w, b = collapse_linear_stack([q["weight"] for q in p], [q["bias"] for q in p])
        x = randn(2, widths[0], 4, 4, gen=gen, device=device)
        with torch.no_grad():
            t.close(conv1x1_einsum(x, w, b), stack(x), f"widths {widths}")
        t.exact(int(torch.linalg.matrix_rank(w)) <= min(widths), f"rank of collapsed {widths}")
    return t.verdict("random stacks vs the collapsed 1×1 conv; rank ≤ narrowest width", dtype="float64")


@claim(
    "reduce.svd-factorisation",
    title="The truncated-SVD factorisation of a 1×1 conv is exact for the truncated matrix",
    chapter=5,
    statement="For every rank 1 <= r <= min(C_in, C_out), stride and with or without bias, svd_factorise(conv, r) is two 1×1 convs (C_in→r, r→C_out) whose composition equals the 1×1 conv with weight U_rΣ_rV_rᵀ, costing r(C_in+C_out) instead of C_in·C_out MACs per pixel.",
    parameters=("rank", "stride", "bias"),
    reference="PyTorch F.conv2d with numpy's truncated SVD; MACs counted from the built layers",
)
def check_svd_factorisation(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(504)
    for case in range(30):
        c_in, c_out = randint(1, 24, gen), randint(1, 24, gen)
        r = (1, min(c_in, c_out), randint(1, min(c_in, c_out), gen))[case % 3]
        stride = randint(1, 3, gen)
        conv = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=bool(case % 2)).to(device, DTYPE)
        with torch.no_grad():
            conv.weight.copy_(randn(*conv.weight.shape, gen=gen, device=device))
        pair = svd_factorise(conv, r)
        x = randn(2, c_in, randint(1, 7, gen), randint(1, 7, gen), gen=gen, device=device)
        w = conv.weight.detach().reshape(c_out, c_in)
        # independent truncation: numpy's SVD of the same matrix
        u, s, vh = np.linalg.svd(w.cpu().numpy())
        w_r = torch.as_tensor((u[:, :r] * s[:r]) @ vh[:r], device=device)
        with torch.no_grad():
            ref = F.conv2d(x, w_r.reshape(c_out, c_in, 1, 1), conv.bias, stride=stride)
            t.close(pair(x), ref, f"C_in={c_in} C_out={c_out} r={r}")
        pixels = ref.shape[-1] * ref.shape[-2]
        counted = sum(m.weight.numel() for m in pair) * pixels  # a 1×1 conv does weight.numel() MACs per pixel
        t.exact(svd_macs(c_in, c_out, r, pixels) == counted, f"MACs C_in={c_in} C_out={c_out} r={r}")
        t.exact(svd_macs(c_in, c_out, None, pixels) == conv.weight.numel() * pixels, "dense MACs")
    for c_in in range(1, 30):
        for c_out in range(1, 30):
            r0 = break_even_rank(c_in, c_out)
            cheaper = [r for r in range(1, min(c_in, c_out) + 1) if r * (c_in + c_out) < c_in * c_out]
            t.exact((max(cheaper) if cheaper else 0) == r0, f"break-even rank {c_in}x{c_out}")
    return t.verdict("random 1×1 convs vs F.conv2d with numpy's truncated SVD; MACs counted from the layers",
                     dtype="float64")


@claim(
    "reduce.eckart-young",
    title="Truncated SVD is the best rank-r approximation, with error σ_{r+1}",
    chapter=5,
    statement="For every matrix W and rank r, ‖W − W_r‖₂ = σ_{r+1} and ‖W − W_r‖_F = √(Σ_{i>r}σ_i²); no other rank-r matrix does better in these weight-space norms, so every pixel's output error is at most σ_{r+1}‖x‖.",
    parameters=("rank",),
    reference="singular values from eigvalsh([[0, W], [Wᵀ, 0]]); random rank-r competitors",
)
def check_eckart_young(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12, kind="abs.")  # norms divided by σ_1: absolute error of relative quantities
    gen = generator(505)
    beaten = 0
    for case in range(25):
        c_in, c_out = randint(2, 16, gen), randint(2, 16, gen)
        w = randn(c_out, c_in, gen=gen, device=device)
        # singular values independently: the eigenvalues of [[0, W], [Wᵀ, 0]] are ±σ_i (and zeros)
        aug = torch.zeros(c_out + c_in, c_out + c_in, dtype=w.dtype, device=device)
        aug[:c_out, c_out:], aug[c_out:, :c_out] = w, w.T
        sig = torch.linalg.eigvalsh(aug).flip(0)[: min(c_in, c_out)].clamp_min(0)
        r = randint(1, min(c_in, c_out), gen)
        w_r = truncated_weight(w, r)
        spec, frob = eckart_young_error(sig, r)
        scale = float(sig[0])
        t.close(torch.tensor([float(torch.linalg.matrix_norm(w - w_r, ord=2)) / scale]), torch.tensor([spec / scale]),
                f"spectral, {c_out}x{c_in} r={r}")
        t.close(torch.tensor([float(torch.linalg.matrix_norm(w - w_r)) / scale]), torch.tensor([frob / scale]),
                f"Frobenius, {c_out}x{c_in} r={r}")
        t.exact(int(torch.linalg.matrix_rank(w_r)) == r, f"rank of W_r, {c_out}x{c_in} r={r}")
        x = randn(c_in, 50, gen=gen, device=device)
        per_pixel = torch.linalg.norm((w - w_r) @ x, dim=0) / torch.linalg.norm(x, dim=0)
        t.exact(bool((per_pixel <= spec + 1e-12 * scale).all()), f"per-pixel bound, {c_out}x{c_in} r={r}")
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        left, right = u[:, :r] * s[:r], vh[:r]
        for _ in range(4):  # random rank-r competitors, and rank-r perturbations of W_r, never do better
            a = randn(c_out, r, gen=gen, device=device)
            bm = randn(r, c_in, gen=gen, device=device)
            for cand in (a @ bm, (left + 1e-3 * a) @ (right + 1e-3 * bm)):
                ok = float(torch.linalg.matrix_norm(w - cand)) >= frob - 1e-12 * scale
                beaten += not ok
                t.exact(ok, f"a random rank-{r} matrix beat W_r")
    t.note(f"{beaten} of {25 * 8} random rank-r competitors beat the truncated SVD")
    return t.verdict("random matrices: norms vs σ from eigvalsh([[0,W],[Wᵀ,0]]), random rank-r competitors", dtype="float64")


@claim(
    "reduce.collapse-border",
    title="A 1×1 then a k×k convolution is a low-rank k×k layer — except at a zero-padded border",
    chapter=5,
    statement="For every C_in, r, C_out, k_h × k_w kernel, per-axis stride, zero padding and dilation, a 1×1 conv (C_in → r, bias b1) followed by a k×k conv (r → C_out) equals the single k×k conv with W = W2·W1 (channel rank <= r) and b = b2 + Σ W2·b1 at every output whose window lies inside the input, and differs (generically) at every output whose window reads padding: the first ⌈p/s⌉ outputs on each axis and those with s·u − p + d(k−1) >= n.",
    parameters=("padding", "stride", "dilation"),
    reference="PyTorch F.conv2d of the two layers in sequence",
)
def check_collapse_border(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(506)
    band_outputs = 0
    for case in range(40):
        c_in, r, c_out = randint(1, 6, gen), randint(1, 4, gen), randint(1, 5, gen)
        ks = (randint(1, 5, gen), randint(1, 5, gen))
        s_ = (randint(1, 3, gen), randint(1, 3, gen))
        p_ = (randint(0, 3, gen), randint(0, 3, gen))
        d_ = (randint(1, 3, gen), randint(1, 3, gen))
        size = (randint(1, 12, gen), randint(1, 12, gen))
        if any(d * (k - 1) + 1 > n + 2 * p for n, k, p, d in zip(size, ks, p_, d_)):
            continue
        x = randn(2, c_in, *size, gen=gen, device=device)
        w1, b1 = randn(r, c_in, 1, 1, gen=gen, device=device), randn(r, gen=gen, device=device)
        w2, b2 = randn(c_out, r, *ks, gen=gen, device=device), randn(c_out, gen=gen, device=device)
        pair = F.conv2d(F.conv2d(x, w1, b1), w2, b2, stride=s_, padding=p_, dilation=d_)
        w, b = collapse_1x1_then_kxk(w1, b1, w2, b2)
        single = F.conv2d(x, w, b, stride=s_, padding=p_, dilation=d_)
        t.exact(int(torch.linalg.matrix_rank(w.permute(0, 2, 3, 1).reshape(-1, c_in))) <= r, "channel rank <= r")
        band = torch.as_tensor(border_band_mask(size, ks, s_, p_, d_), device=device)
        what = f"C {c_in}->{r}->{c_out} k={ks} s={s_} p={p_} d={d_} {size[0]}x{size[1]}"
        if tuple(band.shape) != tuple(pair.shape[2:]):
            t.exact(False, f"band mask shape {tuple(band.shape)} vs output {tuple(pair.shape[2:])}: {what}")
            continue
        inside = ~band
        if inside.any():
            t.close(single[..., inside], pair[..., inside], "interior " + what)
        scale = float(pair.abs().max())
        diff = (single - pair).abs().amax(dim=(0, 1))
        for v in diff[band].tolist():
            t.exact(v > 1e-9 * scale, "border output equal although its window reads padding: " + what)
        band_outputs += int(band.sum())
        # without the first bias the two agree everywhere
        w0, b0 = collapse_1x1_then_kxk(w1, None, w2, b2)
        t.close(F.conv2d(x, w0, b0, stride=s_, padding=p_, dilation=d_),
                F.conv2d(F.conv2d(x, w1), w2, b2, stride=s_, padding=p_, dilation=d_), "no first bias " + what)
    t.note(f"{band_outputs} border outputs, each different")
    return t.verdict("random pairs vs F.conv2d: equal away from the predicted border band, different on it",
                     dtype="float64")


@claim(
    "reduce.data-aware",
    title="A data-aware factorisation beats the truncated SVD on the output error",
    chapter=5,
    statement="For every weight W (C_out × C_in), activations X (C_in × N) and rank r, W_d = U_r U_rᵀ W (U_r: leading left singular vectors of Y = W X; Zhang et al. 2016) minimises the output error ‖WX − W'X‖_F over rank-r W', with minimum (Σ_{i>r} σ_i(Y)²)^{1/2}, while the truncated SVD W_r minimises the weight error ‖W − W'‖_F; the two coincide for isotropic activations (X Xᵀ ∝ I), and on anisotropic activations W_d's output error is lower.",
    parameters=("rank", "activations"),
    reference="numpy SVD of the responses Y = W X (Eckart–Young on Y); fitted rank-r competitors",
)
def check_data_aware(device: str = "cpu"):
    check_device(device)
    t = Tally(tol=1e-10, kind="abs.")
    rng = np.random.default_rng(507)
    lower = 0
    for case in range(24):
        c_in, c_out = int(rng.integers(2, 24)), int(rng.integers(2, 24))
        n = int(rng.integers(c_in, 3 * c_in + 2))
        r = [1, min(c_in, c_out), int(rng.integers(1, min(c_in, c_out) + 1))][case % 3]
        w = rng.standard_normal((c_out, c_in))
        isotropic = case % 4 == 0
        if isotropic:  # X Xᵀ = N·I exactly: orthogonal rows scaled
            q, _ = np.linalg.qr(rng.standard_normal((n, c_in)))
            x = np.sqrt(n) * q.T
        else:
            x = anisotropic_activations(c_in, n, float(rng.uniform(0.2, 1.0)), seed=int(rng.integers(1 << 30)))
        y = w @ x
        wd = data_aware_weight(w, x, r)
        scale = float(np.linalg.norm(y))
        sv = np.linalg.svd(y, compute_uv=False)
        out_d = float(np.linalg.norm(y - wd @ x))
        t.exact(np.linalg.matrix_rank(wd) <= r, f"rank of W_d <= {r}")
        t.close(np.array([out_d / scale]), np.array([np.sqrt((sv[r:] ** 2).sum()) / scale]),
                f"output error = Eckart–Young bound on Y, {c_out}x{c_in} r={r}")
        u, s, vh = np.linalg.svd(w, full_matrices=False)
        wr = (u[:, :r] * s[:r]) @ vh[:r]
        out_r = float(np.linalg.norm(y - wr @ x))
        t.exact(out_d <= out_r + 1e-10 * scale, f"data-aware output error {out_d:.3g} <= SVD's {out_r:.3g}")
        t.exact(np.linalg.norm(w - wr) <= np.linalg.norm(w - wd) + 1e-10 * np.linalg.norm(w),
                "SVD's weight error <= data-aware's")
        for _ in range(3):  # fitted rank-r competitors: A (B X) with B random, A by least squares
            bm = rng.standard_normal((r, c_in))
            z = bm @ x
            a = np.linalg.lstsq(z.T, y.T, rcond=None)[0].T
            t.exact(np.linalg.norm(y - a @ z) >= out_d - 1e-10 * scale, "a fitted rank-r competitor beat W_d")
        if isotropic:
            t.close(np.array([out_d / scale]), np.array([out_r / scale]), f"isotropic: equal output errors r={r}")
        lower += out_d < out_r - 1e-10 * scale
    t.note(f"data-aware strictly better in {lower} of 24 cases (never worse)")
    return t.verdict("random layers and activations: output error vs Eckart–Young on Y, SVD and fitted competitors",
                     dtype="float64")


# --------------------------------------------------------------------------------------
# Private helpers
# --------------------------------------------------------------------------------------


def _as_matrix(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if weight.dim() < 2 or any(s != 1 for s in weight.shape[2:]):
        raise ValueError(f"weight must be (C_out, C_in) or (C_out, C_in, 1, ...), got shape {tuple(weight.shape)}")
    w = weight.reshape(weight.shape[0], weight.shape[1])
    if x.dim() < 3 or x.shape[1] != w.shape[1]:
        raise ValueError(f"x must be (B, C_in={w.shape[1]}, *spatial), got shape {tuple(x.shape)}")
    return w


def _svd(weight: torch.Tensor, rank: int):
    if weight.dim() != 2:
        raise ValueError(f"weight must be a (C_out, C_in) matrix, got shape {tuple(weight.shape)}")
    if not 1 <= rank <= min(weight.shape):
        raise ValueError(f"rank must be in [1, min(C_out, C_in)] = [1, {min(weight.shape)}], got {rank}")
    return torch.linalg.svd(weight, full_matrices=False)


def _pads(conv: nn.Conv2d) -> bool:
    return conv.padding not in ("valid", (0, 0))


def _conv(p: dict) -> nn.Conv2d:
    c_out, c_in = p["weight"].shape
    conv = nn.Conv2d(c_in, c_out, 1).to(p["weight"].device, p["weight"].dtype)
    with torch.no_grad():
        conv.weight.copy_(p["weight"].reshape(c_out, c_in, 1, 1))
        conv.bias.copy_(p["bias"])
    return conv


def _bn(p: dict, eps: float = 1e-5) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(p["gamma"].numel(), eps=eps).to(p["gamma"].device, p["gamma"].dtype)
    with torch.no_grad():
        bn.weight.copy_(p["gamma"])
        bn.bias.copy_(p["beta"])
        bn.running_mean.copy_(p["mean"])
        bn.running_var.copy_(p["var"])
    return bn.eval()


def _decaying_matrix(rows: int, cols: int, decay: float, gen: torch.Generator) -> torch.Tensor:
    n = min(rows, cols)
    q1, _ = torch.linalg.qr(randn(rows, n, gen=gen))
    q2, _ = torch.linalg.qr(randn(cols, n, gen=gen))
    s = torch.exp(-decay * torch.arange(n, dtype=DTYPE))
    return (q1 * s) @ q2.T
