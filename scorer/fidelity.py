"""Fidelity scores: how close each image is to its reference image, in PSNR and SSIM.

Three kinds (``schema.FIDELITY_KINDS``), matched by :mod:`accelbench.scorer.pairing`:

* ``baseline``: an accelerated image vs the baseline image of the same prompt, seed and batch size;
* ``batch-drift``: an image generated at batch size > 1 vs the same image at batch size 1;
* ``gt``: a submission's image vs the GT image of the same task, prompt, seed and batch size (the leaderboard's
  ``deviates`` check: an honest program that is the GT's own code gives identical images, PSNR inf).

Pairs whose stored pixel hashes (``image_sha256``) agree are identical and need no decoding (PSNR inf,
SSIM 1). The others are decoded and compared in worker processes, one subject row group per task, so SSIM on
large images uses every core. Incremental: a (record_id, kind) already stored is never computed again. Writes
``DIR/scores/fidelity/part-*.parquet``.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from accelbench import dataset, schema
from accelbench.schema import KIND_BASELINE, KIND_DRIFT, KIND_GT
from accelbench.scorer import functional, images, pairing, store

WRITE_EVERY = 4096  # rows per part file: an interrupted run keeps all but the last few thousand comparisons

_COLUMNS = ["record_id", "variant", "unit_id", "task_id", "setting_id", "prompt_index", "seed", "batch_size",
            "status", "image_sha256"]


@dataclass(frozen=True)
class FidelitySummary:
    compared: int  # pairs computed by this run
    skipped: int  # pairs already stored
    identical: int  # of the computed pairs, bit-identical ones
    seconds: float
    folder: Path


@dataclass(frozen=True)
class _Pair:
    record_id: str
    kind: str
    reference_record_id: str
    subject: images.Location
    reference: images.Location


def compare(image, reference) -> tuple[float, float, bool]:
    """(PSNR, SSIM, identical) of two uint8 images; NaN scores when their shapes differ (a program that
    changed the resolution is not comparable pixel by pixel)."""
    if image.shape != reference.shape:
        return float("nan"), float("nan"), False
    if (image == reference).all():
        return float("inf"), 1.0, True
    return functional.psnr(image, reference), functional.ssim(image, reference), False


def _row(pair: _Pair, psnr: float, ssim: float, identical: bool) -> dict:
    return {"record_id": pair.record_id, "kind": pair.kind, "reference_record_id": pair.reference_record_id,
            "psnr": psnr, "ssim": ssim, "identical": identical}


def _compare_group(pairs: list[_Pair]) -> list[dict]:
    """Worker: compare pairs whose subjects share a row group; reference row groups are read once each."""
    row_groups: dict[tuple[str, int], list] = {}

    def png(location: images.Location):
        key = (location.path, location.row_group)
        if key not in row_groups:
            row_groups[key] = images.read_pngs(*key)
        return row_groups[key][location.row]

    not_comparable = (float("nan"), float("nan"), False)
    rows = []
    for pair in pairs:
        subject, reference = png(pair.subject), png(pair.reference)
        if subject is None or reference is None:  # an ok row always has an image; a foreign file may not
            rows.append(_row(pair, *not_comparable))
            continue
        try:
            rows.append(_row(pair, *compare(images.decode_rgb(subject), images.decode_rgb(reference))))
        except OSError:  # PIL's error for truncated or foreign bytes
            rows.append(_row(pair, *not_comparable))
    return rows


def score_fidelity(directory: Path, num_workers: int | None = None, progress: bool = True) -> FidelitySummary:
    """Compute the fidelity pairs of ``directory`` that are not stored yet (see the module docstring).

    ``num_workers``: decoding processes (default: CPU count; 0 compares in this process)."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    directory = Path(directory)
    folder = store.fidelity_dir(directory)
    files = dataset.generation_files(directory)
    rows = dataset.read_columns(files, _COLUMNS).to_pylist()
    stored = store.read_fidelity(directory)
    done = set(zip(*(stored.column(name).to_pylist() for name in store.FIDELITY_KEY)))

    # 1. The pairs still to compare.
    candidates = [(KIND_BASELINE, pair) for pair in pairing.baseline_references(rows)]
    candidates += [(KIND_DRIFT, pair) for pair in pairing.drift_references(rows)]
    candidates += [(KIND_GT, pair) for pair in pairing.gt_references(rows)]
    todo = [(kind, subject, reference) for kind, (subject, reference) in candidates
            if (subject["record_id"], kind) not in done]
    skipped = len(candidates) - len(todo)
    if not todo:
        return FidelitySummary(0, skipped, 0, time.perf_counter() - start, folder)

    # 2. Equal pixel hashes settle a pair without decoding.
    locations = images.locate(files)
    settled, to_decode = [], []
    for kind, subject, reference in todo:
        pair = _Pair(subject["record_id"], kind, reference["record_id"], locations[subject["record_id"]],
                     locations[reference["record_id"]])
        if subject["image_sha256"] is not None and subject["image_sha256"] == reference["image_sha256"]:
            settled.append(_row(pair, float("inf"), 1.0, True))
        else:
            to_decode.append(pair)

    # 3. Decode and compare the rest in worker processes, a subject row group per task, writing as we go.
    groups = [[pair for _, pair in members]
              for _, _, members in images.group_by_row_group([(pair.subject, pair) for pair in to_decode])]
    bar = tqdm(total=len(todo), unit="pair", desc="fidelity", disable=not progress)
    pending: list[dict] = []
    identical = 0

    def collect(results: list[dict]) -> None:
        nonlocal pending, identical
        pending += results
        identical += sum(row["identical"] for row in results)
        bar.update(len(results))
        if len(pending) >= WRITE_EVERY:
            store.write_part(folder, pending, schema.FIDELITY_COLUMNS)
            pending = []

    collect(settled)
    workers = min((os.cpu_count() or 1) if num_workers is None else num_workers, len(groups))
    if workers == 0:
        for group in groups:
            collect(_compare_group(group))
    else:
        # spawn, not fork: by now this process is multi-threaded (torch, pyarrow) and may hold CUDA state, and a
        # forked child of such a process can deadlock. Start-up costs a second or two per worker, in parallel.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for future in as_completed([pool.submit(_compare_group, group) for group in groups]):
                collect(future.result())
    if pending:
        store.write_part(folder, pending, schema.FIDELITY_COLUMNS)
    bar.close()
    return FidelitySummary(len(todo), skipped, identical, time.perf_counter() - start, folder)
