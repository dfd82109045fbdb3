"""The edge's identity folder: its private key, certificate, chain, trust roots and the
registry's command keys, switched atomically on enrollment and renewal.

Layout (the folder is 0700, refused when group or others have any access)::

    identity.json        manifest (0600): edge id, site, the current generation, validity
    gen-<id>/key.pem     the private key (0600, P-256), made on this box, never sent anywhere
    gen-<id>/cert.pem    this edge's certificate
    gen-<id>/chain.pem   intermediate(s), the leaf's issuer first
    gen-<id>/roots.pem   the roots the registry's server certificate chains to
    gen-<id>/command-keys.json   key id -> PEM public key the edge accepts commands from
    replay.json          the command verifier's replay state (0600), kept across renewals
    outbox.key           the outbox encryption key (0600) unless configured elsewhere

A *generation* is written in full in its own folder, then :meth:`IdentityStore.commit` rewrites
the manifest (atomic rename) and removes the other generations, destroying their keys. A crash
at any point leaves either the old identity or the new one, never a key and a certificate that
do not match.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge_agent.config import EdgeConfig
from edge_agent.errors import AgentError
from security.errors import SecurityError
from security.files import write_private, write_public
from security.identity import generate_key, load_certificate, load_private_key

__all__ = [
    "Credentials",
    "IdentityError",
    "IdentityStore",
    "NotEnrolled",
    "identity_store_for",
    "load_public_keys",
]

MANIFEST: Final = "identity.json"
REPLAY_STATE: Final = "replay.json"
OUTBOX_KEY: Final = "outbox.key"
_GENERATION = re.compile(r"[0-9a-f]{12}")


class IdentityError(AgentError):
    """The identity folder cannot be used: loose permissions, unreadable or corrupt files."""


class NotEnrolled(IdentityError):
    """The identity folder holds no identity yet (run ``edge-agent enroll``)."""


@dataclass(frozen=True)
class Credentials:
    """One generation of this edge's credentials, as loaded from the identity folder."""

    edge_id: str
    site: str
    generation: str
    key_pem: bytes
    cert_pem: bytes
    chain_pems: tuple[bytes, ...]
    trust_roots_pems: tuple[bytes, ...]
    command_keys: Mapping[str, bytes]
    not_before: datetime
    not_after: datetime

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """mTLS credentials: this certificate and chain, trusting only the stored roots."""
        return grpc.ssl_channel_credentials(
            root_certificates=b"".join(self.trust_roots_pems),
            private_key=self.key_pem,
            certificate_chain=self.cert_pem + b"".join(self.chain_pems),
        )


