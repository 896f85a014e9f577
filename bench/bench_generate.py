"""Generate vs a bare diffusers loop, paired round by round: does the harness distort what it measures?

For each family the same work (DDIM 25 steps, batch size 4, N images, every method) runs on one device in one
paired pass: ``accelbench generate --timing interleaved`` (suite ``timing``), with a bare diffusers loop
(bench/bare.py, independent of accelbench's programs) driven from generate's ``before_round`` hook, so both
sides render batch k of every method in round k, on the same host state. Each method's bare pipeline runs in a
process of its own, as each program runs in a worker of its own: every batch of either side follows another
process's batch. Odd rounds put the bare loop's batches after the harness's (the whole round, at the next
round's start), so a bias of a round's first or second half falls on both sides alike.

``--control`` puts a second bare loop, driven the same way, in the harness's place. No harness is involved:
whatever the control reads is the machine's and the bench's own. ``pool_runs.py RUNS --control CONTROLS`` sets
runs of both against each other, the run as the unit.

Per method it prints throughput (images per second of summed batch latency; the harness's clock includes the
request, the worker's quantisation to uint8 and the pixels' transfer back), its ratio to the bare loop's over
the same rounds, the speedup over the baseline with a 95 % bootstrap CI over rounds, its difference to the bare
loop's speedup, and the per-batch CV; then the harness's own cost per batch, measured with a program that
computes nothing at the family's batch shape (quantisation, shared-memory write, messages, copy back). It ends
with its targets (paired_stats.py): throughput, every method pooled, >= 0.98 x bare; each speedup within 3 % of
bare's; the slowest null-program call <= 1 % of a bare baseline batch. One run's CIs resample its rounds; runs
disagree by more than that (docs/investigations/sd15-harness-gap.md), so decide over runs with pool_runs.py.

    python bench/bench_generate.py --families sd15 --images 100 --device cuda --out bench/results/x.json
    python bench/bench_generate.py --families sd15 --images 100 --device cuda --control --out bench/results/y.json
    python bench/bench_generate.py --families sd15 --images 8 --weights tiny --device cpu --methods deepcache
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bare  # noqa: E402
from paired_stats import (  # noqa: E402
    BARE,
    BASELINE,
    HARNESS,
    METHOD_LABELS,
    as_result,
    cost_target,
    paired_rows,
    pooled_throughput_ratio,
    print_table,
    run_targets,
)
from targets import as_json, print_targets  # noqa: E402

SEED_KEY = "0123456789abcdef"  # the harness's datasets and the bare loop render the same images

METHOD_TASKS = {BASELINE: "", "deepcache": "deepcache", "tome": "tome", "tgate": "tgate",
                "deepcache_tgate": "deepcache-tgate", "deepcache_tome": "deepcache-tome", "tome_tgate": "tome-tgate",
                "deepcache_tome_tgate": "deepcache-tome-tgate"}
DEFAULT_METHODS = (BASELINE, "deepcache", "tome", "tgate", "deepcache_tgate")  # the standing benchmark's
PROMPT_SUBJECTS = ["a red cube", "an astronaut riding a horse", "a lighthouse at dawn", "two cats on a sofa",
                   "a bowl of fruit", "a city street in the rain", "a mountain lake", "a robot reading a book"]
NULL_PROGRAM = '''
import numpy as np

IMAGES = {}


def load(model_id, device, dtype):
    return None


def generate(pipe, prompts, generators, height=1024, width=1024):
    key = (len(prompts), height, width)
    if key not in IMAGES:  # laid out as diffusers returns its images: an NHWC view of NCHW memory
        IMAGES[key] = np.random.default_rng(0).random((len(prompts), 3, height, width),
                                                      dtype=np.float32).transpose(0, 2, 3, 1)
    return IMAGES[key]
'''
NULL_PROGRAM_CALLS = 20  # timed, after two untimed


def prompts(count: int) -> list[str]:
    return [f"{PROMPT_SUBJECTS[i % len(PROMPT_SUBJECTS)]}, picture {i}" for i in range(count)]


def batches_of(prompt_list: list[str], seeds: list[int], batch_size: int) -> list[tuple[list[str], list[int]]]:
    return [(prompt_list[i:i + batch_size], seeds[i:i + batch_size]) for i in range(0, len(prompt_list), batch_size)]


def method_task(catalog, family: str, method: str):
    """``method``'s DDIM-25 task (the baseline shares the DeepCache task's setting)."""
    return catalog.task(f"{family}-ddim-25-{METHOD_TASKS[method] or 'deepcache'}")


class BareSetting(NamedTuple):
    """What one method's bare pipeline is loaded and called with (sent to its process: no catalogue there)."""
    family: str
    method: str
    params: dict
    steps: int
    guidance_scale: float
    model_path: str
    size: int
    device: str
    dtype: str
    warmup: int
    warmup_batch: tuple[list[str], list[int]]


