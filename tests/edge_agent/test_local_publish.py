"""The northbound local stream: topic scheme, Home Assistant discovery, a real mosquitto."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import pytest

from edge_agent.local_publish import (
    LocalPublisher,
    discovery_messages,
    edge_discovery_message,
    topic_level,
)
from tests.mosquitto import Mosquitto, running_mosquitto
from thing_models import load_model_file
from thing_models.composition import FolderModelSource, flatten
from thing_models.messages import Message, Quality, from_json_dict

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
SMOKE = flatten(load_model_file(EXAMPLES / "smoke-detector.yaml"), FolderModelSource(EXAMPLES))
CAMERA = flatten(load_model_file(EXAMPLES / "ip-camera.yaml"), FolderModelSource(EXAMPLES))
MODEL = str(SMOKE.ref)
T = TypeVar("T")
_HA_TOPIC = re.compile(
    r"^homeassistant/(sensor|binary_sensor|event)/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+/config\Z"
)


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


# --------------------------------------------------------------------------- pure parts


def _by_object(edge: str = "gw1", device: str = "s1") -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        m.topic.split("/")[3]: (m.topic, dict(m.payload))
        for m in discovery_messages(edge, device, SMOKE)
    }


def test_discovery_topics_follow_home_assistant() -> None:
    messages = discovery_messages("gw1", "s1", SMOKE)
    assert all(_HA_TOPIC.match(m.topic) for m in messages), [m.topic for m in messages]
    unique = [m.payload["unique_id"] for m in messages]
    assert len(unique) == len(set(unique)) == len(SMOKE.properties) + len(SMOKE.events)
    assert all(json.loads(json.dumps(m.payload)) == m.payload for m in messages)


def test_numeric_property_is_a_sensor_with_unit_and_class() -> None:
    topic, temperature = _by_object()["temperature"]
    assert topic == "homeassistant/sensor/gw1_s1/temperature/config"
    assert temperature == {
        "name": "Ambient temperature",
        "unique_id": "gw1_s1_temperature",
        "default_entity_id": "sensor.gw1_s1_temperature",
        "state_topic": "community/gw1/s1/state",
        "value_template": "{{ value_json['temperature'] }}",
        "unit_of_measurement": "°C",
        "device_class": "temperature",
        "state_class": "measurement",
        "availability_topic": "community/gw1/status",
        "device": {
            "identifiers": ["gw1_s1"],
            "name": "s1",
            "model": SMOKE.title,
            "model_id": MODEL,
            "via_device": "gw1",
            "manufacturer": SMOKE.vendor,
        },
    }


def test_component_properties_bools_enums_and_events() -> None:
    by_object = _by_object()
    _, battery = by_object["health_battery_level"]
    assert battery["device_class"] == "battery"
    assert battery["value_template"] == "{{ value_json['health:battery_level'] }}"
    topic, tamper = by_object["tamper"]
    assert topic.startswith("homeassistant/binary_sensor/")
    assert tamper["value_template"] == "{{ 'ON' if value_json['tamper'] else 'OFF' }}"
    _, smoke = by_object["smoke_state"]
    assert smoke["device_class"] == "enum"
    assert "alarm" in smoke["options"]
    assert "unit_of_measurement" not in by_object["zone"][1]
    topic, alarm = by_object["smoke_alarm"]
    assert topic == "homeassistant/event/gw1_s1/smoke_alarm/config"
    assert alarm["state_topic"] == "community/gw1/s1/events/smoke_alarm"
    assert alarm["event_types"] == ["smoke_alarm"]
    assert alarm["default_entity_id"] == "event.gw1_s1_smoke_alarm"


def test_the_edge_is_a_device_with_a_connectivity_sensor() -> None:
    edge = edge_discovery_message("gw1")
    assert edge.topic == "homeassistant/binary_sensor/gw1/status/config"
    assert edge.payload["state_topic"] == "community/gw1/status"
    assert (edge.payload["payload_on"], edge.payload["payload_off"]) == ("online", "offline")
    # every device's via_device names the edge's identifier
    (first, *_) = discovery_messages("gw1", "s1", SMOKE)
    assert first.payload["device"]["via_device"] in edge.payload["device"]["identifiers"]


def test_struct_and_array_properties_are_not_exposed() -> None:
    objects = {m.topic.split("/")[3] for m in discovery_messages("gw1", "c", CAMERA)}
    assert "active_zones" not in objects
    assert "stream_url" in objects


def test_ids_are_made_topic_safe() -> None:
    assert topic_level("a/b+c#d e") == "a_b_c_d_e"
    (first, *_) = discovery_messages("gw.1", "dev/2", SMOKE)
    assert first.topic.split("/")[2] == "gw_1_dev_2"
    assert first.payload["state_topic"] == "community/gw.1/dev_2/state"


def test_topic_scheme() -> None:
    publisher = LocalPublisher("127.0.0.1", 1, "gw1", prefix="site")
    report = Message.property_report(MODEL, "s1", {"temperature": 21.5})
    event = Message.event(MODEL, "s1", "smoke_alarm", {"obscuration": 3.0})
    call = Message.service_call(MODEL, "s1", "self_test")
    assert publisher.topic(report) == "site/gw1/s1/properties"
    assert publisher.topic(event) == "site/gw1/s1/events/smoke_alarm"
    assert publisher.topic(call) == "site/gw1/s1/service_call"
    assert publisher.topic(call.reply()) == "site/gw1/s1/service_reply"
    assert publisher.status_topic == "site/gw1/status"


def test_publish_never_blocks_and_counts_drops() -> None:
    publisher = LocalPublisher("127.0.0.1", 1, "gw1", queue_size=3)
    publisher.publish(
        Message.property_report(MODEL, "s1", {"temperature": float(i)}) for i in range(5)
    )
    assert publisher.dropped == 2


# --------------------------------------------------------------------------- real broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with running_mosquitto(tmp_path) as running:
        yield running


async def _collect(client: aiomqtt.Client, wanted: set[str]) -> dict[str, bytes]:
    """The last payload of each topic until every topic of ``wanted`` has come."""
    seen: dict[str, bytes] = {}
    async for message in client.messages:
        seen[message.topic.value] = bytes(message.payload)
        if wanted <= set(seen):
            return seen
    raise AssertionError("subscription ended")


def test_stream_and_discovery_on_a_real_broker(broker: Mosquitto) -> None:
    async def body() -> None:
        publisher = LocalPublisher(broker.host, broker.port, "gw1", {"s1": SMOKE}, qos=1)
        await publisher.start()
        await publisher.wait_connected(10)
        report = Message.property_report(MODEL, "s1", {"temperature": 21.5, "tamper": False})
        later = Message.property_report(MODEL, "s1", {"temperature": 22.0})
        event = Message.event(MODEL, "s1", "smoke_alarm", {"obscuration": 3.0})
        publisher.publish([report, later, event])
        async with aiomqtt.Client(broker.host, broker.port) as client:
            # a late subscriber (Home Assistant starting after the agent) gets the retained ones
            await publisher.flush(10)
            await client.subscribe([("community/#", 1), ("homeassistant/#", 1)])
            state_topic = "community/gw1/s1/state"
            config = "homeassistant/sensor/gw1_s1/temperature/config"
            edge = "homeassistant/binary_sensor/gw1/status/config"
            seen = await _collect(client, {state_topic, config, edge, "community/gw1/status"})
            assert json.loads(seen[state_topic]) == {"temperature": 22.0, "tamper": False}
            assert seen["community/gw1/status"] == b"online"
            assert json.loads(seen[config])["unit_of_measurement"] == "°C"

            publisher.publish([report, event])
            seen = await _collect(
                client, {"community/gw1/s1/properties", "community/gw1/s1/events/smoke_alarm"}
            )
            assert from_json_dict(json.loads(seen["community/gw1/s1/properties"])) == report
            assert from_json_dict(json.loads(seen["community/gw1/s1/events/smoke_alarm"])) == event

            # a device added later is announced with the next batch; bad values stay out of state
            publisher.add_device("s2", SMOKE)
            publisher.publish(
                [
                    Message.property_report(
                        MODEL,
                        "s2",
                        {"temperature": None, "tamper": True},
                        param_quality={"temperature": Quality.BAD},
                    )
                ]
            )
            s2_config = "homeassistant/binary_sensor/gw1_s2/tamper/config"
            seen = await _collect(client, {s2_config, "community/gw1/s2/state"})
            assert json.loads(seen["community/gw1/s2/state"]) == {"tamper": True}
            assert json.loads(seen[s2_config])["state_topic"] == "community/gw1/s2/state"

            await publisher.stop()
            seen = await _collect(client, {"community/gw1/status"})
            assert seen["community/gw1/status"] == b"offline"
        assert publisher.dropped == 0
        assert publisher.published == 6

    run(body())


def test_messages_wait_in_the_queue_until_the_broker_is_up(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path)  # not started yet

    async def body() -> None:
        publisher = LocalPublisher(
            broker.host, broker.port, "gw1", home_assistant=False, backoff_min_s=0.05
        )
        await publisher.start()
        publisher.publish([Message.property_report(MODEL, "s1", {"temperature": 1.0})])
        with pytest.raises(TimeoutError):
            await publisher.wait_connected(0.2)
        assert publisher.last_error
        broker.start()
        try:
            await publisher.wait_connected(10)
            async with aiomqtt.Client(broker.host, broker.port) as client:
                await client.subscribe("community/gw1/s1/state", qos=1)
                seen = await _collect(client, {"community/gw1/s1/state"})
            assert json.loads(seen["community/gw1/s1/state"]) == {"temperature": 1.0}
            await publisher.stop()
        finally:
            broker.stop()

    run(body())
