"""CoAP services bound in ``bindings.coap.services``: the pure request/reply mapping (tables and
fuzzing), and :meth:`CoapDriver.invoke` against the CoAP simulator on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol_adapters.coap.driver import CoapDriver, ServiceMapping, compile_services
from protocol_adapters.coap.errors import (
    CoapConfigError,
    CoapError,
    CoapPayloadError,
    CoapResponseError,
    CoapValueError,
)
from protocol_adapters.coap.simulator import CoapSimulator
from thing_models import load_model_file, load_model_text
from thing_models.composition import FolderModelSource, flatten
from thing_models.model import CoapBinding, CoapMethod, CoapService, ContentFormat, ThingModel

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
PARKING = flatten(
    load_model_file(EXAMPLES / "parking-space-sensor.yaml"), FolderModelSource(EXAMPLES)
)
VALVE = load_model_text(
    """
model: test.coap/valve
version: "1.0.0"
properties:
  - {id: position, type: float, min: 0, max: 100}
services:
  - id: set_rate
    inputs: [{id: rate, type: int32, min: 1, max: 60}]
    outputs: [{id: applied, type: int32, min: 1, max: 60}]
  - id: flush
    inputs:
      - {id: seconds, type: int32, min: 1, max: 600}
      - {id: note, type: text, max_length: 20, required: false}
    outputs:
      - {id: ok, type: bool}
      - {id: volume, type: float, min: 0, max: 50}
      - {id: warning, type: text, required: false}
  - id: legacy
    outputs: [{id: ok, type: bool}]
    extensions: {x-coap: {resource: /old/legacy}}
  - id: both
    outputs: [{id: ok, type: bool}]
    extensions: {x-coap: {resource: /old/both}}
bindings:
  coap:
    points:
      - {property: position, resource: /state, path: $.pos}
    services:
      - {service: set_rate, resource: /config/rate, method: put, content_format: text}
      - {service: flush, resource: /actions/flush, content_format: cbor}
      - {service: both, resource: /actions/both}
