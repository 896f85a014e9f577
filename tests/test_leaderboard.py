"""The leaderboard (accelbench.scorer.leaderboard): correctness per (submission, task), fast_p, GT-relative scores,
the files and plots, merging datasets (`accelbench leaderboard`) and the published `leaderboard` config.

Datasets come from tests/factories.py: the three smoke tasks with their GT and two submissions (alpha, beta) of
known statuses, latencies and pixels, CLIP scores written by hand, fidelity by the scorer, gate verdicts as
`generate` writes them.
"""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from factories import (
    BROKEN,
    CATALOG,
    FAST,
    HAND_RECIPE,
    NOOP,
    SETTING,
    dataset_rows,
    known_scores,
    passing_verdicts,
    program_sha256,
    row,
    submission_rows,
    write_clip_scores,
    write_dataset,
    write_verdicts,
)
from PIL import Image

from accelbench import dataset, schema, task_facts
from accelbench.cli import EXIT_BAD_INPUT, main
from accelbench.scorer import (
    aggregate,
    correctness,
    fidelity,
    functional,
    leaderboard,
    leaderboard_files,
    leaderboard_markdown,
    markdown,
    report,
    store,
)

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def build(directory: Path, rows: list[dict], verdicts: bool = True, resamples: int = 200) -> report.Report:
    """A scored and reported dataset of ``rows``: hand-made CLIP scores, fidelity by the scorer."""
    write_dataset(directory, rows=rows)
    if verdicts:
        write_verdicts(directory, passing_verdicts(rows))
    write_clip_scores(directory, known_scores(directory))
    fidelity.score_fidelity(directory, num_workers=0, progress=False)
    return report.build_report(directory, recipe_id=HAND_RECIPE, n_resamples=resamples)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    directory = tmp_path_factory.mktemp("board") / "ds"
    rows = dataset_rows() + submission_rows("alpha") + submission_rows("beta")
    return directory, build(directory, rows), rows


def result(board: leaderboard.Leaderboard, variant: str, task: str) -> dict:
    [found] = [r for r in board.tasks if r["variant"] == variant and r["task_id"] == task]
    return found


def board_row(board: leaderboard.Leaderboard, submission: str) -> dict:
    [found] = [r for r in board.rows if r["submission"] == submission]
    return found


# ---------------------------------------------------------------------------------------------------------
# fast_p, by hand
# ---------------------------------------------------------------------------------------------------------


def test_fast_p_on_hand_made_cases():
    fast_p = functional.fast_p
    # All correct: the fraction faster than p.
    assert fast_p(np.ones(4, bool), np.array([2.0, 3.0, 1.5, 1.2]), 1.0) == 1.0
    assert fast_p(np.ones(4, bool), np.array([2.0, 3.0, 1.5, 1.2]), 1.6) == 0.5
    # One failure stays in the denominator, however fast it was.
    assert fast_p(np.array([True, True, True, False]), np.array([2.0, 2.0, 2.0, 9.0]), 1.0) == 0.75
    # Ties at p exactly are not faster than p.
    assert fast_p(np.ones(3, bool), np.array([1.0, 1.5, 2.0]), 1.0) == pytest.approx(2 / 3)
    assert fast_p(np.ones(3, bool), np.array([1.0, 1.5, 2.0]), 1.5) == pytest.approx(1 / 3)
    assert fast_p(np.ones(3, bool), np.array([1.0, 1.5, 2.0]), np.array([0.0, 2.0])).tolist() == [1.0, 0.0]
    # A correct task without a speedup is not fast, not even at p = 0.
    assert fast_p(np.ones(2, bool), np.array([np.nan, 2.0]), 0.0) == 0.5


def hand_result(variant, task, correct=True, speedup=2.0, **extra):
    return {**schema.empty_row(schema.LEADERBOARD_TASK_COLUMNS), "dataset": "d", "variant": variant,
            "submission": schema.submission_name(variant), "task_id": task, "model": "sd15", "method": "tome",
            "level": 2, "correct": correct, "speedup": speedup if correct else None, "gt_speedup": 2.0,
            "reaches_gt": correct, "reason_kind": None if correct else "error",
            "reason": None if correct else "error: boom", **extra}


