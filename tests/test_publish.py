"""Publishing: the staged Hub folder, its dataset card, the refusals, and the calls made to huggingface_hub.

The Hugging Face Hub is not reachable from the test machines, so everything up to the network call is tested:
the staged folder is loaded with ``datasets`` the way the Hub's users will load it, and the upload goes to a mock
``HfApi`` whose recorded calls are checked. Datasets are small hand-made folders that follow
:mod:`accelbench.schema` exactly (real PNGs, the schema's Parquet metadata, hand-made scores and report).
"""

import csv
import hashlib
import io
import json
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

import httpx2
import pyarrow as pa
import pytest
from datasets import load_dataset
from huggingface_hub import DatasetCard, HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import filter_repo_objects
from PIL import Image

from accelbench import dataset, schema
from accelbench.manifest import load_catalog
from accelbench.scorer import publish

CATALOG = load_catalog()
TASKS = ("smoke-sd15-ddim-8-deepcache", "smoke-sd15-ddim-8-tgate")
PROMPTS = ("a red cube on a wooden table", "two cats sleeping on a sofa")
BATCH_SIZES = (1, 2)
FAILED_UNIT = ("gt", "smoke-sd15-ddim-8-tgate", 2)  # (variant, unit, batch size) whose batch raised
RECIPE, OTHER_RECIPE = "rec0a1b2c3", "rec9f8e7d6"
REPO = "some-org/accelbench-smoke"
TOKEN = "hf_TESTtokenNeverToBeWritten0123456789"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def png(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


def generation_rows() -> dict[str, list[dict]]:
    """Rows of the shared baseline and of each task's gt program, keyed by unit (one shard each)."""
    versions = json.dumps({"python": "3.11.9", "torch": "2.14.1", "diffusers": "0.42.1", "DeepCache": "0.1.1",
                           "tgate": "1.0.0", "accelbench": "0.1.0"})
    units = {"sd15-ddim-8": ("baseline", None, "none", {}, "b" * 64)}
    for task_id in TASKS:
        task = CATALOG.task(task_id)
        units[task_id] = ("gt", task_id, task.method, task.params, hashlib.sha256(task_id.encode()).hexdigest())
    shards = {}
    for unit_id, (variant, task_id, method, params, program) in units.items():
        rows = []
        for batch_size in BATCH_SIZES:
            failed = FAILED_UNIT == (variant, unit_id, batch_size)
            for index, prompt in enumerate(PROMPTS):
                record_id = hashlib.sha256(f"{unit_id}:{variant}:{index}:{batch_size}".encode()).hexdigest()[:32]
                color = (40 * index, 100 * (variant == "gt"), 60 * batch_size)
                rows.append(schema.empty_row(schema.GENERATION_COLUMNS) | {
                    "record_id": record_id, "suite": "smoke", "variant": variant, "unit_id": unit_id,
                    "task_id": task_id, "setting_id": "sd15-ddim-8", "program_sha256": program, "model": "sd15",
                    "model_source": "/cache/tiny/sd15", "scheduler": "ddim", "steps": 8, "method": method,
                    "method_params": json.dumps(params, sort_keys=True), "prompt_index": index, "prompt": prompt,
                    "seed": 0, "image_seed": 1000 + index, "batch_size": batch_size,
                    "batch_index": index // batch_size, "position": index % batch_size,
                    "image": None if failed else {"bytes": png(color), "path": f"{record_id}.png"},
                    "image_sha256": None if failed else hashlib.sha256(bytes(color)).hexdigest(),
                    "height": 8, "width": 8, "batch_latency_s": None if failed else 0.1 * batch_size,
                    "image_latency_s": None if failed else 0.1, "timer": "wall",
                    "status": schema.STATUS_ERROR if failed else schema.STATUS_OK,
                    "error": "RuntimeError: boom" if failed else None, "device": "cpu",
                    "device_name": "Test CPU", "dtype": "float32", "weights": "tiny", "generator_device": "cpu",
                    "warmup_batches": 2, "versions": versions, "run_id": "run1", "rank": 0, "world_size": 1,
                    "started_at": NOW, "finished_at": NOW,
                })
        shards[unit_id] = rows
    return shards


def make_dataset(root: Path, recipes=(RECIPE,), report_recipe=RECIPE, report=True) -> Path:
    """A complete dataset folder: generated, scored with ``recipes``, reported (unless told otherwise)."""
    root.mkdir(parents=True)
    dataset.write_json_atomic(root / schema.DATASET_MANIFEST,
                              schema.dataset_manifest("smoke", "tiny", "float32") | {"device_type": "cpu"})
    shards = generation_rows()
    for number, (unit_id, rows) in enumerate(shards.items(), 1):
        table = pa.Table.from_pylist(rows, schema=schema.arrow_schema(schema.GENERATION_COLUMNS))
        dataset.write_table_atomic(table, root / schema.GENERATIONS_DIR / f"generations-run1-r0-{number:04d}.parquet")
        dataset.write_bytes_atomic(root / schema.PROGRAMS_DIR / f"{rows[0]['program_sha256']}.py",
                                   f"# program of {unit_id}\n".encode())
    dataset.write_json_atomic(root / schema.RUNS_DIR / "run1-r0.json", {
        "run_id": "run1", "rank": 0, "world_size": 1, "device_name": "Test CPU", "argv": ["accelbench", "generate"],
        "versions": {"torch": "2.14.1"}, "seconds": 12.5, "rows_written": 12, "failed_rows": 2})
    ok = [row for rows in shards.values() for row in rows if row["status"] == schema.STATUS_OK]
    for offset, recipe in enumerate(recipes):
        scores = [{"record_id": row["record_id"], "recipe_id": recipe, "clip_model": "accelbench-tiny-clip",
                   "clip_pretrained": "random", "clip_preprocess": "resize 224, center crop, normalize",
                   "clip_score": 20.0 + index + offset, "scored_at": NOW} for index, row in enumerate(ok)]
        folder = root / schema.SCORES_DIR / f"{schema.CLIP_DIR_PREFIX}{recipe}"
        dataset.write_table_atomic(pa.Table.from_pylist(scores, schema=schema.arrow_schema(schema.CLIP_SCORE_COLUMNS)),
                                   folder / "part-000001.parquet")
        dataset.write_json_atomic(folder / "recipe.json", {  # as the scorer writes it
            "recipe_id": recipe, "clip_model": "accelbench-tiny-clip", "clip_pretrained": "random",
            "clip_preprocess": "resize 224, center crop, normalize", "open_clip_version": "3.3.0",
            "score": "100 * max(cos(image embedding, prompt embedding), 0), clamped per image", "note": ""})
    if recipes:
        write_fidelity(root, shards)
    if recipes and report:
        write_report(root, report_recipe)
    return root


def write_fidelity(root: Path, shards) -> None:
    """Each ok gt image vs its baseline; each ok image at batch size 2 vs the same image at batch size 1."""
    key = {(row["unit_id"], row["prompt_index"], row["batch_size"]): row["record_id"]
           for rows in shards.values() for row in rows}
    fidelity = []
    for rows in shards.values():
        for row in rows:
            if row["status"] != schema.STATUS_OK:
                continue
            if row["variant"] == "gt":
                fidelity.append({"record_id": row["record_id"], "kind": "baseline", "psnr": 30.0, "ssim": 0.9,
                                 "reference_record_id": key[("sd15-ddim-8", row["prompt_index"], row["batch_size"])],
                                 "identical": False})
            if row["batch_size"] == 2:
                fidelity.append({"record_id": row["record_id"], "kind": "batch-drift", "psnr": float("inf"),
                                 "ssim": 1.0, "identical": True,
                                 "reference_record_id": key[(row["unit_id"], row["prompt_index"], 1)]})
    dataset.write_table_atomic(pa.Table.from_pylist(fidelity, schema=schema.arrow_schema(schema.FIDELITY_COLUMNS)),
                               root / schema.SCORES_DIR / schema.FIDELITY_DIR / "part-000001.parquet")


def write_report(root: Path, recipe: str) -> None:
    names = [column.name for column in schema.SUMMARY_COLUMNS]
    rows = []
    for task_id in TASKS:
        task = CATALOG.task(task_id)
        for variant, method, speedup in (("baseline", "none", 1.0), ("gt", task.method, 2.5)):
            rows.append(dict.fromkeys(names, "") | {
                "task_id": task_id, "variant": variant, "batch_size": "all", "model": "sd15", "scheduler": "ddim",
                "steps": "8", "method": method, "method_params": "{}", "images": "4", "failed": "0",
                "median_image_latency_s": "0.1", "speedup": str(speedup), "speedup_ci_low": "2.1",
                "speedup_ci_high": "2.9", "clip_score": "21.5", "quality_loss": "0.0123", "psnr": "30.0",
                "ssim": "0.9", "flags": "no-op" if task.method == "tgate" and variant == "gt" else "",
                "recipe_id": recipe, "device_name": "Test CPU", "weights": "tiny"})
    report = root / schema.REPORT_DIR
    report.mkdir(parents=True)
    with (report / "summary.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
    (report / "by_batch_size.csv").write_text("task_id,batch_size\n")
    (report / "summary.json").write_text(json.dumps({"rows": rows}))
    (report / "report.md").write_text("# Report\n")
    (report / "pareto.png").write_bytes(png((255, 255, 255)))


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mtime_ns)
            for path in sorted(root.rglob("*")) if path.is_file()}


