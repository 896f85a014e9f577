"""Generate efficiency and timing fidelity: the harness (interleaved and sequential) vs a bare diffusers loop.

For each family, the same work (DDIM 25 steps, batch size 4, N images, every method) runs in one process, on
one GPU, one after another:

1. **bare**: a bare diffusers loop (bench/bare.py), one method after another, timed with synchronize +
   perf_counter around each call;
2. **interleaved**: ``accelbench generate --timing interleaved`` (suite ``timing``): every method's program in
   a worker of its own, all loaded together, batches round-robin;
3. **sequential**: ``accelbench generate --timing sequential``: the same workers, one after another.

Per method and mode it reports throughput (images per second of summed batch latency: the harness's clock
includes the request, the worker's quantisation to uint8 and the pixels' transfer back), its ratio to bare
(target >= 0.98), the speedup over the baseline (harness: paired with the same round's baseline batch) with a
95 % bootstrap CI over batches and n, the difference to bare's speedup (target within 3 %), and the CV of the
per-batch latency. It also measures the harness's own per-batch cost for an SDXL-sized batch with a program
that computes nothing (quantisation, shared-memory write, messages, copy back: target <= 1 % of an SDXL batch).

    python bench/bench_generate.py --families sd15,sdxl --images 32 --device cuda --out bench/results/x.json
    python bench/bench_generate.py --families sd15 --images 8 --weights tiny --device cpu --methods deepcache
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bare  # noqa: E402

METHOD_TASKS = {"none": "", "deepcache": "deepcache", "tome": "tome", "tgate": "tgate",
                "deepcache_tgate": "deepcache-tgate"}
PROMPT_SUBJECTS = ["a red cube", "an astronaut riding a horse", "a lighthouse at dawn", "two cats on a sofa",
                   "a bowl of fruit", "a city street in the rain", "a mountain lake", "a robot reading a book"]
MODES = ("bare", "interleaved", "sequential")
NULL_PROGRAM = '''
import numpy as np

IMAGES = {}


def load(model_id, device, dtype):
    return None


def generate(pipe, prompts, generators, height=1024, width=1024):
    key = (len(prompts), height, width)
    if key not in IMAGES:
        IMAGES[key] = np.random.default_rng(0).random((len(prompts), height, width, 3), dtype=np.float32)
    return IMAGES[key]
'''


def prompts(count: int) -> list[str]:
    return [f"{PROMPT_SUBJECTS[i % len(PROMPT_SUBJECTS)]}, picture {i}" for i in range(count)]


def run_bare(family, methods, catalog, model_path, size, device, dtype, prompt_list, batch_size, warmup, seeds):
    batches = [(prompt_list[i:i + batch_size], seeds[i:i + batch_size]) for i in range(0, len(prompt_list), batch_size)]
    results = {}
    for method in methods:
        task = catalog.task(f"{family}-ddim-25-{METHOD_TASKS[method] or 'deepcache'}")  # the baseline shares it
        params = task.params if method != "none" else {}
        pipe = bare.load(family, method, params, model_path, device, dtype)
        latencies, _ = bare.timed_batches(pipe, method, params, batches, task.steps,
                                          catalog.models[family].guidance_scale, size, device, warmup)
        results[method] = {"latencies": latencies, "baseline_latencies": None}
        del pipe
        _free(device)
    for method in methods:  # bare pairs batch k of a method with batch k of the baseline, run minutes apart
        results[method]["baseline_latencies"] = results["none"]["latencies"]
    return results


def run_harness(family, methods, catalog, out, prompt_file, weights, device, image_count, warmup, timing,
                max_resident):
    from accelbench import dataset
    from accelbench.builder import runner

    tasks = [f"{family}-ddim-25-{METHOD_TASKS[method]}" for method in methods if method != "none"]
    started = time.perf_counter()
    runner.run_generate(runner.GenerateOptions(suite="timing", out=out, tasks=tasks, device=device, weights=weights,
                                               prompts_file=prompt_file, limit=image_count, warmup_batches=warmup,
                                               timing=timing, max_resident=max_resident, progress=False), catalog)
    wall = time.perf_counter() - started
    rows = dataset.read_generations(out, ["method", "batch_index", "batch_latency_s", "baseline_latency_s",
                                          "denoise_s", "status", "error"]).to_pylist()
    for row in rows:
        if row["status"] != "ok":
            print(f"  {timing}: {row['method']} batch {row['batch_index']}: {row['status']}: {row['error']}")
    results = {}
    for method in methods:
        batches = {row["batch_index"]: row for row in rows if row["method"] == method and row["status"] == "ok"}
        ordered = [batches[index] for index in sorted(batches)]
        results[method] = {
            "latencies": [row["batch_latency_s"] for row in ordered],
            "baseline_latencies": [row["baseline_latency_s"] for row in ordered],
            "denoise_share": statistics.mean(row["denoise_s"] / row["batch_latency_s"] for row in ordered),
            "failed": sum(row["status"] != "ok" for row in rows if row["method"] == method),
        }
    return results, wall


def harness_overhead(device, size, batch_size, repeats=20):
    """Round-trip cost of one batch through a worker whose program computes nothing: quantisation to uint8,
    the shared-memory write, the request and answer, and the parent's copy back."""
    from accelbench.builder.worker import ProgramWorker

    with ProgramWorker(NULL_PROGRAM, model_path="none", device=device, dtype="float32", max_images=batch_size,
                       max_resolution=size) as worker:
        replies = [worker.generate(["p"] * batch_size, list(range(batch_size)), size, size) for _ in range(repeats + 2)]
    replies = replies[2:]
    return {"batch": [batch_size, size, size, 3], "repeats": repeats,
            "round_trip_ms_median": 1000 * statistics.median(r.latency_s for r in replies),
            "round_trip_ms_max": 1000 * max(r.latency_s for r in replies),
            "copy_back_ms_median": 1000 * statistics.median(r.transfer_s for r in replies)}


