"""The generate stage on the smoke suite: isolation, harness timing, interleaving, determinism, resume, sharding.

Runs in this process share the warm forkserver of :mod:`accelbench.builder.worker`; only what needs a process
of its own (a SIGKILL, torchrun, a sandbox) runs the CLI in a subprocess.
"""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from accelbench import dataset, schema
from accelbench.builder import host, plan, programs, rounds
from accelbench.builder.generate import run_generate
from accelbench.builder.options import GenerateOptions
from accelbench.builder.programs import PROGRAM_MODULE
from accelbench.builder.worker import ProgramWorker
from accelbench.cli import main
from accelbench.manifest import load_catalog

CATALOG = load_catalog()
SMOKE = CATALOG.suite("smoke")
# A small slice for the tests that run generate several times: one UNet method, one DiT, two prompts.
SLICE = ["smoke-sd15-ddim-8-deepcache", "smoke-pixart-alpha-dpmpp_2m-8-tgate"]
SLICE_ARGS = ["--suite", "smoke", "--tasks", ",".join(SLICE), "--limit", "2", "--no-progress"]


def generate(out, before_round=None, **options):
    return run_generate(GenerateOptions(suite="smoke", out=out, progress=False, **options), CATALOG,
                        before_round=before_round)


def rows(directory, columns=None):
    return dataset.read_generations(directory, columns).to_pylist()


def hashes(directory):
    return {row["record_id"]: row["image_sha256"] for row in rows(directory, ["image_sha256"])}


def raw_record_ids(directory):
    """Every record id in every file, duplicates included (the readers would hide them)."""
    return [record for path in dataset.generation_files(directory)
            for record in pq.read_table(path, columns=["record_id"]).column("record_id").to_pylist()]


def submission(folder: Path, programs_by_task: dict[str, str], info: str | None = None) -> Path:
    folder.mkdir(parents=True)
    for task_id, source in programs_by_task.items():
        (folder / f"{task_id}.py").write_text(source)
    if info is not None:
        (folder / "submission.yaml").write_text(info)
    return folder


def gt_source(task_id):
    return programs.render(CATALOG, CATALOG.task(task_id)).source


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


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_chunked_quantisation_equals_the_reference_and_counts_nonfinite_values(dtype):
    """The worker's one-pass quantiser (timed on every batch) is bit-identical to the whole-array expression
    diffusers' ``numpy_to_pil`` uses, across chunk borders, at .5 rounding ties and outside [0, 1], and counts
    NaN/inf exactly, also where finite values overflow the fast sum."""
    from accelbench.builder.encode import QUANTIZE_CHUNK, quantize, to_uint8

    size = 2 * QUANTIZE_CHUNK + 7
    rng = np.random.default_rng(1)
    images = (rng.random(size) * 1.4 - 0.2).astype(dtype)
    images[:512] = (np.arange(512) % 256 + 0.5) / 255  # ties
    out = np.empty(size, np.uint8)
    assert quantize(images, out) == 0
    np.testing.assert_array_equal(out, np.rint(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8))
    np.testing.assert_array_equal(to_uint8(images), out)
    images[[3, QUANTIZE_CHUNK, size - 1]] = [np.nan, np.inf, -np.inf]
    assert quantize(images, out) == 3
    huge = np.full(QUANTIZE_CHUNK, np.finfo(dtype).max, dtype=dtype)
    assert quantize(huge, np.empty(huge.size, np.uint8)) == 0


@pytest.mark.parametrize("layout", ["nhwc", "nchw-view"])
@pytest.mark.parametrize("shares", [1, 3])
def test_quantisation_reads_any_layout_in_shares(layout, shares):
    """diffusers returns NHWC views of NCHW memory: quantised in place, in ``shares`` parts (the worker's
    threads), the pixels equal the reference and the NaN/inf count is the whole batch's."""
    from accelbench.builder.encode import quantize, quantize_blocks

    rng = np.random.default_rng(2)
    shape = (3, 300, 301, 3)  # an image larger than a block, rows that do not divide evenly
    memory = rng.random((3, 3, 300, 301), dtype=np.float32) * 1.4 - 0.2
    images = memory.transpose(0, 2, 3, 1) if layout == "nchw-view" else np.ascontiguousarray(
        memory.transpose(0, 2, 3, 1))
    assert images.shape == shape and images.flags.c_contiguous == (layout == "nhwc")
    images[0, 0, 0, 0] = images[2, 299, 300, 2] = np.nan
    assert len(quantize_blocks(memory.shape)) > shares
    out = np.zeros(shape, np.uint8)
    assert sum(quantize(images, out, (index, shares)) for index in range(shares)) == 2
    finite = np.isfinite(images)
    np.testing.assert_array_equal(out[finite], np.rint(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)[finite])


