"""Tests of the compiled telemetry validator: hand-written vectors and property tests."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from thing_models.errors import TelemetryValidationError, ThingModelError
from thing_models.model import (
    INT_RANGES,
    CallType,
    DataSchema,
    DataType,
    EnumValue,
    Event,
    EventLevel,
    Field,
    Property,
    SemVer,
    Service,
    ThingModel,
)
from thing_models.telemetry import (
    FLOAT32_MAX,
    FLOAT64_MAX,
    ISSUE_CODES,
    MAX_ITEM_ISSUES,
    Issue,
    ModelValidator,
    ValidationResult,
    compile_validator,
)

S = DataSchema
T = DataType
PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def model_of(*props: tuple[str, DataSchema], **kwargs: Any) -> ThingModel:
    return ThingModel(
        name="com.example.test/device",
        version=SemVer(1, 0, 0),
        properties=tuple(Property(pid, schema) for pid, schema in props),
        **kwargs,
    )


def one(schema: DataSchema) -> ModelValidator:
    """A validator of a model with the single property ``p``."""
    return compile_validator(model_of(("p", schema)))


def codes(issues: list[Issue]) -> list[tuple[str, str]]:
    return [(i.path, i.code) for i in issues]


def assert_one(schema: DataSchema, value: Any, code: str | None, path: str = "p") -> None:
    """``value`` of property ``p`` is valid (``code`` None) or has an issue ``code`` at ``path``;
    check_value and check_properties agree."""
    validator = one(schema)
    single = validator.check_value("p", value)
    report = validator.check_properties({"p": value})
    if code is None:
        assert single is None, single
        assert report == []
    else:
        assert single is not None
        assert single in report
        assert (path, code) in codes(report), report
        for issue in report:
            assert issue.code in ISSUE_CODES
            assert issue.message


# --------------------------------------------------------------------------- vectors: scalars


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (True, None),
        (False, None),
        (1, "type"),
        (0, "type"),
        (1.0, "type"),
        ("true", "type"),
        (None, "type"),
        ([True], "type"),
    ],
)
def test_bool_is_a_real_bool(value: Any, code: str | None) -> None:
    assert_one(S(T.BOOL), value, code)


def test_bool_issue_hints_at_zero_one() -> None:
    issue = one(S(T.BOOL)).check_value("p", 1)
    assert issue is not None
    assert "integer 1" in issue.message
    assert "false/true" in issue.message


@pytest.mark.parametrize(
    ("kind", "value", "code"),
    [
        (T.INT32, 0, None),
        (T.INT32, 2**31 - 1, None),
        (T.INT32, -(2**31), None),
        (T.INT32, 2**31, "range"),
        (T.INT32, -(2**31) - 1, "range"),
        (T.INT64, 2**63 - 1, None),
        (T.INT64, -(2**63), None),
        (T.INT64, 2**63, "range"),
        (T.INT64, -(2**63) - 1, "range"),
        (T.INT32, True, "type"),
        (T.INT32, False, "type"),
        (T.INT32, 1.0, "type"),
        (T.INT64, 2.5, "type"),
        (T.INT32, "1", "type"),
        (T.INT32, None, "type"),
        (T.INT32, float("nan"), "type"),
        (T.TIMESTAMP, 0, None),
        (T.TIMESTAMP, 1_718_000_000_000, None),
        (T.TIMESTAMP, -1, "range"),
        (T.TIMESTAMP, 2**63, "range"),
        (T.TIMESTAMP, 1.7e12, "type"),
        (T.TIMESTAMP, "2024-06-10T00:00:00Z", "type"),
    ],
)
def test_integer_types(kind: DataType, value: Any, code: str | None) -> None:
    assert_one(S(kind), value, code)


def test_integral_float_for_an_integer_is_rejected_with_a_hint() -> None:
    issue = one(S(T.INT32)).check_value("p", 1.0)
    assert issue is not None
    assert issue.code == "type"
    assert "without a fraction" in issue.message


@pytest.mark.parametrize(
    ("kind", "value", "code"),
    [
        (T.FLOAT, 0.0, None),
        (T.FLOAT, 3, None),
        (T.FLOAT, -2.5, None),
        (T.FLOAT, FLOAT32_MAX, None),
        (T.FLOAT, -FLOAT32_MAX, None),
        (T.FLOAT, 1e39, "range"),
        (T.FLOAT, -1e39, "range"),
        (T.DOUBLE, 1e39, None),
        (T.DOUBLE, FLOAT64_MAX, None),
        (T.DOUBLE, 10**400, "range"),
        (T.DOUBLE, float("nan"), "range"),
        (T.DOUBLE, float("inf"), "range"),
        (T.FLOAT, float("-inf"), "range"),
        (T.FLOAT, True, "type"),
        (T.DOUBLE, "1.5", "type"),
        (T.DOUBLE, None, "type"),
        (T.DOUBLE, {"v": 1.0}, "type"),
    ],
)
def test_float_types(kind: DataType, value: Any, code: str | None) -> None:
    assert_one(S(kind), value, code)


def test_non_finite_message_says_why() -> None:
    issue = one(S(T.DOUBLE)).check_value("p", float("nan"))
    assert issue is not None
    assert "not finite" in issue.message


@pytest.mark.parametrize("kind", [T.INT32, T.INT64, T.FLOAT, T.DOUBLE, T.TIMESTAMP])
@pytest.mark.parametrize(
    ("value", "code"),
    [(10, None), (20, None), (15, None), (9, "range"), (21, "range")],
)
def test_minimum_maximum_inclusive(kind: DataType, value: int, code: str | None) -> None:
    assert_one(S(kind, minimum=10, maximum=20), value, code)


@pytest.mark.parametrize(
    ("value", "code"),
    [(-0.5, None), (0.5, None), (-0.5000001, "range"), (0.5000001, "range")],
)
def test_float_bounds_just_outside(value: float, code: str | None) -> None:
    assert_one(S(T.FLOAT, minimum=-0.5, maximum=0.5), value, code)


def test_range_messages_name_value_and_bound() -> None:
    validator = one(S(T.INT32, minimum=0, maximum=100))
    above = validator.check_value("p", 101)
    below = validator.check_value("p", -1)
    assert above is not None
    assert below is not None
    assert "101" in above.message
    assert "maximum 100" in above.message
    assert "-1" in below.message
    assert "minimum 0" in below.message
    overflow = one(S(T.INT32)).check_value("p", 2**31)
    assert overflow is not None
    assert "int32 range" in overflow.message


@pytest.mark.parametrize(
    ("schema", "value", "code"),
    [
        (S(T.INT32, minimum=5, maximum=100, step=5), 5, None),
        (S(T.INT32, minimum=5, maximum=100, step=5), 100, None),
        (S(T.INT32, minimum=5, maximum=100, step=5), 7, "step"),
        (S(T.INT32, minimum=1, step=2), 4, "step"),
        (S(T.INT32, step=3), -9, None),
        (S(T.INT32, step=3), -8, "step"),
        (S(T.INT32, minimum=0, step=0.5), 3, None),
        (S(T.INT32, minimum=0.5, step=1), 3, "step"),
        (S(T.FLOAT, minimum=0, maximum=500, step=0.1), 230.1, None),
        (S(T.FLOAT, minimum=0, maximum=500, step=0.1), 0.3, None),
        (S(T.FLOAT, minimum=0, maximum=500, step=0.1), 230, None),
        (S(T.FLOAT, minimum=0, maximum=500, step=0.1), 230.15, "step"),
        (S(T.FLOAT, minimum=-1, maximum=1, step=0.001), -0.999, None),
        (S(T.FLOAT, minimum=-1, maximum=1, step=0.001), 0.0005, "step"),
        (S(T.FLOAT, step=0.25), -1.75, None),
        (S(T.FLOAT, step=0.25), 1.3, "step"),
        (S(T.DOUBLE, minimum=0.05, step=0.1), 0.35, None),
        (S(T.DOUBLE, minimum=0.05, step=0.1), 0.3, "step"),
        # A float32 reading of 230.1 is 230.10000610351562: within a float's precision.
        (S(T.FLOAT, minimum=0, step=0.1), 230.10000610351562, None),
        (S(T.DOUBLE, minimum=0, step=0.1), 230.10000610351562, "step"),
        # Out of range is reported as range, not step.
        (S(T.FLOAT, minimum=0, maximum=1, step=0.1), 1.05, "range"),
        # Unusable steps are ignored.
        (S(T.FLOAT, step=0), 0.123, None),
        (S(T.FLOAT, step=-0.1), 0.123, None),
        (S(T.FLOAT, step=float("nan")), 0.123, None),
    ],
)
def test_step(schema: DataSchema, value: Any, code: str | None) -> None:
    assert_one(schema, value, code)


@pytest.mark.parametrize(
    ("schema", "value", "code"),
    [
        (S(T.TEXT), "", None),
        (S(T.TEXT), "x" * 100_000, None),
        (S(T.TEXT, max_length=3), "abc", None),
        (S(T.TEXT, max_length=3), "abcd", "length"),
        (S(T.TEXT, max_length=0), "", None),
        (S(T.TEXT, max_length=3), "水水水", None),
        (S(T.TEXT), 1, "type"),
        (S(T.TEXT), None, "type"),
        (S(T.TEXT), b"bytes", "type"),
        (S(T.TEXT), ["a"], "type"),
    ],
)
def test_text(schema: DataSchema, value: Any, code: str | None) -> None:
    assert_one(schema, value, code)


def test_huge_text_message_is_short() -> None:
    issue = one(S(T.TEXT, max_length=10)).check_value("p", "y" * 1_000_000)
    assert issue is not None
    assert issue.code == "length"
    assert len(str(issue)) < 300


INT_ENUM = S(T.ENUM, enum=(EnumValue(0, "off"), EnumValue(1, "on"), EnumValue(7, "fault")))
STR_ENUM = S(T.ENUM, enum=(EnumValue("eco", "Eco"), EnumValue("boost", "Boost")))
MIXED_ENUM = S(T.ENUM, enum=(EnumValue(1, "one"), EnumValue("two", "Two")))


@pytest.mark.parametrize(
    ("schema", "value", "code"),
    [
        (INT_ENUM, 0, None),
        (INT_ENUM, 7, None),
        (INT_ENUM, 2, "enum"),
        (INT_ENUM, True, "enum"),
        (INT_ENUM, False, "enum"),
        (INT_ENUM, 1.0, "enum"),
        (INT_ENUM, "1", "enum"),
        (INT_ENUM, None, "enum"),
        (INT_ENUM, [1], "enum"),
        (STR_ENUM, "eco", None),
        (STR_ENUM, "ECO", "enum"),
        (STR_ENUM, 0, "enum"),
        (MIXED_ENUM, 1, None),
        (MIXED_ENUM, "two", None),
        (MIXED_ENUM, "1", "enum"),
        (MIXED_ENUM, 2, "enum"),
    ],
)
def test_enum(schema: DataSchema, value: Any, code: str | None) -> None:
    assert_one(schema, value, code)


def test_enum_message_lists_members() -> None:
    issue = one(STR_ENUM).check_value("p", "turbo")
    assert issue is not None
    assert "'turbo'" in issue.message
    assert "'eco', 'boost'" in issue.message


def test_int_subclasses_are_accepted_by_the_slow_path() -> None:
    from enum import IntEnum, StrEnum

    class Mode(IntEnum):
        ON = 1

    class Name(StrEnum):
        ECO = "eco"

    assert one(S(T.INT32, maximum=5)).check_value("p", Mode.ON) is None
    assert one(INT_ENUM).check_value("p", Mode.ON) is None
    assert one(STR_ENUM).check_value("p", Name.ECO) is None
    assert one(S(T.TEXT, max_length=3)).check_value("p", Name.ECO) is None


# --------------------------------------------------------------------------- structs and arrays

POSITION = S(
    T.STRUCT,
    fields=(
        Field("x", S(T.DOUBLE, minimum=-180, maximum=180)),
        Field("y", S(T.DOUBLE, minimum=-90, maximum=90)),
        Field("label", S(T.TEXT, max_length=8), required=False),
    ),
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"x": 1.0, "y": 2}, []),
        ({"x": 1.0, "y": 2, "label": "home"}, []),
        ({"x": 1.0}, [("p.y", "missing")]),
        ({}, [("p.x", "missing"), ("p.y", "missing")]),
        ({"x": 1.0, "y": 2, "z": 3}, [("p.z", "unknown")]),
        ({"x": 200, "y": 2}, [("p.x", "range")]),
        ({"x": "1", "y": True}, [("p.x", "type"), ("p.y", "type")]),
        ({"x": 1, "y": 2, "label": "far too long"}, [("p.label", "length")]),
        ([1, 2], [("p", "type")]),
        (None, [("p", "type")]),
        ("x=1", [("p", "type")]),
    ],
)
def test_struct(value: Any, expected: list[tuple[str, str]]) -> None:
    assert sorted(codes(one(POSITION).check_properties({"p": value}))) == sorted(expected)


def test_struct_with_non_str_keys() -> None:
    issues = one(POSITION).check_properties({"p": {"x": 1, "y": 2, 3: 4, None: 5}})
    assert [i.code for i in issues] == ["unknown", "unknown"]
    assert all(i.path.startswith("p.<") for i in issues)


def test_struct_accepts_any_mapping() -> None:
    from types import MappingProxyType

    assert one(POSITION).check_value("p", MappingProxyType({"x": 0, "y": 0})) is None


READINGS = S(T.ARRAY, items=S(T.INT32, minimum=0, maximum=100), max_items=4)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([], []),
        ([0, 100, 50, 1], []),
        ((1, 2), []),
        ([0, 1, 2, 3, 4], [("p", "size")]),
        ([0, 101, 2, "3"], [("p[1]", "range"), ("p[3]", "type")]),
        ([1, True], [("p[1]", "type")]),
        ({"0": 1}, [("p", "type")]),
        ("0,1", [("p", "type")]),
        (None, [("p", "type")]),
    ],
)
def test_array(value: Any, expected: list[tuple[str, str]]) -> None:
    assert codes(one(READINGS).check_properties({"p": value})) == expected


def test_nested_struct_and_array_paths() -> None:
    track = S(
        T.STRUCT,
        fields=(
            Field("points", S(T.ARRAY, items=POSITION, max_items=3)),
            Field("meta", S(T.STRUCT, fields=(Field("tags", S(T.ARRAY, items=S(T.TEXT))),))),
        ),
    )
    value = {
        "points": [{"x": 0, "y": 0}, {"x": 0, "y": 91}, {"y": 0}],
        "meta": {"tags": ["a", 2]},
    }
    issues = compile_validator(model_of(("track", track))).check_properties({"track": value})
    assert sorted(codes(issues)) == [
        ("track.meta.tags[1]", "type"),
        ("track.points[1].y", "range"),
        ("track.points[2].x", "missing"),
    ]


def test_array_of_arrays_and_untyped_items() -> None:
    matrix = S(T.ARRAY, items=S(T.ARRAY, items=S(T.BOOL), max_items=2))
    assert codes(one(matrix).check_properties({"p": [[True], [False, 1], [True] * 3]})) == [
        ("p[1][1]", "type"),
        ("p[2]", "size"),
    ]
    anything = S(T.ARRAY)
    assert one(anything).check_value("p", [1, "a", None, {"b": []}]) is None
    assert one(anything).check_value("p", "not a list") is not None


def test_many_bad_items_are_truncated() -> None:
    issues = one(S(T.ARRAY, items=S(T.BOOL))).check_properties({"p": [0] * 10_000})
    assert len(issues) == MAX_ITEM_ISSUES + 1
    assert issues[-1].code == "truncated"
    assert issues[-1].path == "p"
    assert issues[0].path == "p[0]"


# --------------------------------------------------------------------------- reports


METER = model_of(
    ("voltage", S(T.FLOAT, minimum=0, maximum=500, step=0.1)),
    ("relay", S(T.BOOL)),
    ("pump1:speed", S(T.INT32, minimum=0, maximum=3000)),
    ("pos", POSITION),
)


def test_report_of_several_properties() -> None:
    validator = compile_validator(METER)
    assert validator.check_properties({}) == []
    assert validator.check_properties({"voltage": 230.1, "relay": True, "pump1:speed": 1500}) == []
    report: dict[Any, Any] = {
        "voltage": 600,
        "relay": "on",
        "pump1:speed": 10,
        "pump2:speed": 1,
        5: 1,
    }
    issues = validator.check_properties(report)
    assert codes(issues) == [
        ("voltage", "range"),
        ("relay", "type"),
        ("pump2:speed", "unknown"),
        ("<integer 5>", "unknown"),
    ]
    assert "pump2:speed" in issues[2].message
    assert METER.name in issues[2].message


@pytest.mark.parametrize("params", [None, [], "voltage=1", 3, [("voltage", 1.0)]])
def test_report_that_is_not_an_object(params: Any) -> None:
    assert codes(compile_validator(METER).check_properties(params)) == [("", "type")]


def test_report_as_a_non_dict_mapping() -> None:
    from types import MappingProxyType

    validator = compile_validator(METER)
    assert validator.check_properties(MappingProxyType({"relay": False})) == []
    assert codes(validator.check_properties(MappingProxyType({"relay": 0}))) == [("relay", "type")]


def test_check_value_unknown_and_hostile_ids() -> None:
    validator = compile_validator(METER)
    for prop_id in ["nope", "", None, ["voltage"], {"a": 1}, 3.5]:
        issue = validator.check_value(prop_id, 1)  # type: ignore[arg-type]
        assert issue is not None
        assert issue.code == "unknown"


def test_strict_raises_lenient_flags() -> None:
    validator = compile_validator(METER)
    params = {"voltage": 600, "relay": True}
    with pytest.raises(TelemetryValidationError) as caught:
        validator.validate_properties(params)
    assert isinstance(caught.value, ThingModelError)
    assert codes(list(caught.value.issues)) == [("voltage", "range")]
    assert "voltage" in str(caught.value)
    result = validator.validate_properties(params, strict=False)
    assert isinstance(result, ValidationResult)
    assert result.accepted is params
    assert not result.ok
    assert codes(list(result.issues)) == [("voltage", "range")]
    ok = validator.validate_properties({"relay": False})
    assert ok.ok
    assert ok.issues == ()
    assert ok.accepted == {"relay": False}
    junk = validator.validate_properties(None, strict=False)  # type: ignore[arg-type]
    assert junk.accepted == {}
    assert codes(list(junk.issues)) == [("", "type")]


def test_issue_str() -> None:
    assert str(Issue("pos.x", "range", "integer 200 is above the maximum 180")) == (
        "pos.x: integer 200 is above the maximum 180 [range]"
    )
    assert str(Issue("", "type", "expected an object")) == "<payload>: expected an object [type]"


def test_duplicate_property_ids_first_wins() -> None:
    model = model_of(("p", S(T.BOOL)), ("p", S(T.TEXT)))
    assert compile_validator(model).check_value("p", True) is None


# --------------------------------------------------------------------------- events and services

DEVICE = model_of(
    ("relay", S(T.BOOL)),
    events=(
        Event(
            "overload",
            level=EventLevel.ALERT,
            outputs=(
                Field("current", S(T.FLOAT, minimum=0)),
                Field("phase", S(T.ENUM, enum=(EnumValue("a", "A"), EnumValue("b", "B")))),
                Field("note", S(T.TEXT), required=False),
            ),
        ),
        Event("heartbeat"),
    ),
    services=(
        Service(
            "set_limit",
            call_type=CallType.SYNC,
            inputs=(Field("amps", S(T.INT32, minimum=1, maximum=63)),),
            outputs=(Field("applied", S(T.BOOL)), Field("previous", S(T.INT32), required=False)),
        ),
        Service("reboot"),
    ),
)


def test_events() -> None:
    validator = compile_validator(DEVICE)
    assert validator.check_event("overload", {"current": 40.5, "phase": "a"}) == []
    assert validator.check_event("heartbeat", {}) == []
    assert codes(validator.check_event("overload", {"current": -1, "phase": "c", "x": 1})) == [
        ("current", "range"),
        ("phase", "enum"),
        ("x", "unknown"),
    ]
    assert codes(validator.check_event("overload", {"current": 1.0})) == [("phase", "missing")]
    assert codes(validator.check_event("overload", None)) == [("", "type")]  # type: ignore[arg-type]
    unknown = validator.check_event("fire", {})
    assert codes(unknown) == [("", "unknown")]
    assert "fire" in unknown[0].message
    assert codes(validator.check_event(None, {})) == [("", "unknown")]  # type: ignore[arg-type]
    with pytest.raises(TelemetryValidationError):
        validator.validate_event("overload", {"current": 1.0})
    lenient = validator.validate_event("overload", {"current": 1.0}, strict=False)
    assert codes(list(lenient.issues)) == [("phase", "missing")]
    assert validator.validate_event("heartbeat", {}).ok


def test_services() -> None:
    validator = compile_validator(DEVICE)
    assert validator.check_service_input("set_limit", {"amps": 16}) == []
    assert codes(validator.check_service_input("set_limit", {})) == [("amps", "missing")]
    assert codes(validator.check_service_input("set_limit", {"amps": 64})) == [("amps", "range")]
    assert validator.check_service_output("set_limit", {"applied": True}) == []
    assert codes(validator.check_service_output("set_limit", {"previous": 10})) == [
        ("applied", "missing")
    ]
    assert validator.check_service_input("reboot", {}) == []
    assert codes(validator.check_service_input("reboot", {"now": True})) == [("now", "unknown")]
    assert codes(validator.check_service_output("nope", {})) == [("", "unknown")]
    with pytest.raises(TelemetryValidationError):
        validator.validate_service_input("set_limit", {"amps": 0})
    with pytest.raises(TelemetryValidationError):
        validator.validate_service_output("set_limit", {})
    result = validator.validate_service_output("set_limit", {}, strict=False)
    assert result.accepted == {}
    assert codes(list(result.issues)) == [("applied", "missing")]
    assert validator.validate_service_input("set_limit", {"amps": 1}).ok


# --------------------------------------------------------------------------- hostile input


def test_deep_nesting_huge_numbers_and_cycles() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    cyclic_dict: dict[str, Any] = {}
    cyclic_dict["x"] = cyclic_dict
    validator = compile_validator(METER)
    report = {
        "voltage": deep,
        "relay": 10**100_000,
        "pump1:speed": -(10**5000),
        "pos": cyclic_dict,
        "x" * 1_000_000: cyclic,
    }
    issues = validator.check_properties(report)
    assert codes(issues)[:3] == [("voltage", "type"), ("relay", "type"), ("pump1:speed", "range")]
    assert ("pos.x", "type") in codes(issues)
    assert ("pos.y", "missing") in codes(issues)
    assert issues[-1].code == "unknown"
    assert all(len(str(issue)) < 400 for issue in issues)
    with pytest.raises(TelemetryValidationError):
        validator.validate_properties(report)


def test_strange_objects_become_issues() -> None:
    validator = compile_validator(METER)
    for value in [object(), b"1", bytearray(b"1"), {1, 2}, 1j, math.pi * 1j, Ellipsis]:
        issues = validator.check_properties({"voltage": value, "relay": value, "pos": value})
        assert [i.code for i in issues] == ["type", "type", "type"]


# --------------------------------------------------------------------------- property tests

SMALL = 10**6
DECIMAL_STEPS = (0.001, 0.01, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@st.composite
def numeric_schemas(draw: st.DrawFn) -> DataSchema:
    kind = draw(st.sampled_from([T.INT32, T.INT64, T.FLOAT, T.DOUBLE, T.TIMESTAMP]))
    smallest = 0 if kind is T.TIMESTAMP else -SMALL
    low = draw(st.none() | st.integers(smallest, SMALL))
    high = draw(st.none() | st.integers(smallest, SMALL))
    if low is not None and high is not None and low > high:
        low, high = high, low
    step: int | float | None = None
    high_: int | float | None = high
    if draw(st.booleans()):
        step = draw(st.integers(1, 50)) if kind.is_integer else draw(st.sampled_from(DECIMAL_STEPS))
        if low is not None and high is not None and low + step > high:
            high_ = low + step * draw(st.integers(1, 20))
    return S(kind, minimum=low, maximum=high_, step=step)


enum_schemas = st.one_of(
    st.lists(st.integers(-1000, 1000), min_size=1, max_size=6, unique=True),
    st.lists(st.text(max_size=8), min_size=1, max_size=6, unique=True),
).map(lambda values: S(T.ENUM, enum=tuple(EnumValue(v, str(v)) for v in values)))

leaf_schemas = st.one_of(
    st.just(S(T.BOOL)),
    numeric_schemas(),
    st.builds(lambda n: S(T.TEXT, max_length=n), st.none() | st.integers(0, 20)),
    enum_schemas,
)

identifiers = st.from_regex(r"[a-z_][a-z0-9_]{0,7}", fullmatch=True)


def _struct(children: st.SearchStrategy[DataSchema]) -> st.SearchStrategy[DataSchema]:
    fields = st.lists(
        st.tuples(identifiers, children, st.booleans()),
        max_size=4,
        unique_by=lambda t: t[0],
    )
    return fields.map(
        lambda items: S(
            T.STRUCT, fields=tuple(Field(fid, schema, required=req) for fid, schema, req in items)
        )
    )


def _array(children: st.SearchStrategy[DataSchema]) -> st.SearchStrategy[DataSchema]:
    return st.builds(
        lambda items, n: S(T.ARRAY, items=items, max_items=n),
        children,
        st.none() | st.integers(1, 5),
    )


schemas = st.recursive(
    leaf_schemas, lambda children: _struct(children) | _array(children), max_leaves=8
)


def _integer_range(schema: DataSchema) -> tuple[int, int]:
    low, high = INT_RANGES[schema.type]
    if schema.minimum is not None:
        low = max(low, math.ceil(schema.minimum))
    if schema.maximum is not None:
        high = min(high, math.floor(schema.maximum))
    return low, high


def values_for(schema: DataSchema) -> st.SearchStrategy[Any]:
    """Values that satisfy ``schema`` (the schemas generated above)."""
    kind = schema.type
    if kind is T.BOOL:
        return st.booleans()
    if kind.is_integer:
        low, high = _integer_range(schema)
        if schema.step is None:
            return st.integers(low, high)
        step = int(schema.step)
        base = int(schema.minimum) if schema.minimum is not None else 0
        first, last = -((base - low) // step), (high - base) // step
        return st.integers(first, last).map(lambda k: base + k * step)
    if kind in (T.FLOAT, T.DOUBLE):
        limit = FLOAT32_MAX if kind is T.FLOAT else FLOAT64_MAX
        low_f = -limit if schema.minimum is None else float(schema.minimum)
        high_f = limit if schema.maximum is None else float(schema.maximum)
        if schema.step is None:
            return st.floats(low_f, high_f, allow_nan=False, allow_infinity=False) | st.integers(
                math.ceil(max(low_f, -1e18)), math.floor(min(high_f, 1e18))
            )
        step_f = float(schema.step)
        base_f = float(schema.minimum) if schema.minimum is not None else 0.0
        first = math.ceil((max(low_f, -1e7) - base_f) / step_f)
        last = math.floor((min(high_f, 1e7) - base_f) / step_f)
        # As a device's decimal text gives them: 230.1, not 0 + 2301 * 0.1.
        return (
            st.integers(first, last)
            .map(lambda k: round(base_f + k * step_f, 6))
            .filter(lambda v: low_f <= v <= high_f)
        )
    if kind is T.TEXT:
        return st.text(max_size=schema.max_length if schema.max_length is not None else 30)
    if kind is T.ENUM:
        return st.sampled_from([member.value for member in schema.enum])
    if kind is T.STRUCT:
        return st.fixed_dictionaries(
            {f.id: values_for(f.schema) for f in schema.fields if f.required},
            optional={f.id: values_for(f.schema) for f in schema.fields if not f.required},
        )
    if kind is T.ARRAY:
        assert schema.items is not None
        size = schema.max_items if schema.max_items is not None else 5
        return st.lists(values_for(schema.items), max_size=size)
    raise AssertionError(kind)


@PROPERTY_SETTINGS
@given(st.data(), schemas)
def test_values_generated_from_a_schema_pass(data: st.DataObject, schema: DataSchema) -> None:
    value = data.draw(values_for(schema))
    validator = one(schema)
    assert validator.check_value("p", value) is None
    assert validator.check_properties({"p": value}) == []
    assert validator.validate_properties({"p": value}).ok


# Mutations: (value, path below the property, codes any of which is right).
Mutation = tuple[Any, str, frozenset[str]]
WRONG_TYPE: dict[DataType, list[Any]] = {
    T.BOOL: [0, 1, 1.0, "true", None, [], {}],
    T.INT32: [1.0, 1.5, "1", True, None, [1], {}],
    T.INT64: [2.0, "1", False, None, [], {"v": 1}],
    T.TIMESTAMP: [1.7e12, "2024-01-01", True, None, []],
    T.FLOAT: ["1.0", True, None, [1.0], {}],
    T.DOUBLE: ["nan", False, None, [], {"v": 1.0}],
    T.TEXT: [1, 1.5, True, None, ["a"], {}],
    T.STRUCT: [[], "{}", 1, True, None],
    T.ARRAY: [{}, "[]", 1, None, True],
}


def _wrong_enum(schema: DataSchema) -> st.SearchStrategy[Any]:
    members = [m.value for m in schema.enum]
    return st.one_of(
        st.integers(), st.text(max_size=8), st.booleans(), st.floats(), st.none()
    ).filter(lambda v: not any(type(v) is type(m) and v == m for m in members))


def _out_of_range(schema: DataSchema) -> list[Any]:
    if schema.type is T.TEXT and schema.max_length is not None:
        return ["x" * (schema.max_length + 1)]
    if not (schema.type.is_numeric or schema.type is T.TIMESTAMP):
        return []
    out: list[Any] = []
    if schema.type.is_integer:
        low, high = INT_RANGES[schema.type]
        out += [high + 1, low - 1]
    else:
        limit = FLOAT32_MAX if schema.type is T.FLOAT else FLOAT64_MAX
        out += [float("inf"), float("-inf"), float("nan"), 10 * limit, -10 * limit]
    if schema.maximum is not None:
        out.append(schema.maximum + 1000)
    if schema.minimum is not None:
        out.append(schema.minimum - 1000)
    return out


@st.composite
def mutated(draw: st.DrawFn, schema: DataSchema) -> Mutation:
    """A value that breaks ``schema`` in one place, that place's path and the expected codes."""
    kind = schema.type
    options = ["type"]
    if _out_of_range(schema):
        options.append("range")
    if schema.step is not None and (not kind.is_integer or schema.step > 1):
        options.append("step")
    if kind is T.STRUCT:
        if any(f.required for f in schema.fields):
            options.append("missing")
        options.append("unknown")
        if schema.fields:
            options.append("descend")
    if kind is T.ARRAY and schema.items is not None:
        options.append("descend")
        if schema.max_items is not None:
            options.append("size")
    choice = draw(st.sampled_from(options))
    if choice == "type":
        if kind is T.ENUM:
            return draw(_wrong_enum(schema)), "", frozenset({"enum"})
        return draw(st.sampled_from(WRONG_TYPE[kind])), "", frozenset({"type"})
    if choice == "range":
        value = draw(st.sampled_from(_out_of_range(schema)))
        return value, "", frozenset({"length"} if kind is T.TEXT else {"range"})
    if choice == "step":
        assert schema.step is not None
        valid = draw(values_for(schema))
        delta = 1 if kind.is_integer else schema.step / 2
        # A float (float32) cannot resolve a step finer than its precision at that magnitude.
        assume(kind is not T.FLOAT or abs(valid) * 2.0**-20 < delta)
        low, high = _integer_range(schema) if kind.is_integer else (schema.minimum, schema.maximum)
        candidates = [
            v
            for v in (valid + delta, valid - delta)
            if (low is None or v >= low) and (high is None or v <= high)
        ]
        assume(candidates)
        return draw(st.sampled_from(candidates)), "", frozenset({"step"})
    if choice == "size":
        assert schema.items is not None
        assert schema.max_items is not None
        items = draw(
            st.lists(
                values_for(schema.items),
                min_size=schema.max_items + 1,
                max_size=schema.max_items + 3,
            )
        )
        return items, "", frozenset({"size"})
    if kind is T.STRUCT:
        valid = draw(values_for(schema))
        if choice == "missing":
            fid = draw(st.sampled_from([f.id for f in schema.fields if f.required]))
            del valid[fid]
            return valid, f".{fid}", frozenset({"missing"})
        if choice == "unknown":
            extra = draw(identifiers.filter(lambda i: schema.field(i) is None))
            valid[extra] = draw(st.integers())
            return valid, f".{extra}", frozenset({"unknown"})
        target = draw(st.sampled_from(schema.fields))
        inner, path, expected = draw(mutated(target.schema))
        valid[target.id] = inner
        return valid, f".{target.id}{path}", expected
    assert kind is T.ARRAY
    assert schema.items is not None
    size = schema.max_items if schema.max_items is not None else 5
    items = draw(st.lists(values_for(schema.items), min_size=1, max_size=size))
    index = draw(st.integers(0, len(items) - 1))
    inner, path, expected = draw(mutated(schema.items))
    items[index] = inner
    return items, f"[{index}]{path}", expected


