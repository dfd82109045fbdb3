"""Who-Is discovery: directed on loopback (separate simulator processes), broadcast between two
network namespaces joined by a veth pair (the tests run as root)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol_adapters.bacnet.discovery import discover
from protocol_adapters.bacnet.errors import BacnetConfigError, BacnetSegmentationError
from protocol_adapters.bacnet.mapping import ObjectId, draft_model
from protocol_adapters.bacnet.simulator import spawn, stop
from protocol_adapters.bacnet.stack import BacnetStack, parse_address
from thing_models import load_model_file
from thing_models.yaml_format import dump_model_yaml, load_model_text

REPO = Path(__file__).resolve().parents[2]
AHU_FILE = REPO / "examples" / "models" / "air-handling-unit.yaml"
AHU = load_model_file(AHU_FILE)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stack(**options: object) -> BacnetStack:
    return BacnetStack(f"127.0.0.1:{free_udp_port()}", timeout_s=1.0, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def device() -> Iterator[str]:
    address = f"127.0.0.1:{free_udp_port()}"
    proc = spawn(AHU_FILE, address, 1500)
    yield address
    stop(proc)


def test_directed_discovery_reads_objects_and_drafts_a_model(device: str) -> None:
    devices = asyncio.run(discover(stack(), low=1000, high=1999, address=device))
    assert [d.instance for d in devices] == [1500]
    found = devices[0]
    assert found.address == device
    assert found.name == "air-handling-unit-1500"
    assert found.vendor_id == 999
    assert len(found.objects) == 26  # device and network-port left out
    by_id = {o.object_id: o for o in found.objects}
    sat = by_id[ObjectId("analog-input", 1)]
    assert (sat.name, sat.description, sat.units) == (
        "supply_air_temp",
        "Supply air temperature (SAT)",
        "degrees-celsius",
    )
    assert by_id[ObjectId("multi-state-value", 1)].state_texts[:2] == ("Off", "Auto (schedule)")
    model = draft_model(found)
    assert load_model_text(dump_model_yaml(model), "draft.yaml") == model
    # the draft binds the same objects as the model the device follows
    assert AHU.bindings.bacnet is not None
    assert model.bindings.bacnet is not None
    original = {(p.object_type, p.instance) for p in AHU.bindings.bacnet.points}
    drafted = {(p.object_type, p.instance) for p in model.bindings.bacnet.points}
    assert drafted == original
    assert {p.id for p in model.properties} <= {p.id for p in AHU.properties}
    sat_prop = model.property("supply_air_temp")
    assert sat_prop is not None
    assert sat_prop.schema.unit == "°C"


def test_directed_discovery_without_range_and_out_of_range(device: str) -> None:
    assert [
        d.instance for d in asyncio.run(discover(stack(), address=device, read_objects=False))
    ] == [1500]
    assert asyncio.run(discover(stack(), low=1, high=10, address=device, timeout_s=0.5)) == []


def test_object_list_read_element_by_element_without_segmentation(device: str) -> None:
    """Our side accepts 50-byte answers and no segmentation: the 28-entry object list does not
    fit, the device aborts, and discovery reads the list one element at a time."""
    small = stack(max_apdu=50, segmentation=False)

    async def whole_list() -> None:
        app = await small.acquire()
        try:
            await app.who_is(1500, 1500, parse_address(device))
            request = app.read_property(parse_address(device), "device,1500", "object-list")
            await small.call(request, "object-list")
        finally:
            await small.release()

    with pytest.raises(BacnetSegmentationError, match="segmentation-not-supported"):
        asyncio.run(whole_list())
    devices = asyncio.run(discover(small, low=1500, high=1500, address=device))
    assert len(devices[0].objects) == 26


def test_silent_address_and_bad_arguments() -> None:
    silent = f"127.0.0.1:{free_udp_port()}"
    assert asyncio.run(discover(stack(), low=1, high=1, address=silent, timeout_s=0.3)) == []
    with pytest.raises(BacnetConfigError, match="both ends"):
        asyncio.run(discover(stack(), low=1))
    with pytest.raises(BacnetConfigError, match="not within"):
        asyncio.run(discover(stack(), low=10, high=5))
    with pytest.raises(BacnetConfigError, match="not a BACnet/IP address"):
        asyncio.run(discover(stack(), address="*"))


# --------------------------------------------------------------------------- broadcast


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def two_namespaces() -> Iterator[tuple[str, str]]:
    """Namespaces A (10.231.7.1/24) and B (10.231.7.2/24) joined by a veth pair."""
    tag = f"{os.getpid() % 100000}"
    ns_a, ns_b = f"bacA{tag}", f"bacB{tag}"
    veth_a, veth_b = f"vbA{tag}", f"vbB{tag}"
    try:
        _ip("netns", "add", ns_a)
        _ip("netns", "add", ns_b)
        _ip("link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
        _ip("link", "set", veth_a, "netns", ns_a)
        _ip("link", "set", veth_b, "netns", ns_b)
        for ns, dev, addr in ((ns_a, veth_a, "10.231.7.1/24"), (ns_b, veth_b, "10.231.7.2/24")):
            _ip("-n", ns, "addr", "add", addr, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield ns_a, ns_b
    finally:
        for ns in (ns_a, ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", veth_a], capture_output=True, check=False)


def test_broadcast_discovery_between_namespaces(
    two_namespaces: tuple[str, str], tmp_path: Path
) -> None:
    ns_a, ns_b = two_namespaces
    proc = spawn(AHU_FILE, "10.231.7.2/24:47808", 2001, prefix=("ip", "netns", "exec", ns_b))
    try:
        out = tmp_path / "draft.yaml"
        code = "import sys; from edge_agent.cli import main; sys.exit(main(sys.argv[1:]))"
        result = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns_a,
                sys.executable,
                "-c",
                code,
                "discover",
                "bacnet",
                "--local-address",
                "10.231.7.1/24:47808",
                "--timeout",
                "1.5",
                "-o",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=40,
            check=False,
        )
    finally:
        stop(proc)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "device 2001 at 10.231.7.2" in result.stdout
    model = load_model_file(out)
    assert model.bindings.bacnet is not None
    assert model.bindings.bacnet.device_instance == 2001
    assert len(model.properties) == 26
