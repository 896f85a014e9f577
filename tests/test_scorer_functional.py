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
