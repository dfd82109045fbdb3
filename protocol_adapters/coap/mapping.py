"""Pure CoAP mapping: payloads (JSON, CBOR, text) to thing-model values, and back for writes.

::

    resources = compile_binding(model.bindings.coap, model)   # one ResourceMapping per resource
    readings = resources[0].decode(payload_bytes)             # {property id: Reading}
    point = point_for(resources, "setpoint")
    payload = point.encode_write(21.5)                        # bytes for a PUT
    check_response(0x84, "GET", "/env")                       # raises CoapResponseError "4.04"

No I/O. A payload that does not decode raises :class:`CoapPayloadError`; a decoded value that
does not fit its property (wrong type, out of range, path missing) is a bad-quality
:class:`Reading` with the reason, so one faulty point never costs the others of its resource.

Paths are the model's JSON paths (``$.a.b``, ``$.items[0]``, ``$['odd key']``); an empty path
is the whole payload. A write to a point with a path sends a document holding only that path
(``{"a": {"b": value}}``), a write to a point without one the value itself.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import cbor2

from protocol_adapters.base import Reading
from protocol_adapters.coap.errors import (
    CoapConfigError,
    CoapPayloadError,
    CoapResponseError,
    CoapValueError,
)
from thing_models.messages import Quality
from thing_models.model import (
    INT_RANGES,
    Access,
    CoapBinding,
    CoapMode,
    ContentFormat,
    DataSchema,
    DataType,
    ThingModel,
)

__all__ = [
    "CONTENT_FORMAT_NUMBERS",
    "MAX_PAYLOAD_BYTES",
    "PathStep",
    "PointMapping",
    "ResourceMapping",
    "check_response",
    "code_text",
    "compile_binding",
    "decode_payload",
    "document_outputs",
    "encode_payload",
    "from_model",
    "parse_path",
    "point_for",
    "to_model",
]

#: Payloads above this are refused before decoding (block-wise transfers included).
MAX_PAYLOAD_BYTES: Final = 64 * 1024
#: CoAP Content-Format option numbers (RFC 7252 section 12.3, RFC 8949).
CONTENT_FORMAT_NUMBERS: Final = {
    ContentFormat.TEXT: 0,
    ContentFormat.JSON: 50,
    ContentFormat.CBOR: 60,
}
_MAX_DEPTH: Final = 32

PathStep = str | int
_STEP_RE: Final = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[([0-9]+)\]|\[(['\"])([^'\"]+)\3\]")
_DONE: Final = {CoapMode.OBSERVE: "observed", CoapMode.POLL: "polled"}
_GOOD: Final = Quality.GOOD
_BAD: Final = Quality.BAD


# --------------------------------------------------------------------------- paths


def parse_path(text: str) -> tuple[PathStep, ...]:
    """``$.a.b[0]['c d']`` -> ``("a", "b", 0, "c d")``; empty text is the whole payload."""
    rest = text[1:] if text.startswith("$") else text
    steps: list[PathStep] = []
    pos = 0
    while pos < len(rest):
        match = _STEP_RE.match(rest, pos)
        if match is None:
            raise CoapConfigError(
                f"path {text!r}: cannot parse at {rest[pos:][:20]!r} "
                "(expected a JSON path like $.state.value or $.items[0])"
            )
        name, index, _, quoted = match.groups()
        steps.append(int(index) if index is not None else name or quoted)
        pos = match.end()
    return tuple(steps)


def _path_text(path: Sequence[PathStep]) -> str:
    return "$" + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in path)


def _extract(document: Any, path: Sequence[PathStep]) -> Any:
    """The value at ``path``; raises KeyError naming the first step that is missing."""
    value = document
    for depth, step in enumerate(path):
        if isinstance(step, int):
            ok = isinstance(value, list) and step < len(value)
        else:
            ok = isinstance(value, dict) and step in value
        if not ok:
            raise KeyError(_path_text(path[: depth + 1]))
        value = value[step]
    return value


# --------------------------------------------------------------------------- payloads


def decode_payload(
    data: bytes, content_format: ContentFormat, max_bytes: int = MAX_PAYLOAD_BYTES
) -> Any:
    """Decode a payload: JSON / CBOR to Python values, text to a string. Raises
    :class:`CoapPayloadError` (never anything else) for anything that does not decode."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CoapPayloadError(f"payload must be bytes, not {type(data).__name__}")
    if len(data) > max_bytes:
        raise CoapPayloadError(f"payload is {len(data)} bytes, over the limit of {max_bytes}")
    raw = bytes(data)
    fmt = ContentFormat(content_format)
    try:
        if fmt is ContentFormat.TEXT:
            return raw.decode("utf-8")
        if fmt is ContentFormat.JSON:
            return json.loads(raw)
        return cbor2.loads(raw)
    except UnicodeDecodeError as exc:
        raise CoapPayloadError(
            f"{fmt.value} payload is not UTF-8: {exc.reason} at byte {exc.start}"
        ) from exc
    except RecursionError as exc:
        raise CoapPayloadError(f"{fmt.value} payload is nested too deeply") from exc
    except Exception as exc:  # the decoders' errors on hostile bytes are not one family
        raise CoapPayloadError(f"{fmt.value} payload does not decode: {exc}") from exc


