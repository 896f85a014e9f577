"""Seeds: one generator per image, and global RNG state reset before anything that might draw from it.

An image's initial noise comes only from its own ``torch.Generator``, seeded from (suite seed, prompt index),
so it does not depend on the batch size, the image's position in the batch or what ran before. CPU generators
by default: diffusers recommends them for results that reproduce across devices (``reusing_seeds.md``).
"""

from __future__ import annotations

import hashlib
import random

GENERATOR_DEVICE = "cpu"


def image_seed(seed: int, prompt_index: int) -> int:
    """A 63-bit seed for the image of ``prompt_index`` under suite seed ``seed`` (stable across versions)."""
    digest = hashlib.sha256(f"accelbench-image:{seed}:{prompt_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def make_generators(seeds, device: str = GENERATOR_DEVICE) -> list:
    import torch

    return [torch.Generator(device).manual_seed(int(seed)) for seed in seeds]


def seed_global(seed: int) -> None:
    """Reset Python's, NumPy's and torch's global RNGs (all devices), which libraries may draw from."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
