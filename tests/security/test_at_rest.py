"""Encryption at rest: the key file, the outbox codec seam, secrets, and a decoder fuzzer."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from security.at_rest import AesGcmCodec, FileKeyProvider, decrypt_secret, encrypt_secret
from security.errors import DecryptionError, KeyFilePermissionError, KeyStoreError


@pytest.fixture
def provider(tmp_path: Path) -> FileKeyProvider:
    return FileKeyProvider(tmp_path / "data.key")


def test_key_file_created_0600_and_reused(tmp_path: Path, provider: FileKeyProvider) -> None:
    path = tmp_path / "data.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_bytes()) == 32
    again = FileKeyProvider(path, create=False)
    assert again.key() == provider.key()
    assert again.key_id == provider.key_id


def test_key_file_loose_permissions_refused(tmp_path: Path, provider: FileKeyProvider) -> None:
    (tmp_path / "data.key").chmod(0o644)
    with pytest.raises(KeyFilePermissionError, match=r"data\.key.*0644"):
        FileKeyProvider(tmp_path / "data.key")


def test_key_file_missing_or_wrong_size(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match=r"does not exist"):
        FileKeyProvider(tmp_path / "none.key", create=False)
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 16)
    short.chmod(0o600)
    with pytest.raises(KeyStoreError, match=r"16 bytes"):
        FileKeyProvider(short)


def test_codec_round_trip_random_nonce(provider: FileKeyProvider) -> None:
    codec = AesGcmCodec(provider)
    assert codec.name == "aes-256-gcm/v1"
    a, b = codec.encode(b"payload"), codec.encode(b"payload")
    assert a != b
    assert len(a) == 1 + 12 + 7 + 16
    assert codec.decode(a) == codec.decode(b) == b"payload"
    assert codec.decode(codec.encode(b"")) == b""


def test_codec_matches_outbox_seam_structurally(provider: FileKeyProvider) -> None:
    # the seam (edge_agent.outbox_policy.PayloadCodec) is read here, not imported by security
    from edge_agent.outbox_policy import PayloadCodec

    codec: PayloadCodec = AesGcmCodec(provider)
    assert codec.decode(codec.encode(b"x")) == b"x"


def test_tampered_or_wrong_key_refused(tmp_path: Path, provider: FileKeyProvider) -> None:
    codec = AesGcmCodec(provider)
    blob = bytearray(codec.encode(b"secret reading"))
    blob[20] ^= 1
    with pytest.raises(DecryptionError, match=r"outbox payload: authentication failed"):
        codec.decode(bytes(blob))
    other = AesGcmCodec(FileKeyProvider(tmp_path / "other.key"))
    with pytest.raises(DecryptionError):
        other.decode(codec.encode(b"x"))


def test_associated_data_binds_use(provider: FileKeyProvider) -> None:
    blob = AesGcmCodec(provider).encode(b"x")
    with pytest.raises(DecryptionError):
        AesGcmCodec(provider, associated_data=b"other").decode(blob)
    with pytest.raises(DecryptionError):
        decrypt_secret(blob, provider, "outbox")


@pytest.mark.parametrize(
    ("blob", "match"),
    [(b"", "too short"), (b"\x02" + bytes(40), "version 2"), ("str", "not bytes")],
)
def test_malformed_blobs(provider: FileKeyProvider, blob: bytes, match: str) -> None:
    with pytest.raises(DecryptionError, match=match):
        AesGcmCodec(provider).decode(blob)


def test_secrets_bound_to_context(provider: FileKeyProvider) -> None:
    blob = encrypt_secret(b"mqtt-pass", provider, "mqtt")
    assert decrypt_secret(blob, provider, "mqtt") == b"mqtt-pass"
    with pytest.raises(DecryptionError, match=r"secret 'modbus'"):
        decrypt_secret(blob, provider, "modbus")


def test_wrong_size_key_provider() -> None:
    class Short:
        key_id = "short"

        def key(self) -> bytes:
            return b"k" * 16

    with pytest.raises(KeyStoreError, match=r"16 bytes"):
        AesGcmCodec(Short())


class _Fixed:
    key_id = "fixed"

    def key(self) -> bytes:
        return bytes(range(32))


CODEC = AesGcmCodec(_Fixed())


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_decoder_only_raises_decryption_error(data: bytes) -> None:
    with pytest.raises(DecryptionError):
        CODEC.decode(data)


@given(st.binary(max_size=2000))
def test_fuzz_round_trip(data: bytes) -> None:
    assert CODEC.decode(CODEC.encode(data)) == data
