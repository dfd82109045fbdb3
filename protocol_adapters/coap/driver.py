"""The asyncio CoAP driver: the pure mapping over an aiocoap client context.

::

    client = SharedClient()                        # one per agent, shared by every CoAP driver
    driver = CoapDriver("10.0.0.9", 5683, model.bindings.coap, model, client=client)
    driver.set_sink(on_update)                     # Observe notifications arrive here
    await driver.connect()                         # starts the observations
    readings = await driver.read_points(driver.pollable)   # one GET per resource
    await driver.write("setpoint", 21.5)           # PUT; raises CoapTransportError / CoapValueError
    await driver.invoke("calibrate", {})           # POST

Contract:

- ``mode: poll`` points are :attr:`CoapDriver.pollable`; :meth:`read_points` sends one GET per
  resource (concurrently) and never raises: a failed request's points come back bad with the
  error as reason. Block-wise transfer (Block2) is aiocoap's, up to ``max_payload_bytes``.
- ``mode: observe`` resources are observed (RFC 7641) from :meth:`connect` on; each
  notification becomes an :class:`~protocol_adapters.base.Update` to the sink. An observation
  that ends (the server cancels it, an error, or silence past the notification's Max-Age plus
  ``timeout_s``) is registered again after ``reobserve_delay_s``.
- Errors are translated once, here: aiocoap's ``TimeoutError`` or no answer in ``timeout_s`` ->
  :class:`CoapTimeoutError`; other ``NetworkError`` (ICMP refused, resolution) ->
  :class:`CoapConnectionError`; a 4.xx/5.xx answer -> :class:`CoapResponseError` with the code
  (``"4.04"``). Diagnostics count each: a silent device is degraded, then offline after
  ``offline_after`` consecutive timeouts.
- Requests are confirmable by default; ``reliable=False`` sends them with
  ``transport_tuning=aiocoap.Unreliable`` (NON).
- Services: ``bindings.coap.services`` name each service's resource, method (POST or PUT) and
  content format. The inputs go out as a map (JSON or CBOR; checked against the model's
  input schemas; a ``text`` payload carries the one input's value), and the reply becomes
  the model's outputs: the members of the reply's map named by output ids (or the text of
  the one output), each checked against its schema, a required one missing or unfit being
  :class:`CoapPayloadError`. A service without a binding entry falls back to the older
  convention: POST to ``extensions: {x-coap: {resource: /x}}`` on the service (default
  ``/<service id>``), the arguments as a JSON map, the reply's map as the outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import aiocoap
from aiocoap import error as coap_error

from protocol_adapters.base import DiagnosticState, Reading, Update, UpdateSink
from protocol_adapters.coap.errors import (
    CoapConfigError,
    CoapConnectionError,
    CoapError,
    CoapPayloadError,
    CoapTimeoutError,
    CoapTransportError,
    CoapValueError,
)
from protocol_adapters.coap.mapping import (
    CONTENT_FORMAT_NUMBERS,
    MAX_PAYLOAD_BYTES,
    ResourceMapping,
    check_response,
    compile_binding,
    decode_payload,
    document_outputs,
    encode_payload,
    from_model,
    point_for,
    to_model,
)
from thing_models.messages import Quality
from thing_models.model import CoapBinding, CoapMethod, ContentFormat, Field, ThingModel

__all__ = ["CoapDriver", "ServiceMapping", "SharedClient", "compile_services"]

_log = logging.getLogger(__name__)
_DEFAULT_MAX_AGE_S = 60.0  # RFC 7252 section 5.10.5


@dataclass(frozen=True, slots=True)
class ServiceMapping:
    """One service bound to one request: inputs to a payload, the reply to outputs. Without
    a model (``checked`` false) the arguments go out and the reply's map comes back as is."""

    service: str
    resource: str
    method: CoapMethod
    content_format: ContentFormat
    inputs: tuple[Field, ...] = ()
    outputs: tuple[Field, ...] = ()
    checked: bool = True

    @property
    def where(self) -> str:
        return f"{self.service} ({self.method.value.upper()} {self.resource})"

    def encode(self, args: Mapping[str, object]) -> bytes:
        """The request body for ``args``; raises :class:`CoapValueError` for a missing,
        unknown or unfit input."""
        if not self.checked:
            return encode_payload(dict(args), self.content_format)
        known = {f.id for f in self.inputs}
        unknown = sorted(str(k) for k in args if k not in known)
        if unknown:
            raise CoapValueError(f"{self.where}: {unknown[0]!r} is not an input of the service")
        document: dict[str, Any] = {}
        for item in self.inputs:
            value = args.get(item.id)
            if value is None:
                if item.required:
                    raise CoapValueError(f"{self.where}: input {item.id!r} is missing")
                continue
            document[item.id] = from_model(value, item.schema, f"{self.where}: input {item.id!r}")
        if self.content_format is ContentFormat.TEXT:
            values = list(document.values())
            return encode_payload(values[0], ContentFormat.TEXT) if values else b""
        return encode_payload(document, self.content_format)

    def decode(
        self, payload: bytes, fmt: ContentFormat | None, max_bytes: int = MAX_PAYLOAD_BYTES
    ) -> dict[str, object]:
        """The outputs in a reply (``fmt``: its Content-Format, None: the binding's); raises
        :class:`CoapPayloadError` for a reply that does not decode or does not fit."""
        fmt = fmt or self.content_format
        if not self.checked:
            if not payload:
                return {}
            return document_outputs(decode_payload(payload, fmt, max_bytes), self.where)
        if not self.outputs:
            return {}
        document: Any = decode_payload(payload, fmt, max_bytes) if payload else None
        if fmt is ContentFormat.TEXT and document is not None:
            document = {self.outputs[0].id: document}
        if document is None:
            document = {}
        if not isinstance(document, Mapping):
            raise CoapPayloadError(f"{self.where}: reply is not a map of outputs")
        result: dict[str, object] = {}
        for item in self.outputs:
            if item.id not in document:
                if item.required:
                    raise CoapPayloadError(f"{self.where}: reply has no output {item.id!r}")
                continue
            reading = to_model(document[item.id], item.schema, from_text=fmt is ContentFormat.TEXT)
            if reading.quality is not Quality.GOOD:
                raise CoapPayloadError(f"{self.where}: output {item.id!r}: {reading.reason}")
            result[item.id] = reading.value
        return result


