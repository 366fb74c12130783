"""The package root: ``import darkknowledge as dk`` gives the public API, lazily (no torch on import)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import darkknowledge as dk

EXPECTED = {
    "distill", "fit", "evaluate", "distillation_loss", "DistillationLoss", "load_dataset", "Splits", "as_splits",
    "as_teacher", "cross_fit_logits", "DarkKnowledgeError", "InputError", "InputTypeError", "MissingFileError",
}


def test_every_public_name_resolves_and_is_listed():
    assert EXPECTED <= set(dk.__all__) and EXPECTED <= set(dir(dk)) and "__version__" in dk.__all__
    for name in dk.__all__:
        assert getattr(dk, name) is not None
    from darkknowledge.data import Splits, as_splits, load_dataset
    from darkknowledge.errors import InputError
    from darkknowledge.losses import DistillationLoss, distillation_loss
    from darkknowledge.teachers import as_teacher, cross_fit_logits
    from darkknowledge.train import fit

    assert dk.Splits is Splits and dk.as_splits is as_splits and dk.load_dataset is load_dataset
    assert dk.fit is fit and dk.distillation_loss is distillation_loss and dk.DistillationLoss is DistillationLoss
    assert dk.as_teacher is as_teacher and dk.cross_fit_logits is cross_fit_logits and dk.InputError is InputError
    assert isinstance(dk.__version__, str)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="module 'darkknowledge' has no attribute 'distil'"):
        dk.distil  # noqa: B018


def test_distill_and_evaluate_are_callable_and_keep_their_modules():
    """The functions share their names with modules: both uses work, whichever is imported first."""
    import darkknowledge.distill as distill_module
    import darkknowledge.evaluate as evaluate_module

    assert callable(dk.distill) and callable(dk.evaluate)
    assert hasattr(distill_module, "fit") and hasattr(evaluate_module, "evaluate_model")  # still the modules
    assert list(inspect.signature(dk.distill).parameters)[:3] == ["student", "teacher", "data"]
    assert list(inspect.signature(dk.evaluate).parameters)[:2] == ["model", "data"]


@pytest.mark.parametrize(
    "code",
    [
        "import darkknowledge.evaluate as m, darkknowledge as dk; import torch\n"
        "net = torch.nn.Linear(2, 2); X = torch.randn(6, 2); y = torch.tensor([0, 1] * 3)\n"
        "r = dk.evaluate(net, (X, y)); assert r['n_test'] == 6 and hasattr(m, 'evaluate_model'), r",
        "from darkknowledge import distill, evaluate; assert callable(distill) and callable(evaluate)",
    ],
)
def test_import_orders(code):
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_import_does_not_import_torch():
    code = "import sys, darkknowledge; assert 'torch' not in sys.modules, 'torch imported'; print(darkknowledge.__version__)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == dk.__version__


def test_as_splits_output_trains_and_evaluates_end_to_end():
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = (X[:, 0] > 0).astype(int)
    data = dk.as_splits((X, y), test=(X[:20], y[:20]))
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    dk.fit(model, data, epochs=30, lr=0.5)
    m = dk.evaluate(model, data)
    assert m["n_test"] == 20 and m["accuracy"] >= 0.9  # a linearly separable rule, learnt
