"""The statistics of a paired comparison: one side (the harness, or the control's second bare loop) against the
bare loop, both rendering batch k of every method in round k, so both see the same host state.

Shared by bench_generate.py (one run), pool_runs.py (several) and latest.py (the headline tables). No torch here.
"""

from __future__ import annotations

import statistics

import numpy as np
from targets import Target, at_least, at_most, percent_within, units

HARNESS, BARE = "paired: harness", "paired: bare"  # a paired pass's two sides, as the result files name them
BASELINE = "none"
METHOD_LABELS = {BASELINE: "baseline", "deepcache": "DeepCache", "tome": "ToMe", "tgate": "T-GATE",
                 "deepcache_tgate": "DeepCache+T-GATE", "deepcache_tome": "DeepCache+ToMe", "tome_tgate": "ToMe+T-GATE",
                 "deepcache_tome_tgate": "DeepCache+ToMe+T-GATE"}

THROUGHPUT_LIMIT = 0.98  # the harness's images/s, every method pooled, over the bare loop's
SPEEDUP_BOUND = 0.03  # each method's speedup over the baseline within 3 % of the bare loop's
COST_LIMIT = 0.01  # the harness's own cost per batch (a program that computes nothing) over a bare baseline batch


def as_result(rounds: list[dict[str, float]], methods: list[str]) -> dict[str, dict[str, list[float]]]:
    """Per-round latencies -> per-method results paired with the same round's baseline."""
    return {method: {"latencies": [r[method] for r in rounds], "baseline_latencies": [r[BASELINE] for r in rounds]}
            for method in methods}


def pooled(results: list[dict]) -> dict[str, dict[str, list[float]]]:
    """Several runs' results of one side as one sample: their rounds concatenated."""
    return {method: {"latencies": [x for run in results for x in run[method]["latencies"]],
                     "baseline_latencies": [x for run in results for x in run[method]["baseline_latencies"]]}
            for method in results[0]}


def with_ci(statistic, *samples) -> tuple[float, float, float]:
    """(point, low, high) of ``statistic`` over paired samples; the CI is nan below the scorer's minimum n."""
    from accelbench.scorer import functional

    arrays = [np.asarray(sample, float) for sample in samples]
    point = float(statistic(*arrays))
    if len(arrays[0]) < functional.MIN_CI_UNITS:
        return point, float("nan"), float("nan")
    low, high = functional.bootstrap_ci(statistic, *arrays)
    return point, float(low), float(high)


def speedup_with_ci(baseline, variant) -> tuple[float, float, float]:
    from accelbench.scorer import functional

    return with_ci(functional.ratio_of_sums, baseline, variant)


def speedup_difference(baseline, variant, bare_baseline, bare_variant, axis=-1):
    """The speedup over the bare loop's speedup, minus 1 (vectorised along ``axis``: a bootstrap statistic)."""
    from accelbench.scorer import functional

    return (functional.ratio_of_sums(baseline, variant, axis=axis)
            / functional.ratio_of_sums(bare_baseline, bare_variant, axis=axis) - 1)


def images_per_s(latencies, batch_size: int) -> float:
    return batch_size * len(latencies) / sum(latencies)


def cv(values) -> float:
    return statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else float("nan")


def summarize(method: str, mode: str, result: dict, reference: dict | None, batch_size: int) -> dict:
    """One table row: ``result`` against ``reference``, the bare loop's batches of the same rounds, with CIs
    resampling rounds (the unit both sides share). ``reference`` None: ``result`` is the bare loop itself."""
    speedup, low, high = speedup_with_ci(result["baseline_latencies"], result["latencies"])
    throughput = images_per_s(result["latencies"], batch_size)
    row = {"method": method, "mode": mode, "images_per_s": throughput, "ms_per_image": 1000 / throughput,
           "throughput_ratio_to_bare": 1.0, "throughput_ratio_ci": None, "speedup": speedup, "speedup_ci": [low, high],
           "n_batches": len(result["latencies"]), "speedup_difference_to_bare": 0.0, "speedup_difference_ci": None,
           "cv": cv(result["latencies"]), "batch_latencies_s": result["latencies"],
           "baseline_latencies_s": result["baseline_latencies"]}
    if reference is not None:
        ratio, *ratio_ci = speedup_with_ci(reference["latencies"], result["latencies"])
        difference, *difference_ci = with_ci(speedup_difference, result["baseline_latencies"], result["latencies"],
                                             reference["baseline_latencies"], reference["latencies"])
        row.update(throughput_ratio_to_bare=ratio, throughput_ratio_ci=ratio_ci,
                   speedup_difference_to_bare=difference, speedup_difference_ci=difference_ci)
    return row


def paired_rows(side: dict, bare_loop: dict, methods: list[str], batch_size: int) -> list[dict]:
    """The table of a paired comparison: each method on the compared side, then on the bare loop."""
    return ([summarize(method, HARNESS, side[method], bare_loop[method], batch_size) for method in methods]
            + [summarize(method, BARE, bare_loop[method], None, batch_size) for method in methods])


