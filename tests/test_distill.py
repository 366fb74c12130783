"""The distiller: transfer sets, the missing-class bias, the divergence guard, the sweep, cache use."""

import math

import pytest
import torch
from torch import nn

from darkknowledge.data._types import Splits
from darkknowledge.distill import (
    DistillationDivergedError,
    adjust_missing_class_bias,
    distill,
    resolve_teacher_logits,
    sweep,
    transfer_indices,
)
from darkknowledge.models import build_model
from darkknowledge.train import TrainingDivergedError


def _toy(n=600, d=10, c=4, seed=0):
    """Gaussian features labelled by a fixed random teacher (an MLP), so the teacher is right by construction."""
    g = torch.Generator().manual_seed(seed)
    teacher = nn.Sequential(nn.Linear(d, 32), nn.Tanh(), nn.Linear(32, c))
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 1.5)
    X = torch.randn(n, d, generator=g)
    with torch.no_grad():
        y = teacher(X).argmax(1)
    cut1, cut2 = int(0.6 * n), int(0.8 * n)
    data = Splits(X[:cut1], y[:cut1], X[cut1:cut2], y[cut1:cut2], X[cut2:], y[cut2:], [str(i) for i in range(c)])
    return teacher, data


def _agreement(student, teacher, X):
    with torch.no_grad():
        return float((student.eval()(X).argmax(1) == teacher(X).argmax(1)).float().mean())


class _Counting(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_transfer_indices_fraction_and_omitted_class():
    y = torch.arange(100) % 5
    idx = transfer_indices(y, omit_class=3)
    assert len(idx) == 80 and not (y[idx] == 3).any()
    half = transfer_indices(y, fraction=0.5, seed=1)
    assert len(half) == 50 and torch.equal(half, transfer_indices(y, fraction=0.5, seed=1))
    assert not torch.equal(half, transfer_indices(y, fraction=0.5, seed=2))
    assert torch.equal(half, half.sort().values) and len(set(half.tolist())) == 50


def test_transfer_indices_errors():
    y = torch.tensor([0, 1, 1])
    with pytest.raises(ValueError, match="omit_class 7 does not occur"):
        transfer_indices(y, omit_class=7)
    with pytest.raises(ValueError, match=r"fraction must be in \[0.0, 1.0\], got 1.5"):
        transfer_indices(y, fraction=1.5)
    with pytest.raises(ValueError, match="fraction must be > 0"):
        transfer_indices(y, fraction=0.0)


def test_distillation_raises_agreement_with_the_teacher():
    teacher, data = _toy()
    student = build_model("mlp", input_shape=(10,), num_classes=4, hidden=[32], seed=0)
    before = _agreement(student, teacher, data.X_test)
    result = distill(student, teacher, data, temperature=2.0, alpha=0.0, transfer="unlabelled",
                     epochs=15, batch_size=32, lr=0.05, progress=False)
    after = _agreement(student, teacher, data.X_test)
    assert before < 0.4 and after > 0.65, (before, after)
    assert result.transfer_size == len(data.y_train) and len(result.history) >= 1


def test_unlabelled_transfer_never_reads_the_labels():
    teacher, data = _toy()
    scrambled = Splits(data.X_train, data.y_train[torch.randperm(len(data.y_train))], data.X_val, data.y_val,
                       data.X_test, data.y_test, data.class_names)
    weights = []
    for d in (data, scrambled):
        student = build_model("mlp", input_shape=(10,), num_classes=4, hidden=[8], seed=3)
        distill(student, teacher, d, transfer="unlabelled", epochs=2, batch_size=64, progress=False,
                early_stopping_patience=None, restore_best=False)
        weights.append([p.detach().clone() for p in student.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))


def test_precomputed_logits_equal_the_teacher_module():
    teacher, data = _toy()
    with torch.no_grad():
        logits = teacher(data.X_train)
    runs = []
    for t in (teacher, logits):
        student = build_model("mlp", input_shape=(10,), num_classes=4, hidden=[8], seed=1)
        distill(student, t, data, epochs=2, batch_size=64, progress=False)
        runs.append(torch.cat([p.detach().flatten() for p in student.parameters()]))
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=1e-6)


