"""Benchmark: edge-sync ingest, durable, SQLite, client and server on loopback.

The registry runs in a subprocess (its own core) serving EdgeSync over a fresh SQLite file
(WAL, synchronous=FULL: every acknowledged batch is on disk); this process is the edge: it says
Hello, then streams TelemetryBatch messages of ``--devices`` property reports of ``--props``
float values each, keeping up to the registry's ``max_in_flight`` batches unacknowledged, for
``--seconds``. Reported:

* ``values_per_s``: property values acknowledged per second, end to end;
* ``storage_ceiling_values_per_s``: ``storage.ingest`` of the same batches, already decoded, in
  one process with no gRPC;
* ``grpc_ceiling_values_per_s``: a bidi echo server (in a subprocess) that parses each batch
  and acknowledges it at once, no decoding and no storage;
* ``servicer_ceiling_values_per_s``: the same registry process and stream with
  ``storage.ingest`` replaced by a no-op: what gRPC plus the edge-sync servicer (decoding,
  device checks, pipelining, acks) sustain on their own;
* ``decode_values_per_s``: the servicer's batch decoding (protobuf to storage records) alone;
* ``server_cpu_percent``: CPU time of the registry process during the end-to-end run over wall
  time (100 = one core; well under 100 means it waits on disk, not on the interpreter);
* ``ratio_to_storage_ceiling`` / ``ratio_to_grpc_ceiling``; ``stored_rows_check``: the history
  rows the registry holds after the run equal the values acknowledged.

Prints one JSON line. Run: ``.venv/bin/python benchmarks/bench_ingest.py [--seconds 15]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

from grpc import aio

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchlib import machine  # noqa: E402

from cloud_registry.api.v1 import edge_sync_pb2  # noqa: E402
from cloud_registry.server.change_hub import ChangeHub  # noqa: E402
from cloud_registry.server.context import RegistrySettings, ServiceContext  # noqa: E402
from cloud_registry.storage.base import (  # noqa: E402
    DeviceRecord,
    IngestBatch,
    IngestResult,
    ModelEntry,
    Storage,
)
from cloud_registry.storage.factory import open_storage  # noqa: E402
from thing_models.proto import thing_message_pb2 as tpb  # noqa: E402

TARGET_VALUES_PER_S = 200_000
METHOD = "/community.registry.v1.EdgeSync/Sync"
EDGE = "bench-edge"
MODEL = "bench.acme/meter@1.0.0"
OPTIONS = (
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
)


# --------------------------------------------------------------------------- data


def _model_document(props: int) -> dict[str, Any]:
    from thing_models.model import DataSchema, DataType, Property, SemVer, ThingModel
    from thing_models.yaml_format import model_to_dict

    model = ThingModel(
        name="bench.acme/meter",
        version=SemVer.parse("1.0.0"),
        properties=tuple(Property(f"p{i}", DataSchema(DataType.DOUBLE)) for i in range(props)),
    )
    return model_to_dict(model)


def seed(path: str, devices: int, props: int) -> None:
    storage = open_storage(f"sqlite:///{path}")
    storage.migrate()
    storage.put_model(
        ModelEntry(
            name="bench.acme/meter",
            version="1.0.0",
            document=_model_document(props),
            published_ms=1,
            property_count=props,
        )
    )
    for i in range(devices):
        storage.create_device(
            DeviceRecord(id=f"dev-{i:05d}", model=MODEL, edge_id=EDGE, site="bench"), 1
        )
    storage.close()


def batch_messages(devices: int, props: int, ts_ms: int) -> list[tpb.ThingMessage]:
    out = []
    for d in range(devices):
        msg = tpb.ThingMessage(
            id=f"m{ts_ms}-{d}",
            kind=tpb.MESSAGE_KIND_PROPERTY_REPORT,
            model=MODEL,
            device_id=f"dev-{d:05d}",
            ts_ms=ts_ms,
            quality=tpb.QUALITY_GOOD,
        )
        for p in range(props):
            msg.params[f"p{p}"].double_value = d * 0.5 + p + (ts_ms % 1000) / 1000
        out.append(msg)
    return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class Batches:
    """Serialized EdgeMessage{batch} bytes for any sequence, from a few prebuilt bodies
    (different timestamps), so that the edge side costs almost nothing."""

    def __init__(self, devices: int, props: int, variants: int = 16) -> None:
        base = 1_700_000_000_000
        self.bodies = []
        for v in range(variants):
            batch = edge_sync_pb2.TelemetryBatch(
                messages=batch_messages(devices, props, base + v * 1000)
            )
            self.bodies.append(batch.SerializeToString())
        self.values = devices * props
        self.devices = devices

    def encode(self, sequence: int) -> bytes:
        body = self.bodies[sequence % len(self.bodies)]
        inner = b"\x08" + _varint(sequence) + body
        return b"\x12" + _varint(len(inner)) + inner


# --------------------------------------------------------------------------- servers


class _NoopIngest:
    """A storage whose ingest stores nothing (the servicer ceiling)."""

    def __init__(self, inner: Storage) -> None:
        self._inner = inner

    def ingest(self, batch: IngestBatch, now_ms: int) -> IngestResult:
        return IngestResult(duplicate=False, stored_values=len(batch.values))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def _serve_registry(db: str, max_in_flight: int, noop: bool) -> None:
    from cloud_registry.server import commands_service, edge_sync_service
    from cloud_registry.server.principal import IdentityInterceptor

    storage: Storage = open_storage(f"sqlite:///{db}")
    storage.migrate()
    if noop:
        storage = cast(Storage, _NoopIngest(storage))
    hub = ChangeHub(storage)
    await hub.start()
    settings = RegistrySettings(sync_max_in_flight=max_in_flight, sync_max_batch_messages=20_000)
    ctx = ServiceContext(storage, hub, settings)
    server = aio.server(interceptors=[IdentityInterceptor()], options=OPTIONS)
    edge_sync_service.register(server, ctx)
    commands_service.register(server, ctx)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await _announce_and_wait(port)
    await server.stop(0.5)
    await hub.stop()
    storage.close()


async def _serve_echo() -> None:
    import grpc

    async def sync(
        requests: AsyncIterator[edge_sync_pb2.EdgeMessage], context: Any
    ) -> AsyncIterator[edge_sync_pb2.RegistryMessage]:
        async for message in requests:
            if message.HasField("hello"):
                yield edge_sync_pb2.RegistryMessage(
                    welcome=edge_sync_pb2.Welcome(max_in_flight=8, max_batch_messages=20_000)
                )
            else:
                batch = message.batch
                yield edge_sync_pb2.RegistryMessage(
                    ack=edge_sync_pb2.BatchAck(sequence=batch.sequence, stored=len(batch.messages))
                )

    handler = grpc.method_handlers_generic_handler(
        "community.registry.v1.EdgeSync",
        {
            "Sync": grpc.stream_stream_rpc_method_handler(
                sync,
                request_deserializer=edge_sync_pb2.EdgeMessage.FromString,
                response_serializer=edge_sync_pb2.RegistryMessage.SerializeToString,
            )
        },
    )
    server = aio.server(options=OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await _announce_and_wait(port)
    await server.stop(0.2)


async def _announce_and_wait(port: int) -> None:
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


class Server:
    """This script in server mode, as a subprocess."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *args],
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(REPO),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r}")
        self.target = f"127.0.0.1:{int(line.split()[1])}"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------- the edge


