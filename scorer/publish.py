"""Publish a scored dataset folder to the Hugging Face Hub: stage a Hub-ready folder, then upload it.

:func:`stage` turns ``DIR`` (layout in :mod:`accelbench.schema`) into a folder the Hub and ``datasets`` read
directly, without modifying ``DIR`` (large files are hard-linked where the filesystem allows, else copied;
``DIR``'s writers only ever replace files by atomic rename, so a link never sees a later change)::

    README.md                          dataset card: YAML header (configs, license, tags, ...) + documentation
    accelbench.json                    the dataset manifest
    data/generations/*.parquet         config "generations" (default): the generation shards, images included
    data/scores/scores.parquet         config "scores": CLIP scores of the report's recipe, joined per record_id
                                       with fidelity (PSNR/SSIM to the matched baseline and to the same image
                                       at batch size 1) and the row's task, variant and settings
    data/scores/recipe.json            that recipe, as the scorer recorded it
    data/scores-<recipe_id>/...        config "scores-<recipe_id>": the same for every further CLIP recipe
    data/fidelity/fidelity.parquet     config "fidelity": the scorer's fidelity table (re-run duplicates dropped)
    data/summary/summary.parquet       config "summary": report/summary.csv, typed (SUMMARY_COLUMNS); Parquet
                                       because ``datasets`` reads all configs of a repo with one format
    report/                            the report as the scorer wrote it (report.md, pareto.png, summary.csv, ...)
    programs/<sha256>.py, runs/*.json  the programs that produced the rows, and one record per run and rank

:func:`upload` (and :func:`publish`, which stages into a temporary folder and uploads it) creates the dataset
repo if needed and uploads the folder in one ``upload_folder`` call whose ``delete_patterns`` remove the
remote data, programs, runs and report files that the new folder no longer has, so re-publishing replaces the
data instead of accumulating stale shards. There is no separate large-folder path: huggingface_hub (≥ 2.x with
hf_xet, the default) streams ``upload_folder`` in several resumable commits when a folder is large, and
``upload_large_folder`` (1.x) cannot delete stale files; a dataset folder holds a few hundred files at most
(one shard per program and run), well within one ``upload_folder`` call.

huggingface_hub and datasets are imported inside the functions that need them: the CLI imports this module.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from accelbench import dataset, schema
from accelbench.errors import UserInputError
from accelbench.manifest import Catalog, load_catalog
from accelbench.scorer import store

STAGING_MARKER = ".accelbench-publish.json"  # marks a folder as a staging this module made (never uploaded)
STAGING_KIND = "accelbench-publish-staging"
GENERATIONS_CONFIG = "generations"
SCORES_CONFIG = "scores"
FIDELITY_CONFIG = "fidelity"
SUMMARY_CONFIG = "summary"
REQUIRED_REPORT_FILES = ("summary.csv", "report.md")  # what the card is built from
# Remote paths this module owns: whatever matches and is not in the new upload is deleted by the commit.
# README.md and accelbench.json are always re-uploaded, so they are replaced without being listed here.
OWNED_REMOTE_PATTERNS = ("data/*", "programs/*", "runs/*", "report/*")
FIDELITY_KINDS = ("baseline", "batch-drift")  # the values of FIDELITY_COLUMNS' `kind` (see its doc)
LICENSE = "apache-2.0"  # prompts: PartiPrompts (Apache-2.0) or the suite's own; code: accelbench (Apache-2.0)
BASE_TAGS = ("diffusion", "benchmark", "acceleration", "text-to-image", "accelbench")
EXAMPLE_TEXTS = 3  # task texts and prompts quoted on the card


class PublishError(UserInputError):
    """Why a dataset cannot be published (yet), as one line for the user."""


@dataclass
class StagedDataset:
    """A staged, Hub-ready folder and what it holds."""

    path: Path
    repo_id: str
    suite: str
    configs: dict[str, str]  # config name -> data_files pattern, relative to path
    rows: dict[str, int]  # config name -> rows
    files: int
    bytes: int
    recipes: list[str]  # CLIP recipe ids, the "scores" config's first

    def format(self) -> str:
        configs = ", ".join(f"{name} ({self.rows[name]} rows)" for name in self.configs)
        return (f"staged {self.path} for {self.repo_id}: {self.files} files, {self.bytes / 2**20:.1f} MiB; "
                f"configs: {configs}")


# ---------------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------------


def check_repo_id(repo_id: str) -> None:
    """A dataset repo id must name its owner: ``ORG/NAME`` (the Hub's character rules apply to both parts)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PublishError(f"--repo-id must be ORG/NAME (a user or organisation, then the dataset name), "
                           f"got {repo_id!r}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PublishError(f"--repo-id {repo_id!r} is not a valid Hub repo id: {error}") from None


def stage(directory: Path, staging_dir: Path, repo_id: str, allow_unscored: bool = False,
          manifests: Path | None = None) -> StagedDataset:
    """Check ``directory`` is publishable and write the Hub-ready folder ``staging_dir`` (``--dry-run``).

    ``staging_dir`` must be new, empty or an earlier staging (which is replaced). ``manifests``: the manifest
    root the dataset was generated with (task texts, model and method names on the card)."""
    check_repo_id(repo_id)
    directory, staging_dir = Path(directory), Path(staging_dir)
    manifest = dataset.read_manifest(directory)
    shards = _check_publishable(directory, allow_unscored)
    recipes = _recipe_dirs(directory)
    summary = _read_summary(directory) if recipes else []
    catalog = load_catalog(manifests)
    _prepare_staging(staging_dir, directory, repo_id)

    configs = {GENERATIONS_CONFIG: f"{schema.GENERATIONS_DIR}/{GENERATIONS_CONFIG}/*.parquet"}
    rows = {GENERATIONS_CONFIG: sum(pq.read_metadata(path).num_rows for path in shards)}

    def add_config(name: str, table: pa.Table) -> Path:
        folder = staging_dir / schema.GENERATIONS_DIR / name
        dataset.write_table_atomic(table, folder / f"{name}.parquet")
        configs[name] = f"{schema.GENERATIONS_DIR}/{name}/*.parquet"
        rows[name] = table.num_rows
        return folder

    for path in shards:
        _link(path, staging_dir / schema.GENERATIONS_DIR / GENERATIONS_CONFIG / path.name)
    for name in (schema.PROGRAMS_DIR, schema.RUNS_DIR, schema.REPORT_DIR):
        for path in _plain_files(directory / name):
            _link(path, staging_dir / name / path.name)
    _link(directory / schema.DATASET_MANIFEST, staging_dir / schema.DATASET_MANIFEST)

    generations = dataset.read_generations(directory)  # every column but the images
    fidelity = store.read_scores(store.fidelity_dir(directory), schema.FIDELITY_COLUMNS, key=("record_id", "kind"))
    recipe_order = _primary_first(recipes, summary)
    recipe_facts = []
    for index, recipe_id in enumerate(recipe_order):
        name = SCORES_CONFIG if index == 0 else f"{SCORES_CONFIG}-{recipe_id}"
        table = _scores_table(recipes[recipe_id], generations, fidelity)
        folder = add_config(name, table)
        recipe_json = recipes[recipe_id] / "recipe.json"
        if recipe_json.is_file():
            _link(recipe_json, folder / "recipe.json")
        recipe_facts.append(_recipe_facts(recipe_id, name, table, recipe_json))
    if fidelity.num_rows:
        add_config(FIDELITY_CONFIG, fidelity)
    if summary:
        add_config(SUMMARY_CONFIG, _summary_table(directory))

    runs = [json.loads(path.read_text()) for path in _plain_files(directory / schema.RUNS_DIR)
            if path.suffix == ".json"]
    card = _build_card(repo_id, manifest, catalog, generations.to_pylist(), runs, configs, rows, recipe_facts,
                       summary, staging_dir)
    card.save(staging_dir / "README.md")
    files = [path for path in staging_dir.rglob("*") if path.is_file() and path.name != STAGING_MARKER]
    return StagedDataset(path=staging_dir, repo_id=repo_id, suite=manifest["suite"], configs=configs, rows=rows,
                         files=len(files), bytes=sum(path.stat().st_size for path in files), recipes=recipe_order)


def upload(staged: StagedDataset, private: bool = False, revision: str | None = None, token: str | None = None,
           api=None) -> str:
    """Upload a staged folder to the dataset repo ``staged.repo_id``; return the repo's URL (on ``revision``).

    ``token``: passed to every call; None lets huggingface_hub resolve it (HF_TOKEN, then the cached login).
    ``api``: an ``HfApi`` (tests inject a fake one)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    api = api or HfApi()
    repo_id = staged.repo_id
    try:
        url = str(api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True, token=token))
        # create_repo(exist_ok=True) leaves an existing repo's visibility alone: never upload "private" data
        # into a repo that turns out to be public.
        if private and not api.repo_info(repo_id, repo_type="dataset", token=token).private:
            raise PublishError(f"{repo_id} already exists and is public; --private does not change an existing "
                               f"repo's visibility: make it private on the Hub first, or choose another --repo-id")
        if revision:
            api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True, token=token)
        api.upload_folder(
            repo_id=repo_id, folder_path=str(staged.path), repo_type="dataset", revision=revision,
            commit_message=f"accelbench publish: suite {staged.suite}, {staged.rows[GENERATIONS_CONFIG]} images",
            delete_patterns=list(OWNED_REMOTE_PATTERNS), ignore_patterns=[STAGING_MARKER], token=token,
        )
    except LocalTokenNotFoundError:
        raise PublishError("no Hugging Face token: log in with `hf auth login` or set HF_TOKEN") from None
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        if status in (401, 403):
            raise PublishError(f"the Hub refused {repo_id} (HTTP {status}): check that your token is valid and "
                               f"may write to {repo_id.split('/')[0]}") from None
        raise
    return f"{url.rstrip('/')}/tree/{revision}" if revision else url


def publish(directory: Path, repo_id: str, private: bool = False, revision: str | None = None,
            allow_unscored: bool = False, token: str | None = None, api=None, manifests: Path | None = None) -> str:
    """Stage ``directory`` into a temporary folder beside it and upload it; return the dataset's URL."""
    check_repo_id(repo_id)
    directory = Path(directory).resolve()
    # Beside the dataset, so shards are hard-linked rather than copied (same filesystem); else the temp folder.
    try:
        temporary = Path(tempfile.mkdtemp(prefix=f".{directory.name}.publish-", dir=directory.parent))
    except OSError:
        temporary = Path(tempfile.mkdtemp(prefix="accelbench-publish-"))
    try:
        staged = stage(directory, temporary, repo_id, allow_unscored=allow_unscored, manifests=manifests)
        return upload(staged, private=private, revision=revision, token=token, api=api)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------
# Checks and files
# ---------------------------------------------------------------------------------------------------------


def _check_publishable(directory: Path, allow_unscored: bool) -> list[Path]:
    """The generation shards, once the dataset is complete, scored (unless allowed) and reported."""
    parts = sorted((directory / dataset.STAGING_DIR).glob("*/part-*.parquet"))
    if parts:
        raise PublishError(f"{directory} has {len(parts)} unfinished part file(s) in {dataset.STAGING_DIR}/ (a run "
                           f"that was interrupted or is still going): rerun `accelbench generate` with the same "
                           f"arguments to finish them, then publish")
    named = sorted((directory / schema.GENERATIONS_DIR).glob(f"{dataset.SHARD_PREFIX}*.parquet"))
    if not named:
        raise PublishError(f"{directory} has no generation shards ({schema.GENERATIONS_DIR}/"
                           f"{dataset.SHARD_PREFIX}*.parquet): run `accelbench generate` first")
    shards = dataset.readable_parquet(named)
    if len(shards) != len(named):
        bad = next(path for path in named if path not in shards)
        raise PublishError(f"{bad} is not a readable Parquet file: restore or remove it before publishing")
    if not _recipe_dirs(directory):
        if not allow_unscored:
            raise PublishError(f"{directory} has no CLIP scores ({schema.SCORES_DIR}/{schema.CLIP_DIR_PREFIX}*/): "
                               f"run `accelbench score` on it first, or pass --allow-unscored to publish the "
                               f"images and timings alone")
        return shards
    missing = [name for name in REQUIRED_REPORT_FILES if not (directory / schema.REPORT_DIR / name).is_file()]
    if missing:
        raise PublishError(f"{directory} is scored but has no report ({schema.REPORT_DIR}/{missing[0]} is "
                           f"missing): run `accelbench report` on it to write the report")
    return shards


def _recipe_dirs(directory: Path) -> dict[str, Path]:
    """recipe_id -> scores/clip-<recipe_id>/, for the recipes that have score files."""
    found = {}
    for path in sorted((directory / schema.SCORES_DIR).glob(f"{schema.CLIP_DIR_PREFIX}*")):
        if path.is_dir() and list(path.glob("part-*.parquet")):
            found[path.name.removeprefix(schema.CLIP_DIR_PREFIX)] = path
    return found


def _primary_first(recipes: dict[str, Path], summary: list[dict]) -> list[str]:
    """Recipe ids, the one the report was computed with first (it becomes the "scores" config); when the
    report names no single known recipe, the first id in sorted order."""
    reported = {row.get("recipe_id") for row in summary} & set(recipes)
    primary = reported.pop() if len(reported) == 1 else next(iter(recipes), None)
    return [primary, *(recipe for recipe in recipes if recipe != primary)] if primary else []


def _prepare_staging(staging_dir: Path, directory: Path, repo_id: str) -> None:
    """Make ``staging_dir`` an empty, marked staging folder: new, empty, or an earlier staging."""
    source, target = directory.resolve(), staging_dir.resolve()
    if target == source or source in target.parents or target in source.parents:
        raise PublishError(f"the staging folder {staging_dir} must be outside the dataset folder {directory} "
                           f"(and not contain it)")
    if staging_dir.exists() and not staging_dir.is_dir():
        raise PublishError(f"{staging_dir} exists and is not a folder")
    if staging_dir.is_dir() and any(staging_dir.iterdir()):
        if not (staging_dir / STAGING_MARKER).is_file():
            raise PublishError(f"{staging_dir} is not empty and not an earlier publish staging: choose a new or "
                               f"empty folder")
        shutil.rmtree(staging_dir)
    staging_dir.mkdir(parents=True, exist_ok=True)
    # Written first, so an interrupted staging is still recognised (and replaced) next time.
    dataset.write_json_atomic(staging_dir / STAGING_MARKER, {"kind": STAGING_KIND, "repo_id": repo_id})


def _plain_files(folder: Path) -> list[Path]:
    """Files of a folder, without hidden ones (temporary names of atomic writes in progress)."""
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith("."))


