"""The verdict on a target task (levels 4 and 5), once the gate and the trace constraints have passed a program:

1. **quality**, relative to the task's live reference program on the same (secret) prompts: PSNR to the
   baseline's images no lower than the reference's minus the budget's dB, and CLIP score loss no higher than the
   reference's plus the budget's percentage points (where the CLIP loss is undefined for both, as a random-weight
   CLIP leaves it, PSNR alone decides). Point estimates over the run's images, as the budget states them; on random
   weights only this relative reading means anything.
2. **speed** against the target, with the paired rounds' 95 % interval: level 4 a speedup over the live baseline
   of at least S, level 5 a latency per image of at most T ms on the run's GPU class. ``met`` when the whole
   interval is on the target's side, ``not met`` when it is wholly on the other side, else ``not decidable`` at
   this n (so is a value without an interval: fewer than ``functional.MIN_CI_UNITS`` batches).

Pure functions of a variant's summary values (``scorer.aggregate``'s columns) and the task's recorded ``target``
facts (``Target.to_dict()``).
"""

from __future__ import annotations

from dataclasses import dataclass

from accelbench.manifest import GPU_CLASSES, gpu_class

MET, NOT_MET, NOT_DECIDABLE, NO_TARGET = "met", "not met", "not decidable", "no target"
VERDICTS = (MET, NOT_MET, NOT_DECIDABLE, NO_TARGET)
QUALITY, SPEED = "quality", "speed"  # what a verdict other than met is about


@dataclass(frozen=True)
class TargetVerdict:
    verdict: str  # a VERDICTS entry
    reason: str  # one line; a verdict other than met starts with "quality:" or "speed:"

    @property
    def met(self) -> bool:
        return self.verdict == MET


def quality_problem(budget: dict, submission: dict, reference: dict) -> TargetVerdict | None:
    """The quality verdict when it is not met or cannot be judged; None when the submission is within budget.
    ``submission`` and ``reference`` hold ``psnr`` (mean dB to the baseline's images; inf when identical) and
    ``quality_loss`` (CLIP score loss as a fraction)."""
    for name in ("psnr", "quality_loss"):
        missing = [who for who, values in (("submission", submission), ("reference", reference))
                   if values.get(name) is None]
        if name == "quality_loss" and len(missing) == 2:
            break  # undefined on this run for both (a random-weight CLIP scores every image 0): PSNR decides
        if missing:
            return TargetVerdict(NOT_DECIDABLE, f"{QUALITY}: the {missing[0]} has no {name} (score the dataset "
                                                f"first: accelbench score)")
    floor = reference["psnr"] - budget["psnr_db"]
    if submission["psnr"] < floor:
        return TargetVerdict(NOT_MET, f"{QUALITY}: PSNR to the baseline's images {submission['psnr']:.2f} dB, "
                                      f"below the reference's {reference['psnr']:.2f} dB minus "
                                      f"{budget['psnr_db']:g} dB")
    if reference.get("quality_loss") is None:
        return None
    ceiling = 100 * reference["quality_loss"] + budget["clip_pct"]
    if 100 * submission["quality_loss"] > ceiling:
        return TargetVerdict(NOT_MET, f"{QUALITY}: CLIP score loss {100 * submission['quality_loss']:.2f} %, above "
                                      f"the reference's {100 * reference['quality_loss']:.2f} % plus "
                                      f"{budget['clip_pct']:g} %")
    return None


def _interval(value: float, low: float | None, high: float | None, n: int, unit: str) -> str:
    shown = f"{value:.4g}{unit}"
    return f"{shown} [{low:.4g}, {high:.4g}] (n={n})" if low is not None else f"{shown} (n={n}, no interval)"


def _against(value, low, high, n, goal: float, unit: str, at_least: bool, what: str) -> TargetVerdict:
    """met / not met / not decidable of ``value`` [low, high] against ``goal`` (at least, or at most, it)."""
    if value is None:
        return TargetVerdict(NOT_DECIDABLE, f"{SPEED}: no {what} (no ok batch was timed)")
    described = f"{what} {_interval(value, low, high, n, unit)}"
    target = f"{'at least' if at_least else 'at most'} {goal:g}{unit}"
    if low is None:
        return TargetVerdict(NOT_DECIDABLE, f"{SPEED}: {described}: too few batches to tell it from {target}")
    inside, outside = (low >= goal, high < goal) if at_least else (high <= goal, low > goal)
    if inside:
        return TargetVerdict(MET, f"{described}, {target}")
    if outside:
        return TargetVerdict(NOT_MET, f"{SPEED}: {described}, the target is {target}")
    return TargetVerdict(NOT_DECIDABLE, f"{SPEED}: {described} straddles the target, {target}, at this n")


def speed_verdict(target: dict, submission: dict, device_name: str) -> TargetVerdict:
    """Level 4: ``speedup`` [``speedup_ci_low``, ``speedup_ci_high``] (``speedup_n`` batches) against
    ``target["speedup"]``. Level 5: ``latency_ms`` [..] per image against the target of ``device_name``'s GPU
    class; ``no target`` where the task names none for it."""
    if target.get("speedup") is not None:
        return _against(submission.get("speedup"), submission.get("speedup_ci_low"),
                        submission.get("speedup_ci_high"), submission.get("speedup_n") or 0, target["speedup"], "×",
                        True, "speedup")
    gpu = gpu_class(device_name or "")
    goals = target.get("latency_ms") or {}
    if gpu not in goals:
        listed = ", ".join(f"{GPU_CLASSES[key]} {value:g} ms" for key, value in goals.items())
        return TargetVerdict(NO_TARGET, f"{SPEED}: this task has no latency target on {device_name or 'this device'} "
                                        f"(targets: {listed})")
    return _against(submission.get("latency_ms"), submission.get("latency_ms_ci_low"),
                    submission.get("latency_ms_ci_high"), submission.get("latency_ms_n") or 0, goals[gpu], " ms",
                    False, "latency per image")


def target_verdict(target: dict, submission: dict, reference: dict, device_name: str) -> TargetVerdict:
    """Quality first (relative to ``reference``), then speed: the task's verdict on ``submission``."""
    return quality_problem(target["budget"], submission, reference) or speed_verdict(target, submission,
                                                                                      device_name)
