"""The audit event model round-trips and refuses bad records."""

from __future__ import annotations

import json
from datetime import timedelta, timezone
from typing import Any

import pytest

from security.audit import AuditEvent, AuditKind
from security.errors import AuditError

from .conftest import NOW


def test_round_trip_through_json() -> None:
    event = AuditEvent(NOW, AuditKind.COMMAND_REPLAYED, "edge:gw-01", "nonce seen", {"seq": "5"})
    again = AuditEvent.from_dict(json.loads(json.dumps(event.to_dict())))
    assert again == event


def test_time_normalised_to_utc() -> None:
    local = NOW.astimezone(timezone(timedelta(hours=2)))
    data = AuditEvent(local, AuditKind.ENROLLED, "edge:gw-01").to_dict()
    assert data["time"] == "2026-03-01T12:00:00+00:00"


def test_naive_time_refused() -> None:
    with pytest.raises(ValueError, match=r"timezone"):
        AuditEvent(NOW.replace(tzinfo=None), AuditKind.REVOKED, "edge:x")


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"time": "yesterday", "kind": "enrolled", "subject": "x"},
        {"time": NOW.isoformat(), "kind": "hacked", "subject": "x"},
        {"time": NOW.isoformat(), "kind": "enrolled", "subject": 5},
        {"time": NOW.isoformat(), "kind": "enrolled", "subject": "x", "fields": {"a": 1}},
        {"time": "2026-01-01T00:00:00", "kind": "enrolled", "subject": "x"},
        {"time": None, "kind": "enrolled", "subject": "x"},
    ],
)
def test_bad_records(data: dict[str, Any]) -> None:
    with pytest.raises(AuditError, match=r"audit record"):
        AuditEvent.from_dict(data)
