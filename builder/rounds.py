"""The round scheduler: one setting's units at one batch size, each in a worker of its own, timed in rounds.

1. start one worker per unit: each ``load()``s its program once, then runs untimed warm-up batches on prompts and
   seeds that no timed batch uses (a GT's and a gated submission's first one traced: on the real model the two
   must have computed the same thing, :func:`accelbench.builder.gate.judge.real_model_difference`);
2. **interleaved** timing (the default): round ``r`` sends batch ``r`` to the baseline's worker, then to every
   other unit's worker, one at a time on one device, so host drift hits every unit of a round alike; each row
   records the baseline's latency of its round (``baseline_latency_s``). ``sequential`` runs one unit's batches
   after another (GPUs too small to hold two pipelines);
3. the worker's clock is the harness's (:mod:`accelbench.builder.clock`): request sent -> pixels received; the
   rows of a round are handed to the writer, which encodes them after the round's last call;
4. stop the workers.

When a setting has more units than fit on the device (``--max-resident``), it runs in groups, each with a fresh
baseline worker whose re-rendered baseline images must be bit-identical to the first rendering (a mismatch is
a failure). A failing unit (load error, exception, NaN/inf, out of memory, crash, hang) yields rows with that
status and the setting goes on.
"""

from __future__ import annotations

import logging
import re
import secrets
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from accelbench import schema
from accelbench.builder import plan
from accelbench.builder.encode import pixel_sha256
from accelbench.builder.host import resolve_dtype
from accelbench.builder.options import GATE_NONE, GenerateOptions
from accelbench.builder.rows import batch_rows, unit_columns, utc_now
from accelbench.builder.sources import ModelSources
from accelbench.builder.worker import DEFAULT_CALL_TIMEOUT_S, ProgramWorker, WorkerFailure
from accelbench.builder.writer import ShardWriter
from accelbench.manifest import Catalog

log = logging.getLogger("accelbench")

WARMUP_ROUND = -1  # reference key of the baseline's last warm-up batch: sets the first calls' time limit
MIN_CALL_TIMEOUT_S = 60.0
CALL_TIMEOUT_FACTOR = 10  # a call may take this many times the baseline's median batch latency
MEMORY_HEADROOM = 0.85  # fraction of the free GPU memory the resident pipelines may fill


@dataclass(frozen=True)
class RunContext:
    """What every setting of one generate run shares, fixed once the run starts."""

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
    columns: dict  # the columns that are the same on every row of the run
    writer: ShardWriter
    progress: object  # tqdm
    threads: int
    worker_cores: list[int] | None
    before_round: Callable[[int], None] | None = None  # benchmarks: called before each round of a group

    def is_gated(self, unit: plan.Unit) -> bool:
        """Whether ``unit`` had to pass the gate before it is timed."""
        return unit.submission is not None and self.options.gate != GATE_NONE


@dataclass
class RunState:
    """What the run learns as it goes: what is written, who was rejected, what failed."""

    done: set[str]  # record ids that need no more work
    stored: dict[str, str]  # record_id -> image_sha256 of its ok row: what a re-rendered baseline must match
    rejected: dict[str, str] = field(default_factory=dict)  # unit label -> why the gate rejected it (one line)
    gt_traces: dict[tuple[str, int], dict] = field(default_factory=dict)  # (task, batch size) -> GT warm-up trace
    failed_rows: int = 0
    reference_failed_rows: int = 0  # of baseline and GT programs: these fail the run
    failures: dict[str, str] = field(default_factory=dict)  # unit label -> its first error
    baseline_rerenders: int = 0
    baseline_mismatches: list[str] = field(default_factory=list)
    confinement: dict | None = None  # what the first worker found: {"confined", "reason"}
    _warmups: dict[tuple[str, int], tuple[list[str], list[int]]] = field(default_factory=dict)

    def warmup_inputs(self, setting_id: str, batch_size: int, prompts: list[str]) -> tuple[list[str], list[int]]:
        """The warm-up batch of a setting at a batch size: the run's own prompts with seeds from OS randomness
        (no timed image uses them, and nothing marks a warm-up apart from a timed call), drawn once, so the GT's
        traced warm-up and a submission's see the same batch."""
        key = (setting_id, batch_size)
        if key not in self._warmups:
            draw = secrets.SystemRandom()
            self._warmups[key] = ([draw.choice(prompts) for _ in range(batch_size)],
                                  [draw.getrandbits(63) for _ in range(batch_size)])
        return self._warmups[key]


