"""The storage contract: every engine (the ``storage`` fixture's parameters) passes this suite.

It states the rules of :mod:`cloud_registry.storage.base` as tests, method by method; the
label-selector semantics it checks against are :func:`label_selector.matches`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cloud_registry.storage.base import (
    AlreadyExists,
    ChangeEntry,
    ChangeKind,
    CommandEntry,
    CommandStatus,
    DeviceFilter,
    DeviceRecord,
    EventEntry,
    EventFilter,
    IngestBatch,
    LabelRequirement,
    Location,
    ModelEntry,
    NotFound,
    ReportedValue,
    StaleRevision,
    Storage,
    StorageError,
)
from cloud_registry.storage.cursors import InvalidCursor, encode_cursor
from cloud_registry.storage.label_selector import matches, parse_label_selector

MODEL = "com.acme.energy/meter@1.0.0"
NOW = 1_700_000_000_000


# --------------------------------------------------------------------------- helpers


def device(device_id: str, **fields: Any) -> DeviceRecord:
    values: dict[str, Any] = {"model": MODEL, "edge_id": "edge-1", "site": "site-a"}
    values.update(fields)
    return DeviceRecord(id=device_id, **values)


def model(name: str, version: str, document: dict[str, Any] | None = None) -> ModelEntry:
    doc = document if document is not None else {"name": name, "version": version}
    return ModelEntry(name, version, doc, published_ms=NOW, title=f"T {name}", vendor="Acme")


def event(event_id: str, device_id: str, ts_ms: int, **fields: Any) -> EventEntry:
    values: dict[str, Any] = {"name": "overheat", "level": "alert"}
    values.update(fields)
    return EventEntry(id=event_id, device_id=device_id, ts_ms=ts_ms, **values)


def command(command_id: str, edge_id: str = "edge-1", **fields: Any) -> CommandEntry:
    values: dict[str, Any] = {
        "device_id": "d1",
        "kind": "set_properties",
        "service": "",
        "params": {"setpoint": 21.5},
        "status": CommandStatus.QUEUED,
        "created_ms": NOW,
        "expires_ms": NOW + 60_000,
    }
    values.update(fields)
    return CommandEntry(id=command_id, edge_id=edge_id, **values)


def batch(
    sequence: int,
    values: list[ReportedValue] | None = None,
    events: list[EventEntry] | None = None,
    edge_id: str = "edge-1",
) -> IngestBatch:
    return IngestBatch(edge_id, sequence, values or [], events or [])


def all_changes(storage: Storage, after: int = 0) -> list[ChangeEntry]:
    return storage.changes_after(after, 100_000)


def new_changes(storage: Storage, mark: int) -> list[ChangeEntry]:
    return [c for c in all_changes(storage) if c.seq > mark]


def list_ids(storage: Storage, flt: DeviceFilter, limit: int = 1000) -> list[str]:
    ids: list[str] = []
    cursor = ""
    while True:
        page = storage.list_devices(flt, cursor, limit)
        ids.extend(d.id for d in page.items)
        if not page.next_cursor:
            return ids
        cursor = page.next_cursor


def list_event_ids(storage: Storage, flt: EventFilter, limit: int = 1000) -> list[str]:
    ids: list[str] = []
    cursor = ""
    while True:
        page = storage.list_events(flt, cursor, limit)
        ids.extend(e.id for e in page.items)
        if not page.next_cursor:
            return ids
        cursor = page.next_cursor


# --------------------------------------------------------------------------- lifecycle


def test_migrate_is_idempotent_and_reports_the_version(storage: Storage) -> None:
    version = storage.schema_version()
    assert version >= 1
    assert storage.migrate() == version
    assert storage.migrate() == version
    assert storage.schema_version() == version


def test_errors_form_one_tree() -> None:
    for error in (NotFound, AlreadyExists, InvalidCursor):
        assert issubclass(error, StorageError)
    stale = StaleRevision("x", 3)
    assert isinstance(stale, StorageError)
    assert stale.current == 3


MISSING: dict[str, Callable[[Storage], object]] = {
    "get_model": lambda s: s.get_model("com.acme/none"),
    "get_model_version": lambda s: s.get_model("com.acme/none", "1.0.0"),
    "get_device": lambda s: s.get_device("nope"),
    "update_device": lambda s: s.update_device("nope", {"site": "x"}, 0, NOW),
    "delete_device": lambda s: s.delete_device("nope", 0, NOW),
    "get_twin": lambda s: s.get_twin("nope"),
    "set_desired": lambda s: s.set_desired("nope", {"a": 1}, 0, NOW),
    "history": lambda s: s.history("nope", "p", 0, NOW, 10),
    "history_buckets": lambda s: s.history_buckets("nope", "p", 0, NOW, 1000),
    "acknowledge_event": lambda s: s.acknowledge_event("nope", "ops", "", NOW),
    "get_command": lambda s: s.get_command("nope"),
    "update_command": lambda s: s.update_command("nope", CommandStatus.SENT, NOW),
}


@pytest.mark.parametrize("call", MISSING.values(), ids=list(MISSING))
def test_missing_records_raise_not_found(
    storage: Storage, call: Callable[[Storage], object]
) -> None:
    with pytest.raises(NotFound):
        call(storage)


def test_empty_storage(storage: Storage) -> None:
    assert storage.latest_change_seq() == 0
    assert storage.oldest_change_seq() == 0
    assert storage.changes_after(0, 10) == []
    assert storage.last_sequence("edge-1") == 0
    assert storage.get_devices(["a", "b"]) == {}
    assert storage.list_devices(DeviceFilter(), "", 10).items == ()
    assert storage.list_models("", "", 10).items == ()
    assert storage.list_model_versions("com.acme/none") == []
    assert storage.pending_commands("edge-1", NOW) == []
    assert storage.expire_commands(NOW) == 0


# --------------------------------------------------------------------------- models


def test_put_model_is_idempotent(storage: Storage) -> None:
    entry = model("com.acme/meter", "1.0.0", {"b": [1, 2.5, True, None], "a": {"x": "y"}})
    stored, unchanged = storage.put_model(entry)
    assert not unchanged
    assert stored.document == entry.document
    mark = storage.latest_change_seq()
    # the same document, keys in another order: unchanged, nothing appended
    again = model("com.acme/meter", "1.0.0", {"a": {"x": "y"}, "b": [1, 2.5, True, None]})
    stored2, unchanged2 = storage.put_model(again)
    assert unchanged2
    assert stored2.document == entry.document
    assert storage.latest_change_seq() == mark


def test_put_model_with_another_document_is_refused(storage: Storage) -> None:
    storage.put_model(model("com.acme/meter", "1.0.0", {"a": 1}))
    with pytest.raises(AlreadyExists):
        storage.put_model(model("com.acme/meter", "1.0.0", {"a": 2}))
    assert storage.get_model("com.acme/meter", "1.0.0").document == {"a": 1}


def test_put_model_appends_model_published(storage: Storage) -> None:
    storage.put_model(model("com.acme/meter", "1.2.0"))
    (change,) = all_changes(storage)
    assert change.kind is ChangeKind.MODEL_PUBLISHED
    assert change.payload["name"] == "com.acme/meter"
    assert change.payload["version"] == "1.2.0"
    assert change.payload["title"] == "T com.acme/meter"
    assert change.payload["vendor"] == "Acme"


def test_model_round_trip_keeps_every_field_and_json_type(storage: Storage) -> None:
    document = {
        "int": 2,
        "float": 2.0,
        "bool": True,
        "none": None,
        "nested": {"list": [1, 1.0, False, "1", {"deep": [0.1]}]},
        "text": "Grüße 3号楼",
    }
    entry = ModelEntry(
        "com.acme/meter",
        "1.0.0",
        document,
        published_ms=NOW,
        title="Meter",
        vendor="Acme",
        description="three-phase",
        property_count=3,
        event_count=2,
        service_count=1,
    )
    storage.put_model(entry)
    got = storage.get_model("com.acme/meter", "1.0.0")
    assert got == entry
    assert type(got.document["int"]) is int
    assert type(got.document["float"]) is float
    assert [type(x) for x in got.document["nested"]["list"]] == [int, float, bool, str, dict]


SEMVER_ORDER = [
    "0.9.9",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.2.0",
    "1.9.0",
    "1.10.0",
    "2.0.0-rc.1",
    "2.0.0",
    "10.0.0",
]


def test_versions_follow_semantic_version_order(storage: Storage) -> None:
    for version in reversed(SEMVER_ORDER[::2]):
        storage.put_model(model("com.acme/meter", version))
    for version in SEMVER_ORDER[1::2]:
        storage.put_model(model("com.acme/meter", version))
    versions = [m.version for m in storage.list_model_versions("com.acme/meter")]
    assert versions == SEMVER_ORDER[::-1]
    assert storage.get_model("com.acme/meter").version == "10.0.0"
    assert storage.get_model("com.acme/meter", "1.9.0").version == "1.9.0"


def test_newest_version_ten_beats_nine(storage: Storage) -> None:
    storage.put_model(model("com.acme/meter", "1.10.0"))
    storage.put_model(model("com.acme/meter", "1.9.0"))
    assert storage.get_model("com.acme/meter").version == "1.10.0"
    page = storage.list_models("", "", 10)
    assert [(m.name, m.version) for m in page.items] == [("com.acme/meter", "1.10.0")]


def test_list_models_pages_by_name_with_prefix(storage: Storage) -> None:
    names = ["com.acme/a", "com.acme/b", "com.acme/c", "com.acme/d", "com.acme/e", "org.x/z"]
    for name in names:
        storage.put_model(model(name, "1.0.0"))
        storage.put_model(model(name, "1.1.0"))
    storage.put_model(model("com.acme/c", "2.0.0-beta"))
    seen: list[tuple[str, str]] = []
    cursor = ""
    pages = 0
    while True:
        page = storage.list_models("com.acme/", cursor, 2)
        pages += 1
        assert len(page.items) <= 2
        seen.extend((m.name, m.version) for m in page.items)
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    assert pages == 3
    expected = [(n, "2.0.0-beta" if n == "com.acme/c" else "1.1.0") for n in names[:5]]
    assert seen == expected
    assert [m.name for m in storage.list_models("", "", 100).items] == names
    assert storage.list_models("net.", "", 100).items == ()


# --------------------------------------------------------------------------- devices


def test_create_and_get_device(storage: Storage) -> None:
    record = device(
        "d1",
        building="B1",
        labels={"floor": "3", "tier": "gold"},
        location=Location(48.1, 11.5, "3", "301"),
        revision=99,
    )
    created = storage.create_device(record, NOW)
    assert created.revision == 1
    assert created.created_ms == created.updated_ms == NOW
    got = storage.get_device("d1")
    assert got == created
    assert got.labels == {"floor": "3", "tier": "gold"}
    assert got.location == Location(48.1, 11.5, "3", "301")
    assert got.model_name == "com.acme.energy/meter"
    (change,) = all_changes(storage)
    assert change.kind is ChangeKind.DEVICE_CREATED
    assert (change.device_id, change.site, change.model, change.edge_id) == (
        "d1",
        "site-a",
        MODEL,
        "edge-1",
    )
    assert change.payload["id"] == "d1"
    assert change.payload["labels"] == {"floor": "3", "tier": "gold"}
    assert change.ts_ms == NOW


def test_duplicate_device_is_refused(storage: Storage) -> None:
    storage.create_device(device("d1"), NOW)
    mark = storage.latest_change_seq()
    with pytest.raises(AlreadyExists):
        storage.create_device(device("d1", site="elsewhere"), NOW + 1)
    assert storage.get_device("d1").site == "site-a"
    assert storage.latest_change_seq() == mark


def test_get_devices_returns_the_existing_ones(storage: Storage) -> None:
    for i in range(1200):
        storage.create_device(device(f"d{i:04d}"), NOW) if i % 100 == 0 else None
    wanted = [f"d{i:04d}" for i in range(0, 1200, 50)] + ["missing", "d0000"]
    found = storage.get_devices(wanted)
    assert sorted(found) == [f"d{i:04d}" for i in range(0, 1200, 100)]
    assert found["d0100"].id == "d0100"


POPULATION: list[DeviceRecord] = [
    device(
        f"dev-{i:03d}",
        model=("com.acme.energy/meter@1.0.0", "com.acme.energy/meter@1.1.0", "org.x/valve@2.0.0")[
            i % 3
        ],
        edge_id=f"edge-{i % 4}",
        site=("site-a", "site-b", "site-c")[i % 5 % 3],
        building=("", "B1", "B2")[i % 7 % 3],
        labels={
            k: v
            for k, v in (
                ("floor", str(i % 5)),
                ("tier", ("gold", "silver", "bronze")[i % 3]) if i % 4 else ("", ""),
                ("zone", "north") if i % 6 == 0 else ("", ""),
            )
            if k
        },
    )
    for i in range(60)
]

FILTERS: dict[str, DeviceFilter] = {
    "all": DeviceFilter(),
    "model-name": DeviceFilter(model="com.acme.energy/meter"),
    "model-exact": DeviceFilter(model="com.acme.energy/meter@1.1.0"),
    "model-unknown": DeviceFilter(model="com.acme.energy/none"),
    "site": DeviceFilter(site="site-b"),
    "edge": DeviceFilter(edge_id="edge-2"),
    "building": DeviceFilter(building="B1"),
    "online": DeviceFilter(online=True),
    "offline": DeviceFilter(online=False),
    "label-eq": DeviceFilter(labels=parse_label_selector("tier=gold")),
    "label-ne": DeviceFilter(labels=parse_label_selector("tier!=gold")),
    "label-exists": DeviceFilter(labels=parse_label_selector("zone")),
    "label-absent": DeviceFilter(labels=parse_label_selector("!tier")),
    "label-in": DeviceFilter(labels=parse_label_selector("floor in (1,3)")),
    "label-notin": DeviceFilter(labels=parse_label_selector("tier notin (gold,bronze)")),
    "labels-combined": DeviceFilter(labels=parse_label_selector("floor=2,tier,!zone")),
    "site+edge": DeviceFilter(site="site-a", edge_id="edge-0"),
    "site+model+online": DeviceFilter(site="site-c", model="org.x/valve", online=True),
    "building+label": DeviceFilter(building="B2", labels=parse_label_selector("tier in (silver)")),
    "edge+label-eq": DeviceFilter(edge_id="edge-1", labels=parse_label_selector("floor=1")),
    "label-eq+online": DeviceFilter(online=False, labels=parse_label_selector("tier=silver")),
    "model+label-eq": DeviceFilter(model="org.x/valve", labels=parse_label_selector("floor=2")),
    "model-exact+label-in": DeviceFilter(
        model="com.acme.energy/meter@1.1.0", labels=parse_label_selector("floor in (0,1,2)")
    ),
    "label-in+label-notin": DeviceFilter(
        labels=parse_label_selector("floor in (1,2),zone notin (x)")
    ),
    "label-exists+online": DeviceFilter(online=True, labels=parse_label_selector("zone,floor!=0")),
    "sites-none-allowed": DeviceFilter(sites=()),
    "sites-one": DeviceFilter(sites=("site-b",)),
    "sites-two": DeviceFilter(sites=("site-a", "site-c")),
    "sites-two+label": DeviceFilter(
        sites=("site-a", "site-c"), labels=(LabelRequirement("zone", "exists"),)
    ),
    "site-outside-sites": DeviceFilter(site="site-a", sites=("site-b",)),
    "site-inside-sites": DeviceFilter(site="site-a", sites=("site-a", "site-b")),
    "everything": DeviceFilter(
        model="com.acme.energy/meter",
        site="site-a",
        edge_id="edge-0",
        building="",
        labels=parse_label_selector("floor notin (4)"),
        online=True,
        sites=("site-a",),
    ),
}


def reference(records: list[DeviceRecord], flt: DeviceFilter) -> list[str]:
    def ok(d: DeviceRecord) -> bool:
        if flt.model and (d.model != flt.model if "@" in flt.model else d.model_name != flt.model):
            return False
        if flt.site and d.site != flt.site:
            return False
        if flt.edge_id and d.edge_id != flt.edge_id:
            return False
        if flt.building and d.building != flt.building:
            return False
        if flt.online is not None and d.online != flt.online:
            return False
        if flt.sites is not None and d.site not in flt.sites:
            return False
        return matches(d.labels, flt.labels)

    return sorted(d.id for d in records if ok(d))


@pytest.fixture
def population(storage: Storage) -> list[DeviceRecord]:
    for record in POPULATION:
        storage.create_device(record, NOW)
    by_edge: dict[str, dict[str, bool]] = {}
    for i, record in enumerate(POPULATION):
        by_edge.setdefault(record.edge_id, {})[record.id] = i % 2 == 0
    for edge_id, states in by_edge.items():
        storage.set_devices_online(edge_id, states, NOW)
    return [storage.get_device(r.id) for r in POPULATION]


@pytest.mark.parametrize("flt", FILTERS.values(), ids=list(FILTERS))
def test_list_devices_filters(
    storage: Storage, population: list[DeviceRecord], flt: DeviceFilter
) -> None:
    expected = reference(population, flt)
    assert list_ids(storage, flt) == expected
    # the same through small pages
    assert list_ids(storage, flt, limit=7) == expected


def test_filters_are_not_trivial(population: list[DeviceRecord]) -> None:
    """Every filter of the table selects some devices but not all (except the edge cases)."""
    for name, flt in FILTERS.items():
        count = len(reference(population, flt))
        if name in ("all",):
            assert count == len(population)
        elif name in ("model-unknown", "sites-none-allowed", "site-outside-sites"):
            assert count == 0
        else:
            assert 0 < count < len(population), name


def test_list_devices_pages_in_id_order(storage: Storage, population: list[DeviceRecord]) -> None:
    page = storage.list_devices(DeviceFilter(), "", 25)
    assert [d.id for d in page.items] == sorted(d.id for d in population)[:25]
    assert page.next_cursor
    last = storage.list_devices(DeviceFilter(), "", 60)
    assert len(last.items) == 60
    assert last.next_cursor == ""
    assert last.items[0] == population[0]


def test_keyset_paging_is_stable_across_inserts(storage: Storage) -> None:
    for i in range(0, 40, 2):
        storage.create_device(device(f"k{i:02d}"), NOW)
    first = storage.list_devices(DeviceFilter(), "", 5)
    assert [d.id for d in first.items] == ["k00", "k02", "k04", "k06", "k08"]
    # inserts before and after the cursor
    storage.create_device(device("k01"), NOW)
    storage.create_device(device("k09"), NOW)
    storage.create_device(device("k99"), NOW)
    rest: list[str] = []
    cursor = first.next_cursor
    while cursor:
        page = storage.list_devices(DeviceFilter(), cursor, 5)
        rest.extend(d.id for d in page.items)
        cursor = page.next_cursor
    assert rest == ["k09", *[f"k{i:02d}" for i in range(10, 40, 2)], "k99"]


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64 !!",
        "eyJ2IjoxfQ",  # {"v":1}
        encode_cursor("events", [1, "x"]),
        encode_cursor("devices", [5]),
        encode_cursor("devices", ["a", "b"]),
        "A" * 10_000,
    ],
)
def test_tampered_cursors_are_refused(storage: Storage, cursor: str) -> None:
    with pytest.raises(InvalidCursor) as caught:
        storage.list_devices(DeviceFilter(), cursor, 10)
    assert isinstance(caught.value, StorageError)
    assert isinstance(caught.value, ValueError)


def test_tampered_event_and_model_cursors_are_refused(storage: Storage) -> None:
    with pytest.raises(InvalidCursor):
        storage.list_events(EventFilter(), encode_cursor("devices", ["a"]), 10)
    with pytest.raises(InvalidCursor):
        storage.list_events(EventFilter(), encode_cursor("events", [True, "x"]), 10)
    with pytest.raises(InvalidCursor):
        storage.list_models("", encode_cursor("events", [1, "x"]), 10)


def test_update_device(storage: Storage) -> None:
    storage.create_device(device("d1", labels={"a": "1", "b": "2"}), NOW)
    updated = storage.update_device(
        "d1",
        {
            "site": "site-z",
            "labels": {"a": "9"},
            "location": Location(1.5, 2.5, "G", "R1"),
            "model": "com.acme.energy/meter@1.1.0",
        },
        1,
        NOW + 5,
    )
    assert updated.revision == 2
    assert updated.updated_ms == NOW + 5
    assert updated.created_ms == NOW
    assert updated.site == "site-z"
    assert updated.labels == {"a": "9"}
    assert updated.location == Location(1.5, 2.5, "G", "R1")
    assert updated.edge_id == "edge-1"  # untouched
    assert storage.get_device("d1") == updated
    # the indexes follow
    assert list_ids(storage, DeviceFilter(site="site-z")) == ["d1"]
    assert list_ids(storage, DeviceFilter(site="site-a")) == []
    assert list_ids(storage, DeviceFilter(labels=parse_label_selector("b"))) == []
    assert list_ids(storage, DeviceFilter(labels=parse_label_selector("a=9"))) == ["d1"]
    assert list_ids(storage, DeviceFilter(model="com.acme.energy/meter@1.1.0")) == ["d1"]
    change = all_changes(storage)[-1]
    assert change.kind is ChangeKind.DEVICE_UPDATED
    assert change.site == "site-z"
    assert change.payload["revision"] == 2
    # unconditional
    again = storage.update_device("d1", {"building": "B7"}, 0, NOW + 6)
    assert again.revision == 3
    assert again.building == "B7"


def test_update_device_with_stale_revision(storage: Storage) -> None:
    storage.create_device(device("d1"), NOW)
    storage.update_device("d1", {"building": "B1"}, 1, NOW)
    mark = storage.latest_change_seq()
    with pytest.raises(StaleRevision) as caught:
        storage.update_device("d1", {"building": "B2"}, 1, NOW)
    assert caught.value.current == 2
    assert storage.get_device("d1").building == "B1"
    assert storage.latest_change_seq() == mark


def test_delete_device_cascades(storage: Storage) -> None:
    storage.create_device(device("d1", labels={"x": "1"}), NOW)
    storage.create_device(device("d2", labels={"x": "1"}), NOW)
    values = [ReportedValue(d, "power", 5, NOW) for d in ("d1", "d2")]
    events = [event("e1", "d1", NOW), event("e2", "d2", NOW)]
    storage.ingest(batch(1, values, events), NOW)
    storage.set_desired("d1", {"setpoint": 20}, 0, NOW)
    with pytest.raises(StaleRevision) as caught:
        storage.delete_device("d1", 7, NOW)
    assert caught.value.current == 1
    storage.delete_device("d1", 1, NOW + 1)
    with pytest.raises(NotFound):
        storage.get_device("d1")
    with pytest.raises(NotFound):
        storage.get_twin("d1")
    assert list_ids(storage, DeviceFilter(labels=parse_label_selector("x=1"))) == ["d2"]
    assert list_event_ids(storage, EventFilter()) == ["e2"]
    change = all_changes(storage)[-1]
    assert change.kind is ChangeKind.DEVICE_DELETED
    assert change.payload["id"] == "d1"
    assert change.payload["site"] == "site-a"
    assert change.payload["model"] == MODEL
    assert change.device_id == "d1"
    # a new device with the same id starts empty
    storage.create_device(device("d1"), NOW + 2)
    twin = storage.get_twin("d1")
    assert twin.reported == {}
    assert twin.desired == {}
    assert storage.history("d1", "power", 0, NOW + 10, 10) == ([], False)
    assert list_event_ids(storage, EventFilter(device_id="d1")) == []
    # d2 untouched
    assert storage.get_twin("d2").reported["power"].value == 5
    assert storage.history("d2", "power", 0, NOW + 10, 10)[0][0].value == 5


def test_delete_device_unconditionally(storage: Storage) -> None:
    storage.create_device(device("d1"), NOW)
    storage.update_device("d1", {"building": "B"}, 0, NOW)
    storage.delete_device("d1", 0, NOW)
    assert storage.get_devices(["d1"]) == {}


def test_set_devices_online(storage: Storage) -> None:
    storage.create_device(device("a1", edge_id="edge-a"), NOW)
    storage.create_device(device("a2", edge_id="edge-a"), NOW)
    storage.create_device(device("b1", edge_id="edge-b"), NOW)
    mark = storage.latest_change_seq()
    storage.set_devices_online("edge-a", {"a1": True, "a2": False, "b1": True, "ghost": True}, NOW)
    assert storage.get_device("a1").online is True
    assert storage.get_device("a2").online is False
    assert storage.get_device("b1").online is False  # another edge's device: ignored
    changes = new_changes(storage, mark)
    assert [(c.kind, c.device_id) for c in changes] == [(ChangeKind.DEVICE_UPDATED, "a1")]
    assert changes[0].payload["online"] is True
    assert changes[0].edge_id == "edge-a"
    # no state change: nothing appended, revision untouched
    mark = storage.latest_change_seq()
    storage.set_devices_online("edge-a", {"a1": True, "a2": False}, NOW + 1)
    assert storage.latest_change_seq() == mark
    assert storage.get_device("a1").revision == 1
    storage.set_devices_online("edge-a", {"a1": False, "a2": True}, NOW + 2)
    assert [c.device_id for c in new_changes(storage, mark)] == ["a1", "a2"]
    assert list_ids(storage, DeviceFilter(online=True)) == ["a2"]


# --------------------------------------------------------------------------- twins


def test_fresh_twin(storage: Storage) -> None:
    storage.create_device(device("d1"), NOW)
    twin = storage.get_twin("d1")
    assert twin.device_id == "d1"
    assert twin.model == MODEL
    assert twin.reported == {}
    assert twin.desired == {}
    assert twin.revision == 0
    assert twin.delta == {}


def test_set_desired(storage: Storage) -> None:
    storage.create_device(device("d1"), NOW)
    twin = storage.set_desired("d1", {"setpoint": 21.5, "mode": "eco", "flags": [1, 2]}, 0, NOW)
    assert twin.revision == 1
    assert {k: v.value for k, v in twin.desired.items()} == {
        "setpoint": 21.5,
        "mode": "eco",
        "flags": [1, 2],
    }
    assert twin.desired["mode"].ts_ms == NOW
    assert storage.get_twin("d1") == twin
    change = all_changes(storage)[-1]
    assert change.kind is ChangeKind.TWIN_DESIRED
    assert change.edge_id == "edge-1"
    assert change.payload["revision"] == 1
    assert change.payload["properties"]["setpoint"]["value"] == 21.5
    # None clears; stale revision refused
    with pytest.raises(StaleRevision) as caught:
        storage.set_desired("d1", {"mode": None}, 5, NOW + 1)
    assert caught.value.current == 1
    twin = storage.set_desired("d1", {"mode": None, "setpoint": 22}, 1, NOW + 1)
    assert twin.revision == 2
    assert set(twin.desired) == {"setpoint", "flags"}
    assert type(twin.desired["setpoint"].value) is int
    change = all_changes(storage)[-1]
    assert change.payload["properties"]["mode"]["value"] is None
    assert change.payload["properties"]["setpoint"]["value"] == 22


def test_delta_is_type_exact(storage: Storage) -> None:
    storage.create_device(device("d1"), NOW)
    reported = {"a": 1, "b": 1, "c": True, "d": "x", "e": {"k": [1]}, "f": 0}
    storage.ingest(batch(1, [ReportedValue("d1", k, v, NOW) for k, v in reported.items()]), NOW)
    twin = storage.set_desired(
        "d1", {"a": 1.0, "b": 1, "c": 1, "d": "x", "e": {"k": [1]}, "f": False, "g": 3}, 0, NOW
    )
    assert twin.delta == {"a": 1.0, "c": 1, "f": False, "g": 3}
    assert type(twin.delta["a"]) is float
    assert type(twin.delta["c"]) is int


# --------------------------------------------------------------------------- ingest


def test_ingest_stores_twin_history_events_and_changes(storage: Storage) -> None:
    storage.create_device(device("d1"), NOW)
    storage.create_device(device("d2", site="site-b", edge_id="edge-9"), NOW)
    mark = storage.latest_change_seq()
    values = [
        ReportedValue("d1", "power", 12.5, NOW + 1),
        ReportedValue("d1", "on", True, NOW + 1),
        ReportedValue("d2", "power", 3, NOW + 2, "uncertain"),
    ]
    events = [event("e1", "d1", NOW + 1, params={"temp": 81.5, "unit": "C"})]
    result = storage.ingest(batch(7, values, events), NOW + 10)
    assert not result.duplicate
    assert result.stored_values == 3
    assert result.stored_events == 1
    assert result.rejected == ()
    assert storage.last_sequence("edge-1") == 7

    twin = storage.get_twin("d1")
    assert twin.reported["power"].value == 12.5
    assert twin.reported["power"].ts_ms == NOW + 1
    assert twin.reported["on"].value is True
    assert twin.revision == 1
    d2 = storage.get_twin("d2")
    assert d2.reported["power"].quality == "uncertain"
    assert storage.get_device("d1").last_seen_ms == NOW + 10
    assert storage.get_device("d2").last_seen_ms == NOW + 10

    changes = new_changes(storage, mark)
    twin_changes = [c for c in changes if c.kind is ChangeKind.TWIN_REPORTED]
    assert [c.device_id for c in twin_changes] == ["d1", "d2"]
    first = twin_changes[0]
    assert first.payload["revision"] == 1
    assert first.payload["properties"] == {
        "power": {"value": 12.5, "ts_ms": NOW + 1, "quality": "good"},
        "on": {"value": True, "ts_ms": NOW + 1, "quality": "good"},
    }
    assert (twin_changes[1].site, twin_changes[1].edge_id) == ("site-b", "edge-9")
    event_changes = [c for c in changes if c.kind is ChangeKind.EVENT]
    assert len(event_changes) == 1
    assert event_changes[0].payload["id"] == "e1"
    assert event_changes[0].payload["params"] == {"temp": 81.5, "unit": "C"}
    assert event_changes[0].device_id == "d1"

    (stored_event,) = storage.list_events(EventFilter(), "", 10).items
    assert stored_event.params == {"temp": 81.5, "unit": "C"}
    assert stored_event.level == "alert"
    assert not stored_event.acknowledged


def test_duplicate_batch_stores_nothing(storage: Storage) -> None:
    storage.create_device(device("d1"), NOW)
    values = [ReportedValue("d1", "power", 1, NOW)]
    assert not storage.ingest(batch(1, values), NOW).duplicate
    mark = storage.latest_change_seq()
    again = storage.ingest(
        batch(1, [ReportedValue("d1", "power", 2, NOW + 5)], [event("e9", "d1", NOW)]), NOW + 5
    )
    assert again.duplicate
    assert again.stored_values == 0
    assert storage.latest_change_seq() == mark
    assert storage.get_twin("d1").reported["power"].value == 1
    assert len(storage.history("d1", "power", 0, NOW + 10, 10)[0]) == 1
    assert list_event_ids(storage, EventFilter()) == []
    # sequences are per edge; gaps and older sequences not seen before are stored
    assert not storage.ingest(batch(1, values, edge_id="edge-2"), NOW).duplicate
    assert not storage.ingest(batch(5, values), NOW).duplicate
    assert not storage.ingest(batch(3, values), NOW).duplicate
    assert storage.ingest(batch(5, values), NOW).duplicate
    assert storage.last_sequence("edge-1") == 5
    assert storage.last_sequence("edge-2") == 1


def test_unknown_devices_are_rejected_and_the_rest_stored(storage: Storage) -> None:
    storage.create_device(device("d1"), NOW)
    values = [
        ReportedValue("ghost", "power", 1, NOW),
        ReportedValue("d1", "power", 2, NOW),
        ReportedValue("ghost", "energy", 1, NOW),
    ]
    events = [event("e1", "phantom", NOW), event("e2", "d1", NOW)]
    result = storage.ingest(batch(1, values, events), NOW)
    assert result.stored_values == 1
    assert result.stored_events == 1
    assert len(result.rejected) == 2
    assert result.rejected[0].startswith("ghost")
    assert result.rejected[1].startswith("phantom")
    assert storage.get_twin("d1").reported["power"].value == 2
    assert list_event_ids(storage, EventFilter()) == ["e2"]


def test_older_values_go_to_history_but_not_the_twin(storage: Storage) -> None:
    storage.create_device(device("d1"), NOW)
    storage.ingest(batch(1, [ReportedValue("d1", "t", 20, NOW + 100)]), NOW)
    mark = storage.latest_change_seq()
    # only older values: history grows, twin unchanged, no twin change appended
    result = storage.ingest(batch(2, [ReportedValue("d1", "t", 10, NOW + 50)]), NOW)
    assert result.stored_values == 1
    twin = storage.get_twin("d1")
    assert twin.reported["t"].value == 20
    assert twin.revision == 1
    assert [c.kind for c in new_changes(storage, mark)] == []
    points, _ = storage.history("d1", "t", 0, NOW + 1000, 10)
    assert [(p.ts_ms, p.value) for p in points] == [(NOW + 50, 10), (NOW + 100, 20)]
    # mixed batch: the equal-or-newer value wins, and within a batch the last of equals wins
    storage.ingest(
        batch(
            3,
            [
                ReportedValue("d1", "t", 30, NOW + 200),
                ReportedValue("d1", "t", 5, NOW + 10),
                ReportedValue("d1", "h", 1, NOW + 1),
                ReportedValue("d1", "h", 2, NOW + 1),
                ReportedValue("d1", "t", 31, NOW + 200),
            ],
        ),
        NOW,
    )
    twin = storage.get_twin("d1")
    assert twin.reported["t"].value == 31
    assert twin.reported["h"].value == 2
    assert twin.revision == 2
    change = all_changes(storage)[-1]
    assert change.kind is ChangeKind.TWIN_REPORTED
    assert change.payload["properties"] == {
        "t": {"value": 31, "ts_ms": NOW + 200, "quality": "good"},
        "h": {"value": 2, "ts_ms": NOW + 1, "quality": "good"},
    }
    assert change.payload["revision"] == 2
    # a value as old as the stored one replaces it
    storage.ingest(batch(4, [ReportedValue("d1", "t", 32, NOW + 200)]), NOW)
    assert storage.get_twin("d1").reported["t"].value == 32


def test_one_twin_change_per_device_per_batch(storage: Storage) -> None:
    for d in ("d1", "d2", "d3"):
        storage.create_device(device(d), NOW)
    values = [ReportedValue(d, f"p{j}", j, NOW + j) for j in range(5) for d in ("d2", "d1")]
    mark = storage.latest_change_seq()
    storage.ingest(batch(1, values), NOW)
    changes = new_changes(storage, mark)
    assert [c.device_id for c in changes] == ["d2", "d1"]
    assert all(len(c.payload["properties"]) == 5 for c in changes)


VALUES: list[Any] = [
    0,
    1,
    -7,
    2**53 + 1,
    10**30,
    0.0,
    1.0,
    -2.5,
    1e300,
    1e-300,
    0.1,
    True,
    False,
    None,
    "",
    "1",
    "true",
    'Grüße \u2603 3号楼 "quoted" \\ \n',
    [],
    {},
    [1, 1.0, True, None, "x"],
    {"nested": {"list": [{"a": 1}, [2.0, False]]}, "n": None},
]


def test_values_keep_their_exact_json_types(storage: Storage) -> None:
    storage.create_device(device("d1"), NOW)
    values = [ReportedValue("d1", f"v{i}", v, NOW) for i, v in enumerate(VALUES)]
    storage.ingest(batch(1, values), NOW)
    twin = storage.get_twin("d1")

    def same(a: Any, b: Any) -> bool:
        if type(a) is not type(b):
            return False
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, list):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
        return bool(a == b)

    for i, value in enumerate(VALUES):
        assert same(twin.reported[f"v{i}"].value, value), (i, value)
        points, _ = storage.history("d1", f"v{i}", 0, NOW + 1, 10)
        assert same(points[0].value, value), (i, value)
    change = all_changes(storage)[-1]
    for i, value in enumerate(VALUES):
        assert same(change.payload["properties"][f"v{i}"]["value"], value), (i, value)
    # desired values too
    desired = storage.set_desired(
        "d1", {f"v{i}": v for i, v in enumerate(VALUES) if v is not None}, 0, NOW
    )
    for i, value in enumerate(VALUES):
        if value is not None:
            assert same(desired.desired[f"v{i}"].value, value), (i, value)


def test_large_batch(storage: Storage) -> None:
    """A batch over many devices and properties (more than any single IN list)."""
    ids = [f"d{i:04d}" for i in range(1200)]
    for d in ids:
        storage.create_device(device(d), NOW)
    values = [ReportedValue(d, f"p{j}", j * 1.5, NOW) for d in ids for j in range(3)]
    mark = storage.latest_change_seq()
    result = storage.ingest(batch(1, values), NOW)
    assert result.stored_values == 3600
    assert len(new_changes(storage, mark)) == 1200
    assert storage.get_twin("d1199").reported["p2"].value == 3.0
    # a second, partly older batch: the per-property comparison path
    older = [ReportedValue(d, "p1", -1, NOW - 1) for d in ids[:600]]
    newer = [ReportedValue(d, "p1", 99, NOW + 1) for d in ids[600:]]
    mark = storage.latest_change_seq()
    storage.ingest(batch(2, older + newer), NOW)
    assert len(new_changes(storage, mark)) == 600
    assert storage.get_twin("d0000").reported["p1"].value == 1.5
    assert storage.get_twin("d0600").reported["p1"].value == 99


# --------------------------------------------------------------------------- history


def test_history_raw_points_and_paging(storage: Storage) -> None:
    storage.create_device(device("d1"), NOW)
    values = [ReportedValue("d1", "t", i, NOW + i * 10) for i in range(20)]
    values.append(ReportedValue("d1", "other", 1, NOW + 5))
    storage.ingest(batch(1, values[::-1]), NOW)
    points, more = storage.history("d1", "t", NOW + 10, NOW + 100, 100)
    assert [p.ts_ms for p in points] == [NOW + i * 10 for i in range(1, 10)]  # [from, to)
    assert not more
    points, more = storage.history("d1", "t", NOW, NOW + 1000, 5)
    assert [p.value for p in points] == [0, 1, 2, 3, 4]
    assert more
    points, more = storage.history("d1", "t", NOW, NOW + 200, 20)
    assert len(points) == 20
    assert not more
    assert points[0].quality == "good"
    assert storage.history("d1", "missing", 0, NOW + 1000, 10) == ([], False)


def test_history_buckets(storage: Storage) -> None:
    storage.create_device(device("d1"), NOW)
    base = 1_000_000  # a multiple of the bucket
    values = [
        ReportedValue("d1", "x", 1, base + 5),
        ReportedValue("d1", "x", 3.5, base + 50),
        ReportedValue("d1", "x", True, base + 99),
        ReportedValue("d1", "x", "text", base + 60),  # non-numeric: skipped
        ReportedValue("d1", "x", {"a": 1}, base + 61),  # non-numeric: skipped
        ReportedValue("d1", "x", None, base + 62),  # non-numeric: skipped
        ReportedValue("d1", "x", False, base + 100),
        ReportedValue("d1", "x", -4, base + 150),
        ReportedValue("d1", "x", "only text", base + 250),  # a bucket with no number: omitted
        ReportedValue("d1", "x", 10, base + 420),
        ReportedValue("d1", "x", 11, base + 500),  # at to_ms: excluded
    ]
    storage.ingest(batch(1, values), NOW)
    buckets = storage.history_buckets("d1", "x", base + 3, base + 500, 100)
    got = [(b.start_ms, b.min, b.max, b.avg, b.count) for b in buckets]
    assert got == [
        (base, 1.0, 3.5, pytest.approx(5.5 / 3), 3),
        (base + 100, -4.0, 0.0, -2.0, 2),
        (base + 400, 10.0, 10.0, 10.0, 1),
    ]
    assert all(type(b.min) is float and type(b.count) is int for b in buckets)
    # from_ms in the middle of a bucket: the bucket still starts at a multiple of bucket_ms
    (only,) = storage.history_buckets("d1", "x", base + 40, base + 100, 1000)
    assert only.start_ms == base
    assert only.count == 2


# --------------------------------------------------------------------------- events


@pytest.fixture
def events_setup(storage: Storage) -> Storage:
    storage.create_device(device("d1", site="site-a"), NOW)
    storage.create_device(device("d2", site="site-b"), NOW)
    events = [
        event("e01", "d1", NOW + 1, level="info"),
        event("e02", "d1", NOW + 2, level="alert"),
        event("e03", "d2", NOW + 2, level="error"),
        event("e04", "d2", NOW + 3, level="alert"),
        event("e05", "d1", NOW + 4, level="error"),
        event("e06", "d2", NOW + 4, level="info"),
        event("e07", "d1", NOW + 4, level="alert"),
    ]
    storage.ingest(batch(1, [], events), NOW + 10)
    return storage


EVENT_FILTERS: dict[str, tuple[EventFilter, list[str]]] = {
    "all": (EventFilter(), ["e07", "e06", "e05", "e04", "e03", "e02", "e01"]),
    "device": (EventFilter(device_id="d1"), ["e07", "e05", "e02", "e01"]),
    "site": (EventFilter(site="site-b"), ["e06", "e04", "e03"]),
    "levels": (EventFilter(levels=("alert", "error")), ["e07", "e05", "e04", "e03", "e02"]),
    "from-to": (EventFilter(from_ms=NOW + 2, to_ms=NOW + 4), ["e04", "e03", "e02"]),
    "sites": (EventFilter(sites=("site-a",)), ["e07", "e05", "e02", "e01"]),
    "sites-empty": (EventFilter(sites=()), []),
    "site-outside-sites": (EventFilter(site="site-b", sites=("site-a",)), []),
    "device+levels": (EventFilter(device_id="d2", levels=("info",)), ["e06"]),
}


@pytest.mark.parametrize(("flt", "expected"), EVENT_FILTERS.values(), ids=list(EVENT_FILTERS))
def test_list_events(events_setup: Storage, flt: EventFilter, expected: list[str]) -> None:
    assert list_event_ids(events_setup, flt) == expected
    assert list_event_ids(events_setup, flt, limit=2) == expected


def test_event_paging_is_keyset(events_setup: Storage) -> None:
    page = events_setup.list_events(EventFilter(), "", 3)
    assert [e.id for e in page.items] == ["e07", "e06", "e05"]
    # a newer event does not shift the following pages
    events_setup.ingest(batch(2, [], [event("e08", "d1", NOW + 100)]), NOW)
    page = events_setup.list_events(EventFilter(), page.next_cursor, 3)
    assert [e.id for e in page.items] == ["e04", "e03", "e02"]


def test_acknowledge_event_is_idempotent(events_setup: Storage) -> None:
    mark = events_setup.latest_change_seq()
    acked = events_setup.acknowledge_event("e02", "ops@site", "checked", NOW + 20)
    assert acked.acknowledged
    assert (acked.acknowledged_by, acked.acknowledged_ms, acked.comment) == (
        "ops@site",
        NOW + 20,
        "checked",
    )
    again = events_setup.acknowledge_event("e02", "someone else", "again", NOW + 30)
    assert again == acked
    changes = new_changes(events_setup, mark)
    assert [c.kind for c in changes] == [ChangeKind.ALARM_ACKNOWLEDGED]
    assert changes[0].payload["id"] == "e02"
    assert changes[0].payload["acknowledged_by"] == "ops@site"
    assert changes[0].site == "site-a"
    unacked = list_event_ids(events_setup, EventFilter(unacknowledged_only=True))
    assert "e02" not in unacked
    assert len(unacked) == 6
    (stored,) = [
        e
        for e in events_setup.list_events(EventFilter(device_id="d1"), "", 10).items
        if e.id == "e02"
    ]
    assert stored == acked


def test_duplicate_event_ids_are_stored_once(storage: Storage) -> None:
    storage.create_device(device("d1"), NOW)
    storage.ingest(batch(1, [], [event("e1", "d1", NOW)]), NOW)
    result = storage.ingest(batch(2, [], [event("e1", "d1", NOW)]), NOW)
    assert result.stored_events == 0
    assert list_event_ids(storage, EventFilter()) == ["e1"]
    assert [c.kind for c in all_changes(storage)].count(ChangeKind.EVENT) == 1


# --------------------------------------------------------------------------- commands


def test_command_sequences_are_per_edge(storage: Storage) -> None:
    storage.create_device(device("d1"), NOW)
    seqs = [storage.create_command(command(f"c{i}")).sequence for i in range(3)]
    assert seqs == [1, 2, 3]
    assert storage.create_command(command("x1", edge_id="edge-2")).sequence == 1
    assert storage.create_command(command("c3")).sequence == 4
    with pytest.raises(AlreadyExists):
        storage.create_command(command("c0"))
    got = storage.get_command("c1")
    assert got.sequence == 2
    assert got.params == {"setpoint": 21.5}
    assert got.status is CommandStatus.QUEUED
    assert got.updated_ms == NOW
    change = next(c for c in all_changes(storage) if c.kind is ChangeKind.COMMAND_UPDATED)
    assert change.payload["id"] == "c0"
    assert change.payload["status"] == "queued"
    assert change.payload["sequence"] == 1
    assert change.edge_id == "edge-1"
    assert change.device_id == "d1"
    assert change.site == "site-a"


def test_first_final_status_wins(storage: Storage) -> None:
    storage.create_command(command("c1"))
    sent = storage.update_command("c1", CommandStatus.SENT, NOW + 1)
    assert sent.status is CommandStatus.SENT
    assert sent.updated_ms == NOW + 1
    done = storage.update_command("c1", CommandStatus.SUCCEEDED, NOW + 2, {"applied": [1, 2.0]})
    assert done.status is CommandStatus.SUCCEEDED
    assert done.result == {"applied": [1, 2.0]}
    mark = storage.latest_change_seq()
    late = storage.update_command("c1", CommandStatus.FAILED, NOW + 3, error="timeout")
    assert late == done
    assert storage.get_command("c1") == done
    assert storage.latest_change_seq() == mark
    statuses = [
        c.payload["status"] for c in all_changes(storage) if c.kind is ChangeKind.COMMAND_UPDATED
    ]
    assert statuses == ["queued", "sent", "succeeded"]
    storage.create_command(command("c2"))
    failed = storage.update_command("c2", CommandStatus.FAILED, NOW, error="device offline")
    assert failed.error == "device offline"
    assert storage.update_command("c2", CommandStatus.SUCCEEDED, NOW).status is CommandStatus.FAILED


def test_pending_and_expired_commands(storage: Storage) -> None:
    storage.create_command(command("c1", expires_ms=NOW + 100))
    storage.create_command(command("c2", expires_ms=NOW + 10))
    storage.create_command(command("c3", expires_ms=NOW + 100))
    storage.create_command(command("c4", expires_ms=NOW + 5))
    storage.create_command(command("o1", edge_id="edge-2", expires_ms=NOW + 100))
    storage.update_command("c3", CommandStatus.SENT, NOW)
    pending = storage.pending_commands("edge-1", NOW + 20)
    assert [c.id for c in pending] == ["c1"]  # c2, c4 expired; c3 sent
    assert [c.id for c in storage.pending_commands("edge-1", NOW)] == ["c1", "c2", "c4"]
    mark = storage.latest_change_seq()
    assert storage.expire_commands(NOW + 20) == 2
    assert storage.get_command("c2").status is CommandStatus.EXPIRED
    assert storage.get_command("c2").updated_ms == NOW + 20
    assert storage.get_command("c1").status is CommandStatus.QUEUED
    changes = new_changes(storage, mark)
    assert sorted(c.payload["id"] for c in changes) == ["c2", "c4"]
    assert all(c.payload["status"] == "expired" for c in changes)
    assert storage.expire_commands(NOW + 20) == 0
    assert storage.expire_commands(NOW + 100) == 3  # c1, c3 (sent) and o1
    assert storage.get_command("c3").status is CommandStatus.EXPIRED
    assert storage.pending_commands("edge-1", NOW) == []


# --------------------------------------------------------------------------- edges


def test_edge_leases(storage: Storage) -> None:
    assert storage.edge_connection("edge-1", NOW, 30_000) is None
    storage.edge_connected("edge-1", "replica-a", NOW)
    assert storage.edge_connection("edge-1", NOW + 1_000, 30_000) == "replica-a"
    assert storage.edge_connection("edge-1", NOW + 60_000, 30_000) is None
    storage.edge_connected("edge-1", "replica-a", NOW + 50_000)  # refresh
    assert storage.edge_connection("edge-1", NOW + 60_000, 30_000) == "replica-a"
    storage.edge_disconnected("edge-1", "replica-b", NOW + 60_000)  # not the holder
    assert storage.edge_connection("edge-1", NOW + 60_000, 30_000) == "replica-a"
    storage.edge_connected("edge-1", "replica-b", NOW + 61_000)  # moved
    assert storage.edge_connection("edge-1", NOW + 61_000, 30_000) == "replica-b"
    storage.edge_disconnected("edge-1", "replica-a", NOW + 62_000)
    assert storage.edge_connection("edge-1", NOW + 62_000, 30_000) == "replica-b"
    storage.edge_disconnected("edge-1", "replica-b", NOW + 63_000)
    assert storage.edge_connection("edge-1", NOW + 63_000, 30_000) is None


# --------------------------------------------------------------------------- change feed


def test_change_feed_order_and_paging(storage: Storage) -> None:
    storage.put_model(model("com.acme/meter", "1.0.0"))
    storage.create_device(device("d1"), NOW)
    storage.update_device("d1", {"building": "B"}, 0, NOW)
    storage.set_desired("d1", {"x": 1}, 0, NOW)
    storage.ingest(batch(1, [ReportedValue("d1", "p", 1, NOW)], [event("e1", "d1", NOW)]), NOW)
    storage.create_command(command("c1"))
    storage.acknowledge_event("e1", "ops", "", NOW)
    storage.delete_device("d1", 0, NOW)
    changes = all_changes(storage)
    assert [c.kind for c in changes] == [
        ChangeKind.MODEL_PUBLISHED,
        ChangeKind.DEVICE_CREATED,
        ChangeKind.DEVICE_UPDATED,
        ChangeKind.TWIN_DESIRED,
        ChangeKind.TWIN_REPORTED,
        ChangeKind.EVENT,
        ChangeKind.COMMAND_UPDATED,
        ChangeKind.ALARM_ACKNOWLEDGED,
        ChangeKind.DEVICE_DELETED,
    ]
    seqs = [c.seq for c in changes]
    assert seqs == sorted(set(seqs))
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gaps
    assert storage.latest_change_seq() == seqs[-1]
    assert storage.oldest_change_seq() == seqs[0]
    paged: list[ChangeEntry] = []
    after = 0
    while batch_ := storage.changes_after(after, 2):
        assert len(batch_) <= 2
        paged.extend(batch_)
        after = batch_[-1].seq
    assert paged == changes
    assert storage.changes_after(seqs[-1], 10) == []
    assert storage.changes_after(seqs[3], 2) == changes[4:6]


def test_prune_changes(storage: Storage) -> None:
    for i in range(6):
        storage.create_device(device(f"d{i}"), NOW + i * 1000)
    changes = all_changes(storage)
    assert storage.prune_changes(NOW + 2500) == 3
    assert storage.oldest_change_seq() == changes[3].seq
    assert storage.latest_change_seq() == changes[-1].seq
    assert all_changes(storage) == changes[3:]
    assert storage.prune_changes(NOW + 2500) == 0
    # pruning everything keeps the numbering going
    assert storage.prune_changes(NOW + 10_000) == 3
    assert storage.oldest_change_seq() == 0
    assert storage.latest_change_seq() == changes[-1].seq
    assert storage.changes_after(0, 10) == []
    storage.create_device(device("d9"), NOW + 20_000)
    (fresh,) = storage.changes_after(0, 10)
    assert fresh.seq > changes[-1].seq
    assert storage.latest_change_seq() == fresh.seq


def test_pruning_keeps_ingest_deduplication(storage: Storage) -> None:
    storage.create_device(device("d1"), NOW)
    for seq in (1, 2, 3):
        storage.ingest(batch(seq, [ReportedValue("d1", "p", seq, NOW)]), NOW + seq)
    storage.prune_changes(NOW + 1_000_000)
    assert storage.last_sequence("edge-1") == 3
    assert storage.ingest(batch(2, [ReportedValue("d1", "p", 9, NOW)]), NOW).duplicate
    assert storage.ingest(batch(3, [ReportedValue("d1", "p", 9, NOW)]), NOW).duplicate
    assert not storage.ingest(batch(4, [ReportedValue("d1", "p", 4, NOW)]), NOW).duplicate


def test_listeners_run_after_commit(storage: Storage) -> None:
    seen: list[int] = []

    def listener() -> None:
        # the committed change is already visible to readers
        seen.append(storage.latest_change_seq())

    storage.add_change_listener(listener)
    storage.create_device(device("d1"), NOW)
    assert seen
    assert seen[-1] == storage.latest_change_seq() >= 1
    count = len(seen)
    storage.ingest(batch(1, [ReportedValue("d1", "p", 1, NOW)]), NOW)
    assert len(seen) > count
    assert seen[-1] == storage.latest_change_seq()


def test_a_failing_listener_does_not_break_writes(storage: Storage) -> None:
    calls: list[str] = []

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("listener bug")

    storage.add_change_listener(broken)
    storage.add_change_listener(lambda: calls.append("ok"))
    storage.create_device(device("d1"), NOW)
    # the listener after the failing one still ran (PostgreSQL may also call both again from
    # its notification thread, so look for the pair rather than at the tail)
    assert "broken" in calls
    assert "ok" in calls[calls.index("broken") + 1 :]
    assert storage.get_device("d1").id == "d1"


def test_concurrent_writers_keep_the_feed_gap_free(storage: Storage) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(15):
                storage.create_device(device(f"w{n}-{i:02d}"), NOW)
                storage.list_devices(DeviceFilter(site="site-a"), "", 5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    seqs = [c.seq for c in all_changes(storage)]
    assert len(seqs) == 90
    assert seqs == list(range(seqs[0], seqs[0] + 90))
    assert len(list_ids(storage, DeviceFilter())) == 90


# --------------------------------------------------------------------------- SQLite specifics


def test_two_sqlite_replicas_share_one_feed(tmp_path: Path) -> None:
    from cloud_registry.storage.sqlite import SqliteStorage

    path = tmp_path / "shared.db"
    a = SqliteStorage(path)
    b = SqliteStorage(path)
    try:
        assert a.migrate() == b.migrate()
        a.create_device(device("d1"), NOW)
        b.create_device(device("d2"), NOW)
        a.ingest(batch(1, [ReportedValue("d2", "p", 1, NOW)]), NOW)
        b.set_desired("d1", {"x": 1}, 0, NOW)
        with pytest.raises(AlreadyExists):
            b.create_device(device("d1"), NOW)

        errors: list[BaseException] = []

        def writer(storage: SqliteStorage, prefix: str) -> None:
            try:
                for i in range(20):
                    storage.create_device(device(f"{prefix}{i:02d}"), NOW)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [
            threading.Thread(target=writer, args=(a, "a")),
            threading.Thread(target=writer, args=(b, "b")),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        feed_a = a.changes_after(0, 1000)
        feed_b = b.changes_after(0, 1000)
        assert feed_a == feed_b
        seqs = [c.seq for c in feed_a]
        assert seqs == list(range(1, 45))
        assert [c.kind for c in feed_a[:4]] == [
            ChangeKind.DEVICE_CREATED,
            ChangeKind.DEVICE_CREATED,
            ChangeKind.TWIN_REPORTED,
            ChangeKind.TWIN_DESIRED,
        ]
        assert a.latest_change_seq() == b.latest_change_seq() == 44
        assert a.get_twin("d1").desired["x"].value == 1
        assert b.get_twin("d2").reported["p"].value == 1
        assert b.get_device("a19").id == "a19"
        # the command sequence is shared too
        assert a.create_command(command("c1")).sequence == 1
        assert b.create_command(command("c2")).sequence == 2
    finally:
        a.close()
        b.close()


def test_sqlite_history_report_rows_read_per_property(tmp_path: Path) -> None:
    """History stored one row per report (device, timestamp) reads back per property, in
    order, across batches, and goes with its device."""
    from cloud_registry.storage.sqlite import SqliteStorage

    storage = SqliteStorage(tmp_path / "h.db")
    try:
        storage.migrate()
        storage.create_device(device("d1"), NOW)
        storage.create_device(device("d2"), NOW)
        expected: list[tuple[int, Any]] = []
        for seq in range(1, 9):
            values = [ReportedValue("d1", "t", seq * 10 + k, NOW + k) for k in range(3)]
            values.append(ReportedValue("d2", "t", -seq, NOW))
            expected.extend((NOW + k, seq * 10 + k) for k in range(3))
            storage.ingest(batch(seq, values), NOW)
        expected.sort(key=lambda point: point[0])  # stable: insertion order within a ts
        points, more = storage.history("d1", "t", 0, NOW + 100, 100)
        assert [(p.ts_ms, p.value) for p in points] == expected
        assert not more
        first, more = storage.history("d1", "t", 0, NOW + 100, 5)
        assert [(p.ts_ms, p.value) for p in first] == expected[:5]
        assert more
        (bucket,) = storage.history_buckets("d1", "t", 0, NOW + 100, 1_000_000)
        assert bucket.count == 24
        assert bucket.max == 82.0
        assert storage.get_twin("d1").reported["t"].value == 82
        storage.delete_device("d1", 0, NOW)
        storage.create_device(device("d1"), NOW)
        assert storage.history("d1", "t", 0, NOW + 100, 100) == ([], False)
        assert len(storage.history("d2", "t", 0, NOW + 100, 100)[0]) == 8
    finally:
        storage.close()


def test_sqlite_closed_storage_is_unavailable(tmp_path: Path) -> None:
    from cloud_registry.storage.base import StorageUnavailable
    from cloud_registry.storage.sqlite import SqliteStorage

    storage = SqliteStorage(tmp_path / "x.db")
    storage.migrate()
    storage.get_devices(["a"])
    storage.close()
    storage.close()  # idempotent
    with pytest.raises(StorageUnavailable):
        storage.get_device("a")
    with pytest.raises(StorageUnavailable):
        storage.create_device(device("d1"), NOW)


def test_sqlite_unmigrated_database_reports_version_zero(tmp_path: Path) -> None:
    from cloud_registry.storage.sqlite import SqliteStorage

    storage = SqliteStorage(tmp_path / "fresh.db")
    try:
        assert storage.schema_version() == 0
        with pytest.raises(StorageError):
            storage.get_device("x")
        assert storage.migrate() >= 1
    finally:
        storage.close()


def test_sqlite_list_devices_without_the_small_label_shortcut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan for common in/exists labels (id-ordered scan) gives the same pages."""
    from cloud_registry.storage import sqlite

    monkeypatch.setattr(sqlite, "_SMALL_LABEL_SET", 0)
    storage = sqlite.SqliteStorage(tmp_path / "plans.db")
    try:
        storage.migrate()
        for record in POPULATION:
            storage.create_device(record, NOW)
        records = [storage.get_device(r.id) for r in POPULATION]
        for name, flt in FILTERS.items():
            assert list_ids(storage, flt, limit=7) == reference(records, flt), name
    finally:
        storage.close()


