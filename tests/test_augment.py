"""Image augmentation against a NumPy reference (pad, slice, flip), its draws, its errors, and its use in ``fit``:
reproducible, resumable bit for bit, refused where it would be wrong (flat inputs, distillation, students)."""

import json

import numpy as np
import pytest
import torch

from darkknowledge.augment import AugmentDraw, ImageAugment, resolve_augment
from darkknowledge.config import ConfigError, ExperimentConfig, TrainRunConfig, parse_config
from darkknowledge.data._types import Splits
from darkknowledge.distill import distill
from darkknowledge.distributed import rank_share
from darkknowledge.models import build_model
from darkknowledge.train import fit


def _reference(x: np.ndarray, dy, dx, flip, s: int, fill: float) -> np.ndarray:
    """Shift sample i so that output pixel (h, w) reads input (h + dy_i, w + dx_i), fill outside; then mirror."""
    out = np.empty_like(x)
    h, w = x.shape[-2:]
    for i in range(len(x)):
        padded = np.pad(x[i], [(0, 0)] * (x.ndim - 3) + [(s, s), (s, s)], constant_values=fill)
        crop = padded[..., s + dy[i]: s + dy[i] + h, s + dx[i]: s + dx[i] + w]
        out[i] = np.flip(crop, axis=-1) if flip[i] else crop
    return out


@pytest.mark.parametrize("shape", [(7, 3, 5, 6), (7, 5, 6)])
@pytest.mark.parametrize("hflip,shift,fill", [(True, 2, 0.0), (False, 1, -1.5), (True, 0, 0.0), (True, 4, 3.0)])
def test_apply_matches_numpy_reference(shape, hflip, shift, fill):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    aug = ImageAugment(hflip=hflip, shift=shift, fill=fill)
    draw = aug.draw(len(x), torch.Generator().manual_seed(2))
    got = aug.apply(x, draw)
    want = _reference(x.numpy(), draw.dy.numpy(), draw.dx.numpy(), draw.flip.numpy(), shift, fill)
    assert got.shape == x.shape and got.dtype == x.dtype
    np.testing.assert_array_equal(got.numpy(), want)


def test_extreme_offsets_by_hand():
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    aug = ImageAugment(shift=1)
    one = lambda dy, dx, f=False: AugmentDraw(torch.tensor([dy]), torch.tensor([dx]), torch.tensor([f]))  # noqa: E731
    # dy = dx = +1: pixel (h, w) reads (h + 1, w + 1): the image moves up and left, zeros come in bottom right
    assert aug.apply(x, one(1, 1))[0, 0].tolist() == [[4, 5, 0], [7, 8, 0], [0, 0, 0]]
    assert aug.apply(x, one(-1, 0))[0, 0].tolist() == [[0, 0, 0], [0, 1, 2], [3, 4, 5]]
    flipper = ImageAugment(hflip=True)
    assert flipper.apply(x, one(0, 0, True))[0, 0].tolist() == [[2, 1, 0], [5, 4, 3], [8, 7, 6]]


def test_draws_cover_the_range_and_flip_half():
    aug = ImageAugment(hflip=True, shift=2)
    d = aug.draw(20_000, torch.Generator().manual_seed(0))
    assert set(d.dy.tolist()) == set(d.dx.tolist()) == {-2, -1, 0, 1, 2}
    assert abs(d.flip.float().mean().item() - 0.5) < 0.02  # 5 standard deviations: 0.0035 each
    assert not ImageAugment(shift=1).draw(100, torch.Generator().manual_seed(0)).flip.any()
    same = aug.draw(50, torch.Generator().manual_seed(3)), aug.draw(50, torch.Generator().manual_seed(3))
    assert all(torch.equal(getattr(same[0], k), getattr(same[1], k)) for k in ("dy", "dx", "flip"))


