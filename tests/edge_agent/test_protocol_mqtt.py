"""MQTT in the edge agent: connection settings, the driver factory, ``simulate mqtt``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from cloud_registry.storage.base import EventFilter
from cloud_registry.storage.sqlite import SqliteStorage
from edge_agent.config import load_edge_config
from edge_agent.drivers import make_driver
from edge_agent.errors import UnsupportedDevice
from edge_agent.protocols.mqtt import (
    MqttConnection,
    add_simulate_command,
    parse_host_port,
)
from edge_agent.supervisor import EdgeAgent
from protocol_adapters.mqtt.driver import MqttDriver
from protocol_adapters.mqtt.simulator import MqttSimulator
from protocol_adapters.mqtt.tls import TlsSettings
from tests.cloud_registry.server_fixtures import Registry, running_registry
from tests.mosquitto import Mosquitto, make_tls_files, running_mosquitto
from thing_models.composition import FolderModelSource, flatten
from thing_models.errors import ModelLoadError
from thing_models.yaml_format import load_model_file

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "examples" / "models"
DOOR = "community.access/door-controller@1"
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


def test_connection_with_every_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
  - id: door-1
    model: {DOOR}
    protocol: mqtt
    connection:
      host: broker.local
      port: 8883
      client_id: gw1-mqtt
      username: edge
      password: s3cret
      device_id: entrance-a
      timeout: 500ms
      max_payload: 64 KiB
      keepalive: 1m
""",
    )
    (device,) = load_edge_config(path).devices
    assert device.connection == MqttConnection(
        "broker.local", 8883, "gw1-mqtt", "edge", "s3cret", "entrance-a", 0.5, 65536, 60
    )
    assert "s3cret" not in repr(device.connection)


def test_connection_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"  - {{id: d1, model: '{DOOR}', protocol: mqtt, connection: {{host: 127.0.0.1}}}}\n",
    )
    (device,) = load_edge_config(path).devices
    assert device.connection == MqttConnection("127.0.0.1")


@pytest.mark.parametrize(
    ("connection", "anchor", "expected"),
    [
        ("{port: 1883}", "{port", "devices[0].connection: missing required key 'host'"),
        ("{host: 127.0.0.1, prot: 1}", "prot", "connection.prot: unknown key 'prot'"),
        ("{host: 'bad host!'}", "'bad", "connection.host: invalid host"),
        ("{host: h, port: 70000}", "70000", "port out of range"),
        ("{host: h, client_id: 'a b'}", "'a b'", "invalid client_id"),
        ("{host: h, device_id: 'a/b'}", "'a/b'", "invalid device_id"),
        ("{host: h, timeout: -1}", "-1", "invalid duration for timeout"),
        ("{host: h, max_payload: 1 TB}", "1 TB", "invalid max_payload (got '1 TB')"),
        ("{host: h, max_payload: 0}", "0}", "invalid max_payload (got 0)"),
        ("{host: h, keepalive: 100000}", "100000", "keepalive out of range"),
        ("{host: h, password: x}", "x}", "password without username (got '***')"),
    ],
)
def test_bad_connections_are_located(
    tmp_path: Path, connection: str, anchor: str, expected: str
) -> None:
    line = f"  - {{id: d1, model: '{DOOR}', protocol: mqtt, connection: {connection}}}"
    path = write(tmp_path, line + "\n")
    column = line.index(anchor, line.index("connection")) + 1
    found = errors(path)
    assert len(found) == 1, found
    assert found[0].startswith(f"{path}:5:{column}: error: "), found
    assert expected in found[0]


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"  - {{id: d1, model: '{DOOR}', protocol: mqtt, connection: {{host: h, usrname: u}}}}\n",
    )
    assert any("did you mean 'username'?" in e for e in errors(path))


