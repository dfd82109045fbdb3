"""TwinService: reported and desired state, history, events and alarms.

``SetDesired`` checks every value against the device's (flattened) model with the compiled
telemetry validator, compiled once per exact model reference. Every problem is reported at
once as INVALID_ARGUMENT with one field violation per property (``desired.<property>``):

* a property the model does not declare;
* a read-only property (access ``r``): only read-write properties may be desired. This is
  INVALID_ARGUMENT rather than FAILED_PRECONDITION because the request itself is wrong for the
  model it names and the caller fixes it by changing the request, in the same violation list as
  wrong types and out-of-range values;
* a value of the wrong type, out of range, off its step, not an enum member, too long...

A null value clears that desired property (no value check). ``expected_revision`` (the twin's
revision, 0: unconditional) makes the write conditional: a stale one is FAILED_PRECONDITION.

``GetHistory`` returns raw points (``limit``: default 1000, at most 10000) or, with
``bucket_ms``, min/max/avg per bucket (at most :data:`MAX_BUCKETS` buckets in the range).
``AckAlarm`` records who acknowledged (the calling principal) and is idempotent.
"""

from __future__ import annotations

from typing import Any

from grpc import aio

from cloud_registry.api.v1 import common_pb2, twins_pb2, twins_pb2_grpc
from cloud_registry.server import convert
from cloud_registry.server.authn import site_denied
from cloud_registry.server.context import ServiceContext
from cloud_registry.server.errors import InvalidArgument, Violation, handle_errors
from cloud_registry.server.models_service import ModelCatalog
from cloud_registry.server.principal import current_principal
from cloud_registry.storage.base import EventFilter, JsonValue, TwinRecord
from thing_models.model import Access

__all__ = ["MAX_BUCKETS", "MAX_DESIRED", "TwinServicer", "register"]

#: Properties one SetDesired may carry.
MAX_DESIRED = 1000
#: Buckets one GetHistory may span.
MAX_BUCKETS = 100_000

Context = aio.ServicerContext[Any, Any]


def _sites() -> tuple[str, ...] | None:
    sites = current_principal().sites
    return None if sites is None else tuple(sorted(sites))


