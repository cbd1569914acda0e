"""Chapter 4: activation memory — what one training step keeps, what inference needs at its peak.

Both figures are in **bytes**, for **float32** activations and the input shape given (the
chapter uses batch 1); **parameters and buffers are excluded** (weights, biases, running
statistics), and so are optimizer state and gradients.

*Training activations* — the tensors autograd keeps from the forward pass of one training
step (train mode, batch norm with batch statistics, dropout active) until the backward pass
needs them, each underlying storage counted once. Per layer kind (``x`` the layer's input,
``y`` its output, counted only when the layer needs a gradient through it):

* ``Conv1d/2d/3d``, ``Linear``   save ``x`` (for the weight's gradient; the model input too)
* ``BatchNorm``                  saves ``x`` and two per-channel vectors (batch mean, 1/σ)
* ``ReLU``                       saves ``y`` — with ``inplace=True`` that *is* ``x``'s storage
* ``MaxPool``                    saves ``x`` and the int64 argmax indices (shape of ``y``, 8 bytes each)
* ``AdaptiveAvgPool``            saves ``x``, except to a 1×1 output (a mean, which saves nothing)
* ``Dropout``                    saves its float32 scaled mask (shape of ``y``)
* ``add``, ``flatten``           save nothing

A storage saved by several layers (a ReLU output that the next convolution and a max-pool
both save) is attributed to the first layer that saves it.

*Inference peak* — the largest total size of the activations alive at once during an
eval-mode forward under ``torch.no_grad()``, sampled when each executed call returns.
A storage is alive from the call that creates it until the later of (a) the end of the last
call that reads it (or a view of it) and (b) the end of every module call that received it
as an argument: ``Module.__call__`` holds its arguments until it returns, so a
``Sequential`` keeps its input alive to its end, and the model's input is alive throughout
(the caller holds it). In-place activations, ``flatten`` and eval-mode dropout create no
new storage.

:func:`activation_memory` derives both from the executed call graph
(:func:`convbook.graph.trace`, shapes only); :func:`measure_training` and
:func:`measure_inference` measure them on a real float32 CPU run, the first with
``torch.autograd.graph.saved_tensors_hooks``, the second by tracking every tensor a torch
function returns with ``weakref.finalize``.
"""

from __future__ import annotations

import copy
import math
import weakref
from typing import Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from . import graph, models
from .claims import Tally, claim
from .numerics import generator, randint

__all__ = [
    "FLOAT32_BYTES",
    "activation_memory",
    "measure_training",
    "measure_inference",
    "im2col_bytes",
    "shares_input_storage",
    "saved_tensors",
    "holds_arguments",
    "random_cnn",
]

FLOAT32_BYTES = 4
INT64_BYTES = 8

_CONV = ("Conv1d", "Conv2d", "Conv3d")
_BN = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")
_MAXPOOL = ("MaxPool1d", "MaxPool2d", "MaxPool3d")
_ADAPTIVE_AVG = ("AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d")
_VIEWS = ("flatten", "Flatten", "view", "reshape", "Identity")
_KNOWN = _CONV + _BN + _MAXPOOL + _ADAPTIVE_AVG + _VIEWS + ("ReLU", "Linear", "Dropout", "add")


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


def shares_input_storage(call: graph.Call, training: bool) -> bool:
    """True when the call's output lives in its input's storage (no new activation)."""
    if call.kind in _VIEWS:
        return True
    if call.kind == "ReLU":
        return bool(call.module.inplace)
    if call.kind == "Dropout":
        return not training or call.module.p == 0
    return False


def saved_tensors(call: graph.Call, needs_grad: bool) -> list[tuple[str, int]]:
    """What one call saves for its backward in training: ``("input" | "output" | "new", bytes)``.

    ``needs_grad``: whether the call's input requires a gradient (false only downstream of the
    model input before any layer with parameters).
    """
    x = _numel(call.input_shape) * FLOAT32_BYTES
    y_numel = _numel(call.output_shape)
    kind = call.kind
    if kind in _CONV or kind == "Linear":
        return [("input", x)]
    if kind in _BN:
        channels = call.input_shape[1]
        return [("input", x), ("new", channels * FLOAT32_BYTES), ("new", channels * FLOAT32_BYTES)]
    if not needs_grad:
        return []
    if kind == "ReLU":
        return [("output", y_numel * FLOAT32_BYTES)]
    if kind in _MAXPOOL:
        return [("input", x), ("new", y_numel * INT64_BYTES)]
    if kind in _ADAPTIVE_AVG:
        return [] if all(n == 1 for n in call.output_shape[2:]) else [("input", x)]
    if kind == "Dropout":
        return [("new", y_numel * FLOAT32_BYTES)] if call.module.p > 0 else []
    return []  # add, flatten and views


