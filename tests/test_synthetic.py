"""Tests for accelbench.builder.synthetic: tiny pipelines on CPU, full-size configs on the meta device, offline."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import diffusers
import numpy as np
import open_clip
import pytest
import tomesd
import torch

from accelbench.builder import synthetic
from accelbench.manifest import load_catalog

MODELS = load_catalog().models  # the packaged families, each naming its synthetic architecture
FAMILIES = tuple(MODELS)


PROMPT = "A photo of an astronaut riding a horse on Mars, 4k, highly detailed!"
PIPELINE_CLASSES = {
    "sd15": diffusers.StableDiffusionPipeline,
    "sd21": diffusers.StableDiffusionPipeline,
    "sd21-v": diffusers.StableDiffusionPipeline,
    "sdxl": diffusers.StableDiffusionXLPipeline,
    "pixart-alpha": diffusers.PixArtAlphaPipeline,
    "pixart-sigma": diffusers.PixArtSigmaPipeline,
}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture(scope="module")
def folders(cache_dir):
    return {family: synthetic.materialize(MODELS[family], "tiny", cache_dir) for family in FAMILIES}


@pytest.fixture(scope="module")
def pipelines():
    return {family: synthetic.build_pipeline(MODELS[family]) for family in FAMILIES}


def _generate(pipe, family, steps=2):
    resolution = synthetic.tiny_resolution(MODELS[family])
    pipe.set_progress_bar_config(disable=True)  # PixArt's resolution binning stays on: it knows the tiny size
    return pipe(
        PROMPT,
        num_inference_steps=steps,
        height=resolution,
        width=resolution,
        output_type="np",
        generator=torch.Generator("cpu").manual_seed(0),
    ).images


def _models(pipe):
    return {name: c for name, c in pipe.components.items() if isinstance(c, torch.nn.Module)}


def _weights(pipe):
    return {f"{name}.{k}": v for name, model in _models(pipe).items() for k, v in model.state_dict().items()}


def test_import_is_light():
    code = (
        "import sys, accelbench.builder.synthetic; "
        "heavy = {'torch', 'diffusers', 'transformers', 'open_clip'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_architecture_or_size():
    with pytest.raises(ValueError, match="architecture 'sd3'"):
        synthetic.build_pipeline(dataclasses.replace(MODELS["sd15"], synthetic="sd3"))
    with pytest.raises(ValueError, match="size"):
        synthetic.materialize(MODELS["sd15"], "medium")


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_saved_pipeline_loads_and_matches(family, folders, pipelines):
    folder = folders[family]
    assert folder.name.startswith(f"{family}-tiny-")
    loaded = PIPELINE_CLASSES[family].from_pretrained(folder)
    pipe = pipelines[family]
    assert type(loaded) is type(pipe) is PIPELINE_CLASSES[family]

    for p in (pipe, loaded):
        assert not any(m.training for model in _models(p).values() for m in model.modules())
    # The denoiser's sample size makes tiny_resolution the pipeline's default size.
    denoiser = pipe.transformer if family.startswith("pixart") else pipe.unet
    assert denoiser.config.sample_size * pipe.vae_scale_factor == synthetic.tiny_resolution(MODELS[family])

    expected = _generate(pipe, family)
    images = _generate(loaded, family)
    resolution = synthetic.tiny_resolution(MODELS[family])
    assert images.shape == (1, resolution, resolution, 3)
    assert np.isfinite(images).all()
    assert np.abs(images - expected).max() <= 1e-6


def test_materialize_is_idempotent(folders, cache_dir, monkeypatch):
    folder = folders["sd15"]
    mtime = (folder / "model_index.json").stat().st_mtime_ns

    def no_rebuild(*args, **kwargs):
        raise AssertionError("materialize rebuilt an existing folder")

    monkeypatch.setattr(synthetic, "build_pipeline", no_rebuild)
    assert synthetic.materialize(MODELS["sd15"], "tiny", cache_dir) == folder
    assert (folder / "model_index.json").stat().st_mtime_ns == mtime
    # Only complete folders remain: no temporary siblings.
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted(f.name for f in folders.values())


def _replace_build(monkeypatch, save_pretrained):
    """Make build_pipeline return a stand-in pipeline whose `save_pretrained(folder)` is the given function."""

    class StandIn:
        def save_pretrained(self, folder):
            save_pretrained(Path(folder))

    monkeypatch.setattr(synthetic, "build_pipeline", lambda *args, **kwargs: StandIn())


def test_fingerprint_covers_seed_and_dtype(folders, tmp_path, monkeypatch):
    _replace_build(monkeypatch, lambda folder: (folder / "model_index.json").write_text("{}"))
    names = [
        synthetic.materialize(MODELS["sd15"], "tiny", tmp_path, **kwargs).name
        for kwargs in ({}, {"seed": 1}, {"dtype": torch.float16})
    ]
    # The name does not depend on the cache folder.
    assert names[0] == folders["sd15"].name
    assert len(set(names)) == 3


def test_materialize_crash_leaves_nothing(tmp_path, monkeypatch):
    def crash(folder):
        (folder / "model_index.json").write_text("{}")
        raise RuntimeError("crash while saving")

    _replace_build(monkeypatch, crash)
    with pytest.raises(RuntimeError, match="crash while saving"):
        synthetic.materialize(MODELS["pixart-sigma"], "tiny", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_materialize_keeps_the_winner_of_a_race(folders, tmp_path, monkeypatch):
    final = tmp_path / folders["pixart-sigma"].name

    def lose_race(folder):
        (folder / "model_index.json").write_text("ours")
        # Another process finishes first.
        final.mkdir()
        (final / "model_index.json").write_text("theirs")

    _replace_build(monkeypatch, lose_race)
    assert synthetic.materialize(MODELS["pixart-sigma"], "tiny", tmp_path) == final
    assert (final / "model_index.json").read_text() == "theirs"
    assert list(tmp_path.iterdir()) == [final]


def test_default_cache_dir_follows_env(folders, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELBENCH_CACHE", str(tmp_path))
    folder = synthetic.materialize(MODELS["pixart-sigma"], "tiny")
    assert folder == tmp_path / "synthetic" / folders["pixart-sigma"].name
    assert (folder / "model_index.json").is_file()


def test_weights_depend_only_on_seed(pipelines):
    rng_state = torch.get_rng_state()
    same = _weights(synthetic.build_pipeline(MODELS["sd15"], seed=0))
    other = _weights(synthetic.build_pipeline(MODELS["sd15"], seed=1))
    # Building leaves the caller's RNG alone.
    assert torch.equal(torch.get_rng_state(), rng_state)

    reference = _weights(pipelines["sd15"])
    assert same.keys() == reference.keys() == other.keys()
    assert all(torch.equal(same[k], reference[k]) for k in reference)
    # Every model draws new weights (buffers and constant initializations aside).
    for name in _models(pipelines["sd15"]):
        assert any(not torch.equal(other[k], reference[k]) for k in reference if k.startswith(f"{name}."))


def test_dtype(pipelines):
    pipe = synthetic.build_pipeline(MODELS["pixart-sigma"], dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for model in _models(pipe).values() for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in pipelines["pixart-sigma"].transformer.parameters())


def test_clip_tokenizers_match_open_clip(pipelines, folders):
    reference = open_clip.get_tokenizer("ViT-B-32")([PROMPT])[0].tolist()
    reference = reference[: reference.index(49407) + 1]
    loaded = diffusers.StableDiffusionXLPipeline.from_pretrained(folders["sdxl"])
    for tokenizer in (pipelines["sd15"].tokenizer, loaded.tokenizer):
        assert len(tokenizer) == 49408
        assert tokenizer(PROMPT).input_ids == reference

    # SDXL's second tokenizer pads with "!" (id 0) like the real one, which therefore also turns every "!" in a
    # prompt into id 0 instead of "!</w>" (256): diffusers issue #4153.
    assert len(loaded.tokenizer_2) == 49408
    assert loaded.tokenizer_2(PROMPT).input_ids == [0 if i == 256 else i for i in reference]
    padding = {"padding": "max_length", "max_length": 77}
    assert loaded.tokenizer(PROMPT, **padding).input_ids[-1] == 49407
    assert loaded.tokenizer_2(PROMPT, **padding).input_ids[-1] == 0


def test_t5_tokenizer_covers_english(pipelines, folders):
    pipe = pipelines["pixart-alpha"]
    loaded = diffusers.PixArtAlphaPipeline.from_pretrained(folders["pixart-alpha"])
    ids = pipe.tokenizer(PROMPT).input_ids
    assert loaded.tokenizer(PROMPT).input_ids == ids
    assert pipe.tokenizer.unk_token_id not in ids
    assert ids[-1] == pipe.tokenizer.eos_token_id == 1
    assert pipe.tokenizer.pad_token_id == 0
    # Common words stay whole, other words are spelled out.
    tokens = pipe.tokenizer.tokenize("a photo of a zebra")
    assert tokens == ["▁a", "▁photo", "▁of", "▁a", "▁", "z", "e", "b", "r", "a"]
    assert pipe.text_encoder.config.vocab_size == len(pipe.tokenizer)


# Parameter counts of the real models (millions).
REAL_PARAMETERS = {
    "sd15": {"unet": 859.5, "vae": 83.7, "text_encoder": 123.1},
    "sd21": {"unet": 865.9, "vae": 83.7, "text_encoder": 340.4},
    "sd21-v": {"unet": 865.9, "vae": 83.7, "text_encoder": 340.4},
    "sdxl": {"unet": 2567.5, "vae": 83.7, "text_encoder": 123.1, "text_encoder_2": 694.7},
    "pixart-alpha": {"transformer": 611.3, "vae": 83.7, "text_encoder": 4762.3},
    "pixart-sigma": {"transformer": 610.9, "vae": 83.7, "text_encoder": 4762.3},
}


@pytest.mark.parametrize("family", FAMILIES)
def test_full_size_parameter_counts(family):
    pipe = synthetic.build_pipeline(MODELS[family], "full", device="meta")
    models = _models(pipe)
    assert models.keys() == REAL_PARAMETERS[family].keys()
    for name, expected in REAL_PARAMETERS[family].items():
        parameters = list(models[name].parameters())
        assert all(p.is_meta for p in parameters)
        assert sum(p.numel() for p in parameters) / 1e6 == pytest.approx(expected, rel=0.01), name

    # Real token ids fit the full-size text encoders.
    vocab_size = pipe.text_encoder.config.vocab_size
    assert vocab_size == (32128 if family.startswith("pixart") else 49408)
    assert len(pipe.tokenizer) <= vocab_size


def test_full_size_details():
    sdxl = synthetic.build_pipeline(MODELS["sdxl"], "full", device="meta")
    assert not hasattr(sdxl.unet.down_blocks[0], "attentions")
    assert sdxl.vae.config.scaling_factor == 0.13025 and sdxl.vae.config.force_upcast
    assert type(sdxl.scheduler).__name__ == "EulerDiscreteScheduler"
    assert sdxl.scheduler.config.timestep_spacing == "leading"

    alpha = synthetic.build_pipeline(MODELS["pixart-alpha"], "full", device="meta")
    sigma = synthetic.build_pipeline(MODELS["pixart-sigma"], "full", device="meta")
    assert alpha.transformer.use_additional_conditions and not sigma.transformer.use_additional_conditions
    assert (alpha.vae.config.scaling_factor, sigma.vae.config.scaling_factor) == (0.18215, 0.13025)
    assert sigma.transformer.config.interpolation_scale == 2


def test_sd21_configs_are_the_shipped_ones(pipelines):
    for family, size, prediction, scheduler, upcast in (("sd21", 64, "epsilon", "PNDMScheduler", False),
                                                        ("sd21-v", 96, "v_prediction", "DDIMScheduler", True)):
        full = synthetic.build_pipeline(MODELS[family], "full", device="meta")
        assert full.unet.config.sample_size == size  # 512 and 768 px: the pipeline's default size
        assert type(full.scheduler).__name__ == scheduler and full.scheduler.config.prediction_type == prediction
        assert full.unet.config.upcast_attention is upcast and full.unet.config.use_linear_projection
        assert full.unet.config.attention_head_dim == [5, 10, 20, 20] and full.unet.config.cross_attention_dim == 1024
        # Another sampler built from the config, as programs build theirs, keeps the prediction type.
        euler = diffusers.EulerDiscreteScheduler.from_config(pipelines[family].scheduler.config)
        assert euler.config.prediction_type == prediction
        # SD2's tokenizer pads with "!" (id 0), like open_clip's, where SD1.5's pads with <|endoftext|>.
        tokenizer = pipelines[family].tokenizer
        assert tokenizer("a cat", padding="max_length", max_length=77).input_ids[-1] == 0


@pytest.mark.slow
def test_tomesd_on_tiny_sdxl(folders):
    # Like the real SDXL, the first level has no attention: the default max_downsample=1 patches nothing.
    pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(folders["sdxl"])
    plain = _generate(pipe, "sdxl")
    for max_downsample, changes in ((1, False), (2, True)):
        tomesd.apply_patch(pipe, ratio=0.5, max_downsample=max_downsample)
        try:
            images = _generate(pipe, "sdxl")
        finally:
            tomesd.remove_patch(pipe)
        assert np.array_equal(images, plain) != changes
