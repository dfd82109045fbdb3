"""BACnet/IP in the edge agent: connection settings, the driver factory, ``edge-agent simulate
bacnet`` and ``edge-agent discover bacnet [--register]`` (publish the drafts, register the
devices found).

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
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any

from edge_agent.config import DeviceConfig, ProtocolConnection
from edge_agent.errors import AgentCommandError, AgentError
from protocol_adapters.bacnet.driver import BacnetDriver
from protocol_adapters.bacnet.errors import BacnetConfigError, BacnetError
from protocol_adapters.bacnet.mapping import DiscoveredDevice
from protocol_adapters.bacnet.stack import BacnetStack, parse_address
from protocol_adapters.base import DeviceDriver
from thing_models.document_reader import DocumentReader
from thing_models.model import ThingModel
from thing_models.yaml_source import Path

if TYPE_CHECKING:
    import grpc

    from cloud_registry.api.client import AsyncRegistryClient

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
    reg = parser.add_argument_group(
        "registration",
        "With --register, publish each draft model to the registry and register each device "
        "found (id: --id-prefix + the device name, or bacnet-INSTANCE). Already published "
        "drafts and already registered devices with the same model are left as they are.",
    )
    reg.add_argument("--register", action="store_true", help="publish and register what is found")
    reg.add_argument("--registry", metavar="ADDR", help="registry address host:port")
    reg.add_argument("--edge", metavar="EDGE", help="the edge the devices are assigned to")
    reg.add_argument("--site", metavar="SITE", help="the site of the devices")
    reg.add_argument("--id-prefix", default="", metavar="PREFIX", help="device id prefix")
    reg.add_argument("--tls-ca", type=FsPath, metavar="FILE", help="talk TLS, trusting this root")
    reg.add_argument("--client-cert", type=FsPath, metavar="FILE", help="mTLS: certificate chain")
    reg.add_argument("--client-key", type=FsPath, metavar="FILE", help="mTLS: private key")
    reg.add_argument("--api-key", metavar="KEY", help="integrator API key (one-way TLS port)")


def _range(text: str | None) -> tuple[int | None, int | None]:
    if text is None:
        return None, None
    low, sep, high = text.partition("-")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise BacnetConfigError(f"--range {text!r}: expected LOW-HIGH, e.g. 1000-1999")
    return int(low), int(high)


async def discover(args: argparse.Namespace) -> int:
    """``edge-agent discover bacnet``: 0 with at least one device found (and, with
    ``--register``, every draft published and every device registered), 1 with none or on a
    registry failure, 2 on bad arguments."""
    from protocol_adapters.bacnet.discovery import discover as who_is
    from protocol_adapters.bacnet.mapping import draft_model
    from thing_models.yaml_format import dump_model_yaml

    try:
        registration = _registration(args)
    except _UsageError as exc:
        print(f"edge-agent discover bacnet: {exc}", file=sys.stderr)
        return 2
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
    drafts = [(device, draft_model(device)) for device in devices]
    for device, model in drafts:
        text = dump_model_yaml(model)
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
    if registration is not None:
        return await _register(drafts, registration)
    return 0


# --------------------------------------------------------------------------- discover --register

_REGISTER_ONLY = (
    "registry",
    "edge",
    "site",
    "id_prefix",
    "tls_ca",
    "client_cert",
    "client_key",
    "api_key",
)
_MAX_ID = 128  # the registry's limit on ids
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/\[\]-]+")


class _UsageError(AgentError):
    """A bad or missing registration option (exit 2)."""


@dataclass(frozen=True, slots=True)
class _Registration:
    """Where and how ``--register`` talks to the registry, and what it assigns."""

    registry: str
    edge: str
    site: str
    id_prefix: str
    credentials: grpc.ChannelCredentials | None
    metadata: tuple[tuple[str, str], ...]


def _check_id(value: str | None, option: str, *, limit: int = _MAX_ID) -> str:
    if value is None or (not value and limit == _MAX_ID):
        raise _UsageError(f"--register needs {option}")
    if len(value) > limit:
        raise _UsageError(f"{option} {value[:40]!r}...: longer than {limit} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise _UsageError(f"{option} {value!r}: printable characters without whitespace only")
    return value


def _check_target(text: str | None) -> str:
    if not text:
        raise _UsageError("--register needs --registry ADDR (host:port)")
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if (
        not sep
        or not host
        or any(ch.isspace() or ch in "/@" for ch in host)
        or not port.isdigit()
        or not 0 < int(port) < 65536
    ):
        raise _UsageError(f"--registry {text!r}: expected host:port, e.g. 10.0.0.5:50051")
    return text


def _credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    if (args.client_cert is None) != (args.client_key is None):
        raise _UsageError("give --client-cert and --client-key together")
    if args.tls_ca is None:
        if args.client_cert is not None:
            raise _UsageError("--client-cert/--client-key need --tls-ca")
        if args.api_key:
            raise _UsageError("--api-key needs --tls-ca: an API key travels only over TLS")
        return None
    import grpc

    try:
        root = args.tls_ca.read_bytes()
        cert = args.client_cert.read_bytes() if args.client_cert else None
        key = args.client_key.read_bytes() if args.client_key else None
    except OSError as exc:
        raise _UsageError(f"cannot read TLS file {exc.filename}: {exc.strerror}") from exc
    return grpc.ssl_channel_credentials(root, key, cert)


def _registration(args: argparse.Namespace) -> _Registration | None:
    """The ``--register`` settings (None without it); raises :class:`_UsageError`."""
    if not getattr(args, "register", False):
        given = [f"--{k.replace('_', '-')}" for k in _REGISTER_ONLY if getattr(args, k, None)]
        if given:
            raise _UsageError(f"{', '.join(given)}: only with --register")
        return None
    registry = _check_target(args.registry)
    edge = _check_id(args.edge, "--edge")
    site = args.site or ""
    if not site.strip() or len(site) > _MAX_ID or not site.isprintable():
        raise _UsageError("--register needs --site SITE (at most 128 printable characters)")
    prefix = _check_id(args.id_prefix, "--id-prefix", limit=_MAX_ID // 2)
    api_key = args.api_key or ""
    if not all(" " < ch < "\x7f" for ch in api_key):
        raise _UsageError("--api-key: printable ASCII characters without whitespace only")
    metadata = (("x-api-key", api_key),) if api_key else ()
    return _Registration(registry, edge, site, prefix, _credentials(args), metadata)


def _device_id(prefix: str, device: DiscoveredDevice) -> str:
    """``prefix`` + the device's name reduced to ``[a-z0-9_.-]``, or ``bacnet-INSTANCE``."""
    base = _ID_UNSAFE.sub("-", device.name).strip("-.").lower()
    return (prefix + (base or f"bacnet-{device.instance}"))[:_MAX_ID]


