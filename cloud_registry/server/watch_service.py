"""WatchService: a server stream of committed changes, filtered, resumable.

Every :class:`~cloud_registry.api.v1.watch_pb2.Change` carries ``resume_token`` = ``str(seq)``
of its change-feed entry. A client that reconnects with the token of the last change it saw
gets every matching change committed after it, in commit order, as long as the feed still
retains them (``RegistrySettings.watch_retention_s``); an older token is OUT_OF_RANGE, a token
that is not one of ours INVALID_ARGUMENT. No token: changes from now on.

A stream that falls too far behind (its queue in the change hub overflows) ends with
UNAVAILABLE ``fell behind; resume from token X`` (ErrorInfo ``WATCH_OVERFLOW`` with metadata
``resume_token``), and so does a stream cut by a replica shutting down (``SHUTTING_DOWN``):
the client resumes from X and misses nothing. Watch streams count against
``RegistrySettings.max_concurrent_streams`` per replica: beyond it, RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from grpc import aio

from cloud_registry.api.v1 import watch_pb2, watch_pb2_grpc
from cloud_registry.server import convert
from cloud_registry.server.change_hub import SubscriberOverflow
from cloud_registry.server.context import ServiceContext
from cloud_registry.server.errors import (
    InvalidArgument,
    OutOfRange,
    ResourceExhausted,
    Unavailable,
    Violation,
    handle_stream_errors,
)
from cloud_registry.server.principal import current_principal
from cloud_registry.storage.base import ChangeEntry, ChangeKind

__all__ = ["MAX_DEVICE_IDS", "WatchServicer", "parse_resume_token", "register"]

#: Device ids one Watch may filter on.
MAX_DEVICE_IDS = 1000
_INT64_MAX = 2**63 - 1

Context = aio.ServicerContext[Any, Any]


def parse_resume_token(token: str, field: str = "resume_token") -> int:
    """The change seq of a resume token (``str(seq)``); anything else is INVALID_ARGUMENT."""
    if len(token) > 20 or not token.isascii() or not token.isdigit():
        raise InvalidArgument.field(field, "not a resume token from this registry")
    seq = int(token)
    if seq > _INT64_MAX:
        raise InvalidArgument.field(field, "not a resume token from this registry")
    return seq


def _matcher(request: watch_pb2.WatchRequest) -> Callable[[ChangeEntry], bool]:
    """Check the filters of ``request`` and return the predicate they make."""
    violations: list[Violation] = []
    kinds: set[ChangeKind] = set()
    for index, number in enumerate(request.kinds):
        try:
            kinds.add(convert.change_kind_from_pb(number, f"kinds[{index}]"))
        except InvalidArgument as exc:
            violations.extend(exc.violations)
    if len(request.device_ids) > MAX_DEVICE_IDS:
        violations.append(
            Violation("device_ids", f"more than {MAX_DEVICE_IDS} ids ({len(request.device_ids)})")
        )
    else:
        for index, device_id in enumerate(request.device_ids):
            try:
                convert.check_id(device_id, f"device_ids[{index}]")
            except InvalidArgument as exc:
                violations.extend(exc.violations)
    try:
        convert.check_name(request.site, "site", required=False)
    except InvalidArgument as exc:
        violations.extend(exc.violations)
    if request.model:
        try:
            if convert.check_model_ref(request.model, "model").version:
                violations.append(Violation("model", "a model name without @version"))
        except InvalidArgument as exc:
            violations.extend(exc.violations)
    if violations:
        raise InvalidArgument.fields(violations)
    device_ids = frozenset(request.device_ids)
    site = request.site
    model = request.model
    sites = current_principal().sites

    def matches(change: ChangeEntry) -> bool:
        if change.kind is ChangeKind.EDGE_REVOKED:  # internal: not a Watch change kind
            return False
        if kinds and change.kind not in kinds:
            return False
        if device_ids and change.device_id not in device_ids:
            return False
        if site and change.site != site:
            return False
        if model and change.model.partition("@")[0] != model:
            return False
        return not (
            sites is not None
            and change.kind is not ChangeKind.MODEL_PUBLISHED
            and change.site not in sites
        )

    return matches


class WatchServicer(watch_pb2_grpc.WatchServiceServicer):
    """``active``: streams open now. ``max_queue``: changes a stream may have waiting before
    it is ended as fallen behind."""

    def __init__(self, ctx: ServiceContext, *, max_queue: int = 10_000) -> None:
        self.ctx = ctx
        self.active = 0
        self.max_queue = max_queue

    async def _check_retained(self, after: int) -> None:
        """OUT_OF_RANGE when changes after ``after`` were pruned already."""
        storage = self.ctx.storage
        oldest = await self.ctx.run(storage.oldest_change_seq)
        if oldest > 0:
            lost = oldest > after + 1
        else:  # nothing retained: lost if anything newer than the token was committed
            lost = after < await self.ctx.run(storage.latest_change_seq)
        if lost:
            raise OutOfRange(
                f"resume_token {after} is older than the retained changes (oldest: {oldest}); "
                "read the current state again and watch from now",
                reason="RESUME_TOKEN_EXPIRED",
                metadata={"oldest_token": str(oldest)},
            )

    @handle_stream_errors
    async def Watch(
        self, request: watch_pb2.WatchRequest, context: Context
    ) -> AsyncIterator[watch_pb2.Change]:
        matches = _matcher(request)
        after = parse_resume_token(request.resume_token) if request.resume_token else None
        cap = self.ctx.settings.max_concurrent_streams
        if self.active >= cap:
            raise ResourceExhausted(
                f"too many watch streams on this replica (at most {cap}); retry later"
            )
        self.active += 1
        try:
            if after is None:
                # "now" is the newest committed change, which the hub may not have read yet
                after = await self.ctx.run(self.ctx.storage.latest_change_seq)
            else:
                await self._check_retained(after)
            subscription = await self.ctx.hub.subscribe(
                after_seq=after, matches=matches, max_queue=self.max_queue
            )
            last = str(after)
            try:
                if request.resume_token:
                    # pruned while the backlog was read? (oldest only grows: checking after
                    # subscribing is enough)
                    await self._check_retained(after)
                async for change in subscription:
                    message = convert.change_to_pb(change)
                    last = message.resume_token
                    yield message
            except SubscriberOverflow:
                raise Unavailable(
                    f"fell behind; resume from token {last}",
                    reason="WATCH_OVERFLOW",
                    metadata={"resume_token": last},
                ) from None
            finally:
                subscription.close()
            # The hub ended the subscription: the replica is stopping.
            raise Unavailable(
                f"the registry replica is shutting down; resume from token {last}",
                reason="SHUTTING_DOWN",
                metadata={"resume_token": last},
            )
        finally:
            self.active -= 1


def register(server: aio.Server, ctx: ServiceContext) -> None:
    """Add the WatchService to ``server``."""
    watch_pb2_grpc.add_WatchServiceServicer_to_server(  # type: ignore[no-untyped-call]
        WatchServicer(ctx), server
    )
