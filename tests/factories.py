"""Hand-made datasets with known values, shared by the scorer and publish tests.

A dataset holds one setting's shared baseline and three real smoke tasks of it (so the catalogue knows their
texts), tiny 32 px images and known latencies, written the way the builder writes them: one shard per unit,
the schema's Parquet metadata, programs and a run record. Every expected number is known exactly and no
pipeline has to run. CLIP scores can be written by hand (:func:`write_clip_scores`) where the test is about
what follows them.

Submissions (variant ``sub:<name>``) are rows of the same tasks with their own programs, statuses, latencies and
pixels (:func:`submission_rows`, :data:`SUBMISSIONS`); gate verdicts are written by :func:`write_verdicts`.
"""

import hashlib
import io
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from accelbench import dataset, schema, task_facts
from accelbench.builder.encode import pixel_sha256, to_uint8
from accelbench.manifest import load_catalog
from accelbench.scorer import clip, fidelity, report, store

CATALOG = load_catalog()
SETTING = "sd15-ddim-8"
FAST = "smoke-sd15-ddim-8-deepcache"  # close to the baseline images, faster
NOOP = "smoke-sd15-ddim-8-tome"  # bit-identical to the baseline images, slower
BROKEN = "smoke-sd15-ddim-8-tgate"  # some failed rows, no batch-size drift
TASKS = (FAST, NOOP, BROKEN)
PIPELINE = "smoke-sd15-ddim-8-pipeline"  # level 1, no acceleration: its GT renders the baseline's images
UNITS = (SETTING, *TASKS)
PROMPTS = ["a red cube on a wooden table", "an astronaut riding a horse", "a lighthouse at dawn",
           "two cats sleeping on a sofa"]
BATCH_SIZES = (1, 2)
SIZE = 32
TINY = (clip.TINY_MODEL, clip.RANDOM_WEIGHTS)
TINY_RECIPE = clip.recipe_id(*TINY)
HAND_RECIPE = "hand-made--scores"
# Known batch latencies (seconds) per unit and batch size; every batch of a batch size takes the same time.
LATENCY = {SETTING: {1: 2.0, 2: 3.0}, FAST: {1: 1.0, 2: 1.0}, NOOP: {1: 2.5, 2: 3.5}, BROKEN: {1: 1.0, 2: 1.0},
           PIPELINE: {1: 2.0, 2: 3.0}}
VERSIONS = {"python": "3.11.9", "torch": "2.14.1", "diffusers": "0.42.1", "DeepCache": "0.1.1", "tomesd": "0.1.3",
            "tgate": "1.0.0"}
DEVICE_NAME = "Test CPU"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def record_id(unit: str, prompt_index: int, batch_size: int, submission: str | None = None) -> str:
    return f"{unit}{f'-{submission}' if submission else ''}-p{prompt_index}-bs{batch_size}"


def baseline_pixels(prompt_index: int) -> np.ndarray:
    """A smooth gradient with noise, different per prompt."""
    rng = np.random.default_rng(prompt_index)
    ramp = np.linspace(0, 1, SIZE)[None, :, None] * np.linspace(0.3, 1, 3)[None, None, :]
    return np.clip(ramp * np.ones((SIZE, 1, 1)) + rng.normal(0, 0.03, (SIZE, SIZE, 3)), 0, 1)


def unit_pixels(unit: str, prompt_index: int, batch_size: int) -> np.ndarray:
    pixels = baseline_pixels(prompt_index)
    if unit == FAST:  # an accelerated image: close to the baseline, never identical
        pixels = np.clip(pixels + np.random.default_rng(100 + prompt_index).normal(0, 0.02, pixels.shape), 0, 1)
    if batch_size > 1 and unit != BROKEN:  # a small batch-size drift
        pixels = np.clip(pixels + 0.004, 0, 1)
    return pixels  # NOOP: bit-identical to its baseline at every batch size; BROKEN: no drift


def png(image: np.ndarray) -> tuple[bytes, str]:
    """(PNG bytes, pixel hash) of a float image, stored the way the builder stores images."""
    pixels = to_uint8(image)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue(), pixel_sha256(pixels)


