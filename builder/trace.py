"""Execution traces: what a pipeline program actually computed during one ``generate()`` call.

``Tracer(pipe)`` is created once, after the program's ``load()`` (so nothing of it exists while the program is
imported or loaded). Each ``with tracer.recording() as trace: images = module.generate(...)`` installs its hooks,
records that one call and removes them again, so untraced calls run untouched. ``trace.to_dict()`` is a compact,
deterministic, JSON-able dict; ``trace.digest`` a hash of it. :func:`compare_traces` says, in one line, where two
traces first differ.

What is recorded
----------------
- **Denoiser calls** (``pipe.unet`` or ``pipe.transformer``; a ``torch.compile`` wrapper is looked through), from a
  forward pre-hook, so they count whoever replaced ``forward`` (DeepCache, T-GATE): the timestep, the latent
  input's shape (batch *including* the classifier-free-guidance doubling, channels, height, width) and dtype, the
  encoder hidden states' shape and the shapes of SDXL's ``added_cond_kwargs``.
- **Which parts of the denoiser ran** in each call: a *unit* is a top-level child of the denoiser (``conv_in``,
  ``time_embedding``, ``mid_block``, ``transformer_blocks.3``...), split one level further where it holds
  ModuleLists (``down_blocks.1.attentions.0``, ``up_blocks.3.resnets.2``); units without parameters (activations)
  are left out. A unit *ran* if any module with parameters inside it was called. DeepCache replaces skipped
  blocks' ``forward`` with a cache lookup, so their layers are never called: the pattern shows its interval and
  branch.
- **Every attention call** inside the denoiser (each ``diffusers`` ``Attention`` module): the query length (ToMe
  merges tokens before self-attention), the key/value length for cross-attention, and whether it was *computed*
  (one of its projection layers ran) or *reused* (T-GATE replaces ``Attention.forward`` per instance and returns its
  cache without touching a projection; its self-attention reuse shows the same way).
- **Every scheduler step** (``step`` wrapped on every ``SchedulerMixin`` subclass, at class level, with
  ``functools.wraps`` because pipelines inspect its signature): the class by identity (module and qualified name,
  and whether it *is* diffusers' class), its full config at that moment, the timestep, the sample's shape and
  the step's other arguments with defaults applied (``eta``, ``s_churn``...). A subclass's ``step`` that calls
  ``super().step`` is recorded once, as the subclass.
- ``set_timesteps`` calls (class, ``num_inference_steps`` and other arguments, the schedule length).
- **VAE decodes** (a pre-hook on ``pipe.vae.decoder``): how many latents of which shape were decoded.
- Calls of the denoiser's layers *outside* a denoiser call (a hand-made loop over its blocks).

What is ignored (choices that do not change the computation)
------------------------------------------------------------
- which attention processor or backend runs (``AttnProcessor``, ``AttnProcessor2_0``, fused QKV projections via
  ``fuse_qkv_projections()``, SDPA kernels): only whether a projection ran counts, not which one or how often;
- memory formats (channels-last), devices, module classes and wrappers, and the number of layer calls inside a
  unit;
- how VAE decoding is batched (sliced decoding decodes the same latents one at a time): only the number and
  shape of the decoded latents count;
- the text encoders, the order of calls to other modules, tensor values (the gate compares images for that);
- timesteps and config values are rounded to 6 significant digits.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import math
from typing import Any

from accelbench.builder.programs import PROGRAM_MODULE  # noqa: F401  (re-exported: the name programs run under)

TRACE_VERSION = 1
_STEP_TENSOR_ARGS = ("self", "model_output", "timestep", "sample", "generator", "return_dict")


# ---------------------------------------------------------------------------------------------------------
# Normalisation: deterministic JSON values
# ---------------------------------------------------------------------------------------------------------


def _number(value) -> float | int | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return float(f"{value:.6g}")


def _jsonable(value) -> Any:
    """A JSON value for a config entry or a step argument: numbers rounded, tensors and objects summarised."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        if len(shape) == 0 or (hasattr(value, "numel") and value.numel() == 1) or getattr(value, "size", 2) == 1:
            try:
                return _number(value.item())
            except (TypeError, ValueError, RuntimeError):
                pass
        return f"tensor{list(shape)}"
    if hasattr(value, "item"):  # numpy scalars
        try:
            return _number(value.item())
        except (TypeError, ValueError):
            pass
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _timestep(value) -> Any:
    """A timestep as one number (a tensor whose elements are all equal, as PixArt passes it) or a list."""
    if hasattr(value, "detach"):
        flat = value.detach().reshape(-1).cpu().tolist()
        if not flat:
            return None
        return _number(flat[0]) if all(x == flat[0] for x in flat) else [_number(x) for x in flat]
    return _jsonable(value)


