"""The gate's verdict: structured and JSON-able (checks with name, pass, expected, observed and a one-line
reason; the random inputs, the trace digests, timings)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from accelbench.dataset import json_safe


@dataclass
class Check:
    name: str
    passed: bool
    expected: Any = None
    observed: Any = None
    reason: str = ""  # one line; why it failed (or what passed)
    advisory: bool = False  # advisory checks never fail the verdict
    traceback: str = ""  # where the program raised: its last frames (its own file as program.py)


@dataclass
class Verdict:
    task_id: str
    variant: str
    program_sha256: str
    model_path: str
    device: str
    dtype: str
    inputs: dict = field(default_factory=dict)  # {"seed": ..., "calls": [{"prompts": [...], "seeds": [...]}, ...]}
    checks: list[Check] = field(default_factory=list)
    trace_digest: str | None = None  # the candidate's first call
    gt_trace_digest: str | None = None
    seconds: dict = field(default_factory=dict)
    trace: dict | None = field(default=None, repr=False)  # the candidate's first-call trace (not in to_dict)

    @property
    def passed(self) -> bool:
        required = [check for check in self.checks if not check.advisory]
        return bool(required) and all(check.passed for check in required)

    def failed_checks(self) -> list[str]:
        return [check.name for check in self.checks if not check.passed and not check.advisory]

    def check(self, name: str) -> Check | None:
        return next((check for check in self.checks if check.name == name), None)

    def first_failure(self) -> Check | None:
        return next((check for check in self.checks if not check.passed and not check.advisory), None)

    @property
    def reason(self) -> str:
        """One line: the first failed check and why (e.g. the first trace difference); empty if it passed."""
        failure = self.first_failure()
        return f"{failure.name}: {failure.reason}" if failure else ""

    @property
    def advisories(self) -> list[str]:
        """The static scan's findings, which never fail a program."""
        check = self.check("plausible")
        return list(check.observed) if check is not None and isinstance(check.observed, list) else []

    def to_dict(self) -> dict[str, Any]:
        data = {"passed": self.passed, "failed_checks": self.failed_checks(), "reason": self.reason,
                "advisories": self.advisories, **{k: v for k, v in asdict(self).items() if k != "trace"}}
        return json_safe(data)

    def format(self) -> str:
        lines = [f"{'PASS' if self.passed else 'FAIL'}  {self.task_id} ({self.variant}), program "
                 f"{self.program_sha256[:12]}, {self.device} {self.dtype}, inputs seed {self.inputs.get('seed')}"]
        for check in self.checks:
            mark = ("ok  " if check.passed else "FAIL") if not check.advisory else ("ok  " if check.passed else "warn")
            text = check.reason or f"{check.observed}"
            lines.append(f"  {mark} {check.name:<12} {text}")
            lines += [f"         {line}" for line in check.traceback.splitlines()]
        return "\n".join(lines)

