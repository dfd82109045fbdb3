"""ModelService over a real server: publish (formats, validation, version bumps), read, list,
diff and export, and hostile documents."""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
import pytest
import yaml

from cloud_registry.api.v1 import models_pb2
from cloud_registry.server.models_service import canonical_model
from tests.cloud_registry.server_fixtures import (
    EXAMPLES,
    METER,
    Registry,
    expect_error,
    field_violations,
    precondition_violations,
)
from thing_models import load_model_text

V1 = EXAMPLES / "versions" / "energy-meter-3p-1.0.0.yaml"
V11 = EXAMPLES / "versions" / "energy-meter-3p-1.1.0.yaml"
INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def publish(registry: Registry, text: str, **kwargs: bool) -> models_pb2.PublishModelResponse:
    response: models_pb2.PublishModelResponse = registry.models.PublishModel(
        models_pb2.PublishModelRequest(document=text, **kwargs), timeout=30
    )
    return response


def publish_error(registry: Registry, code: grpc.StatusCode, text: str) -> grpc.Call:
    error: grpc.Call = expect_error(
        code, registry.models.PublishModel, models_pb2.PublishModelRequest(document=text)
    )
    return error


def with_version(path: object, version: str) -> str:
    text = V11.read_text(encoding="utf-8") if path is V11 else V1.read_text(encoding="utf-8")
    return text.replace('version: "1.1.0"', f'version: "{version}"').replace(
        'version: "1.0.0"', f'version: "{version}"'
    )


# --------------------------------------------------------------------------- publish and read


def test_publish_then_get_by_exact_partial_and_bare_reference(registry: Registry) -> None:
    response = registry.publish_file(V1)
    record = response.model
    assert (record.name, record.version) == (METER, "1.0.0")
    assert record.title == "Three-phase energy meter"
    assert record.property_count == 14
    assert record.event_count == 1
    assert record.service_count == 1
    assert record.published_ms > 0
    assert not response.unchanged
    assert yaml.safe_load(record.document_yaml)["model"] == METER
    for ref in (METER, f"{METER}@1", f"{METER}@1.0", f"{METER}@1.0.0"):
        got = registry.models.GetModel(models_pb2.GetModelRequest(ref=ref), timeout=10)
        assert got == record, ref


def test_publishing_the_same_document_again_is_unchanged(registry: Registry) -> None:
    first = registry.publish_file(V1)
    again = registry.publish_file(V1)
    assert again.unchanged
    assert again.model.published_ms == first.model.published_ms


def test_same_version_with_another_document_already_exists(registry: Registry) -> None:
    registry.publish_file(V1)
    before = registry.snapshot()
    text = V1.read_text(encoding="utf-8").replace(
        "title: Three-phase energy meter", "title: Another meter"
    )
    error = publish_error(registry, grpc.StatusCode.ALREADY_EXISTS, text)
    assert "new version" in error.details()
    assert registry.snapshot() == before


def test_insufficient_bump_is_refused_listing_the_changes(registry: Registry) -> None:
    registry.publish_file(V1)
    before = registry.snapshot()
    # 1.1.0 narrows voltage_a (major) but declares a minor bump
    error = publish_error(registry, PRECONDITION, V11.read_text(encoding="utf-8"))
    assert "2.0.0" in error.details()  # the suggested version
    violations = precondition_violations(error)
    assert violations
    assert all(kind == "VERSION_BUMP" for kind, _, _ in violations)
    assert any("voltage_a" in subject for _, subject, _ in violations)
    assert registry.snapshot() == before


def test_sufficient_bump_is_published_and_versions_list_newest_first(registry: Registry) -> None:
    registry.publish_file(V1)
    response = publish(registry, with_version(V11, "2.0.0"))
    assert response.model.version == "2.0.0"
    versions = registry.models.ListModelVersions(
        models_pb2.ListModelVersionsRequest(name=METER), timeout=10
    ).versions
    assert [v.version for v in versions] == ["2.0.0", "1.0.0"]
    assert all(v.document_yaml == "" for v in versions)
    latest = registry.models.GetModel(models_pb2.GetModelRequest(ref=METER), timeout=10)
    assert latest.version == "2.0.0"
    assert (
        registry.models.GetModel(models_pb2.GetModelRequest(ref=f"{METER}@1"), timeout=10).version
        == "1.0.0"
    )


