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

import io
import math
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from accelbench import dataset, schema
from accelbench.schema import KIND_BASELINE, KIND_DRIFT, KIND_GT
from accelbench.scorer import aggregate, clip, functional, leaderboard, markdown, pairing, store
from accelbench.scorer.errors import ScoreError

SUMMARY_JSON, SUMMARY_CSV, BY_BATCH_SIZE_CSV = "summary.json", "summary.csv", "by_batch_size.csv"
REPORT_MD, PARETO_PNG = "report.md", "pareto.png"
LEADERBOARD_FILES = (leaderboard.LEADERBOARD_CSV, leaderboard.LEADERBOARD_JSON, leaderboard.TASKS_CSV,
                     leaderboard.FAST_P_PNG, leaderboard.HEATMAP_PNG)
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
                 n_resamples: int = functional.BOOTSTRAP_RESAMPLES, catalog=None,
                 fast_p=schema.DEFAULT_FAST_P) -> Report:
    """Aggregate the stored scores of ``directory`` and (re)write every file of ``DIR/report/``.

    ``catalog``: the manifests the dataset was generated with (task levels and the methods'
    ``deviation_psnr_db``; default: the packaged ones); ``fast_p``: the leaderboard's speedup thresholds."""
    from accelbench.manifest import load_catalog

    directory = Path(directory)

    # 1. What the dataset holds, and which CLIP scores to use.
    manifest = dataset.read_manifest(directory)
    rows = aggregate.load_generations(directory)
    unreadable = store.unreadable_generation_files(directory)
    recipe_id = choose_recipe(directory, recipe_id, manifest)
    recipe = store.read_recipe(directory, recipe_id) if recipe_id else None
    clip_scores = aggregate.load_clip_scores(directory, recipe_id) if recipe_id else {}
    fidelity = aggregate.load_fidelity(directory)

    # 2. The numbers.
    pooled, by_batch_size = aggregate.summarize(rows, clip_scores, fidelity, recipe_id, n_resamples)
    notes = _notes(manifest, rows, recipe, clip_scores, fidelity, unreadable)
    notes += _undefined_notes(pooled)
    board = leaderboard.from_report(directory, rows, pooled, catalog or load_catalog(),
                                    store.read_gate_verdicts(directory), manifest, fast_p, n_resamples)

    # 3. The files.
    folder = directory / schema.REPORT_DIR
    dataset.write_json_atomic(folder / SUMMARY_JSON, _json_safe({
        "suite": manifest.get("suite"), "weights": manifest.get("weights"),
        "dtype_policy": manifest.get("dtype_policy"),
        "recipe": recipe, "notes": notes, "bootstrap": _bootstrap_description(n_resamples),
        "columns": {column.name: column.doc for column in schema.SUMMARY_COLUMNS}, "rows": pooled}))
    dataset.write_bytes_atomic(folder / SUMMARY_CSV, _csv(pooled))
    dataset.write_bytes_atomic(folder / BY_BATCH_SIZE_CSV, _csv(by_batch_size))
    dataset.write_bytes_atomic(folder / PARETO_PNG, _pareto_png(pooled, manifest, recipe))
    if board is not None:
        leaderboard.write(folder, board, title=str(manifest.get("suite")))
    else:  # no submission (any more): no stale leaderboard files
        for name in LEADERBOARD_FILES:
            (folder / name).unlink(missing_ok=True)
    report = Report(folder, pooled, by_batch_size, recipe, notes, unreadable, board)
    dataset.write_bytes_atomic(folder / REPORT_MD, _markdown(report, manifest, rows, n_resamples).encode())
    return report


def read_summary(directory: Path) -> pa.Table:
    """``report/summary.csv`` of ``directory``, typed as SUMMARY_COLUMNS (what :func:`build_report` wrote).

    Raises :class:`accelbench.dataset.DatasetError` when the file is missing or lacks a column."""
    path = Path(directory) / schema.REPORT_DIR / SUMMARY_CSV
    target = schema.arrow_schema(schema.SUMMARY_COLUMNS)
    if not path.is_file():
        raise dataset.DatasetError(f"{path}: no report summary: run `accelbench report` on {directory}")
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types=target, strings_can_be_null=True, quoted_strings_can_be_null=False))
    missing = [name for name in target.names if name not in table.column_names]
    if missing:
        raise dataset.DatasetError(f"{path}: missing column {missing[0]}: rebuild it with `accelbench report`")
    return table.select(target.names).cast(target)


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
    elif not any(row["variant"] == pairing.BASELINE for row in rows):
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
            f"{_named([task + ('' if variant == 'gt' else f' ({variant})') for task, variant in undefined])}."]


def _bootstrap_description(n_resamples: int) -> str:
    return (f"{functional.CONFIDENCE_LEVEL:.0%} percentile bootstrap, {n_resamples} resamples, seed "
            f"{functional.BOOTSTRAP_SEED}; resampling units: batches, i.e. interleaving rounds (speedups, each batch "
            f"paired with its baseline latency of the same round), (prompt, seed) clusters (CLIP score, quality "
            f"loss, PSNR, SSIM: one prompt and seed at several batch sizes is one unit), tasks (leaderboard); no CI "
            f"from fewer than {functional.MIN_CI_UNITS} units (n/a), n beside every CI")


# ---------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------