""",
    "valve.yaml",
)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@asynccontextmanager
async def rig(
    model: ThingModel, binding: CoapBinding | None = None
) -> AsyncIterator[tuple[CoapSimulator, CoapDriver]]:
    sim = CoapSimulator(model, seed=3)
    port = await sim.start()
    served = model.bindings.coap
    assert served is not None
    driver = CoapDriver("127.0.0.1", port, binding or served, model, timeout_s=2.0)
    try:
        await driver.connect()
        yield sim, driver
    finally:
        await driver.close()
        await sim.stop()


# --------------------------------------------------------------------------- real peer


def test_parking_services_post_cbor_and_put_json() -> None:
    async def body() -> None:
        async with rig(PARKING) as (sim, driver):
            outputs = await driver.invoke("calibrate", {})
            assert outputs["ok"] is True
            assert set(outputs) == {"ok", "baseline"}
            baseline = outputs["baseline"]
            assert isinstance(baseline, dict)
            assert set(baseline) == {"x", "y", "z"}
            assert sim.calls("/actions/calibrate") == [{}]
            assert await driver.invoke("set_overstay_limit", {"limit": 120}) == {"ok": True}
            assert sim.calls("/config/overstay") == [{"limit": 120}]

    run(body())


def test_text_service_and_binding_over_the_x_coap_fallback() -> None:
    async def body() -> None:
        async with rig(VALVE) as (sim, driver):
            outputs = await driver.invoke("set_rate", {"rate": 12})
            assert set(outputs) == {"applied"}
            assert 1 <= int(outputs["applied"]) <= 60  # type: ignore[call-overload]
            assert sim.calls("/config/rate") == ["12"]
            outputs = await driver.invoke("flush", {"seconds": 30, "note": "weekly"})
            assert outputs["ok"] is True
            assert 0 <= float(outputs["volume"]) <= 50  # type: ignore[arg-type]
            assert sim.calls("/actions/flush") == [{"seconds": 30, "note": "weekly"}]
            assert await driver.invoke("both", {}) == {"ok": True}
            assert sim.calls("/actions/both") == [{}]
            assert "/old/both" not in sim.services
            assert await driver.invoke("legacy", {"any": 1}) == {"ok": True}  # x-coap fallback
            assert sim.calls("/old/legacy") == [{"any": 1}]

    run(body())


def test_bad_inputs_send_nothing() -> None:
    async def body() -> None:
        async with rig(VALVE) as (sim, driver):
            cases: list[tuple[str, dict[str, object], str]] = [
                ("flush", {}, "input 'seconds' is missing"),
                ("flush", {"seconds": 30, "colour": "red"}, "'colour' is not an input"),
                ("flush", {"seconds": 9000}, "above"),
                ("flush", {"seconds": "soon"}, "cannot write"),
                ("set_rate", {"rate": 0}, "below"),
            ]
            for service, args, fragment in cases:
                with pytest.raises(CoapValueError, match=fragment):
                    await driver.invoke(service, args)
            assert sim.calls("/actions/flush") == []
            assert sim.calls("/config/rate") == []
            assert driver.diagnostics.requests == 0

    run(body())


def test_wrong_method_is_refused_by_the_device() -> None:
    binding = VALVE.bindings.coap
    assert binding is not None
    posting = replace(
        binding,
        services=tuple(replace(s, method=CoapMethod.POST) for s in binding.services),
    )

    async def body() -> None:
        async with rig(VALVE, posting) as (sim, driver):
            with pytest.raises(CoapResponseError) as info:
                await driver.invoke("set_rate", {"rate": 5})
            assert info.value.code == "4.05"
            assert "/config/rate" in str(info.value)
            assert sim.calls("/config/rate") == []

    run(body())


def test_missing_service_resource_answers_4_04() -> None:
    binding = PARKING.bindings.coap
    assert binding is not None
    elsewhere = replace(
        binding, services=tuple(replace(s, resource="/nowhere") for s in binding.services)
    )

    async def body() -> None:
        async with rig(PARKING, elsewhere) as (_, driver):
            with pytest.raises(CoapResponseError) as info:
                await driver.invoke("calibrate", {})
            assert info.value.code == "4.04"
            assert driver.diagnostics.state == "degraded"

    run(body())


# --------------------------------------------------------------------------- pure


def _services() -> dict[str, ServiceMapping]:
    binding = VALVE.bindings.coap
    assert binding is not None
    return compile_services(binding, VALVE)


FLUSH = _services()["flush"]
RATE = _services()["set_rate"]


@pytest.mark.parametrize(
    ("calls", "fragment"),
    [
        ((CoapService("nope", "/x"),), "service nope: no such service"),
        ((CoapService("flush", "x"),), "is not an absolute path"),
        ((CoapService("flush", "/a b"),), "is not an absolute path"),
        ((CoapService("flush", "/a"), CoapService("flush", "/b")), "bound twice"),
        ((CoapService("flush", "/a", content_format=ContentFormat.TEXT),), "one input and one"),
    ],
)
def test_compile_refuses_unusable_bindings(calls: tuple[CoapService, ...], fragment: str) -> None:
    with pytest.raises(CoapConfigError, match=fragment):
        compile_services(CoapBinding(services=calls), VALVE)


def test_requests_carry_checked_inputs() -> None:
    assert cbor2.loads(FLUSH.encode({"seconds": 5})) == {"seconds": 5}
    assert cbor2.loads(FLUSH.encode({"seconds": 5, "note": None})) == {"seconds": 5}
    assert RATE.encode({"rate": 7}) == b"7"
    unchecked = compile_services(CoapBinding(services=(CoapService("x", "/x"),)), None)["x"]
    assert json.loads(unchecked.encode({"a": [1]})) == {"a": [1]}


@pytest.mark.parametrize(
    ("payload", "fmt", "expected"),
    [
        (cbor2.dumps({"ok": True, "volume": 3.5, "extra": 1}), None, {"ok": True, "volume": 3.5}),
        (json.dumps({"ok": False, "volume": 0}).encode(), ContentFormat.JSON, None),
        (b"12", ContentFormat.TEXT, None),
    ],
    ids=["cbor-extra-dropped", "json-by-option", "text"],
)
def test_replies_become_outputs(
    payload: bytes, fmt: ContentFormat | None, expected: dict[str, object] | None
) -> None:
    if fmt is ContentFormat.TEXT:
        assert RATE.decode(payload, fmt) == {"applied": 12}
    elif expected is None:
        assert FLUSH.decode(payload, fmt) == {"ok": False, "volume": 0.0}
    else:
        assert FLUSH.decode(payload, fmt) == expected


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (cbor2.dumps({"ok": True}), "reply has no output 'volume'"),
        (cbor2.dumps({"ok": True, "volume": 99.0}), "output 'volume'"),
        (cbor2.dumps({"ok": "yes", "volume": 1.0}), "output 'ok'"),
        (cbor2.dumps([1, 2]), "not a map of outputs"),
        (b"", "reply has no output 'ok'"),
        (b"\xff\x00", "does not decode"),
    ],
)
def test_unfit_replies_are_payload_errors(payload: bytes, fragment: str) -> None:
    with pytest.raises(CoapPayloadError, match=fragment):
        FLUSH.decode(payload, None)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([None, *ContentFormat]))
def test_fuzz_replies_map_or_raise_our_error(payload: bytes, fmt: ContentFormat | None) -> None:
    for mapping in (FLUSH, RATE):
        try:
            outputs = mapping.decode(payload, fmt)
        except CoapError:
            continue
        assert set(outputs) <= {f.id for f in mapping.outputs}


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["seconds", "note", "rate", "x"]), _JSONISH, max_size=3))
def test_fuzz_inputs_encode_or_raise_our_error(args: dict[str, object]) -> None:
    for mapping in (FLUSH, RATE):
        try:
            payload = mapping.encode(args)
        except CoapError:
            continue
        assert isinstance(payload, bytes)