async def stream(target: str, batches: Batches, seconds: float) -> tuple[int, float]:
    """Stream batches for ``seconds`` within the window; (values acknowledged, elapsed s)."""
    async with aio.insecure_channel(target, options=OPTIONS) as channel:
        call = channel.stream_stream(
            METHOD,
            request_serializer=lambda data: data,
            response_deserializer=edge_sync_pb2.RegistryMessage.FromString,
        )(metadata=(("x-edge-id", EDGE),))
        hello = edge_sync_pb2.EdgeMessage(hello=edge_sync_pb2.Hello(edge_id=EDGE))
        await call.write(hello.SerializeToString())
        first: Any = await call.read()
        welcome = first.welcome
        window = max(1, welcome.max_in_flight)
        sequence = welcome.last_sequence
        outstanding = 0
        acked = 0
        room = asyncio.Event()
        done = asyncio.Event()

        async def read_acks() -> None:
            nonlocal outstanding, acked
            while True:
                message: Any = await call.read()
                if message is aio.EOF:
                    return
                if message.HasField("ack"):
                    ack = message.ack
                    if ack.rejected:
                        raise RuntimeError(f"rejected: {list(ack.rejected)[:3]}")
                    acked += 1
                    outstanding -= 1
                    room.set()
                    if outstanding == 0:
                        done.set()

        reader = asyncio.create_task(read_acks())
        start = time.perf_counter()
        stop_at = start + seconds
        while time.perf_counter() < stop_at:
            while outstanding >= window:
                room.clear()
                await room.wait()
            sequence += 1
            outstanding += 1
            done.clear()
            await call.write(batches.encode(sequence))
        if outstanding:
            await done.wait()
        elapsed = time.perf_counter() - start
        await call.done_writing()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader, 5)
        return acked * batches.values, elapsed


# --------------------------------------------------------------------------- ceilings


