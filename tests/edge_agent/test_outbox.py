"""The durable outbox: order, sequences and acks, the overflow policy, replay pacing, bad data,
and crash safety with a real process killed by SIGKILL."""

from __future__ import annotations

import math
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.outbox import Outbox, OutboxBatch, OutboxError, StaleBatchError
from edge_agent.outbox_policy import IdentityCodec, ReplayPacer, is_kept
from thing_models.messages import Message, MessageKind, from_bytes, from_protobuf, to_bytes

REPO = Path(__file__).resolve().parents[2]
MODEL = "test.acme/meter@1.0.0"
BIG = 1 << 30


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def report(device: str, n: int, **params: object) -> Message:
    return Message(
        id=f"r{n}",
        kind=MessageKind.PROPERTY_REPORT,
        model=MODEL,
        device_id=device,
        ts_ms=1_700_000_000_000 + n,
        params={"n": n, **params},  # type: ignore[dict-item]
    )


def event(device: str, n: int) -> Message:
    return Message(
        id=f"e{n}",
        kind=MessageKind.EVENT,
        name="alarm",
        model=MODEL,
        device_id=device,
        ts_ms=1_700_000_000_000 + n,
        params={"n": n},
    )


def size_of(msg: Message) -> int:
    return len(to_bytes(msg))


def n_of(msg: Message) -> int:
    n = msg.params["n"]
    assert isinstance(n, int)
    return n


def ns(batch: OutboxBatch | None) -> list[int]:
    assert batch is not None
    return [n_of(m) for m in batch.messages]


def drain(outbox: Outbox) -> list[Message]:
    """Read and acknowledge everything, oldest first."""
    out: list[Message] = []
    while (batch := outbox.next_batch(100)) is not None:
        out.extend(batch.messages)
        outbox.ack(batch.last_id)
    return out


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


@pytest.fixture
def outbox(db: Path) -> Iterator[Outbox]:
    with Outbox(db, max_bytes=BIG, max_age_s=10**9) as box:
        yield box


# --------------------------------------------------------------------------- basics


def test_append_read_ack_round_trip(outbox: Outbox) -> None:
    msgs = [report(f"d{i % 3}", i, temperature=i / 10) for i in range(10)] + [event("d0", 10)]
    last = outbox.append(msgs)
    assert last == 11
    assert outbox.append([]) == 0
    batch = outbox.next_batch(100)
    assert batch is not None
    assert (batch.first_id, batch.last_id, batch.sequence) == (1, 11, None)
    assert list(batch.messages) == msgs
    assert outbox.next_batch(100) == batch  # reading deletes nothing
    assert outbox.stats().rows == 11
    assert outbox.ack(batch.last_id) == 11
    assert outbox.next_batch() is None
    stats = outbox.stats()
    assert (stats.rows, stats.bytes, stats.oldest_age_s) == (0, 0, None)
    # ids are never reused, even once the outbox is empty
    assert outbox.append([report("d0", 99)]) == 12


def test_batches_respect_limits_and_keep_order(outbox: Outbox) -> None:
    msgs = [report(f"d{i % 4}", i) for i in range(50)]
    for start in range(0, 50, 7):
        outbox.append(msgs[start : start + 7])
    assert ns(outbox.next_batch(10)) == list(range(10))
    one = size_of(msgs[0])
    assert len(ns(outbox.next_batch(100, max_bytes=3 * one + 2))) == 3
    assert ns(outbox.next_batch(100, max_bytes=1)) == [0]  # always at least one row
    got = drain(outbox)
    assert [n_of(m) for m in got] == list(range(50))
    for device in ("d0", "d1", "d2", "d3"):
        seq = [n_of(m) for m in got if m.device_id == device]
        assert seq == sorted(seq)
    with pytest.raises(ValueError, match="positive"):
        outbox.next_batch(0)


