"""Benchmark: the PostgreSQL layout at scale (docs/postgres-layout.md quotes it).

Loads ``--devices`` devices (default 1,000,000) with COPY (:meth:`PostgresStorage.
import_devices`) into 1,000 sites, 20,000 edges, 9 models and 3 labels each, plus
``--properties`` reported twin values per device (COPY), then measures through the engine's
public methods, one client thread, on loopback:

* ``list_site_ms``: ``list_devices(site=..., limit=100)`` from a random position in a random
  site (keyset page), p50/p99;
* ``list_site_label_ms``: the same with a label selector ``floor=<n>`` (GIN + site index);
* ``get_twin_ms``: ``get_twin`` of a random device, p50/p99;
* ``ingest_values_per_s``: telemetry batches of 500 values through ``ingest`` (COPY into the
  monthly partition, twin upsert, one change per device), 4 threads on 2 instances;
* table and index sizes (bytes, and per million devices), and the machine.

Starts a throwaway cluster (tests/cloud_registry/pg_cluster.py; needs the Debian package
``postgresql``) unless ``--dsn`` names an empty database. Prints one JSON line. Run from the
repository root: ``.venv/bin/python benchmarks/bench_postgres_scale.py [--devices 1000000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cloud_registry.storage.base import (
    DeviceFilter,
    DeviceRecord,
    IngestBatch,
    LabelRequirement,
    Location,
    ReportedValue,
)
from cloud_registry.storage.cursors import DEVICES, encode_cursor
from cloud_registry.storage.postgres import PostgresStorage

SITES = 1_000
DEVICES_PER_EDGE = 50
MODELS = [f"acme/model-{i}@1.{i}.0" for i in range(9)]
KINDS = ["meter", "lock", "camera", "sensor", "light"]


def _device(i: int) -> DeviceRecord:
    site = i % SITES
    return DeviceRecord(
        id=f"dev-{i:08d}",
        model=MODELS[i % len(MODELS)],
        edge_id=f"edge-{site:04d}-{(i // SITES) // DEVICES_PER_EDGE:03d}",
        site=f"site-{site:04d}",
        building=f"b{(i // SITES) % 12}",
        labels={"floor": str((i // 7) % 30), "kind": KINDS[i % 5], "tier": "gold"},
        location=Location(31.2 + (i % 1000) / 1e4, 121.4 + (i % 997) / 1e4, str(i % 30), ""),
    )


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered), 3),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
        "n": len(ordered),
    }


def _timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def _machine(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    row = conn.execute("SHOW server_version").fetchone()
    settings = {
        name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
        for name in ("shared_buffers", "fsync", "synchronous_commit", "work_mem")
    }
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "postgres": row[0] if row else "",
        "settings": settings,
    }


def _sizes(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    tables = {}
    for (table,) in conn.execute(
        """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
                 AND NOT c.relispartition ORDER BY 1"""
    ).fetchall():
        row = conn.execute(
            """SELECT coalesce(sum(pg_table_size(r)), 0), coalesce(sum(pg_indexes_size(r)), 0)
               FROM (SELECT %s::regclass AS r
                     UNION ALL SELECT inhrelid::regclass FROM pg_inherits
                     WHERE inhparent = %s::regclass) t""",
            (table, table),
        ).fetchone()
        assert row is not None
        tables[table] = {"table_bytes": int(row[0]), "index_bytes": int(row[1])}
    indexes = {
        name: int(size)
        for name, size in conn.execute(
            """SELECT i.relname, pg_relation_size(i.oid) FROM pg_class i
               JOIN pg_index x ON x.indexrelid = i.oid
               JOIN pg_class t ON t.oid = x.indrelid
               WHERE t.relname IN ('devices', 'twin_reported') ORDER BY 1"""
        ).fetchall()
    }
    return {"tables": tables, "device_indexes": indexes}


def _chunks(total: int, size: int) -> Iterator[range]:
    for start in range(0, total, size):
        yield range(start, min(total, start + size))


def run(dsn: str, devices: int, properties: int, queries: int) -> dict[str, Any]:
    storage = PostgresStorage(dsn, replica_id="bench", pool_size=4)
    storage.migrate()
    now = int(time.time() * 1000)
    result: dict[str, Any] = {"devices": devices, "properties_per_device": properties}

    started = time.perf_counter()
    for chunk in _chunks(devices, 100_000):
        storage.import_devices([_device(i) for i in chunk], now)
    elapsed = time.perf_counter() - started
    result["import_devices_s"] = round(elapsed, 1)
    result["import_devices_per_s"] = round(devices / elapsed)

    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for chunk in _chunks(devices, 200_000):
            with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy(
                    "COPY twin_reported (device_id, property, value, ts_ms, quality) FROM STDIN"
                ) as copy,
            ):
                for i in chunk:
                    for p in range(properties):
                        copy.write_row((f"dev-{i:08d}", f"p{p}", str(i % 100 + p / 4), now, "good"))
        result["load_twins_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        result["vacuum_analyze_s"] = round(time.perf_counter() - started, 1)

        rng = random.Random(7)

        def list_site() -> None:
            i = rng.randrange(devices)
            cursor = encode_cursor(DEVICES, [f"dev-{i:08d}"])
            page = storage.list_devices(DeviceFilter(site=f"site-{i % SITES:04d}"), cursor, 100)
            assert page.items or i >= devices - 100 * SITES

        def list_site_label() -> None:
            site = rng.randrange(SITES)
            flt = DeviceFilter(
                site=f"site-{site:04d}",
                labels=(LabelRequirement("floor", "=", (str(rng.randrange(30)),)),),
            )
            storage.list_devices(flt, "", 100)

        def get_twin() -> None:
            twin = storage.get_twin(f"dev-{rng.randrange(devices):08d}")
            assert len(twin.reported) == properties

        for fn in (list_site, get_twin):  # warm the caches a little
            _timed(fn, 200)
        result["list_site_ms"] = _percentiles(_timed(list_site, queries))
        result["list_site_label_ms"] = _percentiles(_timed(list_site_label, queries // 4))
        result["get_twin_ms"] = _percentiles(_timed(get_twin, queries))
        page = storage.list_devices(DeviceFilter(site="site-0042"), "", 100)
        result["first_page_ids"] = [page.items[0].id, page.items[-1].id]

        # ingest: 4 threads on 2 instances, batches of 500 values (50 devices x 10 values)
        other = PostgresStorage(dsn, replica_id="bench-2", pool_size=4)
        per_thread = 40

        def ingest(worker: int) -> int:
            target = storage if worker % 2 == 0 else other
            edge = f"bench-edge-{worker}"
            for seq in range(1, per_thread + 1):
                base = rng.randrange(devices - 50)
                values = [
                    ReportedValue(f"dev-{base + d:08d}", f"p{v % properties}", seq + v, now + v)
                    for d in range(50)
                    for v in range(10)
                ]
                target.ingest(IngestBatch(edge, seq, values, []), now)
            return per_thread * 500

        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            stored = sum(pool.map(ingest, range(4)))
        result["ingest_values_per_s"] = round(stored / (time.perf_counter() - started))
        other.close()

        conn.execute("ANALYZE")
        result["sizes"] = _sizes(conn)
        hist = result["sizes"]["tables"].get("history", {})
        if stored:
            result["history_bytes_per_point"] = round(
                (hist.get("table_bytes", 0) + hist.get("index_bytes", 0)) / stored, 1
            )
        result["machine"] = _machine(conn)
    storage.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--properties", type=int, default=5)
    parser.add_argument("--queries", type=int, default=4000)
    parser.add_argument("--dsn", default="", help="an empty database (default: a throwaway one)")
    args = parser.parse_args()
    if args.dsn:
        print(json.dumps(run(args.dsn, args.devices, args.properties, args.queries)))
        return
    from tests.cloud_registry.pg_cluster import PgCluster, find_pg_bin

    bindir = find_pg_bin()
    if bindir is None:
        sys.exit("PostgreSQL server binaries not found: install the Debian package postgresql")
    cluster = PgCluster(bindir, options="-c shared_buffers=1GB -c max_wal_size=4GB")
    try:
        cluster.init()
        cluster.start()
        cluster.admin("CREATE DATABASE bench")
        print(json.dumps(run(cluster.dsn("bench"), args.devices, args.properties, args.queries)))
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
