"""Synthetic diffusion pipelines: real architectures with random weights, built offline.

Every family comes in two sizes:

- ``"tiny"``: the real block layout with tiny widths, for fast CPU tests;
- ``"full"``: the real configs with random weights, for timing without downloading checkpoints.

Configs are plain data (see `_component_specs`), so they can be fingerprinted. `materialize` saves a pipeline once
with `save_pretrained`, so that everything loads it the real way, with `PipelineClass.from_pretrained(folder)`.
Tokenizers are built offline too: the real OpenAI CLIP vocabulary (rebuilt from the BPE file that ships with
`open_clip`) and a small T5 Unigram vocabulary that covers English prompts.

torch, diffusers and transformers are imported inside functions: importing this module stays cheap.
"""

import functools
import hashlib
import json
import os
import shutil
import string
import tempfile
from pathlib import Path


SIZES = ("tiny", "full")

# Bump whenever the way pipelines are built or saved changes, so that cached folders are rebuilt.
FORMAT_VERSION = 1

TINY_RESOLUTION = 64  # pixel height = width of every tiny pipeline

# What the catalogue (manifests/models.yaml) does not say about a family: the pipeline constructor's arguments
# that are not components. The pipeline class and the full-size resolution come from the catalogue, so a new
# family is its models.yaml entry plus one entry here and its component configs in _component_specs.
_PIPELINE_ARGS = {
    "sd15": {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False},
    "sdxl": {"force_zeros_for_empty_prompt": True},
    "pixart-alpha": {},
    "pixart-sigma": {},
}
FAMILIES = tuple(_PIPELINE_ARGS)


@functools.lru_cache(maxsize=None)
def _model(family: str):
    """The family's catalogue entry (packaged manifests): pipeline class and full-size resolution."""
    from accelbench.manifest import load_catalog

    return load_catalog().models[family]


def _resolution(family: str, size: str) -> int:
    """Pixel height = width the pipeline is meant to run at. Denoisers get sample size resolution // 8 (the VAE
    downsamples 8x), which also makes it the pipeline's default height and width."""
    return TINY_RESOLUTION if size == "tiny" else _model(family).resolution


# Words the tiny T5 vocabulary holds whole; any other word is spelled out letter by letter.
_T5_WORDS = """
a an the of and or in on at to with by for from into over under above below near behind beside between through
is are was were be has have it its this that these those his her their our your my as up down out off while
one two three four five six seven eight nine ten many some several all each other very small large big tiny huge
tall short long old young new red orange yellow green blue purple pink brown black white gray grey gold silver
dark light bright colorful beautiful cute happy sad
photo photograph picture image painting drawing sketch illustration portrait landscape poster cartoon render
style art artwork digital oil watercolor realistic detailed high quality resolution cinematic lighting close view
man woman person people child boy girl baby family friend face hand hands eye eyes hair head
dog dogs cat cats horse bird birds fish cow sheep bear elephant lion tiger monkey rabbit mouse animal animals
car cars bus truck train bicycle boat ship plane airplane road street city town building house home room
kitchen table chair bed window door wall floor roof book books cup bowl plate food pizza cake apple banana
tree trees flower flowers grass forest park garden field mountain mountains river lake sea ocean beach sand
water sky cloud clouds sun moon star stars rain snow night day morning evening sunset fire ice stone wood
sitting standing walking running riding flying eating drinking holding playing wearing looking reading
astronaut robot castle space planet mars
"""


def tiny_resolution(family: str) -> int:
    """Pixel height (= width) the tiny pipeline of `family` is meant to run at.

    Tiny PixArt pipelines must be called with `use_resolution_binning=False`: binning only knows the real sample
    sizes (32/64/128).
    """
    _check(family, "tiny")
    return _resolution(family, "tiny")


def build_pipeline(family: str, size: str = "tiny", *, seed: int = 0, device="cpu", dtype=None):
    """Build the `family` pipeline of `size` with random weights, every model in eval mode.

    Weights come from torch's RNG seeded with `seed` (the caller's RNG state is restored afterwards): the same seed
    gives bit-identical weights on the same device type. Models are created directly on `device` (fast for
    full-size models on "cuda"; "meta" allocates nothing), in float32, then cast to `dtype` (None = float32).
    """
    import diffusers
    import torch

    specs = _component_specs(family, size)
    pipeline_name, pipeline_kwargs = _model(family).pipeline, _PIPELINE_ARGS[family]
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


