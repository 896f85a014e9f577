"""The correctness gate (v2): judge a program by what it computed, compared with the task's GT program.

A candidate program runs in a worker process of its own (:mod:`accelbench.builder.worker`), never in the
harness's, loaded under the same module name as in ``generate`` (:data:`PROGRAM_MODULE`). The task's GT program
(the baseline program for a baseline check) runs on the same model and inputs in another worker, and so does the
baseline program for the not-a-no-op check. Every traced call records an execution trace
(:mod:`accelbench.builder.trace`).

Inputs the program cannot prepare for: each :class:`Gate` draws three prompts from :data:`PROMPT_POOL` and three
63-bit image seeds at random (``seed`` makes the draw reproducible; the verdict records it) and calls
``generate()`` four times:

1. prompts ``[p0, p1]`` with seeds ``[s0, s1]``, traced;
2. prompts ``[p2, p1, p0]`` with seeds ``[s2, s1, s0]``, traced: new inputs, another batch size, and the first
   call's images at other positions;
3. call 1's inputs again, traced (a program that memoises its outputs shows an empty trace);
4. call 2's inputs again, *untraced*: a program that behaves only while it sees the tracer's hooks changes its
   pixels here.

The GT program runs calls 1 and 2 (traced); the baseline program call 1.

Checks, in order (a check that cannot run because an earlier one stopped the program is left out):

``contract``     the file parses and defines ``load`` and ``generate`` at top level (read with ``ast``; the
                 harness never executes the program);
``load``         ``load()`` returns within the time limit in the worker;
``output``       every call returns a float array ``[N, H, W, 3]`` of the requested size without raising,
                 crashing or timing out (the worker checks, then quantises to the uint8 pixels the dataset stores);
``finite``       no NaN/inf pixel values;
``spec``         the trace of every call matches the GT's trace for the same inputs
                 (:func:`~accelbench.builder.trace.compare_traces`: sampler class, config and step arguments, the
                 schedule, every denoiser call's timestep, latent shape, guidance batch, which blocks ran, attention
                 lengths and computed/reused pattern, decoded latents); the reason is the first difference;
``fidelity``     the uint8 images of calls 1 and 2 are within :func:`tolerance` of the GT's: as close as the GT's
                 own numerics allow;
``independent``  image i depends only on (prompt i, generator i): call 2's images of call 1's inputs, rendered
                 at other positions in a larger batch, match call 1's within the same tolerance;
``repeatable``   call 3 is bit-identical to call 1 and call 4 to call 2;
``not-a-no-op``  (accelerated tasks) the images differ from the baseline program's on the same inputs, and the
                 trace differs from the baseline's: the method changed the computation;
``plausible``    advisory, never fails the verdict: a static scan (``ast``) flags programs that import
                 accelbench, patch attributes of torch/time/builtins/diffusers, start threads or processes,
                 open files outside their folder, or look at the tracer's hooks.

Tolerances, in uint8 levels (0-255), both bounds must hold. Calibrated with ``bench/gate_calibration.py`` on the
tiny models, CPU, float32: each program against itself at batch 3 instead of 2 with its images at other
positions, and with 1 torch thread instead of 2, one or two random draws; 73 programs (every smoke program and
setting; standard programs covering every family, method and sampler), ``bench/results/gate_calibration.json``:

- measured: max |diff| 1 level, mean |diff| <= 0.0009 -> :data:`CPU_FP32`: max 3, mean 0.05;
- ToMe with ``use_rand``: tomesd's merge pattern comes from a generator the task does not fix, so any honest
  seeding of it is allowed; another seed moved the images by up to 11 levels, mean 1.31 ->
  :data:`TOME_RANDOM_PATTERN`: max 48, mean 4;
- any other device or dtype (GPU, half precision; not calibrated): :data:`UNCALIBRATED`, max 24, mean 1.5;
- and every gate widens its tolerance to twice the GT's own spread (its images of call 1's inputs at other
  positions of call 2) where that is larger: numerics the calibration did not see (another model or device).

Calibration found the synthetic SDXL models chaotic under DDIM (a 1e-6 change of the initial noise moved images
by up to 239 levels): their scheduler config lacked the Hub's ``clip_sample: false`` (and ``set_alpha_to_one``,
``skip_prk_steps``), now in ``synthetic.py``.

:meth:`Gate.check` with ``stop_early=True`` stops calling a program at its first failed check (cheaper; the
rejection is as certain). The GT's and baseline's results are cached per (program, model, device, dtype, inputs)
in :data:`REFERENCES`, so one :class:`Gate` judges many candidates at the cost of the candidates alone.

The verdict (:class:`Verdict`) is structured and JSON-able: checks with name, pass, expected, observed and a
one-line reason, the random inputs, the trace digests, and timings.
"""

