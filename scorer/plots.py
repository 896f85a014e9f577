"""The report's and the leaderboard's plots, as PNG bytes: ``pareto.png`` (speedup vs quality loss per task),
``fast_p.png`` (fast_p over p per submission) and ``speedup_heatmap.png`` (task x submission). matplotlib is
imported inside the functions."""

from __future__ import annotations

import io
import math

import numpy as np

from accelbench import schema
from accelbench.scorer import leaderboard, markdown

CURVE_MAX_P = 4.0
# Heatmap labels of failure reasons: each reason itself, where it is not short enough.
REASON_LABELS = {reason: reason for reason in schema.REASONS} | {
    schema.STATUS_NONFINITE: "NaN", schema.STATUS_OOM: "OOM", schema.REASON_NO_ROWS: "no rows"}


def _figure(width: float, height: float, dpi: int = 110):
    """A matplotlib Figure on an Agg canvas, not pyplot: no global backend switch in the caller's process."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _title(title: str, weights: str | None) -> str:
    notes = [markdown.WEIGHTS_TITLES[mode] for mode in (weights or "").split("; ") if mode in markdown.WEIGHTS_TITLES]
    return title + (f" ({'; '.join(notes)})" if notes else "")


def fast_p_png(board: leaderboard.Leaderboard, title: str, weights: str | None = None) -> bytes:
    """fast_p over p in [0, 4], one step curve per submission, the GT dashed."""
    thresholds = np.linspace(0.0, CURVE_MAX_P, 401)
    curves = leaderboard.fast_p_curve(board.tasks, thresholds)
    figure = _figure(7, 4.5)
    axes = figure.add_subplot()
    for index, row in enumerate(board.rows):
        curve = curves.get(row["variant"])
        if curve is None:
            continue
        style = dict(color="black", linestyle="--", linewidth=1.6) if row["reference"] else dict(color=f"C{index % 10}")
        axes.step(thresholds, curve, where="post", label=f"{row['submission']} ({row['correct']}/{row['tasks']} "
                  f"correct)", **style)
    for p in board.fast_p:
        axes.axvline(p, color="grey", linewidth=0.6, alpha=0.5)
    axes.set_xlim(0, CURVE_MAX_P)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("speedup threshold p (×)")
    axes.set_ylabel("fast_p: fraction of all tasks correct and faster than p")
    axes.set_title(_title(f"{title}: fast_p", weights), fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    return _png(figure)


def heatmap_png(board: leaderboard.Leaderboard, title: str, weights: str | None = None) -> bytes:
    """Task (short id) x submission: speedup colour (log scale, 1x white); failed cells grey with the reason."""
    from matplotlib.colors import TwoSlopeNorm

    variants = [row["variant"] for row in board.rows]
    labels = ["GT (reference)" if row["reference"] else row["submission"] for row in board.rows]
    task_ids = list(dict.fromkeys(result["task_id"] for result in board.tasks))
    short = markdown.short_ids(task_ids)
    cell = {(result["task_id"], result["variant"]): result for result in board.tasks}
    values = np.full((len(task_ids), len(variants)), np.nan)
    for i, task_id in enumerate(task_ids):
        for j, variant in enumerate(variants):
            result = cell.get((task_id, variant))
            if result and result["correct"] and result["speedup"]:
                values[i, j] = math.log2(result["speedup"])
    figure = _figure(max(5.0, 1.3 * len(variants) + 3.0), max(3.0, 0.32 * len(task_ids) + 1.6))
    axes = figure.add_subplot()
    limit = max(1.0, float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0)
    axes.imshow(np.ones_like(values), cmap="Greys", vmin=0, vmax=5, aspect="auto")  # light grey under failures
    image = axes.imshow(np.ma.masked_invalid(values), cmap="RdYlGn", norm=TwoSlopeNorm(0.0, -limit, limit),
                        aspect="auto")
    for i, task_id in enumerate(task_ids):
        for j, variant in enumerate(variants):
            result = cell.get((task_id, variant))
            if result is None:
                continue
            if result["correct"]:
                text = markdown.number(result["speedup"], suffix="×") if result["speedup"] else "untimed"
                if "suspicious-speedup" in (result["flags"] or ""):
                    text += " !"
            else:
                text = REASON_LABELS.get(result["reason_kind"], result["reason_kind"] or "failed")
            axes.text(j, i, text, ha="center", va="center", fontsize=7,
                      color="black" if result["correct"] else "dimgrey",
                      fontstyle="normal" if result["correct"] else "italic")
    axes.set_xticks(range(len(variants)), labels, rotation=30, ha="right", fontsize=8)
    axes.set_yticks(range(len(task_ids)), [short[task_id] for task_id in task_ids], fontsize=7)
    colorbar = figure.colorbar(image, ax=axes, fraction=0.04)
    colorbar.set_label("speedup (log2; 0 = 1×)", fontsize=8)
    axes.set_title(_title(f"{title}: speedup per task (grey: not correct, with the reason)", weights), fontsize=9)
    figure.tight_layout()
    return _png(figure)


def pareto_png(pooled: list[dict], manifest: dict, recipe: dict | None) -> bytes:
    """Speedup (x) vs quality loss (y, %) per accelerated task, coloured by method, with 95 % CI error bars.

    Points are labelled with the task's short id (and the submission). Tasks whose quality loss is undefined or
    unscored are drawn on the x axis as hollow markers labelled "n/a", never left out."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    figure = _figure(7, 5, dpi=120)
    axes = figure.add_subplot()
    timed = [row for row in pooled if row["variant"] != schema.BASELINE and row["speedup"] is not None]
    points = [row for row in timed if row["quality_loss"] is not None]
    undefined = [row for row in timed if row["quality_loss"] is None]
    methods = sorted({row["method"] for row in timed})
    colours = {method: f"C{index % 10}" for index, method in enumerate(methods)}
    short = markdown.short_ids([row["task_id"] for row in timed])

    def label(row):
        return markdown.variant_label(short[row["task_id"]], row["variant"], short=True)

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
    return _png(figure)