def materialize(family: str, size: str = "tiny", cache_dir=None, *, seed: int = 0, device="cpu", dtype=None) -> Path:
    """Save the pipeline of `build_pipeline` once and return its folder, `<cache_dir>/<family>-<size>-<fingerprint>`.

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
        "components": _component_specs(family, size),
        "pipeline": [_model(family).pipeline, _PIPELINE_ARGS[family]],
        "seed": seed,
        "dtype": str(dtype or torch.float32),
        "device_type": torch.device(device).type,
    }
    fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir / f"{family}-{size}-{fingerprint}"
    if folder.is_dir():
        return folder

    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=cache_dir))
    try:
        build_pipeline(family, size, seed=seed, device=device, dtype=dtype).save_pretrained(tmp)
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


def _check(family, size):
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}, expected one of {FAMILIES}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}, expected one of {SIZES}")


def _component_specs(family, size):
    """Pipeline component name -> (class name, config), as JSON-serializable data."""
    _check(family, size)
    resolution = _resolution(family, size)
    if family == "sd15":
        clip_l = _clip_l_config(size)
        return {
            "vae": ("AutoencoderKL", _vae_config(size, resolution, scaling_factor=0.18215)),
            "text_encoder": ("CLIPTextModel", clip_l),
            "tokenizer": ("CLIPTokenizer", {"pad_token": "<|endoftext|>"}),
            "unet": ("UNet2DConditionModel", _sd15_unet_config(size, resolution // 8, clip_l["hidden_size"])),
            "scheduler": ("PNDMScheduler", _SD15_SCHEDULER),
        }
    if family == "sdxl":
        clip_l, clip_g = _clip_l_config(size), _clip_bigg_config(size)
        return {
            "vae": ("AutoencoderKL", _vae_config(size, resolution, scaling_factor=0.13025)),
            "text_encoder": ("CLIPTextModel", clip_l),
            "text_encoder_2": ("CLIPTextModelWithProjection", clip_g),
            "tokenizer": ("CLIPTokenizer", {"pad_token": "<|endoftext|>"}),
            "tokenizer_2": ("CLIPTokenizer", {"pad_token": "!"}),
            "unet": ("UNet2DConditionModel", _sdxl_unet_config(size, resolution // 8, clip_l, clip_g)),
            "scheduler": ("EulerDiscreteScheduler", _SDXL_SCHEDULER),
        }
    # PixArt-α uses the SD VAE, PixArt-Σ the SDXL VAE; the architecture is the same.
    alpha = family == "pixart-alpha"
    vocab = _t5_vocab()
    t5 = _t5_config(size, tokenizer_size=len(vocab))
    return {
        "tokenizer": ("T5Tokenizer", {"vocab": vocab}),
        "text_encoder": ("T5EncoderModel", t5),
        "vae": ("AutoencoderKL", _vae_config(size, resolution, scaling_factor=0.18215 if alpha else 0.13025)),
        "transformer": ("PixArtTransformer2DModel", _pixart_config(size, resolution // 8, alpha, t5["d_model"])),
        "scheduler": ("DPMSolverMultistepScheduler", _PIXART_SCHEDULER),
    }


def _build_component(class_name, config, device, dtype):
    import diffusers
    import transformers

    if class_name == "CLIPTokenizer":
        return _clip_tokenizer(**config)
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


# Schedulers as the real pipelines ship them.
_SD15_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "skip_prk_steps": True,
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "clip_sample": False,
}
# stabilityai/stable-diffusion-xl-base-1.0's scheduler_config.json: its DDIM/PNDM-only entries matter when a
# program switches the sampler (without them DDIM clips x0 to [-1, 1] and PNDM adds Runge-Kutta steps).
_SDXL_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
    "timestep_spacing": "leading",
    "steps_offset": 1,
    "clip_sample": False,
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
}
# PixArt's conversion scripts save `DPMSolverMultistepScheduler()`, i.e. these defaults.
_PIXART_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "algorithm_type": "dpmsolver++",
    "solver_order": 2,
    "solver_type": "midpoint",
    "lower_order_final": True,
    "prediction_type": "epsilon",
    "timestep_spacing": "linspace",
    "steps_offset": 0,
}


def _vae_config(size, sample_size, scaling_factor):
    """The SD/SDXL AutoencoderKL; tiny keeps its 4 levels, so latents stay 8x smaller than images."""
    if size == "full":
        widths = {"block_out_channels": [128, 256, 512, 512], "norm_num_groups": 32}
    else:
        widths = {"block_out_channels": [8, 8, 8, 8], "norm_num_groups": 2}
    return {
        **widths,
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "layers_per_block": 2,
        "act_fn": "silu",
        "sample_size": sample_size,
        "scaling_factor": scaling_factor,
        "force_upcast": True,
    }


def _clip_text_config(hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, hidden_act):
    return {
        "vocab_size": 49408,
        "max_position_embeddings": 77,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "projection_dim": hidden_size,
        "hidden_act": hidden_act,
        "layer_norm_eps": 1e-5,
        # As in the real configs; eos_token_id 2 makes CLIP pool at the highest token id, i.e. at <|endoftext|>.
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
    }


def _clip_l_config(size):
    """OpenAI CLIP ViT-L/14 text encoder (SD1.5, SDXL's first encoder)."""
    if size == "full":
        return _clip_text_config(768, 3072, 12, 12, "quick_gelu")
    return _clip_text_config(32, 64, 2, 4, "quick_gelu")


def _clip_bigg_config(size):
    """OpenCLIP ViT-bigG/14 text encoder with projection (SDXL's second encoder)."""
    if size == "full":
        return _clip_text_config(1280, 5120, 32, 20, "gelu")
    return _clip_text_config(64, 128, 2, 4, "gelu")


def _t5_config(size, tokenizer_size):
    """T5 v1.1 XXL encoder; the full one keeps T5's 32128 embeddings, the tiny one has one per tokenizer piece."""
    if size == "full":
        widths = {"vocab_size": 32128, "d_model": 4096, "d_ff": 10240, "d_kv": 64, "num_heads": 64, "num_layers": 24}
    else:
        widths = {"vocab_size": tokenizer_size, "d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4, "num_layers": 2}
    return {
        **widths,
        "feed_forward_proj": "gated-gelu",
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "layer_norm_epsilon": 1e-6,
        "dropout_rate": 0.1,
        "tie_word_embeddings": False,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
    }


def _sd15_unet_config(size, sample_size, cross_attention_dim):
    if size == "full":
        widths = {"block_out_channels": [320, 640, 1280, 1280], "attention_head_dim": 8, "norm_num_groups": 32}
    else:
        widths = {"block_out_channels": [16, 16, 32, 32], "attention_head_dim": 2, "norm_num_groups": 8}
    return {
        **widths,
        "sample_size": sample_size,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "layers_per_block": 2,
        "cross_attention_dim": cross_attention_dim,
        "act_fn": "silu",
        "norm_eps": 1e-5,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    }


def _sdxl_unet_config(size, sample_size, clip_l, clip_g):
    """SDXL base UNet: its first level has no attention, so tomesd's default max_downsample=1 does nothing."""
    if size == "full":
        widths = {
            "block_out_channels": [320, 640, 1280],
            "transformer_layers_per_block": [1, 2, 10],
            "attention_head_dim": [5, 10, 20],
            "addition_time_embed_dim": 256,
            "norm_num_groups": 32,
        }
    else:
        widths = {
            "block_out_channels": [16, 32, 64],
            "transformer_layers_per_block": [1, 1, 2],
            "attention_head_dim": [1, 2, 4],
            "addition_time_embed_dim": 8,
            "norm_num_groups": 8,
        }
    return {
        **widths,
        "sample_size": sample_size,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "layers_per_block": 2,
        # The UNet attends to both encoders' hidden states, concatenated.
        "cross_attention_dim": clip_l["hidden_size"] + clip_g["hidden_size"],
        # text_time: 6 size/crop conditions, each embedded with addition_time_embed_dim, plus the pooled
        # projection of the second encoder.
        "addition_embed_type": "text_time",
        "projection_class_embeddings_input_dim": 6 * widths["addition_time_embed_dim"] + clip_g["projection_dim"],
        "use_linear_projection": True,
        "act_fn": "silu",
        "norm_eps": 1e-5,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    }


def _pixart_config(size, sample_size, alpha, caption_channels):
    """PixArt-XL-2 (α: 1024-MS, Σ: Sigma-XL-2-1024-MS).

    Only the full α uses resolution/aspect-ratio conditions: the pipelines pass them only to sample size 128.
    """
    if size == "full":
        widths = {"num_layers": 28, "num_attention_heads": 16, "attention_head_dim": 72}
    else:
        widths = {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 16}
    return {
        **widths,
        "sample_size": sample_size,
        "patch_size": 2,
        "in_channels": 4,
        "out_channels": 8,
        "caption_channels": caption_channels,
        "cross_attention_dim": widths["num_attention_heads"] * widths["attention_head_dim"],
        "norm_type": "ada_norm_single",
        "num_embeds_ada_norm": 1000,
        "norm_elementwise_affine": False,
        "norm_eps": 1e-6,
        "activation_fn": "gelu-approximate",
        "attention_bias": True,
        "use_additional_conditions": alpha and sample_size == 128,
        # α derives its scale from the sample size (2 at 128); Σ fixes it.
        "interpolation_scale": None if alpha else 2,
    }


def _clip_tokenizer(pad_token):
    """OpenAI CLIP's tokenizer (49,408 tokens), rebuilt offline from open_clip's BPE merges.

    The vocabulary is built the way open_clip's `SimpleTokenizer` builds its encoder: the 256 byte symbols, the same
    with an end-of-word mark, one token per merge, then the two special tokens.
    """
    import gzip

    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    with gzip.open(default_bpe(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    # After a header line, the first 48,894 merges: 49,408 = 2 x 256 byte symbols + merges + 2 special tokens.
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    byte_symbols = list(bytes_to_unicode().values())
    tokens = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    # The pipelines pad and truncate to model_max_length, which is otherwise unbounded (and overflows).
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token, model_max_length=77)


def _t5_vocab():
    """A small T5 Unigram vocabulary: specials at T5's ids, single characters, then common words.

    Word pieces score higher than their spelling, so known words stay whole; any other word made of ASCII letters,
    digits and punctuation is spelled out. Other characters map to <unk>.
    """
    chars = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation
    return (
        [["<pad>", 0.0], ["</s>", 0.0], ["<unk>", 0.0], ["▁", -2.0]]
        + [[c, -10.0] for c in chars]
        + [["▁" + word, -5.0] for word in dict.fromkeys(_T5_WORDS.split())]
    )
