"""The standing benchmarks (bench/) cannot rot: each script runs end to end on the CPU at its smallest size, writes
the JSON its readers expect and ends with its targets; and the headline tables are what the results give.

The runs are smoke runs (a round or two, one trial, one task): their verdicts are NOT DECIDABLE more often than
not, which is the point of printing them, and nothing here checks their numbers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
VERDICT = ("MET", "NOT DECIDABLE")  # "NOT MET" ends with "MET"
METHODS = ["none", "deepcache"]


def run_script(script: str, *args, expect: int = 0) -> str:
    """``bench/<script> args`` in a subprocess with one thread and the session's synthetic-model cache; its
    stdout (its exit code must be ``expect``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELBENCH_CACHE": os.environ["ACCELBENCH_CACHE"]}
    result = subprocess.run([sys.executable, str(BENCH / script), *map(str, args)], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=600)
    assert result.returncode == expect, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def targets_printed(stdout: str, *goals: str) -> list[str]:
    """The target lines at the end of ``stdout``; each of ``goals`` must be one of them, with a verdict."""
    lines = stdout[stdout.rindex("\ntargets: "):].splitlines()[2:]
    for goal in goals:
        assert any(goal in line and line.rstrip().endswith(VERDICT) for line in lines), (goal, lines)
    return lines


def test_the_headline_tables_are_what_the_results_give():
    run_script("latest.py", "--check")


def paired_report(rng, control: bool, rounds: int = 6) -> dict:
    """A bench_generate.py result as the file holds it: both sides' batch latencies of every round."""
    rows = []
    for mode in ("paired: harness", "paired: bare"):
        baseline = list(1.0 + 0.1 * rng.random(rounds))
        for method in METHODS:
            latencies = baseline if method == "none" else list(0.5 + 0.05 * rng.random(rounds))
            rows.append({"method": method, "mode": mode, "batch_latencies_s": latencies,
                         "baseline_latencies_s": baseline})
    return {"batch_size": 4, "device": "cpu", "weights": "tiny", "options": {"control": control},
            "families": {"sd15": {"rows": rows, "paired_first": ["paired: bare", "paired: harness"] * (rounds // 2)}}}


def test_pool_runs_sets_runs_against_the_control(tmp_path):
    rng = np.random.default_rng(0)
    paths = {}
    for name, control in (("generate-1", False), ("generate-2", False), ("control-1", True), ("control-2", True)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(paired_report(rng, control)))
    stdout = run_script("pool_runs.py", paths["generate-1"], paths["generate-2"], "--control", paths["control-1"],
                        paths["control-2"])
    assert "runs as the unit (n = 2 runs" in stdout and "generate against the control" in stdout
    targets_printed(stdout, "throughput vs bare >= 0.98", "DeepCache speedup within ±3 % of bare's",
                    "DeepCache speedup vs bare's, generate − control within ±3 %")
    # A generate run passed as a control would set the harness against itself.
    run_script("pool_runs.py", paths["generate-1"], "--control", paths["generate-2"], expect=2)


@pytest.mark.slow
def test_bench_generate_and_its_control_pool(tmp_path):
    """Two rounds of the tiny SD1.5 baseline and DeepCache, through generate and through the control."""
    results = {}
    for side, flag in (("generate", []), ("control", ["--control"])):
        results[side] = tmp_path / f"{side}.json"
        stdout = run_script("bench_generate.py", "--families", "sd15", "--methods", "deepcache", "--images", 8,
                            "--warmup", 1, "--weights", "tiny", "--device", "cpu", "--work", tmp_path / side,
                            "--out", results[side], *flag)
        goals = ["throughput vs bare >= 0.98", "DeepCache speedup within ±3 % of bare's"]
        targets_printed(stdout, *goals, *(["harness cost per 4 × 64×64 batch"] if side == "generate" else []))
        report = json.loads(results[side].read_text())
        assert report["options"]["control"] is (side == "control")
        entry = report["families"]["sd15"]
        assert {"rows", "pooled", "paired_first", "targets"} <= entry.keys()
        assert ("overhead" in entry) is (side == "generate")
        assert {(row["mode"], row["method"]) for row in entry["rows"]} == {
            (mode, method) for mode in ("paired: harness", "paired: bare") for method in METHODS}
        assert all(len(row["batch_latencies_s"]) == 2 for row in entry["rows"])
        assert entry["paired_first"] == ["paired: bare", "paired: harness"]
    stdout = run_script("pool_runs.py", results["generate"], "--control", results["control"])
    targets_printed(stdout, "DeepCache speedup vs bare's, generate − control within ±3 %")


def test_the_bare_loop_knows_every_method_the_bench_times_on_every_family():
    """Each method bench_generate.py times has its DDIM-25 task on every family the bare loop loads, and the bare
    loop applies exactly the components the catalogue says the method combines."""
    sys.path.insert(0, str(BENCH))
    import bare
    import bench_generate

    from accelbench.manifest import load_catalog

    catalog = load_catalog()
    for method in bench_generate.METHOD_TASKS:
        single = set() if method == "none" else {method}  # a single method lists no components
        assert bare.components(method) == (set(catalog.methods[method].components) or single)
        for family in bare.FAMILIES:
            task = bench_generate.method_task(catalog, family, method)
            assert (task.model, task.scheduler, task.steps) == (family, "ddim", 25)
            assert task.method == (method if method != "none" else "deepcache")  # the baseline shares its setting


@pytest.mark.slow
def test_bench_generate_runs_a_combination_on_another_family(tmp_path):
    """One round of tiny SD2.1 (768-v) with DeepCache+ToMe+T-GATE on both sides (bare.py applies each component)."""
    out = tmp_path / "combination.json"
    stdout = run_script("bench_generate.py", "--families", "sd21-v", "--methods", "deepcache_tome_tgate", "--images", 4,
                        "--warmup", 1, "--weights", "tiny", "--device", "cpu", "--work", tmp_path / "w", "--out", out)
    targets_printed(stdout, "DeepCache+ToMe+T-GATE speedup within ±3 % of bare's")
    rows = json.loads(out.read_text())["families"]["sd21-v"]["rows"]
    assert {(row["mode"], row["method"]) for row in rows} == {
        (mode, method) for mode in ("paired: harness", "paired: bare") for method in ("none", "deepcache_tome_tgate")}
    assert all(len(row["batch_latencies_s"]) == 1 for row in rows)


@pytest.mark.slow
def test_bench_score(tmp_path):
    out = tmp_path / "score.json"
    stdout = run_script("bench_score.py", "--images", 8, "--size", 64, "--model", "accelbench-tiny-clip",
                        "--device", "cpu", "--batch-size", 4, "--repeats", 1, "--out", out)
    targets_printed(stdout, "accelbench score >= 0.9 x the machine's bound")
    result = json.loads(out.read_text())
    assert len(result["repeats"]) == 1 and {"bound_images_per_s", "accelbench_images_per_s",
                                            "ratio_to_bound"} <= result["repeats"][0].keys()
    assert result["targets"][0]["n"] == "1 repeat"


@pytest.mark.slow
def test_reliability_one_trial(tmp_path):
    out = tmp_path / "reliability.json"
    stdout = run_script("reliability.py", "--trials", 1, "--out", tmp_path / "work", "--results", out)
    targets_printed(stdout, "every killed and resumed dataset identical to the clean run")
    result = json.loads(out.read_text())
    assert (result["identical"], result["total"]) == (1, 1) and result["targets"][0]["verdict"] == "MET"


@pytest.mark.slow
def test_bench_audit_on_the_smoke_suite(tmp_path):
    out = tmp_path / "audit.json"
    stdout = run_script("bench_audit.py", "--device", "cpu", "--work", tmp_path / "work", "--out", out)
    targets_printed(stdout, "honest program: every row ok", "cheat: every row rejected",
                    "GT replays bit-identical on this device")
    result = json.loads(out.read_text())
    assert set(result["submissions"]) == {"late", "unwatched", "subtle", "memo", "honest", "queued", "burner"}
    verdicts = {target["goal"]: target["verdict"] for target in result["targets"]}
    assert [verdicts[goal] for goal in ("honest program: every row ok", "cheat: every row rejected",
                                        "GT replays bit-identical on this device")] == ["MET"] * 3
    # On the CPU the saboteurs compute the GT's images and have nothing to queue, and their threads are frozen
    # between calls: every row ok, pixel for pixel the GT's.
    for name in ("queued", "burner"):
        [entry] = result["submissions"][name].values()
        assert set(entry["statuses"]) == {"ok"} and entry["max_abs"] == 0, (name, entry)


@pytest.mark.slow
def test_coverage_three_runs(tmp_path):
    import doctest

    sys.path.insert(0, str(BENCH))
    import interval_coverage

    assert doctest.testmod(interval_coverage).failed == 0
    out = tmp_path / "coverage.json"
    stdout = run_script("interval_coverage.py", "--runs", 3, "--repeats", 1, "--resamples", 100,
                        "--work", tmp_path / "w",
                        "--out", out)
    targets_printed(stdout, "share of runs inside another run's 95 % interval (one-level)")
    result = json.loads(out.read_text())
    assert len(result["runs"]) == 3 and 0 <= result["share"] <= 1 and result["levels"] == "one-level"
    assert all(run["speedup_ci_low"] <= run["speedup"] <= run["speedup_ci_high"] for run in result["runs"])


@pytest.mark.slow
def test_calibrations_on_one_task(tmp_path):
    """ToMe with use_rand: the one task that exercises every check of both calibrations."""
    task = "smoke-sd15-ddim-8-tome"
    stdout = run_script("gate_calibration.py", "--tasks", task, "--draws", 1, "--out", tmp_path / "gate.json")
    targets_printed(stdout, "CPU float32: max abs difference", "ToMe, another merge seed: mean abs difference")
    gate = json.loads((tmp_path / "gate.json").read_text())
    assert gate["summary"]["programs"] == 2 and {"device", "dtype", "weights"} <= gate["summary"].keys()
    stdout = run_script("deviation_calibration.py", "--tasks", task, "--out", tmp_path / "deviation.json")
    targets_printed(stdout, "tome: honest variations >= its threshold")
    deviation = json.loads((tmp_path / "deviation.json").read_text())
    assert [row["task"] for row in deviation["rows"]] == [task]
    assert {"batch_size", "threads", "tome_seed", "no_acceleration", "off_by_one"} <= deviation["rows"][0].keys()


def test_repeat_variance_recovers_the_two_noise_levels():
    """A seeded two-level simulation: per-round log speedups scatter by 0.05 within a repeat and each repeat's
    level by 0.1: the between-repeat share, 0.8, is recovered, and each repeat's speedup is its ratio of sums."""
    sys.path.insert(0, str(BENCH))
    import repeat_variance

    rng = np.random.default_rng(0)
    rows = []
    for repeat in range(60):
        level = rng.normal(0, 0.1)
        for round_index in range(10):
            baseline = 1.0 + rng.uniform(0, 0.1)
            rows.append({"variant": "gt", "task_id": "t", "status": "ok", "batch_size": 4, "repeat": repeat,
                         "round": round_index, "baseline_latency_s": baseline,
                         "batch_latency_s": baseline / 2 * np.exp(-level - rng.normal(0, 0.05))})
    rows.append({**rows[0], "variant": "baseline"})  # the baseline's own rows are not a speedup
    [entry] = repeat_variance.variance_table(rows)
    assert (entry["repeats"], entry["rounds"]) == (60, [10] * 60)
    assert entry["between_share"] == pytest.approx(0.8, abs=0.08)
    first = [row for row in rows[:10]]
    assert entry["speedup_per_repeat"][0] == pytest.approx(sum(r["baseline_latency_s"] for r in first)
                                                           / sum(r["batch_latency_s"] for r in first))


@pytest.mark.slow
def test_targets_search_and_its_tasks_on_the_tiny_model(tmp_path):
    """Two DeepCache configurations of the smoke suite's SD1.5 setting, five rounds: the results hold both, the
    front, and targets `targets tasks` turns into manifest entries that load."""
    from click.testing import CliRunner

    from accelbench.cli import main
    from accelbench.manifest import load_catalog

    results = tmp_path / "search.json"
    found = CliRunner().invoke(main, ["targets", "search", "--model", "sd15", "--scheduler", "ddim", "--steps", "8",
                                      "--weights", "tiny", "--device", "cpu", "--limit", "5", "--methods",
                                      "deepcache", "--max-candidates", "2", "--out", str(tmp_path / "ds"),
                                      "--results", str(results), "--no-progress"])
    assert found.exit_code == 0, found.output
    data = json.loads(results.read_text())
    assert [point["params"] for point in data["candidates"]] == [{"cache_interval": 2, "cache_branch_id": 0},
                                                               {"cache_interval": 2, "cache_branch_id": 2}]
    assert all(point["speedup_n"] == 5 and point["psnr"] is not None for point in data["candidates"])
    assert set(data["front"]) <= {point["name"] for point in data["candidates"]} and data["front"]
    tasks = CliRunner().invoke(main, ["targets", "tasks", str(results)])
    assert tasks.exit_code == 0, tasks.output
    entries = yaml.safe_load(tasks.stdout)["tasks"]
    assert len(entries) == len(data["targets"])  # a speedup task per tier; the CPU is no GPU class: no latency task
    if entries:  # CPU timings decide whether any tier is derived
        path = tmp_path / "targets.yaml"
        path.write_text(tasks.stdout)
        loaded = load_catalog(extra_files=[path])
        assert {loaded.tasks[entry["id"]].level for entry in entries} == {4}


@pytest.mark.slow
def test_bench_targets_on_one_task(tmp_path):
    out = tmp_path / "judged.json"
    stdout = run_script("bench_targets.py", "--device", "cpu", "--weights", "tiny", "--tasks",
                        "sd15-ddim-25-latency-easy", "--limit", 1, "--work", tmp_path / "work", "--out", out)
    targets_printed(stdout, "every verdict as its search numbers predict")
    rows = json.loads(out.read_text())["rows"]
    assert {row["submission"] for row in rows} == {"gt", "near", "tome"}
    # The CPU is no GPU class of the task's latency target: the reference has no target here; the submissions'
    # verdicts (quality is judged first, on one tiny image) are not this smoke run's to check.
    verdicts = {row["submission"]: row["target_verdict"] for row in rows}
    assert verdicts["gt"] == "no target" and set(verdicts.values()) <= {"met", "not met", "not decidable",
                                                                       "no target"}
