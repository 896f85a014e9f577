"""The metric core: pure numpy functions (torchmetrics style), no models, no files.

Every number in a report comes from one of these, so each is small, documented and tested on its own.
scikit-image and scipy are imported inside the functions that need them: importing this module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

CONFIDENCE_LEVEL = 0.95
MIN_CI_UNITS = 5  # no confidence interval from fewer resampling units: the report shows "n/a (n=...)" instead
# The same rule one level up: a two-level CI only from this many repeats (fresh sets of worker processes). From
# 3 the two-stage percentile interval covered 78-85 % where run-to-run scatter was 2-4x what a run's own rounds
# show (a seeded simulation; README, Score).
MIN_CI_REPEATS = 5
BOOTSTRAP_RESAMPLES = 2000  # percentile bounds settle to ~0.01 of their width; 9999 costs 5x for no visible change
BOOTSTRAP_SEED = 0  # fixed: rebuilding a report from the same scores gives the same intervals


def clip_score(image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
    """Per-image CLIP score ``100 * max(cos(image, text), 0)`` of paired rows.

    Row ``i`` of ``image_embeddings`` is compared with row ``i`` of ``text_embeddings`` (both ``[N, D]``,
    normalised here, so raw model outputs are fine). Each image is clamped on its own, as DeepCache's
    evaluation script does; torchmetrics' ``CLIPScore`` instead clamps the *mean* of the unclamped scores, which
    differs only when some cosine is negative (never for a trained CLIP on its own prompt). Computed in float64.

    Example:
        >>> image = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> text = np.array([[2.0, 0.0], [0.0, -1.0], [1.0, 0.0]])
        >>> clip_score(image, text).round(4)
        array([100.    ,   0.    ,  70.7107])
    """
    image = np.asarray(image_embeddings, dtype=np.float64)
    text = np.asarray(text_embeddings, dtype=np.float64)
    if image.shape != text.shape or image.ndim != 2:
        raise ValueError(f"expected two [N, D] arrays of the same shape, got {image.shape} and {text.shape}")
    cosine = (image * text).sum(axis=1) / (np.linalg.norm(image, axis=1) * np.linalg.norm(text, axis=1))
    return 100.0 * np.maximum(cosine, 0.0)


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 ``[H, W, C]`` images (scikit-image, ``data_range=255``).

    Identical images give ``inf`` (the mean squared error is 0), without a division warning.

    Example:
        >>> a = np.zeros((8, 8, 3), np.uint8)
        >>> b = a.copy(); b[0, 0, 0] = 255
        >>> round(psnr(b, a), 2), psnr(a, a)
        (22.83, inf)
    """
    from skimage.metrics import peak_signal_noise_ratio

    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(reference, image, data_range=255))


def ssim(image: np.ndarray, reference: np.ndarray) -> float:
    """Structural similarity of two uint8 ``[H, W, C]`` images (scikit-image, ``channel_axis=-1``,
    ``data_range=255``, default 7x7 window: images must be at least 7 pixels on each side).

    Example:
        >>> a = np.tile(np.arange(16, dtype=np.uint8)[:, None, None] * 16, (1, 16, 3))
        >>> ssim(a, a), ssim(255 - a, a) < 0
        (1.0, True)
    """
    from skimage.metrics import structural_similarity

    return float(structural_similarity(reference, image, channel_axis=-1, data_range=255))