def test_cache_hit_skips_the_teacher(tmp_path):
    teacher, data = _toy()
    counting = _Counting(teacher)
    for _ in range(2):
        student = build_model("mlp", input_shape=(10,), num_classes=4, hidden=[8], seed=1)
        distill(student, counting, data, epochs=1, batch_size=64, cache_dir=tmp_path, progress=False)
        if _ == 0:
            calls_after_first = counting.calls
    assert calls_after_first >= 1
    assert counting.calls == calls_after_first  # the second run read the cache
    assert len(list(tmp_path.glob("*.safetensors"))) == 1


def test_teacher_with_other_classes_is_refused_before_training():
    _, data = _toy()
    wrong = nn.Linear(10, 7)
    student = build_model("mlp", input_shape=(10,), num_classes=4, hidden=[8])
    before = [p.detach().clone() for p in student.parameters()]
    with pytest.raises(ValueError, match="teacher has 7 classes but the data has 4"):
        distill(student, wrong, data, epochs=1, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, student.parameters()))


def test_student_with_other_classes_is_refused():
    teacher, data = _toy()
    student = build_model("mlp", input_shape=(10,), num_classes=3, hidden=[8])
    with pytest.raises(ValueError, match="student has 3 outputs but the data has 4 classes"):
        distill(student, teacher, data, epochs=1, progress=False)


def test_precomputed_logits_of_the_wrong_shape():
    _, data = _toy()
    with pytest.raises(ValueError, match=r"teacher logits must have shape \(N, C\) with N = 360 rows"):
        resolve_teacher_logits(torch.zeros(5, 4), data.X_train)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"temperature": 0.0}, ValueError, r"temperature must be a finite number > 0, got 0.0"),
        ({"temperature": math.inf}, ValueError, r"temperature must be a finite number > 0"),
        ({"alpha": 1.5}, ValueError, r"alpha must be in \[0.0, 1.0\], got 1.5"),
        ({"divergence": "hellinger"}, ValueError, r"divergence must be one of 'kl', 'reverse_kl', 'js'"),
        ({"transfer": "test"}, ValueError, r"transfer must be one of 'train', 'unlabelled'"),
    ],
)
def test_bad_hyperparameters(kwargs, error, match):
    teacher, data = _toy()
    student = build_model("mlp", input_shape=(10,), num_classes=4, hidden=[8])
    with pytest.raises(error, match=match):
        distill(student, teacher, data, epochs=1, progress=False, **kwargs)


def test_high_temperature_with_a_large_step_is_stopped_with_a_clear_message():
    """T = 20 with an ordinary SGD step diverged in a plain loop; here it stops and says why."""
    teacher, data = _toy()
    with torch.no_grad():
        logits = teacher(data.X_train) * 50  # a confident teacher: large logit gaps
    student = build_model("mlp", input_shape=(10,), num_classes=4, hidden=[64], seed=0)
    with pytest.raises(DistillationDivergedError, match=r"T = 20.*logit matching.*Try a smaller lr") as info:
        distill(student, logits, data, temperature=20.0, alpha=0.1, lr=50.0, momentum=0.9, max_grad_norm=None,
                epochs=5, batch_size=32, progress=False)
    assert isinstance(info.value, TrainingDivergedError)


def test_gradient_clipping_guards_the_same_run():
    teacher, data = _toy()
    with torch.no_grad():
        logits = teacher(data.X_train) * 50
    student = build_model("mlp", input_shape=(10,), num_classes=4, hidden=[64], seed=0)
    result = distill(student, logits, data, temperature=20.0, alpha=0.1, lr=0.5, momentum=0.9, max_grad_norm=1.0,
                     epochs=3, batch_size=32, progress=False)
    assert all(math.isfinite(h["loss"]) for h in result.history)


def test_missing_class_bias_adjustment_recovers_the_class():
    # Hinton et al.: a student that never saw a class learns it from soft targets, but its bias is too low.
    teacher, data = _toy(n=1200)
    student = build_model("mlp", input_shape=(10,), num_classes=4, hidden=[32], seed=0)
    result = distill(student, teacher, data, temperature=4.0, alpha=0.0, omit_class=2, epochs=20,
                     batch_size=32, lr=0.05, progress=False)
    assert result.transfer_size == int((data.y_train != 2).sum())
    assert result.bias_shift is not None and result.bias_shift >= 0
    with torch.no_grad():
        pred = student.eval()(data.X_test).argmax(1)
    is2 = data.y_test == 2
    assert float((pred[is2] == 2).float().mean()) > 0.5  # class 2 is recognised without a single example


