"""Prometheus metrics of the edge agent, on its own registry (never the global one).

::

    metrics = AgentMetrics()
    agent = EdgeAgent(config, observer=metrics)     # observe_poll(): once per poll
    metrics.bind(agent)                              # anything with status() -> AgentStatus
    endpoint = MetricsEndpoint(metrics, "127.0.0.1:9108")
    port = await endpoint.start()                    # binds only that address (port 0: any)
    await endpoint.stop()

Two sources: a collector that reads ``status()`` at scrape time (device polls, requests,
errors by kind, state, outbox, uplink, drops), and what the supervisor observes per poll: a
latency histogram and a values-read counter per device
(``rate(edge_agent_values_read_total[1m])`` is values per second).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from edge_agent.status import AgentStatus
    from edge_agent.supervisor import EdgeAgent, PollObserver

__all__ = ["AgentMetrics", "MetricsEndpoint", "MetricsError", "StatusSource", "parse_address"]

_log = logging.getLogger(__name__)

_PORT = re.compile(r"[0-9]{1,5}")
_STATES = ("online", "degraded", "offline")
_PHASES = ("starting", "connecting", "polling", "backoff", "unsupported", "stopped")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class MetricsError(Exception):
    """The metrics endpoint cannot start (bad address, bind failed)."""


class StatusSource(Protocol):
    def status(self) -> AgentStatus: ...


class _StatusCollector(Collector):
    """Reads ``source.status()`` at each scrape."""

    def __init__(self, source: StatusSource | None) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("edge_agent_status_up", "1 when the agent's status could be read")
        if self.source is None:
            up.add_metric([], 0)
            return [up]
        try:
            status = self.source.status()
        except Exception:
            _log.exception("metrics: reading the agent status failed")
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *self._agent(status), *self._devices(status), *self._outbox(status)]

    @staticmethod
    def _agent(status: AgentStatus) -> list[Metric]:
        running = GaugeMetricFamily(
            "edge_agent_running", "1 while the agent runs", labels=["edge_id"]
        )
        running.add_metric([status.edge_id], 1 if status.running else 0)
        queued = GaugeMetricFamily(
            "edge_agent_queued_messages", "messages acquired, waiting for the outbox"
        )
        queued.add_metric([], status.queued)
        tail_dropped = CounterMetricFamily(
            "edge_agent_tail_dropped_messages", "live messages dropped for slow tail clients"
        )
        tail_dropped.add_metric([], status.tail_dropped)
        uplink = status.uplink
        if uplink is None:
            return [running, queued, tail_dropped]
        connected = GaugeMetricFamily("edge_agent_uplink_connected", "1 while the stream is up")
        connected.add_metric([], 1 if uplink.connected else 0)
        lag = GaugeMetricFamily(
            "edge_agent_uplink_lag_seconds", "age of the oldest unsent outbox row (0: empty)"
        )
        lag.add_metric([], uplink.lag_s or 0.0)
        in_flight = GaugeMetricFamily("edge_agent_uplink_in_flight_batches", "unacked batches")
        in_flight.add_metric([], uplink.in_flight)
        out: list[Metric] = [running, queued, tail_dropped, connected, lag, in_flight]
        for name, doc, value in (
            ("batches_sent", "batches sent", uplink.batches_sent),
            ("batches_acked", "batches acknowledged", uplink.batches_acked),
            ("batches_resent", "batches resent after a reconnect", uplink.batches_resent),
            ("messages_sent", "messages sent", uplink.messages_sent),
            ("messages_stored", "messages the registry stored", uplink.messages_stored),
            ("messages_rejected", "messages the registry refused", uplink.rejected),
            ("duplicates", "acks marked duplicate", uplink.duplicates),
            ("reconnects", "sessions ended by an error", uplink.reconnects),
            ("commands", "commands received", uplink.commands),
            (
                "commands_refused",
                "commands refused by the signature check",
                uplink.commands_refused,
            ),
        ):
            counter = CounterMetricFamily(f"edge_agent_uplink_{name}", doc)
            counter.add_metric([], value)
            out.append(counter)
        if uplink.last_ack_latency_ms is not None:
            ack = GaugeMetricFamily(
                "edge_agent_uplink_ack_latency_seconds", "send -> ack of the last acked batch"
            )
            ack.add_metric([], uplink.last_ack_latency_ms / 1000.0)
            out.append(ack)
        return out

    @staticmethod
    def _devices(status: AgentStatus) -> list[Metric]:
        labels = ["device"]
        polls = CounterMetricFamily("edge_agent_device_polls", "polls done", labels=labels)
        messages = CounterMetricFamily(
            "edge_agent_device_messages", "messages appended to the outbox", labels=labels
        )
        requests = CounterMetricFamily(
            "edge_agent_device_requests", "protocol requests", labels=labels
        )
        errors = CounterMetricFamily(
            "edge_agent_device_errors", "failed requests by kind", labels=[*labels, "kind"]
        )
        exceptions = CounterMetricFamily(
            "edge_agent_device_exception_codes",
            "Modbus exception responses by code",
            labels=[*labels, "code"],
        )
        connects = CounterMetricFamily(
            "edge_agent_device_connect_attempts", "connection attempts", labels=labels
        )
        task_errors = CounterMetricFamily(
            "edge_agent_device_task_errors", "device task restarts after an error", labels=labels
        )
        state = GaugeMetricFamily(
            "edge_agent_device_state", "1 for the link's current state", labels=[*labels, "state"]
        )
        phase = GaugeMetricFamily(
            "edge_agent_device_phase", "1 for the task's current phase", labels=[*labels, "phase"]
        )
        interval = GaugeMetricFamily(
            "edge_agent_device_poll_interval_seconds", "configured poll period", labels=labels
        )
        for device_id, dev in status.devices.items():
            diag = dev.diagnostics
            polls.add_metric([device_id], dev.polls)
            messages.add_metric([device_id], dev.messages)
            requests.add_metric([device_id], diag.requests)
            timeouts = diag.timeouts
            coded = sum(diag.exception_codes.values())
            errors.add_metric([device_id, "timeout"], timeouts)
            errors.add_metric([device_id, "exception"], coded)
            errors.add_metric([device_id, "other"], max(diag.errors - timeouts - coded, 0))
            for code, count in sorted(diag.exception_codes.items(), key=lambda kv: str(kv[0])):
                exceptions.add_metric([device_id, str(code)], count)
            connects.add_metric([device_id], dev.connect_attempts)
            task_errors.add_metric([device_id], dev.task_errors)
            for name in _STATES:
                state.add_metric([device_id, name], 1 if diag.state == name else 0)
            for name in _PHASES:
                phase.add_metric([device_id, name], 1 if dev.phase == name else 0)
            interval.add_metric([device_id], dev.poll_interval_s)
        return [
            polls,
            messages,
            requests,
            errors,
            exceptions,
            connects,
            task_errors,
            state,
            phase,
            interval,
        ]

    @staticmethod
    def _outbox(status: AgentStatus) -> list[Metric]:
        outbox = status.outbox
        if outbox is None:
            return []
        rows = GaugeMetricFamily("edge_agent_outbox_rows", "messages waiting in the outbox")
        rows.add_metric([], outbox.rows)
        size = GaugeMetricFamily("edge_agent_outbox_bytes", "stored bytes in the outbox")
        size.add_metric([], outbox.bytes)
        age = GaugeMetricFamily(
            "edge_agent_outbox_oldest_age_seconds", "age of the oldest row (0: empty)"
        )
        age.add_metric([], outbox.oldest_age_s or 0.0)
        quarantined = GaugeMetricFamily(
            "edge_agent_outbox_quarantined_rows", "rows that could not be decoded"
        )
        quarantined.add_metric([], outbox.quarantined)
        dropped = CounterMetricFamily(
            "edge_agent_outbox_dropped_rows",
            "rows dropped by the overflow policy",
            labels=["device", "reason", "class"],
        )
        dropped_bytes = CounterMetricFamily(
            "edge_agent_outbox_dropped_bytes",
            "bytes dropped by the overflow policy",
            labels=["device", "reason", "class"],
        )
        for drop in outbox.dropped:
            key = [drop.device_id, drop.reason, drop.klass]
            dropped.add_metric(key, drop.rows)
            dropped_bytes.add_metric(key, drop.bytes)
        return [rows, size, age, quarantined, dropped, dropped_bytes]


class AgentMetrics:
    """The agent's metrics registry: the status collector plus per-poll observations.

    The agent takes its observer when it is made, so ``source`` may come later::

        metrics = AgentMetrics()
        agent = EdgeAgent(config, observer=metrics)
        metrics.bind(agent)
    """

    def __init__(self, source: StatusSource | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = _StatusCollector(source)
        self.registry.register(self._collector)
        self._latency = Histogram(
            "edge_agent_poll_duration_seconds",
            "time of one poll of a device (all its reads)",
            ["device"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._values = Counter(
            "edge_agent_values_read",
            "values read from devices",
            ["device"],
            registry=self.registry,
        )
        self._bad = Counter(
            "edge_agent_values_bad",
            "values read with bad quality (sentinels, undecodable, failed reads)",
            ["device"],
            registry=self.registry,
        )
        self._children: dict[str, tuple[Histogram, Counter, Counter]] = {}

    def bind(self, source: StatusSource) -> None:
        """Read ``source.status()`` at each scrape (until then ``edge_agent_status_up`` is 0)."""
        self._collector.source = source

    def observe_poll(self, device_id: str, seconds: float, values: int, bad: int = 0) -> None:
        """One poll of ``device_id`` took ``seconds`` and read ``values`` values, ``bad`` of
        them with bad quality (the supervisor's ``PollObserver``)."""
        children = self._children.get(device_id)
        if children is None:
            children = (
                self._latency.labels(device_id),
                self._values.labels(device_id),
                self._bad.labels(device_id),
            )
            self._children[device_id] = children
        children[0].observe(seconds)
        if values:
            children[1].inc(values)
        if bad:
            children[2].inc(bad)


if TYPE_CHECKING:

    def _conforms(agent: EdgeAgent, metrics: AgentMetrics) -> tuple[StatusSource, PollObserver]:
        return agent, metrics  # mypy checks both sides of the supervisor contract


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` -> (host, port); MetricsError when malformed."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not _PORT.fullmatch(port_text) or int(port_text) > 65535:
        raise MetricsError(f"metrics address {address!r}: expected host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


class MetricsEndpoint:
    """Serves ``metrics.registry`` over HTTP (``/metrics``) on ``address`` ("host:port")."""

    def __init__(self, metrics: AgentMetrics, address: str) -> None:
        self.metrics = metrics
        self.host, self.port = parse_address(address)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def bound_port(self) -> int | None:
        return None if self._server is None else int(self._server.server_address[1])

    async def start(self) -> int:
        """Listen on the configured address only; returns the bound port."""
        if self._server is not None:
            raise MetricsError(f"metrics endpoint {self.host}:{self.port}: already started")
        try:
            server, thread = start_http_server(self.port, self.host, self.metrics.registry)
        except OSError as exc:
            raise MetricsError(
                f"metrics endpoint {self.host}:{self.port}: cannot listen: {exc}"
            ) from exc
        self._server, self._thread = server, thread
        port = int(server.server_address[1])
        _log.info("metrics on http://%s:%d/metrics", self.host, port)
        return port

    async def stop(self) -> None:
        """Stop serving and close the socket (waits for the server thread)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        if thread is not None:
            await asyncio.to_thread(thread.join)
