"""Run one pipeline program in a process of its own: the harness keeps the clock, the inputs and the verdict.

A program is untrusted code. Everything it does happens in its worker process:

* the worker is forked from a *forkserver* that imported torch, diffusers and the method libraries once, so a
  worker starts in a fraction of a second instead of paying ~12 s of imports;
* it is the leader of its own session and process group (the parent kills the whole group), works in a fresh
  temporary folder with ``HF_HUB_OFFLINE=1``, and its stdout/stderr go through a pipe that the parent copies
  into a log file, capped (:data:`LOG_LIMIT_BYTES`);
* the parent sends one request per batch (prompts, image seeds, height, width, a fresh nonce); the worker
  builds the generators, calls ``generate()``, synchronises the device, checks and quantises the images to the
  uint8 pixels the dataset stores, writes them into a shared-memory buffer (a ``memfd`` the parent created)
  and answers with the nonce;
* **the latency is measured in the parent** (:mod:`accelbench.builder.clock`), from sending the request to
  receiving the answer: nothing a program does to ``time``, ``torch.cuda`` or the worker's own objects changes
  it. Stage times measured inside the worker are sent along and are advisory;
* a worker that raises (``BaseException`` included), exits, crashes, hangs past its time limit or answers
  something that is not the answer to the request yields a :class:`WorkerFailure` with a status
  (``error`` / ``crashed`` / ``timeout`` / ``oom`` / ``nonfinite``) and a one-line reason, and is killed.

The worker's side is :mod:`accelbench.builder.worker_process`; the forkserver, scratch folders and
``--sandbox bwrap`` are :mod:`accelbench.builder.isolation`.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from multiprocessing import reduction
from pathlib import Path

import numpy as np

from accelbench import schema
from accelbench.builder.clock import ANSWERED, GONE, timed_request
from accelbench.builder.isolation import SANDBOXES, forkserver_context, scratch_root
from accelbench.builder.programs import describe_error
from accelbench.builder.worker_process import worker_main

LOG_LIMIT_BYTES = 1 << 20  # a worker's captured output beyond this is dropped (the log says so)
DEFAULT_LOAD_TIMEOUT_S = 600.0
DEFAULT_CALL_TIMEOUT_S = 600.0  # until the baseline's latency is known (first calls may autotune or compile)


class WorkerFailure(Exception):
    """A program's worker failed: ``status`` is one of the dataset's statuses, ``reason`` one line."""

    def __init__(self, status: str, reason: str):
        super().__init__(f"{status}: {reason}")
        self.status, self.reason = status, reason


@dataclass
class Reply:
    pixels: np.ndarray  # uint8 [N, H, W, 3]: what the dataset stores
    latency_s: float  # the parent's clock: request sent -> answer received
    stages: dict[str, float | None] = field(default_factory=dict)  # advisory, measured in the worker
    peak_memory_bytes: int | None = None
    trace: dict | None = None  # the execution trace of this call, when asked for
    free_memory_bytes: int | None = None  # free device memory after the call (CUDA, when asked), for --max-resident
    footprint_bytes: int | None = None  # device memory this worker holds at its peak: reserved + context (likewise)
    transfer_s: float = 0.0  # parent side, after the clock stopped: copying the pixels out of shared memory



class ProgramWorker:
    """One program in one worker process. ``start()`` loads it; ``generate()`` runs one timed batch."""

    def __init__(self, source: str, *, model_path: str, device: str, dtype: str, log_path: Path | None = None,
                 name: str = "program", load_timeout: float = DEFAULT_LOAD_TIMEOUT_S, max_images: int = 8,
                 max_resolution: int = 1024, sandbox: str = SANDBOXES[0], threads: int | None = None,
                 cores: list[int] | None = None):
        self.source, self.model_path, self.device, self.dtype = source, str(model_path), device, dtype
        self.log_path, self.name, self.load_timeout = log_path, name, load_timeout
        self.sandbox, self.threads, self.cores = sandbox, threads, cores
        self.buffer_bytes = max_images * max_resolution * max_resolution * 3
        self._process = self._conn = self._buffer = self._log_thread = None
        self._fd: int | None = None
        self.folder: Path | None = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        context = forkserver_context(self.sandbox)
        self.folder = Path(tempfile.mkdtemp(prefix="worker-", dir=scratch_root()))
        self._fd = os.memfd_create(f"accelbench-{self.name}"[:200], os.MFD_CLOEXEC)
        os.ftruncate(self._fd, self.buffer_bytes)
        self._buffer = mmap.mmap(self._fd, self.buffer_bytes)
        parent_conn, child_conn = context.Pipe(duplex=True)
        log_read, log_write = context.Pipe(duplex=False)
        settings = {"folder": str(self.folder), "threads": self.threads, "cores": self.cores,
                    "buffer_bytes": self.buffer_bytes}
        self._process = context.Process(target=worker_main, args=(child_conn, log_write, settings),
                                        name=f"accelbench-worker-{self.name}", daemon=True)
        try:
            self._process.start()
        except Exception as error:  # noqa: BLE001 - the forkserver (or its sandbox) could not start a worker
            self._process = None
            for end in (child_conn, parent_conn, log_read, log_write):
                end.close()
            self.close()
            reason = f"the worker could not start: {describe_error(error)}"
            raise WorkerFailure(schema.STATUS_CRASHED, reason) from error
        child_conn.close()
        log_write.close()
        self._conn = parent_conn
        self._log_thread = threading.Thread(target=_copy_log, args=(log_read, self.log_path), daemon=True,
                                            name=f"log-{self.name}")
        self._log_thread.start()
        reduction.send_handle(self._conn, self._fd, self._process.pid)
        self._request("load", {"source": self.source, "model_path": self.model_path, "device": self.device,
                               "dtype": self.dtype}, self.load_timeout)

    def generate(self, prompts: list[str], seeds: list[int], height: int, width: int, *,
                 timeout: float = DEFAULT_CALL_TIMEOUT_S, trace: bool = False, memory: bool = False) -> Reply:
        """One batch. ``trace``: record its execution trace; ``memory``: report the device's free memory and
        this worker's footprint (driver queries, kept out of timed batches)."""
        count = len(prompts)
        if count * height * width * 3 > self.buffer_bytes:
            raise ValueError(f"a batch of {count} {height}x{width} images does not fit the worker's buffer")
        answer, latency = self._request("generate", {"prompts": list(prompts), "seeds": [int(s) for s in seeds],
                                                     "height": height, "width": width, "trace": trace,
                                                     "memory": memory}, timeout)
        expected = (count, height, width, 3)
        if tuple(answer.get("shape", ())) != expected:
            self.close()
            raise WorkerFailure(schema.STATUS_ERROR, f"the worker answered images of shape {answer.get('shape')}, "
                                                     f"expected {expected}")
        copy_started = time.perf_counter()
        pixels = np.frombuffer(self._buffer, dtype=np.uint8, count=int(np.prod(expected))).reshape(expected).copy()
        return Reply(pixels, latency, answer.get("stages") or {}, answer.get("peak_memory_bytes"),
                     answer.get("trace"), answer.get("free_memory_bytes"), answer.get("footprint_bytes"),
                     time.perf_counter() - copy_started)

    def close(self) -> None:
        """Kill the worker's process group and free its buffer and folder. Idempotent."""
        process, self._process = self._process, None
        if process is not None:
            _kill_group(process.pid)
            process.join(timeout=10)
        for handle in (self._conn, self._buffer):
            if handle is not None:
                with contextlib.suppress(Exception):
                    handle.close()
        self._conn = self._buffer = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._log_thread is not None:
            self._log_thread.join(timeout=5)
            self._log_thread = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    # -- one request --------------------------------------------------------------------------------------

    def _request(self, kind: str, payload: dict, timeout: float) -> tuple[dict, float]:
        """Send a request and wait for its answer; return (answer, seconds). The worker is killed on failure."""
        if self._process is None:
            raise WorkerFailure(schema.STATUS_CRASHED, "the worker is not running")
        nonce = secrets.token_hex(16)
        outcome, answer, latency = timed_request(self._conn, self._process.sentinel, (kind, nonce, payload), timeout)
        if outcome != ANSWERED:
            failure = (self._death() if outcome == GONE else
                       WorkerFailure(schema.STATUS_TIMEOUT, f"{kind} did not answer within {timeout:g} s"))
            self.close()
            raise failure
        if not isinstance(answer, dict) or answer.get("nonce") != nonce:
            self.close()
            raise WorkerFailure(schema.STATUS_ERROR, f"the worker sent something that is not the answer to its "
                                                     f"{kind} request")
        if answer.get("status") != schema.STATUS_OK:
            # The program raised, ran out of memory or returned NaN/inf: its worker stays up for the next batch
            # (a failed load() leaves nothing to run, so that worker goes).
            status = answer.get("status")
            status = status if status in (schema.STATUS_ERROR, schema.STATUS_OOM, schema.STATUS_NONFINITE) \
                else schema.STATUS_ERROR
            reason = str(answer.get("reason", ""))[:500]
            if kind == "load":
                reason = f"load failed: {reason}"
                self.close()
            raise WorkerFailure(status, reason)
        return answer, latency

    def _death(self) -> WorkerFailure:
        self._process.join(timeout=5)
        code = self._process.exitcode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return WorkerFailure(schema.STATUS_CRASHED, f"the worker was killed by {name}")
        return WorkerFailure(schema.STATUS_CRASHED, f"the worker exited with code {code} before answering")


def _kill_group(pid: int) -> None:
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill()


def _copy_log(log_read, log_path: Path | None) -> None:
    """Copy the worker's output into ``log_path`` up to the cap; keep draining so the worker never blocks."""
    handle = None
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handle = open(log_path, "ab")
    written, truncated, fd = 0, False, log_read.fileno()
    try:
        while chunk := os.read(fd, 65536):
            if handle is None or truncated:
                continue
            kept = chunk[:LOG_LIMIT_BYTES - written]
            handle.write(kept)
            written += len(kept)
            if len(kept) < len(chunk):
                truncated = True
                handle.write(f"\n[accelbench: output truncated at {LOG_LIMIT_BYTES} bytes]\n".encode())
            handle.flush()
    except OSError:
        pass
    finally:
        log_read.close()
        if handle is not None:
            handle.close()
