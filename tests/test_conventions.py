"""One set of argument conventions, PyTorch's, across convbook (convbook.conventions).

``test_every_function_with_conv_arguments_is_in_the_table`` walks every public function and
class of every convbook module (``pkgutil.walk_packages`` + ``inspect.signature``) and finds
those taking a kernel size, stride, padding or dilation (or an alias: ``k``, ``kernel``, ``s``,
``p``, ``d``, ``kh``/``kw``, ``kernel_sizes``, ``dilations``, ``strides``). Each must be in
``TABLE``, which says how it is exercised: against its ``torch.nn`` / ``torch.nn.functional``
counterpart with an int, a tuple, numpy integers and the padding strings — each case must
agree with PyTorch or be refused with a clear ``ValueError`` (never another exception, never a
silently different answer) — or, where the argument is not a convolution's (Winograd's data
tile ``d``, a kernel *matrix*) or the function only draws, why it is not.
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import convbook
from convbook import conv as conv_mod
from convbook import shapes
from convbook.conventions import as_int, as_tuple, padding_totals, resolve_padding, spatial_ndim

D = torch.float64
ALIASES = {"kernel_size", "stride", "padding", "dilation", "output_padding", "k", "kernel", "s", "p", "d", "kh", "kw",
           "pad", "kernel_sizes", "strides", "dilations", "paddings"}


# --- the helpers themselves ---------------------------------------------------------------------


def test_as_int_accepts_integers_of_every_kind_and_refuses_the_rest():
    assert as_int(3, "k") == 3 and as_int(np.int64(3), "k") == 3 and as_int(np.uint8(3), "k") == 3
    assert as_int(torch.tensor(3), "k") == 3 and type(as_int(np.int32(3), "k")) is int
    for bad in (3.0, np.float64(3), True, np.bool_(True), "3", None, torch.tensor(3.0), torch.tensor([3]), (3,)):
        with pytest.raises(ValueError, match="k must be an integer"):
            as_int(bad, "k")
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        as_int(0, "k", 1)


def test_as_tuple_int_means_every_axis_and_tuples_must_match():
    assert as_tuple(5, name="k") == (5, 5)  # default ndim 2, like nn.Conv2d
    assert as_tuple(5, 3, "k") == (5, 5, 5) and as_tuple((1, np.int64(2)), 2, "k") == (1, 2)
    assert as_tuple(np.array([3, 4]), 2, "k") == (3, 4) and as_tuple(torch.Size([3, 4]), 2, "k") == (3, 4)
    assert as_tuple(np.array(3), 2, "k") == (3, 3) and as_int(np.array(3), "k") == 3  # 0-d arrays are scalars
    with pytest.raises(ValueError, match="integer"):
        as_int(np.array(3.0), "k")
    with pytest.raises(ValueError, match="tuple of 2 ints"):
        as_tuple((3,), 2, "k")  # nn.Conv2d(1, 1, (3,)) builds a 1-D weight and fails at run time
    with pytest.raises(ValueError, match="k must be an int or a tuple"):
        as_tuple("same", 2, "k")
    with pytest.raises(ValueError, match=r"k\[1\] must be an integer"):
        as_tuple((3, 2.0), 2, "k")
    assert spatial_ndim(3, (1, 2, 3), 1) == 3 and spatial_ndim(3, 1) == 2 and spatial_ndim(3, ndim=1) == 1
    with pytest.raises(ValueError, match="disagree"):
        spatial_ndim((3, 3), (1, 1, 1))


def test_resolve_padding_follows_pytorch():
    assert resolve_padding(1, 3) == ((1, 1), (1, 1)) and resolve_padding((2, 0), 3) == ((2, 2), (0, 0))
    assert resolve_padding("valid", (3, 4)) == ((0, 0), (0, 0))
    assert resolve_padding("same", (3, 4), 1, (2, 1)) == ((2, 2), (1, 2))  # axis 1: d(k-1) = 3, the extra zero on the right
    assert padding_totals("same", 4, ndim=1) == (3,)
    with pytest.raises(ValueError, match="stride 1"):
        resolve_padding("same", 3, (1, 2))
    with pytest.raises(ValueError, match="'valid' or 'same'"):
        resolve_padding("full", 3)
    with pytest.raises(ValueError, match="padding strings"):
        resolve_padding("same", 3, allow_strings=False)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        resolve_padding(-1, 3)
    # against PyTorch: F.conv with padding='same' equals F.pad by the resolved pairs, then 'valid'
    gen = torch.Generator().manual_seed(5)
    for k, d in (((4, 3), (1, 2)), ((2, 5), (3, 1)), ((1, 1), (1, 1))):
        x = torch.randn(1, 2, 7, 6, generator=gen, dtype=D)
        w = torch.randn(3, 2, *k, generator=gen, dtype=D)
        (t, b), (l, r) = resolve_padding("same", k, 1, d)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = F.conv2d(x, w, padding="same", dilation=d)
        assert torch.allclose(F.conv2d(F.pad(x, (l, r, t, b)), w, dilation=d), ref, rtol=0, atol=1e-12)


# --- regressions: bench.module_counts ------------------------------------------------------------


def _counter_flops(model: nn.Module, shape) -> int:
    m = model.to("meta")
    with FlopCounterMode(display=False) as c, torch.no_grad():
        m(torch.empty(*shape, device="meta"))
    return c.get_total_flops()


def test_module_counts_counts_every_conv_and_transposed_conv():
    from convbook.bench import module_counts

    dcgan = nn.Sequential(nn.ConvTranspose2d(100, 64, 4, 1, 0, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                          nn.ConvTranspose2d(64, 32, 4, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.ConvTranspose2d(32, 3, 4, 2, 1, bias=False), nn.Tanh())
    flops, _ = module_counts(dcgan, (2, 100, 1, 1))
    assert flops > 0 and flops == _counter_flops(dcgan, (2, 100, 1, 1))  # was 0: only Conv2d and Linear were counted
    mixed = nn.Sequential(nn.Conv2d(3, 8, 4, padding="same", dilation=(1, 2)), nn.Conv2d(8, 8, 3, padding="valid", groups=4))
    assert module_counts(mixed, (1, 3, 12, 11))[0] == _counter_flops(mixed, (1, 3, 12, 11))  # 'same' crashed before
    vol = nn.Sequential(nn.Conv3d(2, 4, (3, 1, 2), stride=(1, 2, 1), padding=(1, 0, 1)),
                        nn.ConvTranspose3d(4, 2, 2, stride=2, groups=2, output_padding=1, dilation=(1, 2, 1)))
    assert module_counts(vol, (1, 2, 5, 6, 4))[0] == _counter_flops(vol, (1, 2, 5, 6, 4))
    line = nn.Sequential(nn.Conv1d(2, 4, 3, stride=2), nn.ConvTranspose1d(4, 2, 5, stride=3, padding=1))
    assert module_counts(line, (3, 2, 9))[0] == _counter_flops(line, (3, 2, 9))


def test_module_counts_survives_a_tuple_output():
    from convbook.bench import module_counts

    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(4, 5, batch_first=True)
            self.fc = nn.Linear(5, 2)

        def forward(self, x):
            return self.fc(self.lstm(x)[0])

    flops, nbytes = module_counts(Recurrent(), (2, 3, 4))
    assert flops == 2 * 2 * 3 * 5 * 2 and nbytes > 0


# --- the walk: every function with a convolution argument, against PyTorch -----------------------


class Refused(Exception):
    pass


def _outcome(label: str, ours: Callable[[], Any]):
    """Run ``ours``: its value, or :class:`Refused` for a ValueError; any other exception fails the test."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ours()
    except (ValueError, NotImplementedError):  # a deliberate refusal that names its rule
        return Refused
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"{label}: raised {type(exc).__name__} ({exc}) instead of a clear ValueError")


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        a, b = torch.as_tensor(a, dtype=D), torch.as_tensor(b, dtype=D)
        return a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-10, atol=1e-10))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-10, abs_tol=1e-10)
    return a == b


def _torch(ref: Callable[[], Any]):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ref()
    except (RuntimeError, ValueError, TypeError):
        return Refused


def agree(label: str, ours: Callable[[], Any], ref: Callable[[], Any], *, must_work: bool = False) -> None:
    """``ours`` equals PyTorch's ``ref``, or is refused with a ValueError (not allowed when ``must_work``)."""
    got = _outcome(label, ours)
    if got is Refused:
        assert not must_work, f"{label}: refused a configuration PyTorch accepts"
        return
    expected = _torch(ref)
    assert expected is not Refused, f"{label}: accepted a configuration PyTorch refuses (returned {got!r})"
    assert _same(got, expected), f"{label}: {got!r} but PyTorch gives {expected!r}"


