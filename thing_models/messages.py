"""The canonical message envelope shared by the edge and the cloud.

One :class:`Message` carries a property report, an event, a service call or reply, or a
property set or reply: message id, kind, model reference (``name@version``), device id,
timestamp (milliseconds since the Unix epoch, UTC), quality and parameters, plus the fields
only some kinds use (``name``, ``correlation_id``, ``status``, ``status_message``,
``param_quality``).

Two forms, converted losslessly:

* JSON (:func:`to_json_dict`/:func:`from_json_dict`, :func:`dumps`/:func:`loads`), described by
  the published JSON Schema ``thing_models/schemas/message.schema.json``
  (:func:`message_json_schema`);
* protobuf ``thingmodels.v1.ThingMessage`` (:func:`to_protobuf`/:func:`from_protobuf`,
  :func:`to_bytes`/:func:`from_bytes`, batches of them for the uplink).

Parameter values are JSON values: null, bool, int (int64 range), float, string, list, and maps
with string keys. Decisions that make the conversions lossless:

* ``int`` and ``float`` stay distinct (``2`` vs ``2.0``); ``bool`` is not an int.
* Floats must be finite: NaN and infinities are rejected (JSON cannot carry them).
* ``-0.0`` is kept as negative zero in both forms, and ``Message`` equality tells it from
  ``0.0``: equality is strict on JSON types (``1 != 1.0 != True``).
* Strings must be valid Unicode (no lone surrogates), since both forms are UTF-8.
* Values nest at most :data:`MAX_DEPTH` containers deep (the ``params`` map counts as one).

Malformed input of any form raises :class:`~thing_models.errors.MessageError` whose text begins
with the offending field's path, e.g. ``params.temp[2]: ...``.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache, lru_cache
from importlib import resources
from typing import Any, Final, TypeAlias

from google.protobuf.message import DecodeError

from thing_models.errors import MessageError
from thing_models.model import ModelRef
from thing_models.proto import thing_message_pb2 as pb

__all__ = [
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_BYTES",
    "MAX_DEPTH",
    "STATUS_OK",
    "JsonValue",
    "Message",
    "MessageKind",
    "Quality",
    "batch_from_bytes",
    "batch_to_bytes",
    "dumps",
    "from_bytes",
    "from_json_dict",
    "from_protobuf",
    "from_protobuf_batch",
    "loads",
    "message_json_schema",
    "new_message_id",
    "normalize_value",
    "now_ms",
    "quality_from_protobuf",
    "quality_to_protobuf",
    "to_bytes",
    "to_json_dict",
    "to_protobuf",
    "to_protobuf_batch",
    "value_from_protobuf",
    "value_to_protobuf",
]

#: A JSON value as accepted in ``params``; stored values are normalized to ``list``/``dict``.
JsonValue: TypeAlias = (
    bool | int | float | str | Sequence["JsonValue"] | Mapping[str, "JsonValue"] | None
)

#: Deepest nesting of lists/maps in ``params`` (the ``params`` map itself is level 1).
MAX_DEPTH: Final = 32
#: Largest encoded message :func:`loads` and :func:`from_bytes` accept by default (1 MiB).
DEFAULT_MAX_BYTES: Final = 1 << 20
#: Largest encoded batch :func:`batch_from_bytes` accepts by default (16 MiB).
DEFAULT_MAX_BATCH_BYTES: Final = 16 << 20
#: The status of a successful reply.
STATUS_OK: Final = "ok"

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_MAX_TOKEN = 128
_MAX_MODEL = 256
_MAX_NAME = 256
_MAX_STATUS_MESSAGE = 4096

# Characters never allowed in ids: C0/C1 controls, whitespace and invisible format characters
# (soft hyphen, zero-width, bidi controls, BOM). The JSON Schema uses the same class.
_BAD_TOKEN_CHARS = (
    r"\x00-\x20\x7f-\xa0\xad\u1680\u180e\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000\ufeff"
)
_TOKEN_RE = re.compile(rf"[^{_BAD_TOKEN_CHARS}]{{1,{_MAX_TOKEN}}}")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,49}(?::[A-Za-z_][A-Za-z0-9_]{0,49})*")
_STATUS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


class MessageKind(StrEnum):
    """What a message is."""

    PROPERTY_REPORT = "property_report"
    EVENT = "event"
    SERVICE_CALL = "service_call"
    SERVICE_REPLY = "service_reply"
    PROPERTY_SET = "property_set"
    PROPERTY_SET_REPLY = "property_set_reply"

    @property
    def is_reply(self) -> bool:
        return self in (MessageKind.SERVICE_REPLY, MessageKind.PROPERTY_SET_REPLY)


class Quality(StrEnum):
    """How far values can be trusted (OPC UA's three classes)."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


# Per kind: is ``name`` required (True) or forbidden (False); may it carry ``param_quality``.
_NAME_REQUIRED: Final = {
    MessageKind.PROPERTY_REPORT: False,
    MessageKind.EVENT: True,
    MessageKind.SERVICE_CALL: True,
    MessageKind.SERVICE_REPLY: True,
    MessageKind.PROPERTY_SET: False,
    MessageKind.PROPERTY_SET_REPLY: False,
}
_PARAM_QUALITY_KINDS: Final = frozenset({MessageKind.PROPERTY_REPORT})
_REPLY_OF: Final = {
    MessageKind.SERVICE_CALL: MessageKind.SERVICE_REPLY,
    MessageKind.PROPERTY_SET: MessageKind.PROPERTY_SET_REPLY,
}


# --------------------------------------------------------------------------- helpers


def now_ms() -> int:
    """The current time in milliseconds since the Unix epoch (UTC)."""
    return time.time_ns() // 1_000_000


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_message_id(ts_ms: int | None = None) -> str:
    """A new ULID: 26 Crockford base-32 characters, 48-bit millisecond time + 80 random bits.

    Ids made later sort after ids made earlier (to the millisecond), which keeps outboxes and
    histories in order by id.
    """
    stamp = now_ms() if ts_ms is None else ts_ms
    number = ((stamp & (2**48 - 1)) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        number, digit = divmod(number, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "integer", float: "float", str: "string", list: "array"}.get(
        type(value), "object" if isinstance(value, Mapping) else type(value).__name__
    )


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if _NAME_RE.fullmatch(key) else f"{path}[{key!r}]"


def _check_unicode(text: str, path: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise MessageError(
                f"{path}: string is not valid Unicode (lone surrogate at {exc.start})"
            ) from exc


def _check_token(value: object, path: str) -> str:
    if type(value) is not str:
        raise MessageError(f"{path}: expected a string, got {_type_name(value)}")
    if not _TOKEN_RE.fullmatch(value):
        raise MessageError(
            f"{path}: must be 1-{_MAX_TOKEN} characters without whitespace or control "
            f"characters (got {_short(value)})"
        )
    _check_unicode(value, path)
    return value


def _check_name(value: object, path: str) -> str:
    if type(value) is not str:
        raise MessageError(f"{path}: expected a string, got {_type_name(value)}")
    if len(value) > _MAX_NAME or not _NAME_RE.fullmatch(value):
        raise MessageError(
            f"{path}: {_short(value)} is not an identifier (letters, digits, '_', at most 50; "
            "component members as 'instance:id')"
        )
    return value


def _check_model(value: object) -> str:
    if type(value) is not str:
        raise MessageError(f"model: expected a string, got {_type_name(value)}")
    problem = _model_problem(value)
    if problem is not None:
        raise MessageError(f"model: {problem}")
    return value


@lru_cache(maxsize=4096)
def _model_problem(value: str) -> str | None:
    """Why ``value`` is not a versioned model reference, or None (cached: models repeat)."""
    # ModelRef.parse lets '\d' match any Unicode digit and '$' match before a final newline.
    if len(value) > _MAX_MODEL or not (value.isascii() and value.isprintable()) or " " in value:
        return f"{_short(value)} is not a model reference (name@version)"
    try:
        ref = ModelRef.parse(value)
    except ValueError as exc:
        return str(exc)
    if not ref.version:
        return (
            f"{_short(value)} has no version (expected name@version, "
            "e.g. com.acme.energy/meter-3p@1.2.0)"
        )
    return None


def _check_int(value: object, path: str, minimum: int = _INT64_MIN) -> int:
    if type(value) is not int:
        raise MessageError(f"{path}: expected an integer, got {_type_name(value)}")
    if not minimum <= value <= _INT64_MAX:
        raise MessageError(f"{path}: {value} is outside {minimum}..{_INT64_MAX}")
    return value


def _enum(cls: type[MessageKind] | type[Quality], value: object, path: str) -> Any:
    if isinstance(value, cls):
        return value
    if type(value) is not str:
        raise MessageError(f"{path}: expected a string, got {_type_name(value)}")
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise MessageError(f"{path}: {_short(value)} is not one of {allowed}") from None


def _normalize(value: object, path: str, depth: int) -> Any:
    """A validated copy of a JSON value, with exact types (list, dict, str, int, float, bool)."""
    kind = type(value)
    if value is None or kind is bool:
        return value
    if kind is int:
        return _check_int(value, path)
    if kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise MessageError(f"{path}: {value} is not allowed (floats must be finite)")
        return value
    if kind is str:
        _check_unicode(value, path)  # type: ignore[arg-type]
        return value
    if isinstance(value, Mapping | list | tuple):
        if depth >= MAX_DEPTH:
            raise MessageError(f"{path}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, Mapping):
            return _normalize_map(value, path, depth + 1)
        return [_normalize(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    # Subclasses (IntEnum, StrEnum, ...) become their plain JSON type.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return _check_int(int(value), path)
    if isinstance(value, float):
        return _normalize(float(value), path, depth)
    if isinstance(value, str):
        return _normalize(str.__str__(value), path, depth)
    raise MessageError(f"{path}: {_type_name(value)} is not a JSON value")


def _normalize_map(value: Mapping[Any, Any], path: str, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        if type(key) is not str:
            if not isinstance(key, str):
                raise MessageError(f"{path}: map keys must be strings, got {_short(key)}")
            key = str.__str__(key)
        if not key.isascii():
            _check_unicode(key, path)
        # the common scalars inline: no child path is built unless something is wrong
        kind = type(item)
        if kind is float:
            if item - item == 0.0:  # finite
                out[key] = item
                continue
        elif item is None or kind is bool:
            out[key] = item
            continue
        elif kind is int:
            if _INT64_MIN <= item <= _INT64_MAX:
                out[key] = item
                continue
        elif kind is str and item.isascii():
            out[key] = item
            continue
        out[key] = _normalize(item, _child(path, key), depth)
    return out


@lru_cache(maxsize=16384)
def _is_name(value: str) -> bool:
    """Whether ``value`` is a parameter name (cached: the same names come in every report)."""
    return len(value) <= _MAX_NAME and _NAME_RE.fullmatch(value) is not None


def _same(a: Any, b: Any) -> bool:
    """Equality strict on JSON types: ``1 != 1.0 != True`` and ``-0.0 != 0.0``."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    return bool(a == b)


# --------------------------------------------------------------------------- the envelope


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Message:
    """One canonical message; validated on construction (raises MessageError).

    ``params`` and ``param_quality`` are stored as validated copies; treat them as read-only.
    Optional strings are None (``name``, ``correlation_id``, ``status``) or "" (``status_message``)
    when absent. Messages compare equal only when every value has the same JSON type too.
    """

    id: str
    kind: MessageKind
    model: str
    device_id: str
    ts_ms: int
    quality: Quality = Quality.GOOD
    params: Mapping[str, JsonValue] = field(default_factory=dict)
    name: str | None = None
    correlation_id: str | None = None
    status: str | None = None
    status_message: str = ""
    param_quality: Mapping[str, Quality] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_token(self.id, "id")
        kind: MessageKind = _enum(MessageKind, self.kind, "kind")
        object.__setattr__(self, "kind", kind)
        _check_model(self.model)
        _check_token(self.device_id, "device_id")
        _check_int(self.ts_ms, "ts_ms", 0)
        object.__setattr__(self, "quality", _enum(Quality, self.quality, "quality"))
        self._check_kind_fields(kind)
        if not isinstance(self.params, Mapping):
            raise MessageError(f"params: expected an object, got {_type_name(self.params)}")
        params = _normalize_map(self.params, "params", 1)
        for key in params:
            if not _is_name(key):
                _check_name(key, _child("params", key))
        object.__setattr__(self, "params", params)
        if not isinstance(self.param_quality, Mapping):
            raise MessageError(
                f"param_quality: expected an object, got {_type_name(self.param_quality)}"
            )
        param_quality: dict[str, Quality] = {}
        for key, value in self.param_quality.items():
            path = _child("param_quality", str(key))
            if not isinstance(key, str) or key not in params:
                raise MessageError(f"{path}: names no parameter of this message")
            param_quality[str.__str__(key)] = _enum(Quality, value, path)
        if param_quality and kind not in _PARAM_QUALITY_KINDS:
            raise MessageError(f"param_quality: not allowed in a {kind} message")
        object.__setattr__(self, "param_quality", param_quality)

    def _check_kind_fields(self, kind: MessageKind) -> None:
        if self.name is None:
            if _NAME_REQUIRED[kind]:
                raise MessageError(f"name: required in a {kind} message")
        elif not _NAME_REQUIRED[kind]:
            raise MessageError(f"name: not allowed in a {kind} message")
        else:
            _check_name(self.name, "name")
        for attr in ("correlation_id", "status"):
            value = getattr(self, attr)
            if value is None:
                if kind.is_reply:
                    raise MessageError(f"{attr}: required in a {kind} message")
            elif not kind.is_reply:
                raise MessageError(f"{attr}: not allowed in a {kind} message")
        if self.correlation_id is not None:
            _check_token(self.correlation_id, "correlation_id")
        if self.status is not None:
            if type(self.status) is not str:
                raise MessageError(f"status: expected a string, got {_type_name(self.status)}")
            if not _STATUS_RE.fullmatch(self.status):
                raise MessageError(
                    f"status: {_short(self.status)} is not 'ok' or an error code "
                    "(letters, digits, '_.:-', at most 64)"
                )
        if type(self.status_message) is not str:
            raise MessageError(
                f"status_message: expected a string, got {_type_name(self.status_message)}"
            )
        if self.status_message:
            if not kind.is_reply:
                raise MessageError(f"status_message: not allowed in a {kind} message")
            if len(self.status_message) > _MAX_STATUS_MESSAGE:
                raise MessageError(f"status_message: longer than {_MAX_STATUS_MESSAGE} characters")
            _check_unicode(self.status_message, "status_message")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (
            self.id == other.id
            and self.kind == other.kind
            and self.model == other.model
            and self.device_id == other.device_id
            and self.ts_ms == other.ts_ms
            and self.quality == other.quality
            and self.name == other.name
            and self.correlation_id == other.correlation_id
            and self.status == other.status
            and self.status_message == other.status_message
            and self.param_quality == other.param_quality
            and _same(self.params, other.params)
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def model_ref(self) -> ModelRef:
        """The model reference, parsed."""
        return ModelRef.parse(self.model)

    @property
    def ok(self) -> bool:
        """True for a reply whose status is ``ok``."""
        return self.status == STATUS_OK

    # ------------------------------------------------------------------ constructors

    @classmethod
    def property_report(
        cls,
        model: str,
        device_id: str,
        params: Mapping[str, JsonValue],
        *,
        ts_ms: int | None = None,
        quality: Quality = Quality.GOOD,
        param_quality: Mapping[str, Quality] | None = None,
        id: str | None = None,
    ) -> Message:
        """A property report; ``ts_ms`` and ``id`` default to now and a new ULID."""
        stamp = now_ms() if ts_ms is None else ts_ms
        return cls(
            id=new_message_id(stamp) if id is None else id,
            kind=MessageKind.PROPERTY_REPORT,
            model=model,
            device_id=device_id,
            ts_ms=stamp,
            quality=quality,
            params=params,
            param_quality=param_quality or {},
        )

    @classmethod
    def event(
        cls,
        model: str,
        device_id: str,
        name: str,
        params: Mapping[str, JsonValue] | None = None,
        *,
        ts_ms: int | None = None,
        quality: Quality = Quality.GOOD,
        id: str | None = None,
    ) -> Message:
        """An event ``name`` with its output parameters."""
        stamp = now_ms() if ts_ms is None else ts_ms
        return cls(
            id=new_message_id(stamp) if id is None else id,
            kind=MessageKind.EVENT,
            model=model,
            device_id=device_id,
            ts_ms=stamp,
            quality=quality,
            params=params or {},
            name=name,
        )

    @classmethod
    def service_call(
        cls,
        model: str,
        device_id: str,
        name: str,
        params: Mapping[str, JsonValue] | None = None,
        *,
        ts_ms: int | None = None,
        id: str | None = None,
    ) -> Message:
        """A call of service ``name`` with its input parameters."""
        stamp = now_ms() if ts_ms is None else ts_ms
        return cls(
            id=new_message_id(stamp) if id is None else id,
            kind=MessageKind.SERVICE_CALL,
            model=model,
            device_id=device_id,
            ts_ms=stamp,
            params=params or {},
            name=name,
        )

    @classmethod
    def property_set(
        cls,
        model: str,
        device_id: str,
        params: Mapping[str, JsonValue],
        *,
        ts_ms: int | None = None,
        id: str | None = None,
    ) -> Message:
        """A request to set the properties in ``params``."""
        stamp = now_ms() if ts_ms is None else ts_ms
        return cls(
            id=new_message_id(stamp) if id is None else id,
            kind=MessageKind.PROPERTY_SET,
            model=model,
            device_id=device_id,
            ts_ms=stamp,
            params=params,
        )

    def reply(
        self,
        status: str = STATUS_OK,
        params: Mapping[str, JsonValue] | None = None,
        *,
        status_message: str = "",
        ts_ms: int | None = None,
        quality: Quality = Quality.GOOD,
        id: str | None = None,
    ) -> Message:
        """The reply to this service call or property set (same model, device and name)."""
        reply_kind = _REPLY_OF.get(self.kind)
        if reply_kind is None:
            raise MessageError(f"kind: a {self.kind} message has no reply")
        stamp = now_ms() if ts_ms is None else ts_ms
        return Message(
            id=new_message_id(stamp) if id is None else id,
            kind=reply_kind,
            model=self.model,
            device_id=self.device_id,
            ts_ms=stamp,
            quality=quality,
            params=params or {},
            name=self.name,
            correlation_id=self.id,
            status=status,
            status_message=status_message,
        )


# --------------------------------------------------------------------------- JSON form

_REQUIRED_KEYS: Final = ("id", "kind", "model", "device_id", "ts_ms", "quality", "params")
_OPTIONAL_KEYS: Final = ("name", "correlation_id", "status", "status_message", "param_quality")
_ALL_KEYS: Final = frozenset(_REQUIRED_KEYS + _OPTIONAL_KEYS)


def to_json_dict(msg: Message) -> dict[str, Any]:
    """The JSON form of ``msg`` (fresh dicts and lists); absent optional fields are left out."""
    out: dict[str, Any] = {
        "id": msg.id,
        "kind": msg.kind.value,
        "model": msg.model,
        "device_id": msg.device_id,
        "ts_ms": msg.ts_ms,
        "quality": msg.quality.value,
        "params": _normalize_map(msg.params, "params", 1),
    }
    if msg.name is not None:
        out["name"] = msg.name
    if msg.correlation_id is not None:
        out["correlation_id"] = msg.correlation_id
    if msg.status is not None:
        out["status"] = msg.status
    if msg.status_message:
        out["status_message"] = msg.status_message
    if msg.param_quality:
        out["param_quality"] = {k: q.value for k, q in msg.param_quality.items()}
    return out


def from_json_dict(obj: object) -> Message:
    """Parse the JSON form strictly: unknown or missing keys and wrong types raise MessageError."""
    if not isinstance(obj, Mapping):
        raise MessageError(f"message: expected a JSON object, got {_type_name(obj)}")
    unknown = sorted(str(k) for k in obj if k not in _ALL_KEYS)
    if unknown:
        raise MessageError(f"message: unknown field(s): {', '.join(map(repr, unknown))}")
    missing = [k for k in _REQUIRED_KEYS if k not in obj]
    if missing:
        raise MessageError(f"message: missing required field(s): {', '.join(missing)}")
    for key in ("name", "correlation_id", "status", "status_message"):
        if key in obj and type(obj[key]) is not str:
            raise MessageError(f"{key}: expected a string, got {_type_name(obj[key])}")
    if obj.get("status_message") == "":
        raise MessageError("status_message: must not be empty (leave it out instead)")
    param_quality = obj.get("param_quality", None)
    if "param_quality" in obj:
        if not isinstance(param_quality, Mapping):
            raise MessageError(
                f"param_quality: expected an object, got {_type_name(param_quality)}"
            )
        if not param_quality:
            raise MessageError("param_quality: must not be empty (leave it out instead)")
    if not isinstance(obj["params"], Mapping):
        raise MessageError(f"params: expected an object, got {_type_name(obj['params'])}")
    return Message(
        id=obj["id"],
        kind=_enum(MessageKind, obj["kind"], "kind"),
        model=obj["model"],
        device_id=obj["device_id"],
        ts_ms=obj["ts_ms"],
        quality=_enum(Quality, obj["quality"], "quality"),
        params=obj["params"],
        name=obj.get("name"),
        correlation_id=obj.get("correlation_id"),
        status=obj.get("status"),
        status_message=obj.get("status_message", ""),
        param_quality=param_quality or {},
    )


def dumps(msg: Message, *, indent: int | None = None) -> str:
    """Canonical JSON text of ``msg``: keys sorted, UTF-8 characters unescaped, compact."""
    separators = (",", ": ") if indent is not None else (",", ":")
    return json.dumps(
        to_json_dict(msg),
        ensure_ascii=False,
        allow_nan=False,
        sort_keys=True,
        indent=indent,
        separators=separators,
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise MessageError(f"message: duplicate key {dup!r}")
    return out


def _check_size(data: object, max_bytes: int, what: str) -> None:
    if not isinstance(data, bytes | bytearray | memoryview | str):
        raise MessageError(f"{what}: expected bytes, got {_type_name(data)}")
    size = len(data)
    if isinstance(data, str) and size <= max_bytes < size * 4:
        size = len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise MessageError(f"{what}: {size} bytes is more than the limit of {max_bytes}")


def loads(data: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Message:
    """Parse JSON text (str, or UTF-8 bytes) into a Message; hostile input raises MessageError.

    Refused: more than ``max_bytes`` bytes, invalid UTF-8, NaN/Infinity, duplicate keys,
    nesting deeper than :data:`MAX_DEPTH`, and everything :func:`from_json_dict` refuses.
    """
    _check_size(data, max_bytes, "message")
    if not isinstance(data, str):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MessageError(f"message: not valid UTF-8 ({exc.reason} at {exc.start})") from exc
    try:
        # NaN, Infinity and 1e999 parse to floats that Message rejects, naming the field.
        obj = json.loads(data, object_pairs_hook=_no_duplicates)
    except RecursionError as exc:
        raise MessageError(f"message: nested deeper than {MAX_DEPTH} levels") from exc
    except ValueError as exc:
        raise MessageError(f"message: not valid JSON ({exc})") from exc
    return from_json_dict(obj)


@cache
def _schema_text() -> str:
    return (resources.files("thing_models") / "schemas" / "message.schema.json").read_text(
        encoding="utf-8"
    )


def message_json_schema() -> dict[str, Any]:
    """The published JSON Schema (Draft 2020-12) of the JSON form (a fresh copy)."""
    schema: dict[str, Any] = json.loads(_schema_text())
    return schema


# --------------------------------------------------------------------------- protobuf form

_KIND_TO_PB: Final = {
    MessageKind.PROPERTY_REPORT: pb.MESSAGE_KIND_PROPERTY_REPORT,
    MessageKind.EVENT: pb.MESSAGE_KIND_EVENT,
    MessageKind.SERVICE_CALL: pb.MESSAGE_KIND_SERVICE_CALL,
    MessageKind.SERVICE_REPLY: pb.MESSAGE_KIND_SERVICE_REPLY,
    MessageKind.PROPERTY_SET: pb.MESSAGE_KIND_PROPERTY_SET,
    MessageKind.PROPERTY_SET_REPLY: pb.MESSAGE_KIND_PROPERTY_SET_REPLY,
}
_KIND_FROM_PB: Final = {int(v): k for k, v in _KIND_TO_PB.items()}
_QUALITY_TO_PB: Final = {
    Quality.GOOD: pb.QUALITY_GOOD,
    Quality.UNCERTAIN: pb.QUALITY_UNCERTAIN,
    Quality.BAD: pb.QUALITY_BAD,
}
_QUALITY_FROM_PB: Final = {int(v): k for k, v in _QUALITY_TO_PB.items()}


def _fill_value(target: pb.Value, value: Any) -> None:
    if value is None:
        target.null_value = pb.NULL_VALUE
    elif value is True or value is False:
        target.bool_value = value
    elif type(value) is int:
        target.int_value = value
    elif type(value) is float:
        target.double_value = value
    elif type(value) is str:
        target.string_value = value
    elif type(value) is list:
        target.list_value.SetInParent()
        values = target.list_value.values
        for item in value:
            _fill_value(values.add(), item)
    else:
        target.map_value.SetInParent()
        fields = target.map_value.fields
        for key, item in value.items():
            _fill_value(fields[key], item)


def to_protobuf(msg: Message) -> pb.ThingMessage:
    """The protobuf form of ``msg``; absent optional strings are empty."""
    out = pb.ThingMessage(
        id=msg.id,
        kind=_KIND_TO_PB[msg.kind],
        model=msg.model,
        device_id=msg.device_id,
        ts_ms=msg.ts_ms,
        quality=_QUALITY_TO_PB[msg.quality],
        name=msg.name or "",
        correlation_id=msg.correlation_id or "",
        status=msg.status or "",
        status_message=msg.status_message,
    )
    for key, value in msg.params.items():
        _fill_value(out.params[key], value)
    for key, quality in msg.param_quality.items():
        out.param_quality[key] = _QUALITY_TO_PB[quality]
    return out


def _from_value(value: pb.Value, path: str, depth: int) -> Any:
    which = value.WhichOneof("kind")
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return value.double_value
    if which == "string_value":
        return value.string_value
    if which == "bool_value":
        return value.bool_value
    if which == "null_value":
        if value.null_value != pb.NULL_VALUE:
            raise MessageError(f"{path}: unknown null_value {value.null_value}")
        return None
    if which is None:
        raise MessageError(f"{path}: value has no kind set")
    if depth >= MAX_DEPTH:
        raise MessageError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if which == "list_value":
        return [
            _from_value(item, f"{path}[{i}]", depth + 1)
            for i, item in enumerate(value.list_value.values)
        ]
    return _from_map(value.map_value.fields, path, depth + 1)


def _from_map(fields: Mapping[str, pb.Value], path: str, depth: int) -> dict[str, Any]:
    return {key: _from_value(item, _child(path, key), depth) for key, item in fields.items()}


def normalize_value(value: object, path: str = "value") -> Any:
    """A validated copy of a JSON value (finite floats, int64 ints, string keys, bounded
    nesting); raises MessageError naming ``path`` and what is wrong."""
    return _normalize(value, path, 0)


def value_to_protobuf(value: object, path: str = "value") -> pb.Value:
    """The protobuf form of one JSON value (validated as by :func:`normalize_value`)."""
    out = pb.Value()
    _fill_value(out, _normalize(value, path, 0))
    return out


def value_from_protobuf(value: pb.Value, path: str = "value") -> Any:
    """The JSON value of a protobuf ``Value``; an unset or unknown kind raises MessageError."""
    return _from_value(value, path, 0)


def quality_to_protobuf(quality: Quality | str) -> int:
    """The protobuf enum number of a quality (``good``, ``uncertain``, ``bad``)."""
    return int(_QUALITY_TO_PB[_enum(Quality, quality, "quality")])


def quality_from_protobuf(number: int) -> Quality:
    """The quality of a protobuf enum number; unset or unknown raises MessageError."""
    try:
        return _QUALITY_FROM_PB[int(number)]
    except KeyError:
        raise MessageError(f"quality: {number} is not a known quality") from None


def from_protobuf(message: pb.ThingMessage) -> Message:
    """Convert the protobuf form back; unset or unknown enums and values raise MessageError."""
    if not isinstance(message, pb.ThingMessage):
        raise MessageError(f"message: expected a ThingMessage, got {type(message).__name__}")
    kind = _KIND_FROM_PB.get(message.kind)
    if kind is None:
        raise MessageError(f"kind: {message.kind} is not a known message kind")
    quality = _QUALITY_FROM_PB.get(message.quality)
    if quality is None:
        raise MessageError(f"quality: {message.quality} is not a known quality")
    param_quality: dict[str, Quality] = {}
    for key, code in message.param_quality.items():
        item = _QUALITY_FROM_PB.get(code)
        if item is None:
            raise MessageError(f"{_child('param_quality', key)}: {code} is not a known quality")
        param_quality[key] = item
    return Message(
        id=message.id,
        kind=kind,
        model=message.model,
        device_id=message.device_id,
        ts_ms=message.ts_ms,
        quality=quality,
        params=_from_map(message.params, "params", 1),
        name=message.name or None,
        correlation_id=message.correlation_id or None,
        status=message.status or None,
        status_message=message.status_message,
        param_quality=param_quality,
    )


def to_bytes(msg: Message) -> bytes:
    """The serialized protobuf form (deterministic: map entries sorted by key)."""
    return to_protobuf(msg).SerializeToString(deterministic=True)


def _parse(target: pb.ThingMessage | pb.ThingMessageBatch, data: Any, max_bytes: int) -> None:
    what = "batch" if isinstance(target, pb.ThingMessageBatch) else "message"
    if isinstance(data, str):
        raise MessageError(f"{what}: expected bytes, got string")
    _check_size(data, max_bytes, what)
    try:
        target.ParseFromString(bytes(data))
    except DecodeError as exc:
        raise MessageError(f"{what}: not a valid protobuf {type(target).__name__} ({exc})") from exc


def from_bytes(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Message:
    """Parse a serialized ThingMessage; malformed or oversized input raises MessageError."""
    message = pb.ThingMessage()
    _parse(message, data, max_bytes)
    return from_protobuf(message)


def to_protobuf_batch(messages: Iterable[Message]) -> pb.ThingMessageBatch:
    """A ThingMessageBatch of ``messages``, in order."""
    return pb.ThingMessageBatch(messages=[to_protobuf(m) for m in messages])


def from_protobuf_batch(batch: pb.ThingMessageBatch) -> list[Message]:
    """The messages of ``batch``; errors name the index, e.g. ``messages[3].device_id: ...``."""
    out: list[Message] = []
    for index, message in enumerate(batch.messages):
        try:
            out.append(from_protobuf(message))
        except MessageError as exc:
            raise MessageError(f"messages[{index}].{exc}") from exc
    return out


def batch_to_bytes(messages: Iterable[Message]) -> bytes:
    """The serialized ThingMessageBatch of ``messages`` (deterministic)."""
    return to_protobuf_batch(messages).SerializeToString(deterministic=True)


def batch_from_bytes(data: bytes, *, max_bytes: int = DEFAULT_MAX_BATCH_BYTES) -> list[Message]:
    """Parse a serialized ThingMessageBatch; any bad message raises MessageError naming it."""
    batch = pb.ThingMessageBatch()
    _parse(batch, data, max_bytes)
    return from_protobuf_batch(batch)
