"""Models built by name: parameter counts by formula, shapes, options, spec round trip, errors."""

import json

import pytest
import torch
from torch import nn

from darkknowledge.models import (
    MODEL_NAMES,
    ModelSpec,
    build_model,
    build_model_from_spec,
    count_parameters,
    default_options,
)


def test_model_names():
    assert MODEL_NAMES == ("linear", "logistic", "softmax-regression", "mlp", "cnn")


@pytest.mark.parametrize("shape", [(1, 28, 28), (784,), (28, 28)])
def test_softmax_regression_has_the_notes_7850_parameters(shape):
    m = build_model("softmax-regression", input_shape=shape, num_classes=10)
    assert count_parameters(m) == 28 * 28 * 10 + 10 == 7850
    # image input and flat input give the same logits: the model flattens itself
    x = torch.randn(3, 1, 28, 28)
    out = m(x)
    assert out.shape == (3, 10)
    torch.testing.assert_close(m(x.reshape(3, 784)), out)
    # it is x W^T + b (independent computation)
    W, b = m.out.weight, m.out.bias
    torch.testing.assert_close(out, x.reshape(3, 784) @ W.T + b)


def test_linear_and_logistic_shapes_and_counts():
    lin = build_model("linear", input_shape=(5,), num_classes=1)
    assert count_parameters(lin) == 5 + 1
    assert lin(torch.randn(4, 5)).shape == (4, 1)
    lin3 = build_model("linear", input_shape=(5,), num_classes=3)
    assert lin3(torch.randn(4, 5)).shape == (4, 3)
    for k in (1, 2):
        log = build_model("logistic", input_shape=(2, 3), num_classes=k)
        assert count_parameters(log) == 6 + 1
        assert log(torch.randn(4, 2, 3)).shape == (4,)  # one logit per sample


