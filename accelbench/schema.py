"""The dataset's columns, written down once and shared by the builder (writes) and the scorer (reads).

A generated dataset folder looks like::

    DIR/accelbench.json              dataset manifest: schema version, suite, weights mode, dtype
    DIR/data/generations-*.parquet   one row per image (GENERATION_COLUMNS), image column decodes as datasets.Image
    DIR/programs/<sha256>.py         every program that produced rows, by content hash
    DIR/runs/<run_id>-r<rank>.json   one record per run and rank: environment, argv, counts
    DIR/scores/clip-<recipe_id>/     CLIP scores of one recipe (CLIP_SCORE_COLUMNS) + recipe.json
    DIR/scores/fidelity/             fidelity to the matched baseline and batch-size drift (FIDELITY_COLUMNS)
    DIR/report/                      summary.json, summary.csv (SUMMARY_COLUMNS), report.md, pareto.png

pyarrow only: the scorer and ``accelbench --help`` import this module, so no torch here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa

SCHEMA_VERSION = 1
DATASET_MANIFEST = "accelbench.json"
DATASET_KIND = "accelbench-generations"
GENERATIONS_DIR = "data"
PROGRAMS_DIR = "programs"
RUNS_DIR = "runs"
SCORES_DIR = "scores"
REPORT_DIR = "report"
FIDELITY_DIR = "fidelity"  # under SCORES_DIR
CLIP_DIR_PREFIX = "clip-"  # under SCORES_DIR, followed by the recipe id

STATUS_OK = "ok"
STATUS_ERROR = "error"  # the program raised
STATUS_NONFINITE = "nonfinite"  # NaN/inf pixels
STATUS_OOM = "oom"  # out of (GPU) memory
STATUSES = (STATUS_OK, STATUS_ERROR, STATUS_NONFINITE, STATUS_OOM)


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
    Column("record_id", pa.string(), "stable id of the image: hash of (suite, variant, unit, prompt, seed, batch size)"),
    Column("suite", pa.string(), "suite the row was generated for"),
    Column("variant", pa.string(), "baseline | gt (| candidate programs later)"),
    Column("unit_id", pa.string(), "what the program is for: the task id, or the setting id for the shared baseline"),
    Column("task_id", pa.string(), "task id; null for baseline rows, which serve every task of their setting"),
    Column("setting_id", pa.string(), "model-scheduler-steps: the baseline a row is compared with"),
    Column("program_sha256", pa.string(), "sha256 of the program source, stored as programs/<sha256>.py"),
    Column("model", pa.string(), "model family id (manifests/models.yaml)"),
    Column("model_source", pa.string(), "what from_pretrained loaded: Hub id or local folder"),
    Column("scheduler", pa.string(), "scheduler id (manifests/schedulers.yaml)"),
    Column("steps", pa.int32(), "num_inference_steps"),
    Column("method", pa.string(), "acceleration method id; 'none' for baseline rows"),
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
    Column("batch_latency_s", pa.float64(), "seconds of the generate() call for the batch"),
    Column("image_latency_s", pa.float64(), "batch_latency_s divided by the images in the batch"),
    Column("text_encode_s", pa.float64(), "call start to the first denoiser forward (prompt encoding, latents)"),
    Column("denoise_s", pa.float64(), "first denoiser forward to the start of the VAE decode"),
    Column("vae_decode_s", pa.float64(), "VAE decode"),
    Column("postprocess_s", pa.float64(), "end of VAE decode to the end of the call (conversion to arrays)"),
    Column("peak_memory_bytes", pa.int64(), "peak GPU memory allocated during the batch; null on CPU"),
    Column("timer", pa.string(), "cuda-sync (synchronize + perf_counter, stages by CUDA events) or wall"),
    # outcome
    Column("status", pa.string(), "ok | error | nonfinite | oom"),
    Column("error", pa.string(), "one-line error message when status is not ok"),
    # environment
    Column("device", pa.string(), "torch device the program ran on"),
    Column("device_name", pa.string(), "GPU name or CPU model"),
    Column("dtype", pa.string(), "torch dtype the program was loaded with"),
    Column("weights", pa.string(), "pretrained | random (full-size, random weights) | tiny (synthetic)"),
    Column("generator_device", pa.string(), "device of the per-image torch.Generators"),
    Column("warmup_batches", pa.int32(), "untimed batches run before the first timed batch of each batch size"),
    Column("versions", pa.string(), "JSON object: python, torch, diffusers, transformers, method libraries, accelbench"),
    Column("run_id", pa.string(), "id of the run (process group) that wrote the row"),
    Column("rank", pa.int32(), "rank of the process that wrote the row"),
    Column("world_size", pa.int32(), "number of processes sharing the work list"),
    Column("started_at", pa.timestamp("us", tz="UTC"), "start of the batch's generate() call"),
    Column("finished_at", pa.timestamp("us", tz="UTC"), "end of the batch's generate() call"),
)

CLIP_SCORE_COLUMNS = _columns(
    Column("record_id", pa.string(), "the scored generation row"),
    Column("recipe_id", pa.string(), "readable id of the recipe: model and pretrained tag, e.g. vit-b-32--laion2b-s34b-b79k"),
    Column("clip_model", pa.string(), "open_clip model name"),
    Column("clip_pretrained", pa.string(), "open_clip pretrained tag, or 'random' (meaningless scores)"),
    Column("clip_preprocess", pa.string(), "image preprocessing of the model (resize, crop, normalisation)"),
    Column("clip_score", pa.float64(), "100 * max(cos(image, text), 0), clamped per image"),
    Column("scored_at", pa.timestamp("us", tz="UTC"), "when the score was computed"),
)

FIDELITY_COLUMNS = _columns(
    Column("record_id", pa.string(), "the accelerated (or bs>1) generation row"),
    Column("kind", pa.string(), "baseline: vs the matched baseline image | batch-drift: vs the same image at bs=1"),
    Column("reference_record_id", pa.string(), "the row compared with"),
    Column("psnr", pa.float64(), "peak signal-to-noise ratio in dB (inf when identical)"),
    Column("ssim", pa.float64(), "structural similarity (scikit-image, channel_axis=-1, data_range=255)"),
    Column("identical", pa.bool_(), "pixels bit-identical to the reference"),
)


SUMMARY_COLUMNS = _columns(
    Column("task_id", pa.string(), "task"),
    Column("variant", pa.string(), "baseline (the task's setting's shared baseline) | gt"),
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
    Column("speedup", pa.float64(), "sum of baseline batch latencies / sum of variant batch latencies, matched batches"),
    Column("speedup_ci_low", pa.float64(), "95 % paired bootstrap CI of speedup, lower bound"),
    Column("speedup_ci_high", pa.float64(), "upper bound"),
    Column("denoise_speedup", pa.float64(), "the same for the denoising loop alone (denoise_s)"),
    Column("denoise_speedup_ci_low", pa.float64(), ""),
    Column("denoise_speedup_ci_high", pa.float64(), ""),
    Column("clip_score", pa.float64(), "mean CLIP score of the variant's images"),
    Column("clip_score_ci_low", pa.float64(), ""),
    Column("clip_score_ci_high", pa.float64(), ""),
    Column("baseline_clip_score", pa.float64(), "mean CLIP score of the matched baseline images"),
    Column("quality_loss", pa.float64(), "(baseline CLIP - variant CLIP) / baseline CLIP over matched images"),
    Column("quality_loss_ci_low", pa.float64(), ""),
    Column("quality_loss_ci_high", pa.float64(), ""),
    Column("psnr", pa.float64(), "mean PSNR (dB) to the matched baseline image (identical images excluded, counted)"),
    Column("psnr_ci_low", pa.float64(), ""),
    Column("psnr_ci_high", pa.float64(), ""),
    Column("ssim", pa.float64(), "mean SSIM to the matched baseline image"),
    Column("ssim_ci_low", pa.float64(), ""),
    Column("ssim_ci_high", pa.float64(), ""),
    Column("identical_to_baseline", pa.int64(), "images bit-identical to their baseline image"),
    Column("drift_psnr", pa.float64(), "mean PSNR of batch-size>1 images to the same image at batch size 1"),
    Column("flags", pa.string(), "';'-joined: no-op, failed-rows, nonfinite, slowdown, suspicious-speedup"),
    Column("recipe_id", pa.string(), "CLIP recipe the scores come from"),
    Column("device_name", pa.string(), "hardware the timings come from"),
    Column("weights", pa.string(), "pretrained | random | tiny"),
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


def dataset_manifest(suite: str, weights: str, dtype: str, device_type: str = "cpu") -> dict:
    """Content of ``DIR/accelbench.json``: what every run that writes into DIR must agree on (timings from a CPU
    and a GPU, or images from random and pretrained weights, never mix in one dataset)."""
    return {"kind": DATASET_KIND, "schema_version": SCHEMA_VERSION, "suite": suite, "weights": weights,
            "dtype": dtype, "device_type": device_type}
