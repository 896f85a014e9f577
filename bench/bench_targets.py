"""Target tasks judged end to end: each catalogue target task named here runs through `accelbench generate` with
its reference program and honest submissions of other configurations (DeepCache at other settings, ToMe), then
`accelbench score` gives each its verdict. Every submission has the verdict its search numbers predict
(bench/results/targets/): faster but further from the baseline than the budget allows fails on quality, closer but
slower fails on speed, and one near the reference meets the target.

    python bench/bench_targets.py --device cuda --weights random --out bench/results/targets/judged-h200.json
    python bench/bench_targets.py --device cpu --weights tiny --tasks TASK --programs NAME=METHOD:K=V,...

It prints one row per (task, program): speedup [CI], latency per image, PSNR to the baseline, the verdict and its
reason, and the expected verdict where one is given; the targets line says whether every expectation held. CLIP
scores come from the tiny random CLIP (random weights: CLIP means nothing there), so PSNR decides quality.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from targets import as_json, every, print_targets  # noqa: E402

# task -> {submission name: ((method, params), expected verdict)}: the search's numbers (H200, random weights)
# say what each should get with a 3 dB PSNR budget.
PLAN = {
    "sd15-ddim-25-speedup-easy": {  # >= 1.6x; reference DeepCache 4/2: 2.17x [1.86], 43.3 dB (floor 40.3 dB)
        "far": (("deepcache", {"cache_interval": 5, "cache_branch_id": 0}), "not met"),  # 3.66x, 36.7 dB
        "tome": (("tome", {}), "not met"),  # ~1x: too slow
        "near": (("deepcache", {"cache_interval": 3, "cache_branch_id": 0}), "met"),  # 2.34x [1.95], 41.1 dB
    },
    "sd15-ddim-25-latency-easy": {  # <= 585 ms on H200
        "near": (("deepcache", {"cache_interval": 3, "cache_branch_id": 0}), "met"),  # 399 ms [.., 441]
        "tome": (("tome", {}), "not met"),  # ~930 ms
    },
    "sdxl-ddim-25-speedup-easy": {  # >= 1.1x; reference DeepCache 2/2: 1.73x [1.59], 49.7 dB (floor 46.7 dB)
        "far": (("deepcache", {"cache_interval": 4, "cache_branch_id": 0}), "not met"),  # 2.61x, 39.9 dB
        "near": (("deepcache", {"cache_interval": 2, "cache_branch_id": 0}), "met"),  # 1.68x [1.55], 47.0 dB
    },
    "sdxl-ddim-25-latency-easy": {  # <= 1905 ms on H200
        "near": (("deepcache", {"cache_interval": 2, "cache_branch_id": 0}), "met"),  # 1245 ms [.., 1431], 47.0 dB
        "tome": (("tome", {}), "not met"),  # ~2090 ms
    },
}


def program_source(catalog, task, method_id: str, params: dict) -> str:
    """The catalogue template's program for ``task``'s setting with ``method_id`` and ``params`` (others at their
    defaults): an honest program of another configuration than the reference's."""
    import dataclasses

    from accelbench.builder import programs

    method = catalog.methods[method_id]
    full = {name: spec.default for name, spec in method.params.items()} | params
    recipe = dataclasses.replace(task, method=method_id, params=full, target=None)
    return programs.render(catalog, recipe).source


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--tasks", help="comma-separated target tasks of PLAN (default: all)")
    parser.add_argument("--limit", type=int, default=4,
                        help="prompts (4 rounds at batch size 1 and one at 4: the fewest batches with an interval)")
    parser.add_argument("--work", type=Path, help="folder for the dataset (default: a temp folder)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    from accelbench.builder.generate import run_generate
    from accelbench.builder.options import GenerateOptions
    from accelbench.manifest import load_catalog
    from accelbench.scorer import clip, leaderboard_files
    from accelbench.scorer.score import score_dataset

    catalog = load_catalog()
    chosen = args.tasks.split(",") if args.tasks else list(PLAN)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-targets-"))
    folders: dict[str, Path] = {}
    for task_id in chosen:
        task = catalog.task(task_id)
        for name, ((method_id, params), _) in PLAN[task_id].items():
            folder = folders.setdefault(name, work / "submissions" / name)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{task_id}.py").write_text(program_source(catalog, task, method_id, params))
    summary = run_generate(GenerateOptions(suite="standard", out=work / "dataset", tasks=chosen, device=args.device,
                                           weights=args.weights, limit=args.limit, seeds=[0], repeats=1,
                                           warmup_batches=1,
                                           prompts_file=None if args.weights == "pretrained" else _prompts(work),
                                           submissions=list(folders.values()), progress=False), catalog)
    print(summary.format())
    score_dataset(work / "dataset", clip_model=clip.TINY_MODEL, clip_pretrained=clip.RANDOM_WEIGHTS,
                  device=args.device, progress=False)
    results = leaderboard_files.read_task_results(work / "dataset")
    rows, held = [], []
    for result in results:
        if result["task_id"] not in chosen:
            continue
        name = result["submission"]
        expected = PLAN[result["task_id"]].get(name, (None, "met" if name == "gt" else None))[1]
        rows.append({key: result[key] for key in ("task_id", "submission", "method_params", "speedup",
                                                  "speedup_ci_low", "speedup_ci_high", "speedup_n", "latency_ms",
                                                  "target_verdict", "reason")} | {"expected": expected})
        if expected is not None:
            held.append(result["target_verdict"] == expected)
    print(f"\n{'task':<28} {'program':<8} {'speedup [95 % CI]':<22} {'ms/image':>9}  verdict (expected): reason")
    for row in rows:
        interval = (f"[{row['speedup_ci_low']:.2f}, {row['speedup_ci_high']:.2f}]" if row["speedup_ci_low"]
                    is not None else "[n/a]")
        print(f"{row['task_id']:<28} {row['submission']:<8} {row['speedup'] or 0:.2f}x {interval:<15} "
              f"{row['latency_ms'] or 0:>9.0f}  {row['target_verdict']} ({row['expected']}): {row['reason'] or ''}")
    found = [every("every verdict as its search numbers predict", sum(held), len(held))]
    print_targets(f"target tasks on {args.device}, {args.weights} weights", found)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"device": args.device, "weights": args.weights, "limit": args.limit,
                                        "rows": rows, "targets": as_json(found)}, indent=1, default=str))
    return 0


def _prompts(work: Path) -> Path:
    """The gate's prompt pool as a prompt file: the standard suite's prompts come from the Hub, not reachable
    where random weights are used."""
    from accelbench.builder.gate.inputs import PROMPT_POOL

    path = work / "prompts.txt"
    path.write_text("\n".join(PROMPT_POOL) + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