from __future__ import annotations

import ast
import concurrent.futures
import hashlib
import random
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from accelbench import schema
from accelbench.errors import RunError
from accelbench.builder import programs
from accelbench.builder.trace import PROGRAM_MODULE, compare_traces, trace_digest
from accelbench.manifest import Catalog, Task

__all__ = ["Gate", "Verdict", "Check", "check_program", "tolerance", "scan_program", "PROGRAM_MODULE",
           "PROMPT_POOL", "GateError"]

# Prompts the gate draws its inputs from, at random per run: varied subjects, styles and lengths.
PROMPT_POOL = (
    "a photograph of an astronaut riding a horse",
    "a bowl of fruit on a kitchen table",
    "a red cube on top of a blue sphere",
    "portrait of an old fisherman, oil painting",
    "a city skyline at night with neon lights reflected in the rain",
    "a watercolor painting of a fox in a snowy forest",
    "two cats sleeping on a sofa",
    "a cozy cabin in the mountains at sunset",
    "an isometric illustration of a tiny island with a lighthouse",
    "a close-up photo of a dew drop on a green leaf",
    "a steam train crossing a stone bridge",
    "a bustling market street in the morning, cinematic lighting",
    "a child drawing of a happy sun and a house",
    "a futuristic car parked in front of a glass building",
    "a plate of spaghetti with tomato sauce and basil",
    "an elephant walking across the desert",
    "a sailboat on a calm lake, long exposure",
    "a medieval knight in shining armor, digital art",
    "a cup of coffee next to an open book",
    "a colorful hot air balloon over green fields",
    "black and white photo of a jazz musician playing the saxophone",
    "a robot watering plants in a greenhouse",
    "a bird perched on a branch in spring",
    "an abstract painting of blue and orange shapes",
    "a snowy street with old houses at dusk",
    "a dog wearing sunglasses on a beach",
    "the interior of a library with tall wooden shelves",
    "a bicycle leaning against a yellow wall",
    "a mountain lake surrounded by pine trees, high resolution",
    "a pixel art castle",
    "a bowl of ramen, studio lighting",
    "a tiger resting in tall grass",
    "a sketch of a woman reading by the window",
    "a small boat in a storm at sea",
    "a field of sunflowers under a cloudy sky",
    "a vintage poster of a rocket launch",
)


@dataclass(frozen=True)
class Tolerance:
    """How far (uint8 levels) a candidate's images may be from the GT's: both bounds must hold."""

    max_abs: int
    mean_abs: float
    basis: str

    def allows(self, max_abs: int, mean_abs: float) -> bool:
        return max_abs <= self.max_abs and mean_abs <= self.mean_abs

    def __str__(self) -> str:
        return f"max |diff| <= {self.max_abs}, mean <= {self.mean_abs:g} ({self.basis})"


CPU_FP32 = Tolerance(3, 0.05, "CPU float32, calibrated")
TOME_RANDOM_PATTERN = Tolerance(48, 4.0, "ToMe use_rand: merge pattern seeding is free, calibrated")
UNCALIBRATED = Tolerance(24, 1.5, "not calibrated for this device/dtype")


def tolerance(task: Task, device: str, dtype: str, variant: str = schema.GT) -> Tolerance:
    """The image tolerance for ``task`` (its GT, or its baseline for ``variant="baseline"``) on device/dtype."""
    base = CPU_FP32 if device == "cpu" and dtype == "float32" else UNCALIBRATED
    if variant != schema.BASELINE and task.method == "tome" and task.params.get("use_rand"):
        return Tolerance(max(base.max_abs, TOME_RANDOM_PATTERN.max_abs),
                         max(base.mean_abs, TOME_RANDOM_PATTERN.mean_abs), TOME_RANDOM_PATTERN.basis)
    return base


class GateError(RunError):
    """The gate itself cannot judge: the GT or baseline program failed on this model and device (a wrong
    ``--model``, a broken environment). Not a verdict on the candidate; the CLI reports it as one line, exit 1."""


