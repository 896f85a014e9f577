"""The device-quiet check (:mod:`accelbench.builder.device_quiet`) with a scripted probe standing in for the GPU:
what it waits for, when it gives up, when it turns itself off, and a worker rejected for leaving device work.
(The probe itself, on a real GPU: ``bench/device_quiet.py``.)"""

import itertools

import pytest

from accelbench import schema
from accelbench.builder import device_quiet
from accelbench.builder.device_quiet import DeviceQuiet
from accelbench.builder.worker import ProgramWorker, WorkerFailure

IDLE, BUSY = 20e-6, 2e-3


class Scripted:
    """Probe latencies from a script, then idle; a clock that advances only by what the check sleeps."""

    def __init__(self, *script: float):
        self.latencies = itertools.chain([IDLE] * device_quiet.CALIBRATION_PROBES, script, itertools.repeat(IDLE))
        self.now = 0.0

    def probe(self) -> float:
        return next(self.latencies)

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def check(self, **options) -> DeviceQuiet:
        return DeviceQuiet(self.probe, clock=lambda: self.now, sleep=self.sleep, **options)


def test_an_idle_device_costs_a_few_probes_and_no_wait():
    quiet = Scripted().check()
    assert quiet.active and quiet.threshold_s == pytest.approx(IDLE + device_quiet.BUSY_MARGIN_S)
    assert [quiet.settle() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert quiet.record() | {"idle_probe_ms": None} == {
        "checked": True, "reason": "", "idle_probe_ms": None, "busy_threshold_ms": 0.52,
        "grace_s": device_quiet.DEFAULT_GRACE_S, "calls_checked": 3, "calls_waited": 0, "waited_s": 0.0,
        "longest_wait_s": 0.0}


def test_work_that_drains_within_the_grace_is_waited_for_and_recorded():
    quiet = Scripted(BUSY, BUSY, BUSY).check()
    waited = quiet.settle()
    assert waited == pytest.approx(2 * device_quiet.POLL_S)  # busy, busy (sleep), busy (sleep), idle
    assert quiet.settle() == 0.0
    record = quiet.record()
    assert (record["calls_checked"], record["calls_waited"]) == (2, 1)
    assert record["longest_wait_s"] == record["waited_s"] == round(waited, 4)


def test_one_quiet_probe_amid_busy_ones_is_not_quiet():
    """A probe that lands in the harness's own time slice reads idle although the GPU is busy."""
    quiet = Scripted(BUSY, IDLE, BUSY, IDLE, IDLE, BUSY).check()
    assert quiet.settle() == pytest.approx(2 * device_quiet.POLL_S)  # quiet only from the 5 idle probes at the end


def test_work_still_running_after_the_grace_is_not_waited_out():
    quiet = Scripted(*[BUSY] * 10_000).check(grace_s=0.05)
    assert quiet.settle() is None


def test_a_device_busy_before_any_worker_ran_turns_the_check_off_and_says_why():
    busy = Scripted()
    busy.latencies = itertools.repeat(5e-3)
    quiet = busy.check()
    assert not quiet.active and quiet.settle() == 0.0
    assert quiet.reason.startswith("the GPU was busy before any worker ran (a probe took 5.00 ms")
    assert quiet.record()["checked"] is False


def test_no_check_on_the_cpu():
    assert DeviceQuiet.for_device("cpu") is None


PROGRAM = """
import numpy as np


def load(model_id, device, dtype):
    return {}


def generate(pipe, prompts, generators, height, width):
    return np.zeros((len(prompts), height, width, 3), np.float32)
"""


def test_a_worker_whose_device_work_outlasts_the_grace_is_rejected_after_the_call(tmp_path):
    """Scripted so that the load call's check finds the device idle and the first batch's finds it busy for good."""
    scripted = Scripted(*[IDLE] * device_quiet.QUIET_PROBES, *[BUSY] * 10_000)
    worker = ProgramWorker(PROGRAM, model_path="none", device="cpu", dtype="float32", max_images=1,
                           max_resolution=8, log_path=tmp_path / "w.log", device_quiet=scripted.check(grace_s=0.05))
    try:
        worker.start()
        with pytest.raises(WorkerFailure) as failure:
            worker.generate(["a"], [1], 8, 8)
    finally:
        worker.close()
    assert failure.value.status == schema.STATUS_REJECTED
    assert failure.value.reason == ("device work the program queued was still running 0.05 s after its generate "
                                    "call answered: programs may not leave work on the device")
    assert not worker.alive
