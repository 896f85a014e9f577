"""The correctness gate v2: catalogue programs pass, programs written to game the gate fail with the right check.

Catalogue coverage, cheaply. Running every one of the 84 catalogue programs through the gate costs minutes of
CPU. The programs are rendered from one template per method, and a task differs from another of its (family,
method) only by its sampler, its step count and literal parameter values. So:

- every *smoke* task's GT program runs through the real gate (every (family, method) pair: 4 families x every
  method that applies, at 8 steps), and so does the baseline program of every smoke setting;
- every sampler of the catalogue runs through the real gate once, as the baseline of its cheapest setting
  (PNDM, Euler ancestral and UniPC do not appear in the smoke tasks; DDIM, Euler and DPM++ 2M do);
- every other catalogue program gets a structural check: it parses, defines the contract, passes the static
  plausibility scan, renders the task's typed fields (steps, sampler, parameters), and its (family, method,
  sampler) template combination renders the same code apart from those literals as a program that ran above.

The adversarial suite: programs written from the task text by a speed-seeking agent, each rejected by the check
that should catch it, with a one-line reason; and honest programs that compute the same thing differently, which
pass. Gates are module-scoped and share the GT's results (``gate.REFERENCES``); rejected programs stop at their
first failure (``stop_early``).
"""

import dataclasses
import json
import re

import pytest
from click.testing import CliRunner

from accelbench import schema
from accelbench.builder import gate, programs
from accelbench.cli import main
from accelbench.manifest import PIPELINE_LEVEL, SAMPLER_PARAM, SAMPLER_STEPS_PARAM, load_catalog

CATALOG = load_catalog()
SEED = 20261129  # the gate's random inputs, fixed for reproducible tests

DEEPCACHE = "smoke-sd15-ddim-8-deepcache"  # cache_interval=3, cache_branch_id=0
TGATE = "smoke-sd15-ddim-8-tgate"  # gate_step=4, warm_up=1
TOME = "smoke-sd15-ddim-8-tome"  # ratio=0.5
PIXART = "smoke-pixart-alpha-dpmpp_2m-8-tgate"  # DPM++ 2M


@pytest.fixture(scope="module")
def gates():
    """One gate per (task, variant), created on first use and shared by the module."""
    made = {}

    def get(task, variant=schema.GT):
        task = CATALOG.task(task) if isinstance(task, str) else task
        if (task.id, variant) not in made:
            made[task.id, variant] = gate.Gate(CATALOG, task, variant=variant, seed=SEED)
        return made[task.id, variant]

    yield get
    for g in made.values():
        g.close()


def gt_source(task_id, replace=None, baseline=False):
    source = programs.render(CATALOG, CATALOG.task(task_id), baseline=baseline).source
    for old, new in (replace or {}).items():
        assert old in source, old
        source = source.replace(old, new)
    return source


# ---------------------------------------------------------------------------------------------------------
# The catalogue passes
# ---------------------------------------------------------------------------------------------------------

SMOKE_TASKS = [task_id for task_id in CATALOG.tasks if task_id.startswith("smoke-")]
SMOKE_SETTINGS = sorted({CATALOG.task(t).setting_id: t for t in SMOKE_TASKS}.values())


def _on_pixart(scheduler):
    """The smoke PixArt-α setting with another sampler: the cheapest way to run a sampler through the gate."""
    task = CATALOG.task("smoke-pixart-alpha-dpmpp_2m-8-tgate")
    return dataclasses.replace(task, id=f"smoke-pixart-alpha-{scheduler}-8-tgate", scheduler=scheduler)


# Every sampler the smoke tasks do not use, on its cheapest setting: UniPC has a PixArt setting in the catalogue;
# PNDM and Euler ancestral only SD1.5/SDXL ones at 30-50 steps, so they run on PixArt-α at 8 steps (a sampler
# enters a program only as `<Class>.from_config(pipe.scheduler.config, <config>)`, whatever the family).
SAMPLER_SETTINGS = {"pixart-alpha-unipc-20-tgate": "pixart-alpha-unipc-20-tgate",
                    "pndm on pixart-alpha": _on_pixart("pndm"), "euler_a on pixart-alpha": _on_pixart("euler_a")}