def _labels(device: DiscoveredDevice) -> dict[str, str]:
    address = _LABEL_UNSAFE.sub("_", device.address)[:63]
    return {"bacnet_instance": str(device.instance), "bacnet_address": address}


async def _publish(client: AsyncRegistryClient, model: ThingModel, ref: str) -> str:
    """Publish the draft: "published" or "unchanged"; another text under ``ref`` is an error."""
    from cloud_registry.api.errors import AlreadyExists
    from thing_models.yaml_format import dump_model_yaml

    try:
        published = await client.publish_model(dump_model_yaml(model))
    except AlreadyExists as exc:
        raise AgentCommandError(
            f"model {ref} is already published with other content; review it in the "
            "registry, or publish the draft under another version"
        ) from exc
    return "unchanged" if published.unchanged else "published"


async def _register_device(
    client: AsyncRegistryClient, reg: _Registration, dev_id: str, ref: str, labels: dict[str, str]
) -> str:
    """Register the device: "registered", or "exists" when it is, with this model."""
    from cloud_registry.api.errors import AlreadyExists

    try:
        await client.register_device(
            dev_id, model=ref, edge_id=reg.edge, site=reg.site, labels=labels
        )
    except AlreadyExists:
        existing = await client.get_device(dev_id)
        if existing.model != ref:
            raise AgentCommandError(
                f"device {dev_id} is already registered with model {existing.model}, "
                f"not {ref}; remove it or give another --id-prefix"
            ) from None
        return "exists"
    return "registered"


async def _register(drafts: list[tuple[DiscoveredDevice, ThingModel]], reg: _Registration) -> int:
    """Publish each device's draft and register it; print a table. 0, or 1 on any failure."""
    from rich.console import Console
    from rich.table import Table

    from cloud_registry.api.client import AsyncRegistryClient
    from cloud_registry.api.errors import RegistryError, Unavailable

    table = Table(title=f"registered at {reg.registry} (edge {reg.edge}, site {reg.site})")
    for column in ("device", "instance", "model", "draft", "status"):
        table.add_column(column, overflow="fold", no_wrap=column in ("draft", "status"))
    failed = False
    taken: set[str] = set()
    async with AsyncRegistryClient(
        reg.registry, credentials=reg.credentials, metadata=reg.metadata
    ) as client:
        for device, model in drafts:
            dev_id = _device_id(reg.id_prefix, device)
            if dev_id in taken:  # two devices with one name
                dev_id = f"{dev_id[: _MAX_ID - 12]}-{device.instance}"
            taken.add(dev_id)
            ref = f"{model.name}@{model.version}"
            model_status = status = "-"
            try:
                model_status = await _publish(client, model, ref)
                status = await _register_device(client, reg, dev_id, ref, _labels(device))
            except Unavailable as exc:
                print(
                    f"edge-agent discover bacnet: cannot reach the registry at {reg.registry}: "
                    f"{exc.message}",
                    file=sys.stderr,
                )
                return 1
            except (AgentCommandError, RegistryError) as exc:
                failed = True
                status = "error"
                print(f"edge-agent discover bacnet: {dev_id}: {exc}", file=sys.stderr)
            table.add_row(dev_id, str(device.instance), ref, model_status, status)
    Console(highlight=False, soft_wrap=False).print(table)
    return 1 if failed else 0
