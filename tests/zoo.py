"""A zoo of public architectures at small width, written from the papers' descriptions (no downloads).

Each entry of :data:`ZOO` is ``name -> (factory, input_shape, field_input_shape)``: the factory
builds the model, ``input_shape`` is the small input the review and the float64 checks use,
``field_input_shape`` an input large enough that a central output unit's receptive field is not
clipped by the border (used for the autograd measurement).  Every model runs in eval mode on CPU
in a few milliseconds.  The structure follows the reference implementations (torchvision, timm,
pix2pix/CycleGAN, the R2U-Net and CRNN papers); only widths and depths are reduced.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c)


def conv_bn_act(c_in: int, c_out: int, k: int = 3, s: int = 1, groups: int = 1, act: type | None = nn.ReLU,
                dilation: int = 1) -> nn.Sequential:
    """conv (no bias) → BN → activation, 'same' padding for odd k."""
    layers = [nn.Conv2d(c_in, c_out, k, s, dilation * (k // 2), dilation=dilation, groups=groups, bias=False),
              nn.BatchNorm2d(c_out)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


# ============================================================================ ConvNeXt
class LayerNorm2d(nn.Module):
    """ConvNeXt's channels-first LayerNorm: mean and variance over the channel axis only."""

    def __init__(self, c: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNeXtBlock(nn.Module):
    """dw 7×7 → permute to channels-last → LayerNorm → Linear 4c → GELU → Linear c → γ → permute → drop-path → +x."""

    def __init__(self, c: int, layer_scale: float = 1e-1):
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pwconv1 = nn.Linear(c, 4 * c)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(layer_scale * torch.ones(c))
        self.drop_path = nn.Identity()  # stochastic depth is the identity in eval mode

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        y = (self.gamma * y).permute(0, 3, 1, 2)
        return x + self.drop_path(y)


class ConvNeXt(nn.Module):
    def __init__(self, dims=(8, 16), classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), LayerNorm2d(dims[0]))
        self.stage1 = nn.Sequential(ConvNeXtBlock(dims[0]), ConvNeXtBlock(dims[0]))
        self.down = nn.Sequential(LayerNorm2d(dims[0]), nn.Conv2d(dims[0], dims[1], 2, stride=2))
        self.stage2 = ConvNeXtBlock(dims[1])
        self.norm = nn.LayerNorm(dims[1])
        self.head = nn.Linear(dims[1], classes)

    def forward(self, x):
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(self.norm(x.mean([-2, -1])))


