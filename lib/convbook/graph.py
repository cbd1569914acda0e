"""The calls a model actually executes: one record per call, with shapes and data flow.

``trace(model, input_shape)`` runs one forward pass and records

* every call of a *leaf* module — a module whose class (or a base class) is defined in
  ``torch.nn`` and is not a container (``Conv2d``, ``BatchNorm2d``, ``LSTM``, ``Upsample``,
  ``LayerNorm``, …; :func:`is_leaf` gives the rule for subclasses that replace ``forward``) —
  named by its qualified name as in ``model.named_modules()``;
* every tensor-producing torch function or tensor method called *outside* leaf modules
  (``add``, ``cat``, ``mean``, ``interpolate``, ``mul`` with a layer-scale γ, …), named by
  its op, with the module it was called from as ``scope``.

Mechanism: forward pre-/post-hooks on every module plus a
:class:`torch.overrides.TorchFunctionMode`, on a real run of the model, so it works on any
model that runs (Python control flow, wrappers, models ``torch.fx`` cannot trace).  Data flow
is tracked by tensor identity: each call records which calls produced its tensor inputs
(``-1`` = the model input, ``None`` = a tensor no call produced: a parameter, buffer or
constant).  The run uses meta tensors (no arithmetic, so it is fast for any size) and falls
back to a float32 CPU run when an op has no meta kernel or the model reads tensor values
(``if x.mean() > 0``).  The model is copied first and run in eval mode; the input model is
never modified.  A module called k times gives k records with the same name.

Rules: ``input_shape`` is a sequence of positive ints; a model that fails on that input
raises ``ValueError`` naming the shape and the error.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

__all__ = ["Call", "Graph", "trace", "is_leaf", "overrides_forward", "torch_base", "copy_model", "to_keeping_ties"]

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict)
#: ``torch.nn`` modules made of other layers: traced through, so that their layers are counted.
_COMPOSITES = (nn.Transformer, nn.TransformerEncoder, nn.TransformerDecoder, nn.TransformerEncoderLayer,
               nn.TransformerDecoderLayer)


@dataclass
class Call:
    """One executed call.

    ``name``: qualified module name for a module call, op name (``"add"``, ``"cat"``) for a
    function or method; ``kind``: module class name or op name; ``scope``: qualified name of
    the module whose forward made the call (``""`` = the model itself); ``inputs``: producer
    index of each tensor input (``-1`` model input, ``None`` not produced by a call), aligned
    with ``input_shapes``; ``param_names``: qualified names of the parameters the call reads.
    """

    index: int
    name: str
    kind: str
    scope: str
    module: nn.Module | None
    input_shapes: list[tuple[int, ...]]
    output_shapes: list[tuple[int, ...]]
    inputs: list[int | None]
    param_names: list[str]
    params: int
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    @property
    def is_module(self) -> bool:
        return self.module is not None

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        return self.output_shapes[0] if self.output_shapes else None

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        for shape, src in zip(self.input_shapes, self.inputs):
            if src is not None:
                return shape
        return self.input_shapes[0] if self.input_shapes else None


@dataclass
class Graph:
    """The executed calls in order, the input shape, and how the run was made (``"meta"`` or ``"cpu"``)."""

    calls: list[Call]
    input_shape: tuple[int, ...]
    output_sources: list[int | None]
    run_on: str
    model: nn.Module

    def readers(self, index: int) -> list[int]:
        """Indices of the calls that read an output of call ``index`` (``-1``: the model input)."""
        return [c.index for c in self.calls if index in c.inputs]

    def module_calls(self, name: str) -> list[Call]:
        """All calls of the module with qualified name ``name``."""
        return [c for c in self.calls if c.is_module and c.name == name]

    def __len__(self) -> int:
        return len(self.calls)

    def __iter__(self):
        return iter(self.calls)


#: ``torch.nn`` layers that stay one call even when a user subclass overrides ``forward``: their
#: figures (MACs, folding) are read from the module's attributes, and forward hooks see them as one call.
_LEAF_EVEN_IF_OVERRIDDEN = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.RNNBase,
                            nn.RNNCellBase, nn.MultiheadAttention)


def torch_base(module: nn.Module) -> type | None:
    """The first class in ``type(module).__mro__`` defined in ``torch.nn`` (not ``torch.nn.parallel``), or ``None``."""
    for cls in type(module).__mro__:
        if cls is nn.Module:
            return None
        if cls.__module__.startswith("torch.nn.") and not cls.__module__.startswith("torch.nn.parallel"):
            return cls
    return None


def overrides_forward(module: nn.Module) -> bool:
    """True when a user subclass of a ``torch.nn`` layer replaces its ``forward`` (timm's
    ``BatchNormAct2d``, torchvision's ``LayerNorm2d``): the layer may compute something else."""
    base = torch_base(module)
    return base is not None and type(module).forward is not base.forward


def is_leaf(module: nn.Module) -> bool:
    """True when ``module`` is recorded as one call: a ``torch.nn`` layer (or subclass), not a container.

    A user module that is not a ``torch.nn`` layer is a *scope*: the ops in its forward are
    recorded one by one.  A user module with no children whose class is not from ``torch.nn``
    is also a scope (its ops, e.g. ``x * self.gamma``, are recorded with the parameter).  A user
    subclass of a ``torch.nn`` layer that overrides ``forward`` is a scope too (a ``LayerNorm``
    subclass that permutes to channels-last normalises over channels, not over the map), except
    for convolutions, linear, batch-norm, recurrent and attention layers, which stay one call.
    The transformer modules are scopes (their linear layers and attention are recorded).
    """
    if isinstance(module, _CONTAINERS + _COMPOSITES):
        return False
    if torch_base(module) is None:
        return False
    return not overrides_forward(module) or isinstance(module, _LEAF_EVEN_IF_OVERRIDDEN)


def copy_model(model: nn.Module, device: torch.device | str | None = None,
               dtype: torch.dtype | None = None) -> nn.Module:
    """``copy.deepcopy(model)``, optionally moved to ``device`` and floating tensors cast to ``dtype``.

    Also works for models using the hook-based ``torch.nn.utils.weight_norm`` (its ``weight``
    is a computed non-leaf tensor, which deepcopy refuses): those attributes are set aside
    during the copy and recomputed by the hook at the next forward pass.  Ties are kept: a
    parameter or buffer held by several modules (``b.weight = a.weight``) is one tensor in the
    copy too, also after the move (``Module.to('meta')`` would give each holder its own
    tensor), see :func:`to_keeping_ties`.
    """
    dup = _deepcopy(model)
    if device is None and dtype is None:
        return dup
    return to_keeping_ties(dup, device, dtype)


def to_keeping_ties(model: nn.Module, device: torch.device | str | None = None,
                    dtype: torch.dtype | None = None) -> nn.Module:
    """Move ``model`` in place as ``model.to(device, dtype)`` does (``dtype`` applies to floating-point
    tensors only), converting each distinct parameter or buffer once, so that modules sharing a
    tensor still share the converted one.  Returns ``model``."""
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype (Module.to casts floating tensors only), got {dtype}")
    memo: dict[int, torch.Tensor] = {}

    def convert(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in memo:
            to_dtype = dtype if dtype is not None and t.is_floating_point() else t.dtype
            new = t.detach().to(device=t.device if device is None else device, dtype=to_dtype)
            if isinstance(t, nn.Parameter):
                new = nn.Parameter(new, requires_grad=t.requires_grad)
            memo[id(t)] = new
        return memo[id(t)]

    for m in model.modules():
        for table in (m._parameters, m._buffers):
            for key, t in table.items():
                if t is not None:
                    table[key] = convert(t)
    return model


def _deepcopy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)``, setting hook-computed ``weight_norm`` weights aside (see :func:`copy_model`)."""
    try:
        return copy.deepcopy(model)
    except RuntimeError:
        from torch.nn.utils.weight_norm import WeightNorm

        held = []
        for m in model.modules():
            for hook in m._forward_pre_hooks.values():
                if isinstance(hook, WeightNorm) and hook.name in m.__dict__:
                    held.append((m, hook.name, m.__dict__.pop(hook.name)))
        try:
            dup = copy.deepcopy(model)
        finally:
            for m, name, value in held:
                m.__dict__[name] = value
        for m in dup.modules():
            for hook in m._forward_pre_hooks.values():
                if isinstance(hook, WeightNorm):
                    with torch.no_grad():
                        setattr(m, hook.name, hook.compute_weight(m))
        return dup


def trace(model: nn.Module, input_shape: Sequence[int], *, prefer_meta: bool = True,
          progress: Callable[[int, str], None] | None = None) -> Graph:
    """Run ``model`` once on an input of ``input_shape`` and return the executed calls (see module doc).

    ``progress(i, name)`` is called after each recorded call (for long models).
    """
    shape = _shape(input_shape)
    errors = []
    for run_on in (("meta", "cpu") if prefer_meta else ("cpu",)):
        try:
            return _trace(model, shape, run_on, progress)
        except _ModelFailed as err:
            errors.append(f"{run_on}: {err}")
            if run_on == "cpu":
                break
        except Exception as err:  # no meta kernel, or the model reads tensor values
            errors.append(f"{run_on}: {type(err).__name__}: {err}")
    last = errors[-1].split(": ", 1)[-1].splitlines()[0]
    raise ValueError(f"the model fails on an input of shape {shape}: {last}")


# --------------------------------------------------------------------------------------------
class _ModelFailed(Exception):
    pass


def _shape(input_shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"input_shape must be a sequence of ints, got {input_shape!r}") from None
    if not shape or any(v < 1 for v in shape):
        raise ValueError(f"input_shape must be non-empty with every size >= 1, got {shape}")
    return shape


def _tensors(obj) -> list[torch.Tensor]:
    out = []
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            out.extend(_tensors(v))
    elif isinstance(obj, dict):
        for v in obj.values():
            out.extend(_tensors(v))
    return out


def _op_name(func) -> str:
    name = getattr(func, "__name__", None) or str(func)
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        if name.startswith("i") and name[1:] in {"add", "sub", "mul", "truediv", "and", "or"}:
            name = name[1:] + "_"
        elif name.startswith("r") and name[1:] in {"add", "sub", "mul", "truediv", "matmul"}:
            name = name[1:]
    return {"truediv": "div", "getitem": "getitem"}.get(name, name)


def _describe(obj, param_ids):
    """Arguments with tensors replaced by their shapes (kept for analyses such as interpolate's mode)."""
    if isinstance(obj, torch.Tensor):
        return ("tensor", tuple(obj.shape))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_describe(v, param_ids) for v in obj) if not hasattr(obj, "_fields") else obj
    if isinstance(obj, dict):
        return {k: _describe(v, param_ids) for k, v in obj.items()}
    return obj


class _Recorder(TorchFunctionMode):
    def __init__(self, model: nn.Module, input_tensor: torch.Tensor, progress):
        super().__init__()
        self.names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
        self.names.update({id(m): n for n, m in model.named_modules()})  # first name wins for shared modules
        self.param_names = {}
        for n, p in model.named_parameters(remove_duplicate=False):
            self.param_names.setdefault(id(p), n)
        self.producer: dict[int, int] = {id(input_tensor): -1}
        self.alive: list[Any] = [input_tensor]
        self.calls: list[Call] = []
        self.stack: list[tuple[nn.Module, bool]] = []
        self.leaf_depth = 0
        self.busy = False
        self.progress = progress

    # ----- helpers
    def _sources(self, tensors):
        shapes, srcs = [], []
        for t in tensors:
            if id(t) in self.param_names:
                continue
            shapes.append(tuple(t.shape))
            srcs.append(self.producer.get(id(t)))
        return shapes, srcs

    def _record(self, name, kind, module, in_tensors, out, params, param_names, args=(), kwargs=None):
        outs = _tensors(out)
        shapes, srcs = self._sources(in_tensors)
        index = len(self.calls)
        scope = next((self.names.get(id(m), "") for m, leaf in reversed(self.stack) if not leaf), "")
        if module is not None and self.stack and self.stack[-1][0] is module:
            scope = next((self.names.get(id(m), "") for m, leaf in reversed(self.stack[:-1]) if not leaf), "")
        self.calls.append(Call(index, name, kind, scope, module, shapes, [tuple(t.shape) for t in outs], srcs,
                               param_names, params, args, kwargs or {}))
        for t in outs:
            self.producer[id(t)] = index
        self.alive.append(outs)
        if self.progress is not None:
            self.progress(index, name)

    # ----- module hooks
    def pre_hook(self, module, args, kwargs):
        leaf = is_leaf(module)
        self.stack.append((module, leaf))
        if leaf:
            self.leaf_depth += 1
        return None

    def post_hook(self, module, args, kwargs, output):
        _, leaf = self.stack.pop()
        if leaf:
            self.leaf_depth -= 1
            if self.leaf_depth == 0:
                self.busy = True
                try:
                    ps = list(module.parameters())
                    self._record(self.names.get(id(module), type(module).__name__), type(module).__name__, module,
                                 _tensors((args, kwargs)), output, sum(p.numel() for p in ps),
                                 [self.param_names.get(id(p), "?") for p in ps])
                finally:
                    self.busy = False
        return None

    # ----- torch functions
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.busy or self.leaf_depth > 0:
            return out
        name = _op_name(func)
        if name == "setitem" and args and isinstance(args[0], torch.Tensor):
            out = args[0]  # x[idx] = v writes into x: x is now produced by this call
        outs = _tensors(out)
        ins = _tensors((args, kwargs))
        if not outs or not ins:
            return None if name == "setitem" else out
        if name in {"__get__", "get", "size", "dim", "numel", "detach_"}:
            return out
        self.busy = True
        try:
            pnames = [self.param_names[id(t)] for t in ins if id(t) in self.param_names]
            params = sum(t.numel() for t in ins if id(t) in self.param_names)
            self._record(name, name, None, ins, out, params, pnames,
                         _describe(tuple(args), self.param_names), _describe(dict(kwargs), self.param_names))
        finally:
            self.busy = False
        return None if name == "setitem" else out


def _trace(model: nn.Module, shape: tuple[int, ...], run_on: str, progress) -> Graph:
    params = list(model.parameters()) + list(model.buffers())
    on_meta = bool(params) and all(p.device.type == "meta" for p in params)
    if run_on == "meta":
        work = copy_model(model, "meta")  # a copy even on meta: eval() below must not touch the model
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        x = torch.zeros(shape, device="meta", dtype=dtype)
    else:
        if on_meta:
            raise ValueError("a model on the meta device can only be traced on meta tensors")
        work = copy_model(model, "cpu", torch.float32)
        x = torch.zeros(shape, dtype=torch.float32)
        torch.manual_seed(0)
        x.normal_()
    work.eval()
    rec = _Recorder(work, x, progress)
    handles = []
    for m in work.modules():
        # prepend: a module's own pre-hooks (the older spectral_norm/weight_norm compute the weight
        # there) then run inside the call, and their ops are part of it
        handles.append(m.register_forward_pre_hook(rec.pre_hook, with_kwargs=True, prepend=True))
        handles.append(m.register_forward_hook(rec.post_hook, with_kwargs=True))
    try:
        with torch.no_grad(), rec:
            try:
                out = work(x)
            except Exception as err:
                if run_on == "cpu":
                    raise _ModelFailed(f"{type(err).__name__}: {err}") from err
                raise
    finally:
        for h in handles:
            h.remove()
    sources = [rec.producer.get(id(t)) for t in _tensors(out)]
    return Graph(rec.calls, shape, sources, run_on, work)
