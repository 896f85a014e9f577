"""The score stage on hand-made datasets with known values (tests/factories.py): CLIP scores, fidelity,
aggregates, the report, the joined scores table, errors and the ``score`` command's exit status.

CLIP uses the shipped tiny open_clip model with random weights, on CPU, offline.
"""

import io
import json
import math
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from factories import (
    BATCH_SIZES,
    BROKEN,
    FAST,
    HAND_RECIPE,
    NOOP,
    PROMPTS,
    SETTING,
    TASKS,
    TINY,
    TINY_RECIPE,
    dataset_rows,
    generation_table,
    known_scores,
    ok_record_ids,
    record_id,
    reported_dataset,
    row,
    shard_path,
    write_clip_scores,
    write_dataset,
)
from PIL import Image

from accelbench import dataset, schema
from accelbench.cli import EXIT_BAD_INPUT, EXIT_FAILED, main
from accelbench.dataset import DatasetError
from accelbench.errors import UserInputError
from accelbench.schema import KIND_BASELINE, KIND_DRIFT
from accelbench.scorer import aggregate, clip, fidelity, functional, report, store
from accelbench.scorer.errors import NoImagesError, UnknownClipModelError
from accelbench.scorer.score import score_dataset


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


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """The test dataset with CLIP scores written by hand (baseline 30, FAST 27: a 10 % loss), reported."""
    return reported_dataset(tmp_path_factory.mktemp("known") / "ds", n_resamples=500)


# ---------------------------------------------------------------------------------------------------------
# CLIP
# ---------------------------------------------------------------------------------------------------------


def test_clip_scores_match_an_independent_open_clip_computation(scored):
    import open_clip
    import torch
    import torch.nn.functional as F

    directory, summary = scored
    assert summary.clip.recipe_id == TINY_RECIPE  # the dataset's default recipe, from its accelbench.json
    assert summary.clip.scored == len(ok_record_ids(directory)) and summary.complete
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

    directory = write_dataset(tmp_path / "ds", units=(SETTING, FAST))
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
    extra = [row(FAST, prompt_index, 1) for prompt_index in range(len(PROMPTS))]
    dataset.write_table_atomic(generation_table(extra),
                               directory / schema.STAGING_DIR / "r0-test" / "part-000001.parquet")
    second = clip.score_clip(directory, *TINY, num_workers=0, progress=False)
    assert (second.scored, second.skipped) == (len(extra), first.scored)
    assert len(store.part_files(first.folder)) == 2


@pytest.mark.parametrize("listing", ["part_files", "shard_files"])
def test_rows_another_rank_compacts_while_they_are_read_are_read_once(tmp_path, monkeypatch, listing):
    """Another rank's writer compacts parts (writes the shard, then removes the parts) at any moment of a read: just
    after either listing. Every row is read once, from the part or from the shard, never from neither."""
    directory = write_dataset(tmp_path / "ds", units=(SETTING,))
    extra = [row(FAST, prompt_index, 1) for prompt_index in range(len(PROMPTS))]
    staging = directory / schema.STAGING_DIR / "r1-test"
    dataset.write_table_atomic(generation_table(extra), staging / "part-000001.parquet")
    expected = sorted(dataset.read_generations(directory, ["status"]).column("record_id").to_pylist())
    original = getattr(dataset, listing)

    def list_then_compact(*args, **kwargs):
        listed = original(*args, **kwargs)
        if staging.exists():
            dataset.write_table_atomic(generation_table(extra), shard_path(directory, FAST))
            for part in staging.iterdir():
                part.unlink()
            staging.rmdir()
        return listed

    monkeypatch.setattr(dataset, listing, list_then_compact)
    read = dataset.read_generations(directory, ["status"]).column("record_id").to_pylist()
    assert sorted(read) == expected and len(expected) == len(dataset_rows((SETTING,))) + len(extra)


