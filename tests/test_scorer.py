"""The score stage on hand-made datasets with known values: CLIP scores, fidelity, aggregates, report, errors.

Datasets are written by hand (tiny 32 px images, known latencies) so every expected number is known exactly
and no pipeline has to run. CLIP uses the shipped tiny open_clip model with random weights, on CPU, offline.
"""

import io
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from PIL import Image

from accelbench import dataset, schema
from accelbench.builder.encode import pixel_sha256, to_uint8
from accelbench.dataset import DatasetError
from accelbench.errors import UserInputError
from accelbench.scorer import aggregate, clip, fidelity, report, store
from accelbench.scorer.errors import NoImagesError, UnknownClipModelError
from accelbench.scorer.score import score_dataset

SETTING = "sd15-ddim-8"
PROMPTS = ["a red cube on a wooden table", "an astronaut riding a horse", "a lighthouse at dawn",
           "two cats sleeping on a sofa"]
BATCH_SIZES = (1, 2)
SIZE = 32
TINY = (clip.TINY_MODEL, clip.RANDOM_WEIGHTS)
TINY_RECIPE = clip.recipe_id(*TINY)
# Known batch latencies (seconds) per unit and batch size; every batch of a batch size takes the same time.
LATENCY = {SETTING: {1: 2.0, 2: 3.0}, "t-fast": {1: 1.0, 2: 1.0}, "t-noop": {1: 2.5, 2: 3.5},
           "t-broken": {1: 1.0, 2: 1.0}}
METHODS = {"t-fast": "deepcache", "t-noop": "tome", "t-broken": "tgate"}


def baseline_pixels(prompt_index: int) -> np.ndarray:
    """A smooth gradient with noise, different per prompt."""
    rng = np.random.default_rng(prompt_index)
    ramp = np.linspace(0, 1, SIZE)[None, :, None] * np.linspace(0.3, 1, 3)[None, None, :]
    return np.clip(ramp * np.ones((SIZE, 1, 1)) + rng.normal(0, 0.03, (SIZE, SIZE, 3)), 0, 1)


def unit_pixels(unit: str, prompt_index: int, batch_size: int) -> np.ndarray:
    pixels = baseline_pixels(prompt_index)
    if unit == "t-fast":  # an accelerated image: close to the baseline, never identical
        pixels = np.clip(pixels + np.random.default_rng(100 + prompt_index).normal(0, 0.02, pixels.shape), 0, 1)
    if batch_size > 1 and unit != "t-broken":  # a small batch-size drift
        pixels = np.clip(pixels + 0.004, 0, 1)
    return pixels  # t-noop: bit-identical to its baseline at every batch size; t-broken: no drift


def encode(image: np.ndarray) -> tuple[bytes, str]:
    """(PNG bytes, pixel hash) of a float image, stored the way the builder stores images."""
    pixels = to_uint8(image)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue(), pixel_sha256(pixels)


def row(unit: str, prompt_index: int, batch_size: int, status: str = "ok") -> dict:
    baseline = unit == SETTING
    batch_index, position = divmod(prompt_index, batch_size)
    latency = LATENCY[unit][batch_size]
    record = {
        **schema.empty_row(schema.GENERATION_COLUMNS),
        "record_id": f"{unit}-p{prompt_index}-bs{batch_size}", "suite": "smoke",
        "variant": "baseline" if baseline else "gt", "unit_id": unit, "task_id": None if baseline else unit,
        "setting_id": SETTING, "model": "sd15", "scheduler": "ddim", "steps": 8,
        "method": "none" if baseline else METHODS[unit], "method_params": "{}", "prompt_index": prompt_index,
        "prompt": PROMPTS[prompt_index], "seed": 0, "image_seed": prompt_index, "batch_size": batch_size,
        "batch_index": batch_index, "position": position, "height": SIZE, "width": SIZE,
        "batch_latency_s": latency, "image_latency_s": latency / batch_size, "denoise_s": 0.8 * latency,
        "timer": "wall", "status": status, "device": "cpu", "device_name": "Test CPU", "dtype": "float32",
        "weights": "tiny", "versions": json.dumps({"torch": "test"}),
    }
    if status == "ok":
        png, sha = encode(unit_pixels(unit, prompt_index, batch_size))
        record.update(image={"bytes": png, "path": f"{record['record_id']}.png"}, image_sha256=sha)
    else:
        record.update(error="boom" if status == "error" else "NaN pixels", batch_latency_s=None,
                      image_latency_s=None, denoise_s=None)
    return record


