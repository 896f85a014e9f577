"""Which rows are compared with which: the matching rules of fidelity and aggregation, written once.

* An accelerated image (any variant but 'baseline') is compared with the baseline image of its setting that
  has the same prompt, seed and batch size: same initial noise, same batch neighbours.
* A batch is timed once per repeat (a fresh set of worker processes; ``repeat`` null in older datasets: repeat
  0): it is identified by (repeat, seed, batch size, batch index), so the same prompts timed in two repeats are
  two samples. An accelerated batch is compared with the baseline's latency recorded on its own rows
  (``baseline_latency_s``: the baseline batch of the same prompts in the same interleaving round), else with
  the baseline batch of its setting with the same batch key, i.e. the same prompts in the same repeat.
* A submission's image is also compared with the GT image of the same task, prompt, seed and batch size.
* Batch-size drift compares an image generated at batch size > 1 with the same program's image (same unit,
  variant, prompt and seed) at batch size 1.

Only rows with status 'ok' take part. Rows are dicts with the generation columns.
"""

from __future__ import annotations

import math
from typing import TypeVar

from accelbench import schema

Value = TypeVar("Value")


def is_ok(row: dict) -> bool:
    return row["status"] == schema.STATUS_OK


def image_key(row: dict) -> tuple:
    return row["setting_id"], row["prompt_index"], row["seed"], row["batch_size"]


def batch_key(row: dict) -> tuple:
    """(repeat, seed, batch size, batch index): one timed batch; a null repeat (older datasets) is repeat 0."""
    return row["repeat"] or 0, row["seed"], row["batch_size"], row["batch_index"]


def by_repeat(values: dict[tuple, Value]) -> list[list[Value]]:
    """Values keyed by :func:`batch_key`, grouped by their repeat (repeats in order, batches in key order): the
    groups of a two-level bootstrap."""
    groups: dict[int, list[Value]] = {}
    for key in sorted(values):
        groups.setdefault(key[0], []).append(values[key])
    return [groups[repeat] for repeat in sorted(groups)]


def cluster_key(row: dict) -> tuple:
    """The bootstrap's resampling unit of image metrics: one (prompt, seed), whatever the batch size."""
    return row["prompt_index"], row["seed"]


def gt_references(rows: list[dict]) -> list[tuple[dict, dict]]:
    """``(submission row, the GT row of its task)`` with the same prompt, seed and batch size, both ok."""
    def key(row):
        return row["task_id"], row["prompt_index"], row["seed"], row["batch_size"]

    gts = {key(row): row for row in rows if row["variant"] == schema.GT and is_ok(row)}
    return [(row, gts[key(row)]) for row in rows
            if schema.is_submission(row["variant"]) and is_ok(row) and key(row) in gts]


def baseline_references(rows: list[dict]) -> list[tuple[dict, dict]]:
    """``(accelerated row, its baseline row)`` for every ok accelerated row whose baseline image is ok."""
    baselines = {image_key(row): row for row in rows if row["variant"] == schema.BASELINE and is_ok(row)}
    return [(row, baselines[image_key(row)]) for row in rows
            if row["variant"] != schema.BASELINE and is_ok(row) and image_key(row) in baselines]


def drift_references(rows: list[dict]) -> list[tuple[dict, dict]]:
    """``(row at batch size > 1, the same image at batch size 1)`` where both are ok."""
    def key(row):
        return row["variant"], row["unit_id"], row["prompt_index"], row["seed"]

    singles = {key(row): row for row in rows if row["batch_size"] == 1 and is_ok(row)}
    return [(row, singles[key(row)]) for row in rows
            if row["batch_size"] > 1 and is_ok(row) and key(row) in singles]


def paired_latencies(rows: list[dict], base_rows: list[dict], column: str = "batch_latency_s"
                     ) -> dict[tuple, tuple[float, float]]:
    """:func:`batch_key` -> ``(baseline value, variant value)`` per ok variant batch, the speedup's paired samples.

    For ``batch_latency_s`` the baseline value is the row's own ``baseline_latency_s`` (the baseline batch of
    the same prompts in the same round) where it is recorded, else the baseline batch with the same
    :func:`batch_key` among ``base_rows``. ``denoise_s`` has no per-row reference: always matched by batch key.
    Batches without a finite value on either side are left out."""
    variant = batch_values(rows, column)
    base = batch_values(base_rows, column)
    recorded = batch_values(rows, "baseline_latency_s") if column == "batch_latency_s" else {}
    pairs = {}
    for key in sorted(variant):
        reference = recorded.get(key, base.get(key))
        if reference is not None:
            pairs[key] = (reference, variant[key])
    return pairs


def batch_values(rows: list[dict], column: str) -> dict[tuple, float]:
    """One value of a per-batch column (``batch_latency_s``, ``denoise_s``) per ok batch, by :func:`batch_key`.

    Every row of a batch carries the batch's numbers, so the first ok row of each batch is taken; batches
    without a finite value (a timer that did not run) are left out rather than counted as zero."""
    values: dict[tuple, float] = {}
    for row in rows:
        value = row[column]
        if is_ok(row) and value is not None and math.isfinite(value):
            values.setdefault(batch_key(row), value)
    return values
