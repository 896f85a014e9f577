"""A lane: one unit's batches at one batch size, in a worker of its own. Starting the worker, its warm-ups, one
timed batch, a replay for the audit, and handing rows to the writer (:mod:`accelbench.builder.rounds` decides
which lane runs when)."""

from __future__ import annotations

import logging
import re
import statistics
from dataclasses import dataclass, field

import numpy as np

from accelbench import dataset, schema
from accelbench.builder import plan
from accelbench.builder.context import RunContext, RunState
from accelbench.builder.encode import pixel_sha256
from accelbench.builder.host import resolve_dtype
from accelbench.builder.rows import batch_rows, unit_columns, utc_now
from accelbench.builder.worker import DEFAULT_CALL_TIMEOUT_S, ProgramWorker, Reply, WorkerFailure

log = logging.getLogger("accelbench")

WARMUP_ROUND = -1  # reference key of the baseline's last warm-up batch: sets the first calls' time limit
MIN_CALL_TIMEOUT_S = 60.0
CALL_TIMEOUT_FACTOR = 10  # a call may take this many times the baseline's median batch latency
MEMORY_HEADROOM = 0.85  # fraction of the free GPU memory the resident pipelines may fill


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
    audited: bool = False  # a gated submission: its timed batches are audited, its rows held until it passed
    worker: ProgramWorker | None = None
    failure: WorkerFailure | None = None  # set once the worker is gone: the rest of its rounds get this
    needed: set[int] = field(default_factory=set)  # the rounds it runs: its own, and those it is a reference for
    timed: dict[int, np.ndarray] = field(default_factory=dict)  # audited: round -> the pixels its timed call gave
    # round -> (its batch latency, the baseline's latency in that round) of every batch it ran
    latencies: dict[int, tuple[float, float | None]] = field(default_factory=dict)
    hold: str = ""  # the writer's label for its held rows: one per lane, so a lane's rows can be dropped alone

    @property
    def batch_size(self) -> int:
        return self.batches[0].batch_size


def make_lane(context: RunContext, state: RunState, unit: plan.Unit, batch_size: int, repeat: int = 0) -> Lane:
    batches = plan.build_batches(context.suite_id, unit, context.prompts, context.seeds, [batch_size],
                                 context.seed_key, repeat)
    pending = {index for index, batch in enumerate(batches)
               if any(image.record_id not in state.done for image in batch.images)}
    resolution = context.sources.resolution(unit.task.model)
    dtype = resolve_dtype(context.dtype_policy, context.catalog.models[unit.task.model], context.device)
    return Lane(unit, batches, pending, unit_columns(context.columns, unit, dtype, resolution), resolution,
                audited=context.is_gated(unit), hold=f"{unit.label}|bs{batch_size}|r{repeat}")


def start(context: RunContext, state: RunState, lane: Lane) -> None:
    unit = lane.unit
    program_path = context.writer.directory / schema.PROGRAMS_DIR / f"{unit.program.sha256}.py"
    if not program_path.exists():  # every program that produces rows is kept, by content hash
        dataset.write_bytes_atomic(program_path, unit.program.source.encode())
    lane.base["model_source"] = context.sources.path(unit.task.model)
    log_name = file_name(f"{unit.variant}--{unit.unit_id}--bs{lane.batch_size}")
    lane.worker = ProgramWorker(unit.program.source, model_path=lane.base["model_source"], device=context.device,
                                dtype=lane.base["dtype"], log_path=context.writer.directory / schema.LOGS_DIR /
                                f"{log_name}.log", load_timeout=context.options.load_timeout,
                                max_images=lane.batch_size, max_resolution=lane.resolution,
                                sandbox=context.options.sandbox, threads=context.threads,
                                cores=context.worker_cores, device_quiet=context.device_quiet)
    try:
        lane.worker.start()
    except WorkerFailure as failure:
        give_up(context, state, lane, failure, failure.reason)
        return
    if state.confinement is None:  # the host allows confinement or not: said once, recorded in the run record
        confinement = lane.worker.confinement
        state.confinement = {"confined": confinement.confined, "reason": confinement.reason}
        if not confinement.confined:
            log.warning("workers run unconfined: %s; each is still frozen while it is not called, but can see "
                        "the harness and its siblings (see the README's isolation section)", confinement.reason)


