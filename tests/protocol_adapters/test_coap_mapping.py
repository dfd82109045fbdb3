"""The pure CoAP mapping: payloads (JSON, CBOR, text) and paths to thing-model values and back,
response codes, size limits, and hypothesis fuzzing ("map it, or raise CoapError, never
anything else")."""

from __future__ import annotations

import datetime as dt
import json
import math
import types
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol_adapters.coap as coap
from protocol_adapters.base import PeerRejectedError
from protocol_adapters.coap import (
    MAX_PAYLOAD_BYTES,
    CoapConfigError,
    CoapError,
    CoapPayloadError,
    CoapResponseError,
    CoapValueError,
    check_response,
    code_text,
    compile_binding,
    decode_payload,
    document_outputs,
    encode_payload,
    from_model,
    parse_path,
    point_for,
    to_model,
)
from thing_models import load_model_text
from thing_models.messages import Quality
from thing_models.model import (
    CoapBinding,
    CoapMode,
    CoapPoint,
    ContentFormat,
    DataSchema,
    DataType,
    EnumValue,
    Field,
)

MODEL = load_model_text(
    """
model: test.coap/thermostat
version: "1.0.0"
properties:
  - {id: temp, type: float, min: -40, max: 85}
  - {id: on, type: bool}
  - {id: since, type: timestamp}
  - {id: setpoint, type: float, min: 5, max: 30, access: rw}
  - {id: mode, type: enum, values: {0: off, 1: heat, 2: cool}, access: rw}
  - {id: label, type: text, max_length: 8, access: rw}
  - {id: count, type: int32}
  - id: mag
    type: struct
    fields: [{id: x, type: int32}, {id: y, type: int32}]
  - {id: samples, type: array, items: {type: int32}, max_items: 4}
bindings:
  coap:
    points:
      - {property: temp, resource: /state, mode: observe, path: $.t, content_format: cbor}
      - {property: on, resource: /state, mode: observe, path: $.on, content_format: cbor}
      - {property: since, resource: /state, mode: observe, path: $.since, content_format: cbor}
      - {property: setpoint, resource: /config, path: $.sp.value}
      - {property: mode, resource: /config, path: "$['mode']"}
      - {property: label, resource: /label, content_format: text}
      - {property: count, resource: /count, content_format: text}
      - {property: mag, resource: /env, path: $.mag}
      - {property: samples, resource: /env, path: $.s}
""",
    "thermostat.yaml",
)
BINDING = MODEL.bindings.coap
assert BINDING is not None
RESOURCES = compile_binding(BINDING, MODEL)
BY_RESOURCE = {r.resource: r for r in RESOURCES}


def test_all_matches_public_names() -> None:
    public = {
        name
        for name, value in vars(coap).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert sorted(coap.__all__) == sorted(public)


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("", ()),
        ("$", ()),
        ("$.a", ("a",)),
        ("$.a.b_c-d", ("a", "b_c-d")),
        ("$.items[0].v", ("items", 0, "v")),
        ("$['odd key'][\"x\"]", ("odd key", "x")),
        (".a", ("a",)),
    ],
)
def test_parse_path(text: str, steps: tuple[Any, ...]) -> None:
    assert parse_path(text) == steps


@pytest.mark.parametrize("text", ["$.", "$..a", "$[a]", "$.a[", "$.1a", "$['a\"]", "a.b"])
def test_parse_path_rejects(text: str) -> None:
    with pytest.raises(CoapConfigError, match="cannot parse"):
        parse_path(text)


# --------------------------------------------------------------------------- compile