def _on_family(task_id, family):
    """A smoke SD1.5 task on another family of the same pipeline class and loaders (SD2.1): the program differs
    only in its model id; what the gate meets that is new is the model (linear projections, v-prediction)."""
    task = CATALOG.task(task_id)
    return dataclasses.replace(task, id=task_id.replace("-sd15-", f"-{family}-"), model=family)


def _at_eight_steps(task_id):
    """A catalogue task at the smoke suite's 8 steps (T-GATE's gate and warm-up, and a step reduction's own step
    count, scaled as there)."""
    task = CATALOG.task(task_id)
    scaled = {"gate_step": 4, "warm_up": 1, "sampler_steps": 4}
    params = {**task.params, **{name: value for name, value in scaled.items() if name in task.params}}
    return dataclasses.replace(task, id=f"{task_id}-at-8-steps", steps=8, params=params)


# Beyond the smoke suite (slow): every (family, method) of the SD2.1 families, gated as the smoke SD1.5 tasks,
# every ToMe combination on every UNet family, and the sampler as a technique on every family.
FAMILY_TWINS = {twin.id: twin for family in ("sd21", "sd21-v") for task_id in SMOKE_TASKS
                if task_id.startswith("smoke-sd15-") and (twin := _on_family(task_id, family))}
FAMILY_TWINS |= {twin.id: twin for family in ("sd15", "sd21", "sd21-v", "sdxl")
                 for combination in ("deepcache-tome", "tome-tgate", "deepcache-tome-tgate")
                 if (twin := _at_eight_steps(f"{family}-ddim-25-{combination}"))}
FAMILY_TWINS |= {twin.id: twin for family in CATALOG.models
                 if (twin := _at_eight_steps(f"{family}-ddim-50-step-reduction-unipc-20"))}
_SMOKE_SETTING_IDS = {CATALOG.task(task_id).setting_id for task_id in SMOKE_TASKS}
FAMILY_TWIN_SETTINGS = {twin.setting_id: twin for twin in FAMILY_TWINS.values()
                        if twin.setting_id not in _SMOKE_SETTING_IDS}

EXPECTED_CHECKS = ["contract", "load", "output", "finite", "spec", "fidelity", "independent", "repeatable"]


@pytest.mark.parametrize("task_id", SMOKE_TASKS)
def test_every_smoke_gt_program_passes_the_gate(task_id, gates):
    verdict = gates(task_id).check(gt_source(task_id))
    assert verdict.passed, verdict.format()
    accelerated = CATALOG.task(task_id).level != PIPELINE_LEVEL  # a pipeline task's GT is its baseline program
    assert [c.name for c in verdict.checks] == [*EXPECTED_CHECKS, *["not-a-no-op"] * accelerated, "plausible"]
    assert verdict.check("plausible").passed  # the GT programs do nothing the scan flags


@pytest.mark.slow
@pytest.mark.parametrize("twin", FAMILY_TWINS)
def test_gt_programs_beyond_the_smoke_suite_pass_the_gate(twin, gates):
    task = FAMILY_TWINS[twin]
    verdict = gates(task).check(programs.render(CATALOG, task).source)
    assert verdict.passed, verdict.format()
    accelerated = task.level != PIPELINE_LEVEL
    assert [c.name for c in verdict.checks] == [*EXPECTED_CHECKS, *["not-a-no-op"] * accelerated, "plausible"]


@pytest.mark.parametrize("setting", SMOKE_SETTINGS + list(SAMPLER_SETTINGS) + [
    pytest.param(setting, marks=pytest.mark.slow) for setting in FAMILY_TWIN_SETTINGS])
