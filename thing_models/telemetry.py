"""A telemetry validator compiled once per model: property reports, events, service calls.

:func:`compile_validator` walks a :class:`~thing_models.model.ThingModel`'s data schemas once and
builds two closures per property, event output, service parameter and struct field:

* a *fast* predicate ``ok(value) -> bool`` doing only exact-type tests and chained comparisons,
  so that a valid value costs one dict lookup and one call;
* an *explain* function that runs only when the predicate says no, and appends
  :class:`Issue` records naming the path, a code and what was expected.

The explain function is the authority: it may accept a value the fast predicate declined
(an ``int`` subclass, a tuple for an array, a float a little off its step because it came
through float32). Issue codes:

``type``      wrong JSON type (bool is not an integer; ``1.0`` is not an integer either)
``range``     outside ``minimum``/``maximum``, the integer type's range, the float's finite range,
              or not finite at all (NaN, ±inf: JSON cannot carry them)
``step``      a numeric value with a ``step`` is not ``minimum + k * step`` (``minimum`` defaults
              to 0; floats are compared with a tolerance of 1e-6 step plus their type's precision
              at that magnitude: ``float`` is float32, so a device's float32 reading passes, and a
              step finer than float32 can resolve, e.g. 0.001 at 300000, is not checked)
``enum``      not a declared enum value (compared with its declared type: ``"1"`` is not ``1``)
``length``    text longer than ``max_length``
``size``      array longer than ``max_items``
``unknown``   a property, event, service or struct field the model does not declare
``missing``   a required struct field, event output or service parameter is absent
``truncated`` an array had so many bad items that the rest were not explained

Property ids are opaque strings (a flattened model's ``pump1:speed`` is fine). Checks never
recurse deeper than the schema and descriptions of values never ``repr`` a whole container, so
hostile input (deep nesting, huge strings or integers, non-str keys, ``None``) becomes issues.
Property reports are partial by nature: a required property missing from one is not an issue.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from thing_models.errors import TelemetryValidationError
from thing_models.model import INT_RANGES, DataSchema, DataType, Field, ThingModel

__all__ = [
    "ISSUE_CODES",
    "Issue",
    "ModelValidator",
    "ValidationResult",
    "compile_validator",
]

#: Every code an :class:`Issue` may carry.
ISSUE_CODES = frozenset(
    {"type", "range", "step", "enum", "length", "size", "unknown", "missing", "truncated"}
)

#: Largest finite float32 and float64 values: the ranges of ``float`` and ``double``.
FLOAT32_MAX = 3.4028234663852886e38
FLOAT64_MAX = 1.7976931348623157e308
#: Bad items explained per array before the rest are summarised by one ``truncated`` issue.
MAX_ITEM_ISSUES = 20
_STEP_TOLERANCE = 1e-6  # of the step
_REL_PRECISION = {DataType.FLOAT: 2.0**-22, DataType.DOUBLE: 2.0**-50}

Fast = Callable[[Any], bool]
Explain = Callable[[Any, str, list["Issue"]], None]


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem in a payload: where (``temperature``, ``pos.x``, ``readings[3]``), a code
    from :data:`ISSUE_CODES`, and a message naming the value and what was expected."""

    path: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<payload>'}: {self.message} [{self.code}]"


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """What a lenient validation accepted (the payload as given) and what it flagged."""

    accepted: Mapping[Any, Any]
    issues: tuple[Issue, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.issues


# --------------------------------------------------------------------------- descriptions


def _describe(value: Any) -> str:
    """A short, safe description of ``value``: never a full repr of a container or huge number."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"bool {'true' if value else 'false'}"
    if isinstance(value, int):
        bits = value.bit_length()
        return f"integer {int.__repr__(value)}" if bits <= 128 else f"an integer of {bits} bits"
    if isinstance(value, float):
        return f"number {float.__repr__(value)}"
    if isinstance(value, str):
        size = f" ({len(value)} characters)" if len(value) > 60 else ""
        return f"text {_short_text(value)}{size}"
    if isinstance(value, Mapping):
        return f"an object of {_safe_len(value)} keys"
    if isinstance(value, list | tuple):
        return f"an array of {_plural(len(value), 'item')}"
    return f"a {type(value).__name__}"


def _short_text(text: str, limit: int = 60) -> str:
    text = str.__str__(text)  # a str subclass must not run its own __repr__
    return repr(text) if len(text) <= limit else repr(text[: limit - 3]) + "..."


def _safe_len(value: Any) -> str:
    try:
        return str(len(value))
    except Exception:  # a hostile Mapping; the count is only decoration
        return "?"


def _key_text(key: Any) -> str:
    """A path segment for a payload key: str keys as they are (shortened), others described."""
    if isinstance(key, str):
        text = str(key)
        return text if len(text) <= 80 else text[:77] + "..."
    return f"<{_describe(key)}>"


def _key_label(key: Any) -> str:
    """A key as a message names it: quoted when it is text, described otherwise."""
    return _short_text(key, 80) if isinstance(key, str) else _describe(key)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _join(path: str, key: Any) -> str:
    segment = _key_text(key)
    return f"{path}.{segment}" if path else segment


def _number_text(value: float) -> str:
    """``100`` for 100.0, otherwise repr: bounds read the way they were written."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def _members_text(values: Iterable[Any], limit: int = 10) -> str:
    items = list(values)
    shown = ", ".join(_short_text(v, 30) if isinstance(v, str) else repr(v) for v in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


# --------------------------------------------------------------------------- compilation


def _compile(schema: DataSchema) -> tuple[Fast, Explain]:
    """The fast predicate and the explain function for one schema."""
    kind = schema.type
    if kind is DataType.BOOL:
        return _compile_bool()
    if kind in (
        DataType.INT32,
        DataType.INT64,
        DataType.TIMESTAMP,
        DataType.FLOAT,
        DataType.DOUBLE,
    ):
        return _compile_number(schema)
    if kind is DataType.TEXT:
        return _compile_text(schema)
    if kind is DataType.ENUM:
        return _compile_enum(schema)
    if kind is DataType.STRUCT:
        return _compile_object(schema.fields, "struct", check_required=True)
    if kind is DataType.ARRAY:
        return _compile_array(schema)
    raise ValueError(f"no validator for data type {kind!r}")  # pragma: no cover - enum is closed


def _compile_bool() -> tuple[Fast, Explain]:
    def ok(value: Any) -> bool:
        return value is True or value is False

    def explain(value: Any, path: str, out: list[Issue]) -> None:
        if not isinstance(value, bool):
            hint = "; send false/true, not 0/1" if type(value) is int and value in (0, 1) else ""
            out.append(
                Issue(path, "type", f"expected a bool (true/false), got {_describe(value)}{hint}")
            )

    return ok, explain


def _usable_step(schema: DataSchema) -> float | None:
    step = schema.step
    if step is None or isinstance(step, bool) or not isinstance(step, int | float):
        return None
    if not math.isfinite(step) or step <= 0:
        return None
    return step


def _compile_number(schema: DataSchema) -> tuple[Fast, Explain]:
    kind = schema.type
    integer = kind.is_integer
    type_lo: float
    type_hi: float
    if integer:
        type_lo, type_hi = INT_RANGES[kind]
    else:
        limit = FLOAT32_MAX if kind is DataType.FLOAT else FLOAT64_MAX
        type_lo, type_hi = -limit, limit
    minimum, maximum = schema.minimum, schema.maximum
    lo = type_lo if minimum is None else max(type_lo, minimum)
    hi = type_hi if maximum is None else min(type_hi, maximum)
    step = _usable_step(schema)
    base = minimum if minimum is not None else 0
    exact_step = integer and isinstance(step, int) and isinstance(base, int)
    if exact_step and step == 1:
        step = None  # every integer is on a step of 1 from an integer minimum
    rel = _REL_PRECISION.get(kind, 0.0)
    tol0 = step * _STEP_TOLERANCE if step is not None else 0.0

    def on_step(value: float) -> bool:
        assert step is not None
        if exact_step:
            return (value - base) % step == 0
        offset = value - base
        nearest = round(offset / step)
        tolerance = tol0 + (abs(value) + abs(base)) * rel
        return abs(offset - nearest * step) <= tolerance

    ok: Fast
    if integer:
        if step is None:

            def ok(value: Any) -> bool:
                return type(value) is int and lo <= value <= hi

        elif exact_step:

            def ok(value: Any) -> bool:
                return type(value) is int and lo <= value <= hi and (value - base) % step == 0

        else:

            def ok(value: Any) -> bool:
                return type(value) is int and lo <= value <= hi and on_step(value)

    elif step is None:

        def ok(value: Any) -> bool:
            kind_ = type(value)
            return (kind_ is float or kind_ is int) and lo <= value <= hi

    else:
        # One modulo and two comparisons; near-misses go to ``on_step`` in the slow path.
        def ok(value: Any) -> bool:
            kind_ = type(value)
            if (kind_ is float or kind_ is int) and lo <= value <= hi:
                rest: float = (value - base) % step
                return rest <= tol0 or step - rest <= tol0
            return False

    name = kind.value

    def explain(value: Any, path: str, out: list[Issue]) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            expected = "an integer" if integer else "a number"
            out.append(Issue(path, "type", f"expected {expected} ({name}), got {_describe(value)}"))
            return
        if integer and not isinstance(value, int):
            hint = "; send it without a fraction" if value.is_integer() else ""
            out.append(
                Issue(path, "type", f"expected an integer ({name}), got {_describe(value)}{hint}")
            )
            return
        if isinstance(value, float) and not math.isfinite(value):
            out.append(
                Issue(path, "range", f"{_describe(value)} is not finite; JSON cannot carry it")
            )
            return
        if value < type_lo or value > type_hi:
            bounds = f"[{_number_text(type_lo)}, {_number_text(type_hi)}]"
            out.append(
                Issue(path, "range", f"{_describe(value)} is outside the {name} range {bounds}")
            )
            return
        if minimum is not None and value < minimum:
            out.append(
                Issue(
                    path,
                    "range",
                    f"{_describe(value)} is below the minimum {_number_text(minimum)}",
                )
            )
            return
        if maximum is not None and value > maximum:
            out.append(
                Issue(
                    path,
                    "range",
                    f"{_describe(value)} is above the maximum {_number_text(maximum)}",
                )
            )
            return
        if step is not None and not on_step(value):
            out.append(
                Issue(
                    path,
                    "step",
                    f"{_describe(value)} is not {_number_text(base)} plus a multiple of the step "
                    f"{_number_text(step)}",
                )
            )

    return ok, explain


def _compile_text(schema: DataSchema) -> tuple[Fast, Explain]:
    max_length = schema.max_length
    ok: Fast
    if max_length is None:

        def ok(value: Any) -> bool:
            return type(value) is str

    else:

        def ok(value: Any) -> bool:
            return type(value) is str and len(value) <= max_length

    def explain(value: Any, path: str, out: list[Issue]) -> None:
        if not isinstance(value, str):
            out.append(Issue(path, "type", f"expected text, got {_describe(value)}"))
        elif max_length is not None and len(value) > max_length:
            out.append(
                Issue(
                    path,
                    "length",
                    f"text of {len(value)} characters is longer than max_length {max_length}",
                )
            )

    return ok, explain


def _compile_enum(schema: DataSchema) -> tuple[Fast, Explain]:
    declared = tuple(member.value for member in schema.enum)
    # Members keyed with their type: True == 1 and 1.0 == 1, but neither is enum member 1.
    members = frozenset(declared)
    typed = frozenset((int if isinstance(v, int) else str, v) for v in declared)

    def ok(value: Any) -> bool:
        kind_ = type(value)
        return (kind_ is int or kind_ is str) and value in members

    def explain(value: Any, path: str, out: list[Issue]) -> None:
        if isinstance(value, bool) or not isinstance(value, int | str):
            found = False
        else:
            plain = int(value) if isinstance(value, int) else str(value)
            found = (type(plain), plain) in typed
        if not found:
            out.append(
                Issue(
                    path,
                    "enum",
                    f"{_describe(value)} is not one of the enum values {_members_text(declared)}",
                )
            )

    return ok, explain


def _compile_array(schema: DataSchema) -> tuple[Fast, Explain]:
    max_items = schema.max_items
    item_ok: Fast
    item_explain: Explain
    if schema.items is None:  # an array of anything the model did not describe

        def item_ok(value: Any) -> bool:
            return True

        def item_explain(value: Any, path: str, out: list[Issue]) -> None:
            return None

    else:
        item_ok, item_explain = _compile(schema.items)
    limit = max_items if max_items is not None else -1

    def ok(value: Any) -> bool:
        if type(value) is not list or (limit >= 0 and len(value) > limit):
            return False
        for item in value:  # noqa: SIM110 - a plain loop beats all() with a generator
            if not item_ok(item):
                return False
        return True

    def explain(value: Any, path: str, out: list[Issue]) -> None:
        if not isinstance(value, list | tuple):
            out.append(Issue(path, "type", f"expected an array, got {_describe(value)}"))
            return
        if limit >= 0 and len(value) > limit:
            out.append(
                Issue(
                    path, "size", f"an array of {len(value)} items is longer than max_items {limit}"
                )
            )
        bad = 0
        for index, item in enumerate(value):
            if item_ok(item):
                continue
            if bad >= MAX_ITEM_ISSUES:
                out.append(
                    Issue(
                        path,
                        "truncated",
                        f"more bad items from index {index} on; only the first {bad} are explained",
                    )
                )
                return
            before = len(out)
            item_explain(item, f"{path}[{index}]", out)
            bad += len(out) > before

    return ok, explain


def _compile_object(
    fields: tuple[Field, ...], what: str, *, check_required: bool
) -> tuple[Fast, Explain]:
    """A checker for a JSON object whose keys are ``fields``: a struct, event or service payload."""
    compiled: dict[str, tuple[Fast, Explain]] = {}
    for item in fields:
        compiled.setdefault(item.id, _compile(item.schema))
    fast = {fid: pair[0] for fid, pair in compiled.items()}
    required = (
        frozenset(item.id for item in fields if item.required) if check_required else frozenset()
    )
    known = _members_text(compiled) if compiled else "none"

    def ok(value: Any) -> bool:
        if type(value) is not dict:
            return False
        get = fast.get
        for key, item in value.items():
            check = get(key)
            if check is None or not check(item):
                return False
        return value.keys() >= required

    def explain(value: Any, path: str, out: list[Issue]) -> None:
        if not isinstance(value, Mapping):
            out.append(Issue(path, "type", f"expected an object ({what}), got {_describe(value)}"))
            return
        for key, item in value.items():
            pair = compiled.get(key) if isinstance(key, str) else None
            if pair is None:
                out.append(
                    Issue(
                        _join(path, key),
                        "unknown",
                        f"{what} has no field {_key_label(key)}; its fields are {known}",
                    )
                )
            elif not pair[0](item):
                pair[1](item, _join(path, key), out)
        for fid in required:
            if fid not in value:
                out.append(
                    Issue(_join(path, fid), "missing", f"required {what} field {fid!r} is missing")
                )

    return ok, explain


# --------------------------------------------------------------------------- the validator


class ModelValidator:
    """Checks payloads against one model. Build it with :func:`compile_validator`.

    ``check_*`` methods return the list of issues (empty: valid). ``validate_*`` methods raise
    :class:`~thing_models.errors.TelemetryValidationError` in strict mode and, in lenient mode
    (Alibaba's weak mode), return a :class:`ValidationResult` that accepts the whole payload as
    given and flags what is wrong.
    """

    __slots__ = ("_events", "_inputs", "_outputs", "_prop_explain", "_prop_fast", "model")

    def __init__(self, model: ThingModel) -> None:
        self.model = model
        self._prop_fast: dict[str, Fast] = {}
        self._prop_explain: dict[str, Explain] = {}
        for prop in model.properties:
            if prop.id not in self._prop_fast:
                self._prop_fast[prop.id], self._prop_explain[prop.id] = _compile(prop.schema)
        self._events: dict[str, tuple[Fast, Explain]] = {}
        for event in model.events:
            self._events.setdefault(
                event.id, _compile_object(event.outputs, f"event {event.id!r}", check_required=True)
            )
        self._inputs: dict[str, tuple[Fast, Explain]] = {}
        self._outputs: dict[str, tuple[Fast, Explain]] = {}
        for service in model.services:
            what = f"service {service.id!r}"
            self._inputs.setdefault(
                service.id, _compile_object(service.inputs, f"{what} input", check_required=True)
            )
            self._outputs.setdefault(
                service.id, _compile_object(service.outputs, f"{what} output", check_required=True)
            )

    # ----------------------------------------------------------------- properties

    @property
    def fast_check(self) -> Mapping[str, Callable[[Any], bool]]:
        """``{property id: value -> valid?}``: the compiled checks, for callers that check
        many values in a loop (False: call :meth:`check_value` for the issue)."""
        return self._prop_fast

    def check_value(self, prop_id: str, value: Any) -> Issue | None:
        """The first issue with one property value, or None when it is valid."""
        try:
            check = self._prop_fast.get(prop_id)
        except TypeError:  # an unhashable id
            check = None
        if check is not None and check(value):
            return None
        issues = self._explain_property(prop_id, value)
        return issues[0] if issues else None

    def check_properties(self, params: Mapping[str, Any]) -> list[Issue]:
        """Issues with a property report ``{property_id: value}``; unknown ids are issues."""
        if type(params) is dict:
            get = self._prop_fast.get
            for key, value in params.items():
                check = get(key)
                if check is None or not check(value):
                    break
            else:
                return []
        if not isinstance(params, Mapping):
            return [
                Issue("", "type", f"expected an object of property values, got {_describe(params)}")
            ]
        issues: list[Issue] = []
        for key, value in params.items():
            issues.extend(self._explain_property(key, value))
        return issues

    def _explain_property(self, prop_id: Any, value: Any) -> list[Issue]:
        try:
            check = self._prop_fast.get(prop_id) if isinstance(prop_id, str) else None
        except TypeError:  # pragma: no cover - str ids always hash
            check = None
        if check is None:
            return [
                Issue(
                    _key_text(prop_id),
                    "unknown",
                    f"model {self.model.name} has no property {_key_label(prop_id)}",
                )
            ]
        out: list[Issue] = []
        if not check(value):
            self._prop_explain[prop_id](value, _key_text(prop_id), out)
        return out

    def validate_properties(
        self, params: Mapping[str, Any], *, strict: bool = True
    ) -> ValidationResult:
        """Check a property report; strict raises TelemetryValidationError on any issue."""
        return _result(params, self.check_properties(params), strict)

    # ----------------------------------------------------------------- events and services

    def check_event(self, event_id: str, params: Mapping[str, Any]) -> list[Issue]:
        """Issues with the output parameters of event ``event_id``."""
        return self._check_object(self._events, event_id, "event", params)

    def check_service_input(self, service_id: str, params: Mapping[str, Any]) -> list[Issue]:
        """Issues with the input parameters of a call of service ``service_id``."""
        return self._check_object(self._inputs, service_id, "service", params)

    def check_service_output(self, service_id: str, params: Mapping[str, Any]) -> list[Issue]:
        """Issues with the output parameters of a reply of service ``service_id``."""
        return self._check_object(self._outputs, service_id, "service", params)

    def validate_event(
        self, event_id: str, params: Mapping[str, Any], *, strict: bool = True
    ) -> ValidationResult:
        return _result(params, self.check_event(event_id, params), strict)

    def validate_service_input(
        self, service_id: str, params: Mapping[str, Any], *, strict: bool = True
    ) -> ValidationResult:
        return _result(params, self.check_service_input(service_id, params), strict)

    def validate_service_output(
        self, service_id: str, params: Mapping[str, Any], *, strict: bool = True
    ) -> ValidationResult:
        return _result(params, self.check_service_output(service_id, params), strict)

    def _check_object(
        self,
        table: dict[str, tuple[Fast, Explain]],
        name: Any,
        what: str,
        params: Any,
    ) -> list[Issue]:
        pair = table.get(name) if isinstance(name, str) else None
        if pair is None:
            return [
                Issue(
                    "",
                    "unknown",
                    f"model {self.model.name} has no {what} {_key_label(name)}",
                )
            ]
        if pair[0](params):
            return []
        out: list[Issue] = []
        pair[1](params, "", out)
        return out


def _result(params: Any, issues: list[Issue], strict: bool) -> ValidationResult:
    if issues and strict:
        raise TelemetryValidationError(issues)
    accepted: Mapping[Any, Any] = params if isinstance(params, Mapping) else {}
    return ValidationResult(accepted, tuple(issues))


def compile_validator(model: ThingModel) -> ModelValidator:
    """Compile a validator for ``model`` (flatten components first to check ``instance:id``)."""
    return ModelValidator(model)
