"""Pipeline programs: the contract, and rendering the baseline and ground-truth (GT) program of every task.

The contract (:data:`CONTRACT`, written once here: the task pack, the README and the error messages quote it):
a pipeline program is one self-contained Python file that defines ``MODEL_ID``, ``load`` and ``generate``, and
can be run by hand: ``python program.py "a prompt" --out image.png [--model PATH] [--device cpu]``.
Programs are not trusted: :mod:`accelbench.builder.gate` runs them and checks what they actually did.

Every value a program uses (steps, sampler, method parameters) comes from the typed manifest fields, never
from the task text, and each method has one readable template in ``builder/templates/<method>.py.tmpl``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import linecache
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from types import ModuleType

from accelbench.errors import UserInputError
from accelbench.manifest import BASELINE_METHOD, SAMPLER_PARAM, SAMPLER_STEPS_PARAM, Catalog, Task

CONTRACT_VERSION = 1
REQUIRED_FUNCTIONS = ("load", "generate")
PROGRAM_MODULE = "accelbench_program"  # every program is loaded under this module name: in generate and in the gate
SIGNATURES = ("load(model_id, device, dtype) -> pipe",
              "generate(pipe, prompts, generators, height, width) -> float array [N, H, W, 3] in [0, 1]")
CONTRACT = '''MODEL_ID = "..."   # Hub id or local folder; the harness passes a local folder

def load(model_id=MODEL_ID, device="cuda", dtype=torch.float16):
    """Build the pipeline, set the task's sampler, move it to `device`, apply the method. Return `pipe`."""

def generate(pipe, prompts, generators, height=HEIGHT, width=WIDTH):
    """One image per prompt, image i drawn from generators[i] (a torch.Generator); return a float
    numpy array [N, H, W, 3] in [0, 1] (what diffusers returns with output_type="np")."""
'''

_HEADER = '''"""accelbench pipeline program (contract v{contract}): {title}.

{request}

{signatures}
Run by hand: python {filename} "a prompt" --out image.png [--model PATH] [--device cpu]
"""

