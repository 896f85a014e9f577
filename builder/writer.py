"""The writer: PNG encoding in worker processes, atomic per-batch parts, per-unit shards, all between rounds.

The generate loop hands over each finished batch (row metadata + uint8 pixels) and goes straight on to the next
GPU call; the writer only holds it. Between rounds, when no timed call is running, ``flush`` has worker
processes encode the held batches' PNGs in parallel and writes each batch as one part file
``.staging/<run_id>-r<rank>/part-<n>.parquet`` (temporary name, fsync, rename). So no timed call shares the host
with encoding or writing, whatever its cores (on an H200 this cost no measurable wall time,
docs/investigations/sd15-harness-gap.md §1.2). A killed run loses at most the round in flight. When a unit
ends, its parts are compacted into one shard ``data/generations-*.parquet`` (again atomically), and only then are
the parts removed; record ids already in a shard are never written twice, so a crash at any point leaves data that
is complete, readable and free of duplicates.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import shutil
import signal
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from accelbench import dataset, schema
from accelbench.builder import encode
from accelbench.builder.encode import PNG_COMPRESS_LEVEL, encode_png

HELD_DIR = "held"  # .staging/<run>/held/<unit>/: parts of audited units, invisible to readers until released
FAILPOINT_ENV = "ACCELBENCH_FAILPOINT"  # tests: "part:N" / "shard:N" kills the process after the N-th write of
# that kind, "shard-write:N" in the middle of it (the temporary file written, not yet renamed)


def default_workers() -> int:
    """Encoding processes: all cores but two (the timed process and its helper threads need theirs), at most 8.

    Eight level-1 encoders turn out ~140 512² or ~37 1024² PNGs a second: several times what one GPU renders."""
    return max(1, min((os.cpu_count() or 1) - 2, 8))


def _failpoint(name: str, count: int) -> None:
    """SIGKILL this process after the ``count``-th write of kind ``name`` when the test hook asks for it."""
    if os.environ.get(FAILPOINT_ENV) == f"{name}:{count}":
        os.kill(os.getpid(), signal.SIGKILL)


class ShardWriter:
    def __init__(self, directory: Path, run_id: str, rank: int, world_size: int, workers: int | None = None,
                 compress_level: int = PNG_COMPRESS_LEVEL, cores: list[int] | None = None):
        self.directory = Path(directory)
        self.rank, self.world_size = rank, world_size
        self.run_id = run_id
        self.staging = self.directory / schema.STAGING_DIR / schema.run_stem(run_id, rank)
        self.compress_level = compress_level
        self.table_schema = schema.arrow_schema(schema.GENERATION_COLUMNS)
        self.parts_written = self.shards_written = self.rows_written = 0
        self.shard_digests: dict[str, str] = {}  # file name in generations/ -> sha256: the run record keeps them
        self._held: list[tuple[list[dict], object, str | None]] = []  # batches submitted since the last flush
        self._failed = False  # a write failed: nothing more is written, so no half-state is added to it
        self._compact_orphans()
        # spawn, not fork: the parent may hold CUDA state, which must never be forked.
        workers = workers or default_workers()
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=encode.init_worker, initargs=(os.getpid(), cores))
        # Start every worker now: spawning them during the first timed batches would slow those batches.
        list(self._pool.map(encode.ready, range(workers)))

    def submit(self, rows: list[dict], pixels=None, hold: str | None = None) -> None:
        """Hold one batch until the next flush: ``rows`` without image fields, ``pixels`` uint8 [N, H, W, 3]
        (None when the batch failed). ``hold``: a unit's label; its parts are written apart, where no reader looks,
        until :meth:`release` (or :meth:`discard`) decides their fate."""
        self._held.append((rows, pixels, hold))

    def _held_folder(self, label: str) -> Path:
        return self.staging / HELD_DIR / hashlib.sha256(label.encode()).hexdigest()[:16]

    def release(self, label: str) -> None:
        """The held parts of ``label`` join the run's parts (renamed: no copy)."""
        folder = self._held_folder(label)
        if self._failed or not folder.is_dir():
            return
        with self._writing():
            for path in sorted(folder.glob(schema.PART_GLOB)):
                os.replace(path, self.staging / path.name)
                self.rows_written += pq.read_metadata(self.staging / path.name).num_rows
            folder.rmdir()

    def discard(self, label: str) -> None:
        """The held parts of ``label`` are deleted: none of its rows is written."""
        shutil.rmtree(self._held_folder(label), ignore_errors=True)

    def flush(self) -> None:
        """Encode the held batches (in parallel) and write each as a part, in the order submitted; returns when
        they are on disk."""
        if self._failed:
            return
        held, self._held = self._held, []
        with self._writing():
            encoding = [(rows, None if pixels is None else
                         [self._pool.submit(encode_png, picture, self.compress_level) for picture in pixels], hold)
                        for rows, pixels, hold in held]
            for rows, futures, hold in encoding:
                self._write_part(rows, futures, hold)

    def end_unit(self) -> None:
        """Write what is held, then compact the parts written so far into a shard."""
        self.flush()
        if not self._failed:
            with self._writing():
                self._compact(self.staging)

    def close(self) -> None:
        """Write what is held, compact, stop the encoders (after a failed write: only stop them)."""
        try:
            self.end_unit()
        finally:
            self._pool.shutdown(cancel_futures=True)

    @contextlib.contextmanager
    def _writing(self):
        """A write that raises marks the writer failed: later flushes and compactions write nothing."""
        try:
            yield
        except BaseException:
            self._failed = True
            raise

    def _write_part(self, rows, futures, hold: str | None = None) -> None:
        for row, future in zip(rows, futures or [None] * len(rows)):
            if future is not None:
                png, pixel_hash = future.result()
                row.update(image={"bytes": png, "path": f"{row['record_id']}.png"}, image_sha256=pixel_hash)
        table = pa.Table.from_pylist(rows, schema=self.table_schema)
        self.parts_written += 1
        folder = self.staging if hold is None else self._held_folder(hold)
        dataset.write_table_atomic(table, folder / schema.part_file(f"{self.parts_written:06d}"))
        if hold is None:
            self.rows_written += len(rows)
        _failpoint("part", self.parts_written)

    def _compact(self, staging: Path) -> None:
        parts = dataset.part_files(self.directory, staging.name)
        if parts:
            # A part row is new unless a shard already has it: the same row (a compaction interrupted after the
            # shard was written), or an ok row for its record. A retried record's ok row replaces a failed one.
            stored = dataset.read_columns(dataset.shard_files(self.directory), ["status"]).to_pylist()
            stored_ok = {row["record_id"] for row in stored if row["status"] == schema.STATUS_OK}
            stored_any = {row["record_id"] for row in stored}
            table = dataset.drop_duplicate_records(pa.concat_tables(pq.read_table(path) for path in parts))
            keep = [record not in stored_ok and (record not in stored_any or status == schema.STATUS_OK)
                    for record, status in zip(table.column("record_id").to_pylist(),
                                              table.column("status").to_pylist())]
            table = table.filter(pa.array(keep, type=pa.bool_()))
            if table.num_rows:
                self.shards_written += 1
                count = self.shards_written
                name = f"{schema.SHARD_PREFIX}{schema.run_stem(self.run_id, self.rank)}-{count:04d}.parquet"
                dataset.write_table_atomic(table.cast(self.table_schema),
                                           self.directory / schema.GENERATIONS_DIR / name,
                                           before_replace=lambda _: _failpoint("shard-write", count))
                self.shard_digests[name] = dataset.file_sha256(self.directory / schema.GENERATIONS_DIR / name)
                _failpoint("shard", self.shards_written)
        # Parts still held back (a run killed before its units' audits ended) are not rows: the work is redone.
        shutil.rmtree(staging, ignore_errors=True)

    def _compact_orphans(self) -> None:
        """Parts left by a killed earlier run become a shard before new work starts: those of this rank, and of
        ranks this run's world no longer has (rank q goes to rank q mod world size), so a run resumed on fewer
        processes or nodes finishes them too. No live process has such a staging folder: the processes writing
        a folder at one time (one torchrun, or ``--shard I/N`` of one N) have distinct ranks of one world."""
        for staging in sorted((self.directory / schema.STAGING_DIR).glob("*")):
            rank = schema.stem_rank(staging.name)
            if (staging.is_dir() and staging != self.staging and rank is not None
                    and rank % self.world_size == self.rank):
                self._compact(staging)
