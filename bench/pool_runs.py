"""Pool the paired rounds of several bench_generate.py runs into one table.

A launch-bound family (SD1.5 on a 16-core VM) varies 9-18 % from batch to batch, so one 10-minute call's 16
rounds leave the harness-vs-bare comparison with CIs of +-5-8 %. Runs of the same family, batch size and
methods, each paired (harness and bare loop in the same rounds), can be pooled: their rounds are concatenated
and every ratio is recomputed with bench_generate.py's own statistics, the CIs resampling rounds.

    python bench/pool_runs.py bench/results/generate-sd15-h200-run8-bare-per-method.json \\
        bench/results/generate-sd15-h200-run9-bare-per-method-cores2-15.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generate import PAIRED_BARE as BARE  # noqa: E402
from bench_generate import PAIRED_HARNESS as HARNESS  # noqa: E402
from bench_generate import pooled, pooled_throughput_ratio, print_table, summarize  # noqa: E402

SLOW = 1.15  # a batch is slow above this multiple of its lane's 10th percentile (the lane's unhurried speed)


def floor_and_slow_share(latencies) -> tuple[float, float]:
    """(the 10th percentile of a lane's batch latencies, the share of its batches slower than SLOW x that)."""
    values = np.asarray(latencies, float)
    floor = float(np.percentile(values, 10))
    return floor, float(np.mean(values > SLOW * floor))


def paired_rounds(report: dict, family: str, path: Path) -> dict[str, dict[str, dict[str, list[float]]]]:
    """mode -> method -> this run's latencies and its rounds' baseline latencies."""
    rows = report.get("families", {}).get(family, {}).get("rows", [])
    rounds = {mode: {row["method"]: {"latencies": row["batch_latencies_s"],
                                     "baseline_latencies": row["baseline_latencies_s"]}
                     for row in rows if row["mode"] == mode} for mode in (HARNESS, BARE)}
    if not rounds[HARNESS] or rounds[HARNESS].keys() != rounds[BARE].keys():
        raise ValueError(f"{path}: no paired pass of {family} with the same methods in harness and bare loop")
    return rounds


def first_in_rounds(report: dict, family: str) -> list[str]:
    """Which loop rendered first in each paired round (runs before --paired-order: the bare loop, always)."""
    entry = report["families"][family]
    rounds = len(next(row for row in entry["rows"] if row["mode"] == HARNESS)["batch_latencies_s"])
    return entry.get("paired_first") or [BARE] * rounds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="bench_generate.py JSON results with a paired pass")
    parser.add_argument("--family", help="default: the one family the runs share")
    args = parser.parse_args()
    try:
        reports = [json.loads(path.read_text()) for path in args.runs]
    except (OSError, json.JSONDecodeError) as error:
        parser.error(f"cannot read a run: {error}")
    families = set.intersection(*(set(report.get("families", {})) for report in reports))
    family = args.family or (families.pop() if len(families) == 1 else None)
    if family is None:
        parser.error(f"--family: the runs share {sorted(families) or 'no family'}")
    for key in ("batch_size", "device", "weights"):
        if len({report.get(key) for report in reports}) != 1:
            parser.error(f"the runs differ in {key}: {sorted({str(report.get(key)) for report in reports})}")
    try:
        runs = [paired_rounds(report, family, path) for report, path in zip(reports, args.runs)]
    except ValueError as error:
        parser.error(str(error))
    methods = list(runs[0][HARNESS])
    if any(list(run[HARNESS]) != methods for run in runs):
        parser.error("the runs measured different methods")
    harness, bare_loop = (pooled([run[mode] for run in runs]) for mode in (HARNESS, BARE))
    first = [side for report in reports for side in first_in_rounds(report, family)]
    batch_size = reports[0]["batch_size"]
    rows = ([summarize(method, HARNESS, harness[method], bare_loop[method], batch_size, paired=True)
             for method in methods]
            + [summarize(method, BARE, bare_loop[method], bare_loop[method], batch_size) for method in methods])
    print(f"{family}: {len(runs)} runs pooled ({', '.join(path.name for path in args.runs)})")
    recorded = {path.name: report["options"] for path, report in zip(args.runs, reports) if "options" in report}
    for key in sorted({key for options in recorded.values() for key in options}):
        values = {name: options.get(key) for name, options in recorded.items()}
        if len({json.dumps(value) for value in values.values()}) > 1:  # the runs are not one condition: say so
            print(f"  the runs differ in {key}: " + ", ".join(f"{value} ({name})" for name, value in values.items()))
    if 0 < len(recorded) < len(reports):
        print(f"  no options recorded in: {', '.join(p.name for p in args.runs if p.name not in recorded)}")
    print_table(rows, {HARNESS: pooled_throughput_ratio(harness, bare_loop, methods, first)})
    print(f"\nper lane: the harness's 10th-percentile batch latency over bare's, and the share of batches slower "
          f"than {SLOW} x their lane's 10th percentile")
    for method in methods:
        (harness_floor, harness_slow), (bare_floor, bare_slow) = (
            floor_and_slow_share(side[method]["latencies"]) for side in (harness, bare_loop))
        print(f"{method:<16} 10th percentile x{harness_floor / bare_floor:.3f}   slow: harness "
              f"{100 * harness_slow:3.0f} %, bare {100 * bare_slow:3.0f} %")


if __name__ == "__main__":
    main()
