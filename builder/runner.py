"""The generate stage: run every planned batch of this rank's units and write the dataset.

For each unit (a program loaded once):

1. render the program and store it under ``programs/<sha256>.py``;
2. reset the global RNGs and ``load()`` it fresh: nothing a previous variant patched can leak in
   (tgate, for one, patches every Attention module for good);
3. per batch size, run the warm-up batches (untimed, discarded);
4. per pending batch: reset the global RNGs, build one CPU generator per image, time the ``generate()``
   call (:mod:`~accelbench.builder.timing`), and hand the images to the background writer;
5. drop the pipeline, compact the unit's parts into a shard.

A program that raises, returns NaN/inf or runs out of memory yields rows with that status; the run goes on.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from accelbench import dataset, schema
from accelbench.builder import plan, programs, synthetic
from accelbench.builder.seeding import GENERATOR_DEVICE, make_generators, seed_global
from accelbench.builder.timing import StageTimer
from accelbench.builder.writer import ShardWriter
from accelbench.manifest import Catalog, Model, load_catalog

GLOBAL_SEED = 0  # global RNGs are reset to this before every load and every call
WARMUP_SEED = 2**31 - 1  # warm-up images draw from generators no recorded image uses


@dataclass
class GenerateOptions:
    suite: str
    out: Path
    tasks: list[str] | None = None
    variants: tuple[str, ...] = programs.VARIANTS
    limit: int | None = None
    device: str | None = None  # None: cuda if available, else cpu
    weights: str | None = None  # None: the suite's
    shard: tuple[int, int] | None = None  # None: RANK/WORLD_SIZE from the launcher, else 0/1
    prompts_file: Path | None = None
    warmup_batches: int | None = None  # None: the suite's
    model_paths: dict[str, str] = field(default_factory=dict)  # family -> local folder (pretrained weights)
    manifests: Path | None = None
    encode_workers: int | None = None
    progress: bool = True


@dataclass
class GenerateSummary:
    out: Path
    rank: int
    world_size: int
    units: int
    images_planned: int
    images_skipped: int
    rows_written: int
    failed_rows: int
    seconds: float
    failures: dict[str, str] = field(default_factory=dict)  # "unit (variant)" -> first error message

    def format(self) -> str:
        lines = [f"generate: {self.rows_written} rows written to {self.out} in {self.seconds:.1f} s "
                 f"(rank {self.rank}/{self.world_size}, {self.units} programs, {self.images_planned} images planned, "
                 f"{self.images_skipped} already done)",
                 f"failed rows: {self.failed_rows}"]
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


def resolve_dtype(policy: str, model: Model, device: str):
    """``auto``: the model's dtype on CUDA, float32 on CPU (half precision on CPU is slow and inexact)."""
    import torch

    name = policy if policy != "auto" else (model.dtype if device.startswith("cuda") else "float32")
    return getattr(torch, name)


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


def environment(device: str) -> tuple[str, dict[str, str]]:
    """(device name, versions) recorded in every row."""
    import torch

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        name = _cpu_name()
    # CPU float results depend on the thread count, so it is recorded with the versions.
    versions = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda or "",
                "torch_num_threads": str(torch.get_num_threads()), "accelbench": _version("accelbench")}
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


@dataclass
class _Run:
    """What every unit of one generate run shares."""

    catalog: Catalog
    sources: ModelSources
    device: str
    dtype_policy: str
    warmups: int
    context: dict  # columns that are the same on every row of the run
    out: Path
    writer: ShardWriter
    progress: object  # tqdm


