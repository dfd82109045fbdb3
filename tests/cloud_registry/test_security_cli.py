"""``cloud-registry ca|edges|apikeys|audit`` and a secure ``serve`` end to end (subprocess)."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cloud_registry.api.v1 import security_pb2, security_pb2_grpc
from cloud_registry.ca_admin import new_api_key
from cloud_registry.cli import main
from cloud_registry.server.tls import ServerSecurity
from cloud_registry.storage.security_store import ApiKeyRecord
from cloud_registry.storage.sqlite import SqliteStorage
from security.ca import CertificateAuthority
from security.identity import Identity, make_csr
from security.verify import verify_chain
from tests.cloud_registry.edge_client import seed
from tests.cloud_registry.server_fixtures import SecureRegistry

REPO = Path(__file__).resolve().parents[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def ca_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    folder = tmp_path / "ca"
    code, out, _ = run(capsys, "ca", "init", "--dir", str(folder), "--name", "Acme")
    assert code == 0
    assert "OFFLINE" in out
    code, _, _ = run(capsys, "ca", "server-cert", "--dir", str(folder), "--host", "127.0.0.1")
    assert code == 0
    return folder


def test_ca_init_writes_private_files_0600_and_refuses_to_overwrite(
    ca_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("root.key", "intermediate.key", "command.key", "server.key"):
        assert stat.S_IMODE((ca_dir / name).stat().st_mode) == 0o600, name
    code, _, err = run(capsys, "ca", "init", "--dir", str(ca_dir))
    assert code == 1
    assert "already exists" in err


def test_server_certificate_verifies_for_its_host(ca_dir: Path) -> None:
    security = ServerSecurity.from_ca_dir(ca_dir)
    identity = verify_chain(
        security.server_cert_pem,
        security.intermediates,
        security.trust_roots,
        datetime.now(UTC),
        purpose="server",
        server_name="127.0.0.1",
    )
    assert identity.role == "registry"


def test_rotate_intermediate_keeps_issued_certificates_valid(
    ca_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = CertificateAuthority.load(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    edge = Identity("edge", "edge-1")
    old_cert = before.issue_from_csr(make_csr(key, edge), edge)
    db = str(ca_dir.parent / "audit.db")
    code, out, _ = run(capsys, "ca", "rotate-intermediate", "--dir", str(ca_dir), "--db", db)
    assert code == 0
    assert "new intermediate" in out
    code, out, _ = run(capsys, "audit", "--kind", "ca_rotated", "--json", "--db", db)
    assert len(json.loads(out)) == 1
    after = ServerSecurity.from_ca_dir(ca_dir)
    assert after.ca.intermediate.serial_number != before.intermediate.serial_number
    now = datetime.now(UTC)
    verify_chain(old_cert, after.intermediates, after.trust_roots, now, expected=edge)
    new_cert = after.ca.issue_from_csr(make_csr(key, edge), edge)
    verify_chain(new_cert, after.intermediates, after.trust_roots, now, expected=edge)
    (ca_dir / "root.key").unlink()  # moved offline: a rotation is refused, clearly
    code, _, err = run(capsys, "ca", "rotate-intermediate", "--dir", str(ca_dir))
    assert code == 1
    assert "root.key" in err


def test_edges_add_list_revoke_and_audit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "r.db")
    code, out, err = run(
        capsys, "edges", "add", "edge-1", "--site", "site-a", "--ttl", "2h", "--db", db
    )
    assert code == 0
    token = out.strip()
    assert re.fullmatch(r"ciot1\.[0-9a-f]{16}\.[A-Za-z0-9_-]{43}", token)
    assert "one-time token" in err
    code, out, _ = run(capsys, "edges", "list", "--json", "--db", db)
    assert code == 0
    [edge] = json.loads(out)
    assert (edge["edge_id"], edge["site"], edge["status"]) == ("edge-1", "site-a", "active")
    code, out, _ = run(capsys, "edges", "revoke", "edge-1", "--db", db)
    assert code == 0
    assert "revoked" in out
    code, out, _ = run(capsys, "edges", "list", "--db", db)
    assert "revoked" in out
    code, _, err = run(capsys, "edges", "revoke", "nobody", "--db", db)
    assert code == 1
    assert "never added" in err
    code, out, _ = run(capsys, "audit", "--kind", "revoked", "--json", "--db", db)
    assert [(e["kind"], e["subject"]) for e in json.loads(out)] == [("revoked", "edge:edge-1")]
    code, out, _ = run(capsys, "audit", "--subject", "edge:edge-1", "--db", db)
    assert code == 0
    assert "revoked" in out
    storage = SqliteStorage(db)
    try:
        record = storage.security.get_token(token.split(".")[1])
        assert record is not None
        assert token.split(".")[2] not in repr(record)
    finally:
        storage.close()


@pytest.mark.parametrize(
    "argv",
    [
        ["edges", "add", "bad id!", "--site", "s"],
        ["edges", "add", "e1", "--site", "s", "--ttl", "forever"],
        ["edges", "add", "e1"],
        ["apikeys", "add", "k", "--site", "s", "--scope", "root"],
        ["apikeys", "add", "k", "--site", "s", "--scope", ""],
        ["audit", "--kind", "nonsense"],
        ["audit", "--since", "yesterday"],
        ["ca", "init"],
        ["serve", "--listen", "127.0.0.1:0"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_bad_security_arguments_exit_2(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["--db", str(tmp_path / "r.db")] if argv[0] in ("edges", "apikeys", "audit") else []
    code, _, err = run(capsys, *argv, *extra)
    assert code == 2
    assert "error" in err


def test_apikeys_add_prints_the_key_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "r.db")
    argv = ["apikeys", "add", "dash", "--site", "s1", "--scope", "read-twins,read-models"]
    code, out, _ = run(capsys, *argv, "--db", db)
    assert code == 0
    key = out.strip()
    assert key.startswith("ciotk1.")
    code, _, err = run(capsys, *argv, "--db", db)
    assert code == 1
    assert "exists already" in err
    storage = SqliteStorage(db)
    try:
        record = storage.security.get_api_key(key.split(".")[1])
        assert record is not None
        assert record.scopes == {"read-twins", "read-models"}
        assert key.split(".")[2] not in repr(record)
    finally:
        storage.close()


class SecureServe:
    """``cloud-registry serve --ca-dir`` in a subprocess on loopback ports."""

    def __init__(self, ca_dir: Path, db: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cloud_registry.cli",
                "serve",
                "--ca-dir",
                str(ca_dir),
                "--db",
                db,
                "--listen",
                "127.0.0.1:0",
                "--enroll-listen",
                "127.0.0.1:0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={k: v for k, v in os.environ.items() if not k.startswith("CLOUD_REGISTRY")},
        )
        self.lines: list[str] = []
        self.enroll = ""
        self.address = ""
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(30):
            self.stop()
            raise AssertionError("secure serve did not start:\n" + "".join(self.lines))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if match := re.search(r"enrollment \(one-way TLS\) listening on (\S+)", line):
                self.enroll = match.group(1)
                self._ready.set()
            elif match := re.search(r"listening on (\S+:\d+)", line):
                self.address = match.group(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self._reader.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def test_secure_serve_enrolls_an_edge_added_by_the_cli(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "r.db")
    code, token, _ = run(capsys, "edges", "add", "edge-9", "--site", "s", "--db", db)
    assert code == 0
    server = SecureServe(ca_dir, db)
    try:
        root = (ca_dir / "root.pem").read_bytes()
        key = ec.generate_private_key(ec.SECP256R1())
        csr = make_csr(key, Identity("edge", "edge-9")).decode()
        with grpc.secure_channel(server.enroll, grpc.ssl_channel_credentials(root)) as channel:
            stub: Any = security_pb2_grpc.EnrollmentServiceStub(channel)  # type: ignore[no-untyped-call]
            response = stub.Enroll(
                security_pb2.EnrollRequest(token=token.strip(), csr_pem=csr), timeout=20
            )
        cert = x509.load_pem_x509_certificate(response.certificate_pem.encode())
        assert cert.subject.rfc4514_string().startswith("OU=edge,CN=edge-9")
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        chain = (response.certificate_pem + "".join(response.chain_pem)).encode()
        creds = grpc.ssl_channel_credentials(root, key_pem, chain)
        with grpc.secure_channel(server.address, creds) as channel:
            renew: Any = security_pb2_grpc.EnrollmentServiceStub(channel)  # type: ignore[no-untyped-call]
            renewed = renew.Renew(security_pb2.RenewRequest(csr_pem=csr), timeout=20)
        assert renewed.edge_id == "edge-9"
    finally:
        server.stop()
    assert any("PLAIN TEXT" in line for line in server.lines) is False
    code, out, _ = run(capsys, "audit", "--json", "--db", db)
    assert [e["kind"] for e in json.loads(out)] == ["enrolled", "renewed"]


def test_registry_process_serves_securely(ca_dir: Path, tmp_path: Path) -> None:
    from tests.cloud_registry.registry_process import RegistryProcess

    process = RegistryProcess(tmp_path / "p.db", "--ca-dir", str(ca_dir))
    try:
        assert process.enroll_target.startswith("127.0.0.1:")
        root = (ca_dir / "root.pem").read_bytes()
        creds = grpc.ssl_channel_credentials(root)
        with grpc.secure_channel(process.enroll_target, creds) as channel:
            stub: Any = security_pb2_grpc.EnrollmentServiceStub(channel)  # type: ignore[no-untyped-call]
            crl = stub.GetCrl(security_pb2.GetCrlRequest(), timeout=20).crl_pem
        assert crl.startswith("-----BEGIN X509 CRL-----")
    finally:
        process.stop()


def test_operator_commands_talk_tls_with_an_api_key_or_a_certificate(
    secure_registry: SecureRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secure = secure_registry
    seed(secure.storage, {"edge-1": ["dev-1"]})
    text, key_id, digest = new_api_key()
    secure.storage.security.add_api_key(
        ApiKeyRecord(key_id, "dash", "s1", frozenset({"read-twins"}), digest, 1)
    )
    root = secure.ca_dir / "root.pem"
    tls = ["--registry", secure.enroll_address, "--tls-ca", str(root)]
    code, out, _ = run(capsys, *tls, "--api-key", text, "devices", "list", "--json")
    assert code == 0
    assert [d["id"] for d in json.loads(out)] == ["dev-1"]
    code, _, err = run(capsys, *tls, "--api-key", text, "models", "list")
    assert code == 1
    assert "PERMISSION_DENIED" in err or "permission" in err.lower()
    key_pem, chain = secure.issue(Identity("integrator", "cli"))
    (tmp_path / "k.pem").write_bytes(key_pem)
    (tmp_path / "c.pem").write_bytes(chain)
    mtls = ["--registry", secure.address, "--tls-ca", str(root)]
    certs = ["--client-cert", str(tmp_path / "c.pem"), "--client-key", str(tmp_path / "k.pem")]
    code, out, _ = run(capsys, *mtls, *certs, "devices", "list", "--json")
    assert code == 0
    assert [d["id"] for d in json.loads(out)] == ["dev-1"]
    code, _, err = run(capsys, *mtls, "--client-cert", str(tmp_path / "nope.pem"), "models", "list")
    assert code == 2
    assert "nope.pem" in err
