"""Is a (variant, task) correct, and does it reach the GT? The leaderboard's per-task rules, from stored numbers only:
the generation rows' statuses, the gate's verdicts, the summary rows and the dataset's task facts.

A task is *correct* when every row is ``ok``, the gate passed (when ``DIR/gate/`` holds verdicts; a program without
a verdict is "not gated", which fails nothing) and, for a submission, it does not ``deviate``: its mean PSNR to the
GT's images (same task, prompt, seed, batch size) is at least its method's ``deviation_psnr_db``, lowered to the
GT's own batch-size drift PSNR minus :data:`DRIFT_MARGIN_DB` where the GT drifts more than that (a re-implementation
may move as far as the GT moves between batch sizes). Otherwise the reason is kept: the first of ``schema.REASONS``
that applies, with its detail. The GT is scored the same way, as the reference.

A target task (levels 4 and 5) is judged instead by :func:`accelbench.scorer.targets.target_verdict`: correct when
its rows and gate are, and its verdict is ``met`` (reason ``target`` otherwise); its reference program (the GT
variant) gets its own verdict, recorded (reference parity) but not required of it.

A submission's task is not correct either where the task's GT is not (``no-gt``): nothing then checked its timed
images against the GT's, nor its parity. A task *reaches the GT* when it is correct, its speedup is at least
:data:`GT_SPEED_FRACTION` x the GT's on the same task (same dataset, same rounds), and its quality loss at most the
GT's + :data:`QUALITY_MARGIN` (unchecked where either quality loss is undefined; a correct GT without timed rows
reaches itself).
"""

from __future__ import annotations

import math
from collections import Counter

import pyarrow as pa

from accelbench import schema
from accelbench.manifest import TARGET_METHOD
from accelbench.scorer import pairing
from accelbench.scorer.targets import target_verdict

GT_SPEED_FRACTION = 0.95  # reaching the GT: at least this fraction of its speedup...
QUALITY_MARGIN = 0.01  # ...with a quality loss at most 0.01 (1 % of the baseline CLIP score) above the GT's
DRIFT_MARGIN_DB = 3.0  # deviation threshold: at most the GT's batch-size drift PSNR minus this (2x its MSE)
REASON_LENGTH = 200


def _one_line(text: str | None) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= REASON_LENGTH else text[:REASON_LENGTH - 1] + "…"


def _verdict_index(verdicts: pa.Table | None) -> dict[tuple[str, str], dict] | None:
    """(program_sha256, task_id) -> the latest verdict; None when the dataset has no verdicts at all."""
    if verdicts is None:
        return None
    index: dict[tuple[str, str], dict] = {}
    for verdict in verdicts.select(["program_sha256", "task_id", "passed", "failed_checks", "reason"]).to_pylist():
        index.setdefault((verdict["program_sha256"], verdict["task_id"]), verdict)  # latest first
    return index


def _correctness(rows: list[dict], verdicts: dict | None, summary: dict | None, threshold: float | None
                 ) -> tuple[bool, str | None, bool]:
    """(correct, reason, gated) of one variant's rows of one task."""
    statuses = Counter(row["status"] for row in rows)
    found = {(row["program_sha256"], row["task_id"]) for row in rows if row["program_sha256"]}
    verdict = next((verdicts[key] for key in sorted(found) if verdicts and key in verdicts), None)
    gated = verdict is not None
    gate_reason = None
    if verdict is not None and not verdict["passed"]:
        gate_reason = _one_line(f"failed {(verdict['failed_checks'] or '?').replace(';', ', ')}: "
                                f"{verdict['reason'] or 'no reason recorded'}")
    for status in schema.FAILED_STATUSES + tuple(sorted(set(statuses) - set(schema.STATUSES))):
        if statuses.get(status):
            first = next(row for row in rows if row["status"] == status)
            detail = gate_reason if status == schema.STATUS_REJECTED and gate_reason else first["error"]
            return False, _one_line(f"{status}: {statuses[status]}/{len(rows)} rows"
                                    + (f"; {detail}" if detail else "")), gated
    if gate_reason:
        return False, f"{schema.REASON_GATE}: {gate_reason}", gated
    psnr = summary["psnr_gt"] if summary else None
    if threshold is not None and psnr is not None and psnr < threshold:
        return False, (f"{schema.REASON_DEVIATES}: mean PSNR to the GT's images {psnr:.1f} dB < {threshold:.1f} dB "
                       f"({summary['gt_pairs']} images, {summary['identical_to_gt']} identical)"), gated
    return True, None, gated


