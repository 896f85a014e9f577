"""Reading and writing a dataset folder safely (layout in :mod:`accelbench.schema`). pyarrow only, no torch.

Writes are atomic: a table goes to a temporary name in the same folder, is fsynced, then renamed. Readers
only look at final names, and a final file that still cannot be read (truncated, foreign) is skipped with a
warning, never read as data.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from accelbench import schema
from accelbench.errors import RunError, UserInputError

log = logging.getLogger("accelbench")

_UMASK = os.umask(0)  # the umask can only be read by setting it: put it straight back
os.umask(_UMASK)
ROW_GROUP_SIZE = 64  # rows per Parquet row group: readers stream images a group at a time


class DatasetError(UserInputError):
    """A dataset folder problem, as one line for the user."""


def json_safe(value):
    """``value`` as strict JSON can hold it: infinity as the string ``"inf"`` (``"-inf"``), NaN as null, numpy
    scalars as Python numbers, paths as strings; dicts, lists and tuples converted item by item.

    Example:
        >>> json_safe({"psnr": float("inf"), "values": (1, float("nan")), "path": Path("a/b")})
        {'psnr': 'inf', 'values': [1, None], 'path': 'a/b'}
    """
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def write_json_atomic(path: Path, payload) -> None:
    """``payload`` (through :func:`json_safe`) as indented JSON with sorted keys, atomically."""
    data = _json_bytes(payload)
    _atomic_write(Path(path), lambda handle: handle.write(data))


def write_json_first(path: Path, payload) -> bool:
    """Write ``payload`` as :func:`write_json_atomic` does unless ``path`` exists: of several writers starting at
    once (ranks on one host or on nodes sharing the folder) the first wins and the others leave its file alone.
    True when this call wrote it. The complete temporary file gets its name by a hard link, which is atomic and
    fails where the name is taken (also on NFS). A filesystem without hard links gets a rename instead, where the
    last writer wins: harmless for the ranks of one run, which write the same content."""
    data = _json_bytes(payload)
    try:
        _atomic_write(Path(path), lambda handle: handle.write(data), place=_place_first)
    except FileExistsError:
        return False
    return True


def _json_bytes(payload) -> bytes:
    return json.dumps(json_safe(payload), indent=2, sort_keys=True, allow_nan=False).encode()


# What os.link raises where a filesystem has no hard links (vfat, some FUSE and object-store mounts).
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS})


def _place_first(temporary: str, path: Path) -> None:
    """Give the written ``temporary`` file the name ``path`` unless that name exists (FileExistsError)."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        # On NFS a link whose reply was lost is retried and reports EEXIST although it succeeded: then the
        # temporary file has a second name (open(2) on O_EXCL describes this check).
        if os.stat(temporary).st_nlink < 2:
            raise
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
        os.replace(temporary, path)
        return
    os.unlink(temporary)


def write_csv_atomic(path: Path, rows: list[dict], columns) -> None:
    """``rows`` as a CSV file with exactly ``columns`` (a tuple of :class:`schema.Column`), atomically."""
    buffer = io.BytesIO()
    table = pa.Table.from_pylist(rows, schema=schema.arrow_schema(columns, with_features=False))
    pacsv.write_csv(table, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def read_typed_csv(path: Path, columns, remedy: str) -> pa.Table:
    """A CSV file written by :func:`write_csv_atomic`, typed as ``columns``. A missing file or column raises
    :class:`DatasetError` naming the path and ``remedy`` (what to run to write it)."""
    path = Path(path)
    target = schema.arrow_schema(columns)
    if not path.is_file():
        raise DatasetError(f"{path}: not found: {remedy}")
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types=target, strings_can_be_null=True, quoted_strings_can_be_null=False))
    missing = [name for name in target.names if name not in table.column_names]
    if missing:
        raise DatasetError(f"{path}: missing column {missing[0]}: {remedy}")
    return table.select(target.names).cast(target)


