"""``edge-agent status|devices|read|write|invoke|tail|drain`` against a real admin socket."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from edge_agent.admin import status_to_json
from edge_agent.admin_cli import (
    ADMIN_COMMANDS,
    add_admin_commands,
    parse_args_words,
    parse_value,
    run_admin_command,
)
from tests.edge_agent.admin_fake import FakeControl, agent_status, message, server_thread


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edge-agent")
    sub = parser.add_subparsers(dest="command", required=True)
    add_admin_commands(sub)
    args = parser.parse_args(argv)
    assert args.command in ADMIN_COMMANDS
    return run_admin_command(args)


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "admin.sock"


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


def test_status_json_and_tables(sock: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with server_thread(sock):
        assert cli(["status", "--socket", str(sock), "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got == json.loads(json.dumps(status_to_json(agent_status())))
        assert cli(["status", "--socket", str(sock)]) == 0
    out = capsys.readouterr().out
    for text in ("edge edge-1", "devices online", "1/2", "meter-[2]", "offline", "backoff"):
        assert text in out, text
    assert "ModbusTimeoutError: 1 s" in out
    assert "modbus 127.0.0.1:5020" in out
    assert "5 telemetry, 0 kept" in out


def test_devices_json_and_table(sock: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with server_thread(sock):
        assert cli(["devices", "--socket", str(sock), "--json"]) == 0
        devices = json.loads(capsys.readouterr().out)
        assert [(d["id"], d["state"], d["polls"]) for d in devices] == [
            ("meter-1", "online", 40),
            ("meter-[2]", "offline", 40),
        ]
        assert cli(["devices", "--socket", str(sock)]) == 0
    out = capsys.readouterr().out
    assert "meter-[2]" in out
    assert "community.energy/meter-3p@1.0.0" in out


def test_read_write_invoke(sock: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with server_thread(sock) as (control, _):
        assert cli(["read", "meter-1", "voltage", "--socket", str(sock), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["value"] == 230.5
        assert cli(["read", "meter-1", "voltage", "--socket", str(sock)]) == 0
        assert "230.5" in capsys.readouterr().out
        for value in ("21.5", "on", '"7"', "true", "[1, 2]"):
            assert cli(["write", "meter-1", "setpoint", value, "--socket", str(sock)]) == 0
        assert "read back" in capsys.readouterr().out
        assert [v for *_, v in control.written] == [21.5, "on", "7", True, [1, 2]]
        argv = ["invoke", "meter-1", "reset", "hard=true", "reason=test", "--socket", str(sock)]
        assert cli([*argv, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["result"] == {
            "done": True,
            "args": {"hard": True, "reason": "test"},
        }
        assert cli(["invoke", "meter-1", "reset", '{"n": 3}', "--socket", str(sock)]) == 0
        assert "done" in capsys.readouterr().out


def test_agent_refusals_exit_1(sock: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with server_thread(sock):
        assert cli(["read", "nope", "voltage", "--socket", str(sock)]) == 1
        assert "edge-agent read: AgentCommandError: unknown device 'nope'" in (
            capsys.readouterr().err
        )
        assert cli(["invoke", "meter-1", "fly", "--socket", str(sock), "--json"]) == 1
        assert "unknown service 'fly'" in capsys.readouterr().err


def test_no_agent_exits_1_naming_the_socket(sock: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["status", "--socket", str(sock)]) == 1
    err = capsys.readouterr().err
    assert "edge-agent status: no agent answers on" in err
    assert str(sock) in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["invoke", "meter-1", "reset", "novalue"], "'novalue' is not key=value"),
        (["invoke", "meter-1", "reset", "a=1", "a=2"], "'a' given twice"),
        (["invoke", "meter-1", "reset", "{bad json"], "ARGS: not a JSON object"),
        (["invoke", "meter-1", "reset", "=1"], "is not key=value"),
        (["tail", "--count", "0"], "--count must be > 0"),
        (["drain", "--timeout", "-1"], "--timeout and --interval must be > 0"),
        (["status", "--request-timeout", "0"], "--request-timeout must be > 0"),
    ],
)
def test_usage_errors_exit_2(
    sock: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert cli([*argv, "--socket", str(sock)]) == 2
    assert message in capsys.readouterr().err


def test_argparse_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli(["read", "meter-1"])
    assert info.value.code == 2
    assert "property" in capsys.readouterr().err


def test_tail_prints_json_lines(sock: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with server_thread(sock) as (control, loop):

        async def publish(fake: FakeControl) -> None:
            await fake.subscribed.wait()
            for n in range(5):
                fake.publish(message("meter-2", n))
                fake.publish(message("meter-1", n))

        future = asyncio.run_coroutine_threadsafe(publish(control), loop)
        argv = ["tail", "--device", "meter-1", "--count", "3", "--socket", str(sock)]
        assert cli(argv) == 0
        future.result(5)
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["params"]["n"] for line in lines] == [0, 1, 2]
    assert {json.loads(line)["device_id"] for line in lines} == {"meter-1"}


def test_drain_shows_progress_until_empty(sock: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with server_thread(sock) as (control, _):
        control.rows_plan = [12, 8, 9, 3, 0]
        argv = ["drain", "--interval", "0.01", "--timeout", "10", "--socket", str(sock)]
        assert cli(argv) == 0
        assert "outbox empty after" in capsys.readouterr().out
        control.rows_plan = [4, 0]
        assert cli([*argv, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["drained"] is True


def test_drain_times_out_with_exit_1(sock: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with server_thread(sock) as (control, _):
        control.rows_plan = [7]
        argv = ["drain", "--interval", "0.02", "--timeout", "0.1", "--socket", str(sock)]
        assert cli([*argv, "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["drained"] is False
    assert result["rows"] == 7


def test_the_socket_comes_from_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "models").mkdir()
    config = tmp_path / "edge.yaml"
    config.write_text(
        'edge_id: edge-1\nregistry: {address: "127.0.0.1:50051", insecure: true}\n'
        "admin_socket: run/admin.sock\nmodels_dir: models\ndevices: []\n",
        encoding="utf-8",
    )
    with server_thread(tmp_path / "run" / "admin.sock"):
        assert cli(["devices", "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == "meter-1"


def test_a_bad_config_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text("edge_id: [\n", encoding="utf-8")
    assert cli(["status", "--config", str(config)]) == 1
    assert "edge.yaml" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "value"),
    [("21.5", 21.5), ("on", "on"), ('"x"', "x"), ("null", None), ("{", "{"), ("NaN", "NaN")],
)
def test_values_are_json_literals_or_strings(text: str, value: object) -> None:
    assert parse_value(text) == value


def test_args_words() -> None:
    assert parse_args_words([]) == {}
    assert parse_args_words(["a=1", "b=x=y"]) == {"a": 1, "b": "x=y"}
    assert parse_args_words(['{"a": [1]}']) == {"a": [1]}
