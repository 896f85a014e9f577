"""Publish a scored dataset folder to the Hugging Face Hub: check it, stage a Hub-ready folder, upload it.

:func:`stage` turns ``DIR`` (layout in :mod:`accelbench.schema`) into a folder the Hub and ``datasets`` read
directly, without modifying ``DIR`` (large files are hard-linked where the filesystem allows, else copied;
``DIR``'s writers only ever replace files by atomic rename, so a link never sees a later change)::

    README.md                          dataset card (accelbench.hub.card): YAML header + documentation
    accelbench.json                    the dataset manifest
    data/generations/*.parquet         config "generations" (default): the generation shards, images included
    data/scores/scores.parquet         config "scores": the report's CLIP recipe, joined with fidelity and the
                                       rows' identity (SCORES_COLUMNS, accelbench.scorer.store.scores_table)
    data/scores/recipe.json            that recipe, as the scorer recorded it
    data/scores-<recipe_id>/...        config "scores-<recipe_id>": the same for every further CLIP recipe
    data/fidelity/fidelity.parquet     config "fidelity": the scorer's fidelity table (FIDELITY_COLUMNS)
    data/summary/summary.parquet       config "summary": the report's summary (SUMMARY_COLUMNS); Parquet because
                                       ``datasets`` reads all configs of a repo with one format
    data/leaderboard/leaderboard.parquet  config "leaderboard" (datasets with submissions): one row per
                                       submission, the GT first (LEADERBOARD_COLUMNS of the report's fast_p)
    report/                            the report as the scorer wrote it (report.md, pareto.png, summary.csv, ...)
    programs/<sha256>.py, runs/*.json  the programs that produced the rows, and one record per run and rank

:func:`upload` (and :func:`publish`, which stages into a temporary folder and uploads it) creates the dataset
repo if needed and uploads the folder with one ``upload_folder`` call whose ``delete_patterns`` remove the
remote data, programs, runs and report files the new folder no longer has, so re-publishing replaces the data
instead of accumulating stale shards.

Failures and retries: a folder that fits in one commit (with hf_xet, the default, about 250 files; a dataset
holds one shard per program and run) is uploaded as one commit, so a failed upload leaves the remote repo as it
was. A larger folder is committed in batches ("... (part N)"): an upload interrupted after the first batch
leaves those files committed. Either way, re-running ``publish`` re-stages the same files and uploads again;
huggingface_hub skips files already committed unchanged and deduplicates data already uploaded, so the rerun
completes the repo. A Hub that cannot be reached (no network, ``HF_HUB_OFFLINE=1``) raises
:class:`HubUnreachableError` (``accelbench publish`` exits 1), a refused token :class:`PublishError`.

huggingface_hub is imported inside the functions that need it: the CLI imports this module.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from accelbench import dataset, schema, task_facts
from accelbench.errors import RunError, UserInputError
from accelbench.hub import card
from accelbench.scorer import grids, leaderboard_files, report, store

STAGING_MARKER = ".accelbench-publish.json"  # marks a folder as a staging this module made (never uploaded)
STAGING_KIND = "accelbench-publish-staging"
REQUIRED_REPORT_FILES = (report.SUMMARY_CSV, report.REPORT_MD)  # what the card is built from
# Remote paths this module owns: whatever matches and is not in the new upload is deleted by the commit.
# README.md and accelbench.json are always re-uploaded, so they are replaced without being listed here.
OWNED_REMOTE_PATTERNS = tuple(f"{folder}/*" for folder in (schema.GENERATIONS_DIR, schema.PROGRAMS_DIR,
                                                          schema.RUNS_DIR, schema.REPORT_DIR))


class PublishError(UserInputError):
    """Why a dataset cannot be published (yet), as one line for the user."""


class HubUnreachableError(RunError):
    """The Hugging Face Hub could not be reached, as one line for the user (not bad input: exit code 1)."""


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


def stage(directory: Path, staging_dir: Path, repo_id: str, allow_unscored: bool = False) -> StagedDataset:
    """Check ``directory`` is publishable and write the Hub-ready folder ``staging_dir`` (``--dry-run``), from
    the dataset alone (its task facts give the card its task texts, model and method names).

    ``staging_dir`` must be new, empty or an earlier staging (which is replaced)."""
    check_repo_id(repo_id)
    directory, staging_dir = Path(directory), Path(staging_dir)
    manifest = dataset.read_manifest(directory)
    shards = _check_publishable(directory, allow_unscored)
    recipe_ids = store.clip_recipe_ids(directory)
    summary = report.read_summary(directory) if recipe_ids else None
    _prepare_staging(staging_dir, directory, repo_id)

    configs = {card.GENERATIONS_CONFIG: f"{schema.GENERATIONS_DIR}/{card.GENERATIONS_CONFIG}/*.parquet"}
    rows = {card.GENERATIONS_CONFIG: sum(pq.read_metadata(path).num_rows for path in shards)}

    def add_config(name: str, table: pa.Table) -> Path:
        folder = staging_dir / schema.GENERATIONS_DIR / name
        dataset.write_table_atomic(table, folder / f"{name}.parquet")
        configs[name] = f"{schema.GENERATIONS_DIR}/{name}/*.parquet"
        rows[name] = table.num_rows
        return folder

    for path in shards:
        dataset.link_or_copy(path, staging_dir / schema.GENERATIONS_DIR / card.GENERATIONS_CONFIG / path.name)
    for name in (schema.PROGRAMS_DIR, schema.RUNS_DIR, schema.REPORT_DIR, schema.TASKS_DIR,
                 f"{schema.REPORT_DIR}/{grids.GRIDS_DIR}"):
        for path in dataset.plain_files(directory / name):
            dataset.link_or_copy(path, staging_dir / name / path.name)
    dataset.link_or_copy(directory / schema.DATASET_MANIFEST, staging_dir / schema.DATASET_MANIFEST)

    recipe_ids = _primary_first(recipe_ids, summary)
    recipes = []
    for index, recipe_id in enumerate(recipe_ids):
        name = card.SCORES_CONFIG if index == 0 else f"{card.SCORES_CONFIG}-{recipe_id}"
        folder = add_config(name, store.scores_table(directory, recipe_id))
        dataset.link_or_copy(store.clip_dir(directory, recipe_id) / store.RECIPE_FILE, folder / store.RECIPE_FILE)
        recipes.append({"config": name, "rows": rows[name], "recipe": store.read_recipe(directory, recipe_id)})
    fidelity = store.read_fidelity(directory)
    if fidelity.num_rows:
        add_config(card.FIDELITY_CONFIG, fidelity)
    if summary is not None:
        add_config(card.SUMMARY_CONFIG, summary)
    board = None
    if (directory / schema.REPORT_DIR / leaderboard_files.LEADERBOARD_CSV).is_file():
        board = leaderboard_files.read(directory)
        add_config(card.LEADERBOARD_CONFIG, leaderboard_files.read_leaderboard(directory))

    verdicts = store.read_gate_verdicts(directory)
    if verdicts is not None:
        add_config(card.GATE_CONFIG, verdicts)

    runs = [json.loads(path.read_text()) for path in dataset.plain_files(directory / schema.RUNS_DIR)
            if path.suffix == ".json"]
    generations = dataset.read_generations(directory).to_pylist()
    dataset_card = card.build_card(
        repo_id=repo_id, manifest=manifest, facts=task_facts.read(directory, generations)[0], rows=generations,
        runs=runs, configs=configs, counts=rows, recipes=recipes,
        summary=summary.to_pylist() if summary is not None else [], staging_dir=staging_dir, board=board)
    dataset_card.save(staging_dir / "README.md")
    files = [path for path in staging_dir.rglob("*") if path.is_file() and path.name != STAGING_MARKER]
    return StagedDataset(path=staging_dir, repo_id=repo_id, suite=manifest["suite"], configs=configs, rows=rows,
                         files=len(files), bytes=sum(path.stat().st_size for path in files), recipes=recipe_ids)


def upload(staged: StagedDataset, private: bool = False, revision: str | None = None, token: str | None = None,
           api=None) -> str:
    """Upload a staged folder to the dataset repo ``staged.repo_id``; return the repo's URL (on ``revision``).

    ``token``: passed to every call; None lets huggingface_hub resolve it (HF_TOKEN, then the cached login).
    ``api``: an ``HfApi`` (tests inject a fake one). Raises :class:`HubUnreachableError` when the Hub cannot be
    reached, :class:`PublishError` when it refuses the token or the repo (see the module docstring on retries)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled
    from huggingface_hub.utils import httpx  # the HTTP library of this huggingface_hub version

    api = api or HfApi()
    repo_id = staged.repo_id
    uploading = False
    try:
        url = str(api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True, token=token))
        # create_repo(exist_ok=True) leaves an existing repo's visibility alone: never upload "private" data
        # into a repo that turns out to be public.
        if private and not api.repo_info(repo_id, repo_type="dataset", token=token).private:
            raise PublishError(f"{repo_id} already exists and is public; --private does not change an existing "
                               f"repo's visibility: make it private on the Hub first, or choose another --repo-id")
        if revision:
            api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True, token=token)
        uploading = True
        api.upload_folder(
            repo_id=repo_id, folder_path=str(staged.path), repo_type="dataset", revision=revision,
            commit_message=f"accelbench publish: suite {staged.suite}, "
                           f"{staged.rows[card.GENERATIONS_CONFIG]} images",
            delete_patterns=list(OWNED_REMOTE_PATTERNS), ignore_patterns=[STAGING_MARKER], token=token,
        )
    except (OfflineModeIsEnabled, httpx.TransportError) as error:
        reason = ("offline: HF_HUB_OFFLINE=1 is set" if isinstance(error, OfflineModeIsEnabled)
                  else f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no detail'}")
        outcome = ("the upload did not finish: run publish again to complete it" if uploading
                   else "nothing was uploaded")
        raise HubUnreachableError(f"cannot reach the Hugging Face Hub ({reason}); {outcome}") from None
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
            allow_unscored: bool = False, token: str | None = None, api=None) -> str:
    """Stage ``directory`` into a temporary folder beside it and upload it; return the dataset's URL.

    Nothing is kept locally: the staging is removed, whether the upload succeeded or not; a rerun stages anew."""
    check_repo_id(repo_id)
    directory = Path(directory).resolve()
    # Beside the dataset, so shards are hard-linked rather than copied (same filesystem); else the temp folder.
    try:
        temporary = Path(tempfile.mkdtemp(prefix=f".{directory.name}.publish-", dir=directory.parent))
    except OSError:
        temporary = Path(tempfile.mkdtemp(prefix="accelbench-publish-"))
    try:
        staged = stage(directory, temporary, repo_id, allow_unscored=allow_unscored)
        return upload(staged, private=private, revision=revision, token=token, api=api)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------
# Checks and files
# ---------------------------------------------------------------------------------------------------------


def _check_publishable(directory: Path, allow_unscored: bool) -> list[Path]:
    """The generation shards, once the dataset is complete, readable, scored (unless allowed) and reported."""
    problem = store.unfinished_problem(directory)
    if problem:
        raise PublishError(problem)
    dataset.verify_shards(directory)  # nothing published that changed after its run wrote it
    shards = dataset.shard_files(directory)
    if not shards:
        raise PublishError(f"{directory} has no generation shards ({schema.GENERATIONS_DIR}/"
                           f"{schema.SHARD_PREFIX}*.parquet): run `accelbench generate` first")
    if not store.clip_recipe_ids(directory):
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


def _primary_first(recipe_ids: list[str], summary: pa.Table | None) -> list[str]:
    """Recipe ids, the one the report was computed with first (it becomes the "scores" config); when the
    report names no single scored recipe, the first id in sorted order."""
    reported = set(summary.column("recipe_id").to_pylist()) & set(recipe_ids) if summary is not None else set()
    primary = reported.pop() if len(reported) == 1 else next(iter(recipe_ids), None)
    return [primary, *(recipe for recipe in recipe_ids if recipe != primary)] if primary else []


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
