"""The generate stage: run every planned batch of this rank's settings in isolated workers and write the dataset.

A *setting* (model, scheduler, steps) groups the units that are timed against each other: its baseline, the
GT program of each of its tasks and each submission's program for those tasks. Per setting, the programs that
must pass the correctness gate (``--gate``: submissions by default) are judged first, on the family's tiny
model; a rejected one is never timed. Then per batch size:

1. start one worker process per unit (:mod:`~accelbench.builder.worker`): each ``load()``s its program once,
   then runs untimed warm-up batches on prompts and seeds that no timed batch uses (a GT's and a gated
   submission's first one traced: the two must have computed the same thing on the real model);
2. **interleaved** timing (the default): round ``r`` sends batch ``r`` to the baseline's worker, then to every
   other unit's worker, one at a time on one device, so host drift hits every unit of a round alike; each row
   records the baseline's latency of its round (``baseline_latency_s``). ``--timing sequential`` runs one
   unit's batches after another (GPUs too small to hold two pipelines);
3. the harness times each batch (request sent -> pixels received) and hands the uint8 pixels to the writer,
   whose encoding processes and Parquet thread stay off the worker's cores and out of its process;
4. close the workers, compact the setting's parts into shards.

Batch sizes run in separate workers, so no worker sees the same (prompt, seed) twice. When a setting has more
units than fit on the device (``--max-resident``), it runs in groups, each with a fresh baseline worker whose
re-rendered baseline images must be bit-identical to the first rendering (a mismatch is a failure).

A failing unit (load error, exception, NaN/inf, out of memory, crash, hang) yields rows with that status and
the run goes on; the run fails (exit 1) only when baseline or GT rows fail.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import re
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from accelbench import dataset, schema
from accelbench.builder import plan, submissions, synthetic
from accelbench.builder.encode import pixel_sha256
from accelbench.builder.seeding import GENERATOR_DEVICE
from accelbench.builder.worker import (DEFAULT_CALL_TIMEOUT_S, DEFAULT_LOAD_TIMEOUT_S, ProgramWorker,
                                       WorkerFailure, hide_from_workers)
from accelbench.builder.writer import ShardWriter
from accelbench.manifest import Catalog, Model

log = logging.getLogger("accelbench")

WARMUP_SEED = 2**31 - 1  # warm-up images draw from generators no recorded image uses
WARMUP_PROMPT = "accelbench warm-up {index}: a plain grey test card"  # a prompt no prompt list holds
MIN_CALL_TIMEOUT_S = 60.0
CALL_TIMEOUT_FACTOR = 10  # a call may take this many times the baseline's median batch latency
MEMORY_HEADROOM = 0.85  # fraction of the free GPU memory the resident pipelines may fill
TIMED_CORES = 2  # per local rank on a GPU host: its workers run there, no encoder does
PNG_SIZE_RATIO = 0.8  # a level-1 PNG of a generated image: about 0.6-0.8 of its raw pixels (bench notes)
SHARED_SWEEP_AGE_S = 600.0  # with several ranks, only temporaries this old are a killed run's leftovers
GATE_MODES = ("submissions", "all", "none")  # --gate: what is judged before timing (the baseline never is)


@dataclass
class GenerateOptions:
    suite: str
    out: Path
    tasks: list[str] | None = None  # None: the suite's
    variants: list[str] | None = None  # None: baseline, gt and every submission
    limit: int | None = None
    device: str | None = None  # None: cuda if available, else cpu
    weights: str | None = None  # None: the suite's
    shard: tuple[int, int] | None = None  # None: RANK/WORLD_SIZE from the launcher, else 0/1
    prompts_file: Path | None = None
    seeds: list[int] | None = None  # None: the suite's
    warmup_batches: int | None = None  # None: the suite's
    model_paths: dict[str, str] = field(default_factory=dict)  # family -> local folder (pretrained weights)
    submissions: list[Path] = field(default_factory=list)
    timing: str = "interleaved"
    max_resident: int | None = None  # None: as many as fit (CUDA: from the baseline's footprint)
    call_timeout: float | None = None  # None: max(60 s, 10 x the baseline's median batch latency)
    load_timeout: float = DEFAULT_LOAD_TIMEOUT_S
    sandbox: str = "none"
    gate: str = "submissions"  # which programs must pass the correctness gate before they are timed
    retry_failed: bool = False
    encode_workers: int | None = None
    progress: bool = True
    # Called with the round's index before each round of a group (bench/bench_generate.py runs a bare loop's
    # batch there, so the two are timed on the same host state).
    before_round: Callable[[int], None] | None = None


@dataclass
class GenerateSummary:
    out: Path
    rank: int
    world_size: int
    units: int
    images_planned: int
    images_skipped: int
    rows_written: int
    failed_rows: int  # every row whose status is not ok
    reference_failed_rows: int  # baseline and GT rows among them: these fail the run
    baseline_rerenders: int
    seconds: float
    failures: dict[str, str] = field(default_factory=dict)  # unit label -> first error message

    def format(self) -> str:
        lines = [f"generate: {self.rows_written} rows written to {self.out} in {self.seconds:.1f} s "
                 f"(rank {self.rank}/{self.world_size}, {self.units} programs, {self.images_planned} images planned, "
                 f"{self.images_skipped} already done)",
                 f"failed rows: {self.failed_rows} ({self.reference_failed_rows} of baseline or GT programs)"]
        if self.baseline_rerenders:
            lines.append(f"baseline batches re-rendered for another group: {self.baseline_rerenders}")
        lines += [f"  {unit}: {message}" for unit, message in self.failures.items()]
        return "\n".join(lines)


def resolve_rank(shard: tuple[int, int] | None) -> tuple[int, int, int | None]:
    """(rank, world size, local rank): ``--shard`` by hand, else what torchrun / accelerate launch set."""
    if shard is not None:
        return shard[0], shard[1], None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = os.environ.get("LOCAL_RANK")
    if not 0 <= rank < world:
        raise plan.PlanError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return rank, world, int(local) if local is not None else None


def resolve_device(requested: str | None, local_rank: int | None) -> str:
    import torch

    device = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise plan.PlanError("--device cuda: no CUDA device is available here")
        if device == "cuda":
            device = f"cuda:{local_rank or 0}"
    elif device != "cpu":
        raise plan.PlanError(f"--device must be cuda, cuda:N or cpu, got {device!r}")
    return device


def resolve_dtype(policy: str, model: Model, device: str) -> str:
    """``auto``: the model's dtype on CUDA, float32 on CPU (half precision on CPU is slow and inexact)."""
    return policy if policy != "auto" else (model.dtype if device.startswith("cuda") else "float32")


