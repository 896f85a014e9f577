"""Pool the paired rounds of several bench_generate.py runs into one table.

A launch-bound family (SD1.5 on a 16-core VM) varies 9-18 % from batch to batch, so one 10-minute call's 16
rounds leave the harness-vs-bare comparison with CIs of +-5-8 %. Runs of the same family, batch size and
methods, each paired (harness and bare loop in the same rounds), can be pooled: their rounds are concatenated
and every ratio is recomputed with bench_generate.py's own statistics, the CIs resampling rounds.

Rounds of one run share its processes and its machine, and runs of one condition have disagreed by more than
their CIs over rounds (bench/README.md section 1.2). A second table takes the run as the unit: each run's summed
latencies, resampled together (a cluster bootstrap), with every run's own figure beside it.

``--control`` takes runs of ``bench_generate.py --bare-vs-bare`` (a second bare loop in the harness's place, no
harness at all) and sets the harness's figures against theirs, runs as the unit: what a paired run reads when
nothing but the machine and the bench's own structure differ between the two sides.

    python bench/pool_runs.py bench/results/generate-sd15-h200-run8-bare-per-method.json \\
        bench/results/generate-sd15-h200-run9-bare-per-method-cores2-15.json
    cd bench/results && python ../pool_runs.py generate-sd15-h200-run1[68]-*.json generate-sd15-h200-run21.json \\
        --control generate-sd15-h200-run19-*.json generate-sd15-h200-run20-*.json
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


def runs_as_unit(runs: list[dict], methods: list[str]) -> dict[str, np.ndarray]:
    """Per figure ("throughput" and each method), the runs' summed latencies as columns: one row per run."""
    sums = [run_sums(run, methods) for run in runs]
    return {"throughput": np.array([run["all"] for run in sums]).T,
            **{method: np.array([run[method] for run in sums]).T for method in methods[1:]}}


def figure(name: str):
    """(the statistic of a figure over run sums, vectorised over the last axis; its label; its printed scale,
    format and unit)."""
    from accelbench.scorer.functional import ratio_of_sums

    if name == "throughput":
        return ratio_of_sums, "throughput vs bare", 1, ".3f", ""
    return speedup_difference, f"{name} speedup vs bare", 100, "+.1f", " %"


def print_runs_as_unit(names: list[str], runs: list[dict], methods: list[str]) -> None:
    """Throughput and speedup differences with the run as the resampling unit, and each run's own figures."""
    print(f"\nruns as the unit (n = {len(runs)} runs; CIs resample runs, each with its rounds' summed latencies)")
    for name, columns in runs_as_unit(runs, methods).items():
        statistic, label, scale, spec, unit = figure(name)
        point, low, high = with_ci(statistic, *columns)
        per_run = statistic(*columns[:, :, None])  # each run alone: its sums over an axis of one
        print(f"{label:<32} {scale * point:{spec}}{unit} {interval((low, high), spec, scale)}   per run: "
              + " ".join(f"{scale * value:{spec}}" for value in per_run))
    print("  runs: " + ", ".join(names))


def two_group_ci(statistic, first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """95 % bootstrap CI of ``statistic(first) - statistic(second)``, runs resampled within each group.

    ``first`` and ``second``: run sums, one column per run. The two groups are independent; the columns of one
    run stay together. Below the scorer's minimum number of runs in either group: (nan, nan)."""
    from accelbench.scorer import functional

    if min(first.shape[-1], second.shape[-1]) < functional.MIN_CI_UNITS:
        return float("nan"), float("nan")

    def difference(first_runs, second_runs, axis=-1):  # resampled run indices of each group
        return statistic(*first[:, first_runs.astype(int)]) - statistic(*second[:, second_runs.astype(int)])

    return functional.bootstrap_ci(difference, np.arange(first.shape[-1]), np.arange(second.shape[-1]),
                                   paired=False)


def print_against_control(runs: list[dict], controls: list[dict], methods: list[str]) -> None:
    """Each figure of the harness's runs beside the control's (bare against bare), and their difference."""
    print(f"\nthe harness against the control (a second bare loop in the harness's place), runs as the unit: "
          f"harness n = {len(runs)} runs, control n = {len(controls)} runs; the CI resamples runs in each group")
    harness, control = runs_as_unit(runs, methods), runs_as_unit(controls, methods)
    for name in harness:
        statistic, label, scale, spec, unit = figure(name)
        ours, theirs = float(statistic(*harness[name])), float(statistic(*control[name]))
        low, high = two_group_ci(statistic, harness[name], control[name])
        signed = "+" + spec.lstrip("+")
        print(f"{label:<32} harness {scale * ours:{spec}}{unit}   control {scale * theirs:{spec}}{unit}   "
              f"difference {scale * (ours - theirs):{signed}}{unit} {interval((low, high), signed, scale)}")


def read_runs(paths: list[Path], family: str | None, parser) -> tuple[str, list[dict], list[dict]]:
    """(the family, the reports, their paired rounds), or the parser's error for runs that cannot be pooled."""
    try:
        reports = [json.loads(path.read_text()) for path in paths]
    except (OSError, json.JSONDecodeError) as error:
        parser.error(f"cannot read a run: {error}")
    families = set.intersection(*(set(report.get("families", {})) for report in reports))
    family = family or (families.pop() if len(families) == 1 else None)
    if family is None:
        parser.error(f"--family: the runs share {sorted(families) or 'no family'}")
    for key in ("batch_size", "device", "weights"):
        if len({report.get(key) for report in reports}) != 1:
            parser.error(f"the runs differ in {key}: {sorted({str(report.get(key)) for report in reports})}")
    try:
        runs = [paired_rounds(report, family, path) for report, path in zip(reports, paths)]
    except ValueError as error:
        parser.error(str(error))
    if any(list(run[HARNESS]) != list(runs[0][HARNESS]) for run in runs):
        parser.error("the runs measured different methods")
    return family, reports, runs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="bench_generate.py JSON results with a paired pass")
    parser.add_argument("--family", help="default: the one family the runs share")
    parser.add_argument("--control", nargs="+", type=Path, default=[], metavar="RUN",
                        help="runs of bench_generate.py --bare-vs-bare to set the runs against (runs as the unit)")
    args = parser.parse_args()
    # One read of runs and controls together: they must share the family, batch size, device, weights, methods.
    family, reports, runs = read_runs(args.runs + args.control, args.family, parser)
    for path, report in zip(args.control, reports[len(args.runs):]):
        if not report.get("options", {}).get("bare_vs_bare"):
            parser.error(f"--control: {path.name} is not a --bare-vs-bare run")
    reports, runs, controls = reports[:len(args.runs)], runs[:len(args.runs)], runs[len(args.runs):]
    methods = list(runs[0][HARNESS])
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
    if args.control:
        print_against_control(runs, controls, methods)


if __name__ == "__main__":
    main()
