"""The northbound local stream: the agent's normalized messages on a local MQTT broker, with
Home Assistant MQTT discovery so a Home Assistant on the same broker sees every device with no
set-up.

Topic scheme (``<prefix>`` defaults to ``community``; ids are used as they are, with ``/``,
``+``, ``#`` and spaces replaced by ``_``)::

    <prefix>/<edge>/status                         "online" / "offline", retained; "offline" is
                                                   also the connection's last will
    <prefix>/<edge>/<device>/properties            every property report: the canonical message
                                                   (thing_models.messages JSON form), not retained
    <prefix>/<edge>/<device>/state                 the latest good or uncertain value of every
                                                   reported property of the device, one JSON
                                                   object {"<property>": value, ...}, retained
    <prefix>/<edge>/<device>/events/<event>        every event: the canonical message
    <prefix>/<edge>/<device>/<kind>                the other kinds (service_call, service_reply,
                                                   property_set, property_set_reply)
    homeassistant/<component>/<node>/<object>/config
                                                   Home Assistant discovery, retained (below)

Home Assistant discovery: the edge itself is one HA device with a ``connectivity``
``binary_sensor`` on ``<prefix>/<edge>/status`` (config topic
``homeassistant/binary_sensor/<edge>/status/config``). Each device behind it is one HA device
(name = device id, model = the thing model, manufacturer = its vendor, ``via_device`` = the
edge) with one entity per property and per event of its model, available while
``<prefix>/<edge>/status`` is ``online``; ``<node>`` is ``<edge>_<device>`` and ``<object>``
the property or event id, both reduced to ``[A-Za-z0-9_-]``:

- numeric properties: ``sensor`` with ``unit_of_measurement`` (the model's unit), a
  ``device_class`` where the unit says what is measured (°C -> temperature, V -> voltage,
  W -> power, kWh -> energy, % on a battery property -> battery ...) and ``state_class:
  measurement`` (``total_increasing`` for energy and water totals);
- bool properties: ``binary_sensor`` (``ON``/``OFF`` from the value);
- enum and text properties: ``sensor`` (enums with ``device_class: enum`` and their options);
- struct and array properties: not exposed (Home Assistant states are short strings);
- events: ``event`` entities whose ``event_types`` is the event id.

Each property entity reads ``<prefix>/<edge>/<device>/state`` with ``value_template``
``{{ value_json['<property>'] }}``; entity ids are suggested with ``default_entity_id``
(``sensor.<node>_<object>``; Home Assistant 2025.10 deprecated ``object_id`` for it).

API for the supervisor::

    publisher = LocalPublisher("127.0.0.1", 1883, "gw1", {"door-1": model})
    await publisher.start()             # connects in the background, reconnects with backoff
    publisher.publish(messages)         # never blocks: a bounded queue, overflow counted
    await publisher.stop()              # "offline", then disconnect

Delivery is best effort (a local view, not the uplink): messages that arrive while the queue is
full, or are in flight when the broker drops, are counted in :attr:`LocalPublisher.dropped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiomqtt

from protocol_adapters.mqtt.driver import aiomqtt_logger
from thing_models.messages import Message, MessageKind, Quality, to_json_dict
from thing_models.model import DataType, Property, ThingModel

__all__ = [
    "DiscoveryMessage",
    "LocalPublisher",
    "discovery_messages",
    "edge_discovery_message",
    "topic_level",
]

_log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[/+#\s\x00]")
_OBJECT_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_BATCH = 500
_ISO = "%Y-%m-%dT%H:%M:%S+00:00"

#: unit -> Home Assistant sensor device class
_DEVICE_CLASS = {
    "°C": "temperature",
    "°F": "temperature",
    "K": "temperature",
    "V": "voltage",
    "mV": "voltage",
    "A": "current",
    "mA": "current",
    "W": "power",
    "kW": "power",
    "VA": "apparent_power",
    "var": "reactive_power",
    "Wh": "energy",
    "kWh": "energy",
    "MWh": "energy",
    "Hz": "frequency",
    "Pa": "pressure",
    "hPa": "pressure",
    "kPa": "pressure",
    "bar": "pressure",
    "lx": "illuminance",
    "dBm": "signal_strength",
    "dB": "signal_strength",
    "ppm": "carbon_dioxide",
    "µg/m³": "pm25",
    "m³": "water",
    "L": "water",
    "m³/h": "volume_flow_rate",
    "L/min": "volume_flow_rate",
    "s": "duration",
    "min": "duration",
    "h": "duration",
}
_TOTALS = frozenset({"energy", "water"})


def topic_level(text: str) -> str:
    """``text`` usable as one topic level (``/``, ``+``, ``#``, spaces -> ``_``)."""
    return _UNSAFE.sub("_", text) or "_"


def _object_id(text: str) -> str:
    return _OBJECT_UNSAFE.sub("_", text)


@dataclass(frozen=True, slots=True)
class DiscoveryMessage:
    """One Home Assistant discovery config: where to publish it (retained) and its payload."""

    topic: str
    payload: Mapping[str, Any]


def _device_class(prop: Property) -> str | None:
    unit = prop.schema.unit or ""
    if unit == "%":
        name = prop.id.lower()
        return "battery" if "battery" in name else "humidity" if "humid" in name else None
    return _DEVICE_CLASS.get(unit)


def edge_discovery_message(
    edge_id: str, *, prefix: str = "community", discovery_prefix: str = "homeassistant"
) -> DiscoveryMessage:
    """The edge gateway itself as a Home Assistant device with one connectivity sensor (the
    ``via_device`` of every device behind it)."""
    edge = topic_level(edge_id)
    node = _object_id(edge)
    return DiscoveryMessage(
        f"{discovery_prefix}/binary_sensor/{node}/status/config",
        {
            "name": "Edge agent",
            "unique_id": f"{node}_status",
            "default_entity_id": f"binary_sensor.{node}_status".lower(),
            "state_topic": f"{prefix}/{edge}/status",
            "payload_on": "online",
            "payload_off": "offline",
            "device_class": "connectivity",
            "device": {"identifiers": [node], "name": f"Edge {edge_id}", "model": "edge-agent"},
        },
    )


def discovery_messages(
    edge_id: str,
    device_id: str,
    model: ThingModel,
    *,
    prefix: str = "community",
    discovery_prefix: str = "homeassistant",
) -> list[DiscoveryMessage]:
    """The Home Assistant discovery configs of one device (pure; see the module docstring)."""
    edge, device = topic_level(edge_id), topic_level(device_id)
    base = f"{prefix}/{edge}/{device}"
    node = _object_id(f"{edge}_{device}")
    ha_device: dict[str, Any] = {
        "identifiers": [node],
        "name": device_id,
        "model": model.title or model.name,
        "model_id": str(model.ref),
        "via_device": _object_id(edge),
    }
    if model.vendor:
        ha_device["manufacturer"] = model.vendor
    common = {"availability_topic": f"{prefix}/{edge}/status", "device": ha_device}
    out: list[DiscoveryMessage] = []
    for prop in model.properties:
        kind = prop.schema.type
        if kind in (DataType.STRUCT, DataType.ARRAY):
            continue
        object_id = _object_id(prop.id)
        key = json.dumps(prop.id)[1:-1].replace("'", "\\'")
        payload: dict[str, Any] = {
            "name": prop.title or prop.id,
            "unique_id": f"{node}_{object_id}",
            "state_topic": f"{base}/state",
            **common,
        }
        if kind is DataType.BOOL:
            component = "binary_sensor"
            payload["value_template"] = f"{{{{ 'ON' if value_json['{key}'] else 'OFF' }}}}"
        else:
            component = "sensor"
            payload["value_template"] = f"{{{{ value_json['{key}'] }}}}"
            if kind.is_numeric:
                if prop.schema.unit:
                    payload["unit_of_measurement"] = prop.schema.unit
                device_class = _device_class(prop)
                if device_class is not None:
                    payload["device_class"] = device_class
                payload["state_class"] = (
                    "total_increasing" if device_class in _TOTALS else "measurement"
                )
            elif kind is DataType.ENUM:
                payload["device_class"] = "enum"
                payload["options"] = [str(member.value) for member in prop.schema.enum]
            elif kind is DataType.TIMESTAMP:
                payload["device_class"] = "timestamp"
                payload["value_template"] = (
                    f"{{{{ (value_json['{key}'] / 1000) | timestamp_custom('{_ISO}', false) }}}}"
                )
        payload["default_entity_id"] = f"{component}.{node}_{object_id}".lower()
        out.append(
            DiscoveryMessage(f"{discovery_prefix}/{component}/{node}/{object_id}/config", payload)
        )
    for event in model.events:
        object_id = _object_id(event.id)
        out.append(
            DiscoveryMessage(
                f"{discovery_prefix}/event/{node}/{object_id}/config",
                {
                    "name": event.title or event.id,
                    "unique_id": f"{node}_{object_id}",
                    "default_entity_id": f"event.{node}_{object_id}".lower(),
                    "state_topic": f"{base}/events/{topic_level(event.id)}",
                    "event_types": [event.id],
                    "value_template": '{"event_type": "{{ value_json.name }}"}',
                    **common,
                },
            )
        )
    return out


class LocalPublisher:
    """Publishes the agent's messages to a local broker (see the module docstring)."""

    def __init__(
        self,
        host: str,
        port: int,
        edge_id: str,
        devices: Mapping[str, ThingModel] | None = None,
        *,
        prefix: str = "community",
        home_assistant: bool = True,
        discovery_prefix: str = "homeassistant",
        queue_size: int = 10_000,
        qos: int = 0,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.edge_id = edge_id
        self.prefix = prefix
        self.home_assistant = home_assistant
        self.discovery_prefix = discovery_prefix
        self.qos = qos
        self.client_id = client_id
        self.username = username
        self.password = password
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = max(backoff_min_s, backoff_max_s)
        self.devices: dict[str, ThingModel] = dict(devices or {})
        self.status_topic = f"{prefix}/{topic_level(edge_id)}/status"
        self._queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=max(1, queue_size))
        self._state: dict[str, dict[str, Any]] = {}
        self._unannounced: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        #: messages published; messages dropped (queue full, or lost with a connection)
        self.published = 0
        self.dropped = 0
        self.connections = 0
        self.last_error = ""

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def add_device(self, device_id: str, model: ThingModel) -> None:
        """Announce one more device (its discovery configs go out with the next batch)."""
        self.devices[device_id] = model
        self._unannounced.add(device_id)

    def topic(self, message: Message) -> str:
        """Where ``message`` is published."""
        base = f"{self.prefix}/{topic_level(self.edge_id)}/{topic_level(message.device_id)}"
        if message.kind is MessageKind.PROPERTY_REPORT:
            return f"{base}/properties"
        if message.kind is MessageKind.EVENT:
            return f"{base}/events/{topic_level(message.name or '')}"
        return f"{base}/{message.kind.value}"

    # ------------------------------------------------------------------ the supervisor's API

    async def start(self) -> None:
        """Start connecting in the background (returns at once)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="local-mqtt")

    async def wait_connected(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout_s)

    def publish(self, messages: Iterable[Message]) -> None:
        """Queue ``messages``; never blocks (what does not fit is counted in ``dropped``)."""
        for message in messages:
            try:
                self._queue.put_nowait(message)
            except asyncio.QueueFull:
                self.dropped += 1

    async def flush(self, timeout_s: float) -> None:
        """Wait until every queued message has been handled (published or dropped)."""
        await asyncio.wait_for(self._queue.join(), timeout_s)

    async def stop(self, drain_timeout_s: float = 2.0) -> None:
        """Send what is queued (while connected, for up to ``drain_timeout_s``), publish
        ``offline`` and disconnect; what is still queued then is counted as dropped."""
        if self.connected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain_timeout_s)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.dropped += self._queue.qsize()
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()

    # ------------------------------------------------------------------ the connection

    async def _run(self) -> None:
        delay = self.backoff_min_s
        while True:
            try:
                will = aiomqtt.Will(self.status_topic, b"offline", qos=1, retain=True)
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    identifier=self.client_id,
                    username=self.username,
                    password=self.password,
                    will=will,
                    logger=aiomqtt_logger(),
                ) as client:
                    try:
                        await self._announce(client)
                        self.connections += 1
                        self._connected.set()
                        delay = self.backoff_min_s
                        await self._drain(client)
                    finally:
                        self._connected.clear()
                        # a clean stop says so itself (the will covers a dropped connection)
                        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                            await asyncio.wait_for(
                                client.publish(self.status_topic, b"offline", qos=1, retain=True), 2
                            )
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc)
                _log.warning("local MQTT %s:%s: %s; reconnecting", self.host, self.port, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max_s)

    def _discovery(self, device_ids: Iterable[str]) -> list[tuple[str, bytes]]:
        if not self.home_assistant:
            return []
        return [
            (item.topic, json.dumps(item.payload).encode())
            for device_id in device_ids
            for item in discovery_messages(
                self.edge_id,
                device_id,
                self.devices[device_id],
                prefix=self.prefix,
                discovery_prefix=self.discovery_prefix,
            )
        ]

    async def _announce(self, client: aiomqtt.Client) -> None:
        await client.publish(self.status_topic, b"online", qos=1, retain=True)
        self._unannounced.clear()
        discovery = self._discovery(list(self.devices))
        if self.home_assistant:
            edge = edge_discovery_message(
                self.edge_id, prefix=self.prefix, discovery_prefix=self.discovery_prefix
            )
            discovery.insert(0, (edge.topic, json.dumps(edge.payload).encode()))
        for topic, payload in discovery:
            await client.publish(topic, payload, qos=1, retain=True)
        for device_id, state in self._state.items():
            await client.publish(
                self._state_topic(device_id), json.dumps(state), qos=1, retain=True
            )

    def _state_topic(self, device_id: str) -> str:
        return f"{self.prefix}/{topic_level(self.edge_id)}/{topic_level(device_id)}/state"

    async def _drain(self, client: aiomqtt.Client) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < _BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            fresh, self._unannounced = sorted(self._unannounced), set()
            outgoing = [(t, p, True) for t, p in self._discovery(fresh)] + self._outgoing(batch)
            try:
                # pipelined: at QoS >= 1 each publish waits for its PUBACK
                await asyncio.gather(
                    *(
                        client.publish(topic, payload, qos=self.qos, retain=retain)
                        for topic, payload, retain in outgoing
                    )
                )
            except (aiomqtt.MqttError, asyncio.CancelledError):
                self.dropped += len(batch)
                raise
            finally:
                for _ in batch:
                    self._queue.task_done()
            self.published += len(batch)

    def _outgoing(self, batch: Sequence[Message]) -> list[tuple[str, bytes, bool]]:
        out: list[tuple[str, bytes, bool]] = []
        changed: set[str] = set()
        for message in batch:
            out.append((self.topic(message), json.dumps(to_json_dict(message)).encode(), False))
            if message.kind is MessageKind.PROPERTY_REPORT:
                quality = message.param_quality
                good = {
                    name: value
                    for name, value in message.params.items()
                    if quality.get(name, message.quality) is not Quality.BAD
                }
                if good:
                    self._state.setdefault(message.device_id, {}).update(good)
                    changed.add(message.device_id)
        for device_id in sorted(changed):
            state = json.dumps(self._state[device_id]).encode()
            out.append((self._state_topic(device_id), state, True))
        return out
