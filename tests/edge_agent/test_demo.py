"""``edge-agent demo``: registry, simulators and agent in one process; the table shows every
device (Modbus, BACnet, MQTT, CoAP) online with values read back from the registry's twin, and
the agent's local MQTT stream. By default it runs secure (its own CA, an enrolled agent, mTLS,
signed commands, an encrypted outbox); ``--insecure`` runs in plain text and says so. Whatever
it started is gone when it returns: processes, ports, the temporary folder."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from edge_agent import demo
from edge_agent.demo import MOSQUITTO_PACKAGE, find_models_dir, run_demo

ROOT = Path(__file__).resolve().parents[2]
DEVICES = {
    "energy-meter-3p": "modbus",
    "ev-charger": "modbus",
    "lift-controller": "modbus",
    "water-meter": "modbus",
    "air-handling-unit": "bacnet",
    "access-control-door": "mqtt",
    "parking-space-sensor": "coap",
}


def _children() -> list[int]:
    """The processes whose parent is this one (zombies included: not reaped is leaked)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                found.append(int(entry.name))
    return found


def _listen_on(port: int) -> None:
    """Listen on ``port`` (as a server would: TIME_WAIT of closed connections allowed); raises
    OSError while something still listens there."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


def _row(device: str, protocol: str) -> str:
    """A table row of ``device``: its protocol, online, and a value read from its twin."""
    return rf"{re.escape(device)}\s*│\s*{protocol}\s*│[^│\n]*│\s*online\s*│\s*[\w:]+=\S"


def test_demo_shows_every_protocol_online_with_twin_values() -> None:
    assert find_models_dir() == ROOT / "examples" / "models"
    before = _children()
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=130)
    code = asyncio.run(run_demo(duration_s=6.0, refresh_s=0.5, console=console))
    text = out.getvalue()
    assert code == 0, text
    for device, protocol in DEVICES.items():
        assert re.search(_row(device, protocol), text), f"{device}:\n{text}"
    # the meter's voltage came back from the registry's twin: the uplink works
    assert re.search(r"voltage_a=\d+(\.\d+)?", text), text
    assert "uplink connected" in text, text
    # the local stream went to the demo's broker, with Home Assistant discovery
    words = " ".join(text.split())  # the caption wraps
    local = re.search(r"local MQTT 127\.0\.0\.1:(\d+) connected \(Home Assistant", words)
    assert local is not None, text
    assert re.search(r"[1-9]\d* published, 0 dropped", words), text
    # everything stopped: no process left, the broker's port free, the folder gone
    assert _children() == before
    _listen_on(int(local.group(1)))
    folder = re.search(r"(/\S+/edge-agent-demo-[^/\s]+)/", text.replace("\n", ""))
    assert folder is not None, text
    assert not Path(folder.group(1)).exists()
    # ...over mTLS, after enrolling with a key made in the agent's identity folder
    assert "mTLS, signed commands, encrypted outbox" in text, text
    assert re.search(r"enrolled demo-edge: private key \S+/identity/gen-\w+/key\.pem", text), text
    assert "INSECURE" not in text


def test_demo_insecure_runs_in_plain_text_and_warns(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ...and without mosquitto: no MQTT device, no local stream, said with the package to get
    monkeypatch.setattr(demo, "_mosquitto_binary", lambda: None)
    before = _children()
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=130)
    with caplog.at_level(logging.WARNING):
        code = asyncio.run(run_demo(duration_s=2.0, refresh_s=0.5, console=console, insecure=True))
    text = out.getvalue()
    assert code == 0, text
    assert "WARNING: --insecure: plain text" in text, text
    assert "INSECURE: plain text" in text, text
    assert "uplink connected" in text, text
    assert "demo running insecure" in caplog.text
    words = " ".join(text.split())
    assert "the MQTT device and the local MQTT stream are skipped" in words, text
    assert f"install the Debian package {MOSQUITTO_PACKAGE}" in words, text
    assert "access-control-door" not in text
    assert "local MQTT 127.0.0.1" not in words
    assert re.search(r"air-handling-unit\s*│\s*bacnet", text), text
    assert re.search(r"parking-space-sensor\s*│\s*coap", text), text
    assert _children() == before


def test_broker_starts_stops_and_reports_a_failed_start(tmp_path: Path) -> None:
    binary = demo._mosquitto_binary()
    assert binary is not None, f"the tests need the Debian package {MOSQUITTO_PACKAGE}"

    async def scenario() -> None:
        broker = demo._Broker(binary, tmp_path / "ok")
        await broker.start()
        _, writer = await asyncio.open_connection("127.0.0.1", broker.port)
        writer.close()
        await broker.stop()
        _listen_on(broker.port)
        broken = demo._Broker("/bin/false", tmp_path / "broken")
        with pytest.raises(RuntimeError, match=r"mosquitto did not start on 127\.0\.0\.1:"):
            await broken.start()

    asyncio.run(scenario())


def test_demo_cli_runs_for_a_duration_and_exits_cleanly() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "demo", "--duration", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for device in ("energy-meter-3p", "air-handling-un", "parking-space-se"):
        assert device in result.stdout, result.stdout


def _group(pgid: int) -> list[int]:
    """The live processes of process group ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def test_demo_cli_stops_everything_on_ctrl_c() -> None:
    """Ctrl-C in a terminal signals the whole foreground process group: the demo, the BACnet
    simulator and mosquitto; all of them end, nothing is left behind."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "demo"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # its own group, as a shell's foreground job
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:  # started: the simulators run, the agent is enrolled
            lines.append(line)
            if line.startswith("enrolled demo-edge"):
                break
        assert len(_group(process.pid)) >= 3, "".join(lines)  # demo, BACnet simulator, broker
        os.killpg(process.pid, signal.SIGINT)
        rest, _ = process.communicate(timeout=40)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, "".join(lines) + rest
    assert "air-handling-un" in rest, rest
    assert _group(process.pid) == []


def test_demo_cli_rejects_a_bad_duration() -> None:
    from edge_agent.cli import main

    assert main(["demo", "--duration", "0"]) == 2
    assert main(["demo", "--insecure", "--refresh", "0"]) == 2
