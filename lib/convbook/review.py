"""Reviewing a network: parameters, cost, receptive fields, folding and design hazards, from one graph.

``review(model, input_shape)`` reads the calls the model actually executes
(:func:`convbook.graph.trace`) and derives every view from them:

* ``params`` — unique parameters, ``sum(p.numel() for p in model.parameters())``: a module
  called k times counts once, a parameter held by a non-leaf module (a layer-scale γ) counts.
* ``macs`` — multiply-accumulates of one forward pass at that input, summed over *calls*
  (a module called k times counts k times).  Counted: convolution
  ``N·C_out·ΠH_out·(C_in/g)·Πk``; transposed convolution ``N·C_in·ΠH_in·(C_out/g)·Πk``;
  linear ``rows·in·out``; ``matmul``/``mm``/``bmm``/``addmm``/``baddbmm`` ``numel(out)·K``;
  two-operand ``einsum`` the product of all index ranges; ``scaled_dot_product_attention``
  ``rows·S·(E + E_v)``; ``MultiheadAttention`` its four projections plus ``2·L·S·E`` per batch
  element; LSTM/GRU/RNN gates ``N·T·dirs·G·H·(in_l + H)`` per layer (G = 4, 3, 1) and the
  same per step for their cells.  Not counted here: batch norm, bias additions, activations,
  pooling, elementwise ops (see :meth:`Review.counts`).  A call that multiplies by weights
  but has no rule (a ``torch.nn`` layer with a matrix parameter, an unusual ``einsum``) gets
  0 and the finding ``macs-not-counted`` names it: the total is then a lower bound.
* ``activation_bytes`` — bytes written by every call's outputs except views, at the run's
  dtype size; ``peak_activation_bytes`` — the largest single output.
* ``layers`` — one :class:`Layer` per call, with its receptive field per spatial axis as
  ``(size, jump)`` in input pixels: ``size_l = size_{l-1} + (m − 1)·jump_{l-1}`` where ``m`` is
  the number of input units one output reads along the axis (``(k−1)d+1`` for a convolution
  or pooling window, ``⌈((k−1)d+1)/s⌉`` for a transposed convolution, 1 for nearest and 2 for
  linear upsampling), ``jump_l = jump_{l-1}·s`` (``/s`` for transposed convolutions and
  upsampling).  The field is that of a *position*: the input pixels any channel at that
  position reads (after a concatenation a depthwise or grouped layer's single channel may read
  fewer).  Branches join by the union of their spans, unit by unit; when their jumps differ
  (a skip beside an ``align_corners=True`` upsampling) the field is kept as a table over the
  map and ``size`` is that of the central unit.  Fields are theoretical (not clipped by the
  image border).  After a global operation (global or adaptive-to-1 pooling, a mean or sum
  over spatial axes, instance/group norm, a LayerNorm over the map, a bidirectional RNN along
  a spatial axis) the field is the whole input: ``None``, with ``field_note`` naming the call.
  A unidirectional RNN along a spatial axis reads every earlier step: step t's field runs from
  the start of step 0's to the end of step t's (a table).  Reshapes keep the fields of the axes
  they leave intact (a channel shuffle); after one that merges a spatial axis, or where a joined
  branch is not tracked, the field is not tracked (``None``, the note says where and why).
* ``fold()`` — an eval-mode copy with every BN folded that folds exactly, by the rules of
  :func:`convbook.fold.fold_decisions` (those of ``fold_model``), applied by replacing modules
  so that models ``torch.fx`` cannot trace fold too (spectral or weight normalised layers
  folded through the weight they compute), compared with the model in float64 before it is
  returned; every BN left has a reason and its kind (``convbook.fold.LEFT_CATEGORIES``).
* ``findings`` — design hazards, each citing the claim id that proves it.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import types
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from functools import reduce
from typing import Sequence

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import fold as _fold
from .graph import Call, Graph, copy_model, trace
from .roofline import GPU_DATASHEETS, Machine

__all__ = ["Layer", "Finding", "FoldReport", "Review", "review", "receptive_fields", "call_macs"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
             nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_GLOBAL_NORMS = (nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
_RNN = {"LSTM": 4, "GRU": 3, "RNN": 1}
_VIEWS = {"view", "reshape", "flatten", "unflatten", "permute", "transpose", "squeeze", "unsqueeze", "getitem",
          "expand", "narrow", "chunk", "split", "unbind", "t", "view_as", "reshape_as", "contiguous", "select",
          "Flatten", "Unflatten", "Identity", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d"}
_CROP_OR_PAD = {"getitem", "narrow", "pad", "contiguous", "clone", "to", "float", "double", "half", "type_as",
                "ReflectionPad1d", "ReflectionPad2d", "ReflectionPad3d", "ReplicationPad1d", "ReplicationPad2d",
                "ReplicationPad3d", "ZeroPad1d", "ZeroPad2d", "ZeroPad3d", "ConstantPad1d", "ConstantPad2d",
                "ConstantPad3d", "CircularPad1d", "CircularPad2d", "CircularPad3d"}
_REDUCTIONS = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "norm", "logsumexp", "prod", "nanmean",
               "nansum", "median", "std_mean", "var_mean", "argmax", "argmin", "linalg_vector_norm", "vector_norm"}
_FUNC_CONV = {"conv1d", "conv2d", "conv3d"}
_FUNC_CONVT = {"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
_FUNC_POOL = {"max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
              "_max_pool1d", "_max_pool2d", "_max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
              "max_pool3d_with_indices"}

#: The roofline used for the memory-bound finding unless another :class:`Machine` is given.
DEFAULT_MACHINE: Machine = GPU_DATASHEETS["H100 SXM (fp32)"]

#: Claim ids the findings cite (each proves the hazard it is cited for).
CLAIMS = {
    "checkerboard": "transpose.uniform-iff-divides",
    "gridding": "dilate.gridding",
    "strided-subsample": "shortcut.gradient-coverage",
    "bias-before-bn": "bn.fold-conv",
    "same-even-kernel": "shape.same-padding",
    "bn-not-folded": "bn.fold-bn-conv-border",
    "memory-bound": "bench.roofline-bound",
}


@dataclass
class Layer:
    """One executed call, as a row of the review table."""

    index: int
    name: str
    kind: str
    scope: str
    input_shape: tuple | None
    output_shape: tuple | None
    params: int
    macs: int
    intensity: float | None
    receptive_field: tuple[tuple[int, Fraction], ...] | None
    field_note: str = ""
    inputs: list = field(default_factory=list)
    base: str = ""  # the torch.nn layer class for a module call (Conv2d for a spectral-normalised conv), else the op

    def field_text(self) -> str:
        if self.receptive_field is None:
            return self.field_note or "—"
        if not self.receptive_field:
            return "—"
        sizes = "×".join(str(s) for s, _ in self.receptive_field)
        jumps = "×".join(str(j) for _, j in self.receptive_field)
        return f"{sizes} (jump {jumps}; {self.field_note})" if self.field_note else f"{sizes} (jump {jumps})"


@dataclass
class Finding:
    """A design hazard: ``code``, the calls it concerns, a message, and the claim that proves it (or ``None``)."""

    code: str
    severity: str
    where: list[str]
    message: str
    claim: str | None
    reference: str = ""

    def __str__(self) -> str:
        cite = f" [claim {self.claim}]" if self.claim else (f" [{self.reference}]" if self.reference else "")
        return f"{self.severity}: {self.message}{cite}"


@dataclass
class FoldReport:
    """Result of :meth:`Review.fold`: the folded eval-mode copy, what was folded, what was left and why."""

    model: nn.Module  # in the model's dtype and device
    model_float64: nn.Module  # the float64 CPU copy that was compared with the model
    folded: list[tuple[str, str, str]]  # (layer, bn, "conv→BN" | "BN→conv")
    left: list[tuple[str, str]]  # (bn, reason)
    max_rel_error: float
    bns_before: int
    bns_after: int
    categories: dict[str, str] = field(default_factory=dict)  # bn -> kind of reason (convbook.fold.LEFT_CATEGORIES)

    def to_text(self) -> str:
        lines = [f"folded {len(self.folded)} of {self.bns_before} BatchNorm modules; "
                 f"{self.bns_after} BatchNorm modules remain; float64 comparison within 1e-10"]
        for layer, bn, how in self.folded:
            lines.append(f"  folded  {bn} into {layer} ({how})")
        for bn, why in self.left:
            lines.append(f"  left    {bn}: {why}")
        return "\n".join(lines)


@dataclass
class Review:
    """The review of one model at one input shape (see the module doc for each field)."""

    model_name: str
    input_shape: tuple
    params: int
    params_used: int
    macs: int
    activation_bytes: int
    peak_activation_bytes: int
    layers: list[Layer]
    findings: list[Finding]
    graph: Graph = field(repr=False)
    model: nn.Module = field(repr=False)
    machine: Machine = field(repr=False, default=DEFAULT_MACHINE)

    # ---------------------------------------------------------------- folding
    def fold(self, *, tol: float = 1e-10) -> FoldReport:
        """An eval-mode copy with every exactly foldable BN folded (see :func:`fold_plan`).

        The copy is compared with the model in float64 on a random input of the reviewed
        shape before it is returned; a relative difference above ``tol`` raises ``RuntimeError``.
        """
        return _fold_model(self.model, self.graph, self.input_shape, tol)

    # ---------------------------------------------------------------- counting
    def counts(self, *, third_party: bool = False) -> dict:
        """MACs and FLOPs side by side (see :func:`counts`)."""
        return counts(self, third_party=third_party)

    # ---------------------------------------------------------------- output
    def summary(self) -> dict:
        return {
            "model": self.model_name,
            "input_shape": list(self.input_shape),
            "params": self.params,
            "params_used": self.params_used,
            "macs": self.macs,
            "macs_by_kind": self.macs_by_kind(),
            "activation_bytes": self.activation_bytes,
            "peak_activation_bytes": self.peak_activation_bytes,
            "calls": len(self.layers),
            "run_on": self.graph.run_on,
        }

    def macs_by_kind(self) -> dict[str, int]:
        """The MAC total split by rule: ``convolution`` (incl. transposed, modules and functions),
        ``linear``, ``recurrent`` (RNN layers and cells), ``attention`` (``MultiheadAttention``,
        ``scaled_dot_product_attention``) and ``matmul`` (matmul-like functions, ``einsum``);
        the parts sum to :attr:`macs`."""
        out = {"convolution": 0, "linear": 0, "recurrent": 0, "attention": 0, "matmul": 0}
        for row in self.layers:
            if row.macs:
                out[_mac_kind(self.graph.calls[row.index])] += row.macs
        return out

    def table(self, *, all_calls: bool = False) -> list[Layer]:
        """Rows to show: with ``all_calls=False`` the calls with parameters or MACs, pooling,
        resampling and joins (add, cat, mul of two activations) — the ones a design review reads."""
        if all_calls:
            return list(self.layers)
        keep = []
        for row in self.layers:
            interesting = (row.params or row.macs or "Pool" in row.kind or "pool" in row.kind
                           or row.kind in {"Upsample", "interpolate", "cat", "add", "LSTM", "GRU", "RNN"}
                           or (row.kind == "mul" and len([i for i in row.inputs if i is not None]) > 1))
            if interesting:
                keep.append(row)
        return keep

    def to_markdown(self, *, all_calls: bool = False) -> str:
        """A summary, the layer table and the findings as Markdown, to paste into a design document."""
        s = self.summary()
        out = [f"### Review of `{self.model_name}` at input {tuple(self.input_shape)}", "",
               f"- parameters: {s['params']:,} (used in the forward pass: {s['params_used']:,})",
               f"- multiply-accumulates: {s['macs']:,} ("
               + ", ".join(f"{k} {v:,}" for k, v in s["macs_by_kind"].items() if v) + ")",
               f"- activations written: {s['activation_bytes']:,} bytes (largest {s['peak_activation_bytes']:,})",
               f"- calls executed: {s['calls']}", "",
               "| # | call | kind | input | output | params | MACs | FLOP/byte | receptive field |",
               "|---:|---|---|---|---|---:|---:|---:|---|"]
        for r in self.table(all_calls=all_calls):
            ai = "" if r.intensity is None else f"{r.intensity:.1f}"
            out.append(f"| {r.index} | `{r.name or '(model)'}` | {r.kind} | {_shape_text(r.input_shape)} | "
                       f"{_shape_text(r.output_shape)} | {r.params:,} | {r.macs:,} | {ai} | {r.field_text()} |")
        out += ["", "**Findings**", ""]
        if not self.findings:
            out.append("- none")
        for f in self.findings:
            cite = f" — claim `{f.claim}`" if f.claim else (f" — {f.reference}" if f.reference else "")
            out.append(f"- **{f.severity}** ({f.code}): {f.message}{cite}")
        return "\n".join(out) + "\n"

    def to_text(self, *, all_calls: bool = False) -> str:
        """A plain-text report (the CLI's default format)."""
        s = self.summary()
        lines = [f"{self.model_name} at input {tuple(self.input_shape)}",
                 f"parameters {s['params']:,} (used {s['params_used']:,}), MACs {s['macs']:,}, "
                 f"activations {s['activation_bytes']:,} bytes, {s['calls']} calls", ""]
        rows = [("#", "call", "kind", "output", "params", "MACs", "receptive field")]
        for r in self.table(all_calls=all_calls):
            rows.append((str(r.index), r.name or "(model)", r.kind, _shape_text(r.output_shape), f"{r.params:,}", f"{r.macs:,}",
                         r.field_text()))
        widths = [min(max(len(row[i]) for row in rows), 40) for i in range(len(rows[0]))]
        for row in rows:
            lines.append("  ".join(c[:40].ljust(w) for c, w in zip(row, widths)).rstrip())
        lines += ["", "findings:"] + ([f"  {f}" for f in self.findings] or ["  none"])
        return "\n".join(lines)

    def to_dict(self) -> dict:
        rows = []
        for r in self.layers:
            d = asdict(r)
            d["receptive_field"] = None if r.receptive_field is None else [
                [int(sz), str(j)] for sz, j in r.receptive_field]
            d["input_shape"] = None if r.input_shape is None else list(r.input_shape)
            d["output_shape"] = None if r.output_shape is None else list(r.output_shape)
            rows.append(d)
        return {"summary": self.summary(), "layers": rows, "findings": [asdict(f) for f in self.findings]}

    def to_json(self, **kwargs) -> str:
        """The summary, every call and every finding as JSON (fractional jumps as strings, e.g. ``"1/2"``)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, **kwargs)


# ==================================================================================== API
def review(model: nn.Module, input_shape: Sequence[int], *, name: str | None = None,
           machine: Machine = DEFAULT_MACHINE, progress=None) -> Review:
    """Review ``model`` on an input of ``input_shape`` ``(N, C, *spatial)`` (see the module doc)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"review needs an nn.Module, got {type(model).__name__}")
    graph = trace(model, input_shape, progress=progress)
    fields = receptive_fields(graph)
    bpe = torch.finfo(_dtype(model)).bits // 8
    layers = []
    for c in graph.calls:
        macs = call_macs(c)
        f, note = fields[c.index]
        if f is not None and any(axis.n for axis in f) and not note:
            note = "central unit; the field varies across the map"
        f = None if f is None else tuple((axis.size, axis.jump) for axis in f)
        ai = None
        if macs:
            moved = sum(math.prod(s) for s, src in zip(c.input_shapes, c.inputs) if src is not None)
            moved += sum(math.prod(s) for s in c.output_shapes) + c.params
            ai = 2 * macs / (bpe * moved)
        layers.append(Layer(c.index, c.name, c.kind, c.scope, c.input_shape, c.output_shape, c.params, macs, ai, f,
                            note, list(c.inputs), _base_name(c)))
    used = set()
    for c in graph.calls:
        used.update(c.param_names)
    named = dict(graph.model.named_parameters())
    params_used = sum(named[n].numel() for n in used if n in named)
    outs = [math.prod(s) * bpe for c in graph.calls if c.kind not in _VIEWS for s in c.output_shapes]
    rev = Review(name or type(model).__name__, graph.input_shape, sum(p.numel() for p in model.parameters()),
                 params_used, sum(r.macs for r in layers), sum(outs), max(outs, default=0), layers, [], graph,
                 model, machine)
    rev.findings = findings(rev)
    return rev


