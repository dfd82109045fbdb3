"""Enrollment bootstrap tokens: hashed, single use, expiring, constant-time compared."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from security.errors import EnrollmentError, TokenExpired, TokenInvalid, TokenReused
from security.tokens import MemoryTokenStore, check_token, new_token, parse_token, redeem

from .conftest import NOW


def test_record_holds_only_the_hash() -> None:
    text, record = new_token("gw-01", "north", NOW)
    secret = text.split(".")[2]
    assert secret not in repr(record)
    assert record.edge_id == "gw-01"
    assert record.site == "north"
    assert record.expires_at == NOW + timedelta(hours=24)
    check_token(text, record, NOW)


def test_each_token_is_new() -> None:
    assert new_token("e", "s", NOW)[0] != new_token("e", "s", NOW)[0]


def test_expired_token() -> None:
    text, record = new_token("gw-01", "north", NOW, ttl=timedelta(hours=1))
    check_token(text, record, NOW + timedelta(minutes=59))
    with pytest.raises(TokenExpired, match=r"gw-01.*expired"):
        check_token(text, record, NOW + timedelta(hours=1))


def test_wrong_secret_and_other_record() -> None:
    text, record = new_token("gw-01", "north", NOW)
    other_text, _other = new_token("gw-02", "north", NOW)
    with pytest.raises(TokenInvalid, match=r"does not match"):
        check_token(other_text, record, NOW)
    tampered = text[:-1] + ("A" if text[-1] != "A" else "B")
    with pytest.raises(TokenInvalid):
        check_token(tampered, record, NOW)


def test_redeem_is_single_use() -> None:
    store = MemoryTokenStore()
    text, record = new_token("gw-01", "north", NOW)
    store.add(record)
    used = redeem(text, store, NOW)
    assert used.edge_id == "gw-01"
    assert used.used_at == NOW
    with pytest.raises(TokenReused, match=r"already used"):
        redeem(text, store, NOW + timedelta(minutes=1))


def test_redeem_race_loses_on_mark_used() -> None:
    class RacyStore(MemoryTokenStore):
        def mark_used(self, token_id: str, when: datetime) -> bool:
            return False  # another enrollment won in between

    store = RacyStore()
    text, record = new_token("gw-01", "north", NOW)
    store.add(record)
    with pytest.raises(TokenReused):
        redeem(text, store, NOW)


def test_unknown_token() -> None:
    text, _ = new_token("gw-01", "north", NOW)
    with pytest.raises(TokenInvalid, match=r"unknown"):
        redeem(text, MemoryTokenStore(), NOW)


@pytest.mark.parametrize(
    "text", ["", "ciot1", "ciot1..", "ciot2.0011223344556677." + "A" * 43, "x" * 1000]
)
def test_malformed(text: str) -> None:
    with pytest.raises(TokenInvalid, match=r"malformed"):
        parse_token(text)


@given(st.text(max_size=120))
def test_fuzz_check_token_only_raises_enrollment_errors(text: str) -> None:
    _, record = new_token("gw-01", "north", NOW)
    with pytest.raises(EnrollmentError):
        check_token(text, record, NOW)