def test_a_version_lower_than_the_newest_is_refused(registry: Registry) -> None:
    registry.publish_file(V1)
    error = publish_error(registry, PRECONDITION, with_version(V1, "0.9.0"))
    assert "lower than the newest" in error.details()


def test_patch_bump_with_only_cosmetic_changes_is_accepted(registry: Registry) -> None:
    registry.publish_file(V1)
    text = with_version(V1, "1.0.1").replace(
        "title: Three-phase energy meter", "title: Three-phase energy meter (DIN rail)"
    )
    assert publish(registry, text).model.version == "1.0.1"


def test_dry_run_validates_and_stores_nothing(registry: Registry) -> None:
    response = publish(registry, V1.read_text(encoding="utf-8"), dry_run=True)
    assert response.model.version == "1.0.0"
    assert registry.storage.list_model_versions(METER) == []
    expect_error(
        grpc.StatusCode.NOT_FOUND, registry.models.GetModel, models_pb2.GetModelRequest(ref=METER)
    )


def test_components_must_be_published_first(registry: Registry) -> None:
    smoke = (EXAMPLES / "models" / "smoke-detector.yaml").read_text(encoding="utf-8")
    error = publish_error(registry, PRECONDITION, smoke)
    assert [kind for kind, _, _ in precondition_violations(error)] == ["UNRESOLVED_REFERENCE"]
    assert "device-health" in error.details()
    registry.publish_file(EXAMPLES / "models" / "device-health.yaml")
    assert publish(registry, smoke).model.name == "community.safety/smoke-detector"


def test_every_example_model_publishes_and_reads_back_equal(registry: Registry) -> None:
    paths = sorted((EXAMPLES / "models").glob("*.yaml"))
    # device-health first: others use it as a component
    paths.sort(key=lambda p: p.name != "device-health.yaml")
    for path in paths:
        response = registry.publish_file(path)
        got = registry.models.GetModel(
            models_pb2.GetModelRequest(ref=f"{response.model.name}@{response.model.version}"),
            timeout=10,
        )
        original = canonical_model(load_model_text(path.read_text(encoding="utf-8")))
        assert load_model_text(got.document_yaml) == original, path.name
        assert load_model_text(response.model.document_yaml) == original, path.name
        # the stored form loads back to the same model: publishing it again is unchanged
        assert publish(registry, got.document_yaml).unchanged, path.name


# --------------------------------------------------------------------------- formats


def test_export_formats_and_round_trip_through_wot_and_tsl(registry: Registry) -> None:
    registry.publish_file(V1)
    documents = {}
    for fmt, media in (
        ("yaml", "application/yaml"),
        ("tsl", "application/json"),
        ("wot-td", "application/td+json"),
        ("wot-tm", "application/tm+json"),
    ):
        exported = registry.models.ExportModel(
            models_pb2.ExportModelRequest(ref=METER, format=fmt), timeout=10
        )
        assert exported.media_type == media
        documents[fmt] = exported.document
        if fmt != "yaml":
            json.loads(exported.document)
    assert "losses" in models_pb2.ExportModelResponse.DESCRIPTOR.fields_by_name
    # A WoT TM export is lossless: publishing it back is the same model, unchanged.
    assert publish(registry, documents["wot-tm"]).unchanged
    # A TSL export imports as its own model (TSL has no model names of ours).
    tsl = publish(registry, documents["tsl"])
    assert tsl.model.property_count >= 14


def test_export_of_an_unknown_format_or_model(registry: Registry) -> None:
    registry.publish_file(V1)
    error = expect_error(
        INVALID,
        registry.models.ExportModel,
        models_pb2.ExportModelRequest(ref=METER, format="docx"),
    )
    assert field_violations(error)[0][0] == "format"
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        registry.models.ExportModel,
        models_pb2.ExportModelRequest(ref="com.example/none", format="tsl"),
    )