def _shape(value) -> list[int] | None:
    shape = getattr(value, "shape", None)
    return None if shape is None else [int(x) for x in shape]


def class_id(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def is_diffusers_class(cls: type) -> bool:
    """Whether ``cls`` is the class diffusers exports under its name (not a look-alike or a subclass)."""
    if not cls.__module__.startswith("diffusers."):
        return False
    try:
        import diffusers

        return getattr(diffusers, cls.__name__, None) is cls
    except Exception:  # noqa: BLE001 - never let the tracer break a program
        return False


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


# ---------------------------------------------------------------------------------------------------------
# The trace of one call
# ---------------------------------------------------------------------------------------------------------


class Trace:
    """The record of one ``generate()`` call. Filled by a :class:`Tracer`; read with :meth:`to_dict`."""

    def __init__(self):
        self.denoiser: dict | None = None  # {"class", "units", "attention"}
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
        self.errors: list[str] = []
        self._dict: dict | None = None

    # -- interning of repeated structures ----------------------------------------------------------------

    def ran_pattern(self, bits: str) -> int:
        return self._ran_patterns.setdefault(bits, len(self._ran_patterns))

    def attention_pattern(self, entries: list) -> int:
        key = canonical_json(entries)
        if key not in self._attention_patterns:
            self._attention_patterns[key] = len(self._attention_pattern_list)
            self._attention_pattern_list.append(entries)
        return self._attention_patterns[key]

    def scheduler(self, instance) -> int:
        cls = type(instance)
        config = getattr(instance, "config", None)
        try:
            config = {k: _jsonable(v) for k, v in dict(config or {}).items() if not str(k).startswith("_")}
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
                "errors": self.errors,
            }
        return self._dict

    @property
    def digest(self) -> str:
        return trace_digest(self.to_dict())


