"""The generate stage on the smoke suite: every planned image, the rows' timing and environment, round-robin
rounds, determinism across batch sizes and reruns, groups under --max-resident, encoding between rounds, sequential
timing, and the refusals that keep one dataset one set of arguments.

Runs in this process share the warm forkserver; what needs a process of its own runs the CLI in a subprocess.
"""

import io
import json
import shutil
from collections import Counter, defaultdict

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from generating import (
    CATALOG,
    FAKE,
    SEED_KEY,
    SLICE,
    SMOKE,
    generate,
    gt_source,
    hashes,
    raw_record_ids,
    rows,
    submission,
)
from PIL import Image

from accelbench import dataset, schema
from accelbench.builder import plan, programs
from accelbench.builder.programs import PROGRAM_MODULE
from accelbench.builder.seeding import image_seed
from accelbench.builder.worker import ProgramWorker
from accelbench.cli import main

# End-to-end generate runs: out of make test-fast's quick lane.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The whole smoke suite, generated once, as `make demo` does."""
    out = tmp_path_factory.mktemp("smoke")
    summary = generate(out)
    return out, summary


def test_smoke_suite_writes_every_planned_image(smoke):
    out, summary = smoke
    units = plan.build_units(CATALOG, [CATALOG.task(task_id) for task_id in SMOKE.tasks], (schema.BASELINE, schema.GT))
    prompts = len(SMOKE.prompts.inline)
    expected = len(units) * len(SMOKE.seeds) * prompts * len(SMOKE.batch_sizes)
    assert len(units) == len(SMOKE.tasks) + 4  # one shared baseline per family
    assert summary.rows_written == expected and summary.failed_rows == 0
    table = rows(out)
    assert len(table) == expected
    assert len(set(raw_record_ids(out))) == len(raw_record_ids(out)) == expected
    assert Counter(row["status"] for row in table) == {"ok": expected}
    assert {row["variant"] for row in table} == {"baseline", "gt"}
    assert all(row["task_id"] is None and row["submission"] is None for row in table if row["variant"] == "baseline")
    assert {row["weights"] for row in table} == {"tiny"}
    assert not (out / schema.STAGING_DIR).exists() or not any((out / schema.STAGING_DIR).iterdir())
    # One log per (unit, batch size): every program ran in a worker of its own.
    assert len(list((out / schema.LOGS_DIR).glob("*.log"))) == len(units) * len(SMOKE.batch_sizes)


def test_rows_carry_harness_timing_programs_and_environment(smoke):
    out, _ = smoke
    table = rows(out)
    baseline_latency = {(row["setting_id"], row["seed"], row["batch_size"], row["batch_index"]): row["batch_latency_s"]
                        for row in table if row["variant"] == "baseline"}
    for row in table:
        assert row["batch_latency_s"] > 0 and row["timer"] == "harness" and row["timing"] == "interleaved"
        assert row["image_latency_s"] == pytest.approx(row["batch_latency_s"] / row["batch_size"])
        stages = [row[name] for name in ("text_encode_s", "denoise_s", "vae_decode_s", "postprocess_s")]
        assert all(stage is not None and stage >= 0 for stage in stages)
        assert sum(stages) <= row["batch_latency_s"]  # measured inside the harness's window
        # Each row carries the latency of the baseline batch of the same prompts and seeds, same round.
        key = (row["setting_id"], row["seed"], row["batch_size"], row["batch_index"])
        assert row["baseline_latency_s"] == baseline_latency[key]
        assert row["peak_memory_bytes"] is None and row["device"] == "cpu"
        versions = json.loads(row["versions"])
        assert {"torch", "diffusers", "tgate", "tomesd", "DeepCache"} <= set(versions)
        program = (out / schema.PROGRAMS_DIR / f"{row['program_sha256']}.py").read_text()
        assert f"NUM_INFERENCE_STEPS = {row['steps']}" in program
    run_records = list((out / schema.RUNS_DIR).glob("*.json"))
    assert len(run_records) == 1 and json.loads(run_records[0].read_text())["rows_written"] == len(table)
    manifest = json.loads((out / schema.DATASET_MANIFEST).read_text())
    assert manifest["clip"] == {"model": SMOKE.clip_model, "pretrained": SMOKE.clip_pretrained}
    assert manifest["prompts_sha256"] == plan.prompts_sha256(list(SMOKE.prompts.inline))


