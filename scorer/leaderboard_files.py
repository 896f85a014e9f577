"""The leaderboard's files in ``DIR/report/`` (or a ``leaderboard --out`` folder): ``leaderboard.csv`` (one row
per submission, LEADERBOARD_COLUMNS), ``leaderboard.json`` (the rows, breakdown, notes, definitions and meta),
``leaderboard_tasks.csv`` (LEADERBOARD_TASK_COLUMNS), ``leaderboard_pairs.csv`` (LEADERBOARD_PAIR_COLUMNS),
``fast_p.png`` and ``speedup_heatmap.png``; written atomically and read back typed."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from accelbench import dataset, schema
from accelbench.scorer import functional
from accelbench.scorer.leaderboard import Leaderboard, LeaderboardError, definitions
from accelbench.scorer.plots import fast_p_png, heatmap_png

LEADERBOARD_CSV, LEADERBOARD_JSON, TASKS_CSV = "leaderboard.csv", "leaderboard.json", "leaderboard_tasks.csv"
PAIRS_CSV = "leaderboard_pairs.csv"
FAST_P_PNG, HEATMAP_PNG = "fast_p.png", "speedup_heatmap.png"
FILES = (LEADERBOARD_CSV, LEADERBOARD_JSON, TASKS_CSV, PAIRS_CSV, FAST_P_PNG, HEATMAP_PNG)
LEADERBOARD_MD = "leaderboard.md"  # `accelbench leaderboard --out` only: report.md holds the section
REMEDY = "run `accelbench score` (or `report`) on a dataset with submissions"


def _read(path: Path, columns) -> pa.Table:
    try:
        return dataset.read_typed_csv(path, columns, REMEDY)
    except dataset.DatasetError as error:
        raise LeaderboardError(str(error)) from None


def write(folder: Path, board: Leaderboard, title: str) -> None:
    """``leaderboard.csv``, ``leaderboard.json``, ``leaderboard_tasks.csv``, ``leaderboard_pairs.csv``,
    ``fast_p.png``, ``speedup_heatmap.png`` in ``folder`` (atomically, each)."""
    folder = Path(folder)
    columns = schema.leaderboard_columns(board.fast_p)
    dataset.write_csv_atomic(folder / LEADERBOARD_CSV, board.rows, columns)
    dataset.write_csv_atomic(folder / TASKS_CSV, board.tasks, schema.LEADERBOARD_TASK_COLUMNS)
    dataset.write_csv_atomic(folder / PAIRS_CSV, board.pairs, schema.LEADERBOARD_PAIR_COLUMNS)
    dataset.write_json_atomic(folder / LEADERBOARD_JSON, {
        "meta": board.meta, "fast_p": list(board.fast_p), "notes": board.notes, "n_resamples": board.n_resamples,
        "definitions": definitions(board), "columns": {column.name: column.doc for column in columns},
        "rows": board.rows, "breakdown": board.breakdown})
    weights = board.meta.get("weights")
    dataset.write_bytes_atomic(folder / FAST_P_PNG, fast_p_png(board, title, weights))
    dataset.write_bytes_atomic(folder / HEATMAP_PNG, heatmap_png(board, title, weights))


def read_meta(directory: Path) -> dict:
    """``leaderboard.json`` of a dataset (its ``report/``)."""
    path = Path(directory) / schema.REPORT_DIR / LEADERBOARD_JSON
    if not path.is_file():
        raise LeaderboardError(f"{directory}: no leaderboard ({schema.REPORT_DIR}/{LEADERBOARD_JSON}): run "
                               f"`accelbench score` (or `report`) on a dataset with submissions")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise LeaderboardError(f"{path}: unreadable leaderboard ({error})") from None


def read_leaderboard(directory: Path) -> pa.Table:
    """``report/leaderboard.csv`` of a dataset, typed as the leaderboard columns of its fast_p thresholds."""
    fast_p = tuple(read_meta(directory).get("fast_p", schema.DEFAULT_FAST_P))
    return _read(Path(directory) / schema.REPORT_DIR / LEADERBOARD_CSV, schema.leaderboard_columns(fast_p))


def read_task_results(directory: Path) -> list[dict]:
    """``report/leaderboard_tasks.csv`` of a dataset (LEADERBOARD_TASK_COLUMNS, typed)."""
    return _read(Path(directory) / schema.REPORT_DIR / TASKS_CSV, schema.LEADERBOARD_TASK_COLUMNS).to_pylist()


def read(directory: Path) -> Leaderboard:
    """The leaderboard ``accelbench score`` / ``report`` wrote into ``DIR/report/`` (or ``leaderboard --out``
    wrote into a folder: ``directory`` may be either), read back typed."""
    directory = Path(directory)
    in_report = (directory / schema.REPORT_DIR / LEADERBOARD_JSON).is_file()
    folder = directory / schema.REPORT_DIR if in_report else directory
    path = folder / LEADERBOARD_JSON
    if not path.is_file():
        raise LeaderboardError(f"{directory}: no leaderboard ({LEADERBOARD_JSON}): run `accelbench score` (or "
                               f"`report`) on a dataset with submissions")
    payload = json.loads(path.read_text())
    fast_p = tuple(payload.get("fast_p", schema.DEFAULT_FAST_P))
    rows = _read(folder / LEADERBOARD_CSV, schema.leaderboard_columns(fast_p)).to_pylist()
    tasks = _read(folder / TASKS_CSV, schema.LEADERBOARD_TASK_COLUMNS).to_pylist()
    pairs = _read(folder / PAIRS_CSV, schema.LEADERBOARD_PAIR_COLUMNS).to_pylist()
    return Leaderboard(rows, tasks, payload.get("breakdown", []), fast_p, payload.get("meta", {}),
                       payload.get("notes", []), payload.get("n_resamples", functional.BOOTSTRAP_RESAMPLES), pairs)
