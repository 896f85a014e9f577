"""The round scheduler: one setting's units at one batch size, each in a worker of its own, timed in rounds.

1. start one worker per unit (:mod:`accelbench.builder.lanes`): each ``load()``s its program once, then runs
   untimed warm-up batches (a GT's and a gated submission's first one traced and compared);
2. **interleaved** timing (the default): round ``r`` sends batch ``r`` to the baseline's worker, then to every
   other unit's worker, one at a time on one device, the others frozen, so host drift hits every unit of a round
   alike; each row records the baseline's latency of its round (``baseline_latency_s``). ``sequential`` runs one
   unit's batches after another (GPUs too small to hold two pipelines);
3. after each round, every timed image of a gated submission is compared with its task's GT image of the same
   inputs, and after a group's rounds a sample of its timed batches is replayed under the tracer
   (:mod:`accelbench.builder.audit`); the rows of a round are handed to the writer, which encodes them after the
   round's last call;
4. stop the workers; a gated submission faster than its GT beyond the rounds' noise is then timed again, alone
   beside a fresh baseline (:func:`_retime_beyond_the_gt`).

References run whatever their dependants need: the baseline every round of its setting, a task's GT every round
its submissions run. When a setting has more units than fit on the device (``--max-resident``), it runs in
groups, each with a fresh baseline worker; a reference's re-rendered images must be bit-identical to its first
rendering (a mismatch is a failure). A failing unit (load error, exception, NaN/inf, out of memory, crash, hang)
yields rows with that status and the setting goes on.
"""

from __future__ import annotations

import secrets
import time

from accelbench import schema
from accelbench.builder import lanes as lane_ops
from accelbench.builder import plan
from accelbench.builder.context import RunContext, RunState
from accelbench.builder.lanes import Lane
from accelbench.builder.rows import batch_rows
from accelbench.builder.worker import WorkerFailure


def run_setting(context: RunContext, state: RunState, setting: list[plan.Unit], batch_size: int,
                repeat: int = 0) -> None:
    """Every pending batch of ``setting``'s units at ``batch_size`` in ``repeat``, timed in rounds and audited.
    With several repeats, each takes the units after the baseline in an order of its own (OS randomness; recorded
    in the run record): no unit is always timed right after the baseline, or last."""
    units = list(setting)
    if context.repeats > 1:  # the baseline still goes first in every round (_run_lanes picks it out)
        units = secrets.SystemRandom().sample(units, len(units))
        timed_order = sorted(units, key=lambda unit: not unit.is_baseline)  # stable: the others keep their draw
        state.lane_orders.append({"repeat": repeat, "setting": setting[0].task.setting_id, "batch_size": batch_size,
                                  "order": [unit.label for unit in timed_order]})
    lanes = [lane_ops.make_lane(context, state, unit, batch_size, repeat) for unit in units]
    try:
        _run_lanes(context, state, lanes)
        _retime_beyond_the_gt(context, state, lanes, batch_size, repeat)
    finally:  # a run stopped by an error (a failed write) leaves no worker behind
        for lane in lanes:
            if lane.worker is not None:
                lane.worker.close()
        state.audit.forget(batch_size)


def resident_limit(max_resident: int | None, capacity: int | None, lanes: int) -> int:
    """How many pipelines a group may hold: ``--max-resident`` bounds what the device was measured to hold
    (``capacity``, None when unknown); with neither, every lane."""
    return min(limit for limit in (max_resident, capacity, lanes) if limit is not None)


