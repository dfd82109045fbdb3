"""Composition: extends (inheritance) and components (instance:id), resolved by flatten()."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from thing_models.composition import FolderModelSource, MemoryModelSource, flatten
from thing_models.errors import UnresolvedReferenceError
from thing_models.model import (
    Bindings,
    Component,
    DataSchema,
    DataType,
    ModbusBinding,
    ModbusPoint,
    ModbusTable,
    ModbusType,
    ModelRef,
    Property,
    ReportGroup,
    Reporting,
    ReportPolicy,
    SemVer,
    Service,
    ThingModel,
)

FLOAT = DataSchema(DataType.FLOAT)


def _model(name: str, version: str = "1.0.0", **kwargs: object) -> ThingModel:
    return ThingModel(name=name, version=SemVer.parse(version), **kwargs)  # type: ignore[arg-type]


def _point(prop: str, address: int) -> ModbusPoint:
    return ModbusPoint(prop, ModbusTable.HOLDING_REGISTER, address, ModbusType.FLOAT32)


BASE = _model(
    "acme/base",
    properties=(Property("temperature", FLOAT), Property("humidity", FLOAT)),
    services=(Service("reboot"),),
    bindings=Bindings(
        modbus=ModbusBinding(points=(_point("temperature", 0), _point("humidity", 2))),
        reporting=Reporting(groups=(ReportGroup("fast", ReportPolicy(poll_interval_s=1)),)),
    ),
)
HEALTH = _model(
    "acme/health", "2.1.0", properties=(Property("battery", DataSchema(DataType.INT32)),)
)


def test_model_without_composition_is_returned_unchanged() -> None:
    assert flatten(BASE, MemoryModelSource()) is BASE


def test_extends_inherits_and_child_overrides() -> None:
    override = Property("humidity", DataSchema(DataType.DOUBLE), title="better humidity")
    child = _model(
        "acme/child",
        extends=ModelRef.parse("acme/base@1"),
        properties=(override, Property("pressure", FLOAT)),
        bindings=Bindings(modbus=ModbusBinding(points=(_point("humidity", 10),))),
    )
    flat = flatten(child, MemoryModelSource([BASE]))
    assert [p.id for p in flat.properties] == ["temperature", "humidity", "pressure"]
    assert flat.property("humidity") == override
    assert [s.id for s in flat.services] == ["reboot"]
    assert flat.extends is None
    assert flat.bindings.modbus is not None
    addresses = {p.property: p.address for p in flat.bindings.modbus.points}
    assert addresses == {"temperature": 0, "humidity": 10}
    assert flat.bindings.reporting.group("fast") is not None
    assert flat.name == "acme/child"


def test_components_are_prefixed_with_instance() -> None:
    model = _model(
        "acme/meter",
        properties=(Property("power", FLOAT),),
        components=(
            Component("health", ModelRef.parse("acme/health@2")),
            Component("backup", ModelRef.parse("acme/health")),
        ),
    )
    flat = flatten(model, MemoryModelSource([HEALTH]))
    assert [p.id for p in flat.properties] == ["health:battery", "backup:battery", "power"]
    assert flat.components == ()


def test_newest_matching_version_is_chosen() -> None:
    newer = dataclasses.replace(HEALTH, version=SemVer(2, 5, 0), title="newer")
    major3 = dataclasses.replace(HEALTH, version=SemVer(3, 0, 0), title="major 3")
    source = MemoryModelSource([HEALTH, newer, major3])
    assert source.find(ModelRef.parse("acme/health@2")) == newer
    assert source.find(ModelRef.parse("acme/health@2.1.0")) == HEALTH
    assert source.find(ModelRef.parse("acme/health")) == major3
    assert source.find(ModelRef.parse("acme/health@4")) is None


def test_missing_parent_is_reported_with_reference() -> None:
    child = _model("acme/child", extends=ModelRef.parse("acme/missing@1"))
    with pytest.raises(UnresolvedReferenceError, match=r"acme/missing@1.*no such model"):
        flatten(child, MemoryModelSource())


def test_cycle_is_reported_not_recursed() -> None:
    a = _model("acme/a", extends=ModelRef.parse("acme/b@1"))
    b = _model("acme/b", extends=ModelRef.parse("acme/a@1"))
    cycle = re.escape("cycle: acme/a@1.0.0 -> acme/b@1.0.0")
    with pytest.raises(UnresolvedReferenceError, match=cycle):
        flatten(a, MemoryModelSource([a, b]))


def test_deep_chain_is_refused() -> None:
    models = [_model(f"acme/m{i}", extends=ModelRef.parse(f"acme/m{i + 1}@1")) for i in range(20)]
    models.append(_model("acme/m20"))
    with pytest.raises(UnresolvedReferenceError, match="deeper than"):
        flatten(models[0], MemoryModelSource(models))


def test_folder_source_reads_yaml_and_skips_broken(tmp_path: Path) -> None:
    (tmp_path / "health.yaml").write_text(
        'model: acme/health\nversion: "2.0.0"\nproperties:\n  - {id: battery, type: int32}\n'
    )
    (tmp_path / "broken.yaml").write_text("model: [unclosed\n")
    source = FolderModelSource(tmp_path)
    found = source.find(ModelRef.parse("acme/health@2"))
    assert found is not None
    assert [p.id for p in found.properties] == ["battery"]