def warm_up(context: RunContext, state: RunState, lane: Lane, reference: dict[int, float]) -> int | None:
    """Untimed batches on the run's prompts with seeds no timed batch uses; returns the device's capacity in
    pipelines like this one (CUDA only), from the free memory and the footprint of a warm-up batch.

    A GT's and a gated submission's first warm-up batch is traced (one extra untimed batch when there are no
    warm-ups): on the real model, a submission must compute what its task's GT computed on the same batch, or
    its rows are 'rejected' (a program can behave on the gate's tiny model and cut corners on the real one)."""
    from accelbench.builder.gate.judge import real_model_difference, real_model_violation

    prompts, seeds = state.warmup_inputs(lane.unit.task.setting_id, lane.batch_size, context.prompts)
    # The baseline's trace is what target tasks' submissions are checked against.
    traced = (lane.unit.variant == schema.GT or lane.audited
              or (lane.unit.is_baseline and lane.unit.task.setting_id in state.target_settings))
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
            give_up(context, state, lane, failure, f"warm-up: {failure.reason}")
            return None
        if attempt == 0:
            lane.base["first_call_latency_s"] = reply.latency_s
        if attempt == 0 and traced:
            key, target = (lane.unit.task.id, lane.batch_size), lane.unit.task.target
            if lane.unit.is_baseline:
                state.baseline_traces[(lane.unit.task.setting_id, lane.batch_size)] = reply.trace
                reason = None
            elif lane.unit.variant == schema.GT:
                state.gt_traces[key] = reply.trace
                reason = None
            elif target is not None:
                reason = real_model_violation(state.baseline_traces.get((lane.unit.task.setting_id, lane.batch_size)),
                                              reply.trace, target.fixed)
            else:
                reason = real_model_difference(state.gt_traces.get(key), reply.trace)
            if reason is not None:
                state.rejected[lane.unit.label] = reason
                give_up(context, state, lane, WorkerFailure(schema.STATUS_REJECTED, reason), reason)
                return None
        if lane.unit.is_baseline:
            reference[WARMUP_ROUND] = reply.latency_s
        if reply.footprint_bytes and reply.free_memory_bytes is not None:
            # Each worker keeps what its allocator reserved at its peak: that, not the allocated peak, is what
            # another pipeline like this one needs.
            capacity = 1 + int(reply.free_memory_bytes * MEMORY_HEADROOM // reply.footprint_bytes)
    return capacity


def give_up(context: RunContext, state: RunState, lane: Lane, failure: WorkerFailure, reason: str) -> None:
    """The lane ends before any timed batch: its worker is stopped and every pending row gets the failure now."""
    if lane.worker is not None:
        lane.worker.close()
    lane.failure, lane.worker = failure, None
    for index in sorted(lane.pending):
        record(context, state, lane, index, failure.status, reason)


def call_timeout(context: RunContext, reference: dict[int, float]) -> float:
    if context.options.call_timeout is not None:
        return context.options.call_timeout
    if not reference:
        return DEFAULT_CALL_TIMEOUT_S
    return max(MIN_CALL_TIMEOUT_S, CALL_TIMEOUT_FACTOR * statistics.median(reference.values()))


def run_batch(context: RunContext, state: RunState, lane: Lane, index: int, reference: dict[int, float]
              ) -> Reply | None:
    """Time round ``index`` of ``lane`` and record it (a round it only re-renders as a reference is checked
    against what is stored); returns the reply, None when the lane has no worker or the call failed."""
    batch = lane.batches[index]
    if lane.failure is not None:
        if index in lane.pending:
            record(context, state, lane, index, lane.failure.status, f"not run: {lane.failure.reason}")
        return None
    if lane.worker is None:
        return None
    started_at = utc_now()
    try:
        reply = lane.worker.generate(batch.prompts, [image.image_seed for image in batch.images], lane.resolution,
                                     lane.resolution, timeout=call_timeout(context, reference))
    except WorkerFailure as failure:
        if not lane.worker.alive:
            lane.failure, lane.worker = failure, None
        if index in lane.pending:
            record(context, state, lane, index, failure.status, failure.reason, started_at=started_at,
                   finished_at=utc_now())
        return None
    finished_at = utc_now()
    if lane.unit.is_baseline:
        reference[index] = reply.latency_s
    lane.latencies[index] = (reply.latency_s, reference.get(index))
    if index not in lane.pending:  # already stored: a re-render for this group's rounds
        check_rerender(state, batch, reply.pixels, lane.unit.label)
        return reply
    for image, picture in zip(batch.images, reply.pixels):  # what a later re-render must match
        state.stored[image.record_id] = pixel_sha256(picture)
    record(context, state, lane, index, schema.STATUS_OK, reply=reply, reference=reference.get(index),
           started_at=started_at, finished_at=finished_at)
    return reply


def replay(lane: Lane, index: int, timeout: float) -> Reply | WorkerFailure:
    """Round ``index`` of ``lane`` rendered again, traced and untimed (the audit's replay)."""
    batch = lane.batches[index]
    try:
        return lane.worker.generate(batch.prompts, [image.image_seed for image in batch.images], lane.resolution,
                                    lane.resolution, timeout=timeout, trace=True)
    except WorkerFailure as failure:
        if not lane.worker.alive:
            lane.worker = None
        return failure


def check_rerender(state: RunState, batch: plan.Batch, pixels, label: str) -> None:
    state.baseline_rerenders += 1
    for image, picture in zip(batch.images, pixels):
        stored = state.stored.get(image.record_id)
        if stored is not None and stored != pixel_sha256(picture):
            state.baseline_mismatches.append(f"{label}: the re-rendered image {image.record_id} differs from "
                                             f"the stored one (seed {batch.seed}, prompt {image.prompt_index})")


def record(context: RunContext, state: RunState, lane: Lane, index: int, status: str, error: str | None = None,
           *, reply=None, reference: float | None = None, started_at=None, finished_at=None) -> None:
    """Hand the rows of round ``index`` of ``lane`` to the writer and count them; an audited lane's ok rows are
    held back until its setting's audit is over."""
    batch = lane.batches[index]
    rows = batch_rows(lane.base, batch, index, status, error, reply=reply, reference=reference,
                      started_at=started_at, finished_at=finished_at, skip=state.done)
    positions = [image.position for image in batch.images if image.record_id not in state.done]
    pixels = reply.pixels[positions] if reply is not None else None
    if status != schema.STATUS_OK and rows:
        count_failures(state, lane.unit, len(rows), error)
    held = lane.audited and status == schema.STATUS_OK
    if held:
        lane.timed[index] = reply.pixels
        records = frozenset(row["record_id"] for row in rows)
        state.held.setdefault(lane.unit.label, []).append((lane.hold, lane.base, batch, index, records))
    context.writer.submit(rows, pixels, hold=lane.hold if held else None)
    context.progress.update(len(rows))
    state.done.update(row["record_id"] for row in rows)
    lane.pending.discard(index)


def count_failures(state: RunState, unit: plan.Unit, rows: int, error: str | None) -> None:
    state.failed_rows += rows
    state.reference_failed_rows += rows if unit.submission is None else 0
    state.failures.setdefault(unit.label, error)
