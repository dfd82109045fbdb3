"""A real mosquitto broker on 127.0.0.1 for tests and benchmarks.

::

    with running_mosquitto(tmp_path) as broker:      # generated config, ephemeral port
        client = aiomqtt.Client(broker.host, broker.port)
        broker.stop(); broker.start()                 # same port again (reconnect tests)

    files = make_tls_files(tmp_path / "pki")          # a throwaway CA, server and client certs
    with running_mosquitto(tmp_path, tls=files) as broker:   # + a TLS listener on broker.tls_port
        ...

The broker logs to stderr (unbuffered), drained by a thread (lines in :attr:`Mosquitto.log`);
start returns when mosquitto says it is running, so no polling of the port. Installs nothing:
the Debian package ``mosquitto`` must be there (``apt-get install -y mosquitto``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from security.ca import init_ca

__all__ = ["Mosquitto", "TlsFiles", "free_port", "make_tls_files", "running_mosquitto"]

HOST = "127.0.0.1"
_START_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of a throwaway PKI: the CA, the broker's and a client's certificate and key."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key_and_cert(folder: Path, name: str, issue: object) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    key_path = folder / f"{name}.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    assert callable(issue)
    cert_path = folder / f"{name}.pem"
    cert_path.write_bytes(issue(key.public_key()))
    return key_path, cert_path


def make_tls_files(folder: Path, name: str = "test") -> TlsFiles:
    """A new CA in ``folder`` (security.ca), a broker certificate for 127.0.0.1 and localhost,
    and a client certificate; each certificate file holds its chain."""
    ca = init_ca(folder / "ca", name)
    chain = b"".join(ca.chain_pems)

    def issue_server(public_key: ec.EllipticCurvePublicKey) -> bytes:
        return ca.issue_server_certificate(public_key, [HOST, "localhost"]) + chain

    def issue_client(public_key: ec.EllipticCurvePublicKey) -> bytes:
        return ca.issue_server_certificate(public_key, [], registry_id="client") + chain

    server_key, server_cert = _key_and_cert(folder, "server", issue_server)
    client_key, client_cert = _key_and_cert(folder, "client", issue_client)
    ca_path = folder / "ca.pem"
    ca_path.write_bytes(ca.root_pem)
    return TlsFiles(ca_path, server_cert, server_key, client_cert, client_key)


def _tls_listener(port: int, tls: TlsFiles, require_certificate: bool) -> str:
    # as root, mosquitto drops to its own user before reading the certificates: stay root, so
    # that it can read them in the tests' private temporary folders
    stay_root = "user root\n" if os.geteuid() == 0 else ""
    return (
        stay_root + f"listener {port} {HOST}\n"
        f"cafile {tls.ca}\ncertfile {tls.server_cert}\nkeyfile {tls.server_key}\n"
        f"require_certificate {'true' if require_certificate else 'false'}\n"
    )


class Mosquitto:
    """One mosquitto process with a config in ``folder``, listening on ``HOST:port`` (and with
    ``tls``, with TLS on ``HOST:tls_port``; ``require_certificate``: clients must show one)."""

    def __init__(
        self,
        folder: Path,
        port: int | None = None,
        extra_config: str = "",
        *,
        tls: TlsFiles | None = None,
        require_certificate: bool = False,
    ) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError("mosquitto is not installed (apt-get install -y mosquitto)")
        self.binary = binary
        self.host = HOST
        self.port = port or free_port()
        self.tls_port = free_port() if tls is not None else None
        listener = (
            _tls_listener(self.tls_port, tls, require_certificate)
            if tls is not None and self.tls_port is not None
            else ""
        )
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} {HOST}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 100000\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            + extra_config
            + listener,
            encoding="utf-8",
        )
        self.log: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        """Start mosquitto and return once it reports running (RuntimeError otherwise)."""
        ready = threading.Event()
        running = threading.Event()
        process = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.process = process

        def drain() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.log.append(line.rstrip())
                if " running" in line:
                    running.set()
                    ready.set()
            ready.set()  # exited: let start() look at the exit status

        threading.Thread(target=drain, daemon=True).start()
        ready.wait(_START_TIMEOUT_S)
        if not running.is_set() or process.poll() is not None:
            self.stop()
            raise RuntimeError(f"mosquitto did not start on {self.address}: {self.log[-5:]}")

    def stop(self) -> None:
        """Kill mosquitto (connections drop at once) and wait for it."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


@contextlib.contextmanager
def running_mosquitto(
    folder: Path,
    extra_config: str = "",
    *,
    tls: TlsFiles | None = None,
    require_certificate: bool = False,
) -> Iterator[Mosquitto]:
    """A started broker (``extra_config``: more mosquitto.conf lines; ``tls``: also a TLS
    listener on :attr:`Mosquitto.tls_port`), killed at the end."""
    broker = Mosquitto(
        folder, extra_config=extra_config, tls=tls, require_certificate=require_certificate
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
