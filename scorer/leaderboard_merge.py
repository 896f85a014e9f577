"""Merging the leaderboard results of several scored datasets of one suite (``accelbench leaderboard DIR...``):
the union of their task results, refused for datasets of different suites and, unless told to allow them,
timed on different GPU models or against different baseline programs."""

from __future__ import annotations

from pathlib import Path

from accelbench import dataset, schema
from accelbench.scorer import functional
from accelbench.scorer.leaderboard import Leaderboard, LeaderboardError, build
from accelbench.scorer.leaderboard_files import read_meta, read_task_results


def merge(directories: list[Path], fast_p=schema.DEFAULT_FAST_P, allow_mixed: bool = False,
          n_resamples: int = functional.BOOTSTRAP_RESAMPLES) -> Leaderboard:
    """One leaderboard from the task results of several datasets of one suite.

    Refuses (:class:`LeaderboardError`) datasets of different suites, and unless ``allow_mixed`` timings from
    different GPU models (``device_name``) or against different baseline programs of a setting. A (variant, task)
    present in several datasets is taken from the first (a note counts the others)."""
    metas, results, notes = [], [], []
    seen: dict[tuple[str, str], str] = {}
    duplicates = 0
    for directory in map(Path, directories):
        dataset.read_manifest(directory)
        meta = read_meta(directory)["meta"]
        metas.append((directory, meta))
        for result in read_task_results(directory):
            key = (result["variant"], result["task_id"])
            if key in seen:
                duplicates += 1
                continue
            seen[key] = str(directory)
            results.append({**result, "dataset": str(directory)})
    _check_mergeable(metas, allow_mixed)
    if duplicates:
        notes.append(f"{duplicates} (variant, task) result(s) appear in more than one dataset; the first "
                     f"dataset's were kept.")
    if allow_mixed and len({tuple(meta["device_names"]) for _, meta in metas}) > 1:
        notes.append("Merged with --allow-mixed: timings come from different GPU models (" + ", ".join(
            sorted({name for _, meta in metas for name in meta["device_names"]})) + "); speedups are each "
            "against their own dataset's baseline.")
    suite = metas[0][1]["suite"]
    baselines: dict[str, set[str]] = {}
    for _, meta in metas:
        for setting, shas in meta["baselines"].items():
            baselines.setdefault(setting, set()).update(shas)
    merged_meta = {"suite": suite, "weights": "; ".join(sorted({str(m["weights"]) for _, m in metas})),
                   "device_names": sorted({name for _, m in metas for name in m["device_names"]}),
                   "baselines": {setting: sorted(shas) for setting, shas in sorted(baselines.items())},
                   "datasets": [str(directory) for directory, _ in metas],
                   "gated": all(m.get("gated") for _, m in metas)}
    for directory, _ in metas:
        notes += [f"{directory}: {note}" for note in read_meta(directory).get("notes", [])
                  if note.startswith("No gate verdicts")]
    return build(results, merged_meta, fast_p, n_resamples, notes)


def _check_mergeable(metas: list[tuple[Path, dict]], allow_mixed: bool) -> None:
    first_dir, first = metas[0]
    for directory, meta in metas[1:]:
        if meta["suite"] != first["suite"]:
            raise LeaderboardError(f"{directory} is of suite {meta['suite']!r}, {first_dir} of {first['suite']!r}: "
                                   f"a leaderboard merges datasets of one suite")
        if allow_mixed:
            continue
        if set(meta["device_names"]) != set(first["device_names"]):
            raise LeaderboardError(
                f"{directory} was timed on {', '.join(meta['device_names']) or '?'}, {first_dir} on "
                f"{', '.join(first['device_names']) or '?'}: speedups from different GPU models are not comparable "
                f"(pass --allow-mixed to merge anyway)")
        for setting, shas in meta["baselines"].items():
            other = first["baselines"].get(setting)
            if other is not None and set(other) != set(shas):
                raise LeaderboardError(
                    f"{directory} and {first_dir} time setting {setting} against different baseline programs "
                    f"({', '.join(s[:12] for s in shas)} vs {', '.join(s[:12] for s in other)}): speedups are not "
                    f"comparable (pass --allow-mixed to merge anyway)")