class ModelSources:
    """What ``load()`` gets as ``model_id`` per family: the Hub id, a local folder, or a synthetic folder."""

    def __init__(self, catalog: Catalog, weights: str, device: str, overrides: dict[str, str]):
        unknown = sorted(set(overrides) - set(catalog.models))
        if unknown:
            raise plan.PlanError(f"--model {unknown[0]}=...: unknown model family; known: {', '.join(catalog.models)}")
        if overrides and weights != "pretrained":
            raise plan.PlanError(f"--model points at pretrained weights; it does not apply to --weights {weights}")
        self.catalog, self.weights, self.device, self.overrides = catalog, weights, device, overrides
        self._paths: dict[str, str] = {}

    def path(self, family: str) -> str:
        if family not in self._paths:
            self._paths[family] = self._resolve(family)
        return self._paths[family]

    def _resolve(self, family: str) -> str:
        if self.weights == "pretrained":
            return self.overrides.get(family, self.catalog.models[family].hub_id)
        if self.weights == "tiny":
            return str(synthetic.materialize(family, "tiny"))
        import torch

        # Full-size random weights are drawn on the GPU (fast) in the model's dtype.
        on_gpu = self.device.startswith("cuda")
        dtype = getattr(torch, self.catalog.models[family].dtype) if on_gpu else torch.float32
        return str(synthetic.materialize(family, "full", device=self.device, dtype=dtype))

    def resolution(self, family: str) -> int:
        return synthetic.tiny_resolution(family) if self.weights == "tiny" else self.catalog.models[family].resolution


