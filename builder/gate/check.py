"""Running the gate: :class:`Gate` draws a task's inputs, runs the GT and baseline programs (cached) and each
candidate in worker processes of their own, and hands every call's result to the :class:`~.judge.Judge`."""

from __future__ import annotations

import concurrent.futures
import hashlib
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

from accelbench import schema
from accelbench.builder import programs
from accelbench.builder.gate.inputs import REFERENCE_CALLS, draw_inputs, gate_prompts
from accelbench.builder.gate.judge import Judge, describe_failure
from accelbench.builder.gate.references import REFERENCES, References, Result
from accelbench.builder.gate.scan import contract_problem, scan_program
from accelbench.builder.gate.tolerance import tolerance, widest_tolerance
from accelbench.builder.gate.verdict import Check, Verdict
from accelbench.builder.isolation import forkserver_context
from accelbench.builder.worker import DEFAULT_CALL_TIMEOUT_S, DEFAULT_LOAD_TIMEOUT_S, ProgramWorker, WorkerFailure
from accelbench.errors import RunError
from accelbench.manifest import BASELINE_METHOD, Catalog, Task


class GateError(RunError):
    """The gate itself cannot judge: the GT or baseline program failed on this model and device (a wrong
    ``--model``, a broken environment). Not a verdict on the candidate; the CLI reports it as one line, exit 1."""