def test_rank_shares_of_a_draw_reassemble_the_global_batch():
    x = torch.randn(10, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    aug = ImageAugment(hflip=True, shift=2)
    draw = aug.draw(10, torch.Generator().manual_seed(1))
    whole = aug.apply(x, draw)
    for rank in range(3):
        pos = rank_share(torch.arange(10), rank=rank, world_size=3)
        assert torch.equal(aug.apply(x[pos], draw.select(pos)), whole[pos])


def test_resolve_and_errors():
    assert resolve_augment(None) is None
    assert resolve_augment({"hflip": False, "shift": 0}) is None  # a no-op is switched off
    assert resolve_augment({"hflip": True}) == ImageAugment(hflip=True)
    with pytest.raises(ValueError, match=r"augment.shift must be >= 0 pixels, got -1"):
        ImageAugment(shift=-1)
    with pytest.raises(TypeError, match=r"augment.shift must be an int \(pixels\), got float"):
        ImageAugment(shift=1.5)
    with pytest.raises(TypeError, match=r"augment.hflip must be a bool, got str"):
        ImageAugment(hflip="yes")
    with pytest.raises(ValueError, match=r"augment.fill must be finite, got nan"):
        ImageAugment(shift=1, fill=float("nan"))
    with pytest.raises(ValueError, match=r"augment has unknown keys \['shfit'\]; expected hflip, shift, fill"):
        resolve_augment({"shfit": 2})
    with pytest.raises(TypeError, match=r"augment must be None, an ImageAugment or a dict, got int"):
        resolve_augment(3)
    with pytest.raises(ValueError, match=r"augment needs image inputs .* got \(64,\) instead"):
        ImageAugment(hflip=True).check_input_shape((64,))
    with pytest.raises(ValueError, match=r"augment.shift must be smaller than the image \(4x4\), got 4"):
        ImageAugment(shift=4).check_input_shape((1, 4, 4))
    with pytest.raises(ValueError, match=r"x must be a \(B, C, H, W\) or \(B, H, W\) image batch, got shape \(2, 3\)"):
        ImageAugment(shift=1)(torch.zeros(2, 3))


def _images(n=96, n_val=32, seed=0):
    """Tiny 1x6x6 images: class 0 bright on the left, class 1 bright on the right, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n + n_val,), generator=g)
    X = 0.5 * torch.randn(n + n_val, 1, 6, 6, generator=g)
    X[y == 0, :, :, :3] += 1.0
    X[y == 1, :, :, 3:] += 1.0
    return Splits(X[:n], y[:n], X[n:], y[n:])


def _cnn(seed):
    return build_model("cnn", input_shape=(1, 6, 6), num_classes=2, channels=[4], hidden=8, seed=seed)


_KW = dict(epochs=4, batch_size=16, lr=0.05, augment={"hflip": False, "shift": 1}, progress=False)


def test_fit_with_augment_is_reproducible_changes_training_and_is_logged(tmp_path):
    data = _images()
    a, b, plain = _cnn(0), _cnn(0), _cnn(0)
    fit(a, data, out_dir=tmp_path / "a", **_KW)
    fit(b, data, **_KW)
    fit(plain, data, **dict(_KW, augment=None))
    for k in a.state_dict():
        assert torch.equal(a.state_dict()[k], b.state_dict()[k])
    assert any(not torch.equal(a.state_dict()[k], plain.state_dict()[k]) for k in a.state_dict())
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["augment"] == {"hflip": False, "shift": 1, "fill": 0.0}


class _Stop(Exception):
    pass


def test_fit_with_augment_resumes_bit_for_bit(tmp_path):
    data = _images()

    def stop_after_2(epoch, metrics):
        if epoch == 2:
            raise _Stop

    with pytest.raises(_Stop):
        fit(_cnn(0), data, out_dir=tmp_path / "r", on_epoch_end=stop_after_2, **_KW)
    resumed = _cnn(5)
    fit(resumed, data, out_dir=tmp_path / "r", resume=True, **_KW)
    full = _cnn(0)
    fit(full, data, **_KW)
    for k in full.state_dict():
        assert torch.equal(resumed.state_dict()[k], full.state_dict()[k])


def test_fit_refuses_augment_on_flat_features():
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(20, 5, generator=g), torch.randint(0, 2, (20,), generator=g)
    model = build_model("mlp", input_shape=(5,), num_classes=2, hidden=[4], seed=0)
    with pytest.raises(ValueError, match=r"augment needs image inputs .* got \(5,\) instead"):
        fit(model, Splits(X, y, X, y), epochs=1, augment={"hflip": True}, progress=False)


def test_distill_refuses_augment_with_cached_teacher():
    data = _images()
    with pytest.raises(ValueError, match=r"augment must be None with teacher_mode='cached', got a random augmentation"):
        distill(_cnn(0), _cnn(1), data, temperature=2.0, alpha=0.5, epochs=1, augment={"hflip": True},
                teacher_mode="cached", progress=False)


def test_distill_with_augment_runs_the_teacher_online():
    data = _images()
    result = distill(_cnn(0), _cnn(1), data, temperature=2.0, alpha=0.5, epochs=1, augment={"hflip": True},
                     progress=False)
    assert result.teacher_mode == "online"


def test_config_passes_augment_to_fit_and_keeps_it_off_cached_students():
    cfg = parse_config({"train": {"augment": {"hflip": True, "shift": 2}}}, TrainRunConfig)
    assert cfg.train.fit_kwargs()["augment"] == {"hflip": True, "shift": 2, "fill": 0.0}
    assert parse_config({}, TrainRunConfig).train.fit_kwargs()["augment"] is None
    run = parse_config({"teacher": {"train": {"augment": {"shift": 1}}}}, ExperimentConfig)
    assert run.teacher.train.augment.shift == 1
    # an augmented student needs an online teacher (the default teacher_mode auto picks it)
    online = parse_config({"student": {"train": {"augment": {"hflip": True}}}}, ExperimentConfig)
    assert online.student.train.augment.hflip and online.distill.teacher_mode == "auto"
    with pytest.raises(ConfigError, match=r"student\.train\.augment needs distill\.teacher_mode online"):
        parse_config({"student": {"train": {"augment": {"hflip": True}}}, "distill": {"teacher_mode": "cached"}},
                     ExperimentConfig)
    with pytest.raises(ConfigError, match=r"train.augment.shift"):
        parse_config({"train": {"augment": {"shift": -2}}}, TrainRunConfig)


def test_cli_train_with_augment_flags(tmp_path, capsys):
    import numpy as np

    from darkknowledge.cli import main

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 1, 6, 6)).astype(np.float32), np.arange(60) % 3
    np.savez(tmp_path / "img.npz", X=X, y=y)
    argv = ["train", "--dataset", str(tmp_path / "img.npz"), "--model", "cnn", "--hidden", "8", "--epochs", "1",
            "--batch-size", "16", "--hflip", "--shift", "1", "--out", str(tmp_path / "out")]
    assert main(argv) == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["augment"] == {"hflip": True, "shift": 1, "fill": 0.0}
    # flat features cannot be shifted: a one-line error, exit 2
    np.savez(tmp_path / "flat.npz", X=rng.normal(size=(60, 5)), y=np.arange(60) % 3)
    code = main(["train", "--dataset", str(tmp_path / "flat.npz"), "--model", "mlp", "--hidden", "4", "--epochs", "1",
                 "--shift", "1", "--out", str(tmp_path / "flat")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "augment needs image inputs of shape (C, H, W) or (H, W) per sample, got (5,) instead" in err
