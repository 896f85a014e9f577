"""The gate before timing: judge a setting's programs that must pass it (``--gate``) on the family's tiny model,
store every verdict in ``DIR/gate/`` (``schema.GATE_COLUMNS``) and remember the rejected units, whose rows
become ``rejected`` instead of being timed."""

from __future__ import annotations

import contextlib
import json

from accelbench import dataset, schema
from accelbench.builder import plan
from accelbench.builder.context import RunContext, RunState
from accelbench.builder.lanes import file_name
from accelbench.builder.options import GATE_ALL
from accelbench.builder.rows import utc_now


def gate_setting(context: RunContext, state: RunState, setting: list[plan.Unit]) -> None:
    """Judge the units of ``setting`` that are gated and still have work, one :class:`Gate` per task (its GT's
    results serve every submission for the task), and write their verdicts as one file."""
    from accelbench.builder import gate

    judged = {schema.GT, schema.BASELINE} if context.options.gate == GATE_ALL else set()
    units = [unit for unit in setting if unit.program is not None and not unit.is_baseline
             and (context.is_gated(unit) or unit.variant in judged) and _has_pending(context, state, unit)]
    verdicts = []
    judges: dict[str, gate.Gate] = {}
    with contextlib.ExitStack() as closing:
        for unit in units:
            if unit.task.id not in judges:
                judges[unit.task.id] = closing.enter_context(gate.Gate(context.catalog, unit.task,
                                                                           prompts=context.prompts))
            log = context.writer.directory / schema.LOGS_DIR / f"gate--{file_name(unit.label)}.log"
            verdict = judges[unit.task.id].check(unit.program.source, log_path=log, stop_early=True)
            if not verdict.passed:
                state.rejected[unit.label] = f"gate: {verdict.reason}"
            verdicts.append(_verdict_row(unit, verdict))
    if verdicts:
        import pyarrow as pa

        table = pa.Table.from_pylist(verdicts, schema=schema.arrow_schema(schema.GATE_COLUMNS))
        name = schema.verdicts_file(context.columns["run_id"], context.columns["rank"], setting[0].task.setting_id)
        dataset.write_table_atomic(table, context.writer.directory / schema.GATE_DIR / name)


def _verdict_row(unit: plan.Unit, verdict) -> dict:
    return schema.empty_row(schema.GATE_COLUMNS) | {
        "program_sha256": unit.program.sha256, "task_id": unit.task.id, "variant": unit.variant,
        "submission": unit.submission, "passed": verdict.passed, "failed_checks": ";".join(verdict.failed_checks()),
        "reason": verdict.reason, "checks": json.dumps(verdict.to_dict()["checks"]),
        "trace_digest": verdict.trace_digest, "inputs": json.dumps(verdict.inputs),
        "model_path": verdict.model_path, "advisories": ";".join(verdict.advisories), "checked_at": utc_now()}


def _has_pending(context: RunContext, state: RunState, unit: plan.Unit) -> bool:
    return any(image.record_id not in state.done
               for repeat in range(context.repeats)
               for batch in plan.build_batches(context.suite_id, unit, context.prompts, context.seeds,
                                               context.batch_sizes, context.seed_key, repeat)
               for image in batch.images)
