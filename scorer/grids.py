"""Image grids of the report: what each task's programs drew, side by side, from the stored images alone.

``DIR/report/grids/<task_id>.png``, one per task (a deterministic sample of :data:`DEFAULT_MAX_TASKS` on large
datasets): one row per (prompt, seed) pair (batch size 1 where the task has it, else its smallest), one column
per variant (``baseline`` first, ``gt`` second, then every other variant the task has, e.g. ``sub:<name>``).
Each cell carries the image's stored CLIP score and its PSNR to the baseline image; a row that failed (or does
not exist) is a grey cell with its status. With ``diff``, each row is followed by the amplified absolute
difference of every image to the baseline's.

``DIR/report/grids/index.json`` says, per task, which file, rows and columns were drawn: the HTML report reads it.
No model runs here: images come from the generation shards, numbers from ``DIR/scores/``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from accelbench import dataset, schema
from accelbench.schema import KIND_BASELINE
from accelbench.scorer import aggregate, images, markdown, report
from accelbench.scorer.errors import ScoreError

GRIDS_DIR = "grids"  # under REPORT_DIR
INDEX_JSON = "index.json"
DEFAULT_MAX_TASKS = 24
DIFF_AMPLIFICATION = 8  # small differences (a few uint8 levels) must be visible, large ones saturate
# Layout in pixels at DPI, so a grid's size is exact (grid_pixels) and its cells can be found again (cell_box).
DPI = 100
CELL_PX, CAPTION_PX, DIFF_CAPTION_PX, HEADER_PX, LABEL_PX, PAD_PX = 160, 36, 14, 40, 190, 6
HEADER_CHARS = 26  # of a column's name, at 8 pt in one cell's width
FAILED_GREY = (0.82, 0.82, 0.82)
ROW_COLUMNS = ["record_id", "variant", "task_id", "setting_id", "prompt_index", "prompt", "seed", "batch_size",
               "status", "error"]


@dataclass(frozen=True)
class Pair:
    """One row of a grid: the images of one prompt and seed at one batch size."""

    prompt_index: int
    seed: int
    batch_size: int
    prompt: str


@dataclass(frozen=True)
class Grid:
    task_id: str
    pairs: list[Pair]
    variants: list[str]
    cells: dict[tuple[int, str], dict | None]  # (pair index, variant) -> generation row, None where there is none


# ---------------------------------------------------------------------------------------------------------
# What to draw
# ---------------------------------------------------------------------------------------------------------


def sample_tasks(task_ids, max_tasks: int) -> list[str]:
    """Every task when there are at most ``max_tasks``, else the ``max_tasks`` with the smallest sha256 of their
    id: the same sample on every run, and a task stays in it when the dataset grows unless a new one displaces it.
    Sorted by id.

    Example:
        >>> sample_tasks(["c", "a", "b"], 5), len(sample_tasks([f"t{i}" for i in range(50)], 4))
        (['a', 'b', 'c'], 4)
    """
    ids = sorted(set(task_ids))
    if len(ids) <= max_tasks:
        return ids
    return sorted(sorted(ids, key=lambda task: hashlib.sha256(task.encode()).hexdigest())[:max_tasks])


def variant_order(variants) -> list[str]:
    """``baseline`` first, ``gt`` second, then the other variants by name; both first two always present.

    Example:
        >>> variant_order(["sub:b", "gt", "reference", "sub:a"])
        ['baseline', 'gt', 'reference', 'sub:a', 'sub:b']
    """
    return [schema.BASELINE, schema.GT] + sorted(set(variants) - {schema.BASELINE, schema.GT})


def plan_grid(task_id: str, rows: list[dict], pairs: int) -> Grid:
    """The grid of ``task_id`` from the generation rows of the dataset: its own rows and its setting's baseline
    rows, the first ``pairs`` (seed, prompt) pairs at batch size 1 (else the task's smallest batch size)."""
    own = [row for row in rows if row["task_id"] == task_id]
    settings = {row["setting_id"] for row in own}
    base = [row for row in rows if row["variant"] == schema.BASELINE and row["setting_id"] in settings]
    sizes = sorted({row["batch_size"] for row in own} or {row["batch_size"] for row in base})
    batch_size = 1 if 1 in sizes else sizes[0] if sizes else None
    at_size = [row for row in own + base if row["batch_size"] == batch_size]
    prompts = {(row["seed"], row["prompt_index"]): row["prompt"] for row in at_size}
    chosen = [Pair(prompt_index, seed, batch_size, prompts[seed, prompt_index])
              for seed, prompt_index in sorted(prompts)[:pairs]]
    variants = variant_order(row["variant"] for row in own)
    by_key = {}
    for row in at_size:
        by_key.setdefault((row["variant"], row["seed"], row["prompt_index"]), row)
    cells = {(index, variant): by_key.get((variant, pair.seed, pair.prompt_index))
             for index, pair in enumerate(chosen) for variant in variants}
    return Grid(task_id, chosen, variants, cells)


def file_name(task_id: str) -> str:
    """The grid's file name: the task id with anything but ``[A-Za-z0-9._-]`` replaced, so no id leaves the folder.

    Example:
        >>> file_name("sd15-ddim-25-tome"), file_name("../x y")
        ('sd15-ddim-25-tome.png', '.._x_y.png')
    """
    return re.sub(r"[^A-Za-z0-9._-]", "_", task_id) + ".png"


# ---------------------------------------------------------------------------------------------------------
# Layout and captions
# ---------------------------------------------------------------------------------------------------------


def _row_heights(pairs: int, diff: bool) -> list[int]:
    return [CAPTION_PX + CELL_PX] * pairs if not diff else [CAPTION_PX + CELL_PX, DIFF_CAPTION_PX + CELL_PX] * pairs


def grid_pixels(pairs: int, variants: int, diff: bool) -> tuple[int, int]:
    """(width, height) in pixels of a grid of ``pairs`` rows and ``variants`` columns."""
    return LABEL_PX + variants * (CELL_PX + PAD_PX), HEADER_PX + sum(_row_heights(pairs, diff))


def cell_box(pair: int, variant: int, diff: bool, difference: bool = False) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) pixels of the image of row ``pair``, column ``variant`` (its difference image
    with ``difference``), from the grid's top left corner."""
    heights = _row_heights(pair + 1, diff)
    top = HEADER_PX + sum(heights[:(2 * pair if diff else pair) + (1 if difference else 0)])
    top += DIFF_CAPTION_PX if difference else CAPTION_PX
    left = LABEL_PX + variant * (CELL_PX + PAD_PX)
    return left, top, left + CELL_PX, top + CELL_PX


