"""Chapter 14: Inception — multi-branch blocks, 1×1 reductions, concatenation, factorised kernels.

An Inception block (Szegedy et al. 2015) applies four branches to the same input and concatenates
their outputs along the channel axis:

    1×1 conv (n1)  |  1×1 (r3) → 3×3 (n3)  |  1×1 (r5) → 5×5 (n5)  |  3×3/1 max pool → 1×1 (pp)

With "same" padding every branch keeps the H × W grid, so the output has n1 + n3 + n5 + pp channels.
The 1×1 *reductions* r3, r5 shrink the channels before the expensive k×k convolutions; per output
pixel the block costs

    MACs/pixel = C·n1 + (C·r3 + 9·r3·n3) + (C·r5 + 25·r5·n5) + C·pp                      (reduced)
    MACs/pixel = C·n1 + 9·C·n3 + 25·C·n5                                                  (naive)

(the naive block of the paper's Fig. 2a: no reductions, the pool branch concatenated as it is).

Inception-v3 (Szegedy et al. 2016) factorises an n×n convolution into a 1×n followed by an n×1
convolution through C_mid channels. Without bias the composition *is* an n×n convolution with weight

    W[o, i, a, b] = Σ_m V[o, m, a] · H[m, i, b]          (V: n×1 weights, H: 1×n weights)

at every output pixel, zero-padded border included; a bias on the first (1×n) convolution breaks
this only in a border band of ⌊n/2⌋ rows, where the second convolution reads zero padding instead
of the bias. Reshaped as a (C_out·n) × (C_in·n) matrix, W has rank at most C_mid: the factorised
layer is a strict, low-rank subset of the n×n layers whenever C_mid < min(C_out, C_in)·n.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .claims import Tally, claim
from .numerics import check_device, generator, randint, randn

__all__ = [
    "InceptionWidths",
    "GOOGLENET_BLOCKS",
    "InceptionBlock",
    "inception_macs",
    "inception_params",
    "merged_first_layer",
    "factorised_weight",
    "factorised_conv",
    "factorised_border_rows",
    "googlenet_cost_table",
    "factorised_example",
    "plot_block_costs",
]


@dataclass(frozen=True)
class InceptionWidths:
    """Channel widths of one Inception block, in the order of GoogLeNet's Table 1."""

    n1: int
    r3: int
    n3: int
    r5: int
    n5: int
    pp: int

    def __post_init__(self) -> None:
        for name in ("n1", "r3", "n3", "r5", "n5", "pp"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"InceptionWidths.{name} must be an int ≥ 1, got {value!r}")

    @property
    def out_channels(self) -> int:
        return self.n1 + self.n3 + self.n5 + self.pp


#: GoogLeNet's nine Inception blocks (Szegedy et al. 2015, Table 1): name -> (input channels, grid size, widths).
GOOGLENET_BLOCKS: dict[str, tuple[int, int, InceptionWidths]] = {
    "3a": (192, 28, InceptionWidths(64, 96, 128, 16, 32, 32)),
    "3b": (256, 28, InceptionWidths(128, 128, 192, 32, 96, 64)),
    "4a": (480, 14, InceptionWidths(192, 96, 208, 16, 48, 64)),
    "4b": (512, 14, InceptionWidths(160, 112, 224, 24, 64, 64)),
    "4c": (512, 14, InceptionWidths(128, 128, 256, 24, 64, 64)),
    "4d": (512, 14, InceptionWidths(112, 144, 288, 32, 64, 64)),
    "4e": (528, 14, InceptionWidths(256, 160, 320, 32, 128, 128)),
    "5a": (832, 7, InceptionWidths(256, 160, 320, 32, 128, 128)),
    "5b": (832, 7, InceptionWidths(384, 192, 384, 48, 128, 128)),
}


