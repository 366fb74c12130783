"""How busy the machine was while a benchmark ran, and whether its figures may go into the docs.

A benchmark on a shared machine measures the neighbours as much as the code: a starved thread team
once made a 1.9x speed-up read as 4.7x. :class:`LoadMonitor` records, around the timed work,

* the load average (1, 5, 15 min) before and after, and
* the **foreign CPU share**: CPU time the whole machine spent busy (``/proc/stat``) minus the CPU
  time of this process and its children (``getrusage``), divided by wall time x cores. 0 means
  nothing else ran; 0.5 on 2 cores means another process held one core the whole time.

A run is *quiet* when the foreign share during it stays below ``QUIET_FOREIGN_SHARE`` (where
``/proc/stat`` is missing: when the 1-minute load average before it is below ``QUIET_LOAD_PER_CORE``
per core; the load average lags and counts the benchmark's own recent work, so it is only recorded). :func:`check_write` refuses to
write a docs page from a loaded run unless ``--allow-loaded`` is given, and then the page starts
with a warning.

Example::

    with LoadMonitor() as load:
        ...  # the timed work
    print(load.summary())
    text = load.page_header() + markdown
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field

QUIET_LOAD_PER_CORE = 0.25
QUIET_FOREIGN_SHARE = 0.10


def _busy_and_total_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU jiffies of the whole machine since boot, from ``/proc/stat``; None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - idle, total


def _own_cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class LoadMonitor:
    """Context manager measuring the machine's load around a benchmark (see the module docstring)."""

    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    load_before: tuple[float, float, float] = (float("nan"),) * 3
    load_after: tuple[float, float, float] = (float("nan"),) * 3
    foreign_share: float | None = None
    wall_seconds: float = 0.0

    def __enter__(self) -> LoadMonitor:
        self.load_before = os.getloadavg()
        self._jiffies = _busy_and_total_jiffies()
        self._own = _own_cpu_seconds()
        self._wall = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_seconds = time.monotonic() - self._wall
        own = _own_cpu_seconds() - self._own
        self.load_after = os.getloadavg()
        end = _busy_and_total_jiffies()
        if self._jiffies is not None and end is not None and end[1] > self._jiffies[1]:
            busy, total = end[0] - self._jiffies[0], end[1] - self._jiffies[1]
            machine_busy_seconds = busy / total * self.wall_seconds * self.cores
            self.foreign_share = max(0.0, machine_busy_seconds - own) / (self.wall_seconds * self.cores)

    @property
    def quiet(self) -> bool:
        """Other processes took under ``QUIET_FOREIGN_SHARE`` of the cores during the run.

        The foreign share is measured over the run itself, so it decides when it is known; the load
        average, which lags by a minute and counts this benchmark's own recent work, decides only
        where ``/proc/stat`` is missing.
        """
        if self.foreign_share is not None:
            return self.foreign_share < QUIET_FOREIGN_SHARE
        return self.load_before[0] < QUIET_LOAD_PER_CORE * self.cores

    def summary(self) -> str:
        foreign = "unknown" if self.foreign_share is None else f"{100 * self.foreign_share:.0f} %"
        verdict = "quiet" if self.quiet else "LOADED"
        return (f"machine load: {verdict}; load average (1, 5, 15 min) "
                f"{tuple(round(x, 2) for x in self.load_before)} before, "
                f"{tuple(round(x, 2) for x in self.load_after)} after; other processes used {foreign} of the "
                f"{self.cores} cores during the {self.wall_seconds:.0f} s run")

    def page_header(self) -> str:
        """Markdown to put at the top of a docs page: the load, and a warning when it was not quiet."""
        text = f"Measured with the {self.summary()}.\n\n"
        if not self.quiet:
            text = ("> **Warning: measured on a loaded machine.** Other processes competed for the cores, so the "
                    "times and ratios below may be distorted (a starved thread team once made a 1.9x speed-up "
                    "read as 4.7x). Rerun on a quiet machine before quoting them.\n\n") + text
        return text


def check_write(load: LoadMonitor, allow_loaded: bool) -> None:
    """Raise SystemExit unless the run was quiet or the user allowed writing a loaded run's figures."""
    if not load.quiet and not allow_loaded:
        raise SystemExit(f"not writing the docs page: {load.summary()}. Rerun on a quiet machine, or pass "
                         "--allow-loaded to write it with a warning at the top.")
