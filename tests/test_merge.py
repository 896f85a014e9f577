"""Spreading a run over machines, each way compared with a single-process run: two torchrun nodes writing one
folder (two launches, one c10d rendezvous on localhost), one of them killed and the job restarted, and shards
generated apart and joined by ``accelbench merge``; merge's refusals, and the pieces that make a shared folder
safe (the first manifest wins, the sweep's clock, parts adopted by a smaller world)."""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from generating import SLICE, SLICE_ARGS, generate, hashes, raw_record_ids, rows

from accelbench import dataset, dataset_merge, schema
from accelbench.builder.writer import FAILPOINT_ENV, ShardWriter
from accelbench.cli import main
from accelbench.hub import stage
from accelbench.scorer import report
from accelbench.scorer.score import score_dataset

# End-to-end generate runs: out of make test-fast's quick lane.
pytestmark = pytest.mark.slow

OPTIONS = {"tasks": SLICE, "limit": 2, "seeds": [0], "device": "cpu"}  # two settings: one for each of two ranks
ARGS = [*SLICE_ARGS, "--seeds", "0", "--device", "cpu"]
ACCELBENCH = shutil.which("accelbench", path=os.path.dirname(sys.executable))
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def one_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("one-run")
    generate(out, **OPTIONS)
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """``--shard 0/2`` and ``--shard 1/2``, each in a folder of its own, as on two machines."""
    folders = [tmp_path_factory.mktemp(f"shard-{index}") for index in range(2)]
    for index, folder in enumerate(folders):
        generate(folder, shard=(index, 2), **OPTIONS)
    return folders