def refuses(label: str, ours: Callable[[], Any]) -> None:
    assert _outcome(label, ours) is Refused, f"{label}: accepted (it must refuse with a ValueError)"


def same_for_numpy(label: str, fn: Callable, args: dict, conv_args: tuple[str, ...]) -> None:
    """Numpy integers give the same result as ints; floats in a convolution argument are refused."""
    base = _outcome(label, lambda: fn(**args))
    assert base is not Refused, f"{label}: refused its base case {args}"
    np_args = {k: (np.int64(v) if isinstance(v, int) and not isinstance(v, bool) else v) for k, v in args.items()}
    assert _same(_outcome(label + " numpy", lambda: fn(**np_args)), base), f"{label}: numpy integers change the result"
    for name in conv_args:
        if isinstance(args[name], int):
            refuses(f"{label} float {name}", lambda: fn(**{**args, name: float(args[name])}))


def _pl(v):
    """A value as PyTorch's layers take it: numpy integers and 0-d tensors become ints (tuples and strings stay)."""
    if isinstance(v, (np.integer, torch.Tensor)):
        return int(v)
    return v


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=_g(seed), dtype=D)


#: The standard cases of a 2-D argument set: (label, stride, padding, dilation).
CASES_2D = [
    ("int", 2, 1, 2),
    ("tuple", (2, 1), (1, 0), (1, 2)),
    ("numpy", np.int64(2), np.int64(1), np.int64(1)),
    ("0-d tensor", torch.tensor(1), torch.tensor(1), torch.tensor(2)),
    ("same", 1, "same", (1, 2)),
    ("valid", 2, "valid", 1),
]