def compile_services(binding: CoapBinding, model: ThingModel | None) -> dict[str, ServiceMapping]:
    """The binding's services by id; raises :class:`CoapConfigError` for a service the model
    does not have, a resource that is not an absolute path, or one bound twice."""
    services: dict[str, ServiceMapping] = {}
    for call in binding.services:
        where = f"service {call.service}"
        if not call.resource.startswith("/") or " " in call.resource:
            raise CoapConfigError(f"{where}: resource {call.resource!r} is not an absolute path")
        if call.service in services:
            raise CoapConfigError(f"{where}: bound twice")
        mapping = ServiceMapping(
            call.service, call.resource, call.method, call.content_format, checked=False
        )
        if model is not None:
            service = model.service(call.service)
            if service is None:
                raise CoapConfigError(f"{where}: no such service in {model.ref}")
            text = call.content_format is ContentFormat.TEXT
            if text and (len(service.inputs) > 1 or len(service.outputs) > 1):
                raise CoapConfigError(f"{where}: a text payload carries one input and one output")
            mapping = ServiceMapping(
                call.service,
                call.resource,
                call.method,
                call.content_format,
                service.inputs,
                service.outputs,
            )
        services[call.service] = mapping
    return services


class SharedClient:
    """One aiocoap client context shared by several drivers, created on first use on the
    running loop and shut down when the last driver lets go."""

    def __init__(self) -> None:
        self._context: Any = None
        self._users = 0
        self._lock = asyncio.Lock()

    async def acquire(self) -> Any:
        async with self._lock:
            if self._context is None:
                try:
                    self._context = await aiocoap.Context.create_client_context(transports=["udp6"])
                except OSError as exc:
                    raise CoapConnectionError(f"cannot open a CoAP client socket: {exc}") from exc
            self._users += 1
            return self._context

    async def release(self) -> None:
        async with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0 and self._context is not None:
                context, self._context = self._context, None
                await context.shutdown()


