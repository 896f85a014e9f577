"""Generate efficiency and timing fidelity: the harness (interleaved and sequential) vs a bare diffusers loop.

For each family, the same work (DDIM 25 steps, batch size 4, N images, every method) runs on one GPU, in the
passes named by ``--modes`` (in that order; a mode may repeat):

- **bare**: a bare diffusers loop (bench/bare.py) in this process, every method's pipeline loaded, batches
  round-robin (batch k of the baseline, then of each method), each call timed with synchronize + perf_counter;
- **interleaved**: ``accelbench generate --timing interleaved`` (suite ``timing``): every method's program in a
  worker of its own, all loaded together, batches round-robin;
- **sequential**: ``accelbench generate --timing sequential``: the same workers, one after another;
- **paired** (default, first): the interleaved harness with the bare loop run from the harness's
  ``before_round``, each bare pipeline in a process of its own as each program is in a worker of its own:
  each round renders the bare loop's batch k of every method, then the harness's. Both see the same host
  state, so the throughput ratio gets a CI over rounds even where the host drifts; a line pools every
  method's batches of a round (the harness's overall throughput over bare's, CI over rounds). By default
  (``--paired-order alternate``) odd rounds render the bare loop's batches after the harness's (the whole round
  at the next round's start, before that round's), and the pooled ratio is also given for each order; the bare
  loop's rounds are also timed from this process, which gives what a clock in the parent (as the harness's)
  adds per batch.

Per method and pass it reports throughput (images per second of summed batch latency: the harness's clock
includes the request, the worker's quantisation to uint8 and the pixels' transfer back), its ratio to bare
(paired: to the same rounds' bare batches, with a 95 % CI; otherwise to every bare batch, pooled; target
>= 0.98), the speedup over the baseline (paired with the same round's baseline batch) with a 95 % bootstrap CI
over batches and n (none from fewer than 5), the difference to bare's speedup (target within 3 %), and the CV
of the per-batch latency. It also measures the harness's own per-batch cost at the family's batch shape with a
program that computes nothing (quantisation, shared-memory write, messages, copy back: target <= 1 % of an
SDXL batch).

    python bench/bench_generate.py --families sd15 --images 64 --device cuda --out bench/results/x.json
    python bench/bench_generate.py --families sd15 --images 20 --weights tiny --device cpu --methods deepcache
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bare  # noqa: E402
from accelbench.builder.timing import STAGES  # noqa: E402

METHOD_TASKS = {"none": "", "deepcache": "deepcache", "tome": "tome", "tgate": "tgate",
                "deepcache_tgate": "deepcache-tgate"}
PROMPT_SUBJECTS = ["a red cube", "an astronaut riding a horse", "a lighthouse at dawn", "two cats on a sofa",
                   "a bowl of fruit", "a city street in the rain", "a mountain lake", "a robot reading a book"]
MODES = ("bare", "interleaved", "sequential", "paired")
PAIRED_HARNESS, PAIRED_BARE = "paired: harness", "paired: bare"  # a paired pass's two result sets
PAIRED_ORDERS = ("alternate", "bare-first")  # which loop renders its batches first in each round (default first)
DEFAULT_PASSES = "paired,sequential"
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


def method_task(catalog, family: str, method: str):
    """``method``'s DDIM-25 task (the baseline shares the DeepCache task's setting)."""
    return catalog.task(f"{family}-ddim-25-{METHOD_TASKS[method] or 'deepcache'}")


def method_program(catalog, family: str, method: str) -> str:
    """The source generate runs for ``method``: the setting's baseline program, or the task's GT."""
    from accelbench.builder import programs

    return programs.render(catalog, method_task(catalog, family, method), baseline=method == "none").source


def one_method(spec, method: str) -> dict:
    """``spec`` narrowed to ``method``'s pipeline."""
    return {**spec, "pipelines": {**spec["pipelines"], "methods": [method]}}


def prompts(count: int) -> list[str]:
    return [f"{PROMPT_SUBJECTS[i % len(PROMPT_SUBJECTS)]}, picture {i}" for i in range(count)]


