"""The task pack: what an agent is given to write a submission from — README.md (the contract, how programs are
checked, timed and scored, what is forbidden), tasks.jsonl, and per task TASK.md and baseline.py. No GT program is
part of it. No torch here."""

from __future__ import annotations

import json
from pathlib import Path

from accelbench.builder import programs
from accelbench.builder.device_quiet import DEFAULT_GRACE_S
from accelbench.builder.gate.tolerance import CPU_FP32, UNCALIBRATED
from accelbench.builder.submissions import SubmissionError
from accelbench.builder.synthetic_configs import TINY_RESOLUTION
from accelbench.builder.worker import DEFAULT_LOAD_TIMEOUT_S, DEFAULT_WARMUP_TIMEOUT_S, LOG_LIMIT_BYTES
from accelbench.manifest import (
    ALWAYS_FIXED,
    FIXABLE,
    GPU_CLASSES,
    LEVELS,
    SAMPLER_PARAM,
    SAMPLER_STEPS_PARAM,
    Catalog,
    Suite,
    Task,
)

TASKS_JSONL = "tasks.jsonl"
TASK_MD = "TASK.md"
BASELINE_PY = "baseline.py"
PACK_README = "README.md"


def task_record(catalog: Catalog, task: Task) -> dict:
    """The hardware-neutral facts of a task, as an agent gets them. A target task's record has its target,
    budget and fixed/free fields instead of a method: its reference program (method, parameters, the search
    results that found it) is not given."""
    model = catalog.models[task.model]
    record = {"id": task.id, "text": task.text, "model": task.model, "model_name": model.name,
              "hub_id": model.hub_id, "pipeline": model.pipeline, "scheduler": task.scheduler, "steps": task.steps,
              "level": task.level, "tags": list(task.tags), "resolution": model.resolution,
              "guidance_scale": model.guidance_scale}
    if task.target is None:
        return {**record, "method": task.method, "params": dict(task.params)}
    target = {key: value for key, value in task.target.to_dict().items() if key != "evidence"}
    return {**record, "target": target, "always_fixed": list(ALWAYS_FIXED)}


def _target_lines(task: Task) -> str:
    """TASK.md's lines for a target task: the target, the budget, what is fixed and free, how it is judged."""
    target = task.target
    goal = (f"speedup over the live baseline at least {target.speedup:g}×" if target.speedup is not None else
            "latency per image at most " + ", ".join(f"{ms:g} ms on {GPU_CLASSES[gpu]}"
                                                     for gpu, ms in target.latency_ms.items())
            + " (no target on other GPUs)")
    fixed = "".join(f"\n  - {FIXABLE[name].short}: {FIXABLE[name].meaning}" for name in target.fixed) or " nothing more"
    free = ", ".join(FIXABLE[name].short for name in target.free)
    return (f"- target (level {task.level}, {target.tier}): {goal}\n"
            f"- quality budget: PSNR to the baseline's images no lower than the reference's minus "
            f"{target.budget.psnr_db:g} dB; CLIP score loss no higher than the reference's plus "
            f"{target.budget.clip_pct:g} %\n"
            f"- always fixed: {'; '.join(ALWAYS_FIXED)}\n"
            f"- fixed by this task:{fixed}\n"
            f"- free: {free + ', ' if free else ''}the acceleration method and its parameters, and anything else "
            f"not fixed\n")


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
        asked = (_target_lines(task) if task.target is not None else
                 f"- method: {task.method}; parameters: {params}\n"
                 + _sampler_line(catalog, task)
                 + f"- level: {task.level} ({LEVELS[task.level]}){''.join(f', {tag}' for tag in task.tags)}\n")
        write(out / task.id / TASK_MD, f"# {task.id}\n\n{task.text}\n\n"
                                       f"- model: {record['model_name']} (`{record['hub_id']}`, "
                                       f"`{record['pipeline']}`)\n"
                                       f"- sampler: {task.scheduler}, {task.steps} steps\n"
                                       f"{asked}"
                                       f"- default resolution: {record['resolution']}², guidance scale "
                                       f"{record['guidance_scale']}\n\n"
                                       f"Write `{task.id}.py` (see ../README.md for the contract). `{BASELINE_PY}` "
                                       f"beside this file is the same setting without acceleration.\n")
        write(out / task.id / BASELINE_PY, programs.render(catalog, task, baseline=True).source)
    return written


def _sampler_line(catalog: Catalog, task: Task) -> str:
    """For the sampler as a technique: which sampler (class and config) and step count the program uses."""
    if not catalog.methods[task.method].sets_sampler:
        return ""
    sampler = catalog.schedulers[task.params[SAMPLER_PARAM]]
    config = ", ".join(f"{name}={value!r}" for name, value in sampler.config.items())
    return (f"- sample with {sampler.name} (`{sampler.class_name}.from_config(pipe.scheduler.config"
            f"{', ' + config if config else ''})`) and {task.params[SAMPLER_STEPS_PARAM]} steps instead of the "
            f"setting's {catalog.schedulers[task.scheduler].name}, {task.steps} steps (the baseline keeps those)\n")


