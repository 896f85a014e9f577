"""The manifest model: the typed, frozen entries a :class:`Catalog` is made of, shared by the builder (which runs
tasks) and the scorer (which reads their facts back from a dataset). Pure Python, no torch."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from accelbench.errors import UserInputError

BASELINE_METHOD = "none"  # the method of every baseline program: the setting without acceleration
# The method a submission's rows of a target task record: the program's own choice, which accelbench does not
# know (the task's `method` is its reference program's, not shown to agents).
TARGET_METHOD = "target"
WEIGHTS_MODES = ("pretrained", "random", "tiny")
DEFAULT_CLIP_MODEL = "ViT-B-32"  # the CLIP recipe a suite gets unless it names one (open_clip model, pretrained tag)
DEFAULT_CLIP_PRETRAINED = "laion2b_s34b_b79k"
DTYPES = ("auto", "float16", "bfloat16", "float32")
DENOISERS = ("unet", "transformer")
PARAM_TYPES = {"int": int, "float": float, "bool": bool, "str": str}
TASK_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
TEMPLATE_NAME = re.compile(r"[A-Za-z0-9_]+")  # builder/templates/<name>.py.tmpl
# Task levels, as the field counts them (DiffBench's L1-L5). Levels 1-3 are recipe tasks: the program must compute
# what the task's GT program computes. Levels 4 and 5 are target tasks: any training-free method that meets the target
# within the quality budget, judged against the live baseline beside a reference program that meets it.
LEVELS = {1: "a pipeline: model, sampler and steps, no acceleration", 2: "one acceleration method, parameters given",
          3: "a combination of methods, parameters given",
          4: "a speedup target over the live baseline, any training-free method",
          5: "a latency target per image on a named GPU class, any training-free method"}
PIPELINE_LEVEL = 1  # no acceleration asked: judged on correctness alone, outside fast_p
SPEEDUP_LEVEL, LATENCY_LEVEL = 4, 5
TAG_SWEEP = "sweep"  # a task whose method has a parameter away from its default (formerly level 2)
TIERS = ("easy", "medium", "hard")


class Fixable(NamedTuple):
    """Something a target task may fix: how its text names it, and what fixing it means (the task pack)."""

    short: str
    meaning: str


# What a target task may fix (its ``fixed`` list); everything a task does not fix, besides ALWAYS_FIXED, is free.
FIXABLE = {
    "sampler": Fixable("the sampler", "the scheduler's class and config are the baseline's"),
    "steps": Fixable("the step count", "the scheduler steps through the baseline's schedule; the denoiser may run "
                                       "less often"),
    "dtype": Fixable("the dtype", "the denoiser computes in the baseline's dtype"),
    "guidance": Fixable("guidance", "the conditional and the unconditional branch run at every step, at the "
                                    "baseline's scale; no method that drops the unconditional one, as T-GATE does "
                                    "after its gate step"),
}
ALWAYS_FIXED = ("the model and its weights: no smaller, distilled or second model", "the output resolution",
                "one image per prompt, image i drawn from generator i", "no training or fine-tuning")
# GPU classes a latency target may name: id -> the name in torch's device name ("NVIDIA H200").
GPU_CLASSES = {"h200": "H200", "h100": "H100", "a100": "A100", "l40s": "L40S", "rtx4090": "RTX 4090"}


def gpu_class(device_name: str) -> str | None:
    """The :data:`GPU_CLASSES` id of a device called ``device_name``, or None."""
    squeezed = device_name.upper().replace(" ", "")
    return next((key for key, name in GPU_CLASSES.items() if name.replace(" ", "") in squeezed), None)


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
    search: tuple = ()  # the values `accelbench targets search` tries (none: the parameter stays at its default)


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
    # The sampler as a technique: its SAMPLER_PARAM and SAMPLER_STEPS_PARAM replace the setting's sampler and step
    # count in its program (the baseline keeps the setting's).
    sets_sampler: bool = False


SAMPLER_PARAM, SAMPLER_STEPS_PARAM = "sampler", "sampler_steps"


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
class QualityBudget:
    """How much worse than its reference program a target task's submission may be, both measured on the run's
    prompts against the live baseline's images: fidelity (mean PSNR to the baseline's images) at most ``psnr_db``
    below the reference's, CLIP score loss at most ``clip_pct`` percentage points above the reference's. Relative
    to a live reference, a budget holds on any weights, random ones included."""

    psnr_db: float
    clip_pct: float


@dataclass(frozen=True)
class Target:
    """What a target task (levels 4 and 5) asks for, beside its setting (the baseline program)."""

    tier: str  # a TIERS entry
    budget: QualityBudget
    fixed: tuple[str, ...]  # FIXABLE keys; ALWAYS_FIXED holds on every target task
    speedup: float | None = None  # level 4: speedup over the live baseline at least this
    latency_ms: dict[str, float] = field(default_factory=dict)  # level 5: GPU class -> ms per image at most
    evidence: str = ""  # the results file of the search that found the reference program

    @property
    def level(self) -> int:
        return SPEEDUP_LEVEL if self.speedup is not None else LATENCY_LEVEL

    @property
    def free(self) -> tuple[str, ...]:
        return tuple(name for name in FIXABLE if name not in self.fixed)

    def to_dict(self) -> dict[str, Any]:
        return {"tier": self.tier, "speedup": self.speedup, "latency_ms": dict(self.latency_ms),
                "budget": {"psnr_db": self.budget.psnr_db, "clip_pct": self.budget.clip_pct},
                "fixed": list(self.fixed), "free": list(self.free), "evidence": self.evidence}


@dataclass(frozen=True)
class Task:
    """A recipe task (levels 1-3: ``method`` and ``params`` are what the program must compute, the GT program's)
    or a target task (levels 4-5, ``target`` set: ``method`` and ``params`` are its reference program's, a
    configuration known to meet the target, never shown to agents)."""

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
    target: Target | None = None

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
            "target": self.target.to_dict() if self.target is not None else None,
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
    license: str | None = None  # the prompts' licence, as their source states it (recorded, shown on the card)


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
