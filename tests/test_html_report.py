"""The report's image grids (accelbench.scorer.grids) and web page (accelbench.scorer.html_report), on the scored
test dataset of tests/factories.py (three smoke tasks, the GT and submissions alpha and beta); then the page in a
real browser, headless Chromium, where one is installed.
"""

import base64
import csv
import doctest
import hashlib
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from factories import (
    BROKEN,
    DEVICE_NAME,
    FAST,
    HAND_RECIPE,
    NOOP,
    PIPELINE,
    TASKS,
    UNITS,
    VERSIONS,
    baseline_pixels,
    dataset_rows,
    known_scores,
    passing_verdicts,
    submission_rows,
    write_clip_scores,
    write_dataset,
    write_verdicts,
)
from PIL import Image

from accelbench import dataset, schema
from accelbench.builder.encode import to_uint8
from accelbench.scorer import fidelity, grids, html_report, leaderboard_files, report
from accelbench.scorer.errors import ScoreError

COLUMNS = ["baseline", "gt", "sub:alpha", "sub:beta"]


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """The scored and reported test dataset with its grids and page: (directory, grid paths, page path)."""
    directory = tmp_path_factory.mktemp("html") / "ds"
    rows = dataset_rows((*UNITS, PIPELINE)) + submission_rows("alpha") + submission_rows("beta")
    write_dataset(directory, rows=rows)
    write_verdicts(directory, passing_verdicts(rows))
    write_clip_scores(directory, known_scores(directory))
    fidelity.score_fidelity(directory, num_workers=0, progress=False)
    report.build_report(directory, recipe_id=HAND_RECIPE, n_resamples=200)
    return directory, grids.write_grids(directory), html_report.write_html_report(directory)


class Node:
    def __init__(self, tag: str, attrs: dict, parent=None):
        self.tag, self.attrs, self.parent, self.children, self.text = tag, attrs, parent, [], ""

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()

    def find(self, tag=None, **attrs):
        """Descendants with ``tag`` whose attributes equal ``attrs`` (``data_x`` stands for ``data-x``)."""
        wanted = {name.replace("_", "-"): value for name, value in attrs.items()}
        return [node for node in self.walk() if (tag is None or node.tag == tag)
                and all(node.attrs.get(name) == value for name, value in wanted.items())]

    def all_text(self) -> str:
        return self.text + "".join(child.all_text() for child in self.children)


class TreeBuilder(HTMLParser):
    """A document tree from html.parser (which only reports tags): enough to query what the page holds."""

    VOID = {"meta", "img", "br", "input", "link", "hr"}

    def __init__(self):
        super().__init__()
        self.root = self.current = Node("#document", {})

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {name: "" if value is None else value for name, value in attrs}, self.current)
        self.current.children.append(node)
        if tag not in self.VOID:
            self.current = node

    def handle_endtag(self, tag):
        node = self.current
        while node.parent is not None and node.tag != tag:
            node = node.parent
        assert node.tag == tag, f"</{tag}> closes nothing"
        self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(text := Node("#text", {}, self.current))
        text.text = data


def parse(text: str) -> Node:
    builder = TreeBuilder()
    builder.feed(text)
    builder.close()
    assert builder.current is builder.root, f"<{builder.current.tag}> is never closed"
    return builder.root


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def leaderboard_rows(document: Node) -> list[Node]:
    [table] = document.find("table", id="leaderboard")
    return [row for row in table.find("tr") if "data-submission" in row.attrs]


def interior(image: Image.Image, box) -> np.ndarray:
    """The pixels of a cell, inside its 1-pixel frame."""
    left, top, right, bottom = box
    return np.asarray(image.convert("RGB"))[top + 2:bottom - 2, left + 2:right - 2].astype(int)


# ---------------------------------------------------------------------------------------------------------
# Grids
# ---------------------------------------------------------------------------------------------------------


