"""Advisory per-stage timing of one ``generate()`` call, measured inside the program's worker process.

The latency that counts is measured by the harness, in the parent process (:mod:`accelbench.builder.worker`);
these stage times run in the same process as the program, which could tamper with them, so they are only
advice (where the time goes). ``end()`` synchronises the device, so the worker answers only once the call's
GPU work is done. Stages come from marks set by hooks on the pipeline: a forward pre-hook on the denoiser (``unet`` or
``transformer``; its first call ends text encoding and starts the denoising loop) and a wrapper around
``vae.decode``. On CUDA each mark is a CUDA event recorded on the current stream, so no hook synchronizes
and the timed run is not slowed; on CPU a mark is a ``perf_counter`` reading.

    text_encode = first denoiser call - start       denoise   = decode start - first denoiser call
    vae_decode  = decode end - decode start         postprocess = end - decode end
"""

from __future__ import annotations

import time
from dataclasses import dataclass

STAGES = (("text_encode_s", "start", "denoise"), ("denoise_s", "denoise", "decode"),
          ("vae_decode_s", "decode", "decoded"), ("postprocess_s", "decoded", "end"))
STAGE_NAMES = tuple(name for name, _, _ in STAGES)  # generation columns: nothing else of an answer becomes one


@dataclass
class Timing:
    stages: dict[str, float | None]
    peak_memory_bytes: int | None


class StageTimer:
    """Install once per loaded pipeline; then ``begin()`` / ``generate`` / ``end()`` around each timed call."""

    def __init__(self, pipe, device: str):
        import torch

        self.cuda = str(device).startswith("cuda")
        self.torch = torch
        self.marks: dict | None = None  # None: not timing (warm-up calls pass through untouched)
        # `is not None`, never truthiness: a torch.compile'd module's truth test calls its module's len(), which
        # raises (the harness must not evaluate a program's objects in ways that can raise).
        denoiser = next((module for name in ("unet", "transformer")
                         if (module := getattr(pipe, name, None)) is not None), None)
        if isinstance(denoiser, torch.nn.Module):
            denoiser.register_forward_pre_hook(self._on_denoiser_call)
        vae = getattr(pipe, "vae", None)
        if vae is not None and callable(getattr(vae, "decode", None)):
            vae.decode = self._wrap_decode(vae.decode)

    def _mark(self, name: str) -> None:
        if self.marks is None or name in self.marks:
            return
        if self.cuda:
            event = self.torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks[name] = event
        else:
            self.marks[name] = time.perf_counter()

    def _on_denoiser_call(self, module, args):
        self._mark("denoise")

    def _wrap_decode(self, decode):
        def timed_decode(*args, **kwargs):
            self._mark("decode")
            output = decode(*args, **kwargs)
            self._mark("decoded")
            return output

        return timed_decode

    def begin(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        self.marks = {}
        self._mark("start")

    def end(self) -> Timing:
        self._mark("end")
        if self.cuda:
            self.torch.cuda.synchronize()
        marks, self.marks = self.marks, None
        stages: dict[str, float | None] = {}
        for name, first, last in STAGES:
            if first in marks and last in marks:
                stages[name] = (marks[first].elapsed_time(marks[last]) / 1000.0 if self.cuda
                                else marks[last] - marks[first])
            else:
                stages[name] = None
        peak = int(self.torch.cuda.max_memory_allocated()) if self.cuda else None
        return Timing(stages, peak)
