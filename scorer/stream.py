"""The CLIP image stream: PNG decoding and preprocessing in ``torch.utils.data.DataLoader`` workers.

This module imports torch at the top (a Dataset subclass needs its base class at definition time, and a
module-level class is what spawned workers can unpickle), so only :mod:`accelbench.scorer.clip` imports it,
inside a function; the CLI never does.
"""

from __future__ import annotations

import torch
from torch.utils.data import IterableDataset, get_worker_info

from accelbench.scorer import images

Group = tuple[str, int, list[tuple[int, str]]]  # (shard path, row group, [(row, record_id), ...])


class PngStream(IterableDataset):
    """Yields ``(record_id, preprocessed image tensor)`` for the selected rows, a row group at a time.

    Row groups are dealt round-robin to the DataLoader workers, so each is read (64 images) by exactly one
    worker and no image is decoded twice. An image that cannot be decoded yields ``(record_id, None)``
    instead of killing the run; :func:`collate` sets those apart.
    """

    def __init__(self, groups: list[Group], preprocess):
        self.groups = groups
        self.preprocess = preprocess

    def __iter__(self):
        worker = get_worker_info()
        groups = self.groups if worker is None else self.groups[worker.id::worker.num_workers]
        for path, row_group, members in groups:
            pngs = images.read_pngs(path, row_group)
            for row, record_id in members:
                yield record_id, self._pixels(pngs[row])

    def _pixels(self, png: bytes | None):
        if png is None:
            return None
        try:
            return self.preprocess(images.open_rgb(png))
        except OSError:  # PIL's error for truncated or foreign bytes
            return None


def collate(batch: list[tuple[str, torch.Tensor | None]]) -> tuple[list[str], torch.Tensor | None, list[str]]:
    """``[(record_id, tensor or None), ...]`` -> (record ids, stacked tensors or None, unreadable record ids)."""
    good = [(record_id, pixels) for record_id, pixels in batch if pixels is not None]
    unreadable = [record_id for record_id, pixels in batch if pixels is None]
    stacked = torch.stack([pixels for _, pixels in good]) if good else None
    return [record_id for record_id, _ in good], stacked, unreadable
