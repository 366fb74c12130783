"""`darkknowledge info ...` and the command-line frame: stdout, stderr and exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax as scipy_softmax
from scipy.stats import entropy as scipy_entropy

from darkknowledge import __version__
from darkknowledge.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_entropy_in_bits_and_nats(capsys):
    assert run(capsys, "info", "entropy", "0.1", "0.3", "0.2", "0.4") == (0, "1.8464 bits\n", "")
    assert run(capsys, "info", "entropy", "0.1", "0.3", "0.2", "0.4", "--base", "e") == (0, "1.2799 nats\n", "")
    code, out, _ = run(capsys, "info", "entropy", "1", "3", "2", "4", "--base", "10")  # weights are normalised
    assert code == 0 and out == f"{scipy_entropy([1, 3, 2, 4], base=10):.4f} hartleys\n"


def test_pairs(capsys):
    code, out, _ = run(capsys, "info", "kl", "--p", "0.5", "0.5", "--q", "0.9", "0.1")
    assert (code, out) == (0, "0.7370 bits\n")
    code, out, _ = run(capsys, "info", "kl", "--p", "0.9", "0.1", "--q", "0.5", "0.5", "--base", "e")
    assert (code, out) == (0, f"{scipy_entropy([0.9, 0.1], [0.5, 0.5]):.4f} nats\n")
    code, out, _ = run(capsys, "info", "cross-entropy", "--p", "0.5", "0.25", "0.125", "0.125",
                       "--q", "0.25", "0.25", "0.25", "0.25")
    assert (code, out) == (0, "2.0000 bits\n")
    code, out, _ = run(capsys, "info", "js", "--p", "0.2", "0.8", "--q", "0.6", "0.4")
    assert (code, out) == (0, f"{jensenshannon([0.2, 0.8], [0.6, 0.4], base=2) ** 2:.4f} bits\n")
    code, out, _ = run(capsys, "info", "kl", "--p", "0.5", "0.5", "--q", "1", "0")
    assert (code, out) == (0, "inf bits\n")


def test_self_information(capsys):
    code, out, _ = run(capsys, "info", "self-information", "0.5", "0.125")
    assert code == 0 and out == "I(0.5) = 1.0000 bits\nI(0.125) = 3.0000 bits\n"


def test_softmax_temperature_table(capsys):
    code, out, err = run(capsys, "info", "softmax", "1", "2", "3", "4", "--temperature", "1", "2")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["T", "z=1", "z=2", "z=3", "z=4"]
    assert lines[1].split() == ["1", "0.0321", "0.0871", "0.2369", "0.6439"]
    assert lines[2].split() == ["2", "0.1015", "0.1674", "0.2760", "0.4551"]
    code, out, _ = run(capsys, "info", "softmax", "0", "5", "-T", "0.5")
    assert code == 0
    expected = scipy_softmax([0 / 0.5, 5 / 0.5])
    assert out.splitlines()[1].split() == ["0.5", f"{expected[0]:.4f}", f"{expected[1]:.4f}"]
    code, out, _ = run(capsys, "info", "softmax", "1", "2")  # default T = 1
    assert code == 0 and len(out.splitlines()) == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "entropy", "-0.1", "0.5"], "p must be non-negative"),
        (["info", "entropy", "nan", "0.5"], "p must not contain NaN"),
        (["info", "entropy", "0", "0"], "p must have a positive sum along axis -1 to be normalised"),
        (["info", "entropy", "0.3", "0.3", "--no-normalize"], "p must sum to 1 along axis -1"),
        (["info", "entropy", "0.5", "0.5", "--base", "1"], "base must be a finite number > 0 other than 1"),
        (["info", "kl", "--p", "0.5", "0.5", "--q", "1"], r"q must have the same shape as p (2,), got (1,) instead"),
        (["info", "softmax", "1", "2", "--temperature", "0"], "temperature must be a finite number > 0"),
        (["info", "softmax", "1", "2", "--temperature", "inf"], "temperature must be a finite number > 0"),
        (["info", "softmax", "--", "-inf", "-inf"], "logits must have at least one entry > -inf"),
        (["info", "self-information", "1.5"], "each P must be a probability in [0, 1], got 1.5 instead"),
    ],
)
def test_bad_values_exit_2_with_a_message(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("darkknowledge: error: ") and message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "entropy", "abc"], "invalid float value: 'abc'"),
        (["info", "entropy"], "the following arguments are required: P"),
        (["info", "kl", "--p", "0.5", "0.5"], "the following arguments are required: --q"),
        (["info", "entropy", "0.5", "--base", "ten"], "must be 'e' or a number > 0 other than 1"),
        (["info"], "the following arguments are required: QUANTITY"),
        (["info", "volume", "1"], "invalid choice: 'volume'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_usage_errors_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err


def test_version_and_help(capsys):
    assert run(capsys, "--version") == (0, f"darkknowledge {__version__}\n", "")
    code, out, _ = run(capsys, "info", "--help")
    assert code == 0 and "entropy" in out and "softmax" in out


def test_python_dash_m(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "darkknowledge", "info", "entropy", "0.1", "0.3", "0.2", "0.4"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "1.8464 bits\n"
    assert proc.stderr == ""
