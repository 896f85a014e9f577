"""Parsing ``tasks/*.yaml``: each task's fields checked, its parameters resolved against its method (a target
task's: its reference program's), its text checked against the rendered form."""

from __future__ import annotations

import dataclasses
from typing import Any

from accelbench.manifest.checks import Checker, check_param_value
from accelbench.manifest.model import (
    BASELINE_METHOD,
    FIXABLE,
    GPU_CLASSES,
    TASK_ID_PATTERN,
    TIERS,
    Method,
    Model,
    QualityBudget,
    Target,
    Task,
    did_you_mean,
    task_level,
    task_tags,
)
from accelbench.manifest.text import parse_task_text, render_target_text, render_task_text

RECIPE_KEYS = ("id", "model", "scheduler", "steps", "method", "params", "text")
TARGET_KEYS = ("id", "model", "scheduler", "steps", "target", "budget", "fixed", "reference", "text")
DEFAULT_KEYS = ("model", "scheduler", "steps", "method", "params", "budget", "fixed")


def parse_tasks(data, source, models, schedulers, methods) -> list[Task]:
    """A task file: optional ``defaults`` (merged into every task) and a ``tasks`` list of recipe tasks (a
    ``method``) and target tasks (a ``target``)."""
    check = Checker(source)
    check.mapping(data, "", required=("tasks",), optional=("defaults",))
    defaults = check.mapping(data.get("defaults") or {}, "defaults", optional=DEFAULT_KEYS)
    tasks = []
    for index, raw in enumerate(check.sequence(data["tasks"], "tasks")):
        key = f"tasks[{index}]"
        is_target = isinstance(raw, dict) and "target" in raw
        check.mapping(raw, key, required=("id", "text"), optional=TARGET_KEYS if is_target else RECIPE_KEYS)
        entry = {**{name: value for name, value in defaults.items() if name in (TARGET_KEYS if is_target else
                                                                                 RECIPE_KEYS)}, **raw}
        task_id = check.string(entry["id"], f"{key}.id")
        if not TASK_ID_PATTERN.match(task_id):
            check.fail(f"{key}.id", f"must be lowercase letters, digits, '.', '_' or '-', got {task_id!r}")
        key = f"tasks[{index}] ({task_id})"
        for name in ("model", "scheduler", "steps", *(("reference",) if is_target else ("method",))):
            if name not in entry:
                check.fail(f"{key}.{name}", "missing required key (not in the task nor in defaults)" +
                           ("; a target task needs a reference program that meets its target ({method, params, "
                            "evidence}), without which the target is not known to be feasible"
                            if name == "reference" else ""))
        model = models[check.choice(entry["model"], f"{key}.model", models, "model")]
        scheduler = schedulers[check.choice(entry["scheduler"], f"{key}.scheduler", schedulers, "scheduler")]
        steps = check.integer(entry["steps"], f"{key}.steps", minimum=1)
        text = check.string(entry["text"], f"{key}.text")
        if is_target:
            task = _target_task(check, key, entry, model, scheduler, steps, methods)
        else:
            entry["params"] = {**(defaults.get("params") or {}), **(raw.get("params") or {})}
            task = _recipe_task(check, key, entry, model, scheduler, steps, methods, text, models, schedulers)
        if is_target and text != task.text:
            check.fail(f"{key}.text", f"text differs from the rendered form {task.text!r}")
        tasks.append(dataclasses.replace(task, id=task_id, text=text, source=str(source)))
    return tasks


def _method(check: Checker, key: str, value, model: Model, methods) -> Method:
    method = methods[check.choice(value, key, methods, "method")]
    if method.id not in model.methods:
        check.fail(key, f"method {method.id!r} does not apply to model {model.id!r} "
                        f"(applies: {', '.join(model.methods)})")
    return method


def _recipe_task(check, key, entry, model, scheduler, steps, methods, text, models, schedulers) -> Task:
    method = _method(check, f"{key}.method", entry["method"], model, methods)
    given = check.mapping(entry["params"], f"{key}.params", any_keys=True)
    params = resolve_params(check, f"{key}.params", method, given, steps)
    expected = render_task_text(model, scheduler, steps, method, params)
    if text != expected:
        check.fail(f"{key}.text", _text_disagreement(text, expected, model, scheduler, steps, method, params,
                                                     models, schedulers, methods))
    return Task(id="", model=model.id, scheduler=scheduler.id, steps=steps, method=method.id, params=params,
                text=text, level=task_level(method), tags=task_tags(method, params))


