"""The exception tree of the thing-model package, and the diagnostic record it carries.

::

    ThingModelError                 base of everything raised here
    ├── ModelLoadError              a model document (YAML, TSL, WoT) is invalid: Diagnostics
    │   └── HostileInputError       refused before parsing: too big, too deep, alias bomb, not UTF-8
    ├── UnresolvedReferenceError    extends / tm:ref / tm:submodel / component target not found
    ├── ConversionError             a target format cannot express part of a model (strict export)
    ├── TelemetryValidationError    a property report, event or service payload breaks its model
    ├── MessageError                a canonical message envelope is malformed
    └── VersionBumpError            a declared version bump is smaller than the diff requires

Third-party errors (PyYAML, json, protobuf) are translated once, where they are caught, with
``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ConversionError",
    "Diagnostic",
    "HostileInputError",
    "MessageError",
    "ModelLoadError",
    "SourceLocation",
    "TelemetryValidationError",
    "ThingModelError",
    "UnresolvedReferenceError",
    "VersionBumpError",
]


@dataclass(frozen=True, slots=True)
class SourceLocation:
    """Where something is in a source file; line and column are 1-based."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in an input: where, what, the offending value, what was expected."""

    location: SourceLocation
    message: str
    path: str = ""
    value: Any = None
    expected: str = ""
    hint: str = ""
    severity: str = "error"

    def __str__(self) -> str:
        text = f"{self.location}: {self.severity}: "
        if self.path:
            text += f"{self.path}: "
        text += self.message
        if self.value is not None:
            text += f" (got {_short_repr(self.value)})"
        if self.expected:
            text += f"; expected {self.expected}"
        if self.hint:
            text += f"; {self.hint}"
        return text


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ThingModelError(Exception):
    """Base class of every error raised by :mod:`thing_models`."""


class ModelLoadError(ThingModelError):
    """A model document is invalid; ``diagnostics`` lists every problem found, not just one."""

    def __init__(self, diagnostics: Sequence[Diagnostic] | Iterable[Diagnostic]) -> None:
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics) or "invalid model")


class HostileInputError(ModelLoadError):
    """An input was refused before it was fully parsed (size, depth, aliases, encoding)."""


class UnresolvedReferenceError(ThingModelError):
    """A reference to another model could not be resolved."""

    def __init__(self, reference: str, detail: str, location: SourceLocation | None = None) -> None:
        self.reference = reference
        self.detail = detail
        self.location = location
        where = f"{location}: " if location else ""
        super().__init__(f"{where}unresolved reference {reference!r}: {detail}")


class ConversionError(ThingModelError):
    """Part of a model cannot be expressed in the target format (raised only in strict mode)."""

    def __init__(self, target: str, losses: Sequence[str]) -> None:
        self.target = target
        self.losses = tuple(losses)
        super().__init__(f"{target} cannot express: " + "; ".join(self.losses))


class TelemetryValidationError(ThingModelError):
    """A payload breaks its model. ``issues`` names every offending field."""

    def __init__(self, issues: Sequence[Any]) -> None:
        self.issues = tuple(issues)
        super().__init__("; ".join(str(i) for i in self.issues) or "invalid payload")


class MessageError(ThingModelError):
    """A canonical message envelope is malformed (JSON or protobuf form)."""


class VersionBumpError(ThingModelError):
    """The declared version bump is smaller than the changes between two models require."""
