"""The Modbus adapter's exception tree.

Every error the adapter raises is a :class:`ModbusError`; callers that only want to log and
carry on catch that one class. The pure layer (codec and planner) raises only the first two
branches; the transport branches are raised by the asyncio driver, which translates the
third-party client's exceptions once, at its boundary (``raise ... from exc``)::

    ModbusError
    ├── ModbusConfigError        a binding the codec or planner cannot use: a string without
    │                            ``count``, ``mask`` on a float, a point wider than the request
    │                            limit, ``address: 0`` with one-based addressing ...
    ├── ModbusCodecError         registers or values that do not fit a point: wrong register
    │                            count, a register outside 0..65535, a value outside the raw
    │                            type's range, an enum value with no raw mapping ...
    └── ModbusTransportError     the request did not complete (driver only)
        ├── ModbusConnectionError    cannot connect, or the connection dropped
        ├── ModbusTimeoutError       no (complete) response in time
        └── ModbusExceptionResponse  the device answered with a Modbus exception code

Bad *readings* are not errors: a sentinel value, a reading outside ``valid_min``/``valid_max``
or a string that does not decode give a :class:`~protocol_adapters.modbus.codec.Decoded` with
bad quality and a reason, so one faulty point never costs the rest of a request.
"""

from __future__ import annotations

from protocol_adapters.base import (
    LinkConnectionError,
    LinkError,
    LinkTimeoutError,
    PeerRejectedError,
)

__all__ = [
    "EXCEPTION_CODES",
    "ModbusCodecError",
    "ModbusConfigError",
    "ModbusConnectionError",
    "ModbusError",
    "ModbusExceptionResponse",
    "ModbusTimeoutError",
    "ModbusTransportError",
]

#: Modbus exception codes (Modbus Application Protocol v1.1b3, section 7).
EXCEPTION_CODES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class ModbusError(Exception):
    """Base class of every error of the Modbus adapter."""


class ModbusConfigError(ModbusError):
    """A point, service write or planner limit that the codec or planner cannot work with."""


class ModbusCodecError(ModbusError):
    """Registers, bits or a value that do not fit the point; the message names the point and
    what was expected."""


class ModbusTransportError(ModbusError, LinkError):
    """A request that did not complete (raised by the driver, never by the pure layer)."""


class ModbusConnectionError(ModbusTransportError, LinkConnectionError):
    """The connection could not be opened or was lost."""


class ModbusTimeoutError(ModbusTransportError, LinkTimeoutError):
    """No complete response arrived in time."""


class ModbusExceptionResponse(ModbusTransportError, PeerRejectedError):
    """The device answered with exception ``code`` to ``function``."""

    def __init__(self, function: int, code: int, detail: str = "") -> None:
        self.function = function
        self.code: int = code
        name = EXCEPTION_CODES.get(code, "unknown exception code")
        text = f"function {function}: exception {code} ({name})"
        super().__init__(f"{text}: {detail}" if detail else text)
