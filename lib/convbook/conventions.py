"""The argument conventions of every convbook function that takes a kernel size, stride, padding or dilation.

They are PyTorch's ``nn.ConvNd`` conventions, written once here and called everywhere, so that
no call is silently read differently from the layer it describes:

* **Integers** (:func:`as_int`) — a Python ``int``, a numpy integer (``np.int64(5)``, an element
  of ``x.shape`` arithmetic on arrays) or a 0-d integer tensor is accepted and becomes a Python
  ``int``; a float (even ``3.0``), a bool or a string is refused with a ``ValueError``.
* **Per-axis values** (:func:`as_tuple`) — an int applies to every spatial axis of an explicit
  number of axes ``ndim`` (default 2, as for ``nn.Conv2d(16, 4, 5)``: a 5×5 kernel); a tuple
  gives one value per axis and must have exactly ``ndim`` entries.  Functions that take several
  per-axis arguments infer ``ndim`` from their tuple arguments (:func:`spatial_ndim`), which must
  agree, and use 2 when every argument is an int.
* **Padding** (:func:`resolve_padding`) — an int (both sides of every axis), a tuple (both sides
  of each axis), ``"valid"`` (no padding) or ``"same"`` (PyTorch's rule: stride 1 on every axis
  only; total ``d(k-1)`` per axis, ``left = total // 2``, ``right = total - left``, so an even
  effective kernel puts the extra zero on the right).  The result is one ``(left, right)`` pair
  per axis.  Transposed convolutions and pooling accept no padding strings (PyTorch refuses or
  misreads them), so they are refused here.

Every refusal is a ``ValueError`` naming the argument, the rule and the offending value.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import numpy as np
import torch

__all__ = [
    "PADDING_STRINGS",
    "as_int",
    "as_tuple",
    "spatial_ndim",
    "resolve_padding",
    "padding_totals",
]

#: The padding strings of ``nn.ConvNd`` (not of transposed convolutions or pooling).
PADDING_STRINGS = ("valid", "same")


def as_int(value: Any, name: str, minimum: int | None = None) -> int:
    """``value`` as a Python ``int``: ints, numpy integers and 0-d integer tensors; never floats or bools.

    With ``minimum``, also ``value ≥ minimum``.  Raises ``ValueError`` naming ``name`` otherwise.
    """
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer, got the bool {value!r}")
    if isinstance(value, np.ndarray) and value.ndim == 0:  # a 0-d array, as numpy reductions return
        value = value[()]
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer (a 0-d integer tensor at most), got {value!r}")
        out = int(value.item())
    elif isinstance(value, (int, np.integer)) or (isinstance(value, numbers.Integral)):
        out = int(value)
    else:
        raise ValueError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if minimum is not None and out < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {out}")
    return out


def _is_scalar(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.dim() == 0
    if isinstance(value, np.ndarray):
        return value.ndim == 0
    return not isinstance(value, (str, bytes)) and not isinstance(value, Sequence)


def as_tuple(value: Any, ndim: int = 2, name: str = "value", minimum: int | None = None) -> tuple[int, ...]:
    """``value`` per spatial axis: an int for all ``ndim`` axes, or a sequence of exactly ``ndim`` ints.

    Each entry goes through :func:`as_int` (so numpy integers are accepted, floats refused).
    """
    ndim = as_int(ndim, "ndim", 1)
    if isinstance(value, str):
        raise ValueError(f"{name} must be an int or a tuple of {ndim} ints, got the string {value!r}")
    if _is_scalar(value):
        return (as_int(value, name, minimum),) * ndim
    items = tuple(value.tolist() if isinstance(value, np.ndarray) else value)
    if len(items) != ndim:
        raise ValueError(f"{name} must be an int or a tuple of {ndim} ints (one per spatial axis), got {value!r} "
                         f"with {len(items)} entries")
    return tuple(as_int(v, f"{name}[{i}]", minimum) for i, v in enumerate(items))


def spatial_ndim(*values: Any, ndim: int | None = None, default: int = 2) -> int:
    """The number of spatial axes shared by several per-axis arguments.

    ``ndim`` if given; else the common length of the tuple arguments (strings and ints are
    skipped); else ``default``.  Tuple arguments of different lengths are refused.
    """
    lengths = {len(v) for v in values if not isinstance(v, str) and v is not None and not _is_scalar(v)}
    if 0 in lengths:
        raise ValueError(f"per-axis arguments need at least one spatial axis, got an empty tuple in {values!r}")
    if ndim is not None:
        ndim = as_int(ndim, "ndim", 1)
        lengths.add(ndim)
    if len(lengths) > 1:
        raise ValueError(f"per-axis arguments disagree on the number of spatial axes: lengths {sorted(lengths)} "
                         f"in {values!r}")
    return lengths.pop() if lengths else default


def resolve_padding(padding: Any, kernel_size: Any, stride: Any = 1, dilation: Any = 1, ndim: int = 2, *,
                    allow_strings: bool = True) -> tuple[tuple[int, int], ...]:
    """One ``(left, right)`` zero-padding pair per spatial axis, PyTorch's ``nn.ConvNd`` rules.

    * int ``p`` → ``(p, p)`` on every axis; tuple → ``(p_i, p_i)`` per axis; values ≥ 0.
    * ``"valid"`` → ``(0, 0)``.
    * ``"same"`` → stride 1 on every axis only (PyTorch refuses strided ``'same'``); per axis
      ``total = d(k-1)``, ``left = total // 2``, ``right = total - left``.
    * ``allow_strings=False`` (transposed convolutions, pooling) refuses both strings.
    """
    k = as_tuple(kernel_size, ndim, "kernel_size", 1)
    s = as_tuple(stride, ndim, "stride", 1)
    d = as_tuple(dilation, ndim, "dilation", 1)
    if isinstance(padding, str):
        if not allow_strings:
            raise ValueError(f"padding must be an int or a tuple of {ndim} ints here (padding strings are for "
                             f"nn.ConvNd only, not transposed convolutions or pooling), got {padding!r}")
        if padding == "valid":
            return ((0, 0),) * ndim
        if padding == "same":
            if any(v != 1 for v in s):
                raise ValueError(f"padding='same' needs stride 1 on every axis (PyTorch refuses strided 'same'), "
                                 f"got stride {s}")
            totals = [dj * (kj - 1) for kj, dj in zip(k, d)]
            return tuple((t // 2, t - t // 2) for t in totals)
        raise ValueError(f"padding must be an int, a tuple of {ndim} ints, 'valid' or 'same', got {padding!r}")
    return tuple((p, p) for p in as_tuple(padding, ndim, "padding", 0))


def padding_totals(padding: Any, kernel_size: Any, stride: Any = 1, dilation: Any = 1, ndim: int = 2, *,
                   allow_strings: bool = True) -> tuple[int, ...]:
    """``left + right`` padding per axis (what an output size depends on), from :func:`resolve_padding`."""
    return tuple(a + b for a, b in resolve_padding(padding, kernel_size, stride, dilation, ndim,
                                                   allow_strings=allow_strings))
