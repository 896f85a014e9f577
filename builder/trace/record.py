"""Recording a trace: the :class:`Tracer` installs forward hooks on the denoiser, its units and attention
modules and the VAE decoder, and wraps the schedulers' ``step`` and ``set_timesteps``, for one ``generate()`` call
at a time (:meth:`Tracer.recording`); untraced calls run untouched. What it records and ignores is in the
package's docstring; the format in :mod:`.entries`."""

from __future__ import annotations

import contextlib
import functools
import inspect
import zlib
from dataclasses import dataclass
from typing import Any

from accelbench.builder.trace.entries import WEIGHT_SUBSET, AttentionEntry, Trace
from accelbench.builder.trace.normalise import class_id, json_value, number, shape, timestep

_STEP_TENSOR_ARGS = ("self", "model_output", "timestep", "sample", "generator", "return_dict")


@dataclass
class _OpenAttention:
    """An attention call being recorded: whether it computed is known only once its projections ran."""

    index: int
    query: int | None
    key: int | None
    computed: bool = False

    def closed(self) -> AttentionEntry:
        return AttentionEntry(self.index, self.query, self.key, int(self.computed))


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
        import torch

        components = {name: getattr(module, "_orig_mod", module)
                      for name, module in (getattr(self.pipe, "components", None) or {}).items()
                      if isinstance(module, torch.nn.Module)}
        trace.weights = {name: _weights(module) for name, module in sorted(components.items())
                         if any(True for _ in module.parameters())}
        known = {id(sub) for module in components.values() for sub in module.modules()}
        handles.append(torch.nn.modules.module.register_module_forward_pre_hook(
            functools.partial(self._on_any_module, trace, known)))
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
                "t": timestep(bound.get("timestep")),
                "sample": shape(sample),
                "dtype": str(getattr(sample, "dtype", "")).replace("torch.", ""),
                "context": shape(context),
            }
            if isinstance(added, dict) and added:
                call["added"] = {k: shape(v) for k, v in sorted(added.items())}
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
        call["attention"] = trace.attention_pattern([entry.closed() for entry in state["attention"]])
        trace.calls.append(call)
        state["ran"] = state["attention"] = None
        return None

    def _on_attention_enter(self, state, index, module, args, kwargs):
        if state["ran"] is None:
            return None
        hidden = args[0] if args else kwargs.get("hidden_states")
        context = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        dims = shape(hidden) or []
        query = dims[2] * dims[3] if len(dims) == 4 else (dims[1] if len(dims) >= 2 else None)
        key = (shape(context) or [None, None])[1] if context is not None else None
        entry = _OpenAttention(index, query, key)
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
            ran[unit] = ord("1")
        if owner is not None:
            entry = state["open"].get(owner)
            if entry is not None:
                entry.computed = True
        return None

    @staticmethod
    def _on_any_module(trace, known, module, args):
        if id(module) not in known and any(True for _ in module.parameters(recurse=False)):
            name = class_id(type(module))
            trace.foreign[name] = trace.foreign.get(name, 0) + 1
        return None

    def _on_decode(self, trace, module, args):
        latents = args[0] if args else None
        dims = shape(latents)
        if dims:
            trace.decoded.append(dims)
        return None

    # -- scheduler wrappers --------------------------------------------------------------------------------

    @staticmethod
    def _wrap_step(trace: Trace, original, depth: dict):
        signature = _signature(original)

        def step(self, *args, **kwargs):
            depth["step"] += 1
            try:
                if depth["step"] == 1:
                    trace.steps.append(_step_record(trace, signature, self, args, kwargs))
                return original(self, *args, **kwargs)
            finally:
                depth["step"] -= 1

        return _disguised(step, original, signature)

    @staticmethod
    def _wrap_set_timesteps(trace: Trace, original, depth: dict):
        signature = _signature(original)

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
                    record["num_inference_steps"] = json_value(arguments.pop("num_inference_steps", None))
                    extra = {k: json_value(v) for k, v in arguments.items() if v is not None}
                    if extra:
                        record["kwargs"] = extra
                except Exception as error:  # noqa: BLE001
                    record["error"] = f"{type(error).__name__}"
                timesteps = getattr(self, "timesteps", None)
                record["length"] = len(timesteps) if timesteps is not None else None
                trace.set_timesteps.append(record)
            return result

        return _disguised(set_timesteps, original, signature)


def _disguised(wrapper, original, signature):
    """``wrapper`` with ``original``'s name, documentation and signature: pipelines inspect ``step()``'s
    parameters to decide whether to pass ``generator`` and ``eta``, and a bare wrapper would silently change what
    the program does. Unlike ``functools.wraps`` it sets no ``__wrapped__``, an attribute a program could look
    for (the audit of timed batches, not secrecy, is what catches a program that behaves only when traced)."""
    for name in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(wrapper, name, getattr(original, name, None))
    wrapper.__dict__.update(getattr(original, "__dict__", {}))
    if signature is not None:
        wrapper.__signature__ = signature
    return wrapper


def _signature(function) -> inspect.Signature | None:
    """``function``'s signature, None where Python cannot tell (some builtins)."""
    try:
        return inspect.signature(function)
    except (TypeError, ValueError):
        return None


def _weights(module) -> dict:
    """A component's entry of the trace's ``weights`` (see :mod:`.entries`): two values of each parameter tensor
    of the fixed subset, read in float32 and rounded like every traced number."""
    import torch

    dtypes: dict[str, int] = {}
    picked = []
    for name, parameter in module.named_parameters():
        dtype = str(parameter.dtype).replace("torch.", "")
        dtypes[dtype] = dtypes.get(dtype, 0) + parameter.numel()
        if zlib.crc32(name.encode()) % WEIGHT_SUBSET == 0 and parameter.numel() and not parameter.is_meta:
            picked.append((name, parameter))
    values: dict[str, list] = {}
    if picked:
        with torch.no_grad():
            flat = torch.cat([parameter.detach().reshape(-1)[::max(1, parameter.numel() // 2)][:2].float().cpu()
                              for _, parameter in picked]).tolist()
        position = 0
        for name, parameter in picked:
            count = min(2, parameter.numel())
            values[name] = [number(value) for value in flat[position:position + count]]
            position += count
    return {"class": class_id(type(module)), "dtype": max(dtypes, key=dtypes.get) if dtypes else None,
            "numel": sum(dtypes.values()), "values": dict(sorted(values.items()))}


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
        record["t"] = timestep(arguments.get("timestep"))
        record["sample"] = shape(arguments.get("sample"))
        record["kwargs"] = {k: json_value(v) for k, v in arguments.items() if k not in _STEP_TENSOR_ARGS}
    except Exception as error:  # noqa: BLE001
        record["error"] = f"{type(error).__name__}: {error}"[:200]
    return record

