"""The package's public names: ``__all__`` lists exactly what is exported, and it all imports."""

from __future__ import annotations

import importlib

import pytest

import thing_models

MODULES = [
    "thing_models.model",
    "thing_models.errors",
    "thing_models.yaml_source",
    "thing_models.yaml_format",
    "thing_models.composition",
    "thing_models.telemetry",
    "thing_models.messages",
    "thing_models.diff",
    "thing_models.formats",
]


def test_package_all_matches_public_names() -> None:
    public = {name for name in vars(thing_models) if not name.startswith("_")}
    modules = {
        name
        for name in public
        if hasattr(getattr(thing_models, name), "__path__")
        or type(getattr(thing_models, name)).__name__ == "module"
    }
    assert set(thing_models.__all__) == public - modules
    assert sorted(thing_models.__all__) == thing_models.__all__


@pytest.mark.parametrize("module_name", MODULES)
def test_module_all_names_exist(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


def test_errors_share_one_base() -> None:
    for name in thing_models.__all__:
        obj = getattr(thing_models, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, thing_models.ThingModelError), name