def test_baseline_programs_pass_the_gate_for_every_sampler(setting, gates):
    task = SAMPLER_SETTINGS.get(setting) or FAMILY_TWIN_SETTINGS.get(setting, setting)
    task = CATALOG.task(task) if isinstance(task, str) else task
    verdict = gates(task, schema.BASELINE).check(programs.render(CATALOG, task, baseline=True).source)
    assert verdict.passed, verdict.format()
    assert [c.name for c in verdict.checks] == [*EXPECTED_CHECKS, "plausible"]


def test_every_catalogue_program_is_structurally_covered_by_a_gated_one():
    """A program is a function of (family, method template, sampler, steps, parameter values). Every (family,
    method) pair and every sampler of the catalogue is gated above; every other program is one of those with
    other literals: re-rendered with a gated task's sampler, steps and parameters it *is* that gated program.
    And every program parses, defines the contract, passes the static scan and carries its task's values."""
    gated = [CATALOG.task(t) if isinstance(t, str) else t
             for t in SMOKE_TASKS + list(SAMPLER_SETTINGS.values()) + list(FAMILY_TWINS.values())]
    pairs = {(t.model, t.method) for t in gated} | {(t.model, "none") for t in gated}
    assert {t.scheduler for t in gated} == set(CATALOG.schedulers)
    for task in CATALOG.tasks.values():
        for baseline in (False, True):
            method = "none" if baseline else task.method
            assert (task.model, method) in pairs, (task.id, method)
            source = programs.render(CATALOG, task, baseline=baseline).source
            assert gate.contract_problem(source) is None and gate.scan_program(source) == [], task.id
            params = {} if baseline else dict(task.params)
            scheduler, steps = task.scheduler, task.steps
            if CATALOG.methods[method].sets_sampler:  # the sampler as a technique: the program's own
                scheduler, steps = params.pop(SAMPLER_PARAM), params.pop(SAMPLER_STEPS_PARAM)
            assert f"NUM_INFERENCE_STEPS = {steps}\n" in source
            assert f"{CATALOG.schedulers[scheduler].class_name}.from_config(" in source
            for name, value in params.items():
                assert re.search(rf"\b({name.upper()} = |{name}=){re.escape(programs._literal(value))}[,\n]", source), \
                    (task.id, name)
            if task.method == "none" and not baseline:  # a pipeline task's GT: its baseline program, header aside
                body = source.split('"""\n\n', 1)[1]
                assert body == programs.render(CATALOG, task, baseline=True).source.split('"""\n\n', 1)[1]
                continue
            twin = next(t for t in gated if (t.model, t.method) == (task.model, task.method) or baseline and
                        t.model == task.model)
            as_twin = dataclasses.replace(task, id=twin.id, text=twin.text, scheduler=twin.scheduler,
                                          steps=twin.steps, method=twin.method if not baseline else task.method,
                                          params=twin.params if not baseline else task.params)
            assert programs.render(CATALOG, as_twin, baseline=baseline).source == \
                programs.render(CATALOG, twin, baseline=baseline).source, task.id


# ---------------------------------------------------------------------------------------------------------
# Programs written to game the gate fail, each with the right check and a one-line reason
# ---------------------------------------------------------------------------------------------------------

# Cheats that do not depend on the method run on PixArt-α T-GATE tasks (the cheapest tiny model to load and run);
# the DeepCache and ToMe ones on SD1.5.
PIXART_DDIM = "pixart-alpha-ddim-25-tgate"  # DDIM, 25 steps, gate_step=10
CALL = "    output = pipe.tgate(\n"
RETURN = "    return output.images\n"
OPTIONS = "        output_type=\"np\",\n"
SIZE = "        height=height,\n        width=width,\n"


def pixart(task_id=PIXART_DDIM, replace=None, baseline=False):
    return lambda: gt_source(task_id, replace, baseline)


