"""BACnet/IP adapter: pure value mapping (:mod:`.mapping`), a shared bacpypes3 stack
(:mod:`.stack`), the asyncio driver (:mod:`.driver`), Who-Is discovery (:mod:`.discovery`)
and a simulator (:mod:`.simulator`). Errors: :mod:`.errors`."""

from protocol_adapters.bacnet.errors import (
    BacnetAbortResponse,
    BacnetConfigError,
    BacnetConnectionError,
    BacnetError,
    BacnetErrorResponse,
    BacnetMappingError,
    BacnetPeerError,
    BacnetRejectResponse,
    BacnetSegmentationError,
    BacnetTimeoutError,
    BacnetTransportError,
)

__all__ = [
    "BacnetAbortResponse",
    "BacnetConfigError",
    "BacnetConnectionError",
    "BacnetError",
    "BacnetErrorResponse",
    "BacnetMappingError",
    "BacnetPeerError",
    "BacnetRejectResponse",
    "BacnetSegmentationError",
    "BacnetTimeoutError",
    "BacnetTransportError",
]
