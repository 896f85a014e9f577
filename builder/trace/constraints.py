"""A target task's constraints, read from execution traces: what no acceleration may change (the model and its
weights, the output resolution, the number of images, no second model) and what the task fixes (sampler, steps,
dtype, guidance), each checked against the baseline program's trace of the same inputs. Everything else is free:
which blocks run, how attention is computed, how often the denoiser is called. No torch here."""

from __future__ import annotations

from collections.abc import Sequence

from accelbench.builder.trace.compare import scheduler_difference

# The names of the constraints, in the order they are checked; a violation reads "NAME: what differs".
CONSTRAINTS = ("trace", "model", "weights", "second model", "resolution", "images", "sampler", "steps", "dtype",
               "guidance")
WEIGHT_RTOL = 2 ** -7  # bfloat16's precision: one weight read in any floating dtype agrees with itself within it
WEIGHT_ATOL = 1e-6


def constraint_violation(baseline: dict, trace: dict | None, fixed: Sequence[str]) -> str | None:
    """None when ``trace`` keeps every constraint of a target task that fixes ``fixed`` (FIXABLE keys), else the
    first one it breaks, as ``"NAME: what differs from the baseline"``."""
    if not isinstance(trace, dict) or not trace:
        return "trace: no execution trace was recorded"
    if trace.get("errors"):
        return f"trace: the trace is incomplete: {trace['errors'][0]}"
    for check in (_model, _weights, _second_model, _resolution, _images):
        found = check(baseline, trace)
        if found:
            return found
    for name, check in (("sampler", _sampler), ("steps", _steps), ("dtype", _dtype), ("guidance", _guidance)):
        if name in fixed:
            found = check(baseline, trace)
            if found:
                return f"{name}: {found}"
    return None


def _model(baseline: dict, trace: dict) -> str | None:
    expected, observed = baseline.get("denoiser") or {}, trace.get("denoiser")
    if observed is None:
        return "model: no denoiser found on the pipeline (pipe.unet / pipe.transformer)"
    if (expected.get("class"), expected.get("units"), expected.get("attention")) != (
            observed.get("class"), observed.get("units"), observed.get("attention")):
        return (f"model: the denoiser is a {observed.get('class')} of {len(observed.get('units') or [])} units, the "
                f"task's model a {expected.get('class')} of {len(expected.get('units') or [])}: another or a "
                f"smaller model")
    weights = trace.get("weights") or {}
    for component, entry in (baseline.get("weights") or {}).items():
        mine = weights.get(component)
        if mine is None:
            return f"model: the pipeline has no {component}, the task's model has one"
        if (mine["class"], mine["numel"]) != (entry["class"], entry["numel"]):
            return (f"model: its {component} is a {mine['class']} of {mine['numel']:,} parameters, the task's model's "
                    f"a {entry['class']} of {entry['numel']:,}: another or a smaller model")
    return None


def _weights(baseline: dict, trace: dict) -> str | None:
    weights = trace.get("weights") or {}
    for component, entry in (baseline.get("weights") or {}).items():
        mine = weights[component]["values"]
        missing = [name for name in entry["values"] if name not in mine]
        if len(missing) * 2 > len(entry["values"]):
            return f"weights: {component} lacks {len(missing)} of the task's model's {len(entry['values'])} sampled " \
                   f"parameters (first: {missing[0]})"
        for name, values in entry["values"].items():
            for value, other in zip(values, mine.get(name, values)):
                if abs(value - other) > WEIGHT_ATOL + WEIGHT_RTOL * max(abs(value), abs(other)):
                    return (f"weights: {component} parameter {name} holds {other:g} where the task's model holds "
                            f"{value:g}: other weights (only the dtype may change them, within its precision)")
    return None


def _second_model(baseline: dict, trace: dict) -> str | None:
    foreign = trace.get("foreign_calls") or {}
    if not foreign:
        return None
    listing = ", ".join(f"{calls} of {name}" for name, calls in foreign.items())
    return f"second model: modules with parameters that are no part of the pipeline ran ({listing} calls)"


