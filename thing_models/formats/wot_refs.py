"""Safe preparation of WoT documents: size and depth guards, ``{{PLACEHOLDER}}`` substitution,
and ``tm:ref`` resolution from a local folder.

Remote references are never fetched: ``https://host/a/b.tm.jsonld#/properties/x`` and
``b.tm.jsonld#/properties/x`` both name the file ``b.tm.jsonld`` in ``ref_dir``. A reference not
found there is recorded (reference, JSON path, reason) for the caller to report, all at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from thing_models.errors import Diagnostic, HostileInputError, ModelLoadError, SourceLocation
from thing_models.formats.wot_terms import PLACEHOLDER_RE, Ctx, child

__all__ = [
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "Resolver",
    "Unresolved",
    "guard",
    "load_json",
    "ref_file_name",
    "substitute",
]

MAX_DEPTH = 64
MAX_NODES = 200_000
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
MAX_EXPANDED_CHARS = 4 * 1024 * 1024
MAX_PLACEHOLDER_NESTING = 16
MAX_REF_RESOLUTIONS = 512

#: Terms whose value, when it is exactly one placeholder, takes the value's JSON type.
_TYPED_TERMS = frozenset(
    {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "maxLength"}
    | {"minLength", "maxItems", "minItems", "readOnly", "writeOnly", "observable", "enum"}
    | {"synchronous", "safe", "idempotent", "required", "version", "address", "quantity"}
    | {"unitID", "pollingTime", "timeout", "zeroBasedAddressing", "mostSignificantByte"}
    | {"mostSignificantWord"}
)


def _hostile(source: str, path: str, message: str, value: Any = None) -> HostileInputError:
    return HostileInputError([Diagnostic(SourceLocation(source), message, path, value)])


def load_json(text: str | bytes, source: str) -> Any:
    """Parse JSON text, refusing oversized or absurdly nested input with a clear error."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise _hostile(source, "$", f"document larger than {MAX_DOCUMENT_BYTES} bytes", len(text))
    try:
        return json.loads(text)
    except RecursionError:
        raise _hostile(source, "$", "JSON nested too deeply to parse") from None
    except (ValueError, UnicodeDecodeError) as exc:
        diag = Diagnostic(SourceLocation(source), f"not valid JSON: {exc}", "$")
        raise ModelLoadError([diag]) from exc


def guard(doc: Any, source: str) -> None:
    """Refuse documents nested deeper than MAX_DEPTH or with more than MAX_NODES values."""
    stack: list[tuple[Any, str, int]] = [(doc, "$", 0)]
    nodes = 0
    while stack:
        node, path, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise _hostile(source, path, f"document has more than {MAX_NODES} values")
        if depth > MAX_DEPTH:
            raise _hostile(source, path, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((v, child(path, str(k)), depth + 1) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, child(path, i), depth + 1) for i, v in enumerate(node))


# --------------------------------------------------------------------------- placeholders


def substitute(doc: Any, values: dict[str, str], ctx: Ctx) -> Any:
    """``doc`` with every ``{{NAME}}`` in its string values replaced by ``values[NAME]``.

    A value may itself use other placeholders (expanded, cycles refused); a string that is
    exactly one placeholder of a numeric or boolean term takes the value's JSON type. Names
    without a value stay as text and are noted once each. Expansion stops with
    :class:`HostileInputError` past MAX_EXPANDED_CHARS characters in all.
    """
    expanded = _expand_values(values, ctx.source)
    missing: dict[str, str] = {}
    budget = _Budget(MAX_EXPANDED_CHARS, ctx.source)

    def lookup(name: str, path: str) -> str | None:
        if name not in expanded:
            missing.setdefault(name, path)
            return None
        return expanded[name]

    def walk(node: Any, key: str, path: str) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, str(k), child(path, str(k))) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, key, child(path, i)) for i, v in enumerate(node)]
        if not isinstance(node, str) or "{{" not in node:
            return node
        whole = PLACEHOLDER_RE.fullmatch(node)
        if whole and whole[1] in expanded and key.rsplit(":", 1)[-1] in _TYPED_TERMS:
            try:
                return json.loads(expanded[whole[1]])
            except ValueError:
                pass
        return budget.fill(node, lambda name: lookup(name, path), path)

    result = walk(doc, "", "$")
    for name, path in missing.items():
        ctx.note(path, f"placeholder {{{{{name}}}}} has no value; kept as text")
    return result


@dataclass(slots=True)
class _Budget:
    """Characters placeholder expansion may still produce; checked before each piece is added."""

    left: int
    source: str

    def fill(self, text: str, lookup: Callable[[str], str | None], path: str) -> str:
        parts: list[str] = []
        position = 0
        for match in PLACEHOLDER_RE.finditer(text):
            value = lookup(match[1])
            piece = match[0] if value is None else value
            self.left -= match.start() - position + len(piece)
            if self.left < 0:
                raise _hostile(self.source, path, "placeholders expand to too much text")
            parts += [text[position : match.start()], piece]
            position = match.end()
        parts.append(text[position:])
        return "".join(parts)


