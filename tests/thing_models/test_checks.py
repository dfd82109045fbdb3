"""Table-driven tests of every shape and consistency check, each at its exact file:line:column.

Each case is a YAML snippet appended to a base document, the line and column of the offending
value within the snippet (line 1 is the snippet's first line), and a fragment of the message.
Every snippet holds exactly one mistake, so each must produce exactly one diagnostic.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import pytest

from thing_models.checks import check_model, mqtt_topic_problem
from thing_models.errors import Diagnostic, ModelLoadError
from thing_models.model import (
    DataSchema,
    DataType,
    ModelRef,
    Property,
    SemVer,
    ThingModel,
)
from thing_models.yaml_format import load_model_text

FILE = "device.yaml"

#: Just the identity: for snippets about affordances and data schemas.
HEADER = """\
model: acme.test/device
version: "1.0.0"
"""

#: A device to bind: for snippets about bindings (16 lines).
DEVICE = """\
model: acme.test/device
version: "1.0.0"
components:
  - {instance: pump, model: acme.test/pump@1}
properties:
  - {id: temp, type: float}
  - {id: mode, type: enum, values: {1: auto, 2: manual}}
  - {id: relay, type: bool, access: rw}
  - {id: setpoint, type: float, access: rw}
  - {id: flags, type: int32}
events:
  - {id: alarm}
services:
  - id: set_mode
    inputs:
      - {id: mode, type: int32}
