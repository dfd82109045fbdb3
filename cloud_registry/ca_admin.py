"""The registry's CA folder: what ``cloud-registry ca ...`` makes, and API keys' text.

A CA folder (``--ca-dir``) holds, besides the files of :func:`security.ca.init_ca`
(``root.key`` to be moved offline, ``root.pem``, ``intermediate.key``, ``intermediate.pem``)::

    command.key   the command-signing key (P-256, 0600): signs every command sent to an edge
    command.pem   its public key, handed to edges at enrollment
    server.key    the registry's TLS key (0600)        (cloud-registry ca server-cert)
    server.pem    the registry's TLS certificate (leaf, issued by the intermediate)

API keys read ``ciotk1.<key id: 16 hex>.<secret: 43 base64url>``; only the secret's SHA-256
is stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from security.ca import (
    DEFAULT_LEAF_VALIDITY,
    CertificateAuthority,
    Clock,
    init_ca,
    rotate_intermediate,
    utc_now,
)
from security.errors import KeyStoreError
from security.identity import generate_key, load_private_key

__all__ = [
    "API_SCOPES",
    "COMMAND_KEY",
    "COMMAND_PUB",
    "SERVER_CERT",
    "SERVER_KEY",
    "api_key_matches",
    "init_registry_ca",
    "issue_server_certificate",
    "new_api_key",
    "parse_api_key",
    "rotate_registry_intermediate",
]

COMMAND_KEY = "command.key"
COMMAND_PUB = "command.pem"
SERVER_KEY = "server.key"
SERVER_CERT = "server.pem"
#: Scopes an integrator's API key can carry (each limited to the key's site).
API_SCOPES = frozenset({"read-models", "read-twins", "write-desired", "invoke-services", "admin"})
_API_KEY = re.compile(r"ciotk1\.([0-9a-f]{16})\.([A-Za-z0-9_-]{43})")


def init_registry_ca(folder: Path, name: str, *, clock: Clock = utc_now) -> CertificateAuthority:
    """A new CA (root + intermediate) and the command-signing key in ``folder``."""
    ca = init_ca(folder, name, clock=clock)
    key = generate_key(folder / COMMAND_KEY)
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (folder / COMMAND_PUB).write_bytes(pub)
    return ca


def issue_server_certificate(
    folder: Path,
    hosts: Iterable[str],
    *,
    validity: timedelta = DEFAULT_LEAF_VALIDITY,
    clock: Clock = utc_now,
) -> Path:
    """Make ``server.key`` (kept if present) and a new ``server.pem`` for ``hosts``."""
    names = list(hosts)
    if not names:
        raise KeyStoreError(f"{folder}: a server certificate needs at least one --host")
    ca = CertificateAuthority.load(folder, clock=clock)
    key_path = folder / SERVER_KEY
    key = load_private_key(key_path) if key_path.exists() else generate_key(key_path)
    cert = ca.issue_server_certificate(key.public_key(), names, validity=validity)
    (folder / SERVER_CERT).write_bytes(cert)
    return folder / SERVER_CERT


def rotate_registry_intermediate(folder: Path, *, clock: Clock = utc_now) -> CertificateAuthority:
    """A new issuing intermediate (needs ``root.key`` back for the time of the rotation)."""
    return rotate_intermediate(folder, clock=clock)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def new_api_key() -> tuple[str, str, str]:
    """``(text to print once, key id, SHA-256 of the secret)``."""
    key_id = secrets.token_hex(8)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
    return f"ciotk1.{key_id}.{secret}", key_id, _digest(secret)


def parse_api_key(text: str) -> tuple[str, str] | None:
    """``(key id, secret)``, or None when ``text`` is not an API key."""
    match = _API_KEY.fullmatch(text.strip())
    return (match.group(1), match.group(2)) if match else None


def api_key_matches(secret: str, secret_sha256: str) -> bool:
    """Constant-time comparison of a presented secret with the stored digest."""
    return hmac.compare_digest(_digest(secret), secret_sha256)
