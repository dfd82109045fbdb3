"""Silence detection and TLS to the broker, against a real mosquitto on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol_adapters.base import Update, UpdateSink
from protocol_adapters.mqtt.driver import BrokerLink, MqttDriver, format_span
from protocol_adapters.mqtt.errors import MqttConfigError, MqttConnectionError
from protocol_adapters.mqtt.tls import TlsSettings
from tests.mosquitto import Mosquitto, TlsFiles, make_tls_files, running_mosquitto
from tests.protocol_adapters.test_mqtt_driver import DOOR, Collector, _binding
from thing_models.messages import Quality

T = TypeVar("T")
STATE = {"door": {"contact": "closed", "lock": "locked", "held": False}, "mode": "normal"}


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def broker(tmp_path: Path, pki: TlsFiles) -> Iterator[Mosquitto]:
    with running_mosquitto(tmp_path, tls=pki) as running:
        yield running


def _door(
    link: BrokerLink, device_id: str = "door-1", stale: float | None = 0.3, timeout: float = 2.0
) -> MqttDriver:
    return MqttDriver(link, _binding(DOOR), DOOR, device_id, timeout_s=timeout, stale_after_s=stale)


def _state(driver: MqttDriver) -> str:
    return driver.diagnostics.state


async def _publish_state(broker: Mosquitto, *device_ids: str) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as device:
        for device_id in device_ids:
            await device.publish(f"access/{device_id}/state", json.dumps(STATE), qos=1)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.3, "300ms"), (1.5, "1.5s"), (59, "59s"), (300, "5m0s"), (3725, "1h2m5s"), (3600, "1h0m0s")],
)
def test_format_span(seconds: float, text: str) -> None:
    assert format_span(seconds) == text


# --------------------------------------------------------------------------- silence


def test_silent_device_turns_degraded_with_bad_points_then_recovers(broker: Mosquitto) -> None:
    run(_silent_device(broker))


async def _silent_device(broker: Mosquitto) -> None:
    link = BrokerLink(broker.host, broker.port)
    driver = _door(link)
    quiet = _door(link, "door-2", stale=None)  # no stale_after: never flagged
    sink = Collector()
    driver.set_sink(sink)
    await driver.connect()
    await quiet.connect()
    try:
        await _publish_state(broker, "door-1")
        await sink.wait_for(lambda u: u.readings.get("lock_state") == ("locked", Quality.GOOD, ""))
        assert driver.diagnostics.state == "online"

        started = time.monotonic()
        silent = await sink.wait_for(lambda u: u.readings["lock_state"].value is None)
        waited = time.monotonic() - started
        assert 0.2 <= waited < 1.5
        assert set(silent.readings) == set(driver.points)
        assert "door_contact" in silent.readings
        assert all(
            r == (None, Quality.BAD, "no message for 300ms") for r in silent.readings.values()
        )
        assert driver.silent
        diag = driver.diagnostics
        assert (diag.state, diag.timeouts) == ("degraded", 1)
        assert "MqttTimeoutError" in diag.last_error
        assert "device door-1: no message for 300ms" in diag.last_error
        assert (await driver.read_points(["lock_state"]))["lock_state"].quality is Quality.BAD
        # flagged once, not once per watchdog wake-up
        await asyncio.sleep(0.5)
        assert sum(1 for u in sink.updates if u.readings.get("lock_state", (1,))[0] is None) == 1
        assert driver.diagnostics.timeouts == 1
        assert quiet.diagnostics.state == "online"
        assert not quiet.silent

        sink.updates.clear()
        await _publish_state(broker, "door-1")
        back = await sink.wait_for(lambda u: True)
        assert back.readings["lock_state"] == ("locked", Quality.GOOD, "")
        assert driver.diagnostics.state == "online"
        assert not driver.silent

        # and silent again a stale_after later
        await sink.wait_for(lambda u: u.readings["lock_state"].value is None)
        assert driver.diagnostics.timeouts == 2
    finally:
        await driver.close()
        await quiet.close()


def test_silence_is_not_flagged_while_the_broker_is_down(broker: Mosquitto) -> None:
    run(_broker_down(broker))


async def _broker_down(broker: Mosquitto) -> None:
    link = BrokerLink(broker.host, broker.port, backoff_min_s=0.05, backoff_max_s=0.1)
    driver = _door(link, stale=0.4)
    sink = Collector()
    driver.set_sink(sink)
    await driver.connect()
    try:
        broker.stop()
        await link.wait_disconnected(5)
        await asyncio.sleep(0.6)  # longer than stale_after: a down broker is not silence
        assert _state(driver) == "offline"
        assert not driver.silent
        assert sink.updates == []
        broker.start()
        await link.wait_connected(5)
        assert _state(driver) == "online"
        # a full stale_after from the reconnection, then flagged
        reconnected = time.monotonic()
        await sink.wait_for(lambda u: bool(u.readings))
        assert time.monotonic() - reconnected >= 0.3
        assert driver.diagnostics.state == "degraded"
    finally:
        await driver.close()


def test_one_watchdog_per_link_for_many_devices(broker: Mosquitto) -> None:
    run(_many_devices(broker))


async def _many_devices(broker: Mosquitto) -> None:
    link = BrokerLink(broker.host, broker.port)
    drivers = [_door(link, f"d{i}", stale=0.5) for i in range(200)]
    flagged: list[str] = []

    def sink_of(device_id: str) -> UpdateSink:
        def sink(update: Update) -> None:
            flagged.extend(device_id for r in update.readings.values() if r.reason)

        return sink

    for driver in drivers:
        driver.set_sink(sink_of(driver.device_id))
    started = time.perf_counter()
    await asyncio.gather(*(d.connect() for d in drivers))
    print(f"200 devices attached in {time.perf_counter() - started:.2f} s")
    watchdogs = [t for t in asyncio.all_tasks() if t.get_name().endswith(" silence")]
    assert len(watchdogs) == 1
    try:
        talking = [d.device_id for d in drivers[:100]]  # half of them keep talking
        async with aiomqtt.Client(broker.host, broker.port) as device:
            for _ in range(5):
                for device_id in talking:
                    await device.publish(f"access/{device_id}/state", json.dumps(STATE), qos=0)
                await asyncio.sleep(0.15)
        assert {d.device_id for d in drivers if d.silent} == {f"d{i}" for i in range(100, 200)}
        # each silent device flagged once, with one bad reading per point
        assert sorted(set(flagged)) == sorted(f"d{i}" for i in range(100, 200))
        assert len(flagged) == 100 * len(drivers[0].points)
        started = time.perf_counter()
        for driver in drivers:
            driver._check_silence(asyncio.get_running_loop().time())
        scan_ms = (time.perf_counter() - started) * 1000
        print(f"watchdog scan of {len(drivers)} devices: {scan_ms:.3f} ms")
        assert scan_ms < 50
    finally:
        await asyncio.gather(*(d.close() for d in drivers))


# --------------------------------------------------------------------------- TLS


def test_tls_connects_with_the_ca_and_carries_messages(broker: Mosquitto, pki: TlsFiles) -> None:
    run(_tls_ok(broker, pki))


async def _tls_ok(broker: Mosquitto, pki: TlsFiles) -> None:
    assert broker.tls_port is not None
    link = BrokerLink(broker.host, broker.tls_port, tls=TlsSettings(ca=pki.ca))
    assert link.endpoint == f"mqtts://127.0.0.1:{broker.tls_port}"
    driver = _door(link, stale=None)
    sink = Collector()
    driver.set_sink(sink)
    await driver.connect()
    try:
        assert link.connected
        await _publish_state(broker, "door-1")  # plain listener -> TLS subscriber
        update = await sink.wait_for(lambda u: "lock_state" in u.readings)
        assert update.readings["lock_state"].quality is Quality.GOOD
    finally:
        await driver.close()


def test_tls_with_a_client_certificate(tmp_path: Path, pki: TlsFiles) -> None:
    with running_mosquitto(tmp_path, tls=pki, require_certificate=True) as broker:
        assert broker.tls_port is not None
        port = broker.tls_port

        async def connect(settings: TlsSettings) -> None:
            link = BrokerLink(broker.host, port, tls=settings, backoff_min_s=0.05)
            driver = _door(link, stale=None, timeout=0.5)
            try:
                await driver.connect()
            finally:
                await driver.close()

        run(connect(TlsSettings(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)))
        with pytest.raises(MqttConnectionError, match=f"mqtts://127.0.0.1:{port}: not connected"):
            run(connect(TlsSettings(ca=pki.ca)))


def test_tls_with_a_wrong_ca_fails_naming_the_broker(broker: Mosquitto, tmp_path: Path) -> None:
    other = make_tls_files(tmp_path / "other", "other")
    assert broker.tls_port is not None
    link = BrokerLink(
        broker.host, broker.tls_port, tls=TlsSettings(ca=other.ca), backoff_min_s=0.05
    )
    driver = _door(link, stale=None, timeout=0.5)

    async def connect() -> None:
        try:
            await driver.connect()
        finally:
            await driver.close()

    pattern = (
        rf"mqtts://127\.0\.0\.1:{broker.tls_port}: not connected after 0\.5s: "
        r"TLS handshake failed: broker certificate not trusted \(unable to get local issuer"
    )
    with pytest.raises(MqttConnectionError, match=pattern):
        run(connect())
    assert driver.diagnostics.state == "offline"


def test_tls_insecure_skip_verify_connects_without_a_ca(broker: Mosquitto) -> None:
    assert broker.tls_port is not None
    link = BrokerLink(broker.host, broker.tls_port, tls=TlsSettings(insecure_skip_verify=True))
    driver = _door(link, stale=None)

    async def connect() -> bool:
        try:
            await driver.connect()
            return link.connected
        finally:
            await driver.close()

    assert run(connect())


def test_tls_against_a_plain_listener_fails_cleanly(broker: Mosquitto, pki: TlsFiles) -> None:
    link = BrokerLink(broker.host, broker.port, tls=TlsSettings(ca=pki.ca), backoff_min_s=0.05)
    driver = MqttDriver(link, _binding(DOOR), DOOR, "door-1", timeout_s=0.5)

    async def connect() -> None:
        try:
            await driver.connect()
        finally:
            await driver.close()

    with pytest.raises(MqttConnectionError, match=f"mqtts://127.0.0.1:{broker.port}: not conn"):
        run(connect())


@pytest.mark.parametrize(
    ("content", "which", "why"),
    [
        (None, "ca", "No such file"),
        (b"not a certificate", "ca", "expected PEM certificates"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "ca", "tls ca"),
        (b"\x00\xff" * 100, "cert", "expected a PEM certificate and its unencrypted private key"),
    ],
)
def test_unusable_tls_files_are_config_errors(
    tmp_path: Path, pki: TlsFiles, content: bytes | None, which: str, why: str
) -> None:
    bad = tmp_path / "bad.pem"
    if content is not None:
        bad.write_bytes(content)
    settings = TlsSettings(ca=bad) if which == "ca" else TlsSettings(ca=pki.ca, cert=bad, key=bad)
    with pytest.raises(MqttConfigError, match=r"mqtts://127\.0\.0\.1:8883: tls") as info:
        BrokerLink("127.0.0.1", 8883, tls=settings)
    assert why in str(info.value)
    assert str(bad) in str(info.value)


def test_a_key_that_does_not_match_the_cert(pki: TlsFiles) -> None:
    settings = TlsSettings(ca=pki.ca, cert=pki.client_cert, key=pki.server_key)
    with pytest.raises(MqttConfigError, match=r"KEY_VALUES_MISMATCH|key values mismatch"):
        BrokerLink("127.0.0.1", 8883, tls=settings)
    with pytest.raises(MqttConfigError, match=r"key .* given without a cert"):
        BrokerLink("127.0.0.1", 8883, tls=TlsSettings(key=pki.client_key))


@given(st.floats(min_value=0, max_value=10**7, allow_nan=False))
def test_format_span_fuzz(seconds: float) -> None:
    text = format_span(seconds)
    assert text.endswith("s")
    assert text[0].isdigit()


def test_a_failing_sink_does_not_stop_the_watchdog(broker: Mosquitto) -> None:
    async def scenario() -> None:
        link = BrokerLink(broker.host, broker.port)
        crashing, watched = _door(link, "door-1", stale=0.2), _door(link, "door-2", stale=0.4)

        def boom(update: Update) -> None:
            raise RuntimeError("sink bug")

        crashing.set_sink(boom)
        sink = Collector()
        watched.set_sink(sink)
        await crashing.connect()
        await watched.connect()
        try:
            update = await sink.wait_for(lambda u: bool(u.readings))
            assert update.readings["lock_state"].reason == "no message for 400ms"
            assert crashing.silent
        finally:
            await crashing.close()
            await watched.close()

    run(scenario())