def caption(row: dict | None, clip_score: float | None, fidelity: dict | None) -> str:
    """The text above a cell: CLIP score and PSNR to the baseline, or what went wrong.

    Example:
        >>> caption({"status": "ok", "variant": "gt"}, 27.0, {"psnr": 33.14, "identical": False})
        'CLIP 27.00\\nPSNR 33.1 dB'
        >>> caption({"status": "rejected", "variant": "sub:a", "error": "failed the gate"}, None, None)
        'rejected\\nfailed the gate'
    """
    if row is None:
        return "no row"
    if row["status"] != schema.STATUS_OK:
        return row["status"] + ("\n" + textwrap.shorten(row["error"], 28) if row.get("error") else "")
    lines = [f"CLIP {markdown.number(clip_score)}"]
    if row["variant"] != schema.BASELINE:
        psnr = None if fidelity is None else fidelity["psnr"]
        lines.append("identical to baseline" if fidelity and fidelity["identical"]
                     else f"PSNR {markdown.number(psnr, 1)} dB")
    return "\n".join(lines)


def difference(image: np.ndarray, reference: np.ndarray) -> np.ndarray | None:
    """``|image - reference|`` amplified by :data:`DIFF_AMPLIFICATION`, uint8; None when the sizes differ."""
    if image.shape != reference.shape:
        return None
    delta = np.abs(image.astype(np.int16) - reference.astype(np.int16)) * DIFF_AMPLIFICATION
    return np.minimum(delta, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------------------


def render(grid: Grid, pixels: dict[str, np.ndarray], clip_scores: dict[str, float],
           fidelity: dict[tuple[str, str], dict], diff: bool) -> bytes:
    """The PNG of one grid; ``pixels``: record_id -> uint8 image of every ok cell."""
    # Figure + Agg canvas directly, not pyplot (as report._pareto_png): no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = grid_pixels(len(grid.pairs), len(grid.variants), diff)
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    # parse_math=False everywhere: prompts and submission names are data, a '$' in them is no formula.
    text = dict(fontsize=7, parse_math=False, transform=figure.transFigure)

    def axes_at(box):
        left, top, right, bottom = box
        axes = figure.add_axes((left / width, 1 - bottom / height, (right - left) / width, (bottom - top) / height))
        axes.set_xticks([])
        axes.set_yticks([])
        return axes

    def label(x_px, y_px, value, **style):
        figure.text(x_px / width, 1 - y_px / height, value, **{**text, **style})

    def failed(axes, message):
        axes.set_facecolor(FAILED_GREY)
        axes.text(0.5, 0.5, message, ha="center", va="center", fontsize=7, color="dimgrey", parse_math=False,
                  transform=axes.transAxes, wrap=True)

    for column, variant in enumerate(grid.variants):
        left = LABEL_PX + column * (CELL_PX + PAD_PX)
        name = variant.removeprefix(schema.SUBMISSION_PREFIX)
        name = name if len(name) <= HEADER_CHARS else name[:HEADER_CHARS - 1] + "…"  # one cell wide
        label(left + CELL_PX / 2, HEADER_PX / 2, name + ("\n(submission)" if variant != name else ""),
              ha="center", va="center", fontsize=8, fontweight="bold")
    for index, pair in enumerate(grid.pairs):
        top = cell_box(index, 0, diff)[1]
        label(8, top, "\n".join(textwrap.wrap(pair.prompt, 30)[:5])
              + f"\nseed {pair.seed}, prompt {pair.prompt_index}\nbatch size {pair.batch_size}", va="top")
        base_row = grid.cells[index, schema.BASELINE]
        base_pixels = pixels.get(base_row["record_id"]) if base_row else None
        for column, variant in enumerate(grid.variants):
            row = grid.cells[index, variant]
            box = cell_box(index, column, diff)
            label(box[0] + CELL_PX / 2, box[1] - 3, caption(
                row, clip_scores.get(row["record_id"]) if row else None,
                fidelity.get((row["record_id"], KIND_BASELINE)) if row else None), ha="center", va="bottom")
            axes = axes_at(box)
            image = pixels.get(row["record_id"]) if row else None
            if image is None:
                failed(axes, row["status"] if row else "no row")
            else:
                axes.imshow(image)
            if not diff:
                continue
            diff_box = cell_box(index, column, diff, difference=True)
            if variant == schema.BASELINE:
                label(diff_box[0] + CELL_PX / 2, diff_box[1] + CELL_PX / 2,
                      f"rows below images:\n|image − baseline| × {DIFF_AMPLIFICATION}", ha="center", va="center",
                      color="dimgrey")
                continue
            if image is None:
                continue  # the failed cell above says why; nothing to compare
            axes = axes_at(diff_box)
            delta = None if base_pixels is None else difference(image, base_pixels)
            if delta is None:
                failed(axes, "no baseline image" if base_pixels is None else "size differs\nfrom the baseline")
            else:
                axes.imshow(delta)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------
# Reading and writing
# ---------------------------------------------------------------------------------------------------------


def report_recipe(directory: Path) -> str | None:
    """The CLIP recipe of the report (``summary.json``), else the one the report would choose."""
    summary = Path(directory) / schema.REPORT_DIR / report.SUMMARY_JSON
    if summary.is_file():
        recipe = json.loads(summary.read_text()).get("recipe")
        if recipe:
            return recipe["recipe_id"]
    return report.choose_recipe(directory, None, dataset.read_manifest(directory))


def read_pixels(directory: Path, record_ids: set[str]) -> dict[str, np.ndarray]:
    """record_id -> uint8 RGB pixels of the ``record_ids`` whose stored row has an image that decodes (one that
    does not is left out: its cell is drawn as having no image, and ``score`` names it)."""
    located = images.locate(dataset.generation_files(directory))
    wanted = [(located[record], record) for record in sorted(record_ids) if record in located]
    found = {}
    for path, row_group, members in images.group_by_row_group(wanted):
        pngs = images.read_pngs(path, row_group)
        for row, record in members:
            if pngs[row] is not None:
                try:
                    found[record] = images.decode_rgb(pngs[row])
                except OSError:  # PIL's error for truncated or foreign bytes
                    continue
    return found


def write_grids(directory: Path, tasks: list[str] | None = None, max_tasks: int = DEFAULT_MAX_TASKS, pairs: int = 3,
                diff: bool = True, recipe_id: str | None = None) -> list[Path]:
    """Write ``DIR/report/grids/<task>.png`` for ``tasks`` (default: the dataset's tasks, :func:`sample_tasks` of
    ``max_tasks``) and ``index.json``; return the PNG paths. ``recipe_id``: the CLIP scores to show (default: the
    report's). Grids of tasks not drawn this time are removed, so the folder holds what the index says."""
    directory = Path(directory)
    rows = dataset.read_generations(directory, ROW_COLUMNS).to_pylist()
    known = {row["task_id"] for row in rows if row["task_id"]}
    unknown = sorted(set(tasks or []) - known)
    if unknown:
        raise ScoreError(f"{directory}: no rows of task(s) {', '.join(unknown)}")
    chosen = sorted(set(tasks)) if tasks else sample_tasks(known, max_tasks)
    recipe_id = recipe_id or report_recipe(directory)
    clip_scores = aggregate.load_clip_scores(directory, recipe_id) if recipe_id else {}
    fidelity = aggregate.load_fidelity(directory)
    grids = [plan_grid(task_id, rows, pairs) for task_id in chosen]
    pixels = read_pixels(directory, {row["record_id"] for grid in grids for row in grid.cells.values()
                                     if row and row["status"] == schema.STATUS_OK})

    folder = directory / schema.REPORT_DIR / GRIDS_DIR
    written, index = [], {}
    for grid in grids:
        path = folder / file_name(grid.task_id)
        dataset.write_bytes_atomic(path, render(grid, pixels, clip_scores, fidelity, diff))
        written.append(path)
        width, height = grid_pixels(len(grid.pairs), len(grid.variants), diff)
        index[grid.task_id] = {"file": path.name, "width": width, "height": height, "diff": diff,
                               "columns": grid.variants,
                               "rows": [{"prompt_index": p.prompt_index, "seed": p.seed, "batch_size": p.batch_size,
                                         "prompt": p.prompt} for p in grid.pairs]}
    for stale in set(folder.glob("*.png")) - set(written):
        stale.unlink()
    dataset.write_json_atomic(folder / INDEX_JSON, {
        "tasks": index, "sampled_from": len(known), "recipe_id": recipe_id,
        "diff_amplification": DIFF_AMPLIFICATION if diff else None})
    return written


def read_index(directory: Path) -> dict:
    """``grids/index.json`` of the report (``{"tasks": {}}`` when no grids were written)."""
    path = Path(directory) / schema.REPORT_DIR / GRIDS_DIR / INDEX_JSON
    return json.loads(path.read_text()) if path.is_file() else {"tasks": {}}