def test_a_grid_per_task_sized_for_its_rows_and_columns(reported, tmp_path):
    directory, paths, _ = reported
    index = grids.read_index(directory)
    assert sorted(index["tasks"]) == sorted((*TASKS, PIPELINE)) and [path.name for path in paths] == [
        index["tasks"][task]["file"] for task in sorted((*TASKS, PIPELINE))]
    for task, entry in index["tasks"].items():
        assert entry["columns"] == (COLUMNS[:2] if task == PIPELINE else COLUMNS)  # baseline, GT, the submissions
        assert [(r["prompt_index"], r["seed"], r["batch_size"]) for r in entry["rows"]] == [(0, 0, 1), (1, 0, 1),
                                                                                           (2, 0, 1)]
        with Image.open(directory / schema.REPORT_DIR / grids.GRIDS_DIR / entry["file"]) as image:
            columns = len(entry["columns"])
            assert image.size == (entry["width"], entry["height"]) == grids.grid_pixels(3, columns, diff=True)

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
    directory, _, _ = reported
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


def test_docstring_examples():
    failures, tried = doctest.testmod(grids)
    assert failures == 0 and tried >= 5


# ---------------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------------


def test_leaderboard_rows_hold_the_csv_values_and_show_report_md_numbers(reported):
    directory, _, page = reported
    document = parse(page.read_text())
    written = csv_rows(directory / schema.REPORT_DIR / leaderboard_files.LEADERBOARD_CSV)
    rows = leaderboard_rows(document)
    assert [row.attrs["data-submission"] for row in rows] == [r["submission"] for r in written] == ["gt", "alpha",
                                                                                                   "beta"]
    for row, expected in zip(rows, written):
        assert {name: row.attrs[f"data-{name}"] for name in expected} == expected
    # The cells are report.md's: the same formatting of the same numbers.
    markdown = (directory / schema.REPORT_DIR / report.REPORT_MD).read_text()
    for row, expected in zip(rows, written):
        name = "**gt** (reference)" if expected["reference"] == "true" else f"`{expected['submission']}`"
        [line] = [line for line in markdown.splitlines() if line.startswith(f"| {name} |")]
        cells = [cell.all_text().strip() for cell in row.find("td")]
        assert cells[1:] == line.strip("| ").split(" | ")[1:]
    [header] = document.find("table", id="leaderboard")[0].find("thead")
    assert [th.attrs.get("data-key") for th in header.find("th")] == [
        "submission", "rank", "correct", "fast_0", "fast_1", "fast_1_5", "fast_2", None, "gt_parity",
        "geomean_speedup", "quality_loss", "psnr_gt", "identical_to_gt", "tied_with", "reasons"]  # None: solved by
    # level, counts over several levels, is not one number to sort by (its pass_l* are data attributes)


def test_page_has_level_tabs_task_sections_notes_and_provenance(reported):
    directory, _, page = reported
    document = parse(page.read_text())
    tabs = document.find("button", role="tab")
    assert [tab.all_text() for tab in tabs] == ["All tasks", "Level 1", "Level 2"]  # PIPELINE is level 1
    for tab in tabs:
        assert len(document.find(id=tab.attrs["aria-controls"], role="tabpanel")) == 1
    level_1, level_2 = (document.find(id=tab.attrs["aria-controls"])[0] for tab in tabs[1:])
    assert [row.attrs["data-submission"] for row in level_2.find("tr") if "data-submission" in row.attrs] == [
        "gt", "alpha", "beta"] and BROKEN in level_2.all_text() and PIPELINE not in level_2.all_text()
    assert PIPELINE in level_1.all_text() and FAST not in level_1.all_text()

    index = grids.read_index(directory)["tasks"]
    for task in TASKS:
        [section] = document.find("section", id=f"task-{task}")
        [image] = section.find("img")
        assert image.attrs["src"] == f"{grids.GRIDS_DIR}/{index[task]['file']}"
        variants = [row.attrs["data-variant"] for row in section.find("tr") if "data-variant" in row.attrs]
        assert variants == COLUMNS  # one summary row per variant, the baseline once
    broken = document.find("section", id=f"task-{BROKEN}")[0].all_text()
    assert "rejected × 8: failed the correctness gate: steps" in broken and "nonfinite × 2" in broken
    assert "deviates: mean PSNR to the GT" in document.find("section", id=f"task-{FAST}")[0].all_text()
    assert "no-op" in [row.attrs["data-flags"] for row in document.find("section", id=f"task-{NOOP}")[0].find(
        "tr", data_variant="gt")][0]

    text = document.all_text()
    notes = json.loads((directory / schema.REPORT_DIR / report.SUMMARY_JSON).read_text())["notes"]
    assert notes and all(note in text for note in notes)
    provenance = document.find("section", id="provenance")[0].all_text()
    assert DEVICE_NAME in provenance and "200 resamples" in provenance
    assert all(package in provenance and version in provenance for package, version in VERSIONS.items())


