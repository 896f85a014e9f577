"""The leaderboard: which submissions solve which tasks correctly, how much faster, and how close to the GT.

Built from stored numbers only (the report's summary rows, the generation rows' statuses, the fidelity scores and
the gate's verdicts), in two steps:

1. **Per (variant, task)** (:func:`task_results`, LEADERBOARD_TASK_COLUMNS, ``report/leaderboard_tasks.csv``):
   a task is *correct* when every row is ``ok``, the gate passed (when ``DIR/gate/`` holds verdicts; a program
   without a verdict is "not gated", which fails nothing) and, for a submission, it does not ``deviate``: its
   mean PSNR to the GT's images (same task, prompt, seed, batch size) is at least the method's
   ``deviation_psnr_db`` (manifests/methods.yaml), lowered to the GT's own batch-size drift PSNR minus
   :data:`DRIFT_MARGIN_DB` where the GT drifts more than that (a re-implementation may move as far as the GT moves
   between batch sizes). Otherwise the reason is kept: the first of ``schema.REASONS`` that applies, with its
   detail. The GT is scored the same way, as the reference.
2. **Per submission** (:func:`summarize`, LEADERBOARD_COLUMNS, ``report/leaderboard.csv`` / ``.json``), over
   every task of the dataset(s), a task without rows counting as failed (``no-rows``):

   * ``fast_p`` (:func:`accelbench.scorer.functional.fast_p`): the fraction of ALL tasks that are correct with a
     speedup > p, with a bootstrap CI over tasks;
   * ``gt_parity``: the fraction of all tasks that *reach the GT*: correct, speedup >= :data:`GT_SPEED_FRACTION`
     x the GT's on the same task (same dataset, same rounds), and quality loss at most the GT's +
     :data:`QUALITY_MARGIN` (unchecked where either quality loss is undefined; a correct task reaches the GT
     where the GT has no correct, timed result);
   * ``geomean_speedup``: the geometric mean over the correct tasks of max(speedup, :data:`SPEEDUP_FLOOR`);
   * ``quality_loss``, ``psnr_gt``, ``ssim_gt``, ``identical_to_gt``: over the correct tasks;
   * a breakdown of the same by model family, method and task level (``level``: 1 = one method at its default
     parameters, 2 = one method with a non-default parameter, 3 = a composition of methods).

Confidence intervals are 95 % percentile bootstraps; the resampling units are tasks here, interleaving rounds
(batches) for a task's speedup and (prompt, seed) clusters for its image metrics (:mod:`aggregate`). No CI is
computed from fewer than ``functional.MIN_CI_UNITS`` units.

:func:`merge` combines the task results of several datasets of one suite (``accelbench leaderboard``); it refuses
results from different GPU models or different baseline programs unless told to allow them.
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from accelbench import dataset, schema
from accelbench.errors import UserInputError
from accelbench.scorer import functional, markdown, pairing

LEADERBOARD_CSV, LEADERBOARD_JSON, TASKS_CSV = "leaderboard.csv", "leaderboard.json", "leaderboard_tasks.csv"
FAST_P_PNG, HEATMAP_PNG = "fast_p.png", "speedup_heatmap.png"
GT_SPEED_FRACTION = 0.95  # reaching the GT: at least this fraction of its speedup...
QUALITY_MARGIN = 0.01  # ...with a quality loss at most 0.01 (1 % of the baseline CLIP score) above the GT's
SPEEDUP_FLOOR = 0.1  # geometric mean: each speedup counts as at least this
DRIFT_MARGIN_DB = 3.0  # deviation threshold: at most the GT's batch-size drift PSNR minus this (2x its MSE)
CURVE_MAX_P = 4.0
BREAKDOWNS = ("model", "method", "level")
GT_NAME = "gt"
STATUS_REASONS = (schema.STATUS_MISSING, schema.STATUS_REJECTED, schema.STATUS_ERROR, schema.STATUS_NONFINITE,
                  schema.STATUS_OOM, schema.STATUS_TIMEOUT, schema.STATUS_CRASHED)
REASON_LENGTH = 200


class LeaderboardError(UserInputError):
    """Results that cannot be merged (or read), as one line."""


@dataclass
class Leaderboard:
    """What the leaderboard files hold."""

    rows: list[dict]  # LEADERBOARD_COLUMNS of fast_p, the reference (GT) first
    tasks: list[dict]  # LEADERBOARD_TASK_COLUMNS, every (variant, task), completed with 'no-rows'
    breakdown: list[dict]  # per submission x (model | method | level) group
    fast_p: tuple[float, ...]
    meta: dict  # suite, device names, baselines, weights, datasets
    notes: list[str] = field(default_factory=list)
    n_resamples: int = functional.BOOTSTRAP_RESAMPLES


# ---------------------------------------------------------------------------------------------------------
# Per (variant, task)
# ---------------------------------------------------------------------------------------------------------


def task_level(method: str, method_params: str | None, catalog) -> int | None:
    """1: one method at its default parameters; 2: one method with a non-default parameter; 3: a composition
    of catalogue methods (an id made of method ids joined by '_', e.g. deepcache_tgate). None: an unknown method.

    Example:
        >>> from accelbench.manifest import load_catalog
        >>> catalog = load_catalog()
        >>> [task_level(m, p, catalog) for m, p in [("deepcache", '{"cache_interval": 3, "cache_branch_id": 0}'),
        ...  ("deepcache", '{"cache_interval": 5, "cache_branch_id": 0}'), ("deepcache_tgate", "{}"), ("x", "{}")]]
        [1, 2, 3, None]
    """
    if catalog is None or method not in catalog.methods:
        return None
    parts = method.split("_")
    if len(parts) > 1 and all(part in catalog.methods for part in parts):
        return 3
    params = json.loads(method_params or "{}")
    defaults = {name: spec.default for name, spec in catalog.methods[method].params.items()}
    return 2 if any(name in params and params[name] != default for name, default in defaults.items()) else 1


def _submission_name(variant: str) -> str:
    return GT_NAME if variant == schema.GT else variant.removeprefix(schema.SUBMISSION_PREFIX)


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
    for status in STATUS_REASONS + tuple(sorted(set(statuses) - set(STATUS_REASONS) - {schema.STATUS_OK})):
        if statuses.get(status):
            first = next(row for row in rows if row["status"] == status)
            detail = gate_reason if status == schema.STATUS_REJECTED and gate_reason else first["error"]
            return False, _one_line(f"{status}: {statuses[status]}/{len(rows)} rows"
                                    + (f"; {detail}" if detail else "")), gated
    if gate_reason:
        return False, f"gate: {gate_reason}", gated
    psnr = summary["psnr_gt"] if summary else None
    if threshold is not None and psnr is not None and psnr < threshold:
        return False, (f"deviates: mean PSNR to the GT's images {psnr:.1f} dB < {threshold:.1f} dB "
                       f"({summary['gt_pairs']} images, {summary['identical_to_gt']} identical)"), gated
    return True, None, gated


def deviation_threshold(method: str, catalog, gt_drift_psnr: float | None) -> float | None:
    """The PSNR-to-GT threshold of a task: the method's ``deviation_psnr_db``, lowered to the GT's own drift PSNR
    (batch size > 1 vs 1) minus :data:`DRIFT_MARGIN_DB` when the GT drifts more than that. None: not checked.

    Example:
        >>> from accelbench.manifest import load_catalog
        >>> catalog = load_catalog()
        >>> declared = catalog.methods["deepcache"].deviation_psnr_db
        >>> deviation_threshold("deepcache", catalog, math.inf) == declared  # the GT does not drift
        True
        >>> deviation_threshold("deepcache", catalog, 20.0)  # the GT drifts to 20 dB: 3 dB below that
        17.0
    """
    entry = catalog.methods.get(method) if catalog is not None else None
    if entry is None or entry.deviation_psnr_db is None:
        return None
    if gt_drift_psnr is not None and math.isfinite(gt_drift_psnr):
        return min(entry.deviation_psnr_db, gt_drift_psnr - DRIFT_MARGIN_DB)
    return entry.deviation_psnr_db


def task_results(rows: list[dict], pooled: list[dict], catalog, verdicts: pa.Table | None = None,
                 dataset_name: str = "", suite: str | None = None) -> list[dict]:
    """LEADERBOARD_TASK_COLUMNS rows: the GT and every submission on every task of the dataset.

    ``rows``: generation rows (``aggregate.GENERATION_FIELDS``); ``pooled``: the summary rows (batch sizes
    pooled); ``verdicts``: :func:`accelbench.scorer.store.read_gate_verdicts`."""
    index = _verdict_index(verdicts)
    summaries = {(row["task_id"], row["variant"]): row for row in pooled if row["variant"] != pairing.BASELINE}
    by_unit: dict[tuple[str, str], list[dict]] = {}
    baselines: dict[str, set[str]] = {}
    for row in rows:
        if row["variant"] == pairing.BASELINE:
            baselines.setdefault(row["setting_id"], set()).add(row["program_sha256"] or "")
        elif row["task_id"]:
            by_unit.setdefault((row["task_id"], row["variant"]), []).append(row)
    tasks = {task_id: unit_rows[0] for (task_id, _), unit_rows in sorted(by_unit.items())}
    variants = sorted({variant for _, variant in by_unit}, key=lambda v: (v != schema.GT, v))
    results = []
    for task_id, first in tasks.items():
        gt_summary = summaries.get((task_id, schema.GT))
        gt_drift = gt_summary["drift_psnr"] if gt_summary else None
        threshold = deviation_threshold(first["method"], catalog, gt_drift)
        for variant in variants:
            unit_rows = by_unit.get((task_id, variant))
            if unit_rows is None:
                continue  # completed with 'no-rows' by complete()
            summary = summaries.get((task_id, variant))
            checked = threshold if pairing.is_submission(variant) else None
            correct, reason, gated = _correctness(unit_rows, index, summary, checked)
            is_gt = variant == schema.GT
            results.append({
                **schema.empty_row(schema.LEADERBOARD_TASK_COLUMNS),
                "dataset": dataset_name, "suite": suite, "variant": variant, "submission": _submission_name(variant),
                **{name: first[name] for name in ("task_id", "setting_id", "model", "scheduler", "steps", "method",
                                                  "method_params")},
                "level": task_level(first["method"], first["method_params"], catalog),
                "correct": correct, "reason": reason, "reason_kind": reason.split(":")[0] if reason else None,
                "gated": gated,
                **({name: summary[name] for name in ("speedup", "speedup_ci_low", "speedup_ci_high", "speedup_n",
                                                     "quality_loss", "flags")} if summary else {}),
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
    for result in results:
        result["reaches_gt"] = _reaches_gt(result, gt_correct.get(result["task_id"], False))
    return results


def _reaches_gt(result: dict, gt_correct: bool) -> bool:
    if not result["correct"]:
        return False
    if not gt_correct or result["gt_speedup"] is None:
        return True  # no correct, timed GT to fall short of
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
                "variant": variant, "submission": _submission_name(variant), "correct": False, "gated": False,
                "reaches_gt": False, "reason_kind": "no-rows",
                "reason": f"no-rows: {variant} has no rows for this task"})
    return completed


# ---------------------------------------------------------------------------------------------------------
# Per submission
# ---------------------------------------------------------------------------------------------------------


def _ci(statistic_values: np.ndarray, n_resamples: int, transform=None) -> tuple[float | None, float | None]:
    """Bootstrap CI of the mean of per-task values (no CI from fewer than MIN_CI_UNITS tasks)."""
    if len(statistic_values) < functional.MIN_CI_UNITS:
        return None, None
    low, high = functional.bootstrap_ci(functional.mean, statistic_values, n_resamples=n_resamples)
    if transform is not None:
        low, high = transform(low), transform(high)
    return (None if math.isnan(low) else low), (None if math.isnan(high) else high)


def _float(value) -> float:
    return math.nan if value is None else float(value)


def _counted(values) -> str | None:
    found = Counter(value for value in values if value)
    return ";".join(f"{name}: {count}" for name, count in sorted(found.items())) or None


def _distinct(values) -> str | None:
    found = sorted({part for value in values if value for part in value.split("; ")})
    return "; ".join(found) or None


def _score(results: list[dict], fast_p, n_resamples: int, with_ci: bool = True) -> dict:
    """The leaderboard numbers of one submission's results (one per task)."""
    correct = np.array([bool(result["correct"]) for result in results])
    speedup = np.array([_float(result["speedup"]) for result in results])
    row: dict = {"tasks": len(results), "correct": int(correct.sum())}
    for p in fast_p:
        name = schema.fast_column(p)
        with np.errstate(invalid="ignore"):
            indicator = (correct & (speedup > p)).astype(np.float64)
        row[name] = float(functional.fast_p(correct, speedup, p)) if len(results) else None
        row[f"{name}_ci_low"], row[f"{name}_ci_high"] = (
            _ci(indicator, n_resamples) if with_ci and len(results) else (None, None))
    parity = np.array([bool(result["reaches_gt"]) for result in results], dtype=np.float64)
    row["gt_parity"] = float(parity.mean()) if len(results) else None
    row["gt_parity_ci_low"], row["gt_parity_ci_high"] = _ci(parity, n_resamples) if with_ci else (None, None)

    good = [result for result in results if result["correct"]]
    timed = np.array([result["speedup"] for result in good if result["speedup"] is not None], dtype=np.float64)
    logs = np.log(np.maximum(timed, SPEEDUP_FLOOR))
    row["geomean_speedup"] = float(functional.geometric_mean(timed, SPEEDUP_FLOOR)) if len(timed) else None
    row["geomean_speedup_ci_low"], row["geomean_speedup_ci_high"] = (
        _ci(logs, n_resamples, math.exp) if with_ci else (None, None))
    row["geomean_speedup_n"] = len(logs)
    losses = np.array([result["quality_loss"] for result in good if result["quality_loss"] is not None])
    row["quality_loss"] = float(losses.mean()) if len(losses) else None
    row["quality_loss_ci_low"], row["quality_loss_ci_high"] = (
        _ci(losses.astype(np.float64), n_resamples) if with_ci else (None, None))
    row["quality_loss_n"] = len(losses)
    psnrs = [result["psnr_gt"] for result in good if result["psnr_gt"] is not None]
    finite = [value for value in psnrs if math.isfinite(value)]
    row["psnr_gt"] = float(np.mean(finite)) if finite else (math.inf if psnrs else None)
    row["psnr_gt_n"] = len(finite)
    ssims = [result["ssim_gt"] for result in good if result["ssim_gt"] is not None]
    row["ssim_gt"] = float(np.mean(ssims)) if ssims else None
    pairs = sum(result["gt_pairs"] or 0 for result in good)
    row["identical_to_gt"] = sum(result["identical_to_gt"] or 0 for result in good) / pairs if pairs else None
    row["reasons"] = _counted(result["reason_kind"] for result in results if not result["correct"])
    row["flags"] = _counted(flag for result in good for flag in (result["flags"] or "").split(";"))
    return row


