"""The asyncio Modbus driver: the pure codec and planner over pymodbus' ``AsyncModbusTcpClient``.

::

    driver = ModbusDriver("10.0.0.7", 502, model.bindings.modbus, model)
    await driver.connect()
    readings = await driver.read_all()          # {property id: Decoded}
    await driver.write("relay_closed", True)    # raises ModbusTransportError / ModbusCodecError
    driver.diagnostics.state                    # "online" | "degraded" | "offline"

Contract:

- **One transaction at a time per connection**: an :class:`asyncio.Lock` serializes every
  request on the line, whatever its unit id (a TCP gateway in front of an RS-485 bus, or an
  RTU-over-TCP converter, cannot interleave requests).
- **Errors are translated once**, here: pymodbus' ``ConnectionException`` and socket errors ->
  :class:`ModbusConnectionError`; no (complete) response in ``timeout_s`` ->
  :class:`ModbusTimeoutError`; an exception response -> :class:`ModbusExceptionResponse` (with
  the function and the exception code); any other pymodbus error ->
  :class:`ModbusTransportError`. Each is ``raise ... from`` the original.
- :meth:`ModbusDriver.read_all` **never raises for a failed request**: the points of a request
  that failed (transport error, exception response, or a garbage / wrong-length response that
  the codec rejects with :class:`ModbusCodecError`) come back as a :class:`Decoded` with bad
  quality, no value and the error as reason; the other requests' points are unaffected. The
  failure is counted in :attr:`ModbusDriver.diagnostics`.
- :meth:`ModbusDriver.write` **raises** (the caller asked for one action and must learn that
  it failed): :class:`ModbusTransportError` subclasses, or :class:`ModbusCodecError` for a
  value the point cannot carry. ``bit``/``mask``/``shift`` points are read-modify-write under
  the one lock, so no other request of this driver slips between the read and the write.
- **Reconnect** is lazy: pymodbus' own reconnect loop is off (``reconnect_delay=0``); a
  request on a closed connection tries one connect first, so a device that comes back is
  online again at the next poll.

Diagnostics (:class:`DiagnosticState`) are updated on every request: ``online`` after a
success; ``degraded`` after an exception response, a codec error or a timeout (the peer may
still be there); ``offline`` after a connection error or ``offline_after`` consecutive
transport failures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pymodbus import FramerType
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from protocol_adapters.modbus.codec import Decoded, PointCodec, WriteRequest, compile_binding
from protocol_adapters.modbus.errors import (
    ModbusCodecError,
    ModbusConfigError,
    ModbusConnectionError,
    ModbusError,
    ModbusExceptionResponse,
    ModbusTimeoutError,
    ModbusTransportError,
)
from protocol_adapters.modbus.planner import ReadRequest, decode_response, plan_reads
from thing_models.messages import Quality
from thing_models.model import ModbusBinding, ThingModel

__all__ = ["DiagnosticState", "LinkState", "ModbusDriver"]

LinkState = Literal["online", "degraded", "offline"]
_T = TypeVar("_T")


@dataclass(slots=True)
class DiagnosticState:
    """Counters and link state of one driver, updated on every request."""

    state: LinkState = "offline"
    requests: int = 0
    errors: int = 0
    timeouts: int = 0
    exception_codes: dict[int, int] = field(default_factory=dict)
    last_error: str = ""
    #: wall-clock time (ms since the epoch) of the last successful request, None before one
    last_ok_ms: int | None = None
    consecutive_failures: int = 0

    def ok(self) -> None:
        self.requests += 1
        self.consecutive_failures = 0
        self.last_ok_ms = int(time.time() * 1000)
        self.state = "online"

    def failed(self, error: ModbusError, offline_after: int) -> None:
        self.requests += 1
        self.errors += 1
        self.consecutive_failures += 1
        self.last_error = f"{type(error).__name__}: {error}"
        if isinstance(error, ModbusTimeoutError):
            self.timeouts += 1
        if isinstance(error, ModbusExceptionResponse):
            self.exception_codes[error.code] = self.exception_codes.get(error.code, 0) + 1
        transport = isinstance(error, ModbusConnectionError | ModbusTimeoutError)
        if isinstance(error, ModbusConnectionError) or (
            transport and self.consecutive_failures >= offline_after
        ):
            self.state = "offline"
        else:
            self.state = "degraded"


_FRAMERS = {"socket": FramerType.SOCKET, "rtu": FramerType.RTU}


class ModbusDriver:
    """A Modbus TCP (or RTU over TCP) connection to the devices of one binding."""

    def __init__(
        self,
        host: str,
        port: int,
        binding: ModbusBinding,
        model: ThingModel | None = None,
        *,
        timeout_s: float = 1.0,
        framer: Literal["socket", "rtu"] = "socket",
        offline_after: int = 3,
    ) -> None:
        if framer not in _FRAMERS:
            raise ModbusConfigError(f"framer must be 'socket' or 'rtu' (got {framer!r})")
        if not timeout_s > 0:
            raise ModbusConfigError(f"timeout_s must be > 0 (got {timeout_s!r})")
        self.host = host
        self.port = port
        self.binding = binding
        self.timeout_s = timeout_s
        self.offline_after = max(1, offline_after)
        self.codecs: tuple[PointCodec, ...] = compile_binding(binding, model)
        self._by_name = {codec.name: codec for codec in self.codecs}
        self.requests: list[ReadRequest] = plan_reads(self.codecs, binding)
        self.diagnostics = DiagnosticState()
        self._lock = asyncio.Lock()
        self._framer = _FRAMERS[framer]
        # pymodbus binds its client to the running loop: made on the first connect
        self._client_obj: AsyncModbusTcpClient | None = None

    # ------------------------------------------------------------------ connection

    @property
    def _client(self) -> AsyncModbusTcpClient:
        client = self._client_obj
        if client is None:
            client = self._client_obj = AsyncModbusTcpClient(
                self.host,
                port=self.port,
                framer=self._framer,
                timeout=self.timeout_s,
                retries=0,
                reconnect_delay=0,  # no background reconnect loop: we reconnect lazily
            )
        return client

    @property
    def connected(self) -> bool:
        return self._client_obj is not None and bool(self._client_obj.connected)

    async def connect(self) -> None:
        """Open the connection; raises :class:`ModbusConnectionError` (and counts it)."""
        async with self._lock:
            try:
                await self._connect()
            except ModbusConnectionError as exc:
                self.diagnostics.failed(exc, self.offline_after)
                raise

    async def _connect(self) -> None:
        try:
            ok = await asyncio.wait_for(self._client.connect(), self.timeout_s * 2)
        except (TimeoutError, OSError, ModbusException) as exc:
            self._client.close()
            raise ModbusConnectionError(
                f"cannot connect to {self.host}:{self.port}: {exc}"
            ) from exc
        if not ok:
            self._client.close()
            raise ModbusConnectionError(f"cannot connect to {self.host}:{self.port}")

    async def close(self) -> None:
        async with self._lock:
            if self._client_obj is not None:
                self._client_obj.close()
            self.diagnostics.state = "offline"

    async def __aenter__(self) -> ModbusDriver:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ transactions

    async def _transact(self, function: int, call: Callable[[], Awaitable[Any]]) -> Any:
        """One request (lock held by the caller): translate errors, raise an exception
        response, return the pymodbus response."""
        if not self._client.connected:
            await self._connect()
        try:
            response = await asyncio.wait_for(call(), self.timeout_s * 1.5 + 0.5)
        except TimeoutError as exc:
            raise ModbusTimeoutError(
                f"function {function}: no response in {self.timeout_s} s"
            ) from exc
        except ConnectionException as exc:
            self._client.close()
            raise ModbusConnectionError(f"function {function}: {exc}") from exc
        except ModbusIOException as exc:
            if not self._client.connected:
                raise ModbusConnectionError(f"function {function}: {exc}") from exc
            raise ModbusTimeoutError(f"function {function}: {exc}") from exc
        except OSError as exc:
            self._client.close()
            raise ModbusConnectionError(f"function {function}: {exc}") from exc
        except ModbusException as exc:
            raise ModbusTransportError(f"function {function}: {exc}") from exc
        if response is None:
            raise ModbusTimeoutError(f"function {function}: no response")
        if response.isError():
            code = int(getattr(response, "exception_code", 0) or 0)
            raise ModbusExceptionResponse(function, code)
        return response

    async def _read(self, request: ReadRequest) -> Sequence[int] | Sequence[bool]:
        client = self._client
        readers = {
            1: client.read_coils,
            2: client.read_discrete_inputs,
            3: client.read_holding_registers,
            4: client.read_input_registers,
        }
        reader = readers[request.function]
        response = await self._transact(
            request.function,
            lambda: reader(request.address, count=request.count, device_id=request.unit_id),
        )
        data = getattr(response, "bits" if request.table.is_bit_table else "registers", None)
        if not isinstance(data, Sequence):
            raise ModbusCodecError(
                f"function {request.function}: unexpected response {type(response).__name__}"
            )
        return list(data)

    async def _counted(self, operation: Callable[[], Awaitable[_T]]) -> _T:
        try:
            result = await operation()
        except ModbusError as exc:
            self.diagnostics.failed(exc, self.offline_after)
            raise
        self.diagnostics.ok()
        return result

    # ------------------------------------------------------------------ reads

    async def read_request(self, request: ReadRequest) -> dict[str, Decoded]:
        """Execute one planned request and decode its points; raises on failure."""
        async with self._lock:
            readings = await self._counted(lambda: self._read_decoded(request, self.codecs))
        return {self.codecs[index].name: value for index, value in readings.items()}

    async def _read_decoded(
        self, request: ReadRequest, codecs: Sequence[PointCodec]
    ) -> dict[int, Decoded]:
        """Read and decode: a garbage or wrong-length response is a (counted) codec error."""
        return decode_response(request, await self._read(request), codecs)

    async def read_all(self) -> dict[str, Decoded]:
        """Every point of the binding, by property id. Never raises for a failed request:
        its points come back with bad quality and the error as reason."""
        result: dict[str, Decoded] = {}
        for request in self.requests:
            try:
                result.update(await self.read_request(request))
            except ModbusError as exc:
                bad = Decoded(None, Quality.BAD, f"{type(exc).__name__}: {exc}")
                for index, _ in request.points:
                    result[self.codecs[index].name] = bad
        return result

    # ------------------------------------------------------------------ writes

    def codec(self, property_id: str) -> PointCodec:
        try:
            return self._by_name[property_id]
        except KeyError:
            raise ModbusConfigError(f"{property_id}: no Modbus point for it") from None

    async def write(
        self, property_id: str, value: object, *, read_back: bool = False
    ) -> Decoded | None:
        """Write ``value`` to the point of ``property_id``; with ``read_back`` read the point
        again and return it. Raises :class:`ModbusTransportError` subclasses or
        :class:`ModbusCodecError`."""
        codec = self.codec(property_id)
        (request,) = plan_reads([codec], self.binding)
        async with self._lock:
            if codec.needs_current:
                current = await self._counted(lambda: self._read(request))
                write = codec.write_request(value, current)
            else:
                write = codec.write_request(value)
            await self._counted(lambda: self._write(write))
            if not read_back:
                return None
            readings = await self._counted(lambda: self._read_decoded(request, [codec]))
        return readings[0]

    async def _write(self, write: WriteRequest) -> None:
        client = self._client
        unit, address, values = write.unit_id, write.address, write.values
        call: Callable[[], Awaitable[Any]]
        if write.function == 5:
            call = lambda: client.write_coil(address, bool(values[0]), device_id=unit)  # noqa: E731
        elif write.function == 15:
            bits = [bool(v) for v in values]
            call = lambda: client.write_coils(address, bits, device_id=unit)  # noqa: E731
        elif write.function == 6:
            call = lambda: client.write_register(address, int(values[0]), device_id=unit)  # noqa: E731
        elif write.function == 16:
            regs = [int(v) for v in values]
            call = lambda: client.write_registers(address, regs, device_id=unit)  # noqa: E731
        else:  # pragma: no cover - the codec only emits 5, 6, 15, 16
            raise ModbusConfigError(f"unsupported write function {write.function}")
        await self._transact(write.function, call)
