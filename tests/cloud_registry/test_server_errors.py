"""The one translation point from exceptions to statuses (errors.py), the pure conversions and
request checks (convert.py), and what a client sees when storage fails."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2  # type: ignore[import-untyped]

from cloud_registry.api.errors import StaleRevision as ClientStaleRevision
from cloud_registry.api.errors import from_rpc_error
from cloud_registry.api.v1 import common_pb2, devices_pb2, watch_pb2
from cloud_registry.server import convert
from cloud_registry.server.errors import (
    MAX_DETAILS_BYTES,
    MAX_MESSAGE_CHARS,
    FailedPrecondition,
    InvalidArgument,
    Violation,
    handle_errors,
    handle_stream_errors,
    status_for,
)
from cloud_registry.storage.base import (
    AlreadyExists,
    ChangeEntry,
    ChangeKind,
    CommandEntry,
    CommandStatus,
    DeviceRecord,
    Location,
    NotFound,
    StaleRevision,
    Storage,
    StorageUnavailable,
)
from cloud_registry.storage.cursors import InvalidCursor
from tests.cloud_registry.server_fixtures import (
    METER,
    expect_error,
    field_violations,
    running_registry,
)
from thing_models.errors import (
    Diagnostic,
    HostileInputError,
    ModelLoadError,
    SourceLocation,
    TelemetryValidationError,
    UnresolvedReferenceError,
    VersionBumpError,
)
from thing_models.proto import thing_message_pb2 as tm
from thing_models.telemetry import Issue

Code = grpc.StatusCode


def code_of(status: Any) -> Code:
    return next(c for c in Code if c.value[0] == status.code)


def unpack(status: Any, kind: Any) -> Any:
    for detail in status.details:
        if detail.Is(kind.DESCRIPTOR):
            message = kind()
            detail.Unpack(message)
            return message
    return None


# --------------------------------------------------------------------------- status_for


def test_model_load_errors_carry_one_violation_per_diagnostic() -> None:
    error = ModelLoadError(
        [
            Diagnostic(SourceLocation("document", 3, 5), "bad type", path="properties[0].type"),
            Diagnostic(SourceLocation("document", 7, 1), "YAML syntax: oops", expected="a key"),
        ]
    )
    status = status_for(error)
    assert code_of(status) == Code.INVALID_ARGUMENT
    bad = unpack(status, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("properties[0].type", "bad type (at document:3:5)"),
        ("document:7:1", "YAML syntax: oops; expected a key"),
    ]
    assert status.message.startswith("invalid model: properties[0].type: bad type")
    assert "1 more" in status.message
    hostile = status_for(HostileInputError([Diagnostic(SourceLocation("d"), "too big")]))
    assert code_of(hostile) == Code.INVALID_ARGUMENT


def test_telemetry_errors_name_each_issue() -> None:
    status = status_for(
        TelemetryValidationError(
            [Issue("a", "type", "expected a number"), Issue("b.c", "range", "x")]
        )
    )
    bad = unpack(status, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("a", "expected a number"),
        ("b.c", "x"),
    ]


def test_preconditions_and_storage_errors() -> None:
    bump = status_for(VersionBumpError("m: 1.0.0 -> 1.1.0 allows minor\n  [MAJOR] p: removed"))
    assert code_of(bump) == Code.FAILED_PRECONDITION
    failure = unpack(bump, error_details_pb2.PreconditionFailure)
    assert [(v.type, v.subject) for v in failure.violations] == [
        ("VERSION_BUMP", "[MAJOR] p: removed")
    ]
    unresolved = status_for(UnresolvedReferenceError("a.b/c@1", "no such model"))
    assert code_of(unresolved) == Code.FAILED_PRECONDITION
    failure = unpack(unresolved, error_details_pb2.PreconditionFailure)
    assert failure.violations[0].type == "UNRESOLVED_REFERENCE"
    stale = status_for(StaleRevision("device d1 is at revision 4", current=4))
    assert code_of(stale) == Code.FAILED_PRECONDITION
    assert "current revision is 4" in stale.message
    info = unpack(stale, error_details_pb2.ErrorInfo)
    assert (info.reason, dict(info.metadata)) == ("STALE_REVISION", {"current_revision": "4"})
    assert code_of(status_for(NotFound("device x not found"))) == Code.NOT_FOUND
    assert code_of(status_for(AlreadyExists("dup"))) == Code.ALREADY_EXISTS
    unavailable = status_for(StorageUnavailable("connection refused to 10.0.0.5"))
    assert code_of(unavailable) == Code.UNAVAILABLE
    assert "10.0.0.5" not in unavailable.message
    cursor = status_for(InvalidCursor("invalid page cursor"))
    assert code_of(cursor) == Code.INVALID_ARGUMENT
    assert unpack(cursor, error_details_pb2.BadRequest).field_violations[0].field == "page_token"


def test_unexpected_errors_are_internal_and_leak_nothing() -> None:
    status = status_for(RuntimeError("password=hunter2 at /srv/db"))
    assert code_of(status) == Code.INTERNAL
    assert status.message == "internal error"
    assert not status.details


def test_huge_errors_stay_within_trailer_limits() -> None:
    violations = [Violation(f"field{i}" * 20, "x" * 1000) for i in range(5000)]
    status = status_for(InvalidArgument.fields(violations))
    assert len(status.message) <= MAX_MESSAGE_CHARS
    assert status.ByteSize() < MAX_DETAILS_BYTES + MAX_MESSAGE_CHARS + 200
    bad = unpack(status, error_details_pb2.BadRequest)
    assert bad.field_violations[-1].description.startswith("... and ")
    long_message = status_for(FailedPrecondition("y" * 100_000))
    assert len(long_message.message) == MAX_MESSAGE_CHARS


# --------------------------------------------------------------------------- the decorators


class _Aborted(Exception):
    pass


class FakeContext:
    def __init__(self) -> None:
        self.status: Any = None

    async def abort_with_status(self, status: Any) -> None:
        self.status = status
        raise _Aborted


class _Servicer:
    @handle_errors
    async def Unary(self, request: Exception | None, context: Any) -> str:
        if request is not None:
            raise request
        return "ok"

    @handle_stream_errors
    async def Stream(self, request: Exception, context: Any) -> AsyncIterator[int]:
        yield 1
        yield 2
        raise request


def test_decorated_methods_map_exceptions_and_log_only_unexpected_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    servicer = _Servicer()
    assert asyncio.run(servicer.Unary(None, FakeContext())) == "ok"
    context = FakeContext()
    with pytest.raises(_Aborted):
        asyncio.run(servicer.Unary(NotFound("nope"), context))
    assert context.status.code is Code.NOT_FOUND
    assert not caplog.records
    context = FakeContext()
    with caplog.at_level(logging.ERROR), pytest.raises(_Aborted):
        asyncio.run(servicer.Unary(KeyError("secret"), context))
    assert context.status.code is Code.INTERNAL
    assert context.status.details == "internal error"
    assert caplog.records[0].exc_info is not None

    async def consume(context: FakeContext) -> list[int]:
        return [item async for item in servicer.Stream(InvalidArgument.field("f", "bad"), context)]

    context = FakeContext()
    with pytest.raises(_Aborted):
        asyncio.run(consume(context))
    assert context.status.code is Code.INVALID_ARGUMENT
    assert context.status.details == "f: bad"


# --------------------------------------------------------------------------- convert: checks


@pytest.mark.parametrize("value", ["d", "dev-1", "a/b:c@d", "号楼-3", "x" * 128])
def test_valid_ids(value: str) -> None:
    assert convert.check_id(value, "id") == value


@pytest.mark.parametrize(
    "value", ["", "x" * 129, "a b", "a\tb", "a\nb", "\x00", "\u200b\u2028", "\x7f", " "]
)
def test_invalid_ids(value: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        convert.check_id(value, "device.id")
    assert info.value.violations[0].field == "device.id"


def test_page_sizes_revisions_tokens_and_enums() -> None:
    assert convert.check_page_size(0) == 100
    assert convert.check_page_size(7) == 7
    assert convert.check_page_size(2**31 - 1) == 1000
    with pytest.raises(InvalidArgument):
        convert.check_page_size(-1)
    assert convert.check_revision(0) == 0
    for bad, required in ((-1, False), (0, True)):
        with pytest.raises(InvalidArgument):
            convert.check_revision(bad, required=required)
    assert convert.check_page_token("abc_-") == "abc_-"
    for token in ("é", "a b" * 1000, "\x00"):
        with pytest.raises(InvalidArgument):
            convert.check_page_token(token)
    assert convert.check_enum(2, watch_pb2.ChangeKind, "kinds") == 2
    with pytest.raises(InvalidArgument):
        convert.check_enum(99, watch_pb2.ChangeKind, "kinds")
    with pytest.raises(InvalidArgument):
        convert.check_enum(0, watch_pb2.ChangeKind, "kinds", allow_zero=False)


def test_model_references_and_selectors() -> None:
    assert convert.check_model_ref(f"{METER}@1", "m").version == "1"
    with pytest.raises(InvalidArgument):
        convert.check_model_ref(f"{METER}@1", "m", exact=True)
    assert convert.check_model_ref(f"{METER}@1.0.0", "m", exact=True).name == METER
    requirements = convert.parse_selector("floor=3,!retired")
    assert [r.op for r in requirements] == ["=", "!exists"]
    with pytest.raises(InvalidArgument) as info:
        convert.parse_selector("floor in (3")
    assert info.value.violations[0].field == "label_selector"
    assert "position" in info.value.violations[0].description


def test_values_from_protobuf_report_every_bad_value() -> None:
    values = {"a": tm.Value(int_value=1), "b": tm.Value(), "c": tm.Value(string_value="x")}
    with pytest.raises(InvalidArgument) as info:
        convert.values_from_pb(values, "desired")
    assert [v.field for v in info.value.violations] == ["desired.b"]
    assert convert.values_from_pb({"a": tm.Value(int_value=1)}, "d") == {"a": 1}


# --------------------------------------------------------------------------- convert: records


def test_device_round_trip_and_read_only_fields() -> None:
    record = DeviceRecord(
        id="d1",
        model=f"{METER}@1.0.0",
        edge_id="e1",
        site="s",
        building="B",
        labels={"floor": "3"},
        location=Location(52.5, 13.4, "2", "2.14"),
        online=True,
        revision=7,
        created_ms=1,
        updated_ms=2,
        last_seen_ms=3,
    )
    message = convert.device_to_pb(record)
    assert message.location.has_coordinates
    back = convert.device_from_pb(message)
    assert back.location == record.location
    assert (back.online, back.revision, back.created_ms) == (False, 0, 0)
    no_coordinates = convert.device_to_pb(DeviceRecord("d", "a.b/c@1.0.0", "e", "s"))
    assert not no_coordinates.location.has_coordinates


def test_every_change_kind_converts_even_with_odd_payloads() -> None:
    payloads: dict[ChangeKind, dict[str, Any]] = {
        ChangeKind.TWIN_REPORTED: {
            "properties": {"t": {"value": 1.5, "ts_ms": 5, "quality": "uncertain"}},
            "revision": 3,
        },
        ChangeKind.TWIN_DESIRED: {"properties": {"t": {"value": None, "ts_ms": 5}}},
        ChangeKind.EVENT: {
            "id": "e",
            "device_id": "d",
            "name": "n",
            "level": "alert",
            "ts_ms": 1,
            "params": {"x": [1, {"y": True}]},
        },
        ChangeKind.ALARM_ACKNOWLEDGED: {"id": "e", "acknowledged": True, "acknowledged_by": "me"},
        ChangeKind.DEVICE_CREATED: {
            "id": "d",
            "labels": {"a": "b"},
            "location": {"latitude": 1, "longitude": 2},
        },
        ChangeKind.DEVICE_UPDATED: {"id": "d", "online": True, "revision": 2},
        ChangeKind.DEVICE_DELETED: {"id": "d", "site": "s", "model": "a.b/c@1.0.0"},
        ChangeKind.MODEL_PUBLISHED: {"name": "a.b/c", "version": "1.0.0", "title": "T"},
        ChangeKind.COMMAND_UPDATED: {
            "id": "c",
            "kind": "set_properties",
            "status": "sent",
            "params": {"p": 1},
            "sequence": 4,
        },
    }
    for seq, (kind, payload) in enumerate(payloads.items(), start=1):
        message = convert.change_to_pb(
            ChangeEntry(seq, kind, 100, "d", "s", "a.b/c@1.0.0", payload=payload)
        )
        assert message.resume_token == str(seq)
        assert convert.change_kind_from_pb(message.kind) is kind
        assert message.WhichOneof("payload") is not None
    reported = convert.change_to_pb(
        ChangeEntry(1, ChangeKind.TWIN_REPORTED, 1, payload=payloads[ChangeKind.TWIN_REPORTED])
    )
    state = reported.twin.properties["t"]
    assert (state.value.double_value, state.quality) == (1.5, tm.QUALITY_UNCERTAIN)
    created = convert.change_to_pb(
        ChangeEntry(1, ChangeKind.DEVICE_CREATED, 1, payload=payloads[ChangeKind.DEVICE_CREATED])
    )
    assert created.device.location.latitude == 1.0
    # garbage payloads convert without raising (edge_revoked is internal: never watched)
    for kind in ChangeKind:
        if kind is ChangeKind.EDGE_REVOKED:
            continue
        convert.change_to_pb(
            ChangeEntry(
                1, kind, 1, payload={"properties": [1], "labels": 5, "params": "x", "revision": "y"}
            )
        )


def test_commands_convert_both_ways() -> None:
    command = CommandEntry(
        "c1",
        "d1",
        "e1",
        "invoke_service",
        "reboot",
        {"delay": 5},
        CommandStatus.SUCCEEDED,
        1,
        2,
        result={"ok": True},
        sequence=9,
    )
    message = convert.command_to_pb(command)
    assert message.kind == common_pb2.COMMAND_KIND_INVOKE_SERVICE
    assert message.status == common_pb2.COMMAND_STATUS_SUCCEEDED
    assert message.result["ok"].bool_value is True
    assert convert.command_kind_from_pb(message.kind) == "invoke_service"
    assert convert.command_status_from_pb(message.status) is CommandStatus.SUCCEEDED
    with pytest.raises(InvalidArgument):
        convert.command_kind_from_pb(0)
    with pytest.raises(InvalidArgument):
        convert.command_status_from_pb(77)


# --------------------------------------------------------------------------- failing storage


class FailingStorage:
    """Delegates to a real storage, raising ``failures[method]`` instead where given."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.failures: dict[str, Exception] = {}

    def __getattr__(self, name: str) -> Any:
        failure = self.failures.get(name)
        if failure is None:
            return getattr(self.inner, name)

        def fail(*_args: Any, **_kwargs: Any) -> Any:
            raise failure

        return fail


