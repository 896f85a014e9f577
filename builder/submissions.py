"""Submissions: folders of programs written for the tasks, where a submission enters the harness (the task pack
agents write them from is :mod:`accelbench.builder.task_pack`).

A submission is a folder of programs named ``<task_id>.py``, plus an optional ``submission.yaml``::

    name: my-agent-v1        # default: the folder's name; [A-Za-z0-9._-]+, not baseline, gt or reference
    author: Jane Doe
    model: some-llm-2026-10  # the agent or model that wrote the programs
    date: 2026-11-29
    notes: free text

Each program follows the contract in :mod:`accelbench.builder.programs` and runs as the variant ``sub:<name>``.
A task of the selected suite with no file gives rows with status ``missing``. No torch here.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from accelbench import schema
from accelbench.builder import programs
from accelbench.builder.programs import Program
from accelbench.errors import UserInputError
from accelbench.manifest import Suite, did_you_mean

NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
INFO_FILE = "submission.yaml"
INFO_KEYS = ("name", "author", "model", "date", "notes")
# The harness's own variants (and the reference programs of target tasks), in any case.
RESERVED_NAMES = (schema.BASELINE, schema.GT, "reference")


class SubmissionError(UserInputError):
    """A submission folder that cannot be run, as one line."""


@dataclass(frozen=True)
class Submission:
    name: str
    folder: Path
    info: dict[str, str]  # submission.yaml, as given (name included)
    programs: dict[str, Program] = field(default_factory=dict)  # task id -> program


def load_submission(folder: Path, suite: Suite) -> Submission:
    """Read and check one submission folder against the tasks of ``suite``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SubmissionError(f"--submission {folder}: no such folder")
    info = _read_info(folder)
    name = info.get("name", folder.resolve().name)
    if (not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or set(name) == {"."}
            or name.lower() in RESERVED_NAMES):
        raise SubmissionError(f"{folder}: submission name {name!r} must match [A-Za-z0-9._-]+, not be dots alone "
                              f"and not be {', '.join(RESERVED_NAMES)} in any case (set `name:` in {INFO_FILE})")
    files = sorted(folder.glob("*.py"))
    if not files:
        raise SubmissionError(f"{folder}: no programs (<task_id>.py files) in this submission folder")
    found = {}
    for path in files:
        task_id = path.stem
        if task_id not in suite.tasks:
            raise SubmissionError(f"{path}: {task_id!r} is not a task of suite {suite.id!r}"
                                  f"{did_you_mean(task_id, suite.tasks)}")
        found[task_id] = Program(programs.read_program(path), origin=str(path))
    return Submission(name, folder, info, found)


def load_submissions(folders, suite: Suite) -> list[Submission]:
    submissions = [load_submission(folder, suite) for folder in folders]
    seen: dict[str, Path] = {}
    for submission in submissions:
        key = submission.name.lower()  # file names are made from it: two that differ in case may collide
        if key in seen:
            raise SubmissionError(f"two submissions are named {submission.name!r} ({seen[key]} and "
                                  f"{submission.folder}); give one another `name:` in {INFO_FILE}")
        seen[key] = submission.folder
    return submissions


def _read_info(folder: Path) -> dict[str, str]:
    path = folder / INFO_FILE
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise SubmissionError(f"{path}: not readable YAML ({str(error).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SubmissionError(f"{path}: expected a mapping of {', '.join(INFO_KEYS)}")
    for key, value in data.items():
        if key not in INFO_KEYS:
            raise SubmissionError(f"{path}: unknown key {key!r}{did_you_mean(key, INFO_KEYS)}; allowed: "
                                  f"{', '.join(INFO_KEYS)}")
        if not isinstance(value, (str, int, float, datetime.date)) or isinstance(value, bool):  # YAML reads dates
            raise SubmissionError(f"{path}: {key} must be text, got {type(value).__name__}")
    return {key: str(value) for key, value in data.items()}
