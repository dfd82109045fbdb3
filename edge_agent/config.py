"""The edge agent's configuration file (``edge-agent run --config edge.yaml``).

The file names the registry the agent connects to, the edge's identity, where it keeps its
outbox, its ``security`` section (:class:`SecurityConfig`: the identity folder that
``edge-agent enroll`` fills and the mTLS credentials come from, outbox encryption), the local
MQTT stream (``local_mqtt``: :class:`LocalMqttConfig`), the folder of model files, and the
devices it talks to (id, model reference, protocol, connection, an optional per-device bindings
override, poll and reconnect settings).

:func:`load_edge_config` reads it with :func:`thing_models.yaml_source.parse_yaml` (same dialect
and hostile-input limits as model files) and a
:class:`~thing_models.document_reader.DocumentReader`, so every problem is reported at once,
each with ``file:line:column``, the offending value, what was expected and, for unknown keys or
names, a "did you mean". Cross-checks (duplicate device ids,
model references not found in ``models_dir``, a model without a binding for the device's protocol,
two devices answering at the same address) run after the shapes are read.

Relative paths (``models_dir``, the outbox, the admin socket, certificates; not serial ports)
are resolved against the folder of the configuration file.

A device's ``bindings`` (its *device profile*) is read by
:func:`thing_models.bindings_format.parse_bindings`; each protocol section it has replaces the
model's section for that protocol as a whole, and its ``reporting`` replaces the model's when
given.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path as FsPath
from typing import Any

from thing_models.bindings_format import parse_bindings
from thing_models.composition import FolderModelSource, flatten
from thing_models.document_reader import DocumentReader
from thing_models.errors import (
    Diagnostic,
    HostileInputError,
    ModelLoadError,
    SourceLocation,
    UnresolvedReferenceError,
)
from thing_models.model import Bindings, ModelRef, Reporting, ThingModel
from thing_models.yaml_source import Limits, Path, parse_yaml

__all__ = [
    "Backoff",
    "DeviceConfig",
    "EdgeConfig",
    "LocalMqttConfig",
    "ModbusFramer",
    "ModbusSerialConnection",
    "ModbusTcpConnection",
    "Parity",
    "Protocol",
    "ProtocolConnection",
    "RegistryConfig",
    "SecurityConfig",
    "StorageConfig",
    "load_edge_config",
]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?\Z"
)
_SIZE_RE = re.compile(r"^\s*([0-9]+)\s*(B|kB|KB|KiB|MB|MiB|GB|GiB)?\s*\Z")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "kB": 1000,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}
BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)

_TOP_KEYS = (
    "edge_id",
    "registry",
    "storage",
    "models_dir",
    "admin_socket",
    "metrics",
    "security",
    "local_mqtt",
    "devices",
)
_REGISTRY_KEYS = ("address", "insecure", "ca", "cert", "key")
_STORAGE_KEYS = ("outbox", "max_bytes", "max_age")
_SECURITY_KEYS = ("identity_dir", "encrypt_outbox", "key_file")
_LOCAL_MQTT_KEYS = (
    "broker",
    "home_assistant",
    "prefix",
    "discovery_prefix",
    "client_id",
    "username",
    "password",
    "qos",
    "queue",
)
#: topic prefixes: levels without wildcards, not empty, no leading or trailing ``/``
_TOPIC_PREFIX_RE = re.compile(r"^[^/+#\x00\s](?:[^+#\x00\s]{0,126}[^/+#\x00\s])?\Z")
_MQTT_CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}\Z")
_DEVICE_KEYS = ("id", "model", "protocol", "connection", "bindings", "poll_interval", "reconnect")
_TCP_KEYS = ("transport", "host", "port", "unit_id", "framer", "timeout")
_SERIAL_KEYS = (
    "transport",
    "port",
    "baudrate",
    "parity",
    "stopbits",
    "bytesize",
    "unit_id",
    "timeout",
)
_RECONNECT_KEYS = ("min", "max")


class Protocol(StrEnum):
    """Protocols a device can be configured for. Modbus connections are read here; the others
    by ``edge_agent.protocols.<protocol>.parse_connection``."""

    MODBUS = "modbus"
    BACNET = "bacnet"
    MQTT = "mqtt"
    COAP = "coap"


class ModbusFramer(StrEnum):
    SOCKET = "socket"  # Modbus TCP (MBAP header)
    RTU = "rtu"  # RTU frames over TCP (serial-to-Ethernet gateways in transparent mode)


class Parity(StrEnum):
    NONE = "N"
    EVEN = "E"
    ODD = "O"


class _Transport(StrEnum):
    TCP = "tcp"
    SERIAL = "serial"


_PARITY_ALIASES = {"none": Parity.NONE, "even": Parity.EVEN, "odd": Parity.ODD}


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    """The cloud registry: ``host:port``; ``insecure`` means plaintext (development only)."""

    address: str
    insecure: bool = False
    ca: FsPath | None = None
    cert: FsPath | None = None
    key: FsPath | None = None


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """The store-and-forward outbox: its SQLite file and retention bounds."""

    outbox: FsPath
    max_bytes: int = 256 * 1024**2
    max_age_s: float = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """The edge's identity folder (key, certificate, chain, trust roots, command keys, replay
    state: see :mod:`edge_agent.identity_store`) and encryption of the outbox at rest.

    With no ``registry.cert``/``key`` and ``insecure: false`` the agent connects with mTLS using
    the identity folder's credentials (``edge-agent enroll`` fills it). ``encrypt_outbox``
    (default true when a ``security`` section is given) encrypts outbox payloads with AES-GCM,
    the key in ``key_file`` (0600; default ``<identity_dir>/outbox.key``, created on first use).
    """

    identity_dir: FsPath
    encrypt_outbox: bool = False
    key_file: FsPath | None = None

    @property
    def outbox_key_file(self) -> FsPath:
        return self.key_file if self.key_file is not None else self.identity_dir / "outbox.key"


@dataclass(frozen=True, slots=True)
class LocalMqttConfig:
    """The local MQTT stream (:class:`edge_agent.local_publish.LocalPublisher`): every message
    the agent produces, and Home Assistant discovery configs, on a broker of the site."""

    host: str
    port: int = 1883
    home_assistant: bool = True
    prefix: str = "community"
    discovery_prefix: str = "homeassistant"
    client_id: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    qos: int = 0
    queue: int = 10_000


@dataclass(frozen=True, slots=True)
class ModbusTcpConnection:
    host: str
    port: int = 502
    unit_id: int = 1
    framer: ModbusFramer = ModbusFramer.SOCKET
    timeout_s: float = 3.0


@dataclass(frozen=True, slots=True)
class ModbusSerialConnection:
    port: str
    baudrate: int = 9600
    parity: Parity = Parity.NONE
    stopbits: int = 1
    bytesize: int = 8
    unit_id: int = 1
    timeout_s: float = 1.0


@dataclass(frozen=True, slots=True)
class ProtocolConnection:
    """Base of the connection settings of the protocols configured in
    ``edge_agent.protocols.<protocol>`` (BACnet, MQTT, CoAP)."""


Connection = ModbusTcpConnection | ModbusSerialConnection | ProtocolConnection


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: from ``min_s``, doubling up to ``max_s``."""

    min_s: float = 1.0
    max_s: float = 60.0


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    id: str
    model: ModelRef
    protocol: Protocol
    connection: Connection
    bindings_override: Bindings | None = None
    #: Overrides the model's default poll interval when set.
    poll_interval_s: float | None = None
    reconnect: Backoff = Backoff()
    #: The model the reference resolved to, composition flattened.
    thing_model: ThingModel | None = field(default=None, compare=False, repr=False)

    def bindings(self) -> Bindings:
        """The model's bindings with this device's override applied (per protocol section)."""
        base = self.thing_model.bindings if self.thing_model is not None else Bindings()
        return _apply_override(base, self.bindings_override)


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    edge_id: str
    registry: RegistryConfig
    storage: StorageConfig
    models_dir: FsPath
    admin_socket: FsPath
    metrics: str | None = None
    devices: tuple[DeviceConfig, ...] = ()
    source: str = ""
    #: None only for configurations built in code; a loaded file always has one.
    security: SecurityConfig | None = None
    #: the local MQTT stream; None when not configured
    local_mqtt: LocalMqttConfig | None = None


