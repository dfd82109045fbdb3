"""The asyncio Modbus driver against the real simulator (pymodbus server on 127.0.0.1).

read_all contract under test: a failed request never raises out of read_all; its points come
back as bad-quality Decoded (value None, the error as reason) and the failure is counted in
the driver's DiagnosticState. Writes raise ModbusTransportError subclasses / ModbusCodecError.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest

from protocol_adapters.modbus import (
    ModbusCodecError,
    ModbusConfigError,
    ModbusConnectionError,
    ModbusExceptionResponse,
    ModbusTimeoutError,
)
from protocol_adapters.modbus.driver import DiagnosticState, ModbusDriver
from protocol_adapters.modbus.simulator import ModbusSimulator
from thing_models import load_model_file
from thing_models.messages import Quality
from thing_models.model import DataType, ModbusPoint, ModbusTable, ModbusType, ThingModel

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
MODEL = load_model_file(EXAMPLES / "energy-meter-3p.yaml")
BINDING = MODEL.bindings.modbus
assert BINDING is not None

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def with_sim(
    body: Callable[[ModbusSimulator, ModbusDriver], Awaitable[None]],
    *,
    model: ThingModel = MODEL,
    seed: int = 0,
    framer: Literal["socket", "rtu"] = "socket",
    timeout_s: float = 1.0,
    driver_binding: Any = None,
) -> None:
    sim = ModbusSimulator(model, seed=seed, framer=framer)
    port = await sim.start()
    binding = driver_binding if driver_binding is not None else model.bindings.modbus
    assert binding is not None
    driver = ModbusDriver("127.0.0.1", port, binding, model, timeout_s=timeout_s, framer=framer)
    try:
        await driver.connect()
        await body(sim, driver)
    finally:
        await driver.close()
        await sim.stop()


def assert_in_model_range(readings: dict[str, Any], model: ThingModel = MODEL) -> None:
    assert BINDING is not None
    assert set(readings) == {p.property for p in BINDING.points}
    for name, decoded in readings.items():
        assert decoded.quality is Quality.GOOD, (name, decoded)
        prop = model.property(name)
        assert prop is not None
        schema = prop.schema
        value = decoded.value
        if schema.type is DataType.BOOL:
            assert isinstance(value, bool)
        elif schema.type is DataType.ENUM:
            assert value in {m.value for m in schema.enum}
        elif schema.type is DataType.TEXT:
            assert isinstance(value, str)
            assert value
            assert schema.max_length is None or len(value) <= schema.max_length
        else:
            assert isinstance(value, int | float), name
            if schema.minimum is not None:
                assert value >= schema.minimum, (name, value)
            if schema.maximum is not None:
                assert value <= schema.maximum, (name, value)


# --------------------------------------------------------------------------- reads


def test_read_all_decodes_every_property_within_range() -> None:
    async def body(sim: ModbusSimulator, driver: ModbusDriver) -> None:
        assert_in_model_range(await driver.read_all())
        first = await driver.read_all()
        for _ in range(20):
            await sim.tick()
            assert_in_model_range(await driver.read_all())
        moved = await driver.read_all()
        assert moved["voltage_a"].value != first["voltage_a"].value  # the walk walks
        assert moved["energy_import"].value >= first["energy_import"].value  # counters grow
        diag = driver.diagnostics
        assert diag.state == "online"
        assert diag.errors == 0
        assert diag.timeouts == 0
        assert diag.requests == 23 * len(driver.requests)
        assert diag.last_ok_ms is not None

    run(with_sim(body, seed=7))


def test_read_all_over_rtu_framing() -> None:
    async def body(sim: ModbusSimulator, driver: ModbusDriver) -> None:
        await sim.set_value("voltage_b", 229.25)
        readings = await driver.read_all()
        assert_in_model_range(readings)
        assert readings["voltage_b"].value == 229.25

    run(with_sim(body, framer="rtu"))


def test_set_value_is_read_by_the_driver() -> None:
    async def body(sim: ModbusSimulator, driver: ModbusDriver) -> None:
        await sim.set_value("active_power", -1500.5)
        await sim.set_value("serial_number", "MTR-000042")
        await sim.set_value("tariff", 2)
        readings = await driver.read_all()
        assert readings["active_power"].value == pytest.approx(-1500.5)
        assert readings["serial_number"].value == "MTR-000042"
        assert readings["tariff"].value == 2

    run(with_sim(body))


def test_background_ticks_move_values() -> None:
    async def main() -> None:
        sim = ModbusSimulator(MODEL, seed=3, tick_ms=10)
        before = await sim.get_value("voltage_a")
        await sim.start()
        try:
            for _ in range(100):
                await asyncio.sleep(0.01)
                if await sim.get_value("voltage_a") != before:
                    break
            assert await sim.get_value("voltage_a") != before
        finally:
            await sim.stop()
        assert await sim.get_value("voltage_a") is not None  # kept after stop

    run(main())


def test_driver_is_built_outside_an_event_loop() -> None:
    assert BINDING is not None
    driver = ModbusDriver("127.0.0.1", 1, BINDING, MODEL)
    assert not driver.connected
    assert len(driver.requests) == 2  # holding registers 0..37, coil 0


def test_concurrent_reads_share_one_connection() -> None:
    async def body(sim: ModbusSimulator, driver: ModbusDriver) -> None:
        results = await asyncio.gather(*(driver.read_all() for _ in range(8)))
        for readings in results:
            assert_in_model_range(readings)
        assert driver.diagnostics.errors == 0

    run(with_sim(body))


# --------------------------------------------------------------------------- writes


def test_write_coil_and_read_back() -> None:
    async def body(sim: ModbusSimulator, driver: ModbusDriver) -> None:
        assert (await driver.read_all())["relay_closed"].value is False
        back = await driver.write("relay_closed", True, read_back=True)
        assert back is not None
        assert back.value is True
        assert back.quality is Quality.GOOD
        assert await sim.get_value("relay_closed") is True
        for _ in range(10):
            await sim.tick()  # writable points are never walked
        assert (await driver.read_all())["relay_closed"].value is True
        assert await driver.write("relay_closed", False) is None
        assert (await driver.read_all())["relay_closed"].value is False

    run(with_sim(body))


def test_write_scaled_holding_registers() -> None:
    async def body(sim: ModbusSimulator, driver: ModbusDriver) -> None:
        # int32, scale 0.1: function 16, two registers
        back = await driver.write("active_power", -1234.5, read_back=True)
        assert back is not None
        assert back.value == pytest.approx(-1234.5)
        assert await sim.get_registers("active_power") == list(
            struct.unpack(">HH", struct.pack(">i", -12345))
        )
        # uint16, scale 0.01: function 6, one register
        back = await driver.write("frequency", 50.02, read_back=True)
        assert back is not None
        assert back.value == 50.02
        assert await sim.get_registers("frequency") == [5002]
        assert (await driver.read_all())["frequency"].value == 50.02

    run(with_sim(body))


def test_write_masked_point_is_read_modify_write() -> None:
    async def body(sim: ModbusSimulator, driver: ModbusDriver) -> None:
        await sim.set_registers("tariff", [0xAB01])
        back = await driver.write("tariff", 3, read_back=True)
        assert back is not None
        assert back.value == 3
        assert await sim.get_registers("tariff") == [0xAB03]  # the high byte is kept
        requests = driver.diagnostics.requests
        assert requests == 3  # read, write, read back

    run(with_sim(body))


def test_write_errors_raise() -> None:
    async def body(sim: ModbusSimulator, driver: ModbusDriver) -> None:
        with pytest.raises(ModbusConfigError, match="no Modbus point"):
            await driver.write("no_such_property", 1)
        with pytest.raises(ModbusCodecError):
            await driver.write("frequency", 1000.0)  # raw 100000 does not fit uint16
        with pytest.raises(ModbusCodecError, match="read-only"):
            _raise_read_only()
        await sim.stop()
        with pytest.raises(ModbusConnectionError):
            await driver.write("relay_closed", True)
        assert driver.diagnostics.state == "offline"

    run(with_sim(body, timeout_s=0.5))


def _raise_read_only() -> None:
    """A discrete input point cannot be written (the codec refuses it)."""
    from protocol_adapters.modbus import compile_point

    assert BINDING is not None
    point = ModbusPoint(
        property="door", table=ModbusTable.DISCRETE_INPUT, address=0, type=ModbusType.BIT
    )
    compile_point(point, BINDING).write_request(True)


# --------------------------------------------------------------------------- failures


def test_offline_when_server_stops_and_online_after_restart() -> None:
    async def body(sim: ModbusSimulator, driver: ModbusDriver) -> None:
        assert_in_model_range(await driver.read_all())
        assert driver.diagnostics.state == "online"
        port = sim.port
        await sim.stop()
        readings = await driver.read_all()  # never raises
        assert all(d.quality is Quality.BAD and d.value is None for d in readings.values())
        assert all("Modbus" in d.reason for d in readings.values())
        diag = driver.diagnostics
        assert diag.state == "offline"
        assert diag.errors >= 1
        assert "ModbusConnectionError" in diag.last_error
        errors = diag.errors
        await driver.read_all()
        assert driver.diagnostics.errors > errors  # every failed request counts
        # the device comes back on the same port: the next poll reconnects
        assert await sim.start() == port
        assert_in_model_range(await driver.read_all())
        assert driver.diagnostics.state == "online"
        assert driver.diagnostics.consecutive_failures == 0

    run(with_sim(body, timeout_s=0.5))


def test_exception_response_is_counted_not_raised() -> None:
    assert BINDING is not None
    # a point beyond the simulator's served registers: the device answers exception 2
    ghost = ModbusPoint(
        property="ghost", table=ModbusTable.HOLDING_REGISTER, address=500, type=ModbusType.UINT16
    )
    binding = replace(BINDING, points=(*BINDING.points, ghost))

    async def body(sim: ModbusSimulator, driver: ModbusDriver) -> None:
        readings = await driver.read_all()
        assert readings["ghost"].quality is Quality.BAD
        assert readings["ghost"].value is None
        assert "exception 2 (illegal data address)" in readings["ghost"].reason
        others = {k: v for k, v in readings.items() if k != "ghost"}
        assert_in_model_range(others)
        diag = driver.diagnostics
        assert diag.exception_codes == {2: 1}
        assert diag.errors == 1
        assert diag.state == "degraded"  # the peer answers: not offline
        await driver.read_all()
        assert driver.diagnostics.exception_codes == {2: 2}
        # the transport error surfaces from the single-request API
        (request,) = [r for r in driver.requests if r.address == 500]
        with pytest.raises(ModbusExceptionResponse) as info:
            await driver.read_request(request)
        assert info.value.code == 2
        assert info.value.function == 3

    run(with_sim(body, driver_binding=binding))


# --------------------------------------------------------------------------- a broken peer


async def _broken_server(mode: str) -> tuple[asyncio.Server, int]:
    """A Modbus TCP 'device' that answers every request wrongly."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(7)
                tid, _proto, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                function = pdu[0]
                if mode == "short" and function in (3, 4):
                    body = bytes([function, 2, 0x12, 0x34])  # one register, whatever was asked
                elif mode == "short" and function in (1, 2):
                    body = bytes([function, 1, 0x00])
                else:
                    writer.write(b"\xde\xad\xbe\xef garbage")
                    await writer.drain()
                    continue
                writer.write(struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


def test_wrong_length_response_is_a_counted_codec_error() -> None:
    async def main() -> None:
        server, port = await _broken_server("short")
        assert BINDING is not None
        driver = ModbusDriver("127.0.0.1", port, BINDING, MODEL, timeout_s=0.5)
        try:
            await driver.connect()
            readings = await driver.read_all()
            bad = {k for k, v in readings.items() if v.quality is Quality.BAD}
            assert "voltage_a" in bad
            assert "serial_number" in bad
            assert "expected" in readings["voltage_a"].reason
            assert driver.diagnostics.errors >= 1
            assert "ModbusCodecError" in driver.diagnostics.last_error
            assert driver.diagnostics.state == "degraded"
        finally:
            await driver.close()
            server.close()
            await server.wait_closed()

    run(main())


def test_garbage_response_times_out_without_crashing() -> None:
    async def main() -> None:
        server, port = await _broken_server("garbage")
        assert BINDING is not None
        driver = ModbusDriver("127.0.0.1", port, BINDING, MODEL, timeout_s=0.2, offline_after=2)
        try:
            await driver.connect()
            readings = await driver.read_all()
            assert all(v.quality is Quality.BAD for v in readings.values())
            diag = driver.diagnostics
            assert diag.errors == len(driver.requests)
            assert diag.timeouts + diag.errors >= 1
            assert diag.state in ("degraded", "offline")
            with pytest.raises((ModbusTimeoutError, ModbusConnectionError)):
                await driver.write("frequency", 50.0)
        finally:
            await driver.close()
            server.close()
            await server.wait_closed()

    run(main())


def test_connect_refused_is_counted() -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = int(server.sockets[0].getsockname()[1])
        server.close()
        await server.wait_closed()
        assert BINDING is not None
        driver = ModbusDriver("127.0.0.1", port, BINDING, MODEL, timeout_s=0.3)
        with pytest.raises(ModbusConnectionError) as info:
            await driver.connect()
        assert info.value.__cause__ is not None or "cannot connect" in str(info.value)
        assert driver.diagnostics.state == "offline"
        assert driver.diagnostics.errors == 1

    run(main())


# --------------------------------------------------------------------------- diagnostics


def state_of(diag: DiagnosticState) -> str:
    return diag.state  # (a plain str: mypy would narrow the attribute across calls)


def test_diagnostic_state_transitions() -> None:
    diag = DiagnosticState()
    assert diag.requests == 0
    diag.ok()
    assert state_of(diag) == "online"
    assert diag.requests == 1
    diag.failed(ModbusTimeoutError("slow"), offline_after=2)
    assert state_of(diag) == "degraded"
    assert diag.timeouts == 1
    diag.failed(ModbusTimeoutError("slow"), offline_after=2)
    assert state_of(diag) == "offline"
    assert diag.timeouts == 2
    diag.ok()
    diag.failed(ModbusExceptionResponse(3, 2), offline_after=2)
    diag.failed(ModbusExceptionResponse(3, 2), offline_after=2)
    diag.failed(ModbusExceptionResponse(3, 4), offline_after=2)
    assert state_of(diag) == "degraded"  # exception responses never take the link offline
    assert diag.exception_codes == {2: 2, 4: 1}
    diag.failed(ModbusConnectionError("gone"), offline_after=5)
    assert state_of(diag) == "offline"
    assert diag.errors == 6
    assert diag.last_error.startswith("ModbusConnectionError")


def test_driver_rejects_bad_options() -> None:
    assert BINDING is not None
    with pytest.raises(ModbusConfigError):
        ModbusDriver("127.0.0.1", 502, BINDING, MODEL, framer="ascii")  # type: ignore[arg-type]
    with pytest.raises(ModbusConfigError):
        ModbusDriver("127.0.0.1", 502, BINDING, MODEL, timeout_s=0)
