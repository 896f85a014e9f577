"""Deriving target tasks from search results (``builder/target_search.py``, ``accelbench targets tasks``), and the
catalogue's target tasks against the results files they cite: every target is proven feasible with the margin,
and the manifest is what ``targets tasks`` makes of its evidence today."""

import doctest
import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from accelbench.builder import target_search
from accelbench.builder.target_search import FEASIBILITY_MARGIN, derive_targets
from accelbench.cli import main
from accelbench.manifest import LATENCY_LEVEL, SPEEDUP_LEVEL, load_catalog

ROOT = Path(__file__).resolve().parent.parent
TARGETS_YAML = ROOT / "manifests" / "tasks" / "targets.yaml"


def point(name, low, psnr, latency_high=100.0, method="deepcache"):
    return {"name": name, "method": method, "params": {"cache_interval": int(name[1:])}, "speedup": low * 1.1,
            "speedup_ci_low": low, "psnr": psnr, "latency_ms_ci_high": latency_high}


def test_the_modules_examples_hold():
    assert doctest.testmod(target_search).failed == 0


def test_each_tier_has_the_closest_reference_that_meets_its_target_with_the_margin():
    points = [point("c2", 1.6, 48.0, 600.0), point("c3", 2.0, 44.0, 480.0), point("c5", 3.0, 37.0, 330.0),
              {**point("c9", 0.0, 30.0), "speedup_ci_low": None}]  # an untimed candidate counts for nothing
    derived = derive_targets(points, "NVIDIA H200", baseline_latency_ms=1000.0)
    assert [entry["tier"] for entry in derived] == ["easy", "medium", "hard"]
    by_name = {candidate["name"]: candidate for candidate in points}
    for entry in derived:
        reference = by_name[entry["reference"]]
        assert reference["speedup_ci_low"] >= entry["speedup"] * (1 + FEASIBILITY_MARGIN) - 1e-9
        # no candidate closer to the baseline meets it with the margin
        assert not any(other["psnr"] > reference["psnr"] and other["speedup_ci_low"] is not None
                       and other["speedup_ci_low"] >= entry["speedup"] * (1 + FEASIBILITY_MARGIN) for other in points)
        latency = entry["latency_ms"]["h200"]
        assert latency >= reference["latency_ms_ci_high"] * (1 + FEASIBILITY_MARGIN)
        assert latency >= 1000.0 / entry["speedup"] and latency % 5 == 0
    # hard asks for the reach (3.0 / 1.15 = 2.6, rounded down to 0.05), easy and medium for 0.6 and 0.8 of it
    assert [entry["speedup"] for entry in derived] == [1.55, 2.05, 2.6]
    assert [entry["reference"] for entry in derived] == ["c3", "c5", "c5"]
    # medium and hard share a reference but not a latency target
    assert derived[1]["latency_ms"] != derived[2]["latency_ms"]


def test_a_tier_below_the_smallest_target_is_left_out_and_the_cpu_gets_no_latency_target():
    derived = derive_targets([point("c2", 1.5, 40.0)], "cpu", baseline_latency_ms=1000.0)
    # 0.6 x 1.5 / 1.15 = 0.78 < 1.1: no easy tier; medium 1.04 neither; hard 1.3
    assert [(entry["tier"], entry["speedup"], entry["latency_ms"]) for entry in derived] == [("hard", 1.3, None)]
    assert derive_targets([], "NVIDIA H200", 1000.0) == []


def write_results(tmp_path) -> Path:
    results = {"model": "sd15", "scheduler": "ddim", "steps": 30, "setting": "sd15-ddim-30",  # not in the catalogue
               "device_name": "NVIDIA H200", "baseline_latency_ms": 900.0,
               "candidates": [point("c2", 1.6, 48.0, 600.0), point("c5", 3.0, 37.0, 330.0)]}
    path = tmp_path / "search.json"
    path.write_text(json.dumps(results))
    return path


