"""The agent's local MQTT stream (``local_mqtt``): its configuration, located errors, and an
agent on a real mosquitto whose local subscriber sees the normalized messages and the Home
Assistant discovery configs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from edge_agent.config import LocalMqttConfig, load_edge_config
from edge_agent.supervisor import EdgeAgent
from protocol_adapters.mqtt.simulator import MqttSimulator
from tests.mosquitto import Mosquitto, free_port, running_mosquitto
from thing_models.composition import FolderModelSource, flatten
from thing_models.errors import ModelLoadError
from thing_models.yaml_format import load_model_file

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "examples" / "models"
DOOR = "community.access/door-controller@1"


def write(tmp_path: Path, local_mqtt: str, registry_port: int = 1) -> Path:
    """An edge.yaml with ``local_mqtt`` on line 4 and one MQTT door on a broker."""
    path = tmp_path / "edge.yaml"
    path.write_text(
        f"""edge_id: gw1
registry: {{address: "127.0.0.1:{registry_port}", insecure: true}}
models_dir: {MODELS}
{local_mqtt}
""",
        encoding="utf-8",
    )
    return path


def errors(path: Path) -> list[str]:
    with pytest.raises(ModelLoadError) as info:
        load_edge_config(path)
    return [str(d) for d in info.value.diagnostics]


def test_local_mqtt_with_every_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """local_mqtt:
  broker: broker.local:1884
  home_assistant: false
  prefix: site-a/community
  discovery_prefix: ha
  client_id: gw1-local
  username: edge
  password: s3cret
  qos: 1
  queue: 500""",
    )
    local = load_edge_config(path).local_mqtt
    assert local == LocalMqttConfig(
        "broker.local", 1884, False, "site-a/community", "ha", "gw1-local", "edge", "s3cret", 1, 500
    )
    assert "s3cret" not in repr(local)


def test_local_mqtt_defaults_and_absence(tmp_path: Path) -> None:
    assert load_edge_config(write(tmp_path, "")).local_mqtt is None
    local = load_edge_config(write(tmp_path, "local_mqtt: {broker: 127.0.0.1}")).local_mqtt
    assert local == LocalMqttConfig("127.0.0.1")
    assert (local.port, local.prefix, local.discovery_prefix) == (
        1883,
        "community",
        "homeassistant",
    )
    assert (local.home_assistant, local.qos, local.queue) == (True, 0, 10_000)
    ipv6 = load_edge_config(write(tmp_path, 'local_mqtt: {broker: "[::1]:1999"}')).local_mqtt
    assert ipv6 is not None
    assert (ipv6.host, ipv6.port) == ("::1", 1999)


@pytest.mark.parametrize(
    ("entry", "column", "message"),
    [
        ('{broker: "h:99999"}', 22, "invalid broker"),
        ('{broker: ""}', 22, "broker must not be empty"),
        ("{broker: 1883}", 22, "broker must be a string"),
        ('{broker: "bad_host!:1883"}', 22, "invalid host in broker"),
        ('{broker: "a:b:c"}', 22, "invalid host in broker"),
        ('{broker: h, prefix: "a/#"}', 33, "invalid prefix"),
        ('{broker: h, prefix: "/a"}', 33, "invalid prefix"),
        ('{broker: h, discovery_prefix: "ha/"}', 43, "invalid discovery_prefix"),
        ("{broker: h, qos: 3}", 30, "qos out of range"),
        ("{broker: h, queue: 0}", 32, "queue out of range"),
        ('{broker: h, client_id: "bad id"}', 36, "invalid client_id"),
        ("{broker: h, home_assistant: maybe}", 41, "home_assistant must be"),
        ("{broker: h, password: x}", 25, "a password needs a username"),
        ("{broker: h, home_assistent: true}", 25, "unknown key 'home_assistent'"),
        ("{prefix: x}", 13, "missing required key 'broker'"),
        ("[broker]", 13, "local_mqtt"),
    ],
)
def test_bad_local_mqtt_is_located(tmp_path: Path, entry: str, column: int, message: str) -> None:
    found = errors(write(tmp_path, f"local_mqtt: {entry}"))
    assert any("edge.yaml:4:" in e and message in e for e in found), found
    assert any(f":4:{column}" in e for e in found) or message == "local_mqtt", found


def test_unknown_key_suggests_home_assistant(tmp_path: Path) -> None:
    (error,) = errors(write(tmp_path, "local_mqtt: {broker: h, home_assistent: true}"))
    assert "did you mean 'home_assistant'?" in error


# --------------------------------------------------------------------------- real broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with running_mosquitto(tmp_path) as running:
        yield running


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` (the agent's status has no change feed to await)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def _door_config(tmp_path: Path, broker: Mosquitto, local_port: int) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(
        f"""edge_id: gw1
