"""The secure edge end to end against a REAL secure registry (fresh CA, mTLS, signed commands;
tests/cloud_registry/server_fixtures.py) and a Modbus simulator: ``edge-agent enroll`` with a
one-time token, the agent syncing over mTLS with an encrypted outbox, a signed command reaching
the device; then the same agent facing a hostile registry (a TLS EdgeSync peer with a
certificate of the same CA) that replays that command, tampers with it, sends it unsigned or
signs one for another edge: each refused (REJECTED with the reason, counted), none touching the
device. Plus the CLI's bad inputs and the ``security`` configuration section."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import socket
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpc import aio

from cloud_registry.api.command_envelope import command_payload
from cloud_registry.api.v1 import (
    commands_pb2,
    commands_pb2_grpc,
    common_pb2,
    edge_sync_pb2,
    edge_sync_pb2_grpc,
)
from cloud_registry.storage.sqlite import SqliteStorage
from edge_agent.cli import main
from edge_agent.config import load_edge_config
from edge_agent.identity_store import IdentityError, IdentityStore, NotEnrolled
from edge_agent.supervisor import EdgeAgent
from protocol_adapters.modbus.simulator import ModbusSimulator
from security.ca import CertificateAuthority
from security.commands import CommandSigner
from security.identity import load_private_key
from tests.cloud_registry.server_fixtures import SecureRegistry, running_secure_registry
from tests.edge_agent.enrollment_stub import offline_identity
from thing_models.messages import value_to_protobuf
from thing_models.yaml_format import load_model_file

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "examples" / "models"
METER_FILE = MODELS / "energy-meter-3p.yaml"
METER_REF = "community.energy/meter-3p@1.0.0"
EDGE = "gw-01"


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[SecureRegistry]:
    """A secure registry (fresh CA in tmp_path/ca, SQLite) on 127.0.0.1."""
    storage = SqliteStorage(tmp_path / "registry.db")
    storage.migrate()
    try:
        with running_secure_registry(storage, tmp_path / "ca") as running:
            yield running
    finally:
        storage.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(folder: Path, registry: str, port: int, *, extra: str = "") -> Path:
    path = folder / "edge.yaml"
    path.write_text(
        f"""edge_id: {EDGE}
registry: {{address: "{registry}"}}
storage: {{outbox: state/outbox.db}}
models_dir: {MODELS}
security:
  identity_dir: identity
  encrypt_outbox: true
{extra}devices:
  - id: meter-1
    model: {METER_REF}
    protocol: modbus
    connection: {{transport: tcp, host: 127.0.0.1, port: {port}, timeout: 500ms}}
    poll_interval: 200ms
    reconnect: {{min: 100ms, max: 400ms}}
""",
        encoding="utf-8",
    )
    return path


async def until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


class RecordingAgent(EdgeAgent):
    """Keeps the commands that passed the guard (they carry their envelope)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.executed: list[common_pb2.Command] = []

    async def handle_command(self, command: common_pb2.Command) -> edge_sync_pb2.CommandResult:
        self.executed.append(command)
        return await super().handle_command(command)


class HostileSync(edge_sync_pb2_grpc.EdgeSyncServicer):
    """An EdgeSync peer that sends the given commands after Welcome and collects results."""

    def __init__(self, commands: list[common_pb2.Command]) -> None:
        self.commands = commands
        self.results: asyncio.Queue[edge_sync_pb2.CommandResult] = asyncio.Queue()
        self.peer_identity = b""

    async def Sync(
        self, request_iterator: AsyncIterator[edge_sync_pb2.EdgeMessage], context: Any
    ) -> AsyncIterator[edge_sync_pb2.RegistryMessage]:
        hello = await anext(aiter(request_iterator))
        assert hello.WhichOneof("kind") == "hello"
        self.peer_identity = context.auth_context()["x509_pem_cert"][0]
        welcome = edge_sync_pb2.Welcome(max_in_flight=8, max_batch_messages=1000)
        yield edge_sync_pb2.RegistryMessage(welcome=welcome)
        for command in self.commands:
            yield edge_sync_pb2.RegistryMessage(command=command)
        async for message in request_iterator:
            which = message.WhichOneof("kind")
            if which == "batch":
                ack = edge_sync_pb2.BatchAck(
                    sequence=message.batch.sequence, stored=len(message.batch.messages)
                )
                yield edge_sync_pb2.RegistryMessage(ack=ack)
            elif which == "command_result":
                await self.results.put(message.command_result)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


