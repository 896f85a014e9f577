"""Submissions for checking the audit, made from a task's GT program (a DDIM task: SD1.5 or SDXL, any method
whose GT calls ``pipe(...)`` once): cheats that pass the gate on the tiny model and compute something else
where they are timed, saboteurs that compute the GT's images and try to slow the units timed beside them, and an
honest program written another way. Used by ``bench_audit.py`` and ``tests/test_audit.py``."""

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


MAIN_BLOCK = '\n\nif __name__ == "__main__":'

# name -> code added before the GT's ``__main__`` block: the GT's load() and generate() wrapped, its images kept.
SABOTEURS = {
    # Device work queued right after the worker's own synchronise, before it answers: a second of matrix
    # products that would run while the next unit is timed (the harness's device-quiet check is what stops it).
    "queued": '''
_gt_load, _gt_generate = load, generate


def load(model_id=MODEL_ID, device="cuda", dtype=DTYPE):
    pipe = _gt_load(model_id, device, dtype)
    if str(device).startswith("cuda"):
        synchronize, side = torch.cuda.synchronize, torch.cuda.Stream(device)
        work = torch.randn(8192, 8192, device=device, dtype=torch.float16)

        def synchronize_then_queue(*args, **kwargs):
            synchronize(*args, **kwargs)
            if pipe.__dict__.pop("armed", False):
                with torch.cuda.stream(side):
                    for _ in range(600):
                        torch.mm(work, work)

        torch.cuda.synchronize = synchronize_then_queue
    return pipe


def generate(pipe, prompts, generators, height=HEIGHT, width=WIDTH):
    images = _gt_generate(pipe, prompts, generators, height=height, width=width)
    pipe.__dict__["armed"] = True
    return images
''',
    # A thread that keeps the device (the CPU, on the CPU) busy whenever the program is not being called: frozen
    # with its worker, it has nothing to slow.
    "burner": '''
import threading

_gt_load, _gt_generate = load, generate


def _burn(idle, device):
    cuda = str(device).startswith("cuda")
    work = torch.randn(*((4096, 4096) if cuda else (256, 256)), device=device,
                       dtype=torch.float16 if cuda else torch.float32)
    while idle.wait():
        torch.mm(work, work)
        if cuda:
            torch.cuda.current_stream(device).synchronize()


def load(model_id=MODEL_ID, device="cuda", dtype=DTYPE):
    pipe = _gt_load(model_id, device, dtype)
    pipe.__dict__["idle"] = threading.Event()
    pipe.idle.set()
    threading.Thread(target=_burn, args=(pipe.idle, device), daemon=True).start()
    return pipe


def generate(pipe, prompts, generators, height=HEIGHT, width=WIDTH):
    pipe.idle.clear()
    try:
        return _gt_generate(pipe, prompts, generators, height=height, width=width)
    finally:
        pipe.idle.set()
''',
}


def saboteur(gt: str, name: str) -> str:
    """The GT program ``gt`` with saboteur ``name`` of :data:`SABOTEURS` added."""
    return _replaced(gt, MAIN_BLOCK, "\n" + SABOTEURS[name] + MAIN_BLOCK)


def saboteurs(gt: str) -> dict[str, str]:
    """Every saboteur for one task: name -> program source."""
    return {name: saboteur(gt, name) for name in SABOTEURS}