def test_storage_failures_reach_clients_as_statuses(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    failing = FailingStorage(storage)
    with running_registry(failing) as reg:  # a Storage by duck typing
        reg.publish_meter()
        reg.register("d1")
        failing.failures["get_device"] = RuntimeError("driver said: password=hunter2")
        with caplog.at_level(logging.ERROR, logger="cloud_registry.server.errors"):
            error = expect_error(
                Code.INTERNAL, reg.devices.GetDevice, devices_pb2.GetDeviceRequest(id="d1")
            )
        assert error.details() == "internal error"
        assert any("hunter2" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
        failing.failures["get_device"] = StorageUnavailable("database is shutting down")
        expect_error(Code.UNAVAILABLE, reg.devices.GetDevice, devices_pb2.GetDeviceRequest(id="d1"))
        del failing.failures["get_device"]
        assert reg.devices.GetDevice(devices_pb2.GetDeviceRequest(id="d1"), timeout=10).id == "d1"
        reg.assert_serving()


def test_the_client_library_reads_our_statuses(storage: Storage) -> None:
    with running_registry(storage) as reg:
        reg.publish_meter()
        device = reg.register("d1")
        reg.devices.UpdateDevice(
            devices_pb2.UpdateDeviceRequest(
                device=common_pb2.Device(id="d1", building="X"),
                expected_revision=device.revision,
                update_mask=["building"],
            ),
            timeout=10,
        )
        error = expect_error(
            Code.FAILED_PRECONDITION,
            reg.devices.UpdateDevice,
            devices_pb2.UpdateDeviceRequest(
                device=common_pb2.Device(id="d1", building="Y"),
                expected_revision=device.revision,
                update_mask=["building"],
            ),
        )
        translated = from_rpc_error(error)
        assert isinstance(translated, ClientStaleRevision)
        assert translated.current == device.revision + 1
        invalid = expect_error(
            Code.INVALID_ARGUMENT, reg.devices.GetDevice, devices_pb2.GetDeviceRequest(id="")
        )
        client_error: Any = from_rpc_error(invalid)
        assert [(v.field, v.description) for v in client_error.violations] == field_violations(
            invalid
        )