def _link(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target`` (no space used), or copy it where links are not possible."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or links not permitted
        shutil.copy2(source, target)


# ---------------------------------------------------------------------------------------------------------
# The scores tables
# ---------------------------------------------------------------------------------------------------------


def _column(columns, name: str, rename: str | None = None, doc: str | None = None) -> schema.Column:
    found = next(column for column in columns if column.name == name)
    return schema.Column(rename or name, found.type, found.doc if doc is None else doc, found.hf)


_G, _C, _F = schema.GENERATION_COLUMNS, schema.CLIP_SCORE_COLUMNS, schema.FIDELITY_COLUMNS
_IDENTITY = ("task_id", "setting_id", "variant", "model", "scheduler", "steps", "method", "method_params",
             "batch_size", "prompt_index", "seed")
SCORES_COLUMNS = (
    _column(_G, "record_id", doc="the scored generation row (config 'generations')"),
    *(_column(_G, name) for name in _IDENTITY),
    *(_column(_C, name) for name in ("recipe_id", "clip_model", "clip_pretrained", "clip_preprocess",
                                     "clip_score")),
    _column(_F, "reference_record_id", "baseline_record_id", "the matched baseline image (null for baseline rows)"),
    _column(_F, "psnr", doc="PSNR in dB to the matched baseline image (inf when identical)"),
    _column(_F, "ssim", doc="SSIM to the matched baseline image"),
    _column(_F, "identical", "identical_to_baseline", "pixels bit-identical to the matched baseline image"),
    _column(_F, "reference_record_id", "drift_reference_record_id", "the same image at batch size 1 "
            "(null at batch size 1)"),
    _column(_F, "psnr", "drift_psnr", "PSNR in dB to the same image at batch size 1 (inf when identical)"),
    _column(_F, "ssim", "drift_ssim", "SSIM to the same image at batch size 1"),
    _column(_F, "identical", "drift_identical", "pixels bit-identical to the same image at batch size 1"),
)


def _scores_table(recipe_dir: Path, generations: pa.Table, fidelity: pa.Table) -> pa.Table:
    """One recipe's CLIP scores, one row per record_id, with the row's identity and its fidelity."""
    clip = dataset.read_columns(dataset.readable_parquet(sorted(recipe_dir.glob("part-*.parquet"))),
                                [column.name for column in schema.CLIP_SCORE_COLUMNS], schema.CLIP_SCORE_COLUMNS)
    identity = {row["record_id"]: row for row in generations.select(["record_id", *_IDENTITY]).to_pylist()}
    by_kind: dict[str, dict[str, dict]] = defaultdict(dict)
    for row in fidelity.to_pylist():
        by_kind[row["kind"]].setdefault(row["record_id"], row)
    rows = []
    for score in clip.to_pylist():
        record = score["record_id"]
        row = dict.fromkeys(column.name for column in SCORES_COLUMNS)
        row |= identity.get(record, {})
        row |= {name: score[name] for name in ("record_id", "recipe_id", "clip_model", "clip_pretrained",
                                                "clip_preprocess", "clip_score")}
        for kind, prefix, reference in ((FIDELITY_KINDS[0], "", "baseline_record_id"),
                                        (FIDELITY_KINDS[1], "drift_", "drift_reference_record_id")):
            match = by_kind[kind].get(record)
            if match:
                row[reference] = match["reference_record_id"]
                row[f"{prefix}psnr"], row[f"{prefix}ssim"] = match["psnr"], match["ssim"]
                row["identical_to_baseline" if kind == FIDELITY_KINDS[0] else "drift_identical"] = match["identical"]
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema.arrow_schema(SCORES_COLUMNS))


