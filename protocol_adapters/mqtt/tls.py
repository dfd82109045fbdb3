"""TLS to the broker: the settings and the client :class:`ssl.SSLContext` built from them.

::

    settings = TlsSettings(ca=Path("ca.pem"), cert=Path("gw.pem"), key=Path("gw.key"))
    context = client_context(settings, "mqtts://broker.local:8883")  # or MqttConfigError

- ``ca``: the trust anchors of the broker's certificate (PEM); without it, the system's.
- ``cert`` / ``key``: a client certificate for brokers that require one (``key`` may be left out
  when ``cert`` holds the key too).
- ``insecure_skip_verify``: no check of the broker's certificate or host name (tests only:
  anyone on the path can read and change the traffic).

The context is built once, when the link is made, so a missing or unreadable file is reported
at start-up (naming the file), not on every reconnect.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from protocol_adapters.mqtt.errors import MqttConfigError

__all__ = ["TlsSettings", "client_context", "describe_tls_error"]


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Where the trust anchors and the client certificate are (absolute paths)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure_skip_verify: bool = False


def client_context(settings: TlsSettings, endpoint: str) -> ssl.SSLContext:
    """A TLS 1.2+ client context for ``settings``; raises :class:`MqttConfigError` naming the
    endpoint and the file that cannot be used."""
    if settings.key is not None and settings.cert is None:
        raise MqttConfigError(f"{endpoint}: tls key {settings.key} given without a cert")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.sslsocket_class = _ClosingSSLSocket
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.ca is not None:
        try:
            context.load_verify_locations(cafile=str(settings.ca))
        except (OSError, ssl.SSLError) as exc:
            raise MqttConfigError(
                f"{endpoint}: tls ca {settings.ca}: {_why(exc)} (expected PEM certificates)"
            ) from exc
    elif not settings.insecure_skip_verify:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if settings.cert is not None:
        key = settings.key or settings.cert
        try:
            context.load_cert_chain(str(settings.cert), str(key))
        except (OSError, ssl.SSLError) as exc:
            raise MqttConfigError(
                f"{endpoint}: tls cert {settings.cert} / key {key}: {_why(exc)} "
                "(expected a PEM certificate and its unencrypted private key)"
            ) from exc
    return context


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the handshake fails: paho-mqtt leaves the failed socket open."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def _why(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc)


def describe_tls_error(exc: BaseException) -> str | None:
    """A short "TLS handshake failed: ..." for an SSL error, None for anything else."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS handshake failed: broker certificate not trusted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    return None