def test_devices_on_one_broker_share_one_link(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "".join(
            f"  - {{id: d{i}, model: '{DOOR}', protocol: mqtt, connection: {{host: {host}}}}}\n"
            for i, host in enumerate(("127.0.0.1", "127.0.0.1", "broker2"))
        ),
    )
    shared: dict[object, object] = {}
    drivers = [make_driver(device, shared) for device in load_edge_config(path).devices]
    assert all(isinstance(d, MqttDriver) for d in drivers)
    links = [d.link for d in drivers if isinstance(d, MqttDriver)]
    assert links[0] is links[1]
    assert links[0] is not links[2]
    assert len(shared) == 2
    assert drivers[0].endpoint == "mqtt://127.0.0.1:1883 device d0"


def test_device_id_override_goes_into_topics(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"  - {{id: d1, model: '{DOOR}', protocol: mqtt, "
        "connection: {host: h, device_id: entrance-a}}\n",
    )
    (device,) = load_edge_config(path).devices
    driver = make_driver(device, {})
    assert isinstance(driver, MqttDriver)
    assert ("access/entrance-a/state", 1) in driver.filters


def test_model_without_mqtt_binding_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "  - {id: m, model: 'community.energy/meter-3p@1', protocol: mqtt, "
        "connection: {host: h}}\n",
    )
    assert any("has no mqtt binding" in e for e in errors(path))


def test_driver_factory_refuses_a_foreign_connection(tmp_path: Path) -> None:
    from edge_agent.protocols import mqtt

    path = write(
        tmp_path,
        f"  - {{id: d1, model: '{DOOR}', protocol: mqtt, connection: {{host: h}}}}\n",
    )
    (device,) = load_edge_config(path).devices
    assert device.thing_model is not None
    with pytest.raises(UnsupportedDevice, match="not an MQTT connection"):
        mqtt.make_driver(
            device.__class__(device.id, device.model, device.protocol, object()),  # type: ignore[arg-type]
            device.thing_model,
            {},
        )


# --------------------------------------------------------------------------- simulate


@pytest.mark.parametrize(
    ("text", "expected"),
    [("h", ("h", 1883)), ("h:1", ("h", 1)), ("[::1]:9", ("::1", 9)), ("[::1]", ("::1", 1883))],
)
def test_parse_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["h:0", "h:x", ":1", "[::1]x", "h:70000"])
def test_parse_host_port_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_host_port(text)


def test_simulate_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_simulate_command(parser.add_subparsers(dest="protocol"))
    args = parser.parse_args(["mqtt", "--model", "m.yaml", "--broker", "127.0.0.1:1999"])
    assert (args.broker, args.device_id, args.tick_ms) == (("127.0.0.1", 1999), "sim-1", 1000)
    with pytest.raises(SystemExit):
        parser.parse_args(["mqtt", "--model", "m.yaml", "--broker", "h:99999"])


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with running_mosquitto(tmp_path) as running:
        yield running


_SIMULATE = """
import argparse, asyncio, sys
from pathlib import Path
from edge_agent.protocols.mqtt import add_simulate_command, simulate
from thing_models import load_model_file
from thing_models.composition import FolderModelSource, flatten
parser = argparse.ArgumentParser()
add_simulate_command(parser.add_subparsers(dest="protocol"))
args = parser.parse_args(sys.argv[1:])
model = flatten(load_model_file(args.model), FolderModelSource(args.model.parent))
sys.exit(asyncio.run(simulate(model, args)))
"""


