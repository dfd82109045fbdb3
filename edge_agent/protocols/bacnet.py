"""BACnet/IP in the edge agent: connection settings, the driver factory, ``edge-agent simulate
bacnet`` and ``edge-agent discover bacnet``.

A device's ``connection:`` mapping::

    connection:
      address: 10.0.0.7:47808        # the device (host:port; port defaults to 47808)
      device_instance: 1001          # default: the binding's device_instance
      local_address: 10.0.0.2/24:47808   # our BACnet/IP port, shared by every device using it
      bbmd: 10.0.0.1:47808           # optional: register as a foreign device with this BBMD
      bbmd_ttl: 5m                   # foreign-device registration lifetime (default 5m)
      timeout: 3s                    # APDU timeout (stack-wide: the first device's wins)
      retries: 0                     # APDU retries (stack-wide)
      read_property_multiple: true   # false: always ReadProperty (auto-fallback anyway)
      rpm_batch: 20                  # points per ReadPropertyMultiple
      cov_lifetime: 5m               # COV subscription lifetime (renewed at 3/4)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from edge_agent.config import DeviceConfig, ProtocolConnection
from protocol_adapters.bacnet.driver import BacnetDriver
from protocol_adapters.bacnet.errors import BacnetConfigError, BacnetError
from protocol_adapters.bacnet.stack import BacnetStack, parse_address
from protocol_adapters.base import DeviceDriver
from thing_models.document_reader import DocumentReader
from thing_models.model import ThingModel
from thing_models.yaml_source import Path

__all__ = [
    "BacnetConnection",
    "add_discover_command",
    "add_simulate_command",
    "discover",
    "make_driver",
    "parse_connection",
    "simulate",
]

_KEYS = (
    "address",
    "device_instance",
    "local_address",
    "bbmd",
    "bbmd_ttl",
    "timeout",
    "retries",
    "read_property_multiple",
    "rpm_batch",
    "cov_lifetime",
)
DEFAULT_PORT = 47808


@dataclass(frozen=True, slots=True)
class BacnetConnection(ProtocolConnection):
    address: str
    device_instance: int | None = None
    local_address: str = f"0.0.0.0:{DEFAULT_PORT}"
    bbmd: str | None = None
    bbmd_ttl_s: float = 300.0
    timeout_s: float = 3.0
    retries: int = 0
    read_property_multiple: bool = True
    rpm_batch: int = 20
    cov_lifetime_s: float = 300.0


def _with_port(text: str) -> str:
    host_part = text.rsplit("/", 1)[-1]
    return text if ":" in host_part else f"{text}:{DEFAULT_PORT}"


def _address(r: DocumentReader, obj: Mapping[Any, Any], key: str, path: Path) -> str | None:
    expected = "a BACnet/IP address host[/prefix][:port]"
    text = r.string(obj, key, path, expected=expected)
    if not text:
        if obj.get(key) == "":
            r.error((*path, key), f"{key} must not be empty", "", expected)
        return None
    text = _with_port(text)
    try:
        parse_address(text, key)
    except BacnetConfigError:
        r.error((*path, key), f"{key}: {obj[key]!r} is not a BACnet/IP address", obj[key], expected)
        return None
    return text


def parse_connection(
    r: DocumentReader, obj: Mapping[Any, Any], path: Path
) -> BacnetConnection | None:
    """The ``connection:`` mapping of a BACnet device; problems go to ``r`` with locations."""
    r.check_keys(obj, path, _KEYS, required=("address",))
    address = _address(r, obj, "address", path)
    local = _address(r, obj, "local_address", path) if "local_address" in obj else None
    bbmd = _address(r, obj, "bbmd", path) if "bbmd" in obj else None
    instance = r.integer(obj, "device_instance", path, None, minimum=0, maximum=4194302)
    ttl = r.duration(obj, "bbmd_ttl", path, 300.0)
    timeout = r.duration(obj, "timeout", path, 3.0)
    retries = r.integer(obj, "retries", path, 0, minimum=0, maximum=10)
    rpm = r.boolean(obj, "read_property_multiple", path, True)
    batch = r.integer(obj, "rpm_batch", path, 20, minimum=1, maximum=200)
    lifetime = r.duration(obj, "cov_lifetime", path, 300.0)
    if lifetime is not None and lifetime < 4:
        r.error((*path, "cov_lifetime"), "cov_lifetime is too short", obj["cov_lifetime"], ">= 4s")
        lifetime = None
    if (
        address is None
        or ("local_address" in obj and local is None)
        or ("bbmd" in obj and bbmd is None)
        or None in (ttl, timeout, retries, batch, lifetime)
    ):
        return None
    return BacnetConnection(
        address=address,
        device_instance=instance,
        local_address=local or f"0.0.0.0:{DEFAULT_PORT}",
        bbmd=bbmd,
        bbmd_ttl_s=ttl or 300.0,
        timeout_s=timeout or 3.0,
        retries=retries or 0,
        read_property_multiple=rpm,
        rpm_batch=batch or 20,
        cov_lifetime_s=lifetime or 300.0,
    )


def make_driver(
    device: DeviceConfig, model: ThingModel, shared: dict[object, object]
) -> DeviceDriver:
    """The device's driver, on the stack shared by every device with its local address."""
    conn = device.connection
    if not isinstance(conn, BacnetConnection):
        raise BacnetConfigError(f"{device.id}: not a BACnet connection")
    binding = device.bindings().bacnet
    if binding is None:
        raise BacnetConfigError(f"{device.id}: model {model.name} has no BACnet binding")
    key = ("bacnet-stack", conn.local_address, conn.bbmd)
    stack = shared.get(key)
    if not isinstance(stack, BacnetStack):
        stack = BacnetStack(
            conn.local_address,
            timeout_s=conn.timeout_s,
            retries=conn.retries,
            bbmd=conn.bbmd,
            ttl_s=int(conn.bbmd_ttl_s),
        )
        shared[key] = stack
    return BacnetDriver(
        conn.address,
        binding,
        model,
        stack=stack,
        device_instance=conn.device_instance,
        rpm_batch=conn.rpm_batch,
        use_rpm=conn.read_property_multiple,
        cov_lifetime_s=int(conn.cov_lifetime_s),
    )


