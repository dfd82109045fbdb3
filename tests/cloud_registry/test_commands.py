"""Commands over a real registry (every storage engine): validation, synchronous and
asynchronous delivery through the edge's sync stream, the offline queue, fail-fast, TTL
expiry, wait deadlines, and routing to an edge connected to another replica."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from grpc import aio

from cloud_registry.api.v1 import commands_pb2, commands_pb2_grpc, common_pb2, edge_sync_pb2
from cloud_registry.storage.sqlite import SqliteStorage
from tests.cloud_registry.edge_client import EdgeClient, seed
from tests.cloud_registry.server_fixtures import (
    Registry,
    error_info,
    expect_error,
    field_violations,
    running_registry,
)
from thing_models.messages import value_from_protobuf, value_to_protobuf

T = TypeVar("T")
EDGES = {"edge-1": ["d1", "d2"], "edge-2": ["x1"]}
SET = common_pb2.COMMAND_KIND_SET_PROPERTIES
INVOKE = common_pb2.COMMAND_KIND_INVOKE_SERVICE
SUCCEEDED = common_pb2.COMMAND_STATUS_SUCCEEDED


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def request(
    device_id: str = "d1",
    params: Mapping[str, Any] | None = None,
    *,
    kind: int = SET,
    service: str = "",
    **fields: Any,
) -> commands_pb2.SendCommandRequest:
    out = commands_pb2.SendCommandRequest(
        device_id=device_id,
        kind=kind,  # type: ignore[arg-type]
        service=service,
        **fields,
    )
    for key, value in ({"setpoint": 21.5} if params is None else params).items():
        out.params[key].CopyFrom(value_to_protobuf(value))
    return out


def succeed(command: common_pb2.Command) -> edge_sync_pb2.CommandResult:
    """The edge's answer: success, echoing the parameters as the result."""
    result = edge_sync_pb2.CommandResult(command_id=command.id, status=SUCCEEDED)
    for key, value in command.params.items():
        result.result[key].CopyFrom(value)
    return result


def stub(target: str) -> tuple[aio.Channel, Any]:
    channel = aio.insecure_channel(target)
    return channel, commands_pb2_grpc.CommandServiceStub(channel)  # type: ignore[no-untyped-call]


async def until_status(commands: Any, command_id: str, status: int, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        command = await commands.GetCommand(commands_pb2.GetCommandRequest(id=command_id))
        if command.status == status:
            return command
        if time.monotonic() > deadline:
            raise AssertionError(f"command {command_id} stayed {command.status}")
        await asyncio.sleep(0.05)


@pytest.fixture
def seeded(registry: Registry) -> Registry:
    seed(registry.storage, EDGES)
    return registry


@pytest.fixture
def commands(seeded: Registry) -> Any:
    return commands_pb2_grpc.CommandServiceStub(seeded.channel)  # type: ignore[no-untyped-call]


# --------------------------------------------------------------------------- validation


def test_an_unknown_device_is_not_found(commands: Any) -> None:
    expect_error(grpc.StatusCode.NOT_FOUND, commands.SendCommand, request("nope"))


def test_parameters_are_validated_against_the_model(commands: Any) -> None:
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        commands.SendCommand,
        request(params={"setpoint": 99.0, "temperature": 1.0, "colour": 1, "mode": "cool"}),
    )
    fields = dict(field_violations(error))
    assert set(fields) == {
        "params.setpoint",
        "params.temperature",
        "params.colour",
        "params.mode",
    }
    assert "read-only" in fields["params.temperature"]
    assert "no property" in fields["params.colour"]

    cases = [
        (request(params={}), "params"),
        (request(params={"setpoint": 20.0}, service="reboot"), "service"),
        (request(kind=INVOKE, params={}), "service"),
        (request(kind=INVOKE, service="explode", params={}), "service"),
        (request(kind=INVOKE, service="reboot", params={}), "params.delay_s"),
        (request(kind=INVOKE, service="reboot", params={"delay_s": -1}), "params.delay_s"),
        (request(kind=common_pb2.COMMAND_KIND_UNSPECIFIED), "kind"),
        (request(ttl_ms=-1), "ttl_ms"),
        (request(""), "device_id"),
    ]
    for bad, field in cases:
        error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, commands.SendCommand, bad)
        assert field in dict(field_violations(error)), (bad, field_violations(error))


