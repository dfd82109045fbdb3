"""Snapshots of a running agent (:meth:`EdgeAgent.status <edge_agent.supervisor.EdgeAgent.status>`):
what the admin socket's ``status`` and the metrics endpoint show."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edge_agent.outbox import OutboxStats
from edge_agent.uplink import UplinkStats
from protocol_adapters.base import DiagnosticState

__all__ = ["AgentStatus", "DevicePhase", "DeviceStatus", "LocalStreamStatus"]

DevicePhase = Literal["starting", "connecting", "polling", "backoff", "unsupported", "stopped"]


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """A snapshot of one device's task."""

    device_id: str
    model: str
    protocol: str
    endpoint: str
    phase: DevicePhase
    diagnostics: DiagnosticState
    poll_interval_s: float
    polls: int
    messages: int
    connect_attempts: int
    task_errors: int
    last_error: str


@dataclass(frozen=True, slots=True)
class LocalStreamStatus:
    """The local MQTT stream (``local_mqtt``): best effort, so losses are counted, not kept."""

    broker: str
    connected: bool
    published: int
    dropped: int
    last_error: str


@dataclass(frozen=True, slots=True)
class AgentStatus:
    edge_id: str
    running: bool
    devices: dict[str, DeviceStatus]
    outbox: OutboxStats | None
    uplink: UplinkStats | None
    #: messages queued for the outbox, and live messages dropped for slow ``tail`` subscribers
    queued: int = 0
    tail_dropped: int = 0
    local_stream: LocalStreamStatus | None = None
