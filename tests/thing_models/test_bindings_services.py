"""Service bindings over BACnet (WriteProperty sequences) and CoAP (one request each): parsing
and checks at file:line:column, YAML round trips, and the WoT / TSL converters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thing_models import load_model_file
from thing_models.errors import Diagnostic, ModelLoadError
from thing_models.formats.tsl import model_to_tsl
from thing_models.formats.wot import model_from_wot, model_to_wot
from thing_models.model import (
    BacnetBinding,
    BacnetServiceWrite,
    Bindings,
    CoapBinding,
    CoapMethod,
    CoapService,
    ContentFormat,
    ThingModel,
)
from thing_models.yaml_format import dump_model_yaml, load_model_text

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
FILE = "ahu.yaml"

#: Three services to bind (lines 1-12); a snippet's first line is line 13.
BASE = """\
model: acme.test/ahu
version: "1.0.0"
components:
  - {instance: pump, model: acme.test/pump@1}
services:
  - id: set_mode
    inputs:
      - {id: mode, type: enum, values: {1: auto, 2: manual}}
  - id: reset_alarm
  - id: calibrate
    inputs: [{id: level, type: float}]
    outputs: [{id: ok, type: bool}, {id: offset, type: float, min: -5, max: 5}]
"""
BASE_LINES = BASE.count("\n")


def bacnet(entry: str) -> str:
    """One BACnet service write, on line 4 of the snippet."""
    return f"bindings:\n  bacnet:\n    services:\n      - {entry}\n"


def coap(*entries: str) -> str:
    """CoAP service entries, the first on line 4 of the snippet."""
    return "bindings:\n  coap:\n    services:\n" + "".join(f"      - {e}\n" for e in entries)


def load_errors(snippet: str) -> tuple[Diagnostic, ...]:
    with pytest.raises(ModelLoadError) as info:
        load_model_text(BASE + snippet, FILE)
    return info.value.diagnostics


MSV = "object_type: multi-state-value, instance: 1"
BV = "object_type: binary-value, instance: 2"

#: (id, snippet, text the error points at on line 4 of the snippet, message fragment, hint)
BAD: list[tuple[str, str, str, str, str]] = [
    (
        "bacnet-unknown-service",
        bacnet(f"{{service: set_mod, {MSV}, param: mode}}"),
        "set_mod",
        "names a service the model does not define; did you mean 'set_mode'?",
        "",
    ),
    (
        "bacnet-param-not-an-input",
        bacnet(f"{{service: set_mode, {MSV}, param: mdoe}}"),
        "mdoe",
        "param is not an input of service set_mode; did you mean 'mode'?",
        "",
    ),
    (
        "bacnet-value-and-param",
        bacnet(f"{{service: set_mode, {MSV}, param: mode, value: 1}}"),
        "{",
        "give exactly one of value, param or relinquish (got value, param)",
        "",
    ),
    (
        "bacnet-nothing-to-write",
        bacnet(f"{{service: reset_alarm, {BV}}}"),
        "{",
        "give exactly one of value, param or relinquish",
        "",
    ),
    (
        "bacnet-value-and-relinquish",
        bacnet(f"{{service: reset_alarm, {BV}, value: true, relinquish: true}}"),
        "{",
        "(got value, relinquish)",
        "",
    ),
    (
        "bacnet-priority-6",
        bacnet(f"{{service: reset_alarm, {BV}, value: active, priority: 6}}"),
        "6}",
        "priority 6 is reserved for minimum on/off time",
        "",
    ),
    (
        "bacnet-priority-17",
        bacnet(f"{{service: reset_alarm, {BV}, value: active, priority: 17}}"),
        "17",
        "priority out of range",
        "",
    ),
    (
        "bacnet-unknown-key",
        bacnet(f"{{service: reset_alarm, {BV}, value: active, priorty: 8}}"),
        "priorty",
        "unknown key 'priorty'",
        "did you mean 'priority'?",
    ),
    (
        "bacnet-object-type",
        bacnet("{service: reset_alarm, object_type: binary-valeu, instance: 2, value: true}"),
        "binary-valeu",
        "unknown BACnet object type; did you mean 'binary-value'?",
        "",
    ),
    (
        "bacnet-binary-value-3",
        bacnet(f"{{service: reset_alarm, {BV}, value: 3}}"),
        "3}",
        "value does not fit a binary-value",
        "",
    ),
    (
        "bacnet-binary-value-text",
        bacnet(f"{{service: reset_alarm, {BV}, value: on}}"),
        "on}",
        "value does not fit a binary-value",
        "",
    ),
    (
        "bacnet-multistate-0",
        bacnet(f"{{service: reset_alarm, {MSV}, value: 0}}"),
        "0}",
        "value does not fit a multi-state-value",
        "",
    ),
    (
        "bacnet-analog-text",
        bacnet("{service: reset_alarm, object_type: analog-value, instance: 3, value: warm}"),
        "warm",
        "value does not fit a analog-value",
        "",
    ),
    (
        "bacnet-value-list",
        bacnet(f"{{service: reset_alarm, {BV}, value: [1]}}"),
        "[1]",
        "value must be a finite scalar",
        "",
    ),
    (
        "bacnet-value-nan",
        bacnet("{service: reset_alarm, object_type: analog-value, instance: 3, value: .nan}"),
        ".nan",
        "value must be a finite scalar",
        "",
    ),
    (
        "bacnet-missing-instance",
        bacnet("{service: reset_alarm, object_type: binary-value, value: true}"),
        "{",
        "missing required key 'instance'",
        "",
    ),
    (
        "bacnet-relinquish-not-bool",
        bacnet(f"{{service: reset_alarm, {BV}, relinquish: yes}}"),
        "yes",
        "relinquish must be true or false",
        "",
    ),
    (
        "bacnet-param-not-identifier",
        bacnet(f"{{service: set_mode, {MSV}, param: 'a b'}}"),
        "'a b'",
        "invalid param",
        "",
    ),
    (
        "bacnet-property-id",
        bacnet(f"{{service: reset_alarm, {BV}, value: true, property_id: Present Value}}"),
        "Present Value",
        "invalid BACnet property",
        "",
    ),
    (
        "coap-relative-resource",
        coap("{service: reset_alarm, resource: actions/reset}"),
        "actions/reset",
        "invalid CoAP resource path",
        "",
    ),
    (
        "coap-unknown-service",
        coap("{service: calibrat, resource: /cal}"),
        "calibrat",
        "names a service the model does not define; did you mean 'calibrate'?",
        "",
    ),
    (
        "coap-method",
        coap("{service: reset_alarm, resource: /reset, method: get}"),
        "get",
        "invalid method",
        "",
    ),
    (
        "coap-content-format",
        coap("{service: reset_alarm, resource: /reset, content_format: xml}"),
        "xml",
        "invalid content_format",
        "",
    ),
    (
        "coap-text-with-two-outputs",
        coap("{service: calibrate, resource: /cal, content_format: text}"),
        "text",
        "a text payload carries one value but calibrate has 1 inputs and 2 outputs",
        "",
    ),
    (
        "coap-unknown-key",
        coap("{service: reset_alarm, resource: /reset, methd: put}"),
        "methd",
        "unknown key 'methd'",
        "did you mean 'method'?",
    ),
    (
        "coap-missing-resource",
        coap("{service: reset_alarm}"),
        "{",
        "missing required key 'resource'",
        "",
    ),
    (
        "coap-empty-resource",
        coap("{service: reset_alarm, resource: ''}"),
        "''",
        "resource must not be empty",
        "",
    ),
]


@pytest.mark.parametrize(
    ("snippet", "at", "fragment", "hint"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_bad_service_binding_is_located(snippet: str, at: str, fragment: str, hint: str) -> None:
    diagnostics = load_errors(snippet)
    assert len(diagnostics) == 1, [str(d) for d in diagnostics]
    diag = diagnostics[0]
    line = snippet.splitlines()[3]
    assert diag.location.file == FILE
    assert (diag.location.line, diag.location.column) == (BASE_LINES + 4, line.index(at) + 1)
    assert fragment in diag.message
    assert hint in diag.hint


def test_a_service_bound_twice_over_coap_points_at_the_second() -> None:
    diagnostics = load_errors(
        coap("{service: reset_alarm, resource: /a}", "{service: reset_alarm, resource: /b}")
    )
    assert [(d.location.line, d.location.column) for d in diagnostics] == [(BASE_LINES + 5, 19)]
    assert "service bound twice in coap (first at services[0])" in diagnostics[0].message


def test_every_problem_of_a_file_is_reported_in_order() -> None:
    snippet = (
        "bindings:\n  bacnet:\n    services:\n"
        f"      - {{service: set_mode, {MSV}, param: nope}}\n"
        f"      - {{service: reset_alarm, {BV}, value: active, priority: 6}}\n"
        "  coap:\n    services:\n"
        "      - {service: nope, resource: nope}\n"
    )
    diagnostics = load_errors(snippet)
    assert [d.location.line - BASE_LINES for d in diagnostics] == [4, 5, 8, 8]
    assert "input of service set_mode" in diagnostics[0].message
    assert diagnostics[0].expected == "one of mode"


GOOD = [
    bacnet(f"{{service: set_mode, {MSV}, param: mode, priority: 16}}"),
    bacnet(f"{{service: reset_alarm, {BV}, value: active, priority: 8}}"),
    bacnet(f"{{service: reset_alarm, {BV}, relinquish: true, priority: 8}}"),
    bacnet("{service: reset_alarm, object_type: binary-output, instance: 1, value: false}"),
    bacnet("{service: reset_alarm, object_type: analog-value, instance: 3, value: 2.5}"),
    bacnet("{service: reset_alarm, object_type: characterstring-value, instance: 3, value: x}"),
    bacnet("{service: reset_alarm, object_type: '130', instance: 3, value: 7}"),
    bacnet(f"{{service: 'pump:start', {BV}, value: 1}}"),
    coap("{service: calibrate, resource: /cal, method: put, content_format: cbor}"),
    coap(
        "{service: set_mode, resource: /mode, content_format: text}",
        "{service: reset_alarm, resource: /r}",
    ),
    coap("{service: 'pump:start', resource: /pump/start}"),
]


@pytest.mark.parametrize("snippet", GOOD)
def test_good_service_bindings_load_and_round_trip(snippet: str) -> None:
    model = load_model_text(BASE + snippet, FILE)
    services = (model.bindings.bacnet or model.bindings.coap or CoapBinding()).services
    assert services
    assert load_model_text(dump_model_yaml(model), "again.yaml") == model


def test_parsed_fields() -> None:
    model = load_model_text(
        BASE
        + bacnet(
            f"{{service: set_mode, {MSV}, property_id: priority-array, param: mode, priority: 9}}"
        )
        + "  coap:\n    services:\n"
        + "      - {service: calibrate, resource: /cal, method: put, content_format: cbor}\n",
        FILE,
    )
    assert model.bindings.bacnet == BacnetBinding(
        services=(
            BacnetServiceWrite(
                "set_mode", "multi-state-value", 1, "priority-array", None, "mode", 9, False
            ),
        )
    )
    assert model.bindings.coap == CoapBinding(
        services=(CoapService("calibrate", "/cal", CoapMethod.PUT, ContentFormat.CBOR),)
    )


# --------------------------------------------------------------------------- round trips

_SERVICE_IDS = st.sampled_from(["set_mode", "reset_alarm", "calibrate"])
_SCALARS = st.one_of(
    st.booleans(),
    st.integers(-(2**31), 2**31),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)


@st.composite
def _bacnet_write(draw: st.DrawFn) -> BacnetServiceWrite:
    kind = draw(st.sampled_from(["value", "param", "relinquish"]))
    return BacnetServiceWrite(
        service="set_mode" if kind == "param" else draw(_SERVICE_IDS),
        object_type="characterstring-value" if kind == "value" else "multi-state-value",
        instance=draw(st.integers(0, 4194302)),
        property_id=draw(st.sampled_from(["present-value", "priority-array", "85"])),
        value=draw(_SCALARS) if kind == "value" else None,
        param="mode" if kind == "param" else None,
        priority=draw(st.none() | st.integers(1, 16).filter(lambda p: p != 6)),
        relinquish=kind == "relinquish",
    )


_COAP_SERVICES = st.lists(
    st.builds(
        CoapService,
        service=st.just("reset_alarm"),
        resource=st.from_regex(r"/[a-z0-9/._-]{0,20}", fullmatch=True),
        method=st.sampled_from(CoapMethod),
        content_format=st.sampled_from(ContentFormat),
    ),
    max_size=1,
)


def _base_model() -> ThingModel:
    return load_model_text(BASE, FILE)


@settings(max_examples=60, deadline=None)
@given(writes=st.lists(_bacnet_write(), max_size=4), calls=_COAP_SERVICES)
def test_yaml_and_wot_round_trips_keep_service_bindings(
    writes: list[BacnetServiceWrite], calls: list[CoapService]
) -> None:
    base = _base_model()
    bindings = Bindings(
        bacnet=BacnetBinding(services=tuple(writes)), coap=CoapBinding(services=tuple(calls))
    )
    model = ThingModel(
        base.name,
        base.version,
        components=base.components,
        services=base.services,
        bindings=bindings,
    )
    again = load_model_text(dump_model_yaml(model), "again.yaml")
    assert again.bindings == model.bindings
    exported = model_to_wot(model, kind="tm")
    assert exported.losses == ()
    imported = model_from_wot(json.loads(json.dumps(exported.document)), allow_unresolved=True)
    assert imported.model.bindings == model.bindings


@pytest.mark.parametrize("name", ["air-handling-unit.yaml", "parking-space-sensor.yaml"])
def test_examples_bind_services_and_round_trip(name: str) -> None:
    model = load_model_file(EXAMPLES / name)
    services = (model.bindings.bacnet or model.bindings.coap or CoapBinding()).services
    bound = {s.service for s in services}
    assert bound
    assert bound <= {s.id for s in model.services}
    assert load_model_text(dump_model_yaml(model), name) == model
    for kind in ("tm", "td"):
        exported = model_to_wot(model, kind=kind)
        back = model_from_wot(json.loads(json.dumps(exported.document)), allow_unresolved=True)
        assert back.model.bindings == model.bindings


def test_tsl_reports_the_service_bindings_it_cannot_hold() -> None:
    model = load_model_file(EXAMPLES / "air-handling-unit.yaml")
    losses = model_to_tsl(model).losses
    assert "bindings (bacnet, reporting)" in losses
