"""``accelbench merge``: datasets generated separately become one dataset, which ``score`` and ``publish`` treat
as if one run had made it: the shards of ``generate --shard I/N`` run on machines without shared storage, or runs
that added submissions in folders of their own.

What a merge checks before it writes anything (each problem one :class:`~accelbench.dataset.DatasetError`):

* every input is a finished dataset: no unfinished part files (a run still going, or killed: rerun ``generate``
  to finish it), no unreadable shard, and no shard that changed after its run recorded its digest
  (:func:`accelbench.dataset.verify_shards`);
* their :data:`~accelbench.schema.PINNED_FIELDS` agree;
* a task recorded by several inputs has the same facts in each (:func:`accelbench.task_facts.difference`);
* a record (``record_id``) held by several inputs has the same status and pixels (``image_sha256``) in each: it
  is one record, and the first input's row is kept (its timings and run). A record id hashes the suite, variant,
  unit, program, seed, batch size and prompt, so two rows of one record are two renderings of one image; any
  other difference is an error naming the record;
* programs (named by their sha256), gate verdicts and run records (named by their run and rank) are unioned,
  and two different files of one name are refused. Worker logs are named by unit and batch size and appended to
  by every run of the unit, so two runs of one unit differ there even when their images agree: of two different
  logs of one name the first input's is kept (the summary counts them).

Each input's rows are read through :func:`accelbench.dataset.record_rows`, as every reader does; the merged
dataset holds one row per record, and a record of the merge (``runs/merge-*.json``) the digests of the shards it
wrote (a shard kept in part is a new file of its old name) and the names of those it left out. Its manifest is
the first input's (the pinned fields agree; the default CLIP recipe and the suite's description are the first's).

**Scores and reports are not merged**: the merged dataset is scored anew by ``accelbench score`` (fidelity
pairs images across inputs, e.g. a submission with the GT rendered by another run, and the report covers every
task). An existing ``--out`` keeps its own scores; ``score`` is incremental and adds the rest.

**Where it writes.** Everything new is built in a hidden folder beside ``--out`` (``.<name>.merge-*``, removed
when the merge fails), as hard links where the filesystem allows (dataset files are only ever replaced by
rename) and copies otherwise (logs always). A new (or empty) ``--out`` is then that folder renamed: all or
nothing. An existing dataset ``--out`` is the first input: its files stay as they are, and the new ones are
renamed into it, the rows last, so readers never see rows without their programs. A refused merge writes
nothing, and merging again (the same inputs into their merge) finds nothing new and changes nothing.
pyarrow only, no torch.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from accelbench import dataset, schema, task_facts
from accelbench.dataset import DatasetError, WriteError
from accelbench.scorer import store

# What a merge reads of every generation row: enough to choose, compare and name a record.
_IDENTITY = ("record_id", "status", "image_sha256", "variant", "unit_id", "seed", "batch_size", "prompt_index")
# Folders whose files are unioned by name, refusing two different files of one name.
_UNIONED = {schema.PROGRAMS_DIR: "*.py", schema.GATE_DIR: schema.VERDICTS_GLOB, schema.RUNS_DIR: "*.json"}


@dataclass(frozen=True)
class MergeSummary:
    out: Path
    created: bool  # --out is a dataset this merge made (else one it merged into)
    inputs: int  # distinct datasets merged, an existing --out included
    records: int  # records of the merged dataset
    rows_added: int  # generation rows this merge added to --out
    repeated: int  # records held by more than one input (identical: kept once)
    files_added: dict[str, int] = field(default_factory=dict)  # folder -> files this merge added to --out
    logs_kept_first: int = 0  # logs of one name that differed between inputs: the first input's kept

    def format(self) -> str:
        if not self.created and not self.rows_added and not self.files_added:
            return (f"merge: nothing to add: {self.out} already holds every record and file of the {self.inputs} "
                    f"dataset(s)")
        added = ", ".join(f"{folder} {count}" for folder, count in self.files_added.items())
        lines = [f"merge: {self.records} records from {self.inputs} dataset(s) in {self.out}: {self.rows_added} "
                 f"rows added, {self.repeated} records held by several datasets (identical, kept once)",
                 f"files added: {added or 'none'}"]
        if self.logs_kept_first:
            lines.append(f"logs of one name that differ between datasets: {self.logs_kept_first}, the first "
                         f"dataset's kept")
        if self.rows_added:
            lines.append(f"note: scores are not merged: run `accelbench score {self.out}`")
        return "\n".join(lines)


def merge(directories: list[Path], out: Path) -> MergeSummary:
    """Merge the datasets ``directories`` into ``out`` (new, empty, or a dataset merged into as the first input);
    see the module docstring. Raises :class:`DatasetError` (nothing written) when they cannot be merged."""
    out = Path(out)
    existing = _is_dataset(out)
    inputs = _inputs(directories, out, existing)
    manifests = [dataset.read_manifest(directory) for directory in inputs]
    _check_pins(inputs, manifests)
    for directory in inputs:
        _check_finished(directory)
        dataset.verify_shards(directory)  # no input whose rows changed after its runs wrote them

    chosen, logs_kept_first = _union_metadata(inputs)
    kept, records, repeated = _choose_rows(inputs)
    # What this merge adds: the chosen files that are not --out's own, metadata first and the rows last.
    entries = {relative: (_copied if relative.startswith(f"{schema.LOGS_DIR}/") else _linked)(source)
               for relative, source in chosen.items() if not _inside(source, out)}
    rows_added = 0
    for path, indices in kept.items():
        if _inside(path, out):
            continue
        relative = f"{schema.GENERATIONS_DIR}/{path.name}"
        if relative in entries or existing and (out / relative).exists():
            raise DatasetError(f"two datasets hold different files named {relative} (one is {path}): one run's "
                               f"file cannot be two; keep the right copy in both, or leave one dataset out")
        whole = len(indices) == pq.read_metadata(path).num_rows
        entries[relative] = _linked(path) if whole else _filtered(path, indices)
        rows_added += len(indices)

    if rows_added:  # the merge's own record: the digests of the shards it wrote, the shards it left out
        shards = [relative.split("/", 1)[1] for relative in entries
                  if relative.startswith(f"{schema.GENERATIONS_DIR}/")]
        dropped = sorted({path.name for directory in inputs for path in dataset.shard_files(directory)
                          if path not in kept and not _inside(path, out)})
        entries[f"{schema.RUNS_DIR}/merge-{uuid.uuid4().hex[:12]}.json"] = _merge_record(inputs, shards, dropped)
    if entries or not existing:
        _write(out, entries, None if existing else inputs[0])
    files_added: dict[str, int] = defaultdict(int)
    for relative in entries:
        files_added[relative.split("/", 1)[0]] += 1
    return MergeSummary(out, not existing, len(inputs), records, rows_added, repeated, dict(files_added),
                        logs_kept_first)


def _is_dataset(out: Path) -> bool:
    """Whether ``--out`` is an existing dataset (merged into); a new or empty folder is not, anything else is
    refused."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--out {out} exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return False
    if not (out / schema.DATASET_MANIFEST).is_file():
        raise DatasetError(f"--out {out} is not empty and not an accelbench dataset; use a new folder, or a "
                           f"dataset to merge the others into")
    return True