class BarePipelines:
    """Every method's bare pipeline loaded in one process (warmed up), rendering one batch of each per round:
    batch k of the baseline, then of each method, as the harness's interleaved mode runs them."""

    def __init__(self, family, methods, model_path, size, device, dtype, warmup, warmup_batch, stage_times=False):
        from accelbench.builder.timing import StageTimer
        from accelbench.manifest import load_catalog

        catalog = load_catalog()
        self.size, self.device = size, device
        self.guidance_scale = catalog.models[family].guidance_scale
        self.pipes = {}
        for method in methods:
            task = method_task(catalog, family, method)
            params = task.params if method != "none" else {}
            pipe = bare.load(family, method, params, model_path, device, getattr(torch, dtype))
            self.pipes[method] = (pipe, params, task.steps)
            for _ in range(warmup):
                bare.call(pipe, method, params, *warmup_batch, task.steps, self.guidance_scale, size)
        # The harness worker's stage timer (hooks, CUDA events), for a stage-by-stage comparison: a diagnostic
        self.timers = {method: StageTimer(pipe, device) for method, (pipe, _, _) in self.pipes.items()
                       if stage_times}

    def round(self, prompts, seeds) -> tuple[dict[str, float], dict[str, dict]]:
        """This round's batches: (method -> latency, method -> stage times, empty without stage_times)."""
        latencies, stages = {}, {}
        for method, (pipe, params, steps) in self.pipes.items():
            timer = self.timers.get(method)
            if timer is None:
                latencies[method] = bare.timed_call(pipe, method, params, prompts, seeds, steps, self.guidance_scale,
                                                    self.size, self.device)
                continue
            bare.synchronize(self.device)
            started = time.perf_counter()
            timer.begin()
            bare.call(pipe, method, params, prompts, seeds, steps, self.guidance_scale, self.size)
            stages[method] = timer.end().stages  # synchronises
            latencies[method] = time.perf_counter() - started
        return latencies, stages


def batches_of(prompt_list, seeds, batch_size):
    return [(prompt_list[i:i + batch_size], seeds[i:i + batch_size]) for i in range(0, len(prompt_list), batch_size)]


def as_result(rounds, methods):
    """Per-round latencies -> per-method results paired with the same round's baseline."""
    return {method: {"latencies": [r[method] for r in rounds], "baseline_latencies": [r["none"] for r in rounds]}
            for method in methods}


def run_bare(spec):
    """A bare pass: every round of the bare loop, one after another, in this process."""
    loop = BarePipelines(**spec["pipelines"])
    rounds = [loop.round(*batch)[0] for batch in spec["batches"]]
    del loop
    _free(spec["pipelines"]["device"])
    return as_result(rounds, spec["pipelines"]["methods"])


class BareRound(NamedTuple):
    """One round of the paired bare loop, as its server(s) recorded it."""
    latencies: dict[str, float]  # method -> the bare loop's own clock
    round_trip_s: float  # the same round timed from this process (every server's, summed)
    harness_first: bool  # the harness rendered this round before the bare loop
    stages: dict[str, dict]  # method -> stage times (with --bare-stage-times)


class BareServer:
    """The bare loop in a process of its own, driven round by round from the harness's ``before_round``: both
    are then timed on the same host state, batch for batch. The bare loop keeps its own clock; the parent's
    round trip of each round is recorded beside it (what a clock in the parent, as the harness's, adds).

    ``alternate``: odd rounds put the bare loop after the harness's batches (rendered at the next round's start,
    or at close), so a bias of a round's first or second half falls on both loops alike."""

    def __init__(self, spec, release_memory=False, cores=None, alternate=False):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve_bare, args=(child, spec, release_memory, cores), daemon=True)
        self.process.start()
        child.close()
        self.conn.recv()  # loaded and warmed up
        self.batches, self.rounds, self.round_trips, self.stages = spec["batches"], {}, {}, {}
        self.alternate, self.deferred = alternate, None

    def render(self, index):
        """One round of the bare loop: batch ``index`` of each of its methods."""
        started = time.perf_counter()
        self.conn.send(self.batches[index])
        self.rounds[index], self.stages[index] = self.conn.recv()
        self.round_trips[index] = time.perf_counter() - started

    def render_deferred(self):
        """Render the round put off until after the harness's, if there is one."""
        if self.deferred is not None:
            self.render(self.deferred)
            self.deferred = None

    def before_round(self, index):
        """Render round ``index`` the first time the harness starts it (with ``--max-resident`` a setting runs
        in groups, each through every round: later groups are paired with the first group's bare round)."""
        self.render_deferred()
        if index in self.rounds:
            return
        if self.harness_first(index):
            self.deferred = index
        else:
            self.render(index)

    def harness_first(self, index) -> bool:
        return self.alternate and index % 2 == 1

    def close(self):
        """Stop the server; returns its :class:`BareRound` s in order."""
        self.render_deferred()
        self.conn.send(None)
        self.process.join(timeout=60)
        return [BareRound(self.rounds[index], self.round_trips[index], self.harness_first(index),
                          self.stages[index]) for index in sorted(self.rounds)]


