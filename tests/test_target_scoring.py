"""A target task scored from its dataset alone: hand-made rows with known latencies and images, the task's
target recorded in its facts. Quality relative to the live reference (the GT variant), then speed: met, not met
on quality or on speed, no target on a GPU class the task does not name; the leaderboard says which."""

import pytest
from factories import (
    CATALOG,
    FAST,
    HAND_RECIPE,
    dataset_rows,
    known_scores,
    passing_verdicts,
    program_sha256,
    setting_of,
    submission_rows,
    write_clip_scores,
    write_dataset,
    write_verdicts,
)

from accelbench import schema, task_facts
from accelbench.scorer import fidelity, report

# FAST's GT (here the reference) runs each batch in 1 s against the baseline's 2 s (batch size 1) and 3 s (2):
# a speedup of 14/6 = 2.33x, the same in every batch. Its images score 27 against the baseline's 30: a 10 % loss.
SPEEDUP_TARGET = {"tier": "medium", "speedup": 2.0, "latency_ms": {}, "budget": {"psnr_db": 1.0, "clip_pct": 1.0},
                  "fixed": ["steps"], "free": ["sampler", "dtype", "guidance"], "evidence": "tests"}
LATENCY_TARGET = {**SPEEDUP_TARGET, "speedup": None, "latency_ms": {"h200": 400.0}}
SUBMISSIONS = {
    "fast": {FAST: {"latency": {1: 1.0, 2: 1.0}}},  # the reference's speed and images: meets 2x
    "slow": {FAST: {"latency": {1: 1.5, 2: 2.5}}},  # 14/11 = 1.27x
    "blurry": {FAST: {"latency": {1: 0.5, 2: 0.5}, "pixels": "noise"}},  # very fast, far from the baseline
}


def scored_board(directory, target: dict, device_name: str | None = None):
    rows = dataset_rows() + [row for name, plan in SUBMISSIONS.items() for row in submission_rows(name, plan)]
    if device_name is not None:
        rows = [{**row, "device_name": device_name} for row in rows]
    write_dataset(directory, rows=rows, facts=False)
    facts = []
    for task_id in sorted({row["task_id"] for row in rows if row["task_id"]}):
        entry = task_facts.facts(CATALOG, CATALOG.task(task_id), {schema.GT: program_sha256(task_id),
                                                                  schema.BASELINE: program_sha256(setting_of(task_id))})
        if task_id == FAST:  # the dataset says FAST is a target task: the scorer reads nothing else
            entry.update(target=target, level=4 if target["speedup"] else 5)
        facts.append(entry)
    task_facts.record(directory, facts)
    write_verdicts(directory, passing_verdicts(rows))
    write_clip_scores(directory, known_scores(directory))
    fidelity.score_fidelity(directory, num_workers=0, progress=False)
    board = report.build_report(directory, recipe_id=HAND_RECIPE, n_resamples=200).leaderboard
    return {row["variant"]: row for row in board.tasks if row["task_id"] == FAST}


@pytest.fixture(scope="module")
def speedup_board(tmp_path_factory):
    return scored_board(tmp_path_factory.mktemp("speedup") / "ds", SPEEDUP_TARGET)


def test_the_reference_and_a_program_as_fast_and_as_good_meet_a_speedup_target(speedup_board):
    for variant in ("gt", "sub:fast"):
        found = speedup_board[variant]
        assert found["level"] == 4 and found["target_verdict"] == "met" and found["correct"], found["reason"]
        assert found["speedup"] == pytest.approx(14 / 6)
    assert speedup_board["sub:fast"]["deviation_threshold_db"] is None  # no PSNR-to-the-reference backstop


def test_too_slow_is_not_met_on_speed_and_too_far_from_the_baseline_on_quality(speedup_board):
    slow, blurry = speedup_board["sub:slow"], speedup_board["sub:blurry"]
    assert (slow["correct"], slow["target_verdict"], slow["reason_kind"]) == (False, "not met", schema.REASON_TARGET)
    assert slow["reason"].startswith("target: not met: speed: speedup 1.273× [") and "(n=6)" in slow["reason"]
    assert slow["reason"].endswith("the target is at least 2×")
    assert (blurry["correct"], blurry["target_verdict"]) == (False, "not met") and blurry["speedup"] > 2
    assert blurry["reason"].startswith("target: not met: quality: PSNR to the baseline's images ")


def test_a_latency_target_on_a_gpu_class_the_run_did_not_use_is_no_target(tmp_path):
    board = scored_board(tmp_path / "ds", LATENCY_TARGET)
    fast = board["sub:fast"]
    assert fast["level"] == 5 and fast["target_verdict"] == "no target" and not fast["correct"]
    assert fast["reason"] == ("target: no target: speed: this task has no latency target on Test CPU (targets: H200 "
                              "400 ms)")
    assert board["gt"]["target_verdict"] == "no target" and board["gt"]["correct"]  # the reference is the yardstick
    assert fast["latency_ms"] == pytest.approx(1000 * 6 / 8)  # 6 batches of 1 s for 8 images


def test_a_latency_target_is_judged_per_image_at_batch_size_1(tmp_path):
    """FAST takes 1 s per batch: 1000 ms per image at batch size 1, 500 at 2, 750 pooled over 6 batches. Against
    800 ms on an H200 the pooled figure would pass; batch size 1, which targets are derived at, has 4 batches of
    1000 ms: too few for an interval, and the verdict says so."""
    board = scored_board(tmp_path / "ds", {**LATENCY_TARGET, "latency_ms": {"h200": 800.0}}, device_name="NVIDIA H200")
    fast = board["sub:fast"]
    assert fast["latency_ms"] == pytest.approx(750.0)  # the pooled figure, as the summary has it
    assert fast["target_verdict"] == "not decidable"
    assert fast["reason"] == ("target: not decidable: speed: latency per image 1000 ms (n=4, no interval): too few "
                              "batches to tell it from at most 800 ms")
