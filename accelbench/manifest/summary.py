"""The catalogue at a glance: task counts per (family, pipeline, method) and level, and which methods do not apply
to which family, with the reason. The same table describes the packaged catalogue (``accelbench tasks
--summary``, the README) and a dataset's own tasks (the dataset card, from its recorded task facts), so both
are made from plain task facts. No torch here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from accelbench.manifest.model import LEVELS, Catalog

TARGET_LABEL = "any (a target)"  # what a target task asks for: its reference's method is not the task


def task_row(facts: dict) -> tuple[str, str, str, int]:
    """(family, pipeline, method, level) of one task's facts (:func:`accelbench.task_facts.facts`, or a
    catalogue task's equivalent from :func:`catalogue_facts`)."""
    method = TARGET_LABEL if facts.get("target") else facts["method"]["name"]
    # Facts read back from a dataset made before they were recorded name no pipeline.
    return facts["model"]["name"], facts["model"].get("pipeline") or "", method, int(facts["level"])


def catalogue_facts(catalog: Catalog, task_ids: Iterable[str]) -> list[dict]:
    """The facts :func:`task_row` reads, for catalogue tasks."""
    rows = []
    for task_id in task_ids:
        task = catalog.tasks[task_id]
        model = catalog.models[task.model]
        rows.append({"model": {"name": model.name, "pipeline": model.pipeline},
                     "method": {"name": catalog.methods[task.method].name}, "level": task.level,
                     "target": task.target is not None})
    return rows


def level_table(facts: Iterable[dict]) -> tuple[list[str], list[list]]:
    """Header and rows of the counts table: one row per (family, pipeline, method) — families in first-seen
    order, within one by lowest level, then method name — a column per level and the total, and a last row of
    totals.

    Example:
        >>> facts = [{"model": {"name": "SD1.5", "pipeline": "P"}, "method": {"name": "ToMe"}, "level": 2},
        ...          {"model": {"name": "SD1.5", "pipeline": "P"}, "method": {"name": "x"}, "level": 4,
        ...           "target": {"speedup": 2.0}}]
        >>> header, rows = level_table(facts)
        >>> header[3:], rows[-1]
        (['L1', 'L2', 'L3', 'L4', 'L5', 'tasks'], ['all', '', '', 0, 1, 0, 1, 0, 2])
    """
    counts: dict[tuple[str, str, str], Counter] = {}
    for entry in facts:
        family, pipeline, method, level = task_row(entry)
        counts.setdefault((family, pipeline, method), Counter())[level] += 1
    header = ["family", "pipeline", "method", *(f"L{level}" for level in LEVELS), "tasks"]
    families = list(dict.fromkeys(family for family, _, _ in counts))
    order = sorted(counts, key=lambda key: (families.index(key[0]), min(counts[key]), key[2]))
    rows = [[*key, *(counts[key][level] for level in LEVELS), sum(counts[key].values())] for key in order]
    totals = [sum(by_level[level] for by_level in counts.values()) for level in LEVELS]
    return header, [*rows, ["all", "", "", *totals, sum(totals)]]


def not_applicable(catalog: Catalog) -> list[str]:
    """One line per (family, method) the catalogue leaves out, with the reason: what the method needs that the
    family does not have (a UNet), or that models.yaml binds no loader for it."""
    lines = []
    for model in catalog.models.values():
        for method in catalog.methods.values():
            if method.id in model.methods:
                continue
            if model.denoiser not in method.denoisers:
                reason = f"it needs a {' or '.join(method.denoisers)} denoiser; {model.name}'s is a {model.denoiser}"
            else:
                reason = "not bound in models.yaml (no loader or parameters given for it)"
            lines.append(f"{method.name} on {model.name}: {reason}")
    return lines
