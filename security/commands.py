"""Signed command envelopes (sans-IO, pure): the registry signs, the edge verifies.

Wire format, version 1 (all integers big-endian, no padding, nothing after the signature)::

    body      := "CIOT" version:u8(=1) key_id:8 sequence:u64 expires_at_ms:u64 nonce:16
                 edge_len:u8 edge_id:utf8  device_len:u8 device_id:utf8
                 payload_len:u32 payload
    envelope  := body sig_len:u8 signature

``key_id`` is the first 8 bytes of SHA-256 over the signer's SubjectPublicKeyInfo (DER);
``signature`` is ECDSA P-256 / SHA-256 (DER) over ``"community-iot/command/v1\\0" + body``.
Ids are 1-255 bytes of UTF-8; the payload is at most 1 MiB.

:class:`CommandVerifier` checks, in this order: parse, known key, signature, target edge,
expiry (with a clock-skew tolerance; an expiry more than ``max_ttl`` ahead is refused too, which
bounds the replay memory), replay (nonce seen before; sequence not above the last accepted one:
sequences are strictly increasing per edge, the registry sends one ordered stream). Only then
is the command recorded in the :class:`ReplayState` and returned.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from security.errors import (
    ExpiredCommand,
    MalformedCommand,
    ReplayedCommand,
    TamperedCommand,
    UnknownSigningKey,
    WrongTarget,
)
from security.identity import load_certificate
from security.replay import MemoryReplayState, ReplayState

__all__ = [
    "MAX_PAYLOAD",
    "CommandSigner",
    "CommandVerifier",
    "VerifiedCommand",
    "key_id",
]

MAGIC: Final = b"CIOT"
VERSION: Final = 1
MAX_PAYLOAD: Final = 1 << 20
NONCE_LEN: Final = 16
_DOMAIN: Final = b"community-iot/command/v1\x00"
_HEAD = struct.Struct(">4sB8sQQ16s")
_ECDSA = ec.ECDSA(hashes.SHA256())


def key_id(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """First 8 bytes of SHA-256 over the key's SubjectPublicKeyInfo."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()[:8]


def _ms(when: datetime) -> int:
    if when.tzinfo is None:
        raise ValueError("command times must be timezone-aware")
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class VerifiedCommand:
    """A command that passed every check."""

    edge_id: str
    device_id: str
    payload: bytes
    sequence: int
    nonce: bytes
    expires_at_ms: int
    key_id: bytes


def _id_bytes(value: str, what: str) -> bytes:
    data = value.encode("utf-8")
    if not 1 <= len(data) <= 255:
        raise ValueError(f"{what} must be 1-255 bytes of UTF-8, got {len(data)}")
    return data


class CommandSigner:
    """Signs command envelopes with the registry's command key."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if private_key.curve.name != "secp256r1":
            raise ValueError("the command key must be EC P-256")
        self._key = private_key
        self.key_id = key_id(private_key.public_key())

    def sign(
        self,
        edge_id: str,
        device_id: str,
        payload: bytes,
        sequence: int,
        expires_at: datetime,
        nonce: bytes | None = None,
    ) -> bytes:
        """The envelope bytes; ``nonce`` defaults to 16 random bytes."""
        nonce = os.urandom(NONCE_LEN) if nonce is None else nonce
        if len(nonce) != NONCE_LEN:
            raise ValueError(f"nonce must be {NONCE_LEN} bytes, got {len(nonce)}")
        if not 0 <= sequence < 1 << 64:
            raise ValueError(f"sequence {sequence} out of range")
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
        edge, device = _id_bytes(edge_id, "edge_id"), _id_bytes(device_id, "device_id")
        body = b"".join(
            (
                _HEAD.pack(MAGIC, VERSION, self.key_id, sequence, _ms(expires_at), nonce),
                bytes([len(edge)]),
                edge,
                bytes([len(device)]),
                device,
                struct.pack(">I", len(payload)),
                payload,
            )
        )
        signature = self._key.sign(_DOMAIN + body, _ECDSA)
        return body + bytes([len(signature)]) + signature


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise MalformedCommand(f"command envelope truncated in {what} at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def text(self, what: str) -> str:
        raw = self.take(self.take(1, what)[0], what)
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedCommand(f"command envelope: {what} is not UTF-8") from exc
        if not value:
            raise MalformedCommand(f"command envelope: empty {what}")
        return value


def _parse(data: bytes) -> tuple[VerifiedCommand, bytes, bytes]:
    """``(command, signed body, signature)``, or :class:`MalformedCommand`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedCommand(f"command envelope is {type(data).__name__}, not bytes")
    data = bytes(data)
    reader = _Reader(data)
    magic, version, kid, seq, expires, nonce = _HEAD.unpack(reader.take(_HEAD.size, "header"))
    if magic != MAGIC:
        raise MalformedCommand("command envelope: bad magic (not a community-iot command)")
    if version != VERSION:
        raise MalformedCommand(f"command envelope: unsupported version {version}")
    edge = reader.text("edge_id")
    device = reader.text("device_id")
    (length,) = struct.unpack(">I", reader.take(4, "payload length"))
    if length > MAX_PAYLOAD:
        raise MalformedCommand(f"command envelope: payload of {length} bytes exceeds limit")
    payload = reader.take(length, "payload")
    body_end = reader.pos
    signature = reader.take(reader.take(1, "signature length")[0], "signature")
    if reader.pos != len(data):
        raise MalformedCommand(
            f"command envelope: {len(data) - reader.pos} unexpected bytes after the signature"
        )
    command = VerifiedCommand(edge, device, payload, seq, nonce, expires, kid)
    return command, data[:body_end], signature


