"""The edge agent's exception tree (configuration errors are thing-model errors: they carry
``file:line:column`` like the model validator's)::

    AgentError
    ├── AgentCommandError     an admin or registry command the agent cannot carry out:
    │                         unknown device, property or service, device not driven ...
    └── UnsupportedDevice     a configured device no driver can run (the reason says why)
"""

from __future__ import annotations

__all__ = ["AgentCommandError", "AgentError", "UnsupportedDevice"]


class AgentError(Exception):
    """Base class of the edge agent's own errors."""


class AgentCommandError(AgentError):
    """A command (admin socket or registry) that cannot be carried out; says why."""


class UnsupportedDevice(AgentError):
    """A device no driver can run: no model, no binding, or a connection type not driven."""
