"""The correctness gate (v2): judge a program by what it computed, compared with the task's GT program.

The package: :mod:`.check` (:class:`Gate`, :func:`check_program`: runs the programs), :mod:`.judge` (every
rule that passes or rejects a program, the real-model trace check of ``generate`` included), :mod:`.verdict`
(:class:`Verdict`, :class:`Check`), :mod:`.inputs` (what the gate calls a program with), :mod:`.tolerance`
(how close images must be), :mod:`.scan` (the static checks) and :mod:`.references` (the trusted programs'
results, cached).

A candidate program runs in a worker process of its own (:mod:`accelbench.builder.worker`), never in the
harness's, loaded under the same module name as in ``generate`` (:data:`PROGRAM_MODULE`). The task's GT program
(the baseline program for a baseline check) runs on the same model and inputs in another worker, and so does the
baseline program for the not-a-no-op check. Every traced call records an execution trace
(:mod:`accelbench.builder.trace`).

Inputs the program cannot prepare for: each :class:`Gate` draws three prompts from the run's prompts (from
:data:`PROMPT_POOL` where the run has fewer than three different ones) and three 63-bit image seeds at random
(``seed`` makes the draw reproducible; the verdict records it) and calls ``generate()`` four times:

1. prompts ``[p0, p1]`` with seeds ``[s0, s1]``, traced;
2. prompts ``[p2, p1, p0]`` with seeds ``[s2, s1, s0]``, traced: new inputs, another batch size, and the first
   call's images at other positions;
3. call 1's inputs again, traced (a program that memoises its outputs shows an empty trace);
4. call 2's inputs again, *untraced*: a program that behaves only while it sees the tracer's hooks changes its
   pixels here.

The GT program (a target task's reference program) runs calls 1 and 2 (traced); the baseline program call 1 (for a
target task calls 1 and 2: its traces are what the constraints are checked against).

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
``constraints``  (target tasks, instead of ``spec``) the trace of every traced call keeps the task's constraints
                 against the baseline program's trace of the same inputs
                 (:func:`~accelbench.builder.trace.constraints.constraint_violation`: the model and its weights,
                 the resolution, the number of images, no second model, and the fields the task fixes);
``fidelity``     (recipe tasks) the uint8 images of calls 1 and 2 are within :func:`tolerance` of the GT's: as
                 close as the GT's own numerics allow (a target task's quality is the scorer's to judge);
``independent``  image i depends only on (prompt i, generator i): call 2's images of call 1's inputs, rendered
                 at other positions in a larger batch, match call 1's within the same tolerance;
``repeatable``   call 3 is bit-identical to call 1 and call 4 to call 2;
``not-a-no-op``  (accelerated recipe tasks) the images differ from the baseline program's on the same inputs, and the
                 trace differs from the baseline's: the method changed the computation;
``plausible``    advisory, never fails the verdict: a static scan (``ast``) flags programs that import
                 accelbench, patch attributes of torch/time/builtins/diffusers, start threads or processes,
                 open files outside their folder, or look at the tracer's hooks.

Tolerances, in uint8 levels (0-255), both bounds must hold. Calibrated with ``bench/gate_calibration.py`` on the
tiny models, CPU, float32: each program against itself at batch 3 instead of 2 with its images at other
positions, and with 1 torch thread instead of 2, one or two random draws; 73 programs (every smoke program and
setting; standard programs covering every family, method and sampler), ``bench/results/gate_calibration.json``:

- :data:`~.tolerance.CPU_FP32` (max 3, mean 0.05) covers what was measured;
- ToMe with ``use_rand``: tomesd's merge pattern comes from a generator the task does not fix, so any honest
  seeding of it is allowed: the method's own ``gate_tolerance`` in methods.yaml (max 48, mean 4) covers what
  another seed measured;
- any other device or dtype (GPU, half precision; not calibrated): :data:`~.tolerance.UNCALIBRATED`;
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


from accelbench.builder.gate.check import Gate, GateError, check_program
from accelbench.builder.gate.inputs import PROMPT_POOL, Call, draw_inputs, gate_prompts
from accelbench.builder.gate.references import REFERENCES
from accelbench.builder.gate.scan import contract_problem, scan_program
from accelbench.builder.gate.tolerance import CPU_FP32, UNCALIBRATED, Tolerance, tolerance
from accelbench.builder.gate.verdict import Check, Verdict

__all__ = ["CPU_FP32", "PROMPT_POOL", "REFERENCES", "UNCALIBRATED", "Call", "Check", "Gate", "GateError", "Tolerance",
           "Verdict", "check_program", "contract_problem", "draw_inputs", "gate_prompts", "scan_program", "tolerance"]
