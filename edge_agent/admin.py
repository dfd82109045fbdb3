"""The agent's local admin API: newline-delimited JSON over a Unix socket only its owner can use.

::

    server = AdminServer(agent, config.admin_socket)
    await server.start()      # AdminSocketError: another agent listens there, or no bind
    ...
    await server.stop()       # closes every connection (tails included) and removes the file

Requests are one JSON object per line (at most :data:`MAX_LINE` bytes)::

    {"op": "status"}                                       -> the AgentStatus as JSON
    {"op": "devices"}                                      -> [{"id", "model", "phase", ...}]
    {"op": "read", "device": D, "property": P}             -> {"ts_ms", "value", "quality", ...}
    {"op": "write", "device": D, "property": P, "value": V} -> {"read_back": V | null}
    {"op": "invoke", "device": D, "service": S, "args": {}} -> {"result": {...}}
    {"op": "tail", "device": D?, "count": N?}              -> {"streaming": true}, then one
        canonical message (thing_models.messages JSON) per line until the client closes
        (or N messages were sent; then the server closes)

Replies are ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {"type", "message"}}``.
Bad requests (not JSON, too long, not an object, unknown op, missing or wrongly typed fields)
get an error reply naming the field, and the connection stays usable. An exception from the
agent becomes an error reply with its type name and message. At most ``max_connections``
connections are served at once; one more gets a ``Busy`` error and is closed, and a
connection idle for ``idle_timeout_s`` is closed.

Exceptions (this module and :mod:`edge_agent.admin_client`)::

    AgentError (edge_agent.errors)
     +-- AdminError
          +-- AdminSocketError     the server cannot own its socket (in use, not a socket, bind)
          +-- AdminBadRequest      server: a request refused before the agent sees it (.field)
          +-- AgentNotRunning      client: no socket there, or nobody listening
          +-- AdminProtocolError   client: the reply is not the protocol (or a timeout)
          +-- AdminRequestError    client: the agent answered ok=false (.type, .message)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edge_agent.errors import AgentError
from thing_models.messages import Message, Quality, to_json_dict

if TYPE_CHECKING:
    from edge_agent.status import AgentStatus
    from edge_agent.supervisor import EdgeAgent

__all__ = [
    "MAX_LINE",
    "AdminBadRequest",
    "AdminError",
    "AdminProtocolError",
    "AdminRequestError",
    "AdminServer",
    "AdminSocketError",
    "AgentControl",
    "AgentNotRunning",
    "ReadResult",
    "devices_to_json",
    "encode_line",
    "parse_request",
    "status_to_json",
]

_log = logging.getLogger(__name__)

#: the longest request or reply line, in bytes (without the newline)
MAX_LINE = 1 << 20
DEFAULT_MAX_CONNECTIONS = 16
#: a connection that sends no request for this long is closed (a tail is never idle)
DEFAULT_IDLE_TIMEOUT_S = 300.0
_OPS = ("status", "devices", "read", "write", "invoke", "tail")


class AdminError(AgentError):
    """Base of the admin API's errors."""


class AdminSocketError(AdminError):
    """The server cannot own its socket path (another agent, not a socket, bind failed)."""


class AgentNotRunning(AdminError):
    """No agent answers on the socket (missing file, or nobody listening)."""


class AdminProtocolError(AdminError):
    """The agent's reply is not the admin protocol, or it did not come in time."""


class AdminRequestError(AdminError):
    """The agent refused a request: ``type`` is the error's kind, ``message`` says why."""

    def __init__(self, type_: str, message: str) -> None:
        super().__init__(f"{type_}: {message}")
        self.type = type_
        self.message = message


class ReadResult(Protocol):
    """What :meth:`AgentControl.read_property` returns beside the timestamp."""

    @property
    def value(self) -> Any: ...
    @property
    def quality(self) -> Quality: ...
    @property
    def reason(self) -> str: ...


class AgentControl(Protocol):
    """What the admin server needs of the agent (:class:`~edge_agent.supervisor.EdgeAgent`)."""

    def status(self) -> AgentStatus: ...

    async def read_property(self, device_id: str, property_id: str) -> tuple[int, ReadResult]: ...

    async def write_property(
        self, device_id: str, property_id: str, value: object
    ) -> object | None: ...

    async def invoke_service(
        self, device_id: str, service_id: str, args: dict[str, object]
    ) -> dict[str, object]: ...

    def subscribe(
        self, max_queue: int = 1000
    ) -> AbstractAsyncContextManager[AsyncIterator[Message]]: ...


if TYPE_CHECKING:

    def _edge_agent_is_an_agent_control(agent: EdgeAgent) -> AgentControl:
        return agent  # mypy checks that EdgeAgent keeps satisfying the protocol