def program_sha256(unit: str, submission: str | None = None) -> str:
    return hashlib.sha256(f"{unit}{f'/{submission}' if submission else ''}".encode()).hexdigest()


def noise_pixels(prompt_index: int, batch_size: int) -> np.ndarray:
    """Images unrelated to the GT's (a program that deviates): uniform noise, PSNR about 8 dB to anything."""
    return np.random.default_rng(1000 + 10 * prompt_index + batch_size).uniform(0, 1, (SIZE, SIZE, 3))


def setting_of(unit: str) -> str:
    """The setting (model-scheduler-steps) of a unit: a smoke task's, or the unit itself for a baseline."""
    if unit not in CATALOG.tasks:
        return unit
    task = CATALOG.task(unit)
    return f"{task.model}-{task.scheduler}-{task.steps}"


def row(unit: str, prompt_index: int, batch_size: int, status: str = schema.STATUS_OK,
        submission: str | None = None, latency: float | None = None, pixels: np.ndarray | None = None,
        error: str | None = None) -> dict:
    """One generation row of ``unit`` (a setting id for its baseline, else a task id; any of the smoke suite, its
    batches recording SETTING's baseline latencies); with ``submission``, the row of that submission's program for
    the task (variant ``sub:<submission>``), ``latency`` and ``pixels`` overriding the GT's."""
    baseline = unit not in CATALOG.tasks
    task = None if baseline else CATALOG.task(unit)
    like = task or next(CATALOG.task(t) for t in CATALOG.suite("smoke").tasks if setting_of(t) == unit)
    batch_index, position = divmod(prompt_index, batch_size)
    known = LATENCY.get(unit, LATENCY[SETTING] if baseline else {})  # other settings' baselines take SETTING's
    latency = known[batch_size] if latency is None else latency
    variant = "baseline" if baseline else f"{schema.SUBMISSION_PREFIX}{submission}" if submission else "gt"
    record = {
        **schema.empty_row(schema.GENERATION_COLUMNS),
        "record_id": record_id(unit, prompt_index, batch_size, submission), "suite": "smoke",
        "variant": variant, "submission": submission, "unit_id": unit, "task_id": None if baseline else unit,
        "setting_id": setting_of(unit),
        "program_sha256": "" if status == schema.STATUS_MISSING else program_sha256(unit, submission),
        "model": like.model, "model_source": f"/cache/tiny/{like.model}", "scheduler": like.scheduler,
        "steps": like.steps,
        "method": "none" if baseline else task.method,
        "method_params": json.dumps({} if baseline else task.params, sort_keys=True), "prompt_index": prompt_index,
        "prompt": PROMPTS[prompt_index], "seed": 0, "image_seed": prompt_index, "batch_size": batch_size,
        "batch_index": batch_index, "position": position, "height": SIZE, "width": SIZE,
        "batch_latency_s": latency, "image_latency_s": latency / batch_size,
        "baseline_latency_s": LATENCY[SETTING][batch_size], "round": batch_index, "timing": "interleaved",
        "denoise_s": 0.8 * latency, "timer": "harness",
        "status": status, "device": "cpu", "device_name": DEVICE_NAME, "dtype": "float32", "weights": "tiny",
        "generator_device": "cpu", "warmup_batches": 1, "versions": json.dumps(VERSIONS), "run_id": "run1",
        "rank": 0, "world_size": 1, "started_at": NOW, "finished_at": NOW,
    }
    if status == schema.STATUS_OK:
        image, sha = png(unit_pixels(unit, prompt_index, batch_size) if pixels is None else pixels)
        record.update(image={"bytes": image, "path": f"{record['record_id']}.png"}, image_sha256=sha)
    else:
        default = {schema.STATUS_ERROR: "boom", schema.STATUS_NONFINITE: "NaN pixels",
                   schema.STATUS_MISSING: f"submission {submission!r} has no program for task {unit}"}
        default = default.get(status, status)
        record.update(error=error or default, batch_latency_s=None, image_latency_s=None, baseline_latency_s=None,
                      denoise_s=None)
    return record


