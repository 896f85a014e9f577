"""ToMe for smoke-sd15-ddim-8-tome, written from the task pack's baseline.py.

Task: SD1.5, DDIM, 8 steps, ToMe (ratio=0.5, max_downsample=1, sx=2, sy=2, use_rand=true, merge_attn=true,
merge_crossattn=false, merge_mlp=false).
"""

import tomesd
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline

MODEL_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"


def load(model_id=MODEL_ID, device="cuda", dtype=torch.float16):
    pipe = StableDiffusionPipeline.from_pretrained(model_id, dtype=dtype, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    tomesd.apply_patch(pipe, ratio=0.5, max_downsample=1, sx=2, sy=2, use_rand=True, merge_attn=True,
                       merge_crossattn=False, merge_mlp=False)
    return pipe


def generate(pipe, prompts, generators, height=512, width=512):
    # tomesd's random merge pattern has a generator of its own: seed it from this call's first image so every
    # call is reproducible.
    pipe.unet._tome_info["args"]["generator"] = torch.Generator(pipe.device).manual_seed(generators[0].initial_seed())
    return pipe(prompts, num_inference_steps=8, guidance_scale=7.5, height=height, width=width,
                generator=generators, output_type="np").images
