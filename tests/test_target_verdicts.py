"""The verdict on a target task: quality within the budget relative to the live reference, then speed against
the target with the rounds' interval: met, not met (named: quality or speed), not decidable at this n."""

import pytest

from accelbench.scorer.targets import NO_TARGET, NOT_DECIDABLE, NOT_MET, target_verdict

BUDGET = {"psnr_db": 1.0, "clip_pct": 1.0}
SPEEDUP_TARGET = {"speedup": 2.0, "latency_ms": {}, "budget": BUDGET}
LATENCY_TARGET = {"speedup": None, "latency_ms": {"h200": 900.0, "h100": 1200.0}, "budget": BUDGET}
REFERENCE = {"psnr": 24.0, "quality_loss": 0.02}


def program(psnr=23.5, loss=0.025, speedup=(2.3, 2.1, 2.5, 12), latency=(800.0, 780.0, 820.0, 12)) -> dict:
    return {"psnr": psnr, "quality_loss": loss,
            **dict(zip(("speedup", "speedup_ci_low", "speedup_ci_high", "speedup_n"), speedup)),
            **dict(zip(("latency_ms", "latency_ms_ci_low", "latency_ms_ci_high", "latency_ms_n"), latency))}


def verdict(target=SPEEDUP_TARGET, submission=None, reference=REFERENCE, device="NVIDIA H200"):
    return target_verdict(target, submission or program(), reference, device)


def test_an_honest_program_within_budget_and_beyond_the_target_meets_it():
    found = verdict()
    assert found.met and found.reason == "speedup 2.3× [2.1, 2.5] (n=12), at least 2×"
    assert verdict(submission=program(psnr=float("inf"), loss=0.0)).met  # the baseline's own images, faster


@pytest.mark.parametrize("submission, reason", [
    (program(psnr=22.5), "quality: PSNR to the baseline's images 22.50 dB, below the reference's 24.00 dB minus 1 dB"),
    (program(loss=0.031), "quality: CLIP score loss 3.10 %, above the reference's 2.00 % plus 1 %"),
])
def test_fast_enough_but_over_the_quality_budget_is_not_met_on_quality(submission, reason):
    found = verdict(submission=submission)
    assert (found.verdict, found.reason) == (NOT_MET, reason)


def test_within_quality_but_too_slow_is_not_met_on_speed():
    found = verdict(submission=program(speedup=(1.6, 1.5, 1.7, 12)))
    assert (found.verdict, found.reason) == (NOT_MET, "speed: speedup 1.6× [1.5, 1.7] (n=12), the target is at "
                                                      "least 2×")


@pytest.mark.parametrize("speedup, why", [((2.0, 1.9, 2.1, 12), "straddles the target, at least 2×, at this n"),
                                          ((2.6, None, None, 3), "too few batches to tell it from at least 2×")])
def test_an_interval_across_the_target_or_none_at_all_is_not_decidable(speedup, why):
    found = verdict(submission=program(speedup=speedup))
    assert found.verdict == NOT_DECIDABLE and found.reason.startswith("speed: ") and found.reason.endswith(why)


def test_the_budget_is_relative_to_the_live_reference_so_it_holds_on_any_weights():
    submission = program(psnr=22.0, loss=0.03)
    assert verdict(submission=submission, reference={"psnr": 22.5, "quality_loss": 0.025}).met
    assert verdict(submission=submission, reference={"psnr": 24.0, "quality_loss": 0.025}).verdict == NOT_MET
    # Random weights: every PSNR is low and CLIP losses are large, yet the same relative reading decides.
    random_weights = program(psnr=8.6, loss=0.31)
    assert verdict(submission=random_weights, reference={"psnr": 9.1, "quality_loss": 0.305}).met
    assert verdict(submission=random_weights, reference={"psnr": 9.1, "quality_loss": 0.29}).verdict == NOT_MET


def test_a_latency_target_is_judged_on_the_runs_gpu_class_and_absent_elsewhere():
    assert verdict(LATENCY_TARGET).reason == "latency per image 800 ms [780, 820] (n=12), at most 900 ms"
    h100 = verdict(LATENCY_TARGET, program(latency=(1250.0, 1200.0, 1300.0, 12)), device="NVIDIA H100 80GB HBM3")
    assert h100.verdict == NOT_DECIDABLE and "straddles the target, at most 1200 ms" in h100.reason
    slow = verdict(LATENCY_TARGET, program(latency=(1000.0, 950.0, 1050.0, 12)))
    assert (slow.verdict, slow.reason) == (NOT_MET, "speed: latency per image 1000 ms [950, 1050] (n=12), the "
                                                    "target is at most 900 ms")
    elsewhere = verdict(LATENCY_TARGET, device="NVIDIA A100-SXM4-80GB")
    assert (elsewhere.verdict, elsewhere.reason) == (NO_TARGET, "speed: this task has no latency target on NVIDIA "
                                                                "A100-SXM4-80GB (targets: H200 900 ms, H100 1200 ms)")


def test_quality_is_judged_before_speed_and_needs_scores():
    assert verdict(submission=program(psnr=10.0, speedup=(1.1, 1.0, 1.2, 12))).reason.startswith("quality:")
    unscored = verdict(submission={**program(), "psnr": None})
    assert (unscored.verdict, unscored.reason) == (NOT_DECIDABLE, "quality: the submission has no psnr (score the "
                                                                  "dataset first: accelbench score)")


def test_an_undefined_clip_loss_on_both_sides_leaves_psnr_to_decide():
    undefined = {"psnr": 24.0, "quality_loss": None}
    assert verdict(submission=program(loss=None), reference=undefined).met
    assert verdict(submission=program(psnr=20.0, loss=None), reference=undefined).reason.startswith("quality: PSNR")
    assert verdict(submission=program(loss=None)).verdict == NOT_DECIDABLE  # the reference has one: not comparable