def test_quantisation_allocates_no_copy_of_the_batch():
    """In the timed window, a batch in diffusers' layout is never copied whole (the old flattening allocated
    all 12 MB of it): numpy's allocations, traced, peak at the cache-sized scratch."""
    import tracemalloc

    from accelbench.builder.encode import QUANTIZE_CHUNK, quantize

    images = np.random.default_rng(3).random((4, 3, 512, 512), dtype=np.float32).transpose(0, 2, 3, 1)
    out = np.empty(images.shape, np.uint8)
    tracemalloc.start()
    try:
        quantize(images, out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * QUANTIZE_CHUNK * images.itemsize < images.nbytes


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

    def watched(self, prompts, *args, **kwargs):
        before = rows_on_disk()
        reply = timed_call(self, prompts, *args, **kwargs)
        written_during_calls.append(rows_on_disk() - before)
        memory_asked.append((prompts[0] == rounds.WARMUP_PROMPT.format(index=0), kwargs.get("memory", False)))
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


# ---------------------------------------------------------------------------------------------------------
# Submissions: every program in a worker of its own; failures and cheats are rows
# ---------------------------------------------------------------------------------------------------------

FAKE = '''
import os, sys, time
import numpy as np
import torch

MODEL_ID = "fake"


def load(model_id=MODEL_ID, device="cpu", dtype=None):
    {load}
    return {{"calls": 0}}


def generate(pipe, prompts, generators, height=64, width=64):
    {generate}
    return np.stack([np.full((height, width, 3), g.initial_seed() % 251 / 255, np.float32) for g in generators])
'''

TIMER_PATCH = """
    import time as clock
    real_sleep = clock.sleep
    clock.perf_counter = lambda: 0.0
    clock.monotonic = lambda: 0.0
    clock.time = lambda: 0.0
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.Event = type("Event", (), {"__init__": lambda self, **k: None, "record": lambda self: None,
                                          "elapsed_time": lambda self, other: 0.0})
    real_sleep(0.5)"""

CACHING = """
    images = np.stack([np.full((height, width, 3), g.initial_seed() % 251 / 255, np.float32) for g in generators])
    previous = pipe.get("previous")
    pipe["previous"] = images
    if previous is not None and len(previous) == len(prompts):
        return previous
    return images"""

MISBEHAVING = {  # task -> (load body, generate body)
    "smoke-sd15-ddim-8-deepcache": ("pass", "raise RuntimeError('kernel exploded')"),
    "smoke-sd15-ddim-8-tome": ("pass", "return np.full((len(prompts), height, width, 3), np.nan, np.float32)"),
    "smoke-sd15-ddim-8-tgate": ("pass", "raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2 GiB')"),
    "smoke-sd15-ddim-8-deepcache-tgate": ("raise ImportError('No module named tgate')", "pass"),
    "smoke-sdxl-euler-8-deepcache": ("pass", "print('bye'); os._exit(0)"),
    "smoke-sdxl-euler-8-tome": ("pass", "raise SystemExit(0)"),
    "smoke-sdxl-euler-8-tgate": ("pass", "time.sleep(3600)"),
    "smoke-sdxl-euler-8-deepcache-tgate": ("pass", TIMER_PATCH),
    "smoke-pixart-alpha-dpmpp_2m-8-tgate": ("pass", CACHING),
}


HANG_LIMIT_S = 5.0  # the call limit of the misbehaving run: 10x what a tiny baseline batch takes on a busy CPU


@pytest.fixture(scope="module")
def misbehaving(tmp_path_factory):
    """One submission whose programs raise, return NaN, run out of memory, fail to load, exit, hang, patch the
    timers and return the previous call's images; pixart-sigma has no program."""
    root = tmp_path_factory.mktemp("misbehaving")
    folder = submission(root / "cheats", {task: FAKE.format(load=load, generate=body)
                                          for task, (load, body) in MISBEHAVING.items()},
                        info="name: cheats\nauthor: a test\nmodel: none\n")
    summary = generate(root / "out", submissions=[folder], variants=["baseline", "sub:cheats"], limit=2,
                       call_timeout=HANG_LIMIT_S, warmup_batches=0, gate="none")  # timed as they are: no gate
    return root / "out", summary


def test_failing_submission_programs_become_rows_and_the_run_goes_on(misbehaving):
    out, summary = misbehaving
    table = rows(out)
    subs = [row for row in table if row["variant"] == "sub:cheats"]
    assert {row["submission"] for row in subs} == {"cheats"}
    status = {(row["unit_id"], row["status"]) for row in subs}
    assert status == {("smoke-sd15-ddim-8-deepcache", "error"), ("smoke-sd15-ddim-8-tome", "nonfinite"),
                      ("smoke-sd15-ddim-8-tgate", "oom"), ("smoke-sd15-ddim-8-deepcache-tgate", "error"),
                      ("smoke-sdxl-euler-8-deepcache", "crashed"), ("smoke-sdxl-euler-8-tome", "error"),
                      ("smoke-sdxl-euler-8-tgate", "timeout"), ("smoke-sdxl-euler-8-deepcache-tgate", "ok"),
                      ("smoke-pixart-alpha-dpmpp_2m-8-tgate", "ok"), ("smoke-pixart-sigma-dpmpp_2m-8-tgate", "missing")}
    errors = {row["unit_id"]: row["error"] for row in subs if row["status"] != "ok"}
    assert errors["smoke-sd15-ddim-8-deepcache"] == "RuntimeError: kernel exploded"
    assert errors["smoke-sd15-ddim-8-tome"] == f"{2 * 64 * 64 * 3} NaN/inf pixel values"
    assert errors["smoke-sd15-ddim-8-tgate"].startswith("OutOfMemoryError: CUDA out of memory")
    assert errors["smoke-sd15-ddim-8-deepcache-tgate"] == "load failed: ImportError: No module named tgate"
    assert errors["smoke-sdxl-euler-8-deepcache"].endswith("the worker exited with code 0 before answering")
    assert errors["smoke-sdxl-euler-8-tome"] == "SystemExit: 0"
    assert errors["smoke-sdxl-euler-8-tgate"].endswith(f"generate did not answer within {HANG_LIMIT_S:g} s")
    assert errors["smoke-pixart-sigma-dpmpp_2m-8-tgate"] == (
        "submission 'cheats' has no program for task smoke-pixart-sigma-dpmpp_2m-8-tgate")
    assert all(row["image"] is None for row in rows(out, ["status", "image"]) if row["status"] != "ok")
    # A submission's failures are its results: the baseline is fine, so the run is not failed.
    assert summary.reference_failed_rows == 0 and summary.failed_rows == 7 * 8 + 8
    assert all(row["status"] == "ok" for row in table if row["variant"] == "baseline")
    assert "bye" in (out / schema.LOGS_DIR / "sub-cheats--smoke-sdxl-euler-8-deepcache--bs1.log").read_text()


def test_a_hanging_program_costs_one_time_limit_per_worker(misbehaving):
    """After a timeout the worker's process group is killed and its remaining batches are not attempted."""
    out, _ = misbehaving
    columns = ["unit_id", "variant", "batch_size", "status", "error", "started_at", "finished_at"]
    hung = [row for row in rows(out, columns) if row["unit_id"] == "smoke-sdxl-euler-8-tgate"]
    timed_out = [row for row in hung if not row["error"].startswith("not run:")]
    # The first batch of each worker: 1 image at batch size 1, 2 at batch size 2; the other 5 rows never ran.
    assert sorted(row["batch_size"] for row in timed_out) == [1, 2, 2] and len(hung) == 8
    for row in timed_out:  # the limit elapsed, and the harness did not wait for the program's hour-long sleep
        assert row["status"] == "timeout" and HANG_LIMIT_S <= (row["finished_at"] - row["started_at"]).total_seconds()
        assert (row["finished_at"] - row["started_at"]).total_seconds() < 600


def test_patched_timers_cannot_shorten_the_recorded_latency(misbehaving):
    out, _ = misbehaving
    patched = [row for row in rows(out) if row["unit_id"] == "smoke-sdxl-euler-8-deepcache-tgate"
               and row["variant"] == "sub:cheats"]
    assert patched and all(row["batch_latency_s"] >= 0.5 for row in patched)


def test_returning_the_previous_calls_images_records_wrong_images(misbehaving):
    """Inputs never repeat within a worker, so a program that serves its previous call's images records images
    that belong to other seeds (the gate's comparison with the GT rejects such a program)."""
    out, _ = misbehaving
    cached = [row for row in rows(out, ["unit_id", "variant", "seed", "batch_size", "batch_index", "image_seed",
                                        "image"]) if row["unit_id"] == "smoke-pixart-alpha-dpmpp_2m-8-tgate"]
    wrong = sum(int(np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])))[0, 0, 0]) != row["image_seed"] % 251
                for row in cached)
    # Only each worker's first call is honest: 1 image at batch size 1, 2 at batch size 2.
    assert len(cached) == 8 and wrong == 8 - 3


