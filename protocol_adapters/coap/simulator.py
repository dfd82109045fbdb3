"""A CoAP device simulator that follows a thing model's CoAP binding (tests, demos).

::

    sim = CoapSimulator(model, seed=1)
    port = await sim.start()                  # UDP on 127.0.0.1 unless host= says else
    sim.set_value("occupied", True)           # observers are notified
    await sim.tick()                          # one random-walk step of every read-only point
    sim.fail("/env", "5.03")                  # answer 5.03 until fail("/env", None)
    sim.set_raw("/env", b"\\xff")             # serve these bytes instead of the document
    await sim.stop()

Each bound resource is an aiocoap ``ObservableResource`` serving one document built from its
points (a map with each point's value at its path, or the bare value for a point without a
path) in the resource's content format; large documents go out block-wise (aiocoap's Block2).
A resource with a writable (``access: rw``) point takes PUT (a document in its content
format, merged into the current one; 4.00 when it does not decode, 4.05 when nothing on it
is writable). ``max_age_s`` sets the Max-Age of every answer (observers expect a notification
within it). Every model service answers at the resource, method and content format of its
``bindings.coap.services`` entry (a service without one: POST JSON at its ``x-coap`` resource,
default ``/<service id>``) with plausible outputs; another method answers 4.05. Read-only
values move by a seeded random walk on :meth:`tick` (or every ``tick_ms``); a change notifies
the resource's observers.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Mapping
from typing import Any

import aiocoap
from aiocoap import resource as coap_resource

from protocol_adapters.coap.errors import CoapConfigError, CoapError
from protocol_adapters.coap.mapping import (
    CONTENT_FORMAT_NUMBERS,
    PathStep,
    PointMapping,
    ResourceMapping,
    compile_binding,
    decode_payload,
    encode_payload,
    from_model,
    point_for,
)
from thing_models.model import (
    CoapBinding,
    CoapMethod,
    ContentFormat,
    DataSchema,
    DataType,
    ThingModel,
)

__all__ = ["CoapSimulator", "plausible_value"]

_CODES = {
    "4.00": aiocoap.BAD_REQUEST,
    "4.04": aiocoap.NOT_FOUND,
    "4.05": aiocoap.METHOD_NOT_ALLOWED,
    "5.00": aiocoap.INTERNAL_SERVER_ERROR,
    "5.03": aiocoap.SERVICE_UNAVAILABLE,
}


def plausible_value(schema: DataSchema | None, rng: random.Random, name: str = "") -> Any:
    """A value of ``schema`` within its limits (a number, a flag, a label ...)."""
    if schema is None:
        return 0
    kind = schema.type
    if kind is DataType.BOOL:
        return rng.random() < 0.5
    if kind is DataType.TIMESTAMP:
        return time.time_ns() // 1_000_000
    if kind.is_numeric:
        low = schema.minimum if schema.minimum is not None else 0
        high = schema.maximum if schema.maximum is not None else low + 100
        value = low + (high - low) * (0.25 + 0.5 * rng.random())
        return round(value) if kind.is_integer else round(value, 2)
    if kind is DataType.TEXT:
        return ("SIM-" + name.replace(":", "-"))[: schema.max_length or 32]
    if kind is DataType.ENUM:
        return schema.enum[0].value if schema.enum else 0
    if kind is DataType.STRUCT:
        return {f.id: plausible_value(f.schema, rng, f.id) for f in schema.fields}
    count = min(schema.max_items if schema.max_items is not None else 3, 3)
    return [plausible_value(schema.items, rng, name) for _ in range(count)]


def _walk(value: Any, schema: DataSchema | None, rng: random.Random) -> Any:
    if schema is None or schema.type is DataType.TIMESTAMP:
        return value
    if schema.type is DataType.BOOL:
        return (not value) if rng.random() < 0.1 else value
    if schema.type.is_numeric and isinstance(value, int | float):
        low, high = schema.minimum, schema.maximum
        span = (high - low) if low is not None and high is not None else 10.0
        moved = value + (rng.random() - 0.5) * span * 0.02
        if low is not None:
            moved = max(low, moved)
        if high is not None:
            moved = min(high, moved)
        return round(moved) if schema.type.is_integer else round(moved, 2)
    return value


def _put(document: Any, path: tuple[PathStep, ...], value: Any) -> Any:
    """``document`` with ``value`` at ``path`` (containers created as needed)."""
    if not path:
        return value
    step, rest = path[0], path[1:]
    if isinstance(step, int):
        items = list(document) if isinstance(document, list) else []
        items.extend([None] * (step + 1 - len(items)))
        items[step] = _put(items[step], rest, value)
        return items
    mapping = dict(document) if isinstance(document, dict) else {}
    mapping[step] = _put(mapping.get(step), rest, value)
    return mapping


def _merge(current: Any, update: Any) -> Any:
    if isinstance(current, dict) and isinstance(update, dict):
        merged = dict(current)
        for key, value in update.items():
            merged[key] = _merge(current.get(key), value)
        return merged
    return update


class _Resource(coap_resource.ObservableResource):  # type: ignore[misc]
    """One simulated resource: its document, a fault to answer with, raw bytes to serve."""

    def __init__(self, mapping: ResourceMapping, document: Any) -> None:
        super().__init__()
        self.mapping = mapping
        self.document = document
        self.fault: str | None = None
        self.raw: bytes | None = None
        self.writable = any(p.writable for p in mapping.points)
        self.puts = 0
        self.max_age_s: int | None = None

    async def render_to_pipe(self, request: Any) -> Any:
        try:
            return await super().render_to_pipe(request)
        except TypeError:
            # aiocoap 0.4.17: a notification added while the observer deregisters ends the
            # pipe inside Pipe._add_event, which then iterates ``False``; nobody is listening
            if getattr(request, "_event_callbacks", None) is False:
                return None
            raise

    def payload(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return encode_payload(self.document, self.mapping.content_format)

    async def render_get(self, request: Any) -> Any:
        if self.fault is not None:
            return aiocoap.Message(code=_CODES[self.fault])
        message = aiocoap.Message(
            payload=self.payload(),
            content_format=CONTENT_FORMAT_NUMBERS[self.mapping.content_format],
        )
        if self.max_age_s is not None:
            message.opt.max_age = self.max_age_s
        return message

    async def render_put(self, request: Any) -> Any:
        if self.fault is not None:
            return aiocoap.Message(code=_CODES[self.fault])
        if not self.writable:
            return aiocoap.Message(code=aiocoap.METHOD_NOT_ALLOWED)
        try:
            update = decode_payload(request.payload, self.mapping.content_format)
        except CoapError as exc:
            return aiocoap.Message(code=aiocoap.BAD_REQUEST, payload=str(exc).encode()[:200])
        self.document = _merge(self.document, update)
        self.puts += 1
        self.updated_state()
        return aiocoap.Message(code=aiocoap.CHANGED)


class _Service(coap_resource.Resource):  # type: ignore[misc]
    """A service resource: takes its method (others: 4.05) and payload format (4.00 when the
    payload does not decode), records the arguments and answers plausible outputs."""

    def __init__(
        self,
        outputs: Mapping[str, DataSchema],
        rng: random.Random,
        method: CoapMethod = CoapMethod.POST,
        content_format: ContentFormat = ContentFormat.JSON,
    ) -> None:
        super().__init__()
        self.outputs = outputs
        self.rng = rng
        self.method = method
        self.content_format = content_format
        self.calls: list[Any] = []

    async def render_post(self, request: Any) -> Any:
        return self._call(request, CoapMethod.POST)

    async def render_put(self, request: Any) -> Any:
        return self._call(request, CoapMethod.PUT)

    def _call(self, request: Any, method: CoapMethod) -> Any:
        if method is not self.method:
            return aiocoap.Message(code=aiocoap.METHOD_NOT_ALLOWED)
        fmt = self.content_format
        try:
            args = decode_payload(request.payload, fmt) if request.payload else {}
        except CoapError as exc:
            return aiocoap.Message(code=aiocoap.BAD_REQUEST, payload=str(exc).encode()[:200])
        self.calls.append(args)
        reply: Any = {
            name: True if name == "ok" else plausible_value(schema, self.rng, name)
            for name, schema in self.outputs.items()
        }
        if fmt is ContentFormat.TEXT:
            reply = next(iter(reply.values()), "")
        return aiocoap.Message(
            code=aiocoap.CHANGED,
            payload=encode_payload(reply, fmt) if self.outputs else b"",
            content_format=CONTENT_FORMAT_NUMBERS[fmt],
        )


class CoapSimulator:
    """An aiocoap server whose resources follow ``model``'s CoAP binding."""

    def __init__(
        self,
        model: ThingModel,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        seed: int = 0,
        tick_ms: int | None = None,
        binding: CoapBinding | None = None,
        max_age_s: int | None = None,
    ) -> None:
        binding = binding or model.bindings.coap
        if binding is None:
            raise CoapConfigError(f"model {model.ref} has no coap binding")
        self.model = model
        self.host = host
        self.port = port
        self.tick_ms = tick_ms
        self._rng = random.Random(seed)
        self.mappings = compile_binding(binding, model)
        self.resources: dict[str, _Resource] = {}
        for mapping in self.mappings:
            document: Any = None
            for point in mapping.points:
                value = plausible_value(point.schema, self._rng, point.property)
                document = _put(document, point.path, value)
            self.resources[mapping.resource] = _Resource(mapping, document)
            self.resources[mapping.resource].max_age_s = max_age_s
        self.services: dict[str, _Service] = {}
        bound = {call.service: call for call in binding.services}
        for service in model.services:
            outputs = {f.id: f.schema for f in service.outputs}
            call = bound.get(service.id)
            if call is not None:
                if call.resource in self.resources:
                    raise CoapConfigError(
                        f"service {service.id}: {call.resource} also serves points; the "
                        "simulator needs a resource of its own for a service"
                    )
                self.services[call.resource] = _Service(
                    outputs, self._rng, call.method, call.content_format
                )
                continue
            ext = service.extensions.get("x-coap")
            where = ext.get("resource") if isinstance(ext, Mapping) else None
            path = where if isinstance(where, str) else "/" + service.id.replace(":", "/")
            self.services[path] = _Service(outputs, self._rng)
        self._context: Any = None
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Serve; returns the UDP port (the one given, or the one the system chose for 0)."""
        site = coap_resource.Site()
        for path, resource in [*self.resources.items(), *self.services.items()]:
            site.add_resource(tuple(p for p in path.split("/") if p), resource)
        self._context = await aiocoap.Context.create_server_context(
            site, bind=(self.host, self.port), transports=["udp6"]
        )
        self.port = _bound_port(self._context, self.port)
        if self.tick_ms:
            self._ticker = asyncio.create_task(self._tick_forever(self.tick_ms / 1000))
        return self.port

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._context is not None:
            context, self._context = self._context, None
            await context.shutdown()

    async def __aenter__(self) -> CoapSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ values

    def _point(self, property_id: str) -> tuple[PointMapping, _Resource]:
        point = point_for(self.mappings, property_id)
        return point, self.resources[point.resource]

    def value(self, property_id: str) -> Any:
        """The value the resource now holds at the point's path."""
        point, resource = self._point(property_id)
        value = resource.document
        for step in point.path:
            value = value[step]
        return value

    def set_value(self, property_id: str, value: object) -> None:
        """Set a point's value (checked against its schema) and notify the observers."""
        point, resource = self._point(property_id)
        checked = from_model(value, point.schema, property_id)
        resource.document = _put(resource.document, point.path, checked)
        resource.updated_state()

    def set_raw(self, resource: str, payload: bytes | None) -> None:
        """Serve ``payload`` for ``resource`` (malformed-payload tests); None: the document."""
        self.resources[resource].raw = payload
        self.resources[resource].updated_state()

    def fail(self, resource: str, code: str | None) -> None:
        """Answer every request to ``resource`` with ``code`` (``"4.04"``, ``"5.03"`` ...);
        None: answer normally again. Observers get the error as a notification."""
        if code is not None and code not in _CODES:
            raise CoapConfigError(f"code {code!r} is not one of {', '.join(_CODES)}")
        self.resources[resource].fault = code
        self.resources[resource].updated_state()

    def notify(self, resource: str) -> None:
        """Send the resource's current state to its observers."""
        self.resources[resource].updated_state()

    def puts(self, resource: str) -> int:
        return self.resources[resource].puts

    def calls(self, service_resource: str) -> list[Any]:
        return self.services[service_resource].calls

    async def tick(self) -> None:
        """Move every read-only value one random-walk step; notify what changed."""
        for resource in self.resources.values():
            before = resource.document
            for point in resource.mapping.points:
                if point.writable or resource.mapping.content_format is ContentFormat.TEXT:
                    continue
                try:
                    current = self.value(point.property)
                except (KeyError, IndexError, TypeError):
                    continue
                moved = _walk(current, point.schema, self._rng)
                resource.document = _put(resource.document, point.path, moved)
            if resource.document != before:
                resource.updated_state()

    async def _tick_forever(self, period_s: float) -> None:
        while True:
            await asyncio.sleep(period_s)
            await self.tick()


def _bound_port(context: Any, requested: int) -> int:
    """The UDP port the server context listens on (aiocoap has no public accessor)."""
    if requested:
        return requested
    for interface in context.request_interfaces:
        transport = getattr(getattr(interface, "token_interface", None), "message_interface", None)
        sock = getattr(getattr(transport, "transport", None), "get_extra_info", lambda _: None)(
            "socket"
        )
        if sock is not None:
            port: int = sock.getsockname()[1]
            return port
    raise CoapConfigError("cannot find the port the CoAP server listens on")