def _sample_size(call: dict) -> list | None:
    sample = call.get("sample") or []
    return sample[1:] if len(sample) >= 3 else None


def _resolution(baseline: dict, trace: dict) -> str | None:
    expected = next((_sample_size(call) for call in baseline.get("calls") or [] if _sample_size(call)), None)
    for index, call in enumerate(trace.get("calls") or []):
        size = _sample_size(call)
        if expected is not None and size is not None and size != expected:
            return (f"resolution: denoiser call {index + 1} got latents of {'x'.join(map(str, size))} (channels x "
                    f"size), the baseline {'x'.join(map(str, expected))}: the images are rendered at another size")
    shapes = lambda entry: sorted(tuple(latent[:-1]) for latent in (entry.get("vae_decode") or {}).get("latents") or [])  # noqa: E731
    if shapes(trace) != shapes(baseline):
        show = lambda found: ", ".join("x".join(map(str, shape)) for shape in found) or "nothing"  # noqa: E731
        return f"resolution: the VAE decoded latents of {show(shapes(trace))}, the baseline {show(shapes(baseline))}"
    return None


def _decoded(entry: dict) -> int:
    return sum(latent[-1] for latent in (entry.get("vae_decode") or {}).get("latents") or [])


def _images(baseline: dict, trace: dict) -> str | None:
    if _decoded(trace) != _decoded(baseline):
        return f"images: the VAE decoded {_decoded(trace)} latents for the baseline's {_decoded(baseline)} images"
    return None


def _sampler(baseline: dict, trace: dict) -> str | None:
    for where, key in (("step 1", "steps"), ("set_timesteps", "set_timesteps")):
        expected, observed = baseline.get(key) or [], trace.get(key) or []
        if expected and not observed:
            return f"no {key} call was recorded (the baseline's scheduler was bypassed)"
        if expected:
            found = scheduler_difference(where, baseline, trace, expected[0].get("scheduler"),
                                         observed[0].get("scheduler"), reference="the baseline")
            if found:
                return found
    return None


def _steps(baseline: dict, trace: dict) -> str | None:
    summary = lambda entry: [call.get("num_inference_steps") for call in entry.get("set_timesteps") or []]  # noqa: E731
    if summary(trace) != summary(baseline):
        return f"set_timesteps with {summary(trace) or 'nothing'}, the baseline {summary(baseline)}"
    expected = [step.get("t") for step in baseline.get("steps") or []]
    observed = [step.get("t") for step in trace.get("steps") or []]
    if observed != expected:
        return f"{len(observed)} scheduler steps, the baseline {len(expected)}" if len(observed) != len(expected) \
            else "the scheduler stepped through other timesteps than the baseline's"
    return None


def _dtype(baseline: dict, trace: dict) -> str | None:
    component = (baseline.get("denoiser") or {}).get("component")
    expected = ((baseline.get("weights") or {}).get(component) or {}).get("dtype")
    observed = ((trace.get("weights") or {}).get(component) or {}).get("dtype")
    if observed != expected:
        return f"the {component}'s weights are {observed}, the baseline's {expected}"
    baseline_dtypes = {call.get("dtype") for call in baseline.get("calls") or []}
    for index, call in enumerate(trace.get("calls") or []):
        if call.get("dtype") not in baseline_dtypes:
            return f"denoiser call {index + 1} got {call.get('dtype')} latents, the baseline {sorted(baseline_dtypes)}"
    return None


def _guidance(baseline: dict, trace: dict) -> str | None:
    batches = {(call.get("sample") or [None])[0] for call in baseline.get("calls") or []}
    for index, call in enumerate(trace.get("calls") or []):
        batch = (call.get("sample") or [None])[0]
        if batch not in batches:
            return (f"denoiser call {index + 1} ran a latent batch of {batch} for {_decoded(trace)} images, the "
                    f"baseline {sorted(batches)}: both guidance branches run at every step")
    return None