def test_a_failed_warm_up_is_what_the_rows_record(tmp_path):
    """A call that fails halfway may leave the program failing later calls another way (SDXL's VAE stays
    upcast): the rows carry the first failure, from the warm-up, and the worker is not used again."""
    task = "smoke-sd15-ddim-8-deepcache"
    body = 'pipe["calls"] += 1\n    raise RuntimeError("first call broke" if pipe["calls"] == 1 else "poisoned")'
    folder = submission(tmp_path / "fragile", {task: FAKE.format(load="pass", generate=body)})
    summary = generate(tmp_path / "out", submissions=[folder], variants=["sub:fragile"], limit=2, tasks=[task],
                       warmup_batches=1, gate="none")
    found = {(row["status"], row["error"]) for row in rows(tmp_path / "out")}
    assert found == {("error", "warm-up: RuntimeError: first call broke")}
    assert summary.failed_rows == 2 * 2 * 2 and summary.reference_failed_rows == 0  # 2 prompts x 2 seeds x bs 1, 2


def test_load_timeout_and_the_output_cap(tmp_path):
    """load() past --load-timeout gives 'timeout' rows; a program's output beyond 1 MB is cut from its log."""
    from accelbench.builder.worker import LOG_LIMIT_BYTES

    folder = submission(tmp_path / "limits", {
        "smoke-sd15-ddim-8-deepcache": FAKE.format(load="time.sleep(3600)", generate="pass"),
        "smoke-sd15-ddim-8-tome": FAKE.format(load="pass", generate="sys.stdout.write('x' * 3_000_000)")})
    summary = generate(tmp_path / "out", submissions=[folder], variants=["sub:limits"], limit=1, warmup_batches=0,
                       tasks=["smoke-sd15-ddim-8-deepcache", "smoke-sd15-ddim-8-tome"], load_timeout=3.0,
                       gate="none")  # the other program's load() is `pass`: far inside the limit
    status = {(row["unit_id"], row["status"], row["error"]) for row in rows(tmp_path / "out")}
    assert status == {("smoke-sd15-ddim-8-deepcache", "timeout", "load did not answer within 3 s"),
                      ("smoke-sd15-ddim-8-tome", "ok", None)}
    assert summary.reference_failed_rows == 0
    log = (tmp_path / "out" / schema.LOGS_DIR / "sub-limits--smoke-sd15-ddim-8-tome--bs1.log").read_bytes()
    assert LOG_LIMIT_BYTES < len(log) < LOG_LIMIT_BYTES + 200 and log.rstrip().endswith(b"bytes]")


