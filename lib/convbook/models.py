"""Reference convolutional networks, written out so their parameter counts equal torchvision's.

torchvision's wheels do not install beside the book's pinned CPU torch, so the published
architectures are re-written here with the same module structure and attribute names
(``conv1``, ``bn1``, ``layer1`` … ``fc``; ``features``/``classifier``), hence the same
``state_dict`` keys and exactly the same parameter counts:

=====================  ============  =================================================
model                  parameters    source
=====================  ============  =================================================
resnet18               11,689,512    He et al. 2016, Table 1; torchvision
resnet34               21,797,672
resnet50               25,557,032
resnet101              44,549,160
resnet152              60,192,808
resnext50_32x4d        25,028,904    Xie et al. 2017
wide_resnet50_2        68,883,240    Zagoruyko & Komodakis 2016 (torchvision variant)
mobilenet_v1            4,231,976    Howard et al. 2017 (1.0, 224, BN, 1000-class FC)
mobilenet_v2            3,504,872    Sandler et al. 2018
vgg16                 138,357,544    Simonyan & Zisserman 2015 (configuration D)
=====================  ============  =================================================

Every block is plain ``Conv2d`` → ``BatchNorm2d`` → ``ReLU`` (``ReLU6`` in MobileNet v2),
so folding and tracing code can walk them. Bottleneck ResNets take
``stride_on="3x3"`` (torchvision "v1.5", ResNet-B, the default) or ``stride_on="1x1"``
(the original paper: the stride-2 sits on the first 1×1 convolution of a block).

Build large models on the meta device to count without allocating:
``with torch.device("meta"): m = resnet152()``, or :func:`build`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .conventions import as_int

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "MobileNetV1",
    "mobilenet_v1",
    "InvertedResidual",
    "MobileNetV2",
    "mobilenet_v2",
    "VGG",
    "vgg16",
    "MODELS",
    "TORCHVISION_PARAMS",
    "build",
    "count_params",
    "conv_shapes",
    "resnet50_conv_shapes",
]


# --------------------------------------------------------------------------------------
# ResNet family (torchvision.models.resnet, same names and structure)
# --------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """Two 3×3 convolutions (stride on the first) plus the shortcut; ``expansion = 1``."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, stride_on: str = "3x3") -> None:
        super().__init__()
        stride = as_int(stride, "stride", 1)  # one int for both axes (convbook.conventions)
        if groups != 1 or base_width != 64:
            raise ValueError(f"BasicBlock only supports groups=1 and base_width=64, got groups={groups}, base_width={base_width}")
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 reduce → 3×3 (grouped for ResNeXt) → 1×1 expand (×4), plus the shortcut.

    ``stride_on="3x3"`` puts the block's stride on the 3×3 convolution (torchvision,
    "ResNet v1.5"); ``"1x1"`` puts it on the first 1×1, as in He et al. 2016.
    Width of the inner convolutions: ``int(planes * base_width / 64) * groups``.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, stride_on: str = "3x3") -> None:
        super().__init__()
        _check_stride_on(stride_on)
        stride = as_int(stride, "stride", 1)  # one int for both axes (convbook.conventions)
        width = int(planes * (base_width / 64.0)) * groups
        s1, s3 = (stride, 1) if stride_on == "1x1" else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, width, 1, stride=s1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=s3, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet of He et al. 2016 as torchvision builds it (stem 7×7/2 + max-pool, 4 stages, FC).

    ``layers`` is the number of blocks per stage, e.g. ``[3, 4, 6, 3]`` for ResNet-50.
    The shortcut of the first block of a stage is a 1×1 projection (option B) with BN
    when the shape changes.
    """

    def __init__(self, block: type, layers: Sequence[int], num_classes: int = 1000, groups: int = 1,
                 width_per_group: int = 64, stride_on: str = "3x3") -> None:
        super().__init__()
        _check_stride_on(stride_on)
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"layers must be 4 positive block counts, got {list(layers)}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.inplanes = 64
        self.groups = groups
        self.base_width = width_per_group
        self.stride_on = stride_on
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        kw = dict(groups=self.groups, base_width=self.base_width, stride_on=self.stride_on)
        layers = [block(self.inplanes, planes, stride, downsample, **kw)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, **kw) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000) -> ResNet:
    """ResNet-18: BasicBlock ×[2, 2, 2, 2]; 11,689,512 parameters."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes)


def resnet34(num_classes: int = 1000) -> ResNet:
    """ResNet-34: BasicBlock ×[3, 4, 6, 3]; 21,797,672 parameters."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes)


def resnet50(num_classes: int = 1000, stride_on: str = "3x3") -> ResNet:
    """ResNet-50: Bottleneck ×[3, 4, 6, 3]; 25,557,032 parameters (either stride placement)."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, stride_on=stride_on)


