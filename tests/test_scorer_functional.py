"""The metric core (accelbench.scorer.functional): pure numpy, checked against independent computations."""

import doctest

import numpy as np
import pytest

from accelbench.scorer import clip, functional, markdown


def test_docstring_examples():
    failures, tried = doctest.testmod(functional)
    assert tried >= 8 and failures == 0
    assert doctest.testmod(clip).failed == 0 and doctest.testmod(markdown).failed == 0


def test_clip_score_is_clamped_cosine_per_image():
    rng = np.random.default_rng(0)
    image, text = rng.normal(size=(50, 16)), rng.normal(size=(50, 16))
    cosine = np.array([a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(image, text)])
    scores = functional.clip_score(image, text)
    np.testing.assert_allclose(scores, 100 * np.clip(cosine, 0, None), atol=1e-9)
    assert (scores == 0).any() and (scores > 0).any()  # some pairs were negative and were clamped one by one


def test_clip_score_rejects_unpaired_embeddings():
    with pytest.raises(ValueError):
        functional.clip_score(np.ones((2, 4)), np.ones((3, 4)))


def test_psnr_and_ssim_follow_scikit_image_conventions():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    noisy = np.clip(image.astype(int) + rng.integers(-4, 5, size=image.shape), 0, 255).astype(np.uint8)
    mse = np.mean((image.astype(float) - noisy.astype(float)) ** 2)
    assert functional.psnr(noisy, image) == pytest.approx(10 * np.log10(255**2 / mse))
    assert functional.psnr(image, image) == float("inf")
    assert functional.ssim(image, image) == pytest.approx(1.0)
    assert 0 < functional.ssim(noisy, image) < 1


def test_ratio_of_sums_and_relative_loss():
    assert functional.ratio_of_sums(np.array([1.0, 3.0]), np.array([2.0, 2.0])) == pytest.approx(1.0)
    batched = functional.ratio_of_sums(np.array([[1.0, 3.0], [4.0, 4.0]]), np.array([[2.0, 2.0], [1.0, 1.0]]))
    np.testing.assert_allclose(batched, [1.0, 4.0])
    assert functional.relative_loss(np.array([20.0, 40.0]), np.array([18.0, 36.0])) == pytest.approx(0.1)


def test_bootstrap_ci_covers_the_true_ratio_of_noisy_samples():
    """Speedup-like case: baseline ~ 2 s, accelerated ~ 1 s per batch, true ratio of sums exactly 2."""
    covered = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        base = 2.0 * (1 + rng.normal(0, 0.1, size=60))
        variant = base / 2.0 * (1 + rng.normal(0, 0.05, size=60))  # per-batch noise on top of the pairing
        low, high = functional.bootstrap_ci(functional.ratio_of_sums, base, variant)
        assert low < functional.ratio_of_sums(base, variant) < high
        covered += low <= 2.0 <= high
    assert covered >= 34  # a 95 % interval: ~38 of 40 expected, 34 leaves room for chance


def test_unpaired_bootstrap_ci_of_a_difference_between_groups_of_other_sizes():
    """Two independent groups, 200 and 150 values: the CI of the difference of means matches the normal
    approximation's width and covers the true difference."""
    covered = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        first, second = rng.normal(0.0, 1.0, size=200), rng.normal(1.0, 1.0, size=150)
        low, high = functional.bootstrap_ci(lambda a, b, axis=-1: np.mean(a, axis=axis) - np.mean(b, axis=axis),
                                            first, second, paired=False)
        assert high - low == pytest.approx(2 * 1.96 * np.sqrt(1 / 200 + 1 / 150), rel=0.2)
        covered += low <= -1.0 <= high
    assert covered >= 34  # a 95 % interval: ~38 of 40 expected
    assert all(np.isnan(functional.bootstrap_ci(functional.ratio_of_sums, np.ones(5), np.ones(1), paired=False)))


def test_bootstrap_ci_is_reproducible_and_handles_tiny_samples():
    rng = np.random.default_rng(3)
    sample = rng.normal(size=30)
    assert functional.bootstrap_ci(functional.mean, sample) == functional.bootstrap_ci(functional.mean, sample)
    assert all(np.isnan(functional.bootstrap_ci(functional.mean, np.array([1.0]))))
    assert all(np.isnan(functional.bootstrap_ci(functional.ratio_of_sums, np.array([]), np.array([]))))
    assert functional.bootstrap_ci(functional.ratio_of_sums, np.ones(5), np.ones(5)) == (1.0, 1.0)
    with pytest.raises(ValueError):
        functional.bootstrap_ci(functional.ratio_of_sums, np.ones(5), np.ones(4))


# ---------------------------------------------------------------------------------------------------------
# The two-level (hierarchical) bootstrap of a speedup over repeats
# ---------------------------------------------------------------------------------------------------------