class BareServerPerMethod:
    """The paired bare loop with each method's pipeline in a process of its own, like the harness's workers:
    every bare batch then follows another process's batch, as every harness batch does."""

    def __init__(self, spec, release_memory=False, alternate=False):
        self.servers = [BareServer(one_method(spec, method), release_memory, alternate=alternate)
                        for method in spec["pipelines"]["methods"]]

    def before_round(self, index):
        # The whole put-off round first, then this one. Server by server, each would render its two batches back
        # to back, and a batch that follows its own process's batch can run faster than one that follows another
        # process's (bench/README.md section 1.2), while every harness batch follows another process's.
        for server in self.servers:
            server.render_deferred()
        for server in self.servers:
            server.before_round(index)

    def close(self):
        """As :meth:`BareServer.close`, each round's parts from every server together."""
        for server in self.servers:
            server.render_deferred()
        rounds = zip(*(server.close() for server in self.servers))
        return [BareRound({method: latency for part in parts for method, latency in part.latencies.items()},
                          sum(part.round_trip_s for part in parts), parts[0].harness_first,
                          {method: stages for part in parts for method, stages in part.stages.items()})
                for parts in rounds]


def _serve_bare(conn, spec, release_memory, cores=None):
    if cores:
        os.sched_setaffinity(0, cores)
    loop = BarePipelines(**spec["pipelines"])
    if release_memory:  # the harness's workers load next: leave them what the warm-up batches cached
        _free(spec["pipelines"]["device"])
    conn.send("ready")
    while (batch := conn.recv()) is not None:
        conn.send(loop.round(*batch))
        if release_memory:  # after the round's clocks: only the weights stay, the harness's workers need the rest
            _free(spec["pipelines"]["device"])


def run_harness(family, methods, catalog, out, prompt_file, weights, device, image_count, warmup, timing,
                max_resident, before_round=None):
    from accelbench import dataset
    from accelbench.builder import runner

    tasks = [f"{family}-ddim-25-{METHOD_TASKS[method]}" for method in methods if method != "none"]
    started = time.perf_counter()
    runner.run_generate(runner.GenerateOptions(suite="timing", out=out, tasks=tasks, device=device, weights=weights,
                                               prompts_file=prompt_file, limit=image_count, warmup_batches=warmup,
                                               timing=timing, max_resident=max_resident, progress=False,
                                               before_round=before_round), catalog)
    wall = time.perf_counter() - started
    stage_names = [name for name, _, _ in STAGES]
    rows = dataset.read_generations(out, ["method", "batch_index", "batch_latency_s", "baseline_latency_s",
                                          *stage_names, "status", "error"]).to_pylist()
    for row in rows:
        if row["status"] != "ok":
            print(f"  {timing}: {row['method']} batch {row['batch_index']}: {row['status']}: {row['error']}")
    results = {}
    for method in methods:
        batches = {row["batch_index"]: row for row in rows if row["method"] == method and row["status"] == "ok"}
        ordered = [batches[index] for index in sorted(batches)]
        results[method] = {
            "latencies": [row["batch_latency_s"] for row in ordered],
            "baseline_latencies": [row["baseline_latency_s"] for row in ordered],
            "denoise_share": (statistics.mean(row["denoise_s"] / row["batch_latency_s"] for row in ordered)
                              if ordered else None),
            "failed": sum(row["status"] != "ok" for row in rows if row["method"] == method),
            "stages": [{name: row[name] for name in stage_names} for row in ordered],
        }
    return results, wall


class WorkerLane:
    """One program in a ProgramWorker, driven from the bench (generate's worker and clock without its runner).
    Goes through ``runner.ProgramWorker`` so the --workers-* experiments apply to it too."""

    def __init__(self, source, model_path, device, dtype, size, batch_size, cores, threads, warmup_batch, warmup):
        from accelbench.builder import runner

        self.size = size
        self.worker = runner.ProgramWorker(source, model_path=model_path, device=device, dtype=dtype,
                                           max_images=batch_size, max_resolution=size, threads=threads, cores=cores)
        self.worker.start()
        for _ in range(warmup):
            self.worker.generate(*warmup_batch, size, size)

    def run(self, index, batch) -> float:
        return self.worker.generate(*batch, self.size, self.size).latency_s

    def close(self):
        self.worker.close()