def test_stats_depth_and_age(db: Path) -> None:
    clock = FakeClock()
    with Outbox(db, max_bytes=BIG, max_age_s=3600, clock=clock) as box:
        msgs = [report("d0", i) for i in range(5)]
        box.append(msgs)
        clock.now += 12.5
        stats = box.stats()
        assert stats.rows == 5
        assert stats.bytes == sum(size_of(m) for m in msgs)
        assert stats.oldest_age_s == pytest.approx(12.5)
        assert (stats.dropped, stats.quarantined, stats.in_flight_batches) == ((), 0, 0)


# --------------------------------------------------------------------------- sequences


def test_sequences_survive_restart_and_are_never_reused(db: Path) -> None:
    with Outbox(db, max_bytes=BIG, max_age_s=10**9) as box:
        box.append([report("d0", i) for i in range(30)])
        first = box.next_batch(10)
        assert first is not None
        assert box.assign_sequence(first) == 1
        second = box.next_batch(10)  # skips the assigned rows
        assert ns(second) == list(range(10, 20))
        assert second is not None
        assert box.assign_sequence(second) == 2
        assert box.stats().in_flight_batches == 2
    # restart: the same batches, the same sequence numbers, the same messages
    with Outbox(db, max_bytes=BIG, max_age_s=10**9) as box:
        pending = box.pending_batches()
        assert [(b.sequence, b.first_id, b.last_id) for b in pending] == [(1, 1, 10), (2, 11, 20)]
        assert pending[0].messages == first.messages
        assert box.assign_sequence(pending[1]) == 2  # idempotent
        assert ns(box.next_batch(100)) == list(range(20, 30))
        assert box.ack_sequence(2) == 10  # acks in any order
        assert box.ack_sequence(2) == 0  # a repeated ack is a no-op
        assert box.ack_sequence(1) == 10
        assert box.ack_sequence(77) == 0
        rest = box.next_batch(100)
        assert rest is not None
        assert box.assign_sequence(rest) == 3
        assert box.ack_sequence(3) == 10
        assert box.stats().rows == 0
    with Outbox(db, max_bytes=BIG, max_age_s=10**9) as box:
        box.append([report("d0", 100)])
        batch = box.next_batch()
        assert batch is not None
        assert box.assign_sequence(batch) == 4  # monotonic, also when the outbox was empty
        box.raise_sequence_floor(40)  # Welcome.last_sequence of a registry that saw more
        box.raise_sequence_floor(3)
        box.append([report("d0", 101)])
        batch = box.next_batch()
        assert batch is not None
        assert box.assign_sequence(batch) == 41
        assert box.stats().last_sequence == 41


def test_ack_up_to_id_refuses_to_split_a_batch(outbox: Outbox) -> None:
    outbox.append([report("d0", i) for i in range(10)])
    batch = outbox.next_batch(5)
    assert batch is not None
    outbox.assign_sequence(batch)
    with pytest.raises(ValueError, match="split batch 1"):
        outbox.ack(3)
    assert outbox.ack(7) == 7
    assert outbox.pending_batches() == []
    assert ns(outbox.next_batch()) == [7, 8, 9]


def test_assign_refuses_stale_or_overlapping_batches(db: Path) -> None:
    one = size_of(report("d0", 10))
    with Outbox(db, max_bytes=12 * one, max_age_s=10**9) as box:
        box.append([report("d0", i) for i in range(10, 20)])
        batch = box.next_batch(5)
        assert batch is not None
        # read but not assigned: the policy may drop its rows, and assign notices
        box.append([report("d0", i) for i in range(20, 25)])
        with pytest.raises(StaleBatchError, match="changed since they were read"):
            box.assign_sequence(batch)
        fresh = box.next_batch(5)
        assert fresh is not None
        box.assign_sequence(fresh)
        with pytest.raises(StaleBatchError, match="overlap"):
            box.assign_sequence(fresh.__class__(fresh.first_id, fresh.last_id, fresh.messages))


