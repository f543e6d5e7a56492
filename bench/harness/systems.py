"""The systems compared: each one way of moving messages from a producer into Centrifugo."""

from __future__ import annotations

import attrs

__all__ = ["EVERY_VERSION_RELAY", "System", "all_systems", "database_systems"]

EVERY_VERSION_RELAY = "relay-16x1-all"
"""The default relay with monotonic delivery off (``--freshness '*=all'``): what it costs."""


@attrs.frozen
class System:
    """One way of getting messages into Centrifugo.

    ``kind`` says which mover runs between the producer and Centrifugo: ``naive``
    (a worker popping a list), ``stream`` (Centrifugo's built-in redis_stream
    consumer), ``ceiling`` (the producer posts to /api/batch itself), ``relay``
    (``centrifugo-async relay``), ``outbox`` (writers commit rows to PostgreSQL,
    ``centrifugo-async outbox forward`` moves them to Redis, the relay to
    Centrifugo) or ``postgresql`` (writers commit rows to the outbox table of
    Centrifugo's built-in postgresql consumer). The other fields size it;
    ``combined`` runs the forwarder inside the relay's process instead of its own;
    ``freshness`` is the relays' ``--freshness`` (None: the default, monotonic).
    """

    name: str
    label: str
    kind: str  # "naive" | "stream" | "ceiling" | "relay" | "outbox" | "postgresql"
    ordered: bool
    in_flight: int = 1
    workers: int = 1
    streams: int = 1
    shards: int = 16
    processes: int = 1
    lanes: int = 16
    partitions: int = 16
    combined: bool = False
    freshness: str | None = None

    @property
    def database(self) -> bool:
        """Its producer writes to PostgreSQL (a stack with a database)."""
        return self.kind in ("outbox", "postgresql")

    @property
    def mover(self) -> str:
        """What the CPU and RSS columns measure for this system."""
        return {
            "naive": "worker",
            "relay": "relay",
            "outbox": "forwarder + relay",
            "stream": "(inside Centrifugo)",
            "postgresql": "(inside Centrifugo)",
            "ceiling": "(poster)",
        }[self.kind]

    @property
    def has_mover(self) -> bool:
        """Whether a process of its own moves the messages (its CPU and RSS are measured)."""
        return self.kind in ("naive", "relay", "outbox")


def all_systems(stream_workers: int = 16, ceiling_lanes: int = 16) -> list[System]:
    systems = [
        System("naive-ordered", "naive worker, 1 in flight", "naive", True),
        System("naive-parallel", "naive worker, 20 in flight", "naive", False, in_flight=20),
        System("stream-ordered", "redis_stream, num_workers 1", "stream", True),
        System(
            "stream-parallel",
            f"redis_stream, num_workers {stream_workers}",
            "stream",
            False,
            workers=stream_workers,
        ),
        System(
            "stream-sharded",
            "redis_stream, 16 streams x 1 worker",
            "stream",
            True,
            streams=16,
        ),
        System(
            "ceiling",
            f"ceiling: /api/batch, {ceiling_lanes} lanes",
            "ceiling",
            True,
            lanes=ceiling_lanes,
        ),
    ]
    for shards in (1, 4, 16):
        for processes in (1, 2):
            systems.append(
                System(
                    f"relay-{shards}x{processes}",
                    f"relay, {shards} shard{'s' if shards > 1 else ''}, "
                    f"{processes} process{'es' if processes > 1 else ''}",
                    "relay",
                    True,
                    shards=shards,
                    processes=processes,
                )
            )
    systems.append(
        System(
            EVERY_VERSION_RELAY,
            "relay, 16 shards, 1 process, freshness all",
            "relay",
            True,
            shards=16,
            freshness="*=all",
        )
    )
    return systems + database_systems()


def database_systems(partitions: int = 16) -> list[System]:
    """The write path through PostgreSQL: the outbox against Centrifugo's built-in consumer.

    The same writers (transactions that bump objects' row versions and insert
    the message rows) feed both; the outbox lanes and the built-in consumer's
    partitions are the key's shard, so both keep per-key order.
    """
    return [
        System("outbox", "outbox: forwarder + relay, 16 shards", "outbox", True),
        System(
            "outbox-combined",
            "outbox: forwarder inside the relay process",
            "outbox",
            True,
            combined=True,
        ),
        System(
            "postgresql",
            f"built-in postgresql consumer, num_partitions {partitions}",
            "postgresql",
            True,
            partitions=partitions,
        ),
    ]