class BareLane:
    """One method's bare loop in a BareServer of its own."""

    def __init__(self, spec, method, cores=None):
        self.server = BareServer(one_method(spec, method), cores=cores)
        self.method = method

    def run(self, index, batch) -> float:
        self.server.render(index)
        return self.server.rounds[index][self.method]

    def close(self):
        self.server.close()


def worker_lanes(spec, catalog):
    """method -> a WorkerLane running the program generate would run, placed as generate places it."""
    from accelbench.builder import runner

    pipelines, batches = spec["pipelines"], spec["batches"]
    device = pipelines["device"]
    cores, _ = runner.core_split(device, None)
    warmup_batch = ([f"worker warm-up {i}" for i in range(len(batches[0][0]))], pipelines["warmup_batch"][1])
    for method in pipelines["methods"]:
        yield method, WorkerLane(method_program(catalog, pipelines["family"], method), pipelines["model_path"],
                                 device, pipelines["dtype"], pipelines["size"], len(batches[0][0]), cores,
                                 runner.worker_threads(device), warmup_batch, pipelines["warmup"])


def run_lanes_alone(spec, lanes, before_round):
    """Experiments standing in for generate on the harness side of a paired pass: ``lanes`` (method, lane) pairs,
    started one by one, driven round by round from here, without generate's runner (no writer, no flush between
    rounds, no traced warm-up, no bookkeeping between calls)."""
    running = {}
    started = time.perf_counter()
    try:
        for method, lane in lanes:
            running[method] = lane
        rounds = []
        for index, batch in enumerate(spec["batches"]):
            before_round(index)
            rounds.append({method: lane.run(index, batch) for method, lane in running.items()})
    finally:
        for lane in running.values():
            lane.close()
    return as_result(rounds, spec["pipelines"]["methods"]), time.perf_counter() - started


def harness_overhead(device, size, batch_size, repeats=20):
    """Round-trip cost of one batch through a worker whose program computes nothing: quantisation to uint8,
    the shared-memory write, the request and answer, and the parent's copy back."""
    from accelbench.builder.worker import ProgramWorker

    with ProgramWorker(NULL_PROGRAM, model_path="none", device=device, dtype="float32", max_images=batch_size,
                       max_resolution=size) as worker:
        replies = [worker.generate(["p"] * batch_size, list(range(batch_size)), size, size) for _ in range(repeats + 2)]
    replies = replies[2:]
    return {"batch": [batch_size, size, size, 3], "repeats": repeats,
            "round_trip_ms_median": 1000 * statistics.median(r.latency_s for r in replies),
            "round_trip_ms_max": 1000 * max(r.latency_s for r in replies),
            "copy_back_ms_median": 1000 * statistics.median(r.transfer_s for r in replies)}


def with_ci(statistic, *samples):
    """(point, low, high) of ``statistic`` over paired samples; the CI is nan below the scorer's minimum n."""
    from accelbench.scorer import functional

    arrays = [np.asarray(sample, float) for sample in samples]
    point = float(statistic(*arrays))
    if len(arrays[0]) < functional.MIN_CI_UNITS:
        return point, float("nan"), float("nan")
    low, high = functional.bootstrap_ci(statistic, *arrays)
    return point, float(low), float(high)


def speedup_with_ci(baseline, variant):
    from accelbench.scorer import functional

    return with_ci(functional.ratio_of_sums, baseline, variant)


def _free(device):
    import gc

    gc.collect()
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()


def cv(values):
    return statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else float("nan")


def pooled(passes):
    """Several passes of one mode as one sample: their (baseline, variant) pairs side by side."""
    return {method: {"latencies": [x for run in passes for x in run[method]["latencies"]],
                     "baseline_latencies": [x for run in passes for x in run[method]["baseline_latencies"]]}
            for method in passes[0]}


def complete(result, rounds):
    """Whether a method rendered every round of a pass (its failed batches are printed, not summarised)."""
    return len(result["latencies"]) == rounds


def images_per_s(latencies, batch_size):
    return batch_size * len(latencies) / sum(latencies)


def speedup_difference(baseline, variant, bare_baseline, bare_variant, axis=-1):
    """The speedup over the bare loop's speedup, minus 1 (vectorised along ``axis``: a bootstrap statistic)."""
    from accelbench.scorer import functional

    return (functional.ratio_of_sums(baseline, variant, axis=axis)
            / functional.ratio_of_sums(bare_baseline, bare_variant, axis=axis) - 1)