# --------------------------------------------------------------------------- overflow policy


def test_size_overflow_drops_oldest_telemetry_and_keeps_events(db: Path) -> None:
    reports = [report(f"d{i % 2}", i) for i in range(100)]
    events = [event("d0", 1000 + i) for i in range(5)]
    per_report = size_of(reports[0])
    budget = 40 * per_report + sum(size_of(e) for e in events)
    with Outbox(db, max_bytes=budget, max_age_s=10**9) as box:
        box.append(events[:2] + reports[:50])  # over budget: 10 oldest reports go
        box.append(reports[50:] + events[2:])
        stats = box.stats()
        assert stats.bytes <= budget
        kept = drain(box)
        kinds = [m.kind for m in kept]
        assert kinds.count(MessageKind.EVENT) == 5  # every event kept
        got = [n_of(m) for m in kept if m.kind is MessageKind.PROPERTY_REPORT]
        assert got == list(range(100 - len(got), 100))  # the newest telemetry, in order
        assert stats.dropped_telemetry_rows == 100 - len(got)
        assert stats.dropped_kept_rows == 0
        by_device = {(d.device_id, d.reason, d.klass): d.rows for d in stats.dropped}
        assert by_device == {
            ("d0", "size", "telemetry"): (100 - len(got)) // 2,
            ("d1", "size", "telemetry"): (100 - len(got)) // 2,
        }
        dropped_bytes = sum(size_of(m) for m in reports[: 100 - len(got)])
        assert sum(d.bytes for d in stats.dropped) == dropped_bytes
    # the counters are persistent
    with Outbox(db, max_bytes=budget, max_age_s=10**9) as box:
        assert box.stats().dropped_telemetry_rows == 100 - len(got)


def test_events_go_only_past_the_hard_limit(db: Path) -> None:
    events = [event("d1", i) for i in range(10, 30)]  # ids of one length: sizes are equal
    each = size_of(events[0])
    with Outbox(db, max_bytes=5 * each, max_age_s=10**9, hard_max_bytes=8 * each) as box:
        box.append(events[:8])  # over max_bytes, within the hard limit: nothing dropped
        assert box.stats().rows == 8
        box.append([report("d1", 500)])  # telemetry goes first, even the newest
        assert box.stats().rows == 8
        box.append(events[8:])
        stats = box.stats()
        assert (stats.rows, stats.dropped_kept_rows, stats.dropped_telemetry_rows) == (8, 12, 1)
        assert [n_of(m) for m in drain(box)] == list(range(22, 30))
        assert {(d.reason, d.klass) for d in stats.dropped} == {
            ("size", "kept"),
            ("size", "telemetry"),
        }


def test_age_drops_old_telemetry_only(db: Path) -> None:
    clock = FakeClock()
    with Outbox(db, max_bytes=BIG, max_age_s=60, clock=clock) as box:
        box.append([report("d0", 0), event("d0", 1), report("d2", 2)])
        clock.now += 30
        box.append([report("d0", 3)])
        clock.now += 40  # the first append is 70 s old, the second 40 s
        assert box.expire() == 2
        stats = box.stats()
        assert stats.dropped_telemetry_rows == 2
        assert {(d.device_id, d.reason) for d in stats.dropped} == {("d0", "age"), ("d2", "age")}
        clock.now += 100  # appending also applies the policy
        box.append([report("d0", 4)])
        assert [n_of(m) for m in drain(box)] == [1, 4]
    with Outbox(db, max_bytes=BIG, max_age_s=math.inf, clock=clock) as box:  # no age limit
        box.append([report("d0", 5)])
        clock.now += 10**9
        assert box.expire() == 0


