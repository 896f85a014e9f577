"""Publishing: the staged Hub folder, its dataset card, the refusals, and the calls made to huggingface_hub.

The Hugging Face Hub is not reachable from the test machines, so everything up to the network call is tested:
the staged folder is loaded with ``datasets`` the way the Hub's users will load it, and the upload goes to an
autospec'd ``HfApi`` whose recorded calls are checked, or which raises huggingface_hub's own errors. Datasets
come from tests/factories.py, scored and reported by the scorer (``build_report``), as ``accelbench score``
leaves them.
"""

from pathlib import Path
from unittest import mock

import pytest
from click.testing import CliRunner
from datasets import load_dataset
from factories import (
    CATALOG,
    DEVICE_NAME,
    FAST,
    HAND_RECIPE,
    NOOP,
    PROMPTS,
    SETTING,
    VERSIONS,
    generation_table,
    known_scores,
    ok_record_ids,
    reported_dataset,
    row,
    shard_path,
    write_clip_scores,
    write_dataset,
)
from huggingface_hub import DatasetCard, HfApi
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import filter_repo_objects, httpx
from PIL import Image

from accelbench import dataset, schema, task_facts
from accelbench.cli import EXIT_FAILED, main
from accelbench.hub import stage as hub
from accelbench.manifest.summary import level_table
from accelbench.scorer import markdown, report, store

OTHER_RECIPE = "other--recipe"
REPO = "some-org/accelbench-smoke"
TOKEN = "hf_TESTtokenNeverToBeWritten0123456789"


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mtime_ns)
            for path in sorted(root.rglob("*")) if path.is_file()}


def load(staged: Path, config: str, tmp_path: Path):
    return load_dataset(str(staged), config, split="train", cache_dir=str(tmp_path / "hf-cache"))


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """One dataset, scored and reported; the tests that publish it leave it as it is."""
    return reported_dataset(tmp_path_factory.mktemp("source") / "ds")


@pytest.fixture(scope="module")
def staged(reported, tmp_path_factory):
    """The reported dataset staged once, for the read-only checks."""
    root, built = reported
    before = snapshot(root)
    result = hub.stage(root, tmp_path_factory.mktemp("out") / "staging", REPO)
    return root, built, result, before


# ---------------------------------------------------------------------------------------------------------
# The staged folder
# ---------------------------------------------------------------------------------------------------------


def test_generations_load_with_images_and_every_row(staged, tmp_path):
    root, _, result, _ = staged
    rows = dataset.read_generations(root).num_rows
    assert f"generations ({rows} rows)" in result.format()
    generations = load(result.path, "generations", tmp_path)
    assert generations.num_rows == result.rows["generations"] == rows
    ok = [r for r in generations if r["status"] == schema.STATUS_OK]
    assert len(ok) == len(ok_record_ids(root)) and isinstance(ok[0]["image"], Image.Image)
    assert all(r["image"] is None for r in generations if r["status"] != schema.STATUS_OK)


def test_scores_fidelity_and_summary_configs_are_the_scorers_tables(staged, tmp_path):
    root, built, result, _ = staged
    scores = load(result.path, "scores", tmp_path)
    assert scores.to_list() == store.scores_table(root, HAND_RECIPE).to_pylist()
    assert scores.column_names == [column.name for column in schema.SCORES_COLUMNS]
    assert scores.num_rows == result.rows["scores"] == len(ok_record_ids(root))  # one per scored image
    fidelity = load(result.path, "fidelity", tmp_path)
    assert fidelity.to_list() == store.read_fidelity(root).to_pylist()
    summary = load(result.path, "summary", tmp_path)
    assert summary.to_list() == report.read_summary(root).to_pylist() == built.pooled  # typed, as reported


def test_folder_holds_programs_runs_report_and_leaves_the_source_untouched(staged):
    root, _, result, before = staged
    names = {str(path.relative_to(result.path)) for path in result.path.rglob("*") if path.is_file()}
    assert {f"programs/{path.name}" for path in (root / "programs").iterdir()} <= names
    assert {"runs/run1-r0.json", "accelbench.json", "README.md", "data/scores/recipe.json"} <= names
    assert {f"report/{path.name}" for path in (root / schema.REPORT_DIR).iterdir() if path.is_file()} <= names
    assert {f"report/grids/{path.name}" for path in (root / schema.REPORT_DIR / "grids").iterdir()} <= names
    assert snapshot(root) == before