def test_compile_groups_points_by_resource() -> None:
    assert [r.resource for r in RESOURCES] == ["/state", "/config", "/label", "/count", "/env"]
    state = BY_RESOURCE["/state"]
    assert state.observe
    assert state.content_format is ContentFormat.CBOR
    assert state.properties == {"temp", "on", "since"}
    assert not BY_RESOURCE["/config"].observe
    assert point_for(RESOURCES, "setpoint").path == ("sp", "value")
    assert point_for(RESOURCES, "setpoint").writable
    assert not point_for(RESOURCES, "temp").writable


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([CoapPoint("nope", "/x")], "no such property"),
        ([CoapPoint("temp", "x")], "must start with /"),
        ([CoapPoint("temp", "/a b")], "must start with /"),
        ([CoapPoint("temp", "/x", path="$.[")], "cannot parse"),
        ([CoapPoint("label", "/x", path="$.a", content_format=ContentFormat.TEXT)], "no path"),
        (
            [CoapPoint("temp", "/x"), CoapPoint("on", "/x", content_format=ContentFormat.CBOR)],
            "json for temp but cbor",
        ),
        (
            [CoapPoint("temp", "/x"), CoapPoint("on", "/x", mode=CoapMode.OBSERVE)],
            "polled for temp but observed here",
        ),
    ],
)
def test_compile_rejects(points: list[CoapPoint], message: str) -> None:
    with pytest.raises(CoapConfigError, match=message):
        compile_binding(CoapBinding(tuple(points)), MODEL)


def test_point_for_unknown() -> None:
    with pytest.raises(CoapConfigError, match="nope: no CoAP point"):
        point_for(RESOURCES, "nope")


def test_compile_without_model_passes_values_through() -> None:
    (resource,) = compile_binding(CoapBinding((CoapPoint("x", "/x", path="$.v"),)))
    assert resource.decode(b'{"v": {"a": [1, 2.5, "s", null]}}') == {
        "x": (({"a": [1, 2.5, "s", None]}), Quality.GOOD, "")
    }
    (cbor,) = compile_binding(
        CoapBinding((CoapPoint("x", "/x", path="$.v", content_format=ContentFormat.CBOR),))
    )
    bad = cbor.decode(cbor2.dumps({"v": b"\x00"}), 100)
    assert bad["x"].quality is Quality.BAD
    assert "unsupported value b'\\x00'" in bad["x"].reason


# --------------------------------------------------------------------------- decode


def test_decode_cbor_observe_resource() -> None:
    payload = cbor2.dumps({"t": 21.5, "on": True, "since": 1718000000000, "extra": 1})
    readings = BY_RESOURCE["/state"].decode(payload)
    assert readings == {
        "temp": (21.5, Quality.GOOD, ""),
        "on": (True, Quality.GOOD, ""),
        "since": (1718000000000, Quality.GOOD, ""),
    }


def test_decode_json_nested_and_quoted_paths() -> None:
    readings = BY_RESOURCE["/config"].decode(b'{"sp": {"value": 21}, "mode": 2}')
    setpoint = readings["setpoint"]
    assert type(setpoint.value) is float
    assert setpoint == (21.0, Quality.GOOD, "")
    assert readings["mode"] == (2, Quality.GOOD, "")


def test_decode_text_resources() -> None:
    assert BY_RESOURCE["/label"].decode(b"P2-117")["label"] == ("P2-117", Quality.GOOD, "")
    assert BY_RESOURCE["/count"].decode(b" 42\n")["count"] == (42, Quality.GOOD, "")
    bad = BY_RESOURCE["/count"].decode(b"forty-two")["count"]
    assert bad.quality is Quality.BAD
    assert "not a number" in bad.reason


def test_decode_struct_and_array() -> None:
    readings = BY_RESOURCE["/env"].decode(b'{"mag": {"x": 1, "y": -2, "z": 9}, "s": [1, 2.0]}')
    assert readings["mag"] == ({"x": 1, "y": -2}, Quality.GOOD, "")
    assert readings["samples"] == ([1, 2], Quality.GOOD, "")


@pytest.mark.parametrize(
    ("payload", "prop", "reason"),
    [
        (b'{"mag": {"x": 1}, "s": []}', "mag", "field 'y' is missing"),
        (b'{"mag": {"x": 1, "y": "a"}, "s": []}', "mag", "field 'y': expected an integer"),
        (b'{"mag": [], "s": [1, 2, 3, 4, 5]}', "samples", "5 items, over 4"),
        (b'{"mag": [], "s": [1, 1.5]}', "samples", "item 1: expected an integer"),
        (b'{"mag": [], "s": {}}', "samples", "expected an array"),
        (b'{"mag": [], "s": [1, 2147483648]}', "samples", "does not fit a int32"),
        (b'{"m": []}', "mag", "payload of /env has no $.mag"),
    ],
)
def test_decode_bad_points_are_bad_readings(payload: bytes, prop: str, reason: str) -> None:
    reading = BY_RESOURCE["/env"].decode(payload)[prop]
    assert reading.quality is Quality.BAD
    assert reading.value is None
    assert reason in reading.reason


