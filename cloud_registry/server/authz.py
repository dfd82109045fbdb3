"""Which caller may call which RPC (pure tables; the interceptor applies them).

* Public (no identity needed): ``Enroll``, ``GetCrl``, health.
* Edges: ``EdgeSync/Sync``, ``Renew``, ``GetCrl``, health; nothing else (an edge has no
  business with the integrator APIs). What an edge reads and writes inside its sync stream is
  limited to the devices assigned to it by the edge-sync service.
* Integrators: the scope each method needs (:data:`METHOD_SCOPES`); ``admin`` implies all.
  Their sites are enforced by the services (``Principal.sites``).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "EDGE_METHODS",
    "EDGE_ONLY",
    "METHOD_SCOPES",
    "PUBLIC_METHODS",
    "integrator_allowed",
    "required_scope",
]

_P: Final = "/community.registry.v1."
EDGE_ONLY: Final = "edge-only"
PUBLIC_METHODS: Final = frozenset(
    {
        f"{_P}EnrollmentService/Enroll",
        f"{_P}EnrollmentService/GetCrl",
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
    }
)
EDGE_METHODS: Final = frozenset(
    {
        f"{_P}EdgeSync/Sync",
        f"{_P}EnrollmentService/Renew",
        f"{_P}EnrollmentService/GetCrl",
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
    }
)
_READ_MODELS = ("GetModel", "ListModels", "ListModelVersions", "DiffModels", "ExportModel")
METHOD_SCOPES: Final[dict[str, str]] = {
    **{f"{_P}ModelService/{m}": "read-models" for m in _READ_MODELS},
    f"{_P}ModelService/PublishModel": "admin",
    f"{_P}DeviceService/GetDevice": "read-twins",
    f"{_P}DeviceService/ListDevices": "read-twins",
    f"{_P}DeviceService/RegisterDevice": "admin",
    f"{_P}DeviceService/UpdateDevice": "admin",
    f"{_P}DeviceService/DeleteDevice": "admin",
    f"{_P}DeviceService/MoveDevice": "admin",
    f"{_P}TwinService/GetTwin": "read-twins",
    f"{_P}TwinService/GetHistory": "read-twins",
    f"{_P}TwinService/ListEvents": "read-twins",
    f"{_P}TwinService/SetDesired": "write-desired",
    f"{_P}TwinService/AckAlarm": "write-desired",
    f"{_P}WatchService/Watch": "read-twins",
    f"{_P}CommandService/SendCommand": "invoke-services",
    f"{_P}CommandService/GetCommand": "invoke-services",
    f"{_P}SecurityAdminService/ListAuditEvents": "admin",
    # edges only: no integrator scope grants these
    f"{_P}EdgeSync/Sync": EDGE_ONLY,
    f"{_P}EnrollmentService/Renew": EDGE_ONLY,
}


def required_scope(method: str) -> str | None:
    """The scope an integrator needs for ``method``; ``"admin"`` for anything unlisted
    (reflection), None for public methods."""
    if method in PUBLIC_METHODS:
        return None
    return METHOD_SCOPES.get(method, "admin")


def integrator_allowed(scopes: frozenset[str], needed: str) -> bool:
    """Whether an integrator holding ``scopes`` may call a method needing ``needed``."""
    if needed == EDGE_ONLY:
        return False
    return needed in scopes or "admin" in scopes or "*" in scopes
