"""CLIP scores with open_clip, one folder per recipe: ``DIR/scores/clip-<recipe_id>/part-*.parquet`` + ``recipe.json``.

A recipe is (open_clip model name, pretrained tag, image preprocessing); its id is a readable slug of the
first two, e.g. ``vit-b-32--laion2b-s34b-b79k``. Scores of different recipes are never mixed: each has its own
folder, and adding to a folder whose recipe.json records another preprocessing (another open_clip) is refused.

``pretrained="random"`` creates the model with random weights after ``torch.manual_seed(0)``: it runs
offline and is reproducible, for pipeline tests and throughput, but its scores mean nothing (recipe.json says
so). The tiny model ``accelbench-tiny-clip`` (config shipped in ``clip_configs/``) serves the smoke suite and
the tests.

Score of an image: :func:`accelbench.scorer.functional.clip_score` (``100 * max(cos, 0)``, clamped per
image) against the embedding of its prompt; each distinct prompt is encoded once. PNG decoding and
preprocessing run in DataLoader worker processes (:mod:`accelbench.scorer.stream`), so on CPU the model is the
bottleneck; on a GPU the decoding cores are (ViT-B-32 fp16 forward ~6,000 images/s on an H200, 512 px PNG
decoding ~860 images/s on its 16 cores). On CUDA the forward passes run under fp16 autocast (embeddings are
compared in float64), so CUDA scores differ slightly from CPU ones (fp16 rounding); the recipe id does not
change with the device.

Incremental: rows already scored under the recipe are skipped, so rescoring writes nothing; rows whose status
is not 'ok' have no image and are never scored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from accelbench import dataset, schema
from accelbench.manifest import DEFAULT_CLIP_MODEL, DEFAULT_CLIP_PRETRAINED, did_you_mean
from accelbench.scorer import functional, images, store
from accelbench.scorer.errors import ScoreError, UnknownClipModelError

log = logging.getLogger("accelbench")

TINY_MODEL = "accelbench-tiny-clip"
RANDOM_WEIGHTS = "random"
DEFAULT_MODEL, DEFAULT_PRETRAINED = DEFAULT_CLIP_MODEL, DEFAULT_CLIP_PRETRAINED  # a suite's default recipe
RANDOM_SEED = 0
CONFIG_DIR = Path(__file__).resolve().parent / "clip_configs"
SCORE_FORMULA = "100 * max(cos(image embedding, prompt embedding), 0), clamped per image"
DEFAULT_BATCH_SIZE = 64
TEXT_BATCH_SIZE = 256
WRITE_EVERY = 4096  # rows per part file: an interrupted run keeps all but the last few thousand scores


def recipe_id(model: str, pretrained: str) -> str:
    """Readable, folder-safe id of a recipe.

    Example:
        >>> recipe_id("ViT-B-32", "laion2b_s34b_b79k")
        'vit-b-32--laion2b-s34b-b79k'
    """
    return f"{_slug(model)}--{_slug(pretrained)}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass(frozen=True)
class ClipRecipe:
    model: str
    pretrained: str
    preprocess: str  # one line: the open_clip transforms of the model, in order

    @property
    def recipe_id(self) -> str:
        return recipe_id(self.model, self.pretrained)

    def to_dict(self) -> dict:
        import open_clip

        return {
            "recipe_id": self.recipe_id, "clip_model": self.model, "clip_pretrained": self.pretrained,
            "clip_preprocess": self.preprocess, "score": SCORE_FORMULA,
            "text": "one embedding per distinct prompt, open_clip tokenizer of the model",
            "random_weights": self.pretrained == RANDOM_WEIGHTS,
            "note": (f"random weights (torch.manual_seed({RANDOM_SEED})): the scores mean nothing; "
                     "for pipeline checks and throughput only") if self.pretrained == RANDOM_WEIGHTS else "",
            "open_clip_version": open_clip.__version__,
        }


@dataclass(frozen=True)
class ClipModel:
    recipe: ClipRecipe
    model: object  # open_clip.CLIP, in eval mode on ``device``
    preprocess: object  # PIL image -> tensor
    tokenizer: object
    device: str

    def autocast(self):
        """fp16 autocast on CUDA (see the module docstring); full precision on CPU."""
        import torch

        if self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def encode_texts(self, prompts: list[str]) -> np.ndarray:
        """``[len(prompts), D]`` float32 text embeddings (not normalised)."""
        import torch

        chunks = []
        for start in range(0, len(prompts), TEXT_BATCH_SIZE):
            tokens = self.tokenizer(prompts[start:start + TEXT_BATCH_SIZE]).to(self.device)
            with torch.inference_mode(), self.autocast():
                chunks.append(self.model.encode_text(tokens).float().cpu().numpy())
        return np.concatenate(chunks)

    def encode_images(self, pixels) -> np.ndarray:
        """Preprocessed ``[N, 3, H, W]`` tensor -> ``[N, D]`` float32 image embeddings (not normalised)."""
        import torch

        with torch.inference_mode(), self.autocast():
            return self.model.encode_image(pixels.to(self.device, non_blocking=True)).float().cpu().numpy()


@dataclass(frozen=True)
class ClipSummary:
    recipe_id: str
    scored: int  # images scored by this run
    skipped: int  # ok images already scored under this recipe
    unreadable: int  # ok rows whose PNG could not be decoded (not scored; a warning names them)
    seconds: float  # the whole call, model loading included
    images_per_s: float  # scored images per second of the image loop (decoding, preprocessing, forward)
    folder: Path


def default_recipe(manifest: dict) -> tuple[str, str]:
    """(model, pretrained) of a dataset's default CLIP recipe, from its manifest (``accelbench.json``).

    ``generate`` records the suite's recipe there as ``"clip": {"model": ..., "pretrained": ...}``; a dataset
    made before that key existed gets :data:`DEFAULT_MODEL` / :data:`DEFAULT_PRETRAINED`.

    Example:
        >>> default_recipe({"clip": {"model": "accelbench-tiny-clip", "pretrained": "random"}})
        ('accelbench-tiny-clip', 'random')
        >>> default_recipe({})
        ('ViT-B-32', 'laion2b_s34b_b79k')
    """
    recorded = manifest.get("clip", {})
    if not isinstance(recorded, dict):
        raise dataset.DatasetError(f"{schema.DATASET_MANIFEST}: 'clip' must map model and pretrained to names, "
                                   f"got {recorded!r}")
    return recorded.get("model", DEFAULT_MODEL), recorded.get("pretrained", DEFAULT_PRETRAINED)


def register_configs() -> None:
    """Make the shipped model configs (``accelbench-tiny-clip``) known to open_clip, once per process."""
    import open_clip

    if TINY_MODEL not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


def check_recipe(model: str, pretrained: str) -> None:
    """Raise :class:`UnknownClipModelError` (one line, with a did-you-mean) for a model name or pretrained tag
    open_clip does not know. A path to a checkpoint file is accepted as ``pretrained``, as open_clip does."""
    import open_clip

    register_configs()
    models = open_clip.list_models()
    if model not in models:
        raise UnknownClipModelError(f"unknown CLIP model {model!r}{did_you_mean(model, models, lowercase=True)}; "
                                    f"open_clip.list_models() lists the {len(models)} known ones")
    if pretrained == RANDOM_WEIGHTS or Path(pretrained).is_file():
        return
    tags = open_clip.list_pretrained_tags_by_model(model)
    if pretrained not in tags:
        known = ", ".join(tags[:6]) + (", ..." if len(tags) > 6 else "")
        raise UnknownClipModelError(f"open_clip has no pretrained weights {pretrained!r} for {model}"
                                    f"{did_you_mean(pretrained, tags, lowercase=True)}; known tags: {known or 'none'}, "
                                    f"or '{RANDOM_WEIGHTS}' for random weights")



def load_clip(model: str, pretrained: str, device: str = "cpu") -> ClipModel:
    """The open_clip model of a recipe, in eval mode on ``device`` (random weights seeded, see module doc)."""
    import open_clip
    import torch

    check_recipe(model, pretrained)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ScoreError(f"device {device!r} asked for, but torch sees no CUDA device")
    # The seed makes random weights reproducible; fork_rng keeps the caller's global RNG untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        try:
            net, _, preprocess = open_clip.create_model_and_transforms(
                model, pretrained=None if pretrained == RANDOM_WEIGHTS else pretrained)
        except RuntimeError as error:  # open_clip's way of reporting weights it could not download or read
            raise ScoreError(f"cannot load CLIP weights {model}/{pretrained}: {str(error).splitlines()[0]}"
                             ) from None
    net = net.eval().to(device)  # create_model_and_transforms leaves the model in train mode
    description = " > ".join(repr(transform) for transform in preprocess.transforms)
    return ClipModel(ClipRecipe(model, pretrained, description), net, preprocess,
                     open_clip.get_tokenizer(model), device)


def _check_recorded_recipe(directory: Path, recipe: ClipRecipe) -> None:
    """Write recipe.json for a new folder; refuse to add scores to a folder made with another preprocessing."""
    recorded = store.read_recipe(directory, recipe.recipe_id)
    folder = store.clip_dir(directory, recipe.recipe_id)
    if recorded is None:
        dataset.write_json_atomic(folder / store.RECIPE_FILE, recipe.to_dict())
        return
    now = recipe.to_dict()
    different = [key for key in ("clip_model", "clip_pretrained", "clip_preprocess") if recorded.get(key) != now[key]]
    if different:
        raise ScoreError(f"{folder} holds scores made with another {different[0]} ({recorded.get(different[0])!r}, "
                         f"now {now[different[0]]!r}); move that folder away to rescore")


def score_clip(directory: Path, model: str = DEFAULT_MODEL, pretrained: str = DEFAULT_PRETRAINED,
               device: str = "cpu", batch_size: int = DEFAULT_BATCH_SIZE, num_workers: int | None = None,
               progress: bool = True) -> ClipSummary:
    """Score every ok image of ``directory`` not yet scored under the recipe (``model``, ``pretrained``).

    ``num_workers``: DataLoader processes decoding and preprocessing PNGs (default: CPU count; 0 = in this
    process). ``batch_size``: images per forward pass."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from accelbench.scorer.stream import PngStream, collate

    start = time.perf_counter()
    directory = Path(directory)
    check_recipe(model, pretrained)  # before any reading, and cheap: a typo fails fast
    rid = recipe_id(model, pretrained)
    folder = store.clip_dir(directory, rid)

    # 1. What is left to score: ok rows without a score under this recipe.
    files = dataset.generation_files(directory)
    rows = dataset.read_columns(files, ["status", "prompt"]).to_pylist()
    done = set(store.read_scores(folder, schema.CLIP_SCORE_COLUMNS).column("record_id").to_pylist())
    ok = [row for row in rows if row["status"] == schema.STATUS_OK]
    todo = [row for row in ok if row["record_id"] not in done]
    if not todo:
        return ClipSummary(rid, 0, len(ok), 0, time.perf_counter() - start, 0.0, folder)

    # 2. Where each image is (a file without images fails here, before anything is written), the model, and
    #    the recipe it really is (preprocessing included), recorded next to the scores.
    locations = images.locate(files)
    clip = load_clip(model, pretrained, device)
    _check_recorded_recipe(directory, clip.recipe)

    # 3. One text embedding per distinct prompt.
    prompts = sorted({row["prompt"] for row in todo})
    text_embeddings = clip.encode_texts(prompts)
    prompt_index = {prompt: index for index, prompt in enumerate(prompts)}
    prompt_of = {row["record_id"]: prompt_index[row["prompt"]] for row in todo}

    # 4. Stream the images through DataLoader workers (decode + preprocess) into the model, writing as we go.
    groups = images.group_by_row_group([(locations[row["record_id"]], row["record_id"]) for row in todo])
    workers = min((os.cpu_count() or 1) if num_workers is None else num_workers, len(groups))
    loader = DataLoader(PngStream(groups, clip.preprocess), batch_size=batch_size, num_workers=workers,
                        collate_fn=collate, pin_memory=device.startswith("cuda"))
    fixed = {"recipe_id": rid, "clip_model": model, "clip_pretrained": pretrained,
             "clip_preprocess": clip.recipe.preprocess}
    pending: list[dict] = []
    scored, unreadable = 0, []
    loop_start = time.perf_counter()
    with tqdm(total=len(todo), unit="img", desc=f"CLIP {rid}", disable=not progress) as bar:
        for record_ids, pixels, bad in loader:
            unreadable += bad
            if pixels is not None:
                texts = text_embeddings[[prompt_of[record_id] for record_id in record_ids]]
                scores = functional.clip_score(clip.encode_images(pixels), texts)
                now = datetime.now(timezone.utc)
                pending += [{"record_id": record_id, "clip_score": float(score), "scored_at": now, **fixed}
                            for record_id, score in zip(record_ids, scores)]
                scored += len(record_ids)
            bar.update(len(record_ids) + len(bad))
            if len(pending) >= WRITE_EVERY:
                store.write_part(folder, pending, schema.CLIP_SCORE_COLUMNS)
                pending = []
    if pending:
        store.write_part(folder, pending, schema.CLIP_SCORE_COLUMNS)
    loop_seconds = time.perf_counter() - loop_start
    if unreadable:
        log.warning("%d image(s) could not be decoded and were not scored, e.g. record %s",
                    len(unreadable), unreadable[0])
    return ClipSummary(rid, scored, len(ok) - len(todo), len(unreadable), time.perf_counter() - start,
                       scored / loop_seconds if loop_seconds > 0 else 0.0, folder)