@pytest.fixture(scope="module")
def merged(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("merged") / "dataset"
    dataset_merge.merge(shards, out)
    return out


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root`` with its bytes and modification time: what "unchanged" means."""
    return {str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mtime_ns)
            for path in sorted(root.rglob("*")) if path.is_file()}


def names(directory: Path, folder: str) -> set[str]:
    return {path.name for path in dataset.plain_files(directory / folder)}


def invoke(*args):
    return CliRunner().invoke(main, [*map(str, args)])


# ---------------------------------------------------------------------------------------------------------
# merge
# ---------------------------------------------------------------------------------------------------------


def test_merged_shards_equal_a_one_run_dataset(one_run, shards, merged):
    assert hashes(merged) == hashes(one_run)
    assert sorted(raw_record_ids(merged)) == sorted(hashes(one_run))  # one row per record in the files
    for folder in (schema.PROGRAMS_DIR, schema.TASKS_DIR, schema.LOGS_DIR):
        assert names(merged, folder) == names(one_run, folder), folder
    records = names(merged, schema.RUNS_DIR)
    merges = {name for name in records if name.startswith("merge-")}
    assert len(merges) == 1 and dataset.verify_shards(merged) == len(dataset.shard_files(merged))
    assert records - merges == names(shards[0], schema.RUNS_DIR) | names(shards[1], schema.RUNS_DIR)
    by_rank = {}
    for row in rows(merged, ["rank", "setting_id"]):
        by_rank.setdefault(row["rank"], set()).add(row["setting_id"])
    assert set(by_rank) == {0, 1} and not by_rank[0] & by_rank[1]
    assert not (merged / schema.SCORES_DIR).exists()
    assert sorted(path.name for path in merged.parent.iterdir()) == ["dataset"]  # no building folder left


def test_merging_again_changes_nothing(shards, merged):
    before = snapshot(merged)
    again = dataset_merge.merge(shards, merged)
    assert (again.created, again.rows_added, again.files_added) == (False, 0, {})
    assert "nothing to add" in again.format()
    result = invoke("merge", merged, *shards, "--out", merged)
    assert result.exit_code == 0 and "nothing to add" in result.output
    assert snapshot(merged) == before


def test_a_dataset_grows_by_merging_others_into_it(one_run, shards, tmp_path):
    out = tmp_path / "grown"
    shutil.copytree(shards[0], out)
    summary = dataset_merge.merge([shards[1]], out)
    assert (summary.created, summary.inputs, summary.rows_added) == (False, 2, len(hashes(shards[1])))
    assert hashes(out) == hashes(one_run)


def test_a_record_held_by_several_datasets_is_kept_once_from_the_first(one_run, shards, tmp_path):
    out = tmp_path / "overlap"
    summary = dataset_merge.merge([one_run, shards[0]], out)
    assert (summary.records, summary.repeated) == (len(hashes(one_run)), len(hashes(shards[0])))
    assert hashes(out) == hashes(one_run)
    assert sorted(raw_record_ids(out)) == sorted(hashes(one_run))
    assert {row["run_id"] for row in rows(out, ["run_id"])} == {row["run_id"] for row in rows(one_run, ["run_id"])}


def _other_pins(folder: Path):
    manifest = json.loads((folder / schema.DATASET_MANIFEST).read_text())
    dataset.write_json_atomic(folder / schema.DATASET_MANIFEST, {**manifest, "seeds": [7]})


def _edited_shard(folder: Path):
    """A record's pixels edited in a shard after its run wrote it."""
    shard = dataset.shard_files(folder)[0]
    table = pq.read_table(shard)
    hashes_ = table.column("image_sha256").to_pylist()
    table = table.set_column(table.schema.get_field_index("image_sha256"), "image_sha256",
                             pa.array(["0" * 64, *hashes_[1:]]))
    dataset.write_table_atomic(table, shard)


def _other_pixels(folder: Path):
    """Another rendering of a record in a dataset that records no digests (made before them: no run records)."""
    _edited_shard(folder)
    for path in dataset.plain_files(folder / schema.RUNS_DIR):
        path.unlink()
    return pq.read_table(dataset.shard_files(folder)[0]).column("record_id")[0].as_py()


def _other_task_facts(folder: Path):
    path = sorted((folder / schema.TASKS_DIR).glob("*.json"))[0]
    dataset.write_json_atomic(path, {**json.loads(path.read_text()), "text": "another request"})


def _other_run_record(folder: Path):
    path = dataset.plain_files(folder / schema.RUNS_DIR)[0]
    dataset.write_json_atomic(path, {**json.loads(path.read_text()), "seconds": -1})
    return path.name


def _unfinished(folder: Path):
    shard = dataset.shard_files(folder)[0]
    (folder / schema.STAGING_DIR / "run-r0").mkdir(parents=True)
    shutil.copy(shard, folder / schema.STAGING_DIR / "run-r0" / schema.part_file("000001"))


@pytest.mark.parametrize("corrupt, named", [
    (_other_pins, "made with other seeds: seeds [0]"),
    (_other_pixels, "differs between datasets"),
    (_edited_shard, "changed since run"),
    (_other_task_facts, "has other facts"),
    (_other_run_record, "two files named runs/"),
    (_unfinished, "unfinished part file(s)"),
])
def test_a_refused_merge_is_one_line_and_leaves_out_untouched(shards, tmp_path, corrupt, named):
    """The second dataset is a copy of the first (overlapping records) made to disagree with it in one way."""
    other = tmp_path / "other"
    shutil.copytree(shards[0], other)
    detail = corrupt(other)
    existing = tmp_path / "existing"
    shutil.copytree(shards[1], existing)
    before = snapshot(existing)
    for out in (existing, tmp_path / "new"):
        result = invoke("merge", shards[0], other, "--out", out)
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
        assert named in result.stderr and (detail is None or detail in result.stderr)
    assert snapshot(existing) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["existing", "other"]  # nothing new, no temporaries


def test_an_out_that_is_not_a_dataset_or_lies_inside_one_is_refused(shards, tmp_path):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    for out, named in ((tmp_path / "foreign", "not empty and not an accelbench dataset"),
                       (shards[0] / "inside", "is inside the dataset")):
        result = invoke("merge", *shards, "--out", out)
        assert result.exit_code == 2 and named in result.stderr, result.stderr
    assert not (shards[0] / "inside").exists()


@pytest.mark.slow
def test_the_merged_dataset_scores_and_publishes_as_the_one_run_does(one_run, merged, tmp_path):
    """Images, CLIP scores and fidelity are the same; only the timings differ (two runs, two clocks)."""
    deterministic = ["task_id", "variant", "batch_size", "images", "failed", "clip_score", "quality_loss", "psnr",
                     "ssim", "identical_to_baseline", "drift_psnr", "drift_identical"]
    summaries, staged = [], []
    for folder in (one_run, merged):
        copy = tmp_path / folder.name
        shutil.copytree(folder, copy)
        assert score_dataset(copy, device="cpu", num_workers=0, progress=False).complete
        summary = report.read_summary(copy).select(deterministic).to_pylist()
        summaries.append(sorted(summary, key=lambda row: (row["task_id"] or "", row["variant"], row["batch_size"])))
        staged.append(stage.stage(copy, tmp_path / f"{folder.name}-staged", "me/merged").rows)
    assert summaries[0] == summaries[1]
    assert staged[0] == staged[1]


# ---------------------------------------------------------------------------------------------------------
# Multi-node torchrun on one folder
# ---------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def torchrun_node(out: Path, port: int, log: Path, *, hosts_store: bool, env: dict | None = None):
    """One "node": a torchrun agent with one process, joining a 2-node c10d rendezvous on localhost. The node that
    hosts the rendezvous store is said explicitly, so it outlives the other in the kill test."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{port}", "--rdzv-id", f"test-{port}",
               "--rdzv-conf", f"is_host={int(hosts_store)}", "--no-python", ACCELBENCH, "generate", "--out", str(out),
               *ARGS]
    with open(log, "a") as output:
        return subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=True)


def run_two_nodes(out: Path, log_folder: Path) -> None:
    port = free_port()
    nodes = [torchrun_node(out, port, log_folder / f"node{index}.log", hosts_store=index == 0) for index in range(2)]
    try:
        codes = [node.wait(timeout=300) for node in nodes]
    finally:
        stop(nodes)
    assert codes == [0, 0], "".join((log_folder / f"node{index}.log").read_text()[-2000:] for index in range(2))


def stop(nodes) -> None:
    for node in nodes:
        if node.poll() is None:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait()


def run_records(out: Path) -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in dataset.plain_files(out / schema.RUNS_DIR)}


@pytest.mark.slow
def test_two_torchrun_nodes_write_one_dataset_equal_to_one_process(one_run, tmp_path):
    out = tmp_path / "dataset"
    run_two_nodes(out, tmp_path)
    assert hashes(out) == hashes(one_run)
    assert sorted(raw_record_ids(out)) == sorted(hashes(one_run))
    records = run_records(out).values()
    assert sorted((record["rank"], record["world_size"]) for record in records) == [(0, 2), (1, 2)]
    assert len({record["run_id"] for record in records}) == 2  # run ids drawn per process
    pinned = {key: json.loads((one_run / schema.DATASET_MANIFEST).read_text())[key] for key in schema.PINNED_FIELDS}
    assert {key: dataset.read_manifest(out)[key] for key in schema.PINNED_FIELDS} == pinned


@pytest.mark.slow
def test_a_node_killed_mid_run_and_the_job_restarted_completes_it_identically(one_run, tmp_path):
    out = tmp_path / "dataset"
    port = free_port()
    survivor = torchrun_node(out, port, tmp_path / "survivor.log", hosts_store=True)
    killed = torchrun_node(out, port, tmp_path / "killed.log", hosts_store=False, env={FAILPOINT_ENV: "part:2"})
    try:
        assert killed.wait(timeout=300) != 0
        # The survivor finishes its settings; its agent then waits (5 minutes) at torchrun's exit barrier for the
        # dead node: end it there, as a scheduler ends a job that lost a node.
        deadline = time.monotonic() + 300
        while not run_records(out) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop([survivor, killed])
    (survivor_run,) = run_records(out).values()
    (dead_staging,) = (out / schema.STAGING_DIR).iterdir()
    partial = hashes(out)
    assert 0 < len(partial) < len(hashes(one_run))

    run_two_nodes(out, tmp_path)  # the job restarted: every node runs the same command again
    assert hashes(out) == hashes(one_run)
    assert sorted(raw_record_ids(out)) == sorted(hashes(one_run))
    assert not dataset.part_files(out) and not list(out.rglob("*.tmp"))
    restarted = [record for name, record in run_records(out).items() if record["run_id"] != survivor_run["run_id"]]
    assert sum(record["rows_written"] for record in restarted) == len(hashes(one_run)) - len(partial)
    settings = {}
    for row in rows(out, ["run_id", "rank", "setting_id"]):
        settings.setdefault(row["run_id"], set()).add(row["setting_id"])
    redone = set().union(*(settings.get(record["run_id"], set()) for record in restarted))
    assert redone and not redone & settings[survivor_run["run_id"]]  # only the dead node's settings were redone
    assert schema.stem_rank(dead_staging.name) != survivor_run["rank"]


# ---------------------------------------------------------------------------------------------------------
# What makes one folder safe for many writers
# ---------------------------------------------------------------------------------------------------------


def test_the_first_manifest_writer_wins_and_the_others_verify_it(tmp_path, monkeypatch):
    path = tmp_path / schema.DATASET_MANIFEST
    assert dataset.write_json_first(path, {"writer": 1})
    assert not dataset.write_json_first(path, {"writer": 2})
    assert json.loads(path.read_text()) == {"writer": 1} and os.listdir(tmp_path) == [path.name]

    manifest = schema.dataset_manifest(suite="smoke", weights="tiny", dtype_policy="auto", device_type="cpu",
                                       prompts_sha256="p", seeds=[0], batch_sizes=[1], seed_key="", clip={},
                                       suite_facts={})
    folder = tmp_path / "dataset"
    dataset.init_dataset(folder, manifest)
    dataset.init_dataset(folder, manifest)  # a second rank: verifies
    with pytest.raises(dataset.DatasetError, match="other seeds"):
        dataset.init_dataset(folder, {**manifest, "seeds": [1]})

    def no_hard_links(source, target):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)  # vfat, some FUSE mounts: a rename instead
    assert dataset.write_json_first(tmp_path / "other.json", {"writer": 3})
    assert json.loads((tmp_path / "other.json").read_text()) == {"writer": 3}


def test_the_sweep_spares_young_temporaries_by_the_storages_clock(tmp_path, monkeypatch):
    old, young = tmp_path / ".old.parquet.1.tmp", tmp_path / ".young.parquet.2.tmp"
    for path in (old, young):
        path.write_bytes(b"x")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    monkeypatch.setattr(time, "time", lambda: 10**10)  # this host's clock far ahead of the storage's
    assert dataset.remove_orphaned_temporaries(tmp_path, older_than_s=600) == [old]
    assert young.exists()


def test_a_run_on_fewer_ranks_adopts_the_parts_of_ranks_it_no_longer_has(one_run, tmp_path):
    out = tmp_path / "dataset"
    shutil.copytree(one_run, out)
    shard = dataset.shard_files(out)[-1]
    staging = out / schema.STAGING_DIR / schema.run_stem("killed", 3)
    staging.mkdir(parents=True)
    shard.rename(staging / schema.part_file("000001"))  # what a killed rank 3 of a larger world left
    ShardWriter(out, "resumed", rank=0, world_size=2, workers=1).close()
    assert dataset.part_files(out)  # rank 0 of 2 takes ranks 0, 2, 4, ...
    ShardWriter(out, "resumed", rank=1, world_size=2, workers=1).close()
    assert not dataset.part_files(out) and not staging.exists()  # ... and rank 1 of 2 ranks 1, 3, 5, ...
    assert hashes(out) == hashes(one_run)


def test_the_slurm_recipe_is_bash_that_shards_then_merges():
    folder = ROOT / "examples" / "slurm"
    for script, step in (("generate-array.sbatch", '--shard "${SLURM_ARRAY_TASK_ID}/${SHARDS}"'),
                         ("merge.sbatch", 'accelbench merge "${SHARDS_DIR}"/shard-*')):
        assert subprocess.run(["bash", "-n", str(folder / script)]).returncode == 0
        assert step in (folder / script).read_text()