def _apply_override(base: Bindings, override: Bindings | None) -> Bindings:
    if override is None:
        return base
    changes: dict[str, Any] = {
        name: getattr(override, name)
        for name in ("modbus", "bacnet", "mqtt", "coap")
        if getattr(override, name) is not None
    }
    if override.reporting != Reporting():
        changes["reporting"] = override.reporting
    return dataclasses.replace(base, **changes)


# =========================================================================== loading


def load_edge_config(path: str | FsPath, limits: Limits | None = None) -> EdgeConfig:
    """Read and check an edge configuration; raises ModelLoadError listing every problem."""
    file = FsPath(path)
    limits = limits or Limits()
    try:
        size = file.stat().st_size
        if size > limits.max_bytes:
            raise HostileInputError(
                [
                    Diagnostic(
                        SourceLocation(str(file)),
                        f"document is {size} bytes, over the limit of {limits.max_bytes} bytes",
                        expected="a smaller file",
                    )
                ]
            )
        data = file.read_bytes()
    except OSError as exc:
        raise ModelLoadError(
            [Diagnostic(SourceLocation(str(file)), f"cannot read file: {exc.strerror}")]
        ) from exc
    document, smap = parse_yaml(data, str(file), limits)
    reader = DocumentReader(smap)
    config = _ConfigParser(reader, file.parent, limits).parse(document)
    if reader.diagnostics or config is None:
        raise ModelLoadError(
            sorted(reader.diagnostics, key=lambda d: (d.location.line, d.location.column))
        )
    return dataclasses.replace(config, source=str(file))


