"""``edge-agent discover bacnet --register``: BACnet simulators in their own processes on
127.0.0.1 (directed Who-Is), a real registry (plain text, and one-way TLS with an API key)."""

from __future__ import annotations

import argparse
import asyncio
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_registry.api.v1.models_pb2 import GetModelRequest, PublishModelRequest
from cloud_registry.ca_admin import new_api_key
from cloud_registry.storage.security_store import ApiKeyRecord
from cloud_registry.storage.sqlite import SqliteStorage
from edge_agent.protocols.bacnet import _device_id, add_discover_command, discover
from protocol_adapters.bacnet.mapping import DiscoveredDevice
from protocol_adapters.bacnet.simulator import spawn, stop
from tests.cloud_registry.server_fixtures import (
    Registry,
    SecureRegistry,
    running_registry,
    running_secure_registry,
)
from thing_models import load_model_file
from thing_models.model import SemVer
from thing_models.yaml_format import dump_model_yaml

MODELS = Path(__file__).resolve().parents[2] / "examples" / "models"
AHU_FILE = MODELS / "air-handling-unit.yaml"
AHU_REF = "community.hvac/air-handling-unit@1.0.0"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def simulators() -> Iterator[dict[int, str]]:
    """Two BACnet devices (instances 1500 and 1501), each in its own process."""
    addresses = {1500: f"127.0.0.1:{free_udp_port()}", 1501: f"127.0.0.1:{free_udp_port()}"}
    procs = [spawn(AHU_FILE, address, instance) for instance, address in addresses.items()]
    try:
        yield addresses
    finally:
        for proc in procs:
            stop(proc)


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Registry]:
    storage = SqliteStorage(tmp_path / "registry.db")
    storage.migrate()
    try:
        with running_registry(storage) as registry:
            yield registry
    finally:
        storage.close()


@pytest.fixture
def secure_registry(tmp_path: Path) -> Iterator[SecureRegistry]:
    storage = SqliteStorage(tmp_path / "secure.db")
    storage.migrate()
    try:
        with running_secure_registry(storage, tmp_path / "ca") as secure:
            yield secure
    finally:
        storage.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent")
    found = parser.add_subparsers(dest="command").add_parser("discover")
    add_discover_command(found.add_subparsers(dest="protocol"))
    return parser


