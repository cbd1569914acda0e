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
import math
from typing import Callable, Sequence

import numpy as np
import sympy as sp
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from .claims import Tally, claim
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
    "fold_model",
    "count_batchnorms",
    "bn_traffic_saved",
    "model_traffic_saved",
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


def fold_model(model: nn.Module, *, strict: bool = False, bn_before_conv: bool = True,
               example_input: torch.Tensor | None = None) -> torch.fx.GraphModule:
    """A new model (a ``torch.fx.GraphModule``) equal to ``model`` with foldable BNs removed.

    Folds, on the traced graph, every BN whose input is the output of a Conv/ConvTranspose
    used by nothing else (:func:`fold_conv_bn`), and with ``bn_before_conv`` every BN whose
    only user is a conv for which BN → conv is exact (:func:`bn_conv_exact`).  Linear → BN is
    folded only when ``example_input`` is given and shows the Linear output is 2-D (on a
    3-D input BatchNorm1d normalises a different axis than the Linear maps).  Modules called
    at several places (shared weights) are never folded.  The input model is not modified.

    Rules: ``model`` in eval mode, every BN with running statistics, fx-traceable.  With
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
    work = copy.deepcopy(model)
    try:
        gm = torch.fx.symbolic_trace(work)
    except Exception as err:  # fx raises many kinds of errors on untraceable code
        raise ValueError(f"fold_model needs a torch.fx-traceable model: {type(err).__name__}: {err}") from None
    if example_input is not None:
        from torch.fx.passes.shape_prop import ShapeProp

        with torch.no_grad():
            ShapeProp(gm).propagate(example_input)
    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    unfolded: list[str] = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), _BatchNorm):
            continue
        bn = modules[node.target]
        if calls[node.target] != 1:
            unfolded.append(f"{node.target!r} is called {calls[node.target]} times")
            continue
        prev = node.args[0] if node.args else None
        reason = _fold_after(gm, modules, calls, node, prev, bn, example_input is not None)
        if reason is None:
            continue
        if bn_before_conv:
            reason2 = _fold_before(gm, modules, calls, node, bn)
            if reason2 is None:
                continue
            reason = f"{reason}; {reason2}"
        unfolded.append(f"{node.target!r}: {reason}")
    if strict and unfolded:
        raise ValueError("BatchNorm not directly after (or before) a foldable layer: " + " | ".join(unfolded))
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def count_batchnorms(model: nn.Module) -> int:
    """Number of batch-norm modules in ``model``."""
    return sum(isinstance(m, _BatchNorm) for m in model.modules())


def bn_traffic_saved(activation_shape: Sequence[int], bytes_per_element: int = 4, conv_has_bias: bool = False) -> int:
    """Bytes of memory traffic an inference pass saves by folding one BN into its conv.

    An unfused BN reads its input and writes its output, ``2 · B·C·Π spatial`` elements, and
    reads its per-channel parameters: ``γ, β, μ, σ²`` (``4C``).  The folded conv reads ``C``
    more bias values if it had none before (``C``).  Saved, in bytes:
    ``(2·numel + 4C − [no bias]·C) · bytes_per_element``.
    """
    shape = tuple(int(v) for v in activation_shape)
    if len(shape) < 2 or any(v < 1 for v in shape):
        raise ValueError(f"activation_shape must be (B, C, *spatial) of positive ints, got {activation_shape!r}")
    numel, c = math.prod(shape), shape[1]
    return (2 * numel + 4 * c - (0 if conv_has_bias else c)) * bytes_per_element


def model_traffic_saved(model: nn.Module, input_shape: Sequence[int], bytes_per_element: int = 4) -> dict:
    """Memory traffic saved by folding every Conv→BN pair of ``model`` for one input shape.

    Traces the model on the meta device (nothing is allocated or computed), reads the shape
    of each BN's output from ``torch.fx`` shape propagation and sums :func:`bn_traffic_saved`.
    Returns ``{"pairs": n, "bytes": total, "activation_bytes": Σ BN output sizes in bytes}``.
    """
    from torch.fx.passes.shape_prop import ShapeProp

    meta = copy.deepcopy(model).to("meta").eval()
    gm = torch.fx.symbolic_trace(meta)
    ShapeProp(gm).propagate(torch.empty(*input_shape, device="meta"))
    mods = dict(gm.named_modules())
    pairs, total, act = 0, 0, 0
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(mods[node.target], _BatchNorm):
            prev = node.args[0]
            layer = mods.get(prev.target) if isinstance(prev, torch.fx.Node) and prev.op == "call_module" else None
            if isinstance(layer, CONV_TYPES + CONVT_TYPES):
                shape = node.meta["tensor_meta"].shape
                pairs += 1
                total += bn_traffic_saved(shape, bytes_per_element, layer.bias is not None)
                act += shape.numel() * bytes_per_element
    return {"pairs": pairs, "bytes": total, "activation_bytes": act}


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
    title="The Conv→BN and BN→conv folds, derived and proven with sympy",
    chapter=6,
    statement="Differentiating BN(conv(x)) gives W' = W·γ/√(σ²+ε) and evaluating at 0 gives b' = (b−μ)γ/√(σ²+ε)+β; the affine map they define equals BN∘conv identically, and likewise for BN→conv (W' = W s, b' = b + Σ W t).",
)
def check_fold_symbolic(device: str = "cpu"):
    check_device(device)
    t = Tally()
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
    return t.verdict("sympy: derived by differentiation, identity simplified to 0", case_unit="identities")


@claim(
    "bn.fold-conv",
    title="Conv→BN folds exactly for every conv configuration",
    chapter=6,
    statement="fold_conv_bn(conv, bn)(x) = bn(conv(x)) for Conv1d/2d/3d with any stride, padding (mode), dilation and groups (depthwise included), with and without bias.",
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
        c_out = c_in if depthwise else groups * randint(1, 3, gen)
        if depthwise:
            groups = c_in
        k = randint(1, 3, gen)
        s, d = randint(1, 2, gen), randint(1, 2, gen)
        p = randint(0, 2, gen)
        mode = ["zeros", "reflect", "replicate", "circular"][randint(0, 3, gen)]
        n = 5 if nd == 3 else 7
        if mode != "zeros" and p >= n:
            mode = "zeros"
        conv = conv_t(c_in, c_out, k, stride=s, padding=p, dilation=d, groups=groups, bias=bool(case % 2),
                      padding_mode=mode).to(device, DTYPE)
        bn = bn_t(c_out, affine=case % 7 != 3).to(device, DTYPE)
        _compare_layer_then_bn(t, conv, bn, (2, c_in, *([n] * nd)), gen, device)
    return t.verdict("random layers vs nn.Sequential(conv, bn) in eval mode", case_unit="layers", dtype="float64")


@claim(
    "bn.fold-transpose",
    title="ConvTranspose→BN folds on the output-channel axis within each group",
    chapter=6,
    statement="For a transposed conv with weight (C_in, C_out/g, *k), output channel o = (i // (C_in/g))·(C_out/g) + j feeds weight[i, j]; scaling there gives fold_conv_bn(convT, bn)(x) = bn(convT(x)) for every stride, padding, output padding, dilation and group count.",
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
        k, s, d = randint(1, 3, gen), randint(1, 3, gen), randint(1, 2, gen)
        p = randint(0, d * (k - 1) // 2, gen)
        op = randint(0, max(s, d) - 1, gen)
        conv = conv_t(c_in, c_out, k, stride=s, padding=p, output_padding=op, dilation=d, groups=groups,
                      bias=bool(case % 2)).to(device, DTYPE)
        bn = bn_t(c_out).to(device, DTYPE)
        _compare_layer_then_bn(t, conv, bn, (2, c_in, *([4] * nd)), gen, device)
    return t.verdict("random transposed layers vs nn.Sequential(convT, bn)", case_unit="layers", dtype="float64")


@claim(
    "bn.fold-linear",
    title="Linear→BatchNorm1d folds exactly",
    chapter=6,
    statement="fold_conv_bn(linear, bn)(x) = bn(linear(x)) for (N, features) inputs, with and without bias.",
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
    statement="fold_bn_conv(bn, conv)(x) = conv(bn(x)) with W'[:, i] = W[:, i]·s_i and b' = b + Σ W t, for convs with no padding or reflect/replicate/circular padding (any stride, dilation, groups), and for Linear.",
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
            groups, c_out = c_in, c_in
        k, s, d = randint(1, 3, gen), randint(1, 2, gen), randint(1, 2, gen)
        mode = ["zeros", "reflect", "replicate", "circular"][case % 4]
        p = 0 if mode == "zeros" else randint(1, 2, gen)
        conv = conv_t(c_in, c_out, k, stride=s, padding=p, dilation=d, groups=groups, bias=bool(case % 2),
                      padding_mode=mode).to(device, DTYPE)
        bn = bn_t(c_in).to(device, DTYPE)
        _randomise(conv, gen)
        _randomise_bn(bn, gen)
        bn.eval()
        x = randn(2, c_in, *([5 if nd == 3 else 7] * nd), gen=gen, device=device)
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
    statement="With zero padding, the constant-bias fold of BN→conv equals conv(bn(x)) exactly outside the outputs whose window reads padding (a band ⌈p/s⌉ wide at the start and n_out − ⌈(n+p−d(k−1))/s⌉ at the end of each axis) and generically differs inside it; conv_{Ws}(x) + conv(t·1) is exact everywhere.",
)
def check_fold_bn_conv_border(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(605)
    outputs = 0
    for case in range(60):
        nd = 1 + case % 2
        conv_t, bn_t = (nn.Conv1d, nn.BatchNorm1d) if nd == 1 else (nn.Conv2d, nn.BatchNorm2d)
        c_in, c_out = randint(1, 3, gen), randint(1, 3, gen)
        size = tuple(randint(5, 10, gen) for _ in range(nd))
        k, s, d, p = randint(1, 4, gen), randint(1, 3, gen), randint(1, 2, gen), randint(1, 3, gen)
        if any(d * (k - 1) + 1 > n + 2 * p for n in size):
            continue
        conv = conv_t(c_in, c_out, k, stride=s, padding=p, dilation=d, bias=bool(case % 2)).to(device, DTYPE)
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
        band = border_band_mask(size, (k,) * nd, (s,) * nd, (p,) * nd, (d,) * nd)
        predicted = np.zeros(band.shape, dtype=bool)  # band = union over axes of the per-axis formula
        for j, n in enumerate(size):
            lead, trail = border_band_width(n, k, s, p, d)
            axis = np.zeros(band.shape[j], dtype=bool)
            axis[:lead] = True
            if trail:
                axis[band.shape[j] - trail:] = True
            shape = [1] * nd
            shape[j] = band.shape[j]
            predicted |= axis.reshape(shape)
        t.exact(np.array_equal(band, predicted), f"band width formula, {size} k={k} s={s} p={p} d={d}")
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
    statement="On Conv2d (any groups), ungrouped ConvTranspose2d and Linear followed by BN, fold_conv_bn gives the same weight and bias as torch's fuse_conv_bn_eval / fuse_linear_bn_eval.",
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
        ours = fold_conv_bn(layer, bn)
        theirs = (fusion.fuse_linear_bn_eval(layer, bn) if which == 2
                  else fusion.fuse_conv_bn_eval(layer, bn, transpose=which == 1))
        t.close(ours.weight, theirs.weight, f"weight {layer}")
        t.close(ours.bias, theirs.bias, f"bias {layer}")
    return t.verdict("weights and biases vs torch.nn.utils.fusion", case_unit="comparisons", dtype="float64")


@claim(
    "bn.fuse-eval-gaps",
    title="Where torch's fusion fails or does not apply, convbook.fold is exact",
    chapter=6,
    statement="On grouped and depthwise transposed convs torch's fuse_conv_bn_eval raises or returns a layer that cannot run, and it has no BN→conv fusion; on every such case fold_conv_bn / fold_bn_conv match running the layers to 1e-12.",
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
    title="fold_model removes foldable BNs from Sequential and fx-traceable models without changing them",
    chapter=6,
    statement="fold_model(model) on Sequential, residual and branching models returns a model equal to the original (float64, 1e-12) with every BN adjacent to a conv removed, and leaves the input model's parameters and buffers untouched.",
)
def check_fold_model(device: str = "cpu"):
    device = check_device(device)
    t = Tally(tol=1e-12)
    gen = generator(607)
    for case in range(12):
        model, expected_left = _small_model(case)
        model = model.to(device, DTYPE)
        for m in model.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                _randomise(m, gen)
            if isinstance(m, _BatchNorm):
                _randomise_bn(m, gen)
        model.eval()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        x = randn(2, 3, 10, 10, gen=gen, device=device)
        folded = fold_model(model)
        with torch.no_grad():
            t.close(folded(x), model(x), f"small model {case}")
        t.exact(count_batchnorms(folded) == expected_left, f"model {case}: {count_batchnorms(folded)} BNs left, "
                                                           f"expected {expected_left}")
        after = model.state_dict()
        t.exact(all(torch.equal(before[k], after[k]) for k in before), f"model {case} was modified")
    return t.verdict("small models vs their folded copies", case_unit="checks", dtype="float64")


@claim(
    "bn.refuse-bad-input",
    title="Folding refuses inputs it would get wrong",
    chapter=6,
    statement="BN in training mode, BN with track_running_stats=False, mismatched channel counts, a BN of the wrong dimension, zero-padded BN→conv asked to be exact, and (strict) a BN not adjacent to a foldable layer raise ValueError instead of returning a wrong model.",
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
    statement="Folding one BN saves (2·B·C·Πspatial + 4C − [conv had no bias]·C) elements of memory traffic per inference pass: the BN's input read, output write and four parameter vectors, less the added bias.",
)
def check_traffic_saved(device: str = "cpu"):
    from torch.fx.passes.shape_prop import ShapeProp

    device = check_device(device)
    t = Tally()
    gen = generator(608)
    for case in range(8):
        model, _ = _small_model(case)
        model = model.to(device, DTYPE).eval()
        x = randn(2, 3, 10, 10, gen=gen, device=device)
        gm = torch.fx.symbolic_trace(model)
        ShapeProp(gm).propagate(x)
        mods = dict(gm.named_modules())
        for node in gm.graph.nodes:
            if node.op == "call_module" and isinstance(mods[node.target], _BatchNorm):
                bn = mods[node.target]
                prev = node.args[0]
                prev_mod = mods.get(prev.target) if prev.op == "call_module" else None
                if not isinstance(prev_mod, CONV_TYPES + CONVT_TYPES):
                    continue
                # count what the BN node touches: its input and output tensors and its buffers/parameters
                touched = node.args[0].meta["tensor_meta"].shape.numel() + node.meta["tensor_meta"].shape.numel()
                touched += sum(p.numel() for p in bn.parameters()) + sum(b.numel() for n, b in bn.named_buffers()
                                                                         if n != "num_batches_tracked")
                fused = fold_conv_bn(prev_mod, bn)
                added = fused.bias.numel() - (prev_mod.bias.numel() if prev_mod.bias is not None else 0)
                expected = (touched - added) * 8
                got = bn_traffic_saved(node.meta["tensor_meta"].shape, 8, prev_mod.bias is not None)
                t.exact(got == expected, f"{node.target}: formula {got} vs counted {expected}")
    return t.verdict("formula vs tensors counted by fx ShapeProp on small models", case_unit="BNs")


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


def _fold_after(gm, modules, calls, node, prev, bn, shapes_known: bool) -> str | None:
    """Fold ``bn`` into the layer producing its input; returns None on success, else why not."""
    if not isinstance(prev, torch.fx.Node) or prev.op != "call_module":
        return "its input is not a module's output"
    layer = modules.get(prev.target)
    if not isinstance(layer, CONV_TYPES + CONVT_TYPES + (nn.Linear,)):
        return f"its input comes from {prev.target!r} ({type(layer).__name__}), not a conv/linear"
    if len(prev.users) != 1:
        return f"the output of {prev.target!r} is also used elsewhere"
    if calls[prev.target] != 1:
        return f"{prev.target!r} is called {calls[prev.target]} times (shared weights)"
    if isinstance(layer, nn.Linear):
        meta = prev.meta.get("tensor_meta")
        if not shapes_known or meta is None or len(meta.shape) != 2:
            return "Linear→BN is folded only with example_input showing a 2-D Linear output"
    _set_module(gm, prev.target, _fold_conv_bn(layer, bn, lambda m: m))  # gm is already a private copy
    node.replace_all_uses_with(prev)
    gm.graph.erase_node(node)
    return None


def _fold_before(gm, modules, calls, node, bn) -> str | None:
    users = list(node.users)
    if len(users) != 1 or users[0].op != "call_module":
        return "its output does not feed exactly one module"
    nxt = users[0]
    layer = modules.get(nxt.target)
    if not isinstance(layer, CONV_TYPES):
        return f"it feeds {nxt.target!r} ({type(layer).__name__}), not a conv"
    if calls[nxt.target] != 1:
        return f"{nxt.target!r} is called {calls[nxt.target]} times (shared weights)"
    if not bn_conv_exact(layer):
        return f"BN→{nxt.target!r} has zero padding (not exact)"
    _set_module(gm, nxt.target, fold_bn_conv(bn, layer))
    node.replace_all_uses_with(node.args[0])
    gm.graph.erase_node(node)
    return None


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


def _randomise_bn(bn: nn.Module, gen: torch.Generator) -> None:
    c = bn.num_features
    dev, dt = bn.running_mean.device, bn.running_mean.dtype
    with torch.no_grad():
        bn.running_mean.copy_(randn(c, gen=gen, device=dev, dtype=dt))
        bn.running_var.copy_(0.2 + randn(c, gen=gen, device=dev, dtype=dt).abs() * 2)
        if bn.weight is not None:
            bn.weight.copy_(randn(c, gen=gen, device=dev, dtype=dt))
            bn.bias.copy_(randn(c, gen=gen, device=dev, dtype=dt))
        bn.eps = 1e-5


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


def _small_model(case: int) -> tuple[nn.Module, int]:
    """Small models for fold_model: (model, number of BNs that must remain)."""
    which = case % 6
    if which == 0:
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.Conv2d(8, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU()), 0
    if which == 1:  # BN after a ReLU cannot fold backwards; it folds forwards into an unpadded conv
        return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.BatchNorm2d(6), nn.Conv2d(6, 4, 1)), 0
    if which == 2:  # BN after ReLU and before a zero-padded conv: must stay
        return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.BatchNorm2d(6), nn.Conv2d(6, 4, 3, padding=1)), 1
    if which == 3:
        return _Residual(), 0
    if which == 4:
        return _Branches(), 1
    return nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, groups=3, padding=1, padding_mode="reflect"),
                         nn.BatchNorm2d(6), nn.ConvTranspose2d(6, 4, 2, stride=2, groups=2), nn.BatchNorm2d(4),
                         nn.ReLU()), 0


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
        ("fold_model strict, BN not adjacent",
         lambda: fold_model(nn.Sequential(conv, nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 3, padding=1)).eval(),
                            strict=True)),
    ]


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
    return net.eval()


@claim(
    "bn.fold-model-resnet50",
    title="fold_model on ResNet-50 removes all 53 BNs and matches to 1e-10",
    chapter=6,
    statement="fold_model on the lib's ResNet-50 in eval mode with random BN statistics removes every BatchNorm and matches the unfolded network to 1e-10 relative in float64 (1×3×64×64 input).",
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
    statement="fold_model on the lib's MobileNet v1 and v2 in eval mode with random BN statistics removes every BatchNorm (27 and 52) and matches the unfolded networks to 1e-10 relative in float64 (1×3×32×32 input).",
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