class InceptionBlock(nn.Module):
    """GoogLeNet's Inception block (with reductions) or the naive block (``reduced=False``).

    Every convolution is followed by a ReLU, as in the paper (GoogLeNet has no batch norm).
    The naive block has no 1×1 reductions and no pool projection: its pool branch passes the
    C input channels through, so it outputs n1 + n3 + n5 + C channels.
    """

    def __init__(self, in_channels: int, widths: InceptionWidths, *, reduced: bool = True, bias: bool = True):
        super().__init__()
        c, w = _positive(in_channels, "in_channels"), widths
        self.reduced = reduced
        relu = lambda: nn.ReLU()  # noqa: E731
        self.branch1 = nn.Sequential(nn.Conv2d(c, w.n1, 1, bias=bias), relu())
        if reduced:
            self.branch3 = nn.Sequential(nn.Conv2d(c, w.r3, 1, bias=bias), relu(), nn.Conv2d(w.r3, w.n3, 3, padding=1, bias=bias), relu())
            self.branch5 = nn.Sequential(nn.Conv2d(c, w.r5, 1, bias=bias), relu(), nn.Conv2d(w.r5, w.n5, 5, padding=2, bias=bias), relu())
            self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(c, w.pp, 1, bias=bias), relu())
        else:
            self.branch3 = nn.Sequential(nn.Conv2d(c, w.n3, 3, padding=1, bias=bias), relu())
            self.branch5 = nn.Sequential(nn.Conv2d(c, w.n5, 5, padding=2, bias=bias), relu())
            self.branch_pool = nn.MaxPool2d(3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], dim=1)


def inception_macs(in_channels: int, height: int, width: int, widths: InceptionWidths, *, reduced: bool = True) -> int:
    """Multiply-accumulates of one Inception block on a ``height × width`` grid (module docstring):
    ``H·W·(C·n1 + C·r3 + 9·r3·n3 + C·r5 + 25·r5·n5 + C·pp)`` reduced, ``H·W·(C·n1 + 9·C·n3 + 25·C·n5)`` naive."""
    c, h, wd, w = _positive(in_channels, "in_channels"), _positive(height, "height"), _positive(width, "width"), widths
    if reduced:
        per_pixel = c * w.n1 + c * w.r3 + 9 * w.r3 * w.n3 + c * w.r5 + 25 * w.r5 * w.n5 + c * w.pp
    else:
        per_pixel = c * w.n1 + 9 * c * w.n3 + 25 * c * w.n5
    return h * wd * per_pixel


def inception_params(in_channels: int, widths: InceptionWidths, *, reduced: bool = True, bias: bool = False) -> int:
    """Weights of one Inception block (plus one bias per output channel of every conv with ``bias=True``)."""
    c, w = _positive(in_channels, "in_channels"), widths
    if reduced:
        weights = c * w.n1 + c * w.r3 + 9 * w.r3 * w.n3 + c * w.r5 + 25 * w.r5 * w.n5 + c * w.pp
        biases = w.n1 + w.r3 + w.n3 + w.r5 + w.n5 + w.pp
    else:
        weights = c * w.n1 + 9 * c * w.n3 + 25 * c * w.n5
        biases = w.n1 + w.n3 + w.n5
    return weights + (biases if bias else 0)


def merged_first_layer(convs: Sequence[nn.Conv2d]) -> nn.Conv2d:
    """One 1×1 convolution equal to several 1×1 convolutions reading the same input, concatenated:
    its weight (and bias) is theirs stacked along the output-channel axis."""
    convs = list(convs)
    if not convs:
        raise ValueError("merged_first_layer needs at least one convolution")
    c_in = convs[0].in_channels
    for conv in convs:
        if not isinstance(conv, nn.Conv2d) or conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.groups != 1:
            raise ValueError(f"merged_first_layer merges dense 1×1, stride-1 Conv2d layers only, got {conv}")
        if conv.in_channels != c_in:
            raise ValueError(f"every convolution must read the same {c_in} input channels, got {conv.in_channels}")
    has_bias = [conv.bias is not None for conv in convs]
    if any(has_bias) and not all(has_bias):
        raise ValueError("either every convolution has a bias or none has")
    first = convs[0]
    merged = nn.Conv2d(c_in, sum(conv.out_channels for conv in convs), 1, bias=all(has_bias),
                       dtype=first.weight.dtype, device=first.weight.device)
    with torch.no_grad():
        merged.weight.copy_(torch.cat([conv.weight for conv in convs], dim=0))
        if merged.bias is not None:
            merged.bias.copy_(torch.cat([conv.bias for conv in convs], dim=0))
    return merged


