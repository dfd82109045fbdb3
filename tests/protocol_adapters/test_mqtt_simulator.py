"""The MQTT simulator's pure parts: documents built from the binding, command answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from protocol_adapters.base import Reading
from protocol_adapters.mqtt.errors import MqttConfigError
from protocol_adapters.mqtt.mapping import CommandCodec, DeviceMapping
from protocol_adapters.mqtt.simulator import MqttSimulator
from thing_models import load_model_file
from thing_models.composition import FolderModelSource, flatten
from thing_models.messages import Message, Quality, to_json_dict
from thing_models.model import MqttBinding, ThingModel

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"


def _model(name: str) -> ThingModel:
    return flatten(load_model_file(EXAMPLES / name), FolderModelSource(EXAMPLES))


DOOR = _model("access-control-door.yaml")
CAMERA = _model("ip-camera.yaml")


@pytest.mark.parametrize("model", [DOOR, CAMERA, _model("smoke-detector.yaml")])
def test_documents_map_back_to_every_point_with_good_quality(model: ThingModel) -> None:
    sim = MqttSimulator(model, "127.0.0.1", 1, "d1", tick_ms=None)
    binding = sim.binding
    mapping = DeviceMapping(binding, sim.model, "d1")
    readings: dict[str, Reading] = {}
    for topic, document in sim.documents().items():
        update = mapping.handle(topic, json.dumps(document).encode(), 0)
        assert update is not None
        readings.update(update.readings)
    assert set(readings) == {p.property for p in binding.points}
    assert all(r.quality is Quality.GOOD for r in readings.values()), readings
    assert {k: r.value for k, r in readings.items()} == sim.values


def test_ticks_move_read_only_numbers_only() -> None:
    sim = MqttSimulator(DOOR, "127.0.0.1", 1, "d1", tick_ms=None, seed=5)
    before = dict(sim.values)
    for _ in range(50):
        sim.tick()
    assert sim.values["held_open_limit"] == before["held_open_limit"]  # rw: left alone
    assert sim.values["lock_state"] == before["lock_state"]  # enum: left alone
    assert 0 <= sim.values["health:battery_level"] <= 100


def test_answers_carry_the_correlation_id() -> None:
    sim = MqttSimulator(DOOR, "127.0.0.1", 1, "d1", tick_ms=None)
    codec = CommandCodec(sim.binding, DOOR, "d1")
    command = codec.property_set("door_mode", "passage")
    answer = sim.answer(command.payload)
    assert answer is not None
    topic, data = answer
    assert topic == f"access/d1/cmd/reply/{command.correlation_id}"  # '#' filled with the id
    reply = codec.decode_reply(topic, data)
    assert reply.ok
    assert reply.correlation_id == command.correlation_id
    assert sim.values["door_mode"] == "passage"


@pytest.mark.parametrize(
    ("params", "status"),
    [({"lock_state": "unlocked"}, "read_only"), ({"nope": 1}, "bad_request")],
)
def test_bad_sets_are_refused(params: dict[str, Any], status: str) -> None:
    sim = MqttSimulator(DOOR, "127.0.0.1", 1, "d1", tick_ms=None)
    request = Message.property_set(str(DOOR.ref), "d1", params)
    answer = sim.answer(json.dumps(to_json_dict(request)).encode())
    assert answer is not None
    assert json.loads(answer[1])["status"] == status


def test_unknown_service_and_garbage() -> None:
    sim = MqttSimulator(CAMERA, "127.0.0.1", 1, "c", tick_ms=None)
    request = Message.service_call(str(CAMERA.ref), "c", "self_destruct")
    answer = sim.answer(json.dumps(to_json_dict(request)).encode())
    assert answer is not None
    assert answer[0] == "cameras/c/cmd/reply"
    assert json.loads(answer[1])["status"] == "unknown_service"
    assert sim.answer(b"{not json") is None
    assert sim.answer(b'{"id": 1}') is None


def test_model_without_binding_is_refused() -> None:
    with pytest.raises(MqttConfigError, match="has no MQTT binding"):
        MqttSimulator(_model("energy-meter-3p.yaml"), "127.0.0.1", 1, "m")
    sim = MqttSimulator(DOOR, "127.0.0.1", 1, "d", binding=MqttBinding(), tick_ms=None)
    assert sim.documents() == {}