def load_public_keys(keys: Mapping[str, bytes], where: str) -> list[ec.EllipticCurvePublicKey]:
    """The command keys as P-256 public keys, or :class:`IdentityError`."""
    out = []
    for kid, pem in keys.items():
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError) as exc:
            raise IdentityError(f"{where}: command key {kid!r} is not a PEM public key") from exc
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise IdentityError(f"{where}: command key {kid!r} is not an EC P-256 key")
        out.append(key)
    return out


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically (security.files: temporary file, fsync, rename), 0600 or 0644."""
    try:
        (write_private if mode == 0o600 else write_public)(path, data)
    except SecurityError as exc:
        raise IdentityError(str(exc)) from exc


def _split_pems(data: bytes) -> tuple[bytes, ...]:
    marker = b"-----END CERTIFICATE-----"
    parts = [p.strip() for p in data.split(marker) if p.strip()]
    return tuple(p + b"\n" + marker + b"\n" for p in parts)


class IdentityStore:
    """The identity folder at ``folder`` (see the module doc)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def replay_state_path(self) -> Path:
        return self.folder / REPLAY_STATE

    @property
    def default_outbox_key(self) -> Path:
        return self.folder / OUTBOX_KEY

    def prepare(self) -> None:
        """Create the folder (0700) if missing; refuse one that group or others can access."""
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise IdentityError(f"{self.folder}: cannot create identity folder: {exc}") from exc
        self.check_folder()

    def check_folder(self) -> None:
        try:
            mode = self.folder.stat().st_mode
        except FileNotFoundError as exc:
            raise NotEnrolled(
                f"{self.folder}: no identity folder: run 'edge-agent enroll' first"
            ) from exc
        except OSError as exc:
            raise IdentityError(f"{self.folder}: cannot read identity folder: {exc}") from exc
        if not stat.S_ISDIR(mode):
            raise IdentityError(f"{self.folder}: identity folder is not a folder")
        if mode & 0o077:
            raise IdentityError(
                f"{self.folder}: identity folder has mode {stat.S_IMODE(mode):04o}; refusing "
                "it: group/other must have no access (chmod 700)"
            )

    def enrolled(self) -> bool:
        return (self.folder / MANIFEST).is_file()

    # ------------------------------------------------------------------ writing

    def new_generation(self) -> tuple[str, ec.EllipticCurvePrivateKey]:
        """A fresh generation folder holding a new private key: ``(generation, key)``."""
        self.prepare()
        generation = secrets.token_hex(6)
        folder = self.folder / f"gen-{generation}"
        try:
            folder.mkdir(mode=0o700)
            key = generate_key(folder / "key.pem")
        except (OSError, SecurityError) as exc:
            raise IdentityError(f"{folder}: cannot create a key: {exc}") from exc
        return generation, key

    def discard(self, generation: str) -> None:
        """Remove an uncommitted generation (its key is destroyed)."""
        shutil.rmtree(self.folder / f"gen-{generation}", ignore_errors=True)

    def commit(
        self,
        generation: str,
        *,
        edge_id: str,
        site: str,
        cert_pem: bytes,
        chain_pems: Sequence[bytes],
        trust_roots_pems: Sequence[bytes],
        command_keys: Mapping[str, bytes],
    ) -> Credentials:
        """Write the generation's certificates, switch the manifest to it, and remove the
        other generations; the loaded credentials. The replay state is kept (the registry's
        sequence numbers go on) unless none of the old command keys is trusted any more: then
        no envelope it remembers could verify, and a new registry starts its own sequence."""
        folder = self.folder / f"gen-{generation}"
        old_keys: set[bytes] = set()
        if self.enrolled():
            with contextlib.suppress(IdentityError):
                old_keys = set(self.load().command_keys.values())
        _write(folder / "cert.pem", cert_pem, 0o644)
        _write(folder / "chain.pem", b"".join(chain_pems), 0o644)
        _write(folder / "roots.pem", b"".join(trust_roots_pems), 0o644)
        keys = {kid: pem.decode("ascii") for kid, pem in command_keys.items()}
        _write(folder / "command-keys.json", json.dumps(keys, sort_keys=True).encode(), 0o644)
        cert = load_certificate(cert_pem, f"{folder}/cert.pem")
        manifest = {
            "version": 1,
            "edge_id": edge_id,
            "site": site,
            "generation": generation,
            "not_after": cert.not_valid_after_utc.isoformat(),
        }
        _write(self.folder / MANIFEST, json.dumps(manifest, indent=2).encode(), 0o600)
        if old_keys and not old_keys & set(command_keys.values()):
            self.replay_state_path.unlink(missing_ok=True)
        for old in self.folder.glob("gen-*"):
            if old.name != folder.name:
                shutil.rmtree(old, ignore_errors=True)
        return self.load()

    # ------------------------------------------------------------------ reading

    def _manifest(self) -> dict[str, Any]:
        path = self.folder / MANIFEST
        self.check_folder()
        if not path.is_file():
            raise NotEnrolled(f"{self.folder}: not enrolled yet: run 'edge-agent enroll' first")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data["version"] != 1:
                raise ValueError(f"unsupported version {data['version']!r}")
            for name in ("edge_id", "site", "generation"):
                if not isinstance(data[name], str):
                    raise ValueError(f"{name} is not a string")
            if not _GENERATION.fullmatch(data["generation"]):
                raise ValueError(f"generation {data['generation']!r} is not a generation id")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IdentityError(f"{path}: not an identity manifest: {exc}") from exc
        return dict(data)

    def load(self) -> Credentials:
        """The current credentials, checked: key permissions, the key matches the cert."""
        manifest = self._manifest()
        folder = self.folder / f"gen-{manifest['generation']}"
        try:
            key = load_private_key(folder / "key.pem")
            cert_pem = (folder / "cert.pem").read_bytes()
            chain = _split_pems((folder / "chain.pem").read_bytes())
            roots = _split_pems((folder / "roots.pem").read_bytes())
            raw_keys = json.loads((folder / "command-keys.json").read_text(encoding="utf-8"))
            cert = load_certificate(cert_pem, f"{folder}/cert.pem")
        except SecurityError as exc:
            raise IdentityError(str(exc)) from exc
        except (OSError, ValueError) as exc:
            raise IdentityError(f"{folder}: identity files unreadable: {exc}") from exc
        if not isinstance(raw_keys, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw_keys.items()
        ):
            raise IdentityError(f"{folder}/command-keys.json: expected an object of PEM strings")
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if (
            cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            != public
        ):
            raise IdentityError(f"{folder}: cert.pem does not belong to key.pem")
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return Credentials(
            edge_id=manifest["edge_id"],
            site=manifest["site"],
            generation=manifest["generation"],
            key_pem=key_pem,
            cert_pem=cert_pem,
            chain_pems=chain,
            trust_roots_pems=roots,
            command_keys={k: v.encode("ascii") for k, v in raw_keys.items()},
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )


def identity_store_for(config: EdgeConfig) -> IdentityStore | None:
    """The store the agent's registry credentials come from: None when the registry is
    insecure (plaintext), when ``registry.cert``/``key`` name the files, or when the
    configuration has no ``security`` section."""
    registry = config.registry
    if registry.insecure or registry.cert is not None or config.security is None:
        return None
    return IdentityStore(config.security.identity_dir)
