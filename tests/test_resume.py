"""Resume and atomicity (a SIGKILL needs a process of its own; the runs compared run in this one), and sharding:
two torchrun ranks, shards by hand, and how many pipelines a group may hold."""

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict

import pytest
from generating import CATALOG, SLICE, SLICE_ARGS, cli, generate, gt_source, hashes, raw_record_ids, rows, submission

from accelbench import schema
from accelbench.builder import plan, rounds

# End-to-end generate runs: out of make test-fast's quick lane.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    """A submission with a copy of one GT program, part of the runs that are killed and resumed."""
    return submission(tmp_path_factory.mktemp("honest") / "honest", {SLICE[1]: gt_source(SLICE[1])})


@pytest.fixture(scope="module")
def clean_slice(tmp_path_factory, honest):
    out = tmp_path_factory.mktemp("clean")
    generate(out, tasks=SLICE, limit=2, submissions=[honest])
    return hashes(out)


def resume_equals_clean(out, clean_slice, honest):
    partial = hashes(out)
    assert 0 < len(partial) < len(clean_slice)  # the kill happened mid-run
    summary = generate(out, tasks=SLICE, limit=2, submissions=[honest])
    assert summary.images_skipped == len(partial)
    assert hashes(out) == clean_slice
    assert sorted(raw_record_ids(out)) == sorted(clean_slice)  # no duplicates left in any file
    assert not list(out.rglob("*.tmp"))  # a killed write's temporary file is removed at start-up


@pytest.mark.slow
@pytest.mark.parametrize("failpoint", ["part:3", "shard-write:1", "shard:1"])
def test_resume_after_sigkill_equals_a_clean_run(clean_slice, honest, tmp_path, failpoint):
    killed = cli("generate", "--out", str(tmp_path), *SLICE_ARGS, "--submission", str(honest),
                 env={"ACCELBENCH_FAILPOINT": failpoint})
    assert killed.returncode == -signal.SIGKILL
    if failpoint.startswith("shard-write"):
        assert list((tmp_path / schema.GENERATIONS_DIR).glob(".*.tmp"))  # killed mid-write: a leftover
    resume_equals_clean(tmp_path, clean_slice, honest)


@pytest.mark.slow
def test_resume_after_an_external_sigkill_mid_run(clean_slice, honest, tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "accelbench", "generate", "--out", str(tmp_path), *SLICE_ARGS,
                                "--submission", str(honest)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 300
    while len(list((tmp_path / schema.STAGING_DIR).glob("*/part-*.parquet"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # workers (own groups) and encoders exit once their parent is gone
    process.wait()
    resume_equals_clean(tmp_path, clean_slice, honest)


@pytest.mark.slow
def test_two_torchrun_processes_write_the_same_dataset_as_one(clean_slice, honest, tmp_path):
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "--no-python", shutil.which("accelbench", path=os.path.dirname(sys.executable)),
                             "generate", "--out", str(tmp_path), *SLICE_ARGS, "--submission", str(honest)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert hashes(tmp_path) == clean_slice
    by_rank = defaultdict(set)
    for row in rows(tmp_path, ["rank", "setting_id"]):
        by_rank[row["rank"]].add(row["setting_id"])
    assert set(by_rank) == {0, 1} and not by_rank[0] & by_rank[1]  # settings, not units, are split
    assert len(list((tmp_path / schema.RUNS_DIR).glob("*.json"))) == 2


def test_shards_by_hand_cover_the_work_list_exactly_once():
    tasks = [CATALOG.task(task_id) for task_id in CATALOG.suite("standard").tasks]
    settings = plan.group_by_setting(plan.build_units(CATALOG, tasks, (schema.BASELINE, schema.GT)))
    shards = [plan.shard_settings(settings, index, 3) for index in range(3)]
    assert sorted(u.label for shard in shards for setting in shard for u in setting) == sorted(
        u.label for setting in settings for u in setting)
    assert len(settings) == len({task.setting_id for task in tasks})
    assert all(setting[0].is_baseline for setting in settings)


@pytest.mark.parametrize("max_resident, capacity, expected", [(None, None, 5), (3, None, 3), (None, 2, 2),
                                                               (3, 2, 2), (2, 4, 2), (9, 9, 5)])
def test_max_resident_bounds_what_the_device_was_measured_to_hold(max_resident, capacity, expected):
    assert rounds.resident_limit(max_resident, capacity, lanes=5) == expected
