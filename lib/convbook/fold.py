"""Chapter 6: folding batch normalisation into the neighbouring convolution.

In evaluation mode a batch-norm layer is a fixed per-channel affine map

    BN(y)[c] = γ_c (y[c] − μ_c) / √(σ²_c + ε) + β_c = s_c y[c] + t_c,
    s_c = γ_c / √(σ²_c + ε),   t_c = β_c − μ_c s_c,

with the *running* statistics μ, σ². Composed with an affine layer it is again affine:

* Conv → BN (and Linear → BN): scale output channel ``o`` of the weight and shift the bias,
  ``W'[o] = s_o W[o]``, ``b'_o = (b_o − μ_o) s_o + β_o``.  For a convolution the output
  channel is weight axis 0; for a *transposed* convolution the weight is
  ``(C_in, C_out/g, *k)`` and output channel ``o = g_idx·(C_out/g) + j`` lives on axis 1
  *within its group* (:func:`output_channel_of_weight`).
* BN → Conv: ``conv(s ⊙ x + t) = conv_{W s}(x) + conv(t·1)``: the input-channel axis of the
  weight is scaled, and the bias becomes the convolution of the constant image ``t``.  With
  no padding, or reflect/replicate/circular padding (which copy values, so they commute with
  a per-channel affine map), ``conv(t·1)`` is the constant ``b + Σ W t``.  With zero
  padding the padded image is ``t`` inside and ``0`` outside, so ``conv(t·1)`` differs from
  that constant exactly on the outputs whose window reads padding — a border band; the
  exact correction is the bias *map* ``conv(t·1)`` (:func:`bn_conv_bias_map`).

Everything here returns new modules and never mutates its inputs.  Batch norm in training
mode, or without running statistics, normalises with *batch* statistics: it is not a fixed
affine map and folding it would silently change the model, so it is refused.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import sympy as sp
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from .claims import Tally, claim
from .graph import copy_model, overrides_forward
from .numerics import DTYPE, check_device, generator, randint, randn

__all__ = [
    "bn_scale_shift",
    "fold_params",
    "output_channel_of_weight",
    "fold_conv_bn",
    "fold_bn_conv",
    "bn_conv_exact",
    "bn_conv_bias_map",
    "border_band_mask",
    "border_band_width",
    "BiasMapConv",
    "fold_bn_conv_with_border",
    "FoldReport",
    "fold_model",
    "fold_decisions",
    "materialize_weight",
    "LEFT_CATEGORIES",
    "fold_preact",
    "naive_preact_fold",
    "count_batchnorms",
    "bn_traffic_saved",
    "model_traffic_saved",
    "module_traffic",
    "fold_timing_case",
    "derive_conv_bn_fold",
    "derive_bn_conv_fold",
    "torch_fusion_table",
    "float32_fold_errors",
    "plot_border_error",
]

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONVT_TYPES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------


def bn_scale_shift(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode batch norm as ``BN(y)[c] = s_c y[c] + t_c``: returns ``(s, t)``.

    ``s = γ / √(σ² + ε)`` and ``t = β − μ s`` from the running statistics (``γ = 1, β = 0``
    when ``affine=False``).  Raises ``ValueError`` for a BN in training mode or without
    running statistics (``track_running_stats=False``): those use batch statistics.
    """
    _check_bn(bn)
    mean, var = bn.running_mean.detach(), bn.running_var.detach()
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    return scale, beta - mean * scale


def fold_params(weight, bias, mean, var, eps, gamma, beta, sqrt: Callable = torch.sqrt):
    """Conv → BN folding formula, per output channel (rows of ``weight``):

    ``W' = W γ / √(σ² + ε)`` and ``b' = (b − μ) γ / √(σ² + ε) + β``.

    ``weight`` has the output channel on its first axis and the per-channel vectors must
    broadcast against it (pass them as ``(C, 1)`` for a ``(C, n)`` weight).  Works on torch
    tensors and, with ``sqrt=sympy.sqrt``, on sympy expressions.
    """
    scale = gamma / sqrt(var + eps)
    return weight * scale, (bias - mean) * scale + beta


