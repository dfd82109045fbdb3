"""Modbus lines: serial RTU over a real pty pair (socat), RTU over TCP, and one transaction at
a time per line shared by every unit id on it.

The simulator serves two identical meters (unit 1 and 2) behind one pymodbus server on one
end of the pty pair; drivers sharing one :class:`ModbusLine` poll them from the other end.
The server's PDU trace shows what went over the line, in order.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Coroutine, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest

from edge_agent.config import DeviceConfig, ModbusSerialConnection, ModbusTcpConnection, Parity
from edge_agent.config import Protocol as DeviceProtocol
from edge_agent.drivers import make_driver
from edge_agent.errors import UnsupportedDevice
from protocol_adapters.modbus import ModbusConfigError, ModbusConnectionError, ModbusTimeoutError
from protocol_adapters.modbus.driver import ModbusDriver
from protocol_adapters.modbus.line import ModbusLine, SerialLine, TcpLine, shared_line
from protocol_adapters.modbus.simulator import ModbusSimulator
from thing_models import load_model_file
from thing_models.messages import Quality
from thing_models.model import ModelRef

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
MODEL = load_model_file(EXAMPLES / "energy-meter-3p.yaml")
BINDING = MODEL.bindings.modbus
assert BINDING is not None

T = TypeVar("T")
Trace = list[tuple[bool, int, int]]


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def ptys(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two linked pseudo-terminals: (device end, agent end), made by socat."""
    socat = shutil.which("socat")
    if socat is None:
        pytest.fail("socat is required for the serial tests (apt-get install -y socat)")
    device, agent = tmp_path / "device", tmp_path / "agent"
    proc = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={device}", f"pty,raw,echo=0,link={agent}"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # socat says so once both ptys exist
        if "starting data transfer loop" in line:
            break
    else:
        pytest.fail(f"socat exited with {proc.wait()}")
    try:
        yield str(device), str(agent)
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stderr.close()


def assert_one_transaction_at_a_time(trace: Trace) -> None:
    """Requests and responses strictly alternate, each response from the unit asked."""
    assert trace, "nothing went over the line"
    assert len(trace) % 2 == 0
    for (sent_a, unit_a, fn_a), (sent_b, unit_b, fn_b) in zip(trace[::2], trace[1::2], strict=True):
        assert (sent_a, sent_b) == (False, True), trace
        assert unit_a == unit_b
        assert fn_b & 0x7F == fn_a


# --------------------------------------------------------------------------- serial RTU


def test_two_units_on_one_serial_line_share_it_without_interleaving(
    ptys: tuple[str, str],
) -> None:
    device_end, agent_end = ptys
    trace: Trace = []

    async def main() -> None:
        sim = ModbusSimulator(
            MODEL,
            units=(1, 2),
            serial_port=device_end,
            baudrate=115200,
            seed=4,
            on_pdu=lambda sending, unit, fn: trace.append((sending, unit, fn)),
        )
        assert await sim.start() == 0
        await sim.set_value("voltage_a", 231.5, unit=1)
        await sim.set_value("voltage_a", 219.25, unit=2)
        await sim.set_registers("tariff", [0xAB01], unit=1)
        shared: dict[object, object] = {}
        endpoint = SerialLine(agent_end, baudrate=115200)
        line = shared_line(shared, endpoint, timeout_s=0.5)
        assert shared_line(shared, SerialLine(agent_end, 115200), timeout_s=0.2) is line
        assert line.timeout_s == 0.5  # the slowest device's timeout
        assert BINDING is not None
        one = ModbusDriver.on_line(line, replace(BINDING, unit_id=1), MODEL)
        two = ModbusDriver.on_line(line, replace(BINDING, unit_id=2), MODEL)
        assert one.endpoint == f"{agent_end} 115200 8N1 unit 1"
        try:
            await one.connect()
            await two.connect()
            assert line.users == 2
            results = await asyncio.gather(
                *(one.read_all() for _ in range(5)),
                one.write("tariff", 3),  # read-modify-write of a masked point
                *(two.read_all() for _ in range(5)),
            )
            for readings in results[:5]:
                assert isinstance(readings, dict)
                assert readings["voltage_a"] == (231.5, Quality.GOOD, "")
            for readings in results[6:]:
                assert isinstance(readings, dict)
                assert readings["voltage_a"] == (219.25, Quality.GOOD, "")
            assert await sim.get_registers("tariff", unit=1) == [0xAB03]
            assert await sim.get_registers("tariff", unit=2) != [0xAB03]
            assert one.diagnostics.errors == two.diagnostics.errors == 0
            assert one.diagnostics.state == two.diagnostics.state == "online"
            assert_one_transaction_at_a_time(trace)
            # the masked write's read and write are one uninterrupted sequence on the line
            writes = [i for i, (sent, _, fn) in enumerate(trace) if fn == 6 and not sent]
            assert len(writes) == 1
            assert trace[writes[0] - 2 : writes[0]] == [(False, 1, 3), (True, 1, 3)]
            # closing one driver leaves the other's line open
            await one.close()
            assert line.connected
            assert (await two.read_all())["voltage_a"].value == 219.25
            await two.close()
            assert not line.connected
            assert line.users == 0
        finally:
            await one.close()
            await two.close()
            await sim.stop()

    run(main())