def call_macs(c: Call) -> int:
    """Multiply-accumulates of one call (0 for the kinds not counted; see the module doc)."""
    m = c.module
    if not c.output_shapes:
        return 0
    out = c.output_shape
    if isinstance(m, _CONVT):
        x = c.input_shape
        return math.prod(x) * (m.out_channels // m.groups) * math.prod(m.kernel_size)
    if isinstance(m, _CONV):
        return math.prod(out) * (m.in_channels // m.groups) * math.prod(m.kernel_size)
    if isinstance(m, nn.Linear):
        return math.prod(out) * m.in_features
    if m is not None and type(m).__name__ in _RNN or isinstance(m, nn.RNNBase):
        return _rnn_macs(m, c)
    if isinstance(m, nn.RNNCellBase):
        gates = 4 if isinstance(m, nn.LSTMCell) else (3 if isinstance(m, nn.GRUCell) else 1)
        rows = math.prod(c.input_shape[:-1]) if c.input_shape and len(c.input_shape) > 1 else 1
        return rows * gates * m.hidden_size * (m.input_size + m.hidden_size)
    if c.module is None:
        w = _arg(c, 1, "weight")
        if c.kind in _FUNC_CONV and _is_t(w):
            return math.prod(out) * math.prod(w[1][1:])  # weight (C_out, C_in/g, *k)
        if c.kind in _FUNC_CONVT and _is_t(w):
            return math.prod(c.input_shape) * math.prod(w[1][1:])  # weight (C_in, C_out/g, *k)
        if c.kind == "linear" and _is_t(w):
            return math.prod(out) * w[1][-1]
        if c.kind in {"matmul", "mm", "bmm"} and len(c.input_shapes) + len(c.param_names) >= 1:
            a = _arg(c, 0, "input")
            if _is_t(a) and len(a[1]) >= 1:
                return math.prod(out) * a[1][-1]
        if c.kind in {"addmm", "baddbmm", "addbmm"}:
            a = _arg(c, 1, "mat1" if c.kind == "addmm" else "batch1")
            if _is_t(a) and len(a[1]) >= 2:
                return (math.prod(out) * a[1][-1]) * (a[1][0] if c.kind == "addbmm" else 1)
        if c.kind == "scaled_dot_product_attention":
            q, k, v = _arg(c, 0, "query"), _arg(c, 1, "key"), _arg(c, 2, "value")
            if _is_t(q) and _is_t(k) and _is_t(v):
                rows = math.prod(q[1][:-1])  # batch·heads·L
                return rows * k[1][-2] * (q[1][-1] + v[1][-1])  # Q·Kᵀ then weights·V
        if c.kind == "einsum":
            return _einsum_macs(c)
        return 0
    if isinstance(m, nn.MultiheadAttention):
        return _mha_macs(m, c)
    if isinstance(m, nn.Bilinear):
        return math.prod(out) * m.in1_features * m.in2_features
    return 0


def _base_name(c: Call) -> str:
    """``torch.nn`` layer class of a module call (the first class of ``torch.nn.modules`` in its MRO:
    ``Conv2d`` for ``ParametrizedConv2d`` or timm's ``Conv2dSame``); the op name for a function."""
    if c.module is None:
        return c.kind
    return next((k.__name__ for k in type(c.module).__mro__ if k.__module__.startswith("torch.nn.modules.")),
                type(c.module).__name__)


def _mac_kind(c: Call) -> str:
    """The rule a call's MACs come from (see :meth:`Review.macs_by_kind`)."""
    m = c.module
    if isinstance(m, _CONV + _CONVT) or c.kind in _FUNC_CONV or c.kind in _FUNC_CONVT:
        return "convolution"
    if isinstance(m, (nn.Linear, nn.Bilinear)) or c.kind == "linear":
        return "linear"
    if isinstance(m, (nn.RNNBase, nn.RNNCellBase)):
        return "recurrent"
    if isinstance(m, nn.MultiheadAttention) or c.kind == "scaled_dot_product_attention":
        return "attention"
    return "matmul"


def _einsum_macs(c: Call) -> int:
    """Two-operand ``einsum``: one multiply-accumulate per point of the product of all index ranges
    (``'bij,bjk->bik'`` → ``b·i·j·k``); ``0`` (reported as uncounted) for other forms."""
    eq = c.args[0] if c.args and isinstance(c.args[0], str) else None
    ops = [a for a in (c.args[1] if len(c.args) == 2 and isinstance(c.args[1], (list, tuple)) else c.args[1:])
           if _is_t(a)]
    if eq is None or len(ops) != 2 or "..." in eq or "->" not in eq:
        return 0
    lhs = eq.replace(" ", "").split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for letters, (_t, shape) in zip(lhs, ops):
        if len(letters) != len(shape):
            return 0
        sizes.update(zip(letters, shape))
    return math.prod(sizes.values())


def _mha_macs(m: nn.MultiheadAttention, c: Call) -> int:
    """``nn.MultiheadAttention``: input projections ``L·E·E + S·k_dim·E + S·v_dim·E``, scores
    ``L·S·E``, weighted values ``L·S·E``, output projection ``L·E·E`` (per batch element)."""
    shapes = c.input_shapes
    if len(shapes) < 1:
        return 0
    q = shapes[0]
    k = shapes[1] if len(shapes) > 1 else q
    if len(q) == 3:
        n, lq = (q[0], q[1]) if m.batch_first else (q[1], q[0])
        s_len = k[1] if m.batch_first else k[0]
    else:
        n, lq, s_len = 1, q[0], k[0]
    e = m.embed_dim
    return n * (2 * lq * e * e + s_len * (m.kdim + m.vdim) * e + 2 * lq * s_len * e)


def receptive_fields(graph: Graph) -> list[tuple[tuple | None, str]]:
    """``(field, note)`` for every call: ``field`` a tuple of :class:`AxisField`, one per spatial axis
    in the order the axes have in the call's output (channels-last layouts included), or ``None``
    with ``note`` naming the global operation (or saying the field is not tracked)."""
    out = []
    for layout, note in _layout_fields(graph):
        out.append((None, note) if layout is None else (tuple(f for f in layout if f is not None), note))
    return out


def _layout_fields(graph: Graph) -> list[tuple[tuple | None, str]]:
    """Per call, the field of each axis of its (first) output: an :class:`AxisField` for a spatial
    axis, ``None`` for batch/channel/feature axes; or ``None`` and a note."""
    nd = len(graph.input_shape) - 2
    if nd < 1:
        return [(None, f"no receptive field: the input {graph.input_shape} has no spatial axes")] * len(graph.calls)
    start = (None, None) + tuple(_UNIT for _ in range(nd))
    res: list[tuple[tuple | None, str]] = []

    def of(src):
        if src == -1:
            return start, ""
        return res[src]

    constant: set[int] = set()  # calls computed from parameters and constants only (a class token)
    for c in graph.calls:
        ins = [(of(src), shape) for src, shape in zip(c.inputs, c.input_shapes)
               if src is not None and src not in constant]
        if not ins:
            constant.add(c.index)
            res.append((None, f"not tracked: {_where(c)} reads no tensor computed from the input"))
            continue
        whole = next((n for (f, n), _ in ins if f is None and n.startswith("whole input")), None)
        if whole is not None:
            if c.kind in {"mul", "mul_"} and any(f is not None for (f, _n), _ in ins) and "gate" not in whole:
                whole = f"whole input: squeeze-excitation gate {_where(c)} ({whole.removeprefix('whole input: ')})"
            res.append((None, whole))
            continue
        lost = next((n for (f, n), _ in ins if f is None), None)
        if lost is not None:  # a branch whose field is unknown: the join's field is unknown too
            res.append((None, lost))
            continue
        tracked = [(f, shape) for (f, note), shape in ins if len(f) == len(shape)]
        if len(tracked) < len(ins):
            res.append((None, f"not tracked past {_where(c)} (an input's axes do not match its field)"))
            continue
        res.append(_layout_step(c, tracked, nd))
    return res


_LAYOUT_OPS = {"permute", "transpose", "movedim", "squeeze", "unsqueeze", "t"}


def _standard(layout, nd: int) -> bool:
    return (len(layout) == nd + 2 and layout[0] is None and layout[1] is None
            and all(f is not None for f in layout[2:]))


def _layout_step(c: Call, tracked, nd: int):
    """Field of call ``c``: layout operations move the axes' fields; calls on the standard
    ``(N, C, *spatial)`` layout go through :func:`_field_step`; on other layouts (channels-last)
    per-position layers keep the fields and anything else is not tracked."""
    kind, out = c.kind, c.output_shape
    lay0, s0 = tracked[0]
    where = _where(c)
    if out is None:
        return None, f"not tracked past {where} ({kind} has no tensor output)"
    if kind in _LAYOUT_OPS:
        lay = list(lay0)
        n = len(lay)
        if kind == "permute":
            dims = c.args[1:] if len(c.args) > 2 else _arg(c, 1, "dims")
            dims = tuple(dims) if isinstance(dims, (tuple, list)) else (dims,)
            new = [lay[d % n] for d in dims]
        elif kind in {"transpose", "t"}:
            a, b = (_arg(c, 1, "dim0", 0), _arg(c, 2, "dim1", 1)) if kind == "transpose" else (0, 1)
            lay[a % n], lay[b % n] = lay[b % n], lay[a % n]
            new = lay
        elif kind == "movedim":
            src, dst = _arg(c, 1, "source"), _arg(c, 2, "destination")
            src, dst = (src,) if isinstance(src, int) else src, (dst,) if isinstance(dst, int) else dst
            order = [i for i in range(n) if i not in {x % n for x in src}]
            for sdim, ddim in sorted(zip((x % n for x in src), (x % len(out) for x in dst)), key=lambda t: t[1]):
                order.insert(ddim, sdim)
            new = [lay[i] for i in order]
        elif kind == "squeeze":
            dims = _arg(c, 1, "dim")
            chosen = set(range(n)) if dims is None else {d % n for d in _as_tuple(dims)}
            kept = [i for i in range(n) if not (s0[i] == 1 and i in chosen)]
            new = [lay[i] for i in kept]
        else:  # unsqueeze
            d = _arg(c, 1, "dim") % (n + 1)
            new = lay[:d] + [None] + lay[d:]
        if len(new) != len(out):
            return None, f"not tracked past {where} ({kind})"
        return tuple(new), ""
    if kind in _RESHAPES and len(s0) == len(lay0):
        return _reshape_layout(lay0, tuple(s0), tuple(out), where, kind)
    if kind in _REDUCTIONS:
        reduced = _reduced_dims(c, len(s0))
        if reduced is not None:
            spatial = [d for d, f in enumerate(lay0) if f is not None and s0[d] > 1]
            if spatial and all(d in reduced for d in spatial):
                return None, f"whole input: {where} ({kind} over spatial axes)"
            keep = len(out) == len(s0)
            if any(d in reduced for d in spatial) and not keep:
                return None, f"not tracked past {where} ({kind} over some of the spatial axes)"
            # keepdim: a reduced spatial axis is a window over the whole axis
            new = [(_window(f, s0[d], s0[d], 0, 1, 1) if d in reduced and d in spatial else f)
                   for d, f in enumerate(lay0)] if keep else [f for d, f in enumerate(lay0) if d not in reduced]
            if len(new) != len(out):
                return None, f"not tracked past {where} ({kind})"
            return tuple(new), ""
    if all(_standard(lay, nd) for lay, _ in tracked) and len(out) == nd + 2 and not _is_layout_free(c):
        f, note = _field_step(c, [(lay[2:], shape) for lay, shape in tracked], nd)
        return (None if f is None else (None, None) + tuple(f)), note
    # a non-standard layout (e.g. channels-last), or an output that is not (N, C, *spatial)
    m = c.module
    if isinstance(m, nn.Linear) or kind == "linear":
        if lay0[-1] is None and len(out) == len(lay0):
            return lay0, ""
        return None, f"not tracked past {where} (a linear map over a spatial axis)"
    if isinstance(m, nn.LayerNorm) or kind == "layer_norm":
        ns = tuple(m.normalized_shape) if m is not None else tuple(_arg(c, 1, "normalized_shape", ()))
        if any(f is not None for f in lay0[len(lay0) - len(ns):]):
            return None, f"whole input: {where} (LayerNorm over spatial axes)"
        return lay0, ""
    if isinstance(m, nn.RNNBase):
        seq = 1 if m.batch_first else 0
        if len(lay0) == 3 and lay0[seq] is not None and all(f is None for i, f in enumerate(lay0) if i != seq):
            if m.bidirectional:
                return None, f"whole input: {where} (bidirectional {kind} along a spatial axis)"
            f = lay0[seq]  # step t reads steps 0 … t: a field from the first step's start to step t's end
            grown = AxisField.make(f.jump, lambda v: (min(f.at(0)[0], f.at(v)[0]), f.at(v)[1]), 0, out[seq])
            return tuple(grown if i == seq else None for i in range(len(out))), ""
        if any(f is not None for f in lay0):
            return None, f"not tracked past {where} ({kind} reads a spatial axis as features or batch)"
        return None, f"not tracked past {where} ({kind})"
    if isinstance(m, nn.RNNCellBase):
        if any(f is not None for f in lay0[1:]):
            return None, f"not tracked past {where} ({kind} reads a spatial axis as features)"
        return lay0[:1] + (None,) * (len(out) - 1), ""
    same = [lay for lay, shape in tracked if tuple(shape) == tuple(out)]
    if same and all(lay == same[0] or _same_axes(lay, same[0]) for lay in same):
        if len(same[0]) != len(out):
            return None, f"not tracked past {where} ({kind})"
        joined = _combine_layouts(same, out)
        if joined is None:
            return None, f"not tracked past {where} (its inputs have different jumps)"
        return joined, ""
    return None, f"not tracked past {where} ({kind} changes the layout)"


_RESHAPES = {"view", "reshape", "flatten", "unflatten", "view_as", "reshape_as", "Flatten", "Unflatten"}


def _reshape_layout(lay, s0: tuple, out: tuple, where: str, kind: str):
    """A reshape keeps the field of an axis when that axis lies in the longest common prefix or
    suffix of the input and output shapes (in row-major order an element keeps its index along
    those axes: ``(N, C, H, W) → (N, g, C/g, H, W)`` keeps H and W); a spatial axis anywhere else
    is mixed with other axes and its field is not tracked."""
    i = 0
    while i < min(len(s0), len(out)) and s0[i] == out[i]:
        i += 1
    j = 0
    while j < min(len(s0), len(out)) - i and s0[len(s0) - 1 - j] == out[len(out) - 1 - j]:
        j += 1
    middle = lay[i:len(lay) - j]
    if any(f is not None for f in middle):
        return None, f"not tracked past {where} ({kind} merges or splits a spatial axis)"
    new = tuple(lay[:i]) + (None,) * (len(out) - i - j) + tuple(lay[len(lay) - j:])
    return new, ""


def _reduced_dims(c: Call, rank: int) -> set[int] | None:
    """The axes a reduction (``mean``, ``sum``, ``amax``, ``max``, ``std``, …) reduces, or ``None``
    when the call is not a reduction (``torch.max(a, b)`` is elementwise)."""
    pos = 2 if c.kind in {"norm", "linalg_vector_norm", "vector_norm"} else 1
    dim = _arg(c, pos, "dim", None)
    if _is_t(dim) or (c.kind in {"max", "min"} and "other" in c.kwargs):
        return None
    if dim is None or isinstance(dim, bool) or dim == () or dim == []:
        return set(range(rank))  # every axis (std(x, False) passes `unbiased` in place of dim)
    try:
        return {int(d) % rank for d in _as_tuple(dim)}
    except (TypeError, ValueError):
        return None


def _is_seq(v) -> bool:
    return isinstance(v, (tuple, list))


def _as_tuple(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def _is_layout_free(c: Call) -> bool:
    """Calls whose meaning does not depend on which axes are spatial are handled by the layout rules."""
    return isinstance(c.module, (nn.Linear, nn.RNNBase)) or c.kind == "linear"


def _same_axes(a, b) -> bool:
    return len(a) == len(b) and all((x is None) == (y is None) for x, y in zip(a, b))


def _combine_layouts(layouts, out_shape=None):
    spatial = [i for i, f in enumerate(layouts[0]) if f is not None]
    if not spatial:
        return layouts[0]
    joined = _combine([tuple(lay[i] for i in spatial) for lay in layouts],
                      None if out_shape is None else [out_shape[i] for i in spatial])
    if joined is None:
        return None
    out = list(layouts[0])
    for i, f in zip(spatial, joined):
        out[i] = f
    return tuple(out)


# ==================================================================================== findings
def findings(rev: Review) -> list[Finding]:
    """Design hazards of the reviewed model, each with the claim id that proves it (see the module doc)."""
    g, out = rev.graph, []
    calls = g.calls
    biased = []
    for c in calls:
        m = c.module
        if isinstance(m, _CONVT):
            bad = [(k, s, d) for k, s, d in zip(m.kernel_size, m.stride, m.dilation) if k % s or math.gcd(d, s) > 1]
            if bad:
                dil = f", dilation {tuple(m.dilation)}" if any(d > 1 for d in m.dilation) else ""
                out.append(Finding("checkerboard", "warning", [c.name],
                                   f"`{c.name}`: transposed convolution with kernel {tuple(m.kernel_size)}, stride "
                                   f"{tuple(m.stride)}{dil}: the stride does not divide the kernel (or shares a "
                                   f"factor with the dilation), so outputs receive unequal numbers of taps "
                                   f"(a checkerboard pattern)", CLAIMS["checkerboard"]))
        if isinstance(m, _CONV + _POOL):
            ks, ss = _tuple(getattr(m, "kernel_size", 1), len(c.input_shape) - 2), _tuple(m.stride, len(c.input_shape) - 2)
            if any(k < s for k, s in zip(ks, ss)):
                frac = Fraction(math.prod(ks), math.prod(ss))
                out.append(Finding("strided-subsample", "warning", [c.name],
                                   f"`{c.name}`: kernel {ks} smaller than stride {ss}: it reads only {frac} of its "
                                   f"input positions, the rest get no gradient", CLAIMS["strided-subsample"]))
        if isinstance(m, _CONV) and m.padding == "same":
            even = [k for k, d in zip(m.kernel_size, m.dilation) if (d * (k - 1)) % 2]
            if even:
                out.append(Finding("same-even-kernel", "warning", [c.name],
                                   f"`{c.name}`: padding='same' with kernel {tuple(m.kernel_size)}: d(k−1) is odd, so "
                                   f"the padding is asymmetric (one more zero on the right)", CLAIMS["same-even-kernel"]))
        if isinstance(m, _CONV + _CONVT) and m.bias is not None:
            readers = g.readers(c.index)
            if len(readers) == 1 and isinstance(calls[readers[0]].module, _BatchNorm):
                biased.append((c.name, calls[readers[0]].name, m.out_channels))
    if biased:
        names = ", ".join(f"`{a}` → `{b}`" for a, b, _ in biased[:6]) + (
            f" and {len(biased) - 6} more" if len(biased) > 6 else "")
        out.append(Finding("bias-before-bn", "info", [a for a, _, _ in biased],
                           f"{len(biased)} convolutions with a bias feed a BN directly ({names}; "
                           f"{sum(n for _, _, n in biased):,} parameters): the BN subtracts the mean, so the bias "
                           f"only shifts it (the fold gives b' = (b − μ)s + β) and can be dropped",
                           CLAIMS["bias-before-bn"]))
    out += _gridding(g)
    plan = fold_plan(g)
    for bn, why in plan["left"]:
        out.append(Finding("bn-not-folded", "info", [bn], f"`{bn}` cannot be folded exactly: {why}",
                           CLAIMS["bn-not-folded"] if plan["categories"][bn] == "zero-padding" else "bn.fold-model"))
    ridge = rev.machine.peak_flops / rev.machine.bandwidth
    low = [r for r in rev.layers if r.intensity is not None and r.intensity < ridge]
    if low:
        names = ", ".join(f"`{r.name}`" for r in low[:6]) + (f" and {len(low) - 6} more" if len(low) > 6 else "")
        out.append(Finding("memory-bound", "info", [r.name for r in low],
                           f"{len(low)} of {sum(r.macs > 0 for r in rev.layers)} multiply-accumulate calls have an "
                           f"arithmetic intensity below the ridge point {ridge:.0f} FLOP/byte of {rev.machine.name} "
                           f"(float32, each tensor moved once): memory bound there — {names}", CLAIMS["memory-bound"]))
    odd = []
    for c in calls:
        m = c.module
        if isinstance(m, _CONV + _CONVT):
            pair = (m.in_channels, m.out_channels)
        elif isinstance(m, nn.Linear):
            pair = (m.in_features, m.out_features)
        else:
            continue
        if c.inputs and c.inputs[0] == -1:
            pair = (8, pair[1])  # the image channels are given
        if any(v % 8 for v in pair) and c.name not in odd:
            odd.append(c.name)
    if odd:
        names = ", ".join(f"`{n}`" for n in odd[:6]) + (f" and {len(odd) - 6} more" if len(odd) > 6 else "")
        out.append(Finding("channels-not-multiple-of-8", "info", odd,
                           f"{len(odd)} layers have a channel count that is not a multiple of 8, which GPU tensor "
                           f"cores need for full speed in 16-bit precision: {names}", None,
                           "NVIDIA Deep Learning Performance Guide, tensor core requirements"))
    dependent: set[int] = set()  # calls whose value depends on the model input
    for c in calls:
        if any(src == -1 or src in dependent for src in c.inputs if src is not None):
            dependent.add(c.index)
    uncounted = [c for c in calls if c.index in dependent and _uncounted(c, rev.layers[c.index].macs)]
    if uncounted:
        names = ", ".join(f"`{_where(c)}` ({c.kind})" for c in uncounted[:6]) + (
            f" and {len(uncounted) - 6} more" if len(uncounted) > 6 else "")
        out.append(Finding("macs-not-counted", "warning", [_where(c) for c in uncounted],
                           f"the multiply-accumulates of {len(uncounted)} calls are not counted, so the MAC total "
                           f"is a lower bound: {names}", None,
                           "review counts convolutions, transposed convolutions, linear, matmul-like, attention "
                           "and recurrent layers"))
    if rev.params_used < rev.params:
        out.append(Finding("unused-parameters", "info", [], f"{rev.params - rev.params_used:,} parameters are never "
                           f"read in the forward pass at this input", None, "measured by the trace"))
    return out


#: Functions that multiply-accumulate but have no MAC rule here (or a form the rule does not read).
_UNCOUNTED_OPS = {"einsum", "tensordot", "bilinear", "mv", "dot", "vdot", "inner", "outer", "ger", "addmv", "addr",
                  "kron", "chain_matmul", "multi_dot", "conv_tbc", "convolution", "_convolution",
                  "_native_multi_head_attention", "_transformer_encoder_layer_fwd", "multi_head_attention_forward",
                  "fft_conv", "unfold_matmul", "baddbmm", "addbmm", "addmm", "matmul", "mm", "bmm",
                  "scaled_dot_product_attention"}
_NO_MACS_MODULES = (nn.Embedding, nn.EmbeddingBag, nn.LayerNorm, nn.GroupNorm, nn.PReLU, _BatchNorm)


def _uncounted(c: Call, macs: int) -> bool:
    """A call that multiplies activations by weights (or by other activations) but got no MACs:
    a ``torch.nn`` leaf with a matrix-shaped parameter and no rule (``TransformerEncoderLayer``),
    or a product-type function on a traced tensor whose form the rules do not read."""
    if macs or not c.output_shapes or math.prod(c.output_shape) == 0:
        return False
    if c.module is not None:
        if isinstance(c.module, _NO_MACS_MODULES + _CONV + _CONVT + (nn.Linear,)):
            return False
        return any(p.dim() >= 2 for p in c.module.parameters())
    return c.kind in _UNCOUNTED_OPS and any(src is not None for src in c.inputs)


def _gridding(g: Graph) -> list[Finding]:
    """Runs of stride-1 convolutions (k > 1, joined through pointwise layers) containing a dilated
    one whose read offsets — the Minkowski sum of ``d·{0, …, k−1}`` per axis — have holes."""
    calls = g.calls

    def geometry(c):
        m = c.module
        if isinstance(m, _CONV) and all(s == 1 for s in m.stride) and max(m.kernel_size) > 1:
            return tuple(m.kernel_size), tuple(m.dilation)
        return None

    def previous_conv(c):
        src = c.inputs[0] if c.inputs else None
        while src is not None and src >= 0:
            p = calls[src]
            if geometry(p) is not None:
                return p
            if p.module is not None and not _pointwise(p):
                return None
            if p.module is None and (p.output_shape != p.input_shape or len([i for i in p.inputs if i is not None]) != 1):
                return None
            src = p.inputs[0]
        return None

    chains, has_next = {}, set()
    for c in calls:
        if geometry(c) is None:
            continue
        p = previous_conv(c)
        chains[c.index] = (chains[p.index] if p is not None and p.index in chains else []) + [c]
        if p is not None:
            has_next.add(p.index)
    out = []
    for idx, chain in chains.items():
        if idx in has_next or len(chain) < 2 or not any(max(geometry(x)[1]) > 1 for x in chain):
            continue
        holes = []
        for axis in range(len(geometry(chain[0])[0])):
            reach = {0}
            for x in chain:
                k, d = geometry(x)[0][axis], geometry(x)[1][axis]
                reach = {r + d * t for r in reach for t in range(k)}
            holes.append(sorted(set(range(max(reach) + 1)) - reach))
        if any(holes):
            ds = [geometry(x)[1][0] if len(set(geometry(x)[1])) == 1 else geometry(x)[1] for x in chain]
            gaps = holes[0] or holes[-1]
            out.append(Finding("gridding", "warning", [x.name for x in chain],
                               f"stacked stride-1 convolutions {', '.join(f'`{x.name}`' for x in chain)} with dilations "
                               f"{ds}: their outputs never read input offsets {gaps[:6]}"
                               f"{' …' if len(gaps) > 6 else ''} of the stack's span (gridding)", CLAIMS["gridding"]))
    return out


def _pointwise(c: Call) -> bool:
    """A module call that maps each position independently and keeps the shape (BN, activations, dropout)."""
    return (c.output_shape == c.input_shape and len([i for i in c.inputs if i is not None]) == 1
            and not isinstance(c.module, _CONV + _CONVT + _POOL + _ADAPTIVE + _GLOBAL_NORMS)
            and type(c.module).__name__ not in {"Upsample", "LayerNorm"} and not list(c.module.children()))


# ==================================================================================== folding
def fold_plan(g: Graph) -> dict:
    """The folds :func:`convbook.fold.fold_decisions` decides on the review's graph, as review presents them.

    Returns ``{"folded": [(bn, layer, order)], "after": [(layer, bn)], "before": [(bn, conv)],
    "left": [(bn, why)], "categories": {bn: kind}}``: ``folded`` in decision order (``order``
    ``"conv-bn"`` or ``"bn-conv"``), ``after``/``before`` the same pairs split by order, and every
    BN left with its reason and its kind (:data:`convbook.fold.LEFT_CATEGORIES`).  The rules are
    those of ``fold_decisions`` (and so of :func:`convbook.fold.fold_model`), with Linear → BN
    allowed since the graph shows the Linear output's rank.
    """
    report = _fold.fold_decisions(g.model, graph=g, linear_bn=True)
    return {"folded": list(report.folded),
            "after": [(layer, bn) for bn, layer, order in report.folded if order == "conv-bn"],
            "before": [(bn, layer) for bn, layer, order in report.folded if order == "bn-conv"],
            "left": list(report.unfolded.items()), "categories": dict(report.categories)}


def _fold_model(model: nn.Module, g: Graph, input_shape, tol: float) -> FoldReport:
    """Apply :func:`fold_plan` by replacing modules (no ``torch.fx``: works on any model that runs)
    on a float64 CPU copy, in decision order (so chains fold into one layer), and compare the copy
    with the model in float64 before returning it."""
    params = list(model.parameters()) + list(model.buffers())
    if any(p.device.type == "meta" for p in params):
        raise ValueError("fold needs a model with real weights, not one on the meta device")
    dtype = _dtype(model)
    device = params[0].device if params else torch.device("cpu")
    plan = fold_plan(g)
    base = copy_model(model, "cpu", torch.float64).eval()
    work = copy_model(base)
    mods = dict(work.named_modules())
    new: dict[str, nn.Module] = {}
    for bn, layer, order in plan["folded"]:
        current = new.get(layer) or _fold.materialize_weight(mods[layer])
        if order == "conv-bn":
            new[layer] = _fold.fold_conv_bn(current, mods[bn])
        else:
            new[layer] = _fold.fold_bn_conv(mods[bn], current)
        new[bn] = nn.Identity()
    for name, module in new.items():
        _replace(work, mods[name], module)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(tuple(input_shape), generator=gen, dtype=torch.float64)
    with torch.no_grad():
        ref, got = base(x), work(x)
    ref_t, got_t = _flat(ref), _flat(got)
    err = max(((a - b).abs().max() / a.abs().max().clamp_min(1e-300)).item() for a, b in zip(ref_t, got_t)) \
        if ref_t else 0.0
    if len(ref_t) != len(got_t) or err > tol:
        raise RuntimeError(f"the folded copy differs from the model: relative error {err:.2e} > {tol:g}")
    out = copy_model(work, device, dtype).eval()
    folded = [(layer, bn, "conv→BN" if order == "conv-bn" else "BN→conv") for bn, layer, order in plan["folded"]]
    n_bn = sum(isinstance(m, _BatchNorm) for m in g.model.modules())
    return FoldReport(out, work, folded, plan["left"], err, n_bn, _fold.count_batchnorms(work), plan["categories"])


def _replace(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Replace every registration of module ``old`` under ``root`` (all aliases) by ``new``."""
    for parent in root.modules():
        for key, child in list(parent._modules.items()):
            if child is old:
                parent._modules[key] = new


def _flat(obj) -> list[torch.Tensor]:
    from .graph import _tensors

    return [t for t in _tensors(obj) if t.is_floating_point()]


# ==================================================================================== counts
def counts(rev: Review, *, third_party: bool = False) -> dict:
    """Operation counts of one forward pass, by category, beside ``torch.utils.flop_counter``.

    ``macs``: the MACs above; ``flops`` = 2 × MACs.  ``bn_ops``: eval-mode BN is one multiply
    and one add per element (2 per element); ``bias_adds``: one add per output element of a
    conv/linear with bias; ``activation_ops``: one op per output element of ReLU-like and
    sigmoid-like activations; ``pool_ops``: one op per window element per output (global
    pools: one per input element); ``elementwise_ops``: one per output element of add/mul/
    sub/div between activations.  ``folded_flops``: after folding every exactly foldable BN
    (each folded BN's ops vanish; a conv that gains a bias gains its adds).
    ``train_step_flops``: forward + backward of conv/linear = 3 × forward (the backward
    computes the input gradient and the weight gradient, each as many MACs as the forward).
    ``flop_counter``: FLOPs reported by ``FlopCounterMode`` on the same input (it counts
    conv, transposed conv, matmul-like ops as 2 FLOPs per MAC and nothing else).
    """
    ops = {"bn_ops": 0, "bias_adds": 0, "activation_ops": 0, "pool_ops": 0, "elementwise_ops": 0}
    acts = {"ReLU", "ReLU6", "relu", "relu_", "relu6", "hardtanh", "GELU", "gelu", "SiLU", "silu", "Sigmoid", "sigmoid",
            "Tanh", "tanh", "LeakyReLU", "leaky_relu", "Hardswish", "hardswish", "Hardsigmoid", "hardsigmoid", "ELU",
            "Mish", "PReLU"}
    bn_calls = {}
    for c in rev.graph.calls:
        out = math.prod(c.output_shape) if c.output_shape else 0
        m = c.module
        if isinstance(m, _BatchNorm):
            ops["bn_ops"] += 2 * out
            bn_calls[c.name] = 2 * out
        elif isinstance(m, _CONV + _CONVT + (nn.Linear,)) and m.bias is not None:
            ops["bias_adds"] += out
        elif c.kind in acts:
            ops["activation_ops"] += out
        elif isinstance(m, _POOL):
            ops["pool_ops"] += out * math.prod(_tuple(m.kernel_size, len(c.output_shape) - 2))
        elif isinstance(m, _ADAPTIVE) or c.kind in _FUNC_POOL:
            ops["pool_ops"] += math.prod(c.input_shape)
        elif c.kind in {"add", "add_", "mul", "mul_", "sub", "div"} and len([i for i in c.inputs if i is not None]) > 1:
            ops["elementwise_ops"] += out
    flops = 2 * rev.macs
    plan = fold_plan(rev.graph)
    removed = sum(bn_calls.get(bn, 0) for _, bn in plan["after"]) + sum(bn_calls.get(bn, 0) for bn, _ in plan["before"])
    gained = 0
    for layer in dict.fromkeys(layer for _bn, layer, _order in plan["folded"]):  # a layer gains a bias once
        for c in rev.graph.module_calls(layer):
            if c.module.bias is None:
                gained += math.prod(c.output_shape)
    total = flops + sum(ops.values())
    res = {"macs": rev.macs, "flops": flops, **ops, "total_flops": total,
           "folded_flops": total - removed + gained, "train_step_flops": 3 * flops,
           "flop_counter": flop_counter(rev.model, rev.input_shape)}
    if third_party:
        from .cost import third_party_counts

        res["third_party_macs"] = third_party_counts(rev.model, rev.input_shape)
    return res


def flop_counter(model: nn.Module, input_shape) -> int | None:
    """Total FLOPs from ``torch.utils.flop_counter.FlopCounterMode`` on a meta copy (``None`` if it fails)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        m = copy_model(model, "meta").eval()
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            m(torch.empty(tuple(input_shape), device="meta", dtype=_dtype(model)))
        return int(fc.get_total_flops())
    except Exception:
        try:
            m = copy_model(model, "cpu", torch.float32).eval()
            with FlopCounterMode(display=False) as fc, torch.no_grad():
                m(torch.randn(tuple(input_shape)))
            return int(fc.get_total_flops())
        except Exception:
            return None


# ==================================================================================== helpers
def _dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _shape_text(shape) -> str:
    return "—" if shape is None else "×".join(str(v) for v in shape)


def _tuple(v, nd: int) -> tuple[int, ...]:
    if isinstance(v, (tuple, list)):
        return tuple(int(x) for x in v)
    return (int(v),) * max(nd, 1)


def _is_t(v) -> bool:
    return isinstance(v, tuple) and len(v) == 2 and v[0] == "tensor"


def _arg(c: Call, pos: int, name: str, default=None):
    if name in c.kwargs:
        return c.kwargs[name]
    if len(c.args) > pos:
        return c.args[pos]
    return default


def _rnn_macs(m: nn.Module, c: Call) -> int:
    gates = _RNN.get(getattr(m, "mode", type(m).__name__).split("_")[0], _RNN.get(type(m).__name__, 1))
    x = c.input_shape
    if x is None:
        return 0
    if len(x) == 3:
        n, t = (x[0], x[1]) if m.batch_first else (x[1], x[0])
    else:
        n, t = 1, x[0]
    dirs = 2 if m.bidirectional else 1
    h = m.hidden_size
    total = 0
    for layer in range(m.num_layers):
        inp = m.input_size if layer == 0 else h * dirs
        total += n * t * dirs * gates * h * (inp + h)
    return total


def _where(c: Call) -> str:
    """A call's name for messages: the module name, or ``scope.op`` for a function call."""
    if c.module is not None or not c.scope:
        return c.name
    return f"{c.scope}.{c.name}"


def _sizes_equal(a, b) -> bool:
    return tuple(a[2:]) == tuple(b[2:])


@dataclass(frozen=True)
class AxisField:
    """The exact field along one axis: output unit ``u`` reads input pixels ``lo(u) … hi(u)``.

    Periodic form (``n == 0``): ``lo``/``hi`` are stored for one period ``u = 0 … q−1`` and
    extended by ``lo(u + q) = lo(u) + jump·q`` (``jump·q`` is an integer).  With integer jumps
    ``q = 1`` and this is the classical recurrence; after upsampling or a transposed convolution
    (fractional jumps) the field depends on the unit's phase, and ``size`` is the largest.

    Table form (``n > 0``): after branches with different jumps are joined (a skip connection
    beside an ``align_corners=True`` upsampling, sizes that do not divide) no period exists, so
    ``lo``/``hi`` are stored for each of the ``n`` units of the map; units outside the map (read
    through padding) continue the end units by ``jump`` (the largest jump of the joined branches).
    """

    jump: Fraction
    lo: tuple
    hi: tuple
    n: int = 0

    def at(self, u: int) -> tuple[int, int]:
        if self.n:
            if 0 <= u < self.n:
                return self.lo[u], self.hi[u]
            end, d = (0, u) if u < 0 else (self.n - 1, u - self.n + 1)
            return self.lo[end] + math.floor(d * self.jump), self.hi[end] + math.ceil(d * self.jump)
        q = len(self.lo)
        a, i = divmod(u, q)
        shift = int(self.jump * q) * a
        return self.lo[i] + shift, self.hi[i] + shift

    @property
    def size(self) -> int:
        """The largest extent over a period; in table form the extent of the central unit ``⌊n/2⌋``
        (units of a table differ, and the border ones read padding)."""
        if self.n:
            return self.hi[self.n // 2] - self.lo[self.n // 2] + 1
        return max(h - l + 1 for l, h in zip(self.lo, self.hi))

    @property
    def period(self) -> int:
        """Units per period (the whole map, ``n``, in table form)."""
        return len(self.lo)

    @staticmethod
    def make(jump: Fraction, fn, q: int, n: int = 0) -> "AxisField":
        """The field ``v ↦ fn(v)``: periodic with period dividing ``q`` when ``n == 0``, else a table of ``n`` units."""
        if n:
            lo, hi = zip(*(fn(v) for v in range(n)))
            return AxisField(Fraction(jump), tuple(lo), tuple(hi), n)
        lo, hi = zip(*(fn(v) for v in range(q)))
        for d in range(1, q + 1):  # the shortest period
            if q % d or (jump * d).denominator != 1:
                continue
            sh = int(jump * d)
            if all(lo[i + d] == lo[i] + sh and hi[i + d] == hi[i] + sh for i in range(q - d)):
                return AxisField(Fraction(jump), tuple(lo[:d]), tuple(hi[:d]))
        return AxisField(Fraction(jump), tuple(lo), tuple(hi))


_UNIT = AxisField(Fraction(1), (0,), (0,))


def _reads(f: AxisField, us) -> tuple[int, int]:
    spans = [f.at(u) for u in us]
    return min(l for l, _ in spans), max(h for _, h in spans)


def _make(f: AxisField, jump: Fraction, fn, q: int, n_out: int) -> AxisField:
    """A step's output field: periodic when the input ``f`` is and the period ``q`` is not longer
    than the map (``n_out`` units), else a table of the ``n_out`` units (periods multiply through
    chains of resamplings with coprime ratios; a table stays as long as the map)."""
    return AxisField.make(jump, fn, q, n_out if f.n or (n_out and q > n_out) else 0)


def _window(f: AxisField, k: int, s: int, p: int, d: int, n_out: int = 0) -> AxisField:
    """Convolution or pooling: output ``v`` reads units ``v·s − p + t·d``, ``t < k``."""
    return _make(f, f.jump * s, lambda v: _reads(f, [v * s - p + t * d for t in range(k)]), len(f.lo), n_out)


def _transpose(f: AxisField, k: int, s: int, p: int, d: int, n_out: int = 0) -> AxisField:
    """Transposed convolution: output ``v`` reads the units ``u`` with ``u·s − p + t·d = v``."""
    def fn(v):
        us = [(v + p - t * d) // s for t in range(k) if (v + p - t * d) % s == 0]
        return _reads(f, us or [(v + p) // s])
    return _make(f, f.jump / s, fn, len(f.lo) * s, n_out)


def _resample(f: AxisField, n_in: int, n_out: int, taps: int, align_corners: bool = False,
              ratio: Fraction | None = None) -> AxisField:
    """Upsampling/interpolation: nearest reads 1 unit, linear 2 (1 where the weight of the second is 0), cubic 4.

    Output ``v`` samples input position ``v·r`` (nearest, align_corners) or ``(v + ½)·r − ½``, with
    ``r = (n_in − 1)/(n_out − 1)`` for align_corners, ``1/scale_factor`` when a scale factor is
    given (``ratio``), else ``n_in/n_out``.
    """
    r = Fraction(n_in - 1, n_out - 1) if align_corners and n_out > 1 else (ratio or Fraction(n_in, n_out))

    def fn(v):
        src = v * r if (align_corners or taps == 1) else (v + Fraction(1, 2)) * r - Fraction(1, 2)
        i0 = math.floor(src)
        if taps == 1:
            return _reads(f, [i0])
        if taps == 2:
            return _reads(f, [i0] if src == i0 else [i0, i0 + 1])
        return _reads(f, [i0 - 1, i0, i0 + 1, i0 + 2])
    return _make(f, f.jump * r, fn, len(f.lo) * r.denominator, n_out)


def _adaptive(f: AxisField, n: int, o: int) -> AxisField:
    """Adaptive pooling: output ``v`` reads ``⌊v n/o⌋ … ⌈(v+1) n/o⌉ − 1``."""
    def fn(v):
        return _reads(f, range(math.floor(Fraction(v * n, o)), math.ceil(Fraction((v + 1) * n, o))))
    r = Fraction(n, o)
    return _make(f, f.jump * r, fn, len(f.lo) * r.denominator, o)


def _shift(f: AxisField, offset: int, n_out: int = 0) -> AxisField:
    return _make(f, f.jump, lambda v: f.at(v + offset), len(f.lo), n_out)


def _combine(fields, sizes=None):
    """Join of branches (add, cat, …): per unit the union of the input spans.  Periodic when
    every branch is periodic with the same jump; otherwise a table over the ``sizes`` of the
    output map (``None`` if the sizes are not given)."""
    nd = len(fields[0])
    out = []
    for a in range(nd):
        fs = [f[a] for f in fields]

        def fn(v, fs=fs):
            return min(g.at(v)[0] for g in fs), max(g.at(v)[1] for g in fs)

        q = reduce(math.lcm, (len(g.lo) for g in fs))
        if all(g.jump == fs[0].jump and not g.n for g in fs) and (sizes is None or q <= sizes[a]):
            out.append(AxisField.make(fs[0].jump, fn, q))
        elif sizes is None:
            return None
        else:
            out.append(AxisField.make(max(g.jump for g in fs), fn, 0, sizes[a]))
    return tuple(out)


def _pad_left(value, k: int, d: int, nd: int):
    if value == "same":
        return (d * (k - 1)) // 2
    if value == "valid":
        return 0
    return value


def _conv_geometry(c: Call, nd: int):
    """``(k, s, p, d)`` per axis of a convolution, transposed convolution or pooling call."""
    m, kind = c.module, c.kind
    if m is not None:
        ks = _tuple(m.kernel_size, nd)
        ss = _tuple(m.stride if m.stride is not None and m.stride != () else m.kernel_size, nd)
        ds = _tuple(getattr(m, "dilation", 1), nd)
        pad = m.padding
    elif kind in _FUNC_CONV or kind in _FUNC_CONVT:
        w = _arg(c, 1, "weight")
        ks = tuple(w[1][2:]) if _is_t(w) else (1,) * nd
        ss = _tuple(_arg(c, 3, "stride", 1), nd)
        pad = _arg(c, 4, "padding", 0)
        ds = _tuple(_arg(c, 5 if kind in _FUNC_CONV else 7, "dilation", 1), nd)
    else:
        ks = _tuple(_arg(c, 1, "kernel_size"), nd)
        st = _arg(c, 2, "stride", None)
        ss = ks if st in (None, [], ()) else _tuple(st, nd)
        pad = _arg(c, 3, "padding", 0)
        ds = _tuple(_arg(c, 4, "dilation", 1), nd) if "max" in kind else (1,) * nd
    if isinstance(pad, str):
        ps = tuple(_pad_left(pad, k, d, nd) for k, d in zip(ks, ds))
    else:
        ps = _tuple(pad, nd)
    return ks, ss, ps, ds


def _running_statistics(m: nn.Module) -> bool:
    """A batch or instance norm that normalises with stored running statistics in eval mode (a per-position map)."""
    return bool(getattr(m, "track_running_stats", False)) and getattr(m, "running_mean", None) is not None


def _batch_statistics(c: Call) -> bool:
    """A batch norm that normalises with the statistics of the batch even in eval mode
    (``track_running_stats=False``, or ``F.batch_norm`` with ``training=True`` or no running mean)."""
    if isinstance(c.module, _BatchNorm):
        return not _running_statistics(c.module)
    if c.module is None and c.kind == "batch_norm":
        return bool(_arg(c, 5, "training", False)) or not _is_t(_arg(c, 1, "running_mean"))
    return False


def _getitem_offsets(c: Call, nd: int, s0, out):
    index = _arg(c, 1, "idx", None)
    if not isinstance(index, tuple):
        index = (index,)
    if any(i is Ellipsis or i is None for i in index):
        return None
    offs = []
    for a in range(nd):
        pos = 2 + a
        item = index[pos] if pos < len(index) else slice(None)
        if not isinstance(item, slice) or item.step not in (None, 1):
            return None
        start = item.start or 0
        offs.append(start + s0[pos] if start < 0 else start)
    return offs


def _pad_offsets(c: Call, nd: int):
    pads = c.module.padding if c.module is not None else _arg(c, 1, "pad", ())
    pads = _tuple(pads, 2 * nd) if not isinstance(pads, (tuple, list)) else tuple(pads)
    lefts = []
    for a in range(nd):
        j = 2 * (nd - 1 - a)
        lefts.append(-pads[j] if j < len(pads) else 0)
    return lefts


def _field_step(c: Call, tracked, nd: int):
    """Field of call ``c`` from its tracked inputs ``[(field, shape)]`` (see :func:`receptive_fields`)."""
    m, kind = c.module, c.kind
    c = copy.copy(c)
    c.name = _where(c)
    f0, s0 = tracked[0]
    out = c.output_shape
    if isinstance(m, _CONV + _POOL) or kind in _FUNC_CONV or kind in _FUNC_POOL:
        ks, ss, ps, ds = _conv_geometry(c, nd)
        return tuple(_window(f, k, s, p, d, n) for f, k, s, p, d, n in zip(f0, ks, ss, ps, ds, out[2:])), ""
    if isinstance(m, _CONVT) or kind in _FUNC_CONVT:
        ks, ss, ps, ds = _conv_geometry(c, nd)
        return tuple(_transpose(f, k, s, p, d, n) for f, k, s, p, d, n in zip(f0, ks, ss, ps, ds, out[2:])), ""
    if isinstance(m, _ADAPTIVE) or kind.startswith("adaptive_"):
        if all(v == 1 for v in out[2:]) and any(v > 1 for v in s0[2:]):
            return None, f"whole input: {c.name} to {'×'.join('1' * nd)}"
        return tuple(_adaptive(f, n, o) for f, n, o in zip(f0, s0[2:], out[2:])), ""
    if kind in {"Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d", "interpolate", "upsample"}:
        if m is not None:
            mode, align = getattr(m, "mode", "nearest"), bool(getattr(m, "align_corners", False))
        else:
            mode, align = _arg(c, 3, "mode", "nearest"), bool(_arg(c, 4, "align_corners", False))
        if kind == "UpsamplingBilinear2d":
            mode, align = "bilinear", True
        if all(n == 1 for n in s0[2:]):
            return tuple(_resample(f, 1, o, 1) for f, o in zip(f0, out[2:])), ""
        taps = 1 if mode in (None, "nearest") else (4 if mode == "bicubic" else 2)
        if mode == "area":  # interpolate's area mode is adaptive average pooling
            if all(v == 1 for v in out[2:]) and any(v > 1 for v in s0[2:]):
                return None, f"whole input: {c.name} (area resampling to {'×'.join('1' * nd)})"
            return tuple(_adaptive(f, n, o) for f, n, o in zip(f0, s0[2:], out[2:])), ""
        antialias = bool(getattr(m, "antialias", False) if m is not None else _arg(c, 6, "antialias", False))
        if mode == "nearest-exact" or (antialias and any(o < n for n, o in zip(s0[2:], out[2:]))):
            return None, f"not tracked past {c.name} ({mode} resampling{' with antialiasing' if antialias else ''})"
        if m is not None:
            scale, recompute = getattr(m, "scale_factor", None), getattr(m, "recompute_scale_factor", None)
        else:
            scale, recompute = _arg(c, 2, "scale_factor", None), _arg(c, 5, "recompute_scale_factor", None)
        ratios = [None] * nd
        if scale is not None and not recompute and not align:  # PyTorch maps output v by 1/scale, not n_in/n_out
            ratios = [1 / Fraction(v).limit_denominator(1000) for v in _as_tuple(scale)] * (1 if _is_seq(scale) else nd)
        return tuple(_resample(f, n, o, taps, align, r) for f, n, o, r in zip(f0, s0[2:], out[2:], ratios)), ""
    if kind in {"pixel_shuffle", "PixelShuffle"}:
        r_ = out[2] // s0[2]
        return tuple(_make(f, f.jump / r_, lambda v, f=f: f.at(v // r_), len(f.lo) * r_, n)
                     for f, n in zip(f0, out[2:])), ""
    if kind in {"pixel_unshuffle", "PixelUnshuffle"}:
        r_ = s0[2] // out[2]
        return tuple(_window(f, r_, r_, 0, 1, n) for f, n in zip(f0, out[2:])), ""
    if _batch_statistics(c):
        return None, f"whole input: {c.name} (batch norm with batch statistics over the map)"
    if (isinstance(m, _GLOBAL_NORMS) and not _running_statistics(m)) or kind in {"group_norm", "instance_norm"}:
        return None, f"whole input: {c.name} ({kind} statistics over the map)"
    if isinstance(m, nn.LayerNorm) or kind == "layer_norm":
        ns = tuple(m.normalized_shape) if m is not None else tuple(_arg(c, 1, "normalized_shape", ()))
        if len(s0) == nd + 2 and any(a >= 2 for a in range(len(s0) - len(ns), len(s0))):
            return None, f"whole input: {c.name} (LayerNorm over spatial axes)"
    if kind in {"softmax", "Softmax", "log_softmax", "LogSoftmax"}:
        dim = getattr(m, "dim", None) if m is not None else _arg(c, 1, "dim")
        if dim is not None and (dim % len(s0)) >= 2:
            return None, f"whole input: {c.name} (softmax over a spatial axis)"
    if kind in _REDUCTIONS and out is not None and (len(out) < len(s0) or (
            all(o == 1 for o in out[2:]) and any(v > 1 for v in s0[2:]))):
        return None, f"whole input: {c.name} ({kind} over spatial axes)"
    if out is None or len(out) != nd + 2:
        return None, f"not tracked past {c.name} ({kind}: output has {len(out) if out else 0} axes)"
    if kind == "cat":
        dim = _arg(c, 1, "dim", 0)
        if dim % len(out) >= 2:
            return None, f"not tracked past {c.name} (concatenation along a spatial axis)"
    if kind in {"getitem", "narrow"} or kind == "pad" or kind.endswith(("Pad1d", "Pad2d", "Pad3d")):
        offs = _getitem_offsets(c, nd, s0, out) if kind == "getitem" else (
            None if kind == "narrow" else _pad_offsets(c, nd))
        if offs is None and not _sizes_equal(s0, out):
            return None, f"not tracked past {c.name} ({kind} with an index the review does not read)"
        offs = offs or [0] * nd
        return tuple(_shift(f, o, n) for f, o, n in zip(f0, offs, out[2:])), ""
    same = [f for f, s in tracked if _sizes_equal(s, out)]
    if same:
        joined = _combine(same, out[2:])
        if joined is None:
            return None, f"not tracked past {c.name} (its inputs have different jumps)"
        return joined, ""
    return None, f"not tracked past {c.name} ({kind} changes the spatial size)"


# ``import convbook.review; convbook.review(model, shape)``: the module itself is callable.
class _CallableModule(types.ModuleType):
    def __call__(self, model, input_shape, **kwargs):
        return review(model, input_shape, **kwargs)


sys.modules[__name__].__class__ = _CallableModule


# ==================================================================================== CLI
def load_model(spec: str) -> tuple[nn.Module, str]:
    """``FILE.py:NAME`` → the model: NAME an ``nn.Module`` instance, an ``nn.Module`` class, or a
    zero-argument callable returning one.  ``ValueError`` (one line) for a missing file or name."""
    import importlib.util
    from pathlib import Path

    if ":" not in spec:
        raise ValueError(f"expected FILE.py:NAME, got {spec!r}")
    path_text, name = spec.rsplit(":", 1)
    path = Path(path_text)
    if not path.is_file():
        raise ValueError(f"no such file: {path_text}")
    mod_name = f"_convbook_review_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(mod_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ValueError(f"cannot import {path_text} as a Python file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.path.insert(0, str(path.resolve().parent))
    try:
        loader_spec.loader.exec_module(module)
    except Exception as err:
        raise ValueError(f"importing {path_text} failed: {type(err).__name__}: {err}") from None
    finally:
        sys.path.pop(0)
    if not hasattr(module, name):
        raise ValueError(f"{path_text} has no name {name!r}")
    obj = getattr(module, name)
    if isinstance(obj, nn.Module):
        return obj, name
    if callable(obj):
        try:
            obj = obj()
        except Exception as err:
            raise ValueError(f"calling {name}() failed: {type(err).__name__}: {err}") from None
        if isinstance(obj, nn.Module):
            return obj, name
    raise ValueError(f"{name} in {path_text} is not an nn.Module, an nn.Module class or a zero-argument callable "
                     f"returning one (got {type(obj).__name__})")


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` → ``(1, 3, 224, 224)``; ``ValueError`` for anything else."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--input must be comma-separated positive ints such as 1,3,224,224, got {text!r}") from None
    if not shape or any(v < 1 for v in shape):
        raise ValueError(f"--input must be comma-separated positive ints such as 1,3,224,224, got {text!r}")
    return shape


def cmd_review(args) -> int:
    model, name = load_model(args.model)
    shape = parse_shape(args.input)
    stream = sys.stderr

    def progress(i, call_name):
        if (i + 1) % 100 == 0:
            stream.write(f"  traced {i + 1} calls (at {call_name})\n")
            stream.flush()

    stream.write(f"reviewing {name} at input {shape} ...\n")
    rev = review(model, shape, name=name, progress=progress)
    stream.write(f"  {len(rev.layers)} calls traced on {rev.graph.run_on}\n")
    if args.format == "json":
        print(rev.to_json(indent=2))
    elif args.format == "md":
        print(rev.to_markdown(all_calls=args.all))
    else:
        print(rev.to_text(all_calls=args.all))
    if args.fold:
        report = rev.fold()
        print()
        print(report.to_text())
    return 0


def add_cli(sub) -> None:
    """Register ``python -m convbook review FILE.py:NAME --input 1,3,224,224 [--format text|md|json]``."""
    p = sub.add_parser("review", help="review a model: parameters, MACs, receptive fields, findings")
    p.add_argument("model", metavar="FILE.py:NAME",
                   help="an nn.Module instance or class, or a zero-argument callable returning one")
    p.add_argument("--input", required=True, metavar="N,C,H,W", help="input shape, e.g. 1,3,224,224")
    p.add_argument("--format", choices=("text", "md", "json"), default="text")
    p.add_argument("--all", action="store_true", help="list every call, not only the layers a review reads")
    p.add_argument("--fold", action="store_true", help="also fold BNs (float64 check) and print the fold report")
    p.set_defaults(func=cmd_review)


def counter_conventions() -> list[dict]:
    """What each installed counter reports on one-layer probes, beside the MACs of this module.

    Probes, each on a ``(1, 8, 16, 16)`` input: a 3×3 conv without and with bias, BatchNorm
    alone, ReLU alone, a 4×4 stride-2 transposed conv without bias.  Each row has the probe,
    ``review`` (our MACs), ``flop_counter`` (FlopCounterMode FLOPs / 2) and every counter of
    :func:`convbook.cost.third_party_counts` (``None`` where it is not installed or fails).
    The probes separate the conventions: whether bias, BN and activations are added to
    "MACs", and what a strided transposed convolution is charged.
    """
    import warnings

    from .cost import third_party_counts

    probes = [
        ("conv 3×3, no bias", nn.Conv2d(8, 8, 3, padding=1, bias=False)),
        ("conv 3×3, bias", nn.Conv2d(8, 8, 3, padding=1)),
        ("BatchNorm", nn.BatchNorm2d(8)),
        ("ReLU", nn.ReLU()),
        ("transposed 4×4, stride 2", nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1, bias=False)),
    ]
    rows = []
    for label, layer in probes:
        model = nn.Sequential(layer).eval()
        rev = review(model, (1, 8, 16, 16))
        fc = flop_counter(model, (1, 8, 16, 16))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            others = third_party_counts(model, (1, 8, 16, 16))
        out_elems = math.prod(rev.layers[-1].output_shape)
        rows.append({"probe": label, "output elements": out_elems, "review": rev.macs,
                     "flop_counter": None if fc is None else fc // 2, **others})
    return rows