def test_a_recipe_without_scores_is_no_recipe(tmp_path):
    """A scoring run killed between recipe.json and its first part leaves a folder that no stage counts."""
    directory = write_dataset(tmp_path / "ds", units=(SETTING,))
    write_clip_scores(directory, known_scores(directory))
    dataset.write_json_atomic(store.clip_dir(directory, "killed--run") / store.RECIPE_FILE, {"recipe_id": "killed"})
    assert store.clip_recipe_ids(directory) == [HAND_RECIPE]
    assert report.choose_recipe(directory, None, dataset.read_manifest(directory)) == HAND_RECIPE
    with pytest.raises(UserInputError, match="no CLIP scores for recipe 'killed--run'"):
        report.choose_recipe(directory, "killed--run", {})


# ---------------------------------------------------------------------------------------------------------
# Fidelity
# ---------------------------------------------------------------------------------------------------------


def test_fidelity_pairs_and_values(scored):
    directory, _ = scored
    stored = aggregate.load_fidelity(directory)
    # NOOP: bit-identical to the baseline: PSNR inf, SSIM 1, identical.
    noop = stored[(record_id(NOOP, 0, 1), KIND_BASELINE)]
    assert noop["reference_record_id"] == record_id(SETTING, 0, 1)
    assert (noop["psnr"], noop["ssim"], noop["identical"]) == (math.inf, 1.0, True)
    # FAST: close but not identical; the values of the functional core on the decoded images.
    fast = stored[(record_id(FAST, 1, 2), KIND_BASELINE)]
    assert fast["reference_record_id"] == record_id(SETTING, 1, 2) and not fast["identical"]
    assert 25 < fast["psnr"] < 60 and 0.5 < fast["ssim"] < 1
    # Batch drift: bs=2 vs bs=1 of the same unit; failed rows take no part.
    drift = stored[(record_id(SETTING, 2, 2), KIND_DRIFT)]
    assert drift["reference_record_id"] == record_id(SETTING, 2, 1) and not drift["identical"]
    assert (record_id(BROKEN, 0, 2), KIND_BASELINE) not in stored
    assert (record_id(BROKEN, 3, 1), KIND_BASELINE) not in stored
    assert stored[(record_id(BROKEN, 2, 2), KIND_DRIFT)]["identical"]
    assert (record_id(BROKEN, 3, 2), KIND_DRIFT) not in stored  # its bs=1 image failed


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
# The joined scores table (config "scores" of a published dataset)
# ---------------------------------------------------------------------------------------------------------


def test_scores_table_joins_each_score_with_its_row_and_fidelity(known):
    directory, _ = known
    table = store.scores_table(directory, HAND_RECIPE)
    assert table.schema.names == [column.name for column in schema.SCORES_COLUMNS]
    assert table.schema.equals(schema.arrow_schema(schema.SCORES_COLUMNS), check_metadata=True)
    scores = aggregate.load_clip_scores(directory, HAND_RECIPE)
    generations = {r["record_id"]: r for r in dataset.read_generations(directory).to_pylist()}
    stored = aggregate.load_fidelity(directory)
    joined = table.to_pylist()
    assert sorted(r["record_id"] for r in joined) == sorted(scores)  # one row per CLIP score
    for kind, names in schema.SCORES_FIDELITY.items():
        assert sum(r[names["reference_record_id"]] is not None for r in joined) == sum(k == kind for _, k in stored)
    for r in joined:
        assert r["clip_score"] == scores[r["record_id"]] and r["recipe_id"] == HAND_RECIPE
        assert all(r[name] == generations[r["record_id"]][name] for name in schema.SCORES_IDENTITY)
        for kind, names in schema.SCORES_FIDELITY.items():
            match = stored.get((r["record_id"], kind))
            assert {names[name]: r[names[name]] for name in names} == (
                {renamed: match[name] for name, renamed in names.items()} if match else dict.fromkeys(names.values()))
    noop = next(r for r in joined if r["record_id"] == record_id(NOOP, 1, 2))
    assert noop["identical_to_baseline"] and noop["baseline_record_id"] == record_id(SETTING, 1, 2)
    assert noop["drift_reference_record_id"] == record_id(NOOP, 1, 1)