def test_every_reference_is_local_and_exists(reported):
    directory, _, page = reported
    text = page.read_text()
    document = parse(text)
    ids = {node.attrs["id"] for node in document.walk() if "id" in node.attrs}
    references = [(node.tag, name, node.attrs[name]) for node in document.walk() for name in ("src", "href")
                  if name in node.attrs]
    assert len([r for r in references if r[1] == "src"]) == 7  # four grids, three plots
    for tag, name, value in references:
        parts = urlsplit(value)
        assert not parts.scheme and not parts.netloc, f"<{tag} {name}={value}> leaves the folder"
        if parts.path:
            assert (page.parent / parts.path).is_file(), f"<{tag} {name}={value}>: no such file"
        else:
            assert parts.fragment in ids, f"<{tag} {name}={value}>: no such anchor"
    assert "http://" not in text and "https://" not in text and "url(" not in text and "@import" not in text


def test_the_policy_runs_only_the_pages_own_script_and_style(reported):
    _, _, page = reported
    document = parse(page.read_text())
    [policy] = document.find("meta", http_equiv="Content-Security-Policy")
    rules = dict(rule.strip().split(" ", 1) for rule in policy.attrs["content"].split(";"))
    assert rules["default-src"] == "'none'" and "'unsafe-inline'" not in policy.attrs["content"]
    for tag, rule in (("script", "script-src"), ("style", "style-src")):
        [node] = document.find(tag)
        digest = base64.b64encode(hashlib.sha256(node.all_text().encode()).digest()).decode()
        assert rules[rule] == f"'sha256-{digest}'"  # else the browser refuses to run it
    assert not [node for node in document.walk() if any(name.startswith("on") or name == "style"
                                                        for name in node.attrs)]


def test_a_dataset_without_submissions_gets_a_page_too(tmp_path):
    directory = write_dataset(tmp_path / "ds")
    write_clip_scores(directory, known_scores(directory))
    report.build_report(directory, recipe_id=HAND_RECIPE, n_resamples=50)
    document = parse(html_report.write_html_report(directory).read_text())
    assert "No submissions in this dataset." in document.all_text()
    assert not document.find("table", id="leaderboard") and not document.find(role="tablist")
    # build_report drew the grids too: the Pareto plot, then one grid per task
    assert [image.attrs["src"] for image in document.find("img")] == [report.PARETO_PNG] + [
        f"{grids.GRIDS_DIR}/{grids.file_name(task)}" for task in sorted(TASKS)]
    sections = document.find("section", **{"class": "task"})
    assert len(sections) == len(TASKS) and "No image grid" not in document.all_text()

    # A grid of one task: the others say they are not in the grids' sample.
    grids.write_grids(directory, tasks=[FAST])
    document = parse(html_report.write_html_report(directory).read_text())
    for task in TASKS:
        [section] = document.find("section", id=f"task-{task}")
        assert bool(section.find("img")) == (task == FAST) == ("No image grid" not in section.all_text())


