"""Parsing ``tasks/*.yaml``: each task's fields checked, its parameters resolved against its method, its text
checked against the rendered form."""

from __future__ import annotations

from typing import Any

from accelbench.manifest.checks import Checker, check_param_value
from accelbench.manifest.model import TASK_ID_PATTERN, Method, Task, did_you_mean, task_level, task_tags
from accelbench.manifest.text import parse_task_text, render_task_text


def parse_tasks(data, source, models, schedulers, methods) -> list[Task]:
    """A task file: optional ``defaults`` (merged into every task) and a ``tasks`` list."""
    check = Checker(source)
    check.mapping(data, "", required=("tasks",), optional=("defaults",))
    task_keys = ("id", "model", "scheduler", "steps", "method", "params", "text")
    defaults = check.mapping(data.get("defaults") or {}, "defaults", optional=task_keys[1:6])
    tasks = []
    for index, raw in enumerate(check.sequence(data["tasks"], "tasks")):
        key = f"tasks[{index}]"
        check.mapping(raw, key, required=("id", "text"), optional=task_keys)
        entry = {**defaults, **raw, "params": {**(defaults.get("params") or {}), **(raw.get("params") or {})}}
        task_id = check.string(entry["id"], f"{key}.id")
        if not TASK_ID_PATTERN.match(task_id):
            check.fail(f"{key}.id", f"must be lowercase letters, digits, '.', '_' or '-', got {task_id!r}")
        key = f"tasks[{index}] ({task_id})"
        for name in ("model", "scheduler", "steps", "method"):
            if name not in entry:
                check.fail(f"{key}.{name}", "missing required key (not in the task nor in defaults)")
        model = models[check.choice(entry["model"], f"{key}.model", models, "model")]
        scheduler = schedulers[check.choice(entry["scheduler"], f"{key}.scheduler", schedulers, "scheduler")]
        steps = check.integer(entry["steps"], f"{key}.steps", minimum=1)
        method = methods[check.choice(entry["method"], f"{key}.method", methods, "method")]
        if method.id not in model.methods:
            check.fail(f"{key}.method", f"method {method.id!r} does not apply to model {model.id!r} "
                                        f"(applies: {', '.join(model.methods)})")
        given = check.mapping(entry["params"], f"{key}.params", any_keys=True)
        params = resolve_params(check, f"{key}.params", method, given, steps)
        text = check.string(entry["text"], f"{key}.text")
        expected = render_task_text(model, scheduler, steps, method, params)
        if text != expected:
            check.fail(f"{key}.text", _text_disagreement(text, expected, model, scheduler, steps, method, params,
                                                         models, schedulers, methods))
        tasks.append(Task(id=task_id, model=model.id, scheduler=scheduler.id, steps=steps, method=method.id,
                          params=params, text=text, level=task_level(method), tags=task_tags(method, params),
                          source=str(source)))
    return tasks


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
