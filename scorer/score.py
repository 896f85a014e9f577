"""The score stage: CLIP scores, fidelity scores, then the report, for one dataset folder.

Every step is incremental (stored scores are never recomputed), so running it again after more images were
generated scores only the new ones, and running it on a fully scored dataset only rebuilds the report.

What cannot be read is skipped, never fatal: a generation file whose Parquet footer is unreadable, an image
that does not decode. The rest is scored, the report names what is missing, and :attr:`ScoreSummary.complete`
is False (``accelbench score`` then exits 1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from accelbench import dataset, schema
from accelbench.scorer import clip, fidelity, leaderboard_files, markdown, report
from accelbench.scorer.errors import NoImagesError

MAX_TASK_LINES = 20  # format() stays on one screen; report.md has every task


@dataclass(frozen=True)
class ScoreSummary:
    directory: Path
    clip: clip.ClipSummary
    fidelity: fidelity.FidelitySummary
    report: report.Report
    seconds: float

    @property
    def complete(self) -> bool:
        """Every generation file and every ok image could be read."""
        return not self.report.unreadable_files and not self.clip.unreadable

    def format(self) -> str:
        c, f = self.clip, self.fidelity
        lines = [
            f"CLIP {c.recipe_id}: {c.scored} image(s) scored, {c.skipped} already scored"
            + (f", {c.unreadable} unreadable" if c.unreadable else "")
            + (f" ({c.images_per_s:.1f} images/s)" if c.scored else ""),
            f"fidelity: {f.compared} pair(s) compared ({f.identical} identical), {f.skipped} already stored",
            f"report: {self.report.folder / report.REPORT_MD} ({self.seconds:.1f} s in all)",
        ]
        accelerated = [row for row in self.report.pooled if row["variant"] != schema.BASELINE]
        if accelerated:
            lines += ["", f"{'task':<44} {'speedup':>8} {'quality loss':>13} {'PSNR':>7}  flags"]
            for row in accelerated[:MAX_TASK_LINES]:
                speedup = "–" if row["speedup"] is None else f"{row['speedup']:.2f}x"
                loss = "–" if row["quality_loss"] is None else f"{100 * row['quality_loss']:+.1f} %"
                psnr = "–" if row["psnr"] is None else f"{row['psnr']:.1f}"
                label = markdown.variant_label(row["task_id"], row["variant"])
                lines.append(f"{label:<44} {speedup:>8} {loss:>13} {psnr:>7}  {row['flags'].replace(';', ', ')}")
            if len(accelerated) > MAX_TASK_LINES:
                lines.append(f"... {len(accelerated) - MAX_TASK_LINES} more in {report.REPORT_MD}")
        board = self.report.leaderboard
        if board is not None:
            rank = schema.fast_column(1.0 if 1.0 in board.fast_p else board.fast_p[0])
            lines += ["", f"leaderboard: {self.report.folder / leaderboard_files.LEADERBOARD_CSV}",
                      f"  {'submission':<30} {'correct':>8} {rank:>8} {'GT parity':>10}"]
            for row in board.rows:
                name = row["submission"] + (" (reference)" if row["reference"] else "")
                lines.append(f"  {name:<30} {str(row['correct']) + '/' + str(row['tasks']):>8} "
                             f"{row[rank]:>8.2f} {row['gt_parity']:>10.2f}")
        lines += [""] + [f"note: {note}" for note in self.report.notes] if self.report.notes else []
        return "\n".join(lines)


def score_dataset(directory: Path, clip_model: str | None = None, clip_pretrained: str | None = None,
                  device: str = "cpu", batch_size: int = clip.DEFAULT_BATCH_SIZE, num_workers: int | None = None,
                  progress: bool = True, fast_p=schema.DEFAULT_FAST_P) -> ScoreSummary:
    """Score a dataset folder and rebuild its report.

    ``clip_model`` / ``clip_pretrained``: the open_clip recipe; what is not given comes from the dataset's
    default recipe (:func:`accelbench.scorer.clip.default_recipe`). ``num_workers``: decoding processes for
    CLIP and fidelity (default: CPU count). Raises a :class:`accelbench.errors.UserInputError`, before writing
    anything, for a missing folder, a folder that is not a dataset or has another schema version, a
    generation file that lacks a column, an unknown CLIP model, or a dataset without any ok image.
    ``fast_p``: the leaderboard's thresholds, for a dataset with submissions (:func:`report.build_report`)."""
    start = time.perf_counter()
    directory = Path(directory)

    # 1. A dataset with something to score; every column but the images read once, so a file that lacks one
    #    fails here rather than half-way.
    manifest = dataset.read_manifest(directory)
    dataset.verify_shards(directory)  # rows edited after generate wrote them are refused
    statuses = dataset.read_generations(directory).column("status").to_pylist()
    if schema.STATUS_OK not in statuses:
        raise NoImagesError(f"{directory}: no image to score ({len(statuses)} generation row(s), none with "
                            f"status 'ok')")

    # 2. The CLIP recipe: as asked, the rest from the dataset's default; checked before any work.
    default_model, default_pretrained = clip.default_recipe(manifest)
    clip_model = clip_model or default_model
    clip_pretrained = clip_pretrained or default_pretrained
    clip.check_recipe(clip_model, clip_pretrained)

    # 3. CLIP scores of the images not scored under this recipe yet.
    clip_summary = clip.score_clip(directory, clip_model, clip_pretrained, device=device, batch_size=batch_size,
                                   num_workers=num_workers, progress=progress)

    # 4. PSNR / SSIM against the baseline, the GT (submissions) and the batch-size-1 image, for the pairs not
    #    stored yet.
    fidelity_summary = fidelity.score_fidelity(directory, num_workers=num_workers, progress=progress)

    # 5. The report, from the stored scores of this recipe.
    built = report.build_report(directory, recipe_id=clip_summary.recipe_id, fast_p=fast_p)
    return ScoreSummary(directory, clip_summary, fidelity_summary, built, time.perf_counter() - start)