def write_dataset(directory: Path, units=(SETTING, "t-fast", "t-noop", "t-broken")) -> Path:
    """The test dataset: a shared baseline and three tasks. t-broken's bs=2 batch 0 is 'nonfinite' and its
    bs=1 prompt 3 failed with 'error'."""
    rows = []
    for unit in units:
        for batch_size in BATCH_SIZES:
            for prompt_index in range(len(PROMPTS)):
                status = "ok"
                if unit == "t-broken" and batch_size == 2 and prompt_index < 2:
                    status = schema.STATUS_NONFINITE
                if unit == "t-broken" and batch_size == 1 and prompt_index == 3:
                    status = schema.STATUS_ERROR
                rows.append(row(unit, prompt_index, batch_size, status))
    dataset.write_json_atomic(directory / schema.DATASET_MANIFEST, schema.dataset_manifest("smoke", "tiny", "float32"))
    dataset.write_table_atomic(generation_table(rows),
                               directory / schema.GENERATIONS_DIR / "generations-test-0001.parquet")
    return directory


def generation_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema.arrow_schema(schema.GENERATION_COLUMNS))


def write_clip_scores(directory: Path, scores: dict[str, float], recipe_id: str = "hand-made--scores") -> str:
    """A CLIP scores folder written by hand, as score_clip would write it."""
    folder = store.clip_dir(directory, recipe_id)
    dataset.write_json_atomic(folder / store.RECIPE_FILE, {"recipe_id": recipe_id, "clip_model": "hand",
                                                          "clip_pretrained": "made", "clip_preprocess": "none",
                                                          "score": clip.SCORE_FORMULA, "random_weights": False})
    store.write_part(folder, [{"record_id": record, "recipe_id": recipe_id, "clip_model": "hand",
                               "clip_pretrained": "made", "clip_preprocess": "none", "clip_score": score}
                              for record, score in scores.items()], schema.CLIP_SCORE_COLUMNS)
    return recipe_id


def ok_record_ids(directory: Path) -> list[str]:
    return [r["record_id"] for r in dataset.read_generations(directory, ["status"]).to_pylist() if r["status"] == "ok"]


def score_files(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in (directory / schema.SCORES_DIR).rglob("*"))


def summary_row(rows: list[dict], task_id: str, variant: str, batch_size: str = "all") -> dict:
    [found] = [r for r in rows if r["task_id"] == task_id and r["variant"] == variant and r["batch_size"] == batch_size]
    return found


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """The test dataset scored end to end once (tiny CLIP, worker processes for decoding)."""
    directory = write_dataset(tmp_path_factory.mktemp("scored"))
    summary = score_dataset(directory, device="cpu", batch_size=8, num_workers=2, progress=False)
    return directory, summary


# ---------------------------------------------------------------------------------------------------------
# CLIP
# ---------------------------------------------------------------------------------------------------------


def test_clip_scores_match_an_independent_open_clip_computation(scored):
    import open_clip
    import torch
    import torch.nn.functional as F

    directory, summary = scored
    assert summary.clip.recipe_id == TINY_RECIPE and summary.clip.scored == len(ok_record_ids(directory))
    stored = aggregate.load_clip_scores(directory, TINY_RECIPE)

    # Same recipe, built directly: the shipped config, random weights after torch.manual_seed(0).
    if clip.TINY_MODEL not in open_clip.list_models():
        open_clip.add_model_config(Path(clip.__file__).parent / "clip_configs" / f"{clip.TINY_MODEL}.json")
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(clip.TINY_MODEL, pretrained=None)
    model.eval()
    tokenizer = open_clip.get_tokenizer(clip.TINY_MODEL)
    table = dataset.read_generations(directory, ["prompt", "status", "image"]).to_pylist()
    expected = {}
    with torch.no_grad():
        for record in table:
            if record["status"] != "ok":
                continue
            image = Image.open(io.BytesIO(record["image"]["bytes"])).convert("RGB")
            image_embedding = model.encode_image(preprocess(image)[None])
            text_embedding = model.encode_text(tokenizer([record["prompt"]]))
            cosine = F.cosine_similarity(image_embedding, text_embedding).item()
            expected[record["record_id"]] = 100 * max(cosine, 0.0)
    assert stored.keys() == expected.keys()  # every ok row, and only ok rows
    for record, value in expected.items():
        assert stored[record] == pytest.approx(value, abs=1e-4)


