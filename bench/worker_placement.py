"""Where a program's host thread runs vs how fast it renders: a bare loop against ProgramWorkers placed
different ways, round-robin in one call.

SD1.5 at 512² is launch-bound on an H200 (the GPU waits on the Python thread that launches its kernels), so
anything that slows that thread slows the batch. Each lane below renders the same batches of one program
(DDIM 25, batch 4); every round runs batch k of every lane, starting at a different lane each round, and each
lane is compared with the first (a bare loop in a spawned process, unpinned) over the same rounds:

- ``bare``: bench/bare.py in a spawned process, unpinned (the reference);
- ``bare pinned``: the same, held on the timed cores generate uses (``runner.core_split``);
- ``worker pinned``: a ProgramWorker as generate starts it (timed cores, one torch thread);
- ``worker unpinned``: the same worker, free to run on any core;
- ``worker other cores``: pinned to the host's last two cores instead;
- ``worker default threads``: unpinned, with torch's default CPU thread count.

``--lanes`` picks some of them (the first named is the reference): fewer lanes give more rounds per minute.

    python bench/worker_placement.py --images 64 --methods none,deepcache --out bench/results/x.json
    python bench/worker_placement.py --images 240 --lanes bare,worker-pinned --out bench/results/y.json
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generate import (  # noqa: E402
    METHOD_TASKS, BareLane, WorkerLane, batches_of, method_program, prompts, speedup_with_ci, write)


LANES = ("bare", "bare-pinned", "worker-pinned", "worker-unpinned", "worker-other-cores", "worker-default-threads")


def lanes(timed_cores, other_cores):
    """(label, kind, cores, threads) in the order of ``LANES``: kind 'bare' or 'worker'; threads None is torch's
    default."""
    return [("bare", "bare", None, None), ("bare pinned", "bare", timed_cores, None),
            ("worker pinned", "worker", timed_cores, 1), ("worker unpinned", "worker", None, 1),
            ("worker other cores", "worker", other_cores, 1), ("worker default threads", "worker", None, None)]


def interval(low, high) -> str:
    return "n/a" if math.isnan(low) else f"[{low:.3f}, {high:.3f}]"  # n/a: too few rounds for a CI


def pooled_over_methods(methods: dict) -> dict[str, dict]:
    """Per lane, its throughput over the reference lane's with every method's batches together: the unit is one
    method's round (its lanes ran side by side; methods ran one after another), the CI resamples those units."""
    lanes_of = {method: {row["lane"]: row["latencies_s"] for row in rows} for method, rows in methods.items()}
    labels = list(next(iter(lanes_of.values())))
    reference = [x for lanes in lanes_of.values() for x in lanes[labels[0]]]
    pooled = {}
    for label in labels:
        point, low, high = speedup_with_ci(reference, [x for lanes in lanes_of.values() for x in lanes[label]])
        pooled[label] = {"ratio_to_bare": point, "ratio_ci": [low, high], "n_units": len(reference)}
    return pooled


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="sd15")
    parser.add_argument("--methods", default="none,deepcache", help="subset of: " + ", ".join(METHOD_TASKS))
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--weights", choices=["random", "tiny"], default="random")
    parser.add_argument("--lanes", default=",".join(LANES),
                        help="comma-separated, the first is the reference; of: " + ", ".join(LANES))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    chosen = args.lanes.split(",")
    if any(lane not in LANES for lane in chosen) or len(set(chosen)) != len(chosen):
        parser.error(f"--lanes {args.lanes}: each once, of {', '.join(LANES)}")

    from accelbench.builder import programs, runner
    from accelbench.builder.seeding import image_seed
    from accelbench.manifest import load_catalog

    programs.quiet_library_output()
    catalog = load_catalog()
    batch_size = catalog.suite("timing").batch_sizes[0]
    device = runner.resolve_device(args.device, None)
    timed_cores, _ = runner.core_split(device, None)
    cores = sorted(os.sched_getaffinity(0))
    other_cores = cores[-2:]
    sources = runner.ModelSources(catalog, args.weights, device, {})
    model_path, size = sources.path(args.family), sources.resolution(args.family)
    dtype = catalog.models[args.family].dtype if device.startswith("cuda") else "float32"
    prompt_list = prompts(args.images)
    seeds = [image_seed(catalog.suite("timing").seeds[0], index) for index in range(args.images)]
    batches = batches_of(prompt_list, seeds, batch_size)
    warmup_batch = ([f"warm-up {i}" for i in range(batch_size)], seeds[:batch_size])
    device_name, versions = runner.environment(device)
    report = {"date": date.today().isoformat(), "device": device_name, "versions": versions, "cpus": len(cores),
              "timed_cores": timed_cores, "other_cores": other_cores, "lanes": chosen, "images": args.images,
              "batch_size": batch_size, "family": args.family, "methods": {}}
    print(f"device: {device_name}; {len(cores)} CPUs, timed cores {timed_cores}, other cores {other_cores}; "
          f"{args.family}, {args.images} images, batch {batch_size}")
    for method in args.methods.split(","):
        source = method_program(catalog, args.family, method)
        spec = {"pipelines": {"family": args.family, "methods": [method], "model_path": model_path, "size": size,
                              "device": device, "dtype": dtype, "warmup": args.warmup, "warmup_batch": warmup_batch},
                "batches": batches}
        running = {}
        placements = dict(zip(LANES, lanes(timed_cores, other_cores)))
        for label, kind, lane_cores, threads in (placements[key] for key in chosen):
            running[label] = (BareLane(spec, method, lane_cores) if kind == "bare" else
                              WorkerLane(source, model_path, device, dtype, size, batch_size, lane_cores, threads,
                                         warmup_batch, args.warmup))
        labels = list(running)
        latencies = {label: [] for label in labels}
        for index, batch in enumerate(batches):
            for offset in range(len(labels)):  # each round starts at the next lane: no lane always goes first
                label = labels[(index + offset) % len(labels)]
                latencies[label].append(running[label].run(index, batch))
        for lane in running.values():
            lane.close()
        rows = report["methods"][method] = []
        print(f"\n{method}: {len(batches)} rounds; throughput vs '{labels[0]}' over the same rounds [95% CI]")
        for label in labels:
            # The throughput ratio over the same rounds is the reference's summed latency over the lane's.
            point, low, high = speedup_with_ci(latencies[labels[0]], latencies[label])
            rows.append({"lane": label, "ratio_to_bare": point, "ratio_ci": [low, high], "n_rounds": len(batches),
                         "median_s": statistics.median(latencies[label]), "min_s": min(latencies[label]),
                         "latencies_s": latencies[label]})
            print(f"  {label:<24}{point:>7.3f} {interval(low, high)}  median {rows[-1]['median_s']:.3f} s  "
                  f"min {rows[-1]['min_s']:.3f} s  n={len(batches)}")
        write(report, args.out)
    if len(report["methods"]) > 1:
        report["pooled"] = pooled_over_methods(report["methods"])
        print("\nevery method pooled (unit: one method's round)")
        for label, values in report["pooled"].items():
            print(f"  {label:<24}{values['ratio_to_bare']:>7.3f} {interval(*values['ratio_ci'])}  n={values['n_units']}")
        write(report, args.out)


if __name__ == "__main__":
    main()
