"""Markdown shared by the report (``report.md``) and the dataset card: tables, numbers with their confidence
intervals, and the texts both print (library versions, what random weights mean for the numbers).

Pure Python: numbers are the typed values of SUMMARY_COLUMNS rows (None for null).
"""

from __future__ import annotations

import json
import math

from accelbench import schema
from accelbench.scorer.functional import MIN_CI_REPEATS

WEIGHTS_TITLES = {"tiny": "tiny random-weight models", "random": "random weights: images meaningless"}
WEIGHTS_CAVEATS = {  # weights mode (manifest.WEIGHTS_MODES) -> what it means for the numbers; pretrained: nothing
    "tiny": "Weights: tiny synthetic models (random weights, a few layers). Timings measure pipeline overhead, not "
            "real model compute; images, CLIP scores and fidelity numbers mean nothing.",
    "random": "Weights: full-size architectures with random weights. Timings reflect real model compute, but the "
              "images are noise: CLIP scores, quality loss, PSNR and SSIM say nothing about image quality.",
}


def cell(value) -> str:
    """A table cell: None is empty; pipes and newlines cannot break the row."""
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table.

    Example:
        >>> print(table(["a", "b"], [[1, "x|y"]]))
        | a | b |
        |---|---|
        | 1 | x\\|y |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def number(value: float | None, digits: int = 2, suffix: str = "", scale: float = 1.0) -> str:
    """``value * scale`` with ``digits`` decimals and ``suffix``; '–' for null, '∞' for infinity.

    Example:
        >>> number(2.3333, suffix="×"), number(0.0123, suffix=" %", scale=100.0), number(None), number(math.inf)
        ('2.33×', '1.23 %', '–', '∞')
    """
    if value is None:
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value * scale:.{digits}f}{suffix}"


def with_ci(row: dict, column: str, digits: int = 2, suffix: str = "", scale: float = 1.0, n: int | None = None,
            undefined: str = "–") -> str:
    """A value with its 95 % CI (``column_ci_low`` / ``_ci_high``) and the number of resampling units it comes
    from (``n``, else the row's ``column_n`` when it has one, with the repeats they come from where the row's
    ``column_repeats`` says more than one). A value without a CI (fewer than 5 units) shows ``n/a (n=...)`` in
    its place; ``undefined`` is what a null value shows.

    Example:
        >>> row = {"speedup": 2.5, "speedup_ci_low": 2.1, "speedup_ci_high": 2.9, "speedup_n": 8}
        >>> with_ci(row, "speedup", suffix="×"), with_ci({**row, "speedup_ci_low": None, "speedup_n": 2}, "speedup")
        ('2.50× [2.10, 2.90] (n=8)', '2.50 n/a (n=2)')
        >>> with_ci({**row, "speedup_n": 40, "speedup_repeats": 5}, "speedup")
        '2.50 [2.10, 2.90] (n=40 in 5 repeats)'
        >>> with_ci({"psnr": 31.0, "psnr_ci_low": 30.0, "psnr_ci_high": 32.0}, "psnr", 1)
        '31.0 [30.0, 32.0]'
    """
    value, low, high = row[column], row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
    n = row.get(f"{column}_n") if n is None else n
    repeats = row.get(f"{column}_repeats") or 0
    units = None if n is None else f"n={n}" + (f" in {repeats} repeats" if repeats > 1 else "")
    if value is None:
        return undefined
    text = number(value, digits, suffix, scale)
    if math.isinf(value):
        return text
    if low is None or high is None:
        return text if units is None else f"{text} n/a ({units})"
    return (f"{text} [{number(low, digits, scale=scale)}, {number(high, digits, scale=scale)}]"
            + ("" if units is None else f" ({units})"))


def variant_label(task: str, variant: str, short: bool = False) -> str:
    """A task's label for one variant: the task alone for the GT, else with the variant (``short``: the
    submission's name) beside it.

    Example:
        >>> variant_label("tome", "gt"), variant_label("tome", "sub:alpha"), variant_label("tome", "sub:a", True)
        ('tome', 'tome (sub:alpha)', 'tome (a)')
    """
    if variant == schema.GT:
        return task
    return f"{task} ({schema.submission_name(variant) if short else variant})"


