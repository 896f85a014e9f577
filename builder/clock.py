"""The clock that counts: a batch's latency is what the harness measures, in its own process, from sending the
request to a worker to receiving the worker's answer. Nothing a program does to ``time``, ``torch.cuda`` or
its own process changes it; the stage times a worker reports alongside are advisory
(:mod:`accelbench.builder.stage_times`)."""

from __future__ import annotations

import time
from multiprocessing import connection

ANSWERED, TIMED_OUT, GONE = "answered", "timed out", "gone"


def timed_request(conn, sentinel, message, timeout: float) -> tuple[str, object, float]:
    """Send ``message`` on ``conn`` and wait at most ``timeout`` seconds for the answer.

    Returns (:data:`ANSWERED`, :data:`TIMED_OUT` or :data:`GONE` (the worker's ``sentinel`` became ready or the
    pipe broke); the answer, None unless answered; the seconds from sending to receiving on this process's
    ``perf_counter``)."""
    started = time.perf_counter()
    try:
        conn.send(message)
        ready = connection.wait([conn, sentinel], timeout)
        if conn in ready:
            return ANSWERED, conn.recv(), time.perf_counter() - started
        outcome = GONE if ready else TIMED_OUT
    except (OSError, EOFError):
        outcome = GONE
    return outcome, None, time.perf_counter() - started
