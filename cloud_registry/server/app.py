"""The registry replica: one grpc.aio server with every service, health and reflection.

::

    server = build_server(storage, RegistrySettings(listen="127.0.0.1:0"))  # in the event loop
    await server.start()
    ...                       # server.port, server.address
    await server.stop(grace=5.0)

:func:`build_server` wires the :class:`~cloud_registry.server.principal.IdentityInterceptor`
(every RPC knows its caller), the message size limits (a larger message is RESOURCE_EXHAUSTED,
enforced by gRPC itself), ``grpc.max_concurrent_streams``, the model, device, twin, watch,
command and edge-sync services, standard health checking (``grpc.health.v1.Health``: the
overall status ``""`` and each service SERVING while running, NOT_SERVING once stopping) and
server reflection listing every service (so ``grpcurl`` works without proto files).

:meth:`RegistryServer.start` starts the change hub, the server, the command-expiry loop and a
task that prunes change-feed entries older than ``watch_retention_s``. :meth:`RegistryServer.stop`
turns health to NOT_SERVING, stops accepting calls, ends Watch streams with a resumable
UNAVAILABLE, waits up to ``grace`` seconds for the calls in flight and stops the background
work. The storage belongs to the caller (:func:`serve` opens and closes it).

:func:`serve` runs a replica until SIGTERM or SIGINT (the CLI's ``cloud-registry serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cloud_registry.api.v1 import (
    commands_pb2,
    devices_pb2,
    edge_sync_pb2,
    models_pb2,
    security_pb2,
    twins_pb2,
    watch_pb2,
    watch_pb2_grpc,
)
from cloud_registry.server import (
    commands_service,
    devices_service,
    edge_sync_service,
    enrollment_service,
    models_service,
    security_admin_service,
    twins_service,
    watch_service,
)
from cloud_registry.server.authn import AuditLog, Authenticator
from cloud_registry.server.change_hub import ChangeHub
from cloud_registry.server.context import RegistrySettings, ServiceContext
from cloud_registry.server.models_service import ModelCatalog
from cloud_registry.server.principal import IdentityInterceptor
from cloud_registry.server.tls import ServerSecurity
from cloud_registry.storage.base import Storage

__all__ = ["SERVICE_NAMES", "RegistryServer", "build_server", "serve"]

log = logging.getLogger(__name__)

#: Full names of the registry's own services (health reports each).
SERVICE_NAMES: tuple[str, ...] = (
    models_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
    devices_pb2.DESCRIPTOR.services_by_name["DeviceService"].full_name,
    twins_pb2.DESCRIPTOR.services_by_name["TwinService"].full_name,
    watch_pb2.DESCRIPTOR.services_by_name["WatchService"].full_name,
    commands_pb2.DESCRIPTOR.services_by_name["CommandService"].full_name,
    edge_sync_pb2.DESCRIPTOR.services_by_name["EdgeSync"].full_name,
)
#: The security services, served in secure mode only.
SECURITY_SERVICE_NAMES: tuple[str, ...] = (
    security_pb2.DESCRIPTOR.services_by_name["EnrollmentService"].full_name,
    security_pb2.DESCRIPTOR.services_by_name["SecurityAdminService"].full_name,
)
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
#: The shortest and longest pause between two prunes of the change feed.
_PRUNE_MIN_S = 0.05
_PRUNE_MAX_S = 60.0


class RegistryServer:
    """One running replica. Build it with :func:`build_server` inside the event loop."""

    def __init__(
        self,
        server: aio.Server,
        ctx: ServiceContext,
        health_servicer: health.aio.HealthServicer,
        host: str,
        port: int,
        *,
        watch: watch_service.WatchServicer | None = None,
        authenticator: Authenticator | None = None,
        enroll_port: int = 0,
    ) -> None:
        self.server = server
        self.authenticator = authenticator
        self.enroll_port = enroll_port
        self.watch = watch
        self.ctx = ctx
        self.health = health_servicer
        self._host = host
        self._port = port
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._stopped = False

    @property
    def port(self) -> int:
        """The bound TCP port (the real one when ``listen`` asked for port 0)."""
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` to connect to (IPv6 hosts in brackets)."""
        host = self._host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self._port}"

    @property
    def secure(self) -> bool:
        return self.authenticator is not None

    @property
    def enroll_address(self) -> str:
        """Secure mode: ``host:port`` of the one-way TLS port (Enroll, GetCrl, API keys)."""
        if not self.enroll_port:
            raise ValueError("a plain-text replica has no enrollment port")
        host = _split_listen(self.ctx.settings.enroll_listen)
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.enroll_port}"

    @property
    def watch_streams(self) -> int:
        """Watch streams open on this replica now."""
        return self.watch.active if self.watch is not None else 0

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.ctx.hub.start()
        if self.authenticator is not None:
            await self.authenticator.start()
        await self.server.start()
        names = (*SERVICE_NAMES, *(SECURITY_SERVICE_NAMES if self.secure else ()), "")
        for name in names:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._tasks.append(asyncio.create_task(self._prune_loop(), name="change-pruner"))
        self._tasks.append(commands_service.start_background(self.ctx))
        log.info("registry replica %s serving on %s", self.ctx.settings.replica_id, self.address)

    async def stop(self, grace: float | None = 5.0) -> None:
        """Stop serving: health NOT_SERVING, no new calls, Watch streams ended (resumable),
        calls in flight given ``grace`` seconds (None: wait for them all)."""
        if self._stopped:
            return
        self._stopped = True
        await self.health.enter_graceful_shutdown()
        stopping = asyncio.ensure_future(self.server.stop(grace))
        await asyncio.sleep(0)  # the server refuses new calls from here on
        if self.authenticator is not None:
            await self.authenticator.stop()
        await self.ctx.hub.stop()
        await stopping
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await asyncio.to_thread(self.ctx.executor.shutdown, True)
        log.info("registry replica %s stopped", self.ctx.settings.replica_id)

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()

    async def _prune_loop(self) -> None:
        retention_s = self.ctx.settings.watch_retention_s
        interval = min(_PRUNE_MAX_S, max(_PRUNE_MIN_S, retention_s / 10))
        while True:
            try:
                before = self.ctx.now_ms() - int(retention_s * 1000)
                pruned = await self.ctx.run(self.ctx.storage.prune_changes, before)
                if pruned:
                    log.debug("pruned %d changes older than %.0f s", pruned, retention_s)
            except RuntimeError:  # the worker pool is shut down: the replica is stopping
                return
            except Exception:  # the loop must survive a database hiccup
                log.exception("pruning the change feed failed; retrying")
            await asyncio.sleep(interval)


