"""Secrets at rest on the edge box: passwords the configuration names instead of holding.

A configuration value ``{secret: NAME}`` (e.g. an MQTT broker's ``password``) refers to a
secret kept AES-GCM encrypted in ``<identity_dir>/secrets/NAME.enc`` (0600, in a 0700 folder),
under the data key of the ``security`` section (the outbox's key file: a 0600 file behind
:class:`security.at_rest.KeyProvider`, which a TPM or KMS could implement). The secret's name is
bound into the encryption (associated data), so one secret's file cannot stand in for another's.

::

    store = SecretStore.for_config(config)        # None without a security section
    store.put("broker-password", b"s3cret")
    store.get("broker-password")                   # SecretError when missing or altered
    store.names(); store.delete("broker-password")

Operators use ``edge-agent secret set NAME --config edge.yaml`` (the value from standard input,
or a prompt that does not echo), ``secret list`` and ``secret rm NAME``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from edge_agent.config import EdgeConfig, load_edge_config
from edge_agent.errors import AgentError
from security.at_rest import FileKeyProvider, KeyProvider, decrypt_secret, encrypt_secret
from security.errors import KeyFilePermissionError, SecurityError
from security.files import read_private, write_private
from thing_models.document_reader import DocumentReader
from thing_models.errors import ThingModelError
from thing_models.yaml_source import Path as DocPath

__all__ = [
    "SecretError",
    "SecretRef",
    "SecretStore",
    "add_secret_commands",
    "parse_secret",
    "resolve_secret",
    "run_secret_command",
]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
MAX_SECRET_BYTES = 64 * 1024
SHARED_KEY = "edge-agent-secrets"  # where the supervisor keeps the store in the drivers' dict


class SecretError(AgentError):
    """A secret that cannot be stored or read; says which and why."""


class SecretRef(NamedTuple):
    """``{secret: NAME}`` in the configuration."""

    name: str


class SecretStore:
    """Encrypted secrets in ``folder`` (see the module doc)."""

    def __init__(self, folder: Path, provider: KeyProvider) -> None:
        self.folder = folder
        self._provider = provider

    @classmethod
    def for_config(cls, config: EdgeConfig) -> SecretStore | None:
        security = config.security
        if security is None:
            return None
        key_file = security.outbox_key_file
        try:
            key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            provider = FileKeyProvider(key_file)
        except (OSError, SecurityError) as exc:
            raise SecretError(f"secrets key {key_file}: {exc}") from exc
        return cls(security.identity_dir / "secrets", provider)

    def _file(self, name: str) -> Path:
        if not NAME_RE.match(name):
            raise SecretError(
                f"secret name {name!r}: expected letters, digits, '_', '.', '-' (at most 64)"
            )
        return self.folder / f"{name}.enc"

    def put(self, name: str, value: bytes) -> Path:
        """Store ``value`` under ``name`` (replacing it atomically); returns the file."""
        path = self._file(name)
        if len(value) > MAX_SECRET_BYTES:
            raise SecretError(f"secret {name!r}: {len(value)} bytes, at most {MAX_SECRET_BYTES}")
        blob = encrypt_secret(value, self._provider, name)
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.folder, 0o700)
            write_private(path, blob)
        except (OSError, SecurityError) as exc:
            raise SecretError(f"secret {name!r}: cannot write {path}: {exc}") from exc
        return path

    def get(self, name: str) -> bytes:
        path = self._file(name)
        if not path.exists():
            raise SecretError(
                f"secret {name!r} not found in {self.folder}: run 'edge-agent secret set {name}'"
            )
        try:
            blob = read_private(path)
        except KeyFilePermissionError as exc:
            raise SecretError(f"secret {name!r} is readable by others: {exc}") from exc
        except SecurityError as exc:
            raise SecretError(f"secret {name!r}: {exc}") from exc
        try:
            return decrypt_secret(blob, self._provider, name)
        except SecurityError as exc:
            raise SecretError(f"secret {name!r}: {exc}") from exc

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.enc"))

    def delete(self, name: str) -> bool:
        path = self._file(name)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True


def parse_secret(
    r: DocumentReader, obj: Mapping[Any, Any], key: str, path: DocPath, *, max_length: int = 256
) -> str | SecretRef | None:
    """A configuration value that is a string or ``{secret: NAME}``."""
    value = obj.get(key)
    if isinstance(value, Mapping):
        where = (*path, key)
        r.check_keys(value, where, ("secret",), required=("secret",))
        name = value.get("secret")
        if not isinstance(name, str) or not NAME_RE.match(name):
            r.error(
                (*where, "secret"),
                "not a secret name",
                name,
                "letters, digits, '_', '.', '-' (at most 64), as given to 'edge-agent secret set'",
            )
            return None
        return SecretRef(name)
    return r.string(obj, key, path, max_length=max_length)


def resolve_secret(value: str | SecretRef | None, shared: Mapping[object, object]) -> str | None:
    """The plain value: a string as it is, a :class:`SecretRef` read from the agent's store
    (``shared[SHARED_KEY]``); raises :class:`SecretError`."""
    if not isinstance(value, SecretRef):
        return value
    store = shared.get(SHARED_KEY)
    if not isinstance(store, SecretStore):
        raise SecretError(
            f"secret {value.name!r}: the configuration has no security section to keep secrets"
        )
    try:
        return store.get(value.name).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SecretError(f"secret {value.name!r} is not UTF-8 text") from exc


# --------------------------------------------------------------------------- CLI


def add_secret_commands(sub: Any) -> None:
    """``edge-agent secret set|list|rm``."""
    secret = sub.add_parser(
        "secret",
        help="passwords kept encrypted on this box, named in the configuration as {secret: NAME}",
    )
    actions = secret.add_subparsers(dest="secret_action", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, required=True, help="edge configuration (YAML)")
    put = actions.add_parser(
        "set",
        parents=[common],
        help="store a secret (the value from standard input, or a prompt)",
    )
    put.add_argument("name")
    actions.add_parser("list", parents=[common], help="the secrets' names (never their values)")
    rm = actions.add_parser("rm", parents=[common], help="delete a secret")
    rm.add_argument("name")


def run_secret_command(args: argparse.Namespace) -> int:
    try:
        config = load_edge_config(args.config)
    except ThingModelError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        store = SecretStore.for_config(config)
        if store is None:
            print(
                f"edge-agent secret: {args.config} has no security section: secrets are kept "
                "under its identity_dir, encrypted with its key",
                file=sys.stderr,
            )
            return 1
        if args.secret_action == "list":
            for name in store.names():
                print(name)
            return 0
        if args.secret_action == "rm":
            if not store.delete(args.name):
                print(f"edge-agent secret: no secret {args.name!r}", file=sys.stderr)
                return 1
            print(f"deleted secret {args.name}")
            return 0
        if sys.stdin.isatty():
            value = getpass.getpass(f"value of secret {args.name}: ").encode("utf-8")
        else:
            value = sys.stdin.buffer.read(MAX_SECRET_BYTES + 1).rstrip(b"\r\n")
        if not value:
            print("edge-agent secret: empty value refused", file=sys.stderr)
            return 1
        path = store.put(args.name, value)
    except SecretError as exc:
        print(f"edge-agent secret: {exc}", file=sys.stderr)
        return 1
    print(f"stored secret {args.name} (AES-GCM) in {path}")
    return 0
