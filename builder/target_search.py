"""``accelbench targets search``: a bounded search over the catalogue's methods and their searched parameter values
(``search:`` in methods.yaml) for one setting, run through ``generate`` (every candidate a recipe task's GT program,
timed in rounds beside the baseline) and scored for fidelity to the baseline's images. Its results file holds every
candidate, the Pareto front of speedup against fidelity, and the targets derived from the candidates with the
reference program of each: what a target task's ``reference.evidence`` cites, so every target is proven feasible.

1. candidates: per method that applies to the model, every combination of its searched values (the others at
   their defaults) that its bounds allow at this step count;
2. ``generate`` them with the baseline (no gate: these are catalogue programs);
3. PSNR/SSIM of every image to the baseline's (``scorer.fidelity``) and the summaries (``scorer.aggregate``);
4. the front (no candidate both faster and closer to the baseline) and, per tier, a speedup target (a fraction
   of the largest one a candidate's interval meets with :data:`FEASIBILITY_MARGIN`) and a latency target on the
   run's GPU class, each with the closest candidate that meets it with the margin as its reference.

``targets tasks`` derives the targets again from the candidates, by today's rule (the results file's ``targets``
are those of the rule at search time).

CLIP scores are left out: searches run on random weights, where CLIP measures nothing; target tasks' quality
budgets are relative to the reference, measured on each run.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path

from accelbench import schema
from accelbench.manifest import (
    BASELINE_METHOD,
    GPU_CLASSES,
    TIERS,
    Catalog,
    ManifestError,
    PromptSource,
    Suite,
    Task,
    gpu_class,
    render_task_text,
    setting_id,
    task_level,
    task_tags,
)
from accelbench.manifest.checks import Checker, check_param_value

RESULTS_VERSION = 1
SEARCH_SUITE = "target-search"
# A run judging many programs reads speedups 10-15 % below a search's (bench/README.md, "Target tasks"): a
# reference must meet its target with this margin, on its interval's low end, and a latency target leaves as much
# above the reference's interval's high end.
FEASIBILITY_MARGIN = 0.15
# A tier's speedup target: this fraction of the reach (the largest target a candidate meets with the margin),
# rounded down to TARGET_STEP; hard asks for the reach itself.
TIER_FRACTIONS = {"easy": 0.6, "medium": 0.8, "hard": 1.0}
TARGET_STEP = 0.05
LATENCY_STEP_MS = 5.0  # latency targets are rounded up to this
MIN_SPEEDUP_TARGET = 1.1  # below this a target asks for nothing a timing's noise would not give
DEFAULT_FIXED = ("sampler", "steps", "dtype")  # what `targets tasks` fixes unless told otherwise
MAX_CANDIDATES = 50  # the search's budget (DiffBench's feasibility search ran 50 rounds)


def candidates(catalog: Catalog, model_id: str, steps: int, methods: tuple[str, ...] | None = None,
               max_candidates: int = MAX_CANDIDATES) -> list[tuple[str, dict]]:
    """(method id, every parameter) of each configuration the search tries for ``model_id`` at ``steps`` (of
    ``methods`` only, when given), the first ``max_candidates`` in catalogue order."""
    model, found = catalog.models[model_id], []
    check = Checker("methods.yaml")
    for method in catalog.methods.values():
        if method.id == BASELINE_METHOD or method.id not in model.methods or (methods and method.id not in methods):
            continue
        searched = [(name, spec.search) for name, spec in method.params.items() if spec.search]
        for values in itertools.product(*(options for _, options in searched)):
            params = {name: spec.default for name, spec in method.params.items()} | dict(zip(
                (name for name, _ in searched), values))
            try:
                for name, spec in method.params.items():
                    check_param_value(check, name, spec, params[name], {"steps": steps, **params})
            except ManifestError:
                continue  # e.g. a gate step beyond this step count, or a warm-up beyond the gate step
            if (method.id, params) not in found:
                found.append((method.id, params))
    return found[:max_candidates]


def search_catalog(catalog: Catalog, model_id: str, scheduler_id: str, steps: int, prompts: tuple[str, ...],
                   seeds: tuple[int, ...], batch_size: int, weights: str, methods: tuple[str, ...] | None = None,
                   max_candidates: int = MAX_CANDIDATES) -> Catalog:
    """``catalog`` plus one recipe task per candidate and the suite that runs them."""
    model, scheduler = catalog.models[model_id], catalog.schedulers[scheduler_id]
    setting = setting_id(model_id, scheduler_id, steps)
    tasks = {}
    for index, (method_id, params) in enumerate(candidates(catalog, model_id, steps, methods, max_candidates)):
        method = catalog.methods[method_id]
        task_id = f"search-{setting}-{index:02d}-{method_id}"
        tasks[task_id] = Task(id=task_id, model=model_id, scheduler=scheduler_id, steps=steps, method=method_id,
                              params=params, text=render_task_text(model, scheduler, steps, method, params),
                              level=task_level(method), tags=task_tags(method, params), source="targets search")
    standard = catalog.suites.get("standard")
    suite = Suite(id=SEARCH_SUITE, description=f"target search over {len(tasks)} configurations of {setting}",
                  tasks=tuple(tasks), prompts=PromptSource(inline=prompts), seeds=seeds, batch_sizes=(batch_size,),
                  warmup_batches=1, weights=weights, dtype="auto",
                  clip_model=standard.clip_model if standard else "ViT-B-32",
                  clip_pretrained=standard.clip_pretrained if standard else "laion2b_s34b_b79k")
    return dataclasses.replace(catalog, tasks={**catalog.tasks, **tasks},
                               suites={**catalog.suites, SEARCH_SUITE: suite})


def pareto_front(points: list[dict]) -> list[dict]:
    """The points no other point beats on both ``speedup`` and ``psnr`` (higher is better on each), by speedup.

    Example:
        >>> [p["name"] for p in pareto_front([{"name": "a", "speedup": 2.0, "psnr": 20.0},
        ...                                   {"name": "b", "speedup": 1.5, "psnr": 30.0},
        ...                                   {"name": "c", "speedup": 1.4, "psnr": 25.0}])]
        ['b', 'a']
    """
    timed = [point for point in points if point["speedup"] is not None and point["psnr"] is not None]
    front = [point for point in timed if not any(
        other["speedup"] >= point["speedup"] and other["psnr"] >= point["psnr"]
        and (other["speedup"], other["psnr"]) != (point["speedup"], point["psnr"]) for other in timed)]
    return sorted(front, key=lambda point: point["speedup"])


def derive_targets(points: list[dict], device_name: str, baseline_latency_ms: float | None) -> list[dict]:
    """Per tier: a speedup target (level 4) and a latency target on the run's GPU class (level 5), each with its
    reference: of the candidates whose speedup interval's low end meets the target with
    :data:`FEASIBILITY_MARGIN`, the closest to the baseline. The latency target is the baseline's latency over
    the speedup target, but never below the reference's interval's high end plus the margin (so two tiers with
    one reference still differ). A tier whose target would be below :data:`MIN_SPEEDUP_TARGET` is left out.

    Example:
        >>> point = {"name": "a", "method": "deepcache", "params": {}, "psnr": 30.0, "speedup": 2.6,
        ...          "latency_ms_ci_high": 300.0}
        >>> [(t["tier"], t["speedup"], t["latency_ms"]) for t in derive_targets(
        ...     [{**point, "speedup_ci_low": 2.3}], "NVIDIA H200", baseline_latency_ms=1000.0)]
        [('easy', 1.2, {'h200': 835.0}), ('medium', 1.6, {'h200': 625.0}), ('hard', 2.0, {'h200': 500.0})]
    """
    reach = max((point["speedup_ci_low"] for point in points if point["speedup_ci_low"] is not None), default=None)
    if reach is None:
        return []
    gpu, derived = gpu_class(device_name or ""), []
    for tier in TIERS:
        # round() first: 0.6 * 2.0 / 0.05 is 23.999..., one float step below the 24 it means.
        goal = math.floor(round(TIER_FRACTIONS[tier] * reach / (1 + FEASIBILITY_MARGIN) / TARGET_STEP, 6)) * TARGET_STEP
        if goal < MIN_SPEEDUP_TARGET:
            continue
        meeting = [point for point in points if point["speedup_ci_low"] is not None
                   and point["speedup_ci_low"] >= goal * (1 + FEASIBILITY_MARGIN) - 1e-9]  # the reach's own point
        reference = max(meeting, key=lambda point: (point["psnr"], point["speedup"]))
        entry = {"tier": tier, "speedup": round(goal, 2), "reference": reference["name"],
                 "method": reference["method"], "params": reference["params"], "latency_ms": None}
        if gpu is not None and reference["latency_ms_ci_high"] is not None:
            feasible = reference["latency_ms_ci_high"] * (1 + FEASIBILITY_MARGIN)
            tier_latency = baseline_latency_ms / goal if baseline_latency_ms else 0.0
            entry["latency_ms"] = {gpu: math.ceil(round(max(feasible, tier_latency) / LATENCY_STEP_MS, 6))
                                   * LATENCY_STEP_MS}
        derived.append(entry)
    return derived


def run_search(catalog: Catalog, model_id: str, scheduler_id: str, steps: int, out: Path, *, weights: str,
               device: str | None, prompts: tuple[str, ...], seeds: tuple[int, ...], batch_size: int,
               methods: tuple[str, ...] | None = None, max_candidates: int = MAX_CANDIDATES,
               seed_key: str | None = None, progress: bool = True) -> dict:
    """Run the search into the dataset folder ``out`` and return its results (see the module docstring)."""
    from accelbench import dataset
    from accelbench.builder.generate import run_generate
    from accelbench.builder.options import GATE_NONE, GenerateOptions
    from accelbench.scorer import aggregate, fidelity

    searched = search_catalog(catalog, model_id, scheduler_id, steps, prompts, seeds, batch_size, weights, methods,
                              max_candidates)
    summary = run_generate(GenerateOptions(suite=SEARCH_SUITE, out=Path(out), device=device, gate=GATE_NONE,
                                           seed_key=seed_key, progress=progress), searched)
    fidelity.score_fidelity(out, num_workers=0, progress=progress)
    rows = aggregate.load_generations(out)
    pooled, _ = aggregate.summarize(rows, fidelity=aggregate.load_fidelity(out))
    by_task = {row["task_id"]: row for row in pooled if row["variant"] == schema.GT}
    baseline = next(row for row in pooled if row["variant"] == schema.BASELINE)
    points = []
    for task_id, task in searched.tasks.items():
        if task.source != "targets search" or task_id not in by_task:
            continue
        row = by_task[task_id]
        points.append({"name": task_id, "method": task.method, "params": dict(task.params),
                       **{key: row[key] for key in ("speedup", "speedup_ci_low", "speedup_ci_high", "speedup_n",
                                                    "latency_ms", "latency_ms_ci_low", "latency_ms_ci_high", "psnr",
                                                    "ssim", "failed")}})
    device_name = baseline["device_name"]
    front = pareto_front(points)
    return {"version": RESULTS_VERSION, "setting": setting_id(model_id, scheduler_id, steps), "model": model_id,
            "scheduler": scheduler_id, "steps": steps, "weights": weights, "device_name": device_name,
            "gpu_class": gpu_class(device_name or ""), "prompts": len(prompts), "seeds": list(seeds),
            "batch_size": batch_size, "seed_key": dataset.read_manifest(out).get("seed_key"),
            "baseline_latency_ms": baseline["latency_ms"], "seconds": round(summary.seconds, 1),
            "candidates": points, "front": [point["name"] for point in front],
            "targets": derive_targets(points, device_name, baseline["latency_ms"]), "tier_fractions": TIER_FRACTIONS,
            "feasibility_margin": FEASIBILITY_MARGIN,
            "gpu_classes": list(GPU_CLASSES)}


def write_results(results: dict, path: Path) -> None:
    from accelbench import dataset

    dataset.write_json_atomic(Path(path), json.loads(json.dumps(results, default=str)))


def fixed_suffix(fixed: tuple[str, ...]) -> str:
    """The id suffix of a target task fixing ``fixed``: none for :data:`DEFAULT_FIXED`, else what it fixes."""
    if tuple(fixed) == DEFAULT_FIXED:
        return ""
    return "-fixed-" + ("-".join(fixed) or "none")


def target_tasks(catalog: Catalog, results: dict, evidence: str, fixed_sets: tuple[tuple[str, ...], ...],
                 budget: tuple[float, float]) -> list[dict]:
    """The target tasks (manifest entries, texts rendered) that a search's results prove feasible: per derived
    tier and per set of fixed fields a level-4 task and, where the run's GPU class has a latency target, a
    level-5 one, each citing ``evidence`` (the results file) for its reference."""
    from accelbench.manifest import FIXABLE, QualityBudget, Target, render_target_text

    for fixed in fixed_sets:
        unknown = [name for name in fixed if name not in FIXABLE]
        if unknown:
            raise ManifestError("--fixed", "", f"unknown fixable field {unknown[0]!r}; known: {', '.join(FIXABLE)}")
    model, scheduler = catalog.models[results["model"]], catalog.schedulers[results["scheduler"]]
    tasks = []
    for derived in derive_targets(results["candidates"], results["device_name"], results["baseline_latency_ms"]):
        goals = [("speedup", {"speedup": derived["speedup"]})]
        if derived.get("latency_ms"):
            goals.append(("latency", {"latency_ms": derived["latency_ms"]}))
        for fixed_set in fixed_sets:
            fixed = tuple(name for name in FIXABLE if name in fixed_set)
            for kind, goal in goals:
                target = Target(tier=derived["tier"], budget=QualityBudget(*budget), fixed=fixed,
                                speedup=goal.get("speedup"), latency_ms=goal.get("latency_ms") or {},
                                evidence=evidence)
                tasks.append({"id": f"{results['setting']}-{kind}-{derived['tier']}{fixed_suffix(fixed)}",
                              "model": results["model"], "scheduler": results["scheduler"],
                              "steps": results["steps"], "target": {**goal, "tier": derived["tier"]},
                              "budget": {"psnr_db": budget[0], "clip_pct": budget[1]}, "fixed": list(fixed),
                              "reference": {"method": derived["method"], "params": dict(derived["params"]),
                                            "evidence": evidence},
                              "text": render_target_text(model, scheduler, results["steps"], target)})
    return tasks
