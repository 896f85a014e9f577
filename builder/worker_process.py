"""The worker process: the child side of :class:`accelbench.builder.worker.ProgramWorker`. It loads the program,
then serves ``load`` / ``generate`` requests until told to stop. It runs in the same process as the program, so it
defends nothing: the parent's clock, inputs and checks are what cannot be faked."""

from __future__ import annotations

import json
import mmap
import os
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import reduction

import numpy as np

from accelbench import schema
from accelbench.builder.confinement import confine
from accelbench.builder.encode import plain_array, quantize
from accelbench.builder.programs import (
    PROGRAM_MODULE,
    describe_error,
    load_module,
    program_traceback,
    quiet_library_output,
)

GLOBAL_SEED = 0  # global RNGs are reset to this before load() and before every call
QUANTIZE_THREADS = 4  # at most; never more than the worker's cores
CUDA_CONTEXT_BYTES = 1 << 30  # a process's CUDA context and libraries, beyond what torch's allocator reserves


KEPT_ENVIRONMENT = ("PATH", "HOME", "USER", "LANG", "LC_", "TZ", "PYTHON", "LD_LIBRARY_PATH", "CUDA_", "NVIDIA_",
                    "CUBLAS", "CUDNN", "NCCL", "TORCH", "OMP_", "MKL_", "OPENBLAS", "KMP_", "XDG_CACHE_HOME", "HF_HOME",
                    "PYTORCH_", "TRITON_")  # names (or prefixes) a program's environment keeps: no tokens, no secrets
MAX_REQUEST_BYTES = 1 << 24


def worker_main(conn, settings: dict) -> None:
    """Entry point in the forked worker: take the harness's buffer and log, confine itself, then serve load /
    generate requests until told to stop. Requests and answers are JSON (nothing here unpickles, nor does the
    harness)."""
    os.setsid()  # the watcher's own session: the harness kills it as a group
    buffer_fd, log_fd, lifeline = (reduction.recv_handle(conn) for _ in range(3))
    os.dup2(log_fd, 1)  # the kernel writes the program's output to its log file: nothing drains a pipe
    os.dup2(log_fd, 2)
    os.close(log_fd)
    confine(settings["hidden"], settings["scratch"], lifeline, lambda message: _send(conn, message))
    folder = settings["folder"]  # confined: made anew in the private tmpfs now over the scratch root
    os.makedirs(folder, exist_ok=True)
    if settings["cores"]:
        os.sched_setaffinity(0, settings["cores"])
    os.chdir(folder)
    _scrub_environment(folder)
    # tqdm (diffusers' progress bars) would otherwise create a multiprocessing lock, registered with the
    # parent's resource tracker, which a killed worker never releases.
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    buffer = mmap.mmap(buffer_fd, settings["buffer_bytes"])
    server = _Server(buffer, settings.get("threads"))
    while True:
        try:
            kind, nonce, payload = json.loads(conn.recv_bytes(MAX_REQUEST_BYTES))
        except (EOFError, OSError, ValueError):
            os._exit(0)
        try:
            answer = getattr(server, kind)(**payload)
            answer.setdefault("status", schema.STATUS_OK)
        except BaseException as error:  # noqa: BLE001 - SystemExit and KeyboardInterrupt from a program are errors too
            answer = {"status": _status_of(error), "reason": describe_error(error),
                      "traceback": program_traceback(error)}
            print(answer["traceback"], file=sys.stderr)
        answer["nonce"] = nonce
        sys.stdout.flush()
        sys.stderr.flush()
        _send(conn, answer)


def _send(conn, message: dict) -> None:
    conn.send_bytes(json.dumps(message, allow_nan=False, default=str).encode())


def _scrub_environment(folder: str) -> None:
    """The program's environment: the harness's, less anything not needed to run (tokens, the operator's own
    variables), offline, temporary files and compile caches in its own folder, inductor compiling in this process
    (a pool of compile workers would be processes left running)."""
    kept = {name: value for name, value in os.environ.items() if name.startswith(KEPT_ENVIRONMENT)}
    os.environ.clear()
    os.environ.update(kept, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TMPDIR=folder,
                      TORCHINDUCTOR_COMPILE_THREADS="1", TORCHINDUCTOR_CACHE_DIR=os.path.join(folder, "inductor"),
                      TRITON_CACHE_DIR=os.path.join(folder, "triton"))  # the rest of the file system is read-only
    tempfile.tempdir = folder


def set_thread_count(threads: int) -> None:
    """Give torch ``threads`` CPU threads, leaving it alone when it already has that many: even with the count it
    has, ``torch.set_num_threads`` slowed the five workers of an SD1.5 setting on a 2-core CPU to 0.967 x a bare
    loop's throughput (1.003 without the call). It also turns MKL's dynamic threading off, the likely reason."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class _Server:
    """The worker's side of the protocol. Runs in the same process as the program, so it defends nothing: the
    parent's clock, inputs and checks are what cannot be faked."""

    def __init__(self, buffer, threads):
        self.buffer = buffer
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
        from accelbench.builder.stage_times import StageTimer

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
        if not isinstance(images, np.ndarray):
            return {"status": schema.STATUS_ERROR, "reason": f"generate() returned {type(images).__name__}, "
                                                             f"expected a float array {expected}"}
        images = plain_array(images)  # a subclass, odd strides or byte order lose their tricks here
        if images.shape != expected or images.dtype.kind != "f":
            return {"status": schema.STATUS_ERROR, "reason": f"generate() returned {images.dtype} {images.shape}, "
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
