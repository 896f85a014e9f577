"""The generate stage on the smoke suite: determinism, isolation, resume after SIGKILL, failures, sharding."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from accelbench import dataset, schema
from accelbench.builder import plan, programs, runner
from accelbench.cli import main
from accelbench.manifest import load_catalog

CATALOG = load_catalog()
SMOKE = CATALOG.suite("smoke")
# A small slice for the tests that run generate several times: one UNet method, one DiT, two prompts.
SLICE = ["smoke-sd15-ddim-8-deepcache", "smoke-pixart-alpha-dpmpp_2m-8-tgate"]
SLICE_ARGS = ["--suite", "smoke", "--tasks", ",".join(SLICE), "--limit", "2", "--no-progress"]


def generate(out, **options):
    return runner.run_generate(runner.GenerateOptions(suite="smoke", out=out, progress=False, **options))


def rows(directory, columns=None):
    return dataset.read_generations(directory, columns).to_pylist()


def hashes(directory):
    return {row["record_id"]: row["image_sha256"] for row in rows(directory, ["image_sha256"])}


def raw_record_ids(directory):
    """Every record id in every file, duplicates included (the readers would hide them)."""
    return [record for path in dataset.generation_files(directory)
            for record in pq.read_table(path, columns=["record_id"]).column("record_id").to_pylist()]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The whole smoke suite, generated once, as `make demo` does."""
    out = tmp_path_factory.mktemp("smoke")
    summary = generate(out)
    return out, summary


def test_smoke_suite_writes_every_planned_image(smoke):
    out, summary = smoke
    units = plan.build_units([CATALOG.task(task_id) for task_id in SMOKE.tasks], programs.VARIANTS)
    prompts = len(SMOKE.prompts.inline)
    expected = len(units) * len(SMOKE.seeds) * prompts * len(SMOKE.batch_sizes)
    assert len(units) == len(SMOKE.tasks) + 4  # one shared baseline per family
    assert summary.rows_written == expected and summary.failed_rows == 0
    table = rows(out)
    assert len(table) == expected
    assert len(set(raw_record_ids(out))) == len(raw_record_ids(out)) == expected
    assert Counter(row["status"] for row in table) == {"ok": expected}
    assert {row["variant"] for row in table} == {"baseline", "gt"}
    assert all(row["task_id"] is None for row in table if row["variant"] == "baseline")
    assert {row["weights"] for row in table} == {"tiny"}
    assert not (out / dataset.STAGING_DIR).exists() or not any((out / dataset.STAGING_DIR).iterdir())


def test_rows_carry_timing_programs_and_environment(smoke):
    out, _ = smoke
    for row in rows(out):
        assert row["batch_latency_s"] > 0 and row["timer"] == "wall"
        assert row["image_latency_s"] == pytest.approx(row["batch_latency_s"] / row["batch_size"])
        stages = [row[name] for name in ("text_encode_s", "denoise_s", "vae_decode_s", "postprocess_s")]
        assert all(stage is not None and stage >= 0 for stage in stages)
        assert sum(stages) <= row["batch_latency_s"] * 1.001
        assert row["denoise_s"] > 0
        assert row["peak_memory_bytes"] is None and row["device"] == "cpu"
        versions = json.loads(row["versions"])
        assert {"torch", "diffusers", "tgate", "tomesd", "DeepCache"} <= set(versions)
        program = (out / schema.PROGRAMS_DIR / f"{row['program_sha256']}.py").read_text()
        assert f"NUM_INFERENCE_STEPS = {row['steps']}" in program
    run_records = list((out / schema.RUNS_DIR).glob("*.json"))
    assert len(run_records) == 1 and json.loads(run_records[0].read_text())["rows_written"] == len(rows(out))


def test_dataset_loads_with_datasets_and_decodes_images(smoke):
    import datasets

    out, _ = smoke
    loaded = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert loaded.num_rows == len(rows(out))
    assert isinstance(loaded.features["image"], datasets.Image)
    first = loaded[0]
    assert isinstance(first["image"], Image.Image) and first["image"].size == (first["width"], first["height"])
    pixels = np.asarray(first["image"].convert("RGB"))
    from accelbench.builder.encode import pixel_sha256

    assert pixel_sha256(pixels) == first["image_sha256"]


def test_same_seed_and_prompt_give_the_same_image_at_batch_sizes_1_and_2(smoke):
    """Per-image generators: an image does not depend on its batch. ToMe is the exception: tomesd draws one
    random merge pattern per call, from the first image's seed, for the whole batch."""
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

    task = CATALOG.task("smoke-sdxl-euler-8-deepcache-tgate")
    module = programs.load_module(programs.render(CATALOG, task, "gt").source)
    pipe = module.load(str(materialize("sdxl")), "cpu", None)
    prompts = list(SMOKE.prompts.inline[:2])
    seeds = [image_seed(0, index) for index in range(2)]
    size = tiny_resolution("sdxl")
    pair = module.generate(pipe, prompts, make_generators(seeds), height=size, width=size)
    singles = [module.generate(pipe, [prompt], make_generators([seed]), height=size, width=size)[0]
               for prompt, seed in zip(prompts, seeds)]
    assert np.abs(pair - np.stack(singles)).max() <= 1e-5


