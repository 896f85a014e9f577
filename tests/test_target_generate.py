"""A target task through generate and score on the tiny SD1.5 model: the reference program runs beside the
baseline like a GT, an honest program choosing another method is timed and audited, programs breaking a
constraint are rejected by the gate or, when they cut the corner only at batch sizes the gate does not use, by the
trace of their first warm-up batch on the run's model; the leaderboard gives every task a target verdict."""

import json
from collections import Counter

import pytest
from generating import SEED_KEY, rows, submission
from target_programs import ALL_FIXED, PROGRAMS, baseline_source, target_catalog

from accelbench import schema, task_facts
from accelbench.builder.generate import run_generate
from accelbench.builder.options import GenerateOptions
from accelbench.manifest import TARGET_METHOD
from accelbench.scorer import leaderboard_files
from accelbench.scorer.targets import VERDICTS

pytestmark = pytest.mark.slow

TASK = "smoke-sd15-ddim-8-speedup"
# Skips the unconditional branch only for one-image batches: the gate (2 and 3 images) never sees it.
GUIDANCE_AT_BATCH_ONE = baseline_source().replace(
    "        guidance_scale=GUIDANCE_SCALE,\n", "        guidance_scale=GUIDANCE_SCALE if len(prompts) > 1 else 1.0,\n")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("target")
    catalog = target_catalog(root, TASK, fixed=ALL_FIXED)
    folders = [submission(root / name, {TASK: source}) for name, source in (
        ("tome", PROGRAMS["ToMe (another method)"]()), ("smaller", PROGRAMS["a smaller UNet"]()),
        ("sly", GUIDANCE_AT_BATCH_ONE))]
    summary = run_generate(GenerateOptions(suite="smoke", out=root / "out", progress=False, tasks=[TASK],
                                           submissions=folders, limit=2, seed_key=SEED_KEY), catalog)
    return root / "out", summary, catalog.tasks[TASK].params


def test_the_reference_runs_like_a_gt_and_each_program_gets_the_status_it_earned(generated):
    out, summary, reference_params = generated
    statuses = Counter((row["variant"], row["status"]) for row in rows(out))
    assert statuses == {("baseline", "ok"): 8, ("gt", "ok"): 8, ("sub:tome", "ok"): 8, ("sub:smaller", "rejected"): 8,
                        ("sub:sly", "rejected"): 8}
    errors = {row["variant"]: row["error"] for row in rows(out) if row["status"] == schema.STATUS_REJECTED}
    assert errors["sub:smaller"].startswith("gate: constraints: call 1 of 4 (2 images): model: ")
    assert errors["sub:sly"].startswith("gate (real model): constraints: guidance: denoiser call 1 ran a latent "
                                        "batch of 1 for 1 images, the baseline [2]")
    assert summary.reference_failed_rows == 0
    # the reference's rows name its method; a submission's, whose method is its own, do not name the reference's
    methods = {(row["variant"], row["method"], row["method_params"]) for row in rows(out) if row["task_id"]}
    assert methods == {("gt", "deepcache", json.dumps(reference_params, sort_keys=True))} | {
        (variant, TARGET_METHOD, "{}") for variant in ("sub:tome", "sub:smaller", "sub:sly")}
    facts = task_facts.read(out)[0][TASK]
    assert facts["level"] == 4 and facts["target"]["fixed"] == list(ALL_FIXED)


def test_scoring_gives_every_target_task_result_a_verdict(generated):
    from accelbench.scorer.score import score_dataset

    out, _, _ = generated
    score_dataset(out, device="cpu", num_workers=0, progress=False)
    tasks = {row["variant"]: row for row in leaderboard_files.read_task_results(out)}
    assert {row["target_verdict"] for row in tasks.values()} <= set(VERDICTS)
    assert not tasks["sub:smaller"]["correct"] and tasks["sub:smaller"]["reason_kind"] == schema.STATUS_REJECTED
    honest = tasks["sub:tome"]
    assert honest["correct"] == (honest["target_verdict"] == "met")  # met or not: CPU timings decide
    assert honest["reason"] is None or honest["reason"].startswith("target: ")
    # the leaderboard groups a target task under what it asks for, for the reference and the submissions alike
    assert {(row["method"], row["method_params"]) for row in tasks.values()} == {(TARGET_METHOD, "{}")}
