"""An MQTT device simulator that follows a thing model's MQTT binding (tests, demos, installers).

::

    sim = MqttSimulator(model, "127.0.0.1", 1883, "door-1", seed=1)
    await sim.start()                           # connects, answers commands, publishes each tick
    await sim.publish_state()                   # every point's topic once, values at their paths
    await sim.raise_event("card_swipe", {...})  # one message on the event's topic
    await sim.stop()

Values start plausible (within the property's minimum/maximum, enums on a member, bools,
short text) and read-only numeric properties move by a seeded random walk each tick; writable
(``rw``) properties keep what a command set. Points sharing a topic are published together as
one JSON document, each value at its path. Topic wildcards in a binding are filled in (``+``:
``sim``, ``#``: nothing).

Commands on ``command_topic`` are canonical envelopes (``property_set``/``service_call``); each
gets a reply envelope with the same correlation id on ``reply_topic`` (a wildcard level there
is filled with the correlation id): ``ok`` with the new values or the service's outputs,
``unknown_service``, ``read_only`` or ``bad_request`` otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Mapping
from typing import Any

import aiomqtt

from protocol_adapters.mqtt.driver import aiomqtt_logger
from protocol_adapters.mqtt.errors import MqttConfigError, MqttConnectionError
from protocol_adapters.mqtt.mapping import JsonPath, TopicFilter
from thing_models.errors import MessageError
from thing_models.messages import Message, MessageKind, from_json_dict, to_json_dict
from thing_models.model import Access, DataSchema, DataType, MqttBinding, ThingModel

__all__ = ["MqttSimulator", "plausible_value"]


def plausible_value(schema: DataSchema, rng: random.Random) -> Any:
    """A value of ``schema``'s type within its constraints."""
    kind = schema.type
    if kind is DataType.BOOL:
        return rng.random() < 0.5
    if kind is DataType.TIMESTAMP:
        return int(time.time() * 1000)
    if kind.is_numeric:
        low = schema.minimum if schema.minimum is not None else 0
        high = schema.maximum if schema.maximum is not None else low + 100
        value = low + (high - low) * rng.uniform(0.3, 0.7)
        return round(value) if kind.is_integer else round(value, 2)
    if kind is DataType.ENUM:
        return schema.enum[0].value if schema.enum else ""
    if kind is DataType.TEXT:
        return "sim"[: schema.max_length or 3]
    if kind is DataType.STRUCT:
        return {f.id: plausible_value(f.schema, rng) for f in schema.fields}
    return []


def _concrete(pattern: str, device_id: str, fill: str = "sim") -> str:
    levels = list(TopicFilter.compile(pattern, device_id).levels)
    if levels and levels[-1] == "#":
        levels.pop()
    return "/".join(fill if level == "+" else level for level in levels)


def _put(document: dict[str, Any], path: JsonPath, value: Any) -> Any:
    """``document`` with ``value`` at ``path`` (containers made on the way); the root path
    replaces the document."""
    if not path.steps:
        return value
    node: Any = document
    for step, following in zip(path.steps, (*path.steps[1:], None), strict=True):
        empty: Any = [] if isinstance(following, int) else {}
        if isinstance(step, int):
            while len(node) <= step:
                node.append(None)
            if following is None:
                node[step] = value
            elif not isinstance(node[step], list | dict):
                node[step] = empty
            node = node[step]
        else:
            if following is None:
                node[step] = value
            elif not isinstance(node.get(step), list | dict):
                node[step] = empty
            node = node[step]
    return document


