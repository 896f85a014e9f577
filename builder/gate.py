"""The correctness gate: run a pipeline program and check what it actually did, not what its code says.

Checks, in order (a program that cannot be loaded or run fails with the error instead):

1. ``contract``   - the file defines ``load`` and ``generate``;
2. ``scheduler``  - after ``load``, ``pipe.scheduler`` is the task's scheduler class with its config entries;
3. ``steps``      - every ``scheduler.step`` call is counted during ``generate``: the count must equal the
                    length of the task's schedule (``set_timesteps(task.steps)`` on the expected class), and
                    ``set_timesteps`` must have been asked for ``task.steps``;
4. ``output``     - a float array ``[N, H, W, 3]`` for N prompts at the requested resolution;
5. ``finite``     - no NaN/inf, values in [0, 1];
6. ``repeatable`` - a second call with fresh generators of the same seeds gives bit-identical images;
7. ``not-a-no-op``- for an accelerated program, the images differ from the baseline program's on the same
                    model and generators (a method that silently does nothing, e.g. ToMe on SDXL with
                    ``max_downsample=1``, fails here).

The verdict is structured (:class:`Verdict`) and is what later judges agent-written programs.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from accelbench.builder import programs
from accelbench.builder.seeding import make_generators, seed_global
from accelbench.manifest import Catalog, Task

GATE_PROMPTS = ("a photograph of an astronaut riding a horse", "a bowl of fruit on a kitchen table")
GATE_SEEDS = (0, 1)
NO_OP_TOLERANCE = 1e-6  # max |difference| on [0, 1] images below which an accelerated program "did nothing"


@dataclass
class Check:
    name: str
    passed: bool
    expected: Any = None
    observed: Any = None
    detail: str = ""


@dataclass
class Verdict:
    task_id: str
    variant: str
    program_sha256: str
    model_path: str
    checks: list[Check] = field(default_factory=list)
    error: str | None = None
    images: Any = field(default=None, repr=False)  # the first call's images, reusable as a no-op reference


    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.checks) and all(check.passed for check in self.checks)

    def failed_checks(self) -> list[str]:
        return [check.name for check in self.checks if not check.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, **{k: v for k, v in asdict(self).items() if k != "images"}}

    def format(self) -> str:
        lines = [f"{'PASS' if self.passed else 'FAIL'}  {self.task_id} ({self.variant}), program "
                 f"{self.program_sha256[:12]}, model {self.model_path}"]
        for check in self.checks:
            mark = "ok  " if check.passed else "FAIL"
            lines.append(f"  {mark} {check.name:<12} expected {check.expected!s:<28} observed {check.observed!s}"
                         + (f"  ({check.detail})" if check.detail else ""))
        if self.error:
            lines.append(f"  error: {self.error}")
        return "\n".join(lines)


@dataclass
class StepTrace:
    """What the schedulers were asked to do during one ``generate`` call."""

    steps: list[str] = field(default_factory=list)  # scheduler class name of each step() call
    set_timesteps: list[Any] = field(default_factory=list)  # num_inference_steps of each set_timesteps() call


def _scheduler_classes() -> list[type]:
    """Every imported diffusers scheduler class (a program's scheduler is imported by the time it runs)."""
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

    seen, stack = [], list(SchedulerMixin.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls not in seen:
            seen.append(cls)
            stack.extend(cls.__subclasses__())
    return seen


@contextlib.contextmanager
def trace_scheduler_calls():
    """Count ``step`` and ``set_timesteps`` calls on every scheduler class, whichever instance makes them.

    Patches the classes (not one instance), so a program that builds or swaps its scheduler inside
    ``generate`` is still counted; a scheduler class imported only after this started is not, which can only
    make the step check fail, never pass wrongly."""
    trace = StepTrace()
    originals: list[tuple[type, str, Any]] = []

    # functools.wraps keeps the signature visible: pipelines inspect step() to decide whether to pass
    # `generator` and `eta`, and a bare wrapper would silently change what the program does.
    def counting_step(original):
        @functools.wraps(original)
        def step(self, *args, **kwargs):
            trace.steps.append(type(self).__name__)
            return original(self, *args, **kwargs)

        return step

    def recording_set_timesteps(original):
        @functools.wraps(original)
        def set_timesteps(self, num_inference_steps=None, *args, **kwargs):
            trace.set_timesteps.append(num_inference_steps)
            return original(self, num_inference_steps, *args, **kwargs)

        return set_timesteps

    try:
        for cls in _scheduler_classes():
            for name, wrap in (("step", counting_step), ("set_timesteps", recording_set_timesteps)):
                if name in cls.__dict__:
                    originals.append((cls, name, cls.__dict__[name]))
                    setattr(cls, name, wrap(cls.__dict__[name]))
        yield trace
    finally:
        for cls, name, original in reversed(originals):
            setattr(cls, name, original)


def expected_step_count(scheduler_class: type, config, steps: int) -> int:
    """How many ``step`` calls a correct run of ``steps`` inference steps makes (PNDM makes steps + 1)."""
    reference = scheduler_class.from_config(config)
    reference.set_timesteps(steps)
    return len(reference.timesteps)


def run_images(module, pipe, height: int, width: int, prompts=GATE_PROMPTS, seeds=GATE_SEEDS):
    return module.generate(pipe, list(prompts), make_generators(seeds), height=height, width=width)


def reference_images(catalog: Catalog, task: Task, model_path: str, device: str, dtype, height: int, width: int):
    """The baseline program's images for the task's setting on this model (what the no-op check compares to)."""
    module = programs.load_module(programs.render(catalog, task, "baseline").source, "accelbench_gate_baseline")
    seed_global(0)
    pipe = module.load(model_path, device, dtype)
    return np.asarray(run_images(module, pipe, height, width))


def check_program(source: str, task: Task, catalog: Catalog, model_path: str | Path, *, height: int, width: int,
                  variant: str = "gt", device: str = "cpu", dtype=None, reference=None) -> Verdict:
    """Run program ``source`` for ``task`` on the model at ``model_path`` and return the verdict.

    ``reference``: the baseline's images for this setting and model if already computed (else computed
    here when needed). ``variant="baseline"`` checks a baseline program (no no-op check)."""
    import torch

    dtype = dtype or torch.float32
    programs.quiet_library_output()
    verdict = Verdict(task_id=task.id, variant=variant, model_path=str(model_path),
                      program_sha256=programs.Program(variant, task.id, source).sha256)
    scheduler = catalog.schedulers[task.scheduler]
    try:
        module = programs.load_module(source, "accelbench_gate_program")
    except Exception as error:  # anything a foreign program raises is a verdict, not a crash
        verdict.checks.append(Check("contract", False, "load() and generate()", "not loadable", programs.describe_error(error)))
        return verdict
    verdict.checks.append(Check("contract", True, "load() and generate()", "present"))

    try:
        seed_global(0)
        pipe = module.load(str(model_path), device, dtype)
        _check_scheduler(verdict, pipe, scheduler)
        with trace_scheduler_calls() as trace:
            images = run_images(module, pipe, height, width)
        _check_steps(verdict, trace, pipe, task, scheduler)
        if not _check_output(verdict, images, len(GATE_PROMPTS), height, width):
            return verdict
        verdict.images = images
        repeat = run_images(module, pipe, height, width)
        same = isinstance(repeat, np.ndarray) and repeat.shape == images.shape and np.array_equal(repeat, images)
        verdict.checks.append(Check("repeatable", same, "bit-identical rerun",
                                    "identical" if same else f"max |diff| {_max_diff(repeat, images)}"))
        del pipe, module
        if variant != "baseline" and task.method != "none":
            if reference is None:
                reference = reference_images(catalog, task, str(model_path), device, dtype, height, width)
            difference = float(np.abs(images.astype(np.float64) - reference).max())
            verdict.checks.append(Check("not-a-no-op", difference > NO_OP_TOLERANCE,
                                        f"differs from baseline (> {NO_OP_TOLERANCE:g})", f"max |diff| {difference:.3g}",
                                        "" if difference > NO_OP_TOLERANCE else "the acceleration had no effect"))
    except Exception as error:
        verdict.error = programs.describe_error(error)
    return verdict


def _check_scheduler(verdict: Verdict, pipe, scheduler) -> None:
    actual = getattr(pipe, "scheduler", None)
    observed = type(actual).__name__
    verdict.checks.append(Check("scheduler", observed == scheduler.class_name, scheduler.class_name, observed))
    config = dict(getattr(actual, "config", {}) or {})
    wrong = {key: config.get(key) for key, value in scheduler.config.items() if config.get(key) != value}
    if scheduler.config:
        verdict.checks.append(Check("scheduler-config", not wrong, scheduler.config,
                                    wrong or "as expected", "" if not wrong else "config entries differ"))


def _check_steps(verdict: Verdict, trace: StepTrace, pipe, task: Task, scheduler) -> None:
    scheduler_class = _scheduler_class_named(scheduler.class_name)
    expected = expected_step_count(scheduler_class, pipe.scheduler.config, task.steps)
    classes = sorted(set(trace.steps))
    passed = len(trace.steps) == expected and classes == [scheduler.class_name]
    detail = f"set_timesteps({', '.join(map(str, trace.set_timesteps)) or 'never called'})"
    if classes and classes != [scheduler.class_name]:
        detail += f"; step() ran on {', '.join(classes)}"
    verdict.checks.append(Check("steps", passed, f"{expected} step() calls", f"{len(trace.steps)}", detail))
    asked = [value for value in trace.set_timesteps if value is not None]
    verdict.checks.append(Check("num-steps", asked == [task.steps], f"set_timesteps({task.steps})",
                                f"set_timesteps({', '.join(map(str, asked)) or '-'})"))


def _check_output(verdict: Verdict, images, count: int, height: int, width: int) -> bool:
    shape = getattr(images, "shape", None)
    expected = (count, height, width, 3)
    ok = isinstance(images, np.ndarray) and images.dtype.kind == "f" and tuple(shape) == expected
    observed = f"{type(images).__name__} {tuple(shape) if shape is not None else ''} {getattr(images, 'dtype', '')}"
    verdict.checks.append(Check("output", ok, f"float ndarray {expected}", observed.strip()))
    if not ok:
        return False
    finite = bool(np.isfinite(images).all())
    in_range = finite and float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    verdict.checks.append(Check("finite", finite and in_range, "finite, in [0, 1]",
                                "ok" if in_range else ("NaN/inf pixels" if not finite else
                                                       f"range [{images.min():.3g}, {images.max():.3g}]")))
    return finite and in_range


def _scheduler_class_named(name: str) -> type:
    import diffusers

    return getattr(diffusers, name)


def _max_diff(a, b) -> str:
    try:
        return f"{float(np.abs(np.asarray(a, dtype=np.float64) - b).max()):.3g}"
    except (TypeError, ValueError):
        return "incomparable"

