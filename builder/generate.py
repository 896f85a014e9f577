"""The generate stage: run every planned batch of this rank's settings in isolated workers and write the dataset.

A *setting* (model, scheduler, steps) groups the units that are timed against each other: its baseline, the
GT program of each of its tasks and each submission's program for those tasks. Per setting, the programs that
must pass the correctness gate (``--gate``: submissions by default) are judged first on the family's tiny
model (:mod:`accelbench.builder.verdicts`); a rejected one is never timed. Then per batch size the round
scheduler (:mod:`accelbench.builder.rounds`) times every unit's batches, interleaved, and the writer
(:mod:`accelbench.builder.writer`) encodes and writes each round after its last call. Batch sizes run in
separate workers, so no worker sees the same (prompt, seed) twice.

A failing unit yields rows with that status and the run goes on; the run fails (exit 1) only when baseline or
GT rows fail.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from accelbench import dataset, schema, task_facts
from accelbench.builder import host, plan, programs, submissions
from accelbench.builder.audit import Audit
from accelbench.builder.context import RunContext, RunState
from accelbench.builder.device_quiet import DeviceQuiet
from accelbench.builder.isolation import hide_from_workers
from accelbench.builder.options import GATE_NONE, GenerateOptions
from accelbench.builder.rounds import finish_setting, run_setting
from accelbench.builder.rows import utc_now
from accelbench.builder.seeding import GENERATOR_DEVICE, new_seed_key
from accelbench.builder.sources import ModelSources
from accelbench.builder.verdicts import gate_setting
from accelbench.builder.writer import ShardWriter
from accelbench.manifest import Catalog

log = logging.getLogger("accelbench")

PNG_SIZE_RATIO = 0.8  # a level-1 PNG of a generated image: about 0.6-0.8 of its raw pixels (bench notes)
SHARED_SWEEP_AGE_S = 600.0  # with several ranks, only temporaries this old are a killed run's leftovers


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
    audit_rejections: int  # gated submissions whose timed batches the audit rejected
    seconds: float
    failures: dict[str, str] = field(default_factory=dict)  # unit label -> first error message

    def format(self) -> str:
        lines = [f"generate: {self.rows_written} rows written to {self.out} in {self.seconds:.1f} s "
                 f"(rank {self.rank}/{self.world_size}, {self.units} programs, {self.images_planned} images planned, "
                 f"{self.images_skipped} already done)",
                 f"failed rows: {self.failed_rows} ({self.reference_failed_rows} of baseline or GT programs)"]
        if self.baseline_rerenders:
            lines.append(f"reference batches re-rendered (another group, or a submission's GT images): "
                         f"{self.baseline_rerenders}")
        if self.audit_rejections:
            lines.append(f"submissions rejected by the audit of their timed batches: {self.audit_rejections}")
        lines += [f"  {unit}: {message}" for unit, message in self.failures.items()]
        return "\n".join(lines)


def run_generate(options: GenerateOptions, catalog: Catalog, *,
                 before_round: Callable[[int], None] | None = None) -> GenerateSummary:
    """Generate ``options.suite`` into ``options.out``. ``before_round``: called with the round's index before
    each round of a group (benchmarks time a bare loop there, on the same host state)."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    # 1. What to run.
    suite = catalog.suite(options.suite)
    tasks = plan.select_tasks(catalog, suite, options.tasks)
    submitted = submissions.load_submissions(options.submissions, suite)
    names = [submission.name for submission in submitted]
    variants = plan.select_variants(options.variants, names)
    if options.gate != GATE_NONE:
        variants = plan.with_references(variants, names)
    prompts = plan.load_prompts(suite.prompts, options.prompts_file, options.limit)
    seeds = list(options.seeds or suite.seeds)
    rank, world_size, local_rank = host.resolve_rank(options.shard)
    device = host.resolve_device(options.device, local_rank)
    weights = options.weights or suite.weights
    warmups = suite.warmup_batches if options.warmup_batches is None else options.warmup_batches
    repeats = suite.repeats if options.repeats is None else options.repeats
    sources = ModelSources(catalog, weights, device, options.model_paths)
    units = plan.build_units(catalog, tasks, variants, {sub.name: sub.programs for sub in submitted})

    # 2. The dataset folder: it must have been made with the same settings, programs and task facts.
    out = Path(options.out)
    dataset.init_dataset(out, schema.dataset_manifest(
        suite=suite.id, weights=weights, dtype_policy=suite.dtype, device_type=device.split(":")[0],
        prompts_sha256=plan.prompts_sha256(prompts), seeds=seeds, batch_sizes=list(suite.batch_sizes),
        seed_key=options.seed_key or new_seed_key(),
        clip={"model": suite.clip_model, "pretrained": suite.clip_pretrained},
        suite_facts=task_facts.suite_facts(suite, options.prompts_file)),
        sweep_older_than_s=0.0 if world_size == 1 else SHARED_SWEEP_AGE_S,
        adopt=() if options.seed_key else ("seed_key",))
    seed_key = dataset.read_manifest(out).get("seed_key", "")  # a new dataset's, or the one it was made with
    existing = dataset.read_generations(out, ["variant", "unit_id", "program_sha256", "status",
                                              "image_sha256"]).to_pylist()
    _check_programs_unchanged(out, units, existing)
    task_facts.record(out, [task_facts.facts(catalog, task, {
        schema.GT: programs.render(catalog, task).sha256,
        schema.BASELINE: programs.render(catalog, task, baseline=True).sha256}) for task in tasks])
    done = {row["record_id"] for row in existing if row["status"] == schema.STATUS_OK or not options.retry_failed}
    stored = {row["record_id"]: row["image_sha256"] for row in existing if row["status"] == schema.STATUS_OK}

    # 3. This rank's settings and the batches not written yet.
    settings = plan.shard_settings(plan.group_by_setting(units), rank, world_size)
    planned = pending_images = pending_bytes = 0
    for setting in settings:
        for unit in setting:
            pixels = 3 * sources.resolution(unit.task.model) ** 2
            for repeat in range(repeats):
                for batch in plan.build_batches(suite.id, unit, prompts, seeds, suite.batch_sizes, seed_key, repeat):
                    planned += len(batch.images)
                    pending = sum(1 for image in batch.images if image.record_id not in done)
                    pending_images += pending
                    pending_bytes += pending * pixels * PNG_SIZE_RATIO
    free = shutil.disk_usage(out).free
    if pending_bytes > free:
        log.warning("this run needs about %.1f GiB for its images and %s has %.1f GiB free: it will stop with an "
                    "error when the disk is full (a rerun resumes)", pending_bytes / 2**30, out, free / 2**30)

    # 4. Run the settings; the writer encodes and writes each round after it.
    # No worker sees the dataset, the operator's input files or another submission's programs.
    hide_from_workers(out, *([options.prompts_file] if options.prompts_file else []),
                      *(submission.folder for submission in submitted))
    (worker_cores, encoder_cores), threads = host.core_split(device, local_rank), host.worker_threads(device)
    device_name, versions = host.environment(device, threads)
    run_id = utc_now().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    columns = {"suite": suite.id, "device": device, "device_name": device_name, "weights": weights,
               "generator_device": GENERATOR_DEVICE, "warmup_batches": warmups, "versions": json.dumps(versions),
               "run_id": run_id, "rank": rank, "world_size": world_size, "timing": options.timing}
    writer = ShardWriter(out, run_id, rank, world_size, workers=options.encode_workers, cores=encoder_cores)
    progress = tqdm(total=pending_images, unit="img", desc=f"generate {suite.id}", disable=not options.progress,
                    dynamic_ncols=True)
    context = RunContext(options, catalog, suite.id, prompts, seeds, seed_key, list(suite.batch_sizes), sources,
                         device, suite.dtype, warmups, repeats, columns, writer, progress, threads, worker_cores,
                         before_round, DeviceQuiet.for_device(device))
    state = RunState(done, stored, audit=Audit(options.audit_fraction),
                     target_settings=frozenset(task.setting_id for task in tasks if task.target is not None))
    try:
        for setting in settings:
            gate_setting(context, state, setting)
            for repeat in range(repeats):  # each repeat a fresh set of workers
                for batch_size in context.batch_sizes:
                    run_setting(context, state, setting, batch_size, repeat)
            finish_setting(context, state, setting)
            writer.end_unit()
    finally:
        progress.close()
        writer.close()

    # 5. What this rank did, in its run record.
    failures = dict(state.failures)
    for mismatch in state.baseline_mismatches:
        failures.setdefault(f"{schema.BASELINE} re-render", mismatch)
    summary = GenerateSummary(out, rank, world_size, sum(map(len, settings)), planned, planned - pending_images,
                              writer.rows_written, state.failed_rows,
                              state.reference_failed_rows + len(state.baseline_mismatches), state.baseline_rerenders,
                              len(state.audit.rejected), time.perf_counter() - started, failures)
    dataset.write_json_atomic(out / schema.RUNS_DIR / f"{schema.run_stem(run_id, rank)}.json", {
        **columns, "versions": versions, "argv": sys.argv, "tasks": [task.id for task in tasks],
        "variants": list(variants), "submissions": {sub.name: sub.info for sub in submitted},
        "prompts": len(prompts), "seeds": seeds, "batch_sizes": context.batch_sizes,
        "rows_written": summary.rows_written, "failed_rows": summary.failed_rows,
        "baseline_rerenders": state.baseline_rerenders, "baseline_mismatches": state.baseline_mismatches,
        "catalog_sha256": task_facts.catalog_digest(catalog), "confinement": state.confinement,
        "audit": {"fraction": options.audit_fraction, "units": state.audit.records},
        "device_quiet": context.device_quiet.record() if context.device_quiet is not None else None,
        "repeats": repeats, "lane_orders": state.lane_orders, "retimed": state.retimed,
        "shards": writer.shard_digests,  # `score` checks them: rows cannot be edited unnoticed
        "seconds": round(summary.seconds, 3),
        "finished_at": utc_now().isoformat(),
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