def _now() -> datetime:
    return datetime.now(UTC)


class CommandVerifier:
    """Verifies envelopes addressed to one edge; keeps replay state between calls."""

    def __init__(
        self,
        public_keys: Iterable[ec.EllipticCurvePublicKey],
        edge_id: str,
        replay_state: ReplayState | None = None,
        *,
        clock: Callable[[], datetime] = _now,
        skew: timedelta = timedelta(seconds=30),
        max_ttl: timedelta = timedelta(hours=1),
    ) -> None:
        self._keys = {key_id(k): k for k in public_keys}
        if not self._keys:
            raise ValueError("CommandVerifier needs at least one public key")
        self.edge_id = edge_id
        self.state: ReplayState = MemoryReplayState() if replay_state is None else replay_state
        self._clock = clock
        self._skew_ms = int(skew.total_seconds() * 1000)
        self._max_ttl_ms = int(max_ttl.total_seconds() * 1000)

    @classmethod
    def from_certificates(
        cls,
        cert_pems: Iterable[bytes],
        edge_id: str,
        replay_state: ReplayState | None = None,
        *,
        clock: Callable[[], datetime] = _now,
        skew: timedelta = timedelta(seconds=30),
        max_ttl: timedelta = timedelta(hours=1),
    ) -> CommandVerifier:
        """Trust the keys of these certificates (e.g. the registry's command-signing cert)."""
        keys = []
        for i, pem in enumerate(cert_pems):
            key = load_certificate(pem, f"command signer certificate {i}").public_key()
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise ValueError(f"command signer certificate {i}: not an EC key")
            keys.append(key)
        return cls(keys, edge_id, replay_state, clock=clock, skew=skew, max_ttl=max_ttl)

    def verify(self, envelope: bytes) -> VerifiedCommand:
        """The command, once every check passed (and recorded as seen); else CommandRejected."""
        command, body, signature = _parse(envelope)
        where = f"command seq {command.sequence} for edge {command.edge_id!r}"
        key = self._keys.get(command.key_id)
        if key is None:
            raise UnknownSigningKey(f"{where}: signed by unknown key {command.key_id.hex()}")
        try:
            key.verify(signature, _DOMAIN + body, _ECDSA)
        except (InvalidSignature, ValueError) as exc:
            raise TamperedCommand(f"{where}: signature does not verify") from exc
        if command.edge_id != self.edge_id:
            raise WrongTarget(f"{where}: addressed to another edge, this is {self.edge_id!r}")
        now_ms = _ms(self._clock())
        if now_ms > command.expires_at_ms + self._skew_ms:
            raise ExpiredCommand(
                f"{where}: expired {now_ms - command.expires_at_ms} ms ago "
                f"(skew allowed {self._skew_ms} ms)"
            )
        if command.expires_at_ms - now_ms > self._max_ttl_ms + self._skew_ms:
            raise ExpiredCommand(f"{where}: expiry lies more than {self._max_ttl_ms} ms ahead")
        if self.state.seen(command.nonce):
            raise ReplayedCommand(f"{where}: nonce {command.nonce.hex()} already seen")
        last = self.state.last_sequence()
        if command.sequence <= last:
            raise ReplayedCommand(f"{where}: sequence not above the last accepted ({last})")
        self.state.record(
            command.sequence, command.nonce, command.expires_at_ms, now_ms - self._skew_ms
        )
        return command
