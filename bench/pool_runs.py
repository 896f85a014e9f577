"""Pool the paired rounds of several bench_generate.py runs into one table.

A launch-bound family (SD1.5 on a 16-core VM) varies 9-18 % from batch to batch, so one 10-minute call's 16
rounds leave the harness-vs-bare comparison with CIs of +-5-8 %. Runs of the same family, batch size and
methods, each paired (harness and bare loop in the same rounds), can be pooled: their rounds are concatenated
and every ratio is recomputed with bench_generate.py's own statistics, the CIs resampling rounds.

Rounds of one run share its processes and its machine, and runs of one condition have disagreed by more than
their CIs over rounds (bench/README.md section 1.2). A second table takes the run as the unit: each run's summed
latencies, resampled together (a cluster bootstrap), with every run's own figure beside it.

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
from bench_generate import pooled, pooled_throughput_ratio, print_table, speedup_difference  # noqa: E402
from bench_generate import interval, summarize, with_ci  # noqa: E402

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


def run_sums(run: dict, methods: list[str]) -> dict[str, np.ndarray]:
    """One run's summed latencies: per method (harness baseline, harness method, bare baseline, bare method),
    and "all" (bare, harness: every method's batches)."""
    def total(mode, method, key="latencies"):
        return float(np.sum(run[mode][method][key]))

    sums = {method: np.array([total(HARNESS, method, "baseline_latencies"), total(HARNESS, method),
                              total(BARE, method, "baseline_latencies"), total(BARE, method)])
            for method in methods}
    sums["all"] = np.array([sum(total(BARE, method) for method in methods),
                            sum(total(HARNESS, method) for method in methods)])
    return sums


def print_runs_as_unit(names: list[str], runs: list[dict], methods: list[str]) -> None:
    """Throughput and speedup differences with the run as the resampling unit, and each run's own figures."""
    from accelbench.scorer.functional import ratio_of_sums

    sums = [run_sums(run, methods) for run in runs]
    print(f"\nruns as the unit (n = {len(runs)} runs; CIs resample runs, each with its rounds' summed latencies)")
    every = np.array([run["all"] for run in sums]).T
    ratio, low, high = with_ci(ratio_of_sums, *every)
    print(f"{'throughput vs bare':<32} {ratio:.3f} {interval((low, high))}   per run: "
          + " ".join(f"{value:.3f}" for value in ratio_of_sums(*every[:, :, None])))
    for method in methods[1:]:
        columns = np.array([run[method] for run in sums]).T
        point, low, high = with_ci(speedup_difference, *columns)
        per_run = speedup_difference(*columns[:, :, None])  # each run alone: its sums over an axis of one
        print(f"{method + ' speedup vs bare':<32} {100 * point:+.1f} % {interval((low, high), '+.1f', 100)}   "
              "per run: " + " ".join(f"{100 * value:+.1f}" for value in per_run))
    print("  runs: " + ", ".join(names))


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
    if len(runs) > 1:
        print_runs_as_unit([path.name for path in args.runs], runs, methods)


if __name__ == "__main__":
    main()
