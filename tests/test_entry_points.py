"""Every console script named in pyproject.toml imports and answers --version."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_script_answers_version(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module_name, _, attr = SCRIPTS[name].partition(":")
    main = getattr(importlib.import_module(module_name), attr)
    with pytest.raises(SystemExit) as excinfo:
        main(["--version"])
    assert excinfo.value.code == 0
    assert name in capsys.readouterr().out


def test_expected_scripts_are_declared() -> None:
    assert set(SCRIPTS) == {"thing-model", "edge-agent", "cloud-registry"}
