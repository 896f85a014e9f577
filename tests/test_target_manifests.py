"""Target tasks (levels 4 and 5) in the manifests: their fields, their text, the reference program that proves
each target feasible, and one-line errors for a malformed or an infeasible one."""

import json

import pytest
import yaml
from click.testing import CliRunner

from accelbench.cli import main
from accelbench.manifest import load_catalog
from accelbench.manifest.model import FIXABLE, LATENCY_LEVEL, SPEEDUP_LEVEL, gpu_class

EVIDENCE = "bench/results/targets/sd15-ddim-25.json"
SPEEDUP_TEXT = ("Make the SD1.5 pipeline with the DDIM sampler and 25 steps at least 2× faster than its baseline with "
                "any training-free method, within the quality budget (PSNR to the baseline's images no lower than "
                "the reference's minus 1 dB, CLIP score loss no higher than the reference's plus 1 %); fixed: the "
                "sampler, the step count, guidance.")
LATENCY_TEXT = ("Make the SDXL pipeline with the Euler sampler and 30 steps take at most 900 ms per image on H200, "
                "1200 ms per image on H100 with any training-free method, within the quality budget (PSNR to the "
                "baseline's images no lower than the reference's minus 1.5 dB, CLIP score loss no higher than the "
                "reference's plus 0.5 %); fixed: nothing more.")


def speedup_task(**changes) -> dict:
    task = {"id": "sd15-ddim-25-speedup-2x", "model": "sd15", "scheduler": "ddim", "steps": 25,
            "target": {"speedup": 2.0, "tier": "medium"}, "fixed": ["guidance", "sampler", "steps"],
            "reference": {"method": "deepcache", "params": {"cache_interval": 3}, "evidence": EVIDENCE},
            "text": SPEEDUP_TEXT}
    task.update(changes)
    return {key: value for key, value in task.items() if value is not None}


def latency_task() -> dict:
    return {"id": "sdxl-euler-30-latency", "model": "sdxl", "scheduler": "euler", "steps": 30,
            "target": {"latency_ms": {"h200": 900, "h100": 1200}, "tier": "hard"},
            "budget": {"psnr_db": 1.5, "clip_pct": 0.5},
            "reference": {"method": "deepcache_tgate", "evidence": "bench/results/targets/sdxl-euler-30.json"},
            "text": LATENCY_TEXT}


def write_tasks(root, *tasks, defaults=None):
    path = root / "tasks" / "test-targets.yaml"  # beside the packaged targets.yaml
    data = {"defaults": defaults if defaults is not None else {"budget": {"psnr_db": 1.0, "clip_pct": 1.0}},
            "tasks": list(tasks)}
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


@pytest.fixture
def root(manifest_root):
    return manifest_root


def test_a_speedup_and_a_latency_task_load_with_their_levels_fields_and_reference(root):
    write_tasks(root, speedup_task(), latency_task())
    catalog = load_catalog(root)
    speedup, latency = catalog.tasks["sd15-ddim-25-speedup-2x"], catalog.tasks["sdxl-euler-30-latency"]
    assert (speedup.level, latency.level) == (SPEEDUP_LEVEL, LATENCY_LEVEL)
    assert speedup.target.speedup == 2.0 and speedup.target.latency_ms == {}
    assert latency.target.speedup is None and latency.target.latency_ms == {"h200": 900.0, "h100": 1200.0}
    # The reference program is the task's method and parameters, defaults filled in, as for a GT.
    assert (speedup.method, speedup.params) == ("deepcache", {"cache_interval": 3, "cache_branch_id": 0})
    defaults = {name: spec.default for name, spec in catalog.methods["deepcache_tgate"].params.items()}
    assert latency.method == "deepcache_tgate" and latency.params == defaults
    # fixed comes out in FIXABLE's order whatever order the manifest lists it in; the rest is free.
    assert speedup.target.fixed == ("sampler", "steps", "guidance") and speedup.target.free == ("dtype",)
    assert latency.target.fixed == () and latency.target.free == tuple(FIXABLE)
    assert (speedup.target.budget.psnr_db, latency.target.budget.clip_pct) == (1.0, 0.5)  # defaults, own budget
    assert speedup.target.evidence == EVIDENCE and speedup.target.tier == "medium"
    assert speedup.text == SPEEDUP_TEXT and latency.text == LATENCY_TEXT
    assert "deepcache" not in speedup.text.lower()  # the text names no method: choosing one is the agent's job
    assert speedup.setting_id == catalog.tasks["sd15-ddim-25-deepcache"].setting_id  # the same baseline