@dataclass
class Check:
    name: str
    passed: bool
    expected: Any = None
    observed: Any = None
    reason: str = ""  # one line; why it failed (or what passed)
    advisory: bool = False  # advisory checks never fail the verdict


@dataclass
class Verdict:
    task_id: str
    variant: str
    program_sha256: str
    model_path: str
    device: str
    dtype: str
    inputs: dict = field(default_factory=dict)  # {"seed": ..., "calls": [{"prompts": [...], "seeds": [...]}, ...]}
    checks: list[Check] = field(default_factory=list)
    trace_digest: str | None = None  # the candidate's first call
    gt_trace_digest: str | None = None
    seconds: dict = field(default_factory=dict)
    trace: dict | None = field(default=None, repr=False)  # the candidate's first-call trace (not in to_dict)

    @property
    def passed(self) -> bool:
        required = [check for check in self.checks if not check.advisory]
        return bool(required) and all(check.passed for check in required)

    def failed_checks(self) -> list[str]:
        return [check.name for check in self.checks if not check.passed and not check.advisory]

    def check(self, name: str) -> Check | None:
        return next((check for check in self.checks if check.name == name), None)

    def first_failure(self) -> Check | None:
        return next((check for check in self.checks if not check.passed and not check.advisory), None)

    @property
    def reason(self) -> str:
        """One line: the first failed check and why (e.g. the first trace difference); empty if it passed."""
        failure = self.first_failure()
        return f"{failure.name}: {failure.reason}" if failure else ""

    @property
    def advisories(self) -> list[str]:
        """The static scan's findings, which never fail a program."""
        check = self.check("plausible")
        return list(check.observed) if check is not None and isinstance(check.observed, list) else []

    def to_dict(self) -> dict[str, Any]:
        data = {"passed": self.passed, "failed_checks": self.failed_checks(), "reason": self.reason,
                "advisories": self.advisories, **{k: v for k, v in asdict(self).items() if k != "trace"}}
        return _jsonable(data)

    def format(self) -> str:
        lines = [f"{'PASS' if self.passed else 'FAIL'}  {self.task_id} ({self.variant}), program "
                 f"{self.program_sha256[:12]}, {self.device} {self.dtype}, inputs seed {self.inputs.get('seed')}"]
        for check in self.checks:
            mark = ("ok  " if check.passed else "FAIL") if not check.advisory else ("ok  " if check.passed else "warn")
            text = check.reason or f"{check.observed}"
            lines.append(f"  {mark} {check.name:<12} {text}")
        return "\n".join(lines)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    return value


# ---------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    traced: bool = True
    reference: int | None = None  # the GT call whose trace this call's must match
    compare_gt: bool = False  # whether the images are compared with the GT's for the same call
    repeats: int | None = None  # the earlier call with the same inputs (bit-identical pixels expected)


def draw_inputs(seed: int) -> list[Call]:
    """The four calls of one gate run (see the module docstring), drawn from ``seed``."""
    rng = random.Random(f"accelbench-gate:{seed}")
    p = rng.sample(PROMPT_POOL, 3)
    s = [rng.getrandbits(63) for _ in range(3)]
    first, second = ((p[0], p[1]), (s[0], s[1])), ((p[2], p[1], p[0]), (s[2], s[1], s[0]))
    return [Call(*first, reference=0, compare_gt=True),
            Call(*second, reference=1, compare_gt=True),
            Call(*first, reference=0, repeats=0),
            Call(*second, traced=False, repeats=1)]


_REFERENCE_CALLS = (0, 1)  # the calls the GT and baseline programs run
# Positions of call 1's images inside call 2: (index in call 1, index in call 2).
_PERMUTED = ((0, 2), (1, 1))


# ---------------------------------------------------------------------------------------------------------
# Static checks
# ---------------------------------------------------------------------------------------------------------


def contract_problem(source: str) -> str | None:
    """Why ``source`` cannot be a program (syntax error, no load/generate at top level), or None."""
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        return f"SyntaxError: {error.msg} (line {error.lineno})"
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
    missing = [name for name in programs.REQUIRED_FUNCTIONS if name not in defined]
    if missing:
        return (f"program defines no {' or '.join(f'{m}()' for m in missing)} (contract v{programs.CONTRACT_VERSION} "
                f"needs load(model_id, device, dtype) and generate(pipe, prompts, generators, height, width))")
    return None