def test_a_missing_task_counts_as_a_failure():
    results = [hand_result("gt", task) for task in "abcd"]
    results += [hand_result("sub:x", "a", speedup=3.0), hand_result("sub:x", "b", speedup=1.0),
                hand_result("sub:x", "c", correct=False)]  # no row at all for task d
    board = leaderboard.build(results, {"suite": "t"}, fast_p=(0.0, 1.0), n_resamples=100)
    x = board_row(board, "x")
    assert x["tasks"] == 4 and x["correct"] == 2
    assert (x["fast_0"], x["fast_1"]) == (0.5, 0.25)  # d (no rows) and c (failed) in the denominator; b ties at 1
    assert x["reasons"] == "error: 1;no-rows: 1"
    assert x["fast_1_ci_low"] is None and x["geomean_speedup"] == pytest.approx(math.sqrt(3.0))
    d = next(r for r in board.tasks if r["variant"] == "sub:x" and r["task_id"] == "d")
    assert not d["correct"] and d["reason_kind"] == "no-rows"
    assert [r["submission"] for r in board.rows] == ["gt", "x"]


def test_geomean_floor_and_cis_over_tasks():
    results = [hand_result("gt", f"t{i}", speedup=2.0) for i in range(6)]
    results += [hand_result("sub:y", f"t{i}", speedup=s) for i, s in enumerate([2, 2, 2, 2, 2, 1e-6])]
    board = leaderboard.build(results, {"suite": "t"}, n_resamples=200)
    y = board_row(board, "y")
    assert y["geomean_speedup"] == pytest.approx(math.exp((5 * math.log(2) + math.log(0.1)) / 6))  # floored at 0.1
    assert y["geomean_speedup_n"] == 6 and y["geomean_speedup_ci_low"] < y["geomean_speedup"]
    assert y["fast_1"] == pytest.approx(5 / 6) and y["fast_1_ci_low"] <= 5 / 6 <= y["fast_1_ci_high"]
    assert board_row(board, "gt")["fast_1_ci_low"] == board_row(board, "gt")["fast_1_ci_high"] == 1.0


# ---------------------------------------------------------------------------------------------------------
# Correctness per (submission, task), from the data alone
# ---------------------------------------------------------------------------------------------------------


def test_correctness_and_reasons(scored):
    _, built, _ = scored
    board = built.leaderboard
    alpha_fast = result(board, "sub:alpha", FAST)
    assert alpha_fast["correct"] and alpha_fast["psnr_gt"] == math.inf and alpha_fast["gated"]
    assert alpha_fast["identical_to_gt"] == alpha_fast["gt_pairs"] == 8  # the GT's own code: identical images
    assert result(board, "sub:alpha", NOOP)["reason"].startswith("missing: 8/8 rows")
    rejected = result(board, "sub:alpha", BROKEN)
    assert rejected["reason_kind"] == "rejected" and "failed steps: steps: 7 scheduler steps" in rejected["reason"]
    deviates = result(board, "sub:beta", FAST)
    assert deviates["reason_kind"] == "deviates" and deviates["psnr_gt"] < 10
    assert deviates["deviation_threshold_db"] == CATALOG.methods["deepcache"].deviation_psnr_db
    assert "< 30.0 dB" in deviates["reason"] and deviates["speedup"] == pytest.approx(14 / 6)  # fast, but wrong
    assert result(board, "sub:beta", NOOP)["correct"]
    assert result(board, "sub:beta", BROKEN)["reason"] == "error: 8/8 rows; boom"
    gt = result(board, "gt", BROKEN)  # the GT is scored the same way
    assert not gt["correct"] and gt["reason"] == "error: 1/8 rows; boom"
    assert {r["level"] for r in board.tasks} == {2}  # one method each; BROKEN's gate_step 4 is a sweep tag


def test_a_submission_is_not_scored_where_its_task_s_gt_failed(tmp_path):
    """BROKEN's GT has a failed row: a submission with the GT's own images there is still not correct (nothing
    checked its timed images against a GT, nor its parity), and says why."""
    rows = dataset_rows() + submission_rows("gamma", {BROKEN: {}, FAST: {}})
    board = build(tmp_path / "ds", rows).leaderboard
    broken = result(board, "sub:gamma", BROKEN)
    assert not broken["correct"] and not broken["reaches_gt"] and broken["reason_kind"] == schema.REASON_NO_GT
    assert broken["reason"] == "no-gt: the task's GT is not correct (error: 1/8 rows; boom)"
    assert result(board, "sub:gamma", FAST)["correct"]