class MqttSimulator:
    """A simulated device publishing its model's points and answering commands."""

    def __init__(
        self,
        model: ThingModel,
        host: str,
        port: int,
        device_id: str,
        *,
        seed: int = 0,
        tick_ms: int | None = 1000,
        binding: MqttBinding | None = None,
    ) -> None:
        binding = binding if binding is not None else model.bindings.mqtt
        if binding is None:
            raise MqttConfigError(f"model {model.ref} has no MQTT binding")
        self.model = model
        self.binding = binding
        self.host = host
        self.port = port
        self.device_id = device_id
        self.tick_ms = tick_ms
        self._rng = random.Random(seed)
        self.values: dict[str, Any] = {}
        for point in binding.points:
            prop = model.property(point.property)
            schema = prop.schema if prop is not None else DataSchema(DataType.DOUBLE)
            self.values[point.property] = plausible_value(schema, self._rng)
        self.commands_received = 0
        self._command_topic = (
            TopicFilter.compile(binding.command_topic, device_id, wildcards=False).text
            if binding.command_topic
            else None
        )
        self._client: aiomqtt.Client | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Connect, subscribe the command topic, publish the state once, start ticking."""
        stack = contextlib.AsyncExitStack()
        client = aiomqtt.Client(
            self.host, self.port, identifier=f"sim-{self.device_id}", logger=aiomqtt_logger()
        )
        try:
            await stack.enter_async_context(client)
        except aiomqtt.MqttError as exc:
            raise MqttConnectionError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        self._stack, self._client = stack, client
        loop = asyncio.get_running_loop()
        if self._command_topic is not None:
            await client.subscribe(self._command_topic, qos=self.binding.qos)
            self._tasks.append(loop.create_task(self._serve(client)))
        await self.publish_state()
        if self.tick_ms:
            self._tasks.append(loop.create_task(self._tick_loop(self.tick_ms / 1000)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
        self._tasks.clear()
        if self._stack is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._stack.aclose()
        self._stack = self._client = None

    # ------------------------------------------------------------------ publishing

    def tick(self) -> None:
        """One random-walk step of every read-only numeric property."""
        for point in self.binding.points:
            prop = self.model.property(point.property)
            if prop is None or prop.access is Access.READ_WRITE or not prop.schema.type.is_numeric:
                continue
            schema = prop.schema
            low = schema.minimum if schema.minimum is not None else float("-inf")
            high = schema.maximum if schema.maximum is not None else float("inf")
            span = (high - low) if low > float("-inf") and high < float("inf") else 10.0
            value = self.values[point.property] + self._rng.uniform(-0.02, 0.02) * span
            value = min(max(value, low), high)
            self.values[point.property] = (
                round(value) if schema.type.is_integer else round(value, 2)
            )

    def documents(self) -> dict[str, Any]:
        """The payload (JSON value) of each point topic, built from the current values."""
        out: dict[str, Any] = {}
        for point in self.binding.points:
            topic = _concrete(point.topic, self.device_id)
            out[topic] = _put(
                out.get(topic, {}), JsonPath.parse(point.path), self.values[point.property]
            )
        return out

    async def publish_state(self) -> None:
        client = self._require()
        for topic, document in self.documents().items():
            await client.publish(topic, json.dumps(document), qos=self.binding.qos)

    async def raise_event(self, event_id: str, outputs: Mapping[str, Any]) -> None:
        """Publish one message on ``event_id``'s topic with ``outputs`` at its path."""
        route = next((r for r in self.binding.events if r.event == event_id), None)
        if route is None:
            raise MqttConfigError(f"model {self.model.ref} routes no event {event_id!r}")
        document = _put({}, JsonPath.parse(route.path), dict(outputs))
        topic = _concrete(route.topic, self.device_id)
        await self._require().publish(topic, json.dumps(document), qos=self.binding.qos)

    def _require(self) -> aiomqtt.Client:
        if self._client is None:
            raise MqttConnectionError("the simulator is not started")
        return self._client

    async def _tick_loop(self, period_s: float) -> None:
        while True:
            await asyncio.sleep(period_s)
            self.tick()
            await self.publish_state()

    # ------------------------------------------------------------------ commands

    async def _serve(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if message.topic.value != self._command_topic:
                continue
            self.commands_received += 1
            reply = self.answer(bytes(message.payload) if message.payload is not None else b"")
            if reply is not None:
                topic, payload = reply
                await client.publish(topic, payload, qos=self.binding.qos)

    def answer(self, payload: bytes) -> tuple[str, bytes] | None:
        """The reply (topic, payload) to one command, or None for one that is not an envelope."""
        try:
            request = from_json_dict(json.loads(payload))
        except (ValueError, MessageError):
            return None
        if request.kind is MessageKind.PROPERTY_SET:
            reply = self._set(request)
        elif request.kind is MessageKind.SERVICE_CALL:
            reply = self._call(request)
        else:
            return None
        if self.binding.reply_topic is None:
            return None
        topic = _concrete(self.binding.reply_topic, self.device_id, fill=request.id)
        if self.binding.reply_topic.endswith("#"):
            topic = f"{topic}/{request.id}"
        return topic, json.dumps(to_json_dict(reply)).encode()

    def _set(self, request: Message) -> Message:
        for name in request.params:
            prop = self.model.property(name)
            if prop is None or name not in self.values:
                return request.reply("bad_request", status_message=f"no property {name}")
            if prop.access is not Access.READ_WRITE:
                return request.reply("read_only", status_message=f"{name} is read-only")
        self.values.update(request.params)
        return request.reply(params=dict(request.params))

    def _call(self, request: Message) -> Message:
        service = self.model.service(request.name or "")
        if service is None:
            return request.reply("unknown_service", status_message=f"no service {request.name}")
        outputs = {f.id: plausible_value(f.schema, self._rng) for f in service.outputs}
        return request.reply(params=outputs)
