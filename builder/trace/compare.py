"""Comparing two traces: :func:`compare_traces` says, in one line, where a program's trace first differs from
the GT's (sampler, schedule, every denoiser call, the decoded latents). No torch here."""

from __future__ import annotations

import json

from accelbench.builder.trace.entries import attention_entries


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
    computed = []
    for i, call in enumerate(trace.get("calls") or []):
        entries = attention_entries(trace, call["attention"]) if isinstance(call.get("attention"), int) else []
        cross = [entry for entry in entries if entry.is_cross]
        if cross and any(entry.computed for entry in cross):
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
    e_att = attention_entries(expected, exp_call["attention"])
    o_att = attention_entries(observed, obs_call["attention"])
    if [e.index for e in e_att] != [o.index for o in o_att]:
        j = next((k for k, (e, o) in enumerate(zip(e_att, o_att)) if e.index != o.index), min(len(e_att), len(o_att)))
        if j < min(len(e_att), len(o_att)):
            return (f"{where}: attention {_attention_name(observed, o_att[j].index)} ran where GT ran "
                    f"{_attention_name(expected, e_att[j].index)}")
        return f"{where}: {len(o_att)} attention calls, GT {len(e_att)}"
    # Token counts (ToMe), then cross-attention computed or reused (T-GATE's gate), then self-attention.
    for e, o in zip(e_att, o_att):
        kind = "cross-attention" if e.is_cross else "self-attention"
        name = _attention_name(expected, e.index)
        if e.query != o.query:
            return f"{where}: {kind} {name} got {o.query} query tokens, GT {e.query} (token merging differs)"
        if e.key != o.key:
            return f"{where}: {kind} {name} attended to {o.key} tokens, GT {e.key}"
    for cross in (True, False):
        for e, o in zip(e_att, o_att):
            if e.is_cross != cross or e.computed == o.computed:
                continue
            kind = "cross-attention" if cross else "self-attention"
            what = "computed, GT reused its cache" if o.computed else "reused a cache, GT computed it"
            hint = (f" (GT computes cross-attention {_cross_summary(expected)}, this program "
                    f"{_cross_summary(observed)})") if cross else ""
            return f"{where}: {kind} {_attention_name(expected, e.index)} {what}{hint}"
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


def scheduler_difference(where: str, expected: dict, observed: dict, e_index, o_index,
                         reference: str = "GT") -> str | None:
    """How the scheduler (class, then config) of ``observed``'s entry ``o_index`` differs from ``expected``'s
    entry ``e_index`` (``reference`` names whose it is), or None."""
    e = expected["schedulers"][e_index] if isinstance(e_index, int) else {}
    o = observed["schedulers"][o_index] if isinstance(o_index, int) else {}
    if (e.get("class"), e.get("diffusers")) != (o.get("class"), o.get("diffusers")):
        return f"{where}: scheduler {_scheduler_name(o)}, {reference} {_scheduler_name(e)}"
    e_config, o_config = e.get("config") or {}, o.get("config") or {}
    for key in list(e_config) + [k for k in o_config if k not in e_config]:
        if e_config.get(key, "<missing>") != o_config.get(key, "<missing>"):
            return (f"{where}: scheduler config {key}={_fmt(o_config.get(key, '<missing>'))}, {reference} "
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
            difference = scheduler_difference(where, expected, observed, e_list[0].get("scheduler"),
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
            difference = scheduler_difference(where, expected, observed, e["scheduler"], o["scheduler"])
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