def test_serial_device_that_does_not_answer(ptys: tuple[str, str]) -> None:
    """Nothing on the other end of the line: timeouts, degraded then offline, all counted."""
    _, agent_end = ptys

    async def main() -> None:
        line = ModbusLine(SerialLine(agent_end, baudrate=9600), timeout_s=0.2)
        assert BINDING is not None
        driver = ModbusDriver.on_line(line, BINDING, MODEL, offline_after=2)
        await driver.connect()  # a serial port opens whether anyone listens or not
        try:
            coils, holding = sorted(driver.requests, key=lambda r: r.function)
            assert (coils.function, holding.function) == (1, 3)
            with pytest.raises(ModbusTimeoutError, match="function 3"):
                await driver.read_request(holding)
            assert driver.diagnostics.state == "degraded"
            readings = await driver.read_points({"relay_closed"})  # the coil request
            assert readings["relay_closed"].quality is Quality.BAD
            assert "ModbusTimeoutError" in readings["relay_closed"].reason
            diag = driver.diagnostics
            assert diag.state == "offline"
            assert (diag.requests, diag.errors, diag.timeouts) == (2, 2, 2)
            assert "ModbusTimeoutError" in diag.last_error
            with pytest.raises(ModbusTimeoutError):
                await driver.invoke("reset_energy", {})
            assert driver.diagnostics.timeouts == 3
        finally:
            await driver.close()

    run(main())


def test_serial_port_that_does_not_exist_is_a_counted_connection_error(tmp_path: Path) -> None:
    async def main() -> None:
        line = ModbusLine(SerialLine(str(tmp_path / "ttyNONE")), timeout_s=0.2)
        assert BINDING is not None
        driver = ModbusDriver.on_line(line, BINDING, MODEL)
        with pytest.raises(ModbusConnectionError, match="ttyNONE"):
            await driver.connect()
        assert driver.diagnostics.state == "offline"
        assert driver.diagnostics.errors == 1
        readings = await driver.read_all()  # never raises
        assert all(r.quality is Quality.BAD for r in readings.values())
        await driver.close()

    run(main())


# --------------------------------------------------------------------------- RTU over TCP


def test_rtu_over_tcp_gateway_line_shared_by_two_units() -> None:
    trace: Trace = []

    async def main() -> None:
        sim = ModbusSimulator(
            MODEL,
            units=(3, 7),
            framer="rtu",
            seed=9,
            on_pdu=lambda sending, unit, fn: trace.append((sending, unit, fn)),
        )
        port = await sim.start()
        await sim.set_value("frequency", 49.98, unit=3)
        await sim.set_value("frequency", 50.03, unit=7)
        shared: dict[object, object] = {}
        line = shared_line(shared, TcpLine("127.0.0.1", port, "rtu"), timeout_s=0.5)
        assert BINDING is not None
        drivers = [
            ModbusDriver.on_line(line, replace(BINDING, unit_id=unit), MODEL) for unit in (3, 7)
        ]
        try:
            for driver in drivers:
                await driver.connect()
            results = await asyncio.gather(*(d.read_all() for d in drivers for _ in range(4)))
            assert {r["frequency"].value for r in results[:4]} == {49.98}
            assert {r["frequency"].value for r in results[4:]} == {50.03}
            assert_one_transaction_at_a_time(trace)
            assert {unit for _, unit, _ in trace} == {3, 7}
            assert drivers[0].endpoint == f"127.0.0.1:{port} (rtu) unit 3"
        finally:
            for driver in drivers:
                await driver.close()
            await sim.stop()

    run(main())


# --------------------------------------------------------------------------- factories