def factorised_weight(vertical: torch.Tensor, horizontal: torch.Tensor) -> torch.Tensor:
    """The n×n weight of a 1×n convolution (``horizontal``, shape ``(C_mid, C_in, 1, n)``) followed by an
    n×1 convolution (``vertical``, shape ``(C_out, C_mid, n, 1)``): ``W[o,i,a,b] = Σ_m V[o,m,a]·H[m,i,b]``."""
    if vertical.dim() != 4 or horizontal.dim() != 4 or vertical.shape[3] != 1 or horizontal.shape[2] != 1:
        raise ValueError(f"need vertical (C_out, C_mid, n, 1) and horizontal (C_mid, C_in, 1, n) weights, "
                         f"got {tuple(vertical.shape)} and {tuple(horizontal.shape)}")
    if vertical.shape[1] != horizontal.shape[0]:
        raise ValueError(f"the middle widths differ: {vertical.shape[1]} vs {horizontal.shape[0]}")
    return torch.einsum("oma,mib->oiab", vertical[..., 0], horizontal[:, :, 0, :])


def factorised_conv(x: torch.Tensor, vertical: torch.Tensor, horizontal: torch.Tensor,
                    bias_h: torch.Tensor | None = None, bias_v: torch.Tensor | None = None) -> torch.Tensor:
    """1×n convolution (padding (0, n_h//2)) then n×1 convolution (padding (n_v//2, 0)), as Inception-v3."""
    n_h, n_v = horizontal.shape[3], vertical.shape[2]
    mid = F.conv2d(x, horizontal, bias_h, padding=(0, n_h // 2))
    return F.conv2d(mid, vertical, bias_v, padding=(n_v // 2, 0))


def factorised_border_rows(height: int, n: int) -> list[int]:
    """Output rows where a bias on the 1×n convolution makes the factorised pair differ from the n×n
    convolution with the composed weight and bias: the ⌊n/2⌋ rows at each edge (all rows if they overlap)."""
    h, n = _positive(height, "height"), _positive(n, "n")
    band = n // 2
    return sorted({r for r in range(h) if r < band or r >= h - band})


def factorised_example(n: int = 7, c_in: int = 8, c_mid: int = 4, c_out: int = 8, size: int = 17, seed: int = 14) -> dict:
    """One seeded factorised pair on a ``size × size`` input: whether the bias-free pair equals the composed
    n×n convolution at every pixel (to 1e-12), the rank of its ``(C_out·n) × (C_in·n)`` matrix, and the
    multiply-adds per pixel of the pair, ``n·C_mid·(C_in + C_out)``, against ``n²·C_in·C_out``."""
    import numpy as np

    gen = generator(seed)
    horizontal, vertical = randn(c_mid, c_in, 1, n, gen=gen), randn(c_out, c_mid, n, 1, gen=gen)
    x = randn(1, c_in, size, size, gen=gen)
    weight = factorised_weight(vertical, horizontal)
    equal = bool(torch.allclose(F.conv2d(x, weight, padding=n // 2), factorised_conv(x, vertical, horizontal),
                                rtol=0, atol=1e-12))
    rank = int(np.linalg.matrix_rank(weight.permute(0, 2, 1, 3).reshape(c_out * n, c_in * n).numpy()))
    return {"n": n, "c_mid": c_mid, "equal": equal, "rank": rank, "shape": (c_out * n, c_in * n),
            "macs_factorised": n * c_mid * (c_in + c_out), "macs_full": n * n * c_in * c_out,
            "band_rows": factorised_border_rows(size, n)}


def googlenet_cost_table() -> list[dict]:
    """Per GoogLeNet Inception block: input channels, grid, weights and multiply-adds with and without reductions."""
    rows = []
    for name, (c, size, widths) in GOOGLENET_BLOCKS.items():
        reduced, naive = inception_macs(c, size, size, widths), inception_macs(c, size, size, widths, reduced=False)
        rows.append({"block": name, "in": c, "grid": size, "out": widths.out_channels,
                     "out_naive": widths.n1 + widths.n3 + widths.n5 + c,
                     "weights": inception_params(c, widths), "weights_naive": inception_params(c, widths, reduced=False),
                     "macs": reduced, "macs_naive": naive, "ratio": naive / reduced})
    return rows


def plot_block_costs(ax=None):
    """Bar chart: multiply-adds of GoogLeNet's nine Inception blocks, naive vs with 1×1 reductions."""
    import matplotlib.pyplot as plt
    import numpy as np

    rows = googlenet_cost_table()
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.4))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["macs_naive"] / 1e6 for r in rows], 0.4, label="naive (no reductions)", color="#c44e52")
    ax.bar(x + 0.2, [r["macs"] / 1e6 for r in rows], 0.4, label="with 1×1 reductions", color="#4c72b0")
    ax.set_xticks(x, [f"inception({r['block']})" for r in rows], rotation=30, ha="right", fontsize=9)
    ax.set_ylabel("multiply-adds (millions)", fontsize=10)
    ax.set_title("GoogLeNet's Inception blocks: cost per image", fontsize=11)
    ax.legend(fontsize=9, loc="upper right", frameon=False)
    ax.tick_params(axis="y", labelsize=9)
    return ax


def _positive(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int ≥ 1, got {value!r}")
    return value


def _random_widths(gen: torch.Generator, top: int = 6) -> InceptionWidths:
    return InceptionWidths(*(randint(1, top, gen) for _ in range(6)))


# --------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------


@claim(
    "inception.block-cost",
    title="The cost of an Inception block, with and without 1×1 reductions",
    chapter=14,
    statement=("For every input width C ≥ 1, grid H × W and branch widths n1, r3, n3, r5, n5, pp ≥ 1, an Inception block costs "
               "H·W·(C·n1 + C·r3 + 9·r3·n3 + C·r5 + 25·r5·n5 + C·pp) multiply-adds, and the naive block without reductions "
               "H·W·(C·n1 + 9·C·n3 + 25·C·n5)."),
    parameters=("branch widths", "grid size", "reductions"),
    reference="torch.utils.flop_counter.FlopCounterMode on the PyTorch modules",
)
def check_block_cost(device: str = "cpu"):
    from torch.utils.flop_counter import FlopCounterMode

    device = check_device(device)
    t = Tally()
    gen = generator(1401)
    cases = [(192, 28, 28, GOOGLENET_BLOCKS["3a"][2])]
    for _ in range(20):
        cases.append((randint(1, 12, gen), randint(1, 9, gen), randint(1, 9, gen), _random_widths(gen)))
    for c, h, w, widths in cases:
        for reduced in (True, False):
            block = InceptionBlock(c, widths, reduced=reduced).to(device)
            x = torch.zeros(1, c, h, w, device=device)
            with FlopCounterMode(display=False) as counter:
                block(x)
            measured = counter.get_total_flops() // 2  # FlopCounterMode counts 2 FLOPs per multiply-add
            t.exact(inception_macs(c, h, w, widths, reduced=reduced) == measured,
                    f"C={c} {h}×{w} {widths} reduced={reduced}: formula vs FlopCounterMode {measured}")
    return t.verdict("GoogLeNet's inception(3a) and 20 random blocks, reduced and naive, vs FlopCounterMode",
                     case_unit="blocks")


@claim(
    "inception.concat-one-conv",
    title="The block's 1×1 convolutions that read the input are one convolution",
    chapter=14,
    statement=("For any number of 1×1 convolutions of any widths reading the same C-channel input, with or without bias, "
               "concatenating their outputs equals one 1×1 convolution whose weight and bias are theirs stacked along the "
               "output channels (an Inception block's n1, r3 and r5 convolutions are one layer of width n1 + r3 + r5)."),
    parameters=("branch widths", "bias"),
    reference="PyTorch F.conv2d of each branch, concatenated",
)
def check_concat_one_conv(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(1402)
    for case in range(30):
        c = randint(1, 8, gen)
        bias = case % 2 == 0
        convs = [nn.Conv2d(c, randint(1, 6, gen), 1, bias=bias, dtype=torch.float64).to(device)
                 for _ in range(randint(1, 4, gen))]
        for conv in convs:
            with torch.no_grad():
                conv.weight.copy_(randn(*conv.weight.shape, gen=gen, device=device))
                if conv.bias is not None:
                    conv.bias.copy_(randn(*conv.bias.shape, gen=gen, device=device))
        x = randn(2, c, randint(1, 6, gen), randint(1, 6, gen), gen=gen, device=device)
        expected = torch.cat([F.conv2d(x, conv.weight, conv.bias) for conv in convs], dim=1)
        t.close(merged_first_layer(convs)(x), expected, f"{len(convs)} branches, C={c}, bias={bias}")
    return t.verdict("30 random sets of 1×1 branches vs F.conv2d per branch, concatenated", dtype="float64")


@claim(
    "inception.factorised-nxn",
    title="1×n then n×1 is an n×n convolution of rank at most C_mid",
    chapter=14,
    statement=("For every odd n ≥ 1 and widths C_in, C_mid, C_out ≥ 1, a bias-free 1×n convolution (padding (0, ⌊n/2⌋)) "
               "followed by an n×1 convolution (padding (⌊n/2⌋, 0)) equals, at every output pixel, the n×n convolution "
               "(padding ⌊n/2⌋) with weight W[o,i,a,b] = Σ_m V[o,m,a]·H[m,i,b], whose (C_out·n) × (C_in·n) matrix has rank "
               "≤ C_mid; with a bias on the 1×n convolution the two agree exactly outside the ⌊n/2⌋ rows at the top and "
               "bottom edges and differ inside them."),
    parameters=("kernel size n", "widths", "first bias"),
    reference="PyTorch F.conv2d of the two-layer stack; numpy matrix rank",
)
def check_factorised(device: str = "cpu"):
    import numpy as np

    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(1403)
    for case in range(40):
        n = 2 * randint(0, 3, gen) + 1
        c_in, c_mid, c_out = randint(1, 5, gen), randint(1, 4, gen), randint(1, 5, gen)
        h, w = randint(1, 9, gen), randint(1, 9, gen)
        horizontal = randn(c_mid, c_in, 1, n, gen=gen, device=device)
        vertical = randn(c_out, c_mid, n, 1, gen=gen, device=device)
        x = randn(2, c_in, h, w, gen=gen, device=device)
        weight = factorised_weight(vertical, horizontal)
        stack = factorised_conv(x, vertical, horizontal)
        t.close(F.conv2d(x, weight, padding=n // 2), stack, f"n={n} widths {c_in}->{c_mid}->{c_out} on {h}×{w}")
        matrix = weight.permute(0, 2, 1, 3).reshape(c_out * n, c_in * n).cpu().numpy()
        rank = int(np.linalg.matrix_rank(matrix))
        t.exact(rank <= c_mid, f"rank {rank} > C_mid = {c_mid}")
        if case % 2 == 0 and n > 1:
            # a bias on the first convolution: the n×n layer with bias b_o = Σ_{m,a} V[o,m,a]·bh[m] is exact only off the band
            bias_h = randn(c_mid, gen=gen, device=device)
            stacked = factorised_conv(x, vertical, horizontal, bias_h=bias_h)
            folded_bias = torch.einsum("oma,m->o", vertical[..., 0], bias_h)
            single = F.conv2d(x, weight, folded_bias, padding=n // 2)
            band = factorised_border_rows(h, n)
            inside = [r for r in range(h) if r not in band]
            if inside:
                t.close(single[:, :, inside], stacked[:, :, inside], f"n={n} bias: rows off the band")
            differs = (single[:, :, band] - stacked[:, :, band]).abs().amax(dim=(0, 1, 3)) > 1e-9
            t.exact(bool(differs.all()), f"n={n} h={h}: every band row {band} differs")
    return t.verdict("40 random factorised pairs vs F.conv2d, rank by numpy, bias band", dtype="float64")
