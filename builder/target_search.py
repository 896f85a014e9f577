"""``accelbench targets search``: a bounded search over the catalogue's methods and their searched parameter values
(``search:`` in methods.yaml) for one setting, run through ``generate`` (every candidate a recipe task's GT program,
timed in rounds beside the baseline) and scored for fidelity to the baseline's images. Its results file holds every
candidate, the Pareto front of speedup against fidelity, and the targets derived from the front with the reference
program of each: what a target task's ``reference.evidence`` cites, so every target is proven feasible.

1. candidates: per method that applies to the model, every combination of its searched values (the others at
   their defaults) that its bounds allow at this step count;
2. ``generate`` them with the baseline (no gate: these are catalogue programs);
3. PSNR/SSIM of every image to the baseline's (``scorer.fidelity``) and the summaries (``scorer.aggregate``);
4. the front (no candidate both faster and closer to the baseline) and, per tier, a speedup target (a fraction
   of the front's largest speedup) and a latency target on the run's GPU class, each with the closest candidate
   whose whole interval meets it as its reference.

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
# A tier's speedup target: this fraction of the front's largest speedup, rounded down to TARGET_STEP.
TIER_FRACTIONS = {"easy": 0.5, "medium": 0.75, "hard": 0.9}
TARGET_STEP = 0.05
LATENCY_STEP_MS = 5.0  # latency targets are rounded up to this
MIN_SPEEDUP_TARGET = 1.1  # below this a target asks for nothing a timing's noise would not give


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


def derive_targets(points: list[dict], front: list[dict], device_name: str) -> list[dict]:
    """Per tier: a speedup target (level 4) and a latency target on the run's GPU class (level 5), each with its
    reference: of the candidates whose whole speedup interval meets the speedup target, the closest to the
    baseline. A tier whose target would be below :data:`MIN_SPEEDUP_TARGET`, or that no candidate meets, is
    left out."""
    top = max((point["speedup"] for point in front), default=None)
    if top is None:
        return []
    gpu, derived = gpu_class(device_name or ""), []
    for tier in TIERS:
        goal = math.floor(TIER_FRACTIONS[tier] * top / TARGET_STEP) * TARGET_STEP
        meeting = [point for point in points if point["speedup_ci_low"] is not None and point["speedup_ci_low"] >= goal]
        if goal < MIN_SPEEDUP_TARGET or not meeting:
            continue
        reference = max(meeting, key=lambda point: (point["psnr"], point["speedup"]))
        entry = {"tier": tier, "speedup": round(goal, 2), "reference": reference["name"],
                 "method": reference["method"], "params": reference["params"], "latency_ms": None}
        if gpu is not None and reference["latency_ms_ci_high"] is not None:
            entry["latency_ms"] = {gpu: math.ceil(reference["latency_ms_ci_high"] / LATENCY_STEP_MS) * LATENCY_STEP_MS}
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
            "targets": derive_targets(points, front, device_name), "tier_fractions": TIER_FRACTIONS,
            "gpu_classes": list(GPU_CLASSES)}


def write_results(results: dict, path: Path) -> None:
    from accelbench import dataset

    dataset.write_json_atomic(Path(path), json.loads(json.dumps(results, default=str)))


def target_tasks(catalog: Catalog, results: dict, evidence: str, fixed: tuple[str, ...],
                 budget: tuple[float, float]) -> list[dict]:
    """The target tasks (manifest entries, texts rendered) that a search's results prove feasible: per derived
    tier a level-4 task and, where the run's GPU class has a latency target, a level-5 one, each citing
    ``evidence`` (the results file) for its reference."""
    from accelbench.manifest import FIXABLE, QualityBudget, Target, render_target_text

    unknown = [name for name in fixed if name not in FIXABLE]
    if unknown:
        raise ManifestError("--fixed", "", f"unknown fixable field {unknown[0]!r}; known: {', '.join(FIXABLE)}")
    model, scheduler = catalog.models[results["model"]], catalog.schedulers[results["scheduler"]]
    tasks = []
    for derived in results["targets"]:
        goals = [("speedup", {"speedup": derived["speedup"]})]
        if derived.get("latency_ms"):
            goals.append(("latency", {"latency_ms": derived["latency_ms"]}))
        for kind, goal in goals:
            target = Target(tier=derived["tier"], budget=QualityBudget(*budget),
                            fixed=tuple(name for name in FIXABLE if name in fixed), speedup=goal.get("speedup"),
                            latency_ms=goal.get("latency_ms") or {}, evidence=evidence)
            tasks.append({"id": f"{results['setting']}-{kind}-{derived['tier']}", "model": results["model"],
                          "scheduler": results["scheduler"], "steps": results["steps"],
                          "target": {**goal, "tier": derived["tier"]},
                          "budget": {"psnr_db": budget[0], "clip_pct": budget[1]}, "fixed": list(target.fixed),
                          "reference": {"method": derived["method"], "params": dict(derived["params"]),
                                        "evidence": evidence},
                          "text": render_target_text(model, scheduler, results["steps"], target)})
    return tasks
