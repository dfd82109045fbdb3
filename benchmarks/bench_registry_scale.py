"""Benchmark: the registry server over gRPC with a million registered devices.

Loads ``--devices`` devices (default 1,000,000) into a fresh database: 1,000 sites, 10 edges per
site (10,000 edges), 5 buildings per site, 5 models (one per device kind), labels
``floor`` (30 values), ``kind`` (5) and ``tier`` (gold 10 %, silver 30 %, bronze 60 %), and
``--properties`` reported twin values per device (default 5). SQLite: the rows are written
directly in the engine's schema (migrated first; the list indexes dropped during the load and
re-created with the migration's own statements); PostgreSQL: :meth:`PostgresStorage.
import_devices` (COPY) plus COPY of the twin rows, then ``VACUUM ANALYZE``.

Then it starts the registry (``python -m cloud_registry.cli serve``) in a SUBPROCESS on
127.0.0.1 and measures from this process with the sync :class:`RegistryClient`:

* ``get_twin_ms``: GetTwin of a random device, p50/p99 (``--twins`` calls, one thread);
* ``list_site_ms``: ListDevices ``site=S``, page of 100 from a random position in the site;
* ``list_site_label_ms``: ListDevices ``site=S`` + ``floor=N``, first page of 100;
* ``reads_per_s``: GetTwin from ``--threads`` client threads for ``--seconds``;
* ``modifies_per_s``: SetDesired with ``expected_revision`` (optimistic concurrency: each
  thread keeps the revision returned by its previous write of that device), same threads;
* ``server_rss_mb`` / ``server_peak_rss_mb``: the server's VmRSS / VmHWM after the runs.

Ceilings measured in the same run: ``ceiling_storage_*``: the same storage calls in-process
(no gRPC, no server), and ``ceiling_grpc_echo_ms``: a raw ``grpc.health.v1`` Check against the
same server (the unary round trip of the transport alone). ``ratio_*``: figure / ceiling.
Prints one JSON line. Run from the repository root::

    .venv/bin/python benchmarks/bench_registry_scale.py --engine sqlite [--devices 1000000]
    .venv/bin/python benchmarks/bench_registry_scale.py --engine postgres --devices 100000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from cloud_registry.api.client import RegistryClient  # noqa: E402
from cloud_registry.storage.base import (  # noqa: E402
    DeviceFilter,
    DeviceRecord,
    LabelRequirement,
    Location,
    Storage,
)
from cloud_registry.storage.cursors import DEVICES, encode_cursor  # noqa: E402

SITES = 1_000
EDGES_PER_SITE = 10
BUILDINGS_PER_SITE = 5
FLOORS = 30
KINDS = ("meter", "lock", "camera", "sensor", "light")
MODELS = tuple(f"bench.scale/{kind}@1.0.0" for kind in KINDS)
TARGET_GET_TWIN_P99_MS = 5.0
TARGET_LIST_P99_MS = 20.0
TARGET_RSS_MB = 500.0

MODEL_YAML = """model: bench.scale/{kind}
version: "1.0.0"
title: Benchmark {kind}
vendor: bench
properties:
  - {{id: p0, title: P0, type: float, min: -1000000, max: 1000000}}
  - {{id: p1, title: P1, type: float, min: -1000000, max: 1000000}}
  - {{id: p2, title: P2, type: float, min: -1000000, max: 1000000}}
  - {{id: p3, title: P3, type: float, min: -1000000, max: 1000000}}
  - {{id: p4, title: P4, type: float, min: -1000000, max: 1000000}}
  - {{id: setpoint, title: Setpoint, type: float, min: -1000000000, max: 1000000000, access: rw}}
  - {{id: mode, title: Mode, type: int32, min: 0, max: 1000000000, access: rw}}
