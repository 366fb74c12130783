"""darkknowledge.mle: the logistic-regression MLE against statsmodels, and the `challenger` command."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from darkknowledge.cli import main
from darkknowledge.mle import LogisticFit, challenger_data, fit_logistic_regression, plot_logistic_fit

# The 23 pre-accident flights, typed in from the issue (temperature °F, O-ring distress).
CHALLENGER = [
    (66, 0), (70, 1), (69, 0), (68, 0), (67, 0), (72, 0), (73, 0), (70, 0), (57, 1), (63, 1), (70, 1), (78, 0),
    (67, 0), (53, 1), (67, 0), (75, 0), (70, 0), (81, 0), (76, 0), (79, 0), (75, 1), (76, 0), (58, 1),
]


@pytest.fixture(scope="module")
def statsmodels_fit():
    t, y = np.array(CHALLENGER, dtype=float).T
    return sm.Logit(y, sm.add_constant(t)).fit(disp=0, tol=1e-12, maxiter=100)


def test_challenger_data_is_the_23_flights():
    t, y = challenger_data()
    np.testing.assert_array_equal(np.column_stack([t, y]), np.array(CHALLENGER, dtype=float))


def test_challenger_fit_matches_statsmodels(statsmodels_fit):
    t, y = challenger_data()
    fit = fit_logistic_regression(t, y)
    assert isinstance(fit, LogisticFit) and fit.converged and fit.n_iter < 20
    np.testing.assert_allclose([fit.intercept, fit.coefficients[0]], statsmodels_fit.params, rtol=0, atol=1e-6)
    assert fit.log_likelihood == pytest.approx(statsmodels_fit.llf, abs=1e-6)
    np.testing.assert_allclose(fit.standard_errors, statsmodels_fit.bse, rtol=1e-6)
    grid = np.array([31.0, 50.0, 65.0, 80.0])
    np.testing.assert_allclose(fit.predict_proba(grid), statsmodels_fit.predict(sm.add_constant(grid)), atol=1e-6)
    # the numbers the command prints, to 1e-3
    assert fit.intercept == pytest.approx(15.0429, abs=1e-3)
    assert fit.coefficients[0] == pytest.approx(-0.2322, abs=1e-3)
    assert fit.log_likelihood == pytest.approx(-10.158, abs=1e-3)
    assert fit.predict_proba(31.0) == pytest.approx(0.9996, abs=1e-3)
    assert isinstance(fit.predict_proba(31.0), float)


def test_gradient_vanishes_at_the_optimum():
    t, y = challenger_data()
    fit = fit_logistic_regression(t, y)
    X = np.column_stack([np.ones_like(t), t])
    p = 1 / (1 + np.exp(-(X @ np.r_[fit.intercept, fit.coefficients])))
    np.testing.assert_allclose(X.T @ (y - p), 0.0, atol=1e-8)  # score equations X^T (y - p) = 0
    # and it is a maximum: nudging any parameter lowers the log-likelihood
    def ll(beta):
        z = X @ beta
        return np.sum(y * z - np.logaddexp(0, z))
    best = np.r_[fit.intercept, fit.coefficients]
    assert ll(best) == pytest.approx(fit.log_likelihood, abs=1e-12)
    for d in (np.array([1e-3, 0]), np.array([0, 1e-5]), np.array([-1e-3, 0])):
        assert ll(best + d) < ll(best)


def test_several_features_match_statsmodels():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = (rng.random(300) < 1 / (1 + np.exp(-(0.5 + X @ np.array([1.0, -2.0, 0.3]))))).astype(float)
    fit = fit_logistic_regression(X, y)
    ref = sm.Logit(y, sm.add_constant(X)).fit(disp=0, tol=1e-12)
    np.testing.assert_allclose(np.r_[fit.intercept, fit.coefficients], ref.params, atol=1e-6)
    assert fit.log_likelihood == pytest.approx(ref.llf, abs=1e-6)
    np.testing.assert_allclose(fit.predict_proba(X[:5]), ref.predict(sm.add_constant(X)[:5]), atol=1e-6)


def test_separated_data_does_not_converge():
    fit = fit_logistic_regression([1.0, 2.0, 3.0, 4.0], [0, 0, 1, 1], max_iter=30)
    assert not fit.converged
    assert fit.coefficients[0] > 5  # heading to +inf: the MLE does not exist
    assert fit.log_likelihood > -1e-2


def test_errors():
    with pytest.raises(ValueError, match=r"y must contain only 0 and 1"):
        fit_logistic_regression([1.0, 2.0], [0, 2])
    with pytest.raises(ValueError, match=r"y must have shape \(3,\) to match x, got \(2,\) instead"):
        fit_logistic_regression([1.0, 2.0, 3.0], [0, 1])
    with pytest.raises(ValueError, match=r"x must contain finite numbers"):
        fit_logistic_regression([1.0, np.nan], [0, 1])
    with pytest.raises(ValueError, match=r"x must have at least one sample"):
        fit_logistic_regression([], [])
    with pytest.raises(ValueError, match=r"x must have shape \(N,\) or \(N, D\), got \(2, 1, 1\) instead"):
        fit_logistic_regression(np.zeros((2, 1, 1)), [0, 1])
    with pytest.raises(TypeError, match=r"x must be an array of numbers, got list instead"):
        fit_logistic_regression(["a", "b"], [0, 1])
    with pytest.raises(ValueError, match=r"max_iter must be an integer >= 1, got 0 instead"):
        fit_logistic_regression([1.0, 2.0], [0, 1], max_iter=0)
    with pytest.raises(ValueError, match=r"tol must be a finite number > 0, got -1.0 instead"):
        fit_logistic_regression([1.0, 2.0], [0, 1], tol=-1.0)
    fit = fit_logistic_regression(*challenger_data())
    with pytest.raises(ValueError, match=r"x must have 1 feature\(s\) per sample, got 2 instead"):
        fit.predict_proba(np.zeros((3, 2)))


def test_plot_is_written_atomically(tmp_path):
    t, y = challenger_data()
    fit = fit_logistic_regression(t, y)
    out = plot_logistic_fit(fit, t, y, tmp_path / "fit.png", mark=31.0)
    assert out == tmp_path / "fit.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.png"]  # no temporary file left
    with pytest.raises(FileNotFoundError, match=r"path's folder .* does not exist"):
        plot_logistic_fit(fit, t, y, tmp_path / "missing" / "fit.png")


def test_challenger_command(capsys, tmp_path):
    assert main(["challenger"]) == 0
    out = capsys.readouterr().out
    assert "intercept:          15.0429" in out
    assert "slope:              -0.2322 per °F" in out
    assert "log-likelihood:     -10.1576 nats" in out
    assert "P(distress | 31 °F): 0.9996" in out
    png = tmp_path / "challenger.png"
    assert main(["challenger", "--plot", str(png), "--temperature", "50"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {png}" in out and "P(distress | 50 °F):" in out
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["challenger", "--plot", str(tmp_path / "nope" / "x.png")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("darkknowledge: error: --plot's folder") and "does not exist" in captured.err
    assert main(["challenger", "--temperature", "nan"]) == 2
    assert "--temperature must be a finite number of °F" in capsys.readouterr().err