async def start_hostile(ca_dir: Path, sync: HostileSync) -> tuple[aio.Server, str]:
    """The hostile peer on 127.0.0.1 with a server certificate of the deployment's CA."""
    ca = CertificateAuthority.load(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.issue_server_certificate(key.public_key(), ["127.0.0.1"])
    credentials = grpc.ssl_server_credentials(
        [(_key_pem(key), cert + b"".join(ca.chain_pems))], ca.root_pem, require_client_auth=True
    )
    server = aio.server()
    edge_sync_pb2_grpc.add_EdgeSyncServicer_to_server(sync, server)  # type: ignore[no-untyped-call]
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server, f"127.0.0.1:{port}"


def enroll_cli(secure: SecureRegistry, config: Path, tmp_path: Path, token: str) -> int:
    root = tmp_path / "registry-root.pem"
    root.write_bytes(secure.root_pem)
    return main(
        [
            "enroll",
            "--registry",
            secure.enroll_address,
            "--token",
            token,
            "--config",
            str(config),
            "--ca-file",
            str(root),
        ]
    )


def test_enrolled_agent_syncs_over_mtls_and_refuses_bad_commands(
    secure: SecureRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secure.registry.publish_file(METER_FILE)
    secure.registry.register("meter-1", model=METER_REF, edge_id=EDGE)
    port = free_port()
    config_path = write_config(tmp_path, secure.address, port)
    assert enroll_cli(secure, config_path, tmp_path, secure.make_token(EDGE)) == 0
    out = capsys.readouterr().out
    assert f"enrolled as edge {EDGE!r}" in out
    assert "key.pem (mode 0600; it never leaves this box)" in out
    config = load_edge_config(config_path)
    asyncio.run(asyncio.wait_for(_scenario(secure, config_path, port), 60))
    key_file = tmp_path / "identity" / "outbox.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with sqlite3.connect(tmp_path / "state" / "outbox.db") as db:
        codec = db.execute("SELECT value FROM outbox_meta WHERE key = 'codec'").fetchone()
    assert codec == ("aes-256-gcm/v1",)
    assert config.security is not None


async def _scenario(secure: SecureRegistry, config_path: Path, port: int) -> None:
    simulator = ModbusSimulator(load_model_file(METER_FILE), port=port, seed=1, tick_ms=100)
    await simulator.start()
    await simulator.set_value("relay_closed", False)
    try:
        signed = await _real_registry(secure, config_path, simulator)
        await simulator.set_value("relay_closed", False)
        await _hostile_registry(secure, config_path, simulator, signed)
    finally:
        await simulator.stop()


async def _real_registry(
    secure: SecureRegistry, config_path: Path, simulator: ModbusSimulator
) -> common_pb2.Command:
    agent = RecordingAgent(load_edge_config(config_path), uplink_options={"backoff_max_s": 0.5})
    task = asyncio.create_task(agent.run())
    try:
        await until(lambda: "voltage_a" in secure.storage.get_twin("meter-1").reported)
        status = agent.status()
        assert status.uplink is not None
        assert status.uplink.connected
        request = commands_pb2.SendCommandRequest(
            device_id="meter-1",
            kind=common_pb2.COMMAND_KIND_SET_PROPERTIES,
            wait=True,
            timeout_ms=8000,
        )
        request.params["relay_closed"].CopyFrom(value_to_protobuf(True))
        commands: Any = commands_pb2_grpc.CommandServiceStub(secure.registry.channel)  # type: ignore[no-untyped-call]
        command = await asyncio.to_thread(commands.SendCommand, request, timeout=10)
        assert command.status == common_pb2.COMMAND_STATUS_SUCCEEDED, command.error
        assert await simulator.get_value("relay_closed") is True
        [executed] = agent.executed
        assert executed.envelope
        assert agent.status().uplink.commands_refused == 0  # type: ignore[union-attr]
        return executed
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)


async def _hostile_registry(
    secure: SecureRegistry,
    config_path: Path,
    simulator: ModbusSimulator,
    signed: common_pb2.Command,
) -> None:
    tampered = common_pb2.Command()
    tampered.CopyFrom(signed)
    tampered.id = "tampered"
    data = bytearray(signed.envelope)
    data[-40] ^= 0x01
    tampered.envelope = bytes(data)
    unsigned = common_pb2.Command()
    unsigned.CopyFrom(signed)
    unsigned.id, unsigned.envelope = "unsigned", b""
    # signed with the registry's own command key, but for another edge
    signer = CommandSigner(load_private_key(secure.ca_dir / "command.key"))
    other = common_pb2.Command()
    other.CopyFrom(signed)
    other.id, other.sequence = "other-edge", signed.sequence + 100
    other.envelope = signer.sign(
        "gw-02",
        "meter-1",
        command_payload(other),
        other.sequence,
        datetime.now(UTC) + timedelta(minutes=5),
    )
    sync = HostileSync([signed, tampered, unsigned, other])
    server, address = await start_hostile(secure.ca_dir, sync)
    text = config_path.read_text(encoding="utf-8").replace(secure.address, address)
    config_path.write_text(text, encoding="utf-8")
    agent = RecordingAgent(load_edge_config(config_path))
    task = asyncio.create_task(agent.run())
    try:
        results = {}
        for _ in range(4):
            result = await asyncio.wait_for(sync.results.get(), 15)
            results[result.command_id] = result
        assert sync.peer_identity  # the agent presented its certificate (mTLS)
        for command_id, reason in (
            (signed.id, "replayed"),
            ("tampered", "tampered"),
            ("unsigned", "unsigned"),
            ("other-edge", "wrong_target"),
        ):
            result = results[command_id]
            assert result.status == common_pb2.COMMAND_STATUS_REJECTED, result
            assert f"command refused ({reason})" in result.error, result.error
        assert agent.executed == []
        assert await simulator.get_value("relay_closed") is False  # nothing reached the device
        status = agent.status()
        assert status.uplink is not None
        assert status.uplink.commands_refused == 4
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)
        await server.stop(None)


