"""Execution traces, in-process on the tiny models: what each method leaves in a trace, what a trace ignores, and
how two traces are compared."""

import copy
import inspect
import json
import types

import numpy as np
import pytest

from accelbench.builder import programs, synthetic, trace
from accelbench.builder.seeding import make_generators, seed_global
from accelbench.manifest import load_catalog

CATALOG = load_catalog()
PROMPTS, SEEDS = ["a red cube on a table", "two cats on a sofa"], [11, 22]


def load(task_id, baseline=False, replace=None):
    source = programs.render(CATALOG, CATALOG.task(task_id), baseline=baseline).source
    for old, new in (replace or {}).items():
        assert old in source
        source = source.replace(old, new)
    module = programs.load_module(source, programs.PROGRAM_MODULE)
    programs.quiet_library_output()
    import torch

    seed_global(0)
    model = CATALOG.models[CATALOG.task(task_id).model]
    pipe = module.load(str(synthetic.materialize(model, "tiny")), "cpu", torch.float32)
    return module, pipe


def run(module, pipe, tracer=None, prompts=PROMPTS, seeds=SEEDS):
    seed_global(0)
    if tracer is None:
        return module.generate(pipe, prompts, make_generators(seeds), height=64, width=64), None
    with tracer.recording() as recording:
        images = module.generate(pipe, prompts, make_generators(seeds), height=64, width=64)
    return images, recording


@pytest.fixture(scope="module")
def deepcache():
    module, pipe = load("smoke-sd15-ddim-8-deepcache")
    tracer = trace.Tracer(pipe)
    images, recording = run(module, pipe, tracer)
    return types.SimpleNamespace(module=module, pipe=pipe, tracer=tracer, images=images, trace=recording.to_dict(),
                                 digest=recording.digest)


def full_passes(t):
    return [i + 1 for i, call in enumerate(t["calls"]) if "0" not in t["ran_patterns"][call["ran"]]]


def test_a_deepcache_trace(deepcache):
    t = deepcache.trace
    json.dumps(t, allow_nan=False)
    assert len(t["calls"]) == len(t["steps"]) == 8 and [s["num_inference_steps"] for s in t["set_timesteps"]] == [8]
    assert full_passes(t) == [1, 4, 7]  # cache_interval=3
    skipped = t["ran_patterns"][t["calls"][1]["ran"]]
    ran = [unit for unit, bit in zip(t["denoiser"]["units"], skipped) if bit == "1"]
    # cache_branch_id=0: only the shallowest branch (the last up block's last layers) runs between full passes.
    assert ran == ["conv_in", "time_embedding", "up_blocks.3.attentions.2", "up_blocks.3.resnets.2",
                   "conv_norm_out", "conv_out"]
    first = t["calls"][0]
    assert first["sample"] == [4, 4, 8, 8] and first["context"] == [4, 77, 32] and first["dtype"] == "float32"
    scheduler = t["schedulers"][t["steps"][0]["scheduler"]]
    assert scheduler["class"] == "diffusers.schedulers.scheduling_ddim.DDIMScheduler" and scheduler["diffusers"]
    assert scheduler["config"]["timestep_spacing"] == "leading"
    assert t["steps"][0]["kwargs"] == {"eta": 0.0, "use_clipped_model_output": False, "variance_noise": None}
    assert t["vae_decode"]["latents"] == [[4, 8, 8, 2]] and t["outside_calls"] == 0 and not t["errors"]


def test_traces_depend_on_the_computation_not_the_inputs_and_leave_nothing_behind(deepcache):
    import diffusers

    conv = deepcache.pipe.unet.down_blocks[0].resnets[0].conv1
    step, hooks = diffusers.DDIMScheduler.step, len(conv._forward_pre_hooks)
    images, recording = run(deepcache.module, deepcache.pipe, deepcache.tracer, ["a dog", "a boat"], [5, 6])
    assert recording.digest == deepcache.digest
    assert diffusers.DDIMScheduler.step is step  # class-level wrappers removed
    assert len(conv._forward_pre_hooks) == hooks == 0
    untraced, _ = run(deepcache.module, deepcache.pipe)
    assert np.array_equal(untraced, deepcache.images)  # tracing does not change what is computed


def test_implementation_choices_that_do_not_change_the_computation_leave_the_trace_unchanged():
    from diffusers.models.attention_processor import AttnProcessor

    module, pipe = load("smoke-sd15-ddim-8-deepcache", baseline=True)
    tracer = trace.Tracer(pipe)
    reference, recording = run(module, pipe, tracer)
    expected = recording.to_dict()
    import torch

    for change in (lambda: pipe.unet.set_attn_processor(AttnProcessor()),
                   lambda: pipe.fuse_qkv_projections(),
                   lambda: (pipe.vae.to(memory_format=torch.channels_last), pipe.vae.enable_slicing())):
        change()
        images, recording = run(module, pipe, tracer)
        assert trace.compare_traces(expected, recording.to_dict()) is None
        assert np.abs(images - reference).max() < 1e-4
    assert recording.to_dict()["vae_decode"]["calls"] == 2  # sliced: one decoder call per image, same latents