ADVERSARIAL = {
    # name: (task, source, the check that rejects it, regex on its reason)
    "20 real steps + 5 dummy step() calls": (PIXART_DDIM, pixart(replace={
        "NUM_INFERENCE_STEPS = 25": "NUM_INFERENCE_STEPS = 20",
        RETURN: ("    noise = torch.zeros(len(prompts), 4, height // 8, width // 8)\n"
                 "    for t in pipe.scheduler.timesteps[:5]:  # make the step count match the task\n"
                 "        pipe.scheduler.step(noise, t, noise)\n" + RETURN)}),
        "spec", r"set_timesteps\(20\), GT set_timesteps\(25\)"),
    "a subclass of Euler named DDIMScheduler": (PIXART_DDIM, pixart(replace={
        "from diffusers import PixArtAlphaPipeline, DDIMScheduler\n":
            "from diffusers import PixArtAlphaPipeline, EulerDiscreteScheduler\n\n\n"
            "class DDIMScheduler(EulerDiscreteScheduler):\n    pass\n"}),
        "spec", r"scheduler accelbench_program\.DDIMScheduler \(not diffusers' class\), GT "
                r"diffusers\.schedulers\.scheduling_ddim\.DDIMScheduler"),
    "DPM-Solver switched to sde-dpmsolver++ inside generate()": (PIXART, pixart(PIXART, {
        CALL: "    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, "
              "algorithm_type=\"sde-dpmsolver++\")\n" + CALL}),
        "spec", r"algorithm_type=\"sde-dpmsolver\+\+\", GT \"dpmsolver\+\+\""),
    "DDIM with eta=1.0 and trailing spacing": (PIXART_DDIM, pixart(replace={
        "DDIMScheduler.from_config(pipe.scheduler.config)":
            "DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing=\"trailing\")",
        OPTIONS: OPTIONS + "        eta=1.0,\n"}),
        "spec", r"scheduler config timestep_spacing=\"trailing\", GT \"linspace\""),
    "DDIM with eta=1.0": (PIXART_DDIM, pixart(replace={OPTIONS: OPTIONS + "        eta=1.0,\n"}),
                          "spec", r"step 1 of 25: step\(eta=1\), GT eta=0"),
    "half resolution, upsampled": (PIXART_DDIM, pixart(replace={
        SIZE: "        height=height // 2,\n        width=width // 2,\n        use_resolution_binning=False,\n",
        RETURN: ("    small = torch.from_numpy(output.images).permute(0, 3, 1, 2)\n"
                 "    big = torch.nn.functional.interpolate(small, size=(height, width), mode=\"bilinear\")\n"
                 "    return big.permute(0, 2, 3, 1).numpy()\n")}),
        "spec", r"denoiser call 1 of 25: latent size 16x16, GT 32x32"),
    "guidance_scale=1.0": (PIXART_DDIM, pixart(replace={"GUIDANCE_SCALE = 4.5": "GUIDANCE_SCALE = 1.0"}),
                           "spec", r"latent batch 2 \(no guidance\), GT 4 \(2 images x 2 for guidance\)"),
    "T-GATE gate_step=2 for 10": (PIXART_DDIM, pixart(replace={"GATE_STEP = 10": "GATE_STEP = 2"}),
                                  "spec", r"denoiser call 3 of 25: cross-attention .* reused a cache, GT computed it "
                                          r"\(GT computes cross-attention on the first 10 calls, this program on the "
                                          r"first 2 calls\)"),
    "DeepCache cache_interval=5 for 3": (DEEPCACHE, lambda: gt_source(DEEPCACHE, {"CACHE_INTERVAL = 3":
                                                                                   "CACHE_INTERVAL = 5"}),
                                         "spec", r"denoiser call 4 of 8: .* was skipped, GT ran it .*every 3rd call.*"
                                                 r"every 5th call"),
    "DeepCache cache_branch_id=2 for 0": (DEEPCACHE, lambda: gt_source(DEEPCACHE, {"CACHE_BRANCH_ID = 0":
                                                                                    "CACHE_BRANCH_ID = 2"}),
                                          "spec", r"denoiser call 2 of 8: down_blocks\.0\.\w+\.0 ran, GT skipped it"),
    "ToMe ratio=0.3 for 0.5": (TOME, lambda: gt_source(TOME, {"ratio=0.5": "ratio=0.3"}),
                               "spec", r"self-attention down_blocks\.0\.\S+attn1 got 45 query tokens, GT 32"),
    "the baseline + its own noise-prediction reuse on 2 of 3 steps": (DEEPCACHE, lambda: gt_source(DEEPCACHE, {
        "    return pipe.to(device)\n":
            "    pipe = pipe.to(device)\n"
            "    forward, memory = pipe.unet.forward, {}\n\n"
            "    def reuse(*args, **kwargs):  # a full UNet pass every 3rd step, the last prediction otherwise\n"
            "        memory['n'] = memory.get('n', -1) + 1\n"
            "        if memory['n'] % 3 == 0 or 'out' not in memory:\n"
            "            memory['out'] = forward(*args, **kwargs)\n"
            "        return memory['out']\n\n"
            "    pipe.unet.forward = reuse\n    return pipe\n"}, baseline=True),
        "spec", r"denoiser call 2 of 8: conv_in was skipped, GT ran it"),
    "baseline images + 1e-5 noise for a DeepCache task": (DEEPCACHE, lambda: gt_source(DEEPCACHE, {
        "    return output.images\n":
            "    import numpy\n"
            "    return numpy.clip(output.images + 1e-5 * numpy.random.rand(*output.images.shape), 0, 1)\n"},
        baseline=True), "spec", r"denoiser call 2 of 8: \S+ ran, GT skipped it"),
    "constant gray after a real run": (PIXART_DDIM, pixart(replace={RETURN: "    return output.images * 0 + 0.5\n"}),
                                       "fidelity", r"call 1 of 4 \(2 images\), image 1: differs from the GT's by up to "
                                                   r"\d+/255"),
    "torch.rand noise, no pipeline": (PIXART_DDIM, lambda: (
        "import torch\n\n\ndef load(model_id=None, device='cpu', dtype=torch.float32):\n"
        "    return {'device': device}\n\n\n"
        "def generate(pipe, prompts, generators, height=64, width=64):\n"
        "    return torch.stack([torch.rand(height, width, 3, generator=g) for g in generators]).numpy()\n"),
        "spec", r"no denoiser found on the pipeline"),
    "prompt 0 rendered once and tiled over the batch": (PIXART_DDIM, pixart(replace={
        "        prompts,\n": "        prompts[:1],\n",
        "        generator=generators,\n": "        generator=generators[:1],\n",
        RETURN: "    import numpy\n    return numpy.repeat(output.images, len(prompts), axis=0)\n"}),
        "spec", r"latent batch 2 \(1 image x 2 for guidance\), GT 4 \(2 images x 2 for guidance\)"),
    "memoised on the prompts": (PIXART_DDIM, pixart(replace={
        "def generate(pipe, prompts, generators, height=HEIGHT, width=WIDTH):\n":
            "MEMO = {}\n\n\ndef generate(pipe, prompts, generators, height=HEIGHT, width=WIDTH):\n"
            "    if tuple(prompts) in MEMO:\n        return MEMO[tuple(prompts)]\n",
        RETURN: "    MEMO[tuple(prompts)] = output.images\n" + RETURN}),
        "spec", r"call 3 of 4 \(2 images\): no set_timesteps, GT set_timesteps\(25\)"),
    "the gate's public prompts and seeds precomputed in load()": (PIXART_DDIM, pixart(replace={
        "    return TgatePixArtAlphaLoader(pipe)\n":
            "    pipe = TgatePixArtAlphaLoader(pipe)\n"
            "    PUBLIC.append(generate(pipe, list(GATE_PROMPTS), [torch.Generator().manual_seed(s) for s in (0, 1)],\n"
            "                           64, 64, steps=NUM_INFERENCE_STEPS))\n"
            "    return pipe\n",
        "def generate(pipe, prompts, generators, height=HEIGHT, width=WIDTH):\n":
            "GATE_PROMPTS = ('a photograph of an astronaut riding a horse', 'a bowl of fruit on a kitchen table')\n"
            "PUBLIC = []\n\n\n"
            "def generate(pipe, prompts, generators, height=HEIGHT, width=WIDTH, steps=8):\n"
            "    if PUBLIC and tuple(prompts) == GATE_PROMPTS and [g.initial_seed() for g in generators] == [0, 1]:\n"
            "        return PUBLIC[0]\n",
        "        num_inference_steps=NUM_INFERENCE_STEPS,\n": "        num_inference_steps=steps,\n"}),
        "spec", r"set_timesteps\(8\), GT set_timesteps\(25\)"),
    "behaves only under the gate's module name": (PIXART_DDIM, pixart(replace={
        "NUM_INFERENCE_STEPS = 25": "NUM_INFERENCE_STEPS = 25 if __name__ == 'accelbench_gate_program' else 12"}),
        "spec", r"set_timesteps\(12\), GT set_timesteps\(25\)"),
    "behaves only while the tracer's hooks are installed": (PIXART_DDIM, pixart(replace={
        "        num_inference_steps=NUM_INFERENCE_STEPS,\n":
            "        num_inference_steps=NUM_INFERENCE_STEPS if len(pipe.vae.decoder._forward_pre_hooks) else 12,\n"}),
        "repeatable", r"call 4 of 4 \(3 images\) repeats call 2 untraced: different pixels"),
    "NaN pixels": (PIXART, pixart(PIXART, {RETURN: "    return output.images * float('nan')\n"}),
                   "finite", r"call 1 of 4 \(2 images\): \d+ NaN/inf pixel values"),
    "raises": (PIXART, pixart(PIXART, {CALL: "    raise RuntimeError('boom')\n" + CALL}),
               "output", r"call 1 of 4 \(2 images\): error: RuntimeError: boom"),
    "channels-first output": (PIXART, pixart(PIXART, {RETURN: "    return output.images.transpose(0, 3, 1, 2)\n"}),
                              "output",
                              r"returned float32 \(2, 3, 256, 256\), expected a float array \(2, 256, 256, 3\)"),
    "no generate()": (PIXART, pixart(PIXART, {"def generate(": "def make_images("}),
                      "contract", r"program defines no generate\(\)"),
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_programs_written_to_game_the_gate_are_rejected_by_the_right_check(name, gates):
    task_id, make_source, check_name, reason = ADVERSARIAL[name]
    verdict = gates(task_id).check(make_source(), stop_early=True)
    failure = verdict.first_failure()
    assert not verdict.passed and failure is not None, verdict.format()
    assert failure.name == check_name, verdict.format()
    assert re.search(reason, failure.reason), failure.reason
    assert "\n" not in failure.reason and len(failure.reason) < 400


def test_the_adversarial_suite_covers_the_issue():
    assert len([n for n, (_, _, check, _) in ADVERSARIAL.items() if check in ("spec", "fidelity", "repeatable")]) >= 15


COMPILED = "a torch.compile'd UNet (eager backend: no compiler on CI)"  # slow: torch.compile's start-up
HONEST = {
    "AttnProcessor instead of AttnProcessor2_0": (DEEPCACHE, {
        "    pipe.set_progress_bar_config(disable=True)\n":
            "    pipe.set_progress_bar_config(disable=True)\n"
            "    from diffusers.models.attention_processor import AttnProcessor\n"
            "    pipe.unet.set_attn_processor(AttnProcessor())\n"}),
    "fused QKV projections": (DEEPCACHE, {
        "    pipe.set_progress_bar_config(disable=True)\n":
            "    pipe.set_progress_bar_config(disable=True)\n    pipe.fuse_qkv_projections()\n"}),
    "channels-last VAE and sliced decoding": (DEEPCACHE, {
        "    pipe.set_progress_bar_config(disable=True)\n":
            "    pipe.set_progress_bar_config(disable=True)\n"
            "    pipe.vae.to(memory_format=torch.channels_last)\n    pipe.vae.enable_slicing()\n"}),
    "ToMe's merge pattern seeded another way": (TOME, {"TOME_SEED = 0": "TOME_SEED = 1234"}),
    COMPILED: (DEEPCACHE, {
        "    helper.enable()\n": "    helper.enable()\n    pipe.unet = torch.compile(pipe.unet, backend='eager')\n"}),
}


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name == COMPILED else name
                                  for name in HONEST])
