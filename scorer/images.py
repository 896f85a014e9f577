"""Finding and decoding the PNGs of generation rows, a Parquet row group at a time.

Scoring workers import this module: numpy, pyarrow and Pillow only. Rows are addressed by (file, row group,
row) so a worker reads just the row groups it needs (64 images each) instead of whole shards.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from accelbench.dataset import DatasetError, record_rows


@dataclass(frozen=True)
class Location:
    path: str
    row_group: int
    row: int


def locate(files: list[Path]) -> dict[str, Location]:
    """Where each record's row is, by the one rule of :func:`accelbench.dataset.record_rows` (the row
    :func:`accelbench.dataset.read_columns` reads). Raises :class:`DatasetError` for a file without an image
    column."""
    def rows():
        for path in files:
            parquet = pq.ParquetFile(path)
            if "image" not in parquet.schema_arrow.names:
                raise DatasetError(f"{path}: missing column image")
            for row_group in range(parquet.num_row_groups):
                table = parquet.read_row_group(row_group, columns=["record_id", "status"])
                for row, (record, status) in enumerate(zip(table.column("record_id").to_pylist(),
                                                           table.column("status").to_pylist())):
                    yield record, status, Location(str(path), row_group, row)

    return record_rows(rows())


def group_by_row_group(items: list[tuple[Location, object]]) -> list[tuple[str, int, list[tuple[int, object]]]]:
    """``(location, payload)`` pairs -> ``(path, row_group, [(row, payload), ...])`` in file order."""
    groups: dict[tuple[str, int], list[tuple[int, object]]] = {}
    for location, payload in items:
        groups.setdefault((location.path, location.row_group), []).append((location.row, payload))
    return [(path, row_group, rows) for (path, row_group), rows in sorted(groups.items())]


def read_pngs(path: str, row_group: int) -> list[bytes | None]:
    """The PNG bytes of every row of one row group (None where the row has no image)."""
    images = pq.ParquetFile(path).read_row_group(row_group, columns=["image"]).column(0)
    return pc.struct_field(images, "bytes").to_pylist()  # unlike .field(), a null image gives None


def open_rgb(png: bytes):
    """PNG bytes -> RGB ``PIL.Image`` (decoded now, not lazily)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return image.convert("RGB")


def decode_rgb(png: bytes) -> np.ndarray:
    """PNG bytes -> uint8 ``[H, W, 3]`` array."""
    return np.asarray(open_rgb(png))
