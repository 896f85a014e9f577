"""Which rows are compared with which: the matching rules of fidelity and aggregation, written once.

* An accelerated image (any variant but 'baseline') is compared with the baseline image of its setting that
  has the same prompt, seed and batch size: same initial noise, same batch neighbours.
* A batch is timed once; an accelerated batch is compared with the baseline batch of its setting with the
  same (seed, batch size, batch index), i.e. the same prompts.
* Batch-size drift compares an image generated at batch size > 1 with the same program's image (same unit,
  variant, prompt and seed) at batch size 1.

Only rows with status 'ok' take part. Rows are dicts with the generation columns.
"""

from __future__ import annotations

import math

from accelbench import schema

BASELINE = "baseline"


def is_ok(row: dict) -> bool:
    return row["status"] == schema.STATUS_OK


def image_key(row: dict) -> tuple:
    return row["setting_id"], row["prompt_index"], row["seed"], row["batch_size"]


def batch_key(row: dict) -> tuple:
    return row["seed"], row["batch_size"], row["batch_index"]


def baseline_references(rows: list[dict]) -> list[tuple[dict, dict]]:
    """``(accelerated row, its baseline row)`` for every ok accelerated row whose baseline image is ok."""
    baselines = {image_key(row): row for row in rows if row["variant"] == BASELINE and is_ok(row)}
    return [(row, baselines[image_key(row)]) for row in rows
            if row["variant"] != BASELINE and is_ok(row) and image_key(row) in baselines]


def drift_references(rows: list[dict]) -> list[tuple[dict, dict]]:
    """``(row at batch size > 1, the same image at batch size 1)`` where both are ok."""
    def key(row):
        return row["variant"], row["unit_id"], row["prompt_index"], row["seed"]

    singles = {key(row): row for row in rows if row["batch_size"] == 1 and is_ok(row)}
    return [(row, singles[key(row)]) for row in rows
            if row["batch_size"] > 1 and is_ok(row) and key(row) in singles]


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
