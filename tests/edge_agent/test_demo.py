"""``edge-agent demo``: registry, simulators and agent in one process; the table shows every
device online with values read back from the registry's twin. By default it runs secure (its own
CA, an enrolled agent, mTLS, signed commands, an encrypted outbox); ``--insecure`` runs in plain
text and says so."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from edge_agent.demo import find_models_dir, run_demo

ROOT = Path(__file__).resolve().parents[2]
DEVICES = ("energy-meter-3p", "ev-charger", "lift-controller", "water-meter")


def test_demo_shows_every_device_online_with_twin_values() -> None:
    assert find_models_dir() == ROOT / "examples" / "models"
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120)
    code = asyncio.run(run_demo(duration_s=4.0, refresh_s=0.5, console=console))
    text = out.getvalue()
    assert code == 0, text
    for device in DEVICES:
        assert re.search(rf"{re.escape(device)}\s.*\bonline\b", text), text
    # the meter's voltage came back from the registry's twin: the uplink works
    assert re.search(r"voltage_a=\d+(\.\d+)?", text), text
    assert "uplink connected" in text, text
    # ...over mTLS, after enrolling with a key made in the agent's identity folder
    assert "mTLS, signed commands, encrypted outbox" in text, text
    assert re.search(r"enrolled demo-edge: private key \S+/identity/gen-\w+/key\.pem", text), text
    assert "INSECURE" not in text


def test_demo_insecure_runs_in_plain_text_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120)
    with caplog.at_level(logging.WARNING):
        code = asyncio.run(run_demo(duration_s=2.0, refresh_s=0.5, console=console, insecure=True))
    text = out.getvalue()
    assert code == 0, text
    assert "WARNING: --insecure: plain text" in text, text
    assert "INSECURE: plain text" in text, text
    assert "uplink connected" in text, text
    assert "demo running insecure" in caplog.text


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
    assert "energy-meter-3p" in result.stdout


def test_demo_cli_rejects_a_bad_duration() -> None:
    from edge_agent.cli import main

    assert main(["demo", "--duration", "0"]) == 2
    assert main(["demo", "--insecure", "--refresh", "0"]) == 2
