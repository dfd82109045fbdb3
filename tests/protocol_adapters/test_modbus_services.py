"""Services carried out as Modbus writes (functions 5, 6, 15, 16) against the real simulator.

invoke contract under test: the binding's service writes run in binding order under the line
lock and return ``{}``; a service the binding does not map is a ModbusConfigError naming it; a
missing or unfit input is a ModbusCodecError naming the input; transport failures raise and
are counted in the driver's diagnostics.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol_adapters.modbus import (
    ModbusCodecError,
    ModbusConfigError,
    ModbusConnectionError,
    ModbusExceptionResponse,
    WriteRequest,
    compile_service_write,
)
from protocol_adapters.modbus.driver import ModbusDriver
from protocol_adapters.modbus.simulator import ModbusSimulator
from thing_models import load_model_file
from thing_models.model import (
    ModbusBinding,
    ModbusServiceWrite,
    ModbusTable,
    ModbusType,
    ThingModel,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
METER = load_model_file(EXAMPLES / "energy-meter-3p.yaml")
LIFT = load_model_file(EXAMPLES / "lift-controller.yaml")
LIFT_BINDING = LIFT.bindings.modbus
assert LIFT_BINDING is not None

T = TypeVar("T")
Trace = list[tuple[bool, int, int]]
Body = Callable[[ModbusSimulator, ModbusDriver, Trace], Awaitable[None]]


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def with_sim(
    body: Body,
    model: ThingModel,
    *,
    binding: ModbusBinding | None = None,
    driver_binding: ModbusBinding | None = None,
) -> None:
    trace: Trace = []
    sim = ModbusSimulator(
        model, binding=binding, on_pdu=lambda sent, unit, fn: trace.append((sent, unit, fn))
    )
    port = await sim.start()
    used = driver_binding or binding or model.bindings.modbus
    assert used is not None
    driver = ModbusDriver("127.0.0.1", port, used, model, timeout_s=0.5)
    try:
        await driver.connect()
        await body(sim, driver, trace)
    finally:
        await driver.close()
        await sim.stop()


def state_of(driver: ModbusDriver) -> str:
    return driver.diagnostics.state  # a plain str: mypy would narrow it across awaits


def requests_of(trace: Trace) -> list[int]:
    return [fn for sent, _, fn in trace if not sent]


# --------------------------------------------------------------------------- the examples


def test_fixed_value_service_writes_its_coil() -> None:
    async def body(sim: ModbusSimulator, driver: ModbusDriver, trace: Trace) -> None:
        assert await sim.read_table(ModbusTable.COIL, 10) == [0]
        assert await driver.invoke("reset_energy", {}) == {}  # outputs are not read back
        assert await sim.read_table(ModbusTable.COIL, 10) == [1]
        assert requests_of(trace) == [5]
        assert driver.diagnostics.state == "online"
        assert driver.diagnostics.requests == 1

    run(with_sim(body, METER))


def test_param_service_writes_the_input_value() -> None:
    async def body(sim: ModbusSimulator, driver: ModbusDriver, trace: Trace) -> None:
        assert await driver.invoke("call_to_floor", {"floor": -2}) == {}
        assert await sim.read_table(ModbusTable.HOLDING_REGISTER, 100) == [0xFFFE]  # int16
        assert await driver.invoke("call_to_floor", {"floor": 7, "extra": "ignored"}) == {}
        assert await sim.read_table(ModbusTable.HOLDING_REGISTER, 100) == [7]
        assert await driver.invoke("reset_fault", {}) == {}
        assert await sim.read_table(ModbusTable.COIL, 10) == [1]
        assert requests_of(trace) == [6, 6, 5]

    run(with_sim(body, LIFT))


def test_property_write_with_read_back_still_works_beside_services() -> None:
    async def body(sim: ModbusSimulator, driver: ModbusDriver, trace: Trace) -> None:
        back = await driver.write("out_of_service", True, read_back=True)
        assert back is not None
        assert back.value is True
        assert await sim.get_value("out_of_service") is True
        await driver.invoke("reset_fault", {})
        assert requests_of(trace) == [5, 1, 5]

    run(with_sim(body, LIFT))


# --------------------------------------------------------------------------- function codes


def test_multi_register_and_multi_coil_services_use_functions_15_and_16() -> None:
    assert LIFT_BINDING is not None
    services = (
        ModbusServiceWrite(
            "set_target", ModbusTable.HOLDING_REGISTER, 200, ModbusType.INT32, param="target"
        ),
        ModbusServiceWrite(
            "set_target", ModbusTable.HOLDING_REGISTER, 202, ModbusType.FLOAT32, value=1.5
        ),
        ModbusServiceWrite(
            "latch", ModbusTable.COIL, 20, ModbusType.BIT, value=True, write_function=15
        ),
        ModbusServiceWrite(
            "pulse",
            ModbusTable.HOLDING_REGISTER,
            210,
            ModbusType.UINT16,
            value=9,
            write_function=16,
        ),
    )
    binding = replace(LIFT_BINDING, services=services)

    async def body(sim: ModbusSimulator, driver: ModbusDriver, trace: Trace) -> None:
        assert await driver.invoke("set_target", {"target": -70000}) == {}
        assert await sim.read_table(ModbusTable.HOLDING_REGISTER, 200, 2) == [0xFFFE, 0xEE90]
        assert await sim.read_table(ModbusTable.HOLDING_REGISTER, 202, 2) == [0x3FC0, 0]
        await driver.invoke("latch", {})
        assert await sim.read_table(ModbusTable.COIL, 20) == [1]
        await driver.invoke("pulse", {})
        assert await sim.read_table(ModbusTable.HOLDING_REGISTER, 210) == [9]
        assert requests_of(trace) == [16, 16, 15, 16]  # both writes of set_target, in order
        assert driver.diagnostics.requests == 4

    run(with_sim(body, LIFT, binding=binding))


# --------------------------------------------------------------------------- errors


def test_unmapped_service_is_a_config_error_naming_it() -> None:
    async def body(sim: ModbusSimulator, driver: ModbusDriver, trace: Trace) -> None:
        with pytest.raises(ModbusConfigError, match="open_doors: no Modbus service write"):
            await driver.invoke("open_doors", {})
        assert trace == []
        assert driver.diagnostics.requests == 0

    run(with_sim(body, LIFT))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({}, "lacks input 'floor'"),
        ({"level": 3}, "lacks input 'floor'"),
        ({"floor": 40000}, "input 'floor'"),  # beyond int16
        ({"floor": -40000}, "input 'floor'"),
        ({"floor": "third"}, "input 'floor'"),
        ({"floor": None}, "input 'floor'"),
        ({"floor": math.nan}, "input 'floor'"),
        ({"floor": [1, 2]}, "input 'floor'"),
        ({"floor": {"n": 1}}, "input 'floor'"),
    ],
)
def test_missing_or_unfit_input_is_a_codec_error_naming_it(
    args: dict[str, object], match: str
) -> None:
    async def body(sim: ModbusSimulator, driver: ModbusDriver, trace: Trace) -> None:
        with pytest.raises(ModbusCodecError, match=match):
            await driver.invoke("call_to_floor", args)
        assert trace == []  # nothing went to the device
        assert await sim.read_table(ModbusTable.HOLDING_REGISTER, 100) == [0]

    run(with_sim(body, LIFT))


def test_exception_response_to_a_service_write_raises_and_is_counted() -> None:
    assert LIFT_BINDING is not None
    ghost = ModbusServiceWrite(
        "ghost", ModbusTable.HOLDING_REGISTER, 900, ModbusType.UINT16, value=1
    )
    driver_binding = replace(LIFT_BINDING, services=(*LIFT_BINDING.services, ghost))

    async def body(sim: ModbusSimulator, driver: ModbusDriver, trace: Trace) -> None:
        with pytest.raises(ModbusExceptionResponse) as info:
            await driver.invoke("ghost", {})
        assert (info.value.function, info.value.code) == (6, 2)
        assert driver.diagnostics.exception_codes == {2: 1}
        assert state_of(driver) == "degraded"
        await driver.invoke("reset_fault", {})  # the device still answers
        assert state_of(driver) == "online"

    run(with_sim(body, LIFT, driver_binding=driver_binding))


def test_service_on_a_lost_connection_raises_and_goes_offline() -> None:
    async def body(sim: ModbusSimulator, driver: ModbusDriver, trace: Trace) -> None:
        await sim.stop()
        with pytest.raises(ModbusConnectionError):
            await driver.invoke("reset_fault", {})
        assert driver.diagnostics.state == "offline"
        assert driver.diagnostics.errors == 1

    run(with_sim(body, LIFT))


def test_unusable_service_write_is_refused_when_the_driver_is_built() -> None:
    assert LIFT_BINDING is not None
    both = ModbusServiceWrite("x", ModbusTable.COIL, 1, ModbusType.BIT, value=True, param="p")
    neither = ModbusServiceWrite("y", ModbusTable.COIL, 1, ModbusType.BIT)
    read_only = ModbusServiceWrite("z", ModbusTable.INPUT_REGISTER, 1, ModbusType.UINT16, value=1)
    for write, match in (
        (both, "x: give exactly one"),
        (neither, "y: give exactly one"),
        (read_only, "z: input_register is read-only"),
    ):
        with pytest.raises(ModbusConfigError, match=match):
            ModbusDriver("127.0.0.1", 502, replace(LIFT_BINDING, services=(write,)), LIFT)


# --------------------------------------------------------------------------- hostile inputs


_INPUTS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from([ModbusType.INT16, ModbusType.UINT32, ModbusType.FLOAT32, ModbusType.BIT]),
    args=st.dictionaries(st.sampled_from(["floor", "other"]), _INPUTS, max_size=2),
)
def test_service_inputs_make_a_write_or_a_codec_error(
    kind: ModbusType, args: dict[str, object]
) -> None:
    assert LIFT_BINDING is not None
    table = ModbusTable.COIL if kind is ModbusType.BIT else ModbusTable.HOLDING_REGISTER
    codec = compile_service_write(
        ModbusServiceWrite("svc", table, 5, kind, param="floor"), LIFT_BINDING
    )
    try:
        write: WriteRequest | ModbusCodecError = ModbusDriver._service_write("svc", codec, args)
    except ModbusCodecError as exc:
        write = exc
    if isinstance(write, ModbusCodecError):
        assert "svc" in str(write)
        return
    assert write.function in (5, 6, 15, 16)
    assert all(0 <= int(v) <= 0xFFFF for v in write.values)