def deviation_threshold(declared_db: float | None, gt_drift_psnr: float | None) -> float | None:
    """The PSNR-to-GT threshold of a task: its method's declared ``deviation_psnr_db``, lowered to the GT's own
    drift PSNR (batch size > 1 vs 1) minus :data:`DRIFT_MARGIN_DB` when the GT drifts more than that. None: not
    checked (the method declares none, or the dataset predates recorded task facts).

    Example:
        >>> deviation_threshold(30.0, math.inf), deviation_threshold(30.0, 20.0), deviation_threshold(None, 20.0)
        (30.0, 17.0, None)
    """
    if declared_db is None:
        return None
    if gt_drift_psnr is not None and math.isfinite(gt_drift_psnr):
        return min(declared_db, gt_drift_psnr - DRIFT_MARGIN_DB)
    return declared_db


LATENCY_BATCH_SIZE = "1"  # a latency target is per image at batch size 1, as targets search measures it


def task_results(rows: list[dict], pooled: list[dict], facts: dict[str, dict], verdicts: pa.Table | None = None,
                 dataset_name: str = "", suite: str | None = None, by_batch_size: list[dict] | None = None,
                 clip_random: bool = False) -> list[dict]:
    """LEADERBOARD_TASK_COLUMNS rows: the GT and every submission on every task of the dataset.

    ``rows``: generation rows (``aggregate.GENERATION_FIELDS``); ``pooled``: the summary rows (batch sizes
    pooled); ``facts``: the dataset's task facts (:func:`accelbench.task_facts.read`); ``verdicts``:
    :func:`accelbench.scorer.store.read_gate_verdicts`."""
    index = _verdict_index(verdicts)
    summaries = {(row["task_id"], row["variant"]): row for row in pooled if row["variant"] != schema.BASELINE}
    at_one = {(row["task_id"], row["variant"]): row for row in by_batch_size or []
              if row["variant"] != schema.BASELINE and row["batch_size"] == LATENCY_BATCH_SIZE}
    by_unit: dict[tuple[str, str], list[dict]] = {}
    baselines: dict[str, set[str]] = {}
    for row in rows:
        if row["variant"] == schema.BASELINE:
            baselines.setdefault(row["setting_id"], set()).add(row["program_sha256"] or "")
        elif row["task_id"]:
            by_unit.setdefault((row["task_id"], row["variant"]), []).append(row)
    tasks = {task_id: unit_rows[0] for (task_id, _), unit_rows in sorted(by_unit.items())}
    variants = sorted({variant for _, variant in by_unit}, key=lambda v: (v != schema.GT, v))
    results = []
    for task_id, first in tasks.items():
        gt_summary = summaries.get((task_id, schema.GT))
        gt_drift = gt_summary["drift_psnr"] if gt_summary else None
        task = facts.get(task_id) or {}
        target = task.get("target")  # a target task: judged by its verdict, not by its distance to the reference
        threshold = None if target else deviation_threshold((task.get("method") or {}).get("deviation_psnr_db"),
                                                            gt_drift)
        for variant in variants:
            unit_rows = by_unit.get((task_id, variant))
            if unit_rows is None:
                continue  # completed with 'no-rows' by complete()
            summary = summaries.get((task_id, variant))
            checked = threshold if schema.is_submission(variant) else None
            correct, reason, gated = _correctness(unit_rows, index, summary, checked)
            is_gt = variant == schema.GT
            verdict = (target_verdict(target, *_judged(target, summary, gt_summary, at_one.get((task_id, variant)),
                                                       clip_random), (summary or {}).get("device_name"))
                       if target else None)
            if verdict is not None and correct and not verdict.met and not is_gt:  # the reference is the yardstick
                correct, reason = False, _one_line(f"{schema.REASON_TARGET}: {verdict.verdict}: {verdict.reason}")
            results.append({
                **schema.empty_row(schema.LEADERBOARD_TASK_COLUMNS),
                "dataset": dataset_name, "suite": suite, "variant": variant,
                "submission": schema.submission_name(variant),
                **{name: first[name] for name in ("task_id", "setting_id", "model", "scheduler", "steps", "method",
                                                  "method_params")},
                # what the task asks for, for every variant: a target task names no method (its reference's is one)
                **({"method": TARGET_METHOD, "method_params": "{}"} if target else {}),
                "level": task.get("level"),
                "correct": correct, "reason": reason, "reason_kind": reason.split(":")[0] if reason else None,
                "gated": gated, "target_verdict": verdict.verdict if verdict is not None else None,
                **({name: summary[name] for name in ("speedup", "speedup_ci_low", "speedup_ci_high", "speedup_n",
                                                     "speedup_repeats", "latency_ms", "quality_loss", "flags")}
                   if summary else {}),
                "gt_speedup": gt_summary["speedup"] if gt_summary else None,
                "gt_quality_loss": gt_summary["quality_loss"] if gt_summary else None,
                "psnr_gt": math.inf if is_gt else summary["psnr_gt"] if summary else None,
                "ssim_gt": 1.0 if is_gt else summary["ssim_gt"] if summary else None,
                "identical_to_gt": (sum(pairing.is_ok(row) for row in unit_rows) if is_gt
                                    else summary["identical_to_gt"] if summary else None),
                "gt_pairs": (sum(pairing.is_ok(row) for row in unit_rows) if is_gt
                             else summary["gt_pairs"] if summary else None),
                "deviation_threshold_db": checked,
                "device_name": summary["device_name"] if summary else None,
                "weights": summary["weights"] if summary else None,
                "baseline_sha256": ";".join(sorted(baselines.get(first["setting_id"], ()))) or None,
            })
    gt_correct = {result["task_id"]: result["correct"] for result in results if result["variant"] == schema.GT}
    gt_reasons = {result["task_id"]: result["reason"] for result in results if result["variant"] == schema.GT}
    for result in results:
        if schema.is_submission(result["variant"]) and result["correct"] and not gt_correct.get(result["task_id"]):
            # Without a correct GT nothing checked its timed images or its parity: it is not scored.
            detail = gt_reasons.get(result["task_id"]) or "the GT has no rows"
            result.update(correct=False, reason_kind=schema.REASON_NO_GT,
                          reason=_one_line(f"{schema.REASON_NO_GT}: the task's GT is not correct ({detail})"))
        result["reaches_gt"] = _reaches_gt(result, gt_correct.get(result["task_id"], False))
    return results


