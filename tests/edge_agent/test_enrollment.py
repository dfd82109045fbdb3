"""Enrollment and renewal against a TLS EnrollmentService on 127.0.0.1 (the security library's
CA behind a small stub, tests/edge_agent/enrollment_stub.py): the identity folder's files and
modes, every refusal (used, expired, malformed token; wrong CA file; unreachable registry;
loose permissions; a token for another edge; a certificate for another key), renewal over
mTLS, and the renewer at two thirds of the lifetime with an injectable clock."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.enrollment import (
    BadEnrollmentResponse,
    CertificateRenewer,
    EnrollmentError,
    EnrollmentRefused,
    RegistryUnreachable,
    enroll,
    renew,
    renewal_time,
)
from edge_agent.identity_store import Credentials, IdentityError, IdentityStore, NotEnrolled
from security.ca import init_ca
from security.identity import Identity, identity_of
from tests.edge_agent.enrollment_stub import StubRegistry, offline_identity, stub_registry

EDGE = "gw-01"


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[StubRegistry]:
    with stub_registry(tmp_path) as running:
        yield running


@pytest.fixture
def store(tmp_path: Path) -> IdentityStore:
    return IdentityStore(tmp_path / "identity")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def do_enroll(stub: StubRegistry, store: IdentityStore, **kwargs: object) -> Credentials:
    token = kwargs.pop("token", None) or stub.token(EDGE)
    return asyncio.run(
        enroll(stub.address, str(token), store, ca_pem=stub.root_pem, **kwargs)  # type: ignore[arg-type]
    )


def generations(store: IdentityStore) -> list[Path]:
    return sorted(store.folder.glob("gen-*"))


def test_enroll_stores_key_certificate_chain_roots_and_command_keys(
    stub: StubRegistry, store: IdentityStore
) -> None:
    creds = do_enroll(stub, store, edge_id=EDGE)
    assert (creds.edge_id, creds.site) == (EDGE, "site-a")
    assert identity_of(creds.cert_pem) == Identity("edge", EDGE)
    assert mode(store.folder) == 0o700
    [gen] = generations(store)
    assert mode(gen / "key.pem") == 0o600
    assert mode(store.folder / "identity.json") == 0o600
    manifest = json.loads((store.folder / "identity.json").read_text())
    assert manifest["edge_id"] == EDGE
    assert manifest["generation"] == creds.generation
    assert creds.trust_roots_pems == (stub.root_pem,)
    assert len(creds.chain_pems) == 1
    assert creds.command_keys == {stub.signer.key_id.hex(): stub.signer_public_pem}
    assert store.load() == creds
    assert creds.channel_credentials() is not None


def test_enroll_without_an_edge_id_takes_the_tokens_edge(
    stub: StubRegistry, store: IdentityStore
) -> None:
    assert do_enroll(stub, store).edge_id == EDGE


def test_a_used_token_is_refused_and_leaves_no_key_behind(
    stub: StubRegistry, store: IdentityStore, tmp_path: Path
) -> None:
    token = stub.token(EDGE)
    do_enroll(stub, store, token=token)
    other = IdentityStore(tmp_path / "other")
    with pytest.raises(EnrollmentRefused, match=r"UNAUTHENTICATED.*already used"):
        do_enroll(stub, other, token=token)
    assert generations(other) == []
    assert not other.enrolled()


def test_an_expired_token_is_refused(stub: StubRegistry, store: IdentityStore) -> None:
    token = stub.token(EDGE, ttl=timedelta(seconds=-1))
    with pytest.raises(EnrollmentRefused, match="expired"):
        do_enroll(stub, store, token=token)
    with pytest.raises(NotEnrolled, match="edge-agent enroll"):
        store.load()


@pytest.mark.parametrize(
    "token", ["", "nonsense", "ciot1.0000000000000000." + "A" * 43, "ciot1.\x00\xff.x"]
)
def test_malformed_or_unknown_tokens_are_refused(
    stub: StubRegistry, store: IdentityStore, token: str
) -> None:
    with pytest.raises(EnrollmentRefused, match="UNAUTHENTICATED"):
        asyncio.run(enroll(stub.address, token, store, ca_pem=stub.root_pem))
    assert generations(store) == []


def test_a_token_for_another_edge_is_refused(stub: StubRegistry, store: IdentityStore) -> None:
    with pytest.raises(EnrollmentRefused, match=r"enrolls edge 'gw-01'.*this edge is 'gw-02'"):
        do_enroll(stub, store, edge_id="gw-02")
    assert not store.enrolled()


def test_a_wrong_ca_file_fails_the_handshake(
    stub: StubRegistry, store: IdentityStore, tmp_path: Path
) -> None:
    other_root = init_ca(tmp_path / "other-ca", "Other").root_pem
    with pytest.raises(RegistryUnreachable, match="TLS handshake failed"):
        asyncio.run(enroll(stub.address, stub.token(EDGE), store, ca_pem=other_root))
    assert generations(store) == []


@pytest.mark.parametrize("ca_pem", [b"", b"not a certificate", b"-----BEGIN CERTIFICATE-----\n"])
def test_a_garbage_ca_file_is_refused_before_connecting(
    store: IdentityStore, ca_pem: bytes
) -> None:
    with pytest.raises(EnrollmentError, match="CA file: not a PEM certificate"):
        asyncio.run(enroll("127.0.0.1:1", "t", store, ca_pem=ca_pem))
    assert not store.folder.exists()


def test_an_unreachable_registry(stub: StubRegistry, store: IdentityStore) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RegistryUnreachable, match="cannot connect"):
        asyncio.run(enroll(f"127.0.0.1:{port}", "t", store, ca_pem=stub.root_pem, timeout_s=3))


def test_an_identity_folder_with_loose_permissions_is_refused(
    stub: StubRegistry, store: IdentityStore
) -> None:
    store.folder.mkdir(mode=0o755)
    os.chmod(store.folder, 0o755)
    token = stub.token(EDGE)
    with pytest.raises(IdentityError, match=r"mode 0755.*chmod 700"):
        do_enroll(stub, store, token=token)
    os.chmod(store.folder, 0o700)
    assert do_enroll(stub, store, token=token).edge_id == EDGE  # the token was not spent


def test_a_key_with_loose_permissions_is_refused(stub: StubRegistry, store: IdentityStore) -> None:
    do_enroll(stub, store)
    [gen] = generations(store)
    os.chmod(gen / "key.pem", 0o644)
    with pytest.raises(IdentityError, match="mode 0644"):
        store.load()


def test_a_certificate_for_another_key_is_refused(tmp_path: Path, store: IdentityStore) -> None:
    with (
        stub_registry(tmp_path / "evil", mode="foreign-key") as evil,
        pytest.raises(BadEnrollmentResponse, match="not for our key"),
    ):
        do_enroll(evil, store)
    assert generations(store) == []


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"[]",
        b'{"version": 2}',
        b'{"version": 1, "edge_id": 3}',
        b'{"version": 1, "edge_id": "e", "site": "s", "generation": "../../elsewhere"}',
    ],
)
def test_a_corrupt_manifest_is_refused(
    stub: StubRegistry, store: IdentityStore, content: bytes
) -> None:
    do_enroll(stub, store)
    (store.folder / "identity.json").write_bytes(content)
    with pytest.raises(IdentityError, match=r"identity\.json"):
        store.load()


def test_a_key_that_does_not_match_the_certificate_is_refused(
    stub: StubRegistry, store: IdentityStore, tmp_path: Path
) -> None:
    do_enroll(stub, store)
    other = IdentityStore(tmp_path / "other")
    do_enroll(stub, other)
    [mine], [theirs] = generations(store), generations(other)
    (mine / "cert.pem").write_bytes((theirs / "cert.pem").read_bytes())
    with pytest.raises(IdentityError, match="does not belong"):
        store.load()


def test_renew_over_mtls_switches_to_a_new_key_and_certificate(
    stub: StubRegistry, store: IdentityStore
) -> None:
    first = do_enroll(stub, store)
    second = asyncio.run(renew(stub.mtls_address, store))
    assert stub.renewed == [EDGE]
    assert second.edge_id == EDGE
    assert second.generation != first.generation
    assert second.key_pem != first.key_pem
    assert second.cert_pem != first.cert_pem
    assert [g.name for g in generations(store)] == [f"gen-{second.generation}"]  # old key gone
    assert store.load() == second


def test_renew_without_an_identity_is_refused(stub: StubRegistry, store: IdentityStore) -> None:
    store.prepare()
    with pytest.raises(NotEnrolled):
        asyncio.run(renew(stub.mtls_address, store))


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def test_the_renewer_renews_at_two_thirds_of_the_lifetime(
    stub: StubRegistry, store: IdentityStore
) -> None:
    first = do_enroll(stub, store)
    assert renewal_time(first) == first.not_before + timedelta(days=20)
    clock = Clock()

    async def scenario() -> list[Credentials]:
        renewed: list[Credentials] = []
        done = asyncio.Event()

        def on_renewed(creds: Credentials) -> None:
            renewed.append(creds)
            clock.offset = timedelta(0)  # back to now: the new certificate is not due
            done.set()

        renewer = CertificateRenewer(
            stub.mtls_address, store, on_renewed=on_renewed, clock=clock, check_s=0.05
        )
        task = asyncio.create_task(renewer.run())
        await asyncio.sleep(0.2)
        assert renewed == []
        assert not renewer.due(first)
        clock.offset = timedelta(days=20, minutes=1)
        async with asyncio.timeout(20):
            await done.wait()
        await asyncio.sleep(0.2)  # it does not renew again
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert renewer.renewals == 1
        return renewed

    [creds] = asyncio.run(scenario())
    assert creds.generation != first.generation
    assert store.load().generation == creds.generation


def test_the_renewer_retries_when_the_registry_is_down(
    tmp_path: Path, store: IdentityStore
) -> None:
    with stub_registry(tmp_path / "gone") as gone:
        do_enroll(gone, store)
        address = gone.mtls_address
    clock = Clock()
    clock.offset = timedelta(days=25)

    async def scenario() -> CertificateRenewer:
        renewer = CertificateRenewer(
            address, store, clock=clock, retry_initial_s=0.01, retry_max_s=0.02, timeout_s=2
        )
        task = asyncio.create_task(renewer.run())
        async with asyncio.timeout(20):
            while renewer.failures < 2:
                await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return renewer

    renewer = asyncio.run(scenario())
    assert "cannot connect" in renewer.last_error
    assert renewer.renewals == 0
    assert len(generations(store)) == 1  # the failed attempts left no key behind


def test_re_enrolling_keeps_the_replay_state_unless_the_command_keys_change(
    stub: StubRegistry, store: IdentityStore, tmp_path: Path
) -> None:
    do_enroll(stub, store)
    store.replay_state_path.write_text('{"version": 1, "last_sequence": 7, "nonces": {}}')
    do_enroll(stub, store)  # same registry, same command key: sequences go on
    assert store.replay_state_path.exists()
    with stub_registry(tmp_path / "new-registry") as other:
        do_enroll(other, store)  # another registry: its own sequence from 1
    assert not store.replay_state_path.exists()
    assert len(generations(store)) == 1


@pytest.fixture(scope="module")
def offline_store(tmp_path_factory: pytest.TempPathFactory) -> IdentityStore:
    return offline_identity(tmp_path_factory.mktemp("offline"), EDGE)


@settings(max_examples=200, deadline=None)
@given(manifest=st.binary(max_size=300), keys=st.binary(max_size=300))
def test_fuzz_identity_files_load_or_raise_identity_error(
    offline_store: IdentityStore, manifest: bytes, keys: bytes
) -> None:
    good = offline_store.load()
    manifest_path = offline_store.folder / "identity.json"
    keys_path = offline_store.folder / f"gen-{good.generation}" / "command-keys.json"
    saved = manifest_path.read_bytes(), keys_path.read_bytes()
    try:
        for path, data in ((manifest_path, manifest), (keys_path, keys)):
            original = path.read_bytes()
            path.write_bytes(data)
            with contextlib.suppress(IdentityError):  # anything else fails the test
                offline_store.load()
            path.write_bytes(original)
    finally:
        manifest_path.write_bytes(saved[0])
        keys_path.write_bytes(saved[1])
    assert offline_store.load() == good
