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
* **the latency is measured in the parent**, from sending the request to receiving the answer: nothing a
  program does to ``time``, ``torch.cuda`` or the worker's own objects changes it. Stage times measured inside
  the worker are sent along and are advisory;
* a worker that raises (``BaseException`` included), exits, crashes, hangs past its time limit or answers
  something that is not the answer to the request yields a :class:`WorkerFailure` with a status
  (``error`` / ``crashed`` / ``timeout`` / ``oom`` / ``nonfinite``) and a one-line reason, and is killed.

``--sandbox bwrap`` starts the forkserver, hence every worker, under bubblewrap (:func:`bwrap_command`):
defence in depth, not a security boundary.
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import connection, reduction
from pathlib import Path

import numpy as np

from accelbench import schema
from accelbench.builder.encode import quantize
from accelbench.builder.programs import PROGRAM_MODULE, describe_error, load_module, quiet_library_output

LOG_LIMIT_BYTES = 1 << 20  # a worker's captured output beyond this is dropped (the log says so)
DEFAULT_LOAD_TIMEOUT_S = 600.0
DEFAULT_CALL_TIMEOUT_S = 600.0  # until the baseline's latency is known (first calls may autotune or compile)
SANDBOXES = ("none", "bwrap")
GLOBAL_SEED = 0  # global RNGs are reset to this before load() and before every call
QUANTIZE_THREADS = 4  # at most; never more than the worker's cores
CUDA_CONTEXT_BYTES = 1 << 30  # a process's CUDA context and libraries, beyond what torch's allocator reserves
# Imported once by the forkserver, so every worker starts with them in memory.
PRELOAD = ("numpy", "PIL.Image", "torch", "diffusers", "transformers", "DeepCache", "tomesd", "tgate",
           "accelbench.builder.worker", "accelbench.builder.timing", "accelbench.builder.seeding")


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


# ---------------------------------------------------------------------------------------------------------
# The forkserver (one per harness process)
# ---------------------------------------------------------------------------------------------------------

_started_sandbox: str | None = None


def forkserver_context(sandbox: str = "none"):
    """The forkserver context, started (once per process) with the heavy imports preloaded, under ``sandbox``."""
    global _started_sandbox
    if sandbox not in SANDBOXES:
        raise ValueError(f"unknown sandbox {sandbox!r}; known: {', '.join(SANDBOXES)}")
    context = multiprocessing.get_context("forkserver")
    if _started_sandbox is None:
        # Libraries ask torch.cuda.is_available() at import; through the CUDA runtime that poisons every later
        # fork ("Cannot re-initialize CUDA in forked subprocess"), through NVML it does not.
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
        context.set_forkserver_preload(list(PRELOAD))
        from multiprocessing import forkserver, spawn

        if sandbox == "bwrap":
            wrapper = _bwrap_wrapper()
            spawn.set_executable(str(wrapper))
            try:
                forkserver.ensure_running()
            finally:
                spawn.set_executable(sys.executable)  # encoder pools and later spawns run unwrapped
        else:
            forkserver.ensure_running()
        _started_sandbox = sandbox
    elif _started_sandbox != sandbox:
        raise RuntimeError(f"workers of this process already run with sandbox {_started_sandbox!r}, not {sandbox!r}")
    return context


_hidden_paths: list[Path] = []


def hide_from_workers(*paths: Path) -> None:
    """Folders a sandboxed worker must not see (the dataset folder); call before the first worker starts."""
    _hidden_paths.extend(Path(path).resolve() for path in paths)


