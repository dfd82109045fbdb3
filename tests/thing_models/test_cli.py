"""The ``thing-model`` command line: exit codes, located errors, and each subcommand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from thing_models.cli import main, scaffold
from thing_models.yaml_format import load_model_file, load_model_text

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "models"
METER = EXAMPLES / "energy-meter-3p.yaml"
VERSIONS = REPO / "examples" / "versions"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_validate_examples_ok(capsys: pytest.CaptureFixture[str]) -> None:
    paths = sorted(str(p) for p in EXAMPLES.glob("*.yaml"))
    code, out, err = run(capsys, "validate", *paths)
    assert code == 0, err
    assert out.count("ok ") == len(paths)
    assert f"{len(paths)} valid, 0 invalid" in out


def test_validate_reports_every_error_with_location(capsys: pytest.CaptureFixture[str]) -> None:
    broken = REPO / "examples" / "broken" / "broken-meter.yaml"
    code, _out, err = run(capsys, "validate", str(broken))
    assert code == 1
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) >= 8
    assert f"{broken}:4:1: error: titel: unknown key 'titel'" in err
    assert "did you mean 'title'?" in err
    assert f"{broken}:6:37: error: properties[0].min: min is greater than max" in err


def test_validate_json_output(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text('model: acme/x\nversion: "1.0.0"\nproperties: 5\n')
    code, out, _err = run(capsys, "validate", "--json", str(METER), str(bad))
    assert code == 1
    results = json.loads(out)
    assert results[0]["ok"] is True
    assert results[0]["model"] == "community.energy/meter-3p@1.0.0"
    assert results[1]["ok"] is False
    assert any(f"{bad}:3:13" in e for e in results[1]["errors"])


def test_validate_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _out, err = run(capsys, "validate", str(tmp_path / "nope.yaml"))
    assert code == 1
    assert "nope.yaml: error: cannot read file" in err


def test_validate_unknown_format(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    odd = tmp_path / "odd.json"
    odd.write_text('{"hello": "world"}')
    code, _out, err = run(capsys, "validate", str(odd))
    assert code == 1
    assert "unrecognised model format" in err


def test_validate_resolves_components(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "health.yaml").write_text(
        'model: acme/health\nversion: "1.0.0"\nproperties:\n  - {id: battery, type: int32}\n'
    )
    device = tmp_path / "device.yaml"
    device.write_text(
        'model: acme/device\nversion: "1.0.0"\n'
        "components:\n  - {instance: health, model: acme/health@1}\n"
        "bindings:\n  mqtt:\n    points:\n"
        "      - {property: 'health:battery', topic: 'd/{device_id}', path: $.battery}\n"
        "      - {property: 'health:missing', topic: 'd/{device_id}', path: $.x}\n"
    )
    code, _out, err = run(capsys, "validate", str(device))
    assert code == 1
    assert "health:missing" in err
    assert "health:battery" not in err
    (tmp_path / "health.yaml").unlink()
    code, _out, err = run(capsys, "validate", str(device))
    assert code == 1
    assert "unresolved reference 'acme/health@1'" in err


def test_convert_to_yaml_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(capsys, "convert", str(METER), "--to", "yaml")
    assert code == 0
    assert load_model_text(out, "converted") == load_model_file(METER)


def test_convert_strict_fails_on_losses(capsys: pytest.CaptureFixture[str]) -> None:
    # TSL has no place for Modbus bindings: reported by name, and fatal with --strict.
    code, _out, err = run(capsys, "convert", str(METER), "--to", "tsl", "--strict")
    assert code == 1
    assert "tsl cannot express" in err
    assert "modbus" in err


def test_convert_writes_output_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "meter.tm.json"
    code, _out, err = run(capsys, "convert", str(METER), "--to", "wot-tm", "-o", str(target))
    assert code == 0, err
    document = json.loads(target.read_text())
    assert "voltage_a" in document["properties"]


def test_convert_rejects_malformed_set(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        main(["convert", str(METER), "--to", "yaml", "--set", "NOEQUALS"])


def test_diff_fails_when_bump_too_small(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "diff",
        str(VERSIONS / "energy-meter-3p-1.0.0.yaml"),
        str(VERSIONS / "energy-meter-3p-1.1.0.yaml"),
    )
    assert code == 1
    assert "voltage_a" in out
    assert "required bump: major; declared: minor" in out
    assert "voltage_a" in err


def test_diff_json_and_identical_models(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(capsys, "diff", "--json", str(METER), str(METER))
    assert code == 0
    result = json.loads(out)
    assert result["changes"] == []
    assert result["required"] == "none"


@pytest.mark.parametrize("protocol", ["modbus", "bacnet", "mqtt", "coap", "none"])
def test_new_scaffold_is_valid(protocol: str, tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(scaffold("com.acme/thermostat", protocol))
    model = load_model_file(path)
    assert model.name == "com.acme/thermostat"
    assert model.bindings.protocols == (() if protocol == "none" else (protocol,))


def test_new_writes_and_refuses_overwrite(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "m.yaml"
    assert run(capsys, "new", "com.acme/thermostat", "-o", str(path))[0] == 0
    assert load_model_file(path).name == "com.acme/thermostat"
    code, _out, err = run(capsys, "new", "com.acme/thermostat", "-o", str(path))
    assert code == 1
    assert "exists" in err


def test_new_rejects_bad_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "new", "Not A Name")
    assert code == 2
    assert "invalid name 'Not A Name'" in err


def test_schema_prints_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(capsys, "schema")
    assert code == 0
    schema = json.loads(out)
    assert "properties" in schema


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["convert", str(METER), "--to", "xml"])
    assert excinfo.value.code == 2
    assert "invalid choice: 'xml'" in capsys.readouterr().err


def test_console_script_entry_point(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "thing_models.cli", "validate", str(METER)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "community.energy/meter-3p@1.0.0" in result.stdout


def test_import_text_detects_formats_and_refuses_oversize(conformance_dir: Path) -> None:
    from thing_models.errors import HostileInputError
    from thing_models.formats.detect import import_text
    from thing_models.yaml_source import Limits

    assert import_text(METER.read_text(), "meter.yaml").model == load_model_file(METER)
    tsl = (conformance_dir / "thing-models" / "alibaba_tsl_light_iotkit_model.json").read_text()
    assert import_text(tsl, "light.json").model.name == "aliyun.tsl/a1h88dsziay"
    with pytest.raises(HostileInputError, match="over the limit"):
        import_text("x" * 100, "big.yaml", Limits(max_bytes=10))
