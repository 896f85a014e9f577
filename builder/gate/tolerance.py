"""How close a candidate's images must be to the GT's, in uint8 levels (0-255); both bounds must hold.

Calibrated with ``bench/gate_calibration.py`` on the tiny models, CPU, float32 (each GT and baseline program
against itself at another batch size and position, and with another thread count;
``bench/results/gate_calibration.json``, checked against these constants by ``tests/test_calibration.py``).
A method may add its own tolerance for a freedom its tasks do not fix (``gate_tolerance`` in methods.yaml:
ToMe's merge-pattern seed). Devices and dtypes without a calibration get :data:`UNCALIBRATED`, and every gate
widens its tolerance to twice the GT's own spread where that is larger (:mod:`.judge`).
"""

from __future__ import annotations

from dataclasses import dataclass

from accelbench import schema
from accelbench.manifest import Method, Task


@dataclass(frozen=True)
class Tolerance:
    """How far (uint8 levels) a candidate's images may be from the GT's: both bounds must hold."""

    max_abs: int
    mean_abs: float
    basis: str

    def allows(self, max_abs: int, mean_abs: float) -> bool:
        return max_abs <= self.max_abs and mean_abs <= self.mean_abs

    def __str__(self) -> str:
        return f"max |diff| <= {self.max_abs}, mean <= {self.mean_abs:g} ({self.basis})"


CPU_FP32 = Tolerance(3, 0.05, "CPU float32, calibrated")
UNCALIBRATED = Tolerance(24, 1.5, "not calibrated for this device/dtype")


def tolerance(task: Task, method: Method, device: str, dtype: str, variant: str = schema.GT) -> Tolerance:
    """The image tolerance for ``task`` (of ``method``) on device/dtype: for its GT, or for its baseline with
    ``variant="baseline"`` (a baseline has no method, hence no method tolerance)."""
    base = _device_tolerance(device, dtype)
    own = method.gate_tolerance
    if variant == schema.BASELINE or own is None or (own.when is not None and not task.params.get(own.when)):
        return base
    return Tolerance(max(base.max_abs, own.max_abs), max(base.mean_abs, own.mean_abs), own.basis)


def widest_tolerance(methods, device: str, dtype: str) -> Tolerance:
    """The tolerance of a target task's own checks (independent): its method is the program's choice, so every
    method's own freedom is allowed (ToMe's merge seed), on top of the device's numerics."""
    base = _device_tolerance(device, dtype)
    own = [method.gate_tolerance for method in methods if method.gate_tolerance is not None]
    if not own:
        return base
    return Tolerance(max(base.max_abs, *(t.max_abs for t in own)), max(base.mean_abs, *(t.mean_abs for t in own)),
                     f"{base.basis}, widened by every method's own freedom (any method may be chosen)")


def _device_tolerance(device: str, dtype: str) -> Tolerance:
    """The device's own numerics: calibrated for CPU float32, not elsewhere."""
    return CPU_FP32 if device == "cpu" and dtype == "float32" else UNCALIBRATED