def _recipe_facts(recipe_id: str, config: str, table: pa.Table, recipe_json: Path) -> dict:
    first = table.slice(0, 1).to_pylist()[0] if table.num_rows else {}
    return {"recipe_id": recipe_id, "config": config, "rows": table.num_rows,
            **{name: first.get(name) for name in ("clip_model", "clip_pretrained", "clip_preprocess")},
            "recipe": json.loads(recipe_json.read_text()) if recipe_json.is_file() else {}}


def _summary_table(directory: Path) -> pa.Table:
    """report/summary.csv with the types of SUMMARY_COLUMNS (a column the CSV lacks is all null)."""
    from pyarrow import csv as pa_csv

    target = schema.arrow_schema(schema.SUMMARY_COLUMNS)
    table = pa_csv.read_csv(directory / schema.REPORT_DIR / "summary.csv", convert_options=pa_csv.ConvertOptions(
        column_types={field.name: field.type for field in target}, strings_can_be_null=True))
    columns = [table.column(field.name) if field.name in table.column_names else pa.nulls(table.num_rows, field.type)
               for field in target]
    return pa.Table.from_arrays(columns, schema=target)


def _read_summary(directory: Path) -> list[dict]:
    path = directory / schema.REPORT_DIR / "summary.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------------------------------------------------
