"""What only the PostgreSQL engine does: several replicas on one database (NOTIFY between
them, a gap-free commit-ordered change feed under concurrent writers), monthly history
partitions, concurrent migration, and surviving a server restart.

The engine-neutral behaviour is in test_storage_contract.py (run against both engines)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import psycopg
import pytest

from cloud_registry.storage.base import (
    ChangeKind,
    CommandEntry,
    CommandStatus,
    DeviceFilter,
    DeviceRecord,
    IngestBatch,
    LabelRequirement,
    ReportedValue,
    StorageUnavailable,
)
from cloud_registry.storage.label_selector import matches
from cloud_registry.storage.postgres import PostgresStorage, _Tx
from tests.cloud_registry.pg_cluster import PgCluster

pytestmark = pytest.mark.timeout(120)


def _device(device_id: str, edge: str = "edge-1", site: str = "site-a") -> DeviceRecord:
    return DeviceRecord(device_id, "acme/meter@1.0.0", edge, site)


def _ms(year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, 12, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture
def replicas(fresh_postgres_dsn: str) -> Iterator[tuple[PostgresStorage, PostgresStorage]]:
    a = PostgresStorage(fresh_postgres_dsn, replica_id="a", pool_size=4)
    b = PostgresStorage(fresh_postgres_dsn, replica_id="b", pool_size=4)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


# --------------------------------------------------------------------------- NOTIFY


def test_a_commit_on_one_replica_reaches_the_other_within_a_second(
    replicas: tuple[PostgresStorage, PostgresStorage],
) -> None:
    a, b = replicas
    woken = threading.Event()
    b.add_change_listener(woken.set)
    assert b.listening.wait(5)
    woken.clear()  # the listener is called once on connecting (catch-up)

    started = time.monotonic()
    a.create_device(_device("d1"), 1_000)
    assert woken.wait(1.0), "replica b was not notified within a second"
    assert time.monotonic() - started < 1.0
    changes = b.changes_after(0, 10)
    assert [(c.kind, c.device_id) for c in changes] == [(ChangeKind.DEVICE_CREATED, "d1")]


def test_own_commits_call_the_listeners_once_before_returning(
    replicas: tuple[PostgresStorage, PostgresStorage],
) -> None:
    a, _b = replicas
    calls: list[float] = []
    a.add_change_listener(lambda: calls.append(time.monotonic()))
    assert a.listening.wait(5)
    calls.clear()
    a.create_device(_device("d1"), 1_000)
    assert len(calls) == 1  # synchronously, after the commit
    time.sleep(0.4)
    assert len(calls) == 1  # its own NOTIFY is recognised and not delivered twice
    a.get_device("d1")  # reads append nothing and notify nobody
    assert len(calls) == 1


# --------------------------------------------------------------------------- change feed order


class _Jittery(PostgresStorage):
    """Holds every writing transaction open a random while before it appends its changes, so
    concurrent transactions overlap and commit out of start order."""

    def _append_changes(self, tx: _Tx) -> None:
        time.sleep(random.random() * 0.004)
        super()._append_changes(tx)


class _NaiveSequence(PostgresStorage):
    """The negative control: seq from a plain sequence, no lock, a pause before commit."""

    def _append_changes(self, tx: _Tx) -> None:
        for change in tx.changes:
            tx.cur.execute(
                """INSERT INTO changes (seq, kind, ts_ms, device_id, site, model, edge_id, payload)
                   VALUES (nextval('naive_seq'), %s, %s, %s, '', '', '', '{}')""",
                (str(change.kind), change.ts_ms, change.device_id),
            )
        time.sleep(random.random() * 0.004)


def _run_feed_race(
    dsn: str, engine: type[PostgresStorage], writers: int, per_writer: int
) -> tuple[list[str], list[int], int]:
    """Writers on two instances commit many small change-appending transactions while a
    reader on a third polls the feed; returns (violations seen, seqs read, changes made)."""
    setup = PostgresStorage(dsn, pool_size=2)
    devices = [f"dev-{i:02d}" for i in range(writers * 2)]
    for i, device_id in enumerate(devices):
        setup.create_device(_device(device_id, edge=f"edge-{i % writers}"), 1)
    start_seq = setup.latest_change_seq()
    setup.close()
    with psycopg.connect(dsn, autocommit=True) as conn:  # for the negative control
        conn.execute("CREATE SEQUENCE IF NOT EXISTS naive_seq")
        conn.execute("SELECT setval('naive_seq', %s)", (start_seq,))

    instances = [engine(dsn, replica_id=f"w{i}", pool_size=writers) for i in range(2)]
    reader = PostgresStorage(dsn, replica_id="reader", pool_size=1)
    done = threading.Event()
    violations: list[str] = []
    seen: list[int] = []

    def read() -> None:
        last = start_seq
        while True:
            finished = done.is_set()
            batch = reader.changes_after(last, 1000)
            for change in batch:
                if change.seq != last + 1:
                    violations.append(f"after seq {last} the feed showed {change.seq}")
                last = change.seq
                seen.append(change.seq)
            if finished and not batch:
                return

    def write(worker: int) -> int:
        storage = instances[worker % 2]
        edge = f"edge-{worker}"
        mine = [d for i, d in enumerate(devices) if i % writers == worker]
        made = 0
        for n in range(per_writer):
            now = 10_000 + n
            if n % 3 == 0:
                storage.ingest(
                    IngestBatch(
                        edge,
                        n + 1,
                        [ReportedValue(d, "power", n * 1.5, now) for d in mine],
                        [],
                    ),
                    now,
                )
                made += len(mine)  # one twin_reported change per device
            elif n % 3 == 1:
                storage.set_desired(mine[0], {"setpoint": n}, 0, now)
                made += 1
            else:
                storage.create_command(
                    CommandEntry(
                        f"cmd-{worker}-{n}",
                        mine[0],
                        edge,
                        "set_properties",
                        "",
                        {"setpoint": n},
                        CommandStatus.QUEUED,
                        now,
                        now + 60_000,
                    )
                )
                made += 1
        return made

    reading = threading.Thread(target=read)
    reading.start()
    try:
        with ThreadPoolExecutor(writers) as pool:
            made = sum(pool.map(write, range(writers)))
    finally:
        done.set()
        reading.join(60)
        for storage in (*instances, reader):
            storage.close()
    return violations, seen, made


def test_concurrent_writers_on_two_replicas_give_a_gap_free_commit_ordered_feed(
    fresh_postgres_dsn: str,
) -> None:
    violations, seen, made = _run_feed_race(fresh_postgres_dsn, _Jittery, 8, 45)
    assert violations == []
    # the reader saw every change exactly once, in order
    assert len(seen) == made == 8 * (15 * 2 + 30)
    assert seen == list(range(seen[0], seen[0] + len(seen)))


def test_the_feed_check_catches_a_naive_sequence(fresh_postgres_dsn: str) -> None:
    """Negative control: without the change lock, readers do see later-filled gaps (so the
    check above is able to fail)."""
    violations, _seen, _made = _run_feed_race(fresh_postgres_dsn, _NaiveSequence, 8, 45)
    assert violations, "expected the naive sequence to expose out-of-order commits"


# --------------------------------------------------------------------------- label selectors


@pytest.mark.parametrize(
    "requirement",
    [
        LabelRequirement("floor", "=", ("3",)),
        LabelRequirement("floor", "!=", ("3",)),
        LabelRequirement("floor", "exists"),
        LabelRequirement("floor", "!exists"),
        LabelRequirement("floor", "in", ("3", "4")),
        LabelRequirement("floor", "notin", ("3", "4")),
    ],
    ids=lambda r: r.op,
)
def test_label_selectors_agree_through_the_gin_index_and_through_the_site_index(
    replicas: tuple[PostgresStorage, PostgresStorage], requirement: LabelRequirement
) -> None:
    """With a site the labels are filtered in the site index's order; without, the GIN index
    serves them: both must give what the reference evaluator says."""
    a, _b = replicas
    labels = [{}, {"floor": "3"}, {"floor": "4"}, {"floor": "5"}, {"tier": "3"}]
    devices = [
        DeviceRecord(f"d{i:02d}", "acme/meter@1.0.0", "edge-1", f"site-{i % 2}", labels=lab)
        for i, lab in enumerate(labels * 2)
    ]
    for device in devices:
        a.create_device(device, 1)
    for flt in (
        DeviceFilter(labels=(requirement,)),
        DeviceFilter("", "site-1", "", "", (requirement,)),
    ):
        got = [d.id for d in a.list_devices(flt, "", 100).items]
        want = sorted(
            d.id
            for d in devices
            if matches(d.labels, (requirement,)) and (not flt.site or d.site == flt.site)
        )
        assert got == want, flt


# --------------------------------------------------------------------------- partitions


def test_history_partitions_are_created_for_new_months_and_dropped_for_retention(
    replicas: tuple[PostgresStorage, PostgresStorage],
) -> None:
    a, b = replicas
    now = datetime.now(UTC)
    this_month = f"history_p{now.year:04d}{now.month:02d}"
    assert this_month in a.history_partitions()  # created ahead by migrate()
    a.create_device(_device("d1", edge="edge-a"), 1)
    a.create_device(_device("d2", edge="edge-b"), 1)

    march, april = _ms(2031, 3, 15), _ms(2031, 4, 2)
    # both replicas meet the new months at once: one creates each partition, nobody fails
    with ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(
                lambda job: job[0].ingest(
                    IngestBatch(
                        job[1],
                        1,
                        [
                            ReportedValue(job[2], "t", 20.5, march),
                            ReportedValue(job[2], "t", 21, april),
                        ],
                        [],
                    ),
                    april,
                ),
                [(a, "edge-a", "d1"), (b, "edge-b", "d2")],
            )
        )
    assert [r.stored_values for r in results] == [2, 2]
    parts = a.history_partitions()
    assert {"history_p203103", "history_p203104"} <= set(parts)
    points, more = b.history("d1", "t", march - 1, april + 1, 10)
    assert [(p.ts_ms, p.value) for p in points] == [(march, 20.5), (april, 21)]
    assert not more

    # retention drops whole months (b drops; a still believes in March)
    dropped = b.prune_history(_ms(2031, 4, 1) - 12 * 3600 * 1000)
    assert dropped >= 1
    assert "history_p203103" not in b.history_partitions()
    assert "history_p203104" in b.history_partitions()
    points, _ = a.history("d1", "t", 0, april + 1, 10)
    assert [p.ts_ms for p in points] == [april]

    # a's cached partition list is stale: its ingest notices and recreates the month
    result = a.ingest(IngestBatch("edge-a", 2, [ReportedValue("d1", "t", 19, march)], []), april)
    assert result.stored_values == 1
    assert "history_p203103" in a.history_partitions()


# --------------------------------------------------------------------------- migration


def test_replicas_starting_together_migrate_once(postgres_cluster: PgCluster) -> None:
    name = postgres_cluster.create_database()
    dsn = postgres_cluster.dsn(name)
    storages = [PostgresStorage(dsn, pool_size=1) for _ in range(4)]
    try:
        assert storages[0].schema_version() == 0
        with ThreadPoolExecutor(4) as pool:
            versions = list(pool.map(lambda s: s.migrate(), storages))
        assert len(set(versions)) == 1
        assert versions[0] >= 1
        assert storages[1].migrate() == versions[0]  # idempotent
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
        assert row is not None
        assert row[0] == versions[0]
    finally:
        for storage in storages:
            storage.close()
        postgres_cluster.drop_database(name)


# --------------------------------------------------------------------------- restart


def test_the_storage_survives_a_server_restart(
    postgres_cluster: PgCluster, fresh_postgres_dsn: str
) -> None:
    writer = PostgresStorage(fresh_postgres_dsn, replica_id="w", pool_size=3)
    watcher = PostgresStorage(fresh_postgres_dsn, replica_id="r", pool_size=1)
    woken = threading.Event()
    watcher.add_change_listener(woken.set)
    try:
        assert watcher.listening.wait(5)
        writer.create_device(_device("d1"), 1)
        with ThreadPoolExecutor(3) as pool:  # fill the pool with idle connections
            list(pool.map(lambda _: writer.get_device("d1"), range(6)))

        postgres_cluster.stop()
        try:
            deadline = time.monotonic() + 5
            while watcher.listening.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not watcher.listening.is_set()
            with pytest.raises(StorageUnavailable):
                writer.get_device("d1")
            with pytest.raises(StorageUnavailable):
                writer.create_device(_device("d2"), 2)
            with pytest.raises(StorageUnavailable):
                writer.changes_after(0, 10)
        finally:
            postgres_cluster.start()

        # the first call after the restart works: stale pooled connections are detected
        assert writer.get_device("d1").id == "d1"
        writer.create_device(_device("d2"), 2)
        assert [c.device_id for c in writer.changes_after(0, 10)] == ["d1", "d2"]

        # the LISTEN thread reconnects by itself
        assert watcher.listening.wait(10)
        woken.clear()
        writer.create_device(_device("d3"), 3)
        assert woken.wait(2.0)
    finally:
        writer.close()
        watcher.close()
