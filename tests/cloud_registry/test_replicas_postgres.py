"""Two registry replicas over one PostgreSQL database, as behind a load balancer: a watcher on
one replica sees what is written on the other, and a command submitted on one reaches the edge
whose sync stream is held by the other (the change feed travels by LISTEN/NOTIFY)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from cloud_registry.api.v1 import commands_pb2, common_pb2, watch_pb2
from cloud_registry.storage.postgres import PostgresStorage
from tests.cloud_registry.edge_client import EdgeClient, seed
from tests.cloud_registry.server_fixtures import Registry, running_registry
from tests.cloud_registry.test_commands import EDGES, request, run, stub, succeed
from thing_models.messages import value_from_protobuf


@pytest.fixture
def two_replicas(fresh_postgres_dsn: str) -> Iterator[tuple[Registry, Registry]]:
    first = PostgresStorage(fresh_postgres_dsn, replica_id="replica-a")
    second = PostgresStorage(fresh_postgres_dsn, replica_id="replica-b")
    try:
        with (
            running_registry(first, replica_id="replica-a") as a,
            running_registry(second, replica_id="replica-b") as b,
        ):
            yield a, b
    finally:
        second.close()
        first.close()


def test_a_watcher_on_one_replica_sees_a_change_written_on_the_other(
    two_replicas: tuple[Registry, Registry],
) -> None:
    a, b = two_replicas
    received: list[Any] = []
    call = a.watch.Watch(
        watch_pb2.WatchRequest(kinds=[watch_pb2.CHANGE_KIND_DEVICE_CREATED]), timeout=30
    )

    def read() -> None:
        for change in call:
            received.append(change)
            return

    reader = threading.Thread(target=read)
    reader.start()
    # The stream is open on A before the write on B.
    for _ in range(200):
        if a.server.watch_streams == 1:
            break
        threading.Event().wait(0.01)
    b.publish_meter()
    b.register("m-on-b")
    reader.join(20)
    call.cancel()
    assert [c.device_id for c in received] == ["m-on-b"]


def test_a_command_reaches_an_edge_connected_to_the_other_replica(
    two_replicas: tuple[Registry, Registry],
) -> None:
    a, b = two_replicas
    seed(a.storage, EDGES)

    async def go() -> common_pb2.Command:
        async with EdgeClient(b.target, "edge-1", answer=succeed) as edge:
            channel, commands = stub(a.target)
            async with channel:
                command: common_pb2.Command = await commands.SendCommand(
                    request(
                        wait=True,
                        timeout_ms=15_000,
                        offline=commands_pb2.OFFLINE_POLICY_FAIL_FAST,
                    )
                )
            assert (await edge.commands.get()).id == command.id
            return command

    command = run(go())
    assert command.status == common_pb2.COMMAND_STATUS_SUCCEEDED
    assert value_from_protobuf(command.result["setpoint"]) == 21.5
