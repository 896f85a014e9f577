"""A dataset describes itself: the task facts generate records are what score, report, the leaderboard and the card
read, so editing the manifests after generating changes nothing; a changed task is refused at generate; a dataset
without recorded facts still scores, saying what it lacks."""

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from factories import (
    CATALOG,
    FAST,
    HAND_RECIPE,
    SETTING,
    dataset_rows,
    known_scores,
    passing_verdicts,
    program_sha256,
    submission_rows,
    write_clip_scores,
    write_dataset,
    write_verdicts,
)

from accelbench import dataset, schema, task_facts
from accelbench.cli import main
from accelbench.dataset import DatasetError
from accelbench.manifest import default_root, load_catalog
from accelbench.scorer import fidelity, report

REPORT_FILES = ("report.md", "summary.csv", "by_batch_size.csv", "leaderboard.csv", "leaderboard_tasks.csv")


def scored(directory: Path, facts: bool = True) -> Path:
    rows = dataset_rows() + submission_rows("alpha") + submission_rows("beta")
    write_dataset(directory, rows=rows, facts=facts)
    write_verdicts(directory, passing_verdicts(rows))
    write_clip_scores(directory, known_scores(directory))
    fidelity.score_fidelity(directory, num_workers=0, progress=False)
    report.build_report(directory, recipe_id=HAND_RECIPE, n_resamples=100)
    return directory


def report_files(directory: Path) -> dict[str, bytes]:
    return {name: (directory / schema.REPORT_DIR / name).read_bytes() for name in REPORT_FILES}


def edited_manifests(tmp_path: Path) -> Path:
    """The packaged manifests with DeepCache's deviation threshold lowered to 5 dB, and its tasks' level changed
    through a composition: under these, submission beta's DeepCache (noise, ~8 dB to the GT) would not deviate."""
    root = tmp_path / "manifests"
    shutil.copytree(default_root(), root, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    methods = yaml.safe_load((root / "methods.yaml").read_text())
    methods["methods"]["deepcache"]["deviation_psnr_db"] = 5
    (root / "methods.yaml").write_text(yaml.safe_dump(methods, sort_keys=False))
    return root


def test_rescoring_after_a_manifest_edit_gives_the_same_report_and_leaderboard(tmp_path):
    directory = scored(tmp_path / "ds")
    rebuild = ["report", str(directory), "--recipe", HAND_RECIPE]
    assert CliRunner().invoke(main, rebuild).exit_code == 0
    before = report_files(directory)
    deviates = [line for line in before["leaderboard_tasks.csv"].decode().splitlines() if "deviates" in line]
    assert deviates and all(FAST in line for line in deviates)  # beta's noise deviates at DeepCache's 30 dB
    root = edited_manifests(tmp_path)
    assert load_catalog(root).methods["deepcache"].deviation_psnr_db == 5  # the edit would change the verdict...
    result = CliRunner().invoke(main, ["--manifests", str(root), *rebuild])
    assert result.exit_code == 0, result.output
    assert report_files(directory) == before  # ... yet the report is the dataset's, byte for byte


def test_generate_refuses_a_task_whose_facts_changed(tmp_path):
    task = CATALOG.task(FAST)
    programs = {schema.GT: program_sha256(FAST), schema.BASELINE: program_sha256(SETTING)}
    task_facts.record(tmp_path, [task_facts.facts(CATALOG, task, programs)])
    task_facts.record(tmp_path, [task_facts.facts(CATALOG, task, programs)])  # the same facts: nothing to do
    changed = task_facts.facts(load_catalog(edited_manifests(tmp_path)), task, programs)
    assert changed["catalog_sha256"] != task_facts.catalog_digest(CATALOG)
    with pytest.raises(DatasetError, match=f"holds task {FAST} with method .*deviation_psnr_db': 30.0.* the "
                                           f"catalogue now says .*deviation_psnr_db': 5.0.*use another --out"):
        task_facts.record(tmp_path, [changed])


def test_facts_differing_only_in_their_catalogue_digest_are_the_same_task(tmp_path):
    programs = {schema.GT: "a", schema.BASELINE: "b"}
    facts = task_facts.facts(CATALOG, CATALOG.task(FAST), programs)
    task_facts.record(tmp_path, [facts])
    task_facts.record(tmp_path, [{**facts, "catalog_sha256": "another catalogue, which added other tasks"}])
    assert task_facts.read(tmp_path)[0][FAST]["catalog_sha256"] == facts["catalog_sha256"]


@pytest.mark.parametrize("old_level, level, tags", [(1, 2, []), (2, 2, ["sweep"]), (3, 3, [])])
def test_facts_of_version_1_read_in_todays_levels_and_resume_as_the_same_task(tmp_path, old_level, level, tags):
    """Version 1 counted one method at its defaults as level 1 and a parameter sweep as 2; both are level 2 now
    (the sweep a tag), and a dataset holding version-1 facts still takes more runs of the same tasks."""
    task = CATALOG.task(FAST)
    facts = task_facts.facts(CATALOG, task, {schema.GT: "a", schema.BASELINE: "b"})
    old = {key: value for key, value in facts.items() if key != "tags"} | {"version": 1, "level": old_level}
    dataset.write_json_atomic(tmp_path / schema.TASKS_DIR / f"{FAST}.json", old)
    read = task_facts.read(tmp_path)[0][FAST]
    assert (read["version"], read["level"], read["tags"]) == (task_facts.FACTS_VERSION, level, tags)
    if old_level == 1:  # what FAST is: the same task, nothing refused
        task_facts.record(tmp_path, [facts])
    else:
        with pytest.raises(DatasetError, match=f"holds task {FAST} with "):
            task_facts.record(tmp_path, [facts])


def test_a_dataset_without_recorded_facts_scores_and_says_what_it_lacks(tmp_path):
    directory = scored(tmp_path / "ds", facts=False)
    built = report.build_report(directory, recipe_id=HAND_RECIPE, n_resamples=100)
    assert task_facts.LEGACY_NOTE in built.notes
    assert task_facts.LEGACY_NOTE in (directory / schema.REPORT_DIR / "report.md").read_text()
    tasks = built.leaderboard.tasks
    assert {result["level"] for result in tasks} == {None}
    assert not any(result["reason_kind"] == schema.REASON_DEVIATES for result in tasks)  # no threshold known
    assert all(result["deviation_threshold_db"] is None for result in tasks)


def test_score_report_leaderboard_and_publish_never_read_the_manifests(tmp_path, monkeypatch):
    directory = scored(tmp_path / "ds")

    def refuse(*args, **kwargs):
        raise AssertionError("the manifests were read")

    from accelbench import manifest
    from accelbench.manifest import load

    monkeypatch.setattr(manifest, "load_catalog", refuse)
    monkeypatch.setattr(load, "load_catalog", refuse)
    runner = CliRunner()
    for command in (["score", str(directory), "--no-progress", "--workers", "0"],
                    ["report", str(directory), "--recipe", HAND_RECIPE],
                    ["leaderboard", str(directory), "--out", str(tmp_path / "board")],
                    ["publish", str(directory), "--repo-id", "org/name", "--dry-run", str(tmp_path / "staged")]):
        result = runner.invoke(main, command)
        assert result.exit_code == 0, (command, result.output)
    assert (tmp_path / "staged" / schema.TASKS_DIR / f"{FAST}.json").is_file()  # the facts are published too
