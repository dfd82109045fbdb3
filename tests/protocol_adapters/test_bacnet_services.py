"""BACnet services as WriteProperty sequences: the pure compilation and value typing (tables
and fuzzing), and :meth:`BacnetDriver.invoke` against the simulator in its own process on
127.0.0.1 (GUIDE section 3: each peer on its own UDP port)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Coroutine, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from bacpypes3.basetypes import BinaryPV
from bacpypes3.primitivedata import (
    Atomic,
    CharacterString,
    Null,
    Real,
    Unsigned,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol_adapters.bacnet.driver import BacnetDriver
from protocol_adapters.bacnet.errors import (
    BacnetConfigError,
    BacnetError,
    BacnetErrorResponse,
    BacnetMappingError,
)
from protocol_adapters.bacnet.mapping import (
    ObjectId,
    compile_service_writes,
    fixed_bacnet_value,
)
from protocol_adapters.bacnet.simulator import spawn, stop
from protocol_adapters.bacnet.stack import BacnetStack
from thing_models import load_model_file, load_model_text
from thing_models.model import BacnetBinding, BacnetServiceWrite, ThingModel

REPO = Path(__file__).resolve().parents[2]
AHU_FILE = REPO / "examples" / "models" / "air-handling-unit.yaml"
AHU = load_model_file(AHU_FILE)
_T = TypeVar("_T")

#: A small device whose services also write objects no point describes, and an input.
PANEL_TEXT = """\
model: acme.test/panel
version: "1.0.0"
properties:
  - {id: setpoint, type: float, min: 0, max: 50, access: rw}
  - {id: temp, type: float}
services:
  - id: pulse_reset
  - id: set_setpoint_and_label
    inputs:
      - {id: value, type: float, min: 0, max: 50}
      - {id: stage, type: int32, min: 1, max: 4}
  - id: poke_input
bindings:
  bacnet:
    use_cov: false
    points:
      - {property: setpoint, object_type: analog-value, instance: 1, write_priority: 16}
      - {property: temp, object_type: analog-input, instance: 1}
    services:
      - {service: pulse_reset, object_type: binary-value, instance: 7, value: active, priority: 8}
      - service: pulse_reset
        object_type: binary-value
        instance: 7
        relinquish: true
        priority: 8
      - service: set_setpoint_and_label
        object_type: analog-value
        instance: 1
        param: value
        priority: 10
      - {service: set_setpoint_and_label, object_type: multi-state-value, instance: 9, param: stage}
      - {service: poke_input, object_type: analog-input, instance: 1, value: 3.5}
