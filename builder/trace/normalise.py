"""Deterministic JSON values for traces: numbers rounded to 6 significant digits, tensors and objects
summarised, classes named by identity. torch and diffusers are only looked at, never imported at module level."""

from __future__ import annotations

import json
import math
from typing import Any


def number(value) -> float | int | str:
    """An int as is; a float rounded to 6 significant digits; NaN and infinity as strings (JSON has neither)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return float(f"{value:.6g}")


def json_value(value) -> Any:
    """A JSON value for a config entry or a step argument: numbers rounded, tensors and objects summarised."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return number(value)
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        if len(shape) == 0 or (hasattr(value, "numel") and value.numel() == 1) or getattr(value, "size", 2) == 1:
            try:
                return number(value.item())
            except (TypeError, ValueError, RuntimeError):
                pass
        return f"tensor{list(shape)}"
    if hasattr(value, "item"):  # numpy scalars
        try:
            return number(value.item())
        except (TypeError, ValueError):
            pass
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def timestep(value) -> Any:
    """A timestep as one number (a tensor whose elements are all equal, as PixArt passes it) or a list."""
    if hasattr(value, "detach"):
        flat = value.detach().reshape(-1).cpu().tolist()
        if not flat:
            return None
        return number(flat[0]) if all(x == flat[0] for x in flat) else [number(x) for x in flat]
    return json_value(value)


def shape(value) -> list[int] | None:
    dims = getattr(value, "shape", None)
    return None if dims is None else [int(x) for x in dims]


def class_id(cls: type) -> str:
    """A class by identity: ``module.QualifiedName``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def is_diffusers_class(cls: type) -> bool:
    """Whether ``cls`` is the class diffusers exports under its name (not a look-alike or a subclass)."""
    if not cls.__module__.startswith("diffusers."):
        return False
    try:
        import diffusers

        return getattr(diffusers, cls.__name__, None) is cls
    except Exception:  # noqa: BLE001 - never let the tracer break a program
        return False


def canonical_json(value) -> str:
    """The one serialisation digests are taken of: sorted keys, no spaces, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)