def test_targets_tasks_makes_one_task_per_tier_goal_and_fixed_set_that_loads(tmp_path, manifest_root):
    path = write_results(tmp_path)
    result = CliRunner().invoke(main, ["targets", "tasks", str(path), "--fixed", "sampler,steps,dtype",
                                       "--fixed", "none", "--fixed", "guidance,dtype"])
    assert result.exit_code == 0, result.output
    entries = yaml.safe_load(result.stdout)["tasks"]
    tiers = {entry["target"]["tier"] for entry in entries}
    assert len(entries) == len(tiers) * 2 * 3  # speedup and latency, three fixed sets
    ids = [entry["id"] for entry in entries]
    assert len(set(ids)) == len(ids)
    assert "sd15-ddim-30-speedup-medium" in ids  # the default fixed set names nothing in the id
    assert "sd15-ddim-30-latency-medium-fixed-none" in ids
    assert "sd15-ddim-30-speedup-medium-fixed-dtype-guidance" in ids  # in FIXABLE's order
    (manifest_root / "tasks" / "derived.yaml").write_text(result.stdout)
    catalog = load_catalog(manifest_root)
    assert catalog.tasks["sd15-ddim-30-latency-medium-fixed-none"].target.fixed == ()
    assert catalog.tasks["sd15-ddim-30-latency-medium-fixed-none"].level == LATENCY_LEVEL


def test_targets_tasks_refuses_an_unknown_fixed_field_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["targets", "tasks", str(write_results(tmp_path)), "--fixed", "sampler,seed"])
    assert result.exit_code != 0
    assert result.output.strip().splitlines()[-1].startswith("error:") and "'seed'" in result.output


def regenerate_command() -> list[str]:
    """The `accelbench targets tasks ...` arguments written in targets.yaml's header."""
    header = "".join(line[1:].strip().rstrip("\\") + " " for line in TARGETS_YAML.read_text().splitlines()
                     if line.startswith("#"))
    return re.search(r"accelbench (targets tasks .*)", header).group(1).split()


def test_the_catalogues_target_tasks_are_what_targets_tasks_makes_of_their_evidence(monkeypatch):
    monkeypatch.chdir(ROOT)  # the header's paths, as the evidence fields cite them, are relative to the root
    args = regenerate_command()
    paths = [str(path.relative_to(ROOT)) for path in sorted(ROOT.glob(args[2]))]
    result = CliRunner().invoke(main, [*args[:2], *paths, *args[3:]])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["tasks"] == yaml.safe_load(TARGETS_YAML.read_text())["tasks"]


def test_every_catalogue_target_is_met_by_its_reference_in_its_evidence_with_the_margin():
    catalog = load_catalog()
    targets = [task for task in catalog.tasks.values() if task.target is not None]
    for task in targets:
        results = json.loads((ROOT / task.target.evidence).read_text())
        assert (results["model"], results["scheduler"], results["steps"]) == (task.model, task.scheduler,
                                                                               task.steps), task.id
        reference = [candidate for candidate in results["candidates"]  # params: every one, defaults filled in
                     if (candidate["method"], candidate["params"]) == (task.method, task.params)]
        assert len(reference) == 1, task.id
        (reference,) = reference
        if task.target.speedup is not None:
            assert reference["speedup_ci_low"] >= task.target.speedup * (1 + FEASIBILITY_MARGIN) - 1e-9, task.id
        for gpu, latency in task.target.latency_ms.items():
            assert gpu == results["gpu_class"], task.id
            assert reference["latency_ms_ci_high"] * (1 + FEASIBILITY_MARGIN) <= latency, task.id
    assert Counter(task.level for task in targets) == Counter({SPEEDUP_LEVEL: len(targets) // 2,
                                                               LATENCY_LEVEL: len(targets) // 2})


@pytest.mark.parametrize("patterns, expected", [
    (["sd15-ddim-25-*", "!*-speedup-*", "!*-latency-*"], "recipe"),
    (["sd15-ddim-25-speedup-*", "!*-fixed-*"], ["sd15-ddim-25-speedup-easy", "sd15-ddim-25-speedup-medium",
                                                "sd15-ddim-25-speedup-hard"]),
])
def test_a_bang_pattern_drops_what_it_matches_from_the_tasks_selected_before_it(patterns, expected):
    from accelbench.manifest import expand_task_patterns

    catalog = load_catalog()
    selected = expand_task_patterns(patterns, list(catalog.tasks), lambda index, pattern: pytest.fail(pattern))
    if expected == "recipe":
        assert selected and all(catalog.tasks[task_id].target is None for task_id in selected)
    else:
        assert selected == expected


def test_a_bang_pattern_that_drops_nothing_is_an_error_in_one_line():
    from accelbench.builder.plan import PlanError, select_tasks

    catalog = load_catalog()
    with pytest.raises(PlanError, match=r"^--tasks: '!nothing-\*' matches no task of suite 'smoke'$"):
        select_tasks(catalog, catalog.suite("smoke"), ["smoke-*", "!nothing-*"])
