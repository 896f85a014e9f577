"""Calibrate the leaderboard's ``deviation_psnr_db`` thresholds (manifests/methods.yaml): how far, in PSNR to a
task's GT images, do images move under changes that keep the computation (another batch size, another torch
thread count, and for ToMe another seed of tomesd's merge-pattern generator), and how far under changes that do
not (no acceleration at all, one parameter off by one notch)?

Runs in-process on the CPU in float32 on the tiny synthetic models (random weights), every GT program of the
chosen tasks. Prints one line per task and writes JSON with ``--out``. The thresholds must sit below every
"same computation" number (an honest program is never flagged), its targets, and are then set as high as the GPU
evidence (docs/investigations/standard-suite-h200.md: fp16 batch-size drift, accelerated vs baseline PSNR)
allows.

    python bench/deviation_calibration.py --tasks 'smoke-sd15-*' --out bench/results/deviation_calibration.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gate_calibration import selected_tasks  # noqa: E402
from targets import at_least, print_targets, units  # noqa: E402

PROMPTS = ["a red cube on a wooden table", "an astronaut riding a horse on the moon",
           "a watercolor painting of a lighthouse at dawn", "two cats sleeping on a sofa"]
SEEDS = [11, 12, 13, 14]
# One notch off per method: the closest wrong request a program could (mis)read.
OFF_BY_ONE = {"deepcache": {"cache_interval": +1}, "tome": {"ratio": +0.1},
              "tgate": {"gate_step": -1}, "deepcache_tgate": {"cache_interval": +1}}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    from accelbench.scorer import functional

    return float(np.mean([functional.psnr(x, y) for x, y in zip(a, b)]))


HONEST = ("batch_size", "threads", "tome_seed")  # the same computation with other numerics


def threshold_targets(catalog, rows: list[dict]) -> list:
    """Per method: the lowest PSNR to the GT that an honest variation gave, against its ``deviation_psnr_db``."""
    targets = []
    for method in dict.fromkeys(row["method"] for row in rows):
        threshold = catalog.methods[method].deviation_psnr_db
        if threshold is None:  # no threshold: this method's programs are never flagged
            continue
        tasks = [row for row in rows if row["method"] == method]
        lowest = min(row[key] for row in tasks for key in HONEST if key in row)
        targets.append(at_least(f"{method}: honest variations >= its threshold, {threshold:g} dB", threshold, lowest,
                                None, units(len(tasks), "task"), spec=".1f", unit=" dB"))
    return targets


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="smoke-*", help="comma-separated task id patterns")
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args(argv)

    import torch

    from accelbench.builder import programs, synthetic
    from accelbench.builder.encode import to_uint8
    from accelbench.builder.seeding import make_generators, seed_global

    catalog, tasks = selected_tasks(parser, args.tasks)
    torch.set_num_threads(2)

    def images(task, baseline=False, tome_seed=None, threads=2, split=False):
        program = programs.render(catalog, task, baseline=baseline)
        module = programs.load_module(program.source, "accelbench_deviation")
        seed_global(0)
        pipe = module.load(str(synthetic.materialize(catalog.models[task.model], "tiny")), "cpu", torch.float32)
        size = synthetic.tiny_resolution(catalog.models[task.model])
        if tome_seed is not None:
            module.TOME_SEED = tome_seed
        torch.set_num_threads(threads)
        try:
            batches = [[i] for i in range(len(PROMPTS))] if split else [list(range(len(PROMPTS)))]
            out = []
            for batch in batches:
                seed_global(0)
                out.append(to_uint8(np.asarray(module.generate(
                    pipe, [PROMPTS[i] for i in batch], make_generators([SEEDS[i] for i in batch]),
                    height=size, width=size), dtype=np.float32).copy()))
            return np.concatenate(out)
        finally:
            torch.set_num_threads(2)

    rows = []
    for task in tasks:
        started = time.perf_counter()
        gt = images(task)
        row = {"task": task.id, "method": task.method,
               "batch_size": psnr(images(task, split=True), gt),  # batch 1 vs batch 4
               "threads": psnr(images(task, threads=1), gt),
               "no_acceleration": psnr(images(task, baseline=True), gt)}
        if task.method == "tome" and task.params.get("use_rand"):
            row["tome_seed"] = psnr(images(task, tome_seed=1), gt)
        change = OFF_BY_ONE.get(task.method, {})
        params = dict(task.params)
        for name, delta in change.items():
            params[name] = type(params[name])(round(params[name] + delta, 4))
        if change:
            row["off_by_one"] = psnr(images(dataclasses.replace(task, params=params)), gt)
            row["off_by_one_params"] = {name: params[name] for name in change}
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print_targets("each method's deviation threshold is below every honest variation", threshold_targets(catalog, rows))
    if args.out:
        with open(args.out, "w") as handle:
            def strict(value):  # JSON has no infinity: identical images (PSNR inf) as the string "inf"
                return "inf" if isinstance(value, float) and math.isinf(value) else value

            json.dump({"torch": torch.__version__, "device": "cpu", "dtype": "float32", "weights": "tiny",
                       "prompts": len(PROMPTS), "rows": [{k: strict(v) for k, v in r.items()} for r in rows]},
                      handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
