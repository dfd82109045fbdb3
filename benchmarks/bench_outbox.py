"""Benchmark: the durable outbox (edge_agent/outbox.py) against SQLite's own ceiling.

Generates property reports of 10 float values (20 devices) and measures, in one process, on
files in a temporary directory (or ``--dir``):

* ``append_msgs_per_s``: :meth:`Outbox.append` in batches of ``--batch`` (500), each one
  committed transaction (WAL, ``synchronous=FULL``), protobuf encoding included;
* ``encode_msgs_per_s``: :func:`~thing_models.messages.to_bytes` alone (part of the above);
* ``read_ack_msgs_per_s``: the uplink's loop over the backlog: ``next_batch`` (decoding
  included), ``assign_sequence``, ``ack_sequence``, each a transaction;
* ``raw_insert_rows_per_s``: the ceiling: plain ``sqlite3`` ``executemany`` of the same
  encoded bytes, same batches, into a bare table with the same pragmas.

``ratio_append_to_raw`` compares the first with the last. Target: the outbox must not be the
bottleneck for 100,000 values/s, i.e. >= 10,000 messages/s of 10 values, appending and
draining. Prints one JSON line. Run: ``.venv/bin/python benchmarks/bench_outbox.py``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from benchlib import machine

from edge_agent.outbox import Outbox
from thing_models.messages import Message, MessageKind, new_message_id, to_bytes

TARGET_MSGS_PER_S = 10_000
VALUES_PER_MESSAGE = 10


def make_messages(count: int) -> list[Message]:
    rng = random.Random(20240611)
    names = [f"value_{i}" for i in range(VALUES_PER_MESSAGE)]
    start = 1_700_000_000_000
    return [
        Message(
            id=new_message_id(start + i),
            kind=MessageKind.PROPERTY_REPORT,
            model="com.acme.energy/meter-3p@1.2.0",
            device_id=f"meter-{i % 20:03d}",
            ts_ms=start + i,
            params={name: round(rng.uniform(-500, 500), 2) for name in names},
        )
        for i in range(count)
    ]


def raw_ceiling(path: Path, payloads: list[bytes], batch: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE bare (id INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL)")
    began = time.perf_counter()
    for start in range(0, len(payloads), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO bare (payload) VALUES (?)",
            [(p,) for p in payloads[start : start + batch]],
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - began
    conn.close()
    return len(payloads) / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=100_000, help="messages appended")
    parser.add_argument("--batch", type=int, default=500, help="messages per append/read")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go")
    args = parser.parse_args(argv)

    messages = make_messages(args.messages)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)

        began = time.perf_counter()
        payloads = [to_bytes(m) for m in messages]
        encode_rate = len(messages) / (time.perf_counter() - began)

        raw_rate = raw_ceiling(folder / "raw.db", payloads, args.batch)

        with Outbox(folder / "outbox.db", max_bytes=1 << 34, max_age_s=86_400) as outbox:
            began = time.perf_counter()
            for start in range(0, len(messages), args.batch):
                outbox.append(messages[start : start + args.batch])
            append_rate = len(messages) / (time.perf_counter() - began)
            stored_bytes = outbox.stats().bytes

            began = time.perf_counter()
            drained = 0
            while (batch := outbox.next_batch(args.batch, 1 << 24)) is not None:
                outbox.ack_sequence(outbox.assign_sequence(batch))
                drained += len(batch.messages)
            read_ack_rate = drained / (time.perf_counter() - began)
            assert drained == len(messages), (drained, len(messages))
            assert outbox.stats().rows == 0

    passed = append_rate >= TARGET_MSGS_PER_S and read_ack_rate >= TARGET_MSGS_PER_S
    result = {
        "benchmark": "outbox",
        "messages": len(messages),
        "values_per_message": VALUES_PER_MESSAGE,
        "batch": args.batch,
        "bytes_per_message": round(stored_bytes / len(messages), 1),
        "append_msgs_per_s": round(append_rate),
        "append_values_per_s": round(append_rate * VALUES_PER_MESSAGE),
        "encode_msgs_per_s": round(encode_rate),
        "read_ack_msgs_per_s": round(read_ack_rate),
        "raw_insert_rows_per_s": round(raw_rate),
        "ratio_append_to_raw": round(append_rate / raw_rate, 3),
        "target_msgs_per_s": TARGET_MSGS_PER_S,
        "passed": passed,
        "sqlite": sqlite3.sqlite_version,
        "python": sys.version.split()[0] + " " + platform.python_implementation(),
        "machine": machine(),
    }
    print(json.dumps(result))
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
