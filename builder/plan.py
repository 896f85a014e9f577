"""The work plan: (task, variant, seed, batch size, prompt batch) expanded deterministically into batches.

A *unit* is what one program is for: the shared baseline of a setting (model, scheduler, steps), the GT program
of a task, or a submission's program for a task. It carries its :class:`~accelbench.builder.programs.Program`
(None when a submission has no program for the task). Each unit runs every (seed, batch size, prompt batch);
every image gets a stable ``record_id`` from its key, so a resumed or sharded run knows exactly what is
already done. :func:`build_units` is the one place that knows which variants exist. No torch here.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from accelbench import schema
from accelbench.builder import programs
from accelbench.builder.programs import Program
from accelbench.builder.seeding import image_seed
from accelbench.errors import UserInputError
from accelbench.manifest import Catalog, PromptSource, Suite, Task, did_you_mean, expand_task_patterns


class PlanError(UserInputError):
    """Bad generate input (unknown task, bad shard spec, unreadable prompts): one line for the user."""


@dataclass(frozen=True)
class Unit:
    variant: str  # baseline | gt | sub:<name>
    unit_id: str  # setting id (baseline) or task id
    task: Task  # for a baseline: the first selected task of the setting (its model, scheduler and steps)
    program: Program | None  # None: the submission has no program for this task (rows with status 'missing')
    submission: str | None = None

    @property
    def is_baseline(self) -> bool:
        return self.variant == schema.BASELINE

    @property
    def task_id(self) -> str | None:
        return None if self.is_baseline else self.task.id

    @property
    def label(self) -> str:
        """``variant:unit_id``, e.g. ``gt:sd15-ddim-25-deepcache``: names the unit in messages and log files."""
        return f"{self.variant}:{self.unit_id}"


@dataclass(frozen=True)
class Image:
    record_id: str
    prompt_index: int
    prompt: str
    image_seed: int
    position: int


@dataclass(frozen=True)
class Batch:
    unit: Unit
    seed: int
    batch_size: int
    batch_index: int
    images: tuple[Image, ...]
    repeat: int = 0

    @property
    def prompts(self) -> list[str]:
        return [image.prompt for image in self.images]


def record_id(suite: str, variant: str, unit_id: str, program_sha256: str, seed: int, batch_size: int,
              prompt_index: int, prompt: str, repeat: int = 0) -> str:
    """Stable id of one image in one repeat. The prompt text and the program's hash are part of the key, so
    neither a changed prompt list nor a changed program ever aliases old rows ('' for a missing program); repeat 0
    has the key of datasets made before repeats."""
    fields = [suite, variant, unit_id, program_sha256, seed, batch_size, prompt_index, prompt]
    key = json.dumps(fields + ([repeat] if repeat else []), ensure_ascii=False)
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def select_tasks(catalog: Catalog, suite: Suite, patterns: list[str] | None) -> list[Task]:
    """The suite's tasks, optionally narrowed by ids or glob patterns (each must match a task of the suite).

    ``None`` means every task of the suite; an empty list is an error (``--tasks ','`` selects nothing)."""
    if patterns is None:
        return [catalog.tasks[task_id] for task_id in suite.tasks]
    if not patterns:
        raise PlanError("--tasks selects no task (give task ids or glob patterns, or leave it out for all)")
    def unmatched(index, pattern):
        hint = "" if pattern not in catalog.tasks else f" (task {pattern!r} exists but is not in this suite)"
        raise PlanError(f"--tasks: {pattern!r} matches no task of suite {suite.id!r}{hint}")

    chosen = set(expand_task_patterns(patterns, suite.tasks, unmatched))
    return [catalog.tasks[task_id] for task_id in suite.tasks if task_id in chosen]


def available_variants(submission_names) -> list[str]:
    return [schema.BASELINE, schema.GT, *map(schema.submission_variant, submission_names)]


def select_variants(requested: list[str] | None, submission_names: list[str]) -> tuple[str, ...]:
    """``--variants``: None means baseline, gt and every submission; each named variant must exist."""
    known = available_variants(submission_names)
    if requested is None:
        return tuple(known)
    if not requested:
        raise PlanError(f"--variants selects no variant; known: {', '.join(known)}")
    for variant in requested:
        if variant not in known:
            raise PlanError(f"--variants: unknown variant {variant!r}{did_you_mean(variant, known)}; known: "
                            f"{', '.join(known)}")
    return tuple(variant for variant in known if variant in requested)


def with_references(variants: tuple[str, ...], submission_names) -> tuple[str, ...]:
    """``variants`` with the baseline and the GT added when a submission is among them: a gated submission's timed
    images are checked against its task's GT rendering the same batches, and every row's speedup needs its round's
    baseline latency (where their rows are already written, they only re-render)."""
    if not any(map(schema.is_submission, variants)):
        return variants
    return tuple(variant for variant in available_variants(submission_names)
                 if variant in variants or variant in (schema.BASELINE, schema.GT))


def build_units(catalog: Catalog, tasks: list[Task], variants: tuple[str, ...],
                submissions: dict[str, dict[str, Program]] | None = None) -> list[Unit]:
    """Units in a fixed order: per setting (first appearance) its shared baseline, then per task its GT and each
    selected submission's program. ``submissions``: name -> {task id -> program}."""
    submissions = submissions or {}
    units: list[Unit] = []
    seen_settings: set[str] = set()
    for task in tasks:
        if task.setting_id in seen_settings:
            continue
        seen_settings.add(task.setting_id)
        if schema.BASELINE in variants:
            units.append(Unit(schema.BASELINE, task.setting_id, task, programs.render(catalog, task, baseline=True)))
        for other in (other for other in tasks if other.setting_id == task.setting_id):
            if schema.GT in variants:
                units.append(Unit(schema.GT, other.id, other, programs.render(catalog, other)))
            for name, submitted in submissions.items():
                if schema.submission_variant(name) in variants:
                    units.append(Unit(schema.submission_variant(name), other.id, other, submitted.get(other.id), name))
    return units


