"""Round trips: ThingModel -> dump_model_yaml -> load_model_text gives an equal model."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings

from tests.thing_models.strategies import TRICKY_WORDS, thing_models_strategy
from thing_models.checks import check_model
from thing_models.model import (
    DataSchema,
    DataType,
    EnumValue,
    ModbusBinding,
    ModbusPoint,
    ModbusTable,
    ModbusType,
    Property,
    SemVer,
    ThingModel,
)
from thing_models.yaml_format import (
    dump_model_yaml,
    load_model_text,
    model_from_dict,
    model_to_dict,
)

ROUNDTRIP = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _depth(schema: DataSchema) -> int:
    inner = [f.schema for f in schema.fields] + ([schema.items] if schema.items else [])
    return 1 + max((_depth(i) for i in inner), default=0)


def features(model: ThingModel) -> set[str]:
    """What a generated model exercises (to show the strategy is not vacuous)."""
    b = model.bindings
    points = [p for proto in (b.modbus, b.bacnet, b.mqtt, b.coap) if proto for p in proto.points]
    found = set(b.protocols)
    if b.modbus is not None:
        found |= {"bit" for p in b.modbus.points if p.bit is not None}
        found |= {"mask" for p in b.modbus.points if p.mask is not None}
        found |= {"service-param" for w in b.modbus.services if w.param}
    if b.mqtt is not None and b.mqtt.events:
        found.add("mqtt-events")
    found |= {"group" for p in points if p.group}
    found |= {"component-target" for p in points if ":" in p.property}
    for prop in model.properties:
        schema = prop.schema
        found |= {"depth-3"} if _depth(schema) >= 3 else set()
        found |= {f"enum-{type(m.value).__name__}" for m in schema.enum}
    return found


@ROUNDTRIP
@given(thing_models_strategy())
def test_generated_models_are_valid_and_round_trip(model: ThingModel) -> None:
    assert check_model(model) == []
    text = dump_model_yaml(model)
    loaded = load_model_text(text, "generated.yaml")
    assert loaded == model
    # The canonical text is a fixed point.
    assert dump_model_yaml(loaded) == text


def test_the_strategy_exercises_every_feature() -> None:
    """Derandomized, so the answer does not depend on the run."""
    seen: set[str] = set()

    @settings(
        max_examples=250,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(thing_models_strategy())
    def collect(model: ThingModel) -> None:
        seen.update(features(model))

    collect()
    assert seen >= {
        "modbus",
        "bacnet",
        "mqtt",
        "coap",
        "bit",
        "mask",
        "service-param",
        "mqtt-events",
        "group",
        "component-target",
        "depth-3",
        "enum-int",
        "enum-str",
    }


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(thing_models_strategy(with_bindings=False))
def test_models_without_bindings_round_trip_as_plain_data(model: ThingModel) -> None:
    document = model_to_dict(model)
    assert "bindings" not in document
    assert model_from_dict(document) == model


def _model(*properties: Property) -> ThingModel:
    return ThingModel("acme.test/x", SemVer(1, 0, 0), properties=properties)


def test_tricky_strings_round_trip() -> None:
    """Words YAML 1.1 reads as booleans, nulls, numbers or dates, and odd characters."""
    enum = tuple(EnumValue(word, word) for word in dict.fromkeys(TRICKY_WORDS))
    model = dataclasses.replace(
        _model(
            Property("on", DataSchema(DataType.ENUM, enum=enum), title="yes"),
            Property("null", DataSchema(DataType.TEXT, unit="\x85"), description="a\x85b"),
            Property("y", DataSchema(DataType.BOOL, bool_labels=("off", "on"))),
        ),
        title="2020-01-01",
        vendor="~",
        extensions={"no": ["on", "1.0", None, {"<<": "x"}]},
    )
    assert load_model_text(dump_model_yaml(model)) == model


def test_empty_enum_labels_and_values_round_trip() -> None:
    """The list form (used when a member has a description) keeps empty values and labels."""
    enum = (EnumValue("", "", "empty"), EnumValue("x", ""), EnumValue(0, "zero"))
    model = _model(Property("e", DataSchema(DataType.ENUM, enum=enum)))
    text = dump_model_yaml(model)
    assert "value: ''" in text
    assert load_model_text(text) == model


def test_numbers_keep_their_values() -> None:
    model = dataclasses.replace(
        _model(
            Property("a", DataSchema(DataType.INT64, minimum=-(2**63), maximum=2**63 - 1)),
            Property("b", DataSchema(DataType.DOUBLE, minimum=-1.7976931348623157e308)),
            Property("c", DataSchema(DataType.FLOAT, minimum=5e-324, maximum=1e16, step=0.1)),
            Property("d", DataSchema(DataType.FLOAT, minimum=-0.0)),
        ),
        bindings=dataclasses.replace(
            ThingModel("a/b", SemVer(0, 0, 0)).bindings,
            modbus=ModbusBinding(
                unit_id=0,
                max_gap=0,
                points=(
                    ModbusPoint(
                        "a",
                        ModbusTable.HOLDING_REGISTER,
                        0,
                        ModbusType.UINT64,
                        mask=2**64 - 1,
                        sentinel=2**64,
                        scale=1e-300,
                        offset=-0.0,
                    ),
                ),
            ),
        ),
    )
    assert check_model(model) == []
    assert load_model_text(dump_model_yaml(model)) == model


def test_canonical_form_leaves_defaults_out() -> None:
    model = _model(Property("t", DataSchema(DataType.FLOAT)))
    assert dump_model_yaml(model) == (
        "model: acme.test/x\nversion: 1.0.0\nproperties:\n- id: t\n  type: float\n"
    )
