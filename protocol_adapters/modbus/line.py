"""One physical Modbus line: one pymodbus client and one transaction lock, shared by every
unit id on it.

::

    line = shared_line(shared, SerialLine("/dev/ttyUSB0", 19200, "E"), timeout_s=0.5)
    meter = ModbusDriver.on_line(line, replace(binding, unit_id=1), model)
    valve = ModbusDriver.on_line(line, replace(binding, unit_id=2), model)

A line is an RS-485 port (:class:`SerialLine`, RTU framing) or a TCP endpoint
(:class:`TcpLine`: a Modbus TCP device or gateway, or a serial-to-Ethernet converter in
transparent mode with ``framer="rtu"``). Every request on it is made while
:attr:`ModbusLine.lock` is held, so requests of different unit ids never interleave, and a
driver's read-modify-write is one uninterrupted sequence on the wire.

The connection is reference-counted: each driver :meth:`~ModbusLine.attach` es on connect and
:meth:`~ModbusLine.detach` es on close; the client closes when the last one leaves. A
connection error closes the client for everyone on the line; the next request of any of them
reconnects (lazily, once: pymodbus' own reconnect loop is off).

Errors are translated here, once: pymodbus' ``ConnectionException``, socket and serial errors
-> :class:`ModbusConnectionError`; no (complete) response -> :class:`ModbusTimeoutError`; an
exception response -> :class:`ModbusExceptionResponse`; any other pymodbus error ->
:class:`ModbusTransportError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from protocol_adapters.modbus.errors import (
    ModbusConfigError,
    ModbusConnectionError,
    ModbusExceptionResponse,
    ModbusTimeoutError,
    ModbusTransportError,
)

__all__ = ["Endpoint", "ModbusLine", "SerialLine", "TcpLine", "shared_line"]

_FRAMERS = {"socket": FramerType.SOCKET, "rtu": FramerType.RTU}

try:  # pyserial reports settings a port refuses as termios.error (not an OSError)
    from termios import error as _TermiosError

    _PORT_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, _TermiosError)
except ImportError:  # pragma: no cover - not POSIX
    _PORT_ERRORS = (OSError, ValueError)
_CONNECT_ERRORS: tuple[type[Exception], ...] = (TimeoutError, ModbusException, *_PORT_ERRORS)
_Client = AsyncModbusTcpClient | AsyncModbusSerialClient


@dataclass(frozen=True, slots=True)
class TcpLine:
    """A Modbus TCP endpoint; ``framer="rtu"`` for RTU frames over TCP (a transparent gateway)."""

    host: str
    port: int = 502
    framer: Literal["socket", "rtu"] = "socket"

    def __post_init__(self) -> None:
        if self.framer not in _FRAMERS:
            raise ModbusConfigError(f"framer must be 'socket' or 'rtu' (got {self.framer!r})")
        if not 0 < self.port < 65536:
            raise ModbusConfigError(f"{self.host}: TCP port must be 1..65535 (got {self.port!r})")

    @property
    def key(self) -> object:
        """What identifies the physical line (two devices with one key share it)."""
        return ("tcp", self.host, self.port)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}" + (" (rtu)" if self.framer == "rtu" else "")


@dataclass(frozen=True, slots=True)
class SerialLine:
    """A serial port with RTU framing and its line settings."""

    port: str
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1
    bytesize: int = 8

    def __post_init__(self) -> None:
        if not self.port:
            raise ModbusConfigError("serial line: empty port name")
        if self.parity not in ("N", "E", "O"):
            raise ModbusConfigError(f"{self.port}: parity must be N, E or O (got {self.parity!r})")
        if self.stopbits not in (1, 2):
            raise ModbusConfigError(f"{self.port}: stopbits must be 1 or 2 (got {self.stopbits!r})")
        if self.bytesize not in (7, 8):
            raise ModbusConfigError(f"{self.port}: bytesize must be 7 or 8 (got {self.bytesize!r})")
        if not self.baudrate > 0:
            raise ModbusConfigError(f"{self.port}: baudrate must be > 0 (got {self.baudrate!r})")

    @property
    def key(self) -> object:
        return ("serial", self.port)

    def __str__(self) -> str:
        return f"{self.port} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


Endpoint = TcpLine | SerialLine


class ModbusLine:
    """One client and one lock for every unit id on one physical line."""

    def __init__(self, endpoint: Endpoint, *, timeout_s: float = 1.0) -> None:
        if not timeout_s > 0:
            raise ModbusConfigError(f"{endpoint}: timeout_s must be > 0 (got {timeout_s!r})")
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        #: held for every request (and read-modify-write sequence) on the line
        self.lock = asyncio.Lock()
        #: drivers attached (connected and not closed)
        self.users = 0
        # pymodbus binds its client to the running loop: made on the first connect
        self._client_obj: _Client | None = None

    @property
    def client(self) -> _Client:
        """The pymodbus client (made on first use, inside the event loop)."""
        client = self._client_obj
        if client is None:
            client = self._client_obj = self._make_client()
        return client

    def _make_client(self) -> _Client:
        endpoint = self.endpoint
        if isinstance(endpoint, SerialLine):
            return AsyncModbusSerialClient(
                endpoint.port,
                framer=FramerType.RTU,
                baudrate=endpoint.baudrate,
                bytesize=endpoint.bytesize,
                parity=endpoint.parity,
                stopbits=endpoint.stopbits,
                timeout=self.timeout_s,
                retries=0,
                reconnect_delay=0,  # no background reconnect loop: we reconnect lazily
            )
        return AsyncModbusTcpClient(
            endpoint.host,
            port=endpoint.port,
            framer=_FRAMERS[endpoint.framer],
            timeout=self.timeout_s,
            retries=0,
            reconnect_delay=0,
        )

    @property
    def connected(self) -> bool:
        return self._client_obj is not None and bool(self._client_obj.connected)

    def share(self, timeout_s: float) -> None:
        """Another device joins the line: the line waits as long as its slowest device."""
        if not timeout_s > 0:
            raise ModbusConfigError(f"{self.endpoint}: timeout_s must be > 0 (got {timeout_s!r})")
        if timeout_s > self.timeout_s:
            self.timeout_s = timeout_s
            if self._client_obj is not None:
                self._client_obj.comm_params.timeout_connect = timeout_s

    def attach(self) -> None:
        """A driver starts using the line."""
        self.users += 1

    def detach(self) -> None:
        """A driver stops using the line; the last one closes the connection (lock held)."""
        self.users = max(0, self.users - 1)
        if self.users == 0 and self._client_obj is not None:
            self._client_obj.close()

    async def connect(self) -> None:
        """Open the connection unless open (lock held); raises :class:`ModbusConnectionError`."""
        if self.connected:
            return
        client = self.client
        try:
            ok = await asyncio.wait_for(client.connect(), self.timeout_s * 2)
        except _CONNECT_ERRORS as exc:
            client.close()
            raise ModbusConnectionError(f"cannot connect to {self.endpoint}: {exc}") from exc
        if not ok:
            client.close()
            raise ModbusConnectionError(f"cannot connect to {self.endpoint}")

    async def transact(self, function: int, call: Callable[[], Awaitable[Any]]) -> Any:
        """One request (lock held by the caller): connect if needed, translate errors, raise
        an exception response, return the pymodbus response."""
        await self.connect()
        client = self.client
        where = f"{self.endpoint}: function {function}"
        try:
            response = await asyncio.wait_for(call(), self.timeout_s * 1.5 + 0.5)
        except TimeoutError as exc:
            raise ModbusTimeoutError(f"{where}: no response in {self.timeout_s} s") from exc
        except ConnectionException as exc:
            client.close()
            raise ModbusConnectionError(f"{where}: {exc}") from exc
        except ModbusIOException as exc:
            if not client.connected:
                raise ModbusConnectionError(f"{where}: {exc}") from exc
            raise ModbusTimeoutError(f"{where}: {exc}") from exc
        except OSError as exc:
            client.close()
            raise ModbusConnectionError(f"{where}: {exc}") from exc
        except ModbusException as exc:
            raise ModbusTransportError(f"{where}: {exc}") from exc
        if response is None:
            raise ModbusTimeoutError(f"{where}: no response")
        if response.isError():
            code = int(getattr(response, "exception_code", 0) or 0)
            raise ModbusExceptionResponse(function, code)
        return response


def shared_line(
    shared: MutableMapping[object, object], endpoint: Endpoint, *, timeout_s: float
) -> ModbusLine:
    """The line of ``endpoint`` kept in ``shared`` (one dict per agent), made on first use.

    Raises :class:`ModbusConfigError` when the physical line (serial port, or TCP host and
    port) is already in use with other settings (baud rate, parity, framer ...).
    """
    key = ("modbus-line", endpoint.key)
    found = shared.get(key)
    if found is None:
        line = ModbusLine(endpoint, timeout_s=timeout_s)
        shared[key] = line
        return line
    if not isinstance(found, ModbusLine):
        raise ModbusConfigError(f"{endpoint}: shared key {key!r} holds {type(found).__name__}")
    if found.endpoint != endpoint:
        raise ModbusConfigError(
            f"{endpoint}: the line is already used with other settings ({found.endpoint})"
        )
    found.share(timeout_s)
    return found