def test_rerun_with_other_warmups_gives_bit_identical_images(smoke, tmp_path):
    out, _ = smoke
    generate(tmp_path / "again", tasks=SLICE, warmup_batches=0)
    again = hashes(tmp_path / "again")
    assert again and all(again[record] == hashes(out)[record] for record in again)


def test_baseline_is_bit_identical_after_a_tgate_variant_ran_in_the_same_process(smoke, tmp_path):
    out, _ = smoke
    generate(tmp_path / "tgate", tasks=["smoke-sd15-ddim-8-tgate"], variants=("gt",))
    generate(tmp_path / "baseline", tasks=["smoke-sd15-ddim-8-tgate"], variants=("baseline",))
    baseline = hashes(tmp_path / "baseline")
    reference = hashes(out)
    assert len(baseline) == 2 * 4 * 2
    assert all(baseline[record] == reference[record] for record in baseline)


# ---------------------------------------------------------------------------------------------------------
# Resume and atomicity
# ---------------------------------------------------------------------------------------------------------


# One thread per process everywhere below: CPU float results depend on the thread count, and torchrun runs
# each rank with OMP_NUM_THREADS=1, so the runs compared bit for bit must all use one.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "accelbench", *args], env={**os.environ, **ONE_THREAD, **(env or {})},
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def clean_slice(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    result = cli("generate", "--out", str(out), *SLICE_ARGS)
    assert result.returncode == 0, result.stderr
    return hashes(out)


@pytest.mark.parametrize("failpoint", ["part:3", "part:13", "shard:1", "shard:3"])
def test_resume_after_sigkill_equals_a_clean_run(clean_slice, tmp_path, failpoint):
    killed = cli("generate", "--out", str(tmp_path), *SLICE_ARGS, env={"ACCELBENCH_FAILPOINT": failpoint})
    assert killed.returncode == -signal.SIGKILL
    partial = hashes(tmp_path)
    assert 0 < len(partial) < len(clean_slice)
    resumed = cli("generate", "--out", str(tmp_path), *SLICE_ARGS)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(partial)} already done" in resumed.stdout
    assert hashes(tmp_path) == clean_slice
    assert sorted(raw_record_ids(tmp_path)) == sorted(clean_slice)  # no duplicates left in any file