def load(staged: Path, config: str, tmp_path: Path):
    return load_dataset(str(staged), config, split="train", cache_dir=str(tmp_path / "hf-cache"))


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """One complete dataset, staged once for the read-only checks."""
    root = make_dataset(tmp_path_factory.mktemp("source") / "ds")
    before = snapshot(root)
    result = publish.stage(root, tmp_path_factory.mktemp("out") / "staging", REPO)
    return root, result, before


# ---------------------------------------------------------------------------------------------------------
# The staged folder
# ---------------------------------------------------------------------------------------------------------


def test_generations_load_with_images_and_every_row(staged, tmp_path):
    root, result, _ = staged
    assert "generations (12 rows)" in result.format()
    generations = load(result.path, "generations", tmp_path)
    assert generations.num_rows == result.rows["generations"] == dataset.read_generations(root).num_rows == 12
    ok = [row for row in generations if row["status"] == schema.STATUS_OK]
    assert len(ok) == 10 and isinstance(ok[0]["image"], Image.Image) and ok[0]["image"].size == (8, 8)
    assert all(row["image"] is None for row in generations if row["status"] != schema.STATUS_OK)


def test_scores_join_clip_with_fidelity_and_identity(staged, tmp_path):
    root, result, _ = staged
    scores = load(result.path, "scores", tmp_path)
    source = dataset.read_columns(sorted((root / "scores" / f"clip-{RECIPE}").glob("part-*.parquet")), [],
                                  schema.CLIP_SCORE_COLUMNS)
    assert scores.num_rows == result.rows["scores"] == source.num_rows == 10  # one per ok image
    assert set(scores.column_names) == {column.name for column in publish.SCORES_COLUMNS}
    by_record = {row["record_id"]: row for row in scores}
    gt_bs2 = next(row for row in by_record.values() if row["variant"] == "gt" and row["batch_size"] == 2)
    assert gt_bs2["task_id"] == TASKS[0] and gt_bs2["psnr"] == 30.0 and gt_bs2["baseline_record_id"] in by_record
    assert gt_bs2["drift_psnr"] == float("inf") and gt_bs2["drift_identical"] is True
    baseline_bs1 = next(row for row in by_record.values() if row["variant"] == "baseline" and row["batch_size"] == 1)
    assert baseline_bs1["psnr"] is None and baseline_bs1["drift_reference_record_id"] is None
    assert load(result.path, "fidelity", tmp_path).num_rows == result.rows["fidelity"] == 10
    assert load(result.path, "summary", tmp_path).num_rows == result.rows["summary"] == 4


