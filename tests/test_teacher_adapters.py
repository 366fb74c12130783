"""Tests for darkknowledge.teacher_adapters through as_teacher: every kind of teacher, its cache key, its errors."""

from __future__ import annotations

import json
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
from scipy.special import softmax as sp_softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.tree import DecisionTreeClassifier
from torch import nn

from darkknowledge.soft_targets import fingerprint
from darkknowledge.teacher_adapters import (
    PROBA_FLOOR,
    EstimatorTeacher,
    LogitsOf,
    OnnxTeacher,
    cross_fit_logits,
    extract_logits,
    load_teacher_logits,
    probabilities_to_logits,
)
from darkknowledge.teachers import as_teacher, check_compatible, teacher_logits

D, C = 6, 3


def _data(n: int = 90, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % C
    X = rng.normal(size=(n, D)) + y[:, None] * 0.8  # separable-ish classes
    return X, y


# ------------------------------------------------------------------------------ modules and callables


class DictNet(nn.Module):
    def __init__(self, key="logits"):
        super().__init__()
        self.lin = nn.Linear(D, C)
        self.key = key

    def forward(self, x):
        return {"loss": None, self.key: self.lin(x), "hidden": x}


class TupleNet(DictNet):
    def forward(self, x):
        return self.lin(x), x


class TextNet(nn.Module):
    """Takes keyword inputs like a Hugging Face text model and returns a ModelOutput-like mapping."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, C)

    def forward(self, input_ids, attention_mask):
        m = attention_mask.unsqueeze(-1).float()  # (B, T, 1)
        return OrderedDict(logits=(self.emb(input_ids) * m).sum(1) / m.sum(1))  # (B, C)


class TestModulesAndCallables:
    def test_dict_tuple_and_model_output(self):
        x = torch.randn(5, D)
        for net in (DictNet(), TupleNet()):
            t = as_teacher(net)
            assert isinstance(t, LogitsOf)
            torch.testing.assert_close(teacher_logits(t, x), net.lin(x).detach(), rtol=0, atol=0)
        transformers = pytest.importorskip("transformers")
        out = transformers.modeling_outputs.SequenceClassifierOutput(logits=x)
        assert extract_logits(out) is x

    def test_explicit_output_key_index_and_callable(self):
        net = DictNet(key="scores")
        x = torch.randn(4, D)
        ref = net.lin(x).detach()
        with pytest.raises(ValueError, match=r"teacher must return logits; it returned a dict with keys \['loss', 'scores', 'hidden'\] instead, with no 'logits' key"):
            teacher_logits(net, x)
        torch.testing.assert_close(teacher_logits(as_teacher(net, output="scores"), x), ref, rtol=0, atol=0)
        torch.testing.assert_close(teacher_logits(as_teacher(net, output=lambda o: o["scores"]), x), ref, rtol=0, atol=0)
        torch.testing.assert_close(teacher_logits(as_teacher(TupleNet(), output=1), x), x, rtol=0, atol=0)
        with pytest.raises(ValueError, match=r"output='nope' must select the logits, but the teacher returned a dict with keys"):
            teacher_logits(as_teacher(net, output="nope"), x)
        with pytest.raises(ValueError, match=r"teacher's selected output must be a logits tensor, got a NoneType instead"):
            teacher_logits(as_teacher(net, output="loss"), x)
        with pytest.raises(TypeError, match=r"output must be None, a key, an index or a callable, got float instead"):
            as_teacher(net, output=1.5)

    def test_unknown_output_error(self):
        with pytest.raises(ValueError, match=r"teacher must return a logits tensor, a tuple, a dict or a ModelOutput, got a str instead"):
            teacher_logits(lambda x: "scores", torch.zeros(2, D))

    def test_plain_callable_and_bound_method(self):
        w = torch.randn(D, C)
        x = torch.randn(7, D)
        t = as_teacher(lambda x: x @ w)
        torch.testing.assert_close(teacher_logits(t, x, batch_size=3), x @ w, rtol=1e-6, atol=1e-6)
        # a plain callable has no content: two wrappers never share a cache key
        assert fingerprint(t, x) == fingerprint(t, x)
        assert fingerprint(t, x) != fingerprint(as_teacher(lambda x: x @ w), x)
        net = DictNet()
        bound = as_teacher(net.forward)
        a = fingerprint(bound, x)
        assert a == fingerprint(as_teacher(net.forward), x)  # keyed by the owner's weights
        with torch.no_grad():
            net.lin.bias.add_(1.0)
        assert fingerprint(as_teacher(net.forward), x) != a

    def test_dict_inputs_batched_and_passed_as_keywords(self):
        torch.manual_seed(0)
        net = TextNet()
        ids = torch.randint(0, 20, (11, 5))
        mask = torch.ones(11, 5, dtype=torch.long)
        mask[:, 3:] = torch.randint(0, 2, (11, 2))
        X = {"input_ids": ids, "attention_mask": mask}
        out = teacher_logits(net, X, batch_size=4)
        ref = net(ids, mask)["logits"].detach()
        torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
        numpy_X = {k: v.numpy() for k, v in X.items()}
        torch.testing.assert_close(teacher_logits(net, numpy_X, batch_size=5), ref, rtol=1e-6, atol=1e-6)
        assert check_compatible(net, num_classes=C, sample=X) == C
        with pytest.raises(ValueError, match=r"teacher must predict num_classes=4 classes \(the data's\), got 3 instead"):
            check_compatible(net, num_classes=4, sample=X)

    def test_dict_input_errors(self):
        net = TextNet()
        with pytest.raises(ValueError, match=r"X must hold tensors with one length \(rows\), got lengths \{'input_ids': 3, 'attention_mask': 2\} instead"):
            teacher_logits(net, {"input_ids": torch.zeros(3, 2, dtype=torch.long), "attention_mask": torch.ones(2, 2)})
        with pytest.raises(TypeError, match=r"X\['input_ids'\] must be a torch.Tensor or numpy.ndarray, got list instead"):
            teacher_logits(net, {"input_ids": [1, 2]})
        with pytest.raises(ValueError, match=r"X must hold at least one input tensor, got an empty dict instead"):
            teacher_logits(net, {})
        with pytest.raises(ValueError, match=r"check_compatible needs input_shape or sample to probe a model teacher, got neither"):
            check_compatible(net, num_classes=C)


# ------------------------------------------------------------------------------ estimators


class RecordingEstimator(ClassifierMixin, BaseEstimator):
    """Column 0 of X is a row id. predict_proba says 'seen' (class 0) or 'unseen' (class 1) for each row."""

    def __init__(self, note=0):
        self.note = note

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.seen_ = set(X[:, 0].astype(int).tolist())
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X):
        seen = np.array([int(i) in self.seen_ for i in X[:, 0]])
        p = np.zeros((len(X), len(self.classes_)))
        p[:, 0] = np.where(seen, 0.9, 0.05)
        p[:, 1] = 1 - p[:, 0]
        return p


class TestEstimators:
    def test_logistic_regression_matches_floored_log_proba(self):
        X, y = _data()
        est = LogisticRegression(max_iter=500).fit(X, y)
        t = as_teacher(est)
        assert isinstance(t, EstimatorTeacher)
        Xt = torch.from_numpy(X).float()
        out = teacher_logits(t, Xt, batch_size=7)
        ref = np.log(np.clip(est.predict_proba(Xt.double().numpy()), PROBA_FLOOR, 1))
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-6, atol=1e-6)
        # log-probabilities are logits: softmax gives back the probabilities
        np.testing.assert_allclose(out.softmax(1).numpy(), est.predict_proba(Xt.double().numpy()), atol=1e-6)
        assert check_compatible(est, num_classes=C, input_shape=(D,)) == C

    def test_floor_and_images_flattened(self):
        X, y = _data()
        tree = DecisionTreeClassifier(random_state=0).fit(X, y)
        out = teacher_logits(tree, torch.from_numpy(X).view(-1, 2, 3))  # (N, 2, 3) -> (N, 6)
        assert float(out.min()) == pytest.approx(np.log(PROBA_FLOOR), rel=1e-6)  # one-hot rows hit the floor
        assert torch.isfinite(out).all()
        np.testing.assert_allclose(
            probabilities_to_logits(np.array([[1.0, 0.0]]), floor=1e-3).numpy(), [[0.0, np.log(1e-3)]], rtol=1e-6
        )

    def test_errors(self):
        X, y = _data()
        with pytest.raises(ValueError, match=r"estimator must be fitted \(have classes_\) before it can teach, got an unfitted LogisticRegression instead"):
            as_teacher(LogisticRegression())
        strings = LogisticRegression().fit(X, np.array(["a", "b", "c"])[y])
        with pytest.raises(ValueError, match=r"estimator.classes_ must be the integer labels 0..C-1 .*got \['a', 'b', 'c'\] instead"):
            as_teacher(strings)
        gap = LogisticRegression().fit(X, np.where(y == 2, 3, y))
        with pytest.raises(ValueError, match=r"got \[0, 1, 3\] instead"):
            as_teacher(gap)
        est = LogisticRegression().fit(X, y)
        with pytest.raises(ValueError, match=r"teacher must accept inputs of shape \(N, 4\).*x must have 6 features per row \(the estimator's n_features_in_\), got 4 instead"):
            check_compatible(est, num_classes=C, input_shape=(4,))
        with pytest.raises(ValueError, match=r"teacher must predict num_classes=5 classes \(the data's\), got 3 instead"):
            check_compatible(est, num_classes=5, input_shape=(D,))
        with pytest.raises(ValueError, match=r"output does not apply to an estimator, got output='logits' instead"):
            as_teacher(est, output="logits")
        with pytest.raises(ValueError, match=r"floor must be a float in \(0, 1\), got 0.0 instead"):
            EstimatorTeacher(est, floor=0.0)

    def test_cache_key_follows_params_and_fitted_state(self):
        X, y = _data()
        Xt = torch.from_numpy(X)
        key = fingerprint(DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y), Xt)
        assert key == fingerprint(DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y), Xt)  # stable
        assert key != fingerprint(DecisionTreeClassifier(max_depth=4, random_state=0).fit(X, y), Xt)  # a parameter
        X2, y2 = _data(seed=1)
        assert key != fingerprint(DecisionTreeClassifier(max_depth=3, random_state=0).fit(X2, y2), Xt)  # other data
        lr = fingerprint(LogisticRegression(max_iter=500).fit(X, y), Xt)
        assert lr != fingerprint(LogisticRegression(max_iter=500).fit(X2, y2), Xt)
        assert lr != fingerprint(LogisticRegression(max_iter=500, C=0.1).fit(X, y), Xt)

    def test_hist_gradient_boosting_refit_changes_key(self):
        from sklearn.ensemble import HistGradientBoostingClassifier

        X, y = _data()
        X2, y2 = _data(seed=1)
        a = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(X, y)
        b = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(X2, y2)
        Xt = torch.from_numpy(X)
        assert fingerprint(a, Xt) != fingerprint(b, Xt)
        assert teacher_logits(a, Xt).shape == (len(X), C)

    def test_lightgbm(self):
        lightgbm = pytest.importorskip("lightgbm", reason="lightgbm is not installed (pip install 'darkknowledge[tabular]')")
        X, y = _data()
        est = lightgbm.LGBMClassifier(n_estimators=10, num_leaves=4, min_child_samples=5, verbose=-1).fit(X, y)
        out = teacher_logits(est, torch.from_numpy(X))
        np.testing.assert_allclose(out.numpy(), np.log(np.clip(est.predict_proba(X), PROBA_FLOOR, 1)), rtol=1e-5, atol=1e-6)
        key = fingerprint(est, torch.from_numpy(X))
        other = lightgbm.LGBMClassifier(n_estimators=11, num_leaves=4, min_child_samples=5, verbose=-1).fit(X, y)
        assert key == fingerprint(est, torch.from_numpy(X)) and key != fingerprint(other, torch.from_numpy(X))


class TestCrossFit:
    def test_out_of_fold_rows_never_seen(self):
        n = 60
        X = np.column_stack([np.arange(n), np.zeros(n)])  # column 0: the row id
        y = np.arange(n) % 2
        z = cross_fit_logits(RecordingEstimator(), X, y, k=5, seed=3)
        p = z.softmax(1).numpy()
        np.testing.assert_allclose(p[:, 0], 0.05, rtol=1e-5)  # every row was labelled by a model that never saw it
        in_sample = teacher_logits(RecordingEstimator().fit(X, y), torch.from_numpy(X)).softmax(1).numpy()
        np.testing.assert_allclose(in_sample[:, 0], 0.9, rtol=1e-5)  # while the full model saw them all

    def test_matches_manual_stratified_folds_and_is_less_confident(self):
        X, y = _data(n=120)
        rng = np.random.default_rng(0)
        y = np.where(rng.random(len(y)) < 0.2, rng.integers(0, C, len(y)), y)  # label noise: trees memorise it
        z = cross_fit_logits(DecisionTreeClassifier(random_state=0), X, y, k=4, seed=7).numpy()
        ref = np.empty_like(z)
        for tr, te in StratifiedKFold(4, shuffle=True, random_state=7).split(X, y):
            est = DecisionTreeClassifier(random_state=0).fit(X[tr], y[tr])
            ref[te] = np.log(np.clip(est.predict_proba(X[te]), PROBA_FLOOR, 1))
        np.testing.assert_allclose(z, ref, rtol=1e-6, atol=1e-6)
        full = DecisionTreeClassifier(random_state=0).fit(X, y)
        assert (full.predict(X) == y).mean() == 1.0  # in sample: memorised
        assert (z.argmax(1) == y).mean() < 0.95  # out of fold: honest

    def test_missing_class_in_a_fold_gets_the_floor(self):
        X, y = _data(n=30)
        z = cross_fit_logits(LogisticRegression(), X, y, k=2, num_classes=C + 1)
        assert z.shape == (30, C + 1)
        np.testing.assert_allclose(z[:, C].numpy(), np.log(PROBA_FLOOR), rtol=1e-6)

    def test_errors(self):
        X, y = _data(n=12)
        with pytest.raises(ValueError, match=r"k must be at most the smallest class count \(4\), got 5 instead"):
            cross_fit_logits(LogisticRegression(), X, y, k=5)
        with pytest.raises(ValueError, match=r"k must be an integer >= 2, got 1 instead"):
            cross_fit_logits(LogisticRegression(), X, y, k=1)
        with pytest.raises(ValueError, match=r"y must have one label per row of X \(12\), got 11 instead"):
            cross_fit_logits(LogisticRegression(), X, y[:11], k=2)
        with pytest.raises(ValueError, match=r"y must hold integer labels >= 0, got dtype float64 instead"):
            cross_fit_logits(LogisticRegression(), X, y.astype(float), k=2)
        with pytest.raises(ValueError, match=r"y must hold labels < num_classes=2, got 2 instead"):
            cross_fit_logits(LogisticRegression(), X, y, k=2, num_classes=2)


# ------------------------------------------------------------------------------ ONNX


def _export_torch(net: nn.Module, path, name: str = "logits") -> None:
    pytest.importorskip("onnx")
    with warnings.catch_warnings():  # the TorchScript exporter needs no onnxscript; it is deprecated, not gone
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net, (torch.zeros(2, D),), str(path), input_names=["x"], output_names=[name],
            dynamic_axes={"x": {0: "batch"}, name: {0: "batch"}}, dynamo=False,
        )


class TestOnnx:
    def test_torch_export_logits(self, tmp_path):
        pytest.importorskip("onnxruntime")
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(D, 8), nn.ReLU(), nn.Linear(8, C))
        _export_torch(net, tmp_path / "t.onnx")
        t = as_teacher(tmp_path / "t.onnx")
        assert isinstance(t, OnnxTeacher) and t.output_kind == "logits"
        x = torch.randn(9, D)
        torch.testing.assert_close(teacher_logits(t, x, batch_size=4), net(x).detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(teacher_logits(str(tmp_path / "t.onnx"), x.double()), net(x).detach(), rtol=1e-5, atol=1e-5)
        assert check_compatible(tmp_path / "t.onnx", num_classes=C, input_shape=(D,)) == C
        with pytest.raises(ValueError, match=r"teacher must predict num_classes=2 classes \(the data's\), got 3 instead"):
            check_compatible(tmp_path / "t.onnx", num_classes=2, input_shape=(D,))
        with pytest.raises(ValueError, match=r"teacher must accept inputs of shape \(N, 4\).*the ONNX teacher failed"):
            check_compatible(tmp_path / "t.onnx", num_classes=C, input_shape=(4,))

    def test_softmax_output_is_probabilities_unless_overridden(self, tmp_path):
        pytest.importorskip("onnxruntime")
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(D, C), nn.Softmax(dim=1))
        _export_torch(net, tmp_path / "p.onnx", name="scores")
        x = torch.randn(5, D)
        t = as_teacher(tmp_path / "p.onnx")
        assert t.output_kind == "probabilities"  # decided from the Softmax node
        torch.testing.assert_close(teacher_logits(t, x), net(x).detach().log(), rtol=1e-5, atol=1e-5)
        raw = as_teacher(tmp_path / "p.onnx", output_kind="logits")
        torch.testing.assert_close(teacher_logits(raw, x), net(x).detach(), rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match=r"output_kind must be one of 'logits', 'probabilities'; got 'probs' instead"):
            as_teacher(tmp_path / "p.onnx", output_kind="probs")
        with pytest.raises(ValueError, match=r"output must be one of the ONNX outputs \['scores'\], got 'logits' instead"):
            as_teacher(tmp_path / "p.onnx", output="logits")
        with pytest.raises(ValueError, match=r"output_kind applies only to an .onnx file, got a Linear instead"):
            as_teacher(nn.Linear(2, 2), output_kind="logits")

    def test_sklearn_export(self, tmp_path):
        pytest.importorskip("onnxruntime")
        skl2onnx = pytest.importorskip("skl2onnx")
        from skl2onnx.common.data_types import FloatTensorType

        X, y = _data()
        est = LogisticRegression(max_iter=500).fit(X, y)
        onx = skl2onnx.convert_sklearn(est, initial_types=[("x", FloatTensorType([None, D]))], options={"zipmap": False})
        (tmp_path / "lr.onnx").write_bytes(onx.SerializeToString())
        t = as_teacher(tmp_path / "lr.onnx")
        assert t.output == "probabilities" and t.output_kind == "probabilities"
        Xt = torch.from_numpy(X)
        torch.testing.assert_close(teacher_logits(t, Xt), teacher_logits(est, Xt), rtol=1e-4, atol=1e-4)
        zipmap = skl2onnx.convert_sklearn(est, initial_types=[("x", FloatTensorType([None, D]))])
        (tmp_path / "zip.onnx").write_bytes(zipmap.SerializeToString())
        with pytest.raises(ValueError, match=r"the ONNX model must have an output tensor of shape \(N, C\), got outputs .* instead \(a scikit-learn export needs options=\{'zipmap': False\}\)"):
            as_teacher(tmp_path / "zip.onnx")

    def test_cache_key_is_the_file_content(self, tmp_path):
        pytest.importorskip("onnxruntime")
        torch.manual_seed(0)
        net = nn.Linear(D, C)
        _export_torch(net, tmp_path / "a.onnx")
        x = torch.randn(4, D)
        key = fingerprint(tmp_path / "a.onnx", x)
        (tmp_path / "b.onnx").write_bytes((tmp_path / "a.onnx").read_bytes())
        assert fingerprint(tmp_path / "b.onnx", x) == key  # same bytes elsewhere: same key
        with torch.no_grad():
            net.bias.add_(0.5)
        _export_torch(net, tmp_path / "a.onnx")
        assert fingerprint(tmp_path / "a.onnx", x) != key
        # an ensemble keys each member's content
        assert fingerprint([tmp_path / "a.onnx", tmp_path / "b.onnx"], x) != fingerprint([tmp_path / "b.onnx", tmp_path / "b.onnx"], x)

    def test_errors(self, tmp_path):
        pytest.importorskip("onnxruntime")
        with pytest.raises(FileNotFoundError, match=r"path must be an existing .onnx file, got .*missing.onnx"):
            as_teacher(tmp_path / "missing.onnx")
        (tmp_path / "bad.onnx").write_bytes(b"not a model")
        with pytest.raises(ValueError, match=r"path must be a valid ONNX model, got 'bad.onnx' which failed to load"):
            as_teacher(tmp_path / "bad.onnx")


# ------------------------------------------------------------------------------ precomputed logits


class TestPrecomputed:
    def test_sources(self, tmp_path):
        z = np.random.default_rng(0).normal(size=(8, C))
        from safetensors.numpy import save_file

        np.save(tmp_path / "z.npy", z)
        save_file({"logits": z.astype(np.float32), "other": np.zeros(2, dtype=np.float32)}, str(tmp_path / "z.safetensors"))
        save_file({"t": z.astype(np.float32)}, str(tmp_path / "one.safetensors"))
        for source in (z, torch.from_numpy(z), tmp_path / "z.npy", str(tmp_path / "z.safetensors"), tmp_path / "one.safetensors"):
            out = load_teacher_logits(source, num_rows=8, num_classes=C)
            assert out.dtype == torch.float32
            np.testing.assert_allclose(out.numpy(), z, rtol=1e-6)
        assert check_compatible(tmp_path / "z.npy", num_classes=C, num_rows=8) == C

    def test_errors(self, tmp_path):
        with pytest.raises(ValueError, match=r"teacher logits must have one row per sample of the data \(9\), got 8 instead"):
            check_compatible(np.zeros((8, C)), num_classes=C, num_rows=9)
        with pytest.raises(ValueError, match=r"teacher logits must have num_classes=4 columns \(the data's\), got 3 instead"):
            check_compatible(torch.zeros(8, C), num_classes=4, num_rows=8)
        with pytest.raises(ValueError, match=r"teacher logits must have shape \(N, C\), got \(8,\) instead"):
            load_teacher_logits(np.zeros(8))
        bad = np.zeros((4, C))
        bad[1, 2] = np.nan
        bad[3, 0] = np.inf
        with pytest.raises(ValueError, match=r"teacher logits must be finite, got 2 rows with NaN or infinity instead"):
            load_teacher_logits(bad)
        with pytest.raises(TypeError, match=r"teacher logits must be numeric, got dtype object instead"):
            load_teacher_logits(np.array([[None]], dtype=object))
        np.save(tmp_path / "obj.npy", np.array([[{"a": 1}]], dtype=object), allow_pickle=True)
        with pytest.raises(ValueError, match=r"teacher logits file must be a numeric .npy array, got 'obj.npy'"):
            load_teacher_logits(tmp_path / "obj.npy")  # never unpickled
        (tmp_path / "z.csv").write_text("1,2\n")
        with pytest.raises(ValueError, match=r"teacher logits file must end in .npy or .safetensors, got 'z.csv' instead"):
            load_teacher_logits(tmp_path / "z.csv")
        with pytest.raises(FileNotFoundError, match=r"teacher logits file must exist"):
            load_teacher_logits(tmp_path / "none.npy")
        from safetensors.numpy import save_file

        save_file({"a": np.zeros((2, 2), np.float32), "b": np.zeros((2, 2), np.float32)}, str(tmp_path / "two.safetensors"))
        with pytest.raises(ValueError, match=r"key must name a tensor of 'two.safetensors' \(one of \['a', 'b'\]\), got 'logits' instead"):
            load_teacher_logits(tmp_path / "two.safetensors")
        assert load_teacher_logits(tmp_path / "two.safetensors", key="b").shape == (2, 2)
        with pytest.raises(TypeError, match=r"teacher logits must be a tensor, an array or a .npy / .safetensors path, got list instead"):
            load_teacher_logits([[1.0]])
        with pytest.raises(TypeError, match=r"teacher must be a model, got precomputed logits \(Tensor\) instead: load them with load_teacher_logits"):
            as_teacher(torch.zeros(3, C))
        with pytest.raises(TypeError, match=r"got precomputed logits \(PosixPath\) instead"):
            as_teacher(tmp_path / "z.npy")


# ------------------------------------------------------------------------------ Hugging Face folders


def _tiny_bert(num_labels: int = 3):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=num_labels, max_position_embeddings=32,
    )
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config).eval()


class TestHuggingFace:
    def test_sequence_classifier_folder(self, tmp_path):
        model = _tiny_bert()
        model.save_pretrained(tmp_path / "bert", safe_serialization=True)
        t = as_teacher(tmp_path / "bert")
        assert isinstance(t, LogitsOf)
        gen = torch.Generator().manual_seed(1)
        X = {"input_ids": torch.randint(0, 50, (7, 6), generator=gen), "attention_mask": torch.ones(7, 6, dtype=torch.long)}
        X["attention_mask"][:3, 4:] = 0
        with torch.no_grad():
            ref = model(**X).logits
        out = teacher_logits(tmp_path / "bert", X, batch_size=3)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(teacher_logits(model, X), ref, rtol=1e-5, atol=1e-5)  # ModelOutput -> .logits
        assert check_compatible(tmp_path / "bert", num_classes=3, sample=X) == 3
        with pytest.raises(ValueError, match=r"teacher must predict num_classes=2 classes \(the data's\), got 3 instead"):
            check_compatible(tmp_path / "bert", num_classes=2, sample=X)

    def test_image_classifier_folder(self, tmp_path):
        transformers = pytest.importorskip("transformers")
        config = transformers.ViTConfig(
            image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1,
            num_attention_heads=2, intermediate_size=32, num_labels=4,
        )
        torch.manual_seed(0)
        model = transformers.ViTForImageClassification(config).eval()
        model.save_pretrained(tmp_path / "vit", safe_serialization=True)
        x = torch.randn(5, 1, 8, 8)
        with torch.no_grad():
            ref = model(pixel_values=x).logits
        torch.testing.assert_close(teacher_logits(tmp_path / "vit", x), ref, rtol=1e-5, atol=1e-5)
        assert check_compatible(tmp_path / "vit", num_classes=4, input_shape=(1, 8, 8)) == 4

    def test_errors_and_run_folder_unchanged(self, tmp_path):
        model = _tiny_bert()
        model.save_pretrained(tmp_path / "bert", safe_serialization=True)
        (tmp_path / "bert" / "model.safetensors").unlink()
        with pytest.raises(FileNotFoundError, match=r"a Hugging Face teacher folder must hold safetensors weights \(model.safetensors\), got none"):
            as_teacher(tmp_path / "bert")
        (tmp_path / "enc").mkdir()
        (tmp_path / "enc" / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
        (tmp_path / "enc" / "model.safetensors").write_bytes(b"")
        with pytest.raises(ValueError, match=r"config.json architectures must name a \*ForSequenceClassification or \*ForImageClassification model, got \['BertModel'\] instead"):
            as_teacher(tmp_path / "enc")
        from darkknowledge.checkpoint import save_model
        from darkknowledge.models import build_model

        m = build_model("mlp", input_shape=(D,), num_classes=C, hidden=[4], seed=0)
        save_model(tmp_path / "run", m)
        assert type(as_teacher(tmp_path / "run")) is type(m)  # a darkknowledge run folder stays what it is


# ------------------------------------------------------------------------------ optional dependencies


@pytest.mark.parametrize(
    ("blocked", "make", "extra"),
    [
        ("onnxruntime", lambda p: as_teacher(p / "t.onnx"), "onnx"),
        ("transformers", lambda p: as_teacher(p / "hf"), "hf"),
    ],
)
def test_missing_extra_names_the_pip_install(tmp_path, monkeypatch, blocked, make, extra):
    (tmp_path / "t.onnx").write_bytes(b"")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"")
    monkeypatch.setitem(__import__("sys").modules, blocked, None)  # `import blocked` now raises ImportError
    with pytest.raises(ValueError, match=rf"this teacher needs the optional package '{blocked}': run pip install \"darkknowledge\[{extra}\]\""):
        make(tmp_path)