def file_name(label: str) -> str:
    """A unit label (``gt:task``, ``sub:name:...``) as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label)


@dataclass
class Lane:
    """One unit's batches at one batch size, aligned by round with the other units of its setting."""

    unit: plan.Unit
    batches: list[plan.Batch]
    pending: set[int]  # rounds with at least one image not written yet
    base: dict  # the columns shared by every row of the unit
    resolution: int
    worker: ProgramWorker | None = None
    failure: WorkerFailure | None = None  # set once the worker is gone: the rest of its rounds get this


def run_setting(context: RunContext, state: RunState, setting: list[plan.Unit], batch_size: int) -> None:
    """Every pending batch of ``setting``'s units at ``batch_size``, timed in rounds."""
    lanes = [_lane(context, state, unit, batch_size) for unit in setting]
    try:
        _run_lanes(context, state, lanes)
    finally:  # a run stopped by an error (a failed write) leaves no worker behind
        for lane in lanes:
            if lane.worker is not None:
                lane.worker.close()


def resident_limit(max_resident: int | None, capacity: int | None, lanes: int) -> int:
    """How many pipelines a group may hold: ``--max-resident`` bounds what the device was measured to hold
    (``capacity``, None when unknown); with neither, every lane."""
    return min(limit for limit in (max_resident, capacity, lanes) if limit is not None)


def _lane(context: RunContext, state: RunState, unit: plan.Unit, batch_size: int) -> Lane:
    batches = plan.build_batches(context.suite_id, unit, context.prompts, context.seeds, [batch_size])
    pending = {index for index, batch in enumerate(batches)
               if any(image.record_id not in state.done for image in batch.images)}
    resolution = context.sources.resolution(unit.task.model)
    dtype = resolve_dtype(context.dtype_policy, context.catalog.models[unit.task.model], context.device)
    return Lane(unit, batches, pending, unit_columns(context.columns, unit, dtype, resolution), resolution)


def _run_lanes(context: RunContext, state: RunState, lanes: list[Lane]) -> None:
    baseline = next((lane for lane in lanes if lane.unit.is_baseline), None)
    others = [lane for lane in lanes if not lane.unit.is_baseline and lane.pending]
    for lane in [lane for lane in others if lane.unit.program is None or lane.unit.label in state.rejected]:
        status, reason = ((schema.STATUS_MISSING, f"submission {lane.unit.submission!r} has no program for task "
                                                  f"{lane.unit.unit_id}") if lane.unit.program is None else
                          (schema.STATUS_REJECTED, state.rejected[lane.unit.label]))
        for index in sorted(lane.pending):
            _record(context, state, lane, index, status, reason)
        others.remove(lane)
    # The baseline runs every round that any unit needs, so every row has a same-round reference latency.
    needed = set().union(*(lane.pending for lane in others), baseline.pending if baseline else set())
    if not needed:
        return
    reference: dict[int, float] = {}  # round -> the baseline's latency in that round (in the current group)
    if context.options.timing == "sequential":
        for lane in ([baseline] if baseline else []) + others:
            _run_group(context, state, [lane], needed if lane is baseline else lane.pending, reference)
        return
    while True:
        group = [baseline] if baseline else []
        capacity = _load(context, state, group, reference)
        take = max(1, resident_limit(context.options.max_resident, capacity, len(lanes)) - len(group))
        group, others = group + others[:take], others[take:]
        _load(context, state, group, reference)
        _run_group(context, state, group, set().union(*(lane.pending for lane in group)), reference)
        if not others:
            return


def _load(context: RunContext, state: RunState, lanes: list[Lane], reference: dict[int, float]) -> int | None:
    """Start a worker for every lane that has none (and has not failed) and warm it up. Returns how many
    pipelines like the first one fit on the device (CUDA), None when unknown."""
    capacity = None
    for lane in lanes:
        if lane.worker is None and lane.failure is None:
            _start(context, state, lane)
            if lane.worker is not None:
                fits = _warm_up(context, state, lane, reference)
                capacity = fits if capacity is None else capacity
    return capacity


