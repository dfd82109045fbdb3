"""The asyncio BACnet/IP driver: the pure mapping over a shared bacpypes3 application.

::

    stack = BacnetStack("0.0.0.0:47809")                 # one per local address, shared
    driver = BacnetDriver("10.0.0.7:47808", model.bindings.bacnet, model, stack=stack)
    await driver.connect()                               # Who-Is the device, subscribe COV
    readings = await driver.read_points(driver.pollable) # {property id: Reading}
    await driver.write("sat_setpoint", 19.5)             # at the point's priority (or 16)
    await driver.write("sat_setpoint", None)             # relinquish that priority

Contract:

- **Reads** use ReadPropertyMultiple in batches of ``rpm_batch`` points, each present-value
  read with its object's status-flags (and reliability when the fault flag is set) to give the
  reading its quality. A device that rejects ReadPropertyMultiple (Reject, Error
  ``services:*``, or an Abort) is remembered and read with ReadProperty from then on,
  ``max_in_flight`` requests at a time. An answer too large for one APDU without
  segmentation (Abort segmentation-not-supported) halves the batch size, down to one point.
  :meth:`read_points` never raises for a failed request.
- **COV**: with the binding's ``use_cov``, each object with a bound present-value or
  status-flags is subscribed (confirmed notifications, ``cov_lifetime_s``) and renewed at
  three quarters of the lifetime; notifications go to the sink as :class:`Update`. A refused or
  lapsed subscription is retried every lifetime; the supervisor's polling covers the gap.
- **Writes** raise: :class:`BacnetConfigError` for a property without a point or read-only in
  the model, :class:`BacnetMappingError` for a value that does not fit, and the transport
  errors of :mod:`.errors`.
- **Services** (``bindings.bacnet.services``) run as WriteProperty requests in binding order:
  a fixed value, an input's value typed like a property write, or Null to relinquish a
  priority; :meth:`invoke` returns ``{}``.
- Errors are translated once, in :mod:`.stack`; diagnostics count every request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from bacpypes3.basetypes import ErrorType
from bacpypes3.primitivedata import Atomic, ObjectIdentifier

from protocol_adapters.bacnet.errors import (
    BacnetAbortResponse,
    BacnetConfigError,
    BacnetError,
    BacnetErrorResponse,
    BacnetRejectResponse,
    BacnetSegmentationError,
    BacnetTimeoutError,
)
from protocol_adapters.bacnet.mapping import (
    ObjectId,
    ServiceWrite,
    check_priority,
    compile_service_writes,
    parse_property_ref,
    point_object_id,
    quality_of,
    to_bacnet_value,
    to_model_value,
)
from protocol_adapters.bacnet.stack import BacnetStack, parse_address
from protocol_adapters.base import DiagnosticState, Reading, Update, UpdateSink
from thing_models.messages import Quality, now_ms
from thing_models.model import Access, BacnetBinding, DataSchema, ThingModel

__all__ = ["BacnetDriver", "Point", "compile_points"]

_T = TypeVar("_T")
_PV = "present-value"
_FLAGS = "status-flags"
_RELIABILITY = "reliability"
_Key = tuple[str, int, str, int | None]  # object type, instance, property, array index


@dataclass(frozen=True, slots=True)
class Point:
    """A compiled binding point."""

    name: str
    object_id: ObjectId
    property_id: str
    array_index: int | None
    schema: DataSchema
    priority: int | None
    writable: bool

    @property
    def key(self) -> _Key:
        return (self.object_id.type, self.object_id.instance, self.property_id, self.array_index)

    @property
    def where(self) -> str:
        index = "" if self.array_index is None else f"[{self.array_index}]"
        return f"{self.name} ({self.object_id} {self.property_id}{index})"


def compile_points(binding: BacnetBinding, model: ThingModel) -> tuple[Point, ...]:
    """The binding's points, checked against the model; raises :class:`BacnetConfigError`."""
    points = []
    for bp in binding.points:
        prop = model.property(bp.property)
        if prop is None:
            raise BacnetConfigError(f"{bp.property}: the model has no such property")
        prop_id, index = parse_property_ref(bp.property_id, f"{bp.property}: property_id")
        priority = bp.write_priority
        if priority is not None:
            check_priority(priority, f"{bp.property}: write_priority")
        points.append(
            Point(
                name=bp.property,
                object_id=point_object_id(bp),
                property_id=prop_id,
                array_index=bp.array_index if bp.array_index is not None else index,
                schema=prop.schema,
                priority=priority,
                writable=prop.access is Access.READ_WRITE,
            )
        )
    return tuple(points)


