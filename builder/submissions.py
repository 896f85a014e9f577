"""Submissions (folders of programs written for the tasks) and the task pack that agents write them from.

A submission is a folder of programs named ``<task_id>.py``, plus an optional ``submission.yaml``::

    name: my-agent-v1        # default: the folder's name; [A-Za-z0-9._-]+, not 'baseline' or 'gt'
    author: Jane Doe
    model: some-llm-2026-10  # the agent or model that wrote the programs
    date: 2026-11-29
    notes: free text

Each program follows the contract in :mod:`accelbench.builder.programs` and runs as the variant ``sub:<name>``.
A task of the selected suite with no file gives rows with status ``missing``. No torch here.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from accelbench import schema
from accelbench.builder import programs
from accelbench.builder.programs import Program
from accelbench.errors import UserInputError
from accelbench.manifest import Catalog, Suite, Task, did_you_mean

NAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]+$")
INFO_FILE = "submission.yaml"
INFO_KEYS = ("name", "author", "model", "date", "notes")
RESERVED_NAMES = (schema.BASELINE, schema.GT)


class SubmissionError(UserInputError):
    """A submission folder that cannot be run, as one line."""


@dataclass(frozen=True)
class Submission:
    name: str
    folder: Path
    info: dict[str, str]  # submission.yaml, as given (name included)
    programs: dict[str, Program] = field(default_factory=dict)  # task id -> program


def load_submission(folder: Path, suite: Suite) -> Submission:
    """Read and check one submission folder against the tasks of ``suite``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SubmissionError(f"--submission {folder}: no such folder")
    info = _read_info(folder)
    name = info.get("name", folder.resolve().name)
    if not NAME_PATTERN.match(name) or name in RESERVED_NAMES:
        raise SubmissionError(f"{folder}: submission name {name!r} must match [A-Za-z0-9._-]+ and not be "
                              f"{' or '.join(RESERVED_NAMES)} (set `name:` in {INFO_FILE})")
    files = sorted(folder.glob("*.py"))
    if not files:
        raise SubmissionError(f"{folder}: no programs (<task_id>.py files) in this submission folder")
    found = {}
    for path in files:
        task_id = path.stem
        if task_id not in suite.tasks:
            raise SubmissionError(f"{path}: {task_id!r} is not a task of suite {suite.id!r}"
                                  f"{did_you_mean(task_id, suite.tasks)}")
        found[task_id] = Program(programs.read_program(path), origin=str(path))
    return Submission(name, folder, info, found)


def load_submissions(folders, suite: Suite) -> list[Submission]:
    submissions = [load_submission(folder, suite) for folder in folders]
    seen: dict[str, Path] = {}
    for submission in submissions:
        if submission.name in seen:
            raise SubmissionError(f"two submissions are named {submission.name!r} ({seen[submission.name]} and "
                                  f"{submission.folder}); give one another `name:` in {INFO_FILE}")
        seen[submission.name] = submission.folder
    return submissions


