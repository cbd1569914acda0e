"""Chapter 4: activation memory in training and inference (convbook.memory)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convbook import memory, models
from convbook.memory import activation_memory, im2col_bytes, measure_inference, measure_training
from tests.planting import Plant, planted_failure_test


def test_vgg16_and_resnet50_figures():
    vgg = activation_memory(models.build("vgg16"), (1, 3, 224, 224))
    # conv1_2's input and output (64×224×224 each) plus the input image held by the caller
    assert vgg["inference_peak"] == (2 * 64 * 224 * 224 + 3 * 224 * 224) * 4 == 26_292_224
    assert vgg["inference_peak_at"] == "features.2"
    assert vgg["training_total"] == 73_355_264
    r50 = activation_memory(models.build("resnet50"), (1, 3, 224, 224))
    assert r50["training_total"] == 86_121_984
    assert r50["inference_peak"] == 11_038_720


def test_small_chain_by_hand():
    # conv (saves x) → ReLU in place (saves y, the conv's output) → max-pool (saves y again: once; + int64 indices)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
    a = activation_memory(model, (1, 2, 8, 8))
    assert a["training"] == {"0": 2 * 64 * 4, "1": 3 * 64 * 4, "2": 3 * 16 * 8}
    assert a["training"] == measure_training(model, (1, 2, 8, 8))
    # alive at the pool's return: input (held by the caller), conv/ReLU output, pool output
    assert a["inference_live"][-1] == ("2", (2 * 64 + 3 * 64 + 3 * 16) * 4)
    assert a["inference_peak"] == measure_inference(model, (1, 2, 8, 8))["peak"]


def test_not_in_place_relu_saves_its_own_output():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.Conv2d(2, 2, 1))
    a = activation_memory(model, (1, 1, 4, 4))
    assert a["training"] == {"0": 64, "1": 128} == measure_training(model, (1, 1, 4, 4))


def test_im2col_bytes_is_unfold_size():
    conv = nn.Conv2d(4, 6, 3, padding=1, stride=2)
    cols = nn.functional.unfold(torch.zeros(2, 4, 9, 9), 3, padding=1, stride=2)
    assert im2col_bytes(conv, (2, 4, 9, 9)) == cols.numel() * 4
    vgg = models.build("vgg16")
    assert im2col_bytes(vgg.features[2], (1, 64, 224, 224)) == 64 * 9 * 224 * 224 * 4 == 115_605_504


def test_unknown_layer_kind_raises():
    with pytest.raises(ValueError, match="GELU"):
        activation_memory(nn.Sequential(nn.Conv2d(1, 1, 1), nn.GELU()), (1, 1, 4, 4))


def test_measurement_leaves_model_alone():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
    before = [p.clone() for p in model.parameters()]
    measure_training(model, (1, 1, 6, 6))
    measure_inference(model, (1, 1, 6, 6))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert model.training
    meta = models.build("resnet18")
    measure_inference(meta, (1, 3, 32, 32))
    assert all(p.is_meta for p in meta.parameters())


# --- planted failures -----------------------------------------------------------------------

_right_shares = memory.shares_input_storage
_right_saved = memory.saved_tensors


def _relu_never_in_place(call, training):
    return False if call.kind == "ReLU" else _right_shares(call, training)


def _pool_without_indices(call, needs_grad):
    saved = _right_saved(call, needs_grad)
    return [s for s in saved if s[0] != "new"] if call.kind == "MaxPool2d" else saved


def _bn_without_statistics(call, needs_grad):
    saved = _right_saved(call, needs_grad)
    return [s for s in saved if s[0] != "new"] if call.kind == "BatchNorm2d" else saved


def _only_the_caller_holds(calls, storage_of):
    return {storage_of[-1]: len(calls) - 1}


ID = "cost.training-vs-inference-memory"
PLANTS = [
    Plant(ID, "in-place ReLU treated as a new tensor", {"convbook.memory:shares_input_storage": _relu_never_in_place},
          parameter="in-place ReLU"),
    Plant(ID, "max-pool indices not counted", {"convbook.memory:saved_tensors": _pool_without_indices},
          parameter="max-pool indices"),
    Plant(ID, "batch-norm mean and 1/sigma not counted", {"convbook.memory:saved_tensors": _bn_without_statistics},
          parameter="batch-norm statistics"),
    Plant(ID, "tensors freed after their last reader only", {"convbook.memory:holds_arguments": _only_the_caller_holds},
          parameter="arguments held by enclosing calls"),
]

test_planted_failure = planted_failure_test(PLANTS)