def environment(device: str, threads: int | None = None) -> tuple[str, dict[str, str]]:
    """(device name, versions) recorded in every row; ``threads``: the workers' torch thread count."""
    import torch

    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else _cpu_name()
    # CPU float results depend on the thread count, so it is recorded too.
    versions = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda or "",
                "torch_num_threads": str(threads or torch.get_num_threads()), "accelbench": _version("accelbench")}
    for package in ("diffusers", "transformers", "DeepCache", "tomesd", "tgate"):
        versions[package] = _version(package)
    return name, versions


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def core_split(device: str, local_rank: int | None) -> tuple[list[int] | None, list[int] | None]:
    """(the timed workers' cores, the PNG encoders' cores). On a GPU host with cores to spare, each local rank's
    workers are held on ``TIMED_CORES`` cores of their own and the encoders stay off all of those and off their
    hyperthread siblings, so the host thread that launches the GPU work always finds its core free and its
    caches warm (only one of a rank's workers runs at a time). On CPU, or a host too small to split, nobody is
    pinned."""
    cores = sorted(os.sched_getaffinity(0))
    local_world = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), (local_rank or 0) + 1)
    reserved = cores[:TIMED_CORES * local_world]
    shared = set().union(*(cpu_siblings(core) for core in reserved))
    encoders = [core for core in cores if core not in shared]
    if not device.startswith("cuda") or len(encoders) < 2:
        return None, None
    first = TIMED_CORES * (local_rank or 0)
    return reserved[first:first + TIMED_CORES], encoders


def cpu_siblings(core: int) -> set[int]:
    """The logical CPUs that share ``core``'s physical core (itself included)."""
    try:
        text = Path(f"/sys/devices/system/cpu/cpu{core}/topology/thread_siblings_list").read_text().strip()
    except OSError:
        return {core}
    siblings = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        siblings.update(range(int(low), int(high or low) + 1))
    return siblings | {core}


def worker_threads(device: str) -> int:
    """torch's CPU threads per worker: one on a GPU (the host code of a GPU pipeline is one thread, and idle
    OpenMP threads spinning beside it slow its kernel launches), else what the harness uses."""
    import torch

    return 1 if device.startswith("cuda") else torch.get_num_threads()


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """What every setting of one generate run shares."""

    options: GenerateOptions
    catalog: Catalog
    suite_id: str
    prompts: list[str]
    seeds: list[int]
    batch_sizes: list[int]
    sources: ModelSources
    device: str
    dtype_policy: str
    warmups: int
    context: dict  # columns that are the same on every row of the run
    done: set[str]  # record ids that need no work
    stored: dict[str, str]  # record_id -> image_sha256 of its ok row: what a re-rendered baseline must match
    writer: ShardWriter
    progress: object  # tqdm
    threads: int
    worker_cores: list[int] | None
    rejected: dict[str, str] = field(default_factory=dict)  # unit label -> why the gate rejected it (one line)
    failed_rows: int = 0
    reference_failed_rows: int = 0  # of baseline and GT programs: these fail the run
    failures: dict[str, str] = field(default_factory=dict)  # unit label -> its first error
    gt_traces: dict[tuple[str, int], dict] = field(default_factory=dict)  # (task, batch size) -> GT warm-up trace
    baseline_rerenders: int = 0
    baseline_mismatches: list[str] = field(default_factory=list)


