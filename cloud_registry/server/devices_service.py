"""DeviceService: register, read, search, update (optimistic concurrency), delete, move.

* The model reference of a device must name a published model: an exact ``name@version``, or a
  partial one (``name@1``, ``name@1.2``, ``name``) resolved to the newest published match and
  stored exact. An unpublished model is FAILED_PRECONDITION (publish it first).
* ``UpdateDevice`` needs ``expected_revision`` (the revision the caller read) and replaces the
  fields named in ``update_mask`` (``model``, ``edge_id``, ``site``, ``building``, ``labels``,
  ``location``; a ``device.`` prefix is accepted), or all of them when the mask is empty. A
  read-only or unknown field in the mask is INVALID_ARGUMENT; a stale revision
  FAILED_PRECONDITION (``STALE_REVISION``, with the current revision).
* A caller restricted to some sites (``Principal.sites``) sees only their devices; the others
  are NOT_FOUND to it.
"""

from __future__ import annotations

from typing import Any

from grpc import aio

from cloud_registry.api.v1 import common_pb2, devices_pb2, devices_pb2_grpc
from cloud_registry.server import convert
from cloud_registry.server.authn import site_denied
from cloud_registry.server.context import ServiceContext
from cloud_registry.server.errors import (
    FailedPrecondition,
    InvalidArgument,
    Violation,
    handle_errors,
)
from cloud_registry.server.models_service import ModelCatalog
from cloud_registry.server.principal import current_principal
from cloud_registry.storage.base import DeviceFilter, DeviceRecord, NotFound

__all__ = ["MUTABLE_FIELDS", "DeviceServicer", "register"]

MUTABLE_FIELDS = ("model", "edge_id", "site", "building", "labels", "location")
READ_ONLY_FIELDS = frozenset(
    {"id", "online", "revision", "created_ms", "updated_ms", "last_seen_ms"}
)
_ONLINE = {
    devices_pb2.ONLINE_FILTER_ANY: None,
    devices_pb2.ONLINE_FILTER_ONLINE: True,
    devices_pb2.ONLINE_FILTER_OFFLINE: False,
}

Context = aio.ServicerContext[Any, Any]


def _visible_sites() -> tuple[str, ...] | None:
    sites = current_principal().sites
    return None if sites is None else tuple(sorted(sites))