def test_out_of_range_keeps_value_with_bad_quality() -> None:
    readings = BY_RESOURCE["/state"].decode(cbor2.dumps({"t": 99.0, "on": 2, "since": -1}))
    assert readings["temp"] == (99.0, Quality.BAD, "99.0 above maximum 85")
    assert readings["on"].quality is Quality.BAD
    assert "expected a boolean" in readings["on"].reason
    assert readings["since"].quality is Quality.BAD


def test_cbor_datetime_timestamp() -> None:
    when = dt.datetime(2024, 6, 10, 6, 13, 20, tzinfo=dt.UTC)
    payload = cbor2.dumps({"t": 1, "on": False, "since": when}, datetime_as_timestamp=True)
    assert BY_RESOURCE["/state"].decode(payload)["since"].value == 1718000000000
    naive = cbor2.dumps({"since": when.replace(tzinfo=None)}, timezone=dt.UTC)
    assert BY_RESOURCE["/state"].decode(naive)["since"].value == 1718000000000


@pytest.mark.parametrize(
    ("payload", "fmt", "message"),
    [
        (b"{", ContentFormat.JSON, "json payload does not decode"),
        (b"\xff\xfe", ContentFormat.JSON, "does not decode"),
        (b"\xff", ContentFormat.CBOR, "cbor payload does not decode"),
        (b"\x9f", ContentFormat.CBOR, "does not decode"),
        (b"\xc3\x28", ContentFormat.TEXT, "text payload is not UTF-8"),
        (b"[" * 100_000, ContentFormat.JSON, "nested too deeply|does not decode"),
        (b"\x81" * 100_000, ContentFormat.CBOR, "nested too deeply|does not decode"),
    ],
)
def test_malformed_payloads_raise_payload_error(
    payload: bytes, fmt: ContentFormat, message: str
) -> None:
    with pytest.raises(CoapPayloadError, match=message):
        decode_payload(payload, fmt, 200_000)


def test_resource_decode_names_the_resource() -> None:
    with pytest.raises(CoapPayloadError, match=r"^/state: cbor payload does not decode"):
        BY_RESOURCE["/state"].decode(b"\xff")


def test_size_limit() -> None:
    big = b"[" + b"1," * (MAX_PAYLOAD_BYTES // 2) + b"1]"
    with pytest.raises(CoapPayloadError, match=r"over the limit of 65536"):
        decode_payload(big, ContentFormat.JSON)
    assert len(decode_payload(big, ContentFormat.JSON, len(big))) == MAX_PAYLOAD_BYTES // 2 + 1
    with pytest.raises(CoapPayloadError, match="must be bytes"):
        decode_payload("text", ContentFormat.TEXT)  # type: ignore[arg-type]


def test_bad_helper_marks_only_requested_points() -> None:
    bad = BY_RESOURCE["/state"].bad("CoapTimeoutError: x", {"temp"})
    assert bad == {"temp": (None, Quality.BAD, "CoapTimeoutError: x")}


# --------------------------------------------------------------------------- values


def schema(kind: DataType, **kw: Any) -> DataSchema:
    return DataSchema(kind, **kw)


@pytest.mark.parametrize(
    ("value", "sch", "expected"),
    [
        (1, schema(DataType.BOOL), True),
        (0, schema(DataType.BOOL), False),
        (3.0, schema(DataType.INT64), 3),
        (3, schema(DataType.DOUBLE), 3.0),
        ("a", schema(DataType.ENUM, enum=(EnumValue("a", "A"),)), "a"),
        (["x"], schema(DataType.ARRAY, items=None), ["x"]),
        ({"a": 1}, schema(DataType.STRUCT, fields=(Field("a", schema(DataType.INT32)),)), {"a": 1}),
        (
            {},
            schema(DataType.STRUCT, fields=(Field("a", schema(DataType.INT32), required=False),)),
            {},
        ),
    ],
)
def test_to_model_good(value: Any, sch: DataSchema, expected: Any) -> None:
    assert to_model(value, sch) == (expected, Quality.GOOD, "")


@pytest.mark.parametrize(
    ("value", "sch", "reason"),
    [
        (True, schema(DataType.INT32), "expected an integer"),
        (1.5, schema(DataType.INT32), "expected an integer"),
        ("1", schema(DataType.FLOAT), "expected a number"),
        (math.nan, schema(DataType.FLOAT), "not a finite number"),
        (10**400, schema(DataType.DOUBLE), "not a finite number"),
        (1, schema(DataType.TEXT), "expected text"),
        (True, schema(DataType.ENUM, enum=(EnumValue(1, "A"),)), "expected an enum member"),
        (2, schema(DataType.ENUM, enum=(EnumValue(1, "A"),)), "not a member"),
        ([], schema(DataType.STRUCT), "expected a struct"),
        ("maybe", None, None),
        (b"\x00", None, "unsupported value"),
        (math.inf, None, "not a finite number"),
        ({1: 2}, None, "unsupported value"),
    ],
)
def test_to_model_bad(value: Any, sch: DataSchema | None, reason: str | None) -> None:
    reading = to_model(value, sch)
    if reason is None:
        assert reading == (value, Quality.GOOD, "")
    else:
        assert reading.quality is Quality.BAD
        assert reason in reading.reason


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("true", DataType.BOOL, True),
        ("OFF", DataType.BOOL, False),
        ("1.5", DataType.FLOAT, 1.5),
        ("7", DataType.ENUM, 7),
        ("heat", DataType.ENUM, "heat"),
    ],
)
def test_to_model_from_text(text: str, kind: DataType, expected: Any) -> None:
    sch = schema(kind, enum=(EnumValue(7, "x"), EnumValue("heat", "Heat")))
    assert to_model(text, sch, from_text=True).value == expected