def test_folder_holds_programs_runs_report_and_leaves_the_source_untouched(staged):
    root, result, before = staged
    names = {str(path.relative_to(result.path)) for path in result.path.rglob("*") if path.is_file()}
    assert {f"programs/{path.name}" for path in (root / "programs").iterdir()} <= names
    assert {"runs/run1-r0.json", "accelbench.json", "README.md", "data/scores/recipe.json"} <= names
    assert {f"report/{name}" for name in ("report.md", "pareto.png", "summary.csv", "by_batch_size.csv")} <= names
    assert snapshot(root) == before


def test_card_yaml_parses_and_every_config_has_files(staged):
    _, result, _ = staged
    card = DatasetCard.load(result.path / "README.md")
    data = card.data.to_dict()
    configs = {entry["config_name"]: entry for entry in data["configs"]}
    assert set(configs) == {"generations", "scores", "fidelity", "summary"} and configs["generations"]["default"]
    for entry in configs.values():
        for files in entry["data_files"]:
            assert files["split"] == "train" and list(result.path.glob(files["path"])), files
    assert data["license"] == "apache-2.0" and data["task_categories"] == ["text-to-image"]
    assert data["size_categories"] == ["n<1K"] and data["pretty_name"]
    assert {"diffusion", "benchmark", "acceleration", "deepcache", "t-gate"} <= set(data["tags"])