def test_a_worker_runs_on_the_cores_it_is_given():
    """The timed worker's placement (``host.core_split``) reaches the process that runs the program."""
    from accelbench.builder.worker import ProgramWorker

    counter = ("import os\nimport numpy as np\n\ndef load(model_id, device, dtype):\n    return None\n\n"
               "def generate(pipe, prompts, generators, height, width):\n"
               "    return np.full((len(prompts), height, width, 3), len(os.sched_getaffinity(0)) / 255)\n")
    for cores, expected in ((None, len(os.sched_getaffinity(0))), ([min(os.sched_getaffinity(0))], 1)):
        with ProgramWorker(counter, model_path="none", device="cpu", dtype="float32", max_images=1,
                           max_resolution=8, cores=cores) as worker:
            assert worker.generate(["p"], [0], 8, 8).pixels.max() == expected


def test_a_worker_gets_its_thread_count_and_a_count_it_has_is_not_set_again(monkeypatch):
    """The count reaches the program; and ``torch.set_num_threads`` (which slowed CPU workers even when given the
    count they had) is called only to change the count."""
    import torch

    from accelbench.builder import worker as worker_module
    from accelbench.builder import worker_process

    counter = ("import torch\nimport numpy as np\n\ndef load(model_id, device, dtype):\n    return None\n\n"
               "def generate(pipe, prompts, generators, height, width):\n"
               "    return np.full((len(prompts), height, width, 3), torch.get_num_threads() / 255)\n")
    with worker_module.ProgramWorker(counter, model_path="none", device="cpu", dtype="float32", max_images=1,
                                     max_resolution=8, threads=2) as worker:
        assert worker.generate(["p"], [0], 8, 8).pixels.max() == 2
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    worker_process.set_thread_count(torch.get_num_threads())
    assert calls == []
    worker_process.set_thread_count(torch.get_num_threads() + 1)
    assert calls == [torch.get_num_threads() + 1]