def run_generate(options: GenerateOptions, catalog: Catalog) -> GenerateSummary:
    from tqdm.auto import tqdm

    started = time.perf_counter()
    # 1. What to run.
    suite = catalog.suite(options.suite)
    tasks = plan.select_tasks(catalog, suite, options.tasks)
    submitted = submissions.load_submissions(options.submissions, suite)
    variants = plan.select_variants(options.variants, [submission.name for submission in submitted])
    prompts = plan.load_prompts(suite.prompts, options.prompts_file, options.limit)
    seeds = list(options.seeds or suite.seeds)
    rank, world_size, local_rank = resolve_rank(options.shard)
    device = resolve_device(options.device, local_rank)
    weights = options.weights or suite.weights
    warmups = suite.warmup_batches if options.warmup_batches is None else options.warmup_batches
    sources = ModelSources(catalog, weights, device, options.model_paths)
    units = plan.build_units(catalog, tasks, variants, {sub.name: sub.programs for sub in submitted})

    # 2. The dataset folder: it must have been made with the same settings and programs.
    out = Path(options.out)
    dataset.init_dataset(out, schema.dataset_manifest(
        suite=suite.id, weights=weights, dtype_policy=suite.dtype, device_type=device.split(":")[0],
        prompts_sha256=plan.prompts_sha256(prompts), seeds=seeds, batch_sizes=list(suite.batch_sizes),
        clip={"model": suite.clip_model, "pretrained": suite.clip_pretrained}),
        sweep_older_than_s=0.0 if world_size == 1 else SHARED_SWEEP_AGE_S)
    existing = dataset.read_columns(dataset.generation_files(out), ["variant", "unit_id", "program_sha256", "status",
                                                                   "image_sha256"]).to_pylist()
    _check_programs_unchanged(out, units, existing)
    done = {row["record_id"] for row in existing if row["status"] == schema.STATUS_OK or not options.retry_failed}
    stored = {row["record_id"]: row["image_sha256"] for row in existing if row["status"] == schema.STATUS_OK}

    # 3. This rank's settings and the batches not written yet.
    settings = plan.shard_settings(plan.group_by_setting(units), rank, world_size)
    planned = pending_images = pending_bytes = 0
    for setting in settings:
        for unit in setting:
            pixels = 3 * sources.resolution(unit.task.model) ** 2
            for batch in plan.build_batches(suite.id, unit, prompts, seeds, suite.batch_sizes):
                planned += len(batch.images)
                pending = sum(1 for image in batch.images if image.record_id not in done)
                pending_images += pending
                pending_bytes += pending * pixels * PNG_SIZE_RATIO
    free = shutil.disk_usage(out).free
    if pending_bytes > free:
        log.warning("this run needs about %.1f GiB for its images and %s has %.1f GiB free: it will stop with an "
                    "error when the disk is full (a rerun resumes)", pending_bytes / 2**30, out, free / 2**30)

    # 4. Run the settings; the writer encodes and writes each round after it.
    if options.sandbox != "none":
        hide_from_workers(out)
    (worker_cores, encoder_cores), threads = core_split(device, local_rank), worker_threads(device)
    device_name, versions = environment(device, threads)
    run_id = _utc_now().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    context = {"suite": suite.id, "device": device, "device_name": device_name, "weights": weights,
               "generator_device": GENERATOR_DEVICE, "warmup_batches": warmups, "versions": json.dumps(versions),
               "run_id": run_id, "rank": rank, "world_size": world_size, "timing": options.timing}
    writer = ShardWriter(out, run_id, rank, workers=options.encode_workers, cores=encoder_cores)
    progress = tqdm(total=pending_images, unit="img", desc=f"generate {suite.id}", disable=not options.progress,
                    dynamic_ncols=True)
    run = _Run(options, catalog, suite.id, prompts, seeds, list(suite.batch_sizes), sources, device, suite.dtype,
               warmups, context, done, stored, writer, progress, threads, worker_cores)
    try:
        for setting in settings:
            _gate_setting(run, setting)
            for batch_size in run.batch_sizes:
                _run_setting(run, setting, batch_size)
            writer.end_unit()
    finally:
        progress.close()
        writer.close()

    failures = dict(run.failures)
    for mismatch in run.baseline_mismatches:
        failures.setdefault(f"{schema.BASELINE} re-render", mismatch)
    summary = GenerateSummary(out, rank, world_size, sum(map(len, settings)), planned, planned - pending_images,
                              writer.rows_written, run.failed_rows,
                              run.reference_failed_rows + len(run.baseline_mismatches), run.baseline_rerenders,
                              time.perf_counter() - started, failures)
    dataset.write_json_atomic(out / schema.RUNS_DIR / f"{run_id}-r{rank}.json", {
        **context, "versions": versions, "argv": sys.argv, "tasks": [task.id for task in tasks],
        "variants": list(variants), "submissions": {sub.name: sub.info for sub in submitted},
        "prompts": len(prompts), "seeds": seeds, "batch_sizes": run.batch_sizes, "rows_written": summary.rows_written,
        "failed_rows": summary.failed_rows, "baseline_rerenders": run.baseline_rerenders,
        "baseline_mismatches": run.baseline_mismatches, "seconds": round(summary.seconds, 3),
        "finished_at": _utc_now().isoformat(),
    })
    return summary


