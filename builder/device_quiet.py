"""Whether the GPU is quiet: after every call of a timed worker, once the worker is frozen, the harness checks from
its own CUDA context that no device work is left running, so the next timed call starts on an idle GPU.

A frozen process cannot queue more work, but kernels it queued before it was stopped still run, and would slow the
unit timed next (a program can enqueue a second of matrix products right after the worker's synchronise, before
it answers). The probe is one tiny kernel on the harness's own stream and a synchronise: on an idle GPU it returns
in tens of microseconds; while another context has work, the GPU time-slices between contexts and the probe waits
for a slice (``bench/device_quiet.py`` on an H200: 0.023 ms median idle, 2.4 ms beside another process's
work). Now and then a probe lands in the harness's own slice and reads idle although the GPU is not (1 in 400 on
the H200), so the device counts as quiet only after :data:`QUIET_PROBES` quiet probes in a row. A worker's work
that drains within :data:`DEFAULT_GRACE_S` is waited for and the wait recorded; work still running after it
rejects the worker.

If the GPU is already busy before any worker ran (another tenant), no call could be told apart from it: the check
is off for the run, which says so once and records why (:meth:`DeviceQuiet.record`). On the CPU there is nothing to
check: a frozen worker runs nothing.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

CALIBRATION_PROBES = 21  # probes of the idle GPU at the start, whose median is the idle latency
BUSY_FACTOR = 4.0  # a probe this many times the idle median ...
BUSY_MARGIN_S = 0.0005  # ... and at least this much over it means another context has work on the GPU
IDLE_CEILING_S = 0.002  # an "idle" median above this: the GPU was not idle at the start
QUIET_PROBES = 5  # quiet probes in a row that make the device quiet (~0.1 ms on an idle GPU)
DEFAULT_GRACE_S = 0.5  # a worker's leftover device work may take this long to drain before it is rejected
POLL_S = 0.002  # between probes while waiting


def cuda_probe(device: str) -> Callable[[], float]:
    """A probe of ``device`` from the harness's own CUDA context: seconds for one one-element kernel to finish."""
    import torch

    target = torch.device(device)
    cell = torch.zeros(1, device=target)

    def probe() -> float:
        started = time.perf_counter()
        cell.add_(1)
        torch.cuda.synchronize(target)
        return time.perf_counter() - started

    return probe


class DeviceQuiet:
    """Probes the device after each call (:meth:`settle`) and keeps what it waited for the run record."""

    def __init__(self, probe: Callable[[], float], grace_s: float = DEFAULT_GRACE_S,
                 clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep):
        self.probe, self.grace_s, self.clock, self.sleep = probe, grace_s, clock, sleep
        self.idle_s = statistics.median(probe() for _ in range(CALIBRATION_PROBES))
        self.threshold_s = max(self.idle_s * BUSY_FACTOR, self.idle_s + BUSY_MARGIN_S)
        self.reason = ("" if self.idle_s <= IDLE_CEILING_S else
                       f"the GPU was busy before any worker ran (a probe took {self.idle_s * 1e3:.2f} ms, idle is "
                       f"under {IDLE_CEILING_S * 1e3:g} ms): another process shares it, so a worker's leftover "
                       f"device work cannot be told apart; timings on a shared GPU are not comparable")
        if self.reason:
            log.warning("device work is not checked between calls: %s", self.reason)
        self.checks = self.waits = 0
        self.waited_s = self.longest_wait_s = 0.0

    @classmethod
    def for_device(cls, device: str) -> DeviceQuiet | None:
        """The check for a CUDA device, ``None`` on the CPU."""
        return cls(cuda_probe(device)) if device.startswith("cuda") else None

    @property
    def active(self) -> bool:
        return not self.reason

    def quiet(self) -> bool:
        """:data:`QUIET_PROBES` quiet probes in a row (stops at the first busy one)."""
        return all(self.probe() <= self.threshold_s for _ in range(QUIET_PROBES))

    def settle(self) -> float | None:
        """Wait until the device is quiet; return the seconds waited (0.0 when it already was), or ``None`` when it
        is still busy after the grace period. Always 0.0 while the check is off."""
        if not self.active:
            return 0.0
        self.checks += 1
        if self.quiet():
            return 0.0
        started = self.clock()
        while not self.quiet():
            if self.clock() - started > self.grace_s:
                return None
            self.sleep(POLL_S)
        waited = self.clock() - started
        self.waits += 1
        self.waited_s += waited
        self.longest_wait_s = max(self.longest_wait_s, waited)
        return waited

    def record(self) -> dict:
        """What the run record says of the check."""
        return {"checked": self.active, "reason": self.reason, "idle_probe_ms": round(self.idle_s * 1e3, 4),
                "busy_threshold_ms": round(self.threshold_s * 1e3, 4), "grace_s": self.grace_s,
                "calls_checked": self.checks, "calls_waited": self.waits, "waited_s": round(self.waited_s, 4),
                "longest_wait_s": round(self.longest_wait_s, 4)}
