"""Benchmark: Watch fan-out, the delivery latency of one change to 1 and to 100 subscribers.

Loads ``--devices`` devices like ``bench_registry_scale.py`` (same data set), starts the
registry (``python -m cloud_registry.cli serve``) in a SUBPROCESS on 127.0.0.1, then for 1 and
for ``--subscribers`` (default 100) subscribers:

* opens that many Watch streams (raw ``grpc.aio`` stubs, one channel each, all in THIS
  process), each filtered on one device, and checks every one receives a first change;
* a writer in ANOTHER process (this script, ``--writer``) makes ``--changes`` SetDesired calls
  on that device (with ``expected_revision``), one every ``--interval-ms``, and records for
  each twin revision the monotonic clock before the call and when it returned;
* every subscriber records the monotonic clock when it reads each change (by twin revision).

``delivery_ms``: receive time minus the write's return (over all subscriber deliveries; it can
be slightly negative: the server pushes the change while the response is on its way);
``delivery_from_send_ms``: receive time minus the write's start (commit included). Both
processes read ``CLOCK_MONOTONIC`` (``time.monotonic_ns``), one clock on one machine.
``added_ms_per_change``: p50(N) - p50(1), and p99(N) - p99(1). The ceiling in the same run is
the 1-subscriber figure and ``write_ms`` (the SetDesired round trip itself). Prints one JSON
line. Run from the repository root::

    .venv/bin/python benchmarks/bench_watch_fanout.py --engine sqlite [--devices 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_registry_scale import (  # noqa: E402
    KINDS,
    MODEL_YAML,
    ServerProcess,
    device_id,
    load_postgres,
    load_sqlite,
    machine,
    percentiles,
)
from grpc import aio  # noqa: E402

from cloud_registry.api.client import RegistryClient  # noqa: E402
from cloud_registry.api.v1 import watch_pb2, watch_pb2_grpc  # noqa: E402


def writer(target: str, device: str, changes: int, interval_ms: float) -> None:
    """The writer process: prints {revision: [start_ns, return_ns]} and the write latencies."""
    out: dict[int, tuple[int, int]] = {}
    with RegistryClient(target, timeout=30) as client:
        revision = client.get_twin(device).revision
        next_at = time.monotonic()
        for i in range(changes):
            next_at += interval_ms / 1000
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            start = time.monotonic_ns()
            twin = client.set_desired(device, {"setpoint": i}, expected_revision=revision)
            done = time.monotonic_ns()
            revision = twin.revision
            out[revision] = (start, done)
    print(json.dumps(out))


async def fanout(
    target: str, device: str, subscribers: int, changes: int, interval_ms: float
) -> dict[str, Any]:
    channels = [aio.insecure_channel(target) for _ in range(subscribers)]
    received: list[list[tuple[int, int]]] = [[] for _ in range(subscribers)]
    ready = [asyncio.Event() for _ in range(subscribers)]
    request = watch_pb2.WatchRequest(device_ids=[device])

    async def subscribe(n: int) -> None:
        stub = watch_pb2_grpc.WatchServiceStub(channels[n])  # type: ignore[no-untyped-call]
        call = stub.Watch(request)
        log = received[n]
        try:
            async for change in call:
                log.append((change.twin.revision, time.monotonic_ns()))
                ready[n].set()
        except aio.AioRpcError:
            pass

    tasks = [asyncio.create_task(subscribe(n)) for n in range(subscribers)]
    # every stream is open once a first change reaches it
    with RegistryClient(target, timeout=30) as client:
        for _attempt in range(100):
            client.set_desired(device, {"mode": 1})
            try:
                await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready)), 0.3)
                break
            except TimeoutError:
                continue
        else:
            raise RuntimeError("the Watch streams did not open")
    await asyncio.sleep(0.2)
    for log in received:
        log.clear()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).resolve()), "--writer", target, "--device", device,
        "--changes", str(changes), "--interval-ms", str(interval_ms),
        stdout=asyncio.subprocess.PIPE, cwd=str(REPO),
    )  # fmt: skip
    stdout, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the writer failed ({proc.returncode})")
    writes = {int(k): v for k, v in json.loads(stdout).items()}
    last = max(writes)
    deadline = time.monotonic() + 10
    while any(not log or log[-1][0] < last for log in received) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()
    from_return: list[float] = []
    from_send: list[float] = []
    missing = 0
    for log in received:
        got = dict(log)
        for rev, (start, done) in writes.items():
            ns = got.get(rev)
            if ns is None:
                missing += 1
                continue
            from_return.append((ns - done) / 1e6)
            from_send.append((ns - start) / 1e6)
    return {
        "subscribers": subscribers,
        "changes": len(writes),
        "deliveries": len(from_return),
        "missing": missing,
        "delivery_ms": percentiles(from_return),
        "delivery_from_send_ms": percentiles(from_send),
        "write_ms": percentiles([(d - s) / 1e6 for s, d in writes.values()]),
    }


def run(url: str, args: argparse.Namespace, load: dict[str, Any], engine: str) -> dict[str, Any]:
    result: dict[str, Any] = {"engine": engine, "devices": args.devices, **load}
    server = ServerProcess(url)
    try:
        with RegistryClient(server.target, timeout=30) as client:
            for kind in KINDS:
                client.publish_model(MODEL_YAML.format(kind=kind))
        device = device_id(args.devices // 2)
        cpu0 = server.cpu_s()
        one = asyncio.run(fanout(server.target, device, 1, args.changes, args.interval_ms))
        cpu1 = server.cpu_s()
        many = asyncio.run(
            fanout(server.target, device, args.subscribers, args.changes, args.interval_ms)
        )
        cpu2 = server.cpu_s()
        mem = server.memory_mb()
    finally:
        server.stop()
    result["one_subscriber"] = one
    result["many_subscribers"] = many
    result["added_ms_per_change"] = {
        "p50": round(many["delivery_ms"]["p50"] - one["delivery_ms"]["p50"], 3),
        "p99": round(many["delivery_ms"]["p99"] - one["delivery_ms"]["p99"], 3),
    }
    result["server_cpu_ms_per_change"] = {
        "one": round((cpu1 - cpu0) * 1000 / max(1, one["changes"]), 3),
        "many": round((cpu2 - cpu1) * 1000 / max(1, many["changes"]), 3),
    }
    result["server_rss_mb"] = mem.get("VmRSS")
    result["server_pss_mb"] = mem.get("Pss")
    result["machine"] = machine()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--engine", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--changes", type=int, default=500)
    parser.add_argument("--interval-ms", type=float, default=10.0, help="pause between writes")
    parser.add_argument("--workdir", default="")
    parser.add_argument("--writer", default="", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        writer(args.writer, args.device, args.changes, args.interval_ms)
        return
    now = int(time.time() * 1000)
    root = Path(tempfile.mkdtemp(prefix="registry-fanout-", dir=args.workdir or None))
    try:
        if args.engine == "sqlite":
            path = root / "registry.db"
            load = load_sqlite(path, args.devices, 5, now)
            result = run(f"sqlite:///{path}", args, load, "sqlite")
        else:
            from tests.cloud_registry.pg_cluster import PgCluster, find_pg_bin

            bindir = find_pg_bin()
            if bindir is None:
                sys.exit("PostgreSQL server binaries not found: install the package postgresql")
            cluster = PgCluster(bindir, options="-c shared_buffers=1GB -c max_wal_size=4GB")
            try:
                cluster.init()
                cluster.start()
                cluster.admin("CREATE DATABASE bench")
                load = load_postgres(cluster.dsn("bench"), args.devices, 5, now)
                url = f"postgresql://postgres@127.0.0.1:{cluster.port}/bench"
                result = run(url, args, load, "postgres")
            finally:
                cluster.destroy()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["cores"] = os.cpu_count()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
