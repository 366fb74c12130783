"""The benchmarks' load monitor sees another process competing for the cores, and refuses to write docs then."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _machine_load import LoadMonitor, check_write  # noqa: E402

SPIN = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 30: pass\n"


def _busy_for(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="the foreign CPU share is read from Linux's /proc/stat")
def test_a_competing_process_is_seen_and_the_page_refused():
    spinner = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        time.sleep(0.3)  # let it start spinning
        with LoadMonitor() as load:
            _busy_for(1.5)
    finally:
        spinner.kill()
        spinner.wait()
    # the spinner held one core of load.cores for the whole run (the spinner is not our waited child)
    assert load.foreign_share is not None
    assert load.foreign_share > 0.6 / load.cores, load.summary()
    assert not load.quiet
    assert "LOADED" in load.summary()
    with pytest.raises(SystemExit, match="not writing the docs page: machine load: LOADED"):
        check_write(load, allow_loaded=False)
    check_write(load, allow_loaded=True)  # allowed, and then the page says so at the top
    assert load.page_header().startswith("> **Warning: measured on a loaded machine.**")


def test_own_cpu_time_is_not_counted_as_foreign_load(monkeypatch):
    """Scripted counters: 2 cores, 10 s wall, the machine 60 % busy (12 core-seconds), 9 of them ours -> 3 foreign."""
    import _machine_load as ml

    jiffies = iter([(1000, 10000), (1000 + 600, 10000 + 1000)])  # (busy, total): 60 % busy during the run
    own = iter([5.0, 14.0])  # 9 CPU seconds of ours
    clock = iter([100.0, 110.0])
    monkeypatch.setattr(ml, "_busy_and_total_jiffies", lambda: next(jiffies))
    monkeypatch.setattr(ml, "_own_cpu_seconds", lambda: next(own))
    monkeypatch.setattr(ml.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(ml.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    with LoadMonitor(cores=2) as load:
        pass
    assert load.wall_seconds == 10.0
    assert load.foreign_share == pytest.approx(3.0 / 20.0)  # 0.15: above the 0.10 that counts as quiet
    assert not load.quiet
