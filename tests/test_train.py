"""The training loop against independent references: the weight-decay formula, NumPy least squares,
statsmodels' logistic MLE, scikit-learn's multinomial logistic regression; early stopping, divergence,
resume bit for bit, determinism, the run folder, and every error message."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits
from torch import nn

from darkknowledge.checkpoint import load_model
from darkknowledge.data._types import Splits
from darkknowledge.models import build_model
from darkknowledge.rundir import RunFolderError
from darkknowledge.schedules import build_scheduler, lr_factor
from darkknowledge.losses import TrainingDistillationLoss, distillation_loss
from darkknowledge.train import (
    data_fingerprint,
    clip_grad_norm,
    LOSS_NAMES,
    TrainingDivergedError,
    evaluate_loss_accuracy,
    fit,
    make_optimizer,
    predict_logits,
)

LOG_KEYS = {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"}


def _blobs(n=120, n_val=40, d=6, k=3, seed=0, dtype=torch.float32):
    """Gaussian blobs: k classes in d dimensions, separable but not trivially."""
    g = torch.Generator().manual_seed(seed)
    centers = 2.0 * torch.randn(k, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n + n_val,), generator=g)
    X = (centers[y] + torch.randn(n + n_val, d, generator=g, dtype=torch.float64)).to(dtype)
    return Splits(X[:n], y[:n], X[n:], y[n:], class_names=[str(i) for i in range(k)])


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One thread for torch and BLAS: on a small, shared machine thread pools only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    """Digits 75/25 stratified split, standardised by hand with training statistics."""
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    mu, sd = Xtr.mean(0), Xtr.std(0)
    sd[sd == 0] = 1.0
    Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
    return Xtr, ytr, Xte, yte


# ----------------------------------------------------------------------------- the update rule


def test_weight_decay_one_step_matches_the_notes_formula():
    # w <- (1 - 2 eta lambda) w - eta grad L, for the weights; b <- b - eta grad L (no decay)
    data = _blobs(n=10, n_val=0, d=3, k=4, dtype=torch.float64)
    data = Splits(data.X_train, data.y_train)
    model = build_model("softmax-regression", input_shape=(3,), num_classes=4, seed=3).double()
    W0 = model.out.weight.detach().numpy().copy()
    b0 = model.out.bias.detach().numpy().copy()
    eta, lam = 0.1, 0.05
    fit(model, data, epochs=1, batch_size=10, lr=eta, momentum=0.0, weight_decay=lam, lr_schedule="constant")

    X, y = data.X_train.numpy(), data.y_train.numpy()
    z = X @ W0.T + b0
    P = np.exp(z - z.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    Y = np.eye(4)[y]
    grad_W = (P - Y).T @ X / len(X)  # d mean CE / dW, analytic
    grad_b = (P - Y).mean(0)
    np.testing.assert_allclose(model.out.weight.detach().numpy(), (1 - 2 * eta * lam) * W0 - eta * grad_W, atol=1e-13)
    np.testing.assert_allclose(model.out.bias.detach().numpy(), b0 - eta * grad_b, atol=1e-13)


def test_biases_and_norm_parameters_are_not_decayed():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)).double()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-1, 1)
    before = _state(model)
    data = Splits(torch.randn(8, 3, dtype=torch.float64), torch.zeros(8, dtype=torch.long))
    zero_loss = lambda out, y, idx: 0.0 * out.sum()  # noqa: E731 -- zero gradient: only the decay acts
    eta, lam = 0.1, 0.05
    fit(model, data, loss=zero_loss, epochs=1, batch_size=8, lr=eta, momentum=0.0, weight_decay=lam, lr_schedule="constant")
    after = model.state_dict()
    for k in ("0.weight", "2.weight"):
        torch.testing.assert_close(after[k], (1 - 2 * eta * lam) * before[k], rtol=0, atol=1e-15)
    for k in ("0.bias", "1.weight", "1.bias", "2.bias"):
        assert torch.equal(after[k], before[k]), k


def test_make_optimizer_groups():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 2))
    opt = make_optimizer(model, lr=0.1, momentum=0.9, weight_decay=0.25)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.5 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert len(no_decay["params"]) == 4  # conv bias, BN weight and bias, linear bias
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match=r"model has no trainable parameters"):
        make_optimizer(frozen, lr=0.1)


def test_max_grad_norm_clips_the_step():
    model = nn.Linear(5, 3).double()
    before = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
    data = Splits(torch.randn(4, 5, dtype=torch.float64), torch.zeros(4, dtype=torch.long))
    big = lambda out, y, idx: 1000.0 * out.sum()  # noqa: E731 -- gradient norm >> 1
    fit(model, data, loss=big, epochs=1, batch_size=4, lr=0.1, momentum=0.0, lr_schedule="constant", max_grad_norm=1.0)
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert math.isclose(float((after - before).norm()), 0.1 * 1.0, rel_tol=1e-5)


# ----------------------------------------------------------------------------- maximum-likelihood fits


def test_least_squares_is_the_mse_fit():
    # Gaussian maximum likelihood = least squares: the linear model trained with MSE equals lstsq.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3))
    y = X @ np.array([1.5, -2.0, 0.7]) + 0.5 + 0.3 * rng.standard_normal(200)
    coef, *_ = np.linalg.lstsq(np.c_[X, np.ones(200)], y, rcond=None)
    data = Splits(torch.tensor(X), torch.tensor(y))
    model = build_model("linear", input_shape=(3,), num_classes=1, seed=0).double()
    result = fit(model, data, loss="mse", epochs=300, batch_size=200, lr=0.1, momentum=0.9, lr_schedule="constant")
    np.testing.assert_allclose(model.out.weight.detach().numpy().ravel(), coef[:3], atol=1e-6)
    np.testing.assert_allclose(model.out.bias.detach().numpy(), coef[3:], atol=1e-6)
    assert result.history[-1]["accuracy"] is None  # no accuracy for regression
    resid = y - np.c_[X, np.ones(200)] @ coef
    assert math.isclose(evaluate_loss_accuracy(model, data.X_train, data.y_train, loss="mse")[0], np.mean(resid**2), rel_tol=1e-8)


def test_logistic_bce_fit_is_the_statsmodels_mle():
    import statsmodels.api as sm  # heavy import, only here
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 2))
    p = 1 / (1 + np.exp(-(X @ np.array([1.2, -0.8]) + 0.3)))
    y = (rng.random(300) < p).astype(np.float64)
    ref = sm.Logit(y, sm.add_constant(X)).fit(disp=0).params  # (intercept, w1, w2)
    data = Splits(torch.tensor(X), torch.tensor(y))
    model = build_model("logistic", input_shape=(2,), num_classes=2, seed=0).double()
    fit(model, data, loss="bce", epochs=400, batch_size=300, lr=1.0, momentum=0.9, lr_schedule="constant")
    np.testing.assert_allclose(model.out.weight.detach().numpy().ravel(), ref[1:], atol=1e-5)
    np.testing.assert_allclose(model.out.bias.detach().numpy(), ref[:1], atol=1e-5)
    loss, acc = evaluate_loss_accuracy(model, data.X_train, data.y_train, loss="bce")
    z = np.c_[np.ones(300), X] @ ref
    assert math.isclose(loss, np.mean(np.logaddexp(0, z) - y * z), rel_tol=1e-8)
    assert acc == np.mean((z > 0) == (y > 0.5))


def test_softmax_regression_matches_sklearn_multinomial(digits):
    # ours: mean CE + lambda ||W||^2 (bias free); sklearn: C * sum CE + ||W||^2 / 2.
    # Dividing sklearn's objective by C N gives ours with lambda = 1 / (2 C N), i.e. C = 1 / (2 lambda N).
    Xtr, ytr, Xte, yte = digits
    lam, N = 1e-3, len(Xtr)
    sk = LogisticRegression(C=1.0 / (2 * lam * N), max_iter=2000).fit(Xtr, ytr)
    data = Splits(torch.tensor(Xtr, dtype=torch.float32), torch.tensor(ytr))
    model = build_model("softmax-regression", input_shape=(64,), num_classes=10, seed=0)
    fit(model, data, epochs=50, batch_size=64, lr=0.2, weight_decay=lam)

    def objective(W, b):
        z = Xtr @ W.T + b
        logp = z - z.max(1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(1, keepdims=True))
        return -logp[np.arange(N), ytr].mean() + lam * (W**2).sum()

    ours = objective(model.out.weight.detach().double().numpy(), model.out.bias.detach().double().numpy())
    theirs = objective(sk.coef_, sk.intercept_)
    assert theirs - 1e-4 <= ours <= theirs + 5e-3  # the same convex objective, near its minimum
    acc = (predict_logits(model, torch.tensor(Xte, dtype=torch.float32)).argmax(1).numpy() == yte).mean()
    assert abs(acc - sk.score(Xte, yte)) <= 0.01


def test_mlp_on_digits_reaches_97_percent(digits):
    Xtr, ytr, Xte, yte = digits
    data = Splits(torch.tensor(Xtr, dtype=torch.float32), torch.tensor(ytr))
    model = build_model("mlp", input_shape=(64,), num_classes=10, hidden=(512,), dropout=0.3, seed=0)
    fit(model, data, epochs=30, batch_size=64, lr=0.05, weight_decay=5e-4)
    acc = (predict_logits(model, torch.tensor(Xte, dtype=torch.float32)).argmax(1).numpy() == yte).mean()
    assert acc >= 0.97


# ----------------------------------------------------------------------------- early stopping


def _rising_val_loss_data():
    # validation labels are the training labels flipped: the better the fit, the worse the val loss
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 5, generator=g)
    y = (X[:, 0] > 0).long()
    return Splits(X, y, X, 1 - y)


@pytest.mark.parametrize("patience", [None, 2])
def test_early_stopping_restores_best_weights(patience):
    data = _rising_val_loss_data()
    model = build_model("softmax-regression", input_shape=(5,), num_classes=2, seed=0)
    snapshots = {}
    result = fit(
        model, data, epochs=8, batch_size=50, lr=0.5, lr_schedule="constant",
        early_stopping_patience=patience, on_epoch_end=lambda e, m: snapshots.__setitem__(e, _state(model)),
    )
    val = [h["val_loss"] for h in result.history]
    assert all(a < b for a, b in zip(val, val[1:]))  # the set-up: val loss rises every epoch
    assert result.best_epoch == 1 and result.best_val_loss == val[0]
    _assert_same_weights(model.state_dict(), snapshots[1])
    ref = F.cross_entropy(model(data.X_val), data.y_val).item()  # independent recomputation
    assert math.isclose(ref, result.best_val_loss, rel_tol=1e-5)
    ref_acc = (model(data.X_val).argmax(1) == data.y_val).sum().item() / len(data.y_val)
    assert ref_acc == result.best_val_accuracy
    if patience is None:
        assert result.epochs_run == 8 and not result.stopped_early
    else:
        assert result.epochs_run == 3 and result.stopped_early


def test_restore_best_false_keeps_last():
    data = _rising_val_loss_data()
    model = build_model("softmax-regression", input_shape=(5,), num_classes=2, seed=0)
    snapshots = {}
    result = fit(model, data, epochs=3, batch_size=50, lr=0.5, restore_best=False,
                 on_epoch_end=lambda e, m: snapshots.__setitem__(e, _state(model)))
    _assert_same_weights(model.state_dict(), snapshots[3])
    assert result.best_epoch == 3 and result.best_val_loss == result.history[-1]["val_loss"]


def test_without_validation_trains_all_epochs_and_keeps_last():
    data = _blobs()
    data = Splits(data.X_train, data.y_train)
    model = build_model("mlp", input_shape=(6,), num_classes=3, hidden=(8,), seed=0)
    snapshots = {}
    result = fit(model, data, epochs=3, batch_size=32, on_epoch_end=lambda e, m: snapshots.__setitem__(e, _state(model)))
    assert result.epochs_run == 3 and result.best_epoch == 3 and not result.stopped_early
    assert result.best_val_loss is None and result.best_val_accuracy is None
    assert all(h["val_loss"] is None and h["val_accuracy"] is None for h in result.history)
    _assert_same_weights(model.state_dict(), snapshots[3])
    assert not model.training  # fit leaves the model in eval mode


# ----------------------------------------------------------------------------- divergence


def test_nonfinite_loss_names_epoch_step_and_lr():
    data = Splits(torch.randn(40, 3), torch.zeros(40, dtype=torch.long))  # 3 steps per epoch of 16
    calls = []

    def nan_on_fifth_call(out, y, idx):
        calls.append(1)
        loss = F.cross_entropy(out, y)
        return loss * float("nan") if len(calls) == 5 else loss

    model = build_model("softmax-regression", input_shape=(3,), num_classes=2, seed=0)
    with pytest.raises(TrainingDivergedError, match=r"became nan at epoch 2, step 2 \(lr=0\.1\); lower the learning rate or the temperature"):
        fit(model, data, loss=nan_on_fifth_call, epochs=3, batch_size=16, lr=0.1, lr_schedule="constant")
    assert issubclass(TrainingDivergedError, ValueError)


def test_real_divergence_is_caught():
    g = torch.Generator().manual_seed(0)
    X = 10 * torch.randn(64, 4, generator=g)
    data = Splits(X, X.sum(1))
    model = build_model("linear", input_shape=(4,), num_classes=1, seed=0)
    with pytest.raises(TrainingDivergedError, match=r"at epoch \d+, step \d+ \(lr=100\); lower the learning rate"):
        fit(model, data, loss="mse", epochs=100, batch_size=16, lr=100.0, momentum=0.0, lr_schedule="constant")


# ----------------------------------------------------------------------------- callable losses


def test_callable_loss_gets_rows_of_x_train_and_val_loss_is_cross_entropy():
    data = _blobs()
    seen = []

    def recording_loss(out, y, index):
        assert index.dtype == torch.int64
        assert torch.equal(y, data.y_train[index])
        seen.append(index.clone())
        return F.cross_entropy(out, y, label_smoothing=0.1)

    model = build_model("softmax-regression", input_shape=(6,), num_classes=3, seed=0)
    result = fit(model, data, loss=recording_loss, epochs=2, batch_size=50, restore_best=False)
    per_epoch = len(seen) // 2
    for e in range(2):
        assert sorted(torch.cat(seen[e * per_epoch : (e + 1) * per_epoch]).tolist()) == list(range(120))
    # validation loss is plain cross-entropy, not the training callable
    ref = F.cross_entropy(model(data.X_val), data.y_val).item()
    assert math.isclose(result.history[-1]["val_loss"], ref, rel_tol=1e-5)


# ----------------------------------------------------------------------------- resume, determinism, files


_RESUME_KW = dict(
    epochs=4, batch_size=32, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3, warmup_epochs=1, seed=3
)


def _resume_model(seed):
    return build_model("mlp", input_shape=(6,), num_classes=3, hidden=(16,), dropout=0.3, seed=seed)


class _Interrupt(Exception):
    pass


def _interrupt_after(n):
    def hook(epoch, metrics):
        if epoch == n:
            raise _Interrupt(epoch)
    return hook


@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "constant"])
def test_resume_equals_uninterrupted_run_bit_for_bit(tmp_path, schedule):
    data = _blobs()
    kw = dict(_RESUME_KW, lr_schedule=schedule)
    with pytest.raises(_Interrupt):
        fit(_resume_model(0), data, out_dir=tmp_path / "a", on_epoch_end=_interrupt_after(2), **kw)
    assert len((tmp_path / "a" / "log.jsonl").read_text().splitlines()) == 2
    resumed_model = _resume_model(99)  # a different init: resume must load the checkpoint's weights
    resumed = fit(resumed_model, data, out_dir=tmp_path / "a", resume=True, **kw)
    full_model = _resume_model(0)
    full = fit(full_model, data, out_dir=tmp_path / "b", **kw)

    _assert_same_weights(resumed_model.state_dict(), full_model.state_dict())
    strip = lambda hs: [{k: v for k, v in h.items() if k != "seconds"} for h in hs]  # noqa: E731
    assert strip(resumed.history) == strip(full.history)
    assert (resumed.best_epoch, resumed.best_val_loss) == (full.best_epoch, full.best_val_loss)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    lines = [json.loads(s) for s in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]


def test_resume_with_other_settings_is_refused(tmp_path):
    data = _blobs()
    with pytest.raises(_Interrupt):
        fit(_resume_model(0), data, out_dir=tmp_path, on_epoch_end=_interrupt_after(1), **_RESUME_KW)
    kw = dict(_RESUME_KW, lr=0.2)
    with pytest.raises(ValueError, match=r"cannot resume from .*last.safetensors: the configuration differs \(lr: 0.1 then, 0.2 now\)"):
        fit(_resume_model(0), data, out_dir=tmp_path, resume=True, **kw)


def test_resume_without_checkpoint_starts_fresh_and_finished_run_is_kept(tmp_path):
    data = _blobs()
    kw = dict(_RESUME_KW, epochs=2)
    a = _resume_model(0)
    fit(a, data, out_dir=tmp_path / "a", resume=True, **kw)  # nothing to resume: a fresh run
    b = _resume_model(0)
    fit(b, data, **kw)
    _assert_same_weights(a.state_dict(), b.state_dict())
    c = _resume_model(5)
    again = fit(c, data, out_dir=tmp_path / "a", resume=True, **kw)  # already finished: no more epochs
    _assert_same_weights(c.state_dict(), a.state_dict())
    assert again.epochs_run == 2


def test_same_seed_same_run_other_seed_other_run():
    data = _blobs()
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        m = _resume_model(0)
        h = fit(m, data, epochs=2, batch_size=32, seed=seed).history
        runs[name] = (_state(m), [x["loss"] for x in h])
    _assert_same_weights(runs["a"][0], runs["b"][0])
    assert runs["a"][1] == runs["b"][1]
    assert runs["a"][1] != runs["c"][1]  # other shuffles and dropout masks


def test_run_folder_layout_log_and_config(tmp_path):
    data = _blobs()
    model = _resume_model(0)
    result = fit(model, data, out_dir=tmp_path, epochs=3, batch_size=32, weight_decay=1e-4)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "log.jsonl", "checkpoint", "model.safetensors", "model.json",
                                                  ".darkknowledge-run", ".darkknowledge-lock"}
    assert json.loads((tmp_path / ".darkknowledge-run").read_text())["kind"] == "fit"
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    rows = [json.loads(s) for s in lines]
    assert len(rows) == 3 and all(set(r) == LOG_KEYS for r in rows)
    assert rows == result.history
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_spec"] == model.spec.to_dict()
    assert config["weight_decay"] == 1e-4 and config["epochs"] == 3 and config["loss"] == "cross_entropy"
    assert config["data"] == {"n_train": 120, "n_val": 40, "input_shape": [6], "sha256": data_fingerprint(data)}
    loaded = load_model(tmp_path)
    torch.testing.assert_close(loaded(data.X_val), predict_logits(model, data.X_val), rtol=0, atol=0)
    assert loaded.metadata["best_epoch"] == result.best_epoch
    state = load_file(tmp_path / "checkpoint" / "last.safetensors")
    assert {"rng.torch", "rng.generator"} <= set(state)
    assert any(k.startswith("optimizer.") for k in state)  # momentum buffers


def test_callable_loss_recorded_by_name_in_config(tmp_path):
    def my_distillation_loss(out, y, idx):
        return F.cross_entropy(out, y)

    fit(_resume_model(0), _blobs(), loss=my_distillation_loss, out_dir=tmp_path, epochs=1)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["loss"].startswith("callable:") and config["loss"].endswith("my_distillation_loss")


def test_progress_bar_only_when_asked(capsys):
    data = _blobs()
    fit(_resume_model(0), data, epochs=2, progress=False)
    assert capsys.readouterr().err == ""
    fit(_resume_model(0), data, epochs=2, progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "val_loss" in err


# ----------------------------------------------------------------------------- schedules


def test_lr_in_history_follows_the_schedule():
    data = _blobs()  # 120 rows, batch 32 -> 4 steps per epoch
    const = fit(_resume_model(0), data, epochs=2, batch_size=32, lr=0.07, lr_schedule="constant")
    assert [h["lr"] for h in const.history] == [0.07, 0.07]
    cos = fit(_resume_model(0), data, epochs=2, batch_size=32, lr=0.07, lr_schedule="cosine")
    T = 8
    assert math.isclose(cos.history[-1]["lr"], 0.07 * 0.5 * (1 + math.cos(math.pi * (T - 1) / T)))
    assert math.isclose(cos.history[0]["lr"], 0.07 * 0.5 * (1 + math.cos(math.pi * 3 / T)))


@pytest.mark.parametrize("schedule, warmup", [("constant", 0), ("constant", 3), ("cosine", 0), ("cosine", 4)])
def test_lambda_schedules_match_the_formula(schedule, warmup):
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.3)
    T = 10
    sched = build_scheduler(opt, schedule=schedule, total_steps=T, warmup_steps=warmup)
    for t in range(T):
        if t < warmup:
            expected = 0.3 * (t + 1) / warmup
        elif schedule == "constant":
            expected = 0.3
        else:
            expected = 0.3 * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (T - warmup)))
        assert math.isclose(opt.param_groups[0]["lr"], expected, rel_tol=1e-12, abs_tol=1e-15), t
        opt.step()
        sched.step()


def test_onecycle_peaks_after_warmup_and_keeps_momentum():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.4, momentum=0.9)
    sched = build_scheduler(opt, schedule="onecycle", total_steps=20, warmup_steps=5)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        assert opt.param_groups[0]["momentum"] == 0.9
        opt.step()
        sched.step()
    assert math.isclose(lrs[0], 0.4 / 25)  # torch's default div_factor
    assert int(np.argmax(lrs)) == 4 and math.isclose(max(lrs), 0.4)
    assert lrs[-1] < 1e-5


def test_schedule_errors():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match=r"lr_schedule must be one of 'constant', 'cosine', 'onecycle'; got 'step'"):
        build_scheduler(opt, schedule="step", total_steps=5)
    with pytest.raises(ValueError, match=r"warmup_steps must be < total_steps=5, got 5 instead"):
        build_scheduler(opt, schedule="cosine", total_steps=5, warmup_steps=5)
    with pytest.raises(ValueError, match=r"schedule must be one of 'constant', 'cosine'; got 'onecycle'"):
        lr_factor(0, schedule="onecycle", total_steps=5)


# ----------------------------------------------------------------------------- evaluation helpers


def test_evaluate_loss_accuracy_against_torch_functional():
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(50, 4, generator=g), torch.randint(0, 3, (50,), generator=g)
    model = nn.Linear(4, 3)
    loss, acc = evaluate_loss_accuracy(model, X, y, batch_size=7)
    with torch.no_grad():
        out = model(X)
    assert math.isclose(loss, F.cross_entropy(out, y).item(), rel_tol=1e-6)
    assert acc == (out.argmax(1) == y).sum().item() / 50
    yf = torch.randn(50, generator=g)
    lin = nn.Linear(4, 1)
    mse, none = evaluate_loss_accuracy(lin, X, yf, loss="mse")
    assert none is None
    assert math.isclose(mse, F.mse_loss(lin(X).detach().squeeze(1), yf).item(), rel_tol=1e-6)
    yb = (yf > 0).float()
    bce, bacc = evaluate_loss_accuracy(lin, X, yb, loss="bce")
    assert math.isclose(bce, F.binary_cross_entropy_with_logits(lin(X).detach().squeeze(1), yb).item(), rel_tol=1e-6)
    assert bacc == ((lin(X).detach().squeeze(1) > 0) == (yb > 0.5)).sum().item() / 50
    assert LOSS_NAMES == ("cross_entropy", "mse", "bce")


def test_predict_logits_is_eval_mode_batched_and_restores_mode():
    model = build_model("mlp", input_shape=(6,), num_classes=3, hidden=(32,), dropout=0.5, seed=0)
    model.train()
    X = torch.randn(37, 6)
    a = predict_logits(model, X, batch_size=5)
    b = predict_logits(model, X, batch_size=1000)
    torch.testing.assert_close(a, b)  # no dropout, chunking does not matter
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(a, model(X))
    assert not a.requires_grad


def test_evaluation_helper_errors():
    model = nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"X must be a torch.Tensor or a dict of tensors, got list instead"):
        predict_logits(model, [[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"X must have at least one row, got 0 instead"):
        predict_logits(model, torch.zeros(0, 2))
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1, got 0 instead"):
        predict_logits(model, torch.zeros(3, 2), batch_size=0)
    with pytest.raises(ValueError, match=r"y must be a tensor with one target per row of X \(3\), got a tensor of shape \(2,\)"):
        evaluate_loss_accuracy(model, torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"loss must be one of 'cross_entropy', 'mse', 'bce'; got 'hinge'"):
        evaluate_loss_accuracy(model, torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), loss="hinge")


# ----------------------------------------------------------------------------- argument errors


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"loss": "ce"}, ValueError, r"loss must be one of 'cross_entropy', 'mse', 'bce'; got 'ce' instead"),
        ({"epochs": 0}, ValueError, r"epochs must be an integer >= 1, got 0 instead"),
        ({"epochs": 2.0}, TypeError, r"epochs must be an integer, got float instead"),
        ({"batch_size": 0}, ValueError, r"batch_size must be an integer >= 1, got 0 instead"),
        ({"lr": 0}, ValueError, r"lr must be a finite number > 0, got 0 instead"),
        ({"lr": float("nan")}, ValueError, r"lr must be a finite number > 0, got nan instead"),
        ({"momentum": 1.0}, ValueError, r"momentum must be in \[0, 1\), got 1.0 instead"),
        ({"momentum": -0.1}, ValueError, r"momentum must be in \[0.0, 1.0\], got -0.1 instead"),
        ({"momentum": 0.0, "nesterov": True}, ValueError, r"nesterov=True needs momentum > 0, got momentum=0.0 instead"),
        ({"weight_decay": -1e-3}, ValueError, r"weight_decay must be a finite number >= 0, got -0.001 instead"),
        ({"weight_decay": "0.1"}, TypeError, r"weight_decay must be a number, got str instead"),
        ({"lr_schedule": "step"}, ValueError, r"lr_schedule must be one of 'constant', 'cosine', 'onecycle'; got 'step'"),
        ({"warmup_epochs": 2, "epochs": 2}, ValueError, r"warmup_epochs must be < epochs=2, got 2 instead"),
        ({"warmup_epochs": -1}, ValueError, r"warmup_epochs must be an integer >= 0, got -1 instead"),
        ({"early_stopping_patience": 0}, ValueError, r"early_stopping_patience must be an integer >= 1, got 0 instead"),
        ({"seed": -1}, ValueError, r"seed must be an integer >= 0, got -1 instead"),
        ({"log_every": 0}, ValueError, r"log_every must be an integer >= 1, got 0 instead"),
        ({"max_grad_norm": 0.0}, ValueError, r"max_grad_norm must be a finite number > 0, got 0.0 instead"),
        ({"on_epoch_end": 3}, TypeError, r"on_epoch_end must be callable or None, got int instead"),
    ],
)
def test_bad_fit_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fit(_resume_model(0), _blobs(n=20, n_val=10), **kwargs)


def test_bad_data_and_model():
    good = _blobs(n=20, n_val=10)
    model = _resume_model(0)
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got str instead"):
        fit("mlp", good)
    with pytest.raises(TypeError, match=r"data.X_train must be a torch.Tensor \(data must be a darkknowledge.data Splits\), got ndarray"):
        fit(model, Splits(np.zeros((4, 6)), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"data.X_train and data.y_train must have the same number \(> 0\) of rows, got 20 and 19"):
        fit(model, Splits(good.X_train, good.y_train[:19]))
    with pytest.raises(ValueError, match=r"data.X_val and data.y_val must both be None or have the same number of rows"):
        fit(model, Splits(good.X_train, good.y_train, good.X_val, None))
    with pytest.raises(ValueError, match=r"early_stopping_patience needs a validation split"):
        fit(model, Splits(good.X_train, good.y_train), early_stopping_patience=3)
    with pytest.raises(TypeError, match=r"data.X_train is torch.float64 but the model's parameters are torch.float32"):
        fit(model, Splits(good.X_train.double(), good.y_train))
    with pytest.raises(TypeError, match=r"data.y_train must hold integer class ids for cross-entropy, got dtype torch.float32"):
        fit(model, Splits(good.X_train, good.y_train.float()))
    with pytest.raises(ValueError, match=r"model output of shape \(20, 3\) does not fit targets of shape \(20,\) for loss 'mse'"):
        fit(model, Splits(good.X_train, good.y_train.float()), loss="mse", batch_size=32)


def test_fresh_start_in_a_used_folder_drops_the_old_run(tmp_path):
    data = _blobs()
    fit(_resume_model(0), data, out_dir=tmp_path, **_RESUME_KW)
    assert (tmp_path / "model.safetensors").exists()
    with pytest.raises(RunFolderError, match=r"already holds a finished run \(checkpoint at epoch 4 of 4\); pass force=True to overwrite it"):
        fit(_resume_model(1), data, out_dir=tmp_path, **_RESUME_KW)
    with pytest.raises(_Interrupt):
        fit(_resume_model(1), data, out_dir=tmp_path, force=True, on_epoch_end=_interrupt_after(1), **_RESUME_KW)
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "model.json").exists()
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 1
    # the resume point is the new run's epoch 1, not the old run's epoch 4
    resumed = fit(_resume_model(2), data, out_dir=tmp_path, resume=True, **_RESUME_KW)
    reference = _resume_model(1)
    full = fit(reference, data, **_RESUME_KW)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]


# ---------------------------------------------------------------- clipping, and losses that give their gradient
@pytest.mark.parametrize("max_norm", [0.01, 1.0, 1e6])
def test_clip_grad_norm_matches_torch(max_norm):
    torch.manual_seed(0)
    a = build_model("mlp", input_shape=(6,), num_classes=3, hidden=[8, 8], seed=0)
    b = build_model("mlp", input_shape=(6,), num_classes=3, hidden=[8, 8], seed=0)
    x = torch.randn(16, 6)
    for m in (a, b):
        (m(x) ** 2).sum().backward()
    torch.nn.utils.clip_grad_norm_(a.parameters(), max_norm)
    clip_grad_norm(list(b.parameters()), max_norm)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-6, atol=0.0)
    clip_grad_norm([torch.zeros(2, requires_grad=True)], 1.0)  # no gradients yet: nothing to do


def _blobs4(seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = 2.0 * torch.randn(4, 6, generator=g)
    y = torch.randint(0, 4, (200,), generator=g)
    X = centers[y] + torch.randn(200, 6, generator=g)
    return Splits(X[:150], y[:150], X[150:], y[150:])


def _mlp(seed=0):
    return build_model("mlp", input_shape=(6,), num_classes=4, hidden=[12], dropout=0.2, seed=seed)


def test_fit_with_a_loss_and_gradient_equals_fit_with_the_checked_loss():
    data = _blobs4()
    teacher = torch.randn(150, 4, generator=torch.Generator().manual_seed(5)) * 3
    fn = TrainingDistillationLoss(temperature=4.0, alpha=0.2)
    kw = dict(epochs=3, batch_size=32, lr=0.1, max_grad_norm=0.5, progress=False)

    a, b = _mlp(), _mlp()
    ra = fit(a, data, loss=lambda out, y, i: distillation_loss(out, teacher[i], y, temperature=4.0, alpha=0.2), **kw)
    rb = fit(b, data, loss=lambda out, y, i: fn.value_and_grad(out, teacher[i], y), **kw)
    for k in a.state_dict():
        assert torch.equal(a.state_dict()[k], b.state_dict()[k]), k
    assert [h["loss"] for h in ra.history] == [h["loss"] for h in rb.history]
