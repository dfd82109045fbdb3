"""Safe YAML reading with source positions, for documents written by people.

:func:`parse_yaml` turns YAML text into plain Python data (dicts, lists, scalars) and a
:class:`SourceMap` from each value's path to its ``file:line:column``. Hostile input is refused
quickly with a :class:`~thing_models.errors.HostileInputError`: files over a size limit, bytes that
are not UTF-8, nesting deeper than a limit, and alias bombs (the expanded node count is bounded).

Deliberate differences from PyYAML's ``safe_load``:

* only ``true``/``false`` are booleans (YAML 1.2): ``on``, ``off``, ``yes`` and ``no`` stay strings;
* dates stay strings (no implicit timestamps);
* a mapping with the same key twice is an error, not a silent overwrite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from thing_models.errors import Diagnostic, HostileInputError, ModelLoadError, SourceLocation

__all__ = ["Limits", "Path", "SourceMap", "dump_yaml", "format_path", "parse_yaml"]

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds that keep a hostile document from costing much."""

    max_bytes: int = 2 * 1024 * 1024
    max_depth: int = 64
    max_nodes: int = 200_000


def format_path(path: Path) -> str:
    """``("properties", 2, "max")`` -> ``properties[2].max``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


@dataclass(slots=True)
class SourceMap:
    """Positions of values (and of mapping keys) by path."""

    file: str
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: Path, *, key: bool = False) -> SourceLocation:
        """The position of ``path`` (its key when ``key``), or of its nearest known ancestor."""
        table = self.keys if key else self.values
        probe = path
        while True:
            position = table.get(probe) or self.values.get(probe)
            if position is not None:
                return SourceLocation(self.file, position[0], position[1])
            if not probe:
                return SourceLocation(self.file, 1, 1)
            probe = probe[:-1]


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans, no implicit timestamps, and a nesting limit."""

    max_depth = 64

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        # Refuse deep [[[[ / {{{{ while scanning: otherwise the scanner looks up to 1024
        # characters ahead for a possible simple key at every level before the composer's depth
        # check is reached.
        if self.flow_level >= self.max_depth:
            raise _TooDeep(self.line + 1, self.column + 1)
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise _TooDeep(mark.line + 1, mark.column + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# YAML 1.2 core schema for plain scalars: only true/false are booleans, no implicit timestamps,
# no sexagesimal (10:30) or leading-zero octal (010) integers, and 1e-3 is a float.
_REPLACED_TAGS = ("bool", "timestamp", "int", "float")
_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag not in {f"tag:yaml.org,2002:{name}" for name in _REPLACED_TAGS}
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)\Z"), list("tTfF")
)
_INT_RE = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)\Z")
_FLOAT_RE = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))\Z"
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", _INT_RE, list("-+0123456789"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if not _INT_RE.match(text):
        raise yaml.constructor.ConstructorError(
            None, None, f"{text!r} is not an integer", node.start_mark
        )
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text, 10)


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    if not _FLOAT_RE.match(str(loader.construct_scalar(node))) and not _INT_RE.match(
        str(loader.construct_scalar(node))
    ):
        raise yaml.constructor.ConstructorError(
            None, None, f"{loader.construct_scalar(node)!r} is not a number", node.start_mark
        )
    text = str(loader.construct_scalar(node)).lower()
    if text.endswith(".inf"):
        return float("-inf") if text.startswith("-") else float("inf")
    if text == ".nan":
        return float("nan")
    return float(text)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)


class _Dumper(yaml.SafeDumper):
    """Writes what :func:`parse_yaml` reads back unchanged: strings that the YAML 1.2 resolvers
    above would take for numbers or booleans are quoted, and strings holding U+0085 (NEL) are
    double-quoted (inside single quotes every reader folds it, a line break, into a space)."""