def _simulate(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", _SIMULATE, "mqtt", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )


def test_simulate_publishes_until_sigterm(broker: Mosquitto) -> None:
    async def first_state() -> dict[str, object]:
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.subscribe("access/door-7/state", qos=1)
            process = _simulate(
                "--model",
                str(MODELS / "access-control-door.yaml"),
                "--broker",
                broker.address,
                "--device-id",
                "door-7",
                "--tick-ms",
                "50",
            )
            try:
                async for message in client.messages:
                    state: dict[str, object] = json.loads(bytes(message.payload))
                    return state
            finally:
                process.send_signal(signal.SIGTERM)
                out, err = process.communicate(timeout=20)
                assert process.returncode == 0, err
                assert out.splitlines() == [
                    "simulating community.access/door-controller@1.0.0 as device door-7 "
                    f"on mqtt://{broker.address} (MQTT)",
                    "stopped",
                ]
        raise AssertionError("no message")

    state = asyncio.run(asyncio.wait_for(first_state(), 30))
    assert set(state) == {"door", "mode", "reader", "backup"}


def test_simulate_without_a_broker_fails_cleanly(tmp_path: Path) -> None:
    from tests.mosquitto import free_port

    process = _simulate(
        "--model", str(MODELS / "access-control-door.yaml"), "--broker", f"127.0.0.1:{free_port()}"
    )
    out, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "edge-agent simulate mqtt: cannot connect to 127.0.0.1:" in err
    assert out == ""


# --------------------------------------------------------------------------- through the agent


def test_agent_ingests_mqtt_devices_and_sends_them_commands(
    tmp_path: Path, broker: Mosquitto
) -> None:

    door_model = flatten(
        load_model_file(MODELS / "access-control-door.yaml"), FolderModelSource(MODELS)
    )

    def reported(registry: Registry, device_id: str) -> dict[str, Any]:
        return dict(registry.storage.get_twin(device_id).reported)

    async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():  # the registry has no change feed to await here
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.05)

    async def scenario(registry: Registry) -> None:
        config_path = tmp_path / "edge.yaml"
        config_path.write_text(
            f"""edge_id: edge-1
registry: {{address: "{registry.target}", insecure: true}}
storage: {{outbox: state/outbox.db}}
models_dir: {MODELS}
devices:
  - id: door-1
    model: {DOOR}
    protocol: mqtt
    connection: {{host: 127.0.0.1, port: {broker.port}, timeout: 2s}}
    reconnect: {{min: 100ms, max: 400ms}}
""",
            encoding="utf-8",
        )
        sim = MqttSimulator(door_model, broker.host, broker.port, "door-1", tick_ms=None)
        agent = EdgeAgent(
            load_edge_config(config_path),
            uplink_options={"backoff_initial_s": 0.1, "backoff_max_s": 0.5},
        )
        task = asyncio.create_task(agent.run())
        try:
            # the simulator publishes its state once (no ticks, not retained): subscribe first
            await until(lambda: agent.status().devices["door-1"].phase == "polling")
            await sim.start()
            await until(lambda: "lock_state" in reported(registry, "door-1"))
            twin = reported(registry, "door-1")
            assert twin["lock_state"].value == sim.values["lock_state"]
            assert twin["lock_state"].quality == "good"
            status = agent.status().devices["door-1"]
            assert status.diagnostics.state == "online"
            assert status.endpoint == f"mqtt://127.0.0.1:{broker.port} device door-1"

            assert await agent.write_property("door-1", "held_open_limit", 45) == 45
            assert sim.values["held_open_limit"] == 45
            outputs = await agent.invoke_service("door-1", "unlock", {"duration": 3})
            assert set(outputs) >= {"unlocked"}

            # a malformed message degrades the device; the agent and the stream carry on
            async with aiomqtt.Client(broker.host, broker.port) as client:
                await client.publish("access/door-1/state", b'{"door": ', qos=1)
            await until(lambda: agent.status().devices["door-1"].diagnostics.errors >= 1)
            assert "malformed JSON" in agent.status().devices["door-1"].diagnostics.last_error
            async with aiomqtt.Client(broker.host, broker.port) as client:
                await client.publish("access/door-1/state", b'{"door": {"lock": "jammed"}}', qos=1)
            await until(lambda: reported(registry, "door-1")["lock_state"].value == "jammed")
        finally:
            agent.stop()
            await asyncio.wait_for(task, 15)
            await sim.stop()

    storage = SqliteStorage(tmp_path / "registry.db")
    storage.migrate()
    try:
        with running_registry(storage) as registry:
            registry.publish_file(MODELS / "device-health.yaml")
            registry.publish_file(MODELS / "access-control-door.yaml")
            registry.register("door-1", model=DOOR.replace("@1", "@1.0.0"))
            asyncio.run(asyncio.wait_for(scenario(registry), 40))
    finally:
        storage.close()