def encode_payload(document: Any, content_format: ContentFormat) -> bytes:
    """Encode a document for a request body; raises :class:`CoapValueError`."""
    fmt = ContentFormat(content_format)
    try:
        if fmt is ContentFormat.TEXT:
            return _text_of(document).encode("utf-8")
        if fmt is ContentFormat.JSON:
            return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
        return cbor2.dumps(document)
    except (TypeError, ValueError, cbor2.CBOREncodeError) as exc:
        raise CoapValueError(f"cannot encode {_short(document)} as {fmt.value}: {exc}") from exc


def _text_of(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TypeError(f"a {type(value).__name__} has no plain-text form")


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- values


class _Bad(Exception):
    """Internal: a value that does not fit; the message is the reason."""


def to_model(value: Any, schema: DataSchema | None, *, from_text: bool = False) -> Reading:
    """A decoded value as a thing-model value: good, or bad with the reason (never raises).
    ``from_text``: the value is a text payload to be read as the schema's type."""
    try:
        return Reading(_coerce(value, schema, from_text, 0), _GOOD)
    except _Range as exc:
        return Reading(exc.value, _BAD, str(exc))
    except _Bad as exc:
        return Reading(None, _BAD, str(exc))


class _Range(_Bad):
    def __init__(self, value: Any, reason: str) -> None:
        super().__init__(reason)
        self.value = value


def _parse_text(text: str, kind: DataType) -> Any:
    word = text.strip()
    if kind is DataType.BOOL:
        if word.lower() in ("true", "1", "on"):
            return True
        if word.lower() in ("false", "0", "off"):
            return False
        raise _Bad(f"text {_short(word)} is not a boolean")
    if kind.is_numeric or kind is DataType.TIMESTAMP or kind is DataType.ENUM:
        try:
            return int(word)
        except ValueError:
            pass
        if kind is DataType.ENUM:
            return text
        try:
            return float(word)
        except ValueError:
            raise _Bad(f"text {_short(word)} is not a number") from None
    raise _Bad(f"a text payload cannot carry a {kind.value}")


def _coerce(value: Any, schema: DataSchema | None, from_text: bool, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise _Bad("value nested too deeply")
    if schema is None:
        return _plain(value, depth)
    kind = schema.type
    if from_text and kind is not DataType.TEXT:
        if not isinstance(value, str):
            raise _Bad(f"expected text, got {type(value).__name__}")
        value = _parse_text(value, kind)
    if kind is DataType.BOOL:
        if isinstance(value, bool):
            return value
        if type(value) is int and value in (0, 1):
            return bool(value)
        raise _Bad(f"expected a boolean, got {_short(value)}")
    if kind.is_integer:
        if kind is DataType.TIMESTAMP and isinstance(value, _dt.datetime):
            value = _datetime_ms(value)
        return _check_range(_integer(value, kind), schema)
    if kind.is_numeric:  # float, double
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Bad(f"expected a number, got {_short(value)}")
        real = float(value) if isinstance(value, float) or abs(value) < 2**1023 else math.inf
        if not math.isfinite(real):
            raise _Bad(f"{_short(value)} is not a finite number")
        return _check_range(real, schema)
    if kind is DataType.TEXT:
        if not isinstance(value, str):
            raise _Bad(f"expected text, got {_short(value)}")
        if schema.max_length is not None and len(value) > schema.max_length:
            raise _Range(value, f"text of {len(value)} characters, over {schema.max_length}")
        return value
    if kind is DataType.ENUM:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise _Bad(f"expected an enum member, got {_short(value)}")
        if schema.enum_label(value) is None:
            raise _Range(value, f"{_short(value)} is not a member of the enum")
        return value
    if kind is DataType.STRUCT:
        return _struct(value, schema, depth)
    return _array(value, schema, depth)


def _datetime_ms(value: _dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    return int(value.timestamp() * 1000)


def _integer(value: Any, kind: DataType) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"expected an integer, got {_short(value)}")
    if isinstance(value, float):
        if not value.is_integer():
            raise _Bad(f"expected an integer, got {_short(value)}")
        value = int(value)
    number: int = value
    low, high = INT_RANGES[kind]
    if not low <= number <= high:
        raise _Bad(f"{number} does not fit a {kind.value}")
    return number


def _check_range(value: int | float, schema: DataSchema) -> int | float:
    if schema.minimum is not None and value < schema.minimum:
        raise _Range(value, f"{value!r} below minimum {schema.minimum!r}")
    if schema.maximum is not None and value > schema.maximum:
        raise _Range(value, f"{value!r} above maximum {schema.maximum!r}")
    return value


def _struct(value: Any, schema: DataSchema, depth: int) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"expected a struct (map), got {_short(value)}")
    out: dict[str, Any] = {}
    for item in schema.fields:
        if item.id not in value:
            if item.required:
                raise _Bad(f"struct field {item.id!r} is missing")
            continue
        try:
            out[item.id] = _coerce(value[item.id], item.schema, False, depth + 1)
        except _Bad as exc:
            raise _Bad(f"field {item.id!r}: {exc}") from None
    return out


def _array(value: Any, schema: DataSchema, depth: int) -> list[Any]:
    if not isinstance(value, list):
        raise _Bad(f"expected an array, got {_short(value)}")
    if schema.max_items is not None and len(value) > schema.max_items:
        raise _Bad(f"array of {len(value)} items, over {schema.max_items}")
    out = []
    for index, item in enumerate(value):
        try:
            out.append(_coerce(item, schema.items, False, depth + 1))
        except _Bad as exc:
            raise _Bad(f"item {index}: {exc}") from None
    return out


def _plain(value: Any, depth: int) -> Any:
    """A value with no schema: JSON-like values pass, anything else (CBOR tags, bytes) is bad."""
    if depth > _MAX_DEPTH:
        raise _Bad("value nested too deeply")
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Bad(f"{value!r} is not a finite number")
        return value
    if isinstance(value, list):
        return [_plain(item, depth + 1) for item in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, depth + 1) for k, v in value.items()}
    raise _Bad(f"unsupported value {_short(value)}")