def test_gate_verdicts_decide_and_their_absence_fails_nothing(scored):
    directory, built, rows = scored
    generation = aggregate.load_generations(directory)
    # No verdicts: not gated. The rejected rows still fail on their status; the rest is as before.
    facts = task_facts.read(directory)[0]
    ungated = leaderboard.from_report(directory, generation, built.pooled, facts, None, {"suite": "smoke"},
                                      n_resamples=50)
    assert [(r["variant"], r["task_id"], r["correct"]) for r in ungated.tasks] == [
        (r["variant"], r["task_id"], r["correct"]) for r in built.leaderboard.tasks]
    assert not any(r["gated"] for r in ungated.tasks) and "not gated" in ungated.notes[0]
    # A failed verdict fails a task whose rows are all ok ('gate'), with the gate's reason.
    verdicts = passing_verdicts(rows)
    for verdict in verdicts:
        if verdict["program_sha256"] == program_sha256(NOOP, "beta"):
            verdict["passed"] = False
    write_verdicts(directory, verdicts)
    try:
        gated = leaderboard.from_report(directory, generation, built.pooled, facts,
                                        store.read_gate_verdicts(directory), {"suite": "smoke"}, n_resamples=50)
    finally:
        write_verdicts(directory, passing_verdicts(rows))
    noop = result(gated, "sub:beta", NOOP)
    assert noop["reason"] == "gate: failed steps: steps: 7 scheduler steps, the task has 8" and not noop["reaches_gt"]


def test_deviation_threshold_follows_the_gt_drift():
    declared = CATALOG.methods["deepcache"].deviation_psnr_db
    assert correctness.deviation_threshold(declared, None) == declared
    assert correctness.deviation_threshold(declared, math.inf) == declared  # bit-identical drift
    assert correctness.deviation_threshold(declared, 20.0) == 17.0  # the GT drifts: 3 dB below it
    assert correctness.deviation_threshold(None, 20.0) is None  # a method without a threshold
    # Close images (another kernel's rounding) pass, unrelated ones deviate; the threshold is the GT drift's.
    rows = [row(SETTING, p, b) for p in range(4) for b in (1, 2)] + [row(FAST, p, b) for p in range(4) for b in (1, 2)]
    summary = {"psnr_gt": 25.0, "gt_pairs": 8, "identical_to_gt": 0}
    assert correctness._correctness(rows, None, summary, 30.0)[1].startswith("deviates: mean PSNR")
    assert correctness._correctness(rows, None, summary, 17.0) == (True, None, False)


# ---------------------------------------------------------------------------------------------------------
# Scores per submission
# ---------------------------------------------------------------------------------------------------------


def test_scores_per_submission(scored):
    _, built, _ = scored
    board = built.leaderboard
    assert [r["submission"] for r in board.rows] == ["gt", "alpha", "beta"] and board.rows[0]["reference"]
    gt, alpha, beta = (board_row(board, name) for name in ("gt", "alpha", "beta"))
    assert (gt["correct"], alpha["correct"], beta["correct"]) == (2, 1, 1)
    assert all(r["tasks"] == 3 for r in board.rows)
    # alpha: FAST at (4*2 + 2*3) / (6*0.8) = 2.92x; beta: NOOP at 0.82x (slower than the baseline).
    assert alpha["fast_1"] == alpha["fast_2"] == pytest.approx(1 / 3) and alpha["fast_0"] == pytest.approx(1 / 3)
    assert beta["fast_0"] == pytest.approx(1 / 3) and beta["fast_1"] == 0.0
    assert alpha["geomean_speedup"] == pytest.approx(14 / 4.8)
    # Reaching the GT: alpha's FAST (faster, the same quality loss) and beta's NOOP (as fast as the GT's).
    assert alpha["gt_parity"] == beta["gt_parity"] == pytest.approx(1 / 3)
    assert gt["gt_parity"] == pytest.approx(2 / 3)  # the GT reaches itself where it is correct
    assert alpha["quality_loss"] == pytest.approx(0.1) and beta["quality_loss"] == pytest.approx(0.0)
    assert alpha["identical_to_gt"] == beta["identical_to_gt"] == 1.0 and alpha["psnr_gt"] == math.inf
    assert alpha["reasons"] == "missing: 1;rejected: 1" and beta["reasons"] == "deviates: 1;error: 1"
    assert beta["flags"] == "no-op: 1;slowdown: 1"  # NOOP: 6 batches of 0.82x, the whole CI below 1x
    assert alpha["fast_1_ci_low"] is None  # 3 tasks: no CI
    levels = {(r["submission"], r["group"]): r for r in board.breakdown if r["by"] == "level"}
    assert levels[("alpha", "2")]["tasks"] == 3 and levels[("alpha", "2")]["fast_1"] == pytest.approx(1 / 3)
    assert {r["by"] for r in board.breakdown} == {"model", "method", "level"}