# --------------------------------------------------------------------------- stale_after, tls


def _tls_device(tls: str) -> str:
    return f"  - {{id: d1, model: '{DOOR}', protocol: mqtt, connection: {{host: h, tls: {tls}}}}}\n"


def test_stale_after_and_tls_paths_relative_to_the_config(tmp_path: Path) -> None:
    pki = make_tls_files(tmp_path / "pki")
    path = write(
        tmp_path,
        f"""\
  - id: door-1
    model: {DOOR}
    protocol: mqtt
    connection:
      host: 127.0.0.1
      port: 8883
      stale_after: 5m
      tls: {{ca: pki/ca.pem, cert: pki/client.pem, key: {pki.client_key}}}
""",
    )
    (device,) = load_edge_config(path).devices
    connection = device.connection
    assert isinstance(connection, MqttConnection)
    assert connection.stale_after_s == 300
    assert connection.tls == TlsSettings(pki.ca, pki.client_cert, pki.client_key, False)
    driver = make_driver(device, {})
    assert isinstance(driver, MqttDriver)
    assert driver.stale_after_s == 300
    assert driver.endpoint == "mqtts://127.0.0.1:8883 device door-1"
    assert driver.link.tls == connection.tls


def test_stale_after_defaults_to_never(tmp_path: Path) -> None:
    path = write(
        tmp_path, f"  - {{id: d1, model: '{DOOR}', protocol: mqtt, connection: {{host: h}}}}\n"
    )
    (device,) = load_edge_config(path).devices
    assert isinstance(device.connection, MqttConnection)
    assert device.connection.stale_after_s is None
    assert device.connection.tls is None


def test_devices_with_other_tls_settings_get_their_own_link(tmp_path: Path) -> None:
    make_tls_files(tmp_path / "pki")
    path = write(
        tmp_path,
        _tls_device("{ca: pki/ca.pem}").replace("d1", "a")
        + _tls_device("{ca: pki/ca.pem}").replace("d1", "b")
        + _tls_device("{insecure_skip_verify: true}").replace("d1", "c"),
    )
    shared: dict[object, object] = {}
    drivers = [make_driver(device, shared) for device in load_edge_config(path).devices]
    links = [d.link for d in drivers if isinstance(d, MqttDriver)]
    assert links[0] is links[1]
    assert links[0] is not links[2]