def test_card_yaml_parses_and_every_config_has_files(staged):
    _, _, result, _ = staged
    data = DatasetCard.load(result.path / "README.md").data.to_dict()
    configs = {entry["config_name"]: entry for entry in data["configs"]}
    assert set(configs) == {"generations", "scores", "fidelity", "summary"} and configs["generations"]["default"]
    for entry in configs.values():
        for files in entry["data_files"]:
            assert files["split"] == "train" and list(result.path.glob(files["path"])), files
    assert data["license"] == "apache-2.0" and data["task_categories"] == ["text-to-image"]
    assert data["size_categories"] == ["n<1K"] and data["pretty_name"]
    assert {"diffusion", "benchmark", "acceleration", "deepcache", "tome", "t-gate"} <= set(data["tags"])


def test_card_body_is_built_from_the_dataset_and_its_report(staged):
    root, built, result, _ = staged
    text = DatasetCard.load(result.path / "README.md").text
    assert CATALOG.task(FAST).text in text  # an example task text
    assert PROMPTS[0] in text and DEVICE_NAME in text and f"| diffusers | {VERSIONS['diffusers']} |" in text
    assert HAND_RECIPE in text and "open_clip_version: 3.3.0" in text  # the recipe, from its recipe.json
    fast = next(r for r in built.pooled if r["task_id"] == FAST and r["variant"] == "gt")
    assert f"{markdown.with_ci(fast, 'speedup', suffix='×')} | " in text  # the report's numbers, with CIs
    assert f"{markdown.with_ci(fast, 'quality_loss', suffix=' %', scale=100.0)} | " in text
    assert "](report/pareto.png)" in text
    assert "tiny synthetic models" in text and "T-GATE patches" in text  # caveats
    assert f"The report flags `{NOOP}` as `no-op`" in text
    assert f'load_dataset("{REPO}", "generations", split="train")' in text
    assert "The prompts come from the suite manifest (licence Apache-2.0)." in text  # as the suite states it
    # the counts by family, method and level come from the dataset's own task facts
    facts, _ = task_facts.read(root)
    header, rows = level_table(facts.values())
    assert markdown.table(header, rows) in text and rows[-1][-1] == len(facts)


def test_the_card_says_where_prompts_came_from_and_under_which_licence():
    from accelbench.hub import card

    def source(**prompts):
        return card._prompt_source({"suite_facts": {"prompts": prompts}})

    hub = source(kind="hub", name="nateraw/parti-prompts", column="Prompt", split="train", license="Apache-2.0")
    assert hub == ("the Hub dataset [`nateraw/parti-prompts`](https://huggingface.co/datasets/nateraw/parti-prompts) "
                   "(column `Prompt`, in order, licence Apache-2.0)")
    unlicensed = source(kind="suite-file", name="prompts.txt")
    assert unlicensed == "the suite's prompt file `prompts.txt`"
    assert "Their licence is not recorded" in card._license_section([], unlicensed)
    assert "Their licence is not recorded" not in card._license_section([], hub)
    # secret prompts given on the command line: neither their file nor a licence is recorded
    secret = task_facts.suite_facts(CATALOG.suite("standard"), Path("secret.txt"))["prompts"]
    assert secret == {"kind": "command-line"}


def test_several_recipes_get_one_config_each_the_reported_one_as_scores(tmp_path):
    root, _ = reported_dataset(tmp_path / "ds", recipes=(HAND_RECIPE, OTHER_RECIPE), report_recipe=OTHER_RECIPE)
    result = hub.stage(root, tmp_path / "staging", REPO)
    assert result.recipes == [OTHER_RECIPE, HAND_RECIPE]
    assert set(result.configs) == {"generations", "scores", f"scores-{HAND_RECIPE}", "fidelity", "summary"}
    assert set(load(result.path, "scores", tmp_path)["recipe_id"]) == {OTHER_RECIPE}
    assert set(load(result.path, f"scores-{HAND_RECIPE}", tmp_path)["recipe_id"]) == {HAND_RECIPE}


def test_unscored_dataset_is_refused_unless_allowed(tmp_path):
    root = write_dataset(tmp_path / "ds")
    with pytest.raises(hub.PublishError, match="no CLIP scores.*--allow-unscored"):
        hub.stage(root, tmp_path / "staging", REPO)
    result = hub.stage(root, tmp_path / "staging", REPO, allow_unscored=True)
    assert set(result.configs) == {"generations"}
    assert "Not scored" in DatasetCard.load(result.path / "README.md").text