def run_generate(options: GenerateOptions) -> GenerateSummary:
    import torch
    from tqdm.auto import tqdm

    started = time.perf_counter()
    programs.quiet_library_output()
    catalog = load_catalog(options.manifests)
    suite = catalog.suite(options.suite)
    unknown_variants = [variant for variant in options.variants if variant not in programs.VARIANTS]
    if unknown_variants or not options.variants:
        raise plan.PlanError(f"--variants: unknown {', '.join(unknown_variants) or 'empty'}; known: "
                             f"{', '.join(programs.VARIANTS)}")
    tasks = plan.select_tasks(catalog, suite, options.tasks)
    prompts = plan.load_prompts(suite.prompts, options.prompts_file, options.limit)
    rank, world_size, local_rank = resolve_rank(options.shard)
    device = resolve_device(options.device, local_rank)
    weights = options.weights or suite.weights
    warmups = suite.warmup_batches if options.warmup_batches is None else options.warmup_batches
    sources = ModelSources(catalog, weights, device, options.model_paths)

    # 1. The dataset folder and what it already holds.
    out = Path(options.out)
    dataset.init_dataset(out, schema.dataset_manifest(suite.id, weights, suite.dtype, device.split(":")[0]))
    done = set(dataset.read_columns(dataset.generation_files(out), []).column("record_id").to_pylist())

    # 2. This rank's work: the batches not written yet.
    units = plan.shard_units(plan.build_units(tasks, tuple(options.variants)), rank, world_size)
    work, planned = [], 0
    for unit in units:
        batches = plan.build_batches(suite.id, unit, prompts, suite.seeds, suite.batch_sizes)
        planned += sum(len(batch.images) for batch in batches)
        pending = [batch for batch in batches if not all(image.record_id in done for image in batch.images)]
        if pending:
            work.append((unit, pending))
    pending_images = sum(len(batch.images) for _, batches in work for batch in batches)

    # 3. Run the units, the writer encoding and writing behind.
    device_name, versions = environment(device)
    run_id = _utc_now().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    context = {"suite": suite.id, "device": device, "device_name": device_name, "weights": weights,
               "generator_device": GENERATOR_DEVICE, "warmup_batches": warmups, "versions": json.dumps(versions),
               "run_id": run_id, "rank": rank, "world_size": world_size}
    writer = ShardWriter(out, run_id, rank, workers=options.encode_workers)
    progress = tqdm(total=pending_images, unit="img", desc=f"generate {suite.id}", disable=not options.progress,
                    dynamic_ncols=True)
    run = _Run(catalog, sources, device, suite.dtype, warmups, context, out, writer, progress)
    try:
        for unit, batches in work:
            progress.set_postfix_str(f"{unit.unit_id} ({unit.variant})")
            _run_unit(run, unit, batches)
            writer.end_unit()
            gc.collect()
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    finally:
        progress.close()
        writer.close()

    summary = GenerateSummary(out, rank, world_size, len(units), planned, planned - pending_images,
                              writer.rows_written, writer.failed_rows, time.perf_counter() - started,
                              dict(writer.failures))
    dataset.write_json_atomic(out / schema.RUNS_DIR / f"{run_id}-r{rank}.json", {
        **context, "versions": versions, "argv": sys.argv, "tasks": [task.id for task in tasks],
        "variants": list(options.variants), "prompts": len(prompts), "seeds": list(suite.seeds),
        "batch_sizes": list(suite.batch_sizes), "rows_written": summary.rows_written,
        "failed_rows": summary.failed_rows, "seconds": round(summary.seconds, 3), "finished_at": _utc_now().isoformat(),
    })
    return summary