# ---------------------------------------------------------------------------------------------------------
# Aggregates on known numbers
# ---------------------------------------------------------------------------------------------------------


def test_speedup_and_quality_loss_are_exact(known):
    _, built = known
    fast = summary_row(built.pooled, FAST, "gt")
    # 4 batches of 2.0 s + 2 of 3.0 s at baseline vs 4 + 2 batches of 1.0 s.
    assert fast["speedup"] == pytest.approx((4 * 2.0 + 2 * 3.0) / 6.0)
    assert fast["denoise_speedup"] == pytest.approx((4 * 2.0 + 2 * 3.0) / 6.0)
    assert fast["speedup_ci_low"] <= fast["speedup"] <= fast["speedup_ci_high"]
    assert fast["speedup_n"] == 6  # batches: 4 at batch size 1, 2 at batch size 2
    assert fast["quality_loss"] == pytest.approx(0.1)
    # 8 images, but 4 (prompt, seed) clusters: too few units for a CI.
    assert fast["quality_loss_n"] == 4 and fast["quality_loss_ci_low"] is None is fast["quality_loss_ci_high"]
    assert (fast["clip_score"], fast["baseline_clip_score"]) == (pytest.approx(27.0), pytest.approx(30.0))
    assert fast["images"] == 8 and fast["failed"] == 0 and fast["identical_to_baseline"] == 0
    assert fast["median_image_latency_s"] == pytest.approx(0.75)  # four images at 1.0 s, four at 0.5 s
    assert fast["recipe_id"] == HAND_RECIPE and fast["device_name"] == "Test CPU"
    by_size = summary_row(built.by_batch_size, FAST, "gt", "1")
    assert by_size["speedup"] == pytest.approx(2.0) and by_size["images"] == 4
    assert summary_row(built.by_batch_size, FAST, "gt", "2")["speedup"] == pytest.approx(3.0)
    assert 0 < fast["drift_psnr"] < math.inf


def test_baseline_rows_repeat_per_task_with_speedup_one(known):
    _, built = known
    baselines = [summary_row(built.pooled, task, "baseline") for task in TASKS]
    assert all(b["speedup"] == 1.0 and b["quality_loss"] == 0.0 and b["clip_score"] == pytest.approx(30.0)
               for b in baselines)
    assert all(b["method"] == "none" and b["images"] == 8 and b["psnr"] is None for b in baselines)
    strip = [{k: v for k, v in b.items() if k != "task_id"} for b in baselines]
    assert strip[0] == strip[1] == strip[2]


def test_flags_no_op_failed_nonfinite_slowdown(known):
    _, built = known
    noop = summary_row(built.pooled, NOOP, "gt")
    assert noop["flags"].split(";") == ["no-op", "slowdown"]
    assert noop["psnr"] == math.inf and noop["ssim"] == pytest.approx(1.0)
    assert noop["identical_to_baseline"] == 8 and noop["quality_loss"] == pytest.approx(0.0)
    assert noop["speedup"] == pytest.approx((4 * 2.0 + 2 * 3.0) / (4 * 2.5 + 2 * 3.5))
    broken = summary_row(built.pooled, BROKEN, "gt")
    assert broken["flags"].split(";") == ["failed-rows", "nonfinite"]
    assert broken["images"] == 8 and broken["failed"] == 3
    # Matched ok batches only: bs=1 prompts 0-2 and bs=2 batch 1, against the same baseline batches.
    assert broken["speedup"] == pytest.approx((3 * 2.0 + 3.0) / (3 * 1.0 + 1.0))
    assert summary_row(built.by_batch_size, BROKEN, "gt", "2")["flags"] == "failed-rows;nonfinite"
    assert summary_row(built.pooled, FAST, "gt")["flags"] == ""


