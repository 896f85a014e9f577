"""Programs for target tasks on the tiny SD1.5 model (the smoke suite's DDIM-8 setting, whose GT programs apply):
honest accelerations and programs that each break one constraint, as edits of the baseline program; and a
catalogue holding a target task of that setting."""

from pathlib import Path

import yaml

from accelbench.builder import programs
from accelbench.manifest import FIXABLE, load_catalog, render_target_text
from accelbench.manifest.model import QualityBudget, Target

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
LATENT_OUTPUT = ('        output_type="np",', '        output_type="latent",')
LATENT_PREVIEW = ("    return output.images\n", """    latents = output.images.float()
    # a fixed latent-to-RGB projection instead of the VAE (a "latent preview"), upsampled 8x
    weights = torch.tensor([[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264],
                            [-0.184, -0.271, -0.473]])
    rgb = torch.einsum("bchw,cr->bhwr", latents, weights).clamp(-1, 1) * 0.5 + 0.5
    return rgb.repeat_interleave(8, dim=1).repeat_interleave(8, dim=2).detach().cpu().numpy()
""")
HALF_DECODE = ("    return output.images\n", """    latents = torch.nn.functional.avg_pool2d(output.images, 2)
    images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    images = torch.nn.functional.interpolate(images, scale_factor=2, mode="nearest")
    return (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().detach().cpu().numpy()
""")
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
    "no VAE: latents projected to RGB": lambda: edited(*LATENT_PREVIEW, edited(*LATENT_OUTPUT)),
    "the VAE on half-size latents, upsampled": lambda: edited(*HALF_DECODE, edited(*LATENT_OUTPUT)),
}


def target_catalog(folder: Path, task_id: str = "smoke-sd15-ddim-8-speedup", fixed=ALL_FIXED, speedup: float = 1.2,
                   reference: str = "deepcache", params: dict | None = None):
    """The packaged catalogue plus one level-4 target task of the SD1.5 DDIM-8 setting (file in ``folder``)."""
    model, scheduler = CATALOG.models["sd15"], CATALOG.schedulers["ddim"]
    target = Target(tier="easy", budget=QualityBudget(1.0, 1.0), fixed=tuple(fixed), speedup=speedup)
    path = Path(folder) / "target-tasks.yaml"
    path.write_text(yaml.safe_dump({"tasks": [{
        "id": task_id, "model": "sd15", "scheduler": "ddim", "steps": 8, "target": {"speedup": speedup, "tier": "easy"},
        "budget": {"psnr_db": 1.0, "clip_pct": 1.0}, "fixed": list(fixed),
        "reference": {"method": reference, "params": params or {}, "evidence": "tests"},
        "text": render_target_text(model, scheduler, 8, target)}]}, allow_unicode=True))
    return load_catalog(extra_files=[path])
