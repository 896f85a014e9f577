"""Task facts: everything the scorer, report, leaderboard and dataset card know about a task, recorded in the
dataset by ``generate`` (``DIR/tasks/<task_id>.json``), so a dataset describes itself and is scored the same way
whatever today's manifests say.

A task's facts are written once, when a run first holds it; a later run whose catalogue says something else about
the task (its text, level, method parameters or deviation threshold) is refused, as a changed program is. Each
file also records the digest of the catalogue it came from (:func:`catalog_digest`).

**Datasets from before task facts** (no ``DIR/tasks/``) still score: :func:`read` then derives what the generation
rows hold (model, scheduler, steps, method, parameters) and leaves the rest unknown: no task text, no level and
no deviation threshold (the PSNR-to-GT backstop is not applied). The report says so in a note
(:data:`LEGACY_NOTE`). Pure Python, no torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from accelbench import dataset, schema
from accelbench.manifest.model import TAG_SWEEP

FACTS_VERSION = 2  # 2: levels as the field counts them (1 pipeline, 2 one method, 3 a combination) and tags
LEGACY_NOTE = ("This dataset has no recorded task facts (generated before they were recorded, or its tasks/ folder "
               "is missing): task texts and levels are unknown and no submission was checked against the PSNR-to-GT "
               "backstop (deviates). Regenerate it with this accelbench to score it in full.")
# What may differ between two records of one task: where the catalogue came from, not what the task is.
_PROVENANCE = ("catalog_sha256",)


def catalog_digest(catalog) -> str:
    """sha256 of a catalogue's content (models, methods, schedulers, tasks), independent of where it is stored."""
    content = {name: {key: _plain(dataclasses.asdict(entry)) for key, entry in getattr(catalog, name).items()}
               for name in ("models", "methods", "schedulers", "tasks")}
    for task in content["tasks"].values():
        task.pop("source", None)
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def _plain(value):
    return json.loads(json.dumps(value, default=str))


def facts(catalog, task, programs: dict[str, str]) -> dict:
    """The facts of ``task``: its request and fields, its model's, scheduler's and method's names and the
    method's thresholds, and ``programs`` (variant -> sha256 of the program that defines it: gt, baseline)."""
    model, scheduler, method = (catalog.models[task.model], catalog.schedulers[task.scheduler],
                                catalog.methods[task.method])
    return {
        "version": FACTS_VERSION, "id": task.id, "text": task.text, "level": task.level, "tags": list(task.tags),
        "setting_id": task.setting_id, "steps": task.steps, "params": dict(task.params),
        "model": {"id": model.id, "name": model.name, "hub_id": model.hub_id, "pipeline": model.pipeline,
                  "denoiser": model.denoiser, "resolution": model.resolution},
        "scheduler": {"id": scheduler.id, "name": scheduler.name, "class": scheduler.class_name},
        "method": {"id": method.id, "name": method.name, "library": method.library,
                   "components": list(method.components), "deviation_psnr_db": method.deviation_psnr_db},
        "programs": dict(sorted(programs.items())),
        # A target task's target, budget and fixed fields; None for a recipe task (and absent in records made
        # before target tasks existed, which reads the same).
        "target": task.target.to_dict() if task.target is not None else None,
        "catalog_sha256": catalog_digest(catalog),
    }


def suite_facts(suite, prompts_file: Path | None) -> dict:
    """What the dataset card says about a suite: its description and where its prompts came from."""
    source = suite.prompts
    if prompts_file is not None:
        prompts = {"kind": "command-line"}  # secret prompts may be: not even their file's name is recorded
    elif source.hub:
        prompts = {"kind": "hub", "name": source.hub, "column": source.column, "split": source.split}
    elif source.file is not None:
        prompts = {"kind": "suite-file", "name": source.file.name}
    else:
        prompts = {"kind": "inline"}
    if prompts_file is None and source.license:
        prompts["license"] = source.license
    return {"description": suite.description, "prompts": prompts}


def upgrade(entry: dict) -> dict:
    """Facts of an earlier version in today's terms. Version 1 levels meant 1: one method at its defaults, 2: one
    method with a parameter away from its default, 3: a composition; today 1 is a pipeline without acceleration,
    both former 1 and 2 are level 2, and the former 2 is tagged ``sweep`` (a composition's sweep tag is unknown)."""
    if entry.get("version") != 1:
        return entry
    level = entry.get("level")
    return {**entry, "version": FACTS_VERSION, "level": 2 if level in (1, 2) else level,
            "tags": [TAG_SWEEP] if level == 2 else []}


def _path(directory: Path, task_id: str) -> Path:
    return Path(directory) / schema.TASKS_DIR / f"{task_id}.json"


def record(directory: Path, task_facts: list[dict]) -> None:
    """Write the facts of tasks the dataset does not hold yet (ranks starting at once: the first writes them);
    refuse (:class:`accelbench.dataset.DatasetError`) a task whose recorded facts differ from these, naming the
    first field."""
    for entry in task_facts:
        path = _path(directory, entry["id"])
        if not path.is_file() and dataset.write_json_first(path, entry):
            continue
        held = upgrade(json.loads(path.read_text()))
        key = difference(held, entry)
        if key is not None:
            raise dataset.DatasetError(
                f"{directory} holds task {entry['id']} with {key} {held.get(key)!r}, the catalogue now says "
                f"{entry.get(key)!r}: the catalogue changed; use another --out")


def difference(held: dict, other: dict) -> str | None:
    """The first field (in sorted order) in which two records of one task's facts differ, where the catalogue
    came from aside; None when they describe the same task."""
    return next((key for key in sorted(set(held) | set(other))
                 if key not in _PROVENANCE and held.get(key) != other.get(key)), None)


def read(directory: Path, rows: list[dict] | None = None) -> tuple[dict[str, dict], bool]:
    """(task id -> facts, recorded): the dataset's task facts, or where it has none (``recorded`` False), the
    facts its generation ``rows`` hold (:data:`LEGACY_NOTE` says what is then unknown)."""
    folder = Path(directory) / schema.TASKS_DIR
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if files:
        found = {}
        for path in files:
            try:
                entry = json.loads(path.read_text())
            except (OSError, ValueError) as error:
                raise dataset.DatasetError(f"{path}: unreadable task facts ({error})") from None
            found[entry["id"]] = upgrade(entry)
        return found, True
    return _from_rows(rows or []), False


def _from_rows(rows: list[dict]) -> dict[str, dict]:
    derived: dict[str, dict] = {}
    for row in rows:
        task_id = row.get("task_id")
        if not task_id or task_id in derived:
            continue
        derived[task_id] = {
            "version": None, "id": task_id, "text": None, "level": None, "tags": [], "setting_id": row["setting_id"],
            "steps": row["steps"], "params": json.loads(row["method_params"] or "{}"),
            "model": {"id": row["model"], "name": row["model"], "denoiser": None},
            "scheduler": {"id": row["scheduler"], "name": row["scheduler"]},
            "method": {"id": row["method"], "name": row["method"], "library": None, "components": [],
                       "deviation_psnr_db": None},
            "programs": {}, "catalog_sha256": None,
        }
    return derived