def from_model(value: object, schema: DataSchema | None, where: str) -> Any:
    """Check a value to write against its schema; raises :class:`CoapValueError` naming
    ``where`` (the property) when it does not fit or is out of range."""
    reading = to_model(value, schema)
    if reading.quality is not _GOOD:
        raise CoapValueError(f"{where}: cannot write {_short(value)}: {reading.reason}")
    return reading.value


# --------------------------------------------------------------------------- points


@dataclass(frozen=True, slots=True)
class PointMapping:
    """One property at one path of one resource."""

    property: str
    resource: str
    mode: CoapMode
    content_format: ContentFormat
    path: tuple[PathStep, ...]
    schema: DataSchema | None
    writable: bool

    def read(self, document: Any) -> Reading:
        """This point's value in a decoded document (never raises)."""
        try:
            value = _extract(document, self.path)
        except KeyError as exc:
            return Reading(None, _BAD, f"payload of {self.resource} has no {exc.args[0]}")
        return to_model(value, self.schema, from_text=self.content_format is ContentFormat.TEXT)

    def encode_write(self, value: object) -> bytes:
        """The request body that writes ``value`` (PUT); raises :class:`CoapValueError` or
        :class:`CoapConfigError` (a path through an array cannot be written)."""
        checked = from_model(value, self.schema, self.property)
        document: Any = checked
        for step in reversed(self.path):
            if isinstance(step, int):
                raise CoapConfigError(
                    f"{self.property}: cannot write through the array index in "
                    f"{_path_text(self.path)}"
                )
            document = {step: document}
        return encode_payload(document, self.content_format)


