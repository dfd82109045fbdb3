"""A registry replica as a separate process, for tests that kill it::

    python -m tests.cloud_registry.registry_process --db PATH [--port 0] [--replica r1]
        [--ca-dir DIR [--enroll-port 0]]

Opens (and migrates) the SQLite file, serves a :class:`~cloud_registry.server.app.RegistryServer`
built by :func:`~cloud_registry.server.app.build_server` on 127.0.0.1, and prints ``PORT <n>``
on stdout once it accepts calls (plain text), or ``PORT <n> ENROLL <m>`` with ``--ca-dir`` (a
CA folder made by ``cloud-registry ca init`` + ``ca server-cert --host 127.0.0.1``, or
:func:`tests.cloud_registry.server_fixtures.make_test_ca`): mutual TLS on ``n``, one-way TLS
(enrollment) on ``m``. SIGTERM/SIGINT stop it cleanly; the crash test uses SIGKILL.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from cloud_registry.server.app import build_server
from cloud_registry.server.context import RegistrySettings
from cloud_registry.storage.sqlite import SqliteStorage

__all__ = ["RegistryProcess", "main"]

REPO = Path(__file__).resolve().parents[2]


class RegistryProcess:
    """This module run as a child process; ``target`` is its address once started."""

    def __init__(self, db: Path | str, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.cloud_registry.registry_process",
                "--db",
                str(db),
                *extra,
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(REPO),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.kill()
            raise RuntimeError(f"registry process did not start: {line!r}")
        words = line.split()
        self.port = int(words[1])
        self.target = f"127.0.0.1:{self.port}"
        #: secure mode (``--ca-dir``): the one-way TLS enrollment address, else ""
        self.enroll_target = f"127.0.0.1:{words[3]}" if len(words) >= 4 else ""

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind."""
        self.proc.kill()
        self.proc.wait(30)
        self._close_pipe()

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 30 s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()


async def _serve(args: argparse.Namespace) -> None:
    storage = SqliteStorage(args.db)
    storage.migrate()
    settings = RegistrySettings(
        listen=f"127.0.0.1:{args.port}",
        replica_id=args.replica,
        sync_max_in_flight=args.max_in_flight,
        sync_max_batch_messages=args.max_batch,
        enroll_listen=f"127.0.0.1:{args.enroll_port}",
    )
    security = None
    if args.ca_dir:
        from cloud_registry.server.tls import ServerSecurity

        security = ServerSecurity.from_ca_dir(Path(args.ca_dir))
    server = build_server(storage, settings, security)
    await server.start()
    if security is None:
        print(f"PORT {server.port}", flush=True)
    else:
        print(f"PORT {server.port} ENROLL {server.enroll_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)
    storage.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--replica", default="replica-1")
    parser.add_argument("--max-in-flight", type=int, default=8)
    parser.add_argument("--max-batch", type=int, default=5000)
    parser.add_argument("--ca-dir", default="", help="secure mode: the CA folder")
    parser.add_argument("--enroll-port", type=int, default=0)
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