# --------------------------------------------------------------------------- JSON forms


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def status_to_json(status: AgentStatus) -> dict[str, Any]:
    """The JSON form of an :class:`~edge_agent.supervisor.AgentStatus` (dataclasses -> objects,
    exception-code keys -> strings)."""
    result: dict[str, Any] = _jsonable(status)
    return result


def devices_to_json(status: AgentStatus) -> list[dict[str, Any]]:
    """One summary object per device, in configuration order."""
    return [
        {
            "id": dev.device_id,
            "model": dev.model,
            "protocol": dev.protocol,
            "endpoint": dev.endpoint,
            "phase": dev.phase,
            "state": dev.diagnostics.state,
            "poll_interval_s": dev.poll_interval_s,
            "polls": dev.polls,
            "messages": dev.messages,
            "requests": dev.diagnostics.requests,
            "errors": dev.diagnostics.errors,
            "last_error": dev.last_error or dev.diagnostics.last_error,
        }
        for dev in status.devices.values()
    ]


def encode_line(obj: object) -> bytes:
    """One protocol line (compact JSON and a newline); non-JSON values become strings."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, default=str).encode() + b"\n"


def _jsonify_value(value: object) -> object:
    """``value`` if it survives strict JSON, else its ``repr`` (NaN, bytes, objects)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)
    return value


# --------------------------------------------------------------------------- requests