@pytest.mark.parametrize("hidden", [(100,), (100, 50), (7, 8, 9), ()])
def test_mlp_parameter_count_by_formula(hidden):
    m = build_model("mlp", input_shape=(64,), num_classes=10, hidden=hidden)
    sizes = [64, *hidden, 10]
    expected = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    assert count_parameters(m) == expected
    assert m(torch.randn(2, 64)).shape == (2, 10)
    assert m(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_mlp_hinton_teacher_size():
    # Hinton et al. 2015: 784-1200-1200-10
    m = build_model("mlp", input_shape=(1, 28, 28), num_classes=10, hidden=(1200, 1200))
    assert count_parameters(m) == 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 1200 * 10 + 10


def test_cnn_parameter_count_and_shapes_28x28():
    m = build_model("cnn", input_shape=(1, 28, 28), num_classes=10, channels=(32, 64), hidden=128)
    expected = (1 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (64 * 7 * 7 * 128 + 128) + (128 * 10 + 10)
    assert count_parameters(m) == expected
    assert m(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert m(torch.randn(3, 784)).shape == (3, 10)


def test_cnn_on_flat_digits_reshapes_to_image():
    m = build_model("cnn", input_shape=(64,), num_classes=10, channels=(8, 16), hidden=32, seed=0)
    expected = (1 * 8 * 9 + 8) + (8 * 16 * 9 + 16) + (16 * 2 * 2 * 32 + 32) + (32 * 10 + 10)
    assert count_parameters(m) == expected
    x = torch.randn(5, 64)
    torch.testing.assert_close(m(x), m(x.reshape(5, 1, 8, 8)))
    # first conv equals torch's conv2d on the (1, 8, 8) image (independent reference)
    ref = torch.nn.functional.conv2d(x.reshape(5, 1, 8, 8), m.conv1.weight, m.conv1.bias, padding=1)
    torch.testing.assert_close(m.conv1(m.to_image(x)), ref)


def test_cnn_with_batchnorm_matches_torch_layers_and_keeps_old_specs_loadable():
    m = build_model("cnn", input_shape=(1, 8, 8), num_classes=3, channels=(4, 6), hidden=5, batchnorm=True, seed=0)
    # conv without bias (the BatchNorm's shift replaces it), then per-channel BatchNorm: 2 parameters a channel
    expected = (1 * 4 * 9 + 2 * 4) + (4 * 6 * 9 + 2 * 6) + (6 * 2 * 2 * 5 + 5) + (5 * 3 + 3)
    assert count_parameters(m) == expected
    x = torch.randn(7, 1, 8, 8)
    m.train()
    h = torch.nn.functional.conv2d(x, m.conv1.weight, None, padding=1)  # (7, 4, 8, 8)
    mean, var = h.mean(dim=(0, 2, 3), keepdim=True), h.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    ref = (h - mean) / torch.sqrt(var + 1e-5)  # batch statistics in training; weight 1, bias 0 at init
    torch.testing.assert_close(m.bn1(m.conv1(x)), ref, rtol=1e-4, atol=1e-5)
    m.eval()
    assert m(x).shape == (7, 3)
    # a spec saved before the option existed rebuilds the architecture it had (no BatchNorm)
    old = {"name": "cnn", "input_shape": [1, 8, 8], "num_classes": 3,
           "options": {"channels": [4], "hidden": 5, "dropout": 0.0}}
    rebuilt = build_model_from_spec(old)
    assert not any(isinstance(layer, torch.nn.BatchNorm2d) for layer in rebuilt.modules())
    deep = build_model("cnn", input_shape=(1, 8, 8), num_classes=3, channels=(4, 6), hidden=5, batchnorm=True,
                       convs_per_stage=2, seed=0)
    expected = (1 * 4 * 9 + 2 * 4) + (4 * 4 * 9 + 2 * 4) + (4 * 6 * 9 + 2 * 6) + (6 * 6 * 9 + 2 * 6) + (6 * 2 * 2 * 5 + 5) + (5 * 3 + 3)
    assert count_parameters(deep) == expected
    assert [n for n, _ in deep.named_children()][:8] == ["to_image", "conv1", "bn1", "relu1", "conv1_2", "bn1_2", "relu1_2", "pool1"]
    assert deep.eval()(x).shape == (7, 3)
    with pytest.raises(ValueError, match=r"convs_per_stage must be an integer >= 1, got 0 instead"):
        build_model("cnn", input_shape=(1, 8, 8), num_classes=3, convs_per_stage=0)
    with pytest.raises(TypeError, match=r"batchnorm must be a bool, got str instead"):
        build_model("cnn", input_shape=(1, 8, 8), num_classes=3, batchnorm="yes")


def test_cnn_multichannel_input():
    m = build_model("cnn", input_shape=(3, 16, 16), num_classes=4, channels=(4,), hidden=8)
    assert m(torch.randn(2, 3, 16, 16)).shape == (2, 4)


def test_dropout_only_in_training_mode():
    m = build_model("mlp", input_shape=(20,), num_classes=3, hidden=(64,), dropout=0.5, input_dropout=0.2, seed=0)
    assert isinstance(m.input_dropout, nn.Dropout) and m.input_dropout.p == 0.2
    assert isinstance(m.dropout1, nn.Dropout) and m.dropout1.p == 0.5
    x = torch.randn(8, 20)
    m.eval()
    torch.testing.assert_close(m(x), m(x))
    m.train()
    assert not torch.equal(m(x), m(x))


def test_no_dropout_layers_when_zero():
    m = build_model("mlp", input_shape=(20,), num_classes=3, hidden=(8,))
    assert not any(isinstance(mod, nn.Dropout) for mod in m.modules())


def test_seed_makes_init_reproducible_and_leaves_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    a = build_model("mlp", input_shape=(10,), num_classes=3, hidden=(5,), seed=7)
    assert torch.equal(torch.rand(2), expected)  # global RNG untouched
    b = build_model("mlp", input_shape=(10,), num_classes=3, hidden=(5,), seed=7)
    c = build_model("mlp", input_shape=(10,), num_classes=3, hidden=(5,), seed=8)
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.fc1.weight, c.fc1.weight)


@pytest.mark.parametrize(
    "name, options",
    [
        ("linear", {}),
        ("logistic", {}),
        ("softmax-regression", {}),
        ("mlp", {"hidden": (12, 6), "dropout": 0.1}),
        ("cnn", {"channels": (4,), "hidden": 9, "dropout": 0.2}),
    ],
)
def test_spec_round_trip_through_json(name, options):
    shape = (1, 8, 8)
    k = 2 if name == "logistic" else 3
    m = build_model(name, input_shape=shape, num_classes=k, seed=1, **options)
    assert isinstance(m.spec, ModelSpec)
    d = json.loads(json.dumps(m.spec.to_dict()))
    assert set(d) == {"name", "input_shape", "num_classes", "options"}
    assert set(d["options"]) == set(default_options(name))
    for rebuilt in (build_model(**d), build_model_from_spec(d), build_model_from_spec(ModelSpec.from_dict(d))):
        assert rebuilt.spec == m.spec
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}
        assert count_parameters(rebuilt) == count_parameters(m)


def test_count_parameters_trainable_only():
    m = build_model("mlp", input_shape=(4,), num_classes=2, hidden=(3,))
    m.fc1.weight.requires_grad_(False)
    assert count_parameters(m) == 4 * 3 + 3 + 3 * 2 + 2
    assert count_parameters(m, trainable_only=True) == 3 + 3 * 2 + 2


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"name must be one of 'linear', 'logistic', 'softmax-regression', 'mlp', 'cnn'; got 'resnet'"):
        build_model("resnet", input_shape=(4,), num_classes=2)