def summarize(results: list[dict], fast_p=schema.DEFAULT_FAST_P, n_resamples: int = functional.BOOTSTRAP_RESAMPLES
              ) -> tuple[list[dict], list[dict]]:
    """(leaderboard rows, breakdown rows) of completed task results (:func:`complete`). The GT row comes first
    (``reference``), then the submissions by fast_p at p = 1 (else the first p), correct tasks and name."""
    by_variant: dict[str, list[dict]] = {}
    for result in results:
        by_variant.setdefault(result["variant"], []).append(result)
    rows, breakdown = [], []
    for variant, members in by_variant.items():
        rows.append({
            **schema.empty_row(schema.leaderboard_columns(fast_p)),
            "submission": _submission_name(variant), "variant": variant, "reference": variant == schema.GT,
            **_score(members, fast_p, n_resamples),
            "device_name": _distinct(result["device_name"] for result in members),
            "weights": _distinct(result["weights"] for result in members),
            "datasets": len({result["dataset"] for result in members if result["correct"] or result["reason_kind"]
                             != "no-rows"}),
        })
        for by in BREAKDOWNS:
            groups: dict = {}
            for result in members:
                groups.setdefault(result[by], []).append(result)
            for group in sorted(groups, key=lambda value: (value is None, value)):
                score = _score(groups[group], fast_p, n_resamples, with_ci=False)
                breakdown.append({"submission": _submission_name(variant), "variant": variant, "by": by,
                                  "group": "?" if group is None else str(group),
                                  **{key: score[key] for key in ("tasks", "correct", "gt_parity", "geomean_speedup",
                                                                 "quality_loss")},
                                  **{schema.fast_column(p): score[schema.fast_column(p)] for p in fast_p}})
    rank = schema.fast_column(1.0 if 1.0 in fast_p else fast_p[0])
    rows.sort(key=lambda row: (not row["reference"], -(row[rank] or 0.0), -row["correct"], row["submission"]))
    order = {row["variant"]: index for index, row in enumerate(rows)}
    breakdown.sort(key=lambda row: (BREAKDOWNS.index(row["by"]), row["group"], order[row["variant"]]))
    return rows, breakdown