# The dataset card
# ---------------------------------------------------------------------------------------------------------


def _doc(columns, name: str) -> str:
    return next(column.doc for column in columns if column.name == name)


def _cell(value) -> str:
    """A Markdown table cell."""
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _number(value: str | None, digits: int = 3, scale: float = 1.0, suffix: str = "") -> str:
    """A summary.csv value for the card: empty stays empty, inf stays inf, the rest rounded."""
    if value in (None, ""):
        return ""
    number = float(value)
    if number in (float("inf"), float("-inf")):
        return "inf" if number > 0 else "-inf"
    return f"{number * scale:.{digits}g}{suffix}"


def _with_ci(row: dict, name: str, digits: int = 3, scale: float = 1.0, suffix: str = "") -> str:
    value = _number(row.get(name), digits, scale, suffix)
    low, high = (_number(row.get(f"{name}_ci_{end}"), digits, scale) for end in ("low", "high"))
    return f"{value} [{low}, {high}]" if value and low and high else value


def _size_category(rows: int) -> str:
    """The Hub's size_categories value for a row count."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M")]
    return next((label for bound, label in bounds if rows < bound), "10M<n<100M")


def _method_tags(methods, catalog: Catalog) -> list[str]:
    """Tags from the methods' display names: DeepCache -> deepcache, T-GATE -> t-gate, A+B -> both."""
    tags = []
    for method in methods:
        if method == "none":
            continue
        name = catalog.methods[method].name if method in catalog.methods else method
        tags += [part.strip().lower().replace(" ", "-") for part in name.split("+")]
    return list(dict.fromkeys(tags))


