"""The edge agent's exception tree (configuration errors are thing-model errors: they carry
``file:line:column`` like the model validator's; the outbox has its own, OutboxError)::

    AgentError
    ├── AgentCommandError       an admin or registry command the agent cannot carry out:
    │                           unknown device, property or service, device not driven ...
    ├── UnsupportedDevice       a configured device no driver can run (the reason says why)
    ├── CommandRefused          a registry command whose signed envelope does not verify
    │                           (edge_agent.command_guard: tampered, replayed, expired ...)
    ├── IdentityError           the identity folder (edge_agent.identity_store)
    │   └── NotEnrolled         no identity yet: run ``edge-agent enroll``
    ├── EnrollmentError         enrolling or renewing (edge_agent.enrollment)
    │   ├── RegistryUnreachable     no TLS connection (wrong address or CA file)
    │   ├── EnrollmentRefused       bad, used or expired token; another edge's token
    │   └── BadEnrollmentResponse   the answer does not fit our key or identity
    └── AdminError              the admin socket (edge_agent.admin)
        ├── AdminSocketError        cannot listen (another agent runs there ...)
        ├── AgentNotRunning         no agent answers on the socket
        ├── AdminProtocolError      a reply that is not the protocol
        ├── AdminRequestError       the agent refused the request (type and message)
        └── AdminBadRequest         a request that is not the protocol (server side)
"""

from __future__ import annotations

__all__ = ["AgentCommandError", "AgentError", "UnsupportedDevice"]


class AgentError(Exception):
    """Base class of the edge agent's own errors."""


class AgentCommandError(AgentError):
    """A command (admin socket or registry) that cannot be carried out; says why."""


class UnsupportedDevice(AgentError):
    """A device no driver can run: no model, no binding, or a connection type not driven."""