def holds_arguments(calls: list[graph.Call], storage_of: dict[int, object]) -> dict[object, int]:
    """For each storage passed into an enclosing module call, the index of that call's last record.

    The model itself (scope ``""``) holds its input to the end.
    """
    spans: dict[str, list[int]] = {"": [0, len(calls) - 1]}
    for c in calls:
        parts = c.scope.split(".") if c.scope else []
        for j in range(1, len(parts) + 1):
            span = spans.setdefault(".".join(parts[:j]), [c.index, c.index])
            span[0], span[1] = min(span[0], c.index), max(span[1], c.index)
    held: dict[object, int] = {storage_of[-1]: len(calls) - 1}
    for scope, (first, last) in spans.items():
        if not scope:
            continue
        for c in calls[first:last + 1]:
            for src in c.inputs:
                if src is not None and src < first:
                    s = storage_of[src]
                    held[s] = max(held.get(s, -1), last)
    return held


def _storages(calls: list[graph.Call], training: bool) -> tuple[dict[int, object], dict[object, int]]:
    storage_of: dict[int, object] = {-1: "input"}
    size: dict[object, int] = {}
    for c in calls:
        src = next((s for s in c.inputs if s is not None), None)
        if src is not None and shares_input_storage(c, training):
            storage_of[c.index] = storage_of[src]
        else:
            storage_of[c.index] = c.index
            size[c.index] = _numel(c.output_shape) * FLOAT32_BYTES
    return storage_of, size


def activation_memory(model: nn.Module, input_shape: Sequence[int]) -> dict:
    """Training activations and inference peak of ``model`` on float32 inputs of ``input_shape``.

    Derived from the executed call graph (shapes and data flow only, no arithmetic) with the
    per-kind rules and lifetimes of the module docstring. Returns a dict:

    * ``"training"``: ``{layer name: bytes saved for the backward pass}`` (each storage once,
      at the first layer that saves it; layers that save nothing new are absent);
    * ``"training_total"``: their sum, bytes;
    * ``"inference_live"``: ``[(layer name, bytes alive when the layer returns), …]`` for the
      module calls, in order;
    * ``"inference_peak"``: the largest total alive when any call (module or function such
      as ``add``) returns, bytes; ``"inference_peak_at"``: that call.

    The lifetimes follow data flow and argument passing only. A tensor that eager Python keeps
    in a local variable after its last use (``out = self.bn3(self.conv3(out))`` holds the old
    ``out`` until ``bn3`` returns) is not seen, so for models whose ``forward`` rebinds locals
    (ResNet's blocks) the figure is a lower bound on what eager PyTorch holds; for
    ``nn.Sequential`` chains it is exact.
    """
    g = graph.trace(model, input_shape)
    calls = g.calls
    for c in calls:
        if c.kind not in _KNOWN:
            raise ValueError(f"activation_memory has no rule for layer kind {c.kind!r} ({c.name})")

    # training: storages in train mode (dropout makes a new tensor)
    storage_of, _ = _storages(calls, training=True)
    needs_grad = {-1: False}
    seen: set = set()
    training: dict[str, int] = {}
    for c in calls:
        srcs = [s for s in c.inputs if s is not None]
        needs_grad[c.index] = c.params > 0 or any(needs_grad[s] for s in srcs)
        src = srcs[0] if srcs else None
        for j, (what, nbytes) in enumerate(saved_tensors(c, src is not None and needs_grad[src])):
            key = {"input": storage_of.get(src), "output": storage_of[c.index]}.get(what, (c.index, j))
            if key in seen:
                continue
            seen.add(key)
            training[c.name] = training.get(c.name, 0) + nbytes

    # inference: lifetimes of storages in eval mode
    storage_of, size = _storages(calls, training=False)
    size["input"] = _numel(g.input_shape) * FLOAT32_BYTES
    end: dict[object, int] = {s: (-1 if s == "input" else s) for s in size}
    for c in calls:
        for src in c.inputs:
            if src is not None:
                s = storage_of[src]
                end[s] = max(end[s], c.index)
    for s, last in holds_arguments(calls, storage_of).items():
        end[s] = max(end[s], last)
    start = {s: (-1 if s == "input" else s) for s in size}
    every = [(c.name, sum(size[s] for s in size if start[s] <= c.index <= end[s])) for c in calls]
    peak_at, peak = max(every, key=lambda item: item[1])
    live = [item for item, c in zip(every, calls) if c.is_module]
    return {"training": training, "training_total": sum(training.values()), "inference_live": live,
            "inference_peak": peak, "inference_peak_at": peak_at}


