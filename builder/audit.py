"""The audit of what was timed: a gated submission is judged on the real model and its timed batches, not only on
the gate's tiny model and one traced warm-up.

* **Every timed image against the GT's.** The GT renders the same inputs in the same setting (the harness runs it
  for every round its task's submissions need); each timed image of a submission must be within the task's
  tolerance of the GT's image of the same prompt and seed (:func:`accelbench.builder.gate.judge.timed_difference`).
* **A replay of timed batches under the tracer.** After a group's rounds, a sample of the rounds (at least
  :data:`MIN_AUDITED_BATCHES`, ``--audit-fraction`` of them; drawn from OS randomness once the GT's batches are
  timed, shared by the task's submissions, recorded) is rendered again in the same workers, traced: the GT's
  replay gives the reference trace of those inputs, and each submission's replay must give the pixels its timed
  call returned and the GT's trace (:func:`accelbench.builder.gate.judge.replay_difference`). A program that
  behaves one way where it is traced or checked and another where it is timed cannot do both.

A unit the audit rejects gets ``rejected`` rows (reason ``audit: ...``): its rows are held back until its
setting ends (:class:`~accelbench.builder.writer.ShardWriter` keeps them apart) and written only if it passed.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

MIN_AUDITED_BATCHES = 2
DEFAULT_AUDIT_FRACTION = 0.1


@dataclass
class Audit:
    """What the audit of one run holds: the GT's images and replayed traces of each (task, batch size, round),
    the rounds sampled per (task, batch size), the rejections and what each audit cost."""

    fraction: float = DEFAULT_AUDIT_FRACTION
    reference_pixels: dict[tuple[str, int, int], np.ndarray] = field(default_factory=dict)
    reference_traces: dict[tuple[str, int, int], dict] = field(default_factory=dict)
    samples: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    # (task, batch size) -> the tolerance of replays where the GT's own replay was not bit-identical (the device)
    nondeterministic: dict[tuple[str, int], object] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)  # unit label -> "audit: ..."
    records: list[dict] = field(default_factory=list)  # one per audited unit and batch size (the run record's)

    def sample(self, task_id: str, batch_size: int, rounds: set[int]) -> list[int]:
        """The rounds of ``task_id`` at ``batch_size`` to replay: drawn once, after the first of its lanes was
        timed (from OS randomness: nothing a worker can see decides it), at least two, ``fraction`` of them (none
        when the fraction is 0)."""
        key = (task_id, batch_size)
        if key not in self.samples:
            wanted = max(MIN_AUDITED_BATCHES, math.ceil(self.fraction * len(rounds))) if self.fraction > 0 else 0
            count = min(len(rounds), wanted)
            self.samples[key] = sorted(secrets.SystemRandom().sample(sorted(rounds), count))
        return self.samples[key]

    def forget(self, batch_size: int) -> None:
        """Drop the GT's images and traces of a batch size once every lane of it was audited."""
        for store in (self.reference_pixels, self.reference_traces):
            for key in [key for key in store if key[1] == batch_size]:
                del store[key]