def _check_programs_unchanged(out: Path, units: list[plan.Unit], existing: list[dict]) -> None:
    """A unit already in the dataset must be run with the same program (new units are how a dataset grows)."""
    stored: dict[tuple[str, str], str] = {}
    for row in existing:
        stored.setdefault((row["variant"], row["unit_id"]), row["program_sha256"] or "")
    for unit in units:
        old = stored.get((unit.variant, unit.unit_id))
        new = unit.program.sha256 if unit.program is not None else ""
        if old is not None and old != new:
            describe = lambda sha: f"program {sha[:12]}" if sha else "no program"  # noqa: E731
            raise dataset.DatasetError(
                f"{out} holds {unit.label} rows made with {describe(old)}, this run has {describe(new)}; "
                f"{'the catalogue changed' if unit.submission is None else 'use another submission name'} "
                f"or another --out")


# ---------------------------------------------------------------------------------------------------------
# One setting at one batch size
# ---------------------------------------------------------------------------------------------------------


def _gate_setting(run: _Run, setting: list[plan.Unit]) -> None:
    """Judge the setting's programs that must pass the gate before they are timed (``--gate``), on the family's
    tiny model on the CPU; store every verdict in ``DIR/gate/`` and remember the rejected units."""
    from accelbench.builder import gate

    judged = {schema.GT, schema.BASELINE} if run.options.gate == "all" else set()
    units = [unit for unit in setting if unit.program is not None and not unit.is_baseline
             and (_gated(run, unit) or unit.variant in judged) and _has_pending(run, unit)]
    verdicts = []
    judges: dict[str, gate.Gate] = {}  # one per task: its GT's results serve every submission for the task
    with contextlib.ExitStack() as closing:
        for unit in units:
            if unit.task.id not in judges:
                judges[unit.task.id] = closing.enter_context(gate.Gate(run.catalog, unit.task))
            log = run.writer.directory / schema.LOGS_DIR / f"gate--{_file_name(unit.label)}.log"
            verdicts.append(_verdict_row(run, unit, judges[unit.task.id].check(unit.program.source, log_path=log,
                                                                                stop_early=True)))
    if verdicts:
        import pyarrow as pa

        table = pa.Table.from_pylist(verdicts, schema=schema.arrow_schema(schema.GATE_COLUMNS))
        name = f"verdicts-{run.context['run_id']}-r{run.context['rank']}-{setting[0].task.setting_id}.parquet"
        dataset.write_table_atomic(table, run.writer.directory / schema.GATE_DIR / name)


def _verdict_row(run: _Run, unit: plan.Unit, verdict) -> dict:
    """A GATE_COLUMNS row of ``verdict``; a rejected unit is remembered (its rows become 'rejected')."""
    if not verdict.passed:
        run.rejected[unit.label] = f"gate: {verdict.reason}"
    return schema.empty_row(schema.GATE_COLUMNS) | {
        "program_sha256": unit.program.sha256, "task_id": unit.task.id, "variant": unit.variant,
        "submission": unit.submission, "passed": verdict.passed, "failed_checks": ";".join(verdict.failed_checks()),
        "reason": verdict.reason, "checks": json.dumps(verdict.to_dict()["checks"]),
        "trace_digest": verdict.trace_digest, "inputs": json.dumps(verdict.inputs),
        "model_path": verdict.model_path, "advisories": ";".join(verdict.advisories), "checked_at": _utc_now()}


def _has_pending(run: _Run, unit: plan.Unit) -> bool:
    return any(image.record_id not in run.done
               for batch in plan.build_batches(run.suite_id, unit, run.prompts, run.seeds, run.batch_sizes)
               for image in batch.images)


def _file_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label)


@dataclass
class _Lane:
    """One unit's batches at one batch size, aligned by round with the other units of its setting."""

    unit: plan.Unit
    batches: list[plan.Batch]
    pending: set[int]  # rounds with at least one image not written yet
    base: dict  # the columns shared by every row of the unit
    resolution: int
    worker: ProgramWorker | None = None
    failure: WorkerFailure | None = None  # set once the worker is gone: the rest of its rounds get this


def _run_setting(run: _Run, setting: list[plan.Unit], batch_size: int) -> None:
    lanes = [_lane(run, unit, batch_size) for unit in setting]
    try:
        _run_lanes(run, lanes)
    finally:  # a run stopped by an error (a failed write) leaves no worker behind
        for lane in lanes:
            if lane.worker is not None:
                lane.worker.close()


