"""Programs in worker processes: quantisation of what they return, every way a program can fail or cheat becoming
rows (and the run going on), time limits and the output cap, the cores and threads a worker gets, the sandbox."""

import io
import os
import shutil
from collections import Counter

import numpy as np
import pytest
from generating import (
    FAKE,
    SLICE,
    cli,
    generate,
    rows,
    submission,
)
from PIL import Image

from accelbench import schema
from accelbench.builder import host
from accelbench.builder.worker import ProgramWorker

# End-to-end generate runs: out of make test-fast's quick lane.
pytestmark = pytest.mark.slow


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
    timers and return the previous call's images; pixart-sigma and the pipeline task have no program."""
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
                      ("smoke-pixart-alpha-dpmpp_2m-8-tgate", "ok"), ("smoke-pixart-sigma-dpmpp_2m-8-tgate", "missing"),
                      ("smoke-sd15-ddim-8-pipeline", "missing")}
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
    assert summary.reference_failed_rows == 0 and summary.failed_rows == 7 * 8 + 2 * 8  # 7 failing, 2 missing
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
