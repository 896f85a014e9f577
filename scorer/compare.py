"""``accelbench compare DIR A B``: two entries of a scored dataset's leaderboard (submissions, or the GT), task by
task and overall.

* **Per task** where both have ok batches: the ratio of their speedups over the batches both have (the same
  repeat and batch key: the same prompts in the same round, each side against its own recorded baseline
  latency), with its CI over those batches (:func:`accelbench.scorer.functional.estimate_over_repeats`:
  two-level from ``functional.MIN_CI_REPEATS`` repeats, else over batches, which covers one run's rounds only),
  beside each side's speedup and whether it solved the task (``leaderboard_tasks.csv``).
* **Overall**: :func:`accelbench.scorer.ranking.compare` over the tasks both solved, the line
  ``leaderboard_pairs.csv`` holds for the pair, with its verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from accelbench import schema
from accelbench.errors import UserInputError
from accelbench.scorer import aggregate, functional, leaderboard_files, markdown, pairing, ranking
from accelbench.scorer.leaderboard import SPEEDUP_FLOOR


class CompareError(UserInputError):
    """Entries that are not on the dataset's leaderboard, as one line."""


@dataclass
class Comparison:
    first: str  # entry names: a submission's, or 'gt'
    second: str
    tasks: list[dict]  # per task: speedups, correct, speedup_ratio with its CI, n and repeats, verdict
    overall: dict  # ranking.compare of the two

    def format(self) -> str:
        a, b = self.first, self.second
        header = ["Task", f"{a} speedup", f"{b} speedup", f"Ratio {a} / {b} [95 % CI]", "Verdict",
                  f"Correct ({a} / {b})"]
        cells = [[f"`{task['task_id']}`", markdown.number(task["speedup_a"], suffix="×"),
                  markdown.number(task["speedup_b"], suffix="×"),
                  markdown.with_ci(task, "speedup_ratio", suffix="×"), task["verdict"],
                  f"{_yes(task['correct_a'])} / {_yes(task['correct_b'])}"] for task in self.tasks]
        overall = self.overall
        ratio = markdown.with_ci({**overall, "speedup_ratio_n": overall["tasks"]}, "speedup_ratio", suffix="×")
        outcome = {schema.VERDICT_FASTER: f"{a} is faster", schema.VERDICT_SLOWER: f"{a} is slower",
                   schema.VERDICT_TIED: "tied: the CI includes 1",
                   schema.VERDICT_NA: f"n/a: a CI needs {functional.MIN_CI_UNITS} tasks both solved"}
        lines = [markdown.table(header, cells), "",
                 f"overall, over the {overall['tasks']} task(s) both solved (geometric mean of the ratios, CI over "
                 f"tasks): {ratio}: {outcome[overall['verdict']]}"]
        if any(task["speedup_ratio_repeats"] < functional.MIN_CI_REPEATS for task in self.tasks
               if task["speedup_ratio_ci_low"] is not None):
            lines.append(f"note: a task's CI from fewer than {functional.MIN_CI_REPEATS} repeats covers the rounds "
                         f"of its run(s) only, not how the ratio moves between runs with fresh worker processes")
        return "\n".join(lines)


def _yes(correct) -> str:
    return "–" if correct is None else "yes" if correct else "no"


def _variant(name: str, variants: set[str], directory: Path) -> str:
    variant = schema.GT if name == schema.GT else schema.submission_variant(schema.submission_name(name))
    if variant not in variants:
        names = ", ".join(sorted(schema.submission_name(found) for found in variants))
        raise CompareError(f"{directory}: no leaderboard entry {name!r} (entries: {names})")
    return variant


def compare_entries(directory: Path, first: str, second: str,
                    n_resamples: int = functional.BOOTSTRAP_RESAMPLES) -> Comparison:
    """The comparison of entries ``first`` and ``second`` (submission names, or ``gt``) of a scored dataset."""
    directory = Path(directory)
    results = leaderboard_files.read_task_results(directory)
    variants = {result["variant"] for result in results}
    variant_a, variant_b = (_variant(name, variants, directory) for name in (first, second))
    if variant_a == variant_b:
        raise CompareError(f"compare takes two different entries, got {first!r} twice")
    rows = aggregate.load_generations(directory)
    baselines: dict[str, list[dict]] = {}
    by_unit: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row["variant"] == schema.BASELINE:
            baselines.setdefault(row["setting_id"], []).append(row)
        elif row["variant"] in (variant_a, variant_b):
            by_unit.setdefault((row["variant"], row["task_id"]), []).append(row)
    found = {(result["variant"], result["task_id"]): result for result in results}
    tasks = []
    for task_id in sorted({result["task_id"] for result in results}):
        result_a, result_b = found.get((variant_a, task_id), {}), found.get((variant_b, task_id), {})
        rows_a, rows_b = by_unit.get((variant_a, task_id), []), by_unit.get((variant_b, task_id), [])
        if not rows_a and not rows_b:
            continue
        base = baselines.get((rows_a or rows_b)[0]["setting_id"], [])
        pairs_a, pairs_b = pairing.paired_latencies(rows_a, base), pairing.paired_latencies(rows_b, base)
        both = pairing.by_repeat({key: (*pairs_a[key], *pairs_b[key]) for key in pairs_a.keys() & pairs_b.keys()})
        value, low, high, n, repeats = functional.estimate_over_repeats(functional.speedup_ratio, both,
                                                                        n_resamples)
        tasks.append({"task_id": task_id, "speedup_a": result_a.get("speedup"), "speedup_b": result_b.get("speedup"),
                      "correct_a": result_a.get("correct"), "correct_b": result_b.get("correct"),
                      "speedup_ratio": value, "speedup_ratio_ci_low": low, "speedup_ratio_ci_high": high,
                      "speedup_ratio_n": n, "speedup_ratio_repeats": repeats, "verdict": ranking.verdict(low, high)})
    overall = ranking.compare([r for r in results if r["variant"] == variant_a],
                              [r for r in results if r["variant"] == variant_b], SPEEDUP_FLOOR, n_resamples)
    return Comparison(schema.submission_name(variant_a), schema.submission_name(variant_b), tasks, overall)