def test_to_model_from_text_rejects() -> None:
    assert "not a boolean" in to_model("maybe", schema(DataType.BOOL), from_text=True).reason
    assert "expected text" in to_model(1, schema(DataType.BOOL), from_text=True).reason
    reason = to_model("{}", schema(DataType.STRUCT), from_text=True).reason
    assert "cannot carry a struct" in reason


def test_deep_values_are_bad_not_recursion_errors() -> None:
    deep: Any = 1
    for _ in range(200):
        deep = [deep]
    assert "nested too deeply" in to_model(deep, None).reason
    nested = schema(DataType.ARRAY, items=None)
    for _ in range(40):
        nested = schema(DataType.ARRAY, items=nested)
    assert "nested too deeply" in to_model(deep, nested).reason


# --------------------------------------------------------------------------- writes


def test_encode_write_builds_document_at_path() -> None:
    assert json.loads(point_for(RESOURCES, "setpoint").encode_write(21)) == {"sp": {"value": 21.0}}
    assert json.loads(point_for(RESOURCES, "mode").encode_write(1)) == {"mode": 1}
    assert point_for(RESOURCES, "label").encode_write("P2-117") == b"P2-117"


def test_encode_write_cbor_and_text_forms() -> None:
    (cbor_point,) = compile_binding(
        CoapBinding((CoapPoint("on", "/s", content_format=ContentFormat.CBOR),)), MODEL
    )[0].points
    assert cbor2.loads(cbor_point.encode_write(True)) is True
    (text_point,) = compile_binding(
        CoapBinding((CoapPoint("on", "/s", content_format=ContentFormat.TEXT),)), MODEL
    )[0].points
    assert text_point.encode_write(False) == b"false"


@pytest.mark.parametrize(
    ("prop", "value", "message"),
    [
        ("setpoint", 40, "setpoint: cannot write 40: 40.0 above maximum 30"),
        ("setpoint", "warm", "expected a number"),
        ("setpoint", True, "expected a number"),
        ("mode", 7, "not a member"),
        ("label", "much too long", "over 8"),
    ],
)
def test_encode_write_rejects_bad_values(prop: str, value: object, message: str) -> None:
    with pytest.raises(CoapValueError, match=message):
        point_for(RESOURCES, prop).encode_write(value)


def test_encode_write_through_array_index() -> None:
    (resource,) = compile_binding(CoapBinding((CoapPoint("count", "/a", path="$.v[0]"),)), MODEL)
    with pytest.raises(CoapConfigError, match=r"array index in \$.v\[0\]"):
        resource.points[0].encode_write(1)


