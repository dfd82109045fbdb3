"""WatchService over a real server: filters, payloads, resume after a disconnect without a
miss, expired and garbage tokens, falling behind, and the per-replica stream cap."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from cloud_registry.api.v1 import common_pb2, devices_pb2, twins_pb2, watch_pb2, watch_pb2_grpc
from cloud_registry.storage.base import EventEntry, IngestBatch, ReportedValue, Storage
from tests.cloud_registry.server_fixtures import (
    EXAMPLES,
    METER,
    Registry,
    error_info,
    field_violations,
    running_registry,
)
from thing_models.proto import thing_message_pb2 as tm

K = watch_pb2


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def token_now(reg: Registry) -> str:
    return str(reg.storage.latest_change_seq())


def take(call: Any, count: int) -> list[watch_pb2.Change]:
    """The next ``count`` changes of a Watch call (its deadline bounds the wait)."""
    out: list[watch_pb2.Change] = []
    for change in call:
        out.append(change)
        if len(out) == count:
            break
    return out


def _watch_stub(reg: Registry) -> Any:
    """A Watch stub on a channel with its own connection."""
    return watch_pb2_grpc.WatchServiceStub(reg.new_channel())  # type: ignore[no-untyped-call]


def watch(reg: Registry, timeout: float = 20, **fields: Any) -> Any:
    return reg.watch.Watch(watch_pb2.WatchRequest(**fields), timeout=timeout)


def test_changes_stream_in_commit_order_with_payloads(registry: Registry) -> None:
    start = token_now(registry)
    registry.publish_meter()
    registry.register("m1", labels={"floor": "1"})
    registry.twins.SetDesired(
        twins_pb2.SetDesiredRequest(
            device_id="m1", desired={"relay_closed": tm.Value(bool_value=True)}
        ),
        timeout=10,
    )
    registry.storage.ingest(
        IngestBatch(
            "edge-1",
            1,
            [ReportedValue("m1", "voltage_a", 230.5, 1000)],
            [EventEntry("ev-1", "m1", "phase_loss", "alert", 1000, {"phase": 2})],
        ),
        2_000_000_000_000,
    )
    registry.devices.DeleteDevice(devices_pb2.DeleteDeviceRequest(id="m1"), timeout=10)
    call = watch(registry, resume_token=start)
    changes = take(call, 6)
    call.cancel()
    kinds = [c.kind for c in changes]
    assert kinds[0] == K.CHANGE_KIND_MODEL_PUBLISHED
    assert changes[0].model_record.name == METER
    assert changes[0].model_record.version == "1.0.0"
    assert kinds[1] == K.CHANGE_KIND_DEVICE_CREATED
    assert changes[1].device.id == "m1"
    assert dict(changes[1].device.labels) == {"floor": "1"}
    assert changes[1].site == "site-a"
    assert changes[1].model.startswith(METER)
    assert kinds[2] == K.CHANGE_KIND_TWIN_DESIRED
    assert changes[2].twin.properties["relay_closed"].value.bool_value is True
    assert set(kinds[3:5]) == {K.CHANGE_KIND_TWIN_REPORTED, K.CHANGE_KIND_EVENT}
    reported = next(c for c in changes if c.kind == K.CHANGE_KIND_TWIN_REPORTED)
    assert reported.twin.properties["voltage_a"].value.double_value == 230.5
    event = next(c for c in changes if c.kind == K.CHANGE_KIND_EVENT)
    assert (event.event.id, event.event.level) == ("ev-1", "alert")
    assert event.event.params["phase"].int_value == 2
    assert kinds[5] == K.CHANGE_KIND_DEVICE_DELETED
    assert changes[5].device_id == "m1"
    tokens = [int(c.resume_token) for c in changes]
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 6
    assert all(c.ts_ms > 0 for c in changes)


def test_filters_by_kind_device_site_and_model(registry: Registry) -> None:
    registry.publish_meter()
    registry.publish_file(EXAMPLES / "models" / "device-health.yaml")
    start = token_now(registry)
    registry.register("a", site="north")
    registry.register("b", site="south")
    registry.register("c", site="south", model="community.common/device-health@1.0.0")
    registry.devices.MoveDevice(devices_pb2.MoveDeviceRequest(id="b", edge_id="e2"), timeout=10)

    def ids(count: int, **fields: Any) -> list[tuple[Any, str]]:
        call = watch(registry, resume_token=start, **fields)
        out = [(change.kind, change.device_id) for change in take(call, count)]
        call.cancel()
        return out

    created, updated = K.CHANGE_KIND_DEVICE_CREATED, K.CHANGE_KIND_DEVICE_UPDATED
    assert ids(3, site="south") == [(created, "b"), (created, "c"), (updated, "b")]
    assert ids(1, kinds=[updated]) == [(updated, "b")]
    assert ids(2, device_ids=["a", "c"]) == [(created, "a"), (created, "c")]
    assert ids(1, model="community.common/device-health") == [(created, "c")]
    assert ids(1, kinds=[created], site="north") == [(created, "a")]
    # a filtered stream's first change is the next match, not an unrelated one
    registry.register("z", site="north")
    assert ids(2, site="north") == [(created, "a"), (created, "z")]


def test_resume_after_a_disconnect_misses_nothing(registry: Registry) -> None:
    registry.publish_meter()
    call = watch(registry, resume_token=token_now(registry))
    registry.register("d1")
    first = take(call, 1)
    call.cancel()
    assert first[0].device.id == "d1"
    # while disconnected: several kinds of changes
    for name in ("d2", "d3", "d4"):
        registry.register(name)
    registry.twins.SetDesired(
        twins_pb2.SetDesiredRequest(
            device_id="d2", desired={"relay_closed": tm.Value(bool_value=False)}
        ),
        timeout=10,
    )
    registry.devices.DeleteDevice(devices_pb2.DeleteDeviceRequest(id="d3"), timeout=10)
    resumed = watch(registry, resume_token=first[0].resume_token)
    changes = take(resumed, 5)
    # and while connected again
    registry.register("d5")
    changes += take(resumed, 1)
    resumed.cancel()
    assert [(c.kind, c.device_id) for c in changes] == [
        (K.CHANGE_KIND_DEVICE_CREATED, "d2"),
        (K.CHANGE_KIND_DEVICE_CREATED, "d3"),
        (K.CHANGE_KIND_DEVICE_CREATED, "d4"),
        (K.CHANGE_KIND_TWIN_DESIRED, "d2"),
        (K.CHANGE_KIND_DEVICE_DELETED, "d3"),
        (K.CHANGE_KIND_DEVICE_CREATED, "d5"),
    ]
    tokens = [int(c.resume_token) for c in changes]
    assert tokens == sorted(set(tokens))
    assert tokens[0] > int(first[0].resume_token)


def test_watch_from_now_sees_only_new_changes(registry: Registry) -> None:
    registry.publish_meter()
    registry.register("old")
    call = watch(registry)
    wait_until(lambda: registry.server.watch_streams == 1)
    registry.register("new")
    change = take(call, 1)[0]
    call.cancel()
    assert change.device_id == "new"
    wait_until(lambda: registry.server.watch_streams == 0)


@pytest.mark.parametrize("token", ["abc", "-1", "1e5", "9" * 30, " 1", "1.0", "٣"])
def test_garbage_resume_tokens_are_invalid(registry: Registry, token: str) -> None:
    call = watch(registry, resume_token=token)
    with pytest.raises(grpc.RpcError) as info:
        next(call)
    error: Any = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error)[0][0] == "resume_token"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"kinds": [0]}, "kinds[0]"),
        ({"kinds": [1, 42]}, "kinds[1]"),
        ({"device_ids": ["ok", "has space"]}, "device_ids[1]"),
        ({"device_ids": ["x"] * 1001}, "device_ids"),
        ({"model": f"{METER}@1.0.0"}, "model"),
        ({"model": "NOT A MODEL"}, "model"),
        ({"site": "\x00"}, "site"),
    ],
)
def test_malformed_filters_are_invalid(
    registry: Registry, fields: dict[str, Any], field: str
) -> None:
    call = watch(registry, **fields)
    with pytest.raises(grpc.RpcError) as info:
        next(call)
    error: Any = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in {f for f, _ in field_violations(error)}
    assert registry.server.watch_streams == 0


def test_a_token_older_than_retention_is_out_of_range(registry: Registry) -> None:
    registry.publish_meter()
    registry.register("d1")
    time.sleep(0.01)
    cut = int(time.time() * 1000)
    time.sleep(0.01)
    registry.register("d2")
    registry.register("d3")
    assert registry.storage.prune_changes(cut) >= 2
    oldest = registry.storage.oldest_change_seq()
    call = watch(registry, resume_token=str(oldest - 2))
    with pytest.raises(grpc.RpcError) as info:
        next(call)
    error: Any = info.value
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE
    assert error_info(error)[0] == "RESUME_TOKEN_EXPIRED"
    # the token just before the oldest retained change still resumes
    resumed = watch(registry, resume_token=str(oldest - 1))
    assert [c.device_id for c in take(resumed, 2)] == ["d2", "d3"]
    resumed.cancel()


def test_a_stream_that_falls_behind_resumes_without_a_miss(registry: Registry) -> None:
    assert registry.server.watch is not None
    registry.server.watch.max_queue = 4
    registry.publish_meter()
    start = token_now(registry)
    for i in range(15):
        registry.register(f"d{i:02d}")
    received: list[str] = []
    token = start
    for _attempt in range(20):
        call = watch(registry, resume_token=token)
        try:
            for change in call:
                received.append(change.device_id)
                token = change.resume_token
                if len(received) == 15:
                    break
        except grpc.RpcError as exc:
            error: Any = exc
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert f"resume from token {token}" in error.details()
            assert error_info(error) == ("WATCH_OVERFLOW", {"resume_token": token})
        call.cancel()
        if len(received) == 15:
            break
    assert received == [f"d{i:02d}" for i in range(15)]


def test_watch_streams_are_capped_per_replica(storage: Storage) -> None:
    with running_registry(storage, max_concurrent_streams=2) as reg:
        calls = []
        for _ in range(2):
            stub = _watch_stub(reg)
            calls.append(stub.Watch(watch_pb2.WatchRequest(), timeout=20))
        wait_until(lambda: reg.server.watch_streams == 2)
        third = _watch_stub(reg).Watch(watch_pb2.WatchRequest(), timeout=20)
        with pytest.raises(grpc.RpcError) as info:
            next(third)
        error: Any = info.value
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        calls[0].cancel()
        wait_until(lambda: reg.server.watch_streams == 1)
        again = _watch_stub(reg).Watch(watch_pb2.WatchRequest(), timeout=20)
        wait_until(lambda: reg.server.watch_streams == 2)
        reg.publish_meter()
        assert take(again, 1)[0].kind == K.CHANGE_KIND_MODEL_PUBLISHED
        assert take(calls[1], 1)[0].kind == K.CHANGE_KIND_MODEL_PUBLISHED
        again.cancel()
        calls[1].cancel()


def test_stopping_the_server_ends_watches_resumably(storage: Storage) -> None:
    with running_registry(storage) as reg:
        reg.publish_meter()
        call = watch(reg, resume_token=token_now(reg))
        reg.register("d1")
        seen = take(call, 1)[0]
        reg.call(reg.server.stop(1.0))
        with pytest.raises(grpc.RpcError) as info:
            next(call)
        error: Any = info.value
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert f"resume from token {seen.resume_token}" in error.details()
    # another replica over the same storage resumes where the first left off
    with running_registry(storage) as other:
        other.devices.RegisterDevice(
            devices_pb2.RegisterDeviceRequest(
                device=common_pb2.Device(id="d2", model=f"{METER}@1.0.0", edge_id="e", site="s")
            ),
            timeout=10,
        )
        resumed = watch(other, resume_token=seen.resume_token)
        assert take(resumed, 1)[0].device_id == "d2"
        resumed.cancel()


def test_the_replica_prunes_changes_past_retention(storage: Storage) -> None:
    with running_registry(storage, watch_retention_s=0.3) as reg:
        reg.publish_meter()
        reg.register("d1")
        wait_until(lambda: reg.storage.oldest_change_seq() == 0)  # everything pruned
        assert reg.storage.latest_change_seq() >= 2
        call = watch(reg, resume_token="0")
        with pytest.raises(grpc.RpcError) as info:
            next(call)
        error: Any = info.value
        assert error.code() == grpc.StatusCode.OUT_OF_RANGE
        # a client at the newest token loses nothing: it resumes
        latest = str(reg.storage.latest_change_seq())
        resumed = watch(reg, resume_token=latest)
        # The stream must be subscribed before d2 is registered: with a 0.3 s retention the
        # change could otherwise be pruned before the resume is checked (correctly refused).
        wait_until(lambda: reg.server.watch_streams == 1)
        reg.register("d2")
        assert take(resumed, 1)[0].device_id == "d2"
        resumed.cancel()
