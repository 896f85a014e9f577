"""Parsing ``methods.yaml``, ``schedulers.yaml`` and ``models.yaml`` into their typed entries."""

from __future__ import annotations

import dataclasses
import re

from accelbench.manifest.checks import Checker, check_param_value
from accelbench.manifest.model import (
    BASELINE_METHOD,
    DENOISERS,
    DTYPES,
    PARAM_TYPES,
    SAMPLER_PARAM,
    SAMPLER_STEPS_PARAM,
    TEMPLATE_NAME,
    GateTolerance,
    Method,
    MethodBinding,
    Model,
    ParamSpec,
    Scheduler,
    did_you_mean,
    unknown_name,
)


def _template_exists(name: str) -> bool:
    from importlib import resources

    return resources.files("accelbench.builder.templates").joinpath(f"{name}.py.tmpl").is_file()


def _synthetic_architectures() -> tuple[str, ...]:
    from accelbench.builder.synthetic_configs import ARCHITECTURES  # plain data, no torch

    return ARCHITECTURES


def parse_methods(data, source, schedulers: dict[str, Scheduler]) -> dict[str, Method]:
    """The methods of methods.yaml. A composition (``components``) inherits its components' parameters, in their
    order, where it does not list its own (one it lists replaces the inherited one of that name), and their gate
    tolerance and deviation threshold unless it sets its own: each fact is written once, on the single method.
    A method that ``sets_sampler`` must have a ``sampler`` parameter choosing among ``schedulers`` and an int
    ``sampler_steps``."""
    check = Checker(source)
    entries = check.section(data, "methods")
    methods, raw = {}, {}
    for method_id, entry in entries.items():
        key = f"methods.{method_id}"
        check.mapping(entry, key, required=("name", "template", "denoisers"),
                      optional=("params", "library", "needs_loader", "deviation_psnr_db", "components",
                                "gate_tolerance", "sets_sampler"))
        template = check.string(entry["template"], f"{key}.template")
        if not TEMPLATE_NAME.fullmatch(template) or not _template_exists(template):
            check.fail(f"{key}.template", f"{template!r} is not a template in builder/templates (a name such as "
                                          f"'deepcache' for deepcache.py.tmpl; no paths)")
        denoisers = check.sequence(entry["denoisers"], f"{key}.denoisers")
        for index, denoiser in enumerate(denoisers):
            check.choice(denoiser, f"{key}.denoisers[{index}]", DENOISERS, "denoiser")
        components = tuple(check.string(name, f"{key}.components[{index}]") for index, name in
                           enumerate(check.sequence(entry.get("components") or [], f"{key}.components",
                                                    nonempty=False)))
        if "params" not in entry and not components:
            check.fail(key, "missing key 'params' (only a composition, with components, inherits its parameters)")
        params = {}
        for name, spec in check.mapping(entry.get("params") or {}, f"{key}.params", any_keys=True).items():
            params[name] = _parse_param_spec(check, f"{key}.params.{name}", name, spec)
        library = entry.get("library")
        deviation = entry.get("deviation_psnr_db")
        if deviation is not None:
            deviation = check.number(deviation, f"{key}.deviation_psnr_db")
            if not 0 < deviation < 100:
                check.fail(f"{key}.deviation_psnr_db", f"must be a PSNR in dB between 0 and 100, got {deviation:g}")
        raw[method_id] = entry
        methods[method_id] = Method(
            id=method_id, name=check.string(entry["name"], f"{key}.name"),
            template=template, denoisers=tuple(denoisers),
            params=params, library=check.string(library, f"{key}.library") if library is not None else None,
            needs_loader=check.boolean(entry.get("needs_loader", False), f"{key}.needs_loader"),
            deviation_psnr_db=deviation, components=components,
            sets_sampler=check.boolean(entry.get("sets_sampler", False), f"{key}.sets_sampler"),
        )
        if methods[method_id].sets_sampler:
            _check_sampler_params(check, key, params, schedulers)
    if BASELINE_METHOD not in methods:
        check.fail("methods", f"the method {BASELINE_METHOD!r} (the baseline) must be defined")
    if methods[BASELINE_METHOD].params:
        check.fail(f"methods.{BASELINE_METHOD}.params", "the baseline method takes no parameters")
    for method in methods.values():
        for index, component in enumerate(method.components):
            if component not in methods or component == BASELINE_METHOD or methods[component].components:
                check.fail(f"methods.{method.id}.components[{index}]",
                           f"{component!r} is not a single acceleration method of this file"
                           f"{did_you_mean(component, methods)}")
    for method_id, method in methods.items():
        key, parts = f"methods.{method_id}", [methods[component] for component in method.components]
        params = {name: spec for part in parts for name, spec in part.params.items()} | method.params
        for name, spec in params.items():
            for bound in ("min", "max"):
                ref = getattr(spec, bound)
                if isinstance(ref, str) and ref != "steps" and ref not in params:
                    check.fail(f"{key}.params.{name}.{bound}",
                               f"bound {ref!r} is neither a number, 'steps' nor a parameter{did_you_mean(ref, params)}")
        tolerance = _parse_gate_tolerance(check, f"{key}.gate_tolerance", raw[method_id].get("gate_tolerance"),
                                          params)
        inherited = [part for part in parts if part.gate_tolerance is not None]
        deviations = [part.deviation_psnr_db for part in parts if part.deviation_psnr_db is not None]
        methods[method_id] = dataclasses.replace(
            method, params=params,
            gate_tolerance=tolerance or (inherited[0].gate_tolerance if inherited else None),
            deviation_psnr_db=method.deviation_psnr_db if method.deviation_psnr_db is not None else (
                min(deviations) if deviations else None))
    return methods


