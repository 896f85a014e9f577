"""A bare diffusers loop: what a user would write by hand, independent of accelbench's programs.

It is the reference the harness is measured against (bench_generate.py): same model folder, sampler, steps,
guidance, resolution, per-image generators and ``output_type="np"``; the acceleration applied straight
through each library's API.
"""

from __future__ import annotations

import time

import torch

_SD = {"pipeline": "StableDiffusionPipeline", "load": {"safety_checker": None, "requires_safety_checker": False},
       "tgate": ("TgateSDLoader", "TgateSDDeepCacheLoader")}
_SDXL = {"pipeline": "StableDiffusionXLPipeline", "load": {"add_watermarker": False},
         "tgate": ("TgateSDXLLoader", "TgateSDXLDeepCacheLoader")}
FAMILIES = {"sd15": _SD, "sd21": _SD, "sd21-v": _SD, "sdxl": _SDXL}  # SD2.1's families load as SD1.5 does


TOME_PARAMS = ("ratio", "max_downsample", "sx", "sy", "use_rand", "merge_attn", "merge_crossattn", "merge_mlp")
TGATE_CALL_PARAMS = ("gate_step", "sp_interval", "fi_interval", "warm_up")


def components(method: str) -> set[str]:
    """The methods a catalogue method id combines ('deepcache_tome_tgate' -> DeepCache, ToMe, T-GATE)."""
    return set() if method == "none" else set(method.split("_"))


def load(family: str, method: str, params: dict, model_path: str, device: str, dtype):
    import diffusers
    import tgate

    entry, parts = FAMILIES[family], components(method)
    pipe = getattr(diffusers, entry["pipeline"]).from_pretrained(model_path, dtype=dtype, **entry["load"])
    pipe.scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    if "tome" in parts:
        import tomesd

        tomesd.apply_patch(pipe, **{name: params[name] for name in TOME_PARAMS})
    deepcache = {name: params[name] for name in ("cache_interval", "cache_branch_id")} if "deepcache" in parts else {}
    if "tgate" in parts:  # T-GATE's loaders enable DeepCache themselves
        pipe = getattr(tgate, entry["tgate"][1 if deepcache else 0])(pipe, **deepcache)
    elif deepcache:
        from DeepCache import DeepCacheSDHelper

        helper = DeepCacheSDHelper(pipe=pipe)
        helper.set_params(**deepcache)
        helper.enable()
    return pipe


def call(pipe, method: str, params: dict, prompts, seeds, steps: int, guidance_scale: float, size: int):
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    kwargs = dict(num_inference_steps=steps, guidance_scale=guidance_scale, height=size, width=size,
                  generator=generators, output_type="np")
    parts = components(method)
    if "tgate" in parts:
        if "deepcache" in parts:
            for module in pipe.unet.modules():  # T-GATE's stale caches would break the next call
                if hasattr(module, "cache"):
                    module.cache = None
        return pipe.tgate(prompts, **{name: params[name] for name in TGATE_CALL_PARAMS}, **kwargs).images
    return pipe(prompts, **kwargs).images


def synchronize(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed_call(pipe, method, params, prompts, seeds, steps, guidance_scale, size, device) -> float:
    """One call's latency: synchronise, perf_counter, call, synchronise."""
    synchronize(device)
    start = time.perf_counter()
    call(pipe, method, params, prompts, seeds, steps, guidance_scale, size)
    synchronize(device)
    return time.perf_counter() - start
