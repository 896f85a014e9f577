"""Load and strictly validate the YAML manifests into one typed :class:`Catalog`.

A manifest root holds ``models.yaml``, ``methods.yaml``, ``schedulers.yaml``, ``tasks/*.yaml`` and
``suites/*.yaml``. Every problem is reported as one :class:`ManifestError` line naming the file, the key and
what is wrong (with a did-you-mean for unknown keys and names); nothing is silently corrected.

Pure Python + PyYAML: ``accelbench --help`` and the scorer import this module, so no torch here.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from accelbench.errors import UserInputError

WEIGHTS_MODES = ("pretrained", "random", "tiny")
DEFAULT_CLIP_MODEL = "ViT-B-32"  # the CLIP recipe a suite gets unless it names one (open_clip model, pretrained tag)
DEFAULT_CLIP_PRETRAINED = "laion2b_s34b_b79k"
DTYPES = ("auto", "float16", "bfloat16", "float32")
DENOISERS = ("unet", "transformer")
PARAM_TYPES = {"int": int, "float": float, "bool": bool, "str": str}
TASK_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
TEMPLATE_NAME = re.compile(r"[A-Za-z0-9_]+")  # builder/templates/<name>.py.tmpl


class ManifestError(UserInputError):
    """A manifest problem, formatted as one line: ``FILE: KEY: problem``."""

    def __init__(self, source: Path | str, key: str, problem: str):
        self.source, self.key, self.problem = str(source), key, problem
        location = f"{source}: {key}" if key else str(source)
        super().__init__(f"{location}: {problem}")


def did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def expand_task_patterns(patterns, task_ids, unmatched) -> list[str]:
    """The ids among ``task_ids`` that task ids or glob patterns (case-sensitive) select, each once, in the
    order first selected. ``unmatched(index, pattern)`` is called for a pattern that selects nothing."""
    selected: list[str] = []
    for index, pattern in enumerate(patterns):
        matches = [task_id for task_id in task_ids if fnmatch.fnmatchcase(task_id, pattern)]
        if not matches:
            unmatched(index, pattern)
        selected.extend(task_id for task_id in matches if task_id not in selected)
    return selected


def unknown_name(kind: str, name: str, choices) -> str:
    """The problem text for a name that is not in ``choices`` (listing them when there are few)."""
    known = sorted(map(str, choices))
    listing = f"; known: {', '.join(known)}" if len(known) <= 12 else f" ({len(known)} known)"
    return f"unknown {kind} {name!r}{did_you_mean(name, known)}{listing}"


# ---------------------------------------------------------------------------------------------------------
# Typed manifest entries
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    default: Any
    min: Any = None  # a number, or the name of `steps` / another parameter
    max: Any = None
    choices: tuple | None = None
    help: str = ""


@dataclass(frozen=True)
class Method:
    id: str
    name: str
    template: str
    denoisers: tuple[str, ...]
    params: dict[str, ParamSpec]
    library: str | None = None
    needs_loader: bool = False  # every model binding must name the pipeline class that applies it (tgate)
    # Leaderboard: a submission whose images are further from the GT's than this (mean PSNR, dB) `deviates`.
    deviation_psnr_db: float | None = None


@dataclass(frozen=True)
class Scheduler:
    id: str
    name: str
    class_name: str
    config: dict[str, Any]


@dataclass(frozen=True)
class MethodBinding:
    """How one method applies to one model family (loader class and extra call arguments, if any)."""

    loader: str | None = None
    call_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Model:
    id: str
    name: str
    hub_id: str
    pipeline: str
    denoiser: str
    resolution: int
    dtype: str
    guidance_scale: float
    load_kwargs: dict[str, Any]
    call_kwargs: dict[str, Any]
    methods: dict[str, MethodBinding]


@dataclass(frozen=True)
class Task:
    id: str
    model: str
    scheduler: str
    steps: int
    method: str
    params: dict[str, Any]  # every parameter of the method, defaults filled in
    text: str
    source: str = ""

    @property
    def setting_id(self) -> str:
        """(model, scheduler, steps): everything a baseline depends on; tasks with the same setting share it."""
        return f"{self.model}-{self.scheduler}-{self.steps}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "model": self.model,
            "scheduler": self.scheduler,
            "steps": self.steps,
            "method": self.method,
            "params": dict(self.params),
            "setting_id": self.setting_id,
        }


@dataclass(frozen=True)
class PromptSource:
    """Where a suite's prompts come from: inline, a local file (.txt lines or .tsv/.csv column) or a Hub dataset."""

    inline: tuple[str, ...] = ()
    file: Path | None = None
    hub: str | None = None
    split: str = "train"
    column: str = "Prompt"
    limit: int | None = None