_FIXABLE_LINES = "".join(f"   - {fixable.short}: {fixable.meaning};\n" for fixable in FIXABLE.values())


def pack_readme(suite: Suite, tasks: list[Task]) -> str:
    tiny = ", ".join(f"{family} {size}×{size}" for family, size in TINY_RESOLUTION.items())
    return f"""# accelbench task pack: suite `{suite.id}` ({len(tasks)} tasks)

Each folder holds one task: `TASK.md` (the request) and `baseline.py` (the same model, sampler and steps
without acceleration: a working program to start from). `tasks.jsonl` lists every task with its fields.

## Levels
1: a pipeline (model, sampler, steps) with no acceleration: the program must compute what `baseline.py`
computes (it is judged like the others: trace and images equal to the reference's), and it counts for
correctness, not for fast_p. 2: one acceleration method with the parameters the task gives. 3: a combination of
methods. `sweep`: a parameter away from the method's default (use the task's value). Levels 1-3 are *recipe*
tasks: compute what the task names. 4: a speedup target ("at least 2× faster than the baseline"), 5: a latency
target per image on a named GPU class: *target* tasks, where the method is yours to choose (next section).

## Target tasks (levels 4 and 5)
`TASK.md` gives the target, the quality budget, what is fixed and what is free. Any training-free acceleration
that keeps what is fixed may be used: which blocks run, how attention is computed, caching within a call,
compilation, another dtype or sampler where the task leaves them free. Always fixed: {"; ".join(ALWAYS_FIXED)}.
How a target task is judged, in this order (each failure names its reason):
1. the gate's contract, output, finite, independent and repeatable checks (below), on the tiny model;
2. **constraints**, from the execution trace of every traced call against the baseline program's trace of the
   same inputs: the denoiser is the task's model (block layout, class, parameter count) with its weights (sampled
   values, equal within the dtype's precision), the latents and the decoded images have the baseline's size and
   count, no module with parameters outside the pipeline runs, and each field the task fixes holds:
{_FIXABLE_LINES}   the first warm-up batch on the run's model and the audit's replays are checked the same way;
3. **quality**, on the run's (secret) prompts, against the baseline's images: mean PSNR no lower than the task's
   *reference program*'s minus the budget's dB, CLIP score loss no higher than the reference's plus the budget's
   points. The reference is a configuration known to meet the target; which one is not given. Relative to a
   live reference, the budget holds on any weights;
4. **speed**, with the 95 % interval of the paired rounds: met when the whole interval is at least the speedup
   target (at most the latency target), not met when it is wholly on the other side, otherwise not decidable at
   that number of rounds. Latency is the harness's clock per image at batch size 1; a run on a GPU class the
   task names no latency target for gives "no target". Only met counts as solved.

## What to hand in
A folder with one program per task you solve, named `<task_id>.py`, and optionally `submission.yaml`
(`name`, `author`, `model`, `date`, `notes`). A task without a file counts as failed. The folder's name (or
`name:`) is the submission's: letters, digits, `.`, `_`, `-`; not `baseline`, `gt` or `reference`.

## The program contract (version {programs.CONTRACT_VERSION})
```python
{programs.CONTRACT}```
- `load` gets a **local folder** (`from_pretrained` it), the device (`cuda`, `cuda:N` or `cpu`) and the dtype
  (`torch.float16` on GPUs, `torch.float32` on the CPU): use them, never hard-code `"cuda"` or a dtype.
- `generate` gets the prompts, one `torch.Generator` per prompt (pass the list as diffusers' `generator=`),
  `height` and `width` (always given; use them). Image i must depend only on prompt i and generator i: not on
  the batch size, its position in the batch or earlier calls.
- Return a float **numpy** array `[N, H, W, 3]` in `[0, 1]`, finite (`output_type="np"`; a torch tensor is an
  error: convert it with `.permute(0, 2, 3, 1).float().cpu().numpy()`).

## Where a program runs
- A worker process of its own per (program, batch size), frozen (every thread stopped) whenever it is not being
  called. It sees no other process (a PID namespace of its own), no network, a **read-only file system** except
  its temporary folder (`TMPDIR`, also `TORCHINDUCTOR_CACHE_DIR` and `TRITON_CACHE_DIR`) and a private
  `/dev/shm`, and no capabilities; the Hub is offline (`HF_HUB_OFFLINE=1`).
- Processes it starts must be gone when a call returns (a worker with one still running is rejected);
  `TORCHINDUCTOR_COMPILE_THREADS=1` keeps `torch.compile` in-process. Threads are fine.
- Device work must be finished when a call returns: the harness synchronises the device before the answer and,
  on CUDA, checks from its own context after each call that the GPU is idle; work still running
  {DEFAULT_GRACE_S:g} s after the answer (kernels queued after the synchronise, a thread that keeps the GPU busy)
  rejects the worker.
- Time limits: `load()` {DEFAULT_LOAD_TIMEOUT_S:g} s; each untimed warm-up call {DEFAULT_WARMUP_TIMEOUT_S:g} s
  (compile and autotune there: the warm-ups use the run's prompts at the timed batch size); each timed call
  max(60 s, 10 × the baseline's median batch latency). Output to stdout/stderr is kept in a log, cut
  after {LOG_LIMIT_BYTES // 2**20} MiB.

## How programs are checked, timed and scored
1. **The gate** (before any timing): the program runs on the family's **tiny synthetic model** (the real block
   layout and configs, tiny widths: {tiny}), on the CPU in float32, beside the task's ground-truth (GT) program:
   four calls on random prompts (in `generate`, drawn from the run's when it has three or more, else from a
   built-in pool) and seeds — (1) two images, (2) three images,
   call 1's at other positions, (3) call 1 again, (4) call 2 again, untraced. It must: return the right shape,
   finite; trace as the GT traces (sampler class and full config, timesteps and step arguments, which denoiser
   blocks run each step, every attention call: what the method's parameters decide); give images within the
   tolerance of the GT's (CPU float32: max |diff| {CPU_FP32.max_abs}/255, mean {CPU_FP32.mean_abs:g}); give each
   image the same at any position and batch size; repeat calls bit for bit, traced or not; differ from the baseline
   where the task asks for an acceleration. **Target tasks** have no GT to equal: the trace and image comparisons
   with the GT and "differ from the baseline" are replaced by the constraints (the section above); shape, finite,
   position and batch independence and bit-for-bit repeats stay.
2. **On the real model**, the first warm-up batch is traced and must trace as the GT's on the same batch (a
   target task: keep the constraints against the baseline's trace).
3. **Timing**: the harness's own clock, from sending a batch to receiving its images; the programs of one (model,
   sampler, steps) setting take turns with the baseline round by round on the same GPU. Prompts and seeds are
   the harness's, may be secret, and never repeat within a worker.
4. **The audit of what was timed**: every timed image of a recipe task must be within the tolerance of the GT's
   image of the same prompt and seed (devices and dtypes without a calibration, e.g. GPU float16: max |diff|
   {UNCALIBRATED.max_abs}/255, mean {UNCALIBRATED.mean_abs:g}); after timing, a random sample of the timed batches
   is rendered again, traced, and must give **bit-identical** images and the GT's trace (a target task: its own
   images, bit for bit, and the constraints). A program that fails
   any of this gets `rejected` rows for the task, with the reason. A recipe task's program faster than the GT
   beyond the rounds' noise is timed again, alone beside a fresh baseline, and that figure stands.
5. **Scores**: speedup over the baseline, CLIP score and quality loss, fidelity to the baseline's and the GT's
   images; a recipe task counts as solved when it is correct and faster (fast_p), where correct also needs the
   images close enough to the GT's (`deviation_psnr_db`); a target task when its verdict is met (no PSNR-to-GT
   rule: its quality is the budget's).

Check a program yourself where accelbench is installed: `accelbench check-program <task_id>.py --task <task_id>`
runs the gate and prints every check with its reason.

## State that trips honest programs
- Libraries with state of their own must be reset per call: tomesd's merge-pattern generator
  (`pipe.unet._tome_info["args"]["generator"]`) reseeded inside `generate()` when `use_rand` is on; T-GATE's
  DeepCache loaders keep each attention module's last output in `module.cache` across calls — set it to `None`
  on every module that has one at the start of every call.
- PixArt pipelines bin resolutions by default (`use_resolution_binning=True`): leave it on; the tiny PixArt
  models are 256×256 so binning works on them too.
- `torch.compile(pipe.unet)` returns a wrapper whose truth value is an error: test with `is not None`.

## Forbidden
Changing the sampler, steps, guidance, resolution or method parameters a recipe task names (what a target task
fixes, or always fixes); another, smaller or distilled model, or a second one; caching or reusing
images or latents across calls; behaving differently when traced, checked, warmed up or timed; patching timers,
`torch`, the libraries or the harness; reading files outside the model folder and the worker's temporary
folder; network access; starting processes or device work that outlive a call. Time limits, output caps, the
process boundary, the device check, the gate and the audit enforce this; what they cannot catch is flagged by the
gate's static scan.
"""
