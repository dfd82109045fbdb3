"""Typed, located access to a parsed document, collecting every problem instead of stopping.

A :class:`DocumentReader` wraps plain data and its :class:`SourceMap`. Each accessor checks one
value, records a :class:`Diagnostic` (``file:line:column``, the offending value, what was
expected, "did you mean" for unknown keys) when it is wrong, and returns a usable default so the
caller can go on and find the next problem.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection, Mapping
from enum import StrEnum
from typing import Any, TypeVar

from thing_models.errors import Diagnostic
from thing_models.yaml_source import Path, SourceMap, format_path

__all__ = ["DocumentReader", "parse_duration"]

E = TypeVar("E", bound=StrEnum)
T = TypeVar("T")

_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*\Z")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float | None:
    """Seconds from ``10``, ``2.5``, ``"500ms"``, ``"10s"``, ``"5m"``, ``"1h"``; None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    return None


class DocumentReader:
    """Located, typed reads of one document; problems accumulate in ``diagnostics``."""

    def __init__(self, smap: SourceMap) -> None:
        self.smap = smap
        self.diagnostics: list[Diagnostic] = []
        #: For each list in the document, the document indices of the items that were built.
        self.kept: dict[Path, list[int]] = {}

    # ------------------------------------------------------------------ reporting

    def error(
        self,
        path: Path,
        message: str,
        value: Any = None,
        expected: str = "",
        hint: str = "",
        *,
        at_key: bool = False,
    ) -> None:
        self.diagnostics.append(
            Diagnostic(
                self.smap.locate(path, key=at_key),
                message,
                format_path(path),
                value,
                expected,
                hint,
            )
        )

    # ------------------------------------------------------------------ containers

    def mapping(self, value: Any, path: Path, what: str = "a mapping") -> dict[Any, Any] | None:
        if isinstance(value, dict):
            return value
        self.error(path, f"expected {what}", value, what)
        return None

    def sequence(self, value: Any, path: Path, what: str = "a list") -> list[Any]:
        if value is None:
            return []
        if isinstance(value, list):
            return value
        self.error(path, f"expected {what}", value, what)
        return []

    def items(
        self, value: Any, path: Path, parse: Callable[[Any, Path], T | None], what: str = "a list"
    ) -> tuple[T, ...]:
        """Parse each item of a list; items that fail are left out and remembered in ``kept``."""
        built: list[T] = []
        kept: list[int] = []
        for i, item in enumerate(self.sequence(value, path, what)):
            result = parse(item, (*path, i))
            if result is not None:
                built.append(result)
                kept.append(i)
        self.kept[path] = kept
        return tuple(built)

    def document_path(self, model_path: Path) -> Path:
        """Translate a path by model indices (items left out) into the document's indices."""
        out: list[str | int] = []
        for part in model_path:
            kept = self.kept.get(tuple(out)) if isinstance(part, int) else None
            if isinstance(part, int) and kept is not None and 0 <= part < len(kept):
                out.append(kept[part])
            else:
                out.append(part)
        return tuple(out)

    def check_keys(
        self,
        obj: Mapping[Any, Any],
        path: Path,
        allowed: Collection[str],
        required: Collection[str] = (),
    ) -> None:
        """Report unknown keys (with a suggestion) and missing required keys."""
        for key in obj:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else ""
                self.error(
                    (*path, key),
                    f"unknown key {key!r}",
                    expected="one of " + ", ".join(sorted(allowed)),
                    hint=hint,
                    at_key=True,
                )
        for key in required:
            if key not in obj:
                self.error(
                    path,
                    f"missing required key {key!r}",
                    expected="the required keys " + ", ".join(required),
                )
            elif obj[key] is None:
                # ``id:`` with nothing after it: readers would take the default and drop the item.
                self.error((*path, key), f"required key {key!r} has no value", expected="a value")

    # ------------------------------------------------------------------ scalars

    def string(
        self,
        obj: Mapping[Any, Any],
        key: str,
        path: Path,
        default: str = "",
        *,
        pattern: re.Pattern[str] | None = None,
        expected: str = "a string",
        max_length: int = 4096,
    ) -> str:
        if key not in obj or obj[key] is None:
            return default
        value = obj[key]
        if not isinstance(value, str):
            self.error((*path, key), f"{key} must be a string", value, expected)
            return default
        if len(value) > max_length:
            self.error(
                (*path, key),
                f"{key} is {len(value)} characters long",
                value[:40],
                f"at most {max_length} characters",
            )
            return default
        if pattern is not None and not pattern.match(value):
            self.error((*path, key), f"invalid {key}", value, expected)
            return default
        return value

    def integer(
        self,
        obj: Mapping[Any, Any],
        key: str,
        path: Path,
        default: int | None = None,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        if key not in obj or obj[key] is None:
            return default
        value = obj[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.error((*path, key), f"{key} must be an integer", value, "an integer")
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.error(
                (*path, key),
                f"{key} out of range",
                value,
                f"an integer from {minimum} to {maximum}",
            )
            return default
        return value

    def number(
        self,
        obj: Mapping[Any, Any],
        key: str,
        path: Path,
        default: float | int | None = None,
    ) -> float | int | None:
        if key not in obj or obj[key] is None:
            return default
        value = obj[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (isinstance(value, float) and not math.isfinite(value))
        ):
            self.error((*path, key), f"{key} must be a finite number", value, "a number")
            return default
        return value

    def boolean(self, obj: Mapping[Any, Any], key: str, path: Path, default: bool) -> bool:
        if key not in obj or obj[key] is None:
            return default
        value = obj[key]
        if not isinstance(value, bool):
            self.error((*path, key), f"{key} must be true or false", value, "true or false")
            return default
        return value

    def choice(
        self,
        obj: Mapping[Any, Any],
        key: str,
        path: Path,
        enum: type[E],
        default: E,
        aliases: Mapping[str, E] | None = None,
    ) -> E:
        if key not in obj or obj[key] is None:
            return default
        value = obj[key]
        aliases = aliases or {}
        if isinstance(value, str) and value in aliases:
            return aliases[value]
        try:
            return enum(value)
        except ValueError:
            options = [m.value for m in enum]
            close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.6)
            self.error(
                (*path, key),
                f"invalid {key}",
                value,
                "one of " + ", ".join(options),
                f"did you mean {close[0]!r}?" if close else "",
            )
            return default

    def duration(
        self, obj: Mapping[Any, Any], key: str, path: Path, default: float | None = None
    ) -> float | None:
        if key not in obj or obj[key] is None:
            return default
        seconds = parse_duration(obj[key])
        if seconds is None or seconds <= 0:
            self.error(
                (*path, key),
                f"invalid duration for {key}",
                obj[key],
                "a positive duration: seconds, or a string like 500ms, 10s, 5m, 1h",
            )
            return default
        return seconds
