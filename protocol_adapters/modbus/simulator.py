"""A Modbus device simulator that follows a thing model's Modbus binding (tests, demos).

::

    sim = ModbusSimulator(model, seed=1)
    port = await sim.start()                 # always bound to 127.0.0.1 unless host= says else
    await sim.tick()                         # one random-walk step of every read-only point
    await sim.set_value("voltage_a", 231.5)  # encoded with the point's codec
    await sim.stop()

    bus = ModbusSimulator(model, units=(1, 2), serial_port="/tmp/ttyA")  # two meters, RTU
    await bus.set_value("voltage_a", 229.0, unit=2)

It serves Modbus TCP (or RTU over TCP with ``framer="rtu"``), or serial RTU on
``serial_port`` (a pty in tests). ``units`` replicates the binding at several unit ids behind
one server, like identical devices on one RS-485 bus; the value methods take ``unit=`` (default:
the first).

Every unit id of the binding is one pymodbus ``SimDevice`` with four separate tables; each
table serves addresses ``0 .. last mapped address`` (service-write targets included), so a read
beyond the mapped area gets exception 2 (illegal data address). Values start plausible: within
the property's ``minimum``/``maximum`` (and the point's ``valid_min``/``valid_max``), enums on a
member, counters (no maximum) growing. :meth:`tick` (or the background task of
``tick_ms``) moves every *read-only* property by a small random walk, starting from what the
registers hold now, so a client's write to any register survives as the walk's next start, and
writable (``access: rw``) properties are never touched: a client's write is what the next read
returns. The random walk is seeded (``seed``) and repeatable.

pymodbus' ``SimDevice``/``SimData`` API is marked experimental in 3.16; it is used because the
``ModbusDeviceContext`` route is deprecated (removal in v4) and copies its blocks anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from pymodbus import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from protocol_adapters.modbus.codec import PointCodec, compile_binding, pdu_address
from protocol_adapters.modbus.errors import ModbusCodecError, ModbusConfigError
from thing_models.messages import Quality
from thing_models.model import (
    Access,
    DataSchema,
    DataType,
    ModbusBinding,
    ModbusTable,
    ModbusType,
    ThingModel,
)

__all__ = ["ModbusSimulator"]

_TABLES = (
    ModbusTable.COIL,
    ModbusTable.DISCRETE_INPUT,
    ModbusTable.HOLDING_REGISTER,
    ModbusTable.INPUT_REGISTER,
)
_WRITE_FUNCTION = {
    ModbusTable.COIL: 15,
    ModbusTable.DISCRETE_INPUT: 2,  # pymodbus maps by function code: 2 selects the "d" table
    ModbusTable.HOLDING_REGISTER: 16,
    ModbusTable.INPUT_REGISTER: 4,
}
_FRAMERS = {"socket": FramerType.SOCKET, "rtu": FramerType.RTU}


class ModbusSimulator:
    """A pymodbus TCP or serial server whose registers follow ``model``'s Modbus binding."""

    def __init__(
        self,
        model: ThingModel,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        seed: int = 0,
        tick_ms: int | None = None,
        framer: str = "socket",
        binding: ModbusBinding | None = None,
        units: Sequence[int] | None = None,
        serial_port: str | None = None,
        baudrate: int = 19200,
        on_pdu: Callable[[bool, int, int], None] | None = None,
    ) -> None:
        """``units``: serve the binding at each of these unit ids (default: its own);
        ``serial_port``: serve RTU on that serial device instead of TCP; ``on_pdu``: called
        with ``(sending, unit id, function code)`` for every request received and response
        sent (tests watch the line with it)."""
        found = binding if binding is not None else model.bindings.modbus
        if found is None:
            raise ModbusConfigError(f"{model.name}: no Modbus binding")
        if framer not in _FRAMERS:
            raise ModbusConfigError(f"framer must be 'socket' or 'rtu' (got {framer!r})")
        self.model = model
        self.binding: ModbusBinding = found
        self.host = host
        self.port = port
        self.tick_ms = tick_ms
        if units is not None and (not units or any(not 0 <= u <= 247 for u in units)):
            raise ModbusConfigError(f"units must be unit ids 0..247 (got {list(units)!r})")
        self._framer = _FRAMERS[framer]
        self.serial_port = serial_port
        self.baudrate = baudrate
        self._on_pdu = on_pdu
        self._rng = random.Random(seed)
        self._seed = seed
        # one binding per replica: {replica unit: binding}
        self._bindings: dict[int, ModbusBinding] = {found.unit_id: found}
        if units is not None:
            points = tuple(replace(p, unit_id=None) for p in found.points)
            self._bindings = {u: replace(found, unit_id=u, points=points) for u in units}
        self._replicas: dict[int, dict[str, PointCodec]] = {
            unit: {c.name: c for c in compile_binding(b, model)}
            for unit, b in self._bindings.items()
        }
        self._first = next(iter(self._replicas))
        self.codecs: dict[str, PointCodec] = self._replicas[self._first]
        # shadow tables: {unit: {table: values}}; the server's own copy is the truth once running
        self._tables: dict[int, dict[ModbusTable, list[int]]] = {}
        self._size_tables()
        self._values: dict[tuple[int, str], Any] = {}
        for unit, codecs in self._replicas.items():
            for name, codec in codecs.items():
                value = self._initial(codec)
                self._values[unit, name] = value
                self._store_shadow(codec, value)
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._ticker: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ layout

    def _size_tables(self) -> None:
        ends: dict[int, dict[ModbusTable, int]] = {}
        for codecs in self._replicas.values():
            for codec in codecs.values():
                unit = ends.setdefault(codec.unit_id, {})
                unit[codec.table] = max(unit.get(codec.table, 0), codec.address + codec.count)
        for binding in self._bindings.values():
            for write in binding.services:
                unit = ends.setdefault(binding.unit_id, {})
                count = 1 if write.table.is_bit_table else (write.type.register_count or 1)
                address = pdu_address(write.address, binding, write.service)
                unit[write.table] = max(unit.get(write.table, 0), address + count)
        for unit_id, unit in ends.items():
            self._tables[unit_id] = {t: [0] * max(unit.get(t, 0), 1) for t in _TABLES}

    def _schema(self, codec: PointCodec) -> DataSchema | None:
        prop = self.model.property(codec.name)
        return prop.schema if prop is not None else None

    def _writable(self, codec: PointCodec) -> bool:
        prop = self.model.property(codec.name)
        return prop is not None and prop.access is Access.READ_WRITE

    def _bounds(self, codec: PointCodec, schema: DataSchema | None) -> tuple[float, float | None]:
        low = schema.minimum if schema is not None else None
        high = schema.maximum if schema is not None else None
        if codec.valid_min is not None:
            low = codec.valid_min if low is None else max(low, codec.valid_min)
        if codec.valid_max is not None:
            high = codec.valid_max if high is None else min(high, codec.valid_max)
        return float(low if low is not None else 0.0), None if high is None else float(high)

    def _initial(self, codec: PointCodec) -> Any:
        schema = self._schema(codec)
        if codec.is_bits or (schema is not None and schema.type is DataType.BOOL):
            return False
        if codec.type in (ModbusType.STRING, ModbusType.BYTES):
            text = f"SIM{self._seed:05d}"
            room = codec.count * 2
            if schema is not None and schema.max_length is not None:
                room = min(room, schema.max_length)
            return text[:room] if codec.type is ModbusType.STRING else "00" * codec.count
        if schema is not None and schema.type is DataType.ENUM and schema.enum:
            return schema.enum[0].value
        low, high = self._bounds(codec, schema)
        if high is None:  # a counter
            return self._fit(codec, low + 1000.0 + self._rng.uniform(0, 100))
        return self._fit(codec, low + (high - low) * self._rng.uniform(0.3, 0.7))

    def _fit(self, codec: PointCodec, value: float) -> float | int:
        schema = self._schema(codec)
        if schema is not None and schema.type.is_integer:
            return round(value)
        if codec.point.rounding is not None:
            return round(value, codec.point.rounding)
        return value

    # ------------------------------------------------------------------ encoding

    def _encode(self, codec: PointCodec, value: Any, current: Sequence[int]) -> list[int]:
        try:
            encoded = codec.encode_into(value, current)
        except ModbusCodecError:
            encoded = codec.encode_into(0 if not codec.is_bits else False, current)
        return [int(v) for v in encoded]

    def _store_shadow(self, codec: PointCodec, value: Any) -> None:
        table = self._tables[codec.unit_id][codec.table]
        current = table[codec.address : codec.address + codec.count]
        table[codec.address : codec.address + codec.count] = self._encode(codec, value, current)

    async def _get(self, codec: PointCodec) -> list[int]:
        if self._server is None:
            table = self._tables[codec.unit_id][codec.table]
            return table[codec.address : codec.address + codec.count]
        values = await self._server.async_getValues(
            codec.unit_id, codec.table.read_function, codec.address, codec.count
        )
        return [int(v) for v in values]

    async def _put(self, codec: PointCodec, registers: list[int]) -> None:
        if self._server is None:
            table = self._tables[codec.unit_id][codec.table]
            table[codec.address : codec.address + codec.count] = registers
            return
        values: list[int] | list[bool] = (
            [bool(v) for v in registers] if codec.is_bits else registers
        )
        await self._server.async_setValues(
            codec.unit_id, _WRITE_FUNCTION[codec.table], codec.address, values
        )

    # ------------------------------------------------------------------ values

    async def get_registers(self, prop: str, *, unit: int | None = None) -> list[int]:
        """The raw registers (or the one bit, as 0/1) of ``prop`` as served now."""
        return await self._get(self._codec(prop, unit))

    async def set_registers(
        self, prop: str, registers: Sequence[int], *, unit: int | None = None
    ) -> None:
        """Overwrite the raw registers of ``prop`` (no codec: for garbage and edge cases)."""
        codec = self._codec(prop, unit)
        if len(registers) != codec.count:
            raise ModbusConfigError(f"{prop}: needs {codec.count} registers")
        await self._put(codec, [int(v) for v in registers])

    async def read_table(
        self, table: ModbusTable, address: int, count: int = 1, *, unit: int | None = None
    ) -> list[int]:
        """``count`` raw registers (or bits, as 0/1) of ``table`` from PDU ``address`` as
        served now (service-write targets have no property: read them here)."""
        unit_id = self._first if unit is None else unit
        if unit_id not in self._tables:
            raise ModbusConfigError(f"unit {unit_id}: not simulated (units {list(self._tables)})")
        size = len(self._tables[unit_id][table])
        if address < 0 or count < 1 or address + count > size:
            raise ModbusConfigError(
                f"unit {unit_id} {table.value}: {address}+{count} outside 0..{size}"
            )
        if self._server is None:
            return self._tables[unit_id][table][address : address + count]
        values = await self._server.async_getValues(unit_id, table.read_function, address, count)
        return [int(v) for v in values]

    async def get_value(self, prop: str, *, unit: int | None = None) -> Any:
        """The value the registers of ``prop`` hold now (decoded; None if bad quality)."""
        codec = self._codec(prop, unit)
        data = await self._get(codec)
        decoded = codec.decode_bits(data) if codec.is_bits else codec.decode(data)
        return decoded.value if decoded.quality is Quality.GOOD else None

    async def set_value(self, prop: str, value: Any, *, unit: int | None = None) -> None:
        """Put ``value`` into the registers of ``prop`` (encoded with its codec; raises
        :class:`ModbusCodecError` for a value the point cannot carry)."""
        codec = self._codec(prop, unit)
        current = await self._get(codec)
        encoded = [int(v) for v in codec.encode_into(value, current)]
        await self._put(codec, encoded)
        self._values[self._replica(unit), prop] = value

    def _replica(self, unit: int | None) -> int:
        if unit is None:
            return self._first
        if unit not in self._replicas:
            raise ModbusConfigError(f"unit {unit}: not simulated (units {list(self._replicas)})")
        return unit

    def _codec(self, prop: str, unit: int | None = None) -> PointCodec:
        try:
            return self._replicas[self._replica(unit)][prop]
        except KeyError:
            raise ModbusConfigError(f"{prop}: no Modbus point in the binding") from None

    async def tick(self) -> None:
        """One random-walk step of every read-only property (of every unit)."""
        for unit, codecs in self._replicas.items():
            for name, codec in codecs.items():
                if self._writable(codec):
                    continue
                value = await self.get_value(name, unit=unit)
                if value is None:
                    value = self._values[unit, name]
                new = self._step(codec, value)
                if new != value:
                    current = await self._get(codec)
                    await self._put(codec, self._encode(codec, new, current))
                    self._values[unit, name] = new

    def _step(self, codec: PointCodec, value: Any) -> Any:
        schema = self._schema(codec)
        if isinstance(value, bool):
            return (not value) if self._rng.random() < 0.05 else value
        if isinstance(value, str):
            return value
        if schema is not None and schema.type is DataType.ENUM and schema.enum:
            if self._rng.random() < 0.1:
                return self._rng.choice(schema.enum).value
            return value
        if not isinstance(value, int | float) or not math.isfinite(value):
            return value
        low, high = self._bounds(codec, schema)
        if high is None:  # counter: grows
            return self._fit(codec, value + self._rng.uniform(0.0, 0.5))
        span = high - low
        margin = span * 0.02
        walked = value + self._rng.gauss(0.0, span * 0.01)
        return self._fit(codec, min(max(walked, low + margin), high - margin))

    # ------------------------------------------------------------------ server

    def _devices(self) -> list[SimDevice]:
        devices = []
        for unit_id, tables in sorted(self._tables.items()):
            blocks: list[list[SimData]] = []
            for table in _TABLES:
                values = tables[table]
                if table.is_bit_table:
                    # separate tables use bit addressing: bit n lives in register n // 16
                    registers = [0] * (-(-len(values) // 16))
                    for index, bit in enumerate(values):
                        if bit:
                            registers[index // 16] |= 1 << (index % 16)
                    blocks.append([SimData(0, values=registers, datatype=SimType.BITS)])
                else:
                    blocks.append([SimData(0, values=list(values), datatype=SimType.REGISTERS)])
            devices.append(SimDevice(unit_id, simdata=(blocks[0], blocks[1], blocks[2], blocks[3])))
        return devices

    def _traced(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if self._on_pdu is not None:
            self._on_pdu(sending, int(pdu.dev_id), int(pdu.function_code))
        return pdu

    async def start(self) -> int:
        """Start serving; returns the bound TCP port (0 on a serial line)."""
        if self._server is not None:
            return self.port
        trace = self._traced if self._on_pdu is not None else None
        server: ModbusTcpServer | ModbusSerialServer
        if self.serial_port is not None:
            server = ModbusSerialServer(
                self._devices(),
                framer=FramerType.RTU,
                port=self.serial_port,
                baudrate=self.baudrate,
                trace_pdu=trace,
            )
            self.port = 0
        else:
            server = ModbusTcpServer(
                self._devices(),
                framer=self._framer,
                address=(self.host, self.port),
                trace_pdu=trace,
            )
        await server.serve_forever(background=True)
        self._server = server
        transport: Any = server.transport
        sockets = getattr(transport, "sockets", None) or ()
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        if self.tick_ms:
            self._ticker = asyncio.create_task(self._tick_loop(self.tick_ms / 1000))
        return self.port

    async def _tick_loop(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            await self.tick()

    async def stop(self) -> None:
        """Stop serving (register contents are kept for the next :meth:`start`)."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        server, self._server = self._server, None
        if server is None:
            return
        for unit_id, tables in self._tables.items():
            for table in _TABLES:
                values = await server.async_getValues(
                    unit_id, table.read_function, 0, len(tables[table])
                )
                tables[table] = [int(v) for v in values]
        await server.shutdown()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> ModbusSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