def _read_info(folder: Path) -> dict[str, str]:
    path = folder / INFO_FILE
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise SubmissionError(f"{path}: not readable YAML ({str(error).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SubmissionError(f"{path}: expected a mapping of {', '.join(INFO_KEYS)}")
    for key, value in data.items():
        if key not in INFO_KEYS:
            raise SubmissionError(f"{path}: unknown key {key!r}{did_you_mean(key, INFO_KEYS)}; allowed: "
                                  f"{', '.join(INFO_KEYS)}")
        if not isinstance(value, (str, int, float, datetime.date)) or isinstance(value, bool):  # YAML reads dates
            raise SubmissionError(f"{path}: {key} must be text, got {type(value).__name__}")
    return {key: str(value) for key, value in data.items()}


# ---------------------------------------------------------------------------------------------------------
# The task pack: what an agent is given
# ---------------------------------------------------------------------------------------------------------

TASKS_JSONL = "tasks.jsonl"
TASK_MD = "TASK.md"
BASELINE_PY = "baseline.py"
PACK_README = "README.md"


def task_record(catalog: Catalog, task: Task) -> dict:
    """The hardware-neutral facts of a task, as an agent gets them."""
    model = catalog.models[task.model]
    return {"id": task.id, "text": task.text, "model": task.model, "model_name": model.name,
            "hub_id": model.hub_id, "pipeline": model.pipeline, "scheduler": task.scheduler, "steps": task.steps,
            "method": task.method, "params": dict(task.params), "resolution": model.resolution,
            "guidance_scale": model.guidance_scale}


def write_task_pack(catalog: Catalog, suite: Suite, tasks: list[Task], out: Path) -> list[Path]:
    """Write the task pack into ``out`` (new or empty): README.md, tasks.jsonl, <task>/TASK.md, <task>/baseline.py.

    The GT programs are not part of it."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SubmissionError(f"--out {out}: exists and is not an empty folder")
    written = []

    def write(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)

    write(out / PACK_README, pack_readme(suite, tasks))
    write(out / TASKS_JSONL, "".join(json.dumps(task_record(catalog, task), ensure_ascii=False) + "\n"
                                     for task in tasks))
    for task in tasks:
        record = task_record(catalog, task)
        params = ", ".join(f"`{name}={value!r}`" for name, value in task.params.items()) or "none"
        write(out / task.id / TASK_MD, f"# {task.id}\n\n{task.text}\n\n"
                                       f"- model: {record['model_name']} (`{record['hub_id']}`, "
                                       f"`{record['pipeline']}`)\n"
                                       f"- sampler: {task.scheduler}, {task.steps} steps\n"
                                       f"- method: {task.method}; parameters: {params}\n"
                                       f"- default resolution: {record['resolution']}², guidance scale "
                                       f"{record['guidance_scale']}\n\n"
                                       f"Write `{task.id}.py` (see ../README.md for the contract). `{BASELINE_PY}` "
                                       f"beside this file is the same setting without acceleration.\n")
        write(out / task.id / BASELINE_PY, programs.render(catalog, task, baseline=True).source)
    return written


def pack_readme(suite: Suite, tasks: list[Task]) -> str:
    return f"""# accelbench task pack: suite `{suite.id}` ({len(tasks)} tasks)

Each folder holds one task: `TASK.md` (the request) and `baseline.py` (the same model, sampler and steps
without acceleration, as reference code). `tasks.jsonl` lists every task with its fields.

## What to hand in
A folder with one program per task you solve, named `<task_id>.py`, and optionally `submission.yaml`
(`name`, `author`, `model`, `date`, `notes`). A task without a file counts as failed.

## The program contract (version {programs.CONTRACT_VERSION})
```python
MODEL_ID = "..."   # Hub id; the harness passes a local folder instead

def load(model_id=MODEL_ID, device="cuda", dtype=torch.float16):
    \"\"\"Build the pipeline, set the task's sampler, move it to `device`, apply the method. Return `pipe`.\"\"\"

def generate(pipe, prompts, generators, height=HEIGHT, width=WIDTH):
    \"\"\"One image per prompt, image i drawn from generators[i] (a torch.Generator); return a float
    numpy array [N, H, W, 3] in [0, 1] (what diffusers returns with output_type="np").\"\"\"
```

## How programs are checked, timed and scored
- Every program runs in a worker process of its own, in a fresh temporary folder, offline
  (`HF_HUB_OFFLINE=1`), with only the model folder, the prompts and the seeds of each call passed in.
- **Reproducible.** The same inputs must give bit-identical images on every call: a library with random state
  of its own must be reseeded inside `generate()` (tomesd keeps its merge-pattern generator in
  `pipe.unet._tome_info["args"]["generator"]`).
- **Correctness first.** A program must compute what the task asks: the sampler, the number of steps, the
  guidance, the resolution and the method's parameters are checked against the ground-truth program's
  execution trace, and its images against the ground truth's images on the same inputs. A program that
  fails is not timed (rows `rejected`).
- **Timing** is measured by the harness, from sending a batch to receiving its images, with the programs of
  one (model, sampler, steps) setting taking turns with the baseline on the same GPU. Prompts and seeds are
  chosen by the harness at run time and may be secret; they never repeat within one worker.
- **Scores:** speedup over the baseline, CLIP score and quality loss, fidelity to the baseline's and the
  ground truth's images; a task counts as solved when it is correct and faster (fast_p).

## Forbidden
Changing the sampler, steps, guidance, resolution or method parameters the task names; caching or reusing
images or latents across calls; detecting the checker; patching timers, `torch`, or the harness; reading
or writing files outside the worker's temporary folder; network access; starting processes or threads that
outlive a call. Such programs are rejected or flagged; time limits, output caps and the process boundary are
enforced by the harness.
"""