_Dumper.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = '"' if "\x85" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(data: Any) -> str:
    """Plain data as YAML text (keys in their given order) that :func:`parse_yaml` reads back
    equal."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


class _TooDeep(Exception):
    def __init__(self, line: int, column: int) -> None:
        super().__init__(line, column)
        self.line = line
        self.column = column


def _decode(data: bytes | str, source: str, limits: Limits) -> str:
    size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    if size > limits.max_bytes:
        raise _hostile(
            source,
            0,
            0,
            f"document is {size} bytes, over the limit of {limits.max_bytes} bytes",
            "a smaller file",
        )
    if isinstance(data, str):
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        # Column in characters, not bytes (the bytes before the bad one are valid UTF-8).
        column = len(before[before.rfind(b"\n") + 1 :].decode("utf-8")) + 1
        raise _hostile(
            source, line, column, f"byte {data[exc.start]:#04x} is not valid UTF-8", "UTF-8 text"
        ) from exc
    return text.removeprefix("\ufeff")


def _hostile(source: str, line: int, column: int, message: str, expected: str) -> HostileInputError:
    return HostileInputError(
        [Diagnostic(SourceLocation(source, line, column), message, expected=expected)]
    )


def parse_yaml(
    data: bytes | str, source: str = "<string>", limits: Limits | None = None
) -> tuple[Any, SourceMap]:
    """Parse one YAML document into plain data and its source map.

    Raises ModelLoadError for syntax errors and duplicate keys, HostileInputError for input
    refused by ``limits``.
    """
    limits = limits or Limits()
    text = _decode(data, source, limits)
    try:
        # The reader checks for unprintable characters when constructed.
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise ModelLoadError(
            [
                Diagnostic(
                    SourceLocation(source, line, column),
                    f"character U+{code:04X} is not allowed in YAML",
                    expected="printable characters (tab, newline and text)",
                )
            ]
        ) from exc
    loader.max_depth = limits.max_depth
    try:
        root = loader.get_single_node()
    except _TooDeep as exc:
        raise _hostile(
            source,
            exc.line,
            exc.column,
            f"nesting deeper than {limits.max_depth} levels",
            f"at most {limits.max_depth} levels",
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        message = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise ModelLoadError(
            [Diagnostic(SourceLocation(source, line, column), f"YAML syntax: {message}")]
        ) from exc
    except yaml.YAMLError as exc:
        raise ModelLoadError([Diagnostic(SourceLocation(source), f"YAML: {exc}")]) from exc
    finally:
        loader.dispose()
    smap = SourceMap(source)
    if root is None:
        return None, smap
    builder = _Builder(loader, smap, limits)
    value = builder.build(root, (), 0)
    if builder.diagnostics:
        raise ModelLoadError(builder.diagnostics)
    return value, smap


class _Builder:
    """Turns composed nodes into plain data, recording positions and bounding the work."""

    def __init__(self, loader: _Loader, smap: SourceMap, limits: Limits) -> None:
        self.loader = loader
        self.smap = smap
        self.limits = limits
        self.nodes = 0
        self.diagnostics: list[Diagnostic] = []

    def _where(self, node: Node) -> SourceLocation:
        return SourceLocation(self.smap.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: Node, path: Path, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > self.limits.max_nodes or depth > self.limits.max_depth:
            what = (
                f"more than {self.limits.max_nodes} nodes after alias expansion"
                if self.nodes > self.limits.max_nodes
                else f"nesting deeper than {self.limits.max_depth} levels (recursive alias?)"
            )
            location = self._where(node)
            raise _hostile(
                self.smap.file,
                location.line,
                location.column,
                f"document has {what}",
                "a document without alias bombs",
            )
        self.smap.values.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if not self._plain_tag(node, path):
            return None
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, MappingNode):
            return self._mapping(node, path, depth)
        return None  # pragma: no cover - PyYAML has no other node kinds

    def _plain_tag(self, node: Node, path: Path) -> bool:
        """Only plain data: explicit tags such as !!python/object, !!binary or !!set are refused
        (on collections PyYAML's composer would otherwise keep them silently)."""
        if node.tag in _PLAIN_TAGS[type(node)]:
            return True
        self.diagnostics.append(
            Diagnostic(
                self._where(node),
                f"unsupported YAML tag {node.tag!r}",
                format_path(path),
                expected="plain YAML data (strings, numbers, true/false, null, lists, mappings)",
            )
        )
        return False

    def _scalar(self, node: ScalarNode, path: Path) -> Any:
        if not self._plain_tag(node, path):
            return None
        try:
            return self.loader.construct_object(node, deep=False)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            self.diagnostics.append(
                Diagnostic(
                    self._where(node),
                    f"unsupported YAML value: {problem}",
                    format_path(path),
                    node.value,
                    "a plain scalar",
                )
            )
            return None

    def _mapping(self, node: MappingNode, path: Path, depth: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for key_node, value_node in self._merged_pairs(node):
            key = (
                self.build(key_node, (*path, "<key>"), depth + 1)
                if not isinstance(key_node, ScalarNode)
                else self._scalar(key_node, path)
            )
            if not isinstance(key, str | int | float | bool) or key is None:
                self.diagnostics.append(
                    Diagnostic(
                        self._where(key_node),
                        "mapping key must be a plain scalar",
                        format_path(path),
                        key,
                        "a string or number key",
                    )
                )
                continue
            child = (*path, key) if isinstance(key, str | int) else (*path, str(key))
            if key in result:
                self.diagnostics.append(
                    Diagnostic(
                        self._where(key_node),
                        f"duplicate key {key!r}",
                        format_path(path),
                        expected="each key once per mapping",
                    )
                )
                continue
            self.smap.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[key] = self.build(value_node, child, depth + 1)
        return result

    def _merged_pairs(self, node: MappingNode, depth: int = 0) -> list[tuple[Node, Node]]:
        """Key/value pairs of a mapping with ``<<`` merge keys expanded (explicit keys win).

        Every merged pair counts against ``max_nodes``: merges of merges of aliases otherwise
        cost exponential time (a "merge bomb") without building a single node."""
        if depth > 16:
            mark = node.start_mark
            raise _hostile(
                self.smap.file,
                mark.line + 1,
                mark.column + 1,
                "merge keys (<<) nested deeper than 16 levels (recursive merge?)",
                "a document without recursive merges",
            )
        merged: list[tuple[Node, Node]] = []
        own: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for item in sources:
                    if isinstance(item, MappingNode):
                        merged.extend(self._merged_pairs(item, depth + 1))
                    else:
                        self.diagnostics.append(
                            Diagnostic(
                                self._where(item),
                                "merge key (<<) needs a mapping or a list of mappings",
                                expected="<<: *anchor or <<: [*a, *b]",
                            )
                        )
            else:
                own.append((key_node, value_node))
        self.nodes += len(merged)
        if self.nodes > self.limits.max_nodes:
            location = self._where(node)
            raise _hostile(
                self.smap.file,
                location.line,
                location.column,
                f"document has more than {self.limits.max_nodes} nodes after merge expansion",
                "a document without alias bombs",
            )
        own_keys = {k.value for k, _ in own if isinstance(k, ScalarNode)}
        seen: set[Any] = set()
        result: list[tuple[Node, Node]] = []
        for key_node, value_node in merged:
            if key_node.value not in own_keys and key_node.value not in seen:
                seen.add(key_node.value)
                result.append((key_node, value_node))
        return result + own


_PLAIN_TAGS: dict[type[Node], frozenset[str]] = {
    ScalarNode: frozenset(
        "tag:yaml.org,2002:" + name for name in ("str", "int", "float", "bool", "null")
    ),
    SequenceNode: frozenset({"tag:yaml.org,2002:seq"}),
    MappingNode: frozenset({"tag:yaml.org,2002:map"}),
}
