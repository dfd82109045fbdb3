"""Benchmark: BACnet point values read per second, ReadPropertyMultiple against ReadProperty.

Starts the BACnet simulator of the example air-handling unit (``examples/models/
air-handling-unit.yaml``: 27 points on 26 objects) in its own process on 127.0.0.1 and reads
every point repeatedly, in one process:

* ``rpm_values_per_s``: :class:`BacnetDriver` ``read_points`` with ReadPropertyMultiple
  (batches of ``--batch`` points, each present-value with its object's status-flags, mapped to
  thing-model values with quality);
* ``rp_values_per_s``: the same driver forced to ReadProperty (present-value and status-flags
  per point, ``--in-flight`` requests at a time);
* ``raw_rpm_values_per_s`` / ``raw_rp_values_per_s``: bacpypes3's ``read_property_multiple`` /
  ``read_property`` issuing the same requests with no mapping (the library's own rate);
* ``rpm_ratio`` / ``rp_ratio``: ours / raw (1.0 = no adapter overhead) and ``rpm_speedup``:
  ReadPropertyMultiple over ReadProperty through the driver.

Prints one JSON line. Run: ``.venv/bin/python benchmarks/bench_bacnet.py [--seconds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bacpypes3.primitivedata import ObjectIdentifier
from benchlib import machine

from protocol_adapters.bacnet.driver import BacnetDriver
from protocol_adapters.bacnet.simulator import spawn, stop
from protocol_adapters.bacnet.stack import BacnetStack, parse_address
from thing_models import load_model_file

MODEL = Path(__file__).resolve().parents[1] / "examples" / "models" / "air-handling-unit.yaml"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def rate(step: Callable[[], Awaitable[int]], seconds: float) -> float:
    """Values per second of ``step`` (returns how many values it read), after a warm-up."""
    await step()
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        done += await step()
    return done / elapsed


async def measure(address: str, args: argparse.Namespace) -> dict[str, Any]:
    model = load_model_file(MODEL)
    binding = model.bindings.bacnet
    assert binding is not None
    from dataclasses import replace

    binding = replace(binding, use_cov=False)
    stack = BacnetStack(f"127.0.0.1:{free_udp_port()}", timeout_s=2.0)
    rpm = BacnetDriver(
        address, binding, model, stack=stack, device_instance=1001, rpm_batch=args.batch
    )
    rp = BacnetDriver(
        address,
        binding,
        model,
        stack=stack,
        device_instance=1001,
        use_rpm=False,
        max_in_flight=args.in_flight,
    )
    await rpm.connect()
    await rp.connect()
    names = rpm.pollable
    n = len(names)
    readings = await rpm.read_points(names)
    assert all(r.value is not None for r in readings.values()), readings

    async def ours_rpm() -> int:
        await rpm.read_points(names)
        return n

    async def ours_rp() -> int:
        await rp.read_points(names)
        return n

    app = stack.app
    target = parse_address(address)
    objects: dict[str, list[str]] = {}
    for point in rpm.points:
        refs = objects.setdefault(str(point.object_id), [])
        refs.append(point.property_id)
        if point.property_id == "present-value" and "status-flags" not in refs:
            refs.append("status-flags")
    pairs = [(oid, prop) for oid, props in objects.items() for prop in props]
    batches: list[list[Any]] = []
    current: list[Any] = []
    count = 0
    for point in rpm.points:  # the driver's batching: rpm_batch points per request
        oid = str(point.object_id)
        if count == args.batch:
            batches.append(current)
            current, count = [], 0
        props = [point.property_id] + (
            ["status-flags"] if point.property_id == "present-value" else []
        )
        current += [ObjectIdentifier(oid), props]
        count += 1
    batches.append(current)

    async def raw_rpm() -> int:
        for params in batches:
            await app.read_property_multiple(target, params)
        return n

    limit = asyncio.Semaphore(args.in_flight)

    async def one(oid: str, prop: str) -> None:
        async with limit:
            await app.read_property(target, ObjectIdentifier(oid), prop)

    async def raw_rp() -> int:
        await asyncio.gather(*(one(oid, prop) for oid, prop in pairs))
        return n

    result = {
        "rpm_values_per_s": await rate(ours_rpm, args.seconds),
        "raw_rpm_values_per_s": await rate(raw_rpm, args.seconds),
        "rp_values_per_s": await rate(ours_rp, args.seconds),
        "raw_rp_values_per_s": await rate(raw_rp, args.seconds),
    }
    await rpm.close()
    await rp.close()
    result["points"] = n
    result["rp_requests_per_pass"] = len(pairs)
    result["rpm_requests_per_pass"] = len(batches)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--batch", type=int, default=20, help="points per ReadPropertyMultiple")
    parser.add_argument("--in-flight", type=int, default=4, help="concurrent ReadProperty")
    args = parser.parse_args(argv)
    address = f"127.0.0.1:{free_udp_port()}"
    proc = spawn(MODEL, address, 1001, "--interval", "3600")
    try:
        figures = asyncio.run(measure(address, args))
    finally:
        stop(proc)
    result: dict[str, Any] = {"benchmark": "bacnet_read"}
    result.update({k: round(v) if isinstance(v, float) else v for k, v in figures.items()})
    result["rpm_ratio"] = round(figures["rpm_values_per_s"] / figures["raw_rpm_values_per_s"], 3)
    result["rp_ratio"] = round(figures["rp_values_per_s"] / figures["raw_rp_values_per_s"], 3)
    result["rpm_speedup"] = round(figures["rpm_values_per_s"] / figures["rp_values_per_s"], 1)
    result["batch"] = args.batch
    result["in_flight"] = args.in_flight
    result["python"] = sys.version.split()[0] + " " + platform.python_implementation()
    result["machine"] = machine()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