def test_rounds_run_round_robin_baseline_first(smoke):
    """Batch k of the baseline, then batch k of every other unit of the setting, then batch k + 1."""
    out, _ = smoke
    batches = defaultdict(dict)
    for row in rows(out, ["setting_id", "batch_size", "round", "variant", "unit_id", "started_at"]):
        key = (row["round"], row["variant"], row["unit_id"])
        batches[(row["setting_id"], row["batch_size"])][key] = row["started_at"]
    for group in batches.values():
        order = [key for key, _ in sorted(group.items(), key=lambda item: item[1])]
        assert [key[0] for key in order] == sorted(key[0] for key in order)  # rounds never overlap
        for index in {key[0] for key in order}:
            assert [key for key in order if key[0] == index][0][1] == "baseline"


def test_dataset_loads_with_datasets_and_decodes_images(smoke):
    import datasets

    from accelbench.builder.encode import pixel_sha256

    out, _ = smoke
    loaded = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert loaded.num_rows == len(rows(out))
    assert isinstance(loaded.features["image"], datasets.Image)
    first = loaded[0]
    assert isinstance(first["image"], Image.Image) and first["image"].size == (first["width"], first["height"])
    assert pixel_sha256(np.asarray(first["image"].convert("RGB"))) == first["image_sha256"]


def test_same_seed_and_prompt_give_the_same_image_at_batch_sizes_1_and_2(smoke):
    """Per-image generators: an image does not depend on its batch. ToMe is left out here: tomesd draws one merge
    pattern per UNet call for the whole batch, and the gate's `independent` check covers it."""
    out, _ = smoke
    by_key = {}
    for row in dataset.read_generations(out, ["unit_id", "method", "seed", "prompt_index", "batch_size",
                                              "image"]).to_pylist():
        pixels = np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])), dtype=np.float64) / 255
        by_key[(row["unit_id"], row["seed"], row["prompt_index"], row["batch_size"])] = (row["method"], pixels)
    compared = 0
    for (unit, seed, prompt, batch_size), (method, pixels) in by_key.items():
        if batch_size == 2 and method != "tome":
            single = by_key[(unit, seed, prompt, 1)][1]
            # Float differences of ~1e-6 may round to a neighbouring 8-bit level: at most one level apart.
            assert np.abs(pixels - single).max() <= 1.5 / 255, (unit, seed, prompt)
            compared += 1
    assert compared == 2 * 4 * (len(SMOKE.tasks) + 4 - 2)


def test_float_images_match_across_batch_sizes_within_1e_5():
    """The same check before quantisation: fp32 on CPU, batch 1 vs batch 2, within 1e-5."""
    from accelbench.builder.seeding import image_seed, make_generators
    from accelbench.builder.synthetic import materialize, tiny_resolution

    module = programs.load_module(gt_source("smoke-sdxl-euler-8-deepcache-tgate"), PROGRAM_MODULE)
    pipe = module.load(str(materialize(CATALOG.models["sdxl"])), "cpu", None)
    prompts = list(SMOKE.prompts.inline[:2])
    seeds = [image_seed(0, index) for index in range(2)]
    size = tiny_resolution(CATALOG.models["sdxl"])
    pair = module.generate(pipe, prompts, make_generators(seeds), height=size, width=size)
    singles = [module.generate(pipe, [prompt], make_generators([seed]), height=size, width=size)[0]
               for prompt, seed in zip(prompts, seeds)]
    assert np.abs(pair - np.stack(singles)).max() <= 1e-5


def test_rerun_with_other_warmups_and_alone_gives_bit_identical_images(smoke, tmp_path):
    """Neither the warm-ups nor the other programs of a setting change a program's images: a T-GATE GT run
    alone, and its baseline alone without warm-ups, reproduce the interleaved smoke run bit for bit."""
    out, _ = smoke
    generate(tmp_path / "tgate", tasks=["smoke-sd15-ddim-8-tgate"], variants=["gt"])
    generate(tmp_path / "baseline", tasks=["smoke-sd15-ddim-8-tgate"], variants=["baseline"], warmup_batches=0)
    reference = hashes(out)
    for folder in ("tgate", "baseline"):
        again = hashes(tmp_path / folder)
        assert len(again) == 2 * 4 * 2 and all(again[record] == reference[record] for record in again)


