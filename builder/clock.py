"""The clock that counts: a batch's latency is what the harness measures, in its own process, from sending the
request to a worker to receiving the worker's answer. Nothing a program does to ``time``, ``torch.cuda`` or
its own process changes it; the stage times a worker reports alongside are advisory
(:mod:`accelbench.builder.stage_times`)."""

from __future__ import annotations

import time
from multiprocessing import connection

ANSWERED, TIMED_OUT, GONE = "answered", "timed out", "gone"


def timed_request(conn, sentinel, message: bytes, timeout: float, max_bytes: int) -> tuple[str, bytes | None, float]:
    """Send ``message`` on ``conn`` and wait at most ``timeout`` seconds for the answer (at most ``max_bytes``).

    Returns (:data:`ANSWERED`, :data:`TIMED_OUT` or :data:`GONE` (the worker's ``sentinel`` became ready, the pipe
    broke or the answer was too long); the answer's bytes, None unless answered; the seconds from sending to
    receiving on this process's ``perf_counter``). Bytes only: the caller decodes them, never unpickles them."""
    started = time.perf_counter()
    try:
        conn.send_bytes(message)
        ready = connection.wait([conn, sentinel], timeout)
        if conn in ready:
            answer = conn.recv_bytes(max_bytes)
            return ANSWERED, answer, time.perf_counter() - started
        outcome = GONE if ready else TIMED_OUT
    except (OSError, EOFError):
        outcome = GONE
    return outcome, None, time.perf_counter() - started