def bwrap_command() -> list[str]:
    """bubblewrap's arguments: read-only root, private /tmp, no network, the hidden folders masked, the worker
    scratch root writable, devices (GPUs) bound. Not a security boundary: a kernel or driver bug, or a GPU
    shared with other work, is still reachable; untrusted submissions belong in a container."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise RuntimeError("--sandbox bwrap: bubblewrap is not installed (apt-get install bubblewrap)")
    scratch = _scratch_root()
    command = [bwrap, "--ro-bind", "/", "/", "--dev-bind", "/dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
               "--unshare-net", "--unshare-ipc", "--die-with-parent"]
    for code in sorted({Path(entry).resolve() for entry in (sys.prefix, *sys.path) if entry}):
        if code.is_relative_to("/tmp") and code.exists():  # a checkout or venv under /tmp stays importable
            command += ["--ro-bind", str(code), str(code)]
    for path in _hidden_paths:
        command += ["--tmpfs", str(path)]
    command += ["--bind", str(scratch), str(scratch)]
    return command


def _bwrap_wrapper() -> Path:
    import shlex

    wrapper = _scratch_root() / "python-in-bwrap"
    wrapper.write_text("#!/bin/sh\nexec " + " ".join(map(shlex.quote, bwrap_command())) +
                       f" -- {shlex.quote(sys.executable)} \"$@\"\n")
    wrapper.chmod(0o700)
    return wrapper


_scratch: Path | None = None


def _scratch_root() -> Path:
    """One folder per harness process holding the workers' temporary folders (outside /tmp: a sandbox hides
    /tmp). Removed at exit."""
    global _scratch
    if _scratch is None:
        base = Path(os.environ.get("ACCELBENCH_SCRATCH") or Path.home() / ".cache" / "accelbench" / "scratch")
        base.mkdir(parents=True, exist_ok=True)
        _scratch = Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=base))
        import atexit

        atexit.register(shutil.rmtree, _scratch, True)
    return _scratch


# ---------------------------------------------------------------------------------------------------------
# The parent's handle on one worker
# ---------------------------------------------------------------------------------------------------------


class ProgramWorker:
    """One program in one worker process. ``start()`` loads it; ``generate()`` runs one timed batch."""

    def __init__(self, source: str, *, model_path: str, device: str, dtype: str, log_path: Path | None = None,
                 name: str = "program", load_timeout: float = DEFAULT_LOAD_TIMEOUT_S, max_images: int = 8,
                 max_resolution: int = 1024, sandbox: str = "none", threads: int | None = None,
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
        self.folder = Path(tempfile.mkdtemp(prefix="worker-", dir=_scratch_root()))
        self._fd = os.memfd_create(f"accelbench-{self.name}"[:200], os.MFD_CLOEXEC)
        os.ftruncate(self._fd, self.buffer_bytes)
        self._buffer = mmap.mmap(self._fd, self.buffer_bytes)
        parent_conn, child_conn = context.Pipe(duplex=True)
        log_read, log_write = context.Pipe(duplex=False)
        settings = {"folder": str(self.folder), "threads": self.threads, "cores": self.cores,
                    "buffer_bytes": self.buffer_bytes}
        self._process = context.Process(target=_worker_main, args=(child_conn, log_write, settings),
                                        name=f"accelbench-worker-{self.name}", daemon=True)
        try:
            self._process.start()
        except Exception as error:  # noqa: BLE001 - the forkserver (or its sandbox) could not start a worker
            self._process = None
            for end in (child_conn, parent_conn, log_read, log_write):
                end.close()
            self.close()
            raise WorkerFailure(schema.STATUS_CRASHED, f"the worker could not start: {describe_error(error)}") from error
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
        started = time.perf_counter()
        try:
            self._conn.send((kind, nonce, payload))
            ready = connection.wait([self._conn, self._process.sentinel], timeout)
            answer = self._conn.recv() if self._conn in ready else None
        except (OSError, EOFError):
            answer = None
            ready = [self._process.sentinel]
        latency = time.perf_counter() - started
        if answer is None:
            failure = (self._death() if ready else
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


# ---------------------------------------------------------------------------------------------------------
# The worker process
# ---------------------------------------------------------------------------------------------------------


def _worker_main(conn, log_write, settings: dict) -> None:
    """Entry point in the forked worker: isolate, then serve load / generate requests until told to stop."""
    os.setsid()  # its own session and process group: the parent kills the group
    if settings["cores"]:
        os.sched_setaffinity(0, settings["cores"])
    os.dup2(log_write.fileno(), 1)
    os.dup2(log_write.fileno(), 2)
    log_write.close()
    os.chdir(settings["folder"])
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TMPDIR=settings["folder"])
    tempfile.tempdir = settings["folder"]
    # tqdm (diffusers' progress bars) would otherwise create a multiprocessing lock, registered with the
    # parent's resource tracker, which a killed worker never releases.
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    fd = reduction.recv_handle(conn)
    buffer = mmap.mmap(fd, settings["buffer_bytes"])
    server = _Server(conn, buffer, settings.get("threads"))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            os._exit(0)
        kind, nonce, payload = message
        try:
            answer = getattr(server, kind)(**payload)
            answer.setdefault("status", schema.STATUS_OK)
        except BaseException as error:  # noqa: BLE001 - SystemExit and KeyboardInterrupt from a program are errors too
            answer = {"status": _status_of(error), "reason": describe_error(error)}
        answer["nonce"] = nonce
        sys.stdout.flush()
        sys.stderr.flush()
        conn.send(answer)


def set_thread_count(threads: int) -> None:
    """Give torch ``threads`` CPU threads, leaving it alone when it already has that many: even with the count it
    has, ``torch.set_num_threads`` slowed the five workers of an SD1.5 setting on a 2-core CPU to 0.967 x a bare
    loop's throughput (1.003 without the call). It also turns MKL's dynamic threading off, the likely reason."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class _Server:
    """The worker's side of the protocol. Runs in the same process as the program, so it defends nothing: the
    parent's clock, nonce and checks are what cannot be faked."""

    def __init__(self, conn, buffer, threads):
        self.conn, self.buffer = conn, buffer
        self.module = self.pipe = self.timer = self.tracer = None
        self.quantize_threads = min(QUANTIZE_THREADS, len(os.sched_getaffinity(0)))  # after the worker was pinned
        self.pool = ThreadPoolExecutor(self.quantize_threads, thread_name_prefix="accelbench-quantize")
        if threads:
            set_thread_count(threads)

    def _quantize(self, images: np.ndarray, out: np.ndarray) -> int:
        """Quantise into ``out`` on a few threads (numpy releases the GIL) and return the number of NaN/inf
        values: this runs inside the timed window."""
        threads = self.quantize_threads
        return sum(self.pool.map(lambda index: quantize(images, out, (index, threads)), range(threads)))

    def load(self, source: str, model_path: str, device: str, dtype: str) -> dict:
        import torch

        from accelbench.builder.seeding import seed_global
        from accelbench.builder.timing import StageTimer

        quiet_library_output()
        self.device = device
        self.module = load_module(source, PROGRAM_MODULE)
        seed_global(GLOBAL_SEED)
        self.pipe = self.module.load(model_path, device, getattr(torch, dtype))
        self.timer = StageTimer(self.pipe, device)
        return {}

    def generate(self, prompts, seeds, height, width, trace, memory) -> dict:
        from accelbench.builder.seeding import make_generators, seed_global

        seed_global(GLOBAL_SEED)
        generators = make_generators(seeds)
        self.timer.begin()
        if trace:
            if self.tracer is None:
                from accelbench.builder.trace import Tracer

                self.tracer = Tracer(self.pipe)
            with self.tracer.recording() as recording:
                images = self.module.generate(self.pipe, prompts, generators, height=height, width=width)
        else:
            images = self.module.generate(self.pipe, prompts, generators, height=height, width=width)
        timing = self.timer.end()  # synchronises the device
        expected = (len(prompts), height, width, 3)
        shape, kind = getattr(images, "shape", None), getattr(getattr(images, "dtype", None), "kind", None)
        if not isinstance(images, np.ndarray) or tuple(shape or ()) != expected or kind != "f":
            return {"status": schema.STATUS_ERROR, "reason": f"generate() returned {type(images).__name__} "
                                                             f"{tuple(shape) if shape is not None else ''}, "
                                                             f"expected a float array {expected}"}
        out = np.frombuffer(self.buffer, dtype=np.uint8, count=images.size).reshape(expected)
        nonfinite = self._quantize(images, out)
        if nonfinite:
            return {"status": schema.STATUS_NONFINITE, "reason": f"{nonfinite} NaN/inf pixel values"}
        free = footprint = None
        if memory and self.device.startswith("cuda"):
            import torch

            free = torch.cuda.mem_get_info(torch.device(self.device))[0]
            footprint = torch.cuda.max_memory_reserved() + CUDA_CONTEXT_BYTES
        return {"shape": list(expected), "stages": timing.stages, "peak_memory_bytes": timing.peak_memory_bytes,
                "trace": recording.to_dict() if trace else None, "free_memory_bytes": free,
                "footprint_bytes": footprint}


def _status_of(error: BaseException) -> str:
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", ()) if torch is not None else ()
    return schema.STATUS_OOM if oom and isinstance(error, oom) else schema.STATUS_ERROR
