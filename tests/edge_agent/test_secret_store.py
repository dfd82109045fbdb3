"""Secrets at rest on the edge (edge_agent.secret_store): encrypted files, the CLI, and a
configuration naming an MQTT password as {secret: NAME}."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

from edge_agent.cli import main
from edge_agent.config import load_edge_config
from edge_agent.errors import UnsupportedDevice
from edge_agent.protocols.mqtt import MqttConnection, make_driver
from edge_agent.secret_store import SHARED_KEY, SecretError, SecretRef, SecretStore
from security.at_rest import FileKeyProvider
from thing_models.errors import ThingModelError

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "examples" / "models"


def config_file(tmp_path: Path, password: str = "{secret: broker-pw}") -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(
        f"""edge_id: edge-1
registry: {{address: "127.0.0.1:9", insecure: true}}
storage: {{outbox: state/outbox.db}}
models_dir: {MODELS}
security: {{identity_dir: identity}}
devices:
  - id: door-1
    model: community.access/door-controller@1
    protocol: mqtt
    connection: {{host: 127.0.0.1, username: edge, password: {password}}}
""",
        encoding="utf-8",
    )
    return path


def store(tmp_path: Path) -> SecretStore:
    return SecretStore(tmp_path / "secrets", FileKeyProvider(tmp_path / "key"))


def test_secrets_are_encrypted_owner_only_and_bound_to_their_name(tmp_path: Path) -> None:
    secrets = store(tmp_path)
    path = secrets.put("broker-pw", b"s3cret value")
    assert secrets.get("broker-pw") == b"s3cret value"
    assert b"s3cret" not in path.read_bytes()
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "secrets").stat().st_mode & 0o777 == 0o700
    assert secrets.names() == ["broker-pw"]
    # one secret's file put in another's place does not decrypt (the name is bound in)
    secrets.put("other", b"x")
    os.replace(tmp_path / "secrets" / "other.enc", tmp_path / "secrets" / "stolen.enc")
    with pytest.raises(SecretError, match=r"'stolen'.*authentication failed"):
        secrets.get("stolen")
    # another key cannot read it
    stranger = SecretStore(tmp_path / "secrets", FileKeyProvider(tmp_path / "other-key"))
    with pytest.raises(SecretError, match="authentication failed"):
        stranger.get("broker-pw")
    assert secrets.delete("broker-pw")
    assert not secrets.delete("broker-pw")


@pytest.mark.parametrize("name", ["", "../etc/passwd", "a/b", "x" * 65, "-lead", "sp ace"])
def test_bad_secret_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(SecretError, match="secret name"):
        store(tmp_path).put(name, b"v")


def test_missing_loose_or_altered_secrets_say_what_to_do(tmp_path: Path) -> None:
    secrets = store(tmp_path)
    with pytest.raises(SecretError, match="run 'edge-agent secret set nope'"):
        secrets.get("nope")
    path = secrets.put("pw", b"v")
    path.chmod(0o644)
    with pytest.raises(SecretError, match="readable by others"):
        secrets.get("pw")
    path.chmod(0o600)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(SecretError, match="authentication failed"):
        secrets.get("pw")
    with pytest.raises(SecretError, match="at most"):
        secrets.put("big", b"x" * (64 * 1024 + 1))


def test_the_cli_stores_lists_and_removes_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"hunter2\n")))
    assert main(["secret", "set", "broker-pw", "--config", str(config)]) == 0
    assert "stored secret broker-pw" in capsys.readouterr().out
    assert main(["secret", "list", "--config", str(config)]) == 0
    assert capsys.readouterr().out.split() == ["broker-pw"]
    loaded = load_edge_config(config)
    secrets = SecretStore.for_config(loaded)
    assert secrets is not None
    assert secrets.get("broker-pw") == b"hunter2"
    assert main(["secret", "rm", "broker-pw", "--config", str(config)]) == 0
    assert main(["secret", "rm", "broker-pw", "--config", str(config)]) == 1
    assert "no secret 'broker-pw'" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert main(["secret", "set", "empty", "--config", str(config)]) == 1
    assert "empty value refused" in capsys.readouterr().err


def test_a_password_named_as_a_secret_is_read_when_the_driver_is_made(tmp_path: Path) -> None:
    config = load_edge_config(config_file(tmp_path))
    (device,) = config.devices
    assert isinstance(device.connection, MqttConnection)
    assert device.connection.password == SecretRef("broker-pw")
    assert device.thing_model is not None
    secrets = SecretStore.for_config(config)
    assert secrets is not None
    shared: dict[object, object] = {SHARED_KEY: secrets}
    with pytest.raises(UnsupportedDevice, match="password: secret 'broker-pw' not found"):
        make_driver(device, device.thing_model, shared)
    secrets.put("broker-pw", b"hunter2")
    driver = make_driver(device, device.thing_model, shared)
    assert driver.endpoint == "mqtt://127.0.0.1:1883 device door-1"
    links = [v for k, v in shared.items() if isinstance(k, tuple) and k[0] == "mqtt"]
    assert [link.password for link in links] == ["hunter2"]  # type: ignore[attr-defined]


def test_a_bad_secret_reference_is_a_located_config_error(tmp_path: Path) -> None:
    with pytest.raises(ThingModelError) as info:
        load_edge_config(config_file(tmp_path, "{secret: ../pw}"))
    assert "edge.yaml:10:" in str(info.value)
    assert "not a secret name" in str(info.value)
    with pytest.raises(ThingModelError, match="unknown key 'secrte'"):
        load_edge_config(config_file(tmp_path, "{secrte: pw}"))