_PROTECTED_MODULES = {"torch", "time", "builtins", "diffusers", "numpy", "random", "PIL", "transformers",
                      "accelerate", "DeepCache", "tomesd", "tgate", "os", "sys", "gc"}
_PROCESS_MODULES = {"threading", "multiprocessing", "subprocess", "concurrent", "_thread", "asyncio"}
_PROCESS_CALLS = {"fork", "forkpty", "system", "popen", "spawnl", "spawnv", "spawnlp", "spawnvp", "execv",
                  "execve", "execl", "execlp", "execvp", "posix_spawn", "kill", "killpg"}
_INTROSPECTION = {"_forward_pre_hooks", "_forward_hooks", "_forward_hooks_with_kwargs", "_global_forward_hooks",
                  "_global_forward_pre_hooks", "__wrapped__", "_getframe", "get_objects", "get_referrers",
                  "settrace", "setprofile", "stack", "currentframe"}
_FILE_CALLS = {"open", "Path", "PurePath", "listdir", "scandir", "walk", "remove", "unlink", "rmtree", "glob",
               "iglob", "makedirs", "mkdir", "rename", "replace", "copy", "copyfile", "chdir"}


def scan_program(source: str) -> list[str]:
    """Advisory findings of a static scan of ``source`` (one line each); empty when nothing looks off."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    findings: list[str] = []
    protected: dict[str, str] = {}  # local name -> module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root == "accelbench":
                    findings.append(f"line {node.lineno}: imports accelbench (the harness)")
                if root in _PROCESS_MODULES:
                    findings.append(f"line {node.lineno}: imports {alias.name} (threads or processes)")
                if root in _PROTECTED_MODULES:
                    protected[(alias.asname or alias.name).split(".")[0]] = root
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root == "accelbench":
                findings.append(f"line {node.lineno}: imports from accelbench (the harness)")
            if root in _PROCESS_MODULES:
                findings.append(f"line {node.lineno}: imports from {node.module} (threads or processes)")
            if root in _PROTECTED_MODULES:
                for alias in node.names:
                    protected[alias.asname or alias.name] = root
    protected.setdefault("__builtins__", "builtins")

    def root_name(expr) -> str | None:
        while isinstance(expr, (ast.Attribute, ast.Subscript)):
            expr = expr.value
        return expr.id if isinstance(expr, ast.Name) else None

    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        for target in targets:
            if isinstance(target, (ast.Attribute, ast.Subscript)):
                name = root_name(target)
                if name in protected:
                    findings.append(f"line {node.lineno}: patches {ast.unparse(target)} ({protected[name]})")
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called in ("setattr", "delattr") and node.args:
                name = root_name(node.args[0])
                if name in protected:
                    findings.append(f"line {node.lineno}: {called}() on {ast.unparse(node.args[0])} "
                                    f"({protected[name]})")
            if called in _PROCESS_CALLS and isinstance(func, ast.Attribute) and root_name(func) in ("os", "pty"):
                findings.append(f"line {node.lineno}: calls {ast.unparse(func)} (processes)")
            if called in _FILE_CALLS:
                for arg in node.args[:1]:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        path = arg.value
                        if path.startswith(("/", "~")) or ".." in Path(path).parts:
                            findings.append(f"line {node.lineno}: {called}({path!r}) outside the program's folder")
        if isinstance(node, ast.Attribute) and node.attr in _INTROSPECTION:
            findings.append(f"line {node.lineno}: reads {ast.unparse(node)} (the harness's hooks or frames)")
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides):
                others = [s for s in sides if not (isinstance(s, ast.Name) and s.id == "__name__")]
                if not all(isinstance(s, ast.Constant) and s.value == "__main__" for s in others):
                    findings.append(f"line {node.lineno}: behaves according to its module name")
    return sorted(set(findings), key=lambda f: (int(f.split(":")[0].split()[1]), f))


# ---------------------------------------------------------------------------------------------------------
# Running programs
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Result:
    """One call's outcome: pixels and trace, or the failure."""

    pixels: np.ndarray | None = None
    trace: dict | None = None
    failure: Any = None  # WorkerFailure
    latency_s: float | None = None


