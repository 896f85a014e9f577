"""A target task's constraints, read from execution traces of real programs on the tiny SD1.5 model: honest
accelerations pass whichever method they choose; another, smaller or re-weighted model, a lower resolution, a
second model, and changing a field the task fixes each fail with the constraint's name."""

import pytest

from accelbench.builder import programs, synthetic
from accelbench.builder.trace.constraints import CONSTRAINTS, constraint_violation
from accelbench.builder.worker import ProgramWorker
from accelbench.manifest import FIXABLE, load_catalog

pytestmark = pytest.mark.slow

CATALOG = load_catalog()
SETTING = "smoke-sd15-ddim-8"  # the setting of the smoke suite's SD1.5 tasks: their GT programs apply
PROMPTS, SEEDS = ["a red cube on a wooden table", "two cats sleeping on a sofa"], [3, 4]
ALL_FIXED = tuple(FIXABLE)


def baseline_source() -> str:
    return programs.render(CATALOG, CATALOG.task(f"{SETTING}-deepcache"), baseline=True).source


def gt_source(method: str) -> str:
    return programs.render(CATALOG, CATALOG.task(f"{SETTING}-{method}")).source


def edited(old: str, new: str, source: str | None = None) -> str:
    source = source or baseline_source()
    assert old in source, old
    return source.replace(old, new)


LOADED = "    pipe.set_progress_bar_config(disable=True)\n"
SMALLER_UNET = LOADED + ("    from diffusers import UNet2DConditionModel\n"
                         "    config = {**pipe.unet.config, 'layers_per_block': 1}\n"
                         "    pipe.unet = UNet2DConditionModel.from_config(config)\n")
FRESH_VAE = LOADED + ("    from diffusers import AutoencoderKL\n"
                      "    torch.manual_seed(1)  # the synthetic model's own VAE was drawn under seed 0\n"
                      "    pipe.vae = AutoencoderKL.from_config(pipe.vae.config)\n")
SCALED_WEIGHTS = LOADED + ("    for parameter in pipe.unet.parameters():\n"
                           "        parameter.data.mul_(0.9)\n")
HALF_SIZE = ("        height=height,\n        width=width,\n",
             "        height=height // 2,\n        width=width // 2,\n")
UPSAMPLED = ("    return output.images\n", "    return output.images.repeat(2, axis=1).repeat(2, axis=2)\n")
SECOND_MODEL = ("    return output.images\n",
                "    torch.nn.Linear(4, 4)(torch.zeros(1, 4))  # a helper model\n    return output.images\n")

PROGRAMS = {
    "baseline itself": lambda: baseline_source(),
    "DeepCache (a reference)": lambda: gt_source("deepcache"),
    "ToMe (another method)": lambda: gt_source("tome"),
    "T-GATE": lambda: gt_source("tgate"),
    "fewer steps": lambda: edited("NUM_INFERENCE_STEPS = 8", "NUM_INFERENCE_STEPS = 5"),
    "another sampler": lambda: edited("DDIMScheduler.from_config(", "EulerDiscreteScheduler.from_config(",
                                      edited("import StableDiffusionPipeline, DDIMScheduler",
                                             "import StableDiffusionPipeline, EulerDiscreteScheduler")),
    "bfloat16": lambda: edited("from_pretrained(model_id, dtype=dtype,",
                               "from_pretrained(model_id, dtype=torch.bfloat16,"),
    "no guidance": lambda: edited("GUIDANCE_SCALE = 7.5", "GUIDANCE_SCALE = 1.0"),
    "half the resolution, upsampled": lambda: edited(*UPSAMPLED, edited(*HALF_SIZE)),
    "a smaller UNet": lambda: edited(LOADED, SMALLER_UNET),
    "a freshly drawn VAE": lambda: edited(LOADED, FRESH_VAE),
    "scaled UNet weights": lambda: edited(LOADED, SCALED_WEIGHTS),
    "a second model in generate": lambda: edited(*SECOND_MODEL),
}
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