def _run_lanes(context: RunContext, state: RunState, lanes: list[Lane]) -> None:
    baseline = next((lane for lane in lanes if lane.unit.is_baseline), None)
    others = [lane for lane in lanes if not lane.unit.is_baseline]
    for lane in [lane for lane in others if lane.pending and
                 (lane.unit.program is None or lane.unit.label in state.rejected)]:
        status, reason = ((schema.STATUS_MISSING, f"submission {lane.unit.submission!r} has no program for task "
                                                  f"{lane.unit.unit_id}") if lane.unit.program is None else
                          (schema.STATUS_REJECTED, state.rejected[lane.unit.label]))
        for index in sorted(lane.pending):
            lane_ops.record(context, state, lane, index, status, reason)
    runnable = [lane for lane in others if lane.pending]
    gts = {lane.unit.task_id: lane for lane in others if lane.unit.variant == schema.GT}
    for lane in runnable:
        lane.needed = set(lane.pending)
    for lane in runnable:  # a task's GT renders what its audited submissions render: their reference
        gt = gts.get(lane.unit.task_id)
        if lane.audited and gt is not None and gt.unit.program is not None:
            gt.needed |= lane.pending
    others = [lane for lane in others if lane.needed]
    if baseline is not None:  # every row gets a same-round reference latency
        baseline.needed = set().union(baseline.pending, *(lane.needed for lane in others))
    if not (others or (baseline is not None and baseline.needed)):
        return
    reference: dict[int, float] = {}  # round -> the baseline's latency in that round (in the current group)
    if context.options.timing == "sequential":
        for lane in ([baseline] if baseline else []) + others:
            _run_group(context, state, [lane], reference)
        return
    while True:
        group = [baseline] if baseline else []
        capacity = _load(context, state, group, reference)
        take = max(1, resident_limit(context.options.max_resident, capacity, len(lanes)) - len(group))
        group, others = group + others[:take], others[take:]
        _run_group(context, state, group, reference)
        if not others:
            return


def _load(context: RunContext, state: RunState, lanes: list[Lane], reference: dict[int, float]) -> int | None:
    """Start a worker for every lane that has none (and has not failed) and warm it up. Returns how many
    pipelines like the first one fit on the device (CUDA), None when unknown."""
    capacity = None
    for lane in lanes:
        if lane.worker is None and lane.failure is None:
            lane_ops.start(context, state, lane)
            if lane.worker is not None:
                fits = lane_ops.warm_up(context, state, lane, reference)
                capacity = fits if capacity is None else capacity
    return capacity


def _run_group(context: RunContext, state: RunState, lanes: list[Lane], reference: dict[int, float]) -> None:
    """Run the rounds the loaded ``lanes`` need (baseline first, round-robin), audit them, then stop their
    workers."""
    _load(context, state, lanes, reference)
    if lanes and lanes[0].unit.is_baseline:
        reference.clear()  # a fresh baseline worker: references come from this group only
    for index in sorted(set().union(*(lane.needed for lane in lanes))):
        if context.before_round is not None:
            context.before_round(index)
        replies = {}
        for lane in lanes:
            if index in lane.needed:
                replies[lane.unit.label] = lane_ops.run_batch(context, state, lane, index, reference)
        _compare_with_the_gt(context, state, lanes, index, replies)
        context.writer.flush()  # now, with no timed call running: none shares the host with encoding
    _audit(context, state, lanes, reference)
    for lane in lanes:
        if lane.worker is not None:
            lane.worker.close()
            lane.worker = None
        if lane.unit.is_baseline:
            lane.failure = None  # the next group starts a fresh baseline worker


def _compare_with_the_gt(context: RunContext, state: RunState, lanes: list[Lane], index: int,
                         replies: dict) -> None:
    """Keep the GTs' images of round ``index``; reject an audited submission whose timed images of it are not
    within its task's tolerance of the GT's images of the same inputs."""
    from accelbench.builder.gate.judge import timed_difference

    for lane in lanes:
        reply = replies.get(lane.unit.label)
        if lane.unit.variant == schema.GT and reply is not None:
            state.audit.reference_pixels[(lane.unit.task_id, lane.batch_size, index)] = reply.pixels
    for lane in lanes:
        reference = state.audit.reference_pixels.get((lane.unit.task_id, lane.batch_size, index))
        if not lane.audited or index not in lane.timed or reference is None or lane.unit.task.target is not None:
            continue  # a target task's images are not its reference's: the scorer judges their quality
        difference = timed_difference(lane.timed[index], reference, _tolerance(context, lane))
        if difference is not None:
            _reject(state, lane, f"audit: timed batch {_where(lane, index)}: {difference}")