def test_enrolling_twice_with_one_token_and_an_expired_token_fail(
    secure: SecureRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, secure.address, 1)
    token = secure.make_token(EDGE)
    assert enroll_cli(secure, config, tmp_path, token) == 0
    capsys.readouterr()
    assert enroll_cli(secure, config, tmp_path, token) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    expired = secure.make_token(EDGE, ttl=timedelta(seconds=-1))
    assert enroll_cli(secure, config, tmp_path, expired) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    assert IdentityStore(tmp_path / "identity").load().edge_id == EDGE  # still the first one


def test_enroll_with_the_wrong_ca_file_fails_the_handshake(
    secure: SecureRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from security.ca import init_ca

    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(init_ca(tmp_path / "other", "Other").root_pem)
    code = main(
        [
            "enroll",
            "--registry",
            secure.enroll_address,
            "--token",
            secure.make_token(EDGE),
            "--identity-dir",
            str(tmp_path / "identity"),
            "--ca-file",
            str(wrong),
        ]
    )
    assert code == 1
    assert "TLS handshake failed" in capsys.readouterr().err


def test_an_agent_that_is_not_enrolled_does_not_start(tmp_path: Path) -> None:
    config = load_edge_config(write_config(tmp_path, "127.0.0.1:1", 1))
    with pytest.raises(NotEnrolled, match="run 'edge-agent enroll' first"):
        asyncio.run(asyncio.wait_for(EdgeAgent(config).run(), 20))


def test_enroll_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["enroll", "--token", "t", "--identity-dir", str(tmp_path)]) == 2
    assert "--ca-file" in capsys.readouterr().err
    missing = ["--registry", "127.0.0.1:1", "--ca-file", str(tmp_path / "nope.pem")]
    assert main(["enroll", "--token", "t", "--identity-dir", str(tmp_path), *missing]) == 1
    assert "cannot read the CA file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["enroll", "--token", "t"])  # neither --config nor --identity-dir
    assert info.value.code == 2


def test_the_security_section_is_read_and_checked(tmp_path: Path) -> None:
    from thing_models.errors import ModelLoadError

    config = load_edge_config(write_config(tmp_path, "127.0.0.1:1", 1))
    assert config.security is not None
    assert config.security.identity_dir == tmp_path / "identity"
    assert config.security.encrypt_outbox
    assert config.security.outbox_key_file == tmp_path / "identity" / "outbox.key"
    bad = write_config(tmp_path, "127.0.0.1:1", 1, extra="  encrypt_outbx: 1\n")
    with pytest.raises(ModelLoadError, match="encrypt_outbx"):
        load_edge_config(bad)


