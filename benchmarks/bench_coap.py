"""Benchmark: CoAP observe notifications per second through the driver, against raw aiocoap.

Takes the example parking-space sensor (``examples/models/parking-space-sensor.yaml``: an
observed CBOR resource ``/occupancy`` with three points, a polled JSON resource ``/health``
with six), serves it with the simulator (an aiocoap server on 127.0.0.1, in this process) and
measures, in one run and one event loop:

* ``notifications_per_s``: Observe notifications through :class:`CoapDriver` (CBOR decoded,
  three points mapped to typed readings, an ``Update`` to the sink), one at a time: each
  notification received triggers the next change on the server (no loss, no queueing);
* ``aiocoap_notifications_per_s``: the same exchange with a raw aiocoap client
  (``async for`` over the observation, ``cbor2.loads`` of the payload);
* ``gets_per_s`` / ``aiocoap_gets_per_s``: sequential GETs of ``/health`` through
  ``read_points`` (JSON decoded, six points mapped) and through raw aiocoap (``json.loads``).

Server and client share the process, so both sides of each ratio pay the same server cost.
Prints one JSON line. Run: ``.venv/bin/python benchmarks/bench_coap.py [--seconds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiocoap
import cbor2
from benchlib import machine

from protocol_adapters.base import Update
from protocol_adapters.coap.driver import CoapDriver, SharedClient
from protocol_adapters.coap.simulator import CoapSimulator
from thing_models import load_model_file
from thing_models.composition import FolderModelSource, flatten
from thing_models.messages import Quality
from thing_models.model import CoapBinding, CoapMode

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"
HEALTH = frozenset(
    {
        "health:battery_level",
        "health:battery_voltage",
        "health:rssi",
        "health:snr",
        "health:uptime",
        "health:firmware_version",
    }
)


async def _timed(step: Callable[[], Awaitable[None]], seconds: float) -> float:
    """Run ``step`` until ``seconds`` passed; the rate of steps per second."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        await step()
        count += 1
    return count / (time.perf_counter() - start)


async def _observe_rate(
    sim: CoapSimulator, seconds: float, subscribe: Callable[[Callable[[], None]], Awaitable[Any]]
) -> tuple[float, int]:
    """Ping-pong: each notification received sets the next value on the server. Observe is
    lossy (RFC 7641: a client may see only the latest state), so a watchdog sets a new value
    when nothing arrived for 50 ms; returns the rate and how often the watchdog had to."""
    done = asyncio.Event()
    count = 0
    seen = 0
    deadline = 0.0

    def received() -> None:
        nonlocal count
        count += 1
        if time.perf_counter() >= deadline:
            done.set()
        else:
            sim.set_value("confidence", (count % 100) / 100)

    async def watchdog() -> int:
        stalls = 0
        last = -1
        while not done.is_set():
            await asyncio.sleep(0.05)
            if count == last and not done.is_set():
                stalls += 1
                sim.set_value("confidence", (stalls % 100) / 100 + 0.001)
            last = count
        return stalls

    waiter = await subscribe(received)  # returns once the observation is registered
    start = time.perf_counter()
    deadline = start + seconds
    count = seen
    kicker = asyncio.create_task(watchdog())
    sim.set_value("confidence", 0.5)
    await done.wait()
    rate = count / (time.perf_counter() - start)
    stalls = await kicker
    if isinstance(waiter, asyncio.Task):
        waiter.cancel()
    return rate, stalls


async def _measure(seconds: float) -> dict[str, Any]:
    model = flatten(
        load_model_file(MODELS / "parking-space-sensor.yaml"), FolderModelSource(MODELS)
    )
    assert model.bindings.coap is not None
    sim = CoapSimulator(model, seed=1)
    port = await sim.start()
    base = f"coap://127.0.0.1:{port}"
    # One client context for the driver and the raw client, as in the agent: it outlives the
    # driver's observation, so the server's next notification for it is answered with a
    # reset (a context shut down at once would leave the server an ICMP error instead).
    client = SharedClient()
    context = await client.acquire()
    driver = CoapDriver("127.0.0.1", port, model.bindings.coap, model, client=client, timeout_s=5)
    try:
        # ---------------------------------------------------------- observe, driver
        bad: list[Update] = []

        async def via_driver(received: Callable[[], None]) -> None:
            first = asyncio.Event()

            def sink(update: Update) -> None:
                if any(r.quality is not Quality.GOOD for r in update.readings.values()):
                    bad.append(update)
                if not first.is_set():
                    first.set()
                    return
                received()

            driver.set_sink(sink)
            await driver.connect()
            await first.wait()

        ours_obs, ours_stalls = await _observe_rate(sim, seconds, via_driver)
        await driver.close()
        driver.set_sink(None)
        assert not bad, bad[:1]

        # ---------------------------------------------------------- observe, raw aiocoap
        async def via_aiocoap(received: Callable[[], None]) -> asyncio.Task[None]:
            message = aiocoap.Message(code=aiocoap.GET, uri=base + "/occupancy", observe=0)
            request = context.request(message)
            cbor2.loads((await request.response).payload)

            async def loop() -> None:
                try:
                    async for notification in request.observation:
                        cbor2.loads(notification.payload)
                        received()
                finally:
                    request.observation.cancel()

            return asyncio.create_task(loop())

        raw_obs, raw_stalls = await _observe_rate(sim, seconds, via_aiocoap)

        # ---------------------------------------------------------- GET
        polled = CoapBinding(
            tuple(p for p in model.bindings.coap.points if p.mode is CoapMode.POLL)
        )
        driver = CoapDriver("127.0.0.1", port, polled, model, client=client, timeout_s=5)
        await driver.connect()

        async def driver_get() -> None:
            readings = await driver.read_points(HEALTH)
            assert readings["health:rssi"].quality is Quality.GOOD

        async def raw_get() -> None:
            message = aiocoap.Message(code=aiocoap.GET, uri=base + "/health")
            response = await context.request(message).response
            json.loads(response.payload)

        ours_get = await _timed(driver_get, seconds)
        raw_get_rate = await _timed(raw_get, seconds)
    finally:
        await driver.close()
        await client.release()
        await sim.stop()
    return {
        "notifications_per_s": round(ours_obs),
        "aiocoap_notifications_per_s": round(raw_obs),
        "notifications_ratio": round(ours_obs / raw_obs, 3),
        "lost_notifications": {"driver": ours_stalls, "aiocoap": raw_stalls},
        "gets_per_s": round(ours_get),
        "aiocoap_gets_per_s": round(raw_get_rate),
        "gets_ratio": round(ours_get / raw_get_rate, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args(argv)
    figures = asyncio.run(_measure(args.seconds))
    result = {
        "benchmark": "coap",
        **figures,
        "observed_points_per_notification": 3,
        "points_per_get": len(HEALTH),
        "server": "protocol_adapters.coap.simulator in the same process and event loop",
        "aiocoap": aiocoap.meta.version,
        "python": sys.version.split()[0] + " " + platform.python_implementation(),
        "machine": machine(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
