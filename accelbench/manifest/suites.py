"""Parsing ``suites/*.yaml``: the tasks (ids or glob patterns), prompts, seeds, batch sizes and defaults of a
suite."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import replace
from pathlib import Path

from accelbench.manifest.checks import Checker
from accelbench.manifest.model import (
    DEFAULT_CLIP_MODEL,
    DEFAULT_CLIP_PRETRAINED,
    DTYPES,
    WEIGHTS_MODES,
    PromptSource,
    Suite,
    Task,
    did_you_mean,
    unknown_name,
)


def expand_task_patterns(patterns, task_ids, unmatched) -> list[str]:
    """The ids among ``task_ids`` that task ids or glob patterns (case-sensitive) select, each once, in the
    order first selected; a pattern starting with ``!`` drops what it matches from the ids selected before it.
    ``unmatched(index, pattern)`` is called for a pattern that selects (or drops) nothing.

    Example:
        >>> expand_task_patterns(["a-*", "!*-2", "b-1"], ["a-1", "a-2", "b-1"], print)
        ['a-1', 'b-1']
    """
    selected: list[str] = []
    for index, pattern in enumerate(patterns):
        excluding = pattern.startswith("!")
        if excluding:
            matches = [task_id for task_id in selected if fnmatch.fnmatchcase(task_id, pattern[1:])]
        else:
            matches = [task_id for task_id in task_ids if fnmatch.fnmatchcase(task_id, pattern)]
        if not matches:
            unmatched(index, pattern)
        if excluding:
            selected = [task_id for task_id in selected if task_id not in matches]
        else:
            selected.extend(task_id for task_id in matches if task_id not in selected)
    return selected


def resolve_extends(raw: dict[str, tuple[Path, object]]) -> dict[str, object]:
    """Suite id -> its data with ``extends: OTHER`` resolved: every field of suite OTHER (itself resolved) that it
    does not give. A relative prompts ``file`` stays relative to the suite file that names it."""
    resolved: dict[str, object] = {}

    def resolve(suite_id: str, chain: tuple[str, ...]) -> object:
        if suite_id in resolved:
            return resolved[suite_id]
        source, data = raw[suite_id]
        check = Checker(source)
        check.mapping(data, "", required=("suite",))
        entry = check.mapping(data["suite"], "suite", any_keys=True)
        if "extends" not in entry:
            resolved[suite_id] = data
            return data
        parent = check.string(entry["extends"], "suite.extends")
        if parent not in raw:
            check.fail("suite.extends", unknown_name("suite", parent, raw))
        if parent in chain:  # named at the suite the cycle comes back to
            cycle = (*chain[chain.index(parent):], parent)
            Checker(raw[parent][0]).fail("suite.extends", f"suites extend each other in a cycle: {' -> '.join(cycle)}")
        inherited = dict(resolve(parent, (*chain, parent))["suite"])
        prompts = inherited.get("prompts")
        if isinstance(prompts, dict) and isinstance(prompts.get("file"), str):
            inherited["prompts"] = {**prompts, "file": str(Path(raw[parent][0]).parent / prompts["file"])}
        own = {key: value for key, value in entry.items() if key != "extends"}
        resolved[suite_id] = {**data, "suite": {**inherited, **own}}
        return resolved[suite_id]

    return {suite_id: resolve(suite_id, (suite_id,)) for suite_id in raw}


def parse_suite(data, source, tasks: dict[str, Task]) -> Suite:
    check = Checker(source)
    check.mapping(data, "", required=("suite",))
    entry = check.mapping(data["suite"], "suite",
                          required=("description", "tasks", "prompts", "seeds", "batch_sizes"),
                          optional=("warmup_batches", "repeats", "weights", "dtype", "clip"))
    patterns = [check.string(pattern, f"suite.tasks[{index}]")
                for index, pattern in enumerate(check.sequence(entry["tasks"], "suite.tasks"))]
    selected = expand_task_patterns(patterns, tasks, lambda index, pattern: check.fail(
        f"suite.tasks[{index}]", f"no task matches {pattern!r}{did_you_mean(pattern, tasks)}"))
    seeds = check.sequence(entry["seeds"], "suite.seeds")
    for index, seed in enumerate(seeds):
        check.integer(seed, f"suite.seeds[{index}]", minimum=0)
    if len(set(seeds)) != len(seeds):
        check.fail("suite.seeds", f"seeds must be distinct, got {seeds}")
    batch_sizes = check.sequence(entry["batch_sizes"], "suite.batch_sizes")
    for index, size in enumerate(batch_sizes):
        check.integer(size, f"suite.batch_sizes[{index}]", minimum=1)
    if len(set(batch_sizes)) != len(batch_sizes):
        check.fail("suite.batch_sizes", f"batch sizes must be distinct, got {batch_sizes}")
    clip = check.mapping(entry.get("clip") or {}, "suite.clip", optional=("model", "pretrained"))
    return Suite(
        id=Path(source).stem, description=check.string(entry["description"], "suite.description"),
        tasks=tuple(selected), prompts=_parse_prompt_source(check, entry["prompts"], Path(source).parent),
        seeds=tuple(seeds), batch_sizes=tuple(batch_sizes),
        warmup_batches=check.integer(entry.get("warmup_batches", 2), "suite.warmup_batches", minimum=0),
        weights=check.choice(entry.get("weights", "pretrained"), "suite.weights", WEIGHTS_MODES, "weights mode"),
        dtype=check.choice(entry.get("dtype", "auto"), "suite.dtype", DTYPES, "dtype"),
        clip_model=check.string(clip.get("model", DEFAULT_CLIP_MODEL), "suite.clip.model"),
        clip_pretrained=check.string(clip.get("pretrained", DEFAULT_CLIP_PRETRAINED), "suite.clip.pretrained"),
        source=str(source),
        repeats=check.integer(entry.get("repeats", 1), "suite.repeats", minimum=1),
    )


def _parse_prompt_source(check: Checker, value, base: Path) -> PromptSource:
    entry = check.mapping(value, "suite.prompts",
                          optional=("inline", "file", "hub", "split", "column", "limit", "license"))
    given = [name for name in ("inline", "file", "hub") if name in entry]
    if len(given) != 1:
        check.fail("suite.prompts", f"give exactly one of inline, file or hub (got {', '.join(given) or 'none'})")
    limit = entry.get("limit")
    source = PromptSource(
        split=check.string(entry.get("split", "train"), "suite.prompts.split"),
        column=check.string(entry.get("column", "Prompt"), "suite.prompts.column"),
        limit=check.integer(limit, "suite.prompts.limit", minimum=1) if limit is not None else None,
        license=check.string(entry["license"], "suite.prompts.license") if "license" in entry else None,
    )
    if "inline" in entry:
        prompts = check.sequence(entry["inline"], "suite.prompts.inline")
        for index, prompt in enumerate(prompts):
            check.string(prompt, f"suite.prompts.inline[{index}]")
        return replace(source, inline=tuple(prompts))
    if "file" in entry:
        path = Path(check.string(entry["file"], "suite.prompts.file"))
        return replace(source, file=path if path.is_absolute() else (base / path))
    hub = check.string(entry["hub"], "suite.prompts.hub")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", hub):
        check.fail("suite.prompts.hub", f"must be a Hub dataset id ORG/NAME, got {hub!r}")
    return replace(source, hub=hub)