def test_pipeline_tasks_count_for_correctness_not_for_fast_p():
    """A level-1 task asks for no acceleration: solved when correct, outside fast_p's tasks (its speedup is about 1
    by design, so it would add a coin toss to fast_1)."""
    results = [hand_result("sub:a", "one", speedup=2.0), hand_result("sub:a", "two", correct=False),
               hand_result("sub:a", "plain", speedup=0.98, level=1), hand_result("sub:b", "one", speedup=2.0),
               hand_result("sub:b", "two", correct=False), hand_result("sub:b", "plain", correct=False, level=1)]
    rows, breakdown = leaderboard.summarize(results, n_resamples=50)
    a, b = ({row["submission"]: row for row in rows}[name] for name in ("a", "b"))
    assert (a["tasks"], a["correct"], b["correct"]) == (3, 2, 1)
    assert a["fast_1"] == b["fast_1"] == a["fast_0"] == 0.5  # of the two acceleration tasks
    assert [r["submission"] for r in rows] == ["a", "b"]  # the same fast_1: more correct tasks first
    pipeline = {r["submission"]: r for r in breakdown if r["by"] == "level" and r["group"] == "1"}
    assert (pipeline["a"]["correct"], pipeline["b"]["correct"]) == (1, 0) and pipeline["a"]["fast_1"] is None
    curves = leaderboard.fast_p_curve(results, np.array([0.0, 1.0]))
    assert curves["sub:a"].tolist() == [0.5, 0.5]


def test_curves_and_plots(scored):
    directory, built, _ = scored
    thresholds = np.array([0.0, 1.0, 2.0, 2.5, 3.0])
    curves = leaderboard.fast_p_curve(built.leaderboard.tasks, thresholds)
    assert curves["sub:alpha"].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1 / 3, 0.0])
    assert curves["gt"].tolist() == pytest.approx([2 / 3, 1 / 3, 1 / 3, 0.0, 0.0])
    for name in (leaderboard_files.FAST_P_PNG, leaderboard_files.HEATMAP_PNG):
        with Image.open(directory / schema.REPORT_DIR / name) as image:
            image.load()
            assert image.format == "PNG" and image.size[0] > 400


# ---------------------------------------------------------------------------------------------------------
# Files: report.md, leaderboard.csv and leaderboard.json agree
# ---------------------------------------------------------------------------------------------------------