@PROPERTY_SETTINGS
@given(st.data(), schemas)
def test_mutated_values_are_flagged_at_their_path(data: st.DataObject, schema: DataSchema) -> None:
    value, path, expected = data.draw(mutated(schema))
    validator = one(schema)
    issues = validator.check_properties({"p": value})
    assert any(i.path == "p" + path and i.code in expected for i in issues), (path, issues)
    assert validator.check_value("p", value) is not None
    with pytest.raises(TelemetryValidationError):
        validator.validate_properties({"p": value})
    lenient = validator.validate_properties({"p": value}, strict=False)
    assert list(lenient.issues) == issues


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.integers() | st.none(), children, max_size=4)
    ),
    max_leaves=20,
)


@PROPERTY_SETTINGS
@given(schemas, json_like, st.sampled_from(["p", "q", "p:x"]))
def test_arbitrary_input_never_crashes(schema: DataSchema, value: Any, prop_id: str) -> None:
    validator = compile_validator(
        model_of(
            ("p", schema),
            events=(Event("e", outputs=(Field("p", schema),)),),
            services=(Service("s", inputs=(Field("p", schema),), outputs=(Field("p", schema),)),),
        )
    )
    for params in (value, {prop_id: value}):
        issues: tuple[Any, ...] = ()
        try:
            assert validator.validate_properties(params).ok
        except TelemetryValidationError as exc:
            issues = exc.issues
            assert issues
        assert all(isinstance(i, Issue) and i.code in ISSUE_CODES for i in issues)
        lenient = validator.validate_properties(params, strict=False)
        assert isinstance(lenient.accepted, Mapping)
        for found in (
            validator.check_event("e", params),
            validator.check_service_input("s", params),
            validator.check_service_output("s", params),
        ):
            assert all(isinstance(i, Issue) and i.code in ISSUE_CODES for i in found)
    issue = validator.check_value(prop_id, value)
    assert issue is None or issue.code in ISSUE_CODES
    assert (issue is None) == (validator.check_properties({prop_id: value}) == [])
