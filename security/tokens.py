"""One-time enrollment bootstrap tokens (pure logic; the registry stores the records).

A token's text is ``ciot1.<token id>.<secret>``: the id (public, 8 random bytes, hex) finds
the record; only the SHA-256 of the secret (32 random bytes, base64url) is stored. The text is
printed once by ``cloud-registry edges add`` and never stored. :func:`check_token` compares in
constant time and checks expiry and single use; :func:`redeem` does it against a
:class:`TokenStore`, whose ``mark_used`` must be an atomic compare-and-set so that two
concurrent enrollments with one token cannot both succeed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final, Protocol

from security.errors import TokenExpired, TokenInvalid, TokenReused

__all__ = [
    "DEFAULT_TOKEN_TTL",
    "MemoryTokenStore",
    "TokenRecord",
    "TokenStore",
    "check_token",
    "new_token",
    "parse_token",
    "redeem",
]

DEFAULT_TOKEN_TTL: Final = timedelta(hours=24)
_PREFIX: Final = "ciot1"
_TOKEN = re.compile(r"ciot1\.([0-9a-f]{16})\.([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class TokenRecord:
    """What the registry stores for a token: never the secret, only its SHA-256 (hex)."""

    token_id: str
    secret_sha256: str
    edge_id: str
    site: str
    expires_at: datetime
    used_at: datetime | None = None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def new_token(
    edge_id: str, site: str, now: datetime, *, ttl: timedelta = DEFAULT_TOKEN_TTL
) -> tuple[str, TokenRecord]:
    """A fresh token: ``(text to print once, record to store)``."""
    token_id = secrets.token_hex(8)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
    record = TokenRecord(token_id, _hash(secret), edge_id, site, now + ttl)
    return f"{_PREFIX}.{token_id}.{secret}", record


def parse_token(text: str) -> tuple[str, str]:
    """``(token id, secret)`` of a token text, or :class:`TokenInvalid`."""
    match = _TOKEN.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise TokenInvalid("bootstrap token is malformed (expected ciot1.<id>.<secret>)")
    return match.group(1), match.group(2)


def check_token(text: str, record: TokenRecord, now: datetime) -> None:
    """Raise unless ``text`` matches ``record``, unexpired and unused, at ``now``."""
    token_id, secret = parse_token(text)
    where = f"bootstrap token {record.token_id} for edge {record.edge_id!r}"
    same_id = hmac.compare_digest(token_id, record.token_id)
    if not (hmac.compare_digest(_hash(secret), record.secret_sha256) and same_id):
        raise TokenInvalid(f"{where}: the token does not match")
    if record.used_at is not None:
        raise TokenReused(f"{where}: already used at {record.used_at.isoformat()}")
    if now >= record.expires_at:
        raise TokenExpired(f"{where}: expired at {record.expires_at.isoformat()}")


class TokenStore(Protocol):
    """Where records live (the registry's storage implements it)."""

    def get(self, token_id: str) -> TokenRecord | None: ...

    def mark_used(self, token_id: str, when: datetime) -> bool:
        """Set ``used_at`` if still unset; False if it was already set (atomic)."""
        ...


class MemoryTokenStore:
    """An in-memory :class:`TokenStore` (tests, single process)."""

    def __init__(self) -> None:
        self._records: dict[str, TokenRecord] = {}

    def add(self, record: TokenRecord) -> None:
        self._records[record.token_id] = record

    def get(self, token_id: str) -> TokenRecord | None:
        return self._records.get(token_id)

    def mark_used(self, token_id: str, when: datetime) -> bool:
        record = self._records.get(token_id)
        if record is None or record.used_at is not None:
            return False
        self._records[token_id] = replace(record, used_at=when)
        return True


def redeem(text: str, store: TokenStore, now: datetime) -> TokenRecord:
    """Check ``text`` against ``store`` and mark it used; returns the record (edge, site)."""
    token_id, _ = parse_token(text)
    record = store.get(token_id)
    if record is None:
        raise TokenInvalid(f"bootstrap token {token_id}: unknown")
    check_token(text, record, now)
    if not store.mark_used(token_id, now):
        raise TokenReused(f"bootstrap token {token_id} for edge {record.edge_id!r}: already used")
    return replace(record, used_at=now)
