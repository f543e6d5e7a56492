"""``Publisher`` and ``AsyncPublisher``: enqueue envelopes into sharded Redis lists.

The two classes are twins: all validation, encoding and routing lives in
``_plan``; each twin only runs the planned script calls over its client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import redis.exceptions

from ..connection import (
    DEFAULT_TIMEOUT,
    AsyncRedisClient,
    SyncRedisClient,
    async_client,
    sync_client,
)
from ..protocol import topology
from ..protocol.envelope import Envelope
from ..protocol.keys import DEFAULT_PREFIX, Keyspace
from ..protocol.routing import DEFAULT_SHARDS
from ..protocol.scripts import ENQUEUE
from ..tracing import current_traceparent, require_opentelemetry
from ._plan import EnqueuePlan, EnqueueRun, plan, translate_redis_error
from .message import Message

__all__ = ["DEFAULT_MAX_PAYLOAD_BYTES", "AsyncPublisher", "Publisher"]

DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024


ClientT = TypeVar("ClientT", SyncRedisClient, AsyncRedisClient)


class _PublisherBase(Generic[ClientT]):
    """What the twins share: construction, settings and the I/O-free planning."""

    def __init__(
        self,
        client: ClientT,
        *,
        shards: int = DEFAULT_SHARDS,
        prefix: str = DEFAULT_PREFIX,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        owns_client: bool = False,
        tracing: bool = False,
    ) -> None:
        if max_payload_bytes < 256:
            raise ValueError(f"max_payload_bytes must be >= 256, got {max_payload_bytes}")
        if tracing:
            require_opentelemetry("Publisher(tracing=True)")
        self.tracing = tracing
        self.keyspace = Keyspace(prefix=prefix, shards=shards)
        self.max_payload_bytes = max_payload_bytes
        self._redis: ClientT = client
        self._owns_client = owns_client
        self._topology_checked = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool = False,
        timeout: float | None = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> Self:
        """A publisher with its own connection pool, closed by ``close()``.

        ``cluster=True`` connects to a Redis Cluster through any of its nodes.
        ``timeout`` (seconds, default 5) bounds connecting and every reply: a
        Redis that hangs makes the call raise ``QueueUnavailable`` after it,
        without retrying (the outcome of that call is then unknown). ``None``
        leaves redis-py's defaults. A publisher built on your own client uses
        that client's settings.
        """
        return cls(cls._connect(url, cluster, timeout), owns_client=True, **kwargs)

    @staticmethod
    def _connect(url: str, cluster: bool, timeout: float | None) -> ClientT:
        raise NotImplementedError

    def _plan_one(
        self,
        channel: str,
        data: Any,
        key: str,
        version: int,
        tags: Mapping[str, str] | None,
        idempotency_key: str | None,
        ttl_ms: int | None,
    ) -> EnqueuePlan:
        message = Message(channel, data, key, version, tags, idempotency_key, ttl_ms)
        return self._plan((message,))

    def _plan_delete(
        self,
        channel: str,
        key: str,
        version: int,
        tags: Mapping[str, str] | None,
        idempotency_key: str | None,
        ttl_ms: int | None,
    ) -> EnqueuePlan:
        message = Message.delete(
            channel,
            key=key,
            version=version,
            tags=tags,
            idempotency_key=idempotency_key,
            ttl_ms=ttl_ms,
        )
        return self._plan((message,))

    def _plan(self, messages: Iterable[Message]) -> EnqueuePlan:
        """The messages' plan; with ``tracing``, the envelopes carry the current trace context."""
        if not self.tracing:
            return plan(messages, self.keyspace, self.max_payload_bytes)
        traceparent = current_traceparent()
        return plan(messages, self.keyspace, self.max_payload_bytes, traceparent=traceparent)