def ratio_of_sums(numerator: np.ndarray, denominator: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """``sum(numerator) / sum(denominator)`` along ``axis`` (vectorised, so it is also a bootstrap statistic).

    A speedup is the ratio of summed latencies rather than the mean of per-batch ratios: it is the ratio of
    total times, and a few noisy short batches cannot dominate it.

    Example:
        >>> float(ratio_of_sums(np.array([2.0, 4.0]), np.array([1.0, 1.0])))
        3.0
    """
    return np.sum(numerator, axis=axis) / np.sum(denominator, axis=axis)


def speedup_ratio(base_a: np.ndarray, latency_a: np.ndarray, base_b: np.ndarray, latency_b: np.ndarray,
                  axis: int = -1) -> np.ndarray | float:
    """The ratio of two speedups, ``ratio_of_sums(base_a, latency_a) / ratio_of_sums(base_b, latency_b)``, of
    paired batches (the same rounds of one task): above 1 when A is faster. A function of sums, so it is also a
    statistic of :func:`hierarchical_bootstrap_ci`.

    Example:
        >>> one = np.array([2.0, 2.0])
        >>> float(speedup_ratio(one, np.array([1.0, 1.0]), one, np.array([1.25, 1.25])))  # 2x against 1.6x
        1.25
    """
    return ratio_of_sums(base_a, latency_a, axis=axis) / ratio_of_sums(base_b, latency_b, axis=axis)


def relative_loss(reference: np.ndarray, value: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """``(mean(reference) - mean(value)) / mean(reference)`` of paired samples: the quality loss, where
    ``reference`` are the baseline images' CLIP scores and ``value`` those of the matched accelerated images.

    Example:
        >>> round(float(relative_loss(np.array([30.0, 30.0]), np.array([27.0, 30.0]))), 6)
        0.05
    """
    return 1.0 - ratio_of_sums(value, reference, axis=axis)


def mean(values: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Arithmetic mean along ``axis``; the statistic of :func:`bootstrap_ci` for one sample.

    Example:
        >>> float(mean(np.array([1.0, 2.0, 6.0])))
        3.0
    """
    return np.mean(values, axis=axis)


def cluster_sums(values: np.ndarray, clusters) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums of ``values`` and the number of values in each cluster, clusters in sorted order.

    A cluster bootstrap resamples clusters, not values: the same (prompt, seed) rendered at batch sizes 1 and 4
    is one sample twice over, not two independent samples. Resampling the clusters' ``(sum, count)`` pairs and
    taking ``ratio_of_sums(sums, counts)`` is the mean over every value of the resampled clusters, exactly; a
    paired ratio (quality loss) resamples two such sums with the same indices. ``clusters`` are any hashable
    labels (tuples included), one per value.

    Example:
        >>> sums, counts = cluster_sums(np.array([1.0, 3.0, 10.0]), [("p0", 0), ("p0", 0), ("p1", 0)])
        >>> sums.tolist(), counts.tolist(), float(ratio_of_sums(sums, counts))
        ([4.0, 10.0], [2.0, 1.0], 4.666666666666667)
    """
    values = np.asarray(values, dtype=np.float64)
    labels = {label: index for index, label in enumerate(sorted(set(clusters)))}
    codes = np.fromiter((labels[label] for label in clusters), dtype=np.int64, count=len(values))
    return (np.bincount(codes, weights=values, minlength=len(labels)),
            np.bincount(codes, minlength=len(labels)).astype(np.float64))


def fast_p(correct: np.ndarray, speedup: np.ndarray, p=1.0, axis: int = -1) -> np.ndarray | float:
    """KernelBench's fast_p: the fraction of ALL tasks that are correct AND faster than ``p`` x the baseline.

    Failures stay in the denominator: an incorrect task, or a correct one without a measured speedup (NaN),
    is never fast. The comparison is strict (a speedup of exactly ``p`` is not fast), so fast_0 is the fraction
    of correct tasks with a speedup. ``p`` may be an array: one fraction per threshold (the fast_p curve).

    Example:
        >>> correct = np.array([True, True, True, False])
        >>> speedup = np.array([2.0, 1.0, np.nan, 3.0])  # the last is fast but incorrect; NaN: not timed
        >>> float(fast_p(correct, speedup, 0.0)), float(fast_p(correct, speedup, 1.0))
        (0.5, 0.25)
        >>> fast_p(correct, speedup, np.array([0.5, 1.5, 2.0])).tolist()
        [0.5, 0.25, 0.0]
    """
    correct = np.asarray(correct, dtype=bool)
    speedup = np.asarray(speedup, dtype=np.float64)
    thresholds = np.asarray(p, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        fast = correct[..., None, :] & (speedup[..., None, :] > thresholds[..., None])  # [..., thresholds, tasks]
    result = np.mean(fast, axis=axis)
    return result if thresholds.ndim else result[..., 0] if np.ndim(result) > 1 else float(result[0])


def geometric_mean(values: np.ndarray, floor: float = 0.0, axis: int = -1) -> np.ndarray | float:
    """``exp(mean(log(max(values, floor))))``: the geometric mean of speedups, each at least ``floor`` so
    that one degenerate value cannot pull the mean to zero.

    Example:
        >>> round(float(geometric_mean(np.array([2.0, 8.0]))), 6)
        4.0
        >>> round(float(geometric_mean(np.array([4.0, 1e-9]), floor=0.25)), 6)  # 1e-9 counts as 0.25
        1.0
    """
    return np.exp(np.mean(np.log(np.maximum(np.asarray(values, dtype=np.float64), floor)), axis=axis))


def bootstrap_ci(statistic: Callable[..., np.ndarray], *samples: np.ndarray, paired: bool = True,
                 confidence_level: float = CONFIDENCE_LEVEL, n_resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``statistic(*samples)`` (``scipy.stats.bootstrap``).

    Several samples are resampled *paired* (the same indices for all), so they must have equal lengths: a
    speedup resamples (baseline batch, accelerated batch) pairs, a quality loss (baseline image, accelerated
    image) pairs. ``paired=False`` resamples each sample on its own, so lengths may differ: independent
    groups, such as a difference between two groups of runs. ``statistic`` must be vectorised over its last axis
    (like :func:`ratio_of_sums`). The
    resampling generator is seeded, so the same samples always give the same interval. Percentile bounds, not
    BCa: BCa is undefined for degenerate samples (e.g. bit-identical latencies), where this returns the value
    itself. Fewer than 2 samples, or a statistic undefined in some resamples (0/0), give ``(nan, nan)``.

    Example:
        >>> low, high = bootstrap_ci(mean, np.arange(100.0))
        >>> bool(low < 49.5 < high), bootstrap_ci(mean, np.array([1.0]))
        (True, (nan, nan))
    """
    import warnings

    from scipy.stats import DegenerateDataWarning, bootstrap

    arrays = [np.asarray(sample, dtype=np.float64) for sample in samples]
    if any(array.ndim != 1 for array in arrays) or (paired and len({array.shape for array in arrays}) != 1):
        raise ValueError("bootstrap samples must be 1-D" + (" and of equal length" if paired else ""))
    if min(array.size for array in arrays) < 2:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        # A statistic undefined in some resamples (0/0) makes scipy warn and return NaN bounds: NaN is the answer.
        warnings.simplefilter("ignore", DegenerateDataWarning)
        result = bootstrap(tuple(arrays), lambda *resampled, axis=-1: statistic(*resampled, axis=axis),
                           n_resamples=n_resamples, paired=paired and len(arrays) > 1, vectorized=True,
                           confidence_level=confidence_level, method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def expanded_confidence_level(confidence_level: float, n: int) -> float:
    """The level at which a percentile bootstrap interval of a mean of ``n`` units is about as wide as the
    ``confidence_level`` t-interval: the *expanded percentile interval* (Hesterberg, "What Teachers Should Know
    About the Bootstrap", 2015). A percentile interval from few units is too narrow, by sqrt((n-1)/n) in the
    spread and by z against t in the quantile: in a seeded simulation, a 95 % interval called identical programs
    apart on 5 tasks 15 % of the time, on 10 tasks 10 %; at the expanded level 8 % and 6 % (at 20 tasks 5-6 %
    either way).

    Example:
        >>> round(expanded_confidence_level(0.95, 5), 4), round(expanded_confidence_level(0.95, 100), 4)
        (0.9981, 0.9539)
    """
    from scipy.stats import norm, t

    tail = (1.0 - confidence_level) / 2.0
    return float(1.0 - 2.0 * norm.sf(np.sqrt(n / (n - 1.0)) * t.ppf(1.0 - tail, n - 1)))


def hierarchical_bootstrap_ci(statistic: Callable[..., np.ndarray], groups, confidence_level: float = CONFIDENCE_LEVEL,
                              n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
                              ) -> tuple[float, float]:
    """Two-stage percentile bootstrap confidence interval of ``statistic`` over groups of paired samples.

    ``groups``: one tuple of paired 1-D arrays per group (a repeat: a fresh set of worker processes), e.g.
    ``(baseline latencies, variant latencies)`` of its batches; the arrays of a group have one length, groups
    may have other lengths. Each resample draws as many groups as there are, with replacement, then within each
    drawn group as many units as it has, with replacement: what varies between repeats (a lane's process speed)
    and between rounds within one both enter the interval. A one-level bootstrap over the pooled units sees the
    second only, and from one run it cannot see the first at all.

    ``statistic(*sums, axis=-1)`` is applied to the per-group sums of each sample (resamples x groups), so it
    must be a function of sums, like :func:`ratio_of_sums` or :func:`speedup_ratio`: the pooled ratio of sums
    over every resampled unit comes out exactly (for a mean, pass ``(values, ones)`` as :func:`cluster_sums`
    does). Vectorised (one ``[resamples, groups, largest group]`` draw) and seeded, so the same groups always
    give the same interval. Fewer than 2 groups, or a statistic undefined in some resample, give ``(nan, nan)``.

    Resampling both stages counts the rounds' noise twice (once in the spread of the groups' sums, once
    within): where it dominates, the interval is conservative (a seeded simulation covered 97-99 %); where the
    between-repeat scatter dominates, it is as narrow as percentile intervals from few units are (87-90 % at 5
    groups, 91-94 % at 10, 94-95 % at 20; README, Score).

    Example:
        >>> base, rounds = np.full(4, 2.0), np.array([0.98, 1.02, 1.0, 1.0])  # a repeat's 4 batches
        >>> groups = [(base, offset * rounds) for offset in (0.9, 1.0, 1.1, 0.95, 1.05)]  # 5 repeats, 2x
        >>> [round(bound, 2) for bound in hierarchical_bootstrap_ci(ratio_of_sums, groups)]
        [1.88, 2.13]
        >>> pooled = [np.concatenate(sample) for sample in zip(*groups)]  # the one-level interval: narrower
        >>> [round(bound, 2) for bound in bootstrap_ci(ratio_of_sums, *pooled)]
        [1.94, 2.06]
        >>> hierarchical_bootstrap_ci(ratio_of_sums, groups[:1])
        (nan, nan)
    """
    arrays = [[np.asarray(sample, dtype=np.float64) for sample in group] for group in groups]
    if len({len(group) for group in arrays}) > 1 or any(
            sample.ndim != 1 or sample.shape != group[0].shape for group in arrays for sample in group):
        raise ValueError("every group needs the same number of paired 1-D samples, of one length within a group")
    if any(group[0].size == 0 for group in arrays):
        raise ValueError("every group needs at least one unit")
    if len(arrays) < 2:
        return float("nan"), float("nan")
    sizes = np.array([group[0].size for group in arrays])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pooled = [np.concatenate(samples) for samples in zip(*arrays)]  # sample i of every group, end to end
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(arrays), size=(n_resamples, len(arrays)))  # stage 1: groups
    drawn_sizes = sizes[drawn][..., None]
    # Stage 2: as many units as the drawn group has; draws past its size (a smaller group) are masked out.
    units = rng.integers(0, drawn_sizes, size=(n_resamples, len(arrays), sizes.max()))
    kept = np.arange(sizes.max()) < drawn_sizes
    index = starts[drawn][..., None] + units
    sums = [np.where(kept, sample[index], 0.0).sum(axis=-1) for sample in pooled]
    with np.errstate(divide="ignore", invalid="ignore"):
        values = statistic(*sums, axis=-1)
    if not np.all(np.isfinite(values)):
        return float("nan"), float("nan")
    tail = (1.0 - confidence_level) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def estimate(statistic: Callable[..., np.ndarray], *samples, n_resamples: int = BOOTSTRAP_RESAMPLES
             ) -> tuple[float | None, float | None, float | None, int]:
    """(value, CI low, CI high, n) of ``statistic`` on paired samples, one per resampling unit
    (:func:`bootstrap_ci`): None where the value is undefined (0/0), no CI from fewer than
    :data:`MIN_CI_UNITS` units. What every CI of a summary row comes from.

    Example:
        >>> value, low, high, n = estimate(ratio_of_sums, [2.0, 2.2, 1.9, 2.1, 2.0], [1.0] * 5)
        >>> round(value, 2), bool(low < value < high), n
        (2.04, True, 5)
        >>> estimate(ratio_of_sums, [2.0, 2.2], [1.0, 1.0]), estimate(ratio_of_sums, [0.0] * 5, [0.0] * 5)
        ((2.1, None, None, 2), (None, None, None, 5))
    """
    n = len(samples[0])
    if not n:
        return None, None, None, 0
    arrays = [np.asarray(sample, dtype=np.float64) for sample in samples]
    # 0/0 happens (a random-weight CLIP clamps every baseline image to 0): the value is then undefined.
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(statistic(*arrays))
        if not math.isfinite(value):
            return None, None, None, n
        if n < MIN_CI_UNITS:
            return value, None, None, n
        low, high = bootstrap_ci(statistic, *arrays, n_resamples=n_resamples)
    return value, _finite_or_none(low), _finite_or_none(high), n


def estimate_over_repeats(statistic: Callable[..., np.ndarray], groups, n_resamples: int = BOOTSTRAP_RESAMPLES
                          ) -> tuple[float | None, float | None, float | None, int, int]:
    """(value, CI low, CI high, units, repeats) of ``statistic`` (a function of sums: :func:`ratio_of_sums`,
    :func:`speedup_ratio`) on paired samples grouped by repeat: per repeat, one tuple of paired values per unit
    (``pairing.by_repeat``). The value pools every unit. The CI is two-level (:func:`hierarchical_bootstrap_ci`)
    from :data:`MIN_CI_REPEATS` repeats; with fewer it is one-level over the pooled units (:func:`estimate`),
    which covers the rounds of the run(s) only.

    Example:
        >>> repeat = [(2.0, 1.0), (2.1, 1.0), (1.9, 1.0)]  # (baseline, variant) latency of 3 batches
        >>> value, low, high, units, repeats = estimate_over_repeats(ratio_of_sums, [repeat] * 2)
        >>> round(value, 2), units, repeats, bool(low < value < high)  # 2 repeats: one-level over 6 batches
        (2.0, 6, 2, True)
        >>> slower = [(base, latency * 1.1) for base, latency in repeat]
        >>> value, low, high, units, repeats = estimate_over_repeats(ratio_of_sums, [repeat, slower] * 3)
        >>> units, repeats, round(low, 2), round(high, 2)  # 6 repeats: two-level, between 1.82x and 2x
        (18, 6, 1.83, 1.99)
    """
    groups = [group for group in groups if group]
    units = [unit for group in groups for unit in group]
    if len(groups) < MIN_CI_REPEATS:
        return (*(estimate(statistic, *zip(*units), n_resamples=n_resamples) if units else (None, None, None, 0)),
                len(groups))
    arrays = [np.asarray(sample, dtype=np.float64) for sample in zip(*units)]
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(statistic(*arrays))
    if not math.isfinite(value):
        return None, None, None, len(units), len(groups)
    low, high = hierarchical_bootstrap_ci(statistic, [tuple(zip(*group)) for group in groups],
                                          n_resamples=n_resamples)
    return value, _finite_or_none(low), _finite_or_none(high), len(units), len(groups)