"""


# --------------------------------------------------------------------------- the data set


def device_id(i: int) -> str:
    return f"dev-{i:07d}"


def _site(i: int) -> int:
    return (i * 7919) % SITES  # spread each site over the whole id range


def device_record(i: int) -> DeviceRecord:
    site = _site(i)
    k = i % len(KINDS)
    tier = "gold" if i % 10 == 0 else "silver" if i % 10 < 4 else "bronze"
    return DeviceRecord(
        id=device_id(i),
        model=MODELS[k],
        edge_id=f"edge-{site:04d}-{(i // 7) % EDGES_PER_SITE}",
        site=f"site-{site:04d}",
        building=f"b{(i // 3) % BUILDINGS_PER_SITE}",
        labels={"floor": str((i // 11) % FLOORS), "kind": KINDS[k], "tier": tier},
        location=Location(31.2 + (i % 1000) / 1e4, 121.4 + (i % 997) / 1e4, str(i % 30), ""),
    )


def _chunks(total: int, size: int) -> Iterator[range]:
    for start in range(0, total, size):
        yield range(start, min(total, start + size))


def load_sqlite(path: Path, devices: int, properties: int, now: int) -> dict[str, float]:
    """Create and migrate the database, then write the rows in the engine's own schema."""
    from cloud_registry.storage.migrations_sqlite import MIGRATIONS
    from cloud_registry.storage.records import canonical_json, dump_json
    from cloud_registry.storage.sqlite import SqliteStorage

    storage = SqliteStorage(path)
    storage.migrate()
    storage.close()
    index_ddl = [
        s
        for m in MIGRATIONS
        for s in m.statements
        if isinstance(s, str)
        and s.startswith("CREATE INDEX")
        and (" ON devices " in s or " ON device_labels " in s)
    ]
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    for ddl in index_ddl:
        conn.execute(f"DROP INDEX {ddl.split()[2]}")
    conn.execute("BEGIN")
    for chunk in _chunks(devices, 50_000):
        rows: list[tuple[Any, ...]] = []
        labels: list[tuple[str, str, str]] = []
        twins: list[tuple[str, str, str, int, str]] = []
        for i in chunk:
            d = device_record(i)
            loc = d.location
            rows.append(
                (
                    d.id, d.model, d.model_name, d.edge_id, d.site, d.building,
                    canonical_json(dict(d.labels)), loc.latitude, loc.longitude, loc.floor,
                    loc.room, 0, 1, now, now, 0, 1 if properties else 0,
                )
            )  # fmt: skip
            labels.extend((k, v, d.id) for k, v in d.labels.items())
            twins.extend(
                (d.id, f"p{p}", dump_json(round((i % 1000) / 10 + p, 2)), now, "good")
                for p in range(properties)
            )
        conn.executemany(
            "INSERT INTO devices (id, model, model_name, edge_id, site, building, labels, "
            "latitude, longitude, floor, room, online, revision, created_ms, updated_ms, "
            "last_seen_ms, twin_revision) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.executemany(
            "INSERT INTO device_labels (key, value, device_id) VALUES (?, ?, ?)", labels
        )
        conn.executemany(
            "INSERT INTO twin_reported (device_id, property, value, ts_ms, quality) "
            "VALUES (?, ?, ?, ?, ?)",
            twins,
        )
    conn.execute("COMMIT")
    loaded = time.perf_counter() - started
    for ddl in index_ddl:
        conn.execute(ddl)
    conn.execute("ANALYZE")
    conn.close()
    indexing = time.perf_counter() - started - loaded
    return {"load_s": round(loaded, 1), "index_analyze_s": round(indexing, 1)}


def load_postgres(dsn: str, devices: int, properties: int, now: int) -> dict[str, float]:
    import psycopg

    from cloud_registry.storage.postgres import PostgresStorage

    storage = PostgresStorage(dsn, replica_id="bench-load", pool_size=2)
    storage.migrate()
    started = time.perf_counter()
    for chunk in _chunks(devices, 100_000):
        storage.import_devices([device_record(i) for i in chunk], now)
    storage.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        if properties:
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
                            value = repr(round((i % 1000) / 10 + p, 2))
                            copy.write_row((device_id(i), f"p{p}", value, now, "good"))
        loaded = time.perf_counter() - started
        conn.execute("VACUUM ANALYZE")
    indexing = time.perf_counter() - started - loaded
    return {"load_s": round(loaded, 1), "index_analyze_s": round(indexing, 1)}