def bare_settings(catalog, family, methods, model_path, size, device, dtype, warmup, warmup_batch):
    """method -> its :class:`BareSetting`: the parameters and steps of the task generate runs for it."""
    settings = {}
    for method in methods:
        task = method_task(catalog, family, method)
        settings[method] = BareSetting(family, method, task.params if method != BASELINE else {}, task.steps,
                                       catalog.models[family].guidance_scale, model_path, size, device, dtype,
                                       warmup, warmup_batch)
    return settings


class BareServer:
    """One method's bare pipeline in a spawned process of its own, rendering one batch per request with its own
    clock. Starting it returns at once; :meth:`wait_ready` waits for the load and the warm-up batches."""

    def __init__(self, setting: BareSetting, release_memory: bool):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve_bare, args=(child, setting, release_memory), daemon=True)
        self.process.start()
        child.close()

    def wait_ready(self) -> None:
        self.conn.recv()

    def render(self, batch) -> float:
        self.conn.send(batch)
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send(None)
        self.process.join(timeout=60)


def _serve_bare(conn, setting: BareSetting, release_memory: bool) -> None:
    import torch

    from accelbench.builder import programs

    programs.quiet_library_output()
    pipe = bare.load(setting.family, setting.method, setting.params, setting.model_path, setting.device,
                     getattr(torch, setting.dtype))
    for _ in range(setting.warmup):
        bare.call(pipe, setting.method, setting.params, *setting.warmup_batch, setting.steps, setting.guidance_scale,
                  setting.size)
    if release_memory:  # the other side's processes load next: leave them what the warm-up batches cached
        _free(setting.device)
    conn.send("ready")
    while (batch := conn.recv()) is not None:
        conn.send(bare.timed_call(pipe, setting.method, setting.params, *batch, setting.steps,
                                  setting.guidance_scale, setting.size, setting.device))
        if release_memory:  # after the clock: only the weights stay, the other side's processes need the rest
            _free(setting.device)


class BareLoop:
    """The bare loop of a paired pass: every method's :class:`BareServer`, rendering round k (batch k of each
    method, in order). Driven by ``before_round``, odd rounds are put off until the other side has rendered its
    batches, then rendered whole before the next round's: a bare batch then never follows its own process's
    batch, which can run faster, as no harness batch does."""

    def __init__(self, settings: dict[str, BareSetting], batches, release_memory=False):
        self.servers = {method: BareServer(setting, release_memory) for method, setting in settings.items()}
        for server in self.servers.values():  # all load at once: untimed, so they may share the host
            server.wait_ready()
        self.batches = batches
        self.rounds: dict[int, dict[str, float]] = {}
        self.deferred: int | None = None

    def render(self, index: int) -> None:
        self.rounds[index] = {method: server.render(self.batches[index]) for method, server in self.servers.items()}

    def before_round(self, index: int) -> None:
        """Render round ``index`` the first time the other side starts it (with ``--max-resident`` generate runs a
        setting in groups, each through every round: later groups are paired with the first group's bare round)."""
        self.render_deferred()
        if index in self.rounds:
            return
        if self.other_side_first(index):
            self.deferred = index
        else:
            self.render(index)

    def render_deferred(self) -> None:
        if self.deferred is not None:
            self.render(self.deferred)
            self.deferred = None

    def other_side_first(self, index: int) -> bool:
        return index % 2 == 1

    def close(self) -> tuple[list[dict[str, float]], list[str]]:
        """Stop the servers; (each round's latencies, which side rendered first in each round)."""
        self.render_deferred()
        for server in self.servers.values():
            server.close()
        order = sorted(self.rounds)
        return ([self.rounds[index] for index in order],
                [HARNESS if self.other_side_first(index) else BARE for index in order])


