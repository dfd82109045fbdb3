"""The asyncio Modbus driver: the pure codec and planner over one Modbus line (pymodbus).

::

    driver = ModbusDriver("10.0.0.7", 502, model.bindings.modbus, model)   # a line of its own
    line = shared_line(shared, SerialLine("/dev/ttyUSB0", 19200), timeout_s=0.5)
    driver = ModbusDriver.on_line(line, binding, model)                      # a shared line
    await driver.connect()
    readings = await driver.read_all()          # {property id: Decoded}
    await driver.write("relay_closed", True)    # raises ModbusTransportError / ModbusCodecError
    await driver.invoke("reset_energy", {})     # a service bound as a Modbus write
    driver.diagnostics.state                    # "online" | "degraded" | "offline"

Contract:

- **One transaction at a time per line**: every request is made under the
  :class:`~protocol_adapters.modbus.line.ModbusLine`'s lock, shared by every driver (unit id)
  on that serial port or TCP endpoint, so they never interleave; errors are translated there.
- :meth:`ModbusDriver.read_all` **never raises for a failed request**: the points of a request
  that failed (transport error, exception response, or a garbage / wrong-length response that
  the codec rejects with :class:`ModbusCodecError`) come back as a :class:`Decoded` with bad
  quality, no value and the error as reason; the other requests' points are unaffected. The
  failure is counted in :attr:`ModbusDriver.diagnostics`.
- :meth:`ModbusDriver.write` and :meth:`ModbusDriver.invoke` **raise** (the caller asked for
  one action and must learn that it failed): :class:`ModbusTransportError` subclasses,
  :class:`ModbusCodecError` for a value the point cannot carry, :class:`ModbusConfigError` for
  a property or service the binding does not map. ``bit``/``mask``/``shift`` points are
  read-modify-write under the line's lock, so no other request slips between the read and
  the write.
- **Reconnect** is lazy: a request on a closed line tries one connect first, so a device that
  comes back is online again at the next poll.

Diagnostics (:class:`DiagnosticState`, one per driver, so per unit id) are updated on every
request: ``online`` after a success; ``degraded`` after an exception response, a codec error
or a timeout (the peer may still be there); ``offline`` after a connection error or
``offline_after`` consecutive transport failures.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, NamedTuple, TypeVar

from protocol_adapters.base import DiagnosticState, LinkState, UpdateSink
from protocol_adapters.modbus.codec import (
    Decoded,
    PointCodec,
    ServiceWriteCodec,
    WriteRequest,
    compile_binding,
    compile_service_write,
)
from protocol_adapters.modbus.errors import (
    ModbusCodecError,
    ModbusConfigError,
    ModbusError,
)
from protocol_adapters.modbus.line import Endpoint, ModbusLine, SerialLine, TcpLine
from protocol_adapters.modbus.planner import ReadRequest, decode_response, plan_reads
from thing_models.messages import Quality
from thing_models.model import ModbusBinding, ThingModel

__all__ = ["CompiledBinding", "DiagnosticState", "LinkState", "ModbusDriver"]

_T = TypeVar("_T")


class _Plan(NamedTuple):
    requests: list[ReadRequest]
    codecs: list[PointCodec]


@dataclass(frozen=True, slots=True, eq=False)
class CompiledBinding:
    """A binding's codecs, service writes and read plans, compiled once and shared by every
    driver of the same model and binding (read-only after construction, but for the cache
    of read plans per set of properties, which any of them may fill)."""

    binding: ModbusBinding
    codecs: tuple[PointCodec, ...]
    by_name: dict[str, PointCodec]
    services: dict[str, tuple[ServiceWriteCodec, ...]]
    requests: list[ReadRequest]
    pollable: frozenset[str]
    plans: dict[frozenset[str], _Plan]

    @classmethod
    def of(cls, binding: ModbusBinding, model: ThingModel | None = None) -> CompiledBinding:
        codecs = compile_binding(binding, model)
        services: dict[str, tuple[ServiceWriteCodec, ...]] = {}
        for write in binding.services:
            codec = compile_service_write(write, binding)
            services[write.service] = (*services.get(write.service, ()), codec)
        requests = plan_reads(codecs, binding)
        by_name = {codec.name: codec for codec in codecs}
        pollable = frozenset(by_name)
        return cls(
            binding,
            codecs,
            by_name,
            services,
            requests,
            pollable,
            {pollable: _Plan(requests, list(codecs))},
        )


class ModbusDriver:
    """The device of one binding (one unit id, or several) on a Modbus line."""

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
        """A Modbus TCP (or RTU over TCP) device on a line of its own."""
        line = ModbusLine(TcpLine(host, port, framer), timeout_s=timeout_s)
        self._setup(line, binding, model, offline_after)

    @classmethod
    def on_line(
        cls,
        line: ModbusLine,
        binding: ModbusBinding,
        model: ThingModel | None = None,
        *,
        offline_after: int = 3,
        compiled: CompiledBinding | None = None,
    ) -> ModbusDriver:
        """A device on ``line``, which it shares with the other drivers given the same line.
        ``compiled``: the binding compiled once for every device of the same model and
        binding (:meth:`CompiledBinding.of`), so a thousand meters share one set of codecs."""
        driver = cls.__new__(cls)
        driver._setup(line, binding, model, offline_after, compiled)
        return driver

    def _setup(
        self,
        line: ModbusLine,
        binding: ModbusBinding,
        model: ThingModel | None,
        offline_after: int,
        compiled: CompiledBinding | None = None,
    ) -> None:
        self.line = line
        self.binding = binding
        self.offline_after = max(1, offline_after)
        if compiled is None:
            compiled = CompiledBinding.of(binding, model)
        elif compiled.binding != binding:
            raise ModbusConfigError("the compiled binding is not this device's binding")
        self.codecs: tuple[PointCodec, ...] = compiled.codecs
        self._by_name = compiled.by_name
        self.services: dict[str, tuple[ServiceWriteCodec, ...]] = compiled.services
        self.requests: list[ReadRequest] = compiled.requests
        self.diagnostics = DiagnosticState()
        self._pollable = compiled.pollable
        self._plans = compiled.plans
        self._lock = line.lock
        self._attached = False

    # ------------------------------------------------------------------ connection

    @property
    def endpoint(self) -> str:
        return f"{self.line.endpoint} unit {self.binding.unit_id}"

    @property
    def host(self) -> str:
        """The TCP host, or the serial port's name."""
        endpoint: Endpoint = self.line.endpoint
        return endpoint.port if isinstance(endpoint, SerialLine) else endpoint.host

    @property
    def port(self) -> int:
        """The TCP port (0 on a serial line)."""
        endpoint: Endpoint = self.line.endpoint
        return 0 if isinstance(endpoint, SerialLine) else endpoint.port

    @property
    def timeout_s(self) -> float:
        return self.line.timeout_s

    @property
    def pollable(self) -> frozenset[str]:
        return self._pollable

    def set_sink(self, sink: UpdateSink | None) -> None:
        """Modbus devices push nothing: everything is polled."""

    @property
    def connected(self) -> bool:
        return self.line.connected

    async def connect(self) -> None:
        """Open the line unless open; raises :class:`ModbusConnectionError` (and counts it)."""
        async with self._lock:
            if not self._attached:
                self._attached = True
                self.line.attach()
            try:
                await self.line.connect()
            except ModbusError as exc:
                self.diagnostics.failed(exc, self.offline_after)
                raise

    async def close(self) -> None:
        """Leave the line (closed when its last driver leaves)."""
        async with self._lock:
            if self._attached:
                self._attached = False
                self.line.detach()
            self.diagnostics.state = "offline"

    async def __aenter__(self) -> ModbusDriver:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ transactions

    async def _read(self, request: ReadRequest) -> Sequence[int] | Sequence[bool]:
        client = self.line.client
        readers = {
            1: client.read_coils,
            2: client.read_discrete_inputs,
            3: client.read_holding_registers,
            4: client.read_input_registers,
        }
        reader = readers[request.function]
        response = await self.line.transact(
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

    async def read_request(
        self, request: ReadRequest, codecs: Sequence[PointCodec] | None = None
    ) -> dict[str, Decoded]:
        """Execute one planned request and decode its points; raises on failure.
        ``codecs``: the list the request's point indexes refer to (default: all points)."""
        table = self.codecs if codecs is None else codecs
        async with self._lock:
            readings = await self._counted(lambda: self._read_decoded(request, table))
        return {table[index].name: value for index, value in readings.items()}

    async def _read_decoded(
        self, request: ReadRequest, codecs: Sequence[PointCodec]
    ) -> dict[int, Decoded]:
        """Read and decode: a garbage or wrong-length response is a (counted) codec error."""
        return decode_response(request, await self._read(request), codecs)

    async def read_all(self) -> dict[str, Decoded]:
        """Every point of the binding, by property id. Never raises for a failed request:
        its points come back with bad quality and the error as reason."""
        return await self.read_points(self._pollable)

    def _plan(self, properties: Collection[str]) -> _Plan:
        """The requests covering ``properties``, and the codecs their point indexes refer to
        (cached for the last few distinct sets: a poll group asks for the same set each time)."""
        key = properties if isinstance(properties, frozenset) else frozenset(properties)
        plan = self._plans.get(key)
        if plan is None:
            codecs = [self.codec(name) for name in sorted(key)]
            plan = _Plan(plan_reads(codecs, self.binding) if codecs else [], codecs)
            if len(self._plans) < 64:
                self._plans[key] = plan
        return plan

    async def read_points(self, properties: Collection[str]) -> dict[str, Decoded]:
        """The points of ``properties`` (coalesced into as few requests as the binding
        allows); like :meth:`read_all`, never raises for a failed request."""
        plan = self._plan(properties)
        result: dict[str, Decoded] = {}
        for request in plan.requests:
            try:
                result.update(await self.read_request(request, plan.codecs))
            except ModbusError as exc:
                bad = Decoded(None, Quality.BAD, f"{type(exc).__name__}: {exc}")
                for index, _ in request.points:
                    result[plan.codecs[index].name] = bad
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

    async def invoke(self, service_id: str, args: Mapping[str, object]) -> dict[str, object]:
        """Carry out a service the binding maps to Modbus writes (function 5, 6, 15 or 16;
        several writes of one service in binding order, under one lock hold).

        Returns ``{}``: a write-only service has no outputs to read. Raises
        :class:`ModbusConfigError` for a service the binding does not map,
        :class:`ModbusCodecError` for a missing or unfit input, and the transport errors.
        """
        codecs = self.services.get(service_id)
        if codecs is None:
            raise ModbusConfigError(
                f"{service_id}: no Modbus service write for it in the binding ({self.endpoint})"
            )
        writes = [self._service_write(service_id, codec, args) for codec in codecs]
        async with self._lock:
            for write in writes:
                await self._counted(partial(self._write, write))
        return {}

    @staticmethod
    def _service_write(
        service_id: str, codec: ServiceWriteCodec, args: Mapping[str, object]
    ) -> WriteRequest:
        param = codec.write.param
        try:
            return codec.write_request(args)
        except ModbusCodecError as exc:
            if param is None or param not in args:
                raise
            raise ModbusCodecError(f"{service_id}: input {param!r}: {exc}") from exc

    async def _write(self, write: WriteRequest) -> None:
        client = self.line.client
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
        await self.line.transact(write.function, call)
