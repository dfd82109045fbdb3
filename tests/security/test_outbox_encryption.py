"""AesGcmCodec plugged into the real outbox: stored encrypted, tampered rows quarantined."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge_agent.outbox import Outbox, OutboxError
from security.at_rest import AesGcmCodec, FileKeyProvider
from thing_models.messages import Message, MessageKind, new_message_id

START = 1_700_000_000_000


def reports(n: int) -> list[Message]:
    return [
        Message(
            id=new_message_id(START + i),
            kind=MessageKind.PROPERTY_REPORT,
            model="com.acme.energy/meter-3p@1.2.0",
            device_id="meter-001",
            ts_ms=START + i,
            params={"secret_reading": 1234.5 + i},
        )
        for i in range(n)
    ]


def open_outbox(path: Path, codec: AesGcmCodec | None) -> Outbox:
    return Outbox(path, max_bytes=1 << 24, max_age_s=1e9, codec=codec, clock=lambda: START / 1000)


def test_encrypted_outbox_round_trip_and_tamper(tmp_path: Path) -> None:
    codec = AesGcmCodec(FileKeyProvider(tmp_path / "data.key"))
    path = tmp_path / "outbox.db"
    with open_outbox(path, codec) as outbox:
        outbox.append(reports(3))
    conn = sqlite3.connect(path)
    stored = [bytes(p) for (p,) in conn.execute("SELECT payload FROM outbox ORDER BY id")]
    assert all(b"secret_reading" not in p for p in stored)
    with conn:
        conn.execute("UPDATE outbox SET payload = ? WHERE id = 2", (stored[1][:-1] + b"\x00",))
    conn.close()
    with open_outbox(path, codec) as outbox:
        batch = outbox.next_batch(10, 1 << 20)
        assert batch is not None
        assert [m.params["secret_reading"] for m in batch.messages] == [1234.5, 1236.5]
        (bad,) = outbox.quarantined()
        assert "DecryptionError" in bad.error
    with pytest.raises(OutboxError, match="aes-256-gcm/v1"):
        open_outbox(path, None)
