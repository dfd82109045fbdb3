"""The pure MQTT mapping: topic filters, payload paths, coercion, commands and replies."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol_adapters.base import Update
from protocol_adapters.mqtt.errors import MqttConfigError, MqttPayloadError
from protocol_adapters.mqtt.mapping import (
    CommandCodec,
    DeviceMapping,
    JsonPath,
    PlainText,
    TopicFilter,
    coerce,
    decode_payload,
)
from thing_models import load_model_file
from thing_models.composition import FolderModelSource, flatten
from thing_models.messages import Quality, from_json_dict
from thing_models.model import (
    DataSchema,
    DataType,
    EnumValue,
    MqttBinding,
    MqttEventRoute,
    MqttPoint,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
DOOR = flatten(load_model_file(EXAMPLES / "access-control-door.yaml"), FolderModelSource(EXAMPLES))
SMOKE = flatten(load_model_file(EXAMPLES / "smoke-detector.yaml"), FolderModelSource(EXAMPLES))
assert DOOR.bindings.mqtt is not None
assert SMOKE.bindings.mqtt is not None
DOOR_MQTT: MqttBinding = DOOR.bindings.mqtt
TS = 1_700_000_000_000


def door() -> DeviceMapping:
    return DeviceMapping(DOOR_MQTT, DOOR, "door-1")


# --------------------------------------------------------------------------- topics


@pytest.mark.parametrize(
    ("pattern", "topic", "captured"),
    [
        ("a/{device_id}/b", "a/d1/b", ()),
        ("a/{device_id}/b", "a/d2/b", None),
        ("a/+/b", "a/x/b", ("x",)),
        ("a/+/b", "a/x/y/b", None),
        ("a/#", "a", ()),
        ("a/#", "a/b/c", ("b", "c")),
        ("#", "x/y", ("x", "y")),
        ("a/b", "a/b/c", None),
        ("a/b/c", "a/b", None),
        ("+/+", "a/b", ("a", "b")),
    ],
)
def test_topic_filter_matches_like_a_broker(
    pattern: str, topic: str, captured: tuple[str, ...] | None
) -> None:
    assert TopicFilter.compile(pattern, "d1").match(topic) == captured


@pytest.mark.parametrize(
    ("pattern", "device_id", "message"),
    [
        ("a/#/b", "d", "'#' must be the last level"),
        ("a/b+/c", "d", "whole level"),
        ("a/b#", "d", "whole level"),
        ("", "d", "non-empty"),
        ("a/{device_id}", "x/y", "cannot go in a topic"),
        ("a/{device_id}", "", "cannot go in a topic"),
        ("a/\0", "d", "NUL"),
    ],
)
def test_bad_topic_filters_are_refused(pattern: str, device_id: str, message: str) -> None:
    with pytest.raises(MqttConfigError, match=message):
        TopicFilter.compile(pattern, device_id)


def test_command_topic_refuses_wildcards() -> None:
    binding = MqttBinding(command_topic="cmd/+/x")
    with pytest.raises(MqttConfigError, match=r"command_topic: .*wildcards are not allowed"):
        CommandCodec(binding, DOOR, "d1")


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("", ()),
        ("$", ()),
        ("$.a.b", ("a", "b")),
        (".a", ("a",)),
        ("$.zones[0]", ("zones", 0)),
        ("$['install-zone']", ("install-zone",)),
        ('$["a b"][2].c-d', ("a b", 2, "c-d")),
    ],
)
def test_paths_parse(path: str, steps: tuple[Any, ...]) -> None:
    assert JsonPath.parse(path).steps == steps


@pytest.mark.parametrize("path", ["$.", "$..a", "$[x]", "$[-1]", "$.a[*]", "$a", "$['a]", "$.1a"])
def test_bad_paths_are_refused(path: str) -> None:
    with pytest.raises(MqttConfigError, match="cannot parse"):
        JsonPath.parse(path)


def test_bad_binding_names_the_point() -> None:
    binding = MqttBinding(points=(MqttPoint("door_contact", "a/b", "$.x[y]"),))
    with pytest.raises(MqttConfigError, match="point 'door_contact': path"):
        DeviceMapping(binding, DOOR, "d1")


def test_path_get_absent_and_wrong_container() -> None:
    doc = {"a": {"b": [1, 2]}}
    assert JsonPath.parse("$.a.b[1]").get(doc) == (True, 2)
    assert JsonPath.parse("$.a.b[5]").get(doc) == (False, None)
    assert JsonPath.parse("$.a.c").get(doc) == (False, None)
    with pytest.raises(MqttPayloadError, match=r"\$\.a\.b is an array, not an object"):
        JsonPath.parse("$.a.b.c").get(doc)
    with pytest.raises(MqttPayloadError, match=r"\$\.a is an object, not an array"):
        JsonPath.parse("$.a[0]").get(doc)


# --------------------------------------------------------------------------- payloads


def test_payload_decoding() -> None:
    assert decode_payload(b'{"a": 1}', "t") == {"a": 1}
    assert decode_payload(b" 21.5 ", "t") == 21.5
    assert decode_payload(b"ON", "t") == PlainText("ON")
    assert decode_payload(b"", "t") == PlainText("")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"x" * 101, r"t: payload of 101 bytes refused \(limit 100 bytes\)"),
        (b"\xff\xfe", "t: payload is not UTF-8"),
        (b'{"a": ', "t: malformed JSON"),
        (b"[1, 2", "t: malformed JSON"),
        (b'{"a": NaN}', "t: malformed JSON: NaN is not a JSON number"),
        (b"[" * 50 + b"]" * 50, None),  # nested but within limits: fine
        (b"[" * 100_000, "t: malformed JSON"),
    ],
)
def test_bad_payloads_raise_our_error(payload: bytes, message: str | None) -> None:
    limit = 100 if len(payload) == 101 else 1_000_000
    if message is None:
        assert isinstance(decode_payload(payload, "t", limit), list)
        return
    with pytest.raises(MqttPayloadError, match=message):
        decode_payload(payload, "t", limit)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_decoder_never_raises_anything_else(payload: bytes) -> None:
    with contextlib.suppress(MqttPayloadError):
        decode_payload(payload, "fuzz", 200)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_json.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200)))
def test_fuzz_device_mapping_maps_or_gives_bad_readings(payload: bytes) -> None:
    mapping = DeviceMapping(SMOKE.bindings.mqtt or MqttBinding(), SMOKE, "s1")
    for topic in ("detectors/s1/state", "detectors/s1/alarm/smoke", "detectors/s1/config"):
        update = mapping.handle(topic, payload, TS)
        assert isinstance(update, Update)
        for reading in update.readings.values():
            assert reading.quality in (Quality.GOOD, Quality.BAD)
            assert (reading.quality is Quality.BAD) == bool(reading.reason)


# --------------------------------------------------------------------------- values

ENUM = DataSchema(DataType.ENUM, enum=(EnumValue("locked", "L"), EnumValue(1, "one")))


@pytest.mark.parametrize(
    ("value", "schema", "expected"),
    [
        (True, DataSchema(DataType.BOOL), True),
        (1, DataSchema(DataType.BOOL), True),
        (PlainText("off"), DataSchema(DataType.BOOL), False),
        (3.0, DataSchema(DataType.INT32), 3),
        ("42", DataSchema(DataType.INT64), 42),
        (2, DataSchema(DataType.FLOAT), 2.0),
        (PlainText("21.5"), DataSchema(DataType.DOUBLE), 21.5),
        ("hi", DataSchema(DataType.TEXT), "hi"),
        ("locked", ENUM, "locked"),
        ("1", ENUM, 1),
        ({"a": 1}, DataSchema(DataType.STRUCT), {"a": 1}),
        ([1], DataSchema(DataType.ARRAY), [1]),
        ({"x": 1}, None, {"x": 1}),
    ],
)
def test_values_coerce_to_the_property_type(
    value: Any, schema: DataSchema | None, expected: Any
) -> None:
    reading = coerce(value, schema)
    assert reading.quality is Quality.GOOD
    assert reading.value == expected
    assert type(reading.value) is type(expected)


@pytest.mark.parametrize(
    ("value", "schema", "reason"),
    [
        (None, DataSchema(DataType.FLOAT), "null value"),
        ("abc", DataSchema(DataType.FLOAT), "expected a number, got 'abc'"),
        (True, DataSchema(DataType.INT32), "expected an integer, got True"),
        (2.5, DataSchema(DataType.INT32), "expected an integer"),
        (2, DataSchema(DataType.BOOL), "expected a bool"),
        (5, DataSchema(DataType.TEXT), "expected text"),
        ("jammed", ENUM, "expected one of locked, 1, got 'jammed'"),
        ([1], DataSchema(DataType.STRUCT), "expected an object, got an array"),
        (10**400, DataSchema(DataType.DOUBLE), "float range"),
        ("1e999", DataSchema(DataType.DOUBLE), "expected a number"),
    ],
)
def test_wrong_types_give_bad_readings(value: Any, schema: DataSchema, reason: str) -> None:
    reading = coerce(value, schema, "t $.x")
    assert reading.quality is Quality.BAD
    assert reading.value is None
    assert reading.reason.startswith("t $.x: ")
    assert reason in reading.reason


# --------------------------------------------------------------------------- device messages


def test_state_message_maps_every_point_of_its_topic() -> None:
    payload = {
        "door": {"contact": "closed", "lock": "locked", "held": False},
        "mode": "normal",
        "reader": {"online": True, "tamper": False},
        "backup": {"level": 97},
    }
    update = door().handle("access/door-1/state", json.dumps(payload).encode(), TS)
    assert update is not None
    assert update.ts_ms == TS
    assert update.events == ()
    assert {k: r.value for k, r in update.readings.items()} == {
        "door_contact": "closed",
        "lock_state": "locked",
        "held_open": False,
        "door_mode": "normal",
        "reader_online": True,
        "reader_tamper": False,
        "health:battery_level": 97.0,
    }
    assert all(r.quality is Quality.GOOD for r in update.readings.values())


def test_partial_state_leaves_absent_points_out() -> None:
    update = door().handle("access/door-1/state", b'{"door": {"lock": "unlocked"}}', TS)
    assert update is not None
    assert set(update.readings) == {"lock_state"}


def test_wrong_type_is_a_bad_reading_naming_topic_and_path() -> None:
    mapping = door()
    update = mapping.handle("access/door-1/state", b'{"door": {"lock": 7, "held": "x"}}', TS)
    assert update is not None
    lock = update.readings["lock_state"]
    assert lock.quality is Quality.BAD
    assert lock.reason.startswith("access/door-1/state $.door.lock: expected one of locked")
    assert update.readings["held_open"].reason.endswith("expected a bool, got 'x'")
    assert mapping.last_error


def test_path_through_a_scalar_is_a_bad_reading() -> None:
    update = door().handle("access/door-1/state", b'{"door": "open"}', TS)
    assert update is not None
    assert update.readings["door_contact"].reason == (
        "access/door-1/state: $.door is a string, not an object"
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"door": ', "malformed JSON"),
        (b"x" * 300, "payload of 300 bytes refused (limit 256 bytes)"),
        (b"OPEN", "access/door-1/state: payload is not JSON ('OPEN'), cannot take $."),
    ],
)
def test_undecodable_payload_gives_bad_readings_of_its_topic(payload: bytes, reason: str) -> None:
    mapping = DeviceMapping(DOOR_MQTT, DOOR, "door-1", max_payload_bytes=256)
    update = mapping.handle("access/door-1/state", payload, TS)
    assert update is not None
    assert len(update.readings) == 7
    assert all(r.quality is Quality.BAD and reason in r.reason for r in update.readings.values())


def test_plain_payload_on_an_empty_path() -> None:
    update = door().handle("access/door-1/sys/uptime", b"3600", TS)
    assert update is not None
    assert update.readings["health:uptime"].value == 3600


def test_events_carry_the_object_at_their_path() -> None:
    swipe = {"card_id": "04A23B1C", "credential": "card", "result": "granted", "reader": "entry"}
    update = door().handle("access/door-1/event/swipe", json.dumps({"swipe": swipe}).encode(), TS)
    assert update is not None
    assert update.events == (("card_swipe", swipe),)


def test_bare_trigger_event_and_rejected_events() -> None:
    camera = flatten(load_model_file(EXAMPLES / "ip-camera.yaml"), FolderModelSource(EXAMPLES))
    assert camera.bindings.mqtt is not None
    mapping = DeviceMapping(camera.bindings.mqtt, camera, "cam")
    update = mapping.handle("cameras/cam/events/tamper", b"", TS)
    assert update is not None
    assert update.events == (("tamper", {}),)
    update = mapping.handle("cameras/cam/events/object", b'{"object": [1]}', TS)
    assert update is not None
    assert update.events == ()
    assert mapping.rejected_events == 1
    assert "event object_detected: $.object is an array, not an object" in mapping.last_error
    update = mapping.handle("cameras/cam/events/object", b"{bad", TS)
    assert update is not None
    assert update.events == ()
    assert mapping.rejected_events == 2


def test_unknown_topics_are_counted_and_ignored() -> None:
    mapping = door()
    assert mapping.handle("access/door-2/state", b"{}", TS) is None
    assert mapping.handle("elsewhere", b"{}", TS) is None
    assert mapping.unknown_topics == 2


def test_wildcard_event_routes() -> None:
    binding = MqttBinding(
        points=(MqttPoint("door_contact", "x/{device_id}/+/state", "$.c"),),
        events=(MqttEventRoute("tamper", "x/{device_id}/alarm/#", "$.alarm"),),
    )
    mapping = DeviceMapping(binding, DOOR, "d")
    update = mapping.handle("x/d/alarm/a/b", b'{"alarm": {"device": "controller"}}', TS)
    assert update is not None
    assert update.events == (("tamper", {"device": "controller"}),)
    update = mapping.handle("x/d/zone1/state", b'{"c": "open"}', TS)
    assert update is not None
    assert update.readings["door_contact"].value == "open"
    assert sorted(mapping.filters) == [("x/d/+/state", 1), ("x/d/alarm/#", 1)]


# --------------------------------------------------------------------------- commands


def test_property_set_is_an_envelope_with_a_correlation_id() -> None:
    codec = CommandCodec(DOOR_MQTT, DOOR, "door-1")
    command = codec.property_set("door_mode", "passage")
    assert command.topic == "access/door-1/cmd"
    message = from_json_dict(json.loads(command.payload))
    assert message.kind == "property_set"
    assert message.params == {"door_mode": "passage"}
    assert message.id == command.correlation_id
    assert message.device_id == "door-1"
    assert message.model == str(DOOR.ref)


def test_service_call_envelope() -> None:
    command = CommandCodec(DOOR_MQTT, DOOR, "door-1").service_call("unlock", {"duration": 5})
    message = from_json_dict(json.loads(command.payload))
    assert message.kind == "service_call"
    assert message.name == "unlock"
    assert message.params == {"duration": 5}


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda c: c.property_set("nope", 1), MqttConfigError, "has no property 'nope'"),
        (lambda c: c.property_set("door_contact", "open"), MqttConfigError, "read-only"),
        (lambda c: c.property_set("held_open_limit", "abc"), MqttPayloadError, "an integer"),
        (lambda c: c.service_call("nope", {}), MqttConfigError, "has no service 'nope'"),
        (lambda c: c.service_call("unlock", {"x": object()}), MqttPayloadError, "cannot encode"),
    ],
)
def test_bad_commands_raise_our_errors(call: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call(CommandCodec(DOOR_MQTT, DOOR, "door-1"))


def test_command_without_command_topic() -> None:
    with pytest.raises(MqttConfigError, match="has no command_topic"):
        CommandCodec(MqttBinding(), DOOR, "d").service_call("unlock", {})


def test_reply_correlation_from_payload_or_topic() -> None:
    codec = CommandCodec(DOOR_MQTT, DOOR, "door-1")  # reply_topic access/{id}/cmd/reply/#
    reply = codec.decode_reply(
        "access/door-1/cmd/reply", b'{"correlation_id": "c1", "params": {"unlocked": true}}'
    )
    assert reply.correlation_id == "c1"
    assert reply.ok
    assert reply.params == {"unlocked": True}
    reply = codec.decode_reply(
        "access/door-1/cmd/reply/c2", b'{"status": "busy", "status_message": "try later"}'
    )
    assert (reply.correlation_id, reply.status, reply.ok) == ("c2", "busy", False)
    assert codec.is_reply("access/door-1/cmd/reply/c2")
    assert not codec.is_reply("access/door-1/cmd")


@pytest.mark.parametrize(
    ("topic", "payload", "message"),
    [
        ("access/door-1/cmd/reply", b"{}", "without a correlation_id"),
        ("access/door-1/cmd/reply/c", b"[1]", "must be a JSON object"),
        ("access/door-1/cmd/reply/c", b"{bad", "malformed JSON"),
        ("access/door-1/cmd/reply/c", b'{"status": 1}', "must be strings"),
        ("access/door-1/cmd/reply/c", b'{"params": []}', "params must be an object"),
        ("access/door-2/cmd/reply/c", b"{}", "not this device's reply topic"),
    ],
)
def test_bad_replies_raise_payload_errors(topic: str, payload: bytes, message: str) -> None:
    with pytest.raises(MqttPayloadError, match=message):
        CommandCodec(DOOR_MQTT, DOOR, "door-1").decode_reply(topic, payload)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["", "x", "abc/def"]))
def test_fuzz_reply_decoder(payload: bytes, suffix: str) -> None:
    codec = CommandCodec(DOOR_MQTT, DOOR, "door-1")
    with contextlib.suppress(MqttPayloadError):
        codec.decode_reply(f"access/door-1/cmd/reply/{suffix}".rstrip("/"), payload)
