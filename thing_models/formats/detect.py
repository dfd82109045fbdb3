"""Reading a model file of any supported format, detected from its content, and writing one.

Formats: our YAML (``model:`` key), Alibaba TSL JSON (``profile``/``schema`` or identifier lists),
W3C WoT Thing Model or Thing Description (``@context`` / ``@type`` / affordance maps).
JSON files are parsed with the standard library under the same size and depth limits as YAML.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from thing_models.errors import Diagnostic, HostileInputError, ModelLoadError, SourceLocation
from thing_models.formats import Exported, Imported
from thing_models.model import ThingModel
from thing_models.yaml_source import Limits, SourceMap, parse_yaml

__all__ = [
    "EXPORT_FORMATS",
    "detect_format",
    "export_model",
    "import_document",
    "import_model",
    "import_text",
    "read_document",
]

SourceFormat = Literal["yaml", "tsl", "wot"]
ExportFormat = Literal["yaml", "tsl", "wot-td", "wot-tm"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("yaml", "tsl", "wot-td", "wot-tm")


def read_document(path: Path, limits: Limits | None = None) -> tuple[Any, SourceMap]:
    """Parse a model file (JSON or YAML) into plain data, refusing hostile input."""
    limits = limits or Limits()
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise HostileInputError(
                [
                    Diagnostic(
                        SourceLocation(str(path)),
                        f"file is {size} bytes, over the limit of {limits.max_bytes}",
                        expected="a smaller file",
                    )
                ]
            )
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(
            [Diagnostic(SourceLocation(str(path)), f"cannot read file: {exc.strerror}")]
        ) from exc
    if path.suffix.lower() in (".json", ".jsonld"):
        return _parse_json(data, str(path), limits), SourceMap(str(path))
    return parse_yaml(data, str(path), limits)


def _parse_json(data: bytes, source: str, limits: Limits) -> Any:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HostileInputError(
            [
                Diagnostic(
                    SourceLocation(source),
                    f"byte offset {exc.start} is not valid UTF-8",
                    expected="UTF-8 JSON",
                )
            ]
        ) from exc
    depth = _max_depth(text)
    if depth > limits.max_depth:
        raise HostileInputError(
            [
                Diagnostic(
                    SourceLocation(source),
                    f"JSON nested {depth} levels deep",
                    expected=f"at most {limits.max_depth} levels",
                )
            ]
        )
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(
            [Diagnostic(SourceLocation(source, exc.lineno, exc.colno), f"JSON syntax: {exc.msg}")]
        ) from exc
    except ValueError as exc:
        raise ModelLoadError(
            [Diagnostic(SourceLocation(source), str(exc), expected="standard JSON numbers")]
        ) from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _max_depth(text: str) -> int:
    """Deepest bracket nesting outside strings (cheap guard before json.loads recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def detect_format(document: Any) -> SourceFormat | None:
    """Which format a parsed document is in, or None."""
    if not isinstance(document, Mapping):
        return None
    if "model" in document and "version" in document:
        return "yaml"
    from thing_models.formats import tsl

    if tsl.is_tsl(document):
        return "tsl"
    if (
        "@context" in document
        or "@type" in document
        or isinstance(document.get("properties"), Mapping)
        or isinstance(document.get("actions"), Mapping)
    ):
        return "wot"
    return None


def import_model(
    path: Path,
    *,
    placeholders: Mapping[str, str] | None = None,
    ref_dir: Path | None = None,
    allow_unresolved: bool = False,
) -> Imported:
    """Read a model file of any supported format."""
    document, smap = read_document(path)
    return import_document(
        document,
        smap,
        placeholders=placeholders,
        ref_dir=ref_dir,
        allow_unresolved=allow_unresolved,
    )


def import_text(text: str, source: str = "<text>", limits: Limits | None = None) -> Imported:
    """A model given as text (JSON when it starts with ``{`` or ``[``, else YAML), under the
    same size and depth limits as files."""
    limits = limits or Limits()
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > limits.max_bytes:
        raise HostileInputError(
            [
                Diagnostic(
                    SourceLocation(source),
                    f"document is {len(data)} bytes, over the limit of {limits.max_bytes} bytes",
                    expected="a smaller document",
                )
            ]
        )
    if text.lstrip("\ufeff \t\r\n").startswith(("{", "[")):
        return import_document(_parse_json(data, source, limits), SourceMap(source))
    document, smap = parse_yaml(text, source, limits)
    return import_document(document, smap)


def import_document(
    document: Any,
    smap: SourceMap,
    *,
    placeholders: Mapping[str, str] | None = None,
    ref_dir: Path | None = None,
    allow_unresolved: bool = False,
) -> Imported:
    """A parsed document of any supported format (detected from its content) as a model."""
    kind = detect_format(document)
    source = smap.file
    if kind == "yaml":
        from thing_models.yaml_format import model_from_dict

        return Imported(model_from_dict(document, smap))
    if kind == "tsl":
        from thing_models.formats.tsl import model_from_tsl

        return model_from_tsl(document, source=source)
    if kind == "wot":
        from thing_models.formats.wot import model_from_wot

        return model_from_wot(
            document,
            source=source,
            placeholders=placeholders,
            ref_dir=ref_dir,
            allow_unresolved=allow_unresolved,
        )
    raise ModelLoadError(
        [
            Diagnostic(
                SourceLocation(source, 1, 1),
                "unrecognised model format",
                expected="our YAML (model:, version:), Alibaba TSL JSON, or "
                "a W3C WoT Thing Model / Thing Description",
            )
        ]
    )


def export_model(model: ThingModel, target: ExportFormat) -> Exported:
    """Write ``model`` in ``target`` format, with what that format cannot express."""
    if target == "yaml":
        from thing_models.yaml_format import model_to_dict

        return Exported(model_to_dict(model))
    if target == "tsl":
        from thing_models.formats.tsl import model_to_tsl

        return model_to_tsl(model)
    from thing_models.formats.wot import model_to_wot

    return model_to_wot(model, kind="td" if target == "wot-td" else "tm")
