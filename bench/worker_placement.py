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
``--repeats`` runs the comparison again with fresh processes, to see whether a process keeps a speed offset.

    python bench/worker_placement.py --images 64 --methods none,deepcache --out bench/results/x.json
    python bench/worker_placement.py --images 240 --lanes bare,worker-pinned --out bench/results/y.json
    python bench/worker_placement.py --device cpu --weights tiny --methods none --lanes bare,bare-pinned \\
        --images 100 --repeats 8 --out bench/results/z.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from datetime import date
from pathlib import Path

from tqdm import trange

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generate import (  # noqa: E402
    METHOD_TASKS, BareLane, WorkerLane, batches_of, method_program, prompts, interval, speedup_with_ci,
    with_ci, write)


LANES = ("bare", "bare-pinned", "worker-pinned", "worker-unpinned", "worker-other-cores", "worker-default-threads")


def lanes(timed_cores, other_cores):
    """(label, kind, cores, threads) in the order of ``LANES``: kind 'bare' or 'worker'; threads None is torch's
    default."""
    return [("bare", "bare", None, None), ("bare pinned", "bare", timed_cores, None),
            ("worker pinned", "worker", timed_cores, 1), ("worker unpinned", "worker", None, 1),
            ("worker other cores", "worker", other_cores, 1), ("worker default threads", "worker", None, None)]


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


def run_lanes(spec, method, source, chosen_lanes, batches, warmup_batch, warmup) -> dict[str, list[float]]:
    """Start each lane in a fresh process, run every batch round-robin (each round starting at the next lane, so
    no lane always goes first), stop them; lane label -> batch latencies."""
    pipelines = spec["pipelines"]
    running = {}
    try:  # inside: a lane that fails to start still stops those started before it
        for label, kind, lane_cores, threads in chosen_lanes:
            running[label] = (BareLane(spec, method, lane_cores) if kind == "bare" else
                              WorkerLane(source, pipelines["model_path"], pipelines["device"], pipelines["dtype"],
                                         pipelines["size"], len(batches[0][0]), lane_cores, threads, warmup_batch,
                                         warmup))
        labels = list(running)
        latencies = {label: [] for label in labels}
        for index, batch in enumerate(batches):
            for offset in range(len(labels)):
                label = labels[(index + offset) % len(labels)]
                latencies[label].append(running[label].run(index, batch))
    finally:
        for lane in running.values():
            lane.close()
    return latencies


def between_processes(repeats: list[dict[str, list[float]]]) -> dict[str, dict]:
    """Per lane, how its ratio to the reference moves from one set of processes to the next: each repeat's ratio
    with its CI over rounds, the spread of those ratios against the spread the rounds' noise alone would give
    (the median of the repeats' CI half-widths / 1.96), and a CI with the repeat as the resampling unit. A spread
    well above the rounds' says each process keeps a speed offset of its own, which a CI over rounds misses."""
    from accelbench.scorer.functional import ratio_of_sums

    labels = list(repeats[0])
    summary = {}
    print(f"  between processes ({len(repeats)} repeats, each with fresh processes):")
    for label in labels[1:]:
        per_repeat = [speedup_with_ci(repeat[labels[0]], repeat[label]) for repeat in repeats]
        ratios = [point for point, _, _ in per_repeat]
        spread = statistics.stdev(ratios)
        round_noise = statistics.median((high - low) / (2 * 1.96) for _, low, high in per_repeat)
        sums = [[sum(repeat[key]) for repeat in repeats] for key in (labels[0], label)]
        point, low, high = with_ci(ratio_of_sums, *sums)
        summary[label] = {"ratios": ratios, "ratio_cis": [[low_, high_] for _, low_, high_ in per_repeat],
                          "sd_between_repeats": spread, "sd_from_rounds": round_noise,
                          "ratio_over_repeats": point, "ratio_over_repeats_ci": [low, high],
                          "n_repeats": len(repeats)}
        print(f"    {label:<22} per repeat: {' '.join(f'{r:.3f}' for r in ratios)}\n"
              f"    {'':<22} SD between repeats {spread:.3f}, from the rounds alone "
              f"{round_noise:.3f}; over repeats {point:.3f} {interval((low, high))} n={len(repeats)} repeats")
    return summary


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
    parser.add_argument("--repeats", type=int, default=1,
                        help="run each method's comparison this many times, each with fresh processes, and show "
                             "how the ratios move between process sets")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats: at least 1")
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
              "repeats": args.repeats, "batch_size": batch_size, "family": args.family, "methods": {}}
    print(f"device: {device_name}; {len(cores)} CPUs, timed cores {timed_cores}, other cores {other_cores}; "
          f"{args.family}, {args.images} images, batch {batch_size}")
    placements = dict(zip(LANES, lanes(timed_cores, other_cores)))
    chosen_lanes = [placements[key] for key in chosen]
    for method in args.methods.split(","):
        source = method_program(catalog, args.family, method)
        spec = {"pipelines": {"family": args.family, "methods": [method], "model_path": model_path, "size": size,
                              "device": device, "dtype": dtype, "warmup": args.warmup, "warmup_batch": warmup_batch},
                "batches": batches}
        repeats = [run_lanes(spec, method, source, chosen_lanes, batches, warmup_batch, args.warmup)
                   for _ in trange(args.repeats, desc=f"{method}: repeats", disable=args.repeats == 1)]
        labels = list(repeats[0])
        latencies = {label: [x for repeat in repeats for x in repeat[label]] for label in labels}
        rounds = len(latencies[labels[0]])
        rows = report["methods"][method] = []
        print(f"\n{method}: {rounds} rounds; throughput vs '{labels[0]}' over the same rounds [95% CI]")
        for label in labels:
            # The throughput ratio over the same rounds is the reference's summed latency over the lane's.
            point, low, high = speedup_with_ci(latencies[labels[0]], latencies[label])
            rows.append({"lane": label, "ratio_to_bare": point, "ratio_ci": [low, high], "n_rounds": rounds,
                         "median_s": statistics.median(latencies[label]), "min_s": min(latencies[label]),
                         "latencies_s": latencies[label]})
            print(f"  {label:<24}{point:>7.3f} {interval((low, high))}  median {rows[-1]['median_s']:.3f} s  "
                  f"min {rows[-1]['min_s']:.3f} s  n={rounds}")
        if args.repeats > 1:
            report.setdefault("between_processes", {})[method] = between_processes(repeats)
        write(report, args.out)
    if len(report["methods"]) > 1:
        report["pooled"] = pooled_over_methods(report["methods"])
        print("\nevery method pooled (unit: one method's round)")
        for label, values in report["pooled"].items():
            print(f"  {label:<24}{values['ratio_to_bare']:>7.3f} {interval(values['ratio_ci'])}  n={values['n_units']}")
        write(report, args.out)


if __name__ == "__main__":
    main()
