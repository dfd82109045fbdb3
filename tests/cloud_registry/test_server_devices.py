"""DeviceService over a real server: register, read, search with filters and paging, update
with optimistic concurrency, delete, move, and malformed requests."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from cloud_registry.api.v1 import common_pb2, devices_pb2, models_pb2
from tests.cloud_registry.server_fixtures import (
    EXAMPLES,
    METER,
    Registry,
    error_info,
    expect_error,
    field_violations,
    precondition_violations,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture
def reg(registry: Registry) -> Registry:
    """A registry with the meter model (1.0.0 and 2.0.0) published."""
    registry.publish_meter()
    text = (EXAMPLES / "versions" / "energy-meter-3p-1.1.0.yaml").read_text(encoding="utf-8")
    registry.models.PublishModel(
        models_pb2.PublishModelRequest(
            document=text.replace('version: "1.1.0"', 'version: "2.0.0"')
        ),
        timeout=30,
    )
    return registry


def list_ids(registry: Registry, **fields: Any) -> list[str]:
    response = registry.devices.ListDevices(devices_pb2.ListDevicesRequest(**fields), timeout=10)
    return [d.id for d in response.devices]


# --------------------------------------------------------------------------- register and read


def test_register_resolves_partial_model_references_to_exact(reg: Registry) -> None:
    device = reg.register("dev-1", model=f"{METER}@1", labels={"floor": "3"}, building="B")
    assert device.model == f"{METER}@1.0.0"
    assert (device.revision, device.online) == (1, False)
    assert device.created_ms > 0
    assert device.created_ms == device.updated_ms
    assert reg.register("dev-2", model=METER).model == f"{METER}@2.0.0"
    got = reg.devices.GetDevice(devices_pb2.GetDeviceRequest(id="dev-1"), timeout=10)
    assert got == device
    assert dict(got.labels) == {"floor": "3"}
    assert got.building == "B"


def test_register_with_location_and_read_only_fields_ignored(reg: Registry) -> None:
    device = reg.devices.RegisterDevice(
        devices_pb2.RegisterDeviceRequest(
            device=common_pb2.Device(
                id="cam-1",
                model=f"{METER}@1.0.0",
                edge_id="edge-1",
                site="Maple Court",
                location=common_pb2.Location(
                    has_coordinates=True, latitude=52.5, longitude=13.4, floor="2", room="2.14"
                ),
                online=True,
                revision=99,
                created_ms=5,
            )
        ),
        timeout=10,
    )
    assert (device.online, device.revision) == (False, 1)
    assert device.created_ms > 5
    assert device.location.has_coordinates
    assert device.location.latitude == 52.5
    assert (device.location.floor, device.location.room) == ("2", "2.14")


def test_duplicate_ids_already_exist(reg: Registry) -> None:
    reg.register("dev-1")
    before = reg.snapshot()
    expect_error(
        grpc.StatusCode.ALREADY_EXISTS,
        reg.devices.RegisterDevice,
        devices_pb2.RegisterDeviceRequest(
            device=common_pb2.Device(
                id="dev-1", model=f"{METER}@1.0.0", edge_id="edge-9", site="site-b"
            )
        ),
    )
    assert reg.snapshot() == before


def test_unpublished_model_is_a_failed_precondition(reg: Registry) -> None:
    for model in ("com.example/none@1.0.0", f"{METER}@3", f"{METER}@1.2.3"):
        error = expect_error(
            PRECONDITION,
            reg.devices.RegisterDevice,
            devices_pb2.RegisterDeviceRequest(
                device=common_pb2.Device(id="d", model=model, edge_id="e", site="s")
            ),
        )
        assert [k for k, _, _ in precondition_violations(error)] == ["MODEL_NOT_PUBLISHED"]
    assert reg.snapshot()[1] == ()


@pytest.mark.parametrize(
    ("device", "fields"),
    [
        (common_pb2.Device(), {"device.id", "device.model", "device.edge_id", "device.site"}),
        (
            common_pb2.Device(id="x" * 10_000, model="m", edge_id="e e", site="s"),
            {"device.id", "device.model", "device.edge_id"},
        ),
        (
            common_pb2.Device(id="a\x00b", model=f"{METER}@1.0.0", edge_id="\n", site="\x07"),
            {"device.id", "device.edge_id", "device.site"},
        ),
        (
            common_pb2.Device(
                id="d",
                model=f"{METER}@1.0.0",
                edge_id="e",
                site="s",
                labels={"bad key!": "v", "ok": "x" * 100, "k": "a,b"},
            ),
            {"device.labels.bad key!", "device.labels.ok", "device.labels.k"},
        ),
        (
            common_pb2.Device(
                id="d",
                model=f"{METER}@1.0.0",
                edge_id="e",
                site="s",
                location=common_pb2.Location(
                    has_coordinates=True, latitude=91, longitude=float("nan")
                ),
            ),
            {"device.location.latitude", "device.location.longitude"},
        ),
        (
            common_pb2.Device(
                id="d", model=f"{METER}@1.0.0", edge_id="e", site="s", building="b" * 200
            ),
            {"device.building"},
        ),
    ],
)
def test_register_reports_every_bad_field(
    reg: Registry, device: common_pb2.Device, fields: set[str]
) -> None:
    error = expect_error(
        INVALID, reg.devices.RegisterDevice, devices_pb2.RegisterDeviceRequest(device=device)
    )
    assert {f for f, _ in field_violations(error)} == fields
    assert reg.snapshot()[1] == ()
    reg.assert_serving()


def test_register_without_a_device_or_too_many_labels(reg: Registry) -> None:
    expect_error(INVALID, reg.devices.RegisterDevice, devices_pb2.RegisterDeviceRequest())
    device = common_pb2.Device(
        id="d",
        model=f"{METER}@1.0.0",
        edge_id="e",
        site="s",
        labels={f"k{i}": "v" for i in range(65)},
    )
    error = expect_error(
        INVALID, reg.devices.RegisterDevice, devices_pb2.RegisterDeviceRequest(device=device)
    )
    assert field_violations(error) == [("device.labels", "more than 64 labels (65)")]


@pytest.mark.parametrize("device_id", ["", "x" * 10_000, "tab\there", "a b", "\u2028"])
def test_get_refuses_malformed_ids(reg: Registry, device_id: str) -> None:
    error = expect_error(INVALID, reg.devices.GetDevice, devices_pb2.GetDeviceRequest(id=device_id))
    assert field_violations(error)[0][0] == "id"


def test_unknown_device_is_not_found(reg: Registry) -> None:
    expect_error(
        grpc.StatusCode.NOT_FOUND, reg.devices.GetDevice, devices_pb2.GetDeviceRequest(id="nope")
    )


# --------------------------------------------------------------------------- search


def test_list_filters_and_pages(reg: Registry) -> None:
    reg.register("a1", site="north", edge_id="edge-1", labels={"floor": "1", "kind": "main"})
    reg.register("a2", site="north", edge_id="edge-2", labels={"floor": "2"})
    reg.register("b1", site="south", edge_id="edge-2", model=f"{METER}@2.0.0", building="B")
    reg.register("b2", site="south", edge_id="edge-3", labels={"floor": "1"})
    assert list_ids(reg) == ["a1", "a2", "b1", "b2"]
    assert list_ids(reg, site="north") == ["a1", "a2"]
    assert list_ids(reg, edge_id="edge-2") == ["a2", "b1"]
    assert list_ids(reg, building="B") == ["b1"]
    assert list_ids(reg, model=METER) == ["a1", "a2", "b1", "b2"]
    assert list_ids(reg, model=f"{METER}@2.0.0") == ["b1"]
    assert list_ids(reg, label_selector="floor=1") == ["a1", "b2"]
    assert list_ids(reg, label_selector="floor in (1,2),!kind") == ["a2", "b2"]
    assert list_ids(reg, label_selector="floor!=1") == ["a2", "b1"]
    assert list_ids(reg, online=devices_pb2.ONLINE_FILTER_ONLINE) == []
    assert list_ids(reg, online=devices_pb2.ONLINE_FILTER_OFFLINE) == ["a1", "a2", "b1", "b2"]
    seen: list[str] = []
    token = ""
    while True:
        page = reg.devices.ListDevices(
            devices_pb2.ListDevicesRequest(page_size=3, page_token=token), timeout=10
        )
        assert len(page.devices) <= 3
        seen.extend(d.id for d in page.devices)
        token = page.next_page_token
        if not token:
            break
    assert seen == ["a1", "a2", "b1", "b2"]
    assert list_ids(reg, page_size=2**31 - 1) == ["a1", "a2", "b1", "b2"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"label_selector": "floor in (1"}, "label_selector"),
        ({"label_selector": "=x"}, "label_selector"),
        ({"label_selector": "a" * 10_000}, "label_selector"),
        ({"label_selector": "floor=\x00"}, "label_selector"),
        ({"page_size": -5}, "page_size"),
        ({"page_token": "not-a-token"}, "page_token"),
        ({"page_token": "\u00e9\u00e9"}, "page_token"),
        ({"online": 7}, "online"),
        ({"model": f"{METER}@1"}, "model"),
        ({"model": "Not/A Model"}, "model"),
        ({"edge_id": "has space"}, "edge_id"),
    ],
)
def test_list_refuses_malformed_filters(reg: Registry, fields: dict[str, Any], field: str) -> None:
    reg.register("a1")
    error = expect_error(INVALID, reg.devices.ListDevices, devices_pb2.ListDevicesRequest(**fields))
    assert field in {f for f, _ in field_violations(error)}
    reg.assert_serving()


def test_a_token_of_another_listing_is_refused(reg: Registry) -> None:
    for name in ("a1", "a2", "a3"):
        reg.register(name)
    reg.publish_file(EXAMPLES / "models" / "device-health.yaml")
    models_token = reg.models.ListModels(
        models_pb2.ListModelsRequest(page_size=1), timeout=10
    ).next_page_token
    assert models_token
    error = expect_error(
        INVALID,
        reg.devices.ListDevices,
        devices_pb2.ListDevicesRequest(page_token=models_token),
    )
    assert field_violations(error)[0][0] == "page_token"


# --------------------------------------------------------------------------- update, delete, move


def update(
    reg: Registry, device: common_pb2.Device, revision: int, *mask: str
) -> common_pb2.Device:
    updated: common_pb2.Device = reg.devices.UpdateDevice(
        devices_pb2.UpdateDeviceRequest(
            device=device, expected_revision=revision, update_mask=list(mask)
        ),
        timeout=10,
    )
    return updated


def test_update_with_a_mask_and_optimistic_concurrency(reg: Registry) -> None:
    device = reg.register("dev-1", labels={"floor": "1"})
    change = common_pb2.Device(id="dev-1", labels={"floor": "2", "zone": "east"}, site="ignored")
    updated = update(reg, change, device.revision, "labels")
    assert dict(updated.labels) == {"floor": "2", "zone": "east"}
    assert updated.site == "site-a"
    assert updated.revision == device.revision + 1
    # the first writer wins; the second, with the old revision, is told the current one
    before = reg.snapshot()
    error = expect_error(
        PRECONDITION,
        reg.devices.UpdateDevice,
        devices_pb2.UpdateDeviceRequest(
            device=common_pb2.Device(id="dev-1", building="X"),
            expected_revision=device.revision,
            update_mask=["building"],
        ),
    )
    assert "revision" in error.details()
    reason, metadata = error_info(error)
    assert reason == "STALE_REVISION"
    assert metadata["current_revision"] == str(updated.revision)
    assert reg.snapshot() == before


def test_update_every_mutable_field_when_the_mask_is_empty(reg: Registry) -> None:
    device = reg.register("dev-1", labels={"floor": "1"}, building="A")
    replacement = common_pb2.Device(
        id="dev-1", model=f"{METER}@2", edge_id="edge-7", site="site-z", building=""
    )
    updated = update(reg, replacement, device.revision)
    assert (updated.model, updated.edge_id, updated.site) == (
        f"{METER}@2.0.0",
        "edge-7",
        "site-z",
    )
    assert dict(updated.labels) == {}
    assert updated.building == ""


@pytest.mark.parametrize(
    ("mask", "revision", "fields"),
    [
        (["online"], 1, {"update_mask[0]"}),
        (["revision", "nonsense"], 1, {"update_mask[0]", "update_mask[1]"}),
        (["labels"], 0, {"expected_revision"}),
        (["labels"], -3, {"expected_revision"}),
        (["edge_id"], 1, {"device.edge_id"}),
    ],
)
def test_update_refuses_bad_masks_and_revisions(
    reg: Registry, mask: list[str], revision: int, fields: set[str]
) -> None:
    reg.register("dev-1")
    before = reg.snapshot()
    error = expect_error(
        INVALID,
        reg.devices.UpdateDevice,
        devices_pb2.UpdateDeviceRequest(
            device=common_pb2.Device(id="dev-1", edge_id=""),
            expected_revision=revision,
            update_mask=mask,
        ),
    )
    assert fields <= {f for f, _ in field_violations(error)}
    assert reg.snapshot() == before


def test_update_of_an_unknown_device_or_model(reg: Registry) -> None:
    device = reg.register("dev-1")
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        reg.devices.UpdateDevice,
        devices_pb2.UpdateDeviceRequest(
            device=common_pb2.Device(id="nope", building="x"),
            expected_revision=1,
            update_mask=["building"],
        ),
    )
    expect_error(
        PRECONDITION,
        reg.devices.UpdateDevice,
        devices_pb2.UpdateDeviceRequest(
            device=common_pb2.Device(id="dev-1", model="com.example/none@1.0.0"),
            expected_revision=device.revision,
            update_mask=["model"],
        ),
    )


def test_move_and_delete_with_and_without_revisions(reg: Registry) -> None:
    device = reg.register("dev-1", edge_id="edge-1")
    moved = reg.devices.MoveDevice(
        devices_pb2.MoveDeviceRequest(id="dev-1", edge_id="edge-2", expected_revision=1),
        timeout=10,
    )
    assert moved.edge_id == "edge-2"
    assert moved.revision == device.revision + 1
    expect_error(
        PRECONDITION,
        reg.devices.MoveDevice,
        devices_pb2.MoveDeviceRequest(id="dev-1", edge_id="edge-3", expected_revision=1),
    )
    unconditional = reg.devices.MoveDevice(
        devices_pb2.MoveDeviceRequest(id="dev-1", edge_id="edge-3"), timeout=10
    )
    assert unconditional.edge_id == "edge-3"
    error = expect_error(
        INVALID, reg.devices.MoveDevice, devices_pb2.MoveDeviceRequest(id="", edge_id="")
    )
    assert {f for f, _ in field_violations(error)} == {"id", "edge_id"}
    expect_error(
        PRECONDITION,
        reg.devices.DeleteDevice,
        devices_pb2.DeleteDeviceRequest(id="dev-1", expected_revision=1),
    )
    reg.devices.DeleteDevice(
        devices_pb2.DeleteDeviceRequest(id="dev-1", expected_revision=unconditional.revision),
        timeout=10,
    )
    expect_error(
        grpc.StatusCode.NOT_FOUND, reg.devices.GetDevice, devices_pb2.GetDeviceRequest(id="dev-1")
    )
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        reg.devices.DeleteDevice,
        devices_pb2.DeleteDeviceRequest(id="dev-1"),
    )
    expect_error(
        INVALID,
        reg.devices.DeleteDevice,
        devices_pb2.DeleteDeviceRequest(id="dev-2", expected_revision=-1),
    )