def test_an_unreadable_tls_file_refuses_the_device(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate", encoding="utf-8")
    path = write(tmp_path, _tls_device("{ca: ca.pem}"))
    (device,) = load_edge_config(path).devices
    with pytest.raises(UnsupportedDevice, match=r"mqtts://h:1883: tls ca .*ca\.pem: .*PEM"):
        make_driver(device, {})


@pytest.mark.parametrize(
    ("connection", "anchor", "expected"),
    [
        ("{host: h, stale_after: -1}", "-1", "invalid duration for stale_after"),
        ("{host: h, stale_after: soon}", "soon", "invalid duration for stale_after"),
        ("{host: h, tls: yes}", "yes", "connection.tls: expected a tls mapping"),
        ("{host: h, tls: {ca: ca.pem, crt: x}}", "crt", "connection.tls.crt: unknown key 'crt'"),
        ("{host: h, tls: {ca: nope.pem}}", "nope.pem", "tls ca file not found: "),
        ("{host: h, tls: {ca: ''}}", "''", "tls ca must not be empty"),
        ("{host: h, tls: {ca: [a]}}", "[a]", "connection.tls.ca"),
        ("{host: h, tls: {key: ca.pem}}", "ca.pem}", "tls key without cert"),
        (
            "{host: h, tls: {ca: ca.pem, insecure_skip_verify: true}}",
            "true",
            "insecure_skip_verify with a ca",
        ),
        ("{host: h, tls: {insecure_skip_verify: 'yes'}}", "'yes'", "must be true or false"),
    ],
)
def test_bad_tls_and_stale_after_are_located(
    tmp_path: Path, connection: str, anchor: str, expected: str
) -> None:
    (tmp_path / "ca.pem").write_text("x", encoding="utf-8")
    line = f"  - {{id: d1, model: '{DOOR}', protocol: mqtt, connection: {connection}}}"
    path = write(tmp_path, line + "\n")
    column = line.index(anchor, line.index("connection")) + 1
    found = errors(path)
    assert len(found) == 1, found
    assert found[0].startswith(f"{path}:5:{column}: error: "), found
    assert expected in found[0]


def test_agent_reports_a_silent_device_bad_with_a_diagnostic_event(
    tmp_path: Path, broker: Mosquitto
) -> None:
    def events(registry: Registry) -> list[Any]:
        page = registry.storage.list_events(EventFilter(device_id="door-1"), "", 100)
        return [e for e in page.items if e.name == "_diagnostic"]

    async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():  # the registry has no change feed to await here
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.05)

    async def scenario(registry: Registry) -> None:
        config_path = tmp_path / "edge.yaml"
        config_path.write_text(
            f"""edge_id: edge-1
registry: {{address: "{registry.target}", insecure: true}}
storage: {{outbox: state/outbox.db}}
models_dir: {MODELS}
devices:
  - id: door-1
    model: {DOOR}
    protocol: mqtt
    connection: {{host: 127.0.0.1, port: {broker.port}, stale_after: 400ms}}
""",
            encoding="utf-8",
        )
        agent = EdgeAgent(
            load_edge_config(config_path),
            uplink_options={"backoff_initial_s": 0.1, "backoff_max_s": 0.5},
        )
        task = asyncio.create_task(agent.run())
        state = {"door": {"contact": "closed", "lock": "locked"}, "mode": "normal"}

        def lock() -> Any:
            return registry.storage.get_twin("door-1").reported.get("lock_state")

        try:
            await until(lambda: agent.status().devices["door-1"].phase == "polling")
            async with aiomqtt.Client(broker.host, broker.port) as device:
                await device.publish("access/door-1/state", json.dumps(state), qos=1)
            await until(lambda: lock() is not None and lock().quality == "good")
            await until(lambda: lock().quality == "bad")
            assert lock().value is None
            diagnostics = agent.status().devices["door-1"].diagnostics
            assert diagnostics.state == "degraded"
            assert diagnostics.timeouts == 1
            assert "no message for 400ms" in diagnostics.last_error
            await until(lambda: bool(events(registry)))
            params = {e.params["property"]: e.params for e in events(registry)}
            assert params["lock_state"]["quality"] == "bad"
            assert "no message for 400ms" in str(params["lock_state"]["message"])

            async with aiomqtt.Client(broker.host, broker.port) as device:
                await device.publish("access/door-1/state", json.dumps(state), qos=1)
            await until(lambda: lock().quality == "good")
            assert agent.status().devices["door-1"].diagnostics.state == "online"
        finally:
            agent.stop()
            await asyncio.wait_for(task, 15)

    storage = SqliteStorage(tmp_path / "registry.db")
    storage.migrate()
    try:
        with running_registry(storage) as registry:
            registry.publish_file(MODELS / "device-health.yaml")
            registry.publish_file(MODELS / "access-control-door.yaml")
            registry.register("door-1", model=DOOR.replace("@1", "@1.0.0"))
            asyncio.run(asyncio.wait_for(scenario(registry), 40))
    finally:
        storage.close()