"""
PANEL = load_model_text(PANEL_TEXT, "panel.yaml")


def run(coro: Coroutine[Any, Any, _T], timeout: float = 30) -> _T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def ahu() -> Iterator[str]:
    address = f"127.0.0.1:{free_udp_port()}"
    proc = spawn(AHU_FILE, address, 1101, "--interval", "5")
    yield address
    stop(proc)


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("panel") / "panel.yaml"
    path.write_text(PANEL_TEXT)
    address = f"127.0.0.1:{free_udp_port()}"
    proc = spawn(path, address, 1102, "--interval", "5")
    yield address
    stop(proc)


def driver(address: str, model: ThingModel) -> BacnetDriver:
    binding = model.bindings.bacnet
    assert binding is not None
    binding = replace(binding, use_cov=False)
    stack = BacnetStack(f"127.0.0.1:{free_udp_port()}", timeout_s=1.0)
    return BacnetDriver(address, binding, model, stack=stack)


# --------------------------------------------------------------------------- real peer


def test_ahu_services_command_the_priority_array(ahu: str) -> None:
    async def scenario() -> None:
        async with driver(ahu, AHU) as d:
            assert await d.invoke("set_operating_mode", {"mode": 3}) == {}
            assert (await d.read_points(["operating_mode"]))["operating_mode"].value == 3
            await d.write("supply_fan_command", True)  # priority 8
            before = d.diagnostics.requests
            assert await d.invoke("emergency_stop", {}) == {}
            assert d.diagnostics.requests == before + 2  # two WriteProperty, in order
            readings = await d.read_points(["operating_mode", "supply_fan_command"])
            assert readings["operating_mode"].value == 1
            assert readings["supply_fan_command"].value is False
            # a schedule's command at priority 16 waits under the emergency stop (priority 2)
            await d.invoke("set_operating_mode", {"mode": 4})
            assert (await d.read_points(["operating_mode"]))["operating_mode"].value == 1
            await d.invoke("clear_emergency_stop", {})
            readings = await d.read_points(["operating_mode", "supply_fan_command"])
            assert readings["operating_mode"].value == 4
            assert readings["supply_fan_command"].value is True

    run(scenario())


def test_ahu_service_inputs_are_checked_before_anything_is_sent(ahu: str) -> None:
    async def scenario() -> None:
        async with driver(ahu, AHU) as d:
            await d.invoke("set_operating_mode", {"mode": 2})
            before = d.diagnostics.requests
            with pytest.raises(BacnetMappingError, match="input 'mode' is missing"):
                await d.invoke("set_operating_mode", {})
            with pytest.raises(BacnetMappingError, match="not one of the model's enum values"):
                await d.invoke("set_operating_mode", {"mode": 9})
            with pytest.raises(BacnetMappingError, match="expected an enum value"):
                await d.invoke("set_operating_mode", {"mode": [1]})
            with pytest.raises(BacnetConfigError, match="start_night_purge: no BACnet service"):
                await d.invoke("start_night_purge", {"duration": 30})
            assert d.diagnostics.requests == before
            assert (await d.read_points(["operating_mode"]))["operating_mode"].value == 2

    run(scenario())


def test_simulator_serves_objects_only_services_name(panel: str) -> None:
    async def scenario() -> None:
        async with driver(panel, PANEL) as d:
            await d.invoke("pulse_reset", {})
            await d.invoke("set_setpoint_and_label", {"value": 21.5, "stage": 3})
            assert (await d.read_points(["setpoint"]))["setpoint"].value == 21.5
            app = d._require_app()
            address = d._address
            pv = await app.read_property(address, "multi-state-value,9", "present-value")
            assert int(pv) == 3
            reset = await app.read_property(address, "binary-value,7", "present-value")
            assert str(reset) == "inactive"  # active at 8, then 8 relinquished
            slots = await app.read_property(address, "binary-value,7", "priority-array")
            assert all(slot.null is not None for slot in slots)

    run(scenario())


def test_device_refusal_stops_the_service_with_its_code(panel: str) -> None:
    async def scenario() -> None:
        async with driver(panel, PANEL) as d:
            with pytest.raises(BacnetErrorResponse) as info:
                await d.invoke("poke_input", {})
            assert info.value.code == "property:write-access-denied"
            assert "poke_input (analog-input,1 present-value)" in str(info.value)
            assert d.diagnostics.exception_codes["property:write-access-denied"] == 1
            with pytest.raises(BacnetMappingError, match="above the maximum 50"):
                await d.invoke("set_setpoint_and_label", {"value": 80.0, "stage": 1})

    run(scenario())


# --------------------------------------------------------------------------- pure


def _write(**fields: Any) -> BacnetServiceWrite:
    base: dict[str, Any] = {
        "service": "set_setpoint_and_label",
        "object_type": "analog-value",
        "instance": 1,
    }
    return BacnetServiceWrite(**(base | fields))


def _compile(*writes: BacnetServiceWrite) -> dict[str, Any]:
    return compile_service_writes(BacnetBinding(services=writes), PANEL)


def test_compiled_writes_keep_binding_order_and_types() -> None:
    binding = PANEL.bindings.bacnet
    assert binding is not None
    services = compile_service_writes(binding, PANEL)
    pulse = services["pulse_reset"]
    assert [w.object_id for w in pulse] == [ObjectId("binary-value", 7)] * 2
    assert pulse[0].value == BinaryPV("active")
    assert isinstance(pulse[1].value, Null)
    assert [w.priority for w in pulse] == [8, 8]
    both = services["set_setpoint_and_label"]
    assert isinstance(both[0].bacnet_value({"value": 20, "stage": 2}), Real)
    assert both[1].bacnet_value({"value": 20, "stage": 2}) == Unsigned(2)
    assert both[1].priority is None


@pytest.mark.parametrize(
    ("write", "error", "fragment"),
    [
        (_write(service="nope", value=1.0), BacnetConfigError, "no such service"),
        (_write(param="nope"), BacnetConfigError, "'nope' is not an input"),
        (_write(value=1.0, param="value"), BacnetConfigError, "exactly one of"),
        (_write(), BacnetConfigError, "exactly one of"),
        (_write(value=1.0, priority=6), BacnetConfigError, "priority 6 is reserved"),
        (_write(value=1.0, priority=0), BacnetConfigError, "1..16"),
        (_write(object_type="analog-valeu", value=1.0), BacnetConfigError, "not a BACnet object"),
        (_write(property_id="present value", value=1.0), BacnetConfigError, "not a property"),
        (_write(value="warm"), BacnetMappingError, "an analog object takes a number"),
        (_write(object_type="binary-value", value=2), BacnetMappingError, "takes a bool"),
        (_write(object_type="multi-state-value", value=0), BacnetMappingError, "state >= 1"),
    ],
)
def test_compile_refuses_unusable_writes(
    write: BacnetServiceWrite, error: type[BacnetError], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        _compile(write)


@pytest.mark.parametrize(
    ("value", "object_type", "expected"),
    [
        ("active", "binary-value", BinaryPV("active")),
        ("inactive", "binary-output", BinaryPV("inactive")),
        (True, "binary-value", BinaryPV("active")),
        (0, "binary-value", BinaryPV("inactive")),
        (3, "multi-state-value", Unsigned(3)),
        (2, "analog-output", Real(2.0)),
        (2.5, "analog-value", Real(2.5)),
        ("P2", "characterstring-value", CharacterString("P2")),
    ],
    ids=["active", "inactive", "true", "zero", "state", "int-real", "real", "text"],
)
def test_fixed_values_are_typed_for_the_object(
    value: object, object_type: str, expected: Atomic
) -> None:
    result = fixed_bacnet_value(value, object_type, "here")
    assert type(result) is type(expected)
    assert result == expected


_ANY = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
_OBJECT_TYPES = st.sampled_from(
    ["analog-value", "binary-value", "multi-state-value", "integer-value", "large-analog-value",
     "characterstring-value", "positive-integer-value", "schedule"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(value=_ANY, object_type=_OBJECT_TYPES)
def test_fuzz_fixed_values_map_or_raise_our_error(value: object, object_type: str) -> None:
    try:
        result = fixed_bacnet_value(value, object_type, "fuzz")
    except BacnetError as exc:
        message = str(exc)
    else:
        assert isinstance(result, Atomic)
        return
    assert message.startswith("fuzz")


_SERVICES = compile_service_writes(PANEL.bindings.bacnet or BacnetBinding(), PANEL)


@settings(max_examples=300, deadline=None)
@given(args=st.dictionaries(st.sampled_from(["value", "stage", "other"]), _ANY, max_size=3))
def test_fuzz_service_inputs_map_or_raise_our_error(args: dict[str, object]) -> None:
    for write in _SERVICES["set_setpoint_and_label"]:
        try:
            result = write.bacnet_value(args)
        except BacnetMappingError as exc:
            message = str(exc)
        else:
            assert isinstance(result, Real | Unsigned)
            continue
        assert message.startswith("set_setpoint_and_label")