def write_table_atomic(table: pa.Table, path: Path, before_replace=None) -> None:
    _atomic_write(Path(path), lambda handle: pq.write_table(table, handle, row_group_size=ROW_GROUP_SIZE,
                                                            compression="zstd"), before_replace)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    _atomic_write(Path(path), lambda handle: handle.write(data))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_shards(directory: Path) -> int:
    """Check every shard a run record lists (``shards``: name -> sha256) against the file; returns how many were
    checked. The latest record (``finished_at``) that lists a shard decides (a merge rewrites a shard it keeps in
    part, and names the shards it left out in ``dropped_shards``). A shard changed or lost after its record was
    written is a :class:`DatasetError` naming it and the record."""
    directory = Path(directory)
    records = []
    for record_path in sorted((directory / schema.RUNS_DIR).glob("*.json")):
        try:
            records.append((json.loads(record_path.read_text()), record_path.stem))
        except (OSError, ValueError) as error:
            raise DatasetError(f"{record_path}: unreadable run record ({error})") from None
    expected: dict[str, tuple[str, str]] = {}  # shard name -> (sha256, the record's name)
    for record, name in sorted(records, key=lambda entry: str(entry[0].get("finished_at") or "")):
        expected.update({shard: (digest, name) for shard, digest in (record.get("shards") or {}).items()})
        for shard in record.get("dropped_shards") or []:
            expected.pop(shard, None)
    for shard, (digest, name) in sorted(expected.items()):
        path = directory / schema.GENERATIONS_DIR / shard
        if not path.is_file():
            raise DatasetError(f"{path}: written by run {name} and now missing; the dataset lost rows (regenerate "
                               f"them, or remove the run record to accept the loss)")
        if (found := file_sha256(path)) != digest:
            raise DatasetError(f"{path}: changed since run {name} wrote it (sha256 {found[:12]}, recorded "
                               f"{digest[:12]}); its rows cannot be trusted")
    return len(expected)


def copy_atomic(source: Path, target: Path) -> None:
    """A copy of file ``source`` at ``target``, written atomically (streamed: shards can be large)."""
    with open(source, "rb") as reading:
        _atomic_write(Path(target), lambda handle: shutil.copyfileobj(reading, handle))


def link_or_copy(source: Path, target: Path) -> None:
    """``source`` at ``target`` as a hard link (no space used: dataset files other than the workers' logs, which
    are appended to, are only ever replaced by rename, never changed in place, so the link never sees a later
    change), or an atomic copy where links are not possible (another filesystem, links not permitted)."""
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        copy_atomic(source, target)


