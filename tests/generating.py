"""Helpers of the generate tests: runs on the smoke suite, their rows, submission folders, a fake program."""

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from accelbench import dataset
from accelbench.builder import programs
from accelbench.builder.generate import run_generate
from accelbench.builder.options import GenerateOptions
from accelbench.manifest import load_catalog

CATALOG = load_catalog()
SMOKE = CATALOG.suite("smoke")
# The tests' runs share one seed key, so the images of runs into different folders can be compared.
SEED_KEY = "c0ffee00" * 2  # no two smoke images share a grey level in FAKE (seed % 251)
# A small slice for the tests that run generate several times: one UNet method, one DiT, two prompts.
SLICE = ["smoke-sd15-ddim-8-deepcache", "smoke-pixart-alpha-dpmpp_2m-8-tgate"]
SLICE_ARGS = ["--suite", "smoke", "--tasks", ",".join(SLICE), "--limit", "2", "--no-progress", "--seed-key", SEED_KEY]


def generate(out, before_round=None, **options):
    options.setdefault("seed_key", SEED_KEY)
    return run_generate(GenerateOptions(suite="smoke", out=out, progress=False, **options), CATALOG,
                        before_round=before_round)


def rows(directory, columns=None):
    return dataset.read_generations(directory, columns).to_pylist()


def hashes(directory):
    return {row["record_id"]: row["image_sha256"] for row in rows(directory, ["image_sha256"])}


def raw_record_ids(directory):
    """Every record id in every file, duplicates included (the readers would hide them)."""
    return [record for path in dataset.generation_files(directory)
            for record in pq.read_table(path, columns=["record_id"]).column("record_id").to_pylist()]


def submission(folder: Path, programs_by_task: dict[str, str], info: str | None = None) -> Path:
    folder.mkdir(parents=True)
    for task_id, source in programs_by_task.items():
        (folder / f"{task_id}.py").write_text(source)
    if info is not None:
        (folder / "submission.yaml").write_text(info)
    return folder


def gt_source(task_id):
    return programs.render(CATALOG, CATALOG.task(task_id)).source


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "accelbench", *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True)


# A program that computes nothing: each image is its generator's seed, modulo 251, as a grey level.
FAKE = '''
import os, sys, time
import numpy as np
import torch

MODEL_ID = "fake"


def load(model_id=MODEL_ID, device="cpu", dtype=None):
    {load}
    return {{"calls": 0}}


def generate(pipe, prompts, generators, height=64, width=64):
    {generate}
    return np.stack([np.full((height, width, 3), g.initial_seed() % 251 / 255, np.float32) for g in generators])
'''