# --- measurement on a real run ------------------------------------------------------------


def _real_copy(model: nn.Module) -> nn.Module:
    """A CPU float32 copy with defined values (the values do not change any size)."""
    m = copy.deepcopy(model)  # the caller's model is never modified
    if any(t.is_meta for t in list(m.parameters()) + list(m.buffers())):
        m = m.to_empty(device="cpu")
    with torch.no_grad():
        for name, t in list(m.named_parameters()) + list(m.named_buffers()):
            if t.is_floating_point():
                t.fill_(1.0 if name.endswith("running_var") else 0.01)
            else:
                t.zero_()
    return m.float()


def _leaf_stack_hooks(model: nn.Module, stack: list[str], after=None) -> list:
    handles = []
    for name, mod in model.named_modules():
        if graph.is_leaf(mod):
            handles.append(mod.register_forward_pre_hook(lambda m, a, n=name: stack.append(n)))

            def post(m, a, o, n=name):
                stack.pop()
                if after is not None:
                    after(n)
            handles.append(mod.register_forward_hook(post))
    return handles


def measure_training(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Bytes autograd saves per leaf layer in one train-mode float32 CPU forward.

    Counted with ``saved_tensors_hooks``: each saved tensor's storage once (by
    ``untyped_storage().data_ptr()``), at the first layer that saves it; storages of
    parameters and buffers are left out.
    """
    m = _real_copy(model).train()
    excluded = {t.untyped_storage().data_ptr() for t in list(m.parameters()) + list(m.buffers())}
    stack: list[str] = []
    handles = _leaf_stack_hooks(m, stack)
    seen: set[int] = set()
    per_layer: dict[str, int] = {}
    keep = []

    def pack(t):
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr not in excluded and ptr not in seen:
            seen.add(ptr)
            keep.append(t)
            name = stack[-1] if stack else "(functional)"
            per_layer[name] = per_layer.get(name, 0) + st.nbytes()
        return t

    x = torch.zeros(*input_shape)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = m(x)
        del out
    finally:
        for h in handles:
            h.remove()
    return per_layer


class _LiveTracker(TorchFunctionMode):
    def __init__(self, excluded: set[int]) -> None:
        super().__init__()
        self.excluded = excluded
        self.refs: dict[int, list[int]] = {}
        self.tracked: set[int] = set()
        self.current = 0
        self.peak = 0

    def track(self, t) -> None:
        if not isinstance(t, torch.Tensor) or id(t) in self.tracked:
            return
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr in self.excluded:
            return
        entry = self.refs.get(ptr)
        if entry is None:
            entry = self.refs[ptr] = [st.nbytes(), 0]
            self.current += entry[0]
        entry[1] += 1
        self.tracked.add(id(t))
        weakref.finalize(t, self.release, ptr, id(t))
        self.peak = max(self.peak, self.current)

    def release(self, ptr: int, tid: int) -> None:
        self.tracked.discard(tid)
        entry = self.refs[ptr]
        entry[1] -= 1
        if entry[1] == 0:
            del self.refs[ptr]
            self.current -= entry[0]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            self.track(t)
        return out


def measure_inference(model: nn.Module, input_shape: Sequence[int]) -> dict:
    """Live activation bytes in an eval-mode float32 CPU forward under ``torch.no_grad()``.

    Every tensor a torch function returns is tracked with ``weakref.finalize``; a storage is
    alive while one of its tensors is. Returns ``{"live": [(leaf layer, bytes alive when it
    returns), …], "peak": largest total seen after any torch function returned}``.
    """
    m = _real_copy(model).eval()
    excluded = {t.untyped_storage().data_ptr() for t in list(m.parameters()) + list(m.buffers())}
    tracker = _LiveTracker(excluded)
    live: list[tuple[str, int]] = []
    stack: list[str] = []
    handles = _leaf_stack_hooks(m, stack, after=lambda n: live.append((n, tracker.current)))
    x = torch.zeros(*input_shape)
    try:
        with torch.no_grad(), tracker:
            tracker.track(x)
            out = m(x)
        del out
    finally:
        for h in handles:
            h.remove()
    return {"live": live, "peak": tracker.peak}


def im2col_bytes(conv: nn.Conv2d, input_shape: Sequence[int], dtype_bytes: int = FLOAT32_BYTES) -> int:
    """Size of the im2col (unfolded) matrix of a 2-D convolution: N · (C_in/g) · Π k · Π n_out · bytes.

    Checked against ``torch.nn.functional.unfold`` in the tests.
    """
    from .cost import conv_out_size

    n, c_in = int(input_shape[0]), int(input_shape[1])
    out = conv_out_size(tuple(input_shape[2:]), conv.kernel_size, conv.stride, conv.padding, conv.dilation)
    return n * c_in * math.prod(conv.kernel_size) * math.prod(out) * dtype_bytes


# --- the claim ----------------------------------------------------------------------------


def random_cnn(gen: torch.Generator) -> tuple[nn.Module, tuple[int, ...]]:
    """A random feed-forward CNN of Conv/BN/ReLU (in place or not)/max-pool/adaptive-avg-pool/
    dropout/linear layers (small, on the CPU), with its input shape (batch 1)."""
    c0 = randint(1, 4, gen)
    size0 = randint(8, 20, gen)
    c, size = c0, size0
    layers: list[nn.Module] = []
    for _ in range(randint(1, 4, gen)):
        out, k = randint(2, 8, gen), 2 * randint(0, 1, gen) + 1
        layers.append(nn.Conv2d(c, out, k, padding=(k - 1) // 2, bias=bool(randint(0, 1, gen))))
        c = out
        if randint(0, 1, gen):
            layers.append(nn.BatchNorm2d(c))
        layers.append(nn.ReLU(inplace=bool(randint(0, 1, gen))))
        if randint(0, 1, gen) and size >= 8:
            layers.append(nn.MaxPool2d(2))
            size //= 2
    pooled = randint(1, 3, gen)
    layers.append(nn.AdaptiveAvgPool2d(pooled))
    layers.append(nn.Flatten())
    layers.append(nn.Linear(c * pooled * pooled, 16))
    layers.append(nn.ReLU(inplace=bool(randint(0, 1, gen))))
    if randint(0, 1, gen):
        layers.append(nn.Dropout(0.5))
    layers.append(nn.Linear(16, 5))
    return nn.Sequential(*layers), (1, c0, size0, size0)


@claim(
    "cost.training-vs-inference-memory",
    title="Activation memory: training keeps every saved tensor, inference only the live ones",
    chapter=4,
    statement=("For every feed-forward CNN built of convolution, batch-norm, ReLU (in place or not), max- and "
               "adaptive-average-pooling, dropout and linear layers, the activations one training step keeps for the "
               "backward pass are, storage by storage, the tensors each layer saves (convolution and linear: their "
               "input; batch norm: its input and two per-channel vectors; ReLU: its output, which in place is its "
               "input; max-pool: its input and int64 indices; dropout: its mask), and for a chain of layers the "
               "inference peak is the largest total of activations alive at once, a tensor living until its last "
               "reader and every module call it was passed to has returned; on VGG-16 and ResNet-50 at 224×224 "
               "(float32, batch 1) the training figure is exact and, for ResNet-50, the inference figure is a lower "
               "bound on what eager PyTorch holds."),
    parameters=("in-place ReLU", "max-pool indices", "batch-norm statistics", "arguments held by enclosing calls"),
    reference="torch.autograd.graph.saved_tensors_hooks (saved storages, by data_ptr) and weakref.finalize on every "
              "tensor a torch function returns in a float32 CPU run",
)
def check_training_vs_inference_memory(device: str = "cpu"):
    """Analytic figures vs measurement: 12 random chains, VGG-16 and ResNet-50 at 224×224."""
    t = Tally()
    gen = generator(404)
    cases = [(f"random CNN {i}", *random_cnn(gen), True) for i in range(12)]
    cases += [("vgg16", models.build("vgg16"), (1, 3, 224, 224), True),
              ("resnet50", models.build("resnet50"), (1, 3, 224, 224), False)]
    for label, model, shape, chain in cases:
        derived = activation_memory(model, shape)
        measured = measure_training(model, shape)
        for name in sorted(set(derived["training"]) | set(measured)):
            t.exact(derived["training"].get(name) == measured.get(name),
                    f"{label} {name}: training bytes {derived['training'].get(name)} vs saved {measured.get(name)}")
        t.exact(derived["training_total"] == sum(measured.values()), f"{label}: training total")
        live = measure_inference(model, shape)
        names = [n for n, _ in derived["inference_live"]] == [n for n, _ in live["live"]]
        t.exact(names, f"{label}: the same layer calls")
        for (name, a), (_, b) in zip(derived["inference_live"], live["live"]):
            t.exact(a == b if chain else a <= b, f"{label} {name}: {a} bytes alive vs {b} measured")
        t.exact(derived["inference_peak"] == live["peak"] if chain else derived["inference_peak"] <= live["peak"],
                f"{label}: inference peak {derived['inference_peak']} vs {live['peak']} measured")
    return t.verdict("derived per layer vs saved_tensors_hooks and tensor lifetimes", case_unit="comparisons")
