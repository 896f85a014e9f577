"""A target task's constraints, read from execution traces of real programs on the tiny SD1.5 model: honest
accelerations pass whichever method they choose; another, smaller or re-weighted model, a lower resolution, a
second model, a skipped or cheapened VAE decode, and changing a field the task fixes each fail with the
constraint's name."""

import pytest
from target_programs import ALL_FIXED, CATALOG, PROGRAMS, PROMPTS, SEEDS, baseline_source

from accelbench.builder import synthetic
from accelbench.builder.trace.constraints import CONSTRAINTS, constraint_violation
from accelbench.builder.worker import ProgramWorker

pytestmark = pytest.mark.slow

# program -> (violation with every field fixed, violation with none fixed); None passes.
EXPECTED = {
    "baseline itself": (None, None),
    "DeepCache (a reference)": (None, None),
    "ToMe (another method)": (None, None),
    # T-GATE drops the unconditional branch after its gate step: not where a task fixes guidance.
    "T-GATE": ("guidance: denoiser call 5 ran a latent batch of 2 for 2 images, the baseline [4]", None),
    "fewer steps": ("steps: set_timesteps with [5], the baseline [8]", None),
    "another sampler": ("sampler: step 1: scheduler diffusers.schedulers.scheduling_euler_discrete."
                        "EulerDiscreteScheduler, the baseline diffusers.schedulers.scheduling_ddim.DDIMScheduler",
                        None),
    "bfloat16": ("dtype: the unet's weights are bfloat16, the baseline's float32", None),
    "no guidance": ("guidance: denoiser call 1 ran a latent batch of 2 for 2 images, the baseline [4]", None),
    "half the resolution, upsampled": ("resolution: denoiser call 1 got latents of 4x4x4", "resolution:"),
    "a smaller UNet": ("model: the denoiser is a", "model:"),
    "a freshly drawn VAE": ("weights: vae parameter", "weights: vae parameter"),
    "scaled UNet weights": ("weights: unet parameter", "weights: unet parameter"),
    "a second model in generate": ("second model: modules with parameters that are no part of the pipeline ran "
                                   "(1 of torch.nn.modules.linear.Linear calls)", "second model:"),
    # The decoder is part of the model: skipping it, or decoding less, changes what the VAE decoded.
    "no VAE: latents projected to RGB": ("resolution: the VAE decoded latents of nothing, the baseline 4x8x8",) * 2,
    "the VAE on half-size latents, upsampled": (
        "resolution: the VAE decoded latents of 4x4x4, the baseline 4x8x8",) * 2,
}


def trace_of(source: str) -> dict:
    model = CATALOG.models["sd15"]
    size = synthetic.tiny_resolution(model)
    with ProgramWorker(source, model_path=synthetic.materialize(model, "tiny"), device="cpu", dtype="float32",
                       threads=1) as worker:
        return worker.generate(PROMPTS, SEEDS, size, size, trace=True).trace


@pytest.fixture(scope="module")
def baseline_trace():
    return trace_of(baseline_source())


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_each_program_keeps_or_breaks_the_constraint_it_should(baseline_trace, name):
    trace = trace_of(PROGRAMS[name]())
    for fixed, expected in zip((ALL_FIXED, ()), EXPECTED[name]):
        found = constraint_violation(baseline_trace, trace, fixed)
        if expected is None:
            assert found is None, (fixed, found)
        else:
            assert found is not None and found.startswith(expected), (fixed, found)
            assert found.split(":")[0] in CONSTRAINTS


def test_a_missing_or_incomplete_trace_is_a_violation(baseline_trace):
    assert constraint_violation(baseline_trace, None, ALL_FIXED) == "trace: no execution trace was recorded"
    broken = {**baseline_trace, "errors": ["tracer could not install: RuntimeError: x"]}
    assert constraint_violation(baseline_trace, broken, ()) == (
        "trace: the trace is incomplete: tracer could not install: RuntimeError: x")