def test_a_worker_that_cannot_start_is_a_crashed_unit(monkeypatch):
    """A forkserver (or sandbox) that cannot start a worker gives a WorkerFailure the runner records, and
    nothing of the worker is left behind."""
    from accelbench.builder import worker as worker_module

    class Refusing:
        def __init__(self, real):
            self.real = real

        def __getattr__(self, name):
            return getattr(self.real, name)

        def Process(self, *args, **kwargs):  # noqa: N802 - multiprocessing's name
            process = self.real.Process(*args, **kwargs)
            process.start = lambda: (_ for _ in ()).throw(OSError("bwrap: cannot mount"))
            return process

    real_context = worker_module.forkserver_context
    monkeypatch.setattr(worker_module, "forkserver_context", lambda sandbox="none": Refusing(real_context(sandbox)))
    candidate = worker_module.ProgramWorker("", model_path="none", device="cpu", dtype="float32")
    with pytest.raises(worker_module.WorkerFailure, match="could not start: OSError: bwrap: cannot mount"):
        candidate.start()
    assert candidate.folder is None and not candidate.alive
    candidate.close()  # idempotent


def test_each_local_rank_gets_timed_cores_no_encoder_uses(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert host.core_split("cuda:0", None) == ([0, 1], list(range(2, 16)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert host.core_split("cuda:1", 1) == ([2, 3], list(range(4, 16)))
    assert host.core_split("cpu", None) == (None, None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4})
    assert host.core_split("cuda:1", 1) == (None, None)  # 2 ranks x 2 cores leave too few for encoding
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(host, "cpu_siblings", lambda core: {core % 4, core % 4 + 4})  # 4 cores x 2 threads
    assert host.core_split("cuda:0", None) == ([0, 1], [2, 3, 6, 7])  # not on 4 and 5: the timed cores' twins


def test_submission_with_correct_programs_and_a_missing_task(tmp_path):
    folder = submission(tmp_path / "honest", {task: gt_source(task) for task in SLICE[:1]})
    summary = generate(tmp_path / "out", submissions=[folder], tasks=["smoke-sd15-ddim-8-deepcache",
                                                                      "smoke-sd15-ddim-8-tome"], limit=2)
    assert summary.reference_failed_rows == 0
    table = rows(tmp_path / "out")
    sub = {row["unit_id"]: row["status"] for row in table if row["variant"] == "sub:honest"}
    assert sub == {"smoke-sd15-ddim-8-deepcache": "ok", "smoke-sd15-ddim-8-tome": "missing"}
    # The submitted copy of the GT program renders the GT's images: same program, same inputs.
    by_key = defaultdict(dict)
    for row in table:
        if row["unit_id"] == "smoke-sd15-ddim-8-deepcache":
            by_key[(row["seed"], row["batch_size"], row["prompt_index"])][row["variant"]] = row["image_sha256"]
    assert all(images["gt"] == images["sub:honest"] for images in by_key.values())
    assert (tmp_path / "out" / schema.PROGRAMS_DIR / f"{programs.Program(gt_source(SLICE[0]), '').sha256}.py").exists()


def test_the_gate_rejects_a_submission_before_timing_and_stores_its_verdicts(tmp_path):
    """A DeepCache program handed in for the DeepCache+T-GATE task computes something else: its rows are
    'rejected' with the gate's first trace difference and it is never timed; the honest copy passes."""
    honest = gt_source("smoke-sd15-ddim-8-deepcache")
    folder = submission(tmp_path / "mixed", {"smoke-sd15-ddim-8-deepcache": honest,
                                             "smoke-sd15-ddim-8-deepcache-tgate": honest})
    summary = generate(tmp_path / "out", submissions=[folder], limit=2,
                       tasks=["smoke-sd15-ddim-8-deepcache", "smoke-sd15-ddim-8-deepcache-tgate"])
    assert summary.reference_failed_rows == 0
    table = [row for row in rows(tmp_path / "out") if row["variant"] == "sub:mixed"]
    status = {(row["unit_id"], row["status"]) for row in table}
    assert status == {("smoke-sd15-ddim-8-deepcache", "ok"), ("smoke-sd15-ddim-8-deepcache-tgate", "rejected")}
    rejected = [row for row in table if row["status"] == "rejected"]
    assert all(row["error"].startswith("gate: spec: ") and row["batch_latency_s"] is None for row in rejected)
    verdicts = pq.read_table(tmp_path / "out" / schema.GATE_DIR).to_pylist()
    assert {(v["task_id"], v["passed"]) for v in verdicts} == {("smoke-sd15-ddim-8-deepcache", True),
                                                             ("smoke-sd15-ddim-8-deepcache-tgate", False)}
    assert all(json.loads(v["inputs"])["calls"] and v["variant"] == "sub:mixed" for v in verdicts)


def test_a_program_that_behaves_only_on_the_gates_inputs_is_rejected_on_the_real_model(tmp_path):
    """Honest on the gate's prompts, 4 steps instead of 8 on any other: the gate passes it, but its traced warm-up
    batch in generate differs from the GT's on the same batch, so it is rejected before any timed batch."""
    honest = gt_source("smoke-sd15-ddim-8-deepcache")
    sly = ("from accelbench.builder.gate import PROMPT_POOL\n" + honest).replace(
        "num_inference_steps=NUM_INFERENCE_STEPS,", "num_inference_steps=8 if prompts[0] in PROMPT_POOL else 4,")
    assert sly.count("PROMPT_POOL") == 2
    folder = submission(tmp_path / "sly", {"smoke-sd15-ddim-8-deepcache": sly})
    generate(tmp_path / "out", submissions=[folder], tasks=["smoke-sd15-ddim-8-deepcache"], limit=2)
    verdicts = pq.read_table(tmp_path / "out" / schema.GATE_DIR).to_pylist()
    assert [v["passed"] for v in verdicts] == [True]  # the tiny-model gate saw only its own prompts
    sub = [row for row in rows(tmp_path / "out") if row["variant"] == "sub:sly"]
    assert {row["status"] for row in sub} == {"rejected"} and len(sub) == 8
    assert all(row["error"].startswith("gate (real model): spec: ") and row["batch_latency_s"] is None for row in sub)


def test_retry_failed_replaces_failed_rows(tmp_path):
    flag = tmp_path / "flag"
    flaky = FAKE.format(load="pass", generate=f"if not os.path.exists({str(flag)!r}): raise RuntimeError('flaky')")
    folder = submission(tmp_path / "flaky", {"smoke-sd15-ddim-8-deepcache": flaky})
    options = dict(submissions=[folder], tasks=["smoke-sd15-ddim-8-deepcache"], variants=["sub:flaky"], limit=2,
                   warmup_batches=0, gate="none")
    assert generate(tmp_path / "out", **options).failed_rows == 8
    flag.write_text("now it works")
    assert generate(tmp_path / "out", **options).rows_written == 0  # without --retry-failed: already done
    summary = generate(tmp_path / "out", retry_failed=True, **options)
    assert summary.rows_written == 8 and summary.failed_rows == 0
    assert Counter(row["status"] for row in rows(tmp_path / "out")) == {"ok": 8}
    assert len(raw_record_ids(tmp_path / "out")) == 16  # the failed rows stay on disk; readers take the ok ones
    from accelbench.scorer import images

    located = images.locate(dataset.generation_files(tmp_path / "out"))  # the scorer reads the same rows
    for spot in located.values():
        row_index = spot.row + dataset.ROW_GROUP_SIZE * spot.row_group
        assert pq.read_table(spot.path).slice(row_index, 1).column("status")[0].as_py() == "ok"


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "nope", "no such folder"),
    (lambda root: submission(root / "empty", {}), "no programs (<task_id>.py files)"),
    (lambda root: submission(root / "typo", {"smoke-sd15-ddim-8-deepcach": "x"}),
     "'smoke-sd15-ddim-8-deepcach' is not a task of suite 'smoke' (did you mean 'smoke-sd15-ddim-8-deepcache'?)"),
    (lambda root: submission(root / "baseline", {SLICE[0]: "x"}), "submission name 'baseline' must match"),
    (lambda root: submission(root / "x", {SLICE[0]: "x"}, "name: a b\n"), "submission name 'a b' must match"),
    (lambda root: submission(root / "x", {SLICE[0]: "x"}, "name: [1\n"), "not readable YAML"),
    (lambda root: submission(root / "x", {SLICE[0]: "x"}, "nmae: x\n"), "unknown key 'nmae' (did you mean 'name'?)"),
])
def test_bad_submissions_give_one_line_and_exit_2(tmp_path, make, message):
    folder = make(tmp_path)
    result = CliRunner().invoke(main, ["generate", "--out", str(tmp_path / "out"), "--submission", str(folder)])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_two_submissions_with_one_name_are_refused(tmp_path):
    first = submission(tmp_path / "a", {SLICE[0]: "x"}, "name: same\n")
    second = submission(tmp_path / "b", {SLICE[0]: "x"}, "name: same\n")
    result = CliRunner().invoke(main, ["generate", "--out", str(tmp_path / "out"), "--submission", str(first),
                                       "--submission", str(second)])
    assert result.exit_code == 2 and "two submissions are named 'same'" in result.stderr


