"""What ``generate`` is asked to do: :class:`GenerateOptions`, one field per command-line option, each default
written once (the CLI's help shows these same values). No torch here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from accelbench.builder.audit import DEFAULT_AUDIT_FRACTION
from accelbench.builder.isolation import SANDBOXES
from accelbench.builder.worker import DEFAULT_LOAD_TIMEOUT_S, DEFAULT_WARMUP_TIMEOUT_S
from accelbench.schema import TIMING_MODES

# --gate: what is judged before timing (the baseline never is): submissions, also the GT programs, or nothing.
GATE_SUBMISSIONS, GATE_ALL, GATE_NONE = GATE_MODES = ("submissions", "all", "none")


@dataclass(frozen=True)
class GenerateOptions:
    suite: str
    out: Path
    tasks: list[str] | None = None  # None: the suite's
    variants: list[str] | None = None  # None: baseline, gt and every submission
    limit: int | None = None
    device: str | None = None  # None: cuda if available, else cpu
    weights: str | None = None  # None: the suite's
    shard: tuple[int, int] | None = None  # None: RANK/WORLD_SIZE from the launcher, else 0/1
    prompts_file: Path | None = None
    seeds: list[int] | None = None  # None: the suite's
    warmup_batches: int | None = None  # None: the suite's
    model_paths: dict[str, str] = field(default_factory=dict)  # family -> local folder (pretrained weights)
    submissions: list[Path] = field(default_factory=list)
    timing: str = TIMING_MODES[0]
    max_resident: int | None = None  # None: as many as fit (CUDA: from the baseline's footprint)
    call_timeout: float | None = None  # None: max(60 s, 10 x the baseline's median batch latency)
    load_timeout: float = DEFAULT_LOAD_TIMEOUT_S
    warmup_timeout: float = DEFAULT_WARMUP_TIMEOUT_S  # each warm-up call: compilation and autotuning happen there
    sandbox: str = SANDBOXES[0]
    gate: str = GATE_MODES[0]  # which programs must pass the correctness gate before they are timed
    audit_fraction: float = DEFAULT_AUDIT_FRACTION  # of a gated submission's timed batches, replayed traced
    seed_key: str | None = None  # None: the dataset's, or a new random one for a new dataset
    repeats: int | None = None  # None: the suite's; each a fresh set of workers, every image timed once per repeat
    retry_failed: bool = False
    encode_workers: int | None = None
    progress: bool = True
