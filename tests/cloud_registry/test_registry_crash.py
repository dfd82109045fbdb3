"""kill -9 of the registry during ingest loses no acknowledged value (real processes).

The test is the edge: it streams numbered batches (every value unique) to a registry process,
kills the process with SIGKILL while batches are in flight, restarts it on the same SQLite
file, reconnects, resends what was not acknowledged (as the edge's outbox does) and goes on.
Checked after each crash: every value of every acknowledged batch is stored exactly once, and
Welcome's ``last_sequence`` covers them; at the end: every value exactly once, in order.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from cloud_registry.storage.sqlite import SqliteStorage
from tests.cloud_registry.edge_client import EdgeClient, report, seed
from tests.cloud_registry.registry_process import RegistryProcess
from thing_models.proto import thing_message_pb2 as tpb

pytestmark = pytest.mark.slow

EDGE = "crash-edge"
DEVICES = [f"c{i:02d}" for i in range(20)]
PROPS = ["temperature", "humidity"]
BATCHES = 150
CRASHES = 3


def batch(sequence: int) -> list[tpb.ThingMessage]:
    """20 reports x 2 values; humidity carries the sequence, temperature a unique float."""
    return [
        report(
            device,
            {"temperature": sequence + index / 100, "humidity": sequence},
            1_700_000_000_000 + sequence,
        )
        for index, device in enumerate(DEVICES)
    ]


def stored_values(db: Path) -> Counter[tuple[str, str, object]]:
    """(device, property, value) -> how many history points hold it."""
    storage = SqliteStorage(db)
    try:
        counts: Counter[tuple[str, str, object]] = Counter()
        for device in DEVICES:
            for prop in PROPS:
                points, more = storage.history(device, prop, 0, 2**62, 100_000)
                assert not more
                counts.update((device, prop, p.value) for p in points)
        return counts
    finally:
        storage.close()


def expected_values(sequence: int) -> list[tuple[str, str, object]]:
    out: list[tuple[str, str, object]] = []
    for index, device in enumerate(DEVICES):
        out.append((device, "temperature", sequence + index / 100))
        out.append((device, "humidity", sequence))
    return out


async def stream_until(
    target: str, first: int, resend: list[int], acked: set[int], stop_after_acks: int
) -> tuple[int, list[int]]:
    """Resend ``resend``, then send from ``first`` on, keeping the window full, until
    ``stop_after_acks`` new acks arrived (or every batch is acknowledged). Returns the next
    sequence to send and the sequences sent but not acknowledged when it stopped."""
    edge = EdgeClient(target, EDGE, devices=DEVICES)
    try:
        welcome = await edge.connect()
        assert welcome.last_sequence >= max(acked, default=0), "an acknowledged batch was lost"
        window = welcome.max_in_flight
        pending = list(resend)
        outstanding: set[int] = set()
        new_acks = 0
        sequence = first
        while True:
            while len(outstanding) < window and (pending or sequence <= BATCHES):
                if pending:
                    current = pending.pop(0)
                else:
                    current = sequence
                    sequence += 1
                await edge.send_batch(current, batch(current))
                outstanding.add(current)
            if not outstanding or new_acks >= stop_after_acks:
                return sequence, sorted(outstanding) + pending
            ack = await asyncio.wait_for(edge.ack_queue.get(), 30)
            assert not ack.rejected, list(ack.rejected)
            outstanding.discard(ack.sequence)
            acked.add(ack.sequence)
            new_acks += 1
    finally:
        await edge.close()


def test_kill_9_during_ingest_loses_no_acknowledged_value(tmp_path: Path) -> None:
    db = tmp_path / "registry.db"
    storage = SqliteStorage(db)
    storage.migrate()
    seed(storage, {EDGE: DEVICES})
    storage.close()

    acked: set[int] = set()
    next_sequence = 1
    unacknowledged: list[int] = []
    for crash in range(CRASHES + 1):
        process = RegistryProcess(db)
        try:
            last_round = crash == CRASHES
            next_sequence, unacknowledged = asyncio.run(
                stream_until(
                    process.target,
                    next_sequence,
                    unacknowledged,
                    acked,
                    stop_after_acks=10**9 if last_round else 30,
                )
            )
            if last_round:
                process.stop()
                break
            process.kill()  # batches are in flight right now
        finally:
            process.kill()  # a no-op for a process that ended already
        counts = stored_values(db)
        for sequence in acked:
            for key in expected_values(sequence):
                assert counts[key] == 1, (crash, sequence, key, counts[key])
        assert unacknowledged, "the kill should have caught batches in flight"

    assert acked == set(range(1, BATCHES + 1))
    counts = stored_values(db)
    expected = Counter(key for s in range(1, BATCHES + 1) for key in expected_values(s))
    assert counts == expected
    check = SqliteStorage(db)
    try:
        points, _more = check.history(DEVICES[0], "humidity", 0, 2**62, 10_000)
        assert [p.value for p in points] == list(range(1, BATCHES + 1))
        assert check.last_sequence(EDGE) == BATCHES
    finally:
        check.close()