def test_get_command_of_an_unknown_id_is_not_found(commands: Any) -> None:
    expect_error(
        grpc.StatusCode.NOT_FOUND, commands.GetCommand, commands_pb2.GetCommandRequest(id="x")
    )


# --------------------------------------------------------------------------- delivery


def test_synchronous_command_returns_the_edges_answer(seeded: Registry) -> None:
    async def go() -> common_pb2.Command:
        async with EdgeClient(seeded.target, "edge-1", answer=succeed) as edge:
            channel, commands = stub(seeded.target)
            async with channel:
                command: common_pb2.Command = await commands.SendCommand(
                    request(wait=True, timeout_ms=10_000)
                )
            delivered = await edge.commands.get()
            assert delivered.id == command.id
            assert delivered.status == common_pb2.COMMAND_STATUS_QUEUED
            assert value_from_protobuf(delivered.params["setpoint"]) == 21.5
            return command

    command = run(go())
    assert command.status == SUCCEEDED
    assert command.device_id == "d1"
    assert command.edge_id == "edge-1"
    assert value_from_protobuf(command.result["setpoint"]) == 21.5
    assert command.sequence >= 1
    assert command.expires_ms > command.created_ms


def test_service_invocation_failure_is_reported(seeded: Registry) -> None:
    def fail(command: common_pb2.Command) -> edge_sync_pb2.CommandResult:
        return edge_sync_pb2.CommandResult(
            command_id=command.id, status=common_pb2.COMMAND_STATUS_FAILED, error="device busy"
        )

    async def go() -> common_pb2.Command:
        async with EdgeClient(seeded.target, "edge-1", answer=fail):
            channel, commands = stub(seeded.target)
            async with channel:
                invoke = request(kind=INVOKE, service="reboot", params={"delay_s": 5}, wait=True)
                result: common_pb2.Command = await commands.SendCommand(invoke)
                return result

    command = run(go())
    assert command.status == common_pb2.COMMAND_STATUS_FAILED
    assert command.error == "device busy"
    assert command.kind == INVOKE
    assert command.service == "reboot"


def test_asynchronous_command_is_sent_then_answered(seeded: Registry) -> None:
    async def go() -> None:
        async with EdgeClient(seeded.target, "edge-1") as edge:
            channel, commands = stub(seeded.target)
            async with channel:
                command = await commands.SendCommand(request())
                assert command.status == common_pb2.COMMAND_STATUS_QUEUED
                delivered = await asyncio.wait_for(edge.commands.get(), 10)
                assert delivered.id == command.id
                await until_status(commands, command.id, common_pb2.COMMAND_STATUS_SENT)
                await edge.send_result(command.id, SUCCEEDED, {"applied": True})
                done = await until_status(commands, command.id, SUCCEEDED)
                assert value_from_protobuf(done.result["applied"]) is True
                # A second answer does not change a final command.
                await edge.send_result(command.id, common_pb2.COMMAND_STATUS_FAILED)
                await asyncio.sleep(0.3)
                again = await commands.GetCommand(commands_pb2.GetCommandRequest(id=command.id))
                assert again.status == SUCCEEDED

    run(go())


def test_an_edge_cannot_answer_another_edges_command(seeded: Registry) -> None:
    async def go() -> None:
        async with EdgeClient(seeded.target, "edge-2") as intruder:
            channel, commands = stub(seeded.target)
            async with channel:
                command = await commands.SendCommand(request("d1"))
                await intruder.send_result(command.id, SUCCEEDED)
                await asyncio.sleep(0.3)
                stored = await commands.GetCommand(commands_pb2.GetCommandRequest(id=command.id))
                assert stored.status == common_pb2.COMMAND_STATUS_QUEUED

    run(go())