class Gate:
    """The gate for one task: draws its inputs once, runs (and caches) the GT and baseline programs' results on
    them, and judges any number of candidate programs with :meth:`check`.

    ``variant="baseline"`` judges a baseline program of the task's setting: the reference is the baseline
    program and there is no not-a-no-op check. ``prompts``: the run's prompts, drawn from where they hold three
    different ones (:func:`gate_prompts`)."""

    def __init__(self, catalog: Catalog, task: Task, *, variant: str = schema.GT, model_path: str | Path | None = None,
                 device: str = "cpu", dtype: str | None = None, resolution: int | None = None, seed: int | None = None,
                 threads: int | None = None, load_timeout: float = DEFAULT_LOAD_TIMEOUT_S,
                 call_timeout: float = DEFAULT_CALL_TIMEOUT_S,
                 references: References | None = None, prompts: Sequence[str] | None = None):
        from accelbench.builder import synthetic

        if variant not in (schema.GT, schema.BASELINE):
            raise ValueError(f"variant must be {schema.GT!r} or {schema.BASELINE!r}, not {variant!r}")
        self.catalog, self.task, self.variant = catalog, task, variant
        if model_path is None:
            model_path = synthetic.materialize(catalog.models[task.model], "tiny")
            resolution = resolution or synthetic.tiny_resolution(catalog.models[task.model])
        self.model_path = str(model_path)
        self.resolution = resolution or catalog.models[task.model].resolution
        self.device = device
        self.dtype = dtype or ("float32" if device == "cpu" else catalog.models[task.model].dtype)
        # One torch thread per worker on the CPU: the reference programs run alongside the candidate, and every
        # worker computes the same way (the not-a-no-op check compares pixels bit for bit).
        self.threads = threads if threads is not None else (1 if device == "cpu" else None)
        self.seed = secrets.randbits(32) if seed is None else int(seed)
        self.calls = draw_inputs(self.seed, gate_prompts(prompts))
        self.load_timeout, self.call_timeout = load_timeout, call_timeout
        self.references = references or REFERENCES
        self.baseline_source = programs.render(catalog, task, baseline=True).source
        self.gt_source = self.baseline_source if variant == schema.BASELINE else programs.render(catalog, task).source
        self.accelerated = variant == schema.GT and task.method != BASELINE_METHOD
        # A target task's candidates are judged by its constraints against the baseline, not against its
        # reference program (the "GT" here): any method that keeps them may be chosen.
        self.target = task.target if variant == schema.GT else None
        self.tolerance = (widest_tolerance(catalog.methods.values(), device, self.dtype) if self.target is not None
                          else tolerance(task, catalog.methods[task.method], device, self.dtype, variant))
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="gate-reference")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    @property
    def inputs(self) -> dict:
        return {"seed": self.seed, "calls": [{"prompts": list(c.prompts), "seeds": list(c.seeds),
                                              "traced": c.traced} for c in self.calls]}

    # -- workers -------------------------------------------------------------------------------------------

    def _worker(self, source: str, log_path: Path | None = None):
        return ProgramWorker(source, model_path=self.model_path, device=self.device, dtype=self.dtype,
                             log_path=log_path, load_timeout=self.load_timeout, threads=self.threads,
                             max_images=max(len(c.prompts) for c in self.calls), max_resolution=self.resolution)

    def _key(self, source: str) -> tuple:
        return (hashlib.sha256(source.encode()).hexdigest(), self.model_path, self.device, self.dtype, self.threads,
                self.resolution, self.seed, tuple(call.prompts for call in self.calls))

    def _reference(self, source: str, name: str, indices) -> dict[int, Result]:
        """A trusted program's (traced) results for calls ``indices``: from the cache, or computed now."""
        key = self._key(source)
        with self.references.lock(key):
            cached = self.references.get(key)
            missing = [i for i in indices if i not in cached]
            if missing:
                with self._worker(source) as process:
                    for index in missing:
                        call = self.calls[index]
                        try:
                            reply = process.generate(list(call.prompts), list(call.seeds), self.resolution,
                                                     self.resolution, timeout=self.call_timeout, trace=True)
                        except WorkerFailure as failure:
                            raise GateError(f"the {name} program failed on call {index + 1}: "
                                            f"{describe_failure(failure)}") from None
                        cached[index] = Result(reply.pixels, reply.trace, latency_s=reply.latency_s)
            return {i: cached[i] for i in indices}

    def _remember(self, source: str, results: dict[int, Result]) -> None:
        """The candidate *is* a trusted program: its results are the reference's (same source, same inputs)."""
        key = self._key(source)
        with self.references.lock(key):
            cached = self.references.get(key)
            for index in REFERENCE_CALLS:
                result = results.get(index)
                if result is not None and index not in cached:
                    cached[index] = result

    def _submit_references(self, skip: str | None = None) -> dict:
        forkserver_context()  # start the forkserver from this thread, before the pool's threads start workers
        futures = {}
        if self.gt_source != skip:
            futures[schema.GT] = self._pool.submit(self._reference, self.gt_source, self.variant, REFERENCE_CALLS)
        if self.accelerated and self.baseline_source != skip:  # a target task's: every traced reference call
            calls = REFERENCE_CALLS if self.target is not None else (0,)
            futures[schema.BASELINE] = self._pool.submit(self._reference, self.baseline_source, schema.BASELINE, calls)
        return futures

    def prepare(self) -> None:
        """Compute the reference results now (else the first :meth:`check` does, alongside the candidate)."""
        for future in self._submit_references().values():
            future.result()

    # -- judging -------------------------------------------------------------------------------------------

    def check(self, source: str, *, log_path: Path | None = None, stop_early: bool = False) -> Verdict:
        """Run the candidate program ``source`` and return its verdict.

        ``stop_early``: stop calling the program once a check has failed (the verdict then holds the checks
        that could be judged; a rejection is as certain, and cheaper)."""
        started = time.perf_counter()
        verdict = Verdict(task_id=self.task.id, variant=self.variant,
                          program_sha256=hashlib.sha256(source.encode()).hexdigest(), model_path=self.model_path,
                          device=self.device, dtype=self.dtype, inputs=self.inputs)
        findings = scan_program(source)
        plausible = Check("plausible", not findings, "no suspicious constructs", findings or "none",
                          "; ".join(findings[:3]) + (f" (+{len(findings) - 3} more)" if len(findings) > 3 else "")
                          if findings else "nothing suspicious found by the static scan", advisory=True)
        problem = contract_problem(source)
        verdict.checks.append(Check("contract", problem is None, "load() and generate() defined",
                                    "defined" if problem is None else "missing",
                                    problem or "load() and generate() defined"))
        if problem is not None:
            verdict.checks.append(plausible)
            return verdict

        trusted = source in (self.gt_source, self.baseline_source)
        futures = self._submit_references(skip=source if trusted else None)
        judge = Judge(self, verdict)
        results: dict[int, Result] = {}
        process = self._worker(source, log_path)
        try:
            load_started = time.perf_counter()
            try:
                process.start()
            except WorkerFailure as failure:
                judge.load_failed(failure)
            else:
                judge.loaded(time.perf_counter() - load_started)
                for index, call in enumerate(self.calls):
                    try:
                        reply = process.generate(list(call.prompts), list(call.seeds), self.resolution,
                                                 self.resolution, timeout=self.call_timeout, trace=call.traced)
                    except WorkerFailure as failure:
                        judge.call_failed(index, failure)
                        break
                    results[index] = Result(reply.pixels, reply.trace, latency_s=reply.latency_s)
                    if trusted and index == max(REFERENCE_CALLS):
                        self._remember(source, results)
                    references = {name: future.result() for name, future in futures.items()}
                    if trusted:
                        own = {i: results[i] for i in REFERENCE_CALLS if i in results}
                        name = schema.GT if source == self.gt_source else schema.BASELINE
                        if name == schema.GT or self.accelerated:  # a pipeline task has no baseline to differ from
                            references.setdefault(name, own)
                    if not judge.after_call(index, results, references) and stop_early:
                        break
        finally:
            process.close()
            for future in futures.values():  # a reference failure is the gate's problem: raise it
                future.result()
        judge.finish(results)
        verdict.checks.append(plausible)
        verdict.seconds = {"total": round(time.perf_counter() - started, 2),
                           "candidate_calls": [round(r.latency_s, 3) for _, r in sorted(results.items())]}
        return verdict



def check_program(source: str, task: Task, catalog: Catalog, model_path: str | Path | None = None, *,
                  variant: str = schema.GT, device: str = "cpu", dtype: str | None = None,
                  resolution: int | None = None, seed: int | None = None, log_path: Path | None = None) -> Verdict:
    """Judge one program with a fresh :class:`Gate` (the GT's results are cached for the process)."""
    with Gate(catalog, task, variant=variant, model_path=model_path, device=device, dtype=dtype,
              resolution=resolution, seed=seed) as gate:
        return gate.check(source, log_path=log_path)