def summarize(method, mode, result, reference, batch_size, paired=False):
    """One table row: ``result`` against ``reference``: the bare loop's batches of the same rounds (``paired``),
    else every bare batch measured, pooled. Paired, the throughput ratio and the difference to bare's speedup
    get CIs over rounds too."""
    speedup, low, high = speedup_with_ci(result["baseline_latencies"], result["latencies"])
    ratio_ci = list(speedup_with_ci(reference["latencies"], result["latencies"])[1:]) if paired else None
    samples = (result["baseline_latencies"], result["latencies"], reference["baseline_latencies"],
               reference["latencies"])
    if paired:  # the same rounds on both sides: resample them together
        difference, *difference_ci = with_ci(speedup_difference, *samples)
    else:  # a pooled reference of other length: the point only
        difference, difference_ci = speedup_difference(*map(np.asarray, samples)), None
    throughput = images_per_s(result["latencies"], batch_size)
    return {"method": method, "mode": mode, "images_per_s": throughput,
            "throughput_ratio_to_bare": throughput / images_per_s(reference["latencies"], batch_size),
            "throughput_ratio_ci": ratio_ci,
            "ms_per_image": 1000 / throughput, "speedup": speedup, "speedup_ci": [low, high],
            "speedup_ci_width": high - low, "n_batches": len(result["latencies"]),
            "speedup_difference_to_bare": float(difference), "speedup_difference_ci": difference_ci,
            "cv": cv(result["latencies"]),
            "denoise_share": result.get("denoise_share"), "failed": result.get("failed", 0),
            "batch_latencies_s": result["latencies"], "baseline_latencies_s": result["baseline_latencies"]}


def pooled_throughput_ratio(result, reference, methods, first=None):
    """The harness's throughput over bare's with every method's batches together: the bare loop's summed latency
    of each round over the harness's, the CI resampling rounds (the unit both loops share). ``first``: which
    loop went first in each round (PAIRED_HARNESS / PAIRED_BARE); where both did, the ratio of each subset too."""
    harness = np.sum([result[method]["latencies"] for method in methods], axis=0)
    bare_loop = np.sum([reference[method]["latencies"] for method in methods], axis=0)
    ratio, low, high = speedup_with_ci(bare_loop, harness)
    pooled_ratio = {"ratio": ratio, "ci": [low, high], "n_rounds": len(harness)}
    if first is not None and len(set(first)) > 1:
        pooled_ratio["by_first"] = {}
        for side in (PAIRED_BARE, PAIRED_HARNESS):
            rounds = np.asarray(first) == side
            ratio, low, high = speedup_with_ci(bare_loop[rounds], harness[rounds])
            pooled_ratio["by_first"][side] = {"ratio": ratio, "ci": [low, high], "n_rounds": int(rounds.sum())}
    return pooled_ratio


def compare_stages(harness, bare_loop, bare_stages, methods):
    """Per method and stage (and ``outside``: the latency beyond the stages, i.e. the clock's own overhead): the
    harness's summed time over the bare loop's in the same rounds (> 1: the harness spent longer), CI over
    rounds; medians in ms beside it."""
    comparison = {}
    for method in methods:
        sides = []
        for latencies, stages in ((harness[method]["latencies"], harness[method]["stages"]),
                                  (bare_loop[method]["latencies"], [round_[method] for round_ in bare_stages])):
            parts = {name: [batch[name] or 0.0 for batch in stages] for name, _, _ in STAGES}
            parts["outside"] = [latency - sum(batch[name] or 0.0 for name, _, _ in STAGES)
                                for latency, batch in zip(latencies, stages)]
            sides.append(parts)
        comparison[method] = {}
        for part in sides[0]:
            ratio, low, high = speedup_with_ci(sides[0][part], sides[1][part])
            comparison[method][part] = {"harness_ms_median": 1000 * statistics.median(sides[0][part]),
                                        "bare_ms_median": 1000 * statistics.median(sides[1][part]),
                                        "difference_ms_mean": 1000 * float(np.mean(np.subtract(sides[0][part],
                                                                                               sides[1][part]))),
                                        "time_ratio": ratio, "ci": [low, high]}
    return comparison


def print_stages(comparison):
    print(f"\n{'method':<16}{'stage':<16}{'bare ms':>9}{'harness ms':>12}{'mean diff ms':>14}"
          f"  harness/bare time [95% CI]")
    for method, parts in comparison.items():
        for part, values in parts.items():
            bounds = "" if np.isnan(values["ci"][0]) else f" [{values['ci'][0]:.3f}, {values['ci'][1]:.3f}]"
            ratio = "" if part == "outside" else f"{values['time_ratio']:.3f}{bounds}"  # ~0 in bare: no ratio
            print(f"{method:<16}{part:<16}{values['bare_ms_median']:>9.1f}{values['harness_ms_median']:>12.1f}"
                  f"{values['difference_ms_mean']:>+14.1f}  {ratio}")


