"""Score folders of a dataset: where they are, reading them back, adding to them atomically.

Scores are only ever added: each scoring run writes new ``part-*.parquet`` files (atomic rename), never
rewrites old ones, so an interrupted run keeps what it wrote and concurrent runs cannot corrupt each other.
Readers keep the first row of each key in file-name order (names start with a UTC timestamp), as
:func:`accelbench.dataset.read_columns` does for generation rows. pyarrow only.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from accelbench import dataset, schema

RECIPE_FILE = "recipe.json"
FIDELITY_KEY = ("record_id", "kind")


def clip_dir(directory: Path, recipe_id: str) -> Path:
    return Path(directory) / schema.SCORES_DIR / f"{schema.CLIP_DIR_PREFIX}{recipe_id}"


def fidelity_dir(directory: Path) -> Path:
    return Path(directory) / schema.SCORES_DIR / schema.FIDELITY_DIR


def clip_recipe_ids(directory: Path) -> list[str]:
    """The CLIP recipes ``directory`` has scores of, sorted: the one definition every stage uses.

    A recipe exists when its folder holds ``recipe.json`` *and* at least one readable part file. The scorer
    writes recipe.json before its first part, so a run killed in between leaves a recipe.json without scores:
    such a folder is no recipe (and the next run of that recipe fills it)."""
    scores = Path(directory) / schema.SCORES_DIR
    return sorted(path.parent.name.removeprefix(schema.CLIP_DIR_PREFIX)
                  for path in scores.glob(f"{schema.CLIP_DIR_PREFIX}*/{RECIPE_FILE}") if part_files(path.parent))


def read_recipe(directory: Path, recipe_id: str) -> dict | None:
    path = clip_dir(directory, recipe_id) / RECIPE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise dataset.DatasetError(f"{path}: unreadable CLIP recipe ({error})") from None


def part_files(folder: Path) -> list[Path]:
    return dataset.readable_parquet(sorted(Path(folder).glob(schema.PART_GLOB)))


def read_scores(folder: Path, columns: tuple[schema.Column, ...], key: tuple[str, ...] = ("record_id",)) -> pa.Table:
    """Every row of a score folder (empty table when there is none), the first one of each ``key`` only."""
    target = schema.arrow_schema(columns, with_features=False)
    tables = [pq.read_table(path, columns=target.names).select(target.names).cast(target)
              for path in part_files(folder)]
    table = pa.concat_tables(tables) if tables else target.empty_table()
    return dataset.drop_duplicate_records(table, key)


def read_fidelity(directory: Path) -> pa.Table:
    """The fidelity scores of ``directory`` (FIDELITY_COLUMNS), one row per (record_id, kind)."""
    return read_scores(fidelity_dir(directory), schema.FIDELITY_COLUMNS, key=FIDELITY_KEY)


def gate_dir(directory: Path) -> Path:
    return Path(directory) / schema.GATE_DIR


def read_gate_verdicts(directory: Path) -> pa.Table | None:
    """The correctness gate's verdicts (GATE_COLUMNS) from ``DIR/gate/verdicts-*.parquet``; None when the
    dataset has none (it was not gated, which fails no task). Of several verdicts for one (program, task),
    the latest (``checked_at``) comes first."""
    paths = dataset.readable_parquet(sorted(gate_dir(directory).glob(schema.VERDICTS_GLOB)))
    if not paths:
        return None
    target = schema.arrow_schema(schema.GATE_COLUMNS, with_features=False)
    tables = []
    for path in paths:
        present = pq.read_schema(path).names
        missing = [name for name in ("program_sha256", "task_id", "passed") if name not in present]
        if missing:
            raise dataset.DatasetError(f"{path}: missing column {missing[0]}")
        table = pq.read_table(path, columns=[name for name in target.names if name in present])
        for name in target.names:
            if name not in table.column_names:
                table = table.append_column(name, pa.nulls(table.num_rows, target.field(name).type))
        tables.append(table.select(target.names).cast(target))
    table = pa.concat_tables(tables)
    return table.sort_by([("checked_at", "descending")]) if table.num_rows else table


def scores_table(directory: Path, recipe_id: str) -> pa.Table:
    """The CLIP scores of one recipe joined with the scored rows' identity and fidelity (SCORES_COLUMNS).

    One row per scored image; a row without a fidelity row of some kind (a baseline image has no baseline to
    be compared with) has nulls there. Sorted by record_id."""
    clip = read_scores(clip_dir(directory, recipe_id), schema.CLIP_SCORE_COLUMNS)
    identity = dataset.read_generations(directory, list(schema.SCORES_IDENTITY))
    table = clip.select(["record_id", *schema.SCORES_CLIP]).join(identity, "record_id", join_type="left outer")
    fidelity = read_fidelity(directory)
    for kind, names in schema.SCORES_FIDELITY.items():
        of_kind = fidelity.filter(pc.equal(fidelity["kind"], kind)).select(["record_id", *names])
        table = table.join(of_kind.rename_columns(["record_id", *names.values()]), "record_id",
                           join_type="left outer")
    target = schema.arrow_schema(schema.SCORES_COLUMNS)
    return table.select(target.names).cast(target).sort_by("record_id")


def write_part(folder: Path, rows: list[dict], columns: tuple[schema.Column, ...]) -> Path:
    """Write ``rows`` as a new part file of ``folder`` (atomically) and return its path."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    path = Path(folder) / schema.part_file(f"{stamp}-{uuid.uuid4().hex[:8]}")
    table = pa.Table.from_pylist(rows, schema=schema.arrow_schema(columns))
    dataset.write_table_atomic(table, path)
    return path


def unreadable_generation_files(directory: Path) -> list[Path]:
    """Generation shards and part files whose Parquet footer cannot be read, relative to ``directory``.

    Every reader skips them (:func:`accelbench.dataset.readable_parquet`), so their rows are in no score and
    no report: the score stage reports them and exits 1, publish refuses the dataset."""
    directory = Path(directory)
    # The files dataset.shard_files and dataset.part_files look at, before they drop the unreadable ones.
    named = sorted((directory / schema.GENERATIONS_DIR).glob(f"{schema.SHARD_PREFIX}*.parquet"))
    named += sorted((directory / schema.STAGING_DIR).glob(f"*/{schema.PART_GLOB}"))
    readable = set(dataset.readable_parquet(named))
    return [path.relative_to(directory) for path in named if path not in readable]


def unfinished_problem(directory: Path) -> str | None:
    """Why ``directory`` cannot be merged or published yet: part files of an unfinished run, or a shard or part
    that does not read; None when it is finished and readable."""
    directory = Path(directory)
    parts = dataset.part_files(directory)
    if parts:
        return (f"{directory} has {len(parts)} unfinished part file(s) in {schema.STAGING_DIR}/ (a run that was "
                f"interrupted or is still going): rerun `accelbench generate` with the same arguments to finish "
                f"them first")
    unreadable = unreadable_generation_files(directory)
    if unreadable:
        return f"{directory / unreadable[0]} is not a readable Parquet file: restore or remove it first"
    return None
