"""``cloud-registry`` and ``thing-model publish`` against real registries: one started by
``cloud-registry serve`` in a subprocess, and in-process ones (SQLite) for the operator
commands, which run through ``main()``."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_registry.api import ChangeKind, RegistryClient
from cloud_registry.cli import default_database_path, default_database_url, main
from cloud_registry.storage.base import IngestBatch, ReportedValue
from cloud_registry.storage.sqlite import SqliteStorage
from tests.cloud_registry.server_fixtures import Registry, running_registry
from thing_models import cli as thing_model_cli

REPO = Path(__file__).resolve().parents[2]
METER_YAML = REPO / "examples" / "models" / "energy-meter-3p.yaml"
METER = "community.energy/meter-3p"
METER_REF = f"{METER}@1.0.0"
CLOUD_REGISTRY = (sys.executable, "-m", "cloud_registry.cli")
THING_MODEL = (sys.executable, "-m", "thing_models.cli")
BAD_MODEL = 'model: x.y/z\nversion: "1.0.0"\nproperties:\n  - {id: a, type: floaty}\n'


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    storage = SqliteStorage(tmp_path / "registry.db")
    storage.migrate()
    try:
        with running_registry(storage) as running:
            yield running
    finally:
        storage.close()


@pytest.fixture
def client(reg: Registry) -> Iterator[RegistryClient]:
    with RegistryClient(reg.target) as c:
        yield c


@pytest.fixture
def populated(client: RegistryClient, reg: Registry) -> Registry:
    client.publish_model(METER_YAML.read_text(encoding="utf-8"))
    for i, site in enumerate(("north", "north", "south")):
        client.register_device(
            f"m{i}", model=METER_REF, edge_id="edge-1", site=site, labels={"floor": str(i)}
        )
    now = time.time_ns() // 1_000_000
    values = [ReportedValue("m0", "voltage_a", 231.25, now), ReportedValue("m0", "tariff", 2, now)]
    reg.storage.ingest(IngestBatch("edge-1", 1, values, []), now)
    client.set_desired("m0", {"relay_closed": True})
    return reg


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``cloud-registry ARGV`` in-process: (exit code, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def run_thing_model(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = thing_model_cli.main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(ADDR_ENV, None)
    env.pop("CLOUD_REGISTRY_DB", None)
    env.update(extra)
    return env


ADDR_ENV = "CLOUD_REGISTRY_ADDR"


# --------------------------------------------------------------------------- serve (subprocess)


class Served:
    """``cloud-registry serve`` in a subprocess; ``address`` from its 'listening on' line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [*CLOUD_REGISTRY, "serve", "--insecure", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        self.lines: list[str] = []
        self._listening = threading.Event()
        self.address = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._listening.wait(30):
            self.stop()
            raise AssertionError("no 'listening on' line:\n" + "".join(self.lines))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            match = re.search(r"listening on (\S+:\d+)", line)
            if match:
                self.address = match.group(1)
                self._listening.set()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            if self.proc.stderr is not None:
                self.proc.stderr.close()
        return code


@pytest.fixture(scope="module")
def data_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xdg-data")


@pytest.fixture(scope="module")
def served(data_home: Path) -> Iterator[Served]:
    """``cloud-registry serve --listen 127.0.0.1:0`` with no --db: the default SQLite file."""
    server = Served(["--listen", "127.0.0.1:0"], _cli_env(XDG_DATA_HOME=str(data_home)))
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_serve_keeps_a_local_sqlite_file_and_stops_cleanly(
    served: Served, data_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host, _, port = served.address.rpartition(":")
    assert host == "127.0.0.1"
    assert int(port) > 0
    assert (data_home / "cloud-registry" / "registry.db").is_file()
    code, out, err = run(capsys, "--registry", served.address, "models", "list", "--json")
    assert (code, json.loads(out), err) == (0, [], "")

    # publish through `thing-model publish` in its own process (entry-point plugin)
    result = subprocess.run(
        [*THING_MODEL, "publish", str(METER_YAML), "--registry", served.address],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        env=_cli_env(),
    )
    assert result.returncode == 0, result.stderr
    assert f"published {METER_REF}" in result.stdout


@pytest.mark.slow
def test_watch_subprocess_prints_changes_as_json_lines(served: Served) -> None:
    watcher = subprocess.Popen(
        [*CLOUD_REGISTRY, "watch", "--json", "--limit", "2", "--kind", "device_created"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_cli_env(CLOUD_REGISTRY_ADDR=served.address),
        cwd=REPO,
    )
    with RegistryClient(served.address) as c:
        c.publish_model(METER_YAML.read_text(encoding="utf-8"))
        # the stream subscribes asynchronously: register devices until the watcher has two
        deadline = time.monotonic() + 20
        n = 0
        while watcher.poll() is None and time.monotonic() < deadline:
            c.register_device(f"w{n}", model=METER_REF, edge_id="e", site="s")
            n += 1
            time.sleep(0.1)
    out, err = watcher.communicate(timeout=20)
    assert watcher.returncode == 0, err
    changes = [json.loads(line) for line in out.splitlines()]
    assert len(changes) == 2
    assert all(c["kind"] == "device_created" for c in changes)
    assert all(c["payload_type"] == "device" for c in changes)
    assert int(changes[1]["resume_token"]) > int(changes[0]["resume_token"])


@pytest.mark.slow
def test_serve_with_explicit_db_and_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "explicit" / "r.db"
    server = Served(
        ["--listen", "127.0.0.1:0", "--db", f"sqlite:///{db}", "--replica-id", "r9"], _cli_env()
    )
    try:
        with RegistryClient(server.address) as c:
            assert c.list_models().items == ()
    finally:
        code = server.stop()
    assert code == 0
    assert db.is_file()
    assert any("schema version" in line for line in server.lines)


@pytest.mark.slow
def test_serve_refuses_a_busy_port_and_a_bad_db_url(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                *CLOUD_REGISTRY,
                "serve",
                "--insecure",
                "--listen",
                f"127.0.0.1:{port}",
                "--db",
                str(db),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
            check=False,
            env=_cli_env(),
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    result = subprocess.run(
        [*CLOUD_REGISTRY, "serve", "--insecure", "--db", "mysql://x/y"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
        env=_cli_env(),
    )
    assert result.returncode == 2
    assert "--db" in result.stderr


# --------------------------------------------------------------------------- migrate


def test_migrate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'm.db'}"
    code, out, _ = run(capsys, "migrate", "--db", url)
    assert code == 0
    assert re.fullmatch(rf"{re.escape(url)}: schema version \d+\n", out)
    code, out, _ = run(capsys, "migrate", "--db", url, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["database"] == url
    assert data["schema_version"] >= 1
    assert (tmp_path / "new" / "m.db").is_file()


def test_migrate_default_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CLOUD_REGISTRY_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_database_path() == tmp_path / "cloud-registry" / "registry.db"
    assert run(capsys, "migrate")[0] == 0
    assert (tmp_path / "cloud-registry" / "registry.db").is_file()
    monkeypatch.setenv("CLOUD_REGISTRY_DB", "sqlite:///elsewhere.db")
    assert default_database_url() == "sqlite:///elsewhere.db"


def test_migrate_bad_url_is_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "migrate", "--db", "mysql://nope/db")
    assert code == 2
    assert "unknown scheme" in err


# --------------------------------------------------------------------------- models


def test_models_publish_list_show(
    reg: Registry, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = reg.target
    code, out, err = run(
        capsys, "models", "publish", str(METER_YAML), "--dry-run", "--registry", target
    )
    assert code == 0, err
    assert f"valid; would publish {METER_REF}" in out
    code, out, _ = run(capsys, "--registry", target, "--json", "models", "list")
    assert json.loads(out) == []

    code, out, err = run(capsys, "--registry", target, "models", "publish", str(METER_YAML))
    assert code == 0, err
    assert f"published {METER_REF} (14 properties, 1 event, 1 service)" in out
    code, out, _ = run(capsys, "--registry", target, "models", "publish", str(METER_YAML))
    assert "unchanged" in out

    code, out, _ = run(capsys, "models", "list", "--registry", target)
    assert code == 0
    assert METER in out
    assert "1.0.0" in out
    code, out, _ = run(capsys, "models", "list", "--registry", target, "--json")
    assert [m["name"] for m in json.loads(out)] == [METER]

    code, out, _ = run(capsys, "models", "show", METER, "--versions", "--registry", target)
    assert code == 0
    assert METER_REF in out
    assert "Three-phase energy meter" in out
    code, out, _ = run(capsys, "models", "show", METER_REF, "--document", "--registry", target)
    assert "voltage_a" in out
    code, out, _ = run(
        capsys, "models", "show", METER, "--json", "--versions", "--registry", target
    )
    data = json.loads(out)
    assert data["name"] == METER
    assert data["versions"] == ["1.0.0"]
    assert data["property_count"] == 14

    code, _, err = run(capsys, "models", "show", "com.nobody/none", "--registry", target)
    assert code == 1
    assert "NOT_FOUND" in err


def test_models_publish_invalid_shows_violations(
    reg: Registry, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_MODEL, encoding="utf-8")
    code, out, err = run(capsys, "models", "publish", str(bad), "--registry", reg.target)
    assert code == 1
    assert out == ""
    assert f"{bad}: error: invalid model: properties[0].type" in err
    code, out, err = run(capsys, "models", "publish", str(bad), "--registry", reg.target, "--json")
    assert code == 1
    data = json.loads(out)
    assert data["ok"] is False
    assert data["code"] == "INVALID_ARGUMENT"
    assert [v["field"] for v in data["violations"]] == ["properties[0].type"]
    code, _, err = run(capsys, "models", "publish", str(tmp_path / "missing.yaml"))
    assert code == 1
    assert "cannot read" in err


# --------------------------------------------------------------------------- devices, twin


def test_devices_list_and_show(populated: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    target = populated.target
    code, out, _ = run(capsys, "devices", "list", "--registry", target)
    assert code == 0
    assert all(name in out for name in ("m0", "m1", "m2", "floor=1"))
    code, out, _ = run(capsys, "devices", "list", "--site", "north", "--json", "--registry", target)
    assert [d["id"] for d in json.loads(out)] == ["m0", "m1"]
    code, out, _ = run(
        capsys, "devices", "list", "--selector", "floor in (1,2)", "--json", "--registry", target
    )
    assert [d["id"] for d in json.loads(out)] == ["m1", "m2"]
    code, out, _ = run(capsys, "devices", "list", "--offline", "--limit", "2", "--json")
    assert code == 3  # default address: nothing listens there in tests (see env below)
    code, out, _ = run(
        capsys, "--registry", target, "--json", "devices", "list", "--offline", "--limit", "2"
    )
    assert [d["id"] for d in json.loads(out)] == ["m0", "m1"]
    code, out, _ = run(capsys, "--registry", target, "devices", "list", "--online")
    assert "devices (0)" in out

    code, out, _ = run(capsys, "devices", "show", "m1", "--registry", target)
    assert code == 0
    assert METER_REF in out
    assert "floor=1" in out
    code, out, _ = run(capsys, "devices", "show", "m1", "--registry", target, "--json")
    data = json.loads(out)
    assert data["id"] == "m1"
    assert data["labels"] == {"floor": "1"}
    assert data["revision"] == 1
    code, _, err = run(capsys, "devices", "show", "ghost", "--registry", target)
    assert code == 1
    assert "NOT_FOUND" in err


def test_twin_show(populated: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    target = populated.target
    code, out, _ = run(capsys, "twin", "show", "m0", "--registry", target)
    assert code == 0
    assert "231.25" in out
    assert "relay_closed" in out
    assert "pending" in out
    code, out, _ = run(capsys, "twin", "show", "m0", "--registry", target, "--json")
    data = json.loads(out)
    assert data["reported"]["voltage_a"]["value"] == 231.25
    assert data["reported"]["tariff"]["value"] == 2
    assert data["desired"]["relay_closed"]["value"] is True
    assert data["delta"] == {"relay_closed": True}


# --------------------------------------------------------------------------- watch


def test_watch_json_resume_and_limit(
    populated: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    target = populated.target
    code, out, _ = run(
        capsys, "watch", "--resume", "0", "--limit", "3", "--json", "--registry", target
    )
    assert code == 0
    changes = [json.loads(line) for line in out.splitlines()]
    assert [c["kind"] for c in changes] == ["model_published", "device_created", "device_created"]
    code, out, _ = run(
        capsys,
        "watch",
        "--resume",
        changes[-1]["resume_token"],
        "--kind",
        "twin_desired",
        "--device",
        "m0",
        "--limit",
        "1",
        "--json",
        "--registry",
        target,
    )
    (change,) = [json.loads(line) for line in out.splitlines()]
    assert change["kind"] == ChangeKind.TWIN_DESIRED
    assert change["payload"]["properties"]["relay_closed"]["value"] is True

    code, out, _ = run(capsys, "watch", "--resume", "0", "--limit", "5", "--registry", target)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 5
    assert "model_published" in lines[0]
    assert METER_REF in lines[0]
    assert "twin_reported" in lines[4]
    assert "voltage_a=231.25" in lines[4]


def test_watch_bad_token_is_an_error(reg: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "watch", "--resume", "nope", "--registry", reg.target)
    assert code == 1
    assert "resume_token" in err


# --------------------------------------------------------------------------- thing-model publish


def test_thing_model_publish(reg: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_thing_model(
        capsys, "publish", str(METER_YAML), "--registry", reg.target, "--dry-run"
    )
    assert code == 0, err
    assert "would publish" in out
    code, out, err = run_thing_model(capsys, "publish", str(METER_YAML), "--registry", reg.target)
    assert code == 0, err
    assert f"published {METER_REF}" in out
    code, out, _ = run_thing_model(
        capsys, "publish", str(METER_YAML), "--registry", reg.target, "--json"
    )
    assert json.loads(out)["unchanged"] is True
    with RegistryClient(reg.target) as c:
        assert c.get_model(METER).ref == METER_REF


def test_thing_model_publish_rejected(
    reg: Registry, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_MODEL, encoding="utf-8")
    code, _, err = run_thing_model(capsys, "publish", str(bad), "--registry", reg.target)
    assert code == 1
    assert "properties[0].type" in err
    assert "did you mean 'float'" in err
    # a version bump too small: the violations name each change
    newer = (REPO / "examples" / "versions" / "energy-meter-3p-1.1.0.yaml").read_text()
    bump = tmp_path / "meter-1.1.0.yaml"
    bump.write_text(newer, encoding="utf-8")
    assert run_thing_model(capsys, "publish", str(METER_YAML), "--registry", reg.target)[0] == 0
    code, _, err = run_thing_model(capsys, "publish", str(bump), "--registry", reg.target)
    assert code == 1
    assert "voltage_a" in err


def test_thing_model_help_lists_publish(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_thing_model(capsys, "--help")
    assert code == 0
    assert "publish" in out
    code, out, _ = run_thing_model(capsys, "publish", "--help")
    assert code == 0
    assert "--registry" in out
    assert "--dry-run" in out


def test_a_broken_plugin_leaves_thing_model_working(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.metadata as metadata

    broken = metadata.EntryPoint("broken", "no_such_module:register", "thing_model.commands")

    def entry_points(**selection: str) -> list[metadata.EntryPoint]:
        assert selection == {"group": "thing_model.commands"}
        return [broken]

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    code, out, err = run_thing_model(capsys, "schema")
    assert code == 0
    assert json.loads(out)["title"]
    assert "command 'broken' unavailable" in err


# --------------------------------------------------------------------------- usage, unreachable


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default address points at a port where nothing listens; tables are wide enough
    not to fold the cells the tests look for."""
    monkeypatch.setenv(ADDR_ENV, f"127.0.0.1:{_free_port()}")
    monkeypatch.setenv("COLUMNS", "200")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["models"],
        ["models", "lst"],
        ["devices", "list", "--limit", "0"],
        ["devices", "list", "--online", "--offline"],
        ["watch", "--kind", "nonsense"],
        ["twin", "show"],
        ["--timeout", "-1", "models", "list"],
        ["serve", "--log-level", "LOUD"],
    ],
    ids=lambda argv: " ".join(argv) or "(none)",
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "usage:" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["models", "list"],
        ["models", "show", METER],
        ["models", "publish", str(METER_YAML)],
        ["devices", "list"],
        ["devices", "show", "m1"],
        ["twin", "show", "m1"],
        ["watch", "--limit", "1"],
    ],
    ids=" ".join,
)
def test_unreachable_registry_exits_3(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    address = os.environ[ADDR_ENV]
    code, out, err = run(capsys, *argv, "--timeout", "5")
    assert code == 3
    assert out == ""
    assert f"cannot reach the registry at {address}" in err


def test_thing_model_publish_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{_free_port()}"
    code, _, err = run_thing_model(capsys, "publish", str(METER_YAML), "--registry", address)
    assert code == 3
    assert f"thing-model: error: cannot reach the registry at {address}" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.startswith("cloud-registry ")
