"""One bacpypes3 Application per local BACnet/IP address, shared by the devices it reaches,
and the one place where bacpypes3's errors, rejects and aborts become ours.

::

    stack = BacnetStack("127.0.0.1:47809", timeout_s=2.0)   # or bbmd="10.0.0.1:47808"
    app = await stack.acquire()        # made on first use, on the running loop
    value = await stack.call(app.read_property(...), "read analog-input,1")
    await stack.release()              # the last user closes the application
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from bacpypes3.apdu import (
    AbortPDU,
    ErrorPDU,
    ErrorRejectAbortNack,
    RejectPDU,
)
from bacpypes3.app import Application
from bacpypes3.basetypes import HostNPort, IPMode
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject
from bacpypes3.pdu import Address

from protocol_adapters.bacnet.errors import (
    BacnetAbortResponse,
    BacnetConfigError,
    BacnetConnectionError,
    BacnetError,
    BacnetErrorResponse,
    BacnetMappingError,
    BacnetRejectResponse,
    BacnetSegmentationError,
    BacnetTimeoutError,
    BacnetTransportError,
)

__all__ = ["BacnetStack", "parse_address", "translate", "wait_bound"]

_T = TypeVar("_T")
_SEGMENTATION = frozenset(
    {"segmentation-not-supported", "buffer-overflow", "apdu-too-long", "window-size-out-of-range"}
)


def parse_address(text: str, where: str = "address") -> Any:
    """A bacpypes3 ``Address`` of ``host:port`` (an explicit address; never a broadcast)."""
    if not isinstance(text, str) or not text.strip() or "*" in text:
        raise BacnetConfigError(f"{where}: {text!r} is not a BACnet/IP address (host:port)")
    try:
        return Address(text)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise BacnetConfigError(f"{where}: {text!r} is not a BACnet/IP address: {exc}") from exc


def translate(exc: BaseException, what: str) -> BacnetError:
    """Our error for a bacpypes3 exception, Error, Reject or Abort raised while doing ``what``."""
    if isinstance(exc, BacnetError):
        return exc
    if isinstance(exc, ErrorPDU):
        code = f"{getattr(exc, 'errorClass', '?')}:{getattr(exc, 'errorCode', '?')}"
        return BacnetErrorResponse(code, f"{what}: error {code}")
    if isinstance(exc, RejectPDU):
        reason = str(exc.reason)
        return BacnetRejectResponse(f"reject:{reason}", f"{what}: rejected ({reason})")
    if isinstance(exc, AbortPDU):
        reason = str(exc.reason)
        if reason == "no-response":
            return BacnetTimeoutError(f"{what}: no response")
        cls = BacnetSegmentationError if reason in _SEGMENTATION else BacnetAbortResponse
        return cls(f"abort:{reason}", f"{what}: aborted ({reason})")
    if isinstance(exc, ErrorRejectAbortNack):
        return BacnetTransportError(f"{what}: {exc}")
    if isinstance(exc, TimeoutError):
        return BacnetTimeoutError(f"{what}: no response in time")
    if isinstance(exc, OSError):
        return BacnetConnectionError(f"{what}: {exc}")
    if isinstance(exc, ValueError | TypeError | KeyError | AttributeError):
        return BacnetMappingError(f"{what}: {type(exc).__name__}: {exc}")
    return BacnetTransportError(f"{what}: {type(exc).__name__}: {exc}")


async def wait_bound(app: Any, timeout_s: float, where: str) -> None:
    """Wait until ``app``'s UDP sockets are bound. bacpypes3 binds in background tasks that
    retry forever on an error: a datagram sent before then is lost, and a port that cannot be
    bound would never be reported. Raises :class:`BacnetConnectionError` after ``timeout_s``."""
    tasks = []
    for link_layer in getattr(app, "link_layers", {}).values():
        server = getattr(link_layer, "server", None)
        tasks += list(getattr(server, "_transport_tasks", None) or ())
    if not tasks:
        return
    try:
        await asyncio.wait_for(asyncio.shield(asyncio.gather(*tasks)), timeout_s)
    except (TimeoutError, OSError) as exc:
        raise BacnetConnectionError(f"cannot bind {where} within {timeout_s} s") from exc


class BacnetStack:
    """A local BACnet/IP device (our client side) on ``local_address``, shared by drivers.

    ``timeout_s`` is the APDU timeout and ``retries`` the APDU retries of every confirmed
    request; ``max_apdu`` and ``segmentation`` say what answers we accept; ``bbmd``
    (``host:port``) registers the stack as a foreign device with that BBMD for ``ttl_s``
    seconds (bacpypes3 re-registers before it lapses).
    """

    def __init__(
        self,
        local_address: str,
        *,
        device_instance: int = 4194301,
        timeout_s: float = 3.0,
        retries: int = 0,
        bbmd: str | None = None,
        ttl_s: int = 300,
        max_apdu: int = 1476,
        segmentation: bool = True,
    ) -> None:
        parse_address(local_address, "local address")
        if bbmd is not None:
            parse_address(bbmd, "bbmd")
        if not timeout_s > 0:
            raise BacnetConfigError(f"timeout_s must be > 0 (got {timeout_s!r})")
        self.local_address = local_address
        self.device_instance = device_instance
        self.timeout_s = timeout_s
        self.retries = max(0, retries)
        self.bbmd = bbmd
        self.ttl_s = ttl_s
        if max_apdu not in (50, 128, 206, 480, 1024, 1476):
            raise BacnetConfigError(
                f"max_apdu must be 50, 128, 206, 480, 1024 or 1476 (got {max_apdu})"
            )
        self.max_apdu = max_apdu
        self.segmentation = segmentation
        self.app: Any = None
        self._users = 0
        self._lock = asyncio.Lock()

    @property
    def deadline_s(self) -> float:
        """How long one confirmed request may take, retries included (plus a margin)."""
        return self.timeout_s * (self.retries + 1) + 1.0

    async def acquire(self) -> Any:
        """The application, made on the first call; raises :class:`BacnetConnectionError`."""
        async with self._lock:
            if self.app is None:
                app = self._make()
                try:
                    await wait_bound(app, max(self.timeout_s, 2.0), self.local_address)
                    if self.bbmd is not None:
                        await self._registered(app)
                except BacnetError:
                    app.close()
                    raise
                self.app = app
            self._users += 1
            return self.app

    def _make(self) -> Any:
        try:
            device = DeviceObject(
                objectIdentifier=("device", self.device_instance),
                objectName=f"edge-agent-{self.device_instance}",
                vendorIdentifier=999,
                apduTimeout=int(self.timeout_s * 1000),
                numberOfApduRetries=self.retries,
                segmentationSupported="segmented-both" if self.segmentation else "no-segmentation",
                maxApduLengthAccepted=self.max_apdu,
            )
            port = NetworkPortObject(
                self.local_address,
                objectIdentifier=("network-port", 1),
                objectName="NetworkPort-1",
            )
            if self.bbmd is not None:
                port.bacnetIPMode = IPMode.foreign
                port.fdBBMDAddress = HostNPort(self.bbmd)
                port.fdSubscriptionLifetime = self.ttl_s
            return Application.from_object_list([device, port])
        except OSError as exc:
            raise BacnetConnectionError(f"cannot open {self.local_address}: {exc}") from exc
        except (ValueError, TypeError, RuntimeError) as exc:
            raise BacnetConfigError(f"cannot open {self.local_address}: {exc}") from exc

    def bbmd_status(self) -> int | None:
        """The foreign-device registration: None when not foreign (or not started), -2 not
        registered, -1 waiting for the BBMD, 0 registered, > 0 the BBMD's NAK result code."""
        for link_layer in getattr(self.app, "link_layers", {}).values():
            status = getattr(link_layer, "bbmdRegistrationStatus", None)
            if status is not None:
                return int(status)
        return None

    async def _registered(self, app: Any) -> None:
        """Wait for the BBMD to accept our registration (bacpypes3 renews it on its own)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s
        for link_layer in app.link_layers.values():
            event = getattr(link_layer, "_registration_event", None)
            if event is None:
                continue
            try:
                await asyncio.wait_for(event.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError as exc:
                status = getattr(link_layer, "bbmdRegistrationStatus", None)
                if isinstance(status, int) and status > 0:
                    raise BacnetConnectionError(
                        f"BBMD {self.bbmd} refused the foreign-device registration "
                        f"(result {status})"
                    ) from exc
                raise BacnetTimeoutError(
                    f"BBMD {self.bbmd}: no answer to the foreign-device registration"
                ) from exc

    async def release(self) -> None:
        """One user fewer; the last one closes the application."""
        async with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0 and self.app is not None:
                self.app.close()
                self.app = None

    async def call(self, request: Awaitable[_T], what: str) -> _T:
        """Await ``request`` within :attr:`deadline_s`, translating every failure."""
        try:
            return await asyncio.wait_for(request, self.deadline_s)
        except (ErrorRejectAbortNack, Exception) as exc:
            raise translate(exc, what) from exc