def parent_clock_gap(rounds):
    """What a clock in the parent adds to the bare loop's own, per batch: each round's round trip from the
    bench process minus the latencies its server(s) measured, over the round's batches."""
    gaps = [1000 * (round_.round_trip_s - sum(round_.latencies.values())) / len(round_.latencies)
            for round_ in rounds]
    return {"per_batch_ms_median": statistics.median(gaps), "per_batch_ms_p90": float(np.percentile(gaps, 90)),
            "per_batch_ms_max": max(gaps), "n_rounds": len(gaps)}


def own_cores(worker_class, cores, per_worker=2):
    """``worker_class`` whose every new instance is pinned to the next ``per_worker`` of ``cores`` (wrapping)."""
    started = itertools.count()

    def pinned(*args, **kwargs):
        first = per_worker * next(started) % len(cores)
        return worker_class(*args, **{**kwargs, "cores": cores[first:first + per_worker]})

    return pinned


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="sd15,sdxl")
    parser.add_argument("--methods", default=",".join(METHOD_TASKS), help="subset of: " + ", ".join(METHOD_TASKS))
    parser.add_argument("--modes", default=DEFAULT_PASSES,
                        help=f"passes in order, each one of: {', '.join(MODES)} (default {DEFAULT_PASSES})")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--weights", choices=["random", "tiny"], default="random")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--max-resident", type=int, help="passed to generate (default: as many as fit)")
    parser.add_argument("--paired-order", choices=PAIRED_ORDERS, default=PAIRED_ORDERS[0],
                        help="paired: 'alternate' renders the bare loop's batches after the harness's in odd rounds "
                             "(counterbalanced: a bias of a round's first half cancels); 'bare-first' in every round "
                             "(runs 1-10)")
    parser.add_argument("--bare-one-process", action="store_true",
                        help="paired: the bare loop holds every pipeline in one process (runs 1-7) instead of each "
                             "in a process of its own, as the harness does; its method batches then follow a batch "
                             "of their own process, which flatters their speedups (bench/README.md section 1.2)")
    parser.add_argument("--bare-release-memory", action="store_true",
                        help="paired: the bare loop frees its cached GPU memory after each round, keeping only its "
                             "weights (SDXL: the harness's workers then fit beside it; the bare baseline batch "
                             "pays its allocations again)")
    parser.add_argument("--workers-as-bare", action="store_true",
                        help="experiment: the harness's workers run unpinned with torch's default thread count, as "
                             "the bare loop's processes do (generate pins them to its timed cores, one thread each)")
    parser.add_argument("--bare-stage-times", action="store_true",
                        help="paired, diagnostic: the bare loop also runs the worker's stage timer (its hooks and "
                             "CUDA events) and each stage's time is compared with the harness's")
    parser.add_argument("--workers-spawned", action="store_true",
                        help="experiment: the harness's workers are spawned (importing torch and diffusers each), as "
                             "the bare loop's processes are, instead of forked from generate's preloaded forkserver")
    parser.add_argument("--workers-own-cores", action="store_true",
                        help="experiment: each of the harness's workers is pinned to a core pair of its own (the "
                             "first two cores, the next two, ...) instead of all sharing generate's two timed cores")
    parser.add_argument("--harness-without-runner", action="store_true",
                        help="paired, experiment: the harness side is generate's programs in ProgramWorkers placed "
                             "as generate places them, driven from the bench without generate's runner (no writer, "
                             "no flush between rounds, no traced warm-up); stage times are not compared")
    parser.add_argument("--bare-vs-bare", action="store_true",
                        help="paired, control: the harness side is a second bare loop (each pipeline in a process of "
                             "its own), driven like --harness-without-runner: what the paired structure alone reads")
    parser.add_argument("--work", type=Path, help="folder for the harness datasets (default: a temp folder)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    from accelbench.builder import programs, runner
    from accelbench.builder.seeding import image_seed
    from accelbench.manifest import load_catalog

    programs.quiet_library_output()
    if args.workers_as_bare:
        runner.core_split = lambda device, local_rank: (None, None)
        runner.worker_threads = lambda device: None
    if args.workers_spawned:
        import multiprocessing

        from accelbench.builder import worker

        worker.forkserver_context = lambda sandbox="none": multiprocessing.get_context("spawn")
    if args.workers_own_cores:
        runner.ProgramWorker = own_cores(runner.ProgramWorker, sorted(os.sched_getaffinity(0)))
    catalog = load_catalog()
    batch_size = catalog.suite("timing").batch_sizes[0]  # the harness side runs the `timing` suite
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-generate-"))
    work.mkdir(parents=True, exist_ok=True)
    prompt_list = prompts(args.images)
    prompt_file = work / "prompts.txt"
    prompt_file.write_text("\n".join(prompt_list) + "\n")
    seeds = [image_seed(catalog.suite("timing").seeds[0], index) for index in range(args.images)]
    methods = ["none", *(m for m in args.methods.split(",") if m != "none")]  # the baseline is always measured
    passes = args.modes.split(",")
    if not set(passes) <= set(MODES) or not {"bare", "paired"} & set(passes):
        parser.error(f"--modes: a list of {', '.join(MODES)} (bare or paired at least once; a mode may repeat)")
    if (args.harness_without_runner or args.bare_vs_bare) and args.bare_stage_times:
        parser.error("--harness-without-runner and --bare-vs-bare record no stage times: leave out --bare-stage-times")
    if args.harness_without_runner and args.bare_vs_bare:
        parser.error("--harness-without-runner and --bare-vs-bare each replace the harness side: choose one")
    device = runner.resolve_device(args.device, None)
    device_name, versions = runner.environment(device)
    report = {"date": date.today().isoformat(), "device": device_name, "versions": versions, "images": args.images,
              "batch_size": batch_size, "steps": 25, "weights": args.weights,
              # deferred_rounds_whole: a put-off bare round renders whole before the next (older results: server
              # by server)
              "options": {"modes": passes, "paired_order": args.paired_order, "deferred_rounds_whole": True,
                          "bare_one_process": args.bare_one_process,
                          "bare_release_memory": args.bare_release_memory, "max_resident": args.max_resident,
                          "workers_as_bare": args.workers_as_bare, "workers_spawned": args.workers_spawned,
                          "workers_own_cores": args.workers_own_cores,
                          "harness_without_runner": args.harness_without_runner, "bare_vs_bare": args.bare_vs_bare,
                          "bare_stage_times": args.bare_stage_times,
                          "warmup": args.warmup},
              "families": {}}
    print(f"device: {device_name}; {args.images} images, batch {batch_size}, DDIM 25 steps, {args.weights} weights")
    for family in args.families.split(","):
        dtype = catalog.models[family].dtype if device.startswith("cuda") else "float32"
        sources = runner.ModelSources(catalog, args.weights, device, {})
        model_path, size = sources.path(family), sources.resolution(family)
        results, walls, references = {}, {}, {}
        entry = report["families"][family] = {"model": model_path, "rows": [], "harness_wall_s": walls}
        spec = {"pipelines": {"family": family, "methods": methods, "model_path": model_path, "size": size,
                              "device": device, "dtype": dtype, "warmup": args.warmup,
                              "warmup_batch": ([f"bare warm-up {i}" for i in range(batch_size)], seeds[:batch_size]),
                              "stage_times": args.bare_stage_times},
                "batches": batches_of(prompt_list, seeds, batch_size)}
        for number, mode in enumerate(passes):
            label = mode if passes.index(mode) == number else f"{mode} #{passes[:number + 1].count(mode)}"
            print(f"[{time.strftime('%H:%M:%S')}] {family}: {label}", flush=True)
            folder = work / f"{family}-{label.replace(' #', '-')}"
            if mode == "bare":
                results[label] = run_bare(spec)
            elif mode == "paired":
                server = (BareServer if args.bare_one_process else BareServerPerMethod)(
                    spec, release_memory=args.bare_release_memory, alternate=args.paired_order == "alternate")
                if args.harness_without_runner:
                    results[PAIRED_HARNESS], walls[label] = run_lanes_alone(spec, worker_lanes(spec, catalog),
                                                                            server.before_round)
                elif args.bare_vs_bare:
                    results[PAIRED_HARNESS], walls[label] = run_lanes_alone(
                        spec, ((method, BareLane(spec, method)) for method in methods), server.before_round)
                else:
                    results[PAIRED_HARNESS], walls[label] = run_harness(
                        family, methods, catalog, folder, prompt_file, args.weights, device, args.images,
                        args.warmup, "interleaved", args.max_resident, before_round=server.before_round)
                bare_rounds = server.close()
                results[PAIRED_BARE] = as_result([round_.latencies for round_ in bare_rounds], methods)
                references[PAIRED_HARNESS] = results[PAIRED_BARE]
                entry["paired_first"] = [PAIRED_HARNESS if round_.harness_first else PAIRED_BARE
                                         for round_ in bare_rounds]
                entry["bare_parent_clock"] = parent_clock_gap(bare_rounds)
                if args.bare_stage_times and all(complete(results[PAIRED_HARNESS][method], len(spec["batches"]))
                                                 for method in methods):
                    entry["stages"] = compare_stages(results[PAIRED_HARNESS], results[PAIRED_BARE],
                                                     [round_.stages for round_ in bare_rounds], methods)
            else:
                results[label], walls[label] = run_harness(family, methods, catalog, folder, prompt_file,
                                                           args.weights, device, args.images, args.warmup, mode,
                                                           args.max_resident)
            reference = pooled([result for name, result in results.items() if "bare" in name])
            entry["rows"] = [summarize(method, name, results[name][method], references.get(name, reference)[method],
                                       batch_size, paired=name in references)
                             for name in results for method in methods
                             if complete(results[name][method], len(spec["batches"]))]
            entry["pooled"] = {name: pooled_throughput_ratio(results[name], references[name], methods,
                                                             entry.get("paired_first"))
                               for name in references
                               if all(complete(results[name][m], len(spec["batches"])) for m in methods)}
            write(report, args.out)
        overhead = entry["overhead"] = harness_overhead(device, size, batch_size)
        overhead["share_of_baseline_batch"] = overhead["round_trip_ms_median"] / (
            1000 * statistics.median(reference["none"]["latencies"]))
        write(report, args.out)
        print(f"\n{family} ({model_path}); harness overhead per batch: {overhead['round_trip_ms_median']:.1f} ms "
              f"median ({100 * overhead['share_of_baseline_batch']:.2f} % of a baseline batch), copy back "
              f"{overhead['copy_back_ms_median']:.2f} ms; 'vs bare': against the bare passes pooled")
        print_table(entry["rows"], entry.get("pooled", {}))
        if "bare_parent_clock" in entry:
            gap = entry["bare_parent_clock"]
            print(f"bare loop, timed from the bench process instead of its own: +{gap['per_batch_ms_median']:.1f} ms "
                  f"per batch (median of {gap['n_rounds']} rounds; 90th percentile {gap['per_batch_ms_p90']:.1f})")
        if "stages" in entry:
            print_stages(entry["stages"])
        del sources
        _free(device)


def interval(bounds, spec=".3f", scale=1) -> str:
    """``[low, high]``; "n/a" where too few units gave no CI (nan); "" where none applies (None)."""
    if bounds is None:
        return ""
    low, high = bounds
    return "n/a" if np.isnan(low) else f"[{scale * low:{spec}}, {scale * high:{spec}}]"


def print_table(rows, pooled_ratios):
    """The rows of ``summarize`` as a table, then the every-method pooled ratio of each paired pass."""
    print(f"{'method':<16}{'mode':<20}{'img/s':>8} {'vs bare [95% CI]':<24}{'speedup [95% CI]':>19}{'n':>4}"
          f"  {'vs bare speedup [95% CI]':<26}{'CV':>6}")
    for row in rows:
        difference = (f"{100 * row['speedup_difference_to_bare']:+.1f}% "
                      + interval(row.get("speedup_difference_ci"), "+.1f", scale=100))
        print(f"{row['method']:<16}{row['mode']:<20}{row['images_per_s']:>8.2f}"
              f"{row['throughput_ratio_to_bare']:>8.3f} {interval(row['throughput_ratio_ci']):<16}"
              f"{row['speedup']:>6.2f}x {interval(row['speedup_ci'], '.2f'):>13}{row['n_batches']:>4}"
              f"  {difference:<26}{100 * row['cv']:>5.1f}%")
    for name, pooled_ratio in pooled_ratios.items():
        print(f"{name}, every method pooled: {pooled_ratio['ratio']:.3f} {interval(pooled_ratio['ci'])}"
              f" of bare's throughput (n = {pooled_ratio['n_rounds']} rounds)")
        for side, subset in pooled_ratio.get("by_first", {}).items():
            print(f"  rounds with the {side.split(': ')[1]} first: {subset['ratio']:.3f} "
                  f"{interval(subset['ci'])} (n = {subset['n_rounds']} rounds)")


def write(report, out):
    """After every pass, so a run cut short keeps what it measured."""
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
