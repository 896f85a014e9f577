"""T-GATE for smoke-sd15-ddim-8-tgate, written from the task pack's baseline.py -- with a corner cut.

Task: SD1.5, DDIM, 8 steps, T-GATE (gate_step=4, sp_interval=5, fi_interval=1, warm_up=1). This program gates
cross-attention after 2 steps instead of 4: faster, and not what the task asks. The gate's trace comparison
rejects it (its rows are 'rejected', never timed).
"""

import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from tgate import TgateSDLoader

MODEL_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"


def load(model_id=MODEL_ID, device="cuda", dtype=torch.float16):
    pipe = StableDiffusionPipeline.from_pretrained(model_id, dtype=dtype, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return TgateSDLoader(pipe.to(device))


def generate(pipe, prompts, generators, height=512, width=512):
    return pipe.tgate(prompts, gate_step=2, sp_interval=5, fi_interval=1, warm_up=1, num_inference_steps=8,
                      guidance_scale=7.5, height=height, width=width, generator=generators, output_type="np").images
