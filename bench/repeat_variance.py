"""How much of a speedup's scatter lies between repeats (fresh sets of worker processes) rather than between the
rounds of one repeat, from a dataset made with ``accelbench generate --repeats K``.

Per task, variant and batch size: each repeat's speedup (its summed baseline latencies over its summed own, same
rounds), the pooled speedup, and the variance components of the per-round log speedup by one-way ANOVA with the
repeat as the group (method of moments, the between component floored at 0): between-repeat share =
var_between / (var_between + var_within). With K = 3 the share is itself uncertain; it says whether repeats add
scatter a run's own rounds do not show, which decides how many repeats a comparison needs (README, Score).

    python bench/repeat_variance.py DIR [--out results.json]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def components(groups: list[np.ndarray]) -> tuple[float, float]:
    """(between, within) variance components of one-way ANOVA over ``groups`` (unequal sizes allowed)."""
    sizes = np.array([len(group) for group in groups], float)
    means = np.array([group.mean() for group in groups])
    grand = np.concatenate(groups).mean()
    k, n = len(groups), sizes.sum()
    within = sum(((group - group.mean()) ** 2).sum() for group in groups) / (n - k)
    between_mean_square = (sizes * (means - grand) ** 2).sum() / (k - 1)
    n0 = (n - (sizes ** 2).sum() / n) / (k - 1)  # the effective group size
    return max(0.0, (between_mean_square - within) / n0), float(within)


COLUMNS = ["variant", "task_id", "status", "batch_size", "repeat", "round", "batch_latency_s", "baseline_latency_s"]


def variance_table(rows: list[dict]) -> list[dict]:
    """One entry per (task, variant, batch size) of the timed ``rows`` (dicts with :data:`COLUMNS`)."""
    from accelbench import schema

    batches: dict[tuple, dict[int, dict[int, tuple[float, float]]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        if (row["variant"] == schema.BASELINE or row["status"] != schema.STATUS_OK or row["repeat"] is None
                or not row["baseline_latency_s"]):
            continue
        key = (row["task_id"], row["variant"], row["batch_size"])
        batches[key][row["repeat"]][row["round"]] = (row["baseline_latency_s"], row["batch_latency_s"])
    table = []
    for (task, variant, batch_size), by_repeat in sorted(batches.items()):
        per_repeat = {repeat: np.array(list(rounds.values())) for repeat, rounds in sorted(by_repeat.items())}
        speedups = {repeat: float(pairs[:, 0].sum() / pairs[:, 1].sum()) for repeat, pairs in per_repeat.items()}
        pooled = np.concatenate(list(per_repeat.values()))
        entry = {"task": task, "variant": variant, "batch_size": batch_size, "repeats": len(per_repeat),
                 "rounds": [len(pairs) for pairs in per_repeat.values()], "speedup_per_repeat": speedups,
                 "speedup_pooled": float(pooled[:, 0].sum() / pooled[:, 1].sum()), "between_share": None}
        logs = [np.log(pairs[:, 0] / pairs[:, 1]) for pairs in per_repeat.values()]
        if len(logs) >= 2 and all(len(group) >= 2 for group in logs):
            between, within = components(logs)
            entry.update(between_var=between, within_var=within,
                         between_share=between / (between + within) if between + within > 0 else 0.0)
        table.append(entry)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--out", type=Path, help="write the table as JSON here")
    args = parser.parse_args()
    from accelbench import dataset

    table = variance_table(dataset.read_generations(args.directory, COLUMNS).to_pylist())
    print("| task | variant | bs | speedup per repeat | pooled | between-repeat share | n repeats × rounds |")
    print("|---|---|---|---|---|---|---|")
    for entry in table:
        per = " ".join(f"{value:.3f}" for value in entry["speedup_per_repeat"].values())
        share = "n/a" if entry["between_share"] is None else f"{entry['between_share']:.2f}"
        rounds = "/".join(map(str, entry["rounds"]))
        print(f"| {entry['task']} | {entry['variant']} | {entry['batch_size']} | {per} | "
              f"{entry['speedup_pooled']:.3f}× | {share} | {entry['repeats']} × {rounds} |")
    if args.out:
        args.out.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