def resnet101(num_classes: int = 1000, stride_on: str = "3x3") -> ResNet:
    """ResNet-101: Bottleneck ×[3, 4, 23, 3]; 44,549,160 parameters."""
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes, stride_on=stride_on)


def resnet152(num_classes: int = 1000, stride_on: str = "3x3") -> ResNet:
    """ResNet-152: Bottleneck ×[3, 8, 36, 3]; 60,192,808 parameters."""
    return ResNet(Bottleneck, [3, 8, 36, 3], num_classes, stride_on=stride_on)


def resnext50_32x4d(num_classes: int = 1000, stride_on: str = "3x3") -> ResNet:
    """ResNeXt-50 (32×4d): ResNet-50 with 32 groups of width 4 in the 3×3; 25,028,904 parameters."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, groups=32, width_per_group=4, stride_on=stride_on)


def wide_resnet50_2(num_classes: int = 1000, stride_on: str = "3x3") -> ResNet:
    """Wide ResNet-50-2 (torchvision): bottleneck inner width doubled; 68,883,240 parameters."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, width_per_group=128, stride_on=stride_on)


# --------------------------------------------------------------------------------------
# MobileNet v1 (Howard et al. 2017, Table 1)
# --------------------------------------------------------------------------------------

#: (output channels, stride) of each depthwise-separable block of MobileNet v1.
_MOBILENET_V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                        (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


def _conv_bn_relu(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1,
                  act: Callable[[], nn.Module] = lambda: nn.ReLU(inplace=True)) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride=stride, padding=(k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), act())