def test_breakdown_has_the_batch_sizes_of_the_task():
    rows = [row(SETTING, p, size) for p in range(2) for size in BATCH_SIZES] + [row(FAST, p, 1) for p in range(2)]
    pooled, by_batch_size = aggregate.summarize(rows)
    assert [(r["variant"], r["batch_size"]) for r in by_batch_size] == [("baseline", "1"), ("gt", "1")]
    assert summary_row(pooled, FAST, "gt")["speedup"] == pytest.approx(2.0)
    assert summary_row(pooled, FAST, "baseline")["images"] == 4  # the whole baseline, both batch sizes


def test_a_baseline_without_tasks_is_still_reported():
    pooled, _ = aggregate.summarize([row(SETTING, p, 1) for p in range(2)])
    assert [(r["task_id"], r["variant"], r["images"], r["speedup"]) for r in pooled] == [(None, "baseline", 2, 1.0)]


def test_suspicious_speedup_is_flagged():
    rows = [row(SETTING, 0, 1), row(FAST, 0, 1)]
    rows[1]["batch_latency_s"] = 0.1
    pooled, _ = aggregate.summarize(rows)
    assert summary_row(pooled, FAST, "gt")["flags"] == "suspicious-speedup"


# ---------------------------------------------------------------------------------------------------------
# Report files
# ---------------------------------------------------------------------------------------------------------


def test_report_files(known):
    directory, built = known
    folder = directory / schema.REPORT_DIR
    assert {p.name for p in folder.iterdir()} == {"summary.json", "summary.csv", "by_batch_size.csv", "report.md",
                                                  "pareto.png", "grids", "index.html"}
    pooled = pacsv.read_csv(folder / "summary.csv").to_pylist()
    assert sorted((r["task_id"], r["variant"]) for r in pooled) == sorted(
        (task, variant) for task in TASKS for variant in ("baseline", "gt"))
    assert {r["batch_size"] for r in pooled} == {"all"}
    by_size = pacsv.read_csv(folder / "by_batch_size.csv").to_pylist()
    assert len(by_size) == len(TASKS) * 2 * len(BATCH_SIZES)
    payload = json.loads((folder / "summary.json").read_text())
    assert len(payload["rows"]) == len(pooled) and payload["recipe"]["recipe_id"] == HAND_RECIPE
    assert summary_row(payload["rows"], NOOP, "gt")["psnr"] == "inf"
    markdown = (folder / "report.md").read_text()
    for text in ("### sd15 · deepcache", "### sd15 · tome", "### sd15 · tgate", f"| `{FAST}` | 8 | ddim | 2.33×",
                 "Test CPU", "| diffusers | 0.42.1 |", "tiny synthetic models", "no-op",
                 "![speedup vs quality loss](pareto.png)"):
        assert text in markdown, text
    with Image.open(folder / "pareto.png") as image:
        image.load()
        assert image.format == "PNG" and image.size == (840, 600)


def test_summary_csv_reads_back_as_the_reported_rows(known):
    directory, built = known
    summary = report.read_summary(directory)
    assert summary.schema.equals(schema.arrow_schema(schema.SUMMARY_COLUMNS), check_metadata=True)
    assert summary.to_pylist() == built.pooled  # typed: ints, floats (inf included), nulls and empty flags