def pooled_throughput_ratio(side: dict, bare_loop: dict, methods: list[str], first: list[str] | None = None) -> dict:
    """The compared side's throughput over bare's with every method's batches together: the bare loop's summed
    latency of each round over the side's, the CI resampling rounds. ``first``: which side went first in each
    round (HARNESS / BARE); where both did, the ratio of each subset too."""
    compared = np.sum([side[method]["latencies"] for method in methods], axis=0)
    reference = np.sum([bare_loop[method]["latencies"] for method in methods], axis=0)
    ratio, low, high = speedup_with_ci(reference, compared)
    pooled_ratio = {"ratio": ratio, "ci": [low, high], "n_rounds": len(compared)}
    if first is not None and len(set(first)) > 1:
        pooled_ratio["by_first"] = {}
        for name in (BARE, HARNESS):
            rounds = np.asarray(first) == name
            ratio, low, high = speedup_with_ci(reference[rounds], compared[rounds])
            pooled_ratio["by_first"][name] = {"ratio": ratio, "ci": [low, high], "n_rounds": int(rounds.sum())}
    return pooled_ratio


def interval(bounds, spec=".3f", scale=1) -> str:
    """``[low, high]``; "n/a" where too few units gave no CI (nan); "" where none applies (None)."""
    if bounds is None:
        return ""
    low, high = bounds
    return "n/a" if np.isnan(low) else f"[{scale * low:{spec}}, {scale * high:{spec}}]"


def print_table(rows: list[dict], pooled_ratio: dict, compared: str = "harness") -> None:
    """The rows of ``paired_rows`` as a table, then the every-method pooled throughput ratio. ``compared``: what
    the side against the bare loop is (the harness, or the control's second bare loop)."""
    names = {HARNESS: compared, BARE: "bare"}
    print(f"{'method':<23}{'side':<16}{'img/s':>8} {'vs bare [95% CI]':<24}{'speedup [95% CI]':>19}{'n':>4}"
          f"  {'vs bare speedup [95% CI]':<26}{'CV':>6}")
    for row in rows:
        difference = ("–" if row["mode"] == BARE or row["method"] == BASELINE else
                      f"{100 * row['speedup_difference_to_bare']:+.1f}% "
                      + interval(row["speedup_difference_ci"], "+.1f", scale=100))
        print(f"{METHOD_LABELS[row['method']]:<23}{names[row['mode']]:<16}{row['images_per_s']:>8.2f}"
              f"{row['throughput_ratio_to_bare']:>8.3f} {interval(row['throughput_ratio_ci']):<16}"
              f"{row['speedup']:>6.2f}x {interval(row['speedup_ci'], '.2f'):>13}{row['n_batches']:>4}"
              f"  {difference:<26}{100 * row['cv']:>5.1f}%")
    print(f"every method pooled: {pooled_ratio['ratio']:.3f} {interval(pooled_ratio['ci'])} of bare's throughput "
          f"(n = {pooled_ratio['n_rounds']} rounds)")
    for name, subset in pooled_ratio.get("by_first", {}).items():
        print(f"  rounds with the {names[name]} first: {subset['ratio']:.3f} {interval(subset['ci'])} "
              f"(n = {subset['n_rounds']} rounds)")


def throughput_target(ratio: float, ci, n: str) -> Target:
    return at_least(f"throughput vs bare >= {THROUGHPUT_LIMIT}", THROUGHPUT_LIMIT, ratio, tuple(ci), n)


def speedup_target(method: str, difference: float, ci, n: str) -> Target:
    return percent_within(f"{METHOD_LABELS[method]} speedup within ±{100 * SPEEDUP_BOUND:g} % of bare's",
                          SPEEDUP_BOUND, difference, tuple(ci), n)


def run_targets(rows: list[dict], pooled_ratio: dict) -> list[Target]:
    """One run's throughput and speedup targets, CIs over its rounds."""
    targets = [throughput_target(pooled_ratio["ratio"], pooled_ratio["ci"], units(pooled_ratio["n_rounds"], "round"))]
    return targets + [speedup_target(row["method"], row["speedup_difference_to_bare"], row["speedup_difference_ci"],
                                     units(row["n_batches"], "round"))
                      for row in rows if row["mode"] == HARNESS and row["method"] != BASELINE]


def cost_target(overhead: dict, bare_baseline_latencies: list[float]) -> Target:
    """The harness's own cost per batch: its slowest null-program call over the bare loop's median baseline batch
    in the same call. A maximum over every call, so exact: no CI."""
    share = overhead["round_trip_ms_max"] / (1000 * statistics.median(bare_baseline_latencies))
    batch, height, width, _ = overhead["batch"]
    return at_most(f"harness cost per {batch} × {height}×{width} batch <= {100 * COST_LIMIT:g} % of a bare baseline "
                   f"batch (slowest null call)", COST_LIMIT, share, None, units(overhead["repeats"], "call"),
                   scale=100, spec=".2f", unit=" %")
