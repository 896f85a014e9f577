"""Checking YAML values: every problem one :class:`ManifestError` line naming the file and the key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from accelbench.manifest.model import PARAM_TYPES, ManifestError, ParamSpec, did_you_mean, unknown_name


class Checker:
    """Checks YAML values of one file, naming the file and key path in every error."""

    def __init__(self, source: Path | str):
        self.source = source

    def fail(self, key: str, problem: str):
        raise ManifestError(self.source, key, problem)

    def mapping(self, value, key: str, required=(), optional=(), any_keys: bool = False) -> dict:
        """Check ``value`` is a mapping; unless ``any_keys``, only ``required`` and ``optional`` keys are allowed."""
        if not isinstance(value, dict):
            self.fail(key, f"must be a mapping, got {type_name(value)}")
        if any_keys:
            return value
        allowed = tuple(dict.fromkeys((*required, *optional)))
        for name in value:
            if name not in allowed:
                where = f"{key}.{name}" if key else str(name)
                self.fail(where, f"unknown key {name!r}{did_you_mean(name, allowed)}; allowed: {', '.join(allowed)}")
        for name in required:
            if name not in value:
                self.fail(f"{key}.{name}" if key else name, "missing required key")
        return value

    def section(self, data, name: str) -> dict:
        """The entries of a file whose only top-level key is ``name`` (``models:``, ``methods:``, ...)."""
        return self.mapping(self.mapping(data, "", required=(name,))[name], name, any_keys=True)

    def string(self, value, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f"must be a non-empty string, got {describe(value)}")
        return value

    def integer(self, value, key: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, got {describe(value)}")
        if minimum is not None and value < minimum:
            self.fail(key, f"must be >= {minimum}, got {value}")
        return value

    def number(self, value, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, f"must be a number, got {describe(value)}")
        return float(value)

    def boolean(self, value, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {describe(value)}")
        return value

    def sequence(self, value, key: str, nonempty: bool = True) -> list:
        if not isinstance(value, list):
            self.fail(key, f"must be a list, got {type_name(value)}")
        if nonempty and not value:
            self.fail(key, "must not be empty")
        return value

    def choice(self, value, key: str, choices, kind: str) -> str:
        if not isinstance(value, str):
            self.fail(key, f"must be a string naming a {kind}, got {describe(value)}")
        if value not in choices:
            self.fail(key, unknown_name(kind, value, choices))
        return value


def type_name(value) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "nothing (null)"}.get(type(value), type(value).__name__)


def describe(value) -> str:
    if isinstance(value, (dict, list)) or value is None:
        return type_name(value)
    return f"{type_name(value)} {value!r}"


def read_yaml(path: Path) -> Any:
    """``yaml.safe_load`` a file; syntax errors become one ManifestError line with the position."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ManifestError(path, "", f"cannot read: {error.strerror or error}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ManifestError(path, where, f"invalid YAML: {problem}") from None


def check_param_value(check: Checker, key: str, spec: ParamSpec, value, context: dict) -> Any:
    """Type, choices and bounds of one parameter value. ``context`` resolves named bounds (steps, other params)."""
    expected = PARAM_TYPES[spec.type]
    if spec.type == "float" and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
        check.fail(key, f"must be {type_name(expected())} ({spec.type}), got {describe(value)}")
    if spec.choices is not None and value not in spec.choices:
        check.fail(key, f"must be one of {', '.join(map(str, spec.choices))}, got {value!r}")
    for bound, outside in (("min", lambda v, b: v < b), ("max", lambda v, b: v > b)):
        limit = getattr(spec, bound)
        if isinstance(limit, str):
            if limit not in context:
                continue
            limit_text, limit = f"{limit} ({context[limit]})", context[limit]
        else:
            limit_text = str(limit)
        if limit is not None and outside(value, limit):
            check.fail(key, f"must be {'>=' if bound == 'min' else '<='} {limit_text}, got {value!r}")
    return value
