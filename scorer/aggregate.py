"""Aggregates: one SUMMARY_COLUMNS row per (task, variant), pooled over batch sizes (``batch_size='all'``) and
per batch size (the breakdown). Inputs are stored numbers only: generation rows without images, the CLIP
scores of one recipe and the fidelity scores; no model runs here.

For a task, variant 'gt' (or a submission's 'sub:<name>') is the task's own rows and variant 'baseline' the
baseline rows of its setting, repeated for every task of that setting (speedup 1 and quality loss 0 by
definition). Definitions (matching rules in :mod:`accelbench.scorer.pairing`):

* speedup = sum of baseline batch latencies / sum of variant batch latencies over the variant's ok batches of
  every repeat, each paired with the baseline latency of its own round (``baseline_latency_s``; batch-key
  matching where it is null). Its CI (:func:`functional.estimate_over_repeats`) is two-level from
  ``functional.MIN_CI_REPEATS`` repeats (fresh sets of worker processes): repeats, then batches within each;
  with fewer it is over batches (the interleaving rounds: every batch is one round at one batch size), which
  covers the rounds of the run(s) only, not how a speedup moves between runs. denoise_speedup the same with
  ``denoise_s`` (matched by batch key);
* clip_score = mean CLIP score of the variant's images; quality_loss = (mean baseline CLIP - mean variant
  CLIP) / mean baseline CLIP over matched images (both scored); undefined (null, listed in ``undefined``) when
  the baseline scores sum to 0;
* psnr = mean PSNR to the matched baseline image over the images that are not identical to it (identical ones
  are counted in identical_to_baseline, which comes from the stored pixel hashes and needs no scores); inf
  when every compared image is identical. ssim = mean SSIM over all compared images. drift_psnr: the same PSNR
  rule for batch size > 1 vs batch size 1, with the pairs and identical pairs counted; psnr_gt / ssim_gt the
  same against the task's GT images (submissions);
* image metrics resample (prompt, seed) clusters: the same prompt and seed at batch sizes 1 and 4 are one
  sample, not two (:func:`accelbench.scorer.functional.cluster_sums`). Every CI has its ``_n`` (resampling
  units); fewer than ``functional.MIN_CI_UNITS`` units give no CI;
* flags: no-op (every ok accelerated image with a baseline is bit-identical to it), failed-rows, nonfinite,
  slowdown (the whole speedup CI below 1x), no-clear-speedup (speedup < 1x but the CI reaches 1x, or there is
  no CI), suspicious-speedup (> 10x; or a submission faster than 1.5x the GT's speedup on the same task and
  than the denoiser-work bound ``speedup_bound``, or 1.5x the GT's alone when there is no bound).

Values that cannot be computed (no scores, no matched batch) are null.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from accelbench import dataset, schema
from accelbench.manifest import BASELINE_METHOD
from accelbench.schema import KIND_BASELINE, KIND_DRIFT, KIND_GT
from accelbench.scorer import functional, pairing, store

ALL_BATCH_SIZES = "all"
SUSPICIOUS_SPEEDUP = 10.0  # any variant
SUSPICIOUS_VS_GT = 1.5  # a submission faster than this multiple of the GT's speedup (and than speedup_bound)
UNDEFINED_QUALITY_LOSS = "quality_loss"

GENERATION_FIELDS = ["variant", "submission", "unit_id", "task_id", "setting_id", "program_sha256", "model",
                     "scheduler", "steps", "method", "method_params", "prompt_index", "seed", "batch_size",
                     "batch_index", "image_sha256", "batch_latency_s", "image_latency_s", "baseline_latency_s",
                     "round", "repeat", "denoise_s", "peak_memory_bytes", "timer", "status", "error", "device",
                     "device_name", "dtype", "weights", "versions"]


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
        if row["variant"] == schema.BASELINE:
            baselines.setdefault(row["setting_id"], []).append(row)
        else:
            accelerated.setdefault((row["task_id"], row["variant"]), []).append(row)
    context.gt_rows = {task_id: task_rows for (task_id, variant), task_rows in accelerated.items()
                       if variant == schema.GT}
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
                out.append({**_variant_summary(subset(group.rows), subset(group.baseline_rows), context,
                                               subset(context.gt_rows.get(group.task_id, []))),
                            "task_id": group.task_id, "variant": group.variant, "batch_size": str(batch_size)})
    for summaries in (pooled, by_batch_size):
        _flag_relative_to_gt(summaries)
    return pooled, by_batch_size


def _flag_relative_to_gt(summaries: list[dict]) -> None:
    """suspicious-speedup for a submission much faster than the GT on the same task and batch size(s)."""
    gts = {(row["task_id"], row["batch_size"]): row for row in summaries if row["variant"] == schema.GT}
    for row in summaries:
        gt = gts.get((row["task_id"], row["batch_size"]))
        if not schema.is_submission(row["variant"]) or gt is None or row["speedup"] is None or not gt["speedup"]:
            continue
        flags = row["flags"].split(";") if row["flags"] else []
        bound = row["speedup_bound"]
        if (schema.FLAG_SUSPICIOUS not in flags and row["speedup"] > SUSPICIOUS_VS_GT * gt["speedup"]
                and (bound is None or row["speedup"] > bound)):
            row["flags"] = ";".join(flags + [schema.FLAG_SUSPICIOUS])


class _Context:
    def __init__(self, clip_scores, fidelity, recipe_id, n_resamples):
        self.clip_scores = clip_scores
        self.fidelity = fidelity
        self.recipe_id = recipe_id
        self.n_resamples = n_resamples
        self.gt_rows: dict[str, list[dict]] = {}  # task id -> the task's GT rows

    def estimate(self, statistic, *samples) -> tuple[float | None, float | None, float | None, int]:
        return functional.estimate(statistic, *samples, n_resamples=self.n_resamples)

    def mean(self, values: list[float], clusters: list[tuple]) -> tuple[float | None, float | None, float | None, int]:
        """Mean of per-image values with a cluster bootstrap CI over (prompt, seed) clusters."""
        sums, counts = functional.cluster_sums(values, clusters)
        return self.estimate(functional.ratio_of_sums, sums, counts)

    def relative_loss(self, reference: list[float], values: list[float], clusters: list[tuple]):
        """Quality loss of paired images, CI resampling (prompt, seed) clusters of pairs."""
        reference_sums, _ = functional.cluster_sums(reference, clusters)
        value_sums, _ = functional.cluster_sums(values, clusters)
        return self.estimate(functional.relative_loss, reference_sums, value_sums)

    def scores(self, rows: list[dict]) -> tuple[list[float], list[tuple]]:
        """(CLIP scores, their clusters) of the ok, scored rows."""
        scored = [row for row in rows if pairing.is_ok(row) and _is_number(self.clip_scores.get(row["record_id"]))]
        return [self.clip_scores[row["record_id"]] for row in scored], [pairing.cluster_key(row) for row in scored]

    def fidelity_of(self, rows: list[dict], kind: str) -> list[tuple[dict, tuple]]:
        """(fidelity row, cluster) of the ok rows that have a fidelity row of ``kind``."""
        return [(self.fidelity[(row["record_id"], kind)], pairing.cluster_key(row)) for row in rows
                if pairing.is_ok(row) and (row["record_id"], kind) in self.fidelity]


def _is_number(value) -> bool:
    return value is not None and math.isfinite(value)


def _common(rows: list[dict], first: dict, context: _Context) -> dict:
    """The columns every summary row has, whatever its variant."""
    ok = [row for row in rows if pairing.is_ok(row)]
    latencies = [row["image_latency_s"] for row in ok if _is_number(row["image_latency_s"])]
    memory = [row["peak_memory_bytes"] for row in rows if row["peak_memory_bytes"] is not None]
    failed = len(rows) - len(ok)
    # Latency per image: per batch (ms, its images), by repeat.
    images = Counter(pairing.batch_key(row) for row in rows)
    per_batch = {key: (1000 * value, images[key])
                 for key, value in pairing.batch_values(rows, "batch_latency_s").items()}
    flags = ([schema.FLAG_FAILED] if failed else []) + (
        [schema.FLAG_NONFINITE] if any(row["status"] == schema.STATUS_NONFINITE for row in rows) else [])
    return {
        **schema.empty_row(schema.SUMMARY_COLUMNS),
        "model": first["model"], "scheduler": first["scheduler"], "steps": first["steps"],
        "images": len(rows), "failed": failed,
        "median_image_latency_s": statistics.median(latencies) if latencies else None,
        "peak_memory_bytes": max(memory) if memory else None,
        **_with_n("latency_ms", functional.estimate_over_repeats(functional.ratio_of_sums,
                                                                 pairing.by_repeat(per_batch), context.n_resamples)),
        "recipe_id": context.recipe_id if context.clip_scores else None,
        "device_name": _distinct(rows, "device_name"), "weights": _distinct(rows, "weights"),
        "flags": flags,
    }


def _distinct(rows: list[dict], column: str) -> str | None:
    values = sorted({row[column] for row in rows if row[column] is not None})
    return "; ".join(values) if values else None


def _psnr_samples(scores: list[tuple[dict, tuple]]) -> tuple[list[float], list[tuple], float | None]:
    """(PSNRs of the non-identical images, their clusters, inf when every compared image was identical else
    None)."""
    kept = [(score["psnr"], cluster) for score, cluster in scores
            if not score["identical"] and _is_number(score["psnr"])]
    all_identical = math.inf if scores and all(score["identical"] for score, _ in scores) else None
    return [value for value, _ in kept], [cluster for _, cluster in kept], all_identical


def _psnr_estimate(context: _Context, scores: list[tuple[dict, tuple]]) -> tuple:
    """(mean PSNR, CI low, CI high, n): inf without a CI when every image is identical."""
    values, clusters, all_identical = _psnr_samples(scores)
    if values:
        return context.mean(values, clusters)
    return all_identical, all_identical, all_identical, 0


def _drift(context: _Context, rows: list[dict]) -> dict:
    scores = context.fidelity_of(rows, KIND_DRIFT)
    values, _, all_identical = _psnr_samples(scores)
    return {"drift_psnr": float(functional.mean(values)) if values else all_identical,
            "drift_pairs": len(scores), "drift_identical": sum(1 for score, _ in scores if score["identical"])}


def speedup_bound(base_rows: list[dict]) -> float | None:
    """The denoiser-work bound of a setting: summed baseline latency / summed latency outside the denoising
    loop over the baseline's batches with both numbers: the speedup of a program whose denoising loop took no
    time (Amdahl). None without stage timings."""
    latency = pairing.batch_values(base_rows, "batch_latency_s")
    denoise = pairing.batch_values(base_rows, "denoise_s")
    keys = [key for key in latency if key in denoise]
    outside = sum(latency[key] - denoise[key] for key in keys)
    if not keys or outside <= 0:
        return None
    return sum(latency[key] for key in keys) / outside


def _exact(value: float, n: int, *repeats: int) -> tuple:
    """A value that holds by definition: its CI is the value itself, given enough units (and ``repeats``, the
    repeats they come from, passed through)."""
    if not n:
        return None, None, None, 0, *repeats
    bound = value if n >= functional.MIN_CI_UNITS else None
    return value, bound, bound, n, *repeats


def _with_n(prefix: str, estimate: tuple) -> dict:
    value, low, high, n, *repeats = estimate
    return {prefix: value, f"{prefix}_ci_low": low, f"{prefix}_ci_high": high, f"{prefix}_n": n,
            **{f"{prefix}_repeats": count for count in repeats}}


def _baseline_summary(rows: list[dict], first: dict, context: _Context) -> dict:
    summary = _common(rows, first, context)
    timed = pairing.by_repeat(pairing.batch_values(rows, "batch_latency_s"))
    denoise_timed = pairing.by_repeat(pairing.batch_values(rows, "denoise_s"))
    clip, clusters = context.scores(rows)
    clip_estimate = context.mean(clip, clusters) if clip else (None, None, None, 0)
    method_params = rows[0]["method_params"] if rows else None
    # By definition: the baseline against itself, exactly (a CI of one point, given enough units).
    summary.update({
        "variant": schema.BASELINE, "method": BASELINE_METHOD, "method_params": method_params,
        **_with_n("speedup", _exact(1.0, sum(map(len, timed)), len(timed))),
        **_with_n("denoise_speedup", _exact(1.0, sum(map(len, denoise_timed)), len(denoise_timed))),
        "speedup_bound": speedup_bound(rows),
        **_with_n("clip_score", clip_estimate), "baseline_clip_score": clip_estimate[0],
        **_with_n("quality_loss", _exact(0.0, clip_estimate[3])),
        **_drift(context, rows),
    })
    summary["flags"] = ";".join(summary["flags"])
    return summary


def _variant_summary(rows: list[dict], base_rows: list[dict], context: _Context, gt_rows: list[dict]) -> dict:
    summary = _common(rows, rows[0], context)
    flags = summary["flags"]
    undefined = []
    summary.update({"method": rows[0]["method"], "method_params": rows[0]["method_params"],
                    "speedup_bound": speedup_bound(base_rows)})

    # Time: the variant's ok batches, each paired with its baseline batch (same round where recorded), by repeat.
    for column, prefix in (("batch_latency_s", "speedup"), ("denoise_s", "denoise_speedup")):
        pairs = pairing.by_repeat(pairing.paired_latencies(rows, base_rows, column))
        summary.update(_with_n(prefix, functional.estimate_over_repeats(functional.ratio_of_sums, pairs,
                                                                        context.n_resamples)))

    # Quality: CLIP of the variant's images, and its loss against the matched baseline images.
    clip, clusters = context.scores(rows)
    summary.update(_with_n("clip_score", context.mean(clip, clusters) if clip else (None, None, None, 0)))
    pairs = pairing.baseline_references(base_rows + rows)
    scored = [(base, row) for row, base in pairs
              if _is_number(context.clip_scores.get(base["record_id"]))
              and _is_number(context.clip_scores.get(row["record_id"]))]
    base_clip = [context.clip_scores[base["record_id"]] for base, _ in scored]
    variant_clip = [context.clip_scores[row["record_id"]] for _, row in scored]
    summary["baseline_clip_score"] = float(functional.mean(base_clip)) if scored else None
    loss = (context.relative_loss(base_clip, variant_clip, [pairing.cluster_key(row) for _, row in scored])
            if scored else (None, None, None, 0))
    summary.update(_with_n("quality_loss", loss))
    if scored and loss[0] is None:
        undefined.append(UNDEFINED_QUALITY_LOSS)

    # Fidelity to the baseline images, to the GT's (submissions) and to the same image at batch size 1.
    fidelity = context.fidelity_of(rows, KIND_BASELINE)
    summary.update(_with_n("psnr", _psnr_estimate(context, fidelity)))
    ssims = [(score["ssim"], cluster) for score, cluster in fidelity if _is_number(score["ssim"])]
    summary.update(_with_n("ssim", context.mean([value for value, _ in ssims], [cluster for _, cluster in ssims])
                           if ssims else (None, None, None, 0)))
    identical = sum(1 for row, base in pairs if row["image_sha256"] and row["image_sha256"] == base["image_sha256"])
    summary["identical_to_baseline"] = identical
    if schema.is_submission(rows[0]["variant"]):
        gt_pairs = pairing.gt_references(gt_rows + rows)
        to_gt = context.fidelity_of(rows, KIND_GT)
        values, _, all_identical = _psnr_samples(to_gt)
        ssim_gt = [score["ssim"] for score, _ in to_gt if _is_number(score["ssim"])]
        summary.update({
            "psnr_gt": float(functional.mean(values)) if values else all_identical,
            "ssim_gt": float(functional.mean(ssim_gt)) if ssim_gt else None,
            "identical_to_gt": sum(1 for row, gt in gt_pairs if row["image_sha256"] == gt["image_sha256"]),
            "gt_pairs": len(gt_pairs)})
    summary.update(_drift(context, rows))

    if pairs and identical == len(pairs) and rows[0]["method"] != BASELINE_METHOD:  # a pipeline task asks for that
        flags.insert(0, schema.FLAG_NO_OP)
    speedup, high = summary["speedup"], summary["speedup_ci_high"]
    if speedup is not None and high is not None and high < 1:
        flags.append(schema.FLAG_SLOWDOWN)
    elif speedup is not None and speedup < 1:
        flags.append(schema.FLAG_NO_CLEAR_SPEEDUP)
    if speedup is not None and speedup > SUSPICIOUS_SPEEDUP:
        flags.append(schema.FLAG_SUSPICIOUS)
    summary["flags"] = ";".join(flags)
    summary["undefined"] = ";".join(undefined) or None
    return summary


def to_table(summaries: list[dict]) -> pa.Table:
    """SUMMARY_COLUMNS rows -> pyarrow table (no datasets metadata: reports are plain tables)."""
    return pa.Table.from_pylist(summaries, schema=schema.arrow_schema(schema.SUMMARY_COLUMNS, with_features=False))