class AdminBadRequest(AdminError):
    """A request the server refuses before the agent sees it; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def parse_request(line: bytes) -> dict[str, Any]:
    """One request line -> its JSON object with a known ``op``; AdminBadRequest otherwise."""
    try:
        request = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise AdminBadRequest("request", f"not JSON: {exc}") from exc
    if not isinstance(request, dict):
        raise AdminBadRequest("request", f"expected a JSON object, got {type(request).__name__}")
    op = _field(request, "op", str)
    if op not in _OPS:
        raise AdminBadRequest("op", f"unknown {op[:64]!r} (one of {', '.join(_OPS)})")
    return request


def _field(request: dict[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    if name not in request:
        if required:
            raise AdminBadRequest(name, "missing")
        return None
    value = request[name]
    ok = type(value) is int if kind is int else isinstance(value, kind)
    if not ok:
        raise AdminBadRequest(name, f"expected {kind.__name__}, got {type(value).__name__}")
    if kind is str and not value:
        raise AdminBadRequest(name, "must not be empty")
    return value


def _error(type_: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"type": type_, "message": message}}


class AdminServer:
    """Serves the admin API of ``control`` on the Unix socket ``path`` (see the module doc)."""

    def __init__(
        self,
        control: AgentControl,
        path: Path,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        tail_queue: int = 1000,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    ) -> None:
        self.control = control
        self.path = Path(path)
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.tail_queue = tail_queue
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._inode: tuple[int, int] | None = None
        self._ops: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "status": self._status,
            "devices": self._devices,
            "read": self._read,
            "write": self._write,
            "invoke": self._invoke,
        }

    @property
    def connections(self) -> int:
        """Connections being served now."""
        return len(self._handlers)

    async def start(self) -> None:
        """Listen on :attr:`path` (mode 0600; a new directory is made 0700). A stale socket
        file is replaced; raises :class:`AdminSocketError` when an agent listens there already
        or the path cannot be bound."""
        path = self.path
        await self._clear_stale(path)
        if not path.parent.exists():
            try:
                path.parent.mkdir(mode=0o700, parents=True)
                path.parent.chmod(0o700)
            except OSError as exc:
                raise AdminSocketError(f"admin socket {path}: cannot create folder: {exc}") from exc
        old_umask = os.umask(0o077)  # process-wide: keep owner rwx
        try:
            self._server = await asyncio.start_unix_server(
                self._accept, path=str(path), limit=MAX_LINE + 1
            )
        except OSError as exc:
            raise AdminSocketError(f"admin socket {path}: cannot listen: {exc}") from exc
        finally:
            os.umask(old_umask)
        try:
            path.chmod(0o600)
            info = path.stat()
        except OSError as exc:
            await self.stop()
            raise AdminSocketError(f"admin socket {path}: cannot make it private: {exc}") from exc
        self._inode = (info.st_dev, info.st_ino)
        _log.info("admin API on %s", path)

    async def _clear_stale(self, path: Path) -> None:
        try:
            info = path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(info.st_mode):
            raise AdminSocketError(f"admin socket {path}: exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(probe, str(path)), 2.0)
        except (ConnectionRefusedError, FileNotFoundError):
            _log.info("admin socket %s: removing a stale socket", path)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        except (OSError, TimeoutError) as exc:
            raise AdminSocketError(f"admin socket {path}: cannot probe it: {exc}") from exc
        finally:
            probe.close()
        raise AdminSocketError(f"admin socket {path}: another agent is listening there")

    async def stop(self) -> None:
        """Stop listening, end every connection and remove the socket file (if still ours)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        for task in handlers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if server is not None:
            await server.wait_closed()
        inode, self._inode = self._inode, None
        if inode is not None:
            with contextlib.suppress(OSError):
                info = self.path.lstat()
                if (info.st_dev, info.st_ino) == inode:
                    self.path.unlink()

    # ------------------------------------------------------------------ connections

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            if len(self._handlers) >= self.max_connections:
                # read the request first: closing on unread data could lose the reply
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(reader.readline(), 1.0)
                writer.write(
                    encode_line(
                        _error("Busy", f"more than {self.max_connections} admin connections")
                    )
                )
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
                return
            self._handlers.add(task)
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _read_line(self, reader: asyncio.StreamReader) -> bytes | None:
        """The next line; None at EOF; raises AdminBadRequest for a line over MAX_LINE (skipped)."""
        overrun = False
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial and not overrun:
                    return exc.partial
                return None
            except asyncio.LimitOverrunError as exc:
                overrun = True
                await reader.readexactly(max(exc.consumed, 1))
                continue
            if overrun:
                raise AdminBadRequest("request", f"line longer than {MAX_LINE} bytes")
            return line

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            op = "request"
            try:
                try:
                    line = await asyncio.wait_for(self._read_line(reader), self.idle_timeout_s)
                except TimeoutError:
                    return
                if line is None:
                    return
                if not line.strip():
                    continue
                request = parse_request(line)
                op = request["op"]
                if op == "tail":
                    await self._tail(request, reader, writer)
                    return
                reply: dict[str, Any] = {"ok": True, "result": await self._ops[op](request)}
            except AdminBadRequest as exc:
                reply = _error("BadRequest", str(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reply = _error(type(exc).__name__, str(exc))
            try:
                data = encode_line(reply)
            except ValueError as exc:  # NaN or infinity somewhere in the result
                data = encode_line(_error("ReplyNotJSON", f"the {op} result: {exc}"))
            writer.write(data)
            await writer.drain()

    # ------------------------------------------------------------------ operations

    async def _status(self, request: dict[str, Any]) -> Any:
        # off the loop: status() may wait for an outbox transaction in progress
        return status_to_json(await asyncio.to_thread(self.control.status))

    async def _devices(self, request: dict[str, Any]) -> Any:
        return devices_to_json(await asyncio.to_thread(self.control.status))

    async def _read(self, request: dict[str, Any]) -> Any:
        device, prop = _field(request, "device", str), _field(request, "property", str)
        ts_ms, reading = await self.control.read_property(device, prop)
        return {
            "device": device,
            "property": prop,
            "ts_ms": ts_ms,
            "value": _jsonify_value(reading.value),
            "quality": str(reading.quality),
            "reason": reading.reason,
        }

    async def _write(self, request: dict[str, Any]) -> Any:
        device, prop = _field(request, "device", str), _field(request, "property", str)
        if "value" not in request:
            raise AdminBadRequest("value", "missing")
        read_back = await self.control.write_property(device, prop, request["value"])
        return {"device": device, "property": prop, "read_back": _jsonify_value(read_back)}

    async def _invoke(self, request: dict[str, Any]) -> Any:
        device, service = _field(request, "device", str), _field(request, "service", str)
        args = _field(request, "args", dict, required=False) or {}
        result = await self.control.invoke_service(device, service, args)
        return {"device": device, "service": service, "result": _jsonify_value(result)}

    async def _tail(
        self, request: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Stream messages until the client closes (or ``count`` were sent)."""
        device = _field(request, "device", str, required=False)
        count = _field(request, "count", int, required=False)
        if count is not None and count <= 0:
            raise AdminBadRequest("count", "must be > 0")
        async with self.control.subscribe(self.tail_queue) as messages:
            writer.write(encode_line({"ok": True, "result": {"streaming": True}}))
            await writer.drain()
            closed = asyncio.create_task(_until_eof(reader))
            stream = asyncio.create_task(_send(messages, writer, device, count))
            try:
                await asyncio.wait((closed, stream), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (closed, stream):
                    task.cancel()
                for task in (closed, stream):
                    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                        await task


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """Discard what the client sends during a tail, until it closes."""
    while await reader.read(65536):
        pass


async def _send(
    messages: AsyncIterator[Message],
    writer: asyncio.StreamWriter,
    device: str | None,
    count: int | None,
) -> None:
    sent = 0
    async for message in messages:
        if device is not None and message.device_id != device:
            continue
        writer.write(encode_line(to_json_dict(message)))
        await writer.drain()  # a slow client waits here; the agent's queue drops meanwhile
        sent += 1
        if count is not None and sent >= count:
            return
