"""The command guard: signed envelopes verified with the enrolled command keys and the replay
state of the identity folder (kept across restarts); every refusal with its reason; the command
run is the one signed; unsigned commands only in insecure mode; and a fuzzer: a hostile or
altered envelope is refused with CommandRefused, never anything else."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_registry.api.command_envelope import command_payload
from cloud_registry.api.v1 import common_pb2
from edge_agent.command_guard import CommandGuard, CommandRefused, guard_for
from edge_agent.config import EdgeConfig, RegistryConfig, SecurityConfig, StorageConfig
from edge_agent.identity_store import IdentityError, IdentityStore
from security.commands import CommandSigner
from tests.edge_agent.enrollment_stub import offline_identity
from thing_models.messages import value_to_protobuf

EDGE = "gw-01"
KEY = ec.generate_private_key(ec.SECP256R1())
SIGNER = CommandSigner(KEY)


def public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def enrolled_store(folder: Path, *, keys: dict[str, bytes] | None = None) -> IdentityStore:
    """An enrolled identity folder trusting SIGNER (or ``keys``)."""
    default = {SIGNER.key_id.hex(): public_pem(KEY)}
    return offline_identity(folder, EDGE, default if keys is None else keys)


@pytest.fixture
def store(tmp_path: Path) -> IdentityStore:
    return enrolled_store(tmp_path)


@pytest.fixture
def guard(store: IdentityStore) -> CommandGuard:
    return CommandGuard.for_identity(store)


_SEQ = iter(range(1, 1_000_000))


def command(
    cid: str = "c1",
    *,
    device: str = "meter-1",
    params: dict[str, float] | None = None,
    signer: CommandSigner | None = SIGNER,
    edge: str = EDGE,
    sequence: int | None = None,
    expires: datetime | None = None,
) -> common_pb2.Command:
    cmd = common_pb2.Command(
        id=cid, device_id=device, edge_id=edge, kind=common_pb2.COMMAND_KIND_SET_PROPERTIES
    )
    for name, value in (params or {"setpoint": 21.5}).items():
        cmd.params[name].CopyFrom(value_to_protobuf(value))
    if signer is not None:
        seq = next(_SEQ) if sequence is None else sequence
        cmd.sequence = seq
        cmd.envelope = signer.sign(
            edge,
            device,
            command_payload(cmd),
            seq,
            expires or datetime.now(UTC) + timedelta(minutes=5),
        )
    return cmd


def refusal(guard: CommandGuard, cmd: common_pb2.Command) -> str:
    with pytest.raises(CommandRefused) as info:
        guard.check(cmd)
    assert str(info.value).startswith(f"command refused ({info.value.reason})")
    assert guard.refused[info.value.reason] >= 1
    return info.value.reason


def test_a_signed_command_passes_and_is_rebuilt_from_the_signed_bytes(
    guard: CommandGuard,
) -> None:
    cmd = command(params={"setpoint": 21.5})
    cmd.params["setpoint"].CopyFrom(value_to_protobuf(99.0))  # altered in transit, unsigned
    cmd.params["extra"].CopyFrom(value_to_protobuf(1.0))
    out = guard.check(cmd)
    assert out.params["setpoint"].double_value == 21.5
    assert "extra" not in out.params
    assert (out.id, out.device_id, out.edge_id) == ("c1", "meter-1", EDGE)
    assert out.kind == common_pb2.COMMAND_KIND_SET_PROPERTIES
    assert guard.accepted == 1
    assert not guard.refused


def test_a_tampered_envelope_is_refused(guard: CommandGuard) -> None:
    cmd = command()
    data = bytearray(cmd.envelope)
    data[-80] ^= 0x01  # inside the payload or the signature
    cmd.envelope = bytes(data)
    assert refusal(guard, cmd) in {"tampered", "malformed"}


def test_a_changed_payload_byte_is_tampering(guard: CommandGuard) -> None:
    cmd = command(params={"setpoint": 21.5})
    envelope = cmd.envelope
    payload = command_payload(cmd)
    index = envelope.index(payload) + len(payload) - 1
    cmd.envelope = envelope[:index] + bytes([envelope[index] ^ 0x40]) + envelope[index + 1 :]
    assert refusal(guard, cmd) == "tampered"


def test_a_replayed_command_is_refused_even_after_a_restart(
    store: IdentityStore, guard: CommandGuard
) -> None:
    cmd = command()
    guard.check(cmd)
    assert refusal(guard, cmd) == "replayed"
    restarted = CommandGuard.for_identity(store)
    assert refusal(restarted, cmd) == "replayed"
    assert store.replay_state_path.stat().st_mode & 0o077 == 0


def test_an_old_sequence_is_refused(guard: CommandGuard) -> None:
    guard.check(command("c1", sequence=5_000_000))
    assert refusal(guard, command("c2", sequence=4_000_000)) == "replayed"


def test_an_expired_command_is_refused(guard: CommandGuard) -> None:
    cmd = command(expires=datetime.now(UTC) - timedelta(minutes=5))
    assert refusal(guard, cmd) == "expired"


def test_another_edges_command_is_refused(guard: CommandGuard) -> None:
    assert refusal(guard, command(edge="gw-02")) == "wrong_target"


def test_an_unknown_signing_key_is_refused(guard: CommandGuard) -> None:
    other = CommandSigner(ec.generate_private_key(ec.SECP256R1()))
    assert refusal(guard, command(signer=other)) == "unknown_key"


def test_an_envelope_moved_to_another_command_is_refused(guard: CommandGuard) -> None:
    signed = command("c1")
    moved = command("c2", signer=None)
    moved.envelope, moved.sequence = signed.envelope, signed.sequence
    assert refusal(guard, moved) == "mismatch"
    other_device = command("c3", signer=None, device="relay-1")
    signed_c3 = command("c3")
    other_device.envelope = signed_c3.envelope
    other_device.sequence = signed_c3.sequence
    assert refusal(guard, other_device) == "mismatch"
    resequenced = command("c4")
    resequenced.sequence += 1
    assert refusal(guard, resequenced) == "mismatch"


def test_a_signed_payload_that_is_not_a_command_is_refused(guard: CommandGuard) -> None:
    cmd = command(signer=None)
    cmd.sequence = next(_SEQ)
    cmd.envelope = SIGNER.sign(
        EDGE, "meter-1", b"\xff\xff\xff", cmd.sequence, datetime.now(UTC) + timedelta(minutes=1)
    )
    assert refusal(guard, cmd) == "malformed"


def test_unsigned_commands_are_refused_unless_insecure(
    store: IdentityStore, caplog: pytest.LogCaptureFixture
) -> None:
    strict = CommandGuard.for_identity(store)
    assert refusal(strict, command(signer=None)) == "unsigned"
    lax = CommandGuard.for_identity(store, allow_unsigned=True)
    with caplog.at_level(logging.WARNING):
        assert lax.check(command(signer=None)).id == "c1"
    assert "unsigned" in caplog.text
    assert refusal(lax, command(edge="gw-02")) == "wrong_target"  # signed ones still verified


def test_without_command_keys_every_command_is_refused(tmp_path: Path) -> None:
    store = enrolled_store(tmp_path, keys={})
    guard = CommandGuard.for_identity(store)
    assert refusal(guard, command()) == "no_keys"
    assert refusal(guard, command(signer=None)) == "unsigned"
    not_enrolled = CommandGuard.for_identity(IdentityStore(tmp_path / "none"))
    assert refusal(not_enrolled, command()) == "no_keys"


def test_a_corrupt_replay_state_refuses_to_start(store: IdentityStore) -> None:
    store.replay_state_path.write_text("{nope", encoding="utf-8")
    store.replay_state_path.chmod(0o600)
    with pytest.raises(IdentityError, match="replay"):
        CommandGuard.for_identity(store)


def _config(tmp_path: Path, *, insecure: bool, security: bool = True) -> EdgeConfig:
    return EdgeConfig(
        edge_id=EDGE,
        registry=RegistryConfig("127.0.0.1:1", insecure=insecure),
        storage=StorageConfig(tmp_path / "outbox.db"),
        models_dir=tmp_path,
        admin_socket=tmp_path / "sock",
        security=SecurityConfig(tmp_path / "identity") if security else None,
    )


def test_guard_for_a_configuration(tmp_path: Path) -> None:
    enrolled_store(tmp_path)
    secure = guard_for(_config(tmp_path, insecure=False))
    assert secure is not None
    assert refusal(secure, command(signer=None)) == "unsigned"
    insecure = guard_for(_config(tmp_path, insecure=True))
    assert insecure is not None
    assert insecure.allow_unsigned
    assert guard_for(_config(tmp_path, insecure=True, security=False)) is None
    coded = guard_for(_config(tmp_path, insecure=False, security=False))
    assert coded is not None
    assert refusal(coded, command()) == "no_keys"


@pytest.fixture(scope="module")
def fuzz_guard(tmp_path_factory: pytest.TempPathFactory) -> CommandGuard:
    return CommandGuard.for_identity(enrolled_store(tmp_path_factory.mktemp("fuzz")))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 599), st.integers(1, 255))
def test_fuzz_envelopes_are_refused_with_our_error_only(
    fuzz_guard: CommandGuard, data: bytes, position: int, flip: int
) -> None:
    cmd = command(signer=None)
    cmd.envelope = data or b"\x00"
    with pytest.raises(CommandRefused):
        fuzz_guard.check(cmd)
    signed = bytearray(command().envelope)
    signed[position % len(signed)] ^= flip
    cmd.envelope = bytes(signed)
    with pytest.raises(CommandRefused):
        fuzz_guard.check(cmd)