def test_max_resident_splits_a_setting_and_rerenders_its_baseline_bit_identically(smoke, tmp_path):
    tasks = ["smoke-sd15-ddim-8-deepcache", "smoke-sd15-ddim-8-tome", "smoke-sd15-ddim-8-tgate"]
    rounds = []
    summary = generate(tmp_path, tasks=tasks, limit=2, max_resident=2, before_round=rounds.append)
    assert summary.failed_rows == 0 and summary.reference_failed_rows == 0
    assert rounds == [0, 1, 2, 3] * 3 + [0, 1] * 3  # per batch size (1, 2), each group's rounds in order
    # Three groups (baseline + one GT each): the baseline renders 2 seeds x 2 batch sizes x 1-2 batches once
    # for the dataset and twice more as a same-round reference.
    assert summary.baseline_rerenders == 2 * (2 + 1) * 2
    reference = hashes(smoke[0])
    assert all(reference[record] == sha for record, sha in hashes(tmp_path).items() if record in reference)


def test_batches_are_encoded_and_written_between_rounds_never_during_a_call(tmp_path, monkeypatch):
    """A timed call shares the host with no PNG encoding and no Parquet writing: a round's batches are on disk
    before the next round starts, and nothing is written while any call runs. Only warm-up calls ask the
    worker for its memory (driver queries that would sit inside the clock)."""
    def rows_on_disk():
        return sum(pq.read_metadata(path).num_rows
                   for path in (tmp_path / schema.STAGING_DIR).glob("*/part-*.parquet"))

    written_during_calls, on_disk_at_round_start, memory_asked = [], [], []
    timed_call = ProgramWorker.generate
    image_seeds = {image_seed(seed, index, SEED_KEY) for seed in SMOKE.seeds for index in range(2)}  # timed images

    def watched(self, prompts, seeds, *args, **kwargs):
        before = rows_on_disk()
        reply = timed_call(self, prompts, seeds, *args, **kwargs)
        written_during_calls.append(rows_on_disk() - before)
        memory_asked.append((not set(seeds) <= image_seeds, kwargs.get("memory", False)))  # (a warm-up?, asked?)
        return reply

    monkeypatch.setattr(ProgramWorker, "generate", watched)
    summary = generate(tmp_path, tasks=[SLICE[0]], limit=2,
                       before_round=lambda index: on_disk_at_round_start.append(rows_on_disk()))
    assert summary.failed_rows == 0
    assert len(written_during_calls) > 12 and not any(written_during_calls)
    # Baseline + GT: 2 rows a round at batch size 1 (4 rounds), then 4 a round at batch size 2 (2 rounds).
    assert on_disk_at_round_start == [0, 2, 4, 6, 8, 12]
    assert {warm_up for warm_up, _ in memory_asked} == {True, False}
    assert all(warm_up == asked for warm_up, asked in memory_asked)


def test_generate_refuses_a_dataset_made_with_other_settings(smoke, tmp_path):
    out, _ = smoke
    prompts = tmp_path / "other.txt"
    prompts.write_text("a completely different prompt\n")
    for args, message in ((["--weights", "random"], "weights 'tiny' (this run: 'random')"),
                          (["--prompts", str(prompts)], "prompts_sha256"),
                          (["--seeds", "5"], "seeds [0, 1] (this run: [5])")):
        result = CliRunner().invoke(main, ["generate", "--suite", "smoke", "--out", str(out), *args])
        assert result.exit_code == 2, result.output
        assert message in result.stderr and "use another --out" in result.stderr


def test_generate_refuses_a_changed_program_for_a_unit_it_holds(tmp_path):
    folder = submission(tmp_path / "sub", {SLICE[0]: FAKE.format(load="pass", generate="pass")})
    generate(tmp_path / "out", submissions=[folder], tasks=SLICE[:1], variants=["sub:sub"], limit=1, gate="none")
    (folder / f"{SLICE[0]}.py").write_text(FAKE.format(load="pass", generate="x = 1"))
    result = CliRunner().invoke(main, ["generate", "--out", str(tmp_path / "out"), "--submission", str(folder),
                                       "--tasks", SLICE[0], "--variants", "sub:sub", "--limit", "1", "--gate", "none"])
    assert result.exit_code == 2
    assert "holds sub:sub:smoke-sd15-ddim-8-deepcache rows made with program" in result.stderr
    assert "use another submission name" in result.stderr


