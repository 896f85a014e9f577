"""Aggregates: one SUMMARY_COLUMNS row per (task, variant), pooled over batch sizes (``batch_size='all'``) and
per batch size (the breakdown). Inputs are stored numbers only: generation rows without images, the CLIP
scores of one recipe and the fidelity scores; no model runs here.

For a task, variant 'gt' (or any accelerated variant) is the task's own rows and variant 'baseline' the
baseline rows of its setting, repeated for every task of that setting (speedup 1 and quality loss 0 by
definition). Definitions (matching rules in :mod:`accelbench.scorer.pairing`):

* speedup = sum of matched baseline batch latencies / sum of matched variant batch latencies, one latency per
  batch (seed, batch size, batch index), with a paired bootstrap CI over batches; denoise_speedup the same
  with ``denoise_s``;
* clip_score = mean CLIP score of the variant's images; quality_loss = (mean baseline CLIP - mean variant
  CLIP) / mean baseline CLIP over matched images (both scored), paired bootstrap CI over images;
* psnr = mean PSNR to the matched baseline image over the images that are not identical to it (identical ones
  are counted in identical_to_baseline, which comes from the stored pixel hashes and needs no scores); inf
  when every compared image is identical. ssim = mean SSIM over all compared images. drift_psnr: the same PSNR
  rule for batch size > 1 vs batch size 1;
* flags: no-op (every ok accelerated image with a baseline is bit-identical to it), failed-rows, nonfinite,
  slowdown (speedup < 1), suspicious-speedup (speedup > 10).

Values that cannot be computed (no scores, no matched batch, a CI from fewer than 2 samples) are null.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from accelbench import dataset, schema
from accelbench.scorer import functional, pairing, store
from accelbench.scorer.fidelity import KIND_BASELINE, KIND_DRIFT

ALL_BATCH_SIZES = "all"
SUSPICIOUS_SPEEDUP = 10.0
FLAG_NO_OP, FLAG_FAILED, FLAG_NONFINITE = "no-op", "failed-rows", "nonfinite"
FLAG_SLOWDOWN, FLAG_SUSPICIOUS = "slowdown", "suspicious-speedup"

GENERATION_FIELDS = ["variant", "unit_id", "task_id", "setting_id", "model", "scheduler", "steps", "method",
                     "method_params", "prompt_index", "seed", "batch_size", "batch_index", "image_sha256",
                     "batch_latency_s", "image_latency_s", "denoise_s", "peak_memory_bytes", "timer", "status",
                     "device", "device_name", "dtype", "weights", "versions"]


# ---------------------------------------------------------------------------------------------------------
# Loading the stored numbers
# ---------------------------------------------------------------------------------------------------------


def load_generations(directory: Path) -> list[dict]:
    """The generation rows of a dataset as dicts, without images."""
    return dataset.read_generations(directory, GENERATION_FIELDS).to_pylist()


def load_clip_scores(directory: Path, recipe_id: str) -> dict[str, float]:
    """record_id -> CLIP score under one recipe (empty when that recipe was never scored)."""
    table = store.read_scores(store.clip_dir(directory, recipe_id), schema.CLIP_SCORE_COLUMNS)
    return dict(zip(table.column("record_id").to_pylist(), table.column("clip_score").to_pylist()))


def load_fidelity(directory: Path) -> dict[tuple[str, str], dict]:
    """(record_id, kind) -> fidelity row."""
    table = store.read_scores(store.fidelity_dir(directory), schema.FIDELITY_COLUMNS, key=("record_id", "kind"))
    return {(row["record_id"], row["kind"]): row for row in table.to_pylist()}


# ---------------------------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _Group:
    """The rows one task's summary rows come from: its accelerated rows and its setting's baseline rows."""

    task_id: str | None  # None: a setting's baseline that no accelerated row refers to
    variant: str | None
    rows: list[dict]  # the accelerated rows (empty for such a baseline)
    baseline_rows: list[dict]

    @property
    def first(self) -> dict:  # model, scheduler, steps and setting are the same in every row of the group
        return (self.rows or self.baseline_rows)[0]

    def sort_key(self) -> tuple:
        first = self.first
        return (first["model"], first["scheduler"], first["steps"], self.task_id is not None,
                first["method"] if self.rows else "", self.task_id or "", self.variant or "")

    def batch_sizes(self) -> list[int]:
        return sorted({row["batch_size"] for row in self.rows or self.baseline_rows})


def summarize(rows: list[dict], clip_scores: dict[str, float] | None = None,
              fidelity: dict[tuple[str, str], dict] | None = None, recipe_id: str | None = None,
              n_resamples: int = functional.BOOTSTRAP_RESAMPLES) -> tuple[list[dict], list[dict]]:
    """(pooled rows, per-batch-size rows), each a list of SUMMARY_COLUMNS dicts, ordered by model, scheduler,
    steps, method, task, with each task's baseline row before its accelerated row(s). The breakdown has the
    batch sizes of the task's own rows.

    A setting whose baseline has no accelerated rows at all still gets its baseline row (task_id null)."""
    context = _Context(clip_scores or {}, fidelity or {}, recipe_id, n_resamples)
    baselines: dict[str, list[dict]] = {}
    accelerated: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row["variant"] == pairing.BASELINE:
            baselines.setdefault(row["setting_id"], []).append(row)
        else:
            accelerated.setdefault((row["task_id"], row["variant"]), []).append(row)
    groups = [_Group(task_id, variant, task_rows, baselines.get(task_rows[0]["setting_id"], []))
              for (task_id, variant), task_rows in accelerated.items()]
    covered = {group.first["setting_id"] for group in groups}
    groups += [_Group(None, None, [], base_rows) for setting, base_rows in baselines.items() if setting not in covered]

    pooled, by_batch_size = [], []
    baseline_cache: dict[tuple, dict] = {}  # a setting's baseline numbers, computed once for all its tasks
    for group in sorted(groups, key=_Group.sort_key):
        for batch_size in [ALL_BATCH_SIZES, *group.batch_sizes()]:
            def subset(selected, size=batch_size):
                return selected if size == ALL_BATCH_SIZES else [row for row in selected if row["batch_size"] == size]

            key = (group.first["setting_id"], batch_size)
            if key not in baseline_cache:
                baseline_cache[key] = _baseline_summary(subset(group.baseline_rows), group.first, context)
            out = pooled if batch_size == ALL_BATCH_SIZES else by_batch_size
            out.append({**baseline_cache[key], "task_id": group.task_id, "batch_size": str(batch_size)})
            if group.rows:
                out.append({**_variant_summary(subset(group.rows), subset(group.baseline_rows), context),
                            "task_id": group.task_id, "variant": group.variant, "batch_size": str(batch_size)})
    return pooled, by_batch_size


class _Context:
    def __init__(self, clip_scores, fidelity, recipe_id, n_resamples):
        self.clip_scores = clip_scores
        self.fidelity = fidelity
        self.recipe_id = recipe_id
        self.n_resamples = n_resamples

    def estimate(self, statistic, *samples) -> tuple[float | None, float | None, float | None]:
        """(value, CI low, CI high) of ``statistic`` on the samples; nulls where it cannot be computed."""
        if not len(samples[0]):
            return None, None, None
        arrays = [np.asarray(sample, dtype=np.float64) for sample in samples]
        # 0/0 happens (a random-weight CLIP clamps every baseline image to 0): the value is then undefined.
        with np.errstate(divide="ignore", invalid="ignore"):
            value = float(statistic(*arrays))
            if not math.isfinite(value):
                return None, None, None
            low, high = functional.bootstrap_ci(statistic, *arrays, n_resamples=self.n_resamples)
        return value, _finite_or_none(low), _finite_or_none(high)

    def scores(self, rows: list[dict]) -> list[float]:
        return [self.clip_scores[row["record_id"]] for row in rows
                if pairing.is_ok(row) and _is_number(self.clip_scores.get(row["record_id"]))]

    def fidelity_of(self, rows: list[dict], kind: str) -> list[dict]:
        return [self.fidelity[(row["record_id"], kind)] for row in rows
                if pairing.is_ok(row) and (row["record_id"], kind) in self.fidelity]


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _is_number(value) -> bool:
    return value is not None and math.isfinite(value)


def _common(rows: list[dict], first: dict, context: _Context) -> dict:
    """The columns every summary row has, whatever its variant."""
    ok = [row for row in rows if pairing.is_ok(row)]
    latencies = [row["image_latency_s"] for row in ok if _is_number(row["image_latency_s"])]
    memory = [row["peak_memory_bytes"] for row in rows if row["peak_memory_bytes"] is not None]
    failed = len(rows) - len(ok)
    flags = ([FLAG_FAILED] if failed else []) + (
        [FLAG_NONFINITE] if any(row["status"] == schema.STATUS_NONFINITE for row in rows) else [])
    return {
        **schema.empty_row(schema.SUMMARY_COLUMNS),
        "model": first["model"], "scheduler": first["scheduler"], "steps": first["steps"],
        "images": len(rows), "failed": failed,
        "median_image_latency_s": statistics.median(latencies) if latencies else None,
        "peak_memory_bytes": max(memory) if memory else None,
        "recipe_id": context.recipe_id if context.clip_scores else None,
        "device_name": _distinct(rows, "device_name"), "weights": _distinct(rows, "weights"),
        "flags": flags,
    }


def _distinct(rows: list[dict], column: str) -> str | None:
    values = sorted({row[column] for row in rows if row[column] is not None})
    return "; ".join(values) if values else None


def _psnr_mean(scores: list[dict]) -> tuple[list[float], float | None]:
    """(PSNRs of the non-identical images, inf when every compared image was identical, else None)."""
    values = [score["psnr"] for score in scores if not score["identical"] and _is_number(score["psnr"])]
    return values, math.inf if scores and all(score["identical"] for score in scores) else None


def _baseline_summary(rows: list[dict], first: dict, context: _Context) -> dict:
    summary = _common(rows, first, context)
    timed = pairing.batch_values(rows, "batch_latency_s")
    denoise_timed = pairing.batch_values(rows, "denoise_s")
    clip = context.scores(rows)
    clip_score, clip_low, clip_high = context.estimate(functional.mean, clip)
    drift, all_identical = _psnr_mean(context.fidelity_of(rows, KIND_DRIFT))
    method_params = rows[0]["method_params"] if rows else None
    summary.update({
        "variant": pairing.BASELINE, "method": "none", "method_params": method_params,
        # By definition: the baseline against itself.
        "speedup": 1.0 if timed else None, "speedup_ci_low": 1.0 if timed else None,
        "speedup_ci_high": 1.0 if timed else None,
        "denoise_speedup": 1.0 if denoise_timed else None, "denoise_speedup_ci_low": 1.0 if denoise_timed else None,
        "denoise_speedup_ci_high": 1.0 if denoise_timed else None,
        "clip_score": clip_score, "clip_score_ci_low": clip_low, "clip_score_ci_high": clip_high,
        "baseline_clip_score": clip_score,
        "quality_loss": 0.0 if clip else None, "quality_loss_ci_low": 0.0 if clip else None,
        "quality_loss_ci_high": 0.0 if clip else None,
        "drift_psnr": float(functional.mean(drift)) if drift else all_identical,
    })
    summary["flags"] = ";".join(summary["flags"])
    return summary


def _variant_summary(rows: list[dict], base_rows: list[dict], context: _Context) -> dict:
    summary = _common(rows, rows[0], context)
    flags = summary["flags"]
    summary.update({"method": rows[0]["method"], "method_params": rows[0]["method_params"]})

    # Time: matched batches, one latency each.
    for column, prefix in (("batch_latency_s", "speedup"), ("denoise_s", "denoise_speedup")):
        variant_batches, base_batches = pairing.batch_values(rows, column), pairing.batch_values(base_rows, column)
        matched = sorted(set(variant_batches) & set(base_batches))
        summary[prefix], summary[f"{prefix}_ci_low"], summary[f"{prefix}_ci_high"] = context.estimate(
            functional.ratio_of_sums, [base_batches[key] for key in matched], [variant_batches[key] for key in matched])

    # Quality: CLIP of the variant's images, and its loss against the matched baseline images.
    summary["clip_score"], summary["clip_score_ci_low"], summary["clip_score_ci_high"] = context.estimate(
        functional.mean, context.scores(rows))
    pairs = pairing.baseline_references(base_rows + rows)
    scored = [(base, row) for row, base in pairs
              if _is_number(context.clip_scores.get(base["record_id"]))
              and _is_number(context.clip_scores.get(row["record_id"]))]
    base_clip = [context.clip_scores[base["record_id"]] for base, _ in scored]
    variant_clip = [context.clip_scores[row["record_id"]] for _, row in scored]
    summary["baseline_clip_score"] = float(functional.mean(base_clip)) if scored else None
    summary["quality_loss"], summary["quality_loss_ci_low"], summary["quality_loss_ci_high"] = context.estimate(
        functional.relative_loss, base_clip, variant_clip)

    # Fidelity to the baseline images, and to the same image at batch size 1.
    fidelity = context.fidelity_of(rows, KIND_BASELINE)
    psnrs, all_identical = _psnr_mean(fidelity)
    summary["psnr"], summary["psnr_ci_low"], summary["psnr_ci_high"] = (
        context.estimate(functional.mean, psnrs) if psnrs else (all_identical,) * 3)
    summary["ssim"], summary["ssim_ci_low"], summary["ssim_ci_high"] = context.estimate(
        functional.mean, [score["ssim"] for score in fidelity if _is_number(score["ssim"])])
    identical = sum(1 for row, base in pairs if row["image_sha256"] and row["image_sha256"] == base["image_sha256"])
    summary["identical_to_baseline"] = identical
    drift, drift_identical = _psnr_mean(context.fidelity_of(rows, KIND_DRIFT))
    summary["drift_psnr"] = float(functional.mean(drift)) if drift else drift_identical

    if pairs and identical == len(pairs):
        flags.insert(0, FLAG_NO_OP)
    if summary["speedup"] is not None and summary["speedup"] < 1:
        flags.append(FLAG_SLOWDOWN)
    if summary["speedup"] is not None and summary["speedup"] > SUSPICIOUS_SPEEDUP:
        flags.append(FLAG_SUSPICIOUS)
    summary["flags"] = ";".join(flags)
    return summary


def to_table(summaries: list[dict]) -> pa.Table:
    """SUMMARY_COLUMNS rows -> pyarrow table (no datasets metadata: reports are plain tables)."""
    return pa.Table.from_pylist(summaries, schema=schema.arrow_schema(schema.SUMMARY_COLUMNS, with_features=False))
