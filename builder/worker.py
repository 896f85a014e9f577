"""Run one pipeline program in a process of its own: the harness keeps the clock, the inputs and the verdict.

A program is untrusted code. Everything it does happens in its worker process:

* the worker is forked from a *forkserver* that imported torch, diffusers and the method libraries once, so a
  worker starts in a fraction of a second instead of paying ~12 s of imports;
* it runs confined (:mod:`accelbench.builder.confinement`): namespaces of its own, no capabilities, the
  harness's files hidden, and stopped whenever it is not being called; it works in a private temporary folder
  with ``HF_HUB_OFFLINE=1``, and the kernel writes its stdout/stderr straight into its log file, which the
  harness caps between calls (:data:`LOG_LIMIT_BYTES`);
* the parent sends one request per batch (prompts, image seeds, height, width, a fresh nonce), as JSON; the
  worker builds the generators, calls ``generate()``, synchronises the device, copies the images into a plain
  array, checks and quantises them to the uint8 pixels the dataset stores, writes them into a shared-memory
  buffer (a sealed ``memfd`` the parent created: it cannot be shrunk or grown) and answers, as JSON;
* **the latency is measured in the parent** (:mod:`accelbench.builder.clock`), from sending the request to
  receiving the answer: nothing a program does to ``time``, ``torch.cuda`` or the worker's own objects changes
  it. Stage times measured inside the worker are sent along and are advisory;
* a worker that raises (``BaseException`` included), exits, crashes, hangs past its time limit, answers
  something that is not the answer to the request, leaves a process running after a call or leaves device work
  running after it (:mod:`accelbench.builder.device_quiet`) yields a
  :class:`WorkerFailure` with a status (``error`` / ``crashed`` / ``timeout`` / ``oom`` / ``nonfinite`` /
  ``rejected``), a one-line reason and the program's traceback where there is one, and is killed.

The worker's side is :mod:`accelbench.builder.worker_process`; the forkserver, scratch folders and
``--sandbox bwrap`` are :mod:`accelbench.builder.isolation`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mmap
import os
import secrets
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing import reduction
from pathlib import Path

import numpy as np

from accelbench import schema
from accelbench.builder.clock import ANSWERED, GONE, timed_request
from accelbench.builder.confinement import Confinement
from accelbench.builder.device_quiet import DeviceQuiet
from accelbench.builder.isolation import SANDBOXES, forkserver_context, hidden_paths, scratch_root
from accelbench.builder.programs import describe_error
from accelbench.builder.stage_times import STAGE_NAMES
from accelbench.builder.worker_process import worker_main

LOG_LIMIT_BYTES = 1 << 20  # a worker's output beyond this is cut from its log between calls (the log says so)
DEFAULT_LOAD_TIMEOUT_S = 600.0
DEFAULT_CALL_TIMEOUT_S = 600.0  # until the baseline's latency is known
DEFAULT_WARMUP_TIMEOUT_S = 900.0  # a warm-up call's own budget: first calls may compile and autotune
START_TIMEOUT_S = 60.0  # a worker announces itself within this, or it could not start
MAX_ANSWER_BYTES = 1 << 28  # an answer longer than this (a trace is the longest part) is not an answer
ANSWER_STATUSES = (schema.STATUS_ERROR, schema.STATUS_OOM, schema.STATUS_NONFINITE)  # what a worker may report


class WorkerFailure(Exception):
    """A program's worker failed: ``status`` is one of the dataset's statuses, ``reason`` one line, ``traceback``
    the program's (its last frames) where there is one."""

    def __init__(self, status: str, reason: str, traceback: str = ""):
        super().__init__(f"{status}: {reason}")
        self.status, self.reason, self.traceback = status, reason, traceback


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
    """One program in one worker process. ``start()`` loads it; ``generate()`` runs one timed batch. Between
    calls the worker is frozen."""

    def __init__(self, source: str, *, model_path: str, device: str, dtype: str, log_path: Path | None = None,
                 load_timeout: float = DEFAULT_LOAD_TIMEOUT_S, max_images: int = 8, max_resolution: int = 1024,
                 sandbox: str = SANDBOXES[0], threads: int | None = None, cores: list[int] | None = None,
                 device_quiet: DeviceQuiet | None = None):
        self.source, self.model_path, self.device, self.dtype = source, str(model_path), device, dtype
        self.device_quiet = device_quiet  # checks after each call that no device work of it runs on
        self.log_path, self.load_timeout = log_path, load_timeout
        self.sandbox, self.threads, self.cores = sandbox, threads, cores
        self.buffer_bytes = max_images * max_resolution * max_resolution * 3
        self._process = self._conn = self._buffer = None
        self._fd = self._log_fd = self._lifeline = None
        self._log_capped = False  # the log was cut once: it ends with the marker
        self.confinement: Confinement | None = None
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
        # A neutral name, and sealed at its size: the worker can neither tell whose buffer it is nor shrink it
        # under the harness's mapping (which would fault the harness).
        self._fd = os.memfd_create("buffer", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(self._fd, self.buffer_bytes)
        fcntl.fcntl(self._fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        self._buffer = mmap.mmap(self._fd, self.buffer_bytes)
        if self.log_path is not None:
            Path(self.log_path).parent.mkdir(parents=True, exist_ok=True)
        self._log_fd = os.open(self.log_path or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                               0o644)
        parent_conn, child_conn = context.Pipe(duplex=True)
        settings = {"scratch": str(scratch_root()), "folder": str(self.folder), "threads": self.threads,
                    "cores": self.cores, "buffer_bytes": self.buffer_bytes, "hidden": [str(p) for p in hidden_paths()]}
        self._process = context.Process(target=worker_main, args=(child_conn, settings), name="worker", daemon=True)
        try:
            self._process.start()
        except Exception as error:  # noqa: BLE001 - the forkserver (or its sandbox) could not start a worker
            self._process = None
            for end in (child_conn, parent_conn):
                end.close()
            self.close()
            reason = f"the worker could not start: {describe_error(error)}"
            raise WorkerFailure(schema.STATUS_CRASHED, reason) from error
        child_conn.close()
        self._conn = parent_conn
        # The lifeline: the worker's watcher sees its read end reach EOF when this process is gone (killed too).
        lifeline_read, self._lifeline = os.pipe()
        for handle in (self._fd, self._log_fd, lifeline_read):
            reduction.send_handle(self._conn, handle, self._process.pid)
        os.close(lifeline_read)
        hello = self._receive(START_TIMEOUT_S, "start")
        if not isinstance(hello.get("pid"), int):
            self.close()
            raise WorkerFailure(schema.STATUS_CRASHED, "the worker did not announce itself")
        self.confinement = Confinement(hello["pid"], bool(hello.get("confined")), str(hello.get("reason") or ""))
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
        if answer.get("shape") != list(expected):
            self.close()
            raise WorkerFailure(schema.STATUS_ERROR, f"the worker answered images of shape {answer.get('shape')}, "
                                                     f"expected {expected}")
        copy_started = time.perf_counter()
        pixels = np.frombuffer(self._buffer, dtype=np.uint8, count=int(np.prod(expected))).reshape(expected).copy()
        return Reply(pixels, latency, _numbers(answer.get("stages")), _integer(answer.get("peak_memory_bytes")),
                     answer.get("trace") if trace else None, _integer(answer.get("free_memory_bytes")),
                     _integer(answer.get("footprint_bytes")), time.perf_counter() - copy_started)

    def close(self) -> None:
        """Kill the worker and everything it started, and free its buffer, log and folder. Idempotent."""
        process, self._process = self._process, None
        if self.confinement is not None:
            self.confinement.kill()
        if process is not None:
            _kill_group(process.pid)
            process.join(timeout=10)
        for handle in (self._conn, self._buffer):
            if handle is not None:
                with contextlib.suppress(Exception):
                    handle.close()
        self._conn = self._buffer = None
        self._cap_log()
        for fd in (self._fd, self._log_fd, self._lifeline):
            if fd is not None:
                os.close(fd)
        self._fd = self._log_fd = self._lifeline = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    # -- one request --------------------------------------------------------------------------------------

    def _receive(self, timeout: float, kind: str) -> dict:
        """The worker's next message, outside any timed window (its announcement)."""
        if not self._conn.poll(timeout):
            self.close()
            raise WorkerFailure(schema.STATUS_TIMEOUT, f"{kind} did not answer within {timeout:g} s")
        try:
            return _decode(self._conn.recv_bytes(MAX_ANSWER_BYTES))
        except (EOFError, OSError, ValueError):
            failure = self._death()
            self.close()
            raise failure from None

    def _request(self, kind: str, payload: dict, timeout: float) -> tuple[dict, float]:
        """Thaw the worker, send a request and wait for its answer, freeze the worker again; return (answer,
        seconds on the harness's clock). The worker is killed on failure."""
        if self._process is None:
            raise WorkerFailure(schema.STATUS_CRASHED, "the worker is not running")
        nonce = secrets.token_hex(16)
        self.confinement.thaw()
        message = json.dumps([kind, nonce, payload]).encode()
        outcome, raw, latency = timed_request(self._conn, self._process.sentinel, message, timeout,
                                              MAX_ANSWER_BYTES)
        if outcome != ANSWERED:
            failure = (self._death() if outcome == GONE else
                       WorkerFailure(schema.STATUS_TIMEOUT, f"{kind} did not answer within {timeout:g} s"))
            self.close()
            raise failure
        # Frozen first, so nothing of it runs on after its answer (no output written into the buffer after the
        # clock stopped); then its strays, which a stopped process still is.
        self.confinement.freeze()
        strays = self.confinement.strays()
        self._cap_log()
        if strays:
            self.close()
            raise WorkerFailure(schema.STATUS_REJECTED, f"a process the program started was still running after "
                                                        f"its {kind} call ({strays[0]}): programs may not leave "
                                                        f"processes running")
        if self.device_quiet is not None and self.device_quiet.settle() is None:
            self.close()
            raise WorkerFailure(schema.STATUS_REJECTED, f"device work the program queued was still running "
                                                        f"{self.device_quiet.grace_s:g} s after its {kind} call "
                                                        f"answered: programs may not leave work on the device")
        try:
            answer = _decode(raw)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or answer.get("nonce") != nonce:
            self.close()
            raise WorkerFailure(schema.STATUS_ERROR, f"the worker sent something that is not the answer to its "
                                                     f"{kind} request")
        if answer.get("status") != schema.STATUS_OK:
            # The program raised, ran out of memory or returned NaN/inf: its worker stays up for the next batch
            # (a failed load() leaves nothing to run, so that worker goes).
            status = answer.get("status") if answer.get("status") in ANSWER_STATUSES else schema.STATUS_ERROR
            reason = str(answer.get("reason", ""))[:500]
            if kind == "load":
                reason = f"load failed: {reason}"
                self.close()
            raise WorkerFailure(status, reason, str(answer.get("traceback") or "")[:20_000])
        return answer, latency

    def _cap_log(self) -> None:
        """Cut the log at :data:`LOG_LIMIT_BYTES` (between calls: the kernel wrote it meanwhile, at no cost to
        anyone but the worker), saying so once."""
        if self._log_fd is None or self.log_path is None:
            return
        marker = f"\n[accelbench: output truncated at {LOG_LIMIT_BYTES} bytes]\n".encode()
        if os.fstat(self._log_fd).st_size > LOG_LIMIT_BYTES + (len(marker) if self._log_capped else 0):
            os.ftruncate(self._log_fd, LOG_LIMIT_BYTES)
            os.write(self._log_fd, marker)
            self._log_capped = True

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


def _decode(raw: bytes) -> dict:
    """A worker's message: JSON, never unpickled (a pickle from untrusted code would run code in the harness)."""
    message = json.loads(raw)
    if not isinstance(message, dict):
        raise ValueError("not a JSON object")
    return message


def _numbers(stages) -> dict[str, float | None]:
    """The advisory stage times of an answer: the known stages only (they become row columns), each a number or
    None, whatever the worker sent."""
    stages = stages if isinstance(stages, dict) else {}
    return {name: (float(value) if isinstance(value := stages.get(name), (int, float))
                   and not isinstance(value, bool) else None) for name in STAGE_NAMES}


def _integer(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _kill_group(pid: int) -> None:
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill()
