"""Chapter 8: residual shortcuts across a change of dimensions.

When a residual block changes the number of channels (``C_in -> C_out``) or the resolution
(stride ``s``), the identity shortcut ``x`` no longer has the shape of the residual branch.
The options (He et al. 2016, Sec. 3.3 and 4.1; He et al. 2019, ResNet-D):

* ``'A'`` — identity on every ``s``-th sample, ``x[:, :, ::s, ::s]``, plus ``C_out - C_in``
  channels of zeros; no parameters.
* ``'B'`` — a 1×1 convolution with stride ``s`` (and BN) only where the dimensions change;
  identity elsewhere.
* ``'C'`` — a 1×1 projection (and BN) in every block, even where nothing changes.
* ``'D'`` — ResNet-D: a ``s×s`` average pool with stride ``s`` (``ceil_mode``, padding not
  counted), then a stride-1 1×1 convolution and BN; identity where nothing changes.
* ``'max'`` — the nonlinear alternative: a ``(2s-1)×(2s-1)`` max pool with stride ``s`` and
  padding ``s-1`` (3×3/2, pad 1 for ``s = 2``), then a 1×1 convolution and BN.

All five produce ``(C_out, ⌈H/s⌉, ⌈W/s⌉)`` from ``(C_in, H, W)``. In eval mode BN is an
affine map, so A–D are affine and their linear part has a rank; max pooling is not linear.
"""

from __future__ import annotations

import copy
import itertools
import math
from fractions import Fraction
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .claims import Tally, claim
from .plotting import mark_uniform
from .numerics import DTYPE, check_device, generator, randint, randn
from .shapes import conv_output_size

__all__ = [
    "KINDS",
    "ZeroPadShortcut",
    "shortcut",
    "is_identity",
    "gradient_mask",
    "gradient_coverage",
    "expected_coverage",
    "linear_map_matrix",
    "linear_map_rank",
    "shortcut_rank",
    "block_mean_projection",
    "block_constant_projection",
    "local_jacobian_rank",
    "expected_local_rank",
    "PLACEMENTS",
    "expected_block_coverage",
    "shortcut_cost",
    "RESNET50_TRANSITIONS",
    "resnet50_transition_costs",
    "Bottleneck",
    "bottleneck_block",
    "bottleneck_shapes",
    "plot_gradient_coverage",
]

KINDS = ("A", "B", "C", "D", "max")

#: Where a bottleneck block puts its stride: ``'v1'`` on the first 1×1 convolution (He et al. 2016),
#: ``'v1.5'`` on the 3×3 (torchvision; "ResNet-B" in He et al. 2019, which with option D is ResNet-D).
PLACEMENTS = ("v1", "v1.5")

#: ResNet-50's first block of each stage: (stage, C_in, C_out, stride, input size H = W, width of the bottleneck).
RESNET50_TRANSITIONS = (
    ("conv2_x", 64, 256, 1, 56, 64),
    ("conv3_x", 256, 512, 2, 56, 128),
    ("conv4_x", 512, 1024, 2, 28, 256),
    ("conv5_x", 1024, 2048, 2, 14, 512),
)


# --------------------------------------------------------------------------------------
# Building the shortcuts
# --------------------------------------------------------------------------------------


class ZeroPadShortcut(nn.Module):
    """Option A: ``y = [x[:, :, ::s, ::s]; 0]`` — subsample, then append ``C_out - C_in`` zero channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x[:, :, :: self.stride, :: self.stride]
        return F.pad(y, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def shortcut(kind: str, in_channels: int, out_channels: int, stride: int = 1) -> nn.Module:
    """The shortcut of option ``kind`` (``'A'``, ``'B'``, ``'C'``, ``'D'``, ``'max'``), float32.

    Maps ``(C_in, H, W)`` to ``(C_out, ⌈H/s⌉, ⌈W/s⌉)``. Options A, B, D and max are the identity
    (``nn.Identity``) when ``C_in == C_out`` and ``stride == 1``; C always projects. Option A
    needs ``C_out >= C_in`` (it can only add zero channels).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("stride", stride)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    changes = in_channels != out_channels or stride != 1
    if kind == "A" and out_channels < in_channels:
        raise ValueError(f"option A pads with zero channels, so it needs out_channels >= in_channels; "
                         f"got {in_channels} -> {out_channels}")
    if kind != "C" and not changes:
        return nn.Identity()
    if kind == "A":
        return ZeroPadShortcut(in_channels, out_channels, stride)
    if kind in ("B", "C") or stride == 1:
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                             nn.BatchNorm2d(out_channels))
    if kind == "D":
        pool = nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
    else:
        pool = nn.MaxPool2d(2 * stride - 1, stride, padding=stride - 1)
    return nn.Sequential(pool, nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))


