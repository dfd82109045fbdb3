"""CoAP devices in the edge agent: their ``connection:`` settings, their driver, the simulator.

::

    devices:
      - id: bay-p2-117
        model: community.parking/space-sensor@1
        protocol: coap
        connection: {host: 10.30.0.17, port: 5683, timeout: 5s, reliable: true}

Connection keys: ``host`` (required: an IP address or a DNS name), ``port`` (default 5683),
``scheme`` (``coap``; DTLS is not supported yet), ``timeout`` (a duration, default 5 s: one
request, and the slack past a notification's Max-Age), ``reliable`` (default true:
confirmable requests; false sends NON), ``reobserve`` (a duration, default 1 s: the pause
before observing again after an observation ended). Every CoAP driver of one agent shares one
aiocoap client context (``shared``).
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path as FsPath
from typing import Any

from edge_agent.config import DeviceConfig, ProtocolConnection
from edge_agent.errors import UnsupportedDevice
from edge_agent.signals import stop_signals
from protocol_adapters.base import DeviceDriver
from thing_models.document_reader import DocumentReader
from thing_models.model import ThingModel
from thing_models.yaml_source import Path

__all__ = [
    "CoapConnection",
    "CoapScheme",
    "add_simulate_command",
    "make_driver",
    "parse_connection",
    "simulate",
]

_KEYS = ("host", "port", "scheme", "timeout", "reliable", "reobserve")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?\Z"
)
_SHARED_KEY = ("coap", "client")


class CoapScheme(StrEnum):
    COAP = "coap"


@dataclass(frozen=True, slots=True)
class CoapConnection(ProtocolConnection):
    """Where a CoAP device listens and how to talk to it."""

    host: str
    port: int = 5683
    scheme: CoapScheme = CoapScheme.COAP
    timeout_s: float = 5.0
    reliable: bool = True
    reobserve_s: float = 1.0


def _valid_host(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return bool(_HOSTNAME_RE.match(value)) and not value.replace(".", "").isdigit()
    return True


def parse_connection(
    r: DocumentReader, obj: Mapping[Any, Any], path: Path
) -> CoapConnection | None:
    """The device's ``connection:`` mapping; problems go to ``r`` (file:line:column)."""
    r.check_keys(obj, path, _KEYS, required=("host",))
    host = r.string(obj, "host", path, expected="an IP address or a DNS host name")
    if host and not _valid_host(host):
        r.error((*path, "host"), "invalid host", host, "an IP address or a DNS host name")
        host = ""
    port = r.integer(obj, "port", path, 5683, minimum=1, maximum=65535)
    scheme = r.choice(obj, "scheme", path, CoapScheme, CoapScheme.COAP)
    timeout = r.duration(obj, "timeout", path, 5.0)
    reliable = r.boolean(obj, "reliable", path, True)
    reobserve = r.duration(obj, "reobserve", path, 1.0)
    if not host or port is None:
        return None
    return CoapConnection(host, port, scheme, timeout or 5.0, reliable, reobserve or 1.0)


def make_driver(
    device: DeviceConfig, model: ThingModel, shared: dict[object, object]
) -> DeviceDriver:
    """The device's :class:`~protocol_adapters.coap.driver.CoapDriver`, on the agent's one
    shared aiocoap client context."""
    from protocol_adapters.coap.driver import CoapDriver, SharedClient
    from protocol_adapters.coap.errors import CoapConfigError

    connection = device.connection
    if not isinstance(connection, CoapConnection):
        raise UnsupportedDevice(f"{device.id}: not a CoAP connection")
    binding = device.bindings().coap
    if binding is None:
        raise UnsupportedDevice(f"model {model.ref} has no coap binding")
    client = shared.get(_SHARED_KEY)
    if not isinstance(client, SharedClient):
        client = shared[_SHARED_KEY] = SharedClient()
    try:
        return CoapDriver(
            connection.host,
            connection.port,
            binding,
            model,
            client=client,
            scheme=connection.scheme.value,
            timeout_s=connection.timeout_s,
            reliable=connection.reliable,
            reobserve_delay_s=connection.reobserve_s,
        )
    except CoapConfigError as exc:
        raise UnsupportedDevice(f"{device.id}: {exc}") from exc


def add_simulate_command(protocols: argparse._SubParsersAction[Any]) -> None:
    """``edge-agent simulate coap --model FILE [--port N] [--host H] [--tick-ms MS]``."""
    coap = protocols.add_parser(
        "coap",
        help="a CoAP device following the model's coap binding",
        description="Serve a CoAP device (UDP) whose resources follow the model's binding with "
        "plausible changing values; observed resources notify their observers, writable "
        "ones take PUT, services answer POST. Runs until Ctrl-C or SIGTERM.",
    )
    coap.add_argument("--model", type=FsPath, required=True, help="model file (YAML)")
    coap.add_argument("--port", type=int, default=5683, help="UDP port (0: any free port)")
    coap.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    coap.add_argument(
        "--tick-ms", type=int, default=1000, help="how often values move (milliseconds)"
    )
    coap.add_argument("--seed", type=int, default=0, help="random seed of the values")


async def simulate(model: ThingModel, args: argparse.Namespace) -> int:
    """Run the simulator until SIGINT/SIGTERM; 1 when it cannot start, 2 for bad arguments."""
    from protocol_adapters.coap.errors import CoapError
    from protocol_adapters.coap.simulator import CoapSimulator

    if model.bindings.coap is None:
        print(f"edge-agent simulate coap: {model.ref} has no coap binding", file=sys.stderr)
        return 1
    if not 0 <= args.port <= 65535 or args.tick_ms <= 0:
        print("edge-agent simulate coap: --port must be 0..65535, --tick-ms > 0", file=sys.stderr)
        return 2
    async with stop_signals() as stop:
        try:
            simulator = CoapSimulator(
                model, port=args.port, host=args.host, seed=args.seed, tick_ms=args.tick_ms
            )
            port = await simulator.start()
        except (OSError, CoapError) as exc:
            print(
                f"edge-agent simulate coap: cannot listen on {args.host}:{args.port}: {exc}",
                file=sys.stderr,
            )
            return 1
        print(f"simulating {model.ref} on coap://{args.host}:{port} (CoAP over UDP)", flush=True)
        await stop.wait()
    await simulator.stop()
    print("stopped", flush=True)
    return 0