class _Checks:
    """Collects violations of independent checks, to report them all at once."""

    def __init__(self) -> None:
        self.violations: list[Violation] = []

    def __call__(self, check: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return check(*args, **kwargs)
        except InvalidArgument as exc:
            self.violations.extend(exc.violations)
            return None

    def add(self, field: str, description: str) -> None:
        self.violations.append(Violation(field, description))

    def raise_any(self) -> None:
        if self.violations:
            raise InvalidArgument.fields(self.violations)


class TwinServicer(twins_pb2_grpc.TwinServiceServicer):
    def __init__(self, ctx: ServiceContext, catalog: ModelCatalog) -> None:
        self.ctx = ctx
        self.catalog = catalog

    def _check_visible(self, device_id: str, sites: tuple[str, ...] | None) -> str:
        """The device's exact model reference; NotFound when it does not exist,
        PERMISSION_DENIED (audited) when it belongs to a site the caller may not see."""
        device = self.ctx.storage.get_device(device_id)
        if sites is not None and device.site not in sites:
            raise site_denied(self.ctx, f"device {device_id}", device.site)
        return device.model

    # ----------------------------------------------------------------- state

    def _get_twin(self, device_id: str, sites: tuple[str, ...] | None) -> TwinRecord:
        if sites is not None:
            self._check_visible(device_id, sites)
        return self.ctx.storage.get_twin(device_id)

    @handle_errors
    async def GetTwin(self, request: twins_pb2.GetTwinRequest, context: Context) -> twins_pb2.Twin:
        device_id = convert.check_id(request.device_id, "device_id")
        twin = await self.ctx.run(self._get_twin, device_id, _sites())
        return convert.twin_to_pb(twin)

    def _set_desired(
        self,
        device_id: str,
        values: dict[str, JsonValue],
        revision: int,
        sites: tuple[str, ...] | None,
    ) -> TwinRecord:
        model_ref = self._check_visible(device_id, sites)
        validator = self.catalog.validator(model_ref)
        model = validator.model
        checks = _Checks()
        for name, value in values.items():
            field = f"desired.{name}"
            prop = model.property(name)
            if prop is None:
                checks.add(field, f"model {model_ref} has no property {name[:64]!r}")
            elif prop.access is not Access.READ_WRITE:
                checks.add(
                    field,
                    f"property {name!r} is read-only in {model_ref}: only read-write (rw) "
                    "properties may be desired",
                )
            elif value is not None:
                issue = validator.check_value(name, value)
                if issue is not None:
                    checks.add(f"desired.{issue.path or name}", f"{issue.message} [{issue.code}]")
        checks.raise_any()
        return self.ctx.storage.set_desired(device_id, values, revision, self.ctx.now_ms())

    @handle_errors
    async def SetDesired(
        self, request: twins_pb2.SetDesiredRequest, context: Context
    ) -> twins_pb2.Twin:
        checks = _Checks()
        device_id = checks(convert.check_id, request.device_id, "device_id")
        checks(convert.check_revision, request.expected_revision)
        if not request.desired:
            checks.add("desired", "required: at least one property")
        elif len(request.desired) > MAX_DESIRED:
            checks.add("desired", f"more than {MAX_DESIRED} properties ({len(request.desired)})")
        checks.raise_any()
        values = convert.values_from_pb(request.desired, "desired")
        twin = await self.ctx.run(
            self._set_desired, device_id, values, request.expected_revision, _sites()
        )
        return convert.twin_to_pb(twin)

    # ----------------------------------------------------------------- history

    def _history(
        self, request: twins_pb2.GetHistoryRequest, to_ms: int, limit: int, sites: Any
    ) -> twins_pb2.GetHistoryResponse:
        storage = self.ctx.storage
        self._check_visible(request.device_id, sites)
        if request.bucket_ms:
            buckets = storage.history_buckets(
                request.device_id, request.property, request.from_ms, to_ms, request.bucket_ms
            )
            return twins_pb2.GetHistoryResponse(
                buckets=[convert.history_bucket_to_pb(b) for b in buckets]
            )
        points, truncated = storage.history(
            request.device_id, request.property, request.from_ms, to_ms, limit
        )
        return twins_pb2.GetHistoryResponse(
            points=[convert.history_point_to_pb(p) for p in points], truncated=truncated
        )

    @handle_errors
    async def GetHistory(
        self, request: twins_pb2.GetHistoryRequest, context: Context
    ) -> twins_pb2.GetHistoryResponse:
        checks = _Checks()
        checks(convert.check_id, request.device_id, "device_id")
        checks(convert.check_id, request.property, "property")
        if request.from_ms < 0:
            checks.add("from_ms", f"must not be negative (got {request.from_ms})")
        if request.to_ms < 0:
            checks.add("to_ms", f"must not be negative (got {request.to_ms})")
        if request.bucket_ms < 0:
            checks.add("bucket_ms", f"must not be negative (got {request.bucket_ms})")
        limit = checks(convert.check_page_size, request.limit, "limit", default=1000, maximum=10000)
        checks.raise_any()
        to_ms = request.to_ms or self.ctx.now_ms()
        if to_ms <= request.from_ms:
            checks.add("to_ms", f"must be after from_ms ({to_ms} <= {request.from_ms})")
        elif request.bucket_ms and (to_ms - request.from_ms) // request.bucket_ms > MAX_BUCKETS:
            checks.add(
                "bucket_ms",
                f"{request.bucket_ms} ms buckets over {to_ms - request.from_ms} ms are more than "
                f"{MAX_BUCKETS}; use larger buckets or a shorter range",
            )
        checks.raise_any()
        return await self.ctx.run(self._history, request, to_ms, limit, _sites())

    # ----------------------------------------------------------------- events

    @handle_errors
    async def ListEvents(
        self, request: twins_pb2.ListEventsRequest, context: Context
    ) -> twins_pb2.ListEventsResponse:
        checks = _Checks()
        checks(convert.check_id, request.device_id, "device_id", required=False)
        checks(convert.check_name, request.site, "site", required=False)
        for index, level in enumerate(request.levels):
            if level not in convert.EVENT_LEVELS:
                checks.add(
                    f"levels[{index}]",
                    f"unknown level {level[:32]!r}; expected info, alert or error",
                )
        if request.from_ms < 0:
            checks.add("from_ms", f"must not be negative (got {request.from_ms})")
        if request.to_ms < 0:
            checks.add("to_ms", f"must not be negative (got {request.to_ms})")
        elif request.to_ms and request.to_ms <= request.from_ms:
            checks.add("to_ms", f"must be after from_ms ({request.to_ms} <= {request.from_ms})")
        limit = checks(convert.check_page_size, request.page_size)
        cursor = checks(convert.check_page_token, request.page_token)
        checks.raise_any()
        flt = EventFilter(
            device_id=request.device_id,
            site=request.site,
            levels=tuple(sorted(set(request.levels))),
            from_ms=request.from_ms,
            to_ms=request.to_ms,
            unacknowledged_only=request.unacknowledged_only,
            sites=_sites(),
        )
        page = await self.ctx.run(self.ctx.storage.list_events, flt, cursor, limit)
        return twins_pb2.ListEventsResponse(
            events=[convert.event_to_pb(e) for e in page.items],
            next_page_token=page.next_cursor,
        )

    @handle_errors
    async def AckAlarm(
        self, request: twins_pb2.AckAlarmRequest, context: Context
    ) -> common_pb2.EventRecord:
        checks = _Checks()
        checks(convert.check_id, request.event_id, "event_id")
        checks(convert.check_text, request.comment, "comment")
        checks.raise_any()
        event = await self.ctx.run(
            self.ctx.storage.acknowledge_event,
            request.event_id,
            str(current_principal()),
            request.comment,
            self.ctx.now_ms(),
        )
        return convert.event_to_pb(event)


def register(server: aio.Server, ctx: ServiceContext, catalog: ModelCatalog | None = None) -> None:
    """Add the TwinService to ``server``."""
    twins_pb2_grpc.add_TwinServiceServicer_to_server(  # type: ignore[no-untyped-call]
        TwinServicer(ctx, catalog or ModelCatalog(ctx.storage)), server
    )
