"""Benchmark: property values validated per second by the compiled telemetry validator.

Builds a three-phase energy meter model (40 properties: floats with ranges and steps, integers,
bools, text, two enums, a struct and an array), generates valid property reports of 20 values
and measures, in one process:

* ``values_per_s``: :meth:`ModelValidator.check_properties` on whole reports;
* ``values_per_s_single``: :meth:`ModelValidator.check_value` value by value;
* ``ceiling_isinstance_values_per_s``: a bare loop doing one ``isinstance`` per value;
* ``jsonschema_values_per_s``: ``jsonschema``'s Draft 2020-12 validator, compiled once with the
  equivalent JSON Schema, ``is_valid`` on the same reports (float ``multipleOf`` left out: its
  float division would reject valid values such as 0.3 on a 0.1 step).

A struct or an array counts as one value. Prints one JSON line. Run:
``.venv/bin/python benchmarks/bench_validator.py [--seconds 1.5]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from benchlib import machine
from jsonschema import Draft202012Validator

from thing_models.model import (
    DataSchema,
    DataType,
    EnumValue,
    Field,
    Property,
    SemVer,
    ThingModel,
)
from thing_models.telemetry import FLOAT32_MAX, compile_validator

S = DataSchema
T = DataType
TARGET_VALUES_PER_S = 200_000


def energy_meter() -> ThingModel:
    """A realistic three-phase energy meter: 40 properties of mixed types."""
    props: list[Property] = []
    for phase in "abc":
        props += [
            Property(f"voltage_{phase}", S(T.FLOAT, minimum=0, maximum=500, step=0.1, unit="V")),
            Property(f"current_{phase}", S(T.FLOAT, minimum=0, maximum=100, step=0.01, unit="A")),
            Property(f"power_{phase}", S(T.FLOAT, minimum=-50000, maximum=50000, unit="W")),
            Property(f"reactive_{phase}", S(T.FLOAT, minimum=-50000, maximum=50000, unit="var")),
            Property(f"pf_{phase}", S(T.FLOAT, minimum=-1, maximum=1, step=0.001)),
            Property(f"thd_{phase}", S(T.FLOAT, minimum=0, maximum=100, unit="%")),
        ]
    props += [
        Property("power_total", S(T.DOUBLE, minimum=-150000, maximum=150000, unit="W")),
        Property("frequency", S(T.FLOAT, minimum=45, maximum=65, step=0.01, unit="Hz")),
        Property("current_n", S(T.FLOAT, minimum=0, maximum=100, step=0.01, unit="A")),
        Property("energy_import", S(T.DOUBLE, minimum=0, unit="kWh")),
        Property("energy_export", S(T.DOUBLE, minimum=0, unit="kWh")),
        Property("energy_reactive", S(T.DOUBLE, unit="kvarh")),
        Property("demand_max", S(T.FLOAT, minimum=0, maximum=150000, unit="W")),
        Property("pulse_count", S(T.INT64, minimum=0)),
        Property("temperature", S(T.INT32, minimum=-40, maximum=125, unit="°C")),
        Property("rssi", S(T.INT32, minimum=-120, maximum=0, unit="dBm")),
        Property("uptime_s", S(T.INT64, minimum=0)),
        Property("ct_ratio", S(T.INT32, minimum=5, maximum=10000, step=5)),
        Property("relay_closed", S(T.BOOL, bool_labels=("open", "closed"))),
        Property("tamper", S(T.BOOL)),
        Property("battery_low", S(T.BOOL)),
        Property("serial", S(T.TEXT, max_length=32)),
        Property("firmware", S(T.TEXT, max_length=16)),
        Property(
            "status",
            S(T.ENUM, enum=(EnumValue(0, "ok"), EnumValue(1, "warning"), EnumValue(2, "fault"))),
        ),
        Property(
            "tariff",
            S(T.ENUM, enum=tuple(EnumValue(t, t) for t in ("peak", "shoulder", "off_peak"))),
        ),
        Property("last_reading", S(T.TIMESTAMP)),
        Property(
            "fault",
            S(
                T.STRUCT,
                fields=(
                    Field("code", S(T.INT32, minimum=0, maximum=9999)),
                    Field("phase", S(T.TEXT, max_length=1)),
                    Field("since", S(T.TIMESTAMP), required=False),
                ),
            ),
        ),
        Property("harmonics_a", S(T.ARRAY, items=S(T.FLOAT, minimum=0, maximum=100), max_items=8)),
    ]
    assert len(props) == 40, len(props)
    return ThingModel(
        name="com.acme.energy/meter-3p", version=SemVer(1, 0, 0), properties=tuple(props)
    )


def valid_value(schema: DataSchema, rng: random.Random) -> Any:
    """A random valid value of ``schema`` (the shapes the meter above uses)."""
    kind = schema.type
    if kind is T.BOOL:
        return rng.random() < 0.5
    if kind in (T.INT32, T.INT64, T.TIMESTAMP):
        lo = int(schema.minimum) if schema.minimum is not None else 0
        hi = int(schema.maximum) if schema.maximum is not None else 2**40
        if schema.step is not None:
            return lo + rng.randrange((hi - lo) // int(schema.step) + 1) * int(schema.step)
        return rng.randint(lo, hi)
    if kind in (T.FLOAT, T.DOUBLE):
        low = float(schema.minimum) if schema.minimum is not None else -1e6
        high = float(schema.maximum) if schema.maximum is not None else 1e6
        if schema.step is not None:
            # Values as a device's decimal text gives them, e.g. 230.1 (not 0 + 2301 * 0.1).
            decimals = len(repr(float(schema.step)).split(".")[1])
            return round(rng.uniform(low, high), decimals)
        return rng.uniform(low, high)
    if kind is T.TEXT:
        return "".join(rng.choices("ABCDEF0123456789", k=rng.randint(1, schema.max_length or 8)))
    if kind is T.ENUM:
        return rng.choice(schema.enum).value
    if kind is T.STRUCT:
        return {
            f.id: valid_value(f.schema, rng)
            for f in schema.fields
            if f.required or rng.random() < 0.5
        }
    if kind is T.ARRAY:
        assert schema.items is not None
        return [
            valid_value(schema.items, rng) for _ in range(rng.randint(0, schema.max_items or 4))
        ]
    raise ValueError(kind)


def json_schema(schema: DataSchema) -> dict[str, Any]:
    """The equivalent JSON Schema of one data schema (float steps left out, see above)."""
    kind = schema.type
    out: dict[str, Any]
    if kind is T.BOOL:
        return {"type": "boolean"}
    if kind in (T.INT32, T.INT64, T.TIMESTAMP):
        lo, hi = {T.INT32: (-(2**31), 2**31 - 1)}.get(kind, (-(2**63), 2**63 - 1))
        if kind is T.TIMESTAMP:
            lo = 0
        out = {"type": "integer", "minimum": lo, "maximum": hi}
        if schema.step is not None:
            out["multipleOf"] = schema.step
    elif kind in (T.FLOAT, T.DOUBLE):
        limit = FLOAT32_MAX if kind is T.FLOAT else 1.7976931348623157e308
        out = {"type": "number", "minimum": -limit, "maximum": limit}
    elif kind is T.TEXT:
        out = {"type": "string"}
        if schema.max_length is not None:
            out["maxLength"] = schema.max_length
        return out
    elif kind is T.ENUM:
        return {"enum": [m.value for m in schema.enum]}
    elif kind is T.STRUCT:
        return {
            "type": "object",
            "properties": {f.id: json_schema(f.schema) for f in schema.fields},
            "required": [f.id for f in schema.fields if f.required],
            "additionalProperties": False,
        }
    elif kind is T.ARRAY:
        assert schema.items is not None
        out = {"type": "array", "items": json_schema(schema.items)}
        if schema.max_items is not None:
            out["maxItems"] = schema.max_items
        return out
    else:
        raise ValueError(kind)
    if schema.minimum is not None:
        out["minimum"] = schema.minimum
    if schema.maximum is not None:
        out["maximum"] = schema.maximum
    return out


def python_type(schema: DataSchema) -> type | tuple[type, ...]:
    """What the isinstance ceiling checks each value against."""
    types: dict[DataType, type | tuple[type, ...]] = {
        T.BOOL: bool,
        T.INT32: int,
        T.INT64: int,
        T.TIMESTAMP: int,
        T.FLOAT: (int, float),
        T.DOUBLE: (int, float),
        T.TEXT: str,
        T.STRUCT: dict,
        T.ARRAY: list,
    }
    return types.get(schema.type, (int, str))


def rate(run_once: Callable[[], int], seconds: float) -> float:
    """Values per second: ``run_once`` (returns values checked) repeated for about ``seconds``,
    in five slices, the best slice kept."""
    best = 0.0
    for _ in range(5):
        values = 0
        start = time.perf_counter()
        deadline = start + seconds / 5
        while True:
            values += run_once()
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, values / (now - start))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    parser.add_argument("--reports", type=int, default=2000, help="distinct reports")
    args = parser.parse_args(argv)

    model = energy_meter()
    validator = compile_validator(model)
    rng = random.Random(20240611)
    reports = []
    for _ in range(args.reports):
        chosen = rng.sample(model.properties, 20)
        reports.append({p.id: valid_value(p.schema, rng) for p in chosen})
    pairs = [(key, value) for report in reports for key, value in report.items()]
    n_values = len(pairs)

    document = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {p.id: json_schema(p.schema) for p in model.properties},
        "additionalProperties": False,
    }
    Draft202012Validator.check_schema(document)
    reference = Draft202012Validator(document)
    types = {p.id: python_type(p.schema) for p in model.properties}

    for report in reports:  # both validators agree the reports are valid before timing
        assert not validator.check_properties(report), validator.check_properties(report)
        assert reference.is_valid(report), next(iter(reference.iter_errors(report)))

    check_properties = validator.check_properties
    check_value = validator.check_value
    is_valid = reference.is_valid

    def ours() -> int:
        for report in reports:
            if check_properties(report):
                raise AssertionError(report)
        return n_values

    def ours_single() -> int:
        for key, value in pairs:
            if check_value(key, value) is not None:
                raise AssertionError(key)
        return n_values

    def ceiling() -> int:
        bad = 0
        for report in reports:
            for key, value in report.items():
                if not isinstance(value, types[key]):
                    bad += 1
        if bad:
            raise AssertionError(bad)
        return n_values

    def library() -> int:
        for report in reports[:200]:
            if not is_valid(report):
                raise AssertionError(report)
        return 200 * 20

    values_per_s = rate(ours, args.seconds)
    single = rate(ours_single, args.seconds)
    ceiling_rate = rate(ceiling, args.seconds)
    library_rate = rate(library, args.seconds)
    result = {
        "benchmark": "validator",
        "values_per_s": round(values_per_s),
        "values_per_s_single": round(single),
        "ceiling_isinstance_values_per_s": round(ceiling_rate),
        "jsonschema_values_per_s": round(library_rate),
        "ratio_to_ceiling": round(values_per_s / ceiling_rate, 3),
        "speedup_vs_jsonschema": round(values_per_s / library_rate, 1),
        "target_values_per_s": TARGET_VALUES_PER_S,
        "passed": values_per_s >= TARGET_VALUES_PER_S and single >= TARGET_VALUES_PER_S,
        "properties": len(model.properties),
        "values_per_report": 20,
        "python": sys.version.split()[0] + " " + platform.python_implementation(),
        "machine": machine(),
    }
    print(json.dumps(result))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
