"""Task text: the request an agent reads, rendered from a task's fields by one function and parsed back by its
inverse, so a manifest whose text disagrees with its fields is an error that names the field."""

from __future__ import annotations

import re
from typing import Any

import yaml

from accelbench.manifest.model import (
    BASELINE_METHOD,
    FIXABLE,
    GPU_CLASSES,
    Method,
    Model,
    Scheduler,
    Target,
    unknown_name,
)


def format_param_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def render_task_text(model: Model, scheduler: Scheduler, steps: int, method: Method, params: dict) -> str:
    """The natural-language request for a task, e.g. ``Generate a SD1.5 pipeline using the DDIM sampler with
    25 steps and DeepCache acceleration (cache_interval=3, cache_branch_id=0).``"""
    head = f"Generate a {model.name} pipeline using the {scheduler.name} sampler with {steps} steps and"
    if method.id == BASELINE_METHOD:
        return f"{head} no acceleration."
    settings = ", ".join(f"{name}={format_param_value(params[name])}" for name in method.params)
    return f"{head} {method.name} acceleration ({settings})."


def render_target_text(model: Model, scheduler: Scheduler, steps: int, target: Target) -> str:
    """The request of a target task, e.g. ``Make the SD1.5 pipeline with the DDIM sampler and 25 steps at least 2x
    faster than its baseline with any training-free method, within the quality budget (...); fixed: the sampler,
    the step count.`` It names no method: which one to use is the agent's choice."""
    if target.speedup is not None:
        goal = f"at least {target.speedup:g}× faster than its baseline"
    else:
        goal = "take at most " + ", ".join(f"{ms:g} ms per image on {GPU_CLASSES[gpu]}"
                                           for gpu, ms in target.latency_ms.items())
    fixed = ", ".join(FIXABLE[name].short for name in target.fixed) or "nothing more"
    return (f"Make the {model.name} pipeline with the {scheduler.name} sampler and {steps} steps {goal} with any "
            f"training-free method, within the quality budget (PSNR to the baseline's images no lower than the "
            f"reference's minus {target.budget.psnr_db:g} dB, CLIP score loss no higher than the reference's plus "
            f"{target.budget.clip_pct:g} %); fixed: {fixed}.")


_TEXT_PATTERN = re.compile(
    r"^Generate a (?P<model>.+?) pipeline using the (?P<scheduler>.+?) sampler with (?P<steps>\d+) steps and "
    r"(?:no acceleration|(?P<method>\S+) acceleration \((?P<params>[^()]*)\))\.$"
)


def parse_task_text(text: str, models, schedulers, methods) -> dict[str, Any]:
    """Inverse of :func:`render_task_text`: map the names in ``text`` back to ids. Raises ValueError."""
    match = _TEXT_PATTERN.match(text)
    if not match:
        raise ValueError(f"task text does not follow the pattern 'Generate a MODEL pipeline using the SCHEDULER "
                         f"sampler with N steps and METHOD acceleration (k=v, ...).': {text!r}")

    def by_name(kind: str, entries: dict, name: str) -> str:
        ids = [entry.id for entry in entries.values() if entry.name == name]
        if not ids:
            raise ValueError(unknown_name(f"{kind} name", name, [entry.name for entry in entries.values()]))
        return ids[0]

    method_name = match["method"] or methods[BASELINE_METHOD].name
    params: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in (match["params"] or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"parameter {item!r} in the task text is not key=value")
        params[key.strip()] = yaml.safe_load(value.strip())
    return {
        "model": by_name("model", models, match["model"]),
        "scheduler": by_name("scheduler", schedulers, match["scheduler"]),
        "steps": int(match["steps"]),
        "method": by_name("method", methods, method_name),
        "params": params,
    }