def test_tasks_lists_target_tasks_by_level_with_their_target_in_json(root):
    write_tasks(root, speedup_task(), latency_task())
    runner = CliRunner()
    listed = runner.invoke(main, ["--manifests", str(root), "tasks", "--level", "4", "--level", "5"])
    assert listed.exit_code == 0, listed.output
    levels = {line.split()[0]: line.split()[4] for line in listed.stdout.splitlines()}
    packaged = {task.id for task in load_catalog().tasks.values() if task.target is not None}
    assert set(levels) == packaged | {"sd15-ddim-25-speedup-2x", "sdxl-euler-30-latency"}
    assert (levels["sd15-ddim-25-speedup-2x"], levels["sdxl-euler-30-latency"]) == ("L4", "L5")
    as_json = runner.invoke(main, ["--manifests", str(root), "tasks", "--level", "5", "--json"])
    [entry] = [json.loads(line) for line in as_json.stdout.splitlines()
               if json.loads(line)["id"] == "sdxl-euler-30-latency"]
    assert entry["target"] == {"tier": "hard", "speedup": None, "latency_ms": {"h200": 900.0, "h100": 1200.0},
                               "budget": {"psnr_db": 1.5, "clip_pct": 0.5}, "fixed": [], "free": list(FIXABLE),
                               "evidence": "bench/results/targets/sdxl-euler-30.json"}
    recipes = runner.invoke(main, ["--manifests", str(root), "tasks", "--json"]).stdout.splitlines()
    assert sum(json.loads(line)["target"] is None for line in recipes) == len(load_catalog().tasks) - len(packaged)


def test_gpu_classes_are_found_in_torch_device_names():
    assert gpu_class("NVIDIA H200") == "h200" and gpu_class("NVIDIA H100 80GB HBM3") == "h100"
    assert gpu_class("NVIDIA A100-SXM4-80GB") == "a100" and gpu_class("NVIDIA GeForce RTX 4090") == "rtx4090"
    assert gpu_class("cpu") is None and gpu_class("NVIDIA T4") is None