def _json_safe(value):
    """Infinity as the string "inf" (JSON has none), NaN as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def _csv(summaries: list[dict]) -> bytes:
    buffer = io.BytesIO()
    pacsv.write_csv(aggregate.to_table(summaries), buffer)
    return buffer.getvalue()


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
    return f"`{row['task_id']}`" + ("" if row["variant"] == "gt" else f" ({row['variant']})")


def _markdown(report: Report, manifest: dict, rows: list[dict], n_resamples: int) -> str:
    number, with_ci, table = markdown.number, markdown.with_ci, markdown.table
    accelerated = [row for row in report.pooled if row["variant"] != pairing.BASELINE]
    failed = sum(1 for row in rows if not pairing.is_ok(row))
    devices = sorted({row["device_name"] for row in rows if row["device_name"]})
    lines = [f"# accelbench report: {manifest.get('suite')}", "",
             f"{len(rows)} images ({failed} failed), {len(accelerated)} accelerated task(s); weights "
             f"**{manifest.get('weights')}**, dtype {manifest.get('dtype_policy')}.", ""]
    if report.notes:
        lines += ["> **Read this first**", ">"] + [f"> - {note}" for note in report.notes] + [""]
    if report.leaderboard is not None:
        lines += [leaderboard.markdown_section(report.leaderboard)]

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
                     if row["variant"] == pairing.BASELINE else _task_label(row))
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
                for row in report.pooled if row["variant"] == pairing.BASELINE}
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
         for row in report.by_batch_size if row["variant"] != pairing.BASELINE]), ""]
    lines += ["Files: `summary.csv` (pooled), `by_batch_size.csv`, `summary.json`; column meanings in "
              "`summary.json`."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Pareto plot
# ---------------------------------------------------------------------------------------------------------


def _pareto_png(pooled: list[dict], manifest: dict, recipe: dict | None) -> bytes:
    """Speedup (x) vs quality loss (y, %) per accelerated task, coloured by method, with 95 % CI error bars.

    Points are labelled with the task's short id (and the submission). Tasks whose quality loss is undefined or
    unscored are drawn on the x axis as hollow markers labelled "n/a", never left out."""
    # Figure + Agg canvas directly, not pyplot: no global backend switch in the caller's process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    figure = Figure(figsize=(7, 5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    timed = [row for row in pooled if row["variant"] != pairing.BASELINE and row["speedup"] is not None]
    points = [row for row in timed if row["quality_loss"] is not None]
    undefined = [row for row in timed if row["quality_loss"] is None]
    methods = sorted({row["method"] for row in timed})
    colours = {method: f"C{index % 10}" for index, method in enumerate(methods)}
    short = markdown.short_ids([row["task_id"] for row in timed])

    def label(row):
        return short[row["task_id"]] + ("" if row["variant"] == "gt" else f" ({row['variant'].removeprefix('sub:')})")

    def error(row, column, scale=1.0):
        low, high, value = row[f"{column}_ci_low"], row[f"{column}_ci_high"], row[column]
        if low is None or high is None:
            return [0.0], [0.0]
        return [max(value - low, 0.0) * scale], [max(high - value, 0.0) * scale]

    labelled = set()
    for row in points:
        low_x, high_x = error(row, "speedup")
        low_y, high_y = error(row, "quality_loss", 100.0)
        method = row["method"]
        axes.errorbar(row["speedup"], row["quality_loss"] * 100.0, xerr=[low_x, high_x], yerr=[low_y, high_y],
                      fmt="o", color=colours[method], capsize=3, label=None if method in labelled else method)
        labelled.add(method)
        axes.annotate(label(row), (row["speedup"], row["quality_loss"] * 100.0), textcoords="offset points",
                      xytext=(4, 4), fontsize=6, color=colours[method])
    for row in undefined:
        low_x, high_x = error(row, "speedup")
        method = row["method"]
        axes.errorbar(row["speedup"], 0.0, xerr=[low_x, high_x], fmt="o", mfc="none", color=colours[method],
                      capsize=3, label=None if method in labelled else method)
        labelled.add(method)
        axes.annotate(f"{label(row)}: quality loss n/a", (row["speedup"], 0.0), textcoords="offset points",
                      xytext=(4, -10), fontsize=6, color=colours[method])
    # Speedups are ratios: on a log axis 0.5x and 2x sit at the same distance from 1x.
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.axvline(1.0, color="grey", linestyle="--", linewidth=1, label="no speedup")
    axes.axhline(0.0, color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("speedup (baseline latency / accelerated latency, ×, log scale)")
    axes.set_ylabel("quality loss (% of baseline CLIP score)")
    recipe_text = recipe.get("recipe_id") if recipe else "no CLIP scores"
    weights = markdown.WEIGHTS_TITLES.get(manifest.get("weights"))
    axes.set_title(f"{manifest.get('suite')}: speedup vs quality loss ({recipe_text})"
                   + (f"\n{weights}" if weights else ""), fontsize=10)
    if undefined:
        axes.text(0.01, 0.01, f"hollow: quality loss n/a (undefined or unscored) for {len(undefined)} task(s)",
                  transform=axes.transAxes, fontsize=7, color="grey")
    if not timed:
        axes.text(0.5, 0.5, "no task with a speedup", transform=axes.transAxes, ha="center", va="center",
                  color="grey")
    axes.legend(loc="best", fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
