"""Tests of the YAML model loader: every error at once, the example models, and fuzzing."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.thing_models.strategies import json_values, texts, thing_models_strategy
from thing_models.errors import Diagnostic, ModelLoadError
from thing_models.model import (
    Access,
    CallType,
    DataType,
    DeadbandMode,
    EventLevel,
    ModbusTable,
    ModelRef,
    SemVer,
    ThingModel,
)
from thing_models.yaml_format import (
    MAX_SCHEMA_DEPTH,
    load_model_file,
    load_model_text,
    model_from_dict,
    model_to_dict,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_errors(text: str, source: str = "m.yaml") -> tuple[Diagnostic, ...]:
    with pytest.raises(ModelLoadError) as info:
        load_model_text(text, source)
    return info.value.diagnostics


# --------------------------------------------------------------------------- all errors at once

TEN_MISTAKES = """\
model: acme.test/Meter
version: "1.0"
titel: Meter
properties:
  - {id: voltage, type: float, min: 500, max: 0}
  - {id: voltage, type: int32}
  - {id: mode, type: enum, values: {}}
  - {id: 2phase, type: bool}
  - {id: rate, type: float, step: 0}
bindings:
  reporting:
    default: {poll_interval: 10s, heartbeat: 5s}
  modbus:
    points:
      - {property: voltage, table: holding_register, address: 0, type: float32, count: 1}
      - {property: current, table: holding_register, address: 2, type: int16}
      - {property: mode, table: input_registr, address: 8, type: uint16}
  mqtt:
    points:
      - {property: rate, topic: a/#/b}
"""

TEN_MISTAKES_FOUND = [
    (1, 8, "invalid model"),
    (2, 10, "invalid version"),
    (3, 1, "unknown key 'titel'"),
    (5, 37, "min is greater than max"),
    (6, 10, "duplicate property id 'voltage'"),
    (7, 36, "enum has no values"),
    (8, 10, "invalid id"),
    (9, 35, "step must be positive"),
    (12, 46, "heartbeat shorter than the poll interval"),
    (15, 88, "count disagrees with type float32"),
    (16, 20, "binding names a property the model does not define"),
    (17, 33, "invalid table"),
    (20, 33, "invalid MQTT topic: '#' must be the last level"),
]


def test_every_mistake_is_reported_at_once_in_order(tmp_path: Path) -> None:
    path = tmp_path / "meter.yaml"
    path.write_text(TEN_MISTAKES)
    with pytest.raises(ModelLoadError) as info:
        load_model_file(path)
    diagnostics = info.value.diagnostics
    assert len(diagnostics) == 13
    assert [(d.location.line, d.location.column) for d in diagnostics] == [
        (line, column) for line, column, _ in TEN_MISTAKES_FOUND
    ]
    for diag, (_, _, fragment) in zip(diagnostics, TEN_MISTAKES_FOUND, strict=True):
        assert fragment in diag.message
        assert diag.location.file == str(path)
        assert diag.expected
    # One line per diagnostic, each starting with file:line:column.
    lines = str(info.value).splitlines()
    assert len(lines) == 13
    assert lines[0].startswith(f"{path}:1:8: error: model: invalid model")
    assert "did you mean 'title'?" in lines[2]
    assert "did you mean 'input_register'?" in lines[11]
    assert "(got 'a/#/b')" in lines[12]


def test_errors_from_parsing_and_checking_are_sorted_together() -> None:
    text = textwrap.dedent(
        """\
        model: a/b
        version: "1.0.0"
        bindings:
          modbus:
            points:
              - {property: x, table: holding, address: 0, type: float32}
        properties:
          - {id: x, type: float, step: -1}
          - {id: y, type: flaot}
        """
    )
    diagnostics = load_errors(text)
    assert [(d.location.line, d.message) for d in diagnostics] == [
        (8, "step must be positive"),
        (9, "invalid type"),
    ]


def test_errors_are_located_after_items_left_out() -> None:
    """A check on the built model (items dropped) is still located in the document."""
    text = textwrap.dedent(
        """\
        model: a/b
        version: "1.0.0"
        properties:
          - {id: a}
          - 7
          - {id: b, type: float, min: 2, max: 1}
        bindings:
          coap:
            points:
              - {property: b}
              - {property: b, resource: no-slash}
        """
    )
    diagnostics = load_errors(text)
    assert [(d.location.line, d.location.column, d.path) for d in diagnostics] == [
        (4, 5, "properties[0]"),
        (5, 5, "properties[1]"),
        (6, 31, "properties[2].min"),
        (10, 9, "bindings.coap.points[0]"),
        (11, 33, "bindings.coap.points[1].resource"),
    ]


@pytest.mark.parametrize(
    ("property_", "fragment"),
    [
        ("{id: x, type: flaot}", "invalid type"),
        ("{id: x}", "missing required key 'type'"),
        ("{id: x, type: array, items: {type: [int32]}}", "invalid type"),
        ("{id: x, type: array, items: 5}", "expected a mapping with type"),
        ("{id: x, type: struct, fields: [{id: f, type: nope}]}", "invalid type"),
    ],
)
def test_an_invalid_schema_is_reported_once(property_: str, fragment: str) -> None:
    """No follow-on errors: not "binding names a property the model does not define", not
    "array needs items", not "struct has no fields"."""
    text = textwrap.dedent(
        f"""\
        model: a/b
        version: "1.0.0"
        properties:
          - {property_}
        bindings:
          mqtt:
            points:
              - {{property: x, topic: t}}
        """
    )
    (diag,) = load_errors(text)
    assert fragment in diag.message
    assert diag.location.line == 4


def test_schema_nesting_is_bounded() -> None:
    depth = MAX_SCHEMA_DEPTH + 2
    schema = "{type: int32}"
    for _ in range(depth):
        schema = f"{{type: array, items: {schema}}}"
    text = (
        'model: a/b\nversion: "1.0.0"\nproperties:\n'
        f"  - {{id: deep, type: array, items: {schema}}}\n"
    )
    diagnostics = load_errors(text)
    assert len(diagnostics) == 1
    assert diagnostics[0].message == f"data type nested deeper than {MAX_SCHEMA_DEPTH} levels"
    assert diagnostics[0].location.line == 4
    assert diagnostics[0].path.startswith("properties[0]" + ".items" * MAX_SCHEMA_DEPTH)


def test_enum_duplicates_in_list_form_are_located_at_the_list() -> None:
    text = textwrap.dedent(
        """\
        model: a/b
        version: "1.0.0"
        properties:
          - id: m
            type: enum
            values:
              - {value: a, label: A}
              - {value: b, label: B, description: second}
              - {value: a, label: again}
        """
    )
    (diag,) = load_errors(text)
    assert diag.message == "duplicate enum value id 'a'"
    assert (diag.location.line, diag.location.column) == (7, 7)  # the values list


# --------------------------------------------------------------------------- what loads

FULL = """\
model: acme.test/full
version: 2.1.0-rc.1
title: Everything
vendor: ACME
extends: acme.test/base@2
components:
  - {instance: left, model: acme.test/fan@1.2, title: Left fan}
properties:
  - {id: n, type: int, min: -5, max: 5, step: 1, unit: K, unit_name: kelvin}
  - {id: s, type: string, max_length: 8, access: read-write}
  - {id: d, type: date}
  - {id: b, type: boolean, labels: {false: off, true: on}}
  - {id: e, type: enum, values: [{value: 1, label: one, description: the first}]}
  - id: p
    type: struct
    required: true
    fields:
      - {id: x, type: double, required: false}
      - {id: tags, type: array, items: {type: text}, max_items: 4}
    extensions: {vendor:register: 7}
events:
  - {id: overheat, level: warning, outputs: [{id: t, type: float}]}
services:
  - {id: reset, call: sync, inputs: [{id: hard, type: bool}], outputs: [{id: ok, type: bool}]}
bindings:
  reporting:
    default: {poll_interval: 500ms, on_change: true, deadband: 5, deadband_mode: percent}
    groups:
      slow: {poll_interval: 1h, heartbeat: 2h}
  modbus:
    addressing: one-based
    points:
      - {property: n, table: holding, address: 1, type: int16, group: slow}
      - {property: b, table: coils, address: 1, type: bit, write_function: 5}
      - {property: left:speed, table: input, address: 1, type: uint16, report: {poll_interval: 5m}}
    services:
      - {service: reset, table: coil, address: 2, type: bit, param: hard}
extensions:
  x-origin: {tool: hand, when: 2024-05-01}
"""


def test_aliases_and_defaults_load() -> None:
    model = load_model_text(FULL, "full.yaml")
    assert model.version == SemVer(2, 1, 0, "rc.1")
    assert model.extends == ModelRef("acme.test/base", "2")
    assert model.components[0].model == ModelRef("acme.test/fan", "1.2")
    types = {p.id: p.schema.type for p in model.properties}
    assert types == {
        "n": DataType.INT32,
        "s": DataType.TEXT,
        "d": DataType.TIMESTAMP,
        "b": DataType.BOOL,
        "e": DataType.ENUM,
        "p": DataType.STRUCT,
    }
    s, b, e, p = (model.property(i) for i in "sbep")
    assert s is not None
    assert b is not None
    assert e is not None
    assert p is not None
    assert s.access is Access.READ_WRITE
    assert b.schema.bool_labels == ("off", "on")
    assert e.schema.enum[0].description == "the first"
    assert p.required
    assert p.extensions == {"vendor:register": 7}
    assert p.schema.fields[0].required is False
    assert model.events[0].level is EventLevel.ALERT
    assert model.services[0].call_type is CallType.SYNC
    bindings = model.bindings
    assert bindings.reporting.default.poll_interval_s == 0.5
    assert bindings.reporting.default.deadband_mode is DeadbandMode.PERCENT
    assert bindings.reporting.groups[0].policy.heartbeat_s == 7200.0
    assert bindings.modbus is not None
    assert bindings.modbus.zero_based is False
    tables = [pt.table for pt in bindings.modbus.points]
    assert tables == [ModbusTable.HOLDING_REGISTER, ModbusTable.COIL, ModbusTable.INPUT_REGISTER]
    report = bindings.modbus.points[2].report
    assert report is not None
    assert report.poll_interval_s == 300.0
    assert model.extensions == {"x-origin": {"tool": "hand", "when": "2024-05-01"}}


def test_model_from_dict_without_source_map() -> None:
    model = model_from_dict({"model": "a/b", "version": "1.0.0"})
    assert model == ThingModel("a/b", SemVer(1, 0, 0))
    with pytest.raises(ModelLoadError) as info:
        model_from_dict({"model": "a/b", "version": "1.0.0", "properties": [{"id": "x"}]})
    assert str(info.value).startswith("<model>:1:1: error: properties[0]: missing required key")


@pytest.mark.parametrize(
    "document",
    [None, [], "model", 42, [{"model": "a/b"}]],
    ids=["empty", "list", "string", "number", "list-of-mapping"],
)
def test_document_must_be_a_mapping(document: Any) -> None:
    text = yaml.safe_dump(document) if document is not None else ""
    (diag,) = load_errors(text)
    assert diag.message.startswith("expected a mapping")
    assert diag.location.line == 1


# --------------------------------------------------------------------------- the examples


def example_models() -> list[Path]:
    return sorted((EXAMPLES / "models").glob("*.yaml"))


def test_there_are_example_models() -> None:
    assert any(path.name == "energy-meter-3p.yaml" for path in example_models())


@pytest.mark.parametrize("path", example_models(), ids=lambda p: p.name)
def test_example_model_loads(path: Path) -> None:
    model = load_model_file(path)
    assert model.name
    assert model.properties
    # The canonical writer's output loads back to the same model.
    assert load_model_text(yaml.safe_dump(model_to_dict(model), sort_keys=False)) == model


def test_the_broken_example_reports_every_mistake() -> None:
    path = EXAMPLES / "broken" / "broken-meter.yaml"
    if not path.exists():
        pytest.skip("no broken example")
    with pytest.raises(ModelLoadError) as info:
        load_model_file(path)
    diagnostics = info.value.diagnostics
    assert len(diagnostics) >= 8
    positions = [(d.location.line, d.location.column) for d in diagnostics]
    assert positions == sorted(positions)
    assert all(d.location.file == str(path) for d in diagnostics)


# --------------------------------------------------------------------------- fuzzing

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def load_or_error(data: str | bytes) -> ThingModel | ModelLoadError:
    """The model, or the ModelLoadError raised; anything else propagates (and fails the test)."""
    try:
        return load_model_text(data, "fuzz.yaml")
    except ModelLoadError as exc:
        return exc


def model_or_error(document: Any) -> ThingModel | ModelLoadError:
    try:
        return model_from_dict(document)
    except ModelLoadError as exc:
        return exc


def assert_load_only_raises_model_load_error(data: str | bytes) -> None:
    result = load_or_error(data)
    if isinstance(result, ModelLoadError):
        assert result.diagnostics
        for diag in result.diagnostics:
            assert diag.location.file == "fuzz.yaml"
            assert diag.message
        assert str(result)
    else:
        assert isinstance(result, ThingModel)


@FUZZ
@given(st.text())
def test_fuzz_arbitrary_text(text: str) -> None:
    assert_load_only_raises_model_load_error(text)


@FUZZ
@given(st.binary())
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    assert_load_only_raises_model_load_error(data)


YAML_TOKENS = st.sampled_from(
    [
        "model: a/b\n",
        'version: "1.0.0"\n',
        "properties:\n",
        "  - ",
        "{id: x, type: int32}",
        "&a ",
        "*a",
        "<<: ",
        "? ",
        ": ",
        "[",
        "]",
        "{",
        "}",
        ", ",
        "!!python/object:x ",
        "!!binary ",
        "'",
        '"',
        "#",
        "\n",
        "  ",
        "---\n",
        "...\n",
        "%YAML 1.1\n",
        "- ",
        "|\n",
        ">-\n",
        "\t",
        "\ufeff",
        "\x85",
        "~",
        "on",
        "0x1F",
        "1e3",
        ".nan",
    ]
)


@FUZZ
@given(st.lists(YAML_TOKENS | texts, max_size=30).map("".join))
def test_fuzz_yaml_like_token_soup(text: str) -> None:
    assert_load_only_raises_model_load_error(text)


_KEYS = st.sampled_from(
    [
        "model",
        "version",
        "properties",
        "events",
        "services",
        "components",
        "bindings",
        "extends",
        "id",
        "type",
        "values",
        "labels",
        "fields",
        "items",
        "min",
        "max",
        "modbus",
        "points",
        "property",
        "table",
        "address",
        "reporting",
        "groups",
        "default",
    ]
)
_documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_KEYS | texts, children, max_size=5)
    ),
    max_leaves=25,
)


@FUZZ
@given(_documents)
def test_fuzz_json_like_documents(document: Any) -> None:
    assert_load_only_raises_model_load_error(yaml.safe_dump(document, allow_unicode=True))


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*path, i))
    return found


@st.composite
def mutated_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid model's YAML form with a few values replaced, removed or added."""
    document = copy.deepcopy(model_to_dict(draw(thing_models_strategy())))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(document)))
        if not path:
            continue
        parent = document
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(("replace", "remove", "add")))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "remove":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(_KEYS | texts)] = draw(json_values)
        else:
            parent.append(draw(json_values))
    return document


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_documents())
def test_fuzz_mutated_valid_models(document: dict[str, Any]) -> None:
    result = model_or_error(document)
    assert isinstance(result, ThingModel) or result.diagnostics
    assert_load_only_raises_model_load_error(yaml.safe_dump(document, allow_unicode=True))


WRONG_VALUES: list[Any] = [None, True, -1, 1.5, "", "x", [], [1], {}, {"a": 1}, [{"id": "z"}]]


@pytest.mark.parametrize(
    "text",
    [FULL, (EXAMPLES / "models" / "energy-meter-3p.yaml").read_text()],
    ids=["full", "energy-meter"],
)
def test_every_value_replaced_by_a_wrong_type_is_an_error_not_a_crash(text: str) -> None:
    """Each value in turn (and each key's value at every depth) replaced by values of other
    types: the reader reports ModelLoadError, never TypeError or AttributeError."""
    document = yaml.safe_load(text)
    reported = 0
    for path in _paths(document)[1:]:
        for wrong in WRONG_VALUES:
            mutated = copy.deepcopy(document)
            parent = mutated
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]] = copy.deepcopy(wrong)
            result = model_or_error(mutated)
            if isinstance(result, ModelLoadError):
                assert result.diagnostics
                reported += 1
    assert reported > len(_paths(document)) * 3