def storage_ceiling(path: str, batches: Batches, seconds: float) -> float:
    from cloud_registry.server.edge_sync_service import decode_batch

    storage: Storage = open_storage(f"sqlite:///{path}")
    allowed = {f"dev-{i:05d}": MODEL for i in range(batches.devices)}
    decoded = []
    for body in batches.bodies:
        batch = edge_sync_pb2.TelemetryBatch.FromString(body)
        decoded.append(decode_batch(batch.messages, allowed, lambda _m, _e: "info").values)
    count = 0
    sequence = 1_000_000
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        sequence += 1
        values = decoded[sequence % len(decoded)]
        storage.ingest(IngestBatch("ceiling-edge", sequence, values, ()), 1)
        count += len(values)
    elapsed = time.perf_counter() - start
    storage.close()
    return count / elapsed


def decode_rate(batches: Batches, seconds: float) -> float:
    from cloud_registry.server.edge_sync_service import decode_batch

    allowed = {f"dev-{i:05d}": MODEL for i in range(batches.devices)}
    count = 0
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds:
        message = edge_sync_pb2.EdgeMessage.FromString(batches.encode(i + 1))
        count += len(decode_batch(message.batch.messages, allowed, lambda _m, _e: "info").values)
        i += 1
    return count / (time.perf_counter() - start)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def history_rows(path: str) -> int:
    """History values stored: the engine keeps one row per report (device, timestamp) with its
    values as a JSON object, so count the object members."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:
        row = conn.execute(
            "SELECT coalesce(sum((SELECT count(*) FROM json_each(vals))), 0) FROM history_reports"
        ).fetchone()
        return int(row[0])


def run(args: argparse.Namespace) -> dict[str, Any]:
    batches = Batches(args.devices, args.props)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        db = str(Path(tmp) / "registry.db")
        seed(db, args.devices, args.props)
        ceiling_db = str(Path(tmp) / "ceiling.db")
        seed(ceiling_db, args.devices, args.props)

        decode = decode_rate(batches, min(3.0, args.seconds / 3))
        # As long as the end-to-end run: the engine slows down as its tables grow.
        storage_rate = storage_ceiling(ceiling_db, batches, args.seconds)

        echo = Server("--serve-echo")
        try:
            echo_values, echo_elapsed = asyncio.run(
                stream(echo.target, batches, min(5.0, args.seconds / 2))
            )
        finally:
            echo.stop()
        grpc_rate = echo_values / echo_elapsed

        noop_db = str(Path(tmp) / "noop.db")
        seed(noop_db, args.devices, args.props)
        noop = Server("--serve-registry", noop_db, "--noop-storage")
        try:
            noop_values, noop_elapsed = asyncio.run(
                stream(noop.target, batches, min(5.0, args.seconds / 2))
            )
        finally:
            noop.stop()
        servicer_rate = noop_values / noop_elapsed

        registry = Server("--serve-registry", db, "--max-in-flight", str(args.in_flight))
        try:
            cpu_before, wall_before = cpu_seconds(registry.proc.pid), time.perf_counter()
            values, elapsed = asyncio.run(stream(registry.target, batches, args.seconds))
            cpu = cpu_seconds(registry.proc.pid) - cpu_before
            wall = time.perf_counter() - wall_before
        finally:
            registry.stop()
        stored = history_rows(db)

    rate = values / elapsed
    return {
        "benchmark": "edge_sync_ingest_sqlite_durable",
        "values_per_s": round(rate),
        "target_values_per_s": TARGET_VALUES_PER_S,
        "meets_target": rate >= TARGET_VALUES_PER_S,
        "storage_ceiling_values_per_s": round(storage_rate),
        "grpc_ceiling_values_per_s": round(grpc_rate),
        "servicer_ceiling_values_per_s": round(servicer_rate),
        "decode_values_per_s": round(decode),
        "ratio_to_storage_ceiling": round(rate / storage_rate, 3),
        "ratio_to_grpc_ceiling": round(rate / grpc_rate, 3),
        "server_cpu_percent": round(100 * cpu / wall),
        "values_acknowledged": values,
        "stored_rows_check": stored == values,
        "seconds": round(elapsed, 2),
        "batch_values": batches.values,
        "devices_per_batch": args.devices,
        "props_per_report": args.props,
        "max_in_flight": args.in_flight,
        "machine": machine(),
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--props", type=int, default=20)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--serve-registry", metavar="DB")
    parser.add_argument("--max-in-flight", type=int, default=8)
    parser.add_argument("--noop-storage", action="store_true")
    parser.add_argument("--serve-echo", action="store_true")
    args = parser.parse_args(argv)
    if args.serve_registry:
        asyncio.run(_serve_registry(args.serve_registry, args.max_in_flight, args.noop_storage))
        return 0
    if args.serve_echo:
        asyncio.run(_serve_echo())
        return 0
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
