"""The synthetic architectures: component configs (tiny and full-size) of every pipeline that
:mod:`accelbench.builder.synthetic` builds with random weights, and their offline tokenizers. Plain data and
small functions; models.yaml names an architecture per model family (``synthetic:``). No torch here.
"""

import string

# The pipeline constructor's arguments that are not components, per architecture. The pipeline class and the
# full-size resolution come from the model's catalogue entry.
_NO_SAFETY_CHECKER = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
PIPELINE_ARGS = {
    "sd15": _NO_SAFETY_CHECKER,
    "sd21": _NO_SAFETY_CHECKER,  # SD2.1-base: 512 px, epsilon prediction
    "sd21-v": _NO_SAFETY_CHECKER,  # SD2.1: 768 px, v-prediction
    "sdxl": {"force_zeros_for_empty_prompt": True},
    "pixart-alpha": {},
    "pixart-sigma": {},
}
ARCHITECTURES = tuple(PIPELINE_ARGS)
SIZES = ("tiny", "full")
# Pixel height = width of each tiny pipeline. PixArt's resolution binning (on by default, in the pipelines and in
# tgate's) only knows transformer sample sizes 32, 64 and 128: its tiny model has 32 (256 px), so a program that
# leaves binning on runs on it as on the real 1024 px model, where binning maps 1024 to itself.
# SD2.1's tiny v-model runs at twice the base's size, as the real one runs above the base's 512 px (a latent of 16
# halves evenly through the UNet's three downsamplings, as the real 96 does).
TINY_RESOLUTION = {"sd15": 64, "sd21": 64, "sd21-v": 128, "sdxl": 64, "pixart-alpha": 256, "pixart-sigma": 256}



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



def component_specs(architecture: str, size: str, resolution: int) -> dict[str, tuple[str, dict]]:
    """Pipeline component name -> (class name, config) of ``architecture`` at ``size`` for images of
    ``resolution`` pixels (the denoiser's sample size is resolution // 8), as JSON-serializable data."""
    if architecture == "sd15":
        clip_l = _clip_l_config(size)
        return {
            "vae": ("AutoencoderKL", _vae_config(size, resolution, scaling_factor=0.18215)),
            "text_encoder": ("CLIPTextModel", clip_l),
            "tokenizer": ("CLIPTokenizer", {"pad_token": "<|endoftext|>"}),
            "unet": ("UNet2DConditionModel", _sd15_unet_config(size, resolution // 8, clip_l["hidden_size"])),
            "scheduler": ("PNDMScheduler", _SD15_SCHEDULER),
        }
    if architecture in ("sd21", "sd21-v"):
        clip_h = _clip_h_config(size)
        v_model = architecture == "sd21-v"
        return {
            "vae": ("AutoencoderKL", _vae_config(size, resolution, scaling_factor=0.18215)),
            "text_encoder": ("CLIPTextModel", clip_h),
            "tokenizer": ("CLIPTokenizer", {"pad_token": "!"}),
            "unet": ("UNet2DConditionModel", _sd21_unet_config(size, resolution // 8, clip_h["hidden_size"],
                                                               upcast_attention=v_model)),
            "scheduler": ("DDIMScheduler", _SD21_V_SCHEDULER) if v_model else ("PNDMScheduler", _SD21_SCHEDULER),
        }
    if architecture == "sdxl":
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
    alpha = architecture == "pixart-alpha"
    vocab = t5_vocab()
    t5 = _t5_config(size, tokenizer_size=len(vocab))
    return {
        "tokenizer": ("T5Tokenizer", {"vocab": vocab}),
        "text_encoder": ("T5EncoderModel", t5),
        "vae": ("AutoencoderKL", _vae_config(size, resolution, scaling_factor=0.18215 if alpha else 0.13025)),
        "transformer": ("PixArtTransformer2DModel", _pixart_config(size, resolution // 8, alpha, t5["d_model"])),
        "scheduler": ("DPMSolverMultistepScheduler", _PIXART_SCHEDULER),
    }



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
# stabilityai/stable-diffusion-2-1-base's scheduler_config.json, and stable-diffusion-2-1's: the v-model predicts
# velocity; every sampler a program switches to reads prediction_type from this config.
_SD21_SCHEDULER = {**_SD15_SCHEDULER, "prediction_type": "epsilon"}
_SD21_V_SCHEDULER = {**_SD21_SCHEDULER, "prediction_type": "v_prediction"}
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


def _clip_h_config(size):
    """OpenCLIP ViT-H/14 text encoder (SD2.x), as diffusers' conversion saves it: 23 of its 24 layers (SD2 conditions
    on the penultimate one)."""
    if size == "full":
        return _clip_text_config(1024, 4096, 23, 16, "gelu")
    return _clip_text_config(32, 64, 2, 4, "gelu")


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


def _sd21_unet_config(size, sample_size, cross_attention_dim, upcast_attention):
    """SD2.x UNet: SD1.5's layout with linear projections and per-level head counts (diffusers keeps them in
    ``attention_head_dim``); the 768 px v-model upcasts attention to float32, which it needs in float16."""
    if size == "full":
        widths = {"block_out_channels": [320, 640, 1280, 1280], "attention_head_dim": [5, 10, 20, 20],
                  "norm_num_groups": 32}
    else:
        widths = {"block_out_channels": [16, 16, 32, 32], "attention_head_dim": [2, 2, 4, 4], "norm_num_groups": 8}
    return {**_sd15_unet_config(size, sample_size, cross_attention_dim), **widths, "use_linear_projection": True,
            "upcast_attention": upcast_attention}


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


def clip_tokenizer(pad_token):
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


def t5_vocab():
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