# ---------------------------------------------------------------------------------------------------------
# One dataset, one set of arguments
# ---------------------------------------------------------------------------------------------------------


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


def test_task_pack_holds_the_tasks_and_baselines_but_no_gt(tmp_path):
    out = tmp_path / "pack"
    result = CliRunner().invoke(main, ["task-pack", "--suite", "smoke", "--out", str(out), "--tasks", "smoke-sd15-*"])
    assert result.exit_code == 0, result.output
    tasks = [json.loads(line) for line in (out / "tasks.jsonl").read_text().splitlines()]
    expected = [task for task in SMOKE.tasks if task.startswith("smoke-sd15-")]
    assert [task["id"] for task in tasks] == expected
    assert all(task["text"] == CATALOG.task(task["id"]).text and task["steps"] == 8 for task in tasks)
    readme = (out / "README.md").read_text()
    assert programs.CONTRACT in readme and "## Forbidden" in readme
    assert programs.CONTRACT in (Path(__file__).resolve().parents[1] / "README.md").read_text()  # the one contract
    for task_id in expected:
        assert CATALOG.task(task_id).text in (out / task_id / "TASK.md").read_text()
        assert (out / task_id / "baseline.py").read_text() == programs.render(CATALOG, CATALOG.task(task_id),
                                                                              baseline=True).source
    everything = "".join(path.read_text() for path in out.rglob("*") if path.is_file())
    for call in ("DeepCacheSDHelper(", "apply_patch(", "TgateSDLoader(", "TgateSDDeepCacheLoader("):
        assert call not in everything  # no GT program, nor a piece of one
    again = CliRunner().invoke(main, ["task-pack", "--suite", "smoke", "--out", str(out)])
    assert again.exit_code == 2 and "exists and is not an empty folder" in again.stderr


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


