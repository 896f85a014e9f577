"""Confinement, from the attacker's side: what a program running in a worker can see, change and do to others.

Each test runs a program in a :class:`ProgramWorker` as ``generate`` would and reads what it found from its log
(stdout goes there). Skipped where the kernel refuses namespaces (the worker then runs unconfined and says so)."""

import os
import re
import socket
import textwrap
import time
import uuid

import pytest

from accelbench import schema
from accelbench.builder.isolation import _hidden_paths
from accelbench.builder.worker import ProgramWorker, WorkerFailure

PROGRAM = """
import os, sys, time, threading
import numpy as np


def load(model_id, device, dtype):
    pipe = {{}}
{load}
    return pipe


def generate(pipe, prompts, generators, height, width):
{generate}
    return np.zeros((len(prompts), height, width, 3), np.float32)
"""


def program(generate="    pass", load="    pass"):
    return PROGRAM.format(load=textwrap.indent(textwrap.dedent(load), "    "),
                          generate=textwrap.indent(textwrap.dedent(generate), "    "))


def worker(source, log_path, **options):
    return ProgramWorker(source, model_path="none", device="cpu", dtype="float32", max_images=1, max_resolution=8,
                         log_path=log_path, **options)


@pytest.fixture
def hidden(tmp_path):
    """A folder the harness hides from workers, as generate hides the dataset."""
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "accelbench.json").write_text("{}")
    _hidden_paths.append(folder.resolve())
    yield folder
    _hidden_paths.remove(folder.resolve())


def confined_or_skip(candidate: ProgramWorker) -> None:
    if not candidate.confinement.confined:
        pytest.skip(f"workers run unconfined here: {candidate.confinement.reason}")


def test_a_program_sees_only_itself_no_network_no_hidden_folder_and_changes_no_file(tmp_path, hidden):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    target = tmp_path / "written-by-the-program"
    cache = tmp_path / "cache" / "model.bin"
    cache.parent.mkdir()
    cache.write_bytes(b"weights")
    snoop = f"""
        import socket
        print("pids:", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
        print("hidden:", os.listdir({str(hidden)!r}))
        print("interfaces:", sorted(name for _, name in socket.if_nameindex()))
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=2)
            print("connected: True")
        except OSError as error:
            print("connected: False", type(error).__name__)
        for path in ({str(target)!r}, {str(cache)!r}):
            try:
                with open(path, "wb") as handle:
                    handle.write(b"poisoned")
                print("wrote:", path)
            except OSError as error:
                print("refused:", path, error.strerror)
        with open("/proc/self/status") as handle:
            print([line.split()[1] for line in handle if line.startswith("CapEff")][0] == "0" * 16 and "no caps")
        sys.stdout.flush()
    """
    log = tmp_path / "snoop.log"
    with worker(program(generate=snoop), log) as candidate:
        confined_or_skip(candidate)
        candidate.generate(["p"], [0], 8, 8)
    text = log.read_text()
    listener.close()
    assert "pids: [1]" in text  # PID 1 of its own namespace, nothing else: not the harness, not a sibling
    assert "hidden: []" in text and "interfaces: ['lo']" in text and "connected: False" in text
    assert f"refused: {target} Read-only file system" in text and f"refused: {cache} Read-only file system" in text
    assert not target.exists() and cache.read_bytes() == b"weights"
    assert "no caps" in text


def test_a_program_that_leaves_a_process_behind_is_rejected_and_the_process_dies(tmp_path):
    marker = f"accelbench-daemon-{uuid.uuid4().hex[:8]}"
    daemon = f"""
        if os.fork() == 0:  # a double fork: the daemon is nobody's child but PID 1's
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", "# {marker}\\nimport time; time.sleep(3600)"])
            os._exit(0)
        os.wait()
    """
    candidate = worker(program(load=daemon), tmp_path / "daemon.log")
    try:
        with pytest.raises(WorkerFailure) as failure:
            candidate.start()
    finally:
        candidate.close()
    assert failure.value.status == schema.STATUS_REJECTED
    # The reason names the process (its command line, or its name where the scan caught it between fork and exec).
    assert re.search(r"still running after its load call \(\d+: \S", failure.value.reason), failure.value.reason
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(marker in _cmdline(pid) for pid in _pids()):
        time.sleep(0.05)
    assert not any(marker in _cmdline(pid) for pid in _pids())


