"""Who-Is / I-Am discovery and a read of each device's objects (names, units, state texts).

::

    stack = BacnetStack("192.168.1.10/24:47808")
    devices = await discover(stack, low=1000, high=1999)        # broadcast on the subnet
    devices = await discover(stack, address="192.168.1.20:47808")  # directed
    model = draft_model(devices[0])                             # protocol_adapters.bacnet.mapping

Who-Is with limits (or directed to one address) returns as soon as every device in range has
answered, a broadcast without limits waits ``timeout_s``. A device whose object list does not
fit one answer and that cannot segment is read element by element.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from bacpypes3.primitivedata import ObjectIdentifier

from protocol_adapters.bacnet.errors import (
    BacnetConfigError,
    BacnetError,
    BacnetSegmentationError,
)
from protocol_adapters.bacnet.mapping import DiscoveredDevice, DiscoveredObject, ObjectId
from protocol_adapters.bacnet.stack import BacnetStack, parse_address

__all__ = ["discover", "read_device"]

_SKIPPED = frozenset({"device", "network-port"})


async def discover(
    stack: BacnetStack,
    *,
    low: int | None = None,
    high: int | None = None,
    address: str | None = None,
    timeout_s: float = 3.0,
    read_objects: bool = True,
) -> list[DiscoveredDevice]:
    """The devices answering Who-Is (in ``low..high``, or at ``address``), sorted by instance,
    each with its objects read when ``read_objects``. Raises :class:`BacnetError`."""
    if (low is None) != (high is None):
        raise BacnetConfigError("give both ends of the device instance range, or neither")
    if low is not None and high is not None and not 0 <= low <= high <= 4194303:
        raise BacnetConfigError(f"device instance range {low}-{high} is not within 0-4194303")
    target = parse_address(address, "--address") if address is not None else None
    app = await stack.acquire()
    try:
        future = app.who_is(low, high, target, timeout=timeout_s)
        i_ams = await stack.call(future, "Who-Is")
        found: dict[int, Any] = {}
        for i_am in i_ams or ():
            found.setdefault(int(i_am.iAmDeviceIdentifier[1]), i_am)
        devices = []
        for instance, i_am in sorted(found.items()):
            source = str(i_am.pduSource)
            device = DiscoveredDevice(instance, source, vendor_id=int(i_am.vendorID))
            if read_objects:
                device = await read_device(stack, app, device, i_am.pduSource)
            devices.append(device)
        return devices
    finally:
        await stack.release()


async def _read(
    stack: BacnetStack, app: Any, addr: Any, oid: str, prop: str, index: int | None = None
) -> Any:
    what = f"ReadProperty {addr} {oid} {prop}"
    return await stack.call(app.read_property(addr, ObjectIdentifier(oid), prop, index), what)


async def _optional(stack: BacnetStack, app: Any, addr: Any, oid: str, prop: str) -> Any:
    try:
        return await _read(stack, app, addr, oid, prop)
    except BacnetError:
        return None


async def _object_list(stack: BacnetStack, app: Any, addr: Any, device_oid: str) -> list[Any]:
    try:
        return list(await _read(stack, app, addr, device_oid, "object-list"))
    except BacnetSegmentationError:
        count = int(await _read(stack, app, addr, device_oid, "object-list", 0))
        return [
            await _read(stack, app, addr, device_oid, "object-list", i) for i in range(1, count + 1)
        ]


async def read_device(
    stack: BacnetStack, app: Any, device: DiscoveredDevice, addr: Any
) -> DiscoveredDevice:
    """``device`` with its name, vendor and objects read from it."""
    device_oid = f"device,{device.instance}"
    name = await _optional(stack, app, addr, device_oid, "object-name")
    vendor = await _optional(stack, app, addr, device_oid, "vendor-name")
    objects = await _object_list(stack, app, addr, device_oid)
    limit = asyncio.Semaphore(4)

    async def describe(raw: Any) -> DiscoveredObject:
        oid = ObjectId(str(raw[0]), int(raw[1]))
        text = str(oid)
        async with limit:
            obj_name = await _optional(stack, app, addr, text, "object-name")
            description = await _optional(stack, app, addr, text, "description")
            units = None
            states: Sequence[Any] = ()
            if oid.type.startswith("analog") or oid.type.endswith("integer-value"):
                units = await _optional(stack, app, addr, text, "units")
            if oid.type.startswith("multi-state"):
                states = await _optional(stack, app, addr, text, "state-text") or ()
        return DiscoveredObject(
            oid,
            name=str(obj_name or ""),
            description=str(description or ""),
            units=str(units) if units is not None else None,
            state_texts=tuple(str(s) for s in states),
        )

    wanted = [raw for raw in objects if str(raw[0]) not in _SKIPPED]
    described = await asyncio.gather(*(describe(raw) for raw in wanted))
    return DiscoveredDevice(
        device.instance,
        device.address,
        name=str(name or ""),
        vendor=str(vendor or ""),
        vendor_id=device.vendor_id,
        objects=tuple(described),
    )
