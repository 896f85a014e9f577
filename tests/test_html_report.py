"""The report's image grids (accelbench.scorer.grids), on the scored test dataset of tests/factories.py (three
smoke tasks, the GT and submissions alpha and beta).
"""

import shutil

import numpy as np
import pytest
from factories import (BROKEN, FAST, HAND_RECIPE, NOOP, TASKS, baseline_pixels, dataset_rows, known_scores,
                       passing_verdicts, submission_rows, write_clip_scores, write_dataset, write_verdicts)
from PIL import Image

from accelbench import schema
from accelbench.builder.encode import to_uint8
from accelbench.scorer import fidelity, grids, report
from accelbench.scorer.errors import ScoreError

COLUMNS = ["baseline", "gt", "sub:alpha", "sub:beta"]


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """The scored and reported test dataset with its grids: (directory, grid paths)."""
    directory = tmp_path_factory.mktemp("html") / "ds"
    rows = dataset_rows() + submission_rows("alpha") + submission_rows("beta")
    write_dataset(directory, rows=rows)
    write_verdicts(directory, passing_verdicts(rows))
    write_clip_scores(directory, known_scores(directory))
    fidelity.score_fidelity(directory, num_workers=0, progress=False)
    report.build_report(directory, recipe_id=HAND_RECIPE, n_resamples=200)
    return directory, grids.write_grids(directory)


def interior(image: Image.Image, box) -> np.ndarray:
    """The pixels of a cell, inside its 1-pixel frame."""
    left, top, right, bottom = box
    return np.asarray(image.convert("RGB"))[top + 2:bottom - 2, left + 2:right - 2].astype(int)


# ---------------------------------------------------------------------------------------------------------
# Grids
# ---------------------------------------------------------------------------------------------------------


def test_a_grid_per_task_sized_for_its_rows_and_columns(reported, tmp_path):
    directory, paths = reported
    index = grids.read_index(directory)
    assert sorted(index["tasks"]) == sorted(TASKS) and [path.name for path in paths] == [
        index["tasks"][task]["file"] for task in sorted(TASKS)]
    for task, entry in index["tasks"].items():
        assert entry["columns"] == COLUMNS  # baseline, GT, then the submissions
        assert [(r["prompt_index"], r["seed"], r["batch_size"]) for r in entry["rows"]] == [(0, 0, 1), (1, 0, 1),
                                                                                           (2, 0, 1)]
        with Image.open(directory / schema.REPORT_DIR / grids.GRIDS_DIR / entry["file"]) as image:
            assert image.size == (entry["width"], entry["height"]) == grids.grid_pixels(3, 4, diff=True)

    # Fewer rows, no difference rows, one task: smaller, and the other tasks' grids are gone.
    copy = tmp_path / "ds"
    shutil.copytree(directory, copy)
    [path] = grids.write_grids(copy, tasks=[FAST], pairs=2, diff=False)
    assert sorted(p.name for p in path.parent.glob("*.png")) == [path.name]
    width, height = grids.grid_pixels(2, 4, diff=False)
    assert Image.open(path).size == (width, height) and height < grids.grid_pixels(3, 4, diff=True)[1] / 2
    with pytest.raises(ScoreError, match="no rows of task"):
        grids.write_grids(copy, tasks=["no-such-task"])


def test_grid_cells_show_images_failures_and_differences(reported):
    directory, _ = reported
    folder = directory / schema.REPORT_DIR / grids.GRIDS_DIR
    grey = np.array(grids.FAILED_GREY) * 255
    with Image.open(folder / grids.file_name(BROKEN)) as image:
        for pair in range(3):
            # alpha was rejected and beta raised on every row: grey cells, and no difference image below them.
            for column in (2, 3):
                cell = interior(image, grids.cell_box(pair, column, True))
                assert (np.abs(cell - grey).max(axis=-1) <= 1).mean() > 0.9  # grey but for the status written on it
                assert interior(image, grids.cell_box(pair, column, True, difference=True)).min() == 255
            # The baseline's cell is its image (resampled): the same mean colour.
            expected = to_uint8(baseline_pixels(pair)).reshape(-1, 3).mean(axis=0)
            cell = interior(image, grids.cell_box(pair, 0, True)).reshape(-1, 3).mean(axis=0)
            assert np.abs(cell - expected).max() < 4
    with Image.open(folder / grids.file_name(NOOP)) as noop, Image.open(folder / grids.file_name(FAST)) as fast:
        for pair in range(3):
            assert interior(noop, grids.cell_box(pair, 1, True, difference=True)).max() == 0  # identical to baseline
            close = interior(fast, grids.cell_box(pair, 1, True, difference=True)).mean()
            noise = interior(fast, grids.cell_box(pair, 3, True, difference=True)).mean()  # beta's noise images
            assert 0 < close < 80 < noise


def test_the_task_sample_is_stable_as_a_dataset_grows():
    tasks = [f"task-{i}" for i in range(74)]
    sample = grids.sample_tasks(tasks, 24)
    assert len(sample) == 24 and sample == sorted(sample) == grids.sample_tasks(reversed(tasks), 24)
    grown = grids.sample_tasks(tasks + [f"new-{i}" for i in range(5)], 24)
    assert len(set(sample) - set(grown)) == len(set(grown) - set(sample)) <= 5