# ---------------------------------------------------------------------------------------------------------
# Resume and atomicity (a SIGKILL needs a process of its own; the runs compared run in this one)
# ---------------------------------------------------------------------------------------------------------


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "accelbench", *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    """A submission with a copy of one GT program, part of the runs that are killed and resumed."""
    return submission(tmp_path_factory.mktemp("honest") / "honest", {SLICE[1]: gt_source(SLICE[1])})


@pytest.fixture(scope="module")
def clean_slice(tmp_path_factory, honest):
    out = tmp_path_factory.mktemp("clean")
    generate(out, tasks=SLICE, limit=2, submissions=[honest])
    return hashes(out)


def resume_equals_clean(out, clean_slice, honest):
    partial = hashes(out)
    assert 0 < len(partial) < len(clean_slice)  # the kill happened mid-run
    summary = generate(out, tasks=SLICE, limit=2, submissions=[honest])
    assert summary.images_skipped == len(partial)
    assert hashes(out) == clean_slice
    assert sorted(raw_record_ids(out)) == sorted(clean_slice)  # no duplicates left in any file
    assert not list(out.rglob("*.tmp"))  # a killed write's temporary file is removed at start-up


@pytest.mark.slow
@pytest.mark.parametrize("failpoint", ["part:3", "shard-write:1", "shard:1"])
def test_resume_after_sigkill_equals_a_clean_run(clean_slice, honest, tmp_path, failpoint):
    killed = cli("generate", "--out", str(tmp_path), *SLICE_ARGS, "--submission", str(honest),
                 env={"ACCELBENCH_FAILPOINT": failpoint})
    assert killed.returncode == -signal.SIGKILL
    if failpoint.startswith("shard-write"):
        assert list((tmp_path / schema.GENERATIONS_DIR).glob(".*.tmp"))  # killed mid-write: a leftover
    resume_equals_clean(tmp_path, clean_slice, honest)


