"""A client of the agent's admin API (:mod:`edge_agent.admin`), async and sync.

::

    async with AdminClient(Path("/run/edge-agent/admin.sock")) as client:
        status = await client.request("status")
        async for message in client.tail(device="meter-1", count=10):
            print(message)

    status = request_sync(path, "status")      # one request, its own event loop

Errors: :class:`~edge_agent.admin.AgentNotRunning` (no socket, nobody listening),
:class:`~edge_agent.admin.AdminRequestError` (the agent said no: ``.type``, ``.message``),
:class:`~edge_agent.admin.AdminProtocolError` (a reply that is not the protocol, a timeout);
all are :class:`~edge_agent.admin.AdminError` and name the socket path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

from edge_agent.admin import (
    MAX_LINE,
    AdminError,
    AdminProtocolError,
    AdminRequestError,
    AgentNotRunning,
    encode_line,
)

__all__ = [
    "AdminClient",
    "AdminError",
    "AdminProtocolError",
    "AdminRequestError",
    "AgentNotRunning",
    "parse_reply",
    "request_sync",
]

DEFAULT_TIMEOUT_S = 30.0


class AdminClient:
    """One connection to the admin socket ``path``; ``timeout_s`` bounds connect and each reply
    (None: no bound)."""

    def __init__(self, path: Path, *, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> AdminClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.path), limit=MAX_LINE + 1), self.timeout_s
            )
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as exc:
            raise AgentNotRunning(f"no agent answers on {self.path}: {exc.strerror}") from exc
        except PermissionError as exc:
            raise AdminError(f"admin socket {self.path}: permission denied") from exc
        except TimeoutError as exc:
            raise AgentNotRunning(f"no agent answers on {self.path}: connect timed out") from exc
        except OSError as exc:
            raise AdminError(f"admin socket {self.path}: {exc}") from exc

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def request(self, op: str, **fields: object) -> Any:
        """Send ``{"op": op, **fields}``; the reply's ``result``, or AdminRequestError."""
        await self._send(op, fields)
        return self._result(await self._reply())

    async def tail(self, device: str | None = None, count: int | None = None) -> AsyncIterator[Any]:
        """Live canonical messages (JSON objects) until ``count`` (or forever); the connection
        is dedicated to the stream: close the client to end it."""
        fields: dict[str, object] = {}
        if device is not None:
            fields["device"] = device
        if count is not None:
            fields["count"] = count
        await self._send("tail", fields)
        self._result(await self._reply())
        received = 0
        while count is None or received < count:
            line = await self._line(None)
            if line is None:
                return
            yield self._decode(line)
            received += 1

    async def _send(self, op: str, fields: dict[str, object]) -> None:
        if self._writer is None:
            await self.connect()
        assert self._writer is not None
        try:
            self._writer.write(encode_line({"op": op, **fields}))
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise AgentNotRunning(f"the agent on {self.path} closed the connection") from exc

    async def _line(self, timeout_s: float | None) -> bytes | None:
        assert self._reader is not None
        try:
            return await asyncio.wait_for(self._reader.readuntil(b"\n"), timeout_s)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise AdminProtocolError(f"{self.path}: reply cut short") from exc
            return None
        except asyncio.LimitOverrunError as exc:
            raise AdminProtocolError(f"{self.path}: reply longer than {MAX_LINE} bytes") from exc
        except TimeoutError as exc:
            raise AdminProtocolError(f"{self.path}: no reply in {timeout_s} s") from exc
        except (ConnectionError, OSError) as exc:
            raise AgentNotRunning(f"the agent on {self.path} closed the connection") from exc

    async def _reply(self) -> Any:
        line = await self._line(self.timeout_s)
        if line is None:
            raise AgentNotRunning(f"the agent on {self.path} closed the connection")
        return self._decode(line)

    def _decode(self, line: bytes) -> Any:
        try:
            return json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AdminProtocolError(f"{self.path}: reply is not JSON: {exc}") from exc

    def _result(self, reply: Any) -> Any:
        return parse_reply(reply, str(self.path))


def parse_reply(reply: Any, where: str) -> Any:
    """A decoded reply line -> its ``result``; AdminRequestError for ``ok: false``,
    AdminProtocolError for anything that is not a reply (``where`` names the socket)."""
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise AdminProtocolError(f"{where}: reply is not an admin reply: {reply!r:.200}")
    if reply["ok"]:
        return reply.get("result")
    error = reply.get("error")
    if not isinstance(error, dict):
        raise AdminProtocolError(f"{where}: error reply without an error: {reply!r:.200}")
    raise AdminRequestError(str(error.get("type", "Error")), str(error.get("message", "")))


def request_sync(
    path: Path, op: str, *, timeout_s: float | None = DEFAULT_TIMEOUT_S, **fields: object
) -> Any:
    """One request on a fresh connection and event loop (for scripts without asyncio)."""

    async def once() -> Any:
        async with AdminClient(path, timeout_s=timeout_s) as client:
            return await client.request(op, **fields)

    return asyncio.run(once())
