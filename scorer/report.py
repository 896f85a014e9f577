"""The report folder ``DIR/report/``, rebuilt from the stored scores alone (no model runs):

* ``summary.json``: dataset settings, CLIP recipe, notes and the pooled rows (SUMMARY_COLUMNS, batch_size 'all');
  infinite values (PSNR of identical images) are written as the string ``"inf"``, since JSON has no infinity;
* ``summary.csv``: the pooled rows; ``by_batch_size.csv``: one row per (task, variant, batch size);
* ``report.md``: readable on the Hub: setup (hardware, versions, weights, recipe), honest caveats, flags, one
  table per model and method, baselines, the per-batch-size breakdown and the Pareto plot;
* ``pareto.png``: speedup vs quality loss, one point per accelerated task, coloured by method, 95 % CIs;
* with submissions (variants ``sub:<name>``), the leaderboard (:mod:`accelbench.scorer.leaderboard`):
  ``leaderboard.csv`` / ``.json``, ``leaderboard_tasks.csv``, ``fast_p.png``, ``speedup_heatmap.png`` and a
  leaderboard section at the top of ``report.md``.

Missing CLIP or fidelity scores leave their columns null, and the notes say so; so do generation files that
cannot be read (their rows are in no number). :func:`read_summary` reads ``summary.csv`` back, typed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from accelbench import dataset, schema, task_facts
from accelbench.schema import KIND_BASELINE, KIND_DRIFT, KIND_GT
from accelbench.scorer import (
    aggregate,
    clip,
    functional,
    leaderboard,
    leaderboard_files,
    leaderboard_markdown,
    markdown,
    pairing,
    plots,
    store,
)
from accelbench.scorer.errors import ScoreError

SUMMARY_JSON, SUMMARY_CSV, BY_BATCH_SIZE_CSV = "summary.json", "summary.csv", "by_batch_size.csv"
REPORT_MD, PARETO_PNG = "report.md", "pareto.png"
MAX_NAMED = 3  # records and files a note names before "and N more"


@dataclass(frozen=True)
class Report:
    folder: Path
    pooled: list[dict]  # SUMMARY_COLUMNS rows, batch_size 'all'
    by_batch_size: list[dict]
    recipe: dict | None  # recipe.json of the CLIP scores used, None without CLIP scores
    notes: list[str]  # caveats and missing scores, as written into report.md
    unreadable_files: list[Path]  # generation files (relative to the dataset) whose rows are in no number
    leaderboard: leaderboard.Leaderboard | None = None  # None: the dataset holds no submission


def choose_recipe(directory: Path, recipe_id: str | None, manifest: dict) -> str | None:
    """The CLIP recipe to report: the one asked for; else the only one scored; else the dataset's default
    (:func:`accelbench.scorer.clip.default_recipe`); None when nothing is scored."""
    available = store.clip_recipe_ids(directory)
    if recipe_id is not None:
        if recipe_id not in available:
            raise ScoreError(f"{directory}: no CLIP scores for recipe {recipe_id!r} "
                             f"(scored: {', '.join(available) or 'none'})")
        return recipe_id
    if len(available) <= 1:
        return available[0] if available else None
    default = clip.recipe_id(*clip.default_recipe(manifest))
    if default in available:
        return default
    raise ScoreError(f"{directory}: CLIP scores of several recipes ({', '.join(available)}); choose one")


def build_report(directory: Path, recipe_id: str | None = None,
                 n_resamples: int = functional.BOOTSTRAP_RESAMPLES, fast_p=schema.DEFAULT_FAST_P) -> Report:
    """Aggregate the stored scores of ``directory`` and (re)write every file of ``DIR/report/``, from the
    dataset alone (its task facts, never today's manifests); ``fast_p``: the leaderboard's speedup thresholds."""
    directory = Path(directory)

    # 1. What the dataset holds, and which CLIP scores to use.
    manifest = dataset.read_manifest(directory)
    rows = aggregate.load_generations(directory)
    unreadable = store.unreadable_generation_files(directory)
    recipe_id = choose_recipe(directory, recipe_id, manifest)
    recipe = store.read_recipe(directory, recipe_id) if recipe_id else None
    clip_scores = aggregate.load_clip_scores(directory, recipe_id) if recipe_id else {}
    fidelity = aggregate.load_fidelity(directory)
    facts, recorded = task_facts.read(directory, rows)

    # 2. The numbers.
    pooled, by_batch_size = aggregate.summarize(rows, clip_scores, fidelity, recipe_id, n_resamples)
    notes = _notes(manifest, rows, recipe, clip_scores, fidelity, unreadable)
    notes += _undefined_notes(pooled)
    notes += markdown.interval_caveats(pooled)
    if not recorded and rows:
        notes.append(task_facts.LEGACY_NOTE)
    board = leaderboard.from_report(directory, rows, pooled, facts, store.read_gate_verdicts(directory), manifest,
                                    fast_p, n_resamples, by_batch_size=by_batch_size,
                                    clip_random=bool(recipe and recipe.get("random_weights")))

    # 3. The files.
    folder = directory / schema.REPORT_DIR
    dataset.write_json_atomic(folder / SUMMARY_JSON, {
        "suite": manifest.get("suite"), "weights": manifest.get("weights"),
        "dtype_policy": manifest.get("dtype_policy"),
        "recipe": recipe, "notes": notes, "bootstrap": _bootstrap_description(n_resamples),
        "columns": {column.name: column.doc for column in schema.SUMMARY_COLUMNS}, "rows": pooled})
    dataset.write_csv_atomic(folder / SUMMARY_CSV, pooled, schema.SUMMARY_COLUMNS)
    dataset.write_csv_atomic(folder / BY_BATCH_SIZE_CSV, by_batch_size, schema.SUMMARY_COLUMNS)
    dataset.write_bytes_atomic(folder / PARETO_PNG, plots.pareto_png(pooled, manifest, recipe))
    if board is not None:
        leaderboard_files.write(folder, board, title=str(manifest.get("suite")))
    else:  # no submission (any more): no stale leaderboard files
        for name in leaderboard_files.FILES:
            (folder / name).unlink(missing_ok=True)
    report = Report(folder, pooled, by_batch_size, recipe, notes, unreadable, board)
    # The image grids and the HTML page are made from the files written above (both modules import this one).
    from accelbench.scorer import grids, html_report

    grids.write_grids(directory, recipe_id=recipe_id)
    links = {task_id: f"{grids.GRIDS_DIR}/{entry['file']}"
             for task_id, entry in grids.read_index(directory)["tasks"].items()}
    dataset.write_bytes_atomic(folder / REPORT_MD, _markdown(report, manifest, rows, n_resamples, links,
                                                             html_report.INDEX_HTML).encode())
    html_report.write_html_report(directory)
    return report


def read_summary(directory: Path) -> pa.Table:
    """``report/summary.csv`` of ``directory``, typed as SUMMARY_COLUMNS (what :func:`build_report` wrote).

    Raises :class:`accelbench.dataset.DatasetError` when the file is missing or lacks a column."""
    return dataset.read_typed_csv(Path(directory) / schema.REPORT_DIR / SUMMARY_CSV, schema.SUMMARY_COLUMNS,
                                  f"rebuild it with `accelbench report {directory}`")


# ---------------------------------------------------------------------------------------------------------
# Notes: what the numbers can and cannot say
# ---------------------------------------------------------------------------------------------------------


def _named(items: list) -> str:
    """The first few items, and how many more there are."""
    more = len(items) - MAX_NAMED
    return ", ".join(map(str, items[:MAX_NAMED])) + (f" and {more} more" if more > 0 else "")


def _notes(manifest: dict, rows: list[dict], recipe: dict | None, clip_scores: dict, fidelity: dict,
           unreadable: list[Path]) -> list[str]:
    notes = []
    if unreadable:
        notes.append(f"{len(unreadable)} generation file(s) cannot be read, so their rows are missing from every "
                     f"number here (tasks may have lost their baseline): {_named(unreadable)}. Restore them, or "
                     f"regenerate their rows.")
    notes += markdown.weights_caveats({row["weights"] for row in rows if row["weights"]} or {manifest.get("weights")})
    ok = [row for row in rows if pairing.is_ok(row)]
    if not rows:
        notes.append("The dataset holds no generation rows yet.")
    elif not any(row["variant"] == schema.BASELINE for row in rows):
        notes.append("No baseline rows: speedup, quality loss and fidelity are empty.")
    if recipe is None:
        notes.append("No CLIP scores: clip_score and quality_loss are empty (run `accelbench score`).")
    else:
        notes += markdown.clip_caveats([recipe])
        unscored = [row["record_id"] for row in ok if row["record_id"] not in clip_scores]
        if unscored:
            notes.append(f"CLIP scores cover {len(ok) - len(unscored)} of {len(ok)} ok images; not scored: "
                         f"{_named(unscored)} (an image that cannot be decoded is never scored).")
    expected = [(row["record_id"], KIND_BASELINE) for row, _ in pairing.baseline_references(rows)]
    expected += [(row["record_id"], KIND_DRIFT) for row, _ in pairing.drift_references(rows)]
    expected += [(row["record_id"], KIND_GT) for row, _ in pairing.gt_references(rows)]
    present = sum(1 for key in expected if key in fidelity)
    if expected and not present:
        notes.append("No fidelity scores: psnr, ssim and drift_psnr are empty (run `accelbench score`).")
    elif present < len(expected):
        notes.append(f"Fidelity scores cover {present} of {len(expected)} image pairs.")
    return notes


def _undefined_notes(pooled: list[dict]) -> list[str]:
    undefined = sorted({(row["task_id"], row["variant"]) for row in pooled
                        if aggregate.UNDEFINED_QUALITY_LOSS in (row["undefined"] or "").split(";")})
    if not undefined:
        return []
    return [f"Quality loss is undefined (n/a) for {len(undefined)} task × variant row(s): the matched baseline "
            f"images' CLIP scores are all 0 (clamped, as a random-weight CLIP does), so the relative loss is 0/0: "
            f"{_named([markdown.variant_label(task, variant) for task, variant in undefined])}."]


def _bootstrap_description(n_resamples: int) -> str:
    return (f"{functional.CONFIDENCE_LEVEL:.0%} percentile bootstrap, {n_resamples} resamples, seed "
            f"{functional.BOOTSTRAP_SEED}; resampling units: for speedups, repeats (fresh sets of worker processes) "
            f"and then batches within each from {functional.MIN_CI_REPEATS} repeats, else batches, i.e. interleaving "
            f"rounds (each batch paired with its baseline latency of the same round); (prompt, seed) clusters (CLIP "
            f"score, quality loss, PSNR, SSIM: one prompt and seed at several batch sizes is one unit); tasks "
            f"(leaderboard); no CI from fewer than {functional.MIN_CI_UNITS} units (n/a), n beside every CI")


# ---------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------


def _quality_loss(row: dict) -> str:
    """Quality loss with its CI; 'n/a' where it is undefined (0/0), '–' where there are no scores."""
    undefined = aggregate.UNDEFINED_QUALITY_LOSS in (row.get("undefined") or "").split(";")
    return markdown.with_ci(row, "quality_loss", suffix=" %", scale=100.0, undefined="n/a" if undefined else "–")


def _drift(row: dict) -> str:
    """Drift PSNR and how many of its pairs were identical."""
    if not row.get("drift_pairs"):
        return markdown.number(row["drift_psnr"], 1)
    return f"{markdown.number(row['drift_psnr'], 1)} ({row['drift_identical']}/{row['drift_pairs']} identical)"


def _task_label(row: dict) -> str:
    return markdown.variant_label(f"`{row['task_id']}`", row["variant"])


def _markdown(report: Report, manifest: dict, rows: list[dict], n_resamples: int, grid_links: dict[str, str],
              html_name: str) -> str:
    number, with_ci, table = markdown.number, markdown.with_ci, markdown.table
    accelerated = [row for row in report.pooled if row["variant"] != schema.BASELINE]
    failed = sum(1 for row in rows if not pairing.is_ok(row))
    devices = sorted({row["device_name"] for row in rows if row["device_name"]})
    lines = [f"# accelbench report: {manifest.get('suite')}", "",
             f"{len(rows)} images ({failed} failed), {len(accelerated)} accelerated task(s); weights "
             f"**{manifest.get('weights')}**, dtype {manifest.get('dtype_policy')}.", ""]
    if report.notes:
        lines += ["> **Read this first**", ">"] + [f"> - {note}" for note in report.notes] + [""]
    if report.leaderboard is not None:
        lines += [leaderboard_markdown.markdown_section(report.leaderboard)]

    # Setup: hardware, timing, recipe, versions.
    recipe = report.recipe
    recipe_text = ("none" if recipe is None else
                   f"`{recipe.get('recipe_id')}`: open_clip {recipe.get('clip_model')} / "
                   f"{recipe.get('clip_pretrained')}; {recipe.get('score')}; preprocessing "
                   f"`{recipe.get('clip_preprocess')}`")
    lines += ["## Setup", "", table(["", ""], [
        ["Hardware", ", ".join(devices) or "–"],
        ["Device", ", ".join(sorted({row["device"] for row in rows if row["device"]})) or "–"],
        ["Timer", ", ".join(sorted({row["timer"] for row in rows if row["timer"]})) or "–"],
        ["Weights", manifest.get("weights") or "–"],
        ["CLIP recipe", recipe_text],
        ["Confidence intervals", _bootstrap_description(n_resamples)],
    ]), ""]
    if any(row["versions"] for row in rows):
        lines += ["### Versions", "", markdown.versions_table(rows), ""]

    # Flags, pooled and per batch size; a setting's baseline once, not once per task.
    flagged = {}
    for row in report.pooled + report.by_batch_size:
        if row["flags"]:
            label = (f"baseline of {row['model']} {row['scheduler']} {row['steps']} steps"
                     if row["variant"] == schema.BASELINE else _task_label(row))
            flagged.setdefault(f"{label}, batch size {row['batch_size']}", row["flags"].replace(";", ", "))
    lines += ["## Flags", ""] + ([f"- {label}: {flags}" for label, flags in flagged.items()] or ["None."]) + [""]

    # Results per model and method.
    lines += ["## Results", "",
              "Speedup: summed baseline batch latency / summed accelerated batch latency over matched batches "
              "(denoise speedup: the denoising loop alone). Quality loss: relative drop of the mean CLIP score "
              "against the matched baseline images (n/a: undefined, see the notes). PSNR / SSIM: against the "
              "matched baseline image (PSNR over non-identical images; ∞ when all are identical). Brackets: 95 % "
              "confidence intervals, n: resampling units (batches for speedups, (prompt, seed) clusters for image "
              "metrics); n/a (n=...): too few units for a CI.", "",
              f"![speedup vs quality loss]({PARETO_PNG})", ""]
    if grid_links:
        lines += ["## Image grids", "",
                  "Per task, a few (prompt, seed) pairs: baseline, GT and every submission side by side, each with its "
                  "CLIP score and PSNR to the baseline, the amplified difference to the baseline below; the HTML "
                  f"report (`{html_name}`) shows them beside every table.", ""]
        lines += [f"- [`{task_id}`]({link})" for task_id, link in sorted(grid_links.items())]
        lines.append("")
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in accelerated:
        groups.setdefault((row["model"], row["method"]), []).append(row)
    for (model, method), members in groups.items():
        lines += [f"### {model} · {method}", "", table(
            ["Task", "Steps", "Scheduler", "Speedup [95 % CI]", "Denoise speedup", "CLIP", "Quality loss [95 % CI]",
             "PSNR (dB)", "SSIM", "Identical", "Flags"],
            [[_task_label(row), row["steps"], row["scheduler"], with_ci(row, "speedup", suffix="×"),
              with_ci(row, "denoise_speedup", suffix="×"), number(row["clip_score"]),
              _quality_loss(row), number(row["psnr"], 1),
              number(row["ssim"], 3), f"{row['identical_to_baseline']}/{row['images'] - row['failed']}",
              row["flags"].replace(";", ", ")] for row in members]), ""]

    # Baselines, one row per setting.
    settings = {(row["model"], row["scheduler"], row["steps"]): row
                for row in report.pooled if row["variant"] == schema.BASELINE}
    lines += ["### Baselines", "", table(
        ["Model", "Scheduler", "Steps", "Images", "Failed", "Median s/image", "CLIP [95 % CI]", "Drift PSNR (dB)"],
        [[model, scheduler, steps, row["images"], row["failed"], number(row["median_image_latency_s"], 3),
          with_ci(row, "clip_score"), _drift(row)]
         for (model, scheduler, steps), row in settings.items()]), ""]

    lines += ["### By batch size", "", table(
        ["Task", "Batch size", "Images", "Median s/image", "Speedup [95 % CI]", "Quality loss [95 % CI]",
         "Drift PSNR (dB)"],
        [[_task_label(row), row["batch_size"], row["images"], number(row["median_image_latency_s"], 3),
          with_ci(row, "speedup", suffix="×"), _quality_loss(row), _drift(row)]
         for row in report.by_batch_size if row["variant"] != schema.BASELINE]), ""]
    lines += ["Files: `summary.csv` (pooled), `by_batch_size.csv`, `summary.json`; column meanings in "
              "`summary.json`."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Pareto plot
# ---------------------------------------------------------------------------------------------------------
