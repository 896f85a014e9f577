"""Pool several bench_generate.py runs: the run as the unit, and generate set against the no-harness control.

Rounds of one run share its processes and its machine, and runs of one condition disagree by more than their
CIs over rounds (docs/investigations/sd15-harness-gap.md): each process keeps a speed offset of its own for as
long as it lives. So the figures that decide the targets take the run as the unit: each run's summed latencies,
resampled together (a cluster bootstrap), with every run's own figure beside it. The table of every run's rounds
concatenated (CIs resampling rounds) comes first, for the detail.

``--control`` takes runs of ``bench_generate.py --control`` (a second bare loop in the harness's place, no harness
at all) and sets generate's figures against theirs, runs as the unit in each group: what is left is the
harness's, not the machine's or the paired measurement's own.

    python bench/pool_runs.py bench/results/generate-sd15-cpu-tiny-paired-threads-left-alone-run*.json
    cd bench/results && python ../pool_runs.py generate-sd15-h200-run1[68]-*.json generate-sd15-h200-run21.json \\
        --control generate-sd15-h200-run19-*.json generate-sd15-h200-run20-*.json

It ends with its targets: throughput >= 0.98 x bare and each speedup within 3 % of bare's, runs as the unit;
with --control, generate minus the control: each speedup difference within 3 % and throughput no more than
0.02 lower. No CI from fewer than five runs in a group: NOT DECIDABLE.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paired_stats import (  # noqa: E402
    BARE,
    HARNESS,
    METHOD_LABELS,
    THROUGHPUT_LIMIT,
    interval,
    paired_rows,
    pooled,
    pooled_throughput_ratio,
    print_table,
    speedup_difference,
    speedup_target,
    throughput_target,
    with_ci,
)
from targets import Target, at_least, percent_within, print_targets, units  # noqa: E402

THROUGHPUT = "throughput"  # the figure of every method's batches together; the others are named by method


class Runs(NamedTuple):
    """Paired runs of one family, batch size, device, weights and method list."""
    names: list[str]
    family: str
    batch_size: int
    methods: list[str]
    sides: list[dict]  # per run: {HARNESS: method -> latencies, BARE: the same}
    first: list[list[str]]  # per run: which side rendered first in each round
    options: dict[str, dict]  # run name -> the options it recorded (runs from before options: absent)
    control: bool  # runs of bench_generate.py --control


def is_control(report: dict) -> bool:
    """A run of ``bench_generate.py --control`` (results before 2026-12 record it as ``bare_vs_bare``)."""
    options = report.get("options", {})
    return bool(options.get("control", options.get("bare_vs_bare")))


def paired_sides(report: dict, family: str, name: str) -> dict[str, dict[str, dict[str, list[float]]]]:
    """side -> method -> this run's latencies and its rounds' baseline latencies."""
    rows = report.get("families", {}).get(family, {}).get("rows", [])
    sides = {mode: {row["method"]: {"latencies": row["batch_latencies_s"],
                                    "baseline_latencies": row["baseline_latencies_s"]}
                    for row in rows if row["mode"] == mode} for mode in (HARNESS, BARE)}
    if not sides[HARNESS] or not sides[HARNESS].keys() <= sides[BARE].keys():
        raise ValueError(f"{name}: no paired pass of {family} with the same methods on both sides")
    return sides


def first_in_rounds(report: dict, family: str, rounds: int) -> list[str]:
    """Which side rendered first in each paired round (runs before the order alternated: the bare loop)."""
    return report["families"][family].get("paired_first") or [BARE] * rounds


def read_runs(paths: list[Path], family: str | None = None) -> Runs:
    """The runs at ``paths``; ValueError for runs that cannot be pooled (or read)."""
    try:
        reports = [json.loads(path.read_text()) for path in paths]
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read a run: {error}") from error
    families = set.intersection(*(set(report.get("families", {})) for report in reports))
    family = family or (families.pop() if len(families) == 1 else None)
    if family is None:
        raise ValueError(f"--family: the runs share {sorted(families) or 'no family'}")
    for key in ("batch_size", "device", "weights"):
        if len({report.get(key) for report in reports}) != 1:
            raise ValueError(f"the runs differ in {key}: {sorted({str(report.get(key)) for report in reports})}")
    if len({is_control(report) for report in reports}) != 1:
        raise ValueError("generate runs and control runs mixed in one group: pass the controls with --control")
    sides = [paired_sides(report, family, path.name) for report, path in zip(reports, paths)]
    methods = list(sides[0][HARNESS])
    if any(list(side[HARNESS]) != methods for side in sides):
        raise ValueError("the runs measured different methods")
    for side in sides:  # a method the harness side lost (e.g. out of memory) is left out of the bare side too
        side[BARE] = {method: side[BARE][method] for method in methods}
    return Runs([path.name for path in paths], family, reports[0]["batch_size"], methods, sides,
                [first_in_rounds(report, family, len(side[HARNESS][methods[0]]["latencies"]))
                 for report, side in zip(reports, sides)],
                {path.name: report["options"] for path, report in zip(paths, reports) if "options" in report},
                is_control(reports[0]))


def rounds_pooled(runs: Runs) -> tuple[list[dict], dict]:
    """Every run's rounds concatenated: the table's rows and the every-method throughput ratio (CIs over rounds)."""
    compared, bare_loop = (pooled([side[mode] for side in runs.sides]) for mode in (HARNESS, BARE))
    first = [name for run_first in runs.first for name in run_first]
    return (paired_rows(compared, bare_loop, runs.methods, runs.batch_size),
            pooled_throughput_ratio(compared, bare_loop, runs.methods, first))


def run_sums(sides: dict, methods: list[str]) -> dict[str, np.ndarray]:
    """One run's summed latencies: per method (side's baseline, side's method, bare baseline, bare method), and
    THROUGHPUT (bare, side: every method's batches)."""
    def total(mode, method, key="latencies"):
        return float(np.sum(sides[mode][method][key]))

    sums = {method: np.array([total(HARNESS, method, "baseline_latencies"), total(HARNESS, method),
                              total(BARE, method, "baseline_latencies"), total(BARE, method)])
            for method in methods[1:]}
    return {THROUGHPUT: np.array([sum(total(BARE, method) for method in methods),
                                  sum(total(HARNESS, method) for method in methods)]), **sums}


def runs_as_unit(runs: Runs) -> dict[str, np.ndarray]:
    """Per figure, the runs' summed latencies as columns: one row per run."""
    sums = [run_sums(sides, runs.methods) for sides in runs.sides]
    return {name: np.array([run[name] for run in sums]).T for name in sums[0]}


def statistic_of(name: str):
    """A figure's statistic over run sums, vectorised over the last axis."""
    from accelbench.scorer.functional import ratio_of_sums

    return ratio_of_sums if name == THROUGHPUT else speedup_difference


class Figure(NamedTuple):
    value: float
    ci: tuple[float, float]
    per_run: list[float]


def per_run_figures(runs: Runs) -> dict[str, Figure]:
    """Throughput and each method's speedup difference, runs as the unit, with every run's own figure."""
    figures = {}
    for name, columns in runs_as_unit(runs).items():
        statistic = statistic_of(name)
        point, low, high = with_ci(statistic, *columns)
        figures[name] = Figure(point, (low, high), [float(x) for x in statistic(*columns[:, :, None])])
    return figures


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


class Difference(NamedTuple):
    generate: float
    control: float
    value: float
    ci: tuple[float, float]


def against_control(runs: Runs, controls: Runs) -> dict[str, Difference]:
    """Each figure of generate's runs, the control's, and generate minus the control (CI resampling runs in each
    group)."""
    ours, theirs = runs_as_unit(runs), runs_as_unit(controls)
    differences = {}
    for name in ours:
        statistic = statistic_of(name)
        generate, control = float(statistic(*ours[name])), float(statistic(*theirs[name]))
        differences[name] = Difference(generate, control, generate - control,
                                       two_group_ci(statistic, ours[name], theirs[name]))
    return differences


def figure_label(name: str) -> str:
    return "throughput vs bare" if name == THROUGHPUT else f"{METHOD_LABELS[name]} speedup vs bare's"


def figure_text(name: str, value: float, ci=None, signed=False) -> str:
    """A figure as printed: a ratio to three places, a speedup difference in percent."""
    spec, scale, unit = (("+.3f" if signed else ".3f"), 1, "") if name == THROUGHPUT else ("+.1f", 100, " %")
    return f"{scale * value:{spec}}{unit}" + ("" if ci is None else " " + interval(ci, spec, scale))


def pooled_targets(runs: Runs, controls: Runs | None = None) -> list[Target]:
    """The targets over runs: runs as the unit; with ``controls``, generate minus the control too."""
    figures, n = per_run_figures(runs), units(len(runs.names), "run")
    targets = [throughput_target(figures[THROUGHPUT].value, figures[THROUGHPUT].ci, n)]
    targets += [speedup_target(name, figure.value, figure.ci, n) for name, figure in figures.items()
                if name != THROUGHPUT]
    if controls is not None:
        n = f"{len(runs.names)} + {len(controls.names)} runs"
        for name, difference in against_control(runs, controls).items():
            if name == THROUGHPUT:
                limit = THROUGHPUT_LIMIT - 1
                targets.append(at_least(f"throughput vs bare, generate − control >= {limit:+.2f}", limit,
                                        difference.value, difference.ci, n, spec="+.3f"))
            else:
                targets.append(percent_within(f"{METHOD_LABELS[name]} speedup vs bare's, generate − control "
                                              f"within ±3 %", 0.03, difference.value, difference.ci, n))
    return targets


def print_options_that_differ(runs: Runs) -> None:
    """The recorded options in which the runs differ: pooled runs that are not one condition say so."""
    for key in sorted({key for options in runs.options.values() for key in options}):
        values = {name: options.get(key) for name, options in runs.options.items()}
        if len({json.dumps(value) for value in values.values()}) > 1:
            print(f"  the runs differ in {key}: " + ", ".join(f"{value} ({name})" for name, value in values.items()))
    if 0 < len(runs.options) < len(runs.names):
        print(f"  no options recorded in: {', '.join(name for name in runs.names if name not in runs.options)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="bench_generate.py JSON results")
    parser.add_argument("--family", help="default: the one family the runs share")
    parser.add_argument("--control", nargs="+", type=Path, default=[], metavar="RUN",
                        help="runs of bench_generate.py --control to set the runs against (runs as the unit)")
    args = parser.parse_args()
    try:
        runs = read_runs(args.runs, args.family)
        controls = read_runs(args.control, runs.family) if args.control else None
    except ValueError as error:
        parser.error(str(error))
    if controls is not None:
        if runs.control or not controls.control:
            parser.error("--control: the runs must be generate runs and the controls bench_generate.py --control runs")
        for key in ("batch_size", "methods"):
            if getattr(runs, key) != getattr(controls, key):
                parser.error(f"--control: the controls differ from the runs in {key}")
    side = "control" if runs.control else "harness"
    print(f"{runs.family}: {len(runs.names)} {side} runs pooled ({', '.join(runs.names)})")
    print_options_that_differ(runs)
    print_table(*rounds_pooled(runs), side)
    print(f"\nruns as the unit (n = {len(runs.names)} runs; CIs resample runs, each with its rounds' summed latencies)")
    for name, figure in per_run_figures(runs).items():
        print(f"{figure_label(name):<36} {figure_text(name, figure.value, figure.ci):<28} per run: "
              + " ".join(figure_text(name, value) for value in figure.per_run))
    if controls is not None:
        print(f"\ngenerate against the control (a second bare loop in the harness's place), runs as the unit: "
              f"generate n = {len(runs.names)} runs, control n = {len(controls.names)} runs "
              f"({', '.join(controls.names)}); the CI resamples runs in each group")
        for name, difference in against_control(runs, controls).items():
            print(f"{figure_label(name):<36} generate {figure_text(name, difference.generate)}   control "
                  f"{figure_text(name, difference.control)}   difference "
                  f"{figure_text(name, difference.value, difference.ci, signed=True)}")
    print_targets(f"{runs.family}, {side} runs, the run as the unit", pooled_targets(runs, controls))


if __name__ == "__main__":
    main()
