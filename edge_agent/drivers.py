"""From a configured device to the driver that talks to it, and the points its reports follow.

::

    shared: dict[object, object] = {}     # one per agent: what drivers share (serial lines ...)
    driver = make_driver(device, shared)  # a DeviceDriver, or UnsupportedDevice(reason)
    points = binding_points(device)       # the device protocol's binding points

Modbus devices are made here (one function per connection type); the other protocols by
``edge_agent.protocols.<protocol>.make_driver`` (see :mod:`edge_agent.protocols`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from edge_agent.config import (
    DeviceConfig,
    ModbusSerialConnection,
    ModbusTcpConnection,
    ProtocolConnection,
)
from edge_agent.errors import UnsupportedDevice
from protocol_adapters.base import DeviceDriver
from thing_models.model import ModbusBinding, ThingModel

if TYPE_CHECKING:
    from protocol_adapters.modbus.driver import CompiledBinding

__all__ = ["Shared", "binding_points", "make_driver"]

Shared = dict[object, object]


def _modbus_tcp(device: DeviceConfig, model: ThingModel, shared: Shared) -> DeviceDriver:
    """A Modbus TCP (or RTU over TCP) device, on the line of its host and port: devices
    behind one gateway share one connection and take turns."""
    from protocol_adapters.modbus.driver import ModbusDriver
    from protocol_adapters.modbus.errors import ModbusConfigError
    from protocol_adapters.modbus.line import TcpLine, shared_line

    connection = device.connection
    assert isinstance(connection, ModbusTcpConnection)
    binding = device.bindings().modbus
    if binding is None:
        raise UnsupportedDevice(f"model {model.ref} has no modbus binding")
    framer: Literal["socket", "rtu"] = "rtu" if connection.framer.value == "rtu" else "socket"
    try:
        endpoint = TcpLine(connection.host, connection.port, framer)
        line = shared_line(shared, endpoint, timeout_s=connection.timeout_s)
        bound = replace(binding, unit_id=connection.unit_id)
        return ModbusDriver.on_line(line, bound, model, compiled=_compiled(shared, bound, model))
    except ModbusConfigError as exc:
        raise UnsupportedDevice(f"device {device.id}: {exc}") from exc


def _compiled(shared: Shared, binding: ModbusBinding, model: ThingModel) -> CompiledBinding:
    """The binding compiled once per agent for every device of the same model and binding."""
    from protocol_adapters.modbus.driver import CompiledBinding

    key = ("modbus-compiled", id(model), binding)
    found = shared.get(key)
    if found is None:
        found = shared[key] = (model, CompiledBinding.of(binding, model))  # keeps id(model)
    assert isinstance(found, tuple)
    compiled: CompiledBinding = found[1]
    return compiled


def _modbus_serial(device: DeviceConfig, model: ThingModel, shared: Shared) -> DeviceDriver:
    """A serial RTU device, on the line of its port: every unit id on one RS-485 port shares
    one connection and one transaction at a time."""
    from protocol_adapters.modbus.driver import ModbusDriver
    from protocol_adapters.modbus.errors import ModbusConfigError
    from protocol_adapters.modbus.line import SerialLine, shared_line

    connection = device.connection
    assert isinstance(connection, ModbusSerialConnection)
    binding = device.bindings().modbus
    if binding is None:
        raise UnsupportedDevice(f"model {model.ref} has no modbus binding")
    parity: Literal["N", "E", "O"] = (
        "E" if connection.parity.value == "E" else "O" if connection.parity.value == "O" else "N"
    )
    try:
        endpoint = SerialLine(
            connection.port,
            baudrate=connection.baudrate,
            parity=parity,
            stopbits=connection.stopbits,
            bytesize=connection.bytesize,
        )
        line = shared_line(shared, endpoint, timeout_s=connection.timeout_s)
        bound = replace(binding, unit_id=connection.unit_id)
        return ModbusDriver.on_line(line, bound, model, compiled=_compiled(shared, bound, model))
    except ModbusConfigError as exc:
        raise UnsupportedDevice(f"device {device.id}: {exc}") from exc


_FACTORIES: dict[type, Callable[[DeviceConfig, ThingModel, Shared], DeviceDriver]] = {
    ModbusTcpConnection: _modbus_tcp,
    ModbusSerialConnection: _modbus_serial,
}


def make_driver(device: DeviceConfig, shared: Shared) -> DeviceDriver:
    """The driver for ``device``; raises :class:`UnsupportedDevice` saying why there is none.
    ``shared``: one dict per agent, where factories keep what several drivers share (one
    connection and one transaction lock per RS-485 line, for instance)."""
    model = device.thing_model
    if model is None:
        raise UnsupportedDevice(f"model {device.model} is not loaded")
    if isinstance(device.connection, ProtocolConnection):
        module = importlib.import_module(f"edge_agent.protocols.{device.protocol.value}")
        driver: DeviceDriver = module.make_driver(device, model, shared)
        return driver
    factory = _FACTORIES.get(type(device.connection))
    if factory is None:
        raise UnsupportedDevice(f"no driver for {type(device.connection).__name__}")
    return factory(device, model, shared)


def binding_points(device: DeviceConfig) -> Sequence[Any]:
    """The binding points of the device's protocol (anything with ``property``, ``group`` and
    ``report``), for the reporting policies."""
    binding = getattr(device.bindings(), device.protocol.value, None)
    return tuple(getattr(binding, "points", ()))
