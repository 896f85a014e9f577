"""What a worker process can reach: the forkserver every worker is forked from (heavy imports done once), the
scratch folder each works in, and ``--sandbox bwrap`` (bubblewrap around the forkserver, hence every worker):
defence in depth, not a security boundary."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import tempfile
from pathlib import Path

SANDBOX_NONE, SANDBOX_BWRAP = SANDBOXES = ("none", "bwrap")
# Imported once by the forkserver, so every worker starts with them in memory.
PRELOAD = ("numpy", "PIL.Image", "torch", "diffusers", "transformers", "DeepCache", "tomesd", "tgate",
           "accelbench.builder.worker_process", "accelbench.builder.stage_times", "accelbench.builder.seeding")


_started_sandbox: str | None = None


def forkserver_context(sandbox: str = SANDBOX_NONE):
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

        if sandbox == SANDBOX_BWRAP:
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
    """Folders and files no worker may see (the dataset folder, the operator's input files): each confined worker
    mounts an empty one over them, and ``--sandbox bwrap`` masks them around the forkserver."""
    _hidden_paths.extend(Path(path).resolve() for path in paths if Path(path).resolve() not in _hidden_paths)


def hidden_paths() -> list[Path]:
    return list(_hidden_paths)


def bwrap_command() -> list[str]:
    """bubblewrap's arguments: read-only root, private /tmp, no network, the hidden folders masked, the worker
    scratch root writable, devices (GPUs) bound. Not a security boundary: a kernel or driver bug, or a GPU
    shared with other work, is still reachable; untrusted submissions belong in a container."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise RuntimeError("--sandbox bwrap: bubblewrap is not installed (apt-get install bubblewrap)")
    scratch = scratch_root()
    command = [bwrap, "--ro-bind", "/", "/", "--dev-bind", "/dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
               "--unshare-net", "--unshare-ipc", "--die-with-parent"]
    for code in sorted({Path(entry).resolve() for entry in (sys.prefix, *sys.path) if entry}):
        if code.is_relative_to("/tmp") and code.exists():  # a checkout or venv under /tmp stays importable
            command += ["--ro-bind", str(code), str(code)]
    for path in _hidden_paths:
        command += ["--tmpfs", str(path)] if path.is_dir() else ["--ro-bind", "/dev/null", str(path)]
    command += ["--bind", str(scratch), str(scratch)]
    return command


def _bwrap_wrapper() -> Path:
    import shlex

    wrapper = scratch_root() / "python-in-bwrap"
    wrapper.write_text("#!/bin/sh\nexec " + " ".join(map(shlex.quote, bwrap_command())) +
                       f" -- {shlex.quote(sys.executable)} \"$@\"\n")
    wrapper.chmod(0o700)
    return wrapper


_scratch: Path | None = None


def scratch_root() -> Path:
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