def _inputs(directories: list[Path], out: Path, existing: bool) -> list[Path]:
    """The distinct datasets to merge, an existing ``--out`` first."""
    inputs: dict[Path, Path] = {out.resolve(): out} if existing else {}
    for directory in map(Path, directories):
        inputs.setdefault(directory.resolve(), directory)
    for resolved, directory in inputs.items():
        if resolved != out.resolve() and out.resolve().is_relative_to(resolved):
            raise DatasetError(f"--out {out} is inside the dataset {directory}: choose a folder outside it")
    return list(inputs.values())


def _check_pins(inputs: list[Path], manifests: list[dict]) -> None:
    """Every input pins what the first does (:data:`schema.PINNED_FIELDS`); else name the fields and datasets."""
    first = manifests[0]
    for directory, manifest in zip(inputs[1:], manifests[1:]):
        different = [key for key in schema.PINNED_FIELDS if manifest.get(key) != first.get(key)]
        if different:
            described = "; ".join(f"{key} {first.get(key)!r} ({inputs[0]}) vs {manifest.get(key)!r} ({directory})"
                                  for key in different)
            raise DatasetError(f"{inputs[0]} and {directory} are datasets made with other {', '.join(different)}: "
                               f"{described}; only datasets of the same arguments merge")


def _check_finished(directory: Path) -> None:
    problem = store.unfinished_problem(directory)
    if problem:
        raise DatasetError(problem)


