"""Every rule that passes or rejects a program, in one place: the gate's checks call by call (:class:`Judge`)
and, for ``generate``, the trace check of a submission's traced warm-up batch on the real model
(:func:`real_model_difference`). What each check means is in the package docstring."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from accelbench import schema
from accelbench.builder.gate.inputs import PERMUTED
from accelbench.builder.gate.references import Result
from accelbench.builder.gate.tolerance import Tolerance
from accelbench.builder.gate.verdict import Check
from accelbench.builder.trace import compare_traces, trace_digest
from accelbench.builder.trace.constraints import constraint_violation

if TYPE_CHECKING:
    from accelbench.builder.gate.check import Gate
    from accelbench.builder.gate.verdict import Verdict


def describe_failure(failure) -> str:
    return f"{getattr(failure, 'status', 'error')}: {getattr(failure, 'reason', failure)}"


def real_model_difference(gt_trace: dict | None, trace: dict | None) -> str | None:
    """Why a submission's traced batch on the real model is rejected (its trace differs from the GT's on the same
    batch), as the one-line reason its rows get; None when it computed what the GT computed, or when the GT did
    not run in this run (the gate's verdict on the tiny model then stands)."""
    if gt_trace is None:
        return None
    difference = compare_traces(gt_trace, trace) if trace is not None else "no execution trace"
    return None if difference is None else f"gate (real model): spec: {difference}"


def real_model_violation(baseline_trace: dict | None, trace: dict | None, fixed) -> str | None:
    """A target task's :func:`real_model_difference`: why a submission's traced batch on the real model is
    rejected (it breaks the task's constraints against the baseline's trace of the same batch), or None."""
    if baseline_trace is None:
        return None
    violation = constraint_violation(baseline_trace, trace, fixed)
    return None if violation is None else f"gate (real model): constraints: {violation}"


def target_replay_difference(timed: np.ndarray, replay: np.ndarray, baseline_trace: dict | None,
                             trace: dict | None, tolerance: Tolerance | None, fixed) -> str | None:
    """A target task's :func:`replay_difference`: the replay's pixels are the timed call's, and its trace keeps
    the task's constraints against the baseline's replay of the same batch (when that replay ran)."""
    difference = replay_difference(timed, replay, None, None, tolerance)
    if difference is not None or baseline_trace is None:
        return difference
    violation = constraint_violation(baseline_trace, trace, fixed)
    return None if violation is None else f"constraints: {violation}"


def timed_difference(pixels: np.ndarray, reference: np.ndarray, tolerance: Tolerance) -> str | None:
    """Why a timed batch of a submission is not its task's computation: the first image outside ``tolerance`` of
    the GT's image of the same prompt and seed (same batch size), or None."""
    for image, (mine, theirs) in enumerate(zip(pixels, reference)):
        m, mean = pixel_difference(mine, theirs)
        if not tolerance.allows(m, mean):
            return (f"image {image + 1} differs from the GT's image of the same prompt and seed by up to {m}/255 "
                    f"(mean {mean:.3g}); allowed {tolerance.max_abs} (mean {tolerance.mean_abs:g})")
    return None


def replay_difference(timed: np.ndarray, replay: np.ndarray, reference_trace: dict | None, trace: dict | None,
                      tolerance: Tolerance | None) -> str | None:
    """Why a timed batch, replayed under the tracer in the same worker, is rejected: its pixels are not the ones
    the timed call returned (bit for bit; within ``tolerance`` where the device itself does not repeat, as the
    GT's own replay showed), or its trace is not the GT's trace of the same inputs. None when it passes."""
    for image, (first, again) in enumerate(zip(timed, replay)):
        m, mean = pixel_difference(first, again)
        if m and (tolerance is None or not tolerance.allows(m, mean)):
            return (f"image {image + 1} of the replay differs from what the timed call returned (max |diff| {m}/255, "
                    f"mean {mean:.3g}): the program computed something else when it was timed")
    if reference_trace is not None:
        difference = compare_traces(reference_trace, trace) if trace is not None else "no execution trace"
        if difference is not None:
            return f"spec: {difference}"
    return None


class Judge:
    """Builds a verdict's checks call by call (see the module docstring for what each check means)."""

    ORDER = ("contract", "load", "output", "finite", "spec", "constraints", "fidelity", "independent", "repeatable",
             "not-a-no-op")

    def __init__(self, gate: Gate, verdict: Verdict):
        self.gate, self.verdict = gate, verdict
        self.checks: dict[str, Check] = {}
        self.calls = gate.calls
        self.n = len(gate.calls)
        self.tol = gate.tolerance
        self.widened = False

    def _where(self, index: int) -> str:
        return f"call {index + 1} of {self.n} ({len(self.calls[index].prompts)} images)"

    def _set(self, check: Check) -> bool:
        """Record ``check`` unless the same check already failed (the first failure is the one reported)."""
        old = self.checks.get(check.name)
        if old is None or old.passed:
            self.checks[check.name] = check
        return check.passed

    def load_failed(self, failure) -> None:
        self._set(Check("load", False, f"load() within {self.gate.load_timeout:g} s", failure.status,
                        describe_failure(failure), traceback=getattr(failure, "traceback", "")))

    def loaded(self, seconds: float) -> None:
        self._set(Check("load", True, f"load() within {self.gate.load_timeout:g} s", f"{seconds:.1f} s",
                        f"loaded in {seconds:.1f} s"))

    def call_failed(self, index: int, failure) -> None:
        status, reason = failure.status, failure.reason
        if status == schema.STATUS_NONFINITE:
            self._set(Check("finite", False, "finite pixels", status, f"{self._where(index)}: {reason}"))
        else:
            self._set(Check("output", False, self._expected_output(), status,
                            f"{self._where(index)}: {status}: {reason}", traceback=getattr(failure, "traceback", "")))

    def _expected_output(self) -> str:
        size = self.gate.resolution
        return f"float [N, {size}, {size}, 3] from each of {self.n} calls"

    def after_call(self, index: int, results: dict[int, Result], references: dict) -> bool:
        """Judge what call ``index`` adds; False if a check failed."""
        gt, baseline = references.get(schema.GT) or {}, references.get(schema.BASELINE)
        if not self.widened and 0 in gt and 1 in gt:
            self._widen(gt)
        result = results[index]
        ok = True
        call = self.calls[index]
        if call.traced and self.gate.target is not None:
            ok &= self._set(self._constraints(index, result, baseline[call.reference].trace))
        elif call.traced:
            reference = gt[call.reference].trace
            difference = compare_traces(reference, result.trace)
            ok &= self._set(Check("spec", difference is None, "the GT's execution trace on every traced call",
                                  "same" if difference is None else "differs",
                                  f"{self._where(index)}: {difference}" if difference else
                                  f"same trace as the GT (digest {trace_digest(result.trace)})"))
            if index == 0:
                self.verdict.trace = result.trace
                self.verdict.trace_digest = trace_digest(result.trace)
                self.verdict.gt_trace_digest = trace_digest(reference)
        if call.compare_gt and self.gate.target is None:  # a target task's quality is the scorer's to judge
            ok &= self._set(self._fidelity(index, result.pixels, gt[index].pixels))
        if call.repeats is not None:
            first = results[call.repeats]
            m, mean = pixel_difference(first.pixels, result.pixels)
            ok &= self._set(Check("repeatable", m == 0, "repeated inputs give bit-identical pixels",
                                  {"max_abs": m, "mean_abs": round(mean, 4)},
                                  f"{self._where(index)} repeats call {call.repeats + 1}"
                                  + ("" if call.traced else " untraced")
                                  + (": bit-identical" if m == 0 else
                                     f": different pixels (max |diff| {m}/255, mean {mean:.3g})")))
        if index == 1:
            ok &= self._set(self._independent(results[0].pixels, result.pixels))
        if index == 0 and baseline is not None and self.gate.target is None:  # a target task's: its speed
            ok &= self._set(self._not_a_no_op(result, baseline[0]))
        return bool(ok)

    def _constraints(self, index: int, result: Result, baseline_trace: dict) -> Check:
        """A target task's constraints on one traced call, against the baseline's trace of the same inputs."""
        violation = constraint_violation(baseline_trace, result.trace, self.gate.target.fixed)
        if index == 0:
            self.verdict.trace = result.trace
            self.verdict.trace_digest = trace_digest(result.trace) if result.trace else None
        fixed = ", ".join(self.gate.target.fixed) or "nothing beyond model, weights, resolution and images"
        return Check("constraints", violation is None, f"the task's constraints (fixed: {fixed}) on every traced "
                                                       f"call, against the baseline's trace",
                     "kept" if violation is None else violation.split(":")[0],
                     f"{self._where(index)}: {violation}" if violation else "every constraint kept")

    def _widen(self, gt: dict) -> None:
        """The GT's own spread: its images of call 1's inputs at other positions of call 2's batch. Where that
        exceeds half the tolerance (numerics the calibration did not see: another device, dtype or model), the
        tolerance becomes twice the spread, and says so."""
        self.widened = True
        spreads = [pixel_difference(gt[0].pixels[a], gt[1].pixels[b]) for a, b in PERMUTED]
        m, mean = max(s[0] for s in spreads), max(s[1] for s in spreads)
        if 2 * m > self.tol.max_abs or 2 * mean > self.tol.mean_abs:
            self.tol = Tolerance(min(255, max(self.tol.max_abs, 2 * m)), max(self.tol.mean_abs, round(2 * mean, 4)),
                                 f"{self.tol.basis}; widened to twice the GT's own spread at another batch position "
                                 f"(max {m}, mean {mean:.3g})")

    def _fidelity(self, index: int, pixels: np.ndarray, reference: np.ndarray) -> Check:
        pairs = [(image, *pixel_difference(a, b)) for image, (a, b) in enumerate(zip(pixels, reference))]
        outside = [p for p in pairs if not self.tol.allows(p[1], p[2])]
        image, m, mean = outside[0] if outside else max(pairs, key=lambda p: (p[1], p[2]))
        reason = (f"{self._where(index)}, image {image + 1}: differs from the GT's by up to {m}/255 (mean "
                  f"{mean:.3g}); allowed {self.tol.max_abs} (mean {self.tol.mean_abs:g})" if outside else
                  f"within {m}/255 of the GT's images (mean {mean:.3g}); allowed {self.tol.max_abs} "
                  f"(mean {self.tol.mean_abs:g})")
        return Check("fidelity", not outside, str(self.tol), {"max_abs": m, "mean_abs": round(mean, 4)}, reason)

    def _independent(self, first: np.ndarray, second: np.ndarray) -> Check:
        pairs = [(a, b, *pixel_difference(first[a], second[b])) for a, b in PERMUTED]
        a, b, m, mean = max(pairs, key=lambda p: (not self.tol.allows(p[2], p[3]), p[2], p[3]))
        ok = self.tol.allows(m, mean)
        reason = (f"call 1's images match at other positions of a batch of {len(self.calls[1].prompts)} (max "
                  f"|diff| {m}/255)" if ok else
                  f"call 1's image {a + 1} changed by up to {m}/255 (mean {mean:.3g}) at position {b + 1} of a batch "
                  f"of {len(self.calls[1].prompts)} with the same prompt and seed: it depends on the rest of its batch")
        return Check("independent", ok, "image i depends only on (prompt i, generator i)",
                     {"max_abs": m, "mean_abs": round(mean, 4)}, reason)

    def _not_a_no_op(self, result: Result, baseline: Result) -> Check:
        m, mean = pixel_difference(result.pixels, baseline.pixels)
        same_trace = compare_traces(baseline.trace, result.trace) is None
        ok = m > 0 and not same_trace
        if m == 0 and same_trace:
            reason = "computes exactly what the baseline program computes: the acceleration had no effect"
        elif m == 0:
            reason = "its images are the baseline program's, bit for bit"
        elif same_trace:
            reason = "its trace is the baseline program's: the acceleration changed nothing it computed"
        else:
            reason = f"differs from the baseline program (max |diff| {m}/255, mean {mean:.3g}; trace differs)"
        return Check("not-a-no-op", ok, "images and trace differ from the baseline program's",
                     {"max_abs": m, "mean_abs": round(mean, 4), "trace": "same" if same_trace else "differs"}, reason)

    def finish(self, results: dict[int, Result]) -> None:
        complete = len(results) == self.n
        if "load" in self.checks and self.checks["load"].passed:
            if "output" not in self.checks:
                self._set(Check("output", True, self._expected_output(), "ok",
                                f"{len(results)} of {self.n} calls returned images of the requested size"))
            if "finite" not in self.checks and results:
                self._set(Check("finite", True, "finite pixels", "ok", "no NaN/inf"))
        repeatable = self.checks.get("repeatable")
        if complete and repeatable is not None and repeatable.passed:
            repeats = [f"call {i + 1} = call {c.repeats + 1}{'' if c.traced else ' (untraced)'}"
                       for i, c in enumerate(self.calls) if c.repeats is not None]
            repeatable.reason = f"{', '.join(repeats)}: bit-identical"
        if not complete:
            for check in self.checks.values():
                if check.passed and check.name in ("spec", "constraints", "fidelity", "repeatable", "output",
                                                                "finite"):
                    check.reason += f" (judged on {len(results)} of {self.n} calls: stopped at a failure)"
        self.verdict.checks.extend(self.checks[name] for name in self.ORDER if name in self.checks)


def pixel_difference(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return int(d.max()), float(d.mean())
