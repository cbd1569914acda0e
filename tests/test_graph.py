"""convbook.graph: the calls a model executes, with names, shapes and data-flow edges."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from convbook.graph import is_leaf, trace
from tests.test_review import ASPP, ControlFlow, LSTMHead, SharedNet, UNet, build

torch.set_num_threads(1)


def test_module_calls_are_named_as_named_modules():
    model, shape = build("unet")
    g = trace(model, shape)
    names = dict(model.named_modules())
    for c in g.calls:
        if c.is_module:
            assert c.name in names and type(names[c.name]) is type(c.module)
        else:
            assert c.module is None and c.name == c.kind
    assert g.run_on == "meta"


def test_data_flow_edges_of_the_skip_concatenations():
    model, shape = build("unet")
    g = trace(model, shape)
    by_name = {}
    for c in g.calls:
        by_name.setdefault(c.name, []).append(c)
    cats = by_name["cat"]
    assert len(cats) == 2
    # the first concatenation reads up2's output and enc2's ReLU; the second up1's and enc1's ReLU
    assert [g.calls[i].name for i in cats[0].inputs] == ["up2", "enc2.2"]
    assert [g.calls[i].name for i in cats[1].inputs] == ["up1", "enc1.2"]
    assert by_name["enc1.0"][0].inputs == [-1]
    assert g.readers(by_name["enc1.2"][0].index) == [by_name["pool"][0].index, cats[1].index]
    assert g.output_sources == [by_name["out"][0].index]


def test_shared_module_gives_one_record_per_call():
    g = trace(SharedNet(), (1, 3, 12, 12))
    steps = g.module_calls("step")
    assert len(steps) == 3 and len({c.index for c in steps}) == 3
    assert all(c.params == 8 * 8 * 9 + 8 for c in steps)
    # each step reads the previous residual sum
    adds = [c for c in g.calls if c.kind == "add"]
    assert [s.inputs[0] for s in steps[1:]] == [a.index for a in adds[:2]]


def test_tuple_returning_leaf_and_its_readers():
    g = trace(LSTMHead(), (2, 1, 8, 12))
    lstm = g.module_calls("lstm")[0]
    assert lstm.output_shapes == [(2, 12, 16), (1, 2, 16), (1, 2, 16)]
    fc = g.module_calls("fc")[0]
    assert fc.inputs == [lstm.index]


def test_functions_inside_user_modules_have_their_scope():
    g = trace(ASPP(), (1, 8, 12, 12))
    interp = [c for c in g.calls if c.kind == "interpolate"]
    assert len(interp) == 1 and interp[0].scope == "" and interp[0].output_shapes == [(1, 8, 12, 12)]
    cat = [c for c in g.calls if c.kind == "cat"][0]
    assert len(cat.inputs) == 5 and cat.input_shapes == [(1, 8, 12, 12)] * 5


def test_control_flow_falls_back_to_a_real_run():
    g = trace(ControlFlow(), (1, 3, 20, 20))
    assert g.run_on == "cpu"
    assert [c.name for c in g.calls if c.is_module] == ["inner.0", "inner.1", "inner.2", "refine", "refine"]
    pool = g.calls[0]
    assert pool.kind == "avg_pool2d" and pool.output_shapes == [(1, 3, 10, 10)]


def test_parameters_read_by_functions_are_recorded():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 1)
            self.gamma = nn.Parameter(torch.ones(4, 1, 1))

        def forward(self, x):
            return self.gamma * self.conv(x)

    g = trace(Scale(), (1, 2, 3, 3))
    mul = g.calls[-1]
    assert mul.kind == "mul" and mul.param_names == ["gamma"] and mul.params == 4
    assert mul.inputs == [0]  # γ is a parameter, not a data-flow input


def test_leaves_and_scopes():
    assert is_leaf(nn.Conv2d(1, 1, 1)) and is_leaf(nn.LSTM(2, 2)) and is_leaf(nn.Upsample(scale_factor=2))
    assert not is_leaf(nn.Sequential()) and not is_leaf(UNet())

    class MyConv(nn.Conv2d):
        pass

    assert is_leaf(MyConv(1, 1, 1))


def test_input_model_is_untouched_and_errors_name_the_shape():
    model = UNet().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trace(model, (1, 3, 16, 16))
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match=r"fails on an input of shape \(1, 5, 16, 16\)"):
        trace(model, (1, 5, 16, 16))
    with pytest.raises(ValueError, match="input_shape"):
        trace(model, (1, 0, 16))


def test_writes_into_a_tensor_are_data_flow():
    class Assemble(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
            self.head = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            out = x.new_zeros(x.shape[0], 8, *x.shape[2:])
            out[:, :4] = self.a(x)
            out[:, 4:] = self.b(x)
            return self.head(out)

    g = trace(Assemble(), (1, 3, 6, 6))
    writes = [c for c in g.calls if c.kind == "setitem"]
    assert len(writes) == 2
    assert g.calls[writes[1].inputs[0]] is writes[0]  # the second write reads the result of the first
    assert g.module_calls("head")[0].inputs == [writes[1].index]


def test_a_model_on_meta_is_traced_without_changing_its_mode():
    model = UNet().to("meta").train()
    g = trace(model, (1, 3, 16, 16))
    assert g.run_on == "meta" and model.training


def test_subclasses_that_replace_forward_are_scopes_except_layers_with_attribute_figures():
    import torch.nn.functional as F

    class LayerNorm2d(nn.LayerNorm):
        def forward(self, x):
            return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                                self.eps).permute(0, 3, 1, 2)

    class ConvSame(nn.Conv2d):
        def forward(self, x):
            return F.conv2d(F.pad(x, [1, 1, 1, 1]), self.weight, self.bias)

    class QuietLN(nn.LayerNorm):  # a subclass that keeps forward stays a leaf
        pass

    assert not is_leaf(LayerNorm2d(4)) and is_leaf(QuietLN(4)) and is_leaf(ConvSame(2, 2, 3))
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    assert not is_leaf(layer) and is_leaf(layer.self_attn) and is_leaf(layer.linear1)
    g = trace(nn.Sequential(ConvSame(3, 4, 3), LayerNorm2d(4)), (1, 3, 6, 6))
    assert [c.name for c in g.calls] == ["0", "permute", "layer_norm", "permute"]
    assert g.calls[0].output_shape == (1, 4, 6, 6)


def test_hook_based_weight_norm_and_spectral_norm():
    """The older weight_norm keeps a computed weight that deepcopy refuses: copy_model copes; the
    weight computations of these hooks belong to the layer's call (the recorder's pre-hook runs first)."""
    from convbook.graph import copy_model

    model = nn.Sequential(nn.utils.weight_norm(nn.Conv2d(3, 4, 3)), nn.ReLU(),
                          nn.utils.spectral_norm(nn.Conv2d(4, 4, 3)))
    with pytest.raises(RuntimeError):
        import copy

        copy.deepcopy(model)
    dup = copy_model(model)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(dup.eval()(x), model.eval()(x))
    g = trace(model, (1, 3, 8, 8))
    assert [c.name for c in g.calls] == ["0", "1", "2"]
    assert g.calls[0].param_names == ["0.bias", "0.weight_g", "0.weight_v"]


@pytest.mark.parametrize("prefer_meta", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tied_parameters_keep_the_name_named_parameters_gives(prefer_meta, dtype):
    """b.weight = a.weight: every call reads the one tensor, named as model.named_parameters() names it
    (the meta or float32 copy must not untie them)."""
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.a(x) + self.b(x)

    model = Tied().to(dtype)
    assert [n for n, _ in model.named_parameters()] == ["a.weight", "a.bias", "b.bias"]
    g = trace(model, (1, 3, 4, 4), prefer_meta=prefer_meta)
    assert g.run_on == ("meta" if prefer_meta else "cpu")
    assert [(c.name, c.param_names) for c in g.calls if c.is_module] == [
        ("a", ["a.weight", "a.bias"]), ("b", ["a.weight", "b.bias"])]
    assert g.model.a.weight is g.model.b.weight  # the traced copy is still tied
    assert model.a.weight.device.type == "cpu" and model.a.weight.dtype == dtype  # the model is untouched


def test_copy_model_keeps_ties_when_moving():
    from convbook.graph import copy_model

    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight
    model[0].register_buffer("shared", torch.zeros(3))
    model[1].register_buffer("shared", model[0].shared)
    for device, dtype in (("meta", None), ("cpu", torch.float64), (None, torch.float64)):
        dup = copy_model(model, device, dtype)
        assert dup[0].weight is dup[1].weight and dup[0].shared is dup[1].shared
        assert dup[0].weight is not model[0].weight
        assert dup[0].weight.device.type == (device or "cpu")
        assert dup[0].weight.dtype == (dtype or torch.float32) and isinstance(dup[0].weight, nn.Parameter)
    assert model[0].weight.dtype == torch.float32  # the model is untouched
    with pytest.raises(ValueError, match="floating-point dtype"):
        copy_model(model, "cpu", torch.int64)
