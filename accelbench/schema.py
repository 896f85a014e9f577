"""The dataset's columns, written down once and shared by the builder (writes) and the scorer (reads).

A generated dataset folder looks like::

    DIR/accelbench.json              dataset manifest: what defines its rows (suite, weights, dtype, prompts, ...)
    DIR/data/generations-*.parquet   one row per image (GENERATION_COLUMNS), image column decodes as datasets.Image
    DIR/programs/<sha256>.py         every program that produced rows, by content hash
    DIR/logs/<unit>.log              what each program's worker process printed (capped)
    DIR/runs/<run_id>-r<rank>.json   one record per run and rank: environment, argv, counts
    DIR/scores/clip-<recipe_id>/     CLIP scores of one recipe (CLIP_SCORE_COLUMNS) + recipe.json
    DIR/scores/fidelity/             fidelity to the matched baseline, the task's GT and batch-size drift
                                     (FIDELITY_COLUMNS)
    DIR/gate/verdicts-*.parquet      the correctness gate's verdicts (GATE_COLUMNS)
    DIR/tasks/<task_id>.json         every fact of a task the scorer uses (accelbench.task_facts)
    DIR/report/                      summary.json, summary.csv (SUMMARY_COLUMNS), report.md, pareto.png; with
                                     submissions also leaderboard.csv/.json (LEADERBOARD_COLUMNS),
                                     leaderboard_tasks.csv (LEADERBOARD_TASK_COLUMNS),
                                     leaderboard_pairs.csv (LEADERBOARD_PAIR_COLUMNS), fast_p.png,
                                     speedup_heatmap.png

pyarrow only: the scorer and ``accelbench --help`` import this module, so no torch here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa

from accelbench.manifest.model import LEVELS

SCHEMA_VERSION = 2  # 2: record ids include the program's sha256; submissions; harness timing columns
DATASET_MANIFEST = "accelbench.json"
DATASET_KIND = "accelbench-generations"
GENERATIONS_DIR = "data"
PROGRAMS_DIR = "programs"
RUNS_DIR = "runs"
SCORES_DIR = "scores"
REPORT_DIR = "report"
FIDELITY_DIR = "fidelity"  # under SCORES_DIR
CLIP_DIR_PREFIX = "clip-"  # under SCORES_DIR, followed by the recipe id
LOGS_DIR = "logs"
GATE_DIR = "gate"  # DIR/gate/verdicts-*.parquet: one row per (program, task) the gate judged
TASKS_DIR = "tasks"  # DIR/tasks/<task_id>.json: the task's facts (accelbench.task_facts)
STAGING_DIR = ".staging"  # per-batch part files of a run in progress (or of a run that was killed)
SHARD_PREFIX = "generations-"  # DIR/data/generations-<run>-<n>.parquet: a finished setting's rows
PART_GLOB = "part-*.parquet"  # per-batch generation parts (.staging/<run>/) and score parts (scores/*/)
VERDICTS_GLOB = "verdicts-*.parquet"


def run_stem(run_id: str, rank: int) -> str:
    """What names one rank's files of one run: its run record, staging folder, shards and verdicts. Unique per
    process: run ids are drawn per process (a UTC second and 24 random bits), and ranks are distinct within a
    run (torchrun's global RANK over all nodes, or ``--shard I/N``)."""
    return f"{run_id}-r{rank}"


def stem_rank(stem: str) -> int | None:
    """The rank a :func:`run_stem` names; None for a name that is not a run stem."""
    _, separator, rank = stem.rpartition("-r")
    return int(rank) if separator and rank.isdigit() else None


def verdicts_file(run_id: str, rank: int, setting_id: str) -> str:
    return f"{VERDICTS_GLOB.split('*')[0]}{run_stem(run_id, rank)}-{setting_id}.parquet"


def part_file(name: str) -> str:
    return f"{PART_GLOB.split('*')[0]}{name}.parquet"

STATUS_OK = "ok"
STATUS_ERROR = "error"  # the program raised (or returned something that is not images)
STATUS_NONFINITE = "nonfinite"  # NaN/inf pixels
STATUS_OOM = "oom"  # out of (GPU) memory
STATUS_TIMEOUT = "timeout"  # the worker did not answer within the load or call time limit
STATUS_CRASHED = "crashed"  # the worker process exited or was killed by a signal
STATUS_MISSING = "missing"  # a submission has no program for the task
STATUS_REJECTED = "rejected"  # the program failed the correctness gate and was not timed
# Every failed status, in the order a task's failure reason names the first that applies.
FAILED_STATUSES = (STATUS_MISSING, STATUS_REJECTED, STATUS_ERROR, STATUS_NONFINITE, STATUS_OOM, STATUS_TIMEOUT,
                   STATUS_CRASHED)
STATUSES = (STATUS_OK, *FAILED_STATUSES)

# Variants: the shared baseline of a setting, the task's ground truth, and one per submission (`sub:<name>`).
BASELINE = "baseline"
GT = "gt"
SUBMISSION_PREFIX = "sub:"
VARIANTS_DOC = f"{BASELINE} | {GT} | {SUBMISSION_PREFIX}<name>"
TIMING_MODES = ("interleaved", "sequential")
TIMING_RETIMED = "retimed"  # a submission's rows timed again, alone beside a fresh baseline (beyond its GT)


def submission_variant(name: str) -> str:
    """The variant of submission ``name``: ``sub:<name>``."""
    return f"{SUBMISSION_PREFIX}{name}"


def is_submission(variant: str | None) -> bool:
    return bool(variant) and variant.startswith(SUBMISSION_PREFIX)


def submission_name(variant: str) -> str:
    """The leaderboard's name of a variant: the submission's name, or ``gt`` for the GT (the reference)."""
    return variant.removeprefix(SUBMISSION_PREFIX)


# Summary flags (accelbench.scorer.aggregate decides them).
FLAG_NO_OP, FLAG_FAILED, FLAG_NONFINITE = "no-op", "failed-rows", "nonfinite"
FLAG_SLOWDOWN, FLAG_NO_CLEAR_SPEEDUP, FLAG_SUSPICIOUS = "slowdown", "no-clear-speedup", "suspicious-speedup"
FLAGS = {FLAG_NO_OP: "images identical to the baseline", FLAG_FAILED: "some rows failed",
         FLAG_NONFINITE: "NaN/inf pixels", FLAG_SLOWDOWN: "the whole speedup CI below 1x",
         FLAG_NO_CLEAR_SPEEDUP: "speedup < 1x, its CI reaching 1x or absent",
         FLAG_SUSPICIOUS: "far faster than plausible, or a submission far faster than the GT and the denoiser-work "
                          "bound"}

# A paired comparison of two leaderboard entries over the tasks both solved (accelbench.scorer.ranking): the
# first is faster / slower where the CI of their speedup ratio excludes 1, tied where it includes it, n/a with
# too few tasks for a CI.
VERDICT_FASTER, VERDICT_SLOWER, VERDICT_TIED, VERDICT_NA = "faster", "slower", "tied", "n/a"
VERDICTS = (VERDICT_FASTER, VERDICT_SLOWER, VERDICT_TIED, VERDICT_NA)

# Why a (variant, task) is not correct on the leaderboard: the first of these that applies.
REASON_NO_ROWS, REASON_GATE, REASON_DEVIATES, REASON_NO_GT = "no-rows", "gate", "deviates", "no-gt"
REASON_TARGET = "target"  # a target task (level 4/5) whose verdict is not "met" (quality, speed, or undecided)
REASONS = (*FAILED_STATUSES, REASON_NO_ROWS, REASON_GATE, REASON_DEVIATES, REASON_NO_GT, REASON_TARGET)


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    doc: str
    hf: str | None = None  # datasets feature dtype; None = derived from the arrow type


def _columns(*columns: Column) -> tuple[Column, ...]:
    return columns


IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

GENERATION_COLUMNS = _columns(
    # identity
    Column("record_id", pa.string(), "stable id of the image: hash of (suite, variant, unit, program sha256, seed, "
                                     "batch size, prompt index, prompt)"),
    Column("suite", pa.string(), "suite the row was generated for"),
    Column("variant", pa.string(), f"{VARIANTS_DOC} (a submission's program)"),
    Column("submission", pa.string(), "name of the submission the program comes from; null for baseline and gt"),
    Column("unit_id", pa.string(), "what the program is for: the task id, or the setting id for the shared baseline"),
    Column("task_id", pa.string(), "task id; null for baseline rows, which serve every task of their setting"),
    Column("setting_id", pa.string(), "model-scheduler-steps: the baseline a row is compared with"),
    Column("program_sha256", pa.string(), "sha256 of the program source, stored as programs/<sha256>.py"),
    Column("model", pa.string(), "model family id (manifests/models.yaml)"),
    Column("model_source", pa.string(), "what from_pretrained loaded: Hub id or local folder"),
    Column("scheduler", pa.string(), "scheduler id (manifests/schedulers.yaml)"),
    Column("steps", pa.int32(), "num_inference_steps"),
    Column("method", pa.string(), "acceleration method id; 'none' for baseline rows; 'target' for a submission's "
                                  "rows of a target task (its method is its own; the GT rows: the reference's)"),
    Column("method_params", pa.string(), "JSON object of every method parameter"),
    Column("prompt_index", pa.int32(), "index into the suite's prompt list"),
    Column("prompt", pa.string(), "the prompt"),
    Column("seed", pa.int64(), "suite seed"),
    Column("image_seed", pa.int64(), "seed of this image's own torch.Generator, from (seed, prompt_index)"),
    Column("batch_size", pa.int32(), "requested batch size"),
    Column("batch_index", pa.int32(), "index of the batch among the prompts at this batch size"),
    Column("position", pa.int32(), "position of the image in its batch"),
    # image
    Column("image", IMAGE_TYPE, "PNG image (decodes as datasets.Image); null when the batch failed", hf="image"),
    Column("image_sha256", pa.string(), "sha256 of the uint8 RGB pixels (shape-prefixed), for bit-identity checks"),
    Column("height", pa.int32(), "image height in pixels"),
    Column("width", pa.int32(), "image width in pixels"),
    # timing (of the whole batch's generate() call; warm-up batches are never recorded)
    Column("batch_latency_s", pa.float64(), "seconds from sending the batch to the program's worker to receiving "
                                            "its images, on the harness's clock (the worker synchronises the device "
                                            "before replying)"),
    Column("image_latency_s", pa.float64(), "batch_latency_s divided by the images in the batch"),
    Column("baseline_latency_s", pa.float64(), "batch_latency_s of the setting's baseline for the same prompts and "
                                               "seeds in the same round (interleaved) or run (sequential); "
                                               "speedup = baseline_latency_s / batch_latency_s"),
    Column("round", pa.int32(), "interleaving round: the batches of one round ran back to back on one device"),
    Column("repeat", pa.int32(), "0-based index of the repeat (a fresh set of worker processes) the row's batch was "
                                 "timed in; rows of one round of one repeat were timed back to back (null in "
                                 "datasets from before repeats: read as repeat 0)"),
    Column("timing", pa.string(), "interleaved | sequential: how the setting's programs took turns; retimed: a "
                                  "submission faster than its GT beyond the rounds' noise, timed again alone "
                                  "beside a fresh baseline (these rows replace its first ones)"),
    Column("text_encode_s", pa.float64(), "advisory (measured inside the worker): call start to the first "
                                          "denoiser forward (prompt encoding, latents)"),
    Column("denoise_s", pa.float64(), "advisory: first denoiser forward to the start of the VAE decode"),
    Column("vae_decode_s", pa.float64(), "advisory: VAE decode"),
    Column("postprocess_s", pa.float64(), "advisory: end of VAE decode to the end of the call"),
    Column("peak_memory_bytes", pa.int64(), "peak GPU memory allocated during the batch; null on CPU"),
    Column("first_call_latency_s", pa.float64(), "latency of the worker's first call, its first warm-up batch "
                                                 "(compilation and autotuning happen there), on the harness's "
                                                 "clock; reported beside the timed batches, never part of a "
                                                 "speedup; null without warm-ups"),
    Column("timer", pa.string(), "harness (the parent's perf_counter around the request; stages by CUDA events "
                                 "or wall clock inside the worker)"),
    # outcome
    Column("status", pa.string(), " | ".join(STATUSES)),
    Column("error", pa.string(), "one-line error message when status is not ok"),
    # environment
    Column("device", pa.string(), "torch device the program ran on"),
    Column("device_name", pa.string(), "GPU name or CPU model"),
    Column("dtype", pa.string(), "torch dtype the program was loaded with"),
    Column("weights", pa.string(), "pretrained | random (full-size, random weights) | tiny (synthetic)"),
    Column("generator_device", pa.string(), "device of the per-image torch.Generators"),
    Column("warmup_batches", pa.int32(), "untimed batches run before the first timed batch of each batch size"),
    Column("versions", pa.string(), "JSON object: python, torch, diffusers, transformers, method libraries, "
                                    "accelbench"),
    Column("run_id", pa.string(), "id of the run (process group) that wrote the row"),
    Column("rank", pa.int32(), "rank of the process that wrote the row"),
    Column("world_size", pa.int32(), "number of processes sharing the work list"),
    Column("started_at", pa.timestamp("us", tz="UTC"), "when the batch was sent to the worker"),
    Column("finished_at", pa.timestamp("us", tz="UTC"), "when its images came back"),
)

CLIP_SCORE_COLUMNS = _columns(
    Column("record_id", pa.string(), "the scored generation row"),
    Column("recipe_id", pa.string(), "readable id of the recipe: model and pretrained tag, e.g. "
                                     "vit-b-32--laion2b-s34b-b79k"),
    Column("clip_model", pa.string(), "open_clip model name"),
    Column("clip_pretrained", pa.string(), "open_clip pretrained tag, or 'random' (meaningless scores)"),
    Column("clip_preprocess", pa.string(), "image preprocessing of the model (resize, crop, normalisation)"),
    Column("clip_score", pa.float64(), "100 * max(cos(image, text), 0), clamped per image"),
    Column("scored_at", pa.timestamp("us", tz="UTC"), "when the score was computed"),
)

KIND_BASELINE = "baseline"
KIND_DRIFT = "batch-drift"
KIND_GT = "gt"
FIDELITY_KINDS = {  # FIDELITY_COLUMNS `kind` -> the image a row of that kind is compared with
    KIND_BASELINE: "the matched baseline image",
    KIND_DRIFT: "the same image at batch size 1",
    KIND_GT: "the GT image of the same task, prompt, seed and batch size (submission rows only)",
}

FIDELITY_COLUMNS = _columns(
    Column("record_id", pa.string(), "the accelerated (or bs>1) generation row"),
    Column("kind", pa.string(), " | ".join(f"{kind}: vs {image}" for kind, image in FIDELITY_KINDS.items())),
    Column("reference_record_id", pa.string(), "the row compared with"),
    Column("psnr", pa.float64(), "peak signal-to-noise ratio in dB (inf when identical)"),
    Column("ssim", pa.float64(), "structural similarity (scikit-image, channel_axis=-1, data_range=255)"),
    Column("identical", pa.bool_(), "pixels bit-identical to the reference"),
)


# Columns added after datasets were written: a file without one reads it as null (accelbench.dataset.read_columns).
ADDED_COLUMNS = frozenset({"first_call_latency_s", "repeat"})


def _like(columns: tuple[Column, ...], name: str, rename: str | None = None, doc: str | None = None) -> Column:
    """The column ``name`` of ``columns``, optionally renamed and documented anew."""
    found = next(column for column in columns if column.name == name)
    return Column(rename or name, found.type, found.doc if doc is None else doc, found.hf)


# The "scores" table (config "scores" of a published dataset, built by accelbench.scorer.store.scores_table): one
# row per CLIP score of one recipe, with the scored row's identity and its fidelity rows, joined on record_id.
SCORES_IDENTITY = ("task_id", "setting_id", "variant", "model", "scheduler", "steps", "method", "method_params",
                   "batch_size", "prompt_index", "seed")  # from GENERATION_COLUMNS
SCORES_CLIP = ("recipe_id", "clip_model", "clip_pretrained", "clip_preprocess", "clip_score")  # CLIP_SCORE_COLUMNS
SCORES_FIDELITY = {  # per kind: FIDELITY_COLUMNS name -> scores column name
    KIND_BASELINE: {"reference_record_id": "baseline_record_id", "psnr": "psnr", "ssim": "ssim",
                    "identical": "identical_to_baseline"},
    KIND_DRIFT: {"reference_record_id": "drift_reference_record_id", "psnr": "drift_psnr", "ssim": "drift_ssim",
                 "identical": "drift_identical"},
    KIND_GT: {"reference_record_id": "gt_record_id", "psnr": "psnr_gt", "ssim": "ssim_gt",
              "identical": "identical_to_gt"},
}
_SCORES_FIDELITY_DOCS = {"reference_record_id": "{image} (null when there is none)",
                         "psnr": "PSNR in dB to {image} (inf when identical)", "ssim": "SSIM to {image}",
                         "identical": "pixels bit-identical to {image}"}
SCORES_COLUMNS = _columns(
    _like(GENERATION_COLUMNS, "record_id", doc="the scored generation row"),
    *(_like(GENERATION_COLUMNS, name) for name in SCORES_IDENTITY),
    *(_like(CLIP_SCORE_COLUMNS, name) for name in SCORES_CLIP),
    *(_like(FIDELITY_COLUMNS, name, renamed, _SCORES_FIDELITY_DOCS[name].format(image=FIDELITY_KINDS[kind]))
      for kind, names in SCORES_FIDELITY.items() for name, renamed in names.items()),
)


SUMMARY_COLUMNS = _columns(
    Column("task_id", pa.string(), "task"),
    Column("variant", pa.string(), f"{VARIANTS_DOC} ({BASELINE}: the task's setting's shared baseline)"),
    Column("batch_size", pa.string(), "'all' (pooled) or one batch size (the per-batch-size breakdown)"),
    Column("model", pa.string(), "model family id"),
    Column("scheduler", pa.string(), "scheduler id"),
    Column("steps", pa.int32(), "num_inference_steps"),
    Column("method", pa.string(), "acceleration method id ('none' for baseline rows)"),
    Column("method_params", pa.string(), "JSON object of the method parameters"),
    Column("images", pa.int64(), "rows of this task and variant"),
    Column("failed", pa.int64(), "rows whose status is not ok"),
    Column("median_image_latency_s", pa.float64(), "median per-image latency of the ok rows"),
    Column("peak_memory_bytes", pa.int64(), "largest per-batch peak GPU memory (null on CPU)"),
    Column("speedup", pa.float64(), "sum of baseline batch latencies / sum of variant batch latencies over the "
                                    "variant's ok batches, each paired with its baseline_latency_s (the baseline in "
                                    "the same round; batch-key matching where that is null)"),
    Column("speedup_ci_low", pa.float64(), "95 % bootstrap CI of speedup, lower bound: two-level (repeats, then "
                                           "batches within each) from 5 repeats; else over batches (interleaving "
                                           "rounds), which covers the rounds of the run(s) only; null from fewer "
                                           "than 5 batches"),
    Column("speedup_ci_high", pa.float64(), "upper bound"),
    Column("speedup_n", pa.int64(), "batches (interleaving rounds) the speedup and its CI come from, all repeats"),
    Column("speedup_repeats", pa.int64(), "repeats (fresh sets of worker processes) those batches come from"),
    Column("denoise_speedup", pa.float64(), "the same for the denoising loop alone (denoise_s)"),
    Column("denoise_speedup_ci_low", pa.float64(), ""),
    Column("denoise_speedup_ci_high", pa.float64(), ""),
    Column("denoise_speedup_n", pa.int64(), "batches the denoise speedup comes from"),
    Column("denoise_speedup_repeats", pa.int64(), "repeats those batches come from"),
    Column("latency_ms", pa.float64(), "latency per image in ms: sum of the variant's ok batch latencies / their "
                                       "images (what a level-5 target is judged on)"),
    Column("latency_ms_ci_low", pa.float64(), "95 % bootstrap CI, as the speedup's"),
    Column("latency_ms_ci_high", pa.float64(), ""),
    Column("latency_ms_n", pa.int64(), "batches the latency comes from"),
    Column("latency_ms_repeats", pa.int64(), "repeats those batches come from"),
    Column("speedup_bound", pa.float64(), "denoiser-work bound: the baseline's latency / its latency outside the "
                                          "denoising loop, the speedup if that loop took no time (from the "
                                          "advisory stage timings; null without them)"),
    Column("clip_score", pa.float64(), "mean CLIP score of the variant's images"),
    Column("clip_score_ci_low", pa.float64(), "95 % cluster bootstrap CI over (prompt, seed) clusters"),
    Column("clip_score_ci_high", pa.float64(), ""),
    Column("clip_score_n", pa.int64(), "(prompt, seed) clusters the CLIP score comes from"),
    Column("baseline_clip_score", pa.float64(), "mean CLIP score of the matched baseline images"),
    Column("quality_loss", pa.float64(), "(baseline CLIP - variant CLIP) / baseline CLIP over matched images; null "
                                         "when undefined (see `undefined`)"),
    Column("quality_loss_ci_low", pa.float64(), "95 % paired cluster bootstrap CI over (prompt, seed) clusters"),
    Column("quality_loss_ci_high", pa.float64(), ""),
    Column("quality_loss_n", pa.int64(), "(prompt, seed) clusters of matched, scored image pairs"),
    Column("psnr", pa.float64(), "mean PSNR (dB) to the matched baseline image (identical images excluded, counted)"),
    Column("psnr_ci_low", pa.float64(), ""),
    Column("psnr_ci_high", pa.float64(), ""),
    Column("psnr_n", pa.int64(), "(prompt, seed) clusters of non-identical compared images"),
    Column("ssim", pa.float64(), "mean SSIM to the matched baseline image"),
    Column("ssim_ci_low", pa.float64(), ""),
    Column("ssim_ci_high", pa.float64(), ""),
    Column("ssim_n", pa.int64(), "(prompt, seed) clusters of compared images"),
    Column("identical_to_baseline", pa.int64(), "images bit-identical to their baseline image"),
    Column("psnr_gt", pa.float64(), "submissions: mean PSNR (dB) to the task's GT image (same prompt, seed, batch "
                                    "size; identical images excluded, inf when all are identical)"),
    Column("ssim_gt", pa.float64(), "submissions: mean SSIM to the task's GT image"),
    Column("identical_to_gt", pa.int64(), "submissions: images bit-identical to their GT image"),
    Column("gt_pairs", pa.int64(), "submissions: images compared with a GT image"),
    Column("drift_psnr", pa.float64(), "mean PSNR of batch-size>1 images to the same image at batch size 1 "
                                       "(identical pairs excluded, inf when all are identical)"),
    Column("drift_pairs", pa.int64(), "image pairs the drift compares"),
    Column("drift_identical", pa.int64(), "of those, bit-identical pairs"),
    Column("undefined", pa.string(), "';'-joined metrics the data leave undefined (quality_loss: the matched "
                                     "baseline CLIP scores are all 0, e.g. clamped by a random-weight CLIP)"),
    Column("flags", pa.string(), "';'-joined: " + "; ".join(f"{flag} ({meaning})" for flag, meaning in FLAGS.items())),
    Column("recipe_id", pa.string(), "CLIP recipe the scores come from"),
    Column("device_name", pa.string(), "hardware the timings come from"),
    Column("weights", pa.string(), "pretrained | random | tiny"),
)


# The leaderboard (accelbench.scorer.leaderboard): per (variant, task) results, then one row per submission.
DEFAULT_FAST_P = (0.0, 1.0, 1.5, 2.0)  # speedup thresholds p of fast_p (KernelBench's fast_0, fast_1, ...)

LEADERBOARD_TASK_COLUMNS = _columns(
    Column("dataset", pa.string(), "dataset folder (name) the result comes from"),
    Column("suite", pa.string(), "suite of that dataset"),
    Column("variant", pa.string(), f"{GT} | {SUBMISSION_PREFIX}<name>"),
    Column("submission", pa.string(), "submission name; 'gt' for the reference (the task's GT program)"),
    Column("task_id", pa.string(), "task"),
    Column("setting_id", pa.string(), "model-scheduler-steps of the task"),
    Column("model", pa.string(), "model family id"),
    Column("scheduler", pa.string(), "scheduler id"),
    Column("steps", pa.int32(), "num_inference_steps"),
    Column("method", pa.string(), "acceleration method id"),
    Column("method_params", pa.string(), "JSON object of the method parameters"),
    Column("level", pa.int32(), "1: a pipeline, no acceleration; 2: one method, parameters given; 3: a combination "
                                "of methods (e.g. deepcache_tgate); 4: a speedup target; 5: a latency target; "
                                "null: unknown (a dataset without task facts)"),
    Column("correct", pa.bool_(), "every row ok, the gate passed (when verdicts exist), not `deviates` (recipe "
                                  "tasks) and the target met (target tasks)"),
    Column("target_verdict", pa.string(), "target tasks: met | not met | not decidable | no target (quality "
                                          "within budget relative to the reference, then speed); null otherwise"),
    Column("reason", pa.string(), "why not correct: the first of " + ", ".join(REASONS) + ", with the detail"),
    Column("reason_kind", pa.string(), "the reason's first word (one of " + ", ".join(REASONS) + "); null when "
                                       "correct"),
    Column("gated", pa.bool_(), "a gate verdict exists for the program and task (false: not gated, which does not "
                                "fail a task)"),
    Column("speedup", pa.float64(), "end-to-end speedup over the setting's baseline (summary.csv), batch sizes pooled"),
    Column("speedup_ci_low", pa.float64(), "95 % bootstrap CI (summary.csv: two-level from 5 repeats, else over "
                                           "batches); null from < 5 batches"),
    Column("speedup_ci_high", pa.float64(), ""),
    Column("speedup_n", pa.int64(), "batches the speedup comes from"),
    Column("speedup_repeats", pa.int64(), "repeats those batches come from"),
    Column("latency_ms", pa.float64(), "latency per image in ms (summary.csv)"),
    Column("gt_speedup", pa.float64(), "the GT's speedup on the same task in the same dataset (a target task's: "
                                       "its reference program's)"),
    Column("quality_loss", pa.float64(), "CLIP quality loss against the baseline; null when undefined or unscored"),
    Column("gt_quality_loss", pa.float64(), "the GT's quality loss on the same task"),
    Column("reaches_gt", pa.bool_(), "correct, speedup >= 0.95 x the GT's, and quality loss at most the GT's + "
                                     "0.01 (unchecked where either is undefined); true where the GT has no speedup"),
    Column("psnr_gt", pa.float64(), "mean PSNR (dB) to the GT's images (inf when all identical; inf for the GT)"),
    Column("ssim_gt", pa.float64(), "mean SSIM to the GT's images"),
    Column("identical_to_gt", pa.int64(), "images bit-identical to their GT image"),
    Column("gt_pairs", pa.int64(), "images compared with a GT image"),
    Column("deviation_threshold_db", pa.float64(), "the PSNR-to-GT threshold applied: min(method's "
                                                   "deviation_psnr_db, the GT's drift PSNR - 3 dB)"),
    Column("flags", pa.string(), "the summary row's flags"),
    Column("device_name", pa.string(), "hardware the timings come from"),
    Column("weights", pa.string(), "pretrained | random | tiny"),
    Column("baseline_sha256", pa.string(), "sha256 of the setting's baseline program(s), ';'-joined"),
)


def fast_column(p: float) -> str:
    """Column name of fast_p: ``fast_0``, ``fast_1``, ``fast_1_5``, ``fast_2``."""
    return "fast_" + f"{float(p):g}".replace(".", "_").replace("-", "m")


def level_column(level: int) -> str:
    """Column name of a level's pass rate: ``pass_l1`` .. ``pass_l5``."""
    return f"pass_l{level}"


def leaderboard_columns(fast_p=DEFAULT_FAST_P) -> tuple[Column, ...]:
    """One row per submission (and the GT, the reference): the leaderboard's columns for the thresholds
    ``fast_p``. :data:`LEADERBOARD_COLUMNS` are those of :data:`DEFAULT_FAST_P`."""
    fast = []
    for p in fast_p:
        name = fast_column(p)
        fast += [Column(name, pa.float64(), f"fraction of all tasks that are correct with speedup > {p:g}"),
                 Column(f"{name}_ci_low", pa.float64(), "95 % bootstrap CI over tasks; null from < 5 tasks"),
                 Column(f"{name}_ci_high", pa.float64(), "")]
    per_level = []
    for level, meaning in LEVELS.items():
        name = level_column(level)
        per_level += [Column(name, pa.float64(), f"level {level} ({meaning}): fraction of its tasks solved "
                                                 f"(correct; at levels 4 and 5: the target met); null without any"),
                      Column(f"{name}_ci_low", pa.float64(), "95 % bootstrap CI over the level's tasks; null from < 5"),
                      Column(f"{name}_ci_high", pa.float64(), ""),
                      Column(f"{name}_n", pa.int64(), "the level's tasks: the n of its CI")]
    return _columns(
        Column("submission", pa.string(), "submission name; 'gt' for the reference row"),
        Column("variant", pa.string(), f"{GT} | {SUBMISSION_PREFIX}<name>"),
        Column("reference", pa.bool_(), "true for the GT row, the reference the others are compared with"),
        Column("rank", pa.int64(), "position among the submissions in the leaderboard's order (fast_1, then "
                                   "correct tasks, geomean speedup, name); null for the GT, the reference"),
        Column("rank_low", pa.int64(), "best rank consistent with the pairwise comparisons: 1 + the submissions "
                                       "above it that are separated from it (leaderboard_pairs.csv)"),
        Column("rank_high", pa.int64(), "worst such rank: rank + the submissions below it not separated from it"),
        Column("tied_with", pa.string(), "';'-joined entries (the GT included) it is not separated from: the same "
                                         "number of correct tasks and a speedup comparison that is tied or n/a"),
        Column("tasks", pa.int64(), "tasks on the leaderboard (every task of the datasets): the n of every "
                                    "fraction's CI"),
        Column("correct", pa.int64(), "tasks the submission solved correctly"),
        *fast,
        Column("gt_parity", pa.float64(), "fraction of all tasks that reach the GT (reaches_gt)"),
        Column("gt_parity_ci_low", pa.float64(), ""),
        Column("gt_parity_ci_high", pa.float64(), ""),
        Column("geomean_speedup", pa.float64(), "geometric mean over the correct tasks of max(speedup, 0.1)"),
        Column("geomean_speedup_ci_low", pa.float64(), "95 % bootstrap CI over those tasks; null from < 5"),
        Column("geomean_speedup_ci_high", pa.float64(), ""),
        Column("geomean_speedup_n", pa.int64(), "correct tasks with a speedup"),
        Column("quality_loss", pa.float64(), "mean CLIP quality loss over the correct tasks where it is defined"),
        Column("quality_loss_ci_low", pa.float64(), ""),
        Column("quality_loss_ci_high", pa.float64(), ""),
        Column("quality_loss_n", pa.int64(), "correct tasks with a defined quality loss"),
        Column("psnr_gt", pa.float64(), "mean over the correct tasks of their mean PSNR (dB) to the GT's images, "
                                        "tasks whose images are all identical to the GT's left out (inf when all are)"),
        Column("psnr_gt_n", pa.int64(), "correct tasks with a finite PSNR to the GT"),
        Column("ssim_gt", pa.float64(), "mean over the correct tasks of their mean SSIM to the GT's images"),
        Column("identical_to_gt", pa.float64(), "fraction of the correct tasks' compared images identical to the GT's"),
        *per_level,
        Column("targets_not_decidable", pa.int64(), "target tasks (levels 4, 5) whose speed verdict was not "
                                                    "decidable at the run's n (counted as failed in pass_l4/pass_l5)"),
        Column("reasons", pa.string(), "why tasks are not correct: 'reason: count', ';'-joined"),
        Column("flags", pa.string(), "flags of the correct tasks: 'flag: count', ';'-joined"),
        Column("device_name", pa.string(), "hardware the timings come from"),
        Column("weights", pa.string(), "pretrained | random | tiny"),
        Column("datasets", pa.int64(), "datasets merged into the row"),
    )


LEADERBOARD_COLUMNS = leaderboard_columns()

LEADERBOARD_PAIR_COLUMNS = _columns(  # report/leaderboard_pairs.csv: one row per two entries, the one above first
    Column("submission", pa.string(), "the entry ranked above ('gt' for the reference)"),
    Column("other", pa.string(), "the entry ranked below"),
    Column("variant", pa.string(), f"{GT} | {SUBMISSION_PREFIX}<name> of submission"),
    Column("other_variant", pa.string(), "the same of other"),
    Column("tasks", pa.int64(), "tasks both solved (correct, with a speedup): the n of the CI"),
    Column("speedup_ratio", pa.float64(), "geometric mean over those tasks of submission's speedup / other's (each "
                                          "at least 0.1x); above 1: submission is faster"),
    Column("speedup_ratio_ci_low", pa.float64(), "95 % percentile bootstrap CI over those tasks; null from < 5 tasks"),
    Column("speedup_ratio_ci_high", pa.float64(), ""),
    Column("verdict", pa.string(), " | ".join(VERDICTS) + ": submission against other (the CI excludes 1: faster "
                                   "or slower; includes it: tied; no CI: n/a)"),
    Column("correct", pa.int64(), "tasks submission solved correctly"),
    Column("other_correct", pa.int64(), "tasks other solved correctly"),
    Column("separated", pa.bool_(), "their order is established: the numbers of correct tasks differ, or the "
                                    "verdict is faster or slower"),
)

GATE_COLUMNS = _columns(
    Column("program_sha256", pa.string(), "the judged program (programs/<sha256>.py)"),
    Column("task_id", pa.string(), "the task it was judged for"),
    Column("variant", pa.string(), f"{GT} | {SUBMISSION_PREFIX}<name>"),
    Column("submission", pa.string(), "submission name; null for gt"),
    Column("passed", pa.bool_(), "every check passed: the program is timed; else its rows are 'rejected'"),
    Column("failed_checks", pa.string(), "';'-joined names of the failed checks"),
    Column("reason", pa.string(), "one line: the first failed check and why (e.g. the first trace difference)"),
    Column("checks", pa.string(), "JSON list of every check: name, passed, expected, observed, detail"),
    Column("trace_digest", pa.string(), "digest of the program's execution trace on the gate's first call"),
    Column("inputs", pa.string(), "JSON: the prompts and seeds the gate drew for this verdict"),
    Column("model_path", pa.string(), "model the gate ran on (the family's tiny synthetic model by default)"),
    Column("advisories", pa.string(), "';'-joined advisory findings (static scan), which do not fail a program"),
    Column("checked_at", pa.timestamp("us", tz="UTC"), "when the verdict was made"),
)


def arrow_schema(columns: tuple[Column, ...], with_features: bool = True) -> pa.Schema:
    """The pyarrow schema; with ``datasets`` feature metadata so ``load_dataset('parquet', ...)`` decodes images."""
    schema = pa.schema([pa.field(column.name, column.type) for column in columns])
    if not with_features:
        return schema
    return schema.with_metadata({b"huggingface": json.dumps({"info": {"features": hf_features(columns)}}).encode()})


_HF_DTYPES = {pa.string(): "string", pa.int32(): "int32", pa.int64(): "int64", pa.float64(): "float64",
              pa.bool_(): "bool"}


def hf_features(columns: tuple[Column, ...]) -> dict:
    """The ``datasets.Features`` dictionary of a table, as datasets writes it into Parquet metadata."""
    features = {}
    for column in columns:
        if column.hf == "image":
            features[column.name] = {"_type": "Image"}
        elif pa.types.is_timestamp(column.type):
            features[column.name] = {"dtype": f"timestamp[{column.type.unit}, tz={column.type.tz}]", "_type": "Value"}
        else:
            features[column.name] = {"dtype": _HF_DTYPES[column.type], "_type": "Value"}
    return features


def empty_row(columns: tuple[Column, ...]) -> dict:
    return {column.name: None for column in columns}


# What defines a dataset's rows: a run into an existing dataset must agree on every one of these.
PINNED_FIELDS = ("suite", "weights", "dtype_policy", "device_type", "prompts_sha256", "seeds", "batch_sizes",
                 "seed_key")


def dataset_manifest(*, suite: str, weights: str, dtype_policy: str, device_type: str, prompts_sha256: str,
                     seeds: list[int], batch_sizes: list[int], seed_key: str, clip: dict[str, str],
                     suite_facts: dict) -> dict:
    """Content of ``DIR/accelbench.json``. The :data:`PINNED_FIELDS` are what every run that writes into DIR must
    agree on (timings from a CPU and a GPU, images from two prompt lists, never mix in one dataset); ``clip`` is
    the suite's default CLIP recipe (``{"model", "pretrained"}``), which the scorer uses unless told otherwise;
    ``seed_key`` what the images' seeds are derived with (:mod:`accelbench.builder.seeding`; absent from datasets
    made before keys, whose key is the empty one); ``suite_facts`` what the dataset card says of the suite
    (:func:`accelbench.task_facts.suite_facts`)."""
    return {"kind": DATASET_KIND, "schema_version": SCHEMA_VERSION, "suite": suite, "weights": weights,
            "dtype_policy": dtype_policy, "device_type": device_type, "prompts_sha256": prompts_sha256,
            "seeds": list(seeds), "batch_sizes": list(batch_sizes), **({"seed_key": seed_key} if seed_key else {}),
            "clip": dict(clip), "suite_facts": suite_facts}
