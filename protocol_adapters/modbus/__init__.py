"""Modbus: a pure register codec and read planner (this package), and the asyncio driver.

- :mod:`protocol_adapters.modbus.codec`: points compiled once; registers <-> typed values,
  write requests (functions 5, 6, 15, 16)
- :mod:`protocol_adapters.modbus.planner`: points coalesced into read requests of up to 125
  registers or 2,000 coils, and responses split back into points
- :mod:`protocol_adapters.modbus.errors`: the exception tree

Nothing here does I/O; the driver feeds it registers.
"""

from protocol_adapters.modbus.codec import (
    Decoded,
    PointCodec,
    ServiceWriteCodec,
    WriteRequest,
    compile_binding,
    compile_point,
    compile_service_write,
    pdu_address,
)
from protocol_adapters.modbus.errors import (
    ModbusCodecError,
    ModbusConfigError,
    ModbusConnectionError,
    ModbusError,
    ModbusExceptionResponse,
    ModbusTimeoutError,
    ModbusTransportError,
)
from protocol_adapters.modbus.planner import (
    MAX_COILS,
    MAX_REGISTERS,
    ReadRequest,
    decode_response,
    plan_reads,
    split_response,
)

__all__ = [
    "MAX_COILS",
    "MAX_REGISTERS",
    "Decoded",
    "ModbusCodecError",
    "ModbusConfigError",
    "ModbusConnectionError",
    "ModbusError",
    "ModbusExceptionResponse",
    "ModbusTimeoutError",
    "ModbusTransportError",
    "PointCodec",
    "ReadRequest",
    "ServiceWriteCodec",
    "WriteRequest",
    "compile_binding",
    "compile_point",
    "compile_service_write",
    "decode_response",
    "pdu_address",
    "plan_reads",
    "split_response",
]