"""

BASES = {"none": "", "header": HEADER, "device": DEVICE}


@dataclass(frozen=True)
class Case:
    id: str
    base: str
    snippet: str
    line: int
    column: int
    fragment: str
    hint: str = ""


def case(
    id: str, base: str, snippet: str, line: int, column: int, fragment: str, hint: str = ""
) -> Case:
    return Case(id, base, textwrap.dedent(snippet), line, column, fragment, hint)


def H(id: str, snippet: str, line: int, column: int, fragment: str, hint: str = "") -> Case:
    """A case on the HEADER base."""
    return case(id, "header", snippet, line, column, fragment, hint)


def D(id: str, snippet: str, line: int, column: int, fragment: str, hint: str = "") -> Case:
    """A case on the DEVICE base."""
    return case(id, "device", snippet, line, column, fragment, hint)


def modbus(point: str) -> str:
    """A Modbus binding with one point, given in block style at 6 spaces (its line 4 on)."""
    return "bindings:\n  modbus:\n    points:\n" + textwrap.indent(textwrap.dedent(point), " " * 6)


def modbus_service(write: str) -> str:
    """A Modbus binding with one service write (its line 4 on)."""
    return "bindings:\n  modbus:\n    services:\n" + textwrap.indent(
        textwrap.dedent(write), " " * 6
    )


def section(protocol: str, body: str) -> str:
    """``bindings: {protocol: body}`` with body at 4 spaces (its line 3 on)."""
    return f"bindings:\n  {protocol}:\n" + textwrap.indent(textwrap.dedent(body), " " * 4)


# --------------------------------------------------------------------------- identity and shape

IDENTITY_CASES = [
    case("model-name", "none", 'model: Acme/Device\nversion: "1.0.0"\n', 1, 8, "invalid model"),
    case("model-missing", "none", 'version: "1.0.0"\n', 1, 1, "missing required key 'model'"),
    case("model-empty", "none", 'model:\nversion: "1.0.0"\n', 1, 7, "'model' has no value"),
    case("version", "none", 'model: a/b\nversion: "1.0"\n', 2, 10, "invalid version"),
    case("version-float", "none", "model: a/b\nversion: 1.0\n", 2, 10, "invalid version"),
    H("unknown-top-key", "titel: Meter\n", 1, 1, "unknown key 'titel'", "did you mean 'title'?"),
    H("extends", "extends: not a ref\n", 1, 10, "invalid extends reference"),
    H(
        "component-model",
        "components:\n  - {instance: pump, model: Pump}\n",
        2,
        29,
        "invalid model reference",
    ),
    H(
        "component-instance",
        "components:\n  - {instance: 2pump, model: a/pump}\n",
        2,
        16,
        "invalid instance",
    ),
    H("root-not-mapping", "properties: {id: t}\n", 1, 13, "expected a list"),
    H("property-not-mapping", "properties:\n  - temp\n", 2, 5, "a property mapping"),
    H("missing-type", "properties:\n  - {id: t}\n", 2, 5, "missing required key 'type'"),
    H("empty-type", "properties:\n  - {id: t, type: }\n", 2, 18, "'type' has no value"),
    H(
        "unknown-type",
        "properties:\n  - {id: t, type: flaot}\n",
        2,
        19,
        "invalid type",
        "did you mean 'float'?",
    ),
    H(
        "unknown-property-key",
        "properties:\n  - {id: t, type: float, mx: 5}\n",
        2,
        26,
        "unknown key 'mx'",
        "did you mean 'max'?",
    ),
    H(
        "access",
        "properties:\n  - {id: t, type: float, access: write}\n",
        2,
        34,
        "invalid access",
    ),
    H(
        "required-not-bool",
        "properties:\n  - {id: t, type: float, required: yes}\n",
        2,
        36,
        "required must be true or false",
    ),
    H("min-not-number", "properties:\n  - {id: t, type: float, min: low}\n", 2, 31, "finite"),
    H("max-nan", "properties:\n  - {id: t, type: float, max: .nan}\n", 2, 31, "finite"),
    H(
        "event-level",
        "events:\n  - {id: e, level: fatal}\n",
        2,
        20,
        "invalid level",
    ),
    H("service-call", "services:\n  - {id: s, call: later}\n", 2, 19, "invalid call"),
    H(
        "enum-label-not-string",
        "properties:\n  - {id: m, type: enum, values: {1: [a], 2: b}}\n",
        2,
        37,
        "enum label must be a string",
    ),
    H(
        "enum-value-float",
        "properties:\n"
        "  - {id: m, type: enum, values: [{value: 1.5, label: a}, {value: 2, label: b}]}\n",
        2,
        42,
        "enum value must be an integer or a string",
    ),
]

# --------------------------------------------------------------------------- identifiers, schemas

SCHEMA_CASES = [
    H("id-digit", "properties:\n  - {id: 1st_phase, type: float}\n", 2, 10, "invalid id"),
    H("id-dash", "properties:\n  - {id: phase-a, type: float}\n", 2, 10, "invalid id"),
    H("id-long", f"properties:\n  - {{id: {'a' * 51}, type: float}}\n", 2, 10, "invalid id"),
    H("id-empty", "properties:\n  - {id: '', type: float}\n", 2, 10, "invalid id"),
    H("id-not-string", "properties:\n  - {id: 7, type: float}\n", 2, 10, "id must be a string"),
    H(
        "field-id",
        """\
        events:
          - id: e
            outputs:
              - {id: "the value", type: float}
        """,
        4,
        14,
        "invalid id",
    ),
    H(
        "duplicate-property",
        "properties:\n  - {id: temp, type: float}\n  - {id: temp, type: int32}\n",
        3,
        10,
        "duplicate property id 'temp'",
    ),
    H("duplicate-event", "events:\n  - {id: e}\n  - {id: e}\n", 3, 10, "duplicate event id 'e'"),
    H(
        "duplicate-service",
        "services:\n  - {id: s}\n  - {id: s}\n",
        3,
        10,
        "duplicate service id 's'",
    ),
    H(
        "duplicate-component",
        """\
        components:
          - {instance: pump, model: a/pump@1}
          - {instance: pump, model: a/pump@2}
        """,
        3,
        16,
        "duplicate component instance id 'pump'",
    ),
    H(
        "duplicate-struct-field",
        """\
        properties:
          - id: pos
            type: struct
            fields:
              - {id: x, type: float}
              - {id: x, type: float}
        """,
        6,
        14,
        "duplicate field id 'x'",
    ),
    H(
        "duplicate-input",
        """\
        services:
          - id: go
            inputs:
              - {id: speed, type: int32}
              - {id: speed, type: int32}
        """,
        5,
        14,
        "duplicate field id 'speed'",
    ),
    H(
        "min-above-max",
        "properties:\n  - {id: t, type: float, min: 10, max: 0}\n",
        2,
        31,
        "min is greater than max",
    ),
    H("step-zero", "properties:\n  - {id: t, type: float, step: 0}\n", 2, 32, "step must be"),
    H("step-negative", "properties:\n  - {id: n, type: int32, step: -1}\n", 2, 32, "step must be"),
    H(
        "enum-empty",
        "properties:\n  - {id: m, type: enum, values: {}}\n",
        2,
        33,
        "enum has no values",
    ),
    H("enum-missing", "properties:\n  - {id: m, type: enum}\n", 2, 5, "enum has no values"),
    H(
        "enum-empty-list",
        "properties:\n  - {id: m, type: enum, values: []}\n",
        2,
        33,
        "enum has no values",
    ),
    H(
        "enum-duplicate",
        "properties:\n  - {id: m, type: enum, values: {1: a, '1': b}}\n",
        2,
        45,
        "duplicate enum value id '1'",
    ),
    H(
        "min-on-text",
        "properties:\n  - {id: s, type: text, min: 1}\n",
        2,
        30,
        "min does not apply to type text",
    ),
    H(
        "int32-range",
        "properties:\n  - {id: n, type: int32, max: 3000000000}\n",
        2,
        31,
        "max outside the int32 range",
    ),
    H(
        "int-fraction",
        "properties:\n  - {id: n, type: int64, min: 0.5}\n",
        2,
        31,
        "min of an integer type must be an integer",
    ),
    H(
        "timestamp-negative",
        "properties:\n  - {id: ts, type: timestamp, min: -1}\n",
        2,
        36,
        "min outside the timestamp range",
    ),
    H(
        "max-length-on-int",
        "properties:\n  - {id: n, type: int32, max_length: 5}\n",
        2,
        38,
        "max_length must be positive and only on text",
    ),
    H(
        "max-length-zero",
        "properties:\n  - {id: s, type: text, max_length: 0}\n",
        2,
        37,
        "max_length must be positive",
    ),
    H(
        "values-on-int",
        "properties:\n  - {id: n, type: int32, values: {1: a}}\n",
        2,
        34,
        "values do not apply to type int32",
    ),
    H(
        "labels-on-int",
        "properties:\n  - {id: n, type: int32, labels: {false: a, true: b}}\n",
        2,
        34,
        "labels do not apply to type int32",
    ),
    H(
        "labels-incomplete",
        "properties:\n  - {id: b, type: bool, labels: {false: off}}\n",
        2,
        33,
        "labels need both false and true",
    ),
    H("struct-empty", "properties:\n  - {id: s, type: struct}\n", 2, 5, "struct has no fields"),
    H(
        "fields-on-int",
        "properties:\n  - {id: n, type: int32, fields: [{id: a, type: int32}]}\n",
        2,
        34,
        "fields do not apply to type int32",
    ),
    H("array-no-items", "properties:\n  - {id: a, type: array}\n", 2, 5, "array needs items"),
    H(
        "max-items-zero",
        "properties:\n  - {id: a, type: array, items: {type: int32}, max_items: 0}\n",
        2,
        59,
        "max_items must be positive",
    ),
    H(
        "items-on-int",
        "properties:\n  - {id: n, type: int32, items: {type: int32}}\n",
        2,
        33,
        "items/max_items do not apply to type int32",
    ),
    H(
        "max-items-on-text",
        "properties:\n  - {id: n, type: text, max_items: 3}\n",
        2,
        36,
        "items/max_items do not apply to type text",
    ),
    H(
        "nested-min-above-max",
        """\
        properties:
          - id: readings
            type: array
            items:
              type: struct
              fields:
                - {id: v, type: float, min: 5, max: 1}
        """,
        7,
        37,
        "min is greater than max",
    ),
    H(
        "items-unknown-key",
        "properties:\n  - {id: a, type: array, items: {type: int32, mn: 0}}\n",
        2,
        47,
        "unknown key 'mn'",
        "did you mean 'min'?",
    ),
    H(
        "event-output-step",
        """\
        events:
          - id: e
            outputs:
              - {id: v, type: float, step: 0}
        """,
        4,
        36,
        "step must be positive",
    ),
    H(
        "service-output-max-length",
        """\
        services:
          - id: s
            outputs:
              - {id: msg, type: text, max_length: -1}
        """,
        4,
        43,
        "max_length must be positive",
    ),
]

# --------------------------------------------------------------------------- Modbus

MODBUS_CASES = [
    D(
        "missing-property",
        modbus("- {property: humidity, table: holding, address: 0, type: uint16}\n"),
        4,
        20,
        "binding names a property the model does not define",
    ),
    D(
        "unknown-instance",
        modbus("- {property: fan:speed, table: holding, address: 0, type: uint16}\n"),
        4,
        20,
        "binding names a property the model does not define",
    ),
    D(
        "invalid-target",
        modbus("- {property: 'my temp', table: holding, address: 0, type: uint16}\n"),
        4,
        20,
        "invalid property name",
    ),
    D(
        "bound-twice",
        modbus(
            """\
            - {property: temp, table: holding, address: 0, type: float32}
            - {property: temp, table: holding, address: 2, type: float32}
            """
        ),
        5,
        20,
        "property bound twice in modbus",
    ),
    D(
        "coil-not-bit",
        modbus(
            """\
            - property: relay
              table: coil
              address: 0
              type: uint16
            """
        ),
        7,
        15,
        "coil holds single bits",
    ),
    D(
        "discrete-not-bit",
        modbus(
            """\
            - property: temp
              table: discrete_input
              address: 0
              type: float32
            """
        ),
        7,
        15,
        "discrete_input holds single bits",
    ),
    D(
        "count-vs-type",
        modbus(
            """\
            - property: temp
              table: holding_register
              address: 0
              type: float32
              count: 1
            """
        ),
        8,
        16,
        "count disagrees with type float32",
    ),
    D(
        "count-vs-uint64",
        modbus(
            """\
            - property: flags
              table: input_register
              address: 0
              type: uint64
              count: 2
            """
        ),
        8,
        16,
        "count disagrees with type uint64",
    ),
    D(
        "string-needs-count",
        modbus(
            """\
            - property: temp
              table: holding_register
              address: 0
              type: string
            """
        ),
        4,
        9,
        "string needs a register count",
    ),
    D(
        "overlap",
        modbus(
            """\
            - {property: temp, table: holding_register, address: 0, type: float32}
            - property: flags
              table: holding_register
              address: 1
              type: int32
            """
        ),
        7,
        18,
        "register range overlaps points[0] (temp, holding_register 0..1, unit 1)",
    ),
    D(
        "overlap-long-span",
        modbus(
            """\
            - {property: flags, table: input_register, address: 12, type: uint16}
            - {property: mode, table: input_register, address: 18, type: uint16}
            - {property: temp, table: input_register, address: 10, type: string, count: 8}
            """
        ),
        4,
        59,
        "register range overlaps points[2] (temp, input_register 10..17, unit 1)",
    ),
    D(
        "overlap-coils",
        modbus(
            """\
            - {property: relay, table: coil, address: 3, type: bit}
            - {property: mode, table: coil, address: 3, type: bit}
            """
        ),
        5,
        48,
        "register range overlaps points[0] (relay, coil 3..3, unit 1)",
    ),
    D(
        "past-65535",
        modbus(
            """\
            - property: temp
              table: holding_register
              address: 65535
              type: float32
            """
        ),
        6,
        18,
        "register range runs past 65535",
    ),
    D(
        "address-range",
        modbus(
            """\
            - property: temp
              table: holding_register
              address: 70000
              type: float32
            """
        ),
        6,
        18,
        "address out of range",
    ),
    D(
        "bit-outside",
        modbus(
            """\
            - property: relay
              table: holding_register
              address: 0
              type: uint16
              bit: 16
            """
        ),
        8,
        14,
        "bit index outside the register value",
    ),
    D(
        "bit-on-coil",
        modbus(
            """\
            - property: relay
              table: coil
              address: 0
              type: bit
              bit: 0
            """
        ),
        8,
        14,
        "bit index outside the register value",
    ),
    D(
        "mask-too-wide",
        modbus(
            """\
            - property: flags
              table: holding_register
              address: 0
              type: uint16
              mask: 0x1FFFF
            """
        ),
        8,
        15,
        "mask wider than uint16",
    ),
    D(
        "mask-on-float",
        modbus(
            """\
            - property: temp
              table: holding_register
              address: 0
              type: float32
              mask: 0xFF
            """
        ),
        8,
        15,
        "mask does not apply to float32",
    ),
    D(
        "read-function",
        modbus(
            """\
            - property: temp
              table: holding_register
              address: 0
              type: float32
              read_function: 4
            """
        ),
        8,
        24,
        "function 4 does not read holding_register",
    ),
    D(
        "scale-zero",
        modbus(
            """\
            - property: temp
              table: holding_register
              address: 0
              type: int16
              scale: 0
            """
        ),
        8,
        16,
        "scale must not be zero",
    ),
    D(
        "valid-range",
        modbus(
            """\
            - property: temp
              table: holding_register
              address: 0
              type: int16
              valid_min: 100
              valid_max: -100
            """
        ),
        8,
        20,
        "valid_min is greater than valid_max",
    ),
    D(
        "rw-on-read-only-table",
        modbus(
            """\
            - property: setpoint
              table: input_register
              address: 0
              type: float32
            """
        ),
        5,
        16,
        "property setpoint is writable but input_register is read-only",
    ),
    D(
        "write-function-vs-table",
        modbus(
            """\
            - property: relay
              table: coil
              address: 0
              type: bit
              write_function: 6
            """
        ),
        8,
        25,
        "function 6 cannot write coil",
    ),
    D(
        "write-function-read-only-table",
        modbus(
            """\
            - property: temp
              table: input_register
              address: 0
              type: float32
              write_function: 16
            """
        ),
        8,
        25,
        "function 16 cannot write input_register",
    ),
    D(
        "function-6-two-registers",
        modbus(
            """\
            - property: setpoint
              table: holding_register
              address: 0
              type: float32
              write_function: 6
            """
        ),
        8,
        25,
        "function 6 writes a single register",
    ),
    D(
        "write-function-range",
        modbus(
            """\
            - property: setpoint
              table: holding_register
              address: 0
              type: float32
              write_function: 3
            """
        ),
        8,
        25,
        "write_function out of range",
    ),
    D(
        "enum-map-missing-member",
        modbus(
            """\
            - property: mode
              table: holding_register
              address: 0
              type: uint16
              enum:
                1: 1
                2: 3
            """
        ),
        10,
        14,
        "maps to a value the property enum does not have",
    ),
    D(
        "enum-map-raw-not-int",
        modbus(
            """\
            - property: mode
              table: holding_register
              address: 0
              type: uint16
              enum:
                one: 1
            """
        ),
        9,
        11,
        "raw enum value must be an integer",
    ),
    D(
        "unknown-point-key",
        modbus(
            """\
            - property: temp
              table: holding_register
              address: 0
              type: float32
              scael: 10
            """
        ),
        8,
        9,
        "unknown key 'scael'",
        "did you mean 'scale'?",
    ),
    D(
        "unknown-table",
        modbus(
            """\
            - property: temp
              table: holding_registr
              address: 0
              type: float32
            """
        ),
        5,
        16,
        "invalid table",
        "did you mean 'holding_register'?",
    ),
    D(
        "unknown-modbus-type",
        modbus(
            """\
            - property: temp
              table: holding_register
              address: 0
              type: flaot32
            """
        ),
        7,
        15,
        "invalid type",
        "did you mean 'float32'?",
    ),
    D(
        "addressing",
        "bindings:\n  modbus:\n    addressing: one_based\n",
        3,
        17,
        "invalid addressing",
    ),
    D("unit-id", "bindings:\n  modbus:\n    unit_id: 256\n", 3, 14, "unit_id out of range"),
    D(
        "service-unknown",
        modbus_service("- {service: reboot, table: coil, address: 9, type: bit, value: true}\n"),
        4,
        19,
        "service-write names a service the model does not define",
    ),
    D(
        "service-unknown-instance",
        modbus_service("- {service: fan:start, table: coil, address: 9, type: bit, value: true}\n"),
        4,
        19,
        "service-write names a service the model does not define",
    ),
    D(
        "service-read-only-table",
        modbus_service(
            """\
            - service: set_mode
              table: input_register
              address: 9
              type: uint16
              param: mode
            """
        ),
        5,
        16,
        "input_register is read-only",
    ),
    D(
        "service-value-and-param",
        modbus_service(
            """\
            - service: set_mode
              table: holding_register
              address: 9
              type: uint16
              param: mode
              value: 1
            """
        ),
        4,
        9,
        "give exactly one of value or param",
    ),
    D(
        "service-neither",
        modbus_service(
            """\
            - service: set_mode
              table: holding_register
              address: 9
              type: uint16
            """
        ),
        4,
        9,
        "give exactly one of value or param",
    ),
    D(
        "service-param-not-input",
        modbus_service(
            """\
            - service: set_mode
              table: holding_register
              address: 9
              type: uint16
              param: speed
            """
        ),
        8,
        16,
        "param is not an input of the service",
    ),
    D(
        "service-function-6",
        modbus_service(
            """\
            - service: set_mode
              table: holding_register
              address: 9
              type: int32
              param: mode
              write_function: 6
            """
        ),
        9,
        25,
        "function 6 writes a single register",
    ),
    D(
        "service-value-not-scalar",
        modbus_service(
            """\
            - service: set_mode
              table: holding_register
              address: 9
              type: int32
              param: mode
              value: [1]
            """
        ),
        9,
        16,
        "value must be a number or boolean",
    ),
]

# --------------------------------------------------------------------------- BACnet, MQTT, CoAP

OTHER_PROTOCOL_CASES = [
    D(
        "bacnet-object-type",
        section(
            "bacnet",
            """\
            points:
              - property: temp
                object_type: analog-inptu
                instance: 1
            """,
        ),
        5,
        22,
        "unknown BACnet object type; did you mean 'analog-input'?",
    ),
    D(
        "bacnet-object-type-far",
        section(
            "bacnet",
            """\
            points:
              - {property: temp, object_type: thermometer, instance: 1}
            """,
        ),
        4,
        39,
        "unknown BACnet object type",
    ),
    D(
        "bacnet-property-id",
        section(
            "bacnet",
            """\
            points:
              - property: temp
                object_type: analog-input
                instance: 1
                property_id: Present_Value
            """,
        ),
        7,
        22,
        "invalid BACnet property",
    ),
    D(
        "bacnet-cov",
        section(
            "bacnet",
            """\
            points:
              - property: temp
                object_type: analog-input
                instance: 1
                cov_increment: 0
            """,
        ),
        7,
        24,
        "cov_increment must be positive",
    ),
    D(
        "bacnet-instance",
        section(
            "bacnet",
            """\
            points:
              - property: temp
                object_type: analog-input
                instance: 4194303
            """,
        ),
        6,
        19,
        "instance out of range",
    ),
    D(
        "bacnet-missing-property",
        section(
            "bacnet",
            """\
            points:
              - {property: humidity, object_type: analog-input, instance: 1}
            """,
        ),
        4,
        20,
        "binding names a property the model does not define",
    ),
    D(
        "mqtt-hash-not-last",
        section("mqtt", "points:\n  - {property: temp, topic: a/#/b}\n"),
        4,
        33,
        "invalid MQTT topic: '#' must be the last level",
    ),
    D(
        "mqtt-plus-in-level",
        section("mqtt", "points:\n  - {property: temp, topic: a+/b}\n"),
        4,
        33,
        "invalid MQTT topic: wildcard inside level 'a+'",
    ),
    D(
        "mqtt-hash-in-level",
        section("mqtt", "points:\n  - {property: temp, topic: 'sensors/t#'}\n"),
        4,
        33,
        "wildcard inside level 't#'",
    ),
    D(
        "mqtt-empty-topic",
        section("mqtt", "points:\n  - {property: temp, topic: ''}\n"),
        4,
        33,
        "topic must not be empty",
    ),
    D(
        "mqtt-json-path",
        section("mqtt", "points:\n  - {property: temp, topic: t, path: $.a..b}\n"),
        4,
        42,
        "invalid payload path",
    ),
    D(
        "mqtt-json-path-index",
        section("mqtt", "points:\n  - {property: temp, topic: t, path: '$.items[x]'}\n"),
        4,
        42,
        "invalid payload path",
    ),
    D(
        "mqtt-command-wildcard",
        section("mqtt", "command_topic: dev/+/cmd\n"),
        3,
        20,
        "invalid MQTT topic: wildcards are not allowed here",
    ),
    D(
        "mqtt-event-unknown",
        section("mqtt", "events:\n  - {event: smoke, topic: dev/smoke}\n"),
        4,
        17,
        "binding names an event the model does not define",
    ),
    D(
        "mqtt-event-unknown-instance",
        section("mqtt", "events:\n  - {event: fan:fault, topic: dev/fan}\n"),
        4,
        17,
        "binding names an event the model does not define",
    ),
    D(
        "mqtt-event-topic",
        section("mqtt", "events:\n  - {event: alarm, topic: 'dev/#/alarm'}\n"),
        4,
        31,
        "'#' must be the last level",
    ),
    D(
        "mqtt-event-path",
        section("mqtt", "events:\n  - {event: alarm, topic: dev/alarm, path: 'alarm.state'}\n"),
        4,
        48,
        "invalid payload path",
    ),
    D("mqtt-qos", section("mqtt", "qos: 3\n"), 3, 10, "qos out of range"),
    D(
        "mqtt-unknown-key",
        section("mqtt", "points:\n  - {property: temp, topic: t, pth: $.t}\n"),
        4,
        36,
        "unknown key 'pth'",
        "did you mean 'path'?",
    ),
    D(
        "coap-resource",
        section("coap", "points:\n  - {property: temp, resource: sensors/temp}\n"),
        4,
        36,
        "invalid CoAP resource path",
    ),
    D(
        "coap-resource-space",
        section("coap", "points:\n  - {property: temp, resource: /sensors/room temp}\n"),
        4,
        36,
        "invalid CoAP resource path",
    ),
    D(
        "coap-path",
        section("coap", "points:\n  - {property: temp, resource: /t, path: '$[abc]'}\n"),
        4,
        46,
        "invalid payload path",
    ),
    D(
        "coap-mode",
        section("coap", "points:\n  - {property: temp, resource: /t, mode: observer}\n"),
        4,
        46,
        "invalid mode",
        "did you mean 'observe'?",
    ),
]

# --------------------------------------------------------------------------- reporting

REPORTING_CASES = [
    D(
        "heartbeat-below-poll",
        section(
            "reporting",
            """\
            groups:
              fast: {poll_interval: 10s, heartbeat: 5s}
            """,
        ),
        4,
        45,
        "heartbeat shorter than the poll interval",
    ),
    D(
        "heartbeat-below-poll-default",
        section("reporting", "default: {poll_interval: 1m, heartbeat: 30}\n"),
        3,
        45,
        "heartbeat shorter than the poll interval",
    ),
    D(
        "percent-deadband",
        section(
            "reporting",
            "default: {on_change: true, deadband: 150, deadband_mode: percent}\n",
        ),
        3,
        42,
        "percent deadband over 100",
    ),
    D(
        "negative-deadband",
        section("reporting", "default: {on_change: true, deadband: -1}\n"),
        3,
        42,
        "deadband must not be negative",
    ),
    D(
        "duration",
        section("reporting", "default: {poll_interval: 10 parsecs}\n"),
        3,
        30,
        "invalid duration for poll_interval",
    ),
    D(
        "duration-zero",
        section("reporting", "default: {poll_interval: 0s}\n"),
        3,
        30,
        "invalid duration for poll_interval",
    ),
    D(
        "deadband-mode",
        section("reporting", "default: {deadband_mode: percentage}\n"),
        3,
        30,
        "invalid deadband_mode",
        "did you mean 'percent'?",
    ),
    D(
        "group-name",
        section("reporting", "groups:\n  fast lane: {poll_interval: 1s}\n"),
        4,
        7,
        "invalid group name",
    ),
    D(
        "policy-unknown-key",
        section("reporting", "default: {pol_interval: 1s}\n"),
        3,
        15,
        "unknown key 'pol_interval'",
        "did you mean 'poll_interval'?",
    ),
    D(
        "unknown-group",
        """\
        bindings:
          reporting:
            groups:
              fast: {poll_interval: 1s}
          modbus:
            points:
              - property: temp
                table: holding_register
                address: 0
                type: float32
                group: fats
        """,
        11,
        16,
        "unknown reporting group",
    ),
    D(
        "unknown-group-no-groups",
        section("coap", "points:\n  - {property: temp, resource: /t, group: fast}\n"),
        4,
        47,
        "unknown reporting group",
    ),
    D(
        "point-report-heartbeat",
        section(
            "mqtt",
            """\
            points:
              - property: temp
                topic: t
                report: {poll_interval: 60, heartbeat: 10}
            """,
        ),
        6,
        48,
        "heartbeat shorter than the poll interval",
    ),
]

ALL_CASES = IDENTITY_CASES + SCHEMA_CASES + MODBUS_CASES + OTHER_PROTOCOL_CASES + REPORTING_CASES


def load_errors(text: str) -> list[Diagnostic]:
    with pytest.raises(ModelLoadError) as info:
        load_model_text(text, FILE)
    return list(info.value.diagnostics)


def describe(text: str, diagnostics: list[Diagnostic]) -> str:
    """The diagnostics, each with the source text at its position (for failure messages)."""
    lines = text.splitlines()
    out = []
    for d in diagnostics:
        line = lines[d.location.line - 1] if 0 < d.location.line <= len(lines) else ""
        out.append(f"{d}\n    at: {line[d.location.column - 1 :]!r}")
    return "\n".join(out)


@pytest.mark.parametrize("c", ALL_CASES, ids=[c.id for c in ALL_CASES])
def test_check_reports_position_value_and_expectation(c: Case) -> None:
    base = BASES[c.base]
    text = base + c.snippet
    diagnostics = load_errors(text)
    assert len(diagnostics) == 1, describe(text, diagnostics)
    (diag,) = diagnostics
    line = base.count("\n") + c.line
    assert (diag.location.file, diag.location.line, diag.location.column) == (
        FILE,
        line,
        c.column,
    ), describe(text, diagnostics)
    assert c.fragment in diag.message, describe(text, diagnostics)
    # What was expected is always said; the text names file:line:column and the path.
    assert diag.expected, describe(text, diagnostics)
    rendered = str(diag)
    assert rendered.startswith(f"{FILE}:{line}:{c.column}: error: ")
    assert diag.path in rendered  # empty only for the document itself
    if c.hint:
        assert diag.hint == c.hint
        assert c.hint in rendered


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in ALL_CASES]
    assert len(ids) == len(set(ids))


def test_offending_values_are_named() -> None:
    """The value is in the rendered message wherever there is one to name."""
    diag = load_errors(HEADER + "properties:\n  - {id: t, type: float, min: 10, max: 0}\n")[0]
    assert diag.value == 10
    assert "(got 10); expected min <= max (0)" in str(diag)
    diag = load_errors(DEVICE + MODBUS_CASES[0].snippet)[0]
    assert diag.value == "humidity"
    assert "(got 'humidity')" in str(diag)
    assert "one of flags, mode, relay, setpoint, temp" in diag.expected
    diag = load_errors(DEVICE + section("mqtt", "points:\n  - {property: temp, topic: a/#/b}\n"))[0]
    assert diag.value == "a/#/b"


def test_duplicate_names_the_first_definition() -> None:
    diag = load_errors(HEADER + "events:\n  - {id: e}\n  - {id: x}\n  - {id: e}\n")[0]
    assert diag.expected == "unique ids (first defined at events[0].id)"


# --------------------------------------------------------------------------- what must pass


VALID_BINDINGS = {
    "bits-of-one-register": modbus(
        """\
        - {property: relay, table: holding_register, address: 0, type: uint16, bit: 0}
        - {property: mode, table: holding_register, address: 0, type: uint16, mask: 0x0F}
        - {property: flags, table: holding_register, address: 1, type: int32, bit: 31}
        """
    ),
    "same-address-other-unit": modbus(
        """\
        - {property: temp, table: holding_register, address: 0, type: float32}
        - {property: flags, table: holding_register, address: 0, type: int32, unit_id: 2}
        """
    ),
    "same-address-other-table": modbus(
        """\
        - {property: temp, table: input_register, address: 0, type: float32}
        - {property: flags, table: holding_register, address: 0, type: int32}
        - {property: relay, table: coil, address: 0, type: bit}
        - {property: mode, table: discrete_input, address: 0, type: bit}
        """
    ),
    "adjacent-ranges": modbus(
        """\
        - {property: temp, table: holding, address: 0, type: float64, count: 4}
        - {property: flags, table: holding, address: 4, type: string, count: 2}
        - {property: setpoint, table: holding, address: 6, type: float32, write_function: 16}
        - {property: mode, table: holding, address: 65535, type: uint16, write_function: 6}
        """
    ),
    "component-target": modbus(
        "- {property: pump:speed, table: holding_register, address: 0, type: uint16}\n"
    ),
    "enum-map": modbus(
        "- {property: mode, table: holding, address: 0, type: uint16, enum: {0: 1, 1: 2}}\n"
    ),
    "service-writes": modbus_service(
        """\
        - {service: set_mode, table: holding, address: 1, type: uint16, param: mode}
        - {service: pump:start, table: coil, address: 2, type: bit, value: true}
        """
    ),
    "bacnet": section(
        "bacnet",
        """\
        device_instance: 1234
        points:
          - {property: temp, object_type: analog-input, instance: 0}
          - {property: relay, object_type: binary-output, instance: 1, write_priority: 8}
          - {property: mode, object_type: '513', instance: 2, property_id: '85'}
        """,
    ),
    "mqtt": section(
        "mqtt",
        """\
        command_topic: dev/{device_id}/cmd
        reply_topic: dev/+/reply/#
        points:
          - {property: temp, topic: 'dev/{device_id}/state', path: "$.t['room 1'][0]"}
          - {property: mode, topic: '#'}
          - {property: pump:speed, topic: +/pump, path: .speed}
        events:
          - {event: alarm, topic: dev/alarm}
          - {event: pump:fault, topic: dev/pump/fault}
        """,
    ),
    "coap": section(
        "coap",
        "points:\n  - {property: temp, resource: /s/t, mode: observe, content_format: cbor}\n",
    ),
    "reporting": section(
        "reporting",
        """\
        default: {poll_interval: 500ms, heartbeat: 500ms, deadband: 100, deadband_mode: percent}
        groups:
          slow: {poll_interval: 1h}
        """,
    ),
}


@pytest.mark.parametrize("snippet", VALID_BINDINGS.values(), ids=list(VALID_BINDINGS))
def test_valid_bindings_pass(snippet: str) -> None:
    model = load_model_text(DEVICE + snippet, FILE)
    assert model.bindings.protocols or model.bindings.reporting.groups


def test_extends_allows_inherited_targets() -> None:
    text = (
        HEADER
        + "extends: acme.test/base@1\n"
        + section(
            "mqtt", "points:\n  - {property: temp, topic: t}\nevents:\n  - {event: e, topic: e}\n"
        )
    )
    model = load_model_text(text)
    assert model.extends == ModelRef("acme.test/base", "1")


# --------------------------------------------------------------------------- check_model directly


def test_check_model_reports_paths_for_other_importers() -> None:
    model = ThingModel(
        "a/b",
        SemVer(1, 0, 0),
        properties=(
            Property("x", DataSchema(DataType.FLOAT, minimum=2, maximum=1)),
            Property("x", DataSchema(DataType.ENUM)),
        ),
    )
    problems = check_model(model)
    assert [(p.path, p.message) for p in problems] == [
        (("properties", 1, "id"), "duplicate property id 'x'"),
        (("properties", 0, "min"), "min is greater than max"),
        (("properties", 1, "values"), "enum has no values"),
    ]


@pytest.mark.parametrize(
    ("topic", "filter_allowed", "problem"),
    [
        ("a/b", True, None),
        ("+/b/#", True, None),
        ("#", True, None),
        ("a//b", True, None),
        ("dev/{device_id}/x", False, None),
        ("", True, "1..65535 bytes"),
        ("a\x00b", True, "without NUL"),
        ("a/#/b", True, "'#' must be the last level"),
        ("a+/b", True, "wildcard inside level 'a+'"),
        ("a/b#", True, "wildcard inside level 'b#'"),
        ("a/+", False, "wildcards are not allowed here"),
        ("x" * 65536, True, "1..65535 bytes"),
    ],
)
def test_mqtt_topic_problem(topic: str, filter_allowed: bool, problem: str | None) -> None:
    found = mqtt_topic_problem(topic, filter_allowed=filter_allowed)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


def test_one_based_addressing_refuses_address_zero() -> None:
    from thing_models.yaml_format import load_model_text

    text = (
        'model: acme/x\nversion: "1.0.0"\nproperties:\n  - {id: t, type: int32}\n'
        "bindings:\n  modbus:\n    addressing: one-based\n    points:\n"
        "      - {property: t, table: holding_register, address: 0, type: int16}\n"
    )
    with pytest.raises(ModelLoadError, match=r"x\.yaml:9:.*address 0 does not exist"):
        load_model_text(text, "x.yaml")


def test_the_reserved_diagnostic_event_id_cannot_be_declared() -> None:
    text = 'model: acme/x\nversion: "1.0.0"\nevents:\n  - {id: _diagnostic, level: info}\n'
    with pytest.raises(ModelLoadError, match=r"x\.yaml:4:.*'_diagnostic' is reserved"):
        load_model_text(text, "x.yaml")