# Two submissions on the three tasks. alpha: FAST with the GT's own code (identical images) and faster than the
# GT; NOOP missing (no program); BROKEN rejected by the gate. beta: FAST deviates (noise images, as fast as the
# GT); NOOP the GT's images, slower than the baseline; BROKEN raises.
SUBMISSIONS = {
    "alpha": {FAST: {"latency": {1: 0.8, 2: 0.8}}, NOOP: {"status": schema.STATUS_MISSING},
              BROKEN: {"status": schema.STATUS_REJECTED, "error": "failed the correctness gate: steps"}},
    "beta": {FAST: {"pixels": "noise"}, NOOP: {}, BROKEN: {"status": schema.STATUS_ERROR}},
}


def repeated(rows: list[dict], repeats: int) -> list[dict]:
    """``rows`` timed in ``repeats`` repeats (fresh sets of worker processes, as ``generate --repeats`` writes
    them): a copy per repeat, ``repeat`` set and a record id of its own, the same images and latencies."""
    return [{**record, "repeat": repeat, "record_id": f"{record['record_id']}-k{repeat}"}
            for repeat in range(repeats) for record in rows]


def submission_rows(name: str, plan: dict | None = None) -> list[dict]:
    """Every row of submission ``name`` (:data:`SUBMISSIONS` unless ``plan``: task -> row overrides)."""
    rows = []
    for task, spec in (SUBMISSIONS[name] if plan is None else plan).items():
        for batch_size in BATCH_SIZES:
            for prompt_index in range(len(PROMPTS)):
                latency = spec.get("latency", {}).get(batch_size)
                pixels = noise_pixels(prompt_index, batch_size) if spec.get("pixels") == "noise" else None
                rows.append(row(task, prompt_index, batch_size, spec.get("status", schema.STATUS_OK), submission=name,
                                latency=latency, pixels=pixels, error=spec.get("error")))
    return rows


def write_verdicts(directory: Path, verdicts: list[dict]) -> Path:
    """Gate verdicts (GATE_COLUMNS) as ``generate`` writes them: ``verdicts``: dicts with at least
    program_sha256, task_id, variant and passed."""
    rows = [{**schema.empty_row(schema.GATE_COLUMNS), "checked_at": NOW, "failed_checks": "" if v["passed"] else
             "steps", "reason": None if v["passed"] else "steps: 7 scheduler steps, the task has 8", **v}
            for v in verdicts]
    path = directory / schema.GATE_DIR / schema.verdicts_file("run1", 0, SETTING)
    dataset.write_table_atomic(pa.Table.from_pylist(rows, schema=schema.arrow_schema(schema.GATE_COLUMNS)), path)
    return path


def passing_verdicts(rows: list[dict]) -> list[dict]:
    """A verdict per (program, task) of the GT and submission rows: passed, except the programs of rows whose
    status is 'rejected'."""
    found = {}
    for record in rows:
        if record["variant"] != "baseline" and record["program_sha256"]:
            found.setdefault((record["program_sha256"], record["task_id"]), {
                "program_sha256": record["program_sha256"], "task_id": record["task_id"],
                "variant": record["variant"], "submission": record["submission"],
                "passed": record["status"] != schema.STATUS_REJECTED})
    return list(found.values())


def dataset_rows(units=UNITS) -> list[dict]:
    """Every row of ``units``: BROKEN's bs=2 batch 0 is 'nonfinite' and its bs=1 prompt 3 failed with 'error'."""
    rows = []
    for unit in units:
        for batch_size in BATCH_SIZES:
            for prompt_index in range(len(PROMPTS)):
                status = schema.STATUS_OK
                if unit == BROKEN and batch_size == 2 and prompt_index < 2:
                    status = schema.STATUS_NONFINITE
                if unit == BROKEN and batch_size == 1 and prompt_index == 3:
                    status = schema.STATUS_ERROR
                rows.append(row(unit, prompt_index, batch_size, status))
    return rows


def generation_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema.arrow_schema(schema.GENERATION_COLUMNS))


def shard_path(directory: Path, unit: str, submission: str | None = None) -> Path:
    suffix = f"-{submission}" if submission else ""
    return directory / schema.GENERATIONS_DIR / f"{schema.SHARD_PREFIX}run1-r0-{unit}{suffix}.parquet"


