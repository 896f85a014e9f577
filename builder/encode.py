"""Image encoding, done in worker processes so PNG compression stays off the GPU's critical path.

numpy + Pillow only: spawned workers import this module and nothing heavy.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import threading
import time

import numpy as np

PNG_COMPRESS_LEVEL = 1  # zlib level 1 encodes a 512² image in ~56 ms vs ~86 ms at Pillow's default 6


QUANTIZE_CHUNK = 1 << 18  # elements per step of quantize: a scratch the size of a core's L2 cache


def quantize_blocks(shape: tuple[int, ...], limit: int = QUANTIZE_CHUNK) -> list[tuple]:
    """Indices that cut an array of ``shape`` into consecutive blocks of at most ``limit`` elements (a single
    last-axis row may exceed it), slicing the leading axes only: a block of a strided array is a view."""
    if len(shape) > 1 and math.prod(shape[1:]) > limit:
        return [(index, *block) for index in range(shape[0]) for block in quantize_blocks(shape[1:], limit)]
    step = max(1, limit // max(math.prod(shape[1:]), 1))
    return [(slice(start, start + step),) for start in range(0, shape[0], step)]


def quantize(images: np.ndarray, out: np.ndarray, share: tuple[int, int] = (0, 1)) -> int:
    """Floats in [0, 1] -> uint8 written into ``out`` (same shape), rounded the way diffusers' ``numpy_to_pil``
    does (clip, x 255, round half to even, in the input's dtype); returns the number of NaN/inf values.
    ``share=(i, k)``: only the i-th of k consecutive shares of the blocks, so k threads can split the work.

    Cache-sized blocks, one pass over memory instead of five (clip, scale, round, cast, finiteness) and no
    4-byte-per-pixel temporary: this runs inside the timed window of every batch. The input is read in its
    own memory order (diffusers returns NHWC views of NCHW memory: flattening them would first copy the whole
    batch on one thread, and reading them in NHWC order runs numpy's loops three elements at a time)."""
    order = np.argsort([-stride for stride in images.strides], kind="stable")  # largest stride first
    source, target = images.transpose(order), out.transpose(order)
    blocks = quantize_blocks(source.shape)
    index, shares = share
    scratch = np.empty(min(QUANTIZE_CHUNK, images.size), dtype=images.dtype)
    nonfinite = 0
    # A NaN's uint8 is garbage (the caller rejects the batch), and finite values may overflow the fast sum.
    with np.errstate(over="ignore", invalid="ignore"):
        for block in blocks[len(blocks) * index // shares:len(blocks) * (index + 1) // shares]:
            chunk = source[block]
            if not np.isfinite(np.add.reduce(chunk, axis=None, dtype=np.float64)):  # then count exactly
                nonfinite += int(chunk.size - np.count_nonzero(np.isfinite(chunk)))
            work = scratch[:chunk.size].reshape(chunk.shape)
            np.clip(chunk, 0.0, 1.0, out=work)
            work *= 255
            np.rint(work, out=work)
            target[block] = work
    return nonfinite


def plain_array(images: np.ndarray) -> np.ndarray:
    """``images`` as a plain ``numpy.ndarray`` (a subclass's methods, ufunc overrides included, no longer apply)
    whose memory is one block in some axis order and in native byte order: a view where it already is (diffusers'
    NHWC view of NCHW memory stays a view), else a C-contiguous copy (negative, zero or overlapping strides).

    Example:
        >>> class Lying(np.ndarray):
        ...     def __array_ufunc__(self, *args, **kwargs):
        ...         return False
        >>> plain = plain_array(np.zeros((2, 3)).view(Lying))
        >>> type(plain).__name__, plain_array(np.zeros((4, 4))[::-1]).flags.c_contiguous
        ('ndarray', True)
    """
    plain = images.view(np.ndarray)
    if not plain.dtype.isnative:
        return np.ascontiguousarray(plain.astype(plain.dtype.newbyteorder("=")))
    order = np.argsort([-stride for stride in plain.strides], kind="stable")
    permuted = plain.transpose(order)
    if np.ascontiguousarray(permuted).strides == permuted.strides or plain.size == 0:
        return plain
    return np.ascontiguousarray(plain)


def to_uint8(images: np.ndarray) -> np.ndarray:
    out = np.empty(images.shape, dtype=np.uint8)
    quantize(images, out)
    return out


def pixel_sha256(pixels: np.ndarray) -> str:
    """Hash of the uint8 pixels and their shape: equal hashes mean bit-identical images."""
    digest = hashlib.sha256(f"{pixels.shape}".encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def encode_png(pixels: np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL) -> tuple[bytes, str]:
    """uint8 [H, W, 3] pixels -> (PNG bytes, pixel hash)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue(), pixel_sha256(pixels)


def ready(_=None) -> int:
    """A no-op task that makes a pool start a worker and import what encoding needs; returns its pid."""
    from PIL import Image  # noqa: F401

    time.sleep(0.05)  # long enough that each of a batch of these lands on its own worker
    return os.getpid()


def init_worker(parent_pid: int, cores: list[int] | None = None) -> None:
    """Worker initializer: background priority (on ``cores`` when given), and exit when the process that
    started it is gone.

    Low priority and other cores keep encoding from taking CPU time the timed program needs to launch GPU work.
    Without the watch, a worker orphaned by a SIGKILLed run would wait forever on its task queue, holding the
    dead run's stdout open."""
    os.nice(10)
    if cores:
        os.sched_setaffinity(0, cores)

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
