"""The admin API over a real Unix socket in tmp_path, against an in-memory agent."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.admin import (
    MAX_LINE,
    AdminBadRequest,
    AdminError,
    AdminProtocolError,
    AdminRequestError,
    AdminServer,
    AdminSocketError,
    AgentNotRunning,
    parse_request,
    status_to_json,
)
from edge_agent.admin_client import AdminClient, parse_reply, request_sync
from edge_agent.errors import AgentError
from tests.edge_agent.admin_fake import (
    FakeControl,
    agent_status,
    device_status,
    message,
    running_agent,
)

Body = Callable[[AdminServer, FakeControl, Path], Awaitable[None]]


def serve(tmp_path: Path, body: Body, **options: Any) -> None:
    async def main() -> None:
        control = FakeControl()
        path = tmp_path / "admin.sock"
        server = AdminServer(control, path, **options)
        await server.start()
        try:
            await asyncio.wait_for(body(server, control, path), 30)
        finally:
            await server.stop()

    asyncio.run(main())


async def raw(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(str(path), limit=4 * MAX_LINE)


async def ask(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes
) -> dict[str, Any]:
    writer.write(line)
    await writer.drain()
    reply: dict[str, Any] = json.loads(await reader.readline())
    return reply


def test_every_operation_round_trips(tmp_path: Path) -> None:
    async def body(server: AdminServer, control: FakeControl, path: Path) -> None:
        async with AdminClient(path) as client:
            status = await client.request("status")
            assert status == json.loads(json.dumps(status_to_json(agent_status())))
            assert status["devices"]["meter-1"]["diagnostics"]["exception_codes"] == {
                "2": 1,
                "4": 2,
            }
            devices = await client.request("devices")
            assert [d["id"] for d in devices] == ["meter-1", "meter-[2]"]
            assert devices[1]["state"] == "offline"
            assert devices[1]["last_error"] == "ModbusTimeoutError: 1 s"
            read = await client.request("read", device="meter-1", property="voltage")
            assert read == {
                "device": "meter-1",
                "property": "voltage",
                "ts_ms": 1_700_000_000_123,
                "value": 230.5,
                "quality": "good",
                "reason": "",
            }
            nan = await client.request("read", device="meter-1", property="nan")
            assert (nan["value"], nan["quality"], nan["reason"]) == ("nan", "bad", "sentinel")
            written = await client.request(
                "write", device="meter-1", property="setpoint", value=[1, 2]
            )
            assert written["read_back"] == [1, 2]
            assert control.written == [("meter-1", "setpoint", [1, 2])]
            result = await client.request(
                "invoke", device="meter-1", service="reset", args={"hard": True}
            )
            assert result["result"] == {"done": True, "args": {"hard": True}}
            assert (await client.request("invoke", device="meter-1", service="reset"))[
                "result"
            ] == {"done": True, "args": {}}

    serve(tmp_path, body)


def test_agent_errors_become_typed_error_replies(tmp_path: Path) -> None:
    async def body(server: AdminServer, control: FakeControl, path: Path) -> None:
        async with AdminClient(path) as client:
            with pytest.raises(AdminRequestError, match="unknown device 'nope'") as info:
                await client.request("read", device="nope", property="voltage")
            assert info.value.type == "AgentCommandError"
            with pytest.raises(AdminRequestError, match="unknown service 'fly'"):
                await client.request("invoke", device="meter-1", service="fly")
            control.fail_status = True
            with pytest.raises(AdminRequestError, match="status exploded") as info:
                await client.request("status")
            assert info.value.type == "RuntimeError"
            control.fail_status = False
            assert (await client.request("status"))["edge_id"] == "edge-1"  # still usable

    serve(tmp_path, body)


def test_socket_is_owner_only_in_a_new_private_folder(tmp_path: Path) -> None:
    async def main() -> None:
        path = tmp_path / "run" / "edge" / "admin.sock"
        server = AdminServer(FakeControl(), path)
        await server.start()
        try:
            assert stat.S_ISSOCK(path.stat().st_mode)
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        finally:
            await server.stop()
        assert not path.exists()

    asyncio.run(main())


def test_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "admin.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: an agent killed with -9
    assert path.exists()

    async def body(server: AdminServer, control: FakeControl, path: Path) -> None:
        async with AdminClient(path) as client:
            assert (await client.request("status"))["running"] is True

    serve(tmp_path, body)


def test_a_second_agent_on_the_same_socket_is_refused(tmp_path: Path) -> None:
    async def body(server: AdminServer, control: FakeControl, path: Path) -> None:
        second = AdminServer(FakeControl(), path)
        with pytest.raises(AdminSocketError, match=f"{path}: another agent is listening"):
            await second.start()
        await second.stop()  # a no-op: it must not remove the first agent's socket
        async with AdminClient(path) as client:
            assert (await client.request("status"))["edge_id"] == "edge-1"

    serve(tmp_path, body)


def test_a_file_that_is_not_a_socket_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "admin.sock"
    path.write_text("precious")
    server = AdminServer(FakeControl(), path)
    with pytest.raises(AdminSocketError, match="exists and is not a socket"):
        asyncio.run(server.start())
    assert path.read_text() == "precious"


def test_an_unbindable_path_is_an_admin_error(tmp_path: Path) -> None:
    path = tmp_path / ("x" * 120) / "admin.sock"  # longer than sun_path
    with pytest.raises(AdminSocketError, match="cannot listen"):
        asyncio.run(AdminServer(FakeControl(), path).start())


HOSTILE = [
    (b"not json\n", "request: not JSON"),
    (b"\xff\xfe\x00\n", "request: not JSON"),
    (b"[1, 2]\n", "request: expected a JSON object, got list"),
    (b'"status"\n', "request: expected a JSON object, got str"),
    (b"{}\n", "op: missing"),
    (b'{"op": 5}\n', "op: expected str, got int"),
    (b'{"op": "reboot"}\n', "op: unknown 'reboot'"),
    (b'{"op": "read", "property": "v"}\n', "device: missing"),
    (b'{"op": "read", "device": 1, "property": "v"}\n', "device: expected str, got int"),
    (b'{"op": "read", "device": "", "property": "v"}\n', "device: must not be empty"),
    (b'{"op": "read", "device": "meter-1"}\n', "property: missing"),
    (b'{"op": "write", "device": "meter-1", "property": "p"}\n', "value: missing"),
    (
        b'{"op": "invoke", "device": "meter-1", "service": "reset", "args": [1]}\n',
        "args: expected dict, got list",
    ),
    (b'{"op": "tail", "count": 0}\n', "count: must be > 0"),
    (b'{"op": "tail", "count": true}\n', "count: expected int, got bool"),
    (b'{"op": "tail", "device": null}\n', "device: expected str, got NoneType"),
    (b"[" * 100_000 + b"\n", "request: not JSON"),
    (b"{" + b" " * (MAX_LINE + 10) + b"}\n", f"request: line longer than {MAX_LINE} bytes"),
    (b"x" * (3 * MAX_LINE) + b"\n", f"request: line longer than {MAX_LINE} bytes"),
]


def test_hostile_requests_get_error_replies_and_the_connection_stays_usable(
    tmp_path: Path,
) -> None:
    async def body(server: AdminServer, control: FakeControl, path: Path) -> None:
        reader, writer = await raw(path)
        for line, expected in HOSTILE:
            reply = await ask(reader, writer, line)
            assert reply["ok"] is False, line[:60]
            assert reply["error"]["type"] == "BadRequest"
            assert expected in reply["error"]["message"], (line[:60], reply)
            assert len(json.dumps(reply)) < 1000
        assert (await ask(reader, writer, b'{"op": "status"}\n'))["ok"] is True
        assert (await ask(reader, writer, b'\n\n{"op": "devices"}\n'))["ok"] is True
        writer.write(b'{"op": "status"}')  # no newline, then EOF: still answered
        writer.write_eof()
        assert json.loads(await reader.readline())["ok"] is True
        assert await reader.read() == b""
        writer.close()
        assert control.written == []

    serve(tmp_path, body)


def test_connections_are_bounded(tmp_path: Path) -> None:
    async def body(server: AdminServer, control: FakeControl, path: Path) -> None:
        clients = [AdminClient(path), AdminClient(path)]
        for client in clients:
            await client.request("devices")  # registered as served
        assert server.connections == 2
        with pytest.raises(AdminRequestError, match="more than 2 admin connections") as info:
            async with AdminClient(path) as third:
                await third.request("status")
        assert info.value.type == "Busy"
        await clients[0].close()
        while server.connections > 1:  # the server sees the close
            await asyncio.sleep(0.01)
        async with AdminClient(path) as fourth:
            assert (await fourth.request("status"))["edge_id"] == "edge-1"
        await clients[1].close()

    serve(tmp_path, body, max_connections=2)


def test_idle_connections_are_closed(tmp_path: Path) -> None:
    async def body(server: AdminServer, control: FakeControl, path: Path) -> None:
        reader, writer = await raw(path)
        assert (await ask(reader, writer, b'{"op": "devices"}\n'))["ok"] is True
        assert await reader.read() == b""  # closed after 0.1 s without a request
        writer.close()
        assert server.connections == 0

    serve(tmp_path, body, idle_timeout_s=0.1)


def test_tail_streams_one_device_and_ends_after_count(tmp_path: Path) -> None:
    async def body(server: AdminServer, control: FakeControl, path: Path) -> None:
        async with AdminClient(path) as client:
            stream = client.tail(device="meter-1", count=3)
            first = asyncio.ensure_future(stream.__anext__())
            await control.subscribed.wait()
            for n in range(4):
                control.publish(message("meter-2", n))
                control.publish(message("meter-1", n))
            received = [await first] + [m async for m in stream]
        assert [(m["device_id"], m["params"]["n"]) for m in received] == [
            ("meter-1", 0),
            ("meter-1", 1),
            ("meter-1", 2),
        ]
        assert received[0]["kind"] == "property_report"
        await control.unsubscribed.wait()
        assert control.queues == []

    serve(tmp_path, body)


def test_tail_ends_when_the_client_closes(tmp_path: Path) -> None:
    async def body(server: AdminServer, control: FakeControl, path: Path) -> None:
        client = AdminClient(path)
        stream = client.tail()
        first = asyncio.ensure_future(stream.__anext__())
        await control.subscribed.wait()
        control.publish(message("meter-1", 1))
        assert (await first)["params"] == {"n": 1}
        await stream.aclose()
        await client.close()
        await control.unsubscribed.wait()
        assert control.queues == []

    serve(tmp_path, body)


def test_a_slow_tail_client_never_blocks_the_agent_or_other_clients(tmp_path: Path) -> None:
    async def body(server: AdminServer, control: FakeControl, path: Path) -> None:
        reader, writer = await raw(path)
        assert (await ask(reader, writer, b'{"op": "tail"}\n'))["result"] == {"streaming": True}
        await control.subscribed.wait()
        # the client reads nothing: socket buffers fill, the server waits in drain(), and the
        # agent's bounded queue drops instead of blocking
        for n in range(2000):
            control.publish(message("meter-1", n, pad=2000))
            if n % 50 == 0:
                await asyncio.sleep(0)  # let the server write what it can
        assert control.dropped > 0
        async with AdminClient(path) as other:
            assert (await other.request("status"))["edge_id"] == "edge-1"
        # what the slow client does get is in order, with gaps
        numbers = []
        for _ in range(20):
            numbers.append(json.loads(await reader.readline())["params"]["n"])
        assert numbers == sorted(numbers)
        writer.close()

    serve(tmp_path, body, tail_queue=16)


def test_stop_ends_live_connections_and_removes_the_socket(tmp_path: Path) -> None:
    async def main() -> None:
        path = tmp_path / "admin.sock"
        control = FakeControl()
        server = AdminServer(control, path)
        await server.start()
        reader, writer = await raw(path)
        assert (await ask(reader, writer, b'{"op": "tail"}\n'))["ok"] is True
        idle_reader, idle_writer = await raw(path)
        assert (await ask(idle_reader, idle_writer, b'{"op": "devices"}\n'))["ok"] is True
        await asyncio.wait_for(server.stop(), 5)
        assert await reader.read() == b""
        assert await idle_reader.read() == b""
        assert not path.exists()
        assert control.queues == []
        writer.close()
        idle_writer.close()
        with pytest.raises(AgentNotRunning):
            await AdminClient(path).request("status")

    asyncio.run(main())


def test_client_errors_name_the_socket(tmp_path: Path) -> None:
    missing = tmp_path / "missing.sock"
    with pytest.raises(AgentNotRunning, match=str(missing)) as info:
        request_sync(missing, "status")
    assert isinstance(info.value, AdminError)
    assert isinstance(info.value, AgentError)
    stale = tmp_path / "stale.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(stale))
    sock.close()
    with pytest.raises(AgentNotRunning, match=str(stale)):
        request_sync(stale, "status")


def test_request_sync_talks_to_a_running_server(tmp_path: Path) -> None:
    from tests.edge_agent.admin_fake import server_thread

    path = tmp_path / "admin.sock"
    with server_thread(path):
        assert request_sync(path, "devices")[0]["id"] == "meter-1"
        with pytest.raises(AdminRequestError, match="device: missing"):
            request_sync(path, "read", property="voltage")


def test_a_result_that_is_not_json_is_an_error_reply(tmp_path: Path) -> None:
    async def body(server: AdminServer, control: FakeControl, path: Path) -> None:
        devices = dict(control.current.devices)
        devices["meter-1"] = device_status("meter-1", poll_interval_s=float("nan"))
        control.current = dataclasses.replace(control.current, devices=devices)
        async with AdminClient(path) as client:
            with pytest.raises(AdminRequestError, match="the status result") as info:
                await client.request("status")
            assert info.value.type == "ReplyNotJSON"
            read = await client.request("read", device="meter-1", property="voltage")
            assert read["value"] == 230.5

    serve(tmp_path, body)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
REQUESTS = st.one_of(
    st.binary(max_size=64),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"op": st.sampled_from(["status", "tail", "read", "x"]) | JSON},
        optional={"device": JSON, "count": JSON},
    ).map(lambda v: json.dumps(v).encode()),
)


@given(REQUESTS)
def test_parse_request_parses_or_raises_its_error(line: bytes) -> None:
    try:
        request = parse_request(line)
    except AdminBadRequest as exc:
        field = exc.field
    else:
        assert request["op"] in {"status", "devices", "read", "write", "invoke", "tail"}
        return
    assert field in {"request", "op"}


@given(JSON)
def test_parse_reply_returns_or_raises_an_admin_error(reply: object) -> None:
    try:
        result = parse_reply(reply, "admin.sock")
    except AdminRequestError:
        assert isinstance(reply, dict)
        assert reply["ok"] is False
        return
    except AdminProtocolError as exc:
        message = str(exc)
    else:
        assert isinstance(reply, dict)
        assert reply["ok"] is True
        assert result == reply.get("result")
        return
    assert "admin.sock" in message


def test_a_real_agent_behind_the_socket(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_agent(tmp_path) as (agent, simulator):
            # the agent serves its own admin socket (EdgeAgent.run starts it)
            async with AdminClient(agent.config.admin_socket) as client:
                status = await client.request("status")
                assert status["devices"]["meter-1"]["diagnostics"]["state"] == "online"
                assert status["uplink"]["connected"] is False
                devices = await client.request("devices")
                assert devices[0]["protocol"] == "modbus"
                read = await client.request("read", device="meter-1", property="voltage_a")
                assert read["quality"] == "good"
                assert 0 <= read["value"] <= 500
                await client.request("write", device="meter-1", property="relay_closed", value=True)
                assert await simulator.get_value("relay_closed") is True
                with pytest.raises(AdminRequestError, match="no property 'nope'"):
                    await client.request("read", device="meter-1", property="nope")
                with pytest.raises(AdminRequestError) as info:
                    await client.request("read", device="ghost", property="voltage_a")
                assert info.value.type == "AgentCommandError"
            async with AdminClient(agent.config.admin_socket) as tail:
                messages = [m async for m in tail.tail(device="meter-1", count=2)]
            assert {m["device_id"] for m in messages} == {"meter-1"}

    asyncio.run(asyncio.wait_for(main(), 40))
