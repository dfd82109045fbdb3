"""``edge-agent simulate modbus``: a real process serving a model's registers on loopback."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.cli import main
from protocol_adapters.modbus.codec import Decoded
from protocol_adapters.modbus.driver import ModbusDriver
from thing_models.yaml_format import load_model_file

REPO = Path(__file__).resolve().parents[2]
METER = REPO / "examples" / "models" / "energy-meter-3p.yaml"


def test_simulated_meter_serves_values_within_the_model_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "simulate",
            "modbus",
            "--model",
            str(METER),
            "--port",
            "0",
            "--tick-ms",
            "50",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"on 127\.0\.0\.1:(\d+)", line)
        assert match, line
        model = load_model_file(METER)
        assert model.bindings.modbus is not None

        async def read() -> dict[str, Decoded]:
            async with ModbusDriver(
                "127.0.0.1", int(match.group(1)), model.bindings.modbus, model
            ) as driver:
                return await driver.read_all()

        values = asyncio.run(read())
        voltage = values["voltage_a"]
        assert voltage.quality == "good"
        assert isinstance(voltage.value, float)
        assert 0 <= voltage.value <= 500
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--model", "nope.yaml"], 1, "cannot read file"),
        (["--model", str(REPO / "examples/models/smoke-detector.yaml")], 1, "no modbus binding"),
        (["--model", str(REPO / "examples/broken/broken-meter.yaml")], 1, "broken-meter.yaml:4:1"),
        (["--model", str(METER), "--port", "70000"], 2, "--port must be"),
    ],
)
def test_bad_input_is_refused_clearly(
    args: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "modbus", *args]) == code
    assert message in capsys.readouterr().err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["simulate", "zigbee", "--model", str(METER)])
    assert info.value.code == 2
