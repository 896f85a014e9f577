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


def test_a_submission_beyond_its_gt_is_retimed_alone_beside_a_fresh_baseline(tmp_path, monkeypatch):
    """The GT's timed calls read 3x their latency here, as if a neighbour slowed it: an honest submission then
    beats the GT's speedup beyond the rounds' noise at batch size 1 (8 rounds: 4 prompts x 2 seeds), so it is timed
    again in fresh processes beside a fresh baseline, audited again, and those rows replace its first ones. Batch
    size 2 has 4 rounds: no interval, nothing re-timed."""
    from accelbench.builder.worker import ProgramWorker

    real = ProgramWorker.generate

    def gt_slowed(worker, *args, **kwargs):
        reply = real(worker, *args, **kwargs)
        if worker.source == GT and not kwargs.get("trace"):
            reply.latency_s *= 3
        return reply

    monkeypatch.setattr(ProgramWorker, "generate", gt_slowed)
    folder = submission(tmp_path / "honest", {TASK: audit_programs.programs(GT)["honest"]})
    generate(tmp_path / "out", tasks=[TASK], submissions=[folder])
    columns = ["variant", "status", "batch_size", "round", "timing", "batch_latency_s", "baseline_latency_s",
               "image_sha256", "seed", "prompt_index"]
    table = rows(tmp_path / "out", columns)
    mine = [row for row in table if row["variant"] == schema.submission_variant("honest")]
    assert len(mine) == 16 and {row["status"] for row in mine} == {schema.STATUS_OK}
    assert {row["batch_size"]: row["timing"] for row in mine} == {1: schema.TIMING_RETIMED, 2: "interleaved"}
    baseline = {row["round"]: row["batch_latency_s"] for row in table
                if row["variant"] == schema.BASELINE and row["batch_size"] == 1}
    # Paired with the fresh baseline's latency of the same round, not the first baseline worker's.
    assert all(row["baseline_latency_s"] != baseline[row["round"]] for row in mine if row["batch_size"] == 1)
    gt = {(row["batch_size"], row["seed"], row["prompt_index"]): row["image_sha256"] for row in table
          if row["variant"] == schema.GT}
    assert all(row["image_sha256"] == gt[row["batch_size"], row["seed"], row["prompt_index"]] for row in mine)
    (record,) = [json.loads(path.read_text()) for path in (tmp_path / "out" / schema.RUNS_DIR).glob("*.json")]
    (retimed,) = record["retimed"]
    assert (retimed["unit"], retimed["batch_size"], retimed["rounds"]) == (f"sub:honest:{TASK}", 1, 8)
    assert retimed["speedup_over_gt"][1] > 1  # the interval's low end: beyond the noise
    audits = [entry for entry in record["audit"]["units"] if entry["unit"] == retimed["unit"]]
    assert [(entry["batch_size"], entry["passed"]) for entry in audits] == [(1, True), (1, True), (2, True)]


@pytest.mark.parametrize("sub_factor, rounds, beyond", [(1.0, 8, False), (0.8, 8, True), (0.8, 4, None)])
def test_the_retiming_trigger_is_the_interval_of_the_speedup_ratio(sub_factor, rounds, beyond):
    """Same-round noise that hits both alike cancels in the ratio; a submission 20 % faster in every round is beyond
    it; from 4 rounds there is no interval (None), so no re-timing."""
    from accelbench.builder.lanes import Lane
    from accelbench.builder.rounds import _speedup_over_the_gt

    noise = np.random.default_rng(0).uniform(0.8, 1.2, rounds)
    jitter = np.random.default_rng(1).uniform(0.98, 1.02, rounds)

    def lane(factor, wobble):
        return Lane(None, [], set(), {}, 8, latencies={index: (1.0 * factor * noise[index] * wobble[index],
                                                               2.0 * noise[index]) for index in range(rounds)})

    value, low, high, n = _speedup_over_the_gt(lane(sub_factor, jitter), lane(1.0, jitter[::-1]))
    assert n == rounds and value == pytest.approx(1 / sub_factor, rel=0.05)
    assert (None if low is None else low > 1) == beyond