def test_programs_that_compute_the_same_thing_differently_pass(name, gates):
    task_id, replace = HONEST[name]
    verdict = gates(task_id).check(gt_source(task_id, replace))
    assert verdict.passed, verdict.format()
    assert verdict.trace_digest is not None


def test_a_program_that_raises_shows_its_traceback(gates):
    source = gt_source(DEEPCACHE, {"    output = pipe(\n": "    {}['missing']\n    output = pipe(\n"})
    verdict = gates(DEEPCACHE).check(source)
    failure = verdict.first_failure()
    assert failure.name == "output" and failure.reason.endswith("error: KeyError: 'missing'")
    lines = failure.traceback.splitlines()
    assert lines[0].startswith("Traceback") and lines[-1] == "KeyError: 'missing'"
    assert any(line.startswith('  File "program.py"') and "in generate" in line for line in lines)
    assert "{}['missing']" in verdict.format()


def test_plausibility_findings_are_advisory():
    source = gt_source(DEEPCACHE, {
        "import torch\n": "import threading\nimport time\n\nimport torch\n\ntime.perf_counter = time.process_time\n",
        "def generate(": "def _unused():\n    open('/etc/hostname').read()\n\n\ndef generate("})
    findings = gate.scan_program(source)
    assert [f.split(": ", 1)[1] for f in findings] == [
        "imports threading (threads or processes)", "patches time.perf_counter (time)",
        "open('/etc/hostname') outside the program's folder"]
    assert gate.scan_program("from accelbench.builder import trace\nimport diffusers\n"
                             "diffusers.DDIMScheduler.step = None\nx = pipe.unet._forward_pre_hooks\n") == [
        "line 1: imports from accelbench (the harness)", "line 3: patches diffusers.DDIMScheduler.step (diffusers)",
        "line 4: reads pipe.unet._forward_pre_hooks (the harness's hooks or frames)"]