def test_report_without_scores_says_so(tmp_path):
    directory = write_dataset(tmp_path / "ds", units=(SETTING, FAST))
    built = report.build_report(directory, n_resamples=200)
    fast = summary_row(built.pooled, FAST, "gt")
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
    assert TINY_RECIPE in text and FAST in text and "report.md" in text
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
    future = write_dataset(tmp_path / "future", units=(SETTING,))
    manifest = dataset.read_manifest(future)
    (future / schema.DATASET_MANIFEST).write_text(json.dumps({**manifest, "schema_version": 99}))
    assert "schema version 99" in one_line_error(DatasetError, lambda: score_dataset(future))
    assert "schema version 99" in one_line_error(DatasetError, lambda: report.build_report(future))

    directory = write_dataset(tmp_path / "ds", units=(SETTING,))
    message = one_line_error(UnknownClipModelError, lambda: score_dataset(directory, clip_model="ViT-B-33"))
    assert "'ViT-B-33'" in message and "did you mean 'ViT-B-32'" in message
    message = one_line_error(UnknownClipModelError, lambda: score_dataset(
        directory, clip_model="ViT-B-32", clip_pretrained="laion2b_s34b_b7k"))
    assert "did you mean 'laion2b_s34b_b79k'" in message
    assert not (directory / schema.SCORES_DIR).exists()  # nothing was written

    failed = write_dataset(tmp_path / "failed", rows=[row(SETTING, 0, 1, status=schema.STATUS_ERROR)])
    assert "none with status 'ok'" in one_line_error(NoImagesError, lambda: score_dataset(failed))


# ---------------------------------------------------------------------------------------------------------
# The score command: what cannot be read is reported and exits 1; a malformed shard is one line and exits 2
# ---------------------------------------------------------------------------------------------------------


def run_score(directory: Path):
    return CliRunner().invoke(main, ["score", str(directory), "--workers", "0", "--no-progress"])


def test_an_unreadable_shard_is_named_and_exits_1(tmp_path):
    directory = write_dataset(tmp_path / "ds", units=(SETTING, FAST))
    shard_path(directory, SETTING).write_bytes(b"not parquet")  # e.g. truncated by a full disk
    result = run_score(directory)
    assert result.exit_code == EXIT_FAILED, result.output
    name = str(shard_path(directory, SETTING).relative_to(directory))
    note = next(line for line in result.stdout.splitlines() if "cannot be read" in line)
    assert note.startswith("note: 1 generation file(s)") and name in note and "lost their baseline" in note
    assert name in (directory / schema.REPORT_DIR / report.REPORT_MD).read_text()
    # What could be read is scored: FAST's 8 images, without baseline images (so no quality loss or PSNR); the
    # speedup still comes from the baseline latencies recorded on FAST's own rows (baseline_latency_s).
    assert len(aggregate.load_clip_scores(directory, TINY_RECIPE)) == len(ok_record_ids(directory)) == 8
    fast = summary_row(report.read_summary(directory).to_pylist(), FAST, "gt")
    assert fast["quality_loss"] is None and fast["psnr"] is None and fast["speedup"] == pytest.approx(14 / 6)


def test_an_image_that_cannot_be_decoded_is_named_and_exits_1(tmp_path):
    rows = dataset_rows((SETTING, FAST))
    broken = record_id(FAST, 2, 1)
    next(r for r in rows if r["record_id"] == broken)["image"]["bytes"] = b"\x89PNG truncated"
    directory = write_dataset(tmp_path / "ds", rows=rows)
    result = run_score(directory)
    assert result.exit_code == EXIT_FAILED, result.output
    assert "1 unreadable" in result.stdout
    assert f"CLIP scores cover 15 of 16 ok images; not scored: {broken}" in result.stdout
    assert len(aggregate.load_clip_scores(directory, TINY_RECIPE)) == 15


def test_a_shard_without_a_column_is_one_line_and_exits_2(tmp_path):
    directory = write_dataset(tmp_path / "ds", units=(SETTING, FAST))
    path = shard_path(directory, FAST)
    dataset.write_table_atomic(pq.read_table(path).drop_columns(["prompt"]), path)
    result = run_score(directory)
    assert result.exit_code == EXIT_BAD_INPUT
    assert result.stderr == f"error: {path}: missing column prompt\n"
    assert not (directory / schema.SCORES_DIR).exists()  # refused before anything was written


def test_a_complete_dataset_scores_with_exit_0(tmp_path):
    directory = write_dataset(tmp_path / "ds", units=(SETTING, FAST))
    write_clip_scores(directory, known_scores(directory), TINY_RECIPE)  # already scored: no model runs
    result = run_score(directory)
    assert result.exit_code == 0, result.output
    assert "0 image(s) scored, 16 already scored" in result.stdout


