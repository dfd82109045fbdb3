"""What every protocol adapter shares: a reading, a device's link diagnostics, and the driver
contract the edge agent drives.

::

    driver: DeviceDriver = ModbusDriver(...)      # or a BACnet, MQTT or CoAP driver
    driver.set_sink(on_update)                     # pushed values (MQTT, COV, Observe), if any
    await driver.connect()
    readings = await driver.read_points(driver.pollable)   # {property id: Reading}
    await driver.write("setpoint", 21.5)
    await driver.invoke("reset_counters", {})
    driver.diagnostics.state                       # "online" | "degraded" | "offline"

Link errors: each adapter keeps its own exception tree, and its transport errors also derive
from one of the marker classes here, so :class:`DiagnosticState` classifies any adapter's
failure the same way::

    LinkError                  the request did not complete
    ├── LinkConnectionError    cannot connect, or the connection dropped   -> offline
    ├── LinkTimeoutError       no (complete) answer in time                -> degraded, then offline
    └── PeerRejectedError      the device answered with an error code      -> degraded
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from thing_models.messages import Quality

__all__ = [
    "DeviceDriver",
    "DiagnosticState",
    "LinkConnectionError",
    "LinkError",
    "LinkState",
    "LinkTimeoutError",
    "PeerRejectedError",
    "Reading",
    "Update",
    "UpdateSink",
]

LinkState = Literal["online", "degraded", "offline"]


class Reading(NamedTuple):
    """One acquired value, its quality, and why it is not good (empty when good).

    ``value`` is None when there is no value (a sentinel, an undecodable answer, a failed
    request); a reading outside its valid range keeps its value with bad quality.
    """

    value: Any
    quality: Quality
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Update:
    """Values or events a device pushed (MQTT message, BACnet COV, CoAP notification).

    ``events`` are ``(event id, outputs)`` pairs.
    """

    ts_ms: int
    readings: Mapping[str, Reading] = field(default_factory=dict)
    events: tuple[tuple[str, Mapping[str, Any]], ...] = ()


UpdateSink = Callable[[Update], None]


class LinkError(Exception):
    """Marker: a request to the device did not complete."""


class LinkConnectionError(LinkError):
    """Marker: the connection could not be opened or was lost."""


class LinkTimeoutError(LinkError):
    """Marker: no (complete) answer arrived in time."""


class PeerRejectedError(LinkError):
    """Marker: the device answered with an error; ``code`` says which (int or name)."""

    code: int | str = 0


@dataclass(slots=True)
class DiagnosticState:
    """Counters and link state of one driver, updated on every request."""

    state: LinkState = "offline"
    requests: int = 0
    errors: int = 0
    timeouts: int = 0
    #: how often the device answered each error code (Modbus exception codes, BACnet errors ...)
    exception_codes: dict[int | str, int] = field(default_factory=dict)
    last_error: str = ""
    #: wall-clock time (ms since the epoch) of the last successful request, None before one
    last_ok_ms: int | None = None
    consecutive_failures: int = 0

    def ok(self) -> None:
        self.requests += 1
        self.consecutive_failures = 0
        self.last_ok_ms = int(time.time() * 1000)
        self.state = "online"

    def failed(self, error: Exception, offline_after: int) -> None:
        """Count ``error``: a connection error (or ``offline_after`` consecutive timeouts)
        makes the link offline; anything else degraded."""
        self.requests += 1
        self.errors += 1
        self.consecutive_failures += 1
        self.last_error = f"{type(error).__name__}: {error}"
        if isinstance(error, LinkTimeoutError):
            self.timeouts += 1
        if isinstance(error, PeerRejectedError):
            self.exception_codes[error.code] = self.exception_codes.get(error.code, 0) + 1
        transport = isinstance(error, LinkConnectionError | LinkTimeoutError)
        if isinstance(error, LinkConnectionError) or (
            transport and self.consecutive_failures >= offline_after
        ):
            self.state = "offline"
        else:
            self.state = "degraded"

    def snapshot(self) -> DiagnosticState:
        """A copy safe to hand to another task or thread."""
        return DiagnosticState(
            self.state,
            self.requests,
            self.errors,
            self.timeouts,
            dict(self.exception_codes),
            self.last_error,
            self.last_ok_ms,
            self.consecutive_failures,
        )


@runtime_checkable
class DeviceDriver(Protocol):
    """The contract between the edge agent's supervisor and one device's driver.

    - :attr:`pollable`: the properties the supervisor polls with :meth:`read_points` (empty
      for a device that only pushes); :meth:`read_points` never raises for a failed request:
      its points come back as bad-quality :class:`Reading` objects with the error as reason.
    - pushed values go to the sink given to :meth:`set_sink` (called on the event loop).
    - :meth:`write` and :meth:`invoke` raise the adapter's errors: the caller asked for one
      action and must learn that it failed.
    - :attr:`connected` False after a read means the connection is gone: the supervisor
      reconnects with backoff.
    """

    diagnostics: DiagnosticState

    @property
    def endpoint(self) -> str:
        """Where the device is, for logs and status ("10.0.0.7:502 unit 3", "/dev/ttyUSB0")."""
        ...

    @property
    def connected(self) -> bool: ...

    @property
    def pollable(self) -> frozenset[str]: ...

    def set_sink(self, sink: UpdateSink | None) -> None: ...

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def read_points(self, properties: Collection[str]) -> dict[str, Reading]: ...

    async def write(
        self, property_id: str, value: object, *, read_back: bool = False
    ) -> Reading | None: ...

    async def invoke(self, service_id: str, args: Mapping[str, object]) -> dict[str, object]: ...
