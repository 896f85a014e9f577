"""Targets of the standing benchmarks, and the verdict each measurement gives them.

A verdict follows the measurement's 95 % CI, not its point estimate: MET when the whole interval satisfies the
target, NOT MET when none of it does, NOT DECIDABLE when it straddles the limit or there is no interval (fewer
resampling units than the scorer's minimum). An exact measurement (a count, or a maximum over every call)
has no interval and is decided on its value; so is a promise for every trial (:func:`every`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

MET, NOT_MET, NOT_DECIDABLE = "MET", "NOT MET", "NOT DECIDABLE"


@dataclass(frozen=True)
class Target:
    goal: str  # what is required, in words and numbers: "throughput vs bare >= 0.98"
    value: float
    interval: tuple[float, float] | None  # the 95 % CI; None: an exact measurement
    n: str  # the resampling units (or calls, trials, programs) behind the value: "25 rounds"
    verdict: str
    scale: float = 1.0  # printed as scale x value ...
    spec: str = ".3f"  # ... in this format ...
    unit: str = ""  # ... followed by this

    def measured(self) -> str:
        """The value and its CI as printed: ``-1.2 % [-4.0, +1.6]``; ``n/a`` for a CI that could not be had."""
        text = f"{self.scale * self.value:{self.spec}}{self.unit}"
        if self.interval is None:
            return text
        low, high = self.interval
        if math.isnan(low):
            return f"{text} [n/a]"
        return f"{text} [{self.scale * low:{self.spec}}, {self.scale * high:{self.spec}}]"


def units(count: int, noun: str) -> str:
    """``n`` as the targets print it: "1 run", "5 runs"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _bounds(value: float, interval: tuple[float, float] | None) -> tuple[float, float]:
    """The interval a verdict is decided on: an exact measurement is its own interval."""
    return interval if interval is not None else (value, value)


def _decide(inside: bool, outside: bool, low: float) -> str:
    return NOT_DECIDABLE if math.isnan(low) else MET if inside else NOT_MET if outside else NOT_DECIDABLE


def at_least(goal: str, limit: float, value: float, interval: tuple[float, float] | None, n: str,
             **style) -> Target:
    """``value`` (with its CI) must be >= ``limit``."""
    low, high = _bounds(value, interval)
    return Target(goal, value, interval, n, _decide(low >= limit, high < limit, low), **style)


def at_most(goal: str, limit: float, value: float, interval: tuple[float, float] | None, n: str,
            **style) -> Target:
    """``value`` (with its CI) must be <= ``limit``."""
    low, high = _bounds(value, interval)
    return Target(goal, value, interval, n, _decide(high <= limit, low > limit, low), **style)


def within(goal: str, bound: float, value: float, interval: tuple[float, float] | None, n: str,
           **style) -> Target:
    """``value`` (with its CI) must lie in [-bound, +bound]."""
    low, high = _bounds(value, interval)
    return Target(goal, value, interval, n, _decide(-bound <= low and high <= bound, high < -bound or low > bound,
                                                    low), **style)


def every(goal: str, passed: int, total: int) -> Target:
    """A promise for every trial: one that fails breaks it (NOT MET), and it is MET while none has. The interval
    is the exact (Clopper-Pearson) 95 % CI of the share of trials that pass: how rare a failure can still be."""
    from scipy.stats import beta

    low = float(beta.ppf(0.025, passed, total - passed + 1)) if passed else 0.0
    high = float(beta.ppf(0.975, passed + 1, total - passed)) if passed < total else 1.0
    return Target(goal, passed / total, (low, high), units(total, "trial"), MET if passed == total else NOT_MET)


def percent_within(goal: str, bound: float, value: float, interval: tuple[float, float] | None, n: str) -> Target:
    """``within`` for a relative difference, printed in percent."""
    return within(goal, bound, value, interval, n, scale=100, spec="+.1f", unit=" %")


def print_targets(title: str, targets: list[Target]) -> None:
    """The closing lines of a benchmark: each target, what was measured with its CI and n, and the verdict."""
    print(f"\ntargets: {title}")
    goal_width = max(len(target.goal) for target in targets)
    measured_width = max(len(target.measured()) for target in targets)
    for target in targets:
        print(f"  {target.goal:<{goal_width}}  {target.measured():<{measured_width}}  n = {target.n:<12}  "
              f"{target.verdict}")


def markdown_table(targets: list[Target]) -> list[str]:
    """The targets as markdown rows, for the headline tables."""
    lines = ["| target | measured [95 % CI] | n | verdict |", "|---|---|---|---|"]
    return lines + [f"| {target.goal} | {target.measured()} | {target.n} | **{target.verdict}** |"
                    for target in targets]


def as_json(targets: list[Target]) -> list[dict]:
    return [asdict(target) for target in targets]
