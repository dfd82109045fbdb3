"""The uplink against a REAL registry (SqliteStorage in tmp_path) and a real Outbox: delivery
and acks, a registry restart mid-stream (exactly once), a batch resent after a crash (acked as
a duplicate), a recreated outbox (sequence floor), and commands round-tripping."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from grpc import aio

from cloud_registry.api.v1 import commands_pb2, commands_pb2_grpc, common_pb2, edge_sync_pb2
from cloud_registry.storage.sqlite import SqliteStorage
from edge_agent.outbox import Outbox, OutboxBatch
from edge_agent.uplink import Uplink
from tests.cloud_registry.edge_client import MODEL_REF, EdgeClient, seed
from tests.cloud_registry.server_fixtures import running_registry
from thing_models.messages import Message, MessageKind, to_protobuf, value_to_protobuf

EDGE = "edge-1"
DEVICES = ["d1", "d2"]
FAR = 2**62
BIG = 1 << 30


def report(device: str, n: int) -> Message:
    return Message(
        id=f"{device}-m{n}",
        kind=MessageKind.PROPERTY_REPORT,
        model=MODEL_REF,
        device_id=device,
        ts_ms=1_700_000_000_000 + n,
        params={"temperature": float(n)},
    )


def history(storage: Any, device: str) -> list[float]:
    points, _more = storage.history(device, "temperature", 0, FAR, 100_000)
    return [p.value for p in points]


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def open_storage(path: Path) -> SqliteStorage:
    storage = SqliteStorage(path)
    storage.migrate()
    return storage


def open_outbox(path: Path) -> Outbox:
    return Outbox(path, max_bytes=BIG, max_age_s=3600)


async def succeed(command: common_pb2.Command) -> edge_sync_pb2.CommandResult:
    result = edge_sync_pb2.CommandResult(
        command_id=command.id, status=common_pb2.COMMAND_STATUS_SUCCEEDED
    )
    for key, value in command.params.items():
        result.result[key].CopyFrom(value)
    return result


class RunningUplink:
    """An Uplink running in its own thread and event loop."""

    def __init__(self, uplink: Uplink) -> None:
        self.uplink = uplink
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="uplink", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            asyncio.run(self.uplink.run())
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self) -> None:
        self.uplink.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the uplink did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def storage_path(tmp_path: Path) -> Path:
    return tmp_path / "registry.db"


@pytest.fixture
def storage(storage_path: Path) -> Iterator[SqliteStorage]:
    storage = open_storage(storage_path)
    seed(storage, {EDGE: DEVICES, "edge-2": ["x1"]})
    try:
        yield storage
    finally:
        storage.close()


def make_uplink(target: str, outbox: Outbox, **kwargs: Any) -> Uplink:
    options: dict[str, Any] = {
        "agent_version": "test",
        "config_version": "c1",
        "inventory": lambda: [(d, MODEL_REF, True) for d in DEVICES],
        "on_command": succeed,
        "max_batch_messages": 20,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.3,
        "idle_poll_s": 0.02,
    }
    options.update(kwargs)
    return Uplink(target, EDGE, outbox, **options)


@pytest.fixture
def started() -> Iterator[list[RunningUplink]]:
    running: list[RunningUplink] = []
    try:
        yield running
    finally:
        for item in running:
            item.stop()


def test_appended_messages_are_stored_acked_and_removed(
    storage: SqliteStorage, tmp_path: Path, started: list[RunningUplink]
) -> None:
    with running_registry(storage) as registry, open_outbox(tmp_path / "outbox.db") as outbox:
        outbox.append([report("d1", n) for n in range(50)])
        uplink = make_uplink(registry.target, outbox)
        started.append(RunningUplink(uplink))
        wait_until(lambda: outbox.stats().rows == 0)
        # appended while connected: goes out live
        outbox.append([report("d2", n) for n in range(7)])
        uplink.poke()
        wait_until(lambda: outbox.stats().rows == 0)
        assert history(storage, "d1") == [float(n) for n in range(50)]
        assert history(storage, "d2") == [float(n) for n in range(7)]
        assert storage.get_twin("d1").reported["temperature"].value == 49.0
        assert storage.get_device("d1").online
        stats = uplink.stats
        assert stats.connected
        assert stats.messages_sent == 57
        assert stats.messages_stored == 57
        assert stats.batches_acked == stats.batches_sent >= 3  # 50 messages, batches of 20
        assert stats.in_flight == 0
        assert stats.duplicates == 0
        assert stats.rejected == 0
        assert stats.last_ack_ms is not None
        assert outbox.stats().in_flight_batches == 0
        started.pop().stop()
        assert not uplink.stats.connected


def test_registry_restart_mid_stream_stores_everything_exactly_once(
    storage: SqliteStorage, storage_path: Path, tmp_path: Path, started: list[RunningUplink]
) -> None:
    port = free_port()
    total = 600
    with open_outbox(tmp_path / "outbox.db") as outbox:
        # The writer appends in four gated phases: before the stop, while the registry stops,
        # while it is down, after the restart.
        gates = [threading.Event() for _ in range(4)]
        reached = [threading.Event() for _ in range(4)]

        def writer() -> None:
            for phase in range(4):
                assert gates[phase].wait(60)
                for start in range(phase * 150, phase * 150 + 150, 10):
                    outbox.append([report("d1", n) for n in range(start, start + 10)])
                    time.sleep(0.002)
                reached[phase].set()

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        with running_registry(storage, listen=f"127.0.0.1:{port}") as registry:
            uplink = make_uplink(registry.target, outbox)
            started.append(RunningUplink(uplink))
            gates[0].set()
            wait_until(lambda: uplink.stats.batches_acked >= 2)
            gates[1].set()  # the stop below happens while this phase is being written
        storage.close()
        wait_until(lambda: not uplink.stats.connected)
        assert reached[1].wait(30)
        gates[2].set()
        assert reached[2].wait(30)
        assert outbox.stats().rows >= 150  # left while the registry was down
        restarted = open_storage(storage_path)
        try:
            with running_registry(restarted, listen=f"127.0.0.1:{port}"):
                gates[3].set()
                assert reached[3].wait(30)
                thread.join(10)
                wait_until(lambda: outbox.stats().rows == 0, timeout=60)
                wait_until(lambda: uplink.stats.sessions >= 2)
                values = history(restarted, "d1")
            stats = uplink.stats
            started.pop().stop()
        finally:
            restarted.close()
    assert sorted(values) == [float(n) for n in range(total)]  # each exactly once
    assert stats.reconnects >= 1
    assert stats.sessions >= 2


def test_a_batch_resent_after_a_crash_is_acked_as_duplicate(
    storage: SqliteStorage, tmp_path: Path, started: list[RunningUplink]
) -> None:
    path = tmp_path / "outbox.db"
    with running_registry(storage) as registry:
        # First life: assign and send batch 1, crash before its ack reaches the outbox.
        with open_outbox(path) as outbox:
            outbox.append([report("d1", n) for n in range(5)])
            batch = outbox.next_batch(100)
            assert batch is not None
            sequence = outbox.assign_sequence(batch)

            async def send() -> edge_sync_pb2.BatchAck:
                async with EdgeClient(registry.target, EDGE) as edge:
                    await edge.send_batch(sequence, [to_protobuf(m) for m in batch.messages])
                    return await edge.wait_ack(sequence)

            ack = asyncio.run(send())
            assert ack.stored == 5
            assert not ack.duplicate
        # Second life: the uplink resends it with the same sequence.
        with open_outbox(path) as outbox:
            assert [b.sequence for b in outbox.pending_batches()] == [sequence]
            outbox.append([report("d1", 5)])
            uplink = make_uplink(registry.target, outbox)
            started.append(RunningUplink(uplink))
            wait_until(lambda: outbox.stats().rows == 0)
            stats = uplink.stats
            started.pop().stop()
    assert stats.batches_resent == 1
    assert stats.duplicates == 1
    assert history(storage, "d1") == [float(n) for n in range(6)]


def test_a_recreated_outbox_does_not_reuse_sequences(
    storage: SqliteStorage, tmp_path: Path, started: list[RunningUplink]
) -> None:
    with running_registry(storage) as registry:
        with open_outbox(tmp_path / "old.db") as old:
            old.append([report("d1", n) for n in range(30)])
            uplink = make_uplink(registry.target, old)
            started.append(RunningUplink(uplink))
            wait_until(lambda: old.stats().rows == 0)
            started.pop().stop()
            last = old.stats().last_sequence
        assert last >= 2
        with open_outbox(tmp_path / "new.db") as new:  # the old file was lost
            new.append([report("d1", n) for n in range(30, 40)])
            uplink = make_uplink(registry.target, new)
            started.append(RunningUplink(uplink))
            wait_until(lambda: new.stats().rows == 0)
            stats = uplink.stats
            started.pop().stop()
            assert new.stats().last_sequence > last
    assert stats.duplicates == 0
    assert history(storage, "d1") == [float(n) for n in range(40)]


def test_a_command_reaches_on_command_and_its_result_returns(
    storage: SqliteStorage, tmp_path: Path, started: list[RunningUplink]
) -> None:
    received: list[common_pb2.Command] = []

    async def on_command(command: common_pb2.Command) -> edge_sync_pb2.CommandResult:
        received.append(command)
        return await succeed(command)

    with running_registry(storage) as registry, open_outbox(tmp_path / "outbox.db") as outbox:
        uplink = make_uplink(registry.target, outbox, on_command=on_command)
        started.append(RunningUplink(uplink))
        wait_until(lambda: uplink.stats.connected)

        async def send() -> common_pb2.Command:
            async with aio.insecure_channel(registry.target) as channel:
                stub: Any = commands_pb2_grpc.CommandServiceStub(channel)  # type: ignore[no-untyped-call]
                request = commands_pb2.SendCommandRequest(
                    device_id="d1",
                    kind=common_pb2.COMMAND_KIND_SET_PROPERTIES,
                    wait=True,
                    timeout_ms=10_000,
                )
                request.params["setpoint"].CopyFrom(value_to_protobuf(21.5))
                command: common_pb2.Command = await stub.SendCommand(request, timeout=20)
                return command

        command = asyncio.run(send())
        assert command.status == common_pb2.COMMAND_STATUS_SUCCEEDED
        assert command.result["setpoint"].double_value == 21.5
        assert [c.id for c in received] == [command.id]
        assert received[0].device_id == "d1"
        assert uplink.stats.commands == 1


def test_pending_batches_over_a_lowered_registry_limit_are_batched_again(
    storage: SqliteStorage, tmp_path: Path, started: list[RunningUplink]
) -> None:
    """Batches assigned under a larger limit: one the registry stored is acknowledged locally,
    the ones it has not are released and sent again, in order, in batches that fit."""
    path = tmp_path / "outbox.db"
    with running_registry(storage) as registry, open_outbox(path) as outbox:
        outbox.append([report("d1", n) for n in range(30)])
        stored = outbox.next_batch(12)
        assert stored is not None
        stored_seq = outbox.assign_sequence(stored)

        async def send() -> edge_sync_pb2.BatchAck:
            async with EdgeClient(registry.target, EDGE) as edge:
                await edge.send_batch(stored_seq, list(outbox_protos(stored)))
                return await edge.wait_ack(stored_seq)

        assert asyncio.run(send()).stored == 12
        unsent = outbox.next_batch(18)  # assigned, never sent (a crash)
        assert unsent is not None
        outbox.assign_sequence(unsent)
    with (
        running_registry(storage, sync_max_batch_messages=5) as registry,
        open_outbox(path) as outbox,
    ):
        assert [b.count for b in outbox.pending_batches()] == [12, 18]
        uplink = make_uplink(registry.target, outbox)
        started.append(RunningUplink(uplink))
        wait_until(lambda: outbox.stats().rows == 0)
        stats = uplink.stats
        started.pop().stop()
    assert stats.duplicates == 0
    assert stats.reconnects == 0  # no batch over the limit was sent
    assert history(storage, "d1") == [float(n) for n in range(30)]


def outbox_protos(batch: OutboxBatch) -> list[Any]:
    return [to_protobuf(m) for m in batch.messages]
