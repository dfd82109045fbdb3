"""What every servicer is given: storage, the change hub, settings, and a way to run blocking
storage calls off the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from grpc import aio

from cloud_registry.server.change_hub import ChangeHub
from cloud_registry.storage.base import Storage

if TYPE_CHECKING:
    from cloud_registry.server.authn import AuditLog
    from cloud_registry.server.tls import ServerSecurity

__all__ = ["RegistrySettings", "ServiceContext", "ServiceRegistrar"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    """Tunables of one registry replica."""

    listen: str = "127.0.0.1:50051"
    replica_id: str = "replica-1"
    max_message_bytes: int = 16 * 1024 * 1024
    max_concurrent_streams: int = 1000
    watch_retention_s: float = 24 * 3600.0
    edge_lease_s: float = 30.0
    default_command_ttl_s: float = 3600.0
    default_command_timeout_s: float = 10.0
    sync_max_in_flight: int = 8
    sync_max_batch_messages: int = 5000
    storage_threads: int = 8
    #: secure mode only: the one-way TLS port (Enroll, GetCrl, health, API keys)
    enroll_listen: str = "127.0.0.1:50052"


@dataclass(slots=True)
class ServiceContext:
    """Shared by the servicers of one replica."""

    storage: Storage
    hub: ChangeHub
    settings: RegistrySettings
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(8, thread_name_prefix="storage")
    )
    #: secure mode: the registry's credentials and the audit log (None: plain text)
    security: ServerSecurity | None = None
    audit: AuditLog | None = None

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a blocking (storage) call in the worker pool, in the caller's context."""
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, **kwargs)
        # the caller's context (the current principal) travels to the worker thread
        return await loop.run_in_executor(self.executor, contextvars.copy_context().run, call)

    @staticmethod
    def now_ms() -> int:
        return time.time_ns() // 1_000_000


#: A module's ``register(server, ctx)``: adds its servicers to the gRPC server.
ServiceRegistrar = Callable[[aio.Server, ServiceContext], None]