def _build_card(repo_id: str, manifest: dict, catalog: Catalog, rows: list[dict], runs: list[dict],
                configs: dict[str, str], counts: dict[str, int], recipes: list[dict], summary: list[dict],
                staging_dir: Path):
    from huggingface_hub import DatasetCard, DatasetCardData

    suite = manifest["suite"]
    methods = sorted({row["method"] for row in rows})
    data = DatasetCardData(
        license=LICENSE, task_categories=["text-to-image"], size_categories=[_size_category(len(rows))],
        pretty_name=f"AccelBench: {suite} suite", tags=[*BASE_TAGS, *_method_tags(methods, catalog)],
        language=["en"],
        configs=[{"config_name": name, "data_files": [{"split": "train", "path": pattern}],
                  **({"default": True} if name == GENERATIONS_CONFIG else {})} for name, pattern in configs.items()],
    )
    prompt_source = _prompt_source(catalog, suite, runs)
    sections = [
        _intro_section(manifest, catalog, rows, configs, counts),
        _tasks_section(catalog, rows),
        _models_methods_section(catalog, rows),
        _generation_section(manifest, rows, runs, prompt_source),
        _scoring_section(recipes) if recipes else
        "## Scores\n\nNot scored: this dataset holds the images and timings only (published with --allow-unscored).",
        _results_section(summary, staging_dir) if summary else "",
        _usage_section(repo_id, configs),
        _columns_section(configs),
        _caveats_section(manifest, catalog, rows, recipes, summary),
        _license_section(rows, prompt_source),
    ]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(filter(None, sections)) + "\n")


def _intro_section(manifest, catalog, rows, configs, counts) -> str:
    suite = manifest["suite"]
    description = catalog.suites[suite].description if suite in catalog.suites else ""
    tasks = {row["task_id"] for row in rows if row["task_id"]}
    failed = sum(row["status"] != schema.STATUS_OK for row in rows)
    what = {GENERATIONS_CONFIG: "one row per image: the image, its prompt, seed, settings, per-stage timings, "
                                "environment",
            SCORES_CONFIG: "CLIP score of each image (the report's recipe), joined with its fidelity to the "
                           "matched baseline and to the same image at batch size 1",
            FIDELITY_CONFIG: "PSNR/SSIM of each image to the image it is compared with, as the scorer wrote it",
            SUMMARY_CONFIG: "the report's summary table: one row per task and variant (pooled and per batch size)"}
    table = _table(["config", "files", "rows", "contents"],
                   [[f"`{name}`", f"`{pattern}`", counts[name],
                     what.get(name, "CLIP scores of another recipe, like `scores`")]
                    for name, pattern in configs.items()])
    return (f"# AccelBench: {suite} suite\n\n"
            f"Images, timings and quality scores of diffusion pipelines with and without training-free acceleration "
            f"methods, generated by accelbench from its `{suite}` suite"
            f"{f' ({description})' if description else ''}: {len(rows)} images of {len(tasks)} tasks, "
            f"{failed} of them failed (kept, with their status and error). Each accelerated image is paired with the "
            f"baseline image of the same model, scheduler, steps, prompt, seed and batch size.\n\n{table}")