def _audit(context: RunContext, state: RunState, lanes: list[Lane], reference: dict[int, float]) -> None:
    """Replay a sample of the group's timed rounds under the tracer: the GTs first (the reference traces), then
    each audited submission (its timed pixels and the GT's trace)."""
    from accelbench.builder.gate.judge import pixel_difference, replay_difference, target_replay_difference
    from accelbench.builder.gate.tolerance import Tolerance

    audit = state.audit
    timeout = lane_ops.call_timeout(context, reference)
    for lane in [lane for lane in lanes if lane.unit.variant == schema.GT and lane.worker is not None]:
        timed = {index for index in lane.needed
                 if (lane.unit.task_id, lane.batch_size, index) in audit.reference_pixels}
        if not timed:
            continue
        started, rounds, spread = time.perf_counter(), audit.sample(lane.unit.task_id, lane.batch_size, timed), (0, 0.0)
        for index in rounds:
            key = (lane.unit.task_id, lane.batch_size, index)
            result = lane_ops.replay(lane, index, timeout)
            if isinstance(result, WorkerFailure):
                break  # no reference trace: its submissions' replays are checked for their own pixels only
            audit.reference_traces[key] = result.trace
            m, mean = pixel_difference(audit.reference_pixels[key], result.pixels)
            spread = (max(spread[0], m), max(spread[1], mean))
        if spread[0]:  # the device itself does not repeat: replays are compared within twice what the GT moved
            audit.nondeterministic[(lane.unit.task_id, lane.batch_size)] = Tolerance(
                min(255, 2 * spread[0]), 2 * spread[1], "twice the GT's own replay spread on this device")
        audit.records.append({"unit": lane.unit.label, "batch_size": lane.batch_size, "rounds": rounds,
                              "seconds": round(time.perf_counter() - started, 3), "replay_max_abs": spread[0],
                              "replay_mean_abs": round(spread[1], 6)})
    baseline_traces = _BaselineReplays(next((lane for lane in lanes if lane.unit.is_baseline), None), timeout)
    for lane in [lane for lane in lanes if lane.audited and lane.timed and lane.worker is not None]:
        started, key = time.perf_counter(), (lane.unit.task_id, lane.batch_size)
        rounds = [index for index in audit.sample(*key, set(lane.timed)) if index in lane.timed]
        target, verdict = lane.unit.task.target, None
        for index in rounds:
            result = lane_ops.replay(lane, index, timeout)
            if isinstance(result, WorkerFailure):
                verdict = f"audit: replay of timed batch {_where(lane, index)}: {result.status}: {result.reason}"
                break
            if target is not None:  # its constraints, against the baseline's replay of the same batch
                difference = target_replay_difference(lane.timed[index], result.pixels, baseline_traces.get(index),
                                                      result.trace, audit.nondeterministic.get(key), target.fixed)
            else:
                difference = replay_difference(lane.timed[index], result.pixels,
                                               audit.reference_traces.get((*key, index)), result.trace,
                                               audit.nondeterministic.get(key))
            if difference is not None:
                verdict = f"audit: timed batch {_where(lane, index)}: {difference}"
                break
        if verdict is not None:
            _reject(state, lane, verdict)
        audit.records.append({"unit": lane.unit.label, "batch_size": lane.batch_size, "rounds": rounds,
                              "seconds": round(time.perf_counter() - started, 3),
                              "passed": lane.unit.label not in audit.rejected,
                              "reason": audit.rejected.get(lane.unit.label)})
        lane.timed.clear()


class _BaselineReplays:
    """The baseline's traces of a group's rounds, replayed on demand (once each): a target task's audited
    replays are checked against them. None where the baseline has no worker or its replay failed."""

    def __init__(self, baseline: Lane | None, timeout: float):
        self.baseline, self.timeout, self.traces = baseline, timeout, {}

    def get(self, index: int) -> dict | None:
        if index not in self.traces:
            alive = self.baseline is not None and self.baseline.worker is not None
            result = lane_ops.replay(self.baseline, index, self.timeout) if alive else None
            self.traces[index] = result.trace if result is not None and not isinstance(result, WorkerFailure) \
                else None
        return self.traces[index]


def _speedup_over_the_gt(lane: Lane, gt: Lane) -> tuple[float | None, float | None, float | None, int]:
    """(value, CI low, CI high, n) of ``lane``'s speedup divided by ``gt``'s over the rounds both were timed in,
    each paired with its own round's baseline latency (the scorer's statistic and interval)."""
    from accelbench.scorer.functional import estimate, speedup_ratio

    rounds = sorted(index for index in lane.latencies.keys() & gt.latencies.keys()
                    if lane.latencies[index][1] is not None and gt.latencies[index][1] is not None)
    samples = [[latencies[index][position] for index in rounds]
               for latencies in (lane.latencies, gt.latencies) for position in (1, 0)]
    return estimate(speedup_ratio, *samples)