def run_harness(family, methods, catalog, out, prompt_file, weights, device, image_count, warmup, max_resident,
                before_round):
    """The harness side: ``accelbench generate --timing interleaved`` of the family's tasks; (method -> its
    batches in round order, paired with the same round's baseline batch; the call's wall time)."""
    from accelbench import dataset
    from accelbench.builder.generate import run_generate
    from accelbench.builder.options import GenerateOptions

    tasks = [f"{family}-ddim-25-{METHOD_TASKS[method]}" for method in methods if method != BASELINE]
    # One run (repeats=1): the bench pairs the rounds of one run with the bare loop's.
    options = GenerateOptions(suite="timing", out=out, tasks=tasks, device=device, weights=weights,
                              prompts_file=prompt_file, limit=image_count, warmup_batches=warmup,
                              timing="interleaved", max_resident=max_resident, seed_key=SEED_KEY, repeats=1,
                              progress=False)
    started = time.perf_counter()
    run_generate(options, catalog, before_round=before_round)
    wall = time.perf_counter() - started
    rows = dataset.read_generations(out, ["method", "batch_index", "batch_latency_s", "baseline_latency_s",
                                          "status", "error"]).to_pylist()
    for row in rows:
        if row["status"] != "ok":
            print(f"  harness: {row['method']} batch {row['batch_index']}: {row['status']}: {row['error']}")
    results = {}
    for method in methods:
        batches = {row["batch_index"]: row for row in rows if row["method"] == method and row["status"] == "ok"}
        ordered = [batches[index] for index in sorted(batches)]
        results[method] = {"latencies": [row["batch_latency_s"] for row in ordered],
                           "baseline_latencies": [row["baseline_latency_s"] for row in ordered]}
    return results, wall


def run_control(settings, batches, loop: BareLoop):
    """The control side: a second bare loop in the harness's place, each round rendered right after ``loop``'s
    ``before_round``, as generate renders its rounds; (results, wall time)."""
    started = time.perf_counter()
    control = BareLoop(settings, batches)
    for index in range(len(batches)):
        loop.before_round(index)
        control.render(index)
    rounds, _ = control.close()
    return as_result(rounds, list(settings)), time.perf_counter() - started


def harness_overhead(device: str, size: int, batch_size: int) -> dict:
    """Round-trip cost of one batch through a worker whose program computes nothing: quantisation to uint8,
    the shared-memory write, the request and answer, and the parent's copy back."""
    from accelbench.builder.worker import ProgramWorker

    with ProgramWorker(NULL_PROGRAM, model_path="none", device=device, dtype="float32", max_images=batch_size,
                       max_resolution=size) as worker:
        replies = [worker.generate(["p"] * batch_size, list(range(batch_size)), size, size)
                   for _ in range(NULL_PROGRAM_CALLS + 2)][2:]
    round_trips = [1000 * reply.latency_s for reply in replies]
    return {"batch": [batch_size, size, size, 3], "repeats": len(replies), "round_trips_ms": round_trips,
            "round_trip_ms_median": statistics.median(round_trips), "round_trip_ms_max": max(round_trips),
            "copy_back_ms_median": 1000 * statistics.median(reply.transfer_s for reply in replies)}


