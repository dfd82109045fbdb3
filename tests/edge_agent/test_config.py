"""The edge configuration file: the example loads, and every mistake is reported, located."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import (
    Backoff,
    EdgeConfig,
    LocalMqttConfig,
    ModbusFramer,
    ModbusSerialConnection,
    ModbusTcpConnection,
    Parity,
    SecurityConfig,
    load_edge_config,
)
from thing_models.errors import HostileInputError, ModelLoadError
from thing_models.yaml_source import Limits

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "examples" / "models"

HEAD = f"""\
edge_id: gw1
registry: {{address: "registry.example.org:7443"}}
models_dir: {MODELS}
devices:
"""  # devices start on line 5
METER = "community.energy/meter-3p@1"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def errors(path: Path) -> list[str]:
    with pytest.raises(ModelLoadError) as info:
        load_edge_config(path)
    return [str(d) for d in info.value.diagnostics]


def test_example_loads() -> None:
    config = load_edge_config(REPO / "examples" / "edge" / "edge.yaml")
    assert isinstance(config, EdgeConfig)
    assert config.edge_id == "building-a-gw1"
    assert config.registry.address == "registry.example.org:7443"
    assert config.registry.ca == REPO / "examples" / "edge" / "certs" / "ca.pem"
    assert config.registry.cert is None  # mTLS credentials come from the identity folder
    assert config.security == SecurityConfig(Path("/var/lib/edge-agent/identity"), True)
    assert config.local_mqtt == LocalMqttConfig("127.0.0.1", 1883)
    assert config.storage.max_bytes == 512 * 1024**2
    assert config.storage.max_age_s == 7 * 24 * 3600
    assert config.models_dir.resolve() == MODELS
    assert config.metrics == "127.0.0.1:9108"
    ids = [d.id for d in config.devices]
    assert ids == [
        "meter-main",
        "water-main",
        "water-carpark",
        "charger-p1",
        "ahu-1",
        "door-entrance-a",
        "bay-p1-017",
    ]
    meter, water, carpark, charger, *others = config.devices
    assert [d.protocol.value for d in others] == ["bacnet", "mqtt", "coap"]
    assert meter.connection == ModbusTcpConnection("10.20.0.21", 502, 1, ModbusFramer.SOCKET, 2.0)
    assert isinstance(water.connection, ModbusTcpConnection)
    assert water.connection.framer is ModbusFramer.RTU
    assert water.poll_interval_s == 30.0
    assert carpark.connection == ModbusSerialConnection(
        "/dev/ttyUSB0", 9600, Parity.NONE, 1, 8, 3, 0.5
    )
    assert charger.reconnect == Backoff(2.0, 300.0)
    assert charger.thing_model is not None
    assert charger.thing_model.name == "community.energy/ev-charger"
    # The override replaces the reporting default; the modbus section stays the model's.
    assert charger.bindings().reporting.default.poll_interval_s == 5.0
    assert charger.bindings().modbus == charger.thing_model.bindings.modbus


def test_relative_models_dir_and_defaults(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "meter.yaml").write_bytes((MODELS / "energy-meter-3p.yaml").read_bytes())
    path = write(
        tmp_path,
        "edge_id: gw1\nregistry: {address: 'r:1'}\ndevices:\n"
        f"  - {{id: m, model: '{METER}', protocol: modbus, connection: {{host: m.local}}}}\n",
    )
    config = load_edge_config(path)
    assert config.models_dir == tmp_path / "models"
    assert config.storage.outbox == tmp_path / "outbox.db"
    assert config.admin_socket == tmp_path / "edge-agent.sock"
    # The unit id defaults to the model binding's.
    assert config.devices[0].connection == ModbusTcpConnection("m.local", 502, 1)


def dev(connection: str, extra: str = "", model: str = METER, ident: str = "d1") -> str:
    return (
        f"  - id: {ident}\n    model: {model}\n    protocol: modbus\n"
        f"    connection: {connection}\n{extra}"
    )


TCP = "{host: 10.0.0.1, unit_id: 1}"
SERIAL = "{transport: serial, port: /dev/ttyS0, unit_id: 1}"

BAD = [
    pytest.param(
        HEAD + dev(TCP) + "    colour: red\n", 9, 5, "unknown key 'colour'", id="unknown-key"
    ),
    pytest.param(
        HEAD + dev(TCP) + "    reconect: {min: 1s}\n",
        9,
        5,
        "did you mean 'reconnect'?",
        id="did-you-mean",
    ),
    pytest.param(
        HEAD + dev(TCP) + dev(TCP.replace("1}", "2}")),
        9,
        9,
        "duplicate device id 'd1'",
        id="duplicate-id",
    ),
    pytest.param(
        HEAD + dev(TCP, model="Energy Meter"), 6, 12, "invalid model reference", id="bad-ref"
    ),
    pytest.param(
        HEAD + dev(TCP, model="community.energy/meter-3p@2"),
        6,
        12,
        "available versions: community.energy/meter-3p@1.0.0",
        id="ref-version-not-found",
    ),
    pytest.param(
        HEAD + dev(TCP, model="community.energy/meter3p"),
        6,
        12,
        "did you mean 'community.energy/meter-3p'?",
        id="ref-not-found",
    ),
    pytest.param(
        HEAD + dev("{host: 10.0.0.1, port: 70000}"), 8, 40, "port out of range", id="port"
    ),
    pytest.param(HEAD + dev("{host: 'bad host!'}"), 8, 24, "invalid host", id="host"),
    pytest.param(
        HEAD + dev("{host: 10.0.0.1, unit_id: 248}"), 8, 43, "unit_id out of range", id="unit-id"
    ),
    pytest.param(
        HEAD + dev("{host: 10.0.0.1, framer: ascii}"), 8, 42, "invalid framer", id="framer"
    ),
    pytest.param(
        HEAD + dev("{transport: serial, port: /dev/ttyS0, baudrate: 9601}"),
        8,
        65,
        "did you mean 9600?",
        id="baudrate",
    ),
    pytest.param(
        HEAD + dev("{transport: serial, port: /dev/ttyS0, parity: X}"),
        8,
        63,
        "invalid parity",
        id="parity",
    ),
    pytest.param(
        HEAD + dev("{transport: serial, port: /dev/ttyS0, stopbits: 3}"),
        8,
        65,
        "invalid stopbits",
        id="stopbits",
    ),
    pytest.param(
        HEAD + dev("{transport: serial, port: /dev/ttyS0, unit_id: 0}"),
        8,
        64,
        "unit_id out of range",
        id="serial-unit-0",
    ),
    pytest.param(
        HEAD + dev("{transport: serial, host: x}"),
        8,
        17,
        "missing required key 'port'",
        id="serial-no-port",
    ),
    pytest.param(
        HEAD + dev(SERIAL) + dev(SERIAL, ident="d2"),
        12,
        55,
        "already uses unit 1",
        id="serial-same-unit",
    ),
    pytest.param(
        HEAD
        + dev(SERIAL)
        + dev(SERIAL.replace("unit_id: 1", "unit_id: 2, baudrate: 19200"), ident="d2"),
        12,
        67,
        "different settings",
        id="serial-line-settings",
    ),
    pytest.param(
        HEAD + dev(TCP) + dev(TCP, ident="d2"),
        12,
        34,
        "already uses 10.0.0.1:502 unit 1",
        id="tcp-same-address",
    ),
    pytest.param(
        HEAD + dev(TCP, model="community.safety/smoke-detector@1"),
        7,
        15,
        "has no modbus binding",
        id="no-binding",
    ),
    pytest.param(
        HEAD + dev(TCP) + "    bindings: {modbus: {points: [{property: x}]}}\n",
        9,
        34,
        "missing required key 'table'",
        id="override-located",
    ),
    pytest.param(
        HEAD + dev(TCP) + "    reconnect: {min: 10s, max: 1s}\n",
        9,
        32,
        "reconnect max is shorter than min",
        id="backoff",
    ),
    pytest.param(
        HEAD + dev(TCP) + "    poll_interval: soon\n", 9, 20, "invalid duration", id="poll"
    ),
    pytest.param(
        HEAD + dev("{host: 10.0.0.1, timeout: -1s}"),
        8,
        43,
        "invalid duration for timeout",
        id="timeout",
    ),
    pytest.param(HEAD.replace("7443", "0"), 2, 21, "invalid port in address", id="registry-port"),
    pytest.param(HEAD + "storage: {max_bytes: lots}\n", 5, 22, "invalid max_bytes", id="max-bytes"),
    pytest.param(
        HEAD.replace(str(MODELS), "/nonexistent/models"),
        3,
        13,
        "models_dir is not a folder",
        id="models-dir",
    ),
    pytest.param(
        "registry: {address: 'r:1'}\n", 1, 1, "missing required key 'edge_id'", id="no-edge-id"
    ),
    pytest.param(
        HEAD + dev(TCP) + "    protocol: bacnet\n",
        9,
        5,
        "duplicate key 'protocol'",
        id="yaml-duplicate-key",
    ),
]


@pytest.mark.parametrize(("text", "line", "column", "fragment"), BAD)
def test_bad_config_is_located(
    tmp_path: Path, text: str, line: int, column: int, fragment: str
) -> None:
    path = write(tmp_path, text)
    found = errors(path)
    where = f"{path}:{line}:{column}:"
    assert any(e.startswith(where) and fragment in e for e in found), found


def test_many_mistakes_reported_at_once(tmp_path: Path) -> None:
    text = (
        "edge_id: 'gw 1'\n"  # 1
        "registry: {address: nowhere, insecure: maybe}\n"  # 2
        f"models_dir: {MODELS}\n"  # 3
        "admin_sock: /run/x\n"  # 4
        "devices:\n"  # 5
        + dev("{host: 10.0.0.1, port: 0}", model="nope")  # 6..9
        + dev(TCP, model="community.energy/meter-3p@9", ident="d1")  # 10..13
        + dev("{transport: serial, port: /dev/ttyS0, parity: even, bytesize: 6}", ident="d3")
    )
    found = errors(write(tmp_path, text))
    expected = [
        ":1:10:",
        "invalid edge_id",
        ":2:21:",
        "invalid address",
        ":2:40:",
        "insecure must be true or false",
        ":4:1:",
        "did you mean 'admin_socket'?",
        ":7:12:",
        "invalid model reference",
        ":9:40:",
        "port out of range",
        ":11:12:",
        "not found in models_dir",
        ":17:79:",
        "invalid bytesize",
    ]
    for where, fragment in zip(expected[::2], expected[1::2], strict=True):
        assert any(where in e and fragment in e for e in found), (where, fragment, found)
    assert len(found) == 8, found
    # Sorted by position.
    assert found == sorted(found, key=lambda e: tuple(int(x) for x in e.split(":")[1:3]))


def test_hostile_yaml_refused(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    with pytest.raises(HostileInputError, match="alias"):
        load_edge_config(write(tmp_path, bomb))
    deep = "[" * 200 + "]" * 200
    with pytest.raises(HostileInputError, match="nesting"):
        load_edge_config(write(tmp_path, deep))
    with pytest.raises(HostileInputError, match="over the limit"):
        load_edge_config(write(tmp_path, HEAD), Limits(max_bytes=16))
    (tmp_path / "edge.yaml").write_bytes(b"edge_id: \xff\n")
    with pytest.raises(HostileInputError, match="UTF-8"):
        load_edge_config(tmp_path / "edge.yaml")


def test_python_tags_refused(tmp_path: Path) -> None:
    found = errors(write(tmp_path, "edge_id: !!python/object:os.system x\n"))
    assert any("unsupported YAML tag" in e for e in found), found


def test_missing_file(tmp_path: Path) -> None:
    assert any("cannot read file" in e for e in errors(tmp_path / "absent.yaml"))