def test_kept_rows_expire_only_with_kept_max_age(db: Path) -> None:
    clock = FakeClock()
    with Outbox(db, max_bytes=BIG, max_age_s=10, kept_max_age_s=100, clock=clock) as box:
        box.append([event("d0", 0), report("d0", 1)])
        clock.now += 50
        box.expire()
        assert box.stats().rows == 1
        clock.now += 60
        box.expire()
        stats = box.stats()
        assert (stats.rows, stats.dropped_kept_rows, stats.dropped_telemetry_rows) == (0, 1, 1)
    # the policy also runs when the outbox is opened
    clock.now = 1_700_000_000.0
    with Outbox(db, max_bytes=BIG, max_age_s=10, clock=clock) as box:
        box.append([report("d0", 2)])
    clock.now += 11
    with Outbox(db, max_bytes=BIG, max_age_s=10, clock=clock) as box:
        assert box.stats().rows == 0


def test_rows_of_assigned_batches_are_never_dropped(db: Path) -> None:
    clock = FakeClock()
    one = size_of(report("d0", 10))
    with Outbox(db, max_bytes=10 * one, max_age_s=60, clock=clock) as box:
        box.append([report("d0", i) for i in range(10, 20)])
        batch = box.next_batch(4)
        assert batch is not None
        seq = box.assign_sequence(batch)
        box.append([report("d0", i) for i in range(20, 26)])  # 6 over: 6 unassigned go
        assert ns(box.pending_batches()[0]) == [10, 11, 12, 13]
        assert ns(box.next_batch(100)) == list(range(20, 26))
        clock.now += 120
        box.expire()  # everything is old; the assigned batch stays
        assert box.stats().rows == 4
        assert box.ack_sequence(seq) == 4


# --------------------------------------------------------------------------- replay pacing


def test_pacer_token_bucket() -> None:
    clock = FakeClock(0.0)
    pacer = ReplayPacer(100, burst=50, clock=clock)
    assert pacer.available() == 50
    pacer.consume(50)
    assert pacer.available() == 0
    assert pacer.delay_s(10) == pytest.approx(0.1)
    assert pacer.delay_s(1000) == pytest.approx(0.5)  # capped at the burst
    clock.now += 0.25
    assert pacer.available() == 25
    with pytest.raises(ValueError, match="cannot consume"):
        pacer.consume(26)
    clock.now += 100
    assert pacer.available() == 50
    assert pacer.delay_s(5) == 0.0
    with pytest.raises(ValueError, match="positive"):
        ReplayPacer(0)
    with pytest.raises(ValueError, match="burst"):
        ReplayPacer(10, burst=0.5)


def test_backlog_replays_in_order_at_the_paced_rate_while_live_data_flows(db: Path) -> None:
    """Simulated uplink after an outage: each 0.1 s tick it sends the live tail unpaced and a
    backlog batch within the pacer's budget; the backlog drains in order at ~1,000 msg/s and
    live data never waits more than a tick."""
    clock = FakeClock(0.0)
    pacer = ReplayPacer(1000, burst=100, clock=clock)
    with Outbox(db, max_bytes=BIG, max_age_s=10**9, clock=clock) as box:
        box.append([report("d0", i) for i in range(3000)])  # the backlog
        clock.now += 3600  # an hour of outage
        pacer.consume(100)
        backlog_sent: list[int] = []
        live_sent: list[int] = []
        lag_ticks: list[int] = []
        progress: list[int] = []
        n = 3000
        for tick in range(60):
            clock.now += 0.1
            box.append([report("d1", n + k, tick=tick) for k in range(20)])  # live data
            n += 20
            live = box.live_batch(500, window_s=1.0)
            assert live is not None
            for m in live.messages:
                lag_ticks.append(tick - int(m.params.get("tick", -1)))  # type: ignore[arg-type]
            box.ack_sequence(box.assign_sequence(live))
            live_sent += [n_of(m) for m in live.messages]
            budget = pacer.available()
            if budget:
                batch = box.next_batch(min(budget, 500))
                if batch is not None:
                    pacer.consume(len(batch.messages))
                    backlog_sent += ns(batch)
                    box.ack_sequence(box.assign_sequence(batch))
            progress.append(len(backlog_sent))
        assert live_sent == list(range(3000, n))  # every live row at once, in order
        assert set(lag_ticks) == {0}
        assert backlog_sent == list(range(3000))  # replayed oldest first, all of it
        # 1,000 msg/s in ticks of 0.1 s: about 100 backlog messages a tick, drained in ~30 ticks
        assert progress[9] == pytest.approx(1000, abs=100)
        assert progress[19] == pytest.approx(2000, abs=100)
        assert progress.index(3000) in range(28, 33)
        assert box.stats().rows == 0


