"""The audit on a real device: honest, cheating and sabotaging submissions (``audit_programs.py``) made from each
task's GT, generated beside the baseline and the GT, then what became of each and what the audit cost.

Prints, per submission and task: the rows' statuses and first reason, how far its images are from the GT's of
the same prompt and seed (max and mean |diff|, uint8 levels, over every ok image), its median latency over the
baseline's in the same rounds; per GT: whether its replays were bit-identical on this device; and the audit's
seconds beside the run's; the device-quiet check's waits (CUDA). Targets: every honest program passes, every cheat
is rejected, every saboteur is rejected or reads no faster than the GT in the same batches beyond noise (its images
are the GT's: were it slowing its neighbours, the GT would read slower beside it), the GT's replays repeat, the
audit takes at most a fifth of the run. By default every timed batch is replayed (the most the audit costs, and a
cheat that cheats in any batch is caught); with generate's sample of a fraction, a unit that cheats in
m of its n timed batches escapes the k replayed with probability C(n-m, k) / C(n, k).

    python bench/bench_audit.py --device cpu                       # the smoke suite's tiny SD1.5, ~1 min
    python bench/bench_audit.py --device cuda --suite timing --tasks sd15-ddim-25-deepcache \\
        --prompts prompts.txt --limit 16 --out results.json        # full-size random weights (bench/gpu.sh audit)
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import audit_programs  # noqa: E402
from paired_stats import with_ci  # noqa: E402
from targets import as_json, at_least, at_most, every, print_targets, units  # noqa: E402

SEED_KEY = "a0d17a0d17a0d17a"
AUDIT_SHARE_LIMIT = 0.2  # of the run's seconds
# A saboteur that slowed its neighbours would read faster than the GT, whose images it computes (the GT is slowed
# beside it, the saboteur is not): its latency over the GT's in the same batches may not fall below this.
SABOTEUR_EFFECT_LIMIT = -0.05


def pixels(image: dict) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(image["bytes"])).convert("RGB"), dtype=np.int16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="smoke")
    parser.add_argument("--tasks", default="smoke-sd15-ddim-8-deepcache", help="comma-separated DDIM task ids")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompts", type=Path, help="prompt file instead of the suite's")
    parser.add_argument("--limit", type=int, default=4, help="prompts")
    # Every timed batch replayed: whichever batches a cheat cheats in are caught, and the cost is the most the
    # audit can take (generate's default replays a tenth, at least two batches per unit and batch size).
    parser.add_argument("--audit-fraction", type=float, default=1.0)
    parser.add_argument("--programs", help="comma-separated names of audit_programs' submissions (default: all)")
    parser.add_argument("--work", type=Path, help="folder for the dataset (default: a temp folder)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    from accelbench import dataset, schema
    from accelbench.builder import host, programs
    from accelbench.builder.generate import run_generate
    from accelbench.builder.options import GenerateOptions
    from accelbench.manifest import load_catalog

    catalog = load_catalog()
    tasks = args.tasks.split(",")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-audit-"))
    subs = {}
    for task in tasks:
        gt = programs.render(catalog, catalog.task(task)).source
        chosen = {**audit_programs.programs(gt), **audit_programs.saboteurs(gt)}
        if args.programs:
            chosen = {name: chosen[name] for name in args.programs.split(",")}
        for name, source in chosen.items():
            folder = work / "submissions" / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{task}.py").write_text(source)
            subs[name] = folder
    options = GenerateOptions(suite=args.suite, out=work / "out", tasks=tasks, device=args.device,
                              prompts_file=args.prompts, limit=args.limit, submissions=list(subs.values()),
                              seed_key=SEED_KEY, audit_fraction=args.audit_fraction, repeats=1, progress=False)
    started = time.perf_counter()
    summary = run_generate(options, catalog)
    wall = time.perf_counter() - started
    out = work / "out"
    rows = dataset.read_generations(out, ["variant", "task_id", "status", "error", "seed", "batch_size",
                                          "prompt_index", "image", "batch_latency_s", "baseline_latency_s",
                                          "batch_index"]).to_pylist()
    [record] = [json.loads(path.read_text()) for path in (out / schema.RUNS_DIR).glob("*.json")]
    device_name, _ = host.environment(args.device)
    gt_images = {(row["task_id"], row["seed"], row["batch_size"], row["prompt_index"]): pixels(row["image"])
                 for row in rows if row["variant"] == schema.GT and row["status"] == schema.STATUS_OK}
    gt_latency = {(row["task_id"], row["seed"], row["batch_size"], row["batch_index"]): row["batch_latency_s"]
                  for row in rows if row["variant"] == schema.GT and row["status"] == schema.STATUS_OK}

    results = {"date": date.today().isoformat(), "device": device_name, "suite": args.suite, "tasks": tasks,
               "prompts": args.limit, "audit_fraction": args.audit_fraction, "wall_s": round(wall, 1),
               "audit": record["audit"], "device_quiet": record.get("device_quiet"), "submissions": {}}
    print(f"device: {device_name}; suite {args.suite}, tasks {', '.join(tasks)}, {args.limit} prompts; "
          f"run {wall:.0f} s\n")
    print(f"{'submission':<10} {'task':<28} {'rows':<16} {'vs GT max/mean':<15} {'latency/baseline':<17} reason")
    for name in subs:
        for task in tasks:
            mine = [row for row in rows if row["variant"] == schema.submission_variant(name) and row["task_id"] == task]
            statuses = {status: sum(row["status"] == status for row in mine) for status in {r["status"] for r in mine}}
            diffs = [np.abs(pixels(row["image"]) - gt_images[key]) for row in mine if row["status"] == "ok"
                     and (key := (task, row["seed"], row["batch_size"], row["prompt_index"])) in gt_images]
            batches = {(row["seed"], row["batch_size"], row["batch_index"]): row["batch_latency_s"] /
                       row["baseline_latency_s"] for row in mine if row["status"] == "ok" and row["baseline_latency_s"]}
            paired = {key: row["batch_latency_s"] for row in mine if row["status"] == "ok"
                      and (key := (task, row["seed"], row["batch_size"], row["batch_index"])) in gt_latency}
            entry = {"statuses": statuses, "reason": next((row["error"] for row in mine if row["error"]), None),
                     "latency_over_gt": latency_over_gt([gt_latency[key] for key in paired], list(paired.values())),
                     "max_abs": int(max(d.max() for d in diffs)) if diffs else None,
                     "mean_abs": float(np.mean([d.mean() for d in diffs])) if diffs else None,
                     "latency_ratio": statistics.median(batches.values()) if batches else None}
            results["submissions"].setdefault(name, {})[task] = entry
            versus = "-" if entry["max_abs"] is None else f"{entry['max_abs']}/{entry['mean_abs']:.3f}"
            ratio = "-" if entry["latency_ratio"] is None else f"{entry['latency_ratio']:.3f}"
            shown = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
            print(f"{name:<10} {task:<28} {shown:<16} {versus:<15} {ratio:<17} {(entry['reason'] or '')[:110]}")
    gts = [entry for entry in record["audit"]["units"] if entry["unit"].startswith(f"{schema.GT}:")]
    audit_seconds = sum(entry["seconds"] for entry in record["audit"]["units"])
    print("\nGT replays: " + "; ".join(f"{e['unit']} bs{e['batch_size']} rounds {e['rounds']}: max |diff| "
                                      f"{e['replay_max_abs']}" for e in gts))
    print(f"audit: {audit_seconds:.1f} s of the run's {summary.seconds:.1f} s")
    if record.get("device_quiet"):
        quiet = record["device_quiet"]
        print(f"device quiet: {quiet['calls_checked']} calls checked (idle probe {quiet['idle_probe_ms']} ms, busy "
              f"over {quiet['busy_threshold_ms']} ms), {quiet['calls_waited']} waited {quiet['waited_s']} s in all "
              f"{quiet['reason']}")
    honest = [results["submissions"]["honest"][task] for task in tasks if "honest" in results["submissions"]]
    cheats = [entry[task] for name, entry in results["submissions"].items()
              if name != "honest" and name not in audit_programs.SABOTEURS for task in tasks]
    sabotage = [saboteur_target(name, results["submissions"][name][task]) for name in audit_programs.SABOTEURS
                if name in results["submissions"] for task in tasks]
    targets = [
        *([every("honest program: every row ok", sum(set(e["statuses"]) == {"ok"} for e in honest), len(honest))]
          if honest else []),
        *([every("cheat: every row rejected", sum(set(e["statuses"]) == {"rejected"} for e in cheats), len(cheats))]
          if cheats else []),
        *sabotage,
        every("GT replays bit-identical on this device", sum(e["replay_max_abs"] == 0 for e in gts), len(gts)),
        at_most(f"audit share of the run <= {AUDIT_SHARE_LIMIT}", AUDIT_SHARE_LIMIT, audit_seconds / summary.seconds,
                None, units(1, "run")),
    ]
    print_targets("the audit", targets)
    results["targets"] = as_json(targets)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


def latency_over_gt(gt: list[float], other: list[float]) -> list[float] | None:
    """A submission's latency over the GT's in the same batches, minus 1, with its bootstrap CI over batches:
    [point, low, high] (the CI nan below the scorer's minimum n), or None without shared batches."""
    from accelbench.scorer import functional

    if not gt:
        return None
    return list(with_ci(lambda other, gt, axis=-1: functional.ratio_of_sums(other, gt, axis=axis) - 1, other, gt))


def saboteur_target(name: str, entry: dict):
    """Rejected (every row), or no effect: its latency over the GT's in the same batches within the limit."""
    goal = f"saboteur {name}: rejected, or latency over the GT's >= {SABOTEUR_EFFECT_LIMIT:+.0%}"
    if set(entry["statuses"]) == {"rejected"}:
        return every(goal + " (rejected)", 1, 1)
    if entry["latency_over_gt"] is None:
        return every(goal + " (neither rejected nor timed)", 0, 1)
    point, low, high = entry["latency_over_gt"]
    interval = None if np.isnan(low) else (low, high)
    return at_least(goal, SABOTEUR_EFFECT_LIMIT, point, interval, units(sum(entry["statuses"].values()), "image"),
                    scale=100, spec="+.1f", unit=" %")


if __name__ == "__main__":
    main()