def _tasks_section(catalog, rows) -> str:
    tasks: dict[str, dict] = {}
    for row in rows:
        if row["task_id"] and row["task_id"] not in tasks:
            tasks[row["task_id"]] = row
    listing = _table(["task", "model", "scheduler", "steps", "method", "parameters"],
                     [[f"`{task_id}`", row["model"], row["scheduler"], row["steps"], row["method"],
                       ", ".join(f"{key}={value}" for key, value in json.loads(row["method_params"] or "{}").items())]
                      for task_id, row in sorted(tasks.items())])
    # One example text per method, so the examples show the variety of requests.
    examples: dict[str, str] = {}
    for task_id, row in sorted(tasks.items()):
        if task_id in catalog.tasks and row["method"] not in examples:
            examples[row["method"]] = catalog.tasks[task_id].text
    quoted = "\n".join(f"- *{text}*" for text in list(examples.values())[:EXAMPLE_TEXTS])
    settings = {row["setting_id"] for row in rows}
    return ("## Tasks\n\n"
            "A task asks for one pipeline (model, scheduler, number of steps) accelerated by one method with given "
            "parameters, in words; the `gt` rows are images of the reference program that solves it. Tasks with the "
            f"same model, scheduler and steps share one `baseline` (no acceleration): here {len(settings)} "
            f"baseline setting(s) serve {len(tasks)} task(s).\n\n"
            + (f"Example task texts:\n\n{quoted}\n\n" if quoted else "") + listing)


def _models_methods_section(catalog, rows) -> str:
    models: dict[str, set] = defaultdict(set)
    for row in rows:
        models[row["model"]].add(row["model_source"] or "")
    model_table = _table(
        ["model", "name", "loaded from", "denoiser", "resolution"],
        [[f"`{model}`", catalog.models[model].name if model in catalog.models else "",
          ", ".join(f"`{source}`" for source in sorted(sources) if source),
          catalog.models[model].denoiser if model in catalog.models else "",
          ", ".join(sorted({f"{row['width']}×{row['height']}" for row in rows if row["model"] == model}))]
         for model, sources in sorted(models.items())])
    versions = _versions(rows)
    method_rows = []
    for method in sorted({row["method"] for row in rows}):
        entry = catalog.methods.get(method)
        library = entry.library if entry else None
        method_rows.append([f"`{method}`", entry.name if entry else "", library or "",
                            ", ".join(sorted(versions.get(library, ()))) if library else ""])
    return (f"## Models and methods\n\n{model_table}\n\n"
            + _table(["method", "name", "library", "version"], method_rows))


def _versions(rows) -> dict[str, set]:
    versions: dict[str, set] = defaultdict(set)
    for text in {row["versions"] for row in rows if row["versions"]}:
        for package, version in json.loads(text).items():
            versions[package].add(str(version))
    return versions


def _prompt_source(catalog, suite_id, runs) -> str:
    """Where the prompts came from, as words (empty when the suite is not in the catalogue)."""
    suite = catalog.suites.get(suite_id)
    if any("--prompts" in (run.get("argv") or []) for run in runs):
        return "a prompt file given on the command line"
    if suite and suite.prompts.hub:
        return (f"the Hub dataset [`{suite.prompts.hub}`](https://huggingface.co/datasets/{suite.prompts.hub}) "
                f"(column `{suite.prompts.column}`, in order)")
    if suite and suite.prompts.file:
        return f"the suite's prompt file `{suite.prompts.file.name}`"
    return "the suite manifest" if suite else ""


def _generation_section(manifest, rows, runs, prompt_source) -> str:
    def values(name, found=None):
        found = {row[name] for row in rows if row[name] is not None} if found is None else found
        return ", ".join(str(value) for value in sorted(found)) or "?"

    prompts = sorted({(row["prompt_index"], row["prompt"]) for row in rows})
    examples = "\n".join(f"  - {prompt}" for _, prompt in prompts[:EXAMPLE_TEXTS])
    stages = ", ".join(f"`{name}` ({_doc(schema.GENERATION_COLUMNS, name)})"
                       for name in ("text_encode_s", "denoise_s", "vae_decode_s", "postprocess_s"))
    version_table = _table(["package", "version"],
                           [[package, ", ".join(sorted(found))] for package, found in sorted(_versions(rows).items())])
    world_sizes = values("world_size", {run["world_size"] for run in runs if run.get("world_size")})
    hours = sum(float(run.get("seconds") or 0) for run in runs) / 3600
    return (
        "## How the images were generated\n\n"
        f"- **Prompts**: {len(prompts)}{f', from {prompt_source}' if prompt_source else ''}, e.g.\n{examples}\n"
        f"- **Seeds**: suite seed(s) {values('seed')}; every image has its own `torch.Generator` on "
        f"`{values('generator_device')}`, seeded from (seed, prompt index), so its initial noise does not depend on "
        f"the batch size, its position in the batch or what ran before. Global RNGs are reset before every program "
        f"load and every call, and each program is loaded fresh.\n"
        f"- **Batch sizes**: {values('batch_size')}, each with {values('warmup_batches')} untimed warm-up batch(es) "
        f"before the first timed batch; warm-up images are never recorded.\n"
        f"- **Timing**: timer `{values('timer')}` (one of: {_doc(schema.GENERATION_COLUMNS, 'timer')}). "
        f"`batch_latency_s` is the whole `generate()` call of the batch; stages: {stages}. `peak_memory_bytes`: "
        f"{_doc(schema.GENERATION_COLUMNS, 'peak_memory_bytes')}.\n"
        f"- **Hardware**: {values('device_name')} (device {values('device')})"
        + (f"; {len(runs)} run record(s) (one per run and rank, world size {world_sizes}), {hours:.2f} h of "
           f"generate time (summed over ranks)" if runs else "") + ".\n"
        f"- **Weights**: `{manifest.get('weights')}` ({_doc(schema.GENERATION_COLUMNS, 'weights')}); "
        f"dtype {values('dtype')} (suite policy `{manifest.get('dtype')}`).\n"
        f"- **Programs**: the source of every program is in `programs/<program_sha256>.py`; each run's command "
        f"line, environment and counts are in `runs/`.\n\n"
        f"Library versions:\n\n{version_table}")


