"""The leaderboard: per submission (and the GT, the reference), over every task of the dataset(s), from the
per-task results of :mod:`accelbench.scorer.correctness` (a task without rows counting as failed, ``no-rows``):

* ``fast_p`` (:func:`accelbench.scorer.functional.fast_p`): the fraction of ALL tasks that ask for an acceleration
  (pipeline tasks, level 1, are judged on correctness alone) that are correct with a speedup > p, with a bootstrap
  CI over tasks;
* ``gt_parity``: the fraction of all tasks that *reach the GT* (:mod:`accelbench.scorer.correctness`);
* ``geomean_speedup``: the geometric mean over the correct tasks of max(speedup, :data:`SPEEDUP_FLOOR`);
* ``quality_loss``, ``psnr_gt``, ``ssim_gt``, ``identical_to_gt``: over the correct tasks;
* ``pass_l1`` .. ``pass_l5``: the fraction of each level's tasks solved (DiffBench's headline; at levels 4 and 5
  the target-met rate), with a bootstrap CI over that level's tasks, and ``targets_not_decidable``;
* a breakdown of the same by model family, method and task level;
* rank, rank range and ties (:mod:`accelbench.scorer.ranking`): a paired speedup comparison of every two entries
  on the tasks both solved, ``report/leaderboard_pairs.csv``.

Entries are ordered the GT first (the reference), then by fast_p at p = 1, correct tasks, geomean speedup (so
that of two submissions with the same counts the faster ranks higher, not the first by name) and name.

Confidence intervals are 95 % percentile bootstraps; the resampling units are tasks here, repeats and then
batches within each for a task's speedup (from ``functional.MIN_CI_REPEATS`` repeats, else batches: the rounds of
one run) and (prompt, seed) clusters for its image metrics (:mod:`aggregate`). No CI is computed from fewer than
``functional.MIN_CI_UNITS`` units. The files are :mod:`.leaderboard_files`, merging several datasets' results
:mod:`.leaderboard_merge`, the Markdown :mod:`.leaderboard_markdown`, the plots :mod:`.plots`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from accelbench import schema
from accelbench.errors import UserInputError
from accelbench.manifest import LATENCY_LEVEL, LEVELS, PIPELINE_LEVEL, SPEEDUP_LEVEL
from accelbench.scorer import functional, ranking
from accelbench.scorer.correctness import DRIFT_MARGIN_DB, GT_SPEED_FRACTION, QUALITY_MARGIN, complete, task_results
from accelbench.scorer.targets import NOT_DECIDABLE

SPEEDUP_FLOOR = 0.1  # geometric mean: each speedup counts as at least this
BREAKDOWNS = ("model", "method", "level")


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
    pairs: list[dict] = field(default_factory=list)  # LEADERBOARD_PAIR_COLUMNS, every two entries


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


def _solved(results: list[dict], n_resamples: int, with_ci: bool = True) -> tuple:
    """(fraction of ``results`` correct, its CI over them, n); None and no CI for no results."""
    if not results:
        return None, None, None, 0
    solved = np.array([bool(result["correct"]) for result in results], dtype=np.float64)
    low, high = _ci(solved, n_resamples) if with_ci else (None, None)
    return float(solved.mean()), low, high, len(solved)


def _score(results: list[dict], fast_p, n_resamples: int, with_ci: bool = True) -> dict:
    """The leaderboard numbers of one submission's results (one per task)."""
    correct = np.array([bool(result["correct"]) for result in results])
    row: dict = {"tasks": len(results), "correct": int(correct.sum())}
    # fast_p over the tasks that ask for an acceleration: a pipeline task (level 1) is judged on correctness alone.
    accelerated = [result for result in results if result.get("level") != PIPELINE_LEVEL]
    fast_correct = np.array([bool(result["correct"]) for result in accelerated], dtype=bool)
    speedup = np.array([_float(result["speedup"]) for result in accelerated], dtype=np.float64)
    for p in fast_p:
        name = schema.fast_column(p)
        with np.errstate(invalid="ignore"):
            indicator = (fast_correct & (speedup > p)).astype(np.float64)
        row[name] = float(functional.fast_p(fast_correct, speedup, p)) if len(accelerated) else None
        row[f"{name}_ci_low"], row[f"{name}_ci_high"] = (
            _ci(indicator, n_resamples) if with_ci and len(accelerated) else (None, None))
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
    for level in LEVELS:  # DiffBench's headline: the pass rate per level
        name = schema.level_column(level)
        row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"], row[f"{name}_n"] = _solved(
            [result for result in results if result.get("level") == level], n_resamples, with_ci)
    row["targets_not_decidable"] = sum(result.get("target_verdict") == NOT_DECIDABLE for result in results)
    row["reasons"] = _counted(result["reason_kind"] for result in results if not result["correct"])
    row["flags"] = _counted(flag for result in good for flag in (result["flags"] or "").split(";"))
    return row


