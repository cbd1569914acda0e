"""Inception blocks: costs against FlopCounterMode, merged 1×1s and factorised n×1/1×n against F.conv2d."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from convbook import inception as inc
from convbook.inception import (GOOGLENET_BLOCKS, InceptionBlock, InceptionWidths, factorised_border_rows,
                                factorised_weight, inception_macs, inception_params, merged_first_layer)
from tests.planting import Plant, planted_failure_test

_real_macs = inc.inception_macs
_real_merge = inc.merged_first_layer
_real_weight = inc.factorised_weight


def _macs_without_pool_projection(c, h, w, widths, *, reduced=True):
    full = _real_macs(c, h, w, widths, reduced=reduced)
    return full - (h * w * c * widths.pp if reduced else 0)


def _macs_square_grid(c, h, w, widths, *, reduced=True):
    return _real_macs(c, h, h, widths, reduced=reduced)


def _macs_always_reduced(c, h, w, widths, *, reduced=True):
    return _real_macs(c, h, w, widths, reduced=True)


def _merge_first_only(convs):
    convs = list(convs)
    merged = _real_merge(convs)
    with torch.no_grad():
        merged.weight[convs[0].out_channels:] = convs[0].weight.mean()
    return merged


def _merge_without_bias(convs):
    merged = _real_merge(convs)
    if merged.bias is not None:
        with torch.no_grad():
            merged.bias.zero_()
    return merged


def _weight_transposed_taps(vertical, horizontal):
    return _real_weight(vertical, horizontal).transpose(2, 3)


def _weight_first_mid_channel(vertical, horizontal):
    return _real_weight(vertical[:, :1], horizontal[:1])


PLANTS = [
    Plant("inception.block-cost", "pool projection not counted", {"convbook.inception:inception_macs": _macs_without_pool_projection},
          parameter="branch widths"),
    Plant("inception.block-cost", "H used for W", {"convbook.inception:inception_macs": _macs_square_grid}, parameter="grid size"),
    Plant("inception.block-cost", "naive block costed as reduced", {"convbook.inception:inception_macs": _macs_always_reduced},
          parameter="reductions"),
    Plant("inception.concat-one-conv", "only the first branch's weights", {"convbook.inception:merged_first_layer": _merge_first_only},
          parameter="branch widths"),
    Plant("inception.concat-one-conv", "bias dropped", {"convbook.inception:merged_first_layer": _merge_without_bias},
          parameter="bias"),
    Plant("inception.factorised-nxn", "taps a and b swapped", {"convbook.inception:factorised_weight": _weight_transposed_taps},
          parameter="kernel size n"),
    Plant("inception.factorised-nxn", "sum over one middle channel", {"convbook.inception:factorised_weight": _weight_first_mid_channel},
          parameter="widths"),
    Plant("inception.factorised-nxn", "bias band ignored", {"convbook.inception:factorised_border_rows": lambda h, n: []},
          parameter="first bias"),
]

test_planted_failure = planted_failure_test(PLANTS)


def test_googlenet_3a_numbers():
    c, size, widths = GOOGLENET_BLOCKS["3a"]
    assert widths.out_channels == 256
    assert inception_macs(c, size, size, widths) == 128_049_152
    assert inception_params(c, widths) == 163_328
    assert inception_params(c, widths, bias=True) == 163_328 + 64 + 96 + 128 + 16 + 32 + 32


def test_block_output_shape_and_params_against_the_module():
    torch.manual_seed(0)
    widths = InceptionWidths(3, 2, 4, 1, 2, 2)
    for reduced, extra in ((True, 0), (False, 5)):
        block = InceptionBlock(5, widths, reduced=reduced)
        y = block(torch.randn(2, 5, 7, 6))
        assert y.shape == (2, widths.n1 + widths.n3 + widths.n5 + (widths.pp if reduced else 0) + extra, 7, 6)
        assert sum(p.numel() for p in block.parameters()) == inception_params(5, widths, reduced=reduced, bias=True)


def test_merged_first_layer_of_a_real_block_equals_the_branch_heads():
    torch.manual_seed(1)
    block = InceptionBlock(6, InceptionWidths(2, 3, 4, 1, 2, 2)).double()
    x = torch.randn(1, 6, 5, 5, dtype=torch.float64)
    heads = [block.branch1[0], block.branch3[0], block.branch5[0]]
    merged = merged_first_layer(heads)
    expected = torch.cat([h(x) for h in heads], dim=1)
    assert torch.allclose(merged(x), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("bad", [
    lambda: InceptionWidths(0, 1, 1, 1, 1, 1),
    lambda: InceptionWidths(1.0, 1, 1, 1, 1, 1),
    lambda: inception_macs(3, 0, 4, InceptionWidths(1, 1, 1, 1, 1, 1)),
    lambda: merged_first_layer([]),
    lambda: merged_first_layer([nn.Conv2d(3, 2, 3)]),
    lambda: merged_first_layer([nn.Conv2d(3, 2, 1), nn.Conv2d(4, 2, 1)]),
    lambda: merged_first_layer([nn.Conv2d(3, 2, 1), nn.Conv2d(3, 2, 1, bias=False)]),
    lambda: factorised_weight(torch.zeros(2, 3, 3, 1), torch.zeros(4, 1, 1, 3)),
    lambda: factorised_weight(torch.zeros(2, 3, 1, 3), torch.zeros(3, 1, 1, 3)),
])
def test_bad_inputs_are_refused(bad):
    with pytest.raises(ValueError):
        bad()


def test_border_rows():
    assert factorised_border_rows(7, 3) == [0, 6]
    assert factorised_border_rows(7, 5) == [0, 1, 5, 6]
    assert factorised_border_rows(2, 7) == [0, 1]
    assert factorised_border_rows(5, 1) == []


def test_factorised_weight_against_a_loop():
    torch.manual_seed(2)
    v, h = torch.randn(3, 2, 5, 1, dtype=torch.float64), torch.randn(2, 4, 1, 5, dtype=torch.float64)
    w = factorised_weight(v, h)
    for o in range(3):
        for i in range(4):
            for a in range(5):
                for b in range(5):
                    assert abs(w[o, i, a, b] - sum(v[o, m, a, 0] * h[m, i, 0, b] for m in range(2))) < 1e-12
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    assert torch.allclose(F.conv2d(x, w, padding=2), inc.factorised_conv(x, v, h), rtol=0, atol=1e-12)


def test_factorised_example_reports_the_identity_and_the_rank():
    ex = inc.factorised_example(n=5, c_in=6, c_mid=3, c_out=4, size=9, seed=3)
    assert ex["equal"] is True and ex["rank"] == 3 and ex["shape"] == (20, 30)
    assert (ex["macs_factorised"], ex["macs_full"]) == (5 * 3 * 10, 25 * 24)
    assert ex["band_rows"] == [0, 1, 7, 8]