@dataclass(frozen=True)
class Suite:
    id: str
    description: str
    tasks: tuple[str, ...]  # resolved task ids, in catalogue order
    prompts: PromptSource
    seeds: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    warmup_batches: int
    weights: str
    dtype: str
    clip_model: str
    clip_pretrained: str
    source: str = ""


@dataclass(frozen=True)
class Catalog:
    root: Path
    models: dict[str, Model]
    methods: dict[str, Method]
    schedulers: dict[str, Scheduler]
    tasks: dict[str, Task]
    suites: dict[str, Suite]

    def task(self, task_id: str) -> Task:
        if task_id not in self.tasks:
            raise ManifestError(self.root, "", unknown_name("task", task_id, self.tasks))
        return self.tasks[task_id]

    def suite(self, suite_id: str) -> Suite:
        if suite_id not in self.suites:
            raise ManifestError(self.root, "", unknown_name("suite", suite_id, self.suites))
        return self.suites[suite_id]


# ---------------------------------------------------------------------------------------------------------
# Task text: rendered from the fields by one function, and parsed back by its inverse
# ---------------------------------------------------------------------------------------------------------


def format_param_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def render_task_text(model: Model, scheduler: Scheduler, steps: int, method: Method, params: dict) -> str:
    """The natural-language request for a task, e.g. ``Generate a SD1.5 pipeline using the DDIM sampler with
    25 steps and DeepCache acceleration (cache_interval=3, cache_branch_id=0).``"""
    head = f"Generate a {model.name} pipeline using the {scheduler.name} sampler with {steps} steps and"
    if method.id == "none":
        return f"{head} no acceleration."
    settings = ", ".join(f"{name}={format_param_value(params[name])}" for name in method.params)
    return f"{head} {method.name} acceleration ({settings})."


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

    method_name = match["method"] or methods["none"].name
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


# ---------------------------------------------------------------------------------------------------------
# Field checking helpers: each raises ManifestError(source, key, problem)
# ---------------------------------------------------------------------------------------------------------


