"""TwinService over a real server: reported and desired state, validated SetDesired with
revisions, history with downsampling, events and alarm acknowledgement."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import grpc
import pytest

from cloud_registry.api.v1 import models_pb2, twins_pb2
from cloud_registry.storage.base import EventEntry, IngestBatch, ReportedValue
from tests.cloud_registry.server_fixtures import (
    Registry,
    error_info,
    expect_error,
    field_violations,
)
from thing_models.proto import thing_message_pb2 as tm

INVALID = grpc.StatusCode.INVALID_ARGUMENT
THERMOSTAT = "com.example/thermostat"
MODEL = """\
model: com.example/thermostat
version: "1.0.0"
properties:
  - {id: setpoint, type: float, min: 5, max: 30, step: 0.5, access: rw}
  - {id: mode, type: enum, values: {off: Off, heat: Heat, cool: Cool}, access: rw}
  - {id: fan, type: int32, min: 0, max: 3, access: rw}
  - {id: label, type: text, max_length: 8, access: rw}
  - {id: temperature, type: float, min: -40, max: 80}
events:
  - {id: overheat, level: alert, outputs: [{id: temperature, type: float}]}
  - {id: failure, level: error}
  - {id: started, level: info}
"""
_sequences = itertools.count(1)


@pytest.fixture
def reg(registry: Registry) -> Registry:
    """A registry with the thermostat model and devices t1, t2 (t2 on site-b)."""
    registry.models.PublishModel(models_pb2.PublishModelRequest(document=MODEL), timeout=30)
    registry.register("t1", model=f"{THERMOSTAT}@1.0.0")
    registry.register("t2", model=f"{THERMOSTAT}@1.0.0", site="site-b")
    return registry


def ingest(
    reg: Registry,
    values: Sequence[tuple[str, str, object, int]] = (),
    events: Sequence[EventEntry] = (),
    quality: str = "good",
) -> None:
    reg.storage.ingest(
        IngestBatch(
            edge_id="edge-1",
            sequence=next(_sequences),
            values=[ReportedValue(d, p, v, ts, quality) for d, p, v, ts in values],
            events=list(events),
        ),
        now_ms=2_000_000_000_000,
    )


def value(**kind: object) -> tm.Value:
    return tm.Value(**kind)  # type: ignore[arg-type]


def set_desired(reg: Registry, device_id: str, revision: int = 0, **values: tm.Value) -> object:
    return reg.twins.SetDesired(
        twins_pb2.SetDesiredRequest(
            device_id=device_id, desired=values, expected_revision=revision
        ),
        timeout=10,
    )


# --------------------------------------------------------------------------- state


def test_reported_desired_delta_and_revision(reg: Registry) -> None:
    empty = reg.twins.GetTwin(twins_pb2.GetTwinRequest(device_id="t1"), timeout=10)
    assert (empty.device_id, empty.model) == ("t1", f"{THERMOSTAT}@1.0.0")
    assert not empty.reported
    assert not empty.desired
    ingest(reg, [("t1", "setpoint", 20.5, 1000), ("t1", "temperature", 19.25, 1000)])
    twin = reg.twins.GetTwin(twins_pb2.GetTwinRequest(device_id="t1"), timeout=10)
    assert twin.reported["setpoint"].value.double_value == 20.5
    assert twin.reported["setpoint"].ts_ms == 1000
    assert twin.reported["setpoint"].quality == tm.QUALITY_GOOD
    assert twin.revision > empty.revision
    after = set_desired(
        reg,
        "t1",
        twin.revision,
        setpoint=value(double_value=21.0),
        mode=value(string_value="heat"),
    )
    assert after.desired["setpoint"].value.double_value == 21.0  # type: ignore[attr-defined]
    assert set(after.delta) == {"setpoint", "mode"}  # type: ignore[attr-defined]
    assert after.revision == twin.revision + 1  # type: ignore[attr-defined]
    # the device reports the desired value: it leaves the delta
    ingest(reg, [("t1", "setpoint", 21.0, 2000)])
    twin = reg.twins.GetTwin(twins_pb2.GetTwinRequest(device_id="t1"), timeout=10)
    assert set(twin.delta) == {"mode"}
    # null clears a desired property
    cleared = set_desired(reg, "t1", mode=value(null_value=tm.NULL_VALUE))
    assert "mode" not in cleared.desired  # type: ignore[attr-defined]
    assert not cleared.delta  # type: ignore[attr-defined]


def test_bad_quality_is_reported_as_such(reg: Registry) -> None:
    ingest(reg, [("t1", "temperature", 99.0, 1000)], quality="bad")
    twin = reg.twins.GetTwin(twins_pb2.GetTwinRequest(device_id="t1"), timeout=10)
    assert twin.reported["temperature"].quality == tm.QUALITY_BAD


def test_a_stale_revision_fails_and_changes_nothing(reg: Registry) -> None:
    first = set_desired(reg, "t1", fan=value(int_value=1))
    revision = first.revision  # type: ignore[attr-defined]
    set_desired(reg, "t1", revision, fan=value(int_value=2))
    before = reg.snapshot()
    error = expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        reg.twins.SetDesired,
        twins_pb2.SetDesiredRequest(
            device_id="t1", desired={"fan": value(int_value=3)}, expected_revision=revision
        ),
    )
    reason, metadata = error_info(error)
    assert reason == "STALE_REVISION"
    assert metadata["current_revision"] == str(revision + 1)
    assert reg.snapshot() == before


def test_every_bad_desired_value_is_reported_at_once(reg: Registry) -> None:
    before = reg.snapshot()
    error = expect_error(
        INVALID,
        reg.twins.SetDesired,
        twins_pb2.SetDesiredRequest(
            device_id="t1",
            desired={
                "setpoint": value(double_value=100.0),  # out of range
                "mode": value(string_value="turbo"),  # not an enum member
                "fan": value(string_value="2"),  # wrong type
                "label": value(string_value="x" * 20),  # too long
                "temperature": value(double_value=20.0),  # read-only
                "nope": value(int_value=1),  # unknown
            },
        ),
    )
    violations = dict(field_violations(error))
    assert set(violations) == {
        "desired.setpoint",
        "desired.mode",
        "desired.fan",
        "desired.label",
        "desired.temperature",
        "desired.nope",
    }
    assert "read-only" in violations["desired.temperature"]
    assert "[range]" in violations["desired.setpoint"]
    assert "[type]" in violations["desired.fan"]
    assert reg.snapshot() == before


@pytest.mark.parametrize(
    ("request_fields", "code", "field"),
    [
        ({"device_id": "t1"}, INVALID, "desired"),
        ({"device_id": "", "desired": {"fan": value(int_value=1)}}, INVALID, "device_id"),
        ({"device_id": "x" * 10_000, "desired": {"fan": value(int_value=1)}}, INVALID, "device_id"),
        (
            {"device_id": "t1", "desired": {"fan": value(int_value=1)}, "expected_revision": -1},
            INVALID,
            "expected_revision",
        ),
        ({"device_id": "t1", "desired": {"fan": tm.Value()}}, INVALID, "desired.fan"),
        (
            {"device_id": "t1", "desired": {"setpoint": value(double_value=float("nan"))}},
            INVALID,
            "desired.setpoint",
        ),
        (
            {"device_id": "t1", "desired": {"setpoint": value(double_value=20.25)}},
            INVALID,
            "desired.setpoint",
        ),
        (
            {"device_id": "t1", "desired": {"x" * 5000: value(int_value=1)}},
            INVALID,
            None,
        ),
        ({"device_id": "ghost", "desired": {"fan": value(int_value=1)}}, None, None),
    ],
)
def test_set_desired_refuses_hostile_requests(
    reg: Registry,
    request_fields: dict[str, Any],
    code: grpc.StatusCode | None,
    field: str | None,
) -> None:
    before = reg.snapshot()
    error = expect_error(
        code or grpc.StatusCode.NOT_FOUND,
        reg.twins.SetDesired,
        twins_pb2.SetDesiredRequest(**request_fields),
    )
    if field is not None:
        assert field in {f for f, _ in field_violations(error)}
    assert len(error.details()) <= 1000
    assert reg.snapshot() == before
    reg.assert_serving()


def test_too_many_desired_properties(reg: Registry) -> None:
    desired = {f"p{i}": value(int_value=i) for i in range(1001)}
    error = expect_error(
        INVALID,
        reg.twins.SetDesired,
        twins_pb2.SetDesiredRequest(device_id="t1", desired=desired),
    )
    assert field_violations(error)[0][0] == "desired"


def test_twin_of_an_unknown_device(reg: Registry) -> None:
    expect_error(
        grpc.StatusCode.NOT_FOUND, reg.twins.GetTwin, twins_pb2.GetTwinRequest(device_id="ghost")
    )
    expect_error(INVALID, reg.twins.GetTwin, twins_pb2.GetTwinRequest(device_id="a\tb"))


# --------------------------------------------------------------------------- history


def test_history_raw_points_limits_and_buckets(reg: Registry) -> None:
    ingest(reg, [("t1", "temperature", float(i), 1000 + i * 100) for i in range(50)])
    raw = reg.twins.GetHistory(
        twins_pb2.GetHistoryRequest(device_id="t1", property="temperature", from_ms=0), timeout=10
    )
    assert [p.ts_ms for p in raw.points] == [1000 + i * 100 for i in range(50)]
    assert raw.points[3].value.double_value == 3.0
    assert raw.points[3].quality == tm.QUALITY_GOOD
    assert not raw.truncated
    window = reg.twins.GetHistory(
        twins_pb2.GetHistoryRequest(
            device_id="t1", property="temperature", from_ms=2000, to_ms=3000, limit=5
        ),
        timeout=10,
    )
    assert [p.ts_ms for p in window.points] == [2000, 2100, 2200, 2300, 2400]
    assert window.truncated
    buckets = reg.twins.GetHistory(
        twins_pb2.GetHistoryRequest(
            device_id="t1", property="temperature", from_ms=0, to_ms=10_000, bucket_ms=1000
        ),
        timeout=10,
    ).buckets
    assert [b.start_ms for b in buckets] == [1000, 2000, 3000, 4000, 5000]
    first = buckets[0]
    assert (first.min, first.max, first.avg, first.count) == (0.0, 9.0, 4.5, 10)
    unknown = reg.twins.GetHistory(
        twins_pb2.GetHistoryRequest(device_id="t1", property="nothing", from_ms=0), timeout=10
    )
    assert not unknown.points


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"property": "temperature", "from_ms": -1}, "from_ms"),
        ({"property": "temperature", "from_ms": 5000, "to_ms": 1000}, "to_ms"),
        ({"property": "temperature", "to_ms": -5}, "to_ms"),
        ({"property": "temperature", "bucket_ms": -1}, "bucket_ms"),
        ({"property": "temperature", "to_ms": 2**62, "bucket_ms": 1}, "bucket_ms"),
        ({"property": "temperature", "limit": -1}, "limit"),
        ({"property": ""}, "property"),
        ({"property": "a b"}, "property"),
    ],
)
def test_history_refuses_bad_ranges(
    reg: Registry, request_fields: dict[str, Any], field: str
) -> None:
    error = expect_error(
        INVALID,
        reg.twins.GetHistory,
        twins_pb2.GetHistoryRequest(device_id="t1", **request_fields),
    )
    assert field in {f for f, _ in field_violations(error)}


def test_history_of_an_unknown_device(reg: Registry) -> None:
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        reg.twins.GetHistory,
        twins_pb2.GetHistoryRequest(device_id="ghost", property="temperature"),
    )


# --------------------------------------------------------------------------- events and alarms


def _events(reg: Registry) -> None:
    events = [
        EventEntry("e1", "t1", "started", "info", 1000),
        EventEntry("e2", "t1", "overheat", "alert", 2000, {"temperature": 81.5}),
        EventEntry("e3", "t1", "failure", "error", 3000),
        EventEntry("e4", "t2", "overheat", "alert", 4000, {"temperature": 90.0}),
    ]
    ingest(reg, events=events)


def list_events(reg: Registry, **fields: object) -> list[str]:
    response = reg.twins.ListEvents(twins_pb2.ListEventsRequest(**fields), timeout=10)  # type: ignore[arg-type]
    return [e.id for e in response.events]


def test_events_by_level_time_device_site_and_pages(reg: Registry) -> None:
    _events(reg)
    assert list_events(reg) == ["e4", "e3", "e2", "e1"]
    assert list_events(reg, device_id="t1") == ["e3", "e2", "e1"]
    assert list_events(reg, site="site-b") == ["e4"]
    assert list_events(reg, levels=["alert", "error"]) == ["e4", "e3", "e2"]
    assert list_events(reg, from_ms=2000, to_ms=4000) == ["e3", "e2"]
    first = reg.twins.ListEvents(twins_pb2.ListEventsRequest(page_size=3), timeout=10)
    assert [e.id for e in first.events] == ["e4", "e3", "e2"]
    rest = reg.twins.ListEvents(
        twins_pb2.ListEventsRequest(page_size=3, page_token=first.next_page_token), timeout=10
    )
    assert [e.id for e in rest.events] == ["e1"]
    assert not rest.next_page_token
    e2 = next(e for e in first.events if e.id == "e2")
    assert e2.params["temperature"].double_value == 81.5
    assert (e2.device_id, e2.name, e2.level, e2.ts_ms) == ("t1", "overheat", "alert", 2000)


def test_acknowledge_alarms_records_the_caller(reg: Registry) -> None:
    _events(reg)
    acked = reg.twins.AckAlarm(
        twins_pb2.AckAlarmRequest(event_id="e2", comment="fan replaced"),
        metadata=(("x-principal", "alice"),),
        timeout=10,
    )
    assert acked.acknowledged
    assert (acked.acknowledged_by, acked.comment) == ("integrator:alice", "fan replaced")
    assert acked.acknowledged_ms > 0
    again = reg.twins.AckAlarm(
        twins_pb2.AckAlarmRequest(event_id="e2", comment="other"),
        metadata=(("x-principal", "bob"),),
        timeout=10,
    )
    assert again == acked  # idempotent: the first acknowledgement stands
    assert list_events(reg, levels=["alert", "error"], unacknowledged_only=True) == ["e4", "e3"]


@pytest.mark.parametrize(
    ("method", "request_message", "field"),
    [
        ("ListEvents", twins_pb2.ListEventsRequest(levels=["info", "panic"]), "levels[1]"),
        ("ListEvents", twins_pb2.ListEventsRequest(from_ms=-1), "from_ms"),
        ("ListEvents", twins_pb2.ListEventsRequest(from_ms=10, to_ms=5), "to_ms"),
        ("ListEvents", twins_pb2.ListEventsRequest(page_size=-1), "page_size"),
        ("ListEvents", twins_pb2.ListEventsRequest(page_token="%%%"), "page_token"),
        ("ListEvents", twins_pb2.ListEventsRequest(device_id="a b"), "device_id"),
        ("AckAlarm", twins_pb2.AckAlarmRequest(event_id=""), "event_id"),
        ("AckAlarm", twins_pb2.AckAlarmRequest(event_id="e1", comment="\x1b[31m"), "comment"),
        ("AckAlarm", twins_pb2.AckAlarmRequest(event_id="e1", comment="c" * 5000), "comment"),
    ],
)
def test_events_refuse_malformed_requests(
    reg: Registry, method: str, request_message: object, field: str
) -> None:
    _events(reg)
    before = reg.snapshot()
    error = expect_error(INVALID, getattr(reg.twins, method), request_message)
    assert field in {f for f, _ in field_violations(error)}
    assert reg.snapshot() == before


def test_acknowledging_an_unknown_event(reg: Registry) -> None:
    expect_error(
        grpc.StatusCode.NOT_FOUND, reg.twins.AckAlarm, twins_pb2.AckAlarmRequest(event_id="nope")
    )
