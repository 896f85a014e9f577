"""The report folder ``DIR/report/``, rebuilt from the stored scores alone (no model runs):

* ``summary.json``: dataset settings, CLIP recipe, notes and the pooled rows (SUMMARY_COLUMNS, batch_size 'all');
  infinite values (PSNR of identical images) are written as the string ``"inf"``, since JSON has no infinity;
* ``summary.csv``: the pooled rows; ``by_batch_size.csv``: one row per (task, variant, batch size);
* ``report.md``: readable on the Hub: setup (hardware, versions, weights, recipe), honest caveats, flags, one
  table per model and method, baselines, the per-batch-size breakdown and the Pareto plot;
* ``pareto.png``: speedup vs quality loss, one point per accelerated task, coloured by method, 95 % CIs.

Missing CLIP or fidelity scores leave their columns null, and the notes say so.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pyarrow.csv as pacsv

from accelbench import dataset, schema
from accelbench.scorer import aggregate, clip, functional, pairing, store
from accelbench.scorer.errors import ScoreError
from accelbench.scorer.fidelity import KIND_BASELINE, KIND_DRIFT

SUMMARY_JSON, SUMMARY_CSV, BY_BATCH_SIZE_CSV = "summary.json", "summary.csv", "by_batch_size.csv"
REPORT_MD, PARETO_PNG = "report.md", "pareto.png"


@dataclass(frozen=True)
class Report:
    folder: Path
    pooled: list[dict]  # SUMMARY_COLUMNS rows, batch_size 'all'
    by_batch_size: list[dict]
    recipe: dict | None  # recipe.json of the CLIP scores used, None without CLIP scores
    notes: list[str]  # caveats and missing scores, as written into report.md


def choose_recipe(directory: Path, recipe_id: str | None, suite_id: str | None,
                  manifests: Path | None = None) -> str | None:
    """The CLIP recipe to report: the one asked for; else the only one scored; else the suite's own; None when
    nothing is scored."""
    available = store.clip_recipe_ids(directory)
    if recipe_id is not None:
        if recipe_id not in available:
            raise ScoreError(f"{directory}: no CLIP scores for recipe {recipe_id!r} "
                             f"(scored: {', '.join(available) or 'none'})")
        return recipe_id
    if len(available) <= 1:
        return available[0] if available else None
    suite_recipe = clip.recipe_id(*clip.suite_recipe(suite_id, manifests))
    if suite_recipe in available:
        return suite_recipe
    raise ScoreError(f"{directory}: CLIP scores of several recipes ({', '.join(available)}); choose one")


def build_report(directory: Path, recipe_id: str | None = None,
                 n_resamples: int = functional.BOOTSTRAP_RESAMPLES, manifests: Path | None = None) -> Report:
    """Aggregate the stored scores of ``directory`` and (re)write every file of ``DIR/report/``."""
    directory = Path(directory)

    # 1. What the dataset holds, and which CLIP scores to use.
    manifest = dataset.read_manifest(directory)
    rows = aggregate.load_generations(directory)
    recipe_id = choose_recipe(directory, recipe_id, manifest.get("suite"), manifests)
    recipe = store.read_recipe(directory, recipe_id) if recipe_id else None
    clip_scores = aggregate.load_clip_scores(directory, recipe_id) if recipe_id else {}
    fidelity = aggregate.load_fidelity(directory)

    # 2. The numbers.
    pooled, by_batch_size = aggregate.summarize(rows, clip_scores, fidelity, recipe_id, n_resamples)
    notes = _notes(manifest, rows, recipe, clip_scores, fidelity)

    # 3. The files.
    folder = directory / schema.REPORT_DIR
    dataset.write_json_atomic(folder / SUMMARY_JSON, _json_safe({
        "suite": manifest.get("suite"), "weights": manifest.get("weights"), "dtype": manifest.get("dtype"),
        "recipe": recipe, "notes": notes, "bootstrap": _bootstrap_description(n_resamples),
        "columns": {column.name: column.doc for column in schema.SUMMARY_COLUMNS}, "rows": pooled}))
    dataset.write_bytes_atomic(folder / SUMMARY_CSV, _csv(pooled))
    dataset.write_bytes_atomic(folder / BY_BATCH_SIZE_CSV, _csv(by_batch_size))
    dataset.write_bytes_atomic(folder / PARETO_PNG, _pareto_png(pooled, manifest, recipe))
    report = Report(folder, pooled, by_batch_size, recipe, notes)
    dataset.write_bytes_atomic(folder / REPORT_MD, _markdown(report, manifest, rows, n_resamples).encode())
    return report


# ---------------------------------------------------------------------------------------------------------
# Notes: what the numbers can and cannot say
# ---------------------------------------------------------------------------------------------------------


def _notes(manifest: dict, rows: list[dict], recipe: dict | None, clip_scores: dict, fidelity: dict) -> list[str]:
    notes = []
    weights = {row["weights"] for row in rows if row["weights"]} or {manifest.get("weights")}
    if "tiny" in weights:
        notes.append("Weights: tiny synthetic models (random weights, a few layers). Timings measure pipeline "
                     "overhead, not real model compute; images, CLIP scores and fidelity numbers mean nothing.")
    if "random" in weights:
        notes.append("Weights: full-size architectures with random weights. Timings reflect real model compute, "
                     "but the images are noise: CLIP scores, quality loss, PSNR and SSIM say nothing about "
                     "image quality.")
    ok = [row for row in rows if pairing.is_ok(row)]
    if not rows:
        notes.append("The dataset holds no generation rows yet.")
    elif not any(row["variant"] == pairing.BASELINE for row in rows):
        notes.append("No baseline rows: speedup, quality loss and fidelity are empty.")
    if recipe is None:
        notes.append("No CLIP scores: clip_score and quality_loss are empty (run `accelbench score`).")
    else:
        if recipe.get("random_weights"):
            notes.append(f"The CLIP model {recipe.get('clip_model')} has random weights: CLIP scores and quality loss "
                         f"mean nothing.")
        scored = sum(1 for row in ok if row["record_id"] in clip_scores)
        if scored < len(ok):
            notes.append(f"CLIP scores cover {scored} of {len(ok)} ok images.")
    expected = [(row["record_id"], KIND_BASELINE) for row, _ in pairing.baseline_references(rows)]
    expected += [(row["record_id"], KIND_DRIFT) for row, _ in pairing.drift_references(rows)]
    present = sum(1 for key in expected if key in fidelity)
    if expected and not present:
        notes.append("No fidelity scores: psnr, ssim and drift_psnr are empty (run `accelbench score`).")
    elif present < len(expected):
        notes.append(f"Fidelity scores cover {present} of {len(expected)} image pairs.")
    return notes


def _bootstrap_description(n_resamples: int) -> str:
    return (f"{functional.CONFIDENCE_LEVEL:.0%} percentile bootstrap, {n_resamples} resamples, seed "
            f"{functional.BOOTSTRAP_SEED}; paired over batches (speedups) and images (quality loss)")


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


def _number(value, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "–"
    if math.isinf(value):
        return "∞"
    return f"{value:.{digits}f}{suffix}"


def _with_ci(row: dict, column: str, digits: int = 2, suffix: str = "", scale: float = 1.0) -> str:
    def scaled(value):
        return None if value is None else value * scale

    text = _number(scaled(row[column]), digits, suffix)
    low, high = row[f"{column}_ci_low"], row[f"{column}_ci_high"]
    if row[column] is None or low is None or high is None or math.isinf(row[column]):
        return text
    return f"{text} [{_number(scaled(low), digits)}, {_number(scaled(high), digits)}]"


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            + ["| " + " | ".join(cells) + " |" for cells in lines])


def _task_label(row: dict) -> str:
    return f"`{row['task_id']}`" + ("" if row["variant"] == "gt" else f" ({row['variant']})")


def _markdown(report: Report, manifest: dict, rows: list[dict], n_resamples: int) -> str:
    accelerated = [row for row in report.pooled if row["variant"] != pairing.BASELINE]
    failed = sum(1 for row in rows if not pairing.is_ok(row))
    devices = sorted({row["device_name"] for row in rows if row["device_name"]})
    lines = [f"# accelbench report: {manifest.get('suite')}", "",
             f"{len(rows)} images ({failed} failed), {len(accelerated)} accelerated task(s); weights "
             f"**{manifest.get('weights')}**, dtype {manifest.get('dtype')}.", ""]
    if report.notes:
        lines += ["> **Read this first**", ">"] + [f"> - {note}" for note in report.notes] + [""]

    # Setup: hardware, timing, recipe, versions.
    recipe = report.recipe
    recipe_text = ("none" if recipe is None else
                   f"`{recipe.get('recipe_id')}`: open_clip {recipe.get('clip_model')} / "
                   f"{recipe.get('clip_pretrained')}; {recipe.get('score')}; preprocessing "
                   f"`{recipe.get('clip_preprocess')}`")
    lines += ["## Setup", ""] + _table(["", ""], [
        ["Hardware", ", ".join(devices) or "–"],
        ["Device", ", ".join(sorted({row["device"] for row in rows if row["device"]})) or "–"],
        ["Timer", ", ".join(sorted({row["timer"] for row in rows if row["timer"]})) or "–"],
        ["Weights", manifest.get("weights") or "–"],
        ["CLIP recipe", recipe_text],
        ["Confidence intervals", _bootstrap_description(n_resamples)],
    ]) + [""]
    versions: dict[str, set] = {}
    for text in {row["versions"] for row in rows if row["versions"]}:
        for package, version in json.loads(text).items():
            versions.setdefault(package, set()).add(str(version))
    if versions:
        lines += ["### Versions", ""] + _table(["Package", "Version"], [
            [package, ", ".join(sorted(found)) or "–"] for package, found in sorted(versions.items())]) + [""]

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
              "against the matched baseline images. PSNR / SSIM: against the matched baseline image (PSNR "
              "over non-identical images; ∞ when all are identical). Brackets: 95 % confidence intervals.", "",
              f"![speedup vs quality loss]({PARETO_PNG})", ""]
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in accelerated:
        groups.setdefault((row["model"], row["method"]), []).append(row)
    for (model, method), members in groups.items():
        lines += [f"### {model} · {method}", ""] + _table(
            ["Task", "Steps", "Scheduler", "Speedup [95 % CI]", "Denoise speedup", "CLIP", "Quality loss [95 % CI]",
             "PSNR (dB)", "SSIM", "Identical", "Flags"],
            [[_task_label(row), str(row["steps"]), row["scheduler"], _with_ci(row, "speedup", suffix="×"),
              _with_ci(row, "denoise_speedup", suffix="×"), _number(row["clip_score"]),
              _with_ci(row, "quality_loss", suffix=" %", scale=100.0), _number(row["psnr"], 1),
              _number(row["ssim"], 3), f"{row['identical_to_baseline']}/{row['images'] - row['failed']}",
              row["flags"].replace(";", ", ")] for row in members]) + [""]

    # Baselines, one row per setting.
    settings = {(row["model"], row["scheduler"], row["steps"]): row
                for row in report.pooled if row["variant"] == pairing.BASELINE}
    lines += ["### Baselines", ""] + _table(
        ["Model", "Scheduler", "Steps", "Images", "Failed", "Median s/image", "CLIP [95 % CI]", "Drift PSNR (dB)"],
        [[model, scheduler, str(steps), str(row["images"]), str(row["failed"]),
          _number(row["median_image_latency_s"], 3), _with_ci(row, "clip_score"), _number(row["drift_psnr"], 1)]
         for (model, scheduler, steps), row in settings.items()]) + [""]

    lines += ["### By batch size", ""] + _table(
        ["Task", "Batch size", "Images", "Median s/image", "Speedup [95 % CI]", "Quality loss [95 % CI]",
         "Drift PSNR (dB)"],
        [[_task_label(row), row["batch_size"], str(row["images"]), _number(row["median_image_latency_s"], 3),
          _with_ci(row, "speedup", suffix="×"), _with_ci(row, "quality_loss", suffix=" %", scale=100.0),
          _number(row["drift_psnr"], 1)]
         for row in report.by_batch_size if row["variant"] != pairing.BASELINE]) + [""]
    lines += ["Files: `summary.csv` (pooled), `by_batch_size.csv`, `summary.json`; column meanings in "
              "`summary.json`."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Pareto plot
# ---------------------------------------------------------------------------------------------------------


def _pareto_png(pooled: list[dict], manifest: dict, recipe: dict | None) -> bytes:
    """Speedup (x) vs quality loss (y, %) per accelerated task, coloured by method, with 95 % CI error bars."""
    # Figure + Agg canvas directly, not pyplot: no global backend switch in the caller's process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    figure = Figure(figsize=(7, 5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    points = [row for row in pooled if row["variant"] != pairing.BASELINE
              and row["speedup"] is not None and row["quality_loss"] is not None]
    methods = sorted({row["method"] for row in points})
    colours = {method: f"C{index % 10}" for index, method in enumerate(methods)}

    def error(row, column, scale=1.0):
        low, high, value = row[f"{column}_ci_low"], row[f"{column}_ci_high"], row[column]
        if low is None or high is None:
            return [0.0], [0.0]
        return [max(value - low, 0.0) * scale], [max(high - value, 0.0) * scale]

    for method in methods:
        for index, row in enumerate(row for row in points if row["method"] == method):
            low_x, high_x = error(row, "speedup")
            low_y, high_y = error(row, "quality_loss", 100.0)
            axes.errorbar(row["speedup"], row["quality_loss"] * 100.0, xerr=[low_x, high_x], yerr=[low_y, high_y],
                          fmt="o", color=colours[method], capsize=3, label=method if index == 0 else None)
            axes.annotate(row["model"], (row["speedup"], row["quality_loss"] * 100.0), textcoords="offset points",
                          xytext=(4, 4), fontsize=7, color=colours[method])
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
    axes.set_title(f"{manifest.get('suite')}: speedup vs quality loss ({recipe_text})", fontsize=10)
    if not points:
        axes.text(0.5, 0.5, "no task with both a speedup and a quality loss", transform=axes.transAxes,
                  ha="center", va="center", color="grey")
    axes.legend(loc="best", fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