def _retime_beyond_the_gt(context: RunContext, state: RunState, lanes: list[Lane], batch_size: int,
                          repeat: int) -> None:
    """A gated submission whose speedup beats its task's GT's by more than the rounds' noise (the 95 % interval of
    the ratio of the two speedups lies above 1; no interval from fewer than 5 common rounds, so no re-timing) is
    timed again in fresh processes, alone beside a fresh baseline worker, and audited again: those rows replace its
    first ones (``timing`` = ``retimed``). A recipe fixes the computation, so beating its GT is either an honest
    implementation gain, which the re-timing confirms, or an artefact of the shared host (a neighbour slowed),
    which it removes."""
    baseline = next((lane for lane in lanes if lane.unit.is_baseline), None)
    gts = {lane.unit.task_id: lane for lane in lanes if lane.unit.variant == schema.GT}
    for lane in lanes:
        gt = gts.get(lane.unit.task_id)
        if (baseline is None or gt is None or not lane.audited or lane.unit.label in state.audit.rejected
                or lane.unit.label in state.rejected or lane.unit.task.target is not None):
            continue  # a target task's reference is one way to meet it: beating it is no artefact
        value, low, high, n = _speedup_over_the_gt(lane, gt)
        if low is None or low <= 1:
            continue
        again = _retime(context, state, lane, baseline.unit, batch_size, repeat)
        state.retimed.append({"unit": lane.unit.label, "batch_size": batch_size, "repeat": repeat, "rounds": n,
                              "speedup_over_gt": [value, low, high],
                              "retimed_speedup_over_gt": _speedup_over_the_gt(again, gt)[0]})


def _retime(context: RunContext, state: RunState, lane: Lane, baseline: plan.Unit, batch_size: int,
            repeat: int) -> Lane:
    """Drop ``lane``'s held rows and time its rounds again beside a fresh baseline; returns the new lane."""
    entries = [entry for entry in state.held.get(lane.unit.label, []) if entry[0] == lane.hold]
    state.held[lane.unit.label] = [entry for entry in state.held[lane.unit.label] if entry[0] != lane.hold]
    context.writer.discard(lane.hold)
    records = frozenset().union(*(entry[4] for entry in entries))
    state.done -= records
    for record_id in records:
        state.stored.pop(record_id, None)
    context.progress.total += len(records)
    again = lane_ops.make_lane(context, state, lane.unit, batch_size, repeat)
    again.base["timing"], again.hold = schema.TIMING_RETIMED, f"{lane.hold}|{schema.TIMING_RETIMED}"
    fresh = lane_ops.make_lane(context, state, baseline, batch_size, repeat)
    again.needed, fresh.needed = set(again.pending), set(again.pending)
    try:
        _run_group(context, state, [fresh, again], {})
    finally:
        for each in (fresh, again):
            if each.worker is not None:
                each.worker.close()
    return again


def _tolerance(context: RunContext, lane: Lane):
    """How close a submission's timed images must be to the GT's: the gate's tolerance for the task on this
    device and dtype (the method's own where its task leaves a freedom)."""
    from accelbench.builder.gate.tolerance import tolerance

    task = lane.unit.task
    return tolerance(task, context.catalog.methods[task.method], context.device.split(":")[0], lane.base["dtype"])


def _where(lane: Lane, index: int) -> str:
    batch = lane.batches[index]
    return (f"{index + 1} of {len(lane.batches)} (seed {batch.seed}, batch size {batch.batch_size}, prompts "
            f"{batch.images[0].prompt_index}-{batch.images[-1].prompt_index})")


def _reject(state: RunState, lane: Lane, reason: str) -> None:
    """The first audit failure of a unit rejects it (its held rows become 'rejected' when its setting ends)."""
    state.audit.rejected.setdefault(lane.unit.label, reason)


def finish_setting(context: RunContext, state: RunState, setting: list[plan.Unit]) -> None:
    """Write the held rows of the setting's audited units: as they were where the audit passed, as 'rejected'
    rows with the audit's reason where it did not."""
    for unit in setting:
        held = state.held.pop(unit.label, [])
        reason = state.audit.rejected.get(unit.label)
        for hold in dict.fromkeys(entry[0] for entry in held):
            (context.writer.release if reason is None else context.writer.discard)(hold)
        if reason is None:
            continue
        rows = [row for _, base, batch, index, records in held
                for row in batch_rows(base, batch, index, schema.STATUS_REJECTED, reason,
                                      skip={image.record_id for image in batch.images} - records)]
        if rows:
            lane_ops.count_failures(state, unit, len(rows), reason)
            context.writer.submit(rows, None)
