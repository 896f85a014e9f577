"""Speedups over repeats (fresh sets of worker processes, column ``repeat``): a batch per repeat, the two-level CI
from MIN_CI_REPEATS repeats, the one-level one (and its caveat) below, and datasets written before the column.

Rows come from tests/factories.py: the smoke setting's baseline and its DeepCache task (FAST), copied into
repeats by ``repeated`` with the GT's latencies moved per repeat, as a lane's process speed moves between runs.
"""

import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from factories import FAST, PROMPTS, SETTING, dataset_rows, repeated, shard_path, write_dataset

from accelbench import schema
from accelbench.scorer import aggregate, functional, markdown, pairing

OFFSETS = (1.0, 1.15, 0.9, 1.1, 0.95, 1.2)  # a repeat's GT latency relative to the first's


def timed_in_repeats(offsets=OFFSETS) -> list[dict]:
    """The baseline and FAST in ``len(offsets)`` repeats, FAST's batches slower or faster by each repeat's offset,
    and by a little per batch (so the rounds within a repeat differ too)."""
    rows = repeated(dataset_rows((SETTING, FAST)), len(offsets))
    for row in rows:
        if row["variant"] == schema.GT:
            jitter = 1.0 + 0.01 * ((row["batch_index"] + row["batch_size"]) % 3 - 1)
            for column in ("batch_latency_s", "image_latency_s", "denoise_s"):
                row[column] *= OFFSETS[row["repeat"]] * jitter
    return rows


def fast_summary(rows: list[dict]) -> dict:
    pooled, _ = aggregate.summarize(rows, n_resamples=500)
    [summary] = [row for row in pooled if row["variant"] == schema.GT]
    return summary


def test_batch_key_holds_the_repeat_and_reads_null_as_repeat_0():
    first, second = (dict(row, repeat=repeat) for row, repeat in zip(dataset_rows((FAST,))[:2], (None, 1)))
    second["batch_index"] = first["batch_index"]
    assert pairing.batch_key(first) == (0, 0, 1, 0) and pairing.batch_key(second) == (1, 0, 1, 0)
    assert pairing.by_repeat({(1, 0, 1, 0): "b", (0, 0, 1, 1): "a2", (0, 0, 1, 0): "a1"}) == [["a1", "a2"], ["b"]]


def test_the_same_batch_in_two_repeats_is_two_samples_each_against_its_own_round():
    rows = repeated(dataset_rows((SETTING, FAST)), 2)
    for row in rows:
        if row["repeat"] == 1:  # the second repeat's baseline ran slower; FAST's batches as before
            row["baseline_latency_s"] *= 1.5
    pairs = pairing.paired_latencies([r for r in rows if r["variant"] == schema.GT],
                                     [r for r in rows if r["variant"] == schema.BASELINE])
    assert len(pairs) == 12  # 6 batches (4 at batch size 1, 2 at 2) in each repeat
    summary = fast_summary(rows)
    assert (summary["speedup_n"], summary["speedup_repeats"]) == (12, 2)
    assert summary["speedup"] == pytest.approx(14 * 2.5 / 12)  # (4 x 2 + 2 x 3) s of baseline a repeat, x 1 and 1.5


def test_speedup_ci_is_two_level_from_five_repeats_and_covers_their_scatter():
    rows = timed_in_repeats()
    summary = fast_summary(rows)
    assert (summary["speedup_n"], summary["speedup_repeats"]) == (36, 6)
    gt = [r for r in rows if r["variant"] == schema.GT]
    by_repeat = pairing.by_repeat(pairing.paired_latencies(gt, [r for r in rows if r["variant"] == schema.BASELINE]))
    per_repeat = [functional.ratio_of_sums(*np.array(group).T) for group in by_repeat]
    pooled = np.array([pair for group in by_repeat for pair in group]).T
    one_level = functional.bootstrap_ci(functional.ratio_of_sums, *pooled, n_resamples=500)
    low, high = summary["speedup_ci_low"], summary["speedup_ci_high"]
    assert (low, high) == functional.hierarchical_bootstrap_ci(
        functional.ratio_of_sums, [tuple(np.array(group).T) for group in by_repeat], n_resamples=500)
    # The repeats' scatter resampled as 6 units, not as 36 independent batches: half as wide again.
    assert high - low > 1.4 * (one_level[1] - one_level[0])
    assert low < summary["speedup"] < high and low < np.median(per_repeat) < high
    assert summary["denoise_speedup_repeats"] == 6 and summary["denoise_speedup_ci_low"] < summary["denoise_speedup"]
    [baseline] = [r for r in aggregate.summarize(rows, n_resamples=50)[0] if r["variant"] == schema.BASELINE]
    assert (baseline["speedup"], baseline["speedup_n"], baseline["speedup_repeats"]) == (1.0, 36, 6)
    assert markdown.with_ci(summary, "speedup", suffix="×").endswith("(n=36 in 6 repeats)")
    assert markdown.interval_caveats([summary]) == [
        "Speedup CIs are two-level (6 repeats, each a fresh set of worker processes, then the batches within each): "
        "they cover how a speedup moves between runs as well as between rounds."]


def test_fewer_than_five_repeats_give_the_one_level_ci_and_say_so():
    rows = timed_in_repeats(OFFSETS[:4])
    summary = fast_summary(rows)
    pairs = pairing.paired_latencies([r for r in rows if r["variant"] == schema.GT],
                                     [r for r in rows if r["variant"] == schema.BASELINE])
    base, latency = np.array(list(pairs.values())).T
    assert (summary["speedup_n"], summary["speedup_repeats"]) == (24, 4)
    assert (summary["speedup_ci_low"], summary["speedup_ci_high"]) == functional.bootstrap_ci(
        functional.ratio_of_sums, base, latency, n_resamples=500)
    [caveat] = markdown.interval_caveats([summary])
    assert caveat.startswith("Speedup CIs cover the rounds of their runs only (4 repeats or fewer: 5 are needed")
    one_run = fast_summary(dataset_rows((SETTING, FAST)))
    assert one_run["speedup_repeats"] == 1
    [caveat] = markdown.interval_caveats([one_run, summary])  # every row one-level: no count of rows
    assert caveat.startswith("Speedup CIs cover the rounds of their runs only (4 repeats or fewer")
    assert markdown.interval_caveats([one_run])[0].startswith("Speedup CIs cover the rounds of one run only:")
    two_level = fast_summary(timed_in_repeats())
    assert markdown.interval_caveats([one_run, two_level])[0].startswith(
        "1 of 2 task × variant rows have speedup CIs that cover the rounds of one run only")


def test_a_dataset_written_before_repeats_reads_as_one_repeat(tmp_path):
    directory = write_dataset(tmp_path / "ds", units=(SETTING, FAST))
    for unit in (SETTING, FAST):
        path = shard_path(directory, unit)
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(["repeat"]), path)  # as generate wrote it before the column
        assert "repeat" not in pq.read_schema(path).names
    rows = aggregate.load_generations(directory)
    assert {row["repeat"] for row in rows} == {None} and len(rows) == 2 * 2 * len(PROMPTS)
    summary = fast_summary(rows)
    assert (summary["speedup_n"], summary["speedup_repeats"]) == (6, 1)
    assert summary["speedup"] == pytest.approx(14 / 6) and not math.isnan(summary["speedup_ci_low"])