# --------------------------------------------------------------------------- diff and list


def test_diff_reports_changes_and_bumps(registry: Registry) -> None:
    registry.publish_file(V1)
    publish(registry, with_version(V11, "2.0.0"))
    diff = registry.models.DiffModels(
        models_pb2.DiffModelsRequest(old_ref=f"{METER}@1.0.0", new_ref=f"{METER}@2.0.0"),
        timeout=10,
    )
    assert diff.required == "major"
    assert diff.declared == "major"
    assert diff.ok
    assert {c.severity for c in diff.changes} >= {"major", "minor"}
    assert any(c.path.startswith("properties.voltage_a") for c in diff.changes)
    backwards = registry.models.DiffModels(
        models_pb2.DiffModelsRequest(old_ref=f"{METER}@2.0.0", new_ref=f"{METER}@1.0.0"),
        timeout=10,
    )
    assert backwards.declared == "backwards"
    assert not backwards.ok


def test_diff_of_two_models_or_bad_refs_is_invalid(registry: Registry) -> None:
    registry.publish_file(V1)
    registry.publish_file(EXAMPLES / "models" / "device-health.yaml")
    error = expect_error(
        INVALID,
        registry.models.DiffModels,
        models_pb2.DiffModelsRequest(old_ref=METER, new_ref="community.common/device-health"),
    )
    assert field_violations(error)[0][0] == "new_ref"
    error = expect_error(
        INVALID,
        registry.models.DiffModels,
        models_pb2.DiffModelsRequest(old_ref="", new_ref="Not A Ref"),
    )
    assert {f for f, _ in field_violations(error)} == {"old_ref", "new_ref"}


def test_list_models_pages_with_an_opaque_token(registry: Registry) -> None:
    for name in ("device-health", "water-meter", "ip-camera"):
        registry.publish_file(EXAMPLES / "models" / f"{name}.yaml")
    registry.publish_file(V1)
    publish(registry, with_version(V11, "2.0.0"))
    first = registry.models.ListModels(models_pb2.ListModelsRequest(page_size=2), timeout=10)
    assert len(first.models) == 2
    assert first.next_page_token
    second = registry.models.ListModels(
        models_pb2.ListModelsRequest(page_size=2, page_token=first.next_page_token), timeout=10
    )
    names = [m.name for m in (*first.models, *second.models)]
    assert names == sorted(names)
    assert len(set(names)) == 4
    meter = next(m for m in (*first.models, *second.models) if m.name == METER)
    assert (meter.latest_version, meter.version_count) == ("2.0.0", 2)
    prefixed = registry.models.ListModels(
        models_pb2.ListModelsRequest(name_prefix="community.energy/"), timeout=10
    )
    assert [m.name for m in prefixed.models] == [METER]
    huge = registry.models.ListModels(models_pb2.ListModelsRequest(page_size=2**31 - 1))
    assert len(huge.models) == 4  # clamped to the maximum, not refused


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"page_size": -1}, "page_size"),
        ({"page_token": "garbage!"}, "page_token"),
        ({"page_token": "eyJ2IjoxLCJrIjoiZGV2aWNlcyIsInAiOlsieCJdfQ"}, "page_token"),
        ({"page_token": "x" * 5000}, "page_token"),
        ({"name_prefix": "a\x00b"}, "name_prefix"),
    ],
)
def test_list_models_refuses_bad_paging(
    registry: Registry, request_fields: dict[str, Any], field: str
) -> None:
    registry.publish_file(V1)
    error = expect_error(
        INVALID, registry.models.ListModels, models_pb2.ListModelsRequest(**request_fields)
    )
    assert field_violations(error)[0][0] == field


@pytest.mark.parametrize(
    "ref", ["", "x" * 10_000, "Bad Name", "com.example/meter\n", "com.example/m@x.y", "a@1@2"]
)
def test_get_model_refuses_malformed_references(registry: Registry, ref: str) -> None:
    error = expect_error(INVALID, registry.models.GetModel, models_pb2.GetModelRequest(ref=ref))
    assert field_violations(error)[0][0] == "ref"
    assert len(error.details()) <= 1000


