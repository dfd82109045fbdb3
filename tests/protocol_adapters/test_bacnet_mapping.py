"""The pure BACnet mapping: identifiers, values both ways, quality, draft models; fuzzed."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import pytest
from bacpypes3.basetypes import BinaryPV, StatusFlags
from bacpypes3.primitivedata import (
    BitString,
    Boolean,
    CharacterString,
    Double,
    Enumerated,
    Integer,
    Null,
    Real,
    Unsigned,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol_adapters.bacnet.errors import BacnetConfigError, BacnetError, BacnetMappingError
from protocol_adapters.bacnet.mapping import (
    DiscoveredDevice,
    DiscoveredObject,
    ObjectId,
    check_priority,
    draft_model,
    parse_object_id,
    parse_property_ref,
    quality_of,
    to_bacnet_value,
    to_model_value,
)
from thing_models.messages import Quality
from thing_models.model import Access, DataSchema, DataType, EnumValue, Field
from thing_models.yaml_format import dump_model_yaml, load_model_text

FLOAT = DataSchema(DataType.FLOAT, minimum=0, maximum=100)
INT = DataSchema(DataType.INT32)
BOOL = DataSchema(DataType.BOOL)
TEXT = DataSchema(DataType.TEXT, max_length=8)
MODES = DataSchema(DataType.ENUM, enum=(EnumValue(1, "Off"), EnumValue(2, "Auto")))
NAMED = DataSchema(DataType.ENUM, enum=(EnumValue("active", "On"), EnumValue("inactive", "Off")))
FLAGS = DataSchema(
    DataType.STRUCT,
    fields=tuple(
        Field(name, DataSchema(DataType.BOOL))
        for name in ("in_alarm", "fault", "overridden", "out_of_service")
    ),
)


# --------------------------------------------------------------------------- identifiers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("analog-input,1", ObjectId("analog-input", 1)),
        ("analogValue:7", ObjectId("analog-value", 7)),
        (" 3 , 2 ", ObjectId("binary-input", 2)),
        ("multi-state-value,4194302", ObjectId("multi-state-value", 4194302)),
        ("200,1", ObjectId("200", 1)),  # proprietary range 128..1023
    ],
)
def test_object_ids_parse(text: str, expected: ObjectId) -> None:
    assert parse_object_id(text) == expected
    assert str(expected) == f"{expected.type},{expected.instance}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("analog-inptu,1", "not a BACnet object type"),
        ("analog-input", "not 'object-type,instance'"),
        ("analog-input,-1", "not 'object-type,instance'"),
        ("analog-input,4194303", "above 4194302"),
        ("70,1", "not defined"),
        (7, "not 'object-type,instance'"),
        ("", "not 'object-type,instance'"),
    ],
)
def test_bad_object_ids_are_named(text: Any, message: str) -> None:
    with pytest.raises(BacnetConfigError, match=message):
        parse_object_id(text, "points[3]")


def test_property_refs() -> None:
    assert parse_property_ref("present-value") == ("present-value", None)
    assert parse_property_ref("presentValue") == ("present-value", None)
    assert parse_property_ref("priority-array[8]") == ("priority-array", 8)
    assert parse_property_ref("85") == ("present-value", None)
    assert parse_property_ref("600") == ("600", None)  # proprietary
    for bad in ("present-valeu", "x[", "9999999", None, ""):
        with pytest.raises(BacnetConfigError):
            parse_property_ref(bad)


def test_priorities() -> None:
    assert check_priority(1) == 1
    assert check_priority(16) == 16
    for bad in (0, 17, 6, True, 8.0, "8", None):
        with pytest.raises(BacnetConfigError, match="priority"):
            check_priority(bad)


# --------------------------------------------------------------------------- quality


@pytest.mark.parametrize(
    ("flags", "reliability", "quality", "reason"),
    [
        ([0, 0, 0, 0], None, Quality.GOOD, ""),
        ([1, 0, 0, 0], "no-fault-detected", Quality.GOOD, ""),
        ([0, 1, 0, 0], None, Quality.BAD, "fault"),
        ([0, 1, 0, 0], "over-range", Quality.BAD, "fault (over-range)"),
        ([0, 0, 0, 0], "open-loop", Quality.BAD, "fault (open-loop)"),
        ([0, 0, 1, 0], None, Quality.UNCERTAIN, "overridden"),
        ([0, 0, 1, 1], None, Quality.UNCERTAIN, "out-of-service, overridden"),
        (None, None, Quality.GOOD, ""),
        ([0], None, Quality.GOOD, ""),
    ],
)
def test_quality(
    flags: list[int] | None, reliability: str | None, quality: Quality, reason: str
) -> None:
    assert quality_of(flags, reliability) == (quality, reason)
    if flags is not None and len(flags) == 4:
        assert quality_of(StatusFlags(flags), reliability) == (quality, reason)


# --------------------------------------------------------------------------- reading


def _id(value: object) -> str:
    return type(value).__name__


@pytest.mark.parametrize(
    ("raw", "schema", "expected"),
    [
        (Real(21.5), FLOAT, 21.5),
        (Unsigned(3), FLOAT, 3.0),
        (Real(412.6), INT, 413),
        (Integer(-4), INT, -4),
        (BinaryPV("active"), BOOL, True),
        (BinaryPV("inactive"), BOOL, False),
        (Boolean(True), BOOL, True),
        ("inactive", BOOL, False),
        (Unsigned(2), MODES, 2),
        (BinaryPV("active"), NAMED, "active"),
        (CharacterString("AHU-1"), TEXT, "AHU-1"),
        (Enumerated(3), INT, 3),
        (StatusFlags([0, 1, 0, 0]), FLAGS, dict.fromkeys(["in_alarm", "overridden"], False)),
    ],
    ids=_id,
)
def test_values_read(raw: Any, schema: DataSchema, expected: Any) -> None:
    value = to_model_value(raw, schema, "p")
    if schema is FLAGS:
        assert value == {
            "in_alarm": False,
            "fault": True,
            "overridden": False,
            "out_of_service": False,
        }
    else:
        assert value == expected
        assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("raw", "schema", "message"),
    [
        (Null(()), FLOAT, "expected a number"),
        (CharacterString("x"), FLOAT, "expected a number"),
        (Real(math.nan), INT, "not an integer"),
        (Real(1e12), INT, "outside the int32 range"),
        (Unsigned(7), MODES, "not one of the model's enum values"),
        (Unsigned(2), BOOL, "expected active/inactive"),
        (CharacterString("much too long"), TEXT, "longer than 8"),
        (Real(1.0), FLAGS, "expected a bit string"),
        (BitString([0, 1]), FLAGS, "2 bits for a struct of 4 fields"),
        (Null(()), TEXT, "expected a character string"),
        (Real(1.0), DataSchema(DataType.ARRAY), "expected an array"),
    ],
    ids=_id,
)
def test_bad_values_read_are_named(raw: Any, schema: DataSchema, message: str) -> None:
    with pytest.raises(BacnetMappingError, match=message) as info:
        to_model_value(raw, schema, "supply_air_temp (analog-input,1)")
    assert "supply_air_temp (analog-input,1)" in str(info.value)


# --------------------------------------------------------------------------- writing


@pytest.mark.parametrize(
    ("value", "schema", "object_type", "cls", "wire"),
    [
        (19.5, FLOAT, "analog-value", Real, 19.5),
        (20, FLOAT, "analog-output", Real, 20.0),
        (True, BOOL, "binary-output", BinaryPV, 1),
        (False, BOOL, "binary-value", BinaryPV, 0),
        (2, MODES, "multi-state-value", Unsigned, 2),
        (7, INT, "integer-value", Unsigned, 7),
        (-7, INT, "integer-value", Integer, -7),
        (2.5, DataSchema(DataType.DOUBLE), "large-analog-value", Double, 2.5),
        ("hi", TEXT, "characterstring-value", CharacterString, "hi"),
        (True, BOOL, "accumulator", Boolean, 1),
        (True, BOOL, "analog-value", Real, 1.0),
    ],
    ids=_id,
)
def test_values_written(
    value: Any, schema: DataSchema, object_type: str, cls: type, wire: Any
) -> None:
    out = to_bacnet_value(value, schema, object_type, "p")
    assert isinstance(out, cls)
    assert out == wire


def test_relinquish_is_null() -> None:
    assert isinstance(to_bacnet_value(None, FLOAT, "analog-value", "p"), Null)


@pytest.mark.parametrize(
    ("value", "schema", "object_type", "message"),
    [
        ("19.5", FLOAT, "analog-value", "expected a number"),
        (True, FLOAT, "analog-value", "expected a number"),
        (math.inf, FLOAT, "analog-value", "not a finite number"),
        (101, FLOAT, "analog-value", "above the maximum 100"),
        (-1, FLOAT, "analog-value", "below the minimum 0"),
        (1, BOOL, "binary-value", "expected a bool"),
        (9, MODES, "multi-state-value", "not one of the model's enum values"),
        (2**40, INT, "integer-value", "outside the int32 range"),
        ("far too long text", TEXT, "characterstring-value", "longer than 8"),
        ({"a": 1}, FLAGS, "analog-input", "cannot be written"),
        ("x", TEXT, "analog-value", "an analog object takes a number"),
        ("x", TEXT, "multi-state-value", "a multi-state object takes a state"),
        (1.5, FLOAT, "binary-value", "a binary object takes a bool"),
    ],
)
def test_bad_writes_are_named(
    value: Any, schema: DataSchema, object_type: str, message: str
) -> None:
    with pytest.raises(BacnetMappingError, match=message):
        to_bacnet_value(value, schema, object_type, "sat_setpoint")


# --------------------------------------------------------------------------- drafts


def test_draft_model_round_trips_through_yaml() -> None:
    device = DiscoveredDevice(
        1001,
        "127.0.0.1:47808",
        name="AHU-1",
        vendor="Acme",
        objects=(
            DiscoveredObject(
                ObjectId("analog-input", 1), "SAT", "Supply air temp", "degrees-celsius"
            ),
            DiscoveredObject(ObjectId("analog-input", 2), "SAT", units="furlongs"),
            DiscoveredObject(ObjectId("analog-value", 1), "1st setpoint!"),
            DiscoveredObject(ObjectId("binary-output", 1), ""),
            DiscoveredObject(
                ObjectId("multi-state-value", 1), "Mode", state_texts=("Off", "", "On")
            ),
            DiscoveredObject(ObjectId("characterstring-value", 1), "label"),
            DiscoveredObject(ObjectId("trend-log", 1), "log"),
            DiscoveredObject(ObjectId("positive-integer-value", 3), "count"),
        ),
    )
    model = draft_model(device)
    loaded = load_model_text(dump_model_yaml(model), "draft.yaml")
    assert loaded == model
    ids = [p.id for p in model.properties]
    assert ids == ["sat", "sat_2", "p_1st_setpoint", "binary_output_1", "label", "mode", "count"]
    sat = model.property("sat")
    assert sat is not None
    assert sat.schema.unit == "°C"
    assert sat.access is Access.READ
    assert sat.title == "Supply air temp"
    sat2 = model.property("sat_2")
    assert sat2 is not None
    assert sat2.schema.unit == "furlongs"
    mode = model.property("mode")
    assert mode is not None
    assert [m.label for m in mode.schema.enum] == ["Off", "state 2", "On"]
    binding = model.bindings.bacnet
    assert binding is not None
    assert binding.device_instance == 1001
    by_prop = {p.property: p for p in binding.points}
    assert by_prop["p_1st_setpoint"].write_priority == 16
    assert by_prop["sat"].write_priority is None
    assert model.name == "discovered.bacnet/device-1001"
    assert model.vendor == "Acme"


# --------------------------------------------------------------------------- fuzz

_RAW = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(Real),
    st.integers(0, 2**32 - 1).map(Unsigned),
    st.integers(-(2**31), 2**31 - 1).map(Integer),
    st.sampled_from(["active", "inactive"]).map(BinaryPV),
    st.booleans().map(Boolean),
    st.text(max_size=20).map(CharacterString),
    st.just(Null(())),
    st.lists(st.integers(0, 1), max_size=6).map(StatusFlags),
    st.lists(st.floats(), max_size=3),
    st.none(),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_SCHEMAS = st.sampled_from(
    [
        FLOAT,
        INT,
        BOOL,
        TEXT,
        MODES,
        NAMED,
        FLAGS,
        DataSchema(DataType.INT64),
        DataSchema(DataType.TIMESTAMP),
        DataSchema(DataType.ARRAY, items=FLOAT),
        DataSchema(DataType.STRUCT, fields=(Field("x", INT),)),
    ]
)
_OBJECT_TYPES = st.sampled_from(
    [
        "analog-input",
        "analog-value",
        "binary-value",
        "multi-state-value",
        "large-analog-value",
        "integer-value",
        "characterstring-value",
        "accumulator",
    ]
)
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)


@settings(max_examples=400, deadline=None)
@given(_RAW, _SCHEMAS)
def test_fuzz_reading_maps_or_raises_our_error(raw: Any, schema: DataSchema) -> None:
    with contextlib.suppress(BacnetMappingError):
        to_model_value(raw, schema, "p")


@settings(max_examples=400, deadline=None)
@given(_VALUES, _SCHEMAS, _OBJECT_TYPES)
def test_fuzz_writing_maps_or_raises_our_error(value: Any, schema: DataSchema, kind: str) -> None:
    try:
        out = to_bacnet_value(value, schema, kind, "p")
    except BacnetMappingError:
        return
    if value is None:
        assert isinstance(out, Null)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=30), st.integers(), st.none()))
def test_fuzz_identifiers_parse_or_raise_our_error(text: Any) -> None:
    for parse in (parse_object_id, parse_property_ref):
        with contextlib.suppress(BacnetError):
            parse(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-2, 3), max_size=8) | st.none(), st.text(max_size=20) | st.none())
def test_fuzz_quality_always_answers(flags: list[int] | None, reliability: str | None) -> None:
    quality, reason = quality_of(flags, reliability)
    assert isinstance(quality, Quality)
    assert (quality is Quality.GOOD) == (reason == "")