def test_clip_recipe_is_recorded_next_to_the_scores(scored):
    directory, _ = scored
    recipe = store.read_recipe(directory, TINY_RECIPE)
    assert recipe["clip_model"] == clip.TINY_MODEL and recipe["clip_pretrained"] == "random"
    assert recipe["random_weights"] is True and "mean nothing" in recipe["note"]
    assert "Normalize" in recipe["clip_preprocess"] and "\n" not in recipe["clip_preprocess"]
    table = store.read_scores(store.clip_dir(directory, TINY_RECIPE), schema.CLIP_SCORE_COLUMNS)
    assert set(table.column("clip_preprocess").to_pylist()) == {recipe["clip_preprocess"]}


def test_recipe_ids_are_readable_slugs():
    assert clip.recipe_id("ViT-B-32", "laion2b_s34b_b79k") == "vit-b-32--laion2b-s34b-b79k"
    assert TINY_RECIPE == "accelbench-tiny-clip--random"


def test_rescoring_is_a_no_op_and_a_second_recipe_gets_its_own_folder(tmp_path):
    import open_clip

    directory = write_dataset(tmp_path / "ds", units=(SETTING, "t-fast"))
    first = clip.score_clip(directory, *TINY, num_workers=0, progress=False)
    files = score_files(directory)
    rows = store.read_scores(first.folder, schema.CLIP_SCORE_COLUMNS).sort_by("record_id")

    again = clip.score_clip(directory, *TINY, num_workers=0, progress=False)
    assert (again.scored, again.skipped) == (0, first.scored)
    assert score_files(directory) == files  # nothing written, not even recipe.json
    assert store.read_scores(first.folder, schema.CLIP_SCORE_COLUMNS).sort_by("record_id").equals(rows)

    # A second recipe: another tiny architecture, registered for this test only.
    config = json.loads((clip.CONFIG_DIR / f"{clip.TINY_MODEL}.json").read_text())
    config["embed_dim"] = 16
    (tmp_path / "test-tiny-clip-b.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "test-tiny-clip-b.json")
    other = clip.score_clip(directory, "test-tiny-clip-b", "random", num_workers=0, progress=False)
    assert other.recipe_id == "test-tiny-clip-b--random" and other.scored == first.scored
    assert store.clip_recipe_ids(directory) == sorted([first.recipe_id, other.recipe_id])
    second = store.read_scores(other.folder, schema.CLIP_SCORE_COLUMNS)
    assert set(second.column("recipe_id").to_pylist()) == {other.recipe_id}
    assert store.read_scores(first.folder, schema.CLIP_SCORE_COLUMNS).sort_by("record_id").equals(rows)
    assert aggregate.load_clip_scores(directory, other.recipe_id) != aggregate.load_clip_scores(directory,
                                                                                               first.recipe_id)


def test_new_rows_are_scored_incrementally(tmp_path):
    directory = write_dataset(tmp_path / "ds", units=(SETTING,))
    first = clip.score_clip(directory, *TINY, num_workers=0, progress=False)
    extra = [row("t-fast", prompt_index, 1) for prompt_index in range(len(PROMPTS))]
    dataset.write_table_atomic(generation_table(extra),
                               directory / dataset.STAGING_DIR / "r0-test" / "part-000001.parquet")
    second = clip.score_clip(directory, *TINY, num_workers=0, progress=False)
    assert (second.scored, second.skipped) == (len(extra), first.scored)
    assert len(store.part_files(first.folder)) == 2


# ---------------------------------------------------------------------------------------------------------
# Fidelity
# ---------------------------------------------------------------------------------------------------------


def test_fidelity_pairs_and_values(scored):
    directory, _ = scored
    stored = aggregate.load_fidelity(directory)
    # t-noop: bit-identical to the baseline: PSNR inf, SSIM 1, identical.
    noop = stored[("t-noop-p0-bs1", fidelity.KIND_BASELINE)]
    assert noop["reference_record_id"] == f"{SETTING}-p0-bs1"
    assert (noop["psnr"], noop["ssim"], noop["identical"]) == (math.inf, 1.0, True)
    # t-fast: close but not identical; the values of the functional core on the decoded images.
    fast = stored[("t-fast-p1-bs2", fidelity.KIND_BASELINE)]
    assert fast["reference_record_id"] == f"{SETTING}-p1-bs2" and not fast["identical"]
    assert 25 < fast["psnr"] < 60 and 0.5 < fast["ssim"] < 1
    # Batch drift: bs=2 vs bs=1 of the same unit; failed rows take no part.
    drift = stored[(f"{SETTING}-p2-bs2", fidelity.KIND_DRIFT)]
    assert drift["reference_record_id"] == f"{SETTING}-p2-bs1" and not drift["identical"]
    assert ("t-broken-p0-bs2", fidelity.KIND_BASELINE) not in stored
    assert ("t-broken-p3-bs1", fidelity.KIND_BASELINE) not in stored
    assert stored[("t-broken-p2-bs2", fidelity.KIND_DRIFT)]["identical"]
    assert ("t-broken-p3-bs2", fidelity.KIND_DRIFT) not in stored  # its bs=1 image failed


def test_fidelity_is_incremental(scored):
    directory, _ = scored
    files = score_files(directory)
    again = fidelity.score_fidelity(directory, num_workers=0, progress=False)
    assert again.compared == 0 and again.skipped > 0 and score_files(directory) == files


def test_fidelity_compare_handles_size_changes():
    a = np.zeros((16, 16, 3), np.uint8)
    psnr, ssim, identical = fidelity.compare(a, np.zeros((8, 8, 3), np.uint8))
    assert math.isnan(psnr) and math.isnan(ssim) and not identical


# ---------------------------------------------------------------------------------------------------------
# Aggregates on known numbers
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """The test dataset with CLIP scores written by hand: baseline 30, t-fast 27 (10 % loss), t-noop 30."""
    directory = write_dataset(tmp_path_factory.mktemp("known"))
    scores = {}
    for record in ok_record_ids(directory):
        scores[record] = 27.0 if record.startswith("t-fast") else 30.0
    recipe_id = write_clip_scores(directory, scores)
    fidelity.score_fidelity(directory, num_workers=0, progress=False)
    built = report.build_report(directory, recipe_id=recipe_id, n_resamples=500)
    return directory, built


def test_speedup_and_quality_loss_are_exact(known):
    _, built = known
    fast = summary_row(built.pooled, "t-fast", "gt")
    # 4 batches of 2.0 s + 2 of 3.0 s at baseline vs 4 + 2 batches of 1.0 s.
    assert fast["speedup"] == pytest.approx((4 * 2.0 + 2 * 3.0) / 6.0)
    assert fast["denoise_speedup"] == pytest.approx((4 * 2.0 + 2 * 3.0) / 6.0)
    assert fast["speedup_ci_low"] <= fast["speedup"] <= fast["speedup_ci_high"]
    assert fast["quality_loss"] == pytest.approx(0.1)
    assert fast["quality_loss_ci_low"] == pytest.approx(0.1) and fast["quality_loss_ci_high"] == pytest.approx(0.1)
    assert (fast["clip_score"], fast["baseline_clip_score"]) == (pytest.approx(27.0), pytest.approx(30.0))
    assert fast["images"] == 8 and fast["failed"] == 0 and fast["identical_to_baseline"] == 0
    assert fast["median_image_latency_s"] == pytest.approx(0.75)  # four images at 1.0 s, four at 0.5 s
    assert fast["recipe_id"] == "hand-made--scores" and fast["device_name"] == "Test CPU"
    by_size = summary_row(built.by_batch_size, "t-fast", "gt", "1")
    assert by_size["speedup"] == pytest.approx(2.0) and by_size["images"] == 4
    assert summary_row(built.by_batch_size, "t-fast", "gt", "2")["speedup"] == pytest.approx(3.0)
    assert 0 < fast["drift_psnr"] < math.inf


def test_baseline_rows_repeat_per_task_with_speedup_one(known):
    _, built = known
    baselines = [summary_row(built.pooled, task, "baseline") for task in METHODS]
    assert all(b["speedup"] == 1.0 and b["quality_loss"] == 0.0 and b["clip_score"] == pytest.approx(30.0)
               for b in baselines)
    assert all(b["method"] == "none" and b["images"] == 8 and b["psnr"] is None for b in baselines)
    strip = [{k: v for k, v in b.items() if k != "task_id"} for b in baselines]
    assert strip[0] == strip[1] == strip[2]


def test_flags_no_op_failed_nonfinite_slowdown(known):
    _, built = known
    noop = summary_row(built.pooled, "t-noop", "gt")
    assert noop["flags"].split(";") == ["no-op", "slowdown"]
    assert noop["psnr"] == math.inf and noop["ssim"] == pytest.approx(1.0)
    assert noop["identical_to_baseline"] == 8 and noop["quality_loss"] == pytest.approx(0.0)
    assert noop["speedup"] == pytest.approx((4 * 2.0 + 2 * 3.0) / (4 * 2.5 + 2 * 3.5))
    broken = summary_row(built.pooled, "t-broken", "gt")
    assert broken["flags"].split(";") == ["failed-rows", "nonfinite"]
    assert broken["images"] == 8 and broken["failed"] == 3
    # Matched ok batches only: bs=1 prompts 0-2 and bs=2 batch 1, against the same baseline batches.
    assert broken["speedup"] == pytest.approx((3 * 2.0 + 3.0) / (3 * 1.0 + 1.0))
    assert summary_row(built.by_batch_size, "t-broken", "gt", "2")["flags"] == "failed-rows;nonfinite"
    assert summary_row(built.pooled, "t-fast", "gt")["flags"] == ""


def test_breakdown_has_the_batch_sizes_of_the_task():
    rows = [row(SETTING, p, size) for p in range(2) for size in BATCH_SIZES] + [row("t-fast", p, 1) for p in range(2)]
    pooled, by_batch_size = aggregate.summarize(rows)
    assert [(r["variant"], r["batch_size"]) for r in by_batch_size] == [("baseline", "1"), ("gt", "1")]
    assert summary_row(pooled, "t-fast", "gt")["speedup"] == pytest.approx(2.0)
    assert summary_row(pooled, "t-fast", "baseline")["images"] == 4  # the whole baseline, both batch sizes


def test_a_baseline_without_tasks_is_still_reported():
    pooled, _ = aggregate.summarize([row(SETTING, p, 1) for p in range(2)])
    assert [(r["task_id"], r["variant"], r["images"], r["speedup"]) for r in pooled] == [(None, "baseline", 2, 1.0)]


def test_suspicious_speedup_is_flagged():
    rows = [row(SETTING, 0, 1), row("t-fast", 0, 1)]
    rows[1]["batch_latency_s"] = 0.1
    pooled, _ = aggregate.summarize(rows)
    assert summary_row(pooled, "t-fast", "gt")["flags"] == "suspicious-speedup"


# ---------------------------------------------------------------------------------------------------------
# Report files
# ---------------------------------------------------------------------------------------------------------


def test_report_files(known):
    directory, built = known
    folder = directory / schema.REPORT_DIR
    assert {p.name for p in folder.iterdir()} == {"summary.json", "summary.csv", "by_batch_size.csv", "report.md",
                                                  "pareto.png"}
    pooled = pacsv.read_csv(folder / "summary.csv").to_pylist()
    assert sorted((r["task_id"], r["variant"]) for r in pooled) == sorted(
        (task, variant) for task in METHODS for variant in ("baseline", "gt"))
    assert {r["batch_size"] for r in pooled} == {"all"}
    by_size = pacsv.read_csv(folder / "by_batch_size.csv").to_pylist()
    assert len(by_size) == len(METHODS) * 2 * len(BATCH_SIZES)
    payload = json.loads((folder / "summary.json").read_text())
    assert len(payload["rows"]) == len(pooled) and payload["recipe"]["recipe_id"] == "hand-made--scores"
    assert summary_row(payload["rows"], "t-noop", "gt")["psnr"] == "inf"
    markdown = (folder / "report.md").read_text()
    for text in ("### sd15 · deepcache", "### sd15 · tome", "### sd15 · tgate", "| `t-fast` | 8 | ddim | 2.33×",
                 "Test CPU", "tiny synthetic models", "no-op", "![speedup vs quality loss](pareto.png)"):
        assert text in markdown, text
    with Image.open(folder / "pareto.png") as image:
        image.load()
        assert image.format == "PNG" and image.size == (840, 600)


def test_report_without_scores_says_so(tmp_path):
    directory = write_dataset(tmp_path / "ds", units=(SETTING, "t-fast"))
    built = report.build_report(directory, n_resamples=200)
    fast = summary_row(built.pooled, "t-fast", "gt")
    assert fast["speedup"] == pytest.approx(14 / 6)
    assert fast["clip_score"] is None and fast["quality_loss"] is None and fast["psnr"] is None
    assert fast["identical_to_baseline"] == 0  # from the stored pixel hashes, no scores needed
    assert any("No CLIP scores" in note for note in built.notes)
    assert any("No fidelity scores" in note for note in built.notes)
    assert "No CLIP scores" in (directory / schema.REPORT_DIR / "report.md").read_text()


def test_report_rebuild_needs_no_model_and_is_reproducible(scored):
    directory, summary = scored
    rebuilt = report.build_report(directory)  # the only recipe there
    assert rebuilt.pooled == summary.report.pooled
    assert "random weights" in " ".join(rebuilt.notes)


def test_summary_format_fits_a_screen(scored):
    _, summary = scored
    text = summary.format()
    assert TINY_RECIPE in text and "t-fast" in text and "report.md" in text
    assert len(text.splitlines()) < 40


# ---------------------------------------------------------------------------------------------------------
# Errors: one line each
# ---------------------------------------------------------------------------------------------------------


def one_line_error(error_type, call):
    with pytest.raises(error_type) as caught:
        call()
    assert isinstance(caught.value, UserInputError) and "\n" not in str(caught.value)
    return str(caught.value)


def test_errors_are_one_line(tmp_path):
    assert "no such dataset folder" in one_line_error(DatasetError, lambda: score_dataset(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    assert "not an accelbench dataset" in one_line_error(DatasetError, lambda: score_dataset(tmp_path / "empty"))
    future = tmp_path / "future"
    future.mkdir()
    (future / schema.DATASET_MANIFEST).write_text(json.dumps({**schema.dataset_manifest("smoke", "tiny", "float32"),
                                                              "schema_version": 99}))
    assert "schema version 99" in one_line_error(DatasetError, lambda: score_dataset(future))
    assert "schema version 99" in one_line_error(DatasetError, lambda: report.build_report(future))

    directory = write_dataset(tmp_path / "ds", units=(SETTING,))
    message = one_line_error(UnknownClipModelError, lambda: score_dataset(directory, clip_model="ViT-B-33"))
    assert "'ViT-B-33'" in message and "did you mean 'ViT-B-32'" in message
    message = one_line_error(UnknownClipModelError, lambda: score_dataset(
        directory, clip_model="ViT-B-32", clip_pretrained="laion2b_s34b_b7k"))
    assert "did you mean 'laion2b_s34b_b79k'" in message
    assert not (directory / schema.SCORES_DIR).exists()  # nothing was written

    failed = write_dataset(tmp_path / "failed", units=())
    dataset.write_table_atomic(generation_table([row(SETTING, 0, 1, status="error")]),
                               failed / schema.GENERATIONS_DIR / "generations-test-0001.parquet")
    assert "none with status 'ok'" in one_line_error(NoImagesError, lambda: score_dataset(failed))