def test_a_renewal_reconnects_the_uplink_with_the_new_certificate(
    secure: SecureRegistry, tmp_path: Path
) -> None:
    from edge_agent.enrollment import CertificateRenewer, enroll
    from edge_agent.outbox import Outbox
    from edge_agent.uplink import Uplink

    store = IdentityStore(tmp_path / "identity")
    used: list[str] = []

    def credentials() -> grpc.ChannelCredentials:
        creds = store.load()
        used.append(creds.generation)
        return creds.channel_credentials()

    async def ok(command: common_pb2.Command) -> edge_sync_pb2.CommandResult:
        return edge_sync_pb2.CommandResult(command_id=command.id)

    async def scenario() -> tuple[str, str, int]:
        first = await enroll(
            secure.enroll_address, secure.make_token(EDGE), store, ca_pem=secure.root_pem
        )
        offset = [timedelta(days=21)]  # past two thirds of the 30 days

        def clock() -> datetime:
            return datetime.now(UTC) + offset[0]

        with Outbox(tmp_path / "outbox.db", max_bytes=1 << 30, max_age_s=3600) as outbox:
            uplink = Uplink(
                secure.address,
                EDGE,
                outbox,
                agent_version="t",
                config_version="c",
                inventory=list,
                on_command=ok,
                credentials=credentials,
                backoff_initial_s=0.05,
                backoff_max_s=0.2,
            )
            uplink_task = asyncio.create_task(uplink.run())
            await until(lambda: uplink.stats.connected)

            def renewed(_: object) -> None:
                offset[0] = timedelta(0)
                uplink.reconnect()

            renewer = CertificateRenewer(
                secure.address, store, on_renewed=renewed, clock=clock, check_s=0.05
            )
            renewal = asyncio.create_task(renewer.run())
            await until(lambda: uplink.stats.sessions >= 2 and uplink.stats.connected)
            renewal.cancel()
            uplink.stop()
            await asyncio.wait_for(uplink_task, 15)
            with pytest.raises(asyncio.CancelledError):
                await renewal
            return first.generation, store.load().generation, uplink.stats.sessions

    first, second, sessions = asyncio.run(asyncio.wait_for(scenario(), 40))
    assert first != second
    assert sessions == 2
    assert used == [first, second]  # the second session presented the renewed certificate


def test_an_outbox_key_with_loose_permissions_stops_the_start(tmp_path: Path) -> None:
    config = load_edge_config(write_config(tmp_path, "127.0.0.1:1", 1))
    assert config.security is not None
    identity = IdentityStore(config.security.identity_dir)
    identity.prepare()
    key = config.security.outbox_key_file
    key.write_bytes(b"k" * 32)
    key.chmod(0o644)
    # an insecure registry needs no identity: the outbox key alone is checked
    insecure = dataclasses.replace(
        config, registry=dataclasses.replace(config.registry, insecure=True)
    )
    with pytest.raises(IdentityError, match=r"outbox encryption key: .*mode 0644.*chmod 600"):
        asyncio.run(asyncio.wait_for(EdgeAgent(insecure).run(), 20))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("  encrypt_outbox: yes please\n", "encrypt_outbox must be true or false"),
        ('  identity_dir: ""\n', "identity_dir must not be empty"),
        ("  key_file: [1]\n", "key_file"),
    ],
)
def test_bad_security_values_are_reported(tmp_path: Path, extra: str, message: str) -> None:
    from thing_models.errors import ModelLoadError

    path = tmp_path / "edge.yaml"
    text = write_config(tmp_path, "127.0.0.1:1", 1).read_text(encoding="utf-8")
    path.write_text(
        text.replace("  identity_dir: identity\n  encrypt_outbox: true\n", extra), encoding="utf-8"
    )
    with pytest.raises(ModelLoadError, match=re.escape(message)):
        load_edge_config(path)


def test_an_insecure_agent_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_config(tmp_path, "127.0.0.1:1", 1)
    path.write_text(
        path.read_text(encoding="utf-8").replace(
            'registry: {address: "127.0.0.1:1"}',
            'registry: {address: "127.0.0.1:1", insecure: true}',
        ),
        encoding="utf-8",
    )
    agent = EdgeAgent(load_edge_config(path))

    async def briefly() -> None:
        task = asyncio.create_task(agent.run())
        await until(lambda: agent.status().running)
        agent.stop()
        await asyncio.wait_for(task, 15)

    with caplog.at_level(logging.WARNING):
        asyncio.run(briefly())
    assert "registry.insecure: plaintext" in caplog.text
    assert "unsigned commands accepted" in caplog.text


def test_a_corrupt_replay_state_stops_the_start(tmp_path: Path) -> None:
    signer = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = signer.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    store = offline_identity(tmp_path, EDGE, {"k": pem})
    store.replay_state_path.write_bytes(b'{"version": 1, "last_sequence": "x"}')
    store.replay_state_path.chmod(0o600)
    config = load_edge_config(write_config(tmp_path, "127.0.0.1:1", 1))
    with pytest.raises(IdentityError, match=r"replay\.json: not a replay state file"):
        asyncio.run(asyncio.wait_for(EdgeAgent(config).run(), 20))
