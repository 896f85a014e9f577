"""Reliability: a full or read-only disk and click's own argument errors are one ``error:`` line, never a
traceback, and leave data that a rerun completes identically."""

import contextlib
import subprocess
import uuid

import pytest
from click.testing import CliRunner

from accelbench import dataset
from accelbench.cli import main

# End-to-end generate runs: out of make test-fast's quick lane.
pytestmark = pytest.mark.slow

TASK = "smoke-sd15-ddim-8-deepcache"
ARGS = ["generate", "--suite", "smoke", "--tasks", TASK, "--limit", "2", "--no-progress", "--seed-key", "5eed" * 4]


@contextlib.contextmanager
def tmpfs(folder, options):
    """A small tmpfs at ``folder`` (root only: the test is skipped where mounting is not allowed)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, f"accelbench-{uuid.uuid4().hex[:6]}",
                              str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def hashes(directory):
    return {row["record_id"]: row["image_sha256"]
            for row in dataset.read_generations(directory, ["image_sha256"]).to_pylist()}


def invoke(*args):
    return CliRunner().invoke(main, [*args])


def test_disk_full_stops_at_the_first_failed_write_and_a_rerun_completes_identically(tmp_path):
    clean = tmp_path / "clean"
    assert invoke(*ARGS, "--out", str(clean)).exit_code == 0
    with tmpfs(tmp_path / "small", "size=160k") as small:
        out = small / "out"
        full = invoke(*ARGS, "--out", str(out))
        assert full.exit_code == 1, full.output
        lines = full.stderr.strip().splitlines()
        assert lines[-1].startswith("error: cannot write ") and lines[-1].endswith("No space left on device")
        assert not any("Traceback" in line for line in lines)
        partial = hashes(out)  # what was written stays readable
        assert len(partial) < len(hashes(clean))
        assert all(hashes(clean)[record] == sha for record, sha in partial.items())
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)  # free space
        again = invoke(*ARGS, "--out", str(out))
        assert again.exit_code == 0, again.output
        assert hashes(out) == hashes(clean)


def test_disk_full_at_start_leaves_no_empty_folder(tmp_path):
    with tmpfs(tmp_path / "tiny", "size=4k") as tiny:
        (tiny / "filler").write_bytes(b"x" * 4096)
        result = invoke(*ARGS, "--out", str(tiny / "out"))
        assert result.exit_code == 1
        assert result.stderr.strip().startswith("error: cannot write ") and len(result.stderr.splitlines()) == 1
        assert not (tiny / "out").exists()


def test_read_only_out_is_one_line(tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=64k") as read_only:
        result = invoke(*ARGS, "--out", str(read_only / "out"))
        assert result.exit_code == 1
        assert result.stderr.strip() == f"error: cannot write {read_only / 'out' / 'accelbench.json'}: " \
                                        "Read-only file system"


@pytest.mark.parametrize("args, message", [
    (["generate", "--bogus"], "error: No such option '--bogus'."),
    (["generate"], "error: Missing option '--out'."),
    (["nope"], "error: No such command 'nope'."),
    (["generate", "--out", "x", "--limit", "0"], "error: Invalid value for '--limit'"),
    (["--nope"], "error: No such option '--nope'."),
])
def test_click_argument_errors_are_one_line_and_exit_2(args, message):
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1


def test_a_run_larger_than_the_free_space_is_announced(tmp_path, monkeypatch, caplog):
    from collections import namedtuple

    from accelbench.builder import generate

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(generate.shutil, "disk_usage", lambda path: usage(10_000, 9_000, 1_000))
    with caplog.at_level("WARNING", logger="accelbench"):
        result = invoke(*ARGS, "--out", str(tmp_path / "out"), "--variants", "baseline", "--seeds", "0")
    assert result.exit_code == 0, result.output
    assert "this run needs about" in caplog.text and "GiB free: it will stop with an error when the disk is full" \
        in caplog.text
