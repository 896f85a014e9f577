"""The host a rank runs on: its rank and device, the dtype it loads models in, what every row records about the
machine, and which CPU cores the timed workers and the PNG encoders get. torch is imported inside functions."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import accelbench
from accelbench.builder.plan import PlanError
from accelbench.manifest import Model

TIMED_CORES = 2  # per local rank on a GPU host: its workers run there, no encoder does


def resolve_rank(shard: tuple[int, int] | None) -> tuple[int, int, int | None]:
    """(rank, world size, local rank): ``--shard`` by hand, else what torchrun / accelerate launch set."""
    if shard is not None:
        return shard[0], shard[1], None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = os.environ.get("LOCAL_RANK")
    if not 0 <= rank < world:
        raise PlanError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return rank, world, int(local) if local is not None else None


def resolve_device(requested: str | None, local_rank: int | None) -> str:
    import torch

    device = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PlanError("--device cuda: no CUDA device is available here")
        if device == "cuda":
            device = f"cuda:{local_rank or 0}"
    elif device != "cpu":
        raise PlanError(f"--device must be cuda, cuda:N or cpu, got {device!r}")
    return device


def resolve_dtype(policy: str, model: Model, device: str) -> str:
    """``auto``: the model's dtype on CUDA, float32 on CPU (half precision on CPU is slow and inexact)."""
    return policy if policy != "auto" else (model.dtype if device.startswith("cuda") else "float32")


def environment(device: str, threads: int | None = None) -> tuple[str, dict[str, str]]:
    """(device name, versions) recorded in every row; ``threads``: the workers' torch thread count."""
    import torch

    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else _cpu_name()
    # CPU float results depend on the thread count, so it is recorded too.
    versions = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda or "",
                "torch_num_threads": str(threads or torch.get_num_threads()), "accelbench": accelbench.__version__}
    for package in ("diffusers", "transformers", "DeepCache", "tomesd", "tgate"):
        versions[package] = _version(package)
    return name, versions


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def core_split(device: str, local_rank: int | None) -> tuple[list[int] | None, list[int] | None]:
    """(the timed workers' cores, the PNG encoders' cores). On a GPU host with cores to spare, each local rank's
    workers are held on ``TIMED_CORES`` cores of their own and the encoders stay off all of those and off their
    hyperthread siblings, so the host thread that launches the GPU work always finds its core free and its
    caches warm (only one of a rank's workers runs at a time). On CPU, or a host too small to split, nobody is
    pinned."""
    cores = sorted(os.sched_getaffinity(0))
    local_world = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), (local_rank or 0) + 1)
    reserved = cores[:TIMED_CORES * local_world]
    shared = set().union(*(cpu_siblings(core) for core in reserved))
    encoders = [core for core in cores if core not in shared]
    if not device.startswith("cuda") or len(encoders) < 2:
        return None, None
    first = TIMED_CORES * (local_rank or 0)
    return reserved[first:first + TIMED_CORES], encoders


def cpu_siblings(core: int) -> set[int]:
    """The logical CPUs that share ``core``'s physical core (itself included)."""
    try:
        text = Path(f"/sys/devices/system/cpu/cpu{core}/topology/thread_siblings_list").read_text().strip()
    except OSError:
        return {core}
    siblings = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        siblings.update(range(int(low), int(high or low) + 1))
    return siblings | {core}


def worker_threads(device: str) -> int:
    """torch's CPU threads per worker: one on a GPU (the host code of a GPU pipeline is one thread, and idle
    OpenMP threads spinning beside it slow its kernel launches), else what the harness uses."""
    import torch

    return 1 if device.startswith("cuda") else torch.get_num_threads()