def markdown_rows(text: str, first_header: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def test_report_csv_and_json_agree_cell_by_cell(scored):
    directory, built, _ = scored
    folder = directory / schema.REPORT_DIR
    csv_rows = leaderboard_files.read_leaderboard(directory).to_pylist()
    payload = json.loads((folder / leaderboard_files.LEADERBOARD_JSON).read_text())
    assert [c.name for c in schema.LEADERBOARD_COLUMNS] == list(csv_rows[0])
    assert set(csv_rows[0]) == set(payload["rows"][0]) and len(payload["rows"]) == len(csv_rows)
    for from_csv, from_json in zip(csv_rows, payload["rows"]):
        for name, value in from_csv.items():
            expected = "inf" if isinstance(value, float) and math.isinf(value) else value
            assert from_json[name] == (pytest.approx(expected) if isinstance(value, float) else expected), name
    assert csv_rows == built.leaderboard.rows

    text = (folder / report.REPORT_MD).read_text()
    assert text.index("## Leaderboard") < text.index("## Setup")  # at the top
    cells = markdown_rows(text, "Submission")
    assert len(cells) == len(csv_rows)
    for line, r in zip(cells, csv_rows):
        fast = line[3:3 + len(schema.DEFAULT_FAST_P)]
        assert line[0].strip("*`").split("*")[0] == r["submission"]
        assert line[1] == leaderboard_markdown.rank_range(r)
        assert line[2] == f"{r['correct']}/{r['tasks']}"
        for cell, p in zip(fast, schema.DEFAULT_FAST_P):
            assert cell == f"{r[schema.fast_column(p)]:.2f} n/a (n={r['tasks']})"
        assert line[7] == leaderboard_markdown.solved_by_level(r)
        assert line[8].startswith(f"{r['gt_parity']:.2f}")
        assert line[9].startswith(markdown.number(r["geomean_speedup"], suffix="×"))
        assert line[11].startswith(markdown.number(r["psnr_gt"], 1))
        assert line[13] == (r["tied_with"] or "").replace(";", ", ")
        assert line[14] == (r["reasons"] or "").replace(";", ",")
    tasks = leaderboard_files.read_task_results(directory)
    assert tasks == built.leaderboard.tasks and len(tasks) == 9
    failed = markdown_rows(text, "Submission | Task")
    assert [(c[0], c[1].strip("`"), c[2]) for c in failed] == [
        (t["submission"], t["task_id"], t["reason"].replace("|", "\\|")) for t in tasks if not t["correct"]]


def test_readme_worked_example_is_this_code_on_the_test_dataset(scored):
    _, built, _ = scored
    header, cells = leaderboard_markdown.table_rows(built.leaderboard)
    assert markdown.table(header, cells) in README


def test_a_dataset_without_submissions_has_no_leaderboard(tmp_path):
    built = build(tmp_path / "ds", dataset_rows(), verdicts=False, resamples=50)
    assert built.leaderboard is None
    assert not (tmp_path / "ds" / schema.REPORT_DIR / leaderboard_files.LEADERBOARD_CSV).exists()
    assert "## Leaderboard" not in (tmp_path / "ds" / schema.REPORT_DIR / report.REPORT_MD).read_text()


# ---------------------------------------------------------------------------------------------------------
# The commands: score prints it, leaderboard merges datasets and refuses mixed ones
# ---------------------------------------------------------------------------------------------------------


def test_report_command_writes_the_leaderboard_and_score_prints_it(tmp_path):
    rows = dataset_rows((SETTING, FAST)) + submission_rows("alpha", {FAST: {"latency": {1: 0.8, 2: 0.8}}})
    directory = write_dataset(tmp_path / "ds", rows=rows)
    write_clip_scores(directory, known_scores(directory))
    result = CliRunner().invoke(main, ["report", str(directory), "--fast-p", "1,2.5"])
    assert result.exit_code == 0, result.output
    assert "leaderboard of 1 submission(s)" in result.stdout
    board = leaderboard_files.read(directory)
    assert board.fast_p == (1.0, 2.5) and board_row(board, "alpha")["fast_2_5"] == 1.0
    assert "No gate verdicts" in (directory / schema.REPORT_DIR / report.REPORT_MD).read_text()
    # What `accelbench score` prints after scoring (the report is the one just built).
    from types import SimpleNamespace

    from accelbench.scorer.score import ScoreSummary

    built = report.build_report(directory, n_resamples=50)
    summary = ScoreSummary(directory, SimpleNamespace(recipe_id=HAND_RECIPE, scored=0, skipped=16, unreadable=0),
                           SimpleNamespace(compared=0, identical=0, skipped=8), built, 0.1)
    text = summary.format()
    assert "leaderboard:" in text and re.search(r"gt \(reference\)\s+1/1\s+1\.00\s+1\.00", text)
    assert re.search(r"alpha\s+1/1\s+1\.00\s+1\.00", text)


def second_dataset(directory: Path, device: str = "Test CPU", baseline_sha: str | None = None) -> Path:
    """Another dataset of the suite: the GT and a submission 'gamma' on FAST alone."""
    rows = dataset_rows((SETTING, FAST)) + submission_rows("gamma", {FAST: {"latency": {1: 0.5, 2: 0.5}}})
    for r in rows:
        r["device_name"] = device
        if baseline_sha and r["variant"] == "baseline":
            r["program_sha256"] = baseline_sha
    write_dataset(directory, rows=rows)
    report.build_report(directory, n_resamples=50)
    return directory


def run_leaderboard(*args):
    return CliRunner().invoke(main, ["leaderboard", *map(str, args)])


def test_leaderboard_merges_datasets_of_one_suite(scored, tmp_path):
    directory, _, _ = scored
    other = second_dataset(tmp_path / "other")
    result = run_leaderboard(directory, other, "--out", tmp_path / "board")
    assert result.exit_code == 0, result.output
    board = leaderboard_files.read(tmp_path / "board")
    # fast_1, correct tasks, then geomean speedup: gamma (4.67x) above alpha (2.92x), both 1/3 and 1 correct.
    assert [r["submission"] for r in board.rows] == ["gt", "gamma", "alpha", "beta"]
    gamma = board_row(board, "gamma")
    assert gamma["tasks"] == 3 and gamma["correct"] == 1 and gamma["reasons"] == "no-rows: 2"  # the union of tasks
    assert board_row(board, "gt")["datasets"] == 1  # FAST's GT result of the second dataset is a duplicate
    assert "appear in more than one dataset" in result.stdout
    assert (tmp_path / "board" / "leaderboard.md").read_text().startswith("# accelbench leaderboard: smoke")
    assert (tmp_path / "board" / leaderboard_files.HEATMAP_PNG).is_file()


def test_leaderboard_refuses_mixed_devices_and_baselines(scored, tmp_path):
    directory, _, _ = scored
    gpu = second_dataset(tmp_path / "gpu", device="NVIDIA H200")
    result = run_leaderboard(directory, gpu)
    assert result.exit_code == EXIT_BAD_INPUT and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "NVIDIA H200" in result.stderr and "different GPU models" in result.stderr
    assert "--allow-mixed" in result.stderr
    allowed = run_leaderboard(directory, gpu, "--allow-mixed")
    assert allowed.exit_code == 0 and "different GPU models" in allowed.stdout

    rebased = second_dataset(tmp_path / "rebased", baseline_sha="f" * 64)
    result = run_leaderboard(directory, rebased)
    assert result.exit_code == EXIT_BAD_INPUT and "different baseline programs" in result.stderr
    assert result.stderr.count("\n") == 1

    manifest = json.loads((rebased / schema.DATASET_MANIFEST).read_text())
    dataset.write_json_atomic(rebased / schema.DATASET_MANIFEST, {**manifest, "suite": "standard"})
    report.build_report(rebased, n_resamples=50)
    result = run_leaderboard(directory, rebased, "--allow-mixed")  # never across suites
    assert result.exit_code == EXIT_BAD_INPUT and "of suite 'standard'" in result.stderr

    result = run_leaderboard(tmp_path / "nowhere")
    assert result.exit_code == EXIT_BAD_INPUT and result.stderr.startswith("error: ")
    result = run_leaderboard(directory, "--fast-p", "1,x")
    assert result.exit_code == EXIT_BAD_INPUT and "--fast-p" in result.stderr


# ---------------------------------------------------------------------------------------------------------
# Publish: the leaderboard config and the card's section
# ---------------------------------------------------------------------------------------------------------


def test_published_leaderboard_config_loads_offline(scored, tmp_path):
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    from accelbench.hub import stage as hub

    directory, built, _ = scored
    staged = hub.stage(directory, tmp_path / "staging", "some-org/accelbench-board")
    assert staged.rows["leaderboard"] == 3
    loaded = load_dataset(str(staged.path), "leaderboard", split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.column_names == [c.name for c in schema.LEADERBOARD_COLUMNS]
    assert loaded.to_list() == leaderboard_files.read_leaderboard(directory).to_pylist() == built.leaderboard.rows
    card = DatasetCard.load(staged.path / "README.md")
    configs = {entry["config_name"] for entry in card.data.to_dict()["configs"]}
    assert {"leaderboard", "gate"} <= configs
    gate = load_dataset(str(staged.path), "gate", split="train", cache_dir=str(tmp_path / "cache"))
    assert gate.column_names == [c.name for c in schema.GATE_COLUMNS] and gate.num_rows > 0
    header, cells = leaderboard_markdown.table_rows(built.leaderboard)
    assert "## Leaderboard" in card.text and markdown.table(header, cells) in card.text
    assert "](report/fast_p.png)" in card.text and "`fast_1_5`" in card.text  # the columns, documented
    scores = load_dataset(str(staged.path), "scores", split="train", cache_dir=str(tmp_path / "cache"))
    assert sum(r["gt_record_id"] is not None for r in scores) == 24  # alpha: FAST; beta: FAST and NOOP


def test_fidelity_to_the_gt_is_stored_per_submission_image(scored):
    directory, _, _ = scored
    stored = aggregate.load_fidelity(directory)
    gt_kind = {key: value for key, value in stored.items() if key[1] == schema.KIND_GT}
    # alpha: FAST (8 ok images); beta: FAST and NOOP (16); failed rows are never compared.
    assert len(gt_kind) == 24
    alpha = [v for (record, _), v in gt_kind.items() if "-alpha-" in record]
    assert len(alpha) == 8 and all(v["identical"] and v["psnr"] == math.inf for v in alpha)
    assert all(v["reference_record_id"].startswith(FAST + "-p") for v in alpha)


def test_docstring_examples_and_the_manifest_key():
    import doctest

    from accelbench.manifest import ManifestError
    from accelbench.manifest.checks import read_yaml
    from accelbench.manifest.sections import parse_methods

    assert doctest.testmod(correctness).failed == 0
    methods = read_yaml(Path(CATALOG.root) / "methods.yaml")
    assert parse_methods(methods, "methods.yaml", CATALOG.schedulers)["tome"].deviation_psnr_db == 15.0
    for bad, problem in (("high", "must be a number, got a string 'high'"), (0, "between 0 and 100, got 0"),
                         (float("inf"), "between 0 and 100, got inf")):
        methods["methods"]["tome"]["deviation_psnr_db"] = bad
        with pytest.raises(ManifestError) as caught:
            parse_methods(methods, "methods.yaml", CATALOG.schedulers)
        assert "methods.tome.deviation_psnr_db" in str(caught.value) and problem in str(caught.value)


def test_the_breakdown_gives_each_levels_solved_share_with_its_interval_over_tasks():
    results = [hand_result("sub:a", f"t{index}", correct=index % 4 != 0, level=2) for index in range(8)] + [
        hand_result("sub:a", f"p{index}", correct=index < 2, level=1) for index in range(3)]
    _, breakdown = leaderboard.summarize(results, n_resamples=200)
    by_level = {row["group"]: row for row in breakdown if row["by"] == "level"}
    assert (by_level["2"]["solved"], by_level["2"]["solved_n"]) == (0.75, 8)
    assert by_level["2"]["solved_ci_low"] < 0.75 < by_level["2"]["solved_ci_high"]
    assert by_level["1"]["solved"] == pytest.approx(2 / 3) and by_level["1"]["solved_ci_low"] is None  # 3 tasks


def test_each_row_gives_every_levels_pass_rate_its_interval_and_the_undecided_targets():
    results = ([hand_result("sub:a", f"t{index}", correct=index % 4 != 0, level=2) for index in range(8)]
               + [hand_result("sub:a", f"p{index}", correct=index < 2, level=1) for index in range(3)]
               + [hand_result("sub:a", f"s{index}", correct=index == 0, level=4,
                              target_verdict=["met", "not decidable", "not met", "not decidable", None][index])
                  for index in range(5)])
    rows, breakdown = leaderboard.summarize(results, n_resamples=200)
    (row,) = rows
    by_level = {row["group"]: row for row in breakdown if row["by"] == "level"}
    for level in (1, 2, 4):  # the row's pass rate is the breakdown's solved share, the CI over the level's tasks
        name = schema.level_column(level)
        solved = by_level[str(level)]
        assert (row[name], row[f"{name}_n"]) == (solved["solved"], solved["solved_n"])
        assert (row[f"{name}_ci_low"], row[f"{name}_ci_high"]) == (solved["solved_ci_low"], solved["solved_ci_high"])
    assert row["pass_l4"] == 0.2 and row["pass_l4_ci_low"] is not None  # 5 tasks: an interval
    assert row["pass_l1_ci_low"] is None  # 3 tasks: none
    assert (row["pass_l3"], row["pass_l3_n"], row["pass_l5"], row["pass_l5_n"]) == (None, 0, None, 0)
    assert row["targets_not_decidable"] == 2
    assert set(row) == {column.name for column in schema.LEADERBOARD_COLUMNS}
    board = leaderboard.build(results, meta={"device_names": ["Test CPU"]}, n_resamples=200)
    text = leaderboard_markdown.markdown_section(board, images=False)
    assert "L1 2/3 · L2 6/8 · L4 1/5" in text
    # with target tasks the report says how their quality was judged, and that LPIPS was not
    assert "The 5 target task(s) judge quality by PSNR" in text and "LPIPS is not computed" in text
    recipe_only = leaderboard.build([r for r in results if r["level"] != 4], meta={}, n_resamples=50)
    assert not any("LPIPS" in note for note in recipe_only.notes)
