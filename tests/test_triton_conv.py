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
from convbook.impl import random_conv_case
from convbook.numerics import generator
from convbook.triton_conv import (CONFIGS, MODES, TRITON_AVAILABLE, UNIT_ROUNDOFF, TileConfig, conv2d_triton,
                                  conv_mode, gamma, pick_config, rounding_error_bound, triton_agreement,
                                  triton_missing_reason)
from tests.planting import Plant, planted_failure_test

D = torch.float64
REASON = triton_missing_reason()
needs_triton = pytest.mark.skipif(REASON is not None, reason=REASON or "")
needs_gpu = pytest.mark.skipif(REASON is not None or not torch.cuda.is_available(),
                               reason="needs Triton and a CUDA GPU (bf16 and TF32 tensor-core paths)")


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
    with pytest.raises(ValueError, match="float64, float32, float16 or bfloat16"):
        conv2d_triton(x.int(), w.int())
    with pytest.raises(ValueError, match="float32 inputs only"):
        conv2d_triton(x, w, input_precision="tf32")  # float64
    with pytest.raises(ValueError, match="input_precision must be"):
        conv2d_triton(x.float(), w.float(), input_precision="bf16")
    with pytest.raises(ValueError, match="power of two >= 16"):
        conv2d_triton(x, w, block_m=24)
    with pytest.raises(ValueError, match="input channels per group"):
        conv2d_triton(x, _rand(2, 1, 3, 3))
    with pytest.raises(NotImplementedError, match="string padding"):
        conv2d_triton(x, w, padding="same")


# --- reduced precision -------------------------------------------------------------------


def test_unit_roundoffs_are_the_formats():
    """u = 2^-p for p significand bits (round to nearest: half an ulp of 1); TF32 keeps fp16's
    10 explicit bits and is bounded by truncation (a whole ulp); tensor-core sums truncate."""
    assert UNIT_ROUNDOFF["fp16"][2] == torch.finfo(torch.float16).eps / 2
    assert UNIT_ROUNDOFF["bf16"][2] == torch.finfo(torch.bfloat16).eps / 2
    assert UNIT_ROUNDOFF["tf32"][0] == torch.finfo(torch.float16).eps  # 10 bits, truncated
    assert UNIT_ROUNDOFF["fp32-ieee"][1] == torch.finfo(torch.float32).eps / 2
    assert UNIT_ROUNDOFF["fp64"][1] == torch.finfo(torch.float64).eps / 2
    for mode in ("tf32", "fp16", "bf16"):
        assert UNIT_ROUNDOFF[mode][1] == torch.finfo(torch.float32).eps  # truncation: a whole ulp
    assert set(UNIT_ROUNDOFF) == set(MODES) == set(CONFIGS)


def test_gamma():
    assert gamma(10, 2.0 ** -24) == pytest.approx(10 * 2.0 ** -24 / (1 - 10 * 2.0 ** -24), rel=1e-15)
    with pytest.raises(ValueError, match="n·u < 1"):
        gamma(2 ** 11, 2.0 ** -11)


def test_conv_mode():
    assert conv_mode(torch.float32) == conv_mode(torch.float32, "ieee") == "fp32-ieee"
    assert conv_mode(torch.float32, "tf32") == "tf32"
    assert (conv_mode(torch.float16), conv_mode(torch.bfloat16), conv_mode(torch.float64)) == ("fp16", "bf16", "fp64")
    with pytest.raises(ValueError, match="float32 inputs only"):
        conv_mode(torch.float16, "tf32")


def test_bound_is_attained_by_a_single_rounding_and_catches_a_wrong_format():
    """The bound is not vacuous: a 1×1 'convolution' of one input and weight 1 whose result
    needs more digits than fp16 has is off by up to u_out·|y| (the bound's output term), and
    a result computed from bf16-rounded inputs breaks the fp16 bound."""
    x = torch.tensor([[[[1 + 2.0 ** -11 + 2.0 ** -13]]]], dtype=torch.float64)   # not an fp16 number
    w = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    err = (x.half().double() - x).abs()
    assert err.item() <= rounding_error_bound(x, w, mode="fp16").item() <= 1.02 * err.item() * 2
    gen = torch.Generator().manual_seed(3)
    x, w = torch.randn(1, 16, 6, 6, generator=gen).half(), torch.randn(8, 16, 3, 3, generator=gen).half()
    bf = F.conv2d(x.bfloat16().double(), w.bfloat16().double(), padding=1).half().double()
    assert ((bf - F.conv2d(x.double(), w.double(), padding=1)).abs() > rounding_error_bound(x, w, padding=1, mode="fp16")).any()


