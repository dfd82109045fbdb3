"""Signed command envelopes: round trip, every refusal, replay state, and a fuzzer."""

from __future__ import annotations

import json
import stat
import struct
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from security.ca import CertificateAuthority
from security.commands import CommandSigner, CommandVerifier, VerifiedCommand
from security.errors import (
    CommandRejected,
    ExpiredCommand,
    MalformedCommand,
    ReplayedCommand,
    StateFileError,
    TamperedCommand,
    UnknownSigningKey,
    WrongTarget,
)
from security.replay import JsonFileReplayState, MemoryReplayState

from .conftest import NOW, Clock

KEY = ec.generate_private_key(ec.SECP256R1())
SIGNER = CommandSigner(KEY)
EXPIRES = NOW + timedelta(minutes=5)


PAYLOAD = b'{"set":{"relay":true}}'


def envelope(
    seq: int = 1,
    *,
    edge: str = "gw-01",
    nonce: bytes | None = None,
    expires: datetime = EXPIRES,
) -> bytes:
    return SIGNER.sign(edge, "meter-1", PAYLOAD, seq, expires, nonce)


@pytest.fixture
def verifier(clock: Clock) -> CommandVerifier:
    return CommandVerifier([KEY.public_key()], "gw-01", clock=clock)


def test_round_trip(verifier: CommandVerifier) -> None:
    cmd = verifier.verify(envelope(7, nonce=b"n" * 16))
    assert cmd == VerifiedCommand(
        "gw-01",
        "meter-1",
        PAYLOAD,
        7,
        b"n" * 16,
        int(EXPIRES.timestamp() * 1000),
        SIGNER.key_id,
    )


def test_format_is_documented_layout() -> None:
    data = SIGNER.sign("e", "d", b"P", 2, EXPIRES, b"\x01" * 16)
    magic, version, kid, seq, _exp, nonce = struct.unpack(">4sB8sQQ16s", data[:45])
    assert (magic, version, kid, seq, nonce) == (b"CIOT", 1, SIGNER.key_id, 2, b"\x01" * 16)
    assert data[45:51] == b"\x01e\x01d\x00\x00"
    assert data[51:54] == b"\x00\x01P"
    assert data[54] == len(data) - 55


def test_tampered_each_signed_byte(verifier: CommandVerifier) -> None:
    good = envelope()
    body_len = 45 + 1 + len("gw-01") + 1 + len("meter-1") + 4 + len(PAYLOAD)
    for i in range(13, body_len):  # everything after magic/version/key id
        bad = bytearray(good)
        bad[i] ^= 0x40
        with pytest.raises(CommandRejected):
            verifier.verify(bytes(bad))
    payload_flip = bytearray(good)
    payload_flip[good.index(b"relay")] ^= 0x01
    with pytest.raises(TamperedCommand, match=r"signature"):
        verifier.verify(bytes(payload_flip))


def test_tampered_signature(verifier: CommandVerifier) -> None:
    bad = bytearray(envelope())
    bad[-5] ^= 0xFF
    with pytest.raises(TamperedCommand):
        verifier.verify(bytes(bad))


def test_other_key(clock: Clock) -> None:
    other = CommandSigner(ec.generate_private_key(ec.SECP256R1()))
    verifier = CommandVerifier([KEY.public_key()], "gw-01", clock=clock)
    with pytest.raises(UnknownSigningKey):
        verifier.verify(other.sign("gw-01", "d", b"", 1, EXPIRES))
    # a forged key id pointing at the trusted key does not help
    forged = bytearray(other.sign("gw-01", "d", b"", 1, EXPIRES))
    forged[5:13] = SIGNER.key_id
    with pytest.raises(TamperedCommand):
        verifier.verify(bytes(forged))


def test_key_rotation_trusts_both(clock: Clock) -> None:
    new_key = ec.generate_private_key(ec.SECP256R1())
    verifier = CommandVerifier([KEY.public_key(), new_key.public_key()], "gw-01", clock=clock)
    verifier.verify(envelope(1))
    verifier.verify(CommandSigner(new_key).sign("gw-01", "d", b"", 2, EXPIRES))


def test_from_certificates(ca: CertificateAuthority, clock: Clock) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.issue_server_certificate(key.public_key(), ["127.0.0.1"])
    verifier = CommandVerifier.from_certificates([cert], "gw-01", clock=clock)
    assert verifier.verify(CommandSigner(key).sign("gw-01", "d", b"x", 1, EXPIRES)).payload == b"x"


def test_wrong_edge(verifier: CommandVerifier) -> None:
    with pytest.raises(WrongTarget, match=r"gw-02.*this is 'gw-01'"):
        verifier.verify(envelope(edge="gw-02"))


def test_expired_with_skew(verifier: CommandVerifier, clock: Clock) -> None:
    clock.now = EXPIRES + timedelta(seconds=30)  # exactly at the skew edge: accepted
    verifier.verify(envelope(1))
    clock.now = EXPIRES + timedelta(seconds=30, milliseconds=1)
    with pytest.raises(ExpiredCommand, match=r"expired"):
        verifier.verify(envelope(2))


def test_expiry_too_far_ahead(verifier: CommandVerifier) -> None:
    with pytest.raises(ExpiredCommand, match=r"ahead"):
        verifier.verify(envelope(expires=NOW + timedelta(hours=2)))


def test_replayed_envelope(verifier: CommandVerifier) -> None:
    data = envelope(1)
    verifier.verify(data)
    with pytest.raises(ReplayedCommand, match=r"nonce"):
        verifier.verify(data)