def run(
    tmp_path: Path, instance: int, address: str, *options: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """``edge-agent discover bacnet`` directed at one device, the draft written to
    ``tmp_path``: (exit code, stdout, stderr)."""
    args = _parser().parse_args(
        [
            "discover",
            "bacnet",
            "--range",
            f"{instance}-{instance}",
            "--address",
            address,
            "--local-address",
            f"127.0.0.1:{free_udp_port()}",
            "--timeout",
            "2",
            "-o",
            str(tmp_path / f"draft-{instance}.yaml"),
            *options,
        ]
    )
    code = asyncio.run(asyncio.wait_for(discover(args), 30))
    out, err = capsys.readouterr()
    return code, out, err


def test_register_publishes_the_draft_and_registers_the_device(
    simulators: dict[int, str],
    plain: Registry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    options = ("--register", "--registry", plain.target, "--edge", "edge-1", "--site", "site-a")
    code, out, err = run(
        tmp_path, 1500, simulators[1500], *options, "--id-prefix", "p3.", capsys=capsys
    )
    assert code == 0, err
    device = plain.storage.get_device("p3.air-handling-unit-1500")
    assert device.model == "discovered.bacnet/device-1500@0.1.0"
    assert (device.edge_id, device.site) == ("edge-1", "site-a")
    assert device.labels == {"bacnet_instance": "1500", "bacnet_address": simulators[1500]}
    assert "registered" in out
    assert "published" in out
    draft = load_model_file(tmp_path / "draft-1500.yaml")  # the file is written as before
    stored = plain.models.GetModel(GetModelRequest(ref=device.model), timeout=10)
    assert stored.property_count == len(draft.properties) == 26
    assert draft.bindings.bacnet is not None
    assert draft.bindings.bacnet.device_instance == 1500

    code, out, err = run(
        tmp_path, 1500, simulators[1500], *options, "--id-prefix", "p3.", capsys=capsys
    )
    assert code == 0, err
    assert "exists" in out
    assert "unchanged" in out
    assert len(plain.snapshot()[1]) == 1


def test_a_device_id_taken_by_another_model_is_an_error_naming_both(
    simulators: dict[int, str],
    plain: Registry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plain.publish_file(AHU_FILE)
    plain.register("air-handling-unit-1500", model=AHU_REF)
    options = ("--register", "--registry", plain.target, "--edge", "edge-1", "--site", "site-a")
    code, out, err = run(tmp_path, 1500, simulators[1500], *options, capsys=capsys)
    assert code == 1
    assert AHU_REF in err
    assert "discovered.bacnet/device-1500@0.1.0" in err
    assert "error" in out
    assert plain.storage.get_device("air-handling-unit-1500").model == AHU_REF


def test_a_draft_version_published_with_other_content_is_an_error_naming_it(
    simulators: dict[int, str],
    plain: Registry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = replace(
        load_model_file(AHU_FILE), name="discovered.bacnet/device-1501", version=SemVer(0, 1, 0)
    )
    plain.models.PublishModel(PublishModelRequest(document=dump_model_yaml(other)), timeout=10)
    options = ("--register", "--registry", plain.target, "--edge", "edge-1", "--site", "site-a")
    code, _, err = run(tmp_path, 1501, simulators[1501], *options, capsys=capsys)
    assert code == 1
    assert "discovered.bacnet/device-1501@0.1.0 is already published with other content" in err
    assert plain.snapshot()[1] == ()


def test_register_over_one_way_tls_with_an_api_key(
    simulators: dict[int, str],
    secure_registry: SecureRegistry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    text, key_id, digest = new_api_key()
    record = ApiKeyRecord(key_id, "installer", "site-a", frozenset({"admin"}), digest, 1)
    secure_registry.storage.security.add_api_key(record)
    root = secure_registry.ca_dir / "root.pem"
    options = [
        "--register",
        "--registry",
        secure_registry.enroll_address,
        "--edge",
        "edge-1",
        "--site",
        "site-a",
        "--tls-ca",
        str(root),
    ]
    code, _, err = run(
        tmp_path, 1501, simulators[1501], *options, "--api-key", "ciotk1.bad", capsys=capsys
    )
    assert code == 1
    assert "air-handling-unit-1501" in err
    code, out, err = run(
        tmp_path, 1501, simulators[1501], *options, "--api-key", text, capsys=capsys
    )
    assert code == 0, err
    device = secure_registry.storage.get_device("air-handling-unit-1501")
    assert device.model == "discovered.bacnet/device-1501@0.1.0"
    assert "registered" in out


def test_unreachable_registry_is_a_failure(
    simulators: dict[int, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{sock.getsockname()[1]}"
    options = ("--register", "--registry", closed, "--edge", "e", "--site", "s")
    code, _, err = run(tmp_path, 1500, simulators[1500], *options, capsys=capsys)
    assert code == 1
    assert f"cannot reach the registry at {closed}" in err


BASE = ["--register", "--registry", "127.0.0.1:50051", "--edge", "edge-1", "--site", "site-a"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--register", "--edge", "e", "--site", "s"], "needs --registry"),
        (["--register", "--registry", "nohost", "--edge", "e", "--site", "s"], "host:port"),
        (["--register", "--registry", "h:99999", "--edge", "e", "--site", "s"], "host:port"),
        (["--register", "--registry", ":50051", "--edge", "e", "--site", "s"], "host:port"),
        (["--register", "--registry", "a b:1", "--edge", "e", "--site", "s"], "host:port"),
        (["--register", "--registry", "h:1", "--site", "s"], "needs --edge"),
        (["--register", "--registry", "h:1", "--edge", "e"], "needs --site"),
        (["--register", "--registry", "h:1", "--edge", "e f", "--site", "s"], "without whitespace"),
        (["--register", "--registry", "h:1", "--edge", "x" * 129, "--site", "s"], "longer than"),
        (["--register", "--registry", "h:1", "--edge", "e\x00", "--site", "s"], "without white"),
        (["--register", "--registry", "h:1", "--edge", "e", "--site", "s\n"], "needs --site"),
        ([*BASE, "--id-prefix", "a\tb"], "without whitespace"),
        ([*BASE, "--id-prefix", "p" * 65], "longer than 64"),
        (["--edge", "edge-1"], "--edge: only with --register"),
        (["--registry", "h:1", "--api-key", "k"], "--registry, --api-key: only with --register"),
        ([*BASE, "--client-cert", "c.pem"], "--client-cert and --client-key together"),
        ([*BASE, "--client-cert", "c", "--client-key", "k"], "need --tls-ca"),
        ([*BASE, "--api-key", "ciotk1.x"], "--api-key needs --tls-ca"),
        ([*BASE, "--tls-ca", "r.pem", "--api-key", "k\r\nx-evil: 1"], "printable ASCII"),
        ([*BASE, "--tls-ca", "r.pem", "--api-key", "clé"], "printable ASCII"),
        ([*BASE, "--tls-ca", "/nonexistent/root.pem"], "cannot read TLS file /nonexistent"),
    ],
)
def test_bad_registration_options_are_usage_errors(
    options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before any packet is sent: no simulator, no registry needed."""
    args = _parser().parse_args(
        [
            *("discover", "bacnet", "--address", "127.0.0.1:1", "--local-address", "127.0.0.1:1"),
            *options,
        ]
    )
    assert asyncio.run(discover(args)) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge-agent discover bacnet: ")
    assert message in err


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("AHU 1 (Roof)", "ahu-1-roof"),
        ("", "bacnet-7"),
        ("   ", "bacnet-7"),
        ("Zähler/Ost", "z-hler-ost"),
        ("..--", "bacnet-7"),
        ("x" * 300, "x" * 128),
    ],
)
def test_device_ids_from_names(name: str, expected: str) -> None:
    assert _device_id("", DiscoveredDevice(7, "127.0.0.1:47808", name=name)) == expected


@given(
    prefix=st.text(st.characters(codec="ascii", categories=["L", "N", "P"]), max_size=64),
    name=st.text(max_size=400),
)
def test_device_ids_are_always_valid(prefix: str, name: str) -> None:
    dev_id = _device_id(prefix, DiscoveredDevice(7, "a", name=name))
    assert 0 < len(dev_id) <= 128
    assert all(ch.isprintable() and not ch.isspace() for ch in dev_id)
