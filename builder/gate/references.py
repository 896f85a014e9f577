"""The trusted programs' results (GT, baseline) on a gate's inputs, cached process-wide: one gate judges many
candidates at the cost of the candidates alone."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Result:
    """One call's outcome: pixels and trace, or the failure."""

    pixels: np.ndarray | None = None
    trace: dict | None = None
    failure: Any = None  # WorkerFailure
    latency_s: float | None = None


class References:
    """Results of trusted programs (GT, baseline) per (program, model, device, dtype, threads, size, inputs):
    shared across gates, computed once."""

    def __init__(self):
        self._results: dict[tuple, dict[int, Result]] = {}
        self._locks: dict[tuple, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, key) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def get(self, key) -> dict[int, Result]:
        with self._guard:
            return self._results.setdefault(key, {})


REFERENCES = References()  # process-wide: a long-lived harness (or a test session) reuses the GT's results