def test_offline_edge_gets_queued_commands_on_connect(seeded: Registry) -> None:
    async def go() -> None:
        channel, commands = stub(seeded.target)
        async with channel:
            queued = [
                await commands.SendCommand(request(params={"setpoint": 10.0 + i})) for i in range(3)
            ]
            assert {c.status for c in queued} == {common_pb2.COMMAND_STATUS_QUEUED}
            async with EdgeClient(seeded.target, "edge-1", answer=succeed) as edge:
                received = [await asyncio.wait_for(edge.commands.get(), 10) for _ in queued]
                assert [c.id for c in received] == [c.id for c in queued]  # in sequence order
                for command in queued:
                    await until_status(commands, command.id, SUCCEEDED)
                await asyncio.sleep(0.3)
                assert edge.commands.empty()  # each delivered once

    run(go())


def test_fail_fast_when_the_edge_is_offline(seeded: Registry, commands: Any) -> None:
    error = expect_error(
        grpc.StatusCode.UNAVAILABLE,
        commands.SendCommand,
        request(offline=commands_pb2.OFFLINE_POLICY_FAIL_FAST),
    )
    assert "edge-1" in error.details()
    assert error_info(error)[0] == "EDGE_OFFLINE"

    async def go() -> common_pb2.Command:
        async with EdgeClient(seeded.target, "edge-1", answer=succeed):
            channel, stub_ = stub(seeded.target)
            async with channel:
                result: common_pb2.Command = await stub_.SendCommand(
                    request(offline=commands_pb2.OFFLINE_POLICY_FAIL_FAST, wait=True)
                )
                return result

    assert run(go()).status == SUCCEEDED


def test_a_queued_command_expires_after_its_ttl(seeded: Registry) -> None:
    async def go() -> None:
        channel, commands = stub(seeded.target)
        async with channel:
            command = await commands.SendCommand(request(ttl_ms=200))
            await until_status(commands, command.id, common_pb2.COMMAND_STATUS_EXPIRED)
            async with EdgeClient(seeded.target, "edge-1") as edge:
                await asyncio.sleep(0.3)
                assert edge.commands.empty()  # never delivered
            # A waited command whose ttl runs out returns EXPIRED, not DEADLINE_EXCEEDED.
            waited = await commands.SendCommand(request(ttl_ms=300, wait=True, timeout_ms=10_000))
            assert waited.status == common_pb2.COMMAND_STATUS_EXPIRED

    run(go())


def test_wait_deadline_names_the_command_which_goes_on(seeded: Registry) -> None:
    async def go() -> None:
        async with EdgeClient(seeded.target, "edge-1") as edge:  # receives, never answers
            channel, commands = stub(seeded.target)
            async with channel:
                started = time.monotonic()
                with pytest.raises(aio.AioRpcError) as info:
                    await commands.SendCommand(request(wait=True, timeout_ms=400))
                assert time.monotonic() - started < 5
                error = info.value
                assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                delivered = await asyncio.wait_for(edge.commands.get(), 10)
                assert delivered.id in (error.details() or "")
                await until_status(commands, delivered.id, common_pb2.COMMAND_STATUS_SENT)
                await edge.send_result(delivered.id, SUCCEEDED)
                await until_status(commands, delivered.id, SUCCEEDED)

    run(go())


# --------------------------------------------------------------------------- replicas


def test_a_command_reaches_an_edge_connected_to_another_replica(tmp_path: Path) -> None:
    """Two replicas over one SQLite file: the change feed carries the command from the
    replica that accepted it to the one holding the edge's stream, and the answer back."""
    path = tmp_path / "shared.db"
    first = SqliteStorage(path)
    first.migrate()
    second = SqliteStorage(path)
    seed(first, EDGES)
    try:
        with (
            running_registry(first, replica_id="replica-a") as a,
            running_registry(second, replica_id="replica-b") as b,
        ):

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
            assert command.status == SUCCEEDED
            assert value_from_protobuf(command.result["setpoint"]) == 21.5
    finally:
        second.close()
        first.close()
