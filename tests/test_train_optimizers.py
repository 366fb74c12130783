"""fit opened up (issue 10, section 3): optimizers by name, class and factory; a model stays on its
device; the caller's global RNG is left alone; dict batches for text models."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
from _helpers import SimulatedKill, small_mlp, three_class_splits
from _helpers import die_after as _die_after
import torch
import torch.nn.functional as F
from torch import nn

from darkknowledge.checkpoint import CheckpointError, load_training_state, save_training_state
from darkknowledge.data._types import Splits
from darkknowledge.data.batches import minibatches
from darkknowledge.models import build_model
from darkknowledge.train import (
    ResumeMismatchError,
    evaluate_loss_accuracy,
    fit,
    make_optimizer,
    model_logits,
    predict_logits,
)

CKPT = Path("checkpoint") / "last.safetensors"


def _data(seed=0, val=True):
    return three_class_splits(80, 56, seed=seed, val=val)


def _model(seed=0, dropout=0.0):
    return small_mlp(8, dropout=dropout, seed=seed)


KW = dict(epochs=6, batch_size=16, seed=1, progress=False)


# ----------------------------------------------------------------------------- optimizers


def _adagrad_factory(groups):
    return torch.optim.Adagrad(groups, lr=0.2)


@pytest.mark.parametrize("optimizer, lr", [
    ("sgd", 0.1), ("adamw", 0.01), ("adam", 0.01), (torch.optim.RMSprop, 0.01), (_adagrad_factory, 77.0),
], ids=["sgd", "adamw", "adam", "class", "factory"])
def test_each_optimizer_form_trains(optimizer, lr):
    model = _model()
    result = fit(model, _data(), optimizer=optimizer, lr=lr, lr_schedule="constant", **KW)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.8 * losses[0], losses
    if optimizer is _adagrad_factory:  # the factory's lr wins over fit's
        assert result.history[-1]["lr"] == pytest.approx(0.2)


def test_adamw_matches_a_hand_written_loop():
    data = _data(val=False)
    model, reference = _model(), _model()
    fit(model, data, optimizer="adamw", lr=0.01, lr_schedule="constant", max_grad_norm=None, **KW)

    opt = torch.optim.AdamW(reference.parameters(), lr=0.01, weight_decay=0.0)
    g = torch.Generator().manual_seed(KW["seed"])
    reference.train()
    for _ in range(KW["epochs"]):
        for idx in minibatches(len(data.X_train), batch_size=KW["batch_size"], generator=g):
            loss = F.cross_entropy(reference(data.X_train[idx]), data.y_train[idx], reduction="sum") / len(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    for k, v in reference.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_adamw_weight_decay_is_decoupled_on_weights_only():
    opt = make_optimizer(nn.Linear(2, 1), lr=1e-3, weight_decay=0.01, optimizer="adamw")
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.02, 0.0]


def test_schedules_apply_to_adam():
    result = fit(_model(), _data(), optimizer="adam", lr=0.01, lr_schedule="cosine", **KW)
    lrs = [h["lr"] for h in result.history]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] < 0.01 and lrs[-1] < 1e-3


def test_resume_with_adamw_is_bit_exact(tmp_path):
    kw = dict(KW, optimizer="adamw", lr=0.01, lr_schedule="cosine")
    with pytest.raises(SimulatedKill):
        fit(_model(dropout=0.2), _data(), out_dir=tmp_path / "run", on_epoch_end=_die_after(3), **kw)
    tensors, _ = load_training_state(tmp_path / "run" / CKPT)
    assert any(k.endswith(".exp_avg_sq") for k in tensors) and any(k.endswith(".step") for k in tensors)
    resumed = _model(dropout=0.2)
    fit(resumed, _data(), out_dir=tmp_path / "run", resume=True, **kw)
    full = _model(dropout=0.2)
    fit(full, _data(), **kw)
    for k, v in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k


def test_resume_with_another_optimizer_is_refused(tmp_path):
    with pytest.raises(SimulatedKill):
        fit(_model(), _data(), out_dir=tmp_path / "run", on_epoch_end=_die_after(2), optimizer="adamw", lr=0.01, **KW)
    with pytest.raises(ResumeMismatchError, match=r"optimizer: 'adamw' then, 'adam' now"):
        fit(_model(), _data(), out_dir=tmp_path / "run", resume=True, optimizer="adam", lr=0.01, **KW)


def _inf_exp_avg(t, s):
    key = next(k for k in t if k.endswith(".exp_avg"))
    t[key] = t[key].clone()
    t[key].view(-1)[0] = float("inf")


def _bad_step(t, s):
    key = next(k for k in t if k.endswith(".step"))
    t[key] = torch.tensor([1.0, 2.0])


def _unknown_buffer(t, s):
    _, buffers = s["optimizer"]["state"]["__items__"][0]
    name = buffers["exp_avg"]["__tensor__"]
    t[name + ".extra"] = t[name].clone()
    buffers["momentum_buffer"] = {"__tensor__": name + ".extra"}


@pytest.mark.parametrize("edit, message", [
    (_inf_exp_avg, r"its optimizer buffer exp_avg of parameter \d+ holds NaN or infinite values"),
    (_bad_step, r"its optimizer's step of parameter \d+ is tensor\(\[1\., 2\.\]\), expected a finite number >= 0"),
    (_unknown_buffer, r"its optimizer has an unknown buffer 'momentum_buffer'"),
], ids=["inf_exp_avg", "bad_step", "unknown_buffer"])
def test_malformed_adam_state_is_refused(tmp_path, edit, message):
    kw = dict(KW, optimizer="adam", lr=0.01)
    with pytest.raises(SimulatedKill):
        fit(_model(), _data(), out_dir=tmp_path / "run", on_epoch_end=_die_after(2), **kw)
    path = tmp_path / "run" / CKPT
    tensors, state = load_training_state(path)
    edit(tensors, state)
    save_training_state(path, tensors=tensors, state=state)
    with pytest.raises(CheckpointError, match=rf"holds a malformed training state \({message}"):
        fit(_model(), _data(), out_dir=tmp_path / "run", resume=True, **kw)


def test_optimizer_errors():
    data = _data()
    with pytest.raises(ValueError, match=r"optimizer must be one of 'sgd', 'adamw', 'adam'; got 'lion' instead"):
        fit(_model(), data, optimizer="lion", **KW)
    with pytest.raises(ValueError, match=r"momentum and nesterov apply only to optimizer='sgd', got momentum=0.9, "
                                         r"nesterov=False with optimizer 'adamw' instead"):
        fit(_model(), data, optimizer="adamw", momentum=0.9, **KW)
    with pytest.raises(ValueError, match=r"momentum and nesterov apply only to optimizer='sgd', got momentum=None, "
                                         r"nesterov=True with optimizer 'class:torch.optim.adam.Adam' instead"):
        fit(_model(), data, optimizer=torch.optim.Adam, nesterov=True, **KW)
    model = _model()
    with pytest.raises(TypeError, match=r"got SGD instead \(pass the class or a factory"):
        fit(model, data, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), **KW)
    with pytest.raises(TypeError, match=r"a torch.optim.Optimizer subclass or a callable params -> optimizer, "
                                        r"got the class dict instead"):
        fit(_model(), data, optimizer=dict, **KW)
    with pytest.raises(TypeError, match=r"the optimizer factory must return a torch.optim.Optimizer, got list instead"):
        fit(_model(), data, optimizer=lambda groups: [], **KW)


# ----------------------------------------------------------------------------- devices and RNG


def test_fit_leaves_the_callers_global_rng_alone():
    torch.manual_seed(12345)
    before = torch.get_rng_state()
    fit(_model(dropout=0.3), _data(), lr=0.1, **KW)
    assert torch.equal(torch.get_rng_state(), before)


def test_fit_still_seeds_dropout_reproducibly():
    a, b = _model(dropout=0.3), _model(dropout=0.3)
    torch.manual_seed(1)
    fit(a, _data(), lr=0.1, **KW)
    torch.manual_seed(2)  # another global state: the same run
    fit(b, _data(), lr=0.1, **KW)
    for k, v in a.state_dict().items():
        assert torch.equal(b.state_dict()[k], v)


def test_fit_rng_is_restored_after_an_error():
    before = torch.get_rng_state()
    with pytest.raises(SimulatedKill):
        fit(_model(dropout=0.3), _data(), lr=0.1, on_epoch_end=_die_after(1), **KW)
    assert torch.equal(torch.get_rng_state(), before)


def test_device_left_unset_uses_the_models_device(tmp_path):
    model = _model()
    fit(model, _data(), lr=0.1, out_dir=tmp_path / "run", **KW)
    import json
    assert json.loads((tmp_path / "run" / "config.json").read_text())["device"] == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: checks a CUDA-resident model is not moved")
def test_cuda_model_is_not_moved_when_device_is_unset():
    model = _model().cuda()
    fit(model, _data(), lr=0.1, **KW)
    assert all(p.device.type == "cuda" for p in model.parameters())
    moved = _model().cuda()
    fit(moved, _data(), lr=0.1, device="cpu", **KW)
    assert all(p.device.type == "cpu" for p in moved.parameters())


# ----------------------------------------------------------------------------- dict batches


class BagOfWords(nn.Module):
    """A tiny text classifier: forward(input_ids, attention_mask) -> {"logits": (B, C)}."""

    def __init__(self, vocab=20, classes=2, out="dict"):
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab, 8, mode="sum")
        self.head = nn.Linear(8, classes)
        self.out = out
        self.calls = []

    def forward(self, input_ids, attention_mask):
        self.calls.append(tuple(input_ids.shape))
        h = self.bag(input_ids, per_sample_weights=attention_mask.float())  # (B, 8) masked sum of embeddings
        logits = self.head(h)  # (B, C)
        if self.out == "dict":
            return {"logits": logits}
        if self.out == "tuple":
            return (logits, h)
        return OrderedDict(logits=logits, hidden=h)  # as a Hugging Face ModelOutput


def _text(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 20, (90, 6), generator=g)
    mask = (torch.rand(90, 6, generator=g) > 0.2).long()
    y = ((ids < 10) & (mask > 0)).sum(1).gt(2).long()  # class 1: many low token ids
    X = {"input_ids": ids, "attention_mask": mask}
    tr = {k: v[:60] for k, v in X.items()}
    va = {k: v[60:] for k, v in X.items()}
    return Splits(tr, y[:60], va, y[60:], class_names=["lo", "hi"])


@pytest.mark.parametrize("out", ["dict", "tuple", "modeloutput"])
def test_fit_trains_a_text_model_on_dict_batches(out, tmp_path):
    torch.manual_seed(0)
    model = BagOfWords(out=out)
    data = _text()
    result = fit(model, data, optimizer="adamw", lr=0.05, epochs=8, batch_size=16, seed=0, progress=False,
                 out_dir=tmp_path / "run")
    assert result.history[-1]["loss"] < 0.7 * result.history[0]["loss"]
    assert result.best_val_accuracy > 0.75
    assert model.calls[0] == (16, 6)  # batches of 16 rows went in as keywords
    logits = predict_logits(model, data.X_val, batch_size=7)
    assert logits.shape == (30, 2)
    loss, acc = evaluate_loss_accuracy(model, data.X_val, data.y_val)
    assert loss == pytest.approx(F.cross_entropy(logits.double(), data.y_val).item())
    assert acc == pytest.approx(result.best_val_accuracy)


def test_model_logits_picks_the_logits():
    x = {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3, dtype=torch.long)}
    for out in ("dict", "tuple", "modeloutput"):
        torch.manual_seed(0)
        assert model_logits(BagOfWords(out=out), x).shape == (2, 2)
    with pytest.raises(ValueError, match=r"model returned a dict without 'logits', expected logits, got keys \['y'\]"):
        model_logits(lambda t: {"y": t}, torch.ones(2))
    with pytest.raises(TypeError, match=r"model must return a logits tensor, .* got str instead"):
        model_logits(lambda t: "x", torch.ones(2))


def test_dict_data_errors():
    from types import SimpleNamespace

    bad = SimpleNamespace(X_train={"input_ids": torch.ones(4, 2), "attention_mask": torch.ones(3, 2)},
                          y_train=torch.zeros(4, dtype=torch.long), X_val=None, y_val=None)
    with pytest.raises(ValueError, match=r"data.X_train's tensors must have the same number of rows, "
                                         r"got \{'input_ids': 4, 'attention_mask': 3\} instead"):
        fit(BagOfWords(), bad, **KW)
    data = _text()
    with pytest.raises(ValueError, match=r"augment needs image tensors, got a dict of inputs"):
        fit(BagOfWords(), data, augment={"hflip": True}, **KW)
