"""Reference networks (convbook.models)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convbook import models


@pytest.mark.parametrize("name", list(models.TORCHVISION_PARAMS))
def test_parameter_counts_equal_torchvision(name):
    assert models.count_params(models.build(name)) == models.TORCHVISION_PARAMS[name]


def test_every_model_but_mobilenet_v1_has_a_published_count():
    assert set(models.MODELS) - set(models.TORCHVISION_PARAMS) == {"mobilenet_v1"}


def test_stride_placement_changes_no_parameter_and_moves_the_stride():
    for name in ("resnet50", "resnet101", "resnet152", "resnext50_32x4d", "wide_resnet50_2"):
        a, b = models.build(name, stride_on="3x3"), models.build(name, stride_on="1x1")
        assert models.count_params(a) == models.count_params(b)
    a, b = models.build("resnet50", stride_on="3x3"), models.build("resnet50", stride_on="1x1")
    assert a.layer2[0].conv1.stride == (1, 1) and a.layer2[0].conv2.stride == (2, 2)
    assert b.layer2[0].conv1.stride == (2, 2) and b.layer2[0].conv2.stride == (1, 1)


def test_state_dict_keys_follow_torchvision():
    keys = set(models.build("resnet50").state_dict())
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.downsample.0.weight", "layer4.2.conv3.weight",
            "fc.bias"} <= keys
    keys = set(models.build("mobilenet_v2").state_dict())
    assert {"features.0.0.weight", "features.1.conv.0.0.weight", "features.18.1.weight", "classifier.1.weight"} <= keys
    keys = set(models.build("vgg16").state_dict())
    assert {"features.0.weight", "features.28.bias", "classifier.6.weight"} <= keys


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnext50_32x4d", "mobilenet_v1", "mobilenet_v2"])
def test_forward_shapes_on_meta(name):
    m = models.build(name)
    with torch.no_grad():
        assert tuple(m(torch.empty(2, 3, 224, 224, device="meta")).shape) == (2, 1000)


def test_real_forward_small_input_and_modules_are_conv_bn_relu():
    torch.manual_seed(0)
    m = models.resnet18(num_classes=7).eval()
    y = m(torch.randn(1, 3, 64, 64))
    assert y.shape == (1, 7) and torch.isfinite(y).all()
    v1 = models.mobilenet_v1(num_classes=5, width_mult=0.25).eval()
    assert v1(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    block = v1.features[1]
    assert [type(x) for x in block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d, nn.ReLU]


def test_conv_shapes():
    rows = models.resnet50_conv_shapes()
    assert len(rows) == 53
    assert rows[0]["input_size"] == (224, 224) and rows[0]["output_size"] == (112, 112)
    assert rows[-1]["name"] == "layer4.2.conv3" and rows[-1]["output_size"] == (7, 7)
    paper = models.resnet50_conv_shapes(stride_on="1x1")
    first = [r for r in paper if r["name"] == "layer2.0.conv1"][0]
    assert first["stride"] == (2, 2) and first["output_size"] == (28, 28)
    small = models.resnet18()  # a CPU model is traced through a meta copy and left as it was
    assert len(models.conv_shapes(small, (1, 3, 64, 64))) == 20
    assert next(small.parameters()).device.type == "cpu"


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="stride_on"):
        models.resnet50(stride_on="2x2")
    with pytest.raises(ValueError, match="unknown model"):
        models.build("alexnet")
    with pytest.raises(ValueError, match="layers must be 4"):
        models.ResNet(models.Bottleneck, [3, 4, 6])
    with pytest.raises(ValueError, match="num_classes"):
        models.ResNet(models.BasicBlock, [2, 2, 2, 2], num_classes=0)
    with pytest.raises(ValueError, match="BasicBlock only supports"):
        models.BasicBlock(64, 64, groups=2)
    with pytest.raises(ValueError, match="width_mult"):
        models.mobilenet_v1(width_mult=0)
    with pytest.raises(ValueError, match="num_classes"):
        models.MobileNetV1(num_classes=0)
    with pytest.raises(ValueError, match="width_mult"):
        models.mobilenet_v2(width_mult=-1.0)
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        models.InvertedResidual(8, 8, 3, 6)
    with pytest.raises(ValueError, match="input_shape"):
        models.conv_shapes(models.build("resnet18"), (3, 224, 224))


def test_block_strides_follow_the_conventions():
    import numpy as np

    block = models.Bottleneck(16, 4, np.int64(2), nn.Conv2d(16, 16, 1, stride=2))
    assert block.stride == 2 and type(block.stride) is int and block.conv2.stride == (2, 2)
    assert models.BasicBlock(8, 8, torch.tensor(1)).conv1.stride == (1, 1)
    for bad in (2.0, True, "2"):
        with pytest.raises(ValueError, match="stride must be an integer"):
            models.BasicBlock(8, 8, bad)
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        models.InvertedResidual(8, 8, 3, 2)


def test_conv_shapes_on_models_fx_cannot_trace():
    class Wrapper(nn.Module):
        """Python control flow on the input size, one conv called twice, a 'same'-padded conv."""

        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 3, 3, stride=2, padding=1)
            self.same = nn.Conv2d(3, 5, (5, 3), padding="same")

        def forward(self, x):
            x = self.c(x)
            if x.shape[-1] > 4:
                x = self.c(x)
            return self.same(x)

    m = Wrapper()
    rows = models.conv_shapes(m, (1, 3, 16, 12))
    assert [(r["name"], r["input_size"], r["output_size"]) for r in rows] == \
        [("c", (16, 12), (8, 6)), ("c", (8, 6), (4, 3)), ("same", (4, 3), (4, 3))]
    assert rows[-1]["padding"] == "same" and rows[-1]["kernel_size"] == (5, 3)
    with torch.no_grad():  # the last row is the real output's size
        assert tuple(m(torch.zeros(1, 3, 16, 12)).shape[2:]) == rows[-1]["output_size"]
    assert len(models.conv_shapes(m, (1, 3, 8, 8))) == 2  # the control flow takes the other path