registry: {{address: "127.0.0.1:{free_port()}", insecure: true}}
storage: {{outbox: state/outbox.db}}
models_dir: {MODELS}
local_mqtt: {{broker: "127.0.0.1:{local_port}", home_assistant: true, qos: 1}}
devices:
  - id: door-1
    model: {DOOR}
    protocol: mqtt
    connection: {{host: 127.0.0.1, port: {broker.port}, timeout: 2s}}
    reconnect: {{min: 100ms, max: 400ms}}
""",
        encoding="utf-8",
    )
    return path


def test_local_subscriber_sees_messages_and_discovery(tmp_path: Path, broker: Mosquitto) -> None:
    door = flatten(load_model_file(MODELS / "access-control-door.yaml"), FolderModelSource(MODELS))
    sim = MqttSimulator(door, broker.host, broker.port, "door-1", tick_ms=None)
    seen: dict[str, list[Any]] = {}

    async def listen(client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            text = payload.decode() if isinstance(payload, bytes) else str(payload)
            seen.setdefault(str(message.topic), []).append(
                json.loads(text) if text.startswith("{") else text
            )

    async def scenario() -> None:
        agent = EdgeAgent(load_edge_config(_door_config(tmp_path, broker, broker.port)))
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.subscribe("community/#", qos=1)
            await client.subscribe("homeassistant/#", qos=1)
            listener = asyncio.create_task(listen(client))
            task = asyncio.create_task(agent.run())
            try:
                await until(
                    lambda: (
                        agent.status().devices["door-1"].phase == "polling"
                        and (stream := agent.status().local_stream) is not None
                        and stream.connected
                    )
                )
                await sim.start()  # publishes its state once
                await until(lambda: "community/gw1/door-1/state" in seen)
                await until(lambda: "community/gw1/door-1/properties" in seen)
                stream = agent.status().local_stream
                assert stream is not None
                assert stream.broker == f"127.0.0.1:{broker.port}"
                assert stream.published >= 1
                assert stream.dropped == 0
            finally:
                agent.stop()
                await asyncio.wait_for(task, 15)
                await sim.stop()
            await until(lambda: seen.get("community/gw1/status", [])[-1:] == ["offline"])
            listener.cancel()
            with pytest.raises(asyncio.CancelledError):
                await listener

    asyncio.run(asyncio.wait_for(scenario(), 40))

    # the normalized messages: the canonical JSON form, per device
    (report, *_) = seen["community/gw1/door-1/properties"]
    assert report["kind"] == "property_report"
    assert report["device_id"] == "door-1"
    assert report["params"]["lock_state"] == sim.values["lock_state"]
    assert seen["community/gw1/door-1/state"][-1]["lock_state"] == sim.values["lock_state"]
    # Home Assistant discovery: the edge and one entity per property of the door
    assert seen["community/gw1/status"][0] == "online"
    edge = seen["homeassistant/binary_sensor/gw1/status/config"][0]
    assert edge["device_class"] == "connectivity"
    lock = seen["homeassistant/sensor/gw1_door-1/lock_state/config"][0]
    assert lock["state_topic"] == "community/gw1/door-1/state"
    assert lock["device"]["via_device"] == "gw1"
    assert lock["availability_topic"] == "community/gw1/status"
    configs = [t for t in seen if t.startswith("homeassistant/") and "gw1_door-1" in t]
    exposed = [p for p in door.properties if p.schema.type.value not in ("struct", "array")]
    assert len(configs) == len(exposed) + len(door.events)


def test_agent_runs_on_when_the_local_broker_is_down(tmp_path: Path, broker: Mosquitto) -> None:
    door = flatten(load_model_file(MODELS / "access-control-door.yaml"), FolderModelSource(MODELS))

    async def scenario() -> None:
        agent = EdgeAgent(load_edge_config(_door_config(tmp_path, broker, free_port())))
        sim = MqttSimulator(door, broker.host, broker.port, "door-1", tick_ms=None)
        task = asyncio.create_task(agent.run())
        try:
            await until(lambda: agent.status().devices["door-1"].phase == "polling")
            await sim.start()
            await until(lambda: agent.status().devices["door-1"].messages >= 1)
            await until(lambda: bool((s := agent.status().local_stream) and s.last_error))
            stream = agent.status().local_stream
            assert stream is not None
            assert not stream.connected
            assert stream.published == 0
            assert agent.status().devices["door-1"].diagnostics.state == "online"
        finally:
            agent.stop()
            await asyncio.wait_for(task, 15)
            await sim.stop()
        assert not task.exception()

    asyncio.run(asyncio.wait_for(scenario(), 40))
