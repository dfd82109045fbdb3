"""The asyncio MQTT driver: the pure mapping over one shared aiomqtt client per broker.

::

    link = BrokerLink("127.0.0.1", 1883)                 # one per broker, shared by its devices
    driver = MqttDriver(link, model.bindings.mqtt, model, "door-1")
    driver.set_sink(on_update)                           # Update(readings, events) per message
    await driver.connect()                               # attaches, waits for the broker
    await driver.invoke("unlock", {"duration": 5})       # publish, await the correlated reply
    await driver.close()                                 # detaches; the last one disconnects

Contract:

- **One client per broker** (:class:`BrokerLink`): it subscribes the filters of every attached
  device (and their reply topics), dispatches each message to the devices whose filters match
  (exact topics by dict lookup, wildcard filters by matching, cached per topic) and counts
  messages no device claims in :attr:`BrokerLink.unknown_topics`.
- **Pushed, not polled**: :attr:`MqttDriver.pollable` is empty; every message becomes an
  :class:`~protocol_adapters.base.Update` handed to the sink on the event loop.
  :meth:`MqttDriver.read_points` returns the latest pushed readings.
- **Commands** (:meth:`MqttDriver.write`, :meth:`MqttDriver.invoke`) publish the envelope with
  the binding's QoS (QoS >= 1 waits for the PUBACK, so concurrent commands are pipelined, not
  serialized) and await the reply with the same correlation id: :class:`MqttTimeoutError`
  after ``timeout_s``, :class:`MqttCommandRejected` for a status other than ``ok``,
  :class:`MqttConnectionError` while the broker is unreachable.
- **Reconnect**: when the broker drops, every attached device goes ``offline`` (diagnostics)
  and the link reconnects with exponential backoff (``backoff_min_s`` doubling to
  ``backoff_max_s``), re-subscribing everything; the devices are ``online`` again on success.
- **Silence** (``stale_after_s`` per device, default none): a device from which no message
  (value, event or reply) arrived for that long, while the broker connection is up, turns
  ``degraded`` (counted as a timeout; ``last_error`` says for how long) and its points get one
  :class:`~protocol_adapters.base.Update` of bad readings ("no message for 5m0s"); its next
  message makes it ``online`` again. One watchdog task per link checks every device, waking at
  the earliest deadline but at most 20 times per shortest ``stale_after_s``. After a reconnect
  every device gets a full ``stale_after_s`` again.
- **TLS** (``tls``: :class:`~protocol_adapters.mqtt.tls.TlsSettings`): the client context is
  built when the link is made (:class:`MqttConfigError` for an unusable file); a failed handshake
  (an untrusted broker certificate ...) is a connection error naming the broker.
- aiomqtt's own errors are translated here, once (``raise ... from exc``); its "pending
  publish calls" warning is silenced by a logging filter (pipelined publishes are intended).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import sys
import time
from collections.abc import Collection, Mapping
from typing import Any

import aiomqtt

from protocol_adapters.base import DiagnosticState, Reading, Update, UpdateSink
from protocol_adapters.mqtt.errors import (
    MqttCommandRejected,
    MqttConnectionError,
    MqttPayloadError,
    MqttTimeoutError,
)
from protocol_adapters.mqtt.mapping import (
    MAX_PAYLOAD_BYTES,
    Command,
    CommandCodec,
    DeviceMapping,
    Reply,
    TopicFilter,
)
from protocol_adapters.mqtt.tls import TlsSettings, client_context, describe_tls_error
from thing_models.messages import Quality
from thing_models.model import MqttBinding, ThingModel

__all__ = ["BrokerLink", "MqttDriver", "aiomqtt_logger", "format_span"]

_log = logging.getLogger(__name__)
_SUBSCRIBE_CHUNK = 64
_MAX_ROUTE_CACHE = 8192
#: the watchdog wakes at most this many times per shortest stale_after
_WATCH_STEPS = 20
_WATCH_MIN_S = 0.01
#: silence degrades a device, never makes it offline: the broker connection is up
_NEVER_OFFLINE = sys.maxsize


def format_span(seconds: float) -> str:
    """A duration the way Go prints it: ``300ms``, ``1.5s``, ``5m0s``, ``1h0m0s``."""
    if seconds < 1:
        return f"{round(seconds * 1000, 3):g}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{round(secs, 3):g}s"
    if hours or minutes:
        text = f"{int(minutes)}m{text}"
    if hours:
        text = f"{int(hours)}h{text}"
    return text


class _NoPendingPublishWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pending publish calls" not in record.getMessage()


def aiomqtt_logger() -> logging.Logger:
    """The logger given to aiomqtt clients, without the "pending publish calls" warning."""
    logger = logging.getLogger("protocol_adapters.mqtt.aiomqtt")
    if not any(isinstance(f, _NoPendingPublishWarning) for f in logger.filters):
        logger.addFilter(_NoPendingPublishWarning())
    return logger


def _payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()


class BrokerLink:
    """One aiomqtt client to one broker, shared by the devices attached to it."""

    def __init__(
        self,
        host: str,
        port: int = 1883,
        *,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        keepalive_s: int = 30,
        clean_session: bool | None = None,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        tls: TlsSettings | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        #: built now, so that an unusable certificate file is reported at once
        self._tls_context: ssl.SSLContext | None = (
            client_context(tls, self.endpoint) if tls is not None else None
        )
        self.client_id = client_id
        self.username = username
        self.password = password
        self.keepalive_s = keepalive_s
        #: False: a persistent session (needs ``client_id``): the broker keeps QoS >= 1
        #: messages for the devices while the agent is away
        self.clean_session = clean_session
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = max(backoff_min_s, backoff_max_s)
        self._drivers: list[MqttDriver] = []
        self._exact: dict[str, list[MqttDriver]] = {}
        self._wild: list[tuple[TopicFilter, MqttDriver]] = []
        self._cache: dict[str, tuple[MqttDriver, ...]] = {}
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._watch_wake = asyncio.Event()
        self._connected: asyncio.Event | None = None
        self._down = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        #: messages on topics no attached device claims
        self.unknown_topics = 0
        #: messages received (all devices)
        self.received = 0
        #: successful connections so far (1 after the first, +1 per reconnect)
        self.connections = 0
        self.last_error = ""

    @property
    def endpoint(self) -> str:
        scheme = "mqtts" if self.tls is not None else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._client is not None and self._connected is not None and self._connected.is_set()

    # ------------------------------------------------------------------ devices

    def attach(self, driver: MqttDriver) -> asyncio.Task[Any] | None:
        """Route ``driver``'s topics to it and subscribe them: at the next connection, or now
        when connected (the subscribing task is returned then)."""
        if driver in self._drivers:
            return None
        self._drivers.append(driver)
        self._reindex()
        driver._heard(asyncio.get_running_loop().time())
        self._watch_wake.set()
        late = None
        if self.connected and self._client is not None:
            late = self._spawn(self._subscribe_late(self._client, driver.filters))
        if self._task is None or self._task.done():
            self._connected = asyncio.Event()
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(), name=self.endpoint)
            self._watcher = loop.create_task(self._watch(), name=f"{self.endpoint} silence")
        return late

    async def join(self, driver: MqttDriver, timeout_s: float) -> None:
        """Attach ``driver``; return once connected with its topics subscribed (raises
        :class:`MqttConnectionError` after ``timeout_s``)."""
        late = self.attach(driver)
        await self.wait_connected(timeout_s)
        if late is not None:
            try:
                await asyncio.wait_for(asyncio.shield(late), timeout_s)
            except TimeoutError as exc:
                raise MqttConnectionError(
                    f"{self.endpoint}: subscribing took longer than {timeout_s:g}s"
                ) from exc
            if driver.diagnostics.state == "offline":
                driver.diagnostics.ok()  # joined a link that was already up

    async def detach(self, driver: MqttDriver) -> None:
        """Stop routing to ``driver`` and drop the subscriptions no other device uses; the last
        device to leave closes the connection."""
        if driver not in self._drivers:
            return
        self._drivers.remove(driver)
        self._reindex()
        client = self._client
        if self._drivers and client is not None and self.connected:
            still = {text for d in self._drivers for text, _ in d.filters}
            unused = sorted({text for text, _ in driver.filters} - still)
            if unused:  # a task the last detach cancels: never waits past the link's end
                await asyncio.wait({self._spawn(self._unsubscribe(client, unused))})
        if not self._drivers and self._task is not None:
            for task in (self._task, self._watcher):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            self._task = self._watcher = None
            for task in list(self._background):
                task.cancel()

    def _reindex(self) -> None:
        self._exact = {}
        self._wild = []
        self._cache = {}
        for driver in self._drivers:
            for topic_filter in driver.topic_filters:
                if topic_filter.has_wildcards:
                    self._wild.append((topic_filter, driver))
                else:
                    self._exact.setdefault(topic_filter.text, []).append(driver)

    def _route(self, topic: str) -> tuple[MqttDriver, ...]:
        found = self._cache.get(topic)
        if found is None:
            drivers = list(self._exact.get(topic, ()))
            for topic_filter, driver in self._wild:
                if driver not in drivers and topic_filter.match(topic) is not None:
                    drivers.append(driver)
            found = tuple(drivers)
            if len(self._cache) >= _MAX_ROUTE_CACHE:
                self._cache.clear()
            self._cache[topic] = found
        return found

    # ------------------------------------------------------------------ connection

    async def wait_connected(self, timeout_s: float) -> None:
        """Return once connected; raises :class:`MqttConnectionError` after ``timeout_s``."""
        event = self._connected
        if event is None:
            raise MqttConnectionError(f"{self.endpoint}: no device attached")
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError as exc:
            why = f": {self.last_error}" if self.last_error else ""
            raise MqttConnectionError(
                f"{self.endpoint}: not connected after {timeout_s:g}s{why}"
            ) from exc

    async def wait_disconnected(self, timeout_s: float) -> None:
        """Return once the connection is down (at once when it is not up)."""
        if self.connected:
            await asyncio.wait_for(self._down.wait(), timeout_s)

    async def _run(self) -> None:
        delay = self.backoff_min_s
        assert self._connected is not None
        while True:
            try:
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    identifier=self.client_id,
                    username=self.username,
                    password=self.password,
                    keepalive=self.keepalive_s,
                    clean_session=self.clean_session,
                    logger=aiomqtt_logger(),
                    tls_context=self._tls_context,
                ) as client:
                    self._client = client
                    await self._subscribe(client, self._all_filters())
                    self.connections += 1
                    delay = self.backoff_min_s
                    self._connected.set()
                    self._down.clear()
                    now = asyncio.get_running_loop().time()
                    for driver in list(self._drivers):
                        driver.diagnostics.ok()
                        driver._heard(now)
                    self._watch_wake.set()
                    async for message in client.messages:
                        self._dispatch(message)
            except asyncio.CancelledError:
                self._lost("closed", log=False)
                raise
            except (aiomqtt.MqttError, OSError) as exc:
                self._lost(_describe(exc))
            except Exception as exc:  # keep the link alive whatever a device's sink did
                _log.exception("%s: unexpected error, reconnecting", self.endpoint)
                self._lost(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max_s)

    async def _watch(self) -> None:
        """Flag the devices silent for longer than their ``stale_after_s`` (one task per link;
        it sleeps while disconnected and while no device has a deadline)."""
        assert self._connected is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._connected.wait()
            self._watch_wake.clear()
            now = loop.time()
            next_in: float | None = None
            shortest: float | None = None
            for driver in list(self._drivers):
                try:
                    left = driver._check_silence(now)
                except Exception:  # a device's sink must not stop the watchdog
                    _log.exception("%s: silence check failed", driver.endpoint)
                    left = None
                if left is not None:
                    next_in = left if next_in is None else min(next_in, left)
                if driver.stale_after_s is not None:
                    shortest = min(shortest or driver.stale_after_s, driver.stale_after_s)
            if next_in is not None and shortest is not None:
                next_in = max(next_in, shortest / _WATCH_STEPS, _WATCH_MIN_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._watch_wake.wait(), next_in)

    def _lost(self, why: str, *, log: bool = True) -> None:
        was_connected = self.connected
        self._client = None
        if self._connected is not None:
            self._connected.clear()
        self._down.set()
        self.last_error = why
        error = MqttConnectionError(f"{self.endpoint}: {why}")
        for driver in list(self._drivers):
            driver._disconnected(error)
        if was_connected and log:
            _log.warning("%s: connection lost (%s); reconnecting", self.endpoint, why)

    def _all_filters(self) -> list[tuple[str, int]]:
        out: dict[str, int] = {}
        for driver in self._drivers:
            for text, qos in driver.filters:
                out[text] = max(qos, out.get(text, 0))
        return sorted(out.items())

    async def _subscribe(self, client: aiomqtt.Client, filters: list[tuple[str, int]]) -> None:
        for start in range(0, len(filters), _SUBSCRIBE_CHUNK):
            await client.subscribe(filters[start : start + _SUBSCRIBE_CHUNK])

    async def _subscribe_late(self, client: aiomqtt.Client, filters: list[tuple[str, int]]) -> None:
        """Subscribe a device attached while connected; a failure here means the connection
        is going down, and the reconnect subscribes everything again."""
        with contextlib.suppress(aiomqtt.MqttError):
            await self._subscribe(client, filters)

    async def _unsubscribe(self, client: aiomqtt.Client, topics: list[str]) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            await client.unsubscribe(topics)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _dispatch(self, message: aiomqtt.Message) -> None:
        self.received += 1
        topic = message.topic.value
        drivers = self._route(topic)
        if not drivers:
            self.unknown_topics += 1
            return
        payload = _payload_bytes(message.payload)
        for driver in drivers:
            driver._on_message(topic, payload)

    async def publish(self, topic: str, payload: bytes, qos: int) -> None:
        """Publish (waiting for the PUBACK at QoS >= 1); raises :class:`MqttConnectionError`."""
        client = self._client
        if client is None or not self.connected:
            raise MqttConnectionError(f"{self.endpoint}: not connected to the broker")
        try:
            await client.publish(topic, payload, qos=qos)
        except aiomqtt.MqttError as exc:
            raise MqttConnectionError(f"{self.endpoint}: publish to {topic} failed: {exc}") from exc


def _describe(exc: BaseException) -> str:
    """Why a connection failed, for ``last_error`` (TLS failures said plainly)."""
    cause = exc if isinstance(exc, ssl.SSLError) else exc.__cause__ or exc.__context__
    tls = describe_tls_error(cause) if cause is not None else None
    return tls or f"{type(exc).__name__}: {exc}"


class MqttDriver:
    """One MQTT device: its routes and commands over a shared :class:`BrokerLink`."""

    def __init__(
        self,
        link: BrokerLink,
        binding: MqttBinding,
        model: ThingModel,
        device_id: str,
        *,
        timeout_s: float = 5.0,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        offline_after: int = 3,
        stale_after_s: float | None = None,
    ) -> None:
        self.link = link
        #: no message for this long (while connected) makes the device degraded; None: never
        self.stale_after_s = stale_after_s if stale_after_s and stale_after_s > 0 else None
        #: True from the silence until the device's next message
        self.silent = False
        self._last_heard = 0.0
        self.binding = binding
        self.device_id = device_id
        self.timeout_s = timeout_s
        self.offline_after = max(1, offline_after)
        self.mapping = DeviceMapping(binding, model, device_id, max_payload_bytes=max_payload_bytes)
        self.commands = CommandCodec(binding, model, device_id, max_payload_bytes=max_payload_bytes)
        self.topic_filters: tuple[TopicFilter, ...] = tuple(r.filter for r in self.mapping.routes)
        self.filters = self.mapping.filters
        if self.commands.reply_filter is not None:
            self.topic_filters += (self.commands.reply_filter,)
            self.filters = [*self.filters, (self.commands.reply_filter.text, binding.qos)]
        self.diagnostics = DiagnosticState()
        #: the properties the device publishes (made bad when it falls silent)
        self.points: tuple[str, ...] = tuple(
            dict.fromkeys(p.property for r in self.mapping.routes for p in r.points)
        )
        self.latest: dict[str, Reading] = {}
        #: replies that could not be decoded or matched no pending command
        self.stray_replies = 0
        self._sink: UpdateSink | None = None
        self._pending: dict[str, asyncio.Future[Reply]] = {}

    @property
    def endpoint(self) -> str:
        return f"{self.link.endpoint} device {self.device_id}"

    @property
    def connected(self) -> bool:
        return self.link.connected

    @property
    def pollable(self) -> frozenset[str]:
        return frozenset()

    def set_sink(self, sink: UpdateSink | None) -> None:
        self._sink = sink

    async def connect(self) -> None:
        """Attach to the link and wait until the broker connection is up and this device's
        topics are subscribed."""
        await self.link.join(self, self.timeout_s)

    async def close(self) -> None:
        await self.link.detach(self)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(MqttConnectionError(f"{self.endpoint}: driver closed"))
        self._pending.clear()
        self.diagnostics.state = "offline"

    async def read_points(self, properties: Collection[str]) -> dict[str, Reading]:
        """The latest pushed reading of each of ``properties`` that has one."""
        return {p: self.latest[p] for p in properties if p in self.latest}

    # ------------------------------------------------------------------ incoming

    def _heard(self, now: float) -> None:
        """Restart the silence clock (loop time ``now``)."""
        self._last_heard = now
        if self.silent:
            self.silent = False
            self.link._watch_wake.set()

    def _check_silence(self, now: float) -> float | None:
        """Flag the device silent when its time is up; the seconds left until then, or None
        (no ``stale_after_s``, or already silent)."""
        if self.stale_after_s is None or self.silent:
            return None
        left = self._last_heard + self.stale_after_s - now
        if left > 0:
            return left
        self._fall_silent()
        return None

    def _fall_silent(self) -> None:
        assert self.stale_after_s is not None
        self.silent = True
        reason = f"no message for {format_span(self.stale_after_s)}"
        self.diagnostics.failed(MqttTimeoutError(f"{self.endpoint}: {reason}"), _NEVER_OFFLINE)
        readings = {p: Reading(None, Quality.BAD, reason) for p in self.points}
        if not readings:
            return
        self.latest.update(readings)
        if self._sink is not None:
            self._sink(Update(int(time.time() * 1000), readings))

    def _on_message(self, topic: str, payload: bytes) -> None:
        if self.stale_after_s is not None:
            self._heard(asyncio.get_running_loop().time())
        if self.commands.is_reply(topic):
            self._on_reply(topic, payload)
            return
        rejected = self.mapping.rejected_events
        update = self.mapping.handle(topic, payload, int(time.time() * 1000))
        if update is None:
            return
        bad = next((r.reason for r in update.readings.values() if r.quality is Quality.BAD), None)
        if bad is None and self.mapping.rejected_events > rejected:
            bad = self.mapping.last_error
        if bad is not None:
            self.diagnostics.failed(MqttPayloadError(bad), self.offline_after)
        else:
            self.diagnostics.ok()
        if not update.readings and not update.events:
            return
        self.latest.update(update.readings)
        if self._sink is not None:
            self._sink(update)

    def _on_reply(self, topic: str, payload: bytes) -> None:
        try:
            reply = self.commands.decode_reply(topic, payload)
        except MqttPayloadError as exc:
            self.stray_replies += 1
            self.mapping.last_error = str(exc)
            return
        future = self._pending.pop(reply.correlation_id, None)
        if future is None or future.done():
            self.stray_replies += 1
            return
        future.set_result(reply)

    def _disconnected(self, error: MqttConnectionError) -> None:
        self.diagnostics.failed(error, self.offline_after)

    # ------------------------------------------------------------------ commands

    async def _request(self, command: Command, what: str) -> Reply:
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[command.correlation_id] = future
        try:
            await self.link.publish(command.topic, command.payload, self.binding.qos)
            reply = await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError as exc:
            error = MqttTimeoutError(
                f"{self.endpoint}: no reply to {what} within {self.timeout_s:g}s "
                f"(correlation id {command.correlation_id})"
            )
            self.diagnostics.failed(error, self.offline_after)
            raise error from exc
        except MqttConnectionError as exc:
            self.diagnostics.failed(exc, self.offline_after)
            raise
        finally:
            self._pending.pop(command.correlation_id, None)
        if not reply.ok:
            rejected = MqttCommandRejected(
                f"{self.endpoint}: {what} rejected: {reply.status}"
                + (f" ({reply.status_message})" if reply.status_message else ""),
                reply.status,
                dict(reply.params or {}),
            )
            self.diagnostics.failed(rejected, self.offline_after)
            raise rejected
        self.diagnostics.ok()
        return reply

    async def write(
        self, property_id: str, value: object, *, read_back: bool = False
    ) -> Reading | None:
        """Set ``property_id``; with ``read_back``, the value the reply reports (if any)."""
        command = self.commands.property_set(property_id, value)
        reply = await self._request(command, f"set {property_id}")
        if not read_back:
            return None
        params = reply.params or {}
        if property_id in params:
            return Reading(params[property_id], Quality.GOOD)
        return self.latest.get(property_id)

    async def invoke(self, service_id: str, args: Mapping[str, object]) -> dict[str, object]:
        """Call ``service_id`` and return the reply's output parameters."""
        command = self.commands.service_call(service_id, args)
        reply = await self._request(command, f"call {service_id}")
        return dict(reply.params or {})