def _judged(target: dict, summary: dict | None, reference: dict | None, at_one: dict | None, clip_random: bool
            ) -> tuple[dict, dict]:
    """The (submission, reference) numbers a target verdict reads: a latency target's latency at batch size 1
    where the run has it, and no CLIP loss where the CLIP has random weights (its scores measure nothing)."""
    submission, reference = dict(summary or {}), dict(reference or {})
    if not target.get("speedup") and at_one is not None:
        submission.update({key: at_one[key] for key in ("latency_ms", "latency_ms_ci_low", "latency_ms_ci_high",
                                                        "latency_ms_n")})
    if clip_random:
        submission["quality_loss"] = reference["quality_loss"] = None
    return submission, reference


def _reaches_gt(result: dict, gt_correct: bool) -> bool:
    if not result["correct"]:
        return False
    if not gt_correct or result["gt_speedup"] is None:
        return True  # the GT itself, or no timed GT to fall short of
    if result["speedup"] is None:
        return False
    loss, gt_loss = result["quality_loss"], result["gt_quality_loss"]
    quality_ok = loss is None or gt_loss is None or loss <= gt_loss + QUALITY_MARGIN
    return result["speedup"] >= GT_SPEED_FRACTION * result["gt_speedup"] and quality_ok


def complete(results: list[dict]) -> list[dict]:
    """Every (variant, task) of the results, ordered by task then variant (GT first): the pairs without a
    result get an incorrect 'no-rows' row (the submission has no rows for that task in any dataset)."""
    by_task: dict[str, dict] = {}
    for result in results:
        by_task.setdefault(result["task_id"], result)
    variants = sorted({result["variant"] for result in results}, key=lambda v: (v != schema.GT, v))
    have = {(result["task_id"], result["variant"]): result for result in results}
    completed = []
    for task_id in sorted(by_task):
        for variant in variants:
            if (task_id, variant) in have:
                completed.append(have[(task_id, variant)])
                continue
            first = by_task[task_id]
            completed.append({
                **schema.empty_row(schema.LEADERBOARD_TASK_COLUMNS),
                **{name: first[name] for name in ("dataset", "suite", "task_id", "setting_id", "model", "scheduler",
                                                  "steps", "method", "method_params", "level", "gt_speedup",
                                                  "gt_quality_loss", "device_name", "weights", "baseline_sha256")},
                "variant": variant, "submission": schema.submission_name(variant), "correct": False, "gated": False,
                "reaches_gt": False, "reason_kind": schema.REASON_NO_ROWS,
                "reason": f"{schema.REASON_NO_ROWS}: {variant} has no rows for this task"})
    return completed