def test_a_recipe_without_scores_is_unscored_for_publish_as_for_report(tmp_path):
    """A scoring run killed before its first part file: the report and publish agree that nothing is scored."""
    root = write_dataset(tmp_path / "ds")
    dataset.write_json_atomic(store.clip_dir(root, HAND_RECIPE) / store.RECIPE_FILE, {"recipe_id": HAND_RECIPE})
    assert any("No CLIP scores" in note for note in report.build_report(root, n_resamples=10).notes)
    with pytest.raises(hub.PublishError, match="no CLIP scores"):
        hub.stage(root, tmp_path / "staging", REPO)


def test_staging_folder_rules(tmp_path, staged):
    root = staged[0]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(hub.PublishError, match="not empty and not an earlier publish staging"):
        hub.stage(root, foreign, REPO)
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(hub.PublishError, match="outside the dataset folder"):
        hub.stage(root, root / "hub", REPO)
    again = tmp_path / "again"
    hub.stage(root, again, REPO)
    (again / "data" / "generations" / "stale.parquet").write_bytes(b"old")
    hub.stage(root, again, REPO)  # an earlier staging is replaced, stale files included
    assert not (again / "data" / "generations" / "stale.parquet").exists()


# ---------------------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------------------


def test_unfinished_parts_are_refused(tmp_path):
    root = write_dataset(tmp_path / "ds", units=(SETTING,))
    dataset.write_table_atomic(generation_table([row(FAST, 0, 1)]),
                               root / schema.STAGING_DIR / "r0-run2" / "part-000001.parquet")
    with pytest.raises(hub.PublishError, match="unfinished part file.*rerun `accelbench generate` with the same"):
        hub.stage(root, tmp_path / "staging", REPO, allow_unscored=True)
    assert not (tmp_path / "staging").exists()  # refused before anything was written


def test_an_unreadable_shard_is_refused(tmp_path):
    root = write_dataset(tmp_path / "ds", units=(SETTING, FAST))
    shard_path(root, SETTING).write_bytes(b"not parquet")
    with pytest.raises(hub.PublishError, match=f"{shard_path(root, SETTING)} is not a readable Parquet file"):
        hub.stage(root, tmp_path / "staging", REPO, allow_unscored=True)


def test_scored_dataset_without_report_is_refused(tmp_path):
    root = write_dataset(tmp_path / "ds", units=(SETTING,))
    write_clip_scores(root, known_scores(root))
    with pytest.raises(hub.PublishError, match="scored but has no report"):
        hub.stage(root, tmp_path / "staging", REPO)


@pytest.mark.parametrize("repo_id", ["just-a-name", "org/name/extra", "org/", "/name", "org/bad name", "org/x--y",
                                     "org/name.git", ""])
def test_bad_repo_id_is_refused(repo_id, reported, tmp_path):
    api = mock.create_autospec(HfApi, instance=True)
    with pytest.raises(hub.PublishError, match="repo"):
        hub.publish(reported[0], repo_id, api=api)
    with pytest.raises(hub.PublishError, match="repo"):
        hub.stage(reported[0], tmp_path / "staging", repo_id)
    assert not api.method_calls


# ---------------------------------------------------------------------------------------------------------
# Upload (the Hub is unreachable here: the calls go to an autospec'd HfApi and are checked)
# ---------------------------------------------------------------------------------------------------------


def fake_api(private_repo=True):
    """A mock HfApi with the real one's signatures; upload_folder records what the folder held when called."""
    api = mock.create_autospec(HfApi, instance=True)
    api.create_repo.return_value = f"https://huggingface.co/datasets/{REPO}"
    api.repo_info.return_value.private = private_repo
    uploaded = {}

    def upload_folder(**kwargs):
        folder = Path(kwargs["folder_path"])
        uploaded.update({str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*")
                         if path.is_file()})

    api.upload_folder.side_effect = upload_folder
    return api, uploaded


def temporary_stagings(root: Path) -> list[Path]:
    return list(root.parent.glob(f".{root.name}.publish-*"))


