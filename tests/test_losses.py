"""Tests of the fused distillation loss against independent references.

References: the plain composition of torch.nn.functional ops (autograd gradients), the
analytic gradient written out in NumPy/SciPy float64, torch.autograd.gradcheck, and
Hinton's high-temperature logit-matching limit.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import softmax as sp_softmax

from darkknowledge import _fused_kd, losses
from darkknowledge.losses import DistillationLoss, LossAndGradient, TrainingDistillationLoss, distillation_loss

BACKENDS = ["eager", "compiled"]
DIVS = ["kl", "reverse_kl", "js"]


def plain_rows(s, t, y, *, temperature, alpha, divergence):
    """Per-row loss by the plain composition of torch ops (autograd does the gradient)."""
    T = temperature
    ls, lt = F.log_softmax(s / T, -1), F.log_softmax(t / T, -1)
    if divergence == "kl":  # KL(p || q): F.kl_div(input=log q, target=log p)
        d = F.kl_div(ls, lt, log_target=True, reduction="none").sum(-1)
    elif divergence == "reverse_kl":  # KL(q || p)
        d = F.kl_div(lt, ls, log_target=True, reduction="none").sum(-1)
    else:
        lm = torch.logsumexp(torch.stack([ls, lt]), 0) - math.log(2.0)
        d = 0.5 * (F.kl_div(lm, lt, log_target=True, reduction="none").sum(-1)
                   + F.kl_div(lm, ls, log_target=True, reduction="none").sum(-1))
    if y is None:
        return T * T * d
    return alpha * F.cross_entropy(s, y, reduction="none") + (1 - alpha) * T * T * d


def reduce(rows, reduction):
    return {"mean": rows.mean, "sum": rows.sum, "none": lambda: rows}[reduction]()


def make(n=16, c=12, dtype=torch.float32, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    s = (scale * torch.randn(n, c, generator=g, dtype=torch.float64)).to(dtype)
    t = (scale * torch.randn(n, c, generator=g, dtype=torch.float64)).to(dtype)
    y = torch.randint(0, c, (n,), generator=g)
    return s, t, y


def value_and_grad(fn, s, *args, weights=None):
    s = s.detach().clone().requires_grad_(True)
    out = fn(s, *args)
    (out if weights is None else out * weights).sum().backward()
    return out.detach(), s.grad


# ---------------------------------------------------------------- values and gradients


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("divergence", DIVS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("alpha", [0.0, 0.1, 1.0])
def test_matches_plain_composition_float32(backend, divergence, reduction, alpha):
    s, t, y = make(32, 50)
    w = torch.rand(32) if reduction == "none" else None
    kw = dict(temperature=4.0, alpha=alpha, divergence=divergence)
    v, g = value_and_grad(lambda x: distillation_loss(x, t, y, reduction=reduction, backend=backend, **kw),
                          s, weights=w)
    rv, rg = value_and_grad(lambda x: reduce(plain_rows(x, t, y, **kw), reduction), s, weights=w)
    torch.testing.assert_close(v, rv, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g, rg, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kl_matches_the_issue_formula_with_batchmean(backend):
    s, t, y = make(64, 100)
    T, a = 4.0, 0.1

    def issue(x):
        kl = F.kl_div(F.log_softmax(x / T, -1), F.log_softmax(t / T, -1), log_target=True,
                      reduction="batchmean")
        return kl * T * T * (1 - a) + a * F.cross_entropy(x, y)

    v, g = value_and_grad(lambda x: distillation_loss(x, t, y, temperature=T, alpha=a, backend=backend), s)
    rv, rg = value_and_grad(issue, s)
    torch.testing.assert_close(v, rv, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g, rg, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("divergence", DIVS)
def test_soft_targets_only_when_target_is_none(backend, divergence):
    s, t, _ = make(8, 20)
    kw = dict(temperature=2.5, divergence=divergence)
    v, g = value_and_grad(lambda x: distillation_loss(x, t, None, alpha=0.7, backend=backend, **kw), s)
    rv, rg = value_and_grad(lambda x: plain_rows(x, t, None, alpha=0.0, **kw).mean(), s)
    torch.testing.assert_close(v, rv, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g, rg, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("divergence", DIVS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_matches_plain_composition_float64(divergence, reduction):
    s, t, y = make(10, 7, dtype=torch.float64)
    kw = dict(temperature=3.0, alpha=0.25, divergence=divergence)
    w = torch.rand(10, dtype=torch.float64) if reduction == "none" else None
    v, g = value_and_grad(lambda x: distillation_loss(x, t, y, reduction=reduction, **kw), s, weights=w)
    rv, rg = value_and_grad(lambda x: reduce(plain_rows(x, t, y, **kw), reduction), s, weights=w)
    assert v.dtype == torch.float64
    torch.testing.assert_close(v, rv, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(g, rg, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("divergence", DIVS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck_float64(divergence, reduction):
    s, t, y = make(4, 5, dtype=torch.float64, scale=1.5)
    s.requires_grad_(True)
    fn = lambda x: distillation_loss(x, t, y, temperature=2.0, alpha=0.3, divergence=divergence,  # noqa: E731
                                     reduction=reduction)
    assert torch.autograd.gradcheck(fn, (s,), eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kl_gradient_is_the_hand_derived_formula(backend):
    """dL/ds = alpha (softmax(s) - onehot(y)) / N + (1 - alpha) T (softmax(s/T) - softmax(t/T)) / N."""
    s, t, y = make(20, 9)
    T, a, n = 3.0, 0.2, 20
    s64, t64 = s.double().numpy(), t.double().numpy()
    onehot = np.eye(9)[y.numpy()]
    expect = (a * (sp_softmax(s64, axis=1) - onehot)
              + (1 - a) * T * (sp_softmax(s64 / T, axis=1) - sp_softmax(t64 / T, axis=1))) / n
    _, g = value_and_grad(lambda x: distillation_loss(x, t, y, temperature=T, alpha=a, backend=backend), s)
    np.testing.assert_allclose(g.double().numpy(), expect, rtol=1e-5, atol=1e-8)


def test_high_temperature_limit_is_logit_matching():
    """Hinton 2015, section 2.1: as T grows, T^2 KL -> sum(delta^2) / (2C) and its gradient
    -> ((s - mean s) - (t - mean t)) / (N C), with delta the difference of centred logits."""
    s, t, _ = make(6, 8, dtype=torch.float64)
    n, c, T = 6, 8, 1e4
    centred = (s - s.mean(1, keepdim=True)) - (t - t.mean(1, keepdim=True))  # (N, C)
    v, g = value_and_grad(lambda x: distillation_loss(x, t, temperature=T, reduction="none"), s)
    torch.testing.assert_close(v, (centred**2).sum(1) / (2 * c), rtol=1e-3, atol=0)
    _, g = value_and_grad(lambda x: distillation_loss(x, t, temperature=T), s)
    torch.testing.assert_close(g, centred / (n * c), rtol=1e-3, atol=1e-9)


def test_leading_dims_are_flattened():
    s, t, y = make(12, 6)
    s3, t3, y3 = s.reshape(3, 4, 6), t.reshape(3, 4, 6), y.reshape(3, 4)
    v3, g3 = value_and_grad(lambda x: distillation_loss(x, t3, y3, reduction="none"), s3)
    v, g = value_and_grad(lambda x: distillation_loss(x, t, y, reduction="none"), s)
    assert v3.shape == (3, 4) and g3.shape == (3, 4, 6)
    torch.testing.assert_close(v3.reshape(-1), v, rtol=0, atol=0)
    torch.testing.assert_close(g3.reshape(12, 6), g, rtol=0, atol=0)
    one = distillation_loss(s[0], t[0], y[0], reduction="none")
    assert one.shape == () and torch.allclose(one, v[0])


def test_chunked_and_unchunked_agree():
    s, t, y = make(37, 11, dtype=torch.float64)
    for divergence in DIVS:
        kw = dict(alpha=0.4, divergence=divergence, backend="eager")
        v1, g1 = value_and_grad(lambda x: distillation_loss(x, t, y, chunk_size=3, **kw), s)
        v2, g2 = value_and_grad(lambda x: distillation_loss(x, t, y, chunk_size=1000, **kw), s)
        torch.testing.assert_close(v1, v2, rtol=1e-14, atol=0)
        torch.testing.assert_close(g1, g2, rtol=1e-14, atol=0)


@pytest.mark.parametrize("divergence", DIVS)
def test_compiled_and_eager_agree_with_many_classes(divergence):
    s, t, y = make(4, 32000, seed=3)
    kw = dict(alpha=0.1, divergence=divergence, reduction="sum")
    v1, g1 = value_and_grad(lambda x: distillation_loss(x, t, y, backend="compiled", **kw), s)
    v2, g2 = value_and_grad(lambda x: distillation_loss(x.double(), t.double(), y, **kw), s)
    torch.testing.assert_close(v1, v2.float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-8)


def test_teacher_gets_no_gradient():
    s, t, y = make()
    s.requires_grad_(True)
    t.requires_grad_(True)
    distillation_loss(s, t, y).backward()
    assert t.grad is None and s.grad is not None and torch.isfinite(s.grad).all()


def test_module_equals_function():
    s, t, y = make()
    mod = DistillationLoss(temperature=2.0, alpha=0.3, divergence="js", reduction="sum")
    assert repr(mod) == "DistillationLoss(temperature=2.0, alpha=0.3, divergence='js', reduction='sum')"
    v1, g1 = value_and_grad(lambda x: mod(x, t, y), s)
    v2, g2 = value_and_grad(
        lambda x: distillation_loss(x, t, y, temperature=2.0, alpha=0.3, divergence="js", reduction="sum"), s)
    torch.testing.assert_close(v1, v2, rtol=0, atol=0)
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)


def test_numpy_inputs_are_accepted():
    s, t, y = make(dtype=torch.float64)
    v = distillation_loss(s.numpy(), t.numpy(), y.numpy())
    torch.testing.assert_close(v, distillation_loss(s, t, y), rtol=0, atol=0)


# ---------------------------------------------------------------- robustness


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("divergence", DIVS)
def test_extreme_logits_stay_finite_and_exact(backend, divergence):
    g = torch.Generator().manual_seed(1)
    s = 1e4 * torch.sign(torch.randn(16, 10, generator=g))
    t = 1e4 * torch.sign(torch.randn(16, 10, generator=g))
    t[:, 0] = s[:, 0] = 1e4  # every row: teacher and student share some mass
    y = torch.randint(0, 10, (16,), generator=g)
    kw = dict(temperature=4.0, alpha=0.1, divergence=divergence)
    v, gr = value_and_grad(lambda x: distillation_loss(x, t, y, backend=backend, **kw), s)
    assert torch.isfinite(v) and torch.isfinite(gr).all()
    rv, rg = value_and_grad(lambda x: plain_rows(x, t.double(), y, **kw).mean(), s.double())
    torch.testing.assert_close(v.double(), rv, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gr.double(), rg, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_float32(backend, dtype):
    s, t, y = make(16, 40, dtype=dtype)
    v, g = value_and_grad(lambda x: distillation_loss(x, t, y, backend=backend), s)
    assert v.dtype == torch.float32 and g.dtype == dtype
    assert torch.isfinite(v) and torch.isfinite(g).all()
    rv, rg = value_and_grad(lambda x: plain_rows(x, t.double(), y, temperature=4.0, alpha=0.1,
                                                 divergence="kl").mean(), s.double())
    torch.testing.assert_close(v.double(), rv, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g.double(), rg, rtol=1e-2, atol=1e-5)  # g is rounded to `dtype`


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("divergence", DIVS)
def test_masked_classes_are_finite_where_plain_is_nan(backend, divergence):
    s, t, y = make(8, 12)
    keep = torch.ones(12, dtype=torch.bool)
    keep[[3, 7, 11]] = False  # padded vocabulary: -inf in both, same positions
    sm, tm = s.clone(), t.clone()
    sm[:, ~keep] = -math.inf
    tm[:, ~keep] = -math.inf
    y = torch.tensor([0, 1, 2, 4, 5, 6, 8, 9])
    kw = dict(temperature=2.0, alpha=0.1, divergence=divergence)
    pv, pg = value_and_grad(lambda x: plain_rows(x, tm, y, **kw).mean(), sm)
    assert torch.isnan(pv) or torch.isnan(pg).any()  # the plain composition fails here
    v, g = value_and_grad(lambda x: distillation_loss(x, tm, y, backend=backend, **kw), sm)
    assert torch.isfinite(v) and torch.isfinite(g).all()
    assert (g[:, ~keep] == 0).all()
    # independent reference: the plain composition on the unmasked classes only
    ykeep = torch.cumsum(keep.long(), 0)[y] - 1
    rv, rg = value_and_grad(lambda x: plain_rows(x, t[:, keep], ykeep, **kw).mean(), s[:, keep])
    torch.testing.assert_close(v, rv, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g[:, keep], rg, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_student_minus_inf_where_teacher_has_mass(backend):
    s, t, y = make(4, 6)
    s[0, 2] = -math.inf
    v, g = value_and_grad(lambda x: distillation_loss(x, t, y, backend=backend, divergence="kl"), s)
    assert v.item() == math.inf and torch.isfinite(g).all()
    v, g = value_and_grad(lambda x: distillation_loss(x, t, y, backend=backend, divergence="js"), s)
    assert torch.isfinite(v) and torch.isfinite(g).all()
    v = distillation_loss(t, s, None, backend=backend, divergence="reverse_kl")  # roles swapped
    assert v.item() == math.inf


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("where", "value", "match"),
    [("student", math.nan, "student_logits must not contain NaN"),
     ("teacher", math.nan, "teacher_logits must not contain NaN"),
     ("student", math.inf, r"student_logits must not contain \+inf"),
     ("teacher", "row", "teacher_logits must have a finite logit in every row")],
)
def test_nan_producing_inputs_raise(backend, where, value, match):
    s, t, y = make(4, 6)
    x = s if where == "student" else t
    if value == "row":
        x[1] = -math.inf
    else:
        x[2, 3] = value
    with pytest.raises(ValueError, match=match):
        distillation_loss(s, t, y, backend=backend)


# ---------------------------------------------------------------- backends


def test_env_var_selects_backend(monkeypatch):
    s, t, y = make()

    def boom(*a, **k):
        raise AssertionError("compiled kernel called")

    monkeypatch.setattr(_fused_kd, "rows_compiled", boom)
    monkeypatch.setenv("DARKKNOWLEDGE_LOSS_BACKEND", "eager")
    distillation_loss(s, t, y)
    monkeypatch.setenv("DARKKNOWLEDGE_LOSS_BACKEND", "compiled")
    with pytest.raises(AssertionError, match="compiled kernel called"):
        distillation_loss(s, t, y)
    monkeypatch.setenv("DARKKNOWLEDGE_LOSS_BACKEND", "fast")
    with pytest.raises(ValueError, match=r"\$DARKKNOWLEDGE_LOSS_BACKEND must be one of 'auto', 'eager', 'compiled'; got 'fast'"):
        distillation_loss(s, t, y)


def test_fallback_when_the_kernel_is_absent(monkeypatch):
    s, t, y = make()
    monkeypatch.setattr(_fused_kd, "_kernel", None)
    monkeypatch.setattr(_fused_kd, "_kernel_error", "the extension module darkknowledge._fused_kd_c is not installed")
    monkeypatch.setattr(losses, "_warned_fallback", False)
    with pytest.raises(RuntimeError, match="backend='compiled' was asked for, but the fused kernel is not available: "
                                           "the extension module darkknowledge._fused_kd_c is not installed"):
        distillation_loss(s, t, y, backend="compiled")
    with pytest.warns(_fused_kd.KernelUnavailableWarning, match="using the slower eager backend"):
        v = distillation_loss(s, t, y, backend="auto")
    torch.testing.assert_close(v, distillation_loss(s, t, y, backend="eager"), rtol=0, atol=0)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [({"temperature": 0.0}, ValueError, "temperature must be a finite number > 0, got 0.0 instead"),
     ({"temperature": math.inf}, ValueError, "temperature must be a finite number > 0, got inf"),
     ({"temperature": "4"}, TypeError, "temperature must be a number, got str instead"),
     ({"alpha": 1.5}, ValueError, r"alpha must be in \[0.0, 1.0\], got 1.5 instead"),
     ({"alpha": math.nan}, ValueError, r"alpha must be in \[0.0, 1.0\], got nan"),
     ({"divergence": "kld"}, ValueError, "divergence must be one of 'kl', 'reverse_kl', 'js'; got 'kld'"),
     ({"reduction": "batchmean"}, ValueError, "reduction must be one of 'mean', 'sum', 'none'; got 'batchmean'"),
     ({"backend": "gpu"}, ValueError, "backend must be one of 'auto', 'eager', 'compiled'; got 'gpu'"),
     ({"chunk_size": 0}, ValueError, "chunk_size must be an integer >= 1, got 0 instead"),
     ({"chunk_size": 2.0}, TypeError, "chunk_size must be an integer, got float instead")],
)
def test_bad_hyperparameters(kwargs, exc, match):
    s, t, y = make()
    with pytest.raises(exc, match=match):
        distillation_loss(s, t, y, **kwargs)
    ctor = {k: v for k, v in kwargs.items() if k != "chunk_size"}
    if ctor:
        with pytest.raises(exc, match=match):
            DistillationLoss(**ctor)


def test_bad_tensors():
    s, t, y = make(4, 6)
    cases = [
        ((s.tolist(), t, y), TypeError, "student_logits must be a torch.Tensor or numpy.ndarray, got list instead"),
        ((s.long(), t, y), TypeError, "student_logits must have a floating dtype, got torch.int64 instead"),
        ((s, t.int(), y), TypeError, "teacher_logits must have a floating dtype, got torch.int32 instead"),
        ((torch.tensor(1.0), torch.tensor(1.0), None), ValueError,
         r"student_logits must have shape \(..., C\) with at least one row and one class, got \(\) instead"),
        ((s[:0], t[:0], y[:0]), ValueError, r"at least one row and one class, got \(0, 6\) instead"),
        ((s, t[:, :5], y), ValueError,
         r"teacher_logits must have the same shape as student_logits \(4, 6\), got \(4, 5\) instead"),
        ((s, torch.empty(4, 6, device="meta"), y), ValueError,
         r"teacher_logits must be on the device of student_logits \(cpu\), got meta instead"),
        ((s, t, y.float()), TypeError, "target must hold integer class ids \\(int64\\), got torch.float32 instead"),
        ((s, t, y[:3]), ValueError, r"target must have shape \(4,\) \(the leading dims of the logits\), got \(3,\)"),
        ((s, t, torch.tensor([0, 1, 6, 2])), ValueError,
         r"target must hold class ids in \[0, 5\] \(C = 6 classes\), got 1 value\(s\) outside that range \(6\) instead"),
        ((s, t, torch.tensor([0, -1, 2, 2])), ValueError,
         r"target must hold class ids in \[0, 5\] \(C = 6 classes\), got 1 value\(s\) outside that range \(-1\)"),
    ]
    for args, exc, match in cases:
        with pytest.raises(exc, match=match):
            distillation_loss(*args)


# ---------------------------------------------------------------- the training-loop form


def _reference(s, t, y, **kw):
    """Mean loss and gradient of the float64 composition."""
    s64 = s.detach().double().requires_grad_(True)
    loss = plain_rows(s64, t.double(), y, **kw).mean()
    loss.backward()
    return loss.detach(), s64.grad


@pytest.mark.parametrize("divergence", DIVS)
@pytest.mark.parametrize("with_target", [True, False])
@pytest.mark.parametrize("backend", ["auto", "eager"])
def test_value_and_grad_and_call_match_float64(divergence, with_target, backend):
    s, t, y = make(n=33, c=10, seed=3)
    y = y if with_target else None
    fn = TrainingDistillationLoss(temperature=3.0, alpha=0.3, divergence=divergence, backend=backend)
    ref_loss, ref_grad = _reference(s, t, y, temperature=3.0, alpha=0.3, divergence=divergence)

    out = fn.value_and_grad(s.clone().requires_grad_(True), t, y)
    assert isinstance(out, LossAndGradient) and not out.loss.requires_grad and not out.grad.requires_grad
    torch.testing.assert_close(out.loss.double(), ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.grad.double(), ref_grad, rtol=1e-4, atol=1e-7)

    leaf = s.clone().requires_grad_(True)
    loss = fn(leaf, t, y)
    loss.backward()
    torch.testing.assert_close(loss.detach().double(), ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(leaf.grad.double(), ref_grad, rtol=1e-4, atol=1e-7)


def test_equals_the_checked_loss_bit_for_bit():
    s, t, y = make(n=128, c=10, seed=1)
    fn = TrainingDistillationLoss(temperature=4.0, alpha=0.1)
    a = s.clone().requires_grad_(True)
    checked = distillation_loss(a, t, y, temperature=4.0, alpha=0.1)
    checked.backward()
    fast = fn.value_and_grad(s, t, y)
    assert torch.equal(fast.loss, checked.detach()) and torch.equal(fast.grad, a.grad)
    b = s.clone().requires_grad_(True)
    attached = fn(b, t, y)
    attached.backward()
    assert torch.equal(attached.detach(), checked.detach()) and torch.equal(b.grad, a.grad)


def test_other_dtypes_and_float16_teachers_take_a_correct_path():
    s, t, y = make(n=20, c=7, dtype=torch.float64, seed=2)
    fn = TrainingDistillationLoss(temperature=2.0, alpha=0.5)
    ref_loss, ref_grad = _reference(s, t, y, temperature=2.0, alpha=0.5, divergence="kl")
    out = fn.value_and_grad(s, t, y)  # float64: the general path
    torch.testing.assert_close(out.loss, ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.grad, ref_grad, rtol=1e-10, atol=1e-12)
    s32, t16 = s.float(), t.half()  # a float16 soft-target cache with a float32 student
    ref_loss, _ = _reference(s32, t16, y, temperature=2.0, alpha=0.5, divergence="kl")
    torch.testing.assert_close(fn.value_and_grad(s32, t16, y).loss.double(), ref_loss, rtol=1e-5, atol=1e-6)


def test_nan_logits_get_the_checked_loss_error():
    s, t, y = make(n=4, c=5)
    s[1, 2] = float("nan")
    fn = TrainingDistillationLoss()
    with pytest.raises(ValueError, match=r"student_logits must not contain NaN, got 1 NaN"):
        fn.value_and_grad(s, t, y)
    with pytest.raises(ValueError, match=r"student_logits must not contain NaN"):
        fn(s.requires_grad_(True), t, y)


def test_bad_hyperparameters_are_refused_once():
    with pytest.raises(ValueError, match=r"temperature must be"):
        TrainingDistillationLoss(temperature=0.0)
    with pytest.raises(ValueError, match=r"alpha must be"):
        TrainingDistillationLoss(alpha=1.5)
    with pytest.raises(ValueError, match=r"divergence must be one of"):
        TrainingDistillationLoss(divergence="kld")