def simulated_coverage(repeats: int, between_to_within: float, datasets: int = 300, rounds: int = 12,
                       within_sd: float = 0.05, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """(two-level, one-level) coverage of the true speedup by 95 % CIs over seeded simulated datasets.

    A dataset: ``repeats`` repeats of ``rounds`` rounds; a round's baseline latency is 2 s with log-normal noise
    ``within_sd``, the variant's half of it with noise of its own and, per repeat, an offset (a fresh process's
    speed) whose SD is ``between_to_within`` x the SE a repeat's own rounds give. The truth is the speedup over
    infinitely many repeats and rounds, E(baseline) / E(variant). The README's coverage table is this function
    with ``datasets=1000, resamples=2000`` at each (repeats, between_to_within)."""
    rng = np.random.default_rng(seed)
    between_sd = between_to_within * within_sd / np.sqrt(rounds)
    base = 2.0 * np.exp(rng.normal(0.0, within_sd, (datasets, repeats, rounds)))
    offsets = rng.normal(0.0, between_sd, (datasets, repeats, 1))
    variant = base / 2.0 * np.exp(offsets + rng.normal(0.0, within_sd, (datasets, repeats, rounds)))
    truth = 2.0 * np.exp(-(between_sd ** 2 + within_sd ** 2) / 2.0)
    two_level = one_level = 0
    for index, (dataset_base, dataset_variant) in enumerate(zip(base, variant)):
        low, high = functional.hierarchical_bootstrap_ci(functional.ratio_of_sums, list(zip(dataset_base,
                                                         dataset_variant)), n_resamples=resamples, seed=index)
        two_level += low <= truth <= high
        low, high = functional.bootstrap_ci(functional.ratio_of_sums, dataset_base.ravel(), dataset_variant.ravel(),
                                            n_resamples=resamples, seed=index)
        one_level += low <= truth <= high
    return two_level / datasets, one_level / datasets


def test_two_level_interval_covers_run_to_run_scatter_where_the_one_level_one_does_not():
    """10 repeats of 12 rounds, the repeats' offsets twice as wide as a repeat's own rounds can tell: the
    two-level 95 % interval covers within a few points of 95 %, the one over pooled batches about 2 in 3."""
    two_level, one_level = simulated_coverage(repeats=10, between_to_within=2.0)
    assert abs(two_level - 0.95) <= 0.04, two_level
    assert one_level <= 0.8, one_level
    # Without run-to-run scatter both cover (the two-level one conservatively: it counts the rounds' noise twice).
    two_level, one_level = simulated_coverage(repeats=10, between_to_within=0.0, datasets=100)
    assert two_level >= 0.93 and one_level >= 0.88


def two_stage_reference(groups, resamples: int, rng) -> np.ndarray:
    """The two-stage percentile bootstrap written out one resample at a time, for groups of any sizes."""
    values = []
    for _ in range(resamples):
        drawn = [groups[index] for index in rng.integers(0, len(groups), len(groups))]
        units = [rng.integers(0, len(base), len(base)) for base, _ in drawn]
        values.append(sum(base[picked].sum() for (base, _), picked in zip(drawn, units))
                      / sum(variant[picked].sum() for (_, variant), picked in zip(drawn, units)))
    return np.quantile(values, [0.025, 0.975])


def test_two_level_interval_is_the_pooled_ratio_of_resampled_repeats():
    """Two repeats of one batch each: a resample pools (a, a), (a, b) or (b, b), so the bounds are the ratios of
    the two repeats themselves; groups of other sizes pool every unit they draw."""
    groups = [(np.array([2.0]), np.array([1.0])), (np.array([3.0]), np.array([2.0]))]
    assert functional.hierarchical_bootstrap_ci(functional.ratio_of_sums, groups) == (1.5, 2.0)
    rng = np.random.default_rng(4)
    uneven = [(2.0 * offset * np.exp(rng.normal(0, 0.1, size)), np.exp(rng.normal(0, 0.1, size)))
              for offset, size in ((1.0, 3), (1.2, 7), (0.9, 2), (1.1, 5))]
    low, high = functional.hierarchical_bootstrap_ci(functional.ratio_of_sums, uneven, n_resamples=20000)
    np.testing.assert_allclose((low, high), two_stage_reference(uneven, 20000, rng), rtol=0.01)
    assert functional.hierarchical_bootstrap_ci(functional.ratio_of_sums, uneven, n_resamples=20000) == (low, high)
    assert functional.hierarchical_bootstrap_ci(functional.ratio_of_sums, uneven, seed=1) != (low, high)
    zero = [(np.zeros(2), np.zeros(2)), (np.ones(2), np.ones(2))]  # 0/0 in the resamples that draw only the first
    assert all(np.isnan(functional.hierarchical_bootstrap_ci(functional.ratio_of_sums, zero)))
    for bad in ([(np.ones(2), np.ones(3))], [(np.ones(2), np.ones(2)), (np.ones(2),)], [(np.ones(0), np.ones(0))]):
        with pytest.raises(ValueError):
            functional.hierarchical_bootstrap_ci(functional.ratio_of_sums, bad)


def test_speedup_ratio_is_a_ratio_of_two_speedups():
    base, a, b = np.array([2.0, 4.0]), np.array([1.0, 2.0]), np.array([2.0, 2.0])
    assert functional.speedup_ratio(base, a, base, b) == pytest.approx(2.0 / 1.5)
    batched = functional.speedup_ratio(np.ones((3, 2)), np.ones((3, 2)), np.ones((3, 2)), np.full((3, 2), 2.0))
    np.testing.assert_allclose(batched, [2.0, 2.0, 2.0])