def _check_sampler_params(check: Checker, key: str, params: dict[str, ParamSpec], schedulers) -> None:
    sampler, steps = params.get(SAMPLER_PARAM), params.get(SAMPLER_STEPS_PARAM)
    if sampler is None or sampler.type != "str" or not sampler.choices:
        check.fail(f"{key}.params.{SAMPLER_PARAM}", "a method that sets_sampler needs a str parameter "
                                                    f"{SAMPLER_PARAM!r} with choices (scheduler ids)")
    if steps is None or steps.type != "int":
        check.fail(f"{key}.params.{SAMPLER_STEPS_PARAM}", "a method that sets_sampler needs an int parameter "
                                                          f"{SAMPLER_STEPS_PARAM!r}")
    for index, choice in enumerate(sampler.choices):
        if choice not in schedulers:
            check.fail(f"{key}.params.{SAMPLER_PARAM}.choices[{index}]",
                       unknown_name("scheduler", choice, schedulers))


def _parse_gate_tolerance(check: Checker, key: str, value, params: dict[str, ParamSpec]) -> GateTolerance | None:
    if value is None:
        return None
    entry = check.mapping(value, key, required=("max_abs", "mean_abs", "basis"), optional=("when",))
    when = entry.get("when")
    if when is not None and (when not in params or params[when].type != "bool"):
        check.fail(f"{key}.when", f"must name a bool parameter of the method, got {when!r}"
                                  f"{did_you_mean(when, params)}")
    max_abs = check.integer(entry["max_abs"], f"{key}.max_abs", minimum=0)
    if max_abs > 255:
        check.fail(f"{key}.max_abs", f"must be a uint8 difference (<= 255), got {max_abs}")
    return GateTolerance(max_abs=max_abs, mean_abs=check.number(entry["mean_abs"], f"{key}.mean_abs"),
                         basis=check.string(entry["basis"], f"{key}.basis"), when=when)


def _parse_param_spec(check: Checker, key: str, name: str, spec) -> ParamSpec:
    check.mapping(spec, key, required=("type", "default"), optional=("min", "max", "choices", "help", "search"))
    type_name = check.choice(spec["type"], f"{key}.type", PARAM_TYPES, "parameter type")
    for bound in ("min", "max"):
        value = spec.get(bound)
        if value is not None and not isinstance(value, str):
            check.number(value, f"{key}.{bound}")
    choices = spec.get("choices")
    if choices is not None:
        choices = tuple(check.sequence(choices, f"{key}.choices"))
    search = tuple(check.sequence(spec["search"], f"{key}.search")) if "search" in spec else ()
    param = ParamSpec(name=name, type=type_name, default=spec["default"], min=spec.get("min"),
                      max=spec.get("max"), choices=choices, help=spec.get("help", ""), search=search)
    check_param_value(check, f"{key}.default", param, param.default, {})
    for index, value in enumerate(search):  # bounds naming steps or a parameter are applied per search
        check_param_value(check, f"{key}.search[{index}]", param, value, {})
    return param