def _within_bound(x, weight, bias, kw, mode, input_precision=None):
    out = conv2d_triton(x, weight, bias, input_precision=input_precision, **kw)
    assert out.dtype == x.dtype and out.device == x.device
    ref = F.conv2d(x.double(), weight.double(), bias.double() if bias is not None else None, **kw)
    err = (out.double() - ref).abs()
    bound = rounding_error_bound(x, weight, bias, mode=mode, **kw)
    assert (err <= bound).all(), f"{mode}: max err/bound {(err / bound).max().item():.3g} at x={tuple(x.shape)} {kw}"


@needs_triton
def test_fp16_within_the_derived_bound_random_layers():
    """fp16 through the interpreter (its tl.dot forms fp16 products and float32 sums, as tensor
    cores do) against float64, on random layers: every stride, padding, dilation, groups, bias."""
    gen = generator(1612)
    for _ in range(12):
        x, weight, bias, kw = random_conv_case(gen, "cpu")
        _within_bound(x.half(), weight.half(), bias.half() if bias is not None else None, kw, "fp16")


@needs_triton
def test_fp16_long_reduction():
    """K = 64·3·3 = 576: the accumulation term γ_K u_acc matters next to fp16's output rounding."""
    gen = torch.Generator().manual_seed(5)
    x, w = torch.randn(1, 64, 6, 6, generator=gen).half(), torch.randn(32, 64, 3, 3, generator=gen).half()
    _within_bound(x, w, None, dict(padding=1), "fp16")


@needs_triton
def test_tf32_in_the_interpreter_is_plain_float32():
    """Triton 3.9's interpreter ignores input_precision="tf32": the result equals the IEEE float32
    one bit for bit, so a CPU run checks the float32 path only (TF32 rounding needs a GPU). If a
    later interpreter emulates TF32, this test fails and the module docstring must change."""
    x, w = _rand(1, 8, 7, 7, dtype=torch.float32), _rand(4, 8, 3, 3, seed=1, dtype=torch.float32)
    assert torch.equal(conv2d_triton(x, w, padding=1, input_precision="tf32"), conv2d_triton(x, w, padding=1))
    _within_bound(x, w, None, dict(padding=1), "tf32", input_precision="tf32")


@needs_triton
def test_bf16_refused_in_the_interpreter():
    x, w = _rand(1, 2, 5, 5, dtype=torch.bfloat16), _rand(2, 2, 3, 3, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="bfloat16 runs only on a CUDA device"):
        conv2d_triton(x, w)


@needs_gpu
@pytest.mark.parametrize("dtype,precision,mode", [(torch.bfloat16, None, "bf16"), (torch.float16, None, "fp16"),
                                                  (torch.float32, "tf32", "tf32"), (torch.float32, None, "fp32-ieee")])
def test_tensor_core_paths_on_a_gpu(dtype, precision, mode):
    gen = generator(90)
    for _ in range(20):
        x, weight, bias, kw = random_conv_case(gen, "cuda")
        _within_bound(x.to(dtype), weight.to(dtype), bias.to(dtype) if bias is not None else None, kw, mode, precision)
    x, w = torch.randn(8, 64, 28, 28, device="cuda").to(dtype), torch.randn(128, 64, 3, 3, device="cuda").to(dtype)
    _within_bound(x, w, None, dict(padding=1), mode, precision)  # pick_config's tiles on a ResNet-sized layer


# --- tile configurations ----------------------------------------------------------------


