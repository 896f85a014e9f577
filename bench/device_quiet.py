"""The device-quiet check on a GPU (``accelbench.builder.device_quiet``): how long its probe takes on an idle GPU
and while another process has work on it, and what ``settle()`` makes of work another process left queued.

A second process (standing in for a frozen worker) queues matrix products, or one spinning single-thread kernel,
on the same GPU while this one probes. Targets: no idle probe reads busy (a false alarm would make an honest
program wait), no run of ``QUIET_PROBES`` probes in a row reads idle during the other process's work (what
would let queued work pass as drained), ``settle()`` waits out work that drains within
the grace period and gives up on work that does not.

    python bench/device_quiet.py --out results.json      # CUDA only, ~30 s
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from targets import as_json, at_most, every, print_targets, units  # noqa: E402

PROBES = 400


def other_process(kind: str, seconds: float, ready, done) -> None:
    """Queue ``seconds`` of device work of ``kind`` ("products" or "spin"), say so, and wait to be told to go."""
    import torch

    device = torch.device("cuda")
    work = torch.randn(8192, 8192, device=device, dtype=torch.float16)
    torch.mm(work, work)
    torch.cuda.synchronize()
    started = time.perf_counter()
    torch.mm(work, work)
    torch.cuda.synchronize()
    per_product = time.perf_counter() - started
    if kind == "products":
        for _ in range(max(1, int(seconds / per_product))):
            torch.mm(work, work)
    else:
        torch.cuda._sleep(int(seconds * torch.cuda.clock_rate() * 1e6))  # MHz: cycles for ``seconds``
    ready.set()
    done.wait()


@contextlib.contextmanager
def other_work(kind: str, seconds: float):
    """Inside: another process's ``seconds`` of ``kind`` device work, queued before the block starts."""
    context = multiprocessing.get_context("spawn")
    ready, done = context.Event(), context.Event()
    process = context.Process(target=other_process, args=(kind, seconds, ready, done))
    process.start()
    ready.wait()
    try:
        yield
    finally:
        done.set()
        process.join()


def probes_while(kind: str, seconds: float, probe) -> list[float]:
    """Probe latencies while another process's ``seconds`` of ``kind`` work runs (the first 80 % of it)."""
    with other_work(kind, seconds):
        started, latencies = time.perf_counter(), []
        while time.perf_counter() - started < 0.8 * seconds and len(latencies) < PROBES:
            latencies.append(probe())
    return latencies


def settle_while(kind: str, seconds: float, quiet) -> float | None:
    """What ``quiet.settle()`` makes of another process's ``seconds`` of queued ``kind`` work."""
    with other_work(kind, seconds):
        return quiet.settle()


def windows_not_all_idle(latencies: list[float], threshold: float) -> tuple[int, int]:
    """(windows of QUIET_PROBES consecutive probes with at least one busy probe, windows): what settle() sees."""
    from accelbench.builder.device_quiet import QUIET_PROBES

    busy = np.asarray(latencies) > threshold
    windows = np.lib.stride_tricks.sliding_window_view(busy, QUIET_PROBES)
    return int(windows.any(axis=1).sum()), len(windows)


def summary(latencies: list[float]) -> dict:
    array = np.asarray(latencies) * 1e3
    return {"n": len(array), "median_ms": float(np.median(array)), "p99_ms": float(np.percentile(array, 99)),
            "max_ms": float(array.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    import torch

    from accelbench.builder.device_quiet import QUIET_PROBES, DeviceQuiet, cuda_probe

    probe = cuda_probe("cuda")
    quiet = DeviceQuiet(probe)
    idle = [probe() for _ in range(PROBES)]
    busy = {kind: probes_while(kind, 2.0, probe) for kind in ("products", "spin")}
    idle_after = [probe() for _ in range(PROBES)]
    drained = settle_while("products", 0.2, quiet)
    left = settle_while("products", 3 * quiet.grace_s, quiet)
    threshold = quiet.threshold_s
    results = {"date": date.today().isoformat(), "device": torch.cuda.get_device_name(), "check": quiet.record(),
               "idle": summary(idle + idle_after), **{f"busy_{kind}": summary(v) for kind, v in busy.items()},
               "settle_0.2s_s": drained, f"settle_{3 * quiet.grace_s:g}s_s": left}
    print(f"{results['device']}: idle probe {quiet.idle_s * 1e3:.3f} ms (median of the calibration), busy above "
          f"{threshold * 1e3:.3f} ms")
    for name in ("idle", "busy_products", "busy_spin"):
        row = results[name]
        print(f"  {name:<14} n = {row['n']:<4} median {row['median_ms']:.3f} ms, p99 {row['p99_ms']:.3f}, "
              f"max {row['max_ms']:.3f}")
    print(f"  settle(): 0.2 s of queued products waited {drained}; {3 * quiet.grace_s:g} s of them: {left}")
    false_alarms = sum(latency > threshold for latency in idle + idle_after)
    targets = [
        every("idle probes read idle", len(idle + idle_after) - false_alarms, len(idle + idle_after)),
        *[every(f"no {QUIET_PROBES} probes in a row read idle during another process's {kind}",
                *windows_not_all_idle(busy[kind], threshold)) for kind in busy],
        every("settle() waits out work that drains within the grace, gives up on work that does not",
              int(drained is not None and drained > 0) + int(left is None), 2),
        at_most("idle probe, median ms", 0.1, float(np.median(idle)) * 1e3, None, units(len(idle), "probe")),
    ]
    print_targets("the device-quiet check", targets)
    results["targets"] = as_json(targets)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
