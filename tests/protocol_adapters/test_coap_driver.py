"""The asyncio CoAP driver against the real simulator (an aiocoap server on 127.0.0.1).

read_points never raises: a failed request's points come back bad with the error as reason,
and the failure is counted in the driver's DiagnosticState. Observe notifications go to the
sink as Updates; an observation that ends or falls silent is registered again. Writes and
services raise CoapTransportError subclasses / CoapValueError / CoapConfigError.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from protocol_adapters.base import DeviceDriver, Update
from protocol_adapters.coap import (
    CoapConfigError,
    CoapConnectionError,
    CoapResponseError,
    CoapTimeoutError,
    CoapValueError,
)
from protocol_adapters.coap.driver import CoapDriver, SharedClient
from protocol_adapters.coap.simulator import CoapSimulator
from thing_models import load_model_file, load_model_text
from thing_models.composition import FolderModelSource, flatten
from thing_models.messages import Quality
from thing_models.model import CoapBinding, CoapMode, ThingModel

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
PARKING = flatten(
    load_model_file(EXAMPLES / "parking-space-sensor.yaml"), FolderModelSource(EXAMPLES)
)
THERMOSTAT = load_model_text(
    """
model: test.coap/thermostat
version: "1.0.0"
properties:
  - {id: temp, type: float, min: -40, max: 85}
  - {id: setpoint, type: float, min: 5, max: 30, access: rw}
  - {id: label, type: text, max_length: 2000, access: rw}
  - {id: samples, type: array, items: {type: int32}, max_items: 5000}
services:
  - id: reset
    outputs: [{id: ok, type: bool}, {id: cleared, type: int32, min: 0, max: 9}]
    extensions: {x-coap: {resource: /actions/reset}}
  - {id: calibrate}
bindings:
  coap:
    points:
      - {property: temp, resource: /state, mode: observe, path: $.t, content_format: cbor}
      - {property: setpoint, resource: /config, path: $.sp}
      - {property: label, resource: /label, content_format: text}
      - {property: samples, resource: /samples, path: $.s}
