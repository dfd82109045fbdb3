"""A long, time-scaled registry outage: a real registry process is killed while the agent polls
three counter devices every 20 ms, and comes back (same port, same database) once the agent has
buffered about 2,400 readings; at a one-minute poll rate that backlog is some 13 hours of data.

After the registry returns, the backlog drains oldest first at the uplink's paced replay rate
while live readings keep arriving at once: watched from the registry's history, the readings
still missing are always one contiguous range (the replay frontier up to where live data
starts), live readings arrive before the backlog is done, and in the end every reading is
there exactly once, in order, with nothing dropped by the outbox.

The agent runs in-process (``EdgeAgent(config).run()``) so the test can give its uplink short
backoffs and a slow replay rate; the devices are counters serving 1, 2, 3 ... one per read.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from edge_agent.config import load_edge_config
from edge_agent.supervisor import EdgeAgent
from tests.edge_agent.agent_process import (
    RegistryHandle,
    until,
    wait_for_async,
    write_counter_model,
    write_edge_config,
)
from tests.edge_agent.faulty_modbus_peer import Behaviour, ModbusPeer

DEVICES = ("counter-1", "counter-2", "counter-3")
BACKLOG_ROWS = 2400
UPLINK = {
    "backoff_initial_s": 0.1,
    "backoff_max_s": 0.5,
    "replay_rate": 400.0,  # messages/s: above the live 150/s, so the backlog drains in ~10 s
    "live_window_s": 2.0,
}


def holes(values: list[int]) -> list[tuple[int, int]]:
    """The missing ranges ``(first, last)`` between 1 and ``max(values)``."""
    out: list[tuple[int, int]] = []
    expected = 1
    for value in sorted(set(values)):
        if value > expected:
            out.append((expected, value - 1))
        expected = value + 1
    return out


def test_backlog_of_a_long_outage_drains_in_order_while_live_data_flows(tmp_path: Path) -> None:
    models = write_counter_model(tmp_path / "models")
    with RegistryHandle(tmp_path / "registry.db") as registry:
        registry.setup(models, DEVICES)
        asyncio.run(asyncio.wait_for(_scenario(tmp_path, models, registry), 100))


async def _scenario(tmp_path: Path, models: Path, registry: RegistryHandle) -> None:
    peers = {device: ModbusPeer(Behaviour.COUNTER) for device in DEVICES}
    ports = {device: await peer.start() for device, peer in peers.items()}
    config = load_edge_config(
        write_edge_config(tmp_path, registry.target, ports, models_dir=models, poll="20ms")
    )
    agent = EdgeAgent(config, uplink_options=UPLINK)
    task = asyncio.create_task(agent.run())
    history: dict[str, list[int]] = {}

    async def refresh() -> dict[str, list[int]]:
        for device in DEVICES:
            history[device] = await asyncio.to_thread(registry.counter_values, device)
        return history

    def rows() -> int:
        stats = agent.status().outbox
        return stats.rows if stats is not None else 0

    try:
        await wait_for_async(lambda: not task.done() and rows() >= 0, "agent started")

        async def first_values() -> bool:
            return min(len(v) for v in (await refresh()).values()) >= 20

        await until(first_values, "the first values in the registry")

        await asyncio.to_thread(registry.kill)
        await wait_for_async(
            lambda: rows() >= BACKLOG_ROWS, f"{BACKLOG_ROWS} rows buffered", timeout=60
        )
        uplink = agent.status().uplink
        assert uplink is not None
        assert not uplink.connected
        assert not task.done()

        await asyncio.to_thread(registry.restart)
        back_at = {device: peer.served for device, peer in peers.items()}
        live_during_replay: set[str] = set()
        observations = 0

        def drained() -> bool:
            return all(
                not holes(values) and max(values, default=0) >= back_at[device]
                for device, values in history.items()
            )

        while not drained() or observations == 0:
            await refresh()
            observations += 1
            for device, values in history.items():
                gaps = holes(values)
                assert len(gaps) <= 1, f"{device}: the backlog is not replayed in order: {gaps}"
                if gaps and gaps[0][0] < back_at[device] < max(values):
                    live_during_replay.add(device)
            assert observations < 400, "the backlog did not drain in time"
            await asyncio.sleep(0.1)
        assert observations > 5, "drained before it could be watched: raise BACKLOG_ROWS"
        assert live_during_replay == set(DEVICES), (
            "live readings did not arrive while the backlog was replayed"
        )

        last = {}
        for device, peer in peers.items():  # freeze the counters, then collect the tail
            peer.behaviour = Behaviour.EXCEPTION_BUSY
            last[device] = peer.served

        async def tail_arrived() -> bool:
            await refresh()
            return all(history[d][-1:] == [last[d]] for d in DEVICES)

        await until(tail_arrived, "the last values in the registry")
        for device in DEVICES:
            values = history[device]
            repeats = sorted(v for v, n in Counter(values).items() if n > 1)
            assert not repeats, f"{device}: stored more than once: {repeats[:10]}"
            assert values == list(range(1, last[device] + 1)), f"{device}: lost or out of order"
        outbox = agent.status().outbox
        assert outbox is not None
        assert outbox.dropped_telemetry_rows == 0
        assert outbox.dropped_kept_rows == 0
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)
        for peer in peers.values():
            await peer.stop()