# ---------------------------------------------------------------------------------------------------------
# Statistics: resampling units, CIs with n, flags relative to the CI and the GT
# ---------------------------------------------------------------------------------------------------------


def duplicated_rows(seeds=(0, 1, 2)) -> list[dict]:
    """SETTING and FAST over 4 prompts x 3 seeds at batch sizes 1 and 2: every (prompt, seed) rendered twice."""
    rows = []
    for seed in seeds:
        for unit in (SETTING, FAST):
            for batch_size in BATCH_SIZES:
                for prompt_index in range(len(PROMPTS)):
                    r = row(unit, prompt_index, batch_size)
                    r.update(seed=seed, record_id=f"{r['record_id']}-s{seed}", image=None)
                    rows.append(r)
    return rows


def test_cluster_bootstrap_is_wider_than_the_naive_one_when_batch_sizes_duplicate_images():
    """Quality loss of a smoke-like dataset: the bs=1 and bs=2 images of one (prompt, seed) score alike (they are
    the same image up to drift). Resampling images treats them as independent and is too narrow; resampling
    (prompt, seed) clusters is not."""
    rows = duplicated_rows()
    rng = np.random.default_rng(7)
    cluster_loss = {(p, s): rng.normal(0.1, 0.05) for p in range(len(PROMPTS)) for s in (0, 1, 2)}
    scores = {}
    for r in rows:
        base = 30.0 + (r["prompt_index"] + 3 * r["seed"]) % 5  # per-cluster baseline, the same at both sizes
        loss = 0.0 if r["unit_id"] == SETTING else cluster_loss[(r["prompt_index"], r["seed"])]
        scores[r["record_id"]] = base * (1 - loss)
    pooled, _ = aggregate.summarize(rows, scores, n_resamples=2000)
    fast = summary_row(pooled, FAST, "gt")
    assert fast["quality_loss_n"] == 12  # (prompt, seed) clusters, not 24 images
    cluster_width = fast["quality_loss_ci_high"] - fast["quality_loss_ci_low"]

    pairs = [(base, r) for r, base in aggregate.pairing.baseline_references(rows)]
    naive_low, naive_high = functional.bootstrap_ci(
        functional.relative_loss, np.array([scores[b["record_id"]] for b, _ in pairs]),
        np.array([scores[r["record_id"]] for _, r in pairs]))  # yesterday's CI: 24 "independent" images
    assert cluster_width > 1.3 * (naive_high - naive_low)
    assert fast["quality_loss_ci_low"] < fast["quality_loss"] < fast["quality_loss_ci_high"]
    # CLIP score and SSIM/PSNR resample the same clusters.
    assert fast["clip_score_n"] == 12 and fast["speedup_n"] == 18  # batches: 3 seeds x (4 + 2)


def test_speedup_pairs_each_batch_with_the_baseline_latency_of_its_round():
    rows = [row(SETTING, p, 1) for p in range(4)] + [row(FAST, p, 1) for p in range(4)]
    for r in rows[4:]:
        r["baseline_latency_s"] = 4.0  # the baseline ran slower in these rounds than in its own stored rows
    rows[7]["baseline_latency_s"] = None  # not recorded: matched by batch key with the stored baseline (2.0 s)
    pooled, _ = aggregate.summarize(rows)
    assert summary_row(pooled, FAST, "gt")["speedup"] == pytest.approx((3 * 4.0 + 2.0) / 4.0)


def test_no_ci_from_fewer_than_5_units_and_n_beside_every_ci(known):
    directory, built = known
    broken = summary_row(built.pooled, BROKEN, "gt")
    assert broken["speedup_n"] == 4 and broken["speedup_ci_low"] is None and broken["speedup"] == pytest.approx(2.25)
    text = (directory / schema.REPORT_DIR / "report.md").read_text()
    assert f"| `{BROKEN}` | 8 | ddim | 2.25× n/a (n=4) |" in text
    assert f"| `{FAST}` | 8 | ddim | 2.33× [" in text and "(n=6)" in text
    assert "(prompt, seed) clusters" in text and "interleaving rounds" in text  # the resampling units, stated