@pytest.mark.parametrize(
    "name, kwargs, exc, match",
    [
        ("mlp", {"hiden": (3,)}, ValueError, r"unknown option\(s\) \['hiden'\] for model 'mlp'; valid options: \['dropout', 'hidden', 'input_dropout'\]"),
        ("linear", {"hidden": (3,)}, ValueError, r"unknown option\(s\) \['hidden'\] for model 'linear'; valid options: none"),
        ("mlp", {"hidden": (3, -1)}, ValueError, r"hidden must be a tuple of positive ints, got \(3, -1\) instead"),
        ("mlp", {"hidden": (3, 0)}, ValueError, r"hidden must be a tuple of positive ints, got \(3, 0\) instead"),
        ("mlp", {"hidden": "big"}, TypeError, r"hidden must be a tuple of positive ints, got 'big' instead"),
        ("mlp", {"dropout": 1.0}, ValueError, r"dropout must be in \[0, 1\), got 1.0 instead"),
        ("mlp", {"dropout": -0.1}, ValueError, r"dropout must be in \[0.0, 1.0\], got -0.1 instead"),
        ("mlp", {"input_dropout": 1.5}, ValueError, r"input_dropout must be in \[0.0, 1.0\], got 1.5 instead"),
        ("cnn", {"channels": ()}, ValueError, r"channels must have at least one entry, got \(\) instead"),
        ("cnn", {"channels": (8, -2)}, ValueError, r"channels must be a tuple of positive ints, got \(8, -2\) instead"),
        ("cnn", {"hidden": 0}, ValueError, r"hidden must be an integer >= 1, got 0 instead"),
        ("cnn", {"hidden": (4,)}, TypeError, r"hidden must be an integer, got tuple instead"),
        ("cnn", {"dropout": 1}, ValueError, r"dropout must be in \[0, 1\), got 1.0 instead"),
    ],
)
def test_bad_options(name, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        build_model(name, input_shape=(1, 8, 8), num_classes=3, **kwargs)


@pytest.mark.parametrize(
    "name, kwargs, exc, match",
    [
        ("mlp", {"input_shape": (), "num_classes": 3}, TypeError, r"input_shape must be a non-empty tuple of ints, got \(\) instead"),
        ("mlp", {"input_shape": 64, "num_classes": 3}, TypeError, r"input_shape must be a non-empty tuple of ints, got 64 instead"),
        ("mlp", {"input_shape": (0, 3), "num_classes": 3}, ValueError, r"input_shape must contain positive ints, got \(0, 3\) instead"),
        ("mlp", {"input_shape": (4,), "num_classes": 0}, ValueError, r"num_classes must be an integer >= 1, got 0 instead"),
        ("mlp", {"input_shape": (4,), "num_classes": 2, "seed": -1}, ValueError, r"seed must be an integer >= 0, got -1 instead"),
        ("logistic", {"input_shape": (4,), "num_classes": 3}, ValueError, r"num_classes must be 1 or 2 for the binary 'logistic' model, got 3 instead"),
        ("cnn", {"input_shape": (60,), "num_classes": 3}, ValueError, r"input_shape must be \(C, H, W\) or flat \(H\*H,\) with H\*H a perfect square for the cnn, got \(60,\) instead"),
        ("cnn", {"input_shape": (1, 2, 2), "num_classes": 3}, ValueError, r"input of 2x2 pixels is too small for 2 pooling stages"),
        ("mlp", {"input_shape": (4,), "num_classes": 2, "options": {"hidden": (3,)}, "hidden": (2,)}, ValueError, r"options \['hidden'\] were given both"),
    ],
)
def test_bad_build_arguments(name, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        build_model(name, **kwargs)


@pytest.mark.parametrize(
    "d, exc, match",
    [
        ({"name": "mlp", "input_shape": [4], "num_classes": 2, "extra": 1}, ValueError, r"spec has unknown keys \['extra'\]"),
        ({"name": "mlp", "num_classes": 2}, ValueError, r"spec is missing keys \['input_shape'\]"),
        (["mlp"], TypeError, r"spec must be a mapping, got list instead"),
    ],
)
def test_bad_spec(d, exc, match):
    with pytest.raises(exc, match=match):
        build_model_from_spec(d)


def test_count_parameters_rejects_non_module():
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got int instead"):
        count_parameters(3)


def test_default_options_rejects_unknown_name():
    with pytest.raises(ValueError, match=r"name must be one of"):
        default_options("vit")
