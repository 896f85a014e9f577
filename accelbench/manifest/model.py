"""The manifest model: the typed, frozen entries a :class:`Catalog` is made of, shared by the builder (which runs
tasks) and the scorer (which reads their facts back from a dataset). Pure Python, no torch."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelbench.errors import UserInputError

BASELINE_METHOD = "none"  # the method of every baseline program: the setting without acceleration
WEIGHTS_MODES = ("pretrained", "random", "tiny")
DEFAULT_CLIP_MODEL = "ViT-B-32"  # the CLIP recipe a suite gets unless it names one (open_clip model, pretrained tag)
DEFAULT_CLIP_PRETRAINED = "laion2b_s34b_b79k"
DTYPES = ("auto", "float16", "bfloat16", "float32")
DENOISERS = ("unet", "transformer")
PARAM_TYPES = {"int": int, "float": float, "bool": bool, "str": str}
TASK_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
TEMPLATE_NAME = re.compile(r"[A-Za-z0-9_]+")  # builder/templates/<name>.py.tmpl
# Task levels, as the field counts them (DiffBench's L1-L3): what a recipe task asks for. The target levels (4: a
# speedup target, 5: a latency target) are a task kind of their own, not in this catalogue yet.
LEVELS = {1: "a pipeline: model, sampler and steps, no acceleration", 2: "one acceleration method, parameters given",
          3: "a combination of methods, parameters given"}
PIPELINE_LEVEL = 1  # no acceleration asked: judged on correctness alone, outside fast_p
TAG_SWEEP = "sweep"  # a task whose method has a parameter away from its default (formerly level 2)


class ManifestError(UserInputError):
    """A manifest problem, formatted as one line: ``FILE: KEY: problem``."""

    def __init__(self, source: Path | str, key: str, problem: str):
        self.source, self.key, self.problem = str(source), key, problem
        location = f"{source}: {key}" if key else str(source)
        super().__init__(f"{location}: {problem}")


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
class GateTolerance:
    """A method's own image tolerance in the gate (uint8 levels), for a freedom its task does not fix: it
    applies when the boolean parameter ``when`` is true (always when ``when`` is None)."""

    max_abs: int
    mean_abs: float
    basis: str
    when: str | None = None


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
    components: tuple[str, ...] = ()  # a composition's methods (deepcache_tgate: deepcache, tgate); else ()
    gate_tolerance: GateTolerance | None = None


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
    synthetic: str  # the architecture builder/synthetic.py builds tiny and full-size random models of


@dataclass(frozen=True)
class Task:
    id: str
    model: str
    scheduler: str
    steps: int
    method: str
    params: dict[str, Any]  # every parameter of the method, defaults filled in
    text: str
    level: int  # a key of LEVELS
    tags: tuple[str, ...] = ()  # TAG_SWEEP
    source: str = ""

    @property
    def setting_id(self) -> str:
        """(model, scheduler, steps): everything a baseline depends on; tasks with the same setting share it."""
        return setting_id(self.model, self.scheduler, self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "model": self.model,
            "scheduler": self.scheduler,
            "steps": self.steps,
            "method": self.method,
            "params": dict(self.params),
            "level": self.level,
            "tags": list(self.tags),
            "setting_id": self.setting_id,
        }


def setting_id(model: str, scheduler: str, steps: int) -> str:
    return f"{model}-{scheduler}-{steps}"


def task_level(method: Method) -> int:
    """The :data:`LEVELS` key of a task of ``method``."""
    if method.id == BASELINE_METHOD:
        return PIPELINE_LEVEL
    return 3 if len(method.components) > 1 else 2


def task_tags(method: Method, params: dict[str, Any]) -> tuple[str, ...]:
    """The tags of a task of ``method`` with ``params`` (every parameter, defaults filled in)."""
    return (TAG_SWEEP,) if any(params[name] != spec.default for name, spec in method.params.items()) else ()


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
    repeats: int = 1  # generate's default --repeats: fresh workers each, so intervals cover run-to-run variation


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


def did_you_mean(name: str, choices, lowercase: bool = False) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` (compared lowercased with ``lowercase``), or ''."""
    import difflib

    by_key = {(str(choice).lower() if lowercase else str(choice)): str(choice) for choice in choices}
    key = str(name).lower() if lowercase else str(name)
    close = difflib.get_close_matches(key, list(by_key), n=1, cutoff=0.6)
    return f" (did you mean {by_key[close[0]]!r}?)" if close else ""


def unknown_name(kind: str, name: str, choices) -> str:
    """The problem text for a name that is not in ``choices`` (listing them when there are few)."""
    known = sorted(map(str, choices))
    listing = f"; known: {', '.join(known)}" if len(known) <= 12 else f" ({len(known)} known)"
    return f"unknown {kind} {name!r}{did_you_mean(name, known)}{listing}"