def forward2d(fn: Callable, *, groups: bool = True, bias: bool = True, extra: dict | None = None,
              cases: list | None = None) -> Callable[[], None]:
    """``fn(x, w, b, stride=, padding=, dilation=[, groups=])`` vs ``F.conv2d``; floats refused.
    The case labelled ``"int"`` must be computed (not refused)."""

    def run():
        g = 2 if groups else 1
        x, w, b = _rand(2, 4, 7, 8, seed=1), _rand(6, 4 // g, 3, 2, seed=2), _rand(6, seed=3)
        kw = dict(groups=g) if groups else {}
        for label, s, p, d in (cases or CASES_2D):
            args = (x, w, b) if bias else (x, w)
            agree(f"{fn.__name__} {label}", lambda: fn(*args, stride=s, padding=p, dilation=d, **kw, **(extra or {})),
                  lambda: F.conv2d(x, w, b if bias else None, stride=_pl(s), padding=_pl(p), dilation=_pl(d), groups=g),
                  must_work=label == "int")
        refuses(f"{fn.__name__} float stride", lambda: fn(x, w, *((b,) if bias else ()), stride=2.0, **kw, **(extra or {})))

    return run


def transposed2d(fn: Callable) -> Callable[[], None]:
    """``fn(y, w, stride, padding, dilation, groups, output_padding)`` vs ``F.conv_transpose2d``."""

    def run():
        y, w = _rand(2, 4, 4, 5, seed=4), _rand(4, 3, 3, 2, seed=5)
        cases = [("int", 2, 1, 2, 1), ("tuple", (2, 1), (1, 0), (1, 2), (1, 0)),
                 ("numpy", np.int64(2), np.int64(1), np.int64(1), np.int64(1))]
        for label, s, p, d, op in cases:
            agree(f"{fn.__name__} {label}", lambda: fn(y, w, stride=s, padding=p, dilation=d, groups=2, output_padding=op),
                  lambda: F.conv_transpose2d(y, w, stride=_pl(s), padding=_pl(p), output_padding=_pl(op), groups=2, dilation=_pl(d)),
                  must_work=label == "int")
        for string in ("same", "valid"):
            refuses(f"{fn.__name__} padding={string!r}", lambda: fn(y, w, padding=string, groups=2))
        refuses(f"{fn.__name__} float stride", lambda: fn(y, w, stride=2.0, groups=2))

    return run


def size1d(fn: Callable, torch_op: Callable, *, strings: bool, transposed: bool = False, pool: bool = False):
    """A one-axis size function ``fn(size, k, s, p, d[, output_padding])`` vs the length PyTorch produces."""

    def run():
        for n, k, s, p, d in ((9, 3, 2, 1, 2), (5, 4, 1, 0, 1), (1, 1, 3, 0, 1), (6, 2, 2, 1, 3)):
            for label, conv in (("int", lambda v: v), ("numpy", np.int64)):
                args = [conv(v) for v in (n, k, s, p, d)]
                if pool:
                    ref = lambda: torch_op(torch.zeros(1, 1, n, dtype=D), k, s, p, d).shape[-1]
                elif transposed:
                    ref = lambda: torch_op(torch.zeros(1, 1, n, dtype=D), torch.zeros(1, 1, k, dtype=D), stride=s, padding=p,
                                           dilation=d).shape[-1]
                else:
                    ref = lambda: torch_op(torch.zeros(1, 1, n, dtype=D), torch.zeros(1, 1, k, dtype=D), stride=s, padding=p,
                                           dilation=d).shape[-1]
                agree(f"{fn.__name__} {label} {n, k, s, p, d}", lambda: fn(*args), ref)
            for string in ("same", "valid"):
                if strings:
                    agree(f"{fn.__name__} {string}", lambda: fn(n, k, 1, string, d),
                          lambda: torch_op(torch.zeros(1, 1, n, dtype=D), torch.zeros(1, 1, k, dtype=D), padding=string,
                                           dilation=d).shape[-1])
                else:
                    refuses(f"{fn.__name__} {string}", lambda: fn(n, k, 1, string, d))
        refuses(f"{fn.__name__} tuple kernel (one axis)", lambda: fn(9, (3, 3)))
        refuses(f"{fn.__name__} float kernel", lambda: fn(9, 3.0))

    return run


def _layer(nd: int, transposed: bool = False):
    return ([nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d] if transposed else [nn.Conv1d, nn.Conv2d, nn.Conv3d])[nd - 1]


def _flops(layer: nn.Module, shape) -> int:
    with FlopCounterMode(display=False) as c, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer(torch.empty(*shape, device="meta"))
    return c.get_total_flops()


# --- exercisers of convbook's own modules ----------------------------------------------------------


def _cost_conv_params():
    from convbook.cost import conv_params

    for label, k, nd in (("int", 5, 2), ("int 1-D", 5, 1), ("int 3-D", 3, 3), ("tuple", (3, 1, 2), 3), ("numpy", np.int64(3), 2)):
        kw = {"ndim": nd} if isinstance(k, (int, np.integer)) and nd != 2 else {}
        layer = _layer(nd)(16, 4, k, groups=4, device="meta")
        agree(f"conv_params {label}", lambda: conv_params(16, 4, k, groups=4, **kw),
              lambda: sum(p.numel() for p in layer.parameters()), must_work=True)
    refuses("conv_params float", lambda: conv_params(16, 4, 5.0))


def _cost_conv_macs_and_sizes():
    from convbook.cost import conv_macs, conv_out_size

    for label, s, p, d in CASES_2D:
        layer = nn.Conv2d(4, 6, (3, 2), stride=_pl(s), padding=_pl(p), dilation=_pl(d), groups=2, device="meta")
        agree(f"conv_macs {label}", lambda: 2 * conv_macs(4, 6, (3, 2), (7, 8), s, p, d, 2),
              lambda: _flops(layer, (1, 4, 7, 8)), must_work=label == "int")
        agree(f"conv_out_size {label}", lambda: conv_out_size((7, 8), (3, 2), s, p, d),
              lambda: tuple(layer(torch.empty(1, 4, 7, 8, device="meta")).shape[2:]), must_work=label == "int")
    agree("conv_macs int sizes mean 2-D", lambda: 2 * conv_macs(4, 6, 3, 7, 2, 1),
          lambda: _flops(nn.Conv2d(4, 6, 3, 2, 1, device="meta"), (1, 4, 7, 7)), must_work=True)
    t = nn.ConvTranspose2d(4, 6, 3, stride=(2, 3), padding=1, output_padding=(1, 2), groups=2, device="meta")
    agree("conv_macs transposed", lambda: 2 * conv_macs(4, 6, 3, (4, 5), (2, 3), 1, 1, 2, True, (1, 2)),
          lambda: _flops(t, (1, 4, 4, 5)), must_work=True)
    refuses("conv_macs transposed 'same'", lambda: conv_macs(4, 6, 3, 5, 1, "same", transposed=True))
    refuses("conv_macs float stride", lambda: conv_macs(4, 6, 3, 5, 2.0))


def _cost_pool_ops():
    from convbook.cost import pool_ops

    for label, k, s, p in (("int", 3, 2, 1), ("tuple", (3, 2), (2, 1), (1, 0)), ("numpy", np.int64(2), None, np.int64(0))):
        kk, ss = as_tuple(k, 2, "k"), as_tuple(k if s is None else s, 2, "s")
        agree(f"pool_ops {label}", lambda: pool_ops(3, k, (8, 7), s, p),
              lambda: F.unfold(torch.ones(1, 3, 8, 7), kk, stride=ss, padding=as_tuple(p, 2, "p")).numel(), must_work=True)
    for string in ("same", "valid"):
        refuses(f"pool_ops {string}", lambda: pool_ops(3, 3, 8, 1, string))


def _cost_separable_ratio():
    from convbook.cost import separable_ratio

    for k in (3, np.int64(5)):
        std = _flops(nn.Conv2d(8, 16, int(k), padding="same", bias=False, device="meta"), (1, 8, 9, 9))
        sep = _flops(nn.Sequential(nn.Conv2d(8, 8, int(k), padding="same", groups=8, bias=False, device="meta"),
                                   nn.Conv2d(8, 16, 1, bias=False, device="meta")), (1, 8, 9, 9))
        agree(f"separable_ratio k={k!r}", lambda: separable_ratio(8, 16, k), lambda: Fraction(sep, std), must_work=True)
    refuses("separable_ratio float k", lambda: separable_ratio(8, 16, 3.0))


def _shapes_conv_output_shape():
    from convbook.shapes import conv_output_shape

    for label, s, p, d in CASES_2D:
        layer = nn.Conv2d(4, 6, (3, 2), stride=_pl(s), padding=_pl(p), dilation=_pl(d), groups=2, device="meta")
        agree(f"conv_output_shape {label}", lambda: conv_output_shape((2, 4, 7, 8), 6, (3, 2), s, p, d, 2),
              lambda: tuple(layer(torch.empty(2, 4, 7, 8, device="meta")).shape), must_work=label == "int")
    t = nn.ConvTranspose3d(2, 4, (3, 1, 2), stride=(2, 1, 3), padding=(1, 0, 0), output_padding=(1, 0, 2), device="meta")
    agree("conv_output_shape transposed 3-D", lambda: conv_output_shape((1, 2, 3, 4, 5), 4, (3, 1, 2), (2, 1, 3), (1, 0, 0),
                                                                        1, 1, True, (1, 0, 2)),
          lambda: tuple(t(torch.empty(1, 2, 3, 4, 5, device="meta")).shape), must_work=True)
    refuses("conv_output_shape transposed 'same'", lambda: conv_output_shape((1, 2, 8), 2, 3, padding="same", transposed=True))
    refuses("conv_output_shape float kernel", lambda: conv_output_shape((1, 2, 8), 2, 3.0))


def _shapes_same_padding():
    from convbook.shapes import same_padding

    for k, d in ((4, 1), (np.int64(3), np.int64(2)), (2, 3)):
        agree(f"same_padding k={k!r} d={d!r}", lambda: same_padding(k, 1, d),
              lambda: resolve_padding("same", int(k), 1, int(d), 1)[0], must_work=True)
        x, w = _rand(1, 1, 9, seed=6), _rand(1, 1, int(k), seed=7)
        left, right = same_padding(k, 1, d)
        assert torch.allclose(F.conv1d(F.pad(x, (left, right)), w, dilation=int(d)),
                              _torch(lambda: F.conv1d(x, w, padding="same", dilation=int(d))), rtol=0, atol=1e-12)
    refuses("same_padding float kernel", lambda: same_padding(3.0))


def _shapes_forward_preimages():
    from convbook.shapes import forward_preimages

    for n, k, s, p, d in ((4, 3, 2, 1, 1), (1, 1, 3, 1, 1), (3, 2, 3, 0, 2)):
        sizes = [m for m in range(1, 40) if
                 _torch(lambda: F.conv1d(torch.zeros(1, 1, m), torch.zeros(1, 1, k), stride=s, padding=p, dilation=d).shape[-1]) == n]
        agree(f"forward_preimages {n, k, s, p, d}", lambda: forward_preimages(np.int64(n), k, s, p, d), lambda: tuple(sizes),
              must_work=True)
    refuses("forward_preimages 'same'", lambda: forward_preimages(4, 3, 1, "same"))


def _shapes_bottleneck_block():
    from convbook.shapes import bottleneck_block

    for s in (2, np.int64(1)):
        agree(f"bottleneck_block stride={s!r}", lambda: tuple(bottleneck_block(8, 4, 16, s)(torch.zeros(1, 8, 7, 7)).shape),
              lambda: (1, 16) + tuple(nn.Conv2d(8, 16, 1, stride=int(s))(torch.zeros(1, 8, 7, 7)).shape[2:]), must_work=True)
    refuses("bottleneck_block float stride", lambda: bottleneck_block(8, 4, 16, 2.0))


def _models_blocks():
    from convbook import models

    for cls, args in ((models.BasicBlock, (8, 8)), (models.Bottleneck, (16, 4))):
        for s in (1, np.int64(2), torch.tensor(2)):
            down = None if int(s) == 1 else nn.Conv2d(args[0], args[1] * cls.expansion, 1, stride=int(s))
            block = cls(*args, s, down) if int(s) != 1 or args[0] == args[1] * cls.expansion else None
            if block is None:
                block = cls(*args, s, nn.Conv2d(args[0], args[1] * cls.expansion, 1))
            agree(f"{cls.__name__} stride={s!r}", lambda: tuple(block(torch.zeros(1, args[0], 9, 9)).shape[2:]),
                  lambda: tuple(nn.Conv2d(1, 1, 3, stride=int(s), padding=1)(torch.zeros(1, 1, 9, 9)).shape[2:]), must_work=True)
        refuses(f"{cls.__name__} float stride", lambda: cls(*args, 2.0))
    for s in (1, np.int64(2)):
        agree(f"InvertedResidual stride={s!r}", lambda: tuple(models.InvertedResidual(8, 8, s, 2)(torch.zeros(1, 8, 9, 9)).shape[2:]),
              lambda: tuple(nn.Conv2d(1, 1, 3, stride=int(s), padding=1)(torch.zeros(1, 1, 9, 9)).shape[2:]), must_work=True)
    refuses("InvertedResidual stride 3", lambda: models.InvertedResidual(8, 8, 3, 2))
    refuses("InvertedResidual float stride", lambda: models.InvertedResidual(8, 8, 2.0, 2))


# --- exercisers of the other modules -----------------------------------------------------------


def _conv_correlate2d():
    from convbook.conv import correlate2d

    x, w = _rand(7, 8, seed=8), _rand(3, 2, seed=9)
    for label, s, p, d in CASES_2D:
        agree(f"correlate2d {label}", lambda: correlate2d(x, w, s, p, d),
              lambda: F.conv2d(x[None, None], w[None, None], stride=_pl(s), padding=_pl(p), dilation=_pl(d))[0, 0], must_work=label == "int")
    refuses("correlate2d float stride", lambda: correlate2d(x, w, 2.0))


def _conv_conv_matrix():
    from convbook.conv import conv_matrix

    w, x = _rand(3, 2, 3, 2, seed=10), _rand(1, 2, 6, 5, seed=11)
    for label, s, p, d in CASES_2D:
        agree(f"conv_matrix {label}", lambda: (conv_matrix(w, (6, 5), s, p, d) @ x.reshape(-1)),
              lambda: F.conv2d(x, w, stride=_pl(s), padding=_pl(p), dilation=_pl(d)).reshape(-1), must_work=label == "int")
    refuses("conv_matrix float stride", lambda: conv_matrix(w, (6, 5), 2.0))


def _conv_circular():
    from convbook.conv import circular_conv2d

    x, w = _rand(1, 2, 7, 6, seed=12), _rand(3, 2, 3, 3, seed=13)
    for d in (1, np.int64(2), (1, 2)):
        dd = as_tuple(d, 2, "d")
        layer = nn.Conv2d(2, 3, 3, padding="same", dilation=dd, padding_mode="circular", bias=False).double()
        layer.weight.data.copy_(w)
        agree(f"circular_conv2d d={d!r}", lambda: circular_conv2d(x, w, d), lambda: layer(x), must_work=isinstance(d, int))
    refuses("circular_conv2d float dilation", lambda: circular_conv2d(x, w, 2.0))


def _conv_equivariance_masks():
    from convbook.conv import equivariance_masks

    same_for_numpy("equivariance_masks", lambda **a: equivariance_masks(**a),
                   dict(input_size=(8, 7), kernel_size=(3, 2), padding=(1, 0), dilation=(1, 2), offsets=(1, 1)), ())
    refuses("equivariance_masks float kernel", lambda: equivariance_masks((8, 7), (3.0, 2), (1, 0), (1, 2), (1, 1)))


def _dilated_effective_kernel_size():
    from convbook.dilated import effective_kernel_size

    for k, d in ((3, 2), (np.int64(4), np.int64(3))):
        agree(f"effective_kernel_size {k!r} {d!r}", lambda: effective_kernel_size(k, d),
              lambda: 20 - F.conv1d(torch.zeros(1, 1, 20), torch.zeros(1, 1, int(k)), dilation=int(d)).shape[-1] + 1,
              must_work=True)
    refuses("effective_kernel_size float", lambda: effective_kernel_size(3.0, 2))


def _dilated_dilate_kernel():
    from convbook.dilated import dilate_kernel

    x, w = _rand(1, 2, 9, 8, seed=14), _rand(3, 2, 3, 2, seed=15)
    for d in (2, (1, 3), np.int64(2)):
        agree(f"dilate_kernel d={d!r}", lambda: F.conv2d(x, dilate_kernel(w, d)), lambda: F.conv2d(x, w, dilation=_pl(d)),
              must_work=isinstance(d, int))
    refuses("dilate_kernel float", lambda: dilate_kernel(w, 2.0))


def _stack_reference(ks, ds):
    """Gradient of one output of a stride-1 stack of all-ones Conv1d layers: its support and path counts."""
    span = 1 + sum(int(d) * (int(k) - 1) for k, d in zip(ks, ds))
    x = torch.zeros(1, 1, span, dtype=D, requires_grad=True)
    y = x
    for k, d in zip(ks, ds):
        y = F.conv1d(y, torch.ones(1, 1, int(k), dtype=D), dilation=int(d))
    y.sum().backward()
    return span, x.grad[0, 0].numpy()


def _dilated_stacks():
    from convbook.dilated import stack_offsets, stack_path_counts, stack_receptive_field

    for ks, ds in (((3, 3, 3), (1, 2, 4)), ((np.int64(2), 3), (np.int64(3), 2))):
        span, grad = _stack_reference(ks, ds)
        agree(f"stack_receptive_field {ks}", lambda: stack_receptive_field(ks, ds), lambda: span, must_work=True)
        agree(f"stack_offsets {ks}", lambda: np.asarray(stack_offsets(ks, ds)), lambda: np.flatnonzero(grad), must_work=True)
        agree(f"stack_path_counts {ks}", lambda: np.asarray(stack_path_counts(ks, ds)).astype(float),
              lambda: grad.astype(float), must_work=True)
    refuses("stack_receptive_field float kernel", lambda: stack_receptive_field((3.0, 3), (1, 2)))


def _band_reference(n, k, s, p, d):
    """Outputs whose window reads padding: those where a conv of all-ones input and kernel sums below k."""
    y = F.conv1d(torch.ones(1, 1, n, dtype=D), torch.ones(1, 1, k, dtype=D), stride=s, padding=p, dilation=d)[0, 0]
    return (y < k).numpy()


def _fold_border_band():
    from convbook.fold import border_band_mask, border_band_width

    for n, k, s, p, d in ((9, 3, 2, 1, 2), (np.int64(7), np.int64(4), 1, np.int64(2), 1)):
        band = _band_reference(int(n), int(k), int(s), int(p), int(d))
        start = int(np.argmin(band)) if not band.all() else len(band)
        end = int(np.argmin(band[::-1])) if not band.all() else len(band)
        agree(f"border_band_width {n, k, s, p, d}", lambda: tuple(border_band_width(n, k, s, p, d)), lambda: (start, end),
              must_work=isinstance(n, int))
    rows, cols = _band_reference(9, 3, 2, 1, 1), _band_reference(8, 2, 1, 0, 2)
    agree("border_band_mask tuples", lambda: np.asarray(border_band_mask((9, 8), (3, 2), (2, 1), (1, 0), (1, 2))),
          lambda: rows[:, None] | cols[None, :], must_work=True)
    refuses("border_band_width 'same'", lambda: border_band_width(9, 3, 1, "same"))


def _reduction_border_band():
    from convbook.reduction import border_band_mask

    rows, cols = _band_reference(9, 3, 2, 1, 1), _band_reference(8, 2, 1, 0, 2)
    agree("reduction.border_band_mask tuples", lambda: np.asarray(border_band_mask((9, 8), (3, 2), (2, 1), (1, 0), (1, 2))),
          lambda: rows[:, None] | cols[None, :], must_work=True)
    square = _band_reference(7, 3, 2, 1, 1)
    agree("reduction.border_band_mask ints mean both axes", lambda: np.asarray(border_band_mask(7, 3, 2, 1, 1)),
          lambda: square[:, None] | square[None, :], must_work=True)
    agree("reduction.border_band_mask numpy", lambda: np.asarray(border_band_mask(np.int64(7), np.int64(3), np.int64(2), 1, 1)),
          lambda: square[:, None] | square[None, :])
    refuses("reduction.border_band_mask float", lambda: border_band_mask(7, 3.0))


def _grouped_grouped_cost():
    from convbook.grouped import grouped_cost

    for label, k in (("int", 5), ("tuple", (3, 1)), ("numpy", np.int64(3))):
        layer = nn.Conv2d(16, 8, k, groups=4, padding="same", bias=False, device="meta")
        agree(f"grouped_cost {label}", lambda: tuple(grouped_cost(16, 8, k, 4, (6, 5))),
              lambda: (sum(q.numel() for q in layer.parameters()), _flops(layer, (1, 16, 6, 5)) // 2), must_work=True)
    refuses("grouped_cost float kernel", lambda: grouped_cost(16, 8, 3.0, 4, (6, 5)))


def _grouped_resnext_params():
    from convbook.grouped import resnext_params

    for c, d, k in ((32, 4, 3), (np.int64(8), np.int64(2), np.int64(5))):
        c, d, k = int(c), int(d), int(k)
        block = [nn.Conv2d(64, c * d, 1, bias=False, device="meta"),
                 nn.Conv2d(c * d, c * d, k, groups=c, bias=False, device="meta"), nn.Conv2d(c * d, 64, 1, bias=False, device="meta")]
        agree(f"resnext_params {c, d, k}", lambda: resnext_params(np.int64(c), d, 64, np.int64(k)),
              lambda: sum(q.numel() for m in block for q in m.parameters()))
    refuses("resnext_params float kernel", lambda: resnext_params(32, 4, 256, 3.0))


def _impl_forward(name):
    def run():
        from convbook import impl

        forward2d(getattr(impl, name))()

    return run


def _impl_conv_params():
    from convbook.impl import conv_params

    x, w = _rand(2, 4, 7, 8, seed=16), _rand(6, 2, 3, 2, seed=17)
    for label, s, p, d in CASES_2D:
        agree(f"impl.conv_params {label}", lambda: (lambda r: (r.h_out, r.w_out))(conv_params(x, w, None, s, p, d, 2)),
              lambda: tuple(F.conv2d(x, w, stride=s, padding=p, dilation=d, groups=2).shape[2:]), must_work=label == "int")
    refuses("impl.conv_params float", lambda: conv_params(x, w, None, 2.0, 0, 1, 2))


def _impl_im2col():
    from convbook.impl import im2col, im2col_blowup

    x = _rand(2, 3, 7, 8, seed=18)
    for label, s, p, d in CASES_2D:
        agree(f"im2col {label}", lambda: im2col(x, (3, 2), s, p, d),
              lambda: F.unfold(x, (3, 2), dilation=_pl(d), padding=_pl(p), stride=_pl(s)), must_work=label == "int")
        agree(f"im2col_blowup {label}", lambda: im2col_blowup((7, 8), (3, 2), s, p, d),
              lambda: Fraction(F.unfold(x, (3, 2), dilation=_pl(d), padding=_pl(p), stride=_pl(s)).numel(), x.numel()),
              must_work=label == "int")
    refuses("im2col float", lambda: im2col(x, 3.0))


def _impl_counts():
    from convbook.impl import circular_alias_free, direct_mults, fft_mults

    for n, k in ((8, 3), (9, 4)):
        agree(f"direct_mults {n, k}", lambda: direct_mults(np.int64(n), np.int64(k), 2, 3),
              lambda: _flops(nn.Conv2d(2, 3, k, padding="same", bias=False, device="meta"), (1, 2, n, n)) // 2, must_work=True)
    same_for_numpy("fft_mults", lambda **a: fft_mults(**a), dict(n=8, k=3, c_in=2, c_out=3), ("k",))
    same_for_numpy("circular_alias_free", lambda **a: circular_alias_free(**a), dict(n=6, k=3, length=8), ("k",))


def _impl_fft_spectrum():
    from convbook.impl import fft_kernel_spectrum_numel

    def spectrum(c_in, c_out, n, k, p):  # what torch.fft.rfft2 returns for kernels zero-padded to the padded input
        lh, lw = n[0] + 2 * p[0], n[1] + 2 * p[1]
        return torch.fft.rfft2(torch.zeros(c_out, c_in, lh, lw)).numel()

    for n, k, p in ((8, 3, None), ((9, 7), (3, 5), None), ((6, 6), (3, 3), (1, 0))):
        nt, kt = ((n, n) if isinstance(n, int) else n), ((k, k) if isinstance(k, int) else k)
        pt = ((kt[0] - 1) // 2, (kt[1] - 1) // 2) if p is None else p
        agree(f"fft_kernel_spectrum_numel n={n} k={k} p={p}", lambda: fft_kernel_spectrum_numel(2, 3, n, k, p),
              lambda: spectrum(2, 3, nt, kt, pt), must_work=True)
    same_for_numpy("fft_kernel_spectrum_numel", lambda **a: fft_kernel_spectrum_numel(**a), dict(c_in=2, c_out=3, n=8, k=3),
                   ("k",))
    refuses("fft_kernel_spectrum_numel float padding", lambda: fft_kernel_spectrum_numel(2, 3, 8, 3, 1.0))


def _winograd_layer_ops():
    from convbook.impl import count_multiplications
    from convbook.winograd import conv2d_winograd, winograd_layer_ops

    x, w = _rand(1, 2, 6, 5, seed=40), _rand(3, 2, 3, 3, seed=41)
    _, counted = count_multiplications(conv2d_winograd, x, w, m=2)
    ops = winograd_layer_ops(2, 3, 4, 3, 3, 3, 2)
    assert sum(ops.values()) == counted, (ops, counted)
    same_for_numpy("winograd_layer_ops", lambda **a: winograd_layer_ops(**a),
                   dict(c_in=2, c_out=3, h_out=4, w_out=3, kh=3, kw=3, m=2), ("kh", "kw"))


def _impl_fft_kernel_spectrum():
    from convbook.impl import fft_kernel_spectrum

    w = _rand(3, 2, 3, 2, seed=42)

    def reference(d, lengths):  # rfft2 of the flipped kernel, zero-filled between taps, frequency-major
        d = (_pl(d), _pl(d)) if not isinstance(d, tuple) else tuple(_pl(v) for v in d)
        wd = torch.zeros(3, 2, d[0] * 2 + 1, d[1] * 1 + 1, dtype=D)
        wd[..., :: d[0], :: d[1]] = w
        return torch.fft.rfft2(torch.flip(wd, dims=(-2, -1)), s=lengths).permute(2, 3, 0, 1)

    for label, d in (("int", 2), ("tuple", (1, 3)), ("numpy", np.int64(2)), ("0-d tensor", torch.tensor(1))):
        agree(f"fft_kernel_spectrum {label}", lambda: fft_kernel_spectrum(w, (9, 8), d), lambda: reference(d, (9, 8)),
              must_work=True)
    refuses("fft_kernel_spectrum float dilation", lambda: fft_kernel_spectrum(w, (9, 8), 2.0))
    refuses("fft_kernel_spectrum length below the extent", lambda: fft_kernel_spectrum(w, (4, 8), 2))


def _winograd_choose_tile():
    from convbook.winograd import choose_tile, winograd_layer_ops

    for kh, kw in ((3, 3), (np.int64(5), np.int64(3))):
        best = min((2, 4), key=lambda m: sum(winograd_layer_ops(8, 8, 14, 14, int(kh), int(kw), m).values()))
        assert choose_tile(8, 8, 14, 14, kh, kw) == best
    refuses("choose_tile float kernel", lambda: choose_tile(8, 8, 14, 14, 3.0, 3))


def _reduction_conv1x1():
    from convbook.reduction import conv1x1_einsum

    x, w, b = _rand(2, 4, 7, 6, seed=19), _rand(3, 4, seed=20), _rand(3, seed=21)
    for s in (2, (2, 1), np.int64(3)):
        agree(f"conv1x1_einsum stride={s!r}", lambda: conv1x1_einsum(x, w, b, s), lambda: F.conv2d(x, w[:, :, None, None], b, s),
              must_work=isinstance(s, int))
    refuses("conv1x1_einsum float stride", lambda: conv1x1_einsum(x, w, b, 2.0))


PADDINGS = [("int", 1), ("tuple", (1, 0)), ("numpy", np.int64(1)), ("same", "same"), ("valid", "valid")]


def _separable():
    from convbook.separable import depthwise_separable_conv, low_rank_conv2d, two_pass_conv2d

    x, u, v = _rand(2, 3, 7, 8, seed=22), _rand(3, seed=23), _rand(2, seed=24)
    kernel = _rand(3, 2, seed=25)
    dw, pw = _rand(3, 1, 3, 2, seed=26), _rand(5, 3, 1, 1, seed=27)
    for label, p in PADDINGS:
        must = label == "int"
        agree(f"two_pass_conv2d {label}", lambda: two_pass_conv2d(x, u, v, p),
              lambda: F.conv2d(x, torch.outer(u, v).expand(3, 1, 3, 2), padding=_pl(p), groups=3), must_work=must)
        agree(f"low_rank_conv2d {label}", lambda: low_rank_conv2d(x, kernel, 2, p),
              lambda: F.conv2d(x, kernel.expand(3, 1, 3, 2), padding=_pl(p), groups=3), must_work=must)
        agree(f"depthwise_separable_conv {label}", lambda: depthwise_separable_conv(x, dw, pw, p),
              lambda: F.conv2d(F.conv2d(x, dw, padding=_pl(p), groups=3), pw), must_work=must)
    refuses("two_pass_conv2d float padding", lambda: two_pass_conv2d(x, u, v, 1.0))


def _separable_counts():
    from convbook.separable import depthwise_separable_multiplies, separable_multiplies

    for k in ((3, 2), 3, np.int64(5)):
        kh, kw = as_tuple(k, 2, "k")
        per_out = lambda shape: _flops(nn.Conv2d(1, 1, shape, bias=False, device="meta"), (1, 1, 12, 12)) // 2 // math.prod(
            (12 - shape[0] + 1, 12 - shape[1] + 1))
        agree(f"separable_multiplies {k!r}", lambda: separable_multiplies(k, 1), lambda: per_out((kh, 1)) + per_out((1, kw)),
              must_work=isinstance(k, tuple))
    for k in (3, np.int64(5)):
        kk = int(k)
        dense = _flops(nn.Conv2d(4, 6, kk, padding="same", bias=False, device="meta"), (1, 4, 9, 9)) // 2 // 81
        sep = _flops(nn.Sequential(nn.Conv2d(4, 4, kk, padding="same", groups=4, bias=False, device="meta"),
                                   nn.Conv2d(4, 6, 1, bias=False, device="meta")), (1, 4, 9, 9)) // 2 // 81
        agree(f"depthwise_separable_multiplies {k!r}", lambda: tuple(depthwise_separable_multiplies(4, 6, k)),
              lambda: (sep, dense), must_work=True)
    refuses("separable_multiplies float", lambda: separable_multiplies(3.0))


def _shortcuts():
    from convbook import shortcuts

    for s in (2, np.int64(2), 1):
        ref = lambda: (1, 8) + tuple(nn.Conv2d(4, 8, 1, stride=int(s))(torch.zeros(1, 4, 7, 6)).shape[2:])
        agree(f"ZeroPadShortcut stride={s!r}", lambda: tuple(shortcuts.ZeroPadShortcut(4, 8, s)(torch.zeros(1, 4, 7, 6)).shape), ref,
              must_work=isinstance(s, int))
        agree(f"shortcut B stride={s!r}", lambda: tuple(shortcuts.shortcut("B", 4, 8, s)(torch.zeros(1, 4, 7, 6)).shape), ref,
              must_work=isinstance(s, int))
        agree(f"bottleneck_block stride={s!r}",
              lambda: tuple(shortcuts.bottleneck_block(4, 2, 8, s, "B")(torch.zeros(1, 4, 7, 6)).shape), ref,
              must_work=isinstance(s, int))
        agree(f"Bottleneck stride={s!r}", lambda: tuple(shortcuts.Bottleneck(4, 2, 8, s, "B")(torch.zeros(1, 4, 7, 6)).shape), ref,
              must_work=isinstance(s, int))
    agree("bottleneck_shapes", lambda: shortcuts.bottleneck_shapes(4, 2, 8, np.int64(2), 7)["out"] if "out" in
          shortcuts.bottleneck_shapes(4, 2, 8, 2, 7) else list(shortcuts.bottleneck_shapes(4, 2, 8, np.int64(2), 7).values())[-1],
          lambda: tuple(shortcuts.bottleneck_block(4, 2, 8, 2, "B")(torch.zeros(1, 4, 7, 7)).shape[1:]))
    same_for_numpy("expected_coverage", lambda **a: shortcuts.expected_coverage(**a), dict(kind="A", stride=2, height=7, width=6),
                   ("stride",))
    same_for_numpy("shortcut_rank", lambda **a: shortcuts.shortcut_rank(**a),
                   dict(kind="B", in_channels=2, out_channels=4, stride=2, height=5, width=4), ("stride",))
    same_for_numpy("shortcut_cost", lambda **a: shortcuts.shortcut_cost(**a),
                   dict(kind="B", in_channels=2, out_channels=4, stride=2, size=6), ("stride",))


def _transposed_forward(name):
    def run():
        from convbook import transposed

        transposed2d(getattr(transposed, name))()

    return run


def _transposed_sizes():
    from convbook.transposed import equivalent_conv_padding, required_output_padding

    for n, k, s, p, d in ((9, 3, 2, 1, 2), (np.int64(8), np.int64(4), np.int64(3), np.int64(1), 1)):
        m = F.conv1d(torch.zeros(1, 1, int(n)), torch.zeros(1, 1, int(k)), stride=int(s), padding=int(p), dilation=int(d)).shape[-1]
        base = (m - 1) * int(s) - 2 * int(p) + int(d) * (int(k) - 1) + 1
        agree(f"required_output_padding {n, k, s, p, d}", lambda: required_output_padding(n, k, s, p, d),
              lambda: next(a for a in range(int(s)) if F.conv_transpose1d(torch.zeros(1, 1, m), torch.zeros(1, 1, int(k)), stride=int(s),
                                                                          padding=int(p), output_padding=a,
                                                                          dilation=int(d)).shape[-1] == int(n)),
              must_work=isinstance(n, int))
        assert base >= 1
    y, w = _rand(1, 2, 6, seed=28), _rand(2, 3, 4, seed=29)
    for k, p, d in ((4, 1, 2), (np.int64(4), np.int64(2), np.int64(1))):
        agree(f"equivalent_conv_padding {k!r}",
              lambda: F.conv1d(y, w.flip(-1).transpose(0, 1), padding=equivalent_conv_padding(k, p, d), dilation=int(d)),
              lambda: F.conv_transpose1d(y, w, padding=int(p), dilation=int(d)), must_work=isinstance(k, int))
    refuses("required_output_padding 'same'", lambda: required_output_padding(9, 3, 1, "same"))
    refuses("equivalent_conv_padding float", lambda: equivalent_conv_padding(3.0))


def _transposed_adjoint():
    from convbook.transposed import adjoint_inner_products

    x, w = _rand(1, 4, 7, 6, seed=30), _rand(6, 2, 3, 2, seed=31)
    for label, s, p, d in CASES_2D[:4]:
        rs, rp, rd = _pl(s), _pl(p), _pl(d)
        y = _torch(lambda: _rand(*F.conv2d(x, w, stride=rs, padding=rp, dilation=rd, groups=2).shape, seed=32))
        agree(f"adjoint_inner_products {label}", lambda: tuple(adjoint_inner_products(x, y, w, s, p, d, 2)),
              lambda: (float((F.conv2d(x, w, stride=rs, padding=rp, dilation=rd, groups=2) * y).sum()),
                       float((x * F.conv_transpose2d(y, w, stride=rs, padding=rp, dilation=rd, groups=2,
                                                     output_padding=tuple(
                                                         (x.shape[2 + j] + 2 * as_tuple(p, 2, "p")[j] - as_tuple(d, 2, "d")[j]
                                                          * (w.shape[2 + j] - 1) - 1) % as_tuple(s, 2, "s")[j]
                                                         for j in range(2)))).sum())),
              must_work=label == "int")


def _transposed_overlaps():
    from convbook.transposed import interior_overlap, overlap_count, overlap_count_2d, overlap_is_uniform

    for k, s, n in ((4, 2, 6), (np.int64(3), np.int64(2), np.int64(5)), (5, 3, 4)):
        ref = F.conv_transpose1d(torch.ones(1, 1, int(n)), torch.ones(1, 1, int(k)), stride=int(s))[0, 0].numpy()
        agree(f"overlap_count {k!r} {s!r}", lambda: np.asarray(overlap_count(k, s, n)).astype(float), lambda: ref.astype(float),
              must_work=isinstance(k, int))
        interior = ref[int(k) - 1: len(ref) - int(k) + 1] if len(ref) > 2 * int(k) else None
        if interior is not None and len(interior) >= int(s):
            agree(f"interior_overlap {k!r} {s!r}", lambda: sorted(np.asarray(interior_overlap(k, s)).tolist()),
                  lambda: sorted(interior[:int(s)].tolist()))
        agree(f"overlap_is_uniform {k!r} {s!r}", lambda: bool(overlap_is_uniform(k, s)),
              lambda: int(k) % int(s) == 0)
    ref2 = F.conv_transpose2d(torch.ones(1, 1, 4, 5), torch.ones(1, 1, 3, 4), stride=(2, 3))[0, 0].numpy()
    agree("overlap_count_2d", lambda: np.asarray(overlap_count_2d((3, 4), (2, 3), (4, 5))).astype(float), lambda: ref2.astype(float),
          must_work=True)
    refuses("overlap_count float", lambda: overlap_count(4.0, 2, 6))


def _transposed_upsampling():
    from convbook.transposed import pixel_shuffle_as_transposed, polyphase_sums, resize_conv, subpixel_conv

    x, w = _rand(1, 2, 5, 4, seed=33), _rand(3, 2, 3, 3, seed=34)
    ws = _rand(2 * 4, 2, 3, 3, seed=35)
    for label, p in PADDINGS:
        must = label == "int"
        agree(f"resize_conv {label}", lambda: resize_conv(x, w, 2, "nearest", p),
              lambda: F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w, padding=_pl(p)), must_work=must)
        agree(f"subpixel_conv {label}", lambda: subpixel_conv(x, ws, 2, p),
              lambda: F.pixel_shuffle(F.conv2d(x, ws, padding=_pl(p)), 2), must_work=must)
    for p in (1, (1, 0), np.int64(1)):
        def ours():
            v, q = pixel_shuffle_as_transposed(ws, 2, p)
            return F.conv_transpose2d(x, v, stride=2, padding=q)
        agree(f"pixel_shuffle_as_transposed p={p!r}", ours, lambda: F.pixel_shuffle(F.conv2d(x, ws, padding=_pl(p)), 2),
              must_work=isinstance(p, int))
    w1 = _rand(2, 2, 5, seed=36)
    for s, p in ((2, 0), (np.int64(3), np.int64(1))):
        out = F.conv_transpose1d(torch.ones(1, 2, 12, dtype=D), w1, stride=int(s), padding=int(p))[0]
        same_for_numpy(f"polyphase_sums s={s!r}", lambda **a: polyphase_sums(**a), dict(weight=w1, stride=int(s), padding=int(p)),
                       ("stride", "padding"))
        assert out.shape[-1] > 0


def _winograd_forward():
    from convbook.winograd import conv2d_winograd

    # Winograd tiles need stride 1 and dilation 1: the case that must work is the stride-1 one
    forward2d(conv2d_winograd, cases=[("int", 1, 1, 1)] + [(f"other {c[0]}", *c[1:]) for c in CASES_2D])()


def _bench_conv_counts():
    from convbook.bench import conv_counts

    x, w = (2, 4, 7, 8), (6, 2, 3, 2)
    for label, s, p, d in CASES_2D:
        layer = nn.Conv2d(4, 6, (3, 2), stride=_pl(s), padding=_pl(p), dilation=_pl(d), groups=2, bias=False, device="meta")
        agree(f"conv_counts {label}", lambda: conv_counts(x, w, s, p, d, 2)[0], lambda: _flops(layer, x), must_work=label == "int")
    refuses("conv_counts float stride", lambda: conv_counts(x, w, 2.0))


def _triton_forward():
    if not torch.cuda.is_available():
        pytest.skip("conv2d_triton needs a CUDA GPU with Triton")
    from convbook.triton_conv import conv2d_triton

    x, w = _rand(2, 4, 7, 8, seed=37).float().cuda(), _rand(6, 2, 3, 2, seed=38).float().cuda()
    for label, s, p, d in CASES_2D:
        agree(f"conv2d_triton {label}", lambda: conv2d_triton(x, w, None, s, p, d, 2, input_precision="ieee").double().cpu(),
              lambda: F.conv2d(x.double(), w.double(), stride=_pl(s), padding=_pl(p), dilation=_pl(d), groups=2).cpu(), must_work=label == "int")


def _conventions_padding():
    x, w = _rand(1, 2, 7, 6, seed=40), _rand(3, 2, 4, 3, seed=41)
    for label, p, st, d in (("int", 1, 2, 1), ("tuple", (2, 0), (1, 2), (1, 2)), ("numpy", np.int64(1), np.int64(1), np.int64(2)),
                            ("same", "same", 1, (1, 2)), ("valid", "valid", 2, 1)):
        def ours():
            (t, b), (l, r) = resolve_padding(p, (4, 3), st, d)
            assert padding_totals(p, (4, 3), st, d) == (t + b, l + r)
            return F.conv2d(F.pad(x, (l, r, t, b)), w, stride=_pl(st), dilation=_pl(d))
        agree(f"resolve_padding {label}", ours, lambda: F.conv2d(x, w, stride=_pl(st), padding=_pl(p), dilation=_pl(d)),
              must_work=True)
    refuses("resolve_padding strided same", lambda: resolve_padding("same", 3, 2))
    refuses("resolve_padding float", lambda: resolve_padding(1.0, 3))


def _dilated_polyphase():
    from convbook.dilated import dilated_conv_by_polyphase

    x, w = _rand(1, 2, 9, 8, seed=42), _rand(3, 2, 3, 2, seed=43)
    for label, p, d in (("int", 1, 2), ("tuple", (1, 0), (2, 3)), ("numpy", np.int64(1), np.int64(2)), ("same", "same", (1, 2)),
                        ("valid", "valid", 2)):
        agree(f"dilated_conv_by_polyphase {label}", lambda: dilated_conv_by_polyphase(x, w, d, p),
              lambda: F.conv2d(x, w, padding=_pl(p), dilation=_pl(d)), must_work=label == "int")
    refuses("dilated_conv_by_polyphase float", lambda: dilated_conv_by_polyphase(x, w, 2.0))


def _dilated_hdc():
    from convbook.dilated import hdc_max_gap, satisfies_hdc

    same_for_numpy("hdc_max_gap", lambda **a: hdc_max_gap(**a), dict(dilations=[1, 2, 5], kernel_size=3), ("kernel_size",))
    same_for_numpy("satisfies_hdc", lambda **a: satisfies_hdc(**a), dict(dilations=[1, 2, 5], kernel_size=3), ("kernel_size",))
    agree("hdc_max_gap numpy dilations", lambda: hdc_max_gap([np.int64(1), np.int64(2), np.int64(5)]),
          lambda: hdc_max_gap([1, 2, 5]), must_work=True)


def _impl_fft_counted():
    from convbook.impl import conv2d_fft_counted

    x, w = _rand(2, 6, 6, seed=44), _rand(3, 2, 3, 3, seed=45)
    for label, p in (("int", 1), ("numpy", np.int64(2)), ("same", "same"), ("valid", "valid")):
        agree(f"conv2d_fft_counted {label}", lambda: torch.as_tensor(conv2d_fft_counted(x.numpy(), w.numpy(), p)[0]),
              lambda: F.conv2d(x[None], w, padding=_pl(p))[0], must_work=label == "int")
    refuses("conv2d_fft_counted float", lambda: conv2d_fft_counted(x.numpy(), w.numpy(), 1.0))


def _receptive():
    from convbook.receptive import gradient_profile, padded_source, stacked_vs_single, tap_variance

    kernels = [np.ones(3), np.array([1.0, 2.0])]
    span, grad = _stack_reference((3, 2), (1, 2))
    agree("gradient_profile numpy dilations", lambda: np.asarray(gradient_profile(kernels, [np.int64(1), np.int64(2)]), dtype=float),
          lambda: np.asarray(gradient_profile(kernels, [1, 2]), dtype=float), must_work=True)
    refuses("gradient_profile float dilation", lambda: gradient_profile(kernels, [1, 2.0]))
    for mode in ("circular", "reflect"):
        for p in (2, np.int64(1)):
            pos = np.arange(-int(p), 6 + int(p))
            agree(f"padded_source {mode} p={p!r}", lambda: np.asarray(padded_source(pos, 6, mode, p)),
                  lambda: F.pad(torch.arange(6.0)[None, None], (int(p), int(p)), mode=mode)[0, 0].long().numpy(),
                  must_work=isinstance(p, int))
    for depth, k in ((3, 3), (2, np.int64(5))):
        field = depth * (int(k) - 1) + 1
        agree(f"stacked_vs_single k={k!r}", lambda: tuple(stacked_vs_single(depth, k, 2)),
              lambda: (field, depth * nn.Conv2d(2, 2, int(k), bias=False, device="meta").weight.numel(),
                       nn.Conv2d(2, 2, field, bias=False, device="meta").weight.numel()), must_work=isinstance(k, int))
    same_for_numpy("tap_variance", lambda **a: tap_variance(**a), dict(kernel=[1.0, 2.0, 1.0], dilation=2), ("dilation",))


def _transposed_overlap_nd():
    from convbook.transposed import overlap_count_nd

    for d in (1, (2, 1, 1), np.int64(2)):
        dd = as_tuple(d, 3, "d")
        ref = F.conv_transpose3d(torch.ones(1, 1, 3, 4, 2), torch.ones(1, 1, 2, 3, 2), stride=(2, 1, 3), dilation=dd)[0, 0]
        agree(f"overlap_count_nd d={d!r}", lambda: np.asarray(overlap_count_nd((2, 3, 2), (2, 1, 3), (3, 4, 2), d)).astype(float),
              lambda: ref.numpy().astype(float), must_work=isinstance(d, int))


def _transposed_constant_region():
    from convbook.transposed import resize_conv_constant_region

    same_for_numpy("resize_conv_constant_region", lambda **a: resize_conv_constant_region(**a), dict(out_size=9, padding=1),
                   ("padding",))


def _shortcuts_block_coverage():
    from convbook.shortcuts import expected_block_coverage

    same_for_numpy("expected_block_coverage", lambda **a: expected_block_coverage(**a),
                   dict(placement="v1", kind="B", stride=2, height=7, width=6), ("stride",))


def _dilated_zero_inserted():
    from convbook.dilated import conv_via_zero_inserted

    forward2d(conv_via_zero_inserted, groups=False, bias=False)()


def _triton_bound():
    from convbook.triton_conv import rounding_error_bound

    x, w = _rand(2, 4, 7, 8, seed=46), _rand(6, 2, 3, 2, seed=47)
    for label, s, p, d in CASES_2D:
        agree(f"rounding_error_bound {label}", lambda: tuple(rounding_error_bound(x, w, None, s, p, d, 2, mode="fp32-ieee").shape),
              lambda: tuple(F.conv2d(x, w, stride=_pl(s), padding=_pl(p), dilation=_pl(d), groups=2).shape),
              must_work=label == "int")
    refuses("rounding_error_bound float", lambda: rounding_error_bound(x, w, None, 2.0, mode="fp32-ieee"))


@dataclass(frozen=True)
class Exempt:
    """The function's matching argument is not a convolution argument, or it only draws."""

    why: str


DRAWING = Exempt("draws a figure; its sizes come from functions exercised in this table")

#: Every public function (or class) of convbook with a kernel-size / stride / padding / dilation
#: argument (or an alias), and how it is exercised against PyTorch.
TABLE: dict[str, Callable[[], None] | Exempt] = {
    # convbook.shapes
    "shapes.conv_output_size": size1d(lambda *a: shapes.conv_output_size(*a), F.conv1d, strings=True),
    "shapes.conv_transpose_output_size": size1d(lambda *a: shapes.conv_transpose_output_size(*a),
                                                F.conv_transpose1d, strings=False, transposed=True),
    "shapes.forward_preimages": _shapes_forward_preimages,
    "shapes.pool_output_size": size1d(lambda *a: shapes.pool_output_size(*a), F.max_pool1d,
                                      strings=False, pool=True),
    "shapes.avg_pool_output_size": size1d(lambda n, k, s=None, p=0, d=1: shapes.avg_pool_output_size(
        n, k, s, p) if d == 1 else shapes.pool_output_size(n, k, s, p, d), F.max_pool1d,
        strings=False, pool=True),
    "shapes.same_padding": _shapes_same_padding,
    "shapes.conv_output_shape": _shapes_conv_output_shape,
    "shapes.bottleneck_block": _shapes_bottleneck_block,
    "shapes.plot_arithmetic": DRAWING,
    # convbook.cost
    "cost.conv_params": _cost_conv_params,
    "cost.conv_out_size": _cost_conv_macs_and_sizes,
    "cost.conv_macs": _cost_conv_macs_and_sizes,
    "cost.pool_ops": _cost_pool_ops,
    "cost.separable_ratio": _cost_separable_ratio,
    # convbook.models
    "models.BasicBlock": _models_blocks,
    "models.Bottleneck": _models_blocks,
    "models.InvertedResidual": _models_blocks,
    # convbook.bench
    "bench.conv_counts": _bench_conv_counts,
    # convbook.conv
    "conv.correlate2d": _conv_correlate2d,
    "conv.conv2d_by_channels": forward2d(lambda *a, **k: conv_mod.conv2d_by_channels(*a, **k), groups=False),
    "conv.conv_matrix": _conv_conv_matrix,
    "conv.circular_conv2d": _conv_circular,
    "conv.equivariance_masks": _conv_equivariance_masks,
    "conv.plot_conv_matrix": DRAWING,
    "conv.plot_equivariance": DRAWING,
    # convbook.dilated
    "dilated.effective_kernel_size": _dilated_effective_kernel_size,
    "dilated.dilate_kernel": _dilated_dilate_kernel,
    "dilated.stack_receptive_field": _dilated_stacks,
    "dilated.stack_offsets": _dilated_stacks,
    "dilated.stack_path_counts": _dilated_stacks,
    "dilated.plot_gridding": DRAWING,
    # convbook.fold
    "fold.border_band_mask": _fold_border_band,
    "fold.border_band_width": _fold_border_band,
    "fold.plot_border_error": DRAWING,
    # convbook.grouped
    "grouped.grouped_cost": _grouped_grouped_cost,
    "grouped.resnext_params": _grouped_resnext_params,
    # convbook.impl
    "impl.ConvParams": Exempt("a record of values already validated by impl.conv_params (exercised below)"),
    "impl.conv_params": _impl_conv_params,
    "impl.conv2d_direct": _impl_forward("conv2d_direct"),
    "impl.im2col": _impl_im2col,
    "impl.conv2d_im2col": _impl_forward("conv2d_im2col"),
    "impl.im2col_blowup": _impl_im2col,
    "impl.circular_alias_free": _impl_counts,
    "impl.conv2d_fft": _impl_forward("conv2d_fft"),
    "impl.direct_mults": _impl_counts,
    "impl.fft_mults": _impl_counts,
    "impl.fft_kernel_spectrum_numel": _impl_fft_spectrum,
    "impl.float32_errors": Exempt("padding is handed to the algorithms (conv2d_direct, _im2col, _fft, _winograd), each exercised here"),
    "impl.plot_im2col": DRAWING,
    # convbook.receptive
    "receptive.plot_gridding": DRAWING,
    # convbook.reduction
    "reduction.conv1x1_einsum": _reduction_conv1x1,
    # convbook.separable
    "separable.kernel_rank": Exempt("kernel is a 2-D kernel matrix, not a kernel size"),
    "separable.separable_factors": Exempt("kernel is a 2-D kernel matrix, not a kernel size"),
    "separable.separable_terms": Exempt("kernel is a 2-D kernel matrix, not a kernel size"),
    "separable.plot_low_rank": DRAWING,
    "separable.two_pass_conv2d": _separable,
    "separable.low_rank_conv2d": _separable,
    "separable.depthwise_separable_conv": _separable,
    "separable.separable_multiplies": _separable_counts,
    "separable.depthwise_separable_multiplies": _separable_counts,
    # convbook.shortcuts
    "shortcuts.ZeroPadShortcut": _shortcuts,
    "shortcuts.shortcut": _shortcuts,
    "shortcuts.expected_coverage": _shortcuts,
    "shortcuts.shortcut_rank": _shortcuts,
    "shortcuts.shortcut_cost": _shortcuts,
    "shortcuts.Bottleneck": _shortcuts,
    "shortcuts.bottleneck_block": _shortcuts,
    "shortcuts.bottleneck_shapes": _shortcuts,
    # convbook.transposed
    "transposed.required_output_padding": _transposed_sizes,
    "transposed.equivalent_conv_padding": _transposed_sizes,
    "transposed.conv_transpose_by_scatter": _transposed_forward("conv_transpose_by_scatter"),
    "transposed.transposed_as_conv": _transposed_forward("transposed_as_conv"),
    "transposed.adjoint_inner_products": _transposed_adjoint,
    "transposed.overlap_count": _transposed_overlaps,
    "transposed.interior_overlap": _transposed_overlaps,
    "transposed.overlap_count_2d": _transposed_overlaps,
    "transposed.overlap_is_uniform": _transposed_overlaps,
    "transposed.polyphase_sums": _transposed_upsampling,
    "transposed.resize_conv": _transposed_upsampling,
    "transposed.subpixel_conv": _transposed_upsampling,
    "transposed.pixel_shuffle_as_transposed": _transposed_upsampling,
    "transposed.plot_overlap_patterns": DRAWING,
    "transposed.plot_checkerboard": DRAWING,
    # convbook.winograd
    "winograd.winograd_1d": Exempt("d is the input tile and g the filter of F(m, r), not a dilation"),
    "winograd.winograd_2d": Exempt("d is the input tile and g the filter of F(m×m, r×r), not a dilation"),
    "winograd.direct_correlation_1d": Exempt("d is the input tile, not a dilation"),
    "winograd.direct_correlation_2d": Exempt("d is the input tile, not a dilation"),
    "winograd.conv2d_winograd": _winograd_forward,
    "winograd.winograd_layer_ops": _winograd_layer_ops,
    "winograd.choose_tile": _winograd_choose_tile,
    # convbook.triton_conv
    "triton_conv.conv2d_triton": _triton_forward,
    "triton_conv.rounding_error_bound": _triton_bound,
    # convbook.conventions
    "conventions.resolve_padding": _conventions_padding,
    "conventions.padding_totals": _conventions_padding,
    # added later to the modules above
    "dilated.conv_via_zero_inserted": _dilated_zero_inserted,
    "dilated.dilated_conv_by_polyphase": _dilated_polyphase,
    "dilated.hdc_max_gap": _dilated_hdc,
    "dilated.satisfies_hdc": _dilated_hdc,
    "impl.conv2d_fft_counted": _impl_fft_counted,
    "impl.fft_kernel_spectrum": _impl_fft_kernel_spectrum,
    "receptive.Layer": Exempt("a record (NamedTuple) of one layer's k, s, p, d; the functions reading it are chapter 3's, "
                              "checked against autograd by its claims"),
    "receptive.effective_field_variance": _receptive,
    "receptive.gradient_profile": _receptive,
    "receptive.padded_source": _receptive,
    "receptive.stacked_vs_single": _receptive,
    "receptive.tap_variance": _receptive,
    "receptive.plot_effective_field": DRAWING,
    "shortcuts.expected_block_coverage": _shortcuts_block_coverage,
    "transposed.overlap_count_nd": _transposed_overlap_nd,
    "transposed.resize_conv_constant_region": _transposed_constant_region,
    "transposed.plot_scatter_steps": DRAWING,
    "reduction.border_band_mask": _reduction_border_band,
}


def _functions_with_conv_arguments() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for info in pkgutil.walk_packages(convbook.__path__, prefix="convbook."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        short = info.name.removeprefix("convbook.")
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            try:
                params = list(inspect.signature(obj).parameters)
            except (TypeError, ValueError):
                continue
            hits = [p for p in params if p in ALIASES]
            if hits:
                found[f"{short}.{name}"] = hits
    return found


FOUND = _functions_with_conv_arguments()


def test_every_function_with_conv_arguments_is_in_the_table():
    missing = sorted(set(FOUND) - set(TABLE))
    assert not missing, ("public functions taking a kernel size, stride, padding or dilation that the table does not "
                         f"exercise: {[(m, FOUND[m]) for m in missing]}")
    gone = sorted(set(TABLE) - set(FOUND))
    assert not gone, f"table entries whose function no longer takes such an argument (or is gone): {gone}"


def _exercisers() -> dict[str, Callable[[], None]]:
    """Each distinct exerciser once, named by the functions it covers."""
    by_fn: dict[int, tuple[list[str], Callable[[], None]]] = {}
    for name, entry in sorted(TABLE.items()):
        if not isinstance(entry, Exempt):
            by_fn.setdefault(id(entry), ([], entry))[0].append(name)
    return {"+".join(names): fn for names, fn in by_fn.values()}


EXERCISERS = _exercisers()


def test_exemptions_give_a_reason():
    assert all(e.why for e in TABLE.values() if isinstance(e, Exempt))


@pytest.mark.parametrize("names", sorted(EXERCISERS), ids=sorted(EXERCISERS))
def test_function_follows_pytorch_or_refuses(names: str):
    torch.manual_seed(0)
    EXERCISERS[names]()
