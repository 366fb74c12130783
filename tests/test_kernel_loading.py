"""The compiled fused kernel: where it is loaded from, what happens without it, and label checks.

Security: a library planted in the old run-time cache folders (``$DARKKNOWLEDGE_CACHE_DIR``,
``~/.cache/darkknowledge``, ``$XDG_CACHE_HOME``, ``<tmp>/darkknowledge-<uid>``) is never loaded;
only the extension module installed in the package's own folder is. Memory safety: class ids
outside ``[0, C)`` are refused on every path into the kernel (a ValueError, never a read outside
the tensor).
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import importlib.util
import os
import subprocess
import tempfile
import warnings
from pathlib import Path

import pytest
import torch

from darkknowledge import _fused_kd, losses
from darkknowledge.errors import DarkKnowledgeError
from darkknowledge.losses import DistillationLoss, TrainingDistillationLoss, distillation_loss

PACKAGE = Path(_fused_kd.__file__).resolve().parent


def make(n=8, c=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(n, c, generator=g), 3 * torch.randn(n, c, generator=g), torch.randint(0, c, (n,), generator=g)


@pytest.fixture
def fresh_kernel(monkeypatch):
    """A loader that has not tried yet (restored afterwards by monkeypatch)."""
    monkeypatch.setattr(_fused_kd, "_kernel", None)
    monkeypatch.setattr(_fused_kd, "_kernel_error", None)
    monkeypatch.setattr(losses, "_warned_fallback", False)


@pytest.fixture
def cdll_calls(monkeypatch):
    """Every path handed to ctypes.CDLL while the test runs (the real CDLL still loads it)."""
    calls: list[Path] = []
    real = ctypes.CDLL

    def recording(name, *args, **kwargs):
        calls.append(Path(name).resolve())
        return real(name, *args, **kwargs)

    monkeypatch.setattr(_fused_kd.ctypes, "CDLL", recording)
    return calls


def _installed() -> bool:
    return importlib.util.find_spec("darkknowledge._fused_kd_c") is not None


needs_extension = pytest.mark.skipif(not _installed(), reason="the C extension was not built (no compiler)")


def test_the_extension_is_built_where_a_compiler_was_there():
    """CI has gcc, so there the extension must exist: a build that failed silently would skip the tests above."""
    if os.environ.get("DARKKNOWLEDGE_REQUIRE_KERNEL") != "1":
        pytest.skip("set DARKKNOWLEDGE_REQUIRE_KERNEL=1 (CI does) to require the compiled kernel")
    assert _installed(), "darkknowledge._fused_kd_c was not built by pip install: see the build log"
    from darkknowledge import _fused_kd

    assert _fused_kd.load_kernel() is not None, _fused_kd.kernel_error()


@needs_extension
def test_kernel_loads_only_from_the_package_folder(fresh_kernel, cdll_calls):
    assert _fused_kd.load_kernel() is not None, _fused_kd.kernel_error()
    origin = Path(importlib.util.find_spec("darkknowledge._fused_kd_c").origin).resolve()
    assert cdll_calls == [origin]
    assert origin.parent == PACKAGE and origin.name.startswith("_fused_kd_c")
    assert _fused_kd.kernel_error() is None


def test_a_planted_library_in_the_old_cache_folders_is_never_loaded(fresh_kernel, cdll_calls, monkeypatch, tmp_path):
    uid = getattr(os, "getuid", lambda: 0)()
    folders = {
        "DARKKNOWLEDGE_CACHE_DIR": tmp_path / "dk-cache" / "kernels",
        "XDG_CACHE_HOME": tmp_path / "xdg" / "darkknowledge" / "kernels",
        "HOME": tmp_path / "home" / ".cache" / "darkknowledge" / "kernels",
    }
    monkeypatch.setenv("DARKKNOWLEDGE_CACHE_DIR", str(tmp_path / "dk-cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    shared = tmp_path / "tmp" / f"darkknowledge-{uid}"
    planted = []
    for folder in [*folders.values(), shared]:
        folder.mkdir(parents=True)
        lib = folder / "fused_kd_0123456789abcdef.so"
        lib.write_bytes(b"\x7fELF planted by another user")
        planted.append(lib.resolve())

    def no_compiler(*args, **kwargs):
        raise AssertionError(f"a compiler was run: {args}")

    monkeypatch.setattr(subprocess, "run", no_compiler)
    monkeypatch.setattr(subprocess, "Popen", no_compiler)
    fn = _fused_kd.load_kernel()
    for call in cdll_calls:
        assert call.parent == PACKAGE, f"loaded {call}"
        assert call not in planted
    assert (fn is not None) == _installed()
    # and the loss still runs, on whichever path is there
    s, t, y = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", _fused_kd.KernelUnavailableWarning)
        torch.testing.assert_close(distillation_loss(s, t, y), distillation_loss(s, t, y, backend="eager"),
                                   rtol=1e-6, atol=1e-6)
    assert not any(p.parent.exists() and list(p.parent.glob("*.c")) for p in planted)  # nothing compiled there


def test_the_loader_has_no_runtime_build():
    source = Path(_fused_kd.__file__).read_text()
    for word in ("subprocess", "tempfile", "gettempdir", "CACHE_DIR", ".cache"):
        assert word not in source, word


@needs_extension
def test_the_kernel_links_no_openmp_runtime():
    data = Path(importlib.util.find_spec("darkknowledge._fused_kd_c").origin).read_bytes()
    for symbol in (b"GOMP_", b"omp_get_thread_num", b"libgomp", b"libomp"):
        assert symbol not in data, symbol


def test_absent_extension_falls_back_says_why_once(fresh_kernel, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(_fused_kd.importlib.util, "find_spec",
                        lambda name, *a: None if name == "darkknowledge._fused_kd_c" else real(name, *a))
    assert _fused_kd.load_kernel() is None
    assert "darkknowledge._fused_kd_c is not installed" in _fused_kd.kernel_error()
    s, t, y = make()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = [distillation_loss(s, t, y) for _ in range(3)]
        values.append(TrainingDistillationLoss().value_and_grad(s, t, y).loss)
    mine = [w for w in caught if issubclass(w.category, _fused_kd.KernelUnavailableWarning)]
    assert len(mine) == 1, [str(w.message) for w in caught]
    assert not issubclass(_fused_kd.KernelUnavailableWarning, (UserWarning, RuntimeWarning))
    assert "is not installed" in str(mine[0].message) and "using the slower eager backend" in str(mine[0].message)
    ref = distillation_loss(s, t, y, backend="eager")
    for v in values:
        torch.testing.assert_close(v, ref, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="backend='compiled' was asked for, but the fused kernel is not available"):
        distillation_loss(s, t, y, backend="compiled")


def test_an_extension_outside_the_package_is_refused(fresh_kernel, monkeypatch, tmp_path, cdll_calls):
    fake = tmp_path / "_fused_kd_c.so"
    fake.write_bytes(b"not a library")
    spec = importlib.machinery.ModuleSpec("darkknowledge._fused_kd_c", None, origin=str(fake))
    real = importlib.util.find_spec
    monkeypatch.setattr(_fused_kd.importlib.util, "find_spec",
                        lambda name, *a: spec if name == "darkknowledge._fused_kd_c" else real(name, *a))
    assert _fused_kd.load_kernel() is None
    assert "found outside the package folder" in _fused_kd.kernel_error()
    assert cdll_calls == []


# ---------------------------------------------------------------- labels out of range


BAD_LABELS = [
    (torch.tensor([0, 1, 2, 1000000]), r"\[0, 9\] \(C = 10 classes\), got 1 value\(s\) outside that range \(1000000\)"),
    (torch.tensor([0, 10, 2, 3]), r"\[0, 9\] \(C = 10 classes\), got 1 value\(s\) outside that range \(10\)"),
    (torch.tensor([-1, 1, 2, 3]), r"\[0, 9\] \(C = 10 classes\), got 1 value\(s\) outside that range \(-1\)"),
    (torch.tensor([-5, 10, -5, 3]), r"got 3 value\(s\) outside that range \(-5, 10\)"),
]


@pytest.mark.parametrize(("y", "match"), BAD_LABELS)
@pytest.mark.parametrize("backend", ["auto", "compiled", "eager"])
def test_out_of_range_labels_are_refused_on_every_entry(y, match, backend):
    if backend == "compiled" and _fused_kd.load_kernel() is None:
        pytest.skip("no compiled kernel")
    s, t, _ = make(4, 10)
    match = "target must hold class ids in .*" + match
    for alpha in (0.1, 0.0, 1.0):
        with pytest.raises(ValueError, match=match):
            distillation_loss(s, t, y, alpha=alpha, backend=backend)
        with pytest.raises(ValueError, match=match):
            DistillationLoss(alpha=alpha, backend=backend)(s, t, y)
        fn = TrainingDistillationLoss(alpha=alpha, backend=backend)
        with pytest.raises(ValueError, match=match):
            fn.value_and_grad(s, t, y)
        with pytest.raises(ValueError, match=match):
            fn(s.clone().requires_grad_(True), t, y)


@needs_extension
@pytest.mark.parametrize("n", [4, 4096])  # one call, and row blocks on worker threads
def test_the_kernel_itself_refuses_bad_labels(n):
    c = 32
    s, t, y = make(n, c)
    y[n - 1] = c  # the last row: in the last block
    with pytest.raises(DarkKnowledgeError, match=rf"target must hold class ids in \[0, {c - 1}\].*\({c}\)"):
        _fused_kd.rows_compiled(s, t, y, temperature=4.0, w_hard=0.1, w_soft=0.9, divergence="kl", gscale=1.0)
    y[n - 1] = -(2**62)
    with pytest.raises(ValueError, match="outside that range"):
        _fused_kd.rows_compiled(s, t, y, temperature=4.0, w_hard=0.0, w_soft=1.0, divergence="js", gscale=1.0)


@needs_extension
def test_row_blocks_on_threads_equal_one_call():
    s, t, y = make(3000, 50, seed=4)
    kw = dict(temperature=3.0, w_hard=0.2, w_soft=0.8, divergence="reverse_kl", gscale=1 / 3000)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        r1, g1, n1 = _fused_kd.rows_compiled(s, t, y, **kw)
        torch.set_num_threads(3)
        r3, g3, n3 = _fused_kd.rows_compiled(s, t, y, **kw)
    finally:
        torch.set_num_threads(before)
    assert n1 == n3 == 0
    assert torch.equal(r1, r3) and torch.equal(g1, g3)