def summarize(results: list[dict], fast_p=schema.DEFAULT_FAST_P, n_resamples: int = functional.BOOTSTRAP_RESAMPLES
              ) -> tuple[list[dict], list[dict]]:
    """(leaderboard rows, breakdown rows) of completed task results (:func:`complete`). The GT row comes first
    (``reference``), then the submissions by fast_p at p = 1 (else the first p), correct tasks, geomean speedup
    and name."""
    by_variant: dict[str, list[dict]] = {}
    for result in results:
        by_variant.setdefault(result["variant"], []).append(result)
    rows, breakdown = [], []
    for variant, members in by_variant.items():
        rows.append({
            **schema.empty_row(schema.leaderboard_columns(fast_p)),
            "submission": schema.submission_name(variant), "variant": variant, "reference": variant == schema.GT,
            **_score(members, fast_p, n_resamples),
            "device_name": _distinct(result["device_name"] for result in members),
            "weights": _distinct(result["weights"] for result in members),
            "datasets": len({result["dataset"] for result in members if result["correct"] or result["reason_kind"]
                             != schema.REASON_NO_ROWS}),
        })
        for by in BREAKDOWNS:
            groups: dict = {}
            for result in members:
                groups.setdefault(result[by], []).append(result)
            for group in sorted(groups, key=lambda value: (value is None, value)):
                score = _score(groups[group], fast_p, n_resamples, with_ci=False)
                solved, low, high, n = _solved(groups[group], n_resamples)  # the share solved, its CI over tasks
                breakdown.append({"submission": schema.submission_name(variant), "variant": variant, "by": by,
                                  "group": "?" if group is None else str(group),
                                  **{key: score[key] for key in ("tasks", "correct", "gt_parity", "geomean_speedup",
                                                                 "quality_loss")},
                                  "solved": solved, "solved_ci_low": low, "solved_ci_high": high, "solved_n": n,
                                  **{schema.fast_column(p): score[schema.fast_column(p)] for p in fast_p}})
    fast = schema.fast_column(1.0 if 1.0 in fast_p else fast_p[0])
    rows.sort(key=lambda row: (not row["reference"], -(row[fast] or 0.0), -row["correct"],
                               -(row["geomean_speedup"] or 0.0), row["submission"]))
    order = {row["variant"]: index for index, row in enumerate(rows)}
    breakdown.sort(key=lambda row: (BREAKDOWNS.index(row["by"]), row["group"], order[row["variant"]]))
    return rows, breakdown


