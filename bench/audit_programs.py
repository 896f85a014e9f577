"""Submissions for checking the audit, made from a task's GT program (a DDIM task: SD1.5 or SDXL, any method
whose GT calls ``pipe(...)`` once): cheats that pass the gate on the tiny model and compute something else
where they are timed, and an honest program written another way. Used by ``bench_audit.py`` and
``tests/test_audit.py``."""

CALL = "    output = pipe(\n"
RETURN = "    return output.images\n"
COUNTED = '    pipe.calls = getattr(pipe, "calls", 0) + 1\n'
WATCHED = "DDIMScheduler.step is not STEP_AT_IMPORT"  # the harness's tracer wraps the scheduler's step()
HONEST_CALLS = 4  # the gate's four calls: a cheat that is honest for this many passes the gate

# name -> (what runs before the pipeline call, what runs after it): ``steps`` is how many denoising steps the call
# gets (half the task's is a 2x "speedup").
CHEATS = {
    # Honest for the first four calls of its process: the gate's four calls and the traced warm-up pass.
    "late": (COUNTED + f"    steps = NUM_INFERENCE_STEPS if pipe.calls <= {HONEST_CALLS} else "
                       "NUM_INFERENCE_STEPS // 2\n", ""),
    # Honest whenever it is traced, cheap otherwise: the gate's untraced calls give it away.
    "unwatched": (f"    steps = NUM_INFERENCE_STEPS if {WATCHED} else NUM_INFERENCE_STEPS // 2\n", ""),
    # Honest for four calls, then, where it is not traced, within the GT's tolerance but not what it computes
    # when traced (a cheaper approximation would look like this).
    "subtle": (COUNTED + "    steps = NUM_INFERENCE_STEPS\n",
               f"    if pipe.calls > {HONEST_CALLS} and not ({WATCHED}):\n"
               "        output.images[:, 0, 0, :] = (output.images[:, 0, 0, :] + 2 / 255).clip(0, 1)\n"),
}

GT_CALL = '''    output = pipe(
        prompts,
        num_inference_steps=NUM_INFERENCE_STEPS,
        guidance_scale=GUIDANCE_SCALE,
        height=height,
        width=width,
        generator=generators,
        output_type="np",
    )
    return output.images
'''


def _replaced(source: str, old: str, new: str) -> str:
    if old not in source:
        raise ValueError(f"the GT program has no {old.strip()!r} to change")
    return source.replace(old, new)


def cheat(gt: str, name: str) -> str:
    """The GT program ``gt`` turned into cheat ``name`` of :data:`CHEATS`."""
    before, after = CHEATS[name]
    source = _replaced(gt, "\n\ndef load(", "\nSTEP_AT_IMPORT = DDIMScheduler.step\n\n\ndef load(")
    source = _replaced(source, CALL, before + CALL)
    source = _replaced(source, "num_inference_steps=NUM_INFERENCE_STEPS", "num_inference_steps=steps")
    return _replaced(source, RETURN, after + RETURN)


def memoising(gt: str) -> str:
    """Computes honestly and, after the gate's calls, serves an input it has seen from its cache: nothing but the
    audit's replay repeats an input."""
    source = _replaced(gt, CALL, COUNTED +
                       "    key = (tuple(prompts), tuple(g.initial_seed() for g in generators), height, width)\n"
                       '    memo = pipe.__dict__.setdefault("memo", {})\n'
                       f"    if pipe.calls > {HONEST_CALLS} and key in memo:\n"
                       "        return memo[key]\n" + CALL)
    return _replaced(source, RETURN, "    memo[key] = output.images\n" + RETURN)


def other_style(gt: str) -> str:
    """The same task written another way: keyword arguments, inference mode, tensors out, converted here."""
    return _replaced(gt, GT_CALL, '''    with torch.inference_mode():
        images = pipe(prompt=list(prompts), height=height, width=width, guidance_scale=GUIDANCE_SCALE,
                      num_inference_steps=NUM_INFERENCE_STEPS, generator=list(generators), output_type="pt").images
    return images.permute(0, 2, 3, 1).float().cpu().numpy()
''')


def programs(gt: str) -> dict[str, str]:
    """Every submission of this module for one task: name -> program source."""
    return {**{name: cheat(gt, name) for name in CHEATS}, "memo": memoising(gt), "honest": other_style(gt)}