""",
    "thermostat.yaml",
)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Sink:
    """Collects Updates; ``next(pred)`` waits for the first one matching."""

    def __init__(self) -> None:
        self.updates: asyncio.Queue[Update] = asyncio.Queue()

    def __call__(self, update: Update) -> None:
        self.updates.put_nowait(update)

    async def next(self, pred: Callable[[Update], bool] = lambda u: True) -> Update:
        while True:
            update = await self.updates.get()
            if pred(update):
                return update


def occupied_is(value: bool) -> Callable[[Update], bool]:
    return lambda update: update.readings["occupied"].value is value


def state(driver: CoapDriver) -> str:
    """The link state (a call, so mypy does not narrow it between two checks)."""
    return driver.diagnostics.state


@asynccontextmanager
async def rig(
    model: ThingModel = PARKING, **driver_kw: Any
) -> AsyncIterator[tuple[CoapSimulator, CoapDriver, Sink]]:
    sim = CoapSimulator(model, seed=1, max_age_s=driver_kw.pop("max_age_s", None))
    port = await sim.start()
    binding = model.bindings.coap
    assert binding is not None
    driver_kw.setdefault("timeout_s", 1.0)
    driver = CoapDriver("127.0.0.1", port, binding, model, **driver_kw)
    sink = Sink()
    driver.set_sink(sink)
    try:
        await driver.connect()
        yield sim, driver, sink
    finally:
        await driver.close()
        await sim.stop()


def test_driver_satisfies_the_contract() -> None:
    binding = PARKING.bindings.coap
    assert binding is not None
    driver = CoapDriver("::1", 5683, binding, PARKING)
    assert isinstance(driver, DeviceDriver)
    assert driver.endpoint == "coap://[::1]:5683"
    assert not driver.connected
    assert "occupied" not in driver.pollable
    assert "temperature" in driver.pollable


def test_get_polling_reads_every_pollable_point() -> None:
    async def body() -> None:
        async with rig() as (sim, driver, _):
            readings = await driver.read_points(driver.pollable)
            assert set(readings) == driver.pollable
            for name, reading in readings.items():
                assert reading == (sim.value(name), Quality.GOOD, ""), name
            assert state(driver) == "online"
            assert driver.diagnostics.requests >= 4  # one GET per resource
            only = await driver.read_points({"temperature"})
            assert set(only) == {"temperature"}
            sim.set_value("temperature", 19.5)
            assert (await driver.read_all())["temperature"].value == 19.5

    run(body())


def test_observe_pushes_notifications() -> None:
    async def body() -> None:
        async with rig() as (sim, _driver, sink):
            first = await sink.next()
            assert set(first.readings) == {"occupied", "occupied_since", "confidence"}
            assert first.readings["occupied"].quality is Quality.GOOD
            for value in (True, False, True):
                sim.set_value("occupied", value)
                update = await sink.next(occupied_is(value))
                assert update.readings["occupied"] == (value, Quality.GOOD, "")
            sim.set_value("confidence", 0.5)
            update = await sink.next(lambda u: u.readings["confidence"].value == 0.5)
            assert update.ts_ms > 0

    run(body())


def test_observation_error_is_pushed_and_observation_registered_again() -> None:
    async def body() -> None:
        async with rig(reobserve_delay_s=0.05) as (sim, driver, sink):
            await sink.next()
            sim.fail("/occupancy", "5.03")
            bad = await sink.next(lambda u: u.readings["occupied"].quality is Quality.BAD)
            assert "CoapResponseError: GET /occupancy: 5.03" in bad.readings["occupied"].reason
            assert driver.diagnostics.exception_codes.get("5.03", 0) >= 1
            assert state(driver) == "degraded"
            sim.fail("/occupancy", None)
            sim.set_value("occupied", True)
            good = await sink.next(lambda u: u.readings["occupied"].quality is Quality.GOOD)
            assert good.readings["occupied"].value is True
            assert state(driver) == "online"
            sim.set_value("occupied", False)  # the new observation is live
            await sink.next(lambda u: u.readings["occupied"].value is False)

    run(body())


def test_silent_observation_is_registered_again_after_max_age() -> None:
    """The device goes away (no notification within Max-Age + timeout): the driver counts a
    timeout, registers again (refused, offline) and resumes when the device is back."""

    async def body() -> None:
        async with rig(max_age_s=1, timeout_s=0.3, reobserve_delay_s=0.1) as (sim, driver, sink):
            await sink.next()
            port = sim.port
            await sim.stop()
            lost = await sink.next(lambda u: u.readings["occupied"].quality is Quality.BAD)
            assert "no notification in 1.3 s" in lost.readings["occupied"].reason
            assert driver.diagnostics.timeouts >= 1
            await sink.next(lambda u: "CoapConnectionError" in u.readings["occupied"].reason)
            assert state(driver) == "offline"
            again = CoapSimulator(PARKING, seed=2, port=port)
            await again.start()
            try:
                back = await sink.next(lambda u: u.readings["occupied"].quality is Quality.GOOD)
                assert back.readings["occupied"].value == again.value("occupied")
                assert state(driver) == "online"
            finally:
                await again.stop()

    run(body())


def test_put_writes_and_reads_back() -> None:
    async def body() -> None:
        async with rig(THERMOSTAT) as (sim, driver, _):
            assert await driver.write("setpoint", 22.5) is None
            assert sim.value("setpoint") == 22.5
            assert sim.puts("/config") == 1
            reading = await driver.write("setpoint", 18, read_back=True)
            assert reading == (18.0, Quality.GOOD, "")
            await driver.write("label", "hall")
            assert sim.value("label") == "hall"

    run(body())


def test_write_errors() -> None:
    async def body() -> None:
        async with rig(THERMOSTAT) as (sim, driver, _):
            with pytest.raises(CoapConfigError, match="temp: the property is read-only"):
                await driver.write("temp", 20)
            with pytest.raises(CoapConfigError, match="nope: no CoAP point"):
                await driver.write("nope", 1)
            with pytest.raises(CoapValueError, match="setpoint: cannot write 99"):
                await driver.write("setpoint", 99)
            sim.fail("/config", "4.05")
            with pytest.raises(CoapResponseError, match=r"PUT /config: 4.05") as info:
                await driver.write("setpoint", 20)
            assert info.value.code == "4.05"
            assert driver.diagnostics.exception_codes == {"4.05": 1}
            assert state(driver) == "degraded"
            assert sim.puts("/config") == 0

    run(body())


def test_blockwise_large_resources() -> None:
    """Block2 (GET of ~25 kB) and Block1 (PUT of 2 kB), both handled by aiocoap."""

    async def body() -> None:
        async with rig(THERMOSTAT) as (sim, driver, _):
            samples = list(range(100_000, 105_000))
            sim.set_value("samples", samples)
            reading = (await driver.read_points({"samples"}))["samples"]
            assert reading == (samples, Quality.GOOD, "")
            label = "x" * 2000
            await driver.write("label", label)
            assert sim.value("label") == label

    run(body())


def test_payload_over_the_limit_is_bad() -> None:
    async def body() -> None:
        async with rig(THERMOSTAT, max_payload_bytes=4096) as (sim, driver, _):
            sim.set_value("samples", list(range(2000)))
            reading = (await driver.read_points({"samples"}))["samples"]
            assert reading.quality is Quality.BAD
            assert "over the limit of 4096" in reading.reason

    run(body())


def test_error_responses_are_bad_readings_and_counted() -> None:
    async def body() -> None:
        async with rig() as (sim, driver, _):
            sim.fail("/env", "4.04")
            sim.fail("/config/bay", "5.03")
            readings = await driver.read_points(driver.pollable)
            assert readings["temperature"].quality is Quality.BAD
            assert readings["temperature"].reason == "CoapResponseError: GET /env: 4.04"
            assert readings["magnetic_field"].reason == readings["temperature"].reason
            assert readings["bay_id"].reason == "CoapResponseError: GET /config/bay: 5.03"
            assert readings["health:rssi"].quality is Quality.GOOD  # other resources untouched
            assert driver.diagnostics.exception_codes == {"4.04": 1, "5.03": 1}
            assert state(driver) in ("online", "degraded")  # order of the GETs
            assert driver.diagnostics.errors == 2

    run(body())


def test_malformed_payloads() -> None:
    async def body() -> None:
        async with rig(reobserve_delay_s=0.05) as (sim, driver, sink):
            await sink.next()
            sim.set_raw("/env", b"\xff\x00")
            sim.set_raw("/health", b'{"battery": ')
            readings = await driver.read_points(driver.pollable)
            assert "/env: cbor payload does not decode" in readings["temperature"].reason
            assert "/health: json payload does not decode" in readings["health:rssi"].reason
            assert readings["bay_id"].quality is Quality.GOOD
            sim.set_raw("/occupancy", b"\x9f")
            bad = await sink.next(lambda u: u.readings["occupied"].quality is Quality.BAD)
            assert "cbor payload does not decode" in bad.readings["occupied"].reason
            sim.set_raw("/occupancy", None)
            await sink.next(lambda u: u.readings["occupied"].quality is Quality.GOOD)

    run(body())


def test_wrong_types_are_bad_points_only() -> None:
    async def body() -> None:
        async with rig() as (sim, driver, _):
            sim.set_raw("/health", b'{"battery": {"level": "full", "voltage": 3.6}}')
            readings = await driver.read_points(driver.pollable)
            assert readings["health:battery_level"].quality is Quality.BAD
            assert "expected an integer" in readings["health:battery_level"].reason
            assert readings["health:battery_voltage"] == (3.6, Quality.GOOD, "")
            assert "has no $.radio" in readings["health:rssi"].reason

    run(body())


def test_silent_device_degraded_then_offline() -> None:
    async def body() -> None:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))  # swallows every datagram, answers nothing
        assert PARKING.bindings.coap is not None
        polled = [p for p in PARKING.bindings.coap.points if p.mode is CoapMode.POLL]
        binding = CoapBinding(tuple(polled))
        driver = CoapDriver(
            "127.0.0.1", silent.getsockname()[1], binding, PARKING, timeout_s=0.3, offline_after=2
        )
        try:
            await driver.connect()
            readings = await driver.read_points({"temperature"})
            assert readings["temperature"].quality is Quality.BAD
            assert "CoapTimeoutError" in readings["temperature"].reason
            assert "no response in 0.3 s" in readings["temperature"].reason
            assert state(driver) == "degraded"
            await driver.read_points({"temperature"})
            assert state(driver) == "offline"
            assert driver.diagnostics.timeouts == 2
            with pytest.raises(CoapTimeoutError):
                await driver.invoke("calibrate", {})
        finally:
            await driver.close()
            silent.close()

    run(body())


def test_refused_port_is_a_connection_error() -> None:
    async def body() -> None:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()  # nothing listens there now: ICMP port unreachable
        binding = THERMOSTAT.bindings.coap
        assert binding is not None
        async with CoapDriver("127.0.0.1", port, binding, THERMOSTAT, timeout_s=2) as driver:
            with pytest.raises(CoapConnectionError, match=f"PUT coap://127.0.0.1:{port}/config"):
                await driver.write("setpoint", 20)
            assert state(driver) == "offline"

    run(body())


def test_services_post() -> None:
    async def body() -> None:
        async with rig(THERMOSTAT) as (sim, driver, _):
            outputs = await driver.invoke("reset", {"hard": True})
            assert outputs["ok"] is True
            assert 0 <= int(outputs["cleared"]) <= 9  # type: ignore[call-overload]
            assert sim.calls("/actions/reset") == [{"hard": True}]
            assert await driver.invoke("calibrate", {}) == {}
            assert sim.calls("/calibrate") == [{}]
            with pytest.raises(CoapConfigError, match="nope: no such service"):
                await driver.invoke("nope", {})
            with pytest.raises(CoapValueError, match="cannot encode"):
                await driver.invoke("reset", {"x": float("nan")})

    run(body())


def test_unreliable_non_requests() -> None:
    async def body() -> None:
        async with rig(reliable=False) as (sim, driver, sink):
            readings = await driver.read_points({"bay_id"})
            assert readings["bay_id"] == (sim.value("bay_id"), Quality.GOOD, "")
            await sink.next(lambda u: u.readings["occupied"].quality is Quality.GOOD)

    run(body())


def test_shared_client_context() -> None:
    async def body() -> None:
        sim = CoapSimulator(PARKING)
        port = await sim.start()
        binding = PARKING.bindings.coap
        assert binding is not None
        client = SharedClient()
        one = CoapDriver("127.0.0.1", port, binding, PARKING, client=client)
        two = CoapDriver("127.0.0.1", port, binding, PARKING, client=client)
        try:
            await one.connect()
            await two.connect()
            assert one._context is two._context
            await one.close()
            assert not one.connected
            readings = await two.read_points({"bay_id"})
            assert readings["bay_id"].quality is Quality.GOOD
            # a closed driver takes the context again on its next request
            assert (await one.read_points({"bay_id"}))["bay_id"].quality is Quality.GOOD
        finally:
            await one.close()
            await two.close()
            await sim.stop()
        assert client._context is None

    run(body())


@pytest.mark.parametrize(
    ("kw", "message"),
    [({"scheme": "coaps"}, "scheme 'coaps'"), ({"timeout_s": 0}, "timeout_s must be > 0")],
)
def test_driver_config_errors(kw: dict[str, Any], message: str) -> None:
    binding = PARKING.bindings.coap
    assert binding is not None
    with pytest.raises(CoapConfigError, match=message):
        CoapDriver("127.0.0.1", 5683, binding, PARKING, **kw)


def test_simulator_ticks_and_rejects_bad_setup() -> None:
    async def body() -> None:
        async with rig() as (sim, _driver, sink):
            await sink.next()
            before = {name: sim.value(name) for name in ("temperature", "health:rssi")}
            for _ in range(20):
                await sim.tick()
            after = {name: sim.value(name) for name in before}
            assert after != before
            with pytest.raises(CoapConfigError, match=r"code '4\.18'"):
                sim.fail("/env", "4.18")
            with pytest.raises(CoapValueError):
                sim.set_value("confidence", 7)

    run(body())
    no_binding = load_model_text('model: a.b/c\nversion: "1.0.0"\n', "c.yaml")
    with pytest.raises(CoapConfigError, match="has no coap binding"):
        CoapSimulator(no_binding)