def test_publish_calls_the_hub_with_the_right_arguments(reported, capsys, caplog):
    root = reported[0]
    api, uploaded = fake_api()
    url = hub.publish(root, REPO, private=True, revision="v1", token=TOKEN, api=api)
    api.create_repo.assert_called_once_with(REPO, repo_type="dataset", private=True, exist_ok=True, token=TOKEN)
    api.create_branch.assert_called_once_with(REPO, branch="v1", repo_type="dataset", exist_ok=True, token=TOKEN)
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["repo_id"] == REPO and kwargs["repo_type"] == "dataset" and kwargs["revision"] == "v1"
    assert kwargs["token"] == TOKEN and hub.STAGING_MARKER in kwargs["ignore_patterns"]
    assert url == f"https://huggingface.co/datasets/{REPO}/tree/v1"
    assert "README.md" in uploaded and any(name.startswith("data/generations/") for name in uploaded)
    assert not temporary_stagings(root)  # the temporary staging is removed
    # Re-publishing replaces the data: the Hub's own matcher deletes stale remote data, keeps foreign files.
    remote = ["data/generations/generations-old-r0-0001.parquet", "data/scores-gone/scores.parquet",
              "report/old.png", "programs/old.py", "runs/old.json", "notes/by-hand.md", ".gitattributes"]
    deleted = set(filter_repo_objects(remote, allow_patterns=kwargs["delete_patterns"]))
    assert deleted == set(remote) - {"notes/by-hand.md", ".gitattributes"}
    # The token reaches huggingface_hub only: no uploaded file and no output holds it.
    assert not any(TOKEN.encode() in content for content in uploaded.values())
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err + caplog.text


def test_token_from_the_environment_is_not_written_either(reported, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    api, uploaded = fake_api()
    hub.publish(reported[0], REPO, api=api)
    assert api.create_repo.call_args.kwargs["token"] is None  # left to huggingface_hub's own resolution
    api.create_branch.assert_not_called()
    assert api.upload_folder.call_args.kwargs["revision"] is None
    result = hub.stage(reported[0], tmp_path / "staging", REPO)
    assert not any(TOKEN.encode() in path.read_bytes() for path in result.path.rglob("*") if path.is_file())
    assert not any(TOKEN.encode() in content for content in uploaded.values())
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err


def test_private_publish_into_an_existing_public_repo_is_refused(staged):
    api, _ = fake_api(private_repo=False)
    with pytest.raises(hub.PublishError, match="already exists and is public"):
        hub.upload(staged[2], private=True, api=api)
    api.upload_folder.assert_not_called()


def test_rejected_token_becomes_one_line(staged):
    api, _ = fake_api()
    response = httpx.Response(401, request=httpx.Request("POST", "https://huggingface.co/api/repos/create"))
    api.create_repo.side_effect = HfHubHTTPError("401 Unauthorized", response=response)
    with pytest.raises(hub.PublishError, match=r"HTTP 401") as raised:
        hub.upload(staged[2], token=TOKEN, api=api)
    assert TOKEN not in str(raised.value) and "\n" not in str(raised.value)


OFFLINE = OfflineModeIsEnabled("Cannot reach https://huggingface.co/api/repos/create: offline mode is enabled.")
NO_NETWORK = httpx.ConnectError("[Errno -3] Temporary failure in name resolution")


@pytest.mark.parametrize("error, reason", [(OFFLINE, "offline: HF_HUB_OFFLINE=1 is set"),
                                           (NO_NETWORK, "ConnectError: [Errno -3] Temporary failure")])
@pytest.mark.parametrize("failing, outcome", [("create_repo", "nothing was uploaded"),
                                              ("upload_folder", "did not finish: run publish again")])
def test_an_unreachable_hub_is_one_line(staged, error, reason, failing, outcome):
    api, _ = fake_api()
    getattr(api, failing).side_effect = error
    with pytest.raises(hub.HubUnreachableError) as raised:
        hub.upload(staged[2], api=api)
    message = str(raised.value)
    assert message.startswith(f"cannot reach the Hugging Face Hub ({reason}") and outcome in message
    assert "\n" not in message


# ---------------------------------------------------------------------------------------------------------
# The publish command
# ---------------------------------------------------------------------------------------------------------


def test_cli_stages_with_dry_run(reported, tmp_path):
    result = CliRunner().invoke(main, ["publish", str(reported[0]), "--repo-id", REPO, "--dry-run",
                                       str(tmp_path / "staging")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"staged {tmp_path / 'staging'} for {REPO}")
    assert (tmp_path / "staging" / "README.md").is_file()


def test_cli_offline_is_one_line_and_exits_1(reported):
    """HF_HUB_OFFLINE=1 (set by conftest): huggingface_hub refuses every request before it is sent."""
    result = CliRunner().invoke(main, ["publish", str(reported[0]), "--repo-id", REPO])
    assert result.exit_code == EXIT_FAILED
    assert result.stderr == ("error: cannot reach the Hugging Face Hub (offline: HF_HUB_OFFLINE=1 is set); "
                             "nothing was uploaded\n")
    assert not temporary_stagings(reported[0])