def test_live_batch_takes_only_rows_inside_the_window(db: Path) -> None:
    clock = FakeClock()
    with Outbox(db, max_bytes=BIG, max_age_s=10**9, clock=clock) as box:
        assert box.live_batch() is None
        for start in range(0, 1000, 100):  # a backlog in 10 appends, 1 s apart
            box.append([report("d0", i) for i in range(start, start + 100)])
            clock.now += 1
        clock.now += 100
        assert box.live_batch(window_s=10) is None  # nothing fresh
        box.append([report("d1", i) for i in range(1000, 1005)])
        clock.now += 3
        box.append([report("d1", i) for i in range(1005, 1010)])
        live = box.live_batch(500, window_s=10)
        assert ns(live) == list(range(1000, 1010))
        assert ns(box.live_batch(500, window_s=2)) == list(range(1005, 1010))
        assert live is not None
        box.assign_sequence(live)
        assert box.live_batch() is None  # after every assigned batch: nothing left
        assert ns(box.next_batch(3)) == [0, 1, 2]  # the backlog, oldest first
        box.append([report("d1", 1010)])
        assert ns(box.live_batch(window_s=math.inf)) == [1010]
        with pytest.raises(ValueError, match="negative"):
            box.live_batch(window_s=-1)


def test_backlog_rate_is_bounded_by_the_pacer(db: Path) -> None:
    clock = FakeClock(0.0)
    pacer = ReplayPacer(500, burst=50, clock=clock)
    with Outbox(db, max_bytes=BIG, max_age_s=10**9, clock=clock) as box:
        box.append([report("d0", i) for i in range(10_000)])
        pacer.consume(50)
        sent = 0
        for _ in range(100):  # 10 s of ticks
            clock.now += 0.1
            budget = pacer.available()
            batch = box.next_batch(min(budget, 500)) if budget else None
            if batch is not None:
                pacer.consume(len(batch.messages))
                sent += len(batch.messages)
                box.ack(batch.last_id)
        assert sent == pytest.approx(5000, abs=50)


# --------------------------------------------------------------------------- bad input and data


def test_bad_input_is_refused_and_nothing_is_stored(db: Path) -> None:
    with Outbox(db, max_bytes=2000, max_age_s=10**9) as box:
        with pytest.raises(TypeError, match="wrap it in a list"):
            box.append(report("d0", 1))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"messages\[1\]: expected a Message, got dict"):
            box.append([report("d0", 1), {"id": "x"}])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="sequence of Messages"):
            box.append(iter([report("d0", 1)]))  # type: ignore[arg-type]
        huge = report("d0", 2, blob="x" * 3000)
        with pytest.raises(ValueError, match=r"messages\[1\] \(id r2, device d0\): \d+ bytes"):
            box.append([report("d0", 1), huge])
        assert box.stats().rows == 0
    for kwargs in ({"max_bytes": 0}, {"max_age_s": 0}, {"hard_max_bytes": 10}):
        with pytest.raises(ValueError, match="must be"):
            Outbox(db, **{"max_bytes": 100, "max_age_s": 1, **kwargs})  # type: ignore[arg-type]


