"""The Prometheus endpoint, scraped over HTTP on 127.0.0.1 (an ephemeral port)."""

from __future__ import annotations

import asyncio
import socket
import threading
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.metrics import AgentMetrics, MetricsEndpoint, MetricsError, parse_address
from tests.edge_agent.admin_fake import FakeControl, running_agent


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def serving(metrics: AgentMetrics, address: str = "127.0.0.1:0") -> tuple[MetricsEndpoint, int]:
    endpoint = MetricsEndpoint(metrics, address)
    port = asyncio.run(endpoint.start())
    return endpoint, port


def test_a_scrape_reports_status_and_poll_observations() -> None:
    control = FakeControl()
    metrics = AgentMetrics(control)
    for seconds in (0.004, 0.02, 0.3):
        metrics.observe_poll("meter-1", seconds, 48, 2)
    metrics.observe_poll("meter-[2]", 1.5, 0)
    endpoint, port = serving(metrics)
    try:
        got = scrape(port)
    finally:
        asyncio.run(endpoint.stop())

    def value(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    assert value("edge_agent_status_up") == 1
    assert value("edge_agent_running", edge_id="edge-1") == 1
    assert value("edge_agent_values_read_total", device="meter-1") == 144
    assert value("edge_agent_values_bad_total", device="meter-1") == 6
    assert value("edge_agent_queued_messages") == 3
    assert value("edge_agent_tail_dropped_messages_total") == 4
    assert value("edge_agent_poll_duration_seconds_count", device="meter-1") == 3
    assert value("edge_agent_poll_duration_seconds_bucket", device="meter-1", le="0.025") == 2
    assert value("edge_agent_poll_duration_seconds_count", device="meter-[2]") == 1
    assert value("edge_agent_device_polls_total", device="meter-1") == 40
    assert value("edge_agent_device_requests_total", device="meter-1") == 100
    assert value("edge_agent_device_errors_total", device="meter-1", kind="timeout") == 3
    assert value("edge_agent_device_errors_total", device="meter-1", kind="exception") == 3
    assert value("edge_agent_device_errors_total", device="meter-1", kind="other") == 1
    assert value("edge_agent_device_exception_codes_total", device="meter-1", code="4") == 2
    assert value("edge_agent_device_state", device="meter-1", state="online") == 1
    assert value("edge_agent_device_state", device="meter-1", state="offline") == 0
    assert value("edge_agent_device_state", device="meter-[2]", state="offline") == 1
    assert value("edge_agent_device_phase", device="meter-[2]", phase="backoff") == 1
    assert value("edge_agent_outbox_rows") == 12
    assert value("edge_agent_outbox_bytes") == 1200
    assert value("edge_agent_outbox_oldest_age_seconds") == 2.5
    assert (
        value(
            "edge_agent_outbox_dropped_rows_total",
            device="meter-1",
            reason="size",
            **{"class": "telemetry"},
        )
        == 5
    )
    assert value("edge_agent_uplink_connected") == 1
    assert value("edge_agent_uplink_lag_seconds") == 2.5
    assert value("edge_agent_uplink_batches_acked_total") == 9
    assert value("edge_agent_uplink_commands_refused_total") == 2
    assert value("edge_agent_uplink_ack_latency_seconds") == 0.004


def test_an_unbound_collector_reports_status_down() -> None:
    endpoint, port = serving(AgentMetrics())
    try:
        assert scrape(port)[("edge_agent_status_up", ())] == 0
    finally:
        asyncio.run(endpoint.stop())


def test_a_failing_status_still_answers_the_scrape() -> None:
    control = FakeControl()
    control.fail_status = True
    metrics = AgentMetrics(control)
    metrics.observe_poll("meter-1", 0.01, 5)
    endpoint, port = serving(metrics)
    try:
        got = scrape(port)
    finally:
        asyncio.run(endpoint.stop())
    assert got[("edge_agent_status_up", ())] == 0
    assert got[("edge_agent_values_read_total", (("device", "meter-1"),))] == 5


def test_the_endpoint_binds_only_its_address_and_stops_cleanly() -> None:
    threads_before = set(threading.enumerate())
    endpoint, port = serving(AgentMetrics(FakeControl()))
    try:
        assert endpoint.bound_port == port
        assert endpoint._server is not None
        assert endpoint._server.socket.getsockname()[0] == "127.0.0.1"
        with pytest.raises(MetricsError, match="already started"):
            asyncio.run(endpoint.start())
    finally:
        asyncio.run(endpoint.stop())
    asyncio.run(endpoint.stop())  # twice is fine
    assert endpoint.bound_port is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert set(threading.enumerate()) <= threads_before | {threading.current_thread()}


def test_a_busy_port_is_a_metrics_error() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        with pytest.raises(MetricsError, match=f"127.0.0.1:{port}: cannot listen"):
            serving(AgentMetrics(FakeControl()), f"127.0.0.1:{port}")
    finally:
        holder.close()


def test_the_metrics_stay_off_the_global_registry() -> None:
    AgentMetrics(FakeControl()).observe_poll("meter-1", 0.01, 1)
    names = {metric.name for metric in REGISTRY.collect()}
    assert not any(name.startswith("edge_agent_") for name in names)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9108", ("127.0.0.1", 9108)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_addresses_parse(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["", "9108", ":9108", "host:", "host:-1", "h:65536", "h:x"])
def test_bad_addresses_are_metrics_errors(address: str) -> None:
    with pytest.raises(MetricsError, match="expected host:port"):
        parse_address(address)


@given(st.text(max_size=40))
def test_parse_address_parses_or_raises_its_error(text: str) -> None:
    try:
        host, port = parse_address(text)
    except MetricsError:
        return
    assert host
    assert 0 <= port <= 65535


def test_a_real_agent_scraped_while_it_polls(tmp_path: Path) -> None:
    async def main() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        metrics = AgentMetrics()
        async with running_agent(tmp_path, observer=metrics) as (agent, _):
            metrics.bind(agent)
            endpoint = MetricsEndpoint(metrics, "127.0.0.1:0")
            port = await endpoint.start()
            try:
                polls = agent.status().devices["meter-1"].polls
                while agent.status().devices["meter-1"].polls < polls + 3:
                    await asyncio.sleep(0.05)
                return await asyncio.to_thread(scrape, port)
            finally:
                await endpoint.stop()

    got = asyncio.run(asyncio.wait_for(main(), 40))
    device = (("device", "meter-1"),)
    assert got[("edge_agent_device_state", (*device, ("state", "online")))] == 1
    assert got[("edge_agent_values_read_total", device)] >= 3
    assert got[("edge_agent_poll_duration_seconds_count", device)] >= 3
    assert got[("edge_agent_device_polls_total", device)] >= 3
    assert got[("edge_agent_uplink_connected", ())] == 0
    assert got[("edge_agent_outbox_rows", ())] >= 1
