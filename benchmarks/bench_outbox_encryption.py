"""Benchmark: the cost of encryption at rest on the durable outbox.

Appends and drains the same property reports (10 float values each, as in
``bench_outbox.py``) through :class:`edge_agent.outbox.Outbox` twice, once with the default
``IdentityCodec`` and once with :class:`security.at_rest.AesGcmCodec` (AES-256-GCM, a random
96-bit nonce per payload), and measures:

* ``{identity,aes_gcm}_append_msgs_per_s`` and ``..._read_ack_msgs_per_s``: as in
  ``bench_outbox.py`` (batches of ``--batch``, each one committed transaction);
* ``{identity,aes_gcm}_cycle_msgs_per_s``: messages over the time to append *and* drain them;
* ``aes_gcm_cost``: ``1 - aes_gcm_cycle / identity_cycle``, the throughput lost (target < 0.20);
* ``raw_aesgcm_encrypt_msgs_per_s``: ``AESGCM.encrypt`` alone on the same payloads, the ceiling.

The two runs alternate ``--rounds`` times (best of each kept) to even out a noisy machine.
Prints one JSON line. Run: ``.venv/bin/python benchmarks/bench_outbox_encryption.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench_outbox import VALUES_PER_MESSAGE, make_messages
from benchlib import machine
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge_agent.outbox import Outbox
from edge_agent.outbox_policy import IdentityCodec, PayloadCodec
from security.at_rest import AesGcmCodec, FileKeyProvider
from thing_models.messages import Message, to_bytes

TARGET_COST = 0.20


def run(folder: Path, codec: PayloadCodec, messages: list[Message], batch: int) -> dict[str, float]:
    path = folder / f"outbox-{codec.name.replace('/', '_')}-{time.monotonic_ns()}.db"
    with Outbox(path, max_bytes=1 << 34, max_age_s=86_400, codec=codec) as outbox:
        began = time.perf_counter()
        for start in range(0, len(messages), batch):
            outbox.append(messages[start : start + batch])
        append_s = time.perf_counter() - began
        began = time.perf_counter()
        drained = 0
        while (got := outbox.next_batch(batch, 1 << 24)) is not None:
            outbox.ack_sequence(outbox.assign_sequence(got))
            drained += len(got.messages)
        read_s = time.perf_counter() - began
        assert drained == len(messages), (drained, len(messages))
        assert outbox.quarantined() == []
    path.unlink()
    n = len(messages)
    return {"append": n / append_s, "read_ack": n / read_s, "cycle": n / (append_s + read_s)}


def raw_encrypt_rate(payloads: list[bytes]) -> float:
    aead = AESGCM(os.urandom(32))
    began = time.perf_counter()
    for payload in payloads:
        aead.encrypt(os.urandom(12), payload, b"outbox")
    return len(payloads) / (time.perf_counter() - began)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=50_000, help="messages per run")
    parser.add_argument("--batch", type=int, default=500, help="messages per append/read")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each codec")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go")
    args = parser.parse_args(argv)

    messages = make_messages(args.messages)
    payloads = [to_bytes(m) for m in messages]
    best: dict[str, dict[str, float]] = {"identity": {}, "aes_gcm": {}}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        codecs: dict[str, PayloadCodec] = {
            "identity": IdentityCodec(),
            "aes_gcm": AesGcmCodec(FileKeyProvider(folder / "data.key")),
        }
        for _ in range(args.rounds):
            for name, codec in codecs.items():
                for key, rate in run(folder, codec, messages, args.batch).items():
                    best[name][key] = max(best[name].get(key, 0.0), rate)
    raw = raw_encrypt_rate(payloads)

    cost = 1 - best["aes_gcm"]["cycle"] / best["identity"]["cycle"]
    result: dict[str, object] = {
        "benchmark": "outbox_encryption",
        "messages": len(messages),
        "values_per_message": VALUES_PER_MESSAGE,
        "batch": args.batch,
        "rounds": args.rounds,
        "bytes_per_message": round(sum(map(len, payloads)) / len(payloads), 1),
    }
    for name, rates in best.items():
        for key, rate in rates.items():
            result[f"{name}_{key}_msgs_per_s"] = round(rate)
    result |= {
        "raw_aesgcm_encrypt_msgs_per_s": round(raw),
        "aes_gcm_cost": round(cost, 3),
        "target_cost": TARGET_COST,
        "passed": cost < TARGET_COST,
        "python": sys.version.split()[0] + " " + platform.python_implementation(),
        "machine": machine(),
    }
    print(json.dumps(result))
    return 0 if cost < TARGET_COST else 1


if __name__ == "__main__":
    raise SystemExit(main())
