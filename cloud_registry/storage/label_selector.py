"""Kubernetes-style label selectors: parse them, print them, evaluate them.

Grammar (whitespace is allowed between tokens)::

    selector     := "" | requirement ("," requirement)*
    requirement  := "!" key                          absent
                  | key                              present
                  | key ("=" | "==" | "!=") value    equal / not equal
                  | key ("in" | "notin") "(" value ("," value)* ")"   (non-empty values)

Semantics follow Kubernetes: ``!=`` and ``notin`` also hold for a device without the label;
``=`` and ``in`` need it. Every requirement must hold.

Keys are ``[prefix/]name``: ``name`` 1-63 characters ``[A-Za-z0-9]`` at both ends and
``[-_.A-Za-z0-9]`` between; the optional ``prefix`` a lowercase DNS subdomain of at most 253
characters. Values are at most 63 printable characters and, unlike Kubernetes, may hold any
printable Unicode character except whitespace and the selector syntax ``, ( ) = !`` (so
``building=3号楼`` works). :func:`validate_label_key` and :func:`validate_label_value` let the
server check labels on registration with the same rules.

:func:`parse_label_selector` raises only :class:`LabelSelectorError` (a ``ValueError``) and its
message names the 0-based position of the fault; :func:`matches` is a pure function both storage
engines and the tests use as the reference.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from cloud_registry.storage.base import LabelRequirement

__all__ = [
    "OPS",
    "LabelSelectorError",
    "format_label_selector",
    "matches",
    "parse_label_selector",
    "validate_label_key",
    "validate_label_value",
    "validate_requirements",
]

#: The requirement operators of :class:`LabelRequirement`.
OPS = frozenset({"=", "!=", "exists", "!exists", "in", "notin"})

MAX_NAME = 63
MAX_PREFIX = 253
MAX_VALUE = 63
_NAME_RE = re.compile(r"[A-Za-z0-9](?:[-_.A-Za-z0-9]*[A-Za-z0-9])?\Z")
_PREFIX_RE = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*\Z")
_SYNTAX = frozenset(",()=!")
# Characters that may appear in a key token: end a key at anything else.
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./")


class LabelSelectorError(ValueError):
    """A label selector (or a label) that does not parse; ``position`` is 0-based."""

    def __init__(self, message: str, position: int = -1) -> None:
        super().__init__(message if position < 0 else f"{message} at position {position}")
        self.position = position


def validate_label_key(key: str) -> str | None:
    """Why ``key`` is not a valid label key, or None when it is."""
    if not isinstance(key, str) or not key:
        return "a label key must not be empty"
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > MAX_PREFIX or not _PREFIX_RE.match(prefix)):
        return (
            f"label key {key!r}: the prefix must be a lowercase DNS subdomain of at most "
            f"{MAX_PREFIX} characters"
        )
    if not name or len(name) > MAX_NAME or not _NAME_RE.match(name):
        return (
            f"label key {key!r}: the name must be 1-{MAX_NAME} characters [A-Za-z0-9_.-], "
            "beginning and ending with a letter or digit"
        )
    return None


def validate_label_value(value: str) -> str | None:
    """Why ``value`` is not a valid label value, or None when it is."""
    if not isinstance(value, str):
        return "a label value must be a string"
    if len(value) > MAX_VALUE:
        return f"label value {value!r} is longer than {MAX_VALUE} characters"
    for ch in value:
        if not ch.isprintable() or ch.isspace() or ch in _SYNTAX:
            return (
                f"label value {value!r}: {ch!r} is not allowed "
                "(printable characters except whitespace and , ( ) = !)"
            )
    return None


def validate_requirements(requirements: Iterable[LabelRequirement]) -> None:
    """Raise LabelSelectorError when a requirement built by hand is malformed."""
    for req in requirements:
        if req.op not in OPS:
            raise LabelSelectorError(f"unknown label selector operator {req.op!r}")
        problem = validate_label_key(req.key)
        if problem:
            raise LabelSelectorError(problem)
        want = {"=": 1, "!=": 1, "exists": 0, "!exists": 0}.get(req.op)
        if want is not None and len(req.values) != want:
            raise LabelSelectorError(f"{req.key} {req.op}: takes {want} value(s)")
        if want is None and (not req.values or "" in req.values):
            raise LabelSelectorError(f"{req.key} {req.op}: needs one or more non-empty values")
        for value in req.values:
            problem = validate_label_value(value)
            if problem:
                raise LabelSelectorError(problem)


# --------------------------------------------------------------------------- parsing


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str, position: int | None = None) -> LabelSelectorError:
        return LabelSelectorError(message, self.pos if position is None else position)

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def at_end(self) -> bool:
        self.skip_ws()
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def parse(self) -> tuple[LabelRequirement, ...]:
        if self.at_end():
            return ()
        result = [self.requirement()]
        while not self.at_end():
            if self.peek() != ",":
                raise self.fail(f"expected ',' between requirements, found {self.peek()!r}")
            self.pos += 1
            result.append(self.requirement())
        return tuple(result)

    def key(self) -> str:
        self.skip_ws()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _KEY_CHARS:
            self.pos += 1
        key = self.text[start : self.pos]
        if not key:
            found = repr(self.peek()) if self.peek() else "the end"
            raise self.fail(f"expected a label key, found {found}", start)
        problem = validate_label_key(key)
        if problem:
            raise self.fail(problem, start)
        return key

    def value(self) -> str:
        self.skip_ws()
        start = self.pos
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch.isspace() or ch in _SYNTAX:
                break
            self.pos += 1
        value = self.text[start : self.pos]
        problem = validate_label_value(value)
        if problem:
            raise self.fail(problem, start)
        return value

    def set_value(self) -> str:
        self.skip_ws()
        start = self.pos
        value = self.value()
        if not value:
            raise self.fail("expected a value (values in a set must not be empty)", start)
        return value

    def word(self) -> str:
        """The identifier-like word at the position (``in``/``notin``), not consumed."""
        end = self.pos
        while end < len(self.text) and self.text[end].isalpha():
            end += 1
        return self.text[self.pos : end]

    def requirement(self) -> LabelRequirement:
        self.skip_ws()
        if self.peek() == "!":
            self.pos += 1
            return LabelRequirement(self.key(), "!exists")
        key = self.key()
        key_end = self.pos
        self.skip_ws()
        ch = self.peek()
        if ch == "" or ch == ",":
            return LabelRequirement(key, "exists")
        if ch == "=":
            self.pos += 2 if self.text.startswith("==", self.pos) else 1
            return LabelRequirement(key, "=", (self.value(),))
        if ch == "!":
            if not self.text.startswith("!=", self.pos):
                raise self.fail("expected '!=' after the key")
            self.pos += 2
            return LabelRequirement(key, "!=", (self.value(),))
        word = self.word()
        if word in ("in", "notin") and self.pos > key_end:
            self.pos += len(word)
            return LabelRequirement(key, word, self.value_set())
        raise self.fail(f"expected an operator (=, ==, !=, in, notin) after {key!r}")

    def value_set(self) -> tuple[str, ...]:
        self.skip_ws()
        if self.peek() != "(":
            raise self.fail("expected '(' to open the value set")
        self.pos += 1
        values = [self.set_value()]
        while True:
            self.skip_ws()
            ch = self.peek()
            if ch == ")":
                self.pos += 1
                return tuple(dict.fromkeys(values))
            if ch != ",":
                found = repr(ch) if ch else "the end"
                raise self.fail(f"expected ',' or ')' in the value set, found {found}")
            self.pos += 1
            values.append(self.set_value())


def parse_label_selector(text: str) -> tuple[LabelRequirement, ...]:
    """Parse a selector such as ``floor=3,tier in (gold,silver),!decommissioned``."""
    if not isinstance(text, str):
        raise LabelSelectorError("a label selector must be a string")
    return _Parser(text).parse()


def format_label_selector(requirements: Iterable[LabelRequirement]) -> str:
    """The canonical text of ``requirements`` (parses back to the same tuple)."""
    parts = []
    for req in requirements:
        if req.op == "exists":
            parts.append(req.key)
        elif req.op == "!exists":
            parts.append(f"!{req.key}")
        elif req.op in ("=", "!="):
            parts.append(f"{req.key}{req.op}{req.values[0]}")
        else:
            parts.append(f"{req.key} {req.op} ({','.join(req.values)})")
    return ",".join(parts)


# --------------------------------------------------------------------------- evaluation


def matches(labels: Mapping[str, str], requirements: Iterable[LabelRequirement]) -> bool:
    """True when ``labels`` satisfy every requirement."""
    for req in requirements:
        have = labels.get(req.key)
        op = req.op
        if op == "=":
            ok = have is not None and have == req.values[0]
        elif op == "!=":
            ok = have is None or have != req.values[0]
        elif op == "exists":
            ok = have is not None
        elif op == "!exists":
            ok = have is None
        elif op == "in":
            ok = have is not None and have in req.values
        elif op == "notin":
            ok = have is None or have not in req.values
        else:
            raise LabelSelectorError(f"unknown label selector operator {op!r}")
        if not ok:
            return False
    return True