def test_t_gate_reuses_cross_attention_after_its_gate_step_and_drops_guidance():
    module, pipe = load("smoke-pixart-alpha-dpmpp_2m-8-tgate")  # gate_step=4, warm_up=1, sp_interval=5
    _, recording = run(module, pipe, trace.Tracer(pipe))
    t = recording.to_dict()
    patterns = [t["attention_patterns"][call["attention"]] for call in t["calls"]]
    cross = [[entry[3] for entry in pattern if entry[2] is not None] for pattern in patterns]
    assert cross == [[1, 1]] * 4 + [[0, 0]] * 4  # transformer_blocks.{0,1}.attn2
    selfs = [[entry[3] for entry in pattern if entry[2] is None] for pattern in patterns]
    assert selfs[:4] == [[1, 1], [1, 1], [0, 0], [1, 1]]  # warm-up, cache, reuse, gate step
    assert [call["sample"][0] for call in t["calls"]] == [4] * 4 + [2] * 4
    assert patterns[0][1][1:3] == [256, 120]  # 16x16 patches (256 px), T5's 120 tokens


def test_tome_shows_as_shorter_self_attention():
    module, pipe = load("smoke-sd15-ddim-8-tome")  # ratio 0.5 on the first level
    _, recording = run(module, pipe, trace.Tracer(pipe))
    t = recording.to_dict()
    first = t["attention_patterns"][t["calls"][0]["attention"]]
    names = t["denoiser"]["attention"]
    lengths = {names[index]: (query, key) for index, query, key, _ in first}
    assert lengths["down_blocks.0.attentions.0.transformer_blocks.0.attn1"] == (32, None)  # 64 tokens merged by half
    assert lengths["down_blocks.0.attentions.0.transformer_blocks.0.attn2"] == (64, 77)  # merge_crossattn=False
    assert lengths["down_blocks.1.attentions.0.transformer_blocks.0.attn1"] == (16, None)  # below max_downsample


def test_scheduler_identity_arguments_and_signature():
    import diffusers

    class DDIMScheduler(diffusers.DDIMScheduler):  # a look-alike that defers to the real step
        def step(self, *args, **kwargs):
            return super().step(*args, **kwargs)

    import torch

    scheduler = DDIMScheduler.from_config(diffusers.DDIMScheduler().config)
    pipe = types.SimpleNamespace(scheduler=scheduler)
    with trace.Tracer(pipe).recording() as recording:
        assert "eta" in inspect.signature(diffusers.DDIMScheduler.step).parameters  # pipelines look for it
        scheduler.set_timesteps(4)
        sample = torch.zeros(1, 4, 8, 8)
        scheduler.step(sample, scheduler.timesteps[0], sample, eta=0.5)
    t = recording.to_dict()
    assert t["denoiser"] is None and len(t["steps"]) == 1  # recorded once, as the subclass
    entry = t["schedulers"][t["steps"][0]["scheduler"]]
    assert entry["class"].endswith("test_scheduler_identity_arguments_and_signature.<locals>.DDIMScheduler")
    assert entry["diffusers"] is False
    assert t["steps"][0]["kwargs"]["eta"] == 0.5 and t["set_timesteps"][0]["num_inference_steps"] == 4


def test_compare_traces_names_the_first_difference(deepcache):
    expected = deepcache.trace
    assert trace.compare_traces(expected, copy.deepcopy(expected)) is None

    def changed(edit):
        observed = copy.deepcopy(expected)
        edit(observed)
        return trace.compare_traces(expected, observed)

    def set_eta(t):
        for step in t["steps"]:
            step["kwargs"]["eta"] = 1.0

    assert changed(set_eta) == "step 1 of 8: step(eta=1), GT eta=0"

    def full_every_call(t):
        for call in t["calls"]:
            call["ran"] = 0

    assert changed(full_every_call) == (
        "denoiser call 2 of 8: down_blocks.0.attentions.0 ran, GT skipped it (GT: full denoiser on 3 of 8 calls "
        "(1, 4, 7, every 3rd call); this program: full denoiser on every call)")

    def no_guidance(t):
        for call in t["calls"]:
            call["sample"][0] = 2

    assert changed(no_guidance) == ("denoiser call 1 of 8: latent batch 2 (no guidance), GT 4 (2 images x 2 for "
                                    "guidance)")
    assert changed(lambda t: t["calls"].pop()) == "7 denoiser calls for 8 scheduler steps, GT 8 for 8 (noise " \
                                                  "predictions reused or faked?)"
    assert changed(lambda t: t["schedulers"][0]["config"].update(beta_schedule="linear")) == (
        'step 1: scheduler config beta_schedule="linear", GT "scaled_linear"')
    assert changed(lambda t: t["vae_decode"].update(latents=[[4, 8, 8, 1]])) == "VAE decoded 1 of 4x8x8, GT 2 of 4x8x8"
    assert changed(lambda t: t.update(denoiser=None)).startswith("no denoiser found")
    assert trace.compare_traces(expected, {}) == "no trace was recorded"
