"""distill's teacher_mode (issue 10, section 4): an online teacher sees exactly the (augmented) batch the
student sees ("consistent teaching", Beyer et al. 2022); cached soft targets refuse random augmentation."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from darkknowledge.data._types import Splits
from darkknowledge.data.batches import num_batches
from darkknowledge.distill import distill
from darkknowledge.models import build_model

KW = dict(temperature=2.0, alpha=0.5, epochs=2, batch_size=8, lr=0.05, seed=0, progress=False)


def _images(n=28, seed=0, val=False):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 1, 6, 6, generator=g)
    y = (X[:, 0, :, :3].sum((1, 2)) > X[:, 0, :, 3:].sum((1, 2))).long()  # left half brighter: an asymmetric task
    if val:
        return Splits(X, y, X[:8], y[:8], class_names=["r", "l"])
    return Splits(X, y, class_names=["r", "l"])


def _cnn(seed):
    return build_model("cnn", input_shape=(1, 6, 6), num_classes=2, channels=[2], hidden=4, seed=seed)


class Recorder(nn.Module):
    """A teacher that records every batch it is given, its mode, and whether gradients were on."""

    def __init__(self, seed=1):
        super().__init__()
        self.net = _cnn(seed)
        self.seen, self.modes = [], []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        self.modes.append((self.training, torch.is_grad_enabled()))
        return self.net(x)


def test_online_teacher_sees_the_students_exact_augmented_batch():
    data = _images()
    student, teacher = _cnn(0), Recorder()
    student_seen = []
    student.register_forward_pre_hook(lambda m, args: student_seen.append(args[0].detach().clone()))
    teacher.train()
    result = distill(student, teacher, data, augment={"hflip": True, "shift": 1}, **KW)
    assert result.teacher_mode == "online"
    steps = KW["epochs"] * num_batches(len(data.X_train), batch_size=KW["batch_size"])
    # one probe of a single row each (classes check), then one call per training step
    assert len(teacher.seen) == len(student_seen) == steps + 1
    assert teacher.seen[0].shape[0] == 1 and student_seen[0].shape[0] == 1
    for t, s in zip(teacher.seen, student_seen):
        assert torch.equal(t, s)
    assert all(mode == (False, False) for mode in teacher.modes)  # eval() under no_grad
    assert teacher.training  # its mode is restored afterwards
    # the batches really were augmented: some rows are not rows of X_train
    rows = torch.cat(student_seen[1:]).flatten(1)  # (steps * B, 36)
    original = data.X_train.flatten(1)  # (N, 36)
    matches = (rows[:, None, :] == original[None, :, :]).all(-1).any(-1)  # (steps * B,)
    assert not bool(matches.all())


def test_cached_mode_refuses_random_augmentation():
    with pytest.raises(ValueError, match=r"augment must be None with teacher_mode='cached', got a random augmentation "
                                         r"instead: cached soft targets are the teacher's outputs"):
        distill(_cnn(0), _cnn(1), _images(), teacher_mode="cached", augment={"shift": 1}, **KW)


def test_auto_mode_is_cached_without_augmentation():
    teacher = Recorder()
    result = distill(_cnn(0), teacher, _images(), **KW)
    assert result.teacher_mode == "cached"
    assert len(teacher.seen) == 1 and teacher.seen[0].shape[0] == len(_images().X_train)  # once, all rows


def test_online_without_augmentation_equals_cached():
    data = _images(val=True)
    cached, online = _cnn(0), _cnn(0)
    rc = distill(cached, _cnn(1), data, teacher_mode="cached", **KW)
    ro = distill(online, _cnn(1), data, teacher_mode="online", **KW)
    assert (rc.teacher_mode, ro.teacher_mode) == ("cached", "online")
    for k, v in cached.state_dict().items():
        torch.testing.assert_close(online.state_dict()[k], v, rtol=1e-5, atol=1e-6)


def test_online_mode_errors():
    data = _images()
    logits = torch.zeros(len(data.X_train), 2)
    with pytest.raises(ValueError, match=r"teacher must be a model for teacher_mode='online', got precomputed logits"):
        distill(_cnn(0), logits, data, teacher_mode="online", **KW)
    with pytest.raises(ValueError, match=r"teacher_mode must be one of 'auto', 'cached', 'online'; got 'live' instead"):
        distill(_cnn(0), _cnn(1), data, teacher_mode="live", **KW)
    wrong = build_model("cnn", input_shape=(1, 6, 6), num_classes=3, channels=[2], hidden=4, seed=1)
    with pytest.raises(ValueError, match=r"teacher has 3 classes but the data has 2"):
        distill(_cnn(0), wrong, data, teacher_mode="online", **KW)


def test_online_resume_is_tied_to_the_teacher(tmp_path):
    from darkknowledge.train import ResumeMismatchError

    class Kill(BaseException):
        pass

    def die(epoch, metrics):
        raise Kill()

    data = _images()
    with pytest.raises(Kill):
        distill(_cnn(0), _cnn(1), data, augment={"hflip": True}, out_dir=tmp_path / "run", on_epoch_end=die, **KW)
    with pytest.raises(ResumeMismatchError, match=r"run.teacher_sha256: .* then, .* now"):
        distill(_cnn(0), _cnn(2), data, augment={"hflip": True}, out_dir=tmp_path / "run", resume=True, **KW)
    resumed = _cnn(0)
    distill(resumed, _cnn(1), data, augment={"hflip": True}, out_dir=tmp_path / "run", resume=True, **KW)
    full = _cnn(0)
    distill(full, _cnn(1), data, augment={"hflip": True}, **KW)
    for k, v in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v)


def test_distill_leaves_the_global_rng_alone_and_passes_the_optimizer():
    torch.manual_seed(7)
    before = torch.get_rng_state()
    result = distill(_cnn(0), _cnn(1), _images(), augment={"hflip": True}, optimizer="adamw",
                     **dict(KW, lr=0.01))
    assert torch.equal(torch.get_rng_state(), before)
    assert len(result.history) == KW["epochs"]


class _TextNet(nn.Module):
    """forward(input_ids, attention_mask) -> {"logits": (B, 2)}, as a Hugging Face classifier returns."""

    def __init__(self, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = nn.Parameter(torch.randn(20, 4, generator=g) * 0.5)
        self.head = nn.Parameter(torch.randn(4, 2, generator=g) * 0.5)

    def forward(self, input_ids, attention_mask):
        h = (self.emb[input_ids] * attention_mask[..., None].float()).sum(1)  # (B, 4)
        return {"logits": h @ self.head}  # (B, 2)


@pytest.mark.parametrize("mode", ["cached", "online"])
def test_distill_on_dict_batches(mode):
    g = torch.Generator().manual_seed(0)
    ids, mask = torch.randint(0, 20, (40, 5), generator=g), torch.ones(40, 5, dtype=torch.long)
    y = (ids < 10).sum(1).gt(2).long()
    data = Splits({"input_ids": ids, "attention_mask": mask}, y, {"input_ids": ids[:8], "attention_mask": mask[:8]},
                  y[:8], class_names=["a", "b"])
    student = _TextNet(0)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    result = distill(student, _TextNet(1), data, teacher_mode=mode, transfer_fraction=0.75,
                     **dict(KW, optimizer="adamw", lr=0.01))
    assert result.teacher_mode == mode and result.transfer_size == 30
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert result.fit.best_val_loss is not None