def test_corrupt_payloads_are_quarantined_not_raised(db: Path) -> None:
    with Outbox(db, max_bytes=BIG, max_age_s=10**9) as box:
        box.append([report("d0", i) for i in range(10)])
        batch = box.next_batch(3)
        assert batch is not None
        box.assign_sequence(batch)
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE outbox SET payload = x'ffffff00ff' WHERE id IN (2, 5)")
        raw.execute("UPDATE outbox SET payload = 'not bytes' WHERE id = 7")
        raw.execute("UPDATE outbox SET payload = x'' WHERE id = 9")  # empty: an invalid message
    raw.close()
    with Outbox(db, max_bytes=BIG, max_age_s=10**9) as box:
        (pending,) = box.pending_batches()
        assert (pending.sequence, ns(pending)) == (1, [0, 2])  # resent without the bad row
        assert ns(box.next_batch(100)) == [3, 5, 7, 9]
        stats = box.stats()
        assert (stats.quarantined, stats.rows) == (4, 6)
        bad = {row.id: row for row in box.quarantined()}
        assert sorted(bad) == [2, 5, 7, 9]
        assert bad[2].payload == b"\xff\xff\xff\x00\xff"
        assert bad[2].device_id == "d0"
        assert "MessageError" in bad[2].error
        assert "TypeError" in bad[7].error


def test_the_uplinks_protobuf_reads_match_and_quarantine_the_same_rows(db: Path) -> None:
    msgs = [report("d0", i) for i in range(10)]
    with Outbox(db, max_bytes=BIG, max_age_s=10**9) as box:
        box.append(msgs)
        batch = box.next_batch(3, protobuf=True)
        assert batch is not None
        assert batch.messages == ()
        assert [from_protobuf(p) for p in batch.protos] == msgs[:3]
        assert box.assign_sequence(batch) == 1
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE outbox SET payload = x'ffffff00ff' WHERE id IN (2, 5)")
        raw.execute("UPDATE outbox SET payload = x'' WHERE id = 9")  # parses, but is no message
    raw.close()
    with Outbox(db, max_bytes=BIG, max_age_s=10**9) as box:
        (pending,) = box.pending_batches(protobuf=True)
        assert (pending.sequence, pending.count) == (1, 2)
        assert [from_protobuf(p) for p in pending.protos] == [msgs[0], msgs[2]]
        rest = box.next_batch(100, protobuf=True)
        assert rest is not None
        assert [from_protobuf(p) for p in rest.protos] == [msgs[i] for i in (3, 5, 6, 7, 9)]
        assert sorted(row.id for row in box.quarantined()) == [2, 5, 9]
        assert box.live_batch(100, protobuf=True, window_s=3600) is not None


class XorCodec:
    """A stand-in for encryption at rest: flips every byte, refuses a bad marker."""

    name = "xor-test"

    def encode(self, data: bytes) -> bytes:
        return b"X" + bytes(b ^ 0x5A for b in data)

    def decode(self, data: bytes) -> bytes:
        if data[:1] != b"X":
            raise ValueError("authentication failed")
        return bytes(b ^ 0x5A for b in data[1:])


def test_payload_codec_seam(db: Path) -> None:
    msgs = [report("d0", i) for i in range(4)]
    with Outbox(db, max_bytes=BIG, max_age_s=10**9, codec=XorCodec()) as box:
        box.append(msgs)
        assert box.stats().bytes == sum(size_of(m) + 1 for m in msgs)
    with sqlite3.connect(db) as raw:
        stored = raw.execute("SELECT payload FROM outbox WHERE id = 1").fetchone()[0]
        assert stored != to_bytes(msgs[0])
        raw.execute("UPDATE outbox SET payload = x'00' WHERE id = 2")
    raw.close()
    with pytest.raises(OutboxError, match="codec 'xor-test', not 'identity'"):
        Outbox(db, max_bytes=BIG, max_age_s=10**9)
    with Outbox(db, max_bytes=BIG, max_age_s=10**9, codec=XorCodec()) as box:
        assert drain(box) == [msgs[0], msgs[2], msgs[3]]
        assert "authentication failed" in box.quarantined()[0].error
    assert IdentityCodec().name == "identity"
    assert is_kept(event("d0", 1))
    assert not is_kept(report("d0", 1))


