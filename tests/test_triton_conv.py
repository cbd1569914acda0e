"""Chapter 11: the implicit-GEMM Triton kernel (convbook.triton_conv), through Triton's
interpreter on CPU tensors. Skipped, with the reason, when Triton is not installed."""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest
import torch.nn.functional as F

from convbook import triton_conv
from convbook.claims import all_claims
from convbook.triton_conv import TRITON_AVAILABLE, conv2d_triton, triton_agreement, triton_missing_reason
from tests.planting import Plant, planted_failure_test

D = torch.float64
REASON = triton_missing_reason()
needs_triton = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def _rand(*shape, seed=0, dtype=D):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def test_claim_registered_exactly_when_triton_is_installed():
    ids = {c.id for c in all_claims(11)}
    assert ("impl.triton" in ids) == TRITON_AVAILABLE


def test_missing_triton_gives_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_triton(name, *args, **kwargs):
        if name == "triton" or name.startswith("triton."):
            raise ImportError("No module named 'triton'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_triton)
    with pytest.raises(RuntimeError, match=r"Triton is not available.*pip install triton"):
        conv2d_triton(_rand(1, 1, 4, 4), _rand(1, 1, 3, 3))


@needs_triton
def test_200_random_layers_float64():
    t = triton_agreement(200, seed=2024)
    assert t.cases == 200 and t.passed, t.first_failure


@needs_triton
def test_float32_and_blocks_smaller_than_the_problem():
    x, w, b = _rand(2, 6, 9, 7, dtype=torch.float32), _rand(4, 3, 3, 2, seed=1, dtype=torch.float32), _rand(4, seed=2, dtype=torch.float32)
    out = conv2d_triton(x, w, b, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2, block_m=16, block_n=16, block_k=16)
    ref = F.conv2d(x.double(), w.double(), b.double(), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), ref, rtol=1e-5, atol=1e-5)


@needs_triton
def test_non_contiguous_input():
    x = _rand(1, 3, 8, 8).transpose(2, 3)
    w = _rand(2, 3, 3, 3, seed=1)
    assert torch.allclose(conv2d_triton(x, w, padding=1), F.conv2d(x, w, padding=1), rtol=1e-12, atol=1e-12)


@needs_triton
def test_invalid_inputs():
    x, w = _rand(1, 2, 5, 5), _rand(2, 2, 3, 3)
    with pytest.raises(ValueError, match="float32 or float64"):
        conv2d_triton(x.half(), w.half())
    with pytest.raises(ValueError, match="power of two >= 16"):
        conv2d_triton(x, w, block_m=24)
    with pytest.raises(ValueError, match="input channels per group"):
        conv2d_triton(x, _rand(2, 1, 3, 3))
    with pytest.raises(NotImplementedError, match="string padding"):
        conv2d_triton(x, w, padding="same")


_ORIG = triton_conv.conv2d_triton


def _padding_ignored(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, **kw):
    """Reading the unpadded input at padded coordinates: the border outputs shift."""
    out = _ORIG(torch.nn.functional.pad(x, (1, 0, 1, 0)), weight, bias, stride, padding, dilation, groups, **kw)
    return out[..., : out.shape[-2] - 1 if out.shape[-2] > 1 else None, : out.shape[-1] - 1 if out.shape[-1] > 1 else None]


PLANTS = [Plant("impl.triton", "input offset by one row and column", {"convbook.triton_conv:conv2d_triton": _padding_ignored})] \
    if TRITON_AVAILABLE else []

test_planted_failure = planted_failure_test(PLANTS)