def plain_files(folder: Path) -> list[Path]:
    """Files of a folder, sorted, without hidden ones (temporary names of atomic writes in progress)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith("."))


class WriteError(RunError):
    """A dataset file could not be written (disk full, read-only or failing storage): names the path and cause."""


def _atomic_write(path: Path, write, before_replace=None, place=os.replace) -> None:
    """``before_replace``: called with the written temporary file's path just before the rename (tests kill
    the process there); ``place(temporary, path)`` gives the file its name. A failed write leaves nothing
    behind and raises :class:`WriteError` (a ``place`` that finds the name taken: FileExistsError)."""
    try:
        _write_replace(path, write, before_replace, place)
    except FileExistsError:
        raise
    except OSError as error:
        raise WriteError(f"cannot write {path}: {error.strerror or error}") from error


def _write_replace(path: Path, write, before_replace, place) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
            # Temporary files are private (0600); the final file gets the permissions of a normal new file.
            os.fchmod(handle.fileno(), 0o666 & ~_UMASK)
        if before_replace is not None:
            before_replace(Path(handle.name))
        place(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def read_manifest(directory: Path) -> dict:
    """The dataset manifest, checked: a folder, an accelbench dataset, a schema version this code reads."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"{directory}: no such dataset folder")
    path = directory / schema.DATASET_MANIFEST
    if not path.is_file():
        raise DatasetError(f"{directory}: not an accelbench dataset ({schema.DATASET_MANIFEST} is missing)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: unreadable dataset manifest ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != schema.DATASET_KIND:
        raise DatasetError(f"{path}: not an accelbench dataset manifest (kind {manifest.get('kind')!r})"
                           if isinstance(manifest, dict) else f"{path}: not an accelbench dataset manifest")
    version = manifest.get("schema_version")
    if version != schema.SCHEMA_VERSION:
        raise DatasetError(f"{path}: schema version {version!r} is not one this accelbench reads "
                           f"({schema.SCHEMA_VERSION}); use the accelbench version that wrote it")
    return manifest


def init_dataset(directory: Path, manifest: dict, sweep_older_than_s: float = 0.0, adopt: tuple[str, ...] = ()
                 ) -> None:
    """Create the dataset folder, or check that an existing one pins the same :data:`schema.PINNED_FIELDS`
    (naming every field that differs) but those in ``adopt``, where the existing dataset's value stands (a seed
    key nobody asked for). Orphaned temporary files of a killed run (older than
    ``sweep_older_than_s``: other ranks may be writing) are removed.

    Safe when several ranks start at once, on one host or on nodes sharing the folder: the first to write the
    manifest wins (:func:`write_json_first`), and every rank compares its own with the one written."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise DatasetError(f"{directory}: exists and is not a folder")
    path = directory / schema.DATASET_MANIFEST
    if not path.exists():
        foreign = sorted(entry.name for entry in directory.iterdir()
                         if entry.name not in _DATASET_ENTRIES and not entry.name.endswith(".tmp")
                         ) if directory.is_dir() else []
        if foreign:
            raise DatasetError(f"{directory} is not empty and not an accelbench dataset (holds {foreign[0]!r}); "
                               f"use another --out")
        created = not directory.exists()
        try:
            write_json_first(path, manifest)
        except WriteError:
            if created:
                with contextlib.suppress(OSError):
                    directory.rmdir()  # leave no empty folder behind
            raise
    existing = read_manifest(directory)
    different = [key for key in schema.PINNED_FIELDS if key not in adopt and existing.get(key) != manifest.get(key)]
    if different:
        described = "; ".join(f"{key} {existing.get(key)!r} (this run: {manifest.get(key)!r})" for key in different)
        raise DatasetError(f"{directory} holds a dataset made with other {', '.join(different)}: {described}; "
                           f"use another --out (only new tasks or submissions may be added to a dataset)")
    remove_orphaned_temporaries(directory, sweep_older_than_s)


def remove_orphaned_temporaries(directory: Path, older_than_s: float = 0.0) -> list[Path]:
    """Delete the ``.*.tmp`` files that :func:`_atomic_write` leaves behind when its process is killed.

    A temporary name is only ever used by the process that created it, so a leftover is garbage. A run
    that may share the folder with live writers (other ranks) passes ``older_than_s`` to spare their files: a
    file being written is younger, as its writer updates it until the rename. Ages are measured on the
    storage's clock, not this host's, which on shared storage may be off from the file server's."""
    removed = []
    now = _storage_time(directory)
    for folder in (directory, *(directory / name for name in _DATASET_ENTRIES)):
        if not folder.is_dir():
            continue
        for temporary in folder.rglob(".*.tmp"):
            try:
                if temporary.is_file() and now - temporary.stat().st_mtime >= older_than_s:
                    temporary.unlink()
                    removed.append(temporary)
            except FileNotFoundError:
                pass  # another rank cleaned it up first
    return removed


def _storage_time(directory: Path) -> float:
    """The time on the clock that stamps ``directory``'s files: the modification time of a file made now."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".clock.", suffix=".tmp") as probe:
            return os.fstat(probe.fileno()).st_mtime
    except OSError as error:
        raise WriteError(f"cannot write {directory}: {error.strerror or error}") from error


_DATASET_ENTRIES = {schema.DATASET_MANIFEST, schema.GENERATIONS_DIR, schema.PROGRAMS_DIR, schema.RUNS_DIR,
                    schema.SCORES_DIR, schema.REPORT_DIR, schema.LOGS_DIR, schema.STAGING_DIR, schema.GATE_DIR,
                    schema.TASKS_DIR}


def readable_parquet(paths) -> list[Path]:
    """The files whose Parquet footer reads; the others are reported and skipped."""
    good = []
    for path in paths:
        try:
            pq.read_metadata(path)
        except (OSError, pa.ArrowException) as error:
            log.warning("ignoring unreadable file %s (%s)", path, str(error).splitlines()[0][:120])
            continue
        good.append(Path(path))
    return good


def shard_files(directory: Path) -> list[Path]:
    """Completed generation shards."""
    return readable_parquet(sorted((Path(directory) / schema.GENERATIONS_DIR).glob(f"{schema.SHARD_PREFIX}*.parquet")))


def part_files(directory: Path, staging: str = "*") -> list[Path]:
    """Per-batch part files not yet compacted into a shard (``staging``: one run's staging folder name)."""
    return readable_parquet(sorted((Path(directory) / schema.STAGING_DIR).glob(f"{staging}/{schema.PART_GLOB}")))


def generation_files(directory: Path) -> list[Path]:
    """Every file holding generation rows: shards first, then parts of interrupted runs.

    Parts are listed before shards: a compaction by another rank's writer writes its shard before it removes the
    parts, so a row moved between the two listings is found in one or the other, never in neither."""
    parts = part_files(directory)
    return shard_files(directory) + parts


def read_columns(files, columns: list[str], schema_columns=schema.GENERATION_COLUMNS) -> pa.Table:
    """``columns`` of ``files`` as one table, one row per record_id (:func:`record_rows`), in file order."""
    requested = list(dict.fromkeys(["record_id", *columns]))
    wanted = list(dict.fromkeys([*requested, "status"]))
    types = {column.name: column.type for column in schema_columns}
    target = pa.schema([pa.field(name, types[name]) for name in wanted])
    tables = []
    for path in files:
        present = pq.read_schema(path).names
        missing = [name for name in wanted if name not in present and name not in schema.ADDED_COLUMNS]
        if missing:
            raise DatasetError(f"{path}: missing column {missing[0]}")
        table = pq.read_table(path, columns=[name for name in wanted if name in present])
        for name in wanted:  # a column added after the file was written reads as null
            if name not in present:
                table = table.append_column(name, pa.nulls(table.num_rows, types[name]))
        tables.append(table.select(wanted).cast(target))
    table = pa.concat_tables(tables) if tables else target.empty_table()
    chosen = record_rows(zip(table.column("record_id").to_pylist(), table.column("status").to_pylist(),
                             range(table.num_rows)))
    if len(chosen) < table.num_rows:
        table = table.take(pa.array(sorted(chosen.values()), type=pa.int64()))
    return table.select(requested)


def record_rows(rows) -> dict:
    """The row that stands for each record among ``(record_id, status, row)`` in file order (shards before parts):
    its first ``ok`` row, else its first row. Re-runs and interrupted compactions repeat rows, and
    ``--retry-failed`` adds an ok row after a failed one. Every reader of generation rows (columns or images)
    goes through this one rule."""
    chosen: dict = {}
    settled: set = set()  # records whose chosen row is ok
    for record, status, row in rows:
        if record in settled:
            continue
        if record not in chosen or status == schema.STATUS_OK:
            chosen[record] = row
            if status == schema.STATUS_OK:
                settled.add(record)
    return chosen


def drop_duplicate_records(table: pa.Table, key: tuple[str, ...] = ("record_id",)) -> pa.Table:
    """The first row of each ``key`` value, in table order (re-runs and interrupted compactions repeat rows)."""
    first: dict[tuple, int] = {}
    for index, value in enumerate(zip(*(table.column(name).to_pylist() for name in key))):
        first.setdefault(value, index)
    return table if len(first) == table.num_rows else table.take(sorted(first.values()))


LISTING_ATTEMPTS = 5  # reads of a dataset whose parts other ranks are compacting meanwhile, before giving up


def read_generations(directory: Path, columns: list[str] | None = None) -> pa.Table:
    """The generation rows of a dataset (without the image column unless asked for)."""
    read_manifest(directory)
    names = [c.name for c in schema.GENERATION_COLUMNS]
    if columns is None:
        columns = [name for name in names if name != "image"]
    unknown = [name for name in columns if name not in names]
    if unknown:
        raise DatasetError(f"unknown generation column(s): {', '.join(unknown)}")
    for _attempt in range(LISTING_ATTEMPTS):
        try:
            return read_columns(generation_files(directory), columns)
        except FileNotFoundError as error:  # a listed part was compacted into a shard since: list again
            vanished = error
    raise DatasetError(f"{directory}: generation files kept vanishing while read ({vanished})")
