"""Shared test set-up: offline, quiet, and one synthetic-model cache for the whole session."""

import os
import tempfile
from pathlib import Path

# Set before anything imports huggingface_hub: tests never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("ACCELBENCH_CACHE", tempfile.mkdtemp(prefix="accelbench-test-cache-"))

PARTI_PROMPTS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "parti" / "PartiPrompts.tsv"