def test_adjust_bias_picks_the_best_shift_by_validation_accuracy():
    model = nn.Sequential(nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))
        model[0].bias.copy_(torch.tensor([0.0, -3.0]))
    X = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([1, 0, 1])
    shift = adjust_missing_class_bias(model, 1, X, y)
    # accuracy is 3/3 from a shift above 2 (x=(0,1): logit 1 - 3 + s > 0 needs s > 2); the grid steps by 0.25 and
    # 2.0 ties (argmax takes the first): the first best is 2.25
    assert shift == 2.25
    assert float(model[0].bias[1].detach()) == pytest.approx(-0.75)


def test_adjust_bias_needs_a_linear_layer():
    with pytest.raises(ValueError, match="no final nn.Linear layer with a bias"):
        adjust_missing_class_bias(nn.Sequential(nn.Identity()), 0, torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))


def test_sweep_scores_every_pair_and_picks_the_lowest_validation_nll():
    teacher, data = _toy()
    with torch.no_grad():
        logits = teacher(data.X_train)
    make = lambda: build_model("mlp", input_shape=(10,), num_classes=4, hidden=[8], seed=0)
    result = sweep(make, logits, data, temperatures=[1.0, 4.0], alphas=[0.0, 0.5], epochs=2, batch_size=64)
    assert [(r["temperature"], r["alpha"]) for r in result.rows] == [(1.0, 0.0), (1.0, 0.5), (4.0, 0.0), (4.0, 0.5)]
    assert result.best == min(result.rows, key=lambda r: r["val_nll"])
    # each row's score is what a fresh distillation with that pair gives on the validation split
    row = result.rows[3]
    student = make()
    distill(student, logits, data, temperature=4.0, alpha=0.5, epochs=2, batch_size=64, progress=False)
    with torch.no_grad():
        nll = torch.nn.functional.cross_entropy(student.eval()(data.X_val), data.y_val).item()
    assert row["val_nll"] == pytest.approx(nll, rel=1e-5)


def test_sweep_needs_validation_data_and_a_grid():
    teacher, data = _toy()
    no_val = Splits(data.X_train, data.y_train, class_names=data.class_names)
    make = lambda: build_model("mlp", input_shape=(10,), num_classes=4, hidden=[8])
    with pytest.raises(ValueError, match="sweep needs a validation split"):
        sweep(make, torch.zeros(360, 4), no_val, temperatures=[1.0], alphas=[0.0])
    with pytest.raises(ValueError, match="at least one temperature and one alpha"):
        sweep(make, torch.zeros(360, 4), data, temperatures=[], alphas=[0.0])


def test_gradient_clipping_by_default(monkeypatch):
    """distill clips at norm 5.0 unless told otherwise (None turns it off)."""
    import darkknowledge.distill as distill_module

    seen = []
    real_fit = distill_module.fit

    def spy(*args, **kwargs):
        seen.append(kwargs["max_grad_norm"])
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(distill_module, "fit", spy)
    teacher, data = _toy()
    for norm in ({}, {"max_grad_norm": None}, {"max_grad_norm": 2}):
        student = build_model("mlp", input_shape=(10,), num_classes=4, hidden=[8], seed=0)
        distill(student, teacher, data, epochs=1, progress=False, **norm)
    assert seen == [5.0, None, 2.0]
    with pytest.raises(ValueError, match=r"max_grad_norm must be a finite number > 0, got -1"):
        distill(student, teacher, data, max_grad_norm=-1, epochs=1, progress=False)


def test_distill_checks_labels_once_with_a_clear_error():
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(150, 6, generator=g), torch.randint(0, 4, (150,), generator=g)
    y[:4] = torch.arange(4)
    data = Splits(X[:100], y[:100], X[100:], y[100:])
    bad = Splits(data.X_train, data.y_train.clone(), data.X_val, data.y_val)
    bad.y_train[3] = -1
    teacher = torch.randn(100, 4)
    with pytest.raises(ValueError, match=r"data.y_train must hold class ids in \[0, 3\], got values in \[-1, 3\]"):
        distill(build_model("mlp", input_shape=(6,), num_classes=4, hidden=[8], seed=0), teacher, bad, temperature=2.0, alpha=0.5, epochs=1, progress=False)
