"""The task pack: what an agent is given to write a submission from — README.md (the contract, how programs are
checked, timed and scored, what is forbidden), tasks.jsonl, and per task TASK.md and baseline.py. No GT program is
part of it. No torch here."""

from __future__ import annotations

import json
from pathlib import Path

from accelbench.builder import programs
from accelbench.builder.submissions import SubmissionError
from accelbench.manifest import Catalog, Suite, Task

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
{programs.CONTRACT}```

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