class Publisher(_PublisherBase[SyncRedisClient]):
    """Synchronous publisher over a ``redis.Redis`` or ``redis.cluster.RedisCluster``.

    ``publish`` is one Redis round trip: one script assigns the shard's next
    sequence number and appends the envelope atomically. ``publish_many`` sends
    one script call per shard group, all in one pipeline.

    ``tracing=True`` (the ``otel`` extra) writes the current OpenTelemetry span's
    context into each envelope (``traceparent``), for a relay that traces to
    continue; see ``centrifugo_async.tracing``.
    """

    @staticmethod
    def _connect(url: str, cluster: bool, timeout: float | None) -> SyncRedisClient:
        return sync_client(url, cluster=cluster, timeout=timeout)

    def ensure_topology(self) -> None:
        """Record the shard count in Redis, or check it against the recorded one."""
        if self._topology_checked:
            return
        try:
            topology.record_shards(self._redis, self.keyspace.prefix, self.keyspace.shards)
        except redis.exceptions.RedisError as exc:
            raise translate_redis_error(exc) from exc
        self._topology_checked = True

    def publish(
        self,
        channel: str,
        data: Any,
        *,
        key: str,
        version: int,
        tags: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        ttl_ms: int | None = None,
    ) -> Envelope[Any]:
        """Enqueue one update of object ``key`` at ``version`` for ``channel``."""
        batch = self._plan_one(channel, data, key, version, tags, idempotency_key, ttl_ms)
        return self._run(batch)[0]

    def delete(
        self,
        channel: str,
        *,
        key: str,
        version: int,
        tags: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        ttl_ms: int | None = None,
    ) -> Envelope[Any]:
        """Enqueue a delete of object ``key`` as of ``version`` for ``channel``.

        Travels like an update (same shard, same order per key); subscribers remove
        the object and drop any older update of it that arrives later. ``version``
        must be newer than the object's last update (see ``Message.delete``).
        """
        batch = self._plan_delete(channel, key, version, tags, idempotency_key, ttl_ms)
        return self._run(batch)[0]

    def publish_many(self, items: Iterable[Message]) -> list[Envelope[Any]]:
        """Enqueue many messages (updates and ``Message.delete``s); per key, the
        order of ``items`` is kept.

        Each shard's messages are one atomic script call, but the calls of one
        batch are independent: Redis may run some and refuse others (memory
        full, a shard being resharded). Then ``PartialPublish`` carries the
        ``enqueued`` envelopes and the ``not_enqueued`` messages: retry only
        those. A plain ``QueueUnavailable`` means nothing is known to be
        enqueued (with a lost connection, retrying the whole batch is safe).
        """
        return self._run(self._plan(items))

    def _run(self, batch: EnqueuePlan) -> list[Envelope[Any]]:
        if not batch.calls:
            return []
        self.ensure_topology()
        run = EnqueueRun(batch)
        again = True
        while again:
            pipe = self._redis.pipeline(transaction=False)
            for command in run.commands():
                pipe.execute_command(*command)
            try:
                again = run.record(pipe.execute(raise_on_error=False))
            except redis.exceptions.RedisError as exc:
                run.connection_lost(exc)
                break
            if again:
                try:
                    self._redis.script_load(ENQUEUE.source)
                except redis.exceptions.RedisError as exc:
                    run.script_refused(exc)
                    break
        return run.result()

    def close(self) -> None:
        """Close the connection pool if this publisher created it (``from_url``)."""
        if self._owns_client:
            self._redis.close()

    def __enter__(self) -> Self:
        self.ensure_topology()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncPublisher(_PublisherBase[AsyncRedisClient]):
    """The asyncio twin of ``Publisher``, over ``redis.asyncio`` clients."""

    @staticmethod
    def _connect(url: str, cluster: bool, timeout: float | None) -> AsyncRedisClient:
        return async_client(url, cluster=cluster, timeout=timeout)

    async def ensure_topology(self) -> None:
        """Record the shard count in Redis, or check it against the recorded one."""
        if self._topology_checked:
            return
        try:
            await topology.record_shards_async(
                self._redis, self.keyspace.prefix, self.keyspace.shards
            )
        except redis.exceptions.RedisError as exc:
            raise translate_redis_error(exc) from exc
        self._topology_checked = True

    async def publish(
        self,
        channel: str,
        data: Any,
        *,
        key: str,
        version: int,
        tags: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        ttl_ms: int | None = None,
    ) -> Envelope[Any]:
        """Enqueue one update of object ``key`` at ``version`` for ``channel``."""
        batch = self._plan_one(channel, data, key, version, tags, idempotency_key, ttl_ms)
        return (await self._run(batch))[0]

    async def delete(
        self,
        channel: str,
        *,
        key: str,
        version: int,
        tags: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        ttl_ms: int | None = None,
    ) -> Envelope[Any]:
        """Enqueue a delete of object ``key`` as of ``version`` (see ``Publisher.delete``)."""
        batch = self._plan_delete(channel, key, version, tags, idempotency_key, ttl_ms)
        return (await self._run(batch))[0]

    async def publish_many(self, items: Iterable[Message]) -> list[Envelope[Any]]:
        """Enqueue many messages; per key, the order of ``items`` is kept.

        Raises ``PartialPublish`` when part of the batch went in, as
        ``Publisher.publish_many`` does.
        """
        return await self._run(self._plan(items))

    async def _run(self, batch: EnqueuePlan) -> list[Envelope[Any]]:
        if not batch.calls:
            return []
        await self.ensure_topology()
        run = EnqueueRun(batch)
        again = True
        while again:
            pipe = self._redis.pipeline(transaction=False)
            for command in run.commands():
                pipe.execute_command(*command)
            try:
                again = run.record(await pipe.execute(raise_on_error=False))
            except redis.exceptions.RedisError as exc:
                run.connection_lost(exc)
                break
            if again:
                try:
                    await self._redis.script_load(ENQUEUE.source)
                except redis.exceptions.RedisError as exc:
                    run.script_refused(exc)
                    break
        return run.result()

    async def close(self) -> None:
        """Close the connection pool if this publisher created it (``from_url``)."""
        if self._owns_client:
            await self._redis.aclose()

    async def __aenter__(self) -> Self:
        await self.ensure_topology()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