def trace_digest(trace: dict) -> str:
    return hashlib.sha256(canonical_json(trace).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------
# The tracer
# ---------------------------------------------------------------------------------------------------------


def _denoiser_of(pipe):
    import torch

    for name in ("unet", "transformer"):
        module = getattr(pipe, name, None)
        module = getattr(module, "_orig_mod", module)  # torch.compile's wrapper
        if isinstance(module, torch.nn.Module):
            return name, module
    return None, None


def _is_attention(module) -> bool:
    try:
        from diffusers.models.attention_processor import Attention
    except ImportError:  # pragma: no cover
        return False
    try:
        from diffusers.models.attention import AttentionModuleMixin
    except ImportError:  # pragma: no cover
        AttentionModuleMixin = Attention
    return isinstance(module, (Attention, AttentionModuleMixin))


def _units(denoiser) -> tuple[list[str], dict[str, int]]:
    """The denoiser's units (see the module docstring) and, for every module name, its unit's index."""
    import torch

    units: list[str] = []
    unit_of: dict[str, int] = {}

    def add(name, module):
        if not any(True for _ in module.parameters()):
            return  # a layer without parameters (an activation) is not observed: it cannot show that it ran
        units.append(name)
        for sub, _ in module.named_modules(prefix=name):
            unit_of[sub] = len(units) - 1

    def block(name, module):
        children = list(module.named_children())
        if not any(isinstance(child, torch.nn.ModuleList) for _, child in children):
            return add(name, module)
        for child_name, child in children:
            if isinstance(child, torch.nn.ModuleList):
                for j, layer in enumerate(child):
                    add(f"{name}.{child_name}.{j}", layer)
            else:
                add(f"{name}.{child_name}", child)

    for name, child in denoiser.named_children():
        if isinstance(child, torch.nn.ModuleList):
            for i, element in enumerate(child):
                block(f"{name}.{i}", element)
        else:
            block(name, child)
    return units, unit_of


class Tracer:
    """Records what a loaded pipeline computes; one :meth:`recording` per traced ``generate()`` call."""

    def __init__(self, pipe):
        self.pipe = pipe
        self._trace: Trace | None = None

    @contextlib.contextmanager
    def recording(self):
        trace = Trace()
        self._trace = trace
        handles: list = []
        restore: list[tuple[type, str, Any]] = []
        try:
            try:
                self._install(trace, handles, restore)
            except Exception as error:  # noqa: BLE001 - a trace that says so, rather than a broken program
                trace.errors.append(f"tracer could not install: {type(error).__name__}: {error}"[:300])
            yield trace
        finally:
            for handle in handles:
                handle.remove()
            for cls, name, original in reversed(restore):
                setattr(cls, name, original)
            self._trace = None
            trace.to_dict()

    # -- installation ------------------------------------------------------------------------------------

    def _install(self, trace: Trace, handles: list, restore: list) -> None:
        denoiser_name, denoiser = _denoiser_of(self.pipe)
        if denoiser is not None:
            self._install_denoiser(trace, denoiser_name, denoiser, handles)
        vae = getattr(self.pipe, "vae", None)
        decoder = getattr(vae, "decoder", None)
        if decoder is not None and hasattr(decoder, "register_forward_pre_hook"):
            handles.append(decoder.register_forward_pre_hook(functools.partial(self._on_decode, trace)))
        self._install_schedulers(trace, restore)

    def _install_denoiser(self, trace: Trace, name: str, denoiser, handles: list) -> None:
        units, unit_of = _units(denoiser)
        attention_names = [n for n, m in denoiser.named_modules() if _is_attention(m)]
        attention_index = {n: i for i, n in enumerate(attention_names)}
        trace.denoiser = {"component": name, "class": class_id(type(denoiser)), "units": units,
                          "attention": attention_names}
        state = {"depth": 0, "ran": None, "attention": None, "open": {}}
        signature = inspect.signature(type(denoiser).forward)
        handles.append(denoiser.register_forward_pre_hook(
            functools.partial(self._on_denoiser_enter, trace, state, signature), with_kwargs=True))
        handles.append(denoiser.register_forward_hook(functools.partial(self._on_denoiser_exit, trace, state)))
        for module_name, module in denoiser.named_modules():
            if module_name in attention_index:
                index = attention_index[module_name]
                handles.append(module.register_forward_pre_hook(
                    functools.partial(self._on_attention_enter, state, index), with_kwargs=True))
                handles.append(module.register_forward_hook(functools.partial(self._on_attention_exit, state, index)))
            if module is denoiser or not any(True for _ in module.parameters(recurse=False)):
                continue
            owners = [attention_index[a] for a in _ancestors(module_name) if a in attention_index]
            owner = owners[-1] if owners else None
            handles.append(module.register_forward_pre_hook(
                functools.partial(self._on_layer, trace, state, unit_of.get(module_name), owner)))

    def _install_schedulers(self, trace: Trace, restore: list) -> None:
        from diffusers.schedulers.scheduling_utils import SchedulerMixin

        classes, stack = [], [SchedulerMixin]
        while stack:
            cls = stack.pop()
            if cls not in classes:
                classes.append(cls)
                stack.extend(cls.__subclasses__())
        scheduler = getattr(self.pipe, "scheduler", None)
        for cls in type(scheduler).__mro__ if scheduler is not None else ():
            if cls not in classes and cls is not object:
                classes.append(cls)
        depth = {"step": 0}
        for cls in classes:
            for method, wrap in (("step", self._wrap_step), ("set_timesteps", self._wrap_set_timesteps)):
                original = cls.__dict__.get(method)
                if not inspect.isfunction(original):  # absent, or a static/class method: left alone
                    continue
                restore.append((cls, method, original))
                setattr(cls, method, wrap(trace, original, depth))

    # -- hooks -------------------------------------------------------------------------------------------

    def _on_denoiser_enter(self, trace, state, signature, module, args, kwargs):
        state["depth"] += 1
        if state["depth"] > 1:
            return None
        state["ran"] = bytearray(b"0" * len(trace.denoiser["units"]))
        state["attention"] = []
        state["open"] = {}
        try:
            bound = signature.bind_partial(module, *args, **kwargs).arguments
            params = list(signature.parameters)
            sample = bound.get(params[1]) if len(params) > 1 else None
            context = bound.get("encoder_hidden_states")
            added = bound.get("added_cond_kwargs") or {}
            call = {
                "t": _timestep(bound.get("timestep")),
                "sample": _shape(sample),
                "dtype": str(getattr(sample, "dtype", "")).replace("torch.", ""),
                "context": _shape(context),
            }
            if isinstance(added, dict) and added:
                call["added"] = {k: _shape(v) for k, v in sorted(added.items())}
        except Exception as error:  # noqa: BLE001
            call = {"error": f"{type(error).__name__}: {error}"[:200]}
        state["call"] = call
        return None

    def _on_denoiser_exit(self, trace, state, module, args, output):
        state["depth"] -= 1
        if state["depth"] > 0:
            return None
        call = state.pop("call", {})
        call["ran"] = trace.ran_pattern(state["ran"].decode())
        call["attention"] = trace.attention_pattern(state["attention"])
        trace.calls.append(call)
        state["ran"] = state["attention"] = None
        return None

    def _on_attention_enter(self, state, index, module, args, kwargs):
        if state["ran"] is None:
            return None
        hidden = args[0] if args else kwargs.get("hidden_states")
        context = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        shape = _shape(hidden) or []
        query = shape[2] * shape[3] if len(shape) == 4 else (shape[1] if len(shape) >= 2 else None)
        key = (_shape(context) or [None, None])[1] if context is not None else None
        entry = [index, query, key, 0]
        state["open"][index] = entry
        state["attention"].append(entry)
        return None

    def _on_attention_exit(self, state, index, module, args, output):
        if state["open"]:
            state["open"].pop(index, None)
        return None

    def _on_layer(self, trace, state, unit, owner, module, args):
        ran = state["ran"]
        if ran is None:
            trace.outside_calls += 1
            return None
        if unit is not None:
            ran[unit] = 49  # "1"
        if owner is not None:
            entry = state["open"].get(owner)
            if entry is not None:
                entry[3] = 1
        return None

    def _on_decode(self, trace, module, args):
        latents = args[0] if args else None
        shape = _shape(latents)
        if shape:
            trace.decoded.append([shape[0], *shape[1:]])
        return None

    # -- scheduler wrappers --------------------------------------------------------------------------------

    @staticmethod
    def _wrap_step(trace: Trace, original, depth: dict):
        signature = _signature(original)

        # functools.wraps keeps the signature visible: pipelines inspect step() to decide whether to pass
        # `generator` and `eta`, and a bare wrapper would silently change what the program does.
        @functools.wraps(original)
        def step(self, *args, **kwargs):
            depth["step"] += 1
            try:
                if depth["step"] == 1:
                    trace.steps.append(_step_record(trace, signature, self, args, kwargs))
                return original(self, *args, **kwargs)
            finally:
                depth["step"] -= 1

        return step

    @staticmethod
    def _wrap_set_timesteps(trace: Trace, original, depth: dict):
        signature = _signature(original)

        @functools.wraps(original)
        def set_timesteps(self, *args, **kwargs):
            outer = depth.get("set_timesteps", 0) == 0
            depth["set_timesteps"] = depth.get("set_timesteps", 0) + 1
            try:
                result = original(self, *args, **kwargs)
            finally:
                depth["set_timesteps"] -= 1
            if outer:
                record = {"scheduler": trace.scheduler(self)}
                try:
                    bound = signature.bind(self, *args, **kwargs)
                    arguments = {k: v for k, v in bound.arguments.items() if k not in ("self", "device")}
                    record["num_inference_steps"] = _jsonable(arguments.pop("num_inference_steps", None))
                    extra = {k: _jsonable(v) for k, v in arguments.items() if v is not None}
                    if extra:
                        record["kwargs"] = extra
                except Exception as error:  # noqa: BLE001
                    record["error"] = f"{type(error).__name__}"
                timesteps = getattr(self, "timesteps", None)
                record["length"] = len(timesteps) if timesteps is not None else None
                trace.set_timesteps.append(record)
            return result

        return set_timesteps


def _signature(function) -> inspect.Signature | None:
    """``function``'s signature, None where Python cannot tell (some builtins)."""
    try:
        return inspect.signature(function)
    except (TypeError, ValueError):
        return None


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _step_record(trace: Trace, signature, scheduler, args, kwargs) -> dict:
    record: dict[str, Any] = {"scheduler": trace.scheduler(scheduler)}
    try:
        bound = signature.bind(scheduler, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        for name, parameter in signature.parameters.items():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(arguments.pop(name, {}) or {})
            elif parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                extra = arguments.pop(name, ()) or ()
                if extra:
                    arguments["*args"] = list(extra)
        record["t"] = _timestep(arguments.get("timestep"))
        record["sample"] = _shape(arguments.get("sample"))
        record["kwargs"] = {k: _jsonable(v) for k, v in arguments.items() if k not in _STEP_TENSOR_ARGS}
    except Exception as error:  # noqa: BLE001
        record["error"] = f"{type(error).__name__}: {error}"[:200]
    return record


# ---------------------------------------------------------------------------------------------------------
# Comparing two traces
# ---------------------------------------------------------------------------------------------------------


def _images(trace: dict) -> int | None:
    latents = (trace.get("vae_decode") or {}).get("latents") or []
    return sum(entry[-1] for entry in latents) or None


def _full_pass_summary(trace: dict) -> str:
    """"full denoiser on calls 1, 4, 7, ... (every 3rd)" from the ran patterns."""
    patterns = trace.get("ran_patterns") or []
    calls = trace.get("calls") or []
    full = [i + 1 for i, call in enumerate(calls)
            if isinstance(call.get("ran"), int) and call["ran"] < len(patterns) and "0" not in patterns[call["ran"]]]
    if not calls:
        return "no denoiser calls"
    if len(full) == len(calls):
        return "full denoiser on every call"
    gaps = {b - a for a, b in zip(full, full[1:])}
    listing = ", ".join(map(str, full[:4])) + (", ..." if len(full) > 4 else "")
    every = f", every {_ordinal(gaps.pop())} call" if len(gaps) == 1 else ""
    return f"full denoiser on {len(full)} of {len(calls)} calls ({listing}{every})"


def _ordinal(n: int) -> str:
    return {1: "", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def _cross_summary(trace: dict) -> str:
    """On which calls the cross-attention was computed (T-GATE stops computing it after its gate step)."""
    patterns = trace.get("attention_patterns") or []
    computed = []
    for i, call in enumerate(trace.get("calls") or []):
        entries = patterns[call["attention"]] if isinstance(call.get("attention"), int) else []
        cross = [e for e in entries if e[2] is not None]
        if cross and any(e[3] for e in cross):
            computed.append(i + 1)
    total = len(trace.get("calls") or [])
    if len(computed) == total:
        return "on every call"
    if computed and computed == list(range(1, len(computed) + 1)):
        return f"on the first {len(computed)} calls"
    return f"on {len(computed)} of {total} calls"


def _attention_name(trace: dict, index: int) -> str:
    names = (trace.get("denoiser") or {}).get("attention") or []
    return names[index] if 0 <= index < len(names) else f"attention #{index}"


def _batch_note(batch, images) -> str:
    if not images or not isinstance(batch, int):
        return ""
    if batch == 2 * images:
        return f" ({images} image{'s' if images != 1 else ''} x 2 for guidance)"
    if batch == images:
        return " (no guidance)"
    return ""


def _fmt(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value) if isinstance(value, (str, dict)) else str(value)


def _compare_call(i: int, total: int, expected: dict, observed: dict, exp_call: dict, obs_call: dict) -> str | None:
    where = f"denoiser call {i + 1} of {total}"
    if "error" in exp_call or "error" in obs_call:
        if exp_call.get("error") != obs_call.get("error"):
            return f"{where}: unreadable arguments ({obs_call.get('error') or exp_call.get('error')})"
    if exp_call.get("t") != obs_call.get("t"):
        return f"{where}: timestep {_fmt(obs_call.get('t'))}, GT {_fmt(exp_call.get('t'))}"
    es, os_ = exp_call.get("sample") or [], obs_call.get("sample") or []
    if len(es) != len(os_):
        return f"{where}: latent input of shape {os_}, GT {es}"
    if es[1:2] != os_[1:2]:
        return f"{where}: {os_[1]} latent channels, GT {es[1]}"
    if es[2:] != os_[2:]:
        size = lambda s: "x".join(map(str, s[2:]))  # noqa: E731
        return (f"{where}: latent size {size(os_)}, GT {size(es)} (images rendered at another resolution and "
                f"resized?)")
    if exp_call.get("dtype") != obs_call.get("dtype"):
        return f"{where}: latents in {obs_call.get('dtype')}, GT {exp_call.get('dtype')}"
    # Which units ran (DeepCache), then the attention calls (T-GATE, ToMe), then the batch (guidance).
    e_ran = expected["ran_patterns"][exp_call["ran"]]
    o_ran = observed["ran_patterns"][obs_call["ran"]]
    if e_ran != o_ran:
        units = expected["denoiser"]["units"]
        j = next(k for k in range(len(e_ran)) if e_ran[k] != o_ran[k])
        what = "ran, GT skipped it" if o_ran[j] == "1" else "was skipped, GT ran it"
        return (f"{where}: {units[j]} {what} (GT: {_full_pass_summary(expected)}; this program: "
                f"{_full_pass_summary(observed)})")
    e_att = expected["attention_patterns"][exp_call["attention"]]
    o_att = observed["attention_patterns"][obs_call["attention"]]
    if [e[0] for e in e_att] != [o[0] for o in o_att]:
        j = next((k for k, (e, o) in enumerate(zip(e_att, o_att)) if e[0] != o[0]), min(len(e_att), len(o_att)))
        if j < min(len(e_att), len(o_att)):
            return (f"{where}: attention {_attention_name(observed, o_att[j][0])} ran where GT ran "
                    f"{_attention_name(expected, e_att[j][0])}")
        return f"{where}: {len(o_att)} attention calls, GT {len(e_att)}"
    # Token counts (ToMe), then cross-attention computed or reused (T-GATE's gate), then self-attention.
    for e, o in zip(e_att, o_att):
        kind = "cross-attention" if e[2] is not None else "self-attention"
        name = _attention_name(expected, e[0])
        if e[1] != o[1]:
            return f"{where}: {kind} {name} got {o[1]} query tokens, GT {e[1]} (token merging differs)"
        if e[2] != o[2]:
            return f"{where}: {kind} {name} attended to {o[2]} tokens, GT {e[2]}"
    for cross in (True, False):
        for e, o in zip(e_att, o_att):
            if (e[2] is not None) != cross or e[3] == o[3]:
                continue
            kind = "cross-attention" if cross else "self-attention"
            what = "computed, GT reused its cache" if o[3] else "reused a cache, GT computed it"
            hint = (f" (GT computes cross-attention {_cross_summary(expected)}, this program "
                    f"{_cross_summary(observed)})") if cross else ""
            return f"{where}: {kind} {_attention_name(expected, e[0])} {what}{hint}"
    if es[0] != os_[0]:
        return (f"{where}: latent batch {os_[0]}{_batch_note(os_[0], _images(observed))}, GT "
                f"{es[0]}{_batch_note(es[0], _images(expected))}")
    if exp_call.get("context") != obs_call.get("context"):
        return f"{where}: encoder hidden states of shape {obs_call.get('context')}, GT {exp_call.get('context')}"
    if exp_call.get("added") != obs_call.get("added"):
        return f"{where}: added conditioning {obs_call.get('added')}, GT {exp_call.get('added')}"
    return None


def _scheduler_name(entry: dict) -> str:
    name = entry.get("class", "?")
    return name if entry.get("diffusers") else f"{name} (not diffusers' class)"


def _compare_scheduler(where: str, expected: dict, observed: dict, e_index, o_index) -> str | None:
    e = expected["schedulers"][e_index] if isinstance(e_index, int) else {}
    o = observed["schedulers"][o_index] if isinstance(o_index, int) else {}
    if (e.get("class"), e.get("diffusers")) != (o.get("class"), o.get("diffusers")):
        return f"{where}: scheduler {_scheduler_name(o)}, GT {_scheduler_name(e)}"
    e_config, o_config = e.get("config") or {}, o.get("config") or {}
    for key in list(e_config) + [k for k in o_config if k not in e_config]:
        if e_config.get(key, "<missing>") != o_config.get(key, "<missing>"):
            return (f"{where}: scheduler config {key}={_fmt(o_config.get(key, '<missing>'))}, GT "
                    f"{_fmt(e_config.get(key, '<missing>'))}")
    return None


def compare_traces(expected: dict, observed: dict) -> str | None:
    """None if ``observed`` computed the same structure as ``expected`` (the GT), else the first difference, in
    one line: scheduler class, config and arguments, the schedule, every denoiser call's timestep, shapes, units
    that ran, attention lengths and computed/reused pattern, and the decoded latents."""
    if not isinstance(observed, dict) or not observed:
        return "no trace was recorded"
    if observed.get("errors"):
        return f"the trace is incomplete: {observed['errors'][0]}"
    e_den, o_den = expected.get("denoiser"), observed.get("denoiser")
    if o_den is None:
        return "no denoiser found on the pipeline (pipe.unet / pipe.transformer)"
    if e_den and (e_den.get("units") != o_den.get("units") or e_den.get("attention") != o_den.get("attention")):
        return (f"the denoiser's layout differs from the GT's ({len(o_den.get('units') or [])} units and "
                f"{len(o_den.get('attention') or [])} attention modules, GT {len(e_den.get('units') or [])} and "
                f"{len(e_den.get('attention') or [])}): another model?")
    e_steps, o_steps = expected.get("steps") or [], observed.get("steps") or []
    # The sampler: class and config first (on the first step, or set_timesteps if no step ran).
    for where, e_list, o_list in (("step 1", e_steps, o_steps),
                                  ("set_timesteps", expected.get("set_timesteps") or [],
                                   observed.get("set_timesteps") or [])):
        if e_list and o_list:
            difference = _compare_scheduler(where, expected, observed, e_list[0].get("scheduler"),
                                            o_list[0].get("scheduler"))
            if difference:
                return difference
    e_set, o_set = expected.get("set_timesteps") or [], observed.get("set_timesteps") or []
    e_summary = [(s.get("num_inference_steps"), s.get("kwargs")) for s in e_set]
    o_summary = [(s.get("num_inference_steps"), s.get("kwargs")) for s in o_set]
    if e_summary != o_summary:
        show = lambda items: ", ".join(f"set_timesteps({n}{', ' + _fmt(k) if k else ''})" for n, k in items) \
            or "no set_timesteps"  # noqa: E731
        return f"{show(o_summary)}, GT {show(e_summary)}"
    e_calls, o_calls = expected.get("calls") or [], observed.get("calls") or []
    if len(e_calls) != len(o_calls):
        return (f"{len(o_calls)} denoiser calls for {len(o_steps)} scheduler steps, GT {len(e_calls)} for "
                f"{len(e_steps)}" + (" (noise predictions reused or faked?)" if len(o_calls) < len(o_steps) else ""))
    for i, (e, o) in enumerate(zip(e_calls, o_calls)):
        difference = _compare_call(i, len(e_calls), expected, observed, e, o)
        if difference:
            return difference
    if len(e_steps) != len(o_steps):
        return f"{len(o_steps)} scheduler steps, GT {len(e_steps)}"
    for i, (e, o) in enumerate(zip(e_steps, o_steps)):
        where = f"step {i + 1} of {len(e_steps)}"
        if e.get("scheduler") is not None and o.get("scheduler") is not None:
            difference = _compare_scheduler(where, expected, observed, e["scheduler"], o["scheduler"])
            if difference:
                return difference
        if e.get("t") != o.get("t"):
            return f"{where}: timestep {_fmt(o.get('t'))}, GT {_fmt(e.get('t'))}"
        if e.get("sample") != o.get("sample"):
            return f"{where}: sample of shape {o.get('sample')}, GT {e.get('sample')}"
        e_kwargs, o_kwargs = e.get("kwargs") or {}, o.get("kwargs") or {}
        for key in list(e_kwargs) + [k for k in o_kwargs if k not in e_kwargs]:
            if e_kwargs.get(key, "<missing>") != o_kwargs.get(key, "<missing>"):
                return (f"{where}: step({key}={_fmt(o_kwargs.get(key, '<missing>'))}), GT "
                        f"{key}={_fmt(e_kwargs.get(key, '<missing>'))}")
        if e.get("error") != o.get("error"):
            return f"{where}: step() arguments unreadable ({o.get('error') or e.get('error')})"
    e_dec = (expected.get("vae_decode") or {}).get("latents")
    o_dec = (observed.get("vae_decode") or {}).get("latents")
    if e_dec != o_dec:
        show = lambda entries: " + ".join(f"{n} of {'x'.join(map(str, s))}" for *s, n in entries or []) \
            or "nothing"  # noqa: E731
        return f"VAE decoded {show(o_dec)}, GT {show(e_dec)}"
    if expected.get("outside_calls", 0) != observed.get("outside_calls", 0):
        return (f"{observed.get('outside_calls', 0)} calls of denoiser layers outside a denoiser call, GT "
                f"{expected.get('outside_calls', 0)}")
    return None
