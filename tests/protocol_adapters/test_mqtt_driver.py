"""The MQTT driver and simulator against a real mosquitto on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import pytest

from protocol_adapters.base import DeviceDriver, LinkConnectionError, LinkTimeoutError, Update
from protocol_adapters.mqtt.driver import BrokerLink, MqttDriver
from protocol_adapters.mqtt.errors import (
    MqttCommandRejected,
    MqttConfigError,
    MqttConnectionError,
    MqttTimeoutError,
)
from protocol_adapters.mqtt.simulator import MqttSimulator
from tests.mosquitto import Mosquitto, running_mosquitto
from thing_models import load_model_file
from thing_models.composition import FolderModelSource, flatten
from thing_models.messages import Quality
from thing_models.model import MqttBinding, ThingModel

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
DOOR = flatten(load_model_file(EXAMPLES / "access-control-door.yaml"), FolderModelSource(EXAMPLES))
SMOKE = flatten(load_model_file(EXAMPLES / "smoke-detector.yaml"), FolderModelSource(EXAMPLES))


def _binding(model: ThingModel) -> MqttBinding:
    assert model.bindings.mqtt is not None
    return model.bindings.mqtt


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with running_mosquitto(tmp_path) as running:
        yield running


class Collector:
    """A sink that lets a test await the next update matching a condition."""

    def __init__(self) -> None:
        self.updates: list[Update] = []
        self._changed = asyncio.Event()

    def __call__(self, update: Update) -> None:
        self.updates.append(update)
        self._changed.set()

    async def wait_for(self, predicate: object, timeout: float = 5.0) -> Update:
        assert callable(predicate)

        async def wait() -> Update:
            while True:
                for update in self.updates:
                    if predicate(update):
                        return update
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(wait(), timeout)


T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def _door(link: BrokerLink, device_id: str = "door-1", timeout_s: float = 2.0) -> MqttDriver:
    return MqttDriver(link, _binding(DOOR), DOOR, device_id, timeout_s=timeout_s)


def test_messages_become_updates_and_commands_round_trip(broker: Mosquitto) -> None:
    run(_messages_become_updates_and_commands_round_trip(broker))


async def _messages_become_updates_and_commands_round_trip(broker: Mosquitto) -> None:
    link = BrokerLink(broker.host, broker.port)
    driver = _door(link)
    assert isinstance(driver, DeviceDriver)
    assert driver.pollable == frozenset()
    sink = Collector()
    driver.set_sink(sink)
    await driver.connect()
    sim = MqttSimulator(DOOR, broker.host, broker.port, "door-1", tick_ms=None, seed=3)
    await sim.start()
    try:
        update = await sink.wait_for(lambda u: "lock_state" in u.readings)
        assert update.readings["lock_state"] == (sim.values["lock_state"], Quality.GOOD, "")
        assert driver.diagnostics.state == "online"
        assert driver.connected
        assert (await driver.read_points(["lock_state", "nothing"])).keys() == {"lock_state"}

        assert await driver.write("held_open_limit", 30, read_back=True) == (30, Quality.GOOD, "")
        assert sim.values["held_open_limit"] == 30
        outputs = await driver.invoke("unlock", {"duration": 5})
        assert set(outputs) == {"unlocked", "relock_at"}

        # several commands at once are pipelined and each gets its own reply
        results = await asyncio.gather(
            *(driver.write("held_open_limit", 10 + i, read_back=True) for i in range(20))
        )
        assert [r.value for r in results if r is not None] == [10 + i for i in range(20)]

        swipe = {"card_id": "04A2", "credential": "card", "result": "granted", "reader": "entry"}
        await sim.raise_event("card_swipe", swipe)
        update = await sink.wait_for(lambda u: u.events)
        assert update.events == (("card_swipe", swipe),)
    finally:
        await sim.stop()
        await driver.close()


def test_rejected_and_unanswered_commands(broker: Mosquitto) -> None:
    run(_rejected_and_unanswered_commands(broker))


async def _rejected_and_unanswered_commands(broker: Mosquitto) -> None:
    link = BrokerLink(broker.host, broker.port)
    driver = _door(link, timeout_s=0.3)
    await driver.connect()
    try:
        # nobody answers
        with pytest.raises(MqttTimeoutError, match=r"no reply to call unlock within 0\.3s") as info:
            await driver.invoke("unlock", {"duration": 5})
        assert isinstance(info.value, LinkTimeoutError)
        assert driver.diagnostics.timeouts == 1
        assert driver.diagnostics.state == "degraded"

        # a device that answers with an error status
        async with aiomqtt.Client(broker.host, broker.port) as device:
            await device.subscribe("access/door-1/cmd", qos=1)

            async def answer() -> None:
                async for message in device.messages:
                    request = json.loads(bytes(message.payload))
                    reply = {"status": "jammed", "status_message": "lock jammed"}
                    topic = f"access/door-1/cmd/reply/{request['id']}"
                    await device.publish(topic, json.dumps(reply), qos=1)

            task = asyncio.create_task(answer())
            with pytest.raises(MqttCommandRejected, match=r"rejected: jammed \(lock jammed\)") as e:
                await driver.invoke("unlock", {"duration": 5})
            assert e.value.code == "jammed"
            assert driver.diagnostics.exception_codes == {"jammed": 1}
            task.cancel()
        with pytest.raises(MqttConfigError, match="read-only"):
            await driver.write("lock_state", "unlocked")
    finally:
        await driver.close()


def test_bad_payloads_degrade_only_their_device(broker: Mosquitto) -> None:
    run(_with_publisher(broker))


async def _with_publisher(broker: Mosquitto) -> None:
    async with aiomqtt.Client(broker.host, broker.port, identifier="test-pub") as publisher:
        await _bad_payloads(broker, publisher)


async def _bad_payloads(broker: Mosquitto, publisher: aiomqtt.Client) -> None:
    link = BrokerLink(broker.host, broker.port)
    bad, good = _door(link, "door-1"), _door(link, "door-2")
    sinks = {"door-1": Collector(), "door-2": Collector()}
    bad.set_sink(sinks["door-1"])
    good.set_sink(sinks["door-2"])
    await bad.connect()
    await good.connect()
    try:
        await publisher.publish("access/door-1/state", b'{"door": ', qos=1)
        await publisher.publish("access/door-1/state", b"x" * 300_000, qos=1)
        await publisher.publish("access/door-1/state", b'{"door": {"lock": 5}}', qos=1)
        await publisher.publish("access/door-2/state", b'{"other": 1}', qos=1)  # nothing mapped
        await publisher.publish("access/door-2/state", b'{"door": {"lock": "locked"}}', qos=1)
        await publisher.publish("access/door-9/state", b"{}", qos=1)  # subscribed by no one
        await publisher.publish("access/door-1/unknown", b"{}", qos=1)
        await sinks["door-2"].wait_for(lambda u: "lock_state" in u.readings)
        await sinks["door-1"].wait_for(lambda u: len(u.readings) == 1)
        reasons = [u.readings["lock_state"].reason for u in sinks["door-1"].updates]
        assert "malformed JSON" in reasons[0]
        assert "payload of 300000 bytes refused (limit 262144 bytes)" in reasons[1]
        assert "expected one of locked" in reasons[2]
        assert bad.diagnostics.state == "degraded"
        assert bad.diagnostics.errors == 3
        assert good.diagnostics.state == "online"
        assert good.diagnostics.errors == 0
        assert sinks["door-2"].updates[0].readings["lock_state"].value == "locked"
        assert len(sinks["door-2"].updates) == 1  # the message with nothing mapped: no update

        # a closed device's topics are unsubscribed; the other device carries on
        await bad.close()
        await publisher.publish("access/door-1/state", b'{"door": {"lock": "locked"}}', qos=1)
        await publisher.publish("access/door-2/sys/uptime", b"9", qos=1)
        await sinks["door-2"].wait_for(lambda u: "health:uptime" in u.readings)
        assert link.unknown_topics == 0
        assert len(sinks["door-1"].updates) == 3
    finally:
        await bad.close()
        await good.close()
    assert link.connected is False


def test_broker_restart_goes_offline_and_reconnects(broker: Mosquitto) -> None:
    run(_broker_restart_goes_offline_and_reconnects(broker))


async def _broker_restart_goes_offline_and_reconnects(broker: Mosquitto) -> None:
    link = BrokerLink(broker.host, broker.port, backoff_min_s=0.05, backoff_max_s=0.2)
    driver = _door(link)
    sink = Collector()
    driver.set_sink(sink)
    await driver.connect()
    try:
        broker.stop()
        await link.wait_disconnected(10)  # the client notices the drop on its socket
        assert driver.diagnostics.state == "offline"
        with pytest.raises(MqttConnectionError, match="not connected") as info:
            await driver.invoke("unlock", {"duration": 1})
        assert isinstance(info.value, LinkConnectionError)
        broker.start()
        await link.wait_connected(10)
        assert link.connections == 2
        assert driver.diagnostics.snapshot().state == "online"
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.publish("access/door-1/sys/uptime", b"5", qos=1)
        update = await sink.wait_for(lambda u: "health:uptime" in u.readings)
        assert update.readings["health:uptime"].value == 5  # re-subscribed after reconnect
    finally:
        await driver.close()


def test_connect_to_no_broker_fails_with_a_connection_error(tmp_path: Path) -> None:
    run(_connect_to_no_broker_fails_with_a_connection_error(tmp_path))


async def _connect_to_no_broker_fails_with_a_connection_error(tmp_path: Path) -> None:
    from tests.mosquitto import free_port

    link = BrokerLink("127.0.0.1", free_port(), backoff_min_s=0.05)
    driver = _door(link, timeout_s=0.3)
    with pytest.raises(MqttConnectionError, match=r"not connected after 0.3s: .*refused"):
        await driver.connect()
    assert driver.diagnostics.state == "offline"
    await driver.close()


def test_simulator_publishes_every_point(broker: Mosquitto) -> None:
    run(_simulator_publishes_every_point(broker))


async def _simulator_publishes_every_point(broker: Mosquitto) -> None:
    link = BrokerLink(broker.host, broker.port)
    driver = MqttDriver(link, _binding(SMOKE), SMOKE, "s1")
    sink = Collector()
    driver.set_sink(sink)
    await driver.connect()
    sim = MqttSimulator(SMOKE, broker.host, broker.port, "s1", tick_ms=20)
    await sim.start()
    try:
        seen: set[str] = set()
        every = {p.property for p in _binding(SMOKE).points}

        def all_seen(update: Update) -> bool:
            seen.update(update.readings)
            return seen == every

        await sink.wait_for(all_seen, timeout=5)
        assert all(r.quality is Quality.GOOD for u in sink.updates for r in u.readings.values()), [
            r.reason for u in sink.updates for r in u.readings.values() if r.reason
        ][:3]
    finally:
        await sim.stop()
        await driver.close()