def _files_by_name(inputs: list[Path], folder: str, pattern: str) -> dict[str, list[Path]]:
    """``folder/name`` -> every input's file of that name, in input order."""
    found: dict[str, list[Path]] = defaultdict(list)
    for directory in inputs:
        for path in dataset.plain_files(directory / folder):
            if path.match(pattern):
                found[f"{folder}/{path.name}"].append(path)
    return found


def _union_metadata(inputs: list[Path]) -> tuple[dict[str, Path], int]:
    """(``folder/name`` -> the first input's file, of every file besides the rows; logs kept from the first input
    where inputs differ), refusing differing files of one name and tasks with other facts."""
    chosen: dict[str, Path] = {}
    for folder, pattern in _UNIONED.items():
        for relative, paths in _files_by_name(inputs, folder, pattern).items():
            other = next((path for path in paths[1:] if not filecmp.cmp(paths[0], path, shallow=False)), None)
            if other is not None:
                raise DatasetError(f"{paths[0]} and {other} differ: two files named {relative} cannot both be "
                                   f"kept (one run's file cannot be two); keep the right copy in both, or leave "
                                   f"one dataset out")
            chosen[relative] = paths[0]
    for relative, paths in _files_by_name(inputs, schema.TASKS_DIR, "*.json").items():
        first = json.loads(paths[0].read_text())
        for path in paths[1:]:
            facts = json.loads(path.read_text())
            key = task_facts.difference(first, facts)
            if key is not None:
                raise DatasetError(f"task {first.get('id')} has other facts in {path.parents[1]} than in "
                                   f"{paths[0].parents[1]}: {key} {facts.get(key)!r} vs {first.get(key)!r} (made "
                                   f"from another catalogue); only datasets of the same tasks merge")
        chosen[relative] = paths[0]
    logs_kept_first = 0
    for relative, paths in _files_by_name(inputs, schema.LOGS_DIR, "*.log").items():
        logs_kept_first += any(not filecmp.cmp(paths[0], path, shallow=False) for path in paths[1:])
        chosen[relative] = paths[0]
    return chosen, logs_kept_first


def _choose_rows(inputs: list[Path]) -> tuple[dict[Path, list[int]], int, int]:
    """(shard -> indices of the rows it contributes, records, records held by several inputs): each input's row
    of a record by :func:`dataset.record_rows`, the first input's where several hold it, refusing a record whose
    status or pixels differ between inputs."""
    winners: dict[str, dict] = {}
    repeated: set[str] = set()
    for directory in inputs:
        located = [(row["record_id"], row["status"], row | {"file": path, "index": index})
                   for path in dataset.shard_files(directory) for index, row in enumerate(_identity(path))]
        for record, row in dataset.record_rows(located).items():
            held = winners.setdefault(record, row)
            if held is row:
                continue
            repeated.add(record)
            if (held["status"], held["image_sha256"]) != (row["status"], row["image_sha256"]):
                raise DatasetError(_conflict(record, held, row))
    kept: dict[Path, list[int]] = defaultdict(list)
    for row in winners.values():
        kept[row["file"]].append(row["index"])
    return {path: sorted(indices) for path, indices in kept.items()}, len(winners), len(repeated)