class _Checker:
    """Checks YAML values of one file, naming the file and key path in every error."""

    def __init__(self, source: Path | str):
        self.source = source

    def fail(self, key: str, problem: str):
        raise ManifestError(self.source, key, problem)

    def mapping(self, value, key: str, required=(), optional=(), any_keys: bool = False) -> dict:
        """Check ``value`` is a mapping; unless ``any_keys``, only ``required`` and ``optional`` keys are allowed."""
        if not isinstance(value, dict):
            self.fail(key, f"must be a mapping, got {_type_name(value)}")
        if any_keys:
            return value
        allowed = tuple(dict.fromkeys((*required, *optional)))
        for name in value:
            if name not in allowed:
                where = f"{key}.{name}" if key else str(name)
                self.fail(where, f"unknown key {name!r}{did_you_mean(name, allowed)}; allowed: {', '.join(allowed)}")
        for name in required:
            if name not in value:
                self.fail(f"{key}.{name}" if key else name, "missing required key")
        return value

    def section(self, data, name: str) -> dict:
        """The entries of a file whose only top-level key is ``name`` (``models:``, ``methods:``, ...)."""
        return self.mapping(self.mapping(data, "", required=(name,))[name], name, any_keys=True)

    def string(self, value, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f"must be a non-empty string, got {_describe(value)}")
        return value

    def integer(self, value, key: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, got {_describe(value)}")
        if minimum is not None and value < minimum:
            self.fail(key, f"must be >= {minimum}, got {value}")
        return value

    def number(self, value, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, f"must be a number, got {_describe(value)}")
        return float(value)

    def boolean(self, value, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {_describe(value)}")
        return value

    def sequence(self, value, key: str, nonempty: bool = True) -> list:
        if not isinstance(value, list):
            self.fail(key, f"must be a list, got {_type_name(value)}")
        if nonempty and not value:
            self.fail(key, "must not be empty")
        return value

    def choice(self, value, key: str, choices, kind: str) -> str:
        if not isinstance(value, str):
            self.fail(key, f"must be a string naming a {kind}, got {_describe(value)}")
        if value not in choices:
            self.fail(key, unknown_name(kind, value, choices))
        return value


def _type_name(value) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "nothing (null)"}.get(type(value), type(value).__name__)


def _describe(value) -> str:
    if isinstance(value, (dict, list)) or value is None:
        return _type_name(value)
    return f"{_type_name(value)} {value!r}"


def read_yaml(path: Path) -> Any:
    """``yaml.safe_load`` a file; syntax errors become one ManifestError line with the position."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ManifestError(path, "", f"cannot read: {error.strerror or error}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ManifestError(path, where, f"invalid YAML: {problem}") from None


# ---------------------------------------------------------------------------------------------------------
# Section parsers
# ---------------------------------------------------------------------------------------------------------


def _template_exists(name: str) -> bool:
    from importlib import resources

    return resources.files("accelbench.builder.templates").joinpath(f"{name}.py.tmpl").is_file()


def parse_methods(data, source) -> dict[str, Method]:
    check = _Checker(source)
    entries = check.section(data, "methods")
    methods = {}
    for method_id, entry in entries.items():
        key = f"methods.{method_id}"
        check.mapping(entry, key, required=("name", "template", "denoisers", "params"),
                      optional=("library", "needs_loader", "deviation_psnr_db"))
        template = check.string(entry["template"], f"{key}.template")
        if not TEMPLATE_NAME.fullmatch(template) or not _template_exists(template):
            check.fail(f"{key}.template", f"{template!r} is not a template in builder/templates (a name such as "
                                          f"'deepcache' for deepcache.py.tmpl; no paths)")
        denoisers = check.sequence(entry["denoisers"], f"{key}.denoisers")
        for index, denoiser in enumerate(denoisers):
            check.choice(denoiser, f"{key}.denoisers[{index}]", DENOISERS, "denoiser")
        raw_params = entry["params"] if entry["params"] is not None else {}
        params = {}
        for name, spec in check.mapping(raw_params, f"{key}.params", any_keys=True).items():
            params[name] = _parse_param_spec(check, f"{key}.params.{name}", name, spec)
        for name, spec in params.items():
            for bound in ("min", "max"):
                ref = getattr(spec, bound)
                if isinstance(ref, str) and ref != "steps" and ref not in params:
                    check.fail(f"{key}.params.{name}.{bound}",
                               f"bound {ref!r} is neither a number, 'steps' nor a parameter{did_you_mean(ref, params)}")
        library = entry.get("library")
        deviation = entry.get("deviation_psnr_db")
        if deviation is not None:
            deviation = check.number(deviation, f"{key}.deviation_psnr_db")
            if not 0 < deviation < 100:
                check.fail(f"{key}.deviation_psnr_db", f"must be a PSNR in dB between 0 and 100, got {deviation:g}")
        methods[method_id] = Method(
            id=method_id, name=check.string(entry["name"], f"{key}.name"),
            template=template, denoisers=tuple(denoisers),
            params=params, library=check.string(library, f"{key}.library") if library is not None else None,
            needs_loader=check.boolean(entry.get("needs_loader", False), f"{key}.needs_loader"),
            deviation_psnr_db=deviation,
        )
    if "none" not in methods:
        check.fail("methods", "the method 'none' (the baseline) must be defined")
    if methods["none"].params:
        check.fail("methods.none.params", "the baseline method takes no parameters")
    return methods


def _parse_param_spec(check: _Checker, key: str, name: str, spec) -> ParamSpec:
    check.mapping(spec, key, required=("type", "default"), optional=("min", "max", "choices", "help"))
    type_name = check.choice(spec["type"], f"{key}.type", PARAM_TYPES, "parameter type")
    for bound in ("min", "max"):
        value = spec.get(bound)
        if value is not None and not isinstance(value, str):
            check.number(value, f"{key}.{bound}")
    choices = spec.get("choices")
    if choices is not None:
        choices = tuple(check.sequence(choices, f"{key}.choices"))
    param = ParamSpec(name=name, type=type_name, default=spec["default"], min=spec.get("min"),
                      max=spec.get("max"), choices=choices, help=spec.get("help", ""))
    _check_param_value(check, f"{key}.default", param, param.default, {})
    return param


def _check_param_value(check: _Checker, key: str, spec: ParamSpec, value, context: dict) -> Any:
    """Type, choices and bounds of one parameter value. ``context`` resolves named bounds (steps, other params)."""
    expected = PARAM_TYPES[spec.type]
    if spec.type == "float" and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
        check.fail(key, f"must be {_type_name(expected())} ({spec.type}), got {_describe(value)}")
    if spec.choices is not None and value not in spec.choices:
        check.fail(key, f"must be one of {', '.join(map(str, spec.choices))}, got {value!r}")
    for bound, outside in (("min", lambda v, b: v < b), ("max", lambda v, b: v > b)):
        limit = getattr(spec, bound)
        if isinstance(limit, str):
            if limit not in context:
                continue
            limit_text, limit = f"{limit} ({context[limit]})", context[limit]
        else:
            limit_text = str(limit)
        if limit is not None and outside(value, limit):
            check.fail(key, f"must be {'>=' if bound == 'min' else '<='} {limit_text}, got {value!r}")
    return value


def parse_schedulers(data, source) -> dict[str, Scheduler]:
    check = _Checker(source)
    entries = check.section(data, "schedulers")
    schedulers = {}
    for scheduler_id, entry in entries.items():
        key = f"schedulers.{scheduler_id}"
        check.mapping(entry, key, required=("name", "class"), optional=("config",))
        class_name = check.string(entry["class"], f"{key}.class")
        if not re.fullmatch(r"[A-Z]\w*Scheduler", class_name):
            check.fail(f"{key}.class", f"must name a diffusers scheduler class (…Scheduler), got {class_name!r}")
        config = entry.get("config") or {}
        schedulers[scheduler_id] = Scheduler(
            id=scheduler_id, name=check.string(entry["name"], f"{key}.name"), class_name=class_name,
            config=dict(check.mapping(config, f"{key}.config", any_keys=True)),
        )
    return schedulers


def parse_models(data, source, methods: dict[str, Method]) -> dict[str, Model]:
    check = _Checker(source)
    entries = check.section(data, "models")
    models = {}
    for model_id, entry in entries.items():
        key = f"models.{model_id}"
        check.mapping(entry, key, required=("name", "hub_id", "pipeline", "denoiser", "resolution", "dtype",
                                            "guidance_scale", "methods"),
                      optional=("load_kwargs", "call_kwargs"))
        denoiser = check.choice(entry["denoiser"], f"{key}.denoiser", DENOISERS, "denoiser")
        resolution = check.integer(entry["resolution"], f"{key}.resolution", minimum=8)
        if resolution % 8:
            check.fail(f"{key}.resolution", f"must be a multiple of 8 (the VAE downsamples by 8), got {resolution}")
        bindings = {}
        for method_id, binding in check.mapping(entry["methods"], f"{key}.methods", optional=tuple(methods)).items():
            bkey = f"{key}.methods.{method_id}"
            method = methods[method_id]
            if denoiser not in method.denoisers:
                check.fail(bkey, f"method {method_id!r} needs a {' or '.join(method.denoisers)} denoiser, "
                                 f"model {model_id!r} has a {denoiser}")
            binding = check.mapping(binding or {}, bkey, optional=("loader", "call_kwargs"))
            loader = binding.get("loader")
            if method.needs_loader and loader is None:
                check.fail(f"{bkey}.loader", f"missing required key (the {method.name} loader class for this "
                                             f"pipeline)")
            bindings[method_id] = MethodBinding(
                loader=check.string(loader, f"{bkey}.loader") if loader is not None else None,
                call_kwargs=dict(check.mapping(binding.get("call_kwargs") or {}, f"{bkey}.call_kwargs", any_keys=True)),
            )
        if "none" not in bindings:
            check.fail(f"{key}.methods", "must include 'none' (the baseline)")
        models[model_id] = Model(
            id=model_id, name=check.string(entry["name"], f"{key}.name"),
            hub_id=check.string(entry["hub_id"], f"{key}.hub_id"),
            pipeline=check.string(entry["pipeline"], f"{key}.pipeline"), denoiser=denoiser,
            resolution=resolution, dtype=check.choice(entry["dtype"], f"{key}.dtype", DTYPES[1:], "dtype"),
            guidance_scale=check.number(entry["guidance_scale"], f"{key}.guidance_scale"),
            load_kwargs=dict(check.mapping(entry.get("load_kwargs") or {}, f"{key}.load_kwargs", any_keys=True)),
            call_kwargs=dict(check.mapping(entry.get("call_kwargs") or {}, f"{key}.call_kwargs", any_keys=True)),
            methods=bindings,
        )
    return models


def parse_tasks(data, source, models, schedulers, methods) -> list[Task]:
    """A task file: optional ``defaults`` (merged into every task) and a ``tasks`` list."""
    check = _Checker(source)
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
        params = resolve_params(check, f"{key}.params", method, check.mapping(entry["params"], f"{key}.params", any_keys=True),
                                steps)
        text = check.string(entry["text"], f"{key}.text")
        expected = render_task_text(model, scheduler, steps, method, params)
        if text != expected:
            check.fail(f"{key}.text", _text_disagreement(text, expected, model, scheduler, steps, method, params,
                                                         models, schedulers, methods))
        tasks.append(Task(id=task_id, model=model.id, scheduler=scheduler.id, steps=steps, method=method.id,
                          params=params, text=text, source=str(source)))
    return tasks


def resolve_params(check: _Checker, key: str, method: Method, given: dict, steps: int) -> dict[str, Any]:
    """All of a method's parameters: given values checked, defaults filled in, named bounds resolved."""
    for name in given:
        if name not in method.params:
            allowed = ", ".join(method.params) or "none"
            check.fail(f"{key}.{name}", f"unknown parameter {name!r} for method {method.id!r}"
                                        f"{did_you_mean(name, method.params)}; allowed: {allowed}")
    params = {name: given.get(name, spec.default) for name, spec in method.params.items()}
    context = {"steps": steps, **params}
    for name, spec in method.params.items():
        params[name] = _check_param_value(check, f"{key}.{name}", spec, params[name], context)
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


def parse_suite(data, source, tasks: dict[str, Task]) -> Suite:
    check = _Checker(source)
    check.mapping(data, "", required=("suite",))
    entry = check.mapping(data["suite"], "suite",
                          required=("description", "tasks", "prompts", "seeds", "batch_sizes"),
                          optional=("warmup_batches", "weights", "dtype", "clip"))
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
    )


