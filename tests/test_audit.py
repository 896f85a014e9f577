"""The audit of what was timed: a submission that passes the gate on the tiny model and computes something else
when it is timed, where it is not traced, or from a cache, gets 'rejected' rows naming the batch and the first
difference; an honest program written another way passes, and its rows are written as timed."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from generating import generate, gt_source, rows, submission

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
import audit_programs  # noqa: E402

from accelbench import schema

# End-to-end generate runs: out of make test-fast's quick lane.
pytestmark = pytest.mark.slow

TASK = "smoke-sd15-ddim-8-deepcache"
GT = gt_source(TASK)


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    root = tmp_path_factory.mktemp("audited")
    folders = [submission(root / name, {TASK: source}) for name, source in audit_programs.programs(GT).items()]
    summary = generate(root / "out", tasks=[TASK], submissions=folders, limit=2, audit_fraction=1.0)
    return root / "out", summary


def unit_rows(out, name):
    return [row for row in rows(out, ["variant", "status", "error", "batch_size", "image_sha256"])
            if row["variant"] == schema.submission_variant(name)]


@pytest.mark.parametrize("name, reason", [
    ("late", r"audit: timed batch \d of \d \(seed \d, batch size \d, prompts \d-\d\): image 1 differs from the "
             r"GT's image of the same prompt and seed by up to \d+/255"),
    ("unwatched", r"gate: repeatable: call 4 of 4 \(3 images\) repeats call 2 untraced: different pixels"),
    ("subtle", r"audit: timed batch \d of \d .*: image 1 of the replay differs from what the timed call returned "
               r"\(max \|diff\| 2/255"),
    ("memo", r"audit: timed batch \d of \d .*: spec: no set_timesteps, GT set_timesteps\(8\)"),
])
def test_a_program_that_computes_something_else_when_timed_is_rejected_whole(audited, name, reason):
    out, summary = audited
    mine = unit_rows(out, name)
    # Every row of the unit: 2 seeds x 2 prompts at batch sizes 1 and 2, none of them written as ok.
    assert len(mine) == 8 and {row["status"] for row in mine} == {schema.STATUS_REJECTED}
    assert len({row["error"] for row in mine}) == 1  # the unit's first failure, on every row
    assert re.match(reason, mine[0]["error"]), mine[0]["error"]
    assert all(row["image_sha256"] is None for row in mine)


def test_an_honest_program_written_another_way_passes_the_audit(audited):
    out, summary = audited
    mine = unit_rows(out, "honest")
    assert len(mine) == 8 and {row["status"] for row in mine} == {schema.STATUS_OK}
    assert all(row["image_sha256"] for row in mine)
    assert summary.audit_rejections == 3  # late, subtle, memo


def test_the_run_record_says_what_was_audited_and_nothing_is_left_held(audited):
    out, _ = audited
    [record] = [json.loads(path.read_text()) for path in (out / schema.RUNS_DIR).glob("*.json")]
    units = {(entry["unit"], entry["batch_size"]): entry for entry in record["audit"]["units"]}
    assert record["audit"]["fraction"] == 1.0
    honest = [entry for (unit, _), entry in units.items() if unit.startswith("sub:honest")]
    assert len(honest) == 2 and all(entry["passed"] and entry["reason"] is None for entry in honest)
    assert {entry["batch_size"]: entry["rounds"] for entry in honest} == {1: [0, 1, 2, 3], 2: [0, 1]}
    assert not [path for path in (out / schema.STAGING_DIR).rglob("*") if path.is_file()]
    # Every row of the run is in a shard exactly once: the rejected units' timed rows were never released.
    record_ids = [row["record_id"] for row in rows(out, ["record_id"])]
    assert len(record_ids) == len(set(record_ids)) == 8 * 7  # baseline, GT and five submissions


def test_held_rows_are_invisible_until_released_and_a_killed_run_s_are_redone(tmp_path):
    """A held batch is on disk where no reader looks; release makes it rows, discard drops it, and the held
    parts of a run killed before its audit ended are never compacted into rows (the next run redoes them)."""
    from factories import row

    from accelbench import dataset
    from accelbench.builder.writer import ShardWriter

    dataset.init_dataset(tmp_path, schema.dataset_manifest(
        suite="smoke", weights="tiny", dtype_policy="float32", device_type="cpu", prompts_sha256="", seeds=[0],
        batch_sizes=[1], seed_key="", clip={"model": "m", "pretrained": "p"}, suite_facts={}))
    first = ShardWriter(tmp_path, "run1", 0, 1, workers=1)
    try:
        batches = {label: [row("sd15-ddim-8", index, 1) | {"record_id": f"{label}-{index}"}] for index, label in
                   enumerate(["passed", "failed", "killed"])}
        for label, batch in batches.items():
            first.submit(batch, np.zeros((1, 8, 8, 3), np.uint8), hold=label)
        first.flush()
        assert dataset.read_generations(tmp_path, ["record_id"]).num_rows == 0  # held: not rows yet
        first.release("passed")
        first.discard("failed")
        assert dataset.read_generations(tmp_path, ["record_id"]).column("record_id").to_pylist() == ["passed-0"]
    finally:
        first._pool.shutdown()  # killed: no compaction, "killed" still held
    ShardWriter(tmp_path, "run2", 0, 1, workers=1).close()  # the next run compacts what the killed one left
    assert dataset.read_generations(tmp_path, ["record_id"]).column("record_id").to_pylist() == ["passed-0"]
    assert not [path for path in (tmp_path / schema.STAGING_DIR).rglob("*") if path.is_file()]


def test_a_gated_submission_runs_beside_its_task_s_gt_and_baseline():
    from accelbench.builder import plan

    assert plan.with_references(("sub:b",), ["a", "b"]) == ("baseline", "gt", "sub:b")
    assert plan.with_references(("gt",), ["a"]) == ("gt",)  # no submission: nothing to check against