def _run_lanes(run: _Run, lanes: list[_Lane]) -> None:
    baseline = next((lane for lane in lanes if lane.unit.is_baseline), None)
    others = [lane for lane in lanes if not lane.unit.is_baseline and lane.pending]
    for lane in [lane for lane in others if lane.unit.program is None or lane.unit.label in run.rejected]:
        status, reason = ((schema.STATUS_MISSING, f"submission {lane.unit.submission!r} has no program for task "
                                                  f"{lane.unit.unit_id}") if lane.unit.program is None else
                          (schema.STATUS_REJECTED, run.rejected[lane.unit.label]))
        for index in sorted(lane.pending):
            _record(run, lane, index, status, reason)
        others.remove(lane)
    # The baseline runs every round that any unit needs, so every row has a same-round reference latency.
    needed = set().union(*(lane.pending for lane in others), baseline.pending if baseline else set())
    if not needed:
        return
    reference: dict[int, float] = {}  # round -> the baseline's latency in that round (in the current group)
    if run.options.timing == "sequential":
        for lane in ([baseline] if baseline else []) + others:
            _run_group(run, [lane], needed if lane is baseline else lane.pending, reference)
        return
    while True:
        group = [baseline] if baseline else []
        capacity = _load(run, group, reference)
        take = max(1, resident_limit(run.options.max_resident, capacity, len(lanes)) - len(group))
        group, others = group + others[:take], others[take:]
        _load(run, group, reference)
        _run_group(run, group, set().union(*(lane.pending for lane in group)), reference)
        if not others:
            return


def resident_limit(max_resident: int | None, capacity: int | None, lanes: int) -> int:
    """How many pipelines a group may hold: ``--max-resident`` bounds what the device was measured to hold
    (``capacity``, None when unknown); with neither, every lane."""
    return min(limit for limit in (max_resident, capacity, lanes) if limit is not None)


def _lane(run: _Run, unit: plan.Unit, batch_size: int) -> _Lane:
    task, model = unit.task, run.catalog.models[unit.task.model]
    batches = plan.build_batches(run.suite_id, unit, run.prompts, run.seeds, [batch_size])
    pending = {index for index, batch in enumerate(batches)
               if any(image.record_id not in run.done for image in batch.images)}
    resolution = run.sources.resolution(task.model)
    base = {**run.context, "variant": unit.variant, "submission": unit.submission, "unit_id": unit.unit_id,
            "task_id": unit.task_id, "setting_id": task.setting_id,
            "program_sha256": unit.program.sha256 if unit.program is not None else None, "model": task.model,
            "scheduler": task.scheduler, "steps": task.steps, "method": "none" if unit.is_baseline else task.method,
            "method_params": json.dumps({} if unit.is_baseline else task.params, sort_keys=True),
            "dtype": resolve_dtype(run.dtype_policy, model, run.device), "height": resolution, "width": resolution}
    return _Lane(unit, batches, pending, base, resolution)


def _load(run: _Run, lanes: list[_Lane], reference: dict[int, float]) -> int | None:
    """Start a worker for every lane that has none (and has not failed) and warm it up. Returns how many
    pipelines like the first one fit on the device (CUDA), None when unknown."""
    capacity = None
    for lane in lanes:
        if lane.worker is None and lane.failure is None:
            _start(run, lane)
            if lane.worker is not None:
                fits = _warm_up(run, lane, reference)
                capacity = fits if capacity is None else capacity
    return capacity


def _run_group(run: _Run, lanes: list[_Lane], rounds: set[int], reference: dict[int, float]) -> None:
    """Run ``rounds`` round-robin over the loaded ``lanes`` (baseline first), then stop their workers. The
    baseline renders every round; any other lane only its pending ones."""
    _load(run, lanes, reference)
    if lanes and lanes[0].unit.is_baseline:
        reference.clear()  # a fresh baseline worker: references come from this group only
    for index in sorted(rounds):
        if run.options.before_round is not None:
            run.options.before_round(index)
        for lane in lanes:
            if lane.unit.is_baseline or index in lane.pending:
                _run_batch(run, lane, index, reference)
        run.writer.flush()  # now, with no timed call running: none shares the host with encoding
    for lane in lanes:
        if lane.worker is not None:
            lane.worker.close()
            lane.worker = None
        if lane.unit.is_baseline:
            lane.failure = None  # the next group starts a fresh baseline worker