def test_pick_config_rule():
    # 64 output channels: the 64-wide tile; many positions: the 128-tall one
    assert pick_config(32 * 56 * 56, 64, 1, "bf16") == TileConfig(128, 64, 32, 4, 3)
    # 256 channels: the widest tile (128)
    assert pick_config(32 * 56 * 56, 256, 1, "bf16") == TileConfig(128, 128, 32, 8, 3)
    # 7x7 at batch 1: 49 positions, 4 tiles of 128 channels < 132 SMs -> the 64-tall tile
    assert pick_config(49, 512, 1, "bf16") == TileConfig(64, 128, 32, 4, 3)
    # same layer at batch 32: 13 x 4 = 52 tiles of 128 rows, still < 132 -> 64 rows; 108 SMs alike
    assert pick_config(32 * 49, 512, 1, "tf32").block_m == 64
    # 120 tiles of 128 rows: enough for 108 SMs (A100), not for 132 (H100)
    assert pick_config(120 * 128, 128, 1, "tf32", sm_count=108) == TileConfig(128, 128, 32, 8, 3)
    assert pick_config(120 * 128, 128, 1, "tf32", sm_count=132) == TileConfig(64, 128, 32, 4, 3)
    assert pick_config(32 * 196, 64, 1, "fp32-ieee") == TileConfig(64, 64, 32, 4, 2)
    for mode, cfgs in CONFIGS.items():
        for c in cfgs:
            assert all(b >= 16 and not b & (b - 1) for b in (c.block_m, c.block_n, c.block_k)), (mode, c)
    with pytest.raises(ValueError, match="mode must be one of"):
        pick_config(10, 10, 1, "int8")
    with pytest.raises(ValueError, match="c_out_g must be an int >= 1"):
        pick_config(10, 0, 1, "bf16")


@needs_triton
def test_config_argument_and_block_overrides():
    x, w = _rand(1, 4, 9, 9), _rand(4, 4, 3, 3, seed=1)
    ref = F.conv2d(x, w, padding=1)
    for cfg in (TileConfig(16, 16, 16, 4, 1), CONFIGS["fp64"][0]):
        assert torch.allclose(conv2d_triton(x, w, padding=1, config=cfg), ref, rtol=1e-12, atol=1e-12)
    assert torch.allclose(conv2d_triton(x, w, padding=1, block_m=32, block_k=16), ref, rtol=1e-12, atol=1e-12)


_ORIG = triton_conv.conv2d_triton


def _padding_ignored(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, **kw):
    """Reading the unpadded input at padded coordinates: the border outputs shift."""
    out = _ORIG(torch.nn.functional.pad(x, (1, 0, 1, 0)), weight, bias, stride, padding, dilation, groups, **kw)
    return out[..., : out.shape[-2] - 1 if out.shape[-2] > 1 else None, : out.shape[-1] - 1 if out.shape[-1] > 1 else None]


def _swap(v):
    v = (v, v) if isinstance(v, int) else tuple(v)
    return (v[1], v[0])


def _stride_axes_swapped(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, **kw):
    """The vertical stride used horizontally and vice versa (wrong when they differ)."""
    return _ORIG(x, weight, bias, _swap(stride), padding, dilation, groups, **kw)


def _dilation_ignored(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, **kw):
    """Adjacent taps read whatever the dilation (the kernel is not spread out)."""
    return _ORIG(x, weight, bias, stride, padding, 1, groups, **kw)


def _groups_reversed(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, **kw):
    """Group g's input channels paired with the weights of group G-1-g."""
    c = x.shape[1] // groups
    xr = torch.cat([x[:, (groups - 1 - g) * c:(groups - g) * c] for g in range(groups)], dim=1)
    return _ORIG(xr, weight, bias, stride, padding, dilation, groups, **kw)


def _bias_ignored(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, **kw):
    return _ORIG(x, weight, None, stride, padding, dilation, groups, **kw)


_T = "convbook.triton_conv:conv2d_triton"
PLANTS = [
    Plant("impl.triton", "input offset by one row and column", {_T: _padding_ignored}, parameter="padding"),
    Plant("impl.triton", "stride axes swapped", {_T: _stride_axes_swapped}, parameter="stride"),
    Plant("impl.triton", "dilation ignored", {_T: _dilation_ignored}, parameter="dilation"),
    Plant("impl.triton", "groups paired in reverse", {_T: _groups_reversed}, parameter="groups"),
    Plant("impl.triton", "bias ignored", {_T: _bias_ignored}, parameter="bias"),
] if TRITON_AVAILABLE else []

test_planted_failure = planted_failure_test(PLANTS)