def parse_schedulers(data, source) -> dict[str, Scheduler]:
    check = Checker(source)
    entries = check.section(data, "schedulers")
    schedulers = {}
    for scheduler_id, entry in entries.items():
        key = f"schedulers.{scheduler_id}"
        check.mapping(entry, key, required=("name", "class"), optional=("config",))
        class_name = check.string(entry["class"], f"{key}.class")
        if not re.fullmatch(r"[A-Z]\w*Scheduler", class_name):
            check.fail(f"{key}.class", f"must name a diffusers scheduler class (…Scheduler), got {class_name!r}")
        config = entry.get("config") or {}
        schedulers[scheduler_id] = Scheduler(
            id=scheduler_id, name=check.string(entry["name"], f"{key}.name"), class_name=class_name,
            config=dict(check.mapping(config, f"{key}.config", any_keys=True)),
        )
    return schedulers


def parse_models(data, source, methods: dict[str, Method]) -> dict[str, Model]:
    check = Checker(source)
    entries = check.section(data, "models")
    models = {}
    for model_id, entry in entries.items():
        key = f"models.{model_id}"
        check.mapping(entry, key, required=("name", "hub_id", "pipeline", "denoiser", "resolution", "dtype",
                                            "guidance_scale", "methods", "synthetic"),
                      optional=("load_kwargs", "call_kwargs"))
        denoiser = check.choice(entry["denoiser"], f"{key}.denoiser", DENOISERS, "denoiser")
        resolution = check.integer(entry["resolution"], f"{key}.resolution", minimum=8)
        if resolution % 8:
            check.fail(f"{key}.resolution", f"must be a multiple of 8 (the VAE downsamples by 8), got {resolution}")
        bindings = {}
        for method_id, binding in check.mapping(entry["methods"], f"{key}.methods", optional=tuple(methods)).items():
            bkey = f"{key}.methods.{method_id}"
            method = methods[method_id]
            if denoiser not in method.denoisers:
                check.fail(bkey, f"method {method_id!r} needs a {' or '.join(method.denoisers)} denoiser, "
                                 f"model {model_id!r} has a {denoiser}")
            binding = check.mapping(binding or {}, bkey, optional=("loader", "call_kwargs"))
            loader = binding.get("loader")
            if method.needs_loader and loader is None:
                check.fail(f"{bkey}.loader", f"missing required key (the {method.name} loader class for this "
                                             f"pipeline)")
            bindings[method_id] = MethodBinding(
                loader=check.string(loader, f"{bkey}.loader") if loader is not None else None,
                call_kwargs=dict(check.mapping(binding.get("call_kwargs") or {}, f"{bkey}.call_kwargs", any_keys=True)),
            )
        if BASELINE_METHOD not in bindings:
            check.fail(f"{key}.methods", f"must include {BASELINE_METHOD!r} (the baseline)")
        models[model_id] = Model(
            id=model_id, name=check.string(entry["name"], f"{key}.name"),
            hub_id=check.string(entry["hub_id"], f"{key}.hub_id"),
            pipeline=check.string(entry["pipeline"], f"{key}.pipeline"), denoiser=denoiser,
            resolution=resolution, dtype=check.choice(entry["dtype"], f"{key}.dtype", DTYPES[1:], "dtype"),
            guidance_scale=check.number(entry["guidance_scale"], f"{key}.guidance_scale"),
            load_kwargs=dict(check.mapping(entry.get("load_kwargs") or {}, f"{key}.load_kwargs", any_keys=True)),
            call_kwargs=dict(check.mapping(entry.get("call_kwargs") or {}, f"{key}.call_kwargs", any_keys=True)),
            methods=bindings,
            synthetic=check.choice(entry["synthetic"], f"{key}.synthetic", _synthetic_architectures(),
                                   "synthetic architecture"),
        )
    return models