def test_drift_counts_identical_pairs(known):
    directory, built = known
    broken = summary_row(built.pooled, BROKEN, "gt")  # no drift by construction: the one ok pair is identical
    fast = summary_row(built.pooled, FAST, "gt")
    assert (broken["drift_pairs"], broken["drift_identical"], broken["drift_psnr"]) == (1, 1, math.inf)
    assert (fast["drift_pairs"], fast["drift_identical"]) == (4, 0)
    assert "(1/1 identical)" in (directory / schema.REPORT_DIR / "report.md").read_text()


def test_slowdown_needs_the_whole_ci_below_one():
    def flags(factors):
        """FAST's flags when its batches take ``factors`` x the baseline's (cycled over its 12 batches)."""
        rows = duplicated_rows(seeds=(0, 1))
        batches = sorted({(r["seed"], r["batch_size"], r["batch_index"]) for r in rows})
        for r in rows:
            if r["unit_id"] == FAST:
                factor = factors[batches.index((r["seed"], r["batch_size"], r["batch_index"])) % len(factors)]
                r["batch_latency_s"] = r["baseline_latency_s"] * factor
        fast = summary_row(aggregate.summarize(rows, n_resamples=500)[0], FAST, "gt")
        return fast["speedup"], fast["speedup_ci_high"], fast["flags"]

    speedup, high, found = flags([0.6, 1.6])  # noisy, slower on average, but not clearly
    assert speedup < 1 <= high and found == "no-clear-speedup"
    speedup, high, found = flags([1.2, 1.3])  # every batch slower: the whole CI is below 1x
    assert high < 1 and found == "slowdown"
    too_few = [row(SETTING, p, 1) for p in range(4)] + [row(NOOP, p, 1) for p in range(4)]  # 4 batches: no CI
    assert summary_row(aggregate.summarize(too_few)[0], NOOP, "gt")["flags"] == "no-op;no-clear-speedup"


def test_suspicious_speedup_is_relative_to_the_gt_and_the_work_bound():
    # Baseline: denoise_s = 0.8 x latency, so the denoiser-work bound is 5x. GT FAST: 2x at batch size 1.
    base = [row(SETTING, p, 1) for p in range(4)] + [row(FAST, p, 1) for p in range(4)]

    def with_submission(latency):
        return base + [row(FAST, p, 1, submission="fast", latency=latency) for p in range(4)]

    pooled, _ = aggregate.summarize(with_submission(0.5))  # 4x: > 1.5 x the GT's 2x, but below the 5x bound
    sub = summary_row(pooled, FAST, "sub:fast")
    assert sub["speedup_bound"] == pytest.approx(5.0) and "suspicious-speedup" not in sub["flags"]
    pooled, _ = aggregate.summarize(with_submission(0.25))  # 8x: > 1.5 x GT and > the bound, yet < 10x
    assert summary_row(pooled, FAST, "sub:fast")["flags"] == "suspicious-speedup"
    assert summary_row(pooled, FAST, "gt")["flags"] == ""


def test_undefined_quality_loss_is_na_with_a_note(tmp_path):
    directory = write_dataset(tmp_path / "ds", units=(SETTING, FAST))
    write_clip_scores(directory, {r: 0.0 for r in ok_record_ids(directory)})  # a random CLIP clamps all to 0
    built = report.build_report(directory, recipe_id=HAND_RECIPE, n_resamples=100)
    fast = summary_row(built.pooled, FAST, "gt")
    assert fast["quality_loss"] is None and fast["undefined"] == "quality_loss"
    assert any("Quality loss is undefined (n/a) for 1 task" in note for note in built.notes)
    text = (directory / schema.REPORT_DIR / "report.md").read_text()
    assert f"| `{FAST}` | 8 | ddim | 2.33× [" in text and "| n/a |" in text