class _ConfigParser:
    def __init__(self, reader: DocumentReader, base: FsPath, limits: Limits) -> None:
        self.r = reader
        self.base = base
        self.limits = limits
        self.loaded: list[ThingModel] = []

    # ------------------------------------------------------------------ helpers

    def _path(self, obj: Mapping[Any, Any], key: str, path: Path, default: str = "") -> FsPath:
        text = self.r.string(obj, key, path, default)
        if key in obj and obj[key] == "":
            self.r.error((*path, key), f"{key} must not be empty", "", "a path")
        if not text:
            text = default
        return self._resolve(text) if text else FsPath()

    def _resolve(self, text: str) -> FsPath:
        p = FsPath(text).expanduser()
        return p if p.is_absolute() else self.base / p

    def _name(self, obj: Mapping[Any, Any], key: str, path: Path) -> str:
        return self.r.string(
            obj,
            key,
            path,
            pattern=NAME_RE,
            expected="letters, digits, '_', '.', '-' (at most 64, starting with a letter or digit)",
        )

    def _host(self, value: str, path: Path) -> bool:
        if _valid_host(value):
            return True
        self.r.error(path, "invalid host", value, "an IP address or a DNS host name")
        return False

    def _address(self, obj: Mapping[Any, Any], key: str, path: Path) -> str:
        """A ``host:port`` string (``[v6]:port`` for IPv6 addresses)."""
        if key not in obj or obj[key] is None:
            return ""
        value = obj[key]
        where = (*path, key)
        expected = "host:port, e.g. registry.example.org:7443 or [2001:db8::1]:7443"
        if not isinstance(value, str) or ":" not in value:
            self.r.error(where, f"invalid {key}", value, expected)
            return ""
        host, _, port_text = value.rpartition(":")
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not _valid_host(bare) or (bare != host and ":" not in bare):
            self.r.error(where, f"invalid host in {key}", value, expected)
            return ""
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            self.r.error(where, f"invalid port in {key}", value, "a port from 1 to 65535")
            return ""
        return value

    # ------------------------------------------------------------------ document

    def parse(self, document: Any) -> EdgeConfig | None:
        r = self.r
        root = r.mapping(document, (), "a mapping with edge_id, registry, devices, ...")
        if root is None:
            return None
        r.check_keys(root, (), _TOP_KEYS, required=("edge_id", "registry"))
        edge_id = self._name(root, "edge_id", ())
        registry = self._registry(root.get("registry"), ("registry",))
        storage = self._storage(root.get("storage"), ("storage",))
        models_dir = self._path(root, "models_dir", (), "models")
        admin_socket = self._path(root, "admin_socket", (), "edge-agent.sock")
        metrics = self._address(root, "metrics", ()) or None
        security = self._security(root.get("security"), ("security",))
        local_mqtt = self._local_mqtt(root.get("local_mqtt"), ("local_mqtt",))
        models = self._models(models_dir, root)
        devices = r.items(
            root.get("devices"),
            ("devices",),
            lambda item, p: self._device(item, p, models),
            "a list of devices",
        )
        self._cross_checks(devices)
        return EdgeConfig(
            edge_id=edge_id,
            registry=registry or RegistryConfig(""),
            storage=storage,
            models_dir=models_dir,
            admin_socket=admin_socket,
            metrics=metrics,
            devices=devices,
            security=security,
            local_mqtt=local_mqtt,
        )

    def _registry(self, value: Any, path: Path) -> RegistryConfig | None:
        r = self.r
        if value is None:
            return None  # missing or empty: reported by check_keys
        obj = r.mapping(value, path, "a mapping with address, insecure, ca, cert, key")
        if obj is None:
            return None
        r.check_keys(obj, path, _REGISTRY_KEYS, required=("address",))
        address = self._address(obj, "address", path)
        insecure = r.boolean(obj, "insecure", path, False)
        paths = {k: self._path(obj, k, path) if k in obj else None for k in ("ca", "cert", "key")}
        if ("cert" in obj) != ("key" in obj):
            missing = "key" if "cert" in obj else "cert"
            r.error(
                (*path, "cert" if "cert" in obj else "key"),
                f"a client certificate needs both cert and key ({missing} is missing)",
                expected="cert and key together",
                at_key=True,
            )
        if insecure and any(k in obj for k in ("ca", "cert", "key")):
            r.error(
                (*path, "insecure"),
                "insecure (plaintext) contradicts ca/cert/key",
                True,
                "insecure: false, or no certificates",
            )
        return RegistryConfig(address, insecure, paths["ca"], paths["cert"], paths["key"])

    def _security(self, value: Any, path: Path) -> SecurityConfig:
        r = self.r
        default = SecurityConfig(self._resolve("identity"))
        if value is None:
            return default
        obj = r.mapping(value, path, "a mapping with identity_dir, encrypt_outbox, key_file")
        if obj is None:
            return default
        r.check_keys(obj, path, _SECURITY_KEYS)
        return SecurityConfig(
            identity_dir=self._path(obj, "identity_dir", path, "identity"),
            encrypt_outbox=r.boolean(obj, "encrypt_outbox", path, True),
            key_file=self._path(obj, "key_file", path) if "key_file" in obj else None,
        )

    def _local_mqtt(self, value: Any, path: Path) -> LocalMqttConfig | None:
        r = self.r
        if value is None:
            return None
        obj = r.mapping(value, path, "a mapping with broker, home_assistant, prefix, ...")
        if obj is None:
            return None
        r.check_keys(obj, path, _LOCAL_MQTT_KEYS, required=("broker",))
        broker = self._broker(obj, path)
        topic = "topic levels without + # or spaces, not starting or ending with /"
        prefix = r.string(
            obj, "prefix", path, "community", pattern=_TOPIC_PREFIX_RE, expected=topic
        )
        discovery = r.string(
            obj, "discovery_prefix", path, "homeassistant", pattern=_TOPIC_PREFIX_RE, expected=topic
        )
        client_id = r.string(
            obj,
            "client_id",
            path,
            pattern=_MQTT_CLIENT_ID_RE,
            expected="1 to 128 letters, digits, '_', '.', ':', '-'",
        )
        username = r.string(obj, "username", path, max_length=256)
        password = r.string(obj, "password", path, max_length=256)
        if "password" in obj and not username:
            r.error(
                (*path, "password"),
                "a password needs a username (MQTT 3.1.1)",
                expected="username and password together",
                at_key=True,
            )
        qos = r.integer(obj, "qos", path, 0, minimum=0, maximum=2)
        queue = r.integer(obj, "queue", path, 10_000, minimum=1, maximum=10_000_000)
        if broker is None:
            return None
        return LocalMqttConfig(
            host=broker[0],
            port=broker[1],
            home_assistant=r.boolean(obj, "home_assistant", path, True),
            prefix=prefix,
            discovery_prefix=discovery,
            client_id=client_id or None,
            username=username or None,
            password=password or None,
            qos=qos if qos is not None else 0,
            queue=queue or 10_000,
        )

    def _broker(self, obj: Mapping[Any, Any], path: Path) -> tuple[str, int] | None:
        """``broker: host[:port]`` (``[v6]:port``; port 1883 by default)."""
        from edge_agent.protocols.mqtt import parse_host_port  # it imports this module

        expected = "host:port, e.g. 127.0.0.1:1883 or [::1]:1883 (port 1883 by default)"
        text = self.r.string(obj, "broker", path, expected=expected)
        if not text:
            if obj.get("broker") == "":
                self.r.error((*path, "broker"), "broker must not be empty", "", expected)
            return None
        try:
            host, port = parse_host_port(text)
        except ValueError as exc:
            self.r.error((*path, "broker"), f"invalid broker: {exc}", text, expected)
            return None
        if not _valid_host(host):
            self.r.error((*path, "broker"), "invalid host in broker", text, expected)
            return None
        return host, port

    def _storage(self, value: Any, path: Path) -> StorageConfig:
        r = self.r
        default = StorageConfig(self._resolve("outbox.db"))
        if value is None:
            return default
        obj = r.mapping(value, path, "a mapping with outbox, max_bytes, max_age")
        if obj is None:
            return default
        r.check_keys(obj, path, _STORAGE_KEYS)
        max_bytes = default.max_bytes
        if obj.get("max_bytes") is not None:
            parsed = _parse_size(obj["max_bytes"])
            if parsed is None or parsed < 64 * 1024:
                r.error(
                    (*path, "max_bytes"),
                    "invalid max_bytes",
                    obj["max_bytes"],
                    "a size of at least 64KiB: bytes, or a string like 512MiB, 2GB",
                )
            else:
                max_bytes = parsed
        return StorageConfig(
            outbox=self._path(obj, "outbox", path, "outbox.db"),
            max_bytes=max_bytes,
            max_age_s=r.duration(obj, "max_age", path, default.max_age_s) or default.max_age_s,
        )

    def _models(self, models_dir: FsPath, root: Mapping[Any, Any]) -> FolderModelSource | None:
        """The valid models in ``models_dir`` (files that fail to load are left out: ``thing-model
        validate`` reports them); None when the folder cannot be read (reported)."""
        if not models_dir.is_dir():
            self.r.error(
                ("models_dir",),
                "models_dir is not a folder",
                str(models_dir),
                "a folder of model files (relative to the configuration file)",
                at_key="models_dir" not in root,
            )
            return None
        source = FolderModelSource(models_dir, self.limits)
        self.loaded.extend(source.models)
        return source

    # ------------------------------------------------------------------ devices

    def _device(
        self, item: Any, path: Path, models: FolderModelSource | None
    ) -> DeviceConfig | None:
        r = self.r
        obj = r.mapping(item, path, "a device mapping with id, model, protocol, connection")
        if obj is None:
            return None
        r.check_keys(obj, path, _DEVICE_KEYS, required=("id", "model", "protocol", "connection"))
        device_id = self._name(obj, "id", path)
        ref, model = self._model_ref(obj, path, models)
        protocol = (
            r.choice(obj, "protocol", path, Protocol, Protocol.MODBUS)
            if obj.get("protocol") is not None
            else None
        )
        override = (
            parse_bindings(r, obj["bindings"], (*path, "bindings")) if "bindings" in obj else None
        )
        connection = self._connection(obj.get("connection"), (*path, "connection"), model, protocol)
        poll = r.duration(obj, "poll_interval", path)
        reconnect = self._reconnect(obj.get("reconnect"), (*path, "reconnect"))
        if model is not None and protocol is not None:
            bound = _apply_override(model.bindings, override)
            if getattr(bound, protocol.value) is None:
                r.error(
                    (*path, "protocol"),
                    f"model {model.ref} has no {protocol.value} binding and the device has no "
                    "bindings override for it",
                    protocol.value,
                    "one of the model's protocols: " + (", ".join(bound.protocols) or "none"),
                )
        if not device_id or ref is None or protocol is None or connection is None:
            return None
        return DeviceConfig(
            id=device_id,
            model=ref,
            protocol=protocol,
            connection=connection,
            bindings_override=override,
            poll_interval_s=poll,
            reconnect=reconnect,
            thing_model=model,
        )

    def _model_ref(
        self, obj: Mapping[Any, Any], path: Path, models: FolderModelSource | None
    ) -> tuple[ModelRef | None, ThingModel | None]:
        r = self.r
        text = r.string(obj, "model", path, expected="namespace/name@version")
        if not text:
            return None, None
        where = (*path, "model")
        try:
            ref = ModelRef.parse(text)
        except ValueError as exc:
            r.error(where, "invalid model reference", text, str(exc).split("(")[-1].rstrip(")"))
            return None, None
        if models is None:
            return ref, None
        found = models.find(ref)
        if found is None:
            names = sorted({str(m.ref) for m in self.loaded})
            close = difflib.get_close_matches(
                ref.name, sorted({m.name for m in self.loaded}), n=1, cutoff=0.6
            )
            same = [n for n in names if n.startswith(ref.name + "@")]
            hint = (
                f"available versions: {', '.join(same)}"
                if same
                else f"did you mean {close[0]!r}?"
                if close
                else ""
            )
            r.error(
                where,
                f"model {text!r} not found in models_dir",
                text,
                "a model in models_dir (" + (", ".join(names) or "none loaded") + ")",
                hint,
            )
            return ref, None
        try:
            return ref, flatten(found, models)
        except UnresolvedReferenceError as exc:
            r.error(where, f"model {text!r} cannot be resolved: {exc.detail}", exc.reference)
            return ref, None

    def _connection(
        self, value: Any, path: Path, model: ThingModel | None, protocol: Protocol | None
    ) -> Connection | None:
        r = self.r
        if value is None or protocol is None:
            return None  # missing or empty: reported by check_keys; a bad protocol: reported
        obj = r.mapping(value, path, "a connection mapping")
        if obj is None:
            return None
        if protocol is not Protocol.MODBUS:
            module = importlib.import_module(f"edge_agent.protocols.{protocol.value}")
            parsed: ProtocolConnection | None = module.parse_connection(r, obj, path)
            return parsed
        transport = r.choice(obj, "transport", path, _Transport, _Transport.TCP)
        # A binding's unit id is the model's default; the connection's wins.
        binding = model.bindings.modbus if model is not None else None
        default_unit = binding.unit_id if binding is not None else 1
        if transport is _Transport.SERIAL:
            return self._serial(obj, path, default_unit)
        r.check_keys(obj, path, _TCP_KEYS, required=("host",))
        host = r.string(obj, "host", path, expected="an IP address or a DNS host name")
        ok = bool(host) and self._host(host, (*path, "host"))
        port = r.integer(obj, "port", path, 502, minimum=1, maximum=65535)
        unit = r.integer(obj, "unit_id", path, default_unit, minimum=0, maximum=247)
        framer = r.choice(obj, "framer", path, ModbusFramer, ModbusFramer.SOCKET)
        timeout = r.duration(obj, "timeout", path, 3.0)
        if not ok or port is None or unit is None:
            return None
        return ModbusTcpConnection(host, port, unit, framer, timeout or 3.0)

    def _serial(
        self, obj: Mapping[Any, Any], path: Path, default_unit: int
    ) -> ModbusSerialConnection | None:
        r = self.r
        r.check_keys(obj, path, _SERIAL_KEYS, required=("port",))
        port = r.string(obj, "port", path, expected="a serial device path, e.g. /dev/ttyUSB0")
        if obj.get("port") == "":
            r.error((*path, "port"), "port must not be empty", "", "a serial device path")
        baudrate = r.integer(obj, "baudrate", path, 9600, minimum=1)
        if baudrate is not None and baudrate not in BAUDRATES:
            given = baudrate
            close = min(BAUDRATES, key=lambda b: abs(b - given))
            r.error(
                (*path, "baudrate"),
                "unsupported baudrate",
                baudrate,
                "one of " + ", ".join(map(str, BAUDRATES)),
                f"did you mean {close}?",
            )
            baudrate = None
        parity = r.choice(obj, "parity", path, Parity, Parity.NONE, _PARITY_ALIASES)
        stopbits = self._one_of(obj, "stopbits", path, (1, 2), 1)
        bytesize = self._one_of(obj, "bytesize", path, (7, 8), 8)
        # Unit 0 is broadcast on a serial line: nothing answers, so it cannot be polled.
        unit = r.integer(obj, "unit_id", path, max(default_unit, 1), minimum=1, maximum=247)
        timeout = r.duration(obj, "timeout", path, 1.0)
        if not port or baudrate is None or stopbits is None or bytesize is None or unit is None:
            return None
        return ModbusSerialConnection(
            port, baudrate, parity, stopbits, bytesize, unit, timeout or 1.0
        )

    def _one_of(
        self, obj: Mapping[Any, Any], key: str, path: Path, allowed: tuple[int, ...], default: int
    ) -> int | None:
        value = self.r.integer(obj, key, path, default)
        if value is not None and value not in allowed:
            self.r.error(
                (*path, key), f"invalid {key}", value, " or ".join(str(a) for a in allowed)
            )
            return None
        return value

    def _reconnect(self, value: Any, path: Path) -> Backoff:
        r = self.r
        if value is None:
            return Backoff()
        obj = r.mapping(value, path, "a mapping with min and max durations")
        if obj is None:
            return Backoff()
        r.check_keys(obj, path, _RECONNECT_KEYS)
        default = Backoff()
        low = r.duration(obj, "min", path, default.min_s) or default.min_s
        high = r.duration(obj, "max", path, max(default.max_s, low)) or default.max_s
        if high < low:
            r.error(
                (*path, "max"),
                "reconnect max is shorter than min",
                obj.get("max"),
                f"a duration of at least min ({low:g}s)",
            )
            high = low
        return Backoff(low, high)

    # ------------------------------------------------------------------ cross-checks

    def _cross_checks(self, devices: tuple[DeviceConfig, ...]) -> None:
        r = self.r
        kept = r.kept.get(("devices",), [])
        ids: dict[str, int] = {}
        tcp: dict[tuple[str, int, int], int] = {}
        lines: dict[str, tuple[int, ModbusSerialConnection]] = {}
        serial_units: dict[tuple[str, int], int] = {}
        for index, device in zip(kept, devices, strict=True):
            path: Path = ("devices", index)
            conn_path: Path = (*path, "connection")
            if device.id in ids:
                r.error(
                    (*path, "id"),
                    f"duplicate device id {device.id!r}",
                    device.id,
                    "a unique id",
                    f"first used at {self._line(('devices', ids[device.id], 'id'))}",
                )
            else:
                ids[device.id] = index
            conn = device.connection
            if isinstance(conn, ProtocolConnection):
                continue  # checked by its protocol's module
            if isinstance(conn, ModbusTcpConnection):
                key = (conn.host.lower(), conn.port, conn.unit_id)
                if key in tcp:
                    r.error(
                        (*conn_path, "unit_id"),
                        f"another device already uses {conn.host}:{conn.port} unit {conn.unit_id}",
                        conn.unit_id,
                        "a different host, port or unit id",
                        f"see devices[{tcp[key]}] at {self._line(('devices', tcp[key]))}",
                        at_key=True,
                    )
                else:
                    tcp[key] = index
                continue
            first = lines.setdefault(conn.port, (index, conn))
            if first[0] != index:
                for name in ("baudrate", "parity", "stopbits", "bytesize"):
                    if getattr(conn, name) != getattr(first[1], name):
                        r.error(
                            (*conn_path, name),
                            f"serial line {conn.port} has different settings on another device",
                            getattr(conn, name),
                            f"{name} {getattr(first[1], name)} as devices[{first[0]}]",
                            at_key=True,
                        )
            unit_key = (conn.port, conn.unit_id)
            if unit_key in serial_units:
                other = serial_units[unit_key]
                r.error(
                    (*conn_path, "unit_id"),
                    f"another device on serial line {conn.port} already uses unit {conn.unit_id}",
                    conn.unit_id,
                    "a unit id unique on the line",
                    f"see devices[{other}] at {self._line(('devices', other))}",
                    at_key=True,
                )
            else:
                serial_units[unit_key] = index

    def _line(self, path: Path) -> str:
        location = self.r.smap.locate(path)
        return f"line {location.line}"


def _valid_host(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return bool(_HOSTNAME_RE.match(value)) and not value.replace(".", "").isdigit()
    return True


def _parse_size(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            return int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    return None
