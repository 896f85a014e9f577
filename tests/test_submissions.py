"""Submissions in generate: correct programs and missing tasks, the gate before timing and on the real model,
retrying failed rows, bad submission folders, and the task pack an agent is given."""

import json
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from generating import CATALOG, FAKE, SLICE, SMOKE, generate, gt_source, raw_record_ids, rows, submission

from accelbench import dataset, schema
from accelbench.builder import programs
from accelbench.cli import main

# End-to-end generate runs: out of make test-fast's quick lane.
pytestmark = pytest.mark.slow


def test_submission_with_correct_programs_and_a_missing_task(tmp_path):
    folder = submission(tmp_path / "honest", {task: gt_source(task) for task in SLICE[:1]})
    summary = generate(tmp_path / "out", submissions=[folder], tasks=["smoke-sd15-ddim-8-deepcache",
                                                                      "smoke-sd15-ddim-8-tome"], limit=2)
    assert summary.reference_failed_rows == 0
    table = rows(tmp_path / "out")
    sub = {row["unit_id"]: row["status"] for row in table if row["variant"] == "sub:honest"}
    assert sub == {"smoke-sd15-ddim-8-deepcache": "ok", "smoke-sd15-ddim-8-tome": "missing"}
    # The submitted copy of the GT program renders the GT's images: same program, same inputs.
    by_key = defaultdict(dict)
    for row in table:
        if row["unit_id"] == "smoke-sd15-ddim-8-deepcache":
            by_key[(row["seed"], row["batch_size"], row["prompt_index"])][row["variant"]] = row["image_sha256"]
    assert all(images["gt"] == images["sub:honest"] for images in by_key.values())
    assert (tmp_path / "out" / schema.PROGRAMS_DIR / f"{programs.Program(gt_source(SLICE[0]), '').sha256}.py").exists()


def test_a_pipeline_task_is_judged_like_a_recipe_task(tmp_path):
    """Level 1 asks for the plain pipeline: the baseline program, written out again, is correct (images equal to
    the GT's, which are the baseline's); an accelerated one is rejected by the gate's trace check."""
    task = "smoke-sd15-ddim-8-pipeline"
    accelerated = gt_source("smoke-sd15-ddim-8-deepcache")
    folders = [submission(tmp_path / "plain", {task: programs.render(CATALOG, CATALOG.task(task), baseline=True)
                                                      .source}),
               submission(tmp_path / "cached", {task: accelerated})]
    generate(tmp_path / "out", submissions=folders, tasks=[task], limit=2)
    table = rows(tmp_path / "out", ["variant", "status", "error", "image_sha256", "seed", "batch_size",
                                    "prompt_index"])
    images = defaultdict(dict)
    for row in table:
        images[(row["seed"], row["batch_size"], row["prompt_index"])][row["variant"]] = row["image_sha256"]
    assert all(len({found[variant] for variant in (schema.BASELINE, schema.GT, "sub:plain")}) == 1
               for found in images.values())
    plain = [row for row in table if row["variant"] == "sub:plain"]
    cached = [row for row in table if row["variant"] == "sub:cached"]
    assert len(plain) == len(cached) == 8 and {row["status"] for row in plain} == {schema.STATUS_OK}
    assert {row["status"] for row in cached} == {schema.STATUS_REJECTED}
    assert cached[0]["error"].startswith("gate: spec: ")


def test_the_gate_rejects_a_submission_before_timing_and_stores_its_verdicts(tmp_path):
    """A DeepCache program handed in for the DeepCache+T-GATE task computes something else: its rows are
    'rejected' with the gate's first trace difference and it is never timed; the honest copy passes."""
    honest = gt_source("smoke-sd15-ddim-8-deepcache")
    folder = submission(tmp_path / "mixed", {"smoke-sd15-ddim-8-deepcache": honest,
                                             "smoke-sd15-ddim-8-deepcache-tgate": honest})
    summary = generate(tmp_path / "out", submissions=[folder], limit=2,
                       tasks=["smoke-sd15-ddim-8-deepcache", "smoke-sd15-ddim-8-deepcache-tgate"])
    assert summary.reference_failed_rows == 0
    table = [row for row in rows(tmp_path / "out") if row["variant"] == "sub:mixed"]
    status = {(row["unit_id"], row["status"]) for row in table}
    assert status == {("smoke-sd15-ddim-8-deepcache", "ok"), ("smoke-sd15-ddim-8-deepcache-tgate", "rejected")}
    rejected = [row for row in table if row["status"] == "rejected"]
    assert all(row["error"].startswith("gate: spec: ") and row["batch_latency_s"] is None for row in rejected)
    verdicts = pq.read_table(tmp_path / "out" / schema.GATE_DIR).to_pylist()
    assert {(v["task_id"], v["passed"]) for v in verdicts} == {("smoke-sd15-ddim-8-deepcache", True),
                                                             ("smoke-sd15-ddim-8-deepcache-tgate", False)}
    assert all(json.loads(v["inputs"])["calls"] and v["variant"] == "sub:mixed" for v in verdicts)


