"""The work plan: (task, variant, seed, batch size, prompt batch) expanded deterministically into batches.

A *unit* is one program loaded once: the shared baseline of a setting (model, scheduler, steps) or the GT
program of one task. Each unit runs every (seed, batch size, prompt batch); every image gets a stable
``record_id`` from its key, so a resumed or sharded run knows exactly what is already done. No torch here.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from accelbench.builder.seeding import image_seed
from accelbench.errors import UserInputError
from accelbench.manifest import Catalog, PromptSource, Suite, Task


class PlanError(UserInputError):
    """Bad generate input (unknown task, bad shard spec, unreadable prompts): one line for the user."""


@dataclass(frozen=True)
class Unit:
    variant: str  # baseline | gt
    unit_id: str  # setting id (baseline) or task id (gt)
    task: Task  # for a baseline: the first selected task of the setting (its model, scheduler and steps)

    @property
    def task_id(self) -> str | None:
        return None if self.variant == "baseline" else self.task.id


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

    @property
    def prompts(self) -> list[str]:
        return [image.prompt for image in self.images]


def record_id(suite: str, variant: str, unit_id: str, seed: int, batch_size: int, prompt_index: int,
              prompt: str) -> str:
    """Stable id of one image; the prompt text is part of the key so a changed prompt list never aliases."""
    key = json.dumps([suite, variant, unit_id, seed, batch_size, prompt_index, prompt], ensure_ascii=False)
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def select_tasks(catalog: Catalog, suite: Suite, patterns: list[str] | None) -> list[Task]:
    """The suite's tasks, optionally narrowed by ids or glob patterns (each must match a task of the suite)."""
    if not patterns:
        return [catalog.tasks[task_id] for task_id in suite.tasks]
    chosen: list[str] = []
    for pattern in patterns:
        matches = [task_id for task_id in suite.tasks if fnmatch.fnmatchcase(task_id, pattern)]
        if not matches:
            hint = "" if pattern not in catalog.tasks else f" (task {pattern!r} exists but is not in this suite)"
            raise PlanError(f"--tasks: {pattern!r} matches no task of suite {suite.id!r}{hint}")
        chosen.extend(task_id for task_id in matches if task_id not in chosen)
    return [catalog.tasks[task_id] for task_id in suite.tasks if task_id in chosen]


def build_units(tasks: list[Task], variants: tuple[str, ...]) -> list[Unit]:
    """Units in a fixed order: per setting (first appearance), its shared baseline, then its tasks' GT programs."""
    units: list[Unit] = []
    seen_settings: set[str] = set()
    for task in tasks:
        if task.setting_id in seen_settings:
            continue
        seen_settings.add(task.setting_id)
        if "baseline" in variants:
            units.append(Unit("baseline", task.setting_id, task))
        if "gt" in variants:
            units.extend(Unit("gt", other.id, other) for other in tasks if other.setting_id == task.setting_id)
    return units


def build_batches(suite_id: str, unit: Unit, prompts: list[str], seeds, batch_sizes) -> list[Batch]:
    batches = []
    for seed in seeds:
        for batch_size in batch_sizes:
            for batch_index, start in enumerate(range(0, len(prompts), batch_size)):
                indices = range(start, min(start + batch_size, len(prompts)))
                images = tuple(
                    Image(record_id(suite_id, unit.variant, unit.unit_id, seed, batch_size, index, prompts[index]),
                          index, prompts[index], image_seed(seed, index), position)
                    for position, index in enumerate(indices)
                )
                batches.append(Batch(unit, seed, batch_size, batch_index, images))
    return batches


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise PlanError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise PlanError(f"--shard {text}: need 0 <= I < N")
    return index, count


def shard_units(units: list[Unit], index: int, count: int) -> list[Unit]:
    """This shard's units: every count-th unit starting at index (each unit's program loads on one shard only)."""
    return units[index::count]


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

