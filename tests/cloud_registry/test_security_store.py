"""The security records' contract, run against every storage engine (SQLite, PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_registry.ca_admin import api_key_matches, new_api_key, parse_api_key
from cloud_registry.storage.base import AlreadyExists, ChangeKind, NotFound, Storage
from cloud_registry.storage.security_store import (
    ApiKeyRecord,
    AuditRecord,
    EdgeStatus,
    IssuedCertificate,
)
from security.errors import TokenReused
from security.tokens import TokenStore, new_token, redeem

NOW = datetime(2030, 1, 1, tzinfo=UTC)


class _Tokens:
    """security.tokens.TokenStore over a storage (as the enrollment service uses it)."""

    def __init__(self, storage: Storage) -> None:
        self.store = storage.security

    def get(self, token_id: str):  # type: ignore[no-untyped-def]
        return self.store.get_token(token_id)

    def mark_used(self, token_id: str, when: datetime) -> bool:
        return self.store.mark_token_used(token_id, int(when.timestamp() * 1000))


def test_add_edge_stores_only_the_token_hash(storage: Storage) -> None:
    text, record = new_token("edge-1", "site-a", NOW)
    edge = storage.security.add_edge("edge-1", "site-a", record, 5)
    assert (edge.edge_id, edge.site, edge.status) == ("edge-1", "site-a", EdgeStatus.ACTIVE)
    stored = storage.security.get_token(record.token_id)
    assert stored == record
    secret = text.rsplit(".", 1)[1]
    assert secret not in repr(stored)
    assert storage.security.get_token("0" * 16) is None


def test_edge_keeps_its_site(storage: Storage) -> None:
    _, first = new_token("edge-1", "site-a", NOW)
    storage.security.add_edge("edge-1", "site-a", first, 1)
    _, second = new_token("edge-1", "site-b", NOW)
    with pytest.raises(AlreadyExists, match="site-a"):
        storage.security.add_edge("edge-1", "site-b", second, 2)


def test_token_redeems_once_even_when_raced(storage: Storage) -> None:
    text, record = new_token("edge-1", "site-a", NOW)
    storage.security.add_edge("edge-1", "site-a", record, 1)
    tokens: TokenStore = _Tokens(storage)
    wins: list[str] = []
    losses: list[str] = []
    barrier = threading.Barrier(8)

    def attempt() -> None:
        barrier.wait()
        try:
            redeem(text, tokens, NOW + timedelta(minutes=1))
            wins.append("won")
        except TokenReused:
            losses.append("lost")

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert (len(wins), len(losses)) == (1, 7)
    assert storage.security.get_token(record.token_id).used_at is not None  # type: ignore[union-attr]


def test_revoke_edge_revokes_its_certificates_and_appends_a_change(storage: Storage) -> None:
    _, record = new_token("edge-1", "site-a", NOW)
    storage.security.add_edge("edge-1", "site-a", record, 1)
    _, other = new_token("edge-2", "site-a", NOW)
    storage.security.add_edge("edge-2", "site-a", other, 1)
    storage.security.record_certificate(IssuedCertificate("a1", "edge-1", 2, 100))
    storage.security.record_certificate(IssuedCertificate("a2", "edge-1", 3, 200))
    storage.security.record_certificate(IssuedCertificate("b1", "edge-2", 3, 200))
    before = storage.latest_change_seq()
    assert sorted(storage.security.revoke_edge("edge-1", 50)) == ["a1", "a2"]
    state = storage.security.revocations()
    assert state.serials == {"a1", "a2"}
    assert state.edges == {"edge-1"}
    edge = storage.security.get_edge("edge-1")
    assert edge.status is EdgeStatus.REVOKED
    assert edge.revoked_ms == 50
    assert all(c.revoked for c in edge.certificates)
    assert not any(c.revoked for c in storage.security.get_edge("edge-2").certificates)
    [change] = storage.changes_after(before, 10)
    assert change.kind is ChangeKind.EDGE_REVOKED
    assert change.edge_id == "edge-1"
    # its unused token is burnt too
    assert storage.security.get_token(record.token_id).used_at is not None  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        storage.security.revoke_edge("nobody", 1)
    # adding it again re-activates it with a new token
    _, again = new_token("edge-1", "site-a", NOW)
    assert storage.security.add_edge("edge-1", "site-a", again, 60).status is EdgeStatus.ACTIVE
    assert storage.security.revocations().edges == frozenset()
    assert storage.security.revocations().serials == {"a1", "a2"}


def test_list_edges_in_id_order(storage: Storage) -> None:
    for edge_id in ("b", "a", "c"):
        _, record = new_token(edge_id, "s", NOW)
        storage.security.add_edge(edge_id, "s", record, 1)
    assert [e.edge_id for e in storage.security.list_edges()] == ["a", "b", "c"]
    with pytest.raises(NotFound, match="edges add"):
        storage.security.get_edge("zzz")


def test_api_keys_are_stored_hashed(storage: Storage) -> None:
    text, key_id, digest = new_api_key()
    record = ApiKeyRecord(key_id, "dash", "site-a", frozenset({"read-twins", "admin"}), digest, 1)
    storage.security.add_api_key(record)
    assert storage.security.get_api_key(key_id) == record
    parsed = parse_api_key(text)
    assert parsed is not None
    assert api_key_matches(parsed[1], record.secret_sha256)
    assert not api_key_matches(parsed[1][:-1] + "x", record.secret_sha256)
    assert storage.security.get_api_key("0" * 16) is None
    with pytest.raises(AlreadyExists):
        storage.security.add_api_key(record)


def test_audit_queries_by_kind_subject_since_with_paging(storage: Storage) -> None:
    events = [
        AuditRecord(1000 + i, "enrolled" if i % 2 else "access_refused", f"edge:e{i % 3}", "d")
        for i in range(25)
    ]
    storage.security.append_audit(events)
    page = storage.security.list_audit(limit=10)
    assert [e.time_ms for e in page.items] == list(range(1000, 1010))
    assert page.next_cursor
    rest = storage.security.list_audit(after_id=int(page.next_cursor), limit=100)
    assert [e.time_ms for e in rest.items] == list(range(1010, 1025))
    assert rest.next_cursor == ""
    refused = storage.security.list_audit(kind="access_refused", subject="edge:e0").items
    assert [e.time_ms for e in refused] == [1000, 1006, 1012, 1018, 1024]
    assert [e.time_ms for e in storage.security.list_audit(since_ms=1023).items] == [1023, 1024]
    storage.security.append_audit([])
    assert len(storage.security.list_audit(limit=1000).items) == 25


@given(st.text(max_size=200))
def test_parse_api_key_never_raises(text: str) -> None:
    parsed = parse_api_key(text)
    if parsed is not None:
        assert len(parsed[0]) == 16
        assert len(parsed[1]) == 43