def _identity(path: Path) -> list[dict]:
    missing = [name for name in _IDENTITY if name not in pq.read_schema(path).names]
    if missing:
        raise DatasetError(f"{path}: missing column {missing[0]}")
    return pq.read_table(path, columns=list(_IDENTITY)).to_pylist()


def _conflict(record: str, held: dict, row: dict) -> str:
    def outcome(found: dict) -> str:
        pixels = f", pixels {found['image_sha256'][:12]}" if found["image_sha256"] else ""
        return f"{found['file'].parents[1]}: {found['status']}{pixels}"

    return (f"record {record} ({held['variant']}:{held['unit_id']}, seed {held['seed']}, batch size "
            f"{held['batch_size']}, prompt {held['prompt_index']}) differs between datasets ({outcome(held)}; "
            f"{outcome(row)}): a record is one image, merged only where every dataset holding it agrees; rerun "
            f"the failed one with `generate --retry-failed`, or leave one dataset out")


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _linked(source: Path) -> Callable[[Path], None]:
    return lambda target: dataset.link_or_copy(source, target)


def _copied(source: Path) -> Callable[[Path], None]:
    """Logs are copied: a later run of their dataset appends to them in place."""
    return lambda target: dataset.copy_atomic(source, target)


def _merge_record(inputs: list[Path], shards: list[str], dropped: list[str]) -> Callable[[Path], None]:
    """The merge's run record, written once its shards are built beside it: ``dataset.verify_shards`` takes a
    shard's digest from the latest record that lists it (a shard kept in part is a new file of the old name)."""
    def write(target: Path) -> None:
        from datetime import datetime, timezone

        built = target.parent.parent / schema.GENERATIONS_DIR
        dataset.write_json_atomic(target, {
            "kind": "merge", "inputs": [str(path) for path in inputs],
            "finished_at": datetime.now(timezone.utc).isoformat(),
            "shards": {name: dataset.file_sha256(built / name) for name in shards}, "dropped_shards": dropped})
    return write


def _filtered(source: Path, indices: list[int]) -> Callable[[Path], None]:
    """The rows ``indices`` of shard ``source``, as a shard of the same name and schema."""
    return lambda target: dataset.write_table_atomic(pq.read_table(source).take(pa.array(indices, pa.int64())),
                                                     target)


def _write(out: Path, entries: dict[str, Callable[[Path], None]], manifest_from: Path | None) -> None:
    """Build ``entries`` (relative path -> its writer) in a folder beside ``out``, then rename it to ``out`` (a
    new dataset, its manifest from ``manifest_from``), or with ``manifest_from`` None rename each entry into the
    existing dataset ``out``, in order."""
    building = out.parent / f".{out.name}.merge-{uuid.uuid4().hex[:8]}"
    try:
        building.mkdir(parents=True)
        for relative, write in entries.items():
            write(building / relative)
        if manifest_from is not None:
            dataset.link_or_copy(manifest_from / schema.DATASET_MANIFEST, building / schema.DATASET_MANIFEST)
            os.rename(building, out)  # out is absent or empty: the merged dataset appears whole or not at all
            return
        # Rows last: a reader never sees them before their programs, verdicts and records.
        for relative in sorted(entries, key=lambda relative: relative.startswith(f"{schema.GENERATIONS_DIR}/")):
            (out / relative).parent.mkdir(exist_ok=True)
            os.rename(building / relative, out / relative)
    except OSError as error:
        raise WriteError(f"cannot write {out}: {error.strerror or error}") from error
    finally:
        shutil.rmtree(building, ignore_errors=True)
