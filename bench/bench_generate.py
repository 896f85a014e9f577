"""Generate efficiency and timing fidelity: accelbench vs a bare diffusers loop, side by side, one GPU.

For each family, the same work (DDIM 25 steps, the `timing` suite's batch size 4, N images, every method) runs
1. as a bare diffusers loop (bench/bare.py), and
2. through ``accelbench generate`` (suite ``timing``, the same prompts and model folder),
and the script reports, per variant: images/s of each from the first image's start to the last image's end
(model loading and warm-up excluded) and their ratio (target >= 0.98), the speedup over the baseline as each
measures it (target: within 3 %), and the coefficient of variation of per-batch latency (target <= 2 %).

    python bench/bench_generate.py --families sd15,sdxl --images 32 --device cuda --out bench/results/x.json
    python bench/bench_generate.py --families sd15 --images 4 --weights tiny --device cpu   # quick CPU check
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bare  # noqa: E402

METHOD_TASKS = {"none": "", "deepcache": "deepcache", "tome": "tome", "tgate": "tgate",
                "deepcache_tgate": "deepcache-tgate"}
PROMPT_SUBJECTS = ["a red cube", "an astronaut riding a horse", "a lighthouse at dawn", "two cats on a sofa",
                   "a bowl of fruit", "a city street in the rain", "a mountain lake", "a robot reading a book"]


def prompts(count: int) -> list[str]:
    return [f"{PROMPT_SUBJECTS[i % len(PROMPT_SUBJECTS)]}, picture {i}" for i in range(count)]


def run_bare(family, methods, catalog, model_path, size, device, dtype, prompt_list, batch_size, warmup, image_seeds):
    results = {}
    batches = [(prompt_list[i:i + batch_size], image_seeds[i:i + batch_size])
               for i in range(0, len(prompt_list), batch_size)]
    for method in methods:
        slug = METHOD_TASKS[method]
        task = catalog.task(f"{family}-ddim-25-{slug or 'deepcache'}")  # the baseline shares its setting
        params = task.params if method != "none" else {}
        model = catalog.models[family]
        pipe = bare.load(family, method, params, model_path, device, dtype)
        latencies, span = bare.timed_batches(pipe, method, params, batches, task.steps, model.guidance_scale, size,
                                             device, warmup)
        results[method] = {"latencies": latencies, "images_per_s": len(prompt_list) / span}
        del pipe
        _free(device)
    return results


def run_harness(family, methods, out, prompt_file, weights, device, image_count, warmup):
    from accelbench import dataset
    from accelbench.builder import runner

    tasks = [f"{family}-ddim-25-{METHOD_TASKS[method]}" for method in methods if method != "none"]
    runner.run_generate(runner.GenerateOptions(suite="timing", out=out, tasks=tasks, device=device, weights=weights,
                                               prompts_file=prompt_file, limit=image_count, warmup_batches=warmup,
                                               progress=False))
    rows = dataset.read_generations(out, ["unit_id", "method", "batch_index", "batch_latency_s", "started_at",
                                          "finished_at", "denoise_s", "vae_decode_s", "status"]).to_pylist()
    results = {}
    for method in methods:
        mine = [row for row in rows if row["method"] == method and row["unit_id"].startswith(family)]
        batches = {row["batch_index"]: row for row in mine}
        span = (max(r["finished_at"] for r in mine) - min(r["started_at"] for r in mine)).total_seconds()
        results[method] = {
            "latencies": [batches[index]["batch_latency_s"] for index in sorted(batches)],
            "images_per_s": len(mine) / span,
            "denoise_share": statistics.mean(r["denoise_s"] / r["batch_latency_s"] for r in batches.values()),
            "failed": sum(row["status"] != "ok" for row in mine),
        }
    return results


def _free(device):
    import gc

    import torch

    gc.collect()
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()


def cv(values):
    return statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="sd15,sdxl")
    parser.add_argument("--methods", default=",".join(METHOD_TASKS), help="subset of: " + ", ".join(METHOD_TASKS))
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--weights", choices=["random", "tiny"], default="random")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--work", type=Path, help="folder for the harness datasets (default: a temp folder)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    import torch

    from accelbench.builder import programs, runner, synthetic
    from accelbench.builder.seeding import image_seed
    from accelbench.manifest import load_catalog

    programs.quiet_library_output()
    catalog = load_catalog()
    batch_size = catalog.suite("timing").batch_sizes[0]  # the harness side runs the `timing` suite
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-generate-"))
    prompt_list = prompts(args.images)
    prompt_file = work / "prompts.txt"
    work.mkdir(parents=True, exist_ok=True)
    prompt_file.write_text("\n".join(prompt_list) + "\n")
    seeds = [image_seed(0, index) for index in range(args.images)]
    methods = ["none", *(m for m in args.methods.split(",") if m != "none")]  # the baseline is always measured
    device = runner.resolve_device(args.device, None)
    device_name, versions = runner.environment(device)
    report = {"date": date.today().isoformat(), "device": device_name, "versions": versions, "images": args.images,
              "batch_size": batch_size, "steps": 25, "weights": args.weights, "families": {}}
    print(f"device: {device_name}; {args.images} images, batch {batch_size}, DDIM 25 steps, {args.weights} weights")
    for family in args.families.split(","):
        dtype = getattr(torch, catalog.models[family].dtype) if device.startswith("cuda") else torch.float32
        sources = runner.ModelSources(catalog, args.weights, device, {})
        model_path = sources.path(family)
        bare_results = run_bare(family, methods, catalog, model_path, sources.resolution(family), device, dtype, prompt_list,
                                batch_size, args.warmup, seeds)
        harness = run_harness(family, methods, work / f"harness-{family}", prompt_file, args.weights, device, args.images,
                              args.warmup)
        rows = []
        base_bare, base_harness = (sum(r["none"]["latencies"]) for r in (bare_results, harness))
        for method in methods:
            b, h = bare_results[method], harness[method]
            bare_speedup, harness_speedup = base_bare / sum(b["latencies"]), base_harness / sum(h["latencies"])
            rows.append({
                "method": method, "bare_images_per_s": b["images_per_s"], "harness_images_per_s": h["images_per_s"],
                "throughput_ratio": h["images_per_s"] / b["images_per_s"],
                "bare_ms_per_image": 1000 * sum(b["latencies"]) / args.images,
                "harness_ms_per_image": 1000 * sum(h["latencies"]) / args.images,
                "bare_speedup": bare_speedup, "harness_speedup": harness_speedup,
                "speedup_difference": harness_speedup / bare_speedup - 1,
                "bare_cv": cv(b["latencies"]), "harness_cv": cv(h["latencies"]),
                "denoise_share": h["denoise_share"], "failed": h["failed"],
                "bare_batch_latencies_s": b["latencies"], "harness_batch_latencies_s": h["latencies"],
            })
        report["families"][family] = rows
        print(f"\n{family} ({model_path})")
        print(f"{'method':<16}{'bare img/s':>11}{'accelbench':>11}{'ratio':>7}{'bare x':>8}{'accel x':>8}"
              f"{'diff':>7}{'CV bare':>8}{'CV acc':>8}{'denoise':>8}")
        for row in rows:
            print(f"{row['method']:<16}{row['bare_images_per_s']:>11.2f}{row['harness_images_per_s']:>11.2f}"
                  f"{row['throughput_ratio']:>7.3f}{row['bare_speedup']:>8.2f}{row['harness_speedup']:>8.2f}"
                  f"{100 * row['speedup_difference']:>6.1f}%{100 * row['bare_cv']:>7.1f}%"
                  f"{100 * row['harness_cv']:>7.1f}%{100 * row['denoise_share']:>7.0f}%")
        del sources
        _free(device)
        if args.out:  # after each family, so a run cut short keeps what it measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2, default=str))
            print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