def is_identity(module: nn.Module) -> bool:
    """True for ``nn.Identity`` (the shortcut of an unchanged block)."""
    return isinstance(module, nn.Identity)


def gradient_mask(module: nn.Module, input_shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """Boolean mask of the input elements that receive a non-zero gradient.

    Runs a float64 eval-mode copy of ``module`` (the input is not modified) on a random
    input of ``input_shape`` ``(B, C, H, W)`` and back-propagates a random output cotangent
    (random, so no cancellation hides a dependence); an input element is *covered* when its
    gradient is non-zero.
    """
    shape = tuple(input_shape)
    if len(shape) != 4 or any(not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"input_shape must be 4 positive ints (B, C, H, W), got {input_shape!r}")
    net = copy.deepcopy(module).to(DTYPE).eval()
    dev = _device_of(net)
    gen = generator(seed)
    x = randn(*shape, gen=gen, device=dev).requires_grad_(True)
    y = net(x)
    y.backward(randn(*y.shape, gen=gen, device=dev))
    return (x.grad != 0).cpu()


def gradient_coverage(module: nn.Module, input_shape: Sequence[int], seed: int = 0) -> Fraction:
    """Fraction of input elements with a non-zero gradient (see :func:`gradient_mask`), exact."""
    mask = gradient_mask(module, input_shape, seed)
    return Fraction(int(mask.sum()), mask.numel())


def expected_coverage(kind: str, stride: int, height: int, width: int, identity: bool = False) -> Fraction:
    """Derived coverage of a linear shortcut: ``⌈H/s⌉⌈W/s⌉ / (HW)`` for A, B, C; 1 for D and the identity.

    Strided sampling reads only positions ``(s·u, s·v)``; an ``s×s`` average pool with stride
    ``s`` tiles the input, so every element is in exactly one window. Not defined for
    ``'max'`` (the covered elements depend on the data).
    """
    from .conventions import as_int

    stride = as_int(stride, "stride")
    if kind not in ("A", "B", "C", "D"):
        raise ValueError(f"expected_coverage is derived for the linear kinds A, B, C, D, got {kind!r}")
    if identity or kind == "D":
        return Fraction(1)
    return Fraction(math.ceil(height / stride) * math.ceil(width / stride), height * width)


def linear_map_matrix(module: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    """Matrix of the linear part of ``module`` (eval mode, float64) on one input of shape ``(C, H, W)``.

    The Jacobian ``∂ vec(y) / ∂ vec(x)``; for an affine module (conv, pooling, eval-mode BN,
    zero padding) it does not depend on the point and is the matrix of the map.
    """
    shape = tuple(input_shape)
    if len(shape) != 3 or any(not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"input_shape must be 3 positive ints (C, H, W), got {input_shape!r}")
    net = copy.deepcopy(module).to(DTYPE).eval()
    x = torch.zeros(1, *shape, dtype=DTYPE, device=_device_of(net))
    with torch.no_grad():
        n_out = net(x).numel()
    jac = torch.autograd.functional.jacobian(lambda z: net(z), x)
    return jac.reshape(n_out, x.numel())


def linear_map_rank(module: nn.Module, input_shape: Sequence[int]) -> int:
    """Rank of :func:`linear_map_matrix` (SVD, float64 — singular values here are O(1) or exactly 0)."""
    return int(torch.linalg.matrix_rank(linear_map_matrix(module, input_shape)).item())


def shortcut_rank(kind: str, in_channels: int, out_channels: int, stride: int, height: int, width: int) -> int:
    """Derived rank of a shortcut's linear part, for generic weights.

    With ``P = ⌈H/s⌉⌈W/s⌉`` output positions: identity ``C_in·H·W``; A ``C_in·P`` (each kept
    sample copied once, zero channels add nothing); B, C, D ``min(C_in, C_out)·P`` — the map is
    block-diagonal over positions (after subsampling or pooling, each of rank ``P`` per
    channel), each block the ``C_out × C_in`` weight matrix of generic rank ``min``.
    """
    from .conventions import as_int

    stride = as_int(stride, "stride")
    if kind not in ("A", "B", "C", "D"):
        raise ValueError(f"shortcut_rank is defined for the linear kinds A, B, C, D, got {kind!r}")
    p = math.ceil(height / stride) * math.ceil(width / stride)
    if kind != "C" and in_channels == out_channels and stride == 1:
        return in_channels * height * width
    if kind == "A":
        return in_channels * p
    return min(in_channels, out_channels) * p


def block_mean_projection(x: torch.Tensor, block: int = 2) -> torch.Tensor:
    """What a ``block×block`` average pool keeps: each block replaced by its mean.

    ``P x = upsample(avgpool(x))``; ``P`` is the orthogonal projection onto signals that are
    constant on each block. Needs ``H`` and ``W`` divisible by ``block``.
    """
    h, w = x.shape[-2:]
    if h % block or w % block:
        raise ValueError(f"H and W must be divisible by block: got {h}x{w}, block={block}")
    pooled = F.avg_pool2d(x, block)
    return pooled.repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1)


def block_constant_projection(channels: int, height: int, width: int, block: int = 2) -> torch.Tensor:
    """The matrix ``Π`` of the orthogonal projection onto signals constant on each ``block×block``
    block, on ``vec`` of a ``(C, H, W)`` input: ``Π = I_C ⊗ P_H ⊗ P_W`` with
    ``P_n = I_{n/block} ⊗ (1/block)·𝟙𝟙ᵀ``. A 2×2/2 average pool's matrix ``M`` satisfies
    ``4 MᵀM = Π`` (``MᵀM`` is ``Π/4``, not ``M``)."""
    if height % block or width % block:
        raise ValueError(f"height and width must be divisible by block: got {height}x{width}, block={block}")
    ones = torch.full((block, block), 1.0 / block, dtype=DTYPE)

    def axis(n):
        return torch.kron(torch.eye(n // block, dtype=DTYPE), ones)

    return torch.kron(torch.eye(channels, dtype=DTYPE), torch.kron(axis(height), axis(width)))


def expected_block_coverage(placement: str, kind: str, stride: int, height: int, width: int) -> Fraction:
    """Derived gradient coverage of a whole bottleneck block with stride ``stride`` ∈ {2, 3}.

    The input reaches the output through the shortcut and through ``conv1``. With the stride
    on the first 1×1 (``'v1'``) the residual path reads only positions ``(s·u, s·v)``, and so
    do options A and B: coverage ``⌈H/s⌉⌈W/s⌉/(HW)``; option D's average pool reads every
    position, so 1. With the stride on the 3×3 (``'v1.5'``) the 1×1 reads every position and
    the 3×3, padding 1, stride ``s <= 3`` covers every row and column: 1 for every option.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    if kind not in ("A", "B", "D"):
        raise ValueError(f"expected_block_coverage is derived for options A, B, D, got {kind!r}")
    from .conventions import as_int

    stride = as_int(stride, "stride")
    if stride not in (2, 3):
        raise ValueError(f"expected_block_coverage is derived for stride 2 or 3 (a 3×3 window covers its stride), got {stride}")
    if placement == "v1.5" or kind == "D":
        return Fraction(1)
    return Fraction(math.ceil(height / stride) * math.ceil(width / stride), height * width)


def local_jacobian_rank(fn, x: torch.Tensor) -> int:
    """Rank (numpy SVD) of the Jacobian ``∂ vec fn(x) / ∂ vec x`` at the point ``x`` (float64, autograd)."""
    jac = torch.autograd.functional.jacobian(fn, x.to(DTYPE))
    jac = jac.reshape(-1, x.numel()).cpu().numpy()
    return int(np.linalg.matrix_rank(jac))


def expected_local_rank(kind: str, x: torch.Tensor) -> int:
    """Derived local rank at ``x`` ``(C, H, W)`` of three stride-2 downsamplers.

    ``'strided'`` (``x[:, ::2, ::2]``) and ``'avg'`` (2×2/2 average pool, ``ceil_mode``) are linear
    with one output per block: rank ``C⌈H/2⌉⌈W/2⌉``. ``'max'`` (3×3/2, padding 1) is locally a
    selection: each output copies its window's maximum, so the Jacobian's rows are one-hot and its
    rank is the number of *distinct* input positions selected, found here by scanning the
    windows in numpy. Overlapping windows often share their maximum, so the max pool's local
    rank is at most, and usually below, that of the linear downsamplers.
    """
    c, h, w = x.shape
    if kind in ("strided", "avg"):
        return c * math.ceil(h / 2) * math.ceil(w / 2)
    if kind != "max":
        raise ValueError(f"kind must be 'strided', 'avg' or 'max', got {kind!r}")
    arr = x.detach().cpu().numpy()
    chosen = set()
    for ch in range(c):
        for u in range(conv_output_size(h, 3, 2, 1)):
            for v in range(conv_output_size(w, 3, 2, 1)):
                r0, r1 = max(2 * u - 1, 0), min(2 * u + 2, h)
                c0, c1 = max(2 * v - 1, 0), min(2 * v + 2, w)
                window = arr[ch, r0:r1, c0:c1]
                i, j = np.unravel_index(int(np.argmax(window)), window.shape)
                chosen.add((ch, r0 + i, c0 + j))
    return len(chosen)


def shortcut_cost(kind: str, in_channels: int, out_channels: int, stride: int, size: int | Sequence[int],
                  everywhere: bool = False) -> dict:
    """Parameters and operations of one shortcut, from the formulas.

    With output positions ``P = ⌈H/s⌉⌈W/s⌉`` and ``k`` the pooling window:
    ``params = C_in·C_out`` for a projection (1×1 conv, no bias), ``bn_params = 2·C_out``,
    ``macs = C_in·C_out·P``, ``pool_reads = C_in·P·k²`` (window elements read by a pool,
    padding included); all zero for the identity and for option A.
    """
    from .conventions import as_int, as_tuple

    stride = as_int(stride, "stride")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    h, w = as_tuple(size, 2, "size")  # an int for both axes (convbook.conventions)
    if h < 1 or w < 1 or stride < 1:
        raise ValueError(f"size and stride must be >= 1, got size={size!r}, stride={stride}")
    p = math.ceil(h / stride) * math.ceil(w / stride)
    zero = {"params": 0, "bn_params": 0, "macs": 0, "pool_reads": 0}
    changes = in_channels != out_channels or stride != 1
    if kind == "A" or (kind != "C" and not changes):
        return zero
    cost = {"params": in_channels * out_channels, "bn_params": 2 * out_channels,
            "macs": in_channels * out_channels * p, "pool_reads": 0}
    if stride > 1 and kind in ("D", "max"):
        k = stride if kind == "D" else 2 * stride - 1
        cost["pool_reads"] = in_channels * p * k * k
    return cost


def resnet50_transition_costs(kind: str) -> list[dict]:
    """:func:`shortcut_cost` of option ``kind`` at ResNet-50's four stage transitions."""
    rows = []
    for stage, c_in, c_out, s, n, _ in RESNET50_TRANSITIONS:
        rows.append({"stage": stage, "in": c_in, "out": c_out, "stride": s, "size": n,
                     **shortcut_cost(kind, c_in, c_out, s, n)})
    return rows


# --------------------------------------------------------------------------------------
# The bottleneck block
# --------------------------------------------------------------------------------------


class Bottleneck(nn.Module):
    """``relu(shortcut(x) + bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))))``.

    ``conv1``: 1×1 ``C_in → m``; ``conv2``: 3×3 ``m → m``, padding 1; ``conv3``: 1×1 ``m → C_out``.
    ``placement='v1.5'`` (default; torchvision, ResNet-B/D) puts the stride ``s`` on the 3×3,
    ``'v1'`` (the original paper) on the first 1×1; both give the same shapes.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int, kind: str,
                 placement: str = "v1.5"):
        super().__init__()
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        s1, s2 = (stride, 1) if placement == "v1" else (1, stride)
        self.placement = placement
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 1, stride=s1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.conv2 = nn.Conv2d(mid_channels, mid_channels, 3, stride=s2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_channels)
        self.conv3, self.bn3 = nn.Conv2d(mid_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        self.shortcut = shortcut(kind, in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.relu(self.bn1(self.conv1(x)))
        z = F.relu(self.bn2(self.conv2(z)))
        return F.relu(self.shortcut(x) + self.bn3(self.conv3(z)))


def bottleneck_block(in_channels: int = 256, mid_channels: int = 128, out_channels: int = 512,
                     stride: int = 2, kind: str = "B", placement: str = "v1.5") -> Bottleneck:
    """A ResNet bottleneck block whose shortcut is option ``kind`` and whose stride sits where
    ``placement`` says (:data:`PLACEMENTS`; default: conv3_x's first block, torchvision layout)."""
    for name, v in (("in_channels", in_channels), ("mid_channels", mid_channels),
                    ("out_channels", out_channels), ("stride", stride)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    return Bottleneck(in_channels, mid_channels, out_channels, stride, kind, placement)


def bottleneck_shapes(in_channels: int, mid_channels: int, out_channels: int, stride: int,
                      size: int) -> dict[str, tuple[int, int, int]]:
    """Derived ``(C, H, W)`` after each layer of :class:`Bottleneck` for an input ``(C_in, size, size)``.

    1×1 convolutions keep the size; the 3×3/``s``, pad 1 gives ``⌊(n + 2 - 3)/s⌋ + 1``; the
    shortcut must give the same.
    """
    n2 = conv_output_size(size, 3, stride, 1)
    return {"conv1": (mid_channels, size, size), "conv2": (mid_channels, n2, n2),
            "conv3": (out_channels, n2, n2), "shortcut": (out_channels, n2, n2), "out": (out_channels, n2, n2)}


def plot_gradient_coverage(height: int = 8, width: int = 8, axes=None):
    """Per-kind map of the input positions (one channel) that receive gradient, stride 2."""
    import matplotlib.pyplot as plt

    kinds = ("A", "B", "D", "max")
    if axes is None:
        _, axes = plt.subplots(1, len(kinds), figsize=(3 * len(kinds), 3.2))
    for ax, kind in zip(axes, kinds):
        torch.manual_seed(0)
        mod = shortcut(kind, 2, 4, 2)
        mask = gradient_mask(mod, (1, 2, height, width), seed=1)[0, 0]
        ax.imshow(mask.numpy(), cmap="Greens", vmin=0, vmax=1)
        mark_uniform(ax, mask.numpy(), "every input reached")
        cov = gradient_coverage(mod, (1, 2, height, width), seed=1)
        ax.set_title(f"{kind}: coverage {cov}")
        ax.set_xticks([])
        ax.set_yticks([])
    return axes


# --------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------


@claim(
    "shortcut.gradient-coverage",
    title="Strided 1×1 shortcuts send gradient to a quarter of the input; average pooling to all of it",
    chapter=8,
    statement="For stride s ∈ {2, 3} and every H × W input, options A, B and C give a non-zero gradient to exactly the ⌈H/s⌉⌈W/s⌉ input positions (s·u, s·v) of each channel — a quarter of the input for s = 2 and even sizes — option D (s×s average pool) to all of them, and a (2s−1)×(2s−1)/s max pool only to its windows' maxima, at most ⌈H/s⌉⌈W/s⌉ per channel.",
    parameters=("stride", "per-axis sizes"),
    reference="autograd (backward of random cotangents through the PyTorch modules); max-pool indices from F.max_pool2d",
)
def check_gradient_coverage(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    gen = generator(801)
    for case in range(14):
        c_in = randint(1, 4, gen)
        c_out = c_in * randint(1, 2, gen)
        s = 2 + case % 2
        h, w = randint(1, 9, gen), randint(1, 9, gen)
        if case < 4:  # the headline: stride 2, even sizes that differ between the axes
            s, h, w = 2, 2 * randint(2, 5, gen), 2 * randint(2, 5, gen)
        shape = (2, c_in, h, w)
        for kind in KINDS:
            torch.manual_seed(case)
            mod = shortcut(kind, c_in, c_out, s).to(device)
            mask = gradient_mask(mod, shape, seed=case)
            cov = Fraction(int(mask.sum()), mask.numel())
            t.exact(cov == gradient_coverage(mod, shape, seed=case), "coverage = mask fraction")
            bound = Fraction(math.ceil(h / s) * math.ceil(w / s), h * w)
            if kind == "max":
                # independent: the window maxima reported by PyTorch's own max pool
                x = randn(*shape, gen=generator(case), device=device).to(DTYPE)
                _, idx = F.max_pool2d(x, 2 * s - 1, s, s - 1, return_indices=True)
                argmax = torch.zeros(shape[0], c_in, h * w, dtype=torch.bool)
                argmax.scatter_(2, idx.flatten(2).cpu(), True)
                t.exact(torch.equal(mask, argmax.reshape(shape)), f"max: mask = argmax positions {h}x{w} s={s}")
                t.exact(cov <= bound, f"max coverage {cov} <= {bound}")
                continue
            t.exact(cov == expected_coverage(kind, s, h, w) == (1 if kind == "D" else bound),
                    f"{kind}: coverage {cov} vs derived {expected_coverage(kind, s, h, w)}, {h}x{w} s={s}")
            if kind != "D":
                grid = torch.zeros(h, w, dtype=torch.bool)
                grid[::s, ::s] = True
                t.exact(torch.equal(mask, grid.expand(shape)), f"{kind}: covered = positions (s·u, s·v)")
    return t.verdict("backward of random cotangents through each shortcut vs derived masks and max-pool indices",
                     case_unit="comparisons")


@claim(
    "shortcut.rank",
    title="Rank of each shortcut as a linear map",
    chapter=8,
    statement="In eval mode, for every C_in, C_out, stride s and H × W input, with P = ⌈H/s⌉⌈W/s⌉ output positions, option A has rank C_in·P and options B, C and D rank min(C_in, C_out)·P for random weights: with s = 2 on an input of even height and width every option keeps at most a quarter of the input's dimensions, average pooling included (with an odd size, ⌈H/2⌉⌈W/2⌉ > HW/4).",
    parameters=("stride", "channels", "per-axis sizes"),
    reference="rank (float64 SVD) of the autograd Jacobian of the PyTorch modules",
)
def check_rank(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    gen = generator(802)
    n_even = n_odd_over = 0
    for case in range(12):
        c_in, c_out = randint(1, 4, gen), randint(1, 6, gen)
        s = 1 + case % 3
        h, w = randint(1, 6, gen), randint(1, 6, gen)
        if case in (1, 4):  # stride 2 on even sizes that differ between the axes
            h, w = 2 * randint(1, 3, gen), 2 * randint(1, 3, gen)
        for kind in ("A", "B", "C", "D"):
            if kind == "A" and c_out < c_in:
                continue
            torch.manual_seed(100 + case)
            mod = shortcut(kind, c_in, c_out, s).to(device)
            _randomize_bn(mod, gen)
            r = linear_map_rank(mod, (c_in, h, w))
            t.exact(r == shortcut_rank(kind, c_in, c_out, s, h, w),
                    f"{kind}: rank {r} vs {shortcut_rank(kind, c_in, c_out, s, h, w)} ({c_in}->{c_out}, s={s}, {h}x{w})")
            if s == 2:
                quarter = 4 * r <= c_in * h * w
                t.exact(quarter if h % 2 == 0 and w % 2 == 0 else True,
                        f"{kind}: rank {r} <= a quarter of {c_in * h * w} on an even {h}x{w}")
                n_even += h % 2 == 0 and w % 2 == 0
                n_odd_over += not quarter
    t.exact(n_even > 0, "at least one stride-2 case on an even-sized input")
    t.note(f"stride 2: {n_even} shortcuts on even sizes, {n_odd_over} on odd sizes above a quarter")
    return t.verdict("rank of the Jacobian (float64 SVD) vs derived rank, random sizes", case_unit="shortcuts")


@claim(
    "shortcut.avgpool-not-invertible",
    title="Average pooling uses every input but keeps only the block means",
    chapter=8,
    statement="A 2×2/2 average pool on (C, H, W) with H, W even has rank C·H·W/4; its matrix M satisfies 4MᵀM = Π, the orthogonal projection onto signals constant on each 2×2 block: it keeps exactly the C·H·W/4 block means and discards the 3·C·H·W/4-dimensional within-block variation — inputs that differ by a within-block pattern with zero block sums give identical outputs.",
    parameters=("channels", "per-axis sizes"),
    reference="autograd Jacobian of nn.AvgPool2d; Π built as a Kronecker product, exact in binary floating point",
)
def check_avgpool_not_invertible(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    gen = generator(803)
    for case in range(8):
        c, h, w = randint(1, 3, gen), 2 * randint(1, 4, gen), 2 * randint(1, 4, gen)
        pool = nn.AvgPool2d(2, 2).to(device)
        m = linear_map_matrix(pool, (c, h, w))
        t.exact(int(torch.linalg.matrix_rank(m)) == c * h * w // 4, f"rank {c}x{h}x{w}")
        gram = 4 * m.T @ m
        proj = block_constant_projection(c, h, w).to(device)
        t.exact(torch.equal(gram, proj), f"4 MᵀM = Π on {c}x{h}x{w}")
        t.exact(torch.equal(proj @ proj, proj) and torch.equal(proj, proj.T), "Π is an orthogonal projection")
        # integers keep the arithmetic exact: x and x + detail pattern pool to the same output
        x = torch.randint(-8, 9, (1, c, h, w), generator=gen).to(DTYPE).to(device)
        signs = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=DTYPE, device=device)  # one Haar detail
        amp = torch.randint(-4, 5, (1, c, h // 2, w // 2), generator=gen).to(DTYPE).to(device)
        detail = amp.repeat_interleave(2, -2).repeat_interleave(2, -1) * signs.repeat(h // 2, w // 2)
        t.exact(bool((detail != 0).any()) or bool((amp == 0).all()), "non-trivial detail")
        t.exact(torch.equal(pool(x), pool(x + detail)), "different inputs, same output")
        kept = block_mean_projection(x)
        t.exact(torch.equal(pool(kept), pool(x)) and torch.equal(pool(x - kept), torch.zeros_like(pool(x))),
                "output determined by the block means alone")
        t.exact(proj.shape[0] == x.numel() and torch.equal(kept.flatten(), proj @ x.flatten()),
                "block_mean_projection = Π")
        t.exact(gradient_coverage(pool, (1, c, h, w)) == 1, "every input used")
    return t.verdict("Jacobian rank, exact projection identities and collisions on integer inputs",
                     case_unit="comparisons")


@claim(
    "shortcut.cost-resnet50",
    title="Parameters and multiply-adds of each shortcut at ResNet-50's stage transitions",
    chapter=8,
    statement="At ResNet-50's four stage transitions, options B, C and D cost C_in·C_out weights and C_in·C_out·P multiply-adds each (2,768,896 weights in all), option A nothing; option D adds only a 2×2 average pool.",
    reference="weights of the built modules and multiply-adds counted by forward hooks",
)
def check_cost_resnet50(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    totals = {}
    for kind in KINDS:
        rows = resnet50_transition_costs(kind)
        for row, (_, c_in, c_out, s, n, _) in zip(rows, RESNET50_TRANSITIONS):
            torch.manual_seed(804)
            mod = shortcut(kind, c_in, c_out, s).to(device).eval()
            counted = _count_ops(mod, (1, c_in, n, n))
            t.exact(counted == {k: row[k] for k in counted}, f"{kind} {row['stage']}: {counted} vs {row}")
        totals[kind] = sum(r["params"] for r in rows)
    t.exact(totals["B"] == totals["C"] == totals["D"] == totals["max"] == 2_768_896 and totals["A"] == 0, f"{totals}")
    return t.verdict("formulas vs weights and per-layer multiply-adds counted by hooks in a forward pass of the built modules")


@claim(
    "shortcut.bottleneck-shapes",
    title="The bottleneck block's shapes across a stage transition",
    chapter=8,
    statement="A bottleneck block from (256, 56, 56) with width 128 and stride 2 on its 3×3 gives (128, 56, 56), (128, 28, 28), (512, 28, 28) after its three convolutions, and every shortcut option gives (512, 28, 28) to add to it; likewise at all four ResNet-50 transitions.",
    reference="forward hooks on the built PyTorch blocks",
)
def check_bottleneck_shapes(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    # Real float32 forward passes (shapes do not depend on the dtype). Meta tensors would be
    # cheaper per block, but BatchNorm on meta imports torch._dynamo: seconds, once per process.
    gen = generator(805)
    torch.manual_seed(805)
    for _, c_in, c_out, s, n, mid in RESNET50_TRANSITIONS:
        want = bottleneck_shapes(c_in, mid, c_out, s, n)
        x = randn(1, c_in, n, n, gen=gen, device=device).float()
        for kind in KINDS:
            block = bottleneck_block(c_in, mid, c_out, s, kind).to(device).eval()
            seen = _record_shapes(block, x)
            t.exact(seen == want, f"{kind} from ({c_in},{n},{n}): {seen} vs {want}")
    return t.verdict("forward-hook shapes of built blocks vs derived shapes", case_unit="blocks")


@claim(
    "shortcut.block-coverage",
    title="Gradient coverage of a whole bottleneck block: where the stride sits decides it",
    chapter=8,
    statement="For a bottleneck block with stride s ∈ {2, 3} on an H × W input: with the stride on the first 1×1 (v1, He et al. 2016) the block gives a non-zero gradient to exactly ⌈H/s⌉⌈W/s⌉/(HW) of its input (1/4 for s = 2 and even sizes) with option A or B shortcuts and to all of it with option D; with the stride on the 3×3 (v1.5/torchvision, ResNet-B, and with option D ResNet-D) to all of it, whatever the shortcut.",
    parameters=("placement", "shortcut option", "per-axis sizes"),
    reference="autograd through the real PyTorch blocks (union over random inputs and cotangents)",
)
def check_block_coverage(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    gen = generator(806)
    for case in range(8):
        c_in, mid = randint(1, 3, gen), randint(6, 10, gen)
        c_out = c_in * randint(1, 2, gen)
        s = 2 if case % 4 else 3
        h, w = randint(1, 9, gen), randint(1, 9, gen)
        if case < 2:  # the headline: stride 2, even sizes that differ between the axes
            s, h, w = 2, 2 * randint(2, 4, gen), 2 * randint(2, 4, gen)
        for placement in PLACEMENTS:
            for kind in ("A", "B", "D"):
                torch.manual_seed(900 + case)
                block = bottleneck_block(c_in, mid, c_out, s, kind, placement).to(device)
                _activate_relus(block)
                mask = gradient_mask(block, (2, c_in, h, w), seed=100 * case)
                cov = Fraction(int(mask.sum()), mask.numel())
                want = expected_block_coverage(placement, kind, s, h, w)
                t.exact(cov == want, f"{placement} {kind}: coverage {cov} vs derived {want}, {c_in}->{c_out}, s={s}, {h}x{w}")
    t.note("BN shifts make every ReLU active, so the measured coverage is the block's structural one "
           "(a dead ReLU can only remove coverage)")
    return t.verdict("backward through real bottleneck blocks, each stride placement and shortcut option",
                     case_unit="blocks")


@claim(
    "shortcut.option-a-maxpool",
    title="Option A's shortcut is a 1×1 max pool with stride s, then zero channels",
    chapter=8,
    statement="For every stride s >= 1, C_out >= C_in and H × W input, option A's shortcut equals nn.MaxPool2d(kernel_size=1, stride=s) followed by C_out − C_in channels of zeros: a 1×1 'max' over one sample is that sample, so option A is strided subsampling, not a pooling that looks at a neighbourhood.",
    parameters=("stride", "channels", "per-axis sizes"),
    reference="PyTorch nn.MaxPool2d(kernel_size=1, stride=s) and zero channels appended with torch.cat",
)
def check_option_a_maxpool(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    gen = generator(807)
    for case in range(40):
        c_in = randint(1, 4, gen)
        c_out = c_in + randint(0, 3, gen)
        s = randint(1, 4, gen)
        h, w = randint(1, 10, gen), randint(1, 10, gen)
        x = randn(randint(1, 2, gen), c_in, h, w, gen=gen, device=device)
        ref = nn.MaxPool2d(kernel_size=1, stride=s)(x)
        ref = torch.cat([ref, ref.new_zeros(ref.shape[0], c_out - c_in, *ref.shape[2:])], dim=1)
        got = shortcut("A", c_in, c_out, s)(x)
        t.exact(tuple(got.shape) == tuple(ref.shape) and torch.equal(got, ref),
                f"A {c_in}->{c_out}, s={s}, {h}x{w}: shapes {tuple(got.shape)} vs {tuple(ref.shape)}")
    return t.verdict("option A vs MaxPool2d(1, s) + zero channels on random inputs, exact", case_unit="inputs")


@claim(
    "shortcut.maxpool-local-rank",
    title="A max pool keeps fewer local dimensions than an average pool",
    chapter=8,
    statement="At a random input of shape (C, H, W), the Jacobian of a 3×3/2 max pool with padding 1 has rank equal to the number of distinct window maxima — at most C⌈H/2⌉⌈W/2⌉ and usually fewer, because overlapping windows share maxima — while a 2×2/2 average pool and the strided identity x[:, ::2, ::2] have rank exactly C⌈H/2⌉⌈W/2⌉: locally, the max pool keeps no more information than the linear downsamplers, and usually less.",
    parameters=("channels", "per-axis sizes"),
    reference="autograd Jacobians of the PyTorch pooling functions, numpy matrix_rank",
)
def check_maxpool_local_rank(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    gen = generator(808)
    below = 0
    for case in range(16):
        c, h, w = randint(1, 4, gen), randint(1, 10, gen), randint(1, 10, gen)
        x = randn(c, h, w, gen=gen, device=device)
        fns = {
            "max": lambda z: F.max_pool2d(z, 3, 2, 1),
            "avg": lambda z: F.avg_pool2d(z, 2, 2, ceil_mode=True, count_include_pad=False),
            "strided": lambda z: z[:, ::2, ::2],
        }
        for kind, fn in fns.items():
            r = local_jacobian_rank(fn, x)
            want = expected_local_rank(kind, x)
            t.exact(r == want, f"{kind}: rank {r} vs derived {want} at ({c}, {h}, {w})")
            if kind == "max":
                t.exact(r <= c * math.ceil(h / 2) * math.ceil(w / 2), f"max rank {r} above the bound")
                below += r < c * math.ceil(h / 2) * math.ceil(w / 2)
    t.note(f"max pool below the linear downsamplers' rank at {below} of 16 random inputs")
    return t.verdict("rank of autograd Jacobians (numpy) vs derived local ranks at random inputs", case_unit="comparisons")


# --------------------------------------------------------------------------------------
# Private helpers
# --------------------------------------------------------------------------------------


def _device_of(module: nn.Module) -> torch.device:
    for p in itertools.chain(module.parameters(), module.buffers()):
        return p.device
    return torch.device("cpu")


def _randomize_bn(module: nn.Module, gen: torch.Generator) -> None:
    """Random eval-mode BN scale and statistics, so ranks are tested away from γ = 1, σ² = 1."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(1 + 0.3 * torch.rand(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.running_mean.copy_(torch.randn(n, generator=gen))


def _activate_relus(block: nn.Module) -> None:
    """Eval-mode BN shifts of +10 after every conv of the residual branch: at inputs of order 1
    every ReLU of the block is then active, and its Jacobian is that of its linear part."""
    with torch.no_grad():
        for name in ("bn1", "bn2", "bn3"):
            getattr(block, name).bias.fill_(10.0)


def _count_ops(module: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """Weights, BN parameters, conv multiply-adds and pool reads, counted with forward hooks."""
    counts = {"params": 0, "bn_params": 0, "macs": 0, "pool_reads": 0}
    hooks = []

    def on_conv(m, inp, out):
        counts["macs"] += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def on_pool(m, inp, out):
        k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
        counts["pool_reads"] += out[0].numel() * k * k

    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            counts["params"] += m.weight.numel()
            hooks.append(m.register_forward_hook(on_conv))
        elif isinstance(m, nn.BatchNorm2d):
            counts["bn_params"] += m.weight.numel() + m.bias.numel()
        elif isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
            hooks.append(m.register_forward_hook(on_pool))
    with torch.no_grad():
        module(torch.zeros(*input_shape, device=_device_of(module)))
    for h in hooks:
        h.remove()
    return counts


def _record_shapes(block: Bottleneck, x: torch.Tensor) -> dict:
    seen: dict[str, tuple[int, int, int]] = {}
    hooks = [getattr(block, name).register_forward_hook(
        lambda m, i, o, name=name: seen.__setitem__(name, tuple(o.shape[1:])))
        for name in ("conv1", "conv2", "conv3", "shortcut")]
    with torch.no_grad():
        y = block(x)
    for h in hooks:
        h.remove()
    seen["out"] = tuple(y.shape[1:])
    return seen