class MobileNetV1(nn.Module):
    """MobileNet v1: a 3×3/2 standard convolution, 13 depthwise-separable blocks
    (3×3 depthwise → BN → ReLU → 1×1 pointwise → BN → ReLU), global average pool, FC.

    ``width_mult`` is the paper's α (channels ``int(c·α)``); ``features[0]`` is the first
    convolution, ``features[i]`` for ``i ≥ 1`` a block ``Sequential(dw, bn, relu, pw, bn, relu)``.
    """

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0) -> None:
        super().__init__()
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        c = int(32 * width_mult)
        layers: list[nn.Module] = [_conv_bn_relu(3, c, 3, stride=2)]
        for out, s in _MOBILENET_V1_BLOCKS:
            o = int(out * width_mult)
            layers.append(nn.Sequential(
                nn.Conv2d(c, c, 3, stride=s, padding=1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                nn.Conv2d(c, o, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
            ))
            c = o
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def mobilenet_v1(num_classes: int = 1000, width_mult: float = 1.0) -> MobileNetV1:
    """MobileNet v1 (1.0, 224): 4,231,976 parameters with BN and a 1000-class FC."""
    return MobileNetV1(num_classes, width_mult)


# --------------------------------------------------------------------------------------
# MobileNet v2 (torchvision.models.mobilenetv2, same structure)
# --------------------------------------------------------------------------------------


def _make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class InvertedResidual(nn.Module):
    """1×1 expand (×t, omitted when t = 1) → 3×3 depthwise → 1×1 linear projection, with
    an identity shortcut when stride is 1 and the channel count is unchanged."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        stride = as_int(stride, "stride", 1)  # one int for both axes (convbook.conventions)
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu(inp, hidden, 1, act=lambda: nn.ReLU6(inplace=True)))
        layers += [
            _conv_bn_relu(hidden, hidden, 3, stride=stride, groups=hidden, act=lambda: nn.ReLU6(inplace=True)),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


#: (t expansion, c channels, n repeats, s stride) — Sandler et al. 2018, Table 2.
_MOBILENET_V2_SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
                         [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]


class MobileNetV2(nn.Module):
    """MobileNet v2 as torchvision builds it: 3×3/2 stem, 17 inverted residuals, 1×1 to
    1280, average pool, dropout, FC."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        c_in = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [_conv_bn_relu(3, c_in, 3, stride=2, act=lambda: nn.ReLU6(inplace=True))]
        for t, c, n, s in _MOBILENET_V2_SETTING:
            c_out = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(c_in, c_out, s if i == 0 else 1, t))
                c_in = c_out
        features.append(_conv_bn_relu(c_in, self.last_channel, 1, act=lambda: nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0) -> MobileNetV2:
    """MobileNet v2 (1.0): 3,504,872 parameters."""
    return MobileNetV2(num_classes, width_mult)


# --------------------------------------------------------------------------------------
# VGG-16 (configuration D, no batch norm — torchvision.models.vgg16)
# --------------------------------------------------------------------------------------

_VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(nn.Module):
    """VGG: 3×3 convolutions (bias, ReLU; optional BN), 2×2 max-pools, a 7×7 adaptive
    average pool and three FC layers (25088→4096→4096→classes)."""

    def __init__(self, cfg: Sequence[int | str] = tuple(_VGG16_CFG), num_classes: int = 1000, batch_norm: bool = False,
                 dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers.append(nn.Conv2d(c, int(v), 3, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(int(v)))
                layers.append(nn.ReLU(inplace=True))
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(c * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg16(num_classes: int = 1000) -> VGG:
    """VGG-16 (configuration D, no BN): 138,357,544 parameters."""
    return VGG(_VGG16_CFG, num_classes)


# --------------------------------------------------------------------------------------
# Registry and helpers
# --------------------------------------------------------------------------------------

MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
    "resnext50_32x4d": resnext50_32x4d,
    "wide_resnet50_2": wide_resnet50_2,
    "mobilenet_v1": mobilenet_v1,
    "mobilenet_v2": mobilenet_v2,
    "vgg16": vgg16,
}

#: Published parameter counts from torchvision's model documentation. MobileNet v1 is not in
#: torchvision and has no published exact count (the paper prints "4.2 M"), so it is not listed:
#: chapter 4 checks its count against the paper's rounded figure instead.
TORCHVISION_PARAMS: dict[str, int] = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "wide_resnet50_2": 68_883_240,
    "mobilenet_v2": 3_504_872,
    "vgg16": 138_357_544,
}


def build(name: str, device: str | torch.device = "meta", **kwargs) -> nn.Module:
    """Build model ``name`` (a key of :data:`MODELS`) on ``device``; "meta" (default)
    allocates nothing and is instant even for VGG-16 — enough for counting and tracing."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    with torch.device(device):
        return MODELS[name](**kwargs)


def count_params(model: nn.Module) -> int:
    """``sum(p.numel() for p in model.parameters())`` — works on meta-device models."""
    return sum(p.numel() for p in model.parameters())


def conv_shapes(model: nn.Module, input_shape: Sequence[int] = (1, 3, 224, 224)) -> list[dict]:
    """Every ``nn.Conv2d`` call of ``model`` in execution order, with the input it sees.

    A view of :func:`convbook.graph.trace` (one run on meta tensors of a copy; the model is not
    modified; any model that runs, including ones ``torch.fx`` cannot trace; a conv called k
    times gives k rows). Returns dicts with keys ``name``, ``in_channels``, ``out_channels``,
    ``kernel_size``, ``stride``, ``padding`` (a tuple, or the string ``'same'``/``'valid'``),
    ``dilation``, ``groups``, ``bias``, ``input_size`` (H, W) and ``output_size`` (H, W).
    Rules (``ValueError``): ``input_shape`` is ``(N, C, H, W)``.
    """
    if len(input_shape) != 4:
        raise ValueError(f"input_shape must be (N, C, H, W), got {tuple(input_shape)}")
    from .graph import trace

    rows: list[dict] = []
    for c in trace(model, input_shape).calls:
        mod = c.module
        if not isinstance(mod, nn.Conv2d):
            continue
        rows.append(dict(name=c.name, in_channels=mod.in_channels, out_channels=mod.out_channels,
                         kernel_size=tuple(mod.kernel_size), stride=tuple(mod.stride),
                         padding=mod.padding if isinstance(mod.padding, str) else tuple(mod.padding),
                         dilation=tuple(mod.dilation), groups=mod.groups, bias=mod.bias is not None,
                         input_size=tuple(c.input_shape[2:]), output_size=tuple(c.output_shape[2:])))
    return rows


def resnet50_conv_shapes(stride_on: str = "3x3") -> list[dict]:
    """The 53 convolutions of ResNet-50 at 224×224 (see :func:`conv_shapes`)."""
    return conv_shapes(build("resnet50", stride_on=stride_on))


# --------------------------------------------------------------------------------------
# Private helpers
# --------------------------------------------------------------------------------------


def _check_stride_on(stride_on: str) -> None:
    if stride_on not in ("3x3", "1x1"):
        raise ValueError(f"stride_on must be '3x3' (torchvision v1.5) or '1x1' (He et al. 2016), got {stride_on!r}")


def _on_meta(model: nn.Module) -> bool:
    tensors = list(model.parameters()) + list(model.buffers())
    return bool(tensors) and all(t.is_meta for t in tensors)


def _meta_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).to("meta")