def _object_key(oid: Any) -> tuple[str, int]:
    return (str(oid[0]), int(oid[1]))


class BacnetDriver:
    """One BACnet/IP device reached through a shared :class:`BacnetStack`."""

    def __init__(
        self,
        address: str,
        binding: BacnetBinding,
        model: ThingModel,
        *,
        stack: BacnetStack,
        device_instance: int | None = None,
        rpm_batch: int = 20,
        use_rpm: bool = True,
        max_in_flight: int = 4,
        cov_lifetime_s: int = 300,
        offline_after: int = 3,
    ) -> None:
        self.address = address
        self._address = parse_address(address, "device address")
        self.binding = binding
        self.stack = stack
        self.device_instance = (
            device_instance if device_instance is not None else binding.device_instance
        )
        if rpm_batch < 1 or max_in_flight < 1 or cov_lifetime_s < 4:
            raise BacnetConfigError(
                "rpm_batch and max_in_flight must be >= 1 and cov_lifetime_s >= 4"
            )
        self.rpm_batch = rpm_batch
        self.use_rpm = use_rpm
        self.max_in_flight = max_in_flight
        self.cov_lifetime_s = cov_lifetime_s
        self.offline_after = max(1, offline_after)
        self.points = compile_points(binding, model)
        #: the binding's service writes by service id, in the order they run
        self.services: dict[str, tuple[ServiceWrite, ...]] = compile_service_writes(binding, model)
        self._by_name = {p.name: p for p in self.points}
        self._pollable = frozenset(self._by_name)
        self.diagnostics = DiagnosticState()
        self._app: Any = None
        self._sink: UpdateSink | None = None
        self._cov_tasks: dict[ObjectId, asyncio.Task[None]] = {}
        self.cov_active: set[ObjectId] = set()
        #: how often subscriptions were renewed (for tests and status)
        self.cov_renewals = 0

    # ------------------------------------------------------------------ contract

    @property
    def endpoint(self) -> str:
        if self.device_instance is None:
            return self.address
        return f"{self.address} device {self.device_instance}"

    @property
    def connected(self) -> bool:
        return self._app is not None and self.diagnostics.state != "offline"

    @property
    def pollable(self) -> frozenset[str]:
        return self._pollable

    def set_sink(self, sink: UpdateSink | None) -> None:
        self._sink = sink

    async def connect(self) -> None:
        """Find the device (Who-Is directed to its address) and start the COV subscriptions;
        raises :class:`BacnetTimeoutError` when it does not answer."""
        if self._app is None:
            self._app = await self.stack.acquire()
        try:
            await self._counted(self._who_is)
        except BacnetError:
            raise
        if self.binding.use_cov:
            self._start_cov()

    async def _who_is(self) -> None:
        low = high = self.device_instance
        future = self._app.who_is(low, high, self._address, timeout=self.stack.deadline_s)
        i_ams = await self.stack.call(future, f"Who-Is {self.address}")
        if not i_ams:
            raise BacnetTimeoutError(f"Who-Is {self.endpoint}: no I-Am")
        if self.device_instance is None:
            self.device_instance = int(i_ams[0].iAmDeviceIdentifier[1])

    async def close(self) -> None:
        """Stop the COV subscriptions (cancelling them at the device) and release the stack."""
        tasks = set(self._cov_tasks.values())
        self._cov_tasks.clear()
        for task in tasks:
            task.cancel()
        while tasks:
            # Python 3.11's wait_for can swallow a cancellation that races with its result:
            # cancel again until every task has ended.
            _, tasks = await asyncio.wait(tasks, timeout=self.stack.deadline_s)
            for task in tasks:
                task.cancel()
        self.cov_active.clear()
        if self._app is not None:
            self._app = None
            await self.stack.release()
        self.diagnostics.state = "offline"

    async def __aenter__(self) -> BacnetDriver:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def invoke(self, service_id: str, args: Mapping[str, object]) -> dict[str, object]:
        """Carry out a service the binding maps to WriteProperty requests, one after the
        other in binding order (every value is checked before the first is sent); a failed
        write stops the service there.

        Returns ``{}``: WriteProperty answers nothing to map to outputs. Raises
        :class:`BacnetConfigError` for a service the binding does not map,
        :class:`BacnetMappingError` for a missing or unfit input, and the transport errors.
        """
        writes = self.services.get(service_id)
        if writes is None:
            raise BacnetConfigError(
                f"{service_id}: no BACnet service write for it in the binding ({self.endpoint})"
            )
        values = [write.bacnet_value(args) for write in writes]
        for write, value in zip(writes, values, strict=True):
            priority = "" if write.priority is None else f" priority {write.priority}"
            await self._write_property(
                write.object_id,
                write.property_id,
                write.array_index,
                value,
                write.priority,
                f"WriteProperty {self.endpoint} {write.where}{priority}",
            )
        return {}

    # ------------------------------------------------------------------ requests

    async def _counted(self, operation: Callable[[], Awaitable[_T]]) -> _T:
        try:
            result = await operation()
        except BacnetError as exc:
            self.diagnostics.failed(exc, self.offline_after)
            raise
        self.diagnostics.ok()
        return result

    def _require_app(self) -> Any:
        if self._app is None:
            raise BacnetConfigError(f"{self.endpoint}: not connected")
        return self._app

    async def _read_one(self, oid: ObjectId, prop: str, index: int | None) -> Any:
        app = self._require_app()
        what = f"ReadProperty {self.endpoint} {oid} {prop}"
        return await self._counted(
            lambda: self.stack.call(
                app.read_property(self._address, ObjectIdentifier(str(oid)), prop, index), what
            )
        )

    async def _read_multiple(self, keys: Sequence[_Key]) -> dict[_Key, Any]:
        app = self._require_app()
        by_object: dict[tuple[str, int], list[str]] = {}
        for kind, instance, prop, index in keys:
            ref = prop if index is None else f"{prop}[{index}]"
            by_object.setdefault((kind, instance), []).append(ref)
        params: list[Any] = []
        for (kind, instance), refs in by_object.items():
            params += [ObjectIdentifier(f"{kind},{instance}"), refs]
        what = f"ReadPropertyMultiple {self.endpoint} ({len(keys)} properties)"
        results = await self._counted(
            lambda: self.stack.call(app.read_property_multiple(self._address, params), what)
        )
        if not isinstance(results, list):
            raise BacnetAbortResponse("abort:invalid-response", f"{what}: no valid answer")
        values: dict[_Key, Any] = {}
        for oid, pid, index, value in results:
            kind, instance = _object_key(oid)
            values[(kind, instance, str(pid), None if index is None else int(index))] = value
        return values

    # ------------------------------------------------------------------ reads

    def _keys_for(self, points: Sequence[Point]) -> list[_Key]:
        keys: dict[_Key, None] = {}
        for point in points:
            keys[point.key] = None
            if point.property_id == _PV:
                keys[(point.object_id.type, point.object_id.instance, _FLAGS, None)] = None
        return list(keys)

    async def read_points(self, properties: Collection[str]) -> dict[str, Reading]:
        """Readings of ``properties`` (unknown names come back bad). Never raises."""
        wanted = [self._by_name[name] for name in properties if name in self._by_name]
        result = {
            name: Reading(None, Quality.BAD, f"{name}: no BACnet point")
            for name in properties
            if name not in self._by_name
        }
        size = self.rpm_batch  # may shrink while reading: the slices are fixed here
        for batch in [wanted[start : start + size] for start in range(0, len(wanted), size)]:
            result.update(await self._read_batch(batch))
        return result

    async def _read_batch(self, batch: Sequence[Point]) -> dict[str, Reading]:
        keys = self._keys_for(batch)
        values: dict[_Key, Any] | None = None
        if self.use_rpm and self._app is not None:
            try:
                values = await self._read_multiple(keys)
            except BacnetSegmentationError:
                if len(batch) > 1:  # the answer does not fit: smaller batches from now on
                    self.rpm_batch = max(1, len(batch) // 2)
                    half = self.rpm_batch
                    first = await self._read_batch(batch[:half])
                    return first | await self._read_batch(batch[half:])
                self.use_rpm = False
            except (BacnetRejectResponse, BacnetAbortResponse) as exc:
                self.use_rpm = False  # remembered: this device gets ReadProperty from now on
                self.diagnostics.last_error = (
                    f"ReadPropertyMultiple refused, using ReadProperty: {exc}"
                )
            except BacnetErrorResponse as exc:
                if not str(exc.code).startswith("services:"):
                    return {p.name: _bad(exc) for p in batch}
                self.use_rpm = False
            except BacnetError as exc:
                return {p.name: _bad(exc) for p in batch}
        if values is None:
            values = await self._read_each(keys)
        self._count_property_errors(values)
        await self._add_reliability(values)
        return {p.name: self._reading(p, values) for p in batch}

    def _count_property_errors(self, values: Mapping[_Key, Any]) -> None:
        """Per-property errors inside a ReadPropertyMultiple answer: the request succeeded,
        but the device still answered these codes."""
        codes = self.diagnostics.exception_codes
        for (kind, instance, prop, _), value in values.items():
            if isinstance(value, ErrorType):
                code = f"{value.errorClass}:{value.errorCode}"
                codes[code] = codes.get(code, 0) + 1
                self.diagnostics.last_error = f"{kind},{instance} {prop}: error {code}"

    async def _read_each(self, keys: Sequence[_Key]) -> dict[_Key, Any]:
        limit = asyncio.Semaphore(self.max_in_flight)

        async def one(key: _Key) -> tuple[_Key, Any]:
            kind, instance, prop, index = key
            async with limit:
                try:
                    return key, await self._read_one(ObjectId(kind, instance), prop, index)
                except BacnetError as exc:
                    return key, exc

        return dict(await asyncio.gather(*(one(key) for key in keys)))

    async def _add_reliability(self, values: dict[_Key, Any]) -> None:
        for (kind, instance, prop, _), value in list(values.items()):
            if prop == _FLAGS and _is_bits(value) and len(value) > 1 and value[1]:
                key = (kind, instance, _RELIABILITY, None)
                try:
                    values[key] = await self._read_one(ObjectId(kind, instance), _RELIABILITY, None)
                except BacnetError as exc:
                    values[key] = exc

    def _reading(self, point: Point, values: Mapping[_Key, Any]) -> Reading:
        raw = values.get(point.key)
        if raw is None:
            return Reading(None, Quality.BAD, f"{point.where}: missing from the answer")
        if isinstance(raw, BacnetError):
            return _bad(raw)
        if isinstance(raw, ErrorType):
            code = f"{raw.errorClass}:{raw.errorCode}"
            return Reading(None, Quality.BAD, f"{point.where}: error {code}")
        try:
            value = to_model_value(raw, point.schema, point.where)
        except BacnetError as exc:
            return _bad(exc)
        if point.property_id != _PV:
            return Reading(value, Quality.GOOD)
        oid = point.object_id
        flags = values.get((oid.type, oid.instance, _FLAGS, None))
        reliability = values.get((oid.type, oid.instance, _RELIABILITY, None))
        rel_text = str(reliability) if isinstance(reliability, str | int) else None
        bits = list(flags) if isinstance(flags, list) and _is_bits(flags) else None
        quality, reason = quality_of(bits, rel_text)
        return Reading(value, quality, f"{point.where}: {reason}" if reason else "")

    # ------------------------------------------------------------------ writes

    def point(self, property_id: str) -> Point:
        try:
            return self._by_name[property_id]
        except KeyError:
            raise BacnetConfigError(f"{property_id}: no BACnet point for it") from None

    async def write(
        self,
        property_id: str,
        value: object,
        *,
        read_back: bool = False,
        priority: int | None = None,
    ) -> Reading | None:
        """WriteProperty ``value`` (None: relinquish) at ``priority`` (default: the point's,
        else 16); with ``read_back`` read the point again and return it."""
        point = self.point(property_id)
        if not point.writable:
            raise BacnetConfigError(f"{point.where}: read-only in the model")
        chosen = check_priority(priority or point.priority or 16, f"{point.where}: priority")
        bacnet_value = to_bacnet_value(value, point.schema, point.object_id.type, point.where)
        what = f"WriteProperty {self.endpoint} {point.where} priority {chosen}"
        await self._write_property(
            point.object_id, point.property_id, point.array_index, bacnet_value, chosen, what
        )
        if not read_back:
            return None
        return (await self.read_points([property_id]))[property_id]

    async def _write_property(
        self,
        oid: ObjectId,
        prop: str,
        index: int | None,
        value: Atomic,
        priority: int | None,
        what: str,
    ) -> None:
        app = self._require_app()
        await self._counted(
            lambda: self.stack.call(
                app.write_property(
                    self._address, ObjectIdentifier(str(oid)), prop, value, index, priority
                ),
                what,
            )
        )

    async def relinquish(self, property_id: str, priority: int | None = None) -> None:
        """Write Null at ``priority``: the object falls back to a lower priority."""
        await self.write(property_id, None, priority=priority)

    # ------------------------------------------------------------------ COV

    def _start_cov(self) -> None:
        objects: dict[ObjectId, list[Point]] = {}
        for point in self.points:
            if point.property_id in (_PV, _FLAGS) and point.array_index is None:
                objects.setdefault(point.object_id, []).append(point)
        for oid, points in objects.items():
            task = self._cov_tasks.get(oid)
            if task is None or task.done():
                self._cov_tasks[oid] = asyncio.create_task(
                    self._cov_loop(oid, tuple(points)), name=f"bacnet-cov {self.address} {oid}"
                )

    async def _cov_loop(self, oid: ObjectId, points: tuple[Point, ...]) -> None:
        """Subscribe, renew at 3/4 of the lifetime, resubscribe after a failure."""
        while True:
            app = self._app
            if app is None:
                return
            what = f"SubscribeCOV {self.endpoint} {oid}"
            scm = app.change_of_value(
                self._address, ObjectIdentifier(str(oid)), None, True, self.cov_lifetime_s
            )
            try:
                await self._subscribe(scm, what, renew=False)
            except BacnetError:
                await asyncio.sleep(self.cov_lifetime_s)
                continue
            self.cov_active.add(oid)
            reader = asyncio.create_task(self._cov_reader(scm, points))
            try:
                while True:
                    await asyncio.sleep(self.cov_lifetime_s * 0.75)
                    await self._subscribe(scm, what, renew=True)
                    self.cov_renewals += 1
            except BacnetError:
                pass  # lapsed: resubscribe below; polling covers the gap
            finally:
                self.cov_active.discard(oid)
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
                await _leave(scm, self.stack.timeout_s)

    async def _subscribe(self, scm: Any, what: str, *, renew: bool) -> None:
        """Subscribe (enter the context) or renew; bacpypes3's own renewal is stopped."""
        request = scm.refresh_subscription() if renew else scm.__aenter__()
        await self._counted(lambda: self.stack.call(request, what))
        _stop_builtin_refresh(scm)

    async def _cov_reader(self, scm: Any, points: tuple[Point, ...]) -> None:
        oid = points[0].object_id
        while True:
            prop, value = await scm.get_value()
            values: dict[_Key, Any] = {(oid.type, oid.instance, str(prop), None): value}
            while not scm.queue.empty():
                prop, value = await scm.get_value()
                values[(oid.type, oid.instance, str(prop), None)] = value
            readings = {
                p.name: self._reading(p, values)
                for p in points
                if (oid.type, oid.instance, p.property_id, None) in values
            }
            if readings and self._sink is not None:
                self._sink(Update(now_ms(), readings))


def _stop_builtin_refresh(scm: Any) -> None:
    """bacpypes3 renews 2 s before the end and loses any error; we renew ourselves."""
    handle = getattr(scm, "refresh_subscription_handle", None)
    if handle is not None:
        handle.cancel()


async def _leave(scm: Any, timeout_s: float) -> None:
    """Cancel the subscription (best effort: the device may be gone)."""
    try:
        await asyncio.wait_for(scm.__aexit__(None, None, None), timeout_s)
    except asyncio.CancelledError:
        raise
    except BaseException:  # bacpypes3 raises Error, Reject and Abort as BaseException
        return


def _is_bits(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(b, int) for b in value)


def _bad(exc: BaseException) -> Reading:
    return Reading(None, Quality.BAD, f"{type(exc).__name__}: {exc}")