def _honest_on_the_pool(tmp_path):
    """Honest on the gate's built-in prompts, 4 steps instead of 8 on any other."""
    honest = gt_source("smoke-sd15-ddim-8-deepcache")
    sly = ("from accelbench.builder.gate import PROMPT_POOL\n" + honest).replace(
        "num_inference_steps=NUM_INFERENCE_STEPS,", "num_inference_steps=8 if prompts[0] in PROMPT_POOL else 4,")
    assert sly.count("PROMPT_POOL") == 2
    return submission(tmp_path / "sly", {"smoke-sd15-ddim-8-deepcache": sly})


def test_a_program_keyed_on_the_gate_s_prompt_pool_is_rejected_by_the_gate_on_the_run_s_prompts(tmp_path):
    """With three prompts or more the gate draws from the run's own, so the pool gives it nothing to key on."""
    generate(tmp_path / "out", submissions=[_honest_on_the_pool(tmp_path)], tasks=["smoke-sd15-ddim-8-deepcache"],
             limit=3)
    [verdict] = pq.read_table(tmp_path / "out" / schema.GATE_DIR).to_pylist()
    assert not verdict["passed"] and verdict["reason"].startswith("spec: call 1 of 4")
    sub = [row for row in rows(tmp_path / "out") if row["variant"] == "sub:sly"]
    assert {row["status"] for row in sub} == {"rejected"}
    assert all(row["error"].startswith("gate: spec: ") for row in sub)


def test_a_program_that_behaves_only_on_the_gates_inputs_is_rejected_on_the_real_model(tmp_path):
    """With two prompts the gate draws from its pool and passes the program above, but its traced warm-up batch
    in generate differs from the GT's on the same batch, so it is rejected before any timed batch."""
    generate(tmp_path / "out", submissions=[_honest_on_the_pool(tmp_path)], tasks=["smoke-sd15-ddim-8-deepcache"],
             limit=2)
    verdicts = pq.read_table(tmp_path / "out" / schema.GATE_DIR).to_pylist()
    assert [v["passed"] for v in verdicts] == [True]  # the tiny-model gate saw only its own prompts
    sub = [row for row in rows(tmp_path / "out") if row["variant"] == "sub:sly"]
    assert {row["status"] for row in sub} == {"rejected"} and len(sub) == 8
    assert all(row["error"].startswith("gate (real model): spec: ") and row["batch_latency_s"] is None for row in sub)


def test_retry_failed_replaces_failed_rows(tmp_path):
    flag = tmp_path / "flag"
    flaky = FAKE.format(load="pass", generate=f"if not os.path.exists({str(flag)!r}): raise RuntimeError('flaky')")
    folder = submission(tmp_path / "flaky", {"smoke-sd15-ddim-8-deepcache": flaky})
    options = dict(submissions=[folder], tasks=["smoke-sd15-ddim-8-deepcache"], variants=["sub:flaky"], limit=2,
                   warmup_batches=0, gate="none")
    assert generate(tmp_path / "out", **options).failed_rows == 8
    flag.write_text("now it works")
    assert generate(tmp_path / "out", **options).rows_written == 0  # without --retry-failed: already done
    summary = generate(tmp_path / "out", retry_failed=True, **options)
    assert summary.rows_written == 8 and summary.failed_rows == 0
    assert Counter(row["status"] for row in rows(tmp_path / "out")) == {"ok": 8}
    assert len(raw_record_ids(tmp_path / "out")) == 16  # the failed rows stay on disk; readers take the ok ones
    from accelbench.scorer import images

    located = images.locate(dataset.generation_files(tmp_path / "out"))  # the scorer reads the same rows
    for spot in located.values():
        row_index = spot.row + dataset.ROW_GROUP_SIZE * spot.row_group
        assert pq.read_table(spot.path).slice(row_index, 1).column("status")[0].as_py() == "ok"


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "nope", "no such folder"),
    (lambda root: submission(root / "empty", {}), "no programs (<task_id>.py files)"),
    (lambda root: submission(root / "typo", {"smoke-sd15-ddim-8-deepcach": "x"}),
     "'smoke-sd15-ddim-8-deepcach' is not a task of suite 'smoke' (did you mean 'smoke-sd15-ddim-8-deepcache'?)"),
    (lambda root: submission(root / "baseline", {SLICE[0]: "x"}), "submission name 'baseline' must match"),
    (lambda root: submission(root / "x", {SLICE[0]: "x"}, "name: a b\n"), "submission name 'a b' must match"),
    (lambda root: submission(root / "x", {SLICE[0]: "x"}, "name: GT\n"), "submission name 'GT' must match"),
    (lambda root: submission(root / "x", {SLICE[0]: "x"}, "name: Reference\n"), "name 'Reference' must match"),
    (lambda root: submission(root / "x", {SLICE[0]: "x"}, "name: '..'\n"), "submission name '..' must match"),
    (lambda root: submission(root / "x", {SLICE[0]: "x"}, 'name: "ok\\n"\n'), "submission name 'ok\\n' must"),
    (lambda root: submission(root / "x", {SLICE[0]: "x"}, "name: [1\n"), "not readable YAML"),
    (lambda root: submission(root / "x", {SLICE[0]: "x"}, "nmae: x\n"), "unknown key 'nmae' (did you mean 'name'?)"),
])
def test_bad_submissions_give_one_line_and_exit_2(tmp_path, make, message):
    folder = make(tmp_path)
    result = CliRunner().invoke(main, ["generate", "--out", str(tmp_path / "out"), "--submission", str(folder)])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_two_submissions_with_one_name_are_refused(tmp_path):
    first = submission(tmp_path / "a", {SLICE[0]: "x"}, "name: same\n")
    second = submission(tmp_path / "b", {SLICE[0]: "x"}, "name: same\n")
    result = CliRunner().invoke(main, ["generate", "--out", str(tmp_path / "out"), "--submission", str(first),
                                       "--submission", str(second)])
    assert result.exit_code == 2 and "two submissions are named 'same'" in result.stderr