def short_ids(ids) -> dict[str, str]:
    """Task id -> a short label for plots: the ids without the dash-separated prefix they all share.

    Example:
        >>> short_ids(["smoke-sd15-ddim-8-tome", "smoke-sd15-ddim-8-tgate"])
        {'smoke-sd15-ddim-8-tome': 'tome', 'smoke-sd15-ddim-8-tgate': 'tgate'}
        >>> short_ids(["sd15-ddim-25-tome"])
        {'sd15-ddim-25-tome': 'sd15-ddim-25-tome'}
    """
    ids = list(dict.fromkeys(ids))
    if len(ids) < 2:
        return {task: task for task in ids}
    parts = [task.split("-") for task in ids]
    common = 0
    while all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    return {task: "-".join(p[common:]) for task, p in zip(ids, parts)}


def counts(text: str | None) -> dict[str, int]:
    """``'a: 2;b: 1'`` (the leaderboard's reasons and flags) -> ``{'a': 2, 'b': 1}``."""
    found = {}
    for item in filter(None, (text or "").split(";")):
        name, _, count = item.rpartition(":")
        found[name.strip()] = int(count)
    return found


def versions(rows: list[dict]) -> dict[str, list[str]]:
    """package -> the distinct versions in the generation rows' ``versions`` JSON, sorted by package."""
    found: dict[str, set[str]] = {}
    for text in {row["versions"] for row in rows if row["versions"]}:
        for package, version in json.loads(text).items():
            found.setdefault(package, set()).add(str(version))
    return {package: sorted(found[package]) for package in sorted(found)}


def versions_table(rows: list[dict]) -> str:
    return table(["Package", "Version"], [[package, ", ".join(found)] for package, found in versions(rows).items()])


def weights_caveats(modes) -> list[str]:
    """What the weights modes of a dataset mean for its numbers (nothing for pretrained weights)."""
    return [WEIGHTS_CAVEATS[mode] for mode in sorted(set(modes)) if mode in WEIGHTS_CAVEATS]


def clip_caveats(recipes: list[dict]) -> list[str]:
    """What CLIP recipes (``recipe.json``) with random weights mean for their scores."""
    return [f"The CLIP model {recipe.get('clip_model')} of recipe `{recipe.get('recipe_id')}` has random weights: "
            f"its CLIP scores and quality losses mean nothing." for recipe in recipes if recipe.get("random_weights")]


def interval_caveats(pooled: list[dict]) -> list[str]:
    """What the speedup CIs of summary rows cover: a two-level one (from ``MIN_CI_REPEATS`` repeats) how a
    speedup moves between runs with fresh worker processes; any other only the rounds of its run(s)."""
    timed = [row for row in pooled if row["variant"] != schema.BASELINE and row["speedup"] is not None]
    if not timed:
        return []
    one_level = [row for row in timed if (row["speedup_repeats"] or 0) < MIN_CI_REPEATS]
    if not one_level:
        repeats = sorted({row["speedup_repeats"] for row in timed})
        span = f"{repeats[0]}" if len(repeats) == 1 else f"{repeats[0]}–{repeats[-1]}"
        return [f"Speedup CIs are two-level ({span} repeats, each a fresh set of worker processes, then the batches "
                f"within each): they cover how a speedup moves between runs as well as between rounds."]
    most = max(row["speedup_repeats"] or 0 for row in one_level)
    scope = ("the rounds of one run only" if most <= 1 else
             f"the rounds of their runs only ({most} repeats or fewer: {MIN_CI_REPEATS} are needed for a two-level CI)")
    which = "Speedup CIs cover" if len(one_level) == len(timed) else (
        f"{len(one_level)} of {len(timed)} task × variant rows have speedup CIs that cover")
    return [f"{which} {scope}: not how a speedup moves between runs with fresh worker processes, which on an "
            f"H200 was as large as the rounds' noise (SD1.5: per-run speedup differences scattered by an SD of "
            f"7.6 % against CIs of ±6–9 % each). Speedups closer than that are not told apart by one run: "
            f"`generate --repeats K` with K ≥ {MIN_CI_REPEATS} gives two-level CIs (README, Score)."]