def _parse_prompt_source(check: _Checker, value, base: Path) -> PromptSource:
    entry = check.mapping(value, "suite.prompts", optional=("inline", "file", "hub", "split", "column", "limit"))
    given = [name for name in ("inline", "file", "hub") if name in entry]
    if len(given) != 1:
        check.fail("suite.prompts", f"give exactly one of inline, file or hub (got {', '.join(given) or 'none'})")
    limit = entry.get("limit")
    source = PromptSource(
        split=check.string(entry.get("split", "train"), "suite.prompts.split"),
        column=check.string(entry.get("column", "Prompt"), "suite.prompts.column"),
        limit=check.integer(limit, "suite.prompts.limit", minimum=1) if limit is not None else None,
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


# ---------------------------------------------------------------------------------------------------------
# Loading a manifest root
# ---------------------------------------------------------------------------------------------------------


def default_root() -> Path:
    """The packaged manifests (``manifests/`` in the source tree, ``accelbench/manifests`` when installed)."""
    return Path(str(resources.files("accelbench.manifests")))


def load_catalog(root: Path | str | None = None, extra_files=()) -> Catalog:
    """Load and validate a manifest root, plus optional extra task/suite files validated against it."""
    root = Path(root) if root is not None else default_root()
    for required in ("models.yaml", "methods.yaml", "schedulers.yaml"):
        if not (root / required).is_file():
            raise ManifestError(root, "", f"not a manifest root: {required} is missing")
    methods = parse_methods(read_yaml(root / "methods.yaml"), root / "methods.yaml")
    schedulers = parse_schedulers(read_yaml(root / "schedulers.yaml"), root / "schedulers.yaml")
    models = parse_models(read_yaml(root / "models.yaml"), root / "models.yaml", methods)
    task_files = sorted((root / "tasks").glob("*.yaml")) if (root / "tasks").is_dir() else []
    suite_files = sorted((root / "suites").glob("*.yaml")) if (root / "suites").is_dir() else []
    for path in map(Path, extra_files):
        data = read_yaml(path)
        kind = "suite" if isinstance(data, dict) and "suite" in data else "tasks"
        (suite_files if kind == "suite" else task_files).append(path)

    tasks: dict[str, Task] = {}
    for path in task_files:
        for task in parse_tasks(read_yaml(path), path, models, schedulers, methods):
            if task.id in tasks:
                raise ManifestError(path, f"tasks ({task.id})",
                                    f"duplicate task id {task.id!r}, first defined in {tasks[task.id].source}")
            tasks[task.id] = task
    suites: dict[str, Suite] = {}
    for path in suite_files:
        suite = parse_suite(read_yaml(path), path, tasks)
        if suite.id in suites:
            raise ManifestError(path, "suite", f"duplicate suite {suite.id!r}, first defined in "
                                               f"{suites[suite.id].source}")
        suites[suite.id] = suite
    return Catalog(root=root, models=models, methods=methods, schedulers=schedulers, tasks=tasks, suites=suites)