def _start(run: _Run, lane: _Lane) -> None:
    unit = lane.unit
    program_path = run.writer.directory / schema.PROGRAMS_DIR / f"{unit.program.sha256}.py"
    if not program_path.exists():  # every program that produces rows is kept, by content hash
        dataset.write_bytes_atomic(program_path, unit.program.source.encode())
    lane.base["model_source"] = run.sources.path(unit.task.model)
    log_name = _file_name(f"{unit.variant}--{unit.unit_id}--bs{lane.batches[0].batch_size}")
    lane.worker = ProgramWorker(unit.program.source, model_path=lane.base["model_source"], device=run.device,
                                dtype=lane.base["dtype"], log_path=run.writer.directory / schema.LOGS_DIR /
                                f"{log_name}.log", name=log_name, load_timeout=run.options.load_timeout,
                                max_images=lane.batches[0].batch_size, max_resolution=lane.resolution,
                                sandbox=run.options.sandbox, threads=run.threads, cores=run.worker_cores)
    try:
        lane.worker.start()
    except WorkerFailure as failure:
        _give_up(run, lane, failure, failure.reason)


WARMUP_ROUND = -1  # reference key of the baseline's last warm-up batch: sets the first calls' time limit


def _warm_up(run: _Run, lane: _Lane, reference: dict[int, float]) -> int | None:
    """Untimed batches on prompts and seeds no timed batch uses; returns the device's capacity in pipelines
    like this one (CUDA only), from the free memory and the footprint of a warm-up batch.

    A GT's and a gated submission's first warm-up batch is traced (one extra untimed batch when there are no
    warm-ups): on the real model, a submission must compute what its task's GT computed on the same batch, or
    its rows are 'rejected' (a program can behave on the gate's tiny model and cut corners on the real one)."""
    size = lane.batches[0].batch_size
    prompts = [WARMUP_PROMPT.format(index=index) for index in range(size)]
    traced = lane.unit.variant == schema.GT or _gated(run, lane.unit)
    capacity = None
    for attempt in range(max(run.warmups, 1 if traced else 0)):
        try:
            reply = lane.worker.generate(prompts, [WARMUP_SEED] * size, lane.resolution, lane.resolution,
                                         timeout=_call_timeout(run, reference), trace=traced and attempt == 0,
                                         memory=True)
        except WorkerFailure as failure:
            # A call that failed halfway can leave the program in a state that fails later calls another way
            # (diffusers' SDXL leaves its VAE upcast to float32 when decoding raises): the first failure is the
            # one to record.
            _give_up(run, lane, failure, f"warm-up: {failure.reason}")
            return None
        if attempt == 0 and traced:
            if lane.unit.variant == schema.GT:
                run.gt_traces[(lane.unit.task.id, size)] = reply.trace
            elif not _same_computation_as_gt(run, lane, reply.trace):
                return None
        if lane.unit.is_baseline:
            reference[WARMUP_ROUND] = reply.latency_s
        if reply.footprint_bytes and reply.free_memory_bytes is not None:
            # Each worker keeps what its allocator reserved at its peak: that, not the allocated peak, is what
            # another pipeline like this one needs.
            capacity = 1 + int(reply.free_memory_bytes * MEMORY_HEADROOM // reply.footprint_bytes)
    return capacity


def _gated(run: _Run, unit: plan.Unit) -> bool:
    return unit.submission is not None and run.options.gate != "none"


def _same_computation_as_gt(run: _Run, lane: _Lane, trace: dict | None) -> bool:
    """Compare a submission's traced warm-up batch with its task's GT's on the real model (when the GT ran in
    this run); a difference rejects the program before any timed batch."""
    from accelbench.builder.trace import compare_traces

    expected = run.gt_traces.get((lane.unit.task.id, lane.batches[0].batch_size))
    if expected is None:
        return True  # the GT is not part of this run: the gate's verdict on the tiny model stands
    difference = compare_traces(expected, trace) if trace is not None else "no execution trace"
    if difference is None:
        return True
    reason = f"gate (real model): spec: {difference}"
    run.rejected[lane.unit.label] = reason
    _give_up(run, lane, WorkerFailure(schema.STATUS_REJECTED, reason), reason)
    return False


def _give_up(run: _Run, lane: _Lane, failure: WorkerFailure, reason: str) -> None:
    """The lane ends before any timed batch: its worker is stopped and every pending row gets the failure now."""
    if lane.worker is not None:
        lane.worker.close()
    lane.failure, lane.worker = failure, None
    for index in sorted(lane.pending):
        _record(run, lane, index, failure.status, reason)


def _call_timeout(run: _Run, reference: dict[int, float]) -> float:
    if run.options.call_timeout is not None:
        return run.options.call_timeout
    if not reference:
        return DEFAULT_CALL_TIMEOUT_S
    return max(MIN_CALL_TIMEOUT_S, CALL_TIMEOUT_FACTOR * statistics.median(reference.values()))


def _run_batch(run: _Run, lane: _Lane, index: int, reference: dict[int, float]) -> None:
    batch = lane.batches[index]
    if lane.failure is not None:
        if index in lane.pending:
            _record(run, lane, index, lane.failure.status, f"not run: {lane.failure.reason}")
        return
    if lane.worker is None:
        return
    started_at = _utc_now()
    try:
        reply = lane.worker.generate(batch.prompts, [image.image_seed for image in batch.images], lane.resolution,
                                     lane.resolution, timeout=_call_timeout(run, reference))
    except WorkerFailure as failure:
        if not lane.worker.alive:
            lane.failure, lane.worker = failure, None
        if index in lane.pending:
            _record(run, lane, index, failure.status, failure.reason, started_at=started_at, finished_at=_utc_now())
        return
    finished_at = _utc_now()
    if lane.unit.is_baseline:
        reference[index] = reply.latency_s
        if index not in lane.pending:  # already stored: a re-render for this group's rounds
            _check_rerender(run, batch, reply.pixels, lane.unit.label)
            return
        for image, picture in zip(batch.images, reply.pixels):  # what a later group's re-render must match
            run.stored[image.record_id] = pixel_sha256(picture)
    _record(run, lane, index, schema.STATUS_OK, reply=reply, reference=reference.get(index), started_at=started_at,
            finished_at=finished_at)


def _check_rerender(run: _Run, batch: plan.Batch, pixels, label: str) -> None:
    run.baseline_rerenders += 1
    for image, picture in zip(batch.images, pixels):
        stored = run.stored.get(image.record_id)
        if stored is not None and stored != pixel_sha256(picture):
            run.baseline_mismatches.append(f"{label}: the re-rendered image {image.record_id} differs from "
                                           f"the stored one (seed {batch.seed}, prompt {image.prompt_index})")


def _record(run: _Run, lane: _Lane, index: int, status: str, error: str | None = None, *, reply=None,
            reference: float | None = None, started_at=None, finished_at=None) -> None:
    batch = lane.batches[index]
    rows = []
    for image in batch.images:
        if image.record_id in run.done:
            continue
        row = schema.empty_row(schema.GENERATION_COLUMNS) | lane.base | {
            "record_id": image.record_id, "prompt_index": image.prompt_index, "prompt": image.prompt,
            "seed": batch.seed, "image_seed": image.image_seed, "batch_size": batch.batch_size,
            "batch_index": batch.batch_index, "position": image.position, "round": index, "status": status,
            "error": error, "started_at": started_at, "finished_at": finished_at,
        }
        if reply is not None:
            row |= {"batch_latency_s": reply.latency_s, "image_latency_s": reply.latency_s / len(batch.images),
                    "baseline_latency_s": reply.latency_s if lane.unit.is_baseline else reference,
                    "peak_memory_bytes": reply.peak_memory_bytes, "timer": "harness", **reply.stages}
        rows.append(row)
    positions = [image.position for image in batch.images if image.record_id not in run.done]
    pixels = reply.pixels[positions] if reply is not None else None
    if status != schema.STATUS_OK and rows:
        run.failed_rows += len(rows)
        run.reference_failed_rows += len(rows) if lane.unit.submission is None else 0
        run.failures.setdefault(lane.unit.label, error)
    run.writer.submit(rows, pixels)
    run.progress.update(len(rows))
    run.done.update(row["record_id"] for row in rows)
    lane.pending.discard(index)