def speedup_with_ci(baseline, variant):
    from accelbench.scorer import functional

    base, mine = np.asarray(baseline, float), np.asarray(variant, float)
    point = float(functional.ratio_of_sums(base, mine))
    low, high = functional.bootstrap_ci(functional.ratio_of_sums, base, mine)
    return point, float(low), float(high)


def _free(device):
    import gc

    import torch

    gc.collect()
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()


def cv(values):
    return statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else float("nan")


def summarize(method, mode, result, bare_result, images):
    speedup, low, high = speedup_with_ci(result["baseline_latencies"], result["latencies"])
    bare_speedup = speedup_with_ci(bare_result["baseline_latencies"], bare_result["latencies"])[0]
    throughput = images / sum(result["latencies"])
    return {"method": method, "mode": mode, "images_per_s": throughput,
            "throughput_ratio_to_bare": throughput / (images / sum(bare_result["latencies"])),
            "ms_per_image": 1000 * sum(result["latencies"]) / images, "speedup": speedup, "speedup_ci": [low, high],
            "speedup_ci_width": high - low, "n_batches": len(result["latencies"]),
            "speedup_difference_to_bare": speedup / bare_speedup - 1, "cv": cv(result["latencies"]),
            "denoise_share": result.get("denoise_share"), "failed": result.get("failed", 0),
            "batch_latencies_s": result["latencies"], "baseline_latencies_s": result["baseline_latencies"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="sd15,sdxl")
    parser.add_argument("--methods", default=",".join(METHOD_TASKS), help="subset of: " + ", ".join(METHOD_TASKS))
    parser.add_argument("--modes", default=",".join(MODES), help="subset of: " + ", ".join(MODES))
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--weights", choices=["random", "tiny"], default="random")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--max-resident", type=int, help="passed to generate (default: as many as fit)")
    parser.add_argument("--work", type=Path, help="folder for the harness datasets (default: a temp folder)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    import torch

    from accelbench.builder import programs, runner
    from accelbench.builder.seeding import image_seed
    from accelbench.manifest import load_catalog

    programs.quiet_library_output()
    catalog = load_catalog()
    batch_size = catalog.suite("timing").batch_sizes[0]  # the harness side runs the `timing` suite
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-generate-"))
    work.mkdir(parents=True, exist_ok=True)
    prompt_list = prompts(args.images)
    prompt_file = work / "prompts.txt"
    prompt_file.write_text("\n".join(prompt_list) + "\n")
    seeds = [image_seed(catalog.suite("timing").seeds[0], index) for index in range(args.images)]
    methods = ["none", *(m for m in args.methods.split(",") if m != "none")]  # the baseline is always measured
    modes = [mode for mode in MODES if mode in args.modes.split(",")]
    device = runner.resolve_device(args.device, None)
    device_name, versions = runner.environment(device)
    report = {"date": date.today().isoformat(), "device": device_name, "versions": versions, "images": args.images,
              "batch_size": batch_size, "steps": 25, "weights": args.weights, "families": {}}
    print(f"device: {device_name}; {args.images} images, batch {batch_size}, DDIM 25 steps, {args.weights} weights")
    for family in args.families.split(","):
        dtype = getattr(torch, catalog.models[family].dtype) if device.startswith("cuda") else torch.float32
        sources = runner.ModelSources(catalog, args.weights, device, {})
        model_path, size = sources.path(family), sources.resolution(family)
        results, walls = {}, {}
        results["bare"] = run_bare(family, methods, catalog, model_path, size, device, dtype, prompt_list,
                                   batch_size, args.warmup, seeds)
        for mode in modes[1:] if modes[0] == "bare" else modes:
            results[mode], walls[mode] = run_harness(family, methods, catalog, work / f"{family}-{mode}", prompt_file,
                                                     args.weights, device, args.images, args.warmup, mode,
                                                     args.max_resident)
        rows = [summarize(method, mode, results[mode][method], results["bare"][method], args.images)
                for mode in results for method in methods]
        overhead = harness_overhead(device, size, batch_size)
        baseline_batch_ms = 1000 * statistics.median(results["bare"]["none"]["latencies"])
        overhead["share_of_baseline_batch"] = overhead["round_trip_ms_median"] / baseline_batch_ms
        report["families"][family] = {"model": model_path, "rows": rows, "harness_wall_s": walls,
                                      "overhead": overhead}
        print(f"\n{family} ({model_path}); harness overhead per batch: {overhead['round_trip_ms_median']:.1f} ms "
              f"median ({100 * overhead['share_of_baseline_batch']:.2f} % of a baseline batch), copy back "
              f"{overhead['copy_back_ms_median']:.2f} ms")
        print(f"{'method':<16}{'mode':<12}{'img/s':>8}{'vs bare':>8}{'speedup [95% CI]':>22}{'n':>4}{'vs bare':>8}"
              f"{'CV':>7}")
        for row in rows:
            low, high = row["speedup_ci"]
            print(f"{row['method']:<16}{row['mode']:<12}{row['images_per_s']:>8.2f}"
                  f"{row['throughput_ratio_to_bare']:>8.3f}{row['speedup']:>8.2f}x [{low:.2f}, {high:.2f}]"
                  f"{row['n_batches']:>4}{100 * row['speedup_difference_to_bare']:>7.1f}%{100 * row['cv']:>6.1f}%")
        del sources
        _free(device)
        if args.out:  # after each family, so a run cut short keeps what it measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2, default=str))
            print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
