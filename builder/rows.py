"""Generation rows (``schema.GENERATION_COLUMNS``): the columns one unit shares on every row, and the rows of
one batch with its outcome. Pure data, no I/O."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from accelbench import schema
from accelbench.builder import plan
from accelbench.manifest import BASELINE_METHOD, TARGET_METHOD


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def unit_columns(run_columns: dict, unit: plan.Unit, dtype: str, resolution: int) -> dict:
    """The columns every row of ``unit`` shares, on top of the run's (``run_columns``)."""
    task = unit.task
    if unit.is_baseline:
        method, params = BASELINE_METHOD, {}
    elif task.target is not None and unit.variant != schema.GT:  # a submission's method is its own, unknown
        method, params = TARGET_METHOD, {}
    else:
        method, params = task.method, task.params
    return {**run_columns, "variant": unit.variant, "submission": unit.submission, "unit_id": unit.unit_id,
            "task_id": unit.task_id, "setting_id": task.setting_id,
            "program_sha256": unit.program.sha256 if unit.program is not None else None, "model": task.model,
            "scheduler": task.scheduler, "steps": task.steps,
            "method": method, "method_params": json.dumps(params, sort_keys=True),
            "dtype": dtype, "height": resolution, "width": resolution}


def batch_rows(unit_base: dict, batch: plan.Batch, round_index: int, status: str, error: str | None = None, *,
               reply=None, reference: float | None = None, started_at=None, finished_at=None,
               skip: set[str] = frozenset()) -> list[dict]:
    """The rows of ``batch`` (those whose record id is not in ``skip``): its outcome ``status``/``error`` and,
    for a batch that ran, the timings of ``reply`` (a :class:`~accelbench.builder.worker.Reply`) beside the
    baseline's latency of the same round (``reference``; a baseline row is its own reference)."""
    rows = []
    for image in batch.images:
        if image.record_id in skip:
            continue
        row = schema.empty_row(schema.GENERATION_COLUMNS) | unit_base | {
            "record_id": image.record_id, "prompt_index": image.prompt_index, "prompt": image.prompt,
            "seed": batch.seed, "image_seed": image.image_seed, "batch_size": batch.batch_size,
            "batch_index": batch.batch_index, "position": image.position, "round": round_index, "repeat": batch.repeat,
            "status": status,
            "error": error, "started_at": started_at, "finished_at": finished_at,
        }
        if reply is not None:
            row |= {"batch_latency_s": reply.latency_s, "image_latency_s": reply.latency_s / len(batch.images),
                    "baseline_latency_s": reply.latency_s if batch.unit.is_baseline else reference,
                    "peak_memory_bytes": reply.peak_memory_bytes, "timer": "harness", **reply.stages}
        rows.append(row)
    return rows