def test_values_from_submissions_are_escaped(reported, tmp_path):
    directory, _, _ = reported
    copy = tmp_path / "ds"
    shutil.copytree(directory, copy)
    board = leaderboard_files.read(copy)
    name, reason = "<b>x</b>", '<img src=x onerror="alert(1)">'
    for row in board.rows + board.tasks:
        if row["variant"] == "sub:alpha":
            row["submission"] = name
    for result in board.tasks:
        if result["variant"] == "sub:alpha" and result["reason"]:
            result["reason"] = reason
    leaderboard_files.write(copy / schema.REPORT_DIR, board, "smoke")
    dataset.write_json_atomic(copy / schema.RUNS_DIR / "run2-r0.json", {"submissions": {
        "<script>alert(1)</script>": {"name": "<script>alert(1)</script>", "author": "<i>me</i>",
                                      "notes": '"quoted" & <tag>'}}})
    text = html_report.write_html_report(copy).read_text()
    for raw in (name, reason, "<script>alert", "<i>me</i>", "<tag>"):
        assert raw not in text
    assert "&lt;b&gt;x&lt;/b&gt;" in text and "&quot;quoted&quot; &amp; &lt;tag&gt;" in text
    document = parse(text)
    assert len(document.find("script")) == 1
    assert not [node for node in document.find("b") if node.all_text() == "x"] and not document.find("i")
    assert not document.find("img", src="x") and not document.find("tag")
    [alpha] = [row for row in leaderboard_rows(document) if row.attrs["data-variant"] == "sub:alpha"]
    assert alpha.attrs["data-submission"] == name  # the exact CSV value, unescaped by the parser
    [described] = [row for row in document.find("section", id="provenance")[0].find("tr")
                   if row.attrs.get("data-submission") == "<script>alert(1)</script>"]
    assert [cell.all_text() for cell in described.find("td")] == [
        "<script>alert(1)</script>", "<i>me</i>", "", "", '"quoted" & <tag>']  # shown as text


# ---------------------------------------------------------------------------------------------------------
# In a browser
# ---------------------------------------------------------------------------------------------------------


def chromium() -> str | None:
    return shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)


def run_chromium(binary: str, profile: Path, *arguments: str) -> subprocess.CompletedProcess:
    """Headless Chromium with nothing that reaches the network on its own (updates, sync, QUIC)."""
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", *arguments]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def descending(value: str) -> tuple:
    """A leaderboard.csv number's place in a descending sort, as the page's script sorts: empty values last."""
    return value == "", -float(value) if value else 0.0


@pytest.mark.slow  # 4-8 s on 2 shared cores: two browser starts
@pytest.mark.skipif(chromium() is None, reason="no chromium on PATH or at /usr/bin/chromium "
                                               "(apt-get install chromium)")
def test_the_page_in_a_browser(reported, tmp_path):
    directory, _, page = reported
    binary = chromium()
    written = csv_rows(directory / schema.REPORT_DIR / leaderboard_files.LEADERBOARD_CSV)
    images = len(parse(page.read_text()).find("img"))

    # The DOM after the script ran, opened sorted by geomean speedup (#sort=...).
    dumped = run_chromium(binary, tmp_path / "profile", "--dump-dom", page.as_uri() + "#sort=geomean_speedup").stdout
    document = parse(dumped)
    [table] = document.find("table", id="leaderboard", data_sortable="ready")
    order = sorted(written, key=lambda row: descending(row["geomean_speedup"]))
    rows = leaderboard_rows(document)
    assert [row.attrs["data-submission"] for row in rows] == [r["submission"] for r in order] == ["alpha", "gt",
                                                                                                 "beta"]
    for row, expected in zip(rows, order):
        assert {name: row.attrs[f"data-{name}"] for name in expected} == expected
    assert table.find("th", data_key="geomean_speedup")[0].attrs["aria-sort"] == "descending"
    [tablist] = document.find(role="tablist", data_tabs="ready")
    panels = [document.find(id=tab.attrs["aria-controls"])[0] for tab in tablist.find("button")]
    assert ["hidden" in panel.attrs for panel in panels] == [False, True, True]
    assert document.find("body")[0].attrs["data-images-loaded"] == f"{images}/{images}"  # none blocked or missing

    # What a person sees: a screenshot, kept.
    artefacts = Path(os.environ.get("ACCELBENCH_TEST_ARTEFACTS") or tmp_path)
    artefacts.mkdir(parents=True, exist_ok=True)
    shot = artefacts / "html-report.png"
    shot.unlink(missing_ok=True)
    run_chromium(binary, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri())
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape == (2000, 1280, 3)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100 and pixels.std() > 20  # text, tables, plots
