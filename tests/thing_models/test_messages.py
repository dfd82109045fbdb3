"""The canonical message envelope: JSON and protobuf forms, schema, lossless conversion."""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable
from enum import IntEnum
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thing_models.errors import MessageError
from thing_models.messages import (
    DEFAULT_MAX_BYTES,
    MAX_DEPTH,
    JsonValue,
    Message,
    MessageKind,
    Quality,
    batch_from_bytes,
    batch_to_bytes,
    dumps,
    from_bytes,
    from_json_dict,
    from_protobuf,
    from_protobuf_batch,
    loads,
    message_json_schema,
    new_message_id,
    to_bytes,
    to_json_dict,
    to_protobuf,
    to_protobuf_batch,
)
from thing_models.proto import thing_message_pb2 as pb

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MODEL = "com.acme.energy/meter-3p@1.2.0"
SCHEMA = message_json_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def strict_equal(a: Any, b: Any) -> bool:
    """Equality that tells 1, 1.0 and True apart, and -0.0 from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(strict_equal, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strict_equal(v, b[k]) for k, v in a.items())
    return bool(a == b)


def report(params: dict[str, Any], **extra: Any) -> Message:
    fields: dict[str, Any] = {
        "id": "m1",
        "kind": MessageKind.PROPERTY_REPORT,
        "model": MODEL,
        "device_id": "meter-01",
        "ts_ms": 1_700_000_000_000,
        "params": params,
    }
    return Message(**(fields | extra))


# --------------------------------------------------------------------------- hand-written vectors

CANONICAL_TEXT = (
    '{"device_id":"meter-01","id":"01HZX3K7Q9V2B5N8M4C6D0E1F2","kind":"property_report",'
    '"model":"com.acme.energy/meter-3p@1.2.0","param_quality":{"power":"uncertain"},'
    '"params":{"count":9223372036854775807,"energy":2.0,"flags":[true,null,-1],'
    '"label":"Zähler ☃ 😀","nested":{"empty_list":[],"empty_map":{},"x":{"y":[0.1]}},'
    '"power":1e+308,"zero":-0.0},"quality":"good","ts_ms":1700000000123}'
)


def test_canonical_json_vector_round_trips_byte_for_byte() -> None:
    msg = loads(CANONICAL_TEXT)
    assert msg.kind is MessageKind.PROPERTY_REPORT
    assert msg.quality is Quality.GOOD
    assert msg.param_quality == {"power": Quality.UNCERTAIN}
    params = msg.params
    assert strict_equal(params["count"], INT64_MAX)
    assert strict_equal(params["energy"], 2.0)
    assert strict_equal(params["power"], 1e308)
    assert strict_equal(params["zero"], -0.0)
    assert params["label"] == "Zähler ☃ 😀"
    assert strict_equal(params["flags"], [True, None, -1])
    assert strict_equal(params["nested"], {"empty_list": [], "empty_map": {}, "x": {"y": [0.1]}})
    assert dumps(msg) == CANONICAL_TEXT
    assert dumps(from_bytes(to_bytes(msg))) == CANONICAL_TEXT
    VALIDATOR.validate(json.loads(CANONICAL_TEXT))


def test_protobuf_wire_vectors() -> None:
    # int_value is field 3, sint64 (zigzag): -1 -> 1, 1 -> 2; double_value is field 4, fixed64.
    assert pb.Value(int_value=-1).SerializeToString() == b"\x18\x01"
    assert pb.Value(int_value=1).SerializeToString() == b"\x18\x02"
    assert pb.Value(double_value=-0.0).SerializeToString() == b"\x21" + bytes(7) + b"\x80"
    msg = report({"a": 1})
    wire = to_bytes(msg)
    assert b"\x0a\x02m1" in wire  # field 1 (id), length 2
    assert from_bytes(wire) == msg


@pytest.mark.parametrize(
    "value",
    [
        INT64_MIN,
        INT64_MAX,
        0,
        0.1,
        1e308,
        -1e308,
        5e-324,
        -0.0,
        0.0,
        2.0,
        2**53 + 1,
        True,
        False,
        None,
        "",
        "日本語 \u0000 tab\t \U0001f600",
        [],
        {},
        [[[]], {"": {}}],
        {"deep": [{"a": [1, 1.0, "1", True]}]},
    ],
)
def test_values_survive_every_conversion_with_their_type(value: JsonValue) -> None:
    msg = report({"v": value})
    via_json = loads(dumps(msg))
    via_pb = from_bytes(to_bytes(msg))
    for other in (via_json, via_pb, from_json_dict(to_json_dict(via_pb))):
        assert other == msg
        assert strict_equal(other.params["v"], msg.params["v"])


def test_equality_is_strict_on_json_types() -> None:
    assert report({"v": 1}) != report({"v": 1.0})
    assert report({"v": 1}) != report({"v": True})
    assert report({"v": 0.0}) != report({"v": -0.0})
    assert report({"v": [1]}) == report({"v": (1,)})  # tuples are stored as lists
    assert report({"v": 1}) != "not a message"
    with pytest.raises(TypeError):
        hash(report({}))


def test_params_are_copied_and_normalized() -> None:
    class Level(IntEnum):
        HIGH = 3

    source: dict[str, Any] = {"v": [1, 2], "k": Quality.BAD, "lvl": Level.HIGH}
    msg = report(source)
    source["v"].append(3)
    assert msg.params == {"v": [1, 2], "k": "bad", "lvl": 3}
    assert type(msg.params["k"]) is str
    assert type(msg.params["lvl"]) is int
    out = to_json_dict(msg)
    out["params"]["v"].append(4)
    assert msg.params["v"] == [1, 2]


def test_constructors_and_reply() -> None:
    rep = Message.property_report(
        MODEL,
        "dev",
        {"t": 21.5, "h": None},
        quality=Quality.UNCERTAIN,
        param_quality={"h": Quality.BAD},
    )
    assert rep.kind is MessageKind.PROPERTY_REPORT
    assert rep.param_quality == {"h": Quality.BAD}
    assert rep.model_ref.name == "com.acme.energy/meter-3p"
    event = Message.event(MODEL, "dev", "overheat", {"temp": 90}, ts_ms=5)
    assert (event.name, event.ts_ms, event.params) == ("overheat", 5, {"temp": 90})
    call = Message.service_call(MODEL, "dev", "comp1:reboot", {"delay_s": 3})
    reply = call.reply("ok", {"took_ms": 12})
    assert reply.kind is MessageKind.SERVICE_REPLY
    assert (reply.name, reply.correlation_id, reply.ok) == ("comp1:reboot", call.id, True)
    setter = Message.property_set(MODEL, "dev", {"setpoint": 20.0})
    failed = setter.reply("E_RANGE", status_message="setpoint above 30")
    assert failed.kind is MessageKind.PROPERTY_SET_REPLY
    assert (failed.name, failed.ok, failed.status_message) == (None, False, "setpoint above 30")
    for msg in (rep, event, call, reply, setter, failed):
        VALIDATOR.validate(to_json_dict(msg))
        assert loads(dumps(msg)) == msg
        assert from_bytes(to_bytes(msg)) == msg
    with pytest.raises(MessageError, match=r"^kind: a event message has no reply"):
        event.reply()


def test_new_message_id_is_a_time_ordered_ulid() -> None:
    first, second = new_message_id(1_000), new_message_id(2_000)
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", first)
    assert first < second
    assert new_message_id(1_000) != first
    assert new_message_id(0)[:10] == "0000000000"


def test_batches_round_trip_and_name_the_bad_message() -> None:
    messages = [report({"a": i}, id=f"m{i}") for i in range(3)]
    assert batch_from_bytes(batch_to_bytes(messages)) == messages
    assert from_protobuf_batch(to_protobuf_batch([])) == []
    batch = to_protobuf_batch(messages)
    batch.messages[1].device_id = "bad id"
    with pytest.raises(MessageError, match=r"^messages\[1\]\.device_id: "):
        from_protobuf_batch(batch)
    with pytest.raises(MessageError, match=r"^batch: .* more than the limit of 10"):
        batch_from_bytes(batch_to_bytes(messages), max_bytes=10)


# --------------------------------------------------------------------------- bad documents

Doc = dict[str, Any]

BASES: dict[str, Doc] = {
    "property_report": {
        "id": "m1",
        "kind": "property_report",
        "model": MODEL,
        "device_id": "meter-01",
        "ts_ms": 1,
        "quality": "good",
        "params": {"p": 1.5},
    },
    "event": {
        "id": "m2",
        "kind": "event",
        "model": MODEL,
        "device_id": "meter-01",
        "ts_ms": 1,
        "quality": "good",
        "params": {},
        "name": "overheat",
    },
    "service_reply": {
        "id": "m3",
        "kind": "service_reply",
        "model": MODEL,
        "device_id": "meter-01",
        "ts_ms": 1,
        "quality": "good",
        "params": {},
        "name": "reboot",
        "correlation_id": "m0",
        "status": "ok",
        "status_message": "done",
    },
    "property_set_reply": {
        "id": "m4",
        "kind": "property_set_reply",
        "model": MODEL,
        "device_id": "meter-01",
        "ts_ms": 1,
        "quality": "good",
        "params": {},
        "correlation_id": "m0",
        "status": "ok",
    },
}


def changed(base: str, **changes: Any) -> Doc:
    doc = copy.deepcopy(BASES[base])
    for key, value in changes.items():
        if value is _DROP:
            del doc[key]
        else:
            doc[key] = value
    return doc


_DROP = object()

# (document, the field the error must name); the schema and from_json_dict both reject these.
BAD_DOCS: list[tuple[Any, str]] = [
    (changed("property_report", foo=1), "'foo'"),
    (changed("property_report", device_id=_DROP), "device_id"),
    (changed("property_report", id=123), "id"),
    (changed("property_report", id=""), "id"),
    (changed("property_report", id="a b"), "id"),
    (changed("property_report", id="abc\n"), "id"),
    (changed("property_report", id="a\u200bb"), "id"),
    (changed("property_report", id="x" * 129), "id"),
    (changed("property_report", device_id="dev\t1"), "device_id"),
    (changed("property_report", device_id="dev\x7f"), "device_id"),
    (changed("property_report", kind="report"), "kind"),
    (changed("property_report", kind=None), "kind"),
    (changed("property_report", model="meter"), "model"),
    (changed("property_report", model="com.acme/meter"), "model"),
    (changed("property_report", model="com.acme/meter@1.2.0\n"), "model"),
    (changed("property_report", model="com.acme/meter@v1"), "model"),
    (changed("property_report", model="com.acme/meter@\u0661"), "model"),
    (changed("property_report", model="Com.Acme/Meter@1"), "model"),
    (changed("property_report", ts_ms=-1), "ts_ms"),
    (changed("property_report", ts_ms="123"), "ts_ms"),
    (changed("property_report", ts_ms=2**63), "ts_ms"),
    (changed("property_report", ts_ms=True), "ts_ms"),
    (changed("property_report", ts_ms=1.5), "ts_ms"),
    (changed("property_report", quality="great"), "quality"),
    (changed("property_report", params=[]), "params"),
    (changed("property_report", params={"bad key": 1}), "params"),
    (changed("property_report", params={"1x": 1}), "params"),
    (changed("property_report", params={"a:": 1}), "params"),
    (changed("property_report", params={"x" * 51: 1}), "params"),
    (changed("property_report", name="x"), "name"),
    (changed("property_report", status="ok"), "status"),
    (changed("property_report", param_quality={}), "param_quality"),
    (changed("property_report", param_quality={"p": "meh"}), "param_quality"),
    (changed("property_report", param_quality=["p"]), "param_quality"),
    (changed("event", name=_DROP), "name"),
    (changed("event", name=None), "name"),
    (changed("event", name="bad-name"), "name"),
    (changed("event", correlation_id="m0"), "correlation_id"),
    (changed("event", status_message="x"), "status_message"),
    (changed("event", param_quality={"p": "bad"}), "param_quality"),
    (changed("service_reply", correlation_id=_DROP), "correlation_id"),
    (changed("service_reply", correlation_id="a b"), "correlation_id"),
    (changed("service_reply", status="not ok!"), "status"),
    (changed("service_reply", status=""), "status"),
    (changed("service_reply", status_message=""), "status_message"),
    (changed("service_reply", status_message=5), "status_message"),
    (changed("service_reply", status_message="x" * 4097), "status_message"),
    (changed("property_set_reply", status=_DROP), "status"),
    (changed("property_set_reply", name="reboot"), "name"),
    (["not", "an", "object"], "message"),
]


@pytest.mark.parametrize(("doc", "field"), BAD_DOCS)
def test_schema_and_from_json_dict_agree_on_bad_documents(doc: Any, field: str) -> None:
    assert not VALIDATOR.is_valid(doc)
    with pytest.raises(MessageError, match=re.escape(field)):
        from_json_dict(doc)
    with pytest.raises(MessageError, match=re.escape(field)):
        loads(json.dumps(doc))


@pytest.mark.parametrize("base", sorted(BASES))
def test_base_documents_are_valid_for_both(base: str) -> None:
    VALIDATOR.validate(BASES[base])
    assert to_json_dict(from_json_dict(BASES[base])) == BASES[base]


def _nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# Rules the schema cannot express (documented in its description): only the code rejects these.
CODE_ONLY_BAD_DOCS: list[tuple[Doc, str]] = [
    (changed("property_report", params={"n": 2**63}), "params.n"),
    (changed("property_report", params={"n": INT64_MIN - 1}), "params.n"),
    (changed("property_report", params={"s": "\ud800"}), "params.s"),
    (changed("property_report", params={"d": _nest(MAX_DEPTH)}), "params.d"),
    (changed("property_report", param_quality={"q": "bad"}), "param_quality.q"),
    (changed("property_report", ts_ms=5.0), "ts_ms"),
]


@pytest.mark.parametrize(("doc", "field"), CODE_ONLY_BAD_DOCS)
def test_rules_beyond_the_schema(doc: Doc, field: str) -> None:
    assert VALIDATOR.is_valid(doc)
    with pytest.raises(MessageError, match="^" + re.escape(field)):
        from_json_dict(doc)


def test_deepest_allowed_nesting_is_accepted() -> None:
    msg = report({"d": _nest(MAX_DEPTH - 1)})
    assert loads(dumps(msg)) == msg
    assert from_bytes(to_bytes(msg)) == msg


# --------------------------------------------------------------------------- hostile JSON text


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ('{"a": NaN}', "^message: unknown field"),
        (json.dumps(BASES["property_report"]).replace("1.5", "NaN"), r"^params\.p: nan"),
        (json.dumps(BASES["property_report"]).replace("1.5", "-Infinity"), r"^params\.p: -inf"),
        (json.dumps(BASES["property_report"]).replace("1.5", "1e999"), r"^params\.p: inf"),
        (json.dumps(BASES["property_report"]).replace("1.5", "9" * 5000), "^message: not valid"),
        ("[" * 100_000 + "]" * 100_000, "^message: nested deeper"),
        ('{"id": "a", "id": "b"}', "^message: duplicate key 'id'"),
        ("", "^message: not valid JSON"),
        ("[]", "^message: expected a JSON object"),
        ("{}", "^message: missing required field"),
        (b"\xff\xfe{}", "^message: not valid UTF-8"),
        (b'{"id": "\xed\xa0\x80"}', "^message: not valid UTF-8"),
    ],
)
def test_loads_rejects_hostile_text(text: str | bytes, pattern: str) -> None:
    with pytest.raises(MessageError, match=pattern):
        loads(text)


def test_loads_size_limit() -> None:
    msg = report({"blob": "x" * 1000})
    text = dumps(msg)
    assert loads(text.encode(), max_bytes=len(text)) == msg
    with pytest.raises(MessageError, match="more than the limit"):
        loads(text, max_bytes=len(text) - 1)
    with pytest.raises(MessageError, match="more than the limit"):
        loads(text.encode(), max_bytes=len(text) - 1)
    wide = dumps(report({"blob": "é" * 600}))  # 2 bytes each in UTF-8
    with pytest.raises(MessageError, match="more than the limit"):
        loads(wide, max_bytes=len(wide) + 100)
    with pytest.raises(MessageError, match="more than the limit"):
        loads("{" + " " * DEFAULT_MAX_BYTES + "}")
    with pytest.raises(MessageError, match="expected bytes"):
        loads(12)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- construction errors


@pytest.mark.parametrize(
    ("build", "pattern"),
    [
        (lambda: report({"v": {1, 2}}), r"^params\.v: set is not a JSON value"),
        (lambda: report({"v": b"raw"}), r"^params\.v: bytes is not a JSON value"),
        (lambda: report({"v": [1, object()]}), r"^params\.v\[1\]: object is not"),
        (lambda: report({"v": {"a b": {1: 2}}}), r"^params\.v\['a b'\]: map keys must be"),
        (lambda: report({"v": math.nan}), r"^params\.v: nan is not allowed"),
        (lambda: report({"v": [math.inf]}), r"^params\.v\[0\]: inf is not allowed"),
        (lambda: report({"v": 2**64}), r"^params\.v: 18446744073709551616 is outside"),
        (lambda: report({"v": _nest(MAX_DEPTH)}), r"^params\.v(\[0\])*: nested deeper than 32"),
        (lambda: report([("v", 1)]), "^params: expected an object, got array"),  # type: ignore[arg-type]
        (lambda: report({}, param_quality=[]), "^param_quality: expected an object"),
        (lambda: report({"v": 1}, param_quality={"v": "great"}), r"^param_quality\.v: 'great'"),
        (lambda: report({}, kind="nope"), "^kind: 'nope' is not one of"),
        (lambda: report({}, quality=1), "^quality: expected a string, got integer"),
        (lambda: report({}, id=None), "^id: expected a string, got null"),
        (lambda: report({}, device_id="\ud800x"), "^device_id: string is not valid Unicode"),
        (lambda: report({}, model=5), "^model: expected a string"),
        (lambda: report({}, model="com.acme/meter@1.2.0.0"), "^model: .* version"),
        (lambda: report({}, model="a/b@1" + ".x" * 200), "^model: "),
        (lambda: report({}, ts_ms=1.0), "^ts_ms: expected an integer, got float"),
        (lambda: report({}, status_message="why"), "^status_message: not allowed"),
        (lambda: report({}, status_message=None), "^status_message: expected a string"),
        (lambda: report({}, correlation_id="c"), "^correlation_id: not allowed"),
        (
            lambda: Message.service_call(MODEL, "d", "svc").reply(status=3),  # type: ignore[arg-type]
            "^status: expected a string",
        ),
        (
            lambda: Message.service_call(MODEL, "d", "svc").reply(status_message="\udfff"),
            "^status_message: string is not valid Unicode",
        ),
        (lambda: Message.event(MODEL, "d", 7), "^name: expected a string"),  # type: ignore[arg-type]
        (lambda: Message.event(MODEL, "d", "x" * 300), "^name: .* is not an identifier"),
    ],
)
def test_construction_errors_name_the_field(build: Callable[[], Message], pattern: str) -> None:
    with pytest.raises(MessageError, match=pattern):
        build()


# --------------------------------------------------------------------------- hostile protobuf


def test_from_bytes_rejects_malformed_protobuf() -> None:
    with pytest.raises(MessageError, match=r"^message: not a valid protobuf") as info:
        from_bytes(b"\xff\xff\xff\xff")
    assert info.value.__cause__ is not None
    with pytest.raises(MessageError, match=r"^message: expected bytes, got string"):
        from_bytes("text")  # type: ignore[arg-type]
    with pytest.raises(MessageError, match="more than the limit"):
        from_bytes(to_bytes(report({"s": "x" * 100})), max_bytes=50)
    with pytest.raises(MessageError, match=r"^message: expected a ThingMessage"):
        from_protobuf(pb.ThingMessageBatch())  # type: ignore[arg-type]
    with pytest.raises(MessageError, match=r"^batch: not a valid protobuf"):
        batch_from_bytes(b"\x0a\xff")


def _pb_report() -> pb.ThingMessage:
    return to_protobuf(report({"v": 1}, param_quality={"v": Quality.BAD}))


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda m: setattr(m, "kind", pb.MESSAGE_KIND_UNSPECIFIED), "^kind: 0 is not a known"),
        (lambda m: setattr(m, "kind", 99), "^kind: 99 is not a known"),
        (lambda m: setattr(m, "quality", pb.QUALITY_UNSPECIFIED), "^quality: 0 is not a known"),
        (lambda m: m.param_quality.__setitem__("v", 42), r"^param_quality\.v: 42 is not a known"),
        (lambda m: m.params["v"].Clear(), r"^params\.v: value has no kind set"),
        (lambda m: setattr(m.params["v"], "null_value", 3), r"^params\.v: unknown null_value"),
        (lambda m: m.params["w"].list_value.values.add(), r"^params\.w\[0\]: value has no kind"),
        (lambda m: setattr(m, "device_id", ""), "^device_id: must be 1-128"),
        (lambda m: setattr(m, "ts_ms", -5), "^ts_ms: -5 is outside"),
        (lambda m: setattr(m, "name", "evt"), "^name: not allowed"),
        (lambda m: setattr(m, "model", "x"), "^model: "),
    ],
)
def test_from_protobuf_rejects_bad_fields(
    mutate: Callable[[pb.ThingMessage], object], pattern: str
) -> None:
    message = _pb_report()
    mutate(message)
    with pytest.raises(MessageError, match=pattern):
        from_protobuf(message)
    with pytest.raises(MessageError, match=pattern):
        from_bytes(message.SerializeToString())


def test_from_protobuf_rejects_deep_nesting() -> None:
    message = _pb_report()
    value = message.params["d"]
    for _ in range(MAX_DEPTH):
        value = value.list_value.values.add()
    value.int_value = 1
    with pytest.raises(MessageError, match=r"^params\.d(\[0\])*: nested deeper than 32"):
        from_bytes(message.SerializeToString())


def test_unset_wire_strings_mean_absent() -> None:
    call = Message.service_call(MODEL, "dev", "svc")
    wire = to_protobuf(call.reply())
    assert (wire.status_message, wire.status) == ("", "ok")
    assert to_protobuf(call).correlation_id == ""
    assert from_protobuf(to_protobuf(call)).correlation_id is None


# --------------------------------------------------------------------------- schema document


def test_schema_is_a_valid_draft_2020_12_schema_with_docs() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["$id"]
    assert SCHEMA["title"]
    assert SCHEMA["description"]
    for name, prop in SCHEMA["properties"].items():
        assert prop.get("description"), name
    assert {rule["if"]["properties"]["kind"]["const"] for rule in SCHEMA["allOf"]} == {
        k.value for k in MessageKind
    }
    assert SCHEMA["$defs"]["quality"]["enum"] == [q.value for q in Quality]
    fresh = message_json_schema()
    fresh["title"] = "changed"
    assert message_json_schema()["title"] == SCHEMA["title"]


# --------------------------------------------------------------------------- hypothesis

_TOKEN = st.text(
    st.characters(codec="utf-8", categories=("L", "N", "P", "S")), min_size=1, max_size=40
)
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"
_IDENT = st.builds(
    str.__add__,
    st.text(_LOWER + _LOWER.upper() + "_", min_size=1, max_size=1),
    st.text(_LOWER + _LOWER.upper() + _DIGITS + "_", max_size=12),
)
_NAME = st.lists(_IDENT, min_size=1, max_size=3).map(":".join)
_SEGMENT = st.builds(
    str.__add__, st.sampled_from(_LOWER), st.text(_LOWER + _DIGITS + "-", max_size=8)
)
_VERSION = st.builds(
    "{}{}".format,
    st.lists(st.integers(0, 999).map(str), min_size=1, max_size=3).map(".".join),
    st.sampled_from(["", "-rc.1", "-alpha-2", "-0"]),
)
_MODEL = st.builds(
    "{}/{}@{}".format,
    st.lists(_SEGMENT, min_size=1, max_size=3).map(".".join),
    _SEGMENT,
    _VERSION,
)
_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(INT64_MIN, INT64_MAX)
    | st.sampled_from([INT64_MIN, INT64_MAX, 0, -1, 2**53 + 1])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.1, 1e308, -0.0, 2.0, 5e-324, -1e-308])
    | _TEXT
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=16,
)
_PARAMS = st.dictionaries(_NAME, _VALUES, max_size=5)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    kind = draw(st.sampled_from(MessageKind))
    params = draw(_PARAMS)
    fields: dict[str, Any] = {}
    if kind in (MessageKind.EVENT, MessageKind.SERVICE_CALL, MessageKind.SERVICE_REPLY):
        fields["name"] = draw(_NAME)
    if kind.is_reply:
        fields["correlation_id"] = draw(_TOKEN)
        fields["status"] = draw(st.sampled_from(["ok", "E_TIMEOUT", "invalid.params", "42"]))
        fields["status_message"] = draw(_TEXT)
    if kind is MessageKind.PROPERTY_REPORT and params:
        keys = draw(st.lists(st.sampled_from(sorted(params)), unique=True))
        fields["param_quality"] = {k: draw(st.sampled_from(Quality)) for k in keys}
    return Message(
        id=draw(_TOKEN | st.builds(new_message_id)),
        kind=kind,
        model=draw(_MODEL),
        device_id=draw(_TOKEN),
        ts_ms=draw(st.integers(0, INT64_MAX)),
        quality=draw(st.sampled_from(Quality)),
        params=params,
        **fields,
    )


SETTINGS = settings(max_examples=200, deadline=None)


@SETTINGS
@given(messages())
def test_conversions_are_lossless_and_schema_valid(msg: Message) -> None:
    doc = to_json_dict(msg)
    VALIDATOR.validate(doc)
    # Message -> JSON -> Message
    via_json = from_json_dict(doc)
    assert via_json == msg
    assert strict_equal(dict(via_json.params), dict(msg.params))
    assert loads(dumps(msg)) == msg
    assert loads(dumps(msg, indent=2).encode()) == msg
    # Message -> protobuf -> Message
    wire = to_bytes(msg)
    via_pb = from_bytes(wire)
    assert via_pb == msg
    assert strict_equal(dict(via_pb.params), dict(msg.params))
    assert to_bytes(via_pb) == wire
    # JSON -> protobuf -> JSON
    assert strict_equal(to_json_dict(from_protobuf(to_protobuf(via_json))), doc)
    assert dumps(from_bytes(to_bytes(loads(dumps(msg))))) == dumps(msg)


@SETTINGS
@given(messages(), st.sampled_from(sorted(BASES["service_reply"])), _VALUES)
def test_schema_invalid_corruptions_are_rejected_by_the_code(
    msg: Message, key: str, junk: Any
) -> None:
    doc = to_json_dict(msg)
    doc[key] = junk
    if not VALIDATOR.is_valid(doc):
        with pytest.raises(MessageError):
            from_json_dict(doc)
    else:
        # Schema-valid: the code accepts it losslessly, or refuses it by a rule beyond the schema.
        error: MessageError | None = None
        try:
            parsed = from_json_dict(doc)
        except MessageError as exc:
            error = exc
        if error is not None:
            assert re.match(r"(params|param_quality|ts_ms)\b", str(error)), error
        else:
            assert strict_equal(to_json_dict(parsed), doc)


# ---------------------------------------------------------------- single values (registry wire)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -(2**63),
        2**63 - 1,
        2.0,
        -0.0,
        1e308,
        "x",
        [],
        {},
        {"a": [1, 2.5, None]},
    ],
)
def test_single_value_round_trip(value: object) -> None:
    from thing_models.messages import value_from_protobuf, value_to_protobuf

    back = value_from_protobuf(value_to_protobuf(value))
    assert back == value
    assert type(back) is type(value)


def test_single_value_rejects_what_json_cannot_carry() -> None:
    from thing_models.messages import value_to_protobuf

    with pytest.raises(MessageError, match=r"desired\.x: nan is not allowed"):
        value_to_protobuf({"x": float("nan")}, "desired")
    with pytest.raises(MessageError, match="is outside"):
        value_to_protobuf(2**63)


def test_quality_numbers_round_trip() -> None:
    from thing_models.messages import quality_from_protobuf, quality_to_protobuf

    for name in ("good", "uncertain", "bad"):
        assert quality_from_protobuf(quality_to_protobuf(name)) == name
    with pytest.raises(MessageError, match="quality"):
        quality_from_protobuf(0)
