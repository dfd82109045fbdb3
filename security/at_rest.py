"""Encryption at rest (AES-256-GCM) behind a key-provider interface.

* :class:`KeyProvider` gives a 32-byte key and its id; :class:`FileKeyProvider` keeps it in a
  0600 file (created on first use). A TPM- or KMS-backed provider implements the same protocol.
* :class:`AesGcmCodec` matches the outbox's ``PayloadCodec`` seam
  (``edge_agent.outbox_policy.PayloadCodec``: ``name``, ``encode``, ``decode``) structurally,
  without importing the edge agent.
* :func:`encrypt_secret` / :func:`decrypt_secret` protect secret files, bound to a context name.

Stored format: ``version:u8(=1) nonce:12 ciphertext||tag:16``, a random 96-bit nonce per
payload. The associated data binds a blob to its use (``"outbox"``, ``"secret:<context>"``), so
a blob cannot be moved from one use to another. Decoding failures raise
:class:`~security.errors.DecryptionError`, never anything else.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from security.errors import DecryptionError, KeyStoreError
from security.files import read_private, write_private

__all__ = [
    "AesGcmCodec",
    "FileKeyProvider",
    "KeyProvider",
    "decrypt_secret",
    "encrypt_secret",
]

KEY_LEN: Final = 32
NONCE_LEN: Final = 12
TAG_LEN: Final = 16
VERSION: Final = 1
_OVERHEAD: Final = 1 + NONCE_LEN + TAG_LEN


class KeyProvider(Protocol):
    """Holds a 256-bit data key (a file, a TPM, a KMS)."""

    @property
    def key_id(self) -> str: ...

    def key(self) -> bytes: ...


class FileKeyProvider:
    """A 32-byte key in a 0600 file, created on first use; loose permissions are refused."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        if not path.exists():
            if not create:
                raise KeyStoreError(f"{path}: key file does not exist")
            write_private(path, os.urandom(KEY_LEN))
        data = read_private(path)
        if len(data) != KEY_LEN:
            raise KeyStoreError(f"{path}: key file holds {len(data)} bytes, expected {KEY_LEN}")
        self._key = data

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"community-iot key id\0" + self._key).hexdigest()[:16]

    def key(self) -> bytes:
        return self._key


def _seal(aead: AESGCM, data: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_LEN)
    return bytes([VERSION]) + nonce + aead.encrypt(nonce, data, aad)


def _open(aead: AESGCM, blob: bytes, aad: bytes, where: str) -> bytes:
    if not isinstance(blob, bytes):
        raise DecryptionError(f"{where}: stored value is {type(blob).__name__}, not bytes")
    if len(blob) < _OVERHEAD:
        raise DecryptionError(f"{where}: {len(blob)} bytes is too short to be encrypted data")
    if blob[0] != VERSION:
        raise DecryptionError(f"{where}: unknown format version {blob[0]}")
    try:
        return aead.decrypt(blob[1 : 1 + NONCE_LEN], blob[1 + NONCE_LEN :], aad)
    except InvalidTag as exc:
        raise DecryptionError(f"{where}: authentication failed (wrong key or altered)") from exc


class AesGcmCodec:
    """Outbox payload codec: AES-256-GCM, associated data ``b"outbox"`` (or as given)."""

    def __init__(self, provider: KeyProvider, *, associated_data: bytes = b"outbox") -> None:
        key = provider.key()
        if len(key) != KEY_LEN:
            raise KeyStoreError(f"key {provider.key_id}: {len(key)} bytes, expected {KEY_LEN}")
        self._aead = AESGCM(key)
        self._aad = associated_data

    @property
    def name(self) -> str:
        return "aes-256-gcm/v1"

    def encode(self, data: bytes) -> bytes:
        return _seal(self._aead, data, self._aad)

    def decode(self, data: bytes) -> bytes:
        return _open(self._aead, data, self._aad, "outbox payload")


def encrypt_secret(plaintext: bytes, provider: KeyProvider, context: str) -> bytes:
    """Encrypt a secret for ``context`` (e.g. ``"mqtt-password"``)."""
    return _seal(AESGCM(provider.key()), plaintext, f"secret:{context}".encode())


def decrypt_secret(blob: bytes, provider: KeyProvider, context: str) -> bytes:
    """Decrypt a secret made by :func:`encrypt_secret` for the same ``context``."""
    return _open(AESGCM(provider.key()), blob, f"secret:{context}".encode(), f"secret {context!r}")