def test_verdict_is_structured_and_json_able(gates):
    verdict = gates(PIXART_DDIM).check(gt_source(PIXART_DDIM, {OPTIONS: OPTIONS + "        eta=1.0,\n"}))
    data = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
    assert data["passed"] is False and data["task_id"] == PIXART_DDIM and data["inputs"]["seed"] == SEED
    assert data["failed_checks"] == ["spec", "fidelity"] and data["reason"].startswith("spec: call 1 of 4")
    assert data["advisories"] == []
    assert [len(call["prompts"]) for call in data["inputs"]["calls"]] == [2, 3, 2, 3]
    assert all(prompt in gate.PROMPT_POOL for call in data["inputs"]["calls"] for prompt in call["prompts"])
    assert data["trace_digest"] != data["gt_trace_digest"]
    spec = next(check for check in data["checks"] if check["name"] == "spec")
    assert set(spec) == {"name", "passed", "expected", "observed", "reason", "advisory", "traceback"}
    # Without stop_early every check runs: DDIM's eta=1 changes the images too.
    assert verdict.failed_checks() == ["spec", "fidelity"]
    assert len(data["seconds"]["candidate_calls"]) == 4


def test_the_gate_draws_from_the_run_s_prompts_where_it_has_three():
    run = ["a b", "c d", "a b", "e f", "g h"]
    assert gate.gate_prompts(run) == ("a b", "c d", "e f", "g h")
    assert gate.gate_prompts(["a b", "c d", "a b"]) == gate.gate_prompts(None) == gate.PROMPT_POOL
    judge = gate.Gate(CATALOG, CATALOG.task(DEEPCACHE), prompts=run, seed=SEED)
    assert {prompt for call in judge.calls for prompt in call.prompts} <= set(run)
    assert judge._key("x") != gate.Gate(CATALOG, CATALOG.task(DEEPCACHE), seed=SEED)._key("x")


