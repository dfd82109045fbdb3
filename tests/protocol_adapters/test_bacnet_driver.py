"""The BACnet driver against real peers: the simulator in separate processes on 127.0.0.1,
each on its own UDP port (GUIDE section 3), our client stack on another."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Coroutine, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from protocol_adapters.bacnet.driver import BacnetDriver
from protocol_adapters.bacnet.errors import (
    BacnetConfigError,
    BacnetErrorResponse,
    BacnetMappingError,
    BacnetTimeoutError,
)
from protocol_adapters.bacnet.simulator import spawn, stop
from protocol_adapters.bacnet.stack import BacnetStack, translate
from protocol_adapters.base import LinkTimeoutError, PeerRejectedError, Update
from thing_models import load_model_file
from thing_models.messages import Quality
from thing_models.model import (
    Access,
    BacnetPoint,
    Bindings,
    DataSchema,
    DataType,
    Property,
    ThingModel,
)

REPO = Path(__file__).resolve().parents[2]
AHU_FILE = REPO / "examples" / "models" / "air-handling-unit.yaml"
AHU = load_model_file(AHU_FILE)
_T = TypeVar("_T")


def run(coro: Coroutine[Any, Any, _T], timeout: float = 30) -> _T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def device() -> Iterator[str]:
    """The AHU simulator, device 1001, analog-input,2 in fault, inputs moving every 0.2 s."""
    address = f"127.0.0.1:{free_udp_port()}"
    proc = spawn(AHU_FILE, address, 1001, "--interval", "0.2", "--fault", "analog-input,2")
    yield address
    stop(proc)


@pytest.fixture(scope="module")
def old_device() -> Iterator[str]:
    """An old controller: rejects ReadPropertyMultiple and SubscribeCOV."""
    address = f"127.0.0.1:{free_udp_port()}"
    proc = spawn(AHU_FILE, address, 1002, "--reject-rpm", "--reject-cov")
    yield address
    stop(proc)


def stack(timeout_s: float = 1.0) -> BacnetStack:
    return BacnetStack(f"127.0.0.1:{free_udp_port()}", timeout_s=timeout_s)


def driver(address: str, model: ThingModel = AHU, **options: Any) -> BacnetDriver:
    binding = model.bindings.bacnet
    assert binding is not None
    options.setdefault("stack", stack())
    return BacnetDriver(address, binding, model, **options)


def no_cov(model: ThingModel) -> ThingModel:
    binding = model.bindings.bacnet
    assert binding is not None
    return replace(model, bindings=replace(model.bindings, bacnet=replace(binding, use_cov=False)))


def test_read_property_multiple_reads_every_point_with_quality(device: str) -> None:
    async def scenario() -> None:
        async with driver(device, no_cov(AHU), device_instance=1001, rpm_batch=7) as d:
            readings = await d.read_points(d.pollable)
            assert set(readings) == d.pollable
            assert d.use_rpm
            assert d.diagnostics.state == "online"
            # 27 points in batches of 7 -> 4 ReadPropertyMultiple requests (+ Who-Is)
            assert d.diagnostics.requests == 1 + 4 + 1  # one reliability read for the fault
            good = {k: r for k, r in readings.items() if r.quality is Quality.GOOD}
            assert len(good) == 26
            assert isinstance(readings["supply_air_temp"].value, float)
            assert readings["supply_fan_status"].value is False
            assert readings["operating_mode"].value == 1
            assert readings["return_air_co2"].value == 2500
            assert readings["sat_status_flags"].value == dict.fromkeys(
                ("in_alarm", "fault", "overridden", "out_of_service"), False
            )
            faulty = readings["return_air_temp"]
            assert faulty.quality is Quality.BAD
            assert isinstance(faulty.value, float)
            assert "fault (over-range)" in faulty.reason

    run(scenario())


def test_device_that_rejects_rpm_falls_back_to_read_property(old_device: str) -> None:
    async def scenario() -> None:
        async with driver(old_device, no_cov(AHU)) as d:
            assert d.device_instance == 1002  # learnt from the I-Am
            first = await d.read_points(["supply_air_temp", "operating_mode"])
            assert not d.use_rpm  # remembered for this device
            assert first["supply_air_temp"].quality is Quality.GOOD
            assert first["operating_mode"].value == 1
            before = d.diagnostics.requests
            await d.read_points(["supply_air_temp"])
            # present-value and status-flags by ReadProperty, no new ReadPropertyMultiple
            assert d.diagnostics.requests == before + 2

    run(scenario())


def test_write_with_priority_and_relinquish(device: str) -> None:
    async def scenario() -> None:
        async with driver(device, no_cov(AHU)) as d:
            await d.write("sat_setpoint", 18.0)  # the point's priority 16
            high = await d.write("sat_setpoint", 21.0, priority=8, read_back=True)
            assert high is not None
            assert high.value == 21.0
            # priority 8 wins over 16: a new value at 16 does not show
            low = await d.write("sat_setpoint", 19.0, read_back=True)
            assert low is not None
            assert low.value == 21.0
            await d.relinquish("sat_setpoint", priority=8)
            after = await d.read_points(["sat_setpoint"])
            assert after["sat_setpoint"].value == 19.0
            await d.relinquish("sat_setpoint")  # 16 too: back to the relinquish default
            back = await d.read_points(["sat_setpoint"])
            assert back["sat_setpoint"].value == 20.0
            on = await d.write("supply_fan_command", True, read_back=True)
            assert on is not None
            assert on.value is True
            mode = await d.write("operating_mode", 3, read_back=True)
            assert mode is not None
            assert mode.value == 3
            await d.relinquish("supply_fan_command")
            await d.relinquish("operating_mode")

    run(scenario())


def _with_points(extra: list[tuple[Property, BacnetPoint]]) -> ThingModel:
    binding = AHU.bindings.bacnet
    assert binding is not None
    return replace(
        AHU,
        properties=AHU.properties + tuple(p for p, _ in extra),
        bindings=Bindings(
            bacnet=replace(
                binding, points=binding.points + tuple(b for _, b in extra), use_cov=False
            )
        ),
    )


def test_errors_unknown_object_property_and_read_only(device: str) -> None:
    number = DataSchema(DataType.FLOAT)
    model = _with_points(
        [
            (Property("ghost", number), BacnetPoint("ghost", "analog-input", 99)),
            (
                Property("max_pv", number),
                BacnetPoint("max_pv", "analog-input", 1, property_id="max-pres-value"),
            ),
            (
                Property("sat_forced", number, access=Access.READ_WRITE),
                BacnetPoint("sat_forced", "analog-input", 1, write_priority=8),
            ),
        ]
    )

    async def scenario() -> None:
        async with driver(device, model) as d:
            readings = await d.read_points(["ghost", "max_pv", "supply_air_temp", "nothing"])
            assert readings["supply_air_temp"].quality is Quality.GOOD
            assert readings["ghost"].quality is Quality.BAD
            assert "object:unknown-object" in readings["ghost"].reason
            assert "ghost (analog-input,99 present-value)" in readings["ghost"].reason
            assert "property:unknown-property" in readings["max_pv"].reason
            assert readings["nothing"].reason == "nothing: no BACnet point"
            assert d.diagnostics.exception_codes == {
                "object:unknown-object": 2,  # present-value and status-flags of AI-99
                "property:unknown-property": 1,
            }
            with pytest.raises(BacnetErrorResponse) as info:
                await d.write("sat_forced", 30.0)
            assert info.value.code == "property:write-access-denied"
            assert isinstance(info.value, PeerRejectedError)
            assert d.diagnostics.exception_codes["property:write-access-denied"] == 1
            assert d.diagnostics.state == "degraded"
            with pytest.raises(BacnetConfigError, match="read-only in the model"):
                await d.write("supply_air_temp", 1.0)
            with pytest.raises(BacnetConfigError, match="no BACnet point"):
                await d.write("nothing", 1.0)
            with pytest.raises(BacnetConfigError, match="priority 6 is reserved"):
                await d.write("sat_setpoint", 20.0, priority=6)
            with pytest.raises(BacnetMappingError, match="above the maximum 30"):
                await d.write("sat_setpoint", 99.0)
            with pytest.raises(BacnetMappingError, match="expected a number"):
                await d.write("sat_setpoint", "warm")
            with pytest.raises(BacnetConfigError, match="no BACnet service write for it"):
                await d.invoke("start_night_purge", {})

    run(scenario())


def test_silent_device_times_out_and_goes_offline() -> None:
    silent = f"127.0.0.1:{free_udp_port()}"

    async def scenario() -> None:
        d = driver(
            silent, no_cov(AHU), stack=stack(timeout_s=0.3), device_instance=1001, offline_after=2
        )
        with pytest.raises(BacnetTimeoutError) as info:
            await d.connect()
        assert isinstance(info.value, LinkTimeoutError)
        readings = await d.read_points(["supply_air_temp"])
        assert readings["supply_air_temp"].quality is Quality.BAD
        assert "BacnetTimeoutError" in readings["supply_air_temp"].reason
        assert d.diagnostics.timeouts == 2
        assert d.diagnostics.state == "offline"
        assert not d.connected
        with pytest.raises(BacnetTimeoutError):
            await d.write("sat_setpoint", 20.0)
        await d.close()

    run(scenario())


def test_cov_pushes_changes_and_renews(device: str) -> None:
    async def scenario() -> None:
        d = driver(device, AHU, cov_lifetime_s=4)
        updates: list[Update] = []
        moved = asyncio.Event()

        def sink(update: Update) -> None:
            updates.append(update)
            if any(u.readings.get("supply_air_temp") for u in updates[1:]):
                moved.set()

        d.set_sink(sink)
        async with d:
            await asyncio.wait_for(moved.wait(), 10)
            assert len(d.cov_active) == 26  # every object with a present-value point
            sat = [
                u.readings["supply_air_temp"] for u in updates if "supply_air_temp" in u.readings
            ]
            assert all(r.quality is Quality.GOOD for r in sat)
            assert len({r.value for r in sat}) > 1  # the value moved
            faulty = [
                u.readings["return_air_temp"] for u in updates if "return_air_temp" in u.readings
            ]
            assert faulty
            assert faulty[0].quality is Quality.BAD
            deadline = asyncio.get_running_loop().time() + 8
            while d.cov_renewals < 26 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.1)  # renewal is due at 3 s (3/4 of the lifetime)
            assert d.cov_renewals >= 26
            assert len(d.cov_active) == 26
            count = len(updates)
            await asyncio.wait_for(_more(updates, count), 5)  # still flowing after renewal
        assert not d.cov_active

    run(scenario(), timeout=40)


async def _more(updates: list[Update], count: int) -> None:
    while len(updates) <= count:
        await asyncio.sleep(0.05)


def test_cov_refused_leaves_polling(old_device: str) -> None:
    async def scenario() -> None:
        d = driver(old_device, AHU)
        async with d:
            readings = await d.read_points(["supply_air_temp"])
            assert readings["supply_air_temp"].quality is Quality.GOOD
            deadline = asyncio.get_running_loop().time() + 5
            while (
                not any(str(k).startswith("reject:") for k in d.diagnostics.exception_codes)
                and asyncio.get_running_loop().time() < deadline
            ):
                await asyncio.sleep(0.05)
            assert not d.cov_active
            assert d.diagnostics.exception_codes.get("reject:unrecognized-service", 0) >= 1
            assert "supply_air_temp" in d.pollable

    run(scenario())


def test_shared_stack_serves_two_devices(device: str, old_device: str) -> None:
    async def scenario() -> None:
        shared = stack()
        a = driver(device, no_cov(AHU), stack=shared)
        b = driver(old_device, no_cov(AHU), stack=shared)
        await a.connect()
        await b.connect()
        assert a._app is b._app is shared.app
        ra = await a.read_points(["supply_air_temp"])
        rb = await b.read_points(["supply_air_temp"])
        assert ra["supply_air_temp"].quality is rb["supply_air_temp"].quality is Quality.GOOD
        await a.close()
        assert shared.app is not None  # b still uses it
        await b.close()
        assert shared.app is None

    run(scenario())


def test_bad_driver_configuration() -> None:
    with pytest.raises(BacnetConfigError, match="not a BACnet/IP address"):
        driver("", AHU)
    with pytest.raises(BacnetConfigError, match="rpm_batch"):
        driver("127.0.0.1:47808", AHU, rpm_batch=0)
    broken = _with_points(
        [(Property("x", DataSchema(DataType.FLOAT)), BacnetPoint("x", "analog-inptu", 1))]
    )
    with pytest.raises(BacnetConfigError, match="not a BACnet object type"):
        driver("127.0.0.1:47808", broken)
    binding = AHU.bindings.bacnet
    assert binding is not None
    orphan = replace(binding, points=(BacnetPoint("missing", "analog-input", 1),))
    with pytest.raises(BacnetConfigError, match="no such property"):
        BacnetDriver("127.0.0.1:47808", orphan, AHU, stack=stack())
    with pytest.raises(BacnetConfigError, match="timeout_s"):
        BacnetStack("127.0.0.1:47808", timeout_s=0)


def test_translation_of_library_errors() -> None:
    from bacpypes3.apdu import (
        AbortPDU,
        AbortReason,
        RejectPDU,
        RejectReason,
        error_types,
    )

    error = error_types[12](errorClass="object", errorCode="unknown-object")  # ReadProperty
    assert translate(error, "read").code == "object:unknown-object"  # type: ignore[attr-defined]
    reject = translate(RejectPDU(reason=RejectReason.unrecognizedService), "rpm")
    assert reject.code == "reject:unrecognized-service"  # type: ignore[attr-defined]
    seg = translate(AbortPDU(reason=AbortReason.segmentationNotSupported), "read")
    assert type(seg).__name__ == "BacnetSegmentationError"
    assert isinstance(translate(AbortPDU(reason=AbortReason.noResponse), "x"), BacnetTimeoutError)
    assert isinstance(translate(TimeoutError(), "x"), BacnetTimeoutError)
    assert type(translate(OSError("down"), "x")).__name__ == "BacnetConnectionError"
    assert isinstance(translate(ValueError("bad"), "x"), BacnetMappingError)
    assert type(translate(RuntimeError("odd"), "x")).__name__ == "BacnetTransportError"


def test_simulator_refuses_a_model_without_bacnet(tmp_path: Path) -> None:
    model = tmp_path / "m.yaml"
    model.write_text('model: a.b/c\nversion: "1.0.0"\nproperties: [{id: x, type: float}]\n')
    with pytest.raises(RuntimeError, match="no BACnet binding"):
        spawn(model, "127.0.0.1:1", 1, ready_timeout_s=20)


def test_close_right_after_connect_ends_every_subscription(device: str) -> None:
    async def scenario() -> None:
        for _ in range(3):
            d = driver(device, AHU)
            await d.connect()  # 26 subscriptions under way
            await asyncio.wait_for(d.close(), 10)
            assert not d.cov_active
            assert d.stack.app is None

    run(scenario())


def test_foreign_device_registration_with_a_bbmd() -> None:
    bbmd = f"127.0.0.1:{free_udp_port()}"
    proc = spawn(AHU_FILE, bbmd, 1003, "--bbmd")
    try:

        async def scenario() -> None:
            foreign = BacnetStack(f"127.0.0.1:{free_udp_port()}", timeout_s=1.0, bbmd=bbmd)
            async with driver(bbmd, no_cov(AHU), stack=foreign) as d:
                assert foreign.bbmd_status() == 0  # registered
                readings = await d.read_points(["supply_air_temp"])
                assert readings["supply_air_temp"].quality is Quality.GOOD
            silent = f"127.0.0.1:{free_udp_port()}"
            lonely = BacnetStack(f"127.0.0.1:{free_udp_port()}", timeout_s=0.3, bbmd=silent)
            with pytest.raises(BacnetTimeoutError, match="no answer to the foreign-device"):
                await lonely.acquire()
            assert lonely.app is None

        run(scenario())
    finally:
        stop(proc)


def test_segmentation_abort_halves_the_batch(device: str) -> None:
    """Our side accepts only 50-byte answers without segmentation: a 20-point
    ReadPropertyMultiple answer does not fit, the device aborts, the driver halves the batch
    until the answers fit, and keeps using ReadPropertyMultiple."""

    async def scenario() -> None:
        small = BacnetStack(
            f"127.0.0.1:{free_udp_port()}", timeout_s=1.0, max_apdu=50, segmentation=False
        )
        async with driver(device, no_cov(AHU), stack=small, rpm_batch=20) as d:
            readings = await d.read_points(d.pollable)
            assert d.use_rpm
            assert d.rpm_batch < 20
            assert d.diagnostics.exception_codes["abort:segmentation-not-supported"] >= 1
            bad = {k: r.reason for k, r in readings.items() if r.quality is not Quality.GOOD}
            assert sum(r.quality is Quality.GOOD for r in readings.values()) == 26, bad
            assert len(readings) == 27
            errors = d.diagnostics.errors
            await d.read_points(d.pollable)  # the smaller batch is remembered
            assert d.diagnostics.errors == errors

    run(scenario())


HOSTILE = [
    b"",
    b"\x00",
    b"\x81",  # a BVLL type byte alone
    b"\x81\x0a\x00\x04",  # Original-Unicast with no NPDU
    b"\x81\x0a\xff\xff" + b"\x01" * 8,  # a length far beyond the datagram
    b"\x81\x0a\x00\x09\x01\x00\x30\x00\x0c",  # a ComplexAck cut short
    b"\x81\x0b\x00\x0c\x01\x20\xff\xff\x00\xff\x10\x08",  # broadcast Who-Is, odd network
    bytes(range(256)),
    b"\x81\x0a\x00\x10\x01\x04\x00\x05\x01\x0c\x0c\x00\x00\x00\x01\x19",  # RP, then junk
]


def test_hostile_datagrams_do_not_stop_the_stack_or_the_device(device: str) -> None:
    async def scenario() -> None:
        async with driver(device, no_cov(AHU)) as d:
            ours = d.stack.local_address.rsplit(":", 1)
            host, port = device.rsplit(":", 1)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for payload in HOSTILE * 3:
                    sock.sendto(payload, (ours[0], int(ours[1])))  # to our stack
                    sock.sendto(payload, (host, int(port)))  # to the device
            readings = await d.read_points(d.pollable)
            assert sum(r.quality is Quality.GOOD for r in readings.values()) == 26
            assert d.diagnostics.state == "online"

    run(scenario())