def _split_listen(listen: str) -> str:
    """The host part of ``host:port`` (``[::1]:0`` -> ``::1``)."""
    host, _, _port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0"


def build_server(
    storage: Storage, settings: RegistrySettings, security: ServerSecurity | None = None
) -> RegistryServer:
    """A replica serving ``storage`` on ``settings.listen`` (bound now; call in the loop).

    With ``security``: mutual TLS on ``listen``, one-way TLS on ``settings.enroll_listen``
    (see :mod:`cloud_registry.server.tls`), every call authenticated and authorized, commands
    signed. Without: plain text, callers trusted as they name themselves (tests, ``--insecure``).
    """
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    executor = ThreadPoolExecutor(settings.storage_threads, thread_name_prefix="storage")
    ctx = ServiceContext(storage, ChangeHub(storage), settings, executor)
    authenticator: Authenticator | None = None
    if security is not None:
        audit = AuditLog(ctx, security.clock)
        ctx.security, ctx.audit = security, audit
        authenticator = Authenticator(security, ctx, audit)
    else:
        log.warning(
            "registry %s serves PLAIN TEXT: no TLS, callers unauthenticated", settings.listen
        )
    server = aio.server(interceptors=[IdentityInterceptor(authenticator)], options=options)
    catalog = ModelCatalog(storage)
    models_service.register(server, ctx, catalog)
    devices_service.register(server, ctx, catalog)
    twins_service.register(server, ctx, catalog)
    watch = watch_service.WatchServicer(ctx)
    watch_pb2_grpc.add_WatchServiceServicer_to_server(watch, server)  # type: ignore[no-untyped-call]
    commands_service.register(server, ctx, catalog)
    edge_sync = edge_sync_service.register(server, ctx, catalog)
    security_names: tuple[str, ...] = ()
    if security is not None and authenticator is not None and ctx.audit is not None:
        enrollment_service.register(server, ctx, security, ctx.audit)
        security_admin_service.register(server, ctx)
        authenticator.on_edge_revoked.append(edge_sync.close_edge)
        security_names = SECURITY_SERVICE_NAMES
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, *security_names, HEALTH_SERVICE, reflection.SERVICE_NAME), server
    )
    enroll_port = 0
    if security is None:
        port = server.add_insecure_port(settings.listen)
    else:
        port = server.add_secure_port(settings.listen, security.server_credentials(mutual=True))
        enroll_port = server.add_secure_port(
            settings.enroll_listen, security.server_credentials(mutual=False)
        )
    if port == 0 or (security is not None and enroll_port == 0):
        executor.shutdown(wait=False)
        raise OSError(f"cannot listen on {settings.listen} / {settings.enroll_listen}")
    return RegistryServer(
        server,
        ctx,
        health_servicer,
        _split_listen(settings.listen),
        port,
        watch=watch,
        authenticator=authenticator,
        enroll_port=enroll_port,
    )


async def serve(
    storage_url: str,
    settings: RegistrySettings,
    *,
    grace_s: float = 10.0,
    ready: Callable[[RegistryServer], None] | None = None,
    security: ServerSecurity | None = None,
) -> None:
    """Run a replica over ``storage_url`` (migrated first) until SIGTERM or SIGINT, then
    drain (``grace_s``) and close the storage. ``ready`` is called once it serves (e.g. to
    print ``server.address``). Call it from the main thread (signal handlers)."""
    from cloud_registry.storage.factory import open_storage

    storage = await asyncio.to_thread(open_storage, storage_url, replica_id=settings.replica_id)
    try:
        await asyncio.to_thread(storage.migrate)
        server = build_server(storage, settings, security)
        await server.start()
        if ready is not None:
            ready(server)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
            log.info("signal received: draining for up to %.1f s", grace_s)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await server.stop(grace_s)
    finally:
        await asyncio.to_thread(storage.close)