class DeviceServicer(devices_pb2_grpc.DeviceServiceServicer):
    def __init__(self, ctx: ServiceContext, catalog: ModelCatalog) -> None:
        self.ctx = ctx
        self.catalog = catalog

    def _resolve_model(self, text: str, field: str) -> str:
        try:
            return self.catalog.resolve_exact(text)
        except NotFound as exc:
            raise FailedPrecondition(
                f"{field}: {exc}; publish the model before registering devices of it",
                violations=[Violation(field, str(exc), "MODEL_NOT_PUBLISHED")],
            ) from None

    async def _device(self, device_id: str, sites: tuple[str, ...] | None) -> DeviceRecord:
        device = await self.ctx.run(self.ctx.storage.get_device, device_id)
        if sites is not None and device.site not in sites:
            raise await self.ctx.run(site_denied, self.ctx, f"device {device_id}", device.site)
        return device

    # ----------------------------------------------------------------- create and read

    def _register(self, record: DeviceRecord) -> DeviceRecord:
        exact = self._resolve_model(record.model, "device.model")
        return self.ctx.storage.create_device(
            DeviceRecord(
                id=record.id,
                model=exact,
                edge_id=record.edge_id,
                site=record.site,
                building=record.building,
                labels=record.labels,
                location=record.location,
            ),
            self.ctx.now_ms(),
        )

    @handle_errors
    async def RegisterDevice(
        self, request: devices_pb2.RegisterDeviceRequest, context: Context
    ) -> common_pb2.Device:
        if not request.HasField("device"):
            raise InvalidArgument.field("device", "required")
        record = convert.device_from_pb(request.device)
        sites = _visible_sites()
        if sites is not None and record.site not in sites:
            raise FailedPrecondition(f"device.site: {record.site!r} is not one of your sites")
        created = await self.ctx.run(self._register, record)
        return convert.device_to_pb(created)

    @handle_errors
    async def GetDevice(
        self, request: devices_pb2.GetDeviceRequest, context: Context
    ) -> common_pb2.Device:
        device_id = convert.check_id(request.id, "id")
        return convert.device_to_pb(await self._device(device_id, _visible_sites()))

    @handle_errors
    async def ListDevices(
        self, request: devices_pb2.ListDevicesRequest, context: Context
    ) -> devices_pb2.ListDevicesResponse:
        violations: list[Violation] = []

        def attempt(check: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return check(*args, **kwargs)
            except InvalidArgument as exc:
                violations.extend(exc.violations)
                return None

        if request.model:
            attempt(convert.check_model_ref, request.model, "model", allow_partial=False)
        attempt(convert.check_name, request.site, "site", required=False)
        attempt(convert.check_id, request.edge_id, "edge_id", required=False)
        attempt(convert.check_name, request.building, "building", required=False)
        labels = attempt(convert.parse_selector, request.label_selector)
        attempt(convert.check_enum, request.online, devices_pb2.OnlineFilter, "online")
        limit = attempt(convert.check_page_size, request.page_size)
        cursor = attempt(convert.check_page_token, request.page_token)
        if violations:
            raise InvalidArgument.fields(violations)
        flt = DeviceFilter(
            model=request.model,
            site=request.site,
            edge_id=request.edge_id,
            building=request.building,
            labels=labels,
            online=_ONLINE[request.online],
            sites=_visible_sites(),
        )
        page = await self.ctx.run(self.ctx.storage.list_devices, flt, cursor, limit)
        return devices_pb2.ListDevicesResponse(
            devices=[convert.device_to_pb(d) for d in page.items],
            next_page_token=page.next_cursor,
        )

    # ----------------------------------------------------------------- change

    def _changes(self, request: devices_pb2.UpdateDeviceRequest) -> dict[str, Any]:
        """The checked field values the update mask names (model still unresolved)."""
        device = request.device
        mask: list[str] = []
        violations: list[Violation] = []
        for index, raw in enumerate(request.update_mask or MUTABLE_FIELDS):
            path = raw.removeprefix("device.")
            if path in READ_ONLY_FIELDS:
                violations.append(Violation(f"update_mask[{index}]", f"{path} is read-only"))
            elif path not in MUTABLE_FIELDS:
                violations.append(
                    Violation(
                        f"update_mask[{index}]",
                        f"unknown field {raw[:64]!r}; mutable fields: " + ", ".join(MUTABLE_FIELDS),
                    )
                )
            elif path not in mask:
                mask.append(path)
        changes: dict[str, Any] = {}

        def model() -> str:
            convert.check_model_ref(device.model, "device.model")
            return device.model

        checks: dict[str, Any] = {
            "model": model,
            "edge_id": lambda: convert.check_id(device.edge_id, "device.edge_id"),
            "site": lambda: convert.check_name(device.site, "device.site"),
            "building": lambda: convert.check_name(
                device.building, "device.building", required=False
            ),
            "labels": lambda: convert.check_labels(device.labels, "device.labels"),
            "location": lambda: convert.location_from_pb(device.location, "device.location"),
        }
        for path in mask:
            try:
                changes[path] = checks[path]()
            except InvalidArgument as exc:
                violations.extend(exc.violations)
        if violations:
            raise InvalidArgument.fields(violations)
        return changes

    def _update(
        self, device_id: str, changes: dict[str, Any], revision: int, sites: tuple[str, ...] | None
    ) -> DeviceRecord:
        storage = self.ctx.storage
        if sites is not None:
            current = storage.get_device(device_id)
            if current.site not in sites:
                raise site_denied(self.ctx, f"device {device_id}", current.site)
            if "site" in changes and changes["site"] not in sites:
                raise FailedPrecondition(
                    f"device.site: {changes['site']!r} is not one of your sites"
                )
        if "model" in changes:
            changes["model"] = self._resolve_model(changes["model"], "device.model")
        return storage.update_device(device_id, changes, revision, self.ctx.now_ms())

    @handle_errors
    async def UpdateDevice(
        self, request: devices_pb2.UpdateDeviceRequest, context: Context
    ) -> common_pb2.Device:
        if not request.HasField("device"):
            raise InvalidArgument.field("device", "required")
        device_id = convert.check_id(request.device.id, "device.id")
        revision = convert.check_revision(request.expected_revision, required=True)
        changes = self._changes(request)
        updated = await self.ctx.run(self._update, device_id, changes, revision, _visible_sites())
        return convert.device_to_pb(updated)

    def _delete(self, device_id: str, revision: int, sites: tuple[str, ...] | None) -> None:
        if sites is not None:
            site = self.ctx.storage.get_device(device_id).site
            if site not in sites:
                raise site_denied(self.ctx, f"device {device_id}", site)
        self.ctx.storage.delete_device(device_id, revision, self.ctx.now_ms())

    @handle_errors
    async def DeleteDevice(
        self, request: devices_pb2.DeleteDeviceRequest, context: Context
    ) -> devices_pb2.DeleteDeviceResponse:
        device_id = convert.check_id(request.id, "id")
        revision = convert.check_revision(request.expected_revision)
        await self.ctx.run(self._delete, device_id, revision, _visible_sites())
        return devices_pb2.DeleteDeviceResponse()

    @handle_errors
    async def MoveDevice(
        self, request: devices_pb2.MoveDeviceRequest, context: Context
    ) -> common_pb2.Device:
        violations: list[Violation] = []
        for check in (
            lambda: convert.check_id(request.id, "id"),
            lambda: convert.check_id(request.edge_id, "edge_id"),
            lambda: convert.check_revision(request.expected_revision),
        ):
            try:
                check()
            except InvalidArgument as exc:
                violations.extend(exc.violations)
        if violations:
            raise InvalidArgument.fields(violations)
        moved = await self.ctx.run(
            self._update,
            request.id,
            {"edge_id": request.edge_id},
            request.expected_revision,
            _visible_sites(),
        )
        return convert.device_to_pb(moved)


def register(server: aio.Server, ctx: ServiceContext, catalog: ModelCatalog | None = None) -> None:
    """Add the DeviceService to ``server``."""
    devices_pb2_grpc.add_DeviceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        DeviceServicer(ctx, catalog or ModelCatalog(ctx.storage)), server
    )