'''


def missing_functions(missing: list[str]) -> str:
    """What a program lacks, in the words of the contract."""
    return (f"program defines no {' or '.join(f'{name}()' for name in missing)} (contract v{CONTRACT_VERSION} needs "
            f"{' and '.join(signature.split(' -> ')[0] for signature in SIGNATURES)})")


@dataclass(frozen=True)
class Program:
    """A program's source and where it came from: ``origin`` is ``template:<name>`` for a rendered baseline or
    GT program, or the path of a submitted file."""

    source: str
    origin: str
    sha256: str = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "sha256", hashlib.sha256(self.source.encode()).hexdigest())


def _template(name: str) -> Template:
    return Template(resources.files("accelbench.builder.templates").joinpath(f"{name}.py.tmpl").read_text())


def _literal(value) -> str:
    """A Python literal, strings in double quotes as in the rest of the program."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _kwargs_inline(kwargs: dict) -> str:
    """``{"a": None}`` -> ``, a=None`` (appended to a call's argument list)."""
    return "".join(f", {name}={_literal(value)}" for name, value in kwargs.items())


def _kwargs_lines(kwargs: dict, indent: str = " " * 8) -> str:
    return "".join(f"\n{indent}{name}={_literal(value)}," for name, value in kwargs.items())


def render(catalog: Catalog, task: Task, baseline: bool = False) -> Program:
    """The GT program of ``task``, or its baseline program, which depends only on (model, scheduler, steps)."""
    model = catalog.models[task.model]
    method = catalog.methods[BASELINE_METHOD if baseline else task.method]
    binding = model.methods[method.id]
    scheduler, steps = catalog.schedulers[task.scheduler], task.steps
    if method.sets_sampler:  # the sampler as a technique: the GT samples with the method's sampler and steps
        scheduler, steps = catalog.schedulers[task.params[SAMPLER_PARAM]], task.params[SAMPLER_STEPS_PARAM]
    values = {
        "pipeline": model.pipeline,
        "denoiser": model.denoiser,
        "scheduler_class": scheduler.class_name,
        "scheduler_kwargs": _kwargs_inline(scheduler.config),
        "hub_id": model.hub_id,
        "dtype": model.dtype,
        "steps": steps,
        "guidance_scale": model.guidance_scale,
        "resolution": model.resolution,
        "load_kwargs": _kwargs_inline(model.load_kwargs),
        "call_kwargs": _kwargs_lines({**model.call_kwargs, **binding.call_kwargs}),
        "loader": binding.loader or "",
        **({} if baseline else {name: _literal(value) for name, value in task.params.items()}),
    }
    if baseline:
        title = f"baseline of {model.name}, {scheduler.name}, {task.steps} steps"
        request, filename = baseline_request(catalog, task), f"{task.setting_id}.baseline.py"
    else:
        title, request, filename = f"ground truth of task {task.id}", task.text, f"{task.id}.gt.py"
    header = _HEADER.format(contract=CONTRACT_VERSION, title=title, request=request, filename=filename,
                            signatures="\n".join(SIGNATURES))
    body = _template(method.template).substitute(values)
    return Program(header + body + _template("_main").template, origin=f"template:{method.template}")


def baseline_request(catalog: Catalog, task: Task) -> str:
    """What the baseline program of a task's setting does, in the words of a task."""
    model, scheduler = catalog.models[task.model], catalog.schedulers[task.scheduler]
    return (f"Generate a {model.name} pipeline using the {scheduler.name} sampler with {task.steps} steps and no "
            f"acceleration.")


def load_module(source: str, name: str) -> ModuleType:
    """Execute program ``source`` as a fresh module (never cached in ``sys.modules``) and check the contract."""
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__file__ = f"<{name}>"
    # Tracebacks then show the program's own lines (linecache serves a file name it cannot open from here).
    linecache.cache[module.__file__] = (len(source), None, source.splitlines(keepends=True), module.__file__)
    code = compile(source, module.__file__, "exec")
    exec(code, module.__dict__)
    missing = [fn for fn in REQUIRED_FUNCTIONS if not callable(getattr(module, fn, None))]
    if missing:
        raise ContractError(missing_functions(missing))
    return module


def read_program(path: Path | str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ContractError(f"cannot read program {path}: {error.strerror or error}") from None


def quiet_library_output() -> None:
    """No per-component loading bars or info logs from diffusers/transformers: each unit loads a pipeline."""
    import diffusers
    import transformers

    for library in (diffusers, transformers):
        library.utils.logging.disable_progress_bar()
        library.utils.logging.set_verbosity_error()


def describe_error(error: BaseException) -> str:
    """One line for an error a program raised: ``Type: first line of the message``."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:500]


TRACEBACK_FRAMES = 6  # the last frames of a program's traceback kept in a verdict and a row's log


def program_traceback(error: BaseException, frames: int = TRACEBACK_FRAMES) -> str:
    """The last ``frames`` frames of ``error``'s traceback, the program's own file shown as ``program.py`` and
    libraries by their path inside site-packages, then the error: what a program's author needs to fix it (and
    what tells a harness bug from the program's)."""
    import traceback

    entries = traceback.extract_tb(error.__traceback__)[-frames:]
    lines = ["Traceback (most recent call last, the last frames):"]
    for entry in entries:
        filename = "program.py" if entry.filename == f"<{PROGRAM_MODULE}>" else _short_path(entry.filename)
        lines.append(f'  File "{filename}", line {entry.lineno}, in {entry.name}')
        if entry.line:
            lines.append(f"    {entry.line.strip()}")
    lines.append(describe_error(error))
    return "\n".join(lines)


def _short_path(filename: str) -> str:
    for marker in ("site-packages/", "dist-packages/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


class ContractError(UserInputError):
    """A program does not follow the pipeline-program contract."""