def _run_group(context: RunContext, state: RunState, lanes: list[Lane], rounds: set[int],
               reference: dict[int, float]) -> None:
    """Run ``rounds`` round-robin over the loaded ``lanes`` (baseline first), then stop their workers. The
    baseline renders every round; any other lane only its pending ones."""
    _load(context, state, lanes, reference)
    if lanes and lanes[0].unit.is_baseline:
        reference.clear()  # a fresh baseline worker: references come from this group only
    for index in sorted(rounds):
        if context.before_round is not None:
            context.before_round(index)
        for lane in lanes:
            if lane.unit.is_baseline or index in lane.pending:
                _run_batch(context, state, lane, index, reference)
        context.writer.flush()  # now, with no timed call running: none shares the host with encoding
    for lane in lanes:
        if lane.worker is not None:
            lane.worker.close()
            lane.worker = None
        if lane.unit.is_baseline:
            lane.failure = None  # the next group starts a fresh baseline worker


def _start(context: RunContext, state: RunState, lane: Lane) -> None:
    from accelbench import dataset

    unit = lane.unit
    program_path = context.writer.directory / schema.PROGRAMS_DIR / f"{unit.program.sha256}.py"
    if not program_path.exists():  # every program that produces rows is kept, by content hash
        dataset.write_bytes_atomic(program_path, unit.program.source.encode())
    lane.base["model_source"] = context.sources.path(unit.task.model)
    log_name = file_name(f"{unit.variant}--{unit.unit_id}--bs{lane.batches[0].batch_size}")
    lane.worker = ProgramWorker(unit.program.source, model_path=lane.base["model_source"], device=context.device,
                                dtype=lane.base["dtype"], log_path=context.writer.directory / schema.LOGS_DIR /
                                f"{log_name}.log", load_timeout=context.options.load_timeout,
                                max_images=lane.batches[0].batch_size, max_resolution=lane.resolution,
                                sandbox=context.options.sandbox, threads=context.threads,
                                cores=context.worker_cores)
    try:
        lane.worker.start()
    except WorkerFailure as failure:
        _give_up(context, state, lane, failure, failure.reason)
        return
    if state.confinement is None:  # the host allows confinement or not: said once, recorded in the run record
        confinement = lane.worker.confinement
        state.confinement = {"confined": confinement.confined, "reason": confinement.reason}
        if not confinement.confined:
            log.warning("workers run unconfined: %s; each is still frozen while it is not called, but can see "
                        "the harness and its siblings (see the README's isolation section)", confinement.reason)


