"""The MQTT adapter's exception tree.

The pure layer (:mod:`~protocol_adapters.mqtt.mapping`) raises only the first two branches; the
transport branch is raised by the driver, which translates aiomqtt's errors once, at its
boundary (``raise ... from exc``)::

    MqttAdapterError
    ├── MqttConfigError          a binding the mapping cannot use: a bad topic filter or
    │                            payload path, a command without ``command_topic`` ...
    ├── MqttPayloadError         a payload that cannot be mapped: oversized, not UTF-8,
    │                            malformed JSON, a path that is not there, a malformed reply
    └── MqttTransportError       a command did not complete (driver only)
        ├── MqttConnectionError      no connection to the broker, or it dropped
        ├── MqttTimeoutError         no correlated reply in time
        └── MqttCommandRejected      the device replied with a status other than ``ok``

Bad *values* are not errors: a wrong type or an undecodable payload for a point gives a
bad-quality :class:`~protocol_adapters.base.Reading` with the reason.
"""

from __future__ import annotations

from protocol_adapters.base import (
    LinkConnectionError,
    LinkError,
    LinkTimeoutError,
    PeerRejectedError,
)

__all__ = [
    "MqttAdapterError",
    "MqttCommandRejected",
    "MqttConfigError",
    "MqttConnectionError",
    "MqttPayloadError",
    "MqttTimeoutError",
    "MqttTransportError",
]


class MqttAdapterError(Exception):
    """Base class of every error of the MQTT adapter."""


class MqttConfigError(MqttAdapterError):
    """A binding (topic filter, payload path, command topic) the mapping cannot work with."""


class MqttPayloadError(MqttAdapterError):
    """A payload that cannot be mapped; the message names the topic and what is wrong."""


class MqttTransportError(MqttAdapterError, LinkError):
    """A command that did not complete (raised by the driver, never by the pure layer)."""


class MqttConnectionError(MqttTransportError, LinkConnectionError):
    """No connection to the broker, or it was lost."""


class MqttTimeoutError(MqttTransportError, LinkTimeoutError):
    """No reply with the command's correlation id arrived in time."""


class MqttCommandRejected(MqttTransportError, PeerRejectedError):
    """The device replied with an error status (``code``), and ``status_message`` says why."""

    def __init__(self, message: str, code: str, params: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.params = params or {}
