"""What one generate run shares: :class:`RunContext` (fixed once the run starts) and :class:`RunState` (what it
learns as it goes). The round scheduler, the lanes and the gate before timing all work on these two."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from accelbench.builder import plan
from accelbench.builder.audit import Audit
from accelbench.builder.device_quiet import DeviceQuiet
from accelbench.builder.options import GATE_NONE, GenerateOptions
from accelbench.builder.sources import ModelSources
from accelbench.builder.writer import ShardWriter
from accelbench.manifest import Catalog


@dataclass(frozen=True)
class RunContext:
    """What every setting of one generate run shares, fixed once the run starts."""

    options: GenerateOptions
    catalog: Catalog
    suite_id: str
    prompts: list[str]
    seeds: list[int]
    seed_key: str  # the dataset's: what image seeds are derived with (:mod:`accelbench.builder.seeding`)
    batch_sizes: list[int]
    sources: ModelSources
    device: str
    dtype_policy: str
    warmups: int
    repeats: int  # each setting's lanes run this many times, with fresh workers
    columns: dict  # the columns that are the same on every row of the run
    writer: ShardWriter
    progress: object  # tqdm
    threads: int
    worker_cores: list[int] | None
    before_round: Callable[[int], None] | None = None  # benchmarks: called before each round of a group
    device_quiet: DeviceQuiet | None = None  # CUDA: the check that no worker leaves device work running

    def is_gated(self, unit: plan.Unit) -> bool:
        """Whether ``unit`` had to pass the gate before it is timed."""
        return unit.submission is not None and self.options.gate != GATE_NONE


@dataclass
class RunState:
    """What the run learns as it goes: what is written, who was rejected, what failed."""

    done: set[str]  # record ids that need no more work
    stored: dict[str, str]  # record_id -> image_sha256 of its ok row: what a re-rendered baseline must match
    target_settings: frozenset[str] = frozenset()  # settings with target tasks: their baselines' warm-ups traced
    rejected: dict[str, str] = field(default_factory=dict)  # unit label -> why the gate rejected it (one line)
    gt_traces: dict[tuple[str, int], dict] = field(default_factory=dict)  # (task, batch size) -> GT warm-up trace
    # (setting, batch size) -> the baseline's warm-up trace: what target tasks' submissions are checked against
    baseline_traces: dict[tuple[str, int], dict] = field(default_factory=dict)
    failed_rows: int = 0
    reference_failed_rows: int = 0  # of baseline and GT programs: these fail the run
    failures: dict[str, str] = field(default_factory=dict)  # unit label -> its first error
    baseline_rerenders: int = 0
    baseline_mismatches: list[str] = field(default_factory=list)
    confinement: dict | None = None  # what the first worker found: {"confined", "reason"}
    lane_orders: list[dict] = field(default_factory=list)  # with repeats: each repeat's order of a setting's units
    audit: Audit = field(default_factory=Audit)
    # unit label -> the batches of its rows held back until its audit is over: (the lane's hold label, columns,
    # batch, round, records)
    held: dict[str, list[tuple[str, dict, plan.Batch, int, frozenset]]] = field(default_factory=dict)
    retimed: list[dict] = field(default_factory=list)  # submissions re-timed beside a fresh baseline (run record)
    _warmups: dict[tuple[str, int], tuple[list[str], list[int]]] = field(default_factory=dict)

    def warmup_inputs(self, setting_id: str, batch_size: int, prompts: list[str]) -> tuple[list[str], list[int]]:
        """The warm-up batch of a setting at a batch size: the run's own prompts with seeds from OS randomness
        (no timed image uses them, and nothing marks a warm-up apart from a timed call), drawn once, so the GT's
        traced warm-up and a submission's see the same batch."""
        key = (setting_id, batch_size)
        if key not in self._warmups:
            draw = secrets.SystemRandom()
            self._warmups[key] = ([draw.choice(prompts) for _ in range(batch_size)],
                                  [draw.getrandbits(63) for _ in range(batch_size)])
        return self._warmups[key]
