"""Chapter 2: output-size arithmetic of convolutions, transposed convolutions and pooling.

The one formula everything else in the book leans on:

    n_out = floor((n + 2p - d(k - 1) - 1) / s) + 1

for input size ``n``, kernel ``k``, stride ``s``, padding ``p`` (each side), dilation ``d``.
It counts the positions ``u = 0, 1, …`` at which the dilated kernel, started at padded index
``s·u``, still ends inside the padded input: ``s·u + d(k-1) ≤ n + 2p - 1``.

The transposed convolution's size is the inverse question — which input sizes ``m`` does the
forward convolution map to ``n``? — and pooling is the same window count with PyTorch's
``ceil_mode`` rule (the last window must start inside the input or the left padding).

Every formula exists twice: as an integer function (used everywhere in the book) and as a
sympy expression built from the derivation (``*_expr``); the claims check both against PyTorch
over exhaustive grids, and check that these functions refuse exactly the configurations
PyTorch refuses.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import warnings
from typing import Sequence

import numpy as np
import sympy as sp
import torch
import torch.nn as nn
import torch.nn.functional as F

from .claims import Tally, claim
from .conventions import as_int, as_tuple, padding_totals, resolve_padding
from .numerics import DTYPE, check_device

__all__ = [
    "conv_output_size",
    "conv_transpose_output_size",
    "forward_preimages",
    "pool_output_size",
    "avg_pool_output_size",
    "same_padding",
    "conv_output_shape",
    "layer_output_shape",
    "trace_shapes",
    "function_output_shape",
    "format_shape_table",
    "bottleneck_block",
    "conv_output_size_expr",
    "conv_transpose_output_size_expr",
    "pool_output_size_expr",
    "dumoulin_visin_relationships",
    "plot_arithmetic",
]

# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int | str = 0, dilation: int = 1) -> int:
    """Output length of a convolution along one axis (PyTorch semantics).

    ``floor((size + 2*padding - dilation*(kernel_size - 1) - 1) / stride) + 1``

    Arguments follow :mod:`convbook.conventions`: ints, numpy integers or 0-d integer tensors
    (never floats or bools); ``padding`` may also be ``'valid'`` (0) or ``'same'`` (stride 1
    only; total ``d(k-1)``, so the output size is ``size``).
    Rules (each raises ``ValueError`` naming it): size, kernel_size, stride, dilation ≥ 1;
    padding ≥ 0; the dilated kernel ``dilation*(kernel_size-1)+1`` must fit in the padded
    input ``size + 2*padding`` (otherwise the output would be empty).
    """
    size, kernel_size, stride, dilation = _ints(size=(size, 1), kernel_size=(kernel_size, 1), stride=(stride, 1),
                                                dilation=(dilation, 1))
    (total,) = padding_totals(padding, kernel_size, stride, dilation, 1)
    return _conv_size(size, kernel_size, stride, total, dilation)


def conv_transpose_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                               output_padding: int = 0) -> int:
    """Output length of a transposed convolution along one axis (PyTorch semantics).

    ``(size - 1)*stride - 2*padding + dilation*(kernel_size - 1) + output_padding + 1``

    For ``output_padding < stride`` the result ``m`` satisfies ``conv_output_size(m, k, s, p, d)
    == size``: the forward floor maps ``m0, m0+1, …, m0+s-1`` (``m0`` the value at
    ``output_padding = 0``) to ``size``, and ``output_padding`` picks one of them — those that
    are at least 1; when padding pushes ``m0 + output_padding`` below 1 the size is refused.

    Rules (``ValueError``): size, kernel_size, stride, dilation ≥ 1; padding, output_padding ≥ 0
    (ints only: PyTorch's transposed convolutions take no padding strings);
    ``output_padding`` smaller than stride or smaller than dilation (PyTorch's rule — note that
    ``s ≤ output_padding < d`` is accepted and then the result is *not* a preimage size);
    the result must be ≥ 1 (padding can eat the whole output).
    """
    _no_padding_string(padding)
    size, kernel_size, stride, padding, dilation, output_padding = _ints(
        size=(size, 1), kernel_size=(kernel_size, 1), stride=(stride, 1), padding=(padding, 0),
        dilation=(dilation, 1), output_padding=(output_padding, 0))
    if not (output_padding < stride or output_padding < dilation):
        raise ValueError(f"output_padding must be smaller than stride or dilation: output_padding = {output_padding}, "
                         f"stride = {stride}, dilation = {dilation}")
    out = (size - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1
    if out < 1:
        raise ValueError(f"output size < 1: (size-1)*stride - 2*padding + dilation*(kernel_size-1) + output_padding + 1 "
                         f"= {out} (size={size}, kernel_size={kernel_size}, stride={stride}, padding={padding}, "
                         f"dilation={dilation}, output_padding={output_padding})")
    return out


def forward_preimages(size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> tuple[int, ...]:
    """The input sizes ``m ≥ 1`` that a convolution (k, s, p, d) maps to ``size`` outputs, increasing.

    With ``m0 = (size-1)s - 2p + d(k-1) + 1`` they are ``m0, m0+1, …, m0+s-1`` (the floor in
    :func:`conv_output_size` takes the value ``size - 1`` on ``s`` consecutive numerators),
    keeping those ``≥ 1``: all ``s`` of them when ``m0 ≥ 1``, fewer (possibly none) when the
    padding is large. Every one of them fits the dilated kernel, since
    ``m + 2p - d(k-1) - 1 = (size-1)s + a ≥ 0``.
    """
    size, kernel_size, stride, padding, dilation = _ints(size=(size, 1), kernel_size=(kernel_size, 1),
                                                         stride=(stride, 1), padding=(padding, 0), dilation=(dilation, 1))
    m0 = (size - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + 1
    return tuple(m for m in range(m0, m0 + stride) if m >= 1)


def pool_output_size(size: int, kernel_size: int, stride: int | None = None, padding: int = 0, dilation: int = 1,
                     ceil_mode: bool = False) -> int:
    """Output length of max pooling along one axis (PyTorch's ``MaxPool*d`` semantics).

    ``q = (size + 2*padding - dilation*(kernel_size-1) - 1) / stride``; the output is
    ``floor(q) + 1``, or with ``ceil_mode`` ``ceil(q) + 1`` **minus one if the last window would
    start at or beyond** ``size + padding`` — i.e. in the right padding (the last window must
    start inside the input or the left padding). ``stride=None`` means ``stride=kernel_size``.

    Rules (``ValueError``): size, kernel_size, stride, dilation ≥ 1; padding ≥ 0 (no padding
    strings: pooling has none); ``padding ≤ kernel_size // 2`` ("pad at most half the kernel",
    on the undilated kernel); the output must be ≥ 1. With ``ceil_mode`` a window may overhang
    the input even when the kernel is larger than the padded input (PyTorch allows it), so there
    is no separate kernel-fits rule.
    """
    if stride is None:
        stride = kernel_size
    _no_padding_string(padding)
    size, kernel_size, stride, padding, dilation = _ints(size=(size, 1), kernel_size=(kernel_size, 1),
                                                         stride=(stride, 1), padding=(padding, 0), dilation=(dilation, 1))
    if not isinstance(ceil_mode, (bool, np.bool_)):
        raise ValueError(f"ceil_mode must be a bool, got {ceil_mode!r}")
    ceil_mode = bool(ceil_mode)
    if padding > kernel_size // 2:
        raise ValueError(f"pool padding must be at most half the kernel: padding = {padding} > "
                         f"kernel_size // 2 = {kernel_size // 2}")
    num = size + 2 * padding - dilation * (kernel_size - 1) - 1
    out = (num + (stride - 1 if ceil_mode else 0)) // stride + 1  # floor or ceil of num/stride, plus one
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # the last window would start in the right padding: drop it
    if out < 1:
        raise ValueError(f"output size < 1: pooling size={size}, kernel_size={kernel_size}, stride={stride}, "
                         f"padding={padding}, dilation={dilation}, ceil_mode={ceil_mode} gives {out}")
    return out


def avg_pool_output_size(size: int, kernel_size: int, stride: int | None = None, padding: int = 0,
                         ceil_mode: bool = False) -> int:
    """Output length of average pooling along one axis (PyTorch's ``AvgPool*d``).

    Average pooling has no dilation; otherwise the size (and the validity rules) are those of
    :func:`pool_output_size` with ``dilation=1`` — ``count_include_pad`` and
    ``divisor_override`` change the values, never the size.
    """
    return pool_output_size(size, kernel_size, stride, padding, 1, ceil_mode)


def same_padding(kernel_size: int, stride: int = 1, dilation: int = 1, size: int | None = None) -> tuple[int, int]:
    """``(left, right)`` zero padding that makes a convolution's output size ``ceil(size / stride)``.

    Stride 1 (PyTorch's ``padding='same'``): total ``d(k-1)``, ``left = total // 2``,
    ``right = total - left`` — the extra element of an odd total (even effective kernel) goes
    on the **right**, as PyTorch does. Stride > 1: PyTorch refuses ``padding='same'``; with
    ``size`` given this returns TensorFlow's ``'SAME'`` padding,
    ``total = max((ceil(size/s) - 1)s + d(k-1) + 1 - size, 0)``, split the same way.
    """
    kernel_size, stride, dilation = _ints(kernel_size=(kernel_size, 1), stride=(stride, 1), dilation=(dilation, 1))
    if stride == 1:
        ((left, right),) = resolve_padding("same", kernel_size, 1, dilation, 1)
        return left, right
    if size is None:
        raise ValueError(f"same padding with stride {stride} > 1 depends on the input size (PyTorch refuses "
                         f"padding='same' for strided convolutions): pass size=")
    size = as_int(size, "size", 1)
    total = max((-(-size // stride) - 1) * stride + dilation * (kernel_size - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def conv_output_shape(input_shape: Sequence[int], out_channels: int, kernel_size: int | Sequence[int],
                      stride: int | Sequence[int] = 1, padding: int | str | Sequence[int] = 0,
                      dilation: int | Sequence[int] = 1, groups: int = 1, transposed: bool = False,
                      output_padding: int | Sequence[int] = 0) -> tuple[int, ...]:
    """Shape ``(N, C_out, *spatial)`` of a (transposed) convolution of an ``(N, C_in, *spatial)`` input.

    The number of spatial axes is ``len(input_shape) - 2``; an int kernel size, stride, padding
    or dilation applies to every axis, a tuple must give one value per axis
    (:mod:`convbook.conventions`). Each axis follows :func:`conv_output_size` (or
    :func:`conv_transpose_output_size`); ``padding`` may be ``'valid'`` or ``'same'`` (stride 1
    only, not transposed). Rules (``ValueError``): ``groups ≥ 1`` must divide both ``C_in`` and
    ``out_channels``; channels ≥ 1; plus each axis' rules.
    """
    if isinstance(input_shape, (str, bytes)) or _is_scalar_like(input_shape):
        raise ValueError(f"input_shape must be (N, C_in, *spatial) with positive ints, got {input_shape!r}")
    shape = tuple(input_shape)
    if len(shape) < 3:
        raise ValueError(f"input_shape must be (N, C_in, *spatial) with positive ints, got {shape!r}")
    shape = tuple(as_int(v, f"input_shape[{i}]", 1) for i, v in enumerate(shape))
    nd = len(shape) - 2
    n, c_in, spatial = shape[0], shape[1], shape[2:]
    out_channels, groups = _ints(out_channels=(out_channels, 1), groups=(groups, 1))
    if c_in % groups or out_channels % groups:
        raise ValueError(f"groups must divide the channels: in_channels = {c_in}, out_channels = {out_channels}, "
                         f"groups = {groups}")
    k = as_tuple(kernel_size, nd, "kernel_size", 1)
    s = as_tuple(stride, nd, "stride", 1)
    d = as_tuple(dilation, nd, "dilation", 1)
    if transposed:
        p = tuple(left for left, _ in resolve_padding(padding, k, s, d, nd, allow_strings=False))
        op = as_tuple(output_padding, nd, "output_padding", 0)
        out = tuple(conv_transpose_output_size(spatial[j], k[j], s[j], p[j], d[j], op[j]) for j in range(nd))
    else:
        totals = padding_totals(padding, k, s, d, nd)
        out = tuple(_conv_size(spatial[j], k[j], s[j], totals[j], d[j]) for j in range(nd))
    return (n, out_channels, *out)


def layer_output_shape(module: nn.Module, input_shape: Sequence[int]) -> tuple[int, ...]:
    """Output shape of one layer from the formulas (the layer is not run).

    Knows ``Conv*d``, ``ConvTranspose*d`` (without an explicit ``output_size``), ``MaxPool*d``,
    ``AvgPool*d``, ``AdaptiveAvgPool*d``/``AdaptiveMaxPool*d``, ``Linear``, ``Flatten``,
    ``Upsample`` (``size`` or ``floor(n · scale_factor)``), the padding layers
    (``ReflectionPad*d``, ``ReplicationPad*d``, ``ZeroPad*d``, ``ConstantPad*d``, ``CircularPad*d``:
    each axis grows by its left + right padding), ``RNN``/``GRU``/``LSTM`` (the first output,
    ``(…, D·H_out)``), ``LayerNorm`` (its input must end in ``normalized_shape``) and
    shape-preserving layers (batch/group/instance norm, activations, dropout, identity).
    Anything else raises ``ValueError`` naming the module type.
    """
    shape = tuple(as_int(v, f"input_shape[{j}]", 0) for j, v in enumerate(input_shape))
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        _expect_channels(module, shape, module.in_channels)
        return conv_output_shape(shape, module.out_channels, module.kernel_size, module.stride, module.padding,
                                 module.dilation, module.groups)
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        _expect_channels(module, shape, module.in_channels)
        return conv_output_shape(shape, module.out_channels, module.kernel_size, module.stride, module.padding,
                                 module.dilation, module.groups, transposed=True, output_padding=module.output_padding)
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        nd = int(type(module).__name__[-2])
        if len(shape) != nd + 2:
            raise ValueError(f"{type(module).__name__} needs an input of rank {nd + 2} (N, C, *spatial), got {shape}")
        k = as_tuple(module.kernel_size, nd, "kernel_size", 1)
        s = as_tuple(module.stride if module.stride is not None else module.kernel_size, nd, "stride", 1)
        p = as_tuple(module.padding, nd, "padding", 0)
        d = as_tuple(getattr(module, "dilation", 1), nd, "dilation", 1)
        out = tuple(pool_output_size(shape[2 + j], k[j], s[j], p[j], d[j], bool(module.ceil_mode)) for j in range(nd))
        return (*shape[:2], *out)
    if isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                           nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)):
        nd = len(shape) - 2
        size = as_tuple(module.output_size, nd, "output_size", 1) if not isinstance(module.output_size, tuple) \
            else tuple(shape[2 + j] if v is None else v for j, v in enumerate(module.output_size))
        return (*shape[:2], *size)
    if isinstance(module, nn.Linear):
        if shape[-1] != module.in_features:
            raise ValueError(f"Linear expects in_features = {module.in_features} on the last axis, got shape {shape}")
        return (*shape[:-1], module.out_features)
    if isinstance(module, nn.Flatten):
        return _flatten_shape(shape, module.start_dim, module.end_dim)
    if isinstance(module, nn.Upsample):
        return _resize_shape(shape, module.size, module.scale_factor, "Upsample")
    if isinstance(module, _PADS):
        nd = int(type(module).__name__[-2])
        pad = as_tuple(module.padding, 2 * nd, "padding", 0)
        if len(shape) < nd + 1:
            raise ValueError(f"{type(module).__name__} needs at least {nd + 1} axes, got {shape}")
        return _pad_shape(shape, pad, type(module).__name__)
    if isinstance(module, nn.RNNBase):
        return _rnn_shapes(module, shape)[0]
    if isinstance(module, nn.LayerNorm):
        norm = tuple(module.normalized_shape)
        if tuple(shape[len(shape) - len(norm):]) != norm:
            raise ValueError(f"LayerNorm over {norm} needs an input ending in {norm}, got {shape}")
        return shape
    if isinstance(module, _SHAPE_PRESERVING):
        return shape
    raise ValueError(f"no shape rule for module type {type(module).__name__}")


def trace_shapes(model: nn.Module, input_shape: Sequence[int]) -> list[tuple[str, str, tuple[int, ...]]]:
    """Per-call output shapes of ``model`` for an input of ``input_shape``, from the formulas.

    The *structure* — which calls run, in which order, and which call produced each input —
    comes from :func:`convbook.graph.trace` (one run on meta tensors, so any model that runs
    works: Python control flow, a module called twice, wrappers ``torch.fx`` cannot trace).
    Every *shape* is then computed here, from the input shape forward: modules through
    :func:`layer_output_shape`, functions and tensor methods through the broadcasting, flatten,
    cat, reduction, view and interpolation rules of :func:`function_output_shape`; the shapes
    the run recorded are not used (except for tensors no call produced: parameters, constants).
    Returns rows ``(name, what it is, output shape)`` in execution order, the input first:
    ``name`` is the module's qualified name with ``.`` → ``_`` (``torch.fx``'s node names), or
    the op's name; a repeated name gets ``_1``, ``_2``, … . A call without a rule raises
    ``ValueError`` naming it; a model that fails on ``input_shape`` raises ``ValueError``.
    """
    import inspect

    from .graph import trace

    shape = tuple(as_int(v, f"input_shape[{j}]", 1) for j, v in enumerate(input_shape))
    g = trace(model, shape)
    try:
        first = next(iter(inspect.signature(model.forward).parameters))
    except (StopIteration, TypeError, ValueError):
        first = "input"
    rows = [(first, "input", shape)]
    seen: dict[str, int] = {first: 1}
    predicted: dict[int, list[tuple[int, ...]]] = {-1: [shape]}
    for c in g.calls:
        ins = [_predicted_input(predicted, g.calls, src, recorded)
               for src, recorded in zip(c.inputs, c.input_shapes)]
        if c.is_module:
            if not ins:
                raise ValueError(f"{c.name} ({c.kind}) is called without a tensor input")
            outs = _module_output_shapes(c.module, ins[0])
        else:
            outs = [function_output_shape(c.kind, _with_shapes(c.args, ins, c.input_shapes), c.kwargs)]
        predicted[c.index] = outs
        base = c.name.replace(".", "_")
        n = seen.get(base, 0)
        seen[base] = n + 1
        rows.append((base if n == 0 else f"{base}_{n}", c.kind, outs[0]))
    return rows


def function_output_shape(op: str, args: Sequence, kwargs: dict | None = None) -> tuple[int, ...]:
    """Output shape of a torch function or tensor method ``op`` from the shapes of its arguments.

    ``args``/``kwargs`` are the call's arguments with every tensor replaced by
    ``("tensor", shape)`` (as :class:`convbook.graph.Call` records them). Rules: element-wise
    binary ops (``add``, ``mul``, ``sub``, ``div``, …) broadcast; unary element-wise ops
    (activations, dropout, ``contiguous``, ``clone``, normalisations, softmax) keep the shape;
    ``flatten(start, end)`` multiplies the merged sizes; ``cat``/``stack`` add / insert the
    ``dim`` axis (other sizes must agree); reductions ``mean``/``sum``/``amax``/``amin`` over
    ``dim`` drop it (keep a 1 with ``keepdim``); ``view``/``reshape`` take the requested sizes,
    resolving one ``-1`` from the element count (which must match); ``permute``,
    ``transpose``, ``unsqueeze``, ``squeeze``; ``interpolate`` ``floor(n · scale)`` or ``size``;
    ``pad`` adds each (left, right) pair from the last axis backwards; ``linear`` replaces the
    last size by the weight's rows; ``adaptive_avg_pool*d`` takes ``output_size``. Anything
    else raises ``ValueError`` naming the op.
    """
    kwargs = dict(kwargs or {})
    tensors = [a for a in _flat_args((args, kwargs)) if _is_tshape(a)]
    if not tensors:
        raise ValueError(f"{op}: no tensor argument to compute a shape from")
    x = tuple(tensors[0][1])

    def arg(i, name, default=None):
        if len(args) > i:
            return args[i]
        return kwargs.get(name, default)

    if op in _BROADCAST_OPS:
        shapes = [tuple(t[1]) for t in tensors]
        try:
            return tuple(torch.broadcast_shapes(*shapes))
        except RuntimeError:
            raise ValueError(f"{op}: shapes {shapes} do not broadcast") from None
    if op in _SAME_SHAPE_OPS:
        return x
    if op == "flatten":
        return _flatten_shape(x, arg(1, "start_dim", 0), arg(2, "end_dim", -1))
    if op in ("cat", "concat", "concatenate", "stack"):
        seq = [tuple(t[1]) for t in (args[0] if args else kwargs["tensors"])]
        dim = arg(1, "dim", 0)
        if op == "stack":
            rank = len(seq[0]) + 1
            if any(s_ != seq[0] for s_ in seq):
                raise ValueError(f"torch.stack: every shape must agree, got {seq}")
            d = _dim(dim, rank, op)
            return (*seq[0][:d], len(seq), *seq[0][d:])
        return _cat_shape(seq, dim)
    if op in ("mean", "sum", "amax", "amin", "max", "min", "std", "var", "norm"):
        dim = arg(1, "dim", None)
        if op in ("max", "min") and dim is None:
            return ()
        keep = bool(arg(2, "keepdim", False))
        dims = range(len(x)) if dim is None else ((dim,) if isinstance(dim, int) else tuple(dim))
        dims = {_dim(d, len(x), op) for d in dims}
        return tuple(1 if i in dims else v for i, v in enumerate(x) if keep or i not in dims)
    if op in ("view", "reshape"):
        sizes = tuple(args[1:]) if len(args) > 1 else tuple(kwargs.get("shape", ()))
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
            sizes = tuple(sizes[0])
        return _resolve_view(x, tuple(int(v) for v in sizes), op)
    if op == "permute":
        dims = tuple(args[1:]) if len(args) > 1 else tuple(kwargs.get("dims", ()))
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        return tuple(x[_dim(d, len(x), op)] for d in dims)
    if op in ("transpose", "swapaxes"):
        a, b = _dim(arg(1, "dim0"), len(x), op), _dim(arg(2, "dim1"), len(x), op)
        out = list(x)
        out[a], out[b] = out[b], out[a]
        return tuple(out)
    if op == "unsqueeze":
        d = _dim(arg(1, "dim"), len(x) + 1, op)
        return (*x[:d], 1, *x[d:])
    if op == "squeeze":
        dim = arg(1, "dim", None)
        if dim is None:
            return tuple(v for v in x if v != 1)
        d = _dim(dim, len(x), op)
        return tuple(v for i, v in enumerate(x) if not (i == d and v == 1))
    if op in ("interpolate", "upsample"):
        return _resize_shape(x, arg(1, "size"), arg(2, "scale_factor"), op)
    if op == "pad":
        return _pad_shape(x, tuple(arg(1, "pad")), op)
    if op == "linear":
        w = tuple(tensors[1][1])
        if x[-1] != w[-1]:
            raise ValueError(f"linear: input's last size {x[-1]} != weight's in_features {w[-1]}")
        return (*x[:-1], w[0])
    if op.startswith("adaptive_") and op[-2:] in ("1d", "2d", "3d"):
        nd = int(op[-2])
        size = arg(1, "output_size")
        size = (size,) * nd if isinstance(size, int) else tuple(size)
        return (*x[:-nd], *(x[len(x) - nd + j] if v is None else v for j, v in enumerate(size)))
    raise ValueError(f"no shape rule for function {op}")


def format_shape_table(rows: Sequence[tuple[str, str, tuple[int, ...]]]) -> str:
    """Fixed-width text table of :func:`trace_shapes` rows."""
    w1 = max(len("node"), *(len(r[0]) for r in rows))
    w2 = max(len("layer"), *(len(r[1]) for r in rows))
    lines = [f"{'node':<{w1}}  {'layer':<{w2}}  output shape", f"{'-' * w1}  {'-' * w2}  ------------"]
    lines += [f"{name:<{w1}}  {what:<{w2}}  {tuple(shape)}" for name, what, shape in rows]
    return "\n".join(lines)


class _DenseBlock(nn.Module):
    """DenseNet-style block: each BN-ReLU-conv3×3 adds ``growth`` channels, concatenated to its input."""

    def __init__(self, in_channels: int, growth: int, layers: int):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(in_channels + i * growth), nn.ReLU(),
                          nn.Conv2d(in_channels + i * growth, growth, 3, padding=1, bias=False))
            for i in range(layers))

    def forward(self, x):
        for conv in self.convs:
            x = torch.cat([x, conv(x)], 1)
        return x


class _Bottleneck(nn.Module):
    """ResNet bottleneck (torchvision's v1.5 layout: the stride sits on the 3×3 conv)."""

    def __init__(self, c_in: int, width: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + self.downsample(x))


def bottleneck_block(c_in: int = 256, width: int = 128, c_out: int = 512, stride: int = 2) -> nn.Module:
    """A ResNet bottleneck that changes dimensions: 1×1 → 3×3 (stride) → 1×1, projection shortcut.

    ``stride`` is one integer for both axes (:mod:`convbook.conventions`)."""
    c_in, width, c_out, stride = _ints(c_in=(c_in, 1), width=(width, 1), c_out=(c_out, 1), stride=(stride, 1))
    return _Bottleneck(c_in, width, c_out, stride)


# --- symbolic forms, built from the derivations ----------------------------------------

n_, k_, s_, p_, d_, a_ = sp.symbols("n k s p d a", integer=True, positive=True)
_SYMBOLS = {"n": n_, "k": k_, "s": s_, "p": sp.Symbol("p", integer=True, nonnegative=True), "d": d_,
            "a": sp.Symbol("a", integer=True, nonnegative=True)}


@functools.lru_cache(maxsize=None)
def conv_output_size_expr() -> sp.Expr:
    """The output size as a sympy expression, derived by counting window positions.

    Window ``u`` starts at padded index ``s·u`` and its last tap reads ``s·u + d(k-1)``; it is
    valid while that is ≤ ``n + 2p - 1``. Solving the boundary equation for ``u`` gives the
    largest real ``u``; the count of integers ``0 … u_max`` is ``floor(u_max) + 1``.
    """
    n, k, s, p, d = (_SYMBOLS[c] for c in "nkspd")
    u = sp.Symbol("u", real=True)
    last_tap = s * u + d * (k - 1)
    (u_max,) = sp.solve(sp.Eq(last_tap, n + 2 * p - 1), u)
    return sp.floor(sp.simplify(u_max)) + 1


@functools.lru_cache(maxsize=None)
def conv_transpose_output_size_expr() -> sp.Expr:
    """Transposed size as a sympy expression: the smallest ``m`` that the forward conv maps to ``n``, plus ``a``.

    Forward: ``n = floor((m + 2p - d(k-1) - 1)/s) + 1``. The smallest ``m`` is where the floor's
    argument is exactly ``n - 1``; solving that for ``m`` and adding ``a`` (output_padding) gives
    the transposed output size.
    """
    n, k, s, p, d, a = (_SYMBOLS[c] for c in "nkspda")
    m = sp.Symbol("m", real=True)
    fwd = conv_output_size_expr().subs(_SYMBOLS["n"], m)  # floor((m + 2p - d(k-1) - 1)/s) + 1
    arg = _floor_arg(fwd)
    (m_min,) = sp.solve(sp.Eq(arg, n - 1), m)
    return sp.expand(m_min) + a


def pool_output_size_expr(ceil_mode: bool = False) -> sp.Expr:
    """Pooling size as sympy: the conv count with floor (or ceiling, before PyTorch's correction).

    With ``ceil_mode`` the expression is ``ceil(q) + 1``; PyTorch then subtracts one when the
    last window starts at or beyond ``n + p`` — a piecewise correction returned as a
    ``Piecewise``.
    """
    base = conv_output_size_expr()
    if not ceil_mode:
        return base
    n, s, p = _SYMBOLS["n"], _SYMBOLS["s"], _SYMBOLS["p"]
    q = _floor_arg(base)
    naive = sp.ceiling(q) + 1
    return sp.Piecewise((naive - 1, (naive - 1) * s >= n + p), (naive, True))


def dumoulin_visin_relationships() -> list[dict]:
    """Dumoulin & Visin's relationships 1–15 as specialisations of the general formulas.

    Each entry: ``number``, ``name``, ``kind`` ('conv', 'pool' or 'transposed'), ``params`` (the
    specialised values or constraints, as sympy substitutions), ``expr`` (the general formula
    specialised and simplified) and ``paper`` (the paper's form, for comparison).
    For a transposed relationship, ``n`` is the transposed layer's input size ``i'`` and the
    parameters are those of the *forward* convolution it transposes.
    """
    return [dict(r) for r in _dumoulin_visin_relationships()]


@functools.lru_cache(maxsize=None)
def _dumoulin_visin_relationships() -> tuple[dict, ...]:
    n, k, s, p, d, a = (_SYMBOLS[c] for c in "nkspda")
    h = sp.Symbol("h", integer=True, nonnegative=True)  # odd kernel k = 2h + 1
    conv, tr = conv_output_size_expr(), conv_transpose_output_size_expr()
    one = {d: 1}
    rel = [
        (1, "no zero padding, unit strides", "conv", {s: 1, p: 0, **one}, n - k + 1),
        (2, "zero padding, unit strides", "conv", {s: 1, **one}, n - k + 2 * p + 1),
        (3, "half (same) padding, odd k = 2h+1", "conv", {s: 1, k: 2 * h + 1, p: h, **one}, n),
        (4, "full padding p = k - 1", "conv", {s: 1, p: k - 1, **one}, n + k - 1),
        (5, "no zero padding, non-unit strides", "conv", {p: 0, **one}, sp.floor((n - k) / s) + 1),
        (6, "zero padding, non-unit strides", "conv", {**one}, sp.floor((n + 2 * p - k) / s) + 1),
        (7, "pooling", "pool", {p: 0, **one}, sp.floor((n - k) / s) + 1),
        (8, "transposed: no padding, unit strides", "transposed", {s: 1, p: 0, a: 0, **one}, n + k - 1),
        (9, "transposed: zero padding, unit strides", "transposed", {s: 1, a: 0, **one}, n + k - 2 * p - 1),
        (10, "transposed: half padding", "transposed", {s: 1, k: 2 * h + 1, p: h, a: 0, **one}, n),
        (11, "transposed: full padding", "transposed", {s: 1, p: k - 1, a: 0, **one}, n - k + 1),
        (12, "transposed: no padding, strides, (i - k) divisible by s", "transposed", {p: 0, a: 0, **one}, s * (n - 1) + k),
        (13, "transposed: padding, strides, (i + 2p - k) divisible by s", "transposed", {a: 0, **one}, s * (n - 1) + k - 2 * p),
        (14, "transposed: padding, strides, a = (i + 2p - k) mod s", "transposed", {**one}, s * (n - 1) + a + k - 2 * p),
        (15, "dilated convolution", "conv", {}, sp.floor((n + 2 * p - k - (k - 1) * (d - 1)) / s) + 1),
    ]
    out = []
    for number, name, kind, subs, paper in rel:
        base = tr if kind == "transposed" else conv
        out.append({"number": number, "name": name, "kind": kind, "params": subs,
                    "expr": sp.simplify(base.subs(subs, simultaneous=True)), "paper": paper})
    return tuple(out)


def plot_arithmetic(size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                    transposed: bool = False, output_padding: int = 0, ax=None):
    """Dumoulin & Visin-style diagram of a square 2-D (transposed) convolution.

    Left: the (padded) input grid — input cells filled, padding cells dashed; for a transposed
    convolution the input is drawn as the equivalent direct convolution sees it: ``s - 1`` zeros
    between input cells, ``d(k-1) - p`` padding on the left/top (``+ output_padding`` on the
    right/bottom). The kernel's taps at the first output position are shaded dark, at the last
    position outlined. Right: the output grid, whose number of cells comes from
    :func:`conv_output_size` / :func:`conv_transpose_output_size`.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if transposed:
        out = conv_transpose_output_size(size, kernel_size, stride, padding, dilation, output_padding)
        pad_lo = dilation * (kernel_size - 1) - padding
        if pad_lo < 0:
            raise ValueError(f"the diagram of a transposed convolution needs padding <= d(k-1): padding = {padding}")
        stretched = (size - 1) * stride + 1
        total = stretched + 2 * pad_lo + output_padding
        cells = {pad_lo + stride * i for i in range(size)}
        step = 1
    else:
        out = conv_output_size(size, kernel_size, stride, padding, dilation)
        pad_lo, total, step = padding, size + 2 * padding, stride
        cells = set(range(padding, padding + size))
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    gap = 2
    for r in range(total):
        for c in range(total):
            inside = r in cells and c in cells  # an input cell; everything else is padding or inserted zeros
            ax.add_patch(Rectangle((c, -r), 0.92, -0.92, facecolor="#8ab6d6" if inside else "white",
                                   edgecolor="#4a78a0" if inside else "0.6", ls="-" if inside else "--", lw=0.8))
    for (ur, uc), style in (((0, 0), dict(facecolor="#1f3b73", alpha=0.55)),
                            ((out - 1, out - 1), dict(facecolor="none", edgecolor="#c0392b", lw=1.6))):
        for ar in range(kernel_size):
            for ac in range(kernel_size):
                rr, cc = ur * step + dilation * ar, uc * step + dilation * ac
                ax.add_patch(Rectangle((cc + 0.08, -rr - 0.08), 0.76, -0.76, **style))
    x0 = total + gap
    for r in range(out):
        for c in range(out):
            face = "#1f3b73" if (r, c) == (0, 0) else ("#f2b8b0" if (r, c) == (out - 1, out - 1) else "#9fd9c4")
            ax.add_patch(Rectangle((x0 + c, -r), 0.92, -0.92, facecolor=face, edgecolor="#2e8b6b", lw=0.8))
    ax.set_xlim(-0.5, x0 + out + 0.5)
    ax.set_ylim(-max(total, out) - 0.5, 0.5)
    ax.set_aspect("equal")
    ax.axis("off")
    kind = "transposed conv" if transposed else "conv"
    extra = f", output_padding={output_padding}" if transposed else ""
    ax.set_title(f"{kind}: n={size}, k={kernel_size}, s={stride}, p={padding}, d={dilation}{extra}  →  {out}×{out} outputs",
                 fontsize=9)
    return ax


# --------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------

# Exhaustive 1-D grid bounds (stated in the chapter): every combination.
GRID_1D = dict(n=range(1, 13), k=range(1, 6), s=range(1, 5), p=range(0, 4), d=range(1, 4))


class _single_thread:
    """Run tiny-tensor grids on one intra-op thread (thread wake-ups dominate otherwise), then restore."""

    def __enter__(self):
        self.saved = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.saved)
        return False


def _single_threaded(check):
    @functools.wraps(check)
    def wrapper(device: str = "cpu"):
        with _single_thread():
            return check(device=device)

    return wrapper


def _torch_size(fn, shape, *args, **kwargs):
    """Run a PyTorch op on zeros of ``shape``; return its output's spatial shape, or None if it refuses."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tuple(fn(*args, **kwargs).shape[2:])
    except (RuntimeError, ValueError):
        return None


def _run_or_none(fn):
    """``fn()``, or None when PyTorch refuses (a planted padding may leave no output)."""
    try:
        return fn()
    except (RuntimeError, ValueError):
        return None


def _ours(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ValueError:
        return None


@claim(
    "shape.conv-output",
    title="Output size of a convolution",
    chapter=2,
    statement="Conv1d/2d/3d produce floor((n + 2p - d(k-1) - 1)/s) + 1 outputs per axis, for every n, k, s, d ≥ 1 and p ≥ 0 (values that differ between axes) where the dilated kernel fits the padded input, and for padding='valid' (p = 0) and padding='same' (s = 1; d(k-1) zeros in all, so n outputs); the formula derived symbolically agrees.",
    parameters=("stride", "padding", "dilation", "padding strings", "per-axis sizes"),
    reference="PyTorch F.conv1d/2d/3d output shapes",
    sympy_role="derived",
)
@_single_threaded
def check_conv_output(device: str = "cpu"):
    """Exhaustive grids: 1-D (n ≤ 12, k ≤ 5, s ≤ 4, p ≤ 3, d ≤ 3), 2-D and 3-D (smaller, mixed per axis)."""
    device = check_device(device)
    t = Tally()
    expr = conv_output_size_expr()
    f = sp.lambdify([_SYMBOLS[c] for c in "nkspd"], expr, "math")
    valid = 0
    for n, k, s, p, d in itertools.product(*GRID_1D.values()):
        ours = _ours(conv_output_size, n, k, s, p, d)
        x, w = torch.zeros(1, 1, n, dtype=DTYPE, device=device), torch.zeros(1, 1, k, dtype=DTYPE, device=device)
        ref = _torch_size(F.conv1d, x.shape, x, w, stride=s, padding=p, dilation=d)
        t.exact(ours == (None if ref is None else ref[0]), f"Conv1d n={n} k={k} s={s} p={p} d={d}: {ours} vs {ref}")
        if ours is not None:
            valid += 1
            t.exact(int(f(n, k, s, p, d)) == ours, f"sympy n={n} k={k} s={s} p={p} d={d}")
    strings = 0
    for n, k, s, d in itertools.product(range(1, 9), range(1, 6), range(1, 3), range(1, 4)):
        for pad in ("valid", "same"):
            x, w = torch.zeros(1, 1, n, dtype=DTYPE, device=device), torch.zeros(1, 1, k, dtype=DTYPE, device=device)
            ref = _torch_size(F.conv1d, x.shape, x, w, stride=s, padding=pad, dilation=d)
            ours = _ours(conv_output_size, n, k, s, pad, d)
            t.exact(ours == (None if ref is None else ref[0]), f"Conv1d n={n} k={k} s={s} padding={pad!r} d={d}: {ours} vs {ref}")
            strings += 1
    for nd, conv, grid in ((2, F.conv2d, _axis_grid(2, seed_stride=3)), (3, F.conv3d, _axis_grid(3, seed_stride=5))):
        for n, k, s, p, d in grid:
            ours = _ours(conv_output_shape, (1, 1, *n), 1, k, s, p, d)
            x, w = torch.zeros(1, 1, *n, dtype=DTYPE, device=device), torch.zeros(1, 1, *k, dtype=DTYPE, device=device)
            ref = _torch_size(conv, x.shape, x, w, stride=s, padding=p, dilation=d)
            t.exact((None if ours is None else ours[2:]) == ref, f"Conv{nd}d {n} {k} {s} {p} {d}")
            if s == (1,) * nd:
                ours = _ours(conv_output_shape, (1, 1, *n), 1, k, s, "same", d)
                ref = _torch_size(conv, x.shape, x, w, padding="same", dilation=d)
                t.exact((None if ours is None else ours[2:]) == ref, f"Conv{nd}d same {n} {k} {d}")
    t.note(f"1-D grid: {valid:,} valid configurations of n≤12, k≤5, s≤4, p≤3, d≤3 (the rest must be refused by both); "
           f"{strings:,} with padding='valid'/'same'; 2-D/3-D with sizes that differ between axes")
    return t.verdict("exhaustive grids vs F.conv1d/2d/3d + sympy form", case_unit="comparisons")


@claim(
    "shape.transpose-output",
    title="Output size of a transposed convolution",
    chapter=2,
    statement="ConvTranspose1d/2d/3d produce (n-1)s - 2p + d(k-1) + output_padding + 1 outputs per axis (values that differ between axes), and refuse when that is below 1; the sizes given by output_padding = 0, …, s-1 are exactly the input sizes m ≥ 1 that the forward convolution maps back to n: all s of m0, …, m0 + s - 1 (m0 the size at output_padding 0) when m0 ≥ 1, fewer when the padding pushes some below 1 (n = 1, k = 1, s = 3, p = 1 has only m = 1).",
    parameters=("stride", "padding", "dilation", "output_padding", "per-axis sizes"),
    reference="PyTorch F.conv_transpose1d/2d/3d output shapes; brute-force enumeration of the forward convolution's window count",
    sympy_role="derived",
)
@_single_threaded
def check_transpose_output(device: str = "cpu"):
    """Exhaustive 1-D grid (n ≤ 8, k ≤ 4, s ≤ 3, p ≤ 3, d ≤ 3, output_padding ≤ 2), smaller 2-D/3-D grids, preimage property."""
    device = check_device(device)
    t = Tally()
    f = sp.lambdify([_SYMBOLS[c] for c in "nkspda"], conv_transpose_output_size_expr(), "math")
    preimage = short = 0
    for n, k, s, p, d in itertools.product(range(1, 9), range(1, 5), range(1, 4), range(0, 4), range(1, 4)):
        # brute force: every m whose window count, s·u + d(k-1) ≤ m + 2p - 1 for u = 0 … n-1 only, is n
        brute = tuple(m for m in range(1, (n + 1) * s + d * k + 2) if sum(1 for u in range(m + 2 * p)
                                                                           if s * u + d * (k - 1) <= m + 2 * p - 1) == n)
        given = tuple(v for v in (_ours(conv_transpose_output_size, n, k, s, p, d, op) for op in range(s)) if v is not None)
        t.exact(given == brute == forward_preimages(n, k, s, p, d),
                f"preimages n={n} k={k} s={s} p={p} d={d}: transposed sizes {given}, brute force {brute}")
        short += len(brute) < s
    for n, k, s, p, d, op in itertools.product(range(1, 9), range(1, 5), range(1, 4), range(0, 4), range(1, 4), range(0, 3)):
        ours = _ours(conv_transpose_output_size, n, k, s, p, d, op)
        x, w = torch.zeros(1, 1, n, dtype=DTYPE, device=device), torch.zeros(1, 1, k, dtype=DTYPE, device=device)
        ref = _torch_size(F.conv_transpose1d, x.shape, x, w, stride=s, padding=p, output_padding=op, dilation=d)
        t.exact(ours == (None if ref is None else ref[0]), f"ConvTranspose1d n={n} k={k} s={s} p={p} d={d} op={op}: {ours} vs {ref}")
        if ours is not None:
            t.exact(int(f(n, k, s, p, d, op)) == ours, f"sympy n={n} k={k} s={s} p={p} d={d} op={op}")
            if op < s:  # the forward convolution maps the transposed size back to n
                preimage += 1
                t.exact(_ours(conv_output_size, ours, k, s, p, d) == n, f"preimage n={n} k={k} s={s} p={p} d={d} op={op}")
    for nd, fn in ((2, F.conv_transpose2d), (3, F.conv_transpose3d)):
        for n, k, s, p, d in _axis_grid(nd, seed_stride=7, transposed=True):
            op = tuple(max(sj, dj) - 1 for sj, dj in zip(s, d))
            ours = _ours(conv_output_shape, (1, 1, *n), 1, k, s, p, d, 1, True, op)
            x, w = torch.zeros(1, 1, *n, dtype=DTYPE, device=device), torch.zeros(1, 1, *k, dtype=DTYPE, device=device)
            ref = _torch_size(fn, x.shape, x, w, stride=s, padding=p, output_padding=op, dilation=d)
            t.exact((None if ours is None else ours[2:]) == ref, f"ConvTranspose{nd}d {n} {k} {s} {p} {d} {op}")
    t.note(f"{preimage:,} transposed sizes checked to map back to n under the forward convolution; in {short:,} "
           f"configurations the padding leaves fewer than s preimage sizes ≥ 1")
    return t.verdict("exhaustive grids vs F.conv_transpose1d/2d/3d + sympy form + preimage", case_unit="comparisons")


@claim(
    "shape.pool-ceil-mode",
    title="Pooling output size, floor and ceil mode",
    chapter=2,
    statement="MaxPool/AvgPool produce floor(q)+1 outputs, q = (n + 2p - d(k-1) - 1)/s, for every n, k, s, d ≥ 1 and 0 ≤ p ≤ k/2 (values that differ between axes), or with ceil_mode ceil(q)+1 minus one when the last window would start in the right padding; the naive ceil(q)+1 is wrong.",
    parameters=("ceil_mode", "stride", "padding", "dilation", "per-axis sizes"),
    reference="PyTorch F.max_pool1d, F.avg_pool1d and nn.MaxPool2d output shapes",
    sympy_role="verified for finitely many sizes",
)
@_single_threaded
def check_pool_ceil_mode(device: str = "cpu"):
    """Exhaustive 1-D grid (n ≤ 10, k ≤ 4, s ≤ 3, p ≤ 2, d ≤ 3, both modes) for max and avg pooling, 2-D spot grid."""
    device = check_device(device)
    t = Tally()
    naive_wrong = 0
    symbolic = {c: sp.lambdify([_SYMBOLS[v] for v in "nkspd"], pool_output_size_expr(c), "math") for c in (False, True)}
    for n, k, s, p, d, ceil in itertools.product(range(1, 11), range(1, 5), range(1, 4), range(0, 3), range(1, 4), (False, True)):
        x = torch.zeros(1, 1, n, dtype=DTYPE, device=device)
        ours = _ours(pool_output_size, n, k, s, p, d, ceil)
        ref = _torch_size(F.max_pool1d, x.shape, x, k, s, p, d, ceil_mode=ceil)
        t.exact(ours == (None if ref is None else ref[0]), f"MaxPool1d n={n} k={k} s={s} p={p} d={d} ceil={ceil}: {ours} vs {ref}")
        if ref is not None:  # the sympy form (the Piecewise of the last-window rule with ceil_mode) on the same grid
            t.exact(int(symbolic[ceil](n, k, s, p, d)) == ref[0], f"sympy pool n={n} k={k} s={s} p={p} d={d} ceil={ceil}")
        if d == 1:
            ours_a = _ours(avg_pool_output_size, n, k, s, p, ceil)
            ref_a = _torch_size(F.avg_pool1d, x.shape, x, k, s, p, ceil_mode=ceil)
            t.exact(ours_a == (None if ref_a is None else ref_a[0]), f"AvgPool1d n={n} k={k} s={s} p={p} ceil={ceil}")
        if ceil and ours is not None:
            naive = -(-(n + 2 * p - d * (k - 1) - 1) // s) + 1
            naive_wrong += naive != ours
    for n, k, s, p, d in _axis_grid(2, seed_stride=11, pool=True):
        for ceil in (False, True):
            x = torch.zeros(1, 1, *n, dtype=DTYPE, device=device)
            ours = _ours(layer_output_shape, nn.MaxPool2d(k, s, p, d, ceil_mode=ceil), (1, 1, *n))
            t.exact((None if ours is None else ours[2:]) == _torch_size(F.max_pool2d, x.shape, x, k, s, p, d, ceil_mode=ceil),
                    f"MaxPool2d {n} {k} {s} {p} {d} ceil={ceil}")
    t.exact(naive_wrong > 0, "the naive ceil formula should be wrong somewhere")
    t.note(f"the naive ceil(q)+1 disagrees with PyTorch in {naive_wrong} ceil-mode configurations of the 1-D grid")
    return t.verdict("exhaustive grids vs F.max_pool1d/2d, F.avg_pool1d + sympy form", case_unit="comparisons")


@claim(
    "shape.same-padding",
    title="'same' padding, including the asymmetric case",
    chapter=2,
    statement="padding='same' (stride 1) pads d(k-1) zeros in total, floor(d(k-1)/2) on the left and the rest on the right, for every k, d ≥ 1 and per axis; PyTorch's output equals the convolution of the input padded that way, and PyTorch refuses strided 'same'. For s ≥ 2, TensorFlow's 'SAME' padding (given the size n) is the smallest total that yields ceil(n/s) outputs, split the same way.",
    parameters=("kernel_size", "dilation", "stride"),
    reference="PyTorch F.conv1d/2d(padding='same') outputs, float64",
)
@_single_threaded
def check_same_padding(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = torch.Generator().manual_seed(2024)
    for n, k, d in itertools.product(range(1, 10), range(1, 6), range(1, 4)):
        left, right = same_padding(k, 1, d)
        x = torch.randn(1, 1, n, generator=gen, dtype=DTYPE).to(device)
        w = torch.randn(1, 1, k, generator=gen, dtype=DTYPE).to(device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = F.conv1d(x, w, padding="same", dilation=d)
        ours = _run_or_none(lambda: F.conv1d(F.pad(x, (left, right)), w, dilation=d))
        if ours is None:
            t.exact(False, f"same n={n} k={k} d={d}: pads ({left},{right}) leave no output")
            continue
        t.close(ours, ref, f"same n={n} k={k} d={d} pads=({left},{right})")
    for kh, kw in itertools.product(range(1, 5), repeat=2):
        (t0, b0), (l0, r0) = same_padding(kh), same_padding(kw, 1, 2)
        x = torch.randn(1, 2, 7, 8, generator=gen, dtype=DTYPE).to(device)
        w = torch.randn(3, 2, kh, kw, generator=gen, dtype=DTYPE).to(device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = F.conv2d(x, w, padding="same", dilation=(1, 2))
        ours = _run_or_none(lambda: F.conv2d(F.pad(x, (l0, r0, t0, b0)), w, dilation=(1, 2)))
        if ours is None:
            t.exact(False, f"same 2-D k=({kh},{kw}): no output")
            continue
        t.close(ours, ref, f"same 2-D k=({kh},{kw})")
    # strided: PyTorch refuses 'same'; TensorFlow-style padding gives ceil(n/s) outputs
    for n, k, s, d in itertools.product(range(1, 10), range(1, 5), range(2, 4), range(1, 3)):
        x, w = torch.zeros(1, 1, n, dtype=DTYPE, device=device), torch.zeros(1, 1, k, dtype=DTYPE, device=device)
        t.exact(_torch_size(F.conv1d, x.shape, x, w, stride=s, padding="same") is None, f"torch refuses strided same s={s}")
        t.exact(_ours(same_padding, k, s, d) is None, f"same_padding without size refuses s={s}")
        left, right = same_padding(k, s, d, size=n)
        out = _torch_size(F.conv1d, x.shape, F.pad(x, (left, right)), w, stride=s, dilation=d)
        # the smallest total padding that gives ceil(n/s) outputs: one zero less gives fewer (or none)
        less = _torch_size(F.conv1d, x.shape, F.pad(x, (left, right - 1)), w, stride=s, dilation=d) if right else None
        t.exact(out == (-(-n // s),) and 0 <= right - left <= 1 and (right == 0 or less is None or less[0] < -(-n // s)),
                f"TF same n={n} k={k} s={s} d={d}: pads ({left},{right}) give {out}, one less gives {less}")
    return t.verdict("F.conv1d/2d(padding='same') vs explicit (left, right) padding; strided refusals", dtype="float64")


@claim(
    "shape.validity-rules",
    title="Validity rules: convbook refuses exactly where PyTorch refuses",
    chapter=2,
    statement="conv_output_size, conv_transpose_output_size, pool_output_size and conv_output_shape raise ValueError exactly on the configurations (non-positive sizes, kernel larger than padded input, output < 1, output_padding ≥ both stride and dilation, pool padding > k/2, groups not dividing channels) where PyTorch raises.",
    parameters=("kernel fit", "output_padding", "pool padding", "groups"),
    reference="PyTorch raising (RuntimeError/ValueError) on the same configurations",
)
@_single_threaded
def check_validity_rules(device: str = "cpu"):
    """Grids that include zero and negative values; counts agreements of (raises, raises)."""
    device = check_device(device)
    t = Tally()
    refused = 0
    for n, k, s, p, d in itertools.product(range(1, 5), range(0, 4), range(0, 3), range(-1, 3), range(0, 3)):
        x, w = torch.zeros(1, 1, n, dtype=DTYPE, device=device), torch.zeros(1, 1, k, dtype=DTYPE, device=device)
        ref = _torch_size(F.conv1d, x.shape, x, w, stride=s, padding=p, dilation=d)
        ours = _ours(conv_output_size, n, k, s, p, d)
        t.exact((ref is None) == (ours is None), f"conv n={n} k={k} s={s} p={p} d={d}: torch {ref}, ours {ours}")
        refused += ref is None
    for n, k, s, p, d, op in itertools.product(range(1, 4), range(1, 4), range(1, 4), range(0, 4), range(1, 4), range(0, 4)):
        x, w = torch.zeros(1, 1, n, dtype=DTYPE, device=device), torch.zeros(1, 1, k, dtype=DTYPE, device=device)
        ref = _torch_size(F.conv_transpose1d, x.shape, x, w, stride=s, padding=p, output_padding=op, dilation=d)
        ours = _ours(conv_transpose_output_size, n, k, s, p, d, op)
        t.exact((ref is None) == (ours is None), f"transpose n={n} k={k} s={s} p={p} d={d} op={op}: torch {ref}, ours {ours}")
        refused += ref is None
    for n, k, s, p, d in itertools.product(range(1, 5), range(1, 5), range(0, 3), range(0, 4), range(1, 3)):
        x = torch.zeros(1, 1, n, dtype=DTYPE, device=device)
        ref = _torch_size(F.max_pool1d, x.shape, x, k, s, p, d)
        ours = _ours(pool_output_size, n, k, s, p, d)
        t.exact((ref is None) == (ours is None), f"pool n={n} k={k} s={s} p={p} d={d}")
        refused += ref is None
    for c_in, c_out, g in itertools.product(range(1, 5), range(1, 5), range(1, 5)):
        try:
            layer = nn.Conv1d(c_in, c_out, 3, groups=g).to(device=device, dtype=DTYPE)
            ref = tuple(layer(torch.zeros(1, c_in, 6, dtype=DTYPE, device=device)).shape)
        except (ValueError, RuntimeError):
            ref = None
        ours = _ours(conv_output_shape, (1, c_in, 6), c_out, 3, groups=g)
        t.exact(ref == ours, f"groups C_in={c_in} C_out={c_out} g={g}: torch {ref}, ours {ours}")
        refused += ref is None
    t.note(f"{refused:,} configurations refused by PyTorch, each refused by convbook too")
    return t.verdict("grids with invalid values: torch raises ⇔ convbook raises", case_unit="configurations")


@claim(
    "shape.trace",
    title="trace_shapes predicts every layer's output shape",
    chapter=2,
    statement="trace_shapes, computing every call's shape from the formulas (the model graph gives only which calls run on which inputs), gives the shape each layer produces when the model runs, for ResNet bottlenecks, a DenseNet-style block (torch.cat), a wrapper with Python control flow, a shared module, a layer scale, padding='same', Upsample, ReflectionPad2d, LayerNorm and x.mean (not traceable by torch.fx), and random conv/pool stacks with pooling ceil_mode and transposed output_padding.",
    parameters=("ceil_mode", "output_padding"),
    reference="running the model on CPU and recording each call's output shape",
)
@_single_threaded
def check_trace(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    gen = torch.Generator().manual_seed(77)
    # the chapter's full-size bottleneck, run once for real
    big = bottleneck_block().to(device=device, dtype=DTYPE).eval()
    pred = {name: s for name, _, s in trace_shapes(big, (1, 256, 56, 56))}
    for name, s in _run_shapes(big, (1, 256, 56, 56), device).items():
        t.exact(pred.get(name) == s, f"bottleneck {name}: predicted {pred.get(name)}, ran {s}")
    models = [(bottleneck_block(64, 64, 256, 1), (2, 64, 15, 15)), (bottleneck_block(32, 16, 64, 2), (1, 32, 9, 7)),
              (_DenseBlock(8, growth=4, layers=3), (1, 8, 11, 11)), (_Untraceable(), (2, 3, 12, 10)),
              (_Untraceable(), (1, 3, 7, 7))]
    for _ in range(10):
        nd = int(torch.randint(1, 3, (1,), generator=gen))
        layers, c = [], 2
        for _ in range(4):
            r = [int(v) for v in torch.randint(0, 4, (6,), generator=gen)]
            conv = (nn.Conv1d, nn.Conv2d)[nd - 1]
            if r[0] == 0:
                pool = (nn.MaxPool1d, nn.MaxPool2d)[nd - 1] if r[1] % 2 else (nn.AvgPool1d, nn.AvgPool2d)[nd - 1]
                layers.append(pool(2 + r[2] % 2, stride=1 + r[3] % 2, padding=r[4] % 2, ceil_mode=bool(r[5] % 2)))
            elif r[0] == 1:
                tconv = (nn.ConvTranspose1d, nn.ConvTranspose2d)[nd - 1]
                s = 1 + r[2] % 3
                layers.append(tconv(c, 2 * c, 1 + r[1], stride=s, padding=r[3] % 2, output_padding=r[4] % s))
                c *= 2
            else:
                layers.append(conv(c, c + 2, 1 + r[1], stride=1 + r[2] % 2, padding=r[3], dilation=1 + r[4] % 2))
                c += 2
            layers.append(nn.ReLU())
        models.append((nn.Sequential(*layers, nn.Flatten()), (1, 2) + (9,) * nd))
    for model, shape in models:
        model = model.to(device=device, dtype=DTYPE).eval()
        predicted = _ours(trace_shapes, model, shape)
        measured = _run_shapes(model, shape, device)
        if predicted is None or measured is None:
            t.exact(predicted is None and measured is None, f"refusal mismatch for {shape}")
            continue
        pred = {name: s for name, _, s in predicted}
        for name, s in measured.items():
            t.exact(pred.get(name) == s, f"{name}: predicted {pred.get(name)}, ran {s}")
    return t.verdict("trace_shapes vs running the model (shapes recorded on a real CPU run)", case_unit="layer shapes")


@claim(
    "shape.dv-unit-stride",
    title="Dumoulin & Visin relationships 1–4: unit strides",
    chapter=2,
    statement="With s = 1: o = i - k + 1 (no padding, rel. 1), o = i - k + 2p + 1 (rel. 2), o = i for k odd and p = floor(k/2) (rel. 3), o = i + k - 1 for p = k - 1 (rel. 4).",
    parameters=("padding",),
    reference="Dumoulin & Visin's printed relationships and PyTorch F.conv1d",
    sympy_role="proven for symbolic sizes",
)
@_single_threaded
def check_dv_unit_stride(device: str = "cpu"):
    return _check_dv(range(1, 5), device)


@claim(
    "shape.dv-strided",
    title="Dumoulin & Visin relationships 5–7: strides and pooling",
    chapter=2,
    statement="o = floor((i - k)/s) + 1 without padding (rel. 5), o = floor((i + 2p - k)/s) + 1 with padding (rel. 6), and pooling follows rel. 5 (rel. 7).",
    parameters=("stride",),
    reference="Dumoulin & Visin's printed relationships and PyTorch F.conv1d/F.max_pool1d",
    sympy_role="proven for symbolic sizes",
)
@_single_threaded
def check_dv_strided(device: str = "cpu"):
    return _check_dv(range(5, 8), device)


@claim(
    "shape.dv-transposed",
    title="Dumoulin & Visin relationships 8–14: transposed convolutions",
    chapter=2,
    statement="The transposed counterparts: o' = i' + k - 1 (rel. 8), i' + k - 2p - 1 (rel. 9), i' (rel. 10), i' - k + 1 (rel. 11), s(i' - 1) + k (rel. 12), s(i' - 1) + k - 2p (rel. 13), s(i' - 1) + a + k - 2p with a = (i + 2p - k) mod s (rel. 14).",
    parameters=("output_padding",),
    reference="Dumoulin & Visin's printed relationships and PyTorch F.conv_transpose1d",
    sympy_role="proven for symbolic sizes",
)
@_single_threaded
def check_dv_transposed(device: str = "cpu"):
    return _check_dv(range(8, 15), device)


@claim(
    "shape.dv-dilated",
    title="Dumoulin & Visin relationship 15: dilated convolutions",
    chapter=2,
    statement="A dilated convolution has o = floor((i + 2p - k - (k - 1)(d - 1))/s) + 1 outputs: the kernel acts as one of size k + (k-1)(d-1).",
    parameters=("dilation",),
    reference="Dumoulin & Visin's printed relationship and PyTorch F.conv1d",
    sympy_role="proven for symbolic sizes",
)
@_single_threaded
def check_dv_dilated(device: str = "cpu"):
    return _check_dv(range(15, 16), device)


# --------------------------------------------------------------------------------------
# Private helpers
# --------------------------------------------------------------------------------------

_SHAPE_PRESERVING = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU,
                     nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout, nn.Dropout2d, nn.Dropout3d, nn.Hardswish,
                     nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.ELU, nn.SELU, nn.Mish,
                     nn.PReLU, nn.Hardsigmoid, nn.Hardtanh, nn.Softmax, nn.LogSoftmax, nn.Softplus, nn.AlphaDropout)
_PADS = tuple(getattr(nn, f"{kind}Pad{nd}d") for kind in ("Reflection", "Replication", "Zero", "Constant", "Circular")
              for nd in (1, 2, 3) if hasattr(nn, f"{kind}Pad{nd}d"))


def _probe_shapes(model: nn.Module) -> list[tuple[int, ...]]:
    """Input shapes to run ``model`` on when only the model is given, most likely first.

    The first layer in definition order that fixes the input's layout decides: a (transposed)
    conv or ``BatchNorm{n}d`` gives ``(2, C, n, …)`` with its channels and ``nd`` spatial axes
    (``BatchNorm1d`` also ``(2, C)``), a ``Linear`` ``(2, in_features)``; a pooling or padding
    layer gives ``nd``. Channel candidates follow from the convs' ``in_channels`` (1 without
    any). Spatial sizes are large enough for any chain of small kernels and strides (the runs
    use meta tensors: nothing is allocated)."""
    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    bns = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    pools = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d) + _PADS
    first, channels = None, []
    for m in model.modules():
        if first is None and isinstance(m, convs + bns + pools + (nn.Linear,)):
            first = m
        if isinstance(m, convs) and m.in_channels not in channels:
            channels.append(m.in_channels)
    if isinstance(first, nn.Linear):
        return [(2, first.in_features)]
    nd = int(type(first).__name__[-2]) if first is not None else 1
    if isinstance(first, convs):
        lead = [first.in_channels]
    elif isinstance(first, bns):
        lead = [first.num_features]
    else:
        lead = []
    cands = list(dict.fromkeys(lead + channels[:3])) or [1]
    sizes = {1: (256, 4096), 2: (64, 512), 3: (24, 96)}[nd]
    out = [(2, c, *(n,) * nd) for n in sizes for c in cands]
    if isinstance(first, nn.BatchNorm1d):
        out.append((2, first.num_features))
    return out


def _ints(**values: tuple[object, int]) -> tuple[int, ...]:
    """Each ``name=(value, minimum)`` through :func:`convbook.conventions.as_int`, in order."""
    return tuple(as_int(value, name, low) for name, (value, low) in values.items())


def _no_padding_string(padding) -> None:
    if isinstance(padding, str):  # the refusal of convbook.conventions, with its message
        resolve_padding(padding, 1, 1, 1, 1, allow_strings=False)


def _is_scalar_like(value) -> bool:
    return isinstance(value, (int, np.integer)) or (isinstance(value, torch.Tensor) and value.dim() == 0)


def _conv_size(size: int, kernel_size: int, stride: int, total_padding: int, dilation: int) -> int:
    """``floor((size + total_padding - d(k-1) - 1)/s) + 1`` after the kernel-fits rule."""
    effective = dilation * (kernel_size - 1) + 1
    if effective > size + total_padding:
        raise ValueError(
            f"dilated kernel larger than padded input: dilation*(kernel_size-1)+1 = {effective} > "
            f"size + padding (both sides) = {size + total_padding}"
        )
    return (size + total_padding - effective) // stride + 1


def _expect_channels(module: nn.Module, shape: tuple[int, ...], c_in: int) -> None:
    nd = int(type(module).__name__[-2])
    if len(shape) != nd + 2 or shape[1] != c_in:
        raise ValueError(f"{type(module).__name__} expects (N, {c_in}, {nd} spatial axes), got input shape {shape}")


def _flatten_shape(shape: tuple[int, ...], start: int, end: int) -> tuple[int, ...]:
    rank = len(shape)
    start, end = start % rank, end % rank
    merged = 1
    for v in shape[start:end + 1]:
        merged *= v
    return (*shape[:start], merged, *shape[end + 1:])


_BROADCAST_OPS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "true_divide", "rsub", "pow", "maximum",
                  "minimum", "where", "eq", "ne", "lt", "gt", "le", "ge", "logical_and", "logical_or", "floor_divide",
                  "remainder", "mod", "and", "or", "xor"}
_SAME_SHAPE_OPS = {"relu", "relu_", "relu6", "sigmoid", "sigmoid_", "tanh", "tanh_", "gelu", "silu", "silu_", "hardswish",
                   "hardsigmoid", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "mish",
                   "softplus", "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "contiguous", "clone",
                   "float", "double", "half", "bfloat16", "to", "type_as", "abs", "neg", "exp", "log", "sqrt", "rsqrt",
                   "square", "reciprocal", "sin", "cos", "erf", "softmax", "log_softmax", "batch_norm", "layer_norm",
                   "group_norm", "instance_norm", "local_response_norm", "normalize", "clamp", "clamp_", "clip",
                   "detach", "neg_", "abs_", "exp_", "sign", "floor", "ceil", "round", "zero_", "fill_", "cumsum",
                   "prelu", "channel_shuffle", "roll", "flip", "dropout_"}


def _is_tshape(a) -> bool:
    return isinstance(a, tuple) and len(a) == 2 and a[0] == "tensor" and isinstance(a[1], tuple)


def _flat_args(obj) -> list:
    """Arguments in order, lists/tuples/dicts opened (a ``("tensor", shape)`` pair stays whole)."""
    if _is_tshape(obj):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [v for o in obj for v in _flat_args(o)]
    if isinstance(obj, dict):
        return [v for o in obj.values() for v in _flat_args(o)]
    return [obj]


def _with_shapes(obj, predicted: list, recorded: list):
    """``obj`` with the call's data inputs' recorded ``("tensor", shape)`` pairs replaced, in order,
    by the predicted shapes (pairs of parameters, which are not data inputs, are kept)."""
    state = {"j": 0}

    def walk(o):
        if _is_tshape(o):
            j = state["j"]
            if j < len(recorded) and tuple(o[1]) == tuple(recorded[j]):
                state["j"] = j + 1
                return ("tensor", tuple(predicted[j]))
            return o
        if isinstance(o, (list, tuple)) and not hasattr(o, "_fields"):
            return type(o)(walk(v) for v in o)
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()}
        return o

    return walk(obj)


def _predicted_input(predicted: dict, calls, src, recorded) -> tuple[int, ...]:
    """Predicted shape of one input: the producer's predicted output it reads (the recorded shape
    picks which output of a call with several), or the recorded shape of a tensor no call produced."""
    if src is None:
        return tuple(recorded)
    outs = predicted[src]
    if src >= 0 and len(outs) > 1:
        rec = calls[src].output_shapes
        j = next((i for i, r in enumerate(rec) if tuple(r) == tuple(recorded)), 0)
        return outs[min(j, len(outs) - 1)]
    return outs[0]


def _module_output_shapes(module: nn.Module, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every tensor output's shape of one module call (an RNN returns output and hidden states)."""
    if isinstance(module, nn.RNNBase):
        return _rnn_shapes(module, shape)
    return [layer_output_shape(module, shape)]


def _rnn_shapes(module: nn.RNNBase, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """``RNN``/``GRU``/``LSTM``: output ``(L, N, D·H_out)`` (batch first: ``(N, L, ·)``; unbatched
    ``(L, ·)``), hidden ``(D·num_layers, N, H_out)`` (LSTM: cell with ``hidden_size``)."""
    if len(shape) not in (2, 3) or shape[-1] != module.input_size:
        raise ValueError(f"{type(module).__name__} expects (L, N, {module.input_size}) or (L, {module.input_size}), "
                         f"got {shape}")
    d = 2 if module.bidirectional else 1
    h_out = module.proj_size if getattr(module, "proj_size", 0) else module.hidden_size
    batch = () if len(shape) == 2 else ((shape[0],) if module.batch_first else (shape[1],))
    out = (*shape[:-1], d * h_out)
    hidden = (d * module.num_layers, *batch, h_out)
    if isinstance(module, nn.LSTM):
        return [out, hidden, (d * module.num_layers, *batch, module.hidden_size)]
    return [out, hidden]


def _dim(d, rank: int, op: str) -> int:
    d = int(d)
    if not -rank <= d < rank:
        raise ValueError(f"{op}: dim {d} out of range for rank {rank}")
    return d % rank


def _resolve_view(x: tuple[int, ...], sizes: tuple[int, ...], op: str) -> tuple[int, ...]:
    """``view``/``reshape``: at most one ``-1``, resolved so the element count is kept (which must match)."""
    total = 1
    for v in x:
        total *= v
    known = 1
    for v in sizes:
        if v != -1:
            known *= v
    if sizes.count(-1) > 1:
        raise ValueError(f"{op}: at most one -1 in {sizes}")
    if -1 in sizes:
        if known == 0 or total % known:
            raise ValueError(f"{op}: {x} cannot be viewed as {sizes}")
        sizes = tuple(total // known if v == -1 else v for v in sizes)
    elif known != total:
        raise ValueError(f"{op}: {x} has {total} elements, {sizes} has {known}")
    return sizes


def _resize_shape(x: tuple[int, ...], size, scale, op: str) -> tuple[int, ...]:
    """Upsampling: spatial axes become ``size`` or ``floor(n · scale_factor)``."""
    nd = len(x) - 2
    if size is not None:
        out = (size,) * nd if isinstance(size, int) else tuple(size)
    elif scale is not None:
        sc = (scale,) * nd if isinstance(scale, (int, float)) else tuple(scale)
        out = tuple(int(math.floor(x[2 + j] * float(sc[j]))) for j in range(nd))
    else:
        raise ValueError(f"{op}: needs size or scale_factor")
    return (*x[:2], *(int(v) for v in out))


def _pad_shape(x: tuple[int, ...], pad: tuple[int, ...], op: str) -> tuple[int, ...]:
    """``F.pad``: ``pad = (left_last, right_last, left_prev, right_prev, …)`` from the last axis backwards."""
    if len(pad) % 2 or len(pad) // 2 > len(x):
        raise ValueError(f"{op}: pad {pad} must have an even length ≤ 2 · rank")
    out = list(x)
    for j in range(len(pad) // 2):
        out[len(x) - 1 - j] += pad[2 * j] + pad[2 * j + 1]
        if out[len(x) - 1 - j] < 1:
            raise ValueError(f"{op}: padding {pad} leaves an empty axis in {x}")
    return tuple(out)


def _cat_shape(shapes: list[tuple[int, ...]], dim: int) -> tuple[int, ...]:
    """``torch.cat`` along ``dim``: sizes add along ``dim``, every other size must agree."""
    if not shapes:
        raise ValueError("torch.cat needs at least one tensor")
    rank = len(shapes[0])
    if not -rank <= dim < rank:
        raise ValueError(f"torch.cat dim {dim} out of range for rank {rank}")
    d = dim % rank
    for s in shapes:
        if len(s) != rank or any(s[i] != shapes[0][i] for i in range(rank) if i != d):
            raise ValueError(f"torch.cat: shapes must agree except along dim {dim}, got {shapes}")
    return tuple(sum(s[d] for s in shapes) if i == d else shapes[0][i] for i in range(rank))


def _run_shapes(model: nn.Module, shape, device) -> dict[str, tuple[int, ...]] | None:
    """Run ``model`` for real (CPU, float32) and record every call's first output shape, keyed by
    the row names of :func:`trace_shapes`; ``None`` when the model fails on ``shape``."""
    from .graph import trace

    try:
        g = trace(model, shape, prefer_meta=False)
    except ValueError:
        return None
    seen: dict[str, int] = {}
    out: dict[str, tuple[int, ...]] = {}
    for c in g.calls:
        base = c.name.replace(".", "_")
        n = seen.get(base, 0)
        seen[base] = n + 1
        if c.output_shape is not None:
            out[base if n == 0 else f"{base}_{n}"] = c.output_shape
    return out


class _Untraceable(nn.Module):
    """Python control flow on sizes, a shared conv called twice, a layer scale, padding='same',
    Upsample, ReflectionPad2d, LayerNorm and ``x.mean``: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.pad = nn.ReflectionPad2d((1, 2, 0, 1))
        self.conv = nn.Conv2d(3, 6, 3)
        self.same = nn.Conv2d(6, 6, (5, 3), padding="same", dilation=(1, 2))
        self.gamma = nn.Parameter(torch.full((6, 1, 1), 0.1))
        self.up = nn.Upsample(scale_factor=1.5, mode="nearest")
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        x = self.conv(self.pad(x))
        for _ in range(2 if x.size(-1) > 8 else 1):
            x = x + self.same(x) * self.gamma
        x = self.pool(self.up(x))
        z = self.norm(x.mean((2, 3)))
        return self.head(z).view(x.size(0), 2, -1)


def _floor_arg(expr: sp.Expr) -> sp.Expr:
    """The argument of the (single) floor in ``expr``."""
    floors = list(expr.atoms(sp.floor))
    if len(floors) != 1:
        raise ValueError(f"expected exactly one floor in {expr}")
    return floors[0].args[0]


def _axis_grid(nd: int, seed_stride: int, transposed: bool = False, pool: bool = False):
    """A deterministic grid of per-axis parameter tuples for 2-D/3-D checks (axes differ)."""
    ns, ks, ss, ps, ds = range(1, 7 if nd == 2 else 5), range(1, 4), range(1, 3), range(0, 3), range(1, 3)
    rows = []
    for n0, k0, s0, p0, d0 in itertools.product(ns, ks, ss, ps, ds):
        # the second/third axis use shifted values so that axes do not move in lock-step
        n = tuple(1 + (n0 - 1 + seed_stride * j) % len(ns) for j in range(nd))
        k = tuple(1 + (k0 - 1 + j) % len(ks) for j in range(nd))
        s = tuple(1 + (s0 - 1 + j) % len(ss) for j in range(nd))
        p = tuple((p0 + j) % len(ps) for j in range(nd))
        d = tuple(1 + (d0 - 1 + j) % len(ds) for j in range(nd))
        if pool:
            p = tuple(min(pj, kj // 2) if j else pj for j, (pj, kj) in enumerate(zip(p, k)))
        rows.append((n, k, s, p, d))
    return rows


def _check_dv(numbers, device: str):
    """Each relationship: the specialised sympy form equals the paper's; both equal PyTorch on its domain.

    The grid is every (i, k, s, p, d) with i ≤ 10, k ≤ 5, s ≤ 3, p ≤ 3, d ≤ 3 that satisfies the
    relationship's constraints (e.g. s = 1, p = k - 1). For a transposed relationship, i is the
    *forward* convolution's input: the transposed layer gets i' = conv_output_size(i, …) and
    output_padding a = (i + 2p - d(k-1) - 1) mod s, and must give back i.
    """
    device = check_device(device)
    t = Tally()
    rels = {r["number"]: r for r in dumoulin_visin_relationships()}
    for num in numbers:
        r = dict(rels[num], paper_fn=sp.lambdify([_SYMBOLS[c] for c in "nkspda"], rels[num]["paper"], "math"))
        t.exact(sp.simplify(r["expr"] - r["paper"]) == 0, f"rel. {num}: sympy {r['expr']} vs paper {r['paper']}")
        for cfg in _dv_configs(r):
            _dv_case(t, r, cfg, device)
    t.note(f"relationships {', '.join(str(x) for x in numbers)}: sympy specialisation = paper's form; each vs PyTorch")
    return t.verdict("sympy specialisation + exhaustive grid (i ≤ 10, k ≤ 5, s ≤ 3, p ≤ 3, d ≤ 3) vs PyTorch",
                     case_unit="comparisons")


def _dv_configs(r: dict):
    """Grid points satisfying a relationship's constraints."""
    n, k, s, p, d, a = (_SYMBOLS[c] for c in "nkspda")
    h = sp.Symbol("h", integer=True, nonnegative=True)
    params = r["params"]
    odd = k in params  # k = 2h + 1: odd kernels only, h = (k - 1)/2
    rules = [(c, sp.lambdify([k, h], sp.sympify(params[_SYMBOLS[c]]), "math")) for c in "spd" if _SYMBOLS[c] in params]
    for i, kk, ss, pp, dd in itertools.product(range(1, 11), range(1, 6), range(1, 4), range(0, 4), range(1, 4)):
        if odd and kk % 2 == 0:
            continue
        vals = {"s": ss, "p": pp, "d": dd}
        if all(int(rule(kk, (kk - 1) // 2)) == vals[c] for c, rule in rules):
            yield {"n": i, "k": kk, "s": ss, "p": pp, "d": dd, "a_fixed": a in params}


def _dv_case(t: Tally, r: dict, cfg: dict, device: str) -> None:
    i, kk, ss, pp, dd = (cfg[c] for c in "nkspd")
    if r["kind"] == "transposed":
        i_t = _ours(conv_output_size, i, kk, ss, pp, dd)
        if i_t is None:
            return
        aa = (i + 2 * pp - dd * (kk - 1) - 1) % ss
        if cfg["a_fixed"] and aa != 0:
            return
        paper = int(r["paper_fn"](i_t, kk, ss, pp, dd, aa))
        x, w = torch.zeros(1, 1, i_t, dtype=DTYPE, device=device), torch.zeros(1, 1, kk, dtype=DTYPE, device=device)
        ref = _torch_size(F.conv_transpose1d, x.shape, x, w, stride=ss, padding=pp, output_padding=aa, dilation=dd)
        ours = _ours(conv_transpose_output_size, i_t, kk, ss, pp, dd, aa)
        t.exact(ref == (paper,) and ours == paper == i,
                f"rel. {r['number']} i={i} i'={i_t} k={kk} s={ss} p={pp} a={aa}: paper {paper}, torch {ref}, ours {ours}")
        return
    paper = int(r["paper_fn"](i, kk, ss, pp, dd, 0))
    x = torch.zeros(1, 1, i, dtype=DTYPE, device=device)
    if r["kind"] == "pool":
        ref = _torch_size(F.max_pool1d, x.shape, x, kk, ss, pp, dd)
        ours = _ours(pool_output_size, i, kk, ss, pp, dd)
    else:
        w = torch.zeros(1, 1, kk, dtype=DTYPE, device=device)
        ref = _torch_size(F.conv1d, x.shape, x, w, stride=ss, padding=pp, dilation=dd)
        ours = _ours(conv_output_size, i, kk, ss, pp, dd)
    if ref is None:
        t.exact(ours is None and paper < 1, f"rel. {r['number']} refused i={i} k={kk} s={ss} p={pp} d={dd}: paper {paper}")
    else:
        t.exact(ref == (paper,) and ours == paper, f"rel. {r['number']} i={i} k={kk} s={ss} p={pp} d={dd}: paper {paper}, torch {ref}")
