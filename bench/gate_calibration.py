"""Calibrate the correctness gate's image tolerances: how far a GT program's images move under changes that do
not change the computation (another batch size and position, another torch thread count) and, for ToMe with
``use_rand``, under another seed of tomesd's merge-pattern generator.

Runs in-process on the CPU in float32, on the tiny synthetic models (what ``accelbench check-program`` uses by
default). Prints one line per program and the maxima, and writes them as JSON with ``--out``. Its targets are
the constants it calibrates: the gate's CPU float32 tolerance must cover every program against itself, and
ToMe's own tolerance another merge-pattern seed (tests/test_calibration.py checks the stored results the same
way).

    python bench/gate_calibration.py                       # every GT and baseline program of the catalogue
    python bench/gate_calibration.py --tasks 'sd15-ddim-25-*' --draws 3 --out bench/results/gate_calibration.json

Differences are in uint8 levels (0-255) over all pixels and channels, as the gate measures them.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from targets import at_most, print_targets, units  # noqa: E402


def uint8(images) -> np.ndarray:
    from accelbench.builder.encode import to_uint8

    return to_uint8(np.asarray(images, dtype=np.float32).copy())


def diff(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return int(d.max()), float(d.mean())


def selected_tasks(parser, patterns: str):
    """The catalogue and the tasks that comma-separated ids or glob ``patterns`` select (one selecting none is a
    usage error); library chatter off."""
    from accelbench.builder import programs
    from accelbench.manifest import expand_task_patterns, load_catalog

    catalog = load_catalog()
    programs.quiet_library_output()
    task_ids = expand_task_patterns([p.strip() for p in patterns.split(",") if p.strip()], catalog.tasks,
                                    lambda _, pattern: parser.error(f"--tasks: {pattern!r} matches no task"))
    return catalog, [catalog.tasks[task_id] for task_id in task_ids]


def call_program(module, pipe, size: int, prompts, seeds, *, threads: int, reference_threads: int,
                 tome_seed: int | None = None) -> np.ndarray:
    """One call of a loaded program with ``threads`` torch threads and, for ToMe, merge-pattern seed ``tome_seed``
    (both restored after), its images in uint8."""
    import torch

    from accelbench.builder.seeding import make_generators, seed_global

    torch.set_num_threads(threads)
    if tome_seed is not None:
        module.TOME_SEED = tome_seed
    seed_global(0)
    try:
        return uint8(module.generate(pipe, list(prompts), make_generators(seeds), height=size, width=size))
    finally:
        torch.set_num_threads(reference_threads)
        if tome_seed is not None:
            module.TOME_SEED = 0


def tolerance_targets(catalog, summary: dict, rows: list[dict]) -> list:
    """Each calibrated bound (uint8 levels) against the largest difference measured under it: exact maxima."""
    from accelbench.builder.gate.tolerance import CPU_FP32

    n = units(summary["programs"], "program")
    targets = [at_most(f"CPU float32: max abs difference <= {CPU_FP32.max_abs}", CPU_FP32.max_abs,
                       summary["max_abs"], None, n, spec=".0f"),
               at_most(f"CPU float32: mean abs difference <= {CPU_FP32.mean_abs:g}", CPU_FP32.mean_abs,
                       summary["max_mean_abs"], None, n, spec=".4f")]
    tome, seeded = catalog.methods["tome"].gate_tolerance, units(sum(row["tome_seed"] is not None for row in rows),
                                                                  "program")
    if summary["tome_seed_max_abs"] is not None:
        targets += [at_most(f"ToMe, another merge seed: max abs difference <= {tome.max_abs}", tome.max_abs,
                            summary["tome_seed_max_abs"], None, seeded, spec=".0f"),
                    at_most(f"ToMe, another merge seed: mean abs difference <= {tome.mean_abs:g}", tome.mean_abs,
                            summary["tome_seed_max_mean_abs"], None, seeded, spec=".3f")]
    return targets


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="*", help="comma-separated task id patterns")
    parser.add_argument("--draws", type=int, default=2, help="random (prompts, seeds) draws per program")
    parser.add_argument("--threads", type=int, default=2, help="thread count of the reference runs")
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args(argv)

    import torch

    from accelbench.builder import gate, programs, synthetic
    from accelbench.builder.seeding import seed_global

    catalog, tasks = selected_tasks(parser, args.tasks)
    units, seen = [], set()
    for task in tasks:
        if task.setting_id not in seen:
            seen.add(task.setting_id)
            units.append((task, True))
        units.append((task, False))

    rows = []
    for task, baseline in units:
        program = programs.render(catalog, task, baseline=baseline)
        module = programs.load_module(program.source, "accelbench_calibration")
        seed_global(0)
        pipe = module.load(str(synthetic.materialize(catalog.models[task.model], "tiny")), "cpu", torch.float32)
        size = synthetic.tiny_resolution(catalog.models[task.model])
        tome_rand = not baseline and task.method == "tome" and task.params.get("use_rand")
        started = time.perf_counter()
        run = functools.partial(call_program, module, pipe, size, threads=args.threads,
                                reference_threads=args.threads)

        row = {"program": f"{task.setting_id}.baseline" if baseline else task.id, "batch": [0, 0.0],
               "threads": [0, 0.0], "tome_seed": [0, 0.0] if tome_rand else None}
        for draw in range(args.draws):
            rng = random.Random(f"calibration:{row['program']}:{draw}")
            prompts = rng.sample(gate.PROMPT_POOL, 3)
            seeds = [rng.getrandbits(63) for _ in prompts]
            first = run(prompts[:2], seeds[:2])
            permuted = run(prompts[::-1], seeds[::-1])  # batch 3, the first two images at positions 2 and 1
            one_thread = run(prompts[:2], seeds[:2], threads=1)
            for key, (a, b) in {"batch": (first, permuted[[2, 1]]), "threads": (first, one_thread)}.items():
                m, mean = diff(a, b)
                row[key] = [max(row[key][0], m), max(row[key][1], mean)]
            if tome_rand:
                for tome_seed in (1, 2):
                    m, mean = diff(first, run(prompts[:2], seeds[:2], tome_seed=tome_seed))
                    row["tome_seed"] = [max(row["tome_seed"][0], m), max(row["tome_seed"][1], mean)]
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        print(f"{row['program']:<44} batch max {row['batch'][0]:>2} mean {row['batch'][1]:.4f}  threads max "
              f"{row['threads'][0]:>2} mean {row['threads'][1]:.4f}"
              + (f"  tome seed max {row['tome_seed'][0]:>3} mean {row['tome_seed'][1]:.3f}" if tome_rand else "")
              + f"  ({row['seconds']} s)", flush=True)
        del pipe, module

    summary = {
        "max_abs": max(max(r["batch"][0], r["threads"][0]) for r in rows),
        "max_mean_abs": max(max(r["batch"][1], r["threads"][1]) for r in rows),
        "tome_seed_max_abs": max((r["tome_seed"][0] for r in rows if r["tome_seed"]), default=None),
        "tome_seed_max_mean_abs": max((r["tome_seed"][1] for r in rows if r["tome_seed"]), default=None),
        "torch": torch.__version__, "programs": len(rows), "device": "cpu", "dtype": "float32", "weights": "tiny",
    }
    print(json.dumps(summary))
    print_targets("the gate's tolerances cover what the calibration measured",
                  tolerance_targets(catalog, summary, rows))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"summary": summary, "rows": rows}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
