"""Benchmark: MQTT device messages ingested per second through the driver, against aiomqtt's raw
receive rate, with a real mosquitto on loopback.

Starts mosquitto (``tests/mosquitto.py``; Debian package ``mosquitto``) with QoS 0 queueing for
offline persistent sessions. Each round: a receiver with a persistent session subscribes and
goes away; paho publishes ``--messages`` door-controller state messages (the example
``access-control-door.yaml``: ~190 bytes of JSON, 7 properties each) spread over ``--devices``
devices; the receiver reconnects and the broker delivers the backlog as fast as the receiver
takes it. The clock runs from the first message to the last, so the publisher never competes
for the CPU. Receivers, alternated over ``--rounds`` rounds (best kept):

* ``raw_msgs_per_s``: a bare aiomqtt client counting messages;
* ``msgs_per_s``: the adapter: one :class:`BrokerLink` shared by one :class:`MqttDriver` per
  device, each message routed to its device, decoded, mapped and coerced into an ``Update``
  of 7 good readings handed to the device's sink (``values_per_s`` = 7 x that);
* ``mapping_msgs_per_s``: the pure mapping alone (``DeviceMapping.handle`` on the same
  payloads, no network): the adapter's own ceiling.

The ratio ``msgs_per_s / raw_msgs_per_s`` is the adapter's overhead on the wire's rate; on a
shared 2-core machine rounds vary by +-15 %, so a ratio near 1 means "within the noise".

Prints one JSON line. Run: ``.venv/bin/python benchmarks/bench_mqtt.py [--messages 20000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho
from benchlib import machine
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from protocol_adapters.base import Update  # noqa: E402
from protocol_adapters.mqtt.driver import BrokerLink, MqttDriver, aiomqtt_logger  # noqa: E402
from protocol_adapters.mqtt.mapping import DeviceMapping  # noqa: E402
from tests.mosquitto import running_mosquitto  # noqa: E402
from thing_models import load_model_file  # noqa: E402
from thing_models.composition import FolderModelSource, flatten  # noqa: E402
from thing_models.messages import Quality  # noqa: E402

MODELS = REPO / "examples" / "models"
FILTER = "access/+/state"
BROKER_CONFIG = "queue_qos0_messages true\nmax_queued_messages 0\nmax_queued_bytes 0\n"


def payload(i: int) -> bytes:
    return json.dumps(
        {
            "door": {"contact": "closed", "lock": "locked", "held": False},
            "mode": "normal",
            "reader": {"online": True, "tamper": False},
            "backup": {"level": i % 101},
        }
    ).encode()


def publish_backlog(host: str, port: int, messages: int, devices: int) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub")
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    info = None
    for i in range(messages):
        info = client.publish(f"access/door-{i % devices}/state", payload(i), qos=0)
    if info is not None:
        info.wait_for_publish(30)
    client.disconnect()
    client.loop_stop()


async def raw_round(host: str, port: int, messages: int, devices: int) -> float:
    kwargs = {"identifier": "bench-raw", "clean_session": False, "logger": aiomqtt_logger()}
    async with aiomqtt.Client(host, port, **kwargs) as client:  # type: ignore[arg-type]
        await client.subscribe(FILTER, qos=1)
    await asyncio.to_thread(publish_backlog, host, port, messages, devices)
    count = 0
    start = 0.0
    async with aiomqtt.Client(host, port, **kwargs) as client:  # type: ignore[arg-type]
        async for _ in client.messages:
            if count == 0:
                start = time.perf_counter()
            count += 1
            if count == messages:
                break
    return (messages - 1) / (time.perf_counter() - start)


async def adapter_round(host: str, port: int, messages: int, devices: int) -> tuple[float, int]:
    model = flatten(load_model_file(MODELS / "access-control-door.yaml"), FolderModelSource(MODELS))
    assert model.bindings.mqtt is not None
    link = BrokerLink(host, port, client_id="bench-adapter", clean_session=False)
    drivers = [MqttDriver(link, model.bindings.mqtt, model, f"door-{d}") for d in range(devices)]
    done = asyncio.Event()
    state = {"count": 0, "start": 0.0, "good": 0}

    def sink(update: Update) -> None:
        if state["count"] == 0:
            state["start"] = time.perf_counter()
        state["count"] += 1
        state["good"] += sum(r.quality is Quality.GOOD for r in update.readings.values())
        if state["count"] == messages:
            done.set()

    # the link's persistent session with every device's subscriptions, then the backlog
    filters = sorted({f for driver in drivers for f in driver.filters})
    session = {"identifier": "bench-adapter", "clean_session": False, "logger": aiomqtt_logger()}
    async with aiomqtt.Client(host, port, **session) as client:  # type: ignore[arg-type]
        await client.subscribe(filters)
    await asyncio.to_thread(publish_backlog, host, port, messages, devices)
    for driver in drivers:
        driver.set_sink(sink)
        link.attach(driver)
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - state["start"]
    for driver in drivers:
        await driver.close()
    return (messages - 1) / elapsed, int(state["good"])


def mapping_rate(messages: int, devices: int) -> float:
    model = flatten(load_model_file(MODELS / "access-control-door.yaml"), FolderModelSource(MODELS))
    assert model.bindings.mqtt is not None
    mappings = [DeviceMapping(model.bindings.mqtt, model, f"door-{d}") for d in range(devices)]
    work = [
        (mappings[i % devices], f"access/door-{i % devices}/state", payload(i))
        for i in range(messages)
    ]
    start = time.perf_counter()
    for mapping, topic, data in work:
        mapping.handle(topic, data, 0)
    return messages / (time.perf_counter() - start)


async def measure(args: argparse.Namespace) -> dict[str, object]:
    with (
        tempfile.TemporaryDirectory() as folder,
        running_mosquitto(Path(folder), BROKER_CONFIG) as broker,
    ):
        raw, ours = 0.0, 0.0
        good = 0
        for _ in range(args.rounds):
            raw = max(raw, await raw_round(broker.host, broker.port, args.messages, args.devices))
            rate, good = await adapter_round(broker.host, broker.port, args.messages, args.devices)
            ours = max(ours, rate)
        mapping = max(mapping_rate(args.messages, args.devices) for _ in range(args.rounds))
    assert good == 7 * args.messages, f"only {good} good readings"
    return {
        "benchmark": "mqtt_ingest",
        "msgs_per_s": round(ours),
        "values_per_s": round(7 * ours),
        "raw_msgs_per_s": round(raw),
        "ratio": round(ours / raw, 3),
        "mapping_msgs_per_s": round(mapping),
        "messages": args.messages,
        "devices": args.devices,
        "payload_bytes": len(payload(0)),
        "python": platform.python_version(),
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20_000, help="messages per round")
    parser.add_argument("--devices", type=int, default=50, help="devices the messages spread over")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (best kept)")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(measure(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