def _expand_values(values: dict[str, str], source: str) -> dict[str, str]:
    for name, value in values.items():
        if not isinstance(name, str) or not isinstance(value, str):
            message = "placeholder names and values must be text"
            diag = Diagnostic(SourceLocation(source), message, f"placeholders[{name!r}]", value)
            raise ModelLoadError([diag])
    done: dict[str, str] = {}
    budget = _Budget(MAX_EXPANDED_CHARS, source)  # shared: all values together

    def expand(name: str, stack: tuple[str, ...]) -> str:
        if name in done:
            return done[name]
        if name in stack:
            cycle = " -> ".join((*stack[stack.index(name) :], name))
            diag = Diagnostic(SourceLocation(source), f"placeholder cycle: {cycle}", "placeholders")
            raise ModelLoadError([diag])
        if len(stack) >= MAX_PLACEHOLDER_NESTING:
            chain = " -> ".join(stack)
            raise _hostile(source, "placeholders", f"placeholders nested too deeply: {chain}")

        def lookup(inner: str) -> str | None:
            return expand(inner, (*stack, name)) if inner in values else None

        done[name] = budget.fill(values[name], lookup, f"placeholders[{name!r}]")
        return done[name]

    return {name: expand(name, ()) for name in values}


# --------------------------------------------------------------------------- references


def ref_file_name(href: str) -> str:
    """The local file name a (remote or relative) reference stands for; empty when none."""
    name = unquote(urlsplit(href).path.rsplit("/", 1)[-1])
    if name in (".", "..") or "\\" in name or "\x00" in name:
        return ""
    return name


@dataclass(frozen=True, slots=True)
class Unresolved:
    """A reference that could not be resolved: what, where in the document, and why."""

    reference: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.reference} (at {self.path}): {self.reason}"


@dataclass(slots=True)
class Resolver:
    """Loads referenced documents from ``ref_dir`` (never the network) and expands ``tm:ref``."""

    ctx: Ctx
    ref_dir: Path | None
    placeholders: dict[str, str]
    unresolved: list[Unresolved] = field(default_factory=list)
    _cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    _count: int = 0

    def load(self, href: str, path: str) -> dict[str, Any] | None:
        """The document ``href`` names, from ``ref_dir``; None (recorded) when not there."""
        name = ref_file_name(href)
        if name in self._cache:
            return self._cache[name]
        if self.ref_dir is None:
            self._miss(href, path, "not fetched (no local ref_dir given)")
            return None
        file = self.ref_dir / name
        if not name or not file.is_file():
            self._miss(href, path, f"no file {name!r} in {self.ref_dir}")
            return None
        source = str(file)
        if file.stat().st_size > MAX_DOCUMENT_BYTES:
            raise _hostile(source, "$", f"document larger than {MAX_DOCUMENT_BYTES} bytes")
        doc = load_json(file.read_bytes(), source)
        if not isinstance(doc, dict):
            diag = Diagnostic(SourceLocation(source), "a WoT document must be a JSON object", "$")
            raise ModelLoadError([diag])
        guard(doc, source)
        expanded: dict[str, Any] = substitute(doc, self.placeholders, Ctx(source, tm=True))
        self._cache[name] = expanded
        return expanded

    def _miss(self, href: str, path: str, reason: str) -> None:
        self.unresolved.append(Unresolved(href, path, reason))

    def expand(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``doc`` with every ``tm:ref`` replaced by its target, local terms overriding."""
        result = self._walk(doc, doc, "$", ())
        assert isinstance(result, dict)
        return result

    def _walk(self, node: Any, root: dict[str, Any], path: str, chain: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            if "tm:ref" in node:
                node, root, chain = self._merge(node, root, path, chain)
            return {k: self._walk(v, root, child(path, str(k)), chain) for k, v in node.items()}
        if isinstance(node, list):
            return [self._walk(v, root, child(path, i), chain) for i, v in enumerate(node)]
        return node

    def _merge(
        self, node: dict[str, Any], root: dict[str, Any], path: str, chain: tuple[str, ...]
    ) -> tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]:
        while "tm:ref" in node:
            href = node["tm:ref"]
            where = child(path, "tm:ref")
            if not isinstance(href, str) or "#" not in href:
                self.ctx.error(
                    where,
                    "tm:ref must be a URI with a JSON pointer",
                    href,
                    "e.g. other.tm.jsonld#/properties/status",
                )
                return {k: v for k, v in node.items() if k != "tm:ref"}, root, chain
            self._count += 1
            if self._count > MAX_REF_RESOLUTIONS:
                raise _hostile(self.ctx.source, where, f"more than {MAX_REF_RESOLUTIONS} tm:ref")
            location, _, pointer = href.partition("#")
            key = f"{ref_file_name(location) if location else id(root)}#{pointer}"
            if key in chain:
                self.ctx.error(where, "tm:ref cycle", " -> ".join((*chain, key)))
                return {k: v for k, v in node.items() if k != "tm:ref"}, root, chain
            target_doc = self.load(location, where) if location else root
            if target_doc is None:
                return node, root, chain  # unresolved: kept as it is
            target = _pointer(target_doc, pointer)
            if not isinstance(target, dict):
                what = "nothing" if target is None else "a non-object"
                self.ctx.error(where, f"tm:ref points to {what}: no object at {pointer!r}", href)
                return {k: v for k, v in node.items() if k != "tm:ref"}, root, chain
            local = {k: v for k, v in node.items() if k != "tm:ref"}
            node, root, chain = {**target, **local}, target_doc, (*chain, key)
        return node, root, chain


def _pointer(doc: Any, pointer: str) -> Any:
    """The value at JSON pointer ``pointer`` (RFC 6901) in ``doc``; None when there is none."""
    if pointer in ("", "/"):
        return doc if pointer == "" else None
    if not pointer.startswith("/"):
        return None
    node = doc
    for raw in pointer[1:].split("/"):
        token = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node