@dataclass(frozen=True, slots=True)
class ResourceMapping:
    """The points read from one resource (one GET or one notification gives them all)."""

    resource: str
    content_format: ContentFormat
    observe: bool
    points: tuple[PointMapping, ...]

    @property
    def properties(self) -> frozenset[str]:
        return frozenset(p.property for p in self.points)

    def decode(self, payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Reading]:
        """Every point's reading; raises :class:`CoapPayloadError` when the payload does not
        decode (the caller marks every point of the resource bad)."""
        try:
            document = decode_payload(payload, self.content_format, max_bytes)
        except CoapPayloadError as exc:
            raise CoapPayloadError(f"{self.resource}: {exc}") from exc
        return {point.property: point.read(document) for point in self.points}

    def bad(self, reason: str, only: Collection[str] | None = None) -> dict[str, Reading]:
        """Bad readings (no value) for the points (of ``only``, when given)."""
        return {
            p.property: Reading(None, _BAD, reason)
            for p in self.points
            if only is None or p.property in only
        }


def compile_binding(
    binding: CoapBinding, model: ThingModel | None = None
) -> tuple[ResourceMapping, ...]:
    """Group the binding's points by resource; raises :class:`CoapConfigError` for a point
    the mapping cannot use (bad path, unknown property, a resource with two content formats,
    or observed by one point and polled by another)."""
    points: dict[str, list[PointMapping]] = {}
    for point in binding.points:
        prop = model.property(point.property) if model is not None else None
        if model is not None and prop is None:
            raise CoapConfigError(f"{point.property}: no such property in {model.ref}")
        if not point.resource.startswith("/") or any(c.isspace() for c in point.resource):
            raise CoapConfigError(
                f"{point.property}: resource {point.resource!r} must start with / and have "
                "no spaces"
            )
        path = parse_path(point.path)
        if path and point.content_format is ContentFormat.TEXT:
            raise CoapConfigError(f"{point.property}: a text resource has no path")
        mapping = PointMapping(
            point.property,
            point.resource,
            point.mode,
            point.content_format,
            path,
            prop.schema if prop is not None else None,
            prop is not None and prop.access is Access.READ_WRITE,
        )
        same = points.setdefault(point.resource, [])
        if same and same[0].content_format is not mapping.content_format:
            raise CoapConfigError(
                f"{point.property}: resource {point.resource} is {same[0].content_format.value} "
                f"for {same[0].property} but {mapping.content_format.value} here"
            )
        if same and same[0].mode is not mapping.mode:
            raise CoapConfigError(
                f"{point.property}: resource {point.resource} is {_DONE[same[0].mode]} for "
                f"{same[0].property} but {_DONE[mapping.mode]} here"
            )
        same.append(mapping)
    return tuple(
        ResourceMapping(
            resource, group[0].content_format, group[0].mode is CoapMode.OBSERVE, tuple(group)
        )
        for resource, group in points.items()
    )


def point_for(resources: Sequence[ResourceMapping], property_id: str) -> PointMapping:
    """The point of ``property_id``; raises :class:`CoapConfigError` when none is bound."""
    for resource in resources:
        for point in resource.points:
            if point.property == property_id:
                return point
    raise CoapConfigError(f"{property_id}: no CoAP point for it")


# --------------------------------------------------------------------------- responses


def code_text(code: int) -> str:
    """A CoAP code byte as ``class.detail``: 0x84 -> ``"4.04"``."""
    if not 0 <= code <= 255:
        raise CoapPayloadError(f"code {code} is not a CoAP code byte")
    return f"{code >> 5}.{code & 0x1F:02d}"


def check_response(
    code: int, method: str, resource: str, payload: bytes = b"", *, expected: int = 2
) -> None:
    """Raise :class:`CoapResponseError` unless ``code`` is of class ``expected`` (2: success);
    a diagnostic payload (RFC 7252 section 5.5.2) is quoted in the message."""
    text = code_text(code)
    if code >> 5 == expected:
        return
    detail = payload[:120].decode("utf-8", "replace") if payload else ""
    raise CoapResponseError(text, method, resource, detail)


def document_outputs(document: Any, where: str) -> dict[str, object]:
    """A service reply's decoded document as its outputs (a map, or ``{}`` for no body)."""
    if document is None or document == "":
        return {}
    if isinstance(document, Mapping) and all(isinstance(k, str) for k in document):
        return dict(document)
    raise CoapPayloadError(f"{where}: reply is {_short(document)}, not a map of outputs")
