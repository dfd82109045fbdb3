"""CoAP devices in the agent: the ``connection:`` settings (through load_edge_config, errors with
file:line:column), the driver factory with its shared client context, and ``simulate coap``."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import DeviceConfig, Protocol, load_edge_config
from edge_agent.drivers import make_driver as agent_make_driver
from edge_agent.errors import UnsupportedDevice
from edge_agent.protocols import coap as proto
from edge_agent.protocols.coap import CoapConnection, CoapScheme
from protocol_adapters.base import DeviceDriver
from protocol_adapters.coap.driver import CoapDriver, SharedClient
from thing_models import load_model_file
from thing_models.composition import FolderModelSource, flatten
from thing_models.errors import ModelLoadError
from thing_models.messages import Quality

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "examples" / "models"
PARKING = "community.parking/space-sensor@1"
HEAD = f"""\
edge_id: gw1
registry: {{address: "registry.example.org:7443"}}
models_dir: {MODELS}
devices:
"""  # devices start on line 5


def write(tmp_path: Path, devices: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(HEAD + devices, encoding="utf-8")
    return path


def errors(path: Path) -> list[str]:
    with pytest.raises(ModelLoadError) as info:
        load_edge_config(path)
    return [str(d) for d in info.value.diagnostics]


def device(tmp_path: Path, connection: str, model: str = PARKING) -> DeviceConfig:
    path = write(
        tmp_path,
        f"  - {{id: bay1, model: '{model}', protocol: coap, connection: {connection}}}\n",
    )
    (dev,) = load_edge_config(path).devices
    return dev


def test_connection_defaults(tmp_path: Path) -> None:
    dev = device(tmp_path, "{host: 10.30.0.17}")
    assert dev.connection == CoapConnection("10.30.0.17", 5683, CoapScheme.COAP, 5.0, True, 1.0)


def test_connection_every_key(tmp_path: Path) -> None:
    dev = device(
        tmp_path,
        "{host: bay.local, port: 5684, scheme: coap, timeout: 500ms, reliable: false, "
        "reobserve: 2s}",
    )
    assert dev.connection == CoapConnection("bay.local", 5684, CoapScheme.COAP, 0.5, False, 2.0)


@pytest.mark.parametrize(
    ("connection", "expected"),
    [
        (
            "{port: 5683}",
            "edge.yaml:5:87: error: devices[0].connection: missing required key 'host'",
        ),
        (
            "{host: 'not a host'}",
            "edge.yaml:5:94: error: devices[0].connection.host: invalid host (got 'not a host')",
        ),
        ("{host: h, port: 0}", "port out of range"),
        ("{host: h, port: '5683'}", "port must be an integer"),
        ("{host: h, scheme: coaps}", "invalid scheme"),
        ("{host: h, timeout: -1}", "invalid duration for timeout"),
        ("{host: h, reliable: 'yes'}", "reliable must be true or false"),
        ("{host: h, reobserv: 1s}", "did you mean 'reobserve'?"),
        ("{host: 7}", "host must be a string"),
        ("[h]", "expected a connection mapping"),
    ],
)
def test_connection_errors(tmp_path: Path, connection: str, expected: str) -> None:
    path = write(
        tmp_path,
        f"  - {{id: bay1, model: '{PARKING}', protocol: coap, connection: {connection}}}\n",
    )
    found = errors(path)
    assert any(expected in line for line in found), found
    assert all(line.startswith(str(path)) for line in found)


def test_make_driver_shares_one_client(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"  - {{id: a, model: '{PARKING}', protocol: coap, connection: {{host: 127.0.0.1}}}}\n"
        f"  - {{id: b, model: '{PARKING}', protocol: coap, "
        "connection: {host: '::1', port: 5700, timeout: 2s, reliable: false}}\n",
    )
    a, b = load_edge_config(path).devices
    shared: dict[object, object] = {}
    one = agent_make_driver(a, shared)
    two = agent_make_driver(b, shared)
    assert isinstance(one, CoapDriver)
    assert isinstance(two, CoapDriver)
    assert isinstance(one, DeviceDriver)
    assert one._client is two._client
    assert isinstance(shared[("coap", "client")], SharedClient)
    assert two.endpoint == "coap://[::1]:5700"
    assert two.timeout_s == 2.0
    assert "temperature" in one.pollable


def test_model_without_coap_binding(tmp_path: Path) -> None:
    meter = "community.energy/meter-3p@1"
    path = write(
        tmp_path, f"  - {{id: m, model: '{meter}', protocol: coap, connection: {{host: h}}}}\n"
    )
    assert any("has no coap binding" in line for line in errors(path))
    model = load_model_file(MODELS / "energy-meter-3p.yaml")
    dev = DeviceConfig("m", model.ref, Protocol.COAP, CoapConnection("h"), thing_model=model)
    with pytest.raises(UnsupportedDevice, match="has no coap binding"):
        proto.make_driver(dev, model, {})


def test_driver_reads_the_simulator_through_the_agent_factory(tmp_path: Path) -> None:
    from protocol_adapters.coap.simulator import CoapSimulator

    async def body() -> None:
        sim_dev = device(tmp_path, "{host: 127.0.0.1, port: 1}")
        assert sim_dev.thing_model is not None
        sim = CoapSimulator(sim_dev.thing_model, seed=3)
        port = await sim.start()
        dev = device(tmp_path, f"{{host: 127.0.0.1, port: {port}, timeout: 1s}}")
        driver = proto.make_driver(dev, sim_dev.thing_model, {})
        try:
            await driver.connect()
            readings = await driver.read_points(driver.pollable)
            assert readings["bay_id"] == (sim.value("bay_id"), Quality.GOOD, "")
        finally:
            await driver.close()
            await sim.stop()

    asyncio.run(asyncio.wait_for(body(), 20))


def test_simulate_command_arguments() -> None:
    parser = argparse.ArgumentParser()
    proto.add_simulate_command(parser.add_subparsers(dest="protocol"))
    args = parser.parse_args(["coap", "--model", "m.yaml", "--port", "0", "--tick-ms", "50"])
    assert (args.port, args.host, args.tick_ms, args.seed) == (0, "127.0.0.1", 50, 0)


def test_simulate_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:

    model = flatten(
        load_model_file(MODELS / "parking-space-sensor.yaml"), FolderModelSource(MODELS)
    )
    args = argparse.Namespace(port=70000, host="127.0.0.1", tick_ms=10, seed=0)
    assert asyncio.run(proto.simulate(model, args)) == 2
    meter = load_model_file(MODELS / "energy-meter-3p.yaml")
    assert asyncio.run(proto.simulate(meter, args)) == 1
    err = capsys.readouterr().err
    assert "--port must be 0..65535" in err
    assert "has no coap binding" in err


def test_simulate_runs_until_sigterm() -> None:
    """The simulator in its own process: it prints where it listens, serves GETs, and stops
    cleanly on SIGTERM."""
    script = (
        "import asyncio, sys\n"
        "from edge_agent.protocols import coap\n"
        "from thing_models import load_model_file\n"
        "from thing_models.composition import FolderModelSource, flatten\n"
        "import argparse\n"
        f"m = flatten(load_model_file({str(MODELS / 'parking-space-sensor.yaml')!r}), "
        f"FolderModelSource({str(MODELS)!r}))\n"
        "a = argparse.Namespace(port=0, host='127.0.0.1', tick_ms=50, seed=1)\n"
        "sys.exit(asyncio.run(coap.simulate(m, a)))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(
            "simulating community.parking/space-sensor@1.0.0 on coap://127.0.0.1:"
        )
        port = int(line.rsplit(":", 1)[1].split()[0])

        async def poll() -> dict[str, object]:

            model = flatten(
                load_model_file(MODELS / "parking-space-sensor.yaml"), FolderModelSource(MODELS)
            )
            assert model.bindings.coap is not None
            async with CoapDriver("127.0.0.1", port, model.bindings.coap, model) as driver:
                return dict(await driver.read_points({"bay_id"}))

        readings = asyncio.run(asyncio.wait_for(poll(), 10))
        assert readings["bay_id"] == ("SIM-bay_id", Quality.GOOD, "")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert out.strip() == "stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# --------------------------------------------------------------------------- through the agent


def test_agent_reports_observed_and_polled_coap_values(tmp_path: Path) -> None:
    """A CoAP simulator -> EdgeAgent (driver from this module, Observe and GET polling) -> a
    real registry: observed values (pushed) and polled ones reach the twin."""
    from cloud_registry.storage.sqlite import SqliteStorage
    from tests.cloud_registry.server_fixtures import running_registry

    storage = SqliteStorage(tmp_path / "registry.db")
    storage.migrate()
    try:
        with running_registry(storage) as registry:
            registry.publish_file(MODELS / "device-health.yaml")
            registry.publish_file(MODELS / "parking-space-sensor.yaml")
            registry.register("bay-1", model="community.parking/space-sensor@1.0.0")
            asyncio.run(asyncio.wait_for(_agent_scenario(tmp_path, registry), 30))
    finally:
        storage.close()


async def _agent_scenario(tmp_path: Path, registry: Any) -> None:
    from edge_agent.supervisor import EdgeAgent
    from protocol_adapters.coap.simulator import CoapSimulator

    model = flatten(
        load_model_file(MODELS / "parking-space-sensor.yaml"), FolderModelSource(MODELS)
    )
    sim = CoapSimulator(model, seed=4)
    port = await sim.start()
    sim.set_value("occupied", False)
    config_file = tmp_path / "edge.yaml"
    config_file.write_text(
        f"""edge_id: edge-1
registry: {{address: "{registry.target}", insecure: true}}
storage: {{outbox: state/outbox.db}}
models_dir: {MODELS}
devices:
  - id: bay-1
    model: {PARKING}
    protocol: coap
    connection: {{host: 127.0.0.1, port: {port}, timeout: 1s}}
    poll_interval: 200ms
""",
        encoding="utf-8",
    )
    agent = EdgeAgent(
        load_edge_config(config_file),
        uplink_options={"backoff_initial_s": 0.1, "backoff_max_s": 0.5},
    )
    task = asyncio.create_task(agent.run())

    def twin() -> dict[str, Any]:
        return dict(registry.storage.get_twin("bay-1").reported)

    async def until(predicate: Callable[[], bool]) -> None:
        while not predicate():
            await asyncio.sleep(0.05)

    try:
        await until(lambda: "occupied" in twin() and "bay_id" in twin())
        assert twin()["occupied"].value is False
        assert twin()["bay_id"].value == "SIM-bay_id"
        sim.set_value("occupied", True)  # pushed by Observe, not polled
        await until(lambda: twin()["occupied"].value is True)
        assert agent.status().devices["bay-1"].diagnostics.state == "online"
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)
        await sim.stop()