def _scoring_section(recipes) -> str:
    recipe_table = _table(
        ["config", "recipe_id", "CLIP model", "pretrained", "preprocessing", "rows"],
        [[f"`{r['config']}`", f"`{r['recipe_id']}`", r["clip_model"], r["clip_pretrained"], r["clip_preprocess"],
          r["rows"]] for r in recipes])
    # recipe.json's further fields (score formula, text handling, open_clip version, notes), the table's omitted.
    shown = {"recipe_id", "clip_model", "clip_pretrained", "clip_preprocess"}
    recorded = "\n".join(f"- `{r['config']}`: " + "; ".join(f"{key}: {value}" for key, value in r["recipe"].items()
                                                            if key not in shown and value not in ("", None))
                         for r in recipes if set(r["recipe"]) - shown)
    s = schema.SUMMARY_COLUMNS
    return (
        "## How the scores were computed\n\n"
        f"- **CLIP score** (open_clip): {_doc(schema.CLIP_SCORE_COLUMNS, 'clip_score')}. Recipes (model, "
        f"pretrained weights, clamping) differ between papers, so every score row names its recipe (below).\n"
        f"- **Fidelity**: PSNR ({_doc(schema.FIDELITY_COLUMNS, 'psnr')}) and SSIM "
        f"({_doc(schema.FIDELITY_COLUMNS, 'ssim')}) of each image to the matched baseline image (same model, "
        f"scheduler, steps, prompt, seed, batch size); batch-size drift compares an image with the same image "
        f"generated at batch size 1.\n"
        f"- **Speedup**: {_doc(s, 'speedup')}; **denoise speedup**: the same for `denoise_s` alone.\n"
        f"- **Quality loss**: {_doc(s, 'quality_loss')} (positive: the accelerated images score lower).\n"
        f"- **Confidence intervals**: 95 % paired bootstrap CIs (`*_ci_low`, `*_ci_high`) of speedup, denoise "
        f"speedup, CLIP score, quality loss, PSNR and SSIM.\n"
        f"- **Flags**: {_doc(s, 'flags')}.\n\n"
        f"CLIP recipes:\n\n{recipe_table}"
        + (f"\n\nMore from each recipe's `recipe.json` (beside its config's data):\n\n{recorded}" if recorded
           else ""))


def _results_section(summary, staging_dir) -> str:
    pooled = [row for row in summary if row.get("batch_size") == "all"] or summary
    table = _table(
        ["task", "variant", "method", "batch size", "images (failed)", "ms/image", "speedup [95 % CI]",
         "denoise speedup", "CLIP", "quality loss [95 % CI]", "PSNR dB", "SSIM", "flags"],
        [[f"`{row.get('task_id')}`", row.get("variant"), row.get("method"), row.get("batch_size"),
          f"{row.get('images')} ({row.get('failed')})", _number(row.get("median_image_latency_s"), 4, 1000),
          _with_ci(row, "speedup", suffix="×"), _with_ci(row, "denoise_speedup", suffix="×"),
          _with_ci(row, "clip_score"), _with_ci(row, "quality_loss", 3, 100, " %"), _with_ci(row, "psnr"),
          _with_ci(row, "ssim"), row.get("flags")] for row in pooled])
    hardware = sorted({row.get("device_name") for row in summary if row.get("device_name")})
    report = staging_dir / schema.REPORT_DIR
    extra = [f"[{path.name}]({schema.REPORT_DIR}/{path.name})" for path in sorted(report.iterdir())
             if path.is_file()]
    return ("## Results\n\n"
            f"From `{schema.REPORT_DIR}/summary.csv` (batch sizes pooled; timings on {', '.join(hardware) or '?'}). "
            f"Per batch size and in full: {', '.join(extra)}.\n\n{table}"
            + (f"\n\n![speedup vs quality]({schema.REPORT_DIR}/pareto.png)" if (report / "pareto.png").is_file()
               else ""))


