"""Ties called ties: a paired comparison of every two leaderboard entries (the GT among them), and each
submission's rank range.

* **A pair** is compared on the acceleration tasks both solved (correct, with a speedup): per task the log of the
  ratio of their speedups (each at least the leaderboard's speedup floor), over those tasks the mean, reported as a
  geometric-mean speedup ratio with a 95 % bootstrap CI over the tasks (from ``functional.MIN_CI_UNITS`` tasks;
  the expanded percentile interval, :func:`functional.expanded_confidence_level`: a plain one called identical
  programs compared on 5-10 tasks apart 10-15 % of the time in a seeded simulation, this one 6-8 %). The
  verdict is ``faster`` or ``slower`` where that CI excludes a ratio of 1, ``tied`` where it includes it,
  ``n/a`` with too few tasks for a CI. A task's ratio carries its timing noise, so the spread over tasks
  includes it (each task's programs run in worker processes of their own); per task, ``accelbench compare``
  gives the ratio's own CI from the batches.
* **Separated**: two entries whose numbers of correct tasks differ (decided by the gate and the rows'
  statuses, not by timing noise) or whose verdict is faster or slower. Any other pair (tied, or n/a) is
  consistent with either order: each is in the other's ``tied_with``.
* **Rank** (submissions only; the GT is the reference): the position in the leaderboard's order. **Rank
  range**: the ranks consistent with the pairs that are not separated, counting those that are, as Chatbot
  Arena's upper bound counts the models statistically better than one: ``rank_low`` = 1 + the submissions
  above it that are separated from it, ``rank_high`` = its rank + the submissions below it that are not. Two
  identical programs come out tied, with overlapping ranges; one faster on every task by more than the noise
  comes out separated from the rest, its range one rank wide.
"""

from __future__ import annotations

import math

import numpy as np

from accelbench import schema
from accelbench.manifest import PIPELINE_LEVEL
from accelbench.scorer import functional


def log_speedup_ratios(results_a: list[dict], results_b: list[dict], floor: float) -> dict[str, float]:
    """task -> log(speedup of A / speedup of B) over the acceleration tasks both solved with a speedup, each speedup
    at least ``floor`` (so one degenerate timing cannot dominate the mean). Pipeline tasks (level 1) ask for no
    speed: their ratios, about 1 by design, would only pull every comparison towards a tie."""
    def solved(results):
        return {result["task_id"]: max(result["speedup"], floor) for result in results
                if result["correct"] and result["speedup"] is not None and result.get("level") != PIPELINE_LEVEL}

    a, b = solved(results_a), solved(results_b)
    return {task: math.log(a[task] / b[task]) for task in sorted(a.keys() & b.keys())}


def verdict(low: float | None, high: float | None) -> str:
    """faster / slower (A against B) where the CI of their speedup ratio excludes 1, tied where it includes it,
    n/a without a CI.

    Example:
        >>> verdict(1.05, 1.2), verdict(0.8, 0.99), verdict(0.9, 1.1), verdict(None, None)
        ('faster', 'slower', 'tied', 'n/a')
    """
    if low is None or high is None:
        return schema.VERDICT_NA
    return schema.VERDICT_FASTER if low > 1 else schema.VERDICT_SLOWER if high < 1 else schema.VERDICT_TIED


def compare(results_a: list[dict], results_b: list[dict], floor: float,
            n_resamples: int = functional.BOOTSTRAP_RESAMPLES) -> dict:
    """The comparison of two entries' task results: ``tasks`` (both solved), ``speedup_ratio`` (geometric mean of
    A's speedup / B's over them), its CI (bootstrap over those tasks; null from fewer than MIN_CI_UNITS) and the
    ``verdict``."""
    logs = np.array(list(log_speedup_ratios(results_a, results_b, floor).values()), dtype=np.float64)
    low = high = None
    if len(logs) >= functional.MIN_CI_UNITS:
        # Expanded: a plain percentile interval from 5-10 tasks called identical programs apart 10-15 % of the time.
        level = functional.expanded_confidence_level(functional.CONFIDENCE_LEVEL, len(logs))
        low, high = np.exp(functional.bootstrap_ci(functional.mean, logs, confidence_level=level,
                                                   n_resamples=n_resamples)).tolist()
    return {"tasks": len(logs), "speedup_ratio": math.exp(logs.mean()) if len(logs) else None,
            "speedup_ratio_ci_low": low, "speedup_ratio_ci_high": high, "verdict": verdict(low, high)}


def rank(rows: list[dict], results: list[dict], floor: float,
         n_resamples: int = functional.BOOTSTRAP_RESAMPLES) -> list[dict]:
    """Fill ``rank``, ``rank_low``, ``rank_high`` and ``tied_with`` into the leaderboard ``rows`` (in the
    leaderboard's order, the GT first) from the task ``results``; return one LEADERBOARD_PAIR_COLUMNS row per
    pair, the entry above first."""
    by_variant: dict[str, list[dict]] = {}
    for result in results:
        by_variant.setdefault(result["variant"], []).append(result)
    pairs, separated = [], set()
    for index, first in enumerate(rows):
        for second in rows[index + 1:]:
            found = compare(by_variant.get(first["variant"], []), by_variant.get(second["variant"], []), floor,
                            n_resamples)
            apart = first["correct"] != second["correct"] or found["verdict"] in (schema.VERDICT_FASTER,
                                                                                 schema.VERDICT_SLOWER)
            if apart:
                separated |= {(first["variant"], second["variant"]), (second["variant"], first["variant"])}
            pairs.append({"submission": first["submission"], "other": second["submission"],
                          "variant": first["variant"], "other_variant": second["variant"], **found,
                          "correct": first["correct"], "other_correct": second["correct"], "separated": apart})
    ranked = [row for row in rows if not row["reference"]]
    for row in rows:
        row["tied_with"] = ";".join(other["submission"] for other in rows if other is not row
                                    and (row["variant"], other["variant"]) not in separated) or None
    for position, row in enumerate(ranked, start=1):
        above, below = ranked[:position - 1], ranked[position:]
        row["rank"] = position
        row["rank_low"] = 1 + sum((other["variant"], row["variant"]) in separated for other in above)
        row["rank_high"] = position + sum((row["variant"], other["variant"]) not in separated for other in below)
    return pairs