# --------------------------------------------------------------------------- simulate


def add_simulate_command(protocols: argparse._SubParsersAction[Any]) -> None:
    from protocol_adapters.bacnet.simulator import add_arguments

    parser = protocols.add_parser(
        "bacnet",
        help="a BACnet/IP device following the model's bacnet binding",
        description="Serve a BACnet/IP device whose objects follow the model's binding: inputs "
        "change, outputs and values are commandable (priority array), COV is supported. Runs "
        "until Ctrl-C or SIGTERM.",
    )
    parser.add_argument("--model", type=FsPath, required=True, help="model file (YAML)")
    add_arguments(parser)


async def simulate(model: ThingModel, args: argparse.Namespace) -> int:
    from protocol_adapters.bacnet.simulator import serve

    try:
        return await serve(model, args)
    except (BacnetError, OSError) as exc:
        print(f"edge-agent simulate bacnet: {exc}", file=sys.stderr)
        return 1


# --------------------------------------------------------------------------- discover


def add_discover_command(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "bacnet",
        help="Who-Is for BACnet/IP devices and draft a model of each",
        description="Send Who-Is (to the subnet, or to --address), read the object list and "
        "names of each device that answers, and write a draft thing model with its BACnet "
        "binding (one file per device when several answer: NAME-INSTANCE.yaml).",
    )
    parser.add_argument("--range", help="device instances LOW-HIGH (default: all)")
    parser.add_argument("--address", help="ask one device at host:port instead of broadcasting")
    parser.add_argument(
        "--local-address",
        default=f"0.0.0.0:{DEFAULT_PORT}",
        help="our BACnet/IP address host[/prefix]:port; a broadcast needs the /prefix "
        "(default 0.0.0.0:47808, enough with --address)",
    )
    parser.add_argument("--bbmd", help="register as a foreign device with this BBMD first")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for I-Am")
    parser.add_argument("-o", "--output", type=FsPath, help="model file to write")


def _range(text: str | None) -> tuple[int | None, int | None]:
    if text is None:
        return None, None
    low, sep, high = text.partition("-")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise BacnetConfigError(f"--range {text!r}: expected LOW-HIGH, e.g. 1000-1999")
    return int(low), int(high)


async def discover(args: argparse.Namespace) -> int:
    """``edge-agent discover bacnet``: 0 with at least one device found, 1 with none, 2 on
    bad arguments."""
    from protocol_adapters.bacnet.discovery import discover as who_is
    from protocol_adapters.bacnet.mapping import draft_model
    from thing_models.yaml_format import dump_model_yaml

    try:
        low, high = _range(args.range)
        if args.address is None and "/" not in args.local_address:
            raise BacnetConfigError(
                "a broadcast Who-Is needs the subnet: give --local-address ADDR/PREFIX:PORT "
                "(e.g. 192.168.1.10/24:47808), or ask one device with --address"
            )
        stack = BacnetStack(
            _with_port(args.local_address),
            timeout_s=max(args.timeout, 0.1),
            bbmd=_with_port(args.bbmd) if args.bbmd else None,
        )
        address = _with_port(args.address) if args.address else None
        devices = await who_is(stack, low=low, high=high, address=address, timeout_s=args.timeout)
    except BacnetConfigError as exc:
        print(f"edge-agent discover bacnet: {exc}", file=sys.stderr)
        return 2
    except BacnetError as exc:
        print(f"edge-agent discover bacnet: {exc}", file=sys.stderr)
        return 1
    if not devices:
        print("edge-agent discover bacnet: no device answered", file=sys.stderr)
        return 1
    for device in devices:
        text = dump_model_yaml(draft_model(device))
        print(
            f"device {device.instance} at {device.address}: {device.name or '?'} "
            f"({len(device.objects)} objects)"
        )
        if args.output is None:
            sys.stdout.write(text)
            continue
        target = args.output
        if len(devices) > 1:
            target = target.with_name(f"{target.stem}-{device.instance}{target.suffix}")
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target}")
    return 0
