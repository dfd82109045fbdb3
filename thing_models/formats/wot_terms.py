"""Shared vocabulary of the WoT converters: context IRIs, our ``tmx:`` terms, JSON paths, and the
import context that collects diagnostics (errors) and notes (approximations) with their paths."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from thing_models.errors import Diagnostic, ModelLoadError, SourceLocation

__all__ = [
    "BACV_IRI",
    "MODV_IRI",
    "PLACEHOLDER_RE",
    "TD_CONTEXT_V1",
    "TD_CONTEXT_V11",
    "TMX",
    "TMX_IRI",
    "TM_TYPE",
    "TM_TYPE_IRI",
    "Ctx",
    "child",
    "is_placeholder",
    "sanitize_identifier",
    "slugify",
]

TD_CONTEXT_V1 = "https://www.w3.org/2019/wot/td/v1"
TD_CONTEXT_V11 = "https://www.w3.org/2022/wot/td/v1.1"
TM_TYPE = "tm:ThingModel"
TM_TYPE_IRI = "https://www.w3.org/2019/wot/tm#ThingModel"
#: The Modbus binding vocabulary, as the W3C Modbus JSON Schema spells it.
MODV_IRI = "https://www.w3.org/2019/wot/modbus"
BACV_IRI = "https://example.org/bacnet"
#: Our own vocabulary: terms WoT has no word for, so that a round trip loses nothing.
TMX = "tmx"
TMX_IRI = "urn:community-iot-edge:wot#"

#: ``{{NAME}}`` placeholders of a Thing Model (the TM schema allows printable ASCII names).
PLACEHOLDER_RE = re.compile(r"\{\{([ -z|~]+?)\}\}")  # printable ASCII but braces

_IDENT_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def child(path: str, key: str | int) -> str:
    """The JSON path of ``key`` under ``path``: ``$.a.b``, ``$.a[0]``, ``$.a["modv:entity"]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENT_PART.match(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"


def is_placeholder(value: Any) -> bool:
    """True when ``value`` is a string holding a ``{{...}}`` placeholder."""
    return isinstance(value, str) and PLACEHOLDER_RE.search(value) is not None


def slugify(text: str, limit: int = 48) -> str:
    """Lowercase ``text`` to ``[a-z][a-z0-9-]*`` (model-name part); empty when nothing is left."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")
    if slug and not slug[0].isalpha():
        slug = f"x-{slug}"
    return slug


def sanitize_identifier(text: str) -> str:
    """``text`` made into an identifier (``[A-Za-z_][A-Za-z0-9_]{0,49}``)."""
    ident = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_") or "_"
    if ident[0].isdigit():
        ident = f"_{ident}"
    return ident[:50]


@dataclass(slots=True)
class Ctx:
    """Collects the problems (errors) and approximations (notes) found while importing."""

    source: str
    tm: bool = False
    errors: list[Diagnostic] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def error(
        self, path: str, message: str, value: Any = None, expected: str = "", hint: str = ""
    ) -> None:
        location = SourceLocation(self.source)
        self.errors.append(Diagnostic(location, message, path, value, expected, hint))

    def note(self, path: str, message: str) -> None:
        location = SourceLocation(self.source)
        self.notes.append(str(Diagnostic(location, message, path, severity="note")))

    def raise_errors(self) -> None:
        if self.errors:
            raise ModelLoadError(self.errors)

    # ------------------------------------------------------------------ typed getters

    def get_obj(self, parent: dict[str, Any], key: str, path: str) -> dict[str, Any] | None:
        value = parent.get(key)
        if value is None or isinstance(value, dict):
            return value
        self.error(child(path, key), "wrong type", value, "a JSON object")
        return None

    def get_list(self, parent: dict[str, Any], key: str, path: str) -> list[Any] | None:
        value = parent.get(key)
        if value is None or isinstance(value, list):
            return value
        self.error(child(path, key), "wrong type", value, "a JSON array")
        return None

    def get_str(self, parent: dict[str, Any], key: str, path: str) -> str | None:
        value = parent.get(key)
        if value is None or isinstance(value, str):
            return value
        self.error(child(path, key), "wrong type", value, "a string")
        return None

    def get_bool(self, parent: dict[str, Any], key: str, path: str) -> bool | None:
        value = parent.get(key)
        if value is None or isinstance(value, bool) or self._placeholder(value, key, path):
            return value if isinstance(value, bool) else None
        self.error(child(path, key), "wrong type", value, "true or false")
        return None

    def get_number(self, parent: dict[str, Any], key: str, path: str) -> int | float | None:
        value = parent.get(key)
        if value is None or self._placeholder(value, key, path):
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(child(path, key), "wrong type", value, "a number")
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.error(child(path, key), "not a finite number", value, "a finite number")
            return None
        return value

    def get_int(
        self, parent: dict[str, Any], key: str, path: str, minimum: int | None = None
    ) -> int | None:
        value = parent.get(key)
        if value is None or self._placeholder(value, key, path):
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(child(path, key), "wrong type", value, "an integer")
            return None
        if minimum is not None and value < minimum:
            self.error(child(path, key), f"must be at least {minimum}", value)
            return None
        return value

    def _placeholder(self, value: Any, key: str, path: str) -> bool:
        if self.tm and is_placeholder(value):
            self.note(child(path, key), f"placeholder {value!r} has no value; the term is ignored")
            return True
        return False