def _free(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="sd15,sdxl")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"subset of: {', '.join(METHOD_TASKS)} (default: {','.join(DEFAULT_METHODS)})")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--weights", choices=["random", "tiny"], default="random")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--control", action="store_true",
                        help="no harness: a second bare loop in its place, driven the same way (what the machine and "
                             "the paired structure alone read)")
    parser.add_argument("--max-resident", type=int, help="passed to generate (default: as many as fit)")
    parser.add_argument("--bare-release-memory", action="store_true",
                        help="the bare loop frees its cached GPU memory after its warm-up and each batch, keeping "
                             "only its weights (SDXL: the harness's workers then fit beside it; the bare baseline "
                             "batch pays its allocations again)")
    parser.add_argument("--work", type=Path, help="folder for the harness datasets (default: a temp folder)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    methods = [BASELINE, *(m for m in args.methods.split(",") if m != BASELINE)]  # the baseline is always measured
    if unknown := [m for m in methods if m not in METHOD_TASKS]:
        parser.error(f"--methods: unknown {', '.join(unknown)}; known: {', '.join(METHOD_TASKS)}")

    from accelbench.builder import host, programs
    from accelbench.builder.seeding import image_seed
    from accelbench.builder.sources import ModelSources
    from accelbench.manifest import load_catalog

    programs.quiet_library_output()
    catalog = load_catalog()
    suite = catalog.suite("timing")  # the harness side runs the `timing` suite
    batch_size = suite.batch_sizes[0]
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-generate-"))
    work.mkdir(parents=True, exist_ok=True)
    prompt_list = prompts(args.images)
    prompt_file = work / "prompts.txt"
    prompt_file.write_text("\n".join(prompt_list) + "\n")
    seeds = [image_seed(suite.seeds[0], index, SEED_KEY) for index in range(args.images)]
    batches = batches_of(prompt_list, seeds, batch_size)
    warmup_batch = ([f"bare warm-up {i}" for i in range(batch_size)], seeds[:batch_size])
    device = host.resolve_device(args.device, None)
    device_name, versions = host.environment(device)
    side = "control" if args.control else "harness"
    report = {"date": date.today().isoformat(), "device": device_name, "versions": versions, "images": args.images,
              "batch_size": batch_size, "steps": 25, "weights": args.weights,
              # deferred_rounds_whole: a put-off bare round renders whole before the next (results before
              # 2026-11-29's fix rendered it server by server)
              "options": {"control": args.control, "deferred_rounds_whole": True,
                          "bare_release_memory": args.bare_release_memory, "max_resident": args.max_resident,
                          "warmup": args.warmup},
              "families": {}}
    print(f"device: {device_name}; {args.images} images, batch {batch_size}, DDIM 25 steps, {args.weights} weights; "
          f"{'the control (a second bare loop, no harness)' if args.control else 'the harness'} vs the bare loop")
    for family in args.families.split(","):
        dtype = host.resolve_dtype(suite.dtype, catalog.models[family], device)
        sources = ModelSources(catalog, args.weights, device, {})
        model_path, size = sources.path(family), sources.resolution(family)
        settings = bare_settings(catalog, family, methods, model_path, size, device, dtype, args.warmup, warmup_batch)
        print(f"[{time.strftime('%H:%M:%S')}] {family}: paired pass", flush=True)
        loop = BareLoop(settings, batches, release_memory=args.bare_release_memory)
        if args.control:
            side_results, wall = run_control(settings, batches, loop)
        else:
            side_results, wall = run_harness(family, methods, catalog, work / family, prompt_file, args.weights,
                                             device, args.images, args.warmup, args.max_resident, loop.before_round)
        bare_rounds, first = loop.close()
        bare_results = as_result(bare_rounds, methods)
        complete = [method for method in methods if len(side_results[method]["latencies"]) == len(batches)]
        if BASELINE not in complete:
            print(f"{family}: the harness's baseline did not render every round; nothing to compare")
            continue
        rows = paired_rows(side_results, bare_results, complete, batch_size)
        pooled_ratio = pooled_throughput_ratio(side_results, bare_results, complete, first)
        entry = report["families"][family] = {"model": model_path, "rows": rows, "harness_wall_s": wall,
                                              "paired_first": first, "pooled": {HARNESS: pooled_ratio}}
        targets = run_targets(rows, pooled_ratio)
        if not args.control:  # the control has no harness to cost
            overhead = entry["overhead"] = harness_overhead(device, size, batch_size)
            targets.append(cost_target(overhead, bare_results[BASELINE]["latencies"]))
        entry["targets"] = as_json(targets)
        write(report, args.out)
        print(f"\n{family} ({model_path}); the {side} against the bare loop over the same rounds")
        if missing := [METHOD_LABELS[m] for m in methods if m not in complete]:
            print(f"left out (failed batches, printed above): {', '.join(missing)}")
        print_table(rows, pooled_ratio, side)
        if not args.control:
            print(f"harness cost per batch (null program): {overhead['round_trip_ms_median']:.1f} ms median, "
                  f"{overhead['round_trip_ms_max']:.1f} ms max of {overhead['repeats']} calls; copy back "
                  f"{overhead['copy_back_ms_median']:.2f} ms after the clock stops")
        print_targets(f"{family}, {side}, one run (CIs over its rounds; over runs: pool_runs.py)", targets)
        del sources
        _free(device)


def write(report, out):
    """After every family, so a run cut short keeps what it measured."""
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