def test_encode_payload_errors() -> None:
    with pytest.raises(CoapValueError, match="as json"):
        encode_payload(math.nan, ContentFormat.JSON)
    with pytest.raises(CoapValueError, match="no plain-text form"):
        encode_payload({"a": 1}, ContentFormat.TEXT)
    with pytest.raises(CoapValueError, match="as cbor"):
        encode_payload(object(), ContentFormat.CBOR)


def test_from_model_passes_good_values() -> None:
    assert from_model(3, schema(DataType.FLOAT), "x") == 3.0


# --------------------------------------------------------------------------- responses


@pytest.mark.parametrize(
    ("code", "text"), [(0x45, "2.05"), (0x84, "4.04"), (0xA3, "5.03"), (0x01, "0.01")]
)
def test_code_text(code: int, text: str) -> None:
    assert code_text(code) == text


def test_code_text_rejects_non_bytes() -> None:
    with pytest.raises(CoapPayloadError):
        code_text(256)


def test_check_response() -> None:
    check_response(0x45, "GET", "/x")
    check_response(0x44, "PUT", "/x")
    with pytest.raises(CoapResponseError) as info:
        check_response(0x84, "GET", "/env", b"no such thing")
    assert info.value.code == "4.04"
    assert isinstance(info.value, PeerRejectedError)
    assert str(info.value) == "GET /env: 4.04 (no such thing)"
    with pytest.raises(CoapResponseError, match=r"^PUT /x: 5.03$"):
        check_response(0xA3, "PUT", "/x")


def test_document_outputs() -> None:
    assert document_outputs(None, "s") == {}
    assert document_outputs({"ok": True}, "s") == {"ok": True}
    with pytest.raises(CoapPayloadError, match="s: reply is \\[1\\], not a map"):
        document_outputs([1], "s")


# --------------------------------------------------------------------------- fuzz

FORMATS = st.sampled_from(list(ContentFormat))
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(payload=st.binary(max_size=300), fmt=FORMATS)
def test_fuzz_decode_raises_only_payload_error(payload: bytes, fmt: ContentFormat) -> None:
    try:
        value = decode_payload(payload, fmt)
    except CoapPayloadError:
        return  # the one error allowed
    if fmt is ContentFormat.TEXT:
        assert value == payload.decode()


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=200), resource=st.sampled_from(RESOURCES))
def test_fuzz_resource_decode_maps_or_raises(payload: bytes, resource: Any) -> None:
    try:
        readings = resource.decode(payload)
    except CoapPayloadError:
        return
    assert set(readings) == resource.properties
    for reading in readings.values():
        assert reading.quality in (Quality.GOOD, Quality.BAD)
        assert reading.quality is Quality.GOOD or reading.reason


@settings(max_examples=300, deadline=None)
@given(document=JSONISH, resource=st.sampled_from(RESOURCES))
def test_fuzz_structured_documents_never_raise(document: Any, resource: Any) -> None:
    if resource.content_format is ContentFormat.TEXT:
        return
    payload = cbor2.dumps(document)
    fmt = ContentFormat.CBOR
    (one,) = compile_binding(
        CoapBinding(
            tuple(
                CoapPoint(p.property, "/f", path="$.x", content_format=fmt) for p in resource.points
            )
        ),
        MODEL,
    )
    readings = one.decode(payload)
    assert set(readings) == one.properties


@settings(max_examples=300, deadline=None)
@given(value=JSONISH, prop=st.sampled_from([p.property for r in RESOURCES for p in r.points]))
def test_fuzz_write_encodes_or_raises_value_error(value: Any, prop: str) -> None:
    point = point_for(RESOURCES, prop)
    try:
        payload = point.encode_write(value)
    except (CoapValueError, CoapConfigError):
        return
    document = decode_payload(payload, point.content_format)
    assert point.read(document).quality is Quality.GOOD


@settings(max_examples=200, deadline=None)
@given(value=st.floats(min_value=5, max_value=30))
def test_round_trip_setpoint(value: float) -> None:
    point = point_for(RESOURCES, "setpoint")
    document = decode_payload(point.encode_write(value), ContentFormat.JSON)
    assert point.read(document) == (value, Quality.GOOD, "")


def test_errors_share_one_base() -> None:
    for cls in (CoapConfigError, CoapPayloadError, CoapValueError, CoapResponseError):
        assert issubclass(cls, CoapError)