class _References:
    """Results of trusted programs (GT, baseline) per (program, model, device, dtype, threads, size, inputs):
    shared across gates, computed once."""

    def __init__(self):
        self._results: dict[tuple, dict[int, Result]] = {}
        self._locks: dict[tuple, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, key) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def get(self, key) -> dict[int, Result]:
        with self._guard:
            return self._results.setdefault(key, {})


REFERENCES = _References()  # process-wide: a long-lived harness (or a test session) reuses the GT's results


def _describe_failure(failure) -> str:
    return f"{getattr(failure, 'status', 'error')}: {getattr(failure, 'reason', failure)}"


class Gate:
    """The gate for one task: draws its inputs once, runs (and caches) the GT and baseline programs' results on
    them, and judges any number of candidate programs with :meth:`check`.

    ``variant="baseline"`` judges a baseline program of the task's setting: the reference is the baseline
    program and there is no not-a-no-op check."""

    def __init__(self, catalog: Catalog, task: Task, *, variant: str = schema.GT, model_path: str | Path | None = None,
                 device: str = "cpu", dtype: str | None = None, resolution: int | None = None, seed: int | None = None,
                 threads: int | None = None, load_timeout: float = 600.0, call_timeout: float = 600.0,
                 references: _References | None = None):
        from accelbench.builder import synthetic

        if variant not in (schema.GT, schema.BASELINE):
            raise ValueError(f"variant must be {schema.GT!r} or {schema.BASELINE!r}, not {variant!r}")
        self.catalog, self.task, self.variant = catalog, task, variant
        if model_path is None:
            model_path = synthetic.materialize(task.model, "tiny")
            resolution = resolution or synthetic.tiny_resolution(task.model)
        self.model_path = str(model_path)
        self.resolution = resolution or catalog.models[task.model].resolution
        self.device = device
        self.dtype = dtype or ("float32" if device == "cpu" else catalog.models[task.model].dtype)
        # One torch thread per worker on the CPU: the reference programs run alongside the candidate, and every
        # worker computes the same way (the not-a-no-op check compares pixels bit for bit).
        self.threads = threads if threads is not None else (1 if device == "cpu" else None)
        self.seed = secrets.randbits(32) if seed is None else int(seed)
        self.calls = draw_inputs(self.seed)
        self.load_timeout, self.call_timeout = load_timeout, call_timeout
        self.references = references or REFERENCES
        self.baseline_source = programs.render(catalog, task, baseline=True).source
        self.gt_source = self.baseline_source if variant == schema.BASELINE else programs.render(catalog, task).source
        self.accelerated = variant == schema.GT and task.method != "none"
        self.tolerance = tolerance(task, device, self.dtype, variant)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="gate-reference")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    @property
    def inputs(self) -> dict:
        return {"seed": self.seed, "calls": [{"prompts": list(c.prompts), "seeds": list(c.seeds),
                                              "traced": c.traced} for c in self.calls]}

    # -- workers -------------------------------------------------------------------------------------------

    def _worker(self, source: str, name: str, log_path: Path | None = None):
        from accelbench.builder import worker

        return worker.ProgramWorker(source, model_path=self.model_path, device=self.device, dtype=self.dtype,
                                    log_path=log_path, name=name, load_timeout=self.load_timeout,
                                    threads=self.threads, max_images=max(len(c.prompts) for c in self.calls),
                                    max_resolution=self.resolution)

    def _key(self, source: str) -> tuple:
        return (hashlib.sha256(source.encode()).hexdigest(), self.model_path, self.device, self.dtype, self.threads,
                self.resolution, self.seed)

    def _reference(self, source: str, name: str, indices) -> dict[int, Result]:
        """A trusted program's (traced) results for calls ``indices``: from the cache, or computed now."""
        from accelbench.builder.worker import WorkerFailure

        key = self._key(source)
        with self.references.lock(key):
            cached = self.references.get(key)
            missing = [i for i in indices if i not in cached]
            if missing:
                with self._worker(source, name) as process:
                    for index in missing:
                        call = self.calls[index]
                        try:
                            reply = process.generate(list(call.prompts), list(call.seeds), self.resolution,
                                                     self.resolution, timeout=self.call_timeout, trace=True)
                        except WorkerFailure as failure:
                            raise GateError(f"the {name} program failed on call {index + 1}: "
                                            f"{_describe_failure(failure)}") from None
                        cached[index] = Result(reply.pixels, reply.trace, latency_s=reply.latency_s)
            return {i: cached[i] for i in indices}

    def _remember(self, source: str, results: dict[int, Result]) -> None:
        """The candidate *is* a trusted program: its results are the reference's (same source, same inputs)."""
        key = self._key(source)
        with self.references.lock(key):
            cached = self.references.get(key)
            for index in _REFERENCE_CALLS:
                result = results.get(index)
                if result is not None and index not in cached:
                    cached[index] = result

    def _submit_references(self, skip: str | None = None) -> dict:
        from accelbench.builder import worker

        worker.forkserver_context()  # start the forkserver from this thread, before the pool's threads start workers
        futures = {}
        if self.gt_source != skip:
            futures["gt"] = self._pool.submit(self._reference, self.gt_source, self.variant, _REFERENCE_CALLS)
        if self.accelerated and self.baseline_source != skip:
            futures["baseline"] = self._pool.submit(self._reference, self.baseline_source, schema.BASELINE, (0,))
        return futures

    def prepare(self) -> None:
        """Compute the reference results now (else the first :meth:`check` does, alongside the candidate)."""
        for future in self._submit_references().values():
            future.result()

    # -- judging -------------------------------------------------------------------------------------------

    def check(self, source: str, *, log_path: Path | None = None, stop_early: bool = False) -> Verdict:
        """Run the candidate program ``source`` and return its verdict.

        ``stop_early``: stop calling the program once a check has failed (the verdict then holds the checks
        that could be judged; a rejection is as certain, and cheaper)."""
        from accelbench.builder.worker import WorkerFailure

        started = time.perf_counter()
        verdict = Verdict(task_id=self.task.id, variant=self.variant,
                          program_sha256=hashlib.sha256(source.encode()).hexdigest(), model_path=self.model_path,
                          device=self.device, dtype=self.dtype, inputs=self.inputs)
        findings = scan_program(source)
        plausible = Check("plausible", not findings, "no suspicious constructs", findings or "none",
                          "; ".join(findings[:3]) + (f" (+{len(findings) - 3} more)" if len(findings) > 3 else "")
                          if findings else "nothing suspicious found by the static scan", advisory=True)
        problem = contract_problem(source)
        verdict.checks.append(Check("contract", problem is None, "load() and generate() defined",
                                    "defined" if problem is None else "missing",
                                    problem or "load() and generate() defined"))
        if problem is not None:
            verdict.checks.append(plausible)
            return verdict

        trusted = source in (self.gt_source, self.baseline_source)
        futures = self._submit_references(skip=source if trusted else None)
        judge = _Judge(self, verdict)
        results: dict[int, Result] = {}
        process = self._worker(source, "candidate", log_path)
        try:
            load_started = time.perf_counter()
            try:
                process.start()
            except WorkerFailure as failure:
                judge.load_failed(failure)
            else:
                judge.loaded(time.perf_counter() - load_started)
                for index, call in enumerate(self.calls):
                    try:
                        reply = process.generate(list(call.prompts), list(call.seeds), self.resolution,
                                                 self.resolution, timeout=self.call_timeout, trace=call.traced)
                    except WorkerFailure as failure:
                        judge.call_failed(index, failure)
                        break
                    results[index] = Result(reply.pixels, reply.trace, latency_s=reply.latency_s)
                    if trusted and index == max(_REFERENCE_CALLS):
                        self._remember(source, results)
                    references = {name: future.result() for name, future in futures.items()}
                    if trusted:
                        own = {i: results[i] for i in _REFERENCE_CALLS if i in results}
                        references.setdefault("gt" if source == self.gt_source else "baseline", own)
                    if not judge.after_call(index, results, references) and stop_early:
                        break
        finally:
            process.close()
            for future in futures.values():  # a reference failure is the gate's problem: raise it
                future.result()
        judge.finish(results)
        verdict.checks.append(plausible)
        verdict.seconds = {"total": round(time.perf_counter() - started, 2),
                           "candidate_calls": [round(r.latency_s, 3) for _, r in sorted(results.items())]}
        return verdict