def test_card_body_is_built_from_the_dataset(staged):
    _, result, _ = staged
    text = DatasetCard.load(result.path / "README.md").text
    assert CATALOG.task(TASKS[0]).text in text  # an example task text
    assert PROMPTS[0] in text and "Test CPU" in text and "0.42.1" in text  # prompt, hardware, library version
    assert "accelbench-tiny-clip" in text and RECIPE in text and "open_clip_version: 3.3.0" in text  # the recipe
    assert "2.5× [2.1, 2.9]" in text and "1.23 %" in text  # the summary table, with CIs
    assert "](report/pareto.png)" in text
    assert "tiny synthetic" in text and "T-GATE patches" in text and f"`{TASKS[1]}`" in text  # caveats, no-op
    assert f'load_dataset("{REPO}", "generations", split="train")' in text


def test_several_recipes_get_one_config_each_the_reported_one_as_scores(tmp_path):
    root = make_dataset(tmp_path / "ds", recipes=(RECIPE, OTHER_RECIPE), report_recipe=OTHER_RECIPE)
    result = publish.stage(root, tmp_path / "staging", REPO)
    assert result.recipes == [OTHER_RECIPE, RECIPE]
    assert set(result.configs) == {"generations", "scores", f"scores-{RECIPE}", "fidelity", "summary"}
    assert set(load(result.path, "scores", tmp_path)["recipe_id"]) == {OTHER_RECIPE}
    assert set(load(result.path, f"scores-{RECIPE}", tmp_path)["recipe_id"]) == {RECIPE}


def test_unscored_dataset_is_refused_unless_allowed(tmp_path):
    root = make_dataset(tmp_path / "ds", recipes=())
    with pytest.raises(publish.PublishError, match="no CLIP scores.*--allow-unscored"):
        publish.stage(root, tmp_path / "staging", REPO)
    result = publish.stage(root, tmp_path / "staging", REPO, allow_unscored=True)
    assert set(result.configs) == {"generations"}
    assert "Not scored" in DatasetCard.load(result.path / "README.md").text


def test_staging_folder_rules(tmp_path, staged):
    root = staged[0]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(publish.PublishError, match="not empty and not an earlier publish staging"):
        publish.stage(root, foreign, REPO)
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(publish.PublishError, match="outside the dataset folder"):
        publish.stage(root, root / "hub", REPO)
    again = tmp_path / "again"
    publish.stage(root, again, REPO)
    (again / "data" / "generations" / "stale.parquet").write_bytes(b"old")
    publish.stage(root, again, REPO)  # an earlier staging is replaced, stale files included
    assert not (again / "data" / "generations" / "stale.parquet").exists()


# ---------------------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------------------


def test_unfinished_parts_are_refused(tmp_path):
    root = make_dataset(tmp_path / "ds")
    part = root / dataset.STAGING_DIR / "r0-run2" / "part-000001.parquet"
    dataset.write_table_atomic(pa.Table.from_pylist(generation_rows()["sd15-ddim-8"][:1],
                                                    schema=schema.arrow_schema(schema.GENERATION_COLUMNS)), part)
    with pytest.raises(publish.PublishError, match="unfinished part file.*rerun `accelbench generate` with the same"):
        publish.stage(root, tmp_path / "staging", REPO)
    assert not (tmp_path / "staging").exists()  # refused before anything was written


