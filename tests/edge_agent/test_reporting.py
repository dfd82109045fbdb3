"""Report by exception: policy precedence, deadband/heartbeat/quality filtering, and report
building with the compiled model validator (bad values reported as bad, never dropped)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.reporting import (
    DIAGNOSTIC_EVENT,
    Reading,
    ReportBuilder,
    ReportFilter,
    policies_for_points,
    resolve_policy,
    worst_quality,
)
from protocol_adapters.modbus.codec import Decoded
from thing_models.messages import Message, MessageKind, Quality, from_json_dict, to_json_dict
from thing_models.model import (
    DataSchema,
    DataType,
    DeadbandMode,
    EnumValue,
    Event,
    ModbusPoint,
    ModbusTable,
    ModbusType,
    Property,
    ReportGroup,
    Reporting,
    ReportPolicy,
    SemVer,
    ThingModel,
)
from thing_models.telemetry import compile_validator
from thing_models.yaml_format import load_model_file

METER_FILE = Path(__file__).resolve().parents[2] / "examples" / "models" / "energy-meter-3p.yaml"

GOOD, UNCERTAIN, BAD = Quality.GOOD, Quality.UNCERTAIN, Quality.BAD
T0 = 1_700_000_000_000


def on_change(
    deadband: float = 0.0,
    mode: DeadbandMode = DeadbandMode.ABSOLUTE,
    heartbeat: float | None = None,
) -> ReportPolicy:
    return ReportPolicy(
        poll_interval_s=1.0,
        on_change=True,
        deadband=deadband,
        deadband_mode=mode,
        heartbeat_s=heartbeat,
    )


ABS = DeadbandMode.ABSOLUTE
PCT = DeadbandMode.PERCENT

# --------------------------------------------------------------------------- precedence

DEFAULT = ReportPolicy(poll_interval_s=10.0)
FAST = ReportPolicy(poll_interval_s=1.0, on_change=True, deadband=0.5)
OWN = ReportPolicy(poll_interval_s=5.0, heartbeat_s=60.0)
REPORTING = Reporting(default=DEFAULT, groups=(ReportGroup("fast", FAST),))


@pytest.mark.parametrize(
    ("report", "group", "expected"),
    [
        (None, None, DEFAULT),
        (None, "fast", FAST),
        (OWN, None, OWN),
        (OWN, "fast", OWN),  # the point's own report wins over its group
    ],
)
def test_resolve_policy_precedence(
    report: ReportPolicy | None, group: str | None, expected: ReportPolicy
) -> None:
    assert resolve_policy(report, group, REPORTING) == expected


def test_resolve_policy_unknown_group_is_an_error() -> None:
    with pytest.raises(ValueError, match="'slow'"):
        resolve_policy(None, "slow", REPORTING)


def test_policies_for_modbus_points() -> None:
    def point(prop: str, address: int, **kw: Any) -> ModbusPoint:
        return ModbusPoint(prop, ModbusTable.HOLDING_REGISTER, address, ModbusType.UINT16, **kw)

    points = [
        point("a", 0),
        point("b", 1, group="fast"),
        point("c", 2, group="fast", report=OWN),
        point("a", 3, report=OWN),  # bound twice: the first point wins
    ]
    assert policies_for_points(points, REPORTING) == {"a": DEFAULT, "b": FAST, "c": OWN}


# --------------------------------------------------------------------------- the filter

# (policy, last reported value, new value, reported?)
DEADBAND_VECTORS: list[tuple[ReportPolicy, Any, Any, bool]] = [
    # absolute
    (on_change(0.5), 10.0, 10.5, False),  # exactly at the deadband
    (on_change(0.5), 10.0, 9.5, False),
    (on_change(0.5), 10.0, 10.500001, True),  # just over
    (on_change(0.5), 10.0, 9.499999, True),
    (on_change(0.5), 10.0, 10.25, False),
    (on_change(0.1), 20.0, 20.1, False),  # 20.1 - 20.0 is 0.10000000000000142: still "at"
    (on_change(0.1), 20.0, 20.1000001, True),
    (on_change(2), 10, 12, False),  # integers: exact
    (on_change(2), 10, 13, True),
    (on_change(2), 10, 7, True),
    (on_change(0), 10, 10, False),  # deadband 0: any change
    (on_change(0), 10, 11, True),
    (on_change(0), 1.0, 1.0000000000000002, True),
    # percent of the last reported value
    (on_change(1, PCT), 200.0, 202.0, False),  # exactly 1 %
    (on_change(1, PCT), 200.0, 198.0, False),
    (on_change(1, PCT), 200.0, 202.001, True),
    (on_change(1, PCT), -200.0, -202.001, True),  # of |last|
    (on_change(1, PCT), -200.0, -201.0, False),
    (on_change(10, PCT), 50, 55, False),
    (on_change(10, PCT), 50, 56, True),
    (on_change(10, PCT), 0.0, 0.0, False),  # last 0: no base, any change
    (on_change(10, PCT), 0.0, 1e-9, True),
    (on_change(10, PCT), 0, -1, True),
    # type changes and non-numbers
    (on_change(5), 1, 1.0, True),  # int -> float
    (on_change(5), 1, True, True),  # number -> bool
    (on_change(5), None, 1.0, True),  # null -> number
    (on_change(5), "run", "run", False),
    (on_change(5), "run", "stop", True),
    (on_change(5), False, True, True),
    (on_change(5), True, True, False),
    (on_change(5), {"x": 1, "y": 2}, {"x": 1, "y": 2}, False),
    (on_change(5), {"x": 1, "y": 2}, {"x": 1, "y": 3}, True),  # structs: any change
    (on_change(5), [1, 2], [1, 2], False),
    (on_change(5), [1, 2], [1, 2, 3], True),
    (on_change(5), float("nan"), float("nan"), False),
    (on_change(5), 1.0, float("inf"), True),
    (on_change(5), float("inf"), 1.0, True),
]


@pytest.mark.parametrize(("policy", "last", "new", "reported"), DEADBAND_VECTORS)
def test_deadband_vectors(policy: ReportPolicy, last: Any, new: Any, reported: bool) -> None:
    f = ReportFilter()
    assert f.offer("d1", "p", last, GOOD, T0, policy) is True  # the first value, always
    assert f.offer("d1", "p", new, GOOD, T0 + 1000, policy) is reported


def test_deadband_compares_with_last_reported_value_so_drift_adds_up() -> None:
    f, policy = ReportFilter(), on_change(1.0)
    assert f.offer("d", "p", 10.0, GOOD, T0, policy)
    results = [f.offer("d", "p", 10.0 + 0.4 * i, GOOD, T0 + i, policy) for i in range(1, 6)]
    # 10.4, 10.8 within 1.0 of 10.0; 11.2 reported; 11.6, 12.0 within 1.0 of 11.2
    assert results == [False, False, True, False, False]


def test_percent_uses_the_last_reported_value_as_base() -> None:
    f, policy = ReportFilter(), on_change(10, PCT)
    assert f.offer("d", "p", 100, GOOD, T0, policy)
    assert f.offer("d", "p", 111, GOOD, T0 + 1, policy)  # > 10 % of 100
    assert not f.offer("d", "p", 122, GOOD, T0 + 2, policy)  # 11 is not > 10 % of 111 (11.1)
    assert f.offer("d", "p", 123, GOOD, T0 + 3, policy)


def test_first_value_is_always_reported_per_device_and_property() -> None:
    f, policy = ReportFilter(), on_change(100)
    assert f.offer("d1", "p", 1, GOOD, T0, policy)
    assert f.offer("d1", "q", 1, GOOD, T0, policy)
    assert f.offer("d2", "p", 1, GOOD, T0, policy)
    assert not f.offer("d1", "p", 2, GOOD, T0 + 1, policy)
    assert len(f) == 3


def test_every_reading_without_on_change() -> None:
    f, policy = ReportFilter(), ReportPolicy(poll_interval_s=1.0, deadband=100)
    assert all(f.offer("d", "p", 5, GOOD, T0 + i, policy) for i in range(5))


@pytest.mark.parametrize(
    ("heartbeat_s", "elapsed_ms", "reported"),
    [
        (60, 59_999, False),
        (60, 60_000, True),
        (60, 61_000, True),
        (0.5, 499, False),
        (0.5, 500, True),
    ],
)
def test_heartbeat(heartbeat_s: float, elapsed_ms: int, reported: bool) -> None:
    f, policy = ReportFilter(), on_change(10, heartbeat=heartbeat_s)
    assert f.offer("d", "p", 1.0, GOOD, T0, policy)
    assert f.offer("d", "p", 1.0, GOOD, T0 + elapsed_ms, policy) is reported


def test_heartbeat_counts_from_the_last_report() -> None:
    f, policy = ReportFilter(), on_change(1, heartbeat=10)
    assert f.offer("d", "p", 0.0, GOOD, T0, policy)
    assert f.offer("d", "p", 5.0, GOOD, T0 + 4_000, policy)  # a change: reported
    assert not f.offer("d", "p", 5.0, GOOD, T0 + 10_000, policy)  # 6 s after the last report
    assert f.offer("d", "p", 5.0, GOOD, T0 + 14_000, policy)


def test_no_heartbeat_means_silence_while_unchanged() -> None:
    f, policy = ReportFilter(), on_change(1)
    assert f.offer("d", "p", 0.0, GOOD, T0, policy)
    assert not f.offer("d", "p", 0.0, GOOD, T0 + 10**9, policy)


def test_clock_stepping_back_reports() -> None:
    f, policy = ReportFilter(), on_change(1, heartbeat=60)
    assert f.offer("d", "p", 0.0, GOOD, T0, policy)
    assert f.offer("d", "p", 0.0, GOOD, T0 - 1, policy)
    assert not f.offer("d", "p", 0.0, GOOD, T0, policy)  # the new baseline is T0 - 1


@pytest.mark.parametrize(
    ("first", "second"),
    [(GOOD, BAD), (BAD, GOOD), (GOOD, UNCERTAIN), (UNCERTAIN, BAD), (BAD, UNCERTAIN)],
)
def test_quality_change_is_reported_even_without_value_change(
    first: Quality, second: Quality
) -> None:
    f, policy = ReportFilter(), on_change(1000)
    assert f.offer("d", "p", 1.0, first, T0, policy)
    assert f.offer("d", "p", 1.0, second, T0 + 1, policy)
    assert not f.offer("d", "p", 1.0, second, T0 + 2, policy)


def test_reason_change_is_reported() -> None:
    f, policy = ReportFilter(), on_change(1000)
    assert f.offer("d", "p", None, BAD, T0, policy, reason="sentinel")
    assert not f.offer("d", "p", None, BAD, T0 + 1, policy, reason="sentinel")
    assert f.offer("d", "p", None, BAD, T0 + 2, policy, reason="timeout")


def test_forget() -> None:
    f, policy = ReportFilter(), on_change(1000)
    for prop in ("p", "q"):
        f.offer("d", prop, 1, GOOD, T0, policy)
    f.offer("e", "p", 1, GOOD, T0, policy)
    f.forget("d", "p")
    assert f.offer("d", "p", 1, GOOD, T0 + 1, policy)
    f.forget("d")
    assert f.offer("d", "q", 1, GOOD, T0 + 2, policy)
    assert not f.offer("e", "p", 1, GOOD, T0 + 2, policy)


# --------------------------------------------------------------------------- properties

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
)
qualities = st.sampled_from(list(Quality))
policies = st.builds(
    ReportPolicy,
    poll_interval_s=st.just(1.0),
    on_change=st.booleans(),
    deadband=st.floats(0, 1e6),
    deadband_mode=st.sampled_from(list(DeadbandMode)),
    heartbeat_s=st.none() | st.floats(0.001, 1e6),
)
steps = st.lists(st.tuples(json_scalars, qualities, st.integers(0, 10**6)), max_size=30)


@given(steps, policies)
def test_without_on_change_every_offer_is_reported(
    readings: list[tuple[Any, Quality, int]], policy: ReportPolicy
) -> None:
    policy = ReportPolicy(poll_interval_s=1.0, deadband=policy.deadband, heartbeat_s=None)
    f, ts = ReportFilter(), T0
    for value, quality, dt in readings:
        ts += dt
        assert f.offer("d", "p", value, quality, ts, policy)


@given(st.lists(st.floats(allow_nan=False) | st.integers(-(10**20), 10**20), max_size=30))
def test_deadband_zero_reports_every_change(values: list[float]) -> None:
    for mode in DeadbandMode:
        f, policy, last = ReportFilter(), on_change(0, mode), None
        for i, value in enumerate(values):
            reported = f.offer("d", "p", value, GOOD, T0 + i, policy)
            if last is None or type(value) is not type(last) or value != last:
                assert reported, (last, value)
            else:
                assert not reported
            if reported:
                last = value


@given(steps, policies)
def test_quality_change_is_never_suppressed(
    readings: list[tuple[Any, Quality, int]], policy: ReportPolicy
) -> None:
    f, ts, last_quality = ReportFilter(), T0, None
    for value, quality, dt in readings:
        ts += dt
        reported = f.offer("d", "p", value, quality, ts, policy)
        if quality != last_quality:
            assert reported
        if reported:
            last_quality = quality


@given(steps, policies)
def test_heartbeat_bounds_silence(
    readings: list[tuple[Any, Quality, int]], policy: ReportPolicy
) -> None:
    f, ts, last_ts = ReportFilter(), T0, None
    for value, quality, dt in readings:
        ts += dt
        reported = f.offer("d", "p", value, quality, ts, policy)
        if last_ts is None or (
            policy.heartbeat_s is not None and ts - last_ts >= policy.heartbeat_s * 1000
        ):
            assert reported
        if reported:
            last_ts = ts


# --------------------------------------------------------------------------- the builder

MODEL = ThingModel(
    name="test.acme/meter",
    version=SemVer(1, 2, 0),
    properties=(
        Property("power", DataSchema(DataType.FLOAT, minimum=0, maximum=1000, unit="W")),
        Property("count", DataSchema(DataType.INT32)),
        Property("state", DataSchema(DataType.TEXT, max_length=8)),
        Property("mode", DataSchema(DataType.ENUM, enum=(EnumValue(0, "off"), EnumValue(1, "on")))),
        Property("on", DataSchema(DataType.BOOL)),
    ),
)
REF = "test.acme/meter@1.2.0"


def builder() -> ReportBuilder:
    return ReportBuilder(MODEL.ref, compile_validator(MODEL))


def split(messages: list[Message]) -> tuple[list[Message], list[Message]]:
    reports = [m for m in messages if m.kind is MessageKind.PROPERTY_REPORT]
    events = [m for m in messages if m.kind is MessageKind.EVENT]
    assert len(reports) + len(events) == len(messages)
    assert len(reports) <= 1
    for msg in messages:  # every message survives a JSON round trip (envelope validation)
        assert from_json_dict(to_json_dict(msg)) == msg
    return reports, events


def test_valid_values_are_reported_good() -> None:
    readings = {
        "power": Reading(12.5, GOOD),
        "count": Decoded(7, GOOD, ""),
        "state": Reading("run", GOOD),
        "mode": Reading(1, GOOD),
        "on": Reading(True, GOOD),
    }
    reports, events = split(builder().build("dev-1", T0, readings))
    assert events == []
    (report,) = reports
    assert report.model == REF
    assert report.device_id == "dev-1"
    assert report.ts_ms == T0
    assert report.params == {"power": 12.5, "count": 7, "state": "run", "mode": 1, "on": True}
    assert report.quality is GOOD
    assert report.param_quality == {}


@pytest.mark.parametrize(
    ("prop", "value", "code"),
    [
        ("power", 1500.0, "range"),
        ("power", "12", "type"),
        ("power", float("nan"), "range"),
        ("count", 2**40, "range"),
        ("count", 1.5, "type"),
        ("state", "too long text", "length"),
        ("mode", 7, "enum"),
        ("on", 1, "type"),
        ("power", None, "type"),  # no value though the codec said good
    ],
)
def test_invalid_value_is_reported_bad_with_a_diagnostic(prop: str, value: Any, code: str) -> None:
    readings = {"count": Reading(3, GOOD), prop: Reading(value, GOOD)}
    (report,), (event,) = split(builder().build("dev-1", T0, readings))
    assert report.params[prop] is None
    assert report.param_quality == {prop: BAD}
    assert report.quality is BAD
    assert event.name == DIAGNOSTIC_EVENT
    assert event.ts_ms == T0
    assert event.device_id == "dev-1"
    assert event.params["property"] == prop
    assert event.params["source"] == "validator"
    assert event.params["code"] == code
    assert event.params["quality"] == "bad"
    assert isinstance(event.params["message"], str)
    assert event.params["message"]


def test_codec_bad_reading_is_null_with_bad_quality() -> None:
    readings = {"power": Decoded(None, BAD, "sentinel 0xFFFF"), "count": Decoded(3, GOOD, "")}
    (report,), (event,) = split(builder().build("dev-1", T0, readings))
    assert report.params == {"power": None, "count": 3}
    assert report.param_quality == {"power": BAD}
    assert report.quality is BAD
    assert event.params["source"] == "codec"
    assert event.params["message"] == "sentinel 0xFFFF"


def test_codec_bad_reading_keeps_a_valid_value() -> None:
    # outside the point's valid_min/valid_max but inside the model's range: the value stays
    readings = {"power": Decoded(999.0, BAD, "above valid_max 900")}
    (report,), (event,) = split(builder().build("dev-1", T0, readings))
    assert report.params == {"power": 999.0}
    assert report.param_quality == {"power": BAD}
    assert event.params["source"] == "codec"


def test_uncertain_reading_makes_an_uncertain_report() -> None:
    readings = {"power": Reading(5.0, UNCERTAIN, "stale"), "count": Reading(1, GOOD)}
    (report,), (event,) = split(builder().build("dev-1", T0, readings))
    assert report.quality is UNCERTAIN
    assert report.param_quality == {"power": UNCERTAIN}
    assert event.params["quality"] == "uncertain"


def test_unknown_property_is_a_diagnostic_not_a_parameter() -> None:
    readings = {"bogus": Reading(1, GOOD), "count": Reading(1, GOOD)}
    (report,), (event,) = split(builder().build("dev-1", T0, readings))
    assert report.params == {"count": 1}
    assert event.params["code"] == "unknown"
    assert event.params["property"] == "bogus"


def test_only_diagnostics_when_nothing_is_reportable() -> None:
    reports, events = split(builder().build("dev-1", T0, {"bogus": Reading(1, GOOD)}))
    assert reports == []
    assert len(events) == 1
    assert builder().build("dev-1", T0, {}) == []


def test_long_reason_is_cut() -> None:
    (_, event) = builder().build("d", T0, {"power": Decoded(None, BAD, "x" * 10_000)})
    message = event.params["message"]
    assert isinstance(message, str)
    assert len(message) == 512
    assert message.endswith("…")


def test_builder_with_filter() -> None:
    b, f = builder(), ReportFilter()
    policies = {"power": on_change(1.0), "count": on_change(0)}

    def run(ts: int, **readings: tuple[Any, Quality, str]) -> list[Message]:
        return b.build("d", ts, readings, report_filter=f, policy_for=policies)

    (first,) = run(T0, power=Reading(10.0, GOOD), count=Reading(1, GOOD), on=Reading(True, GOOD))
    assert first.params == {"power": 10.0, "count": 1, "on": True}
    # power within the deadband, count unchanged; "on" has no policy: every reading
    (second,) = run(
        T0 + 1, power=Reading(10.5, GOOD), count=Reading(1, GOOD), on=Reading(True, GOOD)
    )
    assert second.params == {"on": True}
    assert run(T0 + 2, power=Reading(10.6, GOOD), count=Reading(1, GOOD)) == []
    # a fault: reported with its diagnostic, once; the same fault again is filtered, with it
    reports, events = split(run(T0 + 3, power=Decoded(None, BAD, "timeout")))
    assert reports[0].params == {"power": None}
    assert len(events) == 1
    assert run(T0 + 4, power=Decoded(None, BAD, "timeout")) == []
    # a different fault is a new diagnostic
    reports, events = split(run(T0 + 5, power=Decoded(None, BAD, "crc error")))
    assert len(reports) == 1
    assert events[0].params["message"] == "crc error"
    # recovery: the quality changed, reported even though the value is back at 10.0
    (recovered,) = run(T0 + 6, power=Reading(10.0, GOOD))
    assert recovered.params == {"power": 10.0}
    assert recovered.quality is GOOD


def test_builder_with_filter_and_policy_function() -> None:
    b, f = builder(), ReportFilter()
    policy = on_change(100)

    def run(ts: int, value: int) -> list[Message]:
        readings = {"count": Reading(value, GOOD)}
        return b.build("d", ts, readings, report_filter=f, policy_for=lambda _: policy)

    assert len(run(T0, 1)) == 1
    assert run(T0 + 1, 2) == []


def test_builder_refuses_a_model_declaring_the_reserved_event() -> None:
    model = ThingModel(
        name="test.acme/x", version=SemVer(1, 0, 0), events=(Event(DIAGNOSTIC_EVENT),)
    )
    with pytest.raises(ValueError, match="reserved"):
        ReportBuilder(model.ref, compile_validator(model))


def test_builder_needs_an_exact_model_version() -> None:
    with pytest.raises(ValueError, match="exact version"):
        ReportBuilder("test.acme/meter", compile_validator(MODEL))
    assert builder().build("d", T0, {"count": Reading(1, GOOD)})[0].model == REF


@pytest.mark.parametrize(
    ("qualities", "worst"),
    [
        ([], GOOD),
        ([GOOD, GOOD], GOOD),
        ([GOOD, UNCERTAIN], UNCERTAIN),
        ([UNCERTAIN, BAD, GOOD], BAD),
    ],
)
def test_worst_quality(qualities: list[Quality], worst: Quality) -> None:
    assert worst_quality(qualities) is worst


class _WithoutFastChecks:
    """A validator whose inline checks are hidden: the builder takes the long way."""

    fast_check: dict[str, Any] = {}  # noqa: RUF012

    def __init__(self, validator: Any) -> None:
        self._validator = validator
        self.model = validator.model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._validator, name)


_ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
)


@given(
    values=st.dictionaries(
        st.sampled_from(["voltage_a", "energy_import", "relay_closed", "frequency", "nope"]),
        st.tuples(_ANY_VALUE, st.sampled_from(list(Quality))),
        max_size=5,
    ),
    on_change=st.booleans(),
)
def test_the_fast_path_reports_exactly_what_the_long_way_does(
    values: dict[str, tuple[Any, Quality]], on_change: bool
) -> None:
    """ReportBuilder.build checks good plain values inline; with the inline checks disabled
    (every value the long way) the messages must be the same."""
    model = load_model_file(METER_FILE)
    fast_validator = compile_validator(model)
    slow_validator: Any = _WithoutFastChecks(compile_validator(model))
    readings = {
        prop: Decoded(value, quality, "reason") for prop, (value, quality) in values.items()
    }
    policy = ReportPolicy(poll_interval_s=1.0, on_change=on_change, deadband=0.5)
    out = []
    for validator in (fast_validator, slow_validator):
        builder = ReportBuilder(model.ref, validator)
        report_filter = ReportFilter()
        first = builder.build(
            "d1", 1000, readings, report_filter=report_filter, policy_for=lambda p: policy
        )
        again = builder.build(
            "d1", 2000, readings, report_filter=report_filter, policy_for=lambda p: policy
        )
        out.append(
            [
                (m.kind, m.name, dict(m.params), dict(m.param_quality), m.quality)
                for m in first + again
            ]
        )
    assert out[0] == out[1]
