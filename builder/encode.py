"""Image encoding, done in worker processes so PNG compression stays off the GPU's critical path.

numpy + Pillow only: spawned workers import this module and nothing heavy.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np

PNG_COMPRESS_LEVEL = 1  # zlib level 1 encodes a 512² image in ~56 ms vs ~86 ms at Pillow's default 6


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[H, W, 3] floats in [0, 1] -> uint8, rounded the way diffusers' ``numpy_to_pil`` does."""
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)


def pixel_sha256(pixels: np.ndarray) -> str:
    """Hash of the uint8 pixels and their shape: equal hashes mean bit-identical images."""
    digest = hashlib.sha256(f"{pixels.shape}".encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def encode_png(image: np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL) -> tuple[bytes, str]:
    """Float image -> (PNG bytes, pixel hash)."""
    from PIL import Image

    pixels = to_uint8(image)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue(), pixel_sha256(pixels)
