"""The correctness gate: every catalogue program passes on its family's tiny model; broken programs fail."""

import pytest
from click.testing import CliRunner

from accelbench.builder import gate, programs, synthetic
from accelbench.cli import main
from accelbench.manifest import load_catalog

CATALOG = load_catalog()


@pytest.fixture(scope="module")
def baselines():
    """Verdict of each setting's baseline program, computed once; its images are the no-op reference."""
    cache = {}

    def verdict_for(task):
        if task.setting_id not in cache:
            cache[task.setting_id] = run_gate(programs.render(CATALOG, task, "baseline").source, task, "baseline")
        return cache[task.setting_id]

    return verdict_for


def run_gate(source, task, variant="gt", reference=None):
    resolution = synthetic.tiny_resolution(task.model)
    return gate.check_program(source, task, CATALOG, synthetic.materialize(task.model, "tiny"), height=resolution,
                              width=resolution, variant=variant, reference=reference)


def gt_source(task_id, replace=None):
    source = programs.render(CATALOG, CATALOG.task(task_id), "gt").source
    for old, new in (replace or {}).items():
        assert old in source, old
        source = source.replace(old, new)
    return source


@pytest.mark.parametrize("task_id", list(CATALOG.tasks))
def test_every_gt_and_baseline_program_passes_the_gate(task_id, baselines):
    task = CATALOG.task(task_id)
    baseline = baselines(task)
    assert baseline.passed, baseline.format()
    verdict = run_gate(programs.render(CATALOG, task, "gt").source, task, reference=baseline.images)
    assert verdict.passed, verdict.format()
    assert [check.name for check in verdict.checks] == ["contract", "scheduler", *(
        ["scheduler-config"] if CATALOG.schedulers[task.scheduler].config else []),
        "steps", "num-steps", "output", "finite", "repeatable", "not-a-no-op"]


def test_program_running_20_steps_for_a_25_step_task_fails(baselines):
    task = CATALOG.task("sd15-ddim-25-deepcache")
    verdict = run_gate(gt_source(task.id, {"NUM_INFERENCE_STEPS = 25": "NUM_INFERENCE_STEPS = 20"}), task,
                       reference=baselines(task).images)
    assert not verdict.passed
    failed = {check.name: check for check in verdict.checks if not check.passed}
    assert set(failed) == {"steps", "num-steps"}
    assert failed["steps"].expected == "25 step() calls" and failed["steps"].observed == "20"


def test_step_count_scraped_from_the_text_with_a_regex_that_never_matches_fails(baselines):
    """The historical bug: steps parsed from the task text, falling back to a hard-coded 20."""
    task = CATALOG.task("sd15-ddim-25-deepcache")
    scraped = ('import re\n_m = re.search(r"(\\d+) inference steps", __doc__)\n'
               'NUM_INFERENCE_STEPS = int(_m.group(1)) if _m else 20')
    verdict = run_gate(gt_source(task.id, {"NUM_INFERENCE_STEPS = 25": scraped}), task,
                       reference=baselines(task).images)
    assert "steps" in verdict.failed_checks()


def test_program_with_the_wrong_scheduler_fails(baselines):
    task = CATALOG.task("sd15-ddim-25-tgate")
    verdict = run_gate(gt_source(task.id, {"DDIMScheduler": "EulerDiscreteScheduler"}), task,
                       reference=baselines(task).images)
    scheduler = next(check for check in verdict.checks if check.name == "scheduler")
    assert not verdict.passed and not scheduler.passed
    assert (scheduler.expected, scheduler.observed) == ("DDIMScheduler", "EulerDiscreteScheduler")
    assert "steps" in verdict.failed_checks()  # step() ran on the wrong class


def test_wrong_scheduler_configuration_fails(baselines):
    task = CATALOG.task("sd15-dpmpp_2m-20-deepcache")
    verdict = run_gate(gt_source(task.id, {'algorithm_type="dpmsolver++"': 'algorithm_type="sde-dpmsolver++"'}),
                       task, reference=baselines(task).images)
    assert verdict.failed_checks() == ["scheduler-config"]


def test_tome_on_sdxl_with_max_downsample_1_is_flagged_as_a_no_op(baselines):
    task = CATALOG.task("sdxl-ddim-25-tome")
    verdict = run_gate(gt_source(task.id, {"max_downsample=2": "max_downsample=1"}), task,
                       reference=baselines(task).images)
    assert verdict.failed_checks() == ["not-a-no-op"]
    assert next(check for check in verdict.checks if check.name == "not-a-no-op").observed == "max |diff| 0"


def test_deepcache_helper_never_enabled_is_a_no_op(baselines):
    task = CATALOG.task("sd15-ddim-25-deepcache")
    verdict = run_gate(gt_source(task.id, {"    helper.enable()\n": ""}), task, reference=baselines(task).images)
    assert verdict.failed_checks() == ["not-a-no-op"]


def test_program_without_generate_breaks_the_contract():
    task = CATALOG.task("sd15-ddim-25-deepcache")
    verdict = run_gate(gt_source(task.id, {"def generate(": "def make_images("}), task)
    assert verdict.failed_checks() == ["contract"] and "generate" in verdict.checks[0].detail


def test_program_that_raises_gives_a_failed_verdict_with_the_error():
    task = CATALOG.task("smoke-sd15-ddim-8-tgate")
    verdict = run_gate(gt_source(task.id, {"    output = pipe.tgate(": "    raise RuntimeError('boom')\n    output = pipe.tgate("}),
                       task)
    assert not verdict.passed and verdict.error == "RuntimeError: boom"


def test_nan_images_fail_the_finite_check():
    task = CATALOG.task("smoke-sd15-ddim-8-deepcache")
    verdict = run_gate(gt_source(task.id, {"    return output.images": "    return output.images * float('nan')"}),
                       task)
    assert verdict.failed_checks() == ["finite"]


def test_wrong_resolution_fails_the_output_check():
    task = CATALOG.task("smoke-pixart-alpha-dpmpp_2m-8-tgate")
    verdict = run_gate(gt_source(task.id, {"        height=height,\n        width=width,\n":
                                           "        height=height // 2,\n        width=width // 2,\n"}), task)
    assert verdict.failed_checks() == ["output"]


def test_check_program_cli_exit_codes(tmp_path):
    good = tmp_path / "good.py"
    good.write_text(gt_source("smoke-sdxl-euler-8-tome"))
    bad = tmp_path / "bad.py"
    bad.write_text(gt_source("smoke-sdxl-euler-8-tome", {"max_downsample=2": "max_downsample=1"}))
    runner = CliRunner()
    passed = runner.invoke(main, ["check-program", str(good), "--task", "smoke-sdxl-euler-8-tome"])
    assert passed.exit_code == 0, passed.output
    assert passed.stdout.startswith("PASS  smoke-sdxl-euler-8-tome (gt)")
    failed = runner.invoke(main, ["check-program", str(bad), "--task", "smoke-sdxl-euler-8-tome", "--json"])
    assert failed.exit_code == 1
    assert '"passed": false' in failed.stdout
    missing = runner.invoke(main, ["check-program", str(tmp_path / "nope.py"), "--task", "smoke-sdxl-euler-8-tome"])
    assert missing.exit_code == 2 and missing.stderr.startswith("error: cannot read program")