class _Judge:
    """Builds a verdict's checks call by call (see the module docstring for what each check means)."""

    ORDER = ("contract", "load", "output", "finite", "spec", "fidelity", "independent", "repeatable", "not-a-no-op")

    def __init__(self, gate: Gate, verdict: Verdict):
        self.gate, self.verdict = gate, verdict
        self.checks: dict[str, Check] = {}
        self.calls = gate.calls
        self.n = len(gate.calls)
        self.tol = gate.tolerance
        self.widened = False

    def _where(self, index: int) -> str:
        return f"call {index + 1} of {self.n} ({len(self.calls[index].prompts)} images)"

    def _set(self, check: Check) -> bool:
        """Record ``check`` unless the same check already failed (the first failure is the one reported)."""
        old = self.checks.get(check.name)
        if old is None or old.passed:
            self.checks[check.name] = check
        return check.passed

    def load_failed(self, failure) -> None:
        self._set(Check("load", False, f"load() within {self.gate.load_timeout:g} s", failure.status,
                        _describe_failure(failure)))

    def loaded(self, seconds: float) -> None:
        self._set(Check("load", True, f"load() within {self.gate.load_timeout:g} s", f"{seconds:.1f} s",
                        f"loaded in {seconds:.1f} s"))

    def call_failed(self, index: int, failure) -> None:
        status, reason = failure.status, failure.reason
        if status == schema.STATUS_NONFINITE:
            self._set(Check("finite", False, "finite pixels", status, f"{self._where(index)}: {reason}"))
        else:
            self._set(Check("output", False, self._expected_output(), status,
                            f"{self._where(index)}: {status}: {reason}"))

    def _expected_output(self) -> str:
        size = self.gate.resolution
        return f"float [N, {size}, {size}, 3] from each of {self.n} calls"

    def after_call(self, index: int, results: dict[int, Result], references: dict) -> bool:
        """Judge what call ``index`` adds; False if a check failed."""
        gt, baseline = references.get("gt") or {}, references.get("baseline")
        if not self.widened and 0 in gt and 1 in gt:
            self._widen(gt)
        result = results[index]
        ok = True
        call = self.calls[index]
        if call.traced:
            reference = gt[call.reference].trace
            difference = compare_traces(reference, result.trace)
            ok &= self._set(Check("spec", difference is None, "the GT's execution trace on every traced call",
                                  "same" if difference is None else "differs",
                                  f"{self._where(index)}: {difference}" if difference else
                                  f"same trace as the GT (digest {trace_digest(result.trace)})"))
            if index == 0:
                self.verdict.trace = result.trace
                self.verdict.trace_digest = trace_digest(result.trace)
                self.verdict.gt_trace_digest = trace_digest(reference)
        if call.compare_gt:
            ok &= self._set(self._fidelity(index, result.pixels, gt[index].pixels))
        if call.repeats is not None:
            first = results[call.repeats]
            m, mean = _difference(first.pixels, result.pixels)
            ok &= self._set(Check("repeatable", m == 0, "repeated inputs give bit-identical pixels",
                                  {"max_abs": m, "mean_abs": round(mean, 4)},
                                  f"{self._where(index)} repeats call {call.repeats + 1}"
                                  + ("" if call.traced else " untraced")
                                  + (": bit-identical" if m == 0 else
                                     f": different pixels (max |diff| {m}/255, mean {mean:.3g})")))
        if index == 1:
            ok &= self._set(self._independent(results[0].pixels, result.pixels))
        if index == 0 and baseline is not None:
            ok &= self._set(self._not_a_no_op(result, baseline[0]))
        return bool(ok)

    def _widen(self, gt: dict) -> None:
        """The GT's own spread: its images of call 1's inputs at other positions of call 2's batch. Where that
        exceeds half the tolerance (numerics the calibration did not see: another device, dtype or model), the
        tolerance becomes twice the spread, and says so."""
        self.widened = True
        spreads = [_difference(gt[0].pixels[a], gt[1].pixels[b]) for a, b in _PERMUTED]
        m, mean = max(s[0] for s in spreads), max(s[1] for s in spreads)
        if 2 * m > self.tol.max_abs or 2 * mean > self.tol.mean_abs:
            self.tol = Tolerance(min(255, max(self.tol.max_abs, 2 * m)), max(self.tol.mean_abs, round(2 * mean, 4)),
                                 f"{self.tol.basis}; widened to twice the GT's own spread at another batch position "
                                 f"(max {m}, mean {mean:.3g})")

    def _fidelity(self, index: int, pixels: np.ndarray, reference: np.ndarray) -> Check:
        pairs = [(image, *_difference(a, b)) for image, (a, b) in enumerate(zip(pixels, reference))]
        outside = [p for p in pairs if not self.tol.allows(p[1], p[2])]
        image, m, mean = outside[0] if outside else max(pairs, key=lambda p: (p[1], p[2]))
        reason = (f"{self._where(index)}, image {image + 1}: differs from the GT's by up to {m}/255 (mean "
                  f"{mean:.3g}); allowed {self.tol.max_abs} (mean {self.tol.mean_abs:g})" if outside else
                  f"within {m}/255 of the GT's images (mean {mean:.3g}); allowed {self.tol.max_abs} "
                  f"(mean {self.tol.mean_abs:g})")
        return Check("fidelity", not outside, str(self.tol), {"max_abs": m, "mean_abs": round(mean, 4)}, reason)

    def _independent(self, first: np.ndarray, second: np.ndarray) -> Check:
        pairs = [(a, b, *_difference(first[a], second[b])) for a, b in _PERMUTED]
        a, b, m, mean = max(pairs, key=lambda p: (not self.tol.allows(p[2], p[3]), p[2], p[3]))
        ok = self.tol.allows(m, mean)
        reason = (f"call 1's images match at other positions of a batch of {len(self.calls[1].prompts)} (max "
                  f"|diff| {m}/255)" if ok else
                  f"call 1's image {a + 1} changed by up to {m}/255 (mean {mean:.3g}) at position {b + 1} of a batch "
                  f"of {len(self.calls[1].prompts)} with the same prompt and seed: it depends on the rest of its batch")
        return Check("independent", ok, "image i depends only on (prompt i, generator i)",
                     {"max_abs": m, "mean_abs": round(mean, 4)}, reason)

    def _not_a_no_op(self, result: Result, baseline: Result) -> Check:
        m, mean = _difference(result.pixels, baseline.pixels)
        same_trace = compare_traces(baseline.trace, result.trace) is None
        ok = m > 0 and not same_trace
        if m == 0 and same_trace:
            reason = "computes exactly what the baseline program computes: the acceleration had no effect"
        elif m == 0:
            reason = "its images are the baseline program's, bit for bit"
        elif same_trace:
            reason = "its trace is the baseline program's: the acceleration changed nothing it computed"
        else:
            reason = f"differs from the baseline program (max |diff| {m}/255, mean {mean:.3g}; trace differs)"
        return Check("not-a-no-op", ok, "images and trace differ from the baseline program's",
                     {"max_abs": m, "mean_abs": round(mean, 4), "trace": "same" if same_trace else "differs"}, reason)

    def finish(self, results: dict[int, Result]) -> None:
        complete = len(results) == self.n
        if "load" in self.checks and self.checks["load"].passed:
            if "output" not in self.checks:
                self._set(Check("output", True, self._expected_output(), "ok",
                                f"{len(results)} of {self.n} calls returned images of the requested size"))
            if "finite" not in self.checks and results:
                self._set(Check("finite", True, "finite pixels", "ok", "no NaN/inf"))
        repeatable = self.checks.get("repeatable")
        if complete and repeatable is not None and repeatable.passed:
            repeats = [f"call {i + 1} = call {c.repeats + 1}{'' if c.traced else ' (untraced)'}"
                       for i, c in enumerate(self.calls) if c.repeats is not None]
            repeatable.reason = f"{', '.join(repeats)}: bit-identical"
        if not complete:
            for check in self.checks.values():
                if check.passed and check.name in ("spec", "fidelity", "repeatable", "output", "finite"):
                    check.reason += f" (judged on {len(results)} of {self.n} calls: stopped at a failure)"
        self.verdict.checks.extend(self.checks[name] for name in self.ORDER if name in self.checks)


def _difference(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return int(d.max()), float(d.mean())


def check_program(source: str, task: Task, catalog: Catalog, model_path: str | Path | None = None, *,
                  variant: str = schema.GT, device: str = "cpu", dtype: str | None = None,
                  resolution: int | None = None, seed: int | None = None, log_path: Path | None = None) -> Verdict:
    """Judge one program with a fresh :class:`Gate` (the GT's results are cached for the process)."""
    with Gate(catalog, task, variant=variant, model_path=model_path, device=device, dtype=dtype,
              resolution=resolution, seed=seed) as gate:
        return gate.check(source, log_path=log_path)