def build_batches(suite_id: str, unit: Unit, prompts: list[str], seeds, batch_sizes, seed_key: str,
                  repeat: int = 0) -> list[Batch]:
    sha256 = unit.program.sha256 if unit.program is not None else ""
    batches = []
    for seed in seeds:
        for batch_size in batch_sizes:
            for batch_index, start in enumerate(range(0, len(prompts), batch_size)):
                indices = range(start, min(start + batch_size, len(prompts)))
                images = tuple(
                    Image(record_id(suite_id, unit.variant, unit.unit_id, sha256, seed, batch_size, index,
                                    prompts[index], repeat),
                          index, prompts[index], image_seed(seed, index, seed_key), position)
                    for position, index in enumerate(indices)
                )
                batches.append(Batch(unit, seed, batch_size, batch_index, images, repeat))
    return batches


def group_by_setting(units: list[Unit]) -> list[list[Unit]]:
    """The units of each setting, in plan order (baseline first): the programs that take turns on one device."""
    settings: dict[str, list[Unit]] = {}
    for unit in units:
        settings.setdefault(unit.task.setting_id, []).append(unit)
    return list(settings.values())


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise PlanError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise PlanError(f"--shard {text}: need 0 <= I < N")
    return index, count


def shard_settings(settings: list[list[Unit]], index: int, count: int) -> list[list[Unit]]:
    """This shard's settings: every count-th one starting at index. A setting's units stay together, so its
    programs take turns on one device and its speedups come from one GPU."""
    return settings[index::count]


def prompts_sha256(prompts: list[str]) -> str:
    """Hash of the prompt list: a dataset holds the images of one prompt list."""
    return hashlib.sha256(json.dumps(prompts, ensure_ascii=False).encode()).hexdigest()


def parse_seeds(text: str) -> list[int]:
    """``--seeds 0,1,7`` -> [0, 1, 7]: non-negative, distinct."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise PlanError(f"--seeds takes comma-separated integers, got {text!r}") from None
    if not seeds:
        raise PlanError("--seeds selects no seed")
    if any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        raise PlanError(f"--seeds must be distinct non-negative integers, got {text!r}")
    return seeds


def load_prompts(source: PromptSource, override: Path | None = None, limit: int | None = None) -> list[str]:
    """The suite's prompts (or those of ``override``, a .txt/.tsv/.csv file), first ``limit`` of them."""
    if override is not None:
        source = PromptSource(file=Path(override), column=source.column)
    if source.inline:
        prompts = list(source.inline)
    elif source.file is not None:
        prompts = _read_prompt_file(source.file, source.column)
    else:
        prompts = _read_hub_prompts(source)
    limit = min(filter(None, (limit, source.limit)), default=None)
    prompts = prompts[:limit] if limit else prompts
    if not prompts:
        raise PlanError("the prompt list is empty")
    return prompts


def _read_prompt_file(path: Path, column: str) -> list[str]:
    if not path.is_file():
        raise PlanError(f"prompt file not found: {path}")
    with open(path, encoding="utf-8", newline="") as handle:
        if path.suffix.lower() not in (".tsv", ".csv"):
            return [line.strip() for line in handle if line.strip()]
        reader = csv.DictReader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        if column not in (reader.fieldnames or []):
            raise PlanError(f"{path}: no column {column!r} (columns: {', '.join(reader.fieldnames or [])})")
        return [row[column].strip() for row in reader if (row[column] or "").strip()]


def _read_hub_prompts(source: PromptSource) -> list[str]:
    import datasets

    try:
        table = datasets.load_dataset(source.hub, split=source.split)
    except Exception as error:  # offline, unknown repo, ...: say what to do instead
        raise PlanError(f"cannot load prompts from the Hub dataset {source.hub!r} ({type(error).__name__}); "
                        f"offline? pass --prompts FILE (e.g. PartiPrompts.tsv)") from None
    if source.column not in table.column_names:
        raise PlanError(f"Hub dataset {source.hub!r} has no column {source.column!r}")
    return [text.strip() for text in table[source.column] if text and text.strip()]

