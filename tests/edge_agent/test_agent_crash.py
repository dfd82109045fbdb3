"""kill -9 of a real ``edge-agent run`` process mid-stream, then a restart on the same outbox:
every value the outbox accepted reaches the registry (a real registry process) exactly once.

The devices are counters that serve 1, 2, 3 ... one value per read, reported on every poll, so
the registry's history shows any loss (a gap) or repeat (a duplicate). What the outbox accepted
before a kill is known exactly: the rows it still holds after the kill (unsent, or sent and not
acknowledged) plus what the registry stored (rows leave the outbox only when the registry
acknowledged them). Values read but not yet committed when the agent died were never accepted:
they may be missing, but only as the tail of that run. Every other kill happens while the
registry is frozen (SIGSTOP), so batches are in flight, unacknowledged, when the agent dies.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from edge_agent.outbox import Outbox
from tests.edge_agent.agent_process import (
    AgentProcess,
    PeerLoop,
    RegistryHandle,
    wait_for,
    write_counter_model,
    write_edge_config,
)
from tests.edge_agent.faulty_modbus_peer import Behaviour, ModbusPeer

DEVICES = ("counter-1", "counter-2", "counter-3")
KILLS = 4


def outbox_counters(path: Path) -> dict[str, set[int]]:
    """The counter values the (closed) outbox holds, per device: assigned batches and rows."""
    out: dict[str, set[int]] = {device: set() for device in DEVICES}
    with Outbox(path, max_bytes=1 << 30, max_age_s=3600) as outbox:
        messages = [m for batch in outbox.pending_batches() for m in batch.messages]
        rest = outbox.next_batch(max_messages=1_000_000, max_bytes=1 << 30)
        messages += list(rest.messages) if rest is not None else []
    for message in messages:
        value = (message.params or {}).get("counter")
        if message.kind.value == "property_report" and isinstance(value, int):
            out[message.device_id].add(value)
    return out


def test_kill_9_mid_stream_then_restart_loses_and_repeats_nothing(tmp_path: Path) -> None:
    models = write_counter_model(tmp_path / "models")
    runs: dict[str, list[tuple[int, int]]] = {d: [] for d in DEVICES}  # (first, last) served
    accepted: dict[str, set[int]] = {d: set() for d in DEVICES}
    held_in_paused_kills = 0
    with RegistryHandle(tmp_path / "registry.db") as registry, PeerLoop() as peers:
        registry.setup(models, DEVICES)
        device_peers: dict[str, ModbusPeer] = {d: peers.start(Behaviour.COUNTER) for d in DEVICES}
        config = write_edge_config(
            tmp_path,
            registry.target,
            {d: p.port for d, p in device_peers.items()},
            models_dir=models,
            poll="10ms",
        )
        outbox_file = tmp_path / "state" / "outbox.db"
        for cycle in range(KILLS):
            floor = {d: p.served for d, p in device_peers.items()}
            paused = cycle % 2 == 1
            with AgentProcess(config) as agent:
                if paused:  # batches go out but no ack comes back: rows pile up in the outbox
                    registry.pause()

                # the kill moment is chosen on the device side, not on the uplink's rhythm
                def progressed(base: dict[str, int] = floor) -> bool:
                    return all(p.served >= base[d] + 60 for d, p in device_peers.items())

                wait_for(progressed, "60 more reads of every device")
                agent.kill()
            if paused:  # the registry now reads what the dead agent sent; the acks go nowhere
                registry.resume()
            held = outbox_counters(outbox_file)
            for device, peer in device_peers.items():
                runs[device].append((floor[device] + 1, peer.served))
                accepted[device] |= held[device] | set(registry.counter_values(device))
                held_in_paused_kills += len(held[device]) if paused else 0

        with AgentProcess(config) as last_run:
            wait_for(
                lambda: all(
                    max(registry.counter_values(d), default=0) >= runs[d][-1][1] + 40
                    for d in DEVICES
                ),
                "values of the last run in the registry",
            )
            # freeze the counters (busy answers from now on) and wait for the tail to arrive
            last = {
                d: peers.set_behaviour(p, Behaviour.EXCEPTION_BUSY) for d, p in device_peers.items()
            }
            wait_for(
                lambda: all(registry.counter_values(d)[-1:] == [last[d]] for d in DEVICES),
                "every accepted value delivered",
            )
            assert last_run.stop() == 0, last_run.log()
        final = {d: registry.counter_values(d) for d in DEVICES}

    assert held_in_paused_kills > 0, "no kill found rows in the outbox: nothing was tested"
    for device in DEVICES:
        history = final[device]
        repeats = sorted(v for v, n in Counter(history).items() if n > 1)
        assert not repeats, f"{device}: values stored more than once: {repeats[:10]}"
        assert history == sorted(history), f"{device}: history out of order"
        lost = sorted(accepted[device] - set(history))
        assert not lost, f"{device}: accepted values that never arrived: {lost[:10]}"
        assert set(history) <= set(range(1, last[device] + 1)), f"{device}: values never served"
        # a run may lose only its tail (read, never committed), never a value in between
        for first, end in runs[device]:
            got = [v for v in history if first <= v <= end]
            holes = sorted(set(range(first, max(got, default=first))) - set(got))
            assert not holes, f"{device}: values lost inside the run {first}..{end}: {holes[:10]}"
        assert history[-1] == last[device]