def _warm_up(context: RunContext, state: RunState, lane: Lane, reference: dict[int, float]) -> int | None:
    """Untimed batches on prompts and seeds no timed batch uses; returns the device's capacity in pipelines
    like this one (CUDA only), from the free memory and the footprint of a warm-up batch.

    A GT's and a gated submission's first warm-up batch is traced (one extra untimed batch when there are no
    warm-ups): on the real model, a submission must compute what its task's GT computed on the same batch, or
    its rows are 'rejected' (a program can behave on the gate's tiny model and cut corners on the real one)."""
    from accelbench.builder.gate.judge import real_model_difference

    size = lane.batches[0].batch_size
    prompts, seeds = state.warmup_inputs(lane.unit.task.setting_id, size, context.prompts)
    traced = lane.unit.variant == schema.GT or context.is_gated(lane.unit)
    capacity = None
    for attempt in range(max(context.warmups, 1 if traced else 0)):
        try:
            reply = lane.worker.generate(prompts, seeds, lane.resolution, lane.resolution,
                                         timeout=context.options.warmup_timeout, trace=traced and attempt == 0,
                                         memory=True)
        except WorkerFailure as failure:
            # A call that failed halfway can leave the program in a state that fails later calls another way
            # (diffusers' SDXL leaves its VAE upcast to float32 when decoding raises): the first failure is the
            # one to record.
            _give_up(context, state, lane, failure, f"warm-up: {failure.reason}")
            return None
        if attempt == 0 and traced:
            key = (lane.unit.task.id, size)
            if lane.unit.variant == schema.GT:
                state.gt_traces[key] = reply.trace
            elif (reason := real_model_difference(state.gt_traces.get(key), reply.trace)) is not None:
                state.rejected[lane.unit.label] = reason
                _give_up(context, state, lane, WorkerFailure(schema.STATUS_REJECTED, reason), reason)
                return None
        if attempt == 0:
            lane.base["first_call_latency_s"] = reply.latency_s
        if lane.unit.is_baseline:
            reference[WARMUP_ROUND] = reply.latency_s
        if reply.footprint_bytes and reply.free_memory_bytes is not None:
            # Each worker keeps what its allocator reserved at its peak: that, not the allocated peak, is what
            # another pipeline like this one needs.
            capacity = 1 + int(reply.free_memory_bytes * MEMORY_HEADROOM // reply.footprint_bytes)
    return capacity


def _give_up(context: RunContext, state: RunState, lane: Lane, failure: WorkerFailure, reason: str) -> None:
    """The lane ends before any timed batch: its worker is stopped and every pending row gets the failure now."""
    if lane.worker is not None:
        lane.worker.close()
    lane.failure, lane.worker = failure, None
    for index in sorted(lane.pending):
        _record(context, state, lane, index, failure.status, reason)


def _call_timeout(context: RunContext, reference: dict[int, float]) -> float:
    if context.options.call_timeout is not None:
        return context.options.call_timeout
    if not reference:
        return DEFAULT_CALL_TIMEOUT_S
    return max(MIN_CALL_TIMEOUT_S, CALL_TIMEOUT_FACTOR * statistics.median(reference.values()))


def _run_batch(context: RunContext, state: RunState, lane: Lane, index: int, reference: dict[int, float]) -> None:
    batch = lane.batches[index]
    if lane.failure is not None:
        if index in lane.pending:
            _record(context, state, lane, index, lane.failure.status, f"not run: {lane.failure.reason}")
        return
    if lane.worker is None:
        return
    started_at = utc_now()
    try:
        reply = lane.worker.generate(batch.prompts, [image.image_seed for image in batch.images], lane.resolution,
                                     lane.resolution, timeout=_call_timeout(context, reference))
    except WorkerFailure as failure:
        if not lane.worker.alive:
            lane.failure, lane.worker = failure, None
        if index in lane.pending:
            _record(context, state, lane, index, failure.status, failure.reason, started_at=started_at,
                    finished_at=utc_now())
        return
    finished_at = utc_now()
    if lane.unit.is_baseline:
        reference[index] = reply.latency_s
        if index not in lane.pending:  # already stored: a re-render for this group's rounds
            _check_rerender(state, batch, reply.pixels, lane.unit.label)
            return
        for image, picture in zip(batch.images, reply.pixels):  # what a later group's re-render must match
            state.stored[image.record_id] = pixel_sha256(picture)
    _record(context, state, lane, index, schema.STATUS_OK, reply=reply, reference=reference.get(index),
            started_at=started_at, finished_at=finished_at)


def _check_rerender(state: RunState, batch: plan.Batch, pixels, label: str) -> None:
    state.baseline_rerenders += 1
    for image, picture in zip(batch.images, pixels):
        stored = state.stored.get(image.record_id)
        if stored is not None and stored != pixel_sha256(picture):
            state.baseline_mismatches.append(f"{label}: the re-rendered image {image.record_id} differs from "
                                             f"the stored one (seed {batch.seed}, prompt {image.prompt_index})")


def _record(context: RunContext, state: RunState, lane: Lane, index: int, status: str, error: str | None = None,
            *, reply=None, reference: float | None = None, started_at=None, finished_at=None) -> None:
    """Hand the rows of round ``index`` of ``lane`` to the writer and count them."""
    batch = lane.batches[index]
    rows = batch_rows(lane.base, batch, index, status, error, reply=reply, reference=reference,
                      started_at=started_at, finished_at=finished_at, skip=state.done)
    positions = [image.position for image in batch.images if image.record_id not in state.done]
    pixels = reply.pixels[positions] if reply is not None else None
    if status != schema.STATUS_OK and rows:
        state.failed_rows += len(rows)
        state.reference_failed_rows += len(rows) if lane.unit.submission is None else 0
        state.failures.setdefault(lane.unit.label, error)
    context.writer.submit(rows, pixels)
    context.progress.update(len(rows))
    state.done.update(row["record_id"] for row in rows)
    lane.pending.discard(index)