def write_dataset(directory: Path, units=UNITS, rows: list[dict] | None = None, facts: bool = True) -> Path:
    """A generated dataset: the manifest (default CLIP recipe: the tiny one), one shard, program and run record
    per unit, and (``facts``) the task facts of the catalogue's tasks, as ``generate`` records them. ``rows``:
    instead of :func:`dataset_rows` of ``units``."""
    rows = dataset_rows(units) if rows is None else rows
    directory.mkdir(parents=True, exist_ok=True)
    dataset.write_json_atomic(directory / schema.DATASET_MANIFEST, schema.dataset_manifest(
        suite="smoke", weights="tiny", dtype_policy="float32", device_type="cpu",
        prompts_sha256=hashlib.sha256("\n".join(PROMPTS).encode()).hexdigest(), seeds=[0],
        batch_sizes=list(BATCH_SIZES), seed_key="", clip={"model": TINY[0], "pretrained": TINY[1]},
        suite_facts=task_facts.suite_facts(CATALOG.suite("smoke"), None)))
    if facts:
        task_ids = sorted({record["task_id"] for record in rows if record["task_id"]})
        task_facts.record(directory, [task_facts.facts(CATALOG, CATALOG.task(task_id), {
            schema.GT: program_sha256(task_id), schema.BASELINE: program_sha256(setting_of(task_id))})
            for task_id in task_ids])
    for unit, submission in dict.fromkeys((record["unit_id"], record["submission"]) for record in rows):
        dataset.write_table_atomic(generation_table([record for record in rows if record["unit_id"] == unit
                                                     and record["submission"] == submission]),
                                   shard_path(directory, unit, submission))
        dataset.write_bytes_atomic(directory / schema.PROGRAMS_DIR / f"{program_sha256(unit, submission)}.py",
                                   f"# program of {unit}{f' by {submission}' if submission else ''}\n".encode())
    dataset.write_json_atomic(directory / schema.RUNS_DIR / "run1-r0.json", {
        "run_id": "run1", "rank": 0, "world_size": 1, "device_name": DEVICE_NAME, "argv": ["accelbench", "generate"],
        "versions": VERSIONS, "seconds": 12.5, "rows_written": len(rows)})
    return directory


def ok_record_ids(directory: Path) -> list[str]:
    return [r["record_id"] for r in dataset.read_generations(directory, ["status"]).to_pylist()
            if r["status"] == schema.STATUS_OK]


def write_clip_scores(directory: Path, scores: dict[str, float], recipe_id: str = HAND_RECIPE) -> str:
    """A CLIP scores folder written by hand, as score_clip writes it (recipe.json first, then a part)."""
    fixed = {"recipe_id": recipe_id, "clip_model": "hand", "clip_pretrained": "made", "clip_preprocess": "none"}
    dataset.write_json_atomic(store.clip_dir(directory, recipe_id) / store.RECIPE_FILE, {
        **fixed, "score": clip.SCORE_FORMULA, "random_weights": False, "open_clip_version": "3.3.0"})
    store.write_part(store.clip_dir(directory, recipe_id),
                     [{"record_id": record, "clip_score": score, **fixed} for record, score in scores.items()],
                     schema.CLIP_SCORE_COLUMNS)
    return recipe_id


def known_scores(directory: Path, offset: float = 0.0) -> dict[str, float]:
    """CLIP scores with a known quality loss: FAST images 27 (10 % below the baseline's 30), the others 30."""
    return {record: (27.0 if record.startswith(FAST) else 30.0) + offset for record in ok_record_ids(directory)}


def reported_dataset(directory: Path, recipes=(HAND_RECIPE,), report_recipe: str = HAND_RECIPE,
                     n_resamples: int = 200) -> tuple[Path, report.Report]:
    """The dataset scored (:func:`known_scores` per recipe, each further one 1 point higher; fidelity by the
    scorer) and reported with ``report_recipe``: what ``accelbench score`` leaves, without running CLIP."""
    write_dataset(directory)
    for offset, recipe_id in enumerate(recipes):
        write_clip_scores(directory, known_scores(directory, offset), recipe_id)
    fidelity.score_fidelity(directory, num_workers=0, progress=False)
    return directory, report.build_report(directory, recipe_id=report_recipe, n_resamples=n_resamples)