def test_inputs_are_drawn_at_random_unless_seeded():
    a, b = gate.draw_inputs(1), gate.draw_inputs(2)
    assert a == gate.draw_inputs(1) and a != b
    assert gate.Gate(CATALOG, CATALOG.task(DEEPCACHE)).seed != gate.Gate(CATALOG, CATALOG.task(DEEPCACHE)).seed
    first, second, third, fourth = a
    assert third.prompts == first.prompts and fourth.prompts == second.prompts and not fourth.traced
    assert second.prompts[1:] == first.prompts[::-1] and second.prompts[0] not in first.prompts


def test_tolerances():
    task, tome = CATALOG.task(DEEPCACHE), CATALOG.task(TOME)
    methods = CATALOG.methods
    assert gate.tolerance(task, methods[task.method], "cpu", "float32") == gate.CPU_FP32
    assert gate.tolerance(task, methods[task.method], "cuda", "float16") == gate.UNCALIBRATED
    assert tome.params["use_rand"] and methods["tome"].gate_tolerance.when == "use_rand"
    own = gate.tolerance(tome, methods["tome"], "cpu", "float32")
    declared = methods["tome"].gate_tolerance
    assert (own.max_abs, own.mean_abs) == (declared.max_abs, declared.mean_abs)
    assert gate.tolerance(tome, methods["tome"], "cpu", "float32", schema.BASELINE) == gate.CPU_FP32
    without_rand = dataclasses.replace(tome, params={**tome.params, "use_rand": False})
    assert gate.tolerance(without_rand, methods["tome"], "cpu", "float32") == gate.CPU_FP32


