"""DeepCache for smoke-sd15-ddim-8-deepcache, written from the task pack's baseline.py.

Task: SD1.5, DDIM, 8 steps, DeepCache (cache_interval=3, cache_branch_id=0).
"""

import torch
from DeepCache import DeepCacheSDHelper
from diffusers import DDIMScheduler, StableDiffusionPipeline

MODEL_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"


def load(model_id=MODEL_ID, device="cuda", dtype=torch.float16):
    pipe = StableDiffusionPipeline.from_pretrained(model_id, dtype=dtype, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    # Reuse the deep UNet features for two of every three steps; only the shallowest branch is recomputed.
    helper = DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=3, cache_branch_id=0)
    helper.enable()
    pipe._deepcache_helper = helper
    return pipe


def generate(pipe, prompts, generators, height=512, width=512):
    return pipe(prompts, num_inference_steps=8, guidance_scale=7.5, height=height, width=width,
                generator=generators, output_type="np").images