def test_task_pack_holds_the_tasks_and_baselines_but_no_gt(tmp_path):
    out = tmp_path / "pack"
    result = CliRunner().invoke(main, ["task-pack", "--suite", "smoke", "--out", str(out), "--tasks", "smoke-sd15-*"])
    assert result.exit_code == 0, result.output
    tasks = [json.loads(line) for line in (out / "tasks.jsonl").read_text().splitlines()]
    expected = [task for task in SMOKE.tasks if task.startswith("smoke-sd15-")]
    assert [task["id"] for task in tasks] == expected
    assert all(task["text"] == CATALOG.task(task["id"]).text and task["steps"] == 8 for task in tasks)
    assert {task["id"]: task["level"] for task in tasks}["smoke-sd15-ddim-8-pipeline"] == 1
    assert "- level: 1 (a pipeline" in (out / "smoke-sd15-ddim-8-pipeline" / "TASK.md").read_text()
    readme = (out / "README.md").read_text()
    assert programs.CONTRACT in readme and "## Forbidden" in readme
    assert programs.CONTRACT in (Path(__file__).resolve().parents[1] / "README.md").read_text()  # the one contract
    for task_id in expected:
        assert CATALOG.task(task_id).text in (out / task_id / "TASK.md").read_text()
        assert (out / task_id / "baseline.py").read_text() == programs.render(CATALOG, CATALOG.task(task_id),
                                                                              baseline=True).source
    everything = "".join(path.read_text() for path in out.rglob("*") if path.is_file())
    for call in ("DeepCacheSDHelper(", "apply_patch(", "TgateSDLoader(", "TgateSDDeepCacheLoader("):
        assert call not in everything  # no GT program, nor a piece of one
    again = CliRunner().invoke(main, ["task-pack", "--suite", "smoke", "--out", str(out)])
    assert again.exit_code == 2 and "exists and is not an empty folder" in again.stderr


def test_a_step_reduction_tasks_page_names_the_sampler_and_steps_to_use(tmp_path):
    out, task_id = tmp_path / "pack", "sd15-ddim-50-step-reduction-dpmpp_2m-20"
    result = CliRunner().invoke(main, ["task-pack", "--suite", "standard", "--out", str(out), "--tasks", task_id])
    assert result.exit_code == 0, result.output
    page = (out / task_id / "TASK.md").read_text()
    assert ("- sample with DPM++ 2M (`DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, "
            "algorithm_type='dpmsolver++', solver_order=2)`) and 20 steps instead of the setting's DDIM, 50 steps "
            "(the baseline keeps those)") in page
    # what the page says is what the GT program does
    gt = programs.render(CATALOG, CATALOG.task(task_id)).source
    assert "DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type=" in gt
    baseline = (out / task_id / "baseline.py").read_text()
    assert "NUM_INFERENCE_STEPS = 20\n" in gt and "NUM_INFERENCE_STEPS = 50\n" in baseline