# ---------------------------------------------------------------------------------------------------------
# accelbench check-program (in-process)
# ---------------------------------------------------------------------------------------------------------


def test_check_program_cli(tmp_path):
    good = tmp_path / "good.py"
    good.write_text(gt_source(PIXART, {CALL: "    print('hello from the program')\n" + CALL}))
    bad = tmp_path / "bad.py"
    bad.write_text(gt_source(PIXART, {"GATE_STEP = 4": "GATE_STEP = 2"}))
    runner = CliRunner()
    seed = ["--seed", str(SEED)]
    passed = runner.invoke(main, ["check-program", str(good), "--task", PIXART, *seed])
    assert passed.exit_code == 0, passed.output
    assert passed.stdout.startswith(f"PASS  {PIXART} (gt)")
    assert "hello from the program" not in passed.stdout and "hello from the program" in passed.stderr

    failed = runner.invoke(main, ["check-program", str(bad), "--task", PIXART, "--json", "--trace", *seed])
    assert failed.exit_code == 1, failed.output
    data = json.loads(failed.stdout)  # stdout holds the verdict only
    assert data["passed"] is False and data["trace"]["calls"] and data["trace_digest"]
    assert data["checks"][4]["name"] == "spec" and "GT computed it" in data["checks"][4]["reason"]

    text = runner.invoke(main, ["check-program", str(bad), "--task", PIXART, *seed])
    assert text.exit_code == 1
    assert re.search(r"FAIL spec +call 1 of 4 \(2 images\): denoiser call 3 of 8: cross-attention", text.stdout)

    missing = runner.invoke(main, ["check-program", str(tmp_path / "nope.py"), "--task", PIXART])
    assert missing.exit_code == 2 and missing.stderr.startswith("error: cannot read program")