def device(device_id: str, connection: Any) -> DeviceConfig:
    return DeviceConfig(
        id=device_id,
        model=ModelRef("community.energy/meter-3p", "1"),
        protocol=DeviceProtocol.MODBUS,
        connection=connection,
        thing_model=MODEL,
    )


def test_factories_share_one_line_per_port_and_refuse_conflicting_settings(
    ptys: tuple[str, str],
) -> None:
    device_end, agent_end = ptys

    async def main() -> None:
        shared: dict[object, object] = {}
        serial = ModbusSerialConnection(port=agent_end, baudrate=38400, unit_id=1, timeout_s=0.5)
        a = make_driver(device("a", serial), shared)
        b = make_driver(device("b", replace(serial, unit_id=2)), shared)
        assert isinstance(a, ModbusDriver)
        assert isinstance(b, ModbusDriver)
        assert a.line is b.line
        assert a.line.endpoint == SerialLine(agent_end, 38400, "N")
        cases: tuple[tuple[Parity, Literal["E", "O"]], ...] = (
            (Parity.EVEN, "E"),
            (Parity.ODD, "O"),
        )
        for parity, letter in cases:
            other = replace(serial, port=f"{agent_end}-{letter}", parity=parity, stopbits=2)
            made = make_driver(device(letter, other), shared)
            assert isinstance(made, ModbusDriver)
            assert made.line.endpoint == SerialLine(f"{agent_end}-{letter}", 38400, letter, 2)
        with pytest.raises(UnsupportedDevice, match="other settings"):
            make_driver(device("c", replace(serial, baudrate=9600)), shared)
        tcp = ModbusTcpConnection(host="127.0.0.1", port=1502, unit_id=4)
        c = make_driver(device("c", tcp), shared)
        d = make_driver(device("d", replace(tcp, unit_id=5)), shared)
        assert isinstance(c, ModbusDriver)
        assert isinstance(d, ModbusDriver)
        assert c.line is d.line is not a.line
        assert (c.binding.unit_id, d.binding.unit_id) == (4, 5)
        with pytest.raises(UnsupportedDevice, match="other settings"):
            make_driver(device("e", replace(tcp, framer=type(tcp.framer)("rtu"))), shared)
        # the two serial devices read through the factory-made line
        sim = ModbusSimulator(MODEL, units=(1, 2), serial_port=device_end, baudrate=38400)
        await sim.start()
        await sim.set_value("voltage_c", 240.0, unit=2)
        try:
            await a.connect()
            await b.connect()
            assert (await b.read_all())["voltage_c"].value == 240.0
            assert (await a.read_all())["voltage_c"].value != 240.0
        finally:
            await a.close()
            await b.close()
            await sim.stop()

    run(main())


# --------------------------------------------------------------------------- bad settings


@pytest.mark.parametrize(
    "make",
    [
        lambda: SerialLine(""),
        lambda: SerialLine("/dev/ttyX", parity="M"),  # type: ignore[arg-type]
        lambda: SerialLine("/dev/ttyX", stopbits=3),
        lambda: SerialLine("/dev/ttyX", bytesize=5),
        lambda: SerialLine("/dev/ttyX", baudrate=0),
        lambda: TcpLine("127.0.0.1", 0),
        lambda: TcpLine("127.0.0.1", 70000),
        lambda: TcpLine("127.0.0.1", 502, "ascii"),  # type: ignore[arg-type]
        lambda: ModbusLine(TcpLine("127.0.0.1"), timeout_s=0),
        lambda: ModbusLine(TcpLine("127.0.0.1"), timeout_s=float("nan")),
        lambda: ModbusLine(TcpLine("127.0.0.1")).share(-1.0),
        lambda: ModbusSimulator(MODEL, units=()),
        lambda: ModbusSimulator(MODEL, units=(1, 300)),
    ],
)
def test_bad_line_settings_are_config_errors(make: Any) -> None:
    with pytest.raises(ModbusConfigError):
        make()


def test_shared_key_holding_something_else_is_a_config_error() -> None:
    endpoint = TcpLine("127.0.0.1", 502)
    shared: dict[object, object] = {("modbus-line", endpoint.key): "not a line"}
    with pytest.raises(ModbusConfigError, match="holds str"):
        shared_line(shared, endpoint, timeout_s=1.0)


def test_simulator_refuses_units_it_does_not_serve() -> None:
    async def main() -> None:
        sim = ModbusSimulator(MODEL, units=(1, 2))
        with pytest.raises(ModbusConfigError, match="unit 5"):
            await sim.get_value("voltage_a", unit=5)
        assert await sim.get_value("voltage_a", unit=2) is not None

    run(main())
