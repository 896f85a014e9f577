"""Seeds: one generator per image, and global RNG state reset before anything that might draw from it.

An image's initial noise comes only from its own ``torch.Generator``, seeded from (dataset seed key, suite seed,
prompt index), so it does not depend on the batch size, the image's position in the batch or what ran before.
The key is drawn from OS randomness when a dataset is created and pinned in its ``accelbench.json``: reruns into
the dataset render the same images, and no program can know a timed image's seed before its call (it could
otherwise render the suite's public prompts during its untimed ``load()`` and return them from a cache). CPU generators
by default: diffusers recommends them for results that reproduce across devices (``reusing_seeds.md``).
"""

from __future__ import annotations

import hashlib
import random
import secrets

GENERATOR_DEVICE = "cpu"


def new_seed_key() -> str:
    """A dataset's seed key: 128 bits from OS randomness."""
    return secrets.token_hex(16)


def image_seed(seed: int, prompt_index: int, key: str = "") -> int:
    """A 63-bit seed for the image of ``prompt_index`` under suite seed ``seed`` and dataset seed key ``key``
    (stable across versions; the empty key is that of datasets made before keys existed)."""
    keyed = f"{key}:" if key else ""
    digest = hashlib.sha256(f"accelbench-image:{keyed}{seed}:{prompt_index}".encode()).digest()
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