def test_a_program_s_threads_do_not_run_while_it_is_not_called(tmp_path):
    """A thread that would burn the CPU under a sibling's timed batch is stopped with its worker between calls:
    the longest gap between its iterations spans the harness's pause."""
    burner = """
        pipe["ticks"] = ticks = []
        def burn():
            while True:
                ticks.append(time.monotonic())
                sum(range(1000))
        threading.Thread(target=burn, daemon=True).start()
    """
    # The sleep lets the burner run once more after the worker is resumed for this call (else the main thread may
    # take its snapshot before the burner gets the GIL back, and the pause never shows in the ticks).
    report = """
        time.sleep(0.05)
        ticks = pipe["ticks"][:]
        print("longest gap:", max(b - a for a, b in zip(ticks, ticks[1:])), flush=True)
    """
    pause = 1.0
    log = tmp_path / "burner.log"
    with worker(program(load=burner, generate=report), log) as candidate:
        confined_or_skip(candidate)
        candidate.generate(["p"], [0], 8, 8)
        time.sleep(pause)  # another unit's batch would be timed now
        candidate.generate(["p"], [1], 8, 8)
    gaps = [float(line.split()[-1]) for line in log.read_text().splitlines() if line.startswith("longest gap:")]
    assert len(gaps) == 2 and gaps[1] >= 0.9 * pause


def test_a_program_cannot_signal_the_harness_or_a_sibling(tmp_path):
    killer = """
        for pid in range(2, 4096):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.kill(-1, signal.SIGSTOP)
        except OSError:
            pass
    """
    source = program(generate="import signal\n" + textwrap.dedent(killer))
    with worker(program(), tmp_path / "sibling.log") as sibling, \
            worker(source, tmp_path / "killer.log") as candidate:
        confined_or_skip(candidate)
        candidate.generate(["p"], [0], 8, 8)
        assert sibling.generate(["p"], [0], 8, 8).pixels.shape == (1, 8, 8, 3)  # the sibling still answers
    assert os.getpid() in _pids()


def _pids():
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().decode(errors="replace")
    except OSError:
        return ""



def test_a_program_cannot_resize_the_buffer_the_harness_reads(tmp_path):
    """The images travel in a memfd the harness maps: shrunk, the harness's read of it would fault (SIGBUS) and
    stop the run. Its seals refuse every resize the program tries, and the harness reads the batch as usual."""
    resizer = """
        for name in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{name}")
            except OSError:
                continue
            if target.startswith("/memfd:"):
                for size in (0, 1 << 30):
                    try:
                        os.ftruncate(int(name), size)
                        print("resized", target, size, flush=True)
                    except OSError as error:
                        print("refused", target, size, error.errno, flush=True)
    """
    log = tmp_path / "resizer.log"
    with worker(program(generate=resizer), log) as candidate:
        first = candidate.generate(["p"], [0], 8, 8)
        second = candidate.generate(["p"], [1], 8, 8)
    lines = log.read_text().splitlines()
    assert not [line for line in lines if line.startswith("resized")]
    assert len([line for line in lines if line.startswith("refused")]) >= 4  # two sizes, two calls
    assert first.pixels.shape == second.pixels.shape == (1, 8, 8, 3) and not first.pixels.any()


def test_a_lying_array_subclass_cannot_hide_nan_pixels(tmp_path):
    """A subclass whose ufuncs and array functions answer "all finite" is read as the plain array it is: its NaN
    pixels are counted, and the call is ``nonfinite``. (Code in the worker's process could patch the counter
    itself; what stands against that is the parent's comparison of every timed image with the GT's.)"""
    liar = """
        class Finite(np.ndarray):
            def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
                return np.ones(self.shape, bool) if ufunc is np.isfinite else np.zeros(self.shape, self.dtype)

            def __array_function__(self, func, types, args, kwargs):
                return np.ones(self.shape, bool)
        return np.full((len(prompts), height, width, 3), np.nan, np.float32).view(Finite)
    """
    with worker(program(generate=liar), tmp_path / "liar.log") as candidate:
        with pytest.raises(WorkerFailure) as failure:
            candidate.generate(["p"], [0], 8, 8)
    assert failure.value.status == schema.STATUS_NONFINITE
    assert failure.value.reason == f"{8 * 8 * 3} NaN/inf pixel values"
