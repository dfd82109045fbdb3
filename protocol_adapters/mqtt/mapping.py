"""The pure MQTT mapping: topics and JSON payloads in, thing-model values and events out, and
commands out with their replies correlated back. No sockets.

::

    mapping = DeviceMapping(model.bindings.mqtt, model, "door-1")
    mapping.filters                     # [("access/door-1/state", 1), ...] to subscribe
    update = mapping.handle("access/door-1/state", b'{"door": {"lock": "locked"}}', ts_ms)
    update.readings["lock_state"]       # Reading("locked", GOOD)

    codec = CommandCodec(model.bindings.mqtt, model, "door-1")
    command = codec.service_call("unlock", {"duration": 5})   # topic, JSON bytes, correlation id
    reply = codec.decode_reply(topic, payload)                 # Reply(correlation_id, status ...)

Rules:

- **Topics**: a binding's topic is a subscription filter (``+`` one level, ``#`` the trailing
  levels, each a whole level) with ``{device_id}`` replaced by the device's id.
- **Payloads**: at most ``max_payload_bytes`` (default :data:`MAX_PAYLOAD_BYTES`), UTF-8; JSON,
  or a plain value (``21.5``, ``ON``) that only a point with an empty path can take. Oversized,
  non-UTF-8 and malformed JSON (text starting with ``{``, ``[`` or ``"`` that does not parse,
  NaN/Infinity, nesting beyond Python's limits) raise :class:`MqttPayloadError`; in
  :meth:`DeviceMapping.handle` that error becomes a bad-quality reading of each point of the
  topic, with the error as reason.
- **Paths** (``$.a.b[0]``, ``$['install-zone']``): a member or item that is absent leaves the
  point out of the update (devices publish partial states); stepping into a value that is not
  an object or array is a bad reading.
- **Values** are coerced to the property's type: an integer-valued float to an integer type,
  0/1 and ``true``/``on``/``off`` text to bool, numeric text to a number, enum members matched
  by value (or by their text form); anything else (``"abc"`` for a float, ``null``, an object
  for a number) is a bad reading naming topic, path, what was expected and what came. Ranges
  are the telemetry validator's job, not this module's.
- **Events**: each message on an event's topic raises it; its outputs are the members of the
  object at the path (an empty payload or a plain value: no outputs). A payload that cannot be
  decoded, or a path that selects something else, drops the event and counts it in
  :attr:`DeviceMapping.rejected_events`.
- **Unknown topics** (a message no route matches) are counted in
  :attr:`DeviceMapping.unknown_topics` and ignored.
- **Commands** are the canonical message envelope (:mod:`thing_models.messages`, JSON form): a
  ``property_set`` or ``service_call`` whose ``id`` is the correlation id, published on the
  ``command_topic``. A reply on the ``reply_topic`` is a JSON object with ``correlation_id``
  (or, without it, the last level matched by the reply filter's wildcard:
  ``.../cmd/reply/<id>``), ``status`` (default ``ok``), ``params`` and ``status_message``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from protocol_adapters.base import Reading, Update
from protocol_adapters.mqtt.errors import MqttConfigError, MqttPayloadError
from thing_models.errors import MessageError
from thing_models.messages import Message, Quality, to_json_dict
from thing_models.model import Access, DataSchema, DataType, MqttBinding, ThingModel

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "Command",
    "CommandCodec",
    "DeviceMapping",
    "JsonPath",
    "PlainText",
    "Reply",
    "TopicFilter",
    "coerce",
    "decode_payload",
]

#: Default payload size limit (bytes) of device messages and replies.
MAX_PAYLOAD_BYTES = 256 * 1024
_MAX_TOPIC_CACHE = 4096
_TRUE = frozenset({"true", "on", "yes", "1"})
_FALSE = frozenset({"false", "off", "no", "0"})


class PlainText(NamedTuple):
    """A payload that is not JSON (``ON``, ``21.5 C``): only an empty path takes it."""

    text: str


# --------------------------------------------------------------------------- topics


@dataclass(frozen=True, slots=True)
class TopicFilter:
    """A subscription filter with ``{device_id}`` substituted, split in levels."""

    text: str
    levels: tuple[str, ...]

    @classmethod
    def compile(cls, pattern: str, device_id: str, *, wildcards: bool = True) -> TopicFilter:
        """Substitute ``device_id`` and check the filter; raises :class:`MqttConfigError`."""
        if not isinstance(pattern, str) or not pattern:
            raise MqttConfigError(f"topic {pattern!r}: a topic must be a non-empty string")
        if any(c in device_id for c in "+#/\0") or not device_id:
            raise MqttConfigError(
                f"device id {device_id!r} cannot go in a topic (empty, or has +, # or /)"
            )
        text = pattern.replace("{device_id}", device_id)
        if "\0" in text or len(text.encode("utf-8", "surrogatepass")) > 65535:
            raise MqttConfigError(f"topic {pattern!r}: has a NUL character or is too long")
        levels = tuple(text.split("/"))
        for index, level in enumerate(levels):
            if level in ("+", "#"):
                if not wildcards:
                    raise MqttConfigError(f"topic {pattern!r}: wildcards are not allowed here")
                if level == "#" and index != len(levels) - 1:
                    raise MqttConfigError(f"topic {pattern!r}: '#' must be the last level")
            elif "+" in level or "#" in level:
                raise MqttConfigError(
                    f"topic {pattern!r}: a wildcard must fill a whole level ({level!r})"
                )
        return cls(text, levels)

    @property
    def has_wildcards(self) -> bool:
        return "+" in self.levels or "#" in self.levels

    def match(self, topic: str) -> tuple[str, ...] | None:
        """The topic levels the wildcards matched (``()`` for an exact match), or None."""
        parts = topic.split("/")
        captured: list[str] = []
        for index, level in enumerate(self.levels):
            if level == "#":
                # '#' also matches the parent level itself (MQTT 3.1.1, 4.7.1.2)
                captured.extend(parts[index:])
                return tuple(captured)
            if index >= len(parts):
                return None
            if level == "+":
                captured.append(parts[index])
            elif level != parts[index]:
                return None
        return tuple(captured) if len(parts) == len(self.levels) else None


# --------------------------------------------------------------------------- paths

_STEP_RE = re.compile(
    r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[([0-9]{1,9})\]|\['([^'\\]*)'\]|\[\"([^\"\\]*)\"\]"
)


@dataclass(frozen=True, slots=True)
class JsonPath:
    """``$`` followed by ``.name``, ``[index]`` and ``['name']`` steps."""

    text: str
    steps: tuple[str | int, ...]

    @classmethod
    def parse(cls, text: str) -> JsonPath:
        """Parse ``text`` (empty or ``$``: the whole payload); raises :class:`MqttConfigError`."""
        if not isinstance(text, str):
            raise MqttConfigError(f"path {text!r}: must be a string")
        rest = text[1:] if text.startswith("$") else text
        steps: list[str | int] = []
        position = 0
        while position < len(rest):
            match = _STEP_RE.match(rest, position)
            if match is None:
                raise MqttConfigError(
                    f"path {text!r}: cannot parse at {rest[position:][:20]!r} "
                    "(expected .name, [index] or ['name'])"
                )
            name, index, quoted, dquoted = match.groups()
            if index is not None:
                steps.append(int(index))
            else:
                steps.append(next(s for s in (name, quoted, dquoted) if s is not None))
            position = match.end()
        return cls(text or "$", tuple(steps))

    def get(self, document: Any) -> tuple[bool, Any]:
        """``(True, value)``, or ``(False, None)`` when a member or item is absent; raises
        :class:`MqttPayloadError` when a step meets a value that is not an object or array."""
        value = document
        for depth, step in enumerate(self.steps):
            where = self._prefix(depth)
            if isinstance(step, int):
                if not isinstance(value, list):
                    raise MqttPayloadError(f"{where} is {_kind(value)}, not an array")
                if step >= len(value):
                    return False, None
                value = value[step]
            else:
                if not isinstance(value, dict):
                    raise MqttPayloadError(f"{where} is {_kind(value)}, not an object")
                if step not in value:
                    return False, None
                value = value[step]
        return True, value

    def _prefix(self, depth: int) -> str:
        out = "$"
        for step in self.steps[:depth]:
            out += f"[{step}]" if isinstance(step, int) else f".{step}"
        return out


def _kind(value: Any) -> str:
    if isinstance(value, PlainText):
        return "a plain (non-JSON) payload"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _short(value: Any, limit: int = 40) -> str:
    if isinstance(value, PlainText):
        value = value.text
    if isinstance(value, dict | list):
        return _kind(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return "a huge integer"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- payloads


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def decode_payload(payload: bytes, topic: str, max_bytes: int = MAX_PAYLOAD_BYTES) -> Any:
    """The JSON value of ``payload``, or :class:`PlainText` for a non-JSON one; raises
    :class:`MqttPayloadError` (oversized, not UTF-8, malformed JSON) naming ``topic``."""
    if len(payload) > max_bytes:
        raise MqttPayloadError(
            f"{topic}: payload of {len(payload)} bytes refused (limit {max_bytes} bytes)"
        )
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MqttPayloadError(f"{topic}: payload is not UTF-8 ({exc.reason})") from exc
    stripped = text.strip()
    if not stripped:
        return PlainText("")
    try:
        return json.loads(stripped, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        if stripped[0] in '{["':
            detail = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
            raise MqttPayloadError(f"{topic}: malformed JSON: {detail[:120]}") from exc
        return PlainText(stripped)


# --------------------------------------------------------------------------- values


def _good(value: Any) -> Reading:
    return Reading(value, Quality.GOOD)


def _number(value: Any) -> float | int | None:
    """A finite int or float from a JSON number or numeric text; None when it is neither."""
    if isinstance(value, PlainText):
        value = value.text
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str) and 0 < len(value) <= 64:
        try:
            return int(value)
        except ValueError:
            pass
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = value.text if isinstance(value, PlainText) else value
    if isinstance(text, str):
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    return None


def coerce(value: Any, schema: DataSchema | None, where: str = "value") -> Reading:
    """``value`` as the type of ``schema`` (no schema: as it is), or a bad reading saying why;
    never raises."""

    def bad(expected: str) -> Reading:
        return Reading(None, Quality.BAD, f"{where}: expected {expected}, got {_short(value)}")

    if value is None:
        return Reading(None, Quality.BAD, f"{where}: null value")
    if schema is None:
        return _good(value.text if isinstance(value, PlainText) else value)
    kind = schema.type
    if kind is DataType.BOOL:
        flag = _bool(value)
        return bad("a bool") if flag is None else _good(flag)
    if kind.is_integer:
        number = _number(value)
        if isinstance(number, float):
            number = int(number) if number.is_integer() else None
        return bad("an integer") if number is None else _good(number)
    if kind.is_numeric:
        number = _number(value)
        if number is None:
            return bad("a number")
        try:
            return _good(float(number))
        except OverflowError:
            return bad("a number within the float range")
    if kind is DataType.TEXT:
        if isinstance(value, PlainText):
            return _good(value.text)
        return _good(value) if isinstance(value, str) else bad("text")
    if kind is DataType.ENUM:
        raw = value.text if isinstance(value, PlainText) else value
        for member in schema.enum:
            if member.value == raw and type(member.value) is type(raw):
                return _good(member.value)
        if isinstance(raw, str | int) and not isinstance(raw, bool):
            for member in schema.enum:
                if str(member.value) == str(raw):
                    return _good(member.value)
        names = ", ".join(str(m.value) for m in schema.enum[:10])
        return bad(f"one of {names}")
    if kind is DataType.STRUCT:
        return _good(value) if isinstance(value, dict) else bad("an object")
    if kind is DataType.ARRAY:
        return _good(value) if isinstance(value, list) else bad("an array")
    return _good(value)  # pragma: no cover - every DataType is handled above


# --------------------------------------------------------------------------- device messages


@dataclass(frozen=True, slots=True)
class _PointMap:
    property: str
    path: JsonPath
    schema: DataSchema | None


@dataclass(frozen=True, slots=True)
class _EventMap:
    event: str
    path: JsonPath


@dataclass(frozen=True, slots=True)
class _Route:
    filter: TopicFilter
    points: tuple[_PointMap, ...]
    events: tuple[_EventMap, ...]


class DeviceMapping:
    """The routes of one device: which topics carry which properties and events."""

    def __init__(
        self,
        binding: MqttBinding,
        model: ThingModel | None,
        device_id: str,
        *,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self.device_id = device_id
        self.qos = binding.qos
        self.max_payload_bytes = max_payload_bytes
        points: dict[str, list[_PointMap]] = {}
        events: dict[str, list[_EventMap]] = {}
        filters: dict[str, TopicFilter] = {}
        for point in binding.points:
            where = f"point {point.property!r}"
            topic = _compile(point.topic, device_id, where)
            filters.setdefault(topic.text, topic)
            schema = model.property(point.property) if model is not None else None
            path = _path(point.path, where)
            prop = schema.schema if schema is not None else None
            points.setdefault(topic.text, []).append(_PointMap(point.property, path, prop))
        for route in binding.events:
            where = f"event {route.event!r}"
            topic = _compile(route.topic, device_id, where)
            filters.setdefault(topic.text, topic)
            events.setdefault(topic.text, []).append(
                _EventMap(route.event, _path(route.path, where))
            )
        self.routes = tuple(
            _Route(f, tuple(points.get(text, ())), tuple(events.get(text, ())))
            for text, f in filters.items()
        )
        self._exact = {r.filter.text: r for r in self.routes if not r.filter.has_wildcards}
        self._wild = tuple(r for r in self.routes if r.filter.has_wildcards)
        self._cache: dict[str, tuple[_Route, ...]] = {}
        #: messages on topics no route matches (ignored)
        self.unknown_topics = 0
        #: events dropped because their payload could not be decoded
        self.rejected_events = 0
        #: the last payload problem, for diagnostics ("" when none yet)
        self.last_error = ""

    @property
    def filters(self) -> list[tuple[str, int]]:
        """``(topic filter, qos)`` pairs to subscribe to."""
        return [(r.filter.text, self.qos) for r in self.routes]

    def routes_for(self, topic: str) -> tuple[_Route, ...]:
        cached = self._cache.get(topic)
        if cached is not None:
            return cached
        exact = self._exact.get(topic)
        found = ((exact,) if exact is not None else ()) + tuple(
            r for r in self._wild if r.filter.match(topic) is not None
        )
        if len(self._cache) >= _MAX_TOPIC_CACHE:
            self._cache.clear()
        self._cache[topic] = found
        return found

    def handle(self, topic: str, payload: bytes, ts_ms: int) -> Update | None:
        """The update a message on ``topic`` makes, or None for a topic of no route (counted);
        never raises."""
        routes = self.routes_for(topic)
        if not routes:
            self.unknown_topics += 1
            return None
        readings: dict[str, Reading] = {}
        raised: list[tuple[str, Mapping[str, Any]]] = []
        try:
            document = decode_payload(payload, topic, self.max_payload_bytes)
        except MqttPayloadError as exc:
            self.last_error = str(exc)
            for route in routes:
                for point in route.points:
                    readings[point.property] = Reading(None, Quality.BAD, str(exc))
                self.rejected_events += len(route.events)
            return Update(ts_ms, readings)
        for route in routes:
            for point in route.points:
                where = f"{topic} {point.path.text}"
                try:
                    found, value = _select(point.path, document)
                except MqttPayloadError as exc:
                    readings[point.property] = Reading(None, Quality.BAD, f"{topic}: {exc}")
                    continue
                if found:
                    reading = coerce(value, point.schema, where)
                    readings[point.property] = reading
                    if reading.reason:
                        self.last_error = reading.reason
            for event in route.events:
                outputs = self._outputs(event, document, topic)
                if outputs is not None:
                    raised.append((event.event, outputs))
        return Update(ts_ms, readings, tuple(raised))

    def _outputs(self, event: _EventMap, document: Any, topic: str) -> dict[str, Any] | None:
        try:
            found, value = _select(event.path, document)
        except MqttPayloadError as exc:
            reason = str(exc)
        else:
            if found and isinstance(value, dict):
                return value
            if found and not event.path.steps and not isinstance(value, list):
                return {}  # a bare trigger (empty or plain payload): the message is the event
            reason = f"{event.path.text} is {_kind(value) if found else 'absent'}, not an object"
        self.last_error = f"{topic}: event {event.event}: {reason}"
        self.rejected_events += 1
        return None


def _select(path: JsonPath, document: Any) -> tuple[bool, Any]:
    if isinstance(document, PlainText) and path.steps:
        raise MqttPayloadError(f"payload is not JSON ({_short(document)}), cannot take {path.text}")
    return path.get(document)


def _compile(pattern: str, device_id: str, where: str) -> TopicFilter:
    try:
        return TopicFilter.compile(pattern, device_id)
    except MqttConfigError as exc:
        raise MqttConfigError(f"{where}: {exc}") from exc


def _path(text: str, where: str) -> JsonPath:
    try:
        return JsonPath.parse(text)
    except MqttConfigError as exc:
        raise MqttConfigError(f"{where}: {exc}") from exc


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class Command:
    """A command ready to publish, and the correlation id its reply will carry."""

    topic: str
    payload: bytes
    correlation_id: str


@dataclass(frozen=True, slots=True)
class Reply:
    """A device's answer to a command."""

    correlation_id: str
    status: str = "ok"
    params: Mapping[str, Any] | None = None
    status_message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class CommandCodec:
    """Property sets and service calls as envelopes on ``command_topic``; replies decoded."""

    def __init__(
        self,
        binding: MqttBinding,
        model: ThingModel,
        device_id: str,
        *,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self.model = model
        self.device_id = device_id
        self.max_payload_bytes = max_payload_bytes
        self.command_topic = (
            None
            if binding.command_topic is None
            else _compile_plain(binding.command_topic, device_id)
        )
        self.reply_filter = (
            None
            if binding.reply_topic is None
            else _compile(binding.reply_topic, device_id, "reply_topic")
        )

    def _topic(self, what: str) -> str:
        if self.command_topic is None:
            raise MqttConfigError(
                f"device {self.device_id}: cannot {what}: the model's MQTT binding has no "
                "command_topic"
            )
        return self.command_topic

    def property_set(self, property_id: str, value: object) -> Command:
        """The envelope setting ``property_id``; raises :class:`MqttConfigError` (no command
        topic, unknown or read-only property) or :class:`MqttPayloadError` (a value the
        property cannot take)."""
        topic = self._topic(f"set {property_id}")
        prop = self.model.property(property_id)
        if prop is None:
            raise MqttConfigError(f"model {self.model.ref} has no property {property_id!r}")
        if prop.access is not Access.READ_WRITE:
            raise MqttConfigError(f"property {property_id!r} of {self.model.ref} is read-only")
        reading = coerce(value, prop.schema, f"set {property_id}")
        if reading.quality is not Quality.GOOD:
            raise MqttPayloadError(reading.reason)
        return self._envelope(
            topic,
            lambda: Message.property_set(
                str(self.model.ref), self.device_id, {property_id: reading.value}
            ),
        )

    def service_call(self, service_id: str, args: Mapping[str, object]) -> Command:
        """The envelope calling ``service_id``; raises :class:`MqttConfigError` or
        :class:`MqttPayloadError` (arguments that are not JSON values)."""
        topic = self._topic(f"call {service_id}")
        if self.model.service(service_id) is None:
            raise MqttConfigError(f"model {self.model.ref} has no service {service_id!r}")
        return self._envelope(
            topic,
            lambda: Message.service_call(
                str(self.model.ref),
                self.device_id,
                service_id,
                dict(args),  # type: ignore[arg-type]
            ),
        )

    def _envelope(self, topic: str, build: Any) -> Command:
        try:
            message: Message = build()
        except MessageError as exc:
            raise MqttPayloadError(f"{topic}: cannot encode the command: {exc}") from exc
        data = json.dumps(to_json_dict(message), separators=(",", ":")).encode()
        return Command(topic, data, message.id)

    def is_reply(self, topic: str) -> bool:
        return self.reply_filter is not None and self.reply_filter.match(topic) is not None

    def decode_reply(self, topic: str, payload: bytes) -> Reply:
        """The reply carried by ``payload``; raises :class:`MqttPayloadError` when it is not a
        JSON object with a correlation id (in the object or the topic's wildcard levels)."""
        captured = self.reply_filter.match(topic) if self.reply_filter is not None else None
        if captured is None:
            raise MqttPayloadError(f"{topic}: not this device's reply topic")
        document = decode_payload(payload, topic, self.max_payload_bytes)
        if not isinstance(document, dict):
            raise MqttPayloadError(f"{topic}: a reply must be a JSON object, got {_kind(document)}")
        correlation = document.get("correlation_id")
        if correlation is None and captured and captured[-1]:
            correlation = captured[-1]
        if not isinstance(correlation, str) or not correlation:
            raise MqttPayloadError(f"{topic}: reply without a correlation_id")
        status = document.get("status", "ok")
        params = document.get("params", {})
        message = document.get("status_message", "")
        if not isinstance(status, str) or not isinstance(message, str):
            raise MqttPayloadError(f"{topic}: reply status and status_message must be strings")
        if not isinstance(params, dict):
            raise MqttPayloadError(f"{topic}: reply params must be an object")
        return Reply(correlation, status, params, message)


def _compile_plain(pattern: str, device_id: str) -> str:
    try:
        return TopicFilter.compile(pattern, device_id, wildcards=False).text
    except MqttConfigError as exc:
        raise MqttConfigError(f"command_topic: {exc}") from exc


def subscription_filters(mappings: Iterable[DeviceMapping]) -> list[tuple[str, int]]:
    """The distinct filters of several devices, with the highest QoS asked for each."""
    out: dict[str, int] = {}
    for mapping in mappings:
        for text, qos in mapping.filters:
            out[text] = max(qos, out.get(text, 0))
    return sorted(out.items())