# ============================================================================ MobileNetV3
class SqueezeExcite(nn.Module):
    """SE: global average → 1×1 reduce → act → 1×1 expand → gate (hardsigmoid or sigmoid) → scale."""

    def __init__(self, c: int, squeeze: int, act=nn.ReLU, gate=nn.Hardsigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.act = act()
        self.fc2 = nn.Conv2d(squeeze, c, 1)
        self.gate = gate()

    def forward(self, x):
        return x * self.gate(self.fc2(self.act(self.fc1(self.avgpool(x)))))


class MBv3Block(nn.Module):
    def __init__(self, c_in: int, exp: int, c_out: int, k: int, se: bool, act, stride: int):
        super().__init__()
        layers = []
        if exp != c_in:
            layers.append(conv_bn_act(c_in, exp, 1, act=act))
        layers.append(conv_bn_act(exp, exp, k, stride, groups=exp, act=act))
        if se:
            layers.append(SqueezeExcite(exp, max(8, exp // 4)))
        layers.append(conv_bn_act(exp, c_out, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.use_res = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_res else y


class MobileNetV3(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_act(3, 16, 3, 2, act=nn.Hardswish),
            MBv3Block(16, 16, 16, 3, True, nn.ReLU, 2),
            MBv3Block(16, 48, 24, 3, False, nn.ReLU, 2),
            MBv3Block(24, 64, 24, 5, True, nn.Hardswish, 1),
            conv_bn_act(24, 96, 1, act=nn.Hardswish))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(96, 64), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(64, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ============================================================================ EfficientNet-B0 stage
class MBConv(nn.Module):
    """Expand 1×1 → depthwise k×k → SE (SiLU, sigmoid) → project 1×1; stochastic depth (identity in eval) + skip."""

    def __init__(self, c_in: int, c_out: int, expand: int, k: int, stride: int):
        super().__init__()
        h = c_in * expand
        self.expand = conv_bn_act(c_in, h, 1, act=nn.SiLU) if expand != 1 else nn.Identity()
        self.dw = conv_bn_act(h, h, k, stride, groups=h, act=nn.SiLU)
        self.se = SqueezeExcite(h, max(1, c_in // 4), act=nn.SiLU, gate=nn.Sigmoid)
        self.project = conv_bn_act(h, c_out, 1, act=None)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.project(self.se(self.dw(self.expand(x))))
        if self.skip:
            y = y + x  # StochasticDepth(p, "row") is the identity in eval mode
        return y


class EfficientNetStage(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = conv_bn_act(3, 16, 3, 2, act=nn.SiLU)
        self.blocks = nn.Sequential(MBConv(16, 8, 1, 3, 1), MBConv(8, 12, 6, 3, 2), MBConv(12, 12, 6, 3, 1),
                                    MBConv(12, 20, 6, 5, 2))
        self.head = conv_bn_act(20, 64, 1, act=nn.SiLU)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.pool(self.head(self.blocks(self.stem(x))))
        return self.fc(F.dropout(x.flatten(1), 0.2, self.training))


# ============================================================================ RegNetY
class RegNetYBlock(nn.Module):
    """1×1 → grouped 3×3 (group width g) → SE → 1×1, projection shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, group_width: int = 8):
        super().__init__()
        self.a = conv_bn_act(c_in, c_out, 1)
        self.b = conv_bn_act(c_out, c_out, 3, stride, groups=c_out // group_width)
        self.se = SqueezeExcite(c_out, max(1, c_in // 4), gate=nn.Sigmoid)
        self.c = conv_bn_act(c_out, c_out, 1, act=None)
        self.proj = conv_bn_act(c_in, c_out, 1, stride, act=None) if stride != 1 or c_in != c_out else None
        self.relu = nn.ReLU()

    def forward(self, x):
        short = x if self.proj is None else self.proj(x)
        return self.relu(short + self.c(self.se(self.b(self.a(x)))))


class RegNetY(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = conv_bn_act(3, 16, 3, 2)
        self.s1 = nn.Sequential(RegNetYBlock(16, 16, 2), RegNetYBlock(16, 16, 1))
        self.s2 = RegNetYBlock(16, 32, 2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(32, classes))

    def forward(self, x):
        return self.head(self.s2(self.s1(self.stem(x))))


# ============================================================================ ShuffleNetV2
def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(n, -1, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.stride = stride
        b = c_out // 2
        if stride > 1:
            self.branch1 = nn.Sequential(conv_bn_act(c_in, c_in, 3, stride, groups=c_in, act=None),
                                         conv_bn_act(c_in, b, 1))
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(conv_bn_act(c_in if stride > 1 else b, b, 1),
                                     conv_bn_act(b, b, 3, stride, groups=b, act=None), conv_bn_act(b, b, 1))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = conv_bn_act(3, 8, 3, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.stage2 = nn.Sequential(ShuffleUnit(8, 16, 2), ShuffleUnit(16, 16, 1))
        self.conv5 = conv_bn_act(16, 32, 1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = self.conv5(self.stage2(self.maxpool(self.conv1(x))))
        return self.fc(x.mean([2, 3]))


# ============================================================================ SqueezeNet 1.1
class Fire(nn.Module):
    def __init__(self, c_in: int, s: int, e1: int, e3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(c_in, s, 1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(s, e1, 1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(s, e3, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


class SqueezeNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(16, 4, 8, 8), Fire(16, 4, 8, 8), nn.MaxPool2d(3, 2, ceil_mode=True), Fire(16, 8, 16, 16))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(32, classes, 1), nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d((1, 1)))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


# ============================================================================ DenseNet
class DenseLayer(nn.Module):
    """BN → ReLU → 1×1 (bottleneck) → BN → ReLU → 3×3 growth; input is the concatenation of all earlier maps."""

    def __init__(self, c_in: int, growth: int, bn_size: int = 2):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(c_in)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(c_in, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features):
        x = torch.cat(features, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock(nn.ModuleDict):
    def __init__(self, n: int, c_in: int, growth: int):
        super().__init__()
        for i in range(n):
            self.add_module(f"denselayer{i + 1}", DenseLayer(c_in + i * growth, growth))

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 7, 2, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
            DenseBlock(3, 16, 8),
            nn.Sequential(nn.BatchNorm2d(40), nn.ReLU(inplace=True), nn.Conv2d(40, 20, 1, bias=False),
                          nn.AvgPool2d(2, 2)),
            DenseBlock(2, 20, 8), nn.BatchNorm2d(36))
        self.classifier = nn.Linear(36, classes)

    def forward(self, x):
        f = F.relu(self.features(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(f, (1, 1)), 1))


# ============================================================================ Res2Net
class Bottle2neck(nn.Module):
    """1×1 → split into s groups of width w → y_i = K_i(x_i + y_{i-1}) (3×3) → concat (last group kept) → 1×1."""

    def __init__(self, c_in: int, planes: int, width: int = 4, scale: int = 4, stride: int = 1):
        super().__init__()
        self.width, self.scale, self.stride = width, scale, stride
        self.conv1 = nn.Conv2d(c_in, width * scale, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.convs = nn.ModuleList([nn.Conv2d(width, width, 3, stride, 1, bias=False) for _ in range(scale - 1)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(width) for _ in range(scale - 1)])
        self.pool = nn.AvgPool2d(3, stride, 1) if stride > 1 else None
        self.conv3 = nn.Conv2d(width * scale, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(nn.Conv2d(c_in, planes * 4, 1, stride, bias=False),
                                        nn.BatchNorm2d(planes * 4)) if stride != 1 or c_in != planes * 4 else None

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        spx = torch.split(out, self.width, 1)
        outs = []
        for i in range(self.scale - 1):
            sp = spx[i] if i == 0 or self.stride > 1 else sp + spx[i]
            sp = self.relu(self.bns[i](self.convs[i](sp)))
            outs.append(sp)
        outs.append(spx[self.scale - 1] if self.pool is None else self.pool(spx[self.scale - 1]))
        out = self.bn3(self.conv3(torch.cat(outs, 1)))
        short = x if self.downsample is None else self.downsample(x)
        return self.relu(out + short)


class Res2Net(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(conv_bn_act(3, 16, 3, 2), nn.MaxPool2d(3, 2, 1))
        self.layer1 = nn.Sequential(Bottle2neck(16, 8), Bottle2neck(32, 8))
        self.layer2 = Bottle2neck(32, 8, stride=2)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# ============================================================================ GhostNet
class GhostModule(nn.Module):
    """Primary 1×1 conv to m channels, cheap depthwise 3×3 makes the 'ghost' maps, concat, keep the first oup."""

    def __init__(self, c_in: int, oup: int, ratio: int = 2, relu: bool = True):
        super().__init__()
        self.oup = oup
        init = -(-oup // ratio)
        act = nn.ReLU if relu else nn.Identity
        self.primary_conv = nn.Sequential(nn.Conv2d(c_in, init, 1, bias=False), nn.BatchNorm2d(init), act())
        self.cheap_operation = nn.Sequential(nn.Conv2d(init, init * (ratio - 1), 3, 1, 1, groups=init, bias=False),
                                             nn.BatchNorm2d(init * (ratio - 1)), act())

    def forward(self, x):
        x1 = self.primary_conv(x)
        x2 = self.cheap_operation(x1)
        return torch.cat([x1, x2], dim=1)[:, :self.oup, :, :]


class GhostBottleneck(nn.Module):
    def __init__(self, c_in: int, mid: int, c_out: int, stride: int = 1, se: bool = False):
        super().__init__()
        self.ghost1 = GhostModule(c_in, mid)
        self.conv_dw = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False) if stride > 1 else None
        self.bn_dw = nn.BatchNorm2d(mid) if stride > 1 else None
        self.se = SqueezeExcite(mid, max(4, mid // 4)) if se else None
        self.ghost2 = GhostModule(mid, c_out, relu=False)
        self.shortcut = nn.Sequential() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False), nn.BatchNorm2d(c_in),
            nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = self.ghost1(x)
        if self.conv_dw is not None:
            y = self.bn_dw(self.conv_dw(y))
        if self.se is not None:
            y = self.se(y)
        return self.ghost2(y) + self.shortcut(x)


class GhostNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv_stem = conv_bn_act(3, 8, 3, 2)
        self.blocks = nn.Sequential(GhostBottleneck(8, 8, 8), GhostBottleneck(8, 24, 12, 2),
                                    GhostBottleneck(12, 36, 12, 1, se=True))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(12, 32, 1)
        self.classifier = nn.Linear(32, classes)

    def forward(self, x):
        x = F.relu(self.conv_head(self.global_pool(self.blocks(self.conv_stem(x)))))
        return self.classifier(x.view(x.size(0), -1))


# ============================================================================ DeepLabV3+
class ASPPPooling(nn.Sequential):
    def __init__(self, c_in: int, c: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c_in, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())

    def forward(self, x):
        size = x.shape[-2:]
        for mod in self:
            x = mod(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    def __init__(self, c_in: int, c: int, rates=(2, 3)):
        super().__init__()
        mods = [conv_bn_act(c_in, c, 1)] + [conv_bn_act(c_in, c, 3, dilation=r) for r in rates]
        mods.append(ASPPPooling(c_in, c))
        self.convs = nn.ModuleList(mods)
        self.project = nn.Sequential(nn.Conv2d(len(mods) * c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                                     nn.Dropout(0.5))

    def forward(self, x):
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class DeepLabV3Plus(nn.Module):
    """Backbone (stride 8 with a dilated last stage), ASPP with image pooling, decoder fusing stride-2 features."""

    def __init__(self, classes: int = 3, with_image_pool: bool = True):
        super().__init__()
        self.low = nn.Sequential(conv_bn_act(3, 8, 3, 2), conv_bn_act(8, 8, 3))
        self.high = nn.Sequential(conv_bn_act(8, 16, 3, 2), conv_bn_act(16, 16, 3, 2),
                                  conv_bn_act(16, 16, 3, dilation=2))
        self.aspp = ASPP(16, 8)
        if not with_image_pool:
            self.aspp.convs = self.aspp.convs[:-1]
            self.aspp.project[0] = nn.Conv2d(24, 8, 1, bias=False)
        self.low_proj = conv_bn_act(8, 4, 1)
        self.decoder = nn.Sequential(conv_bn_act(12, 8, 3), nn.Conv2d(8, classes, 1))

    def forward(self, x):
        size = x.shape[-2:]
        low = self.low(x)
        y = self.aspp(self.high(low))
        y = F.interpolate(y, size=low.shape[-2:], mode="bilinear", align_corners=False)
        y = self.decoder(torch.cat([y, self.low_proj(low)], dim=1))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


# ============================================================================ HRNet fusion
class BasicBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class HRNetTwoBranch(nn.Module):
    """Two parallel resolutions exchanging information: low→high by 1×1 conv + BN + nearest upsampling,
    high→low by a strided 3×3 conv + BN; sums, ReLU; the head upsamples and concatenates both."""

    def __init__(self, c: int = 8, classes: int = 4):
        super().__init__()
        self.stem = nn.Sequential(conv_bn_act(3, c, 3, 2), conv_bn_act(c, c, 3))
        self.transition = conv_bn_act(c, 2 * c, 3, 2)
        self.branch_hi, self.branch_lo = BasicBlock(c), BasicBlock(2 * c)
        self.lo_to_hi = nn.Sequential(nn.Conv2d(2 * c, c, 1, bias=False), nn.BatchNorm2d(c),
                                      nn.Upsample(scale_factor=2, mode="nearest"))
        self.hi_to_lo = nn.Sequential(nn.Conv2d(c, 2 * c, 3, 2, 1, bias=False), nn.BatchNorm2d(2 * c))
        self.head = nn.Sequential(conv_bn_act(3 * c, c, 1), nn.Conv2d(c, classes, 1))

    def forward(self, x):
        hi = self.stem(x)
        lo = self.transition(hi)
        hi, lo = self.branch_hi(hi), self.branch_lo(lo)
        hi, lo = F.relu(hi + self.lo_to_hi(lo)), F.relu(lo + self.hi_to_lo(hi))
        up = F.interpolate(lo, size=hi.shape[2:], mode="bilinear", align_corners=False)
        return self.head(torch.cat([hi, up], 1))


# ============================================================================ YOLO neck (SPPF + FPN/PAN)
class ConvBNSiLU(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1):
        super().__init__(nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False), nn.BatchNorm2d(c_out), nn.SiLU())


class C3(nn.Module):
    """CSP bottleneck: two 1×1 paths, one through a residual 1×1→3×3, concatenated, fused by a 1×1."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        h = c_out // 2
        self.cv1, self.cv2, self.cv3 = ConvBNSiLU(c_in, h), ConvBNSiLU(c_in, h), ConvBNSiLU(2 * h, c_out)
        self.m = nn.Sequential(ConvBNSiLU(h, h), ConvBNSiLU(h, h, 3))

    def forward(self, x):
        a = self.cv1(x)
        return self.cv3(torch.cat((a + self.m(a), self.cv2(x)), 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained 5×5 stride-1 max pools, concatenated with their input."""

    def __init__(self, c_in: int, c_out: int, k: int = 5):
        super().__init__()
        h = c_in // 2
        self.cv1, self.cv2 = ConvBNSiLU(c_in, h), ConvBNSiLU(4 * h, c_out)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class YoloNeck(nn.Module):
    def __init__(self, c: int = 8, classes: int = 3):
        super().__init__()
        self.p3 = nn.Sequential(ConvBNSiLU(3, c, 3, 2), ConvBNSiLU(c, c, 3, 2), C3(c, c))
        self.p4 = nn.Sequential(ConvBNSiLU(c, 2 * c, 3, 2), C3(2 * c, 2 * c), SPPF(2 * c, 2 * c))
        self.lateral = ConvBNSiLU(2 * c, c)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse3 = C3(2 * c, c)
        self.down = ConvBNSiLU(c, c, 3, 2)
        self.fuse4 = C3(2 * c, 2 * c)
        self.detect = nn.ModuleList([nn.Conv2d(c, 3 * (5 + classes), 1), nn.Conv2d(2 * c, 3 * (5 + classes), 1)])

    def forward(self, x):
        p3 = self.p3(x)
        p4 = self.p4(p3)
        lat = self.lateral(p4)
        n3 = self.fuse3(torch.cat([self.up(lat), p3], 1))
        n4 = self.fuse4(torch.cat([self.down(n3), lat], 1))
        return [self.detect[0](n3), self.detect[1](n4)]


# ============================================================================ pix2pix U-Net generator
class UnetSkipConnectionBlock(nn.Module):
    """pix2pix: down (LeakyReLU → conv 4/2/1 → norm) → submodule → up (ReLU → convT 4/2/1 → norm [→ dropout]),
    output concatenated with the input (the skip); the outermost block ends with tanh."""

    def __init__(self, outer: int, inner: int, c_in: int | None = None, submodule=None, outermost=False,
                 innermost=False, use_dropout=False):
        super().__init__()
        self.outermost = outermost
        c_in = outer if c_in is None else c_in
        downconv = nn.Conv2d(c_in, inner, 4, 2, 1, bias=False)
        downrelu, downnorm = nn.LeakyReLU(0.2, True), nn.BatchNorm2d(inner)
        uprelu, upnorm = nn.ReLU(True), nn.BatchNorm2d(outer)
        if outermost:
            upconv = nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=False)
            model = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1, bias=False)
            model = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
            if use_dropout:
                model.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*model)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


def pix2pix_unet(ngf: int = 4) -> nn.Module:
    block = UnetSkipConnectionBlock(ngf * 4, ngf * 4, innermost=True)
    block = UnetSkipConnectionBlock(ngf * 4, ngf * 4, submodule=block, use_dropout=True)
    block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block)
    block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block)
    return UnetSkipConnectionBlock(3, ngf, c_in=3, submodule=block, outermost=True)


# ============================================================================ PatchGAN discriminators
def patchgan(ndf: int = 8, n_layers: int = 3, norm: str = "instance") -> nn.Sequential:
    """pix2pix NLayerDiscriminator (70×70 PatchGAN for n_layers=3): conv 4/2/1 stack, stride-1 last two.

    ``norm="instance"``: InstanceNorm (affine=False) and spectral norm on every conv (as in many GAN
    recipes); ``norm="batch"``: the pix2pix default with BatchNorm.
    """
    sn = nn.utils.parametrizations.spectral_norm if norm == "instance" else (lambda m: m)
    Norm = nn.InstanceNorm2d if norm == "instance" else nn.BatchNorm2d
    use_bias = norm == "instance"
    seq = [sn(nn.Conv2d(3, ndf, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
    mult = 1
    for n in range(1, n_layers):
        prev, mult = mult, min(2 ** n, 8)
        seq += [sn(nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=use_bias)), Norm(ndf * mult),
                nn.LeakyReLU(0.2, True)]
    prev, mult = mult, min(2 ** n_layers, 8)
    seq += [sn(nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=use_bias)), Norm(ndf * mult), nn.LeakyReLU(0.2, True)]
    seq += [sn(nn.Conv2d(ndf * mult, 1, 4, 1, 1))]
    return nn.Sequential(*seq)


# ============================================================================ CycleGAN ResNet generator
class ResnetBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv_block = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), nn.InstanceNorm2d(c), nn.ReLU(True),
                                        nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), nn.InstanceNorm2d(c))

    def forward(self, x):
        return x + self.conv_block(x)


def cyclegan_generator(ngf: int = 4, blocks: int = 2) -> nn.Sequential:
    """Reflection-padded 7×7, two stride-2 downsamplings, residual blocks, two transposed convs
    (3×3, stride 2, output_padding 1), reflection-padded 7×7 and tanh; InstanceNorm throughout."""
    seq = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True),
           nn.Conv2d(ngf, 2 * ngf, 3, 2, 1), nn.InstanceNorm2d(2 * ngf), nn.ReLU(True),
           nn.Conv2d(2 * ngf, 4 * ngf, 3, 2, 1), nn.InstanceNorm2d(4 * ngf), nn.ReLU(True)]
    seq += [ResnetBlock(4 * ngf) for _ in range(blocks)]
    seq += [nn.ConvTranspose2d(4 * ngf, 2 * ngf, 3, 2, 1, output_padding=1), nn.InstanceNorm2d(2 * ngf), nn.ReLU(True),
            nn.ConvTranspose2d(2 * ngf, ngf, 3, 2, 1, output_padding=1), nn.InstanceNorm2d(ngf), nn.ReLU(True),
            nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
    return nn.Sequential(*seq)


# ============================================================================ CRNN
class BidirectionalLSTM(nn.Module):
    def __init__(self, n_in: int, hidden: int, n_out: int):
        super().__init__()
        self.rnn = nn.LSTM(n_in, hidden, bidirectional=True)
        self.embedding = nn.Linear(hidden * 2, n_out)

    def forward(self, x):
        recurrent, _ = self.rnn(x)
        t, b, h = recurrent.size()
        out = self.embedding(recurrent.view(t * b, h))
        return out.view(t, b, -1)


class CRNN(nn.Module):
    """Conv features (height pooled to 1 by (2,1)-strided pools) read as a sequence (T, N, C) by two BiLSTMs."""

    def __init__(self, classes: int = 11, c: int = 8):
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv2d(1, c, 3, 1, 1), nn.ReLU(True), nn.MaxPool2d(2, 2),
            nn.Conv2d(c, 2 * c, 3, 1, 1), nn.ReLU(True), nn.MaxPool2d(2, 2),
            nn.Conv2d(2 * c, 2 * c, 3, 1, 1, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU(True),
            nn.MaxPool2d((2, 2), (2, 1), (0, 1)),
            nn.Conv2d(2 * c, 2 * c, 2, 1, 0, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU(True))
        self.rnn = nn.Sequential(BidirectionalLSTM(2 * c, 8, 8), BidirectionalLSTM(8, 8, classes))

    def forward(self, x):
        conv = self.cnn(x)
        assert conv.size(2) == 1, "the height must be pooled to 1"
        conv = conv.squeeze(2).permute(2, 0, 1)  # (T, N, C)
        return F.log_softmax(self.rnn(conv), dim=2)


# ============================================================================ R2U-Net
class RecurrentBlock(nn.Module):
    """One conv (+BN+ReLU) applied t+1 times: x1 = f(x); x1 = f(x + x1) t times."""

    def __init__(self, c: int, t: int = 2):
        super().__init__()
        self.t = t
        self.conv = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True))

    def forward(self, x):
        for i in range(self.t):
            if i == 0:
                x1 = self.conv(x)
            x1 = self.conv(x + x1)
        return x1


class RRCNNBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, t: int = 2):
        super().__init__()
        self.RCNN = nn.Sequential(RecurrentBlock(c_out, t), RecurrentBlock(c_out, t))
        self.Conv_1x1 = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x):
        x = self.Conv_1x1(x)
        return x + self.RCNN(x)


class R2UNet(nn.Module):
    def __init__(self, c: int = 4, classes: int = 2):
        super().__init__()
        self.Maxpool = nn.MaxPool2d(2, 2)
        self.RRCNN1, self.RRCNN2 = RRCNNBlock(3, c), RRCNNBlock(c, 2 * c)
        self.Up2 = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2 * c, c, 3, 1, 1), nn.BatchNorm2d(c),
                                 nn.ReLU(inplace=True))
        self.Up_RRCNN2 = RRCNNBlock(2 * c, c)
        self.Conv_1x1 = nn.Conv2d(c, classes, 1)

    def forward(self, x):
        x1 = self.RRCNN1(x)
        x2 = self.RRCNN2(self.Maxpool(x1))
        d2 = self.Up_RRCNN2(torch.cat((x1, self.Up2(x2)), dim=1))
        return self.Conv_1x1(d2)


# ============================================================================ ViT
class Attention(nn.Module):
    def __init__(self, dim: int, heads: int = 2):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x)


class ViTBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Patch embedding (conv, kernel = stride = patch), class token, learned position embedding, one block."""

    def __init__(self, img: int = 16, patch: int = 4, dim: int = 16, classes: int = 10):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, (img // patch) ** 2 + 1, dim))
        self.block = ViTBlock(dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        return self.head(self.norm(self.block(x))[:, 0])


# ============================================================================ CBAM
class ChannelAttention(nn.Module):
    def __init__(self, c: int, r: int = 4):
        super().__init__()
        self.avg_pool, self.max_pool = nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Sequential(nn.Conv2d(c, c // r, 1, bias=False), nn.ReLU(), nn.Conv2d(c // r, c, 1, bias=False))

    def forward(self, x):
        return torch.sigmoid(self.fc(self.avg_pool(x)) + self.fc(self.max_pool(x)))  # one MLP called twice


class SpatialAttention(nn.Module):
    def __init__(self, k: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, k, padding=k // 2, bias=False)

    def forward(self, x):
        avg = torch.mean(x, dim=1, keepdim=True)
        mx, _ = torch.max(x, dim=1, keepdim=True)
        return torch.sigmoid(self.conv(torch.cat([avg, mx], dim=1)))


class CBAMBlock(nn.Module):
    """ResNet basic block with CBAM (channel attention then spatial attention) before the residual add."""

    def __init__(self, c: int, spatial_only: bool = False):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.ca = None if spatial_only else ChannelAttention(c)
        self.sa = SpatialAttention()

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.ca is not None:
            out = self.ca(out) * out
        out = self.sa(out) * out
        return F.relu(out + x)


class CBAMNet(nn.Module):
    def __init__(self, spatial_only: bool = False):
        super().__init__()
        self.stem = conv_bn_act(3, 8, 3)
        self.block = CBAMBlock(8, spatial_only)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.out(self.block(self.stem(x)))


# ============================================================================ Inception-v3
class BasicConv2d(nn.Module):
    def __init__(self, c_in: int, c_out: int, **kw):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, bias=False, **kw)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class InceptionC(nn.Module):
    """17×17 module of Inception-v3: factorised 7×7 as 1×7 and 7×1, an average-pool branch."""

    def __init__(self, c_in: int, c7: int, c_out: int = 8):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, c_out, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, c_out, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c_out, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c_in, c_out, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_3(self.branch7x7dbl_2(self.branch7x7dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction: stride-2 3×3 branches and a stride-2 max pool, concatenated."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 8, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 4, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(4, 8, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(8, 8, kernel_size=3, stride=2)
        self.pool = nn.MaxPool2d(3, 2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.pool(x)], 1)


class InceptionV3(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 8, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(8, 8, kernel_size=3)
        self.Mixed_6a = InceptionB(8)
        self.Mixed_6b = InceptionC(24, 4)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = self.Mixed_6b(self.Mixed_6a(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))))
        x = F.adaptive_avg_pool2d(x, (1, 1))
        return self.fc(torch.flatten(F.dropout(x, training=self.training), 1))


# ============================================================================ TCN (Conv1d)
class TemporalBlock(nn.Module):
    """Bai et al. TCN: two dilated causal Conv1d (pad both sides, chomp the right), residual with a 1×1 projection."""

    def __init__(self, c_in: int, c_out: int, k: int, dilation: int):
        super().__init__()
        pad = (k - 1) * dilation
        self.chomp = pad
        self.conv1 = nn.Conv1d(c_in, c_out, k, padding=pad, dilation=dilation)
        self.conv2 = nn.Conv1d(c_out, c_out, k, padding=pad, dilation=dilation)
        self.dropout = nn.Dropout(0.1)
        self.downsample = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x):
        y = self.dropout(F.relu(self.conv1(x)[:, :, :-self.chomp].contiguous()))
        y = self.dropout(F.relu(self.conv2(y)[:, :, :-self.chomp].contiguous()))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class TCN(nn.Module):
    def __init__(self, c_in: int = 2, classes: int = 5):
        super().__init__()
        self.network = nn.Sequential(TemporalBlock(c_in, 8, 3, 1), TemporalBlock(8, 8, 3, 2),
                                     TemporalBlock(8, 8, 3, 4))
        self.bn = nn.BatchNorm1d(8)
        self.linear = nn.Conv1d(8, classes, 1)

    def forward(self, x):
        return self.linear(self.bn(self.network(x)))


# ============================================================================ R(2+1)D (Conv3d)
class R2Plus1dBlock(nn.Module):
    """A 3×3×3 conv factorised as (1,3,3) spatial then (3,1,1) temporal, with BN3d, ReLU and a residual."""

    def __init__(self, c: int, mid: int):
        super().__init__()
        self.spatial = nn.Conv3d(c, mid, (1, 3, 3), padding=(0, 1, 1), bias=False)
        self.bn1 = nn.BatchNorm3d(mid)
        self.temporal = nn.Conv3d(mid, c, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.bn2 = nn.BatchNorm3d(c)

    def forward(self, x):
        return F.relu(x + self.bn2(self.temporal(F.relu(self.bn1(self.spatial(x))))))


class R2Plus1d(nn.Module):
    def __init__(self, classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, 8, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False), nn.BatchNorm3d(8),
                                  nn.ReLU(inplace=True))
        self.block = R2Plus1dBlock(8, 12)
        self.pool = nn.MaxPool3d((1, 2, 2))
        self.block2 = R2Plus1dBlock(8, 12)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        x = self.block2(self.pool(self.block(self.stem(x))))
        return self.fc(self.avgpool(x).flatten(1))


# ============================================================================ library-style variants
class Permute(nn.Module):
    """torchvision.ops.misc.Permute: a module that permutes the axes."""

    def __init__(self, dims):
        super().__init__()
        self.dims = list(dims)

    def forward(self, x):
        return torch.permute(x, self.dims)


class LayerNormChannels(nn.LayerNorm):
    """torchvision's/timm's LayerNorm2d: a LayerNorm subclass that normalises over channels of an NCHW map."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class CNBlock(nn.Module):
    """torchvision ConvNeXt block: layer scale of shape (C, 1, 1) multiplying the whole branch."""

    def __init__(self, dim: int, layer_scale: float = 1e-1):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(dim, dim, 7, padding=3, groups=dim), Permute([0, 2, 3, 1]),
                                   nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 4 * dim), nn.GELU(),
                                   nn.Linear(4 * dim, dim), Permute([0, 3, 1, 2]))
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)

    def forward(self, x):
        return x + self.layer_scale * self.block(x)  # StochasticDepth is the identity in eval mode


class ConvNeXtTV(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 4, 4), LayerNormChannels(8, eps=1e-6)), CNBlock(8),
            nn.Sequential(LayerNormChannels(8, eps=1e-6), nn.Conv2d(8, 16, 2, 2)), CNBlock(16))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(LayerNormChannels(16, eps=1e-6), nn.Flatten(1), nn.Linear(16, classes))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


class Conv2dSame(nn.Conv2d):
    """timm's Conv2dSame: TensorFlow 'SAME' padding computed from the input size (asymmetric when odd)."""

    def forward(self, x):
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((-(-ih // sh) - 1) * sh + (kh - 1) * self.dilation[0] + 1 - ih, 0)
        pw = max((-(-iw // sw) - 1) * sw + (kw - 1) * self.dilation[1] + 1 - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class BatchNormAct2d(nn.BatchNorm2d):
    """timm's BatchNormAct2d: batch norm and its activation in one module."""

    def __init__(self, c: int, act=nn.SiLU):
        super().__init__(c)
        self.act = act()

    def forward(self, x):
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return self.act(x)


class SqueezeExciteTimm(nn.Module):
    def __init__(self, c: int, rd: int):
        super().__init__()
        self.conv_reduce, self.act1 = nn.Conv2d(c, rd, 1), nn.SiLU()
        self.conv_expand, self.gate = nn.Conv2d(rd, c, 1), nn.Sigmoid()

    def forward(self, x):
        x_se = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.conv_expand(self.act1(self.conv_reduce(x_se))))


class InvertedResidualTimm(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, k: int = 3, expand: int = 4):
        super().__init__()
        h = c_in * expand
        self.conv_pw, self.bn1 = nn.Conv2d(c_in, h, 1, bias=False), BatchNormAct2d(h)
        conv = Conv2dSame if stride > 1 else nn.Conv2d
        self.conv_dw = conv(h, h, k, stride, 0 if stride > 1 else k // 2, groups=h, bias=False)
        self.bn2 = BatchNormAct2d(h)
        self.se = SqueezeExciteTimm(h, max(1, c_in // 4))
        self.conv_pwl, self.bn3 = nn.Conv2d(h, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
        self.has_skip = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.bn3(self.conv_pwl(self.se(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x)))))))
        return y + x if self.has_skip else y


class EfficientNetTimm(nn.Module):
    """timm-style EfficientNet (TF 'SAME' padding port): Conv2dSame, BatchNormAct2d, SE on a mean."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv_stem, self.bn1 = Conv2dSame(3, 16, 3, 2, bias=False), BatchNormAct2d(16)
        self.blocks = nn.Sequential(InvertedResidualTimm(16, 16, 1), InvertedResidualTimm(16, 24, 2, 5),
                                    InvertedResidualTimm(24, 24, 1))
        self.conv_head, self.bn2 = nn.Conv2d(24, 64, 1, bias=False), BatchNormAct2d(64)
        self.classifier = nn.Linear(64, classes)

    def forward(self, x):
        x = self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))
        return self.classifier(x.mean((2, 3)))


class SNResBlockDown(nn.Module):
    """SNGAN discriminator block (hook-based spectral_norm): ReLU → conv → ReLU → conv → avg-pool, 1×1 shortcut."""

    def __init__(self, c_in: int, c_out: int, first: bool = False):
        super().__init__()
        sn = nn.utils.spectral_norm
        self.first = first
        self.c1, self.c2 = sn(nn.Conv2d(c_in, c_out, 3, 1, 1)), sn(nn.Conv2d(c_out, c_out, 3, 1, 1))
        self.c_sc = sn(nn.Conv2d(c_in, c_out, 1))

    def forward(self, x):
        h = x if self.first else F.relu(x)
        h = F.avg_pool2d(self.c2(F.relu(self.c1(h))), 2)
        s = F.avg_pool2d(x, 2) if self.first else x
        s = self.c_sc(s)
        return h + (s if self.first else F.avg_pool2d(s, 2))


class SNGANDiscriminator(nn.Module):
    def __init__(self, c: int = 8):
        super().__init__()
        self.blocks = nn.Sequential(SNResBlockDown(3, c, first=True), SNResBlockDown(c, 2 * c))
        self.l5 = nn.utils.spectral_norm(nn.Linear(2 * c, 1))

    def forward(self, x):
        h = F.relu(self.blocks(x))
        return self.l5(torch.sum(h, dim=(2, 3)))


class DoubleConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, mid: int | None = None):
        mid = mid or c_out
        super().__init__(nn.Conv2d(c_in, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                         nn.Conv2d(mid, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Up(nn.Module):
    """milesial U-Net: upsample (bilinear, align_corners=True, or a transposed conv), pad to the skip, concat."""

    def __init__(self, c_in: int, c_out: int, bilinear: bool):
        super().__init__()
        if bilinear:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            self.conv = DoubleConv(c_in, c_out, c_in // 2)
        else:
            self.up = nn.ConvTranspose2d(c_in, c_in // 2, 2, 2)
            self.conv = DoubleConv(c_in, c_out)

    def forward(self, x1, x2):
        x1 = self.up(x1)
        dy, dx = x2.size()[2] - x1.size()[2], x2.size()[3] - x1.size()[3]
        x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([x2, x1], dim=1))


class UNetMilesial(nn.Module):
    def __init__(self, c: int = 4, classes: int = 2, bilinear: bool = False):
        super().__init__()
        f = 2 if bilinear else 1
        self.inc = DoubleConv(3, c)
        self.down1 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(c, 2 * c))
        self.down2 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(2 * c, 4 * c // f))
        self.up1, self.up2 = Up(4 * c, 2 * c // f, bilinear), Up(2 * c, c, bilinear)
        self.outc = nn.Conv2d(c, classes, 1)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        return self.outc(self.up2(self.up1(x3, x2), x1))


class GRURecognizer(nn.Module):
    """A text recogniser that folds the height into the features (view) and reads columns with a BiGRU."""

    def __init__(self, classes: int = 7):
        super().__init__()
        self.cnn = nn.Sequential(conv_bn_act(1, 8, 3), nn.MaxPool2d(2), conv_bn_act(8, 8, 3), nn.MaxPool2d((2, 1)))
        self.gru = nn.GRU(8 * 4, 8, batch_first=True, bidirectional=True, num_layers=2)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        f = self.cnn(x)
        b, c, h, w = f.shape
        f = f.view(b, c * h, w).permute(0, 2, 1)
        y, _ = self.gru(f)
        return self.fc(y).log_softmax(-1)


class LSTMCellDecoder(nn.Module):
    """A recogniser whose head runs an LSTMCell step by step over the columns (one module called T times)."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.cnn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((1, None)))
        self.cell = nn.LSTMCell(8, 12)
        self.out = nn.Linear(12, classes)

    def forward(self, x):
        seq = self.cnn(x).squeeze(2)  # (N, C, W)
        h = c = seq.new_zeros(seq.shape[0], 12)
        outs = []
        for t in range(seq.shape[2]):
            h, c = self.cell(seq[:, :, t], (h, c))
            outs.append(self.out(h))
        return torch.stack(outs, 1)


class WeightNormTCN(nn.Module):
    """A TCN whose convs use the weight_norm parametrization (as in the TCN reference code)."""

    def __init__(self):
        super().__init__()
        wn = nn.utils.parametrizations.weight_norm
        self.c1 = wn(nn.Conv1d(2, 8, 3, padding=2, dilation=1))
        self.c2 = wn(nn.Conv1d(8, 8, 3, padding=4, dilation=2))
        self.down = nn.Conv1d(2, 8, 1)

    def forward(self, x):
        y = F.relu(self.c1(x)[:, :, :-2])
        y = F.relu(self.c2(y)[:, :, :-4])
        return F.relu(y + self.down(x))


class SAGANGenerator(nn.Module):
    """SAGAN/BigGAN-style generator: spectral-normalised linear and transposed convs, each followed by BN."""

    def __init__(self, z: int = 16, c: int = 16):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.c = c
        self.fc = sn(nn.Linear(z, c * 4 * 4))
        self.up1 = nn.Sequential(sn(nn.ConvTranspose2d(c, c // 2, 4, 2, 1)), nn.BatchNorm2d(c // 2), nn.ReLU())
        self.up2 = nn.Sequential(sn(nn.ConvTranspose2d(c // 2, c // 4, 4, 2, 1)), nn.BatchNorm2d(c // 4), nn.ReLU())
        self.out = nn.Sequential(sn(nn.Conv2d(c // 4, 3, 3, 1, 1)), nn.Tanh())

    def forward(self, z):
        x = self.fc(z).view(z.shape[0], self.c, 4, 4)
        return self.out(self.up2(self.up1(x)))


class OldWeightNormTCN(nn.Module):
    """The TCN reference code's block with the hook-based ``torch.nn.utils.weight_norm`` and a BN."""

    def __init__(self):
        super().__init__()
        wn = nn.utils.weight_norm
        self.c1 = wn(nn.Conv1d(2, 8, 3, padding=2))
        self.bn = nn.BatchNorm1d(8)
        self.c2 = wn(nn.Conv1d(8, 8, 3, padding=4, dilation=2))

    def forward(self, x):
        y = F.relu(self.bn(self.c1(x)[:, :, :-2]))
        return F.relu(self.c2(y)[:, :, :-4])


# ============================================================================ more public designs
class ResNetBottleneck(nn.Module):
    """ResNet bottleneck (1×1, 3×3 with stride/dilation, 1×1), in-place residual add."""

    def __init__(self, c_in: int, mid: int, c_out: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class DeepLabV3(nn.Module):
    """torchvision-style DeepLabV3: ResNet bottlenecks (the last dilated, output stride 8), ASPP with an
    image-pooling branch, a 3×3 head, bilinear resize to the input; returns a dict like torchvision."""

    def __init__(self, pool: bool = True):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        self.layer1 = ResNetBottleneck(8, 4, 16)
        self.layer2 = ResNetBottleneck(16, 4, 16, 2)
        self.layer3 = ResNetBottleneck(16, 4, 16, 1, 2)
        branches = [conv_bn_act(16, 8, 1)] + [conv_bn_act(16, 8, 3, dilation=r) for r in (2, 4)]
        self.convs = nn.ModuleList(branches + ([ASPPPooling(16, 8)] if pool else []))
        self.project = conv_bn_act(8 * len(self.convs), 8, 1)
        self.head = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 3, 1))

    def forward(self, x):
        size = x.shape[-2:]
        f = self.layer3(self.layer2(self.layer1(self.stem(x))))
        y = self.head(self.project(torch.cat([conv(f) for conv in self.convs], 1)))
        return {"out": F.interpolate(y, size=size, mode="bilinear", align_corners=False)}


def double_conv_valid(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3), nn.ReLU(inplace=True), nn.Conv2d(c_out, c_out, 3),
                         nn.ReLU(inplace=True))


class UNetValid(nn.Module):
    """The original U-Net: unpadded convs, transposed-conv upsampling, the skip centre-cropped by slicing."""

    def __init__(self):
        super().__init__()
        self.d1, self.d2, self.mid = double_conv_valid(1, 4), double_conv_valid(4, 8), double_conv_valid(8, 16)
        self.pool = nn.MaxPool2d(2)
        self.up2, self.u2 = nn.ConvTranspose2d(16, 8, 2, 2), double_conv_valid(16, 8)
        self.up1, self.u1 = nn.ConvTranspose2d(8, 4, 2, 2), double_conv_valid(8, 4)
        self.out = nn.Conv2d(4, 2, 1)

    @staticmethod
    def crop(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        dy, dx = (t.shape[2] - ref.shape[2]) // 2, (t.shape[3] - ref.shape[3]) // 2
        return t[:, :, dy:dy + ref.shape[2], dx:dx + ref.shape[3]]

    def forward(self, x):
        a = self.d1(x)
        b = self.d2(self.pool(a))
        m = self.mid(self.pool(b))
        u = self.up2(m)
        u = self.u2(torch.cat([self.crop(b, u), u], 1))
        u = self.up1(u)
        u = self.u1(torch.cat([self.crop(a, u), u], 1))
        return self.out(u)


class SELinear(nn.Module):
    """SENet's squeeze-excitation with Linear layers on the pooled vector (view, expand_as)."""

    def __init__(self, c: int, r: int = 4):
        super().__init__()
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(c, c // r, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(c // r, c, bias=False), nn.Sigmoid())

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.fc(self.avg(x).view(b, c)).view(b, c, 1, 1)
        return x * y.expand_as(x)


class SEResNeXt(nn.Module):
    """SE-ResNeXt block: grouped 3×3 (cardinality 4), SE on the residual branch."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_act(3, 16, 3, 2)
        self.conv1, self.bn1 = nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, 1, 1, groups=4, bias=False), nn.BatchNorm2d(16)
        self.conv3, self.bn3 = nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16)
        self.se = SELinear(16)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        o = F.relu(self.bn1(self.conv1(x)))
        o = F.relu(self.bn2(self.conv2(o)))
        o = F.relu(self.se(self.bn3(self.conv3(o))) + x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(o, 1), 1))


class PoolFormerBlock(nn.Module):
    """PoolFormer block: GroupNorm(1), token mixer avg-pool − x, layer scales applied via unsqueeze."""

    def __init__(self, c: int):
        super().__init__()
        self.norm1, self.pool = nn.GroupNorm(1, c), nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.norm2 = nn.GroupNorm(1, c)
        self.mlp = nn.Sequential(nn.Conv2d(c, 2 * c, 1), nn.GELU(), nn.Conv2d(2 * c, c, 1))
        self.ls1 = nn.Parameter(1e-1 * torch.ones(c))
        self.ls2 = nn.Parameter(1e-1 * torch.ones(c))

    def forward(self, x):
        y = self.norm1(x)
        x = x + self.ls1.unsqueeze(-1).unsqueeze(-1) * (self.pool(y) - y)
        return x + self.ls2.unsqueeze(-1).unsqueeze(-1) * self.mlp(self.norm2(x))


class PoolFormer(nn.Module):
    """PoolFormer (MetaFormer): patch-embedding stem, one block, GroupNorm(1) head on the spatial mean."""

    def __init__(self):
        super().__init__()
        self.stem, self.block = nn.Conv2d(3, 8, 7, 4, 2), PoolFormerBlock(8)
        self.norm, self.head = nn.GroupNorm(1, 8), nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.norm(self.block(self.stem(x))).mean([-2, -1]))


class CRNNReshape(nn.Module):
    """A CRNN whose remaining height is folded into the features (permute + reshape), read by a
    two-layer unidirectional LSTM."""

    def __init__(self):
        super().__init__()
        self.cnn = nn.Sequential(conv_bn_act(1, 8, 3), nn.MaxPool2d((2, 2)), conv_bn_act(8, 16, 3), nn.MaxPool2d((4, 1)))
        self.rnn = nn.LSTM(16 * 2, 12, num_layers=2)
        self.fc = nn.Linear(12, 6)

    def forward(self, x):
        f = self.cnn(x)  # (N, 16, 2, W/2)
        n, c, h, w = f.shape
        y, _ = self.rnn(f.permute(3, 0, 1, 2).reshape(w, n, c * h))
        return self.fc(y)


class ProGANDiscriminator(nn.Module):
    """ProGAN-style discriminator: spectral-normalised convs, average-pool downsampling, the minibatch
    standard-deviation feature map concatenated before the last conv, a linear critic."""

    def __init__(self):
        super().__init__()
        sn = nn.utils.spectral_norm
        self.convs = nn.Sequential(sn(nn.Conv2d(3, 8, 3, 1, 1)), nn.LeakyReLU(0.2), nn.AvgPool2d(2),
                                   sn(nn.Conv2d(8, 16, 3, 1, 1)), nn.LeakyReLU(0.2), nn.AvgPool2d(2))
        self.final = sn(nn.Conv2d(17, 16, 3, 1, 1))
        self.fc = sn(nn.Linear(16 * 4 * 4, 1))

    def forward(self, x):
        h = self.convs(x)
        std = torch.sqrt(h.var(0, unbiased=False) + 1e-8).mean().view(1, 1, 1, 1)
        h = torch.cat([h, std.expand(h.shape[0], 1, *h.shape[2:])], 1)
        return self.fc(F.leaky_relu(self.final(h), 0.2).flatten(1))


class ResizeConvGenerator(nn.Module):
    """Resize-convolution generator (Odena et al.): nearest upsampling + 3×3 conv instead of strided
    transposed convs, BN, from a 1×1 latent map."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Sequential(nn.ConvTranspose2d(16, 16, 4, 1, 0, bias=False), nn.BatchNorm2d(16), nn.ReLU(True))
        self.up = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(16, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8),
                                nn.ReLU(True), nn.Upsample(scale_factor=2), nn.Conv2d(8, 3, 3, 1, 1), nn.Tanh())

    def forward(self, z):
        return self.up(self.proj(z))


class RecurrentConvNet(nn.Module):
    """An R2U-Net recurrent block with t = 3 (one conv + BN + ReLU called four times) between 1×1 convs,
    the input projection called twice."""

    def __init__(self):
        super().__init__()
        self.inp, self.r, self.out = nn.Conv2d(3, 4, 1), RecurrentBlock(4, t=3), nn.Conv2d(4, 1, 1)

    def forward(self, x):
        return self.out(self.r(self.inp(x)) + self.inp(x))


# ============================================================================ the zoo
#: name -> (factory, input shape for review and float64 checks, input shape for the autograd field)
ZOO = {
    "convnext": (ConvNeXt, (1, 3, 32, 32), (1, 3, 160, 160)),
    "mobilenetv3": (MobileNetV3, (2, 3, 32, 32), (1, 3, 64, 64)),
    "efficientnet": (EfficientNetStage, (1, 3, 32, 32), (1, 3, 96, 96)),
    "regnety": (RegNetY, (1, 3, 32, 32), (1, 3, 64, 64)),
    "shufflenetv2": (ShuffleNetV2, (1, 3, 32, 32), (1, 3, 64, 64)),
    "squeezenet": (SqueezeNet, (1, 3, 33, 33), (1, 3, 96, 96)),
    "densenet": (DenseNet, (1, 3, 32, 32), (1, 3, 96, 96)),
    "res2net": (Res2Net, (1, 3, 32, 32), (1, 3, 80, 80)),
    "ghostnet": (GhostNet, (1, 3, 32, 32), (1, 3, 64, 64)),
    "deeplabv3plus": (DeepLabV3Plus, (1, 3, 32, 32), (1, 3, 96, 96)),
    "deeplabv3plus-no-pool": (lambda: DeepLabV3Plus(with_image_pool=False), (1, 3, 32, 32), (1, 3, 128, 128)),
    "hrnet": (HRNetTwoBranch, (1, 3, 32, 32), (1, 3, 64, 64)),
    "yolo-neck": (YoloNeck, (1, 3, 32, 32), (1, 3, 192, 192)),
    "pix2pix-unet": (pix2pix_unet, (2, 3, 32, 32), (1, 3, 192, 192)),
    "patchgan-sn-in": (patchgan, (1, 3, 32, 32), (1, 3, 96, 96)),
    "patchgan-bn": (lambda: patchgan(norm="batch"), (2, 3, 32, 32), (1, 3, 96, 96)),
    "cyclegan-g": (cyclegan_generator, (1, 3, 24, 24), (1, 3, 48, 48)),
    "crnn": (CRNN, (2, 1, 16, 40), (1, 1, 16, 64)),
    "r2unet": (R2UNet, (1, 3, 16, 16), (1, 3, 64, 64)),
    "vit": (ViT, (2, 3, 16, 16), (1, 3, 16, 16)),
    "cbam": (CBAMNet, (1, 3, 16, 16), (1, 3, 32, 32)),
    "cbam-spatial": (lambda: CBAMNet(spatial_only=True), (1, 3, 16, 16), (1, 3, 40, 40)),
    "inceptionv3": (InceptionV3, (1, 3, 40, 40), (1, 3, 64, 64)),
    "tcn": (TCN, (2, 2, 40), (1, 2, 64)),
    "r2plus1d": (R2Plus1d, (1, 3, 4, 16, 16), (1, 3, 12, 32, 32)),
    "convnext-tv": (ConvNeXtTV, (1, 3, 32, 32), (1, 3, 160, 160)),
    "efficientnet-timm": (EfficientNetTimm, (1, 3, 33, 33), (1, 3, 64, 64)),
    "sngan-d": (SNGANDiscriminator, (2, 3, 16, 16), (1, 3, 48, 48)),
    "unet-milesial": (UNetMilesial, (1, 3, 37, 37), (1, 3, 64, 64)),
    "unet-milesial-bilinear": (lambda: UNetMilesial(bilinear=True), (1, 3, 35, 35), (1, 3, 64, 64)),
    "gru-recognizer": (GRURecognizer, (2, 1, 16, 24), (1, 1, 16, 40)),
    "lstmcell-decoder": (LSTMCellDecoder, (2, 1, 8, 10), (1, 1, 8, 20)),
    "weightnorm-tcn": (WeightNormTCN, (2, 2, 30), (1, 2, 40)),
    "sagan-g": (SAGANGenerator, (2, 16), (1, 16)),
    "old-weightnorm-tcn": (OldWeightNormTCN, (2, 2, 30), (1, 2, 40)),
    "deeplabv3": (DeepLabV3, (1, 3, 65, 65), (1, 3, 129, 129)),
    "deeplabv3-no-pool": (lambda: DeepLabV3(False), (1, 3, 65, 65), (1, 3, 161, 161)),
    "unet-valid": (UNetValid, (1, 1, 60, 60), (1, 1, 92, 92)),
    "se-resnext": (SEResNeXt, (2, 3, 32, 32), (1, 3, 64, 64)),
    "poolformer": (PoolFormer, (1, 3, 32, 32), (1, 3, 64, 64)),
    "crnn-reshape": (CRNNReshape, (2, 1, 16, 20), (1, 1, 16, 40)),
    "progan-d": (ProGANDiscriminator, (4, 3, 16, 16), (4, 3, 16, 16)),
    "resize-conv-g": (ResizeConvGenerator, (2, 16, 1, 1), (1, 16, 1, 1)),
    "recurrent-conv": (RecurrentConvNet, (1, 3, 16, 16), (1, 3, 40, 40)),
}

# CLI-loadable names (``python -m convbook review tests/zoo.py:mobilenetv3 --input 1,3,32,32``).
convnext, mobilenetv3, efficientnet, regnety = ConvNeXt, MobileNetV3, EfficientNetStage, RegNetY
shufflenetv2, squeezenet, densenet, res2net, ghostnet = ShuffleNetV2, SqueezeNet, DenseNet, Res2Net, GhostNet
deeplabv3plus, hrnet, yolo_neck, crnn, r2unet, vit = DeepLabV3Plus, HRNetTwoBranch, YoloNeck, CRNN, R2UNet, ViT
cbam, inceptionv3, tcn, r2plus1d = CBAMNet, InceptionV3, TCN, R2Plus1d