# --------------------------------------------------------------------------- the server process


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``cloud-registry serve`` over ``url`` in a child process on a free loopback port."""

    def __init__(self, url: str) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "cloud_registry.cli", "serve", "--listen", self.target,
                "--db", url, "--log-level", "WARNING", "--insecure",
            ],
            cwd=str(REPO), stdout=self._log, stderr=self._log,
        )  # fmt: skip
        channel = grpc.insecure_channel(self.target)
        stub: Any = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                self._log.seek(0)
                raise RuntimeError(f"registry exited: {self._log.read().decode()[-3000:]}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("registry did not become healthy within 120 s")
            time.sleep(0.1)
        channel.close()

    def memory_mb(self) -> dict[str, float]:
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
        with contextlib.suppress(OSError):  # PSS: a file page mapped by several connections once
            for line in Path(f"/proc/{self.proc.pid}/smaps_rollup").read_text().splitlines():
                key, _, value = line.partition(":")
                if key == "Pss":
                    out["Pss"] = round(int(value.split()[0]) / 1024, 1)
        return out

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._log.close()


# --------------------------------------------------------------------------- measuring


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered), 3),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
        "n": len(ordered),
    }


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "grpc": grpc.__version__,
        "sqlite": sqlite3.sqlite_version,
    }


def async_throughput(target: str, op: str, devices: int, concurrency: int, seconds: float) -> float:
    """Calls per second of ``op`` (get_twin / set_desired with revision) from ``concurrency``
    tasks sharing one grpc.aio channel (the client's GIL is not the limit this way)."""
    import asyncio

    from cloud_registry.api.client import AsyncRegistryClient

    async def go() -> float:
        count = 0
        stop_at = 0.0
        async with AsyncRegistryClient(target, timeout=30) as client:

            async def worker(w: int) -> None:
                nonlocal count
                r = random.Random(2000 + w)
                revisions: dict[str, int] = {}
                while time.perf_counter() < stop_at:
                    dev = device_id(r.randrange(devices))
                    if op == "get_twin":
                        await client.get_twin(dev)
                    else:
                        twin = await client.set_desired(
                            dev, {"setpoint": r.randrange(1000), "mode": r.randrange(4)},
                            expected_revision=revisions.get(dev, 0),
                        )  # fmt: skip
                        revisions[dev] = twin.revision
                    count += 1

            started = time.perf_counter()
            stop_at = started + seconds
            await asyncio.gather(*(worker(w) for w in range(concurrency)))
            return count / (time.perf_counter() - started)

    return asyncio.run(go())


def throughput(
    fn: Callable[[random.Random, dict[str, int]], None], threads: int, seconds: float
) -> float:
    stop = threading.Event()
    counts = [0] * threads

    def worker(w: int) -> None:
        rng = random.Random(1000 + w)
        state: dict[str, int] = {}
        while not stop.is_set():
            fn(rng, state)
            counts[w] += 1

    pool = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
    started = time.perf_counter()
    for t in pool:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in pool:
        t.join()
    return sum(counts) / (time.perf_counter() - started)


def measure(
    storage: Storage,
    target: str,
    devices: int,
    args: argparse.Namespace,
    rss: Callable[[], dict[str, float]],
) -> dict[str, Any]:
    rng = random.Random(7)
    res: dict[str, Any] = {}
    phases: dict[str, dict[str, float]] = {}
    res["server_rss_mb_by_phase"] = phases
    # the ceilings: storage calls in this process, and a raw gRPC unary echo
    site_ids = [f"site-{s:04d}" for s in range(SITES)]

    def random_cursor() -> tuple[str, str]:
        i = rng.randrange(devices)
        return f"site-{_site(i):04d}", encode_cursor(DEVICES, [device_id(i)])

    def st_twin() -> None:
        storage.get_twin(device_id(rng.randrange(devices)))

    def st_list() -> None:
        site, cursor = random_cursor()
        storage.list_devices(DeviceFilter(site=site), cursor, 100)

    def st_list_label() -> None:
        flt = DeviceFilter(
            site=rng.choice(site_ids),
            labels=(LabelRequirement("floor", "=", (str(rng.randrange(FLOORS)),)),),
        )
        storage.list_devices(flt, "", 100)

    timed(st_twin, 300)
    timed(st_list, 100)
    res["ceiling_storage_get_twin_ms"] = percentiles(timed(st_twin, args.twins))
    res["ceiling_storage_list_site_ms"] = percentiles(timed(st_list, args.lists))
    res["ceiling_storage_list_site_label_ms"] = percentiles(timed(st_list_label, args.lists))

    channel = grpc.insecure_channel(target)
    health: Any = health_pb2_grpc.HealthStub(channel)
    check = health_pb2.HealthCheckRequest()
    timed(lambda: health.Check(check), 300)
    res["ceiling_grpc_echo_ms"] = percentiles(timed(lambda: health.Check(check), args.twins))

    with RegistryClient(target, timeout=30) as client:
        for kind in KINDS:
            client.publish_model(MODEL_YAML.format(kind=kind))

        props = args.properties

        def get_twin() -> None:
            twin = client.get_twin(device_id(rng.randrange(devices)))
            assert len(twin.reported) == props

        def list_site() -> None:
            site, cursor = random_cursor()
            client.list_devices(site=site, page_size=100, page_token=cursor)

        def list_site_label() -> None:
            client.list_devices(
                site=rng.choice(site_ids),
                label_selector=f"floor={rng.randrange(FLOORS)}",
                page_size=100,
            )

        timed(get_twin, 300)
        timed(list_site, 100)
        res["get_twin_ms"] = percentiles(timed(get_twin, args.twins))
        res["list_site_ms"] = percentiles(timed(list_site, args.lists))
        res["list_site_label_ms"] = percentiles(timed(list_site_label, args.lists))
        first = client.list_devices(site="site-0042", page_size=100)
        res["list_site_page_len"] = len(first.items)

        def read(r: random.Random, _state: dict[str, int]) -> None:
            client.get_twin(device_id(r.randrange(devices)))

        def modify(r: random.Random, state: dict[str, int]) -> None:
            dev = device_id(r.randrange(devices))
            twin = client.set_desired(
                dev, {"setpoint": r.randrange(1000), "mode": r.randrange(4)},
                expected_revision=state.get(dev, 0) or 0,
            )  # fmt: skip
            state[dev] = twin.revision

        phases["after_latency"] = rss()
        res["reads_per_s"] = round(throughput(read, args.threads, args.seconds))
        phases["after_reads"] = rss()
        res["modifies_per_s"] = round(throughput(modify, args.threads, args.seconds))
        phases["after_modifies"] = rss()
        res["client_threads"] = args.threads
        res["reads_per_s_async"] = round(
            async_throughput(target, "get_twin", devices, args.concurrency, args.seconds)
        )
        phases["after_async_reads"] = rss()
        res["modifies_per_s_async"] = round(
            async_throughput(target, "set_desired", devices, args.concurrency, args.seconds)
        )
        phases["after_async"] = rss()
        res["async_concurrency"] = args.concurrency
    channel.close()
    return res


def run(
    engine: str,
    url: str,
    storage_factory: Callable[[], Storage],
    args: argparse.Namespace,
    load: dict[str, float],
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "engine": engine,
        "devices": args.devices,
        "properties_per_device": args.properties,
        "sites": SITES,
        "edges": SITES * EDGES_PER_SITE,
        **load,
    }
    server = ServerProcess(url)
    try:
        result["server_rss_mb_idle"] = server.memory_mb().get("VmRSS")
        storage = storage_factory()
        try:
            cpu0 = server.cpu_s()
            result.update(measure(storage, server.target, args.devices, args, server.memory_mb))
            result["server_cpu_s"] = round(server.cpu_s() - cpu0, 1)
        finally:
            storage.close()
        mem = server.memory_mb()
        result["server_rss_mb"] = mem.get("VmRSS")
        result["server_peak_rss_mb"] = mem.get("VmHWM")
        result["server_rss_anon_mb"] = mem.get("RssAnon")
        result["server_rss_file_mb"] = mem.get("RssFile")
        result["server_pss_mb"] = mem.get("Pss")
    finally:
        server.stop()
    cores = os.cpu_count() or 1
    best_reads = max(result["reads_per_s"], result["reads_per_s_async"])
    best_modifies = max(result["modifies_per_s"], result["modifies_per_s_async"])
    # client and server share the machine's cores: per core of the whole machine
    result["reads_per_s_per_core"] = round(best_reads / cores)
    result["modifies_per_s_per_core"] = round(best_modifies / cores)
    result["ratio_get_twin_p50_vs_storage"] = round(
        result["get_twin_ms"]["p50"] / max(result["ceiling_storage_get_twin_ms"]["p50"], 1e-3), 1
    )
    result["ratio_get_twin_p50_vs_grpc_echo"] = round(
        result["get_twin_ms"]["p50"] / max(result["ceiling_grpc_echo_ms"]["p50"], 1e-3), 2
    )
    result["ratio_list_site_p50_vs_storage"] = round(
        result["list_site_ms"]["p50"] / max(result["ceiling_storage_list_site_ms"]["p50"], 1e-3), 1
    )
    result["targets"] = {
        "get_twin_p99_under_5ms": result["get_twin_ms"]["p99"] < TARGET_GET_TWIN_P99_MS,
        "list_site_p99_under_20ms": result["list_site_ms"]["p99"] < TARGET_LIST_P99_MS,
        "list_site_label_p99_under_20ms": result["list_site_label_ms"]["p99"] < TARGET_LIST_P99_MS,
        "rss_under_500mb": (result["server_rss_mb"] or 0) < TARGET_RSS_MB,
        "peak_rss_under_500mb": (result["server_peak_rss_mb"] or 0) < TARGET_RSS_MB,
    }
    result["machine"] = machine()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--engine", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--properties", type=int, default=5)
    parser.add_argument("--twins", type=int, default=5000, help="GetTwin calls timed")
    parser.add_argument("--lists", type=int, default=1000, help="ListDevices calls timed")
    parser.add_argument("--threads", type=int, default=4, help="client threads (throughput)")
    parser.add_argument("--concurrency", type=int, default=16, help="async client tasks")
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput run")
    parser.add_argument("--workdir", default="", help="where the database goes (default: tmp)")
    args = parser.parse_args()
    now = int(time.time() * 1000)
    root = Path(tempfile.mkdtemp(prefix="registry-scale-", dir=args.workdir or None))
    try:
        if args.engine == "sqlite":
            from cloud_registry.storage.sqlite import SqliteStorage

            path = root / "registry.db"
            load = load_sqlite(path, args.devices, args.properties, now)
            load["db_mb"] = round(sum(f.stat().st_size for f in root.iterdir()) / 2**20)
            result = run("sqlite", f"sqlite:///{path}", lambda: SqliteStorage(path), args, load)
        else:
            from cloud_registry.storage.postgres import PostgresStorage
            from tests.cloud_registry.pg_cluster import PgCluster, find_pg_bin

            bindir = find_pg_bin()
            if bindir is None:
                sys.exit("PostgreSQL server binaries not found: install the package postgresql")
            cluster = PgCluster(bindir, options="-c shared_buffers=1GB -c max_wal_size=4GB")
            try:
                cluster.init()
                cluster.start()
                cluster.admin("CREATE DATABASE bench")
                dsn = cluster.dsn("bench")
                load = load_postgres(dsn, args.devices, args.properties, now)
                url = f"postgresql://postgres@127.0.0.1:{cluster.port}/bench"
                result = run(
                    "postgres", url, lambda: PostgresStorage(dsn, replica_id="bench", pool_size=2),
                    args, load,
                )  # fmt: skip
                result["machine_postgres"] = {"shared_buffers": "1GB", "fsync": "on"}
            finally:
                cluster.destroy()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