def test_reused_nonce_with_new_sequence(verifier: CommandVerifier) -> None:
    verifier.verify(envelope(1, nonce=b"x" * 16))
    with pytest.raises(ReplayedCommand, match=r"nonce"):
        verifier.verify(envelope(2, nonce=b"x" * 16))


def test_old_and_duplicate_sequence(verifier: CommandVerifier) -> None:
    verifier.verify(envelope(5))
    with pytest.raises(ReplayedCommand, match=r"sequence not above.*\(5\)"):
        verifier.verify(envelope(5))
    with pytest.raises(ReplayedCommand):
        verifier.verify(envelope(4))
    verifier.verify(envelope(6))


def test_rejected_commands_do_not_touch_state(verifier: CommandVerifier) -> None:
    with pytest.raises(WrongTarget):
        verifier.verify(envelope(9, edge="gw-02"))
    assert verifier.state.last_sequence() == -1
    verifier.verify(envelope(1))


def test_memory_state_is_bounded(clock: Clock) -> None:
    state = MemoryReplayState(max_nonces=10)
    verifier = CommandVerifier([KEY.public_key()], "gw-01", state, clock=clock)
    for seq in range(1, 51):
        verifier.verify(envelope(seq, expires=NOW + timedelta(seconds=seq)))
    assert len(state) == 10
    clock.advance(timedelta(minutes=10))  # all expired: forgotten on the next record
    verifier.verify(envelope(100, expires=clock() + timedelta(minutes=1)))
    assert len(state) == 1
    with pytest.raises(ValueError, match=r"max_nonces"):
        MemoryReplayState(0)


def test_json_state_persists(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "replay.json"
    first = CommandVerifier([KEY.public_key()], "gw-01", JsonFileReplayState(path), clock=clock)
    data = envelope(3)
    first.verify(data)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = CommandVerifier([KEY.public_key()], "gw-01", JsonFileReplayState(path), clock=clock)
    with pytest.raises(ReplayedCommand):
        again.verify(data)
    with pytest.raises(ReplayedCommand, match=r"sequence"):
        again.verify(envelope(2))
    again.verify(envelope(4))


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        b'{"version": 2}',
        b'{"version":1,"last_sequence":"x","nonces":{}}',
        b'{"version":1,"last_sequence":1,"nonces":{"zz":1}}',
    ],
)
def test_json_state_corrupt(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "replay.json"
    path.write_bytes(content)
    with pytest.raises(StateFileError, match=r"replay\.json"):
        JsonFileReplayState(path)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "truncated in header"),
        (b"XXXX" + bytes(41), "bad magic"),
        (b"CIOT\x02" + bytes(40), "version 2"),
        (b"CIOT\x01" + bytes(40) + b"\x00", "empty edge_id"),
        (b"CIOT\x01" + bytes(40) + b"\x01\xff", "not UTF-8"),
        (b"CIOT\x01" + bytes(40) + b"\x01e\x01d\xff\xff\xff\xff", "exceeds limit"),
        (b"CIOT\x01" + bytes(40) + b"\x01e\x01d\x00\x00\x00\x05ab", "truncated in payload"),
    ],
)
def test_malformed(verifier: CommandVerifier, data: bytes, match: str) -> None:
    with pytest.raises(MalformedCommand, match=match):
        verifier.verify(data)


def test_trailing_bytes(verifier: CommandVerifier) -> None:
    with pytest.raises(MalformedCommand, match=r"after the signature"):
        verifier.verify(envelope() + b"\x00")


def test_not_bytes(verifier: CommandVerifier) -> None:
    with pytest.raises(MalformedCommand):
        verifier.verify("text")  # type: ignore[arg-type]


def test_signer_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"nonce"):
        SIGNER.sign("e", "d", b"", 1, EXPIRES, b"short")
    with pytest.raises(ValueError, match=r"edge_id"):
        SIGNER.sign("", "d", b"", 1, EXPIRES)
    with pytest.raises(ValueError, match=r"sequence"):
        SIGNER.sign("e", "d", b"", -1, EXPIRES)
    with pytest.raises(ValueError, match=r"timezone"):
        SIGNER.sign("e", "d", b"", 1, EXPIRES.replace(tzinfo=None))
    with pytest.raises(ValueError, match=r"P-256"):
        CommandSigner(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ValueError, match=r"at least one"):
        CommandVerifier([], "e")


GOOD = envelope(1)


HEADER = b"CIOT\x01" + SIGNER.key_id


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=400), st.binary(max_size=400).map(HEADER.__add__)))
def test_fuzz_any_bytes(data: bytes) -> None:
    """Any bytes (also behind a valid header): refused with CommandRejected, nothing else."""
    verifier = CommandVerifier([KEY.public_key()], "gw-01", clock=Clock())
    with pytest.raises(CommandRejected):
        verifier.verify(data)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, len(GOOD) - 1), st.integers(1, 255), st.binary(max_size=8))
def test_fuzz_mutations_of_a_good_envelope(pos: int, xor: int, tail: bytes) -> None:
    verifier = CommandVerifier([KEY.public_key()], "gw-01", clock=Clock())
    bad = bytearray(GOOD)
    bad[pos] ^= xor
    with pytest.raises(CommandRejected):
        verifier.verify(bytes(bad) + tail)


def test_state_file_is_json(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "r.json"
    CommandVerifier([KEY.public_key()], "gw-01", JsonFileReplayState(path), clock=clock).verify(
        envelope(2, nonce=b"\x02" * 16)
    )
    doc = json.loads(path.read_text())
    assert doc["last_sequence"] == 2
    assert ("02" * 16) in doc["nonces"]
