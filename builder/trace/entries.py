"""The trace's format: what :meth:`Trace.to_dict` writes, :mod:`.compare` reads and the gate stores digests of.

A trace is a JSON-able dict (version :data:`TRACE_VERSION`)::

    version         TRACE_VERSION
    denoiser        {"component": "unet" | "transformer", "class", "units": [unit names], "attention": [names]}
    calls           one dict per denoiser call: "t" (timestep), "sample" (latent input shape), "dtype",
                    "context" (encoder hidden states' shape), "added" (SDXL's added conditions' shapes),
                    "ran" (index into ran_patterns), "attention" (index into attention_patterns); or "error"
    ran_patterns    strings of "0"/"1", one character per unit: which units ran in a call
    attention_patterns
                    lists of attention calls, each stored as the list form of an :class:`AttentionEntry`
    schedulers      {"class", "diffusers": is it diffusers' own class, "config"}, referenced by index
    set_timesteps   {"scheduler", "num_inference_steps", "kwargs", "length"} per call of set_timesteps
    steps           {"scheduler", "t", "sample", "kwargs"} per scheduler step
    vae_decode      {"latents": [[C, h, w, count], ...], "calls"}
    outside_calls   calls of denoiser layers outside a denoiser call
    weights         per pipeline component with parameters (unet, vae, text_encoder...): {"class", "dtype" (of
                    most of its parameters), "numel", "values": {parameter name: [values]}}, the values read at
                    fixed positions of a fixed subset of its parameter tensors (:data:`WEIGHT_SUBSET`): which
                    weights computed, told apart from another or a smaller model's, whatever their dtype
    foreign_calls   {class: calls} of modules with parameters that belong to no pipeline component: a second model
    errors          what the tracer could not record (a trace with errors never matches)

Repeated structures (ran patterns, attention patterns, schedulers) are stored once and referenced by index, so a
50-step trace stays small. No torch here.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from accelbench.builder.trace.normalise import canonical_json, class_id, is_diffusers_class, json_value

TRACE_VERSION = 2  # 2: weights and foreign_calls
WEIGHT_SUBSET = 8  # a parameter tensor is sampled when crc32(its name) % WEIGHT_SUBSET == 0


class AttentionEntry(NamedTuple):
    """One attention call inside one denoiser call; stored as ``[index, query, key, computed]``."""

    index: int  # position of the attention module in ``denoiser["attention"]``
    query: int | None  # query tokens: ToMe merges them before self-attention
    key: int | None  # key/value tokens of cross-attention; None for self-attention
    computed: int  # 1 if one of its projections ran, 0 if it returned a cache (T-GATE)

    @property
    def is_cross(self) -> bool:
        return self.key is not None


def attention_entries(trace: dict, pattern: int) -> list[AttentionEntry]:
    """The attention calls of the pattern with index ``pattern`` in ``trace``."""
    return [AttentionEntry(*entry) for entry in trace["attention_patterns"][pattern]]


class Trace:
    """The record of one ``generate()`` call. Filled by a :class:`~accelbench.builder.trace.record.Tracer`; read
    with :meth:`to_dict`."""

    def __init__(self):
        self.denoiser: dict | None = None  # {"component", "class", "units", "attention"}
        self.calls: list[dict] = []
        self._ran_patterns: dict[str, int] = {}
        self._attention_patterns: dict[str, int] = {}
        self._attention_pattern_list: list[list] = []
        self._schedulers: dict[str, int] = {}
        self._scheduler_list: list[dict] = []
        self.set_timesteps: list[dict] = []
        self.steps: list[dict] = []
        self.decoded: list[list[int]] = []  # per decoder call: [batch, C, h, w]
        self.outside_calls = 0
        self.weights: dict[str, dict] = {}
        self.foreign: dict[str, int] = {}
        self.errors: list[str] = []
        self._dict: dict | None = None

    # -- interning of repeated structures ----------------------------------------------------------------

    def ran_pattern(self, bits: str) -> int:
        return self._ran_patterns.setdefault(bits, len(self._ran_patterns))

    def attention_pattern(self, entries: list[AttentionEntry]) -> int:
        stored = [list(entry) for entry in entries]
        key = canonical_json(stored)
        if key not in self._attention_patterns:
            self._attention_patterns[key] = len(self._attention_pattern_list)
            self._attention_pattern_list.append(stored)
        return self._attention_patterns[key]

    def scheduler(self, instance) -> int:
        cls = type(instance)
        config = getattr(instance, "config", None)
        try:
            config = {k: json_value(v) for k, v in dict(config or {}).items() if not str(k).startswith("_")}
        except Exception:  # noqa: BLE001
            config = {"<unreadable>": True}
        entry = {"class": class_id(cls), "diffusers": is_diffusers_class(cls), "config": config}
        key = canonical_json(entry)
        if key not in self._schedulers:
            self._schedulers[key] = len(self._scheduler_list)
            self._scheduler_list.append(entry)
        return self._schedulers[key]

    # -- output --------------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        if self._dict is None:
            decoded: dict[tuple, int] = {}
            for batch, *shape in self.decoded:
                decoded[tuple(shape)] = decoded.get(tuple(shape), 0) + batch
            self._dict = {
                "version": TRACE_VERSION,
                "denoiser": self.denoiser,
                "calls": self.calls,
                "ran_patterns": list(self._ran_patterns),
                "attention_patterns": self._attention_pattern_list,
                "schedulers": self._scheduler_list,
                "set_timesteps": self.set_timesteps,
                "steps": self.steps,
                "vae_decode": {"latents": [[*shape, count] for shape, count in decoded.items()],
                               "calls": len(self.decoded)},
                "outside_calls": self.outside_calls,
                "weights": self.weights,
                "foreign_calls": dict(sorted(self.foreign.items())),
                "errors": self.errors,
            }
        return self._dict

    @property
    def digest(self) -> str:
        return trace_digest(self.to_dict())


def trace_digest(trace: dict) -> str:
    return hashlib.sha256(canonical_json(trace).encode()).hexdigest()[:16]