class CoapDriver:
    """The CoAP resources of one device."""

    def __init__(
        self,
        host: str,
        port: int,
        binding: CoapBinding,
        model: ThingModel | None = None,
        *,
        client: SharedClient | None = None,
        scheme: str = "coap",
        timeout_s: float = 5.0,
        reliable: bool = True,
        offline_after: int = 3,
        reobserve_delay_s: float = 1.0,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        if scheme != "coap":
            raise CoapConfigError(f"scheme {scheme!r} is not supported (only coap)")
        if not timeout_s > 0:
            raise CoapConfigError(f"timeout_s must be > 0 (got {timeout_s!r})")
        self.host = host
        self.port = port
        self.model = model
        self.timeout_s = timeout_s
        self.offline_after = max(1, offline_after)
        self.reobserve_delay_s = reobserve_delay_s
        self.max_payload_bytes = max_payload_bytes
        self.resources = compile_binding(binding, model)
        self.services = compile_services(binding, model)
        self.diagnostics = DiagnosticState()
        self._tuning = aiocoap.Reliable if reliable else aiocoap.Unreliable
        self._client = client or SharedClient()
        self._context: Any = None
        self._sink: UpdateSink | None = None
        self._observers: list[asyncio.Task[None]] = []
        self._polled = [r for r in self.resources if not r.observe]
        self._pollable = frozenset().union(*(r.properties for r in self._polled))
        netloc = f"[{host}]" if ":" in host else host
        self._base = f"{scheme}://{netloc}:{port}"

    # ------------------------------------------------------------------ contract

    @property
    def endpoint(self) -> str:
        return self._base

    @property
    def connected(self) -> bool:
        return self._context is not None

    @property
    def pollable(self) -> frozenset[str]:
        return self._pollable

    def set_sink(self, sink: UpdateSink | None) -> None:
        self._sink = sink

    async def connect(self) -> None:
        """Take the shared client context and start observing the observed resources."""
        if self._context is None:
            try:
                self._context = await self._client.acquire()
            except CoapError as exc:
                self.diagnostics.failed(exc, self.offline_after)
                raise
        if not self._observers:
            self._observers = [
                asyncio.create_task(self._observe(r), name=f"coap observe {self._base}{r.resource}")
                for r in self.resources
                if r.observe
            ]

    async def close(self) -> None:
        observers, self._observers = self._observers, []
        for task in observers:
            task.cancel()
        for task in observers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._context is not None:
            self._context = None
            await self._client.release()
        self.diagnostics.state = "offline"

    async def __aenter__(self) -> CoapDriver:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ requests

    def _message(
        self, code: Any, resource: str, payload: bytes = b"", fmt: ContentFormat | None = None
    ) -> Any:
        message = aiocoap.Message(
            code=code, uri=self._base + resource, payload=payload, transport_tuning=self._tuning
        )
        if fmt is not None:
            message.opt.content_format = CONTENT_FORMAT_NUMBERS[fmt]
        return message

    async def _context_now(self) -> Any:
        if self._context is None:
            await self.connect()
        return self._context

    async def _request(
        self, code: Any, resource: str, payload: bytes = b"", fmt: ContentFormat | None = None
    ) -> Any:
        """One request and its (reassembled) response; raises CoapTransportError subclasses.
        Counted in the diagnostics."""
        method = str(code.name)
        try:
            context = await self._context_now()
            request = context.request(self._message(code, resource, payload, fmt))
            response = await self._answer(request.response, method, resource)
            check_response(int(response.code), method, resource, response.payload)
        except CoapTransportError as exc:
            self.diagnostics.failed(exc, self.offline_after)
            raise
        self.diagnostics.ok()
        return response

    async def _answer(
        self,
        future: Any,
        method: str,
        resource: str,
        timeout_s: float | None = None,
        missing: str = "no response",
    ) -> Any:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel
            async with asyncio.timeout(timeout):
                return await future
        except (TimeoutError, coap_error.TimeoutError) as exc:
            raise CoapTimeoutError(
                f"{method} {self._base}{resource}: {missing} in {timeout:g} s"
            ) from exc
        except coap_error.NetworkError as exc:
            raise CoapConnectionError(f"{method} {self._base}{resource}: {exc}") from exc
        except coap_error.Error as exc:
            raise CoapTransportError(f"{method} {self._base}{resource}: {exc}") from exc

    # ------------------------------------------------------------------ reads

    async def _get(self, resource: ResourceMapping, only: Collection[str]) -> dict[str, Reading]:
        try:
            response = await self._request(aiocoap.GET, resource.resource)
            return {
                name: reading
                for name, reading in resource.decode(
                    response.payload, self.max_payload_bytes
                ).items()
                if name in only
            }
        except CoapError as exc:
            return resource.bad(f"{type(exc).__name__}: {exc}", only)

    async def read_points(self, properties: Collection[str]) -> dict[str, Reading]:
        """The points of ``properties``, one GET per resource; never raises."""
        wanted = frozenset(properties)
        jobs = [self._get(r, wanted) for r in self.resources if r.properties & wanted]
        result: dict[str, Reading] = {}
        for readings in await asyncio.gather(*jobs):
            result.update(readings)
        return result

    async def read_all(self) -> dict[str, Reading]:
        return await self.read_points(self._pollable)

    # ------------------------------------------------------------------ observe

    async def _observe(self, resource: ResourceMapping) -> None:
        """Keep ``resource`` observed: register, forward notifications, register again when
        the observation ends, fails or falls silent."""
        while True:
            try:
                await self._observe_once(resource)
            except CoapError as exc:
                self._push(resource.bad(f"{type(exc).__name__}: {exc}"))
                _log.debug("observation of %s%s: %s", self._base, resource.resource, exc)
            await asyncio.sleep(self.reobserve_delay_s)

    async def _observe_once(self, resource: ResourceMapping) -> None:
        context = await self._context_now()
        message = self._message(aiocoap.GET, resource.resource)
        message.opt.observe = 0
        request = context.request(message)
        observation = request.observation
        try:
            try:
                first = await self._answer(request.response, "GET", resource.resource)
                check_response(int(first.code), "GET", resource.resource, first.payload)
            except CoapTransportError as exc:
                self.diagnostics.failed(exc, self.offline_after)
                raise
            self._notified(resource, first)
            if first.opt.observe is None:
                return  # not observable: the caller registers again after its delay
            notifications = aiter(observation)
            while True:
                max_age = first.opt.max_age
                wait = (_DEFAULT_MAX_AGE_S if max_age is None else float(max_age)) + self.timeout_s
                try:
                    first = await self._answer(
                        anext(notifications), "GET", resource.resource, wait, "no notification"
                    )
                    check_response(int(first.code), "GET", resource.resource, first.payload)
                except StopAsyncIteration:
                    return  # the server ended the observation
                except CoapTransportError as exc:
                    self.diagnostics.failed(exc, self.offline_after)
                    raise
                self._notified(resource, first)
        finally:
            if observation is not None and not observation.cancelled:
                observation.cancel()

    def _notified(self, resource: ResourceMapping, response: Any) -> None:
        self.diagnostics.ok()
        try:
            readings = resource.decode(response.payload, self.max_payload_bytes)
        except CoapError as exc:
            readings = resource.bad(f"{type(exc).__name__}: {exc}")
        self._push(readings)

    def _push(self, readings: dict[str, Reading]) -> None:
        if self._sink is not None:
            self._sink(Update(time.time_ns() // 1_000_000, readings))

    # ------------------------------------------------------------------ writes

    async def write(
        self, property_id: str, value: object, *, read_back: bool = False
    ) -> Reading | None:
        """PUT ``value`` to the point's resource; with ``read_back`` GET it again. Raises
        :class:`CoapTransportError` subclasses, :class:`CoapValueError` or
        :class:`CoapConfigError` (no point, or a read-only property)."""
        point = point_for(self.resources, property_id)
        if self.model is not None and not point.writable:
            raise CoapConfigError(f"{property_id}: the property is read-only")
        payload = point.encode_write(value)
        await self._request(aiocoap.PUT, point.resource, payload, point.content_format)
        if not read_back:
            return None
        resource = next(r for r in self.resources if r.resource == point.resource)
        response = await self._request(aiocoap.GET, point.resource)
        return resource.decode(response.payload, self.max_payload_bytes)[property_id]

    async def invoke(self, service_id: str, args: Mapping[str, object]) -> dict[str, object]:
        """Call a service: the request its binding names (or the ``x-coap`` fallback); returns
        its outputs. Raises :class:`CoapConfigError`, :class:`CoapValueError` (inputs),
        :class:`CoapPayloadError` (the reply) and the transport errors."""
        mapping = self.services.get(service_id) or self._fallback_service(service_id)
        payload = mapping.encode(args)
        code = aiocoap.PUT if mapping.method is CoapMethod.PUT else aiocoap.POST
        response = await self._request(code, mapping.resource, payload, mapping.content_format)
        fmt = _FORMATS.get(response.opt.content_format)
        return mapping.decode(response.payload, fmt, self.max_payload_bytes)

    def _fallback_service(self, service_id: str) -> ServiceMapping:
        """A service without a binding entry: POST JSON to its ``x-coap`` resource."""
        resource = self._service_resource(service_id)
        return ServiceMapping(
            service_id, resource, CoapMethod.POST, ContentFormat.JSON, checked=False
        )

    def _service_resource(self, service_id: str) -> str:
        service = None
        if self.model is not None:
            service = next((s for s in self.model.services if s.id == service_id), None)
            if service is None:
                raise CoapConfigError(f"{service_id}: no such service in {self.model.ref}")
        ext = service.extensions.get("x-coap") if service is not None else None
        resource = ext.get("resource") if isinstance(ext, Mapping) else None
        if resource is None:
            return "/" + service_id.replace(":", "/")
        if not isinstance(resource, str) or not resource.startswith("/"):
            raise CoapConfigError(f"{service_id}: x-coap resource {resource!r} must start with /")
        return resource


_FORMATS = {number: fmt for fmt, number in CONTENT_FORMAT_NUMBERS.items()}