@pytest.mark.slow
def test_resume_after_an_external_sigkill_mid_run(clean_slice, honest, tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "accelbench", "generate", "--out", str(tmp_path), *SLICE_ARGS,
                                "--submission", str(honest)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 300
    while len(list((tmp_path / schema.STAGING_DIR).glob("*/part-*.parquet"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # workers (own groups) and encoders exit once their parent is gone
    process.wait()
    resume_equals_clean(tmp_path, clean_slice, honest)


def test_unreadable_and_temporary_files_are_ignored_with_a_warning(smoke, tmp_path, caplog):
    out, _ = smoke
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "data" / "generations-truncated.parquet").write_bytes(b"PAR1 not really parquet")
    (copy / "data" / ".generations-x.parquet.123.tmp").write_bytes(b"half a file")
    with caplog.at_level("WARNING", logger="accelbench"):
        assert len(rows(copy)) == len(rows(out))
    assert "ignoring unreadable file" in caplog.text and "generations-truncated.parquet" in caplog.text


# ---------------------------------------------------------------------------------------------------------
# Sharding and the sandbox
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_torchrun_processes_write_the_same_dataset_as_one(clean_slice, honest, tmp_path):
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "--no-python", shutil.which("accelbench", path=os.path.dirname(sys.executable)),
                             "generate", "--out", str(tmp_path), *SLICE_ARGS, "--submission", str(honest)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert hashes(tmp_path) == clean_slice
    by_rank = defaultdict(set)
    for row in rows(tmp_path, ["rank", "setting_id"]):
        by_rank[row["rank"]].add(row["setting_id"])
    assert set(by_rank) == {0, 1} and not by_rank[0] & by_rank[1]  # settings, not units, are split
    assert len(list((tmp_path / schema.RUNS_DIR).glob("*.json"))) == 2


def test_shards_by_hand_cover_the_work_list_exactly_once():
    tasks = [CATALOG.task(task_id) for task_id in CATALOG.suite("standard").tasks]
    settings = plan.group_by_setting(plan.build_units(CATALOG, tasks, (schema.BASELINE, schema.GT)))
    shards = [plan.shard_settings(settings, index, 3) for index in range(3)]
    assert sorted(u.label for shard in shards for setting in shard for u in setting) == sorted(
        u.label for setting in settings for u in setting)
    assert len(settings) == len({task.setting_id for task in tasks})
    assert all(setting[0].is_baseline for setting in settings)


SNOOP = """
    import socket
    print("dataset visible:", os.path.exists(DATASET) and bool(os.listdir(DATASET)))
    print("interfaces:", sorted(name for _, name in socket.if_nameindex()))"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (apt-get install bubblewrap)")
def test_sandbox_bwrap_hides_the_dataset_folder_and_the_network(tmp_path):
    out = tmp_path / "out"
    program = f"DATASET = {str(out)!r}\n" + FAKE.format(load="pass", generate=SNOOP)
    folder = submission(tmp_path / "snoop", {SLICE[0]: program})
    result = cli("generate", "--out", str(out), "--tasks", SLICE[0], "--variants", "sub:snoop", "--limit", "1",
                 "--warmup", "0", "--submission", str(folder), "--sandbox", "bwrap", "--gate", "none", "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    log = (out / schema.LOGS_DIR / f"sub-snoop--{SLICE[0]}--bs1.log").read_text()
    assert "dataset visible: False" in log and "interfaces: ['lo']" in log
    assert Counter(row["status"] for row in rows(out)) == {"ok": 4}  # 2 seeds x 2 batch sizes


@pytest.mark.parametrize("max_resident, capacity, expected", [(None, None, 5), (3, None, 3), (None, 2, 2),
                                                               (3, 2, 2), (2, 4, 2), (9, 9, 5)])
def test_max_resident_bounds_what_the_device_was_measured_to_hold(max_resident, capacity, expected):
    assert rounds.resident_limit(max_resident, capacity, lanes=5) == expected
