"""The direction of imports between the project's packages (../shared/GUIDE.md section 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = (
    "thing_models",
    "protocol_adapters",
    "edge_agent",
    "cloud_registry",
    "firmware_ota",
    "security",
)
# package -> packages of ours it must never import
FORBIDDEN = {
    "thing_models": set(PACKAGES) - {"thing_models"},
    "protocol_adapters": set(PACKAGES) - {"thing_models", "protocol_adapters"},
    "cloud_registry": {"edge_agent", "protocol_adapters"},
    "security": {"edge_agent", "cloud_registry", "protocol_adapters"},
    "firmware_ota": {"edge_agent", "cloud_registry", "protocol_adapters"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package: str) -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in (REPO / package).rglob("*.py")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}, f"{package} must not import {sorted(FORBIDDEN[package])}"


def test_every_package_exists_and_is_typed() -> None:
    for package in PACKAGES:
        assert (REPO / package / "__init__.py").is_file(), package
        assert (REPO / package / "py.typed").is_file(), package
