"""Shared test set-up: offline, one thread, one synthetic-model cache for the whole session."""

import os
import shutil
import tempfile

import pytest

# Set before anything imports huggingface_hub or torch: tests never touch the network, and every process of a
# test run (this one, program workers, CLI subprocesses, torchrun ranks) uses one thread. CPU float results
# depend on the thread count, so runs compared bit for bit must agree on it; and tiny models are bound by
# per-operator overhead, where OpenMP's spin-waiting made 2-thread runs ~100x slower while another torch
# process shared the 2 cores.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("ACCELBENCH_CACHE", tempfile.mkdtemp(prefix="accelbench-test-cache-"))


@pytest.fixture
def manifest_root(tmp_path):
    """A copy of the packaged manifest root, to edit."""
    from accelbench.manifest import default_root

    root = tmp_path / "manifests"
    shutil.copytree(default_root(), root, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    return root