MALFORMED = {
    "no reference: the target is not known to be feasible": (
        speedup_task(reference=None), ".reference: missing required key (not in the task nor in defaults); a "
                                      "target task needs a reference program that meets its target"),
    "a reference without its evidence": (
        speedup_task(reference={"method": "deepcache"}), ".reference.evidence: missing required key"),
    "the baseline as the reference": (
        speedup_task(reference={"method": "none", "evidence": EVIDENCE}),
        ".reference.method: the reference must accelerate"),
    "a reference method that does not apply": (
        speedup_task(reference={"method": "tgat", "evidence": EVIDENCE}),
        ".reference.method: unknown method 'tgat' (did you mean 'tgate'?)"),
    "a reference parameter out of bounds": (
        speedup_task(reference={"method": "deepcache", "params": {"cache_interval": 0}, "evidence": EVIDENCE}),
        ".reference.params.cache_interval: must be >= 1, got 0"),
    "both a speedup and a latency": (
        speedup_task(target={"speedup": 2.0, "latency_ms": {"h200": 500}, "tier": "easy"}),
        ".target: give exactly one of speedup"),
    "neither a speedup nor a latency": (speedup_task(target={"tier": "easy"}), ".target: give exactly one of"),
    "a speedup of at most 1": (speedup_task(target={"speedup": 1.0, "tier": "easy"}),
                               ".target.speedup: must be > 1 (a speedup over the baseline), got 1"),
    "a speedup as a string": (speedup_task(target={"speedup": "2x", "tier": "easy"}),
                              ".target.speedup: must be a number, got a string '2x'"),
    "an unknown GPU class": (speedup_task(target={"latency_ms": {"h20": 500}, "tier": "easy"}),
                             ".target.latency_ms.h20: unknown GPU class 'h20'"),
    "a negative latency": (speedup_task(target={"latency_ms": {"h200": -5}, "tier": "easy"}),
                           ".target.latency_ms.h200: must be > 0 ms, got -5"),
    "an unknown tier": (speedup_task(target={"speedup": 2.0, "tier": "medum"}),
                        ".target.tier: unknown tier 'medum' (did you mean 'medium'?)"),
    "a target key misspelt": (speedup_task(target={"speedupp": 2.0, "tier": "easy"}),
                              ".target.speedupp: unknown key 'speedupp' (did you mean 'speedup'?)"),
    "an unknown fixed field": (speedup_task(fixed=["sampler", "stepz"]),
                               ".fixed[1]: unknown fixable field 'stepz' (did you mean 'steps'?)"),
    "a fixed field twice": (speedup_task(fixed=["steps", "steps"]), ".fixed[1]: 'steps' is listed twice"),
    "a negative budget": (speedup_task(budget={"psnr_db": -1, "clip_pct": 1}),
                          ".budget.psnr_db: must be >= 0, got -1"),
    "a budget without its CLIP part": (speedup_task(budget={"psnr_db": 1}), ".budget.clip_pct: missing required key"),
    "a method key on a target task": (speedup_task(method="deepcache"),
                                      "tasks[0].method: unknown key 'method'"),
    "text that disagrees with the target": (
        speedup_task(text=SPEEDUP_TEXT.replace("2×", "3×")), ".text: text differs from the rendered form "
                                                              "\"Make the SD1.5 pipeline"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_or_infeasible_target_task_is_one_error_line(root, case):
    task, expected = MALFORMED[case]
    path = write_tasks(root, task)
    result = CliRunner().invoke(main, ["--manifests", str(root), "validate"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: tasks[0]"), result.stderr
    assert expected in lines[0], lines[0]


def test_a_task_file_without_budget_defaults_names_the_missing_budget(root):
    path = write_tasks(root, speedup_task(), defaults={})
    result = CliRunner().invoke(main, ["--manifests", str(root), "validate"])
    assert result.exit_code == 2 and result.stderr.strip() == (
        f"error: {path}: tasks[0] (sd15-ddim-25-speedup-2x).budget: missing required key (not in the task nor in "
        f"defaults): the quality budget {{psnr_db, clip_pct}}, relative to the reference program")


def test_a_target_tasks_facts_hold_its_target_and_older_records_read_as_recipe_tasks(root, tmp_path):
    from accelbench import task_facts

    write_tasks(root, speedup_task())
    catalog = load_catalog(root)
    facts = task_facts.facts(catalog, catalog.tasks["sd15-ddim-25-speedup-2x"], {"gt": "a", "baseline": "b"})
    assert facts["target"]["speedup"] == 2.0 and facts["level"] == SPEEDUP_LEVEL
    recipe = task_facts.facts(catalog, catalog.tasks["sd15-ddim-25-deepcache"], {"gt": "a", "baseline": "b"})
    assert recipe["target"] is None
    older = {key: value for key, value in recipe.items() if key != "target"}  # recorded before target tasks
    assert task_facts.difference(older, recipe) is None



def test_the_task_pack_gives_a_target_tasks_goal_budget_and_fixed_fields_but_not_its_reference(root, tmp_path):
    from accelbench.builder.task_pack import TASK_MD, TASKS_JSONL, write_task_pack

    write_tasks(root, speedup_task(), latency_task())
    catalog = load_catalog(root)
    tasks = [catalog.tasks["sd15-ddim-25-speedup-2x"], catalog.tasks["sdxl-euler-30-latency"]]
    write_task_pack(catalog, catalog.suite("standard"), tasks, tmp_path / "pack")
    records = {json.loads(line)["id"]: json.loads(line) for line in (tmp_path / "pack" / TASKS_JSONL).open()}
    speedup = records["sd15-ddim-25-speedup-2x"]
    assert "method" not in speedup and "params" not in speedup and "evidence" not in speedup["target"]
    assert speedup["target"]["fixed"] == ["sampler", "steps", "guidance"] and speedup["target"]["free"] == ["dtype"]
    page = (tmp_path / "pack" / "sd15-ddim-25-speedup-2x" / TASK_MD).read_text()
    assert "- target (level 4, medium): speedup over the live baseline at least 2×" in page
    assert "  - guidance: the conditional and the unconditional branch run at every step" in page
    assert "- free: the dtype, the acceleration method" in page
    latency_page = (tmp_path / "pack" / "sdxl-euler-30-latency" / TASK_MD).read_text()
    assert "latency per image at most 900 ms on H200, 1200 ms on H100 (no target on other GPUs)" in latency_page
    # Neither the task pages nor the task list name the reference programs (DeepCache, DeepCache+T-GATE) or
    # the search results that found them; the pack's README is the same for every suite.
    for path in [tmp_path / "pack" / TASKS_JSONL, *(tmp_path / "pack").glob(f"*/{TASK_MD}")]:
        text = path.read_text().lower()
        assert "deepcache" not in text and "bench/results/targets" not in text, path


def test_the_lite_suite_spans_every_level_in_about_sixty_tasks():
    from collections import Counter

    from accelbench.manifest import LEVELS

    catalog = load_catalog()
    levels = Counter(catalog.tasks[task_id].level for task_id in catalog.suite("lite").tasks)
    assert set(levels) == set(LEVELS) and 50 <= sum(levels.values()) <= 75, levels


def test_the_standard_catalogue_has_the_levels_breadth():
    from collections import Counter

    from accelbench.manifest import PIPELINE_LEVEL

    catalog = load_catalog()
    tasks = [catalog.tasks[task_id] for task_id in catalog.suite("standard").tasks]
    levels = Counter(task.level for task in tasks)
    assert levels[PIPELINE_LEVEL] >= 40 and levels[SPEEDUP_LEVEL] >= 90 and levels[LATENCY_LEVEL] >= 90, levels