def fast_p_curve(results: list[dict], thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """variant -> fast_p at every threshold (the curve of ``fast_p.png``)."""
    curves = {}
    for variant in dict.fromkeys(result["variant"] for result in results):
        members = [result for result in results
                   if result["variant"] == variant and result.get("level") != PIPELINE_LEVEL]
        curves[variant] = functional.fast_p(np.array([bool(r["correct"]) for r in members]),
                                            np.array([_float(r["speedup"]) for r in members]), thresholds)
    return curves


def build(results: list[dict], meta: dict, fast_p=schema.DEFAULT_FAST_P,
          n_resamples: int = functional.BOOTSTRAP_RESAMPLES, notes: list[str] | None = None) -> Leaderboard:
    completed = complete(results)
    rows, breakdown = summarize(completed, tuple(fast_p), n_resamples)
    pairs = ranking.rank(rows, completed, SPEEDUP_FLOOR, n_resamples)
    notes = list(notes or [])
    notes += _notes(completed)
    return Leaderboard(rows, completed, breakdown, tuple(fast_p), meta, notes, n_resamples, pairs)


def _notes(results: list[dict]) -> list[str]:
    notes = []
    submissions = [r for r in results if schema.is_submission(r["variant"])]
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
    targets = {r["task_id"] for r in results if r.get("level") in (SPEEDUP_LEVEL, LATENCY_LEVEL)}
    if targets:
        notes.append(f"The {len(targets)} target task(s) judge quality by PSNR to the baseline's images and CLIP loss, "
                     f"relative to the live reference (PSNR alone where CLIP scores come from random weights); SSIM "
                     f"is recorded beside PSNR. LPIPS is not computed: its backbone weights (torchvision's AlexNet "
                     f"or VGG) are a download, which accelbench does not make.")
    no_speedup = [r for r in results if r["correct"] and r["speedup"] is None]
    if no_speedup:
        notes.append(f"{len(no_speedup)} correct (variant, task) pair(s) have no measured speedup (no baseline "
                     f"timing): they count as not fast at any p.")
    return notes


def markdown_named(items: list, limit: int = 3) -> str:
    more = len(items) - limit
    return ", ".join(f"`{item}`" for item in items[:limit]) + (f" and {more} more" if more > 0 else "")


def from_report(directory: Path, rows: list[dict], pooled: list[dict], facts: dict[str, dict],
                verdicts: pa.Table | None, manifest: dict, fast_p=schema.DEFAULT_FAST_P,
                n_resamples: int = functional.BOOTSTRAP_RESAMPLES, by_batch_size: list[dict] | None = None,
                clip_random: bool = False) -> Leaderboard | None:
    """The leaderboard of one dataset (``facts``: its task facts), or None when it holds no submission.
    ``by_batch_size``: the per-batch-size summaries (latency targets are judged at batch size 1);
    ``clip_random``: the CLIP scores come from random weights (target tasks' quality is then PSNR's alone)."""
    if not any(schema.is_submission(row["variant"]) for row in rows):
        return None
    directory = Path(directory)
    results = task_results(rows, pooled, facts, verdicts, dataset_name=directory.name, suite=manifest.get("suite"),
                           by_batch_size=by_batch_size, clip_random=clip_random)
    baselines: dict[str, set[str]] = {}
    for row in rows:
        if row["variant"] == schema.BASELINE and row["program_sha256"]:
            baselines.setdefault(row["setting_id"], set()).add(row["program_sha256"])
    meta = {"suite": manifest.get("suite"), "weights": manifest.get("weights"),
            "device_names": sorted({row["device_name"] for row in rows if row["device_name"]}),
            "baselines": {setting: sorted(shas) for setting, shas in sorted(baselines.items())},
            "datasets": [directory.name], "gated": verdicts is not None}
    notes = []
    if verdicts is None:
        notes.append(f"No gate verdicts ({schema.GATE_DIR}/{schema.VERDICTS_GLOB}): the programs were not gated, "
                     f"which fails no task here; correctness comes from the rows' statuses and the PSNR to the GT.")
    else:
        ungated = [r for r in results if not r["gated"] and r["reason_kind"] not in ("missing", "no-rows")]
        if ungated:
            notes.append(f"{len(ungated)} (variant, task) pair(s) have no gate verdict (not gated, which fails "
                         f"nothing): {markdown_named(sorted({r['variant'] + ' ' + r['task_id'] for r in ungated}))}.")
    return build(results, meta, fast_p, n_resamples, notes)


def definitions(board: Leaderboard) -> dict[str, str]:
    return {
        "correct": "every row ok, the gate passed (when verdicts exist) and, for a submission, mean PSNR to the "
                   "GT's images >= min(method's deviation_psnr_db, GT drift PSNR - "
                   f"{DRIFT_MARGIN_DB:g} dB); a target task (levels 4, 5): every row ok, the gate passed and the "
                   "target verdict met (its quality is the budget's, no PSNR-to-GT rule)",
        "fast_p": "fraction of ALL tasks that ask for an acceleration (levels 2-5; pipeline tasks, level 1, are "
                  "judged on correctness alone) that are correct with speedup > p (failures stay in the denominator)",
        "gt_parity": f"fraction of all tasks correct with speedup >= {GT_SPEED_FRACTION:g} x the GT's and quality "
                     f"loss <= the GT's + {QUALITY_MARGIN:g}",
        "geomean_speedup": f"geometric mean over the correct tasks of max(speedup, {SPEEDUP_FLOOR:g})",
        "level": "; ".join(f"{level}: {meaning}" for level, meaning in LEVELS.items()),
        "solved_by_level": "each level's tasks solved (correct; at levels 4 and 5 the target met), DiffBench's pass "
                           "rate: `pass_l1`..`pass_l5` in leaderboard.csv with a CI over the level's tasks, the "
                           "breakdown below by level; `targets_not_decidable` counts the target tasks whose speed "
                           "interval straddled the target",
        "resampling": f"95 % percentile bootstrap, {board.n_resamples} resamples, seed {functional.BOOTSTRAP_SEED}; "
                      "units: tasks (leaderboard), repeats and then batches within each (a task's speedup, from "
                      f"{functional.MIN_CI_REPEATS} repeats; else batches, i.e. interleaving rounds, which cover the "
                      "rounds of one run only), (prompt, seed) clusters (image metrics); no CI from fewer than "
                      f"{functional.MIN_CI_UNITS} units",
        "rank": "order: the GT first (the reference), then fast_1, correct tasks, geomean speedup, name; two entries "
                "are compared on the acceleration tasks both solved (geometric mean of their speedup ratios, expanded"
                f" percentile CI over those tasks, from {functional.MIN_CI_UNITS}): faster or slower where the CI "
                "excludes 1, tied where it includes it, n/a without a CI; separated where the numbers of correct "
                "tasks differ or one is faster; rank range: 1 + the submissions above that are separated from it, to "
                "its rank + those below that are not; tied with: the entries it is not separated from",
    }