def _run_unit(run: _Run, unit: plan.Unit, batches: list[plan.Batch]) -> None:
    import torch

    task = unit.task
    model = run.catalog.models[task.model]
    program = programs.render(run.catalog, task, unit.variant)
    program_path = run.out / schema.PROGRAMS_DIR / f"{program.sha256}.py"
    if not program_path.exists():
        dataset.write_bytes_atomic(program_path, program.source.encode())
    dtype = resolve_dtype(run.dtype_policy, model, run.device)
    resolution = run.sources.resolution(task.model)
    baseline = unit.variant == "baseline"
    base = {**run.context, "variant": unit.variant, "unit_id": unit.unit_id, "task_id": unit.task_id,
            "setting_id": task.setting_id, "program_sha256": program.sha256, "model": task.model,
            "scheduler": task.scheduler, "steps": task.steps, "method": "none" if baseline else task.method,
            "method_params": json.dumps({} if baseline else task.params, sort_keys=True),
            "dtype": str(dtype).removeprefix("torch."), "height": resolution, "width": resolution}

    def record(batch, status, error=None, images=None, timing=None, started_at=None, finished_at=None):
        rows = []
        for image in batch.images:
            row = schema.empty_row(schema.GENERATION_COLUMNS) | base | {
                "record_id": image.record_id, "prompt_index": image.prompt_index, "prompt": image.prompt,
                "seed": batch.seed, "image_seed": image.image_seed, "batch_size": batch.batch_size,
                "batch_index": batch.batch_index, "position": image.position, "status": status, "error": error,
                "started_at": started_at, "finished_at": finished_at,
            }
            if timing is not None:
                row |= {"batch_latency_s": timing.batch_latency_s,
                        "image_latency_s": timing.batch_latency_s / len(batch.images),
                        "peak_memory_bytes": timing.peak_memory_bytes, "timer": timing.timer, **timing.stages}
            rows.append(row)
        run.writer.submit(f"{unit.unit_id} ({unit.variant})", rows, images)
        run.progress.update(len(rows))

    # 1-2. Load the program fresh, global RNGs reset.
    try:
        base["model_source"] = run.sources.path(task.model)
        module = programs.load_module(program.source, f"accelbench_{unit.variant}")
        seed_global(GLOBAL_SEED)
        pipe = module.load(base["model_source"], run.device, dtype)
        timer = StageTimer(pipe, run.device)
    except Exception as error:
        message = f"load failed: {programs.describe_error(error)}"
        for batch in batches:
            record(batch, _status_of(error), message)
        return

    warmed: set[int] = set()
    for batch in batches:
        # 3. Warm-up batches at this batch size: same prompts, generators no recorded image uses.
        if batch.batch_size not in warmed:
            warmed.add(batch.batch_size)
            for _ in range(run.warmups):
                seed_global(GLOBAL_SEED)
                try:
                    module.generate(pipe, batch.prompts, make_generators([WARMUP_SEED] * len(batch.images)),
                                    height=resolution, width=resolution)
                except Exception:
                    break  # the timed batch will fail the same way and record it
        # 4. The timed call. NaN/inf pixels are found by the encoding workers, off this path.
        seed_global(GLOBAL_SEED)
        generators = make_generators([image.image_seed for image in batch.images])
        started_at = _utc_now()
        timer.begin()
        try:
            images = module.generate(pipe, batch.prompts, generators, height=resolution, width=resolution)
            timing = timer.end()
        except Exception as error:
            timer.abort()
            if run.device.startswith("cuda"):
                torch.cuda.empty_cache()
            record(batch, _status_of(error), programs.describe_error(error), started_at=started_at,
                   finished_at=_utc_now())
            continue
        finished_at = _utc_now()
        expected = (len(batch.images), resolution, resolution, 3)
        shape, kind = getattr(images, "shape", None), getattr(getattr(images, "dtype", None), "kind", None)
        if not isinstance(images, np.ndarray) or shape != expected or kind != "f":
            record(batch, schema.STATUS_ERROR, f"generate() returned {type(images).__name__} {shape}, expected a "
                                               f"float array {expected}", timing=timing, started_at=started_at,
                   finished_at=finished_at)
        else:
            record(batch, schema.STATUS_OK, images=images, timing=timing, started_at=started_at,
                   finished_at=finished_at)
    del pipe, module, timer


def _status_of(error: BaseException) -> str:
    import torch

    return schema.STATUS_OOM if isinstance(error, torch.OutOfMemoryError) else schema.STATUS_ERROR
