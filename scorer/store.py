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
import pyarrow.parquet as pq

from accelbench import dataset, schema

PART_GLOB = "part-*.parquet"
RECIPE_FILE = "recipe.json"


def clip_dir(directory: Path, recipe_id: str) -> Path:
    return Path(directory) / schema.SCORES_DIR / f"{schema.CLIP_DIR_PREFIX}{recipe_id}"


def fidelity_dir(directory: Path) -> Path:
    return Path(directory) / schema.SCORES_DIR / schema.FIDELITY_DIR


def clip_recipe_ids(directory: Path) -> list[str]:
    """Recipes with a scores folder holding a recipe.json, sorted."""
    scores = Path(directory) / schema.SCORES_DIR
    return sorted(path.parent.name[len(schema.CLIP_DIR_PREFIX):]
                  for path in scores.glob(f"{schema.CLIP_DIR_PREFIX}*/{RECIPE_FILE}"))


def read_recipe(directory: Path, recipe_id: str) -> dict | None:
    path = clip_dir(directory, recipe_id) / RECIPE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise dataset.DatasetError(f"{path}: unreadable CLIP recipe ({error})") from None


def part_files(folder: Path) -> list[Path]:
    return dataset.readable_parquet(sorted(Path(folder).glob(PART_GLOB)))


def read_scores(folder: Path, columns: tuple[schema.Column, ...], key: tuple[str, ...] = ("record_id",)) -> pa.Table:
    """Every row of a score folder (empty table when there is none), the first one of each ``key`` only."""
    target = schema.arrow_schema(columns, with_features=False)
    tables = [pq.read_table(path, columns=target.names).select(target.names).cast(target)
              for path in part_files(folder)]
    table = pa.concat_tables(tables) if tables else target.empty_table()
    return dataset.drop_duplicate_records(table, key)


def write_part(folder: Path, rows: list[dict], columns: tuple[schema.Column, ...]) -> Path:
    """Write ``rows`` as a new part file of ``folder`` (atomically) and return its path."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    path = Path(folder) / f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
    table = pa.Table.from_pylist(rows, schema=schema.arrow_schema(columns))
    dataset.write_table_atomic(table, path)
    return path
