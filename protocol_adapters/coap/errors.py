"""The CoAP adapter's exception tree.

Every error the adapter raises is a :class:`CoapError`. The pure mapping layer raises the
first three branches; the transport branch is raised by the asyncio driver, which translates
aiocoap's exceptions once, at its boundary (``raise ... from exc``)::

    CoapError
    ├── CoapConfigError          a binding the mapping cannot use: a bad path, an unknown
    │                            property, a write to a read-only property ...
    ├── CoapPayloadError         a payload that does not decode: not JSON / CBOR / UTF-8 text,
    │                            over the size limit, a path that is not in the document
    ├── CoapValueError           a value that does not fit the property's type (a write)
    └── CoapTransportError       the request did not complete (driver only)
        ├── CoapConnectionError      the datagram could not be sent or was refused
        ├── CoapTimeoutError         no (complete) response in time
        └── CoapResponseError        the device answered 4.xx or 5.xx (``code`` like "4.04")

Bad *readings* are not errors: a value of the wrong type or out of range comes back as a
bad-quality :class:`~protocol_adapters.base.Reading` with a reason, so one faulty point never
costs the other points of its resource.
"""

from __future__ import annotations

from protocol_adapters.base import (
    LinkConnectionError,
    LinkError,
    LinkTimeoutError,
    PeerRejectedError,
)

__all__ = [
    "CoapConfigError",
    "CoapConnectionError",
    "CoapError",
    "CoapPayloadError",
    "CoapResponseError",
    "CoapTimeoutError",
    "CoapTransportError",
    "CoapValueError",
]


class CoapError(Exception):
    """Base class of every error of the CoAP adapter."""


class CoapConfigError(CoapError):
    """A binding, path or request the mapping cannot work with."""


class CoapPayloadError(CoapError):
    """A payload that does not decode or does not hold the point's path."""


class CoapValueError(CoapError):
    """A value that does not fit the property's type (raised for writes)."""


class CoapTransportError(CoapError, LinkError):
    """A request that did not complete (raised by the driver, never by the pure layer)."""


class CoapConnectionError(CoapTransportError, LinkConnectionError):
    """The request could not be sent, or the peer refused it (ICMP unreachable)."""


class CoapTimeoutError(CoapTransportError, LinkTimeoutError):
    """No (complete) response arrived in time."""


class CoapResponseError(CoapTransportError, PeerRejectedError):
    """The device answered ``method resource`` with an error code (4.xx/5.xx)."""

    def __init__(self, code: str, method: str, resource: str, detail: str = "") -> None:
        self.code: str = code
        self.method = method
        self.resource = resource
        text = f"{method} {resource}: {code}"
        super().__init__(f"{text} ({detail})" if detail else text)
