"""Poll groups: a device's pollable points grouped by poll interval.

Each point's interval comes from its report policy (its own ``report:``, else its ``group:``,
else the binding's ``reporting.default``); a device ``poll_interval`` puts every point in one
group. The supervisor reads the groups that fall due together in one call, so a driver still
coalesces their registers.
"""

from __future__ import annotations

from edge_agent.config import DeviceConfig
from edge_agent.drivers import binding_points
from edge_agent.reporting import policies_for_points
from thing_models.model import ReportPolicy

__all__ = ["DEFAULT_POLL_S", "MIN_POLL_S", "policies_of", "poll_groups_of", "poll_interval_of"]

DEFAULT_POLL_S = 10.0
MIN_POLL_S = 0.01


def policies_of(device: DeviceConfig) -> dict[str, ReportPolicy]:
    """``{property: report policy}`` of the device's protocol binding."""
    return policies_for_points(binding_points(device), device.bindings().reporting)


def _default_interval(device: DeviceConfig) -> float:
    return device.bindings().reporting.default.poll_interval_s or DEFAULT_POLL_S


def poll_groups_of(
    device: DeviceConfig, pollable: frozenset[str]
) -> list[tuple[float, frozenset[str]]]:
    """``[(interval, properties)]``: the device's pollable points grouped by poll interval
    (the device's ``poll_interval`` for all of them when set), fastest first."""
    if not pollable:
        return []
    if device.poll_interval_s is not None:
        return [(max(device.poll_interval_s, MIN_POLL_S), pollable)]
    policies = policies_of(device)
    default = _default_interval(device)
    groups: dict[float, set[str]] = {}
    for name in pollable:
        policy = policies.get(name)
        interval = policy.poll_interval_s if policy is not None else None
        groups.setdefault(max(interval or default, MIN_POLL_S), set()).add(name)
    return [(interval, frozenset(names)) for interval, names in sorted(groups.items())]


def poll_interval_of(device: DeviceConfig) -> float:
    """The device's ``poll_interval``, else the fastest policy poll interval of its points,
    else the reporting default's (10 s when none is set)."""
    if device.poll_interval_s is not None:
        return max(device.poll_interval_s, MIN_POLL_S)
    intervals = [p.poll_interval_s for p in policies_of(device).values() if p.poll_interval_s]
    if not intervals and device.bindings().reporting.default.poll_interval_s:
        intervals = [_default_interval(device)]
    return max(min(intervals), MIN_POLL_S) if intervals else DEFAULT_POLL_S