def test_resume_after_an_external_sigkill_mid_run(clean_slice, tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "accelbench", "generate", "--out", str(tmp_path),
                                *SLICE_ARGS], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, **ONE_THREAD})
    deadline = time.monotonic() + 120
    while not list((tmp_path / dataset.STAGING_DIR).glob("*/part-*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = cli("generate", "--out", str(tmp_path), *SLICE_ARGS)
    assert resumed.returncode == 0, resumed.stderr
    assert hashes(tmp_path) == clean_slice
    assert sorted(raw_record_ids(tmp_path)) == sorted(clean_slice)


def test_unreadable_and_temporary_files_are_ignored_with_a_warning(smoke, tmp_path, caplog):
    out, _ = smoke
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "data" / "generations-truncated.parquet").write_bytes(b"PAR1 not really parquet")
    (copy / "data" / ".generations-x.parquet.123.tmp").write_bytes(b"half a file")
    with caplog.at_level("WARNING", logger="accelbench"):
        assert len(rows(copy)) == len(rows(out))
    assert "ignoring unreadable file" in caplog.text and "generations-truncated.parquet" in caplog.text


def test_generate_refuses_a_dataset_made_with_other_settings(smoke):
    out, _ = smoke
    result = CliRunner().invoke(main, ["generate", "--suite", "smoke", "--out", str(out), "--weights", "random"])
    assert result.exit_code == 2
    assert "holds a dataset made with weights 'tiny' (asked: 'random'); use another --out" in result.stderr


def test_generate_refuses_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["generate", "--suite", "smoke", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "is not empty and not an accelbench dataset" in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("args, message", [
    (["--tasks", "smoke-sd15-nope"], "--tasks: 'smoke-sd15-nope' matches no task of suite 'smoke'"),
    (["--tasks", "sd15-ddim-25-deepcache"], "exists but is not in this suite"),
    (["--shard", "2/2"], "--shard 2/2: need 0 <= I < N"),
    (["--shard", "x"], "--shard must look like I/N"),
    (["--variants", "gt,candidate"], "--variants: unknown candidate"),
    (["--model", "sd15"], "--model takes FAMILY=PATH"),
    (["--model", "sd15=/models/sd15"], "--model points at pretrained weights; it does not apply to --weights tiny"),
    (["--prompts", "/nonexistent/prompts.txt"], "prompt file not found: /nonexistent/prompts.txt"),
])
def test_bad_generate_options_give_one_line_and_exit_2(tmp_path, args, message):
    result = CliRunner().invoke(main, ["generate", "--suite", "smoke", "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------------------
# Failures are data
# ---------------------------------------------------------------------------------------------------------

FAKE_PROGRAM = '''
import numpy as np
import torch

MODEL_ID = "fake"


def load(model_id=MODEL_ID, device="cpu", dtype=None):
    {load}
    return object()


def generate(pipe, prompts, generators, height=64, width=64):
    {generate}
    return np.full((len(prompts), height, width, 3), 0.5, dtype=np.float32)
'''

FAILURES = {
    "smoke-sd15-ddim-8-deepcache": ("pass", "raise RuntimeError('kernel exploded')"),
    "smoke-sd15-ddim-8-tome": ("pass", "return np.full((len(prompts), height, width, 3), np.nan, np.float32)"),
    "smoke-sd15-ddim-8-tgate": ("pass", "raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2 GiB')"),
    "smoke-sd15-ddim-8-deepcache-tgate": ("raise ImportError('No module named tgate')", "pass"),
}


def test_failing_programs_become_error_rows_and_the_run_goes_on(tmp_path, monkeypatch):
    render = programs.render

    def render_with_failures(catalog, task, variant):
        if variant == "gt" and task.id in FAILURES:
            load, generate_body = FAILURES[task.id]
            return programs.Program(variant, task.id, FAKE_PROGRAM.format(load=load, generate=generate_body))
        return render(catalog, task, variant)

    monkeypatch.setattr(programs, "render", render_with_failures)
    summary = generate(tmp_path, tasks=["smoke-sd15-*"], limit=2)
    table = rows(tmp_path)
    status = {(row["unit_id"], row["status"]) for row in table}
    assert status == {("sd15-ddim-8", "ok"), ("smoke-sd15-ddim-8-deepcache", "error"),
                      ("smoke-sd15-ddim-8-tome", "nonfinite"), ("smoke-sd15-ddim-8-tgate", "oom"),
                      ("smoke-sd15-ddim-8-deepcache-tgate", "error")}
    errors = {row["unit_id"]: row["error"] for row in table if row["status"] != "ok"}
    assert errors["smoke-sd15-ddim-8-deepcache"] == "RuntimeError: kernel exploded"
    assert errors["smoke-sd15-ddim-8-tome"] == f"{64 * 64 * 3} NaN/inf pixel values"  # per image
    assert errors["smoke-sd15-ddim-8-tgate"].startswith("OutOfMemoryError: CUDA out of memory")
    assert errors["smoke-sd15-ddim-8-deepcache-tgate"] == "load failed: ImportError: No module named tgate"
    failed = [row for row in rows(tmp_path, ["status", "image"]) if row["status"] != "ok"]
    assert all(row["image"] is None for row in failed)
    assert summary.failed_rows == len(failed) == 4 * 8  # 4 programs x (2 seeds x 2 prompts x 2 batch sizes)
    assert len(summary.failures) == 4 and "failed rows: 32" in summary.format()


# ---------------------------------------------------------------------------------------------------------
# Sharding
# ---------------------------------------------------------------------------------------------------------


def test_two_torchrun_processes_write_the_same_dataset_as_one(clean_slice, tmp_path):
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "--no-python", shutil.which("accelbench", path=os.path.dirname(sys.executable)),
                             "generate", "--out", str(tmp_path), *SLICE_ARGS], capture_output=True, text=True,
                            env={**os.environ, **ONE_THREAD})
    assert result.returncode == 0, result.stderr[-2000:]
    assert hashes(tmp_path) == clean_slice
    ranks = {row["rank"] for row in rows(tmp_path, ["rank", "world_size"])}
    assert ranks == {0, 1}
    assert len(list((tmp_path / schema.RUNS_DIR).glob("*.json"))) == 2


def test_shards_by_hand_cover_the_work_list_exactly_once():
    tasks = [CATALOG.task(task_id) for task_id in CATALOG.suite("standard").tasks]
    units = plan.build_units(tasks, programs.VARIANTS)
    shards = [plan.shard_units(units, index, 3) for index in range(3)]
    assert sorted((u.variant, u.unit_id) for shard in shards for u in shard) == sorted(
        (u.variant, u.unit_id) for u in units)
    assert len({u.unit_id for u in units if u.variant == "baseline"}) == len({t.setting_id for t in tasks})