def fast_p_curve(results: list[dict], thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """variant -> fast_p at every threshold (the curve of ``fast_p.png``)."""
    curves = {}
    for variant in dict.fromkeys(result["variant"] for result in results):
        members = [result for result in results if result["variant"] == variant]
        curves[variant] = functional.fast_p(np.array([bool(r["correct"]) for r in members]),
                                            np.array([_float(r["speedup"]) for r in members]), thresholds)
    return curves


# ---------------------------------------------------------------------------------------------------------
# Building, writing, reading, merging
# ---------------------------------------------------------------------------------------------------------


def build(results: list[dict], meta: dict, fast_p=schema.DEFAULT_FAST_P,
          n_resamples: int = functional.BOOTSTRAP_RESAMPLES, notes: list[str] | None = None) -> Leaderboard:
    completed = complete(results)
    rows, breakdown = summarize(completed, tuple(fast_p), n_resamples)
    notes = list(notes or [])
    notes += _notes(completed)
    return Leaderboard(rows, completed, breakdown, tuple(fast_p), meta, notes, n_resamples)


def _notes(results: list[dict]) -> list[str]:
    notes = []
    submissions = [r for r in results if pairing.is_submission(r["variant"])]
    unchecked = [r for r in submissions if r["correct"] and r["psnr_gt"] is None]
    if unchecked:
        notes.append(f"`deviates` was not checked for {len(unchecked)} correct submission task(s) (no GT image to "
                     f"compare with, no fidelity scores to the GT, or a method without `deviation_psnr_db`): "
                     f"{markdown_named(sorted({r['task_id'] for r in unchecked}))}.")
    undefined = [r for r in results if r["correct"] and r["quality_loss"] is None]
    if undefined:
        notes.append(f"Quality loss is n/a (undefined or unscored) for {len(undefined)} correct (variant, task) "
                     f"pair(s): they are left out of the mean quality loss, and reaching the GT is judged on "
                     f"speed alone there.")
    no_speedup = [r for r in results if r["correct"] and r["speedup"] is None]
    if no_speedup:
        notes.append(f"{len(no_speedup)} correct (variant, task) pair(s) have no measured speedup (no baseline "
                     f"timing): they count as not fast at any p.")
    return notes


def markdown_named(items: list, limit: int = 3) -> str:
    more = len(items) - limit
    return ", ".join(f"`{item}`" for item in items[:limit]) + (f" and {more} more" if more > 0 else "")


def from_report(directory: Path, rows: list[dict], pooled: list[dict], catalog, verdicts: pa.Table | None,
                manifest: dict, fast_p=schema.DEFAULT_FAST_P,
                n_resamples: int = functional.BOOTSTRAP_RESAMPLES) -> Leaderboard | None:
    """The leaderboard of one dataset, or None when it holds no submission."""
    if not any(pairing.is_submission(row["variant"]) for row in rows):
        return None
    directory = Path(directory)
    results = task_results(rows, pooled, catalog, verdicts, dataset_name=directory.name, suite=manifest.get("suite"))
    baselines: dict[str, set[str]] = {}
    for row in rows:
        if row["variant"] == pairing.BASELINE and row["program_sha256"]:
            baselines.setdefault(row["setting_id"], set()).add(row["program_sha256"])
    meta = {"suite": manifest.get("suite"), "weights": manifest.get("weights"),
            "device_names": sorted({row["device_name"] for row in rows if row["device_name"]}),
            "baselines": {setting: sorted(shas) for setting, shas in sorted(baselines.items())},
            "datasets": [directory.name], "gated": verdicts is not None}
    notes = []
    if verdicts is None:
        notes.append(f"No gate verdicts ({schema.GATE_DIR}/verdicts-*.parquet): the programs were not gated, "
                     f"which fails no task here; correctness comes from the rows' statuses and the PSNR to the GT.")
    else:
        ungated = [r for r in results if not r["gated"] and r["reason_kind"] not in ("missing", "no-rows")]
        if ungated:
            notes.append(f"{len(ungated)} (variant, task) pair(s) have no gate verdict (not gated, which fails "
                         f"nothing): {markdown_named(sorted({r['variant'] + ' ' + r['task_id'] for r in ungated}))}.")
    return build(results, meta, fast_p, n_resamples, notes)


def write(folder: Path, board: Leaderboard, title: str) -> None:
    """``leaderboard.csv``, ``leaderboard.json``, ``leaderboard_tasks.csv``, ``fast_p.png``,
    ``speedup_heatmap.png`` in ``folder`` (atomically, each)."""
    folder = Path(folder)
    columns = schema.leaderboard_columns(board.fast_p)
    dataset.write_bytes_atomic(folder / LEADERBOARD_CSV, _csv(board.rows, columns))
    dataset.write_bytes_atomic(folder / TASKS_CSV, _csv(board.tasks, schema.LEADERBOARD_TASK_COLUMNS))
    dataset.write_json_atomic(folder / LEADERBOARD_JSON, json_safe({
        "meta": board.meta, "fast_p": list(board.fast_p), "notes": board.notes,
        "definitions": definitions(board), "columns": {column.name: column.doc for column in columns},
        "rows": board.rows, "breakdown": board.breakdown}))
    weights = board.meta.get("weights")
    dataset.write_bytes_atomic(folder / FAST_P_PNG, fast_p_png(board, title, weights))
    dataset.write_bytes_atomic(folder / HEATMAP_PNG, heatmap_png(board, title, weights))


def _csv(rows: list[dict], columns) -> bytes:
    buffer = io.BytesIO()
    pacsv.write_csv(pa.Table.from_pylist(rows, schema=schema.arrow_schema(columns, with_features=False)), buffer)
    return buffer.getvalue()


def json_safe(value):
    """Infinity as the string "inf" (JSON has none), NaN as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def _read_csv(path: Path, columns) -> pa.Table:
    target = schema.arrow_schema(columns)
    if not path.is_file():
        raise LeaderboardError(f"{path}: no leaderboard results: run `accelbench score` (or `report`) on a dataset "
                               f"with submissions")
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types=target, strings_can_be_null=True, quoted_strings_can_be_null=False))
    missing = [name for name in target.names if name not in table.column_names]
    if missing:
        raise LeaderboardError(f"{path}: missing column {missing[0]}: rebuild it with `accelbench report`")
    return table.select(target.names).cast(target)


def read_meta(directory: Path) -> dict:
    """``leaderboard.json`` of a dataset (its ``report/``)."""
    path = Path(directory) / schema.REPORT_DIR / LEADERBOARD_JSON
    if not path.is_file():
        raise LeaderboardError(f"{directory}: no leaderboard ({schema.REPORT_DIR}/{LEADERBOARD_JSON}): run "
                               f"`accelbench score` (or `report`) on a dataset with submissions")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise LeaderboardError(f"{path}: unreadable leaderboard ({error})") from None


def read_leaderboard(directory: Path) -> pa.Table:
    """``report/leaderboard.csv`` of a dataset, typed as the leaderboard columns of its fast_p thresholds."""
    fast_p = tuple(read_meta(directory).get("fast_p", schema.DEFAULT_FAST_P))
    return _read_csv(Path(directory) / schema.REPORT_DIR / LEADERBOARD_CSV, schema.leaderboard_columns(fast_p))


def read_task_results(directory: Path) -> list[dict]:
    """``report/leaderboard_tasks.csv`` of a dataset (LEADERBOARD_TASK_COLUMNS, typed)."""
    return _read_csv(Path(directory) / schema.REPORT_DIR / TASKS_CSV, schema.LEADERBOARD_TASK_COLUMNS).to_pylist()


def merge(directories: list[Path], fast_p=schema.DEFAULT_FAST_P, allow_mixed: bool = False,
          n_resamples: int = functional.BOOTSTRAP_RESAMPLES) -> Leaderboard:
    """One leaderboard from the task results of several datasets of one suite.

    Refuses (:class:`LeaderboardError`) datasets of different suites, and unless ``allow_mixed`` timings from
    different GPU models (``device_name``) or against different baseline programs of a setting. A (variant, task)
    present in several datasets is taken from the first (a note counts the others)."""
    metas, results, notes = [], [], []
    seen: dict[tuple[str, str], str] = {}
    duplicates = 0
    for directory in map(Path, directories):
        dataset.read_manifest(directory)
        meta = read_meta(directory)["meta"]
        metas.append((directory, meta))
        for result in read_task_results(directory):
            key = (result["variant"], result["task_id"])
            if key in seen:
                duplicates += 1
                continue
            seen[key] = str(directory)
            results.append({**result, "dataset": str(directory)})
    _check_mergeable(metas, allow_mixed)
    if duplicates:
        notes.append(f"{duplicates} (variant, task) result(s) appear in more than one dataset; the first "
                     f"dataset's were kept.")
    if allow_mixed and len({tuple(meta["device_names"]) for _, meta in metas}) > 1:
        notes.append("Merged with --allow-mixed: timings come from different GPU models (" + ", ".join(
            sorted({name for _, meta in metas for name in meta["device_names"]})) + "); speedups are each "
            "against their own dataset's baseline.")
    suite = metas[0][1]["suite"]
    baselines: dict[str, set[str]] = {}
    for _, meta in metas:
        for setting, shas in meta["baselines"].items():
            baselines.setdefault(setting, set()).update(shas)
    merged_meta = {"suite": suite, "weights": "; ".join(sorted({str(m["weights"]) for _, m in metas})),
                   "device_names": sorted({name for _, m in metas for name in m["device_names"]}),
                   "baselines": {setting: sorted(shas) for setting, shas in sorted(baselines.items())},
                   "datasets": [str(directory) for directory, _ in metas],
                   "gated": all(m.get("gated") for _, m in metas)}
    for directory, meta in metas:
        notes += [f"{directory}: {note}" for note in read_meta(directory).get("notes", [])
                  if note.startswith("No gate verdicts")]
    return build(results, merged_meta, fast_p, n_resamples, notes)


def _check_mergeable(metas: list[tuple[Path, dict]], allow_mixed: bool) -> None:
    first_dir, first = metas[0]
    for directory, meta in metas[1:]:
        if meta["suite"] != first["suite"]:
            raise LeaderboardError(f"{directory} is of suite {meta['suite']!r}, {first_dir} of {first['suite']!r}: "
                                   f"a leaderboard merges datasets of one suite")
        if allow_mixed:
            continue
        if set(meta["device_names"]) != set(first["device_names"]):
            raise LeaderboardError(
                f"{directory} was timed on {', '.join(meta['device_names']) or '?'}, {first_dir} on "
                f"{', '.join(first['device_names']) or '?'}: speedups from different GPU models are not comparable "
                f"(pass --allow-mixed to merge anyway)")
        for setting, shas in meta["baselines"].items():
            other = first["baselines"].get(setting)
            if other is not None and set(other) != set(shas):
                raise LeaderboardError(
                    f"{directory} and {first_dir} time setting {setting} against different baseline programs "
                    f"({', '.join(s[:12] for s in shas)} vs {', '.join(s[:12] for s in other)}): speedups are not "
                    f"comparable (pass --allow-mixed to merge anyway)")


# ---------------------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------------------


def definitions(board: Leaderboard) -> dict[str, str]:
    return {
        "correct": "every row ok, the gate passed (when verdicts exist) and, for a submission, mean PSNR to the "
                   "GT's images >= min(method's deviation_psnr_db, GT drift PSNR - "
                   f"{DRIFT_MARGIN_DB:g} dB)",
        "fast_p": "fraction of ALL tasks that are correct with speedup > p (failures stay in the denominator)",
        "gt_parity": f"fraction of all tasks correct with speedup >= {GT_SPEED_FRACTION:g} x the GT's and quality "
                     f"loss <= the GT's + {QUALITY_MARGIN:g}",
        "geomean_speedup": f"geometric mean over the correct tasks of max(speedup, {SPEEDUP_FLOOR:g})",
        "level": "1: one method at its default parameters; 2: one method with a non-default parameter; 3: a "
                 "composition of methods",
        "resampling": f"95 % percentile bootstrap, {board.n_resamples} resamples, seed {functional.BOOTSTRAP_SEED}; "
                      "units: tasks (leaderboard), interleaving rounds i.e. batches (a task's speedup), (prompt, "
                      f"seed) clusters (image metrics); no CI from fewer than {functional.MIN_CI_UNITS} units",
    }


def _fraction(row: dict, column: str) -> str:
    return markdown.with_ci(row, column, n=row["tasks"])


def table_rows(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """The leaderboard table of report.md and the dataset card: header and cells, from the leaderboard rows."""
    header = (["Submission", "Correct"] + [f"fast_{p:g}" for p in board.fast_p]
              + ["GT parity", "Geomean speedup", "Quality loss", "PSNR to GT (dB)", "Identical to GT", "Failures"])
    cells = []
    for row in board.rows:
        name = f"**{row['submission']}** (reference)" if row["reference"] else f"`{row['submission']}`"
        cells.append([name, f"{row['correct']}/{row['tasks']}"]
                     + [_fraction(row, schema.fast_column(p)) for p in board.fast_p]
                     + [_fraction(row, "gt_parity"), markdown.with_ci(row, "geomean_speedup", suffix="×"),
                        markdown.with_ci(row, "quality_loss", suffix=" %", scale=100.0, undefined="n/a"),
                        markdown.number(row["psnr_gt"], 1) + (f" (n={row['psnr_gt_n']})" if row["psnr_gt_n"] else ""),
                        markdown.number(row["identical_to_gt"], 0, " %", 100.0),
                        (row["reasons"] or "").replace(";", ",")])
    return header, cells


def markdown_section(board: Leaderboard, heading: str = "##", images: bool = True, image_dir: str = "") -> str:
    header, cells = table_rows(board)
    d = definitions(board)
    lines = [f"{heading} Leaderboard", "",
             f"{len(board.rows) - 1} submission(s) on {board.rows[0]['tasks'] if board.rows else 0} task(s), "
             f"the GT first as the reference. Timings on {', '.join(board.meta.get('device_names') or ['?'])}; "
             f"weights {board.meta.get('weights')}.", "",
             markdown.table(header, cells), "",
             f"- **Correct**: {d['correct']}.",
             f"- **fast_p**: {d['fast_p']}. **GT parity**: {d['gt_parity']}. **Geomean speedup**: "
             f"{d['geomean_speedup']}. Quality loss, PSNR and identical images: over the correct tasks.",
             f"- **Confidence intervals**: {d['resampling']}; n beside each. n/a: no CI, or undefined.",
             f"- **Level**: {d['level']}."]
    lines += [f"- {note}" for note in board.notes]
    if images:
        lines += ["", f"![fast_p curves]({image_dir}{FAST_P_PNG})", "",
                  f"![speedup per task and submission]({image_dir}{HEATMAP_PNG})"]
    lines += ["", f"{heading}# Breakdown", "",
              markdown.table(["By", "Group", "Submission", "Correct"] + [f"fast_{p:g}" for p in board.fast_p]
                             + ["GT parity", "Geomean speedup"],
                             [[row["by"], row["group"], row["submission"], f"{row['correct']}/{row['tasks']}"]
                              + [markdown.number(row[schema.fast_column(p)]) for p in board.fast_p]
                              + [markdown.number(row["gt_parity"]), markdown.number(row["geomean_speedup"], suffix="×")]
                              for row in board.breakdown])]
    failed = [result for result in board.tasks if not result["correct"]]
    if failed:
        lines += ["", f"{heading}# Failed tasks", "", markdown.table(
            ["Submission", "Task", "Reason"],
            [[result["submission"], f"`{result['task_id']}`", result["reason"]] for result in failed])]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _title(title: str, weights: str | None) -> str:
    notes = [markdown.WEIGHTS_TITLES[mode] for mode in (weights or "").split("; ") if mode in markdown.WEIGHTS_TITLES]
    return title + (f" ({'; '.join(notes)})" if notes else "")


def fast_p_png(board: Leaderboard, title: str, weights: str | None = None) -> bytes:
    """fast_p over p in [0, 4], one step curve per submission, the GT dashed."""
    thresholds = np.linspace(0.0, CURVE_MAX_P, 401)
    curves = fast_p_curve(board.tasks, thresholds)
    figure = _figure(7, 4.5)
    axes = figure.add_subplot()
    for index, row in enumerate(board.rows):
        curve = curves.get(row["variant"])
        if curve is None:
            continue
        style = dict(color="black", linestyle="--", linewidth=1.6) if row["reference"] else dict(color=f"C{index % 10}")
        axes.step(thresholds, curve, where="post", label=f"{row['submission']} ({row['correct']}/{row['tasks']} "
                  f"correct)", **style)
    for p in board.fast_p:
        axes.axvline(p, color="grey", linewidth=0.6, alpha=0.5)
    axes.set_xlim(0, CURVE_MAX_P)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("speedup threshold p (×)")
    axes.set_ylabel("fast_p: fraction of all tasks correct and faster than p")
    axes.set_title(_title(f"{title}: fast_p", weights), fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    return _png(figure)


REASON_LABELS = {"missing": "missing", "rejected": "rejected", "error": "error", "nonfinite": "NaN", "oom": "OOM",
                 "timeout": "timeout", "crashed": "crashed", "no-rows": "no rows", "gate": "gate",
                 "deviates": "deviates"}


def heatmap_png(board: Leaderboard, title: str, weights: str | None = None) -> bytes:
    """Task (short id) x submission: speedup colour (log scale, 1x white); failed cells grey with the reason."""
    from matplotlib.colors import TwoSlopeNorm

    variants = [row["variant"] for row in board.rows]
    labels = ["GT (reference)" if row["reference"] else row["submission"] for row in board.rows]
    task_ids = list(dict.fromkeys(result["task_id"] for result in board.tasks))
    short = markdown.short_ids(task_ids)
    cell = {(result["task_id"], result["variant"]): result for result in board.tasks}
    values = np.full((len(task_ids), len(variants)), np.nan)
    for i, task_id in enumerate(task_ids):
        for j, variant in enumerate(variants):
            result = cell.get((task_id, variant))
            if result and result["correct"] and result["speedup"]:
                values[i, j] = math.log2(result["speedup"])
    figure = _figure(max(5.0, 1.3 * len(variants) + 3.0), max(3.0, 0.32 * len(task_ids) + 1.6))
    axes = figure.add_subplot()
    limit = max(1.0, float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0)
    axes.imshow(np.ones_like(values), cmap="Greys", vmin=0, vmax=5, aspect="auto")  # light grey under failures
    image = axes.imshow(np.ma.masked_invalid(values), cmap="RdYlGn", norm=TwoSlopeNorm(0.0, -limit, limit),
                        aspect="auto")
    for i, task_id in enumerate(task_ids):
        for j, variant in enumerate(variants):
            result = cell.get((task_id, variant))
            if result is None:
                continue
            if result["correct"]:
                text = markdown.number(result["speedup"], suffix="×") if result["speedup"] else "untimed"
                if "suspicious-speedup" in (result["flags"] or ""):
                    text += " !"
            else:
                text = REASON_LABELS.get(result["reason_kind"], result["reason_kind"] or "failed")
            axes.text(j, i, text, ha="center", va="center", fontsize=7,
                      color="black" if result["correct"] else "dimgrey",
                      fontstyle="normal" if result["correct"] else "italic")
    axes.set_xticks(range(len(variants)), labels, rotation=30, ha="right", fontsize=8)
    axes.set_yticks(range(len(task_ids)), [short[task_id] for task_id in task_ids], fontsize=7)
    colorbar = figure.colorbar(image, ax=axes, fraction=0.04)
    colorbar.set_label("speedup (log2; 0 = 1×)", fontsize=8)
    axes.set_title(_title(f"{title}: speedup per task (grey: not correct, with the reason)", weights), fontsize=9)
    figure.tight_layout()
    return _png(figure)


def read(directory: Path) -> Leaderboard:
    """The leaderboard ``accelbench score`` / ``report`` wrote into ``DIR/report/`` (or ``leaderboard --out``
    wrote into a folder: ``directory`` may be either), read back typed."""
    directory = Path(directory)
    in_report = (directory / schema.REPORT_DIR / LEADERBOARD_JSON).is_file()
    folder = directory / schema.REPORT_DIR if in_report else directory
    path = folder / LEADERBOARD_JSON
    if not path.is_file():
        raise LeaderboardError(f"{directory}: no leaderboard ({LEADERBOARD_JSON}): run `accelbench score` (or "
                               f"`report`) on a dataset with submissions")
    payload = json.loads(path.read_text())
    fast_p = tuple(payload.get("fast_p", schema.DEFAULT_FAST_P))
    rows = _read_csv(folder / LEADERBOARD_CSV, schema.leaderboard_columns(fast_p)).to_pylist()
    tasks = _read_csv(folder / TASKS_CSV, schema.LEADERBOARD_TASK_COLUMNS).to_pylist()
    return Leaderboard(rows, tasks, payload.get("breakdown", []), fast_p, payload.get("meta", {}),
                       payload.get("notes", []))