# --------------------------------------------------------------------------- open_storage


def test_open_storage_sqlite_urls(tmp_path: Path) -> None:
    from cloud_registry.storage.factory import open_storage
    from cloud_registry.storage.sqlite import SqliteStorage

    for url in (
        f"sqlite:///{tmp_path}/a.db",
        str(tmp_path / "b.db"),
        f"sqlite:///{tmp_path}/c.db?x=1",
    ):
        storage = open_storage(url)
        try:
            assert isinstance(storage, SqliteStorage)
            assert storage.migrate() >= 1
        finally:
            storage.close()
    assert (tmp_path / "a.db").exists()
    assert (tmp_path / "b.db").exists()
    assert (tmp_path / "c.db").exists()


@pytest.mark.parametrize(
    "url", ["", "mysql://db/registry", "sqlite://host/file.db", "sqlite:///", "redis:x"]
)
def test_open_storage_refuses_unknown_urls(url: str) -> None:
    from cloud_registry.storage.factory import open_storage

    with pytest.raises(ValueError, match=r"storage URL|empty") as caught:
        open_storage(url)
    if url:
        assert url in str(caught.value)


def test_sqlite_schema_v3_moves_per_value_history_into_report_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database at schema v2 (one history row per value, in two tables) keeps every value,
    its type and its quality when migrated to v3 (one row per report)."""
    import sqlite3

    from cloud_registry.storage import migrations_sqlite
    from cloud_registry.storage.sqlite import SqliteStorage

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    monkeypatch.setattr(migrations_sqlite, "MIGRATIONS", migrations_sqlite.MIGRATIONS[:2])
    assert migrations_sqlite.migrate(conn) == 2
    rows = [
        ("history", "d1", "t", NOW, "21.5", "good"),
        ("history", "d1", "on", NOW, "true", "good"),
        ("history", "d1", "t", NOW + 1000, "22", "bad"),
        ("history_recent", "d1", "t", NOW + 2000, "1.0", "uncertain"),
        ("history_recent", "d1", "name", NOW + 2000, '"x"', "good"),
    ]
    for table, dev, prop, ts, value, quality in rows:
        conn.execute(
            f"INSERT INTO {table} (device_id, property, ts_ms, num, value, quality) "
            "VALUES (?, ?, ?, NULL, ?, ?)",
            (dev, prop, ts, value, quality),
        )
    conn.execute(
        "INSERT INTO devices (id, model, model_name, edge_id, site, building, labels, online, "
        "revision, created_ms, updated_ms, last_seen_ms, twin_revision) "
        "VALUES ('d1', 'acme/m@1.0.0', 'acme/m', 'e1', 's1', '', '{}', 0, 1, 0, 0, 0, 0)"
    )
    conn.close()
    monkeypatch.undo()
    storage = SqliteStorage(path)
    try:
        assert storage.migrate() == len(migrations_sqlite.MIGRATIONS)  # v3 and later
        points, more = storage.history("d1", "t", 0, NOW + 10_000, 10)
        assert [(p.ts_ms, p.value, p.quality) for p in points] == [
            (NOW, 21.5, "good"),
            (NOW + 1000, 22, "bad"),
            (NOW + 2000, 1.0, "uncertain"),
        ]
        assert type(points[1].value) is int
        assert type(points[2].value) is float
        assert not more
        assert storage.history("d1", "on", 0, 0, 10)[0][0].value is True
        assert storage.history("d1", "name", 0, 0, 10)[0][0].value == "x"
    finally:
        storage.close()