def _usage_section(repo_id, configs) -> str:
    lines = ["from datasets import load_dataset", "",
             f'generations = load_dataset("{repo_id}", "{GENERATIONS_CONFIG}", split="train")',
             'generations[0]["image"]  # a PIL image; add streaming=True to read rows without downloading them all']
    if SCORES_CONFIG in configs:
        lines += ["", f'scores = load_dataset("{repo_id}", "{SCORES_CONFIG}", split="train").to_pandas()  # no images',
                  'scores[scores.variant == "gt"].groupby("task_id")[["clip_score", "psnr", "ssim"]].mean()']
    code = "\n".join(lines)
    return ("## How to use it\n\n```python\n" + code + "\n```\n\n"
            "Every config has one split, `train`, and every table the column `record_id` to join on. Images are "
            "lossless PNG; `image_sha256` identifies identical pixels, and `programs/` holds the code of every row.")


def _columns_section(configs) -> str:
    tables = {GENERATIONS_CONFIG: schema.GENERATION_COLUMNS, SCORES_CONFIG: SCORES_COLUMNS,
              FIDELITY_CONFIG: schema.FIDELITY_COLUMNS, SUMMARY_CONFIG: schema.SUMMARY_COLUMNS}
    blocks = []
    for name, columns in tables.items():
        if name not in configs:
            continue
        listing = _table(["column", "type", "meaning"],
                         [[f"`{c.name}`", "image" if c.hf == "image" else str(c.type),
                           c.doc or "95 % CI bound of the column above"] for c in columns])
        blocks.append(f"<details><summary><code>{name}</code></summary>\n\n{listing}\n\n</details>")
    return "## Columns\n\n" + "\n\n".join(blocks)


def _caveats_section(manifest, catalog, rows, recipes, summary) -> str:
    weights = manifest.get("weights")
    libraries = {catalog.methods[method].library for method in {row["method"] for row in rows}
                 if method in catalog.methods}
    denoisers = {catalog.models[model].denoiser for model in {row["model"] for row in rows} if model in catalog.models}
    statuses = Counter(row["status"] for row in rows)
    no_ops = sorted({row["task_id"] for row in summary if "no-op" in (row.get("flags") or "").split(";")})
    caveats = []
    if weights == "tiny":
        caveats.append("The models are **tiny synthetic** networks: images are noise-like, CLIP scores and quality "
                       "losses are meaningless, and timings do not represent the real models.")
    elif weights == "random":
        caveats.append("The models have the real architectures but **random weights**: images are noise-like, so "
                       "CLIP scores and quality losses are meaningless; timings and speedups are representative "
                       "(same shapes and operations as the real models).")
    if any(recipe["clip_pretrained"] == "random" for recipe in recipes):
        caveats.append("A CLIP recipe uses a randomly initialised CLIP model (`clip_pretrained` = random): its "
                       "scores are meaningless.")
    if len({row["batch_size"] for row in rows}) > 1:
        caveats.append("Each image's initial noise is the same at every batch size, yet results drift numerically "
                       "with the batch size (visibly on GPUs in float16, where other kernels are chosen). Compare "
                       "images at the same batch size; `drift_psnr` in `scores` measures the drift.")
    if "tgate" in libraries:
        caveats.append("T-GATE patches every attention module of the pipeline for good (it has no unload), so a "
                       "pipeline used with T-GATE must not be reused without it. Here every program is loaded "
                       "fresh, so no row is affected.")
    if {"DeepCache", "tomesd"} & libraries and "transformer" in denoisers:
        caveats.append("DeepCache and ToMe patch UNets only: transformer (PixArt) pipelines have no tasks with them.")
    if no_ops:
        caveats.append(f"The report flags {', '.join(f'`{task}`' for task in no_ops)} as `no-op`: the accelerated "
                       f"images are bit-identical to the baseline (e.g. ToMe on SDXL at `max_downsample=1` patches "
                       f"no layer that runs), so any speedup there is noise.")
    if statuses.get(schema.STATUS_OK, 0) != len(rows):
        failed = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items())
                           if status != schema.STATUS_OK)
        caveats.append(f"Not every image was generated ({failed}): such rows have no image, keep their `status` "
                       f"and `error`, and are left out of the scores.")
    caveats.append("Timings hold for the hardware and library versions above; speedups of the same method vary "
                   "with both, and with the batch size.")
    return "## Caveats\n\n" + "\n".join(f"- {text}" for text in caveats)


def _license_section(rows, prompt_source) -> str:
    sources = sorted({row["model_source"] for row in rows if row["model_source"] and "/" in row["model_source"]
                      and not row["model_source"].startswith("/")})
    models = f" ({', '.join(f'`{source}`' for source in sources)})" if sources else ""
    prompts = f" The prompts come from {prompt_source}." if prompt_source else ""
    return ("## License\n\n"
            f"Apache-2.0, like accelbench and PartiPrompts, the benchmark's prompt set.{prompts} Images made with "
            f"pretrained weights are also subject to the licence of the model that produced them{models}.")