def test_unknown_models_are_not_found(registry: Registry) -> None:
    for method, request in (
        (registry.models.GetModel, models_pb2.GetModelRequest(ref="com.example/none@1.0.0")),
        (registry.models.GetModel, models_pb2.GetModelRequest(ref="com.example/none")),
        (registry.models.ListModelVersions, models_pb2.ListModelVersionsRequest(name="a.b/c")),
    ):
        expect_error(grpc.StatusCode.NOT_FOUND, method, request)


# --------------------------------------------------------------------------- hostile documents


def test_invalid_yaml_names_line_and_column(registry: Registry) -> None:
    error = publish_error(registry, INVALID, "model: a.b/c\nversion: [1.0\n")
    violations = field_violations(error)
    assert violations
    assert violations[0][0].startswith("document:")
    assert "YAML syntax" in violations[0][1]


def test_an_invalid_model_gives_one_violation_per_problem(registry: Registry) -> None:
    text = (
        "model: com.example/thing\nversion: '1.0.0'\nproperties:\n"
        "  - {id: 1bad, type: float}\n"
        "  - {id: temp, type: float, min: 10, max: 1}\n"
        "  - {id: mode, type: nonsense}\n"
    )
    error = publish_error(registry, INVALID, text)
    violations = field_violations(error)
    assert len(violations) >= 3
    assert all(field.startswith("properties") for field, _ in violations), violations
    assert registry.storage.list_models("", "", 10).items == ()


@pytest.mark.parametrize(
    "document",
    [
        "",
        "   \n",
        "just a string",
        "[1, 2, 3]",
        '{"no": "format"}',
        "{not json",
        "model: a.b/c\nversion: '1.0.0'\nx: !!python/object:os.system {}\n",
        "\x00\x01binary",
        "a: &a [1]\nb: *a\n" * 3 + "c: [" + "[" * 200 + "]" * 200 + "]\n",
    ],
)
def test_garbage_documents_are_invalid_arguments(registry: Registry, document: str) -> None:
    error = publish_error(registry, INVALID, document)
    assert error.details()
    registry.assert_serving()


def test_alias_bomb_is_refused_quickly(registry: Registry) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    bomb = "model: a.b/c\nversion: '1.0.0'\n" + "\n".join(lines) + "\n"
    started = time.monotonic()
    error = publish_error(registry, INVALID, bomb)
    assert time.monotonic() - started < 10
    assert "alias" in error.details()
    registry.assert_serving()


def test_huge_document_is_refused_and_oversize_message_exhausts(registry: Registry) -> None:
    registry.publish_file(V1)
    before = registry.snapshot()
    # 3 MiB: under the message limit (4 MiB in tests), over the model size limit (2 MiB)
    big = V1.read_text(encoding="utf-8") + "#" * (3 * 1024 * 1024) + "\n"
    error = publish_error(registry, INVALID, big)
    assert "over the limit" in error.details()
    # 5 MiB: over the message limit, refused by gRPC before any handler runs
    huge = "#" * (5 * 1024 * 1024)
    publish_error(registry, grpc.StatusCode.RESOURCE_EXHAUSTED, huge)
    registry.assert_serving()
    assert registry.snapshot() == before


def test_deeply_nested_json_is_refused(registry: Registry) -> None:
    error = publish_error(registry, INVALID, "[" * 100_000 + "]" * 100_000)
    assert "nested" in error.details()
    registry.assert_serving()


def test_many_problems_stay_within_trailer_limits(registry: Registry) -> None:
    props = "".join(f"  - {{id: p{i}, type: float, min: 10, max: 1}}\n" for i in range(2000))
    text = "model: com.example/many\nversion: '1.0.0'\nproperties:\n" + props
    error = publish_error(registry, INVALID, text)
    violations = field_violations(error)
    assert 1 < len(violations) < 2000
    assert violations[-1][1].startswith("... and ")
    registry.assert_serving()