def output_channel_of_weight(kind: str, weight_shape: Sequence[int], groups: int = 1) -> np.ndarray:
    """For each ``(axis 0, axis 1)`` index of a weight, the output channel it feeds.

    * ``kind='conv'`` (and ``'linear'``): weight ``(C_out, C_in/g, *k)``, output channel = axis 0.
    * ``kind='transpose'``: weight ``(C_in, C_out/g, *k)``; input channel ``i`` is in group
      ``i // (C_in/g)`` and feeds output channel ``(i // (C_in/g))·(C_out/g) + j`` for
      axis-1 index ``j``.  Only for ``groups = 1`` is that simply axis 1.
    """
    a, b = int(weight_shape[0]), int(weight_shape[1])
    if kind in ("conv", "linear"):
        return np.repeat(np.arange(a)[:, None], b, axis=1)
    if kind == "transpose":
        if groups < 1 or a % groups:
            raise ValueError(f"groups must divide C_in = weight.shape[0] = {a}, got groups={groups}")
        per_group_in = a // groups
        i, j = np.meshgrid(np.arange(a), np.arange(b), indexing="ij")
        return (i // per_group_in) * b + j
    raise ValueError(f"kind must be 'conv', 'linear' or 'transpose', got {kind!r}")


def fold_conv_bn(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """A new layer equal to ``bn(layer(x))`` for a conv, transposed conv or Linear followed by BN.

    Every stride, padding (any mode), dilation, output padding and group count is allowed,
    with or without bias: folding only rescales the weight entries of each output channel and
    shifts the bias, see :func:`fold_params` and :func:`output_channel_of_weight`.  The result
    always has a bias.  Rules: ``bn`` in eval mode with running statistics;
    ``bn.num_features`` equals the layer's output channels; a BN of the right dimension
    (BatchNorm1d after Conv1d/Linear, 2d after Conv2d, 3d after Conv3d).
    """
    return _fold_conv_bn(layer, bn, copy.deepcopy)


def _fold_conv_bn(layer: nn.Module, bn: nn.Module, clone: Callable) -> nn.Module:
    """Fold into ``layer`` (copied with ``clone``); see :func:`fold_conv_bn`."""
    kind = _layer_kind(layer, "fold_conv_bn")
    _check_bn(bn)
    c_out = layer.out_features if kind == "linear" else layer.out_channels
    if bn.num_features != c_out:
        raise ValueError(f"channel mismatch: the layer has {c_out} output channels but the BN normalises "
                         f"{bn.num_features} (num_features)")
    _check_bn_dim(layer, bn)
    groups = getattr(layer, "groups", 1)
    w = layer.weight.detach()
    chan = torch.as_tensor(output_channel_of_weight(kind, w.shape, groups), device=w.device)
    mean, var = bn.running_mean.detach(), bn.running_var.detach()
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(mean)
    bias = layer.bias.detach() if layer.bias is not None else torch.zeros(c_out, dtype=w.dtype, device=w.device)
    extra = (1,) * (w.dim() - 2)
    idx = chan.reshape(*chan.shape, *extra)
    scale, new_b = fold_params(torch.ones_like(mean), bias, mean, var, bn.eps, gamma, beta)  # per channel
    new_w = w * scale[idx]
    fused = clone(layer)
    fused.weight = nn.Parameter(new_w.to(w.dtype), requires_grad=layer.weight.requires_grad)
    fused.bias = nn.Parameter(new_b.to(w.dtype), requires_grad=layer.weight.requires_grad)
    return fused


def bn_conv_exact(conv: nn.Module) -> bool:
    """Whether BN → ``conv`` folds exactly into one conv with a constant bias.

    True for Linear, for convs without padding, and for reflect/replicate/circular padding
    (they copy input values, so they commute with a per-channel affine map). False for zero
    padding with a non-zero pad: the padded zeros are not transformed by the BN.
    """
    if isinstance(conv, nn.Linear):
        return True
    if conv.padding_mode != "zeros":
        return True
    return not _pads(conv)


def fold_bn_conv(bn: nn.Module, conv: nn.Module, *, exact: bool = True) -> nn.Module:
    """A new layer for ``conv(bn(x))``: ``W'[:, i] = W[:, i] s_i`` and ``b' = b + Σ W t``.

    ``conv`` is a Conv1d/2d/3d (any stride, dilation, groups, padding mode) or a Linear.
    Exact when :func:`bn_conv_exact` holds.  With zero padding it is exact only away from the
    border band (:func:`border_band_mask`); ``exact=True`` (default) then raises
    ``ValueError`` — use :func:`fold_bn_conv_with_border` for the exact border correction, or
    pass ``exact=False`` to accept the border error knowingly.
    """
    kind = _layer_kind(conv, "fold_bn_conv")
    if kind == "transpose":
        raise ValueError("fold_bn_conv handles Conv1d/2d/3d and Linear after a BN; got a transposed convolution")
    _check_bn(bn)
    c_in = conv.in_features if kind == "linear" else conv.in_channels
    if bn.num_features != c_in:
        raise ValueError(f"channel mismatch: the BN normalises {bn.num_features} channels but the layer takes "
                         f"{c_in} input channels")
    _check_bn_dim(conv, bn)
    if exact and not bn_conv_exact(conv):
        raise ValueError(f"BN -> conv with zero padding {conv.padding} is not exact: the padded zeros are not "
                         "normalised, so the result is wrong in a border band; use fold_bn_conv_with_border "
                         "(exact bias map) or pass exact=False")
    s, t = bn_scale_shift(bn)
    w = conv.weight.detach()
    in_idx = torch.as_tensor(_input_channel_of_weight(kind, w.shape, getattr(conv, "groups", 1)), device=w.device)
    extra = (1,) * (w.dim() - 2)
    idx = in_idx.reshape(*in_idx.shape, *extra)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    new_b = bias + (w * t[idx]).reshape(w.shape[0], -1).sum(1)
    fused = copy.deepcopy(conv)
    fused.weight = nn.Parameter((w * s[idx]).clone(), requires_grad=conv.weight.requires_grad)
    fused.bias = nn.Parameter(new_b.clone(), requires_grad=conv.weight.requires_grad)
    return fused


def bn_conv_bias_map(bn: nn.Module, conv: nn.Module, input_size: Sequence[int]) -> torch.Tensor:
    """The exact bias of BN → conv, a map ``(C_out, *out_size)``: ``conv(t · 1)``.

    ``conv(bn(x)) = conv_{W s, no bias}(x) + conv(t·1)`` because the conv (padding included)
    is affine and zero padding of ``s ⊙ x`` equals ``s ⊙`` zero padding of ``x``.  Here
    ``t·1`` is the image of spatial size ``input_size`` equal to ``t_c`` on channel ``c``.
    """
    _, t = bn_scale_shift(bn)
    if isinstance(conv, nn.Linear) or not isinstance(conv, CONV_TYPES):
        raise ValueError(f"bn_conv_bias_map needs a Conv1d/2d/3d, got {type(conv).__name__}")
    nd = conv.weight.dim() - 2
    size = tuple(int(n) for n in input_size)
    if len(size) != nd:
        raise ValueError(f"input_size must have {nd} entries for a {type(conv).__name__}, got {size}")
    if bn.num_features != conv.in_channels:
        raise ValueError(f"channel mismatch: BN has {bn.num_features} channels, conv takes {conv.in_channels}")
    img = t.reshape(1, -1, *([1] * nd)).expand(1, t.numel(), *size).contiguous()
    with torch.no_grad():
        return conv(img)[0]


def border_band_mask(input_size: Sequence[int], kernel_size: Sequence[int], stride: Sequence[int],
                     padding: Sequence[int], dilation: Sequence[int]) -> np.ndarray:
    """Outputs whose window reads at least one zero-padding position (a boolean array).

    Tap ``a`` of output ``u`` reads padded position ``s u − p + d a``; it is padding when
    that lies outside ``[0, n)``.  The band is the product of the per-axis conditions'
    complement: an output is *inside* when on every axis all taps land in ``[0, n)``.
    """
    nd = len(input_size)
    if not (len(kernel_size) == len(stride) == len(padding) == len(dilation) == nd):
        raise ValueError("input_size, kernel_size, stride, padding and dilation must have the same length")
    inside_axes = []
    for n, k, s, p, d in zip(input_size, kernel_size, stride, padding, dilation):
        n_out = (n + 2 * p - d * (k - 1) - 1) // s + 1
        if n_out < 1:
            raise ValueError(f"empty output: size {n}, kernel {k}, stride {s}, padding {p}, dilation {d}")
        u = np.arange(n_out)
        first, last = s * u - p, s * u - p + d * (k - 1)
        inside_axes.append((first >= 0) & (last < n))
    inside = np.ones([len(a) for a in inside_axes], dtype=bool)
    for j, a in enumerate(inside_axes):
        shape = [1] * nd
        shape[j] = len(a)
        inside = inside & a.reshape(shape)
    return ~inside


def border_band_width(size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> tuple[int, int]:
    """Number of outputs at the start and at the end of one axis whose window reads padding.

    Start: ``u`` with ``s u < p``, i.e. ``⌈p / s⌉`` outputs. End: ``u`` with
    ``s u − p + d(k−1) ≥ n``, i.e. ``n_out − ⌈(n + p − d(k−1)) / s⌉`` outputs (never
    negative), ``n_out = ⌊(n + 2p − d(k−1) − 1)/s⌋ + 1``.  The two may overlap on a small input.
    """
    from .conventions import as_int

    size, kernel_size, stride, dilation = (as_int(v, name, 1) for v, name in (
        (size, "size"), (kernel_size, "kernel_size"), (stride, "stride"), (dilation, "dilation")))
    padding = as_int(padding, "padding", 0)
    n_out = (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    if n_out < 1:
        raise ValueError(f"empty output: size {size}, kernel {kernel_size}, padding {padding}, dilation {dilation}")
    lead = min(n_out, -(-padding // stride))
    first_bad_end = -(-(size + padding - dilation * (kernel_size - 1)) // stride)
    trail = min(n_out, max(0, n_out - max(first_bad_end, 0)))
    return lead, trail


class BiasMapConv(nn.Module):
    """A convolution without bias plus a fixed bias map: ``conv(x) + bias_map`` (fixed input size)."""

    def __init__(self, conv: nn.Module, bias_map: torch.Tensor):
        super().__init__()
        self.conv = conv
        self.register_buffer("bias_map", bias_map)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if tuple(y.shape[1:]) != tuple(self.bias_map.shape):
            raise ValueError(f"BiasMapConv was built for outputs {tuple(self.bias_map.shape)}, got {tuple(y.shape[1:])}")
        return y + self.bias_map


def fold_bn_conv_with_border(bn: nn.Module, conv: nn.Module, input_size: Sequence[int]) -> BiasMapConv:
    """Exact BN → conv for any padding, for inputs of spatial size ``input_size``.

    Returns ``conv_{W s}`` (no bias) plus the bias map :func:`bn_conv_bias_map`.
    """
    folded = fold_bn_conv(bn, conv, exact=False)
    folded.bias = None
    return BiasMapConv(folded, bn_conv_bias_map(bn, conv, input_size))


def fold_preact(prev: nn.Module, bn: nn.Module, conv: nn.Module) -> tuple[nn.Module, nn.Module]:
    """Fold the BN of ``prev → BN → ReLU → conv`` (pre-activation order): returns ``(prev', conv')``.

    For a per-channel scale ``s_c > 0``, ``relu(s_c y + t_c) = s_c · relu(y + t_c / s_c)``, so

    * the shift moves *before* the ReLU into ``prev``'s bias: ``b'_c = b_c + t_c / s_c``;
    * the scale moves *after* the ReLU into ``conv``'s input-channel axis: ``W'[:, i] = W[:, i] s_i``
      (for a grouped conv, input channel ``i`` of group ``g`` is weight column ``i − g·C_in/groups``),
      with ``conv``'s bias unchanged.

    ``conv'(relu(prev'(x))) = conv(relu(bn(prev(x))))`` exactly, for every padding mode (zero
    padding included: padding commutes with a per-channel scaling, and no shift crosses the
    conv).  ``prev`` is a Conv/ConvTranspose (1-3 d) or Linear with ``bn.num_features`` output
    channels; ``conv`` a Conv1d/2d/3d or Linear with that many input channels.

    Rules: every ``s_c = γ_c / √(σ²_c + ε)`` must be > 0, i.e. every ``γ_c > 0`` (for ``s_c < 0``
    the ReLU would have to become ``min(·, 0)``; for ``s_c = 0`` the channel is a constant) —
    ``ValueError`` otherwise, naming the channels; ``bn`` in eval mode with running statistics.
    """
    kind_prev = _layer_kind(prev, "fold_preact (prev)")
    kind = _layer_kind(conv, "fold_preact (conv)")
    if kind == "transpose":
        raise ValueError("fold_preact needs a Conv1d/2d/3d or Linear after the ReLU, got a transposed convolution")
    _check_bn(bn)
    c_prev = prev.out_features if kind_prev == "linear" else prev.out_channels
    c_in = conv.in_features if kind == "linear" else conv.in_channels
    if not bn.num_features == c_prev == c_in:
        raise ValueError(f"channel mismatch: prev has {c_prev} output channels, the BN normalises "
                         f"{bn.num_features}, the conv takes {c_in}")
    _check_bn_dim(prev, bn)
    s, t = bn_scale_shift(bn)
    _require_positive_scale(s)
    new_prev = copy.deepcopy(prev)
    pw = prev.weight.detach()
    old_b = prev.bias.detach() if prev.bias is not None else torch.zeros(c_prev, dtype=pw.dtype, device=pw.device)
    new_prev.bias = nn.Parameter((old_b + t / s).to(pw.dtype), requires_grad=prev.weight.requires_grad)
    w = conv.weight.detach()
    in_idx = torch.as_tensor(_input_channel_of_weight(kind, w.shape, getattr(conv, "groups", 1)), device=w.device)
    idx = in_idx.reshape(*in_idx.shape, *((1,) * (w.dim() - 2)))
    new_conv = copy.deepcopy(conv)
    new_conv.weight = nn.Parameter((w * s[idx]).to(w.dtype), requires_grad=conv.weight.requires_grad)
    return new_prev, new_conv


def naive_preact_fold(prev: nn.Module, bn: nn.Module, conv: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The *wrong* fold of ``prev → BN → ReLU → conv`` that ignores the ReLU: ``(prev, fold_bn_conv(bn, conv))``.

    It computes ``conv(s ⊙ relu(y) + t)`` instead of ``conv(relu(s ⊙ y + t))``; shown in chapter 6 to
    measure how wrong it is.  Use :func:`fold_preact`.
    """
    return copy.deepcopy(prev), fold_bn_conv(bn, conv, exact=False)


def _require_positive_scale(s: torch.Tensor) -> None:
    bad = torch.nonzero(s <= 0).flatten().tolist()
    if bad:
        raise ValueError("fold_preact needs every BN scale s_c = γ_c/√(σ²_c+ε) > 0 (relu(s·y + t) = s·relu(y + t/s) "
                         f"holds only for s > 0); channels {bad[:8]} have s = {[float(s[c]) for c in bad[:8]]}")


#: Why a BN is left in place (``FoldReport.categories``): the BN module runs at several places;
#: it normalises with batch statistics; its class replaces BatchNorm's forward; it never runs at
#: this input; its only foldable neighbour is a conv with zero padding (BN → conv not exact);
#: no neighbour it could fold into exactly (other readers, shared or non-standard layers, a
#: non-affine op in between); the run showed a fold that ``torch.fx``'s graph does not.
LEFT_CATEGORIES = frozenset({"bn-called-several-times", "batch-statistics", "bn-forward-replaced", "never-called",
                             "zero-padding", "no-exclusive-neighbour", "fx-graph-differs"})


@dataclass
class FoldReport:
    """What :func:`fold_model` did: ``folded`` lists ``(bn, layer, order)`` with ``order`` one of
    ``"conv-bn"`` (BN folded into the layer before it) and ``"bn-conv"`` (into the conv after it);
    ``unfolded`` maps every BatchNorm left in the model to the reason it was left."""

    folded: list[tuple[str, str, str]] = field(default_factory=list)
    unfolded: dict[str, str] = field(default_factory=dict)
    #: for every BN in ``unfolded``, the kind of reason: one of :data:`LEFT_CATEGORIES`
    categories: dict[str, str] = field(default_factory=dict)

    def leave(self, bn: str, category: str, reason: str) -> None:
        """Record that ``bn`` stays, with a ``category`` of :data:`LEFT_CATEGORIES` and the ``reason`` in words."""
        if category not in LEFT_CATEGORIES:
            raise ValueError(f"category must be one of {sorted(LEFT_CATEGORIES)}, got {category!r}")
        self.unfolded[bn] = reason
        self.categories[bn] = category

    def __str__(self) -> str:
        lines = [f"BNs folded: {len(self.folded)}, left: {len(self.unfolded)}"]
        lines += [f"  folded {bn} into {layer} ({order})" for bn, layer, order in self.folded]
        lines += [f"  left {name}: {why}" for name, why in self.unfolded.items()]
        return "\n".join(lines)


def fold_model(model: nn.Module, *, strict: bool = False, bn_before_conv: bool = True,
               example_input: torch.Tensor | None = None) -> torch.fx.GraphModule:
    """A new model (a ``torch.fx.GraphModule``) equal to ``model`` with foldable BNs removed.

    Which BNs fold, and into what, is decided by :func:`fold_decisions` on the data flow of
    the calls the model makes (:func:`convbook.graph.trace` on ``example_input``'s shape, else
    on a probe input); ``torch.fx`` only performs the rewrite. In call order, a BN is folded

    * **Conv → BN** into the Conv/ConvTranspose that produces its input (:func:`fold_conv_bn`)
      when that layer's output is read by the BN only (no other call, not the model's output),
      the layer is called once and its weights are read by no other call;
    * else, with ``bn_before_conv``, **BN → Conv** into the Conv1d/2d/3d that is the only reader of
      its output (:func:`fold_bn_conv`), when that is exact (:func:`bn_conv_exact`: no zero
      padding) and the conv is called once with weights read nowhere else;
    * Linear → BN only when ``example_input`` is given and shows the Linear output is 2-D (on a
      3-D input BatchNorm1d normalises a different axis than the Linear maps).

    Every fold reads the layer as it is *now* in the graph module, so chains such as
    BN → Conv → BN fold both BNs into one conv; a spectral or weight normalised layer is folded
    through the weight it computes (:func:`materialize_weight`).  A BN called at several places
    or never, whose class replaces BatchNorm's ``forward``, after a ReLU (BN → ReLU → Conv: see
    :func:`fold_preact`), before a zero-padded or transposed conv, or next to a layer with other
    readers (or whose class replaces the layer's ``forward``) is left in place.  The returned
    module has a ``fold_report`` attribute (:class:`FoldReport`) naming every folded BN and
    every BN left, with its reason and its kind (:data:`LEFT_CATEGORIES`).  The input model is
    not modified.  :meth:`convbook.review.Review.fold` applies the same decisions.

    Rules: ``model`` in eval mode, every BN with running statistics, runnable on
    ``example_input`` (or on a probe input when none is given), fx-traceable.  With
    ``strict=True`` a BN left unfolded raises ``ValueError`` naming it and why.
    """
    if model.training:
        raise ValueError("fold_model needs the model in eval mode (model.eval()): in training mode batch norm "
                         "uses batch statistics and cannot be folded")
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm):
            try:
                _check_bn(m)
            except ValueError as err:
                raise ValueError(f"BatchNorm {name!r}: {err}") from None
    plan = fold_decisions(model, None if example_input is None else tuple(example_input.shape),
                          bn_before_conv=bn_before_conv, linear_bn=example_input is not None)
    work = copy_model(model)  # deepcopy that keeps ties and copes with the hook-based weight_norm
    try:
        gm = torch.fx.symbolic_trace(work)
    except Exception as err:  # fx raises many kinds of errors on untraceable code
        raise ValueError(f"fold_model needs a torch.fx-traceable model: {type(err).__name__}: {err}") from None
    report = FoldReport(unfolded=dict(plan.unfolded), categories=dict(plan.categories))
    nodes = {n.target: n for n in gm.graph.nodes if n.op == "call_module"}
    for bn_name, layer_name, order in plan.folded:
        why = _apply_fold(gm, nodes, bn_name, layer_name, order)
        if why is None:
            report.folded.append((bn_name, layer_name, order))
        else:
            report.leave(bn_name, "fx-graph-differs", why)
    if strict and report.unfolded:
        raise ValueError("BatchNorm not directly after (or before) a foldable layer: "
                         + " | ".join(f"{k!r}: {v}" for k, v in report.unfolded.items()))
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    gm.fold_report = report
    return gm


def count_batchnorms(model: nn.Module) -> int:
    """Number of batch-norm modules in ``model``."""
    return sum(isinstance(m, _BatchNorm) for m in model.modules())


def bn_traffic_saved(activation_shape: Sequence[int], bytes_per_element: int = 4, conv_has_bias: bool = False,
                     bias_channels: int | None = None) -> int:
    """Bytes of memory traffic an inference pass saves by folding one BN into its conv.

    An unfused BN reads its input and writes its output, ``2 · B·C·Π spatial`` elements
    (``activation_shape`` is the BN's input, equal to its output), and reads its per-channel
    parameters ``γ, β, μ, σ²`` (``4C``).  The folded conv reads one bias value per *output*
    channel more if it had no bias before: ``bias_channels`` of them (default ``C``, as in
    Conv → BN; for BN → Conv pass the conv's output channels).  Saved, in bytes:
    ``(2·numel + 4C − [no bias]·bias_channels) · bytes_per_element``.
    """
    shape = tuple(int(v) for v in activation_shape)
    if len(shape) < 2 or any(v < 1 for v in shape):
        raise ValueError(f"activation_shape must be (B, C, *spatial) of positive ints, got {activation_shape!r}")
    numel, c = math.prod(shape), shape[1]
    added = c if bias_channels is None else int(bias_channels)
    return (2 * numel + 4 * c - (0 if conv_has_bias else added)) * bytes_per_element


def model_traffic_saved(model: nn.Module, input_shape: Sequence[int], bytes_per_element: int = 4) -> dict:
    """Memory traffic saved by the folds :func:`fold_model` actually makes, for one input shape.

    Reads the model's calls once (:func:`convbook.graph.trace` on a meta-device copy: nothing is
    allocated or computed), decides the folds as :func:`fold_model` does (:func:`fold_decisions`,
    without Linear → BN), and sums :func:`bn_traffic_saved` over the folded BNs only, each at the
    shape its call read: a BN that ``fold_model`` leaves in place saves nothing.
    Returns ``{"pairs": n, "bytes": total, "activation_bytes": Σ folded BN outputs in bytes}``.
    """
    from .graph import trace

    meta = copy_model(model, "meta").eval()  # keeps tied parameters tied
    g = trace(meta, input_shape)
    report = fold_decisions(meta, input_shape)
    pairs, total, act = 0, 0, 0
    has_bias = {name for name, m in meta.named_modules() if getattr(m, "bias", None) is not None}
    for bn_name, layer_name, order in report.folded:  # in fold order: a layer gains a bias once
        layer = meta.get_submodule(layer_name)
        shape = torch.Size(g.module_calls(bn_name)[0].input_shape)
        out_c = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
        pairs += 1
        total += bn_traffic_saved(shape, bytes_per_element, layer_name in has_bias, out_c)
        has_bias.add(layer_name)
        act += shape.numel() * bytes_per_element
    return {"pairs": pairs, "bytes": total, "activation_bytes": act}


def module_traffic(model: nn.Module, x: torch.Tensor, bytes_per_element: int = 8) -> int:
    """Bytes every leaf module of ``model`` reads and writes in one forward pass on ``x``, measured
    with forward hooks: the tensors it is called with and returns, and its parameters and
    buffers (``num_batches_tracked`` excluded).  A module called twice is counted twice."""
    total = [0]

    def hook(mod, args, out):
        n = sum(a.numel() for a in args if isinstance(a, torch.Tensor)) + out.numel()
        n += sum(p.numel() for p in mod.parameters(recurse=False))
        n += sum(b.numel() for name, b in mod.named_buffers(recurse=False) if name != "num_batches_tracked")
        total[0] += n * bytes_per_element

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total[0]


def fold_timing_case(device: str = "cpu", dtype: torch.dtype = torch.float32) -> dict:
    """A representative case for the GPU timing chapter: ResNet-50's stage-1 3×3 conv + BN.

    ``Conv2d(64, 64, 3, padding=1, bias=False)`` → ``BatchNorm2d(64)`` on a ``32×64×56×56``
    input. Returns ``{"unfused": nn.Sequential(conv, bn), "fused": folded conv, "input": x,
    "bytes_saved": bn_traffic_saved(...)}``; time the two modules on the same input.
    """
    gen = generator(612)
    conv = nn.Conv2d(64, 64, 3, padding=1, bias=False)
    bn = nn.BatchNorm2d(64)
    _randomise(conv, gen)
    _randomise_bn(bn, gen)
    unfused = nn.Sequential(conv, bn).to(device, dtype).eval()
    x = randn(32, 64, 56, 56, gen=gen, device=device, dtype=dtype)
    elt = torch.empty(0, dtype=dtype).element_size()
    return {"unfused": unfused, "fused": fold_conv_bn(unfused[0], unfused[1]), "input": x,
            "bytes_saved": bn_traffic_saved((32, 64, 56, 56), elt, conv_has_bias=False)}


def derive_conv_bn_fold(n_taps: int = 3) -> dict:
    """Derive the Conv → BN fold with sympy from the definitions.

    Builds ``y = Σ_a w_a x_a + b`` (one output channel; every conv output is such a sum) and
    ``z = γ (y − μ)/√(σ² + ε) + β``; the folded weight is ``∂z/∂x_a`` and the folded bias is
    ``z`` at ``x = 0``.  Returns the symbols, ``z`` and the derived ``weights`` and ``bias``.
    """
    x = sp.symbols(f"x0:{n_taps}")
    w = sp.symbols(f"w0:{n_taps}")
    b, mu, gamma, beta = sp.symbols("b mu gamma beta")
    var, eps = sp.symbols("sigma2 epsilon", positive=True)
    y = sum(wa * xa for wa, xa in zip(w, x)) + b
    z = gamma * (y - mu) / sp.sqrt(var + eps) + beta
    weights = [sp.simplify(sp.diff(z, xa)) for xa in x]
    bias = sp.simplify(z.subs({xa: 0 for xa in x}))
    return {"x": x, "w": w, "b": b, "mu": mu, "var": var, "eps": eps, "gamma": gamma, "beta": beta,
            "z": z, "weights": weights, "bias": bias}


def derive_bn_conv_fold(n_taps: int = 3) -> dict:
    """Derive the BN → conv fold with sympy: ``y = Σ_a w_a (s_a x_a + t_a) + b``.

    ``s_a, t_a`` are the BN scale and shift of the input channel tap ``a`` reads (all taps
    inside the input). Returns the derived ``weights`` (``∂y/∂x_a``) and ``bias`` (``y`` at 0).
    """
    x = sp.symbols(f"x0:{n_taps}")
    w = sp.symbols(f"w0:{n_taps}")
    s = sp.symbols(f"s0:{n_taps}")
    t = sp.symbols(f"t0:{n_taps}")
    b = sp.Symbol("b")
    y = sum(wa * (sa * xa + ta) for wa, sa, xa, ta in zip(w, s, x, t)) + b
    return {"x": x, "w": w, "s": s, "t": t, "b": b, "y": y,
            "weights": [sp.expand(sp.diff(y, xa)) for xa in x], "bias": sp.expand(y.subs({xa: 0 for xa in x}))}


def torch_fusion_table(seed: int = 0) -> list[dict]:
    """Run ``torch.nn.utils.fusion`` and ``convbook.fold`` on cases torch may not cover.

    Each row: ``case``, ``torch`` (what ``fuse_conv_bn_eval``/``fuse_linear_bn_eval`` did:
    ``"ok"``, ``"fusion raises …"``, ``"the fused layer raises …"`` (fusion returned a layer
    with a wrong weight shape), ``"wrong: ..."``, or ``"no API"``), ``torch_ok`` (bool),
    ``convbook_error`` (float64 max relative error of :mod:`convbook.fold`'s result against
    running the unfused layers), ``gap`` (False for the two control rows torch supports).
    """
    from torch.nn.utils import fusion

    gen = generator(seed)
    rows = []
    for name, first, second, order, shape in _fusion_cases(gen):
        x = randn(*shape, gen=gen)
        with torch.no_grad():
            ref = second(first(x))
            if order == "conv-bn":
                ours = fold_conv_bn(first, second)(x)
            else:
                ours = fold_bn_conv(first, second)(x)
        err = _rel_err(ours, ref)
        torch_text, torch_ok = "no API (BN before the layer)", False
        if order == "conv-bn":
            stage = "fusion"
            try:
                with torch.no_grad():
                    if isinstance(first, nn.Linear):
                        fused = fusion.fuse_linear_bn_eval(first, second)
                    else:
                        fused = fusion.fuse_conv_bn_eval(first, second, transpose=isinstance(first, CONVT_TYPES))
                    stage = "the fused layer"
                    out = fused(x)
                terr = _rel_err(out, ref)
                if terr <= 1e-12:
                    torch_text, torch_ok = "ok", True
                else:
                    torch_text = f"wrong: rel. error {terr:.0e}"
            except Exception as exc:  # we report what torch raises, and where
                msg = str(exc).split("\n")[0]
                msg = msg if len(msg) <= 48 else msg[:47] + "…"
                torch_text = f"{stage} raises {type(exc).__name__}: {msg}"
        rows.append({"case": name, "torch": torch_text, "torch_ok": torch_ok, "convbook_error": err,
                     "gap": not name.startswith("control")})
    return rows


def float32_fold_errors(n_layers: int = 40, seed: int = 7) -> dict:
    """Float32 error of running a folded vs an unfolded Conv → BN, against a float64 reference.

    Returns arrays of max relative errors ``unfolded`` and ``folded`` (one per random layer);
    both are rounding errors of order ``ε₃₂·√(fan-in)``: folding changes the order of the
    operations, not the accuracy.
    """
    gen = generator(seed)
    unf, fol = [], []
    for _ in range(n_layers):
        c_in, c_out = randint(4, 32, gen), randint(4, 32, gen)
        conv = nn.Conv2d(c_in, c_out, 3, padding=1).double()
        bn = nn.BatchNorm2d(c_out).double()
        _randomise(conv, gen)
        _randomise_bn(bn, gen)
        bn.eval()
        x = randn(2, c_in, 12, 12, gen=gen)
        with torch.no_grad():
            ref = bn(conv(x))
            fused = fold_conv_bn(conv, bn)
            unf.append(_rel_err(bn.float()(conv.float()(x.float())).double(), ref))
            fol.append(_rel_err(fused.float()(x.float()).double(), ref))
            bn.double()
            conv.double()
    return {"unfolded": np.array(unf), "folded": np.array(fol)}


def plot_border_error(size: int = 16, kernel: int = 3, padding: int = 1, dilation: int = 1, seed: int = 3, axes=None):
    """Left: |constant-bias BN→conv fold − exact| on one channel; right: the predicted band."""
    import matplotlib.pyplot as plt

    gen = generator(seed)
    bn = nn.BatchNorm2d(3).double()
    _randomise_bn(bn, gen)
    bn.eval()
    conv = nn.Conv2d(3, 2, kernel, padding=padding, dilation=dilation).double()
    _randomise(conv, gen)
    x = randn(1, 3, size, size, gen=gen)
    with torch.no_grad():
        err = (fold_bn_conv(bn, conv, exact=False)(x) - conv(bn(x)))[0, 0].abs().numpy()
    band = border_band_mask((size, size), (kernel, kernel), (1, 1), (padding, padding), (dilation, dilation))
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(9, 4))
    im = axes[0].imshow(err, cmap="magma")
    axes[0].set_title("|folded (constant bias) − BN→conv|")
    plt.colorbar(im, ax=axes[0], fraction=0.046)
    axes[1].imshow(band, cmap="Greys")
    axes[1].set_title(f"predicted band: {int(band.sum())} of {band.size} outputs")
    return axes


# --------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------


@claim(
    "bn.fold-symbolic",
    title="The Conv→BN and BN→conv folds, derived with sympy and evaluated against the library",
    chapter=6,
    statement="For symbolic γ, β, μ, σ² > 0, ε > 0, weights and bias: differentiating BN(conv(x)) gives W' = W·γ/√(σ²+ε) and evaluating at 0 gives b' = (b−μ)γ/√(σ²+ε)+β, and the affine map they define equals BN∘conv identically; likewise BN→conv gives W' = W s, b' = b + Σ W t. The derived coefficients, evaluated on concrete grouped layers (any groups, any eps), equal fold_conv_bn's and fold_bn_conv's weights and biases.",
    parameters=("eps", "groups"),
    reference="sympy differentiation of the BN∘conv definition; the derived coefficients evaluated numerically",
    sympy_role="derived",
)
def check_fold_symbolic(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    for n in (1, 2, 3):
        d = derive_conv_bn_fold(n)
        lib_w, lib_b = [], None
        for wa in d["w"]:
            lib_w.append(fold_params(wa, d["b"], d["mu"], d["var"], d["eps"], d["gamma"], d["beta"], sqrt=sp.sqrt)[0])
        lib_b = fold_params(0, d["b"], d["mu"], d["var"], d["eps"], d["gamma"], d["beta"], sqrt=sp.sqrt)[1]
        for derived, lib in zip(d["weights"], lib_w):
            t.exact(sp.simplify(derived - lib) == 0, f"conv-bn weight, {n} taps")
        t.exact(sp.simplify(d["bias"] - lib_b) == 0, f"conv-bn bias, {n} taps")
        affine = sum(wa * xa for wa, xa in zip(lib_w, d["x"])) + lib_b
        t.exact(sp.simplify(affine - d["z"]) == 0, f"conv-bn identity, {n} taps")
        e = derive_bn_conv_fold(n)
        affine2 = sum(wa * sa * xa for wa, sa, xa in zip(e["w"], e["s"], e["x"])) + e["b"] + sum(
            wa * ta for wa, ta in zip(e["w"], e["t"]))
        t.exact(sp.expand(affine2 - e["y"]) == 0, f"bn-conv identity, {n} taps")
    gen = generator(600)
    for groups, c_in, c_out in ((2, 4, 6), (3, 3, 6), (1, 2, 3)):
        for _ in range(2):
            _compare_derived_with_library(t, groups, c_in, c_out, gen, device)
    return t.verdict("sympy: derived by differentiation, identities simplified to 0; derived coefficients "
                     "evaluated on grouped layers vs fold_conv_bn / fold_bn_conv", case_unit="comparisons")


@functools.lru_cache(maxsize=None)
def _derived_coefficients(taps: int):
    """The sympy-derived fold coefficients for ``taps`` taps as numeric functions:
    ``(conv-bn weights, conv-bn bias, bn-conv weights, bn-conv bias)``."""
    d = derive_conv_bn_fold(taps)
    args = [*d["w"], d["b"], d["mu"], d["var"], d["eps"], d["gamma"], d["beta"]]
    e = derive_bn_conv_fold(taps)
    args2 = [*e["w"], *e["s"], *e["t"], e["b"]]
    return (sp.lambdify(args, d["weights"], "math"), sp.lambdify(args, d["bias"], "math"),
            sp.lambdify(args2, e["weights"], "math"), sp.lambdify(args2, e["bias"], "math"))


def _compare_derived_with_library(t: Tally, groups: int, c_in: int, c_out: int, gen, device: str) -> None:
    """Evaluate the sympy-derived coefficients on a concrete grouped ``Conv2d(c_in, c_out, (1, 2), groups)``
    and a BN with random ``eps``, and compare them with the library's folded weights and biases."""
    conv = nn.Conv2d(c_in, c_out, (1, 2), groups=groups).to(device, DTYPE)
    _randomise(conv, gen)
    w, b = conv.weight.detach().cpu(), conv.bias.detach().cpu()
    bn_vals = lambda bn: [v.detach().cpu() for v in (bn.running_mean, bn.running_var, bn.weight, bn.bias)]  # noqa: E731
    taps = w[0].numel()  # (C_in/g)·k·k taps per output channel
    # Conv → BN, output channel o: coefficients of d["weights"] and d["bias"] at the channel's values
    bn_after = nn.BatchNorm2d(c_out).to(device, DTYPE)
    _randomise_bn(bn_after, gen)
    bn_after.eval()
    f_w, f_b, g_w, g_b = _derived_coefficients(taps)
    folded = fold_conv_bn(conv, bn_after)
    for o in range(c_out):
        mu, var, gamma, beta = bn_vals(bn_after)
        vals = [*w[o].flatten().tolist(), float(b[o]), float(mu[o]), float(var[o]), bn_after.eps, float(gamma[o]),
                float(beta[o])]
        t.close(folded.weight[o].flatten(), torch.tensor(f_w(*vals), dtype=DTYPE), f"conv-bn weight o={o}")
        t.close(folded.bias[o:o + 1], torch.tensor([f_b(*vals)], dtype=DTYPE), f"conv-bn bias o={o}")
    # BN → conv: tap (j, a) of output channel o in group g reads input channel g·(C_in/g) + j
    bn_before = nn.BatchNorm2d(c_in).to(device, DTYPE)
    _randomise_bn(bn_before, gen)
    bn_before.eval()
    s, sh = (v.cpu() for v in bn_scale_shift(bn_before))
    folded = fold_bn_conv(bn_before, conv)
    per_in, per_out = c_in // groups, c_out // groups
    for o in range(c_out):
        chan = [(o // per_out) * per_in + j for j in range(per_in) for _ in range(w[0, 0].numel())]
        vals = [*w[o].flatten().tolist(), *[float(s[c]) for c in chan], *[float(sh[c]) for c in chan], float(b[o])]
        t.close(folded.weight[o].flatten(), torch.tensor(g_w(*vals), dtype=DTYPE), f"bn-conv weight o={o}")
        t.close(folded.bias[o:o + 1], torch.tensor([g_b(*vals)], dtype=DTYPE), f"bn-conv bias o={o}")


@claim(
    "bn.fold-conv",
    title="Conv→BN folds exactly for every conv configuration",
    chapter=6,
    statement="fold_conv_bn(conv, bn)(x) = bn(conv(x)) (eval mode) for Conv1d/2d/3d with any stride, padding and padding mode, dilation and groups (depthwise and channel multipliers included), with and without bias, and any BN eps > 0, affine or not (momentum plays no part in eval mode).",
    parameters=("eps", "groups", "stride", "padding_mode", "dilation", "bias", "dimension", "affine"),
    reference="PyTorch eval-mode nn.Sequential(conv, bn)",
)
def check_fold_conv(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(601)
    kinds = {1: (nn.Conv1d, nn.BatchNorm1d), 2: (nn.Conv2d, nn.BatchNorm2d), 3: (nn.Conv3d, nn.BatchNorm3d)}
    for case in range(90):
        nd = 1 + case % 3
        conv_t, bn_t = kinds[nd]
        groups = randint(1, 3, gen)
        depthwise = case % 5 == 0
        c_in = groups * randint(1, 3, gen)
        c_out = c_in * randint(1, 2, gen) if depthwise else groups * randint(1, 3, gen)
        if depthwise:
            groups = c_in
        mode = ["zeros", "reflect", "replicate", "circular"][randint(0, 3, gen)]
        geo = _conv_geometry(gen, nd, mode, n_max=5 if nd == 3 else 7)
        size = geo.pop("size")
        conv = conv_t(c_in, c_out, **geo, groups=groups, bias=bool(case % 2), padding_mode=mode).to(device, DTYPE)
        bn = bn_t(c_out, affine=case % 7 != 3).to(device, DTYPE)
        _compare_layer_then_bn(t, conv, bn, (2, c_in, *size), gen, device)
    return t.verdict("random layers vs nn.Sequential(conv, bn) in eval mode", case_unit="layers", dtype="float64")


@claim(
    "bn.fold-transpose",
    title="ConvTranspose→BN folds on the output-channel axis within each group",
    chapter=6,
    statement="For a transposed conv with weight (C_in, C_out/g, *k), output channel o = (i // (C_in/g))·(C_out/g) + j feeds weight[i, j]; scaling there gives fold_conv_bn(convT, bn)(x) = bn(convT(x)) for ConvTranspose1d/2d/3d with every stride, padding, output padding, dilation and group count, and any BN eps > 0.",
    parameters=("eps", "groups", "stride", "output_padding", "dilation", "dimension"),
    reference="PyTorch eval-mode nn.Sequential(convT, bn)",
)
def check_fold_transpose(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(602)
    kinds = {1: (nn.ConvTranspose1d, nn.BatchNorm1d), 2: (nn.ConvTranspose2d, nn.BatchNorm2d),
             3: (nn.ConvTranspose3d, nn.BatchNorm3d)}
    for case in range(60):
        nd = 1 + case % 3
        conv_t, bn_t = kinds[nd]
        groups = randint(1, 3, gen)
        c_in = groups * randint(1, 3, gen)
        c_out = groups * randint(1, 3, gen)
        if case % 4 == 0:  # depthwise transposed
            groups, c_out = c_in, c_in
        ks = tuple(randint(1, 3, gen) for _ in range(nd))  # per axis: the values differ between axes
        ss = tuple(randint(1, 3, gen) for _ in range(nd))
        ds = tuple(randint(1, 2, gen) for _ in range(nd))
        ps = tuple(randint(0, d * (k - 1) // 2, gen) for k, d in zip(ks, ds))
        ops = tuple(randint(0, max(s, d) - 1, gen) for s, d in zip(ss, ds))
        conv = conv_t(c_in, c_out, ks, stride=ss, padding=ps, output_padding=ops, dilation=ds, groups=groups,
                      bias=bool(case % 2)).to(device, DTYPE)
        bn = bn_t(c_out).to(device, DTYPE)
        size = tuple(randint(1, 4, gen) for _ in range(nd))
        _compare_layer_then_bn(t, conv, bn, (2, c_in, *size), gen, device)
    return t.verdict("random transposed layers vs nn.Sequential(convT, bn)", case_unit="layers", dtype="float64")


@claim(
    "bn.fold-linear",
    title="Linear→BatchNorm1d folds exactly",
    chapter=6,
    statement="fold_conv_bn(linear, bn)(x) = bn(linear(x)) for (N, features) inputs, with and without bias, for any BN eps > 0.",
    parameters=("eps", "bias"),
    reference="PyTorch eval-mode nn.Sequential(linear, bn)",
)
def check_fold_linear(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(603)
    for case in range(40):
        f_in, f_out = randint(1, 12, gen), randint(1, 12, gen)
        lin = nn.Linear(f_in, f_out, bias=bool(case % 2)).to(device, DTYPE)
        bn = nn.BatchNorm1d(f_out).to(device, DTYPE)
        _compare_layer_then_bn(t, lin, bn, (5, f_in), gen, device)
    return t.verdict("random Linear+BatchNorm1d vs running them", case_unit="layers", dtype="float64")


@claim(
    "bn.fold-bn-conv-exact",
    title="BN→conv folds exactly without padding or with reflect/replicate/circular padding",
    chapter=6,
    statement="fold_bn_conv(bn, conv)(x) = conv(bn(x)) with W'[o, j] = W[o, j]·s_(g·C_in/groups + j) for output channel o of group g, and b' = b + Σ W t, for Conv1d/2d/3d with no padding or reflect/replicate/circular padding (any stride, dilation, groups), and for Linear, for any BN eps > 0.",
    parameters=("eps", "groups", "padding_mode", "stride", "dilation", "dimension"),
    reference="PyTorch eval-mode nn.Sequential(bn, conv)",
)
def check_fold_bn_conv_exact(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(604)
    kinds = {1: (nn.Conv1d, nn.BatchNorm1d), 2: (nn.Conv2d, nn.BatchNorm2d), 3: (nn.Conv3d, nn.BatchNorm3d)}
    for case in range(80):
        nd = 1 + case % 3
        conv_t, bn_t = kinds[nd]
        groups = randint(1, 3, gen)
        c_in = groups * randint(1, 3, gen)
        c_out = groups * randint(1, 3, gen)
        if case % 5 == 0:
            groups, c_out = c_in, c_in * randint(1, 2, gen)
        mode = ["zeros", "reflect", "replicate", "circular"][case % 4]
        geo = _conv_geometry(gen, nd, mode, n_max=5 if nd == 3 else 7)
        if mode == "zeros":  # exact only without zero padding
            geo = _conv_geometry(gen, nd, mode, p_max=0, n_max=5 if nd == 3 else 7)
        elif not any(geo["padding"]):
            geo["padding"] = (1,) + geo["padding"][1:]
            geo["size"] = (max(geo["size"][0], 2),) + geo["size"][1:]
        size = geo.pop("size")
        conv = conv_t(c_in, c_out, **geo, groups=groups, bias=bool(case % 2), padding_mode=mode).to(device, DTYPE)
        bn = bn_t(c_in).to(device, DTYPE)
        _randomise(conv, gen)
        _randomise_bn(bn, gen)
        bn.eval()
        x = randn(2, c_in, *size, gen=gen, device=device)
        with torch.no_grad():
            t.close(fold_bn_conv(bn, conv)(x), conv(bn(x)), f"{conv}")
    for case in range(10):
        lin = nn.Linear(randint(1, 8, gen), randint(1, 8, gen), bias=bool(case % 2)).to(device, DTYPE)
        bn = nn.BatchNorm1d(lin.in_features).to(device, DTYPE)
        _randomise(lin, gen)
        _randomise_bn(bn, gen)
        bn.eval()
        x = randn(4, lin.in_features, gen=gen, device=device)
        with torch.no_grad():
            t.close(fold_bn_conv(bn, lin)(x), lin(bn(x)), f"{lin}")
    return t.verdict("random BN→conv/Linear pairs vs running them", case_unit="pairs", dtype="float64")


@claim(
    "bn.fold-bn-conv-border",
    title="BN→conv with zero padding: the error lives in the border band; the bias map is exact",
    chapter=6,
    statement="For Conv1d/2d/3d with zero padding and kernel k_j, stride s_j, padding p_j ≥ 1, dilation d_j chosen per axis j (they may differ between axes), and any BN eps > 0: the constant-bias fold of BN→conv equals conv(bn(x)) exactly at the outputs whose window reads no padding, and generically differs at every other output — on each axis a band ⌈p_j/s_j⌉ wide at the start and n_out,j − ⌈(n_j+p_j−d_j(k_j−1))/s_j⌉ wide at the end, the union over axes; conv_{Ws}(x) + conv(t·1) is exact everywhere.",
    parameters=("eps", "per-axis sizes"),
    reference="PyTorch eval-mode nn.Sequential(bn, conv)",
)
def check_fold_bn_conv_border(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(605)
    outputs = 0
    kinds = {1: (nn.Conv1d, nn.BatchNorm1d), 2: (nn.Conv2d, nn.BatchNorm2d), 3: (nn.Conv3d, nn.BatchNorm3d)}
    for case in range(60):
        nd = 1 + case % 3
        conv_t, bn_t = kinds[nd]
        c_in, c_out = randint(1, 3, gen), randint(1, 3, gen)
        size = tuple(randint(4 if nd == 3 else 5, 7 if nd == 3 else 10, gen) for _ in range(nd))
        ks = tuple(randint(1, 4, gen) for _ in range(nd))
        ss = tuple(randint(1, 3, gen) for _ in range(nd))
        ds = tuple(randint(1, 2, gen) for _ in range(nd))
        ps = tuple(randint(1, 3, gen) for _ in range(nd))
        if any(d * (k - 1) + 1 > n + 2 * p for n, k, p, d in zip(size, ks, ps, ds)):
            continue
        conv = conv_t(c_in, c_out, ks, stride=ss, padding=ps, dilation=ds, bias=bool(case % 2)).to(device, DTYPE)
        bn = bn_t(c_in).to(device, DTYPE)
        _randomise(conv, gen)
        _randomise_bn(bn, gen)
        bn.eval()
        x = randn(2, c_in, *size, gen=gen, device=device)
        with torch.no_grad():
            ref = conv(bn(x))
            exact = fold_bn_conv_with_border(bn, conv, size)(x)
            const = fold_bn_conv(bn, conv, exact=False)(x)
        t.close(exact, ref, f"bias map, {conv} on {size}")
        band = border_band_mask(size, ks, ss, ps, ds)
        if band.shape != tuple(ref.shape[2:]):
            t.exact(False, f"band shape {band.shape} vs output {tuple(ref.shape[2:])}, {conv} on {size}")
            continue
        predicted = np.zeros(band.shape, dtype=bool)  # band = union over axes of the per-axis formula
        for j, n in enumerate(size):
            lead, trail = border_band_width(n, ks[j], ss[j], ps[j], ds[j])
            axis = np.zeros(band.shape[j], dtype=bool)
            axis[:lead] = True
            if trail:
                axis[band.shape[j] - trail:] = True
            shape = [1] * nd
            shape[j] = band.shape[j]
            predicted |= axis.reshape(shape)
        t.exact(np.array_equal(band, predicted), f"band width formula, {size} k={ks} s={ss} p={ps} d={ds}")
        diff = (const - ref).abs().amax(dim=(0, 1)).cpu().numpy()
        scale = float(ref.abs().max())
        if (~band).any():
            inside = torch.as_tensor(~band, device=ref.device)
            t.close(const[..., inside], ref[..., inside], f"interior {conv}")
        t.exact(bool(np.all(diff[band] > 1e-9 * scale)), f"band outputs not all wrong, {conv} on {size}")
        outputs += band.size
    t.note(f"{outputs:,} output positions classified")
    return t.verdict("random zero-padded BN→conv vs running them: bias map exact, error exactly in the band",
                     dtype="float64")


@claim(
    "bn.fuse-eval-agreement",
    title="convbook.fold agrees with torch.nn.utils.fusion where torch applies",
    chapter=6,
    statement="On Conv2d (any groups), ungrouped ConvTranspose2d and Linear followed by BN with any eps > 0, fold_conv_bn gives the same weight and bias as torch's fuse_conv_bn_eval / fuse_linear_bn_eval.",
    parameters=("eps", "groups"),
    reference="torch.nn.utils.fusion.fuse_conv_bn_eval / fuse_linear_bn_eval",
)
def check_fuse_eval_agreement(device: str = "cpu"):
    from torch.nn.utils import fusion

    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(606)
    for case in range(45):
        which = case % 3
        if which == 0:
            g = randint(1, 3, gen)
            layer = nn.Conv2d(g * randint(1, 3, gen), g * randint(1, 3, gen), 3, groups=g, bias=bool(case % 2))
            bn = nn.BatchNorm2d(layer.out_channels)
        elif which == 1:
            layer = nn.ConvTranspose2d(randint(1, 4, gen), randint(1, 4, gen), 3, stride=2, bias=bool(case % 2))
            bn = nn.BatchNorm2d(layer.out_channels)
        else:
            layer = nn.Linear(randint(1, 6, gen), randint(1, 6, gen), bias=bool(case % 2))
            bn = nn.BatchNorm1d(layer.out_features)
        layer, bn = layer.to(device, DTYPE), bn.to(device, DTYPE)
        _randomise(layer, gen)
        _randomise_bn(bn, gen)
        layer.eval()
        bn.eval()
        try:
            ours = fold_conv_bn(layer, bn)
        except (RuntimeError, ValueError, IndexError) as err:
            t.exact(False, f"{layer}: fold_conv_bn raised {err}")
            continue
        theirs = (fusion.fuse_linear_bn_eval(layer, bn) if which == 2
                  else fusion.fuse_conv_bn_eval(layer, bn, transpose=which == 1))
        t.close(ours.weight, theirs.weight, f"weight {layer}")
        t.close(ours.bias, theirs.bias, f"bias {layer}")
    return t.verdict("weights and biases vs torch.nn.utils.fusion", case_unit="comparisons", dtype="float64")


@claim(
    "bn.fuse-eval-gaps",
    title="Where torch's fusion fails or does not apply, convbook.fold is exact",
    chapter=6,
    statement="On grouped and depthwise transposed convs torch's fuse_conv_bn_eval raises or returns a layer that cannot run, and it has no BN→conv fusion; on every such case (BN eps drawn log-uniformly from [1e-6, 1]) fold_conv_bn / fold_bn_conv match running the layers to 1e-12.",
    parameters=("eps",),
    reference="running the unfused layers in PyTorch; torch.nn.utils.fusion run on the same layers",
)
def check_fuse_eval_gaps(device: str = "cpu"):
    check_device(device)
    t = Tally(tol=1e-12)
    rows = torch_fusion_table()
    for row in rows:
        t.exact(row["convbook_error"] <= 1e-12, f"convbook on {row['case']}: {row['convbook_error']:.1e}")
        t.exact(row["torch_ok"] != row["gap"], f"torch on {row['case']}: {row['torch']}")
    t.note(f"{sum(r['gap'] for r in rows)} gaps, {sum(not r['gap'] for r in rows)} controls")
    return t.verdict("running torch.nn.utils.fusion and convbook.fold on the same layers", case_unit="checks",
                     dtype="float64")


@claim(
    "bn.fold-model",
    title="fold_model folds the BNs it can fold exactly, leaves the others with a reason, never changes the output",
    chapter=6,
    statement="For every fx-traceable model in eval mode whose BNs have running statistics (any eps > 0): fold_model(model) (without example_input, which also enables Linear→BN) folds a BN (1) into the Conv/ConvTranspose that produces its input, or (2) into the Conv1d/2d/3d that alone reads its output when that conv has no zero padding — in both cases only when that layer is called once, its weights are read nowhere else and its output (case 1) has no other reader — and leaves every other BN in place, listed in fold_report.unfolded with its reason; the folded model equals the original in float64 to 1e-12 and the input model is not modified. Checked on 16 architectures (chains, residual and pre-activation blocks, branches, shared and tied weights, squeeze-excitation, concatenation, transposed, grouped, 1-D and 3-D).",
    parameters=("eps", "padding_mode", "shared modules"),
    reference="the unfolded model run in PyTorch (float64)",
)
def check_fold_model(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(607)
    for case in range(N_SMALL_MODELS):
        model, expected_left, shape = _small_model(case)
        model = _randomised_small_model(model, gen, device)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        x = randn(*shape, gen=gen, device=device)
        try:
            folded = fold_model(model)
        except (RuntimeError, ValueError, IndexError) as err:
            t.exact(False, f"model {case}: fold_model raised {err}")
            continue
        with torch.no_grad():
            t.close(folded(x), model(x), f"small model {case}")
        left = {name for name, m in folded.named_modules() if isinstance(m, _BatchNorm)}
        report = folded.fold_report
        t.exact(len(left) == expected_left, f"model {case}: {len(left)} BNs left, expected {expected_left}")
        t.exact(left == set(report.unfolded) and all(report.unfolded.values()),
                f"model {case}: BNs left {sorted(left)} vs reported {sorted(report.unfolded)}")
        t.exact(len(report.folded) == count_batchnorms(model) - len(left), f"model {case}: folded list")
        after = model.state_dict()
        t.exact(all(torch.equal(before[k], after[k]) for k in before), f"model {case} was modified")
    return t.verdict(f"{N_SMALL_MODELS} small architectures vs their folded copies", case_unit="checks",
                     dtype="float64")


def _randomised_small_model(model: nn.Module, gen: torch.Generator, device: str) -> nn.Module:
    """``model`` in float64 on ``device`` with random weights, BN statistics, eps and momentum, eval mode."""
    model = model.to(device, DTYPE)
    for m in model.modules():
        if isinstance(m, CONV_TYPES + CONVT_TYPES + (nn.Linear,)):
            _randomise(m, gen)
        if isinstance(m, _BatchNorm):
            _randomise_bn(m, gen)
    return model.eval()


@claim(
    "bn.fold-preact",
    title="BN → ReLU → conv (pre-activation) folds exactly when every BN scale is positive",
    chapter=6,
    statement="For prev → BN → ReLU → conv with prev a Conv1d/2d/3d, conv a Conv1d/2d/3d of any groups, stride, dilation and padding (zero padding included), and any BN eps > 0: if every s_c = γ_c/√(σ²_c+ε) > 0, fold_preact moves t_c/s_c into prev's bias and s into conv's input-channel weights, and conv'(relu(prev'(x))) = conv(relu(bn(prev(x)))) in float64 to 1e-12; if some s_c ≤ 0 it raises ValueError.",
    parameters=("eps", "groups", "padding_mode", "sign of s", "dimension"),
    reference="PyTorch eval-mode nn.Sequential(prev, bn, ReLU, conv)",
)
def check_fold_preact(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(611)
    kinds = {1: (nn.Conv1d, nn.BatchNorm1d), 2: (nn.Conv2d, nn.BatchNorm2d), 3: (nn.Conv3d, nn.BatchNorm3d)}
    for case in range(72):
        nd = 1 + case % 3
        conv_t, bn_t = kinds[nd]
        groups = randint(1, 3, gen)
        c = groups * randint(1, 3, gen)
        c_out = groups * randint(1, 3, gen)
        if case % 5 == 0:
            groups, c_out = c, c * randint(1, 2, gen)
        k_prev = randint(1, 3, gen)
        prev = conv_t(randint(1, 3, gen), c, k_prev, bias=bool(case % 2)).to(device, DTYPE)
        mode = ["zeros", "reflect", "replicate", "circular"][(case // 3) % 4]
        geo = _conv_geometry(gen, nd, mode, n_max=5 if nd == 3 else 7)
        size = geo.pop("size")  # the conv's input size = prev's output size
        conv = conv_t(c, c_out, **geo, groups=groups, padding_mode=mode).to(device, DTYPE)  # bias: output never all 0
        bn = bn_t(c).to(device, DTYPE)
        _randomise(prev, gen)
        _randomise(conv, gen)
        refuse = case % 6 == 5  # some channel gets γ ≤ 0: must be refused
        _randomise_bn(bn, gen, positive_gamma=not refuse)
        if refuse:
            with torch.no_grad():
                bn.weight[randint(0, c - 1, gen)] = -float(randint(0, 1, gen)) * bn.weight.abs().max()
        bn.eval()
        x = randn(2, prev.in_channels, *(n + k_prev - 1 for n in size), gen=gen, device=device)
        try:
            new_prev, new_conv = fold_preact(prev, bn, conv)
        except ValueError as err:
            t.exact(refuse, f"valid case refused: {conv}: {err}")
            continue
        if refuse:
            t.exact(False, f"γ ≤ 0 not refused: {bn.weight.tolist()}")
            continue
        with torch.no_grad():
            t.close(new_conv(F.relu(new_prev(x))), conv(F.relu(bn(prev(x)))), f"{prev} → BN → ReLU → {conv}")
    return t.verdict("random prev → BN → ReLU → conv vs running them; s ≤ 0 must raise", case_unit="cases",
                     dtype="float64")


@claim(
    "bn.refuse-bad-input",
    title="Folding refuses inputs it would get wrong",
    chapter=6,
    statement="BN in training mode, BN with track_running_stats=False, mismatched channel counts, a BN of the wrong dimension, zero-padded BN→conv asked to be exact, a BN → ReLU → conv with a BN scale ≤ 0, and (strict) a BN not adjacent to a foldable layer raise ValueError instead of returning a wrong model.",
    reference="the ValueError contract: each input breaks one stated rule",
)
def check_refuse_bad_input(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    for name, thunk in _bad_inputs(device):
        try:
            thunk()
            t.exact(False, f"{name}: no error")
        except ValueError:
            t.exact(True)
        except Exception as err:  # any other exception is not the clear error we promise
            t.exact(False, f"{name}: {type(err).__name__} instead of ValueError")
    return t.verdict("every refused input raises ValueError", case_unit="bad inputs")


@claim(
    "bn.traffic-saved",
    title="Memory traffic saved per folded BN",
    chapter=6,
    statement="Folding one BN with activation (B, C, *spatial) into its conv saves (2·B·C·Πspatial + 4C − [conv had no bias]·C_out) elements of memory traffic per inference pass (the BN's input read, output write and four parameter vectors, less the bias the conv gains; C_out = C for Conv→BN), and model_traffic_saved sums this over exactly the BNs fold_model folds.",
    parameters=("conv bias", "fold order"),
    reference="bytes read and written by every leaf module, measured with forward hooks on the unfolded and the folded model",
)
def check_traffic_saved(device: str = "cpu"):
    device = check_device(device)
    t = Tally()
    gen = generator(608)
    for case in range(N_SMALL_MODELS):
        model, _, shape = _small_model(case)
        model = _randomised_small_model(model, gen, device)
        x = randn(*shape, gen=gen, device=device)
        folded = fold_model(model)
        measured = module_traffic(model, x, 8) - module_traffic(folded, x, 8)
        predicted = model_traffic_saved(model, shape, 8)
        t.exact(predicted["bytes"] == measured, f"model {case}: formula {predicted['bytes']} vs measured {measured}")
        t.exact(predicted["pairs"] == len(folded.fold_report.folded), f"model {case}: {predicted['pairs']} pairs vs "
                                                                        f"{len(folded.fold_report.folded)} folded")
    return t.verdict("formula summed over fold_model's folds vs bytes measured with forward hooks", case_unit="checks")


# --------------------------------------------------------------------------------------
# Private helpers
# --------------------------------------------------------------------------------------


def _check_bn(bn: nn.Module) -> None:
    if not isinstance(bn, _BatchNorm):
        raise ValueError(f"expected a BatchNorm1d/2d/3d, got {type(bn).__name__}")
    if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
        raise ValueError("BatchNorm with track_running_stats=False always normalises with batch statistics: it is "
                         "not a fixed affine map and cannot be folded")
    if bn.training:
        raise ValueError("BatchNorm is in training mode (it normalises with batch statistics, not the running "
                         "ones): call .eval() before folding")


def _layer_kind(layer: nn.Module, who: str) -> str:
    if isinstance(layer, CONVT_TYPES):
        return "transpose"
    if isinstance(layer, CONV_TYPES):
        return "conv"
    if isinstance(layer, nn.Linear):
        return "linear"
    raise ValueError(f"{who} handles Conv1d/2d/3d, ConvTranspose1d/2d/3d and Linear, got {type(layer).__name__}")


def _check_bn_dim(layer: nn.Module, bn: nn.Module) -> None:
    nd = 0 if isinstance(layer, nn.Linear) else layer.weight.dim() - 2
    expected = {0: nn.BatchNorm1d, 1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[nd]
    if type(bn) is not expected and not isinstance(bn, expected):
        raise ValueError(f"dimension mismatch: {type(layer).__name__} needs a {expected.__name__}, got "
                         f"{type(bn).__name__}")


def _input_channel_of_weight(kind: str, shape: Sequence[int], groups: int) -> np.ndarray:
    """Input channel read by weight[o, j]: ``(o // (C_out/g))·(C_in/g) + j`` for a conv."""
    c_out, per_group_in = int(shape[0]), int(shape[1])
    o, j = np.meshgrid(np.arange(c_out), np.arange(per_group_in), indexing="ij")
    if kind == "linear":
        return j
    return (o // (c_out // groups)) * per_group_in + j


def _pads(conv: nn.Module) -> bool:
    pad = conv.padding
    if isinstance(pad, str):
        if pad == "valid":
            return False
        return any(d * (k - 1) > 0 for d, k in zip(conv.dilation, conv.kernel_size))
    return any(p > 0 for p in pad)


def _set_module(gm: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, name = target.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    setattr(parent, name, module)


def _exclusive_reason(calls: dict, attr_reads: set, target: str) -> str | None:
    """Why the module ``target`` may not be rewritten in place (None when it may): it is called at
    several places (``calls``: calls per module name), or its parameters are read by another call
    (``attr_reads``: parameter names read outside their module)."""
    if calls.get(target, 0) != 1:
        return f"{target!r} is called {calls.get(target, 0)} times (shared weights)"
    shared = sorted(a for a in attr_reads if a.startswith(target + "."))
    if shared:
        return f"the parameters of {target!r} are also read directly ({', '.join(shared)})"
    return None


def materialize_weight(layer: nn.Module) -> nn.Module:
    """``layer`` with its weight as a plain parameter, so that folding a BN scales the weight actually used.

    A layer under spectral or weight normalisation (parametrizations or the older hooks) is
    copied, the normalisation replaced by the weight it computes in eval mode; any other layer
    is returned as it is (not copied)."""
    from torch.nn.utils import parametrize
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    hooked = any(isinstance(h, (SpectralNorm, WeightNorm)) for h in layer._forward_pre_hooks.values())
    if not hooked and not parametrize.is_parametrized(layer):
        return layer
    dup = copy_model(layer).eval()
    if parametrize.is_parametrized(dup):
        # not parametrize.remove_parametrizations: it edits the class that every copy shares
        with torch.no_grad():
            values = {name: getattr(dup, name).detach().clone() for name in dup.parametrizations}
        del dup._modules["parametrizations"]
        dup.__class__ = type(dup).__bases__[0]  # ParametrizedConv2d → Conv2d, for this copy only
        for name, value in values.items():
            dup.register_parameter(name, nn.Parameter(value))
    for hook in list(dup._forward_pre_hooks.values()):
        if isinstance(hook, SpectralNorm):
            nn.utils.remove_spectral_norm(dup, hook.name)
        elif isinstance(hook, WeightNorm):
            nn.utils.remove_weight_norm(dup, hook.name)
    return dup


def _apply_fold(gm: torch.fx.GraphModule, nodes: dict, bn_name: str, layer_name: str, order: str) -> str | None:
    """Perform one decided fold on the fx graph module (the layer as it is *now*, so folds chain);
    returns None on success, else why the fx graph does not show the pair the run showed."""
    node, lnode = nodes.get(bn_name), nodes.get(layer_name)
    if node is None or lnode is None:
        return f"torch.fx does not trace the call of {bn_name!r} or {layer_name!r} that the run made"
    bn, layer = gm.get_submodule(bn_name), gm.get_submodule(layer_name)
    if order == "conv-bn":
        if not node.args or node.args[0] is not lnode:
            return f"torch.fx's graph does not feed {layer_name!r} into {bn_name!r} as the run did"
        _set_module(gm, layer_name, _fold_conv_bn(materialize_weight(layer), bn, lambda m: m))
        node.replace_all_uses_with(lnode)
    else:
        if list(node.users) != [lnode] or lnode.args[0] is not node:
            return f"torch.fx's graph does not feed {bn_name!r} into {layer_name!r} as the run did"
        _set_module(gm, layer_name, fold_bn_conv(bn, materialize_weight(layer)))
        node.replace_all_uses_with(node.args[0])
    gm.graph.erase_node(node)
    return None


def fold_decisions(model: nn.Module, input_shape: Sequence[int] | None = None, *, bn_before_conv: bool = True,
                   linear_bn: bool = False, graph=None) -> FoldReport:
    """Which BNs of ``model`` fold exactly, and into which layer, from the data flow of its calls.

    The one set of folding rules: :func:`fold_model` rewrites by them and
    :meth:`convbook.review.Review.fold` presents and applies them.  Reads ``graph`` (a
    :class:`convbook.graph.Graph` of ``model``) or else :func:`convbook.graph.trace` (on
    ``input_shape``, else on a probe input from the model's first layer) and walks the BN calls
    in order, keeping track of the folds already decided (a folded BN's readers then read its
    input, so Conv → BN → BN and BN → Conv → BN chains fold into one layer). A BN called once,
    with running statistics and BatchNorm's own ``forward``, is folded (``FoldReport.folded``):

    * ``"conv-bn"`` into the Conv/ConvTranspose (Linear only with ``linear_bn``, on a known
      input shape that gives it a 2-D output) that produces its input, when nothing else reads
      that output (no other call, not the model output) and the layer is exclusive;
    * else, with ``bn_before_conv``, ``"bn-conv"`` into the Conv1d/2d/3d that is the only reader
      of its output, called on it alone, exclusive, and exact (:func:`bn_conv_exact`).

    Exclusive (:func:`_exclusive_reason`): called once, with no other call reading its
    parameters (a functional conv on its weight, a tied layer), and not a subclass that replaces
    the layer's ``forward`` (it may pad or transform its input).  Every other BN of the model,
    also one that never runs, is in ``FoldReport.unfolded`` with the reason and in
    ``FoldReport.categories`` with its kind (:data:`LEFT_CATEGORIES`).
    """
    from .graph import trace
    from .shapes import _probe_shapes

    if graph is not None:
        g = graph
    elif input_shape is not None:
        g = trace(model, input_shape)
    else:
        g, errors = None, []
        for shape in _probe_shapes(model):
            try:
                g = trace(model, shape)
                break
            except ValueError as err:
                errors.append(str(err))
        if g is None:
            raise ValueError(f"fold_model could not run {type(model).__name__} on a probe input ({errors[-1]}): "
                             "pass example_input") from None
    shapes_known = linear_bn and (graph is not None or input_shape is not None)
    calls = g.calls
    count: dict[str, int] = {}
    attr_reads: set[str] = set()
    for c in calls:
        if c.is_module:
            count[c.name] = count.get(c.name, 0) + 1
        for pn in c.param_names:  # the trace names a tied parameter by its first owner, in every call
            if not (c.is_module and pn.startswith(c.name + ".")):
                attr_reads.add(pn)  # read outside the module that owns it (functional use, a tied layer)
                if c.is_module:
                    attr_reads.add(f"{c.name}.<tied to {pn}>")  # this module holds another's parameter
    alias: dict[int, int] = {}  # a folded BN call -> the call its readers now read

    def resolve(i):
        while i is not None and i in alias:
            i = alias[i]
        return i

    def readers(i: int) -> list:
        out = [d.index for d in calls if d.index not in alias and any(resolve(j) == i for j in d.inputs)]
        return out + ["the model output"] * sum(resolve(j) == i for j in g.output_sources)

    report = FoldReport()
    for c in calls:
        if not isinstance(c.module, _BatchNorm):
            continue
        if count[c.name] != 1:
            if c.name not in report.unfolded:
                report.leave(c.name, "bn-called-several-times",
                             f"the module is called {count[c.name]} times (one BN, several places)")
            continue
        if overrides_forward(c.module):
            report.leave(c.name, "bn-forward-replaced",
                         f"its class {type(c.module).__name__} replaces BatchNorm's forward, so it may compute more "
                         "than the per-channel affine map")
            continue
        if not c.module.track_running_stats or c.module.running_mean is None:
            report.leave(c.name, "batch-statistics", "it has no running statistics (it normalises with batch statistics)")
            continue
        src = resolve(c.inputs[0]) if c.inputs else None
        why = _after_reason(g, src, c, readers, count, attr_reads, shapes_known)
        if why is None:
            report.folded.append((c.name, calls[src].name, "conv-bn"))
            alias[c.index] = src
            continue
        reason, category = f"not after a foldable layer ({why})", "no-exclusive-neighbour"
        if bn_before_conv:
            why2, conv = _before_reason(g, c, readers, count, attr_reads)
            if why2 is None:
                report.folded.append((c.name, conv.name, "bn-conv"))
                alias[c.index] = resolve(c.inputs[0])
                continue
            reason = f"{reason}; not before a foldable conv ({why2})"
            if why2.startswith(_ZERO_PADDING):
                category = "zero-padding"
        report.leave(c.name, category, reason)
    for name, m in g.model.named_modules():
        if isinstance(m, _BatchNorm) and name not in count:
            report.leave(name, "never-called", "it is never called in the forward pass at this input")
    return report


_ZERO_PADDING = "zero padding"


def _what(g, i) -> str:
    """A short name for what call ``i`` of graph ``g`` computes (``-1``: the model input)."""
    if i is None:
        return "a tensor no call produced"
    if i == -1:
        return "the model's input"
    c = g.calls[i]
    return repr(c.name) if c.is_module else c.kind


def _after_reason(g, src, bn_call, readers, count, attr_reads, shapes_known: bool) -> str | None:
    """Why ``bn_call`` cannot fold into the layer producing its input (None: it can)."""
    if src is None or src < 0 or not g.calls[src].is_module:
        return f"its input is {_what(g, src)}, not a layer's output"
    prev = g.calls[src]
    if not isinstance(prev.module, CONV_TYPES + CONVT_TYPES + (nn.Linear,)):
        return f"its input comes from {prev.name!r} ({prev.kind}), not a conv/linear"
    if overrides_forward(prev.module):
        return f"{prev.name!r} is a {prev.kind} whose class replaces the layer's forward"
    if readers(src) != [bn_call.index]:
        return f"the output of {prev.name!r} is also read elsewhere"
    why = _exclusive_reason(count, attr_reads, prev.name)
    if why is not None:
        return why
    if isinstance(prev.module, nn.Linear) and (not shapes_known or len(prev.output_shape) != 2):
        return "Linear→BN is folded only with example_input showing a 2-D Linear output"
    return None


def _before_reason(g, bn_call, readers, count, attr_reads):
    """``(why not, None)`` or ``(None, conv call)``: fold ``bn_call`` into the conv that alone reads it."""
    users = readers(bn_call.index)
    if len(users) != 1:
        return f"its output has {len(users)} readers", None
    if users[0] == "the model output":
        return "its output is the model's output", None
    nxt = g.calls[users[0]]
    if not nxt.is_module:
        hint = " (BN → ReLU → conv: see fold_preact)" if nxt.kind in ("relu", "relu_") else ""
        return f"its output feeds {nxt.kind}, not a conv{hint}", None
    if not isinstance(nxt.module, CONV_TYPES):
        return f"it feeds {nxt.name!r} ({nxt.kind}), not a Conv1d/2d/3d", None
    if len(nxt.inputs) != 1:
        return f"{nxt.name!r} is not called on the BN's output alone", None
    if overrides_forward(nxt.module):
        return f"{nxt.name!r} is a {nxt.kind} whose class replaces the layer's forward (it may pad its input)", None
    why = _exclusive_reason(count, attr_reads, nxt.name)
    if why is not None:
        return why, None
    if not bn_conv_exact(nxt.module):
        return (f"{_ZERO_PADDING} {nxt.module.padding} in {nxt.name!r}: BN→conv is not exact in the border band, "
                "only with a bias map"), None
    return None, nxt


def _conv_geometry(gen: torch.Generator, nd: int, mode: str, p_max: int = 2, n_max: int = 7) -> dict:
    """Random per-axis kernel, stride, padding, dilation and a valid input size for a conv with
    padding ``mode``: the values differ between axes, and inputs go down to 1 pixel where the
    window fits (reflect padding needs p < n, circular p ≤ n)."""
    ks, ss, ps, ds, ns = [], [], [], [], []
    for _ in range(nd):
        k, s, d, p = randint(1, 3, gen), randint(1, 2, gen), randint(1, 2, gen), randint(0, p_max, gen)
        need = max(1, d * (k - 1) + 1 - 2 * p, p + 1 if mode == "reflect" else 1, p if mode == "circular" else 1)
        ks.append(k), ss.append(s), ds.append(d), ps.append(p), ns.append(max(need, randint(1, n_max, gen)))
    return {"kernel_size": tuple(ks), "stride": tuple(ss), "padding": tuple(ps), "dilation": tuple(ds),
            "size": tuple(ns)}


def _compare_layer_then_bn(t: Tally, layer: nn.Module, bn: nn.Module, input_shape: tuple, gen, device: str) -> None:
    """Randomise ``layer`` and ``bn`` (eval mode), draw an input, and compare the folded layer with
    ``bn(layer(x))``; a fold that raises counts as a failed case."""
    _randomise(layer, gen)
    _randomise_bn(bn, gen)
    bn.eval()
    x = randn(*input_shape, gen=gen, device=device)
    try:
        with torch.no_grad():
            t.close(fold_conv_bn(layer, bn)(x), bn(layer(x)), f"{layer}")
    except (RuntimeError, ValueError) as err:
        t.exact(False, f"{layer}: raised {err}")


def _randomise(layer: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        layer.weight.copy_(randn(*layer.weight.shape, gen=gen, device=layer.weight.device, dtype=layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.copy_(randn(*layer.bias.shape, gen=gen, device=layer.bias.device, dtype=layer.bias.dtype))


def _randomise_bn(bn: nn.Module, gen: torch.Generator, positive_gamma: bool = False) -> None:
    """Random running statistics and affine parameters, and random ``eps`` and ``momentum``.

    ``eps`` is log-uniform on [1e-6, 1] and the running variance log-uniform on [1e-3, 3], so a
    fold that ignores ``eps`` (or uses 1e-5) is visibly wrong; ``momentum`` is uniform on
    [0.01, 0.99] (it only matters in training mode, where nothing is folded).
    """
    c = bn.num_features
    dev, dt = bn.running_mean.device, bn.running_mean.dtype
    with torch.no_grad():
        bn.running_mean.copy_(randn(c, gen=gen, device=dev, dtype=dt))
        bn.running_var.copy_(_log_uniform(c, 1e-3, 3.0, gen).to(dev, dt))
        if bn.weight is not None:
            g = randn(c, gen=gen, device=dev, dtype=dt)
            bn.weight.copy_(g.abs() + 0.1 if positive_gamma else g)
            bn.bias.copy_(randn(c, gen=gen, device=dev, dtype=dt))
    bn.eps = float(_log_uniform(1, 1e-6, 1.0, gen))
    bn.momentum = float(0.01 + 0.98 * torch.rand(1, generator=gen, dtype=torch.float64))


def _log_uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    """``n`` float64 values log-uniform on ``[low, high]``."""
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _fusion_cases(gen: torch.Generator):
    def pair(first, second):
        first, second = first.double(), second.double()
        for m in (first, second):
            if isinstance(m, _BatchNorm):
                _randomise_bn(m, gen)
            else:
                _randomise(m, gen)
            m.eval()
        return first, second

    yield ("control: grouped Conv2d (g=2) → BN", *pair(nn.Conv2d(4, 6, 3, groups=2), nn.BatchNorm2d(6)),
           "conv-bn", (2, 4, 5, 5))
    yield ("control: ConvTranspose2d (g=1) → BN", *pair(nn.ConvTranspose2d(4, 6, 3, stride=2), nn.BatchNorm2d(6)),
           "conv-bn", (2, 4, 5, 5))

    yield ("grouped ConvTranspose2d (g=2) → BN", *pair(nn.ConvTranspose2d(4, 6, 3, groups=2), nn.BatchNorm2d(6)),
           "conv-bn", (2, 4, 5, 5))
    yield ("depthwise ConvTranspose2d (g=C) → BN", *pair(nn.ConvTranspose2d(4, 4, 3, stride=2, groups=4),
                                                         nn.BatchNorm2d(4)), "conv-bn", (2, 4, 5, 5))
    yield ("depthwise ConvTranspose1d, multiplier 2 → BN", *pair(nn.ConvTranspose1d(3, 6, 3, groups=3),
                                                                 nn.BatchNorm1d(6)), "conv-bn", (2, 3, 7))
    yield ("BN → Conv2d (no padding)", *pair(nn.BatchNorm2d(3), nn.Conv2d(3, 5, 3)), "bn-conv", (2, 3, 6, 6))
    yield ("BN → Conv2d (reflect padding)", *pair(nn.BatchNorm2d(3), nn.Conv2d(3, 5, 3, padding=1,
                                                                               padding_mode="reflect")),
           "bn-conv", (2, 3, 6, 6))
    yield ("BN → depthwise Conv2d", *pair(nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, groups=4)), "bn-conv", (2, 4, 6, 6))
    yield ("BatchNorm1d → Linear", *pair(nn.BatchNorm1d(5), nn.Linear(5, 3)), "bn-conv", (4, 5))


#: number of small models :func:`_small_model` builds (architectures the book's networks do not use)
N_SMALL_MODELS = 16


def _small_model(case: int) -> tuple[nn.Module, int, tuple[int, ...]]:
    """Small models for fold_model: ``(model, number of BNs that must remain, input shape)``."""
    which = case % N_SMALL_MODELS
    img = (2, 3, 10, 10)
    if which == 0:
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.Conv2d(8, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU()), 0, img
    if which == 1:  # BN after a ReLU cannot fold backwards; it folds forwards into an unpadded conv
        return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.BatchNorm2d(6), nn.Conv2d(6, 4, 1)), 0, img
    if which == 2:  # BN after ReLU and before a zero-padded conv: must stay
        return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.BatchNorm2d(6), nn.Conv2d(6, 4, 3, padding=1)), 1, img
    if which == 3:
        return _Residual(), 0, img
    if which == 4:
        return _Branches(), 1, img
    if which == 5:
        return nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, groups=3, padding=1, padding_mode="reflect"),
                             nn.BatchNorm2d(6), nn.ConvTranspose2d(6, 4, 2, stride=2, groups=2), nn.BatchNorm2d(4),
                             nn.ReLU()), 0, img
    if which == 6:  # BN → 1×1 conv (no bias) → BN: both fold into the one conv
        return nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 5, 1, bias=False), nn.BatchNorm2d(5)), 0, img
    if which == 7:  # BN → reflect-padded strided conv → BN: reflect padding copies BN'd values, exact
        return nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3, stride=2, padding=1, padding_mode="reflect"),
                             nn.BatchNorm2d(4)), 0, img
    if which == 8:
        return nn.Sequential(nn.Conv2d(3, 3, 3), nn.ReLU(), nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1),
                             nn.BatchNorm2d(4)), 0, img
    if which == 9:
        return _PreActBlock(), 1, img
    if which == 10:
        return _SharedConv(), 1, img
    if which == 11:
        return _SqueezeExcite(), 0, img
    if which == 12:
        return _ConcatSkip(), 1, img
    if which == 13:  # 3-D, grouped with a channel multiplier, replicate padding
        return nn.Sequential(nn.Conv3d(3, 6, 3, padding=1, groups=3), nn.BatchNorm3d(6), nn.ReLU(),
                             nn.BatchNorm3d(6), nn.Conv3d(6, 4, 3, padding=1, padding_mode="replicate", dilation=1),
                             nn.BatchNorm3d(4)), 0, (2, 3, 5, 6, 4)
    if which == 14:  # BN before a transposed conv, and a conv whose weights are also read functionally
        return _BnTransposeAndTiedWeight(), 2, img
    return nn.Sequential(nn.Conv1d(3, 6, 3, dilation=2, stride=2), nn.BatchNorm1d(6), nn.ReLU(),
                         nn.BatchNorm1d(6), nn.Conv1d(6, 6, 3, groups=6, padding=2, padding_mode="circular"),
                         nn.BatchNorm1d(6)), 0, (2, 3, 17)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)
        self.conv2, self.bn2 = nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


class _Branches(nn.Module):
    """conv output used twice: its BN cannot fold (it stays); the other branch folds."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y.relu() + self.bn2(self.conv2(x))


class _PreActBlock(nn.Module):
    """Pre-activation residual block (BN → ReLU → conv): bn1 reads the block input and feeds a ReLU, so
    it stays; bn2 follows conv1 directly and folds into it."""

    def __init__(self):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(3), nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(3), nn.Conv2d(3, 3, 3, padding=1, bias=False)

    def forward(self, x):
        y = self.conv1(F.relu(self.bn1(x)))
        return x + self.conv2(F.relu(self.bn2(y)))


class _SharedConv(nn.Module):
    """One conv called twice, a BN after one of the calls: folding would change the other call."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(self.conv(x)) + self.conv(x.flip(-1))


class _SqueezeExcite(nn.Module):
    """conv → BN → squeeze-excitation gate (pool → 1×1 → ReLU → 1×1 → sigmoid, multiply)."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.fc1, self.fc2 = nn.Conv2d(6, 2, 1), nn.Conv2d(2, 6, 1)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return y * torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(y, 1)))))


class _ConcatSkip(nn.Module):
    """conv → BN concatenated with the input (DenseNet-style), then BN → zero-padded conv: the second BN
    reads a concatenation and feeds a zero-padded conv, so it stays."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.bn_cat, self.conv_out = nn.BatchNorm2d(7), nn.Conv2d(7, 2, 3, padding=1)

    def forward(self, x):
        return self.conv_out(self.bn_cat(torch.cat([self.bn(self.conv(x)), x], dim=1)))


class _BnTransposeAndTiedWeight(nn.Module):
    """BN before a transposed conv (not folded: its bias would not be constant), and a conv whose weight
    is also used by a functional conv (its BN must not fold)."""

    def __init__(self):
        super().__init__()
        self.bn_t, self.up = nn.BatchNorm2d(3), nn.ConvTranspose2d(3, 3, 2, stride=2)
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.up(self.bn_t(x))
        return self.bn(self.conv(y)) + F.conv2d(y, self.conv.weight, padding=1)


def _bad_inputs(device: str):
    def bn(c=4, dim=2, **kw):
        b = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dim](c, **kw).to(device, DTYPE)
        return b.eval()

    conv = nn.Conv2d(3, 4, 3).to(device, DTYPE)
    training_bn = nn.BatchNorm2d(4).to(device, DTYPE).train()
    return [
        ("conv-bn, BN in training mode", lambda: fold_conv_bn(conv, training_bn)),
        ("conv-bn, track_running_stats=False", lambda: fold_conv_bn(conv, bn(track_running_stats=False))),
        ("conv-bn, channel mismatch", lambda: fold_conv_bn(conv, bn(5))),
        ("conv-bn, wrong BN dimension", lambda: fold_conv_bn(conv, bn(4, dim=3))),
        ("conv-bn, not a layer", lambda: fold_conv_bn(nn.ReLU(), bn())),
        ("bn-conv, channel mismatch", lambda: fold_bn_conv(bn(4), conv)),
        ("bn-conv, zero padding asked exact", lambda: fold_bn_conv(bn(3), nn.Conv2d(3, 4, 3, padding=1).double())),
        ("bn-conv, training mode", lambda: fold_bn_conv(nn.BatchNorm2d(3).double().train(), conv)),
        ("bn-conv, transposed conv", lambda: fold_bn_conv(bn(3), nn.ConvTranspose2d(3, 4, 3).double())),
        ("fold_model, model in training mode", lambda: fold_model(nn.Sequential(conv, nn.BatchNorm2d(4)).train())),
        ("fold_model, track_running_stats=False",
         lambda: fold_model(nn.Sequential(conv, nn.BatchNorm2d(4, track_running_stats=False)).eval())),
        ("preact, a BN scale ≤ 0", lambda: fold_preact(nn.Conv2d(2, 3, 1).to(device, DTYPE), _negative_gamma_bn(device),
                                                        nn.Conv2d(3, 2, 3).to(device, DTYPE))),
        ("fold_model strict, BN not adjacent",
         lambda: fold_model(nn.Sequential(conv, nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 3, padding=1)).eval(),
                            strict=True)),
    ]


def _negative_gamma_bn(device: str) -> nn.Module:
    bn = nn.BatchNorm2d(3).to(device, DTYPE).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, -0.5, 2.0]))
    return bn


def _random_model(name: str, gen: torch.Generator, device: str, **kwargs) -> nn.Module:
    """A model of :mod:`convbook.models` in float64, weights ~ N(0, 1/fan_in), random BN statistics, eval mode.

    Built on the meta device (cast to float64 there, so storage is allocated once) and filled
    from ``gen``: default initialisation of ResNet-50's 25M weights would cost more than the
    whole check. The weights are drawn in float32 (a quarter of the time of float64 normals
    here) and stored exactly in float64; everything after runs in float64.
    """
    from . import models

    net = models.build(name, "meta", **kwargs).to(DTYPE).to_empty(device=device)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                w = randn(*m.weight.shape, gen=gen, device=device, dtype=torch.float32)
                m.weight.copy_(w.to(DTYPE) / math.sqrt(fan_in))
                if m.bias is not None:
                    m.bias.copy_(randn(*m.bias.shape, gen=gen, device=device) * 0.1)
            elif isinstance(m, _BatchNorm):
                c = m.num_features
                m.running_mean.copy_(randn(c, gen=gen, device=device) * 0.1)
                m.running_var.copy_(0.5 + randn(c, gen=gen, device=device).abs())
                m.weight.copy_(1 + 0.2 * randn(c, gen=gen, device=device))
                m.bias.copy_(0.1 * randn(c, gen=gen, device=device))
                m.num_batches_tracked.zero_()
                m.eps = float(_log_uniform(1, 1e-6, 1.0, gen))
    return net.eval()


@claim(
    "bn.fold-model-resnet50",
    title="fold_model on ResNet-50 removes all 53 BNs and matches to 1e-10",
    chapter=6,
    statement="fold_model on the lib's ResNet-50 in eval mode with random BN statistics and eps drawn log-uniformly from [1e-6, 1] per BN removes every BatchNorm and matches the unfolded network to 1e-10 relative in float64 (1×3×64×64 input).",
    parameters=("eps",),
    reference="the unfolded ResNet-50 run in PyTorch (float64)",
)
def check_fold_model_resnet50(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-10)
    gen = generator(609)
    net = _random_model("resnet50", gen, device, num_classes=10)
    x = randn(1, 3, 64, 64, gen=gen, device=device)
    n_bn = count_batchnorms(net)
    folded = fold_model(net, strict=True)
    with torch.no_grad():
        t.close(folded(x), net(x), "ResNet-50 logits")
    t.exact(n_bn == 53, f"ResNet-50 has {n_bn} BNs, expected 53")
    t.exact(count_batchnorms(folded) == 0, f"{count_batchnorms(folded)} BNs left")
    t.note(f"{n_bn} BNs folded into their convolutions, 0 left")
    return t.verdict("folded vs unfolded forward pass, eval mode, random BN statistics", case_unit="checks",
                     dtype="float64")


@claim(
    "bn.fold-model-mobilenets",
    title="fold_model on MobileNet v1 and v2 (depthwise convolutions) removes every BN",
    chapter=6,
    statement="fold_model on the lib's MobileNet v1 and v2 in eval mode with random BN statistics and eps drawn log-uniformly from [1e-6, 1] per BN removes every BatchNorm (27 and 52) and matches the unfolded networks to 1e-10 relative in float64 (1×3×32×32 input).",
    parameters=("eps",),
    reference="the unfolded MobileNets run in PyTorch (float64)",
)
def check_fold_model_mobilenets(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-10)
    gen = generator(610)
    for name, expected in (("mobilenet_v1", 27), ("mobilenet_v2", 52)):
        net = _random_model(name, gen, device, num_classes=10)
        x = randn(1, 3, 32, 32, gen=gen, device=device)
        n_bn = count_batchnorms(net)
        t.exact(n_bn == expected, f"{name} has {n_bn} BNs, expected {expected}")
        try:
            folded = fold_model(net, strict=True)
        except (RuntimeError, ValueError, IndexError) as err:  # a wrong fold may not even build
            t.exact(False, f"{name}: fold_model raised {type(err).__name__}: {err}")
            continue
        with torch.no_grad():
            t.close(folded(x), net(x), f"{name} logits")
        t.exact(count_batchnorms(folded) == 0, f"{name}: {count_batchnorms(folded)} BNs left")
    return t.verdict("folded vs unfolded forward passes, eval mode, random BN statistics", case_unit="checks",
                     dtype="float64")