def _target_task(check: Checker, key: str, entry: dict, model: Model, scheduler, steps: int, methods) -> Task:
    """A target task: its target, quality budget and fixed fields, and the reference program that meets it."""
    goal = check.mapping(entry["target"], f"{key}.target", required=("tier",), optional=("speedup", "latency_ms"))
    tier = check.choice(goal["tier"], f"{key}.target.tier", TIERS, "tier")
    if ("speedup" in goal) == ("latency_ms" in goal):
        check.fail(f"{key}.target", "give exactly one of speedup (level 4: at least this many times faster than "
                                    "the baseline) and latency_ms (level 5: at most this many ms per image, per "
                                    f"GPU class: {', '.join(GPU_CLASSES)})")
    speedup, latency = None, {}
    if "speedup" in goal:
        speedup = check.number(goal["speedup"], f"{key}.target.speedup")
        if not speedup > 1:
            check.fail(f"{key}.target.speedup", f"must be > 1 (a speedup over the baseline), got {speedup:g}")
    else:
        classes = check.mapping(goal["latency_ms"], f"{key}.target.latency_ms", any_keys=True)
        if not classes:
            check.fail(f"{key}.target.latency_ms", f"must name at least one GPU class ({', '.join(GPU_CLASSES)})")
        for gpu, value in classes.items():
            check.choice(gpu, f"{key}.target.latency_ms.{gpu}", GPU_CLASSES, "GPU class")
            latency[gpu] = check.number(value, f"{key}.target.latency_ms.{gpu}")
            if not latency[gpu] > 0:
                check.fail(f"{key}.target.latency_ms.{gpu}", f"must be > 0 ms, got {latency[gpu]:g}")
    if "budget" not in entry:
        check.fail(f"{key}.budget", "missing required key (not in the task nor in defaults): the quality budget "
                                    "{psnr_db, clip_pct}, relative to the reference program")
    budget = check.mapping(entry["budget"], f"{key}.budget", required=("psnr_db", "clip_pct"))
    for name in ("psnr_db", "clip_pct"):
        if check.number(budget[name], f"{key}.budget.{name}") < 0:
            check.fail(f"{key}.budget.{name}", f"must be >= 0, got {budget[name]}")
    fixed = check.sequence(entry.get("fixed", []), f"{key}.fixed", nonempty=False)
    for position, name in enumerate(fixed):
        check.choice(name, f"{key}.fixed[{position}]", FIXABLE, "fixable field")
        if name in fixed[:position]:
            check.fail(f"{key}.fixed[{position}]", f"{name!r} is listed twice")
    reference = check.mapping(entry["reference"], f"{key}.reference", required=("method", "evidence"),
                              optional=("params",))
    method = _method(check, f"{key}.reference.method", reference["method"], model, methods)
    if method.id == BASELINE_METHOD:
        check.fail(f"{key}.reference.method", "the reference must accelerate: the baseline itself cannot meet a "
                                              "target it is measured against")
    params = resolve_params(check, f"{key}.reference.params", method,
                            check.mapping(reference.get("params") or {}, f"{key}.reference.params", any_keys=True),
                            steps)
    target = Target(tier=tier, budget=QualityBudget(float(budget["psnr_db"]), float(budget["clip_pct"])),
                    fixed=tuple(name for name in FIXABLE if name in fixed), speedup=speedup, latency_ms=latency,
                    evidence=check.string(reference["evidence"], f"{key}.reference.evidence"))
    return Task(id="", model=model.id, scheduler=scheduler.id, steps=steps, method=method.id, params=params,
                text=render_target_text(model, scheduler, steps, target), level=target.level, target=target)


def resolve_params(check: Checker, key: str, method: Method, given: dict, steps: int) -> dict[str, Any]:
    """All of a method's parameters: given values checked, defaults filled in, named bounds resolved."""
    for name in given:
        if name not in method.params:
            allowed = ", ".join(method.params) or "none"
            check.fail(f"{key}.{name}", f"unknown parameter {name!r} for method {method.id!r}"
                                        f"{did_you_mean(name, method.params)}; allowed: {allowed}")
    params = {name: given.get(name, spec.default) for name, spec in method.params.items()}
    context = {"steps": steps, **params}
    for name, spec in method.params.items():
        params[name] = check_param_value(check, f"{key}.{name}", spec, params[name], context)
    return params


def _text_disagreement(text, expected, model, scheduler, steps, method, params, models, schedulers, methods) -> str:
    """Say which field the text contradicts, e.g. ``text says 20 steps, the task has steps: 25``."""
    try:
        said = parse_task_text(text, models, schedulers, methods)
    except ValueError as error:
        return f"{error}; expected {expected!r}"
    fields = {"model": model.id, "scheduler": scheduler.id, "steps": steps, "method": method.id, "params": params}
    for name, value in fields.items():
        if said[name] != value:
            return f"text says {name} {said[name]!r} but the task has {name}: {value!r}; expected text {expected!r}"
    return f"text differs from the rendered form {expected!r}"