def test_files_that_are_not_outboxes_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a database\n" * 100)
    with pytest.raises(OutboxError, match="not an outbox database"):
        Outbox(text, max_bytes=BIG, max_age_s=60)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as raw:
        raw.execute("CREATE TABLE devices (id TEXT)")
    raw.close()
    with pytest.raises(OutboxError, match="an SQLite database but not an outbox"):
        Outbox(other, max_bytes=BIG, max_age_s=60)
    with pytest.raises(OutboxError, match="cannot open"):
        Outbox(tmp_path / "missing" / "dir" / "x.db", max_bytes=BIG, max_age_s=60)
    fine = tmp_path / "fine.db"
    with (
        Outbox(fine, max_bytes=BIG, max_age_s=60),
        pytest.raises(OutboxError, match="in use by another process"),
    ):
        Outbox(fine, max_bytes=BIG, max_age_s=60)
    with sqlite3.connect(fine) as raw:
        raw.execute("UPDATE outbox_meta SET value = '99' WHERE key = 'schema_version'")
    raw.close()
    with pytest.raises(OutboxError, match="schema version '99'"):
        Outbox(fine, max_bytes=BIG, max_age_s=60)


# --------------------------------------------------------------------------- durability


def test_concurrent_appenders_and_uplink(outbox: Outbox) -> None:
    def produce(device: str) -> None:
        for start in range(0, 400, 20):
            outbox.append([report(device, k) for k in range(start, start + 20)])

    threads = [threading.Thread(target=produce, args=(f"t{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    got: list[Message] = []
    deadline = time.monotonic() + 30
    while len(got) < 1200 and time.monotonic() < deadline:
        batch = outbox.next_batch(50)
        if batch is None:
            time.sleep(0.001)
            continue
        outbox.ack_sequence(outbox.assign_sequence(batch))
        got.extend(batch.messages)
    for thread in threads:
        thread.join()
    assert len(got) == 1200
    for device in ("t0", "t1", "t2"):
        assert [n_of(m) for m in got if m.device_id == device] == list(range(400))


def test_torn_wal_tail_is_recovered(tmp_path: Path) -> None:
    """A crash while the last transaction's WAL frames were being written: SQLite drops the
    incomplete transaction and keeps every committed one."""
    db = tmp_path / "live.db"
    box = Outbox(db, max_bytes=BIG, max_age_s=10**9)
    try:
        box.append([report("d0", i) for i in range(20)])
        box.append([report("d0", i) for i in range(20, 40)])
        wal = Path(f"{db}-wal")
        assert wal.stat().st_size > 0
        for cut, name in ((100, "torn"), (-1, "garbage")):
            copy = tmp_path / f"{name}.db"
            shutil.copyfile(db, copy)
            data = wal.read_bytes()
            data = data[:-cut] if cut > 0 else data + b"\x13\x37" * 3000
            Path(f"{copy}-wal").write_bytes(data)
            with Outbox(copy, max_bytes=BIG, max_age_s=10**9) as recovered:
                got = [n_of(m) for m in drain(recovered)]
            assert got == list(range(20 if cut > 0 else 40))
    finally:
        box.close()


def _rows(db: Path) -> list[tuple[int, int]]:
    """(id, n) of every stored row, read without the outbox code."""
    with sqlite3.connect(db) as raw:
        rows = raw.execute("SELECT id, payload FROM outbox ORDER BY id").fetchall()
    raw.close()
    return [(int(i), n_of(from_bytes(p))) for i, p in rows]


def _batches(db: Path) -> dict[int, tuple[int, int]]:
    with sqlite3.connect(db) as raw:
        rows = raw.execute("SELECT sequence, first_id, last_id FROM outbox_batches").fetchall()
    raw.close()
    return {int(s): (int(f), int(last)) for s, f, last in rows}


@pytest.mark.slow
@pytest.mark.parametrize("uplink", [False, True], ids=["append-only", "with-uplink"])
def test_kill_9_loses_nothing_the_outbox_accepted(tmp_path: Path, uplink: bool) -> None:
    """Six rounds: start the writer, let it commit a random number of appends, SIGKILL it at a
    random moment, then check the file against what it printed (printed = committed)."""
    rng = random.Random(1234 + uplink)
    db = tmp_path / "crash.db"
    committed: dict[int, int] = {}  # id -> n, from "C" lines
    assigned: dict[int, tuple[int, int]] = {}  # seq -> id range, from "A" lines
    acked: set[int] = set()
    pending_before: dict[int, tuple[int, int]] = {}
    present_before: set[int] = set()
    next_n = 0
    for round_ in range(6):
        args = [sys.executable, "-m", "tests.edge_agent.outbox_writer", str(db)]
        args += [str(next_n), str(round_)] + (["--uplink"] if uplink else [])
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=str(REPO))
        assert proc.stdout is not None
        lines: list[str] = []
        wanted = rng.randint(3, 60)
        while sum(line.startswith("C") for line in lines) < wanted:
            line = proc.stdout.readline()
            assert line, f"writer exited early: rc={proc.poll()}"
            lines.append(line)
        time.sleep(rng.random() * 0.01)
        proc.kill()
        proc.wait(30)
        lines += proc.stdout.read().splitlines()
        proc.stdout.close()

        seen_pending: dict[int, tuple[int, int, int]] = {}
        for line in lines:
            tag, *fields = line.split()
            values = [int(f) for f in fields]
            if tag == "C":
                first_id, last_id, first_n = values
                for row_id in range(first_id, last_id + 1):
                    assert row_id not in committed, "an id was reused"
                    committed[row_id] = first_n + row_id - first_id
            elif tag == "A":
                assert values[0] > max(assigned, default=0), "sequence numbers must grow"
                assigned[values[0]] = (values[1], values[2])
            elif tag == "K":
                acked.add(values[0])
            elif tag == "P":
                seen_pending[values[0]] = (values[1], values[2], values[3])
        # The restarted writer found the unacknowledged batches, with the same numbers.
        if uplink:
            assert {s: p[:2] for s, p in seen_pending.items()} == pending_before
            for seq, (first, last, count) in seen_pending.items():
                assert count == sum(first <= i <= last for i in present_before), seq

        batches = _batches(db)
        for seq, span in batches.items():
            if seq not in assigned:  # assigned just before the kill, not yet printed
                assert seq == max(assigned, default=0) + 1
                assigned[seq] = span
            assert span == assigned[seq]
        # acknowledged just before the kill, not yet printed: at most one batch
        vanished = {s for s in assigned if s not in acked and s not in batches}
        assert len(vanished) <= 1
        deleted = {
            i for seq in acked | vanished for i in range(assigned[seq][0], assigned[seq][1] + 1)
        }

        rows = _rows(db)
        present = dict(rows)
        assert [n for _, n in rows] == sorted({n for _, n in rows}), "order or uniqueness broken"
        for row_id, n in committed.items():
            if row_id in deleted:
                assert row_id not in present, "an acknowledged row came back"
            else:
                assert present.get(row_id) == n, f"lost or changed row {row_id}"
        last_id, last_n = max(committed), max(committed.values())
        for row_id, n in present.items():
            if row_id not in committed:  # committed just before the kill, not yet printed
                assert row_id > last_id
                assert n > last_n
                committed[row_id] = n  # from now on it must stay like any other
        acked |= vanished
        pending_before = batches
        present_before = set(present)
        next_n = max([*committed.values(), *present.values()]) + 1
    assert len(committed) > 100
    if uplink:
        assert len(acked) > 5
