"""The BACnet adapter's exception tree.

Every error the adapter raises is a :class:`BacnetError`. The pure layer (:mod:`.mapping`)
raises only the first two branches; the transport branch is raised by the driver and the
discovery, which translate bacpypes3's errors, rejects and aborts once, at their boundary
(``raise ... from exc``)::

    BacnetError
    ├── BacnetConfigError          a binding, address or identifier the adapter cannot use:
    │                              an unknown object type, a priority outside 1..16 ...
    ├── BacnetMappingError         a value that does not fit: a string for a float property,
    │                              an enum value the model does not list, NaN for an integer ...
    └── BacnetTransportError       the request did not complete (driver and discovery only)
        ├── BacnetConnectionError      the local UDP port cannot be bound
        ├── BacnetTimeoutError         no answer in time (a silent device, Abort no-response)
        └── BacnetPeerError            the device answered with an Error, Reject or Abort
            ├── BacnetErrorResponse        Error: ``code`` is "class:code", e.g.
            │                              "property:unknown-property"
            ├── BacnetRejectResponse       Reject: ``code`` is "reject:<reason>"
            └── BacnetAbortResponse        Abort: ``code`` is "abort:<reason>"
                └── BacnetSegmentationError    the answer needs segmentation one side lacks
"""

from __future__ import annotations

from protocol_adapters.base import (
    LinkConnectionError,
    LinkError,
    LinkTimeoutError,
    PeerRejectedError,
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


class BacnetError(Exception):
    """Base class of every error of the BACnet adapter."""


class BacnetConfigError(BacnetError):
    """A binding, address, identifier or option the adapter cannot work with."""


class BacnetMappingError(BacnetError):
    """A value that does not fit the property or the BACnet object; the message says which."""


class BacnetTransportError(BacnetError, LinkError):
    """A request that did not complete (driver and discovery only)."""


class BacnetConnectionError(BacnetTransportError, LinkConnectionError):
    """The local BACnet/IP port cannot be opened."""


class BacnetTimeoutError(BacnetTransportError, LinkTimeoutError):
    """No answer arrived in time."""


class BacnetPeerError(BacnetTransportError, PeerRejectedError):
    """The device answered with an Error, Reject or Abort; ``code`` names it."""

    def __init__(self, code: str, message: str) -> None:
        self.code: str = code
        super().__init__(message)


class BacnetErrorResponse(BacnetPeerError):
    """A BACnet Error PDU or a property access error (``code`` "class:code")."""


class BacnetRejectResponse(BacnetPeerError):
    """A BACnet Reject PDU (the device does not support the service or the request)."""


class BacnetAbortResponse(BacnetPeerError):
    """A BACnet Abort PDU."""


class BacnetSegmentationError(BacnetAbortResponse):
    """The request or its answer needs segmentation that one side does not support."""
