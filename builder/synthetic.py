"""Synthetic diffusion pipelines: real architectures with random weights, built offline.

Every architecture (:mod:`accelbench.builder.synthetic_configs`; a model family names its own in models.yaml,
``synthetic:``) comes in two sizes:

- ``"tiny"``: the real block layout with tiny widths, for fast CPU tests;
- ``"full"``: the real configs with random weights, for timing without downloading checkpoints.

Configs are plain data, so they can be fingerprinted. :func:`materialize` saves a pipeline once with
``save_pretrained``, so that everything loads it the real way, with ``PipelineClass.from_pretrained(folder)``.
Tokenizers are built offline too: the real OpenAI CLIP vocabulary (rebuilt from the BPE file that ships with
``open_clip``) and a small T5 Unigram vocabulary that covers English prompts. Every function takes the family's
catalogue entry (:class:`accelbench.manifest.Model`), so another manifest root (``--manifests``) gets its own.

torch, diffusers and transformers are imported inside functions: importing this module stays cheap.
"""

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from accelbench.builder import synthetic_configs as configs
from accelbench.builder.synthetic_configs import ARCHITECTURES, SIZES  # noqa: F401  (the builder's public names)

# Bump whenever the way pipelines are built or saved changes, so that cached folders are rebuilt.
FORMAT_VERSION = 1


def resolution(model, size: str) -> int:
    """Pixel height = width the pipeline of ``model`` (a catalogue entry) at ``size`` is meant to run at: the
    denoiser gets sample size resolution // 8 (the VAE downsamples 8x), which is also the pipeline's default
    height and width."""
    _check(model, size)
    return configs.TINY_RESOLUTION[model.synthetic] if size == "tiny" else model.resolution


def tiny_resolution(model) -> int:
    """Pixel height (= width) the tiny pipeline of ``model`` is meant to run at (PixArt: 256, a size its
    resolution binning knows)."""
    return resolution(model, "tiny")


def _specs(model, size: str) -> dict:
    return configs.component_specs(model.synthetic, size, resolution(model, size))


def build_pipeline(model, size: str = "tiny", *, seed: int = 0, device="cpu", dtype=None):
    """Build the pipeline of ``model`` (a catalogue entry) at ``size`` with random weights, every model in eval mode.

    Weights come from torch's RNG seeded with `seed` (the caller's RNG state is restored afterwards): the same seed
    gives bit-identical weights on the same device type. Models are created directly on `device` (fast for
    full-size models on "cuda"; "meta" allocates nothing), in float32, then cast to `dtype` (None = float32).
    """
    import diffusers
    import torch

    specs = _specs(model, size)
    pipeline_name, pipeline_kwargs = model.pipeline, configs.PIPELINE_ARGS[model.synthetic]
    device = torch.device(device)
    # Weight initialization draws from torch's global RNG: fork it (CPU and the target GPU) before seeding.
    cuda_devices = []
    if device.type == "cuda":
        cuda_devices = [torch.cuda.current_device() if device.index is None else device.index]
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        components = {
            name: _build_component(class_name, config, device, dtype)
            for name, (class_name, config) in specs.items()
        }
    return getattr(diffusers, pipeline_name)(**components, **pipeline_kwargs)


def materialize(model, size: str = "tiny", cache_dir=None, *, seed: int = 0, device="cpu", dtype=None) -> Path:
    """Save the pipeline of `build_pipeline` once and return its folder, `<cache_dir>/<model id>-<size>-<fingerprint>`.

    The fingerprint covers the configs, `seed`, `dtype`, the device type (weights drawn on CPU and CUDA differ) and
    `FORMAT_VERSION`. An existing folder is returned as is. The pipeline is saved into a temporary sibling folder
    that is then renamed into place, so a crash never leaves a partial folder under the final name. `cache_dir`
    defaults to `$ACCELBENCH_CACHE/synthetic`, or `~/.cache/accelbench/synthetic` without that variable.
    """
    import torch

    if cache_dir is None:
        cache_dir = (
            Path(os.environ["ACCELBENCH_CACHE"]) / "synthetic"
            if "ACCELBENCH_CACHE" in os.environ
            else Path.home() / ".cache" / "accelbench" / "synthetic"
        )
    cache_dir = Path(cache_dir)
    key = {
        "format_version": FORMAT_VERSION,
        "components": _specs(model, size),
        "pipeline": [model.pipeline, configs.PIPELINE_ARGS[model.synthetic]],
        "seed": seed,
        "dtype": str(dtype or torch.float32),
        "device_type": torch.device(device).type,
    }
    fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir / f"{model.id}-{size}-{fingerprint}"
    if folder.is_dir():
        return folder

    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=cache_dir))
    try:
        build_pipeline(model, size, seed=seed, device=device, dtype=dtype).save_pretrained(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:
            # Renaming onto a non-empty folder fails: another process finished first, keep its copy.
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if torch.device(device).type == "cuda":
            # The built pipeline is gone; without this its memory stays cached in the calling process (12.5 GB
            # for SDXL on an H200: the generate parent's), out of reach of the workers that load the model.
            torch.cuda.empty_cache()
    return folder


def _check(model, size):
    if model.synthetic not in ARCHITECTURES:
        raise ValueError(f"unknown synthetic architecture {model.synthetic!r}, expected one of {ARCHITECTURES}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}, expected one of {SIZES}")


def _build_component(class_name, config, device, dtype):
    import diffusers
    import transformers

    if class_name == "CLIPTokenizer":
        return configs.clip_tokenizer(**config)
    if class_name == "T5Tokenizer":
        # No sentinel tokens (<extra_id_N>): the vocabulary stays exactly the listed pieces.
        return transformers.T5Tokenizer(vocab=[tuple(piece) for piece in config["vocab"]], extra_ids=0)
    if class_name.endswith("Scheduler"):
        # Outside the device context: schedulers keep their tables on the CPU, as when loaded.
        return getattr(diffusers, class_name).from_config(config)
    with device:
        if hasattr(diffusers, class_name):
            model = getattr(diffusers, class_name).from_config(config)
        else:
            model_class = getattr(transformers, class_name)
            model = model_class(model_class.config_class(**config))
    # Models built from a config start in train mode; T5's dropout would make outputs random.
    model.eval()
    return model if dtype is None else model.to(dtype)