def test_generate_refuses_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["generate", "--suite", "smoke", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "is not empty and not an accelbench dataset" in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_sequential_timing_runs_one_unit_after_another_with_the_same_images(smoke, tmp_path):
    generate(tmp_path, tasks=["smoke-sd15-ddim-8-deepcache"], limit=2, seeds=[0], timing="sequential")
    table = rows(tmp_path, ["variant", "batch_size", "started_at", "timing", "image_sha256", "baseline_latency_s",
                            "batch_latency_s", "seed", "batch_index"])
    assert {row["timing"] for row in table} == {"sequential"}
    for size in (1, 2):
        mine = [row for row in table if row["batch_size"] == size]
        last_baseline = max(row["started_at"] for row in mine if row["variant"] == "baseline")
        assert all(row["started_at"] > last_baseline for row in mine if row["variant"] == "gt")
        latency = {(row["seed"], row["batch_index"]): row["batch_latency_s"] for row in mine
                   if row["variant"] == "baseline"}
        assert all(row["baseline_latency_s"] == latency[(row["seed"], row["batch_index"])] for row in mine)
    reference = hashes(smoke[0])
    assert all(reference[record] == sha for record, sha in hashes(tmp_path).items())  # --seeds 0: a subset


@pytest.mark.parametrize("args, message", [
    (["--tasks", "smoke-sd15-nope"], "--tasks: 'smoke-sd15-nope' matches no task of suite 'smoke'"),
    (["--tasks", "sd15-ddim-25-deepcache"], "exists but is not in this suite"),
    (["--tasks", ","], "--tasks selects no task"),
    (["--variants", ","], "--variants selects no variant"),
    (["--variants", "gt,candidate"], "--variants: unknown variant 'candidate'"),
    (["--variants", "sub:nobody"], "--variants: unknown variant 'sub:nobody'"),
    (["--seeds", "1,x"], "--seeds takes comma-separated integers"),
    (["--seeds", "1,1"], "--seeds must be distinct non-negative integers"),
    (["--shard", "2/2"], "--shard 2/2: need 0 <= I < N"),
    (["--shard", "x"], "--shard must look like I/N"),
    (["--model", "sd15"], "--model takes FAMILY=PATH"),
    (["--model", "sd15=/models/sd15"], "--model points at pretrained weights; it does not apply to --weights tiny"),
    (["--prompts", "/nonexistent/prompts.txt"], "prompt file not found: /nonexistent/prompts.txt"),
])
def test_bad_generate_options_give_one_line_and_exit_2(tmp_path, args, message):
    result = CliRunner().invoke(main, ["generate", "--suite", "smoke", "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_unreadable_and_temporary_files_are_ignored_with_a_warning(smoke, tmp_path, caplog):
    out, _ = smoke
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "data" / "generations-truncated.parquet").write_bytes(b"PAR1 not really parquet")
    (copy / "data" / ".generations-x.parquet.123.tmp").write_bytes(b"half a file")
    with caplog.at_level("WARNING", logger="accelbench"):
        assert len(rows(copy)) == len(rows(out))
    assert "ignoring unreadable file" in caplog.text and "generations-truncated.parquet" in caplog.text


def test_image_seeds_come_from_the_dataset_s_own_random_key(tmp_path):
    """A new dataset draws a seed key from OS randomness and pins it: a rerun into it renders the same images,
    another dataset other ones (no program can know a timed image's seed before its call), a given key
    reproduces them elsewhere, and a key other than the dataset's is refused."""
    task = dict(tasks=[SLICE[0]], variants=["baseline"], limit=1, seeds=[0])
    first, second = tmp_path / "first", tmp_path / "second"
    generate(first, seed_key=None, **task)
    generate(second, seed_key=None, **task)
    key = dataset.read_manifest(first)["seed_key"]
    assert len(key) == 32 and key != dataset.read_manifest(second)["seed_key"]
    seeds = {folder: {row["image_seed"] for row in rows(folder, ["image_seed"])} for folder in (first, second)}
    assert seeds[first].isdisjoint(seeds[second])
    assert seeds[first] == {image_seed(0, 0, key)}
    generate(first, seed_key=None, retry_failed=True, **task)  # a rerun adopts the dataset's key
    again = generate(tmp_path / "again", seed_key=key, **task)
    assert again.rows_written == 2 and hashes(tmp_path / "again") == hashes(first)
    with pytest.raises(dataset.DatasetError, match=rf"seed_key '[0-9a-f]{{32}}' \(this run: '{SEED_KEY}'\)"):
        generate(first, **task)


def test_repeats_render_everything_again_in_fresh_workers_in_an_order_of_their_own(tmp_path):
    """--repeats 2: every image twice, bit-identical, with ids of their own and the repeat recorded; the lane order
    of each (repeat, batch size) in the run record, the baseline first; the scorer counts the repeats."""
    from accelbench.scorer import report

    summary = generate(tmp_path, tasks=[SLICE[0]], limit=2, seeds=[0], repeats=2)
    assert summary.failed_rows == 0 and summary.rows_written == 2 * 2 * 2 * 2  # repeats x units x prompts x sizes
    table = rows(tmp_path, ["record_id", "variant", "batch_size", "prompt_index", "repeat", "image_sha256"])
    assert len({row["record_id"] for row in table}) == len(table) and {row["repeat"] for row in table} == {0, 1}
    images = {}
    for row in table:
        images.setdefault((row["variant"], row["batch_size"], row["prompt_index"]), set()).add(row["image_sha256"])
    assert all(len(hashes) == 1 for hashes in images.values())
    [record] = [json.loads(path.read_text()) for path in (tmp_path / schema.RUNS_DIR).glob("*.json")]
    assert record["repeats"] == 2 and len(record["lane_orders"]) == 2 * 2
    assert all(entry["order"][0].startswith(schema.BASELINE) and len(entry["order"]) == 2
               for entry in record["lane_orders"])
    pooled = [row for row in report.build_report(tmp_path, n_resamples=50).pooled if row["variant"] == schema.GT]
    assert pooled and all(row["speedup_repeats"] == 2 for row in pooled)
    again = generate(tmp_path, tasks=[SLICE[0]], limit=2, seeds=[0], repeats=2)
    assert again.rows_written == 0  # resumed: each repeat's rows are its own


def test_a_suite_s_repeats_are_generate_s_default_and_repeats_overrides_them(tmp_path):
    import dataclasses

    from accelbench.builder.generate import run_generate
    from accelbench.builder.options import GenerateOptions

    catalog = dataclasses.replace(CATALOG, suites={**CATALOG.suites, "smoke": dataclasses.replace(SMOKE, repeats=2)})
    run = dict(suite="smoke", tasks=[SLICE[0]], variants=[schema.BASELINE], limit=1, seeds=[0], seed_key=SEED_KEY,
               progress=False)
    run_generate(GenerateOptions(out=tmp_path / "suite", **run), catalog)
    run_generate(GenerateOptions(out=tmp_path / "flag", repeats=1, **run), catalog)
    assert {row["repeat"] for row in rows(tmp_path / "suite", ["repeat"])} == {0, 1}
    assert {row["repeat"] for row in rows(tmp_path / "flag", ["repeat"])} == {0}


def test_score_refuses_a_shard_changed_after_its_run_wrote_it(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from accelbench.scorer.score import score_dataset

    generate(tmp_path, tasks=[SLICE[0]], variants=["baseline"], limit=1, seeds=[0])
    [record] = [json.loads(path.read_text()) for path in (tmp_path / schema.RUNS_DIR).glob("*.json")]
    assert record["shards"] and dataset.verify_shards(tmp_path) == len(record["shards"])
    shard = tmp_path / schema.GENERATIONS_DIR / sorted(record["shards"])[0]
    table = pq.read_table(shard)
    latencies = pa.array([0.001] * table.num_rows, pa.float64())  # a faster baseline, edited in
    pq.write_table(table.set_column(table.schema.get_field_index("batch_latency_s"), "batch_latency_s", latencies),
                   shard)
    with pytest.raises(dataset.DatasetError, match=r"changed since run .* wrote it"):
        score_dataset(tmp_path, progress=False)
    shard.unlink()
    with pytest.raises(dataset.DatasetError, match="now missing"):
        dataset.verify_shards(tmp_path)