def test_scored_dataset_without_report_is_refused(tmp_path):
    root = make_dataset(tmp_path / "ds", report=False)
    with pytest.raises(publish.PublishError, match="scored but has no report"):
        publish.stage(root, tmp_path / "staging", REPO)


@pytest.mark.parametrize("repo_id", ["just-a-name", "org/name/extra", "org/", "/name", "org/bad name", "org/x--y",
                                     "org/name.git", ""])
def test_bad_repo_id_is_refused(repo_id, staged, tmp_path):
    api = mock.create_autospec(HfApi, instance=True)
    with pytest.raises(publish.PublishError, match="repo"):
        publish.publish(staged[0], repo_id, api=api)
    with pytest.raises(publish.PublishError, match="repo"):
        publish.stage(staged[0], tmp_path / "staging", repo_id)
    assert not api.method_calls


# ---------------------------------------------------------------------------------------------------------
# Upload (the Hub is unreachable here: the calls go to a mock HfApi and are checked)
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


def test_publish_calls_the_hub_with_the_right_arguments(staged, capsys, caplog):
    api, uploaded = fake_api()
    url = publish.publish(staged[0], REPO, private=True, revision="v1", token=TOKEN, api=api)
    api.create_repo.assert_called_once_with(REPO, repo_type="dataset", private=True, exist_ok=True, token=TOKEN)
    api.create_branch.assert_called_once_with(REPO, branch="v1", repo_type="dataset", exist_ok=True, token=TOKEN)
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["repo_id"] == REPO and kwargs["repo_type"] == "dataset" and kwargs["revision"] == "v1"
    assert kwargs["token"] == TOKEN and publish.STAGING_MARKER in kwargs["ignore_patterns"]
    assert url == f"https://huggingface.co/datasets/{REPO}/tree/v1"
    assert "README.md" in uploaded and any(name.startswith("data/generations/") for name in uploaded)
    assert not Path(kwargs["folder_path"]).exists()  # the temporary staging is removed
    # Re-publishing replaces the data: the Hub's own matcher deletes stale remote data, keeps foreign files.
    remote = ["data/generations/generations-old-r0-0001.parquet", "data/scores-gone/scores.parquet",
              "report/old.png", "programs/old.py", "runs/old.json", "notes/by-hand.md", ".gitattributes"]
    deleted = set(filter_repo_objects(remote, allow_patterns=kwargs["delete_patterns"]))
    assert deleted == set(remote) - {"notes/by-hand.md", ".gitattributes"}
    # The token reaches huggingface_hub only: no uploaded file and no output holds it.
    assert not any(TOKEN.encode() in content for content in uploaded.values())
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err + caplog.text


def test_token_from_the_environment_is_not_written_either(staged, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    api, uploaded = fake_api()
    publish.publish(staged[0], REPO, api=api)
    assert api.create_repo.call_args.kwargs["token"] is None  # left to huggingface_hub's own resolution
    api.create_branch.assert_not_called()
    assert api.upload_folder.call_args.kwargs["revision"] is None
    result = publish.stage(staged[0], tmp_path / "staging", REPO)
    assert not any(TOKEN.encode() in path.read_bytes() for path in result.path.rglob("*") if path.is_file())
    assert not any(TOKEN.encode() in content for content in uploaded.values())
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err


def test_private_publish_into_an_existing_public_repo_is_refused(staged):
    api, _ = fake_api(private_repo=False)
    with pytest.raises(publish.PublishError, match="already exists and is public"):
        publish.publish(staged[0], REPO, private=True, api=api)
    api.upload_folder.assert_not_called()


def test_rejected_token_becomes_one_line(staged):
    api, _ = fake_api()
    response = httpx2.Response(401, request=httpx2.Request("POST", "https://huggingface.co/api/repos/create"))
    api.create_repo.side_effect = HfHubHTTPError("401 Unauthorized", response=response)
    with pytest.raises(publish.PublishError, match=r"HTTP 401") as raised:
        publish.publish(staged[0], REPO, token=TOKEN, api=api)
    assert TOKEN not in str(raised.value) and "\n" not in str(raised.value)
